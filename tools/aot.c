/* tools/aot.c — `kiln compile --emit exe|lib|obj|c --weights W -o NAME
 * [--backend c|llvm] [--target T] [--cpu CPU]` (the artifacts of kiln/aot.h)
 * and `kiln predict`: the same classification through the in-process
 * compiled program, printed exactly as the compiled executable prints it
 * (codegen/aot_input.c.in, included below: the same reading, normalisation,
 * softmax and format), for comparison. */
#include "tools/cli.h"
#include "kiln/aot.h"
#include "ir/graph.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* --data DIR or --classes FILE (at most one): class names and, from a data
 * set, the statistics its images are normalised with; the data set is
 * opened at the model's input size and channels. 0, or the exit status
 * after printing why. */
static int read_names(const char *cmd, const kiln_graph *g, const char *data, const char *classes,
                      kiln_aot_data *d)
{
    memset(d, 0, sizeof *d);
    d->mean = KILN_FASHION_MNIST_MEAN;
    d->std = KILN_FASHION_MNIST_STD;
    if (!data && !classes) return 0;
    if (data && classes) {
        fprintf(stderr, "kiln %s: give --data DIR or --classes FILE, not both\n", cmd);
        return EXIT_USAGE;
    }
    int c = 0, h = 0, w = 0;
    kiln_value x = kiln_graph_find_role(g, KILN_ROLE_INPUT);
    if (x >= 0 && g->nodes[x].rank == 4) {
        c = (int)g->nodes[x].shape[1];
        h = (int)g->nodes[x].shape[2];
        w = (int)g->nodes[x].shape[3];
    }
    char *err = NULL;
    kiln_status st = data ? kiln_aot_data_read(data, c, h, w, d, &err)
                          : kiln_aot_classes_read(classes, d, &err);
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", cmd, err ? err : kiln_status_str(st));
        free(err);
        return st == KILN_ERR_NOMEM ? EXIT_RUN : EXIT_USAGE;
    }
    return 0;
}

int cmd_aot(const cli *c)
{
    kiln_aot_options o = kiln_aot_defaults();
    if (!strcmp(c->emit, "exe")) o.emit = KILN_AOT_EXE;
    else if (!strcmp(c->emit, "lib")) o.emit = KILN_AOT_LIB;
    else if (!strcmp(c->emit, "obj")) o.emit = KILN_AOT_OBJ;
    else o.emit = KILN_AOT_C;
    if (!c->out) {
        fprintf(stderr, "kiln compile: --emit %s needs -o NAME\n", c->emit);
        return EXIT_USAGE;
    }
    if (c->backend && !strcmp(c->backend, "llvm")) {
        o.backend = KILN_BACKEND_LLVM;
    } else if (c->backend && strcmp(c->backend, "c")) {
        fprintf(stderr, "kiln compile: --emit %s builds with --backend c or llvm, not '%s'\n",
                c->emit, c->backend);
        return EXIT_USAGE;
    }
    o.cpu = c->cpu;
    o.out = c->out;
    o.weights = c->weights;
    o.model = c->model;
    o.target = c->target;
    o.verbose = c->verbose;
    kiln_graph *fwd = cli_load_model(c, c->batch);
    if (!fwd) return EXIT_USAGE;
    kiln_aot_data names;
    int rc = read_names("compile", fwd, c->data, c->classes, &names);
    if (rc) {
        kiln_graph_free(fwd);
        return rc;
    }
    o.class_names = (const char *const *)names.names;
    o.nclass_names = names.nnames;
    o.norm_mean = names.mean;
    o.norm_std = names.std;
    char *err = NULL;
    kiln_status st = kiln_aot_compile(fwd, &o, &err);
    kiln_aot_data_free(&names);
    kiln_graph_free(fwd);
    if (st) {
        fprintf(stderr, "kiln compile: %s\n", err ? err : kiln_status_str(st));
        free(err);
        return st == KILN_ERR_IO || st == KILN_ERR_NOMEM || st == KILN_ERR_INTERNAL ? EXIT_RUN
                                                                                   : EXIT_USAGE;
    }
    if (c->verbose) fprintf(stderr, "kiln compile: wrote %s (--emit %s)\n", c->out, c->emit);
    return 0;
}

/* ---- predict: what the generated main does, through kiln_program ---- */

/* The executable's input readers and printing, the same text
 * (codegen/aot_input.c.in), with gzip and PNG input. */
#define KILN_AOT_ZLIB 1
#define KILN_AOT_PNG 1
#include "codegen/aot_input.c.in"

static int predict_usage(void)
{
    fprintf(stderr, "usage: kiln predict MODEL --weights W.safetensors INPUTS... [--topk K] "
            "[--json] [--limit N] [--bs N] [--threads N] [--backend c|llvm|ref]\n"
            "       [--data DIR | --classes FILE] [--thresh T] [--out DIR]\n"
            "  prints what `kiln compile MODEL --emit exe` (given the same --data or --classes)\n"
            "  prints: classes, multi-label tags (--thresh), segmentation masks written to\n"
            "  --out DIR, or regression values\n");
    return EXIT_USAGE;
}

int cmd_predict(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = "predict";
    c.batch = 64;
    long long topk = 0, limit = -1;
    int json = 0, ninputs = 0, thresh_given = 0;
    double thresh = 0.0;
    const char *outdir = NULL;
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    if (!inputs) return EXIT_RUN;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--weights") || !strcmp(a, "--topk") || !strcmp(a, "--limit") ||
                   !strcmp(a, "--bs") || !strcmp(a, "--threads") || !strcmp(a, "--backend") ||
                   !strcmp(a, "--data") || !strcmp(a, "--classes") || !strcmp(a, "--thresh") ||
                   !strcmp(a, "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kiln predict: %s needs a value\n", a);
                free(inputs);
                return EXIT_USAGE;
            }
            const char *v = argv[++i];
            int str = 1;
            if (!strcmp(a, "--weights")) c.weights = v;
            else if (!strcmp(a, "--backend")) c.backend = v;
            else if (!strcmp(a, "--data")) c.data = v;
            else if (!strcmp(a, "--classes")) c.classes = v;
            else if (!strcmp(a, "--out")) outdir = v;
            else str = 0;
            if (str) continue;
            char *end = NULL;
            if (!strcmp(a, "--thresh")) {
                thresh = strtod(v, &end);
                if (!*v || *end || !(thresh >= 0.0 && thresh < 1.0)) {
                    fprintf(stderr, "kiln predict: --thresh wants a probability in [0, 1), "
                            "got '%s'\n", v);
                    free(inputs);
                    return EXIT_USAGE;
                }
                thresh_given = 1;
                continue;
            }
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || x <= 0 || x > (1ll << 40)) {
                fprintf(stderr, "kiln predict: %s wants a positive integer, got '%s'\n", a, v);
                free(inputs);
                return EXIT_USAGE;
            }
            if (!strcmp(a, "--topk")) topk = x;
            else if (!strcmp(a, "--limit")) limit = x;
            else if (!strcmp(a, "--bs")) c.batch = x;
            else c.threads = x;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln predict: unknown option '%s'\n", a);
            free(inputs);
            return predict_usage();
        } else if (!c.model) {
            c.model = a;
        } else {
            inputs[ninputs++] = a;
        }
    }
    if (!c.model || !c.weights || !ninputs) {
        free(inputs);
        return predict_usage();
    }
    int rc = 0;
    kiln_compile_options co;
    kiln_graph *fwd = NULL;
    kiln_program *p = NULL;
    kiln_in_images im = {NULL, 0, NULL, NULL};
    kiln_aot_data names = {NULL, 0, 0.0f, 1.0f};
    float *batch = NULL, *logits = NULL;
    char *err = NULL;
    char msg[1024];
    if (!cli_compile_options(&c, &co) || !(fwd = cli_load_model(&c, c.batch))) {
        rc = EXIT_USAGE;
        goto done;
    }
    if ((rc = read_names("predict", fwd, c.data, c.classes, &names))) goto done;
    double model_thresh = 0.0;
    kiln_aot_task task = kiln_aot_task_of(fwd, &model_thresh);
    if (!thresh_given) thresh = model_thresh;
    kiln_graph *cls = NULL;
    kiln_status st = kiln_aot_classifier(fwd, &cls, &err);
    if (!st) {
        kiln_graph_free(fwd);
        fwd = cls;
        st = kiln_compile(fwd, &co, &p, &err);
    }
    if (!st) st = kiln_load(p, c.weights, 0, 1, &err);
    if (st) {
        fprintf(stderr, "kiln predict: %s\n", err ? err : kiln_status_str(st));
        rc = EXIT_USAGE;
        goto done;
    }
    kiln_tensor_info in = {0}, out = {0};
    int nin = 0, nout = 0;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t)) continue;
        if (t.role == KILN_ROLE_INPUT && !nin++) in = t;
        if (t.role == KILN_ROLE_OUTPUT && !nout++) out = t;
    }
    int want_rank = task == KILN_AOT_SEGMENT ? 4 : task == KILN_AOT_REGRESS ? 0 : 2;
    if (nin != 1 || in.dtype != KILN_F32 || !nout || out.dtype != KILN_F32 || out.rank < 1 ||
        out.shape[0] != in.shape[0] || (want_rank && out.rank != want_rank)) {
        fprintf(stderr, "kiln predict: %s needs one f32 input and an f32 output %s\n", c.model,
                task == KILN_AOT_SEGMENT ? "[B, classes, H, W]"
                : task == KILN_AOT_REGRESS ? "[B, ...]" : "[B, classes]");
        rc = EXIT_USAGE;
        goto done;
    }
    int64_t B = in.shape[0], out_numel = 1;
    for (int d = 1; d < out.rank; d++) out_numel *= out.shape[d];
    kiln_out_spec ospec;
    memset(&ospec, 0, sizeof ospec);
    ospec.task = (int)task;
    ospec.classes = task == KILN_AOT_REGRESS ? out_numel : out.shape[1];
    ospec.numel = out_numel;
    if (task == KILN_AOT_SEGMENT) {
        ospec.h = out.shape[2];
        ospec.w = out.shape[3];
    }
    if (names.nnames && task != KILN_AOT_REGRESS) {
        if (names.nnames != ospec.classes) {
            fprintf(stderr, "kiln predict: %d class names (--data / --classes) but the model's "
                    "output has %lld classes\n", names.nnames, (long long)ospec.classes);
            rc = EXIT_USAGE;
            goto done;
        }
        ospec.names = (const char *const *)names.names;
    }
    ospec.thresh = thresh;
    ospec.topk = (int)topk;
    ospec.json = json;
    ospec.outdir = outdir;
    if (kiln_out_setup(&ospec, thresh_given, msg, sizeof msg)) {
        fprintf(stderr, "kiln predict: %s\n", msg);
        rc = EXIT_USAGE;
        goto done;
    }
    kiln_in_spec spec;
    kiln_in_make_spec(&spec, in.rank, in.shape, names.mean, names.std);
    int64_t in_numel = spec.numel;
    for (int i = 0; i < ninputs; i++)
        if (kiln_in_read(inputs[i], &spec, &im, msg, sizeof msg)) {
            fprintf(stderr, "kiln predict: %s\n", msg);
            rc = EXIT_USAGE;
            goto done;
        }
    batch = calloc((size_t)B * (size_t)in_numel, sizeof *batch);
    logits = calloc((size_t)B * (size_t)out_numel, sizeof *logits);
    if (!batch || !logits) {
        fprintf(stderr, "kiln predict: out of memory\n");
        rc = EXIT_RUN;
        goto done;
    }
    int64_t total = limit >= 0 && limit < im.n ? limit : im.n;
    if (json) printf("[\n");
    for (int64_t s = 0; s < total; s += B) {
        int64_t m = total - s < B ? total - s : B;
        memset(batch, 0, in.bytes);
        memcpy(batch, im.x + (size_t)s * (size_t)in_numel,
               (size_t)m * (size_t)in_numel * sizeof *batch);
        if ((st = kiln_program_set(p, in.name, batch, in.bytes)) ||
            (st = kiln_program_run(p, "forward")) ||
            (st = kiln_program_get(p, out.name, logits, out.bytes))) {
            fprintf(stderr, "kiln predict: %s\n", kiln_program_error(p));
            rc = EXIT_RUN;
            goto done;
        }
        for (int64_t j = 0; j < m; j++)
            if (kiln_out_print(&ospec, &im, s + j, logits + (size_t)j * (size_t)out_numel, msg,
                               sizeof msg)) {
                if (json) printf("\n]\n");
                fflush(stdout);
                fprintf(stderr, "kiln predict: %s\n", msg);
                rc = EXIT_RUN;
                goto done;
            }
    }
    if (json) printf("%s]\n", total ? "\n" : "");
done:
    free(err);
    kiln_in_free(&im);
    kiln_aot_data_free(&names);
    free(batch);
    free(logits);
    free(inputs);
    kiln_program_free(p);
    kiln_graph_free(fwd);
    return rc;
}
