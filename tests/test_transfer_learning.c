/* tests/test_transfer_learning.c — fastai's transfer-learning controls:
 * parameter groups (the model language's `group`, kiln_set_param_group),
 * discriminative learning rates (slice(lo, hi) as fastai's even_mults; the
 * training program's lr_mult.<k>), freezing (frozen groups' parameters and
 * optimizer state bit-identical, train_bn, unfreeze), fine_tune, loading
 * another model's weights by name and shape (kiln_load_matching), and the
 * CLI's --lr LO:HI, --freeze-to, --freeze-epochs and --init-from. */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A body (linear, batchnorm) and a head in a group of its own. */
static const char *grouped = "model tl\n"
                             "input x: f32[B, 6]\n"
                             "target y: i32[B]\n"
                             "h = relu(linear(x, 8))\n"
                             "h = batchnorm(h)\n"
                             "group head\n"
                             "out = linear(h, 3)\n"
                             "loss = cross_entropy(out, y)\n"
                             "metric accuracy(out, y)\n";

/* The same model without groups. */
static const char *plain = "model tl\n"
                           "input x: f32[B, 6]\n"
                           "target y: i32[B]\n"
                           "h = relu(linear(x, 8))\n"
                           "h = batchnorm(h)\n"
                           "out = linear(h, 3)\n"
                           "loss = cross_entropy(out, y)\n"
                           "metric accuracy(out, y)\n";

static kiln_graph *parse(const char *text, int64_t batch)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_parse(text, "t.kiln", batch, &g, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    return g;
}

static char *parse_error(const char *text)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_neq(kiln_model_parse(text, "t.kiln", 4, &g, &err), KILN_OK);
    cr_assert_null(g);
    cr_assert_not_null(err);
    return err;
}

static int group_of(const kiln_graph *g, const char *name)
{
    kiln_value v = kiln_graph_find(g, name);
    cr_assert_geq(v, 0, "no '%s'", name);
    return kiln_param_group(g, v);
}

static kiln_program *compile(const char *text, kiln_backend be, kiln_optimizer opt)
{
    kiln_graph *g = parse(text, 8);
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = 1;
    o.train.optimizer = opt;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    kiln_graph_free(g);
    return p;
}

/* ---- groups in the model language and the C API ---------------------------- */

Test(transfer_learning, groups_from_the_model_language)
{
    kiln_graph *g = parse(grouped, 4);
    cr_assert_eq(kiln_graph_num_param_groups(g), 2);
    cr_assert_eq(group_of(g, "linear0.weight"), 0);
    cr_assert_eq(group_of(g, "linear0.bias"), 0);
    cr_assert_eq(group_of(g, "batchnorm0.weight"), 0);
    cr_assert_eq(group_of(g, "linear1.weight"), 1);
    cr_assert_eq(group_of(g, "linear1.bias"), 1);
    kiln_graph_free(g);

    /* named from the start, a name given again returns to its group, block
     * calls take the group of their call, `group` stays a usable name */
    g = parse("model m\ninput x: f32[B, 4]\n"
              "block f(x) {\n  return relu(linear(x, 4))\n}\n"
              "group stem\nh = f(x)\ngroup body\nh = linear(h, 4)\n"
              "group head\nout = linear(h, 2)\ngroup body\nh2 = linear(out, 4)\n"
              "group = relu(h2)\noutput group\n",
              4);
    cr_assert_eq(kiln_graph_num_param_groups(g), 3);
    cr_assert_eq(group_of(g, "f0.linear0.weight"), 0);
    cr_assert_eq(group_of(g, "linear0.weight"), 1);
    cr_assert_eq(group_of(g, "linear1.weight"), 2);
    cr_assert_eq(group_of(g, "linear2.bias"), 1);
    kiln_graph_free(g);

    /* no group statement: one group */
    g = parse(plain, 4);
    cr_assert_eq(kiln_graph_num_param_groups(g), 1);
    cr_assert_eq(group_of(g, "linear1.weight"), 0);
    kiln_graph_free(g);

    char *e = parse_error("model m\ninput x: f32[B, 4]\ngroup a\ngroup b\nh = linear(x, 2)\n");
    cr_assert(strstr(e, "t.kiln:3:7: error: parameter group 'a' has no parameters"), "%s", e);
    free(e);
    e = parse_error("model m\ninput x: f32[B, 4]\nblock f(x) {\n  group a\n  return x\n}\n");
    cr_assert(strstr(e, "'group' is only allowed at the top level"), "%s", e);
    free(e);
}

Test(transfer_learning, groups_from_the_c_api)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    cr_assert_eq(kiln_graph_num_param_groups(g), 1);
    kiln_value w = kiln_graph_find(g, "fc2.weight"), x = kiln_graph_find(g, "x");
    cr_assert_eq(kiln_set_param_group(g, w, 1), KILN_OK);
    cr_assert_eq(kiln_param_group(g, w), 1);
    cr_assert_eq(kiln_graph_num_param_groups(g), 2);
    cr_assert_eq(kiln_set_param_group(g, x, 1), KILN_ERR_INVALID);
    cr_assert(strstr(kiln_graph_error(g), "not a parameter"), "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_param_group(g, w, KILN_MAX_PARAM_GROUPS), KILN_ERR_INVALID);
    /* the group survives into the training program's hyperparameters */
    kiln_graph *t = NULL;
    cr_assert_eq(kiln_train_program(g, NULL, &t), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_geq(kiln_graph_find(t, "lr_mult.1"), 0);
    cr_assert_geq(kiln_graph_find(t, "frozen.0"), 0);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

/* One group: the training program is byte for byte the one without groups;
 * two: it has the per-group hyperparameters, and kiln_tensor_info.group. */
Test(transfer_learning, one_group_program_unchanged)
{
    kiln_graph *a = parse(plain, 4);
    char t[1024];
    /* before any parameter, ending a line, so the source positions stay */
    int at = (int)(strstr(plain, "\nh = relu") - plain);
    snprintf(t, sizeof t, "%.*s; group all%s", at, plain, plain + at);
    kiln_graph *b = parse(t, 4);
    kiln_graph *ta = NULL, *tb = NULL;
    cr_assert_eq(kiln_train_program(a, NULL, &ta), KILN_OK);
    cr_assert_eq(kiln_train_program(b, NULL, &tb), KILN_OK);
    char *sa = kiln_graph_to_string(ta), *sb = kiln_graph_to_string(tb);
    cr_assert_str_eq(sa, sb);
    cr_assert_null(strstr(sa, "lr_mult"));
    cr_assert_null(strstr(sa, "frozen"));
    free(sa);
    free(sb);
    kiln_graph_free(ta);
    kiln_graph_free(tb);
    kiln_graph_free(a);
    kiln_graph_free(b);

    kiln_program *p = compile(grouped, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    int seen = 0;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info ti;
        kiln_program_tensor(p, i, &ti);
        if (ti.role != KILN_ROLE_PARAM) continue;
        cr_assert_eq(ti.group, !strncmp(ti.name, "linear1.", 8) ? 1 : 0, "%s", ti.name);
        seen++;
    }
    cr_assert_eq(seen, 6);
    const char *hp[] = {"lr_mult.0", "lr_mult.1", "frozen.0", "frozen.1", "frozen_bn.0"};
    for (size_t k = 0; k < sizeof hp / sizeof hp[0]; k++)
        cr_assert_not_null(kiln_program_data(p, hp[k], NULL), "%s", hp[k]);
    float *m = kiln_program_data(p, "lr_mult.1", NULL);
    cr_assert_eq(*m, 1.0f); /* multipliers start at 1 */
    kiln_program_free(p);
}

/* ---- discriminative learning rates ----------------------------------------- */

Test(transfer_learning, lr_slice_is_fastais_even_mults)
{
    /* fastai's even_mults(start, stop, n) = [start * step**i], step =
     * (stop/start)**(1/(n-1)), as Python computes it */
    struct {
        double lo, hi;
        int n;
        double want[5];
    } c[] = {
        {1e-4, 1e-2, 3, {0.0001, 0.001, 0.01}},
        {1e-5, 1e-3, 4, {1e-05, 4.641588833612779e-05, 0.00021544346900318834, 0.0009999999999999998}},
        {2e-5, 2e-3, 5, {2e-05, 6.324555320336759e-05, 0.00020000000000000006, 0.0006324555320336761,
                         0.002000000000000001}},
        {3e-4, 1e-3, 2, {0.0003, 0.001}},
        {3e-4, 1e-3, 1, {0.001}},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        double lrs[5];
        cr_assert_eq(kiln_lr_slice(c[k].lo, c[k].hi, c[k].n, lrs), KILN_OK);
        for (int i = 0; i < c[k].n; i++)
            cr_assert_eq(lrs[i], c[k].want[i], "case %zu, group %d: %.17g, want %.17g", k, i,
                         lrs[i], c[k].want[i]);
    }
    /* slice(hi): hi/10 for every group but the last */
    double lrs[3];
    cr_assert_eq(kiln_lr_slice(0, 1e-3, 3, lrs), KILN_OK);
    cr_assert_eq(lrs[0], 1e-3 / 10);
    cr_assert_eq(lrs[1], 1e-3 / 10);
    cr_assert_eq(lrs[2], 1e-3);
    cr_assert_eq(kiln_lr_slice(1e-4, NAN, 3, lrs), KILN_ERR_INVALID);
    cr_assert_eq(kiln_lr_slice(1e-4, 1e-3, 0, lrs), KILN_ERR_INVALID);
}

/* Fills the program's batch and sets the AdamW/SGD hyperparameters. */
static void feed(kiln_program *p, double lr)
{
    float *x = kiln_program_data(p, "x", NULL);
    int32_t *y = kiln_program_data(p, "y", NULL);
    cr_assert(x && y);
    for (int i = 0; i < 8 * 6; i++) x[i] = (float)sin(i * 0.71 + 0.3);
    for (int i = 0; i < 8; i++) y[i] = (i * 7) % 3;
    cr_assert_eq(kiln_program_set_hparam(p, "lr", lr), KILN_OK);
    kiln_program_set_hparam(p, "mom", 0.9);
    kiln_program_set_hparam(p, "beta2", 0.99);
    kiln_program_set_hparam(p, "eps", 1e-5);
    kiln_program_set_hparam(p, "wd", 0.01);
    kiln_program_set_hparam(p, "step", 1);
}

static bool same_bytes(kiln_program *a, kiln_program *b, const char *name)
{
    kiln_tensor_info ia, ib;
    void *pa = kiln_program_data(a, name, &ia), *pb = kiln_program_data(b, name, &ib);
    cr_assert(pa && pb && ia.bytes == ib.bytes, "%s", name);
    return memcmp(pa, pb, ia.bytes) == 0;
}

/* One step with two groups at lrs a and b equals, per group, a one-group
 * step at that lr (reference interpreter: exact), for AdamW and SGD. */
static void two_lrs_equal_single_steps(kiln_optimizer opt)
{
    const double a = 3e-3, b = 7e-2;
    kiln_program *g2 = compile(grouped, KILN_BACKEND_REF, opt);
    kiln_program *pa = compile(plain, KILN_BACKEND_REF, opt);
    kiln_program *pb = compile(plain, KILN_BACKEND_REF, opt);
    kiln_program *progs[3] = {g2, pa, pb};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(kiln_program_init_params(progs[k], 7), KILN_OK);
        feed(progs[k], k == 0 ? 1.0 : k == 1 ? a : b);
    }
    cr_assert_eq(kiln_program_set_hparam(g2, "lr_mult.0", a), KILN_OK);
    cr_assert_eq(kiln_program_set_hparam(g2, "lr_mult.1", b), KILN_OK);
    for (int k = 0; k < 3; k++)
        cr_assert_eq(kiln_program_run(progs[k], "train_step"), KILN_OK, "%s",
                     kiln_program_error(progs[k]));
    int checked = 0;
    for (int i = 0; i < kiln_program_num_tensors(g2); i++) {
        kiln_tensor_info t;
        kiln_program_tensor(g2, i, &t);
        if (t.role != KILN_ROLE_PARAM && t.role != KILN_ROLE_STATE) continue;
        bool head = !strncmp(t.name, "linear1.", 8);
        cr_assert(same_bytes(g2, head ? pb : pa, t.name), "%s differs from the one-group step",
                  t.name);
        cr_assert(!same_bytes(g2, head ? pa : pb, t.name) || t.role == KILN_ROLE_STATE,
                  "%s does not depend on the lr", t.name);
        checked++;
    }
    cr_assert_geq(checked, 6);
    for (int k = 0; k < 3; k++) kiln_program_free(progs[k]);
}

Test(transfer_learning, discriminative_lrs_adamw) { two_lrs_equal_single_steps(KILN_OPT_ADAMW); }
Test(transfer_learning, discriminative_lrs_sgd) { two_lrs_equal_single_steps(KILN_OPT_SGD); }

/* ---- freezing through the learner ------------------------------------------ */

static kiln_dataset *data(int64_t n)
{
    float *x = malloc((size_t)n * 6 * sizeof *x);
    int32_t *y = malloc((size_t)n * sizeof *y);
    cr_assert(x && y);
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < 6; j++) x[i * 6 + j] = (float)sin((double)(i * 6 + j) * 0.37);
        y[i] = (int32_t)((i * 5) % 3);
    }
    int64_t xs[] = {n, 6}, ys[] = {n};
    kiln_dataset *d = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_from_arrays(x, 2, xs, y, KILN_I32, 1, ys, &d, &err), KILN_OK, "%s",
                 err ? err : "");
    free(x);
    free(y);
    return d;
}

typedef struct snap {
    int n;
    char *name[32];
    void *bytes[32];
    size_t len[32];
} snap;

/* Every PARAM and optimizer STATE tensor's bytes. */
static void take(kiln_program *p, snap *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        kiln_program_tensor(p, i, &t);
        if (t.role != KILN_ROLE_PARAM && !(t.role == KILN_ROLE_STATE && !t.model_state)) continue;
        cr_assert_lt(s->n, 32);
        s->name[s->n] = strdup(t.name);
        s->bytes[s->n] = malloc(t.bytes);
        memcpy(s->bytes[s->n], kiln_program_data(p, t.name, NULL), t.bytes);
        s->len[s->n++] = t.bytes;
    }
}

static void drop(snap *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->name[i]);
        free(s->bytes[i]);
    }
}

static bool unchanged(kiln_program *p, const snap *s, const char *name)
{
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], name))
            return memcmp(s->bytes[i], kiln_program_data(p, name, NULL), s->len[i]) == 0;
    cr_assert_fail("no snapshot of '%s'", name);
    return false;
}

static kiln_learner *learner(kiln_program *p, kiln_dataset *d, int train_bn)
{
    kiln_learner_options o = kiln_learner_defaults();
    o.print_table = 0;
    o.init_params = 1;
    o.seed = 3;
    o.train_bn = train_bn;
    kiln_learner *l = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_learner_new(p, d, NULL, &o, &l, &err), KILN_OK, "%s", err ? err : "");
    return l;
}

/* Body frozen (fastai's freeze()): its parameters and their optimizer state
 * keep every byte over a fit, the head trains; with train_bn the batchnorm
 * parameters train too; unfreezing resumes the body. */
static void freeze_case(kiln_backend be, kiln_optimizer opt, int train_bn)
{
    kiln_program *p = compile(grouped, be, opt);
    kiln_dataset *d = data(32);
    kiln_learner *l = learner(p, d, train_bn);
    cr_assert_eq(kiln_learner_num_groups(l), 2);
    cr_assert_eq(kiln_learner_freeze(l), KILN_OK, "%s", kiln_learner_error(l));
    cr_assert_eq(kiln_learner_frozen_groups(l), 1);
    /* a first, unfrozen step so the body's optimizer state is not zero */
    snap s0;
    take(p, &s0);
    cr_assert_eq(kiln_learner_unfreeze(l), KILN_OK);
    cr_assert_eq(kiln_fit(l, 1, 1e-2), KILN_OK, "%s", kiln_learner_error(l));
    cr_assert(!unchanged(p, &s0, "linear0.weight"));
    drop(&s0);

    cr_assert_eq(kiln_learner_freeze(l), KILN_OK);
    snap s;
    take(p, &s);
    cr_assert_eq(kiln_fit_one_cycle(l, 2, 1e-2), KILN_OK, "%s", kiln_learner_error(l));
    const char *body[] = {"linear0.weight", "linear0.bias"};
    const char *bn[] = {"batchnorm0.weight", "batchnorm0.bias"};
    const char *sfx[] = {"", ".exp_avg", ".exp_avg_sq", ".momentum_buffer"};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", body[i], sfx[k]);
            if (!kiln_program_data(p, name, NULL)) continue;
            cr_assert(unchanged(p, &s, name), "frozen '%s' changed", name);
            snprintf(name, sizeof name, "%s%s", bn[i], sfx[k]);
            if (!kiln_program_data(p, name, NULL)) continue;
            if (train_bn) cr_assert(!unchanged(p, &s, name), "'%s' did not train (train_bn)", name);
            else cr_assert(unchanged(p, &s, name), "frozen '%s' changed", name);
        }
    cr_assert(!unchanged(p, &s, "linear1.weight"), "the head did not train");
    cr_assert(!unchanged(p, &s, "linear1.bias"), "the head did not train");
    drop(&s);

    cr_assert_eq(kiln_learner_unfreeze(l), KILN_OK);
    cr_assert_eq(kiln_learner_frozen_groups(l), 0);
    take(p, &s);
    cr_assert_eq(kiln_fit(l, 1, 1e-2), KILN_OK, "%s", kiln_learner_error(l));
    cr_assert(!unchanged(p, &s, "linear0.weight"), "unfreeze did not resume the body");
    drop(&s);
    kiln_learner_free(l);
    kiln_dataset_free(d);
    kiln_program_free(p);
}

Test(transfer_learning, freeze_adamw_c, .timeout = 300) { freeze_case(KILN_BACKEND_C, KILN_OPT_ADAMW, 0); }
Test(transfer_learning, freeze_train_bn_adamw_c, .timeout = 300)
{
    freeze_case(KILN_BACKEND_C, KILN_OPT_ADAMW, 1);
}
/* SGD: the learner's own decoupled weight decay skips frozen parameters */
Test(transfer_learning, freeze_sgd_c, .timeout = 300) { freeze_case(KILN_BACKEND_C, KILN_OPT_SGD, 0); }
Test(transfer_learning, freeze_reference, .timeout = 300)
{
    freeze_case(KILN_BACKEND_REF, KILN_OPT_ADAMW, 1);
}
#if KILN_HAVE_LLVM
Test(transfer_learning, freeze_llvm, .timeout = 300) { freeze_case(KILN_BACKEND_LLVM, KILN_OPT_ADAMW, 0); }
#endif

Test(transfer_learning, freeze_to_counts_and_one_group)
{
    kiln_program *p = compile(plain, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    kiln_dataset *d = data(16);
    kiln_learner *l = learner(p, d, 1);
    cr_assert_eq(kiln_learner_num_groups(l), 1);
    cr_assert_eq(kiln_learner_freeze(l), KILN_OK); /* freeze_to(-1) of one group: nothing */
    cr_assert_eq(kiln_learner_frozen_groups(l), 0);
    cr_assert_eq(kiln_learner_freeze_to(l, 1), KILN_ERR_INVALID);
    cr_assert(strstr(kiln_learner_error(l), "one parameter group"), "%s", kiln_learner_error(l));
    kiln_learner_free(l);
    kiln_program_free(p);

    p = compile(grouped, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    l = learner(p, d, 0);
    cr_assert_eq(kiln_learner_freeze_to(l, 5), KILN_OK); /* everything, as fastai */
    cr_assert_eq(kiln_learner_frozen_groups(l), 2);
    float *f1 = kiln_program_data(p, "frozen.1", NULL), *fb = kiln_program_data(p, "frozen_bn.0", NULL);
    cr_assert_eq(*f1, 1.0f);
    cr_assert_eq(*fb, 1.0f);
    cr_assert_eq(kiln_learner_freeze_to(l, -5), KILN_OK);
    cr_assert_eq(kiln_learner_frozen_groups(l), 0);
    cr_assert_eq(*f1, 0.0f);
    kiln_learner_free(l);
    kiln_program_free(p);
    kiln_dataset_free(d);
}

/* fit_one_cycle with lr_lo: the program's lr multipliers are the groups'
 * slice lrs over max_lr; a plain fit resets them to 1. */
static int check_mults(kiln_learner *l, const kiln_batch_info *b, void *user)
{
    (void)b;
    const double *want = user;
    kiln_program *p = kiln_learner_program(l);
    float *m0 = kiln_program_data(p, "lr_mult.0", NULL), *m1 = kiln_program_data(p, "lr_mult.1", NULL);
    cr_assert_eq(*m0, (float)want[0]);
    cr_assert_eq(*m1, (float)want[1]);
    return 0;
}

Test(transfer_learning, one_cycle_lr_range)
{
    kiln_program *p = compile(grouped, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    kiln_dataset *d = data(16);
    kiln_learner *l = learner(p, d, 1);
    double want[2];
    kiln_callbacks cb = {.end_batch = check_mults, .user = want};
    cr_assert_eq(kiln_learner_add_callbacks(l, &cb), KILN_OK);
    kiln_one_cycle_options oc = kiln_one_cycle_defaults();
    oc.lr_lo = 1e-4;
    want[0] = 1e-4 / 1e-2;
    want[1] = 1.0;
    cr_assert_eq(kiln_fit_one_cycle_ex(l, 1, 1e-2, &oc), KILN_OK, "%s", kiln_learner_error(l));
    oc.lr_lo = -1; /* slice(hi) */
    want[0] = 0.1;
    cr_assert_eq(kiln_fit_one_cycle_ex(l, 1, 1e-2, &oc), KILN_OK, "%s", kiln_learner_error(l));
    want[0] = 1.0;
    cr_assert_eq(kiln_fit_one_cycle(l, 1, 1e-2), KILN_OK, "%s", kiln_learner_error(l));
    oc.lr_lo = 1.0; /* above max_lr */
    cr_assert_eq(kiln_fit_one_cycle_ex(l, 1, 1e-2, &oc), KILN_ERR_INVALID);
    kiln_learner_free(l);
    kiln_program_free(p);
    kiln_dataset_free(d);
}

/* fine_tune: a frozen stage then an unfrozen one at slice(lr/2/100, lr/2). */
typedef struct ft_seen {
    int frozen[8];
    double m0[8];
    int n;
} ft_seen;

static int ft_begin_epoch(kiln_learner *l, int64_t epoch, void *user)
{
    (void)epoch;
    ft_seen *s = user;
    float *m0 = kiln_program_data(kiln_learner_program(l), "lr_mult.0", NULL);
    s->frozen[s->n] = kiln_learner_frozen_groups(l);
    s->m0[s->n++] = *m0;
    return 0;
}

Test(transfer_learning, fine_tune)
{
    kiln_program *p = compile(grouped, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    kiln_dataset *d = data(16);
    kiln_learner *l = learner(p, d, 0);
    ft_seen seen = {0};
    kiln_callbacks cb = {.begin_epoch = ft_begin_epoch, .user = &seen};
    kiln_learner_add_callbacks(l, &cb);
    snap s;
    take(p, &s);
    kiln_fine_tune_options o = kiln_fine_tune_defaults();
    o.freeze_epochs = 1;
    cr_assert_eq(kiln_fine_tune(l, 2, 1e-2, &o), KILN_OK, "%s", kiln_learner_error(l));
    cr_assert_eq(seen.n, 3);
    cr_assert_eq(seen.frozen[0], 1);
    cr_assert_eq(seen.m0[0], 0.1f); /* slice(base_lr) */
    cr_assert_eq(seen.frozen[1], 0);
    cr_assert_eq(seen.m0[1], 0.01f); /* slice(base_lr/2/100, base_lr/2) */
    cr_assert_eq(kiln_learner_frozen_groups(l), 0);
    cr_assert(!unchanged(p, &s, "linear0.weight"));
    drop(&s);
    kiln_learner_free(l);
    kiln_program_free(p);
    kiln_dataset_free(d);
}

/* ---- loading another model's weights by name ------------------------------- */

static char tmp[128];

static bool has_name(char **list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i], name)) return true;
    return false;
}

Test(transfer_learning, load_matching)
{
    kiln_test_tmpdir(tmp, sizeof tmp, "tl");
    char path[256], bad[256], other[256];
    snprintf(path, sizeof path, "%s/src.safetensors", tmp);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", tmp);
    snprintf(other, sizeof other, "%s/other.safetensors", tmp);
    kiln_program *src = compile(grouped, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    cr_assert_eq(kiln_program_init_params(src, 11), KILN_OK);
    char *err = NULL;
    cr_assert_eq(kiln_save(src, path, 1, &err), KILN_OK, "%s", err ? err : "");

    /* the same body, a head of 5 classes */
    const char *five = "model t5\ninput x: f32[B, 6]\ntarget y: i32[B]\n"
                       "h = relu(linear(x, 8))\nh = batchnorm(h)\ngroup head\n"
                       "out = linear(h, 5)\nloss = cross_entropy(out, y)\n";
    kiln_program *dst = compile(five, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    cr_assert_eq(kiln_program_init_params(dst, 99), KILN_OK);
    snap before;
    take(dst, &before);
    kiln_load_report r;
    cr_assert_eq(kiln_load_matching(dst, path, &r, &err), KILN_OK, "%s", err ? err : "");
    /* linear0.{weight,bias}, batchnorm0.{weight,bias,running_mean,running_var,
     * num_batches_tracked} */
    cr_assert_eq(r.nloaded, 7);
    cr_assert(has_name(r.loaded, r.nloaded, "batchnorm0.running_mean"));
    cr_assert_eq(r.nrefused, 2);
    cr_assert(has_name(r.refused, r.nrefused, "linear1.weight"));
    bool named = false;
    for (int i = 0; i < r.nrefused; i++)
        named |= strstr(r.refused_why[i], "'linear1.weight' is F32 [3, 8] in the file but F32 "
                                          "[5, 8] in the program") != NULL;
    cr_assert(named, "%s / %s", r.refused_why[0], r.refused_why[1]);
    /* the optimizer state of the file (12 tensors) is skipped */
    cr_assert_eq(r.nskipped, 12);
    cr_assert(has_name(r.skipped, r.nskipped, "linear0.weight.exp_avg"));
    cr_assert_eq(r.nmissing, 2);
    cr_assert(has_name(r.missing, r.nmissing, "linear1.bias"));
    kiln_load_report_free(&r);
    cr_assert(same_bytes(src, dst, "linear0.weight"));
    cr_assert(same_bytes(src, dst, "batchnorm0.bias"));
    cr_assert(unchanged(dst, &before, "linear1.weight"));
    drop(&before);

    /* nothing matches: an error saying what the file holds; dst untouched */
    const char *names = "model n\ninput x: f32[B, 6]\ntarget y: i32[B]\n"
                        "out = linear(x, 3, name=\"fc\")\nloss = cross_entropy(out, y)\n";
    kiln_program *nm = compile(names, KILN_BACKEND_REF, KILN_OPT_ADAMW);
    kiln_status st = kiln_load_matching(nm, path, &r, &err);
    cr_assert_eq(st, KILN_ERR_NOT_FOUND);
    cr_assert(strstr(err, "src.safetensors: no tensor of the file matches"), "%s", err);
    free(err);
    kiln_load_report_free(&r);

    /* shapes differ everywhere: refused, and the message quotes one */
    kiln_program *wide = compile("model w\ninput x: f32[B, 7]\ntarget y: i32[B]\n"
                                 "out = linear(x, 3)\nloss = cross_entropy(out, y)\n",
                                 KILN_BACKEND_REF, KILN_OPT_ADAMW);
    cr_assert_eq(kiln_load_matching(wide, path, NULL, &err), KILN_ERR_NOT_FOUND);
    cr_assert(strstr(err, "in the file but"), "%s", err);
    free(err);

    /* a corrupt file: an error naming it, no crash */
    FILE *f = fopen(bad, "wb");
    fputs("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": garbage!}", f);
    fclose(f);
    st = kiln_load_matching(dst, bad, &r, &err);
    cr_assert(st == KILN_ERR_CORRUPT || st == KILN_ERR_PARSE || st == KILN_ERR_IO, "%d", st);
    cr_assert(strstr(err, "bad.safetensors"), "%s", err);
    free(err);
    kiln_load_report_free(&r);
    cr_assert_neq(kiln_load_matching(dst, other, NULL, &err), KILN_OK); /* missing file */
    cr_assert(strstr(err, "other.safetensors"), "%s", err);
    free(err);

    kiln_program_free(wide);
    kiln_program_free(nm);
    kiln_program_free(dst);
    kiln_program_free(src);
    kiln_test_rmtree(tmp);
}

/* ---- the command line ------------------------------------------------------- */

#define DATA_DIR "/usr/share/datasets/fashion-mnist"

typedef kiln_test_run run;

/* Runs kiln with args (NULL-terminated) in the source folder, XDG_CACHE_HOME
 * in tmp (kiln_test_run_in); r's earlier output is freed. */
static void kiln(run *r, const char *const *args)
{
    char cache[256];
    snprintf(cache, sizeof cache, "%s/cache", tmp);
    char *argv[32] = {KILN_BINARY};
    int n = 1;
    for (; args[n - 1] && n < 31; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    const char *old = getenv("XDG_CACHE_HOME");
    char *saved = old ? strdup(old) : NULL;
    setenv("XDG_CACHE_HOME", cache, 1);
    kiln_test_run_free(r);
    *r = kiln_test_run_in(tmp, KILN_SOURCE_DIR, 1, argv);
    if (saved) setenv("XDG_CACHE_HOME", saved, 1);
    else unsetenv("XDG_CACHE_HOME");
    free(saved);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void want(const run *r, int status, const char *part)
{
    cr_assert_eq(r->status, status, "exit %d, want %d\n--- stdout:\n%s\n--- stderr:\n%s", r->status,
                 status, r->out, r->err);
    if (part)
        cr_assert(strstr(r->out, part) || strstr(r->err, part), "wanted '%s'\n--- stdout:\n%s\n"
                  "--- stderr:\n%s", part, r->out, r->err);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(transfer_learning, cli, .timeout = 600)
{
    if (access(DATA_DIR "/train-images-idx3-ubyte.gz", R_OK)) {
        cr_skip_test("Fashion-MNIST is not installed in " DATA_DIR);
        return;
    }
    kiln_test_tmpdir(tmp, sizeof tmp, "tlcli");
    char body[256], five[256], flat[256], ck[256], ck2[256], bad[256];
    snprintf(body, sizeof body, "%s/body.kiln", tmp);
    snprintf(five, sizeof five, "%s/five.kiln", tmp);
    snprintf(flat, sizeof flat, "%s/flat.kiln", tmp);
    snprintf(ck, sizeof ck, "%s/a.safetensors", tmp);
    snprintf(ck2, sizeof ck2, "%s/b.safetensors", tmp);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", tmp);
    const char *m = "model body\ninput x: f32[B, 1, 28, 28]\ntarget y: i32[B]\n"
                    "h = relu(linear(flatten(x), 32))\nh = batchnorm(h)\ngroup head\n%s"
                    "out = linear(h, 10)\nloss = cross_entropy(out, y)\nmetric accuracy(out, y)\n";
    char text[512];
    snprintf(text, sizeof text, m, "");
    write_text(body, text);
    /* another head: linear1 is [16, 32] there, then a new linear2 */
    snprintf(text, sizeof text, m, "h = relu(linear(h, 16))\n");
    write_text(five, text);
    write_text(flat, "model flat\ninput x: f32[B, 1, 28, 28]\ntarget y: i32[B]\n"
                     "out = linear(flatten(x), 10)\nloss = cross_entropy(out, y)\n");
    write_text(bad, "not a safetensors file");

    run *r = calloc(1, sizeof *r);
    /* fine_tune: one frozen epoch, one unfrozen */
    kiln(r, ARGS("train", body, "--limit", "256", "--bs", "64", "--epochs", "1",
                 "--freeze-epochs", "1", "--save", ck, "--threads", "1"));
    want(r, 0, "epoch     train_loss");
    cr_assert(strstr(r->out, "\n0 ") && strstr(r->out, "\n1 "), "%s", r->out);

    /* another model from its weights: the body loads, the head is refused */
    kiln(r, ARGS("train", body, "--init-from", ck, "--limit", "256", "--epochs", "1",
                 "--lr", "1e-4:1e-3", "--freeze-to", "-1", "--threads", "1", "--save", ck2));
    want(r, 0, "--init-from");
    want(r, 0, "2 parameter groups, 1 frozen");
    kiln(r, ARGS("train", five, "--init-from", ck, "--limit", "128", "--epochs", "1",
                 "--threads", "1"));
    want(r, 0, "loaded 7 tensors");
    want(r, 0, "refused 'linear1.weight' is F32 [10, 32] in the file but F32 [16, 32] in the "
               "program");

    /* errors */
    kiln(r, ARGS("train", flat, "--init-from", ck, "--limit", "128"));
    want(r, 2, "no tensor of the file matches");
    kiln(r, ARGS("train", body, "--init-from", bad, "--limit", "128"));
    want(r, 2, "bad.safetensors");
    kiln(r, ARGS("train", flat, "--freeze-to", "1", "--limit", "128"));
    want(r, 2, "one parameter group");
    kiln(r, ARGS("train", body, "--lr", "1e-2:1e-3"));
    want(r, 2, "--lr wants");
    kiln(r, ARGS("train", body, "--lr", "1e-4:1e-3", "--schedule", "const"));
    want(r, 2, "--lr LO:HI is for the one-cycle schedule");
    kiln(r, ARGS("train", body, "--init-from", ck, "--load", ck));
    want(r, 2, "exclude each other");
    kiln_test_run_free(r);
    free(r);
    kiln_test_rmtree(tmp);
}
