/* tests/test_conv.c — convolutions (ir/ops_conv.c, codegen/lower_conv.c,
 * passes/conv_lower.c) end to end:
 *
 *  - PyTorch goldens (tests/golden/gen_conv.py): conv2d and
 *    conv_transpose2d forward and the gradients of x, w and b over stride,
 *    padding, dilation, output_padding, groups and odd sizes, through the
 *    reference interpreter, the generated C and the LLVM backend, within
 *    rtol 1e-4 / atol 1e-5;
 *  - the pass: what a training step's convolutions become (one im2col per
 *    input, shared by the forward GEMM and the weight gradient; the GEMMs;
 *    col2im), and many groups left to the direct kernels;
 *  - the direct lowering rules (which the pass bypasses) against the
 *    reference, through the kernel-IR evaluator;
 *  - the builder and the model language: layers, parameter names and
 *    initialisation, conv2d called as an op on tensors, errors; a small
 *    CNN written in the language trains (its loss falls).
 */
#include <criterion/criterion.h>

#include "codegen/llvm.h"
#include "ir/conv.h"
#include "ir/graph.h"
#include "ir/ops.h"
#include "passes/fuse.h"
#include "passes/passes.h"
#include "runtime/npy.h"
#include "tests/kernel_eval.h"
#include "tests/testutil.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL 1e-5
#define GOLDEN KILN_SOURCE_DIR "/tests/golden/conv"

static char cache_dir[256];

static void make_cache(void) { kiln_test_tmpdir(cache_dir, sizeof cache_dir, "test_conv"); }

static void remove_cache(void)
{
    if (cache_dir[0]) kiln_test_rmtree(cache_dir);
    cache_dir[0] = 0;
}

TestSuite(conv, .init = make_cache, .fini = remove_cache, .timeout = 600);

/* ---- PyTorch goldens ---- */

typedef struct gcase {
    char name[32], op[32];
    int64_t s[2], p[2], d[2], op_pad[2], groups;
    int bias;
} gcase;

static int read_cases(gcase *cs, int max)
{
    FILE *f = fopen(GOLDEN "/cases.txt", "r");
    cr_assert_not_null(f, "cannot open " GOLDEN "/cases.txt");
    int n = 0;
    gcase c;
    while (n < max &&
           fscanf(f, "%31s %31s %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64
                  " %" SCNd64 " %" SCNd64 " %" SCNd64 " %d", c.name, c.op, &c.s[0],
                  &c.s[1], &c.p[0], &c.p[1], &c.d[0], &c.d[1], &c.op_pad[0], &c.op_pad[1],
                  &c.groups, &c.bias) == 12)
        cs[n++] = c;
    fclose(f);
    cr_assert_gt(n, 0, "no cases in cases.txt");
    return n;
}

static void load(const char *cname, const char *t, kiln_npy *out)
{
    char path[512], err[512];
    snprintf(path, sizeof path, GOLDEN "/%s.%s.npy", cname, t);
    cr_assert_eq(kiln_npy_load(path, out, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(out->dtype, KILN_F32, "%s: not f32", path);
}

#define MAX_GOLDEN 32

typedef struct golden {
    int n;
    gcase c[MAX_GOLDEN];
    kiln_graph *g;
} golden;

/* One graph with every case: x, w and b are parameters (so the training
 * step returns their gradients), dy an input, y an output; the loss is the
 * sum over cases of sum(y * dy). */
static void golden_graph(golden *G)
{
    G->n = read_cases(G->c, MAX_GOLDEN);
    kiln_graph *g = kiln_graph_new("conv_golden");
    kiln_value total = -1;
    char nm[96];
    for (int k = 0; k < G->n; k++) {
        const gcase *c = &G->c[k];
        kiln_npy x, w, b, dy;
        load(c->name, "x", &x);
        load(c->name, "w", &w);
        load(c->name, "dy", &dy);
        snprintf(nm, sizeof nm, "%s.x", c->name);
        kiln_value vx = kiln_param(g, nm, KILN_F32, x.rank, x.shape, KILN_INIT_ZEROS, 0);
        snprintf(nm, sizeof nm, "%s.w", c->name);
        kiln_value vw = kiln_param(g, nm, KILN_F32, w.rank, w.shape, KILN_INIT_ZEROS, 0);
        kiln_value vb = KILN_NO_VALUE;
        if (c->bias) {
            load(c->name, "b", &b);
            snprintf(nm, sizeof nm, "%s.b", c->name);
            vb = kiln_param(g, nm, KILN_F32, b.rank, b.shape, KILN_INIT_ZEROS, 0);
            kiln_npy_free(&b);
        }
        snprintf(nm, sizeof nm, "%s.dy", c->name);
        kiln_value vdy = kiln_input(g, nm, KILN_F32, dy.rank, dy.shape);
        kiln_conv_params p = {.stride = {c->s[0], c->s[1]},
                              .padding = {c->p[0], c->p[1]},
                              .dilation = {c->d[0], c->d[1]},
                              .output_padding = {c->op_pad[0], c->op_pad[1]},
                              .groups = c->groups};
        kiln_value y = strcmp(c->op, "conv2d") == 0 ? kiln_conv2d(g, vx, vw, vb, &p)
                                                    : kiln_conv_transpose2d(g, vx, vw, vb, &p);
        cr_assert_geq(y, 0, "%s: %s", c->name, kiln_graph_error(g));
        for (int d = 0; d < 4; d++)
            cr_assert_eq(g->nodes[y].shape[d], dy.shape[d], "%s: output axis %d: %lld, PyTorch %lld",
                         c->name, d, (long long)g->nodes[y].shape[d], (long long)dy.shape[d]);
        snprintf(nm, sizeof nm, "%s.y", c->name);
        cr_assert_eq(kiln_set_output(g, y, nm), KILN_OK, "%s", kiln_graph_error(g));
        kiln_value term = kiln_reduce_sum(g, kiln_mul(g, y, vdy), 0, NULL, 0);
        total = total < 0 ? term : kiln_add(g, total, term);
        kiln_npy_free(&x);
        kiln_npy_free(&w);
        kiln_npy_free(&dy);
    }
    cr_assert_eq(kiln_set_loss(g, total, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    G->g = g;
}

static void set_from(kiln_program *p, const char *cname, const char *t, const char *tensor)
{
    kiln_npy a;
    load(cname, t, &a);
    cr_assert_eq(kiln_program_set(p, tensor, a.data, (size_t)a.numel * sizeof(float)), KILN_OK,
                 "%s", kiln_program_error(p));
    kiln_npy_free(&a);
}

/* Compares tensor `tensor` of p with golden file <case>.<t>; returns the
 * largest |a - e| / (ATOL + RTOL |e|). */
static double compare(kiln_program *p, const char *backend, const char *cname, const char *t,
                      const char *tensor)
{
    kiln_npy e;
    load(cname, t, &e);
    float *a = malloc((size_t)e.numel * sizeof *a);
    cr_assert_not_null(a);
    cr_assert_eq(kiln_program_get(p, tensor, a, (size_t)e.numel * sizeof *a), KILN_OK, "%s: %s",
                 backend, kiln_program_error(p));
    const float *ev = e.data;
    double worst = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < e.numel; i++) {
        double d = fabs((double)a[i] - (double)ev[i]), tol = ATOL + RTOL * fabs((double)ev[i]);
        if (!(d <= tol) && bad++ < 3)
            cr_expect(false, "%s %s.%s: element %lld: kiln %.9g, PyTorch %.9g", backend, cname, t,
                      (long long)i, (double)a[i], (double)ev[i]);
        if (d / tol > worst) worst = d / tol;
    }
    cr_expect_eq(bad, 0, "%s %s.%s: %lld of %lld elements differ", backend, cname, t,
                 (long long)bad, (long long)e.numel);
    free(a);
    kiln_npy_free(&e);
    return worst;
}

static void run_golden(kiln_backend be, const char *bname, int threads)
{
    golden G;
    golden_graph(&G);
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = threads;
    o.cache_dir = cache_dir;
    o.train.keep_grads = 1;
    kiln_program *p = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_compile(G.g, &o, &p, &err), KILN_OK, "%s: %s", bname, err ? err : "");
    char nm[96], gn[128];
    for (int k = 0; k < G.n; k++) {
        const char *c = G.c[k].name;
        const char *ts[4] = {"x", "w", "dy", "b"};
        for (int t = 0; t < (G.c[k].bias ? 4 : 3); t++) {
            snprintf(nm, sizeof nm, "%s.%s", c, ts[t]);
            set_from(p, c, ts[t], nm);
        }
    }
    cr_assert_eq(kiln_program_set_hparam(p, "step", 1), KILN_OK);
    cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s: %s", bname, kiln_program_error(p));
    double worst = 0, w;
    for (int k = 0; k < G.n; k++) {
        const char *c = G.c[k].name;
        snprintf(nm, sizeof nm, "%s.y", c);
        if ((w = compare(p, bname, c, "y", nm)) > worst) worst = w;
        const char *gs[3][2] = {{"x", "dx"}, {"w", "dw"}, {"b", "db"}};
        for (int t = 0; t < (G.c[k].bias ? 3 : 2); t++) {
            snprintf(gn, sizeof gn, "grad.%s.%s", c, gs[t][0]);
            if ((w = compare(p, bname, c, gs[t][1], gn)) > worst) worst = w;
        }
    }
    if (getenv("KILN_CONV_VERBOSE"))
        fprintf(stderr, "conv golden %s: %d cases, largest error %.3f of the tolerance\n", bname,
                G.n, worst);
    kiln_program_free(p);
    kiln_graph_free(G.g);
    free(err);
}

Test(conv, golden_reference) { run_golden(KILN_BACKEND_REF, "reference", 1); }
Test(conv, golden_c) { run_golden(KILN_BACKEND_C, "C", 2); }
Test(conv, golden_c_1_thread) { run_golden(KILN_BACKEND_C, "C", 1); }
Test(conv, golden_llvm)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    run_golden(KILN_BACKEND_LLVM, "LLVM", 2);
}

/* ---- the pass ---- */

/* x [2,3,8,8] -> conv2d(4, 3x3, pad 1, groups) -> relu -> mean: a graph
 * with a loss, as the training program sees it. */
static kiln_graph *small_conv(int64_t groups, int64_t cin, int64_t cout)
{
    kiln_graph *g = kiln_graph_new("small_conv");
    int64_t xs[4] = {2, cin, 8, 8};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_conv_params p = {.padding = {1, 1}, .groups = groups};
    kiln_value y = kiln_conv2d_layer(g, x, cout, 3, 3, &p, 1, "conv");
    kiln_value loss = kiln_reduce_mean(g, kiln_relu(g, y), 0, NULL, 0);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

/* Matrix products of two matrices (the packed GEMM's). */
static int gemms(const kiln_graph *g)
{
    int n = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *x = &g->nodes[i];
        n += x->op == KILN_OP_MATMUL && g->nodes[x->inputs[0]].rank == 2 &&
             g->nodes[x->inputs[1]].rank == 2;
    }
    return n;
}

static kiln_graph *train_graph(const kiln_graph *f)
{
    kiln_train_options o = kiln_train_defaults();
    kiln_graph *t = NULL;
    cr_assert_eq(kiln_train_program(f, &o, &t), KILN_OK, "%s", kiln_graph_error((kiln_graph *)f));
    return t;
}

Test(conv, pass_shares_im2col_and_uses_gemms)
{
    kiln_graph *f = small_conv(1, 3, 4);
    kiln_graph *t = train_graph(f);
    cr_assert_eq(kiln_test_count_op(t, "conv2d"), 1);
    cr_assert_eq(kiln_test_count_op(t, "conv2d_grad_weight"), 1);
    /* x is an input: no input gradient, so no conv_transpose2d */
    cr_assert_eq(kiln_test_count_op(t, "conv_transpose2d"), 0);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_graph_verify(t), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_test_count_op(t, "conv2d"), 0);
    cr_assert_eq(kiln_test_count_op(t, "conv2d_grad_weight"), 0);
    cr_assert_eq(kiln_test_count_op(t, "im2col"), 1, "the forward's im2col serves dw");
    cr_assert_eq(gemms(t), 2); /* y, dw */
    /* and the bias gradient, dY @ 1 */
    cr_assert_eq(kiln_test_count_op(t, "matmul"), 3);
    /* running it again changes nothing */
    char *before = kiln_graph_to_string(t);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK);
    char *after = kiln_graph_to_string(t);
    cr_assert_str_eq(before, after);
    free(before);
    free(after);
    kiln_graph_free(t);
    kiln_graph_free(f);
}

/* x [2,3,8,8] -> conv3x3(c1, bias) -> relu -> conv3x3(c2, stride, no bias)
 * -> mean as the loss: the forward graph. */
static kiln_graph *two_convs(int64_t c1, int64_t c2, int64_t stride)
{
    kiln_graph *g = kiln_graph_new("two_convs");
    int64_t xs[4] = {2, 3, 8, 8};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_conv_params p = {.padding = {1, 1}};
    kiln_value h = kiln_relu(g, kiln_conv2d_layer(g, x, c1, 3, 3, &p, 1, "c1"));
    p.stride[0] = p.stride[1] = stride;
    kiln_value y = kiln_conv2d_layer(g, h, c2, 3, 3, &p, 0, "c2");
    cr_assert_eq(kiln_set_loss(g, kiln_reduce_mean(g, y, 0, NULL, 0), "loss"), KILN_OK);
    return g;
}

/* The input gradient of a stride-1 convolution is the convolution of dy
 * with the flipped, channel-swapped weights (passes/conv_lower.c): a GEMM
 * over an im2col of dy, no col2im; with stride 2 it stays W^T @ dy and
 * col2im. */
static void input_gradient(int stride, int col2ims, int im2cols, int flips)
{
    kiln_graph *g = two_convs(4, 5, stride);
    kiln_graph *t = train_graph(g);
    cr_assert_eq(kiln_test_count_op(t, "conv_transpose2d"), 1);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_test_count_op(t, "conv_transpose2d"), 0);
    cr_assert_eq(kiln_test_count_op(t, "col2im"), col2ims);
    cr_assert_eq(kiln_test_count_op(t, "im2col"), im2cols);
    cr_assert_eq(kiln_test_count_op(t, "flip"), flips);
    cr_assert_eq(gemms(t), 5); /* 2 forward, 2 dw, 1 dx */
    kiln_graph_free(t);
    kiln_graph_free(g);
}

Test(conv, pass_input_gradient_stride_1_is_a_convolution)
{
    input_gradient(1, 0, 3, 1);
}

Test(conv, pass_input_gradient_stride_2_is_gemm_and_col2im)
{
    input_gradient(2, 1, 2, 0);
}

/* The convolution's bias and ReLU run in the kernel that moves its output
 * back to NCHW; its matrix products are packed GEMMs. */
Test(conv, fusion_bias_and_relu_join_the_permute)
{
    kiln_graph *f = two_convs(4, 5, 1);
    kiln_graph *t = train_graph(f);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    kiln_fuse_plan *p = NULL;
    cr_assert_eq(kiln_fuse(t, NULL, &p), KILN_OK);
    int relus = 0, gemm_groups = 0;
    for (int32_t i = 0; i < t->nnodes; i++) {
        const kiln_node *n = &t->nodes[i];
        if (n->op == KILN_OP_RELU) {
            relus++;
            cr_assert_eq(p->fate[i], KILN_FATE_GROUP);
            cr_assert_eq(t->nodes[p->groups[p->group[i]].anchor].op, KILN_OP_PERMUTE,
                         "relu is not in the permute's group");
        }
        if (n->op == KILN_OP_MATMUL && p->fate[i] == KILN_FATE_GROUP &&
            p->groups[p->group[i]].anchor == i && kiln_matmul_is_gemm(t, i))
            gemm_groups++;
    }
    cr_assert_eq(relus, 1);
    cr_assert_eq(gemm_groups, 5); /* 2 forward, 2 dw, 1 dx */
    kiln_fuse_plan_free(p);
    kiln_graph_free(t);
    kiln_graph_free(f);
}

Test(conv, pass_pointwise_conv_needs_no_im2col)
{
    kiln_graph *g = kiln_graph_new("pointwise");
    int64_t xs[4] = {2, 6, 5, 5};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_value y = kiln_conv2d_layer(g, x, 4, 1, 1, NULL, 1, "pw");
    cr_assert_eq(kiln_set_loss(g, kiln_reduce_mean(g, y, 0, NULL, 0), "loss"), KILN_OK);
    kiln_graph *t = train_graph(g);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_test_count_op(t, "im2col"), 0);
    cr_assert_eq(gemms(t), 2);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

Test(conv, pass_leaves_many_groups_to_direct_kernels)
{
    kiln_graph *f = small_conv(20, 20, 20);
    kiln_graph *t = train_graph(f);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_test_count_op(t, "conv2d"), 1);
    cr_assert_eq(kiln_test_count_op(t, "conv2d_grad_weight"), 1);
    cr_assert_eq(kiln_test_count_op(t, "im2col"), 0);
    kiln_graph_free(t);
    kiln_graph_free(f);
    /* a few groups: one GEMM per group */
    f = small_conv(2, 4, 6);
    t = train_graph(f);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_test_count_op(t, "conv2d"), 0);
    cr_assert_eq(gemms(t), 4);
    kiln_graph_free(t);
    kiln_graph_free(f);
}

/* ---- implicit im2col (passes/fuse.h): the GEMM packs B from the image ---- */

/* x [2,C,H,W] -> conv2d(Co, 3x3, groups) -> relu: a forward-only graph
 * (an output, no loss). */
static kiln_graph *conv_forward(int64_t groups, int64_t cin, int64_t cout, int64_t stride)
{
    kiln_graph *g = kiln_graph_new("conv_forward");
    int64_t xs[4] = {2, cin, 9, 11};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_conv_params p = {.padding = {1, 1}, .stride = {stride, stride}, .groups = groups};
    kiln_value y = kiln_relu(g, kiln_conv2d_layer(g, x, cout, 3, 3, &p, 1, "conv"));
    cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

/* The plan: with the option, no im2col group, the GEMMs record their
 * im2col, one kernel less per GEMM's im2col; the arena loses the column
 * matrix. */
Test(conv, implicit_im2col_removes_the_kernel_and_buffer)
{
    for (int64_t G = 1; G <= 2; G++) {
        kiln_graph *g = conv_forward(G, 4, 6, 1);
        kiln_graph *t = kiln_graph_clone(g);
        cr_assert_not_null(t);
        cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
        cr_assert_eq(kiln_test_count_op(t, "im2col"), 1);
        kiln_fuse_plan *ex = NULL, *im = NULL;
        kiln_fuse_options on = {.implicit_im2col = true};
        cr_assert_eq(kiln_fuse(t, NULL, &ex), KILN_OK);
        cr_assert_eq(kiln_fuse(t, &on, &im), KILN_OK);
        int im2col_groups[2] = {0, 0}, implicit = 0;
        for (int32_t gi = 0; gi < ex->ngroups; gi++)
            im2col_groups[0] += t->nodes[ex->groups[gi].anchor].op == KILN_OP_IM2COL;
        for (int32_t gi = 0; gi < im->ngroups; gi++) {
            im2col_groups[1] += t->nodes[im->groups[gi].anchor].op == KILN_OP_IM2COL;
            int32_t b = im->groups[gi].b_im2col;
            if (b >= 0) {
                implicit++;
                cr_assert_eq(t->nodes[b].op, KILN_OP_IM2COL);
                cr_assert_eq(im->fate[b], KILN_FATE_INLINE);
                cr_assert_eq(im->groups[gi].b_row0, (G == 1 ? 0 : 2 * 9 * (implicit - 1)));
            }
        }
        cr_assert_eq(im2col_groups[0], 1);
        cr_assert_eq(im2col_groups[1], 0, "the im2col still has a kernel");
        cr_assert_eq(implicit, (int)G, "one GEMM per group packs from the image");
        /* G > 1: the row slices go too */
        cr_assert_eq(im->nkernels, ex->nkernels - 1 - (G > 1 ? (int32_t)G : 0),
                     "kernels: %d implicit, %d explicit", im->nkernels, ex->nkernels);
        kiln_fuse_plan_free(ex);
        kiln_fuse_plan_free(im);
        kiln_graph_free(t);

        /* the programs: kernels and arena (kiln_plan_stats, the C backend's plan) */
        kiln_program_stats s[2];
        char *err = NULL;
        for (int m = 0; m < 2; m++) {
            setenv("KILN_EXPLICIT_IM2COL", m ? "1" : "0", 1);
            cr_assert_eq(kiln_plan_stats(g, NULL, &s[m], &err), KILN_OK, "%s", err ? err : "");
        }
        unsetenv("KILN_EXPLICIT_IM2COL");
        size_t cols = (size_t)(4 * 9) * 2 * 9 * 11 * sizeof(float);
        cr_assert_leq(s[0].arena_bytes + cols, s[1].arena_bytes,
                      "arena %zu implicit, %zu explicit (cols %zu bytes)", s[0].arena_bytes,
                      s[1].arena_bytes, cols);
        char *k[2];
        for (int m = 0; m < 2; m++) {
            setenv("KILN_EXPLICIT_IM2COL", m ? "1" : "0", 1);
            k[m] = kiln_plan_kernels(g, NULL, &err);
            cr_assert_not_null(k[m], "%s", err ? err : "");
        }
        unsetenv("KILN_EXPLICIT_IM2COL");
        cr_assert_null(strstr(k[0], "im2col"), "%s", k[0]);
        cr_assert_not_null(strstr(k[1], "im2col"), "%s", k[1]);
        free(k[0]);
        free(k[1]);
        kiln_graph_free(g);
    }
}

/* A training step: the forward GEMM packs B from the image and the weight
 * gradient (cols @ dy^T) makes A from it (gemm.h: PACKA), so no im2col
 * kernel runs and no column matrix is stored; the input gradient of the
 * stride-1 convolution (a convolution of dy) packs from dy. */
Test(conv, implicit_im2col_in_training_stores_no_column_matrix)
{
    kiln_graph *g = two_convs(16, 16, 1);
    kiln_graph *t = train_graph(g);
    cr_assert_eq(kiln_run_pass(t, "conv_lower"), KILN_OK, "%s", kiln_graph_error(t));
    cr_assert_eq(kiln_test_count_op(t, "im2col"), 3); /* x, h, and dy of c2 */
    kiln_fuse_options on = {.implicit_im2col = true};
    kiln_fuse_plan *im = NULL;
    cr_assert_eq(kiln_fuse(t, &on, &im), KILN_OK);
    int from_a = 0, from_b = 0;
    for (int32_t gi = 0; gi < im->ngroups; gi++) {
        cr_assert_neq(t->nodes[im->groups[gi].anchor].op, KILN_OP_IM2COL);
        int32_t a = im->groups[gi].a_im2col, b = im->groups[gi].b_im2col;
        cr_assert(a < 0 || b < 0, "one operand from an image per GEMM");
        if (a >= 0) {
            from_a++;
            cr_assert_eq(im->fate[a], KILN_FATE_INLINE);
            const kiln_node *mm = &t->nodes[im->groups[gi].anchor];
            cr_assert_eq(kiln_attr_get_int(mm, "ta"), 0);
        }
        from_b += b >= 0;
    }
    cr_assert_eq(from_a, 2, "both weight gradients make A from the image");
    cr_assert_eq(from_b, 3, "both forward GEMMs and the input gradient pack B from one");
    for (int32_t i = 0; i < t->nnodes; i++)
        if (t->nodes[i].op == KILN_OP_IM2COL) cr_assert_eq(im->fate[i], KILN_FATE_INLINE);
    kiln_fuse_plan_free(im);
    kiln_graph_free(t);
    char *err = NULL;
    char *k = kiln_plan_kernels(g, NULL, &err);
    cr_assert_not_null(k, "%s", err ? err : "");
    cr_assert_null(strstr(k, "im2col"), "%s", k);
    free(k);
    kiln_graph_free(g);
}

/* Runs entry `entry` of the golden graph compiled with implicit im2col
 * (explicit = 0) or without; returns every output and gradient, in order. */
static float *golden_run(golden *G, int explicit_cols, const char *entry, size_t *n)
{
    setenv("KILN_EXPLICIT_IM2COL", explicit_cols ? "1" : "0", 1);
    kiln_compile_options o = kiln_compile_defaults();
    o.threads = 2;
    o.cache_dir = cache_dir;
    o.train.keep_grads = 1;
    kiln_program *p = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_compile(G->g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
    unsetenv("KILN_EXPLICIT_IM2COL");
    char nm[96];
    for (int k = 0; k < G->n; k++) {
        const char *ts[4] = {"x", "w", "dy", "b"};
        for (int t = 0; t < (G->c[k].bias ? 4 : 3); t++) {
            snprintf(nm, sizeof nm, "%s.%s", G->c[k].name, ts[t]);
            set_from(p, G->c[k].name, ts[t], nm);
        }
    }
    cr_assert_eq(kiln_program_set_hparam(p, "step", 1), KILN_OK);
    cr_assert_eq(kiln_program_run(p, entry), KILN_OK, "%s", kiln_program_error(p));
    size_t cap = 1 << 20, used = 0;
    float *out = malloc(cap * sizeof *out);
    cr_assert_not_null(out);
    for (int k = 0; k < G->n; k++) {
        const char *names[4] = {"y", "grad.%s.x", "grad.%s.w", "grad.%s.b"};
        int nt = strcmp(entry, "forward") ? (G->c[k].bias ? 4 : 3) : 1;
        for (int t = 0; t < nt; t++) {
            if (t == 0) snprintf(nm, sizeof nm, "%s.y", G->c[k].name);
            else snprintf(nm, sizeof nm, names[t], G->c[k].name);
            kiln_npy e;
            load(G->c[k].name, t == 0 ? "dy" : t == 1 ? "x" : t == 2 ? "w" : "b", &e);
            size_t ne = (size_t)e.numel;
            kiln_npy_free(&e);
            cr_assert_leq(used + ne, cap);
            cr_assert_eq(kiln_program_get(p, nm, out + used, ne * sizeof *out), KILN_OK, "%s: %s",
                         nm, kiln_program_error(p));
            used += ne;
        }
    }
    kiln_program_free(p);
    free(err);
    *n = used;
    return out;
}

/* Packing from the image computes the same bits as packing the stored
 * column matrix, over the golden cases (stride, padding, dilation, groups). */
Test(conv, implicit_im2col_is_bit_identical)
{
    golden G;
    golden_graph(&G);
    const char *entries[2] = {"train_step", "forward"};
    for (int e = 0; e < 2; e++) {
        size_t n0, n1;
        float *a = golden_run(&G, 0, entries[e], &n0), *b = golden_run(&G, 1, entries[e], &n1);
        cr_assert_eq(n0, n1);
        size_t bad = 0;
        for (size_t i = 0; i < n0; i++) bad += memcmp(&a[i], &b[i], sizeof *a) != 0;
        cr_assert_eq(bad, 0, "%s: %zu of %zu values differ", entries[e], bad, n0);
        free(a);
        free(b);
    }
    kiln_graph_free(G.g);
}

/* ---- the direct lowering rules, through the kernel-IR evaluator ---- */

static uint64_t rng = 0x243F6A8885A308D3ull;

static double rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2 - 1;
}

/* Builds op on random inputs of the given shapes, lowers the node by its
 * own rule and compares the kernel's result with the reference's. */
static void direct(const char *op, int nin, const int64_t (*shapes)[4], int nattrs,
                   const char *const *attrs)
{
    kiln_graph *g = kiln_graph_new("direct");
    kiln_value in[3];
    char nm[16];
    for (int i = 0; i < nin; i++) {
        snprintf(nm, sizeof nm, "in%d", i);
        int rank = shapes[i][1] == 0 ? 1 : 4;
        in[i] = kiln_input(g, nm, KILN_F32, rank, shapes[i]);
    }
    kiln_value y = kiln_op(g, op, nin, in, nattrs, attrs);
    cr_assert_geq(y, 0, "%s: %s", op, kiln_graph_error(g));
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (int i = 0; i < nin; i++) {
        int64_t n = kiln_node_numel(&g->nodes[in[i]]);
        double *v = malloc((size_t)n * sizeof *v);
        for (int64_t j = 0; j < n; j++) v[j] = (double)(float)rnd();
        cr_assert_eq(kiln_interp_set(it, in[i], v, (size_t)n), KILN_OK);
        free(v);
    }
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    kiln_kernel *k = NULL;
    char err[512] = "";
    cr_assert_eq(kiln_lower_node(g, y, &k, err, sizeof err), KILN_OK, "%s: %s", op, err);
    keval e;
    cr_assert(keval_init(&e, k));
    int32_t outb = -1;
    for (int32_t b = 0; b < k->nbufs; b++) {
        if (k->bufs[b].node < 0) continue; /* scratch */
        if (k->bufs[b].written) {
            cr_assert_eq(k->bufs[b].node, y, "%s writes another node", op);
            outb = b;
            for (int64_t i = 0; i < e.len[b]; i++) e.buf[b][i] = 12345.0;
        } else {
            memcpy(e.buf[b], kiln_interp_value(it, k->bufs[b].node),
                   (size_t)e.len[b] * sizeof(double));
        }
    }
    keval_typecheck(&e);
    cr_assert_eq(e.err[0], 0, "%s: %s", op, e.err);
    cr_assert_eq(keval_run(&e), 0);
    cr_assert_eq(e.err[0], 0, "%s: %s", op, e.err);
    const double *ref = kiln_interp_value(it, y);
    /* the direct rules sum in f64 as the reference; col2im sums its taps in f32 */
    double tol = strcmp(op, "col2im") == 0 ? 1e-5 : 1e-6;
    for (int64_t i = 0; i < e.len[outb]; i++)
        cr_assert(fabs(e.buf[outb][i] - ref[i]) <= tol * fmax(1, fabs(ref[i])),
                  "%s: element %lld: kernel %.9g, reference %.9g", op, (long long)i,
                  e.buf[outb][i], ref[i]);
    keval_fini(&e);
    kiln_kernel_free(k);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

Test(conv, direct_rules_match_reference)
{
    direct("conv2d", 3, (const int64_t[][4]){{2, 4, 7, 6}, {6, 2, 3, 2}, {6}}, 4,
           (const char *const[]){"stride=[2,1]", "padding=[1,2]", "dilation=[1,2]", "groups=2"});
    direct("conv2d", 2, (const int64_t[][4]){{1, 3, 5, 5}, {3, 1, 3, 3}}, 2,
           (const char *const[]){"groups=3", "padding=[1]"});
    direct("conv_transpose2d", 3, (const int64_t[][4]){{2, 4, 3, 4}, {4, 3, 3, 2}, {6}}, 4,
           (const char *const[]){"stride=[2,3]", "padding=[1,0]", "output_padding=[1,2]",
                                 "groups=2"});
    direct("conv_transpose2d", 2, (const int64_t[][4]){{1, 2, 4, 3}, {2, 2, 2, 2}}, 2,
           (const char *const[]){"dilation=[2,1]", "padding=[1]"});
    direct("conv2d_grad_weight", 2, (const int64_t[][4]){{2, 4, 6, 5}, {2, 6, 3, 2}}, 4,
           (const char *const[]){"kernel=[3,2]", "stride=[2]", "padding=[1,0]", "groups=2"});
    /* im2col and col2im: the unrolled taps and, above 49 taps, the loops */
    direct("im2col", 1, (const int64_t[][4]){{2, 3, 6, 7}}, 4,
           (const char *const[]){"kernel=[3,2]", "stride=[2,1]", "padding=[2,1]",
                                 "dilation=[1,3]"});
    /* stride 1, rows as wide as the image's: one span per tap; taps
     * wholly in the padding */
    direct("im2col", 1, (const int64_t[][4]){{2, 2, 7, 6}}, 3,
           (const char *const[]){"kernel=[3]", "padding=[2]", "dilation=[2]"});
    direct("im2col", 1, (const int64_t[][4]){{1, 2, 2, 5}}, 2,
           (const char *const[]){"kernel=[5,3]", "padding=[2,1]"});
    direct("im2col", 1, (const int64_t[][4]){{1, 2, 9, 9}}, 2,
           (const char *const[]){"kernel=[8]", "padding=[3]"});
    direct("col2im", 1, (const int64_t[][4]){{18, 2, 3, 6}}, 4,
           (const char *const[]){"size=[6,7]", "kernel=[3,2]", "stride=[2,1]", "padding=[2,1]"});
    /* stride 1, same padding, 8 images or more: masked spans */
    direct("col2im", 1, (const int64_t[][4]){{18, 8, 5, 6}}, 3,
           (const char *const[]){"size=[5,6]", "kernel=[3]", "padding=[1]"});
    direct("col2im", 1, (const int64_t[][4]){{8, 9, 4, 7}}, 4,
           (const char *const[]){"size=[4,7]", "kernel=[2]", "padding=[1]", "dilation=[2]"});
    direct("col2im", 1, (const int64_t[][4]){{128, 1, 8, 8}}, 3,
           (const char *const[]){"size=[9,9]", "kernel=[8]", "padding=[3]"});
}

/* ---- builder, language ---- */

static double attr_scale(const kiln_graph *g, const char *name)
{
    kiln_value v = kiln_graph_find(g, name);
    cr_assert_geq(v, 0, "no node '%s'", name);
    return kiln_attr_get_float(&g->nodes[v], "scale");
}

Test(conv, layers_name_and_initialise_as_pytorch)
{
    const char *text = "model m\n"
                       "input x: f32[B, 4, 10, 10]\n"
                       "h = conv2d(x, 6, kernel=3, padding=1, groups=2)\n"
                       "h = conv_transpose2d(h, 5, kernel=[2,3], stride=2, bias=false)\n"
                       "h = conv2d(h, 3, 1)\n"
                       "output h\n";
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(text, "m.kiln", 2, &g, &err), KILN_OK, "%s", err ? err : "");
    const kiln_node *w0 = &g->nodes[kiln_graph_find(g, "conv2d0.weight")];
    cr_assert(w0->rank == 4 && w0->shape[0] == 6 && w0->shape[1] == 2 && w0->shape[2] == 3);
    cr_assert_float_eq(attr_scale(g, "conv2d0.weight"), 1.0 / sqrt(2 * 9), 1e-12);
    cr_assert_float_eq(attr_scale(g, "conv2d0.bias"), 1.0 / sqrt(2 * 9), 1e-12);
    const kiln_node *w1 = &g->nodes[kiln_graph_find(g, "conv_transpose2d0.weight")];
    cr_assert(w1->shape[0] == 6 && w1->shape[1] == 5 && w1->shape[2] == 2 && w1->shape[3] == 3);
    cr_assert_float_eq(attr_scale(g, "conv_transpose2d0.weight"), 1.0 / sqrt(5 * 6), 1e-12);
    cr_assert_lt(kiln_graph_find(g, "conv_transpose2d0.bias"), 0);
    cr_assert_geq(kiln_graph_find(g, "conv2d1.weight"), 0);
    kiln_value h = kiln_graph_find(g, "h");
    cr_assert_geq(h, 0);
    const int64_t want[4] = {2, 3, 20, 21};
    for (int d = 0; d < 4; d++) cr_assert_eq(g->nodes[h].shape[d], want[d], "axis %d", d);
    kiln_graph_free(g);
}

Test(conv, language_calls_the_op_on_tensors)
{
    const char *text = "model m\n"
                       "input x: f32[B, 2, 6, 6]\n"
                       "input w: f32[3, 2, 3, 3]\n"
                       "input b: f32[3]\n"
                       "y = conv2d(x, w, b, stride=2, padding=1)\n"
                       "z = conv_transpose2d(y, w, output_padding=1, stride=2, padding=1)\n"
                       "output z\n";
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(text, "m.kiln", 1, &g, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_test_count_op(g, "conv2d"), 1);
    cr_assert_eq(kiln_test_count_op(g, "conv_transpose2d"), 1);
    for (int32_t i = 0; i < g->nnodes; i++)
        cr_assert_neq(g->nodes[i].role, KILN_ROLE_PARAM, "the op form creates no parameters");
    kiln_value z = kiln_graph_find(g, "z");
    cr_assert(g->nodes[z].shape[1] == 2 && g->nodes[z].shape[2] == 6 && g->nodes[z].shape[3] == 6);
    kiln_graph_free(g);
}

Test(conv, errors_name_the_shapes)
{
    kiln_graph *g = kiln_graph_new("e");
    int64_t xs[4] = {1, 3, 5, 5}, ws[4] = {4, 2, 3, 3}, big[4] = {4, 3, 7, 7};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_value w = kiln_input(g, "w", KILN_F32, 4, ws);
    kiln_value wb = kiln_input(g, "wb", KILN_F32, 4, big);
    cr_assert_eq(kiln_conv2d(g, x, w, KILN_NO_VALUE, NULL), KILN_ERR_SHAPE);
    cr_assert(strstr(kiln_graph_error(g), "f32[1,3,5,5]") && strstr(kiln_graph_error(g), "f32[4,2,3,3]"),
              "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_conv2d(g, x, wb, KILN_NO_VALUE, NULL), KILN_ERR_SHAPE);
    cr_assert(strstr(kiln_graph_error(g), "does not fit"), "%s", kiln_graph_error(g));
    kiln_conv_params p = {.stride = {-1, 1}};
    cr_assert_eq(kiln_conv2d(g, x, wb, KILN_NO_VALUE, &p), KILN_ERR_INVALID);
    cr_assert(strstr(kiln_graph_error(g), "stride"), "%s", kiln_graph_error(g));
    /* an error given as the bias passes through */
    cr_assert_eq(kiln_conv2d(g, x, w, KILN_ERR_NOT_FOUND, NULL), KILN_ERR_NOT_FOUND);
    kiln_graph_free(g);
}

/* A small CNN in the language trains: its loss falls over a few AdamW
 * steps on one batch, with the C backend (and the LLVM one when built). */
static float cnn_loss(kiln_backend be, int steps, float *first)
{
    const char *text = "model cnn\n"
                       "input x: f32[B, 1, 12, 12]\n"
                       "target y: i32[B]\n"
                       "h = relu(conv2d(x, 8, kernel=3, padding=1))\n"
                       "h = relu(conv2d(h, 16, kernel=3, stride=2, padding=1))\n"
                       "h = relu(conv2d(h, 16, kernel=1))\n"
                       "out = linear(flatten(h), 4)\n"
                       "loss = cross_entropy(out, y)\n"
                       "metric accuracy(out, y)\n";
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(text, "cnn.kiln", 16, &g, &err), KILN_OK, "%s", err ? err : "");
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = 2;
    o.cache_dir = cache_dir;
    kiln_program *p = NULL;
    cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_program_init_params(p, 7), KILN_OK);
    float x[16 * 144];
    int32_t y[16];
    for (int i = 0; i < 16; i++) {
        y[i] = i % 4;
        for (int j = 0; j < 144; j++) /* a class is a bright quadrant, plus noise */
            x[i * 144 + j] = (((j / 12) / 6) * 2 + (j % 12) / 6 == y[i] ? 1.0f : 0.0f) +
                             0.3f * (float)rnd();
    }
    cr_assert_eq(kiln_program_set(p, "x", x, sizeof x), KILN_OK);
    cr_assert_eq(kiln_program_set(p, "y", y, sizeof y), KILN_OK);
    cr_assert_eq(kiln_program_set_hparam(p, "lr", 3e-3), KILN_OK);
    float loss = 0;
    for (int s = 1; s <= steps; s++) {
        cr_assert_eq(kiln_program_set_hparam(p, "step", s), KILN_OK);
        cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
        cr_assert_eq(kiln_program_get(p, "loss", &loss, sizeof loss), KILN_OK);
        cr_assert(isfinite(loss));
        if (s == 1) *first = loss;
    }
    kiln_program_free(p);
    kiln_graph_free(g);
    return loss;
}

Test(conv, model_with_conv_layers_trains)
{
    float first, last = cnn_loss(KILN_BACKEND_C, 20, &first);
    cr_assert_lt(last, 0.5f * first, "loss %g after 20 steps, %g at the first", last, first);
    if (kiln_llvm_available()) {
        float lfirst, llast = cnn_loss(KILN_BACKEND_LLVM, 20, &lfirst);
        cr_assert_lt(llast, 0.5f * lfirst, "LLVM: loss %g after 20 steps, %g at the first", llast,
                     lfirst);
    }
}
