/* tests/test_schedule.c — the Learner's pure pieces: the one-cycle
 * schedule (against the closed form computed here, and against numbers from
 * a Python transcription of fastai v1's OneCycleScheduler / Scheduler /
 * annealing_cos), the lr finder's sweep and stopping rule on synthetic loss
 * sequences, its suggestion, and the table / history / plot formats. */
#include <criterion/criterion.h>

#include "kiln/kiln.h"
#include "kiln/learner.h"
#include "runtime/report.h"
#include "runtime/schedule.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const double PI = 3.14159265358979323846;

static void close_to(double got, double want, double rel, const char *what)
{
    double tol = rel * fabs(want) + 1e-300;
    cr_expect(fabs(got - want) <= tol, "%s: got %.17g, want %.17g", what, got, want);
}

/* The closed form, written out independently of runtime/schedule.c. */
static void expected_one_cycle(int64_t i, int64_t total, double max_lr, double *lr, double *mom)
{
    int64_t a1 = (int64_t)((double)total * 0.3);
    int64_t n1 = a1 < 1 ? 1 : a1, a2 = total - a1, n2 = a2 < 1 ? 1 : a2;
    double lo = max_lr / 25.0, fin = max_lr / (25.0 * 1e4);
    if (i <= n1) {
        double c = 1.0 + cos(PI * (double)i / (double)n1);
        *lr = max_lr + (lo - max_lr) / 2.0 * c;
        *mom = 0.85 + (0.95 - 0.85) / 2.0 * c;
    } else {
        double c = 1.0 + cos(PI * (double)(i - n1) / (double)n2);
        *lr = fin + (max_lr - fin) / 2.0 * c;
        *mom = 0.95 + (0.85 - 0.95) / 2.0 * c;
    }
}

Test(one_cycle, first_peak_last_and_interior_steps)
{
    const int64_t total = 100; /* e.g. 10 epochs of 10 batches; peak at 30 */
    const double max_lr = 1e-2;
    double lr, mom;

    kiln_one_cycle_at(0, total, max_lr, NULL, &lr, &mom);
    close_to(lr, max_lr / 25.0, 1e-15, "first lr");
    close_to(mom, 0.95, 1e-15, "first mom");

    kiln_one_cycle_at(30, total, max_lr, NULL, &lr, &mom);
    close_to(lr, max_lr, 1e-15, "peak lr");
    close_to(mom, 0.85, 1e-15, "peak mom");

    kiln_one_cycle_at(total, total, max_lr, NULL, &lr, &mom);
    close_to(lr, max_lr / 25e4, 1e-12, "end lr (after the last step)");
    close_to(mom, 0.95, 1e-15, "end mom");

    const int64_t steps[] = {7, 15, 42, 65, 88, 99};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        double el, em;
        expected_one_cycle(steps[k], total, max_lr, &el, &em);
        kiln_one_cycle_at(steps[k], total, max_lr, NULL, &lr, &mom);
        close_to(lr, el, 1e-13, "interior lr");
        close_to(mom, em, 1e-13, "interior mom");
    }
    /* every step, against the closed form */
    for (int64_t i = 0; i <= total; i++) {
        double el, em;
        expected_one_cycle(i, total, max_lr, &el, &em);
        kiln_one_cycle_at(i, total, max_lr, NULL, &lr, &mom);
        close_to(lr, el, 1e-13, "lr");
        close_to(mom, em, 1e-13, "mom");
    }
}

/* Numbers printed by a Python transcription of fastai v1's
 * OneCycleScheduler (annealing_cos, Scheduler.step, the phase switch on
 * is_done): the lr and momentum the (i+1)-th batch runs at. */
Test(one_cycle, matches_fastai_annealing_cos)
{
    static const struct {
        int64_t total, i;
        double lr, mom;
    } cases[] = {
        {100, 0, 0.0004, 0.95},
        {100, 30, 0.01, 0.85},
        {100, 99, 5.07464715475788e-06, 0.9499496533270657},
        {100, 7, 0.0016329048377085077, 0.9371572412738697},
        {100, 15, 0.0052, 0.8999999999999999},
        {100, 42, 0.009292246799033458, 0.8570775603199067},
        {100, 65, 0.00500002, 0.8999999999999999},
        {100, 88, 0.0007077932009665415, 0.9429224396800933},
        {7, 0, 0.0004, 0.95},
        {7, 1, 0.0052, 0.8999999999999999},
        {7, 2, 0.01, 0.85},
        {7, 3, 0.00904508879153485, 0.8595491502812526},
        {7, 6, 0.0009549512084651508, 0.9404508497187474},
        /* floor(3 * 0.3) = 0: fastai's Scheduler still takes one step */
        {3, 0, 0.0004, 0.95},
        {3, 1, 0.01, 0.85},
        {3, 2, 0.00750001, 0.875},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double lr, mom;
        kiln_one_cycle_at(cases[k].i, cases[k].total, 1e-2, NULL, &lr, &mom);
        close_to(lr, cases[k].lr, 1e-12, "lr vs fastai");
        close_to(mom, cases[k].mom, 1e-12, "mom vs fastai");
    }
}

Test(one_cycle, options)
{
    kiln_one_cycle_options o = kiln_one_cycle_defaults();
    cr_expect_eq(o.pct_start, 0.3);
    cr_expect_eq(o.div_factor, 25.0);
    cr_expect_eq(o.mom_max, 0.95);
    cr_expect_eq(o.mom_min, 0.85);
    o.pct_start = 0.5;
    o.div_factor = 10;
    o.final_div = 100;
    double lr, mom;
    kiln_one_cycle_at(0, 20, 1.0, &o, &lr, &mom);
    close_to(lr, 0.1, 1e-15, "start");
    kiln_one_cycle_at(10, 20, 1.0, &o, &lr, &mom);
    close_to(lr, 1.0, 1e-15, "peak at pct_start 0.5");
    kiln_one_cycle_at(20, 20, 1.0, &o, &lr, &mom);
    close_to(lr, 0.01, 1e-13, "final_div");
    kiln_one_cycle_at(5, 20, 1.0, &o, &lr, NULL); /* NULL outputs are allowed */
    close_to(lr, 0.55, 1e-13, "midway up");
}

Test(smoother, debiased_moving_average)
{
    kiln_smoother s;
    kiln_smoother_init(&s, 0.98);
    close_to(kiln_smoother_add(&s, 3.0), 3.0, 1e-15, "first value is itself");
    double m = 0.98 * 0.02 * 3.0 + 0.02 * 1.0;
    close_to(kiln_smoother_add(&s, 1.0), m / (1 - 0.98 * 0.98), 1e-14, "second");
}

/* A synthetic loss curve: falls, then explodes from i = 60 on. */
static double synth_loss(int i)
{
    return 2.0 * exp(-i / 20.0) + 0.1 + (i < 60 ? 0.0 : 0.05 * exp((i - 60) / 3.0));
}

Test(lr_finder, sweep_and_stop_div)
{
    kiln_lr_find_options o = kiln_lr_find_defaults();
    cr_expect_eq(o.start_lr, 1e-7);
    cr_expect_eq(o.end_lr, 10.0);
    cr_expect_eq(o.num_it, 100);
    kiln_lr_finder f;
    kiln_lr_finder_init(&f, &o, 0.98);
    double smooth[200];
    int n = 0, done = 0;
    while (!done) {
        double lr = kiln_lr_finder_lr(&f);
        /* annealing_exp: 1e-7 * (10 / 1e-7)^(i / 100) */
        close_to(lr, 1e-7 * pow(1e8, n / 100.0), 1e-12, "lr sweep");
        done = kiln_lr_finder_record(&f, synth_loss(n), &smooth[n]);
        n++;
        cr_assert(n < 200);
    }
    /* fastai v1's LRFinder (transcribed to Python) stops after 80 batches,
     * its smoothed loss 2.77017656607721 > 4 x best 0.5490858950248828. */
    cr_expect_eq(n, 80);
    cr_expect(f.diverged);
    close_to(smooth[79], 2.77017656607721, 1e-12, "stopping smoothed loss");
    close_to(f.best, 0.5490858950248828, 1e-12, "best smoothed loss");
    close_to(smooth[0], 2.1, 1e-15, "smooth[0]");
    close_to(smooth[1], 2.0507367924249613, 1e-13, "smooth[1]");
    close_to(smooth[50], 0.7027311521414464, 1e-12, "smooth[50]");
    /* the rule itself: stopped at the first batch whose smoothed loss
     * exceeds 4 x the minimum so far */
    double best = smooth[0];
    for (int i = 0; i < 79; i++) {
        if (smooth[i] < best) best = smooth[i];
        cr_expect(smooth[i] <= 4 * best, "batch %d should not have stopped", i);
    }
    cr_expect(smooth[79] > 4 * best);
}

Test(lr_finder, runs_num_it_without_stop_div_and_stops_on_nan)
{
    kiln_lr_find_options o = kiln_lr_find_defaults();
    o.stop_div = 0;
    kiln_lr_finder f;
    kiln_lr_finder_init(&f, &o, 0.98);
    int n = 0;
    while (!kiln_lr_finder_record(&f, synth_loss(n), NULL))
        n++;
    cr_expect_eq(n + 1, 100);
    cr_expect(!f.diverged);

    o.stop_div = 1;
    kiln_lr_finder_init(&f, &o, 0.98);
    n = 0;
    while (!kiln_lr_finder_record(&f, n == 20 ? NAN : 1.0, NULL))
        n++;
    cr_expect_eq(n, 20, "stops at the NaN");
    cr_expect(f.diverged);
}

Test(lr_finder, suggestion_is_steepest_descent_after_skips)
{
    double y[100];
    for (int i = 0; i < 100; i++)
        y[i] = -tanh((i - 40) / 6.0);
    y[2] -= 60;  /* a steeper drop inside the first 10 points: skipped */
    y[97] -= 50; /* and inside the last 5 */
    int64_t ml;
    int64_t mg = kiln_lr_suggest(100, y, 10, 5, &ml);
    cr_expect_eq(mg, 40);
    cr_expect_eq(ml, 94, "lowest loss within [10, 95)");
    /* without skips the planted drops win (numpy.gradient: one-sided at
     * the ends, central inside, the first minimum) */
    mg = kiln_lr_suggest(100, y, 0, 0, &ml);
    cr_expect_eq(mg, 1);
    cr_expect_eq(ml, 2);
    /* too few points after the skips: all points are used */
    double z[6] = {5, 4, 2, 1.5, 1.4, 1.3};
    mg = kiln_lr_suggest(6, z, 10, 5, &ml);
    cr_expect_eq(mg, 1, "gradients -1, -1.5, -1.25, -0.3, -0.1, -0.1");
    cr_expect_eq(ml, 5);
    /* non-finite gradients are ignored */
    double w[5] = {3, 2, NAN, 1, 0.5};
    mg = kiln_lr_suggest(5, w, 0, 0, &ml);
    cr_expect_eq(mg, 0, "gradients -1, nan, -0.5, nan, -0.5");
    cr_expect_eq(ml, 4);
    cr_expect_eq(kiln_lr_suggest(0, w, 0, 0, &ml), -1);
}

Test(report, time_and_stats)
{
    char b[32];
    kiln_format_time(0.4, b, sizeof b);
    cr_expect_str_eq(b, "00:00");
    kiln_format_time(75.9, b, sizeof b);
    cr_expect_str_eq(b, "01:15");
    kiln_format_time(3 * 3600 + 61, b, sizeof b);
    cr_expect_str_eq(b, "3:01:01");
    kiln_format_stat(0.5, 1, b, sizeof b);
    cr_expect_str_eq(b, "0.500000");
    kiln_format_stat(NAN, 1, b, sizeof b);
    cr_expect_str_eq(b, "#na#");
    kiln_format_stat(-NAN, 0, b, sizeof b);
    cr_expect_str_eq(b, "nan");
}

static char *slurp(FILE *f)
{
    fflush(f);
    long n = ftell(f);
    char *s = calloc((size_t)n + 1, 1);
    rewind(f);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

Test(report, table_layout)
{
    FILE *f = tmpfile();
    cr_assert(f);
    const char *names[] = {"epoch", "train_loss", "valid_loss", "accuracy", "time"};
    const char *row[] = {"0", "0.512334", "0.401223", "0.861500", "00:04"};
    kiln_table_header(f, 5, names);
    kiln_table_row(f, 5, names, row);
    char *s = slurp(f);
    cr_expect_str_eq(s, "epoch     train_loss  valid_loss  accuracy  time\n"
                        "0         0.512334    0.401223    0.861500  00:04\n");
    free(s);
    fclose(f);
}

Test(report, history_file)
{
    char path[] = "/tmp/kiln_hist_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    const char *names[] = {"epoch", "train_loss", "valid_loss", "accuracy", "time"};
    const char *r0[] = {"0", "0.5", "0.4", "0.8", "00:01"};
    const char *r1[] = {"1", "0.3", "0.2", "0.9", "00:01"};
    char err[256];
    cr_assert_eq(kiln_history_append(path, 1, 5, names, r0, err, sizeof err), KILN_OK);
    cr_assert_eq(kiln_history_append(path, 0, 5, names, r1, err, sizeof err), KILN_OK);
    FILE *f = fopen(path, "r");
    char buf[512] = {0};
    cr_assert(fread(buf, 1, sizeof buf - 1, f) > 0);
    fclose(f);
    cr_expect_str_eq(buf, "epoch,train_loss,valid_loss,accuracy,time\n"
                          "0,0.5,0.4,0.8,00:01\n"
                          "1,0.3,0.2,0.9,00:01\n");
    cr_expect_eq(kiln_history_append("/nonexistent-dir/h.csv", 1, 5, names, r0, err, sizeof err),
                 KILN_ERR_IO);
    cr_expect(strstr(err, "/nonexistent-dir/h.csv") != NULL);
    unlink(path);
}

Test(report, svg_plot)
{
    double lrs[100], losses[100];
    for (int i = 0; i < 100; i++) {
        lrs[i] = 1e-7 * pow(1e8, i / 100.0);
        losses[i] = 1.0 - 0.5 * tanh((i - 50) / 8.0);
    }
    char path[] = "/tmp/kiln_plot_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char err[256];
    cr_assert_eq(kiln_lr_plot_svg(path, 10, 95, lrs, losses, 50, err, sizeof err), KILN_OK, "%s",
                 err);
    FILE *f = fopen(path, "r");
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    cr_expect(strncmp(buf, "<?xml", 5) == 0);
    cr_expect(strstr(buf, "</svg>\n") != NULL);
    cr_expect(strstr(buf, ">Learning Rate<") != NULL);
    cr_expect(strstr(buf, ">Loss<") != NULL);
    cr_expect(strstr(buf, ">1e-06<") != NULL, "decade tick labels");
    cr_expect(strstr(buf, ">1e+00<") != NULL);
    cr_expect(strstr(buf, "id=\"suggestion\"") != NULL);
    cr_expect(strstr(buf, "suggested lr 1.00e-03") != NULL);
    cr_expect(strstr(buf, "<polyline id=\"loss\"") != NULL);
    unlink(path);
}
