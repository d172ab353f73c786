/* codegen/llvm.h — the LLVM backend: the same plan as the C backend
 * (codegen/codegen.h: entries, kernels, places, the three memories P/S/A and
 * kiln_rt), built into an LLVM module through the LLVM C API
 * (codegen/emit_llvm*.c), optimised with the new pass manager and compiled
 * in process with ORC LLJIT (codegen/llvm_jit.c). No C compiler, no disk.
 *
 * Entry points have the C backend's signature and meaning:
 *
 *     int kiln_<entry>(char *P, char *S, char *A, const kiln_rt *rt);
 *
 * returning 0, or (kernel index in the entry) * 8 + (check code) when a
 * kernel's run-time check fails (later kernels do not run). Every kernel-IR
 * op has the C emitter's semantics (NaN-propagating min/max, integer x / 0 ==
 * 0, saturating float-to-integer casts, u8/bool arithmetic in C's promoted
 * int, kiln's own f32 exp/log/log1p/tanh/erf with the same operations in the
 * same order as codegen/vmath_src.inc, libm for f64 and pow/fmod), so
 * elementwise results are bit-identical to the C backend's; loops with the
 * vector hint may reassociate sums into locals, as `#pragma omp simd
 * reduction` does in C (last bits of a reduction may differ between the two
 * backends, never between thread counts). GEMM statements sum k ascending in
 * f32 with FMA where the host has it (the C backend's chain; see
 * codegen/emit_llvm_gemm.c). Parallel loops are outlined by the C emitter's
 * own rule (kiln_ce_plan_outlining) and run on rt->parallel_for; results do
 * not depend on the number of threads.
 *
 * Built without LLVM (KILN_HAVE_LLVM undefined or 0), every function returns
 * KILN_ERR_UNSUPPORTED (or NULL) with a message saying so.
 */
#ifndef KILN_CODEGEN_LLVM_H
#define KILN_CODEGEN_LLVM_H

#include "codegen/codegen.h"

typedef struct kiln_llvm_jit kiln_llvm_jit;

/* Whether this build has the LLVM backend (1) or only its stubs (0). */
int kiln_llvm_available(void);

/* Builds the plan's module (the entries and semantics of kiln_emit_c_source),
 * optimises it with the new pass manager ("default<O3>") for a target
 * machine from the host's CPU name and features, and JIT-compiles it with
 * ORC LLJIT; every entry point is compiled before this returns. *seconds
 * (may be NULL): build + optimise + codegen time. On failure *err (may be
 * NULL; the caller frees it) says why: an inconsistent plan (a buffer
 * without a place, an unsupported dtype: KILN_ERR_INVALID / _UNSUPPORTED),
 * a module that does not verify or an LLVM error (KILN_ERR_INTERNAL,
 * quoting LLVM's message), out of memory. */
kiln_status kiln_llvm_load(const kiln_plan *plan, kiln_llvm_jit **out, double *seconds, char **err);

/* What kiln_llvm_load2 measured, in seconds. */
typedef struct kiln_llvm_times {
    double emit;     /* building the module from the plan */
    double optimize; /* the "default<O3>" pipeline */
    double codegen;  /* creating the JIT, machine code, symbol lookups */
    int parts;       /* modules compiled side by side, one thread each (llvm_jit.c) */
} kiln_llvm_times;

/* kiln_llvm_load, and with sigs (may be NULL) the kernels' signatures and
 * their address table @kiln_kernels (codegen.h, "kernel signatures");
 * times (may be NULL) gets the phases. */
kiln_status kiln_llvm_load2(const kiln_plan *plan, kiln_kfuncs *sigs, kiln_llvm_jit **out,
                            kiln_llvm_times *times, char **err);

/* The address of a symbol of the compiled module ("kiln_train_step", ...),
 * or NULL when it has none. */
void *kiln_llvm_sym(kiln_llvm_jit *j, const char *name);

/* Frees the JIT and all its code (entry addresses become invalid). NULL is
 * fine. */
void kiln_llvm_free(kiln_llvm_jit *j);

/* Writes the optimised module as an object file for `triple` and `cpu`
 * (NULL: the host's triple, CPU and features; a cpu given alone is taken
 * with its default features). The object defines the kiln_<entry> symbols
 * and calls libm (exp, log, log1p, tanh, erf, pow, powf, fmod, fmodf) and
 * memset/memcpy/memmove. */
kiln_status kiln_llvm_emit_object(const kiln_plan *plan, const char *triple, const char *cpu,
                                  const char *path, char **err);

/* The module's textual IR as the emitter builds it (before optimisation), a
 * malloc'd string; NULL on failure, with *err (caller frees) saying why. */
char *kiln_llvm_module_text(const kiln_plan *plan, char **err);

#endif
