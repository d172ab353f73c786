/* kiln/data.h — data sets and loaders. Included by kiln/kiln.h.
 *
 * A data set is N samples held in memory: inputs x (f32, shape [N, ...]) and
 * targets y (i32 class labels [N], or f32 [N, ...] for regression and
 * multi-label). A loader walks it in batches: the training loader shuffles
 * every epoch with its seed and drops the last partial batch (as fastai);
 * the validation loader keeps order and yields the partial last batch.
 */
#ifndef KILN_DATA_H
#define KILN_DATA_H

#ifndef KILN_KILN_H
#error "include <kiln/kiln.h>"
#endif

typedef struct kiln_dataset kiln_dataset;

/* Reads an idx image file and an idx label file (gzipped or not; the
 * format of MNIST and Fashion-MNIST). Images become f32 [N, 1, H, W] in
 * [0, 1]; labels i32 [N]. Errors name the file and what is wrong (missing,
 * bad magic, truncated, counts that differ). *err: caller frees. */
kiln_status kiln_dataset_load_idx(const char *images, const char *labels, kiln_dataset **out,
                                  char **err);

/* Fashion-MNIST from `dir` (holding train-images-idx3-ubyte[.gz] etc.), or,
 * when dir is NULL, from where Debian's dataset-fashion-mnist installs it
 * (found with dpkg -L, else /usr/share/datasets/fashion-mnist). `train`
 * picks the 60,000 training images or the 10,000 test images. A missing
 * data set gives KILN_ERR_NOT_FOUND and a message naming the package and
 * --data. */
kiln_status kiln_dataset_fashion_mnist(const char *dir, int train, kiln_dataset **out,
                                       char **err);

/* Inputs and targets from two .npy files (x: any float or integer dtype,
 * converted to f32; y: integer → i32 labels, float → f32). */
kiln_status kiln_dataset_load_npy(const char *x_path, const char *y_path, kiln_dataset **out,
                                  char **err);

/* A data set from arrays (copied). y_dtype is KILN_I32 or KILN_F32. */
kiln_status kiln_dataset_from_arrays(const float *x, int x_rank, const int64_t *x_shape,
                                     const void *y, kiln_dtype y_dtype, int y_rank,
                                     const int64_t *y_shape, kiln_dataset **out, char **err);

void kiln_dataset_free(kiln_dataset *d);
int64_t kiln_dataset_len(const kiln_dataset *d);
/* Shapes of one sample's x and y (without the leading N). */
void kiln_dataset_shapes(const kiln_dataset *d, int *x_rank, int64_t *x_shape, int *y_rank,
                         int64_t *y_shape, kiln_dtype *y_dtype);
/* x = (x - mean) / std, in place, over every element. */
void kiln_dataset_normalize(kiln_dataset *d, float mean, float std);
/* Mean and standard deviation of every x element (to normalise with). */
void kiln_dataset_stats(const kiln_dataset *d, float *mean, float *std);
/* The first n samples as a new data set (for quick runs and tests). */
kiln_status kiln_dataset_head(const kiln_dataset *d, int64_t n, kiln_dataset **out);

/* ---- image data sets (runtime/imgdata.c, augment.c) ---------------------
 * Folders of PNG and JPEG files in one of four layouts (fastai's):
 *   KILN_DATA_FOLDERS     DIR/train/CLASS/NAME.png|jpg|jpeg, DIR/valid/CLASS/NAME:
 *                         classes = the sorted folder names of both splits;
 *                         y i32 [N] (the class index).
 *   KILN_DATA_MULTILABEL  DIR/images/<name>.png|jpg|jpeg, DIR/labels.csv
 *                         (header `image_name,tags`; rows `name,tag tag ...`),
 *                         DIR/valid.txt (the validation names, one a line);
 *                         classes = the sorted tags; y f32 [N, C] multi-hot.
 *   KILN_DATA_SEGMENTATION DIR/images/<name>.png|jpg, DIR/labels/<name>_P.png
 *                         (a class id per pixel: gray levels or palette
 *                         indices), DIR/codes.txt (line k names class k),
 *                         DIR/valid.txt; y i32 [H, W].
 *   KILN_DATA_POINTS      DIR/images/<name>.png|jpg, DIR/points.csv (header
 *                         `image_name,x,y`: the point in pixels of the file,
 *                         0 = the image's left or top edge), DIR/valid.txt;
 *                         y f32 [2] = (y, x) scaled to [-1, 1] as fastai's
 *                         PointScaler: coord / size * 2 - 1, y first (as
 *                         fastai stores points).
 * x is f32 [C, H, W] in [0, 1] (before kiln_dataset_normalize): C = 1 or 3,
 * the first training image's (gray or gray+alpha: 1, else 3; other files are
 * converted, alpha dropped). Every image is resized to H x W when the set is
 * opened (bilinear, antialiased when shrinking; masks nearest; points keep
 * their place as they are relative) and kept as u8 in memory; batches
 * convert to f32, at the loader's size (kiln_loader_set_size), augmented in
 * the training split when asked. */

typedef enum kiln_data_kind {
    KILN_DATA_NONE,         /* not an image layout (idx, .npy, arrays) */
    KILN_DATA_FOLDERS,
    KILN_DATA_MULTILABEL,
    KILN_DATA_SEGMENTATION,
    KILN_DATA_POINTS,
} kiln_data_kind;

/* Random transforms of a training image, its mask and its point, as
 * fastai's get_transforms but small. Each is drawn per sample from (loader
 * seed, epoch, sample index) alone, so runs repeat. */
typedef struct kiln_augment {
    double p_flip;     /* horizontal flip (0.5) */
    int pad;           /* padded crop: shift by up to pad pixels of the served
                          size in x and y, borders reflected (4) */
    double p_crop;     /* probability of the padded crop (0.5) */
    double max_rotate; /* rotation in [-max_rotate, max_rotate] degrees (10) */
    double p_rotate;   /* (0.5) */
    double max_zoom;   /* zoom in [1, max_zoom] about a random centre that
                          keeps the view inside the image (1.1) */
    double p_zoom;     /* (0.5) */
} kiln_augment;

typedef struct kiln_image_opts {
    int height, width; /* every image resized to this; 0: the first training
                          image's size */
    int channels;      /* 1 or 3; 0: the first training image's */
    int augment;       /* augment the training split's batches with aug */
    kiln_augment aug;
    int threads;       /* decoding threads; 0: one per core, at most 8 */
} kiln_image_opts;

kiln_augment kiln_augment_defaults(void);
/* Size and channels from the first image, no augmentation, aug = defaults. */
kiln_image_opts kiln_image_defaults(void);

/* Which image layout dir holds (labels.csv, codes.txt, points.csv, then
 * train/ with class folders), or KILN_DATA_NONE. */
kiln_data_kind kiln_data_detect(const char *dir);
/* "folders", "multi-label", "segmentation", "points" or "none". */
const char *kiln_data_kind_name(kiln_data_kind k);

/* Opens the training split (valid = 0) or the validation split (valid = 1)
 * of the image data set in dir (its layout detected), decoding every file.
 * opts may be NULL (kiln_image_defaults). Both splits get the same classes,
 * size and channels. Errors name the file (and line) and the fix:
 * KILN_ERR_NOT_FOUND (no layout, a missing file), KILN_ERR_CORRUPT (a bad
 * line, a bad image), KILN_ERR_UNSUPPORTED, KILN_ERR_IO. */
kiln_status kiln_dataset_open_images(const char *dir, const kiln_image_opts *opts, int valid,
                                     kiln_dataset **out, char **err);
/* The layout a data set came from (KILN_DATA_NONE: not images). */
kiln_data_kind kiln_dataset_kind(const kiln_dataset *d);
/* Class names (*n of them; NULL and 0 when there are none: points, arrays). */
const char *const *kiln_dataset_classes(const kiln_dataset *d, int *n);
/* Sample i's file, relative to the data set's folder (NULL: not images). */
const char *kiln_dataset_sample_name(const kiln_dataset *d, int64_t i);

typedef struct kiln_loader kiln_loader;

/* A loader of batches of `batch` samples. shuffle: a new order each epoch
 * from `seed` (same seed, same orders); drop_last: skip a partial last
 * batch. */
kiln_status kiln_loader_new(const kiln_dataset *d, int64_t batch, int shuffle, int drop_last,
                            uint64_t seed, kiln_loader **out);
void kiln_loader_free(kiln_loader *l);
/* Batches in one epoch. */
int64_t kiln_loader_num_batches(const kiln_loader *l);
/* Starts epoch `epoch` (its order depends on seed and epoch). */
void kiln_loader_start(kiln_loader *l, int64_t epoch);
/* Copies the next batch into x (batch * sample x elements) and y; *n gets
 * the number of samples in it (< batch only for a partial last batch; the
 * rest of x and y is zero-filled). Returns 0 at the end of the epoch, 1
 * otherwise. */
int kiln_loader_next(kiln_loader *l, float *x, void *y, int64_t *n);

/* Image data sets: serve the images at height x width (progressive
 * resizing: the same set at 32, then 64 pixels). Takes effect with the next
 * batch; the caller's x and y must then hold batch samples of the new shapes
 * (kiln_loader_shapes). KILN_ERR_UNSUPPORTED for other data sets. */
kiln_status kiln_loader_set_size(kiln_loader *l, int height, int width);
/* Image data sets: augment (on = 1) or not. A loader starts augmenting when
 * its data set is a training split opened with opts.augment. */
void kiln_loader_set_augment(kiln_loader *l, int on);
/* Shapes of one sample's x and y as this loader serves them. */
void kiln_loader_shapes(const kiln_loader *l, int *x_rank, int64_t *x_shape, int *y_rank,
                        int64_t *y_shape);

/* ---- images (runtime/image.c) -------------------------------------------
 * PNG (libpng) and JPEG (libjpeg-turbo). Pixels are 8-bit, interleaved,
 * row-major: h rows of w pixels of `channels` bytes. Errors start with the
 * path and say what is wrong: cannot open (KILN_ERR_IO), not an image,
 * truncated, corrupt (KILN_ERR_CORRUPT), unsupported (KILN_ERR_UNSUPPORTED:
 * CMYK JPEG, too large). *err: caller frees. */

/* Decodes a PNG (gray, gray+alpha, RGB, RGBA, palette; 1 to 16 bits: palettes
 * expand to RGB or RGBA, 16-bit samples round to 8) or a JPEG (gray, color),
 * told by its first bytes. channels: 0 keeps what the file holds (1 to 4),
 * 1 gray (ITU-R 601 luma, as PIL), 2 gray+alpha, 3 RGB, 4 RGBA (alpha is
 * dropped or added as 255). *pixels: malloc'd, caller frees. */
kiln_status kiln_image_read(const char *path, int channels, uint8_t **pixels, int *w, int *h,
                            int *c, char **err);
/* Writes an 8-bit PNG with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA)
 * channels. A file that cannot be written is removed. */
kiln_status kiln_image_write_png(const char *path, const uint8_t *pixels, int w, int h,
                                 int channels, char **err);
/* Writes an 8-bit palette PNG: one index per pixel, each below ncolors
 * (1 to 256); palette holds ncolors RGB triples. (CamVid's masks.) */
kiln_status kiln_image_write_png_palette(const char *path, const uint8_t *indices, int w, int h,
                                         const uint8_t *palette, int ncolors, char **err);
/* Writes a baseline JPEG, 1 (gray) or 3 (RGB) channels, quality 1 to 100. */
kiln_status kiln_image_write_jpeg(const char *path, const uint8_t *pixels, int w, int h,
                                  int channels, int quality, char **err);

#endif
