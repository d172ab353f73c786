/* codegen/interp.c — the reference interpreter.
 *
 * Expects: a verified graph. Runs it op by op from the registry's reference
 * implementations, every value held as doubles and rounded after each op to
 * its node's dtype (f32 values are rounded to float, integers truncated,
 * bools made 0/1), so an f32 graph computes what f32 storage would hold,
 * with double-precision arithmetic inside each op. It is the oracle of the
 * tests and `--backend ref`; it is never the fast path.
 */
#include "ir/graph.h"
#include "ir/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct kiln_interp {
    kiln_graph *g; /* a private copy: the caller may free theirs */
    double **vals; /* one buffer per node */
    char err[2048];
};

static kiln_status ierr(kiln_interp *it, kiln_status st, const char *msg)
{
    snprintf(it->err, sizeof it->err, "%s", msg);
    return st;
}

/* Rounds n values to what dtype t can hold. */
static void round_to(kiln_dtype t, double *v, int64_t n)
{
    switch (t) {
    case KILN_F32:
        for (int64_t i = 0; i < n; i++) v[i] = (double)(float)v[i];
        break;
    case KILN_I32:
    case KILN_I64:
    case KILN_U8:
        for (int64_t i = 0; i < n; i++) v[i] = isfinite(v[i]) ? trunc(v[i]) : 0.0;
        break;
    case KILN_BOOL:
        for (int64_t i = 0; i < n; i++) v[i] = v[i] != 0.0;
        break;
    default: break;
    }
}

void kiln_interp_free(kiln_interp *it)
{
    if (!it) return;
    if (it->vals)
        for (int32_t i = 0; i < it->g->nnodes; i++) free(it->vals[i]);
    free(it->vals);
    kiln_graph_free(it->g);
    free(it);
}

kiln_status kiln_interp_new(const kiln_graph *g, kiln_interp **out)
{
    *out = NULL;
    if (!g) return KILN_ERR_INVALID;
    kiln_interp *it = calloc(1, sizeof *it);
    if (!it) return KILN_ERR_NOMEM;
    if (!(it->g = kiln_graph_clone(g)) ||
        !(it->vals = calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *it->vals))) {
        kiln_interp_free(it);
        return KILN_ERR_NOMEM;
    }
    for (int32_t i = 0; i < g->nnodes; i++) {
        int64_t n = kiln_node_numel(&g->nodes[i]);
        if (!(it->vals[i] = calloc((size_t)(n ? n : 1), sizeof(double)))) {
            kiln_interp_free(it);
            return KILN_ERR_NOMEM;
        }
    }
    *out = it;
    return KILN_OK;
}

const char *kiln_interp_error(const kiln_interp *it) { return it ? it->err : "no interpreter"; }

kiln_status kiln_interp_set(kiln_interp *it, kiln_value leaf, const double *data, size_t n)
{
    if (!it || !data) return KILN_ERR_INVALID;
    if (leaf < 0 || leaf >= it->g->nnodes) return ierr(it, KILN_ERR_INVALID, "no such node");
    const kiln_node *node = &it->g->nodes[leaf];
    char msg[512], d[160];
    if (node->op != KILN_OP_INPUT) {
        snprintf(msg, sizeof msg, "%s is not an input, parameter or state leaf",
                 kiln_node_desc(it->g, leaf, d, sizeof d));
        return ierr(it, KILN_ERR_INVALID, msg);
    }
    if ((int64_t)n != kiln_node_numel(node)) {
        snprintf(msg, sizeof msg, "%s holds %lld values, %zu given",
                 kiln_node_desc(it->g, leaf, d, sizeof d), (long long)kiln_node_numel(node), n);
        return ierr(it, KILN_ERR_SHAPE, msg);
    }
    memcpy(it->vals[leaf], data, n * sizeof *data);
    round_to((kiln_dtype)node->dtype, it->vals[leaf], (int64_t)n);
    return KILN_OK;
}

kiln_status kiln_interp_set_by_name(kiln_interp *it, const char *name, const double *data,
                                    size_t n)
{
    if (!it) return KILN_ERR_INVALID;
    kiln_value v = kiln_graph_find(it->g, name);
    if (v < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "no value named '%s' in graph '%s'", name ? name : "(null)",
                 it->g->name);
        return ierr(it, KILN_ERR_NOT_FOUND, msg);
    }
    return kiln_interp_set(it, v, data, n);
}

kiln_status kiln_interp_run(kiln_interp *it)
{
    if (!it) return KILN_ERR_INVALID;
    kiln_graph *g = it->g;
    const double *ins[64];
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op == KILN_OP_INPUT) continue;
        if (n->ninputs > 64) return ierr(it, KILN_ERR_UNSUPPORTED, "op with more than 64 inputs");
        for (int j = 0; j < n->ninputs; j++) ins[j] = it->vals[n->inputs[j]];
        kiln_status st = kiln_ops[n->op].ref(g, n, ins, it->vals[i]);
        if (st) {
            char d[160], msg[2048];
            snprintf(msg, sizeof msg, "%s: %.1800s", kiln_node_desc(g, i, d, sizeof d), g->err);
            return ierr(it, st, msg);
        }
        round_to((kiln_dtype)n->dtype, it->vals[i], kiln_node_numel(n));
    }
    /* Assigns take effect once the step is done: every read saw old values. */
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op == KILN_OP_ASSIGN)
            memcpy(it->vals[n->inputs[0]], it->vals[i],
                   (size_t)kiln_node_numel(n) * sizeof(double));
    }
    return KILN_OK;
}

const double *kiln_interp_value(const kiln_interp *it, kiln_value v)
{
    if (!it || v < 0 || v >= it->g->nnodes) return NULL;
    return it->vals[v];
}

const double *kiln_interp_value_by_name(const kiln_interp *it, const char *name)
{
    return it ? kiln_interp_value(it, kiln_graph_find(it->g, name)) : NULL;
}
