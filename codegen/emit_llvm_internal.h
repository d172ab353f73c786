/* codegen/emit_llvm_internal.h — what the parts of the LLVM emitter share:
 * codegen/emit_llvm.c (values, expressions, statements, loops, outlined
 * parallel loops), codegen/emit_llvm_entry.c (kernels, entries, the module,
 * the target's vector width), codegen/emit_llvm_gemm.c (GEMM statements),
 * codegen/emit_llvm_vec.c (outer loops as vector code)
 * and codegen/emit_llvm_math.c (kiln's f32 math functions as IR, libm),
 * plus the module builder that codegen/llvm_jit.c drives. Not a public
 * interface.
 *
 * Value representation (what keeps the C emitter's semantics exact): an
 * expression of dtype t is held as C holds it after the usual promotions —
 * f32 as float, f64 as double, i32 as i32, i64 as i64, and u8 and bool as
 * i32 (C's promoted int: u8 + u8 is an int, a comparison is an int 0/1).
 * Buffers and locals hold the stored type (u8 and bool as i8); a store
 * truncates as C's assignment to uint8_t does, a bool local is set to
 * (v != 0) as C's _Bool is.
 */
#ifndef KILN_CODEGEN_EMIT_LLVM_INTERNAL_H
#define KILN_CODEGEN_EMIT_LLVM_INTERNAL_H

#include "codegen/emit_c_internal.h" /* bufinfo, kiln_ce_plan_outlining, kiln_ce_operands */
#include "codegen/llvm_compat.h"

#if KILN_HAVE_LLVM

#include <stdbool.h>
#include <stdint.h>

/* kiln's f32 math functions (codegen/vmath_src.inc), one internal function
 * each, defined on first use. */
enum { KL_VM_EXP, KL_VM_LOG, KL_VM_LOG1P, KL_VM_TANH, KL_VM_ERF, KL_VM_COUNT };

/* libm functions the module calls (declared on first use, `nobuiltin` calls
 * so that LLVM neither folds nor rewrites them: the C backend gets libm's
 * bits at run time too). */
enum {
    KL_LM_EXP,
    KL_LM_LOG,
    KL_LM_LOG1P,
    KL_LM_TANH,
    KL_LM_ERF,
    KL_LM_POW,
    KL_LM_POWF,
    KL_LM_COUNT
};

/* The module being built. */
typedef struct kl_mod {
    LLVMContextRef c;
    LLVMModuleRef m;
    LLVMBuilderRef b;
    LLVMTypeRef t_void, t_i1, t_i8, t_i32, t_i64, t_f32, t_f64;
    LLVMTypeRef t_ptr;  /* the generic pointer: `ptr` (i8 * on LLVM 14) */
    LLVMTypeRef t_task; /* void (ptr ctx, i64 lo, i64 hi): a parallel loop's chunk */
    LLVMTypeRef t_pfor; /* void (ptr pool, i64 n, ptr fn, ptr ctx): rt->parallel_for */
    LLVMTypeRef t_rt;   /* struct kiln_rt { ptr pool; ptr parallel_for; } */
    unsigned md_loop;   /* the "llvm.loop" metadata kind */
    /* the target: GEMM register tiles */
    int vw;   /* f32 lanes per vector: 16 (AVX-512), 8 (AVX/AVX2), 4 */
    bool fma; /* fused multiply-add in hardware (GEMM sums with llvm.fma) */
    LLVMValueRef vm[KL_VM_COUNT];
    LLVMValueRef lm[KL_LM_COUNT];
    LLVMTypeRef lm_ty[KL_LM_COUNT];
    const char *error; /* the first inconsistency met; building goes on */
    char errbuf[320];
    int nfuncs; /* functions made so far (unique names) */
} kl_mod;

/* Records a problem (the first one wins). */
void kl_fail(kl_mod *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A function being built over kernel k (the kernel's own, an outlined
 * loop's chunk, a GEMM's). */
typedef struct kl_fn {
    kl_mod *m;
    const kiln_kernel *k;
    const kiln_graph *g;
    const bufinfo *bi;
    /* kernel function only: which top-level loops are outlined (see
     * kiln_ce_plan_outlining); NULL elsewhere */
    const uint8_t *outline;
    const int32_t *owner, *sowner;
    LLVMValueRef fn;
    LLVMValueRef rt;         /* const kiln_rt *, or NULL where there is none */
    LLVMBasicBlockRef entry; /* allocas only; branches to the body at close */
    LLVMBasicBlockRef body;
    LLVMBuilderRef ab;   /* builder for allocas (end of entry) */
    LLVMValueRef *buf;   /* per kernel buffer: its pointer here, or NULL */
    LLVMValueRef *local; /* per local: its alloca here (made on first use) */
    LLVMValueRef *var;   /* per loop variable: its value where it is bound */
    LLVMValueRef *val;   /* per expression: its value in the current statement */
    int32_t *stack;      /* expressions with a value, in order (for undo) */
    int32_t nstack;
    uint32_t *seen; /* per expression: a visit mark (kl_needs_guard) */
    uint32_t gen;
    bool is_kernel; /* the kernel's function: checks return from it */
} kl_fn;

/* A counted loop: var over [lo, hi). */
typedef struct kl_loop {
    LLVMBasicBlockRef pre, head, exit;
    LLVMValueRef phi, hi;
} kl_loop;

/* ---- types and values (emit_llvm.c) ---- */
LLVMTypeRef kl_cty(kl_mod *m, int dtype); /* an expression's type (u8/bool: i32) */
LLVMTypeRef kl_mty(kl_mod *m, int dtype); /* a buffer element's or local's type */
LLVMValueRef kl_i64(kl_mod *m, int64_t v);
LLVMValueRef kl_i32(kl_mod *m, int64_t v);
LLVMValueRef kl_f32(kl_mod *m, double v);
/* The address of element idx (i64) of buffer pointer p whose elements are elem. */
LLVMValueRef kl_elem_ptr(kl_mod *m, LLVMValueRef p, LLVMTypeRef elem, LLVMValueRef idx);
LLVMValueRef kl_load(kl_mod *m, LLVMTypeRef t, LLVMValueRef p, unsigned align);
void kl_store(kl_mod *m, LLVMValueRef v, LLVMValueRef p, unsigned align);
/* The enum attribute `name` ("noalias", "alwaysinline", ...) on function fn
 * at index (LLVMAttributeFunctionIndex, or 1 + parameter). */
void kl_attr(kl_mod *m, LLVMValueRef fn, unsigned index, const char *name);
/* Calls a declared or defined function. */
LLVMValueRef kl_call(kl_mod *m, LLVMTypeRef fty, LLVMValueRef fn, LLVMValueRef *args, unsigned n);
/* Loop metadata on the latch branch `br`: llvm.loop.vectorize.enable when
 * vectorize; unroll < 0: llvm.loop.unroll.disable, > 0: unroll.count. */
void kl_loop_md(kl_mod *m, LLVMValueRef br, bool vectorize, int unroll);
void kl_loop_vectorize(kl_mod *m, LLVMValueRef br); /* kl_loop_md(m, br, true, 0) */

/* ---- functions over a kernel (emit_llvm.c) ---- */
/* Opens function `name` of type fty (internal linkage) over f's kernel,
 * builder at its body. */
bool kl_fn_open(kl_fn *nf, kl_mod *m, const kiln_kernel *k, const kiln_graph *g, const bufinfo *bi,
                const char *name, LLVMTypeRef fty);
/* Branches entry to body and frees the per-function arrays. */
void kl_fn_close(kl_fn *f);
/* The alloca of local l in f (made, zeroed, on first use). */
LLVMValueRef kl_local_ptr(kl_fn *f, int32_t l);
/* A fresh alloca in f's entry block. */
LLVMValueRef kl_alloca(kl_fn *f, LLVMTypeRef t, unsigned align, const char *name);
/* Counted loops; known_nonempty skips the lo < hi test. The loop variable is
 * L->phi between begin and end. */
void kl_loop_begin(kl_fn *f, kl_loop *L, LLVMValueRef lo, LLVMValueRef hi, bool known_nonempty);
LLVMValueRef kl_loop_end(kl_fn *f, kl_loop *L); /* returns the latch branch */
/* The statement list from s, at the builder's position. top: the kernel
 * function's top level (outlining and GEMMs apply). */
void kl_stmts(kl_fn *f, int32_t s, bool top);
/* Marks what statement s (and when `list`, the statements after it) use:
 * locals read or set (lmark), locals set (smark), buffers (bmark). Arrays
 * may be NULL. */
/* What statement s takes from its kernel when it becomes a function of its
 * own: the parameter buffers it uses and the locals it only reads (malloc'd
 * lists the caller frees, also on failure); false when out of memory. */
bool kl_captures(kl_fn *f, int32_t s, int32_t **bufs, int *nb, int32_t **vals, int *nv);
void kl_uses(const kiln_kernel *k, int32_t s, bool list, uint8_t *lmark, uint8_t *smark,
             uint8_t *bmark);
/* A context struct for a chunk function: buffer pointers bufs[0..nb) and the
 * values of locals vals[0..nv) (stored types), filled in f; returns its
 * alloca, its type in *ty. */
LLVMValueRef kl_ctx_pack(kl_fn *f, const int32_t *bufs, int nb, const int32_t *vals, int nv,
                         LLVMTypeRef *ty);
/* The run function of a chunk, `void rname(i64 lo, i64 hi, ptr bufs...,
 * vals...)`: buffers noalias where the C emitter's are restrict, by-value
 * locals stored into its own allocas, always inlined into its chunk
 * function (so the noalias facts become scopes there). */
bool kl_run_open(kl_fn *rf, kl_fn *f, const char *rname, const int32_t *bufs, int nb,
                 const int32_t *vals, int nv, LLVMTypeRef *rty);
/* The chunk function `name` (ctx, lo, hi) that loads the context and calls
 * run; the context is packed in f at the end of block `here` (*ctx_out),
 * where the builder is left. NULL when out of memory. */
LLVMValueRef kl_chunk_make(kl_fn *f, LLVMBasicBlockRef here, const char *name, LLVMValueRef run,
                           LLVMTypeRef rty, const int32_t *bufs, int nb, const int32_t *vals,
                           int nv, LLVMValueRef *ctx_out);
/* rt->parallel_for(rt->pool, n, fn, ctx) from f. */
void kl_call_pfor(kl_fn *f, LLVMValueRef n, LLVMValueRef fn, LLVMValueRef ctx);
/* A unique function name: "<base>.<suffix><counter>". */
void kl_fn_name(kl_mod *m, char *out, size_t len, const char *base, const char *suffix);

/* The scalar emitter's expression value (memoized until kl_forget, which
 * ends a statement), buffer pointer and C conversion, for emit_llvm_vec.c. */
LLVMValueRef kl_ex(kl_fn *f, int32_t e);
void kl_forget(kl_fn *f);
LLVMValueRef kl_buf_ptr(kl_fn *f, int32_t b);
LLVMValueRef kl_conv(kl_mod *m, LLVMValueRef v, LLVMTypeRef to);

/* The predicates of comparison op (KX_LT ... KX_NE): ordered float ones
 * (!= unordered, as C), signed integer ones; false for any other op. */
bool kl_cmp_pred(int op, LLVMRealPredicate *rp, LLVMIntPredicate *ip);

/* ---- outer loops as vector code (emit_llvm_vec.c) ---- */
/* Loop s over [lo, hi) (i64 values) W = m->vw iterations at a time when its
 * body holds inner loops and is one emit_llvm_vec.c proves equivalent:
 * emits the vector loop over [lo, lo + (hi - lo) / W * W) and returns that
 * end, where the caller's scalar loop starts; NULL (nothing emitted) when
 * the loop is not one it vectorises. */
LLVMValueRef kl_vec_outer_loop(kl_fn *f, int32_t s, LLVMValueRef lo, LLVMValueRef hi);

/* ---- GEMM statements (emit_llvm_gemm.c) ---- */
void kl_emit_gemm(kl_fn *f, int32_t s);

/* ---- math (emit_llvm_math.c) ---- */
/* kiln_<op>f(x) for float x: a call of the internal function (always
 * inlined), the operations of codegen/vmath_src.inc in their order. */
LLVMValueRef kl_vmath(kl_mod *m, int which, LLVMValueRef x);
/* A call of libm function `which` on args (nobuiltin). */
LLVMValueRef kl_libm(kl_mod *m, int which, LLVMValueRef *args, unsigned n);
/* The names of the libm and C library functions a module may call (for the
 * JIT's symbol table), NULL-terminated, and their addresses in this process. */
extern const char *const kl_runtime_names[];
void *kl_runtime_address(int i);

/* ---- the module (emit_llvm_entry.c) ---- */
/* Builds the plan's module in context c for a target of `vw` f32 lanes,
 * with or without FMA, into *out (verified). With sigs, the module also
 * defines @kiln_kernels and *sigs describes it (codegen.h, "kernel
 * signatures"; emptied on failure). On failure *out is NULL and *err (may
 * be NULL; caller frees) says why. */
/* A module that holds only part of the plan's kernels, so that parts are
 * optimised and compiled on threads of their own (codegen/llvm_jit.c) and
 * linked by the JIT. Kernels are numbered in build order (a kernel built
 * once for two entries is one number). With owner set, kernel f gets its
 * body in the part owner[f] and is an external function with a name every
 * part agrees on ("kk<f>.<name>"); part 0 also holds the entries and
 * @kiln_kernels, and declares the kernels other parts define. weight (may
 * be NULL; as many slots as the plan has kernel calls) gets, per kernel
 * built here, the instructions of its function and of the functions made
 * for it (outlined loops, GEMMs, math), before optimisation; *nfuncs the
 * number of distinct kernels. */
typedef struct kl_split {
    int part;
    const int *owner; /* NULL: the whole plan in one module */
    int64_t *weight;
    int nfuncs;
} kl_split;

kiln_status kl_build_module(const kiln_plan *plan, LLVMContextRef c, int vw, bool fma,
                            kiln_kfuncs *sigs, kl_split *split, LLVMModuleRef *out, char **err);
/* The host's CPU name and features (LLVM's strings; dispose with
 * LLVMDisposeMessage), and the GEMM's lanes and FMA they imply. */
void kl_host_target(char **cpu, char **features, int *vw, bool *fma);
void kl_target_from(const char *cpu, const char *features, const char *triple, int *vw, bool *fma);

#endif /* KILN_HAVE_LLVM */
#endif
