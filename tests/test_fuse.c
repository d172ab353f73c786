/* tests/test_fuse.c — the fusion pass (passes/fuse.h) and fused lowering
 * (codegen/lower_group.c): one test per rule asserting the groups of a
 * small graph, and the kernel count of the MLP's training step.
 * Numerical agreement of fused programs with the reference is checked by
 * test_golden (PyTorch) and test_program/test_threads (C against REF). */
#include "codegen/lower_group.h"
#include "ir/ops.h"
#include "kiln/kiln.h"
#include "kiln/program.h"
#include "passes/fuse.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static kiln_fuse_plan *fuse(const kiln_graph *g)
{
    kiln_fuse_plan *f = NULL;
    cr_assert_eq(kiln_fuse(g, NULL, &f), KILN_OK);
    return f;
}

/* Every plan kernel lowers. */
static void lower_all(const kiln_graph *g, const kiln_fuse_plan *f)
{
    for (int32_t k = 0; k < f->nkernels; k++) {
        kiln_kernel *kk = NULL;
        char err[512] = "";
        cr_assert_eq(kiln_lower_fused(g, f, k, &kk, err, sizeof err), KILN_OK, "%s", err);
        kiln_kernel_free(kk);
    }
}

/* exp(x) * y + 1 then relu: one loop, the intermediates inlined. */
Test(fuse, elementwise_chain_is_one_kernel)
{
    kiln_graph *g = kiln_graph_new("chain");
    int64_t s[] = {37, 129};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, s), y = kiln_input(g, "y", KILN_F32, 2, s);
    kiln_value e = kiln_exp(g, x), m = kiln_mul(g, e, y);
    kiln_value a = kiln_add(g, m, kiln_scalar(g, 1.0, KILN_F32));
    cr_assert_eq(kiln_set_output(g, kiln_relu(g, a), "out"), KILN_OK);
    kiln_fuse_plan *f = fuse(g);
    cr_expect_eq(f->nkernels, 1);
    cr_expect_eq(f->fate[e], KILN_FATE_INLINE);
    cr_expect_eq(f->fate[m], KILN_FATE_INLINE);
    lower_all(g, f);
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* A reduction receives its elementwise producer. */
Test(fuse, reduction_takes_its_producers)
{
    kiln_graph *g = kiln_graph_new("red");
    int64_t s[] = {64, 300};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, s), y = kiln_input(g, "y", KILN_F32, 2, s);
    int64_t ax[] = {1};
    kiln_value r = kiln_reduce_sum(g, kiln_mul(g, x, y), 1, ax, 0);
    cr_assert_eq(kiln_set_output(g, r, "out"), KILN_OK);
    kiln_fuse_plan *f = fuse(g);
    cr_expect_eq(f->nkernels, 1);
    lower_all(g, f);
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* relu(x @ W^T + b): the bias and relu in the GEMM's epilogue. */
Test(fuse, matmul_takes_its_tail)
{
    kiln_graph *g = kiln_graph_new("lin");
    int64_t xs[] = {128, 784}, ws[] = {512, 784}, bs[] = {512};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value w = kiln_param(g, "w", KILN_F32, 2, ws, KILN_INIT_UNIFORM, 0.05), b = kiln_param(g, "b", KILN_F32, 1, bs, KILN_INIT_ZEROS, 0);
    kiln_value mm = kiln_matmul(g, x, w, 0, 1);
    kiln_value y = kiln_relu(g, kiln_add(g, mm, b));
    cr_assert_eq(kiln_set_output(g, y, "out"), KILN_OK);
    kiln_fuse_plan *f = fuse(g);
    cr_expect_eq(f->nkernels, 1);
    cr_expect_eq(f->ngroups, 1);
    cr_expect_eq(f->groups[0].anchor, mm);
    cr_expect_eq(f->groups[0].gemm_out, y, "the GEMM sums into the output");
    kiln_kernel *k = NULL;
    char err[256];
    cr_assert_eq(kiln_lower_fused(g, f, 0, &k, err, sizeof err), KILN_OK, "%s", err);
    cr_expect_eq(k->ngemms, 1);
    cr_expect_eq(k->stmts[k->body].kind, KS_GEMM);
    cr_expect_geq(k->stmts[k->body].body, 0, "the GEMM has no epilogue");
    kiln_kernel_free(k);
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* (softmax(z) - onehot) * w: the gradient of cross-entropy is the softmax's
 * tail, one_hot computed inside it. */
Test(fuse, softmax_takes_the_cross_entropy_gradient)
{
    kiln_graph *g = kiln_graph_new("sm");
    int64_t zs[] = {64, 10}, ls[] = {64};
    kiln_value z = kiln_input(g, "z", KILN_F32, 2, zs);
    kiln_value lab = kiln_target(g, "y", KILN_I32, 1, ls);
    kiln_attr oa[3] = {kiln_attr_int("depth", 10), kiln_attr_int("axis", 1),
                       kiln_attr_dtype("dtype", KILN_F32)};
    kiln_value oh = kiln_build(g, KILN_OP_ONE_HOT, 1, &lab, 3, oa);
    kiln_value d = kiln_mul(g, kiln_sub(g, kiln_softmax(g, z, 1), oh),
                            kiln_scalar(g, 1.0 / 64, KILN_F32));
    cr_assert_eq(kiln_set_output(g, d, "dz"), KILN_OK);
    kiln_fuse_plan *f = fuse(g);
    cr_expect_eq(f->nkernels, 1);
    cr_expect_eq(f->fate[oh], KILN_FATE_INLINE);
    lower_all(g, f);
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* An expensive value with two readers is kept; a cheap one recomputed. */
Test(fuse, keep_or_recompute)
{
    kiln_graph *g = kiln_graph_new("kr");
    int64_t s[] = {1000};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value e = kiln_exp(g, x);
    kiln_value c = kiln_add(g, x, kiln_scalar(g, 2.0, KILN_F32));
    int64_t ax[] = {0};
    kiln_value r1 = kiln_reduce_sum(g, kiln_mul(g, e, c), 1, ax, 0);
    kiln_value r2 = kiln_reduce_max(g, kiln_add(g, e, c), 1, ax, 0);
    cr_assert_eq(kiln_set_output(g, r1, "a"), KILN_OK);
    cr_assert_eq(kiln_set_output(g, r2, "b"), KILN_OK);
    kiln_fuse_plan *f = fuse(g);
    cr_expect_eq(f->fate[e], KILN_FATE_GROUP, "exp with two readers is recomputed");
    cr_expect(f->stored[e]);
    cr_expect_eq(f->fate[c], KILN_FATE_INLINE, "a cheap add is kept");
    cr_expect_eq(f->nkernels, 3);
    lower_all(g, f);
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* flatten of an input shares its storage: no kernel. */
Test(fuse, views_alias_their_source)
{
    kiln_graph *g = kiln_graph_new("view");
    int64_t xs[] = {8, 1, 28, 28}, ws[] = {10, 784};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_value fl = kiln_flatten(g, x, 1);
    kiln_value w = kiln_param(g, "w", KILN_F32, 2, ws, KILN_INIT_UNIFORM, 0.05);
    cr_assert_eq(kiln_set_output(g, kiln_matmul(g, fl, w, 0, 1), "y"), KILN_OK);
    kiln_fuse_plan *f = fuse(g);
    cr_expect_eq(f->fate[fl], KILN_FATE_ALIAS);
    cr_expect_eq(f->alias_of[fl], x);
    cr_expect_eq(f->nkernels, 1);
    lower_all(g, f);
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* The MLP's training step (784-512-512-10, AdamW): forward GEMMs with bias
 * and relu tails, the loss, the metric, the softmax gradient, backward GEMMs
 * with relu-gradient tails and the weights' AdamW updates in their
 * epilogues, the biases' updates (their gradients' reductions inlined) in
 * one kernel: 12 kernels, the arena at most half the intermediates. */
Test(fuse, mlp_train_step_kernel_count)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_load(KILN_SOURCE_DIR "/examples/fashion_mlp.kiln", 128, &g, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    kiln_program_stats s;
    st = kiln_plan_stats(g, NULL, &s, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    cr_expect_leq(s.num_kernels, 12, "the MLP's train step has %d kernels", s.num_kernels);
    size_t inter = s.arena_bytes - s.interface_bytes;
    cr_expect_leq(2 * inter, s.intermediates_bytes, "arena %zu of intermediates %zu", inter,
                  s.intermediates_bytes);
    kiln_graph_free(g);
}

/* b = exp(a - max(a)) where a dies: b takes a's bytes (in-place), and the program
 * still computes what the reference computes. */
Test(fuse, inplace_reuse)
{
    kiln_graph *g = kiln_graph_new("inplace");
    int64_t s[] = {4096};
    int64_t ax[] = {0};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value a = kiln_exp(g, x), m = kiln_reduce_max(g, a, 1, ax, 0);
    cr_assert_eq(kiln_set_output(g, m, "m"), KILN_OK);
    /* b needs m (a later kernel than a's): its own kernel, where a dies */
    kiln_value b = kiln_exp(g, kiln_sub(g, a, m));
    cr_assert_eq(kiln_set_output(g, kiln_reduce_sum(g, b, 1, ax, 0), "s"), KILN_OK);
    cr_assert_eq(kiln_set_output(g, kiln_reduce_max(g, b, 1, ax, 0), "t"), KILN_OK);
    kiln_program_stats st;
    char *err = NULL;
    cr_assert_eq(kiln_plan_stats(g, NULL, &st, &err), KILN_OK, "%s", err ? err : "");
    cr_expect_eq(st.intermediates_bytes, 2 * 4096 * 4, "a and b are the intermediates");
    cr_expect_eq(st.arena_bytes - st.interface_bytes, 4096 * 4, "b did not take a's bytes");
    float xs[4096];
    for (int i = 0; i < 4096; i++) xs[i] = (float)((i % 97) - 48) / 16.0f;
    float got[2][3];
    for (int be = 0; be < 2; be++) {
        kiln_compile_options o = kiln_compile_defaults();
        o.backend = be ? KILN_BACKEND_REF : KILN_BACKEND_C;
        kiln_program *p = NULL;
        cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
        cr_assert_eq(kiln_program_set(p, "x", xs, sizeof xs), KILN_OK);
        cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "%s", kiln_program_error(p));
        kiln_program_get(p, "m", &got[be][0], 4);
        kiln_program_get(p, "s", &got[be][1], 4);
        kiln_program_get(p, "t", &got[be][2], 4);
        kiln_program_free(p);
    }
    for (int k = 0; k < 3; k++)
        cr_expect_float_eq(got[0][k], got[1][k], 1e-5f * fabsf(got[1][k]) + 1e-6f, "output %d", k);
    kiln_graph_free(g);
}

/* A matmul with one output row or column and a tail: the tail reads the sum
 * at index 0 of the size-1 axis (the GEMM's epilogue must match it). */
Test(fuse, gemm_tail_with_a_size_1_axis)
{
    for (int which = 0; which < 2; which++) {
        kiln_graph *g = kiln_graph_new("row");
        int64_t xs[] = {which ? 7 : 1, 33}, ws[] = {which ? 1 : 9, 33}, bs[] = {which ? 1 : 9};
        kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
        kiln_value w = kiln_param(g, "w", KILN_F32, 2, ws, KILN_INIT_UNIFORM, 0.5);
        kiln_value b = kiln_param(g, "b", KILN_F32, 1, bs, KILN_INIT_UNIFORM, 0.5);
        kiln_value y = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, w, 0, 1), b));
        cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK);
        float xv[7 * 33], got[2][63];
        for (int i = 0; i < 7 * 33; i++) xv[i] = (float)((i * 37) % 19 - 9) / 8.0f;
        for (int be = 0; be < 2; be++) {
            kiln_compile_options o = kiln_compile_defaults();
            o.backend = be ? KILN_BACKEND_REF : KILN_BACKEND_C;
            kiln_program *p = NULL;
            char *err = NULL;
            cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err ? err : "");
            cr_assert_eq(kiln_program_init_params(p, 7), KILN_OK);
            cr_assert_eq(kiln_program_set(p, "x", xv, (size_t)(xs[0] * 33) * sizeof(float)), KILN_OK);
            cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "%s", kiln_program_error(p));
            cr_assert_eq(kiln_program_get(p, "y", got[be], (size_t)(which ? 7 : 9) * sizeof(float)),
                         KILN_OK);
            kiln_program_free(p);
        }
        for (int i = 0; i < (which ? 7 : 9); i++)
            cr_expect_float_eq(got[0][i], got[1][i], 1e-5f, "element %d", i);
        kiln_graph_free(g);
    }
}
