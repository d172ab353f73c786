/* ir/ops_shape.c — shape ops (reshape, flatten, permute, broadcast_to,
 * slice, unslice, concat, flip): data movement without arithmetic. Shape rules,
 * gradient rules and reference implementations, side by side per op.
 *
 * Shape rules normalise their attributes (negative axes, reshape's -1,
 * slice bounds) so that running a rule again on its own output changes
 * nothing, and later passes read plain non-negative values. */
#include "ir/ops.h"

#include <stdio.h>
#include <string.h>

/* ---- helpers ---- */

/* "[2,3]" */
static char *dims_str(int rank, const int64_t *shape, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < rank && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

static void set_shape(kiln_node *n, uint8_t dtype, int rank, const int64_t *shape)
{
    n->dtype = dtype;
    n->rank = rank;
    memset(n->shape, 0, sizeof n->shape);
    if (rank) memcpy(n->shape, shape, (size_t)rank * sizeof *shape);
}

/* Product of shape[from..to). */
static int64_t prod(const int64_t *shape, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= shape[i];
    return p;
}

/* No arithmetic: bytes read and written. */
void kiln_cost_move(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = 0.0;
}

static kiln_value reshape_to(kiln_graph *g, kiln_value x, int rank, const int64_t *shape)
{
    kiln_attr s = kiln_attr_ints("shape", rank, shape);
    return kiln_build(g, KILN_OP_RESHAPE, 1, &x, 1, &s);
}

static kiln_value slice_of(kiln_graph *g, kiln_value x, int64_t axis, int64_t start, int64_t end,
                           int64_t step)
{
    kiln_attr a[4] = {kiln_attr_int("axis", axis), kiln_attr_int("start", start),
                      kiln_attr_int("end", end), kiln_attr_int("step", step)};
    return kiln_build(g, KILN_OP_SLICE, 1, &x, 4, a);
}

static kiln_status grad_status(int n, const int32_t *dx)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

/* ---- reshape, flatten ---- */

kiln_status kiln_reshape_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_attr *s = kiln_node_attr_mut(n, "shape");
    char sx[128], st[128];
    kiln_node_type_str(x, sx, sizeof sx);
    dims_str(s->n, s->i, st, sizeof st);
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < s->n; i++) {
        if (s->i[i] == -1 && infer < 0) {
            infer = i;
        } else if (s->i[i] == -1) {
            return kiln_errorf(g, KILN_ERR_INVALID, "reshape: shape %s has more than one -1", st);
        } else if (s->i[i] < 0) {
            return kiln_errorf(g, KILN_ERR_INVALID, "reshape: shape %s has a negative dimension "
                               "(only -1, inferred, is allowed)", st);
        } else if (__builtin_mul_overflow(known, s->i[i], &known)) {
            return kiln_errorf(g, KILN_ERR_SHAPE, "reshape: shape %s has too many elements", st);
        }
    }
    int64_t numel = kiln_node_numel(x);
    if (infer >= 0) {
        if (known == 0 || numel % known != 0)
            return kiln_errorf(g, KILN_ERR_SHAPE, "reshape: cannot reshape %s (%lld elements) "
                               "to %s: the -1 cannot be inferred%s", sx, (long long)numel, st,
                               known == 0 ? " (other dimensions are zero)" : "");
        s->i[infer] = numel / known;
    } else if (known != numel) {
        return kiln_errorf(g, KILN_ERR_SHAPE, "reshape: cannot reshape %s (%lld elements) to %s "
                           "(%lld elements)", sx, (long long)numel, st, (long long)known);
    }
    set_shape(n, x->dtype, s->n, s->i);
    return KILN_OK;
}

kiln_status kiln_flatten_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_attr *a = kiln_node_attr_mut(n, "axis");
    int64_t axis = a->i[0];
    /* A scalar flattens like a one-element vector, as in PyTorch. */
    int r = x->rank ? x->rank : 1;
    if (!kiln_norm_axis(&axis, r)) {
        char sx[128];
        return kiln_errorf(g, KILN_ERR_INVALID, "flatten: axis %lld is out of range for %s "
                           "(rank %d)", (long long)a->i[0], kiln_node_type_str(x, sx, sizeof sx),
                           x->rank);
    }
    a->i[0] = axis;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = prod(x->shape, (int)axis, x->rank);
    set_shape(n, x->dtype, (int)axis + 1, shape);
    return KILN_OK;
}

/* reshape and flatten: the gradient is dy reshaped to x's shape. */
kiln_status kiln_reshape_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *x = &g->nodes[g->nodes[node].inputs[0]];
    int64_t shape[KILN_MAX_RANK];
    int rank = x->rank;
    memcpy(shape, x->shape, sizeof shape);
    dx[0] = reshape_to(g, dy, rank, shape);
    return grad_status(1, dx);
}

kiln_status kiln_reshape_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    (void)g;
    int64_t m = kiln_node_numel(n);
    if (m) memcpy(out, in[0], (size_t)m * sizeof *out);
    return KILN_OK;
}

/* ---- permute ---- */

kiln_status kiln_permute_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_attr *p = kiln_node_attr_mut(n, "perm");
    char sx[128], sp[128];
    kiln_node_type_str(x, sx, sizeof sx);
    dims_str(p->n, p->i, sp, sizeof sp);
    if (p->n != x->rank)
        return kiln_errorf(g, KILN_ERR_INVALID, "permute: perm %s has %d entries, %s has rank %d",
                           sp, p->n, sx, x->rank);
    bool seen[KILN_MAX_RANK] = {false};
    int64_t perm[KILN_MAX_RANK];
    for (int i = 0; i < p->n; i++) {
        perm[i] = p->i[i];
        if (!kiln_norm_axis(&perm[i], x->rank) || seen[perm[i]])
            return kiln_errorf(g, KILN_ERR_INVALID, "permute: perm %s is not a permutation of the "
                               "axes of %s", sp, sx);
        seen[perm[i]] = true;
    }
    int64_t shape[KILN_MAX_RANK];
    for (int i = 0; i < p->n; i++) {
        p->i[i] = perm[i];
        shape[i] = x->shape[perm[i]];
    }
    set_shape(n, x->dtype, x->rank, shape);
    return KILN_OK;
}

kiln_status kiln_permute_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_attr *p = kiln_node_attr(&g->nodes[node], "perm");
    int64_t inv[KILN_MAX_RANK];
    int rank = p->n;
    for (int i = 0; i < rank; i++) inv[p->i[i]] = i;
    kiln_attr a = kiln_attr_ints("perm", rank, inv);
    dx[0] = kiln_build(g, KILN_OP_PERMUTE, 1, &dy, 1, &a);
    return grad_status(1, dx);
}

kiln_status kiln_permute_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    const kiln_attr *p = kiln_node_attr(n, "perm");
    int64_t xs[KILN_MAX_RANK], st[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0}, i = 0;
    kiln_strides(x->rank, x->shape, xs);
    for (int d = 0; d < n->rank; d++) st[d] = xs[p->i[d]];
    if (kiln_node_numel(n) == 0) return KILN_OK;
    do {
        int64_t off = 0;
        for (int d = 0; d < n->rank; d++) off += idx[d] * st[d];
        out[i++] = in[0][off];
    } while (kiln_index_next(n->rank, n->shape, idx));
    return KILN_OK;
}

/* ---- broadcast_to ---- */

kiln_status kiln_broadcast_to_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    const kiln_attr *s = kiln_node_attr(n, "shape");
    bool ok = s->n >= x->rank;
    for (int i = 0; i < s->n; i++) ok &= s->i[i] >= 0;
    for (int i = 1; ok && i <= x->rank; i++) {
        int64_t d = x->shape[x->rank - i], t = s->i[s->n - i];
        ok = d == t || d == 1;
    }
    if (!ok) {
        char sx[128], st[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "broadcast_to: cannot broadcast %s to %s",
                           kiln_node_type_str(x, sx, sizeof sx), dims_str(s->n, s->i, st, sizeof st));
    }
    set_shape(n, x->dtype, s->n, s->i);
    return KILN_OK;
}

kiln_status kiln_broadcast_to_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *x = &g->nodes[g->nodes[node].inputs[0]];
    int64_t shape[KILN_MAX_RANK];
    int rank = x->rank;
    memcpy(shape, x->shape, sizeof shape);
    dx[0] = kiln_b_sum_to(g, dy, rank, shape);
    return grad_status(1, dx);
}

kiln_status kiln_broadcast_to_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                  double *out)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    int64_t idx[KILN_MAX_RANK] = {0}, i = 0;
    if (kiln_node_numel(n) == 0) return KILN_OK;
    do {
        out[i++] = in[0][kiln_bcast_offset(n->rank, idx, x->rank, x->shape)];
    } while (kiln_index_next(n->rank, n->shape, idx));
    return KILN_OK;
}

/* ---- slice ---- */

/* Python's slice.indices for step > 0: bounds into [0, len]. */
static int64_t clamp_bound(int64_t v, int64_t len)
{
    if (v < 0) {
        v += len;
        if (v < 0) v = 0;
    } else if (v > len) {
        v = len;
    }
    return v;
}

static int64_t slice_count(int64_t start, int64_t end, int64_t step)
{
    return end > start ? (end - start - 1) / step + 1 : 0;
}

kiln_status kiln_slice_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_attr *aa = kiln_node_attr_mut(n, "axis"), *as = kiln_node_attr_mut(n, "start"),
              *ae = kiln_node_attr_mut(n, "end");
    int64_t axis = aa->i[0], step = kiln_attr_get_int(n, "step");
    char sx[128];
    kiln_node_type_str(x, sx, sizeof sx);
    if (!kiln_norm_axis(&axis, x->rank))
        return kiln_errorf(g, KILN_ERR_INVALID, "slice: axis %lld is out of range for %s (rank %d)",
                           (long long)aa->i[0], sx, x->rank);
    if (step < 1)
        return kiln_errorf(g, KILN_ERR_INVALID, "slice: step must be at least 1, got %lld "
                           "(negative steps are not supported)", (long long)step);
    int64_t len = x->shape[axis];
    int64_t start = clamp_bound(as->i[0], len), end = clamp_bound(ae->i[0], len);
    aa->i[0] = axis;
    as->i[0] = start;
    ae->i[0] = end;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = slice_count(start, end, step);
    set_shape(n, x->dtype, x->rank, shape);
    return KILN_OK;
}

kiln_status kiln_slice_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_node *x = &g->nodes[n->inputs[0]];
    int64_t axis = kiln_attr_get_int(n, "axis");
    kiln_attr a[4] = {kiln_attr_int("axis", axis), kiln_attr_int("start", kiln_attr_get_int(n, "start")),
                      kiln_attr_int("step", kiln_attr_get_int(n, "step")),
                      kiln_attr_int("size", x->shape[axis])};
    dx[0] = kiln_build(g, KILN_OP_UNSLICE, 1, &dy, 4, a);
    return grad_status(1, dx);
}

kiln_status kiln_slice_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                           double *out)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    int axis = (int)kiln_attr_get_int(n, "axis");
    int64_t start = kiln_attr_get_int(n, "start"), step = kiln_attr_get_int(n, "step");
    int64_t outer = prod(x->shape, 0, axis), len = x->shape[axis];
    int64_t inner = prod(x->shape, axis + 1, x->rank), count = n->shape[axis];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < count; j++) {
            const double *src = in[0] + (o * len + start + j * step) * inner;
            double *dst = out + (o * count + j) * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] = src[i];
        }
    return KILN_OK;
}

/* ---- unslice: the adjoint of slice ---- */

kiln_status kiln_unslice_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_attr *aa = kiln_node_attr_mut(n, "axis");
    int64_t axis = aa->i[0], start = kiln_attr_get_int(n, "start");
    int64_t step = kiln_attr_get_int(n, "step"), size = kiln_attr_get_int(n, "size");
    char sx[128];
    kiln_node_type_str(x, sx, sizeof sx);
    if (!kiln_norm_axis(&axis, x->rank))
        return kiln_errorf(g, KILN_ERR_INVALID, "unslice: axis %lld is out of range for %s "
                           "(rank %d)", (long long)aa->i[0], sx, x->rank);
    if (step < 1)
        return kiln_errorf(g, KILN_ERR_INVALID, "unslice: step must be at least 1, got %lld",
                           (long long)step);
    int64_t cnt = x->shape[axis];
    bool fits = size >= 0 && start >= 0 && start <= size &&
                (cnt == 0 || (cnt - 1) <= (size - 1 - start) / step);
    if (!fits)
        return kiln_errorf(g, KILN_ERR_SHAPE, "unslice: %lld entries of %s along axis %lld do "
                           "not fit at start %lld, step %lld in a dimension of size %lld",
                           (long long)cnt, sx, (long long)axis, (long long)start,
                           (long long)step, (long long)size);
    aa->i[0] = axis;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = size;
    set_shape(n, x->dtype, x->rank, shape);
    return KILN_OK;
}

kiln_status kiln_unslice_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    int64_t axis = kiln_attr_get_int(n, "axis"), start = kiln_attr_get_int(n, "start");
    int64_t step = kiln_attr_get_int(n, "step");
    int64_t cnt = g->nodes[n->inputs[0]].shape[axis];
    int64_t end = cnt ? start + (cnt - 1) * step + 1 : start;
    dx[0] = slice_of(g, dy, axis, start, end, step);
    return grad_status(1, dx);
}

kiln_status kiln_unslice_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                             double *out)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    int axis = (int)kiln_attr_get_int(n, "axis");
    int64_t start = kiln_attr_get_int(n, "start"), step = kiln_attr_get_int(n, "step");
    int64_t outer = prod(x->shape, 0, axis), size = n->shape[axis];
    int64_t inner = prod(x->shape, axis + 1, x->rank), count = x->shape[axis];
    int64_t m = kiln_node_numel(n);
    for (int64_t i = 0; i < m; i++) out[i] = 0.0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < count; j++) {
            const double *src = in[0] + (o * count + j) * inner;
            double *dst = out + (o * size + start + j * step) * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] = src[i];
        }
    return KILN_OK;
}

/* ---- concat ---- */

kiln_status kiln_concat_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x0 = &g->nodes[n->inputs[0]];
    kiln_attr *aa = kiln_node_attr_mut(n, "axis");
    int64_t axis = aa->i[0];
    char s0[128], si[128];
    kiln_node_type_str(x0, s0, sizeof s0);
    if (!kiln_norm_axis(&axis, x0->rank))
        return kiln_errorf(g, KILN_ERR_INVALID, "concat: axis %lld is out of range for %s "
                           "(rank %d)", (long long)aa->i[0], s0, x0->rank);
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x0->shape, sizeof shape);
    for (int k = 1; k < n->ninputs; k++) {
        const kiln_node *x = &g->nodes[n->inputs[k]];
        kiln_node_type_str(x, si, sizeof si);
        if (x->dtype != x0->dtype)
            return kiln_errorf(g, KILN_ERR_SHAPE, "concat: dtypes differ: input 0 is %s, input %d "
                               "is %s (cast one of them)", s0, k, si);
        bool ok = x->rank == x0->rank;
        for (int d = 0; ok && d < x->rank; d++) ok = d == axis || x->shape[d] == x0->shape[d];
        if (!ok)
            return kiln_errorf(g, KILN_ERR_SHAPE, "concat: input %d is %s and input 0 is %s; they "
                               "must match on every axis but axis %lld", k, si, s0,
                               (long long)axis);
        shape[axis] += x->shape[axis];
    }
    aa->i[0] = axis;
    set_shape(n, x0->dtype, x0->rank, shape);
    return KILN_OK;
}

kiln_status kiln_concat_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    int nin = g->nodes[node].ninputs;
    int64_t axis = kiln_attr_get_int(&g->nodes[node], "axis"), off = 0;
    for (int k = 0; k < nin; k++) {
        /* re-read: building may move g->nodes */
        int64_t len = g->nodes[g->nodes[node].inputs[k]].shape[axis];
        dx[k] = slice_of(g, dy, axis, off, off + len, 1);
        off += len;
    }
    return grad_status(nin, dx);
}

kiln_status kiln_concat_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    int axis = (int)kiln_attr_get_int(n, "axis");
    int64_t outer = prod(n->shape, 0, axis), inner = prod(n->shape, axis + 1, n->rank);
    double *dst = out;
    for (int64_t o = 0; o < outer; o++)
        for (int k = 0; k < n->ninputs; k++) {
            int64_t chunk = g->nodes[n->inputs[k]].shape[axis] * inner;
            const double *src = in[k] + o * chunk;
            for (int64_t i = 0; i < chunk; i++) *dst++ = src[i];
        }
    return KILN_OK;
}

/* ---- flip ---- */

kiln_status kiln_flip_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_attr *p = kiln_node_attr_mut(n, "dims");
    char sx[128], sp[128];
    kiln_node_type_str(x, sx, sizeof sx);
    dims_str(p->n, p->i, sp, sizeof sp);
    bool seen[KILN_MAX_RANK] = {false};
    if (p->n > x->rank)
        return kiln_errorf(g, KILN_ERR_INVALID, "flip: dims %s has more axes than %s", sp, sx);
    for (int i = 0; i < p->n; i++) {
        int64_t d = p->i[i];
        if (!kiln_norm_axis(&d, x->rank) || seen[d])
            return kiln_errorf(g, KILN_ERR_INVALID,
                               "flip: dims %s: each must be an axis of %s, at most once", sp, sx);
        seen[d] = true;
        p->i[i] = d;
    }
    set_shape(n, x->dtype, x->rank, x->shape);
    return KILN_OK;
}

kiln_status kiln_flip_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_attr *p = kiln_node_attr(&g->nodes[node], "dims");
    kiln_attr a = kiln_attr_ints("dims", p->n, p->i);
    dx[0] = kiln_build(g, KILN_OP_FLIP, 1, &dy, 1, &a);
    return grad_status(1, dx);
}

kiln_status kiln_flip_ref(kiln_graph *g, const kiln_node *n, const double *const *in, double *out)
{
    (void)g;
    const kiln_attr *p = kiln_node_attr(n, "dims");
    bool rev[KILN_MAX_RANK] = {false};
    for (int i = 0; i < p->n; i++) rev[p->i[i]] = true;
    int64_t st[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0}, i = 0;
    kiln_strides(n->rank, n->shape, st);
    if (kiln_node_numel(n) == 0) return KILN_OK;
    do {
        int64_t off = 0;
        for (int d = 0; d < n->rank; d++)
            off += (rev[d] ? n->shape[d] - 1 - idx[d] : idx[d]) * st[d];
        out[i++] = in[0][off];
    } while (kiln_index_next(n->rank, n->shape, idx));
    return KILN_OK;
}
