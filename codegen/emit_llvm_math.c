/* codegen/emit_llvm_math.c — kiln's f32 math functions as LLVM IR, and the
 * libm functions a module calls.
 *
 * Expects: a module being built (emit_llvm_internal.h).
 * Guarantees: kiln.expf, kiln.logf, kiln.log1pf, kiln.tanhf and kiln.erff,
 * internal and always inlined, are codegen/vmath_src.inc's kiln_expf,
 * kiln_logf, kiln_log1pf, kiln_tanhf and kiln_erff operation for operation:
 * the same constants, the same float operations in the same order (no
 * fast-math flags, so LLVM neither contracts a * b + c into an FMA nor
 * reassociates), kiln__sel as `select`, bit casts as `bitcast`, integer
 * steps on i32 with C's unsigned/signed shifts. gcc does not contract either
 * in C11 mode, so every input gives the C backend's bits, scalar or
 * vectorized. Each function is defined the first time a kernel uses it.
 * libm calls are `nobuiltin` (not folded, not rewritten into other calls:
 * libm's bits at run time, as the C backend's). kl_runtime_names lists
 * every external function a module may call, with its address here, for
 * the JIT's symbol table (codegen/llvm_jit.c).
 */
#include "codegen/emit_llvm_internal.h"

#if KILN_HAVE_LLVM

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct mb {
    kl_mod *m;
    LLVMBuilderRef b;
    LLVMTypeRef f, u;
} mb;

static LLVMValueRef C(mb *q, float v)
{
    return LLVMConstReal(q->f, (double)v);
}
static LLVMValueRef U(mb *q, uint32_t v)
{
    return LLVMConstInt(q->u, v, 0);
}
static LLVMValueRef add(mb *q, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFAdd(q->b, a, b, "");
}
static LLVMValueRef sub(mb *q, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFSub(q->b, a, b, "");
}
static LLVMValueRef mul(mb *q, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFMul(q->b, a, b, "");
}
static LLVMValueRef dvd(mb *q, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFDiv(q->b, a, b, "");
}
static LLVMValueRef f2u(mb *q, LLVMValueRef a)
{
    return LLVMBuildBitCast(q->b, a, q->u, "");
}
static LLVMValueRef u2f(mb *q, LLVMValueRef a)
{
    return LLVMBuildBitCast(q->b, a, q->f, "");
}
static LLVMValueRef sel(mb *q, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(q->b, c, a, b, "");
}
static LLVMValueRef fcmp(mb *q, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildFCmp(q->b, p, a, b, "");
}
/* q = q * s + c */
static LLVMValueRef horner(mb *q, LLVMValueRef acc, LLVMValueRef s, float c)
{
    return add(q, mul(q, acc, s), C(q, c));
}

static LLVMValueRef call_vm(mb *q, int which, LLVMValueRef x);

static LLVMValueRef expf_body(mb *q, LLVMValueRef x)
{
    LLVMValueRef xc = sel(q, fcmp(q, LLVMRealOGT, x, C(q, 89.0f)), C(q, 89.0f), x);
    xc = sel(q, fcmp(q, LLVMRealOLT, xc, C(q, -104.0f)), C(q, -104.0f), xc);
    LLVMValueRef t = add(q, mul(q, xc, C(q, 0x1.715476p+0f)), C(q, 0x1.8p23f));
    LLVMValueRef n = sub(q, t, C(q, 0x1.8p23f));
    LLVMValueRef r = sub(q, xc, mul(q, n, C(q, 0x1.62e4p-1f)));
    r = sub(q, r, mul(q, n, C(q, 0x1.7f7d1cp-20f)));
    LLVMValueRef p = C(q, 0x1.6a23f2p-10f);
    p = horner(q, p, r, 0x1.123a0ap-7f);
    p = horner(q, p, r, 0x1.5558f2p-5f);
    p = horner(q, p, r, 0x1.555492p-3f);
    p = horner(q, p, r, 0x1.fffffcp-2f);
    p = add(q, C(q, 1.0f), add(q, r, mul(q, mul(q, r, r), p)));
    LLVMValueRef v =
        LLVMBuildAdd(q->b, LLVMBuildSub(q->b, f2u(q, t), U(q, 0x4b400000u), ""), U(q, 150u), "");
    LLVMValueRef a = LLVMBuildLShr(q->b, v, U(q, 1), "");
    LLVMValueRef b = LLVMBuildSub(q->b, v, a, "");
    LLVMValueRef sa =
        u2f(q, LLVMBuildShl(q->b, LLVMBuildAdd(q->b, a, U(q, 52u), ""), U(q, 23), ""));
    LLVMValueRef sb =
        u2f(q, LLVMBuildShl(q->b, LLVMBuildAdd(q->b, b, U(q, 52u), ""), U(q, 23), ""));
    return mul(q, mul(q, p, sa), sb);
}

static LLVMValueRef log1p_core(mb *q, LLVMValueRef f)
{
    static const float c[9] = {-0x1.3819acp-4f, 0x1.084482p-3f,  -0x1.0f39c2p-3f,
                               0x1.227252p-3f,  -0x1.542742p-3f, 0x1.99a3e8p-3f,
                               -0x1.000426p-2f, 0x1.55555p-2f,   -0x1.fffff8p-2f};
    LLVMValueRef p = C(q, c[0]);
    for (int i = 1; i < 9; i++)
        p = horner(q, p, f, c[i]);
    return mul(q, mul(q, f, f), p);
}

/* (x > lo) & (x < hi) & ..., as C's & of comparisons */
static LLVMValueRef band(mb *q, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildAnd(q->b, a, b, "");
}

static LLVMValueRef logf_body(mb *q, LLVMValueRef x)
{
    LLVMValueRef sub_ = fcmp(q, LLVMRealOLT, x, C(q, 0x1p-126f));
    LLVMValueRef xs = sel(q, sub_, mul(q, x, C(q, 0x1p23f)), x);
    LLVMValueRef ks = sel(q, sub_, C(q, -23.0f), C(q, 0.0f));
    LLVMValueRef t = LLVMBuildAdd(q->b, f2u(q, xs), U(q, 0x3f800000u - 0x3f3504f3u), "");
    LLVMValueRef e = LLVMBuildSIToFP(q->b, LLVMBuildLShr(q->b, t, U(q, 23), ""), q->f, "");
    LLVMValueRef k = add(q, sub(q, e, C(q, 127.0f)), ks);
    LLVMValueRef m =
        LLVMBuildAdd(q->b, LLVMBuildAnd(q->b, t, U(q, 0x7fffffu), ""), U(q, 0x3f3504f3u), "");
    LLVMValueRef f = sub(q, u2f(q, m), C(q, 1.0f));
    LLVMValueRef lo = add(q, log1p_core(q, f), mul(q, k, C(q, 0x1.7f7d1cp-20f)));
    LLVMValueRef res = add(q, add(q, f, lo), mul(q, k, C(q, 0x1.62e4p-1f)));
    LLVMValueRef sp = sel(q, fcmp(q, LLVMRealOEQ, x, C(q, 0.0f)), C(q, -INFINITY),
                          sel(q, fcmp(q, LLVMRealOLT, x, C(q, 0.0f)), C(q, NAN), x));
    LLVMValueRef ok =
        band(q, fcmp(q, LLVMRealOGT, x, C(q, 0.0f)), fcmp(q, LLVMRealOLT, x, C(q, INFINITY)));
    return sel(q, ok, res, sp);
}

static LLVMValueRef log1pf_body(mb *q, LLVMValueRef x)
{
    LLVMValueRef u = add(q, C(q, 1.0f), x);
    LLVMValueRef c = sel(q, fcmp(q, LLVMRealOGT, x, C(q, 1.0f)), sub(q, C(q, 1.0f), sub(q, u, x)),
                         sub(q, x, sub(q, u, C(q, 1.0f))));
    LLVMValueRef t = LLVMBuildAdd(q->b, f2u(q, u), U(q, 0x3f800000u - 0x3f3504f3u), "");
    LLVMValueRef ki = LLVMBuildSub(q->b, LLVMBuildLShr(q->b, t, U(q, 23), ""), U(q, 127), "");
    LLVMValueRef k = LLVMBuildSIToFP(q->b, ki, q->f, "");
    LLVMValueRef mm =
        LLVMBuildAdd(q->b, LLVMBuildAnd(q->b, t, U(q, 0x7fffffu), ""), U(q, 0x3f3504f3u), "");
    LLVMValueRef f = sub(q, u2f(q, mm), C(q, 1.0f));
    LLVMValueRef kc = sel(q, LLVMBuildICmp(q->b, LLVMIntSGT, ki, U(q, 126), ""), U(q, 126), ki);
    LLVMValueRef sc =
        u2f(q, LLVMBuildShl(q->b, LLVMBuildSub(q->b, U(q, 127), kc, ""), U(q, 23), ""));
    LLVMValueRef d = mul(q, c, sc);
    d = mul(q, d, sub(q, C(q, 1.0f), mul(q, f, sub(q, C(q, 1.0f), f))));
    LLVMValueRef lo = add(q, log1p_core(q, f), add(q, d, mul(q, k, C(q, 0x1.7f7d1cp-20f))));
    LLVMValueRef res = add(q, add(q, f, lo), mul(q, k, C(q, 0x1.62e4p-1f)));
    LLVMValueRef sp = sel(q, fcmp(q, LLVMRealOEQ, x, C(q, -1.0f)), C(q, -INFINITY),
                          sel(q, fcmp(q, LLVMRealOLT, x, C(q, -1.0f)), C(q, NAN), x));
    LLVMValueRef ok = band(
        q, band(q, fcmp(q, LLVMRealOGT, x, C(q, -1.0f)), fcmp(q, LLVMRealOLT, x, C(q, INFINITY))),
        fcmp(q, LLVMRealUNE, x, C(q, 0.0f)));
    return sel(q, ok, res, sp);
}

/* r with the sign bit of x */
static LLVMValueRef copysign_bits(mb *q, LLVMValueRef r, LLVMValueRef x)
{
    LLVMValueRef s = LLVMBuildAnd(q->b, f2u(q, x), U(q, 0x80000000u), "");
    return u2f(q, LLVMBuildOr(q->b, f2u(q, r), s, ""));
}

static LLVMValueRef fabs_bits(mb *q, LLVMValueRef x)
{
    return u2f(q, LLVMBuildAnd(q->b, f2u(q, x), U(q, 0x7fffffffu), ""));
}

static LLVMValueRef tanhf_body(mb *q, LLVMValueRef x)
{
    LLVMValueRef ax = fabs_bits(q, x);
    LLVMValueRef s = mul(q, ax, ax);
    LLVMValueRef p = C(q, -0x1.9b23ap-8f);
    p = horner(q, p, s, 0x1.593aeep-6f);
    p = horner(q, p, s, -0x1.b9283ep-5f);
    p = horner(q, p, s, 0x1.110d24p-3f);
    p = horner(q, p, s, -0x1.55554ap-2f);
    LLVMValueRef small = add(q, ax, mul(q, ax, mul(q, s, p)));
    LLVMValueRef e = call_vm(q, KL_VM_EXP, mul(q, C(q, 2.0f), ax));
    LLVMValueRef big = sub(q, C(q, 1.0f), dvd(q, C(q, 2.0f), add(q, e, C(q, 1.0f))));
    LLVMValueRef r = sel(q, fcmp(q, LLVMRealOLT, ax, C(q, 0.55f)), small, big);
    return copysign_bits(q, r, x);
}

static LLVMValueRef erff_body(mb *q, LLVMValueRef x)
{
    LLVMValueRef ax = fabs_bits(q, x);
    LLVMValueRef s = mul(q, ax, ax);
    LLVMValueRef p = C(q, -0x1.4534a8p-11f);
    p = horner(q, p, s, 0x1.49c8aep-8f);
    p = horner(q, p, s, -0x1.b6f358p-6f);
    p = horner(q, p, s, 0x1.ce211cp-4f);
    p = horner(q, p, s, -0x1.81270cp-2f);
    p = horner(q, p, s, 0x1.06eba6p-3f);
    LLVMValueRef small = add(q, ax, mul(q, ax, p));
    LLVMValueRef a = sel(q, fcmp(q, LLVMRealOGT, ax, C(q, 4.0f)), C(q, 4.0f), ax);
    LLVMValueRef d = sub(q, a, C(q, 2.4375f));
    LLVMValueRef g = C(q, 0x1.a33ebep-13f);
    g = horner(q, g, d, -0x1.4c299ep-13f);
    g = horner(q, g, d, 0x1.5956ccp-9f);
    g = horner(q, g, d, -0x1.709a14p-7f);
    g = horner(q, g, d, 0x1.dcd52p-5f);
    g = horner(q, g, d, -0x1.707994p-2f);
    g = horner(q, g, d, -0x1.88d888p+0f);
    LLVMValueRef big = sub(q, C(q, 1.0f), call_vm(q, KL_VM_EXP, sub(q, g, mul(q, a, a))));
    LLVMValueRef r = sel(q, fcmp(q, LLVMRealOLT, ax, C(q, 0.875f)), small, big);
    return copysign_bits(q, r, x);
}

static const char *const vm_names[KL_VM_COUNT] = {"kiln.expf", "kiln.logf", "kiln.log1pf",
                                                  "kiln.tanhf", "kiln.erff"};

/* The function of `which`, defined on first use (with its own builder, so
 * the caller's position is untouched). */
static LLVMValueRef vm_func(kl_mod *m, int which)
{
    if (m->vm[which]) return m->vm[which];
    LLVMTypeRef f = m->t_f32;
    LLVMTypeRef fty = LLVMFunctionType(f, &f, 1, 0);
    LLVMValueRef fn = LLVMAddFunction(m->m, vm_names[which], fty);
    m->vm[which] = fn;
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    kl_attr(m, fn, LLVMAttributeFunctionIndex, "alwaysinline");
    kl_attr(m, fn, LLVMAttributeFunctionIndex, "nounwind");
    mb q = {.m = m, .b = LLVMCreateBuilderInContext(m->c), .f = f, .u = m->t_i32};
    LLVMPositionBuilderAtEnd(q.b, LLVMAppendBasicBlockInContext(m->c, fn, "entry"));
    LLVMValueRef x = LLVMGetParam(fn, 0), r;
    switch (which) {
    case KL_VM_EXP:
        r = expf_body(&q, x);
        break;
    case KL_VM_LOG:
        r = logf_body(&q, x);
        break;
    case KL_VM_LOG1P:
        r = log1pf_body(&q, x);
        break;
    case KL_VM_TANH:
        r = tanhf_body(&q, x);
        break;
    default:
        r = erff_body(&q, x);
        break;
    }
    LLVMBuildRet(q.b, r);
    LLVMDisposeBuilder(q.b);
    return fn;
}

static LLVMValueRef call_vm(mb *q, int which, LLVMValueRef x)
{
    LLVMValueRef fn = vm_func(q->m, which);
    LLVMTypeRef f = q->f;
    return LLVMBuildCall2(q->b, LLVMFunctionType(f, &f, 1, 0), fn, &x, 1, "");
}

LLVMValueRef kl_vmath(kl_mod *m, int which, LLVMValueRef x)
{
    LLVMValueRef fn = vm_func(m, which);
    LLVMTypeRef f = m->t_f32;
    return kl_call(m, LLVMFunctionType(f, &f, 1, 0), fn, &x, 1);
}

/* ---- libm ---- */

static const char *const lm_names[KL_LM_COUNT] = {"exp", "log", "log1p", "tanh",
                                                  "erf", "pow", "powf"};

LLVMValueRef kl_libm(kl_mod *m, int which, LLVMValueRef *args, unsigned n)
{
    if (!m->lm[which]) {
        bool f32 = which == KL_LM_POWF;
        LLVMTypeRef t = f32 ? m->t_f32 : m->t_f64;
        LLVMTypeRef pt[2] = {t, t};
        unsigned np = which == KL_LM_POW || which == KL_LM_POWF ? 2 : 1;
        m->lm_ty[which] = LLVMFunctionType(t, pt, np, 0);
        m->lm[which] = LLVMAddFunction(m->m, lm_names[which], m->lm_ty[which]);
        kl_attr(m, m->lm[which], LLVMAttributeFunctionIndex, "nounwind");
    }
    LLVMValueRef call = kl_call(m, m->lm_ty[which], m->lm[which], args, n);
    unsigned kind = LLVMGetEnumAttributeKindForName("nobuiltin", 9);
    if (kind)
        LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex,
                                 LLVMCreateEnumAttribute(m->c, kind, 0));
    return call;
}

/* What a module may call: libm (kl_libm, and fmod/fmodf that frem lowers
 * to, fma/fmaf that llvm.fma lowers to without FMA hardware) and the C
 * library's memory functions (LLVM turns copy and fill loops into them). */
const char *const kl_runtime_names[] = {"exp",    "log",     "log1p", "tanh",  "erf",  "pow",
                                        "powf",   "fmod",    "fmodf", "fma",   "fmaf", "memset",
                                        "memcpy", "memmove", "sqrt",  "sqrtf", NULL};

void *kl_runtime_address(int i)
{
    switch (i) {
    case 0:
        return (void *)(uintptr_t)&exp;
    case 1:
        return (void *)(uintptr_t)&log;
    case 2:
        return (void *)(uintptr_t)&log1p;
    case 3:
        return (void *)(uintptr_t)&tanh;
    case 4:
        return (void *)(uintptr_t)&erf;
    case 5:
        return (void *)(uintptr_t)&pow;
    case 6:
        return (void *)(uintptr_t)&powf;
    case 7:
        return (void *)(uintptr_t)&fmod;
    case 8:
        return (void *)(uintptr_t)&fmodf;
    case 9:
        return (void *)(uintptr_t)&fma;
    case 10:
        return (void *)(uintptr_t)&fmaf;
    case 11:
        return (void *)(uintptr_t)&memset;
    case 12:
        return (void *)(uintptr_t)&memcpy;
    case 13:
        return (void *)(uintptr_t)&memmove;
    case 14:
        return (void *)(uintptr_t)&sqrt;
    case 15:
        return (void *)(uintptr_t)&sqrtf;
    default:
        return NULL;
    }
}

#else
typedef int kiln_emit_llvm_math_unused; /* built without LLVM */
#endif
