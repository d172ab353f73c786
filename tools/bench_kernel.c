/* tools/bench_kernel.c — `kiln bench kernel`, and the compile-time report
 * of `kiln bench compile` and `kiln info --timings`.
 *
 *   kiln bench kernel MODEL [NAME] [--bs N] [--threads N] [--backend c|llvm|both]
 *                     [--repeats N] [--json] [-v]
 *
 * Without NAME: the model's training program is compiled and every kernel
 * it compiled is listed with its entry point, its place there, its flops
 * and bytes, and its signature (what kiln_program_call checks arguments
 * against). With NAME: the program runs one real step of the entry point
 * that runs the kernel (train_step on random inputs and valid labels, the
 * parameters initialised), so the arena holds realistic values; then the
 * kernel alone is timed, called by name through libffi
 * (kiln_program_call) on the buffers that step left at the kernel's
 * places (kiln_program_args): min and median per call over the repeats
 * (bench.c's time_calls), GFLOPS from the kernel's flops (the registry's
 * cost of the nodes it computes) and GB/s from the bytes of the buffers it
 * reads plus those it writes. A kernel that updates parameters in place
 * (an optimizer step in a GEMM's epilogue) updates them on every call.
 * With --backend both, the C and the LLVM program of the model are
 * compiled, and NAME (or without NAME, every kernel of train_step) is
 * timed on each, repeats interleaved (bench.c's time_calls_interleaved):
 * one row per kernel with both times and LLVM / C.
 *
 * compile_timings_report (tools/bench.h) compiles a model from an empty
 * cache and prints kiln_compile_timings phase by phase, one column per
 * compile.
 */
#include "tools/bench.h"

#include "codegen/llvm.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct kopts {
    const char *model, *name, *backend;
    int64_t bs;
    int64_t threads;
    int repeats;
    int json, verbose;
} kopts;

static const char kernel_usage[] =
    "usage: kiln bench kernel MODEL [NAME] [--bs N] [--threads N] [--backend c|llvm|both]\n"
    "                         [--repeats N] [--json] [-v]\n"
    "  without NAME: the kernels of MODEL's training program and their signatures\n"
    "  with NAME:    one kernel timed alone, called by name through libffi on the\n"
    "                buffers one real step left in the program's memories\n"
    "  --backend both: NAME (without NAME: every train_step kernel) on the C and the\n"
    "                LLVM program, repeats interleaved, side by side with LLVM / C\n";

static int parse(int argc, char **argv, kopts *o)
{
    memset(o, 0, sizeof *o);
    o->bs = 64;
    o->repeats = 5;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (!o->model) o->model = a;
            else if (!o->name) o->name = a;
            else {
                fprintf(stderr, "kiln bench kernel: unexpected argument '%s'\n", a);
                return EXIT_USAGE;
            }
            continue;
        }
        if (!strcmp(a, "--json")) {
            o->json = 1;
            continue;
        }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbose = 1;
            continue;
        }
        bool known = !strcmp(a, "--bs") || !strcmp(a, "--batch") || !strcmp(a, "--threads") ||
                     !strcmp(a, "--backend") || !strcmp(a, "--repeats");
        if (!known) {
            fprintf(stderr, "kiln bench kernel: unknown option '%s' (see kiln bench --help)\n", a);
            return EXIT_USAGE;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln bench kernel: %s needs a value\n", a);
            return EXIT_USAGE;
        }
        const char *v = argv[++i];
        int64_t x = 0;
        bool ok = true;
        if (!strcmp(a, "--backend")) o->backend = v;
        else if (!strcmp(a, "--threads")) ok = bench_parse_int(v, 0, 4096, &o->threads);
        else if (!strcmp(a, "--repeats")) ok = bench_parse_int(v, 1, 100000, &x), o->repeats = (int)x;
        else ok = bench_parse_int(v, 1, 1 << 20, &o->bs);
        if (!ok) {
            fprintf(stderr, "kiln bench kernel: bad value '%s' for %s (%s)\n", v, a,
                    !strcmp(a, "--threads") ? "0 for one per core, or at most 4096"
                                            : "a positive integer");
            return EXIT_USAGE;
        }
    }
    if (!o->model) {
        fprintf(stderr, "kiln bench kernel: needs a model file (e.g. examples/fashion_mlp.kiln)\n");
        fputs(kernel_usage, stderr);
        return EXIT_USAGE;
    }
    return 0;
}

/* "in f32[64,784] x", "inout f32[512] linear0.bias", "ctx", "int64 n" */
static void put_param(const kiln_param_info *p, char *buf, size_t len)
{
    switch (p->kind) {
    case KILN_ARG_CTX:
        snprintf(buf, len, "ctx");
        return;
    case KILN_ARG_BUFFER: {
        char shape[96] = "";
        size_t o = 0;
        for (int d = 0; d < p->rank && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, d ? ",%lld" : "%lld",
                                  (long long)p->shape[d]);
        snprintf(buf, len, "%s %s[%s] %s",
                 p->written ? (p->read ? "inout" : "out") : "in", kiln_dtype_name(p->dtype),
                 shape, p->name ? p->name : "");
        return;
    }
    default:
        snprintf(buf, len, "%s %s",
                 p->kind == KILN_ARG_I32   ? "int32"
                 : p->kind == KILN_ARG_I64 ? "int64"
                 : p->kind == KILN_ARG_F32 ? "float"
                                           : "double",
                 p->name ? p->name : "");
    }
}

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static double fin(double x) { return isfinite(x) ? x : 0; }

static const char *backend_name(kiln_backend b)
{
    return b == KILN_BACKEND_LLVM ? "llvm" : "c";
}

/* The model's program with parameters initialised and random inputs and
 * valid labels in its memories; NULL after a message. */
static kiln_program *prepare(const kopts *o, kiln_compile_options *co, kiln_graph **gout)
{
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = "bench kernel";
    c.model = o->model;
    c.backend = o->backend;
    c.threads = o->threads;
    c.verbose = o->verbose;
    *gout = NULL;
    if (!cli_compile_options(&c, co)) return NULL;
    if (co->backend == KILN_BACKEND_REF) {
        fprintf(stderr, "kiln bench kernel: the reference backend compiles no kernels (c, llvm)\n");
        return NULL;
    }
    kiln_graph *g = cli_load_model(&c, o->bs);
    if (!g) return NULL;
    kiln_program *p = NULL;
    char *err = NULL;
    if (kiln_compile(g, co, &p, &err)) {
        fprintf(stderr, "kiln bench kernel: %s\n", err ? err : "compile failed");
        free(err);
        kiln_graph_free(g);
        return NULL;
    }
    if (kiln_program_init_params(p, 42)) {
        fprintf(stderr, "kiln bench kernel: %s\n", kiln_program_error(p));
        kiln_program_free(p);
        kiln_graph_free(g);
        return NULL;
    }
    uint64_t seed = 1;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t) ||
            (t.role != KILN_ROLE_INPUT && t.role != KILN_ROLE_TARGET))
            continue;
        void *d = kiln_program_data(p, t.name, NULL);
        if (!d) continue;
        int64_t classes = t.role == KILN_ROLE_TARGET ? label_classes(g, t.name) : 0;
        if (t.role == KILN_ROLE_TARGET && kiln_dtype_is_float(t.dtype)) classes = 1;
        fill_random(d, t.dtype, t.bytes / kiln_dtype_size(t.dtype), &seed, classes);
    }
    *gout = g;
    return p;
}

static int list_kernels(const kopts *o, kiln_program *p, kiln_backend be)
{
    int nk = 0, ne = 0;
    for (int i = 0; i < kiln_program_num_functions(p); i++) {
        kiln_function_info f;
        if (kiln_program_function(p, i, &f)) continue;
        if (f.is_entry) ne++;
        else nk++;
    }
    if (!o->json)
        printf("kernels of %s at batch %lld (%s backend): %d kernels, %d entry points\n"
               "%-28s %-10s %3s %-14s %10s %9s\n",
               o->model, (long long)o->bs, be == KILN_BACKEND_LLVM ? "LLVM" : "C", nk, ne, "name",
               "entry", "#", "op", "MFLOP", "MB");
    for (int pass = 0; pass < 2; pass++) /* kernels, then entries */
        for (int i = 0; i < kiln_program_num_functions(p); i++) {
            kiln_function_info f;
            if (kiln_program_function(p, i, &f) || f.is_entry != (pass == 1)) continue;
            if (o->json) {
                printf("{\"name\":\"kernel\",\"function\":");
                json_str(f.name);
                printf(",\"entry_point\":%s", f.is_entry ? "true" : "false");
                if (!f.is_entry) {
                    printf(",\"entry\":");
                    json_str(f.entry);
                    printf(",\"index\":%d,\"op\":", f.index);
                    json_str(f.op);
                    printf(",\"flops\":%.6g,\"bytes\":%.6g", fin(f.flops), fin(f.bytes));
                }
                printf(",\"params\":[");
                for (int j = 0; j < f.nparams; j++) {
                    char s[256];
                    put_param(&f.params[j], s, sizeof s);
                    if (j) putchar(',');
                    json_str(s);
                }
                printf("]}\n");
                continue;
            }
            if (f.is_entry)
                printf("%-28s %-10s %3s %-14s %10s %9.3f\n", f.name, "(entry)", "", "", "",
                       (double)(f.params[0].count + f.params[1].count + f.params[2].count) / 1e6);
            else
                printf("%-28s %-10s %3d %-14s %10.3f %9.3f\n", f.name, f.entry, f.index, f.op,
                       f.flops / 1e6, f.bytes / 1e6);
            printf("    int %s(", f.name);
            for (int j = 0; j < f.nparams; j++) {
                char s[256];
                put_param(&f.params[j], s, sizeof s);
                printf("%s%s", j ? ", " : "", s);
            }
            printf(")\n");
        }
    if (!o->json)
        printf("time one: kiln bench kernel %s NAME%s%s\n", o->model,
               be == KILN_BACKEND_LLVM ? " --backend " : "",
               be == KILN_BACKEND_LLVM ? "llvm" : "");
    return 0;
}

typedef struct kcall {
    kiln_program *p;
    const char *name;
    kiln_arg *args;
    int nargs;
} kcall;

static int kernel_call(void *ctx)
{
    kcall *c = ctx;
    if (kiln_program_call(c->p, c->name, c->args, c->nargs, NULL)) {
        fprintf(stderr, "kiln bench kernel: %s\n", kiln_program_error(c->p));
        return -1;
    }
    return 0;
}

static int time_kernel(const kopts *o, kiln_program *p, kiln_backend be)
{
    kiln_function_info f;
    if (kiln_program_find_function(p, o->name, &f)) {
        fprintf(stderr, "kiln bench kernel: %s (list them: kiln bench kernel %s)\n",
                kiln_program_error(p), o->model);
        return EXIT_USAGE;
    }
    /* one real step of the entry that runs it fills the arena */
    const char *entry = f.is_entry ? f.name : f.entry;
    if (kiln_program_run(p, entry)) {
        fprintf(stderr, "kiln bench kernel: %s: %s\n", entry, kiln_program_error(p));
        return EXIT_RUN;
    }
    kiln_arg *args = calloc((size_t)f.nparams + 1, sizeof *args);
    if (!args) return EXIT_RUN;
    int nargs = 0, rc = EXIT_RUN;
    if (kiln_program_args(p, f.name, args, f.nparams, &nargs)) {
        fprintf(stderr, "kiln bench kernel: %s\n", kiln_program_error(p));
        goto out;
    }
    kcall c = {p, f.name, args, nargs};
    double tmin = 0, tmed = 0;
    if (time_calls(kernel_call, &c, o->repeats, &tmin, &tmed)) goto out;
    kiln_program_stats st;
    kiln_program_stats_get(p, &st);
    double gflops = f.flops > 0 ? f.flops / tmin * 1e-9 : 0;
    double gbps = f.bytes > 0 ? f.bytes / tmin * 1e-9 : 0;
    if (tmed > 1.25 * tmin)
        fprintf(stderr, "kiln bench kernel: %s: the median is %.0f%% above the minimum; is the "
                        "machine busy?\n", f.name, 100 * (tmed / tmin - 1));
    if (o->json) {
        printf("{\"name\":\"kernel\",\"function\":");
        json_str(f.name);
        printf(",\"shape\":\"%s bs %lld\",\"model\":", f.name, (long long)o->bs);
        json_str(o->model);
        printf(",\"entry\":");
        json_str(entry);
        printf(",\"index\":%d,\"op\":", f.index);
        json_str(f.op ? f.op : "");
        printf(",\"batch\":%lld,\"backend\":\"%s\",\"threads\":%d,\"repeats\":%d,"
               "\"seconds_min\":%.9g,\"seconds_median\":%.9g,\"flops\":%.6g,\"bytes\":%.6g,"
               "\"gflops\":%.6g,\"gbps\":%.6g}\n",
               (long long)o->bs, backend_name(be), st.threads, o->repeats, fin(tmin), fin(tmed),
               fin(f.flops), fin(f.bytes), fin(gflops), fin(gbps));
    } else {
        printf("kiln bench kernel: %s of %s (%s", f.name, o->model, entry);
        if (!f.is_entry) printf(" kernel %d", f.index);
        printf(", batch %lld, %s backend, %d thread%s, %d repeats)\n", (long long)o->bs,
               be == KILN_BACKEND_LLVM ? "LLVM" : "C", st.threads, st.threads == 1 ? "" : "s",
               o->repeats);
        if (f.desc) printf("  %s\n", f.desc);
        printf("  min %.2f us, median %.2f us per call (by name through libffi)\n", tmin * 1e6,
               tmed * 1e6);
        if (f.flops > 0) printf("  %.2f GFLOPS (%.3f MFLOP a call)\n", gflops, f.flops / 1e6);
        if (f.bytes > 0)
            printf("  %.2f GB/s (%.3f MB read and written a call)\n", gbps, f.bytes / 1e6);
    }
    rc = 0;
out:
    free(args);
    return rc;
}

/* --backend both: NAME, or every kernel of train_step, timed on the C and
 * the LLVM program (one real step of the kernel's entry in each first),
 * repeats interleaved. */
static int compare_kernels(const kopts *o)
{
    kiln_program *p[2] = {NULL, NULL};
    kiln_graph *g[2] = {NULL, NULL};
    kiln_compile_options co[2];
    const char *names[2] = {"c", "llvm"};
    int rc = EXIT_USAGE;
    for (int b = 0; b < 2; b++) {
        kopts ob = *o;
        ob.backend = names[b];
        p[b] = prepare(&ob, &co[b], &g[b]);
        if (!p[b]) {
            rc = g[b] ? EXIT_RUN : EXIT_USAGE;
            goto out;
        }
    }
    rc = EXIT_RUN;
    kiln_program_stats st;
    kiln_program_stats_get(p[0], &st);
    if (!o->json)
        printf("kiln bench kernel: %s, batch %lld, C and LLVM backends, %d thread%s, %d "
               "interleaved repeats (min and median per call)\n%-24s %11s %11s %7s %11s %11s %7s\n",
               o->model, (long long)o->bs, st.threads, st.threads == 1 ? "" : "s", o->repeats,
               "kernel", "C min", "LLVM min", "ratio", "C median", "LLVM med", "ratio");
    const char *ran = NULL; /* the entry already run on both */
    double sum[2] = {0, 0};
    int found = 0;
    for (int i = 0; i < kiln_program_num_functions(p[0]); i++) {
        kiln_function_info f, fl;
        if (kiln_program_function(p[0], i, &f) || f.is_entry) continue;
        if (o->name ? strcmp(f.name, o->name) : strcmp(f.entry, "train_step")) continue;
        found++;
        if (kiln_program_find_function(p[1], f.name, &fl)) {
            fprintf(stderr, "kiln bench kernel: %s: not in the LLVM program\n", f.name);
            continue;
        }
        if (!ran || strcmp(ran, f.entry)) {
            for (int b = 0; b < 2; b++)
                if (kiln_program_run(p[b], f.entry)) {
                    fprintf(stderr, "kiln bench kernel: %s: %s\n", f.entry,
                            kiln_program_error(p[b]));
                    goto out;
                }
            ran = f.entry;
        }
        kiln_arg *args[2] = {calloc((size_t)f.nparams + 1, sizeof(kiln_arg)),
                             calloc((size_t)fl.nparams + 1, sizeof(kiln_arg))};
        kcall c[2];
        bool ok = args[0] && args[1];
        for (int b = 0; b < 2 && ok; b++) {
            int nargs = 0;
            ok = !kiln_program_args(p[b], f.name, args[b], b ? fl.nparams : f.nparams, &nargs);
            if (!ok) fprintf(stderr, "kiln bench kernel: %s\n", kiln_program_error(p[b]));
            c[b] = (kcall){p[b], f.name, args[b], nargs};
        }
        double tmin[2], tmed[2];
        void *ctx[2] = {&c[0], &c[1]};
        ok = ok && !time_calls_interleaved(kernel_call, ctx, 2, o->repeats, tmin, tmed);
        free(args[0]);
        free(args[1]);
        if (!ok) goto out;
        sum[0] += tmin[0];
        sum[1] += tmin[1];
        if (o->json) {
            printf("{\"name\":\"kernel compare\",\"function\":");
            json_str(f.name);
            printf(",\"model\":");
            json_str(o->model);
            printf(",\"batch\":%lld,\"threads\":%d,\"repeats\":%d,\"c_seconds_min\":%.9g,"
                   "\"llvm_seconds_min\":%.9g,\"c_seconds_median\":%.9g,"
                   "\"llvm_seconds_median\":%.9g,\"llvm_over_c_min\":%.6g}\n",
                   (long long)o->bs, st.threads, o->repeats, fin(tmin[0]), fin(tmin[1]),
                   fin(tmed[0]), fin(tmed[1]), fin(tmin[1] / tmin[0]));
        } else {
            printf("%-24s %8.2f us %8.2f us %6.2fx %8.2f us %8.2f us %6.2fx\n", f.name,
                   tmin[0] * 1e6, tmin[1] * 1e6, tmin[1] / tmin[0], tmed[0] * 1e6, tmed[1] * 1e6,
                   tmed[1] / tmed[0]);
        }
    }
    if (!found) {
        fprintf(stderr, "kiln bench kernel: no kernel %s (list them: kiln bench kernel %s)\n",
                o->name ? o->name : "of train_step", o->model);
        rc = EXIT_USAGE;
        goto out;
    }
    if (!o->json && found > 1)
        printf("%-24s %8.2f us %8.2f us %6.2fx   (sum of the minimums)\n", "all", sum[0] * 1e6,
               sum[1] * 1e6, sum[1] / sum[0]);
    rc = 0;
out:
    for (int b = 0; b < 2; b++) {
        kiln_program_free(p[b]);
        kiln_graph_free(g[b]);
    }
    return rc;
}

int cmd_bench_kernel(int argc, char **argv)
{
    for (int i = 3; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(kernel_usage, stdout);
            return 0;
        }
    kopts o;
    int rc = parse(argc, argv, &o);
    if (rc) return rc;
    if (o.backend && !strcmp(o.backend, "both")) return compare_kernels(&o);
    kiln_compile_options co;
    kiln_graph *g = NULL;
    kiln_program *p = prepare(&o, &co, &g);
    if (!p) return g ? EXIT_RUN : EXIT_USAGE;
    rc = o.name ? time_kernel(&o, p, co.backend) : list_kernels(&o, p, co.backend);
    kiln_program_free(p);
    kiln_graph_free(g);
    return rc;
}

/* ---- compile times ------------------------------------------------------ */

/* Removes a compile cache made for one report (files only). */
static void remove_cache_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[4096];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

enum { MAX_COLS = 3 };

int compile_timings_report(const char *cmd, const char *model, int64_t bs, int threads,
                           const char *which, bool warm, bool json, int verbose)
{
    bool want_c = !which || !strcmp(which, "both") || !strcmp(which, "c");
    bool want_llvm = !which || !strcmp(which, "both") || !strcmp(which, "llvm");
    if (!want_c && !want_llvm) {
        fprintf(stderr, "kiln %s: unknown backend '%s' for compile times (c, llvm, both)\n", cmd,
                which);
        return EXIT_USAGE;
    }
    if (want_llvm && !kiln_llvm_available()) {
        if (!want_c) {
            fprintf(stderr, "kiln %s: kiln was built without LLVM: no LLVM compile times\n", cmd);
            return EXIT_USAGE;
        }
        want_llvm = false;
        if (!json) printf("(kiln was built without LLVM: C only)\n");
    }
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = cmd;
    c.model = model;
    c.threads = threads;
    kiln_compile_options co;
    if (!cli_compile_options(&c, &co)) return EXIT_USAGE;
    double t0 = bench_now();
    kiln_graph *g = cli_load_model(&c, bs);
    double t_model = bench_now() - t0;
    if (!g) return EXIT_USAGE;
    char dir[] = "/tmp/kiln-compile-times-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "kiln %s: cannot make a temporary cache: %s\n", cmd, strerror(errno));
        kiln_graph_free(g);
        return EXIT_RUN;
    }
    const char *label[MAX_COLS];
    kiln_backend be[MAX_COLS];
    int n = 0;
    if (want_c) label[n] = "C cold", be[n++] = KILN_BACKEND_C;
    if (want_c && warm) label[n] = "C warm", be[n++] = KILN_BACKEND_C;
    if (want_llvm) label[n] = "LLVM in process", be[n++] = KILN_BACKEND_LLVM;
    kiln_compile_timings t[MAX_COLS];
    int thr[MAX_COLS];
    int rc = 0;
    for (int k = 0; k < n && !rc; k++) {
        co.backend = be[k];
        co.cache_dir = dir;
        co.threads = threads;
        co.verbose = verbose;
        kiln_program *p = NULL;
        char *err = NULL;
        if (kiln_compile(g, &co, &p, &err)) {
            fprintf(stderr, "kiln %s: %s\n", cmd, err ? err : "compile failed");
            free(err);
            rc = EXIT_RUN;
            break;
        }
        kiln_program_timings(p, &t[k]);
        kiln_program_stats s;
        kiln_program_stats_get(p, &s);
        thr[k] = s.threads;
        kiln_program_free(p);
    }
    remove_cache_dir(dir);
    kiln_graph_free(g);
    if (rc) return rc;
    if (json) {
        for (int k = 0; k < n; k++)
            printf("{\"name\":\"compile\",\"shape\":\"%s bs %lld\",\"backend\":\"%s\","
                   "\"threads\":%d,\"seconds_min\":%.6f,\"seconds_median\":%.6f,\"cached\":%d,"
                   "\"model_seconds\":%.6f,\"graphs\":%.6f,\"lower\":%.6f,\"memplan\":%.6f,"
                   "\"emit\":%.6f,\"optimize\":%.6f,\"compile\":%.6f,\"load\":%.6f}\n",
                   model, (long long)bs, label[k], thr[k], t[k].total, t[k].total, t[k].cached,
                   t_model, t[k].graphs, t[k].lower, t[k].memplan, t[k].emit, t[k].optimize,
                   t[k].compile, t[k].load);
        return 0;
    }
    static const char *const rows[] = {
        "model (parse, build)",  "entry graphs, passes", "fusion, lowering",
        "memory plan",           "emit (C / LLVM IR)",   "optimise (LLVM O3)",
        "compile (cc+dlopen/JIT)", "load (bind, ffi)",   "other (memories, stats)",
        "total (kiln_compile)",
    };
    printf("compile times of %s at batch %lld (from an empty cache)\n", model, (long long)bs);
    printf("  %-26s", "phase (ms)");
    for (int k = 0; k < n; k++)
        printf(" %16s", label[k]);
    putchar('\n');
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        printf("  %-26s", rows[r]);
        for (int k = 0; k < n; k++) {
            double parts = t[k].graphs + t[k].lower + t[k].memplan + t[k].emit +
                           t[k].optimize + t[k].compile + t[k].load;
            double v[] = {t_model,      t[k].graphs, t[k].lower,          t[k].memplan,
                          t[k].emit,    t[k].optimize, t[k].compile,      t[k].load,
                          t[k].total - parts, t[k].total};
            bool na = (r == 5 && be[k] == KILN_BACKEND_C);
            if (na) printf(" %16s", "-");
            else printf(" %16.2f", v[r] * 1e3);
        }
        putchar('\n');
    }
    for (int k = 0; k < n; k++) {
        if (t[k].cached) printf("  (%s: the shared object came from the cache)\n", label[k]);
        if (t[k].parts > 1)
            printf("  (%s: %d modules built, optimised and compiled side by side; the slowest's "
                   "phases)\n",
                   label[k], t[k].parts);
    }
    return 0;
}
