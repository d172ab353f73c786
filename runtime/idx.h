/* runtime/idx.h — the idx reader (MNIST, Fashion-MNIST) and the in-memory
 * layout of a data set (internal API, shared by runtime/data.c, idx.c and
 * loader.c).
 *
 * An idx file is a big-endian header — the magic 0x000008DD (0x08: unsigned
 * bytes; DD: the number of dimensions), one 32-bit size per dimension — and
 * then the elements, row-major. kiln reads two kinds: images (magic
 * 0x00000803, sizes N, H, W) and labels (magic 0x00000801, size N). The file
 * may be gzipped or not: zlib's gzread reads both.
 */
#ifndef KILN_RUNTIME_IDX_H
#define KILN_RUNTIME_IDX_H

#include "kiln/kiln.h"

#define KILN_IDX_MAGIC_IMAGES 0x00000803u
#define KILN_IDX_MAGIC_LABELS 0x00000801u

/* N samples: x is f32 [N, x_shape...], y is y_dtype (KILN_I32 or KILN_F32)
 * [N, y_shape...]; both malloc'd, C order. */
struct kiln_dataset {
    int64_t n;
    int x_rank; /* rank of one sample (the shape without N) */
    int64_t x_shape[KILN_MAX_RANK];
    int64_t x_numel; /* elements in one sample's x */
    float *x;
    kiln_dtype y_dtype;
    int y_rank;
    int64_t y_shape[KILN_MAX_RANK];
    int64_t y_numel; /* elements in one sample's y */
    void *y;
    /* image data sets (runtime/imgdata.h): the u8 images, x a placeholder */
    struct kiln_imgset *img;
};

/* What an idx file holds: rank dims and numel unsigned bytes (malloc'd). */
typedef struct kiln_idx {
    int rank;
    int64_t dims[3];
    int64_t numel;
    unsigned char *data;
} kiln_idx;

/* Reads an idx file whose magic must be `magic` (KILN_IDX_MAGIC_IMAGES or
 * KILN_IDX_MAGIC_LABELS) into *out (zeroed first; kiln_idx_free releases
 * it). A missing or unreadable file is KILN_ERR_IO, a bad magic, a zero or
 * overflowing size, truncated or trailing data or a broken gzip stream is
 * KILN_ERR_CORRUPT; err (if not NULL) then holds "path: message". Memory
 * grows with the data actually read, never with the sizes the header
 * claims, so a lying header cannot make it allocate more than the file
 * holds. */
kiln_status kiln_idx_load(const char *path, uint32_t magic, kiln_idx *out, char *err,
                          size_t errlen);

void kiln_idx_free(kiln_idx *a);

#endif
