/* codegen/emit_vec.c — explicit vector code for loops that lowering marked
 * with the vector hint: a main loop over whole vectors of the target's
 * width, then the ordinary scalar loop over what is left.
 *
 * Expects: a kctx of the C emitter (emit_c.c) with its target and buffer
 * classification, and a KS_LOOP statement whose vector hint is set. The
 * unit is compiled by gcc or clang (GCC vector extensions), as C11 without
 * -ffast-math and without FP contraction (ISO C mode), as codegen/cc.c does.
 *
 * Guarantees: kiln_ce_put_vector_loop writes vector code only when the
 * target has vectors (W = target->vec_floats lanes > 1: 16 AVX-512, 8 AVX2,
 * 4 NEON) and the body is one it can prove equivalent to the scalar loop:
 *   - statements: KS_SET of an f32 or bool local, KS_STORE of an f32 value
 *     into an f32 buffer at an index that is loop variable * 1 + something
 *     invariant (no inner loops, checks, GEMMs);
 *   - values: f32 loads that are contiguous (index = var * 1 + invariant) or
 *     invariant (broadcast), locals set earlier in the same iteration (vector
 *     temporaries) or set before the loop (broadcast), any invariant f32 or
 *     bool expression (computed as scalar C, then broadcast), and on varying
 *     values + - * /, neg, abs, sqrt, NaN-propagating min/max, comparisons,
 *     and/or/not/isnan on masks, select (bit masks, never a C ternary), casts
 *     f32 <-> bool, and exp/log/tanh/erf/log1p (codegen/vmath.h), pow and
 *     fmod applied per lane in a `#pragma omp simd` lane loop;
 *   - memory: no iteration reads or writes an element another iteration
 *     writes (a buffer that is stored, or shares storage with one that is,
 *     is read and written at the same element only, and only where it shares
 *     all its bytes, as in-place pairs do); a load that the scalar code
 *     evaluates only on some paths (a select arm, the right of && / ||) is
 *     evaluated on every lane here, so its index must be affine in the loop
 *     variables with bounds inside the buffer for every iteration;
 *   - a local set in the body is read only after its set in the same
 *     iteration and nowhere outside the loop.
 * Every lane computes the same IEEE single-precision operations the scalar
 * code does, in the same order, so results are bit-identical to the scalar
 * loop (and to any split across threads); a NaN result is a NaN, though
 * where two NaNs meet which one comes out is the compiler's choice here as
 * in scalar code (it may swap the operands of + and *). Otherwise it writes
 * nothing and returns false, and the caller writes today's scalar loop.
 *
 * The text: `for (i = from; i < end; i += W)` over whole vectors, locals as
 * `kiln_vWsf vtN` (masks `kiln_vWsi`), one `const ... wN = ...;` line per
 * vector operation, loads and stores through kiln_vW_load / kiln_vW_store
 * (unaligned, memcpy), then `for (i = end; i < to; i++)` with the scalar
 * statements (omitted when the extent is a multiple of W).
 */
#include "codegen/emit_c_internal.h"

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

typedef struct mref {
    int32_t buf, index;
    bool store;
} mref;

typedef struct vctx {
    kctx *c;
    const kiln_kernel *k;
    const kiln_kstmt *loop;
    int W;
    uint8_t *bodyset; /* per local: set in the body */
    uint8_t *setyet;  /* per local: set by a statement already checked */
    int8_t *dep;      /* per expression: -1 unknown, 0 invariant, 1 varies with the lane */
    uint8_t *seen;    /* per expression: checks done (1, 2: value; 4, 8: any; odd: unconditional) */
    int32_t *wn;      /* per expression: its vector temporary in this statement, or -1 */
    int nw;
    int32_t *done; /* loads and broadcasts written in this statement */
    int ndone;
    mref *refs;
    int nrefs, cap;
    bool oom;
} vctx;

/* ---- analysis ---- */

static bool int_type(int t)
{
    return t == KILN_I64 || t == KILN_I32 || t == KILN_U8;
}

/* A buffer the kernel reads as a const node's inlined value. */
static bool const_buf(const vctx *v, int32_t buf)
{
    return !v->c->bi[buf].param && !v->c->bi[buf].scratch;
}

static bool bad_expr(const vctx *v, int32_t e)
{
    return e < 0 || e >= v->k->nexprs;
}

/* Whether e's value differs between iterations of the loop: it reads the
 * loop variable or a local the body sets. */
static bool dep(vctx *v, int32_t e)
{
    if (bad_expr(v, e)) return true;
    if (v->dep[e] >= 0) return v->dep[e];
    const kiln_kexpr *x = &v->k->exprs[e];
    bool d = false;
    if (x->op == KX_VAR)
        d = x->a == v->loop->var;
    else if (x->op == KX_LOCAL)
        d = x->a >= 0 && x->a < v->k->nlocals && v->bodyset[x->a];
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

/* The coefficient of the loop variable in index e when e is that variable
 * times a constant plus something invariant. */
static bool vcoef(vctx *v, int32_t e, int64_t *coef, int depth)
{
    if (bad_expr(v, e) || depth > 64) return false;
    if (!dep(v, e)) {
        *coef = 0;
        return true;
    }
    const kiln_kexpr *x = &v->k->exprs[e];
    int64_t a, b;
    if (!int_type(x->dtype)) return false;
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
        int32_t k = x->a, o = x->b;
        if (dep(v, k)) k = x->b, o = x->a;
        if (dep(v, k) || bad_expr(v, k) || v->k->exprs[k].op != KX_CONST) return false;
        if (!vcoef(v, o, &a, depth + 1)) return false;
        return !__builtin_mul_overflow(a, v->k->exprs[k].i, coef);
    }
    case KX_NEG:
        if (!vcoef(v, x->a, &a, depth + 1) || a == INT64_MIN) return false;
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

/* e as an affine form over loop variables, or false. */
static bool affine(const kiln_kernel *k, int32_t e, aff *r, int depth)
{
    memset(r, 0, sizeof *r);
    if (e < 0 || e >= k->nexprs || depth > 64) return false;
    const kiln_kexpr *x = &k->exprs[e];
    if (!int_type(x->dtype)) return false;
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
        if (a.n == 0) {
            *r = b;
            return aff_scale(r, a.c0);
        }
        if (b.n == 0) {
            *r = a;
            return aff_scale(r, b.c0);
        }
        return false;
    case KX_NEG:
        if (!affine(k, x->a, r, depth + 1)) return false;
        return aff_scale(r, -1);
    default:
        return false;
    }
}

/* Whether index expressions e and f name the same element in every
 * iteration (the same expression, or equal affine forms). */
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

/* The extent of loop variable var (its loop, or a GEMM's rows / columns). */
static int64_t var_extent(const kiln_kernel *k, int32_t var)
{
    for (int32_t s = 0; s < k->nstmts; s++)
        if (k->stmts[s].kind == KS_LOOP && k->stmts[s].var == var) return k->stmts[s].extent;
    for (int32_t g = 0; g < k->ngemms; g++) {
        if (k->gemms[g].var_i == var) return k->gemms[g].M;
        if (k->gemms[g].var_j == var) return k->gemms[g].N;
    }
    return -1;
}

/* Whether index e stays inside buffer buf for every value of the loop
 * variables: a load the scalar code evaluates only on some paths is safe to
 * evaluate on every lane. */
static bool in_bounds(const vctx *v, int32_t e, int32_t buf)
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

static bool add_ref(vctx *v, int32_t buf, int32_t index, bool store)
{
    if (v->nrefs == v->cap) {
        int cap = v->cap ? 2 * v->cap : 16;
        mref *r = realloc(v->refs, (size_t)cap * sizeof *r);
        if (!r) {
            v->oom = true;
            return false;
        }
        v->refs = r;
        v->cap = cap;
    }
    v->refs[v->nrefs++] = (mref){buf, index, store};
    return true;
}

/* A load: a real buffer of the kernel (scratch arrays stay scalar), recorded
 * for the memory checks, in bounds for every iteration when the scalar code
 * evaluates it only on some paths (cond). */
static bool chk_load(vctx *v, const kiln_kexpr *x, bool cond)
{
    if (x->a < 0 || x->a >= v->k->nbufs || !v->c->bi[x->a].param) return false;
    if (cond && !in_bounds(v, x->b, x->a)) return false;
    return add_ref(v, x->a, x->b, false);
}

/* Any expression the vector code evaluates as scalar C (invariant values,
 * index expressions): its loads are invariant (no gathers) and checked. */
static bool chk_any(vctx *v, int32_t e, bool cond)
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

static bool is_f32(const vctx *v, int32_t e)
{
    return !bad_expr(v, e) && v->k->exprs[e].dtype == KILN_F32;
}

static bool is_bool(const vctx *v, int32_t e)
{
    return !bad_expr(v, e) && v->k->exprs[e].dtype == KILN_BOOL;
}

/* A value the vector code computes (cond: the scalar code evaluates it
 * only on some paths). */
static bool chk(vctx *v, int32_t e, bool cond)
{
    if (bad_expr(v, e)) return false;
    uint8_t bit = cond ? 2 : 1;
    if (v->seen[e] & (bit | 2)) return true;
    v->seen[e] |= bit;
    const kiln_kexpr *x = &v->k->exprs[e];
    if (x->dtype != KILN_F32 && x->dtype != KILN_BOOL) return false;
    if (!dep(v, e)) return chk_any(v, e, cond); /* computed once, broadcast */
    int64_t coef;
    switch (x->op) {
    case KX_LOAD:
        return chk_load(v, x, cond) && v->k->bufs[x->a].dtype == KILN_F32 &&
               vcoef(v, x->b, &coef, 0) && coef == 1 && chk_any(v, x->b, cond);
    case KX_LOCAL:
        return v->setyet[x->a]; /* read before its set: carried from the last iteration */
    case KX_ADD:
    case KX_SUB:
    case KX_MUL:
    case KX_DIV:
    case KX_MOD:
    case KX_MIN:
    case KX_MAX:
    case KX_POW:
        return is_f32(v, e) && is_f32(v, x->a) && is_f32(v, x->b) && chk(v, x->a, cond) &&
               chk(v, x->b, cond);
    case KX_LT:
    case KX_LE:
    case KX_GT:
    case KX_GE:
    case KX_EQ:
    case KX_NE: {
        bool same = is_f32(v, x->a) ? is_f32(v, x->b)
                                    : (x->op == KX_EQ || x->op == KX_NE) && is_bool(v, x->a) &&
                                          is_bool(v, x->b);
        return same && is_bool(v, e) && chk(v, x->a, cond) && chk(v, x->b, cond);
    }
    case KX_AND:
    case KX_OR:
        return is_bool(v, e) && is_bool(v, x->a) && is_bool(v, x->b) && chk(v, x->a, cond) &&
               chk(v, x->b, true);
    case KX_NOT:
        return is_bool(v, e) && is_bool(v, x->a) && chk(v, x->a, cond);
    case KX_ISNAN:
        return is_bool(v, e) && is_f32(v, x->a) && chk(v, x->a, cond);
    case KX_NEG:
    case KX_ABS:
    case KX_SQRT:
    case KX_EXP:
    case KX_LOG:
    case KX_TANH:
    case KX_ERF:
    case KX_LOG1P:
        return is_f32(v, e) && is_f32(v, x->a) && chk(v, x->a, cond);
    case KX_SELECT:
        return is_bool(v, x->a) && !bad_expr(v, x->b) && !bad_expr(v, x->c) &&
               v->k->exprs[x->b].dtype == x->dtype && v->k->exprs[x->c].dtype == x->dtype &&
               chk(v, x->a, cond) && chk(v, x->b, true) && chk(v, x->c, true);
    case KX_CAST:
        return ((is_f32(v, e) && is_bool(v, x->a)) || (is_bool(v, e) && is_f32(v, x->a))) &&
               chk(v, x->a, cond);
    default:
        return false;
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

/* Whether loop s can be vector code: fills v (bodyset, refs). */
static bool analyse(vctx *v, int32_t s)
{
    const kiln_kernel *k = v->k;
    const kiln_kstmt *loop = &k->stmts[s];
    if (loop->body < 0) return false;
    /* statements: sets and stores only; which locals the body sets */
    int n = 0;
    for (int32_t t = loop->body; t >= 0; t = k->stmts[t].next) {
        if (t >= k->nstmts || ++n > k->nstmts) return false;
        const kiln_kstmt *st = &k->stmts[t];
        if (st->kind == KS_SET) {
            if (st->var < 0 || st->var >= k->nlocals) return false;
            int lt = k->local_dtype[st->var];
            if (lt != KILN_F32 && lt != KILN_BOOL) return false;
            v->bodyset[st->var] = 1;
        } else if (st->kind != KS_STORE) {
            return false;
        }
    }
    /* each statement's values, in order (a local read before its set is
     * carried across iterations) */
    for (int32_t t = loop->body; t >= 0; t = k->stmts[t].next) {
        const kiln_kstmt *st = &k->stmts[t];
        if (bad_expr(v, st->value)) return false;
        if (st->kind == KS_SET) {
            if (k->exprs[st->value].dtype != k->local_dtype[st->var] || !chk(v, st->value, false))
                return false;
            v->setyet[st->var] = 1;
            continue;
        }
        int64_t coef;
        if (st->buf < 0 || st->buf >= k->nbufs || !v->c->bi[st->buf].param ||
            k->bufs[st->buf].dtype != KILN_F32 || !is_f32(v, st->value) ||
            !vcoef(v, st->index, &coef, 0) || coef != 1 || !chk_any(v, st->index, false) ||
            !chk(v, st->value, false) || !add_ref(v, st->buf, st->index, true))
            return false;
    }
    /* memory: what is stored is read and written at one element per
     * iteration, through buffers that share all their bytes or none */
    const bufinfo *bi = v->c->bi;
    for (int i = 0; i < v->nrefs; i++)
        if (bi[v->refs[i].buf].partial_overlap) return false;
    for (int i = 0; i < v->nrefs; i++) {
        const mref *a = &v->refs[i];
        for (int j = 0; j < v->nrefs && a->store; j++) {
            const mref *b = &v->refs[j];
            bool alias = a->buf == b->buf || (!bi[a->buf].restrict_ok && !bi[b->buf].restrict_ok);
            if (j != i && alias && !same_element(k, a->index, b->index)) return false;
        }
    }
    /* locals the body sets are its own: nothing outside the loop reads them */
    uint8_t *mark = calloc((size_t)k->nlocals + 1, 1), *xseen = calloc((size_t)k->nexprs + 1, 1);
    if (!mark || !xseen) {
        free(mark);
        free(xseen);
        v->oom = true;
        return false;
    }
    for (int32_t t = 0; t < k->nstmts; t++) {
        bool inside = t == s;
        for (int32_t u = loop->body; u >= 0 && !inside; u = k->stmts[u].next)
            inside = u == t;
        const kiln_kstmt *st = &k->stmts[t];
        if (inside || st->kind == KS_LOOP || st->kind == KS_GEMM) continue;
        mark_reads(k, st->value, mark, xseen);
        if (st->kind == KS_STORE) mark_reads(k, st->index, mark, xseen);
    }
    bool ok = true;
    for (int32_t l = 0; l < k->nlocals; l++)
        ok &= !(mark[l] && v->bodyset[l]);
    free(mark);
    free(xseen);
    return ok;
}

/* ---- writing ---- */

/* Whether e and f compute the same value in an iteration (between two
 * stores): the same tree, loads at the same element. */
static bool same_value(const kiln_kernel *k, int32_t e, int32_t f, int depth)
{
    if (e == f) return true;
    if (e < 0 || f < 0 || e >= k->nexprs || f >= k->nexprs || depth > 16) return false;
    const kiln_kexpr *x = &k->exprs[e], *y = &k->exprs[f];
    if (x->op != y->op || x->dtype != y->dtype) return false;
    switch (x->op) {
    case KX_CONST:
        return !memcmp(&x->f, &y->f, sizeof x->f) && x->i == y->i;
    case KX_VAR:
    case KX_LOCAL:
        return x->a == y->a;
    case KX_LOAD:
        return x->a == y->a && same_element(k, x->b, y->b);
    default: {
        int32_t xo[3], yo[3];
        bool xc[3], yc[3];
        int n = kiln_ce_operands(x, xo, xc);
        if (n != kiln_ce_operands(y, yo, yc)) return false;
        for (int i = 0; i < n; i++)
            if (!same_value(k, xo[i], yo[i], depth + 1)) return false;
        return true;
    }
    }
}

/* The name of a computed vector value. */
static void put_name(vctx *v, int32_t e)
{
    const kiln_kexpr *x = &v->k->exprs[e];
    if (x->op == KX_LOCAL && v->bodyset[x->a])
        kiln_sb_printf(v->c->b, "vt%d", x->a);
    else
        kiln_sb_printf(v->c->b, "w%d", v->wn[e]);
}

/* The vector operator of op: the scalar one, except that masks combine
 * bitwise; NULL where vectors have none (mod). */
static const char *vop_token(int op)
{
    if (op == KX_AND) return "&";
    if (op == KX_OR) return "|";
    if (op == KX_MOD || !strcmp(kiln_ce_binop_token(op), "?")) return NULL;
    return kiln_ce_binop_token(op);
}

/* The helper of an op applied through kiln_vW_<name>. */
static const char *vop_helper(int op)
{
    switch (op) {
    case KX_MIN:
        return "min";
    case KX_MAX:
        return "max";
    case KX_POW:
        return "powf";
    case KX_MOD:
        return "fmodf";
    case KX_ABS:
        return "abs";
    case KX_SQRT:
        return "sqrt";
    case KX_EXP:
        return "expf";
    case KX_LOG:
        return "logf";
    case KX_TANH:
        return "tanhf";
    case KX_ERF:
        return "erff";
    case KX_LOG1P:
        return "log1pf";
    default:
        return NULL;
    }
}

/* Writes the lines that compute e (operands first), unless done. */
static void put_vexpr(vctx *v, int32_t e, int depth)
{
    const kiln_kexpr *x = &v->k->exprs[e];
    if (v->wn[e] >= 0 || (x->op == KX_LOCAL && v->bodyset[x->a])) return;
    kiln_sbuf *b = v->c->b;
    int W = v->W;
    bool inv = !dep(v, e);
    if (inv || x->op == KX_LOAD) /* the same load or broadcast written before: reuse it */
        for (int i = 0; i < v->ndone; i++)
            if (same_value(v->k, v->done[i], e, 0)) {
                v->wn[e] = v->wn[v->done[i]];
                return;
            }
    if (!inv && x->op != KX_LOAD) {
        int32_t ops[3];
        bool cond[3];
        int n = kiln_ce_operands(x, ops, cond);
        for (int i = 0; i < n; i++)
            put_vexpr(v, ops[i], depth);
    }
    int w = v->nw++;
    kiln_ce_indent(b, depth);
    kiln_sb_printf(b, "const kiln_v%d%s w%d = ", W, x->dtype == KILN_BOOL ? "si" : "sf", w);
    const char *tok = vop_token(x->op), *fn = vop_helper(x->op);
    if (inv) {
        /* computed as scalar C, once per vector */
        kiln_sb_printf(b, "kiln_v%d_%s(", W, x->dtype == KILN_BOOL ? "mask1" : "set1");
        kiln_ce_put_expr(v->c, e, true);
        kiln_sb_puts(b, ")");
    } else if (x->op == KX_LOAD) {
        kiln_sb_printf(b, "kiln_v%d_load(&b%d[", W, x->a);
        kiln_ce_put_expr(v->c, x->b, true);
        kiln_sb_puts(b, "])");
    } else if (x->op == KX_SELECT) {
        kiln_sb_printf(b, "kiln_v%d_%s(", W, x->dtype == KILN_BOOL ? "selm" : "sel");
        put_name(v, x->a);
        kiln_sb_puts(b, ", ");
        put_name(v, x->b);
        kiln_sb_puts(b, ", ");
        put_name(v, x->c);
        kiln_sb_puts(b, ")");
    } else if (x->op == KX_CAST) {
        if (x->dtype == KILN_BOOL) {
            put_name(v, x->a);
            kiln_sb_printf(b, " != kiln_v%d_set1(0.0f)", W);
        } else {
            kiln_sb_printf(b, "kiln_v%d_b2f(", W);
            put_name(v, x->a);
            kiln_sb_puts(b, ")");
        }
    } else if (x->op == KX_NEG || x->op == KX_NOT) {
        kiln_sb_puts(b, x->op == KX_NEG ? "-" : "~");
        put_name(v, x->a);
    } else if (x->op == KX_ISNAN) {
        put_name(v, x->a);
        kiln_sb_puts(b, " != ");
        put_name(v, x->a);
    } else if (tok) {
        put_name(v, x->a);
        kiln_sb_printf(b, " %s ", tok);
        put_name(v, x->b);
    } else if (fn) {
        kiln_sb_printf(b, "kiln_v%d_%s(", W, fn);
        put_name(v, x->a);
        if (x->op == KX_MIN || x->op == KX_MAX || x->op == KX_POW || x->op == KX_MOD) {
            kiln_sb_puts(b, ", ");
            put_name(v, x->b);
        }
        kiln_sb_puts(b, ")");
    } else {
        v->c->error = "emit_vec: an op the analysis let through";
        kiln_sb_puts(b, "0");
    }
    kiln_sb_puts(b, ";\n");
    v->wn[e] = w;
    if (inv || x->op == KX_LOAD) v->done[v->ndone++] = e;
}

static void put_vector_body(vctx *v, int depth)
{
    const kiln_kernel *k = v->k;
    kiln_sbuf *b = v->c->b;
    for (int32_t l = 0; l < k->nlocals; l++)
        if (v->bodyset[l]) {
            kiln_ce_indent(b, depth);
            kiln_sb_printf(b, "kiln_v%d%s vt%d;\n", v->W,
                           k->local_dtype[l] == KILN_BOOL ? "si" : "sf", l);
        }
    for (int32_t t = v->loop->body; t >= 0; t = k->stmts[t].next) {
        const kiln_kstmt *st = &k->stmts[t];
        for (int32_t e = 0; e < k->nexprs; e++)
            v->wn[e] = -1; /* per statement, as the scalar code */
        v->ndone = 0;
        put_vexpr(v, st->value, depth);
        kiln_ce_indent(b, depth);
        if (st->kind == KS_SET) {
            kiln_sb_printf(b, "vt%d = ", st->var);
        } else {
            kiln_sb_printf(b, "kiln_v%d_store(&b%d[", v->W, st->buf);
            kiln_ce_put_expr(v->c, st->index, true);
            kiln_sb_puts(b, "], ");
        }
        put_name(v, st->value);
        kiln_sb_puts(b, st->kind == KS_SET ? ";\n" : ");\n");
    }
}

bool kiln_ce_put_vector_loop(kctx *c, int32_t s, int depth, const char *lo_hi)
{
    const kiln_kernel *k = c->k;
    if (!c->target || c->target->isa == KILN_ISA_SCALAR || c->target->vec_floats < 2 || !c->bi ||
        s < 0 || s >= k->nstmts || k->stmts[s].kind != KS_LOOP)
        return false;
    const kiln_kstmt *st = &k->stmts[s];
    int W = c->target->vec_floats;
    if (!lo_hi && st->extent < W) return false;
    vctx v = {.c = c, .k = k, .loop = st, .W = W};
    size_t nl = (size_t)k->nlocals + 1, ne = (size_t)k->nexprs + 1;
    v.bodyset = calloc(nl, 1);
    v.setyet = calloc(nl, 1);
    v.dep = malloc(ne);
    v.seen = calloc(ne, 1);
    v.wn = malloc(ne * sizeof *v.wn);
    v.done = malloc(ne * sizeof *v.done);
    bool ok = v.bodyset && v.setyet && v.dep && v.seen && v.wn && v.done;
    if (ok) {
        memset(v.dep, -1, ne);
        ok = analyse(&v, s);
    }
    if (ok) {
        kiln_sbuf *b = c->b;
        int64_t whole = st->extent / W * W;
        char from[64], to[32];
        kiln_ce_indent(b, depth);
        if (lo_hi)
            kiln_sb_printf(b, "for (int64_t i%d = lo; i%d <= hi - %d; i%d += %d) { /* %s, ",
                           st->var, st->var, W, st->var, W, lo_hi);
        else
            kiln_sb_printf(b, "for (int64_t i%d = 0; i%d < %lld; i%d += %d) { /* ", st->var,
                           st->var, (long long)whole, st->var, W);
        kiln_sb_printf(b, "vector %d: %d lanes (%s) */\n", st->vector, W,
                       kiln_isa_name(c->target->isa));
        put_vector_body(&v, depth + 1);
        kiln_ce_indent(b, depth);
        kiln_sb_puts(b, "}\n");
        if (lo_hi || whole < st->extent) {
            if (lo_hi)
                snprintf(from, sizeof from, "lo + (hi - lo) / %d * %d", W, W);
            else
                snprintf(from, sizeof from, "%lld", (long long)whole);
            if (lo_hi)
                snprintf(to, sizeof to, "hi");
            else
                snprintf(to, sizeof to, "%lld", (long long)st->extent);
            kiln_ce_put_loop_range(c, st, depth, from, to, "the rest, scalar", false);
            kiln_ce_put_stmts(c, st->body, depth + 1, 0);
            kiln_ce_indent(b, depth);
            kiln_sb_puts(b, "}\n");
        }
        if (c->vec_used) *c->vec_used = true;
    }
    if (v.oom) c->b->oom = true;
    free(v.bodyset);
    free(v.setyet);
    free(v.dep);
    free(v.seen);
    free(v.wn);
    free(v.done);
    free(v.refs);
    return ok;
}

/* ---- the prelude ---- */

void kiln_ce_put_vec_prelude(kiln_sbuf *b, const kiln_cg_target *t)
{
    int W = t ? t->vec_floats : 1;
    if (!t || t->isa == KILN_ISA_SCALAR || W < 2) return;
    const char *inl = "static inline __attribute__((always_inline, unused))";
    kiln_sb_printf(b,
                   "/* ---- vector loops (codegen/emit_vec.c), target %s: %d lanes ----\n"
                   " * GCC vector extensions; masks are int32 lanes of all ones or zeros.\n"
                   " * Every helper computes per lane what the scalar code computes. */\n"
                   "typedef float kiln_v%dsf __attribute__((vector_size(%d)));\n"
                   "typedef int32_t kiln_v%dsi __attribute__((vector_size(%d)));\n\n",
                   kiln_isa_name(t->isa), W, W, 4 * W, W, 4 * W);
    kiln_sb_printf(
        b,
        "%s kiln_v%dsf kiln_v%d_load(const float *p)\n"
        "{\n    kiln_v%dsf v;\n    __builtin_memcpy(&v, p, sizeof v);\n    return v;\n}\n",
        inl, W, W, W);
    kiln_sb_printf(b,
                   "%s void kiln_v%d_store(float *p, kiln_v%dsf v)\n"
                   "{\n    __builtin_memcpy(p, &v, sizeof v);\n}\n",
                   inl, W, W);
    kiln_sb_printf(b, "%s kiln_v%dsf kiln_v%d_set1(float x)\n{\n    return (kiln_v%dsf){", inl, W,
                   W, W);
    for (int i = 0; i < W; i++)
        kiln_sb_puts(b, i ? ", x" : "x");
    kiln_sb_puts(b, "};\n}\n");
    kiln_sb_printf(b,
                   "%s kiln_v%dsi kiln_v%d_mask1(int x)\n{\n    const int32_t m = x ? -1 : 0;\n"
                   "    return (kiln_v%dsi){",
                   inl, W, W, W);
    for (int i = 0; i < W; i++)
        kiln_sb_puts(b, i ? ", m" : "m");
    kiln_sb_puts(b, "};\n}\n");
    kiln_sb_printf(b,
                   "/* m ? a : b per lane, on the bits */\n"
                   "%s kiln_v%dsi kiln_v%d_selm(kiln_v%dsi m, kiln_v%dsi a, kiln_v%dsi b)\n"
                   "{\n    return (m & a) | (~m & b);\n}\n"
                   "%s kiln_v%dsf kiln_v%d_sel(kiln_v%dsi m, kiln_v%dsf a, kiln_v%dsf b)\n"
                   "{\n    return (kiln_v%dsf)kiln_v%d_selm(m, (kiln_v%dsi)a, (kiln_v%dsi)b);\n}\n",
                   inl, W, W, W, W, W, inl, W, W, W, W, W, W, W, W, W);
    kiln_sb_printf(b,
                   "/* a mask as 1.0f / 0.0f */\n"
                   "%s kiln_v%dsf kiln_v%d_b2f(kiln_v%dsi m)\n"
                   "{\n    return (kiln_v%dsf)(m & (kiln_v%dsi)kiln_v%d_set1(1.0f));\n}\n",
                   inl, W, W, W, W, W, W);
    kiln_sb_printf(b,
                   "%s kiln_v%dsf kiln_v%d_abs(kiln_v%dsf x)\n"
                   "{\n    return (kiln_v%dsf)((kiln_v%dsi)x & 0x7fffffff);\n}\n",
                   inl, W, W, W, W, W);
    for (int mx = 0; mx < 2; mx++)
        kiln_sb_printf(b,
                       "/* NaN-propagating, as the reference (and kiln_%s_f32) */\n"
                       "%s kiln_v%dsf kiln_v%d_%s(kiln_v%dsf a, kiln_v%dsf b)\n"
                       "{\n    return kiln_v%d_sel((a != a) | (b != b), kiln_v%d_set1(NAN),\n"
                       "                       kiln_v%d_sel(a %s b, a, b));\n}\n",
                       mx ? "max" : "min", inl, W, W, mx ? "max" : "min", W, W, W, W, W,
                       mx ? ">" : "<");
    /* per-lane functions: a lane loop the compiler vectorizes (the vmath
     * functions are inline and branch-free; sqrtf with -fno-math-errno) */
    static const char *const un[][2] = {{"sqrt", "__builtin_sqrtf"}, {"expf", "kiln_expf"},
                                        {"logf", "kiln_logf"},       {"tanhf", "kiln_tanhf"},
                                        {"erff", "kiln_erff"},       {"log1pf", "kiln_log1pf"}};
    for (size_t i = 0; i < sizeof un / sizeof un[0]; i++)
        kiln_sb_printf(b,
                       "%s kiln_v%dsf kiln_v%d_%s(kiln_v%dsf x)\n{\n"
                       "    float a[%d], r[%d];\n    __builtin_memcpy(a, &x, sizeof a);\n"
                       "    #pragma omp simd simdlen(%d)\n"
                       "    for (int l = 0; l < %d; l++) r[l] = %s(a[l]);\n"
                       "    __builtin_memcpy(&x, r, sizeof x);\n    return x;\n}\n",
                       inl, W, W, un[i][0], W, W, W, W, W, un[i][1]);
    static const char *const bin[][2] = {{"powf", "powf"}, {"fmodf", "fmodf"}};
    for (size_t i = 0; i < sizeof bin / sizeof bin[0]; i++)
        kiln_sb_printf(b,
                       "%s kiln_v%dsf kiln_v%d_%s(kiln_v%dsf x, kiln_v%dsf y)\n{\n"
                       "    float a[%d], c[%d], r[%d];\n    __builtin_memcpy(a, &x, sizeof a);\n"
                       "    __builtin_memcpy(c, &y, sizeof c);\n"
                       "    for (int l = 0; l < %d; l++) r[l] = %s(a[l], c[l]);\n"
                       "    __builtin_memcpy(&x, r, sizeof x);\n    return x;\n}\n",
                       inl, W, W, bin[i][0], W, W, W, W, W, W, bin[i][1]);
    kiln_sb_puts(b, "\n");
}
