/* ir/ops_elementwise.c — elementwise and broadcasting ops: shape rules,
 * gradient rules and reference implementations, side by side per op. */
#include "ir/ops.h"

#include <math.h>
#include <string.h>

/* ---- shape rules ---- */

kiln_status kiln_shape_unary(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    (void)g;
    n->dtype = x->dtype;
    n->rank = x->rank;
    memcpy(n->shape, x->shape, sizeof n->shape);
    return KILN_OK;
}

kiln_status kiln_shape_unary_float(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype)) {
        char t[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s needs a floating-point input, got %s (cast it "
                           "first)", kiln_ops[n->op].name, kiln_node_type_str(x, t, sizeof t));
    }
    return kiln_shape_unary(g, n);
}

/* Broadcasts inputs [first, first+count) into n's shape. */
static kiln_status broadcast_inputs(kiln_graph *g, kiln_node *n, int first, int count)
{
    int r = 0;
    int64_t s[KILN_MAX_RANK] = {0};
    for (int i = first; i < first + count; i++) {
        const kiln_node *x = &g->nodes[n->inputs[i]];
        int64_t tmp[KILN_MAX_RANK];
        int rt;
        if (!kiln_broadcast_shapes(r, s, x->rank, x->shape, &rt, tmp)) {
            char a[128], b[128];
            const kiln_node *p = &g->nodes[n->inputs[first]];
            return kiln_errorf(g, KILN_ERR_SHAPE, "%s: shapes %s and %s do not broadcast",
                               kiln_ops[n->op].name, kiln_node_type_str(p, a, sizeof a),
                               kiln_node_type_str(x, b, sizeof b));
        }
        r = rt;
        memcpy(s, tmp, sizeof s);
    }
    n->rank = r;
    memcpy(n->shape, s, sizeof n->shape);
    return KILN_OK;
}

static kiln_status same_dtype(kiln_graph *g, kiln_node *n, int i, int j)
{
    const kiln_node *a = &g->nodes[n->inputs[i]], *b = &g->nodes[n->inputs[j]];
    if (a->dtype == b->dtype) return KILN_OK;
    char sa[128], sb[128];
    return kiln_errorf(g, KILN_ERR_SHAPE, "%s: dtypes differ: %s and %s (cast one of them)",
                       kiln_ops[n->op].name, kiln_node_type_str(a, sa, sizeof sa),
                       kiln_node_type_str(b, sb, sizeof sb));
}

kiln_status kiln_shape_binary(kiln_graph *g, kiln_node *n)
{
    kiln_status st = same_dtype(g, n, 0, 1);
    if (st) return st;
    n->dtype = g->nodes[n->inputs[0]].dtype;
    return broadcast_inputs(g, n, 0, 2);
}

kiln_status kiln_shape_compare(kiln_graph *g, kiln_node *n)
{
    kiln_status st = kiln_shape_binary(g, n);
    n->dtype = KILN_BOOL;
    return st;
}

kiln_status kiln_where_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *c = &g->nodes[n->inputs[0]];
    if (c->dtype != KILN_BOOL) {
        char t[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "where: the condition must be bool, got %s",
                           kiln_node_type_str(c, t, sizeof t));
    }
    kiln_status st = same_dtype(g, n, 1, 2);
    if (st) return st;
    n->dtype = g->nodes[n->inputs[1]].dtype;
    return broadcast_inputs(g, n, 0, 3);
}

kiln_status kiln_cast_shape(kiln_graph *g, kiln_node *n)
{
    kiln_status st = kiln_shape_unary(g, n);
    n->dtype = (uint8_t)kiln_attr_get_int(n, "to");
    return st;
}

/* ---- reference implementations ---- */

typedef double (*unary_f)(double x, const kiln_node *n);
typedef double (*binary_f)(double a, double b);

static void ref_unary(const kiln_node *n, const double *x, double *out, unary_f f)
{
    int64_t m = kiln_node_numel(n);
    for (int64_t i = 0; i < m; i++) out[i] = f(x[i], n);
}

/* out[idx] = f(a[bcast(idx)], b[bcast(idx)]) over n's shape. */
static void ref_binary(kiln_graph *g, const kiln_node *n, const double *const *in, double *out,
                       binary_f f)
{
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    int64_t idx[KILN_MAX_RANK] = {0}, i = 0;
    if (kiln_node_numel(n) == 0) return;
    do {
        double x = in[0][kiln_bcast_offset(n->rank, idx, a->rank, a->shape)];
        double y = in[1][kiln_bcast_offset(n->rank, idx, b->rank, b->shape)];
        out[i++] = f(x, y);
    } while (kiln_index_next(n->rank, n->shape, idx));
}

#define BINARY_REF(opname, expr)                                                               \
    static double opname##_f(double a, double b) { return (expr); }                            \
    kiln_status kiln_##opname##_ref(kiln_graph *g, const kiln_node *n, const double *const *in, \
                                    double *out)                                               \
    {                                                                                          \
        ref_binary(g, n, in, out, opname##_f);                                                 \
        return KILN_OK;                                                                        \
    }

#define UNARY_REF(opname, expr)                                                                \
    static double opname##_f(double x, const kiln_node *n)                                     \
    {                                                                                          \
        (void)n;                                                                               \
        return (expr);                                                                         \
    }                                                                                          \
    kiln_status kiln_##opname##_ref(kiln_graph *g, const kiln_node *n, const double *const *in, \
                                    double *out)                                               \
    {                                                                                          \
        (void)g;                                                                               \
        ref_unary(n, in[0], out, opname##_f);                                                  \
        return KILN_OK;                                                                        \
    }

BINARY_REF(add, a + b)
BINARY_REF(sub, a - b)
BINARY_REF(mul, a *b)
BINARY_REF(div, a / b)
BINARY_REF(maximum, (a != a || b != b) ? NAN : (a > b ? a : b))
BINARY_REF(minimum, (a != a || b != b) ? NAN : (a < b ? a : b))
BINARY_REF(eq, a == b)
BINARY_REF(ne, a != b)
BINARY_REF(lt, a < b)
BINARY_REF(le, a <= b)
BINARY_REF(gt, a > b)
BINARY_REF(ge, a >= b)
/* dy * (Phi(x) + x phi(x)), with a = x, b = dy. */
BINARY_REF(gelu_grad, b *(0.5 * (1.0 + erf(a / sqrt(2.0))) +
                          a * exp(-0.5 * a * a) / sqrt(2.0 * 3.14159265358979323846)))

UNARY_REF(neg, -x)
UNARY_REF(exp, exp(x))
UNARY_REF(log, log(x))
UNARY_REF(sqrt, sqrt(x))
/* x^0.5 is sqrt(x), as PyTorch (and the lowering): pow(-inf, 0.5) would be +inf */
UNARY_REF(pow, kiln_attr_get_float(n, "exponent") == 0.5 ? sqrt(x)
                                                          : pow(x, kiln_attr_get_float(n, "exponent")))
UNARY_REF(relu, x > 0 ? x : 0.0)
UNARY_REF(leaky_relu, x > 0 ? x : x * kiln_attr_get_float(n, "slope"))
UNARY_REF(sigmoid, x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)))
UNARY_REF(tanh, tanh(x))
UNARY_REF(gelu, 0.5 * x * (1.0 + erf(x / sqrt(2.0))))
/* The interpreter rounds to the target dtype (truncation for integers). */
UNARY_REF(cast, x)

kiln_status kiln_where_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                           double *out)
{
    const kiln_node *c = &g->nodes[n->inputs[0]], *a = &g->nodes[n->inputs[1]],
                    *b = &g->nodes[n->inputs[2]];
    int64_t idx[KILN_MAX_RANK] = {0}, i = 0;
    if (kiln_node_numel(n) == 0) return KILN_OK;
    do {
        double cv = in[0][kiln_bcast_offset(n->rank, idx, c->rank, c->shape)];
        out[i++] = cv != 0 ? in[1][kiln_bcast_offset(n->rank, idx, a->rank, a->shape)]
                           : in[2][kiln_bcast_offset(n->rank, idx, b->rank, b->shape)];
    } while (kiln_index_next(n->rank, n->shape, idx));
    return KILN_OK;
}

/* ---- gradient rules ----
 * x, y: the node's inputs; out: the node itself; dy: the output's gradient.
 * Gradients may keep the output's broadcast shape; autodiff sums them back. */

#define IN(k) (g->nodes[node].inputs[k])

static kiln_value cst(kiln_graph *g, double v, kiln_value like) { return kiln_b_const_like(g, v, like); }
static kiln_value mul(kiln_graph *g, kiln_value a, kiln_value b) { return kiln_b2(g, KILN_OP_MUL, a, b); }
static kiln_value sub(kiln_graph *g, kiln_value a, kiln_value b) { return kiln_b2(g, KILN_OP_SUB, a, b); }
static kiln_value divv(kiln_graph *g, kiln_value a, kiln_value b) { return kiln_b2(g, KILN_OP_DIV, a, b); }
static kiln_value where(kiln_graph *g, kiln_value c, kiln_value a, kiln_value b)
{
    kiln_value in[3] = {c, a, b};
    return kiln_build(g, KILN_OP_WHERE, 3, in, 0, NULL);
}

/* Returns the first negative status among the gradients, else OK. */
static kiln_status grad_status(int n, const int32_t *dx)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

kiln_status kiln_add_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    (void)g;
    (void)node;
    dx[0] = dy;
    dx[1] = dy;
    return KILN_OK;
}

kiln_status kiln_sub_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    (void)node;
    dx[0] = dy;
    dx[1] = kiln_b1(g, KILN_OP_NEG, dy);
    return grad_status(2, dx);
}

kiln_status kiln_mul_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value a = IN(0), b = IN(1);
    dx[0] = mul(g, dy, b);
    dx[1] = mul(g, dy, a);
    return grad_status(2, dx);
}

kiln_status kiln_div_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value b = IN(1);
    dx[0] = divv(g, dy, b);
    /* d(a/b)/db = -(a/b)/b */
    dx[1] = kiln_b1(g, KILN_OP_NEG, mul(g, dy, divv(g, node, b)));
    return grad_status(2, dx);
}

/* maximum/minimum: the winner takes dy; a tie splits it, as PyTorch does. */
static kiln_status minmax_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx, int cmp)
{
    kiln_value a = IN(0), b = IN(1);
    kiln_value share = where(g, kiln_b2(g, cmp, a, b), cst(g, 1.0, a),
                             where(g, kiln_b2(g, KILN_OP_EQ, a, b), cst(g, 0.5, a), cst(g, 0.0, a)));
    dx[0] = mul(g, dy, share);
    dx[1] = mul(g, dy, sub(g, cst(g, 1.0, a), share));
    return grad_status(2, dx);
}

kiln_status kiln_maximum_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    return minmax_grad(g, node, dy, dx, KILN_OP_GT);
}

kiln_status kiln_minimum_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    return minmax_grad(g, node, dy, dx, KILN_OP_LT);
}

kiln_status kiln_neg_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    (void)node;
    dx[0] = kiln_b1(g, KILN_OP_NEG, dy);
    return grad_status(1, dx);
}

kiln_status kiln_exp_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = mul(g, dy, node);
    return grad_status(1, dx);
}

kiln_status kiln_log_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = divv(g, dy, IN(0));
    return grad_status(1, dx);
}

kiln_status kiln_sqrt_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = divv(g, dy, mul(g, cst(g, 2.0, node), node));
    return grad_status(1, dx);
}

kiln_status kiln_pow_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    double p = kiln_attr_get_float(&g->nodes[node], "exponent");
    kiln_value x = IN(0);
    kiln_attr e = kiln_attr_float("exponent", p - 1.0);
    kiln_value xp = kiln_build(g, KILN_OP_POW, 1, &x, 1, &e);
    dx[0] = mul(g, dy, mul(g, cst(g, p, x), xp));
    return grad_status(1, dx);
}

kiln_status kiln_relu_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value x = IN(0);
    dx[0] = where(g, kiln_b2(g, KILN_OP_GT, x, cst(g, 0.0, x)), dy, cst(g, 0.0, dy));
    return grad_status(1, dx);
}

kiln_status kiln_leaky_relu_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value x = IN(0);
    double slope = kiln_attr_get_float(&g->nodes[node], "slope");
    dx[0] = where(g, kiln_b2(g, KILN_OP_GT, x, cst(g, 0.0, x)), dy, mul(g, dy, cst(g, slope, dy)));
    return grad_status(1, dx);
}

kiln_status kiln_sigmoid_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = mul(g, dy, mul(g, node, sub(g, cst(g, 1.0, node), node)));
    return grad_status(1, dx);
}

kiln_status kiln_tanh_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = mul(g, dy, sub(g, cst(g, 1.0, node), mul(g, node, node)));
    return grad_status(1, dx);
}

kiln_status kiln_gelu_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    dx[0] = kiln_b2(g, KILN_OP_GELU_GRAD, IN(0), dy);
    return grad_status(1, dx);
}

kiln_status kiln_where_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value c = IN(0);
    dx[0] = -1;
    dx[1] = where(g, c, dy, cst(g, 0.0, dy));
    dx[2] = where(g, c, cst(g, 0.0, dy), dy);
    return grad_status(3, dx);
}

kiln_status kiln_cast_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *x = &g->nodes[IN(0)];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype)) {
        dx[0] = -1;
        return KILN_OK;
    }
    kiln_attr to = kiln_attr_dtype("to", (kiln_dtype)x->dtype);
    dx[0] = kiln_build(g, KILN_OP_CAST, 1, &dy, 1, &to);
    return grad_status(1, dx);
}
