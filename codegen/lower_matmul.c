/* codegen/lower_matmul.c — the lowering rule of matmul.
 *
 * Computes what kiln_matmul_ref (ir/ops_matmul.c) computes: op(A) @ op(B)
 * over the last two axes, batch axes broadcast by NumPy's rules, a rank-1 a
 * read as a row [1,K] and a rank-1 b as a column [K,1] (the added axis
 * absent from the output), ta/tb transposing the stored matrix (no effect on
 * a rank-1 operand).
 *
 * The kernel is the plain triple loop, correct and simple (a later schedule
 * packs and register-blocks it):
 *
 *   for batch axes of the output (operands read with broadcasting)
 *     for i in 0..M            (absent when a is rank 1)
 *       for j in 0..N          (absent when b is rank 1)
 *         t = 0
 *         for k in 0..K
 *           t = t + (acc)a[.., i, k] * (acc)b[.., k, j]
 *         out[.., i, j] = (out dtype)t
 *
 * The accumulator t is f64 for floating-point operands (the reference sums
 * in double, in the same k order, so an f32 matmul rounds to the same f32
 * result) and i64 for integer ones. A transposed operand is handled in its
 * index expression: a^T[i, k] is the stored a[k, i].
 */
#include "ir/kernel.h"
#include "ir/ops.h"

#include <string.h>

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
    kiln_dtype acc_t = kiln_dtype_is_float((kiln_dtype)n->dtype) ? KILN_F64 : KILN_I64;

    int32_t ab = kiln_kb_in(kb, 0), bb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    int32_t acc = kiln_kb_local(kb, acc_t);

    /* output index: batch axes, then i (if a is a matrix), then j (if b is) */
    int32_t oidx[KILN_MAX_RANK];
    int nloops = 0;
    for (int d = 0; d < nb; d++, nloops++) oidx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, n->shape[d]));
    int32_t i = kiln_kx_int(kb, 0), j = kiln_kx_int(kb, 0);
    if (amat) {
        i = kiln_kx_var(kb, kiln_kb_loop(kb, M));
        oidx[nb] = i;
        nloops++;
    }
    if (bmat) {
        j = kiln_kx_var(kb, kiln_kb_loop(kb, N));
        oidx[n->rank - 1] = j;
        nloops++;
    }

    kiln_kb_set(kb, acc, kiln_kx_float(kb, 0.0, acc_t));
    int32_t k = kiln_kx_var(kb, kiln_kb_loop(kb, K));
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
