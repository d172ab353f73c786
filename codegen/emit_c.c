/* codegen/emit_c.c — the C emitter: a plan (entries, their kernels and the
 * places of their nodes) printed as one C11 translation unit.
 *
 * Expects: kernels built by kiln_lower_node over the entries' graphs, and a
 * place for every node a kernel reads or writes (consts excepted).
 * Guarantees: deterministic output (the same plan gives the same bytes) that
 * a person can check by hand:
 *   - one `static int kN_op(...)` per kernel, preceded by its comment (op,
 *     types, source), each buffer parameter typed by its dtype and annotated
 *     with its shape and node; `const` when only read; `restrict` unless the
 *     buffer shares storage with another buffer of the kernel that one of
 *     them writes (reading and writing through one restrict pointer is fine,
 *     and lets an accumulating loop vectorize);
 *   - a load of a `const` node is its value, inlined; consts are not
 *     parameters;
 *   - one `int kiln_<entry>(char *restrict P, char *restrict S, char *restrict
 *     A, const kiln_rt *rt)` per entry that calls its kernels in order on
 *     their places, and returns 0 or (kernel index) * 8 + (check code);
 *   - a top-level loop marked parallel that is worth splitting (see
 *     kiln_ce_plan_outlining and codegen.h, "Threads") becomes `kN_op_pM_run(lo, hi,
 *     buffers...)` over its iterations [lo, hi), with restrict buffer
 *     parameters and its own locals, plus `kN_op_pM(void *ctx, lo, hi)`
 *     that reads the buffers from a `kN_op_pM_ctx` struct; the kernel takes
 *     `const kiln_rt *rt` last and calls rt->parallel_for(rt->pool, extent,
 *     kN_op_pM, &ctx) where the loop was. Other loops are written as they
 *     are (a parallel hint alone changes nothing in the text);
 *   - a loop with the vector hint that codegen/emit_vec.c can prove
 *     equivalent becomes explicit vector code for the plan's target (a main
 *     loop over whole vectors, then the scalar loop over the rest; the same
 *     bits), with that file's prelude once in the unit;
 *   - kernels that are the same in two entries (same name, same code) are
 *     written once; a kernel whose name is taken by different code is
 *     renamed <entry>_<name>;
 *   - asked for signatures (kiln_emit_c_source_sigs), the unit ends its
 *     kernels with `kiln_kernels`, their addresses in a constant table, and
 *     the description of each (codegen.h, "kernel signatures") goes to the
 *     caller; kiln_emit_c_source writes no table.
 * Semantics follow the reference interpreter: f32 math through the float
 * functions, NaN-propagating min/max, integer division truncating toward
 * zero (x / 0 is 0, as the reference's non-finite quotient rounds to 0),
 * float-to-integer casts truncating (NaN and inf give 0, out-of-range values
 * saturate: no undefined behaviour).
 * Internal inconsistencies (a buffer without a place, an unsupported dtype)
 * become an `#error` line in the source, so compiling it says what is wrong.
 */
#include "codegen/emit_c_internal.h"
#include "codegen/vmath.h"
#include "ir/ops.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void kiln_ce_indent(kiln_sbuf *b, int depth)
{
    for (int i = 0; i < depth; i++)
        kiln_sb_puts(b, "    ");
}

/* Text inside a C comment: no comment terminator, no control characters. */
static void sb_comment_text(kiln_sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        char c = *s;
        if (c == '*' && s[1] == '/') {
            kiln_sb_puts(b, "* ");
            continue;
        }
        if ((unsigned char)c < 0x20 || c == 0x7f) c = '?';
        kiln_sb_putn(b, &c, 1);
    }
}

/* ---- types ---- */

bool kiln_ce_dtype_ok(int t)
{
    return t == KILN_F32 || t == KILN_F64 || t == KILN_I32 || t == KILN_I64 || t == KILN_U8 ||
           t == KILN_BOOL;
}

/* The C type of a buffer element (bools are bytes holding 0 or 1). */
const char *kiln_ce_ctype_mem(int t)
{
    switch (t) {
    case KILN_F32:
        return "float";
    case KILN_F64:
        return "double";
    case KILN_I32:
        return "int32_t";
    case KILN_I64:
        return "int64_t";
    case KILN_U8:
    case KILN_BOOL:
        return "uint8_t";
    default:
        return "uint8_t"; /* unsupported: an #error says so */
    }
}

/* The C type of a scalar (locals and temporaries). */
const char *kiln_ce_ctype_val(int t)
{
    return t == KILN_BOOL ? "_Bool" : kiln_ce_ctype_mem(t);
}

/* The suffix of a helper's name for a dtype: kiln_max_f32, kiln_div_i64. */
static const char *tsuffix(int t)
{
    switch (t) {
    case KILN_F32:
        return "f32";
    case KILN_F64:
        return "f64";
    case KILN_I32:
        return "i32";
    case KILN_I64:
        return "i64";
    default:
        return "u8";
    }
}

static bool is_float(int t)
{
    return t == KILN_F32 || t == KILN_F64;
}

/* ---- helpers the generated code calls (written only when used) ---- */

enum {
    H_FAIL,
    H_MAX,             /* + type index, for 5 types */
    H_MIN = H_MAX + 5, /* + type index */
    H_DIV = H_MIN + 5, /* + int type index (i32, i64, u8) */
    H_MOD = H_DIV + 3, /* + int type index */
    H_ABS = H_MOD + 3, /* + int type index */
    H_F2I = H_ABS + 3, /* + int type index: float to integer conversion */
    H_HASH = H_F2I + 3, /* KX_HASH */
    H_COUNT
};

static int type_index(int t) /* f32 f64 i32 i64 u8 */
{
    switch (t) {
    case KILN_F32:
        return 0;
    case KILN_F64:
        return 1;
    case KILN_I32:
        return 2;
    case KILN_I64:
        return 3;
    default:
        return 4;
    }
}

static int int_index(int t) /* i32 i64 u8 */
{
    return t == KILN_I32 ? 0 : t == KILN_I64 ? 1 : 2;
}

static const int int_types[3] = {KILN_I32, KILN_I64, KILN_U8};
static const int all_types[5] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8};

static void emit_helpers(kiln_sbuf *b, const bool *used)
{
    bool any = false;
    for (int h = 0; h < H_COUNT; h++)
        any |= used[h];
    if (!any) return;
    kiln_sb_puts(b, "/* ---- helpers ---- */\n\n");
    for (int i = 0; i < 5; i++) {
        int t = all_types[i];
        const char *T = kiln_ce_ctype_mem(t), *s = tsuffix(t);
        if (used[H_MAX + i]) {
            if (is_float(t))
                kiln_sb_printf(b,
                          "/* NaN-propagating, as the reference */\n"
                          "static inline %s kiln_max_%s(%s a, %s b)\n"
                          "{\n    return (a != a || b != b) ? NAN : (a > b ? a : b);\n}\n\n",
                          T, s, T, T);
            else
                kiln_sb_printf(b,
                          "static inline %s kiln_max_%s(%s a, %s b) { return a > b ? a : b; }\n\n",
                          T, s, T, T);
        }
        if (used[H_MIN + i]) {
            if (is_float(t))
                kiln_sb_printf(b,
                          "/* NaN-propagating, as the reference */\n"
                          "static inline %s kiln_min_%s(%s a, %s b)\n"
                          "{\n    return (a != a || b != b) ? NAN : (a < b ? a : b);\n}\n\n",
                          T, s, T, T);
            else
                kiln_sb_printf(b,
                          "static inline %s kiln_min_%s(%s a, %s b) { return a < b ? a : b; }\n\n",
                          T, s, T, T);
        }
    }
    for (int i = 0; i < 3; i++) {
        int t = int_types[i];
        const char *T = kiln_ce_ctype_mem(t), *s = tsuffix(t);
        if (used[H_DIV + i]) {
            kiln_sb_puts(
                b, "/* truncating division; x / 0 is 0 (the reference's non-finite quotient) */\n");
            if (t == KILN_I64)
                kiln_sb_printf(b,
                          "static inline int64_t kiln_div_i64(int64_t a, int64_t b)\n{\n"
                          "    return b == 0 ? 0 : b == -1 ? (int64_t)(0 - (uint64_t)a) : a / b;\n"
                          "}\n\n");
            else if (t == KILN_I32)
                kiln_sb_printf(b, "static inline int32_t kiln_div_i32(int32_t a, int32_t b)\n{\n"
                             "    return b == 0 ? 0 : (int32_t)((int64_t)a / b);\n}\n\n");
            else
                kiln_sb_printf(b,
                          "static inline %s kiln_div_%s(%s a, %s b)\n{\n"
                          "    return b == 0 ? 0 : (%s)(a / b);\n}\n\n",
                          T, s, T, T, T);
        }
        if (used[H_MOD + i]) {
            kiln_sb_puts(b, "/* C's remainder; x % 0 is 0 */\n");
            if (t == KILN_U8)
                kiln_sb_printf(b, "static inline uint8_t kiln_mod_u8(uint8_t a, uint8_t b)\n{\n"
                             "    return b == 0 ? 0 : (uint8_t)(a %% b);\n}\n\n");
            else
                kiln_sb_printf(b,
                          "static inline %s kiln_mod_%s(%s a, %s b)\n{\n"
                          "    return (b == 0 || b == -1) ? 0 : a %% b;\n}\n\n",
                          T, s, T, T);
        }
        if (used[H_ABS + i]) {
            if (t == KILN_U8)
                kiln_sb_puts(b, "static inline uint8_t kiln_abs_u8(uint8_t a) { return a; }\n\n");
            else
                kiln_sb_printf(b, "static inline %s kiln_abs_%s(%s a) { return a < 0 ? -a : a; }\n\n", T,
                          s, T);
        }
        if (used[H_F2I + i]) {
            const char *lo = t == KILN_I32   ? "-2147483648.0"
                             : t == KILN_I64 ? "-9223372036854775808.0"
                                             : "0.0";
            const char *hi = t == KILN_I32   ? "2147483647.0"
                             : t == KILN_I64 ? "9223372036854775807.0"
                                             : "255.0";
            const char *mn = t == KILN_I32 ? "INT32_MIN" : t == KILN_I64 ? "INT64_MIN" : "0";
            const char *mx = t == KILN_I32 ? "INT32_MAX" : t == KILN_I64 ? "INT64_MAX" : "255";
            kiln_sb_printf(b,
                      "/* float to %s: truncates toward zero; NaN and inf give 0 (as the\n"
                      " * reference), out-of-range values saturate */\n"
                      "static inline %s kiln_f2%s(double x)\n{\n"
                      "    if (x != x || x == INFINITY || x == -INFINITY) return 0;\n"
                      "    if (x <= %s) return %s;\n"
                      "    if (x >= %s) return %s;\n"
                      "    return (%s)x;\n}\n\n",
                      s, T, s, lo, mn, hi, mx, T);
        }
    }
    if (used[H_HASH]) /* ir/kernel.h: kiln_kx_hash_value, the same operations */
        kiln_sb_puts(b, "/* SplitMix64 at counter b of seed a, top 31 bits: uniform in [0, 2^31) */\n"
                        "static inline int64_t kiln_hash(int64_t a, int64_t b)\n{\n"
                        "    uint64_t z = (uint64_t)a + (uint64_t)b * UINT64_C(0x9E3779B97F4A7C15);\n"
                        "    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);\n"
                        "    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);\n"
                        "    z ^= z >> 31;\n"
                        "    return (int64_t)(z >> 33);\n}\n\n");
    if (used[H_FAIL])
        kiln_sb_puts(b, "/* an entry's failure code: kernel index * 8 + the kernel's check code */\n"
                   "static int kiln_fail(int kernel, int code) { return kernel * 8 + code; }\n\n");
}

/* ---- kernels ---- */


static bool is_const_buf(const kctx *c, int32_t buf)
{
    int32_t node = c->k->bufs[buf].node;
    return node >= 0 && node < c->g->nnodes && c->g->nodes[node].op == KILN_OP_CONST;
}

static bool is_binary(int op)
{
    return op >= KX_ADD && op <= KX_OR;
}
static bool is_unary(int op)
{
    return op >= KX_NEG && op <= KX_ISNAN;
}

static void put_float(kiln_sbuf *b, double v, bool f32)
{
    if (v != v) {
        kiln_sb_puts(b, "NAN");
        return;
    }
    if (isinf(v)) {
        kiln_sb_puts(b, v > 0 ? "INFINITY" : "(-INFINITY)");
        return;
    }
    char t[48];
    if (f32)
        snprintf(t, sizeof t, "%.9g", (double)(float)v);
    else
        snprintf(t, sizeof t, "%.17g", v);
    bool neg = t[0] == '-';
    if (neg) kiln_sb_puts(b, "(");
    kiln_sb_puts(b, t);
    if (!strpbrk(t, ".eE")) kiln_sb_puts(b, ".0");
    if (f32) kiln_sb_puts(b, "f");
    if (neg) kiln_sb_puts(b, ")");
}

static void put_int(kiln_sbuf *b, int64_t v)
{
    if (v == INT64_MIN)
        kiln_sb_puts(b, "INT64_MIN");
    else if (v > INT32_MAX || v < -INT32_MAX)
        kiln_sb_printf(b, "INT64_C(%lld)", (long long)v);
    else if (v < 0)
        kiln_sb_printf(b, "(%lld)", (long long)v);
    else
        kiln_sb_printf(b, "%lld", (long long)v);
}

/* A constant of dtype t: f (float dtypes) or i (the others). */
static void put_const(kctx *c, int t, double f, int64_t i)
{
    if (!kiln_ce_dtype_ok(t)) c->error = "a constant of an unsupported dtype (f16/bf16)";
    if (is_float(t))
        put_float(c->b, f, t == KILN_F32);
    else if (t == KILN_BOOL)
        kiln_sb_puts(c->b, i ? "1" : "0");
    else
        put_int(c->b, i);
}

static void put_expr(kctx *c, int32_t e, bool top);

void kiln_ce_put_expr(kctx *c, int32_t e, bool top) /* (for emit_vec.c) */
{
    put_expr(c, e, top);
}

/* An integer const's value: truncated; non-finite gives 0 (as the reference
 * rounds it), out of range saturates. */
static int64_t to_int(double v)
{
    if (v != v || isinf(v)) return 0;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    return (int64_t)v;
}

const char *kiln_ce_binop_token(int op)
{
    switch (op) {
    case KX_ADD:
        return "+";
    case KX_SUB:
        return "-";
    case KX_MUL:
        return "*";
    case KX_DIV:
        return "/";
    case KX_MOD:
        return "%";
    case KX_LT:
        return "<";
    case KX_LE:
        return "<=";
    case KX_GT:
        return ">";
    case KX_GE:
        return ">=";
    case KX_EQ:
        return "==";
    case KX_NE:
        return "!=";
    case KX_AND:
        return "&&";
    case KX_OR:
        return "||";
    default:
        return "?";
    }
}

/* The math function of a unary or binary float op: expf / exp, ... */
static const char *math_fn(int op)
{
    switch (op) {
    case KX_EXP:
        return "exp";
    case KX_LOG:
        return "log";
    case KX_SQRT:
        return "sqrt";
    case KX_TANH:
        return "tanh";
    case KX_ERF:
        return "erf";
    case KX_ABS:
        return "fabs";
    case KX_LOG1P:
        return "log1p";
    case KX_POW:
        return "pow";
    case KX_MOD:
        return "fmod";
    default:
        return NULL;
    }
}

static void put_call2(kctx *c, const char *fn, int32_t a, int32_t b)
{
    kiln_sb_printf(c->b, "%s(", fn);
    put_expr(c, a, true);
    kiln_sb_puts(c->b, ", ");
    put_expr(c, b, true);
    kiln_sb_puts(c->b, ")");
}

/* Whether integer expression e is a constant other than 0 and -1 (a divisor
 * that plain C division handles). */
static bool safe_divisor(const kctx *c, int32_t e)
{
    const kiln_kexpr *x = &c->k->exprs[e];
    return x->op == KX_CONST && x->i != 0 && x->i != -1;
}

static void put_expr(kctx *c, int32_t e, bool top)
{
    kiln_sbuf *b = c->b;
    const kiln_kernel *k = c->k;
    if (e < 0 || e >= k->nexprs) {
        c->error = "an expression id out of range";
        kiln_sb_puts(b, "0");
        return;
    }
    if (c->temp && c->temp[e] >= 0) {
        kiln_sb_printf(b, "v%d", c->temp[e]);
        return;
    }
    const kiln_kexpr *x = &k->exprs[e];
    int t = x->dtype;
    const char *lp = top ? "" : "(", *rp = top ? "" : ")";
    char fn[48];
    switch (x->op) {
    case KX_CONST:
        put_const(c, t, x->f, x->i);
        return;
    case KX_VAR:
        kiln_sb_printf(b, "i%d", x->a);
        return;
    case KX_LOCAL:
        kiln_sb_printf(b, "t%d", x->a);
        return;
    case KX_LOAD:
        if (x->a < 0 || x->a >= k->nbufs) {
            c->error = "a load of a buffer out of range";
            kiln_sb_puts(b, "0");
            return;
        }
        if (is_const_buf(c, x->a)) {
            const kiln_node *n = &c->g->nodes[k->bufs[x->a].node];
            double v = kiln_attr_get_float(n, "value");
            put_const(c, n->dtype, v, is_float(n->dtype) ? 0 : to_int(v));
            return;
        }
        kiln_sb_printf(b, "b%d[", x->a);
        put_expr(c, x->b, true);
        kiln_sb_puts(b, "]");
        return;
    case KX_MIN:
    case KX_MAX: {
        int h = (x->op == KX_MAX ? H_MAX : H_MIN) + type_index(t);
        c->helpers[h] = true;
        snprintf(fn, sizeof fn, "kiln_%s_%s", x->op == KX_MAX ? "max" : "min", tsuffix(t));
        put_call2(c, fn, x->a, x->b);
        return;
    }
    case KX_DIV:
    case KX_MOD:
        if (is_float(t)) {
            if (x->op == KX_MOD) {
                snprintf(fn, sizeof fn, "fmod%s", t == KILN_F32 ? "f" : "");
                put_call2(c, fn, x->a, x->b);
                return;
            }
            break; /* plain `/` */
        }
        if (safe_divisor(c, x->b)) break;
        c->helpers[(x->op == KX_DIV ? H_DIV : H_MOD) + int_index(t)] = true;
        snprintf(fn, sizeof fn, "kiln_%s_%s", x->op == KX_DIV ? "div" : "mod", tsuffix(t));
        put_call2(c, fn, x->a, x->b);
        return;
    case KX_POW:
        if (is_float(t)) {
            snprintf(fn, sizeof fn, "pow%s", t == KILN_F32 ? "f" : "");
            put_call2(c, fn, x->a, x->b);
        } else {
            kiln_sb_printf(b, "(%s)pow(", kiln_ce_ctype_val(t));
            put_expr(c, x->a, true);
            kiln_sb_puts(b, ", ");
            put_expr(c, x->b, true);
            kiln_sb_puts(b, ")");
        }
        return;
    case KX_NEG:
        kiln_sb_printf(b, "%s-", lp);
        put_expr(c, x->a, false);
        kiln_sb_puts(b, rp);
        return;
    case KX_NOT:
        kiln_sb_printf(b, "%s!", lp);
        put_expr(c, x->a, false);
        kiln_sb_puts(b, rp);
        return;
    case KX_ISNAN: {
        int ta = k->exprs[x->a].dtype;
        if (!is_float(ta)) {
            kiln_sb_puts(b, "0");
            return;
        }
        kiln_sb_puts(b, "isnan(");
        put_expr(c, x->a, true);
        kiln_sb_puts(b, ")");
        return;
    }
    case KX_ABS:
        if (!is_float(t)) {
            c->helpers[H_ABS + int_index(t)] = true;
            kiln_sb_printf(b, "kiln_abs_%s(", tsuffix(t));
            put_expr(c, x->a, true);
            kiln_sb_puts(b, ")");
            return;
        }
        /* fall through */
    case KX_EXP:
    case KX_LOG:
    case KX_SQRT:
    case KX_TANH:
    case KX_ERF:
    case KX_LOG1P:
        if (t == KILN_F32 && (x->op == KX_EXP || x->op == KX_LOG || x->op == KX_TANH ||
                              x->op == KX_ERF || x->op == KX_LOG1P))
            kiln_sb_printf(b, "kiln_%sf(", math_fn(x->op)); /* codegen/vmath.h */
        else if (t == KILN_F32)
            kiln_sb_printf(b, "%sf(", math_fn(x->op));
        else if (t == KILN_F64)
            kiln_sb_printf(b, "%s(", math_fn(x->op));
        else
            kiln_sb_printf(b, "(%s)%s((double)", kiln_ce_ctype_val(t), math_fn(x->op));
        put_expr(c, x->a, true);
        kiln_sb_puts(b, ")");
        return;
    case KX_HASH:
        c->helpers[H_HASH] = true;
        put_call2(c, "kiln_hash", x->a, x->b);
        return;
    case KX_SELECT:
        kiln_sb_puts(b, lp);
        put_expr(c, x->a, false);
        kiln_sb_puts(b, " ? ");
        put_expr(c, x->b, false);
        kiln_sb_puts(b, " : ");
        put_expr(c, x->c, false);
        kiln_sb_puts(b, rp);
        return;
    case KX_CAST: {
        int from = k->exprs[x->a].dtype;
        if (!kiln_ce_dtype_ok(t)) c->error = "a cast to an unsupported dtype (f16/bf16)";
        if (t == KILN_BOOL) {
            kiln_sb_puts(b, lp);
            put_expr(c, x->a, false);
            kiln_sb_puts(b, " != 0");
            kiln_sb_puts(b, rp);
        } else if (is_float(from) && !is_float(t)) {
            c->helpers[H_F2I + int_index(t)] = true;
            kiln_sb_printf(b, "kiln_f2%s(", tsuffix(t));
            put_expr(c, x->a, true);
            kiln_sb_puts(b, ")");
        } else {
            kiln_sb_printf(b, "(%s)", kiln_ce_ctype_val(t));
            put_expr(c, x->a, false);
        }
        return;
    }
    default:
        break;
    }
    if (is_binary(x->op)) {
        kiln_sb_puts(b, lp);
        put_expr(c, x->a, false);
        kiln_sb_printf(b, " %s ", kiln_ce_binop_token(x->op));
        put_expr(c, x->b, false);
        kiln_sb_puts(b, rp);
        return;
    }
    c->error = "an unknown expression op";
    kiln_sb_puts(b, "0");
}

/* The kiln_ce_operands of expression x, and which of them only some paths evaluate
 * (select arms, the right side of && and ||). Returns how many. */
int kiln_ce_operands(const kiln_kexpr *x, int32_t *ops, bool *cond)
{
    switch (x->op) {
    case KX_CONST:
    case KX_VAR:
    case KX_LOCAL:
        return 0;
    case KX_LOAD:
        ops[0] = x->b, cond[0] = false;
        return 1;
    case KX_SELECT:
        ops[0] = x->a, ops[1] = x->b, ops[2] = x->c;
        cond[0] = false, cond[1] = cond[2] = true;
        return 3;
    case KX_AND:
    case KX_OR:
        ops[0] = x->a, ops[1] = x->b;
        cond[0] = false, cond[1] = true;
        return 2;
    case KX_HASH:
        ops[0] = x->a, ops[1] = x->b;
        cond[0] = cond[1] = false;
        return 2;
    default:
        if (is_binary(x->op)) {
            ops[0] = x->a, ops[1] = x->b;
            cond[0] = cond[1] = false;
            return 2;
        }
        if (is_unary(x->op) || x->op == KX_CAST) {
            ops[0] = x->a, cond[0] = false;
            return 1;
        }
        return 0;
    }
}

/* Marks the expressions reachable from e (bit 1) and counts their references
 * (each reachable user counts once per operand). Linear in the DAG's size. */
static void reach(kctx *c, int32_t e)
{
    if (e < 0 || e >= c->k->nexprs) return;
    c->refs[e]++;
    if (c->uncond[e] & 1) return;
    c->uncond[e] |= 1;
    int32_t ops[3];
    bool cond[3];
    int n = kiln_ce_operands(&c->k->exprs[e], ops, cond);
    for (int i = 0; i < n; i++)
        reach(c, ops[i]);
}

/* Marks the expressions every evaluation of e evaluates (bit 2). */
static void reach_always(kctx *c, int32_t e)
{
    if (e < 0 || e >= c->k->nexprs || (c->uncond[e] & 2)) return;
    c->uncond[e] |= 2;
    int32_t ops[3];
    bool cond[3];
    int n = kiln_ce_operands(&c->k->exprs[e], ops, cond);
    for (int i = 0; i < n; i++)
        if (!cond[i]) reach_always(c, ops[i]);
}

/* Before a statement over expressions roots[0..n): the expressions it uses
 * more than once and always evaluates become `const T vN = ...;` lines, so a
 * shared subexpression is computed once and the text stays linear in size.
 * (Expressions only some paths evaluate stay inline: a select arm may load
 * out of bounds when not taken.) */
static void hoist(kctx *c, const int32_t *roots, int n, int depth)
{
    const kiln_kernel *k = c->k;
    memset(c->refs, 0, (size_t)k->nexprs * sizeof *c->refs);
    memset(c->uncond, 0, (size_t)k->nexprs);
    for (int32_t e = 0; e < k->nexprs; e++)
        c->temp[e] = -1;
    for (int i = 0; i < n; i++)
        reach(c, roots[i]);
    for (int i = 0; i < n; i++)
        reach_always(c, roots[i]);
    /* kiln_ce_operands have smaller ids than their users: ascending order defines
     * every temporary before its first use */
    for (int32_t e = 0; e < k->nexprs; e++) {
        if (c->refs[e] < 2 || !(c->uncond[e] & 2)) continue;
        int op = k->exprs[e].op;
        if (op == KX_CONST || op == KX_VAR || op == KX_LOCAL) continue;
        if (op == KX_LOAD && is_const_buf(c, k->exprs[e].a)) continue;
        kiln_ce_indent(c->b, depth);
        kiln_sb_printf(c->b, "const %s v%d = ", kiln_ce_ctype_val(k->exprs[e].dtype), c->ntemps);
        put_expr(c, e, true);
        kiln_sb_puts(c->b, ";\n");
        c->temp[e] = c->ntemps++;
    }
}

static void clear_temps(kctx *c)
{
    for (int32_t e = 0; e < c->k->nexprs; e++)
        c->temp[e] = -1;
}

/* `#pragma omp simd`, with a reduction clause for each local the loop's
 * body sums into (t = t + e): the loop's vector hint allows reassociating
 * them; other locals its body sets are private to each lane (lowering sets
 * them before reading them in every iteration). (Compiled with
 * -fopenmp-simd: no OpenMP runtime.) */
static void put_simd_pragma(kctx *c, const kiln_kstmt *loop, int depth)
{
    const kiln_kernel *k = c->k;
    kiln_ce_indent(c->b, depth);
    kiln_sb_puts(c->b, "#pragma omp simd");
    int guard = 0;
    for (int32_t s = loop->body; s >= 0 && s < k->nstmts && guard++ < k->nstmts; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind != KS_SET || st->value < 0 || st->value >= k->nexprs) continue;
        const kiln_kexpr *v = &k->exprs[st->value];
        bool seen = false; /* one clause per local */
        for (int32_t p = loop->body; p >= 0 && p != s; p = k->stmts[p].next)
            seen |= k->stmts[p].kind == KS_SET && k->stmts[p].var == st->var;
        if (seen) continue;
        if (v->op == KX_ADD && v->a >= 0 && k->exprs[v->a].op == KX_LOCAL && k->exprs[v->a].a == st->var)
            kiln_sb_printf(c->b, " reduction(+:t%d)", st->var);
        else
            kiln_sb_printf(c->b, " private(t%d)", st->var); /* set before use in each lane */
    }
    kiln_sb_puts(c->b, "\n");
}

/* `for (int64_t iN = 0; iN < extent; iN++) {` with the loop's hints as a
 * comment (a parallel hint is only shown where the loop is outlined: a loop
 * run serially is an ordinary loop); lo_hi: iterate over [lo, hi) instead
 * (an outlined loop's chunk). */
void kiln_ce_put_loop_head(kctx *c, const kiln_kstmt *st, int depth, const char *lo_hi)
{
    kiln_ce_put_loop_range(c, st, depth, lo_hi ? "lo" : NULL, lo_hi ? "hi" : NULL, lo_hi, true);
}

/* (also the scalar remainder of a vector loop: emit_vec.c) */
void kiln_ce_put_loop_range(kctx *c, const kiln_kstmt *st, int depth, const char *from,
                            const char *to, const char *note, bool hints)
{
    kiln_sbuf *b = c->b;
    bool vec = hints && st->vector, unroll = hints && st->unroll;
    if (vec) put_simd_pragma(c, st, depth);
    kiln_ce_indent(b, depth);
    kiln_sb_printf(b, "for (int64_t i%d = %s; i%d < ", st->var, from ? from : "0", st->var);
    if (to) kiln_sb_puts(b, to);
    else kiln_sb_printf(b, "%lld", (long long)st->extent);
    kiln_sb_printf(b, "; i%d++) {", st->var);
    if (note || vec || unroll) {
        kiln_sb_puts(b, " /*");
        if (note) kiln_sb_printf(b, " %s", note);
        if (vec) kiln_sb_printf(b, " vector %d", st->vector);
        if (unroll) kiln_sb_printf(b, " unroll %d", st->unroll);
        kiln_sb_puts(b, " */");
    }
    kiln_sb_puts(b, "\n");
}


/* A buffer parameter: `const float *restrict b1 (comment: shape, node, name)`. */
void kiln_ce_put_buf_param(kctx *c, int32_t i, bool restrict_ok, bool notes)
{
    const kiln_kbuf *kb = &c->k->bufs[i];
    kiln_sbuf *b = c->b;
    if (!kiln_ce_dtype_ok(kb->dtype)) c->error = "a buffer of an unsupported dtype (f16/bf16)";
    kiln_sb_printf(b, "%s%s *%sb%d /* ", kb->written ? "" : "const ", kiln_ce_ctype_mem(kb->dtype),
              restrict_ok ? "restrict " : "", i);
    char t[160];
    kiln_sb_puts(b, kiln_shape_str((kiln_dtype)kb->dtype, kb->rank, kb->shape, t, sizeof t));
    if (kb->node >= 0 && kb->node < c->g->nnodes) {
        const kiln_node *n = &c->g->nodes[kb->node];
        kiln_sb_printf(b, " %%%d", kb->node);
        if (n->name) {
            kiln_sb_puts(b, " ");
            sb_comment_text(b, n->name);
        }
    }
    if (notes && kb->written && c->bi[i].read)
        kiln_sb_puts(b, ", read and written");
    else if (notes && !restrict_ok)
        kiln_sb_puts(b, ", shares storage");
    kiln_sb_puts(b, " */");
}

/* Declares scratch array i: `double b3[784];`, commented as scratch. */
void kiln_ce_put_scratch_decl(kctx *c, kiln_sbuf *b, int32_t i)
{
    const kiln_kbuf *kb = &c->k->bufs[i];
    if (!kiln_ce_dtype_ok(kb->dtype)) c->error = "a scratch array of an unsupported dtype (f16/bf16)";
    kiln_sb_printf(b, "    %s b%d[%lld]; /* scratch */\n", kiln_ce_ctype_mem(kb->dtype), i,
              (long long)kb->shape[0]);
}

void kiln_ce_put_stmts(kctx *c, int32_t s, int depth, int guard)
{
    const kiln_kernel *k = c->k;
    kiln_sbuf *b = c->b;
    for (; s >= 0; s = k->stmts[s].next) {
        if (s >= k->nstmts || guard > k->nstmts) {
            c->error = "a statement id out of range";
            return;
        }
        guard++;
        const kiln_kstmt *st = &k->stmts[s];
        switch (st->kind) {
        case KS_LOOP:
            if (c->outline && c->outline[s]) {
                kiln_ce_put_outlined(c, s, depth, guard);
                break;
            }
            if (st->vector && kiln_ce_put_vector_loop(c, s, depth, NULL)) break; /* emit_vec.c */
            kiln_ce_put_loop_head(c, st, depth, NULL);
            kiln_ce_put_stmts(c, st->body, depth + 1, guard);
            kiln_ce_indent(b, depth);
            kiln_sb_puts(b, "}\n");
            break;
        case KS_STORE: {
            if (st->buf < 0 || st->buf >= k->nbufs) {
                c->error = "a store to a buffer out of range";
                break;
            }
            int32_t roots[2] = {st->index, st->value};
            hoist(c, roots, 2, depth);
            kiln_ce_indent(b, depth);
            kiln_sb_printf(b, "b%d[", st->buf);
            put_expr(c, st->index, true);
            kiln_sb_puts(b, "] = ");
            put_expr(c, st->value, true);
            kiln_sb_puts(b, ";\n");
            clear_temps(c);
            break;
        }
        case KS_SET:
            hoist(c, &st->value, 1, depth);
            kiln_ce_indent(b, depth);
            kiln_sb_printf(b, "t%d = ", st->var);
            put_expr(c, st->value, true);
            kiln_sb_puts(b, ";\n");
            clear_temps(c);
            break;
        case KS_GEMM:
            kiln_ce_put_gemm(c, s, depth);
            break;
        case KS_CHECK:
            hoist(c, &st->value, 1, depth);
            kiln_ce_indent(b, depth);
            kiln_sb_puts(b, "if (!(");
            put_expr(c, st->value, true);
            kiln_sb_printf(b, ")) return %d; /* ", st->index);
            if (st->index >= 1 && st->index <= 4) sb_comment_text(b, k->check_msg[st->index - 1]);
            kiln_sb_puts(b, " */\n");
            clear_temps(c);
            break;
        default:
            c->error = "an unknown statement kind";
            break;
        }
    }
}


static size_t buf_bytes(const kiln_kbuf *kb)
{
    int64_t n = kiln_shape_numel(kb->rank, kb->shape);
    return (size_t)n * kiln_dtype_size((kiln_dtype)kb->dtype);
}

void kiln_ce_classify_bufs(const kiln_kernel *k, const kiln_plan_entry *e, bufinfo *bi)
{
    for (int32_t i = 0; i < k->nbufs; i++) {
        int32_t node = k->bufs[i].node;
        bool is_const = node >= 0 && node < e->g->nnodes && e->g->nodes[node].op == KILN_OP_CONST;
        bool scratch = node < 0;
        bi[i] = (bufinfo){.param = !is_const && !scratch, .scratch = scratch,
                          .written = k->bufs[i].written != 0, .restrict_ok = true};
    }
    for (int32_t x = 0; x < k->nexprs; x++)
        if (k->exprs[x].op == KX_LOAD && k->exprs[x].a >= 0 && k->exprs[x].a < k->nbufs)
            bi[k->exprs[x].a].read = true;
    for (int32_t i = 0; i < k->nbufs; i++) {
        if (!bi[i].param) continue;
        int32_t ni = k->bufs[i].node;
        if (ni < 0 || ni >= e->g->nnodes) continue;
        kiln_place pi = e->place[ni];
        size_t si = buf_bytes(&k->bufs[i]);
        for (int32_t j = 0; j < k->nbufs; j++) {
            if (j == i || !bi[j].param) continue;
            if (!k->bufs[i].written && !k->bufs[j].written) continue;
            int32_t nj = k->bufs[j].node;
            if (nj < 0 || nj >= e->g->nnodes) continue;
            kiln_place pj = e->place[nj];
            size_t sj = buf_bytes(&k->bufs[j]);
            if (pi.space == pj.space && pi.space != KILN_SPACE_NONE &&
                pi.offset < pj.offset + (int64_t)sj && pj.offset < pi.offset + (int64_t)si) {
                bi[i].restrict_ok = false;
                /* the same bytes exactly: an in-place pair (memory planning
                 * allows it only where each element is read, then written,
                 * at one index), which threads may still split */
                if (pi.offset != pj.offset || si != sj) bi[i].partial_overlap = true;
            }
        }
    }
}

/* The parameters and body of kernel k (everything after its name), into b;
 * the functions of its outlined loops into pre. Both name the kernel \x01.
 * *uses_rt: the kernel takes the runtime struct (it outlines a loop). */
static void emit_kernel_rest(const kiln_kernel *k, const kiln_plan_entry *e, kiln_sbuf *b, kiln_sbuf *pre,
                             bool *helpers, bool *uses_rt, const kiln_cg_target *target,
                             bool *vec_used)
{
    bufinfo *bi = calloc((size_t)(k->nbufs ? k->nbufs : 1), sizeof *bi);
    size_t ne = (size_t)(k->nexprs ? k->nexprs : 1);
    uint8_t *outline = calloc((size_t)(k->nstmts ? k->nstmts : 1), 1);
    int32_t *owner = calloc((size_t)(k->nlocals ? k->nlocals : 1), sizeof *owner);
    int32_t *sowner = calloc((size_t)(k->nbufs ? k->nbufs : 1), sizeof *sowner);
    kctx c = {.k = k,
              .target = target,
              .vec_used = vec_used,
              .g = e->g,
              .b = b,
              .helpers = helpers,
              .refs = calloc(ne, sizeof(int32_t)),
              .uncond = calloc(ne, 1),
              .temp = malloc(ne * sizeof(int32_t)),
              .bi = bi,
              .pre = pre};
    *uses_rt = false;
    if (!bi || !c.refs || !c.uncond || !c.temp || !outline || !owner || !sowner) {
        b->oom = true;
        goto done;
    }
    clear_temps(&c);
    kiln_ce_classify_bufs(k, e, bi);
    int nout = kiln_ce_plan_outlining(k, bi, outline, owner, sowner);
    if (nout < 0) {
        b->oom = true;
        goto done;
    }
    if (nout > 0) {
        c.outline = outline;
        c.local_owner = owner;
        c.scratch_owner = sowner;
        *uses_rt = true;
    }
    kiln_sb_puts(b, "(");
    int nparams = 0;
    for (int32_t i = 0; i < k->nbufs; i++) {
        if (!bi[i].param) continue;
        kiln_sb_puts(b, nparams++ ? ",\n    " : "\n    ");
        kiln_ce_put_buf_param(&c, i, bi[i].restrict_ok, true);
    }
    if (nout > 0) kiln_sb_puts(b, nparams++ ? ",\n    const kiln_rt *rt" : "\n    const kiln_rt *rt");
    kiln_sb_puts(b, nparams ? ")\n{\n" : "void)\n{\n");
    for (int32_t l = 0; l < k->nlocals; l++) {
        int t = k->local_dtype[l];
        /* a local of an outlined loop lives in its chunk function (unless
         * it is set before it and only read there) */
        if (nout > 0 && owner[l] >= 0 && outline[owner[l]]) continue;
        if (!kiln_ce_dtype_ok(t)) c.error = "a local of an unsupported dtype (f16/bf16)";
        kiln_sb_printf(b, "    %s t%d = 0;\n", kiln_ce_ctype_val(t), l);
    }
    for (int32_t i = 0; i < k->nbufs; i++) {
        /* a scratch array of an outlined loop lives in its chunk function */
        if (!bi[i].scratch || (nout > 0 && sowner[i] >= 0 && outline[sowner[i]])) continue;
        kiln_ce_put_scratch_decl(&c, b, i);
    }
    kiln_ce_put_stmts(&c, k->body, 1, 0);
    if (c.error) kiln_sb_printf(b, "#error \"kiln: kernel %s: %s\"\n", k->name, c.error);
    kiln_sb_puts(b, "    return 0;\n}\n");
done:
    free(bi);
    free(outline);
    free(owner);
    free(sowner);
    free(c.refs);
    free(c.uncond);
    free(c.temp);
}

/* ---- the translation unit ---- */

typedef struct kfunc {
    char name[160];
    const kiln_kernel *k;
    char *rest;   /* parameters and body; the kernel's name is \x01 */
    char *pre;    /* the functions of its outlined loops (or ""); likewise */
    bool uses_rt; /* it takes `const kiln_rt *rt` last */
} kfunc;

/* s with every \x01 replaced by name. */
static void sb_put_named(kiln_sbuf *b, const char *s, const char *name)
{
    for (const char *q; (q = strchr(s, '\x01')); s = q + 1) {
        kiln_sb_putn(b, s, (size_t)(q - s));
        kiln_sb_puts(b, name);
    }
    kiln_sb_puts(b, s);
}

static bool is_ident(const char *s)
{
    if (!s || !*s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
    return true;
}

/* A C identifier from s (invalid characters become '_'). */
static void ident_from(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s%s", (s && *s && !isdigit((unsigned char)*s)) ? "" : "k_", s ? s : "");
    for (char *p = out; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) *p = '_';
}

static bool same_code(const kfunc *f, const char *rest, const char *pre)
{
    return !strcmp(f->rest, rest) && !strcmp(f->pre ? f->pre : "", pre);
}

static int find_func(const kfunc *f, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(f[i].name, name)) return i;
    return -1;
}

static const char *space_name(int s)
{
    return s == KILN_SPACE_P ? "P" : s == KILN_SPACE_S ? "S" : s == KILN_SPACE_A ? "A" : NULL;
}

/* One kernel call in an entry: its arguments are the places of its buffers. */
static void emit_call(kiln_sbuf *b, const kiln_plan_entry *e, const kiln_kernel *k, const char *fname,
                      bool uses_rt, int index)
{
    bufinfo *bi = calloc((size_t)(k->nbufs ? k->nbufs : 1), sizeof *bi);
    if (!bi) {
        b->oom = true;
        return;
    }
    kiln_ce_classify_bufs(k, e, bi);
    kiln_sb_printf(b, "    /* %d: ", index);
    sb_comment_text(b, k->comment);
    kiln_sb_puts(b, " */\n");
    /* the arguments: (T *)(A + offset) per buffer */
    char(*args)[96] = calloc((size_t)k->nbufs + 1, sizeof *args);
    if (!args) {
        b->oom = true;
        free(bi);
        return;
    }
    const char *bad = NULL;
    int nargs = 0;
    size_t arglen = 0;
    for (int32_t i = 0; i < k->nbufs; i++) {
        if (!bi[i].param) continue;
        const kiln_kbuf *kb = &k->bufs[i];
        const char *sp = NULL;
        kiln_place pl = {0};
        if (kb->node >= 0 && kb->node < e->g->nnodes) {
            pl = e->place[kb->node];
            sp = space_name(pl.space);
        }
        if (!sp) bad = "a buffer has no place";
        snprintf(args[nargs], sizeof args[0], "(%s%s *)(%s + %lld)", kb->written ? "" : "const ",
                 kiln_ce_ctype_mem(kb->dtype), sp ? sp : "A", (long long)pl.offset);
        arglen += strlen(args[nargs++]) + 2;
    }
    if (uses_rt) {
        snprintf(args[nargs], sizeof args[0], "rt");
        arglen += strlen(args[nargs++]) + 2;
    }
    char head[200];
    if (k->nchecks > 0)
        snprintf(head, sizeof head, "if ((rc = %s(", fname);
    else
        snprintf(head, sizeof head, "%s(", fname);
    /* one line when it fits in 100 columns, else one argument a line */
    size_t tail = k->nchecks > 0 ? strlen("))) return kiln_fail(00, rc);") : strlen(");");
    bool wrap = 4 + strlen(head) + (arglen > 2 ? arglen - 2 : 0) + tail > 100;
    kiln_sb_printf(b, "    %s", head);
    for (int i = 0; i < nargs; i++) {
        if (i && wrap)
            kiln_sb_printf(b, ",\n%*s", (int)(4 + strlen(head)), "");
        else if (i)
            kiln_sb_puts(b, ", ");
        kiln_sb_puts(b, args[i]);
    }
    if (k->nchecks > 0 && wrap)
        kiln_sb_printf(b, ")))\n        return kiln_fail(%d, rc);\n", index);
    else if (k->nchecks > 0)
        kiln_sb_printf(b, "))) return kiln_fail(%d, rc);\n", index);
    else
        kiln_sb_puts(b, ");\n");
    free(args);
    if (bad) kiln_sb_printf(b, "#error \"kiln: entry %s, kernel %s: %s\"\n", e->name, k->name, bad);
    free(bi);
}

/* ---- kernel signatures (codegen.h) ---- */

void kiln_kfuncs_free(kiln_kfuncs *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->f[i].bufs);
        free(t->f[i].rw);
    }
    free(t->f);
    memset(t, 0, sizeof *t);
}

bool kiln_kfuncs_add(kiln_kfuncs *t, const char *name, int32_t slot, int entry, int32_t ki,
                     const kiln_plan_entry *e, bool rt)
{
    const kiln_kernel *k = e->kernels[ki];
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 16;
        kiln_kfunc *f = realloc(t->f, (size_t)cap * sizeof *f);
        if (!f) return false;
        t->f = f;
        t->cap = cap;
    }
    kiln_kfunc *f = &t->f[t->n];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->slot = slot;
    f->entry = entry;
    f->kernel = ki;
    f->rt = rt;
    bufinfo *bi = calloc((size_t)k->nbufs + 1, sizeof *bi);
    f->bufs = calloc((size_t)k->nbufs + 1, sizeof *f->bufs);
    f->rw = calloc((size_t)k->nbufs + 1, 1);
    if (!bi || !f->bufs || !f->rw) {
        free(bi);
        free(f->bufs);
        free(f->rw);
        return false;
    }
    kiln_ce_classify_bufs(k, e, bi);
    for (int32_t g = 0; g < k->ngemms; g++) { /* GEMM operands are read without loads */
        const kiln_kgemm *gm = &k->gemms[g];
        if (gm->a >= 0 && gm->a < k->nbufs) bi[gm->a].read = true;
        if (gm->b >= 0 && gm->b < k->nbufs) bi[gm->b].read = true;
    }
    for (int32_t i = 0; i < k->nbufs; i++) {
        if (!bi[i].param) continue;
        f->bufs[f->nbufs] = i;
        f->rw[f->nbufs++] = (uint8_t)((bi[i].read ? 1 : 0) | (bi[i].written ? 2 : 0) |
                                      (bi[i].restrict_ok ? 4 : 0));
    }
    free(bi);
    if (slot >= t->nslots) t->nslots = slot + 1;
    t->n++;
    return true;
}

static char *emit_source(const kiln_plan *plan, kiln_kfuncs *sigs);

char *kiln_emit_c_source(const kiln_plan *plan)
{
    return emit_source(plan, NULL);
}

char *kiln_emit_c_source_sigs(const kiln_plan *plan, kiln_kfuncs *sigs)
{
    kiln_kfuncs_free(sigs);
    char *src = emit_source(plan, sigs);
    if (!src) kiln_kfuncs_free(sigs);
    return src;
}

/* The unit; with sigs, also the kiln_kernels table and its description. */
static char *emit_source(const kiln_plan *plan, kiln_kfuncs *sigs)
{
    if (!plan) return NULL;
    kiln_sbuf out = {0}, body = {0}, rest = {0}, pre = {0};
    bool helpers[H_COUNT] = {0};
    int total = 0;
    for (int ei = 0; ei < plan->nentries; ei++)
        total += plan->entries[ei].nkernels;
    kfunc *funcs = calloc((size_t)(total ? total : 1), sizeof *funcs);
    /* per entry and kernel: its function */
    int *fidx = calloc((size_t)(total ? total : 1), sizeof *fidx);
    int nfuncs = 0;
    bool oom = !funcs || !fidx;
    kiln_cg_target host;
    const kiln_cg_target *target = plan->target;
    if (!target) {
        kiln_target_host(&host);
        target = &host;
    }
    bool any_gemm = false, any_vec = false;

    /* kernels, once each */
    for (int ei = 0, slot = 0; ei < plan->nentries && !oom; ei++) {
        const kiln_plan_entry *e = &plan->entries[ei];
        for (int ki = 0; ki < e->nkernels && !oom; ki++, slot++) {
            const kiln_kernel *k = e->kernels ? e->kernels[ki] : NULL;
            if (!k || !e->g || !e->place) {
                fidx[slot] = -1; /* the entry says so with an #error */
                continue;
            }
            rest.n = 0;
            if (rest.p) rest.p[0] = '\0';
            pre.n = 0;
            if (pre.p) pre.p[0] = '\0';
            bool uses_rt = false;
            emit_kernel_rest(k, e, &rest, &pre, helpers, &uses_rt, target, &any_vec);
            any_gemm |= k->ngemms > 0;
            if (rest.oom || pre.oom) {
                oom = true;
                break;
            }
            const char *pre_text = pre.p ? pre.p : "";
            char base[72], name[160];
            ident_from(base, sizeof base, k->name);
            snprintf(name, sizeof name, "%s", base);
            int f = find_func(funcs, nfuncs, name);
            if (f >= 0 && !same_code(&funcs[f], rest.p, pre_text)) {
                /* the same name for different code: <entry>_<name>[_n] */
                char en[64];
                ident_from(en, sizeof en, e->name);
                snprintf(name, sizeof name, "%s_%s", en, base);
                for (int n = 2; (f = find_func(funcs, nfuncs, name)) >= 0 &&
                                !same_code(&funcs[f], rest.p, pre_text);
                     n++)
                    snprintf(name, sizeof name, "%s_%s_%d", en, base, n);
            }
            if (f < 0) {
                f = nfuncs++;
                snprintf(funcs[f].name, sizeof funcs[f].name, "%s", name);
                funcs[f].k = k;
                funcs[f].uses_rt = uses_rt;
                if (!(funcs[f].rest = strdup(rest.p)) || !(funcs[f].pre = strdup(pre_text)))
                    oom = true;
                if (sigs && !oom && !kiln_kfuncs_add(sigs, name, f, ei, ki, e, uses_rt))
                    oom = true;
            }
            fidx[slot] = f;
        }
    }
    /* entries */
    bool any_checks = false;
    for (int ei = 0, slot = 0; ei < plan->nentries && !oom; ei++) {
        const kiln_plan_entry *e = &plan->entries[ei];
        char en[64];
        ident_from(en, sizeof en, e->name);
        kiln_sb_puts(&body, "/* entry ");
        sb_comment_text(&body, e->name ? e->name : "?");
        kiln_sb_printf(&body, ": %d kernel%s */\n", e->nkernels, e->nkernels == 1 ? "" : "s");
        if (!is_ident(e->name))
            kiln_sb_printf(&body, "#error \"kiln: entry name '%s' is not a C identifier\"\n", en);
        kiln_sb_printf(&body,
                  "int kiln_%s(char *restrict P, char *restrict S, char *restrict A,\n"
                  "%*sconst kiln_rt *rt)\n{\n",
                  en, (int)strlen(en) + 10, "");
        bool checks = false;
        for (int ki = 0; ki < e->nkernels; ki++)
            checks |= e->kernels && e->kernels[ki] && e->kernels[ki]->nchecks > 0;
        if (checks) kiln_sb_puts(&body, "    int rc;\n");
        if (e->nkernels == 0)
            kiln_sb_puts(&body, "    (void)P;\n    (void)S;\n    (void)A;\n    (void)rt;\n");
        any_checks |= checks;
        for (int ki = 0; ki < e->nkernels; ki++, slot++) {
            if (fidx[slot] >= 0)
                emit_call(&body, e, e->kernels[ki], funcs[fidx[slot]].name,
                          funcs[fidx[slot]].uses_rt, ki);
            else
                kiln_sb_printf(&body,
                          "#error \"kiln: entry %s: kernel %d is missing, or the entry has "
                          "no graph or places\"\n",
                          en, ki);
        }
        kiln_sb_puts(&body, "    return 0;\n}\n\n");
    }
    if (any_checks) helpers[H_FAIL] = true;

    /* assemble: header, helpers, kernels, entries */
    if (!oom) {
        kiln_sb_printf(&out, "/* Generated by kiln: %d kernel%s; entry points", nfuncs,
                  nfuncs == 1 ? "" : "s");
        for (int ei = 0; ei < plan->nentries; ei++) {
            kiln_sb_printf(&out, "%skiln_", ei ? ", " : " ");
            sb_comment_text(&out, plan->entries[ei].name);
        }
        kiln_sb_puts(&out, plan->nentries ? ".\n" : ": none.\n");
        kiln_sb_printf(&out,
                  " * Memories: P parameters (%zu bytes), S optimizer state (%zu bytes),\n"
                  " * A activations (%zu bytes). An entry returns 0, or kernel index * 8 +\n"
                  " * check code when a kernel's run-time check fails. */\n",
                  plan->p_bytes, plan->s_bytes, plan->a_bytes);
        kiln_sb_puts(&out, "#include <math.h>\n#include <stdint.h>\n\n");
        /* f32 transcendentals: polynomial, branch-free, vectorizable */
        kiln_sb_puts(&out, kiln_vmath_source());
        kiln_sb_puts(&out, "\n");
        kiln_sb_puts(&out,
                "/* The runtime's services (codegen/codegen.h): parallel_for(pool, n, fn, ctx)\n"
                " * calls fn(ctx, lo, hi) over chunks covering [0, n) and returns when all\n"
                " * have finished. */\n"
                "typedef struct kiln_rt {\n"
                "    void *pool;\n"
                "    void (*parallel_for)(void *pool, int64_t n, void (*fn)(void *, int64_t, "
                "int64_t), void *ctx);\n"
                "} kiln_rt;\n\n");
        if (any_gemm) {
            kiln_sb_printf(&out, "/* GEMM micro-kernels and packing for %s */\n#include <string.h>\n",
                           kiln_isa_name(target->isa));
            kiln_emit_gemm_prelude(&out, target);
            kiln_sb_puts(&out, "\n");
        }
        if (any_vec) kiln_ce_put_vec_prelude(&out, target); /* emit_vec.c */
        emit_helpers(&out, helpers);
        for (int f = 0; f < nfuncs; f++) {
            const kiln_kernel *k = funcs[f].k;
            kiln_sb_printf(&out, "/* kernel %s: ", funcs[f].name);
            sb_comment_text(&out, k->comment);
            kiln_sb_puts(&out, " */\n");
            sb_put_named(&out, funcs[f].pre, funcs[f].name);
            kiln_sb_printf(&out, "static int %s", funcs[f].name);
            sb_put_named(&out, funcs[f].rest, funcs[f].name);
            kiln_sb_puts(&out, "\n");
        }
        if (sigs) {
            kiln_sb_puts(&out, "/* The kernels' addresses, so that the runtime can call any of "
                               "them by\n * name (runtime/ffi.c) */\n");
            kiln_sb_printf(&out, "void (*const " KILN_KERNEL_TABLE "[%d])(void) = {",
                           nfuncs ? nfuncs : 1);
            for (int f = 0; f < nfuncs; f++)
                kiln_sb_printf(&out, "%s\n    (void (*)(void))%s", f ? "," : "", funcs[f].name);
            kiln_sb_puts(&out, nfuncs ? "\n};\n\n" : "0};\n\n");
        }
        if (body.p) kiln_sb_puts(&out, body.p);
        oom = out.oom || body.oom;
    }
    for (int f = 0; f < nfuncs; f++) {
        free(funcs[f].rest);
        free(funcs[f].pre);
    }
    free(funcs);
    free(fidx);
    free(body.p);
    free(rest.p);
    free(pre.p);
    if (oom) {
        free(out.p);
        return NULL;
    }
    return out.p;
}

void kiln_plan_error_message(const kiln_plan_entry *e, int rc, char *buf, size_t len)
{
    if (!buf || len == 0) return;
    if (!e || rc <= 0) {
        snprintf(buf, len, "entry %s: failure code %d", e && e->name ? e->name : "?", rc);
        return;
    }
    int ki = rc / 8, code = rc % 8;
    if (ki >= e->nkernels || code < 1 || !e->kernels || !e->kernels[ki] ||
        code > e->kernels[ki]->nchecks) {
        snprintf(buf, len, "entry %s: unknown failure code %d (kernel %d, check %d)",
                 e->name ? e->name : "?", rc, ki, code);
        return;
    }
    const kiln_kernel *k = e->kernels[ki];
    const char *op = "?";
    const kiln_node *n = NULL;
    if (e->g && k->node >= 0 && k->node < e->g->nnodes) {
        n = &e->g->nodes[k->node];
        if (n->op < KILN_OP_COUNT) op = kiln_ops[n->op].name;
    }
    const char *msg = k->check_msg[code - 1] ? k->check_msg[code - 1] : "a run-time check failed";
    /* "cross_entropy: a label ..." under a kernel already named for its op */
    size_t ol = strlen(op);
    if (!strncmp(msg, op, ol) && msg[ol] == ':' && msg[ol + 1] == ' ') msg += ol + 2;
    if (n && n->loc.file)
        snprintf(buf, len, "kernel %s (%s at %s:%d:%d): %s", k->name, op, n->loc.file, n->loc.line,
                 n->loc.col, msg);
    else
        snprintf(buf, len, "kernel %s (%s): %s", k->name, op, msg);
}
