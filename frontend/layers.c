/* frontend/layers.c — the layers and metrics the model language knows, one
 * row each. A layer creates its parameters and applies its ops through the
 * public builder; a metric lowers to the ops that compute its partial. */
#include "frontend/lower.h"

#include <stdio.h>
#include <string.h>

/* linear(x, out_features, bias=true): y = x @ W^T + b (kiln_linear). */
static kiln_value build_linear(kiln_graph *g, const kiln_value *in, const fe_value *args,
                               const char *pname)
{
    return kiln_linear(g, in[0], args[0].i, args[1].i != 0, pname);
}

/* A [h, w] pair from a list argument: [] -> def, [v] -> [v, v]. */
static bool conv_pair(kiln_graph *g, const char *layer, const char *arg, const fe_value *v,
                      int64_t def, int64_t *out)
{
    if (v->n > 2) {
        kiln_errorf(g, KILN_ERR_INVALID, "%s: %s takes one or two values ([h, w]), got %d",
                    layer, arg, v->n);
        return false;
    }
    out[0] = v->n ? v->ints[0] : def;
    out[1] = v->n == 2 ? v->ints[1] : out[0];
    return true;
}

/* conv2d(x, out_channels, kernel, stride=1, padding=0, dilation=1, groups=1,
 * bias=true) and conv_transpose2d(..., output_padding=0 before dilation):
 * kiln_conv2d_layer / kiln_conv_transpose2d_layer. */
static kiln_value build_conv(kiln_graph *g, const kiln_value *in, const fe_value *args,
                             const char *pname, bool tr)
{
    const char *layer = tr ? "conv_transpose2d" : "conv2d";
    kiln_conv_params p;
    memset(&p, 0, sizeof p);
    int64_t k[2];
    int a = 1;
    if (!conv_pair(g, layer, "kernel", &args[a++], 1, k) ||
        !conv_pair(g, layer, "stride", &args[a++], 1, p.stride) ||
        !conv_pair(g, layer, "padding", &args[a++], 0, p.padding) ||
        (tr && !conv_pair(g, layer, "output_padding", &args[a++], 0, p.output_padding)) ||
        !conv_pair(g, layer, "dilation", &args[a++], 1, p.dilation))
        return KILN_ERR_INVALID;
    if (args[a].i < 1)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s: groups must be at least 1, got %lld", layer,
                           (long long)args[a].i);
    p.groups = args[a++].i;
    bool bias = args[a].i != 0;
    if (tr) return kiln_conv_transpose2d_layer(g, in[0], args[0].i, k[0], k[1], &p, bias, pname);
    return kiln_conv2d_layer(g, in[0], args[0].i, k[0], k[1], &p, bias, pname);
}

static kiln_value build_conv2d(kiln_graph *g, const kiln_value *in, const fe_value *args,
                               const char *pname)
{
    return build_conv(g, in, args, pname, false);
}

static kiln_value build_conv_transpose2d(kiln_graph *g, const kiln_value *in,
                                         const fe_value *args, const char *pname)
{
    return build_conv(g, in, args, pname, true);
}

/* batchnorm(x, momentum=0.1, eps=1e-5): BatchNorm1d/2d over x [N, C, ...]
 * (kiln_batchnorm): "<name>.weight", "<name>.bias", running statistics. */
static kiln_value build_batchnorm(kiln_graph *g, const kiln_value *in, const fe_value *args,
                                  const char *pname)
{
    return kiln_batchnorm(g, in[0], args[0].f, args[1].f, pname);
}

/* dropout(x, p=0.5): zeroes with probability p in training, the identity in
 * evaluation (kiln_dropout; its masks are seeded by the layer's name). */
static kiln_value build_dropout(kiln_graph *g, const kiln_value *in, const fe_value *args,
                                const char *pname)
{
    return kiln_dropout(g, in[0], args[0].f, pname);
}

const fe_layer fe_layers[] = {
    {"linear", 1, 2,
     {{"out_features", FA_INT, true, 0}, {"bias", FA_BOOL, false, 1}},
     build_linear},
    {"conv2d", 1, 7,
     {{"out_channels", FA_INT, true, 0}, {"kernel", FA_INTS, true, 0},
      {"stride", FA_INTS, false, 0}, {"padding", FA_INTS, false, 0},
      {"dilation", FA_INTS, false, 0}, {"groups", FA_INT, false, 1}, {"bias", FA_BOOL, false, 1}},
     build_conv2d},
    {"conv_transpose2d", 1, 8,
     {{"out_channels", FA_INT, true, 0}, {"kernel", FA_INTS, true, 0},
      {"stride", FA_INTS, false, 0}, {"padding", FA_INTS, false, 0},
      {"output_padding", FA_INTS, false, 0}, {"dilation", FA_INTS, false, 0},
      {"groups", FA_INT, false, 1}, {"bias", FA_BOOL, false, 1}},
     build_conv_transpose2d},
    {"batchnorm", 1, 2, {{"momentum", FA_FLOAT, false, 0.1}, {"eps", FA_FLOAT, false, 1e-5}},
     build_batchnorm},
    {"dropout", 1, 1, {{"p", FA_FLOAT, false, 0.5}}, build_dropout},
};
const int fe_nlayers = (int)(sizeof fe_layers / sizeof fe_layers[0]);

/* ---- metrics ----
 *
 * Each builds the partial of one batch: a sum over its samples (MEAN: the
 * runtime divides the summed partials by the sample count, fastai's
 * batch-size-weighted average) or a vector of sums combined once over the
 * whole validation set by the metric's kind (kiln_metric_kind): pixel
 * accuracy [hits, pixels], rmse [sse, count], mean_iou [C intersections, C
 * unions], dice [intersection, |pred| + |target|]. Partials are f32 (counts
 * per batch stay exact below 2^24); the runtime sums them in double. */

static const kiln_node *nd(kiln_graph *g, kiln_value v) { return &g->nodes[v]; }

/* A scalar (or any value of one element) as a [1] vector. */
static kiln_value vec1(kiln_graph *g, kiln_value v)
{
    int64_t one = 1;
    return kiln_reshape(g, v, 1, &one);
}

/* [a, b] from two scalars. */
static kiln_value pair(kiln_graph *g, kiln_value a, kiln_value b)
{
    kiln_value v[2] = {vec1(g, a), vec1(g, b)};
    return kiln_concat(g, 2, v, 0);
}

static kiln_value count_of(kiln_graph *g, kiln_value v)
{
    return kiln_scalar(g, (double)kiln_node_numel(nd(g, v)), KILN_F32);
}

static kiln_value as_f32(kiln_graph *g, kiln_value v) { return kiln_cast(g, v, KILN_F32); }

/* The class index per position: argmax over the classes (axis 1) of logits
 * [N, C, d...], checked against labels [N, d...]; i64 [N, d...]. */
static kiln_value seg_pred(kiln_graph *g, const char *what, kiln_value out, kiln_value y)
{
    const kiln_node *x = nd(g, out), *t = nd(g, y);
    char a[128], b[128];
    bool ok = x->rank >= 2 && t->rank == x->rank - 1 && t->shape[0] == x->shape[0] &&
              (t->dtype == KILN_I32 || t->dtype == KILN_I64 || t->dtype == KILN_U8);
    for (int i = 1; ok && i < t->rank; i++) ok = t->shape[i] == x->shape[i + 1];
    if (!ok)
        return kiln_errorf(g, KILN_ERR_SHAPE, "%s: logits %s and labels %s do not fit: labels "
                           "are integer, the logits' shape without the class axis 1",
                           what, kiln_node_type_str(x, a, sizeof a),
                           kiln_node_type_str(t, b, sizeof b));
    return kiln_argmax(g, out, 1);
}

/* accuracy(logits, labels, ignore=<none>).
 * logits [N, C] and labels [N] without ignore: the count of samples whose
 * largest logit is at the label (MEAN, unchanged). Segmentation, logits
 * [N, C, d...] and labels [N, d...] (argmax over axis 1, per position), or
 * any call with ignore: [hits, counted positions] over the positions whose
 * label is not `ignore` (RATIO: fastai's acc_camvid over the whole set).
 * Other shapes keep the argmax over the last axis, compared elementwise. */
static kiln_value build_accuracy(kiln_graph *g, const kiln_value *in, const fe_value *args,
                                 const bool *given, kiln_metric_kind *kind)
{
    kiln_value out = in[0], y = in[1];
    const kiln_node *x = nd(g, out), *t = nd(g, y);
    kiln_dtype yt = (kiln_dtype)t->dtype;
    bool seg = x->rank >= 3 && t->rank == x->rank - 1;
    if (!seg && !given[0]) {
        kiln_value pred = kiln_cast(g, kiln_argmax(g, out, -1), yt);
        kiln_value hit = as_f32(g, kiln_eq(g, pred, y));
        return kiln_reduce_sum(g, hit, 0, NULL, 0);
    }
    kiln_value pred = seg ? seg_pred(g, "accuracy", out, y) : kiln_argmax(g, out, -1);
    pred = kiln_cast(g, pred, yt);
    kiln_value hit = as_f32(g, kiln_eq(g, pred, y));
    kiln_value count = count_of(g, y);
    if (given[0]) {
        kiln_value valid = as_f32(g, kiln_ne(g, y, kiln_scalar(g, (double)args[0].i, yt)));
        hit = kiln_mul(g, hit, valid);
        count = kiln_reduce_sum(g, valid, 0, NULL, 0);
    }
    *kind = KILN_METRIC_RATIO;
    return pair(g, kiln_reduce_sum(g, hit, 0, NULL, 0), count);
}

/* Thresholded predictions of float logits: (sigmoid(out) or out) > thresh. */
static kiln_value above(kiln_graph *g, kiln_value out, double thresh, bool sigmoid)
{
    kiln_dtype t = (kiln_dtype)nd(g, out)->dtype;
    kiln_value p = sigmoid ? kiln_sigmoid(g, out) : out;
    return kiln_gt(g, p, kiln_scalar(g, thresh, t));
}

static kiln_status same_shape(kiln_graph *g, const char *what, kiln_value a, kiln_value b)
{
    const kiln_node *x = nd(g, a), *t = nd(g, b);
    char s1[128], s2[128];
    if (x->rank == t->rank && !memcmp(x->shape, t->shape, (size_t)x->rank * sizeof x->shape[0]))
        return KILN_OK;
    return kiln_errorf(g, KILN_ERR_SHAPE, "%s: the predictions %s and targets %s need the same "
                       "shape", what, kiln_node_type_str(x, s1, sizeof s1),
                       kiln_node_type_str(t, s2, sizeof s2));
}

/* accuracy_thresh(out, y, thresh=0.5, sigmoid=true), fastai v1's multi-label
 * accuracy: the share of all elements where (sigmoid(out) > thresh) equals
 * the 0/1 target, over the whole set: [hits, elements] (RATIO). */
static kiln_value build_accuracy_thresh(kiln_graph *g, const kiln_value *in, const fe_value *args,
                                        const bool *given, kiln_metric_kind *kind)
{
    (void)given;
    kiln_value out = in[0], y = in[1];
    kiln_status st = same_shape(g, "accuracy_thresh", out, y);
    if (st) return st;
    kiln_value pred = kiln_cast(g, above(g, out, args[0].f, args[1].i != 0),
                                (kiln_dtype)nd(g, y)->dtype);
    kiln_value hit = as_f32(g, kiln_eq(g, pred, y));
    *kind = KILN_METRIC_RATIO;
    return pair(g, kiln_reduce_sum(g, hit, 0, NULL, 0), count_of(g, y));
}

/* fbeta(out, y, beta=2, thresh=0.2, sigmoid=true), fastai v1's fbeta (the
 * Planet recipe), per sample over the tags (every axis but 0), eps = 1e-9:
 *   pred = (sigmoid(out) > thresh), tp = sum(pred * y),
 *   prec = tp / (sum(pred) + eps), rec = tp / (sum(y) + eps),
 *   f = prec * rec / (prec * beta^2 + rec + eps) * (1 + beta^2)
 * in out's dtype; the partial is the sum of f over the batch (MEAN: the
 * mean over samples). */
static kiln_value build_fbeta(kiln_graph *g, const kiln_value *in, const fe_value *args,
                              const bool *given, kiln_metric_kind *kind)
{
    (void)given;
    (void)kind;
    kiln_value out = in[0], y = in[1];
    kiln_status st = same_shape(g, "fbeta", out, y);
    if (st) return st;
    const kiln_node *x = nd(g, out);
    if (x->rank < 2)
        return kiln_errorf(g, KILN_ERR_SHAPE, "fbeta: the predictions need a sample axis and "
                           "a tag axis ([N, tags]), got rank %d", x->rank);
    kiln_dtype t = (kiln_dtype)x->dtype;
    int64_t axes[KILN_MAX_RANK];
    int na = 0;
    for (int d = 1; d < x->rank; d++) axes[na++] = d;
    double b2 = args[0].f * args[0].f;
    kiln_value eps = kiln_scalar(g, 1e-9, t);
    kiln_value pred = kiln_cast(g, above(g, out, args[1].f, args[2].i != 0), t);
    kiln_value yt = kiln_cast(g, y, t);
    kiln_value tp = kiln_reduce_sum(g, kiln_mul(g, pred, yt), na, axes, 0);
    kiln_value prec = kiln_div(g, tp, kiln_add(g, kiln_reduce_sum(g, pred, na, axes, 0), eps));
    kiln_value rec = kiln_div(g, tp, kiln_add(g, kiln_reduce_sum(g, yt, na, axes, 0), eps));
    kiln_value den = kiln_add(g, kiln_add(g, kiln_mul(g, prec, kiln_scalar(g, b2, t)), rec), eps);
    kiln_value f = kiln_mul(g, kiln_div(g, kiln_mul(g, prec, rec), den),
                            kiln_scalar(g, 1 + b2, t));
    return kiln_reduce_sum(g, f, 0, NULL, 0);
}

/* Labels (i64) with the positions to leave out set to -1, which one_hot
 * turns into a row of zeros. */
static kiln_value one_hot_f32(kiln_graph *g, kiln_value labels, int64_t depth)
{
    char d[40];
    snprintf(d, sizeof d, "depth=%lld", (long long)depth);
    const char *attrs[2] = {d, "dtype=f32"};
    return kiln_op(g, "one_hot", 1, &labels, 2, attrs);
}

/* mean_iou(out, y, ignore=<none>): logits [N, C, d...], labels [N, d...].
 * Per class c over the batch: intersection = #(pred = c and label = c),
 * union = #(pred = c or label = c), positions labelled `ignore` left out
 * (and predictions of class `ignore` counted nowhere, so that class has no
 * union and drops out). Partial [2C]: the C intersections, then the C
 * unions; the runtime sums them over the set and takes the mean of
 * intersection / union over the classes whose union is not 0 (IOU_MEAN). */
static kiln_value build_mean_iou(kiln_graph *g, const kiln_value *in, const fe_value *args,
                                 const bool *given, kiln_metric_kind *kind)
{
    kiln_value out = in[0], y = in[1];
    kiln_value pred = seg_pred(g, "mean_iou", out, y);
    if (pred < 0) return pred;
    int64_t C = nd(g, out)->shape[1];
    kiln_value lab = kiln_cast(g, y, KILN_I64);
    if (given[0]) {
        kiln_value ign = kiln_scalar(g, (double)args[0].i, KILN_I64);
        kiln_value none = kiln_scalar(g, -1, KILN_I64);
        kiln_value skip = kiln_eq(g, lab, ign);
        pred = kiln_where(g, kiln_eq(g, pred, ign), none, pred);
        pred = kiln_where(g, skip, none, pred);
        lab = kiln_where(g, skip, none, lab);
    }
    kiln_value p = one_hot_f32(g, pred, C), t = one_hot_f32(g, lab, C);
    int rank = nd(g, lab)->rank;
    int64_t axes[KILN_MAX_RANK];
    for (int d = 0; d < rank; d++) axes[d] = d;
    kiln_value both = kiln_mul(g, p, t);
    kiln_value inter = kiln_reduce_sum(g, both, rank, axes, 0);
    kiln_value uni = kiln_reduce_sum(g, kiln_sub(g, kiln_add(g, p, t), both), rank, axes, 0);
    kiln_value v[2] = {inter, uni};
    *kind = KILN_METRIC_IOU_MEAN;
    return kiln_concat(g, 2, v, 0);
}

/* dice(out, y): fastai v1's dice (iou=False) over the whole set, class 0
 * the background: [intersection, |pred| + |target|] with intersection the
 * positions where prediction and label agree on a foreground class and
 * |pred|, |target| the foreground positions of each; 2 * intersection /
 * (|pred| + |target|), 1 when both are empty (DICE). For two classes this is
 * exactly fastai's dice; with more, a position counts when its foreground
 * class is right (fastai multiplies the class indices instead). */
static kiln_value build_dice(kiln_graph *g, const kiln_value *in, const fe_value *args,
                             const bool *given, kiln_metric_kind *kind)
{
    (void)args;
    (void)given;
    kiln_value out = in[0], y = in[1];
    kiln_value pred = seg_pred(g, "dice", out, y);
    if (pred < 0) return pred;
    kiln_value lab = kiln_cast(g, y, KILN_I64), zero = kiln_scalar(g, 0, KILN_I64);
    kiln_value fg_p = as_f32(g, kiln_ne(g, pred, zero)), fg_y = as_f32(g, kiln_ne(g, lab, zero));
    kiln_value inter = kiln_mul(g, as_f32(g, kiln_eq(g, pred, lab)), fg_y);
    kiln_value total = kiln_add(g, kiln_reduce_sum(g, fg_p, 0, NULL, 0),
                                kiln_reduce_sum(g, fg_y, 0, NULL, 0));
    *kind = KILN_METRIC_DICE;
    return pair(g, kiln_reduce_sum(g, inter, 0, NULL, 0), total);
}

/* rmse(pred, target): sqrt of the mean squared error over the whole set:
 * [sum of squared errors, elements] (SQRT_MEAN), not a mean of per-batch
 * roots. The target is cast to pred's dtype and may differ in shape when
 * the element counts agree (pred [N, 1], target [N]). */
static kiln_value build_rmse(kiln_graph *g, const kiln_value *in, const fe_value *args,
                             const bool *given, kiln_metric_kind *kind)
{
    (void)args;
    (void)given;
    kiln_value pred = in[0], y = in[1];
    const kiln_node *x = nd(g, pred), *t = nd(g, y);
    char a[128], b[128];
    if (!kiln_dtype_is_float((kiln_dtype)x->dtype) || kiln_node_numel(x) != kiln_node_numel(t))
        return kiln_errorf(g, KILN_ERR_SHAPE, "rmse: the predictions %s must be float and have "
                           "as many elements as the targets %s",
                           kiln_node_type_str(x, a, sizeof a), kiln_node_type_str(t, b, sizeof b));
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, x->shape, sizeof shape);
    kiln_value tgt = kiln_cast(g, kiln_reshape(g, y, x->rank, shape), (kiln_dtype)x->dtype);
    kiln_value d = kiln_sub(g, pred, tgt);
    kiln_value sse = as_f32(g, kiln_reduce_sum(g, kiln_mul(g, d, d), 0, NULL, 0));
    *kind = KILN_METRIC_SQRT_MEAN;
    return pair(g, sse, count_of(g, pred));
}

const fe_metric fe_metrics[] = {
    {"accuracy", 2, 1, {{"ignore", FA_INT, false, 0}}, build_accuracy},
    {"accuracy_thresh", 2, 2, {{"thresh", FA_FLOAT, false, 0.5}, {"sigmoid", FA_BOOL, false, 1}},
     build_accuracy_thresh},
    {"fbeta", 2, 3,
     {{"beta", FA_FLOAT, false, 2}, {"thresh", FA_FLOAT, false, 0.2},
      {"sigmoid", FA_BOOL, false, 1}},
     build_fbeta},
    {"mean_iou", 2, 1, {{"ignore", FA_INT, false, 0}}, build_mean_iou},
    {.name = "dice", .ninputs = 2, .build = build_dice},
    {.name = "rmse", .ninputs = 2, .build = build_rmse},
};
const int fe_nmetrics = (int)(sizeof fe_metrics / sizeof fe_metrics[0]);
