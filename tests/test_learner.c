/* tests/test_learner.c — the Learner end to end on a tiny problem: three
 * well-separated Gaussian clusters in 4 dimensions (3 classes), a 4-16-3
 * MLP built with the C API and compiled for the reference backend with
 * batch 16. 192 training samples (12 batches), 100 validation samples (6
 * full batches and a last batch of 4, evaluated by a tail program compiled
 * for batch 4). */
#include <criterion/criterion.h>

#include "kiln/kiln.h"
#include "kiln/learner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define B 16
#define NTRAIN 192
#define NVALID 100
#define DIM 4
#define NCLASS 3

/* ---- data ---------------------------------------------------------------- */

static uint64_t rng_state;

static double urand(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(rng_state >> 11) + 0.5) / 9007199254740992.0;
}

static double nrand(void)
{
    return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand());
}

/* Class c is centred at radius 2 and angle 2 pi c / 3 in the first two
 * dimensions, 0 in the others; every coordinate has noise of sd 0.6. The
 * centres are 3.5 apart, so the classes barely touch: a good fit reaches
 * (nearly) 100%, and a too-large lr makes the loss blow up, which gives
 * lr_find its usual shape (flat, falling, diverging). */
static kiln_dataset *make_set(int64_t n, uint64_t seed)
{
    rng_state = seed;
    float *x = malloc((size_t)n * DIM * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++) {
        int c = (int)(i % NCLASS);
        y[i] = c;
        for (int d = 0; d < DIM; d++)
            x[i * DIM + d] = (float)(0.6 * nrand());
        x[i * DIM + 0] += (float)(2.0 * cos(2.0943951023931957 * c));
        x[i * DIM + 1] += (float)(2.0 * sin(2.0943951023931957 * c));
    }
    int64_t xs[] = {n, DIM}, ys[] = {n};
    kiln_dataset *d = NULL;
    char *err = NULL;
    kiln_status st = kiln_dataset_from_arrays(x, 2, xs, y, KILN_I32, 1, ys, &d, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    free(x);
    free(y);
    return d;
}

/* ---- the model ------------------------------------------------------------- */

static kiln_graph *make_graph(int64_t batch)
{
    kiln_graph *g = kiln_graph_new("mlp3");
    int64_t xs[] = {batch, DIM}, ys[] = {batch};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_relu(g, kiln_linear(g, x, 16, 1, "fc1"));
    kiln_value out = kiln_linear(g, h, NCLASS, 1, "fc2");
    kiln_value loss = kiln_cross_entropy(g, out, y);
    kiln_value pred = kiln_cast(g, kiln_argmax(g, out, -1), KILN_I32);
    kiln_value acc = kiln_reduce_sum(g, kiln_cast(g, kiln_eq(g, pred, y), KILN_F32), 0, NULL, 0);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_metric(g, acc, "accuracy"), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

static kiln_program *make_program(int64_t batch, kiln_optimizer opt)
{
    kiln_graph *g = make_graph(batch);
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = KILN_BACKEND_REF;
    o.train.optimizer = opt;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : "");
    kiln_graph_free(g);
    return p;
}

typedef struct fixture {
    kiln_dataset *train, *valid;
    kiln_program *p, *tail;
    kiln_learner *l;
    FILE *out;
    char hist[64];
} fixture;

static void setup_fixture(fixture *f, kiln_optimizer opt, int history)
{
    memset(f, 0, sizeof *f);
    f->train = make_set(NTRAIN, 1);
    f->valid = make_set(NVALID, 2);
    f->p = make_program(B, opt);
    f->tail = make_program(NVALID % B, opt);
    f->out = tmpfile();
    cr_assert(f->out);
    kiln_learner_options o = kiln_learner_defaults();
    o.seed = 42;
    o.init_params = 1;
    o.out = f->out;
    o.valid_tail = f->tail;
    if (history) {
        strcpy(f->hist, "/tmp/kiln_learner_hist_XXXXXX");
        int fd = mkstemp(f->hist);
        cr_assert(fd >= 0);
        close(fd);
        o.history_path = f->hist;
    }
    char *err = NULL;
    kiln_status st = kiln_learner_new(f->p, f->train, f->valid, &o, &f->l, &err);
    cr_assert_eq(st, KILN_OK, "kiln_learner_new: %s", err ? err : "");
}

static void teardown_fixture(fixture *f)
{
    kiln_learner_free(f->l);
    kiln_program_free(f->p);
    kiln_program_free(f->tail);
    kiln_dataset_free(f->train);
    kiln_dataset_free(f->valid);
    if (f->out) fclose(f->out);
    if (f->hist[0]) unlink(f->hist);
}

static char *read_all(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = calloc((size_t)n + 1, 1);
    rewind(f);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    fseek(f, 0, SEEK_END);
    return s;
}

static char *read_path(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    char *s = read_all(f);
    fclose(f);
    return s;
}

/* Splits s into lines in place; returns the count. */
static int lines_of(char *s, char **lines, int max)
{
    int n = 0;
    for (char *p = s; *p && n < max;) {
        char *e = strchr(p, '\n');
        lines[n++] = p;
        if (!e) break;
        *e = 0;
        p = e + 1;
    }
    return n;
}

static int is_stat(const char *s, int len) /* d.dddddd */
{
    const char *dot = memchr(s, '.', (size_t)len);
    if (!dot || s + len - dot - 1 != 6) return 0;
    for (int i = 0; i < len; i++)
        if (s + i != dot && (s[i] < '0' || s[i] > '9')) return 0;
    return 1;
}

static int is_time(const char *s, int len) /* mm:ss */
{
    return len == 5 && s[2] == ':' && s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' &&
           s[3] >= '0' && s[3] <= '5' && s[4] >= '0' && s[4] <= '9';
}

/* Evaluates the whole validation set in one batch of 100 with a program
 * compiled for it, from the learner program's weights. */
static void reference_eval(fixture *f, double *loss, double *acc)
{
    kiln_program *q = make_program(NVALID, KILN_OPT_ADAMW);
    int nt = kiln_program_num_tensors(q);
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t, s;
        cr_assert_eq(kiln_program_tensor(q, i, &t), KILN_OK);
        if (t.role != KILN_ROLE_PARAM) continue;
        void *src = kiln_program_data(f->p, t.name, &s);
        cr_assert(src && s.bytes == t.bytes);
        cr_assert_eq(kiln_program_set(q, t.name, src, t.bytes), KILN_OK);
    }
    kiln_loader *vl;
    cr_assert_eq(kiln_loader_new(f->valid, NVALID, 0, 0, 0, &vl), KILN_OK);
    kiln_loader_start(vl, 0);
    int64_t n;
    cr_assert(
        kiln_loader_next(vl, kiln_program_data(q, "x", NULL), kiln_program_data(q, "y", NULL), &n));
    cr_assert_eq(n, NVALID);
    cr_assert_eq(kiln_program_run(q, "eval_step"), KILN_OK, "%s", kiln_program_error(q));
    *loss = *(float *)kiln_program_data(q, "loss", NULL);
    *acc = *(float *)kiln_program_data(q, "accuracy", NULL) / NVALID;
    kiln_loader_free(vl);
    kiln_program_free(q);
}

/* ---- fit_one_cycle, the table, the history file ----------------------------- */

Test(learner, fit_one_cycle_table_and_history, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 1);
    cr_expect_eq(kiln_learner_batch_size(f.l), B);
    cr_expect_eq(kiln_learner_num_batches(f.l), NTRAIN / B);

    cr_assert_eq(kiln_fit_one_cycle(f.l, 4, 1e-1), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect_eq(kiln_learner_get_step(f.l), 4 * NTRAIN / B);
    cr_expect_eq(kiln_learner_get_epoch(f.l), 4);
    cr_expect(!kiln_learner_stopped(f.l));

    kiln_epoch_stats s;
    cr_assert_eq(kiln_learner_last_epoch(f.l, &s), KILN_OK);
    cr_expect_eq(s.epoch, 3);
    cr_expect_eq(s.nmetrics, 1);
    cr_expect_str_eq(s.metric_names[0], "accuracy");
    cr_expect(s.metrics[0] >= 0.98, "accuracy %.4f after one cycle", s.metrics[0]);
    cr_expect(s.valid_loss < 0.1, "valid_loss %.4f", s.valid_loss);
    /* smoothed with beta 0.98 over only 48 steps, it still remembers the
     * first ones (as fastai's would) */
    cr_expect(s.train_loss < 0.5, "train_loss %.4f", s.train_loss);

    /* The partial last batch (4 samples through the tail program) gives
     * what one batch of all 100 samples gives. */
    double rl, ra, vl, va;
    reference_eval(&f, &rl, &ra);
    cr_assert_eq(kiln_learner_validate(f.l, &vl, &va), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect(fabs(vl - rl) < 1e-5 * (1 + fabs(rl)), "valid_loss %.8f vs one batch %.8f", vl, rl);
    cr_expect_eq(va, ra, "accuracy %.4f vs one batch %.4f", va, ra);
    cr_expect_eq(vl, s.valid_loss);
    cr_expect_eq(va, s.metrics[0]);

    /* The table: the header, then one aligned row per epoch. */
    char *table = read_all(f.out), *lines[16];
    int n = lines_of(table, lines, 16);
    cr_assert_eq(n, 5, "header and 4 rows:\n%s", table);
    cr_expect_str_eq(lines[0], "epoch     train_loss  valid_loss  accuracy  time");
    for (int r = 1; r < 5; r++) {
        const char *L = lines[r];
        char want[16];
        snprintf(want, sizeof want, "%-8d  ", r - 1);
        cr_expect(strncmp(L, want, 10) == 0, "row %d starts with its epoch: '%s'", r, L);
        cr_expect(is_stat(L + 10, 8) && L[18] == ' ' && L[19] == ' ' && L[20] == ' ' &&
                      L[21] == ' ',
                  "train_loss column: '%s'", L);
        cr_expect(is_stat(L + 22, 8) && !strncmp(L + 30, "    ", 4), "valid_loss: '%s'", L);
        cr_expect(is_stat(L + 34, 8) && !strncmp(L + 42, "  ", 2), "accuracy: '%s'", L);
        cr_expect(is_time(L + 44, 5) && L[49] == 0, "time: '%s'", L);
    }
    free(table);

    /* The history: CSVLogger's header and one row per epoch. */
    char *csv = read_path(f.hist);
    n = lines_of(csv, lines, 16);
    cr_assert_eq(n, 5, "%s", csv);
    cr_expect_str_eq(lines[0], "epoch,train_loss,valid_loss,accuracy,time");
    for (int r = 1; r < 5; r++) {
        char *L = lines[r];
        char want[8];
        snprintf(want, sizeof want, "%d,", r - 1);
        cr_expect(strncmp(L, want, 2) == 0, "'%s'", L);
        cr_expect(is_stat(L + 2, 8) && L[10] == ',' && is_stat(L + 11, 8) && L[19] == ',' &&
                      is_stat(L + 20, 8) && L[28] == ',' && is_time(L + 29, 5) && L[34] == 0,
                  "'%s'", L);
    }
    /* the last row says what the stats say */
    char buf[64];
    snprintf(buf, sizeof buf, "3,%.6f,%.6f,%.6f,", s.train_loss, s.valid_loss, s.metrics[0]);
    cr_expect(strncmp(lines[4], buf, strlen(buf)) == 0, "'%s' vs '%s'", lines[4], buf);
    free(csv);

    /* A second fit appends to the same history, under the same header, the
     * epochs numbered on. */
    cr_assert_eq(kiln_fit(f.l, 1, 1e-4), KILN_OK, "%s", kiln_learner_error(f.l));
    csv = read_path(f.hist);
    n = lines_of(csv, lines, 16);
    cr_expect_eq(n, 6);
    cr_expect(!strncmp(lines[5], "4,", 2), "'%s'", lines[5]);
    free(csv);
    teardown_fixture(&f);
}

/* ---- callbacks --------------------------------------------------------------- */

typedef struct cb_log {
    char ev[8192];
    size_t len;
    int bad_hparams;
    int stop_at_step; /* end_batch returns 1 at this step (0: never) */
    int64_t last_step;
    kiln_program *p;
    int64_t total;
} cb_log;

static void logf_(cb_log *c, const char *s)
{
    size_t n = strlen(s);
    if (c->len + n < sizeof c->ev) {
        memcpy(c->ev + c->len, s, n + 1);
        c->len += n;
    }
}

static int cb_begin_fit(kiln_learner *l, int64_t epochs, void *u)
{
    (void)l;
    char b[32];
    snprintf(b, sizeof b, "F%lld ", (long long)epochs);
    logf_(u, b);
    return 0;
}
static int cb_begin_epoch(kiln_learner *l, int64_t e, void *u)
{
    (void)l;
    char b[32];
    snprintf(b, sizeof b, "E%lld ", (long long)e);
    logf_(u, b);
    return 0;
}
static int cb_begin_batch(kiln_learner *l, kiln_batch_info *b, void *u)
{
    (void)l;
    cb_log *c = u;
    cr_expect(isnan(b->loss));
    logf_(c, "b");
    return 0;
}
static int cb_end_batch(kiln_learner *l, const kiln_batch_info *b, void *u)
{
    cb_log *c = u;
    logf_(c, "B");
    /* the step, lr and momentum this batch ran with */
    double lr, mom;
    kiln_one_cycle_at(b->iter, c->total, 1e-2, NULL, &lr, &mom);
    float *hp_lr = kiln_program_data(c->p, "lr", NULL),
          *hp_mom = kiln_program_data(c->p, "mom", NULL),
          *hp_step = kiln_program_data(c->p, "step", NULL);
    if (b->step != c->last_step + 1 || b->step != kiln_learner_get_step(l) ||
        *hp_step != (float)b->step || b->lr != lr || b->mom != mom || *hp_lr != (float)lr ||
        *hp_mom != (float)mom || !isfinite(b->loss) || !isfinite(b->smooth_loss) || b->n != B)
        c->bad_hparams++;
    c->last_step = b->step;
    return c->stop_at_step && b->step == c->stop_at_step;
}
static int cb_end_epoch(kiln_learner *l, const kiln_epoch_stats *s, void *u)
{
    (void)l;
    char b[64];
    snprintf(b, sizeof b, " e%lld:%lld ", (long long)s->epoch, (long long)s->batches);
    logf_(u, b);
    return 0;
}
static void cb_end_fit(kiln_learner *l, void *u)
{
    (void)l;
    logf_(u, "f");
}

Test(learner, callbacks_fire_in_order, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 0);
    cb_log c;
    memset(&c, 0, sizeof c);
    c.p = f.p;
    c.total = 2 * NTRAIN / B;
    kiln_callbacks cb = {
        cb_begin_fit, cb_begin_epoch, cb_begin_batch, cb_end_batch, cb_end_epoch, cb_end_fit, &c};
    cr_assert_eq(kiln_learner_add_callbacks(f.l, &cb), KILN_OK);
    cr_assert_eq(kiln_fit_one_cycle(f.l, 2, 1e-2), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect_str_eq(c.ev, "F2 E0 bBbBbBbBbBbBbBbBbBbBbBbB e0:12 "
                           "E1 bBbBbBbBbBbBbBbBbBbBbBbB e1:12 f");
    cr_expect_eq(c.bad_hparams, 0, "step / lr / mom / hparams disagreed %d times", c.bad_hparams);
    teardown_fixture(&f);
}

Test(learner, end_batch_stops_training_cleanly, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 0);
    cb_log c;
    memset(&c, 0, sizeof c);
    c.p = f.p;
    c.total = 3 * NTRAIN / B;
    c.stop_at_step = 15; /* the third batch of the second epoch */
    kiln_callbacks cb = {
        cb_begin_fit, cb_begin_epoch, cb_begin_batch, cb_end_batch, cb_end_epoch, cb_end_fit, &c};
    cr_assert_eq(kiln_learner_add_callbacks(f.l, &cb), KILN_OK);
    cr_assert_eq(kiln_fit_one_cycle(f.l, 3, 1e-2), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect(kiln_learner_stopped(f.l));
    cr_expect_eq(kiln_learner_get_step(f.l), 15);
    cr_expect_eq(kiln_learner_get_epoch(f.l), 2, "the partial epoch counts");
    cr_expect_str_eq(c.ev, "F3 E0 bBbBbBbBbBbBbBbBbBbBbBbB e0:12 E1 bBbBbB e1:3 f");
    /* the stopped epoch is still validated and reported */
    char *table = read_all(f.out), *lines[8];
    cr_expect_eq(lines_of(table, lines, 8), 3, "%s", table);
    free(table);
    kiln_epoch_stats s;
    cr_assert_eq(kiln_learner_last_epoch(f.l, &s), KILN_OK);
    cr_expect_eq(s.batches, 3);
    cr_expect(isfinite(s.valid_loss));
    teardown_fixture(&f);
}

static int cb_first_iter(kiln_learner *l, kiln_batch_info *b, void *u)
{
    (void)l;
    int64_t *first = u;
    if (*first < 0) *first = b->iter;
    return 0;
}

Test(learner, one_cycle_resumes_at_start_epoch, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 0);
    cb_log c;
    memset(&c, 0, sizeof c);
    c.p = f.p;
    c.total = 4 * NTRAIN / B;
    c.last_step = 2 * NTRAIN / B;
    int64_t first = -1;
    kiln_callbacks cb = {
        cb_begin_fit, cb_begin_epoch, cb_begin_batch, cb_end_batch, cb_end_epoch, cb_end_fit, &c};
    kiln_callbacks cb2 = {0};
    cb2.begin_batch = cb_first_iter;
    cb2.user = &first;
    cr_assert_eq(kiln_learner_add_callbacks(f.l, &cb), KILN_OK);
    cr_assert_eq(kiln_learner_add_callbacks(f.l, &cb2), KILN_OK);
    /* as after loading a checkpoint taken at the end of epoch 1 */
    kiln_learner_set_step(f.l, 2 * NTRAIN / B);
    kiln_learner_set_epoch(f.l, 2);
    kiln_one_cycle_options o = kiln_one_cycle_defaults();
    o.start_epoch = 2;
    cr_assert_eq(kiln_fit_one_cycle_ex(f.l, 4, 1e-2, &o), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect_eq(first, 2 * NTRAIN / B, "the schedule resumes at step 24 of 48");
    cr_expect_eq(c.bad_hparams, 0);
    cr_expect_str_eq(c.ev, "F2 E2 bBbBbBbBbBbBbBbBbBbBbBbB e2:12 "
                           "E3 bBbBbBbBbBbBbBbBbBbBbBbB e3:12 f");
    cr_expect_eq(kiln_learner_get_step(f.l), 48);
    teardown_fixture(&f);
}

/* One cycle split over calls (progressive resizing's stages share one
 * schedule): epochs [0, 1) then [1, 4) of a 4-epoch cycle run the steps,
 * rates and momenta of one uninterrupted fit, and stop where told. */
Test(learner, one_cycle_split_by_end_epoch, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 0);
    cb_log c;
    memset(&c, 0, sizeof c);
    c.p = f.p;
    c.total = 4 * NTRAIN / B;
    kiln_callbacks cb = {
        cb_begin_fit, cb_begin_epoch, cb_begin_batch, cb_end_batch, cb_end_epoch, cb_end_fit, &c};
    cr_assert_eq(kiln_learner_add_callbacks(f.l, &cb), KILN_OK);
    kiln_one_cycle_options o = kiln_one_cycle_defaults();
    o.end_epoch = 1;
    cr_assert_eq(kiln_fit_one_cycle_ex(f.l, 4, 1e-2, &o), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect_eq(kiln_learner_get_step(f.l), NTRAIN / B, "stopped after epoch 0");
    o.start_epoch = 1;
    o.end_epoch = 4;
    cr_assert_eq(kiln_fit_one_cycle_ex(f.l, 4, 1e-2, &o), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect_eq(c.bad_hparams, 0, "step / lr / mom / hparams disagreed %d times", c.bad_hparams);
    cr_expect_str_eq(c.ev, "F1 E0 bBbBbBbBbBbBbBbBbBbBbBbB e0:12 f"
                           "F3 E1 bBbBbBbBbBbBbBbBbBbBbBbB e1:12 "
                           "E2 bBbBbBbBbBbBbBbBbBbBbBbB e2:12 "
                           "E3 bBbBbBbBbBbBbBbBbBbBbBbB e3:12 f");
    cr_expect_eq(kiln_learner_get_step(f.l), 48);
    o.start_epoch = 2;
    o.end_epoch = 2;
    cr_expect_eq(kiln_fit_one_cycle_ex(f.l, 4, 1e-2, &o), KILN_ERR_INVALID, "empty range");
    o.end_epoch = 5;
    cr_expect_eq(kiln_fit_one_cycle_ex(f.l, 4, 1e-2, &o), KILN_ERR_INVALID, "past the cycle");
    teardown_fixture(&f);
}

/* ---- lr_find ----------------------------------------------------------------- */

typedef struct snap {
    int n;
    char *names[32];
    void *data[32];
    size_t bytes[32];
} snap;

static void take(kiln_program *p, snap *s)
{
    memset(s, 0, sizeof *s);
    int nt = kiln_program_num_tensors(p);
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        cr_assert_eq(kiln_program_tensor(p, i, &t), KILN_OK);
        if (t.role != KILN_ROLE_PARAM && t.role != KILN_ROLE_STATE) continue;
        cr_assert(s->n < 32);
        s->names[s->n] = strdup(t.name);
        s->bytes[s->n] = t.bytes;
        s->data[s->n] = malloc(t.bytes);
        cr_assert_eq(kiln_program_get(p, t.name, s->data[s->n], t.bytes), KILN_OK);
        s->n++;
    }
}

static void drop(snap *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        free(s->data[i]);
    }
}

/* The good range. From the same initial weights, kiln_fit_one_cycle over 4
 * epochs (48 steps) at max_lr in {1e-2, 2e-2, 3e-2, 5e-2, 1e-1, 2e-1,
 * 3e-1, 1} ends at valid_loss 0.36, 0.083, 0.036, 0.017, 0.0094, 0.039,
 * 0.0005, 0.39 (accuracy 0.98 to 1.00 from 2e-2 to 3e-1, 0.97-0.98 at the
 * ends): [3e-2, 3e-1] is good (valid_loss < 0.1, accuracy >= 0.98; checked
 * at its ends and middle), 1e-2 is too timid and 1 too wild (valid_loss >
 * 0.3). lr_find must suggest an lr in [3e-2, 3e-1]. */
static void cycle_result(double max_lr, double *valid_loss, double *acc)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 0);
    cr_assert_eq(kiln_fit_one_cycle(f.l, 4, max_lr), KILN_OK, "%s", kiln_learner_error(f.l));
    kiln_epoch_stats s;
    cr_assert_eq(kiln_learner_last_epoch(f.l, &s), KILN_OK);
    *valid_loss = s.valid_loss;
    *acc = s.metrics[0];
    teardown_fixture(&f);
}

Test(learner, good_lr_range, .timeout = 300)
{
    const double good[] = {3e-2, 1e-1, 3e-1}, bad[] = {1e-2, 1.0};
    double vl, acc;
    for (int i = 0; i < 3; i++) {
        cycle_result(good[i], &vl, &acc);
        cr_expect(vl < 0.1 && acc >= 0.98, "max_lr %g: valid_loss %.4f accuracy %.3f", good[i], vl,
                  acc);
    }
    for (int i = 0; i < 2; i++) {
        cycle_result(bad[i], &vl, &acc);
        cr_expect(vl > 0.3, "max_lr %g: valid_loss %.4f", bad[i], vl);
    }
}

Test(learner, lr_find_on_fresh_weights_diverges_and_suggests_good_lr, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 0);
    kiln_lr_find_result r;
    cr_assert_eq(kiln_lr_find_ex(f.l, NULL, NULL, &r), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect(r.diverged && r.num_points < 100, "stop_div ends the sweep (%lld points)",
              (long long)r.num_points);
    double best = r.losses[0];
    for (int64_t i = 0; i + 1 < r.num_points; i++)
        best = fmin(best, r.losses[i]);
    cr_expect(r.losses[r.num_points - 1] > 4 * best);
    cr_expect(r.suggested_lr >= 3e-2 && r.suggested_lr <= 3e-1, "suggested %.3g", r.suggested_lr);
    cr_expect_eq(kiln_learner_get_step(f.l), 0);
    teardown_fixture(&f);
}

Test(learner, lr_find_suggests_good_lr_and_restores_state, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_ADAMW, 1);
    /* one epoch first, so the optimizer state and the step are not trivial */
    cr_assert_eq(kiln_fit(f.l, 1, 1e-3), KILN_OK, "%s", kiln_learner_error(f.l));
    snap before, after;
    take(f.p, &before);
    int64_t step = kiln_learner_get_step(f.l), epoch = kiln_learner_get_epoch(f.l);
    char *csv0 = read_path(f.hist);

    char svg[] = "/tmp/kiln_lr_find_XXXXXX";
    int fd = mkstemp(svg);
    cr_assert(fd >= 0);
    close(fd);
    kiln_lr_find_result r;
    cr_assert_eq(kiln_lr_find_ex(f.l, NULL, svg, &r), KILN_OK, "%s", kiln_learner_error(f.l));

    /* byte-identical weights and optimizer state, same counters */
    take(f.p, &after);
    cr_assert_eq(after.n, before.n);
    cr_expect(before.n >= 8, "4 parameters and 8 AdamW state tensors");
    for (int i = 0; i < before.n; i++) {
        cr_expect_str_eq(after.names[i], before.names[i]);
        cr_expect(!memcmp(after.data[i], before.data[i], before.bytes[i]), "%s changed",
                  before.names[i]);
    }
    cr_expect_eq(kiln_learner_get_step(f.l), step);
    cr_expect_eq(kiln_learner_get_epoch(f.l), epoch);
    char *csv1 = read_path(f.hist);
    cr_expect_str_eq(csv1, csv0, "lr_find writes no history");
    free(csv0);
    free(csv1);

    /* the sweep: exponential from 1e-7, at most num_it points */
    cr_expect(r.num_points > 20 && r.num_points <= 100);
    cr_expect_eq(r.lrs[0], 1e-7);
    for (int64_t i = 1; i < r.num_points; i++)
        cr_expect(fabs(r.lrs[i] / (1e-7 * pow(1e8, i / 100.0)) - 1) < 1e-12);
    cr_expect(r.suggested_lr >= 3e-2 && r.suggested_lr <= 3e-1, "suggested %.3g", r.suggested_lr);
    cr_expect(isfinite(r.min_loss_lr));

    /* the plot */
    char *s = read_path(svg);
    cr_expect(strstr(s, "<svg") && strstr(s, "</svg>"));
    cr_expect(strstr(s, ">Learning Rate<") && strstr(s, ">Loss<"));
    cr_expect(strstr(s, "id=\"suggestion\""));
    char label[64];
    snprintf(label, sizeof label, "suggested lr %.2e", r.suggested_lr);
    cr_expect(strstr(s, label), "%s", label);
    free(s);
    unlink(svg);

    /* the one-line report */
    char *out = read_all(f.out);
    char line[64];
    snprintf(line, sizeof line, "Min numerical gradient: %.2E\n", r.suggested_lr);
    cr_expect(strstr(out, "LR Finder is complete") && strstr(out, line), "%s", out);
    free(out);

    /* kiln_lr_find gives the same suggestion again: nothing moved */
    double again;
    cr_assert_eq(kiln_lr_find(f.l, &again, NULL), KILN_OK, "%s", kiln_learner_error(f.l));
    cr_expect_eq(again, r.suggested_lr);
    drop(&before);
    drop(&after);
    teardown_fixture(&f);
}

/* ---- SGD, weight decay, errors ---------------------------------------------- */

Test(learner, sgd_fit_and_decoupled_weight_decay, .timeout = 300)
{
    fixture f;
    setup_fixture(&f, KILN_OPT_SGD, 0);
    cr_assert_eq(kiln_fit(f.l, 3, 0.1), KILN_OK, "%s", kiln_learner_error(f.l));
    kiln_epoch_stats s;
    cr_assert_eq(kiln_learner_last_epoch(f.l, &s), KILN_OK);
    cr_expect(s.metrics[0] >= 0.98, "SGD accuracy %.4f", s.metrics[0]);
    teardown_fixture(&f);

    /* One step with true_wd: p <- (1 - lr*wd) p, then SGD without weight
     * decay, as fastai's OptimWrapper. Reproduce it by hand on a second
     * program from the same weights and the same (first) batch. */
    kiln_dataset *train = make_set(B, 7);
    kiln_program *p = make_program(B, KILN_OPT_SGD), *q = make_program(B, KILN_OPT_SGD);
    kiln_learner_options o = kiln_learner_defaults();
    o.seed = 3;
    o.wd = 0.1;
    o.print_table = 0;
    kiln_learner *l;
    char *err = NULL;
    cr_assert_eq(kiln_program_init_params(p, 5), KILN_OK);
    cr_assert_eq(kiln_program_init_params(q, 5), KILN_OK);
    cr_assert_eq(kiln_learner_new(p, train, NULL, &o, &l, &err), KILN_OK, "%s", err);
    cr_assert_eq(kiln_fit(l, 1, 0.5), KILN_OK, "%s", kiln_learner_error(l));

    kiln_loader *tl;
    cr_assert_eq(kiln_loader_new(train, B, 1, 1, 3, &tl), KILN_OK);
    kiln_loader_start(tl, 0);
    int64_t n;
    cr_assert(
        kiln_loader_next(tl, kiln_program_data(q, "x", NULL), kiln_program_data(q, "y", NULL), &n));
    const char *names[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};
    for (int i = 0; i < 4; i++) {
        kiln_tensor_info t;
        float *w = kiln_program_data(q, names[i], &t);
        for (size_t k = 0; k < t.bytes / 4; k++)
            w[k] *= (float)(1 - 0.5 * 0.1);
    }
    cr_assert_eq(kiln_program_set_hparam(q, "lr", 0.5), KILN_OK);
    cr_assert_eq(kiln_program_set_hparam(q, "mom", 0.9), KILN_OK);
    cr_assert_eq(kiln_program_set_hparam(q, "wd", 0.0), KILN_OK);
    cr_assert_eq(kiln_program_run(q, "train_step"), KILN_OK, "%s", kiln_program_error(q));
    for (int i = 0; i < 4; i++) {
        kiln_tensor_info t;
        float *a = kiln_program_data(p, names[i], &t), *b = kiln_program_data(q, names[i], NULL);
        cr_expect(!memcmp(a, b, t.bytes), "%s differs from the by-hand step", names[i]);
    }
    kiln_loader_free(tl);
    kiln_learner_free(l);

    /* AdamW cannot do L2 (true_wd = 0) */
    kiln_program *adam = make_program(B, KILN_OPT_ADAMW);
    o.true_wd = 0;
    cr_expect_eq(kiln_learner_new(adam, train, NULL, &o, &l, &err), KILN_ERR_UNSUPPORTED);
    cr_expect(err && strstr(err, "true_wd"), "%s", err ? err : "(null)");
    free(err);
    cr_expect_null(l);
    kiln_program_free(adam);
    kiln_program_free(p);
    kiln_program_free(q);
    kiln_dataset_free(train);
}

Test(learner, partial_validation_batch_needs_tail_program)
{
    kiln_dataset *train = make_set(NTRAIN, 1), *valid = make_set(NVALID, 2);
    kiln_program *p = make_program(B, KILN_OPT_ADAMW), *wrong = make_program(5, KILN_OPT_ADAMW);
    kiln_learner *l = NULL;
    char *err = NULL;
    kiln_learner_options o = kiln_learner_defaults();
    cr_expect_eq(kiln_learner_new(p, train, valid, &o, &l, &err), KILN_ERR_INVALID);
    cr_expect_null(l);
    cr_assert(err);
    cr_expect(strstr(err, "100 samples") && strstr(err, "valid_tail") && strstr(err, "batch 4") &&
                  strstr(err, "kiln_dataset_head"),
              "%s", err);
    free(err);

    o.valid_tail = wrong;
    cr_expect_eq(kiln_learner_new(p, train, valid, &o, &l, &err), KILN_ERR_SHAPE);
    cr_expect(err && strstr(err, "batch 4"), "%s", err ? err : "(null)");
    free(err);

    /* a multiple of the batch needs no tail */
    kiln_dataset *v96;
    cr_assert_eq(kiln_dataset_head(valid, 96, &v96), KILN_OK);
    o.valid_tail = NULL;
    cr_expect_eq(kiln_learner_new(p, train, v96, &o, &l, &err), KILN_OK, "%s", err);
    kiln_learner_free(l);

    /* batch option must agree; the training set must hold a batch */
    o.batch = 32;
    cr_expect_eq(kiln_learner_new(p, train, v96, &o, &l, &err), KILN_ERR_SHAPE);
    free(err);
    o.batch = 0;
    kiln_dataset *tiny;
    cr_assert_eq(kiln_dataset_head(train, 10, &tiny), KILN_OK);
    cr_expect_eq(kiln_learner_new(p, tiny, v96, &o, &l, &err), KILN_ERR_INVALID);
    cr_expect(err && strstr(err, "fewer than one batch"), "%s", err ? err : "(null)");
    free(err);

    kiln_dataset_free(tiny);
    kiln_dataset_free(v96);
    kiln_program_free(p);
    kiln_program_free(wrong);
    kiln_dataset_free(train);
    kiln_dataset_free(valid);
}

Test(learner, counters_and_no_validation_set, .timeout = 300)
{
    kiln_dataset *train = make_set(NTRAIN, 1);
    kiln_program *p = make_program(B, KILN_OPT_ADAMW);
    FILE *out = tmpfile();
    kiln_learner_options o = kiln_learner_defaults();
    o.init_params = 1;
    o.out = out;
    kiln_learner *l;
    char *err = NULL;
    cr_assert_eq(kiln_learner_new(p, train, NULL, &o, &l, &err), KILN_OK, "%s", err);
    kiln_learner_set_step(l, 100);
    kiln_learner_set_epoch(l, 7);
    cr_assert_eq(kiln_fit(l, 1, 1e-3), KILN_OK, "%s", kiln_learner_error(l));
    cr_expect_eq(kiln_learner_get_step(l), 112);
    cr_expect_eq(*(float *)kiln_program_data(p, "step", NULL), 112.0f);
    cr_expect_eq(kiln_learner_get_epoch(l), 8);
    char *s = read_all(out), *lines[4];
    cr_assert_eq(lines_of(s, lines, 4), 2);
    cr_expect(!strncmp(lines[1], "7         ", 10), "'%s'", lines[1]);
    cr_expect(strstr(lines[1], "#na#        #na#      "), "'%s'", lines[1]);
    double vl;
    cr_expect_eq(kiln_learner_validate(l, &vl, NULL), KILN_ERR_NOT_FOUND);
    free(s);
    fclose(out);
    kiln_learner_free(l);
    kiln_program_free(p);
    kiln_dataset_free(train);
}
