/* codegen/emit_llvm.c — the LLVM emitter's core: kernel-IR expressions and
 * statements as LLVM IR, counted loops, and top-level parallel loops
 * outlined onto rt->parallel_for.
 *
 * Expects: kernels as lowering builds them (ir/kernel.h; the typing rules
 * tests/kernel_eval.c checks), the buffer classification of
 * codegen/emit_c_internal.h, and a function opened with kl_fn_open.
 * Guarantees: the C emitter's semantics, op for op (codegen/emit_c.c):
 *   - values as C holds them (u8/bool promoted to int; see
 *     emit_llvm_internal.h), stores truncating as C's assignments do;
 *   - min/max NaN-propagating (NaN is the positive quiet NaN of C's NAN)
 *     and otherwise `a > b ? a : b`; integer division and remainder through
 *     the C emitter's helper semantics (x / 0 == 0, x % 0 == 0, INT64_MIN /
 *     -1 wraps, u8 operands converted to uint8_t), plain division by a
 *     constant other than 0 and -1; float-to-integer casts truncating, NaN
 *     and +-inf giving 0, out-of-range values saturating;
 *   - f32 exp/log/log1p/tanh/erf as kiln's polynomials (emit_llvm_math.c),
 *     f64 ones and pow through libm, sqrt and fabs as LLVM intrinsics (IEEE
 *     exact), float remainder as frem (fmod's result);
 *   - no fast-math flags anywhere: no contraction into FMA, no
 *     reassociation, except what a vector-hinted loop's
 *     llvm.loop.vectorize.enable allows for sums into locals (as C's
 *     `#pragma omp simd reduction`);
 *   - select arms and the right side of && / || that would load from a
 *     buffer are evaluated only when taken (a branch), as C evaluates them;
 *   - a run-time check returns its code from the kernel function;
 *   - a top-level loop that kiln_ce_plan_outlining outlines becomes a chunk
 *     function over [lo, hi) reading its buffers and by-value locals from a
 *     context struct, run through rt->parallel_for; its locals and scratch
 *     arrays are its own (zeroed per chunk, as the C emitter declares them).
 * Inconsistencies (an id out of range, an unsupported dtype) are recorded
 * with kl_fail and emission goes on with placeholder values.
 */
#include "codegen/emit_llvm_internal.h"

#if KILN_HAVE_LLVM

#include "ir/ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kl_fail(kl_mod *m, const char *fmt, ...)
{
    if (m->error) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->errbuf, sizeof m->errbuf, fmt, ap);
    va_end(ap);
    m->error = m->errbuf;
}

/* ---- types and constants ---- */

static bool is_float_dt(int t)
{
    return t == KILN_F32 || t == KILN_F64;
}

LLVMTypeRef kl_cty(kl_mod *m, int t)
{
    switch (t) {
    case KILN_F32:
        return m->t_f32;
    case KILN_F64:
        return m->t_f64;
    case KILN_I64:
        return m->t_i64;
    case KILN_I32:
    case KILN_U8:
    case KILN_BOOL:
        return m->t_i32;
    default:
        kl_fail(m, "an unsupported dtype (%s)", kiln_dtype_name((kiln_dtype)t));
        return m->t_i32;
    }
}

LLVMTypeRef kl_mty(kl_mod *m, int t)
{
    switch (t) {
    case KILN_F32:
        return m->t_f32;
    case KILN_F64:
        return m->t_f64;
    case KILN_I32:
        return m->t_i32;
    case KILN_I64:
        return m->t_i64;
    case KILN_U8:
    case KILN_BOOL:
        return m->t_i8;
    default:
        kl_fail(m, "an unsupported dtype (%s)", kiln_dtype_name((kiln_dtype)t));
        return m->t_i8;
    }
}

LLVMValueRef kl_i64(kl_mod *m, int64_t v)
{
    return LLVMConstInt(m->t_i64, (unsigned long long)v, 1);
}
LLVMValueRef kl_i32(kl_mod *m, int64_t v)
{
    return LLVMConstInt(m->t_i32, (unsigned long long)v, 1);
}
LLVMValueRef kl_f32(kl_mod *m, double v)
{
    return LLVMConstReal(m->t_f32, v);
}

static bool is_fp_type(LLVMTypeRef t)
{
    LLVMTypeKind k = LLVMGetTypeKind(t);
    return k == LLVMFloatTypeKind || k == LLVMDoubleTypeKind;
}

static unsigned type_rank(LLVMTypeRef t)
{
    switch (LLVMGetTypeKind(t)) {
    case LLVMDoubleTypeKind:
        return 5;
    case LLVMFloatTypeKind:
        return 4;
    case LLVMIntegerTypeKind:
        return LLVMGetIntTypeWidth(t) >= 64 ? 3 : LLVMGetIntTypeWidth(t) >= 32 ? 2 : 1;
    default:
        return 0;
    }
}

LLVMValueRef kl_elem_ptr(kl_mod *m, LLVMValueRef p, LLVMTypeRef elem, LLVMValueRef idx)
{
    return LLVMBuildInBoundsGEP2(m->b, elem, kl_ptr_cast(m->b, p, elem), &idx, 1, "");
}

LLVMValueRef kl_load(kl_mod *m, LLVMTypeRef t, LLVMValueRef p, unsigned align)
{
    LLVMValueRef v = LLVMBuildLoad2(m->b, t, kl_ptr_cast(m->b, p, t), "");
    if (align) LLVMSetAlignment(v, align);
    return v;
}

void kl_store(kl_mod *m, LLVMValueRef v, LLVMValueRef p, unsigned align)
{
    LLVMValueRef s = LLVMBuildStore(m->b, v, kl_ptr_cast(m->b, p, LLVMTypeOf(v)));
    if (align) LLVMSetAlignment(s, align);
}

void kl_attr(kl_mod *m, LLVMValueRef fn, unsigned index, const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    if (!kind) return;
    LLVMAddAttributeAtIndex(fn, index, LLVMCreateEnumAttribute(m->c, kind, 0));
}

LLVMValueRef kl_call(kl_mod *m, LLVMTypeRef fty, LLVMValueRef fn, LLVMValueRef *args, unsigned n)
{
    return LLVMBuildCall2(m->b, fty, fn, args, n, "");
}

void kl_loop_md(kl_mod *m, LLVMValueRef br, bool vectorize, int unroll)
{
    LLVMMetadataRef ops[3];
    unsigned n = 1;
    ops[0] = LLVMTemporaryMDNode(m->c, NULL, 0);
    if (vectorize) {
        LLVMMetadataRef o[2] = {LLVMMDStringInContext2(m->c, "llvm.loop.vectorize.enable", 26),
                                LLVMValueAsMetadata(LLVMConstInt(m->t_i1, 1, 0))};
        ops[n++] = LLVMMDNodeInContext2(m->c, o, 2);
    }
    if (unroll < 0) {
        LLVMMetadataRef o[1] = {LLVMMDStringInContext2(m->c, "llvm.loop.unroll.disable", 24)};
        ops[n++] = LLVMMDNodeInContext2(m->c, o, 1);
    } else if (unroll > 0) {
        LLVMMetadataRef o[2] = {LLVMMDStringInContext2(m->c, "llvm.loop.unroll.count", 22),
                                LLVMValueAsMetadata(kl_i32(m, unroll))};
        ops[n++] = LLVMMDNodeInContext2(m->c, o, 2);
    }
    if (n == 1) {
        LLVMDisposeTemporaryMDNode(ops[0]);
        return;
    }
    LLVMMetadataRef tmp = ops[0];
    LLVMMetadataRef id = LLVMMDNodeInContext2(m->c, ops, n);
    LLVMMetadataReplaceAllUsesWith(tmp, id); /* the loop ID refers to itself; disposes of tmp */
    LLVMSetMetadata(br, m->md_loop, LLVMMetadataAsValue(m->c, id));
}

void kl_loop_vectorize(kl_mod *m, LLVMValueRef br)
{
    kl_loop_md(m, br, true, 0);
}

void kl_fn_name(kl_mod *m, char *out, size_t len, const char *base, const char *suffix)
{
    snprintf(out, len, "%s.%s%d", base, suffix, m->nfuncs++);
}

/* ---- C conversions ---- */

/* v converted to type `to` as C converts (assignment, argument, cast):
 * i8 is uint8_t, i32 and i64 are signed; float to integer truncates (an
 * out-of-range value saturates here, where C leaves it undefined). */
static LLVMValueRef conv(kl_mod *m, LLVMValueRef v, LLVMTypeRef to)
{
    LLVMTypeRef from = LLVMTypeOf(v);
    if (from == to) return v;
    bool ff = is_fp_type(from), tf = is_fp_type(to);
    if (ff && tf)
        return type_rank(to) > type_rank(from) ? LLVMBuildFPExt(m->b, v, to, "")
                                               : LLVMBuildFPTrunc(m->b, v, to, "");
    if (!ff && tf)
        return LLVMGetIntTypeWidth(from) == 8 ? LLVMBuildUIToFP(m->b, v, to, "")
                                              : LLVMBuildSIToFP(m->b, v, to, "");
    if (ff && !tf) {
        bool u8 = LLVMGetIntTypeWidth(to) == 8;
        LLVMTypeRef tys[2] = {to, from};
        LLVMValueRef f = kl_intrinsic(m->m, u8 ? "llvm.fptoui.sat" : "llvm.fptosi.sat", tys, 2);
        LLVMTypeRef fty = LLVMFunctionType(to, &from, 1, 0);
        return kl_call(m, fty, f, &v, 1);
    }
    unsigned wf = LLVMGetIntTypeWidth(from), wt = LLVMGetIntTypeWidth(to);
    if (wt < wf) return LLVMBuildTrunc(m->b, v, to, "");
    return wf == 8 ? LLVMBuildZExt(m->b, v, to, "") : LLVMBuildSExt(m->b, v, to, "");
}

/* An expression value (C type) as dtype t's stored type. */
static LLVMValueRef to_mem(kl_mod *m, LLVMValueRef v, int t)
{
    return conv(m, v, kl_mty(m, t));
}

/* A stored value of dtype t as an expression value (u8/bool promoted). */
static LLVMValueRef from_mem(kl_mod *m, LLVMValueRef v, int t)
{
    return conv(m, v, kl_cty(m, t));
}

/* C's truth of a value: v != 0 (floats: unordered-or-unequal, NaN is true). */
static LLVMValueRef truth(kl_mod *m, LLVMValueRef v)
{
    LLVMTypeRef t = LLVMTypeOf(v);
    if (is_fp_type(t)) return LLVMBuildFCmp(m->b, LLVMRealUNE, v, LLVMConstReal(t, 0.0), "");
    if (t == m->t_i1) return v;
    return LLVMBuildICmp(m->b, LLVMIntNE, v, LLVMConstInt(t, 0, 0), "");
}

static LLVMValueRef bool_int(kl_mod *m, LLVMValueRef c)
{
    return LLVMBuildZExt(m->b, c, m->t_i32, "");
}

/* ---- functions over a kernel ---- */

bool kl_fn_open(kl_fn *nf, kl_mod *m, const kiln_kernel *k, const kiln_graph *g, const bufinfo *bi,
                const char *name, LLVMTypeRef fty)
{
    memset(nf, 0, sizeof *nf);
    nf->m = m;
    nf->k = k;
    nf->g = g;
    nf->bi = bi;
    nf->fn = LLVMAddFunction(m->m, name, fty);
    LLVMSetLinkage(nf->fn, LLVMInternalLinkage);
    kl_attr(m, nf->fn, LLVMAttributeFunctionIndex, "nounwind");
    nf->entry = LLVMAppendBasicBlockInContext(m->c, nf->fn, "entry");
    nf->body = LLVMAppendBasicBlockInContext(m->c, nf->fn, "body");
    nf->ab = LLVMCreateBuilderInContext(m->c);
    LLVMPositionBuilderAtEnd(nf->ab, nf->entry);
    nf->buf = calloc((size_t)k->nbufs + 1, sizeof *nf->buf);
    nf->local = calloc((size_t)k->nlocals + 1, sizeof *nf->local);
    nf->var = calloc((size_t)k->nvars + 1, sizeof *nf->var);
    nf->val = calloc((size_t)k->nexprs + 1, sizeof *nf->val);
    nf->stack = calloc((size_t)k->nexprs + 1, sizeof *nf->stack);
    nf->seen = calloc((size_t)k->nexprs + 1, sizeof *nf->seen);
    LLVMPositionBuilderAtEnd(m->b, nf->body);
    if (!nf->buf || !nf->local || !nf->var || !nf->val || !nf->stack || !nf->seen) {
        kl_fail(m, "out of memory");
        return false;
    }
    return true;
}

void kl_fn_close(kl_fn *f)
{
    if (f->ab) {
        LLVMPositionBuilderAtEnd(f->ab, f->entry);
        LLVMBuildBr(f->ab, f->body);
        LLVMDisposeBuilder(f->ab);
    }
    free(f->buf);
    free(f->local);
    free(f->var);
    free(f->val);
    free(f->stack);
    free(f->seen);
    memset(f, 0, sizeof *f);
}

LLVMValueRef kl_alloca(kl_fn *f, LLVMTypeRef t, unsigned align, const char *name)
{
    LLVMValueRef a = LLVMBuildAlloca(f->ab, t, name);
    if (align) LLVMSetAlignment(a, align);
    return a;
}

LLVMValueRef kl_local_ptr(kl_fn *f, int32_t l)
{
    kl_mod *m = f->m;
    if (l < 0 || l >= f->k->nlocals) {
        kl_fail(m, "kernel %s: a local out of range", f->k->name);
        l = 0;
        if (f->k->nlocals == 0) return kl_alloca(f, m->t_i64, 0, "bad");
    }
    if (!f->local[l]) {
        LLVMTypeRef t = kl_mty(m, f->k->local_dtype[l]);
        char nm[24];
        snprintf(nm, sizeof nm, "t%d", l);
        f->local[l] = kl_alloca(f, t, 0, nm);
        LLVMBuildStore(f->ab, LLVMConstNull(t), f->local[l]);
    }
    return f->local[l];
}

/* Allocas of scratch buffers a function uses (made on first use). */
static LLVMValueRef scratch_ptr(kl_fn *f, int32_t b)
{
    kl_mod *m = f->m;
    if (!f->buf[b]) {
        const kiln_kbuf *kb = &f->k->bufs[b];
        LLVMTypeRef at = LLVMArrayType(kl_mty(m, kb->dtype), (unsigned)kb->shape[0]);
        char nm[24];
        snprintf(nm, sizeof nm, "b%d", b);
        LLVMValueRef a = kl_alloca(f, at, 64, nm);
        f->buf[b] = kl_ptr_cast(f->ab, a, m->t_i8);
    }
    return f->buf[b];
}

static LLVMValueRef buf_ptr(kl_fn *f, int32_t b)
{
    if (f->k->bufs[b].node < 0) return scratch_ptr(f, b);
    if (!f->buf[b]) {
        kl_fail(f->m, "kernel %s: buffer b%d is not available here", f->k->name, b);
        f->buf[b] = LLVMConstNull(f->m->t_ptr);
    }
    return f->buf[b];
}

void kl_loop_begin(kl_fn *f, kl_loop *L, LLVMValueRef lo, LLVMValueRef hi, bool known_nonempty)
{
    kl_mod *m = f->m;
    L->pre = LLVMGetInsertBlock(m->b);
    L->head = LLVMAppendBasicBlockInContext(m->c, f->fn, "loop");
    L->exit = LLVMAppendBasicBlockInContext(m->c, f->fn, "done");
    L->hi = hi;
    if (known_nonempty)
        LLVMBuildBr(m->b, L->head);
    else
        LLVMBuildCondBr(m->b, LLVMBuildICmp(m->b, LLVMIntSLT, lo, hi, ""), L->head, L->exit);
    LLVMPositionBuilderAtEnd(m->b, L->head);
    L->phi = LLVMBuildPhi(m->b, m->t_i64, "i");
    LLVMAddIncoming(L->phi, &lo, &L->pre, 1);
}

LLVMValueRef kl_loop_end(kl_fn *f, kl_loop *L)
{
    kl_mod *m = f->m;
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(m->b);
    LLVMValueRef next = LLVMBuildNSWAdd(m->b, L->phi, kl_i64(m, 1), "");
    LLVMValueRef br =
        LLVMBuildCondBr(m->b, LLVMBuildICmp(m->b, LLVMIntSLT, next, L->hi, ""), L->head, L->exit);
    LLVMAddIncoming(L->phi, &next, &latch, 1);
    LLVMMoveBasicBlockAfter(L->exit, latch);
    LLVMPositionBuilderAtEnd(m->b, L->exit);
    return br;
}

/* ---- expressions ---- */

static bool is_const_buf(const kl_fn *f, int32_t buf)
{
    int32_t node = f->k->bufs[buf].node;
    return node >= 0 && node < f->g->nnodes && f->g->nodes[node].op == KILN_OP_CONST;
}

static void memo(kl_fn *f, int32_t e, LLVMValueRef v)
{
    f->val[e] = v;
    f->stack[f->nstack++] = e;
}

/* Forgets the values computed since mark (leaving a conditional arm, or
 * ending a statement). */
static void forget(kl_fn *f, int32_t mark)
{
    while (f->nstack > mark)
        f->val[f->stack[--f->nstack]] = NULL;
}

static bool guard_rec(kl_fn *f, int32_t e)
{
    if (e < 0 || e >= f->k->nexprs || f->val[e] || f->seen[e] == f->gen) return false;
    f->seen[e] = f->gen;
    const kiln_kexpr *x = &f->k->exprs[e];
    if (x->op == KX_LOAD && x->a >= 0 && x->a < f->k->nbufs && !is_const_buf(f, x->a)) return true;
    int32_t ops[3];
    bool cond[3];
    int n = kiln_ce_operands(x, ops, cond);
    for (int i = 0; i < n; i++)
        if (guard_rec(f, ops[i])) return true;
    return false;
}

/* Whether evaluating e now would load from a buffer (a value not yet
 * computed): then a conditional evaluation needs a branch. */
static bool needs_guard(kl_fn *f, int32_t e)
{
    if (++f->gen == 0) {
        memset(f->seen, 0, (size_t)f->k->nexprs * sizeof *f->seen);
        f->gen = 1;
    }
    return guard_rec(f, e);
}

static LLVMValueRef ex(kl_fn *f, int32_t e);

/* A constant of dtype t (f for floats, i for the others) as C writes it. */
static LLVMValueRef const_of(kl_mod *m, int t, double fv, int64_t iv)
{
    switch (t) {
    case KILN_F32:
        if (fv != fv) return LLVMConstReal(m->t_f32, (double)NAN);
        return LLVMConstReal(m->t_f32, (double)(float)fv);
    case KILN_F64:
        if (fv != fv) return LLVMConstReal(m->t_f64, (double)NAN);
        return LLVMConstReal(m->t_f64, fv);
    case KILN_BOOL:
        return kl_i32(m, iv ? 1 : 0);
    case KILN_I64:
        return kl_i64(m, iv);
    case KILN_I32:
    case KILN_U8:
        return kl_i32(m, iv);
    default:
        kl_fail(m, "a constant of an unsupported dtype (%s)", kiln_dtype_name((kiln_dtype)t));
        return kl_i32(m, 0);
    }
}

/* An integer const node's value: truncated; non-finite gives 0, out of
 * range saturates (as the C emitter's to_int). */
static int64_t to_int(double v)
{
    if (v != v || isinf(v)) return 0;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    return (int64_t)v;
}

/* The usual arithmetic conversions of two operands. */
static void arith(kl_mod *m, LLVMValueRef *a, LLVMValueRef *b)
{
    LLVMTypeRef ta = LLVMTypeOf(*a), tb = LLVMTypeOf(*b);
    if (ta == tb) return;
    if (type_rank(ta) < type_rank(tb))
        *a = conv(m, *a, tb);
    else
        *b = conv(m, *b, ta);
}

static LLVMValueRef nan_of(LLVMTypeRef t)
{
    return LLVMConstReal(t, (double)NAN);
}

/* kiln_max_T / kiln_min_T: operands converted to dtype t's stored type. */
static LLVMValueRef minmax(kl_mod *m, bool is_max, int t, LLVMValueRef a, LLVMValueRef b)
{
    LLVMTypeRef T = kl_mty(m, t);
    a = conv(m, a, T);
    b = conv(m, b, T);
    LLVMValueRef r;
    if (is_fp_type(T)) {
        LLVMValueRef c = LLVMBuildFCmp(m->b, is_max ? LLVMRealOGT : LLVMRealOLT, a, b, "");
        LLVMValueRef pick = LLVMBuildSelect(m->b, c, a, b, "");
        LLVMValueRef nan = LLVMBuildFCmp(m->b, LLVMRealUNO, a, b, "");
        r = LLVMBuildSelect(m->b, nan, nan_of(T), pick, "");
    } else {
        bool u = LLVMGetIntTypeWidth(T) == 8;
        LLVMIntPredicate p = is_max ? (u ? LLVMIntUGT : LLVMIntSGT) : (u ? LLVMIntULT : LLVMIntSLT);
        r = LLVMBuildSelect(m->b, LLVMBuildICmp(m->b, p, a, b, ""), a, b, "");
    }
    return from_mem(m, r, t);
}

/* Integer division or remainder as the C emitter writes it: plain when the
 * divisor is a constant other than 0 and -1, else its helper's semantics. */
static LLVMValueRef int_divmod(kl_fn *f, bool div, int t, int32_t eb, LLVMValueRef a,
                               LLVMValueRef b)
{
    kl_mod *m = f->m;
    const kiln_kexpr *xb = &f->k->exprs[eb];
    if (xb->op == KX_CONST && xb->i != 0 && xb->i != -1) {
        arith(m, &a, &b);
        return div ? LLVMBuildSDiv(m->b, a, b, "") : LLVMBuildSRem(m->b, a, b, "");
    }
    LLVMTypeRef T = kl_mty(m, t);
    a = conv(m, a, T);
    b = conv(m, b, T);
    LLVMValueRef zero = LLVMConstInt(T, 0, 0), one = LLVMConstInt(T, 1, 0);
    LLVMValueRef bz = LLVMBuildICmp(m->b, LLVMIntEQ, b, zero, "");
    LLVMValueRef r;
    if (t == KILN_U8 || t == KILN_BOOL) {
        LLVMValueRef d = LLVMBuildSelect(m->b, bz, one, b, "");
        LLVMValueRef q = div ? LLVMBuildUDiv(m->b, a, d, "") : LLVMBuildURem(m->b, a, d, "");
        r = LLVMBuildSelect(m->b, bz, zero, q, "");
    } else {
        LLVMValueRef bm1 = LLVMBuildICmp(m->b, LLVMIntEQ, b, LLVMConstAllOnes(T), "");
        LLVMValueRef bad = LLVMBuildOr(m->b, bz, bm1, "");
        LLVMValueRef d = LLVMBuildSelect(m->b, bad, one, b, "");
        LLVMValueRef q = div ? LLVMBuildSDiv(m->b, a, d, "") : LLVMBuildSRem(m->b, a, d, "");
        /* x / -1 == -x (wrapping), x % -1 == 0, x / 0 == x % 0 == 0 */
        LLVMValueRef alt =
            div ? LLVMBuildSelect(m->b, bm1, LLVMBuildSub(m->b, zero, a, ""), zero, "") : zero;
        r = LLVMBuildSelect(m->b, bad, alt, q, "");
    }
    return from_mem(m, r, t);
}

/* kiln_f2T: a float to integer dtype t (i32, i64, u8): truncates toward
 * zero; NaN and +-inf give 0; out-of-range values saturate. */
static LLVMValueRef float_to_int(kl_mod *m, LLVMValueRef v, int t)
{
    LLVMTypeRef T = kl_mty(m, t);
    LLVMValueRef x = conv(m, v, m->t_f64);
    LLVMValueRef r = conv(m, x, T); /* fpto[su]i.sat: saturating, NaN -> 0 */
    LLVMTypeRef f64 = m->t_f64;
    LLVMValueRef ax = kl_call(m, LLVMFunctionType(f64, &f64, 1, 0),
                              kl_intrinsic(m->m, "llvm.fabs", &f64, 1), &x, 1);
    LLVMValueRef inf = LLVMBuildFCmp(m->b, LLVMRealOEQ, ax, LLVMConstReal(f64, INFINITY), "");
    r = LLVMBuildSelect(m->b, inf, LLVMConstInt(T, 0, 0), r, "");
    return from_mem(m, r, t);
}

/* (T)x as C casts a double to dtype t (the result of a math function
 * applied to an integer). */
static LLVMValueRef c_cast_double(kl_mod *m, LLVMValueRef d, int t)
{
    if (t == KILN_BOOL) return bool_int(m, truth(m, d));
    if (is_float_dt(t)) return conv(m, d, kl_cty(m, t));
    return from_mem(m, conv(m, d, kl_mty(m, t)), t);
}

static LLVMValueRef unary_intr(kl_mod *m, const char *name, LLVMValueRef v)
{
    LLVMTypeRef t = LLVMTypeOf(v);
    return kl_call(m, LLVMFunctionType(t, &t, 1, 0), kl_intrinsic(m->m, name, &t, 1), &v, 1);
}

/* A unary math op of float type: kiln's f32 functions, libm's f64 ones,
 * sqrt and fabs as intrinsics. */
static LLVMValueRef math1(kl_mod *m, int op, LLVMValueRef v)
{
    bool f32 = LLVMTypeOf(v) == m->t_f32;
    if (op == KX_SQRT) return unary_intr(m, "llvm.sqrt", v);
    if (op == KX_ABS) return unary_intr(m, "llvm.fabs", v);
    int vm = op == KX_EXP     ? KL_VM_EXP
             : op == KX_LOG   ? KL_VM_LOG
             : op == KX_LOG1P ? KL_VM_LOG1P
             : op == KX_TANH  ? KL_VM_TANH
                              : KL_VM_ERF;
    if (f32) return kl_vmath(m, vm, v);
    int lm = op == KX_EXP     ? KL_LM_EXP
             : op == KX_LOG   ? KL_LM_LOG
             : op == KX_LOG1P ? KL_LM_LOG1P
             : op == KX_TANH  ? KL_LM_TANH
                              : KL_LM_ERF;
    return kl_libm(m, lm, &v, 1);
}

/* Evaluates e in a conditional arm: its values are forgotten after. */
static LLVMValueRef arm(kl_fn *f, int32_t e, LLVMTypeRef want, LLVMBasicBlockRef *end)
{
    int32_t mark = f->nstack;
    LLVMValueRef v = conv(f->m, ex(f, e), want);
    forget(f, mark);
    *end = LLVMGetInsertBlock(f->m->b);
    return v;
}

static LLVMValueRef ex_select(kl_fn *f, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    LLVMValueRef c = truth(m, ex(f, x->a));
    LLVMTypeRef tb = kl_cty(m, f->k->exprs[x->b].dtype), tc = kl_cty(m, f->k->exprs[x->c].dtype);
    LLVMTypeRef want = type_rank(tb) >= type_rank(tc) ? tb : tc;
    if (!needs_guard(f, x->b) && !needs_guard(f, x->c)) {
        LLVMValueRef a = conv(m, ex(f, x->b), want);
        LLVMValueRef b = conv(m, ex(f, x->c), want);
        return LLVMBuildSelect(m->b, c, a, b, "");
    }
    LLVMBasicBlockRef bt = LLVMAppendBasicBlockInContext(m->c, f->fn, "sel.t");
    LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(m->c, f->fn, "sel.f");
    LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(m->c, f->fn, "sel.j");
    LLVMBuildCondBr(m->b, c, bt, bf);
    LLVMBasicBlockRef et, ef;
    LLVMPositionBuilderAtEnd(m->b, bt);
    LLVMValueRef vt = arm(f, x->b, want, &et);
    LLVMBuildBr(m->b, bj);
    LLVMPositionBuilderAtEnd(m->b, bf);
    LLVMValueRef vf = arm(f, x->c, want, &ef);
    LLVMBuildBr(m->b, bj);
    LLVMPositionBuilderAtEnd(m->b, bj);
    LLVMValueRef phi = LLVMBuildPhi(m->b, want, "");
    LLVMValueRef vals[2] = {vt, vf};
    LLVMBasicBlockRef bbs[2] = {et, ef};
    LLVMAddIncoming(phi, vals, bbs, 2);
    return phi;
}

/* a && b, a || b: the right side only when it decides. */
static LLVMValueRef ex_logic(kl_fn *f, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    bool is_and = x->op == KX_AND;
    LLVMValueRef a = truth(m, ex(f, x->a));
    if (!needs_guard(f, x->b)) {
        LLVMValueRef b = truth(m, ex(f, x->b));
        return bool_int(m, is_and ? LLVMBuildAnd(m->b, a, b, "") : LLVMBuildOr(m->b, a, b, ""));
    }
    LLVMBasicBlockRef from = LLVMGetInsertBlock(m->b);
    LLVMBasicBlockRef br = LLVMAppendBasicBlockInContext(m->c, f->fn, "rhs");
    LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(m->c, f->fn, "rhs.j");
    if (is_and)
        LLVMBuildCondBr(m->b, a, br, bj);
    else
        LLVMBuildCondBr(m->b, a, bj, br);
    LLVMPositionBuilderAtEnd(m->b, br);
    int32_t mark = f->nstack;
    LLVMValueRef b = truth(m, ex(f, x->b));
    forget(f, mark);
    LLVMBasicBlockRef eb = LLVMGetInsertBlock(m->b);
    LLVMBuildBr(m->b, bj);
    LLVMPositionBuilderAtEnd(m->b, bj);
    LLVMValueRef phi = LLVMBuildPhi(m->b, m->t_i1, "");
    LLVMValueRef vals[2] = {LLVMConstInt(m->t_i1, is_and ? 0 : 1, 0), b};
    LLVMBasicBlockRef bbs[2] = {from, eb};
    LLVMAddIncoming(phi, vals, bbs, 2);
    return bool_int(m, phi);
}

static LLVMValueRef ex_cast(kl_fn *f, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    int t = x->dtype, from = f->k->exprs[x->a].dtype;
    LLVMValueRef a = ex(f, x->a);
    if (t == KILN_BOOL) return bool_int(m, truth(m, a));
    if (is_float_dt(from) && !is_float_dt(t)) return float_to_int(m, a, t);
    if (t == KILN_U8) return from_mem(m, conv(m, a, m->t_i8), t); /* (uint8_t)x */
    return conv(m, a, kl_cty(m, t));
}

static LLVMValueRef ex_load(kl_fn *f, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    if (x->a < 0 || x->a >= k->nbufs) {
        kl_fail(m, "kernel %s: a load of a buffer out of range", k->name);
        return LLVMConstNull(kl_cty(m, x->dtype));
    }
    if (is_const_buf(f, x->a)) {
        const kiln_node *n = &f->g->nodes[k->bufs[x->a].node];
        double v = kiln_attr_get_float(n, "value");
        LLVMValueRef c = const_of(m, n->dtype, v, is_float_dt(n->dtype) ? 0 : to_int(v));
        return conv(m, c, kl_cty(m, x->dtype));
    }
    int t = k->bufs[x->a].dtype;
    LLVMTypeRef T = kl_mty(m, t);
    LLVMValueRef idx = conv(m, ex(f, x->b), m->t_i64);
    LLVMValueRef p = kl_elem_ptr(m, buf_ptr(f, x->a), T, idx);
    LLVMValueRef v = kl_load(m, T, p, (unsigned)kiln_dtype_size((kiln_dtype)t));
    return from_mem(m, v, t);
}

bool kl_cmp_pred(int op, LLVMRealPredicate *rp, LLVMIntPredicate *ip)
{
    switch (op) {
    case KX_LT:
        *rp = LLVMRealOLT, *ip = LLVMIntSLT;
        return true;
    case KX_LE:
        *rp = LLVMRealOLE, *ip = LLVMIntSLE;
        return true;
    case KX_GT:
        *rp = LLVMRealOGT, *ip = LLVMIntSGT;
        return true;
    case KX_GE:
        *rp = LLVMRealOGE, *ip = LLVMIntSGE;
        return true;
    case KX_EQ:
        *rp = LLVMRealOEQ, *ip = LLVMIntEQ;
        return true;
    case KX_NE:
        *rp = LLVMRealUNE, *ip = LLVMIntNE;
        return true;
    default:
        return false;
    }
}

static LLVMValueRef ex_binary(kl_fn *f, int32_t e, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    int t = x->dtype;
    if (x->op == KX_AND || x->op == KX_OR) return ex_logic(f, x);
    LLVMValueRef a = ex(f, x->a), b = ex(f, x->b);
    switch (x->op) {
    case KX_MIN:
    case KX_MAX:
        return minmax(m, x->op == KX_MAX, t, a, b);
    case KX_DIV:
    case KX_MOD:
        if (is_float_dt(t)) {
            arith(m, &a, &b);
            return x->op == KX_DIV ? LLVMBuildFDiv(m->b, a, b, "") : LLVMBuildFRem(m->b, a, b, "");
        }
        return int_divmod(f, x->op == KX_DIV, t, x->b, a, b);
    case KX_POW: {
        if (t == KILN_F32) {
            a = conv(m, a, m->t_f32);
            b = conv(m, b, m->t_f32);
            LLVMValueRef args[2] = {a, b};
            return kl_libm(m, KL_LM_POWF, args, 2);
        }
        LLVMValueRef args[2] = {conv(m, a, m->t_f64), conv(m, b, m->t_f64)};
        LLVMValueRef d = kl_libm(m, KL_LM_POW, args, 2);
        return t == KILN_F64 ? d : c_cast_double(m, d, t);
    }
    default:
        break;
    }
    arith(m, &a, &b);
    bool fp = is_fp_type(LLVMTypeOf(a));
    LLVMRealPredicate rp;
    LLVMIntPredicate ip;
    switch (x->op) {
    case KX_ADD:
        return fp ? LLVMBuildFAdd(m->b, a, b, "") : LLVMBuildAdd(m->b, a, b, "");
    case KX_SUB:
        return fp ? LLVMBuildFSub(m->b, a, b, "") : LLVMBuildSub(m->b, a, b, "");
    case KX_MUL:
        return fp ? LLVMBuildFMul(m->b, a, b, "") : LLVMBuildMul(m->b, a, b, "");
    default:
        break;
    }
    if (!kl_cmp_pred(x->op, &rp, &ip)) {
        kl_fail(m, "kernel %s: expression %d: an unknown binary op %d", f->k->name, e, x->op);
        return LLVMConstNull(kl_cty(m, t));
    }
    LLVMValueRef c = fp ? LLVMBuildFCmp(m->b, rp, a, b, "") : LLVMBuildICmp(m->b, ip, a, b, "");
    return bool_int(m, c);
}

static LLVMValueRef ex_unary(kl_fn *f, int32_t e, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    int t = x->dtype;
    LLVMValueRef a = ex(f, x->a);
    bool fp = is_fp_type(LLVMTypeOf(a));
    switch (x->op) {
    case KX_NEG:
        return fp ? LLVMBuildFNeg(m->b, a, "")
                  : LLVMBuildSub(m->b, LLVMConstNull(LLVMTypeOf(a)), a, "");
    case KX_NOT:
        return bool_int(m, LLVMBuildNot(m->b, truth(m, a), ""));
    case KX_ISNAN:
        if (!fp) return kl_i32(m, 0);
        return bool_int(m, LLVMBuildFCmp(m->b, LLVMRealUNO, a, a, ""));
    case KX_ABS:
        if (!is_float_dt(t)) { /* kiln_abs_T */
            LLVMTypeRef T = kl_mty(m, t);
            LLVMValueRef v = conv(m, a, T);
            if (LLVMGetIntTypeWidth(T) != 8) {
                LLVMValueRef neg = LLVMBuildICmp(m->b, LLVMIntSLT, v, LLVMConstNull(T), "");
                v = LLVMBuildSelect(m->b, neg, LLVMBuildSub(m->b, LLVMConstNull(T), v, ""), v, "");
            }
            return from_mem(m, v, t);
        }
        /* fall through */
    case KX_EXP:
    case KX_LOG:
    case KX_SQRT:
    case KX_TANH:
    case KX_ERF:
    case KX_LOG1P:
        if (is_float_dt(t)) return math1(m, x->op, conv(m, a, kl_cty(m, t)));
        /* (T)fn((double)x) */
        return c_cast_double(m, math1(m, x->op, conv(m, a, m->t_f64)), t);
    default:
        kl_fail(m, "kernel %s: expression %d: an unknown unary op %d", f->k->name, e, x->op);
        return LLVMConstNull(kl_cty(m, t));
    }
}

/* KX_HASH: ir/kernel.h's kiln_kx_hash_value, operation for operation (LLVM's
 * integer arithmetic wraps without nsw/nuw flags, as uint64_t does). */
static LLVMValueRef ex_hash(kl_fn *f, const kiln_kexpr *x)
{
    kl_mod *m = f->m;
    LLVMTypeRef T = m->t_i64;
    LLVMValueRef a = conv(m, ex(f, x->a), T), b = conv(m, ex(f, x->b), T);
    LLVMValueRef z = LLVMBuildAdd(m->b, a,
                                  LLVMBuildMul(m->b, b, LLVMConstInt(T, 0x9E3779B97F4A7C15ull, 0), ""),
                                  "");
    static const unsigned long long mul[2] = {0xBF58476D1CE4E5B9ull, 0x94D049BB133111EBull};
    static const unsigned shift[3] = {30, 27, 31};
    for (int r = 0; r < 3; r++) {
        z = LLVMBuildXor(m->b, z, LLVMBuildLShr(m->b, z, LLVMConstInt(T, shift[r], 0), ""), "");
        if (r < 2) z = LLVMBuildMul(m->b, z, LLVMConstInt(T, mul[r], 0), "");
    }
    return LLVMBuildLShr(m->b, z, LLVMConstInt(T, 33, 0), "");
}

static LLVMValueRef ex(kl_fn *f, int32_t e)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    if (e < 0 || e >= k->nexprs) {
        kl_fail(m, "kernel %s: an expression id out of range", k->name);
        return kl_i64(m, 0);
    }
    if (f->val[e]) return f->val[e];
    const kiln_kexpr *x = &k->exprs[e];
    LLVMValueRef r;
    switch (x->op) {
    case KX_CONST:
        r = const_of(m, x->dtype, x->f, x->i);
        break;
    case KX_VAR:
        if (x->a < 0 || x->a >= k->nvars || !f->var[x->a]) {
            kl_fail(m, "kernel %s: loop variable i%d is not bound here", k->name, x->a);
            r = kl_i64(m, 0);
        } else {
            r = f->var[x->a];
        }
        break;
    case KX_LOCAL: {
        LLVMValueRef p = kl_local_ptr(f, x->a);
        int t = x->a >= 0 && x->a < k->nlocals ? k->local_dtype[x->a] : x->dtype;
        r = from_mem(m, kl_load(m, kl_mty(m, t), p, 0), t);
        break;
    }
    case KX_LOAD:
        r = ex_load(f, x);
        break;
    case KX_SELECT:
        r = ex_select(f, x);
        break;
    case KX_CAST:
        r = ex_cast(f, x);
        break;
    case KX_HASH:
        r = ex_hash(f, x);
        break;
    default:
        if (x->op >= KX_ADD && x->op <= KX_OR)
            r = ex_binary(f, e, x);
        else if (x->op >= KX_NEG && x->op <= KX_ISNAN)
            r = ex_unary(f, e, x);
        else {
            kl_fail(m, "kernel %s: expression %d: an unknown op %d", k->name, e, x->op);
            r = LLVMConstNull(kl_cty(m, x->dtype));
        }
    }
    memo(f, e, r);
    return r;
}

/* What emit_llvm_vec.c takes from the scalar emitter. */
LLVMValueRef kl_ex(kl_fn *f, int32_t e)
{
    return ex(f, e);
}

void kl_forget(kl_fn *f)
{
    forget(f, 0);
}

LLVMValueRef kl_buf_ptr(kl_fn *f, int32_t b)
{
    return buf_ptr(f, b);
}

LLVMValueRef kl_conv(kl_mod *m, LLVMValueRef v, LLVMTypeRef to)
{
    return conv(m, v, to);
}

/* ---- statements ---- */

void kl_uses(const kiln_kernel *k, int32_t s, bool list, uint8_t *lmark, uint8_t *smark,
             uint8_t *bmark)
{
    /* expressions: walk each statement's roots (ids decrease toward leaves) */
    uint8_t *seen = calloc((size_t)k->nexprs + 1, 1);
    int32_t *todo = malloc(((size_t)k->nexprs + 1) * sizeof *todo);
    int32_t *stk = malloc(((size_t)k->nstmts + 1) * sizeof *stk);
    if (!seen || !todo || !stk) goto done;
    int ns = 0, guard = 0;
    for (; s >= 0 && s < k->nstmts && guard++ <= k->nstmts; s = list ? k->stmts[s].next : -1)
        stk[ns++] = s;
    while (ns > 0 && guard++ <= 4 * k->nstmts + 8) {
        const kiln_kstmt *st = &k->stmts[stk[--ns]];
        int32_t roots[2] = {-1, -1};
        switch (st->kind) {
        case KS_LOOP:
        case KS_GEMM:
            if (st->kind == KS_GEMM && bmark && st->index >= 0 && st->index < k->ngemms) {
                const kiln_kgemm *gm = &k->gemms[st->index];
                bmark[gm->a] = bmark[gm->b] = bmark[gm->c] = 1;
            }
            for (int32_t b = st->body; b >= 0 && b < k->nstmts && ns <= k->nstmts;
                 b = k->stmts[b].next)
                stk[ns++] = b;
            break;
        case KS_STORE:
            if (bmark && st->buf >= 0 && st->buf < k->nbufs) bmark[st->buf] = 1;
            roots[0] = st->index, roots[1] = st->value;
            break;
        case KS_SET:
            if (st->var >= 0 && st->var < k->nlocals) {
                if (lmark) lmark[st->var] = 1;
                if (smark) smark[st->var] = 1;
            }
            roots[0] = st->value;
            break;
        case KS_CHECK:
            roots[0] = st->value;
            break;
        default:
            break;
        }
        int nt = 0;
        for (int r = 0; r < 2; r++)
            if (roots[r] >= 0 && roots[r] < k->nexprs && !seen[roots[r]]) {
                seen[roots[r]] = 1;
                todo[nt++] = roots[r];
            }
        while (nt > 0) {
            const kiln_kexpr *x = &k->exprs[todo[--nt]];
            if (x->op == KX_LOCAL && lmark && x->a >= 0 && x->a < k->nlocals) lmark[x->a] = 1;
            if (x->op == KX_LOAD && bmark && x->a >= 0 && x->a < k->nbufs) bmark[x->a] = 1;
            int32_t ops[3];
            bool cond[3];
            int n = kiln_ce_operands(x, ops, cond);
            for (int i = 0; i < n; i++)
                if (ops[i] >= 0 && ops[i] < k->nexprs && !seen[ops[i]]) {
                    seen[ops[i]] = 1;
                    todo[nt++] = ops[i];
                }
        }
    }
done:
    free(seen);
    free(todo);
    free(stk);
}

LLVMValueRef kl_ctx_pack(kl_fn *f, const int32_t *bufs, int nb, const int32_t *vals, int nv,
                         LLVMTypeRef *ty)
{
    kl_mod *m = f->m;
    LLVMTypeRef *fields = malloc(((size_t)nb + (size_t)nv + 1) * sizeof *fields);
    if (!fields) {
        kl_fail(m, "out of memory");
        *ty = LLVMStructTypeInContext(m->c, NULL, 0, 0);
        return LLVMConstNull(m->t_ptr);
    }
    for (int i = 0; i < nb; i++)
        fields[i] = m->t_ptr;
    for (int i = 0; i < nv; i++)
        fields[nb + i] = kl_mty(m, f->k->local_dtype[vals[i]]);
    *ty = LLVMStructTypeInContext(m->c, fields, (unsigned)(nb + nv), 0);
    free(fields);
    LLVMValueRef ctx = kl_alloca(f, *ty, 8, "ctx");
    for (int i = 0; i < nb + nv; i++) {
        LLVMValueRef p = LLVMBuildStructGEP2(m->b, *ty, ctx, (unsigned)i, "");
        LLVMValueRef v;
        if (i < nb) {
            v = buf_ptr(f, bufs[i]);
        } else {
            int32_t l = vals[i - nb];
            v = kl_load(m, kl_mty(m, f->k->local_dtype[l]), kl_local_ptr(f, l), 0);
        }
        kl_store(m, v, p, 0);
    }
    return kl_ptr_cast(m->b, ctx, m->t_i8);
}

void kl_call_pfor(kl_fn *f, LLVMValueRef n, LLVMValueRef fn, LLVMValueRef ctx)
{
    kl_mod *m = f->m;
    if (!f->rt) {
        kl_fail(m, "kernel %s: a parallel loop where no kiln_rt is available", f->k->name);
        return;
    }
    LLVMValueRef rt = kl_ptr_cast(m->b, f->rt, m->t_rt);
    LLVMValueRef pool = kl_load(m, m->t_ptr, LLVMBuildStructGEP2(m->b, m->t_rt, rt, 0, ""), 8);
    LLVMValueRef pf =
        kl_load(m, kl_ptr(m->c, m->t_pfor), LLVMBuildStructGEP2(m->b, m->t_rt, rt, 1, ""), 8);
    LLVMValueRef args[4] = {pool, n, fn, ctx}; /* fn: a pointer to t_task */
    kl_call(m, m->t_pfor, pf, args, 4);
}

bool kl_run_open(kl_fn *rf, kl_fn *f, const char *rname, const int32_t *bufs, int nb,
                 const int32_t *vals, int nv, LLVMTypeRef *rty)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    LLVMTypeRef *pt = malloc(((size_t)nb + (size_t)nv + 2) * sizeof *pt);
    if (!pt) {
        kl_fail(m, "out of memory");
        memset(rf, 0, sizeof *rf);
        return false;
    }
    pt[0] = pt[1] = m->t_i64;
    for (int i = 0; i < nb; i++)
        pt[2 + i] = m->t_ptr;
    for (int i = 0; i < nv; i++)
        pt[2 + nb + i] = kl_mty(m, k->local_dtype[vals[i]]);
    *rty = LLVMFunctionType(m->t_void, pt, (unsigned)(2 + nb + nv), 0);
    free(pt);
    if (!kl_fn_open(rf, m, k, f->g, f->bi, rname, *rty)) return false;
    kl_attr(m, rf->fn, LLVMAttributeFunctionIndex, "alwaysinline");
    for (int i = 0; i < nb; i++) {
        rf->buf[bufs[i]] = LLVMGetParam(rf->fn, (unsigned)(2 + i));
        if (f->bi[bufs[i]].restrict_ok) kl_attr(m, rf->fn, (unsigned)(3 + i), "noalias");
    }
    for (int i = 0; i < nv; i++)
        kl_store(m, LLVMGetParam(rf->fn, (unsigned)(2 + nb + i)), kl_local_ptr(rf, vals[i]), 0);
    return true;
}

LLVMValueRef kl_chunk_make(kl_fn *f, LLVMBasicBlockRef here, const char *name, LLVMValueRef run,
                           LLVMTypeRef rty, const int32_t *bufs, int nb, const int32_t *vals,
                           int nv, LLVMValueRef *ctx_out)
{
    kl_mod *m = f->m;
    LLVMValueRef *args = malloc(((size_t)nb + (size_t)nv + 2) * sizeof *args);
    LLVMTypeRef *pt = malloc(((size_t)nb + (size_t)nv + 2) * sizeof *pt);
    kl_fn cf;
    if (!args || !pt || !kl_fn_open(&cf, m, f->k, f->g, f->bi, name, m->t_task)) {
        kl_fail(m, "out of memory");
        kl_fn_close(&cf);
        free(args);
        free(pt);
        *ctx_out = LLVMConstNull(m->t_ptr);
        return NULL;
    }
    LLVMGetParamTypes(rty, pt);
    LLVMTypeRef cty;
    LLVMBasicBlockRef back = LLVMGetInsertBlock(m->b);
    LLVMPositionBuilderAtEnd(m->b, here);
    *ctx_out = kl_ctx_pack(f, bufs, nb, vals, nv, &cty);
    LLVMPositionBuilderAtEnd(m->b, back);
    LLVMValueRef cp = kl_ptr_cast(m->b, LLVMGetParam(cf.fn, 0), cty);
    args[0] = LLVMGetParam(cf.fn, 1);
    args[1] = LLVMGetParam(cf.fn, 2);
    for (int i = 0; i < nb + nv; i++) {
        LLVMValueRef p = LLVMBuildStructGEP2(m->b, cty, cp, (unsigned)i, "");
        args[2 + i] = kl_load(m, pt[2 + i], p, 0);
    }
    kl_call(m, rty, run, args, (unsigned)(2 + nb + nv));
    LLVMBuildRetVoid(m->b);
    LLVMValueRef chunk = cf.fn;
    kl_fn_close(&cf);
    free(args);
    free(pt);
    LLVMPositionBuilderAtEnd(m->b, here);
    return chunk;
}

bool kl_captures(kl_fn *f, int32_t s, int32_t **bufs, int *nb, int32_t **vals, int *nv)
{
    const kiln_kernel *k = f->k;
    uint8_t *lmark = calloc((size_t)k->nlocals + 1, 1), *smark = calloc((size_t)k->nlocals + 1, 1);
    uint8_t *bmark = calloc((size_t)k->nbufs + 1, 1);
    *bufs = malloc(((size_t)k->nbufs + 1) * sizeof **bufs);
    *vals = malloc(((size_t)k->nlocals + 1) * sizeof **vals);
    bool ok = lmark && smark && bmark && *bufs && *vals;
    *nb = *nv = 0;
    if (ok) {
        kl_uses(k, s, false, lmark, smark, bmark);
        for (int32_t i = 0; i < k->nbufs; i++)
            if (bmark[i] && f->bi[i].param) (*bufs)[(*nb)++] = i;
        for (int32_t l = 0; l < k->nlocals; l++)
            if (lmark[l] && !smark[l]) (*vals)[(*nv)++] = l;
    }
    free(lmark);
    free(smark);
    free(bmark);
    return ok;
}

/* A top-level parallel loop outlined: chunk function <kernel>.p<N>(ctx, lo,
 * hi) calls <kernel>.p<N>.run(lo, hi, buffers (noalias where C's are
 * restrict), by-value locals), which runs the loop over [lo, hi). */
static void outlined(kl_fn *f, int32_t s)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    const kiln_kstmt *st = &k->stmts[s];
    int32_t *bufs = NULL, *vals = NULL;
    int nb = 0, nv = 0;
    if (!kl_captures(f, s, &bufs, &nb, &vals, &nv)) {
        kl_fail(m, "out of memory");
        goto done;
    }
    LLVMBasicBlockRef here = LLVMGetInsertBlock(m->b);
    char name[200], rname[220];
    kl_fn_name(m, name, sizeof name, LLVMGetValueName(f->fn), "p");
    snprintf(rname, sizeof rname, "%s.run", name);
    kl_fn rf;
    LLVMTypeRef rty;
    if (!kl_run_open(&rf, f, rname, bufs, nb, vals, nv, &rty)) {
        kl_fn_close(&rf);
        goto done;
    }
    kl_loop L;
    LLVMValueRef lo = LLVMGetParam(rf.fn, 0), hi = LLVMGetParam(rf.fn, 1);
    LLVMValueRef rest = kl_vec_outer_loop(&rf, s, lo, hi); /* W columns at a time */
    kl_loop_begin(&rf, &L, rest ? rest : lo, hi, false);
    if (st->var >= 0 && st->var < k->nvars) rf.var[st->var] = L.phi;
    kl_stmts(&rf, st->body, false);
    LLVMValueRef br = kl_loop_end(&rf, &L);
    if (st->vector) kl_loop_vectorize(m, br);
    LLVMBuildRetVoid(m->b);
    LLVMValueRef run = rf.fn;
    kl_fn_close(&rf);
    LLVMValueRef ctx;
    LLVMValueRef chunk = kl_chunk_make(f, here, name, run, rty, bufs, nb, vals, nv, &ctx);
    if (chunk) kl_call_pfor(f, kl_i64(m, st->extent), chunk, ctx);
done:
    free(bufs);
    free(vals);
}

void kl_stmts(kl_fn *f, int32_t s, bool top)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    for (int guard = 0; s >= 0; s = k->stmts[s].next) {
        if (s >= k->nstmts || guard++ > k->nstmts) {
            kl_fail(m, "kernel %s: a statement id out of range", k->name);
            return;
        }
        const kiln_kstmt *st = &k->stmts[s];
        switch (st->kind) {
        case KS_LOOP: {
            if (top && f->outline && f->outline[s] == 1) {
                outlined(f, s);
                break;
            }
            if (st->extent <= 0) break;
            if (st->var < 0 || st->var >= k->nvars) {
                kl_fail(m, "kernel %s: a loop variable out of range", k->name);
                break;
            }
            kl_loop L;
            LLVMValueRef rest = st->extent >= m->vw && !st->vector
                                    ? kl_vec_outer_loop(f, s, kl_i64(m, 0), kl_i64(m, st->extent))
                                    : NULL; /* W columns at a time; the rest below */
            if (rest && LLVMIsAConstantInt(rest) && LLVMConstIntGetSExtValue(rest) == st->extent)
                break;
            kl_loop_begin(f, &L, rest ? rest : kl_i64(m, 0), kl_i64(m, st->extent), !rest);
            LLVMValueRef outer = f->var[st->var];
            f->var[st->var] = L.phi;
            kl_stmts(f, st->body, false);
            f->var[st->var] = outer;
            LLVMValueRef br = kl_loop_end(f, &L);
            if (st->vector) kl_loop_vectorize(m, br);
            break;
        }
        case KS_STORE: {
            if (st->buf < 0 || st->buf >= k->nbufs) {
                kl_fail(m, "kernel %s: a store to a buffer out of range", k->name);
                break;
            }
            int t = k->bufs[st->buf].dtype;
            LLVMValueRef idx = conv(m, ex(f, st->index), m->t_i64);
            LLVMValueRef v = to_mem(m, ex(f, st->value), t);
            kl_store(m, v, kl_elem_ptr(m, buf_ptr(f, st->buf), kl_mty(m, t), idx),
                     (unsigned)kiln_dtype_size((kiln_dtype)t));
            forget(f, 0);
            break;
        }
        case KS_SET: {
            if (st->var < 0 || st->var >= k->nlocals) {
                kl_fail(m, "kernel %s: a set of a local out of range", k->name);
                break;
            }
            int t = k->local_dtype[st->var];
            LLVMValueRef v = ex(f, st->value);
            /* C's assignment to the local: _Bool takes v != 0 */
            v = t == KILN_BOOL ? LLVMBuildZExt(m->b, truth(m, v), m->t_i8, "") : to_mem(m, v, t);
            kl_store(m, v, kl_local_ptr(f, st->var), 0);
            forget(f, 0);
            break;
        }
        case KS_CHECK: {
            LLVMValueRef c = truth(m, ex(f, st->value));
            forget(f, 0);
            if (!f->is_kernel) {
                kl_fail(m, "kernel %s: a run-time check inside an outlined loop or a GEMM epilogue",
                        k->name);
                break;
            }
            LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(m->c, f->fn, "ok");
            LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(m->c, f->fn, "fail");
            LLVMBuildCondBr(m->b, c, ok, bad);
            LLVMPositionBuilderAtEnd(m->b, bad);
            LLVMBuildRet(m->b, kl_i32(m, st->index));
            LLVMPositionBuilderAtEnd(m->b, ok);
            break;
        }
        case KS_GEMM:
            if (!top || !f->is_kernel) {
                kl_fail(m, "kernel %s: a GEMM statement that is not at the kernel's top level",
                        k->name);
                break;
            }
            kl_emit_gemm(f, s);
            break;
        default:
            kl_fail(m, "kernel %s: an unknown statement kind %d", k->name, st->kind);
        }
    }
}

#else
typedef int kiln_emit_llvm_unused; /* built without LLVM */
#endif
