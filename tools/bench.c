/* tools/bench.c — `kiln bench`: what the machine can do, and how much of it
 * kiln's generated code gets.
 *
 *   kiln bench peak    [--threads N]                 FP32 FMA peak (GFLOPS)
 *   kiln bench stream  [--threads N] [--size MiB]    STREAM triad bandwidth (GB/s)
 *   kiln bench gemm    [--sizes 256,512] [--shapes MxNxK[:tatb],...] [--threads N]
 *                      [--no-peer] [--tune]           one matmul through kiln_compile,
 *                                                     against OpenBLAS in the same process;
 *                                                     --tune runs the GEMM tile search
 *                                                     (kiln_gemm_tune) for each shape first
 *   kiln bench eltwise [--size N] [--threads N]      relu(x * a + 0.5) * 2 over N floats
 *   kiln bench step MODEL [--bs N] [--steps N] [--threads N] [--backend c|llvm|both]
 *                                                     train_step of a model; `both`
 *                                                     times the C and LLVM programs
 *                                                     side by side, repeats interleaved
 *   kiln bench compile MODEL [--bs N]                compile times, phase by phase
 *   kiln bench kernel MODEL [NAME] [--backend c|llvm] one generated kernel, called by name
 *                                                     through libffi (no NAME: the list);
 *                                                     both in tools/bench_kernel.c
 *
 * Common: --repeats N (default 5), --threads N (default: one per core),
 * --json (one JSON object per line per measurement instead of the table),
 * --no-ref (skip the reference measurement: the FMA peak before gemm and
 * step, the triad before eltwise), -v (the C compiler's commands).
 *
 * What is measured. Every benchmark runs its code once to warm up (page
 * faults, caches, the AVX-512 frequency licence) and then `repeats` timed
 * repeats; a repeat runs the measured call enough times to last about
 * 50 ms, and its time is the wall time (CLOCK_MONOTONIC) per call. The
 * table and the JSON give the minimum and the median over the repeats; the
 * rates (GFLOPS, GB/s) are from the minimum. A median more than 25% above
 * the minimum, or a share above 100% of the FMA peak, is reported on stderr:
 * another process was probably running.
 *
 * The references are measured by kiln itself, through the same compile-
 * and-load path as generated programs (codegen/cc.c: the system compiler,
 * -O3 -march=native -std=c11) and the same thread pool
 * (runtime/threadpool.h):
 *   peak:   independent FMA chains, one accumulator register each (24 zmm
 *           with AVX-512, 12 ymm with AVX2+FMA, 16-byte vectors otherwise),
 *           written with the FMA intrinsics since -std=c11 turns contraction
 *           off; 2 flops per lane per FMA.
 *   stream: the STREAM triad a[i] = b[i] + s*c[i] over three arrays of
 *           --size MiB each (default 256, far larger than the L3), counting
 *           3 x 4 bytes per element as STREAM does (the write-allocate read
 *           of a[] is not counted; plain stores, no streaming stores, as in
 *           generated code).
 * The benchmarks of generated code go only through the public API
 * (kiln_compile, kiln_program_run), so they measure whatever the code
 * generator produces now:
 *   gemm:    a graph of two f32 inputs and one matmul (ta/tb attributes);
 *            GFLOPS = 2*M*N*K / t. The peer is OpenBLAS (dlopen
 *            libopenblas.so.0, cblas_sgemm, openblas_set_num_threads(N)),
 *            same shapes, transposes, data and thread count; the ratio is
 *            kiln / OpenBLAS, and kiln's product is checked against it.
 *   eltwise: y = relu(x * a + 0.5) * 2 with x, a f32[N] inputs: a fused
 *            kernel reads x and a once and writes y once, 12 bytes per
 *            element (the triad's count), which is what GB/s counts; the
 *            share is of the triad bandwidth measured in the same run.
 *   step:    a model's train_step (AdamW, fastai's hyperparameters) on
 *            random inputs and valid class labels; GFLOPS from the
 *            program's train_flops per step; share of the FMA peak.
 * Exit status: 0 success, 1 a failed run (compile or run error), 2 bad usage
 * or bad input.
 */
#include "tools/bench.h"
#include "tools/cli.h"

#include "codegen/codegen.h"
#include "codegen/gemm.h"
#include "codegen/llvm.h"
#include "codegen/target.h"
#include "ir/graph.h"
#include "runtime/threadpool.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- options ---------------------------------------------------------- */

typedef struct bopts {
    const char *sub;   /* peak, stream, gemm, eltwise, step */
    const char *model; /* step */
    int threads;       /* resolved: >= 1 */
    int repeats;
    int json, no_ref, no_peer, tune, verbose;
    int64_t size; /* stream: MiB per array; eltwise: elements; 0: default */
    const char *sizes, *shapes;
    int64_t bs, steps;
    const char *backend; /* step: c (default), llvm or both */
} bopts;

#define REPEAT_SECONDS 0.05 /* a timed repeat lasts at least this long */

static const char bench_usage[] =
    "usage: kiln bench peak|stream|gemm|eltwise|step MODEL [options]\n"
    "  peak     FP32 FMA peak (GFLOPS)                   [--threads N]\n"
    "  stream   STREAM triad (GB/s)                      [--threads N] [--size MiB per array]\n"
    "  gemm     one matmul, against OpenBLAS              [--sizes 256,512,...]\n"
    "           [--shapes MxNxK[:tatb],...] [--no-peer] [--tune] [--threads N]\n"
    "  eltwise  relu(x * a + 0.5) * 2 (GB/s)              [--size N floats] [--threads N]\n"
    "  step     a model's train_step                     MODEL [--bs N] [--steps N] [--threads N]\n"
    "           [--backend c|llvm|both] (both: side by side, repeats interleaved)\n"
    "  compile  compile times: C cold, C warm, LLVM      MODEL [--bs N]\n"
    "  kernel   one generated kernel, called by name     MODEL [NAME] [--bs N]\n"
    "           (no NAME: list them)                     [--backend c|llvm]\n"
    "  common   --repeats N (5)  --json  --no-ref  -v\n";

static int usage_error(const char *sub, const char *fmt, const char *arg)
{
    fprintf(stderr, "kiln bench%s%s: ", sub ? " " : "", sub ? sub : "");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return EXIT_USAGE;
}

/* Whether `name` is a word of the space-separated list `allowed`. */
static bool allowed_opt(const char *allowed, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = allowed; (p = strstr(p, name)); p += n)
        if ((p == allowed || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return true;
    return false;
}

bool bench_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static int parse_args(int argc, char **argv, bopts *o)
{
    memset(o, 0, sizeof *o);
    o->repeats = 5;
    o->bs = 64;
    o->steps = 20;
    if (argc < 3 || argv[2][0] == '-') {
        fputs("kiln bench: needs a benchmark: peak, stream, gemm, eltwise or step MODEL\n", stderr);
        fputs(bench_usage, stderr);
        return EXIT_USAGE;
    }
    o->sub = argv[2];
    const char *allowed;
    const char *common = "--threads --repeats --json --no-ref -v --verbose";
    if (!strcmp(o->sub, "peak")) allowed = "";
    else if (!strcmp(o->sub, "stream")) allowed = "--size";
    else if (!strcmp(o->sub, "gemm")) allowed = "--sizes --shapes --tune --no-peer";
    else if (!strcmp(o->sub, "eltwise")) allowed = "--size";
    else if (!strcmp(o->sub, "step")) allowed = "--bs --batch --steps --backend";
    else if (!strcmp(o->sub, "compile")) allowed = "--bs --batch";
    else {
        fprintf(stderr, "kiln bench: unknown benchmark '%s' (peak, stream, gemm, eltwise, step, "
                        "compile, kernel)\n",
                o->sub);
        return EXIT_USAGE;
    }
    int64_t threads = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if ((strcmp(o->sub, "step") && strcmp(o->sub, "compile")) || o->model)
                return usage_error(o->sub, "unexpected argument '%s'", a);
            o->model = a;
            continue;
        }
        if (!allowed_opt(common, a) && !allowed_opt(allowed, a))
            return usage_error(o->sub, "unknown option '%s' (see kiln bench --help)", a);
        if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--no-ref")) o->no_ref = 1;
        else if (!strcmp(a, "--no-peer")) o->no_peer = 1;
        else if (!strcmp(a, "--tune")) o->tune = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else {
            if (i + 1 >= argc) return usage_error(o->sub, "%s needs a value", a);
            const char *v = argv[++i];
            int64_t x = 0;
            bool ok = true;
            if (!strcmp(a, "--sizes")) o->sizes = v;
            else if (!strcmp(a, "--backend")) {
                o->backend = v;
                ok = !strcmp(v, "c") || !strcmp(v, "llvm") || !strcmp(v, "both");
            }
            else if (!strcmp(a, "--shapes")) o->shapes = v;
            else if (!strcmp(a, "--threads")) ok = bench_parse_int(v, 0, 4096, &threads);
            else if (!strcmp(a, "--repeats")) ok = bench_parse_int(v, 1, 100000, &x), o->repeats = (int)x;
            else if (!strcmp(a, "--bs") || !strcmp(a, "--batch"))
                ok = bench_parse_int(v, 1, 1 << 20, &o->bs);
            else if (!strcmp(a, "--steps")) ok = bench_parse_int(v, 1, 1000000, &o->steps);
            else if (!strcmp(a, "--size"))
                ok = !strcmp(o->sub, "stream") ? bench_parse_int(v, 1, 1 << 20, &o->size)
                                               : bench_parse_int(v, 1, INT64_C(1) << 34, &o->size);
            if (!ok) {
                fprintf(stderr, "kiln bench %s: bad value '%s' for %s (%s)\n", o->sub, v, a,
                        !strcmp(a, "--threads")   ? "0 for one per core, or at most 4096"
                        : !strcmp(a, "--backend") ? "c, llvm or both"
                        : !strcmp(a, "--size") && !strcmp(o->sub, "stream")
                            ? "MiB per array, a positive integer"
                            : "a positive integer");
                return EXIT_USAGE;
            }
        }
    }
    if ((!strcmp(o->sub, "step") || !strcmp(o->sub, "compile")) && !o->model)
        return usage_error(o->sub, "needs a model file (e.g. %s)", "examples/fashion_mlp.kiln");
    o->threads = threads ? (int)threads : kiln_num_cores();
    return 0;
}

/* ---- timing and statistics ------------------------------------------- */

double bench_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_seconds(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) && errno == EINTR) {
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Warms up with one call, then times `repeats` repeats of `inner` calls
 * each (inner from the warm-up, so a repeat lasts REPEAT_SECONDS); seconds
 * per call: minimum and median over the repeats. */
int time_calls(call_fn fn, void *ctx, int repeats, double *tmin, double *tmed)
{
    double t0 = bench_now();
    if (fn(ctx)) return -1;
    double warm = bench_now() - t0;
    int64_t inner = warm > 0 ? (int64_t)ceil(REPEAT_SECONDS / warm) : 1000;
    if (inner < 1) inner = 1;
    if (inner > 100000) inner = 100000;
    double *t = malloc((size_t)repeats * sizeof *t);
    if (!t) return -1;
    for (int r = 0; r < repeats; r++) {
        double s = bench_now();
        for (int64_t i = 0; i < inner; i++)
            if (fn(ctx)) {
                free(t);
                return -1;
            }
        t[r] = (bench_now() - s) / (double)inner;
    }
    qsort(t, (size_t)repeats, sizeof *t, cmp_double);
    *tmin = t[0];
    *tmed = repeats % 2 ? t[repeats / 2] : 0.5 * (t[repeats / 2 - 1] + t[repeats / 2]);
    free(t);
    return 0;
}

int time_calls_interleaved(call_fn fn, void *const *ctx, int n, int repeats, double *tmin,
                           double *tmed)
{
    int64_t inner[8];
    if (n < 1 || n > 8) return -1;
    for (int b = 0; b < n; b++) {
        double t0 = bench_now();
        if (fn(ctx[b])) return -1;
        double warm = bench_now() - t0;
        inner[b] = warm > 0 ? (int64_t)ceil(REPEAT_SECONDS / warm) : 1000;
        if (inner[b] < 1) inner[b] = 1;
        if (inner[b] > 100000) inner[b] = 100000;
    }
    double *t = malloc((size_t)repeats * (size_t)n * sizeof *t);
    if (!t) return -1;
    for (int r = 0; r < repeats; r++)
        for (int b = 0; b < n; b++) {
            double s = bench_now();
            for (int64_t i = 0; i < inner[b]; i++)
                if (fn(ctx[b])) {
                    free(t);
                    return -1;
                }
            t[b * repeats + r] = (bench_now() - s) / (double)inner[b];
        }
    for (int b = 0; b < n; b++) {
        double *tb = t + b * repeats;
        qsort(tb, (size_t)repeats, sizeof *tb, cmp_double);
        tmin[b] = tb[0];
        tmed[b] = repeats % 2 ? tb[repeats / 2] : 0.5 * (tb[repeats / 2 - 1] + tb[repeats / 2]);
    }
    free(t);
    return 0;
}

/* ---- reporting -------------------------------------------------------- */

typedef struct meas {
    const char *name;
    char shape[96];
    int threads;
    double tmin, tmed;
    double rate;       /* GFLOPS or GB/s, from tmin */
    int bytes;         /* the rate is GB/s (else GFLOPS) */
    double share;      /* of the reference; < 0: none measured */
    int is_ref;        /* this is the reference itself */
    double peer_rate;  /* OpenBLAS GFLOPS; < 0: none */
    double max_diff;   /* gemm: max |kiln - OpenBLAS| / max |OpenBLAS|; < 0: none */
    /* step */
    int64_t batch;
    int kernels;
    double compile_seconds;
    int cached;
    double per_thread; /* peak: GFLOPS per thread */
} meas;

static void meas_init(meas *m, const char *name, int threads)
{
    memset(m, 0, sizeof *m);
    m->name = name;
    m->threads = threads;
    m->share = m->peer_rate = m->max_diff = -1;
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

/* A finite number for JSON (NaN and infinities are not JSON). */
static double fin(double x) { return isfinite(x) ? x : 0; }

static void fmt_time(double s, char *buf, size_t len)
{
    if (s < 1e-3) snprintf(buf, len, "%8.2f us", s * 1e6);
    else if (s < 1) snprintf(buf, len, "%8.3f ms", s * 1e3);
    else snprintf(buf, len, "%8.3f s ", s);
}

static int header_done;
static int peer_columns; /* gemm with OpenBLAS loaded: the table has its columns */

static void emit(const bopts *o, const meas *m)
{
    /* timing hygiene: other processes on the machine show as spread */
    if (m->tmed > 1.25 * m->tmin)
        fprintf(stderr, "kiln bench: %s %s: the median is %.0f%% above the minimum; is the "
                        "machine busy?\n", m->name, m->shape, 100 * (m->tmed / m->tmin - 1));
    if (m->share > 1.05 && !m->is_ref && !m->bytes) /* above the FMA peak */
        fprintf(stderr, "kiln bench: %s %s: %.0f%% of the reference: the reference was "
                        "probably disturbed (another process running?)\n", m->name, m->shape,
                100 * m->share);
    if (o->json) {
        printf("{\"name\":");
        json_str(m->name);
        printf(",\"shape\":");
        json_str(m->shape);
        printf(",\"threads\":%d,\"seconds_min\":%.9g,\"seconds_median\":%.9g,\"%s\":%.6g",
               m->threads, fin(m->tmin), fin(m->tmed), m->bytes ? "gbps" : "gflops", fin(m->rate));
        if (m->is_ref) printf(",\"peak_share\":1");
        else if (m->share >= 0) printf(",\"peak_share\":%.6g", fin(m->share));
        if (m->per_thread > 0) printf(",\"gflops_per_thread\":%.6g", fin(m->per_thread));
        if (m->peer_rate >= 0)
            printf(",\"peer\":\"openblas\",\"peer_gflops\":%.6g,\"ratio\":%.6g", fin(m->peer_rate),
                   fin(m->peer_rate > 0 ? m->rate / m->peer_rate : 0));
        if (m->max_diff >= 0) printf(",\"max_rel_diff\":%.3g", fin(m->max_diff));
        if (m->batch) {
            printf(",\"batch\":%lld,\"ms_per_step\":%.6g,\"samples_per_s\":%.6g,"
                   "\"samples_per_s_median\":%.6g,\"kernels\":%d,\"compile_seconds\":%.4g,"
                   "\"cached\":%s",
                   (long long)m->batch, fin(m->tmin * 1e3), fin((double)m->batch / m->tmin),
                   fin((double)m->batch / m->tmed), m->kernels, fin(m->compile_seconds),
                   m->cached ? "true" : "false");
        }
        printf("}\n");
        fflush(stdout);
        return;
    }
    if (!header_done) {
        printf("kiln bench %s: %d thread%s, %d repeat%s (min and median per call)\n", o->sub,
               o->threads, o->threads == 1 ? "" : "s", o->repeats, o->repeats == 1 ? "" : "s");
        printf("%-8s %-28s %3s %11s %11s %16s %6s", "name", "shape", "thr", "min", "median",
               "rate", "share");
        if (peer_columns) printf(" %16s %6s", "OpenBLAS", "ratio");
        putchar('\n');
        header_done = 1;
    }
    char a[32], b[32], rate[32], share[16] = "     -";
    fmt_time(m->tmin, a, sizeof a);
    fmt_time(m->tmed, b, sizeof b);
    snprintf(rate, sizeof rate, "%9.2f %s", m->rate, m->bytes ? "GB/s  " : "GFLOPS");
    if (m->is_ref) snprintf(share, sizeof share, "%6s", "ref");
    else if (m->share >= 0) snprintf(share, sizeof share, "%5.1f%%", 100 * m->share);
    printf("%-8s %-28s %3d %11s %11s %16s %6s", m->name, m->shape, m->threads, a, b, rate, share);
    if (m->peer_rate >= 0)
        printf(" %9.2f GFLOPS %6.2f", m->peer_rate, m->peer_rate > 0 ? m->rate / m->peer_rate : 0);
    if (m->max_diff > 1e-3) printf("  (differs: %.2g)", m->max_diff);
    putchar('\n');
    fflush(stdout);
}

/* ---- compiling the reference kernels ---------------------------------- */

static kiln_so *load_source(const bopts *o, const char *src)
{
    kiln_cc_options cc = {.cc = NULL, .cache_dir = NULL, .verbose = o->verbose};
    kiln_so *so = NULL;
    char *err = NULL;
    int cached = 0;
    double secs = 0;
    if (kiln_cc_load(src, &cc, &so, &cached, &secs, &err)) {
        fprintf(stderr, "kiln bench %s: %s\n", o->sub, err ? err : "cannot compile");
        free(err);
        return NULL;
    }
    return so;
}

static void *need_sym(const bopts *o, kiln_so *so, const char *name)
{
    void *p = kiln_so_sym(so, name);
    if (!p) fprintf(stderr, "kiln bench %s: the compiled kernel has no '%s'\n", o->sub, name);
    return p;
}

/* ---- peak --------------------------------------------------------------- */

/* Independent FMA chains: EACH lists one accumulator per register the ISA
 * can spare (two hold the multiplier and the addend), enough to cover the
 * FMA latency times the FMA ports. acc = acc * m + a with m < 1 converges
 * to a / (1 - m): no overflow, no denormals. */
static const char peak_src[] =
    "/* kiln bench peak: independent FMA chains, one accumulator register each */\n"
    "#include <stdint.h>\n"
    "#include <string.h>\n"
    "#if defined(__AVX512F__)\n"
    "#include <immintrin.h>\n"
    "typedef __m512 vec;\n"
    "#define ISA \"avx512 fma\"\n"
    "#define LANES 16\n"
    "#define VSET(x) _mm512_set1_ps(x)\n"
    "#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)\n"
    "#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) \\\n"
    "    X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)\n"
    "#elif defined(__FMA__) && defined(__AVX__)\n"
    "#include <immintrin.h>\n"
    "typedef __m256 vec;\n"
    "#define ISA \"avx2 fma\"\n"
    "#define LANES 8\n"
    "#define VSET(x) _mm256_set1_ps(x)\n"
    "#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)\n"
    "#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)\n"
    "#elif defined(__aarch64__) && defined(__ARM_NEON)\n"
    "#include <arm_neon.h>\n"
    "typedef float32x4_t vec;\n"
    "#define ISA \"neon fma\"\n"
    "#define LANES 4\n"
    "#define VSET(x) vdupq_n_f32(x)\n"
    "#define VFMA(a, b, c) vfmaq_f32(c, a, b)\n"
    "#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) \\\n"
    "    X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)\n"
    "#else\n"
    "typedef float vec __attribute__((vector_size(16)));\n"
    "#define ISA \"16-byte vectors, mul+add\"\n"
    "#define LANES 4\n"
    "#define VSET(x) ((vec){(x), (x), (x), (x)})\n"
    "#define VFMA(a, b, c) ((a) * (b) + (c))\n"
    "#define EACH(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)\n"
    "#endif\n"
    "#define DECL(k) vec r##k = VSET(1.0f + 0.001f * (float)(k));\n"
    "#define STEP(k) r##k = VFMA(r##k, m, a);\n"
    "#define SUM(k) { float t[LANES]; memcpy(t, &r##k, sizeof t); \\\n"
    "    for (int l = 0; l < LANES; l++) s += t[l]; }\n"
    "#define ONE(k) + 1\n"
    "int kiln_bench_flops_per_iter(void) { return 2 * LANES * (0 EACH(ONE)); }\n"
    "const char *kiln_bench_isa(void) { return ISA; }\n"
    "int kiln_bench_chains(void) { return 0 EACH(ONE); }\n"
    "int kiln_bench_lanes(void) { return LANES; }\n"
    "float kiln_bench_fma(int64_t iters, float mult)\n"
    "{\n"
    "    vec m = VSET(mult), a = VSET(0.001f);\n"
    "    EACH(DECL)\n"
    "    for (int64_t i = 0; i < iters; i++) {\n"
    "        EACH(STEP)\n"
    "    }\n"
    "    float s = 0;\n"
    "    EACH(SUM)\n"
    "    return s;\n"
    "}\n";

typedef struct peak_ctx {
    float (*fma)(int64_t, float);
    int64_t iters; /* per index of the parallel range */
    float sink[256 * 4];
} peak_ctx;

static void peak_task(void *ctx, int64_t lo, int64_t hi)
{
    peak_ctx *c = ctx;
    for (int64_t i = lo; i < hi; i++) c->sink[i] = c->fma(c->iters, 0.999f);
}

/* Measures the FMA peak on `threads` threads into m (and returns 0). */
static int measure_peak(const bopts *o, int threads, meas *m)
{
    kiln_so *so = load_source(o, peak_src);
    if (!so) return EXIT_RUN;
    float (*fma)(int64_t, float) = (float (*)(int64_t, float))need_sym(o, so, "kiln_bench_fma");
    int (*fpi)(void) = (int (*)(void))need_sym(o, so, "kiln_bench_flops_per_iter");
    int (*chains)(void) = (int (*)(void))need_sym(o, so, "kiln_bench_chains");
    int (*lanes)(void) = (int (*)(void))need_sym(o, so, "kiln_bench_lanes");
    const char *(*isa)(void) = (const char *(*)(void))need_sym(o, so, "kiln_bench_isa");
    if (!fma || !fpi || !chains || !lanes || !isa) {
        kiln_so_close(so);
        return EXIT_RUN;
    }
    kiln_pool *pool = kiln_pool_new(threads);
    if (!pool) {
        kiln_so_close(so);
        fprintf(stderr, "kiln bench %s: out of memory\n", o->sub);
        return EXIT_RUN;
    }
    int t = kiln_pool_threads(pool);
    int64_t n = 4 * (int64_t)t; /* the pool's chunks: 4 per thread */
    peak_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        kiln_pool_free(pool);
        kiln_so_close(so);
        return EXIT_RUN;
    }
    c->fma = fma;
    /* size a call to ~50 ms: calibrate on a short one (which also warms up) */
    c->iters = 1 << 14;
    double t0 = bench_now();
    kiln_parallel_for(pool, n, peak_task, c);
    double dt = bench_now() - t0;
    c->iters = (int64_t)((double)c->iters * REPEAT_SECONDS / (dt > 1e-6 ? dt : 1e-6));
    if (c->iters < 1024) c->iters = 1024;
    double *ts = malloc((size_t)o->repeats * sizeof *ts);
    if (!ts) {
        free(c);
        kiln_pool_free(pool);
        kiln_so_close(so);
        return EXIT_RUN;
    }
    /* again, warm (wake-up and the AVX-512 frequency licence no longer in it) */
    t0 = bench_now();
    kiln_parallel_for(pool, n, peak_task, c);
    dt = bench_now() - t0;
    c->iters = (int64_t)((double)c->iters * REPEAT_SECONDS / (dt > 1e-6 ? dt : 1e-6));
    if (c->iters < 1024) c->iters = 1024;
    for (int r = 0; r < o->repeats; r++) {
        double s = bench_now();
        kiln_parallel_for(pool, n, peak_task, c);
        ts[r] = bench_now() - s;
    }
    qsort(ts, (size_t)o->repeats, sizeof *ts, cmp_double);
    meas_init(m, "peak", t);
    m->tmin = ts[0];
    m->tmed = o->repeats % 2 ? ts[o->repeats / 2]
                             : 0.5 * (ts[o->repeats / 2 - 1] + ts[o->repeats / 2]);
    double flops = (double)n * (double)c->iters * (double)fpi();
    m->rate = flops / m->tmin * 1e-9;
    m->per_thread = m->rate / t;
    m->is_ref = 1;
    snprintf(m->shape, sizeof m->shape, "%s %dx%d lanes", isa(), chains(), lanes());
    free(ts);
    free(c);
    kiln_pool_free(pool);
    kiln_so_close(so);
    return 0;
}

static int bench_peak(const bopts *o)
{
    meas m;
    int rc = measure_peak(o, o->threads, &m);
    if (!rc) emit(o, &m);
    return rc;
}

/* ---- stream --------------------------------------------------------------- */

static const char stream_src[] =
    "/* kiln bench stream: the STREAM triad, and a first-touch fill */\n"
    "#include <stdint.h>\n"
    "void kiln_bench_triad(float *restrict a, const float *restrict b, const float *restrict c,\n"
    "                      float s, int64_t lo, int64_t hi)\n"
    "{\n"
    "    for (int64_t i = lo; i < hi; i++) a[i] = b[i] + s * c[i];\n"
    "}\n"
    "void kiln_bench_fill(float *restrict x, float v, int64_t lo, int64_t hi)\n"
    "{\n"
    "    for (int64_t i = lo; i < hi; i++) x[i] = v + (float)(i & 1023) * 0x1p-20f;\n"
    "}\n";

typedef struct stream_ctx {
    void (*triad)(float *, const float *, const float *, float, int64_t, int64_t);
    void (*fill)(float *, float, int64_t, int64_t);
    float *a, *b, *c;
    kiln_pool *pool;
    int64_t n;
} stream_ctx;

static void triad_task(void *ctx, int64_t lo, int64_t hi)
{
    stream_ctx *c = ctx;
    c->triad(c->a, c->b, c->c, 3.0f, lo, hi);
}

static void fill_task(void *ctx, int64_t lo, int64_t hi)
{
    stream_ctx *c = ctx;
    c->fill(c->a, 0.0f, lo, hi);
    c->fill(c->b, 1.0f, lo, hi);
    c->fill(c->c, 2.0f, lo, hi);
}

static int triad_call(void *ctx)
{
    stream_ctx *c = ctx;
    kiln_parallel_for(c->pool, c->n, triad_task, c);
    return 0;
}

/* MemAvailable from /proc/meminfo in bytes, or 0 when unknown. */
static uint64_t mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

static void *big_alloc(size_t bytes)
{
    void *p = NULL;
    /* 2 MiB alignment lets the kernel back the arrays with huge pages */
    if (posix_memalign(&p, (size_t)1 << 21, bytes)) return NULL;
    return p;
}

static int measure_stream(const bopts *o, int threads, int64_t mib, meas *m)
{
    uint64_t bytes = (uint64_t)mib << 20, avail = mem_available();
    if (avail && 3 * bytes > avail / 10 * 9) {
        fprintf(stderr, "kiln bench %s: 3 arrays of %lld MiB do not fit in the %llu MiB of "
                        "available memory; use a smaller --size\n",
                o->sub, (long long)mib, (unsigned long long)(avail >> 20));
        return EXIT_USAGE;
    }
    kiln_so *so = load_source(o, stream_src);
    if (!so) return EXIT_RUN;
    stream_ctx c = {0};
    c.triad = (void (*)(float *, const float *, const float *, float, int64_t, int64_t))need_sym(
        o, so, "kiln_bench_triad");
    c.fill = (void (*)(float *, float, int64_t, int64_t))need_sym(o, so, "kiln_bench_fill");
    c.n = (int64_t)(bytes / sizeof(float));
    int rc = EXIT_RUN;
    if (!c.triad || !c.fill) goto out;
    c.a = big_alloc(bytes);
    c.b = big_alloc(bytes);
    c.c = big_alloc(bytes);
    c.pool = kiln_pool_new(threads);
    if (!c.a || !c.b || !c.c || !c.pool) {
        fprintf(stderr, "kiln bench %s: out of memory for 3 x %lld MiB\n", o->sub, (long long)mib);
        goto out;
    }
    kiln_parallel_for(c.pool, c.n, fill_task, &c); /* page faults outside the timing */
    meas_init(m, "stream", kiln_pool_threads(c.pool));
    if (time_calls(triad_call, &c, o->repeats, &m->tmin, &m->tmed)) goto out;
    m->bytes = 1;
    m->rate = 3.0 * (double)bytes / m->tmin * 1e-9;
    m->is_ref = 1;
    snprintf(m->shape, sizeof m->shape, "triad 3 x %lld MiB", (long long)mib);
    rc = 0;
out:
    kiln_pool_free(c.pool);
    free(c.a);
    free(c.b);
    free(c.c);
    kiln_so_close(so);
    return rc;
}

static int bench_stream(const bopts *o)
{
    meas m;
    int rc = measure_stream(o, o->threads, o->size ? o->size : 256, &m);
    if (!rc) emit(o, &m);
    return rc;
}

/* ---- programs ------------------------------------------------------------ */

/* A small seeded generator (splitmix64) for the benchmarks' data. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float rng_sym(uint64_t *s) { return (float)((double)(rng_next(s) >> 40) * 0x1p-23 - 1.0); }

void fill_random(void *data, kiln_dtype t, size_t n, uint64_t *s, int64_t classes)
{
    for (size_t i = 0; i < n; i++) {
        switch (t) {
        case KILN_F32: ((float *)data)[i] = classes ? rng_sym(s) * 0.5f + 0.5f : rng_sym(s); break;
        case KILN_F64: ((double *)data)[i] = classes ? rng_sym(s) * 0.5 + 0.5 : rng_sym(s); break;
        case KILN_I32:
            ((int32_t *)data)[i] = classes > 0 ? (int32_t)(rng_next(s) % (uint64_t)classes) : 0;
            break;
        case KILN_I64:
            ((int64_t *)data)[i] = classes > 0 ? (int64_t)(rng_next(s) % (uint64_t)classes) : 0;
            break;
        default: memset((char *)data + i * kiln_dtype_size(t), 0, kiln_dtype_size(t)); break;
        }
    }
}

static kiln_program *compile_graph(const bopts *o, const kiln_graph *g, kiln_compile_options *co)
{
    kiln_program *p = NULL;
    char *err = NULL;
    co->threads = o->threads;
    co->verbose = o->verbose;
    if (kiln_compile(g, co, &p, &err)) {
        fprintf(stderr, "kiln bench %s: %s\n", o->sub, err ? err : "compile failed");
        free(err);
        return NULL;
    }
    return p;
}

typedef struct prog_ctx {
    kiln_program *p;
    const char *entry;
    const char *sub;
} prog_ctx;

static int run_call(void *ctx)
{
    prog_ctx *c = ctx;
    if (kiln_program_run(c->p, c->entry)) {
        fprintf(stderr, "kiln bench %s: %s: %s\n", c->sub, c->entry, kiln_program_error(c->p));
        return -1;
    }
    return 0;
}

/* The FMA peak at o->threads as a reference, unless --no-ref: 0 when it
 * is not measured (*peak_gflops then stays 0), or an exit status. */
static int peak_ref(const bopts *o, double *peak_gflops)
{
    *peak_gflops = 0;
    if (o->no_ref) return 0;
    meas m;
    int rc = measure_peak(o, o->threads, &m);
    if (rc) return rc;
    emit(o, &m);
    *peak_gflops = m.rate;
    return 0;
}

/* ---- gemm ------------------------------------------------------------------ */

typedef struct gshape {
    int64_t M, N, K;
    int ta, tb;
} gshape;

/* OpenBLAS's CBLAS, declared here (row-major 101, no transpose 111,
 * transpose 112; blasint is int in Debian's build). */
typedef void (*sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha,
                         const float *A, int lda, const float *B, int ldb, float beta, float *C,
                         int ldc);
typedef struct openblas {
    void *h;
    sgemm_fn sgemm;
    void (*set_threads)(int);
    const char *(*config)(void);
} openblas;

static bool openblas_open(openblas *ob)
{
    memset(ob, 0, sizeof *ob);
    ob->h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!ob->h) ob->h = dlopen("libopenblas.so", RTLD_NOW | RTLD_LOCAL);
    if (!ob->h) return false;
    *(void **)&ob->sgemm = dlsym(ob->h, "cblas_sgemm");
    *(void **)&ob->set_threads = dlsym(ob->h, "openblas_set_num_threads");
    *(void **)&ob->config = dlsym(ob->h, "openblas_get_config");
    if (!ob->sgemm) {
        dlclose(ob->h);
        ob->h = NULL;
        return false;
    }
    return true;
}

typedef struct blas_ctx {
    openblas *ob;
    gshape s;
    const float *A, *B;
    float *C;
} blas_ctx;

static int blas_call(void *ctx)
{
    blas_ctx *c = ctx;
    const gshape *s = &c->s;
    int lda = (int)(s->ta ? s->M : s->K), ldb = (int)(s->tb ? s->K : s->N);
    c->ob->sgemm(101, s->ta ? 112 : 111, s->tb ? 112 : 111, (int)s->M, (int)s->N, (int)s->K, 1.0f,
                 c->A, lda, c->B, ldb, 0.0f, c->C, (int)s->N);
    return 0;
}

/* Appends the shapes of a comma-separated list: squares ("256") when
 * `squares`, else "MxNxK" with an optional ":tatb" (two of 0/1 or n/t). */
static int parse_shapes(const bopts *o, const char *list, bool squares, gshape **v, int *n)
{
    const char *p = list;
    char bad_item[64];
    for (;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char item[96];
        snprintf(bad_item, sizeof bad_item, "%.*s", (int)len, p);
        if (len == 0 || len >= sizeof item) goto bad;
        memcpy(item, p, len);
        item[len] = 0;
        gshape s = {0};
        if (squares) {
            if (!bench_parse_int(item, 1, 32768, &s.M)) goto bad;
            s.N = s.K = s.M;
        } else {
            char *colon = strchr(item, ':');
            if (colon) {
                *colon = 0;
                const char *t = colon + 1;
                if (strlen(t) != 2) goto bad;
                for (int k = 0; k < 2; k++) {
                    int on = t[k] == '1' || t[k] == 't' || t[k] == 'T';
                    if (!on && t[k] != '0' && t[k] != 'n' && t[k] != 'N') goto bad;
                    *(k ? &s.tb : &s.ta) = on;
                }
            }
            char *x1 = strchr(item, 'x'), *x2 = x1 ? strchr(x1 + 1, 'x') : NULL;
            if (!x1 || !x2) goto bad;
            *x1 = *x2 = 0;
            if (!bench_parse_int(item, 1, 32768, &s.M) || !bench_parse_int(x1 + 1, 1, 32768, &s.N) ||
                !bench_parse_int(x2 + 1, 1, 32768, &s.K))
                goto bad;
        }
        if ((double)(s.M * s.K + s.K * s.N + s.M * s.N) * 4 > 6.0 * (1u << 30)) {
            fprintf(stderr, "kiln bench gemm: %lldx%lldx%lld needs more than 6 GiB\n",
                    (long long)s.M, (long long)s.N, (long long)s.K);
            return EXIT_USAGE;
        }
        gshape *nv = realloc(*v, (size_t)(*n + 1) * sizeof *nv);
        if (!nv) return EXIT_RUN;
        *v = nv;
        nv[(*n)++] = s;
        if (!e) return 0;
        p = e + 1;
    }
bad:
    fprintf(stderr, "kiln bench %s: bad %s '%s' in %s (%s)\n", o->sub,
            squares ? "size" : "shape", bad_item, squares ? "--sizes" : "--shapes",
            squares ? "--sizes takes positive integers up to 32768 separated by commas, e.g. "
                      "256,512"
                    : "--shapes takes MxNxK[:tatb] separated by commas, e.g. "
                      "128x512x784:01 for x @ W^T; ta, tb are 0/1 or n/t");
    return EXIT_USAGE;
}

/* --tune: the tile search of codegen/gemm.c for this shape, which writes the
 * fastest tiles to the cache file that the next compile of the shape reads
 * (kiln_gemm_tiles_cached). Its progress goes to stderr with -v. */
static int gemm_tune(const bopts *o, const gshape *s)
{
    kiln_cg_target t;
    kiln_target_host(&t);
    kiln_gemm_shape gs = {.M = s->M, .N = s->N, .K = s->K, .ta = s->ta, .tb = s->tb,
                          .lda = s->ta ? s->M : s->K, .ldb = s->tb ? s->K : s->N, .ldc = s->N};
    kiln_gemm_tiles best;
    kiln_status st = kiln_gemm_tune(&t, &gs, o->threads, &best, o->verbose ? stderr : NULL);
    if (st) {
        fprintf(stderr, "kiln bench gemm: tuning %lldx%lldx%lld failed: %s%s\n", (long long)s->M,
                (long long)s->N, (long long)s->K, kiln_status_str(st),
                o->verbose ? "" : " (-v shows the search)");
        return EXIT_RUN;
    }
    fprintf(stderr,
            "kiln bench gemm: tuned %lldx%lldx%lld:%c%c: %dx%d micro-tile, mc %lld, kc %lld, "
            "nc %lld\n", (long long)s->M, (long long)s->N, (long long)s->K,
            s->ta ? 't' : 'n', s->tb ? 't' : 'n', best.mr, best.nr, (long long)best.mc,
            (long long)best.kc, (long long)best.nc);
    return 0;
}

/* One matmul through kiln, and OpenBLAS on the same data. */
static int gemm_one(const bopts *o, const gshape *s, double peak, openblas *ob)
{
    if (o->tune) {
        int rc = gemm_tune(o, s);
        if (rc) return rc;
    }
    int64_t as[2] = {s->ta ? s->K : s->M, s->ta ? s->M : s->K};
    int64_t bsh[2] = {s->tb ? s->N : s->K, s->tb ? s->K : s->N};
    kiln_graph *g = kiln_graph_new("bench_gemm");
    if (!g) return EXIT_RUN;
    kiln_value a = kiln_input(g, "a", KILN_F32, 2, as);
    kiln_value b = kiln_input(g, "b", KILN_F32, 2, bsh);
    kiln_value c = kiln_matmul(g, a, b, s->ta, s->tb);
    if (c < 0 || kiln_set_output(g, c, "c")) {
        fprintf(stderr, "kiln bench gemm: building the graph: %s\n", kiln_graph_error(g));
        kiln_graph_free(g);
        return EXIT_RUN;
    }
    kiln_compile_options co = kiln_compile_defaults();
    kiln_program *p = compile_graph(o, g, &co);
    kiln_graph_free(g);
    if (!p) return EXIT_RUN;
    int rc = EXIT_RUN;
    float *pa = kiln_program_data(p, "a", NULL), *pb = kiln_program_data(p, "b", NULL);
    float *pc = kiln_program_data(p, "c", NULL), *oc = NULL;
    if (!pa || !pb || !pc) {
        fprintf(stderr, "kiln bench gemm: the program lacks a, b or c: %s\n",
                kiln_program_error(p));
        goto out;
    }
    uint64_t seed = 42;
    fill_random(pa, KILN_F32, (size_t)(s->M * s->K), &seed, 0);
    fill_random(pb, KILN_F32, (size_t)(s->K * s->N), &seed, 0);
    meas m;
    meas_init(&m, "gemm", o->threads);
    kiln_program_stats st;
    if (!kiln_program_stats_get(p, &st)) m.threads = st.threads;
    snprintf(m.shape, sizeof m.shape, "%lldx%lldx%lld:%c%c", (long long)s->M, (long long)s->N,
             (long long)s->K, s->ta ? 't' : 'n', s->tb ? 't' : 'n');
    prog_ctx pc_ctx = {p, "forward", o->sub};
    if (time_calls(run_call, &pc_ctx, o->repeats, &m.tmin, &m.tmed)) goto out;
    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
    m.rate = flops / m.tmin * 1e-9;
    if (peak > 0) m.share = m.rate / peak;
    if (ob && ob->h) {
        oc = malloc((size_t)(s->M * s->N) * sizeof *oc);
        if (!oc) goto out;
        if (ob->set_threads) ob->set_threads(o->threads);
        blas_ctx bc = {ob, *s, pa, pb, oc};
        double bmin, bmed;
        if (time_calls(blas_call, &bc, o->repeats, &bmin, &bmed)) goto out;
        m.peer_rate = flops / bmin * 1e-9;
        double dmax = 0, cmax = 0;
        for (int64_t i = 0; i < s->M * s->N; i++) {
            double d = fabs((double)pc[i] - (double)oc[i]);
            if (!(d <= dmax)) dmax = d; /* NaN counts as a difference */
            if (fabs((double)oc[i]) > cmax) cmax = fabs((double)oc[i]);
        }
        m.max_diff = cmax > 0 ? dmax / cmax : dmax;
        if (!isfinite(m.max_diff)) m.max_diff = 1e30;
        if (m.max_diff > 1e-3)
            fprintf(stderr, "kiln bench gemm: %s: kiln's product differs from OpenBLAS's "
                            "(max |diff| / max |C| = %.3g)\n", m.shape, m.max_diff);
        /* OpenBLAS's idle threads spin for a while; let them go to sleep
         * before kiln's next measurement */
        sleep_seconds(0.2);
    }
    emit(o, &m);
    rc = 0;
out:
    free(oc);
    kiln_program_free(p);
    return rc;
}

static int bench_gemm(const bopts *o)
{
    gshape *v = NULL;
    int n = 0, rc = 0;
    if (o->sizes) rc = parse_shapes(o, o->sizes, true, &v, &n);
    if (!rc && o->shapes) rc = parse_shapes(o, o->shapes, false, &v, &n);
    if (!rc && !o->sizes && !o->shapes)
        /* squares, and the MLP's training step at batch 128 (784-512-512-10):
         * forward x @ W^T, backward dY @ W and dY^T @ X */
    {
        rc = parse_shapes(o, "256,512,1024,2048", true, &v, &n);
        if (!rc)
            rc = parse_shapes(o,
                              "128x512x784:01,128x512x512:01,128x10x512:01,128x784x512:00,"
                              "512x784x128:10,512x512x128:10,10x512x128:10",
                              false, &v, &n);
    }
    if (rc) {
        free(v);
        return rc;
    }
    openblas ob = {0};
    if (!o->no_peer && !openblas_open(&ob))
        fprintf(stderr, "kiln bench gemm: OpenBLAS not found (libopenblas.so.0): no peer "
                        "figures (apt-get install libopenblas0-pthread)\n");
    peer_columns = ob.h != NULL;
    double peak = 0;
    rc = peak_ref(o, &peak);
    for (int i = 0; !rc && i < n; i++) rc = gemm_one(o, &v[i], peak, ob.h ? &ob : NULL);
    if (!o->json && ob.h && ob.config) printf("peer: %s\n", ob.config());
    if (ob.h) dlclose(ob.h);
    free(v);
    return rc;
}

/* ---- eltwise --------------------------------------------------------------- */

static int bench_eltwise(const bopts *o)
{
    int64_t n = o->size ? o->size : INT64_C(64) << 20;
    uint64_t avail = mem_available();
    /* inputs and output, and at most two unfused intermediates */
    if (avail && (double)n * 4 * 5 > (double)avail * 0.9) {
        fprintf(stderr, "kiln bench eltwise: %lld floats do not fit in the %llu MiB of available "
                        "memory; use a smaller --size\n",
                (long long)n, (unsigned long long)(avail >> 20));
        return EXIT_USAGE;
    }
    double triad = 0;
    if (!o->no_ref) {
        meas r;
        int rc = measure_stream(o, o->threads, 256, &r);
        if (rc) return rc;
        emit(o, &r);
        triad = r.rate;
    }
    kiln_graph *g = kiln_graph_new("bench_eltwise");
    if (!g) return EXIT_RUN;
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, &n);
    kiln_value a = kiln_input(g, "a", KILN_F32, 1, &n);
    kiln_value y = kiln_add(g, kiln_mul(g, x, a), kiln_scalar(g, 0.5, KILN_F32));
    y = kiln_mul(g, kiln_relu(g, y), kiln_scalar(g, 2.0, KILN_F32));
    if (y < 0 || kiln_set_output(g, y, "y")) {
        fprintf(stderr, "kiln bench eltwise: building the graph: %s\n", kiln_graph_error(g));
        kiln_graph_free(g);
        return EXIT_RUN;
    }
    kiln_compile_options co = kiln_compile_defaults();
    kiln_program *p = compile_graph(o, g, &co);
    kiln_graph_free(g);
    if (!p) return EXIT_RUN;
    int rc = EXIT_RUN;
    float *px = kiln_program_data(p, "x", NULL), *pa = kiln_program_data(p, "a", NULL);
    if (!px || !pa) {
        fprintf(stderr, "kiln bench eltwise: the program lacks x or a: %s\n",
                kiln_program_error(p));
        goto out;
    }
    uint64_t seed = 7;
    fill_random(px, KILN_F32, (size_t)n, &seed, 0);
    fill_random(pa, KILN_F32, (size_t)n, &seed, 0);
    meas m;
    meas_init(&m, "eltwise", o->threads);
    kiln_program_stats st;
    if (!kiln_program_stats_get(p, &st)) m.threads = st.threads;
    snprintf(m.shape, sizeof m.shape, "relu(x*a+.5)*2 [%lld]", (long long)n);
    prog_ctx c = {p, "forward", o->sub};
    if (time_calls(run_call, &c, o->repeats, &m.tmin, &m.tmed)) goto out;
    m.bytes = 1;
    m.rate = 12.0 * (double)n / m.tmin * 1e-9; /* x, a read once; y written once */
    if (triad > 0) m.share = m.rate / triad;
    emit(o, &m);
    rc = 0;
out:
    kiln_program_free(p);
    return rc;
}

/* ---- step ------------------------------------------------------------------- */

/* The class count for a target: the class axis of the float tensor that the
 * target is compared with (the logits of cross_entropy or accuracy: the
 * last axis, or axis 1 of per-pixel logits [N, C, H, W] against labels
 * [N, H, W], as PyTorch's cross_entropy reads them); 0 when no node reads
 * it that way. */
int64_t label_classes(const kiln_graph *g, const char *target)
{
    kiln_value t = kiln_graph_find(g, target);
    if (t < 0) return 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *nd = kiln_node_at(g, i);
        if (nd->ninputs < 2 || nd->inputs[1] != t || nd->inputs[0] == t) continue;
        const kiln_node *lg = kiln_node_at(g, nd->inputs[0]);
        const kiln_node *tn = kiln_node_at(g, t);
        if (kiln_dtype_is_float((kiln_dtype)lg->dtype) && lg->rank >= 1)
            return lg->shape[lg->rank > 2 && lg->rank == tn->rank + 1 ? 1 : lg->rank - 1];
    }
    return 0;
}

static int set_hp(kiln_program *p, const char *name, double v)
{
    kiln_status st = kiln_program_set_hparam(p, name, v);
    if (st && st != KILN_ERR_NOT_FOUND) {
        fprintf(stderr, "kiln bench step: hyperparameter '%s': %s\n", name, kiln_program_error(p));
        return -1;
    }
    return 0;
}

typedef struct step_ctx {
    kiln_program *p;
    int64_t step, steps;
} step_ctx;

/* `steps` train steps (hyperparameters as fastai's AdamW: lr 2e-3, betas
 * 0.9/0.99, eps 1e-5, wd 1e-2; step counts on). */
static int step_call(void *ctx)
{
    step_ctx *c = ctx;
    for (int64_t i = 0; i < c->steps; i++) {
        if (set_hp(c->p, "step", (double)++c->step)) return -1;
        if (kiln_program_run(c->p, "train_step")) {
            fprintf(stderr, "kiln bench step: train_step: %s\n", kiln_program_error(c->p));
            return -1;
        }
    }
    return 0;
}

/* kiln bench compile MODEL: the time to compile the model's programs (train,
 * eval, forward) with the C backend from an empty cache and again from the
 * warm cache, and with the LLVM backend in process when kiln has it, phase
 * by phase (tools/bench_kernel.c, also `kiln info --timings`). */
static int bench_compile(const bopts *o)
{
    return compile_timings_report("bench compile", o->model, o->bs, o->threads, "both", true,
                                  o->json, o->verbose);
}

/* Compiles g for `backend` (c or llvm) and readies a train step: weights
 * from seed 42, random inputs and labels, fastai's hyperparameters, three
 * warm-up steps. */
static int step_prepare(const bopts *o, const kiln_graph *g, const char *backend,
                        kiln_program **out, kiln_program_stats *st, step_ctx *sc)
{
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = "bench step";
    c.model = o->model;
    c.threads = o->threads;
    c.verbose = o->verbose;
    c.backend = backend;
    kiln_compile_options co;
    if (!cli_compile_options(&c, &co)) return EXIT_USAGE;
    kiln_program *p = compile_graph(o, g, &co);
    if (!p) return EXIT_RUN;
    *out = p;
    if (!kiln_program_has_entry(p, "train_step")) {
        fprintf(stderr, "kiln bench step: %s has no train_step (it needs a loss and parameters)\n",
                o->model);
        return EXIT_USAGE;
    }
    if (kiln_program_init_params(p, 42)) {
        fprintf(stderr, "kiln bench step: %s\n", kiln_program_error(p));
        return EXIT_RUN;
    }
    uint64_t seed = 1;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t) ||
            (t.role != KILN_ROLE_INPUT && t.role != KILN_ROLE_TARGET))
            continue;
        void *d = kiln_program_data(p, t.name, NULL);
        if (!d) continue;
        size_t numel = t.bytes / kiln_dtype_size(t.dtype);
        /* targets: class labels in [0, C), or probabilities in [0, 1) */
        int64_t classes = t.role == KILN_ROLE_TARGET ? label_classes(g, t.name) : 0;
        if (t.role == KILN_ROLE_TARGET && kiln_dtype_is_float(t.dtype)) classes = 1;
        fill_random(d, t.dtype, numel, &seed, classes);
    }
    if (set_hp(p, "lr", 2e-3) || set_hp(p, "mom", 0.9) || set_hp(p, "wd", 1e-2) ||
        set_hp(p, "beta2", 0.99) || set_hp(p, "eps", 1e-5))
        return EXIT_RUN;
    if (kiln_program_stats_get(p, st)) return EXIT_RUN;
    *sc = (step_ctx){p, 0, 3};
    if (step_call(sc)) return EXIT_RUN; /* warm-up */
    sc->steps = o->steps;
    return 0;
}

/* kiln bench step MODEL [--backend c|llvm|both]: ms per train step; with
 * both, the C and the LLVM program of the same graph, weights and inputs,
 * timed with interleaved repeats, and the ratio of their times. */
static int bench_step(const bopts *o)
{
    const char *be = o->backend ? o->backend : "c";
    bool both = !strcmp(be, "both");
    const char *names[2] = {both ? "c" : be, "llvm"};
    int n = both ? 2 : 1;
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = "bench step";
    c.model = o->model;
    c.threads = o->threads;
    c.verbose = o->verbose;
    kiln_graph *g = cli_load_model(&c, o->bs);
    if (!g) return EXIT_USAGE;
    double peak = 0;
    int rc = peak_ref(o, &peak);
    kiln_program *p[2] = {NULL, NULL};
    kiln_program_stats st[2];
    step_ctx sc[2];
    meas m[2];
    for (int b = 0; b < n && !rc; b++)
        rc = step_prepare(o, g, names[b], &p[b], &st[b], &sc[b]);
    if (rc) goto out;
    rc = EXIT_RUN;
    double tmin[2], tmed[2];
    void *ctx[2] = {&sc[0], &sc[1]};
    if (time_calls_interleaved(step_call, ctx, n, o->repeats, tmin, tmed)) goto out;
    const char *base = strrchr(o->model, '/');
    for (int b = 0; b < n; b++) {
        meas_init(&m[b], "step", st[b].threads);
        snprintf(m[b].shape, sizeof m[b].shape, "%.60s bs %lld%s%s", base ? base + 1 : o->model,
                 (long long)o->bs, o->backend ? " " : "", o->backend ? names[b] : "");
        /* time_calls timed calls of `steps` steps: per step */
        m[b].tmin = tmin[b] / (double)o->steps;
        m[b].tmed = tmed[b] / (double)o->steps;
        m[b].rate = st[b].train_flops / m[b].tmin * 1e-9;
        if (peak > 0) m[b].share = m[b].rate / peak;
        m[b].batch = o->bs;
        m[b].kernels = st[b].num_kernels;
        m[b].compile_seconds = st[b].compile_seconds;
        m[b].cached = st[b].cached;
        emit(o, &m[b]);
    }
    for (int b = 0; b < n && !o->json; b++)
        printf("  %s%s%.3f ms/step (median %.3f), %.0f samples/s, %d kernels per step, %.3f GFLOP "
               "per step, compiled in %.2f s%s\n",
               o->backend ? names[b] : "", o->backend ? ": " : "", m[b].tmin * 1e3,
               m[b].tmed * 1e3, (double)o->bs / m[b].tmin, st[b].num_kernels,
               st[b].train_flops * 1e-9, st[b].compile_seconds, st[b].cached ? " (cached)" : "");
    if (both) {
        double rmin = m[1].tmin / m[0].tmin, rmed = m[1].tmed / m[0].tmed;
        if (o->json) {
            printf("{\"name\":\"step ratio\",\"shape\":");
            json_str(m[0].shape);
            printf(",\"threads\":%d,\"llvm_over_c_min\":%.6g,\"llvm_over_c_median\":%.6g}\n",
                   st[0].threads, fin(rmin), fin(rmed));
        } else
            printf("  LLVM / C time per step: %.3fx (min), %.3fx (median); %d interleaved repeats\n",
                   rmin, rmed, o->repeats);
    }
    rc = 0;
out:
    for (int b = 0; b < 2; b++)
        kiln_program_free(p[b]);
    kiln_graph_free(g);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------ */

int cmd_bench(int argc, char **argv)
{
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(bench_usage, stdout);
            return 0;
        }
    if (argc > 2 && !strcmp(argv[2], "kernel")) return cmd_bench_kernel(argc, argv);
    bopts o;
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc;
    if (!strcmp(o.sub, "peak")) return bench_peak(&o);
    if (!strcmp(o.sub, "stream")) return bench_stream(&o);
    if (!strcmp(o.sub, "gemm")) return bench_gemm(&o);
    if (!strcmp(o.sub, "eltwise")) return bench_eltwise(&o);
    if (!strcmp(o.sub, "compile")) return bench_compile(&o);
    return bench_step(&o);
}
