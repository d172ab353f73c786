/* ir/builder.c — the public graph-builder API (include/kiln/kiln.h), a thin
 * layer over kiln_build: one function per op, layers, roles. */
#include "ir/graph.h"
#include "ir/ops.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

kiln_value kiln_input(kiln_graph *g, const char *name, kiln_dtype t, int rank,
                      const int64_t *shape)
{
    return kiln_build_leaf(g, KILN_ROLE_INPUT, name, t, rank, shape, 0, NULL);
}

kiln_value kiln_target(kiln_graph *g, const char *name, kiln_dtype t, int rank,
                       const int64_t *shape)
{
    return kiln_build_leaf(g, KILN_ROLE_TARGET, name, t, rank, shape, 0, NULL);
}

kiln_value kiln_param(kiln_graph *g, const char *name, kiln_dtype t, int rank,
                      const int64_t *shape, kiln_init init, double scale)
{
    if (g && !kiln_dtype_is_float(t))
        return kiln_errorf(g, KILN_ERR_INVALID, "parameter '%s' must be floating point, not %s",
                           name ? name : "?", kiln_dtype_name(t));
    kiln_attr a[2] = {kiln_attr_int("init", init), kiln_attr_float("scale", scale)};
    return kiln_build_leaf(g, KILN_ROLE_PARAM, name, t, rank, shape, 2, a);
}

kiln_value kiln_scalar(kiln_graph *g, double value, kiln_dtype t)
{
    kiln_attr a[2] = {kiln_attr_float("value", value), kiln_attr_dtype("dtype", t)};
    return kiln_build(g, KILN_OP_CONST, 0, NULL, 2, a);
}

static kiln_status set_role(kiln_graph *g, kiln_value v, kiln_role role, const char *name)
{
    if (!g) return KILN_ERR_INVALID;
    if (v < 0) return (kiln_status)v;
    if (v >= g->nnodes) return kiln_errorf(g, KILN_ERR_INVALID, "no node %%%d", v);
    kiln_node *n = &g->nodes[v];
    if (kiln_node_is_leaf(n))
        return kiln_errorf(g, KILN_ERR_INVALID, "'%s' is a leaf (role %s); only computed values "
                           "can be a program's %s", n->name ? n->name : "?",
                           kiln_role_name((kiln_role)n->role), kiln_role_name(role));
    if (role == KILN_ROLE_LOSS && (n->rank != 0 || !kiln_dtype_is_float((kiln_dtype)n->dtype))) {
        char t[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "the loss must be a floating-point scalar, got %s",
                           kiln_node_type_str(n, t, sizeof t));
    }
    if (name) {
        kiln_status st = kiln_node_set_name(g, v, name);
        if (st) return st;
    }
    n->role = (uint8_t)role;
    return KILN_OK;
}

kiln_status kiln_set_output(kiln_graph *g, kiln_value v, const char *name)
{
    return set_role(g, v, KILN_ROLE_OUTPUT, name);
}
kiln_status kiln_set_loss(kiln_graph *g, kiln_value v, const char *name)
{
    return set_role(g, v, KILN_ROLE_LOSS, name);
}
kiln_status kiln_set_metric(kiln_graph *g, kiln_value v, const char *name)
{
    return set_role(g, v, KILN_ROLE_METRIC, name);
}
kiln_status kiln_set_metric_kind(kiln_graph *g, kiln_value v, kiln_metric_kind kind)
{
    if (!g) return KILN_ERR_INVALID;
    if (v < 0) return (kiln_status)v;
    if (v >= g->nnodes) return kiln_errorf(g, KILN_ERR_INVALID, "no node %%%d", v);
    kiln_node *n = &g->nodes[v];
    if (n->role != KILN_ROLE_METRIC)
        return kiln_errorf(g, KILN_ERR_INVALID, "%%%d is not a metric (role %s); mark it with "
                           "kiln_set_metric first", v, kiln_role_name((kiln_role)n->role));
    if ((unsigned)kind >= KILN_METRIC_KIND_COUNT)
        return kiln_errorf(g, KILN_ERR_INVALID, "unknown metric kind %d", (int)kind);
    if (!kiln_metric_size_ok(kind, kiln_node_numel(n))) {
        char t[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "metric '%s': a %s partial has %s elements, "
                           "not %lld (%s)", n->name ? n->name : "?", kiln_metric_kind_name(kind),
                           kind == KILN_METRIC_MEAN ? "1"
                           : kind == KILN_METRIC_IOU_MEAN ? "an even number of" : "2",
                           (long long)kiln_node_numel(n), kiln_node_type_str(n, t, sizeof t));
    }
    n->metric = (uint8_t)kind;
    return KILN_OK;
}

kiln_status kiln_set_param_group(kiln_graph *g, kiln_value v, int group)
{
    if (!g) return KILN_ERR_INVALID;
    if (v < 0) return (kiln_status)v;
    if (v >= g->nnodes) return kiln_errorf(g, KILN_ERR_INVALID, "no node %%%d", v);
    kiln_node *n = &g->nodes[v];
    if (n->role != KILN_ROLE_PARAM)
        return kiln_errorf(g, KILN_ERR_INVALID, "%%%d is not a parameter (role %s): only "
                           "parameters belong to groups", v, kiln_role_name((kiln_role)n->role));
    if (group < 0 || group >= KILN_MAX_PARAM_GROUPS)
        return kiln_errorf(g, KILN_ERR_INVALID, "parameter group %d of '%s' is outside [0, %d)",
                           group, n->name ? n->name : "?", KILN_MAX_PARAM_GROUPS);
    n->group = (uint8_t)group;
    return KILN_OK;
}
int kiln_param_group(const kiln_graph *g, kiln_value v)
{
    if (!g || v < 0 || v >= g->nnodes || g->nodes[v].role != KILN_ROLE_PARAM)
        return KILN_ERR_INVALID;
    return g->nodes[v].group;
}
int kiln_graph_num_param_groups(const kiln_graph *g)
{
    int n = 1;
    for (int32_t i = 0; g && i < g->nnodes; i++)
        if (g->nodes[i].role == KILN_ROLE_PARAM && g->nodes[i].group + 1 > n) n = g->nodes[i].group + 1;
    return n;
}

/* ---- ops ---- */

#define BIN(fn, OP)                                                                            \
    kiln_value kiln_##fn(kiln_graph *g, kiln_value a, kiln_value b) { return kiln_b2(g, OP, a, b); }
#define UN(fn, OP)                                                                             \
    kiln_value kiln_##fn(kiln_graph *g, kiln_value x) { return kiln_b1(g, OP, x); }

BIN(add, KILN_OP_ADD)
BIN(sub, KILN_OP_SUB)
BIN(mul, KILN_OP_MUL)
BIN(div, KILN_OP_DIV)
BIN(maximum, KILN_OP_MAXIMUM)
BIN(minimum, KILN_OP_MINIMUM)
BIN(eq, KILN_OP_EQ)
BIN(ne, KILN_OP_NE)
BIN(lt, KILN_OP_LT)
BIN(le, KILN_OP_LE)
BIN(gt, KILN_OP_GT)
BIN(ge, KILN_OP_GE)
UN(neg, KILN_OP_NEG)
UN(exp, KILN_OP_EXP)
UN(log, KILN_OP_LOG)
UN(sqrt, KILN_OP_SQRT)
UN(relu, KILN_OP_RELU)
UN(sigmoid, KILN_OP_SIGMOID)
UN(tanh, KILN_OP_TANH)
UN(gelu, KILN_OP_GELU)

/* Builds an op found by name (so this file compiles before every family
 * exists in the registry). */
static kiln_value by_name(kiln_graph *g, const char *op, int nin, const kiln_value *in,
                          int nattrs, const kiln_attr *attrs)
{
    int id = kiln_op_lookup(op);
    if (id < 0) return kiln_errorf(g, KILN_ERR_NOT_FOUND, "unknown op '%s'", op);
    return kiln_build(g, id, nin, in, nattrs, attrs);
}

kiln_value kiln_matmul(kiln_graph *g, kiln_value a, kiln_value b, int trans_a, int trans_b)
{
    kiln_value in[2] = {a, b};
    kiln_attr at[2] = {kiln_attr_int("ta", trans_a != 0), kiln_attr_int("tb", trans_b != 0)};
    return by_name(g, "matmul", 2, in, 2, at);
}

kiln_value kiln_pow(kiln_graph *g, kiln_value x, double exponent)
{
    kiln_attr a = kiln_attr_float("exponent", exponent);
    return kiln_build(g, KILN_OP_POW, 1, &x, 1, &a);
}

kiln_value kiln_leaky_relu(kiln_graph *g, kiln_value x, double slope)
{
    kiln_attr a = kiln_attr_float("slope", slope);
    return kiln_build(g, KILN_OP_LEAKY_RELU, 1, &x, 1, &a);
}

kiln_value kiln_where(kiln_graph *g, kiln_value cond, kiln_value a, kiln_value b)
{
    kiln_value in[3] = {cond, a, b};
    return kiln_build(g, KILN_OP_WHERE, 3, in, 0, NULL);
}

static kiln_value reduce(kiln_graph *g, const char *op, kiln_value x, int naxes,
                         const int64_t *axes, int keepdims)
{
    if (g && (naxes < 0 || naxes > KILN_MAX_RANK))
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: %d axes given (at most %d)", op, naxes,
                           KILN_MAX_RANK);
    kiln_attr at[2] = {kiln_attr_ints("axes", naxes, axes), kiln_attr_int("keepdims", keepdims != 0)};
    return by_name(g, op, 1, &x, 2, at);
}

kiln_value kiln_reduce_sum(kiln_graph *g, kiln_value x, int naxes, const int64_t *axes, int keepdims)
{
    return reduce(g, "reduce_sum", x, naxes, axes, keepdims);
}
kiln_value kiln_reduce_mean(kiln_graph *g, kiln_value x, int naxes, const int64_t *axes, int keepdims)
{
    return reduce(g, "reduce_mean", x, naxes, axes, keepdims);
}
kiln_value kiln_reduce_max(kiln_graph *g, kiln_value x, int naxes, const int64_t *axes, int keepdims)
{
    return reduce(g, "reduce_max", x, naxes, axes, keepdims);
}

static kiln_value axis_op(kiln_graph *g, const char *op, kiln_value x, int axis)
{
    kiln_attr a = kiln_attr_int("axis", axis);
    return by_name(g, op, 1, &x, 1, &a);
}

kiln_value kiln_argmax(kiln_graph *g, kiln_value x, int axis) { return axis_op(g, "argmax", x, axis); }
kiln_value kiln_softmax(kiln_graph *g, kiln_value x, int axis) { return axis_op(g, "softmax", x, axis); }
kiln_value kiln_log_softmax(kiln_graph *g, kiln_value x, int axis)
{
    return axis_op(g, "log_softmax", x, axis);
}
kiln_value kiln_flatten(kiln_graph *g, kiln_value x, int axis) { return axis_op(g, "flatten", x, axis); }

static kiln_value ints_op(kiln_graph *g, const char *op, const char *attr, kiln_value x, int n,
                          const int64_t *v)
{
    if (g && (n < 0 || n > KILN_MAX_RANK))
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: rank %d is outside 0..%d", op, n,
                           KILN_MAX_RANK);
    kiln_attr a = kiln_attr_ints(attr, n, v);
    return by_name(g, op, 1, &x, 1, &a);
}

kiln_value kiln_reshape(kiln_graph *g, kiln_value x, int rank, const int64_t *shape)
{
    return ints_op(g, "reshape", "shape", x, rank, shape);
}
kiln_value kiln_permute(kiln_graph *g, kiln_value x, int rank, const int64_t *perm)
{
    return ints_op(g, "permute", "perm", x, rank, perm);
}
kiln_value kiln_broadcast_to(kiln_graph *g, kiln_value x, int rank, const int64_t *shape)
{
    return ints_op(g, "broadcast_to", "shape", x, rank, shape);
}

kiln_value kiln_transpose(kiln_graph *g, kiln_value x, int axis0, int axis1)
{
    if (x < 0) return x;
    if (!g) return KILN_ERR_INVALID;
    int rank = g->nodes[x].rank;
    int64_t a0 = axis0, a1 = axis1, perm[KILN_MAX_RANK];
    if (!kiln_norm_axis(&a0, rank) || !kiln_norm_axis(&a1, rank))
        return kiln_errorf(g, KILN_ERR_INVALID, "transpose: axes %d, %d out of range for rank %d",
                           axis0, axis1, rank);
    for (int i = 0; i < rank; i++) perm[i] = i;
    perm[a0] = a1;
    perm[a1] = a0;
    return kiln_permute(g, x, rank, perm);
}

kiln_value kiln_slice(kiln_graph *g, kiln_value x, int axis, int64_t start, int64_t end,
                      int64_t step)
{
    kiln_attr a[4] = {kiln_attr_int("axis", axis), kiln_attr_int("start", start),
                      kiln_attr_int("end", end), kiln_attr_int("step", step)};
    return by_name(g, "slice", 1, &x, 4, a);
}

kiln_value kiln_concat(kiln_graph *g, int n, const kiln_value *xs, int axis)
{
    kiln_attr a = kiln_attr_int("axis", axis);
    return by_name(g, "concat", n, xs, 1, &a);
}

kiln_value kiln_cast(kiln_graph *g, kiln_value x, kiln_dtype t)
{
    kiln_attr a = kiln_attr_dtype("to", t);
    return kiln_build(g, KILN_OP_CAST, 1, &x, 1, &a);
}

kiln_value kiln_cross_entropy(kiln_graph *g, kiln_value logits, kiln_value labels)
{
    kiln_value in[2] = {logits, labels};
    return by_name(g, "cross_entropy", 2, in, 0, NULL);
}
kiln_value kiln_mse_loss(kiln_graph *g, kiln_value pred, kiln_value target)
{
    kiln_value in[2] = {pred, target};
    return by_name(g, "mse_loss", 2, in, 0, NULL);
}
kiln_value kiln_bce_with_logits(kiln_graph *g, kiln_value logits, kiln_value target)
{
    kiln_value in[2] = {logits, target};
    return by_name(g, "bce_with_logits", 2, in, 0, NULL);
}
kiln_value kiln_l1_loss(kiln_graph *g, kiln_value pred, kiln_value target)
{
    kiln_value in[2] = {pred, target};
    return by_name(g, "l1_loss", 2, in, 0, NULL);
}

/* ---- pooling, upsampling, padding (ir/ops_pool.def) ---- */

static kiln_value pool2d(kiln_graph *g, const char *op, kiln_value x, const kiln_pool_params *p,
                         bool max)
{
    if (!g) return KILN_ERR_INVALID;
    if (!p) return kiln_errorf(g, KILN_ERR_INVALID, "%s: no parameters given", op);
    int64_t st[2], dil[2];
    for (int i = 0; i < 2; i++) {
        st[i] = p && p->stride[i] ? p->stride[i] : (p ? p->kernel[i] : 0);
        dil[i] = p && p->dilation[i] ? p->dilation[i] : 1;
    }
    kiln_attr a[5];
    int n = 0;
    a[n++] = kiln_attr_ints("kernel", 2, p ? p->kernel : st);
    a[n++] = kiln_attr_ints("stride", 2, st);
    a[n++] = kiln_attr_ints("padding", 2, p ? p->padding : st);
    if (max) a[n++] = kiln_attr_ints("dilation", 2, dil);
    a[n++] = kiln_attr_int("ceil_mode", p && p->ceil_mode != 0);
    if (!max) a[n++] = kiln_attr_int("count_include_pad", !(p && p->exclude_pad));
    return by_name(g, op, 1, &x, n, a);
}

kiln_value kiln_max_pool2d(kiln_graph *g, kiln_value x, const kiln_pool_params *p)
{
    return pool2d(g, "max_pool2d", x, p, true);
}

kiln_value kiln_avg_pool2d(kiln_graph *g, kiln_value x, const kiln_pool_params *p)
{
    return pool2d(g, "avg_pool2d", x, p, false);
}

kiln_value kiln_adaptive_avg_pool2d(kiln_graph *g, kiln_value x, int64_t oh, int64_t ow)
{
    int64_t v[2] = {oh, ow};
    kiln_attr a = kiln_attr_ints("output_size", 2, v);
    return by_name(g, "adaptive_avg_pool2d", 1, &x, 1, &a);
}

kiln_value kiln_upsample(kiln_graph *g, kiln_value x, int64_t scale, int64_t oh, int64_t ow,
                         int mode, int align_corners)
{
    int64_t v[2] = {oh, ow};
    kiln_attr a[4] = {kiln_attr_int("scale", scale), kiln_attr_ints("size", scale ? 0 : 2, v),
                      kiln_attr_int("mode", mode), kiln_attr_int("align_corners", align_corners)};
    return by_name(g, "upsample", 1, &x, 4, a);
}

kiln_value kiln_pad(kiln_graph *g, kiln_value x, int npads, const int64_t *pads, double value,
                    int mode)
{
    if (g && (npads != 2 && npads != 4))
        return kiln_errorf(g, KILN_ERR_INVALID, "pad: %d pads given (2 or 4)", npads);
    kiln_attr a[3] = {kiln_attr_ints("pads", npads, pads), kiln_attr_float("value", value),
                      kiln_attr_int("mode", mode)};
    return by_name(g, "pad", 1, &x, 3, a);
}

/* ---- ops by name with textual attributes ---- */

/* Parses "name=value" into a; value: int, float, [int,...] or a dtype name. */
static kiln_status parse_attr_text(kiln_graph *g, const char *text, kiln_attr *a)
{
    const char *eq = strchr(text, '=');
    if (!eq || eq == text || eq - text >= KILN_ATTR_NAME_MAX)
        return kiln_errorf(g, KILN_ERR_INVALID, "attribute '%s' is not of the form name=value",
                           text);
    char name[KILN_ATTR_NAME_MAX];
    memcpy(name, text, (size_t)(eq - text));
    name[eq - text] = 0;
    const char *v = eq + 1;
    char *end;
    if (*v == '[') {
        int64_t xs[KILN_MAX_ATTR_INTS];
        int n = 0;
        const char *p = v + 1;
        while (*p == ' ') p++;
        while (*p && *p != ']') {
            if (n == KILN_MAX_ATTR_INTS)
                return kiln_errorf(g, KILN_ERR_INVALID, "attribute '%s': more than %d values",
                                   name, KILN_MAX_ATTR_INTS);
            xs[n++] = strtoll(p, &end, 10);
            if (end == p)
                return kiln_errorf(g, KILN_ERR_INVALID, "attribute '%s': '%s' is not a list of "
                                   "integers", name, v);
            p = end;
            while (*p == ' ') p++;
            if (*p == ',') p++;
            while (*p == ' ') p++;
        }
        if (*p != ']' || p[1])
            return kiln_errorf(g, KILN_ERR_INVALID, "attribute '%s': unterminated list '%s'",
                               name, v);
        *a = kiln_attr_ints(name, n, xs);
        return KILN_OK;
    }
    for (int t = 0; t < KILN_DTYPE_COUNT; t++)
        if (strcmp(v, kiln_dtype_name((kiln_dtype)t)) == 0) {
            *a = kiln_attr_dtype(name, (kiln_dtype)t);
            return KILN_OK;
        }
    long long iv = strtoll(v, &end, 10);
    if (end != v && !*end) {
        *a = kiln_attr_int(name, iv);
        return KILN_OK;
    }
    double dv = strtod(v, &end);
    if (end != v && !*end) {
        *a = kiln_attr_float(name, dv);
        return KILN_OK;
    }
    return kiln_errorf(g, KILN_ERR_INVALID, "attribute '%s': cannot read value '%s'", name, v);
}

kiln_value kiln_op(kiln_graph *g, const char *op, int ninputs, const kiln_value *inputs,
                   int nattrs, const char *const *attrs)
{
    if (!g || !op || ninputs < 0 || nattrs < 0) return KILN_ERR_INVALID;
    if (nattrs > KILN_MAX_ATTRS)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: %d attributes given (at most %d)", op,
                           nattrs, KILN_MAX_ATTRS);
    kiln_attr a[KILN_MAX_ATTRS];
    for (int i = 0; i < nattrs; i++) {
        kiln_status st = parse_attr_text(g, attrs[i], &a[i]);
        if (st) return st;
    }
    int id = kiln_op_lookup(op);
    if (id < 0 || kiln_ops[id].fusion == KILN_FUSE_LEAF)
        return kiln_errorf(g, KILN_ERR_NOT_FOUND, "unknown op '%s'", op);
    return kiln_build(g, id, ninputs, inputs, nattrs, a);
}

/* ---- layers ---- */

kiln_value kiln_linear(kiln_graph *g, kiln_value x, int64_t out_features, int bias,
                       const char *name)
{
    if (x < 0) return x;
    if (!g || !name) return g ? kiln_errorf(g, KILN_ERR_INVALID, "linear needs a name") : KILN_ERR_INVALID;
    const kiln_node *xn = &g->nodes[x];
    char t[128];
    if (xn->rank < 1 || !kiln_dtype_is_float((kiln_dtype)xn->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "linear '%s': input must be a float tensor of "
                           "rank >= 1, got %s", name, kiln_node_type_str(xn, t, sizeof t));
    if (out_features <= 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "linear '%s': out_features must be positive, "
                           "got %lld", name, (long long)out_features);
    int64_t in_features = xn->shape[xn->rank - 1];
    kiln_dtype dt = (kiln_dtype)xn->dtype;
    /* PyTorch: kaiming_uniform_(a=sqrt(5)) gives U(+-1/sqrt(fan_in)); bias the same. */
    double bound = in_features > 0 ? 1.0 / sqrt((double)in_features) : 0.0;
    char pname[256];
    int64_t wshape[2] = {out_features, in_features};
    snprintf(pname, sizeof pname, "%s.weight", name);
    kiln_value w = kiln_param(g, pname, dt, 2, wshape, KILN_INIT_UNIFORM, bound);
    if (w < 0) return w;
    kiln_value y = kiln_matmul(g, x, w, 0, 1);
    if (y < 0) return y;
    if (bias) {
        snprintf(pname, sizeof pname, "%s.bias", name);
        kiln_value b = kiln_param(g, pname, dt, 1, &out_features, KILN_INIT_UNIFORM, bound);
        y = kiln_add(g, y, b);
    }
    return y;
}

/* ---- convolutions ---- */

/* The attributes of conv op `op` from p (NULL: defaults); zero stride,
 * dilation and groups mean 1. Returns the count. */
static int conv_attrs(int op, const kiln_conv_params *p, kiln_attr *at)
{
    kiln_conv_params d;
    memset(&d, 0, sizeof d);
    if (p) d = *p;
    for (int k = 0; k < 2; k++) {
        if (d.stride[k] == 0) d.stride[k] = 1;
        if (d.dilation[k] == 0) d.dilation[k] = 1;
    }
    if (d.groups == 0) d.groups = 1;
    int n = 0;
    at[n++] = kiln_attr_ints("stride", 2, d.stride);
    at[n++] = kiln_attr_ints("padding", 2, d.padding);
    if (op == KILN_OP_CONV_TRANSPOSE2D) at[n++] = kiln_attr_ints("output_padding", 2, d.output_padding);
    at[n++] = kiln_attr_ints("dilation", 2, d.dilation);
    at[n++] = kiln_attr_int("groups", d.groups);
    return n;
}

static kiln_value conv_op(kiln_graph *g, int op, kiln_value x, kiln_value w, kiln_value b,
                          const kiln_conv_params *p)
{
    if (!g) return KILN_ERR_INVALID;
    kiln_value in[3] = {x, w, b};
    kiln_attr at[5];
    int na = conv_attrs(op, p, at);
    return kiln_build(g, op, b == KILN_NO_VALUE ? 2 : 3, in, na, at);
}

kiln_value kiln_conv2d(kiln_graph *g, kiln_value x, kiln_value w, kiln_value b,
                       const kiln_conv_params *p)
{
    return conv_op(g, KILN_OP_CONV2D, x, w, b, p);
}

kiln_value kiln_conv_transpose2d(kiln_graph *g, kiln_value x, kiln_value w, kiln_value b,
                                 const kiln_conv_params *p)
{
    return conv_op(g, KILN_OP_CONV_TRANSPOSE2D, x, w, b, p);
}

static kiln_value conv_layer(kiln_graph *g, int op, kiln_value x, int64_t out, int64_t kh,
                             int64_t kw, const kiln_conv_params *p, int bias, const char *name)
{
    if (x < 0) return x;
    const char *what = kiln_ops[op].name;
    if (!g || !name) return g ? kiln_errorf(g, KILN_ERR_INVALID, "%s needs a name", what) : KILN_ERR_INVALID;
    const kiln_node *xn = &g->nodes[x];
    char t[128];
    if (xn->rank != 4 || !kiln_dtype_is_float((kiln_dtype)xn->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s '%s': input must be a float tensor [N, C, H, "
                           "W], got %s", what, name, kiln_node_type_str(xn, t, sizeof t));
    int64_t groups = p && p->groups ? p->groups : 1;
    int64_t C = xn->shape[1];
    if (out <= 0 || kh <= 0 || kw <= 0 || groups <= 0 || C % groups || out % groups)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s '%s': out_channels %lld, kernel [%lld, %lld] "
                           "and groups %lld must be positive, with in (%lld) and out channels "
                           "divisible by groups", what, name, (long long)out, (long long)kh,
                           (long long)kw, (long long)groups, (long long)C);
    kiln_dtype dt = (kiln_dtype)xn->dtype;
    bool tr = op == KILN_OP_CONV_TRANSPOSE2D;
    int64_t wshape[4] = {tr ? C : out, (tr ? out : C) / groups, kh, kw};
    /* PyTorch: kaiming_uniform_(a=sqrt(5)) gives U(+-1/sqrt(fan_in)), fan_in
     * from the weight's axis 1 and the kernel; the bias the same. */
    double bound = 1.0 / sqrt((double)(wshape[1] * kh * kw));
    char pname[256];
    snprintf(pname, sizeof pname, "%s.weight", name);
    kiln_value w = kiln_param(g, pname, dt, 4, wshape, KILN_INIT_UNIFORM, bound);
    kiln_value b = KILN_NO_VALUE;
    if (w >= 0 && bias) {
        snprintf(pname, sizeof pname, "%s.bias", name);
        b = kiln_param(g, pname, dt, 1, &out, KILN_INIT_UNIFORM, bound);
    }
    if (w < 0) return w;
    if (b < 0 && b != KILN_NO_VALUE) return b;
    return conv_op(g, op, x, w, b, p);
}

kiln_value kiln_conv2d_layer(kiln_graph *g, kiln_value x, int64_t out_channels, int64_t kh,
                             int64_t kw, const kiln_conv_params *p, int bias, const char *name)
{
    return conv_layer(g, KILN_OP_CONV2D, x, out_channels, kh, kw, p, bias, name);
}

kiln_value kiln_conv_transpose2d_layer(kiln_graph *g, kiln_value x, int64_t out_channels,
                                       int64_t kh, int64_t kw, const kiln_conv_params *p,
                                       int bias, const char *name)
{
    return conv_layer(g, KILN_OP_CONV_TRANSPOSE2D, x, out_channels, kh, kw, p, bias, name);
}

/* ---- training versus evaluation: batchnorm, dropout ---- */

kiln_value kiln_train_eval(kiln_graph *g, kiln_value a, kiln_value b)
{
    kiln_value in[2] = {a, b};
    return kiln_build(g, KILN_OP_TRAIN_EVAL, 2, in, 0, NULL);
}

/* A model-state leaf "<layer>.<what>" (role STATE) with an initialisation. */
static kiln_value model_state(kiln_graph *g, const char *layer, const char *what, kiln_dtype t,
                              int rank, const int64_t *shape, kiln_init init)
{
    char name[256];
    snprintf(name, sizeof name, "%s.%s", layer, what);
    kiln_attr a = kiln_attr_int("init", init);
    return kiln_build_leaf(g, KILN_ROLE_STATE, name, t, rank, shape, 1, &a);
}

kiln_value kiln_batchnorm(kiln_graph *g, kiln_value x, double momentum, double eps,
                          const char *name)
{
    if (x < 0) return x;
    if (!g || !name) return g ? kiln_errorf(g, KILN_ERR_INVALID, "batchnorm needs a name") : KILN_ERR_INVALID;
    if (x >= g->nnodes) return kiln_errorf(g, KILN_ERR_INVALID, "no node %%%d", x);
    const kiln_node *xn = &g->nodes[x];
    char t[128];
    if (xn->rank < 2 || !kiln_dtype_is_float((kiln_dtype)xn->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm '%s': input must be a float tensor "
                           "[N, C, ...], got %s", name, kiln_node_type_str(xn, t, sizeof t));
    if (!(momentum >= 0.0 && momentum <= 1.0) || !(eps >= 0.0))
        return kiln_errorf(g, KILN_ERR_INVALID, "batchnorm '%s': momentum must be in [0, 1] and "
                           "eps >= 0, got %g and %g", name, momentum, eps);
    int64_t C = xn->shape[1], cnt = C ? kiln_node_numel(xn) / C : 0;
    if (cnt <= 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "batchnorm '%s': %s holds %lld value%s per channel; "
                           "training needs more than 1", name,
                           kiln_node_type_str(xn, t, sizeof t), (long long)cnt, cnt == 1 ? "" : "s");
    kiln_dtype dt = (kiln_dtype)xn->dtype;
    int rank = xn->rank;
    int64_t P[KILN_MAX_RANK]; /* [1, C, 1, ...]: broadcasts against x */
    for (int d = 0; d < rank; d++) P[d] = d == 1 ? C : 1;
    char pname[256];
    snprintf(pname, sizeof pname, "%s.weight", name);
    kiln_value w = kiln_param(g, pname, dt, 1, &C, KILN_INIT_ONES, 0);
    snprintf(pname, sizeof pname, "%s.bias", name);
    kiln_value b = kiln_param(g, pname, dt, 1, &C, KILN_INIT_ZEROS, 0);
    kiln_value rm = model_state(g, name, "running_mean", dt, 1, &C, KILN_INIT_ZEROS);
    kiln_value rv = model_state(g, name, "running_var", dt, 1, &C, KILN_INIT_ONES);
    kiln_value nbt = model_state(g, name, "num_batches_tracked", KILN_I64, 0, NULL, KILN_INIT_ZEROS);
    kiln_value wP = kiln_reshape(g, w, rank, P), bP = kiln_reshape(g, b, rank, P);
    kiln_value e = kiln_scalar(g, eps, dt);
    /* training: the batch's statistics */
    kiln_value stats = by_name(g, "batchnorm_stats", 1, &x, 0, NULL);
    kiln_value mean = kiln_slice(g, stats, 0, 0, 1, 1), var = kiln_slice(g, stats, 0, 1, 2, 1);
    kiln_value in[4] = {x, mean, kiln_div(g, wP, kiln_sqrt(g, kiln_add(g, var, e))), bP};
    kiln_value ytrain = by_name(g, "batchnorm_apply", 4, in, 0, NULL);
    /* evaluation: the running statistics */
    in[1] = kiln_reshape(g, rm, rank, P);
    in[2] = kiln_div(g, wP, kiln_sqrt(g, kiln_add(g, kiln_reshape(g, rv, rank, P), e)));
    kiln_value yeval = by_name(g, "batchnorm_apply", 4, in, 0, NULL);
    kiln_value y = kiln_train_eval(g, ytrain, yeval);
    /* the running statistics' update (train_step only: passes/mode.c) */
    kiln_value mom = kiln_scalar(g, momentum, dt), keep = kiln_scalar(g, 1.0 - momentum, dt);
    kiln_value bmean = kiln_reshape(g, mean, 1, &C);
    kiln_value bvar = kiln_mul(g, kiln_reshape(g, var, 1, &C),
                               kiln_scalar(g, (double)cnt / (double)(cnt - 1), dt));
    kiln_value rm1 = kiln_add(g, kiln_mul(g, rm, keep), kiln_mul(g, bmean, mom));
    kiln_value rv1 = kiln_add(g, kiln_mul(g, rv, keep), kiln_mul(g, bvar, mom));
    kiln_value nbt1 = kiln_add(g, nbt, kiln_scalar(g, 1.0, KILN_I64));
    kiln_value r[3] = {kiln_b2(g, KILN_OP_ASSIGN, rm, rm1), kiln_b2(g, KILN_OP_ASSIGN, rv, rv1),
                       kiln_b2(g, KILN_OP_ASSIGN, nbt, nbt1)};
    for (int i = 0; i < 3; i++)
        if (r[i] < 0) return r[i];
    return y;
}

kiln_value kiln_dropout(kiln_graph *g, kiln_value x, double p, const char *name)
{
    if (x < 0) return x;
    if (!g) return KILN_ERR_INVALID;
    if (!(p >= 0.0 && p <= 1.0))
        return kiln_errorf(g, KILN_ERR_INVALID, "dropout '%s': p must be in [0, 1], got %g",
                           name ? name : "?", p);
    if (p == 0.0) return x; /* the identity in both modes */
    kiln_value step = kiln_graph_find(g, "step");
    if (step >= 0) {
        const kiln_node *s = &g->nodes[step];
        if (s->op != KILN_OP_INPUT || s->role != KILN_ROLE_HPARAM || s->rank != 0 ||
            s->dtype == KILN_BOOL)
            return kiln_errorf(g, KILN_ERR_INVALID, "dropout reads the hyperparameter 'step', "
                               "but 'step' is another value here");
    } else {
        step = kiln_build_leaf(g, KILN_ROLE_HPARAM, "step", KILN_F32, 0, NULL, 0, NULL);
        if (step < 0) return step;
    }
    /* the layer's seed: FNV-1a of its name, so two layers draw different masks */
    uint32_t h = 2166136261u;
    for (const char *c = name ? name : "dropout"; *c; c++) h = (h ^ (uint8_t)*c) * 16777619u;
    kiln_attr a[2] = {kiln_attr_float("p", p), kiln_attr_int("seed", (int64_t)(h & 0x7fffffffu))};
    kiln_value in[2] = {x, step};
    kiln_value d = by_name(g, "dropout", 2, in, 2, a);
    return kiln_train_eval(g, d, x);
}
