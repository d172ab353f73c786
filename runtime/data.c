/* runtime/data.c — data sets in memory (see include/kiln/data.h).
 *
 * A data set is N samples: x f32 [N, ...] and y (i32 labels or f32 targets)
 * [N, ...], each one malloc'd block (struct kiln_dataset in runtime/idx.h).
 * Readers: idx files (MNIST, Fashion-MNIST; runtime/idx.c), .npy files
 * (runtime/npy.c) and caller arrays. Every failure returns a status and, when
 * err is not NULL, a malloc'd message in *err that starts with the path it is
 * about; *out is NULL then.
 *
 * Statuses: a file that cannot be opened is KILN_ERR_IO; a file whose
 * content fails a check (bad magic, truncated, x and y with different
 * sample counts) is KILN_ERR_CORRUPT; a Fashion-MNIST directory without the
 * files is KILN_ERR_NOT_FOUND; bad arguments are KILN_ERR_INVALID, and
 * arrays whose shapes do not fit together KILN_ERR_SHAPE.
 */
#include "runtime/idx.h"
#include "runtime/imgdata.h"
#include "runtime/npy.h"
#include "ir/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- construction -------------------------------------------------------- */

#define MAX_BYTES ((int64_t)1 << 60)

/* Elements in one sample of shape[0..rank), or -1 on a negative size or an
 * overflow past MAX_BYTES / 8. */
static int64_t sample_numel(int rank, const int64_t *shape)
{
    int64_t n = 1;
    for (int k = 0; k < rank; k++) {
        if (shape[k] < 0) return -1;
        if (shape[k] && n > MAX_BYTES / 8 / shape[k]) return -1;
        n *= shape[k];
    }
    return n;
}

/* An empty data set of n samples with these per-sample shapes; x and y
 * allocated but not filled. */
static kiln_status dataset_new(int64_t n, int x_rank, const int64_t *x_shape, kiln_dtype y_dtype,
                               int y_rank, const int64_t *y_shape, kiln_dataset **out,
                               char **err, const char *what)
{
    *out = NULL;
    if (n < 0)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: negative sample count %lld", what,
                            (long long)n);
    if (x_rank < 0 || x_rank >= KILN_MAX_RANK || y_rank < 0 || y_rank >= KILN_MAX_RANK)
        return kiln_set_err(err, KILN_ERR_UNSUPPORTED, "%s: rank above %d", what, KILN_MAX_RANK);
    int64_t xn = sample_numel(x_rank, x_shape), yn = sample_numel(y_rank, y_shape);
    if (xn < 0 || yn < 0 || (xn && n > MAX_BYTES / 8 / xn) || (yn && n > MAX_BYTES / 8 / yn))
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: shape overflow", what);
    if ((uint64_t)(n * xn) > (uint64_t)SIZE_MAX / 8 || (uint64_t)(n * yn) > (uint64_t)SIZE_MAX / 8)
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: too large for this machine", what);
    kiln_dataset *d = calloc(1, sizeof *d);
    if (!d) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", what);
    d->n = n;
    d->x_rank = x_rank;
    if (x_rank) memcpy(d->x_shape, x_shape, (size_t)x_rank * sizeof *x_shape);
    d->x_numel = xn;
    d->y_dtype = y_dtype;
    d->y_rank = y_rank;
    if (y_rank) memcpy(d->y_shape, y_shape, (size_t)y_rank * sizeof *y_shape);
    d->y_numel = yn;
    /* at least one byte each, so x and y are never NULL */
    d->x = malloc((size_t)(n * xn) * sizeof(float) + 1);
    d->y = malloc((size_t)(n * yn) * 4 + 1);
    if (!d->x || !d->y) {
        kiln_dataset_free(d);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory (%lld samples)", what,
                            (long long)n);
    }
    *out = d;
    return KILN_OK;
}

void kiln_dataset_free(kiln_dataset *d)
{
    if (!d) return;
    kiln_imgset_free(d->img);
    free(d->x);
    free(d->y);
    free(d);
}

/* ---- idx ----------------------------------------------------------------- */

kiln_status kiln_dataset_load_idx(const char *images, const char *labels, kiln_dataset **out,
                                  char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_load_idx: out is NULL");
    *out = NULL;
    if (!images || !labels)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_load_idx: a path is NULL");
    char msg[1024];
    kiln_idx im, lb;
    kiln_status st = kiln_idx_load(images, KILN_IDX_MAGIC_IMAGES, &im, msg, sizeof msg);
    if (st) return kiln_set_err(err, st, "%s", msg);
    st = kiln_idx_load(labels, KILN_IDX_MAGIC_LABELS, &lb, msg, sizeof msg);
    if (st) {
        kiln_idx_free(&im);
        return kiln_set_err(err, st, "%s", msg);
    }
    if (im.dims[0] != lb.dims[0]) {
        st = kiln_set_err(err, KILN_ERR_CORRUPT, "%s holds %lld images but %s holds %lld labels",
                          images, (long long)im.dims[0], labels, (long long)lb.dims[0]);
        kiln_idx_free(&im);
        kiln_idx_free(&lb);
        return st;
    }
    int64_t xs[3] = {1, im.dims[1], im.dims[2]};
    kiln_dataset *d;
    st = dataset_new(im.dims[0], 3, xs, KILN_I32, 0, NULL, &d, err, images);
    if (!st) {
        for (int64_t k = 0; k < im.numel; k++) d->x[k] = (float)im.data[k] / 255.0f;
        int32_t *y = d->y;
        for (int64_t k = 0; k < lb.numel; k++) y[k] = lb.data[k];
        *out = d;
    }
    kiln_idx_free(&im);
    kiln_idx_free(&lb);
    return st;
}

/* ---- Fashion-MNIST ------------------------------------------------------- */

#define FASHION_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define FASHION_PROBE "/train-images-idx3-ubyte.gz"

static int is_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Where Debian's dataset-fashion-mnist put its files, from `dpkg -L`, as a
 * malloc'd directory; NULL when dpkg or the package is not there. */
static char *dpkg_fashion_dir(void)
{
    FILE *p = popen("dpkg -L dataset-fashion-mnist 2>/dev/null", "r");
    if (!p) return NULL;
    char line[4096];
    char *dir = NULL;
    const size_t plen = strlen(FASHION_PROBE);
    while (fgets(line, sizeof line, p)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = '\0';
        if (!dir && n > plen && !strcmp(line + n - plen, FASHION_PROBE)) {
            line[n - plen] = '\0';
            dir = malloc(n - plen + 1);
            if (dir) memcpy(dir, line, n - plen + 1);
        }
    }
    pclose(p); /* after reading everything, so dpkg never gets SIGPIPE */
    return dir;
}

/* dir/name.gz if it is a file, else dir/name if it is, else NULL. */
static char *find_idx(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 5;
    char *p = malloc(n);
    if (!p) return NULL;
    snprintf(p, n, "%s/%s.gz", dir, name);
    if (is_file(p)) return p;
    snprintf(p, n, "%s/%s", dir, name);
    if (is_file(p)) return p;
    free(p);
    return NULL;
}

kiln_status kiln_dataset_fashion_mnist(const char *dir, int train, kiln_dataset **out,
                                       char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_fashion_mnist: out is NULL");
    *out = NULL;
    char *found = NULL;
    if (!dir) {
        found = dpkg_fashion_dir();
        dir = found ? found : FASHION_DEFAULT_DIR;
    }
    const char *split = train ? "train" : "t10k";
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    char *images = find_idx(dir, name);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    char *labels = find_idx(dir, name);
    kiln_status st;
    if (!images || !labels)
        st = kiln_set_err(err, KILN_ERR_NOT_FOUND,
                          "Fashion-MNIST not found in %s: install Debian's dataset-fashion-mnist "
                          "(apt-get install dataset-fashion-mnist) or pass --data DIR",
                          dir);
    else
        st = kiln_dataset_load_idx(images, labels, out, err);
    free(images);
    free(labels);
    free(found);
    return st;
}

/* ---- .npy ---------------------------------------------------------------- */

static int is_int_dtype(kiln_dtype t)
{
    return t == KILN_I32 || t == KILN_I64 || t == KILN_U8 || t == KILN_BOOL;
}

kiln_status kiln_dataset_load_npy(const char *x_path, const char *y_path, kiln_dataset **out,
                                  char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_load_npy: out is NULL");
    *out = NULL;
    if (!x_path || !y_path)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_load_npy: a path is NULL");
    char msg[1024];
    kiln_npy x, y;
    kiln_status st = kiln_npy_load(x_path, &x, msg, sizeof msg);
    if (st) return kiln_set_err(err, st, "%s", msg);
    st = kiln_npy_load(y_path, &y, msg, sizeof msg);
    if (st) {
        kiln_npy_free(&x);
        return kiln_set_err(err, st, "%s", msg);
    }
    kiln_dataset *d = NULL;
    if (x.rank < 1)
        st = kiln_set_err(err, KILN_ERR_SHAPE, "%s: x must have a sample axis, not rank 0", x_path);
    else if (y.rank < 1)
        st = kiln_set_err(err, KILN_ERR_SHAPE, "%s: y must have a sample axis, not rank 0", y_path);
    else if (x.shape[0] != y.shape[0])
        st = kiln_set_err(err, KILN_ERR_CORRUPT, "%s holds %lld samples but %s holds %lld", x_path,
                          (long long)x.shape[0], y_path, (long long)y.shape[0]);
    else
        st = dataset_new(x.shape[0], x.rank - 1, x.shape + 1,
                         is_int_dtype(y.dtype) ? KILN_I32 : KILN_F32, y.rank - 1, y.shape + 1,
                         &d, err, x_path);
    if (!st) {
        for (int64_t k = 0; k < x.numel; k++) d->x[k] = (float)kiln_npy_get(&x, k);
        if (d->y_dtype == KILN_I32) {
            int32_t *yi = d->y;
            for (int64_t k = 0; k < y.numel; k++) {
                int64_t v = kiln_npy_get_int(&y, k);
                if (v < INT32_MIN || v > INT32_MAX) {
                    st = kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                                      "%s: label %lld at element %lld does not fit in i32", y_path,
                                      (long long)v, (long long)k);
                    break;
                }
                yi[k] = (int32_t)v;
            }
        } else {
            float *yf = d->y;
            for (int64_t k = 0; k < y.numel; k++) yf[k] = (float)kiln_npy_get(&y, k);
        }
    }
    kiln_npy_free(&x);
    kiln_npy_free(&y);
    if (st) {
        kiln_dataset_free(d);
        return st;
    }
    *out = d;
    return KILN_OK;
}

/* ---- arrays -------------------------------------------------------------- */

kiln_status kiln_dataset_from_arrays(const float *x, int x_rank, const int64_t *x_shape,
                                     const void *y, kiln_dtype y_dtype, int y_rank,
                                     const int64_t *y_shape, kiln_dataset **out, char **err)
{
    static const char *what = "kiln_dataset_from_arrays";
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "%s: out is NULL", what);
    *out = NULL;
    if (x_rank < 1 || x_rank > KILN_MAX_RANK || !x_shape)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: x rank %d (must be 1 to %d)", what, x_rank,
                            KILN_MAX_RANK);
    if (y_rank < 1 || y_rank > KILN_MAX_RANK || !y_shape)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: y rank %d (must be 1 to %d)", what, y_rank,
                            KILN_MAX_RANK);
    if (y_dtype != KILN_I32 && y_dtype != KILN_F32)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: y dtype %s (must be i32 or f32)", what,
                            (unsigned)y_dtype < KILN_DTYPE_COUNT ? kiln_dtype_name(y_dtype)
                                                                 : "(invalid)");
    if (x_shape[0] != y_shape[0])
        return kiln_set_err(err, KILN_ERR_SHAPE, "%s: x has %lld samples but y has %lld", what,
                            (long long)x_shape[0], (long long)y_shape[0]);
    kiln_dataset *d;
    kiln_status st = dataset_new(x_shape[0], x_rank - 1, x_shape + 1, y_dtype, y_rank - 1,
                                 y_shape + 1, &d, err, what);
    if (st) return st;
    size_t xb = (size_t)(d->n * d->x_numel) * sizeof(float), yb = (size_t)(d->n * d->y_numel) * 4;
    if ((xb && !x) || (yb && !y)) {
        kiln_dataset_free(d);
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: %s is NULL", what, xb && !x ? "x" : "y");
    }
    if (xb) memcpy(d->x, x, xb);
    if (yb) memcpy(d->y, y, yb);
    *out = d;
    return KILN_OK;
}

/* ---- queries ------------------------------------------------------------- */

int64_t kiln_dataset_len(const kiln_dataset *d)
{
    return d ? d->n : 0;
}

void kiln_dataset_shapes(const kiln_dataset *d, int *x_rank, int64_t *x_shape, int *y_rank,
                         int64_t *y_shape, kiln_dtype *y_dtype)
{
    if (x_rank) *x_rank = d ? d->x_rank : 0;
    if (y_rank) *y_rank = d ? d->y_rank : 0;
    if (y_dtype) *y_dtype = d ? d->y_dtype : KILN_I32;
    if (!d) return;
    if (x_shape) for (int k = 0; k < d->x_rank; k++) x_shape[k] = d->x_shape[k];
    if (y_shape) for (int k = 0; k < d->y_rank; k++) y_shape[k] = d->y_shape[k];
}

void kiln_dataset_normalize(kiln_dataset *d, float mean, float std)
{
    if (!d) return;
    if (d->img) { /* kept u8: fold into the conversion a batch applies */
        d->img->mean += mean * d->img->std;
        d->img->std *= std;
        return;
    }
    int64_t n = d->n * d->x_numel;
    for (int64_t k = 0; k < n; k++) d->x[k] = (d->x[k] - mean) / std;
}

/* Population statistics (numpy's x.mean(), x.std()), in double, two passes. */
void kiln_dataset_stats(const kiln_dataset *d, float *mean, float *std)
{
    if (d && d->img) {
        kiln_imgset_stats(d, mean, std);
        return;
    }
    double m = 0, v = 0;
    int64_t n = d ? d->n * d->x_numel : 0;
    if (n > 0) {
        for (int64_t k = 0; k < n; k++) m += d->x[k];
        m /= (double)n;
        for (int64_t k = 0; k < n; k++) {
            double e = d->x[k] - m;
            v += e * e;
        }
        v /= (double)n;
    }
    if (mean) *mean = (float)m;
    if (std) *std = (float)sqrt(v);
}

kiln_status kiln_dataset_head(const kiln_dataset *d, int64_t n, kiln_dataset **out)
{
    if (!out) return KILN_ERR_INVALID;
    *out = NULL;
    if (!d || n < 0) return KILN_ERR_INVALID;
    if (n > d->n) n = d->n;
    if (d->img) return kiln_imgset_head(d, n, out);
    kiln_dataset *h;
    kiln_status st = dataset_new(n, d->x_rank, d->x_shape, d->y_dtype, d->y_rank, d->y_shape, &h,
                                 NULL, "kiln_dataset_head");
    if (st) return st;
    memcpy(h->x, d->x, (size_t)(n * d->x_numel) * sizeof(float));
    memcpy(h->y, d->y, (size_t)(n * d->y_numel) * 4);
    *out = h;
    return KILN_OK;
}
