/* runtime/learner_internal.h — the Learner's state, shared by
 * runtime/learner.c (creation, the fit loop, validation) and
 * runtime/lr_find.c (the lr finder, which drives the same loop). */
#ifndef KILN_RUNTIME_LEARNER_INTERNAL_H
#define KILN_RUNTIME_LEARNER_INTERNAL_H

#include "kiln/kiln.h"
#include "kiln/learner.h"
#include "runtime/schedule.h"

#define KILN_LEARNER_MAX_CALLBACKS 16

/* A scalar the program returns (loss or metric partial; a metric's partial
 * may be a vector of numel sums, finalised by its kind). */
typedef struct kiln_scalar_out {
    const char *name; /* owned by the program */
    kiln_dtype dtype;
    void *data;
    int64_t numel;         /* 1 for the loss */
    kiln_metric_kind kind; /* metrics */
} kiln_scalar_out;

/* A program's feeds and results, found by role. */
typedef struct kiln_learner_io {
    kiln_program *p;
    int64_t batch;          /* leading dimension of the input */
    void *x, *y;            /* the input and target storage */
    size_t x_sample, y_sample; /* bytes per sample */
    kiln_scalar_out loss;
    int nmetrics;
    kiln_scalar_out *metrics; /* nmetrics, in the main program's order */
} kiln_learner_io;

/* A tensor copied from the main program into the tail program. */
typedef struct kiln_copy {
    const void *src;
    void *dst;
    size_t bytes;
} kiln_copy;

/* A tensor the learner touches directly (SGD decoupled weight decay). */
typedef struct kiln_param_ref {
    void *data;
    kiln_dtype dtype;
    size_t numel;
    int group; /* its parameter group */
    int bn;    /* a batchnorm parameter (trains in a frozen group with train_bn) */
} kiln_param_ref;

struct kiln_learner {
    kiln_learner_options o;
    const kiln_dataset *train, *valid;
    kiln_loader *tl, *vl;
    int64_t nb;   /* training batches per epoch */
    kiln_learner_io main, tail;
    int has_tail;
    int64_t tail_n; /* samples in the validation set's last, partial batch (0: none) */
    kiln_copy *copies;
    int ncopies;
    int adamw;
    kiln_param_ref *params;
    int nparams;
    const char **metric_names;
    int ngroups;    /* parameter groups (1: the program has no group hparams) */
    int frozen_idx; /* groups [0, frozen_idx) frozen (kiln_learner_freeze_to) */
    double *mults;  /* per group: its lr / the scheduled lr, this fit call */

    int64_t step, epoch;
    int stopped;
    kiln_callbacks cbs[KILN_LEARNER_MAX_CALLBACKS];
    int ncbs;

    kiln_epoch_stats last;
    double *last_metrics;
    int have_last;
    int history_started;

    double *lf_lrs, *lf_losses; /* the last lr_find's points */
    int64_t lf_n;

    char err[2048];
};

/* What a fit call schedules. */
typedef enum kiln_sched_kind {
    KILN_SCHED_CONST,     /* kiln_fit */
    KILN_SCHED_ONE_CYCLE, /* kiln_fit_one_cycle */
    KILN_SCHED_LR_FIND,   /* kiln_lr_find */
} kiln_sched_kind;

typedef struct kiln_fit_plan {
    kiln_sched_kind kind;
    double lr, mom;              /* KILN_SCHED_CONST */
    double max_lr;               /* KILN_SCHED_ONE_CYCLE */
    double lr_lo;                /* KILN_SCHED_ONE_CYCLE: slice(lr_lo, max_lr) (see
                                    kiln_one_cycle_options.lr_lo) */
    kiln_one_cycle_options oc;
    kiln_lr_finder *finder;      /* KILN_SCHED_LR_FIND */
    int64_t first_epoch, epochs; /* the schedule spans epochs [0, epochs) ... */
    int64_t end_epoch;           /* ... and epochs [first_epoch, end_epoch) run (0: epochs) */
} kiln_fit_plan;

/* Runs a fit: the batch loop, the schedule, validation (not for lr_find),
 * the table, the history file, the callbacks. */
kiln_status kiln_learner_run(kiln_learner *l, const kiln_fit_plan *plan);

/* Sets l->err; returns st. */
kiln_status kiln_learner_fail(kiln_learner *l, kiln_status st, const char *fmt, ...);

#endif
