/* passes/autodiff.c — reverse-mode automatic differentiation.
 *
 * Expects: a verified graph, a float scalar `loss` node and a list of leaves
 * (or any nodes) to differentiate with respect to.
 * Guarantees: appends the backward nodes to the graph (forward nodes are left
 * untouched) and returns, per requested node, the id of its gradient, shaped
 * exactly like that node. Gradients come from the registry's gradient rules;
 * contributions on fan-out are summed; a gradient with a broadcast shape is
 * summed back to its input's shape; integer and bool values are never
 * differentiated. A requested node the loss does not depend on gets a zero
 * gradient. An op on the path without a gradient rule fails, naming the op
 * and its source location.
 */
#include "ir/graph.h"
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

kiln_status kiln_autodiff(kiln_graph *g, int32_t loss, int nwrt, const int32_t *wrt,
                          int32_t *grads)
{
    if (loss < 0 || loss >= g->nnodes)
        return kiln_errorf(g, KILN_ERR_INVALID, "autodiff: no loss node");
    const kiln_node *ln = &g->nodes[loss];
    if (ln->rank != 0 || !kiln_dtype_is_float((kiln_dtype)ln->dtype)) {
        char t[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "autodiff: the loss must be a float scalar, got %s",
                           kiln_node_type_str(ln, t, sizeof t));
    }
    int32_t nfwd = loss + 1;
    /* needed[i]: i depends on a wrt node (so it carries gradient) */
    bool *needed = calloc((size_t)nfwd, sizeof *needed);
    int32_t *adj = malloc((size_t)nfwd * sizeof *adj);
    if (!needed || !adj) {
        free(needed);
        free(adj);
        return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < nfwd; i++) adj[i] = -1;
    for (int k = 0; k < nwrt; k++)
        if (wrt[k] >= 0 && wrt[k] < nfwd &&
            kiln_dtype_is_float((kiln_dtype)g->nodes[wrt[k]].dtype))
            needed[wrt[k]] = true;
    for (int32_t i = 0; i < nfwd; i++) {
        const kiln_node *n = &g->nodes[i];
        if (needed[i] || !kiln_dtype_is_float((kiln_dtype)n->dtype)) continue;
        for (int j = 0; j < n->ninputs; j++)
            if (needed[n->inputs[j]]) needed[i] = true;
    }

    kiln_status st = KILN_OK;
    adj[loss] = kiln_b_const_like(g, 1.0, loss);
    if (adj[loss] < 0) st = (kiln_status)adj[loss];
    for (int32_t i = loss; i >= 0 && !st; i--) {
        if (adj[i] < 0 || !needed[i] || kiln_node_is_leaf(&g->nodes[i])) continue;
        int nin = g->nodes[i].ninputs;
        bool any = false;
        for (int j = 0; j < nin; j++) any |= needed[g->nodes[i].inputs[j]];
        if (!any) continue;
        int32_t dx[64];
        if (nin > 64) {
            st = kiln_errorf(g, KILN_ERR_UNSUPPORTED, "autodiff: more than 64 inputs");
            break;
        }
        for (int j = 0; j < nin; j++) dx[j] = -1;
        st = kiln_ops[g->nodes[i].op].grad(g, i, adj[i], dx);
        if (st) break;
        for (int j = 0; j < nin && !st; j++) {
            /* g->nodes may have moved: re-read through the index each time */
            int32_t x = g->nodes[i].inputs[j];
            if (!needed[x] || dx[j] < 0) continue;
            const kiln_node *xn = &g->nodes[x];
            int64_t shape[KILN_MAX_RANK];
            memcpy(shape, xn->shape, sizeof shape);
            int32_t d = kiln_b_sum_to(g, dx[j], xn->rank, shape);
            if (d >= 0 && adj[x] >= 0) d = kiln_b2(g, KILN_OP_ADD, adj[x], d);
            if (d < 0) st = (kiln_status)d;
            else adj[x] = d;
        }
    }
    for (int k = 0; k < nwrt && !st; k++) {
        int32_t w = wrt[k];
        if (w < 0 || w >= g->nnodes) {
            st = kiln_errorf(g, KILN_ERR_INVALID, "autodiff: no node %%%d", w);
            break;
        }
        if (w < nfwd && adj[w] >= 0) {
            grads[k] = adj[w];
            continue;
        }
        /* The loss does not depend on w: its gradient is zero. */
        const kiln_node *wn = &g->nodes[w];
        int64_t shape[KILN_MAX_RANK];
        memcpy(shape, wn->shape, sizeof shape);
        int rank = wn->rank;
        kiln_value z = kiln_b_const_like(g, 0.0, w);
        kiln_attr s = kiln_attr_ints("shape", rank, shape);
        z = kiln_build(g, kiln_op_lookup("broadcast_to"), 1, &z, 1, &s);
        if (z < 0) st = (kiln_status)z;
        grads[k] = z;
    }
    free(needed);
    free(adj);
    return st;
}
