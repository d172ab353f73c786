/* codegen/lower_group.c — lowering of fused groups (passes/fuse.h) into
 * kernels.
 *
 * Expects: a fusion plan of g; every node a group reads is a leaf, an alias,
 * a stored member of an earlier group, a member of the group, or inlined.
 * Guarantees: one kernel per plan kernel computing what its groups' nodes
 * compute in node order, storing exactly the stored members (an assign into
 * its destination).
 *
 * How a group becomes loops:
 *  - an elementwise group: one loop per axis of its shape (the outermost
 *    parallel); each stored member's value at the element, computed by the
 *    inliner, goes into a local, then all of them are stored (so a store
 *    never changes what a later value of the same element reads: an assign
 *    to a parameter happens after every read of its old value);
 *  - a rank-2 f32 matmul: a GEMM statement summing into gemm_out, its tail
 *    in the epilogue at (i, j), the matmul's value read back from C;
 *  - any other anchor: the op's own lowering rule, reading inlined inputs
 *    through virtual buffers (kernel.h: the inliner computes them at the
 *    element the rule asks for) and, when the group has a tail, storing into
 *    a virtual output whose store applies the tail.
 * The inliner (value_at) computes a node at given coordinates: pointwise
 * ops by their scalar rules, views by an index remap, one_hot by a compare,
 * reductions by a loop emitted where they are read; it remembers what it
 * computed at the same coordinates in the group (one computation per
 * element). Scalars a group reads through inlined nodes are computed once,
 * into locals, before the group's loops.
 */
#include "codegen/lower_group.h"
#include "ir/conv.h"
#include "ir/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct memo {
    int32_t node, n;
    int32_t coords[KILN_MAX_RANK];
    int32_t value;
} memo;

typedef struct gctx {
    const kiln_graph *g;
    const kiln_fuse_plan *f;
    int32_t gi;
    bool real; /* every buffer real (while storing) */
    memo *m;
    int32_t nm, cap;
} gctx;

static const kiln_fgroup *cur(const gctx *c) { return &c->f->groups[c->gi]; }

static bool gemm_anchor(const gctx *c)
{
    const kiln_fgroup *gr = cur(c);
    return !gr->elementwise && kiln_matmul_is_gemm(c->g, gr->anchor);
}

static bool is_virtual(void *ctx, int32_t node)
{
    gctx *c = ctx;
    if (c->real) return false;
    if (c->f->fate[node] == KILN_FATE_INLINE) return true;
    if (c->f->group[node] != c->gi) return false;
    const kiln_fgroup *gr = cur(c);
    if (node != gr->anchor || gr->elementwise) return true;
    return gr->nmembers > 1 && !gemm_anchor(c);
}

/* Two coordinate expressions name the same index: the same expression, or
 * equal integer constants (a size-1 axis reads index 0 wherever it comes
 * from). */
static bool same_coord(const kiln_kernel *k, int32_t a, int32_t b)
{
    if (a == b) return true;
    if (a < 0 || b < 0 || a >= k->nexprs || b >= k->nexprs) return false;
    const kiln_kexpr *x = &k->exprs[a], *y = &k->exprs[b];
    return x->op == KX_CONST && y->op == KX_CONST && x->i == y->i &&
           !kiln_dtype_is_float((kiln_dtype)x->dtype) && !kiln_dtype_is_float((kiln_dtype)y->dtype);
}

static int32_t memo_find(const gctx *c, const kiln_kernel *k, int32_t node, int n,
                         const int32_t *coords, bool scalar)
{
    for (int32_t i = c->nm - 1; i >= 0; i--) {
        const memo *m = &c->m[i];
        if (m->node != node) continue;
        if (scalar) return m->value;
        if (m->n != n) continue;
        bool same = true;
        for (int d = 0; d < n && same; d++) same = same_coord(k, m->coords[d], coords[d]);
        if (same) return m->value;
    }
    return -1;
}

static void memo_put(kiln_kb *kb, gctx *c, int32_t node, int n, const int32_t *coords, int32_t v)
{
    if (v < 0) return;
    if (c->nm == c->cap) {
        int32_t cap = c->cap ? 2 * c->cap : 64;
        memo *nm = realloc(c->m, (size_t)cap * sizeof *nm);
        if (!nm) {
            kiln_kb_fail(kb, KILN_ERR_NOMEM, "out of memory");
            return;
        }
        c->m = nm;
        c->cap = cap;
    }
    memo *m = &c->m[c->nm++];
    memset(m, 0, sizeof *m);
    m->node = node;
    m->n = n;
    memcpy(m->coords, coords, (size_t)n * sizeof *coords);
    m->value = v;
}

static int32_t value_at(kiln_kb *kb, void *ctx, int32_t node, const int32_t *coords);

/* A real buffer of node (its own storage, or its destination's for assign). */
static int32_t real_buf(kiln_kb *kb, gctx *c, int32_t node)
{
    bool was = c->real;
    c->real = true;
    int32_t b = kiln_kb_buf(kb, node);
    c->real = was;
    return b;
}

/* Coordinates of input x (broadcast to node's shape) from node's. */
static void bcast_coords(kiln_kb *kb, const kiln_node *x, const kiln_node *n, const int32_t *coords,
                         int32_t *out)
{
    for (int d = 0; d < x->rank; d++)
        out[d] = x->shape[d] == 1 ? kiln_kx_int(kb, 0) : coords[d + n->rank - x->rank];
}

/* Coordinates in shape `to` of the element whose row-major position in
 * shape `from` is at coords (a reshape). */
static void remap_coords(kiln_kb *kb, const kiln_node *from, const int32_t *coords,
                         const kiln_node *to, int32_t *out)
{
    /* same sizes once size-1 axes are dropped: a direct map */
    int64_t a[KILN_MAX_RANK], b[KILN_MAX_RANK];
    int32_t ca[KILN_MAX_RANK];
    int na = 0, nb = 0;
    for (int d = 0; d < from->rank; d++)
        if (from->shape[d] != 1) a[na] = from->shape[d], ca[na++] = coords[d];
    for (int d = 0; d < to->rank; d++)
        if (to->shape[d] != 1) b[nb++] = to->shape[d];
    bool direct = na == nb;
    for (int d = 0; d < na && direct; d++) direct = a[d] == b[d];
    if (direct) {
        int k = 0;
        for (int d = 0; d < to->rank; d++)
            out[d] = to->shape[d] == 1 ? kiln_kx_int(kb, 0) : ca[k++];
        return;
    }
    int32_t flat = -1;
    int64_t stride = 1;
    for (int d = from->rank - 1; d >= 0; d--) {
        if (from->shape[d] != 1) {
            int32_t t = stride == 1 ? coords[d]
                                    : kiln_kx_bin(kb, KX_MUL, coords[d], kiln_kx_int(kb, stride));
            flat = flat < 0 ? t : kiln_kx_bin(kb, KX_ADD, t, flat);
        }
        stride *= from->shape[d];
    }
    if (flat < 0) flat = kiln_kx_int(kb, 0);
    stride = 1;
    for (int d = to->rank - 1; d >= 0; d--) {
        int32_t q = stride == 1 ? flat : kiln_kx_bin(kb, KX_DIV, flat, kiln_kx_int(kb, stride));
        out[d] = d == 0 ? q : kiln_kx_bin(kb, KX_MOD, q, kiln_kx_int(kb, to->shape[d]));
        stride *= to->shape[d];
    }
}

/* A reduction computed at its output coordinates: a loop nest over the
 * reduced axes emitted here, into a local (the reference's order and
 * accumulation types, as codegen/lower_reduce.c). */
static int32_t inline_reduction(kiln_kb *kb, gctx *c, int32_t node, const int32_t *coords)
{
    const kiln_graph *g = c->g;
    const kiln_node *n = &g->nodes[node];
    int32_t xid = n->inputs[0];
    const kiln_node *x = &g->nodes[xid];
    bool red[KILN_MAX_RANK] = {false};
    if (n->op == KILN_OP_ARGMAX) {
        red[kiln_attr_get_int(n, "axis")] = true;
    } else {
        const kiln_attr *a = kiln_node_attr(n, "axes");
        int na = a ? a->n : 0;
        for (int d = 0; d < x->rank; d++) red[d] = na == 0;
        for (int k = 0; k < na; k++)
            if (a->i[k] >= 0 && a->i[k] < x->rank) red[a->i[k]] = true;
    }
    bool keep = kiln_attr_get_int(n, "keepdims") != 0;
    int32_t idx[KILN_MAX_RANK];
    int64_t count = 1;
    for (int d = 0, o = 0; d < x->rank; d++) {
        if (!red[d]) idx[d] = coords[o++];
        else {
            idx[d] = kiln_kx_int(kb, 0);
            count *= x->shape[d];
            if (keep) o++;
        }
    }
    kiln_dtype xt = (kiln_dtype)x->dtype;
    bool isf = kiln_dtype_is_float(xt);
    kiln_kb_unvector(kb);
    int32_t t, best = -1;
    if (n->op == KILN_OP_REDUCE_SUM || n->op == KILN_OP_REDUCE_MEAN) {
        t = kiln_kb_local(kb, isf ? KILN_F64 : KILN_I64);
        kiln_kb_set(kb, t, kiln_kx_float(kb, 0, isf ? KILN_F64 : KILN_I64));
    } else {
        t = kiln_kb_local(kb, xt);
        kiln_kb_set(kb, t, value_at(kb, c, xid, idx)); /* the first reduced element */
        if (n->op == KILN_OP_ARGMAX) {
            best = kiln_kb_local(kb, KILN_I64);
            kiln_kb_set(kb, best, kiln_kx_int(kb, 0));
        }
    }
    int opened = 0, axis = -1;
    for (int d = 0; d < x->rank; d++)
        if (red[d]) {
            idx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, x->shape[d]));
            axis = d;
            opened++;
        }
    int32_t v = value_at(kb, c, xid, idx);
    int32_t tl = kiln_kx_local(kb, t);
    switch (n->op) {
    case KILN_OP_REDUCE_SUM:
    case KILN_OP_REDUCE_MEAN:
        kiln_kb_set(kb, t, kiln_kx_bin(kb, KX_ADD, tl, kiln_kx_cast(kb, v, isf ? KILN_F64 : KILN_I64)));
        break;
    case KILN_OP_REDUCE_MAX: kiln_kb_set(kb, t, kiln_kx_bin(kb, KX_MAX, tl, v)); break;
    default: { /* argmax: lower_reduce.c's update */
        int32_t take = kiln_kx_bin(kb, KX_GT, v, tl);
        if (isf)
            take = kiln_kx_bin(kb, KX_AND, kiln_kx_un(kb, KX_NOT, kiln_kx_un(kb, KX_ISNAN, tl)),
                               kiln_kx_bin(kb, KX_OR, kiln_kx_un(kb, KX_ISNAN, v), take));
        kiln_kb_set(kb, best, kiln_kx_select(kb, take, idx[axis], kiln_kx_local(kb, best)));
        kiln_kb_set(kb, t, kiln_kx_select(kb, take, v, tl));
    }
    }
    while (opened-- > 0) kiln_kb_end(kb);
    int32_t res = kiln_kx_local(kb, n->op == KILN_OP_ARGMAX ? best : t);
    if (n->op == KILN_OP_REDUCE_MEAN) res = kiln_kx_bin(kb, KX_DIV, res, kiln_kx_float(kb, (double)count, KILN_F64));
    return kiln_kx_cast(kb, res, (kiln_dtype)n->dtype);
}

/* Node `node` at coords (one per axis of node). */
static int32_t value_at(kiln_kb *kb, void *ctx, int32_t node, const int32_t *coords)
{
    gctx *c = ctx;
    const kiln_graph *g = c->g;
    const kiln_node *n = &g->nodes[node];
    bool scalar = kiln_node_numel(n) == 1;
    int32_t v = memo_find(c, kiln_kb_kernel(kb), node, n->rank, coords, scalar);
    if (v >= 0) return v;
    if (!is_virtual(c, node)) {
        int32_t b = real_buf(kb, c, node);
        return kiln_kx_load(kb, b, kiln_kx_index(kb, b, n->rank, coords));
    }
    int32_t in[64], ic[KILN_MAX_RANK];
    if (n->ninputs > 64) return kiln_kb_fail(kb, KILN_ERR_UNSUPPORTED, "too many inputs");
    const kiln_op_info *info = &kiln_ops[n->op];
    if (info->fusion == KILN_FUSE_ELEMENTWISE || info->fusion == KILN_FUSE_BROADCAST) {
        for (int j = 0; j < n->ninputs; j++) {
            const kiln_node *x = &g->nodes[n->inputs[j]];
            bcast_coords(kb, x, n, coords, ic);
            in[j] = value_at(kb, c, n->inputs[j], ic);
        }
        v = kiln_kx_cast(kb, info->scalar(kb, n, in), (kiln_dtype)n->dtype);
    } else if (n->op == KILN_OP_RESHAPE || n->op == KILN_OP_FLATTEN) {
        const kiln_node *x = &g->nodes[n->inputs[0]];
        remap_coords(kb, n, coords, x, ic);
        v = value_at(kb, c, n->inputs[0], ic);
    } else if (n->op == KILN_OP_BROADCAST_TO) {
        bcast_coords(kb, &g->nodes[n->inputs[0]], n, coords, ic);
        v = value_at(kb, c, n->inputs[0], ic);
    } else if (n->op == KILN_OP_ONE_HOT) {
        int64_t axis = kiln_attr_get_int(n, "axis");
        if (axis < 0) axis += n->rank;
        for (int d = 0, o = 0; d < n->rank; d++)
            if (d != axis) ic[o++] = coords[d];
        int32_t lab = kiln_kx_cast(kb, value_at(kb, c, n->inputs[0], ic), KILN_I64);
        kiln_dtype t = (kiln_dtype)n->dtype;
        v = kiln_kx_select(kb, kiln_kx_bin(kb, KX_EQ, lab, coords[axis]), kiln_kx_float(kb, 1, t),
                           kiln_kx_float(kb, 0, t));
    } else if (n->op == KILN_OP_REDUCE_SUM || n->op == KILN_OP_REDUCE_MEAN ||
               n->op == KILN_OP_REDUCE_MAX || n->op == KILN_OP_ARGMAX) {
        v = inline_reduction(kb, c, node, coords);
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "op '%s' cannot be computed inside another kernel", info->name);
        return kiln_kb_fail(kb, KILN_ERR_INTERNAL, msg);
    }
    memo_put(kb, c, node, n->rank, coords, v);
    return v;
}

/* Stores the group's stored members at coords (the anchor's value there
 * already known): values into locals first, then the stores. */
static void store_members(kiln_kb *kb, gctx *c, const int32_t *coords, bool skip_anchor)
{
    const kiln_fgroup *gr = cur(c);
    const kiln_graph *g = c->g;
    int32_t *loc = malloc((size_t)gr->nmembers * sizeof *loc);
    if (!loc) {
        kiln_kb_fail(kb, KILN_ERR_NOMEM, "out of memory");
        return;
    }
    for (int32_t k = 0; k < gr->nmembers; k++) {
        int32_t m = gr->members[k];
        loc[k] = -1;
        if (!c->f->stored[m] || (skip_anchor && m == gr->anchor)) continue;
        const kiln_node *n = &g->nodes[m];
        int32_t v = value_at(kb, c, m, coords);
        loc[k] = kiln_kb_local(kb, (kiln_dtype)n->dtype);
        kiln_kb_set(kb, loc[k], v);
        /* later values of this element read the local */
        memo_put(kb, c, m, n->rank, coords, kiln_kx_local(kb, loc[k]));
    }
    for (int32_t k = 0; k < gr->nmembers; k++) {
        if (loc[k] < 0) continue;
        int32_t m = gr->members[k];
        const kiln_node *n = &g->nodes[m];
        int32_t dst = n->op == KILN_OP_ASSIGN ? n->inputs[0] : m;
        int32_t b = real_buf(kb, c, dst);
        kiln_kb_store(kb, b, kiln_kx_index(kb, b, n->rank, coords), kiln_kx_local(kb, loc[k]));
    }
    free(loc);
}

/* The anchor's store, intercepted: its value at coords, then the tail. */
static void store_at(kiln_kb *kb, void *ctx, int32_t node, const int32_t *coords, int32_t value)
{
    gctx *c = ctx;
    const kiln_node *n = &c->g->nodes[node];
    if (node != cur(c)->anchor) {
        kiln_kb_fail(kb, KILN_ERR_INTERNAL, "a store to a value computed elsewhere");
        return;
    }
    memo_put(kb, c, node, n->rank, coords, kiln_kx_cast(kb, value, (kiln_dtype)n->dtype));
    store_members(kb, c, coords, false);
}

/* Scalars read through inlined nodes, computed once before the group's
 * loops (unless they read a member of the group). */
static bool reads_group(const gctx *c, int32_t x, int depth)
{
    const kiln_node *n = &c->g->nodes[x];
    if (depth > 64) return true;
    for (int j = 0; j < n->ninputs; j++) {
        int32_t s = n->inputs[j];
        if (c->f->group[s] == c->gi) return true;
        if (c->f->fate[s] == KILN_FATE_INLINE && reads_group(c, s, depth + 1)) return true;
    }
    return false;
}

static void collect_scalars(const gctx *c, int32_t x, uint8_t *seen, int depth)
{
    const kiln_node *n = &c->g->nodes[x];
    if (depth > 256) return;
    for (int j = 0; j < n->ninputs; j++) {
        int32_t s = n->inputs[j];
        if (c->f->fate[s] != KILN_FATE_INLINE || seen[s]) continue;
        seen[s] = 1;
        collect_scalars(c, s, seen, depth + 1);
    }
}

static void prelude(kiln_kb *kb, gctx *c)
{
    const kiln_fgroup *gr = cur(c);
    const kiln_graph *g = c->g;
    uint8_t *seen = calloc((size_t)g->nnodes, 1);
    if (!seen) {
        kiln_kb_fail(kb, KILN_ERR_NOMEM, "out of memory");
        return;
    }
    for (int32_t k = 0; k < gr->nmembers; k++) collect_scalars(c, gr->members[k], seen, 0);
    int32_t zero[KILN_MAX_RANK];
    for (int32_t x = 0; x < g->nnodes; x++) {
        if (!seen[x] || kiln_node_numel(&g->nodes[x]) != 1 || reads_group(c, x, 0)) continue;
        const kiln_node *n = &g->nodes[x];
        for (int d = 0; d < n->rank; d++) zero[d] = kiln_kx_int(kb, 0);
        int32_t v = value_at(kb, c, x, zero);
        int32_t l = kiln_kb_local(kb, (kiln_dtype)n->dtype);
        kiln_kb_set(kb, l, v);
        memo_put(kb, c, x, n->rank, zero, kiln_kx_local(kb, l));
    }
    free(seen);
}

static void lower_elementwise(kiln_kb *kb, gctx *c)
{
    const kiln_node *n = &c->g->nodes[cur(c)->anchor];
    int32_t coords[KILN_MAX_RANK];
    /* the outermost loop's iterations write their own elements (parallel);
     * the innermost's are SIMD lanes (unless an inlined reduction puts a
     * loop inside it: kiln_kb_unvector) */
    for (int d = 0; d < n->rank; d++) {
        coords[d] = kiln_kx_var(kb, kiln_kb_loop(kb, n->shape[d]));
        kiln_kb_hint(kb, d == n->rank - 1, d == 0);
    }
    store_members(kb, c, coords, false);
    for (int d = 0; d < n->rank; d++) kiln_kb_end(kb);
}


/* The implicit im2col of node `im2col` (its rows from row0): the image's
 * buffer in *buf, the geometry returned. */
static kiln_kim2col image_of(kiln_kb *kb, gctx *c, int32_t im2col, int64_t row0, int32_t *buf)
{
    const kiln_graph *g = c->g;
    const kiln_node *im = &g->nodes[im2col];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, im, &k);
    *buf = real_buf(kb, c, im->inputs[0]);
    return (kiln_kim2col){.on = 1, .N = k.N, .C = k.C, .H = k.H, .W = k.W, .kh = k.kh,
                          .kw = k.kw, .sh = k.sh, .sw = k.sw, .ph = k.ph, .pw = k.pw,
                          .dh = k.dh, .dw = k.dw, .OH = im->shape[2], .OW = im->shape[3],
                          .r0 = row0};
}

static void lower_gemm(kiln_kb *kb, gctx *c)
{
    const kiln_fgroup *gr = cur(c);
    const kiln_graph *g = c->g;
    const kiln_node *n = &g->nodes[gr->anchor];
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    int ta = kiln_attr_get_int(n, "ta") != 0, tb = kiln_attr_get_int(n, "tb") != 0;
    kiln_kgemm d = {.a = gr->a_im2col >= 0 ? -1 : real_buf(kb, c, n->inputs[0]),
                    .b = gr->b_im2col >= 0 ? -1 : real_buf(kb, c, n->inputs[1]),
                    .c = real_buf(kb, c, gr->gemm_out),
                    .M = n->shape[0],
                    .N = n->shape[1],
                    .K = a->shape[ta ? 0 : 1],
                    .ta = ta,
                    .tb = tb,
                    .lda = a->shape[1],
                    .ldb = b->shape[1],
                    .ldc = n->shape[1]};
    /* implicit im2col (passes/fuse.h): B (or A) packed from the image */
    if (gr->b_im2col >= 0)
        d.bimg = image_of(kb, c, gr->b_im2col, gr->b_row0, &d.b);
    if (gr->a_im2col >= 0)
        d.aimg = image_of(kb, c, gr->a_im2col, gr->a_row0, &d.a);
    kiln_kb_gemm(kb, &d);
    /* a size-1 axis is index 0, as the tail's broadcasting reads it */
    int32_t coords[2] = {d.M == 1 ? kiln_kx_int(kb, 0) : kiln_kx_var(kb, d.var_i),
                         d.N == 1 ? kiln_kx_int(kb, 0) : kiln_kx_var(kb, d.var_j)};
    /* the matmul's value: the sum in C */
    int32_t cv = kiln_kx_load(kb, d.c, kiln_kx_index(kb, d.c, 2, coords));
    memo_put(kb, c, gr->anchor, 2, coords, cv);
    if (gr->nmembers > 1) store_members(kb, c, coords, gr->gemm_out == gr->anchor);
    kiln_kb_end(kb);
}

kiln_status kiln_lower_fused(const kiln_graph *g, const kiln_fuse_plan *f, int32_t kernel,
                             kiln_kernel **out, char *err, size_t errlen)
{
    *out = NULL;
    int32_t first = -1;
    for (int32_t gi = 0; gi < f->ngroups && first < 0; gi++)
        if (f->groups[gi].kernel == kernel) first = gi;
    if (first < 0) {
        snprintf(err, errlen, "no group runs in kernel %d", kernel);
        return KILN_ERR_INTERNAL;
    }
    const kiln_node *an = &g->nodes[f->groups[first].anchor];
    char name[64];
    snprintf(name, sizeof name, "k%d_%s", f->groups[first].anchor, kiln_ops[an->op].name);
    gctx c = {.g = g, .f = f};
    kiln_kb_hooks hooks = {.ctx = &c, .is_virtual = is_virtual, .value_at = value_at,
                           .store_at = store_at};
    kiln_kb *kb = kiln_kb_new(g, f->groups[first].anchor, name, &hooks);
    if (!kb) return KILN_ERR_NOMEM;
    /* the comment: the fused ops and the output types */
    char comment[256] = "", t[96];
    size_t o = 0;
    for (int32_t gi = first; gi < f->ngroups; gi++) {
        const kiln_fgroup *gr = &f->groups[gi];
        if (gr->kernel != kernel) continue;
        c.gi = gi;
        c.nm = 0;
        kiln_kb_set_node(kb, gr->anchor);
        prelude(kb, &c);
        if (gr->elementwise) {
            lower_elementwise(kb, &c);
        } else if (gemm_anchor(&c)) {
            lower_gemm(kb, &c);
        } else {
            kiln_status st = kiln_ops[g->nodes[gr->anchor].op].lower(kb, g, gr->anchor);
            if (st) kiln_kb_fail(kb, st, "the anchor's lowering rule failed");
        }
        for (int32_t k = 0; k < gr->nmembers && o + 1 < sizeof comment; k++) {
            const kiln_node *n = &g->nodes[gr->members[k]];
            o += (size_t)snprintf(comment + o, sizeof comment - o, "%s%s", o ? "+" : "",
                                  kiln_ops[n->op].name);
        }
    }
    if (o + 1 < sizeof comment)
        snprintf(comment + o, sizeof comment - o, " -> %s", kiln_node_type_str(an, t, sizeof t));
    kiln_status st = kiln_kb_finish(kb, out, err, errlen);
    free(c.m);
    if (st) {
        char d[160], msg[512];
        snprintf(msg, sizeof msg, "%s", err);
        snprintf(err, errlen, "lowering %s: %s", kiln_node_desc(g, f->groups[first].anchor, d, sizeof d),
                 msg);
        return st;
    }
    snprintf((*out)->comment, sizeof (*out)->comment, "%s", comment);
    if (an->loc.file) {
        size_t l = strlen((*out)->comment);
        snprintf((*out)->comment + l, sizeof (*out)->comment - l, "  [%s:%d:%d]", an->loc.file,
                 an->loc.line, an->loc.col);
    }
    return KILN_OK;
}
