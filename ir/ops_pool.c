/* ir/ops_pool.c — pooling, upsampling and padding (max_pool2d, avg_pool2d,
 * adaptive_avg_pool2d, upsample, pad) and their backward ops: geometry
 * (ir/ops_pool.h), shape rules, gradient rules, reference implementations
 * and costs, side by side.
 *
 * The semantics are PyTorch's (torch 1.13, CPU): max_pool2d's window scan
 * and argmax choice (cpu_max_pool), avg_pool2d's divisors (cpu_avg_pool),
 * adaptive pooling's integer start/end indices, F.interpolate's nearest
 * (float arithmetic) and bilinear source indices, F.pad. The references are
 * written the direct way — forward ops loop over outputs, backward ops
 * scatter each output's gradient to the inputs it read — so they check the
 * gather formulations the lowering uses (codegen/lower_pool.c).
 *
 * Shape rules store window attributes as two ints (stride defaulting to the
 * kernel, padding to 0, dilation to 1) and upsample's `size`, so running a
 * rule again changes nothing. */
#include "ir/ops_pool.h"
#include "ir/ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- geometry ---- */

int64_t kiln_pool_out_size(int64_t L, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode)
{
    int64_t num = L + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (num < 0) return -1;
    int64_t o = num / s + 1;
    /* the last window must start inside the input or its left padding */
    if (ceil_mode && (o - 1) * s >= L + p) o--;
    return o >= 1 ? o : -1;
}

static int64_t ints_at(const kiln_node *n, const char *name, int i, int64_t def)
{
    const kiln_attr *a = kiln_node_attr(n, name);
    if (!a || a->kind != KILN_ATTR_INTS || a->n == 0) return def;
    return a->n > i ? a->i[i] : a->i[0];
}

/* The spatial sizes of node x: axis rank-2 (1 for a rank-1 tensor) and rank-1. */
static void spatial(const kiln_node *x, int64_t *H, int64_t *W)
{
    *W = x->rank >= 1 ? x->shape[x->rank - 1] : 1;
    *H = x->rank >= 2 ? x->shape[x->rank - 2] : 1;
}

bool kiln_pool_axes(const kiln_graph *g, const kiln_node *n, kiln_pool_axis *h, kiln_pool_axis *w)
{
    memset(h, 0, sizeof *h);
    memset(w, 0, sizeof *w);
    const kiln_node *in = &g->nodes[n->inputs[0]];
    /* fwd: L from the input, O from the output; grad: L from the output
     * (the forward's input), O from dy */
    const kiln_node *lnode = in, *onode = n;
    uint8_t kind;
    switch (n->op) {
    case KILN_OP_MAX_POOL2D:
    case KILN_OP_AVG_POOL2D:
        kind = KILN_POOL_WINDOW;
        break;
    case KILN_OP_MAX_POOL2D_GRAD:
        kind = KILN_POOL_WINDOW;
        onode = &g->nodes[n->inputs[1]];
        break;
    case KILN_OP_AVG_POOL2D_GRAD:
        kind = KILN_POOL_WINDOW;
        lnode = n;
        onode = in;
        break;
    case KILN_OP_ADAPTIVE_AVG_POOL2D:
        kind = KILN_POOL_ADAPTIVE;
        break;
    case KILN_OP_ADAPTIVE_AVG_POOL2D_GRAD:
        kind = KILN_POOL_ADAPTIVE;
        lnode = n;
        onode = in;
        break;
    case KILN_OP_UPSAMPLE:
        kind = KILN_POOL_NEAREST;
        break;
    case KILN_OP_UPSAMPLE_GRAD:
        kind = KILN_POOL_NEAREST;
        lnode = n;
        onode = in;
        break;
    case KILN_OP_PAD:
        kind = KILN_POOL_PAD;
        break;
    case KILN_OP_PAD_GRAD:
        kind = KILN_POOL_PAD;
        lnode = n;
        onode = in;
        break;
    default:
        return false;
    }
    spatial(lnode, &h->L, &w->L);
    spatial(onode, &h->O, &w->O);
    h->kind = w->kind = kind;
    if (kind == KILN_POOL_WINDOW) {
        bool avg = n->op == KILN_OP_AVG_POOL2D || n->op == KILN_OP_AVG_POOL2D_GRAD;
        kiln_pool_axis *ax[2] = {h, w};
        for (int i = 0; i < 2; i++) {
            ax[i]->k = ints_at(n, "kernel", i, 1);
            ax[i]->s = ints_at(n, "stride", i, ax[i]->k);
            ax[i]->p = ints_at(n, "padding", i, 0);
            ax[i]->d = avg ? 1 : ints_at(n, "dilation", i, 1);
            ax[i]->count_pad = avg && kiln_attr_get_int(n, "count_include_pad") != 0;
        }
    } else if (kind == KILN_POOL_NEAREST) {
        if (kiln_attr_get_int(n, "mode") == 1) h->kind = w->kind = KILN_POOL_LINEAR;
        h->align = w->align = kiln_attr_get_int(n, "align_corners") != 0;
        h->scale = w->scale = kiln_attr_get_int(n, "scale");
    } else if (kind == KILN_POOL_PAD) {
        const kiln_attr *pa = kiln_node_attr(n, "pads");
        h->reflect = w->reflect = kiln_attr_get_int(n, "mode") == 1;
        w->p = pa && pa->n >= 2 ? pa->i[0] : 0;
        h->p = pa && pa->n >= 4 ? pa->i[2] : 0;
    }
    return true;
}

void kiln_pool_window(const kiln_pool_axis *a, int64_t o, int64_t *jlo, int64_t *jhi)
{
    int64_t start = o * a->s - a->p;
    int64_t lo = 0, hi = a->k;
    if (start < 0) lo = (-start + a->d - 1) / a->d;
    /* j < k with start + j d < L */
    if (start + (a->k - 1) * a->d >= a->L) hi = start >= a->L ? 0 : (a->L - 1 - start) / a->d + 1;
    if (hi < lo) hi = lo;
    *jlo = lo;
    *jhi = hi;
}

int64_t kiln_pool_divisor(const kiln_pool_axis *a, int64_t o)
{
    int64_t start = o * a->s - a->p;
    if (a->count_pad) {
        int64_t end = start + a->k < a->L + a->p ? start + a->k : a->L + a->p;
        return end - start;
    }
    int64_t end = start + a->k < a->L ? start + a->k : a->L;
    return end - (start > 0 ? start : 0);
}

void kiln_pool_adaptive(const kiln_pool_axis *a, int64_t o, int64_t *start, int64_t *end)
{
    *start = o * a->L / a->O;
    *end = ((o + 1) * a->L + a->O - 1) / a->O;
}

float kiln_pool_nearest_factor(const kiln_pool_axis *a)
{
    return a->scale > 0 ? (float)(1.0 / (double)a->scale) : (float)a->L / (float)a->O;
}

int64_t kiln_pool_nearest(const kiln_pool_axis *a, int64_t o)
{
    float f = kiln_pool_nearest_factor(a);
    int64_t src = (int64_t)floorf((float)o * f);
    return src < a->L - 1 ? src : a->L - 1;
}

bool kiln_pool_nearest_exact(const kiln_pool_axis *a)
{
    for (int64_t o = 0; o < a->O; o++)
        if (kiln_pool_nearest(a, o) != o * a->L / a->O) return false;
    return true;
}

double kiln_pool_linear_scale(const kiln_pool_axis *a)
{
    if (a->align) return a->O > 1 ? (double)(a->L - 1) / (double)(a->O - 1) : 0.0;
    return a->scale > 0 ? 1.0 / (double)a->scale : (double)a->L / (double)a->O;
}

void kiln_pool_linear(const kiln_pool_axis *a, int64_t o, int64_t *i0, int64_t *i1, double *l0,
                      double *l1)
{
    if (a->O == a->L) {
        *i0 = *i1 = o;
        *l0 = 1.0;
        *l1 = 0.0;
        return;
    }
    double scale = kiln_pool_linear_scale(a);
    double src;
    if (a->align) {
        src = scale * (double)o;
    } else {
        src = scale * ((double)o + 0.5) - 0.5;
        if (src < 0) src = 0;
    }
    *i0 = (int64_t)src;
    *i1 = *i0 + (*i0 < a->L - 1 ? 1 : 0);
    double f = src - (double)*i0;
    f = f > 0 ? f : 0;
    *l1 = f < 1 ? f : 1;
    *l0 = 1.0 - *l1;
}

int64_t kiln_pool_pad_src(const kiln_pool_axis *a, int64_t o)
{
    int64_t r = o - a->p;
    if (!a->reflect) return r >= 0 && r < a->L ? r : -1;
    if (r < 0) r = -r;
    if (r > a->L - 1) r = 2 * (a->L - 1) - r;
    return r;
}

/* ---- shape rules ---- */

static void set_shape(kiln_node *n, uint8_t dtype, int rank, const int64_t *shape)
{
    n->dtype = dtype;
    n->rank = rank;
    memset(n->shape, 0, sizeof n->shape);
    if (rank) memcpy(n->shape, shape, (size_t)rank * sizeof *shape);
}

/* x is a float tensor of rank 3 or 4 (planes, then two spatial axes). */
static kiln_status check_spatial(kiln_graph *g, const kiln_node *n, const kiln_node *x,
                                 const char *what)
{
    char t[128];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype) || x->rank < 3 || x->rank > 4)
        return kiln_errorf(g, KILN_ERR_SHAPE,
                           "%s: %s must be a float tensor [C, H, W] or "
                           "[N, C, H, W], got %s",
                           kiln_ops[n->op].name, what, kiln_node_type_str(x, t, sizeof t));
    return KILN_OK;
}

/* Stores attribute `name` as two ints: given one, both; none, the default
 * (def[0], def[1]). Fails when it has more than two, or one below lo. */
static kiln_status two_ints(kiln_graph *g, kiln_node *n, const char *name, const int64_t *def,
                            int64_t lo)
{
    kiln_attr *a = kiln_node_attr_mut(n, name);
    int64_t v[2];
    if (a->n == 0) {
        v[0] = def[0];
        v[1] = def[1];
    } else if (a->n <= 2) {
        v[0] = a->i[0];
        v[1] = a->n == 2 ? a->i[1] : a->i[0];
    } else {
        return kiln_errorf(g, KILN_ERR_INVALID,
                           "%s: %s takes one or two values (height, "
                           "width), got %d",
                           kiln_ops[n->op].name, name, a->n);
    }
    if (v[0] < lo || v[1] < lo)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: %s [%lld, %lld] must be at least %lld",
                           kiln_ops[n->op].name, name, (long long)v[0], (long long)v[1],
                           (long long)lo);
    *a = kiln_attr_ints(name, 2, v);
    return KILN_OK;
}

/* Normalises the window attributes of a pooling node and computes the
 * output size for input spatial size (H, W). */
static kiln_status window_out(kiln_graph *g, kiln_node *n, int64_t H, int64_t W, int64_t *oh,
                              int64_t *ow)
{
    static const int64_t zero[2] = {0, 0}, one[2] = {1, 1};
    const char *op = kiln_ops[n->op].name;
    kiln_status st;
    if (kiln_node_attr(n, "kernel")->n == 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: kernel must be given (one or two sizes)", op);
    if ((st = two_ints(g, n, "kernel", one, 1))) return st;
    const kiln_attr *k = kiln_node_attr(n, "kernel");
    if ((st = two_ints(g, n, "stride", k->i, 1))) return st;
    if ((st = two_ints(g, n, "padding", zero, 0))) return st;
    bool dil = kiln_node_attr(n, "dilation") != NULL;
    if (dil && (st = two_ints(g, n, "dilation", one, 1))) return st;
    const kiln_attr *s = kiln_node_attr(n, "stride"), *p = kiln_node_attr(n, "padding");
    const kiln_attr *d = dil ? kiln_node_attr(n, "dilation") : NULL;
    bool ceil_mode = kiln_attr_get_int(n, "ceil_mode") != 0;
    int64_t L[2] = {H, W}, O[2];
    for (int i = 0; i < 2; i++) {
        if (p->i[i] > k->i[i] / 2)
            return kiln_errorf(g, KILN_ERR_INVALID,
                               "%s: padding %lld is more than half the "
                               "kernel %lld (as PyTorch, it must be at most half)",
                               op, (long long)p->i[i], (long long)k->i[i]);
        O[i] = kiln_pool_out_size(L[i], k->i[i], s->i[i], p->i[i], d ? d->i[i] : 1, ceil_mode);
        if (O[i] < 1)
            return kiln_errorf(g, KILN_ERR_SHAPE,
                               "%s: input %lldx%lld is too small for kernel "
                               "[%lld, %lld] (padding [%lld, %lld]%s): the output would be empty",
                               op, (long long)H, (long long)W, (long long)k->i[0],
                               (long long)k->i[1], (long long)p->i[0], (long long)p->i[1],
                               d ? ", with dilation" : "");
    }
    *oh = O[0];
    *ow = O[1];
    return KILN_OK;
}

/* max_pool2d, avg_pool2d */
kiln_status kiln_pool2d_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_status st = check_spatial(g, n, x, "x");
    if (st) return st;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    if ((st = window_out(g, n, x->shape[x->rank - 2], x->shape[x->rank - 1], &shape[x->rank - 2],
                         &shape[x->rank - 1])))
        return st;
    set_shape(n, x->dtype, x->rank, shape);
    return KILN_OK;
}

/* dy must have shape `want` and x's dtype. */
static kiln_status check_dy(kiln_graph *g, const kiln_node *n, const kiln_node *dy, uint8_t dtype,
                            int rank, const int64_t *want)
{
    bool ok = dy->dtype == dtype && dy->rank == rank &&
              memcmp(dy->shape, want, (size_t)rank * sizeof *want) == 0;
    if (ok) return KILN_OK;
    char a[128], b[128];
    return kiln_errorf(g, KILN_ERR_SHAPE, "%s: dy is %s, but the forward op's output is %s",
                       kiln_ops[n->op].name, kiln_node_type_str(dy, a, sizeof a),
                       kiln_shape_str((kiln_dtype)dtype, rank, want, b, sizeof b));
}

/* Reads `size` (the forward input's spatial size) as two ints >= 1. */
static kiln_status size_attr(kiln_graph *g, kiln_node *n, int64_t *H, int64_t *W)
{
    static const int64_t none[2] = {0, 0};
    if (kiln_node_attr(n, "size")->n == 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: size (the input's [H, W]) must be given",
                           kiln_ops[n->op].name);
    kiln_status st = two_ints(g, n, "size", none, 1);
    if (st) return st;
    *H = kiln_node_attr(n, "size")->i[0];
    *W = kiln_node_attr(n, "size")->i[1];
    return KILN_OK;
}

/* max_pool2d_grad(x, dy), avg_pool2d_grad(dy) */
kiln_status kiln_pool2d_grad_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *first = &g->nodes[n->inputs[0]];
    bool with_x = n->ninputs == 2;
    kiln_status st = check_spatial(g, n, first, with_x ? "x" : "dy");
    if (st) return st;
    int rank = first->rank;
    int64_t H, W, in[KILN_MAX_RANK], out[KILN_MAX_RANK];
    memcpy(in, first->shape, sizeof in);
    if (with_x) {
        H = first->shape[rank - 2];
        W = first->shape[rank - 1];
    } else if ((st = size_attr(g, n, &H, &W))) {
        return st;
    }
    in[rank - 2] = H;
    in[rank - 1] = W;
    memcpy(out, in, sizeof out);
    if ((st = window_out(g, n, H, W, &out[rank - 2], &out[rank - 1]))) return st;
    const kiln_node *dy = &g->nodes[n->inputs[with_x ? 1 : 0]];
    if ((st = check_dy(g, n, dy, first->dtype, rank, out))) return st;
    set_shape(n, first->dtype, rank, in);
    return KILN_OK;
}

kiln_status kiln_adaptive_pool2d_shape(kiln_graph *g, kiln_node *n)
{
    static const int64_t none[2] = {0, 0};
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_status st = check_spatial(g, n, x, "x");
    if (st) return st;
    if (kiln_node_attr(n, "output_size")->n == 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "adaptive_avg_pool2d: output_size must be given");
    if ((st = two_ints(g, n, "output_size", none, 1))) return st;
    const kiln_attr *os = kiln_node_attr(n, "output_size");
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->rank - 2] = os->i[0];
    shape[x->rank - 1] = os->i[1];
    set_shape(n, x->dtype, x->rank, shape);
    return KILN_OK;
}

/* adaptive_avg_pool2d_grad, upsample_grad: dy's shape with the spatial axes
 * replaced by `size`. */
kiln_status kiln_adaptive_pool2d_grad_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *dy = &g->nodes[n->inputs[0]];
    kiln_status st = check_spatial(g, n, dy, "dy");
    if (st) return st;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, dy->shape, sizeof shape);
    if ((st = size_attr(g, n, &shape[dy->rank - 2], &shape[dy->rank - 1]))) return st;
    set_shape(n, dy->dtype, dy->rank, shape);
    return KILN_OK;
}

static kiln_status upsample_modes(kiln_graph *g, kiln_node *n)
{
    int64_t mode = kiln_attr_get_int(n, "mode"), align = kiln_attr_get_int(n, "align_corners");
    const char *op = kiln_ops[n->op].name;
    if (mode != 0 && mode != 1)
        return kiln_errorf(g, KILN_ERR_INVALID,
                           "%s: mode %lld is not 0 (nearest) or 1 "
                           "(bilinear)",
                           op, (long long)mode);
    if (align != 0 && align != 1)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: align_corners must be 0 or 1", op);
    if (align && mode == 0)
        return kiln_errorf(g, KILN_ERR_INVALID,
                           "%s: align_corners applies to bilinear "
                           "(mode=1) only, as in PyTorch",
                           op);
    if (kiln_attr_get_int(n, "scale") < 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: scale must not be negative", op);
    return KILN_OK;
}

kiln_status kiln_upsample_shape(kiln_graph *g, kiln_node *n)
{
    static const int64_t none[2] = {0, 0};
    const kiln_node *x = &g->nodes[n->inputs[0]];
    kiln_status st = check_spatial(g, n, x, "x");
    if (st || (st = upsample_modes(g, n))) return st;
    int r = x->rank;
    int64_t H = x->shape[r - 2], W = x->shape[r - 1];
    kiln_attr *sc = kiln_node_attr_mut(n, "scale");
    int64_t s = sc->i[0];
    if (kiln_node_attr(n, "size")->n == 0) {
        if (s < 1)
            return kiln_errorf(g, KILN_ERR_INVALID,
                               "upsample: give a scale of at least 1 or a "
                               "size");
        int64_t v[2] = {H * s, W * s};
        *kiln_node_attr_mut(n, "size") = kiln_attr_ints("size", 2, v);
    } else if ((st = two_ints(g, n, "size", none, 1))) {
        return st;
    }
    const kiln_attr *sz = kiln_node_attr(n, "size");
    /* a size that is not the input times scale is a resize by size */
    if (sz->i[0] != H * s || sz->i[1] != W * s) sc->i[0] = 0;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    shape[r - 2] = sz->i[0];
    shape[r - 1] = sz->i[1];
    set_shape(n, x->dtype, r, shape);
    return KILN_OK;
}

kiln_status kiln_upsample_grad_shape(kiln_graph *g, kiln_node *n)
{
    kiln_status st = upsample_modes(g, n);
    if (st || (st = kiln_adaptive_pool2d_grad_shape(g, n))) return st;
    const kiln_node *dy = &g->nodes[n->inputs[0]];
    int64_t s = kiln_attr_get_int(n, "scale");
    int r = n->rank;
    if (s > 0 &&
        (dy->shape[r - 2] != n->shape[r - 2] * s || dy->shape[r - 1] != n->shape[r - 1] * s))
        return kiln_errorf(g, KILN_ERR_SHAPE,
                           "upsample_grad: dy's spatial size %lldx%lld is "
                           "not size %lldx%lld times scale %lld",
                           (long long)dy->shape[r - 2], (long long)dy->shape[r - 1],
                           (long long)n->shape[r - 2], (long long)n->shape[r - 1], (long long)s);
    return KILN_OK;
}

/* pads [l, r] or [l, r, t, b] on x's last one or two axes: the sizes after
 * padding (in) -> out; fwd: in is x; grad: in is dy and the sizes shrink. */
static kiln_status pad_sizes(kiln_graph *g, kiln_node *n, const kiln_node *x, bool grad,
                             int64_t *shape)
{
    const kiln_attr *pa = kiln_node_attr(n, "pads");
    const char *op = kiln_ops[n->op].name;
    int64_t mode = kiln_attr_get_int(n, "mode");
    char t[128];
    kiln_node_type_str(x, t, sizeof t);
    if (mode != 0 && mode != 1)
        return kiln_errorf(g, KILN_ERR_INVALID,
                           "%s: mode %lld is not 0 (constant) or 1 "
                           "(reflect)",
                           op, (long long)mode);
    if (pa->n != 2 && pa->n != 4)
        return kiln_errorf(g, KILN_ERR_INVALID,
                           "%s: pads takes [left, right] or [left, right, "
                           "top, bottom], got %d values",
                           op, pa->n);
    if (x->rank < pa->n / 2)
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s: %d pads need rank %d or more, got %s", op, pa->n,
                           pa->n / 2, t);
    memcpy(shape, x->shape, KILN_MAX_RANK * sizeof *shape);
    for (int i = 0; i < pa->n / 2; i++) {
        int ax = x->rank - 1 - i;
        int64_t lo = pa->i[2 * i], hi = pa->i[2 * i + 1];
        int64_t sz = grad ? x->shape[ax] - lo - hi : x->shape[ax] + lo + hi;
        int64_t L = grad ? sz : x->shape[ax];
        if (sz < 0 || (grad && sz < 1))
            return kiln_errorf(g, KILN_ERR_SHAPE,
                               "%s: pads %lld, %lld on axis %d of %s leave "
                               "%lld elements",
                               op, (long long)lo, (long long)hi, ax, t, (long long)sz);
        if (mode == 1 && (lo < 0 || hi < 0 || lo >= L || hi >= L))
            return kiln_errorf(g, KILN_ERR_INVALID,
                               "%s: reflect pads %lld, %lld on axis %d must "
                               "be in [0, %lld) for an input of size %lld",
                               op, (long long)lo, (long long)hi, ax, (long long)L, (long long)L);
        shape[ax] = sz;
    }
    return KILN_OK;
}

kiln_status kiln_pad_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    int64_t shape[KILN_MAX_RANK];
    char t[128];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "pad: x must be floating point, got %s",
                           kiln_node_type_str(x, t, sizeof t));
    kiln_status st = pad_sizes(g, n, x, false, shape);
    if (st) return st;
    set_shape(n, x->dtype, x->rank, shape);
    return KILN_OK;
}

kiln_status kiln_pad_grad_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *dy = &g->nodes[n->inputs[0]];
    char t[128];
    if (!kiln_dtype_is_float((kiln_dtype)dy->dtype))
        return kiln_errorf(g, KILN_ERR_SHAPE, "pad_grad: dy must be floating point, got %s",
                           kiln_node_type_str(dy, t, sizeof t));
    int64_t shape[KILN_MAX_RANK];
    kiln_status st = pad_sizes(g, n, dy, true, shape);
    if (st) return st;
    set_shape(n, dy->dtype, dy->rank, shape);
    return KILN_OK;
}

/* ---- reference implementations ---- */

/* Planes (the leading axes) and the spatial sizes of node x. */
static int64_t planes_of(const kiln_node *x)
{
    int64_t H, W;
    spatial(x, &H, &W);
    int64_t hw = H * W;
    return hw ? kiln_node_numel(x) / hw : 0;
}

/* PyTorch's max-pool scan of window (oh, ow) over one plane: the value and
 * the position (h * L_w + w) it picks. */
static double max_window(const kiln_pool_axis *h, const kiln_pool_axis *w, const double *x,
                         int64_t oh, int64_t ow, int64_t *pos)
{
    int64_t jh0, jh1, jw0, jw1;
    kiln_pool_window(h, oh, &jh0, &jh1);
    kiln_pool_window(w, ow, &jw0, &jw1);
    int64_t h0 = oh * h->s - h->p, w0 = ow * w->s - w->p;
    double m = -INFINITY;
    *pos = (h0 + jh0 * h->d) * w->L + w0 + jw0 * w->d;
    for (int64_t jh = jh0; jh < jh1; jh++)
        for (int64_t jw = jw0; jw < jw1; jw++) {
            int64_t at = (h0 + jh * h->d) * w->L + w0 + jw * w->d;
            double v = x[at];
            if (v > m || isnan(v)) {
                m = v;
                *pos = at;
            }
        }
    return m;
}

kiln_status kiln_max_pool2d_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n), pos;
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++)
            for (int64_t ow = 0; ow < w.O; ow++)
                out[(p * h.O + oh) * w.O + ow] =
                    max_window(&h, &w, in[0] + p * h.L * w.L, oh, ow, &pos);
    return KILN_OK;
}

kiln_status kiln_max_pool2d_grad_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                     double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n), pos;
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++)
            for (int64_t ow = 0; ow < w.O; ow++) {
                max_window(&h, &w, in[0] + p * h.L * w.L, oh, ow, &pos);
                out[p * h.L * w.L + pos] += in[1][(p * h.O + oh) * w.O + ow];
            }
    return KILN_OK;
}

kiln_status kiln_avg_pool2d_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++)
            for (int64_t ow = 0; ow < w.O; ow++) {
                int64_t jh0, jh1, jw0, jw1;
                kiln_pool_window(&h, oh, &jh0, &jh1);
                kiln_pool_window(&w, ow, &jw0, &jw1);
                const double *x = in[0] + p * h.L * w.L + (oh * h.s - h.p) * w.L + ow * w.s - w.p;
                double s = 0.0;
                for (int64_t jh = jh0; jh < jh1; jh++) {
                    double row = 0.0;
                    for (int64_t jw = jw0; jw < jw1; jw++)
                        row += x[jh * w.L + jw];
                    s += row;
                }
                double div = (double)(kiln_pool_divisor(&h, oh) * kiln_pool_divisor(&w, ow));
                out[(p * h.O + oh) * w.O + ow] = jh1 > jh0 && jw1 > jw0 ? s / div : 0.0;
            }
    return KILN_OK;
}

kiln_status kiln_avg_pool2d_grad_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                     double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++)
            for (int64_t ow = 0; ow < w.O; ow++) {
                int64_t jh0, jh1, jw0, jw1;
                kiln_pool_window(&h, oh, &jh0, &jh1);
                kiln_pool_window(&w, ow, &jw0, &jw1);
                double div = (double)(kiln_pool_divisor(&h, oh) * kiln_pool_divisor(&w, ow));
                double v = in[0][(p * h.O + oh) * w.O + ow] / div;
                double *x = out + p * h.L * w.L + (oh * h.s - h.p) * w.L + ow * w.s - w.p;
                for (int64_t jh = jh0; jh < jh1; jh++)
                    for (int64_t jw = jw0; jw < jw1; jw++)
                        x[jh * w.L + jw] += v;
            }
    return KILN_OK;
}

kiln_status kiln_adaptive_avg_pool2d_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                         double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++)
            for (int64_t ow = 0; ow < w.O; ow++) {
                int64_t h0, h1, w0, w1;
                kiln_pool_adaptive(&h, oh, &h0, &h1);
                kiln_pool_adaptive(&w, ow, &w0, &w1);
                const double *x = in[0] + p * h.L * w.L;
                double s = 0.0;
                for (int64_t ih = h0; ih < h1; ih++) {
                    double row = 0.0;
                    for (int64_t iw = w0; iw < w1; iw++)
                        row += x[ih * w.L + iw];
                    s += row;
                }
                out[(p * h.O + oh) * w.O + ow] = s / (double)((h1 - h0) * (w1 - w0));
            }
    return KILN_OK;
}

kiln_status kiln_adaptive_avg_pool2d_grad_ref(kiln_graph *g, const kiln_node *n,
                                              const double *const *in, double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++)
            for (int64_t ow = 0; ow < w.O; ow++) {
                int64_t h0, h1, w0, w1;
                kiln_pool_adaptive(&h, oh, &h0, &h1);
                kiln_pool_adaptive(&w, ow, &w0, &w1);
                double v = in[0][(p * h.O + oh) * w.O + ow] / (double)((h1 - h0) * (w1 - w0));
                double *x = out + p * h.L * w.L;
                for (int64_t ih = h0; ih < h1; ih++)
                    for (int64_t iw = w0; iw < w1; iw++)
                        x[ih * w.L + iw] += v;
            }
    return KILN_OK;
}

/* The (at most two) inputs output o of upsample reads along one axis, with
 * their weights. */
static int upsample_taps(const kiln_pool_axis *a, int64_t o, int64_t *idx, double *wt)
{
    if (a->kind == KILN_POOL_NEAREST) {
        idx[0] = kiln_pool_nearest(a, o);
        wt[0] = 1.0;
        return 1;
    }
    kiln_pool_linear(a, o, &idx[0], &idx[1], &wt[0], &wt[1]);
    return 2;
}

kiln_status kiln_upsample_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                              double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n), ih[2], iw[2];
    double wh[2], ww[2];
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++) {
            int nh = upsample_taps(&h, oh, ih, wh);
            for (int64_t ow = 0; ow < w.O; ow++) {
                int nw = upsample_taps(&w, ow, iw, ww);
                const double *x = in[0] + p * h.L * w.L;
                double s;
                if (nh == 1) {
                    s = x[ih[0] * w.L + iw[0]];
                } else {
                    /* PyTorch's bilinear: h0l (w0l x00 + w1l x01) + h1l (w0l x10 + w1l x11) */
                    s = 0.0;
                    for (int a = 0; a < nh; a++) {
                        double row = 0.0;
                        for (int b = 0; b < nw; b++)
                            row += ww[b] * x[ih[a] * w.L + iw[b]];
                        s += wh[a] * row;
                    }
                }
                out[(p * h.O + oh) * w.O + ow] = s;
            }
        }
    return KILN_OK;
}

kiln_status kiln_upsample_grad_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                   double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n), ih[2], iw[2];
    double wh[2], ww[2];
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++) {
            int nh = upsample_taps(&h, oh, ih, wh);
            for (int64_t ow = 0; ow < w.O; ow++) {
                int nw = upsample_taps(&w, ow, iw, ww);
                double dy = in[0][(p * h.O + oh) * w.O + ow];
                double *x = out + p * h.L * w.L;
                for (int a = 0; a < nh; a++)
                    for (int b = 0; b < nw; b++)
                        x[ih[a] * w.L + iw[b]] += wh[a] * (ww[b] * dy);
            }
        }
    return KILN_OK;
}

kiln_status kiln_pad_ref(kiln_graph *g, const kiln_node *n, const double *const *in, double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n);
    double value = kiln_attr_get_float(n, "value");
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++) {
            int64_t sh = kiln_pool_pad_src(&h, oh);
            for (int64_t ow = 0; ow < w.O; ow++) {
                int64_t sw = kiln_pool_pad_src(&w, ow);
                out[(p * h.O + oh) * w.O + ow] =
                    sh >= 0 && sw >= 0 ? in[0][(p * h.L + sh) * w.L + sw] : value;
            }
        }
    return KILN_OK;
}

kiln_status kiln_pad_grad_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                              double *out)
{
    kiln_pool_axis h, w;
    kiln_pool_axes(g, n, &h, &w);
    int64_t P = planes_of(n);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    for (int64_t p = 0; p < P; p++)
        for (int64_t oh = 0; oh < h.O; oh++) {
            int64_t sh = kiln_pool_pad_src(&h, oh);
            for (int64_t ow = 0; ow < w.O; ow++) {
                int64_t sw = kiln_pool_pad_src(&w, ow);
                if (sh >= 0 && sw >= 0)
                    out[(p * h.L + sh) * w.L + sw] += in[0][(p * h.O + oh) * w.O + ow];
            }
        }
    return KILN_OK;
}

/* ---- costs ---- */

/* One flop per input element a window reads (max: a compare; avg: an add;
 * max_pool2d_grad: two, the argmax scan and the gather), per tap of
 * upsampling, one per element of pad; counted per output of the forward op
 * (kiln_pool_axes gives the forward's sizes for gradient ops too). Bytes:
 * the inputs and the output. */
void kiln_pool_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    kiln_pool_axis h, w;
    if (!kiln_pool_axes(g, n, &h, &w)) return;
    double outs = (double)planes_of(n) * (double)h.O * (double)w.O;
    double taps = 1.0;
    if (h.kind == KILN_POOL_WINDOW)
        taps = (double)(h.k * w.k);
    else if (h.kind == KILN_POOL_ADAPTIVE)
        taps = (double)((h.L + h.O - 1) / h.O + 1) * (double)((w.L + w.O - 1) / w.O + 1);
    else if (h.kind == KILN_POOL_LINEAR)
        taps = 4.0;
    *flops = outs * taps * (n->op == KILN_OP_MAX_POOL2D_GRAD ? 2.0 : 1.0);
}

/* ---- gradient rules ---- */

static kiln_status grad_status(int n, const int32_t *dx)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

/* Copies node's attributes (all of them) into a, plus `size` = x's spatial
 * size when size is set; returns the count. */
static int copy_attrs(const kiln_node *n, kiln_attr *a, const kiln_node *x, bool size)
{
    int k = 0;
    for (int i = 0; i < n->nattrs; i++)
        a[k++] = n->attrs[i];
    if (size) {
        int64_t v[2] = {x->shape[x->rank - 2], x->shape[x->rank - 1]};
        a[k++] = kiln_attr_ints("size", 2, v);
    }
    return k;
}

kiln_status kiln_max_pool2d_grad_rule(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_attr a[KILN_MAX_ATTRS];
    int na = copy_attrs(&g->nodes[node], a, NULL, false);
    kiln_value in[2] = {g->nodes[node].inputs[0], dy};
    dx[0] = kiln_build(g, KILN_OP_MAX_POOL2D_GRAD, 2, in, na, a);
    return grad_status(1, dx);
}

kiln_status kiln_avg_pool2d_grad_rule(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_attr a[KILN_MAX_ATTRS];
    const kiln_node *n = &g->nodes[node];
    int na = copy_attrs(n, a, &g->nodes[n->inputs[0]], true);
    dx[0] = kiln_build(g, KILN_OP_AVG_POOL2D_GRAD, 1, &dy, na, a);
    return grad_status(1, dx);
}

kiln_status kiln_adaptive_avg_pool2d_grad_rule(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node], *x = &g->nodes[n->inputs[0]];
    int64_t v[2] = {x->shape[x->rank - 2], x->shape[x->rank - 1]};
    kiln_attr a = kiln_attr_ints("size", 2, v);
    dx[0] = kiln_build(g, KILN_OP_ADAPTIVE_AVG_POOL2D_GRAD, 1, &dy, 1, &a);
    return grad_status(1, dx);
}

kiln_status kiln_upsample_grad_rule(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node], *x = &g->nodes[n->inputs[0]];
    int64_t v[2] = {x->shape[x->rank - 2], x->shape[x->rank - 1]};
    kiln_attr a[4] = {kiln_attr_ints("size", 2, v),
                      kiln_attr_int("scale", kiln_attr_get_int(n, "scale")),
                      kiln_attr_int("mode", kiln_attr_get_int(n, "mode")),
                      kiln_attr_int("align_corners", kiln_attr_get_int(n, "align_corners"))};
    dx[0] = kiln_build(g, KILN_OP_UPSAMPLE_GRAD, 1, &dy, 4, a);
    return grad_status(1, dx);
}

kiln_status kiln_pad_grad_rule(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_attr *pa = kiln_node_attr(n, "pads");
    kiln_attr a[2] = {kiln_attr_ints("pads", pa->n, pa->i),
                      kiln_attr_int("mode", kiln_attr_get_int(n, "mode"))};
    dx[0] = kiln_build(g, KILN_OP_PAD_GRAD, 1, &dy, 2, a);
    return grad_status(1, dx);
}
