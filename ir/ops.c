/* ir/ops.c — the op registry table, generated from ir/ops.def. */
#include "ir/ops.h"

#include <string.h>

const kiln_op_info kiln_ops[KILN_OP_COUNT] = {
#define KILN_OP(ID, nm, ar, fu, at, sh, gr, rf, co, sc, lo)                                    \
    [KILN_OP_##ID] = {.name = nm, .arity = ar, .fusion = fu, .attrs = at, .shape = sh,         \
                      .grad = gr, .ref = rf, .cost = co, .scalar = sc, .lower = lo},
#include "ir/ops.def"
#undef KILN_OP
};

int kiln_op_lookup(const char *name)
{
    for (int i = 0; i < KILN_OP_COUNT; i++)
        if (strcmp(kiln_ops[i].name, name) == 0) return i;
    return -1;
}

void kiln_cost_default(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    double b = (double)kiln_node_numel(n) * (double)kiln_dtype_size((kiln_dtype)n->dtype);
    for (int i = 0; i < n->ninputs; i++) {
        const kiln_node *x = &g->nodes[n->inputs[i]];
        b += (double)kiln_node_numel(x) * (double)kiln_dtype_size((kiln_dtype)x->dtype);
    }
    *flops = kiln_ops[n->op].fusion == KILN_FUSE_LEAF ? 0.0 : (double)kiln_node_numel(n);
    *bytes = b;
}

kiln_status kiln_nograd(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    (void)dy;
    (void)dx;
    char d[160];
    kiln_node_desc(g, node, d, sizeof d);
    const kiln_loc *l = &g->nodes[node].loc;
    if (l->file)
        return kiln_errorf(g, KILN_ERR_UNSUPPORTED,
                           "autodiff: op '%s' has no gradient rule (node %s, from %s:%d:%d); "
                           "a parameter's gradient would flow through it",
                           kiln_ops[g->nodes[node].op].name, d, l->file, l->line, l->col);
    return kiln_errorf(g, KILN_ERR_UNSUPPORTED,
                       "autodiff: op '%s' has no gradient rule (node %s); a parameter's "
                       "gradient would flow through it",
                       kiln_ops[g->nodes[node].op].name, d);
}
