/* tests/test_vmath.c — kiln's math functions for generated code
 * (codegen/vmath.h, codegen/vmath_src.inc).
 *
 * The functions exist only as C source text, so the test compiles that text
 * the way generated code is compiled (kiln_cc_load: -O3 -march=native
 * -std=c11 -fno-math-errno -fopenmp-simd), with, per function, an exported
 * scalar wrapper t_s_<fn> and a `#pragma omp simd` loop t_v_<fn> over an
 * array, and checks, against libm's double-precision functions:
 *
 *   - the error in ulps of the exact result, on a sparse sweep of all 2^32
 *     bit patterns (every 4093rd) and dense sweeps of the ranges that
 *     matter (near zeros, thresholds where the method changes, overflow,
 *     underflow and saturation), against a bound per function (all <= 4);
 *   - that the vectorized loop and the scalar call agree bit for bit;
 *   - special values (signed zeros, infinities, NaN, saturation, subnormals);
 *   - monotonicity over runs of consecutive floats around every point where
 *     the method changes, and over the whole range; odd symmetry of tanh
 *     and erf;
 *   - with gcc: that each loop vectorizes (-fopt-info-vec-optimized);
 *   - that no input reaches undefined behaviour (the text compiled with
 *     -fsanitize=undefined,float-cast-overflow).
 *
 * Needs a C compiler ($CC, else cc) at run time, as tests/test_cc.c does.
 * Each test uses its own temporary cache directory.
 */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"
#include "codegen/vmath.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { F_EXP, F_LOG, F_LOG1P, F_TANH, F_SIGMOID, F_ERF, NFN };

static const char *const fn_name[NFN] = {"expf", "logf", "log1pf", "tanhf", "sigmoidf", "erff"};

/* The largest error allowed, in ulps of the exact result: what each function
 * reaches over all floats (measured exhaustively) plus a margin. */
static const double max_ulp[NFN] = {1.5, 1.5, 1.5, 2.0, 3.0, 2.0};

typedef float (*scalar_fn)(float);
typedef void (*vector_fn)(const float *, float *, long);

typedef struct lib {
    kiln_so *so;
    scalar_fn s[NFN];
    vector_fn v[NFN];
} lib;

static char cache[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache, sizeof cache, "vmath");
}

static void drop_cache(void)
{
    kiln_test_rmtree(cache);
}

TestSuite(vmath, .init = make_cache, .fini = drop_cache, .timeout = 300);

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- the code under test ---- */

/* kiln_vmath_source() and the wrappers (malloc'd). */
static char *test_source(void)
{
    const char *src = kiln_vmath_source();
    size_t cap = strlen(src) + 4096;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    size_t n = (size_t)snprintf(s, cap, "%s\n/* test wrappers */\n", src);
    for (int f = 0; f < NFN; f++) {
        int w = snprintf(s + n, cap - n,
                         "float t_s_%s(float x) { return kiln_%s(x); }\n"
                         "void t_v_%s(const float *restrict x, float *restrict y, long n)\n"
                         "{\n"
                         "#pragma omp simd\n"
                         "    for (long i = 0; i < n; i++)\n"
                         "        y[i] = kiln_%s(x[i]);\n"
                         "}\n",
                         fn_name[f], fn_name[f], fn_name[f], fn_name[f]);
        cr_assert(w > 0 && (size_t)w < cap - n);
        n += (size_t)w;
    }
    return s;
}

/* The compiler generated code gets: $CC, else cc. */
static const char *compiler(void)
{
    const char *cc = getenv("CC");
    return cc && *cc ? cc : "cc";
}

/* Compiles and loads the test source with `cc` (NULL: kiln_cc_load's
 * default); the test fails when that fails. */
static void load(lib *L, const char *cc)
{
    char *src = test_source();
    kiln_cc_options o = {.cc = cc, .cache_dir = cache, .verbose = 0};
    int cached;
    double secs;
    char *err = NULL;
    kiln_status st = kiln_cc_load(src, &o, &L->so, &cached, &secs, &err);
    free(src);
    cr_assert_eq(st, KILN_OK, "compiling the math functions: %s", err ? err : "?");
    for (int f = 0; f < NFN; f++) {
        char name[32];
        snprintf(name, sizeof name, "t_s_%s", fn_name[f]);
        L->s[f] = (scalar_fn)kiln_so_sym(L->so, name);
        snprintf(name, sizeof name, "t_v_%s", fn_name[f]);
        L->v[f] = (vector_fn)kiln_so_sym(L->so, name);
        cr_assert(L->s[f] && L->v[f], "wrappers of %s", fn_name[f]);
    }
}

/* ---- reference and error ---- */

static double ref(int f, double x)
{
    switch (f) {
    case F_EXP:
        return exp(x);
    case F_LOG:
        return log(x);
    case F_LOG1P:
        return log1p(x);
    case F_TANH:
        return tanh(x);
    case F_SIGMOID:
        return 1.0 / (1.0 + exp(-x));
    default:
        return erf(x);
    }
}

/* |y - r| in ulps of r's binade (the spacing of floats there; 2^-149 for
 * subnormals). A correctly rounded result is within 0.5. Infinite when y is
 * NaN and r is not (or the reverse), or when exactly one of y and r rounded
 * to float is infinite. */
static double ulp_error(float y, double r)
{
    if (isnan(r) || isnan(y)) return isnan(r) && isnan(y) ? 0 : INFINITY;
    /* r rounded to float overflows at FLT_MAX + half an ulp */
    int r_inf = fabs(r) >= 0x1.ffffffp127;
    if (r_inf || isinf(y)) return r_inf && isinf(y) && (r > 0) == (y > 0) ? 0 : INFINITY;
    int e = 0;
    if (r != 0) frexp(r, &e); /* |r| in [2^(e-1), 2^e) */
    int q = e - 24 < -149 ? -149 : e - 24;
    return fabs((double)y - r) / ldexp(1.0, q);
}

typedef struct stats {
    double max; /* worst ulp error */
    float worst, got;
    long n;
} stats;

enum { CHUNK = 4096 };

static void account(int f, const float *x, const float *y, int n, stats *st)
{
    for (int i = 0; i < n; i++) {
        double e = ulp_error(y[i], ref(f, x[i]));
        if (e > st->max) {
            st->max = e;
            st->worst = x[i];
            st->got = y[i];
        }
    }
    st->n += n;
}

/* Bit patterns lo, lo + step, ... up to hi (inclusive), through the
 * vectorized loop. */
static void sweep_bits(const lib *L, int f, uint32_t lo, uint32_t hi, uint32_t step, stats *st)
{
    float x[CHUNK], y[CHUNK];
    uint64_t b = lo;
    while (b <= hi) {
        int n = 0;
        for (; n < CHUNK && b <= hi; b += step)
            x[n++] = u2f((uint32_t)b);
        L->v[f](x, y, n);
        account(f, x, y, n, st);
    }
}

/* Every step-th float between a and b (same sign; either order). */
static void sweep_range(const lib *L, int f, float a, float b, uint32_t step, stats *st)
{
    uint32_t ua = f2u(a), ub = f2u(b);
    sweep_bits(L, f, ua < ub ? ua : ub, ua < ub ? ub : ua, step, st);
}

/* The dense sweeps: {a, b, step in bit patterns}. */
typedef struct range {
    float a, b;
    uint32_t step;
} range;

#define NELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const range exp_ranges[] = {
    {-104.0f, -87.0f, 2}, /* subnormal results and underflow to 0 */
    {85.0f, 89.0f, 1},    /* overflow */
    {0x1p-8f, 1.0f, 64},  /* near 0: e^x ~ 1 + x */
    {-0x1p-8f, -1.0f, 64}, {0x1p-30f, 0x1p-8f, 1024}, {-0x1p-30f, -0x1p-8f, 1024},
    {1.0f, 85.0f, 128},    {-1.0f, -87.0f, 128},
};
static const range log_ranges[] = {
    {0.5f, 2.0f, 16},          /* around the zero at 1 */
    {0x1p-149f, 0x1p-126f, 8}, /* subnormal inputs */
    {0x1p-126f, 0x1p-100f, 256},
    {2.0f, 0x1p40f, 512},
};
static const range log1p_ranges[] = {
    {0x1p-40f, 0x1p-10f, 256}, /* near the zero at 0 */
    {-0x1p-40f, -0x1p-10f, 256}, {0x1p-10f, 4.0f, 64},        {-0x1p-10f, -0.5f, 64},
    {-0.5f, -1.0f, 8}, /* towards the pole at -1 */
    {4.0f, 0x1p30f, 512},        {0x1p-149f, 0x1p-40f, 4096}, {-0x1p-149f, -0x1p-40f, 4096},
};
static const range tanh_ranges[] = {
    {0.5f, 0.6f, 2},                              /* the switch at 0.55 */
    {-0.5f, -0.6f, 2},      {0x1p-12f, 0.5f, 64}, /* near the zero at 0 */
    {-0x1p-12f, -0.5f, 64}, {0.6f, 10.0f, 32},    /* up to saturation */
    {-0.6f, -10.0f, 32},    {0x1p-40f, 0x1p-12f, 1024},
};
static const range sigmoid_ranges[] = {
    {0x1p-10f, 20.0f, 128},     {-0x1p-10f, -20.0f, 128},
    {-20.0f, -104.0f, 16}, /* small results, subnormal, 0 */
    {0x1p-30f, 0x1p-10f, 1024}, {-0x1p-30f, -0x1p-10f, 1024},
};
static const range erf_ranges[] = {
    {0.8f, 0.95f, 2},                         /* the switch at 0.875 */
    {-0.8f, -0.95f, 2},      {3.5f, 4.5f, 2}, /* saturation */
    {0x1p-20f, 0.8f, 128},                    /* near the zero at 0 */
    {-0x1p-20f, -0.8f, 128}, {0.95f, 3.5f, 16}, {-0.95f, -3.5f, 16}, {0x1p-149f, 0x1p-20f, 4096},
};

static const struct {
    const range *r;
    int n;
} dense[NFN] = {
    {exp_ranges, NELEMS(exp_ranges)},         {log_ranges, NELEMS(log_ranges)},
    {log1p_ranges, NELEMS(log1p_ranges)},     {tanh_ranges, NELEMS(tanh_ranges)},
    {sigmoid_ranges, NELEMS(sigmoid_ranges)}, {erf_ranges, NELEMS(erf_ranges)},
};

Test(vmath, ulp_error_over_all_floats)
{
    lib L;
    load(&L, NULL);
    for (int f = 0; f < NFN; f++) {
        stats st = {0};
        sweep_bits(&L, f, 0, UINT32_MAX, 4093, &st); /* all signs, NaNs, infinities */
        for (int i = 0; i < dense[f].n; i++)
            sweep_range(&L, f, dense[f].r[i].a, dense[f].r[i].b, dense[f].r[i].step, &st);
        cr_log_info("kiln_%s: max error %.3f ulp at %a (got %a, exact %a) over %ld inputs",
                    fn_name[f], st.max, (double)st.worst, (double)st.got, ref(f, st.worst), st.n);
        cr_expect_leq(st.max, max_ulp[f], "kiln_%s: %.3f ulp at %a: got %a, exact %a", fn_name[f],
                      st.max, (double)st.worst, (double)st.got, ref(f, st.worst));
    }
    kiln_so_close(L.so);
}

/* The vectorized loop and the scalar call give the same bits. */
Test(vmath, vectorized_equals_scalar)
{
    lib L;
    load(&L, NULL);
    float x[CHUNK], y[CHUNK];
    for (int f = 0; f < NFN; f++) {
        long bad = 0;
        uint64_t b = 0;
        while (b <= UINT32_MAX) {
            int n = 0;
            for (; n < CHUNK && b <= UINT32_MAX; b += 4093)
                x[n++] = u2f((uint32_t)b);
            L.v[f](x, y, n);
            for (int i = 0; i < n; i++) {
                float s = L.s[f](x[i]);
                int same = isnan(s) ? isnan(y[i]) != 0 : f2u(s) == f2u(y[i]);
                if (!same && bad++ == 0)
                    cr_expect_fail("kiln_%s(%a): vector %a, scalar %a", fn_name[f], (double)x[i],
                                   (double)y[i], (double)s);
            }
        }
        cr_expect_eq(bad, 0, "kiln_%s: %ld inputs differ", fn_name[f], bad);
    }
    kiln_so_close(L.so);
}

/* ---- special values ---- */

#define QNAN NAN /* any NaN: results are checked with isnan */
typedef struct special {
    int f;
    float x, want; /* want NaN: any NaN */
} special;

static const special specials[] = {
    {F_EXP, 0.0f, 1.0f},
    {F_EXP, -0.0f, 1.0f},
    {F_EXP, INFINITY, INFINITY},
    {F_EXP, -INFINITY, 0.0f},
    {F_EXP, QNAN, QNAN},
    {F_EXP, -QNAN, QNAN},
    {F_EXP, 0x1p-149f, 1.0f},
    {F_EXP, 0x1.62e42ep+6f, 0x1.ffff08p+127f}, /* the largest x with a finite result */
    {F_EXP, 0x1.62e430p+6f, INFINITY},
    {F_EXP, 100.0f, INFINITY},
    {F_EXP, FLT_MAX, INFINITY},
    {F_EXP, -0x1.5d589ep+6f, 0x1.00004cp-126f},
    {F_EXP, -0x1.9fe368p+6f, 0x1p-149f}, /* the smallest subnormal */
    {F_EXP, -0x1.9fe36ep+6f, 0.0f},
    {F_EXP, -200.0f, 0.0f},
    {F_EXP, -FLT_MAX, 0.0f},
    {F_EXP, 1.0f, 0x1.5bf0a8p+1f},
    {F_LOG, 0.0f, -INFINITY},
    {F_LOG, -0.0f, -INFINITY},
    {F_LOG, 1.0f, 0.0f},
    {F_LOG, INFINITY, INFINITY},
    {F_LOG, -INFINITY, QNAN},
    {F_LOG, -1.0f, QNAN},
    {F_LOG, -0x1p-149f, QNAN},
    {F_LOG, QNAN, QNAN},
    {F_LOG, 0x1p-149f, -0x1.9d1da0p+6f},
    {F_LOG, 0x1p-126f, -0x1.5d58a0p+6f},
    {F_LOG, FLT_MAX, 0x1.62e430p+6f},
    {F_LOG, 2.0f, 0x1.62e430p-1f},
    {F_LOG, 0x1.fffffep-1f, -0x1p-24f},
    {F_LOG1P, 0.0f, 0.0f},
    {F_LOG1P, -0.0f, -0.0f},
    {F_LOG1P, -1.0f, -INFINITY},
    {F_LOG1P, -1.5f, QNAN},
    {F_LOG1P, -INFINITY, QNAN},
    {F_LOG1P, INFINITY, INFINITY},
    {F_LOG1P, QNAN, QNAN},
    {F_LOG1P, 0x1p-149f, 0x1p-149f},
    {F_LOG1P, -0x1p-149f, -0x1p-149f},
    {F_LOG1P, 0x1p-30f, 0x1p-30f},
    {F_LOG1P, -0x1p-30f, -0x1p-30f},
    {F_LOG1P, 1.0f, 0x1.62e430p-1f},
    {F_LOG1P, FLT_MAX, 0x1.62e430p+6f},
    {F_LOG1P, -0x1.fffffep-1f, -0x1.0a2b24p+4f},
    {F_TANH, 0.0f, 0.0f},
    {F_TANH, -0.0f, -0.0f},
    {F_TANH, INFINITY, 1.0f},
    {F_TANH, -INFINITY, -1.0f},
    {F_TANH, QNAN, QNAN},
    {F_TANH, 0x1p-149f, 0x1p-149f},
    {F_TANH, -0x1p-149f, -0x1p-149f},
    {F_TANH, 9.1f, 1.0f},
    {F_TANH, -9.1f, -1.0f},
    {F_TANH, 50.0f, 1.0f},
    {F_TANH, FLT_MAX, 1.0f},
    {F_TANH, -FLT_MAX, -1.0f},
    {F_SIGMOID, 0.0f, 0.5f},
    {F_SIGMOID, -0.0f, 0.5f},
    {F_SIGMOID, INFINITY, 1.0f},
    {F_SIGMOID, -INFINITY, 0.0f},
    {F_SIGMOID, QNAN, QNAN},
    {F_SIGMOID, 0x1p-149f, 0.5f},
    {F_SIGMOID, 20.0f, 1.0f},
    {F_SIGMOID, FLT_MAX, 1.0f},
    {F_SIGMOID, -0x1.9fe368p+6f, 0x1p-149f},
    {F_SIGMOID, -110.0f, 0.0f},
    {F_SIGMOID, -FLT_MAX, 0.0f},
    {F_ERF, 0.0f, 0.0f},
    {F_ERF, -0.0f, -0.0f},
    {F_ERF, INFINITY, 1.0f},
    {F_ERF, -INFINITY, -1.0f},
    {F_ERF, QNAN, QNAN},
    {F_ERF, 0x1p-149f, 0x1p-149f},
    {F_ERF, -0x1p-149f, -0x1p-149f},
    {F_ERF, 3.95f, 1.0f},
    {F_ERF, 4.0f, 1.0f},
    {F_ERF, -4.0f, -1.0f},
    {F_ERF, 10.0f, 1.0f},
    {F_ERF, FLT_MAX, 1.0f},
    {F_ERF, -FLT_MAX, -1.0f},
};

static int same_value(float got, float want)
{
    return isnan(want) ? isnan(got) != 0 : f2u(got) == f2u(want);
}

static void check_specials(const lib *L)
{
    for (int i = 0; i < NELEMS(specials); i++) {
        const special *t = &specials[i];
        float xs[8], ys[8];
        for (int k = 0; k < 8; k++)
            xs[k] = t->x; /* a full vector, not just the tail */
        L->v[t->f](xs, ys, 8);
        float s = L->s[t->f](t->x);
        cr_expect(same_value(s, t->want), "kiln_%s(%a) = %a, want %a", fn_name[t->f], (double)t->x,
                  (double)s, (double)t->want);
        cr_expect(same_value(ys[0], t->want) && same_value(ys[7], t->want),
                  "kiln_%s(%a) vectorized = %a, want %a", fn_name[t->f], (double)t->x,
                  (double)ys[0], (double)t->want);
    }
}

Test(vmath, special_values)
{
    lib L;
    load(&L, NULL);
    check_specials(&L);
    kiln_so_close(L.so);
}

/* ---- monotonicity and symmetry ---- */

static int in_domain(int f, float x)
{
    return f == F_LOG ? x > 0 : f == F_LOG1P ? x > -1 : 1;
}

/* The consecutive floats in f's domain from `back` steps below c to
 * `back` - 1 steps above it; how many. */
static int window(int f, float c, int back, float *x)
{
    float v = c;
    for (int i = 0; i < back; i++)
        v = nextafterf(v, -INFINITY);
    int n = 0;
    for (int i = 0; i < 2 * back; i++, v = nextafterf(v, INFINITY))
        if (in_domain(f, v)) x[n++] = v;
    return n;
}

/* y non-decreasing over increasing x (NaN results must not appear). */
static void expect_monotonic(int f, const float *x, const float *y, int n, const char *where)
{
    for (int i = 0; i + 1 < n; i++)
        if (!(y[i + 1] >= y[i])) {
            cr_expect_fail("kiln_%s not monotonic %s: f(%a) = %a > f(%a) = %a", fn_name[f], where,
                           (double)x[i], (double)y[i], (double)x[i + 1], (double)y[i + 1]);
            return;
        }
}

/* Points where the method changes (or the result leaves a binade), per
 * function; a run of consecutive floats around each is checked. */
static const float switch_points[NFN][10] = {
    {0.0f, 0.34657359f, -0.34657359f, 1.03972077f, -10.3972077f, 88.7228f, -87.3365f, -103.972f,
     0.5f},
    {1.0f, 0.70710677f, 1.41421354f, 0x1p-126f, 0x1p-148f, 2.0f, 0.5f},
    {0.0f, 1.0f, -0.5f, 0.41421354f, -0.29289322f, 0x1p24f, -0x1.fffffp-1f, 0x1p-126f},
    {0.0f, 0.55f, -0.55f, 9.0f, -9.0f, 1.0f},
    {0.0f, 16.6f, -16.6f, -87.3f, -103.0f, 1.0f},
    {0.0f, 0.875f, -0.875f, 3.92f, -3.92f, 4.0f, -4.0f},
};

Test(vmath, monotonic_and_odd)
{
    lib L;
    load(&L, NULL);
    float x[CHUNK], y[CHUNK], yn[CHUNK];
    for (int f = 0; f < NFN; f++) {
        /* around each switch point, where defined (log: x > 0, log1p: x > -1) */
        for (int i = 0; i < 10 && (i == 0 || switch_points[f][i] != 0.0f); i++) {
            float c = switch_points[f][i];
            int n = window(f, c, CHUNK / 2, x);
            L.v[f](x, y, n);
            char where[64];
            snprintf(where, sizeof where, "around %a", (double)c);
            expect_monotonic(f, x, y, n, where);
        }
        /* the whole domain, sparsely: negative floats by decreasing bit
         * pattern, then positive ones by increasing pattern */
        const uint32_t step = 4093;
        float prev_x = -INFINITY, prev_y = NAN;
        int first = 1;
        for (int side = 0; side < 2; side++) {
            int64_t b = side ? 0 : 0xff800000; /* -inf down to -0, then +0 up to +inf */
            int64_t end = side ? 0x7f800000 : 0x80000000;
            while (side ? b <= end : b >= end) {
                int n = 0;
                for (; n < CHUNK && (side ? b <= end : b >= end);
                     b += side ? step : -(int64_t)step) {
                    float v = u2f((uint32_t)b);
                    if (in_domain(f, v)) x[n++] = v;
                }
                if (!n) continue;
                L.v[f](x, y, n);
                if (!first && !(y[0] >= prev_y))
                    cr_expect_fail("kiln_%s not monotonic: f(%a) = %a > f(%a) = %a", fn_name[f],
                                   (double)prev_x, (double)prev_y, (double)x[0], (double)y[0]);
                expect_monotonic(f, x, y, n, "over the whole range");
                prev_x = x[n - 1];
                prev_y = y[n - 1];
                first = 0;
            }
        }
        /* tanh and erf are odd, bit for bit */
        if (f == F_TANH || f == F_ERF) {
            for (uint64_t b = 0; b < 0x7f800000u;) {
                int n = 0;
                for (; n < CHUNK && b < 0x7f800000u; b += 4093)
                    x[n++] = u2f((uint32_t)b);
                L.v[f](x, y, n);
                for (int i = 0; i < n; i++)
                    x[i] = -x[i];
                L.v[f](x, yn, n);
                for (int i = 0; i < n; i++)
                    if (f2u(yn[i]) != (f2u(y[i]) ^ 0x80000000u)) {
                        cr_expect_fail("kiln_%s(%a) = %a but kiln_%s(%a) = %a", fn_name[f],
                                       (double)-x[i], (double)y[i], fn_name[f], (double)x[i],
                                       (double)yn[i]);
                        break;
                    }
            }
        }
    }
    kiln_so_close(L.so);
}

/* ---- vectorization (gcc only) ---- */

/* The line (1-based) of the first occurrence of needle in s, or 0. */
static int line_of(const char *s, const char *needle)
{
    const char *p = strstr(s, needle);
    if (!p) return 0;
    int line = 1;
    for (const char *q = s; q < p; q++)
        line += *q == '\n';
    return line;
}

/* Runs cmd through the shell; its output (stdout and stderr) malloc'd. */
static char *run_capture(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "popen %s", cmd);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    size_t r;
    while ((r = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += r;
        if (n == cap - 1) {
            cap *= 2;
            out = realloc(out, cap);
            cr_assert_not_null(out);
        }
    }
    out[n] = '\0';
    pclose(p);
    return out;
}

/* Generated code is compiled with -march=native, whatever the machine: the
 * loops must vectorize on every x86-64 level, not just this machine's. With
 * AVX-512, gcc can if-convert a branch into masked operations; with AVX2 or
 * SSE2 it cannot, so a select that gcc turned into a branch shows only
 * there. */
static const char *const marches[] = {"native", "x86-64-v3", "x86-64"};

/* Whether the compiler is gcc (its --version names the FSF). */
static int compiler_is_gcc(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --version 2>&1", compiler());
    char *version = run_capture(cmd);
    int gcc = strstr(version, "Free Software Foundation") != NULL;
    free(version);
    return gcc;
}

Test(vmath, loops_vectorize_with_gcc)
{
    if (!compiler_is_gcc()) cr_skip_test("the compiler is not gcc: -fopt-info-vec is gcc's");
    char cmd[1024];

    char *src = test_source();
    char path[512];
    snprintf(path, sizeof path, "%s/vmath_vec.c", cache);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(src, f);
    fclose(f);
    /* the x86-64 levels only where the compiler targets x86-64 */
    snprintf(cmd, sizeof cmd, "%s -dumpmachine 2>&1", compiler());
    char *machine = run_capture(cmd);
    int nmarch = strstr(machine, "x86_64") ? NELEMS(marches) : 1;
    free(machine);
    for (int m = 0; m < nmarch; m++) {
        /* codegen/cc.c's flags, compiling only */
        snprintf(cmd, sizeof cmd,
                 "%s -O3 -march=%s -fPIC -std=c11 -fno-math-errno -fopenmp-simd "
                 "-fopt-info-vec-optimized -c %s -o %s/vmath_vec.o 2>&1",
                 compiler(), marches[m], path, cache);
        char *out = run_capture(cmd);
        for (int fn = 0; fn < NFN; fn++) {
            char call[64], want[64];
            snprintf(call, sizeof call, "y[i] = kiln_%s(x[i]);", fn_name[fn]);
            int line = line_of(src, call);
            cr_assert_gt(line, 1);
            /* gcc names the loop by its `for` line or by its body's */
            int found = 0;
            for (int l = line - 1; l <= line; l++) {
                snprintf(want, sizeof want, "vmath_vec.c:%d:", l);
                const char *p = strstr(out, want);
                found |= p && !strncmp(p + strcspn(p, " "), " optimized: loop vectorized", 27);
            }
            cr_expect(found,
                      "-march=%s: the loop calling kiln_%s (line %d) did not vectorize; gcc "
                      "said:\n%s",
                      marches[m], fn_name[fn], line, out);
        }
        free(out);
    }
    free(src);
}

/* ---- no undefined behaviour ---- */

/* gcc links its UBSan runtime into the shared object; other compilers may
 * not, so the check runs with gcc only. */
Test(vmath, no_undefined_behaviour)
{
    if (!compiler_is_gcc()) cr_skip_test("the compiler is not gcc");
    char cc[512];
    snprintf(cc, sizeof cc, "%s -fsanitize=undefined,float-cast-overflow -fno-sanitize-recover=all",
             compiler());
    lib L;
    load(&L, cc);
    /* a report aborts the process: reaching the end is the check */
    check_specials(&L);
    float x[CHUNK], y[CHUNK];
    for (int f = 0; f < NFN; f++) {
        uint64_t b = 0;
        while (b <= UINT32_MAX) {
            int n = 0;
            for (; n < CHUNK && b <= UINT32_MAX; b += 32749)
                x[n++] = u2f((uint32_t)b);
            L.v[f](x, y, n);
            for (int i = 0; i < n; i += 7)
                y[i] = L.s[f](x[i]);
        }
    }
    kiln_so_close(L.so);
}
