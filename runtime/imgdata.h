/* runtime/imgdata.h — image data sets (internal API shared by
 * runtime/imgdata.c, augment.c, data.c and loader.c; the public side is in
 * include/kiln/data.h).
 *
 * An image data set is a kiln_dataset whose `img` is set: its x holds no
 * floats (a 1-byte placeholder); the images are kept as u8 pixels, every
 * one already resized to the set's size (c, h, w) when it was opened, and
 * become f32 only when a loader makes a batch (kiln_imgset_gather), at the
 * loader's size, augmented or not. Targets: folders (i32 [N]) and
 * multi-label (f32 [N, C]) live in the data set's y as for any data set;
 * points (f32 [N, 2], (y, x) in [-1, 1]) too, moved by the augmentation when
 * a batch is made; segmentation masks are u8 class ids [N, h, w] in `mask`
 * (y is a placeholder) and become i32 [h, w] per sample in a batch.
 */
#ifndef KILN_RUNTIME_IMGDATA_H
#define KILN_RUNTIME_IMGDATA_H

#include "runtime/idx.h"

typedef struct kiln_imgset {
    kiln_data_kind kind;
    int64_t n;            /* samples (the data set's n) */
    int c, h, w;          /* every stored image's size */
    uint8_t *px;          /* n * h * w * c, each image interleaved (HWC) */
    uint8_t *mask;        /* segmentation: n * h * w class ids; else NULL */
    char **classes;       /* class names (folders, tags, codes); NULL for points */
    int nclasses;
    char **names;         /* each sample's file, relative to the folder */
    float mean, std;      /* a batch's x = (pixel / 255 - mean) / std */
    int augment;          /* a loader over it augments (the training split) */
    kiln_augment aug;
} kiln_imgset;

/* What a loader asks of a batch. */
typedef struct kiln_imgview {
    int h, w;          /* size of the images served */
    int augment;       /* apply the set's augmentation */
    uint64_t seed;
    int64_t epoch;
} kiln_imgview;

void kiln_imgset_free(kiln_imgset *s);

/* Elements of one sample's x and y at size h x w. */
void kiln_imgset_numel(const kiln_dataset *d, int h, int w, int64_t *x_numel, int64_t *y_numel);

/* Writes samples idx[0..n) into x (n * c * h * w floats, CHW per sample) and
 * y (n samples of the target at v's size); thread-safe (reads only). */
void kiln_imgset_gather(const kiln_dataset *d, const int64_t *idx, int64_t n,
                        const kiln_imgview *v, float *x, void *y);

/* The first n samples as a new data set (copies). */
kiln_status kiln_imgset_head(const kiln_dataset *d, int64_t n, kiln_dataset **out);
/* Mean and standard deviation of x as batches hold it (unaugmented). */
void kiln_imgset_stats(const kiln_dataset *d, float *mean, float *std);

/* ---- runtime/augment.c ---------------------------------------------------
 * Geometry works in normalised coordinates: (-1, -1) is the top-left
 * corner of the image, (1, 1) the bottom-right one, pixel i of w spans
 * [2i/w - 1, 2(i+1)/w - 1] (PyTorch's grid_sample, align_corners=False). An
 * affine map m sends an output point (x, y) to the source point
 * (m[0] x + m[1] y + m[2], m[3] x + m[4] y + m[5]). */

/* The map of sample `index` in epoch `epoch` (a pure function of its
 * arguments): flip, rotation, zoom, then the padded crop's shift (pad in
 * pixels of the output size ow x oh); aspect is src w / src h. */
void kiln_augment_draw(const kiln_augment *a, uint64_t seed, int64_t epoch, int64_t index,
                       double aspect, int ow, int oh, double m[6]);
/* The identity map. */
void kiln_affine_identity(double m[6]);
int kiln_affine_is_identity(const double m[6]);
/* Where a source point p (y, x) lands in the output: m's inverse. */
void kiln_affine_point(const double m[6], const float src[2], float out[2]);

/* Samples src (sw x sh, c channels, HWC u8) through m into dst (c planes of
 * ow x oh floats, CHW): bilinear, reflecting at the borders; each value
 * becomes lut[0] + v * lut[1] (v in 0..255). */
void kiln_warp_image(const uint8_t *src, int sw, int sh, int c, const double m[6], int ow,
                     int oh, const float lut[2], float *dst);
/* The same for a mask, nearest neighbour, into i32 class ids. */
void kiln_warp_mask(const uint8_t *src, int sw, int sh, const double m[6], int ow, int oh,
                    int32_t *dst);

/* Resizes an HWC u8 image: a triangle filter widened when shrinking (PIL's
 * BILINEAR resize, antialiased). Returns 0, or -1 when out of memory. */
int kiln_resize_u8(const uint8_t *src, int sw, int sh, int c, uint8_t *dst, int dw, int dh);
/* Resizes a mask by nearest neighbour (pixel centres). */
void kiln_resize_nearest(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh);

#endif
