/* tests/test_gemm.c — the GEMM generator (codegen/gemm.c) and the target
 * description (codegen/target.c).
 *
 * Generated GEMMs are compiled through kiln_cc_load, many to a translation
 * unit (one compile per target), and checked against references computed
 * here:
 *  - every transpose combination, odd extents (1, 3, 7, 17, 31, 33, 129,
 *    257, ...), leading dimensions longer than the rows, tiles small enough
 *    that M, N and K span several MC, NC and KC blocks, and the training
 *    shapes of the Fashion-MNIST MLP with the model's tiles;
 *  - accuracy: |C - C_exact| <= K * 2^-23 * sum_k |a_ik b_kj| + 1e-30 per
 *    element (the bound of a recursive f32 sum of K products: each of the
 *    K additions and K multiplications rounds with relative error 2^-24),
 *    C_exact computed in double;
 *  - on the FMA targets the stronger promise of codegen/gemm.c: C equals the
 *    chain c = fmaf(a_ik, b_kj, c), k = 0..K-1, bit for bit;
 *  - the fused tail: EPI sees final sums and covers every (i, j) once;
 *  - results bit-identical on 1, 2 and 3 threads;
 *  - the AVX2 target when the host has it, and the scalar target, compiled
 *    on this host like the native one;
 *  - the tile cache file and the tuning search (briefly).
 * Each test uses its own temporary cache directory.
 */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"
#include "codegen/gemm.h"
#include "runtime/threadpool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char cache[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache, sizeof cache, "gemm");
    setenv("XDG_CACHE_HOME", cache, 1);
}

static void drop_cache(void)
{
    kiln_test_rmtree(cache);
}

TestSuite(gemm, .init = make_cache, .fini = drop_cache, .timeout = 300);

/* ---- cases, and one translation unit holding them all ---- */

typedef struct gcase {
    kiln_gemm_shape s;
    kiln_gemm_tiles tiles;
    int epi;
} gcase;

typedef void (*gemm_fn)(const float *A, const float *B, float *C, const kiln_rt *rt, void *epi);

/* The shape with leading dimensions `pad` longer than the rows. */
static kiln_gemm_shape shape(int64_t M, int64_t N, int64_t K, int ta, int tb, int64_t pad)
{
    kiln_gemm_shape s = {M, N, K, ta, tb, (ta ? M : K) + pad, (tb ? K : N) + pad, N + pad};
    return s;
}

/* Small tiles, so that little shapes span several blocks of every kind: NC of
 * 2 or 3 NR panels (with 2, A that is not transposed is read in place, with
 * 3 it is packed). */
static kiln_gemm_tiles small_tiles(const kiln_cg_target *t, const kiln_gemm_shape *s, int panels)
{
    kiln_gemm_tiles m;
    kiln_gemm_tiles_model(t, s, &m);
    m.mc = 2 * m.mr;
    m.kc = 16;
    m.nc = panels * m.nr;
    return m;
}

static const char epi_src[] =
    "/* The test's tail: checks that C[i,j] holds its final sum (within the error\n"
    " * bound of the exact one), adds 1 and counts the visit (1000 for a sum that\n"
    " * was not final). */\n"
    "typedef struct test_epi_ctx {\n"
    "    float *C;\n"
    "    const double *exact, *bound;\n"
    "    int *count;\n"
    "    int64_t ldc, n;\n"
    "} test_epi_ctx;\n"
    "static inline void test_epi(void *vctx, int64_t i, int64_t j0, int64_t j1)\n"
    "{\n"
    "    test_epi_ctx *x = vctx;\n"
    "    for (int64_t j = j0; j < j1; j++) {\n"
    "        float *c = x->C + i * x->ldc + j;\n"
    "        int64_t e = i * x->n + j;\n"
    "        x->count[e] += fabs((double)*c - x->exact[e]) <= x->bound[e] ? 1 : 1000;\n"
    "        *c += 1.0f;\n"
    "    }\n"
    "}\n\n";

typedef struct test_epi_ctx {
    float *C;
    const double *exact, *bound;
    int *count;
    int64_t ldc, n;
} test_epi_ctx;

/* Compiles the source in b (freed here), which ends with the table
 * kiln_test_gemms, and returns the table; *so the loaded object. */
static gemm_fn const *load_table(kiln_sbuf *b, const kiln_cg_target *t, kiln_so **so)
{
    cr_assert(!b->oom);
    kiln_cc_options o = {.cc = NULL, .cache_dir = cache, .verbose = 0};
    int cached;
    double secs;
    char *err = NULL;
    *so = NULL;
    kiln_status st = kiln_cc_load(b->p, &o, so, &cached, &secs, &err);
    size_t bytes = b->n;
    free(b->p);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    cr_log_info("%s: %zu bytes of C, compiled in %.2f s", kiln_isa_name(t->isa), bytes, secs);
    gemm_fn const *table = kiln_so_sym(*so, "kiln_test_gemms");
    cr_assert_not_null(table);
    return table;
}

/* Compiles the cases for target t into one object: kiln_test_gemms[i] is
 * case i's function. */
static kiln_so *compile_cases(const kiln_cg_target *t, const gcase *c, int n, gemm_fn *fns)
{
    kiln_sbuf b = {0};
    kiln_sb_puts(&b, "#include <math.h>\n#include <stdint.h>\n#include <string.h>\n\n"
                     "typedef struct kiln_rt {\n    void *pool;\n"
                     "    void (*parallel_for)(void *pool, int64_t n, void (*fn)(void *, int64_t, "
                     "int64_t), void *ctx);\n} kiln_rt;\n\n");
    kiln_emit_gemm_prelude(&b, t);
    kiln_sb_puts(&b, epi_src);
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "g%d", i);
        kiln_emit_gemm(&b, name, &c[i].s, t, &c[i].tiles, c[i].epi ? "test_epi" : NULL);
    }
    kiln_sb_puts(&b, "void (*const kiln_test_gemms[])(const float *, const float *, float *,\n"
                     "    const kiln_rt *, void *) = {\n");
    for (int i = 0; i < n; i++) kiln_sb_printf(&b, "    g%d,\n", i);
    kiln_sb_puts(&b, "};\n");
    kiln_so *so;
    gemm_fn const *table = load_table(&b, t, &so);
    for (int i = 0; i < n; i++) fns[i] = table[i];
    return so;
}

/* ---- references ---- */

static float rnd(uint32_t *r)
{
    *r = *r * 1664525u + 1013904223u;
    return (float)(*r >> 8) * 0x1p-24f * 2.0f - 1.0f; /* [-1, 1), 24 bits */
}

/* One case's operands and results. The padding between rows of C is set to
 * a sentinel that no GEMM may touch. */
typedef struct run {
    float *A, *B, *C, *fref; /* fref: the fmaf chain, M x N dense */
    double *exact, *bound;   /* M x N dense */
} run;

#define SENTINEL 12345.0f

static void run_init(run *r, const kiln_gemm_shape *s, uint32_t seed, int fma_chain)
{
    int64_t M = s->M, N = s->N, K = s->K;
    size_t na = (size_t)((s->ta ? K : M) * s->lda), nb = (size_t)((s->tb ? N : K) * s->ldb);
    r->A = malloc(na * sizeof(float));
    r->B = malloc(nb * sizeof(float));
    r->C = malloc((size_t)(M * s->ldc) * sizeof(float));
    r->fref = malloc((size_t)(M * N) * sizeof(float));
    r->exact = malloc((size_t)(M * N) * sizeof(double));
    r->bound = malloc((size_t)(M * N) * sizeof(double));
    cr_assert(r->A && r->B && r->C && r->fref && r->exact && r->bound);
    for (size_t i = 0; i < na; i++) r->A[i] = rnd(&seed);
    for (size_t i = 0; i < nb; i++) r->B[i] = rnd(&seed);
    /* op(A) by rows and op(B) by columns, dense, for the inner loops */
    float *a = malloc((size_t)(M * K) * sizeof *a), *b = malloc((size_t)(N * K) * sizeof *b);
    cr_assert(a && b);
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++)
            a[i * K + k] = s->ta ? r->A[k * s->lda + i] : r->A[i * s->lda + k];
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < K; k++)
            b[j * K + k] = s->tb ? r->B[j * s->ldb + k] : r->B[k * s->ldb + j];
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            const float *x = a + i * K, *y = b + j * K;
            double e = 0, m = 0;
            float f = 0.0f;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)x[k] * (double)y[k]; /* exact: 24 + 24 bits */
                e += p;
                m += fabs(p);
            }
            if (fma_chain)
                for (int64_t k = 0; k < K; k++) f = fmaf(x[k], y[k], f);
            r->exact[i * N + j] = e;
            r->bound[i * N + j] = (double)K * 0x1p-23 * m + 1e-30;
            r->fref[i * N + j] = f;
        }
    free(a);
    free(b);
}

static void run_free(run *r)
{
    free(r->A);
    free(r->B);
    free(r->C);
    free(r->fref);
    free(r->exact);
    free(r->bound);
}

static void fill_c(const kiln_gemm_shape *s, float *C)
{
    for (int64_t i = 0; i < s->M * s->ldc; i++) C[i] = SENTINEL;
}

static void describe(const gcase *c, char *buf, size_t len)
{
    snprintf(buf, len, "M=%lld N=%lld K=%lld ta=%d tb=%d lda=%lld ldb=%lld ldc=%lld tiles %dx%d mc %lld kc %lld nc %lld%s",
             (long long)c->s.M, (long long)c->s.N, (long long)c->s.K, c->s.ta, c->s.tb,
             (long long)c->s.lda, (long long)c->s.ldb, (long long)c->s.ldc, c->tiles.mr,
             c->tiles.nr, (long long)c->tiles.mc, (long long)c->tiles.kc, (long long)c->tiles.nc,
             c->epi ? " with a tail" : "");
}

/* Runs case c on 1, 2 and 3 threads and checks everything listed at the top. */
static void check_case(const gcase *c, gemm_fn f, int fma_chain, kiln_pool *p2, kiln_pool *p3,
                       uint32_t seed)
{
    const kiln_gemm_shape *s = &c->s;
    int64_t M = s->M, N = s->N;
    char what[256];
    describe(c, what, sizeof what);
    run r;
    run_init(&r, s, seed, fma_chain);
    kiln_rt rts[3] = {kiln_pool_rt(NULL), kiln_pool_rt(p2), kiln_pool_rt(p3)};
    float *first = malloc((size_t)(M * s->ldc) * sizeof(float));
    int *count = calloc((size_t)(M * N), sizeof(int));
    cr_assert(first && count);
    for (int t = 0; t < 3; t++) {
        fill_c(s, r.C);
        memset(count, 0, (size_t)(M * N) * sizeof(int));
        test_epi_ctx ex = {r.C, r.exact, r.bound, count, s->ldc, N};
        f(r.A, r.B, r.C, &rts[t], c->epi ? &ex : NULL);
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < s->ldc; j++) {
                float v = r.C[i * s->ldc + j];
                if (j >= N) {
                    cr_assert_eq(v, SENTINEL, "%s: C[%lld,%lld] beyond N was written", what,
                                 (long long)i, (long long)j);
                    continue;
                }
                if (c->epi) {
                    cr_assert_eq(count[i * N + j], 1,
                                 "%s: the tail saw (%lld,%lld) %d times (1000s: before its sum "
                                 "was final)",
                                 what, (long long)i, (long long)j, count[i * N + j]);
                    v -= 1.0f;
                }
                double e = r.exact[i * N + j], d = fabs((double)v - e);
                cr_assert(d <= r.bound[i * N + j] + (c->epi ? 0x1p-23 * (fabs(e) + 1) : 0),
                          "%s: C[%lld,%lld] = %.9g, exact %.9g, |err| %.3g > bound %.3g", what,
                          (long long)i, (long long)j, v, e, d, r.bound[i * N + j]);
                if (fma_chain && !c->epi)
                    cr_assert(!memcmp(&v, &r.fref[i * N + j], sizeof v),
                              "%s: C[%lld,%lld] = %.9g is not the fmaf chain's %.9g", what,
                              (long long)i, (long long)j, v, r.fref[i * N + j]);
            }
        if (t == 0) memcpy(first, r.C, (size_t)(M * s->ldc) * sizeof(float));
        else
            cr_assert(!memcmp(first, r.C, (size_t)(M * s->ldc) * sizeof(float)),
                      "%s: %d threads give other bits than 1 thread", what, t + 1);
    }
    free(first);
    free(count);
    run_free(&r);
}

/* Edge cases with small tiles (every transpose, padded and unpadded leading
 * dimensions) for the first `ndims` extents of the list. */
static int edge_cases(const kiln_cg_target *t, gcase *v, int max, size_t ndims)
{
    /* with AVX-512's 8x48 kernel: 401 and 500 columns make 9 and 11 NR
     * panels, enough for column tasks (A not transposed) */
    static const int64_t dims[][3] = {{1, 1, 1},    {3, 7, 17},   {17, 33, 31}, {33, 129, 33},
                                      {129, 31, 7}, {7, 257, 3},  {31, 17, 129}, {33, 401, 19},
                                      {1, 100, 5},  {9, 500, 40}};
    int n = 0;
    for (size_t d = 0; d < sizeof dims / sizeof dims[0] && d < ndims; d++)
        for (int tt = 0; tt < 4 && n < max; tt++) {
            gcase c = {0};
            c.s = shape(dims[d][0], dims[d][1], dims[d][2], tt >> 1, tt & 1, (int64_t)(d + tt) % 3 * 3);
            c.tiles = small_tiles(t, &c.s, 2 + (int)(d & 1));
            c.epi = (d + tt) % 4 == 1;
            v[n++] = c;
        }
    return n;
}

/* The edge cases (the first `ndims` extents), then `extra`, on target t. */
static void check_target(const kiln_cg_target *t, int fma_chain, size_t ndims, const gcase *extra,
                         int nextra)
{
    gcase v[64];
    int n = edge_cases(t, v, 64 - nextra, ndims);
    for (int i = 0; i < nextra; i++) v[n++] = extra[i];
    gemm_fn fns[64];
    kiln_so *so = compile_cases(t, v, n, fns);
    kiln_pool *p2 = kiln_pool_new(2), *p3 = kiln_pool_new(3);
    cr_assert(p2 && p3);
    for (int i = 0; i < n; i++) check_case(&v[i], fns[i], fma_chain, p2, p3, 7u + (uint32_t)i);
    kiln_pool_free(p2);
    kiln_pool_free(p3);
    kiln_so_close(so);
}

static gcase model_case(const kiln_cg_target *t, kiln_gemm_shape s, int epi)
{
    gcase c = {.s = s, .epi = epi};
    kiln_gemm_tiles_model(t, &s, &c.tiles);
    return c;
}

Test(gemm, host_target)
{
    kiln_cg_target t;
    kiln_target_host(&t);
    int fma = t.isa != KILN_ISA_SCALAR;
    gcase extra[8];
    int n = 0;
    /* the MLP's training step at batch 128, with the model's tiles */
    extra[n++] = model_case(&t, shape(128, 512, 784, 0, 1, 0), 0); /* x @ W1^T */
    extra[n++] = model_case(&t, shape(128, 10, 512, 0, 1, 0), 1);  /* h @ W3^T, fused */
    extra[n++] = model_case(&t, shape(512, 784, 128, 1, 0, 0), 0); /* dY^T @ X */
    extra[n++] = model_case(&t, shape(10, 512, 128, 1, 0, 0), 0);  /* dY3^T @ h */
    /* B packed in two passes over K (K * NC exceeds the buffer), with a tail */
    gcase c = model_case(&t, shape(17, 257, 2049, 0, 1, 1), 1);
    c.tiles.nc = 256;
    extra[n++] = c;
    check_target(&t, fma, 99, extra, n);
}

Test(gemm, scalar_target)
{
    kiln_cg_target t;
    cr_assert_eq(kiln_target_parse("scalar", &t), KILN_OK);
    t.l2 = 16 << 10; /* tails in groups of few columns */
    gcase extra[1] = {model_case(&t, shape(64, 80, 300, 1, 1, 2), 1)};
    check_target(&t, 0, 8, extra, 1);
}

Test(gemm, avx2_target)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        cr_skip_test("the host has no AVX2 with FMA");
    kiln_cg_target t;
    cr_assert_eq(kiln_target_parse("avx2", &t), KILN_OK);
    t.l2 = 32 << 10; /* tails in groups of few columns */
    gcase extra[1] = {model_case(&t, shape(128, 512, 300, 0, 1, 0), 1)};
    check_target(&t, 1, 8, extra, 1);
#else
    cr_skip_test("not an x86-64 host");
#endif
}

/* ---- implicit im2col: op(B) packed from an image (kiln_emit_gemm_packb) ---- */

/* The column matrix of x [N, C, H, W] (ir/conv.h), [C*kh*kw, N*OH*OW]. */
static void ref_im2col(const kiln_kim2col *g, const float *x, float *cols)
{
    int64_t P = g->OH * g->OW;
    for (int64_t c = 0; c < g->C; c++)
        for (int64_t i = 0; i < g->kh; i++)
            for (int64_t j = 0; j < g->kw; j++)
                for (int64_t n = 0; n < g->N; n++)
                    for (int64_t oh = 0; oh < g->OH; oh++)
                        for (int64_t ow = 0; ow < g->OW; ow++) {
                            int64_t ih = oh * g->sh - g->ph + i * g->dh;
                            int64_t iw = ow * g->sw - g->pw + j * g->dw;
                            bool in = ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
                            cols[((c * g->kh + i) * g->kw + j) * g->N * P + (n * g->OH + oh) * g->OW + ow] =
                                in ? x[((n * g->C + c) * g->H + ih) * g->W + iw] : 0.0f;
                        }
}

/* GEMMs whose B is an image's column matrix (from row r0, transposed or
 * not), packed from the image by kiln_emit_im2col_packb, give the bits of
 * the same GEMM on the stored column matrix, on every target; so do GEMMs
 * whose A is the column matrix, made from the image by the same packer
 * (PACKA: kiln_emit_gemm_packab), with B = dy^T as a weight gradient has
 * it (variant 2) and B plain (variant 3). */
static void check_im2col_packb(const kiln_cg_target *t)
{
    /* N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw; rows of B from r0 (a group) */
    static const int64_t geo[][13] = {
        {2, 3, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1, 0},  {2, 4, 8, 8, 3, 3, 2, 2, 1, 1, 1, 1, 18},
        {1, 2, 10, 7, 3, 2, 1, 1, 2, 0, 2, 1, 0},  {3, 2, 5, 40, 1, 3, 1, 1, 0, 1, 1, 1, 3},
        {2, 5, 6, 6, 2, 2, 2, 1, 0, 1, 1, 2, 8},   {1, 3, 9, 41, 3, 3, 2, 2, 1, 1, 1, 1, 0},
        {2, 2, 7, 70, 1, 1, 2, 2, 0, 0, 1, 1, 0},
    };
    enum { NG = sizeof geo / sizeof geo[0] };
    enum { NV = 4 }; /* B from the image (tb 0, 1); A from it (B^T, B) */
    kiln_kim2col g[NG];
    kiln_gemm_shape sh[NV * NG];
    kiln_gemm_tiles tl[NV * NG];
    kiln_sbuf b = {0};
    kiln_sb_puts(&b, "#include <stdint.h>\n#include <string.h>\n\n"
                     "typedef struct kiln_rt {\n    void *pool;\n"
                     "    void (*parallel_for)(void *pool, int64_t n, void (*fn)(void *, int64_t, "
                     "int64_t), void *ctx);\n} kiln_rt;\n\n"
                     "typedef struct ictx {\n    const float *x;\n} ictx;\n\n");
    kiln_emit_gemm_prelude(&b, t);
    char name[32], pk[32];
    for (int q = 0; q < NG; q++) {
        const int64_t *v = geo[q];
        g[q] = (kiln_kim2col){.on = 1, .N = v[0], .C = v[1], .H = v[2], .W = v[3], .kh = v[4],
                              .kw = v[5], .sh = v[6], .sw = v[7], .ph = v[8], .pw = v[9],
                              .dh = v[10], .dw = v[11], .r0 = v[12]};
        g[q].OH = (g[q].H + 2 * g[q].ph - g[q].dh * (g[q].kh - 1) - 1) / g[q].sh + 1;
        g[q].OW = (g[q].W + 2 * g[q].pw - g[q].dw * (g[q].kw - 1) - 1) / g[q].sw + 1;
        int64_t rows = g[q].C * g[q].kh * g[q].kw - g[q].r0, P = g[q].N * g[q].OH * g[q].OW;
        /* C = A @ cols[r0..] (tb 0), C = A @ cols[r0..]^T (tb 1) */
        sh[NV * q] = (kiln_gemm_shape){.M = 7, .N = P, .K = rows, .lda = rows, .ldb = P, .ldc = P};
        sh[NV * q + 1] = (kiln_gemm_shape){.M = 5, .N = rows, .K = P, .tb = 1, .lda = P, .ldb = P,
                                           .ldc = rows};
        sh[NV * q + 2] = (kiln_gemm_shape){.M = rows, .N = 21, .K = P, .tb = 1, .lda = P,
                                           .ldb = P, .ldc = 21};
        sh[NV * q + 3] = (kiln_gemm_shape){.M = rows, .N = 35, .K = P, .lda = P, .ldb = 35,
                                           .ldc = 35};
        for (int v = 0; v < NV; v++) {
            int i = NV * q + v;
            kiln_gemm_tiles_model(t, &sh[i], &tl[i]);
            tl[i].kc = 16; /* several KC blocks */
            tl[i].nc = 2 * tl[i].nr;
            if (v >= 2) tl[i].mc = 2 * tl[i].mr; /* several MC blocks */
            snprintf(pk, sizeof pk, "pk%d", i);
            kiln_emit_im2col_packb(&b, pk, &g[q], v == 1,
                                   v < 2 ? kiln_gemm_tiles_nr(t, &sh[i], &tl[i])
                                         : (int)kiln_gemm_tiles_kc(t, &sh[i], &tl[i]),
                                   "((const ictx *)ctx)->x", t);
            snprintf(name, sizeof name, "im%d", i);
            kiln_emit_gemm_packab(&b, name, &sh[i], t, &tl[i], NULL, v < 2 ? pk : NULL,
                                  v < 2 ? NULL : pk);
            snprintf(name, sizeof name, "ex%d", i);
            kiln_emit_gemm(&b, name, &sh[i], t, &tl[i], NULL);
        }
    }
    kiln_sb_puts(&b, "void (*const kiln_test_gemms[])(const float *, const float *, float *,\n"
                     "    const kiln_rt *, void *) = {\n");
    for (int i = 0; i < NV * NG; i++) kiln_sb_printf(&b, "    im%d, ex%d,\n", i, i);
    kiln_sb_puts(&b, "};\n");
    kiln_so *so;
    gemm_fn const *fns = load_table(&b, t, &so);
    kiln_pool *pool = kiln_pool_new(3);
    cr_assert_not_null(pool);
    kiln_rt rt = kiln_pool_rt(pool);
    uint32_t seed = 99;
    for (int q = 0; q < NG; q++) {
        int64_t nx = g[q].N * g[q].C * g[q].H * g[q].W;
        int64_t ncols = g[q].C * g[q].kh * g[q].kw * g[q].N * g[q].OH * g[q].OW;
        float *x = malloc((size_t)nx * sizeof *x), *cols = malloc((size_t)ncols * sizeof *cols);
        cr_assert(x && cols);
        for (int64_t e = 0; e < nx; e++) x[e] = rnd(&seed);
        ref_im2col(&g[q], x, cols);
        for (int v = 0; v < NV; v++) {
            const kiln_gemm_shape *s = &sh[NV * q + v];
            /* the operand that is not the column matrix: A (v < 2) or B */
            int64_t na = v < 2 ? s->M * s->lda : (s->tb ? s->N : s->K) * s->ldb,
                    nc = s->M * s->ldc;
            float *A = malloc((size_t)na * sizeof *A), *C0 = malloc((size_t)nc * sizeof *C0),
                  *C1 = malloc((size_t)nc * sizeof *C1);
            cr_assert(A && C0 && C1);
            for (int64_t e = 0; e < na; e++) A[e] = rnd(&seed);
            struct { const float *x; } ctx = {x};
            const float *im = cols + g[q].r0 * (v < 2 ? s->ldb : s->lda);
            if (v < 2) {
                fns[2 * (NV * q + v)](A, NULL, C0, &rt, &ctx);
                fns[2 * (NV * q + v) + 1](A, im, C1, &rt, NULL);
            } else {
                fns[2 * (NV * q + v)](NULL, A, C0, &rt, &ctx);
                fns[2 * (NV * q + v) + 1](im, A, C1, &rt, NULL);
            }
            int64_t bad = 0;
            for (int64_t e = 0; e < nc; e++) bad += memcmp(&C0[e], &C1[e], sizeof *C0) != 0;
            cr_expect_eq(bad, 0, "%s: image %d, variant %d: %lld of %lld elements differ",
                         kiln_isa_name(t->isa), q, v, (long long)bad, (long long)nc);
            free(A);
            free(C0);
            free(C1);
        }
        free(x);
        free(cols);
    }
    kiln_pool_free(pool);
    kiln_so_close(so);
}

Test(gemm, im2col_packb_host) {
    kiln_cg_target t;
    kiln_target_host(&t);
    check_im2col_packb(&t);
}

Test(gemm, im2col_packb_scalar) {
    kiln_cg_target t;
    cr_assert_eq(kiln_target_parse("scalar", &t), KILN_OK);
    check_im2col_packb(&t);
}

/* ---- tiles, the cache, the search ---- */

Test(gemm, model_tiles_fit_the_shape)
{
    kiln_cg_target t;
    kiln_target_host(&t);
    kiln_gemm_shape shapes[] = {shape(1, 1, 1, 0, 0, 0), shape(128, 512, 784, 0, 1, 0),
                                shape(2048, 2048, 2048, 0, 0, 0), shape(3, 100000, 7, 1, 1, 0)};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        kiln_gemm_tiles m;
        kiln_gemm_tiles_model(&t, &shapes[i], &m);
        cr_expect_gt(m.mr, 0);
        cr_expect_eq(m.nr % t.vec_floats, 0, "NR %d is a multiple of the vector", m.nr);
        cr_expect_eq(m.mc % m.mr, 0);
        cr_expect_eq(m.nc % m.nr, 0);
        cr_expect(m.kc >= 1 && m.kc <= shapes[i].K);
        cr_expect_leq(m.mc, ((shapes[i].M + m.mr - 1) / m.mr) * m.mr);
        cr_expect_leq(m.nc, ((shapes[i].N + m.nr - 1) / m.nr) * m.nr);
        kiln_gemm_tiles c;
        kiln_gemm_tiles_cached(&t, &shapes[i], &c);
        cr_expect(!memcmp(&c, &m, sizeof c), "no cache file: the model's tiles");
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

Test(gemm, cached_tiles_are_read_and_checked)
{
    kiln_cg_target t;
    cr_assert_eq(kiln_target_parse("avx512", &t), KILN_OK);
    char dir[300], file[320];
    snprintf(dir, sizeof dir, "%s/kiln", cache);
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/gemm-tiles", dir);
    /* 128x512x784 is class m7n9k9; 200x600x700 too (octaves) */
    write_file(file, "# comment\n"
                     "avx512 m7n9k9t01 12 32 96 256 512 # tuned\n"
                     "avx512 m7n9k9t00 13 32 96 256 512\n" /* not a micro-kernel of the menu */
                     "garbage\n"
                     "avx2 m7n9k9t01 6 16 96 256 512\n");
    kiln_gemm_shape s = shape(128, 512, 784, 0, 1, 0), s2 = shape(200, 600, 700, 0, 1, 0);
    kiln_gemm_tiles c;
    kiln_gemm_tiles_cached(&t, &s, &c);
    cr_expect_eq(c.mr, 12);
    cr_expect_eq(c.nr, 32);
    cr_expect_eq(c.mc, 72, "mc 96 balanced over M=128: 2 blocks of 72 (got %lld)", (long long)c.mc);
    cr_expect_eq(c.kc, 200, "kc 256 balanced over K=784: 4 blocks of at most 200 (got %lld)",
                 (long long)c.kc);
    cr_expect_eq(c.nc, 512);
    kiln_gemm_tiles_cached(&t, &s2, &c);
    cr_expect_eq(c.mr, 12, "the same class");
    kiln_gemm_tiles m;
    kiln_gemm_shape s3 = shape(128, 512, 784, 0, 0, 0);
    kiln_gemm_tiles_cached(&t, &s3, &c);
    kiln_gemm_tiles_model(&t, &s3, &m);
    cr_expect(!memcmp(&c, &m, sizeof c), "an unknown micro-kernel is ignored");
}

Test(gemm, tune_writes_the_cache)
{
    setenv("KILN_GEMM_TUNE_SECONDS", "0.01", 1);
    kiln_cg_target t;
    kiln_target_host(&t);
    /* a line of another class, which the search must keep */
    char dir[300], file[320], line[128];
    snprintf(dir, sizeof dir, "%s/kiln", cache);
    mkdir(dir, 0755);
    snprintf(file, sizeof file, "%s/gemm-tiles", dir);
    kiln_gemm_shape other = shape(2048, 2048, 2048, 0, 0, 0);
    kiln_gemm_tiles m;
    kiln_gemm_tiles_model(&t, &other, &m);
    snprintf(line, sizeof line, "%s m11n11k11t00 %d %d %lld 64 %lld\n", kiln_isa_name(t.isa), m.mr,
             m.nr, (long long)(2 * m.mr), (long long)m.nr);
    write_file(file, line);

    kiln_gemm_shape s = shape(24, 40, 20, 0, 1, 0);
    kiln_gemm_tiles best = {0}, c;
    char logbuf[8192] = {0};
    FILE *log = fmemopen(logbuf, sizeof logbuf - 1, "w");
    cr_assert_not_null(log);
    kiln_status st = kiln_gemm_tune(&t, &s, 2, &best, log);
    fclose(log);
    cr_assert_eq(st, KILN_OK, "%s", logbuf);
    cr_expect_not_null(strstr(logbuf, "GFLOPS"), "the log has the timings: %s", logbuf);
    cr_expect_gt(best.mr, 0);
    kiln_gemm_tiles_cached(&t, &s, &c);
    cr_expect(!memcmp(&c, &best, sizeof c), "the cache gives the tuned tiles");
    kiln_gemm_tiles_cached(&t, &other, &c);
    cr_expect_eq(c.kc, 64, "the other class's line is kept");
    cr_expect_eq(c.mc, 2 * m.mr);
    cr_expect_eq(kiln_gemm_tune(&t, &(kiln_gemm_shape){0}, 1, &best, NULL), KILN_ERR_INVALID);
}

/* ---- the target ---- */

Test(gemm, targets_parse)
{
    kiln_cg_target t;
    kiln_target_host(&t);
    cr_expect_gt(t.vec_floats, 0);
    cr_expect_geq(t.l1d, 8 << 10);
    cr_expect_geq(t.l2, t.l1d);
    cr_expect_geq(t.l3, t.l2);
    cr_expect_not_null(t.cflags);
    static const struct {
        const char *name;
        kiln_isa isa;
        int lanes;
    } want[] = {{"scalar", KILN_ISA_SCALAR, 1},
                {"avx2", KILN_ISA_AVX2, 8},
                {"avx512", KILN_ISA_AVX512, 16},
                {"neon", KILN_ISA_NEON, 4}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(kiln_target_parse(want[i].name, &t), KILN_OK);
        cr_expect_eq(t.isa, want[i].isa);
        cr_expect_eq(t.vec_floats, want[i].lanes);
        cr_expect_str_eq(kiln_isa_name(t.isa), want[i].name);
    }
    cr_expect_eq(kiln_target_parse("native", &t), KILN_OK);
    cr_expect_eq(kiln_target_parse("sse9", &t), KILN_ERR_INVALID);
    cr_expect_eq(kiln_target_parse(NULL, &t), KILN_ERR_INVALID);
}
