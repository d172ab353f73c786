/* ir/verify.c — the graph IR verifier.
 *
 * Expects: any kiln_graph, including one a pass has corrupted by hand (it
 * reads fields in an order that never follows a pointer or index before
 * checking it, except the inputs array and name string themselves).
 * Guarantees: KILN_OK means every structural rule below holds; otherwise the
 * first broken rule, in node order, is described in g->err, naming the node
 * with kiln_node_desc (and its source location when known):
 *
 *  1. the op id is a registry row; dtype and role are in range; the rank is
 *     within 0..KILN_MAX_RANK and every dimension is >= 0;
 *  2. the input count matches the op's arity (-1: at least one) and every
 *     input is an earlier node (SSA, topological order);
 *  3. the attributes match the op's schema: the same count, names, kinds and
 *     order; lists within KILN_MAX_ATTR_INTS; dtype attributes are dtypes;
 *  4. leaves (fusion kind leaf) are `input` or `const` nodes only; an input
 *     carries a leaf role (input, target, param, const, state, hparam) and a
 *     non-empty name; a const carries no role; every other node carries
 *     none, output, loss or metric; a metric's kind is a kiln_metric_kind
 *     its element count fits (kiln_set_metric_kind);
 *  5. names are unique over the whole graph;
 *  6. at most one node is the loss, and it is a floating-point scalar;
 *  7. assign(dst, value): dst is a param or state leaf, each dst is assigned
 *     at most once, and no node after the assign reads dst;
 *  8. re-running the op's shape rule on a copy of the node gives the node's
 *     dtype, rank and shape;
 *  9. a source location's file is NULL or interned in the graph; line and
 *     column are >= 0.
 *
 * kiln_graph_verify_at is the same check, also giving the id of the node at
 * fault; the IR parser uses it to point at the offending line.
 */
#include "ir/graph.h"
#include "ir/ops.h"

#include <stdlib.h>
#include <string.h>

static const char *kind_str(int kind)
{
    switch (kind) {
    case KILN_ATTR_INT: return "int";
    case KILN_ATTR_FLOAT: return "float";
    case KILN_ATTR_INTS: return "ints";
    case KILN_ATTR_DTYPE: return "dtype";
    }
    return "?";
}

/* Formats "<desc>: <message>[ (from file:line:col)]" into g->err. */
static kiln_status fail(kiln_graph *g, int32_t id, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kiln_status fail(kiln_graph *g, int32_t id, kiln_status st, const char *fmt, ...)
{
    char desc[200], msg[1400], where[300] = "";
    const kiln_node *n = &g->nodes[id];
    if (n->op < KILN_OP_COUNT)
        kiln_node_desc(g, id, desc, sizeof desc);
    else
        snprintf(desc, sizeof desc, "%%%d (op #%d)", id, n->op);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bool file_ok = false;
    for (int32_t f = 0; f < g->nfiles && n->loc.file; f++) file_ok |= g->files[f] == n->loc.file;
    if (file_ok) snprintf(where, sizeof where, " (from %s:%d:%d)", n->loc.file, n->loc.line, n->loc.col);
    return kiln_errorf(g, st, "%s: %s%s", desc, msg, where);
}

static bool is_leaf_role(int r) { return r >= KILN_ROLE_INPUT && r <= KILN_ROLE_HPARAM; }

/* ---- names: an open-addressing set of node ids keyed by name ---- */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Inserts node id's name; returns the id of an earlier node with the same
 * name, or -1. */
static int32_t names_insert(const kiln_graph *g, int32_t *slots, size_t mask, int32_t id)
{
    const char *name = g->nodes[id].name;
    for (size_t i = (size_t)name_hash(name) & mask;; i = (i + 1) & mask) {
        if (slots[i] < 0) {
            slots[i] = id;
            return -1;
        }
        if (strcmp(g->nodes[slots[i]].name, name) == 0) return slots[i];
    }
}

/* ---- per-node rules ---- */

/* Rules 1-3: everything the shape rule relies on. */
static kiln_status check_structure(kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    if (n->op >= KILN_OP_COUNT)
        return fail(g, id, KILN_ERR_INVALID, "op id %d is not in the registry (%d ops)", n->op,
                    KILN_OP_COUNT);
    const kiln_op_info *info = &kiln_ops[n->op];
    if (n->dtype >= KILN_DTYPE_COUNT)
        return fail(g, id, KILN_ERR_INVALID, "dtype %d is not a dtype", n->dtype);
    if (n->role >= KILN_ROLE_COUNT)
        return fail(g, id, KILN_ERR_INVALID, "role %d is not a role", n->role);
    if (n->rank < 0 || n->rank > KILN_MAX_RANK)
        return fail(g, id, KILN_ERR_INVALID, "rank %d is outside 0..%d", n->rank, KILN_MAX_RANK);
    for (int i = 0; i < n->rank; i++)
        if (n->shape[i] < 0)
            return fail(g, id, KILN_ERR_INVALID, "dimension %d is negative (%lld)", i,
                        (long long)n->shape[i]);

    if (n->ninputs < 0 || (n->ninputs > 0 && !n->inputs))
        return fail(g, id, KILN_ERR_INVALID, "malformed input list (%d inputs)", n->ninputs);
    if (info->arity >= 0 && n->ninputs != info->arity)
        return fail(g, id, KILN_ERR_INVALID, "%s takes %d input%s, the node has %d", info->name,
                    info->arity, info->arity == 1 ? "" : "s", n->ninputs);
    if (info->arity < 0 && n->ninputs < 1)
        return fail(g, id, KILN_ERR_INVALID, "%s takes at least one input, the node has none",
                    info->name);
    for (int i = 0; i < n->ninputs; i++)
        if (n->inputs[i] < 0 || n->inputs[i] >= id)
            return fail(g, id, KILN_ERR_INVALID, "input %d is %%%d, which is not an earlier node",
                        i, n->inputs[i]);

    kiln_schema_attr sch[KILN_MAX_ATTRS];
    int ns = kiln_op_schema(n->op, sch, KILN_MAX_ATTRS);
    if (ns < 0)
        return fail(g, id, KILN_ERR_INTERNAL, "op '%s' has a malformed attribute schema",
                    info->name);
    if (n->nattrs != ns)
        return fail(g, id, KILN_ERR_INVALID, "has %d attribute%s, %s takes %d", n->nattrs,
                    n->nattrs == 1 ? "" : "s", info->name, ns);
    for (int a = 0; a < ns; a++) {
        const kiln_attr *at = &n->attrs[a];
        if (!memchr(at->name, 0, sizeof at->name) || strcmp(at->name, sch[a].name) != 0) {
            char nm[KILN_ATTR_NAME_MAX + 1];
            memcpy(nm, at->name, KILN_ATTR_NAME_MAX);
            nm[KILN_ATTR_NAME_MAX] = 0;
            return fail(g, id, KILN_ERR_INVALID, "attribute %d is '%s', %s expects '%s' there",
                        a, nm, info->name, sch[a].name);
        }
        if (at->kind != sch[a].kind)
            return fail(g, id, KILN_ERR_INVALID, "attribute '%s' is a %s, %s expects a %s",
                        sch[a].name, kind_str(at->kind), info->name, kind_str(sch[a].kind));
        if (at->kind == KILN_ATTR_INTS && at->n > KILN_MAX_ATTR_INTS)
            return fail(g, id, KILN_ERR_INVALID, "attribute '%s' has %d values (at most %d)",
                        sch[a].name, at->n, KILN_MAX_ATTR_INTS);
        if (at->kind == KILN_ATTR_DTYPE && (at->i[0] < 0 || at->i[0] >= KILN_DTYPE_COUNT))
            return fail(g, id, KILN_ERR_INVALID, "attribute '%s' is %lld, not a dtype",
                        sch[a].name, (long long)at->i[0]);
    }
    return KILN_OK;
}

/* Rule 4. */
static kiln_status check_role(kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    const char *role = kiln_role_name((kiln_role)n->role);
    if (kiln_node_is_leaf(n)) {
        if (n->op == KILN_OP_INPUT) {
            if (!is_leaf_role(n->role))
                return fail(g, id, KILN_ERR_INVALID, "an input leaf needs a leaf role (input, "
                            "target, param, const, state or hparam), not '%s'", role);
            if (!n->name || !*n->name)
                return fail(g, id, KILN_ERR_INVALID, "an input leaf needs a name");
        } else if (n->op == KILN_OP_CONST) {
            if (n->role != KILN_ROLE_NONE)
                return fail(g, id, KILN_ERR_INVALID, "a const carries no role, not '%s'", role);
        } else {
            return fail(g, id, KILN_ERR_INVALID,
                        "op '%s' is a leaf; only 'input' and 'const' may be leaves",
                        kiln_ops[n->op].name);
        }
    } else if (is_leaf_role(n->role)) {
        return fail(g, id, KILN_ERR_INVALID, "role '%s' belongs to input leaves; a computed "
                    "node is none, output, loss or metric", role);
    } else if (n->role == KILN_ROLE_METRIC &&
               !kiln_metric_size_ok((kiln_metric_kind)n->metric, kiln_node_numel(n))) {
        if (n->metric == KILN_METRIC_MEAN) return KILN_OK; /* any shape, as before */
        return fail(g, id, KILN_ERR_INVALID, "a metric of kind %s cannot have %lld elements",
                    kiln_metric_kind_name((kiln_metric_kind)n->metric),
                    (long long)kiln_node_numel(n));
    }
    return KILN_OK;
}

/* Rule 8. */
static kiln_status check_shape(kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    kiln_node c = *n;
    char saved[sizeof g->err];
    memcpy(saved, g->err, sizeof saved);
    kiln_status st = kiln_ops[n->op].shape(g, &c);
    if (st) {
        char why[sizeof g->err];
        memcpy(why, g->err, sizeof why);
        return fail(g, id, st, "its shape rule fails: %s", why);
    }
    memcpy(g->err, saved, sizeof saved);
    bool same = c.dtype == n->dtype && c.rank == n->rank && c.rank >= 0 &&
                c.rank <= KILN_MAX_RANK &&
                memcmp(c.shape, n->shape, (size_t)c.rank * sizeof c.shape[0]) == 0;
    if (!same) {
        char have[160], want[160];
        kiln_node_type_str(n, have, sizeof have);
        if (c.rank < 0 || c.rank > KILN_MAX_RANK)
            snprintf(want, sizeof want, "rank %d", c.rank);
        else
            kiln_node_type_str(&c, want, sizeof want);
        return fail(g, id, KILN_ERR_SHAPE, "its type is %s but its shape rule gives %s", have,
                    want);
    }
    return KILN_OK;
}

/* Rule 9. */
static kiln_status check_loc(kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    if (n->loc.file) {
        bool interned = false;
        for (int32_t f = 0; f < g->nfiles && !interned; f++) interned = g->files[f] == n->loc.file;
        if (!interned)
            return fail(g, id, KILN_ERR_INVALID, "its location's file name is not interned in "
                        "the graph (kiln_graph_intern_file)");
    }
    if (n->loc.line < 0 || n->loc.col < 0)
        return fail(g, id, KILN_ERR_INVALID, "its location %d:%d is negative", n->loc.line,
                    n->loc.col);
    return KILN_OK;
}

kiln_status kiln_graph_verify_at(kiln_graph *g, int32_t *bad)
{
    if (bad) *bad = -1;
    if (!g) return KILN_ERR_INVALID;
    if (g->nnodes < 0 || (g->nnodes > 0 && !g->nodes))
        return kiln_errorf(g, KILN_ERR_INVALID, "the graph's node array is malformed (%d nodes)",
                           g->nnodes);
    if (g->nnodes == 0) return KILN_OK;

    size_t nslots = 16;
    while (nslots < (size_t)g->nnodes * 2) nslots *= 2;
    int32_t *slots = malloc(nslots * sizeof *slots);
    int32_t *assigned_by = malloc((size_t)g->nnodes * sizeof *assigned_by);
    if (!slots || !assigned_by) {
        free(slots);
        free(assigned_by);
        return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory verifying the graph");
    }
    memset(slots, 0xff, nslots * sizeof *slots); /* every slot -1 */
    for (int32_t i = 0; i < g->nnodes; i++) assigned_by[i] = -1;

    kiln_status st = KILN_OK;
    int32_t id, loss = -1;
    for (id = 0; id < g->nnodes; id++) {
        kiln_node *n = &g->nodes[id];
        if ((st = check_structure(g, id)) || (st = check_role(g, id)) || (st = check_loc(g, id)))
            break;

        /* Rule 5. */
        if (n->name) {
            int32_t other = names_insert(g, slots, nslots - 1, id);
            if (other >= 0) {
                st = fail(g, id, KILN_ERR_INVALID, "the name '%s' is also used by %%%d", n->name,
                          other);
                break;
            }
        }

        /* Rule 6. */
        if (n->role == KILN_ROLE_LOSS) {
            if (loss >= 0) {
                st = fail(g, id, KILN_ERR_INVALID, "a second loss (the loss is %%%d)", loss);
                break;
            }
            if (n->rank != 0 || !kiln_dtype_is_float((kiln_dtype)n->dtype)) {
                char t[160];
                st = fail(g, id, KILN_ERR_SHAPE, "the loss must be a floating-point scalar, "
                          "not %s", kiln_node_type_str(n, t, sizeof t));
                break;
            }
            loss = id;
        }

        /* Rule 7. */
        int first_read = 0;
        if (n->op == KILN_OP_ASSIGN) {
            int32_t dst = n->inputs[0];
            const kiln_node *d = &g->nodes[dst];
            if (d->op != KILN_OP_INPUT ||
                (d->role != KILN_ROLE_PARAM && d->role != KILN_ROLE_STATE)) {
                char dd[200];
                kiln_node_desc(g, dst, dd, sizeof dd);
                st = fail(g, id, KILN_ERR_INVALID, "assigns %s, which is not a param or state "
                          "leaf", dd);
                break;
            }
            if (assigned_by[dst] >= 0) {
                st = fail(g, id, KILN_ERR_INVALID, "assigns '%s' again (%%%d assigns it first)",
                          d->name, assigned_by[dst]);
                break;
            }
            first_read = 1; /* the destination operand is a write, not a read */
        }
        for (int i = first_read; i < n->ninputs; i++) {
            int32_t src = n->inputs[i];
            if (assigned_by[src] >= 0) {
                char sd[200];
                kiln_node_desc(g, src, sd, sizeof sd);
                st = fail(g, id, KILN_ERR_INVALID, "input %d reads %s after %%%d assigns it", i,
                          sd, assigned_by[src]);
                break;
            }
        }
        if (st) break;

        if ((st = check_shape(g, id))) break;
        if (n->op == KILN_OP_ASSIGN) assigned_by[n->inputs[0]] = id;
    }
    free(slots);
    free(assigned_by);
    if (st && bad) *bad = id;
    return st;
}

kiln_status kiln_graph_verify(kiln_graph *g) { return kiln_graph_verify_at(g, NULL); }
