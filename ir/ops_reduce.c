/* ir/ops_reduce.c — reductions (reduce_sum, reduce_mean, reduce_max, argmax)
 * and softmax/log_softmax: shape rules, gradient rules and reference
 * implementations, side by side.
 *
 * The shape rules normalise their axis attributes in place (negative axes
 * made positive, reduce axes sorted), so every later reader sees canonical
 * attributes: "axes" holds sorted, distinct, in-range axes, or nothing for
 * "every axis"; "axis" is in 0..rank-1.
 *
 * Gradients that must widen a reduced value back to its input's shape use
 * the shape family's reshape and broadcast_to, found by name at run time. */
#include "ir/ops.h"

#include <math.h>
#include <string.h>

/* ---- geometry ---- */

/* mask[i]: x's axis i is reduced by n (a reduce_* node with canonical axes). */
static void reduced_mask(const kiln_node *n, int rank, bool *mask)
{
    const kiln_attr *a = kiln_node_attr(n, "axes");
    int na = a ? a->n : 0;
    for (int i = 0; i < rank; i++) mask[i] = na == 0;
    for (int k = 0; k < na; k++)
        if (a->i[k] >= 0 && a->i[k] < rank) mask[a->i[k]] = true;
}

/* x's shape with reduced axes set to 1 (the keepdims shape). */
static void keep_shape(int rank, const int64_t *xs, const bool *mask, int64_t *ks)
{
    for (int i = 0; i < rank; i++) ks[i] = mask[i] ? 1 : xs[i];
}

/* Strides of the output for each of x's axes (0 on reduced axes), so that
 * sum(idx[i] * st[i]) is the output offset of x's element idx. */
static void out_strides(int rank, const int64_t *xs, const bool *mask, int64_t *st)
{
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        st[i] = mask[i] ? 0 : s;
        if (!mask[i]) s *= xs[i];
    }
}

/* Splits a shape around axis: outer * n * inner elements. */
static void split_axis(const kiln_node *x, int axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = kiln_shape_numel(axis, x->shape);
    *n = x->shape[axis];
    *inner = kiln_shape_numel(x->rank - axis - 1, x->shape + axis + 1);
}

/* ---- shape rules ---- */

kiln_status kiln_reduce_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    const char *op = kiln_ops[n->op].name;
    char t[128];
    kiln_dtype dt = (kiln_dtype)x->dtype;
    if (n->op == KILN_OP_REDUCE_MEAN && !kiln_dtype_is_float(dt))
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s needs a floating-point input, got %s (cast it "
                           "first)", op, kiln_node_type_str(x, t, sizeof t));
    if (dt == KILN_BOOL)
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s needs a numeric input, got %s (cast it first)",
                           op, kiln_node_type_str(x, t, sizeof t));
    kiln_attr *ax = kiln_node_attr_mut(n, "axes");
    if (!ax) return kiln_errorf(g, KILN_ERR_INTERNAL, "%s: no 'axes' attribute", op);
    int na = ax->n;
    int64_t axes[KILN_MAX_ATTR_INTS];
    for (int k = 0; k < na; k++) {
        axes[k] = ax->i[k];
        if (!kiln_norm_axis(&axes[k], x->rank))
            return kiln_errorf(g, KILN_ERR_SHAPE, "%s: axis %lld is out of range for %s (rank %d)",
                               op, (long long)ax->i[k], kiln_node_type_str(x, t, sizeof t),
                               x->rank);
    }
    for (int k = 1; k < na; k++) /* insertion sort: at most KILN_MAX_RANK entries */
        for (int j = k; j > 0 && axes[j - 1] > axes[j]; j--) {
            int64_t tmp = axes[j];
            axes[j] = axes[j - 1];
            axes[j - 1] = tmp;
        }
    for (int k = 1; k < na; k++)
        if (axes[k] == axes[k - 1])
            return kiln_errorf(g, KILN_ERR_SHAPE, "%s: axis %lld is given twice for %s", op,
                               (long long)axes[k], kiln_node_type_str(x, t, sizeof t));
    for (int k = 0; k < na; k++) ax->i[k] = axes[k];

    bool mask[KILN_MAX_RANK];
    reduced_mask(n, x->rank, mask);
    bool keep = kiln_attr_get_int(n, "keepdims") != 0;
    int64_t shape[KILN_MAX_RANK], count = 1;
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
        if (mask[i]) count *= x->shape[i];
        if (!mask[i]) shape[r++] = x->shape[i];
        else if (keep) shape[r++] = 1;
    }
    if (n->op == KILN_OP_REDUCE_MAX && count == 0 && kiln_shape_numel(r, shape) > 0)
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s: the reduced axes of %s hold no elements "
                           "(a maximum of nothing)", op, kiln_node_type_str(x, t, sizeof t));
    n->dtype = x->dtype;
    n->rank = r;
    memset(n->shape, 0, sizeof n->shape);
    memcpy(n->shape, shape, (size_t)r * sizeof shape[0]);
    return KILN_OK;
}

/* Normalises n's "axis" attribute against x's rank. */
static kiln_status norm_axis_attr(kiln_graph *g, kiln_node *n, const kiln_node *x)
{
    kiln_attr *a = kiln_node_attr_mut(n, "axis");
    char t[128];
    if (!a)
        return kiln_errorf(g, KILN_ERR_INTERNAL, "%s: no 'axis' attribute", kiln_ops[n->op].name);
    int64_t axis = a->i[0];
    if (!kiln_norm_axis(&axis, x->rank))
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s: axis %lld is out of range for %s (rank %d)",
                           kiln_ops[n->op].name, (long long)a->i[0],
                           kiln_node_type_str(x, t, sizeof t), x->rank);
    a->i[0] = axis;
    return KILN_OK;
}

kiln_status kiln_argmax_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    char t[128];
    if (x->dtype == KILN_BOOL)
        return kiln_errorf(g, KILN_ERR_SHAPE, "argmax needs a numeric input, got %s (cast it "
                           "first)", kiln_node_type_str(x, t, sizeof t));
    kiln_status st = norm_axis_attr(g, n, x);
    if (st) return st;
    int axis = (int)kiln_attr_get_int(n, "axis");
    bool keep = kiln_attr_get_int(n, "keepdims") != 0;
    int64_t shape[KILN_MAX_RANK];
    int r = 0;
    for (int i = 0; i < x->rank; i++) {
        if (i != axis) shape[r++] = x->shape[i];
        else if (keep) shape[r++] = 1;
    }
    if (x->shape[axis] == 0 && kiln_shape_numel(r, shape) > 0)
        return kiln_errorf(g, KILN_ERR_SHAPE, "argmax: axis %d of %s holds no elements", axis,
                           kiln_node_type_str(x, t, sizeof t));
    n->dtype = KILN_I64;
    n->rank = r;
    memset(n->shape, 0, sizeof n->shape);
    memcpy(n->shape, shape, (size_t)r * sizeof shape[0]);
    return KILN_OK;
}

kiln_status kiln_softmax_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_status st = kiln_shape_unary_float(g, n);
    if (st) return st;
    return norm_axis_attr(g, n, x);
}

/* ---- reference implementations ---- */

/* out[reduced index of e] = f(out[...], x[e]) for every element e of x. */
typedef enum { RED_SUM, RED_MAX } red_kind;

static void ref_reduce(kiln_graph *g, const kiln_node *n, const double *x, double *out,
                       red_kind kind)
{
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    bool mask[KILN_MAX_RANK];
    int64_t st[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    reduced_mask(n, xn->rank, mask);
    out_strides(xn->rank, xn->shape, mask, st);
    int64_t m = kiln_node_numel(n);
    for (int64_t i = 0; i < m; i++) out[i] = kind == RED_SUM ? 0.0 : -INFINITY;
    if (kiln_node_numel(xn) == 0) return;
    int64_t e = 0;
    do {
        int64_t off = 0;
        for (int i = 0; i < xn->rank; i++) off += idx[i] * st[i];
        double v = x[e++];
        if (kind == RED_SUM) out[off] += v;
        else if (v != v || v > out[off]) out[off] = v; /* NaN propagates, as torch.amax */
    } while (kiln_index_next(xn->rank, xn->shape, idx));
}

kiln_status kiln_reduce_sum_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                double *out)
{
    ref_reduce(g, n, in[0], out, RED_SUM);
    return KILN_OK;
}

kiln_status kiln_reduce_max_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                double *out)
{
    ref_reduce(g, n, in[0], out, RED_MAX);
    return KILN_OK;
}

/* The number of x's elements that reduce into one output element. */
static int64_t reduce_count(const kiln_graph *g, const kiln_node *n)
{
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    bool mask[KILN_MAX_RANK];
    reduced_mask(n, xn->rank, mask);
    int64_t c = 1;
    for (int i = 0; i < xn->rank; i++)
        if (mask[i]) c *= xn->shape[i];
    return c;
}

kiln_status kiln_reduce_mean_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                 double *out)
{
    ref_reduce(g, n, in[0], out, RED_SUM);
    double c = (double)reduce_count(g, n);
    int64_t m = kiln_node_numel(n);
    for (int64_t i = 0; i < m; i++) out[i] /= c; /* 0/0: NaN, as NumPy */
    return KILN_OK;
}

kiln_status kiln_argmax_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    int64_t outer, len, inner;
    split_axis(xn, (int)kiln_attr_get_int(n, "axis"), &outer, &len, &inner);
    const double *x = in[0];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const double *p = x + o * len * inner + i;
            int64_t best = 0;
            for (int64_t k = 1; k < len; k++) {
                double b = p[best * inner], v = p[k * inner];
                if (b != b) break; /* the first NaN wins */
                if (v != v || v > b) best = k;
            }
            out[o * inner + i] = (double)best;
        }
    return KILN_OK;
}

static kiln_status softmax_ref(kiln_graph *g, const kiln_node *n, const double *x, double *out,
                               bool logsm)
{
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    int64_t outer, len, inner;
    split_axis(xn, (int)kiln_attr_get_int(n, "axis"), &outer, &len, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const double *p = x + o * len * inner + i;
            double *q = out + o * len * inner + i;
            double m = -INFINITY, s = 0;
            for (int64_t k = 0; k < len; k++)
                if (p[k * inner] != p[k * inner] || p[k * inner] > m) m = p[k * inner];
            if (m == -INFINITY) m = 0; /* every entry -inf: exp(x - 0) = 0, 0/0 = NaN */
            for (int64_t k = 0; k < len; k++) s += exp(p[k * inner] - m);
            double ls = log(s);
            for (int64_t k = 0; k < len; k++)
                q[k * inner] = logsm ? p[k * inner] - m - ls : exp(p[k * inner] - m) / s;
        }
    return KILN_OK;
}

kiln_status kiln_softmax_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    return softmax_ref(g, n, in[0], out, false);
}

kiln_status kiln_log_softmax_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                 double *out)
{
    return softmax_ref(g, n, in[0], out, true);
}

/* ---- costs ---- */

/* One flop per input element (one add or compare each). */
void kiln_reduce_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = (double)kiln_node_numel(&g->nodes[n->inputs[0]]);
}

/* Max, subtract, exp, sum, divide (or subtract the log): five per element. */
void kiln_softmax_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 5.0 * (double)kiln_node_numel(n);
}

/* ---- gradient rules ---- */

#define IN(k) (g->nodes[node].inputs[k])

static kiln_status grad_status(int n, const int32_t *dx)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

/* An op of another family with one input and one "shape" attribute. */
static kiln_value shape_op(kiln_graph *g, const char *op, kiln_value v, int rank,
                           const int64_t *shape)
{
    if (v < 0) return v;
    int id = kiln_op_lookup(op);
    if (id < 0)
        return kiln_errorf(g, KILN_ERR_NOT_FOUND, "gradient rule needs op '%s', which is not in "
                           "the registry", op);
    kiln_attr s = kiln_attr_ints("shape", rank, shape);
    return kiln_build(g, id, 1, &v, 1, &s);
}

/* v, shaped like reduce node `node`'s output, reshaped to the keepdims shape
 * (a no-op when it already is). */
static kiln_value to_keepdims(kiln_graph *g, int32_t node, kiln_value v)
{
    if (v < 0) return v;
    const kiln_node *x = &g->nodes[IN(0)];
    bool mask[KILN_MAX_RANK];
    int64_t ks[KILN_MAX_RANK];
    int rank = x->rank;
    reduced_mask(&g->nodes[node], rank, mask);
    keep_shape(rank, x->shape, mask, ks);
    const kiln_node *vn = &g->nodes[v];
    if (vn->rank == rank && memcmp(vn->shape, ks, (size_t)rank * sizeof ks[0]) == 0) return v;
    return shape_op(g, "reshape", v, rank, ks);
}

/* v, shaped like reduce node `node`'s output, broadcast to its input's shape. */
static kiln_value widen(kiln_graph *g, int32_t node, kiln_value v)
{
    v = to_keepdims(g, node, v);
    if (v < 0) return v;
    const kiln_node *x = &g->nodes[IN(0)];
    int64_t xs[KILN_MAX_RANK];
    int rank = x->rank;
    memcpy(xs, x->shape, sizeof xs);
    const kiln_node *vn = &g->nodes[v];
    if (vn->rank == rank && memcmp(vn->shape, xs, (size_t)rank * sizeof xs[0]) == 0) return v;
    return shape_op(g, "broadcast_to", v, rank, xs);
}

kiln_status kiln_reduce_sum_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = widen(g, node, dy);
    return grad_status(1, dx);
}

kiln_status kiln_reduce_mean_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    double c = (double)reduce_count(g, &g->nodes[node]);
    kiln_value d = kiln_b2(g, KILN_OP_DIV, dy, kiln_b_const_like(g, c, dy));
    dx[0] = widen(g, node, d);
    return grad_status(1, dx);
}

/* torch.amax: dy split evenly among the elements equal to the maximum. */
kiln_status kiln_reduce_max_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value x = IN(0);
    kiln_attr axes = *kiln_node_attr(&g->nodes[node], "axes");
    kiln_attr at[2] = {axes, kiln_attr_int("keepdims", 1)};
    kiln_attr to = kiln_attr_dtype("to", (kiln_dtype)g->nodes[x].dtype);
    kiln_value eq = kiln_b2(g, KILN_OP_EQ, x, to_keepdims(g, node, node));
    kiln_value mask = kiln_build(g, KILN_OP_CAST, 1, &eq, 1, &to);
    kiln_value ties = kiln_build(g, KILN_OP_REDUCE_SUM, 1, &mask, 2, at);
    kiln_value share = kiln_b2(g, KILN_OP_DIV, to_keepdims(g, node, dy), ties);
    dx[0] = kiln_b2(g, KILN_OP_MUL, mask, share);
    return grad_status(1, dx);
}

/* sum(v) along the softmax node's axis, keeping it. */
static kiln_value sum_axis(kiln_graph *g, int32_t node, kiln_value v)
{
    int64_t axis = kiln_attr_get_int(&g->nodes[node], "axis");
    kiln_attr at[2] = {kiln_attr_ints("axes", 1, &axis), kiln_attr_int("keepdims", 1)};
    return kiln_build(g, KILN_OP_REDUCE_SUM, 1, &v, 2, at);
}

/* y * (dy - sum(dy * y)) */
kiln_status kiln_softmax_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value s = sum_axis(g, node, kiln_b2(g, KILN_OP_MUL, dy, node));
    dx[0] = kiln_b2(g, KILN_OP_MUL, node, kiln_b2(g, KILN_OP_SUB, dy, s));
    return grad_status(1, dx);
}

/* dy - exp(y) * sum(dy) */
kiln_status kiln_log_softmax_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value s = sum_axis(g, node, dy);
    dx[0] = kiln_b2(g, KILN_OP_SUB, dy, kiln_b2(g, KILN_OP_MUL, kiln_b1(g, KILN_OP_EXP, node), s));
    return grad_status(1, dx);
}
