/* runtime/schedule.h — the Learner's pure pieces (internal API): annealing
 * functions, fastai's loss smoother, the lr finder's sweep and stopping
 * rule, and its suggestion. Nothing here touches a program; the Learner
 * (runtime/learner.c, runtime/lr_find.c) drives them and tests check them
 * against closed forms. The public one-cycle function, kiln_one_cycle_at,
 * lives in runtime/schedule.c too. */
#ifndef KILN_RUNTIME_SCHEDULE_H
#define KILN_RUNTIME_SCHEDULE_H

#include "kiln/kiln.h"
#include "kiln/learner.h"

/* fastai's annealing_cos: end + (start - end)/2 * (1 + cos(pi * pct)). */
double kiln_anneal_cos(double start, double end, double pct);
/* fastai's annealing_exp: start * (end / start)^pct. */
double kiln_anneal_exp(double start, double end, double pct);

/* fastai's SmoothenValue: an exponential moving average debiased by
 * 1 - beta^n. */
typedef struct kiln_smoother {
    double beta, mov_avg, smooth;
    int64_t n;
} kiln_smoother;

void kiln_smoother_init(kiln_smoother *s, double beta);
/* Adds a value and returns the smoothed, debiased value. */
double kiln_smoother_add(kiln_smoother *s, double v);

/* The lr finder as a state machine (fastai v1's LRFinder callback with the
 * Recorder's smoothing):
 *     kiln_lr_finder f; kiln_lr_finder_init(&f, &opt, 0.98);
 *     while (!done) { lr = kiln_lr_finder_lr(&f); ...train one batch at lr...;
 *                     done = kiln_lr_finder_record(&f, loss, &smooth); }
 * Batch i (0-based) runs at annealing_exp(start, end, i / num_it). After
 * each batch the smoothed loss becomes the best when it is lower (or on
 * the first batch); the sweep stops after num_it batches, or, with
 * stop_div, once smoothed > 4 * best or the smoothed loss is NaN. */
typedef struct kiln_lr_finder {
    double start_lr, end_lr;
    int num_it, stop_div;
    kiln_smoother smooth;
    int64_t i;      /* batches recorded */
    double best;    /* lowest smoothed loss so far */
    int diverged;   /* stopped by stop_div */
} kiln_lr_finder;

void kiln_lr_finder_init(kiln_lr_finder *f, const kiln_lr_find_options *opt, double beta);
/* The lr of the next batch. */
double kiln_lr_finder_lr(const kiln_lr_finder *f);
/* Records the loss of the batch just run; *smooth gets its smoothed value.
 * Returns 1 when the sweep is over. */
int kiln_lr_finder_record(kiln_lr_finder *f, double loss, double *smooth);

/* fastai v1's Recorder.plot(suggestion=True): over the points
 * [skip_start, n - skip_end) (all points when fewer than two would remain),
 * the index of the minimum of numpy.gradient(losses) (central differences
 * inside, one-sided at the ends; the first minimum), with non-finite
 * gradients ignored. *min_loss gets the index of the lowest finite loss in
 * the same range. Returns -1 when no point qualifies. */
int64_t kiln_lr_suggest(int64_t n, const double *losses, int skip_start, int skip_end,
                        int64_t *min_loss);

/* The range [*lo, *hi) of points the suggestion and the plot use. */
void kiln_lr_plot_range(int64_t n, int skip_start, int skip_end, int64_t *lo, int64_t *hi);

#endif
