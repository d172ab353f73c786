/* ir/ops_leaf.c — leaves (input, const) and the in-place write (assign). */
#include "ir/ops.h"

#include <string.h>

kiln_status kiln_input_shape(kiln_graph *g, kiln_node *n)
{
    if (n->role == KILN_ROLE_NONE || n->role >= KILN_ROLE_OUTPUT)
        return kiln_errorf(g, KILN_ERR_INVALID, "input '%s' needs a leaf role (input, target, "
                           "param, const, state or hparam), not '%s'",
                           n->name ? n->name : "?", kiln_role_name((kiln_role)n->role));
    int64_t init = kiln_attr_get_int(n, "init");
    if (init < KILN_INIT_ZEROS || init > KILN_INIT_NORMAL)
        return kiln_errorf(g, KILN_ERR_INVALID, "input '%s': unknown init %lld",
                           n->name ? n->name : "?", (long long)init);
    return KILN_OK;
}

kiln_status kiln_input_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                           double *out)
{
    /* Leaves are set by the interpreter's caller, never computed. */
    (void)in;
    (void)out;
    return kiln_errorf(g, KILN_ERR_INTERNAL, "input '%s' evaluated as an op",
                       n->name ? n->name : "?");
}

kiln_status kiln_const_shape(kiln_graph *g, kiln_node *n)
{
    (void)g;
    n->dtype = (uint8_t)kiln_attr_get_int(n, "dtype");
    n->rank = 0;
    return KILN_OK;
}

kiln_status kiln_const_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                           double *out)
{
    (void)g;
    (void)in;
    out[0] = kiln_attr_get_float(n, "value");
    return KILN_OK;
}

kiln_status kiln_assign_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *dst = &g->nodes[n->inputs[0]], *v = &g->nodes[n->inputs[1]];
    if (dst->op != KILN_OP_INPUT ||
        (dst->role != KILN_ROLE_PARAM && dst->role != KILN_ROLE_STATE))
        return kiln_errorf(g, KILN_ERR_INVALID,
                           "assign: the destination must be a param or state leaf");
    char a[128], b[128];
    if (dst->dtype != v->dtype || dst->rank != v->rank ||
        memcmp(dst->shape, v->shape, (size_t)dst->rank * sizeof dst->shape[0]) != 0)
        return kiln_errorf(g, KILN_ERR_SHAPE, "assign: value %s does not match '%s' %s",
                           kiln_node_type_str(v, a, sizeof a), dst->name ? dst->name : "?",
                           kiln_node_type_str(dst, b, sizeof b));
    n->dtype = dst->dtype;
    n->rank = dst->rank;
    memcpy(n->shape, dst->shape, sizeof n->shape);
    return KILN_OK;
}

kiln_status kiln_assign_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    memcpy(out, in[1], (size_t)kiln_node_numel(n) * sizeof *out);
    (void)g;
    return KILN_OK;
}
