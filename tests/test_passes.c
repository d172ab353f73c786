/* tests/test_passes.c — autodiff, training-program assembly, CSE, DCE. */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "ir/graph.h"
#include "ir/ops.h"
#include "passes/passes.h"

#include <math.h>
#include <string.h>

/* loss = sum(x*x + x*w): fan-out of x accumulates; d/dx = 2x + w. */
Test(autodiff, fanout_accumulates)
{
    kiln_graph *g = kiln_graph_new("fanout");
    int64_t s[] = {3};
    kiln_value x = kiln_param(g, "x", KILN_F64, 1, s, KILN_INIT_ZEROS, 0);
    kiln_value w = kiln_input(g, "w", KILN_F64, 1, s);
    kiln_value loss = kiln_reduce_sum(g, kiln_add(g, kiln_mul(g, x, x), kiln_mul(g, x, w)), 0,
                                      NULL, 0);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    int32_t grad;
    cr_assert_eq(kiln_autodiff(g, loss, 1, &x, &grad), KILN_OK, "%s", kiln_graph_error(g));
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    double xv[] = {1, -2, 0.5}, wv[] = {3, 4, 5};
    kiln_interp_set(it, x, xv, 3);
    kiln_interp_set(it, w, wv, 3);
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    const double *gv = kiln_interp_value(it, grad);
    for (int i = 0; i < 3; i++) cr_expect_float_eq(gv[i], 2 * xv[i] + wv[i], 1e-12);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

/* A broadcast bias gets its gradient summed back over the batch. */
Test(autodiff, broadcast_sums_back)
{
    kiln_graph *g = kiln_graph_new("bias");
    int64_t xs[] = {4, 3}, bs[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, xs);
    kiln_value b = kiln_param(g, "b", KILN_F64, 1, bs, KILN_INIT_ZEROS, 0);
    kiln_value loss = kiln_reduce_sum(g, kiln_mul(g, kiln_add(g, x, b), x), 0, NULL, 0);
    kiln_set_loss(g, loss, "loss");
    int32_t grad;
    cr_assert_eq(kiln_autodiff(g, loss, 1, &b, &grad), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(g->nodes[grad].rank, 1);
    cr_assert_eq(g->nodes[grad].shape[0], 3);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    double xv[12];
    for (int i = 0; i < 12; i++) xv[i] = i;
    kiln_interp_set(it, x, xv, 12);
    kiln_interp_set(it, b, (double[]){0, 0, 0}, 3);
    cr_assert_eq(kiln_interp_run(it), KILN_OK);
    const double *gv = kiln_interp_value(it, grad);
    /* d/db_j = sum_i x_ij */
    cr_expect_float_eq(gv[0], 0 + 3 + 6 + 9, 1e-12);
    cr_expect_float_eq(gv[1], 1 + 4 + 7 + 10, 1e-12);
    cr_expect_float_eq(gv[2], 2 + 5 + 8 + 11, 1e-12);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

/* Integer values are never differentiated; an unused parameter gets zeros. */
Test(autodiff, integer_and_unused)
{
    kiln_graph *g = kiln_graph_new("int");
    int64_t s[] = {2, 3}, ls[] = {2};
    kiln_value x = kiln_param(g, "x", KILN_F32, 2, s, KILN_INIT_ZEROS, 0);
    kiln_value unused = kiln_param(g, "unused", KILN_F32, 1, ls, KILN_INIT_ZEROS, 0);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ls);
    kiln_value loss = kiln_cross_entropy(g, x, y);
    cr_assert_geq(loss, 0, "%s", kiln_graph_error(g));
    kiln_set_loss(g, loss, "loss");
    int32_t wrt[2] = {x, unused}, grads[2];
    cr_assert_eq(kiln_autodiff(g, loss, 2, wrt, grads), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(g->nodes[grads[1]].rank, 1);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    kiln_interp_set(it, x, (double[]){1, 2, 3, 4, 5, 6}, 6);
    kiln_interp_set(it, y, (double[]){0, 2}, 2);
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    const double *z = kiln_interp_value(it, grads[1]);
    cr_expect(z[0] == 0 && z[1] == 0);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

/* An op without a gradient rule on the path is named, with its location. */
Test(autodiff, missing_rule_is_named)
{
    kiln_graph *g = kiln_graph_new("nograd");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value p = kiln_param(g, "p", KILN_F32, 1, s, KILN_INIT_ZEROS, 0);
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "m.kiln"), 7, 9};
    kiln_value gg = kiln_op(g, "gelu_grad", 2, (kiln_value[]){x, p}, 0, NULL);
    g->cur_loc = (kiln_loc){0};
    kiln_value loss = kiln_reduce_sum(g, gg, 0, NULL, 0);
    kiln_set_loss(g, loss, "loss");
    kiln_graph *train = NULL;
    kiln_status st = kiln_train_program(g, NULL, &train);
    cr_assert_eq(st, KILN_ERR_UNSUPPORTED);
    cr_assert_null(train);
    cr_assert_str_eq(kiln_graph_error(g),
                     "autodiff: op 'gelu_grad' has no gradient rule (node %2 (gelu_grad), from "
                     "m.kiln:7:9); a parameter's gradient would flow through it");
    kiln_graph_free(g);
}

Test(train, adamw_program_shape)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    kiln_graph *t = NULL;
    cr_assert_eq(kiln_train_program(g, NULL, &t), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_graph_verify(t), KILN_OK, "%s", kiln_graph_error(t));
    /* 4 params x (param, exp_avg, exp_avg_sq) */
    cr_expect_eq(kiln_test_count_op(t, "assign"), 12);
    const char *names[] = {"lr", "mom", "beta2", "eps", "wd", "step", "fc1.weight.exp_avg",
                           "fc2.bias.exp_avg_sq"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        cr_expect_geq(kiln_graph_find(t, names[i]), 0, "missing %s", names[i]);
    cr_expect_eq(t->nodes[kiln_graph_find(t, "lr")].role, KILN_ROLE_HPARAM);
    cr_expect_eq(t->nodes[kiln_graph_find(t, "fc1.weight.exp_avg")].role, KILN_ROLE_STATE);
    /* the bias corrections are computed once, not once per parameter (CSE):
     * only step*log(beta1) and step*log(beta2) read "step" */
    int32_t step = kiln_graph_find(t, "step"), readers = 0;
    for (int32_t i = 0; i < t->nnodes; i++)
        for (int j = 0; j < t->nodes[i].ninputs; j++) readers += t->nodes[i].inputs[j] == step;
    cr_expect_eq(readers, 2);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

Test(train, sgd_program_shape)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    kiln_graph *t = NULL;
    kiln_train_options o = kiln_train_defaults();
    o.optimizer = KILN_OPT_SGD;
    cr_assert_eq(kiln_train_program(g, &o, &t), KILN_OK, "%s", kiln_graph_error(g));
    cr_expect_eq(kiln_test_count_op(t, "assign"), 8);
    cr_expect_geq(kiln_graph_find(t, "fc2.weight.momentum_buffer"), 0);
    cr_expect_lt(kiln_graph_find(t, "beta2"), 0);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

/* Training lowers the loss: 30 AdamW steps on a fixed batch. */
Test(train, adamw_lowers_loss)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    kiln_graph *t = NULL;
    cr_assert_eq(kiln_train_program(g, NULL, &t), KILN_OK, "%s", kiln_graph_error(g));
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(t, &it), KILN_OK);
    double x[20], w1[30], w2[18], b1[6] = {0}, b2[3] = {0}, y[4] = {0, 1, 2, 1};
    for (int i = 0; i < 20; i++) x[i] = sin(i * 1.3);
    for (int i = 0; i < 30; i++) w1[i] = 0.3 * cos(i * 0.7);
    for (int i = 0; i < 18; i++) w2[i] = 0.3 * sin(i * 0.9 + 1);
    kiln_interp_set_by_name(it, "x", x, 20);
    kiln_interp_set_by_name(it, "y", y, 4);
    kiln_interp_set_by_name(it, "fc1.weight", w1, 30);
    kiln_interp_set_by_name(it, "fc2.weight", w2, 18);
    kiln_interp_set_by_name(it, "fc1.bias", b1, 6);
    kiln_interp_set_by_name(it, "fc2.bias", b2, 3);
    double hp[][1] = {{5e-2}, {0.9}, {0.99}, {1e-5}, {1e-2}};
    const char *hn[] = {"lr", "mom", "beta2", "eps", "wd"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(kiln_interp_set_by_name(it, hn[i], hp[i], 1), KILN_OK, "%s",
                     kiln_interp_error(it));
    double first = 0, last = 0;
    for (int step = 1; step <= 30; step++) {
        double s = step;
        kiln_interp_set_by_name(it, "step", &s, 1);
        cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
        double l = kiln_interp_value_by_name(it, "loss")[0];
        if (step == 1) first = l;
        last = l;
    }
    cr_expect_lt(last, first * 0.5, "loss %g -> %g", first, last);
    kiln_interp_free(it);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

Test(train, no_loss_is_an_error)
{
    kiln_graph *g = kiln_graph_new("noloss");
    int64_t s[] = {2};
    kiln_value p = kiln_param(g, "p", KILN_F32, 1, s, KILN_INIT_ZEROS, 0);
    kiln_set_output(g, kiln_relu(g, p), "out");
    kiln_graph *t = (kiln_graph *)1;
    cr_assert_eq(kiln_train_program(g, NULL, &t), KILN_ERR_INVALID);
    cr_assert_null(t);
    cr_assert_str_eq(kiln_graph_error(g), "graph 'noloss' has no loss: mark one with "
                                          "kiln_set_loss (in a model file: loss = ...)");
    kiln_graph_free(g);
}

Test(cse, merges_duplicates)
{
    kiln_graph *g = kiln_graph_new("cse");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value a = kiln_exp(g, x), b = kiln_exp(g, x);
    kiln_value c1 = kiln_scalar(g, 2.0, KILN_F32), c2 = kiln_scalar(g, 2.0, KILN_F32);
    kiln_value out = kiln_add(g, kiln_mul(g, a, c1), kiln_mul(g, b, c2));
    kiln_set_output(g, out, "out");
    cr_assert_eq(kiln_graph_num_nodes(g), 8);
    cr_assert_eq(kiln_run_pass(g, "cse"), KILN_OK, "%s", kiln_graph_error(g));
    /* x, exp, const, mul, add */
    cr_expect_eq(kiln_graph_num_nodes(g), 5);
    cr_expect_eq(kiln_test_count_op(g, "exp"), 1);
    cr_expect_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    kiln_graph_free(g);
}

Test(dce, removes_dead_keeps_inputs)
{
    kiln_graph *g = kiln_graph_new("dce");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_input(g, "unused", KILN_F32, 1, s);
    kiln_exp(g, x); /* dead */
    kiln_set_output(g, kiln_relu(g, x), "out");
    cr_assert_eq(kiln_run_pass(g, "dce"), KILN_OK);
    cr_expect_eq(kiln_graph_num_nodes(g), 3);
    cr_expect_eq(kiln_test_count_op(g, "exp"), 0);
    cr_expect_geq(kiln_graph_find(g, "unused"), 0);
    cr_expect_eq(kiln_run_pass(g, "fold"), KILN_ERR_NOT_FOUND);
    cr_expect_str_eq(kiln_graph_error(g),
                     "unknown pass 'fold' (passes: infer, simplify, cse, dce, train_mode, "
                     "eval_mode, conv_lower)");
    kiln_graph_free(g);
}

/* A leaf given too many values is refused with both counts. */
Test(interp, set_checks_count)
{
    kiln_graph *g = kiln_graph_new("i");
    int64_t s[] = {2, 2};
    kiln_input(g, "x", KILN_F32, 2, s);
    kiln_interp *it;
    kiln_interp_new(g, &it);
    double v[5] = {0};
    cr_expect_eq(kiln_interp_set_by_name(it, "x", v, 5), KILN_ERR_SHAPE);
    cr_expect_str_eq(kiln_interp_error(it), "%0 (input 'x') holds 4 values, 5 given");
    cr_expect_eq(kiln_interp_set_by_name(it, "nope", v, 4), KILN_ERR_NOT_FOUND);
    kiln_interp_free(it);
    kiln_graph_free(g);
}
