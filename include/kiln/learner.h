/* kiln/learner.h — the Learner: fastai v1's training loop over a compiled
 * program and two data sets. Included by kiln/kiln.h.
 *
 *     kiln_learner_options o = kiln_learner_defaults();
 *     kiln_learner *l;
 *     char *err = NULL;
 *     if (kiln_learner_new(prog, train, valid, &o, &l, &err)) { puts(err); free(err); }
 *     double lr;
 *     kiln_lr_find(l, &lr, "lr_find.svg");      // weights and optimizer state kept
 *     kiln_fit_one_cycle(l, 5, lr);
 *
 * prints, as fastai does (train_loss is the smoothed running loss):
 *
 *     epoch     train_loss  valid_loss  accuracy  time
 *     0         0.512334    0.401223    0.861500  00:04
 *     ...
 *
 * The program
 *   is any kiln_compile result with entry points "train_step" and
 *   "eval_step", exactly one INPUT tensor (f32 [B, ...]: the batch size B is
 *   its leading dimension) and one TARGET tensor ([B, ...], the data set's
 *   target dtype), a LOSS (a batch mean, as kiln's losses are) and any
 *   number of METRIC partials (sums over the batch, e.g. "accuracy" counts
 *   the correct samples; a vector of sums for metrics of another kind, e.g.
 *   mean_iou's per-class intersections and unions). The optimizer is read off its hyperparameters:
 *   "beta2" present means AdamW, else SGD. The learner borrows the program
 *   (and the data sets): they must outlive it.
 *
 * The table and the history file
 *   Columns: epoch, train_loss, valid_loss, each metric, time (mm:ss, for
 *   training and validation), each column max(8, len(name)) wide and two
 *   spaces apart, as fastprogress prints fastai's table; the header starts
 *   each fit call. Rows are numbered by the learner's epoch counter, which
 *   runs on across fit calls (fastai restarts at 0 per call) so that one
 *   learner's history is one table. The history file (options.history_path)
 *   is fastai's CSVLogger format: the header line
 *   "epoch,train_loss,valid_loss,accuracy,time" (with the program's
 *   metrics), written once when the file is empty, then one row per epoch,
 *   appended and closed as the epoch ends. Values are "%.6f"; "#na#" marks
 *   a missing one (no validation set).
 *
 * Metrics and losses per epoch
 *   valid_loss = sum(batch loss * n) / N over the validation set's N
 *   samples. Each metric's partials are summed elementwise over all the
 *   validation batches (the tail program's included) and finalised once by
 *   the metric's kind (kiln_tensor_info.metric, see kiln_metric_kind):
 *   sum / N for KILN_METRIC_MEAN (accuracy), sqrt(sse / count) for rmse,
 *   the mean over classes of the summed intersections over the summed
 *   unions for mean_iou, ... (kiln_metric_value). train_loss is the loss smoothed with
 *   beta 0.98 and debiased (fastai's SmoothenValue), its value at the end of
 *   the epoch, the smoothing running across the epochs of one fit call.
 *
 * The validation set's partial last batch
 *   The program's batch size is static, so a validation set whose size N is
 *   not a multiple of B leaves a last batch of r = N mod B samples that the
 *   program cannot evaluate exactly (padding it would count the padding in
 *   the loss and metrics). Give options.valid_tail: a program compiled from
 *   the same model with batch r (only its "eval_step" is used); before each
 *   validation that reaches the last batch the learner copies every
 *   parameter (and named constant) of the main program into it, by name.
 *   Without it kiln_learner_new fails with a message naming the fix (or use
 *   kiln_dataset_head to cut the set to a multiple of B). The training set's
 *   partial batch is dropped, as fastai does.
 *
 * Weight decay (fastai's true_wd)
 *   true_wd = 1 (the default) is decoupled weight decay, p *= 1 - lr*wd
 *   each step: AdamW programs do it in the graph; for SGD programs (whose
 *   graph adds wd*p to the gradient, L2) the learner scales the parameters
 *   itself before each step and sets the graph's "wd" to 0, as fastai's
 *   OptimWrapper does. true_wd = 0 is L2: SGD programs do it in the graph;
 *   AdamW programs cannot (kiln_learner_new fails unless wd is 0).
 *
 * Parameter groups: freezing and discriminative learning rates
 *   A program's parameters are split into ordered groups (fastai's layer
 *   groups: body groups, then the head; kiln_set_param_group, the model
 *   language's `group NAME`; kiln_tensor_info.group). With n > 1 groups the
 *   training program reads per group k the hyperparameters "lr_mult.<k>"
 *   (its lr is lr * lr_mult.<k>), "frozen.<k>" and "frozen_bn.<k>" (>0:
 *   its parameters and their optimizer state are not written, bit for bit;
 *   passes/train.c). The learner sets them:
 *    - kiln_learner_freeze_to(l, n), fastai's freeze_to: groups [0, n) are
 *      frozen (n < 0 counts from the end, so freeze() = freeze_to(-1)
 *      trains only the last group and unfreeze() = freeze_to(0) trains
 *      all). With options.train_bn (default 1, as fastai) the batchnorm
 *      parameters of frozen groups still train ("<X>.weight"/"<X>.bias"
 *      beside model state "<X>.running_mean"). The optimizer state is kept
 *      (PyTorch's requires_grad=False: the optimizer skips the parameter;
 *      fastai v2's Learner.freeze_to also clears all optimizer state, kiln
 *      does not), so unfreezing resumes where training left off. Freezing
 *      holds until the next freeze_to, across fit calls.
 *    - kiln_one_cycle_options.lr_lo: fastai's max_lr = slice(lr_lo, max_lr),
 *      the groups' peak lrs spread geometrically (kiln_lr_slice); each step
 *      the schedule's lr for max_lr is the last group's and group k runs at
 *      it times lrs[k] / max_lr. kiln_fit and kiln_fit_one_cycle run every
 *      group at the same lr (fastai's fit with a float lr).
 *   A program with one group has none of these hyperparameters and trains
 *   exactly as before groups existed.
 */
#ifndef KILN_LEARNER_H
#define KILN_LEARNER_H

#ifndef KILN_KILN_H
#error "include <kiln/kiln.h>"
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_learner kiln_learner;

/* ---- callbacks ----------------------------------------------------------- */

/* One training batch, as the batch callbacks see it. */
typedef struct kiln_batch_info {
    int64_t step;       /* the global, 1-based step of this batch (the "step" hparam) */
    int64_t epoch;      /* the learner's global epoch (0-based) */
    int64_t batch;      /* index of the batch in its epoch */
    int64_t iter;       /* the schedule's i: epoch of the cycle * batches per epoch + batch */
    int64_t n;          /* samples in the batch (always B for training) */
    double lr, mom;     /* the hyperparameters of this step; begin_batch may change them */
    double loss;        /* the batch's loss (NAN in begin_batch) */
    double smooth_loss; /* smoothed, debiased running loss (NAN in begin_batch) */
    int lr_find;        /* 1 while kiln_lr_find runs */
} kiln_batch_info;

/* What an epoch gave. Pointers are owned by the learner. */
typedef struct kiln_epoch_stats {
    int64_t epoch;     /* the learner's global epoch (0-based) */
    int64_t batches;   /* training batches run (fewer when stopped early) */
    double train_loss; /* smoothed running loss at the epoch's end */
    double valid_loss; /* NAN when there is no validation set */
    int nmetrics;
    const char *const *metric_names; /* the program's METRIC tensors, in order */
    const double *metrics; /* each metric's final value (kiln_metric_value of its partials
                              summed over the validation set); NAN without validation */
    double seconds;        /* training and validation */
} kiln_epoch_stats;

/* Callbacks, called in the order they were added; a NULL member is
 * skipped. Every callback of an event runs, even after one asks to stop.
 * A nonzero return stops training cleanly, and the fit call returns
 * KILN_OK (kiln_learner_stopped tells it stopped):
 *   begin_fit    no epoch runs;
 *   begin_epoch  that epoch does not run (nor is it reported);
 *   begin_batch  that batch does not run; the epoch ends there, is
 *                validated, reported and counted;
 *   end_batch    the epoch ends after this batch, likewise;
 *   end_epoch    no further epoch runs.
 * end_fit always runs last, also after a failure. The callbacks also run
 * during kiln_lr_find (info->lr_find is 1; it validates and reports
 * nothing, and stopping it early still restores the weights). */
typedef struct kiln_callbacks {
    int (*begin_fit)(kiln_learner *l, int64_t epochs, void *user);
    int (*begin_epoch)(kiln_learner *l, int64_t epoch, void *user);
    int (*begin_batch)(kiln_learner *l, kiln_batch_info *b, void *user);
    int (*end_batch)(kiln_learner *l, const kiln_batch_info *b, void *user);
    int (*end_epoch)(kiln_learner *l, const kiln_epoch_stats *s, void *user);
    void (*end_fit)(kiln_learner *l, void *user);
    void *user;
} kiln_callbacks;

/* ---- creation -------------------------------------------------------------- */

typedef struct kiln_learner_options {
    int64_t batch;   /* 0: the program's B; otherwise it must equal B */
    uint64_t seed;   /* the training set's shuffle orders (and init_params) */
    int init_params; /* nonzero: kiln_program_init_params(program, seed) at creation;
                        default 0 (the caller initialises or loads weights) */
    /* Optimizer hyperparameters, fastai's defaults. mom is SGD's momentum or
     * AdamW's beta1, used by kiln_fit; kiln_fit_one_cycle cycles it. */
    double mom;               /* 0.9 */
    double beta2;             /* 0.99 (AdamW) */
    double eps;               /* 1e-5 (AdamW; fastai v2's value, v1 keeps torch's 1e-8) */
    double wd;                /* 1e-2 */
    int true_wd;              /* 1: decoupled weight decay (see above) */
    double smooth_beta;       /* 0.98: the running loss's smoothing */
    int print_table;          /* 1: print the epoch table to out */
    FILE *out;                /* NULL: stdout */
    const char *history_path; /* NULL: none; else fastai's CSVLogger file */
    int history_append;       /* 0: the learner empties the file before its first row;
                                 1: rows are added to what is there */
    kiln_program *valid_tail; /* eval program for the validation set's last batch
                                 (see above; unused when N is a multiple of B) */
    int train_bn;             /* 1 (fastai's default): batchnorm parameters of frozen
                                 groups still train (see "Parameter groups") */
} kiln_learner_options;

kiln_learner_options kiln_learner_defaults(void);

/* A learner over `program`, training on `train` (shuffled per epoch, the
 * partial last batch dropped) and validating on `valid` (in order; may be
 * NULL: no validation, the table shows #na#). Checks that the data sets fit
 * the program's input and target (element counts per sample and dtypes),
 * that the training set holds at least one batch, and the partial-batch
 * rule above. On failure *out is NULL and *err (caller frees; err may be
 * NULL) says what is wrong. opt NULL: kiln_learner_defaults(). */
kiln_status kiln_learner_new(kiln_program *program, const kiln_dataset *train,
                             const kiln_dataset *valid, const kiln_learner_options *opt,
                             kiln_learner **out, char **err);
void kiln_learner_free(kiln_learner *l);
/* The message of the last failure on l ("" if none). Owned by l. */
const char *kiln_learner_error(const kiln_learner *l);
/* Adds callbacks (copied; at most 16). */
kiln_status kiln_learner_add_callbacks(kiln_learner *l, const kiln_callbacks *cb);

kiln_program *kiln_learner_program(kiln_learner *l);
int64_t kiln_learner_batch_size(const kiln_learner *l);
/* Training batches per epoch. */
int64_t kiln_learner_num_batches(const kiln_learner *l);

/* Counters, for checkpoints and resume. step: train_steps run so far (the
 * next one is step + 1, which is AdamW's bias-correction "step"). epoch:
 * epochs completed (it numbers the table's rows and picks the shuffle
 * order). Save them with the weights and optimizer state; set them back
 * after loading those. */
int64_t kiln_learner_get_step(const kiln_learner *l);
void kiln_learner_set_step(kiln_learner *l, int64_t step);
int64_t kiln_learner_get_epoch(const kiln_learner *l);
void kiln_learner_set_epoch(kiln_learner *l, int64_t epoch);
/* Whether the last fit call was stopped by a callback. */
int kiln_learner_stopped(const kiln_learner *l);
/* The last epoch's statistics; KILN_ERR_NOT_FOUND before any epoch. */
kiln_status kiln_learner_last_epoch(const kiln_learner *l, kiln_epoch_stats *s);

/* Evaluates the validation set with the current weights: the loss and
 * each metric's final value (metrics: nmetrics doubles, may be NULL). */
kiln_status kiln_learner_validate(kiln_learner *l, double *valid_loss, double *metrics);

/* A metric's value from its partials summed over a data set: sums holds n
 * values (the partial's element count), count is the number of samples.
 * The rule of each kind is kiln_metric_kind's (kiln/kiln.h). NAN when
 * count < 1 or n does not fit the kind. */
double kiln_metric_value(kiln_metric_kind kind, const double *sums, int64_t n, int64_t count);

/* ---- training ------------------------------------------------------------ */

/* `epochs` epochs at a constant lr, mom at options.mom (fastai's fit). */
kiln_status kiln_fit(kiln_learner *l, int64_t epochs, double lr);

/* fastai v1's one-cycle policy. */
typedef struct kiln_one_cycle_options {
    double pct_start;    /* 0.3: share of the steps spent warming up */
    double div_factor;   /* 25: the first lr is max_lr / div_factor */
    double final_div;    /* 0: div_factor * 1e4; the last lr is max_lr / final_div */
    double mom_max;      /* 0.95: momentum at the start and the end */
    double mom_min;      /* 0.85: momentum at the peak lr */
    int64_t start_epoch; /* resume: the cycle spans `epochs` epochs and training
                            runs its epochs [start_epoch, epochs) (fastai's
                            start_epoch); restore the step and epoch counters too */
    int64_t end_epoch;   /* 0: run to the cycle's end; else stop before epoch
                            end_epoch (start_epoch < end_epoch <= epochs): one
                            cycle split over several calls, as progressive
                            resizing's stages share one schedule */
    double lr_lo;        /* discriminative lrs across parameter groups: 0 (default)
                            every group peaks at max_lr; > 0: fastai's
                            slice(lr_lo, max_lr); < 0: slice(max_lr), i.e. max_lr/10
                            for every group but the last (kiln_lr_slice) */
} kiln_one_cycle_options;

kiln_one_cycle_options kiln_one_cycle_defaults(void);

/* The schedule as a pure function. i is the 0-based index of the step in
 * the cycle (0 <= i <= total; i = total gives the end values), total the
 * steps of the whole cycle (epochs * batches per epoch). With
 * a1 = floor(total * pct_start), n1 = max(1, a1), a2 = total - a1,
 * n2 = max(1, a2) and cos_anneal(s, e, p) = e + (s - e)/2 * (1 + cos(pi p)):
 *   i <= n1: lr = cos_anneal(max_lr/div, max_lr, i/n1),
 *            mom = cos_anneal(mom_max, mom_min, i/n1)
 *   i >  n1: lr = cos_anneal(max_lr, max_lr/final_div, (i-n1)/n2),
 *            mom = cos_anneal(mom_min, mom_max, (i-n1)/n2)
 * (i = 0 gives max_lr/div and mom_max exactly), which is the lr and
 * momentum fastai v1's OneCycleScheduler gives its (i+1)-th batch. A fit
 * uses i = epoch * batches_per_epoch + batch. opt NULL: the defaults; lr
 * or mom may be NULL. */
void kiln_one_cycle_at(int64_t i, int64_t total, double max_lr, const kiln_one_cycle_options *opt,
                       double *lr, double *mom);

kiln_status kiln_fit_one_cycle(kiln_learner *l, int64_t epochs, double max_lr);
kiln_status kiln_fit_one_cycle_ex(kiln_learner *l, int64_t epochs, double max_lr,
                                  const kiln_one_cycle_options *opt);

/* ---- parameter groups: freezing, discriminative lrs, fine_tune ---------- */

/* The program's parameter groups (1 + the largest kiln_tensor_info.group). */
int kiln_learner_num_groups(const kiln_learner *l);

/* fastai's per-group lrs of max_lr = slice(lo, hi) for n groups, into
 * lrs[0..n): lo > 0 is even_mults(lo, hi, n): lrs[i] = lo * step^i with
 * step = (hi/lo)^(1/(n-1)) (lrs[0] = hi when n is 1); lo <= 0 is slice(hi):
 * hi/10 for groups 0..n-2 and hi for the last. KILN_ERR_INVALID unless
 * n >= 1 and hi (and lo when > 0) are finite and > 0. */
kiln_status kiln_lr_slice(double lo, double hi, int n, double *lrs);

/* fastai's freeze_to: groups [0, k) frozen, the rest trained, with k = n
 * for n >= 0 and num_groups + n (at least 0) for n < 0; k >= num_groups
 * freezes every group. A program with one group cannot freeze it
 * (KILN_ERR_INVALID naming the fix) but accepts k = 0. Takes effect at the
 * next step and holds across fit calls. */
kiln_status kiln_learner_freeze_to(kiln_learner *l, int n);
kiln_status kiln_learner_freeze(kiln_learner *l);   /* freeze_to(-1): train the last group */
kiln_status kiln_learner_unfreeze(kiln_learner *l); /* freeze_to(0): train every group */
/* Groups frozen now (the k of the last freeze_to; 0 at creation). */
int kiln_learner_frozen_groups(const kiln_learner *l);

/* fastai v2's fine_tune. */
typedef struct kiln_fine_tune_options {
    int64_t freeze_epochs; /* 1: epochs trained with only the last group (plus, with
                              train_bn, every batchnorm) */
    double lr_mult;        /* 100: the unfrozen stage spreads lrs over groups by this */
    double pct_start;      /* 0.3: the unfrozen stage's warm-up share */
    double div;            /* 5: the unfrozen stage's first lr is its max_lr / div */
} kiln_fine_tune_options;

kiln_fine_tune_options kiln_fine_tune_defaults(void);

/* freeze(); fit_one_cycle(freeze_epochs, slice(base_lr), pct_start 0.99);
 * base_lr /= 2; unfreeze(); fit_one_cycle(epochs, slice(base_lr / lr_mult,
 * base_lr), pct_start, div): fastai v2's Learner.fine_tune. Both stages end
 * at max_lr / 1e5 (fastai v2's div_final). A callback stopping the first
 * stage skips the second; the learner is left unfrozen. opt NULL: the
 * defaults. */
kiln_status kiln_fine_tune(kiln_learner *l, int64_t epochs, double base_lr,
                           const kiln_fine_tune_options *opt);

/* ---- learning-rate finder ------------------------------------------------ */

typedef struct kiln_lr_find_options {
    double start_lr; /* 1e-7 */
    double end_lr;   /* 10 */
    int num_it;      /* 100: batch i runs at start_lr * (end_lr/start_lr)^(i/num_it) */
    int stop_div;    /* 1: stop once the smoothed loss > 4 x its minimum (or is NaN) */
    int skip_start;  /* 10: points left out of the suggestion and the plot ... */
    int skip_end;    /* 5:  ... at each end, as fastai's Recorder.plot */
} kiln_lr_find_options;

kiln_lr_find_options kiln_lr_find_defaults(void);

typedef struct kiln_lr_find_result {
    double suggested_lr;  /* fastai v1's suggestion: the lr of the steepest descent
                             (minimum numerical gradient of the smoothed loss) */
    double min_loss_lr;   /* the lr of the lowest smoothed loss among the same
                             points (fastai's other hint is min_loss_lr / 10) */
    int64_t num_points;   /* batches run */
    int diverged;         /* stop_div ended the sweep (last loss > 4 x min, or NaN) */
    const double *lrs;    /* num_points values, owned by the learner until */
    const double *losses; /* its next lr_find or free: smoothed, debiased */
} kiln_lr_find_result;

/* fastai v1's lr_find: an exponential sweep, training on shuffled batches
 * without validation, then restores every parameter, the optimizer state,
 * the hyperparameters and the step and epoch counters byte for byte. When
 * svg_path is not NULL, writes the plot of smoothed loss against lr (log
 * axis, suggestion marked). With print_table on, prints fastai's summary:
 * "LR Finder is complete ...", "Min numerical gradient: 6.92E-02",
 * "Min loss divided by 10: 2.75E-01". *suggested_lr is NAN on failure. */
kiln_status kiln_lr_find(kiln_learner *l, double *suggested_lr, const char *svg_path);
kiln_status kiln_lr_find_ex(kiln_learner *l, const kiln_lr_find_options *opt, const char *svg_path,
                            kiln_lr_find_result *res);

#ifdef __cplusplus
}
#endif
#endif
