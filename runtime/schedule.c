/* runtime/schedule.c — hyperparameter schedules and the lr finder's rules.
 *
 * Everything here is a pure function of its arguments (or of a small state
 * struct), written after fastai v1: callbacks/one_cycle.py (OneCycleScheduler),
 * callback.py (annealing_cos, annealing_exp, Scheduler, SmoothenValue),
 * callbacks/lr_finder.py (LRFinder) and basic_train.py (Recorder.plot).
 */
#include "runtime/schedule.h"

#include <math.h>

#define KILN_PI 3.14159265358979323846

double kiln_anneal_cos(double start, double end, double pct)
{
    return end + (start - end) / 2.0 * (cos(KILN_PI * pct) + 1.0);
}

double kiln_anneal_exp(double start, double end, double pct)
{
    return start * pow(end / start, pct);
}

kiln_one_cycle_options kiln_one_cycle_defaults(void)
{
    kiln_one_cycle_options o;
    o.pct_start = 0.3;
    o.div_factor = 25.0;
    o.final_div = 0.0; /* div_factor * 1e4 */
    o.mom_max = 0.95;
    o.mom_min = 0.85;
    o.start_epoch = 0;
    o.end_epoch = 0;
    o.lr_lo = 0.0; /* every parameter group at max_lr */
    return o;
}

/* fastai's Scheduler steps n = 1, 2, ... and returns func(start, end,
 * n / max(1, n_iter)); the scheduler moves to phase two once phase one is
 * done (n >= n_iter). The first batch runs at phase one's start value, the
 * (i+1)-th at the value the i-th step() returned. */
void kiln_one_cycle_at(int64_t i, int64_t total, double max_lr,
                       const kiln_one_cycle_options *opt, double *lr, double *mom)
{
    kiln_one_cycle_options d = kiln_one_cycle_defaults();
    if (!opt) opt = &d;
    double final_div = opt->final_div > 0 ? opt->final_div : opt->div_factor * 1e4;
    if (total < 0) total = 0;
    if (i < 0) i = 0;
    int64_t a1 = (int64_t)((double)total * opt->pct_start);
    int64_t a2 = total - a1;
    int64_t n1 = a1 > 1 ? a1 : 1, n2 = a2 > 1 ? a2 : 1;
    double l, m;
    if (i == 0) { /* fastai sets the scheduler's start values themselves */
        l = max_lr / opt->div_factor;
        m = opt->mom_max;
    } else if (i <= n1) {
        double pct = (double)i / (double)n1;
        l = kiln_anneal_cos(max_lr / opt->div_factor, max_lr, pct);
        m = kiln_anneal_cos(opt->mom_max, opt->mom_min, pct);
    } else {
        double pct = (double)(i - n1) / (double)n2;
        if (pct > 1.0) pct = 1.0;
        l = kiln_anneal_cos(max_lr, max_lr / final_div, pct);
        m = kiln_anneal_cos(opt->mom_min, opt->mom_max, pct);
    }
    if (lr) *lr = l;
    if (mom) *mom = m;
}

void kiln_smoother_init(kiln_smoother *s, double beta)
{
    s->beta = beta;
    s->mov_avg = 0.0;
    s->smooth = 0.0;
    s->n = 0;
}

double kiln_smoother_add(kiln_smoother *s, double v)
{
    s->n++;
    s->mov_avg = s->beta * s->mov_avg + (1.0 - s->beta) * v;
    s->smooth = s->mov_avg / (1.0 - pow(s->beta, (double)s->n));
    return s->smooth;
}

kiln_lr_find_options kiln_lr_find_defaults(void)
{
    kiln_lr_find_options o;
    o.start_lr = 1e-7;
    o.end_lr = 10.0;
    o.num_it = 100;
    o.stop_div = 1;
    o.skip_start = 10;
    o.skip_end = 5;
    return o;
}

void kiln_lr_finder_init(kiln_lr_finder *f, const kiln_lr_find_options *opt, double beta)
{
    kiln_lr_find_options d = kiln_lr_find_defaults();
    if (!opt) opt = &d;
    f->start_lr = opt->start_lr;
    f->end_lr = opt->end_lr;
    f->num_it = opt->num_it > 0 ? opt->num_it : 1;
    f->stop_div = opt->stop_div;
    kiln_smoother_init(&f->smooth, beta);
    f->i = 0;
    f->best = 0.0;
    f->diverged = 0;
}

double kiln_lr_finder_lr(const kiln_lr_finder *f)
{
    return kiln_anneal_exp(f->start_lr, f->end_lr, (double)f->i / (double)f->num_it);
}

int kiln_lr_finder_record(kiln_lr_finder *f, double loss, double *smooth)
{
    double s = kiln_smoother_add(&f->smooth, loss);
    if (smooth) *smooth = s;
    if (f->i == 0 || s < f->best) f->best = s;
    f->i++;
    if (f->stop_div && (s > 4.0 * f->best || isnan(s))) {
        f->diverged = 1;
        return 1;
    }
    return f->i >= f->num_it;
}

void kiln_lr_plot_range(int64_t n, int skip_start, int skip_end, int64_t *lo, int64_t *hi)
{
    int64_t a = skip_start > 0 ? skip_start : 0;
    int64_t b = n - (skip_end > 0 ? skip_end : 0);
    if (b - a < 2) {
        a = 0;
        b = n;
    }
    *lo = a;
    *hi = b;
}

int64_t kiln_lr_suggest(int64_t n, const double *losses, int skip_start, int skip_end,
                        int64_t *min_loss)
{
    int64_t lo, hi;
    kiln_lr_plot_range(n, skip_start, skip_end, &lo, &hi);
    const double *y = losses + lo;
    int64_t m = hi - lo, best = -1, best_loss = -1;
    double bg = INFINITY, bl = INFINITY;
    for (int64_t k = 0; k < m; k++) {
        if (isfinite(y[k]) && (best_loss < 0 || y[k] < bl)) {
            bl = y[k];
            best_loss = k;
        }
        double g;
        if (m == 1) g = 0.0;
        else if (k == 0) g = y[1] - y[0];
        else if (k == m - 1) g = y[m - 1] - y[m - 2];
        else g = (y[k + 1] - y[k - 1]) / 2.0;
        if (isfinite(g) && (best < 0 || g < bg)) {
            bg = g;
            best = k;
        }
    }
    if (min_loss) *min_loss = best_loss < 0 ? -1 : lo + best_loss;
    return best < 0 ? -1 : lo + best;
}
