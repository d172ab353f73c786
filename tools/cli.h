/* tools/cli.h — what the `kiln` subcommands share: options and helpers.
 * Exit statuses: 0 success, 1 a run that failed, 2 bad usage or bad input. */
#ifndef KILN_TOOLS_CLI_H
#define KILN_TOOLS_CLI_H

#include "kiln/kiln.h"
#include "kiln/checkpoint.h"

#include <stdbool.h>

enum { EXIT_RUN = 1, EXIT_USAGE = 2 };

typedef struct cli {
    const char *cmd, *model, *data, *save, *load, *history, *plot, *out;
    const char *program, *emit, *print_after, *opt, *backend, *schedule;
    const char *target; /* --target NAME: the C backend's ISA (NULL: the host) */
    const char *weights; /* --weights FILE.safetensors: compile --emit exe|lib|c */
    const char *cpu;     /* --cpu NAME: compile --emit exe|lib|obj|c (LLVM's CPU names) */
    const char *classes; /* --classes FILE: compile --emit exe, predict: class names */
    int64_t batch, epochs, limit;
    int64_t threads; /* --threads N; 0: one per core */
    double lr, wd;
    uint64_t seed;
    int nesterov, verbose;
    int timings; /* info --timings: compile times per phase (tools/bench_kernel.c) */
    int64_t size; /* --size N: image data sets resized to N x N (0: the first image's) */
    int augment;  /* --augment: augment the training images (flip, crop, rotate, zoom) */
    /* Progressive resizing: --sizes 32,64 trains epoch_list[k] epochs at size
     * sizes[k] (the model's `dim S` and the images), carrying the weights and
     * optimizer state from one size to the next; --epochs 3,2 gives one count per
     * size (one count: the same for every size). The stages share one one-cycle
     * schedule over all their epochs; --cycle-per-size restarts it at each size
     * (fastai lesson 3's separate fit_one_cycle calls). */
    const char *sizes;
    int cycle_per_size;
    int64_t epoch_list[16];
    int nepochs;
    const char *dim;  /* --dim NAME=V[,NAME=V]: values of the model's `dim` statements */
    int64_t dim_s;    /* the size of the current stage of --sizes (0: none) */
    int stage;        /* its index: stages after the first append to --history */
    bool lr_set, wd_set;
    /* transfer learning (tools/train.c): --lr LO:HI gives lr_lo = LO (fastai's
     * slice(LO, HI), HI in lr; ":HI" gives lr_lo -1, slice(HI)), --freeze-to N,
     * --freeze-epochs N (fastai's fine_tune), --init-from FILE (weights of
     * another model, by name and shape) */
    double lr_lo;
    const char *freeze_to, *init_from;
    int64_t freeze_epochs;
} cli;

/* Parses argv[2..] into c; prints the problem and returns false on a usage
 * error. `allowed` lists the options the command takes ("--data --epochs"). */
bool cli_parse(int argc, char **argv, cli *c, const char *allowed);
/* The model at batch b; prints the error and returns NULL on failure. */
kiln_graph *cli_load_model(const cli *c, int64_t batch);
/* Compile options from --backend/--opt/--nesterov/--verbose/--threads/--target. */
bool cli_compile_options(const cli *c, kiln_compile_options *o);

int cmd_compile(const cli *c, bool check_only);
int cmd_train(const cli *c, bool lr_find);
int cmd_info(const cli *c);
/* `kiln compile --emit exe|lib|c --weights W -o NAME` and `kiln predict ...`
 * (tools/aot.c); predict parses its own arguments, argv[2] on. */
int cmd_aot(const cli *c);
int cmd_predict(int argc, char **argv);
/* `kiln bench ...` (tools/bench.c): parses its own arguments, argv[2] on. */
int cmd_bench(int argc, char **argv);
/* `kiln data make KIND OUTDIR ...` (tools/data.c): parses its own arguments. */
int cmd_data(int argc, char **argv);

#endif
