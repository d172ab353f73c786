/* tools/train.c — `kiln train` and `kiln lr-find`: load the model and the
 * data, compile, build a Learner, run, save. */
#include "tools/cli.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Everything a training run holds; freed by session_end. */
typedef struct session {
    kiln_graph *fwd, *tail_fwd;
    kiln_program *prog, *tail;
    kiln_dataset *train, *valid;
    kiln_learner *learner;
} session;

static void session_end(session *s)
{
    kiln_learner_free(s->learner);
    kiln_program_free(s->tail);
    kiln_program_free(s->prog);
    kiln_graph_free(s->tail_fwd);
    kiln_graph_free(s->fwd);
    kiln_dataset_free(s->train);
    kiln_dataset_free(s->valid);
}

/* Loads one split (and cuts it to --limit samples). */
static int load_split(const cli *c, int train, kiln_dataset **out)
{
    char *err = NULL;
    kiln_status st = kiln_dataset_fashion_mnist(c->data, train, out, &err);
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", c->cmd, err ? err : kiln_status_str(st));
        free(err);
        return EXIT_USAGE;
    }
    if (c->limit && c->limit < kiln_dataset_len(*out)) {
        kiln_dataset *h = NULL;
        if (kiln_dataset_head(*out, c->limit, &h)) return EXIT_RUN;
        kiln_dataset_free(*out);
        *out = h;
    }
    return 0;
}

static int compile(const cli *c, const kiln_graph *g, const kiln_compile_options *co,
                   kiln_program **out)
{
    char *err = NULL;
    kiln_status st = kiln_compile(g, co, out, &err);
    if (st) {
        /* the library names its call; here the command says where it was */
        const char *m = err ? err : kiln_status_str(st);
        if (!strncmp(m, "kiln_compile: ", 14)) m += 14;
        fprintf(stderr, "kiln %s: %s\n", c->cmd, m);
        free(err);
        return st == KILN_ERR_SHAPE || st == KILN_ERR_INVALID ? EXIT_USAGE : EXIT_RUN;
    }
    return 0;
}

/* Sets up data, programs and the learner. */
static int session_start(const cli *c, session *s)
{
    memset(s, 0, sizeof *s);
    kiln_compile_options co;
    if (!cli_compile_options(c, &co)) return EXIT_USAGE;
    if (!(s->fwd = cli_load_model(c, c->batch))) return EXIT_USAGE;
    int rc;
    if ((rc = load_split(c, 1, &s->train)) || (rc = load_split(c, 0, &s->valid))) return rc;
    /* Normalise both splits with the training set's statistics. */
    float mean, std;
    kiln_dataset_stats(s->train, &mean, &std);
    kiln_dataset_normalize(s->train, mean, std);
    kiln_dataset_normalize(s->valid, mean, std);

    double t0 = 0;
    kiln_program_stats ps;
    if ((rc = compile(c, s->fwd, &co, &s->prog))) return rc;
    kiln_program_stats_get(s->prog, &ps);
    t0 = ps.compile_seconds;
    /* The validation set's last partial batch runs through a program
     * compiled for its size. */
    int64_t r = kiln_dataset_len(s->valid) % c->batch;
    if (r) {
        if (!(s->tail_fwd = cli_load_model(c, r))) return EXIT_USAGE;
        if ((rc = compile(c, s->tail_fwd, &co, &s->tail))) return rc;
        kiln_program_stats_get(s->tail, &ps);
        t0 += ps.compile_seconds;
    }
    fprintf(stderr, "kiln: %s compiled (%s backend%s) in %.2f s; %d thread%s\n", c->model,
            co.backend == KILN_BACKEND_C      ? "C"
            : co.backend == KILN_BACKEND_LLVM ? "LLVM"
                                              : "reference",
            co.backend == KILN_BACKEND_C && ps.cached ? ", cached" : "", t0, ps.threads,
            ps.threads == 1 ? "" : "s");
    kiln_program_init_params(s->prog, c->seed);

    kiln_learner_options lo = kiln_learner_defaults();
    lo.seed = c->seed;
    lo.wd = c->wd;
    lo.history_path = c->history;
    lo.history_append = c->load != NULL;
    lo.valid_tail = s->tail;
    lo.out = stdout;
    lo.print_table = 1;
    char *err = NULL;
    kiln_status st = kiln_learner_new(s->prog, s->train, s->valid, &lo, &s->learner, &err);
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", c->cmd, err ? err : kiln_status_str(st));
        free(err);
        return EXIT_USAGE;
    }
    if (c->load) {
        kiln_checkpoint_meta *meta = kiln_checkpoint_meta_new();
        st = meta ? kiln_load_ex(s->prog, c->load, 1, 1, meta, &err) : KILN_ERR_NOMEM;
        if (st) {
            fprintf(stderr, "kiln %s: %s\n", c->cmd, err ? err : kiln_status_str(st));
            free(err);
            kiln_checkpoint_meta_free(meta);
            return EXIT_USAGE;
        }
        int64_t v;
        if (!kiln_checkpoint_meta_get_int(meta, "kiln.step", &v)) kiln_learner_set_step(s->learner, v);
        if (!kiln_checkpoint_meta_get_int(meta, "kiln.epoch", &v)) kiln_learner_set_epoch(s->learner, v);
        kiln_checkpoint_meta_free(meta);
        fprintf(stderr, "kiln: resumed from %s at epoch %lld\n", c->load,
                (long long)kiln_learner_get_epoch(s->learner));
    }
    return 0;
}

static int save(const cli *c, session *s)
{
    kiln_checkpoint_meta *meta = kiln_checkpoint_meta_new();
    if (!meta) return EXIT_RUN;
    kiln_checkpoint_meta_set_int(meta, "kiln.step", kiln_learner_get_step(s->learner));
    kiln_checkpoint_meta_set_int(meta, "kiln.epoch", kiln_learner_get_epoch(s->learner));
    kiln_checkpoint_meta_set(meta, "kiln.model", c->model);
    char *err = NULL;
    kiln_status st = kiln_save_ex(s->prog, c->save, 1, meta, &err);
    kiln_checkpoint_meta_free(meta);
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", c->cmd, err ? err : kiln_status_str(st));
        free(err);
        return EXIT_RUN;
    }
    printf("saved weights and optimizer state to %s\n", c->save);
    return 0;
}

/* Whether a file can be written at path (its folder exists and is
 * writable): checked before training, so a bad path loses no work. */
static bool writable(const cli *c, const char *opt, const char *path)
{
    if (!path) return true;
    char *copy = strdup(path);
    if (!copy) return false;
    const char *dir = dirname(copy);
    bool ok = access(dir, W_OK) == 0;
    if (!ok)
        fprintf(stderr, "kiln %s: cannot write %s '%s': folder '%s': %s\n", c->cmd, opt, path,
                dir, strerror(errno));
    free(copy);
    return ok;
}

int cmd_train(const cli *c, bool lr_find)
{
    if (c->schedule && strcmp(c->schedule, "one-cycle") && strcmp(c->schedule, "const")) {
        fprintf(stderr, "kiln train: unknown schedule '%s' (one-cycle, const)\n", c->schedule);
        return EXIT_USAGE;
    }
    if (!writable(c, "--save", c->save) || !writable(c, "--history", c->history) ||
        !writable(c, "--plot", c->plot))
        return EXIT_USAGE;
    if (c->limit && c->limit < c->batch) {
        fprintf(stderr, "kiln %s: --limit %lld leaves fewer samples than one batch (--bs %lld)\n",
                c->cmd, (long long)c->limit, (long long)c->batch);
        return EXIT_USAGE;
    }
    if (c->load) { /* a bad checkpoint is found before anything is compiled */
        kiln_checkpoint_meta *meta = NULL;
        char *err = NULL;
        kiln_status st = kiln_checkpoint_read_meta(c->load, &meta, &err);
        kiln_checkpoint_meta_free(meta);
        if (st) {
            fprintf(stderr, "kiln %s: %s\n", c->cmd, err ? err : kiln_status_str(st));
            free(err);
            return EXIT_USAGE;
        }
    }
    session s;
    int rc = session_start(c, &s);
    if (rc) {
        session_end(&s);
        return rc;
    }
    kiln_status st;
    if (lr_find) {
        double lr = NAN;
        st = kiln_lr_find(s.learner, &lr, c->plot);
        if (!st) {
            printf("suggested learning rate: %.3g\n", lr);
            if (c->plot) printf("plot: %s\n", c->plot);
        }
    } else if (c->schedule && !strcmp(c->schedule, "const")) {
        st = kiln_fit(s.learner, c->epochs, c->lr);
    } else {
        st = kiln_fit_one_cycle(s.learner, c->epochs, c->lr);
    }
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", c->cmd, kiln_learner_error(s.learner));
        rc = EXIT_RUN;
    } else if (!lr_find && c->save) {
        rc = save(c, &s);
    }
    session_end(&s);
    return rc;
}
