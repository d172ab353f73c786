/* codegen/lower_shape.c — lowering rules of the shape ops (reshape, flatten,
 * permute, broadcast_to, slice, unslice, concat, flip): data movement, no
 * arithmetic on values. Each computes what its reference implementation in
 * ir/ops_shape.c computes, and reads the attributes as the shape rules left
 * them (non-negative axes, slice bounds normalised to 0..dim).
 *
 * Every rule is a loop nest over the elements it writes with a row-major
 * store index (kiln_kx_index); only the index it loads from differs:
 *
 *   reshape, flatten   out[e] = x[e]                     (one flat loop)
 *   permute            out[i0..] = x[axis perm[d] at i_d]
 *   flip               out[i0..] = x[.., n_d - 1 - i_d for d in dims, ..]
 *   broadcast_to       out[i0..] = x[i0..] broadcast     (kiln_kx_load_at)
 *   slice              out[.., i, ..] = x[.., start + i*step, ..]
 *   unslice            out = 0; out[.., start + i*step, ..] = x[.., i, ..]
 *   concat             per input k: out[.., off_k + i, ..] = x_k[.., i, ..]
 */
#include "ir/kernel.h"
#include "ir/ops.h"

#include <string.h>

/* ---- helpers ---- */

/* Opens one loop per dimension of shape[rank], outermost first, and puts
 * their variables into idx. The outermost is marked parallel: every rule
 * here writes each output element at most once per nest, and keeps no
 * local. */
static void loops_open(kiln_kb *kb, int rank, const int64_t *shape, int32_t *idx)
{
    for (int d = 0; d < rank; d++) {
        idx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, shape[d]));
        if (d == 0) kiln_kb_hint(kb, 0, 1);
    }
}

static void loops_close(kiln_kb *kb, int rank)
{
    for (int d = 0; d < rank; d++) kiln_kb_end(kb);
}

/* start + v * step, without the trivial multiply and add. */
static int32_t affine(kiln_kb *kb, int32_t v, int64_t step, int64_t start)
{
    if (step != 1) v = kiln_kx_bin(kb, KX_MUL, v, kiln_kx_int(kb, step));
    if (start != 0) v = kiln_kx_bin(kb, KX_ADD, v, kiln_kx_int(kb, start));
    return v;
}

/* dst[didx] = src[sidx], both multi-indices of length `rank` (src read with
 * broadcasting when its rank is lower). */
static void copy_at(kiln_kb *kb, int32_t dst, const int32_t *didx, int32_t src,
                    const int32_t *sidx, int rank)
{
    kiln_kb_store(kb, dst, kiln_kx_index(kb, dst, rank, didx),
                  kiln_kx_load_at(kb, src, rank, sidx));
}

/* out[e] = x[e] over every element: reshape and flatten keep the row-major
 * order of the elements. */
static kiln_status flat_copy(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t e = kiln_kx_var(kb, kiln_kb_loop(kb, kiln_node_numel(&g->nodes[node])));
    kiln_kb_hint(kb, 0, 1);
    kiln_kb_store(kb, out, e, kiln_kx_load(kb, x, e));
    kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

/* ---- the rules ---- */

kiln_status kiln_reshape_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return flat_copy(kb, g, node);
}

kiln_status kiln_flatten_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return flat_copy(kb, g, node);
}

/* Output axis d is x's axis perm[d]: the loop of output axis d indexes x
 * along perm[d]. */
kiln_status kiln_permute_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_attr *perm = kiln_node_attr(n, "perm");
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t oidx[KILN_MAX_RANK], xidx[KILN_MAX_RANK];
    loops_open(kb, n->rank, n->shape, oidx);
    for (int d = 0; d < n->rank; d++) xidx[perm->i[d]] = oidx[d];
    copy_at(kb, out, oidx, x, xidx, n->rank);
    loops_close(kb, n->rank);
    return kiln_kb_status(kb);
}

kiln_status kiln_broadcast_to_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t idx[KILN_MAX_RANK];
    loops_open(kb, n->rank, n->shape, idx);
    copy_at(kb, out, idx, x, idx, n->rank);
    loops_close(kb, n->rank);
    return kiln_kb_status(kb);
}

/* Output position i along axis reads x at start + i*step. */
kiln_status kiln_slice_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    int axis = (int)kiln_attr_get_int(n, "axis");
    int64_t start = kiln_attr_get_int(n, "start"), step = kiln_attr_get_int(n, "step");
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t oidx[KILN_MAX_RANK], xidx[KILN_MAX_RANK];
    loops_open(kb, n->rank, n->shape, oidx);
    memcpy(xidx, oidx, (size_t)n->rank * sizeof *xidx);
    xidx[axis] = affine(kb, oidx[axis], step, start);
    copy_at(kb, out, oidx, x, xidx, n->rank);
    loops_close(kb, n->rank);
    return kiln_kb_status(kb);
}

/* Two nests: zeros everywhere (unless x fills the whole axis), then x's
 * position i along axis written at start + i*step. */
kiln_status kiln_unslice_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_node *xn = &g->nodes[n->inputs[0]];
    int axis = (int)kiln_attr_get_int(n, "axis");
    int64_t start = kiln_attr_get_int(n, "start"), step = kiln_attr_get_int(n, "step");
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    /* the positions start + i*step are distinct and inside the axis, so
     * they cover it exactly when there are as many as its size */
    if (xn->shape[axis] != n->shape[axis]) {
        int32_t e = kiln_kx_var(kb, kiln_kb_loop(kb, kiln_node_numel(n)));
        kiln_kb_hint(kb, 0, 1);
        kiln_kb_store(kb, out, e, kiln_kx_float(kb, 0.0, (kiln_dtype)n->dtype));
        kiln_kb_end(kb);
    }
    int32_t xidx[KILN_MAX_RANK], oidx[KILN_MAX_RANK];
    loops_open(kb, xn->rank, xn->shape, xidx);
    memcpy(oidx, xidx, (size_t)xn->rank * sizeof *oidx);
    oidx[axis] = affine(kb, xidx[axis], step, start);
    copy_at(kb, out, oidx, x, xidx, n->rank);
    loops_close(kb, xn->rank);
    return kiln_kb_status(kb);
}

/* One nest per input, writing its block: input k's position i along axis
 * goes to off_k + i, off_k the sum of the earlier inputs' lengths. */
kiln_status kiln_concat_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    int axis = (int)kiln_attr_get_int(n, "axis");
    for (int k = 0; k < n->ninputs; k++) kiln_kb_in(kb, k); /* buffers: inputs, then out */
    int32_t out = kiln_kb_out(kb);
    int64_t off = 0;
    for (int k = 0; k < n->ninputs; k++) {
        const kiln_node *xn = &g->nodes[n->inputs[k]];
        int32_t x = kiln_kb_in(kb, k);
        if (kiln_node_numel(xn) > 0) {
            int32_t xidx[KILN_MAX_RANK], oidx[KILN_MAX_RANK];
            loops_open(kb, xn->rank, xn->shape, xidx);
            memcpy(oidx, xidx, (size_t)xn->rank * sizeof *oidx);
            oidx[axis] = affine(kb, xidx[axis], 1, off);
            copy_at(kb, out, oidx, x, xidx, n->rank);
            loops_close(kb, xn->rank);
        }
        off += xn->shape[axis];
    }
    return kiln_kb_status(kb);
}

/* Output position i along a flipped axis of size n reads x at n - 1 - i. */
kiln_status kiln_flip_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_attr *dims = kiln_node_attr(n, "dims");
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t oidx[KILN_MAX_RANK], xidx[KILN_MAX_RANK];
    loops_open(kb, n->rank, n->shape, oidx);
    memcpy(xidx, oidx, (size_t)n->rank * sizeof *xidx);
    for (int i = 0; i < dims->n; i++) {
        int d = (int)dims->i[i];
        xidx[d] = affine(kb, oidx[d], -1, n->shape[d] - 1);
    }
    copy_at(kb, out, oidx, x, xidx, n->rank);
    loops_close(kb, n->rank);
    return kiln_kb_status(kb);
}
