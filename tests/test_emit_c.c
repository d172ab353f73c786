/* tests/test_emit_c.c — the C emitter (codegen/emit_c.c), end to end: small
 * graphs built with the C API, lowered node by node (kiln_lower_node), placed
 * one after another (64-byte aligned: parameters in P, state in S, the rest
 * in A), emitted, compiled with kiln_cc_load, run, and compared with the
 * reference interpreter (rtol 1e-5, atol 1e-6). Also: run-time checks and
 * their decoded messages, restrict and aliasing, kernels shared between
 * entries, determinism, and a golden check of the source of a tiny graph
 * (update it on purpose, never by accident). */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"
#include "ir/ops.h"
#include "runtime/threadpool.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a temporary cache per test ---- */

static char cache[256];

static void make_cache(void) { kiln_test_tmpdir(cache, sizeof cache, "emit"); }

static void drop_cache(void) { kiln_test_rmtree(cache); }

TestSuite(emit_c, .init = make_cache, .fini = drop_cache, .timeout = 120);

/* ---- plans built by hand ---- */

#define MAXK 64

typedef struct tplan {
    kiln_graph *g;
    kiln_place *place;
    kiln_kernel *k[MAXK];
    kiln_plan_entry entry;
    kiln_plan plan;
    char *mem[4]; /* by kiln_space: P, S, A */
    char *src;
    kiln_so *so;
    kiln_entry_fn fn;
} tplan;

static size_t align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* Places every node (consts: nowhere) and lowers every node with a kernel. */
static void tp_build(tplan *t, kiln_graph *g, const char *entry)
{
    memset(t, 0, sizeof *t);
    t->g = g;
    t->place = calloc((size_t)g->nnodes, sizeof *t->place);
    cr_assert_not_null(t->place);
    size_t used[4] = {0};
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op == KILN_OP_CONST) continue;
        int sp = n->role == KILN_ROLE_PARAM   ? KILN_SPACE_P
                 : n->role == KILN_ROLE_STATE ? KILN_SPACE_S
                                              : KILN_SPACE_A;
        t->place[i] = (kiln_place){.space = (uint8_t)sp, .offset = (int64_t)used[sp]};
        used[sp] += align64((size_t)kiln_node_numel(n) * kiln_dtype_size((kiln_dtype)n->dtype));
        char err[512] = "";
        kiln_kernel *k = NULL;
        cr_assert_eq(kiln_lower_node(g, i, &k, err, sizeof err), KILN_OK, "%s", err);
        if (k) {
            cr_assert_lt(t->entry.nkernels, MAXK);
            t->k[t->entry.nkernels++] = k;
        }
    }
    t->entry.name = entry;
    t->entry.g = g;
    t->entry.place = t->place;
    t->entry.kernels = t->k;
    t->plan = (kiln_plan){.entries = &t->entry,
                          .nentries = 1,
                          .p_bytes = used[KILN_SPACE_P],
                          .s_bytes = used[KILN_SPACE_S],
                          .a_bytes = used[KILN_SPACE_A]};
    for (int s = KILN_SPACE_P; s <= KILN_SPACE_A; s++) {
        t->mem[s] = aligned_alloc(64, align64(used[s] + 64));
        cr_assert_not_null(t->mem[s]);
        memset(t->mem[s], 0, align64(used[s] + 64));
    }
}

static void tp_compile(tplan *t)
{
    t->src = kiln_emit_c_source(&t->plan);
    cr_assert_not_null(t->src);
    if (getenv("KILN_TEST_SHOW_SOURCE")) fputs(t->src, stderr);
    kiln_cc_options o = {.cache_dir = cache};
    int cached;
    double secs;
    char *err = NULL;
    kiln_status st = kiln_cc_load(t->src, &o, &t->so, &cached, &secs, &err);
    cr_assert_eq(st, KILN_OK, "%s\n--- source ---\n%s", err ? err : "", t->src);
    char sym[64];
    snprintf(sym, sizeof sym, "kiln_%s", t->entry.name);
    t->fn = (kiln_entry_fn)kiln_so_sym(t->so, sym);
    cr_assert_not_null(t->fn, "no symbol %s", sym);
}

static int tp_run(tplan *t)
{
    kiln_rt rt = kiln_pool_rt(NULL); /* one thread: parallel loops run inline */
    return t->fn(t->mem[KILN_SPACE_P], t->mem[KILN_SPACE_S], t->mem[KILN_SPACE_A], &rt);
}

static void tp_free(tplan *t)
{
    for (int i = 0; i < t->entry.nkernels; i++)
        kiln_kernel_free(t->k[i]);
    for (int s = 0; s < 4; s++)
        free(t->mem[s]);
    free(t->place);
    free(t->src);
    kiln_so_close(t->so);
}

static void *tp_addr(tplan *t, kiln_value v)
{
    return t->mem[t->place[v].space] + t->place[v].offset;
}

/* Sets leaf v in both the plan's memory and the interpreter. */
static void set_leaf(tplan *t, kiln_interp *it, kiln_value v, const double *data)
{
    const kiln_node *n = &t->g->nodes[v];
    int64_t numel = kiln_node_numel(n);
    for (int64_t i = 0; i < numel; i++)
        kiln_test_put(tp_addr(t, v), (kiln_dtype)n->dtype, i, data[i]);
    cr_assert_eq(kiln_interp_set(it, v, data, (size_t)numel), KILN_OK, "%s", kiln_interp_error(it));
}

static bool close_to(double got, double want, double rtol, double atol)
{
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Every stored value (leaves, intermediates; an assign's destination in
 * place of the assign) agrees with the interpreter's. */
static void expect_matches(tplan *t, kiln_interp *it, double rtol, double atol)
{
    for (int32_t v = 0; v < t->g->nnodes; v++) {
        const kiln_node *n = &t->g->nodes[v];
        if (n->op == KILN_OP_CONST || n->op == KILN_OP_ASSIGN) continue;
        const double *want = kiln_interp_value(it, v);
        int64_t numel = kiln_node_numel(n);
        for (int64_t i = 0; i < numel; i++) {
            double got = kiln_test_get(tp_addr(t, v), (kiln_dtype)n->dtype, i);
            char d[160];
            cr_expect(close_to(got, want[i], rtol, atol), "%s [%lld]: got %.9g, want %.9g",
                      kiln_node_desc(t->g, v, d, sizeof d), (long long)i, got, want[i]);
        }
    }
}

static void fill(double *x, int n, double lo, double hi, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = lo + (hi - lo) * ((seed >> 8) & 0xffff) / 65535.0;
    }
}

static int count_substr(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub))
        n++;
    return n;
}

/* Runs graph g's one entry "forward" with the given leaves and compares. */
static void run_and_compare(kiln_graph *g, int nleaves, const kiln_value *leaves,
                            double *const *data)
{
    tplan t;
    tp_build(&t, g, "forward");
    tp_compile(&t);
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (int i = 0; i < nleaves; i++)
        set_leaf(&t, it, leaves[i], data[i]);
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    cr_assert_eq(tp_run(&t), 0);
    expect_matches(&t, it, 1e-5, 1e-6);
    kiln_interp_free(it);
    tp_free(&t);
}

/* ---- numerics against the reference ---- */

/* Every pointwise op, one kernel each, in f32 and in f64. */
static void pointwise_chain(kiln_dtype dt)
{
    kiln_graph *g = kiln_graph_new("chain");
    int64_t s[] = {5, 7};
    kiln_value x = kiln_input(g, "x", dt, 2, s);
    kiln_value y = kiln_input(g, "y", dt, 2, s);
    kiln_value a = kiln_add(g, kiln_mul(g, x, y), kiln_sub(g, x, y));
    kiln_value b = kiln_div(g, a, kiln_add(g, kiln_exp(g, y), kiln_scalar(g, 1.0, dt)));
    kiln_value c = kiln_maximum(g, kiln_tanh(g, b), kiln_minimum(g, kiln_sigmoid(g, x), y));
    kiln_value d = kiln_log(g, kiln_add(g, kiln_sqrt(g, kiln_exp(g, x)), kiln_pow(g, y, 2.0)));
    kiln_value e = kiln_add(g, kiln_gelu(g, c), kiln_leaky_relu(g, kiln_neg(g, d), 0.1));
    kiln_value f = kiln_mul(g, kiln_relu(g, e), kiln_pow(g, kiln_exp(g, y), 1.5));
    kiln_value h = kiln_where(g, kiln_gt(g, x, y), f, kiln_pow(g, kiln_exp(g, x), 0.5));
    cr_assert_geq(h, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, h, "out"), KILN_OK);
    double xv[35], yv[35];
    fill(xv, 35, -3, 3, 1);
    fill(yv, 35, -2, 2, 2);
    kiln_value leaves[] = {x, y};
    double *data[] = {xv, yv};
    run_and_compare(g, 2, leaves, data);
    kiln_graph_free(g);
}

Test(emit_c, pointwise_chain_f32)
{
    pointwise_chain(KILN_F32);
}
Test(emit_c, pointwise_chain_f64)
{
    pointwise_chain(KILN_F64);
}

/* maximum/minimum propagate NaN from either side, as the reference does;
 * inf survives. */
Test(emit_c, nan_propagates)
{
    kiln_graph *g = kiln_graph_new("nan");
    int64_t s[] = {6};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value y = kiln_input(g, "y", KILN_F32, 1, s);
    kiln_value mx = kiln_maximum(g, x, y), mn = kiln_minimum(g, x, y);
    kiln_value r = kiln_relu(g, x);
    kiln_value cmp = kiln_ne(g, x, x); /* true for NaN */
    cr_assert_geq(kiln_add(g, kiln_add(g, mx, mn), r), 0);
    cr_assert_geq(cmp, 0);
    double xv[] = {NAN, 1, NAN, INFINITY, -INFINITY, 2};
    double yv[] = {1, NAN, NAN, 3, 0, -2};
    kiln_value leaves[] = {x, y};
    double *data[] = {xv, yv};
    run_and_compare(g, 2, leaves, data);
    kiln_graph_free(g);
}

/* Operands broadcast by NumPy's rules: [4,3] + [3], * [4,1], + a scalar
 * parameter, in P. */
Test(emit_c, broadcast)
{
    kiln_graph *g = kiln_graph_new("bcast");
    int64_t xs[] = {4, 3}, bs[] = {3}, cs[] = {4, 1}, one[] = {1};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value b = kiln_param(g, "b", KILN_F32, 1, bs, KILN_INIT_ZEROS, 0);
    kiln_value c = kiln_input(g, "c", KILN_F32, 2, cs);
    kiln_value s = kiln_param(g, "s", KILN_F32, 1, one, KILN_INIT_ZEROS, 0);
    kiln_value y = kiln_add(g, kiln_mul(g, kiln_add(g, x, b), c), s);
    kiln_value z = kiln_sub(g, c, b); /* [4,1] - [3] -> [4,3] */
    cr_assert_geq(kiln_add(g, y, z), 0, "%s", kiln_graph_error(g));
    double xv[12], bv[3], cv[4], sv[1] = {0.25};
    fill(xv, 12, -1, 1, 3);
    fill(bv, 3, -1, 1, 4);
    fill(cv, 4, -1, 1, 5);
    kiln_value leaves[] = {x, b, c, s};
    double *data[] = {xv, bv, cv, sv};
    run_and_compare(g, 4, leaves, data);
    kiln_graph_free(g);
}

/* A const is inlined as its value: it is neither a parameter nor stored. */
Test(emit_c, const_inlining)
{
    kiln_graph *g = kiln_graph_new("consts");
    int64_t s[] = {8};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value k1 = kiln_scalar(g, 2.5, KILN_F32);
    kiln_value k2 = kiln_scalar(g, 1e-3, KILN_F32);
    kiln_value k3 = kiln_scalar(g, -INFINITY, KILN_F32);
    kiln_value y = kiln_add(g, kiln_mul(g, x, k1), k2);
    kiln_value z = kiln_maximum(g, y, k3);
    cr_assert_geq(z, 0, "%s", kiln_graph_error(g));
    tplan t;
    tp_build(&t, g, "forward");
    tp_compile(&t);
    /* the mul kernel has two parameters (x and its output): 2.5 is inlined */
    cr_expect_not_null(strstr(t.src, "static int k4_mul(\n"
                                     "    float *restrict b0 /* f32[8] %4 */,\n"
                                     "    const float *restrict b1 /* f32[8] %0 x */)\n"),
                       "%s", t.src);
    cr_expect_not_null(strstr(t.src, "b0[i0] = b1[i0] * 2.5f;"), "%s", t.src);
    cr_expect_not_null(strstr(t.src, "0.00100000005f"), "1e-3 as the f32 it is:\n%s", t.src);
    cr_expect_not_null(strstr(t.src, "(-INFINITY)"), "%s", t.src);
    cr_expect_not_null(strstr(t.src, "kiln_max_f32(b1[i0], (-INFINITY))"), "%s", t.src);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    double xv[8];
    fill(xv, 8, -4, 4, 6);
    set_leaf(&t, it, x, xv);
    cr_assert_eq(kiln_interp_run(it), KILN_OK);
    cr_assert_eq(tp_run(&t), 0);
    expect_matches(&t, it, 1e-5, 1e-6);
    kiln_interp_free(it);
    tp_free(&t);
    kiln_graph_free(g);
}

/* Casts: to integers truncating toward zero, to bool as != 0, and back. */
Test(emit_c, casts)
{
    kiln_graph *g = kiln_graph_new("casts");
    int64_t s[] = {10};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value i32 = kiln_cast(g, x, KILN_I32);
    kiln_value i64 = kiln_cast(g, x, KILN_I64);
    kiln_value bl = kiln_cast(g, x, KILN_BOOL);
    kiln_value u8 = kiln_cast(g, kiln_maximum(g, x, kiln_scalar(g, 0, KILN_F32)), KILN_U8);
    kiln_value back = kiln_add(g, kiln_cast(g, i32, KILN_F32), kiln_cast(g, bl, KILN_F32));
    kiln_value f64 = kiln_cast(g, i64, KILN_F64);
    kiln_value sel = kiln_where(g, bl, x, kiln_cast(g, u8, KILN_F32));
    kiln_value i2b = kiln_cast(g, i32, KILN_BOOL);
    cr_assert_geq(back, 0);
    cr_assert_geq(f64, 0);
    cr_assert_geq(sel, 0);
    cr_assert_geq(i2b, 0, "%s", kiln_graph_error(g));
    double xv[] = {-2.7, -0.5, 0, 0.5, 2.7, 1000.25, -0.0, 99.99, 3e9, NAN};
    kiln_value leaves[] = {x};
    double *data[] = {xv};
    /* 3e9 does not fit an i32 and NaN fits none: the reference keeps 3e9 and
     * gives 0 for NaN; the generated code saturates and gives 0. Compare the
     * representable ones. */
    tplan t;
    tp_build(&t, g, "forward");
    tp_compile(&t);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    set_leaf(&t, it, x, xv);
    cr_assert_eq(kiln_interp_run(it), KILN_OK);
    cr_assert_eq(tp_run(&t), 0);
    int32_t *gi = tp_addr(&t, i32);
    int64_t *gl = tp_addr(&t, i64);
    uint8_t *gb = tp_addr(&t, bl), *gu = tp_addr(&t, u8), *gib = tp_addr(&t, i2b);
    const double *wi = kiln_interp_value(it, i32), *wl = kiln_interp_value(it, i64);
    const double *wb = kiln_interp_value(it, bl), *wu = kiln_interp_value(it, u8);
    for (int i = 0; i < 8; i++) {
        cr_expect_eq(gi[i], (int32_t)wi[i], "i32 [%d]: %d vs %g", i, gi[i], wi[i]);
        cr_expect_eq(gl[i], (int64_t)wl[i], "i64 [%d]", i);
        cr_expect_eq(gb[i], (uint8_t)wb[i], "bool [%d]", i);
        if (wu[i] <= 255) cr_expect_eq(gu[i], (uint8_t)wu[i], "u8 [%d]: %d vs %g", i, gu[i], wu[i]);
        cr_expect_eq(gib[i], gi[i] != 0, "i32 -> bool [%d]", i);
    }
    cr_expect_eq(gi[0], -2);
    cr_expect_eq(gi[5], 1000);
    cr_expect_eq(gi[8], INT32_MAX, "out of range saturates");
    cr_expect_eq(gl[8], 3000000000LL);
    cr_expect_eq(gi[9], 0, "NaN gives 0, as the reference");
    cr_expect_eq(gl[9], 0);
    cr_expect_eq(gb[9], 1, "NaN is true");
    cr_expect_eq(gu[4], 2);
    cr_expect_eq(gu[5], 255, "out of range saturates");
    kiln_interp_free(it);
    tp_free(&t);
    (void)leaves;
    (void)data;
    kiln_graph_free(g);
}

/* Integer arithmetic: division truncates toward zero, x / 0 gives 0 as the
 * reference (whose non-finite quotient rounds to 0), min/max. */
Test(emit_c, integer_ops)
{
    kiln_graph *g = kiln_graph_new("ints");
    int64_t s[] = {8};
    kiln_value a = kiln_input(g, "a", KILN_I32, 1, s);
    kiln_value b = kiln_input(g, "b", KILN_I32, 1, s);
    kiln_value q = kiln_div(g, a, b);
    kiln_value m = kiln_maximum(g, kiln_sub(g, a, b), kiln_minimum(g, a, kiln_mul(g, b, b)));
    kiln_value a64 = kiln_cast(g, a, KILN_I64), b64 = kiln_cast(g, b, KILN_I64);
    kiln_value q64 = kiln_div(g, a64, b64);
    kiln_value lt = kiln_lt(g, a, b);
    cr_assert_geq(q, 0);
    cr_assert_geq(m, 0);
    cr_assert_geq(q64, 0);
    cr_assert_geq(lt, 0, "%s", kiln_graph_error(g));
    double av[] = {7, -7, 7, -7, 0, 5, 100, -2147483647};
    double bv[] = {2, 2, -2, -2, 3, 0, 7, -1};
    kiln_value leaves[] = {a, b};
    double *data[] = {av, bv};
    run_and_compare(g, 2, leaves, data);
    kiln_graph_free(g);
}

/* An assign writes its destination (a parameter) in place: that buffer is
 * read and written through one pointer, which may still be restrict. */
Test(emit_c, assign_updates_in_place)
{
    kiln_graph *g = kiln_graph_new("sgd");
    int64_t s[] = {2, 5};
    kiln_value w = kiln_param(g, "w", KILN_F32, 2, s, KILN_INIT_ZEROS, 0);
    kiln_value gr = kiln_input(g, "g", KILN_F32, 2, s);
    kiln_value upd = kiln_sub(g, w, kiln_mul(g, gr, kiln_scalar(g, 0.1, KILN_F32)));
    kiln_value asg = kiln_op(g, "assign", 2, (kiln_value[]){w, upd}, 0, NULL);
    cr_assert_geq(asg, 0, "%s", kiln_graph_error(g));
    tplan t;
    tp_build(&t, g, "train_step");
    tp_compile(&t);
    cr_expect_not_null(strstr(t.src, "float *restrict b0 /* f32[2,5] %0 w, read and written */"), "%s",
                       t.src);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    double wv[10], gv[10];
    fill(wv, 10, -1, 1, 7);
    fill(gv, 10, -1, 1, 8);
    set_leaf(&t, it, w, wv);
    set_leaf(&t, it, gr, gv);
    for (int step = 0; step < 3; step++) {
        cr_assert_eq(kiln_interp_run(it), KILN_OK);
        cr_assert_eq(tp_run(&t), 0);
    }
    expect_matches(&t, it, 1e-5, 1e-6);
    kiln_interp_free(it);
    tp_free(&t);
    kiln_graph_free(g);
}

/* Two buffers of a kernel that share storage (an in-place plan) are not
 * restrict, and the in-place kernel still computes the right values. */
Test(emit_c, shared_storage_is_not_restrict)
{
    kiln_graph *g = kiln_graph_new("inplace");
    int64_t s[] = {16};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value y = kiln_exp(g, x);
    kiln_value z = kiln_neg(g, y);
    cr_assert_geq(z, 0);
    tplan t;
    tp_build(&t, g, "forward");
    t.place[z] = t.place[y]; /* z overwrites y */
    tp_compile(&t);
    cr_expect_not_null(strstr(t.src, "const float *b1 /* f32[16] %1, shares storage */"), "%s",
                       t.src);
    cr_expect_not_null(strstr(t.src, "float *b0 /* f32[16] %2, shares storage */"), "%s", t.src);
    cr_expect_not_null(strstr(t.src, "const float *restrict b1 /* f32[16] %0 x */"), "%s", t.src);
    double xv[16];
    fill(xv, 16, -2, 2, 9);
    for (int i = 0; i < 16; i++)
        kiln_test_put(tp_addr(&t, x), KILN_F32, i, xv[i]);
    cr_assert_eq(tp_run(&t), 0);
    for (int i = 0; i < 16; i++)
        cr_expect(close_to(kiln_test_get(tp_addr(&t, z), KILN_F32, i), -(double)expf((float)xv[i]), 1e-6, 0));
    tp_free(&t);
    kiln_graph_free(g);
}

/* ---- run-time checks ---- */

/* Appends an expression to a hand-built kernel. */
static int32_t hx(kiln_kernel *k, int op, kiln_dtype dt, int32_t a, int32_t b, int64_t i)
{
    cr_assert_lt(k->nexprs, k->cap_exprs);
    k->exprs[k->nexprs] = (kiln_kexpr){
        .op = (uint8_t)op, .dtype = (uint8_t)dt, .a = a, .b = b, .i = i, .f = (double)i};
    return k->nexprs++;
}

static int32_t hs(kiln_kernel *k, kiln_kstmt s)
{
    cr_assert_lt(k->nstmts, k->cap_stmts);
    if (s.kind != KS_LOOP) s.body = -1;
    s.next = -1;
    k->stmts[k->nstmts] = s;
    return k->nstmts++;
}

/* A kernel over labels (i32[n], node `labels`) into out (f32[n], node
 * `node`): checks 0 <= label < 10 (code 1) and label != 7 (code 2), then
 * out[i] = label. */
static kiln_kernel *check_kernel(const kiln_graph *g, int32_t labels, int32_t node, int64_t n)
{
    kiln_kernel *k = calloc(1, sizeof *k);
    cr_assert_not_null(k);
    snprintf(k->name, sizeof k->name, "k%d_labels", node);
    snprintf(k->comment, sizeof k->comment, "labels(i32[%lld]) -> f32[%lld]", (long long)n,
             (long long)n);
    k->node = node;
    k->nbufs = 2;
    k->bufs = calloc(2, sizeof *k->bufs);
    k->bufs[0] = (kiln_kbuf){.node = labels, .dtype = KILN_I32, .rank = 1, .shape = {n}};
    k->bufs[1] =
        (kiln_kbuf){.node = node, .dtype = KILN_F32, .written = 1, .rank = 1, .shape = {n}};
    k->cap_exprs = 32;
    k->exprs = calloc(32, sizeof *k->exprs);
    k->cap_stmts = 8;
    k->stmts = calloc(8, sizeof *k->stmts);
    k->nvars = 1;
    int32_t i0 = hx(k, KX_VAR, KILN_I64, 0, 0, 0);
    int32_t l = hx(k, KX_LOAD, KILN_I32, 0, i0, 0);
    int32_t lo = hx(k, KX_GE, KILN_BOOL, l, hx(k, KX_CONST, KILN_I32, 0, 0, 0), 0);
    int32_t hi = hx(k, KX_LT, KILN_BOOL, l, hx(k, KX_CONST, KILN_I32, 0, 0, 10), 0);
    int32_t ok = hx(k, KX_AND, KILN_BOOL, lo, hi, 0);
    int32_t not7 = hx(k, KX_NE, KILN_BOOL, l, hx(k, KX_CONST, KILN_I32, 0, 0, 7), 0);
    int32_t val = hx(k, KX_CAST, KILN_F32, l, 0, 0);
    k->check_msg[0] = "cast: a label is outside [0, 10)"; /* the op prefix is dropped */
    k->check_msg[1] = "seven is not allowed";
    k->nchecks = 2;
    int32_t loop = hs(k, (kiln_kstmt){.kind = KS_LOOP, .var = 0, .extent = n});
    int32_t c1 = hs(k, (kiln_kstmt){.kind = KS_CHECK, .value = ok, .index = 1});
    int32_t c2 = hs(k, (kiln_kstmt){.kind = KS_CHECK, .value = not7, .index = 2});
    int32_t st = hs(k, (kiln_kstmt){.kind = KS_STORE, .buf = 1, .index = i0, .value = val});
    k->stmts[loop].body = c1;
    k->stmts[c1].next = c2;
    k->stmts[c2].next = st;
    k->body = loop;
    (void)g;
    return k;
}

Test(emit_c, check_failure_code_and_message)
{
    kiln_graph *g = kiln_graph_new("checks");
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "model.kiln"), 9, 8};
    int64_t s[] = {6};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value lab = kiln_input(g, "labels", KILN_I32, 1, s);
    kiln_value y = kiln_exp(g, x);              /* kernel 0 */
    kiln_value z = kiln_cast(g, lab, KILN_F32); /* kernel 1: replaced by the checking kernel */
    cr_assert_geq(y, 0);
    cr_assert_geq(z, 0, "%s", kiln_graph_error(g));
    tplan t;
    tp_build(&t, g, "eval_step");
    cr_assert_eq(t.entry.nkernels, 2);
    kiln_kernel_free(t.k[1]);
    t.k[1] = check_kernel(g, lab, z, 6);
    tp_compile(&t);
    cr_expect_not_null(
        strstr(t.src,
               "if (!((v0 >= 0) && (v0 < 10))) return 1; /* cast: a label is outside [0, 10) */"),
        "%s", t.src);
    cr_expect_not_null(strstr(t.src, "return kiln_fail(1, rc);"), "%s", t.src);

    int32_t *lv = tp_addr(&t, lab);
    int32_t good[] = {0, 1, 2, 9, 3, 4};
    memcpy(lv, good, sizeof good);
    cr_expect_eq(tp_run(&t), 0);
    float *zv = tp_addr(&t, z);
    cr_expect_eq(zv[3], 9.0f);

    lv[4] = 10;
    int rc = tp_run(&t);
    cr_expect_eq(rc, 1 * 8 + 1);
    char msg[256];
    kiln_plan_error_message(&t.entry, rc, msg, sizeof msg);
    cr_expect_str_eq(msg, "kernel k3_labels (cast at model.kiln:9:8): a label is outside [0, 10)");

    lv[4] = 7;
    rc = tp_run(&t);
    cr_expect_eq(rc, 1 * 8 + 2);
    kiln_plan_error_message(&t.entry, rc, msg, sizeof msg);
    cr_expect_str_eq(msg, "kernel k3_labels (cast at model.kiln:9:8): seven is not allowed");

    lv[4] = -1;
    cr_expect_eq(tp_run(&t), 9);

    /* codes that are no check's */
    kiln_plan_error_message(&t.entry, 1, msg, sizeof msg); /* kernel 0 has no checks */
    cr_expect_not_null(strstr(msg, "unknown failure code 1"), "%s", msg);
    kiln_plan_error_message(&t.entry, 8 * 5 + 1, msg, sizeof msg);
    cr_expect_not_null(strstr(msg, "unknown failure code"), "%s", msg);
    kiln_plan_error_message(&t.entry, 9, msg, 8); /* truncated, still terminated */
    cr_expect_eq(strlen(msg), 7);
    tp_free(&t);
    kiln_graph_free(g);
}

/* cross_entropy's lowering checks its labels: an out-of-range label stops
 * the entry with the loss kernel's code. */
Test(emit_c, cross_entropy_label_check)
{
    kiln_graph *g = kiln_graph_new("ce");
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "model.kiln"), 4, 2};
    int64_t xs[] = {3, 5}, ys[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value loss = kiln_cross_entropy(g, x, y);
    cr_assert_geq(loss, 0, "%s", kiln_graph_error(g));
    tplan t;
    tp_build(&t, g, "eval_step");
    tp_compile(&t);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    double xv[15], yv[] = {0, 4, 2};
    fill(xv, 15, -2, 2, 10);
    set_leaf(&t, it, x, xv);
    set_leaf(&t, it, y, yv);
    cr_assert_eq(kiln_interp_run(it), KILN_OK);
    cr_assert_eq(tp_run(&t), 0);
    expect_matches(&t, it, 1e-5, 1e-6);
    ((int32_t *)tp_addr(&t, y))[1] = 5;
    int rc = tp_run(&t);
    cr_assert_gt(rc, 0);
    char msg[256];
    kiln_plan_error_message(&t.entry, rc, msg, sizeof msg);
    cr_expect_not_null(strstr(msg, "(cross_entropy at model.kiln:4:2)"), "%s", msg);
    kiln_interp_free(it);
    tp_free(&t);
    kiln_graph_free(g);
}

/* ---- the translation unit ---- */

/* Kernels the same in two entries are written once; a name taken by
 * different code is renamed after its entry. Both entries run. */
Test(emit_c, entries_share_and_rename_kernels)
{
    int64_t s1[] = {4}, s2[] = {3};
    kiln_graph *g1 = kiln_graph_new("one"), *g2 = kiln_graph_new("two");
    kiln_value x1 = kiln_input(g1, "x", KILN_F32, 1, s1);
    kiln_value y1 = kiln_exp(g1, x1);
    kiln_value x2 = kiln_input(g2, "x", KILN_F32, 1, s2); /* same node ids, other shape */
    kiln_value y2 = kiln_exp(g2, x2);
    cr_assert_geq(y1, 0);
    cr_assert_geq(y2, 0);
    tplan a, b, c;
    tp_build(&a, g1, "forward");
    tp_build(&b, g1, "eval_step");  /* identical kernels */
    tp_build(&c, g2, "train_step"); /* a k1_exp of another shape */
    kiln_plan_entry es[3] = {a.entry, b.entry, c.entry};
    kiln_plan plan = {.entries = es, .nentries = 3, .a_bytes = 128};
    char *src = kiln_emit_c_source(&plan);
    cr_assert_not_null(src);
    cr_expect_eq(count_substr(src, "static int k1_exp("), 1, "%s", src);
    cr_expect_eq(count_substr(src, "static int train_step_k1_exp("), 1, "%s", src);
    cr_expect_eq(count_substr(src, "    k1_exp((float *)(A + 64), (const float *)(A + 0));"), 2,
                 "%s", src);
    cr_expect_eq(count_substr(src, "train_step_k1_exp((float *)(A + 64), (const float *)(A + 0));"),
                 1, "%s", src);
    char *again = kiln_emit_c_source(&plan);
    cr_assert_not_null(again);
    cr_expect_str_eq(src, again, "the same plan gives the same bytes");
    free(again);

    kiln_cc_options o = {.cache_dir = cache};
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    cr_assert_eq(kiln_cc_load(src, &o, &so, &cached, &secs, &err), KILN_OK, "%s\n%s", err, src);
    const char *names[] = {"kiln_forward", "kiln_eval_step", "kiln_train_step"};
    for (int e = 0; e < 3; e++) {
        kiln_entry_fn fn = (kiln_entry_fn)kiln_so_sym(so, names[e]);
        cr_assert_not_null(fn, "%s", names[e]);
        float mem[32] = {0};
        for (int i = 0; i < 4; i++)
            mem[i] = 0.5f * (float)i;
        kiln_rt rt = kiln_pool_rt(NULL);
        cr_expect_eq(fn(NULL, NULL, (char *)mem, &rt), 0);
        int n = e == 2 ? 3 : 4;
        for (int i = 0; i < n; i++)
            cr_expect_float_eq(mem[16 + i], expf(0.5f * (float)i), 1e-6);
        if (e == 2) cr_expect_eq(mem[16 + 3], 0.0f, "the [3] kernel stops at 3");
    }
    kiln_so_close(so);
    free(src);
    tp_free(&a);
    tp_free(&b);
    tp_free(&c);
    kiln_graph_free(g1);
    kiln_graph_free(g2);
}

/* An entry without kernels, and a plan without entries, still compile. */
Test(emit_c, empty_entries)
{
    kiln_graph *g = kiln_graph_new("empty");
    int64_t s[] = {2};
    cr_assert_geq(kiln_input(g, "x", KILN_F32, 1, s), 0);
    tplan t;
    tp_build(&t, g, "forward");
    tp_compile(&t);
    cr_expect_eq(tp_run(&t), 0);
    tp_free(&t);
    kiln_graph_free(g);
    kiln_plan none = {0};
    char *src = kiln_emit_c_source(&none);
    cr_assert_not_null(src);
    cr_expect_not_null(strstr(src, "#include <math.h>"));
    free(src);
    cr_expect_null(kiln_emit_c_source(NULL));
}

/* The golden source of a tiny graph: out = relu(x + b), x: f32[2,3] input,
 * b: f32[3] parameter. Update on purpose when the emitter's output changes. */
Test(emit_c, golden_source)
{
    kiln_graph *g = kiln_graph_new("tiny");
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "tiny.kiln"), 3, 9};
    int64_t xs[] = {2, 3}, bs[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value b = kiln_param(g, "b", KILN_F32, 1, bs, KILN_INIT_ZEROS, 0);
    kiln_value h = kiln_add(g, x, b);
    kiln_value out = kiln_relu(g, h);
    cr_assert_geq(out, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_node_set_name(g, h, "h"), KILN_OK);
    tplan t;
    tp_build(&t, g, "forward");
    char *src = kiln_emit_c_source(&t.plan);
    cr_assert_not_null(src);
    static const char *const golden[] = {
        "#include <math.h>\n#include <stdint.h>\n\n",
        "/* kernel k2_add: add(f32[2,3], f32[3]) -> f32[2,3]  [tiny.kiln:3:9] */\n"
        "static int k2_add(\n"
        "    float *restrict b0 /* f32[2,3] %2 h */,\n"
        "    const float *restrict b1 /* f32[2,3] %0 x */,\n"
        "    const float *restrict b2 /* f32[3] %1 b */)\n"
        "{\n"
        "    for (int64_t i0 = 0; i0 < 2; i0++) {\n"
        "        for (int64_t i1 = 0; i1 < 3; i1++) {\n"
        "            b0[(i0 * 3) + i1] = b1[(i0 * 3) + i1] + b2[i1];\n"
        "        }\n"
        "    }\n"
        "    return 0;\n"
        "}\n\n",
        "/* kernel k3_relu: relu(f32[2,3]) -> f32[2,3]  [tiny.kiln:3:9] */\n"
        "static int k3_relu(\n"
        "    float *restrict b0 /* f32[2,3] %3 */,\n"
        "    const float *restrict b1 /* f32[2,3] %2 h */)\n"
        "{\n"
        "    for (int64_t i0 = 0; i0 < 2; i0++) {\n"
        "        for (int64_t i1 = 0; i1 < 3; i1++) {\n"
        "            const float v0 = b1[(i0 * 3) + i1];\n"
        "            b0[(i0 * 3) + i1] = (v0 > 0.0f) ? v0 : 0.0f;\n"
        "        }\n"
        "    }\n"
        "    return 0;\n"
        "}\n\n",
        "/* entry forward: 2 kernels */\n"
        "int kiln_forward(char *restrict P, char *restrict S, char *restrict A,\n"
        "                 const kiln_rt *rt)\n"
        "{\n"
        "    /* 0: add(f32[2,3], f32[3]) -> f32[2,3]  [tiny.kiln:3:9] */\n"
        "    k2_add((float *)(A + 64), (const float *)(A + 0), (const float *)(P + 0));\n"
        "    /* 1: relu(f32[2,3]) -> f32[2,3]  [tiny.kiln:3:9] */\n"
        "    k3_relu((float *)(A + 128), (const float *)(A + 64));\n"
        "    return 0;\n"
        "}\n",
    };
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++)
        cr_expect_not_null(strstr(src, golden[i]), "missing:\n%s\n--- in ---\n%s", golden[i], src);
    /* and it runs */
    tp_compile(&t);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    double xv[] = {-1, 2, -3, 4, -5, 6}, bv[] = {0.5, -0.5, 4};
    set_leaf(&t, it, x, xv);
    set_leaf(&t, it, b, bv);
    cr_assert_eq(kiln_interp_run(it), KILN_OK);
    cr_assert_eq(tp_run(&t), 0);
    expect_matches(&t, it, 1e-5, 1e-6);
    kiln_interp_free(it);
    free(src);
    tp_free(&t);
    kiln_graph_free(g);
}

/* A plan that is inconsistent (a buffer without a place) gives source that
 * does not compile, and the compiler's message says what is wrong. */
Test(emit_c, missing_place_is_an_error_line)
{
    kiln_graph *g = kiln_graph_new("noplace");
    int64_t s[] = {4};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    cr_assert_geq(kiln_exp(g, x), 0);
    tplan t;
    tp_build(&t, g, "forward");
    t.place[x].space = KILN_SPACE_NONE;
    char *src = kiln_emit_c_source(&t.plan);
    cr_assert_not_null(src);
    cr_expect_not_null(strstr(src, "#error \"kiln: entry forward, kernel k1_exp: a buffer has no "
                                   "place\""),
                       "%s", src);
    kiln_cc_options o = {.cache_dir = cache};
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    cr_expect_neq(kiln_cc_load(src, &o, &so, &cached, &secs, &err), KILN_OK);
    cr_expect(err && strstr(err, "a buffer has no place"), "%s", err ? err : "");
    free(err);
    free(src);
    tp_free(&t);
    kiln_graph_free(g);
}
