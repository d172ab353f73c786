/* codegen/emit_llvm_vec.c — outer loops as vector code: W iterations of a
 * loop whose body holds inner loops run at once, one per lane, with the
 * inner loops (constant extents: uniform control flow) run once for all
 * lanes and every local the body sets held in a W-lane vector. What the C
 * backend gets from gcc's outer-loop vectoriser, and what LLVM's loop
 * vectoriser (innermost loops only) does not do: a column sum over the rows
 * of a [B, N] matrix (a bias gradient) keeps W f64 column sums in vector
 * accumulators across the row loop, loading W adjacent floats per row.
 *
 * Expects: a kl_fn over the kernel (emit_llvm.c) and a KS_LOOP statement.
 * Guarantees: kl_vec_outer_loop emits vector code only when the body is one
 * it can prove equivalent to running the iterations one after another:
 *   - statements: KS_SET of an f32, f64 or bool local, KS_STORE of an f32
 *     or f64 value of the buffer's dtype at the body's top level (not in an
 *     inner loop) at an index that is loop variable * 1 + something the
 *     same in every lane, and KS_LOOPs (no checks, no GEMMs); at least one
 *     inner loop (a loop without one is LLVM's loop vectoriser's);
 *   - values that differ between lanes: f32, f64 or bool, computed from
 *     contiguous loads (index = variable * 1 + lane-invariant), locals the
 *     body set earlier in the same iteration, and + - * / min max (the
 *     C emitter's NaN-propagating ones), neg, abs, sqrt, comparisons,
 *     and/or/not/isnan, select, casts among f32, f64 and bool, and kiln's
 *     f32 exp/log/log1p/tanh/erf or libm's f64 ones called lane by lane;
 *     operands of the same dtype as the result (no promotions);
 *   - values the same in every lane (no loop variable of the vector loop,
 *     no local the body sets; inner loop variables allowed) are the scalar
 *     emitter's (kl_ex) and broadcast; a load that the scalar code
 *     evaluates only on some paths (a select arm, the right of && / ||) is
 *     evaluated on every lane here, so its index must be affine with bounds
 *     inside the buffer for every iteration;
 *   - memory as codegen/emit_vec.c (the proof is codegen/vec_proof.c,
 *     shared with it): a buffer that is stored (or may share
 *     storage with one that is) is read and written at the stored element
 *     only, and no buffer overlaps another partially; no scratch arrays;
 *   - a local the body sets is read only after its set in the same
 *     iteration (in program order, inner loops included) and nowhere
 *     outside the loop.
 * Each lane computes the IEEE operations the scalar code does in the same
 * order (sums stay sequential per lane: no reassociation, no contraction),
 * so results are bit-identical to the scalar loop and to the C backend's.
 * The caller runs its ordinary scalar loop over what is left.
 */
#include "codegen/emit_llvm_internal.h"

#if KILN_HAVE_LLVM

#include "codegen/vec_proof.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct vx {
    kl_fn *f;
    const kiln_kernel *k;
    int32_t var; /* the vector loop's variable */
    int W;
    kiln_vproof p;    /* the proof (codegen/vec_proof.c): bodyset, dep */
    LLVMValueRef *vv; /* per expression: its vector in the current statement */
    int32_t *stack;   /* expressions with a vector, for clearing */
    int32_t nstack;
    LLVMValueRef *vloc; /* per local the body sets: its vector alloca */
} vx;

static bool float_dt(int t)
{
    return t == KILN_F32 || t == KILN_F64;
}

/* ---- writing ---- */

static LLVMTypeRef vty(vx *v, int t)
{
    kl_mod *m = v->f->m;
    LLVMTypeRef e = t == KILN_F32 ? m->t_f32 : t == KILN_F64 ? m->t_f64 : m->t_i1;
    return LLVMVectorType(e, (unsigned)v->W);
}

static LLVMValueRef splat(vx *v, LLVMValueRef s)
{
    kl_mod *m = v->f->m;
    LLVMTypeRef t = LLVMVectorType(LLVMTypeOf(s), (unsigned)v->W);
    LLVMValueRef x = LLVMBuildInsertElement(m->b, LLVMGetUndef(t), s, kl_i32(m, 0), "");
    LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(m->t_i32, (unsigned)v->W));
    return LLVMBuildShuffleVector(m->b, x, LLVMGetUndef(t), zeros, "");
}

static LLVMValueRef vsplat_const(vx *v, int t, double c)
{
    return splat(v, LLVMConstReal(t == KILN_F32 ? v->f->m->t_f32 : v->f->m->t_f64, c));
}

static LLVMValueRef vintr(vx *v, const char *name, LLVMValueRef a)
{
    kl_mod *m = v->f->m;
    LLVMTypeRef t = LLVMTypeOf(a);
    return kl_call(m, LLVMFunctionType(t, &t, 1, 0), kl_intrinsic(m->m, name, &t, 1), &a, 1);
}

/* A math function of the scalar code, called lane by lane (the same calls). */
static LLVMValueRef per_lane(vx *v, int op, int t, LLVMValueRef a)
{
    kl_mod *m = v->f->m;
    int vm = op == KX_EXP     ? KL_VM_EXP
             : op == KX_LOG   ? KL_VM_LOG
             : op == KX_LOG1P ? KL_VM_LOG1P
             : op == KX_TANH  ? KL_VM_TANH
                              : KL_VM_ERF;
    int lm = op == KX_EXP     ? KL_LM_EXP
             : op == KX_LOG   ? KL_LM_LOG
             : op == KX_LOG1P ? KL_LM_LOG1P
             : op == KX_TANH  ? KL_LM_TANH
                              : KL_LM_ERF;
    LLVMValueRef r = LLVMGetUndef(LLVMTypeOf(a));
    for (int i = 0; i < v->W; i++) {
        LLVMValueRef x = LLVMBuildExtractElement(m->b, a, kl_i32(m, i), "");
        x = t == KILN_F32 ? kl_vmath(m, vm, x) : kl_libm(m, lm, &x, 1);
        r = LLVMBuildInsertElement(m->b, r, x, kl_i32(m, i), "");
    }
    return r;
}

static LLVMValueRef vex(vx *v, int32_t e);

/* kiln_max / kiln_min on lanes: NaN if either is NaN, else a > b ? a : b. */
static LLVMValueRef vminmax(vx *v, bool is_max, int t, LLVMValueRef a, LLVMValueRef b)
{
    kl_mod *m = v->f->m;
    LLVMValueRef c = LLVMBuildFCmp(m->b, is_max ? LLVMRealOGT : LLVMRealOLT, a, b, "");
    LLVMValueRef pick = LLVMBuildSelect(m->b, c, a, b, "");
    LLVMValueRef nan = LLVMBuildFCmp(m->b, LLVMRealUNO, a, b, "");
    return LLVMBuildSelect(m->b, nan, vsplat_const(v, t, (double)NAN), pick, "");
}

static LLVMValueRef vex_uniform(vx *v, int32_t e)
{
    kl_mod *m = v->f->m;
    LLVMValueRef s = kl_ex(v->f, e);
    if (v->k->exprs[e].dtype == KILN_BOOL) {
        LLVMTypeRef st = LLVMTypeOf(s);
        s = LLVMBuildICmp(m->b, LLVMIntNE, s, LLVMConstInt(st, 0, 0), "");
    }
    return splat(v, s);
}

static LLVMValueRef vex_op(vx *v, int32_t e)
{
    kl_mod *m = v->f->m;
    const kiln_kexpr *x = &v->k->exprs[e];
    int t = x->dtype;
    switch (x->op) {
    case KX_LOAD: {
        LLVMValueRef idx = kl_ex(v->f, x->b); /* lane 0's element */
        LLVMTypeRef T = kl_mty(m, t);
        LLVMValueRef p = kl_elem_ptr(m, kl_buf_ptr(v->f, x->a), T, kl_conv(m, idx, m->t_i64));
        return kl_load(m, vty(v, t), p, (unsigned)kiln_dtype_size((kiln_dtype)t));
    }
    case KX_LOCAL:
        return LLVMBuildLoad2(m->b, vty(v, t), v->vloc[x->a], "");
    case KX_SELECT:
        return LLVMBuildSelect(m->b, vex(v, x->a), vex(v, x->b), vex(v, x->c), "");
    case KX_CAST: {
        int ta = v->k->exprs[x->a].dtype;
        LLVMValueRef a = vex(v, x->a);
        if (t == KILN_BOOL) return LLVMBuildFCmp(m->b, LLVMRealUNE, a, vsplat_const(v, ta, 0), "");
        if (ta == KILN_BOOL) return LLVMBuildUIToFP(m->b, a, vty(v, t), "");
        return t == KILN_F64 ? LLVMBuildFPExt(m->b, a, vty(v, t), "")
                             : LLVMBuildFPTrunc(m->b, a, vty(v, t), "");
    }
    case KX_NEG:
        return LLVMBuildFNeg(m->b, vex(v, x->a), "");
    case KX_ABS:
        return vintr(v, "llvm.fabs", vex(v, x->a));
    case KX_SQRT:
        return vintr(v, "llvm.sqrt", vex(v, x->a));
    case KX_EXP:
    case KX_LOG:
    case KX_TANH:
    case KX_ERF:
    case KX_LOG1P:
        return per_lane(v, x->op, t, vex(v, x->a));
    case KX_NOT:
        return LLVMBuildNot(m->b, vex(v, x->a), "");
    case KX_ISNAN: {
        LLVMValueRef a = vex(v, x->a);
        return LLVMBuildFCmp(m->b, LLVMRealUNO, a, a, "");
    }
    default:
        break;
    }
    LLVMValueRef a = vex(v, x->a), b = vex(v, x->b);
    bool fp = float_dt(v->k->exprs[x->a].dtype);
    LLVMRealPredicate rp;
    LLVMIntPredicate ip;
    switch (x->op) {
    case KX_ADD:
        return LLVMBuildFAdd(m->b, a, b, "");
    case KX_SUB:
        return LLVMBuildFSub(m->b, a, b, "");
    case KX_MUL:
        return LLVMBuildFMul(m->b, a, b, "");
    case KX_DIV:
        return LLVMBuildFDiv(m->b, a, b, "");
    case KX_MIN:
    case KX_MAX:
        return vminmax(v, x->op == KX_MAX, t, a, b);
    case KX_AND:
        return LLVMBuildAnd(m->b, a, b, "");
    case KX_OR:
        return LLVMBuildOr(m->b, a, b, "");
    default:
        break;
    }
    if (!kl_cmp_pred(x->op, &rp, &ip)) { /* bools: == and != only (vec_proof.c) */
        kl_fail(m, "kernel %s: expression %d: op %d in vector code", v->k->name, e, x->op);
        return LLVMGetUndef(vty(v, t));
    }
    return fp ? LLVMBuildFCmp(m->b, rp, a, b, "") : LLVMBuildICmp(m->b, ip, a, b, "");
}

static LLVMValueRef vex(vx *v, int32_t e)
{
    if (v->vv[e]) return v->vv[e];
    LLVMValueRef r = kiln_vp_dep(&v->p, e) ? vex_op(v, e) : vex_uniform(v, e);
    v->vv[e] = r;
    v->stack[v->nstack++] = e;
    return r;
}

/* Ends a statement: its vectors and scalar values are forgotten. */
static void vforget(vx *v)
{
    while (v->nstack > 0)
        v->vv[v->stack[--v->nstack]] = NULL;
    kl_forget(v->f);
}

static void vstmts(vx *v, int32_t s)
{
    kl_fn *f = v->f;
    kl_mod *m = f->m;
    const kiln_kernel *k = v->k;
    for (; s >= 0; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_LOOP) {
            if (st->extent <= 0) continue;
            kl_loop L;
            kl_loop_begin(f, &L, kl_i64(m, 0), kl_i64(m, st->extent), true);
            LLVMValueRef outer = f->var[st->var];
            f->var[st->var] = L.phi;
            vstmts(v, st->body);
            f->var[st->var] = outer;
            kl_loop_end(f, &L);
        } else if (st->kind == KS_SET) {
            LLVMBuildStore(m->b, vex(v, st->value), v->vloc[st->var]);
            vforget(v);
        } else { /* KS_STORE */
            int t = k->bufs[st->buf].dtype;
            LLVMValueRef idx = kl_conv(m, kl_ex(f, st->index), m->t_i64);
            LLVMValueRef p = kl_elem_ptr(m, kl_buf_ptr(f, st->buf), kl_mty(m, t), idx);
            kl_store(m, vex(v, st->value), p, (unsigned)kiln_dtype_size((kiln_dtype)t));
            vforget(v);
        }
    }
}

LLVMValueRef kl_vec_outer_loop(kl_fn *f, int32_t s, LLVMValueRef lo, LLVMValueRef hi)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    if (m->vw < 2 || s < 0 || s >= k->nstmts || k->stmts[s].kind != KS_LOOP) return NULL;
    vx v = {.f = f, .k = k, .var = k->stmts[s].var, .W = m->vw};
    if (v.var < 0 || v.var >= k->nvars) return NULL;
    v.p = (kiln_vproof){.k = k, .bi = f->bi, .s = s, .var = v.var, .f64 = true, .outer = true};
    size_t nl = (size_t)k->nlocals + 1, ne = (size_t)k->nexprs + 1;
    bool made = kiln_vp_init(&v.p);
    v.vv = calloc(ne, sizeof *v.vv);
    v.stack = calloc(ne, sizeof *v.stack);
    v.vloc = calloc(nl, sizeof *v.vloc);
    LLVMValueRef rest = NULL;
    if (!made || !v.vv || !v.stack || !v.vloc) {
        kl_fail(m, "out of memory");
        goto done;
    }
    if (!kiln_vp_prove(&v.p)) {
        if (v.p.oom) kl_fail(m, "out of memory");
        goto done;
    }
    for (int32_t l = 0; l < k->nlocals; l++)
        if (v.p.bodyset[l]) {
            char nm[24];
            snprintf(nm, sizeof nm, "vt%d", l);
            v.vloc[l] = kl_alloca(f, vty(&v, k->local_dtype[l]), 0, nm);
        }
    /* for (i = lo; i < vend; i += W), vend = lo + (hi - lo) / W * W */
    LLVMValueRef W = kl_i64(m, v.W);
    LLVMValueRef n = LLVMBuildSub(m->b, hi, lo, "");
    LLVMValueRef vend =
        LLVMBuildAdd(m->b, lo, LLVMBuildMul(m->b, LLVMBuildSDiv(m->b, n, W, ""), W, ""), "vend");
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(m->b);
    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(m->c, f->fn, "vloop");
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(m->c, f->fn, "vdone");
    LLVMBuildCondBr(m->b, LLVMBuildICmp(m->b, LLVMIntSLT, lo, vend, ""), head, exit);
    LLVMPositionBuilderAtEnd(m->b, head);
    LLVMValueRef phi = LLVMBuildPhi(m->b, m->t_i64, "vi");
    LLVMAddIncoming(phi, &lo, &pre, 1);
    LLVMValueRef outer = f->var[v.var];
    f->var[v.var] = phi;
    vstmts(&v, k->stmts[s].body);
    f->var[v.var] = outer;
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(m->b);
    LLVMValueRef next = LLVMBuildNSWAdd(m->b, phi, W, "");
    LLVMBuildCondBr(m->b, LLVMBuildICmp(m->b, LLVMIntSLT, next, vend, ""), head, exit);
    LLVMAddIncoming(phi, &next, &latch, 1);
    LLVMMoveBasicBlockAfter(exit, latch);
    LLVMPositionBuilderAtEnd(m->b, exit);
    rest = vend;
done:
    kiln_vp_free(&v.p);
    free(v.vv);
    free(v.stack);
    free(v.vloc);
    return rest;
}

#else
typedef int kiln_emit_llvm_vec_unused; /* built without LLVM */
#endif
