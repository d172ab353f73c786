/* passes/fuse.h — the fusion plan of an entry graph: which nodes become
 * kernels, which are computed inside other kernels, which share storage.
 *
 * Every non-leaf node gets one of three fates:
 *
 *   INLINE  computed where it is read, inside the kernel of each reader, with
 *           no storage: pointwise ops (their scalar rules composed), views
 *           of inlined values (reshape, flatten, broadcast_to: an index
 *           remap), one_hot, and reductions whose only reader reads each of
 *           their elements once (the reduction loop is emitted at the read).
 *           A scalar (one element) inlined into a kernel is computed once at
 *           the kernel's top.
 *   ALIAS   a reshape or flatten of a stored value: no kernel, it shares its
 *           source's storage (row-major order is unchanged).
 *   GROUP   a member of a group: one loop nest computes all members. A group
 *           has an anchor (the node whose lowering rule drives the loops:
 *           matmul, a reduction, softmax, a loss, a shape op, or for an
 *           elementwise group its first pointwise node) and members that
 *           join it:
 *             - tails: pointwise nodes of the anchor's output shape that read
 *               the anchor (directly or through inlined pointwise nodes of
 *               that shape) at the same element; applied in the anchor's
 *               store (a matmul's tail runs in the GEMM's epilogue);
 *             - siblings (elementwise groups): pointwise nodes of the group's
 *               shape that share a non-scalar source with it.
 *           A member is stored when something outside the group reads it,
 *           when it is returned (a role), or when it is an `assign` (its
 *           storage is the destination).
 *
 * A value becomes INLINE only when that cannot recompute expensive work: a
 * pointwise node with several readers is inlined when its expression is
 * cheap (a few arithmetic ops, no transcendental); values read by a matmul
 * (its operands) or by ops that read each element several times (softmax,
 * cross_entropy) are stored.
 *
 * Kernels run groups in the order the groups were created (node order of
 * their anchors). A node joins an existing group only if every stored value
 * it reads (through inlined nodes) comes from a leaf, from an earlier group,
 * or from the group itself at the same element, and, for an assign, if
 * nothing outside the group still reads the destination's old value later;
 * so running the kernels in group order computes what node order computes.
 * Consecutive groups that only update parameters and optimizer state
 * (elementwise groups ending in assigns) share one kernel: the optimizer
 * update of the parameters that no GEMM tail took is one kernel, and it
 * runs as early as what it reads and the readers of the old values allow
 * (so the gradients it reads die sooner).
 *
 * Implicit im2col (kiln_fuse_options.implicit_im2col): a rank-2 f32 matmul
 * (a GEMM) whose B operand is im2col(x) seen as a matrix (reshape to
 * [C*kh*kw, N*OH*OW], and for a convolution group a slice of its rows) takes
 * the im2col as a *producer* of its B: the group records the im2col node
 * (kiln_fgroup.b_im2col) and the GEMM packs op(B)'s panels straight from x
 * (codegen/gemm.h: PACKB), transposed or not. The im2col, the reshape and the
 * slice then become INLINE (no kernel, no storage) when every reader of them
 * is such a GEMM; otherwise they stay (the GEMMs that can still read x). The
 * packed values are those im2col stores, so the bits do not change. A GEMM
 * whose A (not transposed) is such a column matrix, and whose B is not,
 * makes op(A)'s blocks from x the same way (kiln_fgroup.a_im2col; gemm.h:
 * PACKA): a convolution's weight gradient computed as cols @ dy^T
 * (passes/conv_lower.c), so that in a training step the forward GEMM and
 * the weight gradient both read the image and the column matrix is never
 * stored.
 *
 * Expects: a verified graph in topological order.
 * Guarantees: the plan above; deterministic.
 */
#ifndef KILN_PASSES_FUSE_H
#define KILN_PASSES_FUSE_H

#include "ir/graph.h"

typedef enum kiln_fate {
    KILN_FATE_LEAF,   /* inputs, parameters, constants: no kernel */
    KILN_FATE_INLINE, /* computed where read */
    KILN_FATE_ALIAS,  /* shares alias_of's storage */
    KILN_FATE_GROUP,  /* computed by group[node]'s kernel */
} kiln_fate;

typedef struct kiln_fgroup {
    int32_t anchor;   /* drives the loops */
    bool elementwise; /* anchor is pointwise: loops over its shape */
    int32_t *members; /* node order, anchor first */
    int32_t nmembers;
    int32_t gemm_out; /* matmul anchors: the stored member the GEMM sums into */
    int32_t kernel;   /* the kernel that runs it */
    int32_t b_im2col; /* GEMM anchors: the im2col node whose column matrix the GEMM
                         packs op(B) from, reading the image (implicit im2col), or -1 */
    int64_t b_row0;   /* then: the first row of the columns B starts at (a group's) */
    int32_t a_im2col; /* the same for op(A) (A not transposed, B not an im2col), or -1 */
    int64_t a_row0;
} kiln_fgroup;

typedef struct kiln_fuse_plan {
    int32_t nnodes;
    uint8_t *fate;     /* kiln_fate per node */
    int32_t *group;    /* per node: its group, or -1 */
    uint8_t *stored;   /* per node: GROUP members with storage (and aliases' sources) */
    int32_t *alias_of; /* per node: for ALIAS, the stored node it shares; else -1 */
    kiln_fgroup *groups;
    int32_t ngroups;
    int32_t nkernels; /* kernels run groups; kernel k runs the groups with .kernel == k */
} kiln_fuse_plan;

typedef struct kiln_fuse_options {
    bool off; /* one group per non-leaf node, nothing inlined (for comparisons) */
    bool implicit_im2col; /* GEMMs pack B (or A) straight from im2col's image (C backend
                             only: the LLVM backend does not read kiln_kgemm.bimg, aimg) */
} kiln_fuse_options;

kiln_status kiln_fuse(const kiln_graph *g, const kiln_fuse_options *opt, kiln_fuse_plan **out);
void kiln_fuse_plan_free(kiln_fuse_plan *f);

/* Whether a matmul node lowers to the packed GEMM (rank-2 f32 operands),
 * which takes a tail in its epilogue. */
bool kiln_matmul_is_gemm(const kiln_graph *g, int32_t node);

#endif
