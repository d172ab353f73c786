/* passes/rebuild.c — what the passes that rebuild a graph share
 * (passes/simplify.c, passes/conv_lower.c; declared in passes/passes.h).
 *
 * Such a pass appends a new copy of every node after the n old ones
 * (remapping inputs), lets the copies take the old nodes' roles, metric
 * kinds and names, and at the end either sweeps the old nodes and the new
 * ones nothing needs, or undoes everything. Not a pass itself. */
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

bool kiln_rebuild_tagged(const kiln_node *n) { return n->role != KILN_ROLE_NONE || n->name; }

void kiln_rebuild_move_tag(kiln_graph *g, const kiln_node *old, int32_t i, int32_t r)
{
    g->nodes[r].role = old->role;
    g->nodes[r].metric = old->metric; /* a metric partial's finalize kind */
    g->nodes[r].name = old->name;
    g->nodes[i].name = NULL;
}

kiln_status kiln_rebuild_copy_leaf(kiln_graph *g, const kiln_node *old, int32_t i, int32_t *out)
{
    char *nm = old->name;
    kiln_attr attrs[KILN_MAX_ATTRS];
    memcpy(attrs, old->attrs, sizeof attrs);
    g->nodes[i].name = NULL; /* the copy takes the name */
    kiln_value id = kiln_build_leaf(g, (kiln_role)old->role, nm, (kiln_dtype)old->dtype, old->rank,
                                    old->shape, old->nattrs, attrs);
    if (id < 0) {
        g->nodes[i].name = nm;
        return (kiln_status)id;
    }
    free(g->nodes[id].name);
    g->nodes[id].name = nm;
    g->nodes[id].group = old->group; /* freezing and discriminative rates read it */
    *out = id;
    return KILN_OK;
}

void kiln_rebuild_undo(kiln_graph *g, int32_t n, const int32_t *holder)
{
    for (int32_t i = 0; i < n; i++)
        if (holder[i] >= 0) {
            g->nodes[i].name = g->nodes[holder[i]].name;
            g->nodes[holder[i]].name = NULL;
        }
    bool *keep = malloc((size_t)g->nnodes * sizeof *keep);
    if (!keep) return; /* the graph keeps the dead copies; it still verifies */
    for (int32_t i = 0; i < g->nnodes; i++) keep[i] = i < n;
    kiln_graph_compact(g, keep, NULL);
    free(keep);
}

kiln_status kiln_rebuild_sweep(kiln_graph *g, int32_t n)
{
    bool *keep = calloc((size_t)g->nnodes, sizeof *keep);
    if (!keep) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    for (int32_t i = g->nnodes - 1; i >= n; i--) {
        const kiln_node *nd = &g->nodes[i];
        if (nd->op == KILN_OP_INPUT || nd->op == KILN_OP_ASSIGN || kiln_rebuild_tagged(nd))
            keep[i] = true;
        if (!keep[i]) continue;
        for (int j = 0; j < nd->ninputs; j++) keep[nd->inputs[j]] = true;
    }
    kiln_status st = kiln_graph_compact(g, keep, NULL);
    free(keep);
    return st;
}
