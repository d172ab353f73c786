/* passes/simplify.c — algebraic simplification.
 *
 * Expects: a verified graph.
 * Guarantees: an equivalent graph that verifies: every OUTPUT, LOSS and
 * METRIC node and every assign computes the same values, bit for bit except
 * where noted (x + 0 -> x keeps a -0.0 that the add would have made +0.0;
 * matmul reassociation and the constant-weight fold change the order of
 * floating-point sums), with these rewrites applied until none fires:
 *
 *  1. constant folding: a computed node whose inputs are all `const`s and
 *     whose result is a scalar is evaluated with its op's reference
 *     implementation (in double, inputs and result rounded to their dtypes
 *     as the interpreter rounds them) and becomes a `const`; a non-finite
 *     result is left to run time;
 *  2. identities, only where the result has x's dtype and shape (so never
 *     where broadcasting widens x): x*1, 1*x, x+0, 0+x, x-0, x/1 -> x, where
 *     "1"/"0" is a const or a broadcast_to/reshape of one; neg(neg(x)) -> x;
 *     pow(x, 1) -> x; cast to x's dtype, broadcast_to/reshape/flatten to x's
 *     shape, permute by the identity -> x; permute of permute -> one permute
 *     (or x); reshape/flatten of reshape/flatten -> one reshape (or x).
 *     x*0 is left alone (NaN and inf times 0 are NaN);
 *  3. matmul chains: (A@B)@C <-> A@(B@C), for 2-D matmuls without ta/tb
 *     whose inner product has no other reader and no role or name, takes
 *     the order with fewer flops (2*M*N*K per product);
 *  4. constant-weight linear maps: (x @ W1^T [+ b1]) @ W2^T, W1 and W2 CONST
 *     leaves (not params), inner values read only there and untagged, becomes
 *     x @ (W2@W1)^T [+ b1 @ W2^T] when that is fewer flops for this batch,
 *     counting the W2@W1 product itself (it is a node on constants: folding
 *     it ahead of time is the backend's business). Any ta=0 / tb flags of
 *     the two matmuls are handled the same way.
 *
 * A node with a role other than none, or a name, is never removed: when it
 * simplifies to an untagged computed node, its role and name move there (as
 * in passes/cse.c); otherwise it is kept as it is. Leaves (`input`) and
 * assigns are always kept. Untagged computed nodes and consts that nothing
 * reads (any more, or already before the pass) are removed. A rewrite never
 * makes a node read a param or state leaf after the assign that writes it.
 *
 * How: each round appends a rewritten copy of every node after the existing
 * ones, through kiln_build (so every shape rule runs again), redirecting uses
 * with a remap array (old id -> new id), then drops the old nodes and the
 * dead new ones with kiln_graph_compact. Node order is otherwise preserved.
 * Patterns that need "read only here" (3 and 4) are matched on the round's
 * input graph, where use counts are exact; the others look at the rewritten
 * inputs, so chains of identities go in one round.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ROUNDS 32

typedef enum rw_kind { RW_NONE, RW_FOLD, RW_IDENTITY, RW_REASSOC, RW_LINEAR } rw_kind;

typedef struct ctx {
    kiln_graph *g;
    int32_t n;            /* nodes of the round's input graph: old ids < n <= new ids */
    int32_t *remap;       /* old id -> new id */
    int32_t *uses;        /* old id -> input slots reading it */
    int32_t *last_use;    /* old id -> last old node reading it, or -1 */
    int32_t *assign_at;   /* old id -> the old assign writing it, or INT32_MAX */
    int32_t *holder;      /* old id -> the new node holding its name, or -1 */
    bool *was_tagged;     /* old id -> had a role or name (names move as nodes are copied) */
    int32_t *wpos;        /* new id - n -> assign_at of the leaf it copies */
    int32_t wcap;
    int32_t cur;          /* the old node being rewritten */
    kiln_simplify_stats *st;
    kiln_simplify_record pending; /* the record of the rewrite in progress */
    int changes;
} ctx;

/* As the interpreter rounds a value to dtype t (codegen/interp.c). */
static double round_to(kiln_dtype t, double v)
{
    switch (t) {
    case KILN_F32: return (double)(float)v;
    case KILN_I32:
    case KILN_I64:
    case KILN_U8: return isfinite(v) ? trunc(v) : 0.0;
    case KILN_BOOL: return v != 0.0;
    default: return v;
    }
}

static double const_value(const kiln_node *n)
{
    return round_to((kiln_dtype)n->dtype, kiln_attr_get_float(n, "value"));
}

static bool same_type(const kiln_node *a, const kiln_node *b)
{
    return a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]) == 0;
}


/* Whether node id is everywhere the value v: a const, or a broadcast_to or
 * reshape of one. */
static bool splat_is(const kiln_graph *g, int32_t id, double v)
{
    const kiln_node *n = &g->nodes[id];
    while (n->op == KILN_OP_BROADCAST_TO || n->op == KILN_OP_RESHAPE)
        n = &g->nodes[n->inputs[0]];
    return n->op == KILN_OP_CONST && const_value(n) == v;
}

static bool is_identity_perm(const kiln_attr *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->i[i] != i) return false;
    return true;
}

static int32_t get_wpos(const ctx *c, int32_t id)
{
    return id - c->n < c->wcap ? c->wpos[id - c->n] : INT32_MAX;
}

static kiln_status set_wpos(ctx *c, int32_t id, int32_t v)
{
    int32_t k = id - c->n;
    if (k >= c->wcap) {
        int32_t cap = c->wcap ? c->wcap : 64;
        while (cap <= k) cap *= 2;
        int32_t *w = realloc(c->wpos, (size_t)cap * sizeof *w);
        if (!w) return kiln_errorf(c->g, KILN_ERR_NOMEM, "out of memory");
        for (int32_t i = c->wcap; i < cap; i++) w[i] = INT32_MAX;
        c->wpos = w;
        c->wcap = cap;
    }
    c->wpos[k] = v;
    return KILN_OK;
}

/* Whether new node id may be read at old position pos: not after an assign
 * of it (an assign reading its own destination is fine). */
static bool reads_ok(const ctx *c, int32_t id, int32_t pos) { return pos <= get_wpos(c, id); }

static double matmul_flops(const kiln_graph *g, int32_t id)
{
    double f = 0, b = 0;
    kiln_ops[KILN_OP_MATMUL].cost(g, &g->nodes[id], &f, &b);
    return f;
}

static double total_matmul_flops(const kiln_graph *g)
{
    double f = 0;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == KILN_OP_MATMUL) f += matmul_flops(g, i);
    return f;
}

static kiln_value mm(kiln_graph *g, kiln_value a, kiln_value b, int ta, int tb)
{
    kiln_value in[2] = {a, b};
    kiln_attr at[2] = {kiln_attr_int("ta", ta), kiln_attr_int("tb", tb)};
    return kiln_build(g, KILN_OP_MATMUL, 2, in, 2, at);
}

/* ---- rules ----
 * Each returns the id of the rewritten node's replacement (an existing node,
 * or one it built after the existing ones), or -1 when it does not apply; a
 * failure to build is reported through *err. */

/* 1. Constant folding, evaluated on the old node (its inputs have the same
 * scalar types as the rewritten ones). */
static int32_t fold(ctx *c, const kiln_node *old, const int32_t *in, kiln_status *err)
{
    kiln_graph *g = c->g;
    enum { MAXIN = 8 };
    if (old->rank != 0 || old->ninputs < 1 || old->ninputs > MAXIN || !kiln_ops[old->op].ref)
        return -1;
    double vals[MAXIN];
    const double *ptrs[MAXIN];
    for (int j = 0; j < old->ninputs; j++) {
        const kiln_node *x = &g->nodes[in[j]];
        if (x->op != KILN_OP_CONST) return -1;
        vals[j] = const_value(x);
        ptrs[j] = &vals[j];
    }
    char saved[sizeof g->err];
    memcpy(saved, g->err, sizeof saved);
    double out = 0;
    kiln_status st = kiln_ops[old->op].ref(g, &g->nodes[c->cur], ptrs, &out);
    if (st) {
        memcpy(g->err, saved, sizeof saved); /* left to run time, where it fails */
        return -1;
    }
    out = round_to((kiln_dtype)old->dtype, out);
    if (!isfinite(out)) return -1;
    kiln_attr a[2] = {kiln_attr_float("value", out),
                      kiln_attr_dtype("dtype", (kiln_dtype)old->dtype)};
    kiln_value r = kiln_build(g, KILN_OP_CONST, 0, NULL, 2, a);
    if (r < 0) *err = (kiln_status)r;
    return r;
}

/* 2. Identities. */
static int32_t identity(ctx *c, const kiln_node *old, const int32_t *in, kiln_status *err)
{
    kiln_graph *g = c->g;
    int32_t cand = -1;
    switch (old->op) {
    case KILN_OP_ADD:
        if (splat_is(g, in[1], 0.0)) cand = in[0];
        else if (splat_is(g, in[0], 0.0)) cand = in[1];
        break;
    case KILN_OP_SUB:
        if (splat_is(g, in[1], 0.0)) cand = in[0];
        break;
    case KILN_OP_MUL:
        if (splat_is(g, in[1], 1.0)) cand = in[0];
        else if (splat_is(g, in[0], 1.0)) cand = in[1];
        break;
    case KILN_OP_DIV:
        if (splat_is(g, in[1], 1.0)) cand = in[0];
        break;
    case KILN_OP_NEG:
        if (g->nodes[in[0]].op == KILN_OP_NEG) cand = g->nodes[in[0]].inputs[0];
        break;
    case KILN_OP_POW:
        if (kiln_attr_get_float(old, "exponent") == 1.0) cand = in[0];
        break;
    case KILN_OP_CAST:
    case KILN_OP_BROADCAST_TO:
        cand = in[0];
        break;
    case KILN_OP_RESHAPE:
    case KILN_OP_FLATTEN: {
        const kiln_node *x = &g->nodes[in[0]];
        if (same_type(x, old)) {
            cand = in[0];
        } else if (x->op == KILN_OP_RESHAPE || x->op == KILN_OP_FLATTEN) {
            int32_t src = x->inputs[0];
            if (same_type(&g->nodes[src], old)) {
                cand = src;
            } else {
                kiln_attr s = kiln_attr_ints("shape", old->rank, old->shape);
                cand = kiln_build(g, KILN_OP_RESHAPE, 1, &src, 1, &s);
                if (cand < 0) *err = (kiln_status)cand;
            }
        }
        break;
    }
    case KILN_OP_PERMUTE: {
        const kiln_attr *p2 = kiln_node_attr(old, "perm");
        const kiln_node *x = &g->nodes[in[0]];
        if (is_identity_perm(p2)) {
            cand = in[0];
        } else if (x->op == KILN_OP_PERMUTE) {
            const kiln_attr *p1 = kiln_node_attr(x, "perm");
            int64_t q[KILN_MAX_RANK];
            for (int i = 0; i < p2->n; i++) q[i] = p1->i[p2->i[i]];
            kiln_attr qa = kiln_attr_ints("perm", p2->n, q);
            int32_t src = x->inputs[0];
            if (is_identity_perm(&qa)) {
                cand = src;
            } else {
                cand = kiln_build(g, KILN_OP_PERMUTE, 1, &src, 1, &qa);
                if (cand < 0) *err = (kiln_status)cand;
            }
        }
        break;
    }
    default: break;
    }
    /* The result must be x exactly: same dtype and shape (broadcasting or a
     * real cast/reshape makes it something else). */
    if (cand >= 0 && !same_type(&g->nodes[cand], old)) return -1;
    return cand;
}

/* A plain 2-D matmul (ta = tb = 0) of the round's input graph. */
static bool plain_mm(const kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    return n->op == KILN_OP_MATMUL && n->rank == 2 && kiln_attr_get_int(n, "ta") == 0 &&
           kiln_attr_get_int(n, "tb") == 0 && g->nodes[n->inputs[0]].rank == 2 &&
           g->nodes[n->inputs[1]].rank == 2;
}

/* An old intermediate that a rewrite of its one reader may drop. */
static bool private_value(const ctx *c, int32_t id)
{
    return c->uses[id] == 1 && !c->was_tagged[id];
}

/* 3. (A@B)@C <-> A@(B@C). */
static int32_t reassoc(ctx *c, const kiln_node *old, kiln_status *err)
{
    kiln_graph *g = c->g;
    if (!plain_mm(g, c->cur)) return -1;
    int32_t l = old->inputs[0], r = old->inputs[1];
    bool left = plain_mm(g, l) && private_value(c, l);   /* (A@B)@C */
    bool right = plain_mm(g, r) && private_value(c, r);  /* A@(B@C) */
    for (int side = 0; side < 2; side++) {
        if (!(side == 0 ? left : right)) continue;
        int32_t A, B, C;
        if (side == 0) {
            A = g->nodes[l].inputs[0], B = g->nodes[l].inputs[1], C = r;
        } else {
            A = l, B = g->nodes[r].inputs[0], C = g->nodes[r].inputs[1];
        }
        double m = (double)g->nodes[A].shape[0], k = (double)g->nodes[A].shape[1];
        double n = (double)g->nodes[B].shape[1], p = (double)g->nodes[C].shape[1];
        double fl = 2 * m * k * n + 2 * m * n * p; /* (A@B)@C */
        double fr = 2 * k * n * p + 2 * m * k * p; /* A@(B@C) */
        double now = side == 0 ? fl : fr, alt = side == 0 ? fr : fl;
        if (!(alt < now)) continue;
        int32_t a = c->remap[A], b = c->remap[B], cc = c->remap[C], out;
        out = side == 0 ? mm(g, a, mm(g, b, cc, 0, 0), 0, 0) : mm(g, mm(g, a, b, 0, 0), cc, 0, 0);
        if (out < 0) {
            *err = (kiln_status)out;
            return -1;
        }
        c->pending = (kiln_simplify_record){side == 0 ? KILN_SIMPLIFY_MATMUL_RIGHT
                                                      : KILN_SIMPLIFY_MATMUL_LEFT,
                                            (int64_t)m, (int64_t)k, (int64_t)n, (int64_t)p, now,
                                            alt};
        return out;
    }
    return -1;
}

static bool const_weight(const kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    return n->op == KILN_OP_INPUT && n->role == KILN_ROLE_CONST && n->rank == 2;
}

/* 4. (x @ op1(W1) [+ b1]) @ op2(W2) -> x @ (op1(W1) @ op2(W2)) [+ b1 @ op2(W2)]. */
static int32_t linear(ctx *c, const kiln_node *old, kiln_status *err)
{
    kiln_graph *g = c->g;
    if (old->op != KILN_OP_MATMUL || old->rank != 2 || kiln_attr_get_int(old, "ta") != 0)
        return -1;
    int32_t s = old->inputs[0], w2 = old->inputs[1], p1 = s, b1 = -1;
    if (!const_weight(g, w2) || !private_value(c, s)) return -1;
    if (g->nodes[s].op == KILN_OP_ADD) {
        const kiln_node *sn = &g->nodes[s];
        int which = g->nodes[sn->inputs[0]].op == KILN_OP_MATMUL ? 0 : 1;
        p1 = sn->inputs[which];
        b1 = sn->inputs[1 - which];
        if (!private_value(c, p1)) return -1;
    }
    const kiln_node *pn = &g->nodes[p1];
    if (pn->op != KILN_OP_MATMUL || pn->rank != 2 || kiln_attr_get_int(pn, "ta") != 0) return -1;
    int32_t x = pn->inputs[0], w1 = pn->inputs[1];
    if (!const_weight(g, w1) || g->nodes[x].rank != 2) return -1;
    double B = (double)pn->shape[0], in = (double)g->nodes[x].shape[1];
    double h = (double)pn->shape[1], o = (double)old->shape[1];
    if (b1 >= 0) {
        /* b1 must be a [h] vector that the add only broadcasts over the batch. */
        const kiln_node *bn = &g->nodes[b1];
        if (bn->rank != 1 || bn->shape[0] != pn->shape[1] || !same_type(&g->nodes[s], pn))
            return -1;
    }
    int64_t t1 = kiln_attr_get_int(pn, "tb"), t2 = kiln_attr_get_int(old, "tb");
    double now = 2 * B * in * h + 2 * B * h * o + (b1 >= 0 ? B * h : 0);
    double alt = 2 * in * h * o + 2 * B * in * o + (b1 >= 0 ? 2 * h * o + B * o : 0);
    if (!(alt < now)) return -1;
    int32_t X = c->remap[x], W1 = c->remap[w1], W2 = c->remap[w2], out;
    if (t1 && t2)
        out = mm(g, X, mm(g, W2, W1, 0, 0), 0, 1); /* x @ (W2@W1)^T */
    else
        out = mm(g, X, mm(g, W1, W2, (int)t1, (int)t2), 0, 0);
    if (b1 >= 0) out = kiln_b2(g, KILN_OP_ADD, out, mm(g, c->remap[b1], W2, 0, (int)t2));
    if (out < 0) {
        *err = (kiln_status)out;
        return -1;
    }
    c->pending = (kiln_simplify_record){KILN_SIMPLIFY_LINEAR_FOLD, (int64_t)B, (int64_t)in,
                                        (int64_t)h, (int64_t)o, now, alt};
    return out;
}

/* ---- one round ---- */

/* Rebuilds old node i after the existing nodes. */
static kiln_status rebuild(ctx *c, int32_t i, int32_t *in)
{
    kiln_graph *g = c->g;
    kiln_node old = g->nodes[i]; /* a shallow copy: g->nodes moves as nodes are added */
    kiln_attr attrs[KILN_MAX_ATTRS];
    memcpy(attrs, old.attrs, sizeof attrs);
    g->cur_loc = old.loc;
    c->cur = i;

    if (old.op == KILN_OP_INPUT) {
        int32_t id;
        kiln_status st = kiln_rebuild_copy_leaf(g, &old, i, &id);
        if (st) return st;
        c->holder[i] = id;
        c->remap[i] = id;
        return set_wpos(c, id, c->assign_at[i]);
    }

    for (int j = 0; j < old.ninputs; j++) in[j] = c->remap[old.inputs[j]];
    int32_t mark = g->nnodes, r = -1;
    rw_kind kind = RW_NONE;
    kiln_status err = KILN_OK;
    if (old.op != KILN_OP_CONST && old.op != KILN_OP_ASSIGN) {
        if ((r = fold(c, &old, in, &err)) >= 0) kind = RW_FOLD;
        else if (!err && (r = identity(c, &old, in, &err)) >= 0) kind = RW_IDENTITY;
        else if (!err && (r = reassoc(c, &old, &err)) >= 0) kind = RW_REASSOC;
        else if (!err && (r = linear(c, &old, &err)) >= 0) kind = RW_LINEAR;
        if (err) return err;
    }
    if (r >= 0) {
        /* No read of a param or state after its assign. */
        if (r < mark) {
            if (c->last_use[i] >= 0 && !reads_ok(c, r, c->last_use[i])) r = -1;
        } else {
            for (int32_t k = mark; k < g->nnodes && r >= 0; k++)
                for (int j = 0; j < g->nodes[k].ninputs; j++)
                    if (g->nodes[k].inputs[j] < mark && !reads_ok(c, g->nodes[k].inputs[j], i))
                        r = -1;
        }
    }
    if (r >= 0 && kiln_rebuild_tagged(&old)) {
        /* The tag moves to the replacement only if it can carry it. */
        const kiln_node *rn = &g->nodes[r];
        if (kiln_node_is_leaf(rn) || rn->op == KILN_OP_ASSIGN || kiln_rebuild_tagged(rn)) r = -1;
    }
    if (r < 0) {
        /* Nodes a failed rewrite built are left dead: the round removes them. */
        r = kiln_build(g, old.op, old.ninputs, in, old.nattrs, attrs);
        if (r < 0) return (kiln_status)r;
    } else {
        c->changes++;
        kiln_simplify_stats *s = c->st;
        switch (kind) {
        case RW_FOLD: s->folded++; break;
        case RW_IDENTITY: s->identities++; break;
        case RW_REASSOC: s->reassociated++; break;
        case RW_LINEAR: s->linear_folds++; break;
        default: break;
        }
        if ((kind == RW_REASSOC || kind == RW_LINEAR) && s->nrecords < KILN_SIMPLIFY_MAX_RECORDS)
            s->records[s->nrecords++] = c->pending;
    }
    if (kiln_rebuild_tagged(&old)) {
        kiln_rebuild_move_tag(g, &old, i, r);
        c->holder[i] = r;
    }
    c->remap[i] = r;
    return KILN_OK;
}

static void undo(ctx *c) { kiln_rebuild_undo(c->g, c->n, c->holder); }

static kiln_status sweep(ctx *c) { return kiln_rebuild_sweep(c->g, c->n); }

static kiln_status round_once(kiln_graph *g, kiln_simplify_stats *s, int *changes)
{
    int32_t n = g->nnodes, maxin = 1;
    for (int32_t i = 0; i < n; i++)
        if (g->nodes[i].ninputs > maxin) maxin = g->nodes[i].ninputs;
    ctx c;
    memset(&c, 0, sizeof c);
    c.g = g;
    c.n = n;
    c.st = s;
    size_t sz = (size_t)(n ? n : 1) * sizeof(int32_t);
    c.remap = malloc(sz);
    c.uses = calloc(1, sz);
    c.last_use = malloc(sz);
    c.assign_at = malloc(sz);
    c.holder = malloc(sz);
    c.was_tagged = malloc((size_t)(n ? n : 1) * sizeof *c.was_tagged);
    int32_t *in = malloc((size_t)maxin * sizeof *in);
    kiln_status st = KILN_OK;
    if (!c.remap || !c.uses || !c.last_use || !c.assign_at || !c.holder || !c.was_tagged || !in) {
        st = kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int32_t i = 0; i < n; i++) {
        c.last_use[i] = -1;
        c.assign_at[i] = INT32_MAX;
        c.holder[i] = -1;
        c.was_tagged[i] = kiln_rebuild_tagged(&g->nodes[i]);
    }
    for (int32_t i = 0; i < n; i++) {
        const kiln_node *nd = &g->nodes[i];
        for (int j = 0; j < nd->ninputs; j++) {
            c.uses[nd->inputs[j]]++;
            c.last_use[nd->inputs[j]] = i;
        }
        if (nd->op == KILN_OP_ASSIGN) c.assign_at[nd->inputs[0]] = i;
    }
    kiln_loc loc = g->cur_loc;
    for (int32_t i = 0; i < n && !st; i++) st = rebuild(&c, i, in);
    g->cur_loc = loc;
    if (st)
        undo(&c);
    else
        st = sweep(&c);
    *changes = c.changes;
out:
    free(c.remap);
    free(c.uses);
    free(c.last_use);
    free(c.assign_at);
    free(c.holder);
    free(c.was_tagged);
    free(c.wpos);
    free(in);
    return st;
}

kiln_status kiln_pass_simplify_stats(kiln_graph *g, kiln_simplify_stats *stats)
{
    if (!g) return KILN_ERR_INVALID;
    kiln_simplify_stats local, *s = stats ? stats : &local;
    memset(s, 0, sizeof *s);
    s->nodes_before = g->nnodes;
    s->matmul_flops_before = total_matmul_flops(g);
    kiln_status st = KILN_OK;
    for (int changes = 1; changes && s->rounds < MAX_ROUNDS && !st; s->rounds++)
        st = round_once(g, s, &changes);
    s->nodes_after = g->nnodes;
    s->matmul_flops_after = total_matmul_flops(g);
    return st;
}

kiln_status kiln_pass_simplify(kiln_graph *g) { return kiln_pass_simplify_stats(g, NULL); }
