/* tests/kernel_eval.c — the kernel-IR evaluator of the lowering tests; see
 * kernel_eval.h. */
#include "tests/kernel_eval.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool keval_is_int(kiln_dtype t) { return t == KILN_I32 || t == KILN_I64 || t == KILN_U8; }

double keval_round(kiln_dtype t, double v)
{
    switch (t) {
    case KILN_F32: return (double)(float)v;
    case KILN_F64: return v;
    case KILN_I32:
    case KILN_I64: return isfinite(v) ? trunc(v) : 0.0;
    case KILN_U8: return isfinite(v) ? (double)(uint8_t)(int64_t)trunc(v) : 0.0;
    case KILN_BOOL: return v != 0.0;
    default: return v;
    }
}

static void fail(keval *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(keval *e, const char *fmt, ...)
{
    if (e->err[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->err, sizeof e->err, fmt, ap);
    va_end(ap);
}

bool keval_init(keval *e, const kiln_kernel *k)
{
    memset(e, 0, sizeof *e);
    e->k = k;
    e->buf = calloc((size_t)k->nbufs + 1, sizeof *e->buf);
    e->len = calloc((size_t)k->nbufs + 1, sizeof *e->len);
    e->vars = calloc((size_t)k->nvars + 1, sizeof *e->vars);
    e->locals = calloc((size_t)k->nlocals + 1, sizeof *e->locals);
    bool ok = e->buf && e->len && e->vars && e->locals;
    for (int32_t b = 0; ok && b < k->nbufs; b++) {
        e->len[b] = kiln_shape_numel(k->bufs[b].rank, k->bufs[b].shape);
        e->buf[b] = calloc((size_t)(e->len[b] > 0 ? e->len[b] : 1), sizeof **e->buf);
        ok = e->buf[b] != NULL;
    }
    if (!ok) keval_fini(e);
    return ok;
}

void keval_fini(keval *e)
{
    if (e->buf && e->k)
        for (int32_t b = 0; b < e->k->nbufs; b++) free(e->buf[b]);
    free(e->buf);
    free(e->len);
    free(e->vars);
    free(e->locals);
    e->buf = NULL;
    e->len = NULL;
    e->vars = NULL;
    e->locals = NULL;
}

static bool is_binary(int op) { return op >= KX_ADD && op <= KX_OR; }
static bool is_unary(int op) { return op >= KX_NEG && op <= KX_ISNAN; }

/* Whether id names an expression of k. */
static bool expr_id_ok(const kiln_kernel *k, int32_t id) { return id >= 0 && id < k->nexprs; }

/* The typing rules these kernels keep (and the emitter may rely on):
 * arithmetic operands share the result's dtype, comparisons compare one
 * dtype and give bool, AND/OR/NOT/select conditions are bool, math functions
 * and ISNAN take floats, MOD integers, indices are i64, a local reads as its
 * dtype, and a store or set gives a value of exactly its buffer's or
 * local's dtype. Every id (expression, buffer, variable, local, statement,
 * check code) is in range. */
void keval_typecheck(keval *e)
{
    const kiln_kernel *k = e->k;
    for (int32_t i = 0; i < k->nexprs; i++) {
        const kiln_kexpr *x = &k->exprs[i];
        kiln_dtype t = (kiln_dtype)x->dtype;
        bool has_a = is_binary(x->op) || is_unary(x->op) || x->op == KX_CAST ||
                     x->op == KX_SELECT || x->op == KX_LOAD || x->op == KX_HASH;
        bool has_b = is_binary(x->op) || x->op == KX_SELECT || x->op == KX_LOAD ||
                     x->op == KX_HASH;
        if (x->op >= KX_COUNT || (x->op == KX_LOAD ? !expr_id_ok(k, x->b)
                                                   : (has_a && !expr_id_ok(k, x->a)) ||
                                                         (has_b && !expr_id_ok(k, x->b)) ||
                                                         (x->op == KX_SELECT &&
                                                          !expr_id_ok(k, x->c)))) {
            fail(e, "expression %d (op %d) has an operand out of range", i, x->op);
            return;
        }
        kiln_dtype ta = is_binary(x->op) || is_unary(x->op) || x->op == KX_CAST
                            ? (kiln_dtype)k->exprs[x->a].dtype
                            : t;
        kiln_dtype tb = is_binary(x->op) ? (kiln_dtype)k->exprs[x->b].dtype : ta;
        bool ok = true;
        switch (x->op) {
        case KX_CONST: break;
        case KX_LOCAL: ok = x->a >= 0 && x->a < k->nlocals && t == k->local_dtype[x->a]; break;
        case KX_VAR: ok = t == KILN_I64 && x->a >= 0 && x->a < k->nvars; break;
        case KX_LOAD:
            ok = x->a >= 0 && x->a < k->nbufs && t == k->bufs[x->a].dtype &&
                 k->exprs[x->b].dtype == KILN_I64;
            break;
        case KX_AND:
        case KX_OR: ok = ta == KILN_BOOL && tb == KILN_BOOL && t == KILN_BOOL; break;
        case KX_NOT: ok = ta == KILN_BOOL && t == KILN_BOOL; break;
        case KX_ISNAN: ok = kiln_dtype_is_float(ta) && t == KILN_BOOL; break;
        case KX_MOD: ok = keval_is_int(t) && ta == t && tb == t; break;
        case KX_SELECT:
            ok = k->exprs[x->a].dtype == KILN_BOOL && k->exprs[x->b].dtype == t &&
                 k->exprs[x->c].dtype == t;
            break;
        case KX_CAST: ok = ta != t; break;
        case KX_HASH:
            ok = t == KILN_I64 && k->exprs[x->a].dtype == KILN_I64 &&
                 k->exprs[x->b].dtype == KILN_I64;
            break;
        default:
            if (x->op >= KX_LT && x->op <= KX_NE) ok = ta == tb && t == KILN_BOOL;
            else if (is_binary(x->op)) ok = ta == t && tb == t;
            else if (is_unary(x->op)) ok = ta == t && (x->op == KX_NEG || x->op == KX_ABS ||
                                                       kiln_dtype_is_float(t));
            else ok = false;
        }
        if (!ok) fail(e, "expression %d (op %d, %s) is ill-typed", i, x->op, kiln_dtype_name(t));
    }
    if (k->body < -1 || k->body >= k->nstmts) fail(e, "the body is statement %d of %d", k->body,
                                                   k->nstmts);
    for (int32_t i = 0; i < k->nstmts; i++) {
        const kiln_kstmt *s = &k->stmts[i];
        if (s->next < -1 || s->next >= k->nstmts) {
            fail(e, "statement %d (kind %d) has next %d out of range", i, s->kind, s->next);
            return;
        }
        bool ok = true;
        switch (s->kind) {
        case KS_LOOP:
            ok = s->var >= 0 && s->var < k->nvars && s->body >= -1 && s->body < k->nstmts;
            break;
        case KS_STORE:
            ok = s->buf >= 0 && s->buf < k->nbufs && expr_id_ok(k, s->index) &&
                 expr_id_ok(k, s->value) && k->exprs[s->index].dtype == KILN_I64 &&
                 k->exprs[s->value].dtype == k->bufs[s->buf].dtype && k->bufs[s->buf].written;
            break;
        case KS_SET:
            ok = s->var >= 0 && s->var < k->nlocals && expr_id_ok(k, s->value) &&
                 k->exprs[s->value].dtype == k->local_dtype[s->var];
            break;
        case KS_CHECK:
            ok = expr_id_ok(k, s->value) && k->exprs[s->value].dtype == KILN_BOOL &&
                 s->index >= 1 && s->index <= k->nchecks;
            break;
        default: ok = false;
        }
        if (!ok) fail(e, "statement %d (kind %d) is ill-typed", i, s->kind);
    }
}

/* Index expression id evaluated, in [0, len) of buffer b; -1 (and err set)
 * when not, without converting an out-of-range double. */
static int64_t index_in(keval *e, const char *what, int32_t b, double i)
{
    if (i >= 0 && i < (double)e->len[b] && i == trunc(i)) return (int64_t)i;
    fail(e, "%s b%d[%.17g], which holds %lld elements", what, b, i, (long long)e->len[b]);
    return -1;
}

static double ev(keval *e, int32_t id)
{
    const kiln_kexpr *x = &e->k->exprs[id];
    kiln_dtype t = (kiln_dtype)x->dtype;
    switch (x->op) {
    case KX_CONST: return kiln_dtype_is_float(t) ? x->f : (double)x->i;
    case KX_VAR: return (double)e->vars[x->a];
    case KX_LOCAL: return e->locals[x->a];
    case KX_LOAD: {
        int64_t i = index_in(e, "load of", x->a, ev(e, x->b));
        return i < 0 ? 0 : e->buf[x->a][i];
    }
    case KX_SELECT: { /* every arm evaluated: vectorised code may load both */
        double c = ev(e, x->a), a = ev(e, x->b), b = ev(e, x->c);
        return c != 0 ? a : b;
    }
    case KX_HASH: /* operands are i64 values held exactly (|v| < 2^53) */
        return (double)kiln_kx_hash_value((int64_t)ev(e, x->a), (int64_t)ev(e, x->b));
    default: break;
    }
    double a = ev(e, x->a), b = is_binary(x->op) ? ev(e, x->b) : 0, r;
    kiln_dtype ta = (kiln_dtype)e->k->exprs[x->a].dtype;
    switch (x->op) {
    case KX_ADD: r = a + b; break;
    case KX_SUB: r = a - b; break;
    case KX_MUL: r = a * b; break;
    case KX_DIV:
        if (keval_is_int(t) && b == 0) {
            fail(e, "integer division by zero (expression %d)", id);
            r = 0;
        } else {
            r = keval_is_int(t) ? trunc(a / b) : a / b;
        }
        break;
    case KX_MOD:
        if (b == 0) {
            fail(e, "integer remainder by zero (expression %d)", id);
            r = 0;
        } else {
            r = fmod(a, b);
        }
        break;
    case KX_MIN: r = isnan(a) || isnan(b) ? NAN : (a < b ? a : b); break;
    case KX_MAX: r = isnan(a) || isnan(b) ? NAN : (a > b ? a : b); break;
    case KX_POW: r = pow(a, b); break;
    case KX_LT: r = a < b; break;
    case KX_LE: r = a <= b; break;
    case KX_GT: r = a > b; break;
    case KX_GE: r = a >= b; break;
    case KX_EQ: r = a == b; break;
    case KX_NE: r = a != b; break;
    case KX_AND: r = a != 0 && b != 0; break;
    case KX_OR: r = a != 0 || b != 0; break;
    case KX_NEG: r = -a; break;
    case KX_EXP: r = exp(a); break;
    case KX_LOG: r = log(a); break;
    case KX_SQRT: r = sqrt(a); break;
    case KX_TANH: r = tanh(a); break;
    case KX_ERF: r = erf(a); break;
    case KX_ABS: r = fabs(a); break;
    case KX_LOG1P: r = log1p(a); break;
    case KX_NOT: r = a == 0; break;
    case KX_ISNAN: r = kiln_dtype_is_float(ta) && isnan(a); break;
    case KX_CAST: r = a; break;
    default: fail(e, "unknown expression op %d", x->op); r = 0;
    }
    /* arithmetic in the expression's type, as the emitted C does it */
    return keval_round(t, r);
}

/* Runs a statement list; 0, or the code of the check that failed. */
static int run_stmts(keval *e, int32_t s)
{
    const kiln_kernel *k = e->k;
    for (; s >= 0 && !e->err[0]; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        switch (st->kind) {
        case KS_LOOP:
            for (int64_t v = 0; v < st->extent && !e->err[0]; v++) {
                e->vars[st->var] = v;
                int rc = run_stmts(e, st->body);
                if (rc) return rc;
            }
            break;
        case KS_STORE: {
            if (!k->bufs[st->buf].written) {
                fail(e, "store to b%d, a buffer the kernel does not write", st->buf);
                break;
            }
            int64_t i = index_in(e, "store to", st->buf, ev(e, st->index));
            double v = ev(e, st->value);
            if (i >= 0) e->buf[st->buf][i] = keval_round((kiln_dtype)k->bufs[st->buf].dtype, v);
            break;
        }
        case KS_SET:
            e->locals[st->var] = keval_round((kiln_dtype)k->local_dtype[st->var],
                                             ev(e, st->value));
            break;
        case KS_CHECK:
            if (ev(e, st->value) == 0) return (int)st->index;
            break;
        default: fail(e, "unknown statement kind %d", st->kind);
        }
    }
    return 0;
}

int keval_run(keval *e) { return run_stmts(e, e->k->body); }
