/* codegen/lower_matmul.c — the lowering rule of matmul.
 *
 * Computes what kiln_matmul_ref (ir/ops_matmul.c) computes: op(A) @ op(B)
 * over the last two axes, batch axes broadcast by NumPy's rules, a rank-1 a
 * read as a row [1,K] and a rank-1 b as a column [K,1] (the added axis
 * absent from the output), ta/tb transposing the stored matrix (no effect on
 * a rank-1 operand).
 *
 * The loop order follows the operands' layout so that the innermost loop
 * walks memory contiguously and vectorizes (a later schedule packs and
 * register-blocks it):
 *
 *  - float matrices with b not transposed (b's rows are contiguous in j),
 *    rows of at most KILN_ROW_SCRATCH_MAX: the row-update form, the row
 *    accumulated in an f64 scratch row (the reference's order and precision,
 *    so f32 results round to the reference's exactly):
 *      for batch, i:  acc[:] = 0;  for k: for j: acc[j] += a[i, k] * b[k, j];
 *                     out[i, :] = acc[:]
 *  - otherwise (b transposed: rows of b^T contiguous in k; rank-1 operands;
 *    integers): the dot form with an accumulator, f64 for floats and i64 for
 *    integers; for floats the k loop carries a vector hint (a SIMD reduction):
 *      for batch, i, j:  t = 0;  for k: t += a[i, k] * b[k, j];  out[i, j] = t
 *
 * A transposed operand is handled in its index expression: a^T[i, k] is the
 * stored a[k, i].
 */
#include "ir/kernel.h"
#include "ir/ops.h"

#include <string.h>

/* The longest output row the row-update form accumulates on the stack. */
#define KILN_ROW_SCRATCH_MAX 8192

/* The element index of op(X)[batch..., r, c] in operand x's buffer, where
 * batch[0..nb) are the output's batch indices (x's own batch axes broadcast
 * to them). A rank-1 x is indexed by the K position alone: c for a (a row),
 * r for b (a column). */
static int32_t operand_index(kiln_kb *kb, int32_t buf, const kiln_node *x, bool is_b, int trans,
                             int nb, const int32_t *batch, int32_t r, int32_t c)
{
    if (x->rank == 1) {
        int32_t k = is_b ? r : c;
        return kiln_kx_index(kb, buf, 1, &k);
    }
    int32_t idx[KILN_MAX_RANK + 2];
    memcpy(idx, batch, (size_t)nb * sizeof *idx);
    idx[nb] = trans ? c : r;
    idx[nb + 1] = trans ? r : c;
    return kiln_kx_index(kb, buf, nb + 2, idx);
}

/* The row-update form (float matrices, b not transposed): for each output
 * row, zero it, then add a[i, k] * b[k, :] for every k. */
static kiln_status row_update(kiln_kb *kb, const kiln_node *n, const kiln_node *a,
                              const kiln_node *b, int32_t ab, int32_t bb, int32_t out, int ta,
                              int64_t M, int64_t K, int64_t N)
{
    kiln_dtype t = (kiln_dtype)n->dtype;
    int nb = n->rank - 2;
    /* the row accumulates in f64 (as the reference sums: k ascending, in
     * double) in a scratch row, then rounds once into the output */
    int32_t acc = kiln_kb_scratch(kb, KILN_F64, N);
    int32_t oidx[KILN_MAX_RANK];
    for (int d = 0; d < nb; d++) {
        oidx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, n->shape[d]));
        if (d == 0) kiln_kb_hint(kb, 0, 1); /* each batch writes its own rows */
    }
    int32_t i = kiln_kx_var(kb, kiln_kb_loop(kb, M));
    if (nb == 0) kiln_kb_hint(kb, 0, 1); /* each i writes its own output row */
    oidx[nb] = i;
    int32_t j = kiln_kx_var(kb, kiln_kb_loop(kb, N));
    kiln_kb_store(kb, acc, j, kiln_kx_float(kb, 0.0, KILN_F64));
    kiln_kb_end(kb);
    int32_t k = kiln_kx_var(kb, kiln_kb_loop(kb, K));
    int32_t x = kiln_kx_cast(
        kb, kiln_kx_load(kb, ab, operand_index(kb, ab, a, false, ta, nb, oidx, i, k)), KILN_F64);
    j = kiln_kx_var(kb, kiln_kb_loop(kb, N));
    oidx[nb + 1] = j;
    int32_t y = kiln_kx_cast(
        kb, kiln_kx_load(kb, bb, operand_index(kb, bb, b, true, 0, nb, oidx, k, j)), KILN_F64);
    kiln_kb_store(kb, acc, j,
                  kiln_kx_bin(kb, KX_ADD, kiln_kx_load(kb, acc, j), kiln_kx_bin(kb, KX_MUL, x, y)));
    kiln_kb_end(kb); /* j */
    kiln_kb_end(kb); /* k */
    j = kiln_kx_var(kb, kiln_kb_loop(kb, N));
    oidx[nb + 1] = j;
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, oidx),
                  kiln_kx_cast(kb, kiln_kx_load(kb, acc, j), t));
    kiln_kb_end(kb); /* j */
    kiln_kb_end(kb); /* i */
    for (int d = 0; d < nb; d++) kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

kiln_status kiln_matmul_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    bool amat = a->rank > 1, bmat = b->rank > 1;
    int ta = amat && kiln_attr_get_int(n, "ta") != 0;
    int tb = bmat && kiln_attr_get_int(n, "tb") != 0;
    /* op(A) is M x K, op(B) is K x N */
    int64_t M = amat ? a->shape[a->rank - 2 + ta] : 1;
    int64_t K = amat ? a->shape[a->rank - 1 - ta] : a->shape[0];
    int64_t N = bmat ? b->shape[b->rank - 1 - tb] : 1;
    int nb = n->rank - amat - bmat;
    bool is_float = kiln_dtype_is_float((kiln_dtype)n->dtype);
    kiln_dtype acc_t = is_float ? KILN_F64 : KILN_I64;

    int32_t ab = kiln_kb_in(kb, 0), bb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    if (is_float && amat && bmat && !tb && N <= KILN_ROW_SCRATCH_MAX)
        return row_update(kb, n, a, b, ab, bb, out, ta, M, K, N);
    int32_t acc = kiln_kb_local(kb, acc_t);

    /* output index: batch axes, then i (if a is a matrix), then j (if b is) */
    int32_t oidx[KILN_MAX_RANK];
    int nloops = 0;
    /* the outermost output loop is parallel: each iteration writes its own
     * output elements, and acc is set afresh for each */
    for (int d = 0; d < nb; d++, nloops++) {
        oidx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, n->shape[d]));
        if (nloops == 0) kiln_kb_hint(kb, 0, 1);
    }
    int32_t i = kiln_kx_int(kb, 0), j = kiln_kx_int(kb, 0);
    if (amat) {
        i = kiln_kx_var(kb, kiln_kb_loop(kb, M));
        if (nloops == 0) kiln_kb_hint(kb, 0, 1);
        oidx[nb] = i;
        nloops++;
    }
    if (bmat) {
        j = kiln_kx_var(kb, kiln_kb_loop(kb, N));
        if (nloops == 0) kiln_kb_hint(kb, 0, 1);
        oidx[n->rank - 1] = j;
        nloops++;
    }

    kiln_kb_set(kb, acc, kiln_kx_float(kb, 0.0, acc_t));
    int32_t k = kiln_kx_var(kb, kiln_kb_loop(kb, K));
    if (is_float) kiln_kb_hint(kb, 1, 0);
    int32_t x = kiln_kx_load(kb, ab, operand_index(kb, ab, a, false, ta, nb, oidx, i, k));
    int32_t y = kiln_kx_load(kb, bb, operand_index(kb, bb, b, true, tb, nb, oidx, k, j));
    int32_t prod = kiln_kx_bin(kb, KX_MUL, kiln_kx_cast(kb, x, acc_t), kiln_kx_cast(kb, y, acc_t));
    kiln_kb_set(kb, acc, kiln_kx_bin(kb, KX_ADD, kiln_kx_local(kb, acc), prod));
    kiln_kb_end(kb);

    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, oidx),
                  kiln_kx_cast(kb, kiln_kx_local(kb, acc), (kiln_dtype)n->dtype));
    for (int d = 0; d < nloops; d++) kiln_kb_end(kb);
    return kiln_kb_status(kb);
}
