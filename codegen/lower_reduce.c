/* codegen/lower_reduce.c — lowering rules of the reductions (reduce_sum,
 * reduce_mean, reduce_max, argmax) and of softmax / log_softmax.
 *
 * Each computes what its reference in ir/ops_reduce.c computes, reading the
 * attributes the shape rule left canonical ("axes" sorted and in range, or
 * empty for every axis; "axis" in 0..rank-1). Every rule is one kernel over
 * the input x split into kept and reduced axes:
 *
 *   for kept axes of x                       (row-major)
 *     t = init
 *     for reduced axes of x                  (row-major: the reference's order)
 *       t = update(t, x[...])
 *     out[kept index] = (out dtype)finish(t)
 *
 * reduce_sum / reduce_mean accumulate in f64 for floating-point inputs (the
 * reference sums in double, in the same order, so an f32 result rounds to
 * the same value) and in i64 for integer ones; mean divides by the reduced
 * count (0/0 gives NaN, as the reference). reduce_max keeps its running
 * maximum in x's dtype with KX_MAX (NaN-propagating), starting from the
 * first reduced element: the shape rule guarantees there is one whenever
 * the output has elements. argmax keeps the first index of the maximum, a
 * NaN counting as the maximum: once the best value is NaN nothing replaces
 * it.
 *
 * softmax / log_softmax run three passes along the axis per row, in f64 for
 * every float dtype (as the reference):
 *
 *     m = max(x)           (NaN-propagating)
 *     s = sum(exp(x - m))
 *     out = exp(x - m) / s         or       x - m - log(s)
 *
 * The reference takes m = 0 for a row of -inf; that changes no result (0/0
 * and -inf - -inf are NaN there, as exp(-inf - -inf) is here), so the
 * kernel does without it. */
#include "ir/kernel.h"
#include "ir/ops.h"

#include <math.h>

#define BIN(op, a, b) kiln_kx_bin(kb, op, a, b)
#define UN(op, a) kiln_kx_un(kb, op, a)
#define F64(v) kiln_kx_float(kb, v, KILN_F64)
#define LOCAL(t) kiln_kx_local(kb, t)

/* ---- geometry ---- */

/* reduced[d]: axis d of the input is reduced. */
typedef struct red_axes {
    const kiln_node *x; /* the input */
    bool reduced[KILN_MAX_RANK];
} red_axes;

/* The axes a reduce_* node reduces: its "axes", or every axis when empty. */
static red_axes reduce_axes(const kiln_graph *g, const kiln_node *n)
{
    red_axes r = {.x = &g->nodes[n->inputs[0]]};
    const kiln_attr *a = kiln_node_attr(n, "axes");
    int na = a ? a->n : 0;
    for (int d = 0; d < r.x->rank; d++) r.reduced[d] = na == 0;
    for (int k = 0; k < na; k++)
        if (a->i[k] >= 0 && a->i[k] < r.x->rank) r.reduced[a->i[k]] = true;
    return r;
}

/* The one axis of argmax, softmax and log_softmax. */
static red_axes single_axis(const kiln_graph *g, const kiln_node *n)
{
    red_axes r = {.x = &g->nodes[n->inputs[0]]};
    r.reduced[kiln_attr_get_int(n, "axis")] = true;
    return r;
}

/* Opens one loop per axis of x that is reduced (which = true) or kept
 * (false), outermost first, and sets idx[d] to each one's variable; returns
 * how many it opened (close them with end_loops). Kept-axis loops: the
 * first is marked parallel (each of its iterations writes its own output
 * elements, and every local is set afresh inside it). */
static int open_loops(kiln_kb *kb, const red_axes *r, bool which, int32_t *idx)
{
    int opened = 0;
    for (int d = 0; d < r->x->rank; d++)
        if (r->reduced[d] == which) {
            idx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, r->x->shape[d]));
            if (!which && opened == 0) kiln_kb_hint(kb, 0, 1);
            opened++;
        }
    return opened;
}

static void end_loops(kiln_kb *kb, int n)
{
    while (n-- > 0) kiln_kb_end(kb);
}

/* Sets idx[d] to 0 on the reduced axes: the first reduced element. */
static void first_reduced(kiln_kb *kb, const red_axes *r, int32_t *idx)
{
    for (int d = 0; d < r->x->rank; d++)
        if (r->reduced[d]) idx[d] = kiln_kx_int(kb, 0);
}

/* The element index into the output buffer `out` of the kept index idx
 * (x's axes): the reduced axes dropped, or kept as size 1 (keepdims). */
static int32_t out_index(kiln_kb *kb, int32_t out, const red_axes *r, bool keepdims,
                         const int32_t *idx)
{
    int32_t oidx[KILN_MAX_RANK];
    int rank = 0;
    for (int d = 0; d < r->x->rank; d++) {
        if (!r->reduced[d]) oidx[rank++] = idx[d];
        else if (keepdims) oidx[rank++] = kiln_kx_int(kb, 0);
    }
    return kiln_kx_index(kb, out, rank, oidx);
}

/* x's element at idx (every axis of x), converted to dtype t. */
static int32_t load_x(kiln_kb *kb, int32_t xb, const red_axes *r, const int32_t *idx, kiln_dtype t)
{
    return kiln_kx_cast(kb, kiln_kx_load_at(kb, xb, r->x->rank, idx), t);
}

/* The dtype sums accumulate in: f64 for floats, i64 for integers. */
static kiln_dtype sum_dtype(const kiln_node *x)
{
    return kiln_dtype_is_float((kiln_dtype)x->dtype) ? KILN_F64 : KILN_I64;
}

/* ---- reduce_sum, reduce_mean, reduce_max ---- */

typedef enum { RED_SUM, RED_MEAN, RED_MAX } red_kind;

static kiln_status lower_reduce(kiln_kb *kb, const kiln_graph *g, int32_t node, red_kind kind)
{
    const kiln_node *n = &g->nodes[node];
    red_axes r = reduce_axes(g, n);
    bool keepdims = kiln_attr_get_int(n, "keepdims") != 0;
    kiln_dtype acc_t = kind == RED_MAX ? (kiln_dtype)r.x->dtype : sum_dtype(r.x);
    int64_t count = 1;
    for (int d = 0; d < r.x->rank; d++)
        if (r.reduced[d]) count *= r.x->shape[d];

    int32_t xb = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t t = kiln_kb_local(kb, acc_t);
    int32_t idx[KILN_MAX_RANK];

    int kept = open_loops(kb, &r, false, idx);
    int32_t oi = out_index(kb, out, &r, keepdims, idx);
    if (kind == RED_MAX) {
        first_reduced(kb, &r, idx);
        kiln_kb_set(kb, t, load_x(kb, xb, &r, idx, acc_t));
    } else {
        kiln_kb_set(kb, t, kiln_kx_float(kb, 0, acc_t));
    }
    int red = open_loops(kb, &r, true, idx);
    int32_t v = load_x(kb, xb, &r, idx, acc_t);
    kiln_kb_set(kb, t, BIN(kind == RED_MAX ? KX_MAX : KX_ADD, LOCAL(t), v));
    end_loops(kb, red);
    int32_t res = LOCAL(t);
    if (kind == RED_MEAN) res = BIN(KX_DIV, res, F64((double)count));
    kiln_kb_store(kb, out, oi, kiln_kx_cast(kb, res, (kiln_dtype)n->dtype));
    end_loops(kb, kept);
    return kiln_kb_status(kb);
}

kiln_status kiln_reduce_sum_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_reduce(kb, g, node, RED_SUM);
}

kiln_status kiln_reduce_mean_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_reduce(kb, g, node, RED_MEAN);
}

kiln_status kiln_reduce_max_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_reduce(kb, g, node, RED_MAX);
}

/* ---- argmax ---- */

/* The reference's scan: best = 0; for k: if best's value is NaN stop; if
 * x[k] is NaN or x[k] > best's value, best = k. As one update per k (k = 0
 * included, which never replaces itself):
 *
 *   take = !isnan(bv) && (isnan(v) || v > bv)      (floats)
 *   take = v > bv                                   (integers)
 *   best = take ? k : best;  bv = take ? v : bv
 *
 * Both sets read the old bv: `take` is one expression used twice. */
kiln_status kiln_argmax_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    red_axes r = single_axis(g, n);
    int axis = (int)kiln_attr_get_int(n, "axis");
    bool keepdims = kiln_attr_get_int(n, "keepdims") != 0;
    kiln_dtype xt = (kiln_dtype)r.x->dtype;

    int32_t xb = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t best = kiln_kb_local(kb, KILN_I64), bv = kiln_kb_local(kb, xt);
    int32_t idx[KILN_MAX_RANK];

    int kept = open_loops(kb, &r, false, idx);
    int32_t oi = out_index(kb, out, &r, keepdims, idx);
    first_reduced(kb, &r, idx);
    kiln_kb_set(kb, best, kiln_kx_int(kb, 0));
    kiln_kb_set(kb, bv, load_x(kb, xb, &r, idx, xt));
    int red = open_loops(kb, &r, true, idx);
    int32_t v = load_x(kb, xb, &r, idx, xt);
    int32_t take = BIN(KX_GT, v, LOCAL(bv));
    if (kiln_dtype_is_float(xt))
        take = BIN(KX_AND, UN(KX_NOT, UN(KX_ISNAN, LOCAL(bv))), BIN(KX_OR, UN(KX_ISNAN, v), take));
    kiln_kb_set(kb, best, kiln_kx_select(kb, take, idx[axis], LOCAL(best)));
    kiln_kb_set(kb, bv, kiln_kx_select(kb, take, v, LOCAL(bv)));
    end_loops(kb, red);
    kiln_kb_store(kb, out, oi, kiln_kx_cast(kb, LOCAL(best), (kiln_dtype)n->dtype));
    end_loops(kb, kept);
    return kiln_kb_status(kb);
}

/* ---- softmax, log_softmax ---- */

static kiln_status lower_softmax(kiln_kb *kb, const kiln_graph *g, int32_t node, bool logsm)
{
    const kiln_node *n = &g->nodes[node];
    red_axes r = single_axis(g, n);
    int32_t xb = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t m = kiln_kb_local(kb, KILN_F64), s = kiln_kb_local(kb, KILN_F64);
    int32_t ls = logsm ? kiln_kb_local(kb, KILN_F64) : -1;
    int32_t idx[KILN_MAX_RANK];

    int kept = open_loops(kb, &r, false, idx);
    /* m = max along the axis */
    kiln_kb_set(kb, m, F64(-INFINITY));
    int red = open_loops(kb, &r, true, idx);
    kiln_kb_set(kb, m, BIN(KX_MAX, LOCAL(m), load_x(kb, xb, &r, idx, KILN_F64)));
    end_loops(kb, red);
    /* s = sum(exp(x - m)) */
    kiln_kb_set(kb, s, F64(0));
    red = open_loops(kb, &r, true, idx);
    int32_t e = UN(KX_EXP, BIN(KX_SUB, load_x(kb, xb, &r, idx, KILN_F64), LOCAL(m)));
    kiln_kb_set(kb, s, BIN(KX_ADD, LOCAL(s), e));
    end_loops(kb, red);
    /* out = exp(x - m) / s, or x - m - log(s) */
    if (logsm) kiln_kb_set(kb, ls, UN(KX_LOG, LOCAL(s)));
    red = open_loops(kb, &r, true, idx);
    int32_t d = BIN(KX_SUB, load_x(kb, xb, &r, idx, KILN_F64), LOCAL(m));
    int32_t y = logsm ? BIN(KX_SUB, d, LOCAL(ls)) : BIN(KX_DIV, UN(KX_EXP, d), LOCAL(s));
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, r.x->rank, idx),
                  kiln_kx_cast(kb, y, (kiln_dtype)n->dtype));
    end_loops(kb, red);
    end_loops(kb, kept);
    return kiln_kb_status(kb);
}

kiln_status kiln_softmax_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_softmax(kb, g, node, false);
}

kiln_status kiln_log_softmax_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_softmax(kb, g, node, true);
}
