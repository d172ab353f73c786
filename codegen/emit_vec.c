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
 * (The proof is codegen/vec_proof.c, shared with the LLVM backend's outer
 * loops; this file writes the C.)
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
#include "codegen/vec_proof.h"

#include <stdlib.h>
#include <string.h>

typedef struct vctx {
    kctx *c;
    const kiln_kernel *k;
    const kiln_kstmt *loop;
    int W;
    kiln_vproof p; /* the proof (codegen/vec_proof.c): bodyset, dep */
    int32_t *wn;   /* per expression: its vector temporary in this statement, or -1 */
    int nw;
    int32_t *done; /* loads and broadcasts written in this statement */
    int ndone;
} vctx;

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
        return x->a == y->a && kiln_vp_same_element(k, x->b, y->b);
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
    if (x->op == KX_LOCAL && v->p.bodyset[x->a])
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
    if (v->wn[e] >= 0 || (x->op == KX_LOCAL && v->p.bodyset[x->a])) return;
    kiln_sbuf *b = v->c->b;
    int W = v->W;
    bool inv = !kiln_vp_dep(&v->p, e);
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
        if (v->p.bodyset[l]) {
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
    v.p = (kiln_vproof){
        .k = k, .bi = c->bi, .s = s, .var = st->var, .pow_mod = true, .gemm_extents = true};
    size_t ne = (size_t)k->nexprs + 1;
    bool ok = kiln_vp_init(&v.p);
    v.wn = malloc(ne * sizeof *v.wn);
    v.done = malloc(ne * sizeof *v.done);
    ok = ok && v.wn && v.done && kiln_vp_prove(&v.p);
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
    if (v.p.oom) c->b->oom = true;
    kiln_vp_free(&v.p);
    free(v.wn);
    free(v.done);
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
