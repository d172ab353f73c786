/* codegen/llvm_compat.h — every difference between the LLVM versions kiln
 * accepts (14 to 19; 19 preferred) in one header, for the LLVM backend's
 * sources (codegen/emit_llvm*.c, codegen/llvm_jit.c) only.
 *
 * Expects: KILN_HAVE_LLVM=1 and LLVM's include directory on the include path
 * (CMakeLists.txt finds both through llvm-config). Guarantees: LLVM's C API
 * headers included with their warnings silenced (kiln builds with -Wall
 * -Wextra -Werror; LLVM's headers are not written for that), and these
 * helpers, the same on every accepted version:
 *
 *   kl_ptr(ctx, elem)          a pointer type: opaque `ptr` from LLVM 15, a
 *                              typed `elem *` on LLVM 14 (no opaque pointers
 *                              by default there);
 *   kl_ptr_cast(b, p, elem)    p as a pointer to elem: a no-op with opaque
 *                              pointers, a bitcast on LLVM 14;
 *   kl_intrinsic(m, name, tys, n)  the declaration of an overloaded
 *                              intrinsic ("llvm.fma", "llvm.masked.load", ...);
 *   kl_symbol_map_pair         ORC's (name, evaluated symbol) pair type,
 *                              renamed in LLVM 15;
 *   kl_tsctx_context(ts)       the LLVMContext of a thread-safe context;
 *   kl_const_ptr(v, ptr)       a constant pointer (a function) as the generic
 *                              pointer type: itself with opaque pointers, a
 *                              constant bitcast on LLVM 14.
 *
 * Opaque and typed pointers differ only through kl_ptr / kl_ptr_cast: the
 * emitter passes every buffer as a pointer to i8 (kl_ptr(ctx, i8)) and casts
 * where it loads, stores or indexes a typed element.
 */
#ifndef KILN_CODEGEN_LLVM_COMPAT_H
#define KILN_CODEGEN_LLVM_COMPAT_H

#if defined(KILN_HAVE_LLVM) && KILN_HAVE_LLVM

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <llvm/Config/llvm-config.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#pragma GCC diagnostic pop

#include <string.h>

#if LLVM_VERSION_MAJOR < 14 || LLVM_VERSION_MAJOR > 19
#error "kiln's LLVM backend supports LLVM 14 to 19"
#endif

#define KL_OPAQUE_POINTERS (LLVM_VERSION_MAJOR >= 15)

static inline LLVMTypeRef kl_ptr(LLVMContextRef c, LLVMTypeRef elem)
{
#if KL_OPAQUE_POINTERS
    (void)elem;
    return LLVMPointerTypeInContext(c, 0);
#else
    (void)c;
    return LLVMPointerType(elem, 0);
#endif
}

static inline LLVMValueRef kl_ptr_cast(LLVMBuilderRef b, LLVMValueRef p, LLVMTypeRef elem)
{
#if KL_OPAQUE_POINTERS
    (void)b;
    (void)elem;
    return p;
#else
    LLVMTypeRef want = LLVMPointerType(elem, 0);
    if (LLVMTypeOf(p) == want) return p;
    return LLVMBuildBitCast(b, p, want, "");
#endif
}

/* The declaration of intrinsic `name` overloaded on tys[0..n). */
static inline LLVMValueRef kl_intrinsic(LLVMModuleRef m, const char *name, LLVMTypeRef *tys,
                                        size_t n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    if (!id) return NULL;
    return LLVMGetIntrinsicDeclaration(m, id, tys, n);
}

#if LLVM_VERSION_MAJOR >= 15
typedef LLVMOrcCSymbolMapPair kl_symbol_map_pair;
#else
typedef LLVMJITCSymbolMapPair kl_symbol_map_pair;
#endif

static inline LLVMContextRef kl_tsctx_context(LLVMOrcThreadSafeContextRef ts)
{
    return LLVMOrcThreadSafeContextGetContext(ts);
}

static inline LLVMValueRef kl_const_ptr(LLVMValueRef v, LLVMTypeRef ptr)
{
#if KL_OPAQUE_POINTERS
    (void)ptr;
    return v;
#else
    return LLVMConstBitCast(v, ptr);
#endif
}

#endif /* KILN_HAVE_LLVM */
#endif
