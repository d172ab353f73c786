/* passes/conv_lower.c — convolutions into im2col, matrix products and
 * col2im, so that the packed GEMM (codegen/gemm.c, through the fusion
 * pass's rank-2 matmul groups) does their arithmetic.
 *
 * Expects: a verified graph, typically an entry of a compiled program after
 * training-program assembly (autodiff has turned every convolution's
 * gradient into conv-family ops) and before fusion.
 * Guarantees: an equivalent graph that verifies, in which every conv2d,
 * conv_transpose2d and conv2d_grad_weight of at most MAX_GROUPS groups is
 * replaced by the ops below (more groups keep their direct-loop kernels);
 * roles, names and source locations move to the replacements; leaves and
 * assigns are kept; the graph is unchanged when it has no convolution.
 * Values the replacements share (a column matrix, a weight or gradient
 * seen as a matrix) are built once, and a node of the graph that repeats
 * one of them reads it instead: the forward pass's im2col(x) also serves
 * the weight gradient, and the bias gradient's dy seen channel-major
 * (ir/ops_conv.c) is the input gradient's. The sums change order (f32 in
 * the GEMM instead of the reference's f64), nothing else.
 *
 * The layout (ir/conv.h): cols = im2col(x) is [C*kh*kw, N, OH, OW], one row
 * per weight column, so with W2d = reshape(w, [Co, C*kh*kw]),
 * P = N*OH*OW and matrices as [rows, columns]:
 *
 *   conv2d              Y = W2d @ cols2d                 [Co, P]
 *                       y = permute(reshape(Y, [Co, N, OH, OW]), [1, 0, 2, 3]) (+ b as [Co, 1, 1])
 *   conv2d_grad_weight  dw = reshape((cols2d @ dYT^T)^T, [Co, C, kh, kw])
 *   conv_transpose2d    x = col2im(W2d^T @ dYT)          (+ b as [C, 1, 1])
 *                       stride 1, one group, no output padding: the
 *                       convolution it equals, conv2d(dy, flip(swap01(w),
 *                       [2, 3])) with padding d*(k-1) - p, lowered as above
 *
 * where dYT = reshape(permute(dy, [1, 0, 2, 3]), [Co, P]). The forward and
 * input-gradient GEMMs thus run with N = P (long, split over the threads)
 * and write rows of OH*OW contiguous values per (channel, image): the
 * permutes between NCHW and this channel-major layout move whole rows (a
 * copy, no transpose of elements), and with N = 1 they vanish. The bias and
 * what follows the convolution (relu) join the permute's kernel (fuse.c:
 * a permute takes a tail). The weight gradient sums over P: it is computed
 * transposed, [C*kh*kw, Co], which the GEMM runs faster when Co is a
 * multiple of the register tile's 16 columns (the transpose back is small);
 * otherwise as dYT @ cols2d^T. A stride-1 input gradient
 * as a convolution of dy sums Co*kh*kw products per output element in one
 * GEMM of C rows, where col2im's form writes a C*kh*kw-row matrix from
 * sums of Co products and then adds its kh*kw overlapping copies back
 * together: kh*kw times the memory traffic, and a GEMM whose K is only Co
 * (and whose column matrix of dy the C backend packs from the image:
 * passes/fuse.h, implicit im2col). A 1x1 kernel with stride 1 and no padding
 * has no im2col: cols2d is x seen channel-major. A product of G groups is G
 * products of the groups' row blocks (slices along axis 0 of both
 * operands), concatenated along axis 0.
 */
#include "ir/conv.h"
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

#define MAX_GROUPS 16

typedef struct ctx {
    kiln_graph *g;
    int32_t n;        /* nodes before the pass */
    int32_t *remap;   /* old id -> new id */
    int32_t *holder;  /* old leaf id -> its copy (which took the name), or -1 */
    int32_t mark;     /* nodes from here on were built by this pass */
} ctx;


static bool same_node(const kiln_node *a, const kiln_node *b)
{
    if (a->op != b->op || a->dtype != b->dtype || a->rank != b->rank ||
        a->ninputs != b->ninputs || a->nattrs != b->nattrs || kiln_rebuild_tagged(a) || kiln_rebuild_tagged(b))
        return false;
    if (memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0])) return false;
    if (a->ninputs && memcmp(a->inputs, b->inputs, (size_t)a->ninputs * sizeof a->inputs[0]))
        return false;
    for (int i = 0; i < a->nattrs; i++)
        if (!kiln_attr_equal(&a->attrs[i], &b->attrs[i])) return false;
    return true;
}

/* The node just built, or an identical one this pass built before it (the
 * new one is then dead, and the sweep removes it). */
static kiln_value shared(ctx *c, kiln_value v)
{
    if (v < 0) return v;
    const kiln_node *nv = &c->g->nodes[v];
    for (int32_t i = c->mark; i < v; i++)
        if (same_node(&c->g->nodes[i], nv)) return i;
    return v;
}

/* ---- building blocks ---- */

static kiln_value reshape(ctx *c, kiln_value v, int rank, const int64_t *shape)
{
    kiln_attr a = kiln_attr_ints("shape", rank, shape);
    return shared(c, kiln_build(c->g, KILN_OP_RESHAPE, 1, &v, 1, &a));
}

static kiln_value swap01(ctx *c, kiln_value v)
{
    kiln_attr a = kiln_attr_ints("perm", 4, (const int64_t[]){1, 0, 2, 3});
    return shared(c, kiln_build(c->g, KILN_OP_PERMUTE, 1, &v, 1, &a));
}

static kiln_value slice(ctx *c, kiln_value v, int axis, int64_t start, int64_t end)
{
    if (v < 0 || (start == 0 && c->g->nodes[v].shape[axis] == end)) return v;
    kiln_attr at[3] = {kiln_attr_int("axis", axis), kiln_attr_int("start", start),
                       kiln_attr_int("end", end)};
    return shared(c, kiln_build(c->g, KILN_OP_SLICE, 1, &v, 3, at));
}

static kiln_value matmul(ctx *c, kiln_value a, kiln_value b, int ta, int tb)
{
    kiln_value in[2] = {a, b};
    kiln_attr at[2] = {kiln_attr_int("ta", ta), kiln_attr_int("tb", tb)};
    return shared(c, kiln_build(c->g, KILN_OP_MATMUL, 2, in, 2, at));
}

/* op(A) @ op(B) over G groups: the groups' row blocks of A, B and the
 * result (axis 0 of each stored matrix) multiplied block by block. */
static kiln_value grouped_mm(ctx *c, kiln_value a, kiln_value b, int ta, int tb, int64_t G)
{
    if (G == 1 || a < 0 || b < 0) return matmul(c, a, b, ta, tb);
    int64_t ra = c->g->nodes[a].shape[0] / G, rb = c->g->nodes[b].shape[0] / G;
    kiln_value *parts = malloc((size_t)G * sizeof *parts);
    if (!parts) return kiln_errorf(c->g, KILN_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < G; i++)
        parts[i] = matmul(c, slice(c, a, 0, i * ra, (i + 1) * ra), slice(c, b, 0, i * rb, (i + 1) * rb),
                          ta, tb);
    kiln_attr ax = kiln_attr_int("axis", 0);
    kiln_value r = shared(c, kiln_build(c->g, KILN_OP_CONCAT, (int)G, parts, 1, &ax));
    free(parts);
    return r;
}

/* w [Co, C/G, kh, kw] as the matrix [Co, C/G*kh*kw]. */
static kiln_value weight2d(ctx *c, kiln_value w)
{
    const kiln_node *n = &c->g->nodes[w];
    int64_t s[2] = {n->shape[0], n->shape[1] * n->shape[2] * n->shape[3]};
    return reshape(c, w, 2, s);
}

static kiln_value channel_major(ctx *c, kiln_value y);

/* The column matrix of convolution k of x [C*kh*kw, N*oh*ow], for its
 * first oh x ow output positions. A 1x1 kernel with stride 1 and no
 * padding needs no im2col: it is x seen channel-major. */
static kiln_value cols2d(ctx *c, kiln_value x, const kiln_conv_geom *k, int64_t oh, int64_t ow)
{
    if (k->kh == 1 && k->kw == 1 && k->sh == 1 && k->sw == 1 && k->ph == 0 && k->pw == 0 &&
        oh == k->H && ow == k->W)
        return channel_major(c, x);
    kiln_value cols = shared(c, kiln_b_conv(c->g, KILN_OP_IM2COL, 1, &x, k));
    cols = slice(c, slice(c, cols, 2, 0, oh), 3, 0, ow);
    int64_t s[2] = {k->C * k->kh * k->kw, k->N * oh * ow};
    return reshape(c, cols, 2, s);
}

/* y [N, Co, h, w] as the channel-major matrix [Co, N*h*w]. */
static kiln_value channel_major(ctx *c, kiln_value y)
{
    const kiln_node *n = &c->g->nodes[y];
    int64_t s[2] = {n->shape[1], n->shape[0] * n->shape[2] * n->shape[3]};
    if (n->shape[0] == 1) return reshape(c, y, 2, s);
    return reshape(c, swap01(c, y), 2, s);
}

/* The channel-major matrix Y [Co, N*h*w] back as [N, Co, h, w]: a fresh
 * node (it may take the convolution's role and name). */
static kiln_value nchw(ctx *c, kiln_value Y, int64_t N, int64_t Co, int64_t h, int64_t w)
{
    int64_t s[4] = {N == 1 ? 1 : Co, N == 1 ? Co : N, h, w};
    kiln_attr a = kiln_attr_ints("shape", 4, s);
    kiln_value r = N == 1 ? Y : reshape(c, Y, 4, s);
    if (N == 1) return kiln_build(c->g, KILN_OP_RESHAPE, 1, &r, 1, &a);
    a = kiln_attr_ints("perm", 4, (const int64_t[]){1, 0, 2, 3});
    return kiln_build(c->g, KILN_OP_PERMUTE, 1, &r, 1, &a);
}

/* ---- the rewrites ---- */

static kiln_value lower_conv2d(ctx *c, const kiln_conv_geom *k, const int32_t *in, int nin)
{
    kiln_value Y = grouped_mm(c, weight2d(c, in[1]), cols2d(c, in[0], k, k->OH, k->OW), 0, 0, k->G);
    if (nin == 2) return nchw(c, Y, k->N, k->Co, k->OH, k->OW);
    /* the bias after the permute: it joins the permute's kernel with what
     * follows (relu) and reads Y at a plain index there */
    return kiln_b2(c->g, KILN_OP_ADD, nchw(c, Y, k->N, k->Co, k->OH, k->OW),
                   reshape(c, in[2], 3, (const int64_t[]){k->Co, 1, 1}));
}

/* A stride-1 transposed convolution (an input gradient, mostly) as the
 * convolution it equals: y = conv2d(x, flip(swap01(w), [2, 3])) with
 * padding d*(k-1) - p and the same dilation, for one group and no output
 * padding; 0 when it is not one. */
static kiln_value transpose_as_conv(ctx *c, const kiln_conv_geom *k, const int32_t *in, int nin)
{
    int64_t qh = k->dh * (k->kh - 1) - k->ph, qw = k->dw * (k->kw - 1) - k->pw;
    if (k->sh != 1 || k->sw != 1 || k->G != 1 || k->oph || k->opw || qh < 0 || qw < 0 ||
        k->OH + 2 * qh - k->dh * (k->kh - 1) != k->H || k->OW + 2 * qw - k->dw * (k->kw - 1) != k->W)
        return 0;
    kiln_attr a = kiln_attr_ints("dims", 2, (const int64_t[]){2, 3});
    kiln_value w = swap01(c, in[1]);
    w = shared(c, kiln_build(c->g, KILN_OP_FLIP, 1, &w, 1, &a));
    kiln_conv_geom k2 = {.N = k->N, .C = k->Co, .H = k->OH, .W = k->OW, .Co = k->C,
                         .kh = k->kh, .kw = k->kw, .sh = 1, .sw = 1, .ph = qh, .pw = qw,
                         .dh = k->dh, .dw = k->dw, .G = 1, .OH = k->H, .OW = k->W};
    int32_t in2[3] = {in[0], w, nin == 3 ? in[2] : -1};
    return lower_conv2d(c, &k2, in2, nin);
}

static kiln_value lower_transpose(ctx *c, const kiln_conv_geom *k, const int32_t *in, int nin)
{
    kiln_value y = transpose_as_conv(c, k, in, nin);
    if (y) return y;
    kiln_value cols = grouped_mm(c, weight2d(c, in[1]), channel_major(c, in[0]), 1, 0, k->G);
    int64_t s[4] = {k->C * k->kh * k->kw, k->N, k->OH, k->OW};
    cols = reshape(c, cols, 4, s);
    y = kiln_b_conv(c->g, KILN_OP_COL2IM, 1, &cols, k);
    if (nin == 3)
        y = kiln_b2(c->g, KILN_OP_ADD, y, reshape(c, in[2], 3, (const int64_t[]){k->C, 1, 1}));
    return y;
}

static kiln_value lower_grad_weight(ctx *c, const kiln_conv_geom *k, const int32_t *in)
{
    kiln_value dY = channel_major(c, in[1]), cols = cols2d(c, in[0], k, k->OH, k->OW), dW;
    int64_t K = k->C / k->G * k->kh * k->kw;
    if (k->G == 1 && (k->Co % 16 == 0 || K % 16 != 0)) {
        /* dw^T = cols @ dY^T [C*kh*kw, Co], then transposed (small): the
         * long sum runs faster with Co as the GEMM's columns (measured on
         * AVX-512: 288x64 1.4x, 9x32 1.7x faster than 64x288, 32x9) */
        kiln_attr a = kiln_attr_ints("perm", 2, (const int64_t[]){1, 0});
        dW = matmul(c, cols, dY, 0, 1);
        dW = shared(c, kiln_build(c->g, KILN_OP_PERMUTE, 1, &dW, 1, &a));
    } else {
        dW = grouped_mm(c, dY, cols, 0, 1, k->G);
    }
    int64_t s[4] = {k->Co, k->C / k->G, k->kh, k->kw};
    kiln_attr a = kiln_attr_ints("shape", 4, s);
    return kiln_build(c->g, KILN_OP_RESHAPE, 1, &dW, 1, &a); /* fresh: it may take a tag */
}

/* Whether node i goes the GEMM route. */
static bool to_gemm(const kiln_node *n)
{
    if (n->op != KILN_OP_CONV2D && n->op != KILN_OP_CONV_TRANSPOSE2D &&
        n->op != KILN_OP_CONV2D_GRAD_WEIGHT)
        return false;
    int64_t G = kiln_attr_get_int(n, "groups");
    return G >= 1 && G <= MAX_GROUPS;
}

/* ---- one pass over the graph (as passes/simplify.c rebuilds) ---- */

static kiln_status rebuild(ctx *c, int32_t i, int32_t *in)
{
    kiln_graph *g = c->g;
    kiln_node old = g->nodes[i]; /* a shallow copy: g->nodes moves as nodes are added */
    kiln_attr attrs[KILN_MAX_ATTRS];
    memcpy(attrs, old.attrs, sizeof attrs);
    g->cur_loc = old.loc;
    if (old.op == KILN_OP_INPUT) {
        int32_t id;
        kiln_status st = kiln_rebuild_copy_leaf(g, &old, i, &id);
        if (st) return st;
        c->holder[i] = id;
        c->remap[i] = id;
        return KILN_OK;
    }
    for (int j = 0; j < old.ninputs; j++) in[j] = c->remap[old.inputs[j]];
    kiln_value r;
    if (to_gemm(&old)) {
        kiln_conv_geom k;
        kiln_conv_geom_of(g, &g->nodes[i], &k);
        if (old.op == KILN_OP_CONV2D) r = lower_conv2d(c, &k, in, old.ninputs);
        else if (old.op == KILN_OP_CONV_TRANSPOSE2D) r = lower_transpose(c, &k, in, old.ninputs);
        else r = lower_grad_weight(c, &k, in);
        /* r is a fresh computed node: it can take the tag */
    } else {
        r = kiln_build(g, old.op, old.ninputs, in, old.nattrs, attrs);
        /* a copy of what a replacement already built (dy seen channel-major
         * for the bias gradient) reads that one */
        if (!kiln_rebuild_tagged(&old) && old.op != KILN_OP_ASSIGN && old.op != KILN_OP_CONST) r = shared(c, r);
    }
    if (r < 0) return (kiln_status)r;
    if (kiln_rebuild_tagged(&old)) {
        kiln_rebuild_move_tag(g, &old, i, r);
        c->holder[i] = r;
    }
    c->remap[i] = r;
    return KILN_OK;
}

static void undo(ctx *c) { kiln_rebuild_undo(c->g, c->n, c->holder); }

static kiln_status sweep(ctx *c) { return kiln_rebuild_sweep(c->g, c->n); }

kiln_status kiln_pass_conv_lower(kiln_graph *g)
{
    if (!g) return KILN_ERR_INVALID;
    int32_t n = g->nnodes, maxin = 1;
    bool any = false;
    for (int32_t i = 0; i < n; i++) {
        any |= to_gemm(&g->nodes[i]);
        if (g->nodes[i].ninputs > maxin) maxin = g->nodes[i].ninputs;
    }
    if (!any) return KILN_OK;
    ctx c = {.g = g, .n = n, .mark = n};
    c.remap = malloc((size_t)n * sizeof *c.remap);
    c.holder = malloc((size_t)n * sizeof *c.holder);
    int32_t *in = malloc((size_t)maxin * sizeof *in);
    kiln_status st = KILN_OK;
    if (!c.remap || !c.holder || !in) {
        st = kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < n; i++) c.holder[i] = -1;
    kiln_loc loc = g->cur_loc;
    for (int32_t i = 0; i < n && !st; i++) st = rebuild(&c, i, in);
    g->cur_loc = loc;
    if (st) undo(&c);
    else st = sweep(&c);
out:
    free(c.remap);
    free(c.holder);
    free(in);
    return st;
}
