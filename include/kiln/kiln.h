/* kiln.h — the public C API of kiln, a dataflow-graph compiler.
 *
 * Conventions (every function below follows them):
 *  - Every name carries the `kiln_` prefix; handles are opaque.
 *  - A call that can fail returns a kiln_status (0 is KILN_OK, failures are
 *    negative) and leaves a message on its handle: kiln_graph_error(g).
 *    kiln never aborts or exits on bad input.
 *  - Graph builder calls return a kiln_value: a node id >= 0, or a negative
 *    kiln_status on failure. A builder call given a negative value as an
 *    input returns that same status without touching the graph, so a chain
 *    of calls can be checked once at its end.
 *  - Whoever calls a *_new / *_load / *_parse function owns the handle it
 *    returns and frees it with the matching *_free.
 *
 * A minimal driver (a two-layer perceptron and its training program):
 *
 *     kiln_graph *g = kiln_graph_new("mlp");
 *     int64_t xs[] = {64, 784}, ys[] = {64};
 *     kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
 *     kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
 *     kiln_value h = kiln_relu(g, kiln_linear(g, x, 512, 1, "fc1"));
 *     kiln_value out = kiln_linear(g, h, 10, 1, "fc2");
 *     kiln_value loss = kiln_cross_entropy(g, out, y);
 *     if (kiln_set_loss(g, loss, "loss") < 0) puts(kiln_graph_error(g));
 *     kiln_train_options opt = kiln_train_defaults();
 *     kiln_graph *train = NULL;
 *     kiln_train_program(g, &opt, &train);
 */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_MAX_RANK 8

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID = -1,     /* bad argument or attribute */
    KILN_ERR_SHAPE = -2,       /* shapes or dtypes do not fit together */
    KILN_ERR_PARSE = -3,       /* malformed model text or IR text */
    KILN_ERR_IO = -4,          /* a file could not be read or written */
    KILN_ERR_NOMEM = -5,       /* out of memory */
    KILN_ERR_UNSUPPORTED = -6, /* e.g. an op with no gradient rule */
    KILN_ERR_NOT_FOUND = -7,   /* unknown name: op, value, pass, tensor */
    KILN_ERR_CORRUPT = -8,     /* file content fails its bounds checks */
    KILN_ERR_INTERNAL = -9,    /* a kiln bug: please report it */
    KILN_ERR_COMPILE = -10,    /* the C compiler failed or rejected generated code */
} kiln_status;

/* A short, static description of a status ("shape mismatch", ...). */
const char *kiln_status_str(kiln_status s);

typedef enum kiln_dtype {
    KILN_F32,
    KILN_F64,
    KILN_I32,
    KILN_I64,
    KILN_U8,
    KILN_BOOL,
    KILN_F16,  /* reserved for mixed precision */
    KILN_BF16, /* reserved for mixed precision */
    KILN_DTYPE_COUNT
} kiln_dtype;

const char *kiln_dtype_name(kiln_dtype t); /* "f32", "i32", ... */
size_t kiln_dtype_size(kiln_dtype t);      /* bytes per element */

/* What a node is to the program around it. Leaves (created by kiln_input and
 * friends) carry INPUT, TARGET, PARAM, CONST, STATE or HPARAM; computed nodes
 * carry NONE, or OUTPUT / LOSS / METRIC when the program returns them. */
typedef enum kiln_role {
    KILN_ROLE_NONE,
    KILN_ROLE_INPUT,  /* data fed per batch */
    KILN_ROLE_TARGET, /* labels fed per batch */
    KILN_ROLE_PARAM,  /* trainable parameter, persists across steps */
    KILN_ROLE_CONST,  /* named constant tensor (frozen weights) */
    KILN_ROLE_STATE,  /* optimizer state, persists across steps */
    KILN_ROLE_HPARAM, /* scalar hyperparameter set by the runtime per step */
    KILN_ROLE_OUTPUT, /* returned to the caller */
    KILN_ROLE_LOSS,   /* the scalar training loss */
    KILN_ROLE_METRIC, /* a metric partial (e.g. count of correct samples) */
    KILN_ROLE_COUNT
} kiln_role;

const char *kiln_role_name(kiln_role r); /* "input", "param", ... */

/* ---- graphs ------------------------------------------------------------ */

typedef struct kiln_graph kiln_graph;
typedef int32_t kiln_value;

/* A new empty graph, or NULL when out of memory. */
kiln_graph *kiln_graph_new(const char *name);
void kiln_graph_free(kiln_graph *g);
/* The message of the last failure on g ("" if none). Owned by g. */
const char *kiln_graph_error(const kiln_graph *g);
/* A deep copy, or NULL when out of memory. */
kiln_graph *kiln_graph_clone(const kiln_graph *g);
int32_t kiln_graph_num_nodes(const kiln_graph *g);
/* The node whose name is `name`, or KILN_ERR_NOT_FOUND. */
kiln_value kiln_graph_find(const kiln_graph *g, const char *name);
/* The first node with role r, or KILN_ERR_NOT_FOUND. */
kiln_value kiln_graph_find_role(const kiln_graph *g, kiln_role r);

/* Parameter initialisation, recorded on the parameter node and applied by the
 * runtime with a seeded generator. */
typedef enum kiln_init {
    KILN_INIT_ZEROS,
    KILN_INIT_ONES,
    KILN_INIT_UNIFORM, /* U(-scale, scale) */
    KILN_INIT_NORMAL,  /* N(0, scale^2) */
} kiln_init;

/* Leaves. Names must be unique among leaves; shapes are static. */
kiln_value kiln_input(kiln_graph *g, const char *name, kiln_dtype t, int rank,
                      const int64_t *shape);
kiln_value kiln_target(kiln_graph *g, const char *name, kiln_dtype t, int rank,
                       const int64_t *shape);
kiln_value kiln_param(kiln_graph *g, const char *name, kiln_dtype t, int rank,
                      const int64_t *shape, kiln_init init, double scale);
/* A scalar constant (rank 0) of dtype t; broadcasting takes it anywhere. */
kiln_value kiln_scalar(kiln_graph *g, double value, kiln_dtype t);

/* Mark a computed value as returned by the program. */
kiln_status kiln_set_output(kiln_graph *g, kiln_value v, const char *name);
kiln_status kiln_set_loss(kiln_graph *g, kiln_value v, const char *name);
kiln_status kiln_set_metric(kiln_graph *g, kiln_value v, const char *name);

/* How the runtime turns a metric's partials into its value. A metric's
 * partial is a vector of sums over one batch; the runtime adds the partials
 * of every batch of a validation set elementwise into s and, with N the
 * set's sample count, reports:
 *   MEAN       s[0] / N (a partial of 1 element: a per-sample sum, e.g. the
 *              count of correct samples); every metric starts as MEAN
 *   SQRT_MEAN  sqrt(s[0] / s[1]) ([sum of squared errors, count]: rmse)
 *   RATIO      s[0] / s[1] ([hits, count]: pixel accuracy without the
 *              ignored pixels); 0/0 is NaN
 *   IOU_MEAN   [2C]: s[0..C) intersections, s[C..2C) unions per class; the
 *              mean over the classes with a union > 0 of s[c] / s[C + c]
 *              (NaN when no class has one)
 *   DICE       [2]: 2 s[0] / s[1] ([intersection, |pred| + |target|]); 1
 *              when s[1] is 0, as fastai's dice */
typedef enum kiln_metric_kind {
    KILN_METRIC_MEAN,
    KILN_METRIC_SQRT_MEAN,
    KILN_METRIC_RATIO,
    KILN_METRIC_IOU_MEAN,
    KILN_METRIC_DICE,
    KILN_METRIC_KIND_COUNT
} kiln_metric_kind;

const char *kiln_metric_kind_name(kiln_metric_kind k); /* "mean", "sqrt_mean", ... */
/* Sets how metric v (a node marked with kiln_set_metric) is finalised. Its
 * element count must fit the kind: 1 (MEAN), 2 (SQRT_MEAN, RATIO, DICE) or
 * even and at least 2 (IOU_MEAN). */
kiln_status kiln_set_metric_kind(kiln_graph *g, kiln_value v, kiln_metric_kind kind);

/* Parameter groups (fastai's layer groups, for freezing and discriminative
 * learning rates; kiln/learner.h). Every parameter starts in group 0; groups
 * are numbered 0 (the first body group) to n-1 (the head), in the order of
 * the model, at most KILN_MAX_PARAM_GROUPS. A graph whose parameters are all
 * in group 0 has one group and gets exactly the training program it had
 * before groups existed. In a model file: `group NAME` (docs/LANGUAGE.md).
 * kiln_set_param_group fails unless param is a PARAM leaf and 0 <= group <
 * KILN_MAX_PARAM_GROUPS; kiln_param_group returns the group or a negative
 * status; kiln_graph_num_param_groups is 1 + the largest group of a
 * parameter (1 for a graph without parameters). */
#define KILN_MAX_PARAM_GROUPS 64
kiln_status kiln_set_param_group(kiln_graph *g, kiln_value param, int group);
int kiln_param_group(const kiln_graph *g, kiln_value param);
int kiln_graph_num_param_groups(const kiln_graph *g);

/* Ops. Binary and ternary ops broadcast by NumPy's rules; operands must share
 * a dtype (use kiln_cast). Axes may be negative (counted from the end). */
kiln_value kiln_matmul(kiln_graph *g, kiln_value a, kiln_value b, int trans_a, int trans_b);
kiln_value kiln_add(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_sub(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_mul(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_div(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_maximum(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_minimum(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_neg(kiln_graph *g, kiln_value x);
kiln_value kiln_exp(kiln_graph *g, kiln_value x);
kiln_value kiln_log(kiln_graph *g, kiln_value x);
kiln_value kiln_sqrt(kiln_graph *g, kiln_value x);
kiln_value kiln_pow(kiln_graph *g, kiln_value x, double exponent);
kiln_value kiln_relu(kiln_graph *g, kiln_value x);
kiln_value kiln_leaky_relu(kiln_graph *g, kiln_value x, double slope);
kiln_value kiln_sigmoid(kiln_graph *g, kiln_value x);
kiln_value kiln_tanh(kiln_graph *g, kiln_value x);
kiln_value kiln_gelu(kiln_graph *g, kiln_value x); /* exact (erf) form */
kiln_value kiln_where(kiln_graph *g, kiln_value cond, kiln_value a, kiln_value b);
kiln_value kiln_eq(kiln_graph *g, kiln_value a, kiln_value b); /* -> bool */
kiln_value kiln_ne(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_lt(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_le(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_gt(kiln_graph *g, kiln_value a, kiln_value b);
kiln_value kiln_ge(kiln_graph *g, kiln_value a, kiln_value b);
/* naxes == 0 reduces over every axis. */
kiln_value kiln_reduce_sum(kiln_graph *g, kiln_value x, int naxes, const int64_t *axes,
                           int keepdims);
kiln_value kiln_reduce_mean(kiln_graph *g, kiln_value x, int naxes, const int64_t *axes,
                            int keepdims);
kiln_value kiln_reduce_max(kiln_graph *g, kiln_value x, int naxes, const int64_t *axes,
                           int keepdims);
kiln_value kiln_argmax(kiln_graph *g, kiln_value x, int axis); /* -> i64, no gradient */
kiln_value kiln_softmax(kiln_graph *g, kiln_value x, int axis);
kiln_value kiln_log_softmax(kiln_graph *g, kiln_value x, int axis);
kiln_value kiln_reshape(kiln_graph *g, kiln_value x, int rank, const int64_t *shape);
kiln_value kiln_flatten(kiln_graph *g, kiln_value x, int axis); /* keeps axes < axis */
kiln_value kiln_permute(kiln_graph *g, kiln_value x, int rank, const int64_t *perm);
kiln_value kiln_transpose(kiln_graph *g, kiln_value x, int axis0, int axis1);
kiln_value kiln_broadcast_to(kiln_graph *g, kiln_value x, int rank, const int64_t *shape);
/* x[start:end:step] along one axis; Python's rules for negative bounds. */
kiln_value kiln_slice(kiln_graph *g, kiln_value x, int axis, int64_t start, int64_t end,
                      int64_t step);
kiln_value kiln_concat(kiln_graph *g, int n, const kiln_value *xs, int axis);
kiln_value kiln_cast(kiln_graph *g, kiln_value x, kiln_dtype t);
/* Losses: scalar means over the batch, as PyTorch's defaults. */
kiln_value kiln_cross_entropy(kiln_graph *g, kiln_value logits, kiln_value labels);
kiln_value kiln_mse_loss(kiln_graph *g, kiln_value pred, kiln_value target);
kiln_value kiln_bce_with_logits(kiln_graph *g, kiln_value logits, kiln_value target);
kiln_value kiln_l1_loss(kiln_graph *g, kiln_value pred, kiln_value target); /* mean |pred - target| */

/* Any op by its registry name with attributes as "name=value" strings
 * (e.g. "axes=[1]", "keepdims=1", "exponent=2.0"); the model language calls
 * ops this way. Unknown ops and attributes fail with KILN_ERR_NOT_FOUND. */
kiln_value kiln_op(kiln_graph *g, const char *op, int ninputs, const kiln_value *inputs,
                   int nattrs, const char *const *attrs);

/* Layers: create their parameters ("<name>.weight", "<name>.bias") with
 * PyTorch's default initialisation, then apply the op.
 * linear: y = x @ W^T + b, W: [out, in] (Kaiming-uniform with a = sqrt(5),
 * i.e. U(+-1/sqrt(in))), b: [out] (U(+-1/sqrt(in))). */
kiln_value kiln_linear(kiln_graph *g, kiln_value x, int64_t out_features, int bias,
                       const char *name);

/* 2-D convolutions over NCHW tensors, as PyTorch's F.conv2d and
 * F.conv_transpose2d. Pairs are [height, width]. A zero stride, dilation or
 * groups means 1, so a zeroed struct (or p == NULL) is the default: stride
 * 1, no padding, dilation 1, one group. */
typedef struct kiln_conv_params {
    int64_t stride[2], padding[2], dilation[2];
    int64_t output_padding[2]; /* conv_transpose2d only */
    int64_t groups;
} kiln_conv_params;

/* "No bias" for kiln_conv2d / kiln_conv_transpose2d (any other negative b
 * is an earlier error, passed through). */
#define KILN_NO_VALUE ((kiln_value)INT32_MIN)

/* conv2d: x [N, C, H, W], w [Co, C/groups, kh, kw], b [Co] or KILN_NO_VALUE
 * -> [N, Co, OH, OW], OH = floor((H + 2*pad - dil*(kh-1) - 1) / stride) + 1
 * (likewise OW). */
kiln_value kiln_conv2d(kiln_graph *g, kiln_value x, kiln_value w, kiln_value b,
                       const kiln_conv_params *p);
/* conv_transpose2d: x [N, Cin, H, W], w [Cin, Cout/groups, kh, kw], b [Cout]
 * or KILN_NO_VALUE -> [N, Cout, Hout, Wout],
 * Hout = (H-1)*stride - 2*pad + dil*(kh-1) + output_padding + 1. */
kiln_value kiln_conv_transpose2d(kiln_graph *g, kiln_value x, kiln_value w, kiln_value b,
                                 const kiln_conv_params *p);
/* Layers, named like kiln_linear's. conv2d: "<name>.weight" [out, C/groups,
 * kh, kw] and "<name>.bias" [out], both U(+-1/sqrt(C/groups*kh*kw));
 * conv_transpose2d: "<name>.weight" [C, out/groups, kh, kw] and
 * "<name>.bias" [out], both U(+-1/sqrt(out/groups*kh*kw)) (PyTorch's
 * defaults: Kaiming-uniform with a = sqrt(5), fan-in from the weight's
 * axis 1). */
kiln_value kiln_conv2d_layer(kiln_graph *g, kiln_value x, int64_t out_channels, int64_t kh,
                             int64_t kw, const kiln_conv_params *p, int bias, const char *name);
kiln_value kiln_conv_transpose2d_layer(kiln_graph *g, kiln_value x, int64_t out_channels,
                                       int64_t kh, int64_t kw, const kiln_conv_params *p,
                                       int bias, const char *name);

/* Pooling, upsampling and padding over the last two axes of a float x
 * ([C, H, W] or [N, C, H, W]), as torch.nn.functional's max_pool2d,
 * avg_pool2d, adaptive_avg_pool2d, interpolate and pad (ir/ops_pool.def).
 * Pairs are [height, width]. In kiln_pool_params a zero stride means the
 * kernel and a zero dilation 1, so {.kernel = {2, 2}} is a 2x2 pool with
 * stride 2; padding is at most half the kernel. Output size per axis:
 * floor((L + 2 pad - dil (k - 1) - 1) / stride) + 1 (ceil with ceil_mode,
 * dropping a last window that would start in the right padding). */
typedef struct kiln_pool_params {
    int64_t kernel[2], stride[2], padding[2];
    int64_t dilation[2]; /* max_pool2d only */
    int ceil_mode;
    int exclude_pad; /* avg_pool2d: divide by the elements inside x
                        (PyTorch's count_include_pad=False) */
} kiln_pool_params;
kiln_value kiln_max_pool2d(kiln_graph *g, kiln_value x, const kiln_pool_params *p);
kiln_value kiln_avg_pool2d(kiln_graph *g, kiln_value x, const kiln_pool_params *p);
/* Output [.., oh, ow]; row i averages rows floor(i H/oh) .. ceil((i+1) H/oh) - 1
 * (columns likewise); 1, 1 is global average pooling. */
kiln_value kiln_adaptive_avg_pool2d(kiln_graph *g, kiln_value x, int64_t oh, int64_t ow);
#define KILN_UPSAMPLE_NEAREST 0
#define KILN_UPSAMPLE_BILINEAR 1
/* By the integer factor `scale`, or to [oh, ow] when scale is 0; mode
 * KILN_UPSAMPLE_NEAREST (src = floor(dst in / out)) or _BILINEAR
 * (align_corners as PyTorch's; it must be 0 for nearest). */
kiln_value kiln_upsample(kiln_graph *g, kiln_value x, int64_t scale, int64_t oh, int64_t ow,
                         int mode, int align_corners);
#define KILN_PAD_CONSTANT 0
#define KILN_PAD_REFLECT 1
/* F.pad on the last axis (npads 2: [left, right]) or last two (4: [left,
 * right, top, bottom]); negative pads crop; mode KILN_PAD_CONSTANT fills
 * with value, KILN_PAD_REFLECT mirrors (pads below the axis's size). */
kiln_value kiln_pad(kiln_graph *g, kiln_value x, int npads, const int64_t *pads, double value,
                    int mode);

/* Training versus evaluation: a in the training program (train_step), b in
 * the evaluation and inference programs (eval_step, forward); same dtype
 * and shape. Program assembly keeps only the branch of its mode. */
kiln_value kiln_train_eval(kiln_graph *g, kiln_value a, kiln_value b);

/* batchnorm (torch.nn.BatchNorm1d over x [N, C], BatchNorm2d over
 * [N, C, H, W], any [N, C, ...]): parameters "<name>.weight" (ones) and
 * "<name>.bias" (zeros) of [C]; model state "<name>.running_mean" (zeros),
 * "<name>.running_var" (ones), f32/f64 like x, and
 * "<name>.num_batches_tracked" (i64 scalar). Training normalises with the
 * batch's mean and biased variance and updates running = (1 - momentum)
 * running + momentum batch (the unbiased variance, n/(n-1)) and counts the
 * batch; evaluation normalises with the running statistics:
 *   y = (x - mean) / sqrt(var + eps) * weight + bias.
 * PyTorch's defaults are momentum 0.1, eps 1e-5. A channel of one value per
 * batch (N times the spatial size is 1) is KILN_ERR_SHAPE, as PyTorch
 * refuses to train on it. Model state is neither trained nor optimizer
 * state: it lives with the parameters, kiln_program_init_params sets it,
 * checkpoints save it under these names (PyTorch's state_dict names). */
kiln_value kiln_batchnorm(kiln_graph *g, kiln_value x, double momentum, double eps,
                          const char *name);

/* dropout (torch.nn.Dropout): in training each element is zeroed with
 * probability p and the rest scaled by 1/(1-p); in evaluation it is the
 * identity. The mask is a function of the layer's seed (derived from name),
 * the `step` hyperparameter (a new mask every step: the Learner sets it)
 * and the element's index, the same in every backend. Reads the graph's
 * hparam "step" (an f32 scalar), created when the graph has none. */
kiln_value kiln_dropout(kiln_graph *g, kiln_value x, double p, const char *name);

/* ---- IR text ----------------------------------------------------------- */

/* Writes the textual IR; kiln_graph_parse reads it back into an identical
 * graph, so print -> parse -> print is byte-identical. */
kiln_status kiln_graph_print(const kiln_graph *g, FILE *f);
/* The text as a malloc'd string the caller frees; NULL when out of memory. */
char *kiln_graph_to_string(const kiln_graph *g);
/* Parses IR text. On failure *out is NULL and, if err is not NULL, *err is a
 * malloc'd message "file:line:col: error: ..." the caller frees. */
kiln_status kiln_graph_parse(const char *text, const char *filename, kiln_graph **out,
                             char **err);
/* Checks every structural rule of the IR; the message names the node. */
kiln_status kiln_graph_verify(kiln_graph *g);

/* ---- model language ---------------------------------------------------- */

/* Compiles a model file (or text) into a forward graph, with the batch size
 * B bound to `batch`. On failure *out is NULL and *err (caller frees) holds
 * "file:line:col: error: message", the source line and a caret; an error
 * with no place in the text (file not found, batch < 1) reads
 * "file: error: message". Statuses: KILN_ERR_PARSE (syntax), NOT_FOUND
 * (unknown name, op, attribute), SHAPE, INVALID, IO. */
kiln_status kiln_model_load(const char *path, int64_t batch, kiln_graph **out, char **err);
kiln_status kiln_model_parse(const char *text, const char *filename, int64_t batch,
                             kiln_graph **out, char **err);

/* The same, with values for the model's `dim` statements (`dim S = 28`
 * declares a size with a default that a caller may change at load time:
 * the image size of progressive resizing). A name the model does not
 * declare is an error (KILN_ERR_NOT_FOUND) naming the dims it has. */
typedef struct kiln_dim {
    const char *name;
    int64_t value;
} kiln_dim;
kiln_status kiln_model_load_dims(const char *path, int64_t batch, const kiln_dim *dims, int ndims,
                                 kiln_graph **out, char **err);
kiln_status kiln_model_parse_dims(const char *text, const char *filename, int64_t batch,
                                  const kiln_dim *dims, int ndims, kiln_graph **out, char **err);

/* ---- passes ------------------------------------------------------------ */

/* Runs one pass by name: "infer", "cse", "dce" (KILN_ERR_NOT_FOUND names
 * the passes otherwise). In debug builds the verifier runs after it. */
kiln_status kiln_run_pass(kiln_graph *g, const char *pass);

typedef enum kiln_optimizer { KILN_OPT_ADAMW, KILN_OPT_SGD } kiln_optimizer;

typedef struct kiln_train_options {
    kiln_optimizer optimizer; /* default KILN_OPT_ADAMW, as fastai */
    int nesterov;             /* SGD only */
    int keep_grads;           /* also return each gradient as OUTPUT "grad.<param>" */
    /* Called after each pass with its name, when not NULL (--print-after). */
    void (*after_pass)(const char *pass, const kiln_graph *g, void *user);
    void *user;
} kiln_train_options;

kiln_train_options kiln_train_defaults(void);

/* Builds the training program of a forward graph that has a loss: forward,
 * loss, metric partials, backward, and the optimizer update writing the
 * parameters and optimizer state in place (assign ops). Hyperparameters are
 * HPARAM leaves named "lr", "mom" (SGD momentum or Adam's beta1), "beta2",
 * "eps", "wd" and "step" (the 1-based step count, as f32). Optimizer state
 * is named "<param>.exp_avg" / "<param>.exp_avg_sq" (AdamW) or
 * "<param>.momentum_buffer" (SGD), as PyTorch names it. With keep_grads the
 * gradient of parameter P is also an OUTPUT named "grad.P". The updates
 * follow torch.optim.AdamW and torch.optim.SGD exactly. Runs simplify, cse
 * and dce. With parameters in several groups (kiln_set_param_group), group
 * k's updates use lr * "lr_mult.<k>" and write nothing while "frozen.<k>"
 * (batchnorm parameters: "frozen_bn.<k>") is > 0 (kiln/learner.h).
 * Fails when the graph has no loss, no parameter, or an op on the path from
 * a parameter to the loss has no gradient rule (the message names it). */
kiln_status kiln_train_program(const kiln_graph *forward, const kiln_train_options *opt,
                               kiln_graph **out);
/* The evaluation program: forward, loss and metrics, no update. */
kiln_status kiln_eval_program(const kiln_graph *forward, kiln_graph **out);

/* ---- reference interpreter --------------------------------------------- */

/* Runs any graph op by op from the registry's reference implementations,
 * in double precision, rounding every value to its node's dtype (so an f32
 * graph behaves as f32 storage would). Parameters and state persist across
 * runs; assign ops update them. It is the test oracle, not the fast path. */
typedef struct kiln_interp kiln_interp;

kiln_status kiln_interp_new(const kiln_graph *g, kiln_interp **out);
void kiln_interp_free(kiln_interp *it);
const char *kiln_interp_error(const kiln_interp *it);
/* Sets a leaf's value from n doubles (n must equal its element count). */
kiln_status kiln_interp_set(kiln_interp *it, kiln_value leaf, const double *data, size_t n);
kiln_status kiln_interp_set_by_name(kiln_interp *it, const char *name, const double *data,
                                    size_t n);
kiln_status kiln_interp_run(kiln_interp *it);
/* A node's current value (numel doubles), owned by it; NULL if out of range. */
const double *kiln_interp_value(const kiln_interp *it, kiln_value v);
const double *kiln_interp_value_by_name(const kiln_interp *it, const char *name);

#include "kiln/program.h"
#include "kiln/data.h"
#include "kiln/learner.h"
#include "kiln/checkpoint.h"

#ifdef __cplusplus
}
#endif
#endif
