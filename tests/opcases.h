/* tests/opcases.h — per-op test cases, one table per op family
 * (tests/opcases/<family>.c). tests/test_ops.c runs every row twice:
 *  - forward: the op on the given inputs (dtypes as given) through the
 *    reference interpreter, compared with `expected` (hand-computed or
 *    NumPy-style values) within 1e-6 relative;
 *  - gradient: unless no_grad, float inputs become f64 parameters, the loss
 *    is sum(op(inputs) * w) for a fixed random w, and every parameter's
 *    gradient from the autodiff pass is compared with central differences
 *    (relative error < 1e-6, norm-wise).
 * A coverage test fails when a registry op has no forward case, or has a
 * gradient rule but no gradient case. */
#ifndef KILN_TESTS_OPCASES_H
#define KILN_TESTS_OPCASES_H

#include "kiln/kiln.h"
#include <stdbool.h>

typedef struct op_input {
    kiln_dtype dtype; /* KILN_F32 when zero */
    int rank;
    int64_t shape[KILN_MAX_RANK];
    const double *data; /* NULL: random values in [lo, hi) */
    double lo, hi;      /* both 0: [-1, 1); integer dtypes draw integers in [lo, hi) */
} op_input;

typedef struct op_case {
    const char *name; /* unique, descriptive: "add_broadcast_row" */
    const char *op;   /* registry name */
    int ninputs;
    op_input in[4];
    int nattrs;
    const char *attrs[8]; /* "name=value", as kiln_op takes them */
    const double *expected; /* forward values, row-major; NULL: no forward check */
    int64_t nexpected;
    bool no_grad; /* skip the gradient check */
} op_case;

#define OPCASE_FAMILY(fam)                                                                     \
    extern const op_case kiln_opcases_##fam[];                                                 \
    extern const int kiln_nopcases_##fam;
OPCASE_FAMILY(elementwise)
OPCASE_FAMILY(reduce)
OPCASE_FAMILY(matmul)
OPCASE_FAMILY(shape)
OPCASE_FAMILY(loss)
OPCASE_FAMILY(conv)
OPCASE_FAMILY(norm)
OPCASE_FAMILY(pool)
#undef OPCASE_FAMILY

#define OPCASE_COUNT(arr) ((int)(sizeof(arr) / sizeof((arr)[0])))

#endif
