/* passes/dce.c — dead-code elimination.
 *
 * Expects: a verified graph.
 * Guarantees: every computed node left is needed by an output, the loss, a
 * metric or an assign; every `input` leaf is kept (it is part of the
 * program's interface even when unused); node order is preserved.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>

static bool is_root(const kiln_node *n)
{
    return n->op == KILN_OP_INPUT || n->op == KILN_OP_ASSIGN || n->role == KILN_ROLE_OUTPUT ||
           n->role == KILN_ROLE_LOSS || n->role == KILN_ROLE_METRIC;
}

kiln_status kiln_pass_dce(kiln_graph *g)
{
    bool *live = calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *live);
    if (!live) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    for (int32_t i = g->nnodes - 1; i >= 0; i--) {
        const kiln_node *n = &g->nodes[i];
        if (is_root(n)) live[i] = true;
        if (!live[i]) continue;
        for (int j = 0; j < n->ninputs; j++) live[n->inputs[j]] = true;
    }
    kiln_status st = kiln_graph_compact(g, live, NULL);
    free(live);
    return st;
}
