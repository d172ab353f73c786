/* tests/test_norm.c — training versus evaluation (train_eval and the mode
 * passes), batchnorm and dropout end to end.
 *
 *  - mode: train_mode keeps train_eval's first value and the model's
 *    assigns, eval_mode its second and no assigns to state, tags survive;
 *  - batchnorm against PyTorch (tests/golden/norm, gen_norm.py): for
 *    BatchNorm2d [4,3,5,6] and BatchNorm1d [8,5], two training steps (x as a
 *    parameter so the program returns its gradient; SGD at lr 0 changes
 *    nothing), then the train-mode output, the gradients of x, weight and
 *    bias, the running statistics and num_batches_tracked after both steps,
 *    and the eval-mode output (the forward entry), through the reference
 *    interpreter, generated C and LLVM: |a - e| <= 1e-5 + 1e-4 |e|;
 *  - model state: where it lives (P), its initial values, that reset_state
 *    leaves it, checkpoints (save without optimizer state, strict load into
 *    a fresh program: the same running statistics and evaluation output);
 *  - fusion: batchnorm + relu reads the activation in two kernels in the
 *    forward part of train_step and in three in the backward;
 *  - dropout: a new mask every step and the same one for the same step, the
 *    kept share within 6 binomial standard deviations of 1 - p (a fixed
 *    seed: it cannot flake), kept values scaled by exactly 1/(1-p), the
 *    gradient using the same mask, evaluation the identity, two layers two
 *    masks, the same bits from the reference, C, LLVM and the kernel-IR
 *    evaluator;
 *  - the model language's batchnorm and dropout layers;
 *  - AOT: an artifact of a model with batchnorm reads its running
 *    statistics from the weights (a library linked into a driver gives the
 *    forward entry's output);
 *  - the Learner: it sets `step` for SGD as for AdamW, and the validation
 *    set's tail program receives the running statistics.
 */
#include <criterion/criterion.h>

#include "codegen/llvm.h"
#include "ir/graph.h"
#include "ir/ops.h"
#include "kiln/aot.h"
#include "passes/fuse.h"
#include "passes/passes.h"
#include "runtime/npy.h"
#include "runtime/safetensors.h"
#include "tests/kernel_eval.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define GOLDEN KILN_SOURCE_DIR "/tests/golden/norm/"
#define RTOL 1e-4
#define ATOL 1e-5

static char tmp[256];

static void setup(void) { kiln_test_tmpdir(tmp, sizeof tmp, "norm"); }
static void teardown(void)
{
    if (tmp[0]) kiln_test_rmtree(tmp);
    tmp[0] = 0;
}

TestSuite(norm, .init = setup, .fini = teardown, .timeout = 300);

/* ---- helpers ---- */

typedef struct arr {
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t n;
    double *v;
} arr;

static arr golden(const char *kase, const char *what)
{
    char path[1024], err[1200];
    snprintf(path, sizeof path, GOLDEN "%s.%s.npy", kase, what);
    kiln_npy a;
    cr_assert_eq(kiln_npy_load(path, &a, err, sizeof err), KILN_OK,
                 "%s (regenerate with /usr/bin/python3 tests/golden/gen_norm.py)", err);
    arr r = {a.rank, {0}, a.numel, malloc((size_t)(a.numel ? a.numel : 1) * sizeof(double))};
    memcpy(r.shape, a.shape, sizeof r.shape);
    cr_assert_not_null(r.v);
    cr_assert_eq(kiln_npy_to_f64(&a, r.v), KILN_OK);
    kiln_npy_free(&a);
    return r;
}

static bool have_llvm(void) { return kiln_llvm_available(); }

static const char *backend_name(kiln_backend be)
{
    return be == KILN_BACKEND_REF ? "ref" : be == KILN_BACKEND_LLVM ? "llvm" : "c";
}

static kiln_program *compile(const kiln_graph *g, kiln_backend be, int threads)
{
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = threads;
    o.cache_dir = tmp;
    o.train.optimizer = KILN_OPT_SGD;
    o.train.keep_grads = 1;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : kiln_status_str(st));
    free(err);
    return p;
}

/* Writes doubles into a named tensor of its dtype. */
static void put(kiln_program *p, const char *name, const double *v, int64_t n)
{
    kiln_tensor_info t;
    void *d = kiln_program_data(p, name, &t);
    cr_assert_not_null(d, "no tensor '%s': %s", name, kiln_program_error(p));
    cr_assert_eq((int64_t)(t.bytes / kiln_dtype_size(t.dtype)), n, "'%s': %zu bytes for %lld values",
                 name, t.bytes, (long long)n);
    for (int64_t i = 0; i < n; i++) kiln_test_put(d, t.dtype, i, v[i]);
}

/* A named tensor as doubles (malloc'd); *n its count. */
static double *get(kiln_program *p, const char *name, int64_t *n)
{
    kiln_tensor_info t;
    void *d = kiln_program_data(p, name, &t);
    cr_assert_not_null(d, "no tensor '%s': %s", name, kiln_program_error(p));
    int64_t m = (int64_t)(t.bytes / kiln_dtype_size(t.dtype));
    double *v = malloc((size_t)(m ? m : 1) * sizeof *v);
    for (int64_t i = 0; i < m; i++) v[i] = kiln_test_get(d, t.dtype, i);
    if (n) *n = m;
    return v;
}

static void run(kiln_program *p, const char *entry)
{
    cr_assert_eq(kiln_program_run(p, entry), KILN_OK, "%s: %s", entry, kiln_program_error(p));
}

static void hparams_zero(kiln_program *p)
{
    const char *h[] = {"lr", "mom", "wd"};
    for (int i = 0; i < 3; i++) cr_assert_eq(kiln_program_set_hparam(p, h[i], 0.0), KILN_OK);
}

static void expect_close(const char *what, const double *a, const arr *e)
{
    double worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < e->n; i++) {
        double d = fabs(a[i] - e->v[i]), tol = ATOL + RTOL * fabs(e->v[i]);
        if (!(d <= tol) && (at < 0 || d / tol > worst)) {
            worst = d / tol;
            at = i;
        }
    }
    cr_expect_lt(at, 0, "%s: element %lld is %.9g, PyTorch %.9g (%.3g tolerances off)", what,
                 (long long)at, at >= 0 ? a[at] : 0.0, at >= 0 ? e->v[at] : 0.0, worst);
}

/* x (a parameter, to get its gradient) -> batchnorm "bn0" -> y (output);
 * loss = sum(y * g). */
static kiln_graph *bn_graph(int rank, const int64_t *shape)
{
    kiln_graph *g = kiln_graph_new("bn");
    kiln_value x = kiln_param(g, "x", KILN_F32, rank, shape, KILN_INIT_ZEROS, 0);
    kiln_value gi = kiln_input(g, "g", KILN_F32, rank, shape);
    kiln_value y = kiln_batchnorm(g, x, 0.1, 1e-5, "bn0");
    cr_assert_geq(y, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_value loss = kiln_reduce_sum(g, kiln_mul(g, y, gi), 0, NULL, 0);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

/* Two training steps on x1 then x2, an evaluation on x1; every result
 * against PyTorch's. */
static void bn_golden(const char *kase, kiln_backend be, int threads)
{
    arr x1 = golden(kase, "x1"), x2 = golden(kase, "x2"), gg = golden(kase, "g");
    arr w = golden(kase, "weight"), b = golden(kase, "bias");
    kiln_graph *g = bn_graph(x1.rank, x1.shape);
    kiln_program *p = compile(g, be, threads);
    cr_assert_eq(kiln_program_init_params(p, 1), KILN_OK);
    hparams_zero(p);
    put(p, "bn0.weight", w.v, w.n);
    put(p, "bn0.bias", b.v, b.n);
    put(p, "g", gg.v, gg.n);
    put(p, "x", x1.v, x1.n);
    run(p, "train_step");
    put(p, "x", x2.v, x2.n);
    run(p, "train_step");
    static const char *const outs[][2] = {
        {"y", "y"},
        {"grad.x", "dx"},
        {"grad.bn0.weight", "dweight"},
        {"grad.bn0.bias", "dbias"},
        {"bn0.running_mean", "running_mean"},
        {"bn0.running_var", "running_var"},
        {"bn0.num_batches_tracked", "num_batches_tracked"},
    };
    char what[128];
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        arr e = golden(kase, outs[k][1]);
        int64_t n;
        double *a = get(p, outs[k][0], &n);
        cr_assert_eq(n, e.n, "%s: %lld values, PyTorch %lld", outs[k][0], (long long)n,
                     (long long)e.n);
        snprintf(what, sizeof what, "%s %s (%s)", kase, outs[k][0], backend_name(be));
        expect_close(what, a, &e);
        free(a);
        free(e.v);
    }
    /* evaluation: the running statistics */
    put(p, "x", x1.v, x1.n);
    run(p, "forward");
    arr ye = golden(kase, "y_eval");
    double *a = get(p, "y", NULL);
    snprintf(what, sizeof what, "%s y_eval (%s)", kase, backend_name(be));
    expect_close(what, a, &ye);
    free(a);
    free(ye.v);
    kiln_program_free(p);
    kiln_graph_free(g);
    free(x1.v);
    free(x2.v);
    free(gg.v);
    free(w.v);
    free(b.v);
}

/* ---- mode ---- */

static int count_op(const kiln_graph *g, int op)
{
    int n = 0;
    for (int32_t i = 0; i < g->nnodes; i++) n += g->nodes[i].op == op;
    return n;
}

Test(norm, mode_passes_pick_a_branch)
{
    int64_t s[1] = {5};
    kiln_graph *g = kiln_graph_new("mode");
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value st = kiln_build_leaf(g, KILN_ROLE_STATE, "s", KILN_F32, 1, s, 0, NULL);
    kiln_value a = kiln_relu(g, x), b = kiln_neg(g, x);
    kiln_value te = kiln_train_eval(g, a, b);
    kiln_value te2 = kiln_train_eval(g, kiln_exp(g, te), te); /* nested, untagged */
    cr_assert_eq(kiln_set_output(g, te2, "y"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_geq(kiln_b2(g, KILN_OP_ASSIGN, st, kiln_add(g, st, x)), 0);
    /* an assign to a parameter is the graph's own business: it stays */
    kiln_value pw = kiln_param(g, "pw", KILN_F32, 1, s, KILN_INIT_ZEROS, 0);
    cr_assert_geq(kiln_b2(g, KILN_OP_ASSIGN, pw, x), 0);
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));

    for (int train = 0; train < 2; train++) {
        kiln_graph *c = kiln_graph_clone(g);
        cr_assert_eq(kiln_run_pass(c, train ? "train_mode" : "eval_mode"), KILN_OK, "%s",
                     kiln_graph_error(c));
        cr_assert_eq(kiln_run_pass(c, "dce"), KILN_OK);
        cr_assert_eq(kiln_graph_verify(c), KILN_OK, "%s", kiln_graph_error(c));
        cr_expect_eq(count_op(c, KILN_OP_TRAIN_EVAL), 0);
        cr_expect_eq(count_op(c, KILN_OP_ASSIGN), train ? 2 : 1);
        cr_expect_eq(count_op(c, KILN_OP_RELU), train ? 1 : 0);
        cr_expect_eq(count_op(c, KILN_OP_NEG), train ? 0 : 1);
        cr_expect_eq(count_op(c, KILN_OP_EXP), train ? 1 : 0);
        kiln_value y = kiln_graph_find(c, "y");
        cr_assert_geq(y, 0, "the output's tag is kept");
        cr_expect_eq(c->nodes[y].role, KILN_ROLE_OUTPUT);
        kiln_graph_free(c);
    }
    kiln_graph_free(g);
}

/* The unassembled graph means its evaluation program (train_eval is b), and
 * the three entries of a program pick their branch. */
Test(norm, programs_pick_their_branch)
{
    int64_t s[1] = {4};
    kiln_graph *g = kiln_graph_new("branches");
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, s, KILN_INIT_ONES, 0);
    kiln_value h = kiln_mul(g, x, w);
    kiln_value y = kiln_train_eval(g, kiln_mul(g, h, kiln_scalar(g, 2, KILN_F32)), h);
    cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK);
    cr_assert_eq(kiln_set_loss(g, kiln_reduce_sum(g, y, 0, NULL, 0), "loss"), KILN_OK);
    double xv[4] = {1, -2, 3, 0.5};
    kiln_backend bes[3] = {KILN_BACKEND_REF, KILN_BACKEND_C, KILN_BACKEND_LLVM};
    for (int k = 0; k < 3; k++) {
        if (bes[k] == KILN_BACKEND_LLVM && !have_llvm()) continue;
        kiln_program *p = compile(g, bes[k], 1);
        cr_assert_eq(kiln_program_init_params(p, 0), KILN_OK);
        hparams_zero(p);
        put(p, "x", xv, 4);
        run(p, "train_step");
        double *a = get(p, "y", NULL), *l = get(p, "loss", NULL);
        for (int i = 0; i < 4; i++) cr_expect_eq(a[i], 2 * xv[i]);
        cr_expect_eq(l[0], 5.0);
        free(a);
        free(l);
        run(p, "eval_step");
        l = get(p, "loss", NULL);
        cr_expect_eq(l[0], 2.5);
        free(l);
        run(p, "forward");
        a = get(p, "y", NULL);
        for (int i = 0; i < 4; i++) cr_expect_eq(a[i], xv[i]);
        free(a);
        kiln_program_free(p);
    }
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    cr_assert_eq(kiln_interp_set(it, x, xv, 4), KILN_OK);
    double ones[4] = {1, 1, 1, 1};
    cr_assert_eq(kiln_interp_set(it, w, ones, 4), KILN_OK);
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    for (int i = 0; i < 4; i++) cr_expect_eq(kiln_interp_value(it, y)[i], xv[i]);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

/* ---- batchnorm against PyTorch ---- */

Test(norm, batchnorm2d_golden_ref) { bn_golden("bn2d", KILN_BACKEND_REF, 1); }
Test(norm, batchnorm2d_golden_c) { bn_golden("bn2d", KILN_BACKEND_C, 2); }
Test(norm, batchnorm1d_golden_ref) { bn_golden("bn1d", KILN_BACKEND_REF, 1); }
Test(norm, batchnorm1d_golden_c) { bn_golden("bn1d", KILN_BACKEND_C, 1); }
Test(norm, batchnorm2d_golden_llvm)
{
    if (!have_llvm()) cr_skip_test("kiln was built without LLVM");
    bn_golden("bn2d", KILN_BACKEND_LLVM, 2);
}
Test(norm, batchnorm1d_golden_llvm)
{
    if (!have_llvm()) cr_skip_test("kiln was built without LLVM");
    bn_golden("bn1d", KILN_BACKEND_LLVM, 1);
}

Test(norm, batchnorm_rejects_what_pytorch_does)
{
    kiln_graph *g = kiln_graph_new("bad");
    int64_t one[4] = {1, 3, 1, 1}, i2[2] = {4, 3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, one);
    cr_expect_eq(kiln_batchnorm(g, x, 0.1, 1e-5, "bn0"), KILN_ERR_SHAPE);
    cr_expect(strstr(kiln_graph_error(g), "more than 1"), "%s", kiln_graph_error(g));
    kiln_value xi = kiln_input(g, "xi", KILN_I32, 2, i2);
    cr_expect_eq(kiln_batchnorm(g, xi, 0.1, 1e-5, "bn1"), KILN_ERR_SHAPE);
    kiln_value x2 = kiln_input(g, "x2", KILN_F32, 2, i2);
    cr_expect_eq(kiln_batchnorm(g, x2, 1.5, 1e-5, "bn2"), KILN_ERR_INVALID);
    kiln_graph_free(g);
}

/* ---- model state ---- */

Test(norm, running_stats_are_model_state)
{
    int64_t s[4] = {2, 3, 2, 2};
    kiln_graph *g = bn_graph(4, s);
    kiln_program *p = compile(g, KILN_BACKEND_C, 1);
    cr_assert_eq(kiln_program_init_params(p, 3), KILN_OK);
    int nt = kiln_program_num_tensors(p), seen = 0;
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        cr_assert_eq(kiln_program_tensor(p, i, &t), KILN_OK);
        bool bn = !strncmp(t.name, "bn0.running", 11) || !strcmp(t.name, "bn0.num_batches_tracked");
        cr_expect_eq(t.model_state, bn, "'%s': model_state %d", t.name, t.model_state);
        if (bn) {
            seen++;
            cr_expect_eq(t.role, KILN_ROLE_STATE);
        }
        if (!strcmp(t.name, "x.momentum_buffer")) cr_expect_eq(t.model_state, 0);
    }
    cr_expect_eq(seen, 3);
    double *rm = get(p, "bn0.running_mean", NULL), *rv = get(p, "bn0.running_var", NULL);
    for (int c = 0; c < 3; c++) {
        cr_expect_eq(rm[c], 0.0);
        cr_expect_eq(rv[c], 1.0);
    }
    free(rm);
    free(rv);
    /* P holds them: the parameters' memory grows by their bytes */
    kiln_program_stats st;
    cr_assert_eq(kiln_program_stats_get(p, &st), KILN_OK);
    cr_expect_geq(st.param_bytes, (size_t)(3 * 64 + 2 * 64 + 64), "P %zu", st.param_bytes);
    /* a step changes them; reset_state (the optimizer's) leaves them */
    double xv[24];
    for (int i = 0; i < 24; i++) xv[i] = 0.25 * i - 2;
    put(p, "x", xv, 24);
    hparams_zero(p);
    run(p, "train_step");
    double *a = get(p, "bn0.running_var", NULL), *nb = get(p, "bn0.num_batches_tracked", NULL);
    cr_expect_neq(a[0], 1.0);
    cr_expect_eq(nb[0], 1.0);
    cr_assert_eq(kiln_program_reset_state(p), KILN_OK);
    double *b = get(p, "bn0.running_var", NULL);
    for (int c = 0; c < 3; c++) cr_expect_eq(a[c], b[c]);
    free(a);
    free(b);
    free(nb);
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(norm, checkpoint_round_trip)
{
    arr x1 = golden("bn2d", "x1"), x2 = golden("bn2d", "x2");
    kiln_graph *g = bn_graph(x1.rank, x1.shape);
    kiln_program *p = compile(g, KILN_BACKEND_C, 1);
    cr_assert_eq(kiln_program_init_params(p, 5), KILN_OK);
    hparams_zero(p);
    put(p, "x", x1.v, x1.n);
    run(p, "train_step");
    put(p, "x", x2.v, x2.n);
    run(p, "train_step");
    char path[512];
    snprintf(path, sizeof path, "%s/bn.safetensors", tmp);
    char *err = NULL;
    cr_assert_eq(kiln_save(p, path, 0, &err), KILN_OK, "%s", err);
    /* PyTorch's names, next to the weights; no optimizer state */
    kiln_safetensors *st;
    cr_assert_eq(kiln_safetensors_open(path, &st, &err), KILN_OK, "%s", err);
    const char *want[] = {"bn0.weight", "bn0.bias", "bn0.running_mean", "bn0.running_var",
                          "bn0.num_batches_tracked", "x"};
    for (int i = 0; i < 6; i++)
        cr_expect_geq(kiln_safetensors_find(st, want[i]), 0, "'%s' is not in the file", want[i]);
    cr_expect_lt(kiln_safetensors_find(st, "x.momentum_buffer"), 0);
    cr_expect_eq(kiln_safetensors_count(st), 6);
    const kiln_st_info *nbt = kiln_safetensors_info(st, kiln_safetensors_find(st, "bn0.num_batches_tracked"));
    cr_expect_eq(nbt->dtype, KILN_I64);
    cr_expect_eq(nbt->rank, 0);
    kiln_safetensors_close(st);

    kiln_program *q = compile(g, KILN_BACKEND_C, 1);
    cr_assert_eq(kiln_program_init_params(q, 9), KILN_OK);
    cr_assert_eq(kiln_load(q, path, 0, 1, &err), KILN_OK, "%s", err);
    const char *names[] = {"bn0.running_mean", "bn0.running_var", "bn0.num_batches_tracked",
                           "bn0.weight"};
    for (int k = 0; k < 4; k++) {
        int64_t n;
        double *a = get(p, names[k], &n), *b = get(q, names[k], NULL);
        for (int64_t i = 0; i < n; i++) cr_expect_eq(a[i], b[i], "%s[%lld]", names[k], (long long)i);
        free(a);
        free(b);
    }
    /* the evaluation output follows */
    put(p, "x", x1.v, x1.n);
    put(q, "x", x1.v, x1.n);
    run(p, "forward");
    run(q, "forward");
    int64_t n;
    double *a = get(p, "y", &n), *b = get(q, "y", NULL);
    for (int64_t i = 0; i < n; i++) cr_expect_eq(a[i], b[i]);
    free(a);
    free(b);
    /* a file without the running statistics is incomplete under strict */
    snprintf(path, sizeof path, "%s/partial.safetensors", tmp);
    {
        kiln_graph *g2 = kiln_graph_new("nobn");
        kiln_value x = kiln_param(g2, "x", KILN_F32, x1.rank, x1.shape, KILN_INIT_ZEROS, 0);
        kiln_value y = kiln_relu(g2, x);
        kiln_set_output(g2, y, "y");
        kiln_set_loss(g2, kiln_reduce_sum(g2, y, 0, NULL, 0), "loss");
        kiln_program *r = compile(g2, KILN_BACKEND_REF, 1);
        cr_assert_eq(kiln_save(r, path, 0, &err), KILN_OK, "%s", err);
        kiln_program_free(r);
        kiln_graph_free(g2);
    }
    cr_expect_eq(kiln_load(q, path, 0, 1, &err), KILN_ERR_NOT_FOUND);
    cr_expect(err && strstr(err, "bn0.running_mean"), "%s", err ? err : "(no message)");
    free(err);
    kiln_program_free(p);
    kiln_program_free(q);
    kiln_graph_free(g);
    free(x1.v);
    free(x2.v);
}

/* ---- fusion ---- */

/* Whether node x's value (through inlined nodes) is read by m. */
static bool reaches(const kiln_graph *g, const kiln_fuse_plan *f, int32_t m, int32_t x, int depth)
{
    const kiln_node *n = &g->nodes[m];
    for (int j = 0; j < n->ninputs && depth < 64; j++) {
        int32_t s = n->inputs[j];
        if (s == x) return true;
        if (f->fate[s] == KILN_FATE_INLINE && reaches(g, f, s, x, depth + 1)) return true;
    }
    return false;
}

/* batchnorm + relu on x [8, 16, 12, 12]: train_step's kernels reading x. */
Test(norm, batchnorm_relu_fuses)
{
    int64_t s[4] = {8, 16, 12, 12};
    kiln_graph *g = kiln_graph_new("bnrelu");
    kiln_value x = kiln_param(g, "x", KILN_F32, 4, s, KILN_INIT_ZEROS, 0);
    kiln_value gi = kiln_input(g, "g", KILN_F32, 4, s);
    kiln_value y = kiln_relu(g, kiln_batchnorm(g, x, 0.1, 1e-5, "bn0"));
    kiln_set_loss(g, kiln_reduce_sum(g, kiln_mul(g, y, gi), 0, NULL, 0), "loss");
    kiln_train_options o = kiln_train_defaults();
    o.optimizer = KILN_OPT_SGD;
    kiln_graph *t;
    cr_assert_eq(kiln_train_program(g, &o, &t), KILN_OK, "%s", kiln_graph_error(g));
    kiln_value tx = kiln_graph_find(t, "x");
    kiln_fuse_plan *f;
    cr_assert_eq(kiln_fuse(t, NULL, &f), KILN_OK);
    int fwd = 0, bwd = 0;
    int32_t stats = -1;
    for (int32_t i = 0; i < t->nnodes; i++)
        if (t->nodes[i].op == KILN_OP_BATCHNORM_STATS) stats = i;
    cr_assert_geq(stats, 0);
    for (int32_t k = 0; k < f->nkernels; k++) {
        bool reads = false, backward = false;
        for (int32_t gi2 = 0; gi2 < f->ngroups; gi2++) {
            const kiln_fgroup *gr = &f->groups[gi2];
            if (gr->kernel != k) continue;
            for (int32_t m = 0; m < gr->nmembers; m++) {
                reads |= reaches(t, f, gr->members[m], tx, 0);
                /* the backward's nodes come after the loss */
                backward |= gr->members[m] > kiln_graph_find_role(t, KILN_ROLE_LOSS);
            }
        }
        if (reads) {
            if (backward) bwd++;
            else fwd++;
        }
    }
    /* forward: the statistics, then normalise + relu (here inlined into the
     * loss's sum); backward: relu's gradient dy (stored; the normalised
     * value recomputed from x), batchnorm_sums' sum(dy) and sum(dy (x -
     * mean)) in one pass, and dx (with x's SGD update) */
    cr_expect_eq(fwd, 2, "%d forward kernels read x", fwd);
    cr_expect_eq(bwd, 3, "%d backward kernels read x", bwd);
    kiln_fuse_plan_free(f);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

/* ---- dropout ---- */

#define DR_N 64
#define DR_C 256

/* x (input) * w (param, ones) -> dropout(p) "drop" [-> dropout "drop2"] -> y;
 * loss = sum(y * g). */
static kiln_graph *dropout_graph(double p, bool two)
{
    int64_t s[2] = {DR_N, DR_C};
    kiln_graph *g = kiln_graph_new("drop");
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, s);
    kiln_value gi = kiln_input(g, "g", KILN_F32, 2, s);
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, s + 1, KILN_INIT_ONES, 0);
    kiln_value h = kiln_mul(g, x, w);
    kiln_value y = kiln_dropout(g, h, p, "drop");
    cr_assert_geq(y, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_value loss = kiln_reduce_sum(g, kiln_mul(g, y, gi), 0, NULL, 0);
    if (two) {
        kiln_value y2 = kiln_dropout(g, h, p, "drop2");
        cr_assert_eq(kiln_set_output(g, y2, "y2"), KILN_OK);
        loss = kiln_add(g, loss, kiln_reduce_sum(g, y2, 0, NULL, 0));
    }
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK);
    return g;
}

static double *dropout_step(kiln_program *p, double step, const char *out)
{
    cr_assert_eq(kiln_program_set_hparam(p, "step", step), KILN_OK, "%s", kiln_program_error(p));
    run(p, "train_step");
    return get(p, out, NULL);
}

static void dropout_inputs(kiln_program *p, double *xv, double *gv)
{
    for (int i = 0; i < DR_N * DR_C; i++) {
        xv[i] = 1.0 + (i % 7) * 0.125;
        gv[i] = (i % 5) - 2.0;
    }
    put(p, "x", xv, DR_N * DR_C);
    put(p, "g", gv, DR_N * DR_C);
    cr_assert_eq(kiln_program_init_params(p, 0), KILN_OK);
    hparams_zero(p);
}

Test(norm, dropout_masks_and_scale)
{
    const double p = 0.25;
    kiln_graph *g = dropout_graph(p, false);
    kiln_program *prog = compile(g, KILN_BACKEND_C, 2);
    static double xv[DR_N * DR_C], gv[DR_N * DR_C];
    dropout_inputs(prog, xv, gv);
    double *a = dropout_step(prog, 1, "y"), *b = dropout_step(prog, 2, "y");
    double *gw = get(prog, "grad.w", NULL);
    double *c = dropout_step(prog, 1, "y");
    int64_t n = DR_N * DR_C, kept = 0, differ = 0;
    float scale = (float)(1.0 / (1.0 - p));
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(a[i], c[i], "step 1 twice: element %lld differs", (long long)i);
        if (a[i] != 0) {
            kept++;
            cr_assert_eq((float)a[i], (float)xv[i] * scale, "element %lld: %.9g", (long long)i, a[i]);
        }
        differ += (a[i] != 0) != (b[i] != 0);
    }
    /* kept ~ Binomial(n, 1 - p): mean 12288, sd 55.4; 6 sd either side */
    double mean = n * (1 - p), sd = sqrt(n * p * (1 - p));
    cr_expect(fabs((double)kept - mean) < 6 * sd, "kept %lld of %lld (expected %.0f)", (long long)kept,
              (long long)n, mean);
    /* two independent masks disagree on 2 p (1 - p) of the elements */
    double dm = n * 2 * p * (1 - p), dsd = sqrt(n * 2 * p * (1 - p) * (1 - 2 * p * (1 - p)));
    cr_expect(fabs((double)differ - dm) < 6 * dsd, "steps 1 and 2 differ at %lld (expected %.0f)",
              (long long)differ, dm);
    /* the gradient of w (step 2's) flows through step 2's mask:
     * dL/dw_j = sum_i g_ij * mask_ij * scale * x_ij = sum_i g_ij * y_ij / w_j */
    for (int j = 0; j < DR_C; j++) {
        double s = 0;
        for (int i = 0; i < DR_N; i++) s += gv[i * DR_C + j] * b[i * DR_C + j];
        cr_expect(fabs(gw[j] - s) <= 1e-4 * (1 + fabs(s)), "grad.w[%d] %.9g, expected %.9g", j,
                  gw[j], s);
    }
    /* evaluation: the identity */
    run(prog, "forward");
    double *e = get(prog, "y", NULL);
    for (int64_t i = 0; i < n; i++) cr_assert_eq((float)e[i], (float)xv[i]);
    free(a);
    free(b);
    free(c);
    free(gw);
    free(e);
    kiln_program_free(prog);
    kiln_graph_free(g);
}

/* The reference, generated C, LLVM and the kernel-IR evaluator keep the same
 * elements; two layers draw two masks. */
Test(norm, dropout_same_bits_everywhere)
{
    kiln_graph *g = dropout_graph(0.5, true);
    kiln_backend bes[3] = {KILN_BACKEND_REF, KILN_BACKEND_C, KILN_BACKEND_LLVM};
    double *ref = NULL, *ref2 = NULL;
    static double xv[DR_N * DR_C], gv[DR_N * DR_C];
    int64_t n = DR_N * DR_C;
    for (int k = 0; k < 3; k++) {
        if (bes[k] == KILN_BACKEND_LLVM && !have_llvm()) continue;
        kiln_program *p = compile(g, bes[k], 2);
        dropout_inputs(p, xv, gv);
        double *y = dropout_step(p, 12345, "y"), *y2 = get(p, "y2", NULL);
        if (!ref) {
            ref = y;
            ref2 = y2;
            int64_t same = 0;
            for (int64_t i = 0; i < n; i++) same += (y[i] != 0) == (y2[i] != 0);
            cr_expect_lt(same, n * 3 / 5, "two layers' masks agree at %lld of %lld",
                         (long long)same, (long long)n);
        } else {
            for (int64_t i = 0; i < n; i++) {
                cr_assert_eq(y[i], ref[i], "%s: element %lld", backend_name(bes[k]), (long long)i);
                cr_assert_eq(y2[i], ref2[i], "%s: y2 element %lld", backend_name(bes[k]),
                             (long long)i);
            }
            free(y);
            free(y2);
        }
        kiln_program_free(p);
    }
    /* the kernel of one dropout node, on the evaluator */
    int32_t d = -1;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == KILN_OP_DROPOUT && d < 0) d = i;
    cr_assert_geq(d, 0);
    kiln_kernel *k;
    char err[512];
    cr_assert_eq(kiln_lower_node(g, d, &k, err, sizeof err), KILN_OK, "%s", err);
    keval e;
    cr_assert(keval_init(&e, k));
    keval_typecheck(&e);
    cr_assert_str_empty(e.err, "%s", e.err);
    for (int32_t b = 0; b < k->nbufs; b++) {
        if (k->bufs[b].node == g->nodes[d].inputs[1]) e.buf[b][0] = 12345;
        else if (k->bufs[b].node == g->nodes[d].inputs[0])
            for (int64_t i = 0; i < e.len[b]; i++) e.buf[b][i] = (double)(float)xv[i]; /* w = 1 */
    }
    cr_assert_eq(keval_run(&e), 0);
    cr_assert_str_empty(e.err, "%s", e.err);
    for (int32_t b = 0; b < k->nbufs; b++)
        if (k->bufs[b].node == d)
            for (int64_t i = 0; i < n; i++)
                cr_assert_eq(e.buf[b][i] != 0, ref[i] != 0, "evaluator: element %lld", (long long)i);
    keval_fini(&e);
    kiln_kernel_free(k);
    free(ref);
    free(ref2);
    kiln_graph_free(g);
}

/* The Learner's SGD sets `step` too (not only AdamW's): dropout gets a new
 * mask each step; the hash is SplitMix64 (its published first output). */
Test(norm, hash_is_splitmix64)
{
    /* SplitMix64 seeded with 0: first output 0xE220A8397B1DCDAF */
    cr_expect_eq(kiln_kx_hash_value(0, 1), (int64_t)(0xE220A8397B1DCDAFull >> 33));
    cr_expect_neq(kiln_kx_hash_value(7, 1), kiln_kx_hash_value(7, 2));
    cr_expect_geq(kiln_kx_hash_value(-1, INT64_MAX), 0);
}

/* ---- the model language ---- */

Test(norm, model_language_layers)
{
    const char *text = "model bnmodel\n"
                       "input x: f32[B, 3, 4, 4]\n"
                       "target y: i32[B]\n"
                       "h = relu(batchnorm(x))\n"
                       "h = batchnorm(h, momentum=0.2, name=\"bn\")\n"
                       "h = dropout(flatten(h), p=0.25)\n"
                       "h = batchnorm(linear(h, 8))\n"
                       "out = linear(dropout(h), 5)\n"
                       "loss = cross_entropy(out, y)\n";
    kiln_graph *g;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(text, "bn.kiln", 4, &g, &err), KILN_OK, "%s", err);
    const char *names[] = {"batchnorm0.weight", "batchnorm0.bias", "batchnorm0.running_mean",
                           "batchnorm0.running_var", "batchnorm0.num_batches_tracked",
                           "bn.weight", "bn.running_var", "batchnorm2.running_mean", "step"};
    for (int i = 0; i < 9; i++) cr_expect_geq(kiln_graph_find(g, names[i]), 0, "no '%s'", names[i]);
    cr_expect_eq(count_op(g, KILN_OP_DROPOUT), 2);
    cr_expect_eq(count_op(g, KILN_OP_TRAIN_EVAL), 5);
    /* two dropout layers, two seeds; p as given */
    int64_t seeds[2];
    int nd = 0;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == KILN_OP_DROPOUT) {
            if (nd == 0) cr_expect_eq(kiln_attr_get_float(&g->nodes[i], "p"), 0.25);
            seeds[nd++] = kiln_attr_get_int(&g->nodes[i], "seed");
        }
    cr_expect_neq(seeds[0], seeds[1]);
    /* it trains: a step on the C backend */
    kiln_program *p = compile(g, KILN_BACKEND_C, 1);
    cr_assert_eq(kiln_program_init_params(p, 1), KILN_OK);
    run(p, "train_step");
    run(p, "eval_step");
    kiln_program_free(p);
    kiln_graph_free(g);
    free(err);
}

/* ---- AOT ---- */

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(norm, aot_reads_running_statistics)
{
    int64_t s[4] = {4, 3, 6, 6};
    kiln_graph *g = kiln_graph_new("bnnet");
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, s);
    kiln_value h = kiln_relu(g, kiln_batchnorm(g, x, 0.1, 1e-5, "bn0"));
    kiln_value out = kiln_linear(g, kiln_flatten(g, h, 1), 5, 1, "fc");
    cr_assert_eq(kiln_set_output(g, out, "logits"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_program *p = compile(g, KILN_BACKEND_C, 1);
    cr_assert_eq(kiln_program_init_params(p, 11), KILN_OK);
    double rm[3] = {0.5, -1, 2}, rv[3] = {4, 0.25, 1.5}, xv[4 * 3 * 36];
    put(p, "bn0.running_mean", rm, 3);
    put(p, "bn0.running_var", rv, 3);
    for (int i = 0; i < 4 * 3 * 36; i++) xv[i] = sin(0.37 * i) * 2;
    put(p, "x", xv, 4 * 3 * 36);
    run(p, "forward");
    double *want = get(p, "logits", NULL);
    char ckpt[512], outp[512], cmd[2048];
    snprintf(ckpt, sizeof ckpt, "%s/bnnet.safetensors", tmp);
    char *err = NULL;
    cr_assert_eq(kiln_save(p, ckpt, 0, &err), KILN_OK, "%s", err);
    snprintf(outp, sizeof outp, "%s/bnnet", tmp);
    kiln_aot_options o = kiln_aot_defaults();
    o.emit = KILN_AOT_LIB;
    o.out = outp;
    o.weights = ckpt;
    cr_assert_eq(kiln_aot_compile(g, &o, &err), KILN_OK, "%s", err);
    /* a driver: x from a raw file, the logits to another */
    char drv[512];
    snprintf(drv, sizeof drv, "%s/drv.c", tmp);
    FILE *f = fopen(drv, "w");
    cr_assert_not_null(f);
    fprintf(f, "#include \"bnnet.h\"\n#include <stdio.h>\n#include <stdlib.h>\n"
               "int main(void) {\n"
               "  void *P = aligned_alloc(bnnet_ALIGN, bnnet_WEIGHTS_BYTES);\n"
               "  void *A = aligned_alloc(bnnet_ALIGN, bnnet_ACTIVATION_BYTES);\n"
               "  char err[256];\n"
               "  if (bnnet_load_weights_file(P, \"%s.weights\", err, sizeof err)) { puts(err); return 1; }\n"
               "  static float x[bnnet_NUMEL_x], y[bnnet_NUMEL_logits];\n"
               "  FILE *in = fopen(\"%s/x.raw\", \"rb\");\n"
               "  if (!in || fread(x, sizeof x, 1, in) != 1) return 2;\n"
               "  fclose(in);\n"
               "  bnnet_inputs i = {.x = x}; bnnet_outputs o = {.logits = y};\n"
               "  if (bnnet_forward(P, A, &i, &o)) return 3;\n"
               "  FILE *out = fopen(\"%s/y.raw\", \"wb\");\n"
               "  fwrite(y, sizeof y, 1, out); fclose(out); return 0;\n}\n",
            outp, tmp, tmp);
    fclose(f);
    float xf[4 * 3 * 36];
    for (int i = 0; i < 4 * 3 * 36; i++) xf[i] = (float)xv[i];
    char raw[512];
    snprintf(raw, sizeof raw, "%s/x.raw", tmp);
    f = fopen(raw, "wb");
    fwrite(xf, sizeof xf, 1, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cc -O1 -I%s -o %s/drv %s %s.o -lm && %s/drv", tmp, tmp, drv, outp,
             tmp);
    cr_assert_eq(sh(cmd), 0, "%s", cmd);
    snprintf(raw, sizeof raw, "%s/y.raw", tmp);
    f = fopen(raw, "rb");
    float yf[4 * 5];
    cr_assert_eq(fread(yf, sizeof yf, 1, f), 1);
    fclose(f);
    for (int i = 0; i < 20; i++)
        cr_expect(fabs(yf[i] - want[i]) <= 1e-5 + 1e-5 * fabs(want[i]), "logit %d: %.9g, forward %.9g",
                  i, yf[i], want[i]);
    free(want);
    free(err);
    kiln_program_free(p);
    kiln_graph_free(g);
}

/* ---- the Learner ---- */

/* x [B, 4] -> linear(8) -> batchnorm -> relu -> dropout(0.25) -> linear(2)
 * -> cross_entropy. */
static kiln_graph *learner_graph(int64_t batch)
{
    int64_t xs[2] = {batch, 4}, ys[1] = {batch};
    kiln_graph *g = kiln_graph_new("bnlearn");
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_relu(g, kiln_batchnorm(g, kiln_linear(g, x, 8, 1, "fc0"), 0.1, 1e-5, "bn0"));
    kiln_value out = kiln_linear(g, kiln_dropout(g, h, 0.25, "drop"), 2, 1, "fc1");
    cr_assert_eq(kiln_set_loss(g, kiln_cross_entropy(g, out, y), "loss"), KILN_OK, "%s",
                 kiln_graph_error(g));
    return g;
}

/* The Learner sets `step` for SGD too (dropout's masks), and the validation
 * set's tail program gets the running statistics with the weights. */
Test(norm, learner_feeds_step_and_running_stats)
{
    enum { NT = 40, NV = 10, B = 8 };
    float xt[NT * 4], xv[NV * 4];
    int32_t yt[NT], yv[NV];
    for (int i = 0; i < NT + NV; i++) {
        float *x = i < NT ? xt + 4 * i : xv + 4 * (i - NT);
        int32_t c = (i * 7) % 2;
        for (int k = 0; k < 4; k++) x[k] = (float)(sin(1.3 * i + k) + (c ? 1.5 : -1.5) * (k < 2));
        if (i < NT) yt[i] = c;
        else yv[i - NT] = c;
    }
    int64_t sxt[2] = {NT, 4}, sxv[2] = {NV, 4}, syt[1] = {NT}, syv[1] = {NV};
    kiln_dataset *dt, *dv;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_from_arrays(xt, 2, sxt, yt, KILN_I32, 1, syt, &dt, &err), KILN_OK,
                 "%s", err);
    cr_assert_eq(kiln_dataset_from_arrays(xv, 2, sxv, yv, KILN_I32, 1, syv, &dv, &err), KILN_OK,
                 "%s", err);
    kiln_graph *gm = learner_graph(B), *gt = learner_graph(NV % B);
    kiln_program *pm = compile(gm, KILN_BACKEND_C, 1), *pt = compile(gt, KILN_BACKEND_C, 1);
    kiln_learner_options o = kiln_learner_defaults();
    o.init_params = 1;
    o.print_table = 0;
    o.valid_tail = pt;
    o.wd = 0;
    kiln_learner *l;
    cr_assert_eq(kiln_learner_new(pm, dt, dv, &o, &l, &err), KILN_OK, "%s", err);
    cr_assert_eq(kiln_fit(l, 2, 0.05), KILN_OK, "%s", kiln_learner_error(l));
    double *step = get(pm, "step", NULL);
    cr_expect_eq(step[0], (double)(2 * (NT / B)), "step %g after %d steps", step[0], 2 * (NT / B));
    free(step);
    double vl;
    cr_assert_eq(kiln_learner_validate(l, &vl, NULL), KILN_OK, "%s", kiln_learner_error(l));
    cr_expect(isfinite(vl), "valid loss %g", vl);
    const char *names[] = {"bn0.running_mean", "bn0.running_var", "fc0.weight"};
    for (int k = 0; k < 3; k++) {
        int64_t n;
        double *a = get(pm, names[k], &n), *b = get(pt, names[k], NULL);
        for (int64_t i = 0; i < n; i++) cr_expect_eq(a[i], b[i], "%s[%lld]", names[k], (long long)i);
        free(a);
        free(b);
    }
    double *rv = get(pm, "bn0.running_var", NULL);
    cr_expect_neq(rv[0], 1.0, "the running variance never moved");
    free(rv);
    kiln_learner_free(l);
    kiln_program_free(pm);
    kiln_program_free(pt);
    kiln_graph_free(gm);
    kiln_graph_free(gt);
    kiln_dataset_free(dt);
    kiln_dataset_free(dv);
}
