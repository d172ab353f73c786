/* ir/ops_norm.c — train_eval, batchnorm_stats, batchnorm_apply and dropout:
 * shape rules, gradient rules, reference implementations and costs, side by
 * side (ir/ops_norm.def says what each computes; codegen/lower_norm.c
 * generates their code).
 *
 * dropout's mask comes from kiln_kx_hash_value (ir/kernel.h), the function
 * the KX_HASH kernel expression computes in every backend, so the reference
 * and generated code keep and drop the same elements. */
#include "ir/ops.h"

#include <math.h>
#include <string.h>

#define IN(k) (g->nodes[node].inputs[k])

static kiln_status grad_status(int n, const int32_t *dx)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

static kiln_value op2(kiln_graph *g, int op, kiln_value a, kiln_value b)
{
    return kiln_b2(g, op, a, b);
}

static kiln_value cst(kiln_graph *g, double v, kiln_value like)
{
    return kiln_b_const_like(g, v, like);
}

/* x[axis 0, start:start+1] (slice of another family, found by name). */
static kiln_value row(kiln_graph *g, kiln_value x, int64_t start)
{
    if (x < 0) return x;
    int id = kiln_op_lookup("slice");
    if (id < 0)
        return kiln_errorf(g, KILN_ERR_NOT_FOUND, "batchnorm_stats' gradient needs op 'slice'");
    kiln_attr a[4] = {kiln_attr_int("axis", 0), kiln_attr_int("start", start),
                      kiln_attr_int("end", start + 1), kiln_attr_int("step", 1)};
    return kiln_build(g, id, 1, &x, 4, a);
}

static bool same_type(const kiln_node *a, const kiln_node *b)
{
    return a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]) == 0;
}

/* ---- train_eval ---- */

kiln_status kiln_train_eval_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    if (!same_type(a, b)) {
        char sa[128], sb[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "train_eval: the training value %s and the "
                           "evaluation value %s differ in type",
                           kiln_node_type_str(a, sa, sizeof sa), kiln_node_type_str(b, sb, sizeof sb));
    }
    n->dtype = a->dtype;
    n->rank = a->rank;
    memcpy(n->shape, a->shape, sizeof n->shape);
    return KILN_OK;
}

kiln_status kiln_train_eval_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                double *out)
{
    (void)g;
    memcpy(out, in[1], (size_t)kiln_node_numel(n) * sizeof *out);
    return KILN_OK;
}

kiln_status kiln_train_eval_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    (void)g;
    (void)node;
    dx[0] = -1; /* the value taken is b's */
    dx[1] = dy;
    return KILN_OK;
}

/* ---- batchnorm_stats ---- */

/* x [N, C, rest]: outer N, channels C, inner the product of rest. */
static void nci(const kiln_node *x, int64_t *outer, int64_t *ch, int64_t *inner)
{
    *outer = x->shape[0];
    *ch = x->shape[1];
    *inner = kiln_shape_numel(x->rank - 2, x->shape + 2);
}

kiln_status kiln_batchnorm_stats_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    char t[128];
    if (x->rank < 2 || !kiln_dtype_is_float((kiln_dtype)x->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm_stats needs a float input [N, C, ...] "
                           "(rank >= 2), got %s", kiln_node_type_str(x, t, sizeof t));
    n->dtype = x->dtype;
    n->rank = x->rank;
    memset(n->shape, 0, sizeof n->shape);
    n->shape[0] = 2;
    n->shape[1] = x->shape[1];
    for (int d = 2; d < x->rank; d++) n->shape[d] = 1;
    return KILN_OK;
}

kiln_status kiln_batchnorm_stats_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                     double *out)
{
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    int64_t N, C, I;
    nci(xn, &N, &C, &I);
    const double *x = in[0];
    double cnt = (double)(N * I);
    for (int64_t c = 0; c < C; c++) {
        double s = 0.0, q = 0.0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < I; i++) s += x[(b * C + c) * I + i];
        double mean = s / cnt; /* 0/0: NaN, as NumPy */
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < I; i++) {
                double d = x[(b * C + c) * I + i] - mean;
                q += d * d;
            }
        out[c] = mean;
        out[C + c] = q / cnt;
    }
    return KILN_OK;
}

/* mean = sum x / n, var = sum (x - mean)^2 / n over the n elements of a
 * channel:  dx = dmean / n + dvar * 2 (x - mean) / n. */
kiln_status kiln_batchnorm_stats_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *xn = &g->nodes[IN(0)];
    int64_t N, C, I;
    nci(xn, &N, &C, &I);
    double cnt = (double)(N * I);
    kiln_value x = IN(0);
    kiln_value dmean = row(g, dy, 0), dvar = row(g, dy, 1), mean = row(g, node, 0);
    kiln_value centred = op2(g, KILN_OP_SUB, x, mean);
    kiln_value a = op2(g, KILN_OP_MUL, dvar, cst(g, 2.0 / cnt, x));
    kiln_value b = op2(g, KILN_OP_MUL, dmean, cst(g, 1.0 / cnt, x));
    dx[0] = op2(g, KILN_OP_ADD, op2(g, KILN_OP_MUL, centred, a), b);
    return grad_status(1, dx);
}

/* Two passes over x in the reference, one in generated code: three flops an
 * element (add, subtract-multiply-add for the squares). */
void kiln_batchnorm_stats_cost(const kiln_graph *g, const kiln_node *n, double *flops,
                               double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 3.0 * (double)kiln_node_numel(&g->nodes[n->inputs[0]]);
}

/* ---- batchnorm_apply ---- */

kiln_status kiln_batchnorm_apply_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    char a[128], b[128];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm_apply needs floating-point inputs, got "
                           "%s", kiln_node_type_str(x, a, sizeof a));
    int r = 0;
    int64_t s[KILN_MAX_RANK] = {0};
    for (int i = 0; i < 4; i++) {
        const kiln_node *v = &g->nodes[n->inputs[i]];
        if (v->dtype != x->dtype)
            return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm_apply: dtypes differ: %s and %s "
                               "(cast one of them)", kiln_node_type_str(x, a, sizeof a),
                               kiln_node_type_str(v, b, sizeof b));
        int64_t tmp[KILN_MAX_RANK];
        int rt;
        if (!kiln_broadcast_shapes(r, s, v->rank, v->shape, &rt, tmp))
            return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm_apply: shapes %s and %s do not "
                               "broadcast", kiln_node_type_str(x, a, sizeof a),
                               kiln_node_type_str(v, b, sizeof b));
        r = rt;
        memcpy(s, tmp, sizeof s);
    }
    n->dtype = x->dtype;
    n->rank = r;
    memcpy(n->shape, s, sizeof n->shape);
    return KILN_OK;
}

kiln_status kiln_batchnorm_apply_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                     double *out)
{
    if (kiln_node_numel(n) == 0) return KILN_OK;
    int64_t idx[KILN_MAX_RANK] = {0}, e = 0;
    do {
        double v[4];
        for (int k = 0; k < 4; k++) {
            const kiln_node *x = &g->nodes[n->inputs[k]];
            v[k] = in[k][kiln_bcast_offset(n->rank, idx, x->rank, x->shape)];
        }
        out[e++] = (v[0] - v[1]) * v[2] + v[3];
    } while (kiln_index_next(n->rank, n->shape, idx));
    return KILN_OK;
}

/* Whether m is [1, C, 1, ...] for x [N, C, ...] of y's shape: one value a
 * channel, the shape batchnorm_sums reduces to. */
static bool channel_shaped(const kiln_node *m, const kiln_node *x, const kiln_node *y)
{
    if (x->rank < 2 || m->rank != x->rank || !same_type(x, y)) return false;
    for (int d = 0; d < m->rank; d++)
        if (m->shape[d] != (d == 1 ? x->shape[1] : 1)) return false;
    return true;
}

/* y = (x - m) s + b. When m, s, b share a shape P, the sums over the
 * broadcast axes factor: with S1 = sum(dy) and S2 = sum(dy (x - m)) (to P),
 *   dm = -S1 s,  ds = S2,  db = S1,
 * and dx = dy s (summed to x's shape by autodiff); both sums come from one
 * batchnorm_sums pass when P is [1, C, 1, ...] (batchnorm's). Otherwise each
 * input's gradient is its broadcast-shaped term, summed back by autodiff. */
kiln_status kiln_batchnorm_apply_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_value x = IN(0), m = IN(1), s = IN(2), b = IN(3);
    const kiln_node *mn = &g->nodes[m];
    bool shared = same_type(mn, &g->nodes[s]) && same_type(mn, &g->nodes[b]);
    bool channels = shared && channel_shaped(mn, &g->nodes[x], &g->nodes[node]) &&
                    same_type(&g->nodes[dy], &g->nodes[x]);
    dx[0] = op2(g, KILN_OP_MUL, dy, s);
    if (channels) {
        kiln_value in[3] = {dy, x, m};
        kiln_value sums = kiln_build(g, KILN_OP_BATCHNORM_SUMS, 3, in, 0, NULL);
        kiln_value s1 = row(g, sums, 0);
        dx[1] = kiln_b1(g, KILN_OP_NEG, op2(g, KILN_OP_MUL, s1, s));
        dx[2] = row(g, sums, 1);
        dx[3] = s1;
        return grad_status(4, dx);
    }
    kiln_value dxm = op2(g, KILN_OP_MUL, dy, op2(g, KILN_OP_SUB, x, m));
    if (shared) {
        int rank = g->nodes[m].rank;
        int64_t shape[KILN_MAX_RANK];
        memcpy(shape, g->nodes[m].shape, sizeof shape);
        kiln_value s1 = kiln_b_sum_to(g, dy, rank, shape);
        dx[1] = kiln_b1(g, KILN_OP_NEG, op2(g, KILN_OP_MUL, s1, s));
        dx[2] = kiln_b_sum_to(g, dxm, rank, shape);
        dx[3] = s1;
    } else {
        dx[1] = kiln_b1(g, KILN_OP_NEG, dx[0]);
        dx[2] = dxm;
        dx[3] = dy;
    }
    return grad_status(4, dx);
}

/* subtract, multiply, add */
void kiln_batchnorm_apply_cost(const kiln_graph *g, const kiln_node *n, double *flops,
                               double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 3.0 * (double)kiln_node_numel(n);
}

/* ---- batchnorm_sums ---- */

kiln_status kiln_batchnorm_sums_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *dy = &g->nodes[n->inputs[0]], *x = &g->nodes[n->inputs[1]],
                    *m = &g->nodes[n->inputs[2]];
    char a[128], b[128], c[128];
    if (x->rank < 2 || !kiln_dtype_is_float((kiln_dtype)x->dtype) || !same_type(dy, x) ||
        m->dtype != x->dtype || !channel_shaped(m, x, x))
        return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm_sums needs dy and x of one float type "
                           "[N, C, ...] and mean [1, C, 1, ...], got %s, %s and %s",
                           kiln_node_type_str(dy, a, sizeof a), kiln_node_type_str(x, b, sizeof b),
                           kiln_node_type_str(m, c, sizeof c));
    n->dtype = x->dtype;
    n->rank = x->rank;
    memset(n->shape, 0, sizeof n->shape);
    n->shape[0] = 2;
    n->shape[1] = x->shape[1];
    for (int d = 2; d < x->rank; d++) n->shape[d] = 1;
    return KILN_OK;
}

kiln_status kiln_batchnorm_sums_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                    double *out)
{
    int64_t N, C, I;
    nci(&g->nodes[n->inputs[1]], &N, &C, &I);
    const double *dy = in[0], *x = in[1], *m = in[2];
    for (int64_t c = 0; c < C; c++) {
        double s1 = 0.0, s2 = 0.0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t i = 0; i < I; i++) {
                int64_t e = (b * C + c) * I + i;
                s1 += dy[e];
                s2 += dy[e] * (x[e] - m[c]);
            }
        out[c] = s1;
        out[C + c] = s2;
    }
    return KILN_OK;
}

/* an add, a subtract, a multiply and an add an element */
void kiln_batchnorm_sums_cost(const kiln_graph *g, const kiln_node *n, double *flops,
                              double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 4.0 * (double)kiln_node_numel(&g->nodes[n->inputs[1]]);
}

/* ---- dropout ---- */

kiln_status kiln_dropout_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]], *s = &g->nodes[n->inputs[1]];
    char t[128];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "dropout needs a floating-point input, got %s",
                           kiln_node_type_str(x, t, sizeof t));
    if (kiln_node_numel(s) != 1 || s->rank != 0 || s->dtype == KILN_BOOL)
        return kiln_errorf(g, KILN_ERR_SHAPE, "dropout: the step must be a numeric scalar, got %s",
                           kiln_node_type_str(s, t, sizeof t));
    double p = kiln_attr_get_float(n, "p");
    if (!(p >= 0.0 && p <= 1.0))
        return kiln_errorf(g, KILN_ERR_INVALID, "dropout: p must be in [0, 1], got %g", p);
    return kiln_shape_unary(g, n);
}

int64_t kiln_dropout_threshold(double p)
{
    return (int64_t)ceil(p * 2147483648.0);
}

double kiln_dropout_scale(double p, kiln_dtype t)
{
    double s = p < 1.0 ? 1.0 / (1.0 - p) : 0.0;
    return t == KILN_F32 ? (double)(float)s : s;
}

/* The step as the generated code converts it (kiln_f2i64 / a cast of an
 * integer): truncated, NaN and infinities 0, saturated. */
static int64_t step_int(double v)
{
    if (v != v || isinf(v)) return 0;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    return (int64_t)v;
}

kiln_status kiln_dropout_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    (void)g;
    double p = kiln_attr_get_float(n, "p");
    int64_t thr = kiln_dropout_threshold(p);
    double scale = kiln_dropout_scale(p, (kiln_dtype)n->dtype);
    int64_t key = kiln_kx_hash_value(kiln_attr_get_int(n, "seed"), step_int(in[1][0]));
    int64_t m = kiln_node_numel(n);
    for (int64_t i = 0; i < m; i++)
        out[i] = kiln_kx_hash_value(key, i) >= thr ? in[0][i] * scale : 0.0;
    return KILN_OK;
}

kiln_status kiln_dropout_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_attr a[2] = {kiln_attr_float("p", kiln_attr_get_float(&g->nodes[node], "p")),
                      kiln_attr_int("seed", kiln_attr_get_int(&g->nodes[node], "seed"))};
    kiln_value in[2] = {dy, IN(1)};
    dx[0] = kiln_build(g, KILN_OP_DROPOUT, 2, in, 2, a);
    dx[1] = -1;
    return grad_status(2, dx);
}

/* the two hashes (a dozen integer operations), a compare and a multiply */
void kiln_dropout_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 2.0 * (double)kiln_node_numel(n);
}
