/* codegen/codegen.h — the contract between program assembly
 * (runtime/program.c), the C emitter (codegen/emit_c.c) and the compile-and-
 * load driver (codegen/cc.c).
 *
 * A compiled program has three memories, each one allocation owned by the
 * runtime: P (parameters), S (optimizer state) and A (the activation arena,
 * which also holds inputs, targets, hyperparameters and returned values at
 * fixed offsets shared by every entry point). Each entry point is a graph
 * (train, eval, forward) whose every node has a place: a memory and a byte
 * offset (64-byte aligned). The emitter writes one C translation unit:
 *
 *   // kernel k12_matmul: matmul(f32[64,784], f32[512,784]) -> f32[64,512]
 *   static int k12_matmul(const float *restrict b0, const float *restrict b1,
 *                         float *restrict b2) { ...loops...; return 0; }
 *   ...
 *   int kiln_train_step(char *restrict P, char *restrict S, char *restrict A,
 *                       const kiln_rt *rt)
 *   {
 *       int rc;
 *       if ((rc = k12_matmul((const float *)(A + 0), (const float *)(P + 0),
 *                            (float *)(A + 200704), rt))) return kiln_fail(12, rc);
 *       ...
 *       return 0;
 *   }
 *
 * An entry returns 0, or a positive code: (kernel index in the entry) * 8 +
 * check code, which kiln_plan_error_message turns into the kernel's check
 * message. Buffers a kernel both reads and writes are not `restrict`.
 *
 * Threads. The generated code is dlopen'd and cannot call libkiln, so an
 * entry takes the runtime's services as a kiln_rt (below; the translation
 * unit declares the same struct). A top-level loop that its lowering rule
 * marked parallel (kiln_kstmt.parallel: iterations write disjoint elements
 * and carry no local from one to the next) and that is worth splitting
 * (extent >= 2 and at least KILN_PAR_MIN_WORK scalar statements in the whole
 * nest, no run-time check inside, no buffer that shares storage) is
 * outlined: its iterations [lo, hi) become
 *
 *   static void k12_matmul_p0(void *ctx, int64_t lo, int64_t hi);
 *
 * reading the kernel's buffer pointers from a small struct, and the kernel
 * (which then takes `const kiln_rt *rt` as its last parameter) calls
 * rt->parallel_for(rt->pool, extent, k12_matmul_p0, &ctx). parallel_for
 * must call fn(ctx, lo, hi) over chunks that cover [0, extent) exactly once
 * and return only when all have finished, their writes visible to the
 * caller: that is the barrier before the next kernel. Each output element is
 * computed by the same code whatever the split, so results do not depend on
 * the number of threads. rt is never NULL; a runtime without threads passes
 * a parallel_for that calls fn(ctx, 0, n) (runtime/threadpool.h:
 * kiln_pool_rt(NULL)). The kiln_rt layout is part of the contract: change it
 * here and in the emitter together (the disk cache keys on the source, so
 * stale objects are never loaded).
 */
#ifndef KILN_CODEGEN_CODEGEN_H
#define KILN_CODEGEN_CODEGEN_H

#include "ir/kernel.h"

typedef enum kiln_space { KILN_SPACE_NONE, KILN_SPACE_P, KILN_SPACE_S, KILN_SPACE_A } kiln_space;

typedef struct kiln_place {
    uint8_t space; /* kiln_space; NONE for nodes without storage (consts inlined) */
    int64_t offset; /* bytes into that memory */
} kiln_place;

typedef struct kiln_plan_entry {
    const char *name;      /* "train_step", "eval_step", "forward": C symbol kiln_<name> */
    const kiln_graph *g;   /* the entry's graph */
    kiln_place *place;     /* per node of g */
    kiln_kernel **kernels; /* in execution order */
    int32_t nkernels;
} kiln_plan_entry;

struct kiln_cg_target;

typedef struct kiln_plan {
    kiln_plan_entry *entries;
    int nentries;
    const struct kiln_cg_target *target; /* what the code is for; NULL: the host */
    size_t p_bytes, s_bytes, a_bytes;
} kiln_plan;

/* Writes the translation unit of a plan; a malloc'd string (NULL when out of
 * memory). The source is deterministic: the same plan gives the same bytes. */
char *kiln_emit_c_source(const kiln_plan *plan);

/* ---- kernel signatures (runtime/ffi.c calls kernels by name) ----
 * An emitter asked for them (kiln_emit_c_source_sigs, kiln_llvm_load2)
 * describes the functions it wrote for the plan's kernels, and adds to the
 * unit a table of their addresses that the runtime reads once loaded:
 *
 *   void (*const kiln_kernels[])(void) = {(void (*)(void))k12_matmul, ...};  (C)
 *   @kiln_kernels = constant [n x ptr] [ptr @k12_matmul, ...]              (LLVM)
 *
 * A kernel function returns int (0, or the code of its failed run-time
 * check) and takes one pointer per parameter buffer (`bufs`: the kernel's
 * buffer indices, in order; consts and scratch arrays are not parameters),
 * then `const kiln_rt *rt` when `rt` is set. The kernels themselves stay
 * internal (static): the table is what makes them reachable, and it is
 * written only when asked, so --emit c, AOT units and the disk cache of
 * other callers are unchanged. */
#define KILN_KERNEL_TABLE "kiln_kernels"

typedef struct kiln_kfunc {
    char name[160];  /* unique in the unit: the C emitter's function name */
    int32_t slot;    /* its address: kiln_kernels[slot] (LLVM may share one
                        function between two names: same code) */
    int entry;       /* the plan entry and kernel index of its first use */
    int32_t kernel;
    int32_t *bufs;   /* per pointer parameter: the kernel's buffer index */
    uint8_t *rw;     /* per pointer parameter: 1 read, 2 written, 4 restrict */
    int32_t nbufs;
    bool rt;         /* takes const kiln_rt * after the buffers */
} kiln_kfunc;

typedef struct kiln_kfuncs {
    kiln_kfunc *f;
    int n, cap;
    int nslots; /* entries of the kiln_kernels table */
} kiln_kfuncs;

void kiln_kfuncs_free(kiln_kfuncs *t);
/* kiln_emit_c_source, plus the kiln_kernels table and its description in
 * *sigs (freed and refilled; empty when out of memory). */
char *kiln_emit_c_source_sigs(const kiln_plan *plan, kiln_kfuncs *sigs);

/* The message for an entry's failure code rc (> 0): "kernel k12_cross_entropy
 * (cross_entropy at model.kiln:9:8): a label is outside [0, C)". */
void kiln_plan_error_message(const kiln_plan_entry *e, int rc, char *buf, size_t len);

/* ---- compile and load (codegen/cc.c) ---- */

typedef struct kiln_so kiln_so; /* a loaded shared object */

typedef struct kiln_cc_options {
    const char *cc;        /* NULL: $CC, else "cc" */
    const char *cache_dir; /* NULL: $XDG_CACHE_HOME/kiln, else $HOME/.cache/kiln */
    int verbose;
} kiln_cc_options;

/* Compiles `source` with `<cc> -O3 -march=native -fPIC -shared` into a shared
 * object in the cache directory, keyed by a hash of the source, the compiler
 * and the flags (written to a temporary name and renamed, so processes can
 * share the cache), and dlopens it. A cache hit skips the compiler. On
 * failure *err (caller frees) says why: compiler not found (naming it and
 * $CC), compile errors (quoting the compiler's output and naming the kept
 * source file), dlopen errors. *cached tells whether it was a cache hit. */
kiln_status kiln_cc_load(const char *source, const kiln_cc_options *opt, kiln_so **out,
                         int *cached, double *seconds, char **err);
/* The address of a symbol, or NULL. */
void *kiln_so_sym(kiln_so *so, const char *name);
void kiln_so_close(kiln_so *so);

/* What entry points get from the runtime (see "Threads" above). The emitter
 * writes this declaration into every translation unit, member for member. */
typedef struct kiln_rt {
    void *pool;
    void (*parallel_for)(void *pool, int64_t n, void (*fn)(void *, int64_t, int64_t), void *ctx);
} kiln_rt;

/* The least number of scalar statements (stores, sets, checks) a loop nest
 * executes for the emitter to split it across the pool. */
#ifndef KILN_PAR_MIN_WORK
#define KILN_PAR_MIN_WORK 32768
#endif

typedef int (*kiln_entry_fn)(char *P, char *S, char *A, const kiln_rt *rt);

#endif
