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

#endif
