/* tests/test_golden.c — kiln against PyTorch on the Fashion-MNIST MLP.
 *
 * examples/fashion_mlp.kiln at batch 16 (flatten -> linear(512) -> relu ->
 * linear(512) -> relu -> linear(10) -> cross_entropy), with the weights and
 * the batch of the .npy files in tests/golden (written by gen_mlp.py from
 * PyTorch), run through the training program on the reference interpreter:
 *  (a) the loss and the six gradients ("grad.<param>" outputs);
 *  (b) two AdamW steps: the per-step losses and the updated parameters;
 *  (c) two SGD-with-momentum steps, plain and Nesterov, likewise.
 * Every value must satisfy |a - e| <= atol + rtol*|e| elementwise, rtol 1e-4
 * and atol 1e-6, with one exception: the parameters after two AdamW steps get
 * atol 1e-4 (lr/100). PyTorch's float32 answer is not accurate to 1e-6 there:
 * Adam divides each gradient by its running RMS, so where the two steps'
 * gradients nearly cancel in exp_avg, float32 rounding in PyTorch's
 * step-2 gradient (up to 4e-6) moves the parameter by up to 8e-5 — PyTorch
 * float32 differs from PyTorch float64 by that much, while kiln (double
 * arithmetic, float32 storage) stays within 7e-6 of float64. The update
 * as a whole (params - initial params) must still match to 1e-4 in relative
 * L2 norm, for every optimizer. A failure names the worst element. Each check
 * runs on the graph from the model file (the acceptance test) and on the
 * same graph built with the C API. KILN_GOLDEN_VERBOSE=1 prints the measured
 * errors.
 *
 * The golden_c suite runs the same training program through generated C
 * (KILN_BACKEND_C, keep_grads so "grad.<param>" are program tensors), set
 * and read through kiln_program_set / _get: the loss and the gradients, one
 * AdamW step at lr 1e-3, two AdamW steps, and two SGD steps, plain and
 * Nesterov, with the tolerances above.
 */
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "runtime/npy.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_DIR KILN_SOURCE_DIR "/tests/golden/"
#define MODEL_FILE KILN_SOURCE_DIR "/examples/fashion_mlp.kiln"
#define BATCH 16
#define RTOL 1e-4
#define ATOL 1e-6
#define ADAMW_PARAM_ATOL 1e-4 /* lr/100: see the comment at the top */
#define UPDATE_RTOL 1e-4      /* relative L2 error of params - initial params */

static const char *const PARAMS[6] = {"linear0.weight", "linear0.bias", "linear1.weight",
                                      "linear1.bias",   "linear2.weight", "linear2.bias"};

/* ---- golden arrays ---- */

typedef struct golden {
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t n;
    double *v;
} golden;

static golden load_golden(const char *name)
{
    char path[1024], err[1200];
    snprintf(path, sizeof path, GOLDEN_DIR "%s.npy", name);
    kiln_npy a;
    kiln_status st = kiln_npy_load(path, &a, err, sizeof err);
    cr_assert_eq(st, KILN_OK, "%s (regenerate with /usr/bin/python3 tests/golden/gen_mlp.py)",
                 err);
    golden g = {a.rank, {0}, a.numel, malloc((size_t)(a.numel ? a.numel : 1) * sizeof(double))};
    memcpy(g.shape, a.shape, sizeof g.shape);
    cr_assert_not_null(g.v);
    cr_assert_eq(kiln_npy_to_f64(&a, g.v), KILN_OK);
    kiln_npy_free(&a);
    return g;
}

static void free_golden(golden *g)
{
    free(g->v);
    g->v = NULL;
}

/* ---- comparison ---- */

/* Compares n values with the tolerance; reports the worst element on
 * failure and, with KILN_GOLDEN_VERBOSE, the measured errors always. */
static void expect_close(const char *what, const double *got, const golden *want, double rtol,
                         double atol)
{
    cr_assert_not_null(got, "%s: no such value in the program", what);
    double max_abs = 0, max_rel = 0, worst = -1;
    int64_t wi = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < want->n; i++) {
        double a = got[i], e = want->v[i], d = fabs(a - e);
        double ratio = d / (atol + rtol * fabs(e));
        if (!(d <= atol + rtol * fabs(e))) bad++;
        if (isnan(ratio)) ratio = INFINITY;
        if (ratio > worst) {
            worst = ratio;
            wi = i;
        }
        if (d > max_abs) max_abs = d;
        if (e != 0 && d / fabs(e) > max_rel) max_rel = d / fabs(e);
    }
    if (getenv("KILN_GOLDEN_VERBOSE"))
        fprintf(stderr, "golden %-40s n=%-7lld max|a-e|=%.3e max rel=%.3e tol used=%.3f\n",
                what, (long long)want->n, max_abs, max_rel, worst);
    cr_expect_eq(bad, 0,
                 "%s: %lld of %lld elements outside |a-e| <= %g + %g*|e|; worst [%lld]: "
                 "kiln %.9g, pytorch %.9g (|a-e| = %.3e, %.1fx the tolerance); "
                 "max |a-e| = %.3e, max rel = %.3e",
                 what, (long long)bad, (long long)want->n, atol, rtol, (long long)wi, got[wi],
                 want->v[wi], fabs(got[wi] - want->v[wi]), worst, max_abs, max_rel);
}

/* The update got - init against want - init, in relative L2 norm. */
static void expect_update_close(const char *what, const double *got, const golden *want,
                                const golden *init)
{
    cr_assert_not_null(got, "%s: no such value in the program", what);
    cr_assert_eq(want->n, init->n);
    double num = 0, den = 0;
    for (int64_t i = 0; i < want->n; i++) {
        double du = want->v[i] - init->v[i], dk = got[i] - init->v[i];
        num += (dk - du) * (dk - du);
        den += du * du;
    }
    double rel = sqrt(num) / sqrt(den);
    if (getenv("KILN_GOLDEN_VERBOSE"))
        fprintf(stderr, "golden %-40s update rel L2 error %.3e (|update| = %.3e)\n", what, rel,
                sqrt(den));
    cr_expect(den > 0 && rel <= UPDATE_RTOL,
              "%s: the update (params - initial params) differs from PyTorch's by %.3e in "
              "relative L2 norm (at most %g)", what, rel, UPDATE_RTOL);
}

/* ---- the model ---- */

/* The forward graph from the model file: the acceptance path. */
static kiln_graph *model_from_file(void)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_load(MODEL_FILE, BATCH, &g, &err);
    cr_assert_eq(st, KILN_OK, "kiln_model_load(%s): %s", MODEL_FILE, err ? err : "(no message)");
    free(err);
    cr_assert_not_null(g);
    return g;
}

/* The same model through the C API. */
static kiln_graph *model_from_capi(void)
{
    kiln_graph *g = kiln_graph_new("fashion_mlp");
    cr_assert_not_null(g);
    int64_t xs[] = {BATCH, 1, 28, 28}, ys[] = {BATCH};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_flatten(g, x, 1);
    h = kiln_relu(g, kiln_linear(g, h, 512, 1, "linear0"));
    h = kiln_relu(g, kiln_linear(g, h, 512, 1, "linear1"));
    kiln_value logits = kiln_linear(g, h, 10, 1, "linear2");
    kiln_value loss = kiln_cross_entropy(g, logits, y);
    kiln_status st = kiln_set_loss(g, loss, "loss");
    cr_assert_eq(st, KILN_OK, "building the MLP: %s", kiln_graph_error(g));
    return g;
}

typedef enum source { FROM_FILE, FROM_CAPI } source;

static kiln_graph *forward_graph(source s)
{
    return s == FROM_FILE ? model_from_file() : model_from_capi();
}

typedef struct session {
    kiln_graph *train;
    kiln_interp *it;
    kiln_value loss;
} session;

static void set_leaf(session *s, const char *name, const double *v, int64_t n)
{
    kiln_status st = kiln_interp_set_by_name(s->it, name, v, (size_t)n);
    cr_assert_eq(st, KILN_OK, "setting '%s': %s", name, kiln_interp_error(s->it));
}

static void set_golden(session *s, const char *leaf, const char *file)
{
    golden g = load_golden(file);
    kiln_value id = kiln_graph_find(s->train, leaf);
    cr_assert_geq(id, 0, "the training program has no leaf '%s'", leaf);
    const kiln_node *n = &s->train->nodes[id];
    cr_assert_eq(n->rank, g.rank, "'%s' has rank %d in kiln, %d in %s.npy", leaf, n->rank, g.rank,
                 file);
    for (int k = 0; k < g.rank; k++)
        cr_assert_eq(n->shape[k], g.shape[k], "'%s' axis %d: %lld in kiln, %lld in %s.npy", leaf,
                     k, (long long)n->shape[k], (long long)g.shape[k], file);
    set_leaf(s, leaf, g.v, g.n);
    free_golden(&g);
}

static void set_scalar(session *s, const char *name, double v) { set_leaf(s, name, &v, 1); }

/* The training program for the optimizer, its interpreter, the initial
 * weights, the batch, and zeroed optimizer state. */
static session start(source src, kiln_optimizer opt, int nesterov)
{
    kiln_graph *fwd = forward_graph(src);
    kiln_train_options o = kiln_train_defaults();
    o.optimizer = opt;
    o.nesterov = nesterov;
    o.keep_grads = 1;
    session s = {NULL, NULL, -1};
    kiln_status st = kiln_train_program(fwd, &o, &s.train);
    cr_assert_eq(st, KILN_OK, "kiln_train_program: %s", kiln_graph_error(fwd));
    kiln_graph_free(fwd);
    for (int32_t i = 0; i < s.train->nnodes; i++)
        if (s.train->nodes[i].role == KILN_ROLE_LOSS) s.loss = i;
    cr_assert_geq(s.loss, 0, "the training program has no loss");
    cr_assert_eq(kiln_interp_new(s.train, &s.it), KILN_OK);

    set_golden(&s, "x", "x");
    set_golden(&s, "y", "y");
    for (int p = 0; p < 6; p++) {
        set_golden(&s, PARAMS[p], PARAMS[p]);
        const char *states[2];
        int ns = 0;
        if (opt == KILN_OPT_ADAMW) {
            states[ns++] = "exp_avg";
            states[ns++] = "exp_avg_sq";
        } else {
            states[ns++] = "momentum_buffer";
        }
        for (int k = 0; k < ns; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s.%s", PARAMS[p], states[k]);
            kiln_value id = kiln_graph_find(s.train, name);
            cr_assert_geq(id, 0, "no optimizer state '%s'", name);
            int64_t n = kiln_node_numel(&s.train->nodes[id]);
            double *z = calloc((size_t)n, sizeof *z);
            cr_assert_not_null(z);
            set_leaf(&s, name, z, n);
            free(z);
        }
    }
    return s;
}

static void finish(session *s)
{
    kiln_interp_free(s->it);
    kiln_graph_free(s->train);
}

/* The hyperparameters of gen_mlp.py's runs for step t, through set(ctx, name,
 * value); lr 0 keeps the run's own learning rate. */
typedef void (*hparam_setter)(void *ctx, const char *name, double v);

static void set_hparams(kiln_optimizer opt, int t, double lr, hparam_setter set, void *ctx)
{
    if (opt == KILN_OPT_ADAMW) {
        set(ctx, "lr", lr ? lr : 1e-2);
        set(ctx, "mom", 0.9);
        set(ctx, "beta2", 0.99);
        set(ctx, "eps", 1e-5);
        set(ctx, "wd", 1e-2);
        set(ctx, "step", t);
    } else {
        set(ctx, "lr", lr ? lr : 0.1);
        set(ctx, "mom", 0.9);
        set(ctx, "wd", 1e-2);
    }
}

static void set_scalar_cb(void *s, const char *name, double v) { set_scalar(s, name, v); }

/* One training step with the hyperparameters of gen_mlp.py. */
static void step(session *s, kiln_optimizer opt, int t)
{
    set_hparams(opt, t, 0, set_scalar_cb, s);
    kiln_status st = kiln_interp_run(s->it);
    cr_assert_eq(st, KILN_OK, "step %d: %s", t, kiln_interp_error(s->it));
}

static const char *src_name(source s) { return s == FROM_FILE ? "model file" : "C API"; }

/* (a) the loss and the gradients at the initial weights. */
static void check_gradients(source src)
{
    session s = start(src, KILN_OPT_ADAMW, 0);
    step(&s, KILN_OPT_ADAMW, 1);
    char what[160];
    golden loss = load_golden("loss");
    snprintf(what, sizeof what, "%s: loss", src_name(src));
    expect_close(what, kiln_interp_value(s.it, s.loss), &loss, RTOL, ATOL);
    free_golden(&loss);
    for (int p = 0; p < 6; p++) {
        char name[128];
        snprintf(name, sizeof name, "grad.%s", PARAMS[p]);
        golden g = load_golden(name);
        kiln_value id = kiln_graph_find(s.train, name);
        cr_assert_geq(id, 0, "no output '%s' (keep_grads)", name);
        cr_assert_eq(kiln_node_numel(&s.train->nodes[id]), g.n, "%s: %lld values, expected %lld",
                     name, (long long)kiln_node_numel(&s.train->nodes[id]), (long long)g.n);
        snprintf(what, sizeof what, "%s: %s", src_name(src), name);
        expect_close(what, kiln_interp_value(s.it, id), &g, RTOL, ATOL);
        free_golden(&g);
    }
    finish(&s);
}

/* (b), (c): two optimizer steps, their losses and the parameters after. */
static void check_two_steps(source src, kiln_optimizer opt, int nesterov, const char *run)
{
    session s = start(src, opt, nesterov);
    char name[160], what[200];
    snprintf(name, sizeof name, "%s_losses", run);
    golden losses = load_golden(name);
    cr_assert_eq(losses.n, 2);
    for (int t = 1; t <= 2; t++) {
        step(&s, opt, t);
        golden one = {0, {0}, 1, &losses.v[t - 1]};
        snprintf(what, sizeof what, "%s: %s loss of step %d", src_name(src), run, t);
        expect_close(what, kiln_interp_value(s.it, s.loss), &one, RTOL, ATOL);
    }
    free_golden(&losses);
    for (int p = 0; p < 6; p++) {
        snprintf(name, sizeof name, "%s2.%s", run, PARAMS[p]);
        golden g = load_golden(name), init = load_golden(PARAMS[p]);
        snprintf(what, sizeof what, "%s: %s", src_name(src), name);
        const double *got = kiln_interp_value_by_name(s.it, PARAMS[p]);
        expect_close(what, got, &g, RTOL, opt == KILN_OPT_ADAMW ? ADAMW_PARAM_ATOL : ATOL);
        expect_update_close(what, got, &g, &init);
        free_golden(&g);
        free_golden(&init);
    }
    finish(&s);
}

/* One AdamW step, at the strict tolerance everywhere. Its lr is 1e-3
 * (PyTorch's default): near |grad| ~ eps the update's sensitivity to the
 * gradient is lr/(4 eps), and at 1e-2 one element in 262,144 of PyTorch's own
 * float32 answer is outside 1e-6 of the exact one. */
static void check_adamw_one_step(source src)
{
    session s = start(src, KILN_OPT_ADAMW, 0);
    char name[160], what[200];
    step(&s, KILN_OPT_ADAMW, 1);
    /* step() set gen_mlp.py's AdamW lr 1e-2; the one-step run uses 1e-3 (see
     * gen_mlp.py): run the same step again from the initial weights. */
    finish(&s);
    s = start(src, KILN_OPT_ADAMW, 0);
    set_hparams(KILN_OPT_ADAMW, 1, 1e-3, set_scalar_cb, &s);
    cr_assert_eq(kiln_interp_run(s.it), KILN_OK, "%s", kiln_interp_error(s.it));
    for (int p = 0; p < 6; p++) {
        snprintf(name, sizeof name, "adamw1.%s", PARAMS[p]);
        golden g = load_golden(name);
        snprintf(what, sizeof what, "%s: %s", src_name(src), name);
        expect_close(what, kiln_interp_value_by_name(s.it, PARAMS[p]), &g, RTOL, ATOL);
        free_golden(&g);
    }
    finish(&s);
}

TestSuite(golden, .timeout = 600);

Test(golden, adamw_one_step_model_file) { check_adamw_one_step(FROM_FILE); }

Test(golden, gradients_model_file) { check_gradients(FROM_FILE); }
Test(golden, adamw_two_steps_model_file) { check_two_steps(FROM_FILE, KILN_OPT_ADAMW, 0, "adamw"); }
Test(golden, sgd_two_steps_model_file) { check_two_steps(FROM_FILE, KILN_OPT_SGD, 0, "sgd"); }
Test(golden, sgd_nesterov_two_steps_model_file)
{
    check_two_steps(FROM_FILE, KILN_OPT_SGD, 1, "sgd_nesterov");
}

Test(golden, gradients_capi) { check_gradients(FROM_CAPI); }
Test(golden, adamw_two_steps_capi) { check_two_steps(FROM_CAPI, KILN_OPT_ADAMW, 0, "adamw"); }
Test(golden, sgd_two_steps_capi) { check_two_steps(FROM_CAPI, KILN_OPT_SGD, 0, "sgd"); }
Test(golden, sgd_nesterov_two_steps_capi)
{
    check_two_steps(FROM_CAPI, KILN_OPT_SGD, 1, "sgd_nesterov");
}

/* The golden files themselves: shapes as gen_mlp.py writes them. */
Test(golden, files_have_expected_shapes)
{
    golden x = load_golden("x"), y = load_golden("y"), w = load_golden("linear0.weight");
    cr_assert_eq(x.rank, 4);
    cr_assert_eq(x.shape[0], BATCH);
    cr_assert_eq(x.shape[2], 28);
    cr_assert_eq(y.rank, 1);
    cr_assert_eq(y.n, BATCH);
    for (int64_t i = 0; i < y.n; i++) cr_assert(y.v[i] >= 0 && y.v[i] < 10);
    cr_assert_eq(w.rank, 2);
    cr_assert_eq(w.shape[0], 512);
    cr_assert_eq(w.shape[1], 784);
    free_golden(&x);
    free_golden(&y);
    free_golden(&w);
}

/* ---- the same checks through generated C ---- */

static char cache_dir[256];

static void make_cache(void) { kiln_test_tmpdir(cache_dir, sizeof cache_dir, "test_golden"); }

static void remove_cache(void)
{
    if (cache_dir[0]) kiln_test_rmtree(cache_dir);
    cache_dir[0] = 0;
}

TestSuite(golden_c, .init = make_cache, .fini = remove_cache, .timeout = 600);

/* Writes a golden array into the program tensor `name`, whose shape must be
 * the array's, in the tensor's dtype. */
static void c_set_golden(kiln_program *p, const char *name, const char *file)
{
    golden g = load_golden(file);
    kiln_tensor_info info;
    cr_assert_not_null(kiln_program_data(p, name, &info), "the program has no tensor '%s'", name);
    cr_assert_eq(info.rank, g.rank, "'%s' has rank %d in kiln, %d in %s.npy", name, info.rank,
                 g.rank, file);
    for (int k = 0; k < g.rank; k++)
        cr_assert_eq(info.shape[k], g.shape[k], "'%s' axis %d: %lld in kiln, %lld in %s.npy",
                     name, k, (long long)info.shape[k], (long long)g.shape[k], file);
    size_t es = kiln_dtype_size(info.dtype);
    char *buf = malloc((size_t)(g.n ? g.n : 1) * es);
    cr_assert_not_null(buf);
    for (int64_t i = 0; i < g.n; i++) {
        if (info.dtype == KILN_F32) {
            float v = (float)g.v[i];
            memcpy(buf + (size_t)i * es, &v, sizeof v);
        } else if (info.dtype == KILN_I32) {
            int32_t v = (int32_t)g.v[i];
            memcpy(buf + (size_t)i * es, &v, sizeof v);
        } else {
            cr_assert_fail("'%s': unexpected dtype %s", name, kiln_dtype_name(info.dtype));
        }
    }
    kiln_status st = kiln_program_set(p, name, buf, (size_t)g.n * es);
    cr_assert_eq(st, KILN_OK, "setting '%s': %s", name, kiln_program_error(p));
    free(buf);
    free_golden(&g);
}

/* A program tensor (f32) as n doubles (malloc'd); n must be its size. */
static double *c_values(kiln_program *p, const char *name, int64_t n)
{
    kiln_tensor_info info;
    cr_assert_not_null(kiln_program_data(p, name, &info), "the program has no tensor '%s'", name);
    cr_assert_eq(info.dtype, KILN_F32, "'%s' is %s", name, kiln_dtype_name(info.dtype));
    cr_assert_eq((int64_t)(info.bytes / sizeof(float)), n, "'%s' holds %lld values, expected %lld",
                 name, (long long)(info.bytes / sizeof(float)), (long long)n);
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert(f && v);
    kiln_status st = kiln_program_get(p, name, f, (size_t)n * sizeof *f);
    cr_assert_eq(st, KILN_OK, "reading '%s': %s", name, kiln_program_error(p));
    for (int64_t i = 0; i < n; i++) v[i] = f[i];
    free(f);
    return v;
}

/* The training program compiled to C, with the initial weights, the batch
 * and zeroed optimizer state. */
static kiln_program *c_start(source src, kiln_optimizer opt, int nesterov)
{
    kiln_graph *fwd = forward_graph(src);
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = KILN_BACKEND_C;
    o.cache_dir = cache_dir;
    o.train.optimizer = opt;
    o.train.nesterov = nesterov;
    o.train.keep_grads = 1;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(fwd, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : kiln_status_str(st));
    free(err);
    kiln_graph_free(fwd);
    cr_assert(kiln_program_has_entry(p, "train_step"));
    c_set_golden(p, "x", "x");
    c_set_golden(p, "y", "y");
    for (int k = 0; k < 6; k++) c_set_golden(p, PARAMS[k], PARAMS[k]);
    cr_assert_eq(kiln_program_reset_state(p), KILN_OK, "%s", kiln_program_error(p));
    return p;
}

static void set_hparam_cb(void *p, const char *name, double v)
{
    kiln_status st = kiln_program_set_hparam(p, name, v);
    cr_assert_eq(st, KILN_OK, "hyperparameter '%s': %s", name, kiln_program_error(p));
}

/* One train_step with gen_mlp.py's hyperparameters (lr 0: the run's own). */
static void c_step(kiln_program *p, kiln_optimizer opt, int t, double lr)
{
    set_hparams(opt, t, lr, set_hparam_cb, p);
    kiln_status st = kiln_program_run(p, "train_step");
    cr_assert_eq(st, KILN_OK, "step %d: %s", t, kiln_program_error(p));
}

static void c_expect_tensor(kiln_program *p, const char *tensor, const char *file, double atol,
                            const golden *init)
{
    golden g = load_golden(file);
    double *got = c_values(p, tensor, g.n);
    char what[200];
    snprintf(what, sizeof what, "generated C: %s", file);
    expect_close(what, got, &g, RTOL, atol);
    if (init) expect_update_close(what, got, &g, init);
    free(got);
    free_golden(&g);
}

/* (a) the loss and the gradients at the initial weights. */
static void c_check_gradients(source src)
{
    kiln_program *p = c_start(src, KILN_OPT_ADAMW, 0);
    c_step(p, KILN_OPT_ADAMW, 1, 0);
    c_expect_tensor(p, "loss", "loss", ATOL, NULL);
    for (int k = 0; k < 6; k++) {
        char name[128];
        snprintf(name, sizeof name, "grad.%s", PARAMS[k]);
        c_expect_tensor(p, name, name, ATOL, NULL);
    }
    kiln_program_free(p);
}

/* One AdamW step at lr 1e-3, strict tolerance everywhere (see
 * check_adamw_one_step). */
static void c_check_adamw_one_step(source src)
{
    kiln_program *p = c_start(src, KILN_OPT_ADAMW, 0);
    c_step(p, KILN_OPT_ADAMW, 1, 1e-3);
    c_expect_tensor(p, "loss", "loss", ATOL, NULL);
    for (int k = 0; k < 6; k++) {
        char name[128];
        snprintf(name, sizeof name, "adamw1.%s", PARAMS[k]);
        c_expect_tensor(p, PARAMS[k], name, ATOL, NULL);
    }
    kiln_program_free(p);
}

/* (b), (c): two optimizer steps, their losses and the parameters after. */
static void c_check_two_steps(source src, kiln_optimizer opt, int nesterov, const char *run)
{
    kiln_program *p = c_start(src, opt, nesterov);
    char name[160], what[200];
    snprintf(name, sizeof name, "%s_losses", run);
    golden losses = load_golden(name);
    cr_assert_eq(losses.n, 2);
    for (int t = 1; t <= 2; t++) {
        c_step(p, opt, t, 0);
        golden one = {0, {0}, 1, &losses.v[t - 1]};
        double *loss = c_values(p, "loss", 1);
        snprintf(what, sizeof what, "generated C: %s loss of step %d", run, t);
        expect_close(what, loss, &one, RTOL, ATOL);
        free(loss);
    }
    free_golden(&losses);
    for (int k = 0; k < 6; k++) {
        snprintf(name, sizeof name, "%s2.%s", run, PARAMS[k]);
        golden init = load_golden(PARAMS[k]);
        c_expect_tensor(p, PARAMS[k], name, opt == KILN_OPT_ADAMW ? ADAMW_PARAM_ATOL : ATOL,
                        &init);
        free_golden(&init);
    }
    kiln_program_free(p);
}

Test(golden_c, gradients_model_file) { c_check_gradients(FROM_FILE); }
Test(golden_c, adamw_one_step_model_file) { c_check_adamw_one_step(FROM_FILE); }
Test(golden_c, sgd_two_steps_model_file) { c_check_two_steps(FROM_FILE, KILN_OPT_SGD, 0, "sgd"); }
Test(golden_c, adamw_two_steps_model_file)
{
    c_check_two_steps(FROM_FILE, KILN_OPT_ADAMW, 0, "adamw");
}
Test(golden_c, sgd_nesterov_two_steps_model_file)
{
    c_check_two_steps(FROM_FILE, KILN_OPT_SGD, 1, "sgd_nesterov");
}
Test(golden_c, gradients_capi) { c_check_gradients(FROM_CAPI); }
