/* runtime/npy.h — NumPy .npy files: reader and writer (internal API).
 *
 * Reads format versions 1.0, 2.0 and 3.0 with dtypes '<f4' '<f8' '<i4' '<i8'
 * (big-endian '>' forms are byte-swapped), '|u1' and '|b1' (any byte-order
 * character for the one-byte types), in C order. Everything read from the
 * file is bounds-checked: a malformed or truncated file is KILN_ERR_CORRUPT,
 * a well-formed file kiln cannot represent (fortran_order, a structured or
 * other dtype, rank above KILN_MAX_RANK, a newer format) is
 * KILN_ERR_UNSUPPORTED (fortran_order is accepted for rank 0 and 1, where it
 * changes nothing), and a file that cannot be opened or read is
 * KILN_ERR_IO. The message written to err always starts with the path.
 *
 * The writer emits version 1.0 with a little-endian descr, as numpy.save
 * does, into "<path>.tmp", then renames it over path, so a crash never leaves
 * a half-written file under the final name.
 */
#ifndef KILN_RUNTIME_NPY_H
#define KILN_RUNTIME_NPY_H

#include "kiln/kiln.h"

/* The largest header accepted (numpy's own are under 200 bytes). */
#define KILN_NPY_MAX_HEADER 65536

typedef struct kiln_npy {
    kiln_dtype dtype;
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t numel; /* product of shape (1 for rank 0) */
    void *data;    /* numel elements in C order, host byte order; malloc'd */
} kiln_npy;

/* Loads path into *out (zeroed first; kiln_npy_free releases it). On failure
 * *out holds nothing and err (if not NULL) holds "path: message". */
kiln_status kiln_npy_load(const char *path, kiln_npy *out, char *err, size_t errlen);

/* Writes an array of dtype t (F32, F64, I32, I64, U8 or BOOL) and the given
 * shape from data (host byte order, C order; may be NULL when it has no
 * elements). */
kiln_status kiln_npy_save(const char *path, kiln_dtype t, int rank, const int64_t *shape,
                          const void *data, char *err, size_t errlen);

void kiln_npy_free(kiln_npy *a);

/* Converts a's numel elements to doubles in out (which holds a->numel). */
kiln_status kiln_npy_to_f64(const kiln_npy *a, double *out);
/* Element k (row-major) as a double, and exactly as an integer (integer and
 * bool dtypes; 0 for others). k must be below a->numel. */
double kiln_npy_get(const kiln_npy *a, int64_t k);
int64_t kiln_npy_get_int(const kiln_npy *a, int64_t k);

/* The numpy descr kiln writes for t ("<f4", "|u1", ...), or NULL. */
const char *kiln_npy_descr(kiln_dtype t);

#endif
