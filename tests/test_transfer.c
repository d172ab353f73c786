/* tests/test_transfer.c — kiln_program_copy: the same model compiled for two
 * input sizes (a `dim`), weights and optimizer state carried from one to the
 * other by name, as progressive resizing does. */
#include <criterion/criterion.h>

#include "kiln/kiln.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Global average pooling keeps the parameters' shapes independent of S. */
static const char *pooled = "model p\n"
                            "dim S = 8\n"
                            "input x: f32[B, 2, S, S]\n"
                            "target y: i32[B]\n"
                            "h = reduce_mean(x, axes=[2, 3])\n"
                            "h = relu(linear(h, 6))\n"
                            "out = linear(h, 3)\n"
                            "loss = cross_entropy(out, y)\n";

/* The first layer's weights depend on S. */
static const char *flat = "model f\n"
                          "dim S = 8\n"
                          "input x: f32[B, 2, S, S]\n"
                          "target y: i32[B]\n"
                          "out = linear(flatten(x), 3)\n"
                          "loss = cross_entropy(out, y)\n";

static kiln_program *build(const char *text, int64_t s, kiln_backend be)
{
    kiln_dim d = {"S", s};
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse_dims(text, "t.kiln", 4, &d, 1, &g, &err), KILN_OK, "%s", err);
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = 1;
    kiln_program *p = NULL;
    cr_assert_eq(kiln_compile(g, &o, &p, &err), KILN_OK, "%s", err);
    kiln_graph_free(g);
    return p;
}

static void one_step(kiln_program *p, int64_t s)
{
    kiln_tensor_info xi;
    float *x = kiln_program_data(p, "x", &xi);
    cr_assert_not_null(x);
    for (int64_t i = 0; i < 4 * 2 * s * s; i++) x[i] = (float)sin((double)i * 0.37);
    int32_t *y = kiln_program_data(p, "y", NULL);
    for (int i = 0; i < 4; i++) y[i] = i % 3;
    kiln_program_set_hparam(p, "lr", 1e-2);
    kiln_program_set_hparam(p, "mom", 0.9);
    kiln_program_set_hparam(p, "beta2", 0.99);
    kiln_program_set_hparam(p, "eps", 1e-5);
    kiln_program_set_hparam(p, "wd", 0.01);
    kiln_program_set_hparam(p, "step", 1);
    cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
}

/* Every PARAM and STATE tensor of a equals b's. */
static void assert_same_tensors(kiln_program *a, kiln_program *b, int *n)
{
    *n = 0;
    for (int i = 0; i < kiln_program_num_tensors(a); i++) {
        kiln_tensor_info ai, bi;
        kiln_program_tensor(a, i, &ai);
        if (ai.role != KILN_ROLE_PARAM && ai.role != KILN_ROLE_STATE) continue;
        void *pa = kiln_program_data(a, ai.name, NULL), *pb = kiln_program_data(b, ai.name, &bi);
        cr_assert_not_null(pb, "'%s' missing", ai.name);
        cr_assert_eq(ai.bytes, bi.bytes);
        cr_assert_eq(memcmp(pa, pb, ai.bytes), 0, "'%s' differs", ai.name);
        (*n)++;
    }
}

Test(transfer, weights_and_state_carry_over_to_a_larger_size)
{
    kiln_program *small = build(pooled, 8, KILN_BACKEND_REF), *big = build(pooled, 16, KILN_BACKEND_REF);
    cr_assert_eq(kiln_program_init_params(small, 7), KILN_OK);
    one_step(small, 8);
    kiln_copy_report r;
    char *err = NULL;
    cr_assert_eq(kiln_program_copy(big, small, 1, &r, &err), KILN_OK, "%s", err);
    int n;
    assert_same_tensors(small, big, &n);
    cr_assert_eq(n, 12, "4 params + 8 AdamW state tensors, got %d", n);
    cr_assert_eq(r.copied, 12);
    cr_assert_eq(r.only_dst, 0);
    cr_assert_eq(r.only_src, 0);
    /* the larger program trains on from there */
    one_step(big, 16);
    kiln_program_free(small);
    kiln_program_free(big);
}

Test(transfer, without_state_copies_only_weights)
{
    kiln_program *a = build(pooled, 8, KILN_BACKEND_REF), *b = build(pooled, 12, KILN_BACKEND_REF);
    kiln_program_init_params(a, 1);
    one_step(a, 8);
    kiln_copy_report r;
    cr_assert_eq(kiln_program_copy(b, a, 0, &r, NULL), KILN_OK);
    cr_assert_eq(r.copied, 4);
    kiln_tensor_info ti;
    float *m = kiln_program_data(b, "linear0.weight.exp_avg", &ti);
    cr_assert_not_null(m);
    for (size_t i = 0; i < ti.bytes / sizeof *m; i++) cr_assert_eq(m[i], 0.0f);
    kiln_program_free(a);
    kiln_program_free(b);
}

Test(transfer, a_shape_that_depends_on_the_size_is_named)
{
    kiln_program *a = build(flat, 8, KILN_BACKEND_REF), *b = build(flat, 16, KILN_BACKEND_REF);
    kiln_program_init_params(a, 1);
    kiln_tensor_info ti;
    float *w = kiln_program_data(b, "linear0.weight", &ti);
    float before = w[0];
    char *err = NULL;
    cr_assert_eq(kiln_program_copy(b, a, 1, NULL, &err), KILN_ERR_SHAPE);
    cr_assert(strstr(err, "'linear0.weight' is f32[3,128] in the source program but f32[3,512] "
                          "in the destination"), "%s", err);
    free(err);
    cr_assert_eq(w[0], before, "nothing is copied when a check fails");
    kiln_program_free(a);
    kiln_program_free(b);
}
