/* codegen/vec_proof.c — the proof that a loop may run W iterations at once,
 * one per lane, shared by the C backend's vector loops (codegen/emit_vec.c:
 * innermost loops) and the LLVM backend's outer-loop vectoriser
 * (codegen/emit_llvm_vec.c: loops whose body holds inner loops).
 *
 * Expects: a kiln_vproof with the kernel, its buffer classification
 * (kiln_ce_classify_bufs), the loop (a KS_LOOP statement) and its variable,
 * and the emitter's capabilities (f64 lanes, pow/mod, inner loops, GEMM
 * extents), its arrays made by kiln_vp_init. Nothing here writes code.
 *
 * Guarantees: kiln_vp_prove returns true only when
 *   - statements: KS_SET of an f32 or bool local (f64 too with p->f64),
 *     KS_STORE of an f32 (f64) value of the buffer's dtype into a parameter
 *     buffer at the body's top level at an index that is loop variable * 1
 *     + something the same in every lane; KS_LOOPs with positive extents
 *     over other variables where p->outer (and then one at least), none
 *     otherwise; no checks, no GEMMs;
 *   - values that differ between lanes: loads that are contiguous (index =
 *     variable * 1 + lane-invariant) from a parameter buffer of the value's
 *     dtype, locals the body set earlier in the same iteration (in program
 *     order, inner loops included), + - * / min max (pow mod with
 *     p->pow_mod), neg abs sqrt exp log tanh erf log1p, comparisons,
 *     and/or/not/isnan on masks, select, casts among the lane dtypes;
 *     operands of the result's dtype (no promotions);
 *   - values the same in every lane (no read of the loop variable or of a
 *     local the body sets) read only lane-invariant elements (no gathers);
 *   - a load that the scalar code evaluates only on some paths (a select
 *     arm, the right of && / ||) has an affine index inside its buffer for
 *     every value of the loop variables (loops' extents; GEMMs' rows and
 *     columns with p->gemm_extents), as every lane evaluates it;
 *   - memory: no buffer overlaps another partially; a buffer that is stored
 *     (or may share storage with one that is: not restrict) is read and
 *     written at the stored element only (equal affine forms);
 *   - the locals the body sets are read nowhere outside the loop.
 * It then leaves bodyset (the locals the body sets) and dep (kiln_vp_dep)
 * for the emitter. Out of memory: false, with p->oom set.
 */
#include "codegen/vec_proof.h"

#include <stdlib.h>
#include <string.h>

#define MAX_TERMS 12

/* An affine int64 expression: c0 + sum of coef[i] * loop variable var[i]. */
typedef struct aff {
    int n;
    int32_t var[MAX_TERMS];
    int64_t coef[MAX_TERMS];
    int64_t c0;
} aff;

bool kiln_vp_init(kiln_vproof *p)
{
    size_t nl = (size_t)p->k->nlocals + 1, ne = (size_t)p->k->nexprs + 1;
    p->bodyset = calloc(nl, 1);
    p->setyet = calloc(nl, 1);
    p->dep = malloc(ne);
    p->seen = calloc(ne, 1);
    if (!p->bodyset || !p->setyet || !p->dep || !p->seen) return false;
    memset(p->dep, -1, ne);
    return true;
}

void kiln_vp_free(kiln_vproof *p)
{
    free(p->bodyset);
    free(p->setyet);
    free(p->dep);
    free(p->seen);
    free(p->refs);
    p->bodyset = p->setyet = p->seen = NULL;
    p->dep = NULL;
    p->refs = NULL;
}

/* ---- index analysis ---- */

static bool int_dt(int t)
{
    return t == KILN_I64 || t == KILN_I32 || t == KILN_U8;
}

/* A lane dtype of a float value. */
static bool float_dt(const kiln_vproof *p, int t)
{
    return t == KILN_F32 || (p->f64 && t == KILN_F64);
}

static bool bad_expr(const kiln_vproof *p, int32_t e)
{
    return e < 0 || e >= p->k->nexprs;
}

static int dt_of(const kiln_vproof *p, int32_t e)
{
    return bad_expr(p, e) ? -1 : p->k->exprs[e].dtype;
}

/* A buffer the kernel reads as a const node's inlined value. */
static bool const_buf(const kiln_vproof *p, int32_t buf)
{
    return !p->bi[buf].param && !p->bi[buf].scratch;
}

bool kiln_vp_dep(kiln_vproof *p, int32_t e)
{
    if (bad_expr(p, e)) return true;
    if (p->dep[e] >= 0) return p->dep[e];
    const kiln_kexpr *x = &p->k->exprs[e];
    bool d = false;
    if (x->op == KX_VAR)
        d = x->a == p->var;
    else if (x->op == KX_LOCAL)
        d = x->a < 0 || x->a >= p->k->nlocals || p->bodyset[x->a];
    else if (x->op == KX_LOAD && x->a >= 0 && x->a < p->k->nbufs && const_buf(p, x->a))
        d = false; /* a const node's load reads no index */
    else {
        int32_t ops[3];
        bool cond[3];
        int n = kiln_ce_operands(x, ops, cond);
        for (int i = 0; i < n; i++)
            d |= kiln_vp_dep(p, ops[i]);
    }
    p->dep[e] = d;
    return d;
}

/* The coefficient of the loop variable in index e, when e is that variable
 * times a constant plus something lane-invariant. */
static bool vcoef(kiln_vproof *p, int32_t e, int64_t *coef, int depth)
{
    if (bad_expr(p, e) || depth > 64) return false;
    if (!kiln_vp_dep(p, e)) {
        *coef = 0;
        return true;
    }
    const kiln_kexpr *x = &p->k->exprs[e];
    int64_t a, b;
    if (!int_dt(x->dtype)) return false;
    switch (x->op) {
    case KX_VAR:
        *coef = 1;
        return true;
    case KX_ADD:
    case KX_SUB:
        if (!vcoef(p, x->a, &a, depth + 1) || !vcoef(p, x->b, &b, depth + 1)) return false;
        return x->op == KX_ADD ? !__builtin_add_overflow(a, b, coef)
                               : !__builtin_sub_overflow(a, b, coef);
    case KX_MUL: {
        int32_t c = kiln_vp_dep(p, x->a) ? x->b : x->a, o = c == x->a ? x->b : x->a;
        if (bad_expr(p, c) || kiln_vp_dep(p, c) || p->k->exprs[c].op != KX_CONST) return false;
        return vcoef(p, o, &a, depth + 1) && !__builtin_mul_overflow(a, p->k->exprs[c].i, coef);
    }
    case KX_NEG:
        if (!vcoef(p, x->a, &a, depth + 1) || a == INT64_MIN) return false;
        *coef = -a;
        return true;
    default:
        return false;
    }
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

bool kiln_vp_same_element(const kiln_kernel *k, int32_t e, int32_t f)
{
    if (e == f) return true;
    aff a, b, d;
    if (!affine(k, e, &a, 0) || !affine(k, f, &b, 0) || !aff_add(&d, &a, &b, -1)) return false;
    if (d.c0) return false;
    for (int i = 0; i < d.n; i++)
        if (d.coef[i]) return false;
    return true;
}

/* The extent of loop variable var (its loop, or with gemm_extents a GEMM's
 * rows / columns), or -1. */
static int64_t var_extent(const kiln_vproof *p, int32_t var)
{
    const kiln_kernel *k = p->k;
    for (int32_t s = 0; s < k->nstmts; s++)
        if (k->stmts[s].kind == KS_LOOP && k->stmts[s].var == var) return k->stmts[s].extent;
    for (int32_t g = 0; p->gemm_extents && g < k->ngemms; g++) {
        if (k->gemms[g].var_i == var) return k->gemms[g].M;
        if (k->gemms[g].var_j == var) return k->gemms[g].N;
    }
    return -1;
}

/* Whether index e stays inside buffer buf for every value of the loop
 * variables: a load the scalar code evaluates only on some paths is safe to
 * evaluate on every lane. */
static bool in_bounds(const kiln_vproof *p, int32_t e, int32_t buf)
{
    aff a;
    if (!affine(p->k, e, &a, 0)) return false;
    int64_t lo = a.c0, hi = a.c0;
    for (int i = 0; i < a.n; i++) {
        int64_t ext = var_extent(p, a.var[i]), t;
        if (ext <= 0 || __builtin_mul_overflow(a.coef[i], ext - 1, &t)) return false;
        if (__builtin_add_overflow(t < 0 ? lo : hi, t, t < 0 ? &lo : &hi)) return false;
    }
    const kiln_kbuf *kb = &p->k->bufs[buf];
    return lo >= 0 && hi < kiln_shape_numel(kb->rank, kb->shape);
}

/* ---- values ---- */

static bool add_ref(kiln_vproof *p, int32_t buf, int32_t index, bool store)
{
    if (p->nrefs == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        kiln_vp_ref *r = realloc(p->refs, (size_t)cap * sizeof *r);
        if (!r) {
            p->oom = true;
            return false;
        }
        p->refs = r;
        p->cap = cap;
    }
    p->refs[p->nrefs++] = (kiln_vp_ref){buf, index, store};
    return true;
}

/* A load: a parameter buffer of the kernel (scratch arrays stay scalar),
 * recorded for the memory checks, in bounds for every iteration when the
 * scalar code evaluates it only on some paths (cond). */
static bool chk_load(kiln_vproof *p, const kiln_kexpr *x, bool cond)
{
    if (x->a < 0 || x->a >= p->k->nbufs || !p->bi[x->a].param) return false;
    if (cond && !in_bounds(p, x->b, x->a)) return false;
    return add_ref(p, x->a, x->b, false);
}

/* Any expression the emitter computes as scalar code (lane-invariant
 * values, index expressions): its loads are lane-invariant and checked. */
static bool chk_any(kiln_vproof *p, int32_t e, bool cond)
{
    if (bad_expr(p, e)) return false;
    uint8_t bit = cond ? 8 : 4;
    if (p->seen[e] & (bit | 8)) return true;
    p->seen[e] |= bit;
    const kiln_kexpr *x = &p->k->exprs[e];
    if (x->op == KX_LOCAL) return !kiln_vp_dep(p, e);
    if (x->op == KX_LOAD) {
        if (x->a >= 0 && x->a < p->k->nbufs && const_buf(p, x->a)) return true;
        if (kiln_vp_dep(p, x->b) || !chk_load(p, x, cond)) return false;
    }
    int32_t ops[3];
    bool oc[3];
    int n = kiln_ce_operands(x, ops, oc);
    for (int i = 0; i < n; i++)
        if (!chk_any(p, ops[i], cond || oc[i])) return false;
    return true;
}

/* A value the vector code computes (cond: the scalar code evaluates it
 * only on some paths). */
static bool chk(kiln_vproof *p, int32_t e, bool cond)
{
    if (bad_expr(p, e)) return false;
    uint8_t bit = cond ? 2 : 1;
    if (p->seen[e] & (bit | 2)) return true;
    p->seen[e] |= bit;
    const kiln_kexpr *x = &p->k->exprs[e];
    int t = x->dtype;
    if (!float_dt(p, t) && t != KILN_BOOL) return false;
    if (!kiln_vp_dep(p, e)) return chk_any(p, e, cond); /* computed once, broadcast */
    int64_t coef;
    switch (x->op) {
    case KX_LOAD:
        return chk_load(p, x, cond) && p->k->bufs[x->a].dtype == t && float_dt(p, t) &&
               vcoef(p, x->b, &coef, 0) && coef == 1 && chk_any(p, x->b, cond);
    case KX_LOCAL: /* read before its set: carried from the last iteration */
        return x->a >= 0 && x->a < p->k->nlocals && p->setyet[x->a] && p->k->local_dtype[x->a] == t;
    case KX_MOD:
    case KX_POW:
        if (!p->pow_mod) return false;
        /* fall through */
    case KX_ADD:
    case KX_SUB:
    case KX_MUL:
    case KX_DIV:
    case KX_MIN:
    case KX_MAX:
        return float_dt(p, t) && dt_of(p, x->a) == t && dt_of(p, x->b) == t && chk(p, x->a, cond) &&
               chk(p, x->b, cond);
    case KX_LT:
    case KX_LE:
    case KX_GT:
    case KX_GE:
    case KX_EQ:
    case KX_NE: {
        int ta = dt_of(p, x->a);
        bool ok = ta == dt_of(p, x->b) &&
                  (float_dt(p, ta) || (ta == KILN_BOOL && (x->op == KX_EQ || x->op == KX_NE)));
        return ok && t == KILN_BOOL && chk(p, x->a, cond) && chk(p, x->b, cond);
    }
    case KX_AND:
    case KX_OR:
        return t == KILN_BOOL && dt_of(p, x->a) == t && dt_of(p, x->b) == t && chk(p, x->a, cond) &&
               chk(p, x->b, true);
    case KX_NOT:
        return t == KILN_BOOL && dt_of(p, x->a) == t && chk(p, x->a, cond);
    case KX_ISNAN:
        return t == KILN_BOOL && float_dt(p, dt_of(p, x->a)) && chk(p, x->a, cond);
    case KX_NEG:
    case KX_ABS:
    case KX_SQRT:
    case KX_EXP:
    case KX_LOG:
    case KX_TANH:
    case KX_ERF:
    case KX_LOG1P:
        return float_dt(p, t) && dt_of(p, x->a) == t && chk(p, x->a, cond);
    case KX_SELECT:
        return dt_of(p, x->a) == KILN_BOOL && dt_of(p, x->b) == t && dt_of(p, x->c) == t &&
               chk(p, x->a, cond) && chk(p, x->b, true) && chk(p, x->c, true);
    case KX_CAST: {
        int ta = dt_of(p, x->a);
        return ta != t && (float_dt(p, ta) || ta == KILN_BOOL) && chk(p, x->a, cond);
    }
    default:
        return false;
    }
}

/* ---- statements ---- */

/* Statements of list s at depth (0: the loop's body): which locals they
 * set, and that they are of the kinds above. */
static bool scan_sets(kiln_vproof *p, int32_t s, int depth)
{
    const kiln_kernel *k = p->k;
    for (int n = 0; s >= 0; s = k->stmts[s].next) {
        if (s >= k->nstmts || ++n > k->nstmts || depth > 16) return false;
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_SET) {
            if (st->var < 0 || st->var >= k->nlocals) return false;
            int lt = k->local_dtype[st->var];
            if (!float_dt(p, lt) && lt != KILN_BOOL) return false;
            p->bodyset[st->var] = 1;
        } else if (st->kind == KS_LOOP && p->outer) {
            if (st->var < 0 || st->var >= k->nvars || st->var == p->var || st->extent <= 0)
                return false;
            p->loops++;
            if (!scan_sets(p, st->body, depth + 1)) return false;
        } else if (st->kind != KS_STORE || depth > 0) {
            return false;
        }
    }
    return true;
}

/* Each statement's values, in program order (a local read before its set
 * is carried across iterations). */
static bool scan_values(kiln_vproof *p, int32_t s)
{
    const kiln_kernel *k = p->k;
    for (; s >= 0; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_LOOP) {
            if (!scan_values(p, st->body)) return false;
            continue;
        }
        if (bad_expr(p, st->value)) return false;
        if (st->kind == KS_SET) {
            if (dt_of(p, st->value) != k->local_dtype[st->var] || !chk(p, st->value, false))
                return false;
            p->setyet[st->var] = 1;
            continue;
        }
        int64_t coef;
        int bt = st->buf >= 0 && st->buf < k->nbufs ? k->bufs[st->buf].dtype : -1;
        if (!float_dt(p, bt) || !p->bi[st->buf].param || dt_of(p, st->value) != bt ||
            !vcoef(p, st->index, &coef, 0) || coef != 1 || !chk_any(p, st->index, false) ||
            !chk(p, st->value, false) || !add_ref(p, st->buf, st->index, true))
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

/* Marks (mark[l] = 1) the locals expression e reads. */
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

bool kiln_vp_prove(kiln_vproof *p)
{
    const kiln_kernel *k = p->k;
    const kiln_kstmt *loop = &k->stmts[p->s];
    if (loop->body < 0 || !scan_sets(p, loop->body, 0) || (p->outer && p->loops == 0) ||
        !scan_values(p, loop->body))
        return false;
    /* memory: what is stored is read and written at one element per
     * iteration, through buffers that share all their bytes or none */
    const bufinfo *bi = p->bi;
    for (int i = 0; i < p->nrefs; i++)
        if (bi[p->refs[i].buf].partial_overlap) return false;
    for (int i = 0; i < p->nrefs; i++) {
        const kiln_vp_ref *a = &p->refs[i];
        for (int j = 0; j < p->nrefs && a->store; j++) {
            const kiln_vp_ref *b = &p->refs[j];
            bool alias = a->buf == b->buf || (!bi[a->buf].restrict_ok && !bi[b->buf].restrict_ok);
            if (j != i && alias && !kiln_vp_same_element(k, a->index, b->index)) return false;
        }
    }
    /* locals the body sets are its own: nothing outside the loop reads them */
    uint8_t *in = calloc((size_t)k->nstmts + 1, 1), *mark = calloc((size_t)k->nlocals + 1, 1);
    uint8_t *xseen = calloc((size_t)k->nexprs + 1, 1);
    bool ok = in && mark && xseen;
    if (ok) {
        in[p->s] = 1;
        mark_stmts(k, loop->body, in, 0);
        for (int32_t t = 0; t < k->nstmts; t++) {
            const kiln_kstmt *st = &k->stmts[t];
            if (in[t] || st->kind == KS_LOOP || st->kind == KS_GEMM) continue;
            mark_reads(k, st->value, mark, xseen);
            if (st->kind == KS_STORE) mark_reads(k, st->index, mark, xseen);
        }
        for (int32_t l = 0; l < k->nlocals; l++)
            ok &= !(mark[l] && p->bodyset[l]);
    } else {
        p->oom = true;
    }
    free(in);
    free(mark);
    free(xseen);
    return ok;
}
