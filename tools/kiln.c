/* tools/kiln.c — the `kiln` command line: dispatch and option parsing.
 *
 *   kiln train MODEL    [--data DIR] [--epochs N] [--lr X] [--bs N] [--opt adamw|sgd]
 *                       [--wd X] [--seed N] [--backend c|llvm|ref] [--save FILE] [--load FILE]
 *                       [--history FILE] [--schedule one-cycle|const] [--limit N]
 *                       [--threads N] [--target NAME] [--lr LO:HI] [--freeze-to N]
 *                       [--freeze-epochs N] [--init-from FILE]
 *   kiln lr-find MODEL  [--plot FILE.svg] [same data and model options]
 *   kiln compile MODEL  [--bs N] [--emit ir|c] [--program forward|train|eval]
 *                       [--opt adamw|sgd] [--nesterov] [--print-after PASS|all] [-o FILE]
 *                       [--target NAME]
 *   kiln compile MODEL  --weights W.safetensors -o NAME --emit exe|lib|obj|c [--bs N]
 *                       [--backend c|llvm] [--target T|TRIPLE] [--cpu CPU]
 *                       (ahead-of-time artifacts, tools/aot.c)
 *   kiln predict MODEL  --weights W.safetensors INPUTS... [--topk K] [--json] [--limit N]
 *                       [--data DIR | --classes FILE] [--thresh T] [--out DIR]
 *   kiln info MODEL     [--bs N] [--threads N] [--timings [--backend c|llvm|both]]
 *   kiln check MODEL    [--bs N]
 *   kiln bench peak|stream|gemm|eltwise|step MODEL [options]   (tools/bench.c)
 *   kiln data make KIND OUTDIR [--n-train N] [--n-valid N] [--seed S] [--size S]
 *                       [--data DIR] [--force]                   (tools/data.c)
 *
 * Every failure prints one message naming the place and the fix; kiln never
 * crashes on bad input. Exit status: 0 success, 1 failed run, 2 bad usage or
 * bad input.
 */
#include "tools/cli.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: kiln <command> MODEL [options]\n"
    "\n"
    "commands:\n"
    "  train     train a model (Fashion-MNIST by default), printing fastai's epoch table\n"
    "  lr-find   sweep the learning rate from 1e-7 to 10 and suggest one\n"
    "  compile   print the program's graph IR (--emit ir) or generated C (--emit c)\n"
    "  predict   classify images with a checkpoint (as a compiled --emit exe prints)\n"
    "  info      parameters, flops per step, memory sizes, kernels (--timings: compile times)\n"
    "  check     parse and build the model, report errors\n"
    "  bench     benchmarks: peak, stream, gemm, eltwise, step MODEL (kiln bench --help)\n"
    "  data      make KIND OUTDIR: example data sets from Fashion-MNIST (kiln data --help)\n"
    "\n"
    "options:\n"
    "  --data DIR          folder with the idx files (default: Debian's dataset-fashion-mnist)\n"
    "                      or images: train/CLASS/*.png, or labels.csv, codes.txt or\n"
    "                      points.csv with images/ and valid.txt (fastai's layouts)\n"
    "  --epochs N          epochs to train (default 5)\n"
    "  --lr X              max learning rate of one-cycle, or the constant rate (default 2e-3)\n"
    "  --lr LO:HI          one-cycle: the parameter groups' max rates from LO (first group)\n"
    "                      to HI (last), fastai's slice(LO, HI); :HI is slice(HI)\n"
    "  --freeze-to N       train: freeze parameter groups [0, N) (N < 0 counts from the end;\n"
    "                      -1 trains only the last group; batchnorm layers still train)\n"
    "  --freeze-epochs N   train: fastai's fine_tune: N epochs with only the last group,\n"
    "                      then --epochs unfrozen at slice(lr/200, lr/2)\n"
    "  --init-from FILE    start from another model's weights (safetensors): every tensor\n"
    "                      whose name and shape match; reports what it skipped\n"
    "  --bs N              batch size B (default 64)\n"
    "  --opt adamw|sgd     optimizer (default adamw, as fastai)\n"
    "  --nesterov          SGD with Nesterov momentum\n"
    "  --wd X              weight decay (default 1e-2)\n"
    "  --seed N            initialisation and shuffle seed (default 42)\n"
    "  --backend c|llvm|ref  generated C (default), LLVM JIT, or the reference interpreter\n"
    "  --threads N         threads the kernels run on (default: one per core)\n"
    "  --target NAME       train, compile: the machine the C code is for: native (default:\n"
    "                      this one), avx512, avx2, neon or scalar (GEMM kernels, vector loops)\n"
    "  --schedule S        one-cycle (default) or const\n"
    "  --save FILE         save weights and optimizer state (safetensors) after training\n"
    "  --load FILE         start from a checkpoint (resumes its step and epoch)\n"
    "  --history FILE      append per-epoch rows in fastai's CSVLogger format\n"
    "  --limit N           use only the first N training and validation samples\n"
    "  --size N            image data sets: resize every image to N x N\n"
    "  --sizes A,B,...     progressive resizing: train at each size in turn (the model's\n"
    "                      `dim S`), carrying weights and optimizer state; --epochs 3,2\n"
    "                      per size; one one-cycle schedule spans all the stages\n"
    "  --cycle-per-size    with --sizes: restart the one-cycle schedule at each size\n"
    "  --augment           image data sets: flip, crop, rotate and zoom training images\n"
    "  --plot FILE.svg     lr-find: write the loss against lr plot\n"
    "  --emit ir|c         compile: what to print\n"
    "  --program P         compile: forward, train (default with a loss) or eval\n"
    "  --print-after PASS  compile: print the IR after a pass: parse, autodiff, optimizer,\n"
    "                      simplify, cse, dce or all\n"
    "  -o FILE             compile: write to FILE instead of stdout\n"
    "  --emit exe|lib|obj|c  compile with --weights W -o NAME: a standalone executable NAME,\n"
    "                      NAME.o + NAME.h (lib; obj: weights optional), or NAME.c + NAME.h;\n"
    "                      and NAME.weights; --backend c|llvm builds the kernels\n"
    "  --data DIR, --classes FILE  compile --emit exe: class names (and, from a data\n"
    "                      set, its normalisation) for the executable to print\n"
    "  --target TRIPLE     compile --emit exe|lib|obj|c: also a triple (x86_64-linux-gnu,\n"
    "  --cpu CPU           aarch64-linux-gnu) and a CPU (haswell, x86-64, ...); other\n"
    "                      architectures: --emit c (C) or --emit obj (LLVM) only\n"
    "  --timings           info: compile times per phase from an empty cache, for the\n"
    "                      backends --backend c|llvm|both (default both)\n"
    "  -v, --verbose       print the C compiler command and timings\n";

static void usage(FILE *f) { fputs(usage_text, f); }

/* Option table: name, whether it takes a value, and where it goes. */
typedef enum { O_STR, O_INT, O_F64, O_FLAG, O_INTS } okind;
typedef struct opt_row {
    const char *name;
    okind kind;
    size_t off;
    size_t set_off; /* offset of a bool set when given, or 0 */
} opt_row;

#define OFF(f) offsetof(cli, f)
static const opt_row opts[] = {
    {"--data", O_STR, OFF(data), 0},         {"--save", O_STR, OFF(save), 0},
    {"--load", O_STR, OFF(load), 0},         {"--history", O_STR, OFF(history), 0},
    {"--plot", O_STR, OFF(plot), 0},         {"-o", O_STR, OFF(out), 0},
    {"--weights", O_STR, OFF(weights), 0},
    {"--program", O_STR, OFF(program), 0},   {"--emit", O_STR, OFF(emit), 0},
    {"--print-after", O_STR, OFF(print_after), 0},
    {"--opt", O_STR, OFF(opt), 0},           {"--optimizer", O_STR, OFF(opt), 0},
    {"--backend", O_STR, OFF(backend), 0},   {"--schedule", O_STR, OFF(schedule), 0},
    {"--bs", O_INT, OFF(batch), 0},          {"--batch", O_INT, OFF(batch), 0},
    {"--epochs", O_INTS, OFF(epochs), 0},     {"--limit", O_INT, OFF(limit), 0},
    {"--size", O_INT, OFF(size), 0},         {"--augment", O_FLAG, OFF(augment), 0},
    {"--threads", O_INT, OFF(threads), 0},   {"--target", O_STR, OFF(target), 0},
    {"--cpu", O_STR, OFF(cpu), 0},           {"--classes", O_STR, OFF(classes), 0},
    {"--seed", O_INT, OFF(seed), 0},         {"--lr", O_F64, OFF(lr), OFF(lr_set)},
    {"--wd", O_F64, OFF(wd), OFF(wd_set)},   {"--nesterov", O_FLAG, OFF(nesterov), 0},
    {"--verbose", O_FLAG, OFF(verbose), 0},  {"-v", O_FLAG, OFF(verbose), 0},
    {"--timings", O_FLAG, OFF(timings), 0},
    {"--sizes", O_STR, OFF(sizes), 0},       {"--dim", O_STR, OFF(dim), 0},
    {"--cycle-per-size", O_FLAG, OFF(cycle_per_size), 0},
    {"--freeze-to", O_STR, OFF(freeze_to), 0}, {"--init-from", O_STR, OFF(init_from), 0},
    {"--freeze-epochs", O_INT, OFF(freeze_epochs), 0},
};

/* Whether `name` is a word of the space-separated list `allowed`. */
static bool listed(const char *allowed, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = allowed; (p = strstr(p, name)); p += n)
        if ((p == allowed || p[-1] == ' ') && (p[n] == ' ' || p[n] == 0)) return true;
    return false;
}

bool cli_parse(int argc, char **argv, cli *c, const char *allowed)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (c->model) {
                fprintf(stderr, "kiln %s: unexpected argument '%s'\n", c->cmd, a);
                return false;
            }
            c->model = a;
            continue;
        }
        const opt_row *o = NULL;
        for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
            if (!strcmp(opts[k].name, a)) o = &opts[k];
        if (!o || !listed(allowed, o->name)) {
            fprintf(stderr, "kiln %s: unknown option '%s' (see kiln --help)\n", c->cmd, a);
            return false;
        }
        char *base = (char *)c;
        if (o->kind == O_FLAG) {
            *(int *)(base + o->off) = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln %s: %s needs a value\n", c->cmd, a);
            return false;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (o->kind == O_STR) {
            *(const char **)(base + o->off) = v;
        } else if (o->kind == O_INTS) { /* --epochs 5, or 3,2 with --sizes */
            c->nepochs = 0;
            for (const char *p = v;; p = end + 1) {
                long long x = strtoll(p, &end, 10);
                if (end == p || x <= 0 || (*end && *end != ',') ||
                    c->nepochs == (int)(sizeof c->epoch_list / sizeof c->epoch_list[0])) {
                    fprintf(stderr, "kiln %s: %s wants a positive integer, or a list like 3,2 "
                            "(one per --sizes entry), got '%s'\n", c->cmd, a, v);
                    return false;
                }
                c->epoch_list[c->nepochs++] = x;
                if (!*end) break;
            }
            c->epochs = c->epoch_list[0];
        } else if (o->kind == O_INT) {
            long long x = strtoll(v, &end, 10);
            /* --seed 0 is a seed; --threads 0 means one thread per core */
            bool zero_ok = o->off == OFF(seed) || o->off == OFF(threads);
            if (!*v || *end || x < 0 || (x == 0 && !zero_ok)) {
                fprintf(stderr, "kiln %s: %s wants a %s integer, got '%s'\n", c->cmd, a,
                        o->off == OFF(threads) ? "non-negative" : "positive", v);
                return false;
            }
            if (o->off == OFF(seed)) c->seed = (uint64_t)x;
            else *(int64_t *)(base + o->off) = x;
        } else if (o->off == OFF(lr) && strchr(v, ':')) { /* --lr LO:HI: slice(LO, HI) */
            const char *colon = strchr(v, ':');
            char *e2 = NULL;
            double lo = colon == v ? -1 : strtod(v, &end), hi = strtod(colon + 1, &e2);
            if ((colon != v && end != colon) || e2 == colon + 1 || *e2 || !(hi > 0) || hi > 1e6 ||
                (colon != v && !(lo > 0 && lo <= hi))) {
                fprintf(stderr, "kiln %s: --lr wants a rate X, a range LO:HI (0 < LO <= HI: the "
                        "parameter groups' rates from LO to HI) or :HI, got '%s'\n", c->cmd, v);
                return false;
            }
            c->lr = hi;
            c->lr_lo = lo;
            c->lr_set = true;
        } else {
            double x = strtod(v, &end);
            if (!*v || *end || !(x >= 0) || x > 1e6) {
                fprintf(stderr, "kiln %s: %s wants a non-negative number, got '%s'\n", c->cmd, a,
                        v);
                return false;
            }
            *(double *)(base + o->off) = x;
            if (o->set_off) *(bool *)(base + o->set_off) = true;
        }
    }
    if (!c->model) {
        fprintf(stderr, "kiln %s: needs a model file (e.g. examples/fashion_mlp.kiln)\n", c->cmd);
        return false;
    }
    return true;
}

kiln_graph *cli_load_model(const cli *c, int64_t batch)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    /* --dim NAME=V,... and the current size of --sizes (the model's dim S) */
    kiln_dim dims[9];
    char names[8][64];
    int nd = 0;
    for (const char *p = c->dim; p && *p && nd < 8;) {
        const char *eq = strchr(p, '='), *comma = strchr(p, ',');
        char *end = NULL;
        long long v = eq ? strtoll(eq + 1, &end, 10) : 0;
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof names[0] || (comma && comma < eq) ||
            end == eq + 1 || (*end && *end != ',')) {
            fprintf(stderr, "kiln %s: --dim wants NAME=VALUE[,NAME=VALUE] (e.g. --dim S=64), "
                    "got '%s'\n", c->cmd, c->dim);
            return NULL;
        }
        memcpy(names[nd], p, (size_t)(eq - p));
        names[nd][eq - p] = 0;
        dims[nd] = (kiln_dim){names[nd], v};
        nd++;
        p = *end ? end + 1 : end;
    }
    if (c->dim_s) dims[nd++] = (kiln_dim){"S", c->dim_s};
    if (kiln_model_load_dims(c->model, batch, dims, nd, &g, &err)) {
        fputs(err ? err : "kiln: could not load the model\n", stderr);
        free(err);
        return NULL;
    }
    return g;
}

bool cli_compile_options(const cli *c, kiln_compile_options *o)
{
    *o = kiln_compile_defaults();
    if (c->backend && !strcmp(c->backend, "ref")) o->backend = KILN_BACKEND_REF;
    else if (c->backend && !strcmp(c->backend, "llvm")) o->backend = KILN_BACKEND_LLVM;
    else if (c->backend && strcmp(c->backend, "c")) {
        fprintf(stderr, "kiln %s: unknown backend '%s' (c, llvm, ref)\n", c->cmd, c->backend);
        return false;
    }
    if (c->opt && !strcmp(c->opt, "sgd")) o->train.optimizer = KILN_OPT_SGD;
    else if (c->opt && strcmp(c->opt, "adamw")) {
        fprintf(stderr, "kiln %s: unknown optimizer '%s' (adamw, sgd)\n", c->cmd, c->opt);
        return false;
    }
    o->train.nesterov = c->nesterov;
    o->verbose = c->verbose;
    if (c->threads > 4096) {
        fprintf(stderr, "kiln %s: --threads %lld is too many (at most 4096)\n", c->cmd,
                (long long)c->threads);
        return false;
    }
    o->threads = (int)c->threads;
    if (c->target) {
        static const char *const names[] = {"native", "avx512", "avx2", "neon", "scalar"};
        bool known = false;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            known |= !strcmp(c->target, names[i]);
        if (!known) {
            fprintf(stderr, "kiln %s: unknown target '%s' (native, avx512, avx2, neon, scalar)\n",
                    c->cmd, c->target);
            return false;
        }
        o->target = c->target;
    }
    return true;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (!strcmp(argv[1], "bench")) return cmd_bench(argc, argv); /* its own options */
    if (!strcmp(argv[1], "predict")) return cmd_predict(argc, argv); /* tools/aot.c */
    if (!strcmp(argv[1], "data")) return cmd_data(argc, argv);       /* tools/data.c */
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = argv[1];
    c.batch = 64;
    c.epochs = 5;
    c.lr = 2e-3;
    c.wd = 1e-2;
    c.seed = 42;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    static const char common[] =
        "--bs --batch --backend --opt --optimizer --nesterov --verbose -v --threads --dim";
    static const char data[] =
        "--data --seed --limit --wd --lr --epochs --load --size --augment --sizes --init-from "
        "--cycle-per-size "
        "--freeze-to";
    char allowed[512];
    if (!strcmp(c.cmd, "train")) {
        snprintf(allowed, sizeof allowed, "%s %s --save --history --schedule --target "
                 "--freeze-epochs", common, data);
        return cli_parse(argc, argv, &c, allowed) ? cmd_train(&c, false) : EXIT_USAGE;
    }
    if (!strcmp(c.cmd, "lr-find")) {
        snprintf(allowed, sizeof allowed, "%s %s --plot", common, data);
        return cli_parse(argc, argv, &c, allowed) ? cmd_train(&c, true) : EXIT_USAGE;
    }
    if (!strcmp(c.cmd, "compile") || !strcmp(c.cmd, "check")) {
        snprintf(allowed, sizeof allowed, "%s --program --emit --print-after -o --target --weights --cpu"
                 " --data --classes", common);
        return cli_parse(argc, argv, &c, allowed) ? cmd_compile(&c, !strcmp(c.cmd, "check"))
                                                  : EXIT_USAGE;
    }
    if (!strcmp(c.cmd, "info")) {
        snprintf(allowed, sizeof allowed, "%s --timings", common);
        return cli_parse(argc, argv, &c, allowed) ? cmd_info(&c) : EXIT_USAGE;
    }
    fprintf(stderr, "kiln: unknown command '%s'\n", c.cmd);
    usage(stderr);
    return EXIT_USAGE;
}
