/* ir/ops_loss.c — losses (cross_entropy, mse_loss, bce_with_logits, l1_loss) and the
 * one_hot helper: shape rules, gradient rules and reference implementations,
 * side by side. Each loss is the mean over its samples (PyTorch's default
 * reduction) as a scalar of its first input's dtype. */
#include "ir/ops.h"

#include <math.h>
#include <string.h>

static bool is_int_dtype(kiln_dtype t) { return t == KILN_I32 || t == KILN_I64 || t == KILN_U8; }

/* ---- shape rules ---- */

kiln_status kiln_cross_entropy_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]], *y = &g->nodes[n->inputs[1]];
    char a[128], b[128];
    kiln_node_type_str(x, a, sizeof a);
    kiln_node_type_str(y, b, sizeof b);
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype) || x->rank < 2)
        return kiln_errorf(g, KILN_ERR_SHAPE, "cross_entropy: logits must be a float tensor "
                           "[N, C] or [N, C, d1, ...], got %s (labels %s)", a, b);
    if (!is_int_dtype((kiln_dtype)y->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "cross_entropy: labels must be integers (i32, i64 "
                           "or u8), got %s (logits %s)", b, a);
    bool ok = y->rank == x->rank - 1 && y->shape[0] == x->shape[0];
    for (int i = 1; ok && i < y->rank; i++) ok = y->shape[i] == x->shape[i + 1];
    if (!ok)
        return kiln_errorf(g, KILN_ERR_SHAPE, "cross_entropy: labels %s do not match logits %s "
                           "(labels are the logits' shape without the class axis 1)", b, a);
    n->dtype = x->dtype;
    n->rank = 0;
    memset(n->shape, 0, sizeof n->shape);
    return KILN_OK;
}

/* mse_loss, bce_with_logits, l1_loss: two float inputs of one shape and dtype. */
kiln_status kiln_loss_same_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]], *y = &g->nodes[n->inputs[1]];
    const char *op = kiln_ops[n->op].name;
    char a[128], b[128];
    kiln_node_type_str(x, a, sizeof a);
    kiln_node_type_str(y, b, sizeof b);
    if (x->dtype != y->dtype || x->rank != y->rank ||
        memcmp(x->shape, y->shape, (size_t)x->rank * sizeof x->shape[0]) != 0)
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s: the inputs must have the same shape and "
                           "dtype, got %s and %s", op, a, b);
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s needs floating-point inputs, got %s and %s "
                           "(cast them first)", op, a, b);
    n->dtype = x->dtype;
    n->rank = 0;
    memset(n->shape, 0, sizeof n->shape);
    return KILN_OK;
}

kiln_status kiln_one_hot_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    char t[128];
    kiln_node_type_str(x, t, sizeof t);
    if (!is_int_dtype((kiln_dtype)x->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "one_hot needs integer labels (i32, i64 or u8), "
                           "got %s", t);
    if (x->rank + 1 > KILN_MAX_RANK)
        return kiln_errorf(g, KILN_ERR_SHAPE, "one_hot: labels %s already have the largest rank "
                           "(%d)", t, KILN_MAX_RANK);
    int64_t depth = kiln_attr_get_int(n, "depth");
    if (depth < 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "one_hot: depth %lld is negative (labels %s)",
                           (long long)depth, t);
    kiln_attr *ax = kiln_node_attr_mut(n, "axis");
    int64_t axis = ax->i[0];
    if (!kiln_norm_axis(&axis, x->rank + 1))
        return kiln_errorf(g, KILN_ERR_SHAPE, "one_hot: axis %lld is out of range for the "
                           "output of rank %d (labels %s)", (long long)ax->i[0], x->rank + 1, t);
    ax->i[0] = axis;
    n->dtype = (uint8_t)kiln_attr_get_int(n, "dtype");
    n->rank = x->rank + 1;
    memset(n->shape, 0, sizeof n->shape);
    for (int i = 0, j = 0; i < n->rank; i++) n->shape[i] = i == axis ? depth : x->shape[j++];
    return KILN_OK;
}

/* ---- reference implementations ---- */

kiln_status kiln_cross_entropy_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                   double *out)
{
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    const double *x = in[0], *lab = in[1];
    int64_t N = xn->shape[0], C = xn->shape[1];
    int64_t inner = kiln_shape_numel(xn->rank - 2, xn->shape + 2);
    double ignore = (double)kiln_attr_get_int(n, "ignore_index");
    double total = 0.0;
    int64_t count = 0;
    for (int64_t s = 0; s < N; s++)
        for (int64_t i = 0; i < inner; i++) {
            double l = lab[s * inner + i];
            if (l == ignore) continue;
            if (!(l >= 0 && l < (double)C))
                return kiln_errorf(g, KILN_ERR_INVALID, "cross_entropy: label %.17g at position "
                                   "%lld of the labels is outside [0, C), C = %lld classes "
                                   "(ignore_index %lld)", l, (long long)(s * inner + i),
                                   (long long)C, (long long)kiln_attr_get_int(n, "ignore_index"));
            const double *p = x + s * C * inner + i;
            double m = -INFINITY, sum = 0.0;
            for (int64_t k = 0; k < C; k++)
                if (p[k * inner] != p[k * inner] || p[k * inner] > m) m = p[k * inner];
            if (m == -INFINITY) m = 0;
            for (int64_t k = 0; k < C; k++) sum += exp(p[k * inner] - m);
            total += m + log(sum) - p[(int64_t)l * inner];
            count++;
        }
    out[0] = total / (double)count; /* nothing counted: 0/0, NaN, as PyTorch */
    return KILN_OK;
}

kiln_status kiln_mse_loss_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                              double *out)
{
    int64_t m = kiln_node_numel(&g->nodes[n->inputs[0]]);
    double s = 0.0;
    for (int64_t i = 0; i < m; i++) {
        double d = in[0][i] - in[1][i];
        s += d * d;
    }
    out[0] = s / (double)m;
    return KILN_OK;
}

kiln_status kiln_bce_with_logits_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                     double *out)
{
    int64_t m = kiln_node_numel(&g->nodes[n->inputs[0]]);
    double s = 0.0;
    for (int64_t i = 0; i < m; i++) {
        double x = in[0][i], t = in[1][i];
        s += (x > 0 ? x : 0.0) - x * t + log1p(exp(-fabs(x)));
    }
    out[0] = s / (double)m;
    return KILN_OK;
}

kiln_status kiln_l1_loss_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    int64_t m = kiln_node_numel(&g->nodes[n->inputs[0]]);
    double s = 0.0;
    for (int64_t i = 0; i < m; i++) s += fabs(in[0][i] - in[1][i]);
    out[0] = s / (double)m;
    return KILN_OK;
}

kiln_status kiln_one_hot_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    (void)g;
    int axis = (int)kiln_attr_get_int(n, "axis");
    int64_t depth = n->shape[axis];
    int64_t outer = kiln_shape_numel(axis, n->shape);
    int64_t inner = kiln_shape_numel(n->rank - axis - 1, n->shape + axis + 1);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double l = in[0][o * inner + i];
            for (int64_t k = 0; k < depth; k++)
                out[(o * depth + k) * inner + i] = l == (double)k ? 1.0 : 0.0;
        }
    return KILN_OK;
}

/* ---- costs ---- */

/* Per logit: max, subtract and exp, add; then a log and a subtract per sample. */
void kiln_cross_entropy_cost(const kiln_graph *g, const kiln_node *n, double *flops,
                             double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 4.0 * (double)kiln_node_numel(&g->nodes[n->inputs[0]]);
}

/* mse: subtract, square, add (3 an element); l1: subtract, abs, add (3);
 * bce: max, multiply, subtract, abs, exp, log1p, add (7 an element). */
void kiln_loss_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    double per = n->op == KILN_OP_BCE_WITH_LOGITS ? 7.0 : 3.0;
    *flops = per * (double)kiln_node_numel(&g->nodes[n->inputs[0]]);
}

/* ---- gradient rules ---- */

#define IN(k) (g->nodes[node].inputs[k])

static kiln_status grad_status(int n, const int32_t *dx)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

static kiln_value cst(kiln_graph *g, double v, kiln_value like)
{
    return kiln_b_const_like(g, v, like);
}
static kiln_value mul(kiln_graph *g, kiln_value a, kiln_value b)
{
    return kiln_b2(g, KILN_OP_MUL, a, b);
}
static kiln_value sub(kiln_graph *g, kiln_value a, kiln_value b)
{
    return kiln_b2(g, KILN_OP_SUB, a, b);
}
static kiln_value divv(kiln_graph *g, kiln_value a, kiln_value b)
{
    return kiln_b2(g, KILN_OP_DIV, a, b);
}

/* (softmax(x) - one_hot(labels)) * valid / count(valid) * dy, with valid the
 * labels other than ignore_index, as a [N, 1, d1, ...] mask over the logits. */
kiln_status kiln_cross_entropy_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value x = IN(0), lab = IN(1);
    const kiln_node *xn = &g->nodes[x];
    kiln_dtype dt = (kiln_dtype)xn->dtype;
    int rank = xn->rank;
    int64_t mshape[KILN_MAX_RANK];
    memcpy(mshape, xn->shape, sizeof mshape);
    int64_t C = mshape[1];
    mshape[1] = 1;
    int64_t ignore = kiln_attr_get_int(&g->nodes[node], "ignore_index");
    dx[1] = -1;

    int reshape = kiln_op_lookup("reshape");
    if (reshape < 0)
        return kiln_errorf(g, KILN_ERR_NOT_FOUND, "cross_entropy's gradient needs op 'reshape', "
                           "which is not in the registry");

    kiln_attr sa = kiln_attr_int("axis", 1);
    kiln_value p = kiln_build(g, KILN_OP_SOFTMAX, 1, &x, 1, &sa);
    kiln_attr oa[3] = {kiln_attr_int("depth", C), kiln_attr_int("axis", 1),
                       kiln_attr_dtype("dtype", dt)};
    kiln_value oh = kiln_build(g, KILN_OP_ONE_HOT, 1, &lab, 3, oa);
    kiln_attr to = kiln_attr_dtype("to", dt);
    kiln_value ne = kiln_b2(g, KILN_OP_NE, lab, cst(g, (double)ignore, lab));
    kiln_value valid = kiln_build(g, KILN_OP_CAST, 1, &ne, 1, &to);
    kiln_value count = kiln_build(g, KILN_OP_REDUCE_SUM, 1, &valid, 0, NULL);
    kiln_attr ra = kiln_attr_ints("shape", rank, mshape);
    kiln_value vmask = kiln_build(g, reshape, 1, &valid, 1, &ra);
    kiln_value scale = divv(g, dy, count);
    dx[0] = mul(g, mul(g, sub(g, p, oh), vmask), scale);
    return grad_status(1, dx);
}

/* 2 (pred - target) / n * dy, and its negative for the target. */
kiln_status kiln_mse_loss_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value a = IN(0), b = IN(1);
    double m = (double)kiln_node_numel(&g->nodes[a]);
    kiln_value d = mul(g, sub(g, a, b), mul(g, dy, cst(g, 2.0 / m, dy)));
    dx[0] = d;
    dx[1] = kiln_b1(g, KILN_OP_NEG, d);
    return grad_status(2, dx);
}

/* d/dx = (sigmoid(x) - t) / n * dy; d/dt = -x / n * dy. */
kiln_status kiln_bce_with_logits_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value x = IN(0), t = IN(1);
    double m = (double)kiln_node_numel(&g->nodes[x]);
    kiln_value k = divv(g, dy, cst(g, m, dy));
    dx[0] = mul(g, sub(g, kiln_b1(g, KILN_OP_SIGMOID, x), t), k);
    dx[1] = mul(g, kiln_b1(g, KILN_OP_NEG, x), k);
    return grad_status(2, dx);
}

/* sign(pred - target) / n * dy (sign 0 where they are equal, as PyTorch's
 * l1_loss backward), and its negative for the target. */
kiln_status kiln_l1_loss_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value a = IN(0), b = IN(1);
    double m = (double)kiln_node_numel(&g->nodes[a]);
    kiln_value d = sub(g, a, b);
    kiln_attr to = kiln_attr_dtype("to", (kiln_dtype)g->nodes[a].dtype);
    kiln_value pos = kiln_b2(g, KILN_OP_GT, d, cst(g, 0.0, d));
    kiln_value neg = kiln_b2(g, KILN_OP_LT, d, cst(g, 0.0, d));
    pos = kiln_build(g, KILN_OP_CAST, 1, &pos, 1, &to);
    neg = kiln_build(g, KILN_OP_CAST, 1, &neg, 1, &to);
    kiln_value k = divv(g, dy, cst(g, m, dy));
    dx[0] = mul(g, sub(g, pos, neg), k);
    dx[1] = kiln_b1(g, KILN_OP_NEG, dx[0]);
    return grad_status(2, dx);
}
