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
