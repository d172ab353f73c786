/* ir/ops_conv.c — 2-D convolutions: conv2d, conv_transpose2d,
 * conv2d_grad_weight, im2col and col2im. Shape rules, gradient rules,
 * reference implementations and costs, side by side; the geometry helpers
 * of ir/conv.h.
 *
 * The references are the direct loops of the definitions (ir/ops_conv.def),
 * summing in double; they are the oracle for the GEMM-based kernels that
 * passes/conv_lower.c makes.
 *
 * Gradients (y = conv2d(x, w, b), each a conv-family op again):
 *   dx = conv_transpose2d(dy, w) with output_padding = what makes it x's size
 *   dw = conv2d_grad_weight(x, dy),   db = reduce_sum(dy, [0, 2, 3])
 * (db summed over the rows of dy seen channel-major, see bias_grad)
 * y = conv_transpose2d(x, w, b) is conv2d's adjoint in its input, so
 *   dx = conv2d(dy, w) (sliced to x's size when output_padding added rows)
 *   dw = conv2d_grad_weight(dy, x),   db = reduce_sum(dy, [0, 2, 3])
 * dw = conv2d_grad_weight(x, dy) is bilinear: <ddw, dw> = <dy, conv2d(x, ddw)>,
 *   so d/dx = conv_transpose2d(dy, ddw), d/d dy = conv2d(x, ddw) (sliced)
 * im2col and col2im are each other's adjoints (col2im's gradient sliced to
 * its input's rows when it covered fewer than the convolution has).
 */
#include "ir/conv.h"
#include "ir/ops.h"

#include <stdio.h>
#include <string.h>

/* ---- geometry ---- */

int64_t kiln_conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d)
{
    int64_t span = in + 2 * p - d * (k - 1) - 1;
    if (span < 0 || s < 1) return 0;
    return span / s + 1;
}

static int64_t pair_at(const kiln_node *n, const char *name, int k, int64_t def)
{
    const kiln_attr *a = kiln_node_attr(n, name);
    if (!a || a->n == 0) return def;
    return a->n == 1 ? a->i[0] : a->i[k];
}

void kiln_conv_geom_of(const kiln_graph *g, const kiln_node *n, kiln_conv_geom *o)
{
    memset(o, 0, sizeof *o);
    o->sh = pair_at(n, "stride", 0, 1);
    o->sw = pair_at(n, "stride", 1, 1);
    o->ph = pair_at(n, "padding", 0, 0);
    o->pw = pair_at(n, "padding", 1, 0);
    o->dh = pair_at(n, "dilation", 0, 1);
    o->dw = pair_at(n, "dilation", 1, 1);
    o->oph = pair_at(n, "output_padding", 0, 0);
    o->opw = pair_at(n, "output_padding", 1, 0);
    o->G = kiln_node_attr(n, "groups") ? kiln_attr_get_int(n, "groups") : 1;
    const kiln_node *x = &g->nodes[n->inputs[0]];
    const kiln_node *b = n->ninputs > 1 ? &g->nodes[n->inputs[1]] : NULL;
    switch (n->op) {
    case KILN_OP_CONV2D: /* x, w */
        o->N = x->shape[0], o->C = x->shape[1], o->H = x->shape[2], o->W = x->shape[3];
        o->Co = b->shape[0], o->kh = b->shape[2], o->kw = b->shape[3];
        o->OH = n->shape[2], o->OW = n->shape[3];
        break;
    case KILN_OP_CONV_TRANSPOSE2D: /* x is the convolution's output, w [Co, C/G, kh, kw] */
        o->N = x->shape[0], o->Co = x->shape[1], o->OH = x->shape[2], o->OW = x->shape[3];
        o->C = n->shape[1], o->H = n->shape[2], o->W = n->shape[3];
        o->kh = b->shape[2], o->kw = b->shape[3];
        break;
    case KILN_OP_CONV2D_GRAD_WEIGHT: /* x, dy */
        o->N = x->shape[0], o->C = x->shape[1], o->H = x->shape[2], o->W = x->shape[3];
        o->Co = b->shape[1], o->OH = b->shape[2], o->OW = b->shape[3];
        o->kh = pair_at(n, "kernel", 0, 1), o->kw = pair_at(n, "kernel", 1, 1);
        break;
    case KILN_OP_IM2COL:
        o->N = x->shape[0], o->C = x->shape[1], o->H = x->shape[2], o->W = x->shape[3];
        o->kh = pair_at(n, "kernel", 0, 1), o->kw = pair_at(n, "kernel", 1, 1);
        o->OH = n->shape[2], o->OW = n->shape[3];
        break;
    case KILN_OP_COL2IM:
        o->N = n->shape[0], o->C = n->shape[1], o->H = n->shape[2], o->W = n->shape[3];
        o->kh = pair_at(n, "kernel", 0, 1), o->kw = pair_at(n, "kernel", 1, 1);
        o->OH = x->shape[2], o->OW = x->shape[3];
        break;
    default: break;
    }
}

kiln_value kiln_b_conv(kiln_graph *g, int op, int nin, const kiln_value *in,
                       const kiln_conv_geom *geom)
{
    kiln_schema_attr sch[KILN_MAX_ATTRS];
    int ns = kiln_op_schema(op, sch, KILN_MAX_ATTRS);
    if (ns < 0) return kiln_errorf(g, KILN_ERR_INTERNAL, "malformed conv schema");
    kiln_attr at[KILN_MAX_ATTRS];
    for (int s = 0; s < ns; s++) {
        const char *nm = sch[s].name;
        int64_t v[2] = {0, 0};
        if (!strcmp(nm, "stride")) v[0] = geom->sh, v[1] = geom->sw;
        else if (!strcmp(nm, "padding")) v[0] = geom->ph, v[1] = geom->pw;
        else if (!strcmp(nm, "dilation")) v[0] = geom->dh, v[1] = geom->dw;
        else if (!strcmp(nm, "output_padding")) v[0] = geom->oph, v[1] = geom->opw;
        else if (!strcmp(nm, "kernel")) v[0] = geom->kh, v[1] = geom->kw;
        else if (!strcmp(nm, "size")) v[0] = geom->H, v[1] = geom->W;
        if (!strcmp(nm, "groups")) at[s] = kiln_attr_int(nm, geom->G);
        else at[s] = kiln_attr_ints(nm, 2, v);
    }
    return kiln_build(g, op, nin, in, ns, at);
}

/* ---- shape rules ---- */

/* Normalises pair attribute `name` to two values >= min ([] -> [def, def],
 * [v] -> [v, v]) into out. */
static kiln_status norm_pair(kiln_graph *g, kiln_node *n, const char *name, int64_t def,
                             int64_t min, int64_t *out)
{
    const char *op = kiln_ops[n->op].name;
    kiln_attr *a = kiln_node_attr_mut(n, name);
    if (!a) return kiln_errorf(g, KILN_ERR_INTERNAL, "%s: no attribute '%s'", op, name);
    if (a->n > 2)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: %s takes one or two values ([h, w]), got "
                           "%d", op, name, a->n);
    out[0] = a->n == 0 ? def : a->i[0];
    out[1] = a->n == 0 ? def : a->n == 1 ? a->i[0] : a->i[1];
    for (int k = 0; k < 2; k++)
        if (out[k] < min)
            return kiln_errorf(g, KILN_ERR_INVALID, "%s: %s must be at least %lld, got [%lld, "
                               "%lld]", op, name, (long long)min, (long long)out[0],
                               (long long)out[1]);
    *a = kiln_attr_ints(name, 2, out);
    return KILN_OK;
}

/* The shared attributes: stride, padding, dilation (and groups when the op
 * has them). */
static kiln_status norm_common(kiln_graph *g, kiln_node *n, kiln_conv_geom *o)
{
    int64_t v[2];
    kiln_status st;
    if ((st = norm_pair(g, n, "stride", 1, 1, v))) return st;
    o->sh = v[0], o->sw = v[1];
    if ((st = norm_pair(g, n, "padding", 0, 0, v))) return st;
    o->ph = v[0], o->pw = v[1];
    if ((st = norm_pair(g, n, "dilation", 1, 1, v))) return st;
    o->dh = v[0], o->dw = v[1];
    o->G = 1;
    if (kiln_node_attr(n, "groups")) {
        o->G = kiln_attr_get_int(n, "groups");
        if (o->G < 1)
            return kiln_errorf(g, KILN_ERR_INVALID, "%s: groups must be at least 1, got %lld",
                               kiln_ops[n->op].name, (long long)o->G);
    }
    return KILN_OK;
}

static void set_out(kiln_node *n, kiln_dtype t, int64_t a, int64_t b, int64_t c, int64_t d)
{
    n->dtype = (uint8_t)t;
    n->rank = 4;
    memset(n->shape, 0, sizeof n->shape);
    n->shape[0] = a, n->shape[1] = b, n->shape[2] = c, n->shape[3] = d;
}

/* A float tensor of rank `rank`. */
static bool float_rank(const kiln_node *x, int rank)
{
    return kiln_dtype_is_float((kiln_dtype)x->dtype) && x->rank == rank;
}

/* The bias of conv2d / conv_transpose2d: input 2 when given, [co]. */
static kiln_status check_bias(kiln_graph *g, const kiln_node *n, const kiln_node *x, int64_t co)
{
    const char *op = kiln_ops[n->op].name;
    if (n->ninputs < 2 || n->ninputs > 3)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s takes x, w and an optional bias b, got %d "
                           "input%s", op, n->ninputs, n->ninputs == 1 ? "" : "s");
    if (n->ninputs == 2) return KILN_OK;
    const kiln_node *b = &g->nodes[n->inputs[2]];
    char tb[128];
    if (b->dtype != x->dtype || b->rank != 1 || b->shape[0] != co)
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s: the bias must be %s[%lld] (one per output "
                           "channel), got %s", op, kiln_dtype_name((kiln_dtype)x->dtype),
                           (long long)co, kiln_node_type_str(b, tb, sizeof tb));
    return KILN_OK;
}

kiln_status kiln_conv2d_shape(kiln_graph *g, kiln_node *n)
{
    if (n->ninputs < 2)
        return kiln_errorf(g, KILN_ERR_INVALID, "conv2d takes x, w and an optional bias b, got "
                           "%d input", n->ninputs);
    const kiln_node *x = &g->nodes[n->inputs[0]], *w = &g->nodes[n->inputs[1]];
    char tx[128], tw[128];
    kiln_node_type_str(x, tx, sizeof tx);
    kiln_node_type_str(w, tw, sizeof tw);
    if (!float_rank(x, 4) || !float_rank(w, 4) || x->dtype != w->dtype)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d: x must be [N, C, H, W] and w [Co, C/groups, "
                           "kh, kw], float tensors of one dtype; got x %s, w %s", tx, tw);
    kiln_conv_geom o;
    kiln_status st = norm_common(g, n, &o);
    if (st) return st;
    int64_t C = x->shape[1], Co = w->shape[0];
    if (C % o.G || Co % o.G || w->shape[1] * o.G != C)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d: with groups=%lld, x %s and w %s need C and "
                           "Co divisible by groups and w's axis 1 equal to C/groups", (long long)o.G,
                           tx, tw);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d: empty kernel in w %s", tw);
    int64_t OH = kiln_conv_out_size(x->shape[2], w->shape[2], o.sh, o.ph, o.dh);
    int64_t OW = kiln_conv_out_size(x->shape[3], w->shape[3], o.sw, o.pw, o.dw);
    if (OH < 1 || OW < 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d: the kernel of w %s (dilation [%lld, %lld]) "
                           "does not fit in x %s padded by [%lld, %lld]", tw, (long long)o.dh,
                           (long long)o.dw, tx, (long long)o.ph, (long long)o.pw);
    if ((st = check_bias(g, n, x, Co))) return st;
    set_out(n, (kiln_dtype)x->dtype, x->shape[0], Co, OH, OW);
    return KILN_OK;
}

kiln_status kiln_conv_transpose2d_shape(kiln_graph *g, kiln_node *n)
{
    if (n->ninputs < 2)
        return kiln_errorf(g, KILN_ERR_INVALID, "conv_transpose2d takes x, w and an optional "
                           "bias b, got %d input", n->ninputs);
    const kiln_node *x = &g->nodes[n->inputs[0]], *w = &g->nodes[n->inputs[1]];
    char tx[128], tw[128];
    kiln_node_type_str(x, tx, sizeof tx);
    kiln_node_type_str(w, tw, sizeof tw);
    if (!float_rank(x, 4) || !float_rank(w, 4) || x->dtype != w->dtype)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv_transpose2d: x must be [N, Cin, H, W] and w "
                           "[Cin, Cout/groups, kh, kw], float tensors of one dtype; got x %s, "
                           "w %s", tx, tw);
    kiln_conv_geom o;
    kiln_status st = norm_common(g, n, &o);
    if (st) return st;
    int64_t op[2];
    if ((st = norm_pair(g, n, "output_padding", 0, 0, op))) return st;
    int64_t Cin = x->shape[1];
    if (w->shape[0] != Cin || Cin % o.G)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv_transpose2d: with groups=%lld, x %s and w %s "
                           "need w's axis 0 equal to Cin and Cin divisible by groups",
                           (long long)o.G, tx, tw);
    if (w->shape[2] < 1 || w->shape[3] < 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv_transpose2d: empty kernel in w %s", tw);
    int64_t Cout = w->shape[1] * o.G;
    int64_t Ho = (x->shape[2] - 1) * o.sh - 2 * o.ph + o.dh * (w->shape[2] - 1) + op[0] + 1;
    int64_t Wo = (x->shape[3] - 1) * o.sw - 2 * o.pw + o.dw * (w->shape[3] - 1) + op[1] + 1;
    if (x->shape[2] < 1 || x->shape[3] < 1 || Ho < 1 || Wo < 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv_transpose2d: x %s and w %s with padding "
                           "[%lld, %lld] give an empty output", tx, tw, (long long)o.ph,
                           (long long)o.pw);
    if ((st = check_bias(g, n, x, Cout))) return st;
    set_out(n, (kiln_dtype)x->dtype, x->shape[0], Cout, Ho, Wo);
    return KILN_OK;
}

kiln_status kiln_conv2d_grad_weight_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]], *dy = &g->nodes[n->inputs[1]];
    char tx[128], td[128];
    kiln_node_type_str(x, tx, sizeof tx);
    kiln_node_type_str(dy, td, sizeof td);
    if (!float_rank(x, 4) || !float_rank(dy, 4) || x->dtype != dy->dtype ||
        x->shape[0] != dy->shape[0])
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d_grad_weight: x must be [N, C, H, W] and dy "
                           "[N, Co, OH, OW], float tensors of one dtype; got x %s, dy %s", tx, td);
    kiln_conv_geom o;
    int64_t k[2];
    kiln_status st = norm_common(g, n, &o);
    if (st || (st = norm_pair(g, n, "kernel", 1, 1, k))) return st;
    int64_t C = x->shape[1], Co = dy->shape[1];
    if (C % o.G || Co % o.G)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d_grad_weight: with groups=%lld, x %s and dy "
                           "%s need channels divisible by groups", (long long)o.G, tx, td);
    int64_t OH = kiln_conv_out_size(x->shape[2], k[0], o.sh, o.ph, o.dh);
    int64_t OW = kiln_conv_out_size(x->shape[3], k[1], o.sw, o.pw, o.dw);
    if (OH < 1 || OW < 1 || dy->shape[2] > OH || dy->shape[3] > OW)
        return kiln_errorf(g, KILN_ERR_SHAPE, "conv2d_grad_weight: dy %s has more positions than "
                           "the convolution of x %s with kernel [%lld, %lld] (%lld x %lld)", td, tx,
                           (long long)k[0], (long long)k[1], (long long)OH, (long long)OW);
    set_out(n, (kiln_dtype)x->dtype, Co, C / o.G, k[0], k[1]);
    return KILN_OK;
}

kiln_status kiln_im2col_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    char tx[128];
    kiln_node_type_str(x, tx, sizeof tx);
    if (!float_rank(x, 4))
        return kiln_errorf(g, KILN_ERR_SHAPE, "im2col: x must be a float tensor [N, C, H, W], got "
                           "%s", tx);
    kiln_conv_geom o;
    int64_t k[2];
    kiln_status st = norm_common(g, n, &o);
    if (st || (st = norm_pair(g, n, "kernel", 1, 1, k))) return st;
    int64_t OH = kiln_conv_out_size(x->shape[2], k[0], o.sh, o.ph, o.dh);
    int64_t OW = kiln_conv_out_size(x->shape[3], k[1], o.sw, o.pw, o.dw);
    if (OH < 1 || OW < 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "im2col: the kernel [%lld, %lld] does not fit in x "
                           "%s", (long long)k[0], (long long)k[1], tx);
    set_out(n, (kiln_dtype)x->dtype, x->shape[1] * k[0] * k[1], x->shape[0], OH, OW);
    return KILN_OK;
}

kiln_status kiln_col2im_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *x = &g->nodes[n->inputs[0]];
    char tx[128];
    kiln_node_type_str(x, tx, sizeof tx);
    kiln_conv_geom o;
    int64_t k[2], sz[2];
    kiln_status st = norm_common(g, n, &o);
    if (st || (st = norm_pair(g, n, "kernel", 1, 1, k)) ||
        (st = norm_pair(g, n, "size", 1, 1, sz)))
        return st;
    if (!float_rank(x, 4) || x->shape[0] % (k[0] * k[1]))
        return kiln_errorf(g, KILN_ERR_SHAPE, "col2im: cols must be a float tensor [C*kh*kw, N, "
                           "OH, OW] with kernel [%lld, %lld], got %s", (long long)k[0],
                           (long long)k[1], tx);
    int64_t OH = kiln_conv_out_size(sz[0], k[0], o.sh, o.ph, o.dh);
    int64_t OW = kiln_conv_out_size(sz[1], k[1], o.sw, o.pw, o.dw);
    if (x->shape[2] > OH || x->shape[3] > OW)
        return kiln_errorf(g, KILN_ERR_SHAPE, "col2im: cols %s have more positions than the "
                           "convolution of a [%lld, %lld] image has (%lld x %lld)", tx,
                           (long long)sz[0], (long long)sz[1], (long long)OH, (long long)OW);
    set_out(n, (kiln_dtype)x->dtype, x->shape[1], x->shape[0] / (k[0] * k[1]), sz[0], sz[1]);
    return KILN_OK;
}

/* ---- reference implementations ---- */

/* The sum of dy-weighted taps shared by the references: for every output
 * position (n, o, oh, ow) of the convolution o (geometry k) and every tap
 * (c, i, j) of its group inside the image, calls back with the flat indices
 * of x [N, C, H, W], w [Co, C/G, kh, kw] and y [N, Co, OH, OW]. */
typedef void (*tap_fn)(void *ctx, int64_t xi, int64_t wi, int64_t yi);

static void for_taps(const kiln_conv_geom *k, tap_fn fn, void *ctx)
{
    int64_t Cg = k->C / k->G, Cog = k->Co / k->G;
    for (int64_t n = 0; n < k->N; n++)
        for (int64_t o = 0; o < k->Co; o++) {
            int64_t grp = o / Cog;
            for (int64_t oh = 0; oh < k->OH; oh++)
                for (int64_t ow = 0; ow < k->OW; ow++) {
                    int64_t yidx = ((n * k->Co + o) * k->OH + oh) * k->OW + ow;
                    for (int64_t c = 0; c < Cg; c++)
                        for (int64_t i = 0; i < k->kh; i++) {
                            int64_t ih = oh * k->sh - k->ph + i * k->dh;
                            if (ih < 0 || ih >= k->H) continue;
                            for (int64_t j = 0; j < k->kw; j++) {
                                int64_t iw = ow * k->sw - k->pw + j * k->dw;
                                if (iw < 0 || iw >= k->W) continue;
                                int64_t xidx = ((n * k->C + grp * Cg + c) * k->H + ih) * k->W + iw;
                                int64_t widx = ((o * Cg + c) * k->kh + i) * k->kw + j;
                                fn(ctx, xidx, widx, yidx);
                            }
                        }
                }
        }
}

typedef struct tap_ctx {
    const double *x, *w, *y;
    double *out;
} tap_ctx;

static void tap_forward(void *p, int64_t xi, int64_t wi, int64_t yi)
{
    tap_ctx *c = p;
    c->out[yi] += c->x[xi] * c->w[wi];
}

static void tap_transpose(void *p, int64_t xi, int64_t wi, int64_t yi)
{
    tap_ctx *c = p; /* out is the convolution's input, y its output (our x) */
    c->out[xi] += c->y[yi] * c->w[wi];
}

static void tap_weight(void *p, int64_t xi, int64_t wi, int64_t yi)
{
    tap_ctx *c = p;
    c->out[wi] += c->y[yi] * c->x[xi];
}

/* Adds bias[c] to every element of channel c of out [N, Co, H, W]. */
static void add_bias(const kiln_node *n, const double *b, double *out)
{
    int64_t plane = n->shape[2] * n->shape[3];
    for (int64_t i = 0; i < n->shape[0]; i++)
        for (int64_t c = 0; c < n->shape[1]; c++)
            for (int64_t p = 0; p < plane; p++) out[(i * n->shape[1] + c) * plane + p] += b[c];
}

kiln_status kiln_conv2d_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    tap_ctx c = {.x = in[0], .w = in[1], .out = out};
    for_taps(&k, tap_forward, &c);
    if (n->ninputs == 3) add_bias(n, in[2], out);
    return KILN_OK;
}

kiln_status kiln_conv_transpose2d_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                                      double *out)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    tap_ctx c = {.y = in[0], .w = in[1], .out = out};
    for_taps(&k, tap_transpose, &c);
    if (n->ninputs == 3) add_bias(n, in[2], out);
    return KILN_OK;
}

kiln_status kiln_conv2d_grad_weight_ref(kiln_graph *g, const kiln_node *n,
                                        const double *const *in, double *out)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    tap_ctx c = {.x = in[0], .y = in[1], .out = out};
    for_taps(&k, tap_weight, &c);
    return KILN_OK;
}

/* im2col / col2im visit cols [C*kh*kw, N, OH, OW] and the pixel each
 * element reads (-1 in the padding). */
typedef void (*col_fn)(double *a, double *b, int64_t ci, int64_t xi);

static void for_cols(const kiln_conv_geom *k, col_fn fn, double *cols, double *x)
{
    int64_t ci = 0;
    for (int64_t c = 0; c < k->C; c++)
        for (int64_t i = 0; i < k->kh; i++)
            for (int64_t j = 0; j < k->kw; j++)
                for (int64_t n = 0; n < k->N; n++)
                    for (int64_t oh = 0; oh < k->OH; oh++)
                        for (int64_t ow = 0; ow < k->OW; ow++, ci++) {
                            int64_t ih = oh * k->sh - k->ph + i * k->dh;
                            int64_t iw = ow * k->sw - k->pw + j * k->dw;
                            bool in = ih >= 0 && ih < k->H && iw >= 0 && iw < k->W;
                            fn(cols, x, ci, in ? ((n * k->C + c) * k->H + ih) * k->W + iw : -1);
                        }
}

static void col_gather(double *cols, double *x, int64_t ci, int64_t xi)
{
    cols[ci] = xi < 0 ? 0.0 : x[xi];
}

static void col_scatter(double *cols, double *x, int64_t ci, int64_t xi)
{
    if (xi >= 0) x[xi] += cols[ci];
}

kiln_status kiln_im2col_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    for_cols(&k, col_gather, out, (double *)in[0]);
    return KILN_OK;
}

kiln_status kiln_col2im_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    memset(out, 0, (size_t)kiln_node_numel(n) * sizeof *out);
    for_cols(&k, col_scatter, (double *)in[0], out);
    return KILN_OK;
}

/* ---- costs ---- */

void kiln_conv2d_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    kiln_cost_default(g, n, flops, bytes);
    *flops = 2.0 * (double)kiln_node_numel(n) * (double)(k.C / k.G * k.kh * k.kw);
}

void kiln_conv_transpose2d_cost(const kiln_graph *g, const kiln_node *n, double *flops,
                                double *bytes)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    kiln_cost_default(g, n, flops, bytes);
    *flops = 2.0 * (double)(k.N * k.Co * k.OH * k.OW) * (double)(k.C / k.G * k.kh * k.kw);
}

void kiln_conv2d_grad_weight_cost(const kiln_graph *g, const kiln_node *n, double *flops,
                                  double *bytes)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    kiln_cost_default(g, n, flops, bytes);
    *flops = 2.0 * (double)kiln_node_numel(n) * (double)(k.N * k.OH * k.OW);
}

void kiln_col2im_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    kiln_cost_default(g, n, flops, bytes);
    *flops = (double)kiln_node_numel(&g->nodes[n->inputs[0]]);
}

/* ---- gradient rules ---- */

static kiln_value slice_to(kiln_graph *g, kiln_value v, int axis, int64_t len)
{
    if (v < 0 || g->nodes[v].shape[axis] == len) return v;
    kiln_attr at[3] = {kiln_attr_int("axis", axis), kiln_attr_int("start", 0),
                       kiln_attr_int("end", len)};
    return kiln_build(g, KILN_OP_SLICE, 1, &v, 3, at);
}

/* v [N, C, h, w] cut to its first H rows and W columns. */
static kiln_value crop(kiln_graph *g, kiln_value v, int64_t H, int64_t W)
{
    return slice_to(g, slice_to(g, v, 2, H), 3, W);
}

/* sum(dy, [0, 2, 3]) as dY @ 1, dY the rows of dy seen channel-major,
 * [Co, N*H*W]: the matrix the GEMM route stores anyway
 * (passes/conv_lower.c), read contiguously, and a matrix-vector product's
 * sums run in SIMD lanes (a reduction keeps the reference's sequential
 * order). */
static kiln_value bias_grad(kiln_graph *g, kiln_value dy)
{
    if (dy < 0) return dy;
    const kiln_node *n = &g->nodes[dy];
    kiln_dtype t = (kiln_dtype)n->dtype;
    int64_t rows[2] = {n->shape[1], n->shape[0] * n->shape[2] * n->shape[3]};
    kiln_value m = dy;
    if (n->shape[0] != 1) m = kiln_permute(g, dy, 4, (const int64_t[]){1, 0, 2, 3});
    kiln_value ones = kiln_broadcast_to(g, kiln_scalar(g, 1.0, t), 1, &rows[1]);
    return kiln_matmul(g, kiln_reshape(g, m, 2, rows), ones, 0, 0);
}

static kiln_status result(kiln_value *dx, int n)
{
    for (int i = 0; i < n; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}

/* conv_transpose2d(dy, w) of size H x W from a convolution of geometry k
 * whose output dy has OH x OW positions: output_padding makes up the rest. */
static kiln_value transpose_to(kiln_graph *g, kiln_value dy, kiln_value w, kiln_conv_geom k)
{
    k.oph = k.H - ((k.OH - 1) * k.sh - 2 * k.ph + k.dh * (k.kh - 1) + 1);
    k.opw = k.W - ((k.OW - 1) * k.sw - 2 * k.pw + k.dw * (k.kw - 1) + 1);
    kiln_value in[2] = {dy, w};
    return kiln_b_conv(g, KILN_OP_CONV_TRANSPOSE2D, 2, in, &k);
}

kiln_status kiln_conv2d_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    kiln_value x = n->inputs[0], w = n->inputs[1];
    bool bias = n->ninputs == 3;
    /* g->nodes may move from here on */
    dx[0] = transpose_to(g, dy, w, k);
    kiln_value in[2] = {x, dy};
    dx[1] = kiln_b_conv(g, KILN_OP_CONV2D_GRAD_WEIGHT, 2, in, &k);
    if (bias) dx[2] = bias_grad(g, dy);
    return result(dx, bias ? 3 : 2);
}

kiln_status kiln_conv_transpose2d_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    kiln_value x = n->inputs[0], w = n->inputs[1];
    bool bias = n->ninputs == 3;
    kiln_value in[2] = {dy, w};
    dx[0] = crop(g, kiln_b_conv(g, KILN_OP_CONV2D, 2, in, &k), k.OH, k.OW);
    in[0] = dy, in[1] = x;
    dx[1] = kiln_b_conv(g, KILN_OP_CONV2D_GRAD_WEIGHT, 2, in, &k);
    if (bias) dx[2] = bias_grad(g, dy);
    return result(dx, bias ? 3 : 2);
}

kiln_status kiln_conv2d_grad_weight_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, n, &k);
    kiln_value x = n->inputs[0], d = n->inputs[1];
    dx[0] = transpose_to(g, d, dy, k);
    kiln_value in[2] = {x, dy};
    dx[1] = crop(g, kiln_b_conv(g, KILN_OP_CONV2D, 2, in, &k), k.OH, k.OW);
    return result(dx, 2);
}

kiln_status kiln_im2col_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, &g->nodes[node], &k);
    dx[0] = kiln_b_conv(g, KILN_OP_COL2IM, 1, &dy, &k);
    return result(dx, 1);
}

kiln_status kiln_col2im_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    kiln_conv_geom k;
    kiln_conv_geom_of(g, &g->nodes[node], &k);
    dx[0] = crop(g, kiln_b_conv(g, KILN_OP_IM2COL, 1, &dy, &k), k.OH, k.OW);
    return result(dx, 1);
}
