/* passes/infer.c — shape and dtype inference.
 *
 * Expects: a graph whose nodes are in topological order.
 * Guarantees: every node's dtype and shape are what its op's shape rule
 * gives for its inputs and attributes (attributes normalised, e.g. negative
 * axes). Nodes are built through kiln_build, which already runs the rule, so
 * on a well-formed graph this pass changes nothing; it re-derives types after
 * a pass edits nodes by hand, and its error names the node and its source
 * location.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <string.h>

kiln_status kiln_pass_infer(kiln_graph *g)
{
    for (int32_t i = 0; i < g->nnodes; i++) {
        kiln_node *n = &g->nodes[i];
        for (int j = 0; j < n->ninputs; j++)
            if (n->inputs[j] < 0 || n->inputs[j] >= i)
                return kiln_errorf(g, KILN_ERR_INVALID, "infer: node %%%d reads %%%d, which is "
                                   "not an earlier node", i, n->inputs[j]);
        if (n->op == KILN_OP_INPUT) continue; /* a leaf's type is declared */
        kiln_status st = kiln_ops[n->op].shape(g, n);
        if (st) {
            char msg[sizeof g->err], d[160];
            snprintf(msg, sizeof msg, "%s", g->err);
            if (n->loc.file)
                return kiln_errorf(g, st, "%s:%d:%d: %s: %.1500s", n->loc.file, n->loc.line,
                                   n->loc.col, kiln_node_desc(g, i, d, sizeof d), msg);
            return kiln_errorf(g, st, "%s: %.1500s", kiln_node_desc(g, i, d, sizeof d), msg);
        }
    }
    return KILN_OK;
}
