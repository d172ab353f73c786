/* tests/test_program.c — compiled programs (runtime/program.c) on both
 * backends, and the seeded generator (runtime/rng.c).
 *
 * The model is a tiny MLP: x f32[8,6] -> linear(5) -> relu -> linear(3)
 * -> logits (an output), cross_entropy with y i32[8] (the loss), and the
 * count of correct predictions (a metric). The REF backend runs on the
 * reference interpreter; the C backend generates, compiles and loads C (a
 * fresh cache directory per test). */
#include <criterion/criterion.h>

#include "kiln/kiln.h"
#include "runtime/rng.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NB 8  /* batch */
#define NIN 6 /* input features */
#define NH 5  /* hidden units */
#define NC 3  /* classes */

static char cache_dir[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache_dir, sizeof cache_dir, "test_program");
}

static void remove_cache(void)
{
    if (cache_dir[0]) kiln_test_rmtree(cache_dir);
    cache_dir[0] = 0;
}

TestSuite(program, .init = make_cache, .fini = remove_cache);
TestSuite(program_c, .init = make_cache, .fini = remove_cache);

static kiln_graph *mlp(void)
{
    kiln_graph *g = kiln_graph_new("mlp");
    int64_t xs[] = {NB, NIN}, ys[] = {NB};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_relu(g, kiln_linear(g, x, NH, 1, "fc1"));
    kiln_value out = kiln_linear(g, h, NC, 1, "fc2");
    cr_assert_eq(kiln_set_output(g, out, "logits"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_value loss = kiln_cross_entropy(g, out, y);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_value pred = kiln_argmax(g, out, 1);
    kiln_value hit = kiln_cast(g, kiln_eq(g, pred, kiln_cast(g, y, KILN_I64)), KILN_F32);
    kiln_value acc = kiln_reduce_sum(g, hit, 0, NULL, 0);
    cr_assert_eq(kiln_set_metric(g, acc, "accuracy"), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

static kiln_program *compile_opt(const kiln_graph *g, kiln_backend be, kiln_optimizer o)
{
    kiln_compile_options opt = kiln_compile_defaults();
    opt.backend = be;
    opt.cache_dir = cache_dir;
    opt.train.optimizer = o;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &opt, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : kiln_status_str(st));
    cr_assert_null(err);
    cr_assert_not_null(p);
    return p;
}

static kiln_program *compile(const kiln_graph *g, kiln_backend be)
{
    return compile_opt(g, be, KILN_OPT_ADAMW);
}

/* A fixed batch: a smooth pattern the MLP can fit, labels i % NC. */
static void set_batch(kiln_program *p)
{
    float x[NB * NIN];
    int32_t y[NB];
    for (int i = 0; i < NB; i++) {
        y[i] = i % NC;
        for (int j = 0; j < NIN; j++)
            x[i * NIN + j] = (float)(sin(0.7 * i + 1.3 * j) + 0.5 * (j == y[i]));
    }
    cr_assert_eq(kiln_program_set(p, "x", x, sizeof x), KILN_OK, "%s", kiln_program_error(p));
    cr_assert_eq(kiln_program_set(p, "y", y, sizeof y), KILN_OK, "%s", kiln_program_error(p));
}

static float get_scalar(kiln_program *p, const char *name)
{
    float v = NAN;
    cr_assert_eq(kiln_program_get(p, name, &v, sizeof v), KILN_OK, "%s", kiln_program_error(p));
    return v;
}

static void run(kiln_program *p, const char *entry)
{
    cr_assert_eq(kiln_program_run(p, entry), KILN_OK, "%s: %s", entry, kiln_program_error(p));
}

static const char *const param_names[] = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"};

/* ---- layout and tensors ---- */

Test(program, entries_and_tensors)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, KILN_BACKEND_REF);
    cr_expect(kiln_program_has_entry(p, "train_step"));
    cr_expect(kiln_program_has_entry(p, "eval_step"));
    cr_expect(kiln_program_has_entry(p, "forward"));
    cr_expect(!kiln_program_has_entry(p, "backward"));
    cr_expect(!kiln_program_has_entry(p, NULL));

    /* memory order: parameters, state, interface leaves, returned values */
    static const struct {
        const char *name;
        kiln_role role;
    } want[] = {
        {"fc1.weight", KILN_ROLE_PARAM},
        {"fc1.bias", KILN_ROLE_PARAM},
        {"fc2.weight", KILN_ROLE_PARAM},
        {"fc2.bias", KILN_ROLE_PARAM},
        {"fc1.weight.exp_avg", KILN_ROLE_STATE},
        {"fc1.weight.exp_avg_sq", KILN_ROLE_STATE},
        {"x", KILN_ROLE_INPUT},
        {"y", KILN_ROLE_TARGET},
        {"lr", KILN_ROLE_HPARAM},
        {"logits", KILN_ROLE_OUTPUT},
        {"loss", KILN_ROLE_LOSS},
        {"accuracy", KILN_ROLE_METRIC},
    };
    int n = kiln_program_num_tensors(p), last_class = -1;
    /* 4 params, 8 state, x, y, 6 hparams, 3 returned */
    cr_expect_eq(n, 4 + 8 + 2 + 6 + 3);
    for (size_t w = 0; w < sizeof want / sizeof want[0]; w++) {
        int found = -1;
        kiln_tensor_info info;
        for (int i = 0; i < n; i++) {
            cr_assert_eq(kiln_program_tensor(p, i, &info), KILN_OK);
            if (!strcmp(info.name, want[w].name)) {
                found = i;
                break;
            }
        }
        cr_assert_geq(found, 0, "tensor %s is missing", want[w].name);
        cr_expect_eq(info.role, want[w].role, "%s: role %s", want[w].name,
                     kiln_role_name(info.role));
        void *d = kiln_program_data(p, want[w].name, &info);
        cr_assert_not_null(d);
        cr_expect_eq((uintptr_t)d % 64, 0, "%s is not 64-byte aligned", want[w].name);
    }
    /* classes are contiguous and in order */
    int cls_of[KILN_ROLE_COUNT] = {0};
    cls_of[KILN_ROLE_PARAM] = 0;
    cls_of[KILN_ROLE_STATE] = 1;
    cls_of[KILN_ROLE_INPUT] = cls_of[KILN_ROLE_TARGET] = cls_of[KILN_ROLE_HPARAM] = 2;
    cls_of[KILN_ROLE_OUTPUT] = cls_of[KILN_ROLE_LOSS] = cls_of[KILN_ROLE_METRIC] = 3;
    for (int i = 0; i < n; i++) {
        kiln_tensor_info info;
        kiln_program_tensor(p, i, &info);
        cr_expect_geq(cls_of[info.role], last_class, "%s out of order", info.name);
        last_class = cls_of[info.role];
    }
    /* parameters in order of appearance */
    for (int i = 0; i < 4; i++) {
        kiln_tensor_info info;
        kiln_program_tensor(p, i, &info);
        cr_expect_str_eq(info.name, param_names[i]);
    }
    kiln_tensor_info info;
    cr_expect_eq(kiln_program_tensor(p, n, &info), KILN_ERR_INVALID);
    cr_expect_eq(kiln_program_tensor(p, -1, &info), KILN_ERR_INVALID);

    cr_assert_not_null(kiln_program_data(p, "x", &info));
    cr_expect_eq(info.dtype, KILN_F32);
    cr_expect_eq(info.rank, 2);
    cr_expect_eq(info.shape[0], NB);
    cr_expect_eq(info.shape[1], NIN);
    cr_expect_eq(info.bytes, NB * NIN * sizeof(float));

    kiln_program_stats s;
    cr_assert_eq(kiln_program_stats_get(p, &s), KILN_OK);
    cr_expect_eq(s.num_params, NIN * NH + NH + NH * NC + NC);
    cr_expect_eq(s.param_bytes, 128 + 64 + 64 + 64, "P: fc1.weight 120 B -> 128, the rest "
                 "64 each: %zu", s.param_bytes);
    cr_expect_eq(s.state_bytes, 2 * s.param_bytes);
    cr_expect_eq(s.param_bytes % 64, 0);
    cr_expect_eq(s.arena_bytes % 64, 0);
    cr_expect_gt(s.train_flops, 2.0 * NB * NIN * NH * 3, "flops %g", s.train_flops);
    cr_expect_gt(s.num_kernels, 10);
    cr_expect_eq(s.cached, 0);
    cr_expect_geq(s.compile_seconds, 0.0);

    /* hyperparameters start at fastai's defaults */
    cr_expect_float_eq(get_scalar(p, "lr"), 1e-3f, 1e-9);
    cr_expect_float_eq(get_scalar(p, "step"), 1.0f, 0);
    cr_expect_eq(kiln_program_set_hparam(p, "lr", 0.25), KILN_OK);
    cr_expect_float_eq(get_scalar(p, "lr"), 0.25f, 0);
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(program, errors_name_what_failed)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, KILN_BACKEND_REF);
    float small[3] = {0};
    cr_expect_eq(kiln_program_set(p, "x", small, sizeof small), KILN_ERR_SHAPE);
    const char *e = kiln_program_error(p);
    cr_expect(strstr(e, "'x'") && strstr(e, "f32[8,6]") && strstr(e, "192 bytes") &&
              strstr(e, "12 bytes"), "%s", e);
    cr_expect_eq(kiln_program_get(p, "loss", small, sizeof small), KILN_ERR_SHAPE);

    cr_expect_eq(kiln_program_set(p, "nope", small, sizeof small), KILN_ERR_NOT_FOUND);
    e = kiln_program_error(p);
    cr_expect(strstr(e, "'nope'") && strstr(e, "fc1.weight"), "%s", e);
    cr_expect_eq(kiln_program_get(p, "nope", small, sizeof small), KILN_ERR_NOT_FOUND);
    cr_expect_null(kiln_program_data(p, "nope", NULL));
    cr_expect_null(kiln_program_data(p, NULL, NULL));

    cr_expect_eq(kiln_program_set_hparam(p, "momentum", 0.9), KILN_ERR_NOT_FOUND);
    e = kiln_program_error(p);
    cr_expect(strstr(e, "'momentum'") && strstr(e, "lr") && strstr(e, "beta2"), "%s", e);
    cr_expect_eq(kiln_program_set_hparam(p, "x", 0.9), KILN_ERR_NOT_FOUND, "x is no hparam");

    cr_expect_eq(kiln_program_run(p, "backward"), KILN_ERR_NOT_FOUND);
    e = kiln_program_error(p);
    cr_expect(strstr(e, "backward") && strstr(e, "train_step"), "%s", e);

    /* null handles never crash */
    cr_expect_eq(kiln_program_run(NULL, "forward"), KILN_ERR_INVALID);
    cr_expect_eq(kiln_program_set(NULL, "x", small, 12), KILN_ERR_INVALID);
    cr_expect_eq(kiln_program_num_tensors(NULL), 0);
    cr_expect_eq(kiln_program_init_params(NULL, 1), KILN_ERR_INVALID);
    kiln_program_free(NULL);
    kiln_program *q = (kiln_program *)1;
    char *err = NULL;
    cr_expect_eq(kiln_compile(NULL, NULL, &q, &err), KILN_ERR_INVALID);
    cr_expect_null(q);
    cr_expect_not_null(err);
    free(err);
    kiln_program_free(p);
    kiln_graph_free(g);
}

/* An unnamed returned value is named by its role ("output"); two of them
 * would share one place: refused. */
Test(program, duplicate_names_refused)
{
    kiln_graph *g = kiln_graph_new("dup");
    int64_t s[] = {4};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    cr_assert_eq(kiln_set_output(g, kiln_relu(g, x), NULL), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, kiln_exp(g, x), NULL), KILN_OK, "%s", kiln_graph_error(g));
    kiln_compile_options opt = kiln_compile_defaults();
    opt.backend = KILN_BACKEND_REF;
    kiln_program *p = NULL;
    char *err = NULL;
    cr_expect_eq(kiln_compile(g, &opt, &p, &err), KILN_ERR_INVALID);
    cr_expect_null(p);
    cr_assert_not_null(err);
    cr_expect(strstr(err, "two values named 'output'"), "%s", err);
    free(err);
    kiln_graph_free(g);
}

/* A graph without a loss compiles to forward only. */
Test(program, forward_only)
{
    kiln_graph *g = kiln_graph_new("fwd");
    int64_t s[] = {2, 3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, s);
    kiln_value y = kiln_linear(g, x, 2, 0, "lin");
    kiln_set_output(g, kiln_tanh(g, y), "out");
    kiln_program *p = compile(g, KILN_BACKEND_REF);
    cr_expect(!kiln_program_has_entry(p, "train_step"));
    cr_expect(!kiln_program_has_entry(p, "eval_step"));
    cr_expect(kiln_program_has_entry(p, "forward"));
    cr_expect_eq(kiln_program_num_tensors(p), 3); /* lin.weight, x, out */
    cr_expect_eq(kiln_program_set_hparam(p, "lr", 0.1), KILN_ERR_NOT_FOUND);
    cr_expect(strstr(kiln_program_error(p), "no train_step"), "%s", kiln_program_error(p));
    float w[] = {1, 0, 0, 0, 1, 0}, xv[] = {0.5f, -1, 7, 0.25f, 2, -3}, out[4];
    cr_assert_eq(kiln_program_set(p, "lin.weight", w, sizeof w), KILN_OK);
    cr_assert_eq(kiln_program_set(p, "x", xv, sizeof xv), KILN_OK);
    run(p, "forward");
    cr_assert_eq(kiln_program_get(p, "out", out, sizeof out), KILN_OK);
    float want[] = {tanhf(0.5f), tanhf(-1), tanhf(0.25f), tanhf(2)};
    for (int i = 0; i < 4; i++) cr_expect_float_eq(out[i], want[i], 1e-6, "out[%d]", i);
    kiln_program_stats st;
    kiln_program_stats_get(p, &st);
    cr_expect_eq(st.train_flops, 0.0);
    kiln_program_free(p);
    kiln_graph_free(g);
}

/* ---- initialisation ---- */

static void get_param(kiln_program *p, const char *name, float *v, size_t n)
{
    cr_assert_eq(kiln_program_get(p, name, v, n * sizeof *v), KILN_OK, "%s",
                 kiln_program_error(p));
}

Test(program, init_params_seeded)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, KILN_BACKEND_REF), *q = compile(g, KILN_BACKEND_REF);
    float a[NIN * NH], b[NIN * NH], c[NIN * NH];
    /* state is zeroed by init: dirty it first */
    float junk[NIN * NH];
    for (int i = 0; i < NIN * NH; i++) junk[i] = 1.0f;
    kiln_program_set(p, "fc1.weight.exp_avg", junk, sizeof junk);

    cr_assert_eq(kiln_program_init_params(p, 42), KILN_OK);
    cr_assert_eq(kiln_program_init_params(q, 42), KILN_OK);
    get_param(p, "fc1.weight.exp_avg", c, NIN * NH);
    for (int i = 0; i < NIN * NH; i++) cr_expect_eq(c[i], 0.0f);
    for (int k = 0; k < 4; k++) {
        kiln_tensor_info info;
        void *dp = kiln_program_data(p, param_names[k], &info);
        void *dq = kiln_program_data(q, param_names[k], NULL);
        cr_expect(!memcmp(dp, dq, info.bytes), "%s differs for one seed", param_names[k]);
    }
    get_param(p, "fc1.weight", a, NIN * NH);
    cr_assert_eq(kiln_program_init_params(q, 43), KILN_OK);
    get_param(q, "fc1.weight", b, NIN * NH);
    cr_expect(memcmp(a, b, sizeof a), "seeds 42 and 43 gave the same weights");
    /* the same seed again restores them */
    cr_assert_eq(kiln_program_init_params(q, 42), KILN_OK);
    get_param(q, "fc1.weight", c, NIN * NH);
    cr_expect(!memcmp(a, c, sizeof a));
    /* weight and bias of one layer are different streams */
    float bias[NH];
    get_param(p, "fc1.bias", bias, NH);
    cr_expect(memcmp(a, bias, sizeof bias));

    /* U(+-1/sqrt(fan_in)) as PyTorch's nn.Linear */
    const struct {
        const char *name;
        int n, fan_in;
    } ps[] = {{"fc1.weight", NIN * NH, NIN}, {"fc1.bias", NH, NIN},
              {"fc2.weight", NH * NC, NH}, {"fc2.bias", NC, NH}};
    for (int k = 0; k < 4; k++) {
        float v[NIN * NH];
        get_param(p, ps[k].name, v, (size_t)ps[k].n);
        double bound = 1.0 / sqrt((double)ps[k].fan_in), most = 0.0;
        for (int i = 0; i < ps[k].n; i++) {
            cr_expect_leq(fabsf(v[i]), (float)bound, "%s[%d] = %g beyond %g", ps[k].name, i,
                          (double)v[i], bound);
            if (fabs(v[i]) > most) most = fabs(v[i]);
        }
        if (ps[k].n >= 15) cr_expect_gt(most, 0.6 * bound, "%s: max |w| %g", ps[k].name, most);
    }
    kiln_program_free(p);
    kiln_program_free(q);
    kiln_graph_free(g);
}

/* zeros, ones, normal(0, scale^2) over many samples. */
Test(program, init_kinds)
{
    kiln_graph *g = kiln_graph_new("inits");
    int64_t big[] = {20000}, small[] = {7};
    kiln_value nrm = kiln_param(g, "n", KILN_F32, 1, big, KILN_INIT_NORMAL, 0.5);
    kiln_value uni = kiln_param(g, "u", KILN_F64, 1, big, KILN_INIT_UNIFORM, 2.0);
    kiln_value one = kiln_param(g, "one", KILN_F32, 1, small, KILN_INIT_ONES, 0);
    kiln_value zero = kiln_param(g, "zero", KILN_F32, 1, small, KILN_INIT_ZEROS, 0);
    kiln_set_output(g, kiln_add(g, nrm, kiln_cast(g, uni, KILN_F32)), "s");
    kiln_set_output(g, kiln_add(g, one, zero), "t");
    kiln_program *p = compile(g, KILN_BACKEND_REF);
    float ones[7] = {1, 1, 1, 1, 1, 1, 1};
    kiln_program_set(p, "zero", ones, sizeof ones);
    cr_assert_eq(kiln_program_init_params(p, 7), KILN_OK);
    float *n = kiln_program_data(p, "n", NULL);
    double *u = kiln_program_data(p, "u", NULL);
    float *o = kiln_program_data(p, "one", NULL), *z = kiln_program_data(p, "zero", NULL);
    double s1 = 0, s2 = 0, umin = 1e9, umax = -1e9, umean = 0;
    for (int i = 0; i < 20000; i++) {
        s1 += n[i];
        s2 += (double)n[i] * n[i];
        umean += u[i];
        if (u[i] < umin) umin = u[i];
        if (u[i] > umax) umax = u[i];
    }
    double mean = s1 / 20000, sd = sqrt(s2 / 20000 - mean * mean);
    cr_expect_lt(fabs(mean), 0.02, "normal mean %g", mean);
    cr_expect_lt(fabs(sd - 0.5), 0.02, "normal sd %g", sd);
    cr_expect(umin >= -2.0 && umax < 2.0 && umin < -1.99 && umax > 1.99, "[%g, %g]", umin, umax);
    cr_expect_lt(fabs(umean / 20000), 0.05);
    for (int i = 0; i < 7; i++) {
        cr_expect_eq(o[i], 1.0f);
        cr_expect_eq(z[i], 0.0f);
    }
    kiln_program_free(p);
    kiln_graph_free(g);
}

/* ---- training ---- */

static void trains(kiln_backend be)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, be);
    cr_assert_eq(kiln_program_init_params(p, 1), KILN_OK);
    set_batch(p);
    kiln_program_set_hparam(p, "lr", 5e-2);
    float first = 0, last = 0;
    for (int step = 1; step <= 20; step++) {
        kiln_program_set_hparam(p, "step", step);
        run(p, "train_step");
        float l = get_scalar(p, "loss");
        cr_assert(isfinite(l), "step %d: loss %g", step, (double)l);
        if (step == 1) first = l;
        last = l;
    }
    cr_expect_lt(last, 0.8f * first, "loss %g -> %g over 20 steps", (double)first, (double)last);
    /* the fitted batch is mostly right */
    run(p, "eval_step");
    cr_expect_geq(get_scalar(p, "accuracy"), 6.0f, "accuracy %g / 8",
                  (double)get_scalar(p, "accuracy"));
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(program, ref_train_lowers_loss) { trains(KILN_BACKEND_REF); }
Test(program_c, train_lowers_loss) { trains(KILN_BACKEND_C); }

/* eval_step computes the loss train_step reports (before its update); forward
 * computes the logits eval_step does. */
static void eval_matches_train(kiln_backend be)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, be);
    kiln_program_init_params(p, 3);
    set_batch(p);
    run(p, "eval_step");
    float le = get_scalar(p, "loss"), acc = get_scalar(p, "accuracy");
    float logits_eval[NB * NC], logits_fwd[NB * NC];
    cr_assert_eq(kiln_program_get(p, "logits", logits_eval, sizeof logits_eval), KILN_OK);
    memset(kiln_program_data(p, "logits", NULL), 0, sizeof logits_fwd);
    run(p, "forward");
    cr_assert_eq(kiln_program_get(p, "logits", logits_fwd, sizeof logits_fwd), KILN_OK);
    for (int i = 0; i < NB * NC; i++) cr_expect_eq(logits_eval[i], logits_fwd[i], "logit %d", i);
    float before[NIN * NH], after[NIN * NH];
    get_param(p, "fc1.weight", before, NIN * NH);
    run(p, "train_step");
    float lt = get_scalar(p, "loss");
    cr_expect_float_eq(lt, le, 1e-6 * fabsf(le), "train %g, eval %g", (double)lt, (double)le);
    cr_expect_eq(get_scalar(p, "accuracy"), acc);
    get_param(p, "fc1.weight", after, NIN * NH);
    cr_expect(memcmp(before, after, sizeof before), "train_step did not update fc1.weight");
    /* eval does not update */
    run(p, "eval_step");
    get_param(p, "fc1.weight", before, NIN * NH);
    cr_expect(!memcmp(before, after, sizeof before), "eval_step changed fc1.weight");
    cr_expect_lt(get_scalar(p, "loss"), le);
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(program, ref_eval_matches_train) { eval_matches_train(KILN_BACKEND_REF); }
Test(program_c, eval_matches_train) { eval_matches_train(KILN_BACKEND_C); }

static bool close_to(double a, double b, double rtol, double atol)
{
    return fabs(a - b) <= atol + rtol * fmax(fabs(a), fabs(b));
}

/* The C backend computes what the interpreter computes, step by step. */
static void backends_agree(kiln_optimizer o)
{
    kiln_graph *g = mlp();
    kiln_program *r = compile_opt(g, KILN_BACKEND_REF, o), *c = compile_opt(g, KILN_BACKEND_C, o);
    kiln_program *ps[2] = {r, c};
    for (int k = 0; k < 2; k++) {
        kiln_program_init_params(ps[k], 11);
        set_batch(ps[k]);
        kiln_program_set_hparam(ps[k], "lr", 1e-2);
    }
    for (int step = 1; step <= 20; step++) {
        for (int k = 0; k < 2; k++) {
            kiln_program_set_hparam(ps[k], "step", step);
            run(ps[k], "train_step");
        }
        float lr = get_scalar(r, "loss"), lc = get_scalar(c, "loss");
        cr_expect(close_to(lr, lc, 1e-5, 0), "step %d: loss ref %.9g, C %.9g", step,
                  (double)lr, (double)lc);
        cr_expect_eq(get_scalar(r, "accuracy"), get_scalar(c, "accuracy"), "step %d", step);
        for (int t = 0; t < 4; t++) {
            kiln_tensor_info info;
            float *a = kiln_program_data(r, param_names[t], &info);
            float *b = kiln_program_data(c, param_names[t], NULL);
            for (size_t i = 0; i < info.bytes / sizeof(float); i++)
                cr_expect(close_to(a[i], b[i], 1e-5, 1e-7), "step %d: %s[%zu] ref %.9g, C %.9g",
                          step, param_names[t], i, (double)a[i], (double)b[i]);
        }
    }
    kiln_program_free(r);
    kiln_program_free(c);
    kiln_graph_free(g);
}

Test(program_c, backends_agree_adamw) { backends_agree(KILN_OPT_ADAMW); }
Test(program_c, backends_agree_sgd) { backends_agree(KILN_OPT_SGD); }

static void bad_label(kiln_backend be)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, be);
    kiln_program_init_params(p, 5);
    set_batch(p);
    int32_t *y = kiln_program_data(p, "y", NULL);
    y[3] = NC + 4;
    float before[NIN * NH], after[NIN * NH];
    get_param(p, "fc1.weight", before, NIN * NH);
    kiln_status st = kiln_program_run(p, "train_step");
    cr_expect_neq(st, KILN_OK);
    const char *e = kiln_program_error(p);
    cr_expect(strstr(e, "train_step") && strstr(e, "cross_entropy") && strstr(e, "label"), "%s",
              e);
    if (be == KILN_BACKEND_C) cr_expect_eq(st, KILN_ERR_INVALID);
    if (be == KILN_BACKEND_REF) {
        get_param(p, "fc1.weight", after, NIN * NH);
        cr_expect(!memcmp(before, after, sizeof before), "a failed step changed fc1.weight");
    }
    /* a good label again, and the program works */
    y[3] = 0;
    run(p, "train_step");
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(program, ref_bad_label) { bad_label(KILN_BACKEND_REF); }
Test(program_c, bad_label) { bad_label(KILN_BACKEND_C); }

/* reset_state zeroes the optimizer state and nothing else. */
Test(program, reset_state)
{
    kiln_graph *g = mlp();
    kiln_program *p = compile(g, KILN_BACKEND_REF);
    kiln_program_init_params(p, 9);
    set_batch(p);
    run(p, "train_step");
    float m[NH], w[NIN * NH], w2[NIN * NH];
    get_param(p, "fc1.bias.exp_avg", m, NH);
    int nonzero = 0;
    for (int i = 0; i < NH; i++) nonzero += m[i] != 0.0f;
    cr_expect_gt(nonzero, 0);
    get_param(p, "fc1.weight", w, NIN * NH);
    cr_assert_eq(kiln_program_reset_state(p), KILN_OK);
    get_param(p, "fc1.bias.exp_avg", m, NH);
    for (int i = 0; i < NH; i++) cr_expect_eq(m[i], 0.0f);
    get_param(p, "fc1.weight", w2, NIN * NH);
    cr_expect(!memcmp(w, w2, sizeof w));
    kiln_program_free(p);
    kiln_graph_free(g);
}

/* ---- the C backend's source and cache ---- */

Test(program_c, emit_and_cache)
{
    kiln_graph *g = mlp();
    char *err = NULL;
    char *src = kiln_emit_c(g, NULL, &err);
    cr_assert_not_null(src, "%s", err ? err : "?");
    cr_expect_null(err);
    cr_expect(strstr(src, "kiln_train_step") && strstr(src, "kiln_eval_step") &&
              strstr(src, "kiln_forward"), "entry points missing");
    char *again = kiln_emit_c(g, NULL, NULL);
    cr_assert_not_null(again);
    cr_expect_str_eq(src, again, "the source is not deterministic");
    free(src);
    free(again);

    kiln_program *p = compile(g, KILN_BACKEND_C), *q = compile(g, KILN_BACKEND_C);
    kiln_program_stats s1, s2;
    kiln_program_stats_get(p, &s1);
    kiln_program_stats_get(q, &s2);
    cr_expect_eq(s1.cached, 0, "the first compile hit an empty cache");
    cr_expect_eq(s2.cached, 1, "the second compile missed the cache");
    cr_expect_gt(s1.num_kernels, 0);
    cr_expect_eq(s1.num_kernels, s2.num_kernels);
    kiln_program_free(p);
    kiln_program_free(q);
    kiln_graph_free(g);
}

/* ---- the generator ---- */

Test(rng, deterministic_and_distributed)
{
    kiln_rng a, b, c;
    kiln_rng_seed(&a, 123);
    kiln_rng_seed(&b, 123);
    kiln_rng_seed_stream(&c, 123, 1);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = kiln_rng_next(&a), y = kiln_rng_next(&b), z = kiln_rng_next(&c);
        cr_assert_eq(x, y);
        same_c += x == z;
    }
    cr_expect_eq(same_c, 0, "stream 1 repeats stream 0");
    double s = 0, s2 = 0, lo = 1, hi = 0;
    int counts[7] = {0};
    for (int i = 0; i < 100000; i++) {
        double u = kiln_rng_uniform(&a);
        cr_assert(u >= 0.0 && u < 1.0);
        if (u < lo) lo = u;
        if (u > hi) hi = u;
        uint64_t k = kiln_rng_below(&a, 7);
        cr_assert_lt(k, 7u);
        counts[k]++;
        double n = kiln_rng_normal(&b);
        s += n;
        s2 += n * n;
    }
    cr_expect(lo < 1e-3 && hi > 1 - 1e-3);
    for (int k = 0; k < 7; k++) cr_expect(abs(counts[k] - 100000 / 7) < 600, "bin %d: %d", k, counts[k]);
    cr_expect_lt(fabs(s / 1e5), 0.02);
    cr_expect_lt(fabs(s2 / 1e5 - 1.0), 0.02);
    cr_expect_eq(kiln_rng_below(&a, 0), 0u);
    double r = kiln_rng_uniform_range(&a, -3, -2);
    cr_expect(r >= -3 && r < -2);
}
