/* passes/mode.c — training or evaluation mode ("train_mode", "eval_mode").
 *
 * A model graph describes both programs: train_eval(a, b) is a in training
 * and b in evaluation (batchnorm's batch statistics or running statistics,
 * dropout or the identity), and `assign` nodes to `state` leaves in a model
 * graph are the updates of its running state (batchnorm's running
 * statistics), which only training performs.
 *
 * Expects: a verified graph.
 * Guarantees: no train_eval node is left: each read of one reads the value
 * of its mode instead (a train_eval with a role or a name becomes an
 * identity reshape of that value, keeping its tag); in eval mode no assign
 * to a `state` leaf is left either (a read of one reads its value; assigns
 * to parameters stay: the graph asked for them). Everything else keeps its
 * order; the branch not taken is left for `dce`. The result verifies.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>

static kiln_status resolve(kiln_graph *g, bool train)
{
    size_t n = (size_t)(g->nnodes ? g->nnodes : 1);
    bool *keep = malloc(n * sizeof *keep);
    int32_t *remap = malloc(n * sizeof *remap);
    if (!keep || !remap) {
        free(keep);
        free(remap);
        return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    }
    bool changed = false;
    for (int32_t i = 0; i < g->nnodes; i++) {
        kiln_node *x = &g->nodes[i];
        keep[i] = true;
        remap[i] = i;
        if (x->op == KILN_OP_TRAIN_EVAL) {
            int32_t chosen = x->inputs[train ? 0 : 1];
            changed = true;
            if (x->role == KILN_ROLE_NONE && !x->name) {
                keep[i] = false;
                remap[i] = remap[chosen];
                continue;
            }
            /* tagged: an identity copy of the chosen value keeps the tag */
            x->op = KILN_OP_RESHAPE;
            x->ninputs = 1;
            x->inputs[0] = chosen;
            x->nattrs = 1;
            x->attrs[0] = kiln_attr_ints("shape", x->rank, x->shape);
        } else if (!train && x->op == KILN_OP_ASSIGN &&
                   g->nodes[x->inputs[0]].role == KILN_ROLE_STATE) {
            changed = true;
            keep[i] = false;
            remap[i] = remap[x->inputs[1]];
        }
    }
    kiln_status st = changed ? kiln_graph_compact(g, keep, remap) : KILN_OK;
    free(keep);
    free(remap);
    return st;
}

kiln_status kiln_pass_train_mode(kiln_graph *g) { return resolve(g, true); }

kiln_status kiln_pass_eval_mode(kiln_graph *g) { return resolve(g, false); }
