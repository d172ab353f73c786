/* tools/train.c — `kiln train` and `kiln lr-find`: load the model and the
 * data, compile, build a Learner, run, save.
 *
 * --data DIR is told by what it holds: idx files (Fashion-MNIST, MNIST),
 * else an image layout (kiln_data_detect: labels.csv multi-label, codes.txt
 * segmentation, points.csv points, train/CLASS/ folders); a folder with
 * none of them is looked for Fashion-MNIST in, whose message says so. */
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

/* Whether dir holds Fashion-MNIST's (or MNIST's) idx files. */
static bool has_idx(const char *dir)
{
    static const char *const names[] = {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"};
    for (size_t k = 0; k < 2; k++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[k]);
        if (access(p, F_OK) == 0) return true;
    }
    return false;
}

/* Loads one split (and cuts it to --limit samples). */
static int load_split(const cli *c, int train, kiln_dataset **out)
{
    char *err = NULL;
    kiln_data_kind kind = c->data && !has_idx(c->data) ? kiln_data_detect(c->data)
                                                       : KILN_DATA_NONE;
    kiln_status st;
    if (kind != KILN_DATA_NONE) {
        kiln_image_opts o = kiln_image_defaults();
        o.height = o.width = (int)c->size;
        o.augment = c->augment;
        st = kiln_dataset_open_images(c->data, &o, !train, out, &err);
    } else if (c->size || c->augment) {
        fprintf(stderr, "kiln %s: %s works with image data sets only (--data DIR holding "
                "train/CLASS/, labels.csv, codes.txt or points.csv); %s holds none\n", c->cmd,
                c->size ? "--size" : "--augment", c->data ? c->data : "Fashion-MNIST's folder");
        return EXIT_USAGE;
    } else {
        st = kiln_dataset_fashion_mnist(c->data, train, out, &err);
    }
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

/* --init-from FILE: another model's weights, every tensor whose name and
 * shape match; what was left out is reported. */
static int init_from(const cli *c, kiln_program *p)
{
    kiln_load_report r;
    char *err = NULL;
    kiln_status st = kiln_load_matching(p, c->init_from, &r, &err);
    if (st) {
        fprintf(stderr, "kiln %s: --init-from %s\n", c->cmd, err ? err : kiln_status_str(st));
        free(err);
        kiln_load_report_free(&r);
        return st == KILN_ERR_NOMEM || st == KILN_ERR_INTERNAL ? EXIT_RUN : EXIT_USAGE;
    }
    fprintf(stderr, "kiln: --init-from %s: loaded %d tensor%s, skipped %d not in the model, "
            "refused %d of another shape; %d of the model's kept their initialisation\n",
            c->init_from, r.nloaded, r.nloaded == 1 ? "" : "s", r.nskipped, r.nrefused,
            r.nmissing);
    for (int i = 0; i < r.nskipped && i < 20; i++)
        fprintf(stderr, "kiln:   skipped '%s'\n", r.skipped[i]);
    if (r.nskipped > 20) fprintf(stderr, "kiln:   ... and %d more skipped\n", r.nskipped - 20);
    for (int i = 0; i < r.nrefused; i++) fprintf(stderr, "kiln:   refused %s\n", r.refused_why[i]);
    kiln_load_report_free(&r);
    return 0;
}

/* --freeze-to N: fastai's freeze_to on the learner. */
static int freeze(const cli *c, kiln_learner *l)
{
    if (!c->freeze_to) return 0;
    char *end = NULL;
    long v = strtol(c->freeze_to, &end, 10);
    if (!*c->freeze_to || *end || v < -KILN_MAX_PARAM_GROUPS || v > KILN_MAX_PARAM_GROUPS) {
        fprintf(stderr, "kiln %s: --freeze-to wants a group index (negative counts from the "
                "end: -1 trains only the last group), got '%s'\n", c->cmd, c->freeze_to);
        return EXIT_USAGE;
    }
    if (kiln_learner_freeze_to(l, (int)v)) {
        fprintf(stderr, "kiln %s: --freeze-to %ld: %s\n", c->cmd, v, kiln_learner_error(l));
        return EXIT_USAGE;
    }
    fprintf(stderr, "kiln: %d parameter groups, %d frozen\n", kiln_learner_num_groups(l),
            kiln_learner_frozen_groups(l));
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
    if (kiln_dataset_kind(s->train) != KILN_DATA_NONE) {
        int64_t xs[KILN_MAX_RANK];
        int nc;
        kiln_dataset_shapes(s->train, NULL, xs, NULL, NULL, NULL);
        kiln_dataset_classes(s->train, &nc);
        fprintf(stderr, "kiln: %s: %s images %lldx%lldx%lld, %d classes, %lld training and "
                "%lld validation samples%s\n", c->data,
                kiln_data_kind_name(kiln_dataset_kind(s->train)), (long long)xs[0],
                (long long)xs[1], (long long)xs[2], nc,
                (long long)kiln_dataset_len(s->train), (long long)kiln_dataset_len(s->valid),
                c->augment ? ", augmented" : "");
    }
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
    if (c->init_from && (rc = init_from(c, s->prog))) return rc;

    kiln_learner_options lo = kiln_learner_defaults();
    lo.seed = c->seed;
    lo.wd = c->wd;
    lo.history_path = c->history;
    lo.history_append = c->load != NULL || c->stage > 0;
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
    if ((rc = freeze(c, s->learner))) return rc;
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
    if (c->size > 65535) {
        fprintf(stderr, "kiln %s: --size %lld is too large (at most 65535)\n", c->cmd,
                (long long)c->size);
        return EXIT_USAGE;
    }
    if (c->init_from && c->load) {
        fprintf(stderr, "kiln %s: --init-from (another model's weights) and --load (resume this "
                "model) exclude each other\n", c->cmd);
        return EXIT_USAGE;
    }
    if (c->lr_lo && c->schedule && !strcmp(c->schedule, "const")) {
        fprintf(stderr, "kiln %s: --lr LO:HI is for the one-cycle schedule\n", c->cmd);
        return EXIT_USAGE;
    }
    if (c->freeze_epochs && (c->lr_lo || c->sizes || c->freeze_to ||
                             (c->schedule && strcmp(c->schedule, "one-cycle")))) {
        fprintf(stderr, "kiln %s: --freeze-epochs (fine_tune) sets its own rates, freezing and "
                "schedule: give it one --lr and no --sizes, --freeze-to or --schedule\n", c->cmd);
        return EXIT_USAGE;
    }
    const char *ckpt = c->init_from ? c->init_from : c->load;
    if (ckpt) { /* a bad checkpoint is found before anything is compiled */
        kiln_checkpoint_meta *meta = NULL;
        char *err = NULL;
        kiln_status st = kiln_checkpoint_read_meta(ckpt, &meta, &err);
        kiln_checkpoint_meta_free(meta);
        if (st) {
            fprintf(stderr, "kiln %s: %s%s\n", c->cmd, c->init_from ? "--init-from " : "",
                    err ? err : kiln_status_str(st));
            free(err);
            return EXIT_USAGE;
        }
    }
    /* --sizes: the stages of progressive resizing (one stage without it) */
    int64_t sizes[16];
    int nsizes = 0;
    for (const char *p = c->sizes; p && *p;) {
        char *end = NULL;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 1 || v > 65535 || (*end && *end != ',') || nsizes == 16) {
            fprintf(stderr, "kiln %s: --sizes wants image sizes like 32,64 (at most 16, each "
                    "1 to 65535), got '%s'\n", c->cmd, c->sizes);
            return EXIT_USAGE;
        }
        sizes[nsizes++] = v;
        p = *end ? end + 1 : end;
    }
    if (nsizes && lr_find) {
        fprintf(stderr, "kiln lr-find: --sizes is for train; give lr-find one --size\n");
        return EXIT_USAGE;
    }
    if (c->nepochs > 1 && c->nepochs != (nsizes ? nsizes : 1)) {
        fprintf(stderr, "kiln %s: --epochs lists %d counts but --sizes %d sizes; give one count "
                "per size, or one count for all\n", c->cmd, c->nepochs, nsizes);
        return EXIT_USAGE;
    }
    session prev = {0}, s = {0};
    int rc = 0;
    kiln_status st = KILN_OK;
    for (int k = 0; k < (nsizes ? nsizes : 1) && !rc; k++) {
        cli cs = *c;
        if (nsizes) {
            cs.size = cs.dim_s = sizes[k];
            cs.stage = k;
            cs.epochs = c->nepochs > 1 ? c->epoch_list[k] : c->epochs;
            if (k) cs.load = cs.init_from = NULL; /* a checkpoint is read once, by the first stage */
        }
        if ((rc = session_start(&cs, &s))) break;
        if (k) { /* carry weights, optimizer and running statistics over by name */
            kiln_copy_report r;
            char *err = NULL;
            if ((st = kiln_program_copy(s.prog, prev.prog, 1, &r, &err))) {
                fprintf(stderr, "kiln %s: size %lld -> %lld: %s\n", c->cmd, (long long)sizes[k - 1],
                        (long long)sizes[k], err ? err : kiln_status_str(st));
                free(err);
                rc = EXIT_USAGE;
                break;
            }
            kiln_learner_set_step(s.learner, kiln_learner_get_step(prev.learner));
            kiln_learner_set_epoch(s.learner, kiln_learner_get_epoch(prev.learner));
            fprintf(stderr, "kiln: size %lld: carried %d tensors (%.1f MiB) over from size %lld\n",
                    (long long)sizes[k], r.copied, (double)r.bytes / (1 << 20),
                    (long long)sizes[k - 1]);
            session_end(&prev);
            memset(&prev, 0, sizeof prev);
        }
        if (nsizes) fprintf(stderr, "kiln: size %lld, %lld epoch%s\n", (long long)sizes[k],
                            (long long)cs.epochs, cs.epochs == 1 ? "" : "s");
        if (lr_find) {
            double lr = NAN;
            st = kiln_lr_find(s.learner, &lr, c->plot);
            if (!st) {
                printf("suggested learning rate: %.3g\n", lr);
                if (c->plot) printf("plot: %s\n", c->plot);
            }
        } else if (c->schedule && !strcmp(c->schedule, "const")) {
            st = kiln_fit(s.learner, cs.epochs, c->lr);
        } else if (c->freeze_epochs) {
            kiln_fine_tune_options ft = kiln_fine_tune_defaults();
            ft.freeze_epochs = c->freeze_epochs;
            st = kiln_fine_tune(s.learner, cs.epochs, c->lr, &ft);
        } else {
            kiln_one_cycle_options oc = kiln_one_cycle_defaults();
            oc.lr_lo = c->lr_lo;
            if (nsizes > 1 && !c->cycle_per_size) { /* one cycle over every stage's epochs */
                int64_t before = 0, all = 0;
                for (int j = 0; j < nsizes; j++) {
                    int64_t ej = c->nepochs > 1 ? c->epoch_list[j] : c->epochs;
                    if (j < k) before += ej;
                    all += ej;
                }
                oc.start_epoch = before;
                oc.end_epoch = before + cs.epochs;
                st = cs.epochs ? kiln_fit_one_cycle_ex(s.learner, all, c->lr, &oc) : KILN_OK;
            } else {
                st = kiln_fit_one_cycle_ex(s.learner, cs.epochs, c->lr, &oc);
            }
        }
        if (st) {
            fprintf(stderr, "kiln %s: %s\n", c->cmd, kiln_learner_error(s.learner));
            rc = EXIT_RUN;
        }
        prev = s;
        memset(&s, 0, sizeof s);
    }
    if (!rc && !lr_find && c->save) rc = save(c, &prev);
    session_end(&prev);
    session_end(&s);
    return rc;
}
