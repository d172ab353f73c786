/* codegen/lower_norm.c — scalar and lowering rules of train_eval,
 * batchnorm_stats, batchnorm_apply, batchnorm_sums and dropout
 * (ir/ops_norm.def).
 *
 * train_eval and batchnorm_apply are pointwise: their scalar rules (b, and
 * (x - m) s + b in the node's dtype) go through kiln_lower_pointwise or
 * the fused lowering, so batchnorm's normalisation fuses with what reads it
 * (a relu) into one pass.
 *
 * batchnorm_stats is one pass over x [N, C, I] (I the product of the axes
 * after C), one parallel iteration per channel c:
 *
 *   x0 = x[0, c, 0]                       (a shift: the sums stay small)
 *   s = q = 0                             (f64)
 *   for b < N, i < I:   d = x[b, c, i] - x0;  s += d;  q += d * d
 *   mean = x0 + s / n;  var = max(q / n - (s / n)^2, 0)       (n = N I)
 *
 * the innermost loop vector-hinted (its sums may be reassociated: the
 * reference's two-pass double sums agree to rounding). With n = 0 the shift
 * is 0 and both results 0/0, NaN, as the reference. batchnorm_sums (the
 * gradient's sum(dy) and sum(dy (x - mean))) is the same loop nest.
 *
 * dropout is one flat loop over the elements (parallel):
 *
 *   key = hash(seed, (i64)step)           (once, before the loop)
 *   y[i] = hash(key, i) >= ceil(p 2^31) ? x[i] * scale : 0
 *
 * with KX_HASH (ir/kernel.h) and the scale the reference uses
 * (kiln_dropout_scale), so every backend keeps the reference's elements and
 * computes the same values bit for bit. */
#include "ir/kernel.h"
#include "ir/ops.h"

#define BIN(op, a, b) kiln_kx_bin(kb, op, a, b)
#define F64(v) kiln_kx_float(kb, v, KILN_F64)
#define I64(v) kiln_kx_int(kb, v)
#define LOCAL(t) kiln_kx_local(kb, t)

int32_t kiln_train_eval_scalar(kiln_kb *kb, const kiln_node *n, const int32_t *in)
{
    (void)kb;
    (void)n;
    return in[1];
}

int32_t kiln_batchnorm_apply_scalar(kiln_kb *kb, const kiln_node *n, const int32_t *in)
{
    (void)n;
    return BIN(KX_ADD, BIN(KX_MUL, BIN(KX_SUB, in[0], in[1]), in[2]), in[3]);
}

kiln_status kiln_batchnorm_stats_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_dtype t = (kiln_dtype)n->dtype;
    int64_t N = x->shape[0], C = x->shape[1];
    int64_t I = kiln_shape_numel(x->rank - 2, x->shape + 2), cnt = N * I;
    int32_t xb = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t x0 = kiln_kb_local(kb, KILN_F64), s = kiln_kb_local(kb, KILN_F64),
            q = kiln_kb_local(kb, KILN_F64), mean = kiln_kb_local(kb, KILN_F64);
    if (C == 0) return kiln_kb_status(kb);

    int32_t c = kiln_kx_var(kb, kiln_kb_loop(kb, C));
    kiln_kb_hint(kb, 0, 1); /* each channel writes its own two outputs */
    /* x[b, c, i] at (b C + c) I + i */
    int32_t first = BIN(KX_MUL, c, I64(I));
    kiln_kb_set(kb, x0, cnt > 0 ? kiln_kx_cast(kb, kiln_kx_load(kb, xb, first), KILN_F64) : F64(0));
    kiln_kb_set(kb, s, F64(0));
    kiln_kb_set(kb, q, F64(0));
    int32_t b = kiln_kx_var(kb, kiln_kb_loop(kb, N));
    if (I == 1) kiln_kb_hint(kb, 1, 0);
    int32_t base = BIN(KX_MUL, BIN(KX_ADD, BIN(KX_MUL, b, I64(C)), c), I64(I));
    int32_t idx = base;
    if (I != 1) {
        int32_t i = kiln_kx_var(kb, kiln_kb_loop(kb, I));
        kiln_kb_hint(kb, 1, 0);
        idx = BIN(KX_ADD, base, i);
    }
    int32_t d = BIN(KX_SUB, kiln_kx_cast(kb, kiln_kx_load(kb, xb, idx), KILN_F64), LOCAL(x0));
    kiln_kb_set(kb, s, BIN(KX_ADD, LOCAL(s), d));
    kiln_kb_set(kb, q, BIN(KX_ADD, LOCAL(q), BIN(KX_MUL, d, d)));
    if (I != 1) kiln_kb_end(kb);
    kiln_kb_end(kb);
    int32_t m1 = BIN(KX_DIV, LOCAL(s), F64((double)cnt));
    kiln_kb_set(kb, mean, m1);
    int32_t var = BIN(KX_SUB, BIN(KX_DIV, LOCAL(q), F64((double)cnt)),
                      BIN(KX_MUL, LOCAL(mean), LOCAL(mean)));
    var = BIN(KX_MAX, var, F64(0)); /* rounding never makes it negative; NaN stays NaN */
    int32_t coords[KILN_MAX_RANK];
    coords[0] = I64(0);
    coords[1] = c;
    for (int k = 2; k < n->rank; k++) coords[k] = I64(0);
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, coords),
                  kiln_kx_cast(kb, BIN(KX_ADD, LOCAL(x0), LOCAL(mean)), t));
    coords[0] = I64(1);
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, coords), kiln_kx_cast(kb, var, t));
    kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

/* batchnorm_sums: per channel c (parallel), over b < N, i < I (the inner
 * loop vector-hinted, its sums reassociable):
 *   s1 += dy[b, c, i];  s2 += dy[b, c, i] * (x[b, c, i] - mean[c])   (f64) */
kiln_status kiln_batchnorm_sums_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_node *x = &g->nodes[n->inputs[1]];
    kiln_dtype t = (kiln_dtype)n->dtype;
    int64_t N = x->shape[0], C = x->shape[1];
    int64_t I = kiln_shape_numel(x->rank - 2, x->shape + 2);
    int32_t db = kiln_kb_in(kb, 0), xb = kiln_kb_in(kb, 1), mb = kiln_kb_in(kb, 2);
    int32_t out = kiln_kb_out(kb);
    int32_t mc = kiln_kb_local(kb, KILN_F64), s1 = kiln_kb_local(kb, KILN_F64),
            s2 = kiln_kb_local(kb, KILN_F64);
    if (C == 0) return kiln_kb_status(kb);
    int32_t c = kiln_kx_var(kb, kiln_kb_loop(kb, C));
    kiln_kb_hint(kb, 0, 1);
    kiln_kb_set(kb, mc, kiln_kx_cast(kb, kiln_kx_load(kb, mb, c), KILN_F64));
    kiln_kb_set(kb, s1, F64(0));
    kiln_kb_set(kb, s2, F64(0));
    int32_t b = kiln_kx_var(kb, kiln_kb_loop(kb, N));
    if (I == 1) kiln_kb_hint(kb, 1, 0);
    int32_t idx = BIN(KX_MUL, BIN(KX_ADD, BIN(KX_MUL, b, I64(C)), c), I64(I));
    if (I != 1) {
        int32_t i = kiln_kx_var(kb, kiln_kb_loop(kb, I));
        kiln_kb_hint(kb, 1, 0);
        idx = BIN(KX_ADD, idx, i);
    }
    int32_t d = kiln_kx_cast(kb, kiln_kx_load(kb, db, idx), KILN_F64);
    int32_t xm = BIN(KX_SUB, kiln_kx_cast(kb, kiln_kx_load(kb, xb, idx), KILN_F64), LOCAL(mc));
    kiln_kb_set(kb, s1, BIN(KX_ADD, LOCAL(s1), d));
    kiln_kb_set(kb, s2, BIN(KX_ADD, LOCAL(s2), BIN(KX_MUL, d, xm)));
    if (I != 1) kiln_kb_end(kb);
    kiln_kb_end(kb);
    int32_t coords[KILN_MAX_RANK];
    coords[0] = I64(0);
    coords[1] = c;
    for (int k = 2; k < n->rank; k++) coords[k] = I64(0);
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, coords), kiln_kx_cast(kb, LOCAL(s1), t));
    coords[0] = I64(1);
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, coords), kiln_kx_cast(kb, LOCAL(s2), t));
    kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

kiln_status kiln_dropout_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    kiln_dtype t = (kiln_dtype)n->dtype;
    double p = kiln_attr_get_float(n, "p");
    int64_t numel = kiln_node_numel(n);
    int32_t xb = kiln_kb_in(kb, 0), sb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    int32_t key = kiln_kb_local(kb, KILN_I64);
    if (numel == 0) return kiln_kb_status(kb);
    int32_t step = kiln_kx_cast(kb, kiln_kx_load(kb, sb, I64(0)), KILN_I64);
    kiln_kb_set(kb, key, kiln_kx_hash(kb, I64(kiln_attr_get_int(n, "seed")), step));
    int32_t i = kiln_kx_var(kb, kiln_kb_loop(kb, numel));
    kiln_kb_hint(kb, 1, 1);
    int32_t keep = BIN(KX_GE, kiln_kx_hash(kb, LOCAL(key), i), I64(kiln_dropout_threshold(p)));
    int32_t v = BIN(KX_MUL, kiln_kx_load(kb, xb, i), kiln_kx_float(kb, kiln_dropout_scale(p, t), t));
    kiln_kb_store(kb, out, i, kiln_kx_select(kb, keep, v, kiln_kx_float(kb, 0, t)));
    kiln_kb_end(kb);
    return kiln_kb_status(kb);
}
