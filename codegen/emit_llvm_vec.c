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
 *   - memory as codegen/emit_vec.c: a buffer that is stored (or may share
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

#include "ir/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TERMS 12

typedef struct aff { /* c0 + sum coef[i] * loop variable var[i] */
    int n;
    int32_t var[MAX_TERMS];
    int64_t coef[MAX_TERMS];
    int64_t c0;
} aff;

typedef struct vref {
    int32_t buf, index;
    bool store;
} vref;

typedef struct vx {
    kl_fn *f;
    const kiln_kernel *k;
    int32_t var; /* the vector loop's variable */
    int W;
    uint8_t *bodyset;  /* per local: set in the body */
    uint8_t *setyet;   /* per local: set by a statement already checked */
    int8_t *dep;       /* per expression: -1 unknown, 0 lane-invariant, 1 varies */
    uint8_t *seen;     /* per expression: checks done (1, 2: value; 4, 8: any) */
    LLVMValueRef *vv;  /* per expression: its vector in the current statement */
    int32_t *stack;    /* expressions with a vector, for clearing */
    int32_t nstack;
    LLVMValueRef *vloc; /* per local the body sets: its vector alloca */
    vref *refs;
    int nrefs, cap;
    int loops; /* inner loops met */
    bool oom;
} vx;

/* ---- analysis ---- */

static bool bad_expr(const vx *v, int32_t e)
{
    return e < 0 || e >= v->k->nexprs;
}

static bool int_dt(int t)
{
    return t == KILN_I64 || t == KILN_I32 || t == KILN_U8;
}

static bool float_dt(int t)
{
    return t == KILN_F32 || t == KILN_F64;
}

static bool const_buf(const vx *v, int32_t buf)
{
    int32_t node = v->k->bufs[buf].node;
    return node >= 0 && node < v->f->g->nnodes && v->f->g->nodes[node].op == KILN_OP_CONST;
}

/* Whether e differs between lanes: it reads the vector loop's variable or
 * a local the body sets (a const node's load reads no index). */
static bool dep(vx *v, int32_t e)
{
    if (bad_expr(v, e)) return true;
    if (v->dep[e] >= 0) return v->dep[e];
    const kiln_kexpr *x = &v->k->exprs[e];
    bool d = false;
    if (x->op == KX_VAR)
        d = x->a == v->var;
    else if (x->op == KX_LOCAL)
        d = x->a < 0 || x->a >= v->k->nlocals || v->bodyset[x->a];
    else if (x->op == KX_LOAD && x->a >= 0 && x->a < v->k->nbufs && const_buf(v, x->a))
        d = false;
    else {
        int32_t ops[3];
        bool cond[3];
        int n = kiln_ce_operands(x, ops, cond);
        for (int i = 0; i < n; i++)
            d |= dep(v, ops[i]);
    }
    v->dep[e] = d;
    return d;
}

static bool aff_add(aff *r, const aff *a, const aff *b, int64_t sb)
{
    *r = *a;
    int64_t t;
    if (__builtin_mul_overflow(b->c0, sb, &t) || __builtin_add_overflow(r->c0, t, &r->c0))
        return false;
    for (int i = 0; i < b->n; i++) {
        if (__builtin_mul_overflow(b->coef[i], sb, &t)) return false;
        int j = 0;
        while (j < r->n && r->var[j] != b->var[i])
            j++;
        if (j == r->n) {
            if (r->n == MAX_TERMS) return false;
            r->var[r->n] = b->var[i];
            r->coef[r->n++] = 0;
        }
        if (__builtin_add_overflow(r->coef[j], t, &r->coef[j])) return false;
    }
    return true;
}

static bool aff_scale(aff *r, int64_t s)
{
    if (__builtin_mul_overflow(r->c0, s, &r->c0)) return false;
    for (int i = 0; i < r->n; i++)
        if (__builtin_mul_overflow(r->coef[i], s, &r->coef[i])) return false;
    return true;
}

/* Index e as an affine form over loop variables, or false. */
static bool affine(const kiln_kernel *k, int32_t e, aff *r, int depth)
{
    memset(r, 0, sizeof *r);
    if (e < 0 || e >= k->nexprs || depth > 64) return false;
    const kiln_kexpr *x = &k->exprs[e];
    if (!int_dt(x->dtype)) return false;
    aff a, b;
    switch (x->op) {
    case KX_CONST:
        r->c0 = x->i;
        return true;
    case KX_VAR:
        r->n = 1;
        r->var[0] = x->a;
        r->coef[0] = 1;
        return true;
    case KX_ADD:
    case KX_SUB:
        return affine(k, x->a, &a, depth + 1) && affine(k, x->b, &b, depth + 1) &&
               aff_add(r, &a, &b, x->op == KX_ADD ? 1 : -1);
    case KX_MUL:
        if (!affine(k, x->a, &a, depth + 1) || !affine(k, x->b, &b, depth + 1)) return false;
        if (a.n && b.n) return false;
        *r = a.n ? a : b;
        return aff_scale(r, a.n ? b.c0 : a.c0);
    case KX_NEG:
        return affine(k, x->a, r, depth + 1) && aff_scale(r, -1);
    default:
        return false;
    }
}

/* The coefficient of the vector variable in index e, when e is that
 * variable times a constant plus something lane-invariant. */
static bool vcoef(vx *v, int32_t e, int64_t *coef, int depth)
{
    if (bad_expr(v, e) || depth > 64) return false;
    if (!dep(v, e)) {
        *coef = 0;
        return true;
    }
    const kiln_kexpr *x = &v->k->exprs[e];
    int64_t a, b;
    if (!int_dt(x->dtype)) return false;
    switch (x->op) {
    case KX_VAR:
        *coef = 1;
        return true;
    case KX_ADD:
    case KX_SUB:
        if (!vcoef(v, x->a, &a, depth + 1) || !vcoef(v, x->b, &b, depth + 1)) return false;
        return x->op == KX_ADD ? !__builtin_add_overflow(a, b, coef)
                               : !__builtin_sub_overflow(a, b, coef);
    case KX_MUL: {
        int32_t c = dep(v, x->a) ? x->b : x->a, o = c == x->a ? x->b : x->a;
        if (bad_expr(v, c) || dep(v, c) || v->k->exprs[c].op != KX_CONST) return false;
        return vcoef(v, o, &a, depth + 1) && !__builtin_mul_overflow(a, v->k->exprs[c].i, coef);
    }
    case KX_NEG:
        if (!vcoef(v, x->a, &a, depth + 1) || a == INT64_MIN) return false;
        *coef = -a;
        return true;
    default:
        return false;
    }
}

/* Whether indexes e and f name the same element in every iteration. */
static bool same_element(const kiln_kernel *k, int32_t e, int32_t f)
{
    if (e == f) return true;
    aff a, b, d;
    if (!affine(k, e, &a, 0) || !affine(k, f, &b, 0) || !aff_add(&d, &a, &b, -1)) return false;
    if (d.c0) return false;
    for (int i = 0; i < d.n; i++)
        if (d.coef[i]) return false;
    return true;
}

static int64_t var_extent(const kiln_kernel *k, int32_t var)
{
    for (int32_t s = 0; s < k->nstmts; s++)
        if (k->stmts[s].kind == KS_LOOP && k->stmts[s].var == var) return k->stmts[s].extent;
    return -1;
}

/* Whether index e stays inside buffer buf for every value of the loop
 * variables. */
static bool in_bounds(const vx *v, int32_t e, int32_t buf)
{
    aff a;
    if (!affine(v->k, e, &a, 0)) return false;
    int64_t lo = a.c0, hi = a.c0;
    for (int i = 0; i < a.n; i++) {
        int64_t ext = var_extent(v->k, a.var[i]), t;
        if (ext <= 0 || __builtin_mul_overflow(a.coef[i], ext - 1, &t)) return false;
        if (__builtin_add_overflow(t < 0 ? lo : hi, t, t < 0 ? &lo : &hi)) return false;
    }
    const kiln_kbuf *kb = &v->k->bufs[buf];
    return lo >= 0 && hi < kiln_shape_numel(kb->rank, kb->shape);
}

static bool add_ref(vx *v, int32_t buf, int32_t index, bool store)
{
    if (v->nrefs == v->cap) {
        int cap = v->cap ? 2 * v->cap : 16;
        vref *r = realloc(v->refs, (size_t)cap * sizeof *r);
        if (!r) {
            v->oom = true;
            return false;
        }
        v->refs = r;
        v->cap = cap;
    }
    v->refs[v->nrefs++] = (vref){buf, index, store};
    return true;
}

/* A load of a parameter buffer (not scratch), recorded for the memory
 * checks; in bounds for every iteration when evaluated only on some paths. */
static bool chk_load(vx *v, const kiln_kexpr *x, bool cond)
{
    if (x->a < 0 || x->a >= v->k->nbufs || !v->f->bi[x->a].param) return false;
    if (cond && !in_bounds(v, x->b, x->a)) return false;
    return add_ref(v, x->a, x->b, false);
}

/* An expression the scalar emitter computes (lane-invariant values, index
 * expressions): its loads are lane-invariant and checked. */
static bool chk_any(vx *v, int32_t e, bool cond)
{
    if (bad_expr(v, e)) return false;
    uint8_t bit = cond ? 8 : 4;
    if (v->seen[e] & (bit | 8)) return true;
    v->seen[e] |= bit;
    const kiln_kexpr *x = &v->k->exprs[e];
    if (x->op == KX_LOCAL) return !dep(v, e);
    if (x->op == KX_LOAD) {
        if (x->a >= 0 && x->a < v->k->nbufs && const_buf(v, x->a)) return true;
        if (dep(v, x->b) || !chk_load(v, x, cond)) return false;
    }
    int32_t ops[3];
    bool oc[3];
    int n = kiln_ce_operands(x, ops, oc);
    for (int i = 0; i < n; i++)
        if (!chk_any(v, ops[i], cond || oc[i])) return false;
    return true;
}

static int dt_of(const vx *v, int32_t e)
{
    return bad_expr(v, e) ? -1 : v->k->exprs[e].dtype;
}

/* A value the vector code computes (cond: the scalar code evaluates it
 * only on some paths). */
static bool chk(vx *v, int32_t e, bool cond)
{
    if (bad_expr(v, e)) return false;
    uint8_t bit = cond ? 2 : 1;
    if (v->seen[e] & (bit | 2)) return true;
    v->seen[e] |= bit;
    const kiln_kexpr *x = &v->k->exprs[e];
    int t = x->dtype;
    if (!float_dt(t) && t != KILN_BOOL) return false;
    if (!dep(v, e)) return chk_any(v, e, cond); /* computed once, broadcast */
    int64_t coef;
    switch (x->op) {
    case KX_LOAD:
        return chk_load(v, x, cond) && v->k->bufs[x->a].dtype == t && float_dt(t) &&
               vcoef(v, x->b, &coef, 0) && coef == 1 && chk_any(v, x->b, cond);
    case KX_LOCAL:
        return x->a >= 0 && x->a < v->k->nlocals && v->setyet[x->a] &&
               v->k->local_dtype[x->a] == t;
    case KX_ADD:
    case KX_SUB:
    case KX_MUL:
    case KX_DIV:
    case KX_MIN:
    case KX_MAX:
        return float_dt(t) && dt_of(v, x->a) == t && dt_of(v, x->b) == t && chk(v, x->a, cond) &&
               chk(v, x->b, cond);
    case KX_LT:
    case KX_LE:
    case KX_GT:
    case KX_GE:
    case KX_EQ:
    case KX_NE: {
        int ta = dt_of(v, x->a);
        bool ok = ta == dt_of(v, x->b) &&
                  (float_dt(ta) || (ta == KILN_BOOL && (x->op == KX_EQ || x->op == KX_NE)));
        return ok && t == KILN_BOOL && chk(v, x->a, cond) && chk(v, x->b, cond);
    }
    case KX_AND:
    case KX_OR:
        return t == KILN_BOOL && dt_of(v, x->a) == t && dt_of(v, x->b) == t &&
               chk(v, x->a, cond) && chk(v, x->b, true);
    case KX_NOT:
        return t == KILN_BOOL && dt_of(v, x->a) == t && chk(v, x->a, cond);
    case KX_ISNAN:
        return t == KILN_BOOL && float_dt(dt_of(v, x->a)) && chk(v, x->a, cond);
    case KX_NEG:
    case KX_ABS:
    case KX_SQRT:
    case KX_EXP:
    case KX_LOG:
    case KX_TANH:
    case KX_ERF:
    case KX_LOG1P:
        return float_dt(t) && dt_of(v, x->a) == t && chk(v, x->a, cond);
    case KX_SELECT:
        return dt_of(v, x->a) == KILN_BOOL && dt_of(v, x->b) == t && dt_of(v, x->c) == t &&
               chk(v, x->a, cond) && chk(v, x->b, true) && chk(v, x->c, true);
    case KX_CAST: {
        int ta = dt_of(v, x->a);
        return ta != t && (float_dt(ta) || ta == KILN_BOOL) && chk(v, x->a, cond);
    }
    default:
        return false;
    }
}

/* Statements of list s at depth (0: the vector loop's body): which locals
 * they set, and that they are of the kinds above. */
static bool scan_sets(vx *v, int32_t s, int depth)
{
    const kiln_kernel *k = v->k;
    for (int n = 0; s >= 0; s = k->stmts[s].next) {
        if (s >= k->nstmts || ++n > k->nstmts || depth > 16) return false;
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_SET) {
            if (st->var < 0 || st->var >= k->nlocals) return false;
            int lt = k->local_dtype[st->var];
            if (!float_dt(lt) && lt != KILN_BOOL) return false;
            v->bodyset[st->var] = 1;
        } else if (st->kind == KS_LOOP) {
            if (st->var < 0 || st->var >= k->nvars || st->var == v->var || st->extent <= 0)
                return false;
            v->loops++;
            if (!scan_sets(v, st->body, depth + 1)) return false;
        } else if (st->kind != KS_STORE || depth > 0) {
            return false;
        }
    }
    return true;
}

/* Each statement's values, in program order. */
static bool scan_values(vx *v, int32_t s)
{
    const kiln_kernel *k = v->k;
    for (; s >= 0; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_LOOP) {
            if (!scan_values(v, st->body)) return false;
            continue;
        }
        if (bad_expr(v, st->value)) return false;
        if (st->kind == KS_SET) {
            if (dt_of(v, st->value) != k->local_dtype[st->var] || !chk(v, st->value, false))
                return false;
            v->setyet[st->var] = 1;
            continue;
        }
        int64_t coef;
        int bt = st->buf >= 0 && st->buf < k->nbufs ? k->bufs[st->buf].dtype : -1;
        if (!float_dt(bt) || !v->f->bi[st->buf].param || dt_of(v, st->value) != bt ||
            !vcoef(v, st->index, &coef, 0) || coef != 1 || !chk_any(v, st->index, false) ||
            !chk(v, st->value, false) || !add_ref(v, st->buf, st->index, true))
            return false;
    }
    return true;
}

static void mark_stmts(const kiln_kernel *k, int32_t s, uint8_t *in, int depth)
{
    for (int n = 0; s >= 0 && s < k->nstmts && n <= k->nstmts && depth < 32;
         s = k->stmts[s].next, n++) {
        in[s] = 1;
        if (k->stmts[s].kind == KS_LOOP || k->stmts[s].kind == KS_GEMM)
            mark_stmts(k, k->stmts[s].body, in, depth + 1);
    }
}

static void mark_reads(const kiln_kernel *k, int32_t e, uint8_t *mark, uint8_t *xseen)
{
    if (e < 0 || e >= k->nexprs || xseen[e]) return;
    xseen[e] = 1;
    const kiln_kexpr *x = &k->exprs[e];
    if (x->op == KX_LOCAL && x->a >= 0 && x->a < k->nlocals) mark[x->a] = 1;
    int32_t ops[3];
    bool cond[3];
    int n = kiln_ce_operands(x, ops, cond);
    for (int i = 0; i < n; i++)
        mark_reads(k, ops[i], mark, xseen);
}

/* Whether loop s can be vector code. */
static bool analyse(vx *v, int32_t s)
{
    const kiln_kernel *k = v->k;
    const kiln_kstmt *loop = &k->stmts[s];
    if (loop->body < 0 || !scan_sets(v, loop->body, 0) || v->loops == 0 ||
        !scan_values(v, loop->body))
        return false;
    /* memory: what is stored is read and written at one element per
     * iteration, through buffers that share all their bytes or none */
    const bufinfo *bi = v->f->bi;
    for (int i = 0; i < v->nrefs; i++)
        if (bi[v->refs[i].buf].partial_overlap) return false;
    for (int i = 0; i < v->nrefs; i++) {
        const vref *a = &v->refs[i];
        for (int j = 0; j < v->nrefs && a->store; j++) {
            const vref *b = &v->refs[j];
            bool alias = a->buf == b->buf || (!bi[a->buf].restrict_ok && !bi[b->buf].restrict_ok);
            if (j != i && alias && !same_element(k, a->index, b->index)) return false;
        }
    }
    /* locals the body sets are its own: nothing outside the loop reads them */
    uint8_t *in = calloc((size_t)k->nstmts + 1, 1), *mark = calloc((size_t)k->nlocals + 1, 1);
    uint8_t *xseen = calloc((size_t)k->nexprs + 1, 1);
    bool ok = in && mark && xseen;
    if (ok) {
        in[s] = 1;
        mark_stmts(k, loop->body, in, 0);
        for (int32_t t = 0; t < k->nstmts; t++) {
            const kiln_kstmt *st = &k->stmts[t];
            if (in[t] || st->kind == KS_LOOP || st->kind == KS_GEMM) continue;
            mark_reads(k, st->value, mark, xseen);
            if (st->kind == KS_STORE) mark_reads(k, st->index, mark, xseen);
        }
        for (int32_t l = 0; l < k->nlocals; l++)
            ok &= !(mark[l] && v->bodyset[l]);
    } else {
        v->oom = true;
    }
    free(in);
    free(mark);
    free(xseen);
    return ok;
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
    LLVMRealPredicate rp = LLVMRealOLT;
    LLVMIntPredicate ip = LLVMIntEQ;
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
    case KX_LT:
        rp = LLVMRealOLT;
        break;
    case KX_LE:
        rp = LLVMRealOLE;
        break;
    case KX_GT:
        rp = LLVMRealOGT;
        break;
    case KX_GE:
        rp = LLVMRealOGE;
        break;
    case KX_EQ:
        rp = LLVMRealOEQ, ip = LLVMIntEQ;
        break;
    case KX_NE:
        rp = LLVMRealUNE, ip = LLVMIntNE;
        break;
    default:
        kl_fail(m, "kernel %s: expression %d: op %d in vector code", v->k->name, e, x->op);
        return LLVMGetUndef(vty(v, t));
    }
    return fp ? LLVMBuildFCmp(m->b, rp, a, b, "") : LLVMBuildICmp(m->b, ip, a, b, "");
}

static LLVMValueRef vex(vx *v, int32_t e)
{
    if (v->vv[e]) return v->vv[e];
    LLVMValueRef r = dep(v, e) ? vex_op(v, e) : vex_uniform(v, e);
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
    size_t nl = (size_t)k->nlocals + 1, ne = (size_t)k->nexprs + 1;
    v.bodyset = calloc(nl, 1);
    v.setyet = calloc(nl, 1);
    v.dep = malloc(ne);
    v.seen = calloc(ne, 1);
    v.vv = calloc(ne, sizeof *v.vv);
    v.stack = calloc(ne, sizeof *v.stack);
    v.vloc = calloc(nl, sizeof *v.vloc);
    LLVMValueRef rest = NULL;
    if (!v.bodyset || !v.setyet || !v.dep || !v.seen || !v.vv || !v.stack || !v.vloc) {
        kl_fail(m, "out of memory");
        goto done;
    }
    memset(v.dep, -1, ne);
    if (!analyse(&v, s)) {
        if (v.oom) kl_fail(m, "out of memory");
        goto done;
    }
    for (int32_t l = 0; l < k->nlocals; l++)
        if (v.bodyset[l]) {
            char nm[24];
            snprintf(nm, sizeof nm, "vt%d", l);
            v.vloc[l] = kl_alloca(f, vty(&v, k->local_dtype[l]), 0, nm);
        }
    /* for (i = lo; i < vend; i += W), vend = lo + (hi - lo) / W * W */
    LLVMValueRef W = kl_i64(m, v.W);
    LLVMValueRef n = LLVMBuildSub(m->b, hi, lo, "");
    LLVMValueRef vend = LLVMBuildAdd(m->b, lo, LLVMBuildMul(m->b, LLVMBuildSDiv(m->b, n, W, ""), W, ""),
                                     "vend");
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
    free(v.bodyset);
    free(v.setyet);
    free(v.dep);
    free(v.seen);
    free(v.vv);
    free(v.stack);
    free(v.vloc);
    free(v.refs);
    return rest;
}

#else
typedef int kiln_emit_llvm_vec_unused; /* built without LLVM */
#endif
