/* runtime/lr_find.c — fastai v1's learning-rate finder.
 *
 * lr_find trains on shuffled batches with the lr growing exponentially from
 * start_lr (1e-7) to end_lr (10) over num_it (100) batches, smoothing the
 * loss (beta 0.98, debiased), and stops early once the smoothed loss
 * exceeds 4x its minimum or is NaN (stop_div). Afterwards the program is
 * put back exactly as it was: every parameter, optimizer-state, constant
 * and hyperparameter tensor is snapshotted before and copied back after
 * (fastai saves and loads the model and optimizer state), and so are the
 * learner's step and epoch counters.
 *
 * The suggestion is fastai v1's Recorder.plot(suggestion=True): leave out
 * the first 10 and the last 5 points, take numpy.gradient of the smoothed
 * losses (the points are evenly spaced in log lr, so this is the slope
 * against log lr up to a constant) and suggest the lr where it is most
 * negative: the steepest descent. fastai prints a second hint, the lr of
 * the lowest smoothed loss divided by 10; the result carries that lr too
 * (min_loss_lr). The steepest descent is what fastai v1 returns
 * (recorder.min_grad_lr) and what its course uses, so it is the one
 * returned as suggested_lr.
 */
#include "runtime/learner_internal.h"
#include "runtime/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int snapshot_role(kiln_role r)
{
    return r == KILN_ROLE_PARAM || r == KILN_ROLE_STATE || r == KILN_ROLE_CONST ||
           r == KILN_ROLE_HPARAM;
}

/* Copies every snapshot tensor into (save) or out of (restore) buf. */
static size_t snapshot(kiln_program *p, unsigned char *buf, int save)
{
    size_t off = 0;
    int nt = kiln_program_num_tensors(p);
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t) || !snapshot_role(t.role)) continue;
        void *d = kiln_program_data(p, t.name, NULL);
        if (!d) continue;
        if (buf) {
            if (save) memcpy(buf + off, d, t.bytes);
            else memcpy(d, buf + off, t.bytes);
        }
        off += t.bytes;
    }
    return off;
}

kiln_status kiln_lr_find_ex(kiln_learner *l, const kiln_lr_find_options *opt,
                            const char *svg_path, kiln_lr_find_result *res)
{
    if (!l) return KILN_ERR_INVALID;
    kiln_lr_find_options o = opt ? *opt : kiln_lr_find_defaults();
    if (res) memset(res, 0, sizeof *res);
    if (res) res->suggested_lr = res->min_loss_lr = NAN;
    if (!(o.start_lr > 0) || !(o.end_lr > 0) || !isfinite(o.start_lr) || !isfinite(o.end_lr) ||
        o.num_it < 1)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_lr_find: start_lr and end_lr must "
                                 "be finite and > 0, num_it >= 1");
    kiln_program *p = l->main.p;

    size_t bytes = snapshot(p, NULL, 1);
    unsigned char *snap = malloc(bytes ? bytes : 1);
    double *lrs = malloc((size_t)o.num_it * sizeof *lrs);
    double *losses = malloc((size_t)o.num_it * sizeof *losses);
    if (!snap || !lrs || !losses) {
        free(snap);
        free(lrs);
        free(losses);
        return kiln_learner_fail(l, KILN_ERR_NOMEM, "out of memory");
    }
    free(l->lf_lrs);
    free(l->lf_losses);
    l->lf_lrs = lrs;
    l->lf_losses = losses;
    l->lf_n = 0;
    snapshot(p, snap, 1);
    int64_t step = l->step, epoch = l->epoch;

    kiln_lr_finder f;
    kiln_lr_finder_init(&f, &o, l->o.smooth_beta);
    kiln_fit_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.kind = KILN_SCHED_LR_FIND;
    plan.finder = &f;
    plan.first_epoch = 0;
    plan.epochs = (o.num_it + l->nb - 1) / l->nb; /* fastai: ceil(num_it / len(train_dl)) */
    kiln_status st = kiln_learner_run(l, &plan);

    snapshot(p, snap, 0);
    free(snap);
    l->step = step;
    l->epoch = epoch;
    if (st) return st;

    int64_t n = l->lf_n, ml = -1;
    int64_t mg = kiln_lr_suggest(n, losses, o.skip_start, o.skip_end, &ml);
    if (res) {
        res->num_points = n;
        res->diverged = f.diverged;
        res->lrs = lrs;
        res->losses = losses;
        res->suggested_lr = mg >= 0 ? lrs[mg] : NAN;
        res->min_loss_lr = ml >= 0 ? lrs[ml] : NAN;
    }
    if (mg < 0)
        return kiln_learner_fail(l, KILN_ERR_INVALID, "kiln_lr_find: no finite smoothed loss "
                                 "in %lld batches to suggest a learning rate from", (long long)n);
    if (l->o.print_table) {
        FILE *out = l->o.out ? l->o.out : stdout;
        fprintf(out, "LR Finder is complete (%lld batches%s).\n", (long long)n,
                f.diverged ? ", stopped: the loss diverged" : "");
        fprintf(out, "Min numerical gradient: %.2E\n", lrs[mg]);
        fprintf(out, "Min loss divided by 10: %.2E\n", lrs[ml] / 10);
        fflush(out);
    }
    if (svg_path) {
        int64_t lo, hi;
        kiln_lr_plot_range(n, o.skip_start, o.skip_end, &lo, &hi);
        char msg[1024];
        st = kiln_lr_plot_svg(svg_path, lo, hi, lrs, losses, mg, msg, sizeof msg);
        if (st) return kiln_learner_fail(l, st, "%s", msg);
    }
    return KILN_OK;
}

kiln_status kiln_lr_find(kiln_learner *l, double *suggested_lr, const char *svg_path)
{
    kiln_lr_find_result r;
    memset(&r, 0, sizeof r);
    r.suggested_lr = NAN;
    kiln_status st = kiln_lr_find_ex(l, NULL, svg_path, &r);
    if (suggested_lr) *suggested_lr = r.suggested_lr;
    return st;
}
