/* tests/test_threads.c — the thread pool (runtime/threadpool.c) and
 * programs whose kernels run on it.
 *
 * The pool: kiln_parallel_for covers [0, n) exactly once for several n and
 * thread counts; many calls in a row neither deadlock nor lose chunks; a
 * nested call runs inline; pools are freed idle, fresh or after work.
 * Programs: examples/fashion_mlp.kiln at batch 64 trained for 3 AdamW steps
 * on the same data with 1, 2 and 3 threads gives bit-identical losses and
 * parameters (each output element is computed by the same code whatever the
 * split); the generated source outlines the large kernels' loops and never
 * cross_entropy's (one sum over every sample). */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"
#include "kiln/kiln.h"
#include "runtime/threadpool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the pool ---- */

typedef struct cover {
    atomic_int *hits; /* per index */
    int64_t n;
    atomic_int calls;
    atomic_int bad; /* a chunk outside [0, n) or empty */
} cover;

static void cover_fn(void *ctx, int64_t lo, int64_t hi)
{
    cover *c = ctx;
    atomic_fetch_add(&c->calls, 1);
    if (lo < 0 || hi > c->n || lo >= hi) {
        atomic_fetch_add(&c->bad, 1);
        return;
    }
    for (int64_t i = lo; i < hi; i++)
        atomic_fetch_add_explicit(&c->hits[i], 1, memory_order_relaxed);
}

Test(threadpool, covers_every_index_once, .timeout = 120)
{
    const int64_t ns[] = {0, 1, 7, 1000, 1 << 20};
    const int threads[] = {1, 2, 3, 8};
    atomic_int *hits = malloc(sizeof *hits * (1 << 20));
    cr_assert_not_null(hits);
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        kiln_pool *p = kiln_pool_new(threads[t]);
        cr_assert_not_null(p);
        cr_expect_eq(kiln_pool_threads(p), threads[t]);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            int64_t n = ns[k];
            for (int64_t i = 0; i < n; i++)
                atomic_init(&hits[i], 0);
            cover c = {.hits = hits, .n = n};
            atomic_init(&c.calls, 0);
            atomic_init(&c.bad, 0);
            kiln_parallel_for(p, n, cover_fn, &c);
            cr_expect_eq(atomic_load(&c.bad), 0, "threads %d, n %lld: a bad chunk", threads[t],
                         (long long)n);
            int64_t wrong = 0;
            for (int64_t i = 0; i < n; i++)
                wrong += atomic_load(&hits[i]) != 1;
            cr_expect_eq(wrong, 0, "threads %d, n %lld: %lld indices not covered exactly once",
                         threads[t], (long long)n, (long long)wrong);
            if (n == 0) cr_expect_eq(atomic_load(&c.calls), 0, "n 0 calls nothing");
            /* at most 4 chunks per thread, never more than n */
            int most = 4 * threads[t];
            if (n < most) most = (int)n;
            cr_expect_leq(atomic_load(&c.calls), most, "threads %d, n %lld: %d chunks", threads[t],
                          (long long)n, atomic_load(&c.calls));
            if (threads[t] == 1 && n > 0)
                cr_expect_eq(atomic_load(&c.calls), 1, "one thread: one inline call");
        }
        kiln_pool_free(p);
    }
    free(hits);
}

typedef struct sum_ctx {
    atomic_llong total;
} sum_ctx;

static void sum_fn(void *ctx, int64_t lo, int64_t hi)
{
    sum_ctx *s = ctx;
    long long part = 0;
    for (int64_t i = lo; i < hi; i++)
        part += i;
    atomic_fetch_add(&s->total, part);
}

/* 10000 calls back to back (the way kernels run): every call complete when
 * it returns, no deadlock. */
Test(threadpool, many_calls, .timeout = 300)
{
    const int threads[] = {2, 3, 8};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        kiln_pool *p = kiln_pool_new(threads[t]);
        cr_assert_not_null(p);
        long long failures = 0;
        for (int it = 0; it < 10000; it++) {
            int64_t n = 1 + it % 97;
            sum_ctx s;
            atomic_init(&s.total, 0);
            kiln_parallel_for(p, n, sum_fn, &s);
            if (atomic_load(&s.total) != (long long)(n * (n - 1) / 2)) failures++;
        }
        cr_expect_eq(failures, 0, "threads %d: %lld calls returned before their chunks finished",
                     threads[t], failures);
        kiln_pool_free(p);
    }
}

/* Pools freed right away, while their workers may still be starting, and
 * after sleeping idle. */
Test(threadpool, free_idle, .timeout = 60)
{
    for (int i = 0; i < 50; i++)
        kiln_pool_free(kiln_pool_new(1 + i % 8));
    kiln_pool *p = kiln_pool_new(4);
    cr_assert_not_null(p);
    sum_ctx s;
    atomic_init(&s.total, 0);
    kiln_parallel_for(p, 100, sum_fn, &s);
    cr_expect_eq(atomic_load(&s.total), 4950);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL); /* the workers stop spinning and sleep */
    kiln_pool_free(p);
    kiln_pool_free(NULL);
}

Test(threadpool, default_and_null)
{
    kiln_pool *p = kiln_pool_new(0);
    cr_assert_not_null(p);
    cr_expect_eq(kiln_pool_threads(p), kiln_num_cores());
    cr_expect_geq(kiln_num_cores(), 1);
    kiln_pool_free(p);
    cr_expect_eq(kiln_pool_threads(NULL), 1);
    /* a NULL pool, and the runtime struct over it, run inline */
    sum_ctx s;
    atomic_init(&s.total, 0);
    kiln_parallel_for(NULL, 10, sum_fn, &s);
    cr_expect_eq(atomic_load(&s.total), 45);
    kiln_rt rt = kiln_pool_rt(NULL);
    cr_assert_not_null(rt.parallel_for);
    atomic_init(&s.total, 0);
    rt.parallel_for(rt.pool, 10, sum_fn, &s);
    cr_expect_eq(atomic_load(&s.total), 45);
}

/* A parallel_for from inside a chunk runs inline instead of deadlocking. */
typedef struct nest_ctx {
    kiln_pool *p;
    atomic_llong total;
} nest_ctx;

static void nest_inner(void *ctx, int64_t lo, int64_t hi)
{
    nest_ctx *c = ctx;
    atomic_fetch_add(&c->total, hi - lo);
}

static void nest_outer(void *ctx, int64_t lo, int64_t hi)
{
    nest_ctx *c = ctx;
    for (int64_t i = lo; i < hi; i++)
        kiln_parallel_for(c->p, 10, nest_inner, c);
}

Test(threadpool, nested_call_runs_inline, .timeout = 60)
{
    nest_ctx c = {.p = kiln_pool_new(3)};
    cr_assert_not_null(c.p);
    atomic_init(&c.total, 0);
    kiln_parallel_for(c.p, 50, nest_outer, &c);
    cr_expect_eq(atomic_load(&c.total), 500);
    kiln_pool_free(c.p);
}

/* ---- programs on the pool ---- */

static char cache_dir[256];

static void make_cache(void) { kiln_test_tmpdir(cache_dir, sizeof cache_dir, "threads"); }

static void remove_cache(void)
{
    if (cache_dir[0]) kiln_test_rmtree(cache_dir);
    cache_dir[0] = 0;
}

TestSuite(threads_program, .init = make_cache, .fini = remove_cache, .timeout = 600);

#define MODEL KILN_SOURCE_DIR "/examples/fashion_mlp.kiln"
#define BATCH 64
#define STEPS 3

static kiln_graph *load_mlp(void)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_load(MODEL, BATCH, &g, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : kiln_status_str(st));
    return g;
}

static kiln_program *compile_threads(const kiln_graph *g, int threads)
{
    kiln_compile_options opt = kiln_compile_defaults();
    opt.cache_dir = cache_dir;
    opt.threads = threads;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &opt, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : kiln_status_str(st));
    return p;
}

/* What a run leaves: the loss of each step and every parameter and state
 * tensor after the last, as bytes. */
typedef struct result {
    float loss[STEPS];
    char *bytes;
    size_t len;
} result;

static void train(const kiln_graph *g, int threads, result *r)
{
    kiln_program *p = compile_threads(g, threads);
    kiln_program_stats ps;
    cr_assert_eq(kiln_program_stats_get(p, &ps), KILN_OK);
    cr_expect_eq(ps.threads, threads, "the program runs on %d threads", threads);
    cr_assert_eq(kiln_program_init_params(p, 7), KILN_OK);
    /* one fixed batch, the same for every run */
    kiln_tensor_info xi, yi;
    float *x = kiln_program_data(p, "x", &xi);
    int32_t *y = kiln_program_data(p, "y", &yi);
    cr_assert(x && y);
    uint64_t s = 12345;
    for (size_t i = 0; i < xi.bytes / sizeof *x; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    for (size_t i = 0; i < yi.bytes / sizeof *y; i++)
        y[i] = (int32_t)((i * 7 + 3) % 10);
    for (int step = 0; step < STEPS; step++) {
        cr_assert_eq(kiln_program_set_hparam(p, "lr", 1e-3), KILN_OK);
        cr_assert_eq(kiln_program_set_hparam(p, "step", step + 1), KILN_OK);
        cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
        cr_assert_eq(kiln_program_get(p, "loss", &r->loss[step], sizeof r->loss[step]), KILN_OK);
    }
    r->len = 0;
    r->bytes = NULL;
    int nt = kiln_program_num_tensors(p);
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info ti;
        cr_assert_eq(kiln_program_tensor(p, i, &ti), KILN_OK);
        if (ti.role != KILN_ROLE_PARAM && ti.role != KILN_ROLE_STATE) continue;
        r->bytes = realloc(r->bytes, r->len + ti.bytes);
        cr_assert_not_null(r->bytes);
        memcpy(r->bytes + r->len, kiln_program_data(p, ti.name, NULL), ti.bytes);
        r->len += ti.bytes;
    }
    kiln_program_free(p);
}

Test(threads_program, mlp_steps_bit_identical)
{
    kiln_graph *g = load_mlp();
    result r[3];
    const int threads[3] = {1, 2, 3};
    for (int t = 0; t < 3; t++)
        train(g, threads[t], &r[t]);
    for (int t = 1; t < 3; t++) {
        for (int k = 0; k < STEPS; k++)
            cr_expect(memcmp(&r[0].loss[k], &r[t].loss[k], sizeof(float)) == 0,
                      "step %d: loss %.9g with 1 thread, %.9g with %d", k, (double)r[0].loss[k],
                      (double)r[t].loss[k], threads[t]);
        cr_assert_eq(r[0].len, r[t].len);
        size_t differ = 0;
        for (size_t i = 0; i < r[0].len; i += sizeof(float))
            differ += memcmp(r[0].bytes + i, r[t].bytes + i, sizeof(float)) != 0;
        cr_expect_eq(differ, 0, "%zu parameter/state values differ between 1 and %d threads",
                     differ, threads[t]);
    }
    /* and it learnt something: the loss moved */
    cr_expect_neq(r[0].loss[0], r[0].loss[STEPS - 1]);
    for (int t = 0; t < 3; t++)
        free(r[t].bytes);
    kiln_graph_free(g);
}

/* The source: the big matmul and pointwise kernels outline their loop, the
 * loss kernel (one sum over every sample, with a label check) does not. */
Test(threads_program, outlined_loops_in_source)
{
    kiln_graph *g = load_mlp();
    kiln_compile_options opt = kiln_compile_defaults();
    char *err = NULL;
    char *src = kiln_emit_c(g, &opt, &err);
    cr_assert_not_null(src, "%s", err ? err : "");
    cr_expect_not_null(strstr(src, "typedef struct kiln_rt {"));
    /* the first layer's matmul f32[64,784] x f32[512,784]^T with its bias and
     * relu as the GEMM's tail: the GEMM splits its blocks across the pool */
    cr_expect_not_null(strstr(src, "static inline void k4_matmul_g0_tail(void *ctx, int64_t i, "
                                   "int64_t j0, int64_t j1)"),
                       "no fused tail for the first matmul");
    cr_expect_not_null(strstr(src, "k4_matmul_g0(b0, b1, b2, rt, &g0);"), "%s", src);
    cr_expect_not_null(strstr(src, "rt->parallel_for(rt->pool, "), "nothing runs on the pool");
    cr_expect_null(strstr(src, "cross_entropy_p"), "cross_entropy must stay serial");
    /* a small kernel (argmax over f32[64,10]) stays serial too */
    cr_expect_null(strstr(src, "k18_argmax_p"), "a small kernel was outlined");
    cr_expect_not_null(strstr(src, "int kiln_train_step(char *restrict P, char *restrict S, "
                                   "char *restrict A,\n"));
    free(src);
    kiln_graph_free(g);
}

/* threads < 0 is refused; 0 means one per core; the reference backend
 * reports 1. */
Test(threads_program, thread_counts)
{
    kiln_graph *g = kiln_graph_new("tiny");
    int64_t s[] = {4};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    cr_assert_eq(kiln_set_output(g, kiln_exp(g, x), "y"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_compile_options opt = kiln_compile_defaults();
    opt.cache_dir = cache_dir;
    opt.threads = -1;
    kiln_program *p = NULL;
    char *err = NULL;
    cr_expect_eq(kiln_compile(g, &opt, &p, &err), KILN_ERR_INVALID);
    cr_expect(err && strstr(err, "threads"), "%s", err ? err : "(no message)");
    free(err);
    cr_expect_null(p);

    p = compile_threads(g, 0);
    kiln_program_stats ps;
    cr_assert_eq(kiln_program_stats_get(p, &ps), KILN_OK);
    cr_expect_eq(ps.threads, kiln_num_cores());
    float in[4] = {0, 1, 2, 3}, out[4];
    cr_assert_eq(kiln_program_set(p, "x", in, sizeof in), KILN_OK);
    cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "%s", kiln_program_error(p));
    cr_assert_eq(kiln_program_get(p, "y", out, sizeof out), KILN_OK);
    cr_expect_float_eq(out[3], expf(3.0f), 1e-5);
    kiln_program_free(p);

    opt.threads = 4;
    opt.backend = KILN_BACKEND_REF;
    cr_assert_eq(kiln_compile(g, &opt, &p, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_program_stats_get(p, &ps), KILN_OK);
    cr_expect_eq(ps.threads, 1);
    kiln_program_free(p);
    kiln_graph_free(g);
}

/* ---- outlined kernels in hand-built plans ---- */

/* One entry over graph g: x at A + 0, every other node after it. */
typedef struct hplan {
    kiln_place place[8];
    kiln_kernel *k[4];
    kiln_plan_entry entry;
} hplan;

static void hp_build(hplan *h, const kiln_graph *g, const char *name)
{
    memset(h, 0, sizeof *h);
    cr_assert_leq(g->nnodes, 8);
    int64_t off = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        h->place[i] = (kiln_place){.space = KILN_SPACE_A, .offset = off};
        off += (kiln_node_numel(&g->nodes[i]) * 4 + 63) / 64 * 64;
        char err[256] = "";
        kiln_kernel *k = NULL;
        cr_assert_eq(kiln_lower_node(g, i, &k, err, sizeof err), KILN_OK, "%s", err);
        if (k) h->k[h->entry.nkernels++] = k;
    }
    h->entry = (kiln_plan_entry){
        .name = name, .g = g, .place = h->place, .kernels = h->k, .nkernels = h->entry.nkernels};
}

static int count_substr(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub))
        n++;
    return n;
}

/* A kernel that outlines, shared by two entries (written once), and one of
 * the same name with other code (renamed after its entry, its outlined
 * functions too); all three entries run on a 3-thread pool and agree with
 * expf. */
Test(threads_program, outlined_kernels_share_and_rename)
{
    int64_t s1[] = {300, 200}, s2[] = {200, 300};
    kiln_graph *g1 = kiln_graph_new("one"), *g2 = kiln_graph_new("two");
    kiln_value x1 = kiln_input(g1, "x", KILN_F32, 2, s1);
    kiln_value x2 = kiln_input(g2, "x", KILN_F32, 2, s2); /* same node ids, other shape */
    cr_assert_geq(kiln_exp(g1, x1), 0);
    cr_assert_geq(kiln_exp(g2, x2), 0);
    hplan a, b, c;
    hp_build(&a, g1, "forward");
    hp_build(&b, g1, "eval_step");
    hp_build(&c, g2, "train_step");
    kiln_plan_entry es[3] = {a.entry, b.entry, c.entry};
    kiln_plan plan = {.entries = es, .nentries = 3, .a_bytes = 2 * 240000};
    char *src = kiln_emit_c_source(&plan);
    cr_assert_not_null(src);
    cr_expect_eq(count_substr(src, "static int k1_exp("), 1, "%s", src);
    cr_expect_eq(count_substr(src, "static int train_step_k1_exp("), 1, "%s", src);
    cr_expect_eq(count_substr(src, "static void k1_exp_p0(void *ctx"), 1, "%s", src);
    cr_expect_eq(count_substr(src, "static void train_step_k1_exp_p0(void *ctx"), 1, "%s", src);
    cr_expect_eq(count_substr(src, "rt->parallel_for(rt->pool, 300, k1_exp_p0, &c0);"), 1, "%s",
                 src);
    cr_expect_eq(count_substr(src, "rt->parallel_for(rt->pool, 200, train_step_k1_exp_p0, &c0);"),
                 1, "%s", src);
    cr_expect_eq(count_substr(src, "((float *)(A + 240000), (const float *)(A + 0), rt);"), 3, "%s",
                 src);
    cr_expect_null(strchr(src, '\x01'), "a name placeholder was left in the source");
    char *again = kiln_emit_c_source(&plan);
    cr_assert_not_null(again);
    cr_expect_str_eq(src, again, "the same plan gives the same bytes");
    free(again);

    kiln_cc_options o = {.cache_dir = cache_dir};
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    cr_assert_eq(kiln_cc_load(src, &o, &so, &cached, &secs, &err), KILN_OK, "%s\n%s", err, src);
    kiln_pool *pool = kiln_pool_new(3);
    kiln_rt rt = kiln_pool_rt(pool);
    const char *names[] = {"kiln_forward", "kiln_eval_step", "kiln_train_step"};
    float *mem = aligned_alloc(64, (size_t)plan.a_bytes);
    cr_assert_not_null(mem);
    for (int e = 0; e < 3; e++) {
        kiln_entry_fn fn;
        void *addr = kiln_so_sym(so, names[e]);
        cr_assert_not_null(addr, "%s", names[e]);
        memcpy(&fn, &addr, sizeof fn);
        for (int i = 0; i < 60000; i++)
            mem[i] = (float)(i % 17) * 0.25f - 2.0f;
        memset(mem + 60000, 0, 60000 * 4); /* the output at A + 240000 */
        cr_expect_eq(fn(NULL, NULL, (char *)mem, &rt), 0);
        int wrong = 0;
        for (int i = 0; i < 60000; i++)
            wrong += !(fabsf(mem[60000 + i] - expf(mem[i])) <= 1e-6f * expf(mem[i]));
        cr_expect_eq(wrong, 0, "%s: %d elements differ from expf", names[e], wrong);
    }
    free(mem);
    kiln_pool_free(pool);
    kiln_so_close(so);
    free(src);
    for (int i = 0; i < a.entry.nkernels; i++)
        kiln_kernel_free(a.k[i]);
    for (int i = 0; i < b.entry.nkernels; i++)
        kiln_kernel_free(b.k[i]);
    for (int i = 0; i < c.entry.nkernels; i++)
        kiln_kernel_free(c.k[i]);
    kiln_graph_free(g1);
    kiln_graph_free(g2);
}
