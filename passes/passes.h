/* passes/passes.h — the passes, one file each (see each file's header). */
#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "ir/graph.h"

/* passes/autodiff.c: gradients of the float scalar `loss` with respect to
 * wrt[0..nwrt); grads[k] receives the id of wrt[k]'s gradient. */
kiln_status kiln_autodiff(kiln_graph *g, int32_t loss, int nwrt, const int32_t *wrt,
                          int32_t *grads);

/* passes/infer.c: re-runs every node's shape rule and checks it agrees. */
kiln_status kiln_pass_infer(kiln_graph *g);
/* passes/cse.c: merges nodes with the same op, inputs, attributes and type. */
kiln_status kiln_pass_cse(kiln_graph *g);
/* passes/dce.c: removes computed nodes no output, loss, metric or assign needs. */
kiln_status kiln_pass_dce(kiln_graph *g);
/* passes/conv_lower.c: convolutions into im2col, packed GEMMs and col2im
 * (see the file's header); kernel builds run it on every entry. */
kiln_status kiln_pass_conv_lower(kiln_graph *g);
/* passes/mode.c: resolves train_eval to its training (train_mode) or
 * evaluation (eval_mode) value; eval_mode also drops assigns to state leaves
 * (the running-state updates only training makes). */
kiln_status kiln_pass_train_mode(kiln_graph *g);
kiln_status kiln_pass_eval_mode(kiln_graph *g);

/* passes/simplify.c: constant folding, algebraic identities, matmul-chain
 * reassociation and constant-weight linear folding (see the file's header). */
typedef enum kiln_simplify_kind {
    KILN_SIMPLIFY_MATMUL_RIGHT, /* (A@B)@C became A@(B@C) */
    KILN_SIMPLIFY_MATMUL_LEFT,  /* A@(B@C) became (A@B)@C */
    KILN_SIMPLIFY_LINEAR_FOLD,  /* (x@W1^T [+b1])@W2^T became x@(W2@W1)^T [+ b1@W2^T] */
} kiln_simplify_kind;

/* One matmul rewrite: A[m,k] @ B[k,n] @ C[n,p] (for a linear fold: x[m,k],
 * W1^T [k,n], W2^T [n,p]) and the flops of the order it had and took. */
typedef struct kiln_simplify_record {
    kiln_simplify_kind kind;
    int64_t m, k, n, p;
    double flops_before, flops_after;
} kiln_simplify_record;

#define KILN_SIMPLIFY_MAX_RECORDS 16

typedef struct kiln_simplify_stats {
    int folded;       /* computed scalars replaced by consts */
    int identities;   /* nodes replaced by an operand or one simpler node */
    int reassociated; /* matmul chains reordered */
    int linear_folds; /* constant-weight linear maps merged */
    int rounds;       /* rewrite rounds run (the last one changes nothing) */
    int32_t nodes_before, nodes_after;
    double matmul_flops_before, matmul_flops_after; /* every matmul in the graph */
    int nrecords;     /* the first KILN_SIMPLIFY_MAX_RECORDS matmul rewrites */
    kiln_simplify_record records[KILN_SIMPLIFY_MAX_RECORDS];
} kiln_simplify_stats;

kiln_status kiln_pass_simplify(kiln_graph *g);
/* The same, filling *stats (when not NULL). */
kiln_status kiln_pass_simplify_stats(kiln_graph *g, kiln_simplify_stats *stats);

/* passes/memplan.c: offsets for an entry's intermediates in one arena.
 * planned[i] marks the nodes to place (computed values with no other
 * storage), bytes[i] their sizes. Kernels run in order[0..norder) (node ids;
 * NULL: node order); every planned node and every node reading one must be
 * in it. A node lives from the kernel that writes it to the last kernel that
 * reads it, both included; nodes alive at the same time get disjoint bytes.
 * offset_out[i] (per node; 0 for unplanned ones) is a multiple of align (a
 * power of two); *total_out, the arena's size, a multiple of align, at most
 * the sum of the aligned sizes. Greedy placement over several orderings,
 * the best kept; deterministic. KILN_ERR_INVALID on bad arguments. */
kiln_status kiln_plan_memory(const kiln_graph *g, const int32_t *order, int32_t norder,
                             const bool *planned, const int64_t *bytes, int64_t align,
                             int64_t *offset_out, int64_t *total_out);

/* The same over explicit lifetimes: buffer i (of n) lives over kernel steps
 * [start[i], end[i]] and needs bytes[i]; buffers with start < 0 or bytes < 0
 * are not placed (offset 0). Used when kernels run fused groups. */
kiln_status kiln_plan_memory_spans(int32_t n, const int32_t *start, const int32_t *end,
                                   const int64_t *bytes, int64_t align, int64_t *offset_out,
                                   int64_t *total_out);

/* passes/pipeline.c: the verifier after a pass, in debug builds. */
kiln_status kiln_verify_after(kiln_graph *g, const char *pass);

/* passes/rebuild.c: what passes that rebuild the graph (appending copies
 * of its n old nodes) share. tagged: the node has a role or a name (copies
 * must keep it). move_tag: the copy r of old node i (old: a copy of it
 * taken before nodes were added) takes its role, metric kind and name.
 * undo: puts the graph of n nodes back (names from holder[i], the copy that
 * took node i's name, or -1). sweep: drops the old nodes and the copies
 * nothing needs. copy_leaf: appends a copy of input leaf i (old: a copy of
 * it taken before nodes were added) that takes its name and parameter
 * group; *out is the copy (the graph is unchanged on failure). */
bool kiln_rebuild_tagged(const kiln_node *n);
kiln_status kiln_rebuild_copy_leaf(kiln_graph *g, const kiln_node *old, int32_t i, int32_t *out);
void kiln_rebuild_move_tag(kiln_graph *g, const kiln_node *old, int32_t i, int32_t r);
void kiln_rebuild_undo(kiln_graph *g, int32_t n, const int32_t *holder);
kiln_status kiln_rebuild_sweep(kiln_graph *g, int32_t n);

#endif
