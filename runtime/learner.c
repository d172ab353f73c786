/* runtime/learner.c — the Learner: creation (which tensors of the program
 * it feeds and reads, checked against the data sets), the fit loop shared
 * by kiln_fit, kiln_fit_one_cycle and kiln_lr_find, and validation.
 *
 * The loop follows fastai v1's basic_train.fit: per epoch, shuffled
 * training batches with the schedule's lr and momentum set as the
 * program's hyperparameters before each train_step, the loss smoothed
 * (SmoothenValue, beta 0.98) across the fit call, then validation and one
 * table row. The training loader writes each batch straight into the
 * program's input and target storage (their addresses are fixed for the
 * program's life), so a step copies nothing. See kiln/learner.h for the
 * contract, including the validation set's partial last batch.
 */
#include "ir/graph.h"
#include "runtime/learner_internal.h"
#include "runtime/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

kiln_learner_options kiln_learner_defaults(void)
{
    kiln_learner_options o;
    memset(&o, 0, sizeof o);
    o.batch = 0;
    o.seed = 0;
    o.init_params = 0;
    o.mom = 0.9;
    o.beta2 = 0.99;
    o.eps = 1e-5;
    o.wd = 1e-2;
    o.true_wd = 1;
    o.smooth_beta = 0.98;
    o.print_table = 1;
    o.out = NULL;
    o.history_path = NULL;
    o.history_append = 0;
    o.valid_tail = NULL;
    o.train_bn = 1;
    return o;
}

kiln_status kiln_learner_fail(kiln_learner *l, kiln_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->err, sizeof l->err, fmt, ap);
    va_end(ap);
    return st;
}

const char *kiln_learner_error(const kiln_learner *l)
{
    return l ? l->err : "";
}

static kiln_status apply_freeze(kiln_learner *l);

/* ---- reading the program ------------------------------------------------- */

/* Element i of a returned value. */
static double read_at(const kiln_scalar_out *s, int64_t i)
{
    switch (s->dtype) {
    case KILN_F32: return ((const float *)s->data)[i];
    case KILN_F64: return ((const double *)s->data)[i];
    case KILN_I32: return ((const int32_t *)s->data)[i];
    case KILN_I64: return (double)((const int64_t *)s->data)[i];
    default: return NAN;
    }
}

static double read_scalar(const kiln_scalar_out *s) { return read_at(s, 0); }

double kiln_metric_value(kiln_metric_kind kind, const double *s, int64_t n, int64_t count)
{
    if (!s || count <= 0 || !kiln_metric_size_ok(kind, n)) return NAN;
    switch (kind) {
    case KILN_METRIC_MEAN: return s[0] / (double)count;
    case KILN_METRIC_SQRT_MEAN: return sqrt(s[0] / s[1]);
    case KILN_METRIC_RATIO: return s[0] / s[1];
    case KILN_METRIC_DICE: return s[1] > 0 ? 2.0 * s[0] / s[1] : 1.0;
    case KILN_METRIC_IOU_MEAN: {
        int64_t C = n / 2, present = 0;
        double sum = 0;
        for (int64_t c = 0; c < C; c++)
            if (s[C + c] > 0) {
                sum += s[c] / s[C + c];
                present++;
            }
        return present ? sum / (double)present : NAN;
    }
    default: return NAN;
    }
}

static int scalar_dtype_ok(kiln_dtype t)
{
    return t == KILN_F32 || t == KILN_F64 || t == KILN_I32 || t == KILN_I64;
}

static int64_t numel_of(const kiln_tensor_info *t, int from)
{
    int64_t n = 1;
    for (int d = from; d < t->rank; d++) n *= t->shape[d];
    return n;
}

static void shape_str(const kiln_tensor_info *t, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = 0;
    for (int d = 0; d < t->rank && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
}

/* Whether the program has a tensor of that name and role (looked up by
 * walking the table, so a miss leaves no message on the program). */
static int has_tensor(kiln_program *p, const char *name, kiln_role role, kiln_tensor_info *out)
{
    int nt = kiln_program_num_tensors(p);
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t) || strcmp(t.name, name) || t.role != role) continue;
        if (out) *out = t;
        return 1;
    }
    return 0;
}

/* Finds the program's input, target, loss and metrics by role. `what`
 * names the program in messages ("the program", "options.valid_tail"). */
static kiln_status find_io(kiln_learner *l, kiln_program *p, const char *what, kiln_learner_io *io)
{
    memset(io, 0, sizeof *io);
    io->p = p;
    int nt = kiln_program_num_tensors(p);
    kiln_tensor_info xin, yin, loss_info;
    memset(&xin, 0, sizeof xin);
    memset(&yin, 0, sizeof yin);
    memset(&loss_info, 0, sizeof loss_info);
    int nx = 0, ny = 0, nloss = 0, nm = 0;
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t)) continue;
        if (t.role == KILN_ROLE_INPUT) {
            if (!nx) xin = t;
            nx++;
        } else if (t.role == KILN_ROLE_TARGET) {
            if (!ny) yin = t;
            ny++;
        } else if (t.role == KILN_ROLE_LOSS) {
            if (!nloss) loss_info = t;
            nloss++;
        } else if (t.role == KILN_ROLE_METRIC) {
            nm++;
        }
    }
    if (nx != 1 || ny != 1)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "%s has %d inputs and %d targets; the "
                                 "Learner feeds exactly one input (x) and one target (y)",
                                 what, nx, ny);
    if (xin.dtype != KILN_F32)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "%s: input '%s' is %s; data sets hold "
                                 "f32 inputs", what, xin.name, kiln_dtype_name(xin.dtype));
    if (xin.rank < 1 || yin.rank < 1 || xin.shape[0] != yin.shape[0] || xin.shape[0] < 1)
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "%s: input '%s' and target '%s' need the "
                                 "same leading (batch) dimension", what, xin.name, yin.name);
    if (nloss == 0) {
        /* a program may list its loss by name only */
        if (!has_tensor(p, "loss", KILN_ROLE_OUTPUT, &loss_info))
            return kiln_learner_fail(l, KILN_ERR_INVALID, "%s has no loss", what);
    } else if (nloss > 1) {
        return kiln_learner_fail(l, KILN_ERR_INVALID, "%s has %d losses", what, nloss);
    }
    if (!kiln_program_has_entry(p, "eval_step"))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "%s has no eval_step entry point", what);
    io->batch = xin.shape[0];
    io->x = kiln_program_data(p, xin.name, NULL);
    io->y = kiln_program_data(p, yin.name, NULL);
    io->x_sample = xin.bytes / (size_t)io->batch;
    io->y_sample = yin.bytes / (size_t)io->batch;
    io->loss.name = loss_info.name;
    io->loss.dtype = loss_info.dtype;
    io->loss.data = kiln_program_data(p, loss_info.name, NULL);
    io->loss.numel = 1;
    if (!io->x || !io->y || !io->loss.data)
        return kiln_learner_fail(l, KILN_ERR_INTERNAL, "%s: no storage for its input, target "
                                 "or loss", what);
    if (!scalar_dtype_ok(loss_info.dtype) || numel_of(&loss_info, 0) != 1)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "%s: loss '%s' is not a scalar", what,
                                 loss_info.name);
    io->metrics = calloc((size_t)(nm ? nm : 1), sizeof *io->metrics);
    if (!io->metrics) return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t) || t.role != KILN_ROLE_METRIC) continue;
        if (!scalar_dtype_ok(t.dtype) || !kiln_metric_size_ok(t.metric, numel_of(&t, 0)))
            return kiln_learner_fail(l, KILN_ERR_INVALID, "%s: metric '%s' is not a %s "
                                     "partial (%lld %s elements)", what, t.name,
                                     t.metric == KILN_METRIC_MEAN ? "scalar"
                                     : kiln_metric_kind_name(t.metric),
                                     (long long)numel_of(&t, 0), kiln_dtype_name(t.dtype));
        kiln_scalar_out *m = &io->metrics[io->nmetrics++];
        m->name = t.name;
        m->dtype = t.dtype;
        m->numel = numel_of(&t, 0);
        m->kind = t.metric;
        m->data = kiln_program_data(p, t.name, NULL);
        if (!m->data)
            return kiln_learner_fail(l, KILN_ERR_INTERNAL, "%s: no storage for metric '%s'",
                                     what, t.name);
    }
    return KILN_OK;
}

/* Checks a data set against a program's input and target. */
static kiln_status check_data(kiln_learner *l, const kiln_learner_io *io, const char *set,
                              const kiln_dataset *d)
{
    int xr, yr;
    int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
    kiln_dtype yt;
    kiln_dataset_shapes(d, &xr, xs, &yr, ys, &yt);
    int64_t xn = 1, yn = 1;
    for (int i = 0; i < xr; i++) xn *= xs[i];
    for (int i = 0; i < yr; i++) yn *= ys[i];
    kiln_tensor_info xi, yi;
    memset(&xi, 0, sizeof xi);
    memset(&yi, 0, sizeof yi);
    int nt = kiln_program_num_tensors(io->p);
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(io->p, i, &t)) continue;
        if (t.role == KILN_ROLE_INPUT) xi = t;
        if (t.role == KILN_ROLE_TARGET) yi = t;
    }
    char ps[128];
    if ((size_t)xn * sizeof(float) != io->x_sample) {
        shape_str(&xi, ps, sizeof ps);
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "%s: a sample's x has %lld elements, but "
                                 "the program's input '%s' [%s] takes %lld per sample", set,
                                 (long long)xn, xi.name, ps, (long long)numel_of(&xi, 1));
    }
    if (yt != yi.dtype)
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "%s: targets are %s, but the program's "
                                 "target '%s' is %s", set, kiln_dtype_name(yt), yi.name,
                                 kiln_dtype_name(yi.dtype));
    if ((size_t)yn * kiln_dtype_size(yt) != io->y_sample) {
        shape_str(&yi, ps, sizeof ps);
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "%s: a sample's y has %lld elements, but "
                                 "the program's target '%s' [%s] takes %lld per sample", set,
                                 (long long)yn, yi.name, ps, (long long)numel_of(&yi, 1));
    }
    return KILN_OK;
}

static int need_hparam(kiln_program *p, const char *name)
{
    return has_tensor(p, name, KILN_ROLE_HPARAM, NULL);
}

/* A batchnorm parameter: "<X>.weight" or "<X>.bias" beside the model state
 * "<X>.running_mean" (the rule of passes/train.c). */
static int is_bn_param(kiln_program *p, const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return 0;
    char rm[512];
    snprintf(rm, sizeof rm, "%.*s.running_mean", (int)(dot - name), name);
    kiln_tensor_info t;
    return has_tensor(p, rm, KILN_ROLE_STATE, &t) && t.model_state;
}

/* The tail program: same input and target per sample, the main program's
 * metrics by name, and every parameter and constant of the tail present in
 * the main program with the same size (those are copied before use). */
static kiln_status setup_tail(kiln_learner *l, kiln_program *tail)
{
    kiln_status st = find_io(l, tail, "options.valid_tail", &l->tail);
    if (st) return st;
    if (l->tail.batch != l->tail_n)
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "options.valid_tail has batch %lld, but "
                                 "the validation set's last batch has %lld samples (%lld mod "
                                 "%lld): compile it for batch %lld",
                                 (long long)l->tail.batch, (long long)l->tail_n,
                                 (long long)kiln_dataset_len(l->valid), (long long)l->main.batch,
                                 (long long)l->tail_n);
    if (l->tail.x_sample != l->main.x_sample || l->tail.y_sample != l->main.y_sample)
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "options.valid_tail's input or target "
                                 "differs from the program's per sample");
    /* metrics in the main program's order */
    kiln_scalar_out *ordered = calloc((size_t)(l->main.nmetrics ? l->main.nmetrics : 1),
                                      sizeof *ordered);
    if (!ordered) return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < l->main.nmetrics; k++) {
        int found = -1;
        for (int j = 0; j < l->tail.nmetrics; j++)
            if (!strcmp(l->tail.metrics[j].name, l->main.metrics[k].name)) found = j;
        if (found < 0) {
            free(ordered);
            return kiln_learner_fail(l, KILN_ERR_INVALID, "options.valid_tail has no metric "
                                     "'%s'", l->main.metrics[k].name);
        }
        if (l->tail.metrics[found].kind != l->main.metrics[k].kind ||
            l->tail.metrics[found].numel != l->main.metrics[k].numel) {
            free(ordered);
            return kiln_learner_fail(l, KILN_ERR_SHAPE, "options.valid_tail's metric '%s' "
                                     "differs from the program's in kind or size: compile "
                                     "the tail from the same model", l->main.metrics[k].name);
        }
        ordered[k] = l->tail.metrics[found];
    }
    free(l->tail.metrics);
    l->tail.metrics = ordered;
    l->tail.nmetrics = l->main.nmetrics;

    int nt = kiln_program_num_tensors(tail);
    l->copies = calloc((size_t)(nt ? nt : 1), sizeof *l->copies);
    if (!l->copies) return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t, m;
        if (kiln_program_tensor(tail, i, &t)) continue;
        /* parameters, constants and running statistics (model state) */
        if (t.role != KILN_ROLE_PARAM && t.role != KILN_ROLE_CONST && !t.model_state) continue;
        void *src = has_tensor(l->main.p, t.name, t.role, &m)
                        ? kiln_program_data(l->main.p, t.name, NULL) : NULL;
        if (!src || m.bytes != t.bytes)
            return kiln_learner_fail(l, KILN_ERR_SHAPE, "options.valid_tail's %s '%s' %s in "
                                     "the program: compile the tail from the same model",
                                     kiln_role_name(t.role), t.name,
                                     src ? "differs from its namesake" : "has no namesake");
        kiln_copy *c = &l->copies[l->ncopies++];
        c->src = src;
        c->dst = kiln_program_data(tail, t.name, NULL);
        c->bytes = t.bytes;
    }
    l->has_tail = 1;
    return KILN_OK;
}

static kiln_status setup(kiln_learner *l, kiln_program *p)
{
    kiln_status st = find_io(l, p, "the program", &l->main);
    if (st) return st;
    if (!kiln_program_has_entry(p, "train_step"))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "the program has no train_step entry "
                                 "point (it needs a loss and parameters)");
    int64_t B = l->main.batch;
    if (l->o.batch && l->o.batch != B)
        return kiln_learner_fail(l, KILN_ERR_SHAPE, "options.batch is %lld, but the program "
                                 "was compiled for batch %lld (its input's leading dimension)",
                                 (long long)l->o.batch, (long long)B);
    if ((st = check_data(l, &l->main, "training set", l->train))) return st;
    if (l->valid && (st = check_data(l, &l->main, "validation set", l->valid))) return st;

    static const char *const common[] = {"lr", "mom", "wd"};
    for (int i = 0; i < 3; i++)
        if (!need_hparam(p, common[i]))
            return kiln_learner_fail(l, KILN_ERR_INVALID, "the program has no hyperparameter "
                                     "'%s'", common[i]);
    l->adamw = need_hparam(p, "beta2");
    if (l->adamw && (!need_hparam(p, "eps") || !need_hparam(p, "step")))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "the program has 'beta2' but not 'eps' "
                                 "and 'step'");
    if (l->adamw && !l->o.true_wd && l->o.wd != 0)
        return kiln_learner_fail(l, KILN_ERR_UNSUPPORTED, "true_wd = 0 asks for L2 weight "
                                 "decay, but the program's AdamW decays the weights decoupled "
                                 "(true_wd = 1): set options.true_wd = 1, or wd = 0");

    int64_t ntrain = kiln_dataset_len(l->train);
    l->nb = ntrain / B;
    if (l->nb < 1)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "the training set has %lld samples, "
                                 "fewer than one batch of %lld", (long long)ntrain,
                                 (long long)B);
    if (l->valid) {
        int64_t nv = kiln_dataset_len(l->valid);
        if (nv < 1)
            return kiln_learner_fail(l, KILN_ERR_INVALID, "the validation set is empty");
        l->tail_n = nv % B;
        if (l->tail_n && !l->o.valid_tail)
            return kiln_learner_fail(l, KILN_ERR_INVALID, "the validation set has %lld "
                                     "samples, not a multiple of the batch size %lld: its last "
                                     "batch of %lld cannot run through the program. Compile "
                                     "the model for batch %lld too and pass it as "
                                     "options.valid_tail, or cut the set to %lld samples with "
                                     "kiln_dataset_head",
                                     (long long)nv, (long long)B, (long long)l->tail_n,
                                     (long long)l->tail_n, (long long)(nv - l->tail_n));
        if (l->tail_n && (st = setup_tail(l, l->o.valid_tail))) return st;
    }

    l->metric_names = calloc((size_t)(l->main.nmetrics ? l->main.nmetrics : 1),
                             sizeof *l->metric_names);
    l->last_metrics = calloc((size_t)(l->main.nmetrics ? l->main.nmetrics : 1), sizeof(double));
    if (!l->metric_names || !l->last_metrics)
        return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < l->main.nmetrics; k++) l->metric_names[k] = l->main.metrics[k].name;

    /* parameters, for SGD's decoupled weight decay, and their groups */
    int nt = kiln_program_num_tensors(p);
    l->params = calloc((size_t)(nt ? nt : 1), sizeof *l->params);
    if (!l->params) return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t) || t.role != KILN_ROLE_PARAM) continue;
        if (!l->adamw && l->o.true_wd && t.dtype != KILN_F32 && t.dtype != KILN_F64)
            return kiln_learner_fail(l, KILN_ERR_UNSUPPORTED, "parameter '%s' is %s: the "
                                     "Learner's decoupled weight decay handles f32 and f64",
                                     t.name, kiln_dtype_name(t.dtype));
        kiln_param_ref *r = &l->params[l->nparams++];
        r->data = kiln_program_data(p, t.name, NULL);
        r->dtype = t.dtype;
        r->numel = t.bytes / kiln_dtype_size(t.dtype);
        r->group = t.group;
        r->bn = is_bn_param(p, t.name);
        if (t.group + 1 > l->ngroups) l->ngroups = t.group + 1;
    }
    if (l->ngroups < 1) l->ngroups = 1;
    if (l->ngroups > 1 && !need_hparam(p, "lr_mult.0"))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "the program's parameters are in %d groups "
                                 "but its train_step has no per-group hyperparameters "
                                 "(lr_mult.<k>)", l->ngroups);
    l->mults = malloc((size_t)l->ngroups * sizeof *l->mults);
    if (!l->mults) return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < l->ngroups; k++) l->mults[k] = 1.0;

    if ((st = apply_freeze(l))) return st; /* every group trains */
    if (kiln_loader_new(l->train, B, 1, 1, l->o.seed, &l->tl))
        return kiln_learner_fail(l, KILN_ERR_NOMEM, "cannot make the training loader");
    if (l->valid && kiln_loader_new(l->valid, B, 0, 0, 0, &l->vl))
        return kiln_learner_fail(l, KILN_ERR_NOMEM, "cannot make the validation loader");
    if (l->o.init_params && (st = kiln_program_init_params(p, l->o.seed)))
        return kiln_learner_fail(l, st, "initialising the parameters: %s",
                                 kiln_program_error(p));
    return KILN_OK;
}

kiln_status kiln_learner_new(kiln_program *program, const kiln_dataset *train,
                             const kiln_dataset *valid, const kiln_learner_options *opt,
                             kiln_learner **out, char **err)
{
    if (err) *err = NULL;
    if (!out) return KILN_ERR_INVALID;
    *out = NULL;
    if (!program || !train) {
        if (err) *err = strdup("kiln_learner_new: program and training set are required");
        return KILN_ERR_INVALID;
    }
    kiln_learner *l = calloc(1, sizeof *l);
    if (!l) return KILN_ERR_NOMEM;
    l->o = opt ? *opt : kiln_learner_defaults();
    l->train = train;
    l->valid = valid;
    kiln_status st = setup(l, program);
    if (st) {
        if (err) *err = strdup(l->err[0] ? l->err : kiln_status_str(st));
        kiln_learner_free(l);
        return st;
    }
    *out = l;
    return KILN_OK;
}

void kiln_learner_free(kiln_learner *l)
{
    if (!l) return;
    kiln_loader_free(l->tl);
    kiln_loader_free(l->vl);
    free(l->main.metrics);
    free(l->tail.metrics);
    free(l->copies);
    free(l->params);
    free(l->mults);
    free(l->metric_names);
    free(l->last_metrics);
    free(l->lf_lrs);
    free(l->lf_losses);
    free(l);
}

kiln_status kiln_learner_add_callbacks(kiln_learner *l, const kiln_callbacks *cb)
{
    if (!l || !cb) return KILN_ERR_INVALID;
    if (l->ncbs >= KILN_LEARNER_MAX_CALLBACKS)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "at most %d sets of callbacks",
                                 KILN_LEARNER_MAX_CALLBACKS);
    l->cbs[l->ncbs++] = *cb;
    return KILN_OK;
}

kiln_program *kiln_learner_program(kiln_learner *l) { return l->main.p; }
int64_t kiln_learner_batch_size(const kiln_learner *l) { return l->main.batch; }
int64_t kiln_learner_num_batches(const kiln_learner *l) { return l->nb; }
int64_t kiln_learner_get_step(const kiln_learner *l) { return l->step; }
void kiln_learner_set_step(kiln_learner *l, int64_t step) { l->step = step < 0 ? 0 : step; }
int64_t kiln_learner_get_epoch(const kiln_learner *l) { return l->epoch; }
void kiln_learner_set_epoch(kiln_learner *l, int64_t epoch) { l->epoch = epoch < 0 ? 0 : epoch; }
int kiln_learner_stopped(const kiln_learner *l) { return l->stopped; }

kiln_status kiln_learner_last_epoch(const kiln_learner *l, kiln_epoch_stats *s)
{
    if (!l || !s) return KILN_ERR_INVALID;
    if (!l->have_last) return KILN_ERR_NOT_FOUND;
    *s = l->last;
    return KILN_OK;
}

/* ---- one step, validation ------------------------------------------------ */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static kiln_status set_hp(kiln_learner *l, const char *name, double v)
{
    kiln_status st = kiln_program_set_hparam(l->main.p, name, v);
    if (st)
        return kiln_learner_fail(l, st, "setting hyperparameter '%s': %s", name,
                                 kiln_program_error(l->main.p));
    return KILN_OK;
}

/* Whether a parameter is frozen now (kiln_learner_freeze_to, train_bn). */
static int param_frozen(const kiln_learner *l, const kiln_param_ref *r)
{
    return r->group < l->frozen_idx && !(r->bn && l->o.train_bn);
}

static kiln_status train_step(kiln_learner *l, double lr, double mom)
{
    double wd = l->o.wd;
    if (!l->adamw && l->o.true_wd && wd != 0) {
        /* fastai's OptimWrapper with true_wd: p *= 1 - lr*wd before the
         * step, and the optimizer's own weight decay off. */
        for (int i = 0; i < l->nparams; i++) {
            kiln_param_ref *r = &l->params[i];
            if (param_frozen(l, r)) continue; /* not touched at all */
            double f = 1.0 - lr * l->mults[r->group] * wd;
            if (r->dtype == KILN_F32) {
                float *p = r->data, ff = (float)f;
                for (size_t k = 0; k < r->numel; k++) p[k] *= ff;
            } else {
                double *p = r->data;
                for (size_t k = 0; k < r->numel; k++) p[k] *= f;
            }
        }
        wd = 0;
    }
    kiln_status st;
    if ((st = set_hp(l, "lr", lr)) || (st = set_hp(l, "mom", mom)) || (st = set_hp(l, "wd", wd)))
        return st;
    if (l->adamw && ((st = set_hp(l, "beta2", l->o.beta2)) || (st = set_hp(l, "eps", l->o.eps))))
        return st;
    /* AdamW's bias corrections and dropout's masks read the step */
    if (need_hparam(l->main.p, "step") && (st = set_hp(l, "step", (double)(l->step + 1)))) return st;
    st = kiln_program_run(l->main.p, "train_step");
    if (st)
        return kiln_learner_fail(l, st, "train_step (step %lld): %s", (long long)(l->step + 1),
                                 kiln_program_error(l->main.p));
    return KILN_OK;
}

static kiln_status validate(kiln_learner *l, double *valid_loss, double *metrics)
{
    /* Each metric's partials summed elementwise over the batches into
     * msum[off[k] .. off[k] + numel), finalised by its kind at the end. */
    int nm = l->main.nmetrics;
    int64_t *off = calloc((size_t)nm + 1, sizeof *off);
    if (!off) return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < nm; k++) off[k + 1] = off[k] + l->main.metrics[k].numel;
    double lsum = 0, *msum = calloc((size_t)(off[nm] ? off[nm] : 1), sizeof *msum);
    if (!msum) {
        free(off);
        return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    }
    int64_t count = 0, n;
    int copied = 0;
    kiln_status st = KILN_OK;
    kiln_loader_start(l->vl, 0);
    while (kiln_loader_next(l->vl, (float *)l->main.x, l->main.y, &n)) {
        kiln_learner_io *io = &l->main;
        if (n != l->main.batch) {
            if (!l->has_tail || n != l->tail_n) {
                st = kiln_learner_fail(l, KILN_ERR_INTERNAL, "validation batch of %lld samples "
                                       "and no program for it", (long long)n);
                break;
            }
            if (!copied) {
                for (int i = 0; i < l->ncopies; i++)
                    memcpy(l->copies[i].dst, l->copies[i].src, l->copies[i].bytes);
                copied = 1;
            }
            io = &l->tail;
            memcpy(io->x, l->main.x, (size_t)n * io->x_sample);
            memcpy(io->y, l->main.y, (size_t)n * io->y_sample);
        }
        st = kiln_program_run(io->p, "eval_step");
        if (st) {
            kiln_learner_fail(l, st, "eval_step%s: %s", io == &l->tail ? " (valid_tail)" : "",
                              kiln_program_error(io->p));
            break;
        }
        lsum += read_scalar(&io->loss) * (double)n;
        for (int k = 0; k < nm; k++)
            for (int64_t i = 0; i < io->metrics[k].numel; i++)
                msum[off[k] + i] += read_at(&io->metrics[k], i);
        count += n;
    }
    if (!st) {
        *valid_loss = count ? lsum / (double)count : NAN;
        for (int k = 0; k < nm && metrics; k++)
            metrics[k] = kiln_metric_value(l->main.metrics[k].kind, msum + off[k],
                                           l->main.metrics[k].numel, count);
    }
    free(msum);
    free(off);
    return st;
}

kiln_status kiln_learner_validate(kiln_learner *l, double *valid_loss, double *metrics)
{
    if (!l || !valid_loss) return KILN_ERR_INVALID;
    if (!l->valid) return kiln_learner_fail(l, KILN_ERR_NOT_FOUND, "the learner has no "
                                            "validation set");
    return validate(l, valid_loss, metrics);
}

/* ---- the loop ------------------------------------------------------------ */

static void hparams_at(const kiln_fit_plan *plan, int64_t i, int64_t total, double *lr,
                       double *mom, double dflt_mom)
{
    switch (plan->kind) {
    case KILN_SCHED_ONE_CYCLE: kiln_one_cycle_at(i, total, plan->max_lr, &plan->oc, lr, mom); break;
    case KILN_SCHED_LR_FIND:
        *lr = kiln_lr_finder_lr(plan->finder);
        *mom = dflt_mom;
        break;
    default:
        *lr = plan->lr;
        *mom = plan->mom;
        break;
    }
}

/* The groups' lr multipliers of this fit call: lrs[k] / max_lr of
 * slice(lr_lo, max_lr), else 1; set as the program's "lr_mult.<k>". */
static kiln_status set_group_lrs(kiln_learner *l, const kiln_fit_plan *plan)
{
    int n = l->ngroups;
    for (int k = 0; k < n; k++) l->mults[k] = 1.0;
    if (plan->kind == KILN_SCHED_ONE_CYCLE && plan->lr_lo != 0) {
        kiln_status st = kiln_lr_slice(plan->lr_lo, plan->max_lr, n, l->mults);
        if (st)
            return kiln_learner_fail(l, st, "the lr range slice(%g, %g) is not valid: both must "
                                     "be finite and > 0", plan->lr_lo, plan->max_lr);
        for (int k = 0; k < n; k++) l->mults[k] /= plan->max_lr;
    }
    for (int k = 0; k < n && n > 1; k++) {
        char name[64];
        snprintf(name, sizeof name, "lr_mult.%d", k);
        kiln_status st = set_hp(l, name, l->mults[k]);
        if (st) return st;
    }
    return KILN_OK;
}

kiln_status kiln_learner_run(kiln_learner *l, const kiln_fit_plan *plan)
{
    int lrf = plan->kind == KILN_SCHED_LR_FIND;
    l->err[0] = 0;
    kiln_status gst = set_group_lrs(l, plan);
    if (gst) return gst;
    int nm = l->main.nmetrics, ncols = 4 + nm;
    const char **names = calloc((size_t)ncols, sizeof *names);
    char(*cells)[48] = calloc((size_t)ncols, sizeof *cells);
    const char **cellp = calloc((size_t)ncols, sizeof *cellp);
    double *metrics = calloc((size_t)(nm ? nm : 1), sizeof *metrics);
    if (!names || !cells || !cellp || !metrics) {
        free(names);
        free(cells);
        free(cellp);
        free(metrics);
        return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    }
    names[0] = "epoch";
    names[1] = "train_loss";
    names[2] = "valid_loss";
    for (int k = 0; k < nm; k++) names[3 + k] = l->metric_names[k];
    names[3 + nm] = "time";
    for (int c = 0; c < ncols; c++) cellp[c] = cells[c];

    FILE *out = l->o.out ? l->o.out : stdout;
    int64_t nb = l->nb, total = plan->epochs * nb;
    int64_t end = plan->end_epoch ? plan->end_epoch : plan->epochs;
    kiln_smoother sm;
    kiln_smoother_init(&sm, l->o.smooth_beta);
    kiln_smoother *smp = lrf ? &plan->finder->smooth : &sm;
    kiln_status st = KILN_OK;
    int stop = 0, finished = 0;
    l->stopped = 0;
    l->err[0] = 0;

    for (int c = 0; c < l->ncbs; c++)
        if (l->cbs[c].begin_fit &&
            l->cbs[c].begin_fit(l, end - plan->first_epoch, l->cbs[c].user))
            stop = 1;
    if (!stop && !lrf && l->o.print_table) kiln_table_header(out, ncols, names);

    for (int64_t e = plan->first_epoch; e < end && !stop && !finished; e++) {
        for (int c = 0; c < l->ncbs; c++)
            if (l->cbs[c].begin_epoch && l->cbs[c].begin_epoch(l, l->epoch, l->cbs[c].user))
                stop = 1;
        if (stop) break;
        double t0 = now_seconds();
        kiln_loader_start(l->tl, l->epoch);
        int64_t b = 0, n;
        while (!stop && kiln_loader_next(l->tl, (float *)l->main.x, l->main.y, &n)) {
            kiln_batch_info info;
            memset(&info, 0, sizeof info);
            info.step = l->step + 1;
            info.epoch = l->epoch;
            info.batch = b;
            info.iter = e * nb + b;
            info.n = n;
            info.lr_find = lrf;
            hparams_at(plan, info.iter, total, &info.lr, &info.mom, l->o.mom);
            info.loss = NAN;
            info.smooth_loss = NAN;
            for (int c = 0; c < l->ncbs; c++)
                if (l->cbs[c].begin_batch && l->cbs[c].begin_batch(l, &info, l->cbs[c].user))
                    stop = 1;
            if (stop) break;
            if ((st = train_step(l, info.lr, info.mom))) break;
            l->step++;
            info.loss = read_scalar(&l->main.loss);
            if (lrf) {
                finished = kiln_lr_finder_record(plan->finder, info.loss, &info.smooth_loss);
                l->lf_lrs[l->lf_n] = info.lr;
                l->lf_losses[l->lf_n] = info.smooth_loss;
                l->lf_n++;
            } else {
                info.smooth_loss = kiln_smoother_add(&sm, info.loss);
            }
            b++;
            for (int c = 0; c < l->ncbs; c++)
                if (l->cbs[c].end_batch && l->cbs[c].end_batch(l, &info, l->cbs[c].user))
                    stop = 1;
            if (finished) break;
        }
        if (st) break;

        kiln_epoch_stats s;
        memset(&s, 0, sizeof s);
        s.epoch = l->epoch;
        s.batches = b;
        s.train_loss = smp->n ? smp->smooth : NAN;
        s.valid_loss = NAN;
        s.nmetrics = nm;
        s.metric_names = l->metric_names;
        for (int k = 0; k < nm; k++) metrics[k] = NAN;
        if (!lrf && l->valid && (st = validate(l, &s.valid_loss, metrics))) break;
        s.seconds = now_seconds() - t0;
        l->epoch++;
        if (!lrf) {
            memcpy(l->last_metrics, metrics, (size_t)nm * sizeof *metrics);
            l->last = s;
            l->last.metrics = l->last_metrics;
            l->have_last = 1;
            snprintf(cells[0], sizeof cells[0], "%lld", (long long)s.epoch);
            kiln_format_stat(s.train_loss, smp->n == 0, cells[1], sizeof cells[1]);
            kiln_format_stat(s.valid_loss, l->valid == NULL, cells[2], sizeof cells[2]);
            for (int k = 0; k < nm; k++)
                kiln_format_stat(metrics[k], l->valid == NULL, cells[3 + k], sizeof cells[0]);
            kiln_format_time(s.seconds, cells[3 + nm], sizeof cells[0]);
            if (l->o.print_table) kiln_table_row(out, ncols, names, cellp);
            if (l->o.history_path) {
                int truncate = !l->o.history_append && !l->history_started;
                l->history_started = 1;
                char msg[1024];
                st = kiln_history_append(l->o.history_path, truncate, ncols, names, cellp, msg,
                                         sizeof msg);
                if (st) {
                    kiln_learner_fail(l, st, "%s", msg);
                    break;
                }
            }
        }
        s.metrics = metrics;
        for (int c = 0; c < l->ncbs; c++)
            if (l->cbs[c].end_epoch && l->cbs[c].end_epoch(l, &s, l->cbs[c].user)) stop = 1;
    }
    for (int c = 0; c < l->ncbs; c++)
        if (l->cbs[c].end_fit) l->cbs[c].end_fit(l, l->cbs[c].user);
    l->stopped = stop;
    free(names);
    free(cells);
    free(cellp);
    free(metrics);
    return st;
}

kiln_status kiln_fit(kiln_learner *l, int64_t epochs, double lr)
{
    if (!l) return KILN_ERR_INVALID;
    if (epochs < 0 || !isfinite(lr) || lr < 0)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fit: epochs must be >= 0 and lr a "
                                 "finite value >= 0 (got %lld, %g)", (long long)epochs, lr);
    kiln_fit_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.kind = KILN_SCHED_CONST;
    plan.lr = lr;
    plan.mom = l->o.mom;
    plan.first_epoch = 0;
    plan.epochs = epochs;
    return kiln_learner_run(l, &plan);
}

kiln_status kiln_fit_one_cycle_ex(kiln_learner *l, int64_t epochs, double max_lr,
                                  const kiln_one_cycle_options *opt)
{
    if (!l) return KILN_ERR_INVALID;
    kiln_fit_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.kind = KILN_SCHED_ONE_CYCLE;
    plan.oc = opt ? *opt : kiln_one_cycle_defaults();
    plan.max_lr = max_lr;
    plan.lr_lo = plan.oc.lr_lo;
    plan.first_epoch = plan.oc.start_epoch;
    plan.epochs = epochs;
    plan.end_epoch = plan.oc.end_epoch ? plan.oc.end_epoch : epochs;
    if (epochs < 0 || !isfinite(max_lr) || max_lr <= 0)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fit_one_cycle: epochs must be >= 0 "
                                 "and max_lr a finite value > 0 (got %lld, %g)",
                                 (long long)epochs, max_lr);
    if (plan.oc.start_epoch < 0 || (epochs > 0 && plan.oc.start_epoch >= epochs))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fit_one_cycle: start_epoch %lld is "
                                 "outside [0, %lld)", (long long)plan.oc.start_epoch,
                                 (long long)epochs);
    if (plan.oc.end_epoch && (plan.oc.end_epoch <= plan.oc.start_epoch || plan.oc.end_epoch > epochs))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fit_one_cycle: end_epoch %lld is "
                                 "outside (start_epoch %lld, epochs %lld]",
                                 (long long)plan.oc.end_epoch, (long long)plan.oc.start_epoch,
                                 (long long)epochs);
    if (!(plan.oc.pct_start >= 0 && plan.oc.pct_start <= 1) || !(plan.oc.div_factor > 0) ||
        plan.oc.final_div < 0)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fit_one_cycle: pct_start must be in "
                                 "[0, 1], div_factor > 0, final_div >= 0");
    if (!isfinite(plan.lr_lo) || (plan.lr_lo > 0 && plan.lr_lo > max_lr))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fit_one_cycle: the lr range "
                                 "slice(%g, %g) needs a finite lr_lo <= max_lr", plan.lr_lo,
                                 max_lr);
    return kiln_learner_run(l, &plan);
}

kiln_status kiln_fit_one_cycle(kiln_learner *l, int64_t epochs, double max_lr)
{
    return kiln_fit_one_cycle_ex(l, epochs, max_lr, NULL);
}

/* ---- parameter groups ------------------------------------------------------ */

int kiln_learner_num_groups(const kiln_learner *l) { return l ? l->ngroups : 0; }
int kiln_learner_frozen_groups(const kiln_learner *l) { return l ? l->frozen_idx : 0; }

kiln_status kiln_lr_slice(double lo, double hi, int n, double *lrs)
{
    if (!lrs || n < 1 || !isfinite(hi) || !(hi > 0) || !isfinite(lo)) return KILN_ERR_INVALID;
    if (lo <= 0) { /* slice(hi): hi/10 for all but the last group */
        for (int i = 0; i < n - 1; i++) lrs[i] = hi / 10;
        lrs[n - 1] = hi;
        return KILN_OK;
    }
    if (n == 1) {
        lrs[0] = hi;
        return KILN_OK;
    }
    /* fastai's even_mults: start * (step ** i), step = (stop/start) ** (1/(n-1)) */
    double step = pow(hi / lo, 1.0 / (double)(n - 1));
    for (int i = 0; i < n; i++) lrs[i] = lo * pow(step, (double)i);
    return KILN_OK;
}

/* Sets every group's frozen.<k> and frozen_bn.<k> the program has. */
static kiln_status apply_freeze(kiln_learner *l)
{
    for (int k = 0; k < l->ngroups && l->ngroups > 1; k++) {
        char name[64];
        int frozen = k < l->frozen_idx;
        snprintf(name, sizeof name, "frozen.%d", k);
        kiln_status st = need_hparam(l->main.p, name) ? set_hp(l, name, frozen) : KILN_OK;
        snprintf(name, sizeof name, "frozen_bn.%d", k);
        if (!st && need_hparam(l->main.p, name)) st = set_hp(l, name, frozen && !l->o.train_bn);
        if (st) return st;
    }
    return KILN_OK;
}

kiln_status kiln_learner_freeze_to(kiln_learner *l, int n)
{
    if (!l) return KILN_ERR_INVALID;
    int64_t k = n >= 0 ? n : (int64_t)l->ngroups + n;
    if (k < 0) k = 0;
    if (k > l->ngroups) k = l->ngroups;
    if (k > 0 && l->ngroups == 1)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "freeze_to(%d): the program has one "
                                 "parameter group, and freezing it would freeze the whole model; "
                                 "split the model into groups (`group NAME` in the model file, "
                                 "kiln_set_param_group)", n);
    l->frozen_idx = (int)k;
    return apply_freeze(l);
}

kiln_status kiln_learner_freeze(kiln_learner *l) { return kiln_learner_freeze_to(l, -1); }
kiln_status kiln_learner_unfreeze(kiln_learner *l) { return kiln_learner_freeze_to(l, 0); }

kiln_fine_tune_options kiln_fine_tune_defaults(void)
{
    kiln_fine_tune_options o;
    memset(&o, 0, sizeof o);
    o.freeze_epochs = 1;
    o.lr_mult = 100;
    o.pct_start = 0.3;
    o.div = 5.0;
    return o;
}

kiln_status kiln_fine_tune(kiln_learner *l, int64_t epochs, double base_lr,
                           const kiln_fine_tune_options *opt)
{
    if (!l) return KILN_ERR_INVALID;
    kiln_fine_tune_options o = opt ? *opt : kiln_fine_tune_defaults();
    if (epochs < 0 || o.freeze_epochs < 0 || !isfinite(base_lr) || !(base_lr > 0) ||
        !(o.lr_mult > 0) || !(o.div > 0) || !(o.pct_start >= 0 && o.pct_start <= 1))
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_fine_tune: epochs and freeze_epochs "
                                 "must be >= 0, base_lr, lr_mult and div > 0, pct_start in [0, 1] "
                                 "(got %lld, %lld, %g, %g, %g, %g)", (long long)epochs,
                                 (long long)o.freeze_epochs, base_lr, o.lr_mult, o.div,
                                 o.pct_start);
    kiln_status st = kiln_learner_freeze(l);
    if (st) return st;
    if (o.freeze_epochs > 0) {
        kiln_one_cycle_options oc = kiln_one_cycle_defaults();
        oc.pct_start = 0.99;
        oc.final_div = 1e5; /* fastai v2's div_final */
        oc.lr_lo = -1;      /* slice(base_lr) */
        st = kiln_fit_one_cycle_ex(l, o.freeze_epochs, base_lr, &oc);
        if (st || l->stopped) {
            kiln_status u = kiln_learner_unfreeze(l);
            return st ? st : u;
        }
    }
    base_lr /= 2;
    if ((st = kiln_learner_unfreeze(l))) return st;
    if (epochs == 0) return KILN_OK;
    kiln_one_cycle_options oc = kiln_one_cycle_defaults();
    oc.pct_start = o.pct_start;
    oc.div_factor = o.div;
    oc.final_div = 1e5;
    oc.lr_lo = base_lr / o.lr_mult;
    return kiln_fit_one_cycle_ex(l, epochs, base_lr, &oc);
}
