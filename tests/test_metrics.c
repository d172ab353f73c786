/* tests/test_metrics.c — metrics whose partials are combined over a whole
 * validation set (kiln_metric_kind), the model language's metric rows
 * (frontend/layers.c), and per-pixel cross-entropy against PyTorch.
 *
 *  - kiln_metric_value: each kind's rule on hand-made sums;
 *  - the IR: a metric's kind is set, checked, printed and parsed back;
 *  - the language: each metric lowers to the documented partial and kind;
 *    argument errors;
 *  - end to end: small models whose logits are the input itself (plus a
 *    linear layer whose weights stay 0, so the learner has something to
 *    train) compiled for the reference interpreter, generated C and LLVM
 *    (when built), validated by the Learner over two batches; the values
 *    are hand-computed (the comments give the counts) and each test also
 *    shows that the combined value is not the mean of the two per-batch
 *    values (mean IoU, pixel accuracy with ignore, dice, rmse);
 *  - fbeta and accuracy_thresh against fastai v1's formulas run by PyTorch
 *    (tests/golden/gen_metrics.py, files in tests/golden/metrics/), with a
 *    validation set whose last batch needs the tail program;
 *  - cross_entropy over N x C x H x W with ignore_index = 255: loss and
 *    gradient against F.cross_entropy, on all three backends.
 */
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "ir/ops.h"
#include "kiln/kiln.h"
#include "runtime/npy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN KILN_SOURCE_DIR "/tests/golden/metrics/"

/* ---- helpers --------------------------------------------------------------- */

static const kiln_backend backends[] = {
    KILN_BACKEND_REF, KILN_BACKEND_C,
#if KILN_HAVE_LLVM
    KILN_BACKEND_LLVM,
#endif
};
#define NBACKENDS ((int)(sizeof backends / sizeof backends[0]))
static const char *const backend_names[] = {"c", "ref", "llvm"};

static kiln_graph *parse_ok(const char *text, int64_t batch)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_parse(text, "t.kiln", batch, &g, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    free(err);
    return g;
}

/* The message of a model that fails to lower (caller frees). */
static char *parse_err(const char *text, int64_t batch, kiln_status want)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_parse(text, "t.kiln", batch, &g, &err);
    cr_assert_eq(st, want, "status %d, message %s", st, err ? err : "(none)");
    cr_assert_null(g);
    cr_assert_not_null(err);
    return err;
}

static kiln_program *compile_model(const char *text, int64_t batch, kiln_backend be)
{
    kiln_graph *g = parse_ok(text, batch);
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = 1;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile (%s): %s", backend_names[be], err ? err : "");
    free(err);
    kiln_graph_free(g);
    return p;
}

/* The index of metric `name` among the program's metrics (the learner's
 * order), checking its kind and element count. */
static int metric_index(kiln_program *p, const char *name, kiln_metric_kind kind, int64_t numel)
{
    int k = 0;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        cr_assert_eq(kiln_program_tensor(p, i, &t), KILN_OK);
        if (t.role != KILN_ROLE_METRIC) continue;
        if (!strcmp(t.name, name)) {
            int64_t n = 1;
            for (int d = 0; d < t.rank; d++) n *= t.shape[d];
            cr_assert_eq(t.metric, kind, "metric '%s' has kind %s, not %s", name,
                         kiln_metric_kind_name(t.metric), kiln_metric_kind_name(kind));
            cr_assert_eq(n, numel, "metric '%s' has %lld elements, not %lld", name,
                         (long long)n, (long long)numel);
            return k;
        }
        k++;
    }
    cr_assert_fail("the program has no metric '%s'", name);
    return -1;
}

static kiln_dataset *make_set(const float *x, int xr, const int64_t *xs, const void *y,
                              kiln_dtype yt, int yr, const int64_t *ys)
{
    kiln_dataset *d = NULL;
    char *err = NULL;
    kiln_status st = kiln_dataset_from_arrays(x, xr, xs, y, yt, yr, ys, &d, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    return d;
}

/* The Learner's validation of `valid` (also the training set: nothing is
 * trained) with program p (and tail, or NULL): the metrics, in order. */
static void validate(kiln_program *p, kiln_program *tail, const kiln_dataset *valid,
                     double *metrics)
{
    kiln_learner_options o = kiln_learner_defaults();
    o.print_table = 0;
    o.valid_tail = tail;
    kiln_learner *l = NULL;
    char *err = NULL;
    kiln_status st = kiln_learner_new(p, valid, valid, &o, &l, &err);
    cr_assert_eq(st, KILN_OK, "kiln_learner_new: %s", err ? err : "");
    double vl;
    st = kiln_learner_validate(l, &vl, metrics);
    cr_assert_eq(st, KILN_OK, "validate: %s", kiln_learner_error(l));
    kiln_learner_free(l);
}

static void expect_near(double got, double want, double tol, const char *what, kiln_backend be)
{
    cr_expect(fabs(got - want) <= tol * (1 + fabs(want)), "%s (%s): %.9g, expected %.9g", what,
              backend_names[be], got, want);
}

typedef struct golden {
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t n;
    double *v;
} golden;

static golden load_golden(const char *name)
{
    char path[512], err[512];
    snprintf(path, sizeof path, GOLDEN "%s.npy", name);
    kiln_npy a;
    kiln_status st = kiln_npy_load(path, &a, err, sizeof err);
    cr_assert_eq(st, KILN_OK, "%s (regenerate with /usr/bin/python3 tests/golden/gen_metrics.py)",
                 err);
    golden g = {.rank = a.rank, .n = a.numel};
    memcpy(g.shape, a.shape, sizeof g.shape);
    g.v = malloc((size_t)(a.numel ? a.numel : 1) * sizeof *g.v);
    cr_assert(g.v);
    cr_assert_eq(kiln_npy_to_f64(&a, g.v), KILN_OK);
    kiln_npy_free(&a);
    return g;
}

/* ---- kiln_metric_value ----------------------------------------------------- */

Test(metrics, value_rules)
{
    double mean[] = {30};
    cr_expect_float_eq(kiln_metric_value(KILN_METRIC_MEAN, mean, 1, 40), 0.75, 1e-15);
    double sse[] = {37, 8};
    cr_expect_float_eq(kiln_metric_value(KILN_METRIC_SQRT_MEAN, sse, 2, 4), sqrt(37.0 / 8),
                       1e-15);
    double ratio[] = {8, 11};
    cr_expect_float_eq(kiln_metric_value(KILN_METRIC_RATIO, ratio, 2, 4), 8.0 / 11, 1e-15);
    double none[] = {0, 0};
    cr_expect(isnan(kiln_metric_value(KILN_METRIC_RATIO, none, 2, 4)));
    double dice[] = {8, 23};
    cr_expect_float_eq(kiln_metric_value(KILN_METRIC_DICE, dice, 2, 4), 16.0 / 23, 1e-15);
    /* nothing predicted or labelled in the foreground: fastai's 1 */
    cr_expect_eq(kiln_metric_value(KILN_METRIC_DICE, none, 2, 4), 1.0);
    /* classes 0 and 2 present, class 1 in no union: left out of the mean */
    double iou[] = {3, 0, 4, 6, 0, 8};
    cr_expect_float_eq(kiln_metric_value(KILN_METRIC_IOU_MEAN, iou, 6, 4), (0.5 + 0.5) / 2,
                       1e-15);
    double iou0[] = {0, 0, 0, 0};
    cr_expect(isnan(kiln_metric_value(KILN_METRIC_IOU_MEAN, iou0, 4, 4)));
    /* sizes that do not fit the kind, no samples, unknown kinds */
    cr_expect(isnan(kiln_metric_value(KILN_METRIC_MEAN, sse, 2, 4)));
    cr_expect(isnan(kiln_metric_value(KILN_METRIC_IOU_MEAN, iou, 5, 4)));
    cr_expect(isnan(kiln_metric_value(KILN_METRIC_RATIO, ratio, 2, 0)));
    cr_expect(isnan(kiln_metric_value(KILN_METRIC_KIND_COUNT, ratio, 2, 4)));
    cr_expect_str_eq(kiln_metric_kind_name(KILN_METRIC_IOU_MEAN), "iou_mean");
    cr_expect_str_eq(kiln_metric_kind_name(KILN_METRIC_KIND_COUNT), "?");
}

/* ---- the IR ------------------------------------------------------------------ */

Test(metrics, kind_set_checked_printed_parsed)
{
    kiln_graph *g = kiln_graph_new("k");
    int64_t s4[] = {4}, s3[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s4);
    kiln_value z = kiln_input(g, "z", KILN_F32, 1, s3);
    kiln_value v = kiln_relu(g, x), w = kiln_relu(g, z);
    /* only metrics take a kind */
    cr_expect_eq(kiln_set_metric_kind(g, v, KILN_METRIC_IOU_MEAN), KILN_ERR_INVALID);
    cr_assert_eq(kiln_set_metric(g, v, "miou"), KILN_OK);
    cr_assert_eq(kiln_set_metric(g, w, "odd"), KILN_OK);
    cr_expect_eq(kiln_set_metric_kind(g, w, KILN_METRIC_IOU_MEAN), KILN_ERR_SHAPE);
    cr_expect(strstr(kiln_graph_error(g), "iou_mean"), "%s", kiln_graph_error(g));
    cr_expect_eq(kiln_set_metric_kind(g, v, KILN_METRIC_RATIO), KILN_ERR_SHAPE);
    cr_expect_eq(kiln_set_metric_kind(g, v, (kiln_metric_kind)99), KILN_ERR_INVALID);
    cr_assert_eq(kiln_set_metric_kind(g, v, KILN_METRIC_IOU_MEAN), KILN_OK);
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));

    char *text = kiln_graph_to_string(g);
    cr_assert(text);
    cr_expect(strstr(text, ": f32[4] metric iou_mean \"miou\""), "%s", text);
    cr_expect(strstr(text, ": f32[3] metric \"odd\""), "%s", text); /* mean prints nothing */
    kiln_graph *h = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_graph_parse(text, "k.ir", &h, &err), KILN_OK, "%s", err ? err : "");
    cr_expect_eq(h->nodes[kiln_graph_find(h, "miou")].metric, KILN_METRIC_IOU_MEAN);
    char *again = kiln_graph_to_string(h);
    cr_expect_str_eq(again, text);
    /* clones and the passes keep the kind */
    kiln_graph *c = kiln_graph_clone(h);
    cr_assert_eq(kiln_run_pass(c, "cse"), KILN_OK);
    cr_assert_eq(kiln_run_pass(c, "dce"), KILN_OK);
    cr_expect_eq(c->nodes[kiln_graph_find(c, "miou")].metric, KILN_METRIC_IOU_MEAN);
    free(again);
    kiln_graph_free(c);
    kiln_graph_free(h);

    /* an unknown kind, and a kind that does not fit the shape */
    char *bad = malloc(strlen(text) + 16);
    const char *at = strstr(text, "iou_mean");
    snprintf(bad, strlen(text) + 16, "%.*sbogus%s", (int)(at - text), text, at + 8);
    cr_expect_eq(kiln_graph_parse(bad, "k.ir", &h, &err), KILN_ERR_PARSE);
    cr_expect(err && strstr(err, "unknown metric kind"), "%s", err ? err : "");
    free(err);
    err = NULL;
    snprintf(bad, strlen(text) + 16, "%.*sdice%s", (int)(at - text), text, at + 8);
    cr_expect_eq(kiln_graph_parse(bad, "k.ir", &h, &err), KILN_ERR_SHAPE);
    cr_expect(err && strstr(err, "dice metric cannot have 4 elements"), "%s", err ? err : "");
    free(err);
    free(bad);
    free(text);

    /* the verifier refuses a kind the shape does not fit */
    g->nodes[v].metric = KILN_METRIC_SQRT_MEAN;
    cr_expect_eq(kiln_graph_verify(g), KILN_ERR_INVALID);
    cr_expect(strstr(kiln_graph_error(g), "sqrt_mean"), "%s", kiln_graph_error(g));
    kiln_graph_free(g);
}

/* ---- the language ------------------------------------------------------------ */

static const kiln_node *metric_node(kiln_graph *g, const char *name, kiln_metric_kind kind,
                                    const char *type)
{
    kiln_value v = kiln_graph_find(g, name);
    cr_assert_geq(v, 0, "no node '%s'", name);
    const kiln_node *n = &g->nodes[v];
    char t[128];
    cr_expect_eq(n->role, KILN_ROLE_METRIC, "'%s'", name);
    cr_expect_eq(n->metric, kind, "'%s' has kind %s", name,
                 kiln_metric_kind_name((kiln_metric_kind)n->metric));
    cr_expect_str_eq(kiln_node_type_str(n, t, sizeof t), type, "'%s'", name);
    return n;
}

Test(metrics, lowering_kinds_and_shapes)
{
    kiln_graph *g = parse_ok("model m\n"
                             "input x: f32[B, 5]\n"
                             "target y: i32[B]\n"
                             "input s: f32[B, 4, 3, 2]\n"
                             "target t: i64[B, 3, 2]\n"
                             "target u: f32[B, 5]\n"
                             "metric accuracy(x, y)\n"
                             "metric accuracy(x, y, ignore=3) as acc_ign\n"
                             "metric accuracy(s, t) as pix\n"
                             "metric accuracy(s, t, 0) as pix_void\n"
                             "metric mean_iou(s, t)\n"
                             "metric mean_iou(s, t, ignore=0) as miou_void\n"
                             "metric dice(s, t)\n"
                             "metric accuracy_thresh(x, u, thresh=0.3)\n"
                             "metric fbeta(x, u)\n"
                             "metric fbeta(x, u, 1, 0.5, false) as f1\n"
                             "metric rmse(x, u)\n",
                             3);
    /* classification accuracy is unchanged: a count of hits, MEAN */
    metric_node(g, "accuracy", KILN_METRIC_MEAN, "f32[]");
    metric_node(g, "acc_ign", KILN_METRIC_RATIO, "f32[2]");
    metric_node(g, "pix", KILN_METRIC_RATIO, "f32[2]");
    metric_node(g, "pix_void", KILN_METRIC_RATIO, "f32[2]");
    metric_node(g, "mean_iou", KILN_METRIC_IOU_MEAN, "f32[8]");
    metric_node(g, "miou_void", KILN_METRIC_IOU_MEAN, "f32[8]");
    metric_node(g, "dice", KILN_METRIC_DICE, "f32[2]");
    metric_node(g, "accuracy_thresh", KILN_METRIC_RATIO, "f32[2]");
    metric_node(g, "fbeta", KILN_METRIC_MEAN, "f32[]");
    metric_node(g, "f1", KILN_METRIC_MEAN, "f32[]");
    metric_node(g, "rmse", KILN_METRIC_SQRT_MEAN, "f32[2]");
    cr_expect_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    /* segmentation accuracy takes the argmax over the classes, axis 1 */
    bool argmax1 = false;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (!strcmp(kiln_op_info_of(g->nodes[i].op)->name, "argmax") &&
            kiln_attr_get_int(&g->nodes[i], "axis") == 1)
            argmax1 = true;
    cr_expect(argmax1);
    kiln_graph_free(g);
}

Test(metrics, argument_errors)
{
    const char *head = "model m\ninput x: f32[B, 5]\ntarget y: i32[B]\ntarget u: f32[B, 5]\n";
    char text[512];
    char *err;
    snprintf(text, sizeof text, "%smetric fbeta(x, u, bta=1)\n", head);
    err = parse_err(text, 2, KILN_ERR_NOT_FOUND);
    cr_expect(strstr(err, "unknown argument 'bta' for fbeta (did you mean 'beta'?); it takes "
                          "beta, thresh, sigmoid"), "%s", err);
    free(err);
    snprintf(text, sizeof text, "%smetric fbeta(x, y)\n", head);
    err = parse_err(text, 2, KILN_ERR_SHAPE);
    cr_expect(strstr(err, "fbeta: the predictions f32[2,5] and targets i32[2] need the same "
                          "shape"), "%s", err);
    free(err);
    snprintf(text, sizeof text, "%smetric dice(x, u)\n", head);
    err = parse_err(text, 2, KILN_ERR_SHAPE);
    cr_expect(strstr(err, "dice: logits f32[2,5] and labels f32[2,5] do not fit"), "%s", err);
    free(err);
    snprintf(text, sizeof text, "%smetric rmse(x, y)\n", head);
    err = parse_err(text, 2, KILN_ERR_SHAPE);
    cr_expect(strstr(err, "rmse: the predictions f32[2,5] must be float and have as many "
                          "elements as the targets i32[2]"), "%s", err);
    free(err);
    snprintf(text, sizeof text, "%smetric accuracy(x, 2)\n", head);
    err = parse_err(text, 2, KILN_ERR_INVALID);
    cr_expect(strstr(err, "argument 2 of metric accuracy must be a tensor, not an int"), "%s",
              err);
    free(err);
    snprintf(text, sizeof text, "%smetric mean_iou(x)\n", head);
    err = parse_err(text, 2, KILN_ERR_INVALID);
    cr_expect(strstr(err, "mean_iou takes 2 tensor arguments, got 1"), "%s", err);
    free(err);
    snprintf(text, sizeof text, "%smetric accuracy(x, y, ignore=0.5)\n", head);
    err = parse_err(text, 2, KILN_ERR_INVALID);
    cr_expect(strstr(err, "'ignore' of accuracy"), "%s", err);
    free(err);
}

/* ---- segmentation, end to end ---------------------------------------------------
 *
 * 3 classes (0 is the background, "void"), 2 x 2 pixels, 4 samples in two
 * batches of 2. Predicted (by one-hot logits) and true classes per pixel:
 *
 *   batch 1  s0  pred 1 1 2 0   label 1 2 2 0
 *            s1  pred 0 1 1 1   label 0 1 1 1
 *   batch 2  s2  pred 2 2 2 2   label 2 2 1 0
 *            s3  pred 0 0 1 2   label 1 0 0 2
 *
 * accuracy: 11 of 16 pixels right (7 + 4): 0.6875.
 * accuracy, ignore=0: 8 right of the 11 non-void pixels: 8/11 (batches:
 *   5/6 and 3/5, mean 0.71667).
 * mean_iou: class 0: 3/6, class 1: 4/8, class 2: 4/7; mean 0.5238095
 *   (batches: (2/2 + 4/5 + 1/2)/3 and (1/4 + 0/3 + 3/5)/3, mean 0.525).
 * mean_iou, ignore=0: void pixels left out and void predictions count
 *   nowhere: class 1 4/7, class 2 4/6, class 0 none: 0.6190476 (batches
 *   (4/5 + 1/2)/2 and (0/2 + 3/4)/2, mean 0.5125).
 * dice: 8 pixels right in the foreground, 12 + 11 foreground pixels
 *   predicted and labelled: 16/23 = 0.6956522 (batches 10/12 and 6/11,
 *   mean 0.68939). */

static const int seg_pred[4][4] = {{1, 1, 2, 0}, {0, 1, 1, 1}, {2, 2, 2, 2}, {0, 0, 1, 2}};
static const int32_t seg_label[4][4] = {{1, 2, 2, 0}, {0, 1, 1, 1}, {2, 2, 1, 0}, {1, 0, 0, 2}};

static const char seg_model[] = "model seg\n"
                                "input x: f32[B, 3, 2, 2]\n"
                                "target y: i32[B, 2, 2]\n"
                                "out = x + linear(x, 2)   # weights 0: out = x\n"
                                "loss = cross_entropy(out, y)\n"
                                "metric accuracy(out, y)\n"
                                "metric accuracy(out, y, ignore=0) as acc_void\n"
                                "metric mean_iou(out, y)\n"
                                "metric mean_iou(out, y, ignore=0) as miou_void\n"
                                "metric dice(out, y)\n";

/* Samples [first, first + n) as a data set. */
static kiln_dataset *seg_set(int first, int n)
{
    float x[4][3][4];
    for (int s = 0; s < 4; s++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 4; p++) x[s][c][p] = seg_pred[s][p] == c ? 1.0f : 0.0f;
    int64_t xs[] = {n, 3, 2, 2}, ys[] = {n, 2, 2};
    return make_set(&x[first][0][0], 4, xs, &seg_label[first][0], KILN_I32, 3, ys);
}

Test(metrics, segmentation_whole_set)
{
    static const double want[5] = {11.0 / 16, 8.0 / 11, (0.5 + 0.5 + 4.0 / 7) / 3,
                                   (4.0 / 7 + 4.0 / 6) / 2, 16.0 / 23};
    static const double batch_mean[5] = {11.0 / 16, (5.0 / 6 + 3.0 / 5) / 2,
                                         ((1 + 0.8 + 0.5) / 3 + (0.25 + 0.6) / 3) / 2,
                                         ((0.8 + 0.5) / 2 + 0.75 / 2) / 2,
                                         (10.0 / 12 + 6.0 / 11) / 2};
    const char *names[5] = {"accuracy", "acc_void", "mean_iou", "miou_void", "dice"};
    kiln_metric_kind kinds[5] = {KILN_METRIC_RATIO, KILN_METRIC_RATIO, KILN_METRIC_IOU_MEAN,
                                 KILN_METRIC_IOU_MEAN, KILN_METRIC_DICE};
    int64_t sizes[5] = {2, 2, 6, 6, 2};
    kiln_dataset *all = seg_set(0, 4), *b1 = seg_set(0, 2), *b2 = seg_set(2, 2);
    for (int b = 0; b < NBACKENDS; b++) {
        kiln_program *p = compile_model(seg_model, 2, backends[b]);
        int idx[5];
        for (int k = 0; k < 5; k++) idx[k] = metric_index(p, names[k], kinds[k], sizes[k]);
        double m[5], m1[5], m2[5];
        validate(p, NULL, all, m);
        validate(p, NULL, b1, m1);
        validate(p, NULL, b2, m2);
        for (int k = 0; k < 5; k++) {
            expect_near(m[idx[k]], want[k], 1e-12, names[k], backends[b]);
            expect_near((m1[idx[k]] + m2[idx[k]]) / 2, batch_mean[k], 1e-12, names[k],
                        backends[b]);
        }
        kiln_program_free(p);
    }
    /* the whole set's values are not the means of the batches' */
    for (int k = 1; k < 5; k++)
        cr_expect(fabs(want[k] - batch_mean[k]) > 1e-3, "%s: %g vs %g", names[k], want[k],
                  batch_mean[k]);
    kiln_dataset_free(all);
    kiln_dataset_free(b1);
    kiln_dataset_free(b2);
}

/* ---- rmse, end to end ---------------------------------------------------------
 *
 * Two batches of 2 samples x 2 values: errors of 0.5 everywhere in the
 * first (sse 1), 3 in the second (sse 36). rmse = sqrt(37 / 8) = 2.1506;
 * the mean of the batches' roots would be (0.5 + 3) / 2 = 1.75. */

static const char reg_model[] = "model reg\n"
                                "input x: f32[B, 2]\n"
                                "target y: f32[B, 2]\n"
                                "out = x + linear(x, 2)\n"
                                "loss = mse_loss(out, y)\n"
                                "metric rmse(out, y)\n";

Test(metrics, rmse_whole_set)
{
    float x[8] = {1, 2, 3, 4, 0, 0, 1, 1};
    float y[8] = {1.5f, 1.5f, 3.5f, 3.5f, 3, -3, 4, -2};
    int64_t xs[] = {4, 2};
    kiln_dataset *all = make_set(x, 2, xs, y, KILN_F32, 2, xs);
    int64_t hs[] = {2, 2};
    kiln_dataset *b1 = make_set(x, 2, hs, y, KILN_F32, 2, hs);
    kiln_dataset *b2 = make_set(x + 4, 2, hs, y + 4, KILN_F32, 2, hs);
    for (int b = 0; b < NBACKENDS; b++) {
        kiln_program *p = compile_model(reg_model, 2, backends[b]);
        int k = metric_index(p, "rmse", KILN_METRIC_SQRT_MEAN, 2);
        double m, m1, m2;
        validate(p, NULL, all, &m);
        validate(p, NULL, b1, &m1);
        validate(p, NULL, b2, &m2);
        cr_assert_eq(k, 0);
        expect_near(m, sqrt(37.0 / 8), 1e-12, "rmse", backends[b]);
        expect_near(m1, 0.5, 1e-12, "rmse batch 1", backends[b]);
        expect_near(m2, 3.0, 1e-12, "rmse batch 2", backends[b]);
        kiln_program_free(p);
    }
    kiln_dataset_free(all);
    kiln_dataset_free(b1);
    kiln_dataset_free(b2);
}

/* ---- multi-label: fbeta and accuracy_thresh against PyTorch ---------------------
 *
 * 6 samples x 5 tags, batch 4: the validation's last batch of 2 runs on a
 * tail program compiled for batch 2. Values from fastai v1's formulas in
 * PyTorch float32 (gen_metrics.py). */

static const char multi_model[] = "model multi\n"
                                  "input x: f32[B, 5]\n"
                                  "target y: f32[B, 5]\n"
                                  "out = x + linear(x, 5)\n"
                                  "loss = bce_with_logits(out, y)\n"
                                  "metric fbeta(out, y)\n"
                                  "metric fbeta(out, y, beta=1, thresh=0.5) as f1\n"
                                  "metric fbeta(out, y, thresh=0.5, sigmoid=false) as f_nosig\n"
                                  "metric accuracy_thresh(out, y)\n";

Test(metrics, multilabel_vs_pytorch)
{
    golden gx = load_golden("fbeta_x"), gy = load_golden("fbeta_y");
    const char *names[4] = {"fbeta", "f1", "f_nosig", "accuracy_thresh"};
    const char *files[4] = {"fbeta", "fbeta_b1", "fbeta_nosig", "acc_thresh"};
    kiln_metric_kind kinds[4] = {KILN_METRIC_MEAN, KILN_METRIC_MEAN, KILN_METRIC_MEAN,
                                 KILN_METRIC_RATIO};
    int64_t sizes[4] = {1, 1, 1, 2};
    cr_assert_eq(gx.n, 30);
    float x[30], y[30];
    for (int i = 0; i < 30; i++) {
        x[i] = (float)gx.v[i];
        y[i] = (float)gy.v[i];
    }
    int64_t xs[] = {6, 5};
    kiln_dataset *d = make_set(x, 2, xs, y, KILN_F32, 2, xs);
    for (int b = 0; b < NBACKENDS; b++) {
        kiln_program *p = compile_model(multi_model, 4, backends[b]);
        kiln_program *tail = compile_model(multi_model, 2, backends[b]);
        double m[4];
        validate(p, tail, d, m);
        for (int k = 0; k < 4; k++) {
            golden want = load_golden(files[k]);
            int i = metric_index(p, names[k], kinds[k], sizes[k]);
            expect_near(m[i], want.v[0], 1e-6, names[k], backends[b]);
            free(want.v);
        }
        kiln_program_free(tail);
        kiln_program_free(p);
    }
    kiln_dataset_free(d);
    free(gx.v);
    free(gy.v);
}

/* A tail program whose metric has the main program's name and size but
 * another kind is refused. */
Test(metrics, tail_kind_must_match)
{
    kiln_program *p = compile_model(reg_model, 2, KILN_BACKEND_REF);
    kiln_graph *tg = kiln_graph_new("reg");
    int64_t xs[] = {1, 2}, one = 1;
    kiln_value x = kiln_input(tg, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(tg, "y", KILN_F32, 2, xs);
    kiln_value out = kiln_add(tg, x, kiln_linear(tg, x, 2, 1, "linear0"));
    kiln_value d = kiln_sub(tg, out, y);
    cr_assert_eq(kiln_set_loss(tg, kiln_mse_loss(tg, out, y), "loss"), KILN_OK);
    kiln_value parts[2] = {kiln_reshape(tg, kiln_reduce_sum(tg, kiln_mul(tg, d, d), 0, NULL, 0),
                                        1, &one),
                           kiln_reshape(tg, kiln_reduce_sum(tg, d, 0, NULL, 0), 1, &one)};
    kiln_value sums = kiln_concat(tg, 2, parts, 0);
    cr_assert_eq(kiln_set_metric(tg, sums, "rmse"), KILN_OK, "%s", kiln_graph_error(tg));
    cr_assert_eq(kiln_set_metric_kind(tg, sums, KILN_METRIC_RATIO), KILN_OK, "%s",
                 kiln_graph_error(tg));
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = KILN_BACKEND_REF;
    kiln_program *tail = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_compile(tg, &o, &tail, &err), KILN_OK, "%s", err ? err : "");
    kiln_graph_free(tg);

    float xv[6] = {0}, yv[6] = {0};
    int64_t ds[] = {3, 2};
    kiln_dataset *set = make_set(xv, 2, ds, yv, KILN_F32, 2, ds);
    kiln_learner_options lo = kiln_learner_defaults();
    lo.print_table = 0;
    lo.valid_tail = tail;
    kiln_learner *l = NULL;
    cr_expect_eq(kiln_learner_new(p, set, set, &lo, &l, &err), KILN_ERR_SHAPE);
    cr_expect(err && strstr(err, "metric 'rmse' differs from the program's in kind"), "%s",
              err ? err : "");
    free(err);
    cr_expect_null(l);
    kiln_dataset_free(set);
    kiln_program_free(tail);
    kiln_program_free(p);
}

/* ---- the epoch table ----------------------------------------------------------- */

/* `kiln train`'s table (the learner's) prints the final values. */
Test(metrics, table_prints_final_values)
{
    kiln_program *p = compile_model(reg_model, 2, KILN_BACKEND_REF);
    float x[8] = {1, 2, 3, 4, 0, 0, 1, 1};
    float y[8] = {1.5f, 1.5f, 3.5f, 3.5f, 3, -3, 4, -2};
    int64_t xs[] = {4, 2};
    kiln_dataset *d = make_set(x, 2, xs, y, KILN_F32, 2, xs);
    FILE *f = tmpfile();
    cr_assert(f);
    kiln_learner_options o = kiln_learner_defaults();
    o.out = f;
    kiln_learner *l = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_learner_new(p, d, d, &o, &l, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_fit(l, 1, 0.0), KILN_OK, "%s", kiln_learner_error(l));
    kiln_epoch_stats s;
    cr_assert_eq(kiln_learner_last_epoch(l, &s), KILN_OK);
    cr_assert_eq(s.nmetrics, 1);
    cr_expect_str_eq(s.metric_names[0], "rmse");
    cr_expect_float_eq(s.metrics[0], sqrt(37.0 / 8), 1e-12);
    char buf[512] = "";
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    cr_expect(strstr(buf, "epoch     train_loss  valid_loss  rmse      time\n"), "%s", buf);
    cr_expect(strstr(buf, "  2.150581  "), "%s", buf);
    fclose(f);
    kiln_learner_free(l);
    kiln_dataset_free(d);
    kiln_program_free(p);
}

/* ---- per-pixel cross-entropy with ignore_index ----------------------------------- */

Test(metrics, cross_entropy_per_pixel_ignore_vs_pytorch)
{
    golden gx = load_golden("ce_x"), gy = load_golden("ce_y");
    golden gl = load_golden("ce_loss"), gg = load_golden("ce_grad");
    cr_assert_eq(gx.rank, 4);
    cr_assert_eq(gy.rank, 3);
    kiln_graph *g = kiln_graph_new("ce");
    kiln_value x = kiln_param(g, "logits", KILN_F32, 4, gx.shape, KILN_INIT_ZEROS, 0);
    kiln_value y = kiln_target(g, "y", KILN_I64, 3, gy.shape);
    const char *attr = "ignore_index=255";
    kiln_value in[2] = {x, y};
    kiln_value loss = kiln_op(g, "cross_entropy", 2, in, 1, &attr);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    float *xv = malloc((size_t)gx.n * sizeof *xv), *grad = malloc((size_t)gx.n * sizeof *grad);
    int64_t *yv = malloc((size_t)gy.n * sizeof *yv);
    for (int64_t i = 0; i < gx.n; i++) xv[i] = (float)gx.v[i];
    for (int64_t i = 0; i < gy.n; i++) yv[i] = (int64_t)gy.v[i];
    for (int b = 0; b < NBACKENDS; b++) {
        kiln_compile_options o = kiln_compile_defaults();
        o.backend = backends[b];
        o.threads = 1;
        o.train.optimizer = KILN_OPT_SGD;
        o.train.keep_grads = 1;
        kiln_program *p = NULL;
        char *err = NULL;
        cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
        cr_assert_eq(kiln_program_set(p, "logits", xv, (size_t)gx.n * sizeof *xv), KILN_OK);
        cr_assert_eq(kiln_program_set(p, "y", yv, (size_t)gy.n * sizeof *yv), KILN_OK);
        cr_assert_eq(kiln_program_set_hparam(p, "lr", 0), KILN_OK);
        cr_assert_eq(kiln_program_set_hparam(p, "wd", 0), KILN_OK);
        cr_assert_eq(kiln_program_run(p, "eval_step"), KILN_OK, "%s", kiln_program_error(p));
        float l;
        cr_assert_eq(kiln_program_get(p, "loss", &l, sizeof l), KILN_OK);
        expect_near(l, gl.v[0], 1e-6, "eval loss", backends[b]);
        cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
        cr_assert_eq(kiln_program_get(p, "loss", &l, sizeof l), KILN_OK);
        expect_near(l, gl.v[0], 1e-6, "train loss", backends[b]);
        cr_assert_eq(kiln_program_get(p, "grad.logits", grad, (size_t)gx.n * sizeof *grad),
                     KILN_OK, "%s", kiln_program_error(p));
        double worst = 0;
        int zero_ok = 1;
        for (int64_t i = 0; i < gx.n; i++) {
            double e = fabs(grad[i] - gg.v[i]) / (1e-6 + 1e-4 * fabs(gg.v[i]));
            if (e > worst) worst = e;
            if (gg.v[i] == 0 && grad[i] != 0) zero_ok = 0;
        }
        cr_expect(worst <= 1, "grad (%s): %.3g of the tolerance", backend_names[backends[b]],
                  worst);
        cr_expect(zero_ok, "ignored pixels get no gradient (%s)", backend_names[backends[b]]);
        kiln_program_free(p);
    }
    free(xv);
    free(grad);
    free(yv);
    kiln_graph_free(g);
    free(gx.v);
    free(gy.v);
    free(gl.v);
    free(gg.v);
}

/* The graph passes that rebuild nodes (conv lowering to GEMMs) keep a
 * metric's finalize kind: a conv net's rmse stays SQRT_MEAN in the program. */
Test(metrics, kind_survives_conv_lowering)
{
    kiln_program *p = compile_model("model c\ninput x: f32[B, 1, 6, 6]\ntarget y: f32[B, 2]\n"
                                    "h = relu(conv2d(x, 2, kernel=3, padding=1))\n"
                                    "out = conv2d(h, 2, kernel=6)\n"
                                    "out = reshape(out, shape=[B, 2])\n"
                                    "loss = mse_loss(out, y)\nmetric rmse(out, y)\n",
                                    2, KILN_BACKEND_C);
    int found = 0;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        kiln_program_tensor(p, i, &t);
        if (t.role != KILN_ROLE_METRIC) continue;
        cr_assert_eq(t.metric, KILN_METRIC_SQRT_MEAN, "'%s' lost its kind", t.name);
        found++;
    }
    cr_assert_eq(found, 1);
    kiln_program_free(p);
}
