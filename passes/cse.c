/* passes/cse.c — common-subexpression elimination.
 *
 * Expects: a verified graph.
 * Guarantees: no two computed nodes (and no two constants) have the same op,
 * inputs, attributes, dtype and shape; uses of a removed duplicate read the
 * earlier node instead. Leaves (`input`) and assigns are never merged. A
 * duplicate that carries a role or a name passes it to the node it merges
 * into when that one has none; otherwise both are kept.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h;
}

static uint64_t node_hash(const kiln_node *n)
{
    uint64_t h = mix(n->op, n->dtype);
    h = mix(h, (uint64_t)n->rank);
    for (int i = 0; i < n->rank; i++) h = mix(h, (uint64_t)n->shape[i]);
    for (int i = 0; i < n->ninputs; i++) h = mix(h, (uint64_t)n->inputs[i]);
    for (int a = 0; a < n->nattrs; a++) {
        const kiln_attr *at = &n->attrs[a];
        uint64_t f;
        memcpy(&f, &at->f, sizeof f);
        h = mix(mix(h, at->kind), f);
        for (int k = 0; k < (at->kind == KILN_ATTR_INTS ? at->n : 1); k++)
            h = mix(h, (uint64_t)at->i[k]);
    }
    return h;
}

static bool same(const kiln_node *a, const kiln_node *b)
{
    if (a->op != b->op || a->dtype != b->dtype || a->rank != b->rank ||
        a->ninputs != b->ninputs || a->nattrs != b->nattrs)
        return false;
    if (memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0])) return false;
    if (a->ninputs && memcmp(a->inputs, b->inputs, (size_t)a->ninputs * sizeof a->inputs[0]))
        return false;
    for (int i = 0; i < a->nattrs; i++)
        if (!kiln_attr_equal(&a->attrs[i], &b->attrs[i])) return false;
    return true;
}

kiln_status kiln_pass_cse(kiln_graph *g)
{
    int32_t n = g->nnodes;
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    int32_t *table = malloc(cap * sizeof *table);
    int32_t *remap = malloc((size_t)(n ? n : 1) * sizeof *remap);
    bool *keep = malloc((size_t)(n ? n : 1) * sizeof *keep);
    if (!table || !remap || !keep) {
        free(table);
        free(remap);
        free(keep);
        return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < cap; i++) table[i] = -1;
    for (int32_t i = 0; i < n; i++) {
        kiln_node *nd = &g->nodes[i];
        remap[i] = i;
        keep[i] = true;
        for (int j = 0; j < nd->ninputs; j++) nd->inputs[j] = remap[nd->inputs[j]];
        if (nd->op == KILN_OP_INPUT || nd->op == KILN_OP_ASSIGN) continue;
        size_t slot = (size_t)node_hash(nd) & (cap - 1);
        while (table[slot] >= 0 && !same(&g->nodes[table[slot]], nd)) slot = (slot + 1) & (cap - 1);
        if (table[slot] < 0) {
            table[slot] = i;
            continue;
        }
        kiln_node *first = &g->nodes[table[slot]];
        bool tagged = nd->role != KILN_ROLE_NONE || nd->name;
        if (tagged && (first->role != KILN_ROLE_NONE || first->name)) continue;
        if (tagged) {
            first->role = nd->role;
            first->metric = nd->metric;
            first->name = nd->name;
            nd->name = NULL;
        }
        remap[i] = table[slot];
        keep[i] = false;
    }
    kiln_status st = kiln_graph_compact(g, keep, NULL);
    free(table);
    free(remap);
    free(keep);
    return st;
}
