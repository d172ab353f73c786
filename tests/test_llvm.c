/* tests/test_llvm.c — the LLVM backend (codegen/llvm.h) against the C
 * backend, plan for plan.
 *
 * Each test builds a small graph through the public API, lowers it (node by
 * node with kiln_lower_node, or fused with kiln_fuse + kiln_lower_fused as
 * programs do), places every node at its own offset (parameters in P, state
 * in S, the rest in A; an assign at its destination, an alias at its
 * source), and builds ONE kiln_plan by hand. The same plan goes through
 * kiln_emit_c_source + kiln_cc_load and through kiln_llvm_load; both run
 * from the same initial bytes (random bytes, leaves set to values of their
 * dtype) and every placed value is compared:
 *
 *   elementwise kernels     bit for bit (NaN where NaN), every dtype: kiln's
 *                           f32 math is the same operations in the same order
 *                           in both, libm's f64 functions are the same calls;
 *   reductions, softmax,    |l - c| <= 1e-6 + 1e-5 |c| (floats; a vector-
 *   losses                  hinted sum may be reassociated differently by
 *                           gcc and LLVM), integers exactly;
 *   GEMMs                   against an f64 reference within
 *                           K 2^-24 sum|a||b| + 1e-6 + 1e-5 |ref| (as
 *                           tests/test_codegen_ops.c), for both backends.
 *
 * Also: run-time check failures (same return code, same message), parallel
 * loops and GEMMs with 1 and 2 threads (bit-identical), the Fashion-MNIST
 * MLP's training step at batch 32 (P, S and the loss), the in-process
 * compile time and step time against the C backend, GEMM GFLOPS, object
 * emission and the module text. KILN_LLVM_VERBOSE=1 prints the timings.
 *
 * Built without LLVM, one test checks that the stubs say so.
 */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"
#include "kiln/kiln.h"
#include "kiln/program.h"
#include "codegen/llvm.h"
#include "codegen/lower_group.h"
#include "ir/graph.h"
#include "ir/ops.h"
#include "passes/fuse.h"
#include "runtime/threadpool.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char cache[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache, sizeof cache, "llvm");
}
static void drop_cache(void)
{
    kiln_test_rmtree(cache);
}

TestSuite(llvm, .init = make_cache, .fini = drop_cache, .timeout = 900);

#if KILN_HAVE_LLVM

static bool verbose(void)
{
    return getenv("KILN_LLVM_VERBOSE") != NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- random values ---- */

static uint64_t rng = 88172645463325252ull;

static uint64_t next_u64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double uniform(double lo, double hi)
{
    return lo + (hi - lo) * (double)(next_u64() >> 11) * 0x1p-53;
}

/* ---- plans built by hand, run on both backends ---- */

typedef struct tp {
    const kiln_graph *g;
    kiln_place *place;
    kiln_kernel **k;
    int nk;
    kiln_fuse_plan *fp;
    kiln_plan_entry entry;
    kiln_plan plan;
    size_t bytes[4];
    char *init[4], *mc[4], *ml[4]; /* by kiln_space: initial, after C, after LLVM */
    kiln_so *so;
    kiln_entry_fn fc;
    kiln_llvm_jit *jit;
    kiln_entry_fn fl;
    double c_secs, l_secs;
    int rc_c, rc_l;
} tp;

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static size_t node_bytes(const kiln_node *n)
{
    return (size_t)kiln_node_numel(n) * kiln_dtype_size((kiln_dtype)n->dtype);
}

/* A leaf's starting values: floats in [-2, 2], integers in [-6, 6], u8 in
 * [0, 255], bools 0/1. */
static void default_leaf(tp *t, int32_t v);

/* Lowers g (fused or node by node), places every node and fills the
 * initial memories. */
static void tp_build(tp *t, const kiln_graph *g, const char *entry, bool fused)
{
    memset(t, 0, sizeof *t);
    t->g = g;
    t->place = calloc((size_t)g->nnodes + 1, sizeof *t->place);
    t->k = calloc((size_t)g->nnodes + 1, sizeof *t->k);
    cr_assert(t->place && t->k);
    char err[1024] = "";
    if (fused) {
        cr_assert_eq(kiln_fuse(g, NULL, &t->fp), KILN_OK);
        for (int32_t i = 0; i < t->fp->nkernels; i++) {
            kiln_kernel *k = NULL;
            cr_assert_eq(kiln_lower_fused(g, t->fp, i, &k, err, sizeof err), KILN_OK, "%s", err);
            t->k[t->nk++] = k;
        }
    }
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op == KILN_OP_CONST) continue;
        int sp = n->role == KILN_ROLE_PARAM   ? KILN_SPACE_P
                 : n->role == KILN_ROLE_STATE ? KILN_SPACE_S
                                              : KILN_SPACE_A;
        t->place[i] = (kiln_place){.space = (uint8_t)sp, .offset = (int64_t)t->bytes[sp]};
        t->bytes[sp] += align64(node_bytes(n));
        if (!fused) {
            kiln_kernel *k = NULL;
            cr_assert_eq(kiln_lower_node(g, i, &k, err, sizeof err), KILN_OK, "%s", err);
            if (k) t->k[t->nk++] = k;
        }
    }
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == KILN_OP_ASSIGN) t->place[i] = t->place[g->nodes[i].inputs[0]];
    if (fused)
        for (int32_t i = 0; i < g->nnodes; i++)
            if (t->fp->fate[i] == KILN_FATE_ALIAS) t->place[i] = t->place[t->fp->alias_of[i]];
    t->entry = (kiln_plan_entry){
        .name = entry, .g = g, .place = t->place, .kernels = t->k, .nkernels = t->nk};
    t->plan = (kiln_plan){.entries = &t->entry,
                          .nentries = 1,
                          .p_bytes = t->bytes[KILN_SPACE_P],
                          .s_bytes = t->bytes[KILN_SPACE_S],
                          .a_bytes = t->bytes[KILN_SPACE_A]};
    for (int s = KILN_SPACE_P; s <= KILN_SPACE_A; s++) {
        size_t n = align64(t->bytes[s] + 64);
        t->init[s] = aligned_alloc(64, n);
        t->mc[s] = aligned_alloc(64, n);
        t->ml[s] = aligned_alloc(64, n);
        cr_assert(t->init[s] && t->mc[s] && t->ml[s]);
        for (size_t i = 0; i < n; i++)
            t->init[s][i] = (char)(next_u64() >> 56);
    }
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == KILN_OP_INPUT) default_leaf(t, i);
}

static void *tp_addr(tp *t, char *const *mem, int32_t v)
{
    return mem[t->place[v].space] + t->place[v].offset;
}

static void default_leaf(tp *t, int32_t v)
{
    const kiln_node *n = &t->g->nodes[v];
    kiln_dtype dt = (kiln_dtype)n->dtype;
    for (int64_t i = 0; i < kiln_node_numel(n); i++) {
        double x = dt == KILN_F32 || dt == KILN_F64 ? uniform(-2, 2)
                   : dt == KILN_U8                  ? floor(uniform(0, 256))
                   : dt == KILN_BOOL                ? (double)(next_u64() & 1)
                                                    : floor(uniform(-6, 7));
        kiln_test_put(tp_addr(t, t->init, v), dt, i, x);
    }
}

/* Sets leaf v's initial values (data[i % n]). */
static void tp_set(tp *t, int32_t v, const double *data, int n)
{
    const kiln_node *nd = &t->g->nodes[v];
    for (int64_t i = 0; i < kiln_node_numel(nd); i++)
        kiln_test_put(tp_addr(t, t->init, v), (kiln_dtype)nd->dtype, i, data[i % n]);
}

static void tp_compile_c(tp *t)
{
    char *src = kiln_emit_c_source(&t->plan);
    cr_assert_not_null(src);
    kiln_cc_options o = {.cache_dir = cache};
    int cached;
    char *err = NULL;
    kiln_status st = kiln_cc_load(src, &o, &t->so, &cached, &t->c_secs, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    free(err);
    free(src);
    char sym[64];
    snprintf(sym, sizeof sym, "kiln_%s", t->entry.name);
    void *a = kiln_so_sym(t->so, sym);
    cr_assert_not_null(a);
    memcpy(&t->fc, &a, sizeof a);
}

static void tp_compile_llvm(tp *t)
{
    char *err = NULL;
    kiln_status st = kiln_llvm_load(&t->plan, &t->jit, &t->l_secs, &err);
    cr_assert_eq(st, KILN_OK, "kiln_llvm_load: %s", err ? err : kiln_status_str(st));
    free(err);
    char sym[64];
    snprintf(sym, sizeof sym, "kiln_%s", t->entry.name);
    void *a = kiln_llvm_sym(t->jit, sym);
    cr_assert_not_null(a, "no %s", sym);
    memcpy(&t->fl, &a, sizeof a);
}

static void tp_reset(tp *t, char **mem)
{
    for (int s = KILN_SPACE_P; s <= KILN_SPACE_A; s++)
        memcpy(mem[s], t->init[s], align64(t->bytes[s] + 64));
}

static int tp_call(kiln_entry_fn fn, char **mem, kiln_pool *pool)
{
    kiln_rt rt = kiln_pool_rt(pool);
    return fn(mem[KILN_SPACE_P], mem[KILN_SPACE_S], mem[KILN_SPACE_A], &rt);
}

/* Compiles on both sides and runs each once from the initial bytes. */
static void tp_run_both(tp *t, kiln_pool *pool)
{
    if (!t->so) tp_compile_c(t);
    if (!t->jit) tp_compile_llvm(t);
    tp_reset(t, t->mc);
    tp_reset(t, t->ml);
    t->rc_c = tp_call(t->fc, t->mc, pool);
    t->rc_l = tp_call(t->fl, t->ml, pool);
    if (verbose())
        fprintf(stderr, "llvm: %s: %d kernels, C compile %.3f s, LLVM compile %.3f s\n",
                t->g->name ? t->g->name : "?", t->nk, t->c_secs, t->l_secs);
}

static void tp_free(tp *t)
{
    for (int i = 0; i < t->nk; i++)
        kiln_kernel_free(t->k[i]);
    free(t->k);
    free(t->place);
    kiln_fuse_plan_free(t->fp);
    for (int s = 0; s < 4; s++) {
        free(t->init[s]);
        free(t->mc[s]);
        free(t->ml[s]);
    }
    if (t->so) kiln_so_close(t->so);
    kiln_llvm_free(t->jit);
}

static bool is_floatt(kiln_dtype t)
{
    return t == KILN_F32 || t == KILN_F64;
}

/* Element i of value v agrees: bit for bit (tol < 0; NaN where NaN), or
 * within atol + rtol |c|. */
static bool agree(kiln_dtype dt, const void *pl, const void *pc, int64_t i, double rtol,
                  double atol)
{
    double l = kiln_test_get(pl, dt, i), c = kiln_test_get(pc, dt, i);
    if (!is_floatt(dt)) return l == c;
    if (isnan(l) || isnan(c)) return isnan(l) && isnan(c);
    if (rtol < 0) {
        size_t sz = kiln_dtype_size(dt);
        return !memcmp((const char *)pl + (size_t)i * sz, (const char *)pc + (size_t)i * sz, sz);
    }
    if (isinf(l) || isinf(c)) return l == c;
    return fabs(l - c) <= atol + rtol * fabs(c);
}

/* Every placed value (but matmul outputs when skip_gemm) agrees between the
 * backends; returns the number of mismatching elements. */
static int64_t tp_compare(tp *t, double rtol, double atol, bool skip_gemm)
{
    int64_t bad = 0;
    for (int32_t v = 0; v < t->g->nnodes; v++) {
        const kiln_node *n = &t->g->nodes[v];
        if (n->op == KILN_OP_CONST || n->op == KILN_OP_ASSIGN) continue;
        if (skip_gemm && n->op == KILN_OP_MATMUL) continue;
        const void *pl = tp_addr(t, t->ml, v), *pc = tp_addr(t, t->mc, v);
        kiln_dtype dt = (kiln_dtype)n->dtype;
        int shown = 0;
        for (int64_t i = 0; i < kiln_node_numel(n); i++) {
            if (agree(dt, pl, pc, i, rtol, atol)) continue;
            bad++;
            if (shown++ < 3) {
                char d[200];
                cr_expect(0, "%s [%lld]: llvm %.9g, C %.9g", kiln_node_desc(t->g, v, d, sizeof d),
                          (long long)i, kiln_test_get(pl, dt, i), kiln_test_get(pc, dt, i));
            }
        }
    }
    return bad;
}

static kiln_value in(kiln_graph *g, const char *name, kiln_dtype t, int64_t a, int64_t b)
{
    int64_t s[2] = {a, b};
    return kiln_input(g, name, t, b > 0 ? 2 : 1, s);
}

/* ---- elementwise ops: bit for bit ---- */

static const double fspecial[] = {NAN,        INFINITY, -INFINITY, 0.0,   -0.0,  1.0,    -1.0,
                                  0.5,        -0.5,     88.7,      -87.4, 100.0, -104.5, 1e-30,
                                  -1e-30,     1e-40,    3e38,      -3e38, 0.875, 0.55,   4.5,
                                  -1.0000001, 2.5e9,    -2.5e9,    1e19};

static void float_ops(kiln_dtype dt, bool fused)
{
    kiln_graph *g = kiln_graph_new(dt == KILN_F32 ? "float_ops_f32" : "float_ops_f64");
    kiln_value x = in(g, "x", dt, 7, 37), y = in(g, "y", dt, 7, 37), w = in(g, "w", dt, 37, 0);
    kiln_value outs[40];
    int n = 0;
    outs[n++] = kiln_add(g, x, y);
    outs[n++] = kiln_sub(g, x, w);
    outs[n++] = kiln_mul(g, x, y);
    outs[n++] = kiln_div(g, x, y);
    outs[n++] = kiln_maximum(g, x, y);
    outs[n++] = kiln_minimum(g, x, w);
    outs[n++] = kiln_neg(g, x);
    outs[n++] = kiln_exp(g, x);
    outs[n++] = kiln_log(g, x);
    outs[n++] = kiln_sqrt(g, x);
    outs[n++] = kiln_pow(g, x, 3.0);
    outs[n++] = kiln_pow(g, x, 0.5);
    outs[n++] = kiln_pow(g, y, -1.5);
    outs[n++] = kiln_relu(g, x);
    outs[n++] = kiln_leaky_relu(g, x, 0.1);
    outs[n++] = kiln_sigmoid(g, x);
    outs[n++] = kiln_tanh(g, x);
    outs[n++] = kiln_gelu(g, x);
    outs[n++] = kiln_op(g, "gelu_grad", 2, (kiln_value[]){x, y}, 0, NULL);
    outs[n++] = kiln_where(g, kiln_gt(g, x, y), x, kiln_exp(g, y));
    outs[n++] = kiln_eq(g, x, y);
    outs[n++] = kiln_ne(g, x, x);
    outs[n++] = kiln_lt(g, x, w);
    outs[n++] = kiln_le(g, x, y);
    outs[n++] = kiln_ge(g, x, y);
    outs[n++] = kiln_cast(g, x, KILN_I32);
    outs[n++] = kiln_cast(g, x, KILN_I64);
    outs[n++] = kiln_cast(g, x, KILN_U8);
    outs[n++] = kiln_cast(g, x, KILN_BOOL);
    outs[n++] = kiln_cast(g, x, dt == KILN_F32 ? KILN_F64 : KILN_F32);
    outs[n++] = kiln_add(g,
                         kiln_mul(g, kiln_exp(g, kiln_neg(g, x)),
                                  kiln_log(g, kiln_add(g, y, kiln_scalar(g, 3.0, dt)))),
                         kiln_tanh(g, kiln_div(g, x, w)));
    for (int i = 0; i < n; i++) {
        cr_assert_geq(outs[i], 0, "%s", kiln_graph_error(g));
        char nm[16];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK);
    }
    tp t;
    tp_build(&t, g, "forward", fused);
    /* specials first, then random values; y keeps away from nothing */
    int nv = 7 * 37;
    double *xv = malloc((size_t)nv * sizeof *xv), *yv = malloc((size_t)nv * sizeof *yv);
    double wv[37];
    int ns = (int)(sizeof fspecial / sizeof fspecial[0]);
    for (int i = 0; i < nv; i++) {
        xv[i] = i < ns ? fspecial[i] : i < 2 * ns ? fspecial[i - ns] * 0.37 : uniform(-12, 12);
        yv[i] = i < ns ? fspecial[(i * 7) % ns] : uniform(-3, 3);
    }
    for (int i = 0; i < 37; i++)
        wv[i] = i % 5 == 0 ? 0.0 : uniform(-4, 4);
    tp_set(&t, x, xv, nv);
    tp_set(&t, y, yv, nv);
    tp_set(&t, w, wv, 37);
    tp_run_both(&t, NULL);
    cr_expect_eq(t.rc_l, t.rc_c);
    cr_expect_eq(tp_compare(&t, -1, 0, false), 0);
    free(xv);
    free(yv);
    tp_free(&t);
    kiln_graph_free(g);
}

Test(llvm, float_ops_f32)
{
    float_ops(KILN_F32, false);
}
Test(llvm, float_ops_f64)
{
    float_ops(KILN_F64, false);
}
Test(llvm, float_ops_f32_fused)
{
    float_ops(KILN_F32, true);
}
Test(llvm, float_ops_f64_fused)
{
    float_ops(KILN_F64, true);
}

/* kiln's f32 exp/log/tanh/erf over a sweep of the floats (through the
 * gelu, sigmoid, log and tanh ops), bit for bit. */
Test(llvm, f32_math_sweep)
{
    kiln_graph *g = kiln_graph_new("sweep");
    const int64_t n = 1 << 16;
    kiln_value x = in(g, "x", KILN_F32, n, 0);
    kiln_value o[6] = {kiln_exp(g, x),  kiln_log(g, x),     kiln_tanh(g, x),
                       kiln_gelu(g, x), kiln_sigmoid(g, x), kiln_log(g, kiln_neg(g, x))};
    for (int i = 0; i < 6; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, o[i], nm), KILN_OK);
    }
    tp t;
    tp_build(&t, g, "forward", false);
    float *xv = tp_addr(&t, t.init, x);
    for (int64_t i = 0; i < n; i++) { /* bit patterns spread over all floats */
        uint32_t u = (uint32_t)(i * 65537u) ^ (uint32_t)(next_u64() & 0xffff);
        memcpy(&xv[i], &u, 4);
    }
    tp_run_both(&t, NULL);
    cr_expect_eq(tp_compare(&t, -1, 0, false), 0);
    tp_free(&t);
    kiln_graph_free(g);
}

/* Integer and bool ops, C's semantics: x / 0 == 0, INT_MIN / -1 wraps,
 * promoted u8 and bool arithmetic, saturating casts. */
static void int_ops(kiln_dtype dt, bool fused)
{
    char name[32];
    snprintf(name, sizeof name, "int_ops_%s", kiln_dtype_name(dt));
    kiln_graph *g = kiln_graph_new(name);
    kiln_value x = in(g, "x", dt, 5, 33), y = in(g, "y", dt, 5, 33), w = in(g, "w", dt, 33, 0);
    kiln_value c = in(g, "c", KILN_BOOL, 5, 33);
    kiln_value outs[32];
    int n = 0;
    outs[n++] = kiln_add(g, x, y);
    outs[n++] = kiln_sub(g, x, w);
    outs[n++] = kiln_mul(g, x, y);
    outs[n++] = kiln_div(g, x, y);
    outs[n++] = kiln_div(g, x, kiln_scalar(g, 3, dt));
    outs[n++] = kiln_maximum(g, x, y);
    outs[n++] = kiln_minimum(g, x, w);
    outs[n++] = kiln_neg(g, x);
    outs[n++] = kiln_where(g, c, x, y);
    outs[n++] = kiln_eq(g, x, y);
    outs[n++] = kiln_ne(g, x, w);
    outs[n++] = kiln_lt(g, x, y);
    outs[n++] = kiln_le(g, x, y);
    outs[n++] = kiln_gt(g, x, w);
    outs[n++] = kiln_ge(g, x, y);
    outs[n++] = kiln_relu(g, x);
    outs[n++] = kiln_cast(g, x, KILN_F32);
    outs[n++] = kiln_cast(g, x, KILN_F64);
    outs[n++] = kiln_cast(g, x, dt == KILN_I32 ? KILN_I64 : KILN_I32);
    outs[n++] = kiln_cast(g, x, dt == KILN_U8 ? KILN_I64 : KILN_U8);
    outs[n++] = kiln_cast(g, x, KILN_BOOL);
    outs[n++] = kiln_add(g, kiln_mul(g, x, kiln_sub(g, y, w)), kiln_div(g, y, w));
    for (int i = 0; i < n; i++) {
        cr_assert_geq(outs[i], 0, "%s: %s", name, kiln_graph_error(g));
        char nm[16];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK);
    }
    tp t;
    tp_build(&t, g, "forward", fused);
    double mn = dt == KILN_I32 ? -2147483648.0 : dt == KILN_I64 ? -9223372036854775808.0 : 0;
    double mx = dt == KILN_I32 ? 2147483647.0 : dt == KILN_I64 ? 9.2e18 : 255;
    double sp[] = {0, 1, -1, mn, mx, 7, -7, 2, 255, 128, 100, -100};
    double xv[165], yv[165], wv[33];
    for (int i = 0; i < 165; i++) {
        xv[i] = i < 12 ? sp[i] : floor(uniform(-50, 50));
        yv[i] = i < 12        ? sp[(i * 5) % 12]
                : i % 7 == 0  ? 0
                : i % 11 == 0 ? -1
                              : floor(uniform(-9, 9));
    }
    for (int i = 0; i < 33; i++)
        wv[i] = i % 4 == 0 ? 0 : i == 5 ? -1 : floor(uniform(-20, 20));
    if (dt == KILN_U8)
        for (int i = 0; i < 165; i++)
            xv[i] = fabs(xv[i]), yv[i] = fabs(yv[i]);
    if (dt == KILN_U8)
        for (int i = 0; i < 33; i++)
            wv[i] = fabs(wv[i]);
    tp_set(&t, x, xv, 165);
    tp_set(&t, y, yv, 165);
    tp_set(&t, w, wv, 33);
    tp_run_both(&t, NULL);
    cr_expect_eq(t.rc_l, t.rc_c);
    cr_expect_eq(tp_compare(&t, -1, 0, false), 0);
    tp_free(&t);
    kiln_graph_free(g);
}

Test(llvm, int_ops_i32)
{
    int_ops(KILN_I32, false);
}
Test(llvm, int_ops_i64)
{
    int_ops(KILN_I64, false);
}
Test(llvm, int_ops_u8)
{
    int_ops(KILN_U8, false);
}
Test(llvm, int_ops_i32_fused)
{
    int_ops(KILN_I32, true);
}

Test(llvm, bool_ops)
{
    kiln_graph *g = kiln_graph_new("bool_ops");
    kiln_value a = in(g, "a", KILN_BOOL, 9, 17), b = in(g, "b", KILN_BOOL, 9, 17);
    kiln_value x = in(g, "x", KILN_F32, 9, 17);
    kiln_value outs[16];
    int n = 0;
    outs[n++] = kiln_where(g, a, x, kiln_neg(g, x));
    outs[n++] = kiln_eq(g, a, b);
    outs[n++] = kiln_ne(g, a, b);
    outs[n++] = kiln_lt(g, a, b);
    outs[n++] = kiln_add(g, a, b); /* C's int arithmetic, stored as a byte */
    outs[n++] = kiln_mul(g, a, b);
    outs[n++] = kiln_maximum(g, a, b);
    outs[n++] = kiln_minimum(g, a, b);
    outs[n++] = kiln_neg(g, a);
    outs[n++] = kiln_cast(g, a, KILN_F32);
    outs[n++] = kiln_cast(g, a, KILN_I64);
    outs[n++] = kiln_cast(g, kiln_gt(g, x, kiln_scalar(g, 0, KILN_F32)), KILN_I32);
    outs[n++] = kiln_where(g, kiln_ne(g, a, b), kiln_cast(g, x, KILN_BOOL), b);
    for (int i = 0; i < n; i++) {
        cr_assert_geq(outs[i], 0, "%s", kiln_graph_error(g));
        char nm[16];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK);
    }
    for (int fused = 0; fused < 2; fused++) {
        tp t;
        tp_build(&t, g, "forward", fused);
        tp_run_both(&t, NULL);
        cr_expect_eq(tp_compare(&t, -1, 0, false), 0);
        tp_free(&t);
    }
    kiln_graph_free(g);
}

/* ---- reductions, softmax, losses ---- */

static void reductions(kiln_dtype dt)
{
    kiln_graph *g = kiln_graph_new(dt == KILN_F32 ? "reduce_f32" : "reduce_f64");
    kiln_value x = in(g, "x", dt, 17, 129), y = in(g, "y", dt, 7, 3);
    int64_t ax0[] = {0}, ax1[] = {1};
    kiln_value outs[16];
    int n = 0;
    outs[n++] = kiln_reduce_sum(g, x, 1, ax1, 0);
    outs[n++] = kiln_reduce_sum(g, x, 1, ax0, 1);
    outs[n++] = kiln_reduce_mean(g, x, 0, NULL, 0);
    outs[n++] = kiln_reduce_max(g, x, 1, ax1, 0);
    outs[n++] = kiln_reduce_max(g, y, 1, ax0, 0);
    outs[n++] = kiln_argmax(g, x, 1);
    outs[n++] = kiln_argmax(g, y, 0);
    outs[n++] = kiln_softmax(g, x, 1);
    outs[n++] = kiln_log_softmax(g, x, 1);
    outs[n++] = kiln_softmax(g, y, 0);
    outs[n++] = kiln_reduce_sum(g, kiln_exp(g, kiln_mul(g, x, x)), 1, ax1, 0);
    outs[n++] = kiln_mse_loss(g, x, kiln_tanh(g, x));
    outs[n++] = kiln_bce_with_logits(g, y, kiln_sigmoid(g, y));
    for (int i = 0; i < n; i++) {
        cr_assert_geq(outs[i], 0, "%s", kiln_graph_error(g));
        char nm[16];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK);
    }
    for (int fused = 0; fused < 2; fused++) {
        tp t;
        tp_build(&t, g, "forward", fused);
        tp_run_both(&t, NULL);
        cr_expect_eq(t.rc_l, t.rc_c);
        cr_expect_eq(tp_compare(&t, 1e-5, 1e-6, false), 0, "fused %d", fused);
        tp_free(&t);
    }
    kiln_graph_free(g);
}

Test(llvm, reductions_f32)
{
    reductions(KILN_F32);
}
Test(llvm, reductions_f64)
{
    reductions(KILN_F64);
}

Test(llvm, int_reductions)
{
    kiln_graph *g = kiln_graph_new("int_reduce");
    kiln_value x = in(g, "x", KILN_I32, 7, 17), y = in(g, "y", KILN_I64, 3, 129);
    int64_t ax1[] = {1};
    kiln_value outs[4] = {kiln_reduce_sum(g, x, 1, ax1, 0), kiln_reduce_max(g, y, 1, ax1, 1),
                          kiln_argmax(g, x, 1), kiln_reduce_sum(g, y, 0, NULL, 0)};
    for (int i = 0; i < 4; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK, "%s", kiln_graph_error(g));
    }
    tp t;
    tp_build(&t, g, "forward", true);
    tp_run_both(&t, NULL);
    cr_expect_eq(tp_compare(&t, -1, 0, false), 0);
    tp_free(&t);
    kiln_graph_free(g);
}

/* Column sums (a bias gradient: the sum over the rows of [B, N] into [N]),
 * with N on both sides of the vector width: the LLVM backend runs the
 * column loop W columns at a time (emit_llvm_vec.c: vector accumulators
 * carried across the row loop, a scalar loop for the rest), the sums in the
 * C backend's order, so it agrees with the C backend bit for bit (1 and 2
 * threads) and with the reference within rtol 1e-5, atol 1e-6. */
static void colsums(int64_t B, int64_t N, kiln_pool *pool)
{
    char name[48];
    snprintf(name, sizeof name, "colsum_%lldx%lld", (long long)B, (long long)N);
    kiln_graph *g = kiln_graph_new(name);
    kiln_value x = in(g, "x", KILN_F32, B, N), xd = in(g, "xd", KILN_F64, B, N);
    kiln_value w = in(g, "w", KILN_F32, N, 0);
    int64_t ax0[] = {0};
    kiln_value s = kiln_reduce_sum(g, x, 1, ax0, 0);
    kiln_value outs[5] = {
        s,
        kiln_reduce_mean(g, x, 1, ax0, 1),
        kiln_reduce_max(g, x, 1, ax0, 0),
        kiln_add(g, kiln_relu(g, kiln_exp(g, kiln_mul(g, s, kiln_scalar(g, 0.25, KILN_F32)))),
                 kiln_div(g, w, kiln_sqrt(g, kiln_add(g, kiln_mul(g, s, s),
                                                      kiln_scalar(g, 1.0, KILN_F32))))),
        kiln_reduce_sum(g, xd, 1, ax0, 0),
    };
    for (int i = 0; i < 5; i++) {
        char nm[16];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK, "%s", kiln_graph_error(g));
    }
    for (int fused = 0; fused < 2; fused++) {
        tp t;
        tp_build(&t, g, "forward", fused);
        if (N >= 16 && fused) { /* the vector loop is there (x86-64: 8 or 16 lanes) */
            char *text = kiln_llvm_module_text(&t.plan, NULL);
            cr_assert_not_null(text);
            cr_expect(strstr(text, "vloop") != NULL, "%s: no vector column loop", name);
            free(text);
        }
        tp_run_both(&t, pool);
        cr_expect_eq(t.rc_l, 0);
        cr_expect_eq(t.rc_c, 0);
        cr_expect_eq(tp_compare(&t, -1, 0, false), 0, "%s fused %d", name, fused);
        /* the reference, from the same starting values */
        kiln_interp *it;
        cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
        kiln_value leaves[3] = {x, xd, w};
        for (int l = 0; l < 3; l++) {
            const kiln_node *n = &g->nodes[leaves[l]];
            int64_t numel = kiln_node_numel(n);
            double *d = malloc((size_t)numel * sizeof *d);
            cr_assert_not_null(d);
            for (int64_t i = 0; i < numel; i++)
                d[i] = kiln_test_get(tp_addr(&t, t.init, leaves[l]), (kiln_dtype)n->dtype, i);
            cr_assert_eq(kiln_interp_set(it, leaves[l], d, (size_t)numel), KILN_OK);
            free(d);
        }
        cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
        for (int o = 0; o < 5; o++) {
            const kiln_node *n = &g->nodes[outs[o]];
            const double *r = kiln_interp_value(it, outs[o]);
            cr_assert_not_null(r);
            int shown = 0;
            for (int64_t i = 0; i < kiln_node_numel(n); i++) {
                double c = kiln_test_get(tp_addr(&t, t.mc, outs[o]), (kiln_dtype)n->dtype, i);
                double l = kiln_test_get(tp_addr(&t, t.ml, outs[o]), (kiln_dtype)n->dtype, i);
                bool ok = fabs(c - r[i]) <= 1e-6 + 1e-5 * fabs(r[i]) &&
                          fabs(l - r[i]) <= 1e-6 + 1e-5 * fabs(r[i]);
                if (!ok && shown++ < 3)
                    cr_expect(0, "%s fused %d o%d[%lld]: llvm %.9g, C %.9g, reference %.9g", name,
                              fused, o, (long long)i, l, c, r[i]);
            }
        }
        kiln_interp_free(it);
        tp_free(&t);
    }
    kiln_graph_free(g);
}

static const int64_t colsum_n[] = {1, 15, 16, 17, 33, 129};
static const int64_t colsum_b[] = {1, 3, 128};

Test(llvm, colsum_sizes_1_thread)
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            colsums(colsum_b[i], colsum_n[j], NULL);
}

Test(llvm, colsum_sizes_2_threads)
{
    kiln_pool *pool = kiln_pool_new(2);
    cr_assert_not_null(pool);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            colsums(colsum_b[i], colsum_n[j], pool);
    kiln_pool_free(pool);
}

/* cross_entropy: valid labels agree; a label outside [0, C) fails the
 * check, both backends return the same code (and so the same message). */
Test(llvm, cross_entropy_and_its_check)
{
    kiln_graph *g = kiln_graph_new("xent");
    kiln_value x = in(g, "x", KILN_F32, 17, 7);
    int64_t ls[1] = {17};
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ls);
    kiln_value l = kiln_cross_entropy(g, kiln_exp(g, x), y);
    cr_assert_geq(l, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_loss(g, l, "loss"), KILN_OK);
    for (int fused = 0; fused < 2; fused++) {
        tp t;
        tp_build(&t, g, "forward", fused);
        double labels[17];
        for (int i = 0; i < 17; i++)
            labels[i] = i % 7;
        tp_set(&t, y, labels, 17);
        tp_run_both(&t, NULL);
        cr_expect_eq(t.rc_c, 0);
        cr_expect_eq(t.rc_l, 0);
        cr_expect_eq(tp_compare(&t, 1e-5, 1e-6, false), 0);
        labels[11] = 7; /* out of range */
        tp_set(&t, y, labels, 17);
        tp_run_both(&t, NULL);
        cr_expect_gt(t.rc_c, 0);
        cr_expect_eq(t.rc_l, t.rc_c, "LLVM returned %d, C %d", t.rc_l, t.rc_c);
        char ml[256], mc[256];
        kiln_plan_error_message(&t.entry, t.rc_l, ml, sizeof ml);
        kiln_plan_error_message(&t.entry, t.rc_c, mc, sizeof mc);
        cr_expect_str_eq(ml, mc);
        cr_expect(strstr(ml, "label") != NULL, "%s", ml);
        labels[11] = -1;
        tp_set(&t, y, labels, 17);
        tp_run_both(&t, NULL);
        cr_expect_eq(t.rc_l, t.rc_c);
        tp_free(&t);
    }
    kiln_graph_free(g);
}

/* ---- GEMMs ---- */

typedef struct mmcase {
    int64_t m, n, k;
    int ta, tb;
    kiln_value a, b, bias, out, mm;
} mmcase;

/* Checks a backend's matmul output against f64 within the f32 summation
 * bound; with a bias + relu tail, relu(ref + bias). */
static int64_t check_gemm(tp *t, char *const *mem, const mmcase *c, const char *who)
{
    const float *A = tp_addr(t, mem, c->a), *B = tp_addr(t, mem, c->b);
    const float *bias = c->bias >= 0 ? tp_addr(t, mem, c->bias) : NULL;
    const float *O = tp_addr(t, mem, c->out);
    int64_t lda = c->ta ? c->m : c->k, ldb = c->tb ? c->k : c->n, bad = 0;
    for (int64_t i = 0; i < c->m; i++)
        for (int64_t j = 0; j < c->n; j++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < c->k; k++) {
                double a = c->ta ? A[k * lda + i] : A[i * lda + k];
                double b = c->tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double bound = (double)c->k * 0x1p-24 * sa + 1e-6 + 1e-5 * fabs(s);
            double want = s, got = O[i * c->n + j];
            if (bias) {
                want = s + bias[j];
                want = want > 0 ? want : 0;
                bound += 0x1p-23 * fabs(s + bias[j]);
            }
            if (!(fabs(got - want) <= bound)) {
                if (bad++ < 3)
                    cr_expect(
                        0, "%s: gemm %lldx%lldx%lld ta %d tb %d [%lld,%lld]: got %.9g, want %.9g",
                        who, (long long)c->m, (long long)c->n, (long long)c->k, c->ta, c->tb,
                        (long long)i, (long long)j, got, want);
            }
        }
    return bad;
}

static const int64_t mm_sizes[] = {1, 7, 15, 16, 17, 33, 129};
#define NMM ((int)(sizeof mm_sizes / sizeof mm_sizes[0]))

/* Many independent GEMMs in one graph: every size against every other in
 * turn, all transposes, half with a bias + relu tail in the epilogue. */
static void gemm_sizes(int threads)
{
    kiln_graph *g = kiln_graph_new("gemm_sizes");
    mmcase cs[128];
    int nc = 0;
    for (int i = 0; i < NMM; i++)
        for (int r = 0; r < 3; r++) {
            mmcase c = {.m = mm_sizes[i],
                        .n = mm_sizes[(i + r + 1) % NMM],
                        .k = mm_sizes[(i + 2 * r + 3) % NMM],
                        .ta = r == 1,
                        .tb = (i + r) % 2,
                        .bias = -1};
            if (r == 2) c.n = mm_sizes[i], c.k = mm_sizes[i];
            char nm[32];
            snprintf(nm, sizeof nm, "a%d", nc);
            c.a = c.ta ? in(g, nm, KILN_F32, c.k, c.m) : in(g, nm, KILN_F32, c.m, c.k);
            snprintf(nm, sizeof nm, "b%d", nc);
            c.b = c.tb ? in(g, nm, KILN_F32, c.n, c.k) : in(g, nm, KILN_F32, c.k, c.n);
            c.mm = c.out = kiln_matmul(g, c.a, c.b, c.ta, c.tb);
            /* (no tail when M or N is 1: the fused lowering then reads the
             * unstored matmul in the epilogue, in both backends) */
            if ((i + r) % 2 == 0 && c.m > 1 && c.n > 1) {
                snprintf(nm, sizeof nm, "bias%d", nc);
                c.bias = in(g, nm, KILN_F32, c.n, 0);
                c.out = kiln_relu(g, kiln_add(g, c.mm, c.bias));
            }
            cr_assert_geq(c.out, 0, "%s", kiln_graph_error(g));
            snprintf(nm, sizeof nm, "o%d", nc);
            cr_assert_eq(kiln_set_output(g, c.out, nm), KILN_OK);
            cs[nc++] = c;
        }
    tp t;
    tp_build(&t, g, "forward", true);
    kiln_pool *pool = threads > 1 ? kiln_pool_new(threads) : NULL;
    tp_run_both(&t, pool);
    int64_t bad = 0;
    for (int i = 0; i < nc; i++) {
        bad += check_gemm(&t, t.ml, &cs[i], "llvm");
        bad += check_gemm(&t, t.mc, &cs[i], "C");
    }
    cr_expect_eq(bad, 0);
    /* every other value (inputs) unchanged and equal */
    cr_expect_eq(tp_compare(&t, -1, 0, true), 0);
    if (threads > 1) { /* the same bits with one thread */
        char *one[4];
        for (int s = 0; s < 4; s++)
            one[s] = s ? aligned_alloc(64, align64(t.bytes[s] + 64)) : NULL;
        tp_reset(&t, one);
        tp_call(t.fl, one, NULL);
        for (int i = 0; i < nc; i++) {
            const kiln_node *n = &g->nodes[cs[i].out];
            cr_expect(
                !memcmp(tp_addr(&t, one, cs[i].out), tp_addr(&t, t.ml, cs[i].out), node_bytes(n)),
                "gemm %d differs between 1 and %d threads", i, threads);
        }
        for (int s = 1; s < 4; s++)
            free(one[s]);
    }
    if (verbose()) {
        int same = 0;
        for (int i = 0; i < nc; i++)
            same += !memcmp(tp_addr(&t, t.mc, cs[i].out), tp_addr(&t, t.ml, cs[i].out),
                            node_bytes(&g->nodes[cs[i].out]));
        fprintf(stderr, "llvm: %d of %d GEMMs bit-identical to the C backend's\n", same, nc);
    }
    kiln_pool_free(pool);
    tp_free(&t);
    kiln_graph_free(g);
}

/* Weight-gradient shapes (K, the batch, at most one KC block; B not
 * transposed): the LLVM GEMM splits rows first and reads B in place, also
 * when K x N is more than its pack buffer holds (the MLP's 512x784x128 at
 * batch 128); against f64, and the same bits with 1 and 2 threads. */
Test(llvm, gemm_weight_gradient_shapes)
{
    static const int64_t sh[][5] = {{512, 784, 128, 1, 0}, {512, 512, 128, 1, 0},
                                    {37, 800, 100, 0, 0},  {13, 600, 33, 1, 0},
                                    {130, 2100, 120, 0, 0}};
    int nc = (int)(sizeof sh / sizeof sh[0]);
    kiln_graph *g = kiln_graph_new("gemm_wgrad");
    mmcase cs[8];
    for (int i = 0; i < nc; i++) {
        mmcase c = {.m = sh[i][0], .n = sh[i][1], .k = sh[i][2], .ta = (int)sh[i][3],
                    .tb = (int)sh[i][4], .bias = -1};
        char nm[32];
        snprintf(nm, sizeof nm, "a%d", i);
        c.a = c.ta ? in(g, nm, KILN_F32, c.k, c.m) : in(g, nm, KILN_F32, c.m, c.k);
        snprintf(nm, sizeof nm, "b%d", i);
        c.b = in(g, nm, KILN_F32, c.k, c.n);
        c.mm = c.out = kiln_matmul(g, c.a, c.b, c.ta, c.tb);
        if (i % 2) {
            snprintf(nm, sizeof nm, "bias%d", i);
            c.bias = in(g, nm, KILN_F32, c.n, 0);
            c.out = kiln_relu(g, kiln_add(g, c.mm, c.bias));
        }
        cr_assert_geq(c.out, 0, "%s", kiln_graph_error(g));
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, c.out, nm), KILN_OK);
        cs[i] = c;
    }
    tp t;
    tp_build(&t, g, "forward", true);
    kiln_pool *pool = kiln_pool_new(2);
    tp_run_both(&t, pool);
    int64_t bad = 0;
    for (int i = 0; i < nc; i++) {
        bad += check_gemm(&t, t.ml, &cs[i], "llvm");
        bad += check_gemm(&t, t.mc, &cs[i], "C");
    }
    cr_expect_eq(bad, 0);
    char *one[4] = {0};
    for (int s = 1; s < 4; s++)
        one[s] = aligned_alloc(64, align64(t.bytes[s] + 64));
    tp_reset(&t, one);
    tp_call(t.fl, one, NULL);
    for (int i = 0; i < nc; i++)
        cr_expect(!memcmp(tp_addr(&t, one, cs[i].out), tp_addr(&t, t.ml, cs[i].out),
                          node_bytes(&g->nodes[cs[i].out])),
                  "gemm %d differs between 1 and 2 threads", i);
    for (int s = 1; s < 4; s++)
        free(one[s]);
    kiln_pool_free(pool);
    tp_free(&t);
    kiln_graph_free(g);
}

Test(llvm, gemm_sizes_1_thread)
{
    gemm_sizes(1);
}
Test(llvm, gemm_sizes_2_threads)
{
    gemm_sizes(2);
}

/* The matmuls that are not GEMM statements: f64 (the row-update form with
 * an f64 scratch row, outlined onto the pool with the scratch row its own;
 * and the dot form for a transposed b), integer and batched ones. */
Test(llvm, matmul_other_forms)
{
    kiln_graph *g = kiln_graph_new("matmuls");
    kiln_value a = in(g, "a", KILN_F64, 64, 33), b = in(g, "b", KILN_F64, 33, 65);
    kiln_value bt = in(g, "bt", KILN_F64, 65, 33);
    kiln_value ia = in(g, "ia", KILN_I32, 7, 17), ib = in(g, "ib", KILN_I32, 17, 9);
    int64_t s3a[3] = {3, 5, 17}, s3b[3] = {3, 17, 7};
    kiln_value xa = kiln_input(g, "xa", KILN_F32, 3, s3a),
               xb = kiln_input(g, "xb", KILN_F32, 3, s3b);
    kiln_value outs[4] = {kiln_matmul(g, a, b, 0, 0), kiln_matmul(g, a, bt, 0, 1),
                          kiln_matmul(g, ia, ib, 0, 0), kiln_matmul(g, xa, xb, 0, 0)};
    for (int i = 0; i < 4; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "o%d", i);
        cr_assert_eq(kiln_set_output(g, outs[i], nm), KILN_OK, "%s", kiln_graph_error(g));
    }
    kiln_pool *pool = kiln_pool_new(2);
    for (int fused = 0; fused < 2; fused++) {
        tp t;
        tp_build(&t, g, "forward", fused);
        tp_run_both(&t, pool);
        cr_expect_eq(tp_compare(&t, 1e-12, 1e-12, false), 0, "fused %d", fused);
        tp_free(&t);
    }
    kiln_pool_free(pool);
    kiln_graph_free(g);
}

/* ---- parallel loops ---- */

/* Outlined elementwise loops and a reduction per row, big enough to split:
 * 1 and 2 threads give the same bits, and the C backend's. */
Test(llvm, parallel_loops)
{
    kiln_graph *g = kiln_graph_new("parallel");
    kiln_value x = in(g, "x", KILN_F32, 300, 257), y = in(g, "y", KILN_F32, 300, 257);
    int64_t ax1[] = {1};
    kiln_value a = kiln_tanh(g, kiln_mul(g, kiln_exp(g, x), y));
    kiln_value b = kiln_softmax(g, a, 1);
    kiln_value c = kiln_reduce_max(g, kiln_gelu(g, b), 1, ax1, 0);
    cr_assert_eq(kiln_set_output(g, a, "a"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, b, "b"), KILN_OK);
    cr_assert_eq(kiln_set_output(g, c, "c"), KILN_OK, "%s", kiln_graph_error(g));
    tp t;
    tp_build(&t, g, "forward", true);
    char *text = kiln_llvm_module_text(&t.plan, NULL);
    cr_assert_not_null(text);
    cr_expect(strstr(text, "llvm.loop.vectorize.enable") != NULL);
    cr_expect(strstr(text, ".p") != NULL, "no outlined loop");
    free(text);
    kiln_pool *pool = kiln_pool_new(2);
    tp_run_both(&t, pool);
    cr_expect_eq(tp_compare(&t, 1e-6, 1e-7, false), 0);
    char *one[4] = {0};
    for (int s = 1; s < 4; s++)
        one[s] = aligned_alloc(64, align64(t.bytes[s] + 64));
    tp_reset(&t, one);
    cr_expect_eq(tp_call(t.fl, one, NULL), 0);
    for (int s = 1; s < 4; s++)
        cr_expect(!memcmp(one[s], t.ml[s], t.bytes[s]), "space %d differs", s);
    for (int s = 1; s < 4; s++)
        free(one[s]);
    kiln_pool_free(pool);
    tp_free(&t);
    kiln_graph_free(g);
}

/* ---- the Fashion-MNIST MLP's training step ---- */

static void set_hparam(tp *t, const char *name, double v)
{
    for (int32_t i = 0; i < t->g->nnodes; i++) {
        const kiln_node *n = &t->g->nodes[i];
        if (n->role == KILN_ROLE_HPARAM && n->name && !strcmp(n->name, name)) tp_set(t, i, &v, 1);
    }
}

static double time_step(kiln_entry_fn fn, char **mem, kiln_pool *pool, int reps)
{
    tp_call(fn, mem, pool);
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        tp_call(fn, mem, pool);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

/* Starting values of the MLP's training step as a program has them: small
 * weights, zero state, pixels in [0, 1), labels in [0, 10), fastai's
 * hyperparameters. */
static void mlp_start(tp *t, const kiln_graph *g)
{
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op != KILN_OP_INPUT) continue;
        int64_t numel = kiln_node_numel(n);
        double *v = malloc((size_t)numel * sizeof *v);
        for (int64_t j = 0; j < numel; j++)
            v[j] = n->role == KILN_ROLE_PARAM    ? uniform(-0.05, 0.05)
                   : n->role == KILN_ROLE_STATE  ? 0.0
                   : n->role == KILN_ROLE_TARGET ? floor(uniform(0, 10))
                                                 : uniform(0, 1);
        tp_set(t, i, v, (int)numel);
        free(v);
    }
    set_hparam(t, "lr", 1e-3);
    set_hparam(t, "mom", 0.9);
    set_hparam(t, "beta2", 0.99);
    set_hparam(t, "eps", 1e-5);
    set_hparam(t, "wd", 1e-2);
    set_hparam(t, "step", 1.0);
}

/* The MLP's training program at batch bs (*f the model, *g the program),
 * fused and placed in *t, with mlp_start's values. */
static void mlp_program(int64_t bs, kiln_graph **f, kiln_graph **g, tp *t)
{
    char *err = NULL;
    cr_assert_eq(kiln_model_load(KILN_SOURCE_DIR "/examples/fashion_mlp.kiln", bs, f, &err),
                 KILN_OK, "%s", err ? err : "");
    free(err);
    kiln_train_options opt = kiln_train_defaults();
    cr_assert_eq(kiln_train_program(*f, &opt, g), KILN_OK, "%s", kiln_graph_error(*f));
    tp_build(t, *g, "train_step", true);
    mlp_start(t, *g);
}

Test(llvm, mlp_train_step)
{
    kiln_graph *f = NULL, *g = NULL;
    char *err = NULL;
    tp t;
    mlp_program(32, &f, &g, &t);
    tp_run_both(&t, NULL);
    cr_expect_eq(t.rc_c, 0);
    cr_expect_eq(t.rc_l, 0);
    /* P, S and the returned values (loss, metric) */
    int64_t bad = 0;
    for (int s = KILN_SPACE_P; s <= KILN_SPACE_S; s++)
        for (size_t i = 0; i + 4 <= t.bytes[s]; i += 4) {
            float l, c;
            memcpy(&l, t.ml[s] + i, 4);
            memcpy(&c, t.mc[s] + i, 4);
            if (!(fabs((double)l - (double)c) <= 1e-6 + 1e-4 * fabs((double)c))) {
                if (bad++ < 5)
                    cr_expect(0, "%s byte %zu: llvm %.9g, C %.9g", s == 1 ? "P" : "S", i, l, c);
            }
        }
    cr_expect_eq(bad, 0);
    kiln_value loss = kiln_graph_find_role(g, KILN_ROLE_LOSS);
    cr_assert_geq(loss, 0);
    float ll = *(float *)tp_addr(&t, t.ml, loss), lc = *(float *)tp_addr(&t, t.mc, loss);
    cr_expect(fabsf(ll - lc) <= 1e-5f * fabsf(lc) + 1e-6f, "loss: llvm %.9g, C %.9g", ll, lc);
    cr_expect(ll > 2.0f && ll < 2.6f, "loss %g", ll);
    /* timings: a fresh in-process compile, and one step on each backend */
    kiln_llvm_jit *j2 = NULL;
    double secs = 0;
    cr_assert_eq(kiln_llvm_load(&t.plan, &j2, &secs, NULL), KILN_OK);
    kiln_llvm_free(j2);
    double tc = time_step(t.fc, t.mc, NULL, 20), tl = time_step(t.fl, t.ml, NULL, 20);
    kiln_pool *pool = kiln_pool_new(2);
    double tc2 = time_step(t.fc, t.mc, pool, 20), tl2 = time_step(t.fl, t.ml, pool, 20);
    kiln_pool_free(pool);
    fprintf(stderr,
            "llvm: MLP train step (batch 32, %d kernels): LLVM compile %.3f s (first %.3f s), "
            "C compile %.3f s; step LLVM %.3f ms, C %.3f ms (1 thread); LLVM %.3f ms, C %.3f ms "
            "(2 threads); loss %.6f\n",
            t.nk, secs, t.l_secs, t.c_secs, tl * 1e3, tc * 1e3, tl2 * 1e3, tc2 * 1e3, ll);
    tp_free(&t);
    kiln_graph_free(g);
    kiln_graph_free(f);
    free(err);
}

/* The program compiled in several parts on threads of their own
 * (codegen/llvm_jit.c) is the program compiled as one module: the same
 * bytes after a training step. */
Test(llvm, compiled_in_parts)
{
    kiln_graph *f = NULL, *g = NULL;
    char *err = NULL;
    tp t;
    mlp_program(17, &f, &g, &t);
    const char *old = getenv("KILN_LLVM_THREADS");
    char *saved = old ? strdup(old) : NULL;
    char *mem[3][4];
    int parts[3];
    const char *threads[3] = {"1", "2", "3"};
    for (int r = 0; r < 3; r++) {
        setenv("KILN_LLVM_THREADS", threads[r], 1);
        kiln_llvm_jit *j = NULL;
        kiln_llvm_times lt;
        cr_assert_eq(kiln_llvm_load2(&t.plan, NULL, &j, &lt, &err), KILN_OK, "%s",
                     err ? err : "");
        parts[r] = lt.parts;
        void *a = kiln_llvm_sym(j, "kiln_train_step");
        cr_assert_not_null(a);
        kiln_entry_fn fn;
        memcpy(&fn, &a, sizeof a);
        for (int s = 0; s < 4; s++)
            mem[r][s] = aligned_alloc(64, align64(t.bytes[s] + 64));
        tp_reset(&t, mem[r]);
        cr_expect_eq(tp_call(fn, mem[r], NULL), 0);
        kiln_llvm_free(j);
    }
    if (saved) setenv("KILN_LLVM_THREADS", saved, 1);
    else unsetenv("KILN_LLVM_THREADS");
    free(saved);
    cr_expect_eq(parts[0], 1);
    cr_expect_eq(parts[1], 2);
    cr_expect_eq(parts[2], 3);
    for (int r = 1; r < 3; r++)
        for (int s = KILN_SPACE_P; s <= KILN_SPACE_A; s++)
            cr_expect(!memcmp(mem[0][s], mem[r][s], t.bytes[s]),
                      "space %d differs between 1 and %d parts", s, parts[r]);
    for (int r = 0; r < 3; r++)
        for (int s = 0; s < 4; s++)
            free(mem[r][s]);
    tp_free(&t);
    kiln_graph_free(g);
    kiln_graph_free(f);
}

/* ---- GEMM speed (reported, not asserted) ---- */

static void gemm_speed(int64_t m, int64_t n, int64_t k)
{
    kiln_graph *g = kiln_graph_new("gemm_speed");
    kiln_value a = in(g, "a", KILN_F32, m, k), b = in(g, "b", KILN_F32, k, n);
    kiln_value c = kiln_matmul(g, a, b, 0, 0);
    cr_assert_eq(kiln_set_output(g, c, "c"), KILN_OK, "%s", kiln_graph_error(g));
    tp t;
    tp_build(&t, g, "forward", true);
    tp_run_both(&t, NULL);
    double fl = 2.0 * (double)m * (double)n * (double)k;
    kiln_pool *pool = kiln_pool_new(2);
    int reps = fl > 1e8 ? 10 : 30;
    double l1 = time_step(t.fl, t.ml, NULL, reps), c1 = time_step(t.fc, t.mc, NULL, reps);
    double l2 = time_step(t.fl, t.ml, pool, reps), c2 = time_step(t.fc, t.mc, pool, reps);
    fprintf(stderr,
            "llvm: gemm %lldx%lldx%lld GFLOPS: LLVM %.1f, C %.1f (1 thread); LLVM %.1f, C %.1f "
            "(2 threads)\n",
            (long long)m, (long long)n, (long long)k, fl / l1 * 1e-9, fl / c1 * 1e-9,
            fl / l2 * 1e-9, fl / c2 * 1e-9);
    kiln_pool_free(pool);
    tp_free(&t);
    kiln_graph_free(g);
}

Test(llvm, gemm_speed)
{
    gemm_speed(512, 512, 512);
    gemm_speed(128, 512, 784);
}

/* ---- the other entry points of the API ---- */

Test(llvm, module_text_and_object)
{
    kiln_graph *g = kiln_graph_new("small");
    kiln_value x = in(g, "x", KILN_F32, 4, 5), w = in(g, "w", KILN_F32, 5, 3);
    kiln_value y = kiln_relu(g, kiln_matmul(g, x, w, 0, 0));
    cr_assert_eq(kiln_set_output(g, kiln_exp(g, y), "y"), KILN_OK, "%s", kiln_graph_error(g));
    tp t;
    tp_build(&t, g, "forward", true);
    char *err = NULL;
    char *text = kiln_llvm_module_text(&t.plan, &err);
    cr_assert_not_null(text, "%s", err ? err : "");
    cr_expect(strstr(text, "define i32 @kiln_forward(") != NULL, "%s", text);
    cr_expect(strstr(text, "kiln.expf") != NULL);
    free(text);
    char path[512];
    snprintf(path, sizeof path, "%s/small.o", cache);
    cr_expect_eq(kiln_llvm_emit_object(&t.plan, NULL, NULL, path, &err), KILN_OK, "%s",
                 err ? err : "");
    cr_expect_eq(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/small_x86.o", cache);
    cr_expect_eq(kiln_llvm_emit_object(&t.plan, "x86_64-unknown-linux-gnu", "haswell", path, &err),
                 KILN_OK, "%s", err ? err : "");
    cr_expect_neq(kiln_llvm_emit_object(&t.plan, "no-such-triple", NULL, path, &err), KILN_OK);
    cr_expect_not_null(err);
    free(err);
    tp_free(&t);
    kiln_graph_free(g);
}

static int count_substr(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub))
        n++;
    return n;
}

/* Two entries over the same kernels and places: each kernel is built once,
 * both entry points exist and compute the same as the C backend's. */
Test(llvm, entries_share_kernels)
{
    kiln_graph *g = kiln_graph_new("two");
    kiln_value x = in(g, "x", KILN_F32, 33, 65);
    int64_t ax1[] = {1};
    kiln_value y = kiln_reduce_sum(g, kiln_tanh(g, kiln_exp(g, x)), 1, ax1, 0);
    cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK, "%s", kiln_graph_error(g));
    tp t;
    tp_build(&t, g, "forward", true);
    kiln_plan_entry es[2] = {t.entry, t.entry};
    es[1].name = "eval_step";
    kiln_plan plan = t.plan;
    plan.entries = es;
    plan.nentries = 2;
    char *err = NULL;
    char *text = kiln_llvm_module_text(&plan, &err);
    cr_assert_not_null(text, "%s", err ? err : "");
    cr_expect_eq(count_substr(text, "define internal i32 @"), t.nk, "%s", text);
    cr_expect_eq(count_substr(text, "define i32 @kiln_forward("), 1);
    cr_expect_eq(count_substr(text, "define i32 @kiln_eval_step("), 1);
    free(text);
    kiln_llvm_jit *j = NULL;
    cr_assert_eq(kiln_llvm_load(&plan, &j, NULL, &err), KILN_OK, "%s", err ? err : "");
    void *a = kiln_llvm_sym(j, "kiln_eval_step");
    cr_assert_not_null(a);
    cr_expect_not_null(kiln_llvm_sym(j, "kiln_forward"));
    cr_expect_null(kiln_llvm_sym(j, "kiln_train_step"));
    tp_run_both(&t, NULL);
    cr_expect_eq(tp_compare(&t, 1e-5, 1e-6, false), 0);
    /* eval_step writes what forward wrote */
    kiln_entry_fn fe;
    memcpy(&fe, &a, sizeof a);
    char *m2[4] = {0};
    for (int s = 1; s < 4; s++)
        m2[s] = aligned_alloc(64, align64(t.bytes[s] + 64));
    tp_reset(&t, m2);
    cr_expect_eq(tp_call(fe, m2, NULL), 0);
    for (int s = 1; s < 4; s++)
        cr_expect(!memcmp(m2[s], t.ml[s], t.bytes[s]), "space %d", s);
    for (int s = 1; s < 4; s++)
        free(m2[s]);
    kiln_llvm_free(j);
    tp_free(&t);
    kiln_graph_free(g);
}

/* A plan whose buffer has no place is refused with a message, not run. */
Test(llvm, missing_place)
{
    kiln_graph *g = kiln_graph_new("noplace");
    kiln_value x = in(g, "x", KILN_F32, 4, 0);
    cr_assert_eq(kiln_set_output(g, kiln_exp(g, x), "y"), KILN_OK);
    tp t;
    tp_build(&t, g, "forward", false);
    t.place[x].space = KILN_SPACE_NONE;
    kiln_llvm_jit *j = NULL;
    char *err = NULL;
    cr_expect_neq(kiln_llvm_load(&t.plan, &j, NULL, &err), KILN_OK);
    cr_expect_null(j);
    cr_expect(err && strstr(err, "no place"), "%s", err ? err : "(null)");
    free(err);
    tp_free(&t);
    kiln_graph_free(g);
}

#else /* built without LLVM */

Test(llvm, stubs_say_so)
{
    char *err = NULL;
    kiln_llvm_jit *j = NULL;
    kiln_plan plan = {0};
    cr_expect_eq(kiln_llvm_available(), 0);
    cr_expect_eq(kiln_llvm_load(&plan, &j, NULL, &err), KILN_ERR_UNSUPPORTED);
    cr_expect(err && strstr(err, "without LLVM"), "%s", err ? err : "(null)");
    free(err);
}

#endif

/* KILN_BACKEND_LLVM through kiln_compile: three AdamW steps of the
 * Fashion-MNIST MLP give the C backend's loss and parameters. */
Test(llvm, program_backend_matches_c)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_load(KILN_SOURCE_DIR "/examples/fashion_mlp.kiln", 16, &g, &err),
                 KILN_OK, "%s", err ? err : "");
    float x[16 * 784];
    int32_t y[16];
    for (int i = 0; i < 16 * 784; i++) x[i] = (float)((i * 7919) % 255) / 255.0f - 0.3f;
    for (int i = 0; i < 16; i++) y[i] = (i * 3) % 10;
    float loss[2];
    float *w[2] = {NULL, NULL};
    size_t wbytes = 512 * 784 * sizeof(float);
    for (int be = 0; be < 2; be++) {
        kiln_compile_options o = kiln_compile_defaults();
        o.backend = be ? KILN_BACKEND_LLVM : KILN_BACKEND_C;
        o.threads = 2;
        kiln_program *p = NULL;
        cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
        cr_assert_eq(kiln_program_init_params(p, 3), KILN_OK);
        cr_assert_eq(kiln_program_set(p, "x", x, sizeof x), KILN_OK);
        cr_assert_eq(kiln_program_set(p, "y", y, sizeof y), KILN_OK);
        for (int s = 1; s <= 3; s++) {
            cr_assert_eq(kiln_program_set_hparam(p, "step", s), KILN_OK);
            cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
        }
        kiln_program_get(p, "loss", &loss[be], sizeof loss[be]);
        w[be] = malloc(wbytes);
        cr_assert_eq(kiln_program_get(p, "linear0.weight", w[be], wbytes), KILN_OK);
        kiln_program_free(p);
    }
    cr_expect_float_eq(loss[0], loss[1], 1e-5f * fabsf(loss[0]), "C %g, LLVM %g", loss[0], loss[1]);
    double worst = 0.0;
    for (size_t i = 0; i < wbytes / sizeof(float); i++) {
        double d = fabs((double)w[0][i] - (double)w[1][i]);
        if (d > worst) worst = d;
    }
    cr_expect_leq(worst, 1e-6, "parameters differ by %g", worst);
    free(w[0]);
    free(w[1]);
    kiln_graph_free(g);
}
