/* runtime/aot_internal.h — what ahead-of-time artifacts (runtime/aot.c) need
 * from program assembly (runtime/program.c): the C source of a plan holding
 * only the forward entry, and the named tensors it touches with their places.
 * Internal: not installed, not part of the public API.
 */
#ifndef KILN_RUNTIME_AOT_INTERNAL_H
#define KILN_RUNTIME_AOT_INTERNAL_H

#include "kiln/kiln.h"

typedef struct kiln_aot_tensor {
    char *name; /* malloc'd */
    kiln_role role;
    kiln_dtype dtype;
    int rank;
    int64_t shape[KILN_MAX_RANK];
    size_t bytes;
    int space;      /* kiln_space: 1 P (parameters), 3 A (inputs, outputs) */
    int64_t offset; /* bytes into that memory (64-byte aligned) */
    int is_const;   /* a returned constant: no kernel writes it */
    double const_value;
} kiln_aot_tensor;

typedef struct kiln_aot_plan {
    char *source;     /* the translation unit: int kiln_forward(P, S, A, rt) only */
    size_t p_bytes;   /* the parameters' memory */
    size_t a_bytes;   /* what the forward entry needs of the arena */
    int nt;
    kiln_aot_tensor *t; /* every parameter, and the forward's interface tensors */
    char *cflags;     /* the target's compiler flags ("-march=native" for the host) */
} kiln_aot_plan;

struct kiln_plan;
/* Called by kiln_aot_plan_build with the plan of the forward entry alone
 * (one entry, "forward"; valid during the call only): the LLVM backend
 * writes its object from it. A non-zero status (with *err) fails the build. */
typedef kiln_status (*kiln_aot_plan_hook)(const struct kiln_plan *one, void *user, char **err);

/* Builds the C backend's plan of a forward graph (as kiln_compile would) and
 * describes its forward entry; hook (may be NULL) sees that entry's plan.
 * On failure *err (caller frees) says why. */
kiln_status kiln_aot_plan_build(const kiln_graph *forward, const kiln_compile_options *opt,
                                kiln_aot_plan_hook hook, void *user, kiln_aot_plan *out,
                                char **err);
void kiln_aot_plan_free(kiln_aot_plan *p);

#endif
