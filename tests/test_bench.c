/* tests/test_bench.c — `kiln bench` as a user runs it (tools/bench.c): each
 * case runs the built binary with tiny sizes, one repeat and --json, and
 * checks every output line minimally (a JSON object with the fields every
 * measurement has, numbers positive, the extra fields of its benchmark), and
 * that bad usage exits with status 2 and one message.
 *
 * The binary is the `kiln` next to this test's executable (both are built
 * in the build folder); it runs in the source folder with XDG_CACHE_HOME set
 * to the case's temporary folder, so no case reuses compiled kernels. */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[128];   /* this case's temporary folder */
static char kiln_bin[PATH_MAX];

static void setup(void)
{
    kiln_test_tmpdir(tmp, sizeof tmp, "bench");
    ssize_t n = readlink("/proc/self/exe", kiln_bin, sizeof kiln_bin - 8);
    cr_assert_gt(n, 0, "readlink /proc/self/exe: %s", strerror(errno));
    kiln_bin[n] = 0;
    char *slash = strrchr(kiln_bin, '/');
    cr_assert_not_null(slash);
    strcpy(slash + 1, "kiln");
    cr_assert_eq(access(kiln_bin, X_OK), 0, "no kiln binary at %s (build the kiln target)",
                 kiln_bin);
}

static void teardown(void) { kiln_test_rmtree(tmp); }

TestSuite(bench, .init = setup, .fini = teardown, .timeout = 120);

typedef struct run {
    int status;
    char *out, *err;
} run;

/* Runs `kiln bench ARGS...` (NULL-terminated) in the source folder. */
static run bench(const char *const *args)
{
    char out[256], err[256];
    snprintf(out, sizeof out, "%s/stdout", tmp);
    snprintf(err, sizeof err, "%s/stderr", tmp);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0) _exit(126);
        if (chdir(KILN_SOURCE_DIR)) _exit(126);
        char cache[192];
        snprintf(cache, sizeof cache, "%s/cache", tmp);
        setenv("XDG_CACHE_HOME", cache, 1);
        const char *argv[32] = {"kiln", "bench"};
        int n = 2;
        for (; args[n - 2] && n < 31; n++) argv[n] = args[n - 2];
        argv[n] = NULL;
        execv(kiln_bin, (char *const *)argv);
        _exit(127);
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0) cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    run r;
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    r.out = kiln_test_slurp(out, NULL);
    r.err = kiln_test_slurp(err, NULL);
    cr_assert_neq(r.status, 127, "cannot run %s", kiln_bin);
    return r;
}

static void run_free(run *r)
{
    free(r->out);
    free(r->err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void want_status(const run *r, int status, const char *what)
{
    cr_assert_eq(r->status, status, "%s: exit status %d, want %d\n--- stdout:\n%s\n--- stderr:\n%s",
                 what, r->status, status, r->out, r->err);
}

/* ---- a minimal reading of one JSON line ---- */

/* Where the value of "key" starts in the object `line`, or NULL. */
static const char *json_value(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? p + strlen(pat) : NULL;
}

static double json_num(const char *line, const char *key)
{
    const char *v = json_value(line, key);
    cr_assert_not_null(v, "no \"%s\" in %s", key, line);
    char *end = NULL;
    double x = strtod(v, &end);
    cr_assert(end != v && (*end == ',' || *end == '}'), "\"%s\" is not a number in %s", key,
              line);
    return x;
}

static void json_positive(const char *line, const char *key)
{
    double x = json_num(line, key);
    cr_assert_gt(x, 0, "\"%s\" is %g in %s", key, x, line);
}

/* The string value of key, copied into buf. */
static void json_string(const char *line, const char *key, char *buf, size_t len)
{
    const char *v = json_value(line, key);
    cr_assert_not_null(v, "no \"%s\" in %s", key, line);
    cr_assert_eq(*v, '"', "\"%s\" is not a string in %s", key, line);
    const char *e = strchr(v + 1, '"');
    cr_assert_not_null(e);
    snprintf(buf, len, "%.*s", (int)(e - v - 1), v + 1);
}

/* Checks each line of out as a measurement; calls back with its name.
 * Returns the number of lines. */
static int check_lines(const char *out, void (*each)(const char *line, const char *name))
{
    int n = 0;
    const char *p = out;
    while (*p) {
        const char *e = strchr(p, '\n');
        cr_assert_not_null(e, "unterminated last line: %s", p);
        char line[2048];
        cr_assert_lt((size_t)(e - p), sizeof line);
        snprintf(line, sizeof line, "%.*s", (int)(e - p), p);
        size_t len = strlen(line);
        cr_assert(len > 2 && line[0] == '{' && line[len - 1] == '}', "not a JSON object: %s",
                  line);
        char name[64], shape[128];
        json_string(line, "name", name, sizeof name);
        json_string(line, "shape", shape, sizeof shape);
        cr_assert_gt(strlen(shape), 0);
        json_positive(line, "threads");
        json_positive(line, "seconds_min");
        json_positive(line, "seconds_median");
        cr_assert_leq(json_num(line, "seconds_min"), json_num(line, "seconds_median"), "%s",
                      line);
        cr_assert(json_value(line, "gflops") || json_value(line, "gbps"), "no rate in %s", line);
        json_positive(line, json_value(line, "gflops") ? "gflops" : "gbps");
        if (each) each(line, name);
        n++;
        p = e + 1;
    }
    return n;
}

/* ---- the benchmarks ---- */

static void peak_line(const char *line, const char *name)
{
    cr_assert_str_eq(name, "peak");
    json_positive(line, "gflops");
    json_positive(line, "gflops_per_thread");
    cr_assert_eq(json_num(line, "threads"), 1);
}

Test(bench, peak_json)
{
    run r = bench(ARGS("peak", "--threads", "1", "--repeats", "1", "--json"));
    want_status(&r, 0, "bench peak");
    cr_assert_eq(check_lines(r.out, peak_line), 1, "%s", r.out);
    run_free(&r);
}

Test(bench, peak_table)
{
    run r = bench(ARGS("peak", "--threads", "1", "--repeats", "1"));
    want_status(&r, 0, "bench peak");
    cr_assert(strstr(r.out, "GFLOPS") && strstr(r.out, "peak"), "%s", r.out);
    run_free(&r);
}

static void stream_line(const char *line, const char *name)
{
    cr_assert_str_eq(name, "stream");
    json_positive(line, "gbps");
}

Test(bench, stream_json)
{
    run r = bench(ARGS("stream", "--size", "1", "--repeats", "1", "--json"));
    want_status(&r, 0, "bench stream");
    cr_assert_eq(check_lines(r.out, stream_line), 1, "%s", r.out);
    run_free(&r);
}

static int ngemm, npeer;

static void gemm_line(const char *line, const char *name)
{
    if (!strcmp(name, "peak")) return;
    cr_assert_str_eq(name, "gemm");
    ngemm++;
    json_positive(line, "peak_share");
    if (json_value(line, "peer")) {
        npeer++;
        json_positive(line, "peer_gflops");
        json_positive(line, "ratio");
        /* kiln's product against OpenBLAS's on the same data */
        cr_assert_lt(json_num(line, "max_rel_diff"), 1e-4, "%s", line);
    }
}

Test(bench, gemm_json)
{
    run r = bench(ARGS("gemm", "--sizes", "8", "--shapes", "16x8x4:01,7x5x3:10,3x9x6:tt",
                       "--repeats", "1", "--json", "--threads", "2"));
    want_status(&r, 0, "bench gemm");
    ngemm = npeer = 0;
    cr_assert_eq(check_lines(r.out, gemm_line), 5, "%s", r.out); /* the peak, 4 gemms */
    cr_assert_eq(ngemm, 4);
    cr_assert(npeer == 0 || npeer == 4, "%s", r.out);
    if (!npeer) cr_assert(strstr(r.err, "OpenBLAS"), "no peer and no word why: %s", r.err);
    run_free(&r);
}

static void eltwise_line(const char *line, const char *name)
{
    cr_assert_str_eq(name, "eltwise");
    json_positive(line, "gbps");
    cr_assert_null(json_value(line, "peak_share"), "--no-ref but a share: %s", line);
}

Test(bench, eltwise_json)
{
    run r = bench(ARGS("eltwise", "--size", "4096", "--repeats", "1", "--json", "--no-ref"));
    want_status(&r, 0, "bench eltwise");
    cr_assert_eq(check_lines(r.out, eltwise_line), 1, "%s", r.out);
    run_free(&r);
}

static void step_line(const char *line, const char *name)
{
    cr_assert_str_eq(name, "step");
    cr_assert_eq(json_num(line, "batch"), 8);
    json_positive(line, "gflops");
    json_positive(line, "samples_per_s");
    json_positive(line, "ms_per_step");
    json_positive(line, "kernels");
    json_positive(line, "compile_seconds");
}

Test(bench, step_json)
{
    run r = bench(ARGS("step", "examples/fashion_mlp.kiln", "--bs", "8", "--steps", "2",
                       "--repeats", "1", "--json", "--no-ref"));
    want_status(&r, 0, "bench step");
    cr_assert_eq(check_lines(r.out, step_line), 1, "%s", r.out);
    run_free(&r);
}

static void kernel_line(const char *line, const char *name)
{
    cr_assert_str_eq(name, "kernel");
    cr_assert(strstr(line, "\"function\":\"k4_matmul\""), "%s", line);
    cr_assert_eq(json_num(line, "batch"), 8);
    json_positive(line, "flops");
    json_positive(line, "bytes");
}

/* bench kernel: without a name, one JSON line per compiled function with
 * its signature; with a kernel's name, that kernel timed alone (called by
 * name through libffi on the buffers of one real step). */
Test(bench, kernel_json)
{
    run r = bench(ARGS("kernel", "examples/fashion_mlp.kiln", "--bs", "8", "--json"));
    want_status(&r, 0, "bench kernel");
    cr_assert(strstr(r.out, "{\"name\":\"kernel\",\"function\":\"k4_matmul\""), "%s", r.out);
    cr_assert(strstr(r.out, "\"in f32[512,784] linear0.weight\""), "%s", r.out);
    cr_assert(strstr(r.out, "\"function\":\"train_step\",\"entry_point\":true"), "%s", r.out);
    run_free(&r);
    r = bench(ARGS("kernel", "examples/fashion_mlp.kiln", "k4_matmul", "--bs", "8", "--repeats",
                   "1", "--threads", "1", "--json"));
    want_status(&r, 0, "bench kernel k4_matmul");
    cr_assert_eq(check_lines(r.out, kernel_line), 1, "%s", r.out);
    run_free(&r);
}

/* ---- bad usage: exit 2, one message, nothing on stdout ---- */

static void want_usage_error(const char *const *args, const char *part)
{
    run r = bench(args);
    want_status(&r, 2, part);
    cr_assert(strstr(r.err, part), "wanted '%s' in:\n%s", part, r.err);
    cr_assert_eq(r.out[0], 0, "stdout: %s", r.out);
    run_free(&r);
}

Test(bench, bad_usage)
{
    want_usage_error(ARGS("--json"), "needs a benchmark");
    want_usage_error(ARGS("nope"), "unknown benchmark 'nope'");
    want_usage_error(ARGS("kernel"), "needs a model file");
    want_usage_error(ARGS("kernel", "examples/fashion_mlp.kiln", "--bs", "8", "k999_nothing"),
                     "no compiled function named 'k999_nothing'");
    want_usage_error(ARGS("kernel", "examples/fashion_mlp.kiln", "--backend", "ref"),
                     "reference backend");
    want_usage_error(ARGS("gemm", "--sizes", "256,x"), "bad size 'x'");
    want_usage_error(ARGS("gemm", "--shapes", "4x4"), "bad shape '4x4'");
    want_usage_error(ARGS("gemm", "--shapes", "4x4x4:2"), "bad shape");
    want_usage_error(ARGS("peak", "--repeats", "0"), "--repeats");
    want_usage_error(ARGS("peak", "--frobnicate"), "unknown option '--frobnicate'");
    want_usage_error(ARGS("stream", "--size", "-3"), "--size");
    want_usage_error(ARGS("step"), "needs a model file");
    want_usage_error(ARGS("step", "no/such/model.kiln"), "no/such/model.kiln");
}

/* C cold, C warm and (when kiln has LLVM) LLVM: one JSON line each (no
 * rate: a compile time is seconds only); the warm start is a cache hit. */
Test(bench, compile_json)
{
    run r = bench(ARGS("compile", KILN_SOURCE_DIR "/examples/fashion_mlp.kiln", "--bs", "8",
                       "--json"));
    want_status(&r, 0, "bench compile");
    int n = 0;
    for (const char *p = r.out; (p = strstr(p, "{\"name\":\"compile\"")); p++) n++;
    cr_assert(n == 3 || n == 2, "%s", r.out);
    cr_assert_not_null(strstr(r.out, "\"cached\":1"), "the warm start missed the cache: %s", r.out);
    cr_assert_not_null(strstr(r.out, "\"seconds_min\":"), "%s", r.out);
    run_free(&r);
}
