/* passes/fuse.c — the fusion plan (passes/fuse.h says what it decides).
 *
 * Expects: a verified graph in topological order.
 * Guarantees: every node has a fate; groups in a valid execution order;
 * members of a group that anything outside reads are stored; deterministic.
 *
 * Two sweeps. Backwards, each node's fate: whether it can be computed where
 * it is read (its readers are decided first). Forwards, the groups: each
 * node that needs a kernel either joins a group (as a tail of its anchor or
 * a sibling of an elementwise group) or starts one.
 */
#include "passes/fuse.h"
#include "ir/ops.h"

#include <stdlib.h>
#include <string.h>

#define MAX_CHEAP 8 /* scalar ops an inlined value with several readers may cost */

typedef struct fctx {
    const kiln_graph *g;
    kiln_fuse_plan *f;
    int32_t *bimg;      /* per GEMM matmul: the im2col producing its B, or -1 */
    int64_t *brow0;     /* and B's first row in its columns */
    int32_t *aimg;      /* the same for its A */
    int64_t *arow0;
    int32_t *cons;      /* consumers, CSR */
    int32_t *cons_at;   /* nnodes + 1 */
    uint8_t *forced;    /* a view needs this node stored */
    uint8_t *mark;      /* scratch for walks */
    int32_t *stack;
} fctx;

static bool pointwise(int op)
{
    int k = kiln_ops[op].fusion;
    return k == KILN_FUSE_ELEMENTWISE || k == KILN_FUSE_BROADCAST;
}

static bool is_view(int op) { return op == KILN_OP_RESHAPE || op == KILN_OP_FLATTEN; }

static bool is_inline_reduction(int op)
{
    return op == KILN_OP_REDUCE_SUM || op == KILN_OP_REDUCE_MEAN || op == KILN_OP_REDUCE_MAX ||
           op == KILN_OP_ARGMAX;
}

/* Ops that can be computed at a given output element by the inliner. */
static bool inlinable(int op)
{
    return (pointwise(op) && op != KILN_OP_ASSIGN) || is_view(op) ||
           op == KILN_OP_BROADCAST_TO || op == KILN_OP_ONE_HOT || is_inline_reduction(op);
}

/* Readers that read each element of an input once per output element they
 * compute (so an inlined input is not recomputed over and over). */
static bool reads_once(int op)
{
    if (pointwise(op) || is_view(op) || is_inline_reduction(op)) return true;
    return op == KILN_OP_ONE_HOT || op == KILN_OP_PERMUTE || op == KILN_OP_SLICE ||
           op == KILN_OP_UNSLICE || op == KILN_OP_CONCAT;
}

static bool expensive(int op)
{
    return op == KILN_OP_EXP || op == KILN_OP_LOG || op == KILN_OP_SQRT || op == KILN_OP_TANH ||
           op == KILN_OP_POW || op == KILN_OP_SIGMOID || op == KILN_OP_GELU ||
           op == KILN_OP_GELU_GRAD || is_inline_reduction(op);
}

static bool same_shape(const kiln_node *a, const kiln_node *b)
{
    if (a->rank != b->rank) return false;
    for (int d = 0; d < a->rank; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

/* The scalar ops of an inlined value's expression, stopping at stored
 * values; a large number when it is not cheap. */
static int cost(fctx *c, int32_t x, int depth)
{
    const kiln_node *n = &c->g->nodes[x];
    if (c->f->fate[x] != KILN_FATE_INLINE) return 0;
    if (expensive(n->op) || depth > 16) return 1000;
    int s = 1;
    for (int j = 0; j < n->ninputs && s < 1000; j++) s += cost(c, n->inputs[j], depth + 1);
    return s;
}

bool kiln_matmul_is_gemm(const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    if (n->op != KILN_OP_MATMUL || n->dtype != KILN_F32) return false;
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    return a->rank == 2 && b->rank == 2 && a->dtype == KILN_F32 && b->dtype == KILN_F32;
}

/* The node's storage can be shared by a view: a computed value or a leaf
 * fed per batch (never a parameter or state, which assigns rewrite). */
static bool aliasable_leaf(const kiln_node *n)
{
    return n->op == KILN_OP_INPUT &&
           (n->role == KILN_ROLE_INPUT || n->role == KILN_ROLE_TARGET);
}

static void decide_fates(fctx *c, bool off)
{
    const kiln_graph *g = c->g;
    kiln_fuse_plan *f = c->f;
    for (int32_t x = g->nnodes - 1; x >= 0; x--) {
        const kiln_node *n = &g->nodes[x];
        if (kiln_node_is_leaf(n)) {
            f->fate[x] = KILN_FATE_LEAF;
            continue;
        }
        int32_t nc = c->cons_at[x + 1] - c->cons_at[x];
        bool store = off || n->role != KILN_ROLE_NONE || n->op == KILN_OP_ASSIGN || nc == 0 ||
                     c->forced[x] || !inlinable(n->op);
        int64_t numel = kiln_node_numel(n);
        for (int32_t k = c->cons_at[x]; k < c->cons_at[x + 1] && !store; k++) {
            const kiln_node *r = &g->nodes[c->cons[k]];
            if (!reads_once(r->op)) store = true;
            /* an assign's destination is written, not computed */
            if (r->op == KILN_OP_ASSIGN && r->inputs[0] == x) store = true;
            /* a reduction inlined into a reader that broadcasts it would run
             * once per element of that reader */
            if (is_inline_reduction(n->op) && numel != 1 &&
                (nc > 1 || kiln_node_numel(r) != numel))
                store = true;
        }
        if (!store && is_inline_reduction(n->op) && numel != 1 && nc > 1) store = true;
        /* several readers, or a reader that broadcasts it: inlining
         * recomputes it; decided once its inputs' fates are known */
        if (!store && !is_view(n->op) && numel != 1 && n->op != KILN_OP_ONE_HOT) {
            bool multi = nc > 1;
            for (int32_t k = c->cons_at[x]; k < c->cons_at[x + 1]; k++)
                if (kiln_node_numel(&g->nodes[c->cons[k]]) > numel) multi = true;
            if (multi) c->mark[x] = 1;
        }
        if (is_view(n->op) && store && !off) {
            /* a stored view shares its source's storage */
            const kiln_node *src = &g->nodes[n->inputs[0]];
            if (n->role == KILN_ROLE_NONE && (!kiln_node_is_leaf(src) || aliasable_leaf(src))) {
                f->fate[x] = KILN_FATE_ALIAS;
                if (!kiln_node_is_leaf(src)) c->forced[n->inputs[0]] = 1;
                continue;
            }
        }
        f->fate[x] = store ? KILN_FATE_GROUP : KILN_FATE_INLINE;
    }
    /* recomputing an inlined value for several reads must be cheap */
    for (int32_t x = 0; x < g->nnodes; x++)
        if (c->mark[x] && f->fate[x] == KILN_FATE_INLINE && cost(c, x, 0) > MAX_CHEAP)
            f->fate[x] = KILN_FATE_GROUP;
    /* resolve alias chains to their stored source */
    for (int32_t x = 0; x < g->nnodes; x++) {
        if (f->fate[x] != KILN_FATE_ALIAS) continue;
        int32_t s = g->nodes[x].inputs[0];
        f->alias_of[x] = f->fate[s] == KILN_FATE_ALIAS ? f->alias_of[s] : s;
    }
}

/* ---- implicit im2col ---- */

/* The im2col node whose column matrix value v is: reshape(im2col, [C*kh*kw,
 * N*OH*OW]) or a slice of its rows (*row0 the first); -1 when not. */
static int32_t cols_of(const kiln_graph *g, int32_t v, int64_t *row0)
{
    const kiln_node *n = &g->nodes[v];
    *row0 = 0;
    if (n->op == KILN_OP_SLICE) {
        if (n->rank != 2 || kiln_attr_get_int(n, "axis") != 0 || kiln_attr_get_int(n, "step") != 1 ||
            n->role != KILN_ROLE_NONE)
            return -1;
        *row0 = kiln_attr_get_int(n, "start");
        n = &g->nodes[n->inputs[0]];
    }
    if (n->op != KILN_OP_RESHAPE || n->rank != 2 || n->role != KILN_ROLE_NONE) return -1;
    int32_t s = n->inputs[0];
    const kiln_node *im = &g->nodes[s];
    if (im->op != KILN_OP_IM2COL || im->dtype != KILN_F32 || im->rank != 4 ||
        im->role != KILN_ROLE_NONE)
        return -1;
    const kiln_node *xn = &g->nodes[im->inputs[0]];
    if (xn->dtype != KILN_F32 || xn->rank != 4) return -1;
    if (n->shape[0] != im->shape[0] || n->shape[1] != im->shape[1] * im->shape[2] * im->shape[3])
        return -1;
    return s;
}

/* The im2col node whose column matrix GEMM x reads as B (not transposed),
 * or -1. */
static int32_t im2col_of_b(const kiln_graph *g, int32_t x, int64_t *row0)
{
    const kiln_node *m = &g->nodes[x];
    *row0 = 0;
    /* B = cols only: packing cols^T from the image (gemm.h can) measured
     * 2.5x slower for the weight gradient than cols stored and read in
     * place; that GEMM reads cols as A instead (im2col_of_a) */
    if (m->inputs[0] == m->inputs[1] || kiln_attr_get_int(m, "tb")) return -1;
    const kiln_node *n = &g->nodes[m->inputs[1]];
    /* a slice of rows of A's own matrix: the operands share a source */
    if (n->op == KILN_OP_SLICE && m->inputs[0] == n->inputs[0]) return -1;
    return cols_of(g, m->inputs[1], row0);
}

/* The im2col node whose column matrix GEMM x reads as A (not transposed,
 * B not read from an image), or -1. */
static int32_t im2col_of_a(const kiln_graph *g, int32_t x, int64_t *row0)
{
    const kiln_node *m = &g->nodes[x];
    *row0 = 0;
    if (m->inputs[0] == m->inputs[1] || kiln_attr_get_int(m, "ta")) return -1;
    const kiln_node *n = &g->nodes[m->inputs[0]];
    if (n->op == KILN_OP_SLICE && m->inputs[1] == n->inputs[0]) return -1;
    return cols_of(g, m->inputs[0], row0);
}

/* Marks the GEMMs that pack B from an image, and makes the im2col, reshape
 * and slice nodes that only such GEMMs read INLINE (no kernel, no storage). */
static void implicit_im2col(fctx *c)
{
    const kiln_graph *g = c->g;
    kiln_fuse_plan *f = c->f;
    for (int32_t x = 0; x < g->nnodes; x++) {
        c->bimg[x] = c->aimg[x] = -1;
        if (f->fate[x] == KILN_FATE_GROUP && kiln_matmul_is_gemm(g, x)) {
            c->bimg[x] = im2col_of_b(g, x, &c->brow0[x]);
            if (c->bimg[x] < 0) c->aimg[x] = im2col_of_a(g, x, &c->arow0[x]);
        }
    }
    /* consumers come after their producers: slices, then reshapes, then im2col */
    for (int32_t y = g->nnodes - 1; y >= 0; y--) {
        const kiln_node *n = &g->nodes[y];
        if ((n->op != KILN_OP_SLICE && n->op != KILN_OP_RESHAPE && n->op != KILN_OP_IM2COL) ||
            n->role != KILN_ROLE_NONE || f->fate[y] == KILN_FATE_LEAF)
            continue;
        bool all = c->cons_at[y + 1] > c->cons_at[y];
        for (int32_t k = c->cons_at[y]; k < c->cons_at[y + 1] && all; k++) {
            int32_t r = c->cons[k];
            const kiln_node *rn = &g->nodes[r];
            bool gemm = (c->bimg[r] >= 0 && rn->inputs[1] == y && rn->inputs[0] != y) ||
                        (c->aimg[r] >= 0 && rn->inputs[0] == y && rn->inputs[1] != y);
            bool chain = c->mark[r] == 4; /* a slice or reshape of the chain, made INLINE */
            all = gemm || chain;
        }
        if (!all) continue;
        f->fate[y] = KILN_FATE_INLINE;
        f->alias_of[y] = -1;
        c->mark[y] = 4;
    }
    memset(c->mark, 0, (size_t)g->nnodes);
    /* only where the im2col goes: packing from the image instead of a stored
     * column matrix (a training step's weight gradient reads it as A)
     * measured no faster for the forward GEMM alone */
    for (int32_t x = 0; x < g->nnodes; x++) {
        if (c->bimg[x] >= 0 && f->fate[c->bimg[x]] != KILN_FATE_INLINE) c->bimg[x] = -1;
        if (c->aimg[x] >= 0 && f->fate[c->aimg[x]] != KILN_FATE_INLINE) c->aimg[x] = -1;
    }
}

/* ---- groups ---- */

static kiln_status add_member(kiln_fuse_plan *f, int32_t gi, int32_t x)
{
    kiln_fgroup *gr = &f->groups[gi];
    int32_t *m = realloc(gr->members, (size_t)(gr->nmembers + 1) * sizeof *m);
    if (!m) return KILN_ERR_NOMEM;
    gr->members = m;
    m[gr->nmembers++] = x;
    f->group[x] = gi;
    return KILN_OK;
}

static kiln_status new_group(kiln_fuse_plan *f, int32_t x, bool elementwise)
{
    kiln_fgroup *ng = realloc(f->groups, (size_t)(f->ngroups + 1) * sizeof *ng);
    if (!ng) return KILN_ERR_NOMEM;
    f->groups = ng;
    ng[f->ngroups] = (kiln_fgroup){.anchor = x, .elementwise = elementwise, .gemm_out = -1,
                                   .b_im2col = -1, .a_im2col = -1};
    return add_member(f, f->ngroups++, x);
}

/* Anchors whose single store per output element can take a tail. */
static bool takes_tail(const kiln_graph *g, const kiln_fgroup *gr)
{
    if (gr->elementwise) return true;
    int op = g->nodes[gr->anchor].op;
    if (op == KILN_OP_MATMUL) return kiln_matmul_is_gemm(g, gr->anchor);
    /* permute: a convolution's output back to NCHW (passes/conv_lower.c),
     * its bias and activation applied in the same pass */
    return op == KILN_OP_REDUCE_SUM || op == KILN_OP_REDUCE_MEAN || op == KILN_OP_REDUCE_MAX ||
           op == KILN_OP_SOFTMAX || op == KILN_OP_LOG_SOFTMAX || op == KILN_OP_PERMUTE;
}

/* Walks what x reads through inlined nodes. For each stored value reached:
 * ok when it is a leaf, in a group before gi, or a member of gi reached
 * only through pointwise nodes of x's shape (the same element). Sets
 * *touches when it reaches a member of gi that way; collects the non-scalar
 * stored sources into c->mark (bit 2) for sibling matching. */
static bool sources_ok(fctx *c, int32_t x, int32_t gi, bool same_elem, const kiln_node *shape,
                       bool *touches)
{
    const kiln_graph *g = c->g;
    const kiln_fuse_plan *f = c->f;
    const kiln_node *n = &g->nodes[x];
    for (int j = 0; j < n->ninputs; j++) {
        int32_t s = n->inputs[j];
        if (f->fate[s] == KILN_FATE_ALIAS) s = f->alias_of[s];
        const kiln_node *sn = &g->nodes[s];
        if (f->fate[s] == KILN_FATE_INLINE) {
            bool same = same_elem && pointwise(sn->op) && same_shape(sn, shape);
            if (!sources_ok(c, s, gi, same, shape, touches)) return false;
            continue;
        }
        if (kiln_node_numel(sn) != 1) c->mark[s] |= 2;
        if (f->fate[s] == KILN_FATE_LEAF) continue;
        int32_t sg = f->group[s];
        if (sg < 0) return false; /* not yet computed: a later node */
        if (sg == gi) {
            if (!same_elem || !same_shape(sn, shape)) return false;
            *touches = true;
        } else if (sg > gi) {
            return false;
        }
    }
    return true;
}

/* Every reader of `dest` before the assign x runs no later than group gi:
 * in an earlier group, or in gi itself (inlined readers: all their readers). */
static bool old_value_readers_ok(fctx *c, int32_t dest, int32_t x, int32_t gi, int depth)
{
    const kiln_fuse_plan *f = c->f;
    if (depth > 32) return false;
    for (int32_t k = c->cons_at[dest]; k < c->cons_at[dest + 1]; k++) {
        int32_t r = c->cons[k];
        if (r == x || r > x) continue;
        if (f->fate[r] == KILN_FATE_INLINE || f->fate[r] == KILN_FATE_ALIAS) {
            if (!old_value_readers_ok(c, r, x, gi, depth + 1)) return false;
            continue;
        }
        if (f->group[r] < 0 || f->group[r] > gi) return false;
    }
    return true;
}

static bool can_join(fctx *c, int32_t x, int32_t gi, bool sibling)
{
    const kiln_graph *g = c->g;
    const kiln_fgroup *gr = &c->f->groups[gi];
    const kiln_node *n = &g->nodes[x], *an = &g->nodes[gr->anchor];
    if (!takes_tail(g, gr) || !same_shape(n, an)) return false;
    memset(c->mark, 0, (size_t)g->nnodes);
    bool touches = false;
    if (!sources_ok(c, x, gi, true, an, &touches)) return false;
    if (!sibling && !touches) return false;
    if (sibling) {
        /* shares a non-scalar stored source with a member */
        bool shared = false;
        uint8_t *mine = malloc((size_t)g->nnodes);
        if (!mine) return false;
        memcpy(mine, c->mark, (size_t)g->nnodes);
        for (int32_t m = 0; m < gr->nmembers && !shared; m++) {
            memset(c->mark, 0, (size_t)g->nnodes);
            bool t2 = false;
            sources_ok(c, gr->members[m], gi, true, an, &t2);
            for (int32_t s = 0; s < g->nnodes && !shared; s++)
                if ((mine[s] & 2) && (c->mark[s] & 2)) shared = true;
        }
        free(mine);
        if (!shared && !touches) return false;
    }
    if (n->op == KILN_OP_ASSIGN) {
        int32_t dest = n->inputs[0];
        if (!old_value_readers_ok(c, dest, x, gi, 0)) return false;
        /* the anchor must not read the destination at other elements */
        if (!gr->elementwise)
            for (int j = 0; j < an->ninputs; j++)
                if (an->inputs[j] == dest) return false;
    }
    return true;
}

static kiln_status form_groups(fctx *c, bool off)
{
    const kiln_graph *g = c->g;
    kiln_fuse_plan *f = c->f;
    for (int32_t x = 0; x < g->nnodes; x++) {
        if (f->fate[x] != KILN_FATE_GROUP) continue;
        const kiln_node *n = &g->nodes[x];
        kiln_status st;
        if (!off && pointwise(n->op)) {
            int32_t join = -1;
            /* a tail: the latest group whose member it reads at the same element */
            for (int32_t gi = f->ngroups - 1; gi >= 0 && join < 0; gi--)
                if (can_join(c, x, gi, false)) join = gi;
            /* a sibling: the latest elementwise group of its shape sharing a source */
            for (int32_t gi = f->ngroups - 1; gi >= 0 && join < 0; gi--)
                if (f->groups[gi].elementwise && can_join(c, x, gi, true)) join = gi;
            st = join >= 0 ? add_member(f, join, x) : new_group(f, x, true);
        } else {
            st = new_group(f, x, pointwise(n->op));
            if (!st && c->bimg && c->bimg[x] >= 0) {
                f->groups[f->ngroups - 1].b_im2col = c->bimg[x];
                f->groups[f->ngroups - 1].b_row0 = c->brow0[x];
            }
            if (!st && c->aimg && c->aimg[x] >= 0) {
                f->groups[f->ngroups - 1].a_im2col = c->aimg[x];
                f->groups[f->ngroups - 1].a_row0 = c->arow0[x];
            }
        }
        if (st) return st;
    }
    return KILN_OK;
}

/* Whether node m's value is read outside its group: by a node of another
 * group, or by an inlined node evaluated (through its readers) elsewhere. */
static bool read_outside(fctx *c, int32_t m, int32_t gi, int depth)
{
    const kiln_fuse_plan *f = c->f;
    if (depth > 64) return true;
    for (int32_t k = c->cons_at[m]; k < c->cons_at[m + 1]; k++) {
        int32_t r = c->cons[k];
        if (f->fate[r] == KILN_FATE_INLINE) {
            if (read_outside(c, r, gi, depth + 1)) return true;
        } else if (f->fate[r] == KILN_FATE_ALIAS || f->group[r] != gi) {
            return true;
        }
    }
    return false;
}

static void decide_storage(fctx *c)
{
    const kiln_graph *g = c->g;
    kiln_fuse_plan *f = c->f;
    for (int32_t x = 0; x < g->nnodes; x++) {
        if (f->fate[x] != KILN_FATE_GROUP) continue;
        const kiln_node *n = &g->nodes[x];
        const kiln_fgroup *gr = &f->groups[f->group[x]];
        bool anchor = gr->anchor == x;
        f->stored[x] = n->role != KILN_ROLE_NONE || n->op == KILN_OP_ASSIGN || c->forced[x] ||
                       read_outside(c, x, f->group[x], 0) ||
                       (anchor && !takes_tail(g, gr)) || gr->nmembers == 1;
    }
    for (int32_t gi = 0; gi < f->ngroups; gi++) {
        kiln_fgroup *gr = &f->groups[gi];
        if (g->nodes[gr->anchor].op != KILN_OP_MATMUL || !kiln_matmul_is_gemm(g, gr->anchor))
            continue;
        /* the GEMM sums into the last stored f32 tail of the anchor's shape
         * that is not an assign, else into the anchor's own storage */
        gr->gemm_out = -1;
        for (int32_t m = gr->nmembers - 1; m >= 1 && gr->gemm_out < 0; m--) {
            const kiln_node *mn = &g->nodes[gr->members[m]];
            if (f->stored[gr->members[m]] && mn->op != KILN_OP_ASSIGN && mn->dtype == KILN_F32)
                gr->gemm_out = gr->members[m];
        }
        if (gr->gemm_out < 0) {
            gr->gemm_out = gr->anchor;
            f->stored[gr->anchor] = 1;
        }
    }
}

/* An elementwise group that only updates parameters or optimizer state. */
static bool update_group(const kiln_graph *g, const kiln_fuse_plan *f, const kiln_fgroup *gr)
{
    if (!gr->elementwise) return false;
    bool assigns = false;
    for (int32_t m = 0; m < gr->nmembers; m++) {
        const kiln_node *n = &g->nodes[gr->members[m]];
        if (n->op == KILN_OP_ASSIGN) assigns = true;
        else if (f->stored[gr->members[m]]) return false;
    }
    return assigns;
}

static void assign_kernels(fctx *c, bool off)
{
    kiln_fuse_plan *f = c->f;
    f->nkernels = 0;
    for (int32_t gi = 0; gi < f->ngroups; gi++) {
        bool merge = !off && gi > 0 && update_group(c->g, f, &f->groups[gi]) &&
                     update_group(c->g, f, &f->groups[gi - 1]);
        f->groups[gi].kernel = merge ? f->groups[gi - 1].kernel : f->nkernels++;
    }
}

/* The latest kernel that must run before update kernel uk: the producers
 * of what its groups read (through inlined nodes), and the readers of the
 * old values of what they assign. */
static int32_t kernel_of(const kiln_fuse_plan *f, int32_t x)
{
    if (f->fate[x] == KILN_FATE_ALIAS) x = f->alias_of[x];
    return f->fate[x] == KILN_FATE_GROUP ? f->groups[f->group[x]].kernel : -1;
}

static int32_t producers_before(fctx *c, int32_t x, int32_t uk, int depth)
{
    const kiln_node *n = &c->g->nodes[x];
    int32_t need = -1;
    for (int j = 0; j < n->ninputs && depth < 64; j++) {
        int32_t s = n->inputs[j], k;
        if (c->f->fate[s] == KILN_FATE_INLINE) k = producers_before(c, s, uk, depth + 1);
        else k = kernel_of(c->f, s) == uk ? -1 : kernel_of(c->f, s);
        if (k > need) need = k;
    }
    return need;
}

static int32_t readers_before(fctx *c, int32_t d, int32_t a, int32_t uk, int depth)
{
    int32_t need = -1;
    for (int32_t k = c->cons_at[d]; k < c->cons_at[d + 1] && depth < 64; k++) {
        int32_t r = c->cons[k], kr;
        if (r >= a) continue;
        if (c->f->fate[r] == KILN_FATE_INLINE || c->f->fate[r] == KILN_FATE_ALIAS)
            kr = readers_before(c, r, a, uk, depth + 1);
        else
            kr = kernel_of(c->f, r) == uk ? -1 : kernel_of(c->f, r);
        if (kr > need) need = kr;
    }
    return need;
}

/* Update kernels (optimizer steps that no GEMM tail took) move to right
 * after the last kernel they depend on: the gradients they read die sooner,
 * which shrinks the arena (their position changes no value). */
static void hoist_updates(fctx *c)
{
    kiln_fuse_plan *f = c->f;
    for (int32_t uk = 0; uk < f->nkernels; uk++) {
        int32_t need = -1;
        bool update = false;
        for (int32_t gi = 0; gi < f->ngroups; gi++) {
            const kiln_fgroup *gr = &f->groups[gi];
            if (gr->kernel != uk) continue;
            update = update_group(c->g, f, gr);
            for (int32_t m = 0; m < gr->nmembers && update; m++) {
                int32_t x = gr->members[m];
                int32_t k = producers_before(c, x, uk, 0);
                if (k > need) need = k;
                const kiln_node *n = &c->g->nodes[x];
                if (n->op == KILN_OP_ASSIGN) {
                    k = readers_before(c, n->inputs[0], x, uk, 0);
                    if (k > need) need = k;
                }
            }
            if (!update) break;
        }
        if (!update || need + 1 >= uk) continue;
        for (int32_t gi = 0; gi < f->ngroups; gi++) {
            kiln_fgroup *gr = &f->groups[gi];
            if (gr->kernel == uk) gr->kernel = need + 1;
            else if (gr->kernel > need && gr->kernel < uk) gr->kernel++;
        }
    }
}

void kiln_fuse_plan_free(kiln_fuse_plan *f)
{
    if (!f) return;
    for (int32_t i = 0; i < f->ngroups; i++) free(f->groups[i].members);
    free(f->groups);
    free(f->fate);
    free(f->group);
    free(f->stored);
    free(f->alias_of);
    free(f);
}

kiln_status kiln_fuse(const kiln_graph *g, const kiln_fuse_options *opt, kiln_fuse_plan **out)
{
    *out = NULL;
    bool off = opt && opt->off;
    size_t n = (size_t)(g->nnodes ? g->nnodes : 1);
    kiln_fuse_plan *f = calloc(1, sizeof *f);
    fctx c = {.g = g, .f = f};
    kiln_status st = KILN_ERR_NOMEM;
    if (!f) return st;
    f->nnodes = g->nnodes;
    f->fate = calloc(n, 1);
    f->group = malloc(n * sizeof *f->group);
    f->stored = calloc(n, 1);
    f->alias_of = malloc(n * sizeof *f->alias_of);
    c.cons_at = calloc(n + 1, sizeof *c.cons_at);
    c.forced = calloc(n, 1);
    c.mark = calloc(n, 1);
    if (!f->fate || !f->group || !f->stored || !f->alias_of || !c.cons_at || !c.forced || !c.mark)
        goto done;
    for (int32_t i = 0; i < g->nnodes; i++) f->group[i] = f->alias_of[i] = -1;
    /* consumers, in node order */
    int64_t ne = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        for (int j = 0; j < g->nodes[i].ninputs; j++) c.cons_at[g->nodes[i].inputs[j] + 1]++;
        ne += g->nodes[i].ninputs;
    }
    for (int32_t i = 0; i < g->nnodes; i++) c.cons_at[i + 1] += c.cons_at[i];
    c.cons = malloc((size_t)(ne ? ne : 1) * sizeof *c.cons);
    int32_t *fill = calloc(n, sizeof *fill);
    if (!c.cons || !fill) {
        free(fill);
        goto done;
    }
    for (int32_t i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].ninputs; j++) {
            int32_t s = g->nodes[i].inputs[j];
            /* a node reading the same input twice is one reader */
            bool dup = false;
            for (int k = 0; k < j; k++) dup |= g->nodes[i].inputs[k] == s;
            if (!dup) c.cons[c.cons_at[s] + fill[s]++] = i;
        }
    /* compact the duplicates away */
    for (int32_t s = 0, w = 0; s < g->nnodes; s++) {
        int32_t lo = c.cons_at[s];
        c.cons_at[s] = w;
        for (int32_t k = 0; k < fill[s]; k++) c.cons[w++] = c.cons[lo + k];
        if (s == g->nnodes - 1) c.cons_at[s + 1] = w;
    }
    free(fill);
    decide_fates(&c, off);
    if (!off && opt && opt->implicit_im2col) {
        c.bimg = malloc(n * sizeof *c.bimg);
        c.brow0 = malloc(n * sizeof *c.brow0);
        c.aimg = malloc(n * sizeof *c.aimg);
        c.arow0 = malloc(n * sizeof *c.arow0);
        if (!c.bimg || !c.brow0 || !c.aimg || !c.arow0) goto done;
        implicit_im2col(&c);
    }
    if ((st = form_groups(&c, off))) goto done;
    decide_storage(&c);
    assign_kernels(&c, off);
    if (!off) hoist_updates(&c);
    st = KILN_OK;
done:
    free(c.bimg);
    free(c.aimg);
    free(c.arow0);
    free(c.brow0);
    free(c.cons);
    free(c.cons_at);
    free(c.forced);
    free(c.mark);
    if (st) kiln_fuse_plan_free(f);
    else *out = f;
    return st;
}
