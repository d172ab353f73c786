/* bench/batchnorm_relu.c — one training step of batchnorm + relu through
 * generated C (kiln's train_step), for bench/batchnorm_relu.sh.
 *
 *   batchnorm_relu [N C H W] [--threads T] [--steps S] [--repeats R] [--input]
 *
 * The graph: x [N, C, H, W] -> batchnorm (BatchNorm2d) -> relu -> y;
 * loss = sum(y * g) with g a fixed random input (so dL/dy = g, as PyTorch's
 * y.backward(g)). By default x is a parameter, so the step computes dx (and
 * SGD's update of x, at lr 0, writes it back: that update and its momentum
 * buffer are traffic PyTorch's backward does not have); with --input x is
 * data and only the weight's and bias's gradients are computed. Prints
 * milliseconds per step, min and median over the repeats. */
#define _POSIX_C_SOURCE 200809L
#include "kiln/kiln.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int64_t s[4] = {64, 32, 28, 28};
    int threads = 2, steps = 20, reps = 7, input = 0, k = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--input")) input = 1;
        else if (k < 4) s[k++] = atoll(argv[i]);
    }
    if (reps < 1 || reps > 100 || steps < 1) return 2;
    kiln_graph *g = kiln_graph_new("bnrelu");
    kiln_value x = input ? kiln_input(g, "x", KILN_F32, 4, s)
                         : kiln_param(g, "x", KILN_F32, 4, s, KILN_INIT_NORMAL, 1.0);
    kiln_value gi = kiln_input(g, "g", KILN_F32, 4, s);
    kiln_value y = kiln_relu(g, kiln_batchnorm(g, x, 0.1, 1e-5, "bn0"));
    kiln_status st = kiln_set_loss(g, kiln_reduce_sum(g, kiln_mul(g, y, gi), 0, NULL, 0), "loss");
    if (st) {
        fprintf(stderr, "%s\n", kiln_graph_error(g));
        return 1;
    }
    kiln_compile_options o = kiln_compile_defaults();
    o.threads = threads;
    o.train.optimizer = KILN_OPT_SGD;
    kiln_program *p;
    char *err = NULL;
    if (kiln_compile(g, &o, &p, &err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    kiln_program_init_params(p, 0);
    kiln_program_set_hparam(p, "lr", 0);
    kiln_program_set_hparam(p, "mom", 0);
    kiln_program_set_hparam(p, "wd", 0);
    int64_t n = s[0] * s[1] * s[2] * s[3];
    float *v = malloc((size_t)n * sizeof *v);
    uint64_t r = 88172645463325252ull;
    for (const char *name = "g"; name; name = input && !strcmp(name, "g") ? "x" : NULL) {
        for (int64_t i = 0; i < n; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            v[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 4 - 2);
        }
        kiln_program_set(p, name, v, (size_t)n * sizeof *v);
    }
    kiln_program_stats ps;
    kiln_program_stats_get(p, &ps);
    for (int i = 0; i < 3; i++) kiln_program_run(p, "train_step");
    double t[100];
    for (int q = 0; q < reps; q++) {
        double t0 = now();
        for (int i = 0; i < steps; i++)
            if (kiln_program_run(p, "train_step")) {
                fprintf(stderr, "%s\n", kiln_program_error(p));
                return 1;
            }
        t[q] = (now() - t0) / steps * 1e3;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp);
    printf("kiln batchnorm+relu [%lld,%lld,%lld,%lld] x %s, %d threads, %d kernels: "
           "min %.3f ms, median %.3f ms per train_step\n",
           (long long)s[0], (long long)s[1], (long long)s[2], (long long)s[3],
           input ? "input" : "param", threads, ps.num_kernels, t[0], t[reps / 2]);
    free(v);
    kiln_program_free(p);
    kiln_graph_free(g);
    return 0;
}
