/* tests/test_emit_vec.c — explicit vector loops (codegen/emit_vec.c) and the
 * compile option that picks the target (kiln_compile_options.target).
 *
 * One forward graph holds elementwise chains at sizes 1 .. 40009 (below,
 * at and around every vector width, and one large enough to be split
 * across threads, so chunks end in scalar remainders): relu as a select,
 * min/max, where, bool casts, exp, tanh, sigmoid, gelu (erf), log and pow,
 * on inputs with NaN, infinities and signed zeros, plus 2-D cases where the
 * vector loop reads a row broadcast along it and a column constant along
 * it. Compiled for the host, for AVX2 (on an x86 host that has it), for
 * NEON's 4 lanes (the graph has no GEMM, so GCC's vector extensions compile
 * it anywhere) and for the scalar target, with 1 and 2 threads: every
 * vector build gives the scalar build's bits exactly (any NaN for a NaN),
 * and all agree with the reference interpreter (exactly where the ops are
 * exact in f32, to a few ulps for the polynomial transcendentals). The
 * sources: the host's has the vector main loops, the scalar target's none.
 * Hand-built kernels: loops the emitter cannot prove equivalent (strided
 * reads, a store read by the next iteration, a carried local, a select arm
 * loading at an index it cannot bound, integers) stay scalar, the others
 * (a bounded arm, in place) do not, with the scalar build's results. An
 * AVX2 build of an MLP (GEMMs too) compiles and trains on an AVX-512 host;
 * a bad target name is an error naming the valid ones. */
#include <criterion/criterion.h>

#include "codegen/codegen.h"
#include "codegen/target.h"
#include "ir/kernel.h"
#include "kiln/kiln.h"
#include "runtime/threadpool.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char cache_dir[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache_dir, sizeof cache_dir, "test_emit_vec");
}

static void remove_cache(void)
{
    if (cache_dir[0]) kiln_test_rmtree(cache_dir);
    cache_dir[0] = 0;
}

TestSuite(emit_vec, .init = make_cache, .fini = remove_cache);

static const int64_t sizes[] = {1, 7, 15, 16, 17, 31, 32, 33, 100, 1000, 40009};
#define NSIZES (int)(sizeof sizes / sizeof sizes[0])
static const int64_t cols[] = {15, 16, 17, 33}; /* 2-D cases: [3, m] */
#define NCOLS (int)(sizeof cols / sizeof cols[0])

/* outputs per size; the first NEXACT are exact f32 operations */
static const char *const onames[] = {"relu", "minmax", "where", "cast",
                                     "exp",  "tanh",   "sig",   "logpow"};
#define NOUT (int)(sizeof onames / sizeof onames[0])
#define NEXACT 4

static kiln_value F(kiln_graph *g, double v)
{
    return kiln_scalar(g, v, KILN_F32);
}

static void out(kiln_graph *g, kiln_value v, const char *fmt, long long n)
{
    char name[64];
    snprintf(name, sizeof name, fmt, n);
    cr_assert_eq(kiln_set_output(g, v, name), KILN_OK, "%s: %s", name, kiln_graph_error(g));
}

static kiln_graph *chains(void)
{
    kiln_graph *g = kiln_graph_new("chains");
    char xn[32], yn[32];
    for (int k = 0; k < NSIZES; k++) {
        long long n = (long long)sizes[k];
        snprintf(xn, sizeof xn, "x%lld", n);
        snprintf(yn, sizeof yn, "y%lld", n);
        kiln_value x = kiln_input(g, xn, KILN_F32, 1, &sizes[k]);
        kiln_value y = kiln_input(g, yn, KILN_F32, 1, &sizes[k]);
        kiln_value mx = kiln_maximum(g, x, y), mn = kiln_minimum(g, x, y);
        out(g, kiln_mul(g, kiln_relu(g, kiln_add(g, kiln_mul(g, x, y), F(g, 0.5))), F(g, 2)),
            "relu%lld", n);
        out(g, kiln_sub(g, mx, kiln_mul(g, mn, F(g, 0.25))), "minmax%lld", n);
        out(g, kiln_where(g, kiln_gt(g, x, y), kiln_sqrt(g, x), kiln_neg(g, y)), "where%lld", n);
        kiln_value c1 = kiln_cast(g, kiln_le(g, x, y), KILN_F32);
        kiln_value c2 = kiln_cast(g, kiln_cast(g, x, KILN_BOOL), KILN_F32);
        out(g, kiln_add(g, c1, kiln_mul(g, c2, F(g, 2))), "cast%lld", n);
        out(g, kiln_div(g, kiln_exp(g, x), y), "exp%lld", n);
        out(g, kiln_sub(g, kiln_tanh(g, x), kiln_mul(g, mx, F(g, 0.125))), "tanh%lld", n);
        out(g, kiln_mul(g, kiln_sigmoid(g, x), kiln_gelu(g, y)), "sig%lld", n);
        out(g, kiln_add(g, kiln_log(g, y), kiln_pow(g, x, 3.0)), "logpow%lld", n);
    }
    for (int k = 0; k < NCOLS; k++) {
        long long m = (long long)cols[k];
        int64_t s2[] = {3, cols[k]}, sr[] = {cols[k]}, sc[] = {3, 1};
        snprintf(xn, sizeof xn, "a%lld", m);
        kiln_value a = kiln_input(g, xn, KILN_F32, 2, s2);
        snprintf(xn, sizeof xn, "r%lld", m);
        kiln_value r = kiln_input(g, xn, KILN_F32, 1, sr);
        snprintf(xn, sizeof xn, "c%lld", m);
        kiln_value c = kiln_input(g, xn, KILN_F32, 2, sc);
        out(g, kiln_maximum(g, kiln_add(g, kiln_mul(g, a, r), c), kiln_neg(g, c)), "bc%lld", m);
    }
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

/* Inputs with NaN, infinities, signed zeros, large and ordinary values;
 * which: the input's name's first letter - 'a' (x and y differ). */
static float value(int64_t i, int which)
{
    switch ((i + 7 * which) % 23) {
    case 3:
        return NAN;
    case 5:
        return INFINITY;
    case 8:
        return -INFINITY;
    case 11:
        return 0.0f;
    case 13:
        return -0.0f;
    case 17:
        return which & 1 ? 100.0f : -100.0f;
    default:
        return (float)(6.0 * sin(0.37 * (double)i + 1.1 * which));
    }
}

static void fill(kiln_program *p)
{
    int n = kiln_program_num_tensors(p);
    for (int t = 0; t < n; t++) {
        kiln_tensor_info info;
        cr_assert_eq(kiln_program_tensor(p, t, &info), KILN_OK);
        if (info.role != KILN_ROLE_INPUT) continue;
        float *d = kiln_program_data(p, info.name, NULL);
        cr_assert_not_null(d);
        int which = info.name[0] - 'a';
        for (size_t i = 0; i < info.bytes / sizeof(float); i++)
            d[i] = value((int64_t)i, which);
    }
}

static kiln_program *build_run(const kiln_graph *g, kiln_backend be, const char *target,
                               int threads)
{
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.cache_dir = cache_dir;
    o.target = target;
    o.threads = threads;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "target %s: %s", target ? target : "host", err ? err : "");
    fill(p);
    cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "%s", kiln_program_error(p));
    return p;
}

/* Every output of b has a's bits (a NaN is any NaN: where two NaNs meet,
 * which one an operation returns is the compiler's choice, in scalar code
 * too, since it may swap the operands of + and *). */
static void same_bits(kiln_program *a, kiln_program *b, const char *what)
{
    int n = kiln_program_num_tensors(a);
    for (int t = 0; t < n; t++) {
        kiln_tensor_info info;
        cr_assert_eq(kiln_program_tensor(a, t, &info), KILN_OK);
        if (info.role != KILN_ROLE_OUTPUT) continue;
        const float *x = kiln_program_data(a, info.name, NULL),
                    *y = kiln_program_data(b, info.name, NULL);
        cr_assert(x && y);
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < info.bytes / sizeof(float); i++)
            if (memcmp(&x[i], &y[i], sizeof x[i]) && !(isnan(x[i]) && isnan(y[i])) && !bad++)
                first = i;
        cr_expect_eq(bad, 0,
                     "%s: %s: %zu elements differ from the scalar build, first [%zu]: %a vs %a",
                     what, info.name, bad, first, (double)x[first], (double)y[first]);
    }
}

static bool agree(float r, float c, bool exact)
{
    if (isnan(r) || isnan(c)) return isnan(r) && isnan(c);
    if (r == c) return true;
    if (exact || isinf(r) || isinf(c)) return false;
    return fabs((double)r - (double)c) <= 1e-6 + 2e-6 * fmax(fabs((double)r), fabs((double)c));
}

/* The C program computes what the reference computes. */
static void agrees_with_ref(kiln_program *ref, kiln_program *c, const char *what)
{
    char name[64];
    for (int k = 0; k < NSIZES; k++)
        for (int o = 0; o < NOUT; o++) {
            snprintf(name, sizeof name, "%s%lld", onames[o], (long long)sizes[k]);
            const float *r = kiln_program_data(ref, name, NULL),
                        *x = kiln_program_data(c, name, NULL);
            cr_assert(r && x, "%s", name);
            for (int64_t i = 0; i < sizes[k]; i++)
                if (!agree(r[i], x[i], o < NEXACT)) {
                    cr_expect_fail("%s: %s[%lld] = %.9g, the reference %.9g (inputs %g, %g)", what,
                                   name, (long long)i, (double)x[i], (double)r[i],
                                   (double)value(i, 'x' - 'a'), (double)value(i, 'y' - 'a'));
                    break;
                }
        }
    for (int k = 0; k < NCOLS; k++) {
        snprintf(name, sizeof name, "bc%lld", (long long)cols[k]);
        const float *r = kiln_program_data(ref, name, NULL), *x = kiln_program_data(c, name, NULL);
        cr_assert(r && x, "%s", name);
        for (int64_t i = 0; i < 3 * cols[k]; i++)
            if (!agree(r[i], x[i], true)) {
                cr_expect_fail("%s: %s[%lld] = %.9g, the reference %.9g", what, name, (long long)i,
                               (double)x[i], (double)r[i]);
                break;
            }
    }
}

static bool host_has_avx2(void)
{
    kiln_cg_target t;
    kiln_target_host(&t);
    return t.isa == KILN_ISA_AVX2 || t.isa == KILN_ISA_AVX512;
}

Test(emit_vec, chains_match_scalar_and_reference, .timeout = 300)
{
    kiln_graph *g = chains();
    kiln_program *ref = build_run(g, KILN_BACKEND_REF, NULL, 1);
    kiln_program *scalar = build_run(g, KILN_BACKEND_C, "scalar", 1);
    agrees_with_ref(ref, scalar, "scalar");
    struct {
        const char *target;
        int threads;
    } runs[] = {{NULL, 1}, {NULL, 2}, {"avx2", 2}, {"neon", 1}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        if (runs[i].target && !strcmp(runs[i].target, "avx2") && !host_has_avx2()) continue;
        kiln_program *p = build_run(g, KILN_BACKEND_C, runs[i].target, runs[i].threads);
        char what[64];
        snprintf(what, sizeof what, "%s, %d thread%s", runs[i].target ? runs[i].target : "host",
                 runs[i].threads, runs[i].threads == 1 ? "" : "s");
        same_bits(scalar, p, what);
        agrees_with_ref(ref, p, what);
        kiln_program_free(p);
    }
    kiln_program_free(scalar);
    kiln_program_free(ref);
    kiln_graph_free(g);
}

static char *emit(const kiln_graph *g, const char *target)
{
    kiln_compile_options o = kiln_compile_defaults();
    o.target = target;
    char *err = NULL, *src = kiln_emit_c(g, &o, &err);
    cr_assert_not_null(src, "target %s: %s", target ? target : "host", err ? err : "");
    return src;
}

static int count(const char *s, const char *what)
{
    int n = 0;
    for (; (s = strstr(s, what)); s += strlen(what))
        n++;
    return n;
}

Test(emit_vec, source_per_target)
{
    kiln_graph *g = kiln_graph_new("src");
    int64_t s[] = {100};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s), y = kiln_input(g, "y", KILN_F32, 1, s);
    cr_assert_eq(kiln_set_output(g, kiln_relu(g, kiln_mul(g, kiln_exp(g, x), y)), "out"), KILN_OK);
    kiln_cg_target host;
    kiln_target_host(&host);
    char *src = emit(g, NULL), *nat = emit(g, "native");
    cr_expect_str_eq(src, nat, "no target and \"native\" are the host");
    char lanes[64];
    if (host.isa != KILN_ISA_SCALAR) {
        snprintf(lanes, sizeof lanes, "%d lanes (%s)", host.vec_floats, kiln_isa_name(host.isa));
        cr_expect_eq(count(src, lanes), 1, "the host's source has one vector loop:\n%s", src);
        snprintf(lanes, sizeof lanes, "i0 < %d; i0 += %d)", 100 / host.vec_floats * host.vec_floats,
                 host.vec_floats);
        cr_expect(strstr(src, lanes), "the main loop covers whole vectors:\n%s", src);
        cr_expect(strstr(src, "the rest, scalar"), "100 leaves a remainder");
    }
    free(src);
    free(nat);
    src = emit(g, "scalar");
    cr_expect_eq(count(src, "kiln_v"), 0, "no vector code for the scalar target:\n%s", src);
    cr_expect(strstr(src, "#pragma omp simd"), "the scalar loop as before");
    free(src);
    src = emit(g, "avx2");
    cr_expect(strstr(src, "typedef float kiln_v8sf __attribute__((vector_size(32)));"), "%s", src);
    cr_expect_eq(count(src, "8 lanes (avx2)"), 1);
    cr_expect(strstr(src, "i0 < 96; i0 += 8)"), "%s", src);
    cr_expect(strstr(src, "for (int64_t i0 = 96; i0 < 100; i0++)"), "%s", src);
    free(src);
    src = emit(g, "avx512");
    cr_expect_eq(count(src, "16 lanes (avx512)"), 1);
    free(src);
    src = emit(g, "neon");
    cr_expect_eq(count(src, "4 lanes (neon)"), 1);
    cr_expect(!strstr(src, "the rest, scalar"), "100 is whole NEON vectors:\n%s", src);
    free(src);
    kiln_graph_free(g);
}

/* ---- hand-built kernels: what the emitter refuses, and what it takes ----
 * One kernel over x f32[N] (input), ix i32[N] (input) and o f32[N] (the
 * output it writes, also read where a case says), placed in A, emitted for
 * the host and for the scalar target, compiled and run. */

#define HN 100 /* N */

typedef struct hk {
    kiln_graph *g;
    kiln_value x, ix, o;
    kiln_place place[8];
} hk;

typedef void (*case_fn)(kiln_kb *kb, int32_t x, int32_t ix, int32_t o);

#define KB_LOOP(n) kiln_kx_var(kb, kiln_kb_loop(kb, n))
#define LD(b, i) kiln_kx_load(kb, b, i)
#define I(v) kiln_kx_int(kb, v)
#define FL(v) kiln_kx_float(kb, v, KILN_F32)
#define BIN(op, a, b) kiln_kx_bin(kb, op, a, b)

/* o[i] = x[i] * 2: vector */
static void c_plain(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)ix;
    int32_t i = KB_LOOP(HN);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, o, i, BIN(KX_MUL, LD(x, i), FL(2)));
    kiln_kb_end(kb);
}
/* o[i] = x[2i], i < N/2: strided, scalar */
static void c_strided(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)ix;
    int32_t i = KB_LOOP(HN / 2);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, o, i, LD(x, BIN(KX_MUL, i, I(2))));
    kiln_kb_end(kb);
}
/* o[i+1] = o[i] + x[i]: each iteration reads the last one's store, scalar */
static void c_carried_mem(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)ix;
    int32_t i = KB_LOOP(HN - 1);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, o, BIN(KX_ADD, i, I(1)), BIN(KX_ADD, LD(o, i), LD(x, i)));
    kiln_kb_end(kb);
}
/* t = t + x[i]; o[i] = t: a local carried across iterations, scalar */
static void c_carried_local(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)ix;
    int32_t t = kiln_kb_local(kb, KILN_F32);
    kiln_kb_set(kb, t, FL(0));
    int32_t i = KB_LOOP(HN);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_set(kb, t, BIN(KX_ADD, kiln_kx_local(kb, t), LD(x, i)));
    kiln_kb_store(kb, o, i, kiln_kx_local(kb, t));
    kiln_kb_end(kb);
}
/* o[i] = x[i] > 0 ? x[ix[0]] : 0: a select arm loads where the emitter
 * cannot bound the index, scalar */
static void c_unbounded_arm(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    int32_t i = KB_LOOP(HN);
    kiln_kb_hint(kb, 1, 0);
    int32_t at = kiln_kx_cast(kb, LD(ix, I(0)), KILN_I64);
    kiln_kb_store(kb, o, i, kiln_kx_select(kb, BIN(KX_GT, LD(x, i), FL(0)), LD(x, at), FL(0)));
    kiln_kb_end(kb);
}
/* o[i] = x[i] > 0 ? x[N-1] : -x[i]: the arm's index is bounded, vector */
static void c_bounded_arm(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)ix;
    int32_t i = KB_LOOP(HN);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, o, i,
                  kiln_kx_select(kb, BIN(KX_GT, LD(x, i), FL(0)), LD(x, I(HN - 1)),
                                 kiln_kx_un(kb, KX_NEG, LD(x, i))));
    kiln_kb_end(kb);
}
/* o[i] = o[i] * 0.5 + x[i]: in place at one element, vector */
static void c_in_place(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)ix;
    int32_t i = KB_LOOP(HN);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, o, i, BIN(KX_ADD, BIN(KX_MUL, LD(o, i), FL(0.5)), LD(x, i)));
    kiln_kb_end(kb);
}
/* o[i] = (float)ix[i]: an integer value, scalar */
static void c_integer(kiln_kb *kb, int32_t x, int32_t ix, int32_t o)
{
    (void)x;
    int32_t i = KB_LOOP(HN);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, o, i, kiln_kx_cast(kb, BIN(KX_MUL, LD(ix, i), LD(ix, i)), KILN_F32));
    kiln_kb_end(kb);
}

/* The kernel of case f, emitted for target (NULL: the host), compiled and
 * run on fresh inputs; o's values into out. Returns the source. */
static char *run_case(case_fn f, const char *target, float *out)
{
    hk h = {.g = kiln_graph_new("hand")};
    int64_t n[] = {HN};
    h.x = kiln_input(h.g, "x", KILN_F32, 1, n);
    h.ix = kiln_input(h.g, "ix", KILN_I32, 1, n);
    h.o = kiln_exp(h.g, h.x);
    cr_assert(h.o >= 0, "%s", kiln_graph_error(h.g));
    h.place[h.x] = (kiln_place){KILN_SPACE_A, 0};
    h.place[h.ix] = (kiln_place){KILN_SPACE_A, 512};
    h.place[h.o] = (kiln_place){KILN_SPACE_A, 1024};
    kiln_kb *kb = kiln_kb_new(h.g, h.o, "k_hand", NULL);
    cr_assert_not_null(kb);
    f(kb, kiln_kb_buf(kb, h.x), kiln_kb_buf(kb, h.ix), kiln_kb_buf(kb, h.o));
    kiln_kernel *k = NULL;
    char err[256] = "";
    cr_assert_eq(kiln_kb_finish(kb, &k, err, sizeof err), KILN_OK, "%s", err);
    kiln_plan_entry e = {.name = "fwd", .g = h.g, .place = h.place, .kernels = &k, .nkernels = 1};
    kiln_cg_target t;
    kiln_plan plan = {.entries = &e, .nentries = 1, .a_bytes = 1536};
    if (target) {
        cr_assert_eq(kiln_target_parse(target, &t), KILN_OK);
        plan.target = &t;
    }
    char *src = kiln_emit_c_source(&plan);
    cr_assert_not_null(src);
    kiln_cc_options o = {.cache_dir = cache_dir};
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *cerr = NULL;
    cr_assert_eq(kiln_cc_load(src, &o, &so, &cached, &secs, &cerr), KILN_OK, "%s\n%s",
                 cerr ? cerr : "", src);
    kiln_entry_fn fn = (kiln_entry_fn)kiln_so_sym(so, "kiln_fwd");
    cr_assert_not_null(fn);
    float *A = aligned_alloc(64, 1536);
    cr_assert_not_null(A);
    for (int i = 0; i < HN; i++) {
        A[i] = value(i, 0);
        ((int32_t *)A)[128 + i] = (i * 7) % HN;
        A[256 + i] = value(i, 1);
    }
    kiln_rt rt = kiln_pool_rt(NULL);
    cr_assert_eq(fn(NULL, NULL, (char *)A, &rt), 0);
    memcpy(out, A + 256, HN * sizeof *out);
    free(A);
    kiln_so_close(so);
    kiln_kernel_free(k);
    kiln_graph_free(h.g);
    return src;
}

Test(emit_vec, what_the_emitter_refuses_and_takes, .timeout = 120)
{
    static const struct {
        const char *name;
        case_fn f;
        bool vector;
    } cases[] = {{"plain", c_plain, true},
                 {"strided", c_strided, false},
                 {"carried_mem", c_carried_mem, false},
                 {"carried_local", c_carried_local, false},
                 {"unbounded_arm", c_unbounded_arm, false},
                 {"bounded_arm", c_bounded_arm, true},
                 {"in_place", c_in_place, true},
                 {"integer", c_integer, false}};
    kiln_cg_target host;
    kiln_target_host(&host);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float vec[HN], sc[HN];
        char *src = run_case(cases[c].f, NULL, vec);
        bool has = strstr(src, " lanes (") != NULL;
        cr_expect_eq(has, cases[c].vector && host.isa != KILN_ISA_SCALAR, "%s: %s vector loop:\n%s",
                     cases[c].name, has ? "a" : "no", src);
        free(src);
        src = run_case(cases[c].f, "scalar", sc);
        cr_expect_null(strstr(src, " lanes ("), "%s", cases[c].name);
        free(src);
        cr_expect(!memcmp(vec, sc, sizeof vec), "%s: the host's build differs from the scalar one",
                  cases[c].name);
        if (cases[c].f == c_carried_mem) {
            /* the running sums, as sequential C computes them (a local summed
             * under the vector hint may be reassociated: no such check) */
            float want[HN];
            for (int i = 0; i < HN; i++)
                want[i] = value(i, 1);
            for (int i = 0; i + 1 < HN; i++)
                want[i + 1] = want[i] + value(i, 0);
            cr_expect(!memcmp(vec, want, sizeof vec), "%s: not the sequential sums", cases[c].name);
        }
    }
}

/* The MLP (GEMMs with fused tails, elementwise optimizer updates) compiled
 * for AVX2 on an x86 host that has it: its intrinsics and vector loops
 * build, and a training step matches the host build's loss closely. */
Test(emit_vec, avx2_program_builds_and_trains, .timeout = 120)
{
    if (!host_has_avx2()) cr_skip_test("the host has no AVX2");
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    cr_assert_not_null(g);
    char *src = emit(g, "avx2");
    cr_expect(strstr(src, "target avx2"), "the GEMM prelude for AVX2");
    cr_expect_eq(count(src, "zmm") + count(src, "_mm512"), 0, "no AVX-512 in an AVX2 build");
    free(src);
    float loss[2];
    for (int k = 0; k < 2; k++) {
        kiln_compile_options o = kiln_compile_defaults();
        o.cache_dir = cache_dir;
        o.target = k ? "avx2" : NULL;
        kiln_program *p = NULL;
        char *err = NULL;
        cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
        cr_assert_eq(kiln_program_init_params(p, 3), KILN_OK);
        float *x = kiln_program_data(p, "x", NULL);
        int32_t *y = kiln_program_data(p, "y", NULL);
        for (int e = 0; e < 20; e++)
            x[e] = (float)sin(0.3 * e);
        for (int e = 0; e < 4; e++)
            y[e] = e % 3;
        cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
        cr_assert_eq(kiln_program_get(p, "loss", &loss[k], sizeof loss[k]), KILN_OK);
        kiln_program_free(p);
    }
    cr_expect(fabsf(loss[0] - loss[1]) <= 1e-5f * fabsf(loss[0]), "loss %.9g (host), %.9g (avx2)",
              (double)loss[0], (double)loss[1]);
    kiln_graph_free(g);
}

Test(emit_vec, bad_target_is_an_error)
{
    kiln_graph *g = kiln_graph_new("bad");
    int64_t s[] = {4};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    cr_assert_eq(kiln_set_output(g, kiln_exp(g, x), "out"), KILN_OK);
    kiln_compile_options o = kiln_compile_defaults();
    o.target = "avx3";
    char *err = NULL;
    cr_expect_null(kiln_emit_c(g, &o, &err));
    cr_assert_not_null(err);
    cr_expect(strstr(err, "unknown target 'avx3'") && strstr(err, "avx512, avx2, neon, scalar"),
              "%s", err);
    free(err);
    err = NULL;
    kiln_program *p = NULL;
    cr_expect_eq(kiln_compile(g, &o, &p, &err), KILN_ERR_INVALID);
    cr_expect_null(p);
    cr_expect(err && strstr(err, "unknown target 'avx3'"), "%s", err ? err : "");
    free(err);
    kiln_graph_free(g);
}
