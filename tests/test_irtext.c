/* tests/test_irtext.c — the IR's text form (ir/print.c, ir/parse.c) and the
 * verifier (ir/verify.c).
 *
 * Round trips: graphs built through the C API print, parse back into an equal
 * graph, and print again to the same bytes. Parse errors: exact messages with
 * the source line and caret. Verifier: hand-corrupted graphs fail with a
 * message naming the node. Tests that need op families not yet in the
 * registry skip themselves. */
#include <dirent.h>
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "ir/ops.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static void assert_graph_equal(const kiln_graph *a, const kiln_graph *b)
{
    cr_assert_str_eq(a->name, b->name);
    cr_assert_eq(a->nnodes, b->nnodes, "node counts %d and %d", a->nnodes, b->nnodes);
    for (int32_t i = 0; i < a->nnodes; i++) {
        const kiln_node *x = &a->nodes[i], *y = &b->nodes[i];
        cr_assert_eq(x->op, y->op, "%%%d: op", i);
        cr_assert_eq(x->dtype, y->dtype, "%%%d: dtype", i);
        cr_assert_eq(x->role, y->role, "%%%d: role", i);
        cr_assert_eq(x->group, y->group, "%%%d: parameter group", i);
        cr_assert_eq(x->rank, y->rank, "%%%d: rank", i);
        for (int d = 0; d < x->rank; d++) cr_assert_eq(x->shape[d], y->shape[d], "%%%d: dim %d", i, d);
        cr_assert_eq(x->ninputs, y->ninputs, "%%%d: input count", i);
        for (int j = 0; j < x->ninputs; j++)
            cr_assert_eq(x->inputs[j], y->inputs[j], "%%%d: input %d", i, j);
        cr_assert_eq(x->nattrs, y->nattrs, "%%%d: attribute count", i);
        for (int j = 0; j < x->nattrs; j++)
            cr_assert(kiln_attr_equal(&x->attrs[j], &y->attrs[j]), "%%%d: attribute %s", i,
                      x->attrs[j].name);
        cr_assert_eq(!x->name, !y->name, "%%%d: name presence", i);
        if (x->name) cr_assert_str_eq(x->name, y->name);
        cr_assert_eq(!x->loc.file, !y->loc.file, "%%%d: location file presence", i);
        if (x->loc.file) cr_assert_str_eq(x->loc.file, y->loc.file);
        cr_assert_eq(x->loc.line, y->loc.line, "%%%d: line", i);
        cr_assert_eq(x->loc.col, y->loc.col, "%%%d: column", i);
    }
}

/* print -> parse -> print: same bytes, equal graphs, both verify. */
static void roundtrip(kiln_graph *g)
{
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "original fails the verifier: %s",
                 kiln_graph_error(g));
    char *t1 = kiln_graph_to_string(g);
    cr_assert(t1);
    kiln_graph *g2 = NULL;
    char *err = NULL;
    kiln_status st = kiln_graph_parse(t1, "rt.ir", &g2, &err);
    cr_assert_eq(st, KILN_OK, "parse failed: %s\n--- text ---\n%s", err ? err : "(no message)", t1);
    cr_assert_null(err);
    char *t2 = kiln_graph_to_string(g2);
    cr_assert(t2);
    cr_assert_str_eq(t1, t2);
    assert_graph_equal(g, g2);
    cr_assert_eq(kiln_graph_verify(g2), KILN_OK, "%s", kiln_graph_error(g2));
    free(t1);
    free(t2);
    kiln_graph_free(g2);
}

/* Parses text that must fail; returns the message (caller frees). */
static char *parse_fail(const char *text, kiln_status want)
{
    kiln_graph *g = (kiln_graph *)1;
    char *err = NULL;
    kiln_status st = kiln_graph_parse(text, "t.ir", &g, &err);
    cr_assert_eq(st, want, "status %d (%s), expected %d; message: %s", st, kiln_status_str(st),
                 want, err ? err : "(none)");
    cr_assert_null(g);
    cr_assert(err);
    return err;
}

static void expect_parse_error(const char *text, kiln_status st, const char *msg)
{
    char *err = parse_fail(text, st);
    cr_assert_str_eq(err, msg);
    free(err);
}

static const int64_t S2[] = {2}, S3[] = {3}, S43[] = {4, 3};

static kiln_value assign(kiln_graph *g, kiln_value dst, kiln_value v)
{
    kiln_value in[2] = {dst, v};
    return kiln_build(g, KILN_OP_ASSIGN, 2, in, 0, NULL);
}

static bool have_ops(const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (kiln_op_lookup(names[i]) < 0) return false;
    return true;
}

/* ---- the printed form ---- */

Test(irtext, golden_format)
{
    kiln_graph *g = kiln_graph_new("golden");
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "m.kiln"), 2, 8};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, S43);
    g->cur_loc = (kiln_loc){NULL, 0, 0};
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, S3, KILN_INIT_UNIFORM, 0.5);
    kiln_value xw = kiln_mul(g, x, w);
    kiln_value one = kiln_scalar(g, 1.0, KILN_F32);
    kiln_value r = kiln_relu(g, kiln_add(g, xw, one));
    cr_assert_eq(kiln_set_output(g, r, "out"), KILN_OK);
    kiln_value p = kiln_pow(g, r, 0.1);
    kiln_value c = kiln_cast(g, kiln_gt(g, p, x), KILN_I32);
    cr_assert_geq(c, 0, "%s", kiln_graph_error(g));
    char *s = kiln_graph_to_string(g);
    cr_assert_str_eq(s, "graph golden {\n"
                        "  %0 = input() : f32[4,3] input \"x\" @\"m.kiln\":2:8\n"
                        "  %1 = input() {init=2, scale=0.5} : f32[3] param \"w\"\n"
                        "  %2 = mul(%0, %1) : f32[4,3]\n"
                        "  %3 = const() {value=1.0, dtype=f32} : f32[]\n"
                        "  %4 = add(%2, %3) : f32[4,3]\n"
                        "  %5 = relu(%4) : f32[4,3] output \"out\"\n"
                        "  %6 = pow(%5) {exponent=0.10000000000000001} : f32[4,3]\n"
                        "  %7 = gt(%6, %0) : bool[4,3]\n"
                        "  %8 = cast(%7) {to=i32} : i32[4,3]\n"
                        "}\n");
    free(s);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, print_to_file)
{
    kiln_graph *g = kiln_graph_new("f");
    kiln_input(g, "x", KILN_F64, 0, NULL);
    char buf[256] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    cr_assert(f);
    cr_assert_eq(kiln_graph_print(g, f), KILN_OK);
    fclose(f);
    cr_assert_str_eq(buf, "graph f {\n  %0 = input() : f64[] input \"x\"\n}\n");
    cr_assert_eq(kiln_graph_print(NULL, stdout), KILN_ERR_INVALID);
    cr_assert_null(kiln_graph_to_string(NULL));
    kiln_graph_free(g);
}

/* An input leaf's attributes print only when one differs from its default. */
Test(irtext, input_defaults_omitted)
{
    kiln_graph *g = kiln_graph_new("d");
    kiln_param(g, "z", KILN_F32, 1, S3, KILN_INIT_ZEROS, 0.0);
    kiln_param(g, "n", KILN_F32, 1, S3, KILN_INIT_ZEROS, -0.0);
    kiln_param(g, "o", KILN_F32, 1, S3, KILN_INIT_ONES, 0.0);
    kiln_scalar(g, 0.0, KILN_F32); /* other ops print every attribute */
    char *s = kiln_graph_to_string(g);
    cr_assert_str_eq(s, "graph d {\n"
                        "  %0 = input() : f32[3] param \"z\"\n"
                        "  %1 = input() {init=0, scale=-0.0} : f32[3] param \"n\"\n"
                        "  %2 = input() {init=1, scale=0.0} : f32[3] param \"o\"\n"
                        "  %3 = const() {value=0.0, dtype=f32} : f32[]\n"
                        "}\n");
    free(s);
    roundtrip(g);
    kiln_graph_free(g);
}

/* ---- round trips ---- */

Test(irtext, roundtrip_empty_graph)
{
    kiln_graph *g = kiln_graph_new("empty");
    char *s = kiln_graph_to_string(g);
    cr_assert_str_eq(s, "graph empty {\n}\n");
    free(s);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, roundtrip_elementwise)
{
    kiln_graph *g = kiln_graph_new("ew");
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, S43);
    kiln_value t = kiln_target(g, "t", KILN_F32, 1, S3);
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, S3, KILN_INIT_NORMAL, 0.035714285714285712);
    kiln_value h = kiln_relu(g, kiln_add(g, kiln_mul(g, x, w), t));
    kiln_value z = kiln_scalar(g, 0.0, KILN_F32);
    kiln_value s = kiln_where(g, kiln_gt(g, h, z), h, kiln_neg(g, h));
    s = kiln_pow(g, s, 2.5);
    s = kiln_leaky_relu(g, kiln_sub(g, s, kiln_div(g, s, w)), 0.2);
    s = kiln_maximum(g, kiln_sigmoid(g, s), kiln_tanh(g, kiln_exp(g, s)));
    s = kiln_minimum(g, kiln_gelu(g, s), kiln_sqrt(g, kiln_log(g, s)));
    kiln_value d = kiln_cast(g, s, KILN_F64);
    kiln_value b = kiln_cast(g, kiln_ne(g, x, w), KILN_U8);
    kiln_value i = kiln_cast(g, kiln_le(g, x, x), KILN_I64);
    cr_assert_geq(kiln_lt(g, x, w), 0);
    cr_assert_geq(kiln_eq(g, kiln_ge(g, x, w), kiln_gt(g, w, x)), 0);
    cr_assert_geq(i, 0, "%s", kiln_graph_error(g));
    cr_assert_geq(b, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, d, "d"), KILN_OK);
    kiln_value l = kiln_add(g, kiln_scalar(g, 1.0, KILN_F32), z);
    cr_assert_eq(kiln_set_loss(g, l, "loss"), KILN_OK);
    cr_assert_eq(kiln_set_metric(g, kiln_mul(g, l, l), "m"), KILN_OK);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, roundtrip_awkward_floats)
{
    const double vals[] = {0.1, 1e-300, -0.0, 0.0, INFINITY, -INFINITY, NAN, -NAN,
                           5e-324, DBL_MIN / 3, DBL_MAX, -DBL_MAX, DBL_MIN, 1.0 / 3, 1e22,
                           123456789012345678.0, 1.0, -1.0, 100.0, 1e16, 1e17, 2.5e-8,
                           0.035714285714285712, 9007199254740993.0};
    kiln_graph *g = kiln_graph_new("floats");
    kiln_value x = kiln_input(g, "x", KILN_F64, 1, S2);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        cr_assert_geq(kiln_scalar(g, vals[i], i % 2 ? KILN_F32 : KILN_F64), 0);
        cr_assert_geq(kiln_pow(g, x, vals[i]), 0);
        cr_assert_geq(kiln_param(g, (char[]){'p', (char)('a' + i), 0}, KILN_F32, 1, S2,
                                 KILN_INIT_UNIFORM, vals[i]),
                      0);
    }
    /* NaNs with a payload and a sign keep their bits. */
    uint64_t bits[] = {0x7ff0000000000001ull, 0xfff4000000000abcull, 0x7fffffffffffffffull};
    for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
        double v;
        memcpy(&v, &bits[i], sizeof v);
        cr_assert_geq(kiln_scalar(g, v, KILN_F64), 0);
    }
    char *s = kiln_graph_to_string(g);
    cr_assert(strstr(s, "{value=-0.0, dtype=f64}"), "%s", s);
    cr_assert(strstr(s, "{value=inf, dtype=f64}"), "%s", s);
    cr_assert(strstr(s, "{exponent=-inf}"), "%s", s);
    cr_assert(strstr(s, "{value=1e-300, dtype=f32}"), "%s", s);
    cr_assert(strstr(s, "{value=nan(0x1), dtype=f64}"), "%s", s);
    cr_assert(strstr(s, "{value=-nan(0x4000000000abc), dtype=f64}"), "%s", s);
    cr_assert(strstr(s, "{value=1e+22, dtype=f64}"), "%s", s);
    free(s);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, roundtrip_assign)
{
    kiln_graph *g = kiln_graph_new("step");
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, S3, KILN_INIT_ZEROS, 0);
    kiln_value m = kiln_build_leaf(g, KILN_ROLE_STATE, "w.momentum_buffer", KILN_F32, 1, S3, 0, NULL);
    kiln_value lr = kiln_build_leaf(g, KILN_ROLE_HPARAM, "lr", KILN_F32, 0, NULL, 0, NULL);
    kiln_value c = kiln_build_leaf(g, KILN_ROLE_CONST, "frozen", KILN_F32, 1, S3, 0, NULL);
    kiln_value grad = kiln_mul(g, w, c);
    kiln_value m2 = kiln_add(g, kiln_mul(g, m, kiln_scalar(g, 0.9, KILN_F32)), grad);
    kiln_value w2 = kiln_sub(g, w, kiln_mul(g, lr, m2));
    cr_assert_geq(assign(g, m, m2), 0, "%s", kiln_graph_error(g));
    cr_assert_geq(assign(g, w, w2), 0, "%s", kiln_graph_error(g));
    roundtrip(g);
    kiln_graph_free(g);
}

/* Parameter groups (freezing, discriminative rates) print after the role,
 * `param group 2`, and survive the round trip; group 0 prints nothing. */
Test(irtext, roundtrip_param_groups)
{
    kiln_graph *g = kiln_graph_new("groups");
    kiln_value a = kiln_param(g, "body.w", KILN_F32, 1, S3, KILN_INIT_ZEROS, 0);
    kiln_value b = kiln_param(g, "head.w", KILN_F32, 1, S3, KILN_INIT_ZEROS, 0);
    cr_assert_eq(kiln_set_param_group(g, b, 2), KILN_OK, "%s", kiln_graph_error(g));
    kiln_value y = kiln_add(g, a, b);
    cr_assert_geq(y, 0);
    char *t = kiln_graph_to_string(g);
    cr_assert(t);
    cr_assert(strstr(t, "param group 2 \"head.w\""), "%s", t);
    cr_assert(strstr(t, "param \"body.w\""), "%s", t);
    free(t);
    roundtrip(g);
    kiln_graph_free(g);
    char *err = parse_fail("graph g {\n  %0 = input() : f32[3] param group 64 \"w\"\n}\n",
                           KILN_ERR_PARSE);
    cr_assert(strstr(err, "parameter group"), "%s", err);
    free(err);
}

Test(irtext, roundtrip_names_and_escapes)
{
    kiln_graph *g = kiln_graph_new("a graph \"quoted\"");
    kiln_value x = kiln_input(g, "we\"ird\\name\n\t\r\x01\x7f", KILN_F32, 1, S2);
    kiln_value y = kiln_input(g, "caf\xc3\xa9 #not a comment", KILN_F32, 1, S2);
    kiln_value z = kiln_add(g, x, y);
    cr_assert_eq(kiln_node_set_name(g, z, "sum.of \"x\" and y"), KILN_OK);
    kiln_value c = kiln_scalar(g, 2.0, KILN_BOOL);
    cr_assert_eq(kiln_node_set_name(g, c, ""), KILN_OK); /* an empty name on a computed node */
    char *s = kiln_graph_to_string(g);
    cr_assert(strstr(s, "graph \"a graph \\\"quoted\\\"\" {\n"), "%s", s);
    cr_assert(strstr(s, "input \"we\\\"ird\\\\name\\n\\t\\r\\x01\\x7f\"\n"), "%s", s);
    cr_assert(strstr(s, ": f32[2] \"sum.of \\\"x\\\" and y\"\n"), "%s", s);
    free(s);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, roundtrip_locations)
{
    kiln_graph *g = kiln_graph_new("locs");
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "dir/a \"b\".kiln"), 3, 7};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, S2);
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "other.kiln"), 10, 1};
    kiln_value y = kiln_relu(g, x);
    g->cur_loc = (kiln_loc){NULL, 5, 9}; /* a line without a file */
    y = kiln_neg(g, y);
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "dir/a \"b\".kiln"), 4, 2};
    y = kiln_exp(g, y);
    cr_assert_geq(y, 0);
    char *s = kiln_graph_to_string(g);
    cr_assert(strstr(s, "input \"x\" @\"dir/a \\\"b\\\".kiln\":3:7\n"), "%s", s);
    cr_assert(strstr(s, "neg(%1) : f32[2] @5:9\n"), "%s", s);
    free(s);
    roundtrip(g);
    kiln_graph_free(g);
}

/* Every op of the registry that builds on plain f32[2,3] operands with its
 * default attributes: a new row is covered without a new test. */
Test(irtext, roundtrip_every_simple_op)
{
    kiln_graph *g = kiln_graph_new("ops");
    const int64_t s23[] = {2, 3};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, s23);
    kiln_value xs[4] = {x, x, x, x};
    int built = 0;
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        if (kiln_ops[op].fusion == KILN_FUSE_LEAF || op == KILN_OP_ASSIGN) continue;
        int n = kiln_ops[op].arity < 0 ? 2 : kiln_ops[op].arity;
        if (n > 4) continue;
        if (kiln_build(g, op, n, xs, 0, NULL) >= 0) built++;
    }
    kiln_value c = kiln_gt(g, x, x);
    kiln_value in3[3] = {c, x, x};
    cr_assert_geq(kiln_build(g, KILN_OP_WHERE, 3, in3, 0, NULL), 0);
    cr_assert_geq(built, 20, "only %d ops built", built);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, roundtrip_mlp)
{
    const char *ops[] = {"matmul", "cross_entropy"};
    if (!have_ops(ops, 2)) cr_skip_test("matmul or cross_entropy not in the registry yet");
    kiln_graph *g = kiln_graph_new("mlp");
    int64_t xs[] = {8, 784}, ys[] = {8};
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "mlp.kiln"), 1, 1};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    g->cur_loc.line = 2;
    kiln_value h = kiln_relu(g, kiln_linear(g, x, 32, 1, "fc1"));
    g->cur_loc.line = 3;
    kiln_value out = kiln_linear(g, h, 10, 1, "fc2");
    g->cur_loc.line = 4;
    kiln_value loss = kiln_cross_entropy(g, out, y);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, out, "logits"), KILN_OK, "%s", kiln_graph_error(g));
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, roundtrip_reduce)
{
    const char *ops[] = {"reduce_sum", "reduce_mean", "reduce_max", "argmax", "softmax",
                         "log_softmax"};
    if (!have_ops(ops, 6)) cr_skip_test("the reduce family is not in the registry yet");
    kiln_graph *g = kiln_graph_new("red");
    int64_t s[] = {4, 5, 6};
    kiln_value x = kiln_input(g, "x", KILN_F32, 3, s);
    int64_t ax1[] = {-1}, ax2[] = {0, 2};
    kiln_value a = kiln_reduce_sum(g, x, 1, ax1, 0);
    kiln_value b = kiln_reduce_max(g, x, 2, ax2, 1);
    kiln_value c = kiln_reduce_mean(g, x, 0, NULL, 0);
    kiln_value d = kiln_argmax(g, x, -2);
    kiln_value e = kiln_log_softmax(g, kiln_softmax(g, x, 1), -1);
    cr_assert(a >= 0 && b >= 0 && c >= 0 && d >= 0 && e >= 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_loss(g, c, "loss"), KILN_OK);
    roundtrip(g);
    kiln_graph_free(g);
}

Test(irtext, parse_hand_written_text)
{
    /* Comments, free layout, omitted default attributes, an int for a float. */
    const char *text = "# a hand-written graph\n"
                       "graph hand{%0=input():f32[2]input\"x\"\n"
                       "  %1 = pow(%0) {exponent=2} : f32[2]   # int literal for a float\n"
                       "  %2 = const() {value=-3e2} : f32[] %3 = add(\n"
                       "     %1, %2) {} : f32[2] output \"y\" @7:1\n"
                       "}  # trailing comment";
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_graph_parse(text, "hand.ir", &g, &err), KILN_OK, "%s", err);
    cr_assert_eq(g->nnodes, 4);
    cr_assert_eq(kiln_attr_get_float(&g->nodes[1], "exponent"), 2.0);
    cr_assert_eq(kiln_attr_get_float(&g->nodes[2], "value"), -300.0);
    cr_assert_eq(kiln_attr_get_int(&g->nodes[2], "dtype"), KILN_F32);
    cr_assert_eq(g->nodes[3].role, KILN_ROLE_OUTPUT);
    cr_assert_eq(g->nodes[3].loc.line, 7);
    char *s = kiln_graph_to_string(g);
    cr_assert_str_eq(s, "graph hand {\n"
                        "  %0 = input() : f32[2] input \"x\"\n"
                        "  %1 = pow(%0) {exponent=2.0} : f32[2]\n"
                        "  %2 = const() {value=-300.0, dtype=f32} : f32[]\n"
                        "  %3 = add(%1, %2) : f32[2] output \"y\" @7:1\n"
                        "}\n");
    free(s);
    kiln_graph_free(g);
}

/* ---- parse errors ---- */

#define HEAD "graph g {\n  %0 = input() : f32[2] input \"x\"\n"

Test(irtext_errors, unknown_op)
{
    expect_parse_error(HEAD "  %1 = frobnicate(%0) : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:8: error: unknown op 'frobnicate'\n"
                       "  %1 = frobnicate(%0) : f32[2]\n"
                       "       ^");
}

Test(irtext_errors, use_of_later_value)
{
    expect_parse_error(HEAD "  %1 = relu(%2) : f32[2]\n  %2 = relu(%0) : f32[2]\n}\n",
                       KILN_ERR_PARSE,
                       "t.ir:3:13: error: use of %2 before its definition (a node uses only "
                       "earlier nodes)\n"
                       "  %1 = relu(%2) : f32[2]\n"
                       "            ^");
    expect_parse_error(HEAD "  %1 = relu(%1) : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:13: error: use of %1 before its definition (a node uses only "
                       "earlier nodes)\n"
                       "  %1 = relu(%1) : f32[2]\n"
                       "            ^");
}

Test(irtext_errors, ids_out_of_order)
{
    expect_parse_error(HEAD "  %2 = relu(%0) : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:3: error: node ids must count up from %0: expected %1 here, got "
                       "%2\n"
                       "  %2 = relu(%0) : f32[2]\n"
                       "  ^");
}

Test(irtext_errors, malformed_attributes)
{
    expect_parse_error(HEAD "  %1 = pow(%0) {exponent=1.2.3} : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:26: error: malformed attribute 'exponent': malformed number "
                       "'1.2.3'\n"
                       "  %1 = pow(%0) {exponent=1.2.3} : f32[2]\n"
                       "                         ^");
    expect_parse_error(HEAD "  %1 = pow(%0) {exponent} : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:25: error: expected '=' after the attribute name, got '}'\n"
                       "  %1 = pow(%0) {exponent} : f32[2]\n"
                       "                        ^");
    expect_parse_error(HEAD "  %1 = pow(%0) {exponent=fast} : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:26: error: malformed attribute 'exponent': 'fast' is not a "
                       "number, list or dtype\n"
                       "  %1 = pow(%0) {exponent=fast} : f32[2]\n"
                       "                         ^");
    expect_parse_error(HEAD "  %1 = relu(%0) {s=[1,2,3,4,5,6,7,8,9]} : f32[2]\n}\n",
                       KILN_ERR_PARSE,
                       "t.ir:3:37: error: malformed attribute 's': more than 8 values\n"
                       "  %1 = relu(%0) {s=[1,2,3,4,5,6,7,8,9]} : f32[2]\n"
                       "                                    ^");
    expect_parse_error(HEAD "  %1 = pow(%0) {exponent=1e999} : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:26: error: malformed attribute 'exponent': 1e999 is out of range "
                       "(write inf)\n"
                       "  %1 = pow(%0) {exponent=1e999} : f32[2]\n"
                       "                         ^");
    expect_parse_error(HEAD "  %1 = relu(%0) {a=99999999999999999999} : f32[2]\n}\n",
                       KILN_ERR_PARSE,
                       "t.ir:3:20: error: malformed attribute 'a': 99999999999999999999 is out "
                       "of range\n"
                       "  %1 = relu(%0) {a=99999999999999999999} : f32[2]\n"
                       "                   ^");
    char want[256];
    snprintf(want, sizeof want,
             "t.ir:3:18: error: malformed attribute: the name "
             "'averyveryveryveryverylongname' is longer than %d characters\n"
             "  %%1 = relu(%%0) {averyveryveryveryverylongname=1} : f32[2]\n"
             "                 ^", KILN_ATTR_NAME_MAX - 1);
    expect_parse_error(HEAD "  %1 = relu(%0) {averyveryveryveryverylongname=1} : f32[2]\n}\n",
                       KILN_ERR_PARSE, want);
}

Test(irtext_errors, schema_errors_from_the_builder)
{
    expect_parse_error(HEAD "  %1 = relu(%0) {alpha=1} : f32[2]\n}\n", KILN_ERR_NOT_FOUND,
                       "t.ir:3:8: error: relu: unknown attribute 'alpha' (it takes none)\n"
                       "  %1 = relu(%0) {alpha=1} : f32[2]\n"
                       "       ^");
    expect_parse_error(HEAD "  %1 = pow(%0) : f32[2]\n}\n", KILN_ERR_INVALID,
                       "t.ir:3:8: error: pow: missing attribute 'exponent' (a float)\n"
                       "  %1 = pow(%0) : f32[2]\n"
                       "       ^");
    expect_parse_error(HEAD "  %1 = cast(%0) {to=2} : f32[2]\n}\n", KILN_ERR_INVALID,
                       "t.ir:3:8: error: cast: attribute 'to' must be a dtype, not a int\n"
                       "  %1 = cast(%0) {to=2} : f32[2]\n"
                       "       ^");
    expect_parse_error(HEAD "  %1 = add(%0) : f32[2]\n}\n", KILN_ERR_INVALID,
                       "t.ir:3:8: error: add takes 2 inputs, got 1\n"
                       "  %1 = add(%0) : f32[2]\n"
                       "       ^");
}

Test(irtext_errors, bad_type)
{
    expect_parse_error(HEAD "  %1 = relu(%0) : f33[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:19: error: bad type: unknown dtype 'f33'\n"
                       "  %1 = relu(%0) : f33[2]\n"
                       "                  ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[-2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:23: error: bad type: a dimension cannot be negative\n"
                       "  %1 = relu(%0) : f32[-2]\n"
                       "                      ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[1,1,1,1,1,1,1,1,1]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:39: error: bad type: more than 8 dimensions\n"
                       "  %1 = relu(%0) : f32[1,1,1,1,1,1,1,1,1]\n"
                       "                                      ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32\n}\n", KILN_ERR_PARSE,
                       "t.ir:4:1: error: expected '[' after the dtype (a scalar is f32[]), got "
                       "'}'\n"
                       "}\n"
                       "^");
    expect_parse_error(HEAD "  %1 = relu(%0) : 2\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:19: error: bad type: expected a type like f32[2,3], got '2'\n"
                       "  %1 = relu(%0) : 2\n"
                       "                  ^");
}

Test(irtext_errors, type_mismatch)
{
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[3]\n}\n", KILN_ERR_SHAPE,
                       "t.ir:3:19: error: type mismatch: the text says f32[3], relu infers "
                       "f32[2]\n"
                       "  %1 = relu(%0) : f32[3]\n"
                       "                  ^");
    expect_parse_error(HEAD "  %1 = gt(%0, %0) : f32[2]\n}\n", KILN_ERR_SHAPE,
                       "t.ir:3:21: error: type mismatch: the text says f32[2], gt infers "
                       "bool[2]\n"
                       "  %1 = gt(%0, %0) : f32[2]\n"
                       "                    ^");
}

Test(irtext_errors, shape_rule_errors)
{
    expect_parse_error(HEAD "  %1 = input() : f32[3] input \"y\"\n"
                            "  %2 = add(%0, %1) : f32[3]\n}\n",
                       KILN_ERR_SHAPE,
                       "t.ir:4:8: error: add: shapes f32[2] and f32[3] do not broadcast\n"
                       "  %2 = add(%0, %1) : f32[3]\n"
                       "       ^");
    expect_parse_error(HEAD "  %1 = input() : i32[2] input \"y\"\n"
                            "  %2 = exp(%1) : i32[2]\n}\n",
                       KILN_ERR_SHAPE,
                       "t.ir:4:8: error: exp needs a floating-point input, got i32[2] (cast it "
                       "first)\n"
                       "  %2 = exp(%1) : i32[2]\n"
                       "       ^");
}

Test(irtext_errors, unexpected_token_and_eof)
{
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2]\n", KILN_ERR_PARSE,
                       "t.ir:4:1: error: expected the next node or '}' after the node, got end "
                       "of input\n"
                       "\n"
                       "^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2] \"a\" \"b\"\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:30: error: expected the next node or '}' after the node, got "
                       "'\"b\"'\n"
                       "  %1 = relu(%0) : f32[2] \"a\" \"b\"\n"
                       "                             ^");
    expect_parse_error(HEAD "  %1 = relu(%0 %0) : f32[2]\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:16: error: expected ',' between inputs, got '%0'\n"
                       "  %1 = relu(%0 %0) : f32[2]\n"
                       "               ^");
    expect_parse_error(HEAD "}\n}\n", KILN_ERR_PARSE,
                       "t.ir:4:1: error: unexpected '}' after the end of the graph\n"
                       "}\n"
                       "^");
    expect_parse_error("", KILN_ERR_PARSE,
                       "t.ir:1:1: error: expected 'graph' at the start of the IR text, got end "
                       "of input\n"
                       "\n"
                       "^");
    expect_parse_error("graph g {\n\t%0 = input() $ f32[2]\n}", KILN_ERR_PARSE,
                       "t.ir:2:15: error: unexpected character '$'\n"
                       "\t%0 = input() $ f32[2]\n"
                       "\t             ^");
    expect_parse_error("graph g {\n  %0 = input() : f32[2] input \"x\n}", KILN_ERR_PARSE,
                       "t.ir:2:31: error: unterminated string\n"
                       "  %0 = input() : f32[2] input \"x\n"
                       "                              ^");
    expect_parse_error("graph g {\n  %0 = input() : f32[2] input \"a\\qb\"\n}", KILN_ERR_PARSE,
                       "t.ir:2:33: error: bad escape in string (use \\\" \\\\ \\n \\t \\r or "
                       "\\xHH)\n"
                       "  %0 = input() : f32[2] input \"a\\qb\"\n"
                       "                                ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2] weights\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:26: error: unknown role 'weights'\n"
                       "  %1 = relu(%0) : f32[2] weights\n"
                       "                         ^");
}

Test(irtext_errors, leaves_roles_and_names)
{
    expect_parse_error("graph g {\n  %0 = input() : f32[2] input\n}\n", KILN_ERR_PARSE,
                       "t.ir:2:8: error: an input leaf needs a name (\"...\" after its type and "
                       "role)\n"
                       "  %0 = input() : f32[2] input\n"
                       "       ^");
    expect_parse_error("graph g {\n  %0 = input() : f32[2] \"x\"\n}\n", KILN_ERR_INVALID,
                       "t.ir:2:8: error: input 'x' needs a leaf role (input, target, param, "
                       "const, state or hparam), not 'none'\n"
                       "  %0 = input() : f32[2] \"x\"\n"
                       "       ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2] param \"w\"\n}\n", KILN_ERR_PARSE,
                       "t.ir:3:26: error: role 'param' belongs to input leaves; a computed node "
                       "is output, loss or metric\n"
                       "  %1 = relu(%0) : f32[2] param \"w\"\n"
                       "                         ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2] output \"x\"\n}\n", KILN_ERR_INVALID,
                       "t.ir:3:33: error: the name 'x' is already taken by %0\n"
                       "  %1 = relu(%0) : f32[2] output \"x\"\n"
                       "                                ^");
}

Test(irtext_errors, verifier_rules_on_text)
{
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2]\n"
                            "  %2 = const() {value=1.0} : f32[] loss \"a\"\n}\n",
                       KILN_ERR_INVALID,
                       "t.ir:4:3: error: %2 (const 'a'): a const carries no role, not 'loss'\n"
                       "  %2 = const() {value=1.0} : f32[] loss \"a\"\n"
                       "  ^");
    expect_parse_error(HEAD "  %1 = relu(%0) : f32[2] loss \"l\"\n}\n", KILN_ERR_SHAPE,
                       "t.ir:3:3: error: %1 (relu 'l'): the loss must be a floating-point "
                       "scalar, not f32[2]\n"
                       "  %1 = relu(%0) : f32[2] loss \"l\"\n"
                       "  ^");
    expect_parse_error("graph g {\n"
                       "  %0 = input() : f32[2] param \"w\" @\"m.kiln\":1:2\n"
                       "  %1 = relu(%0) : f32[2]\n"
                       "  %2 = assign(%0, %1) : f32[2]\n"
                       "  %3 = neg(%0) : f32[2] @\"m.kiln\":9:4\n"
                       "}\n",
                       KILN_ERR_INVALID,
                       "t.ir:5:3: error: %3 (neg): input 0 reads %0 (input 'w') after %2 assigns "
                       "it (from m.kiln:9:4)\n"
                       "  %3 = neg(%0) : f32[2] @\"m.kiln\":9:4\n"
                       "  ^");
}

Test(irtext_errors, api_misuse)
{
    char *err = NULL;
    kiln_graph *g = NULL;
    cr_assert_eq(kiln_graph_parse(NULL, "x.ir", &g, &err), KILN_ERR_INVALID);
    cr_assert_str_eq(err, "x.ir:1:1: error: no IR text given");
    free(err);
    cr_assert_eq(kiln_graph_parse("graph g {}", NULL, NULL, NULL), KILN_ERR_INVALID);
    cr_assert_eq(kiln_graph_parse("graph g {", NULL, &g, NULL), KILN_ERR_PARSE);
    cr_assert_null(g);
    cr_assert_eq(kiln_graph_parse("graph g {", NULL, &g, &err), KILN_ERR_PARSE);
    cr_assert_str_eq(err, "<input>:1:10: error: expected a node (%N = ...) or '}', got end of "
                          "input\ngraph g {\n         ^");
    free(err);
}

/* Every prefix of a valid text, and every one-byte change of it, parses or
 * fails cleanly (the suite runs under ASan and UBSan). */
Test(irtext_errors, truncations_and_mutations_never_crash)
{
    kiln_graph *g = kiln_graph_new("fz");
    g->cur_loc = (kiln_loc){kiln_graph_intern_file(g, "f\"z.kiln"), 1, 2};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, S43);
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, S3, KILN_INIT_UNIFORM, 0.1);
    kiln_value h = kiln_pow(g, kiln_mul(g, x, w), -1e-300);
    kiln_value c = kiln_cast(g, kiln_gt(g, h, kiln_scalar(g, NAN, KILN_F32)), KILN_I64);
    cr_assert_eq(kiln_set_output(g, c, "out\n"), KILN_OK);
    cr_assert_geq(assign(g, w, kiln_neg(g, w)), 0);
    char *text = kiln_graph_to_string(g);
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    const char subst[] = {'\0', '"', '%', '0', '9', '-', '[', ']', '{', '}', '(', ')', ',',
                          '@', ':', '\\', '\n', 'e', '.', ' ', 'x', '#', (char)0xff};
    int ok = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        memcpy(buf, text, cut);
        buf[cut] = 0;
        kiln_graph *out = NULL;
        char *err = NULL;
        if (kiln_graph_parse(buf, "fz.ir", &out, &err) == KILN_OK) {
            ok++;
            cr_assert_null(err);
        } else {
            cr_assert_null(out);
            cr_assert(err && strstr(err, ": error: "), "%s", err ? err : "(null)");
        }
        kiln_graph_free(out);
        free(err);
    }
    cr_assert_geq(ok, 1); /* at least the whole text */
    for (size_t at = 0; at < len; at++) {
        for (size_t k = 0; k < sizeof subst; k++) {
            memcpy(buf, text, len + 1);
            buf[at] = subst[k];
            kiln_graph *out = NULL;
            char *err = NULL;
            kiln_status st = kiln_graph_parse(buf, "fz.ir", &out, &err);
            if (st == KILN_OK) {
                cr_assert_eq(kiln_graph_verify(out), KILN_OK);
                char *again = kiln_graph_to_string(out);
                kiln_graph *out2 = NULL;
                cr_assert_eq(kiln_graph_parse(again, "fz.ir", &out2, NULL), KILN_OK);
                char *again2 = kiln_graph_to_string(out2);
                cr_assert_str_eq(again, again2);
                free(again);
                free(again2);
                kiln_graph_free(out2);
            }
            kiln_graph_free(out);
            free(err);
        }
    }
    free(buf);
    free(text);
    kiln_graph_free(g);
}

/* ---- the verifier ---- */

/* x:f32[4,3] input, w:f32[3] param, m:f32[3] state, %3 = mul(x, w),
 * %4 = relu(%3) output "h", %5 = const 0.5, %6 = mul(m, %5),
 * %7 = assign(m, %6). */
static kiln_graph *sample(void)
{
    kiln_graph *g = kiln_graph_new("v");
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, S43);
    kiln_value w = kiln_param(g, "w", KILN_F32, 1, S3, KILN_INIT_UNIFORM, 0.1);
    kiln_value m = kiln_build_leaf(g, KILN_ROLE_STATE, "m", KILN_F32, 1, S3, 0, NULL);
    kiln_value h = kiln_relu(g, kiln_mul(g, x, w));
    cr_assert_eq(kiln_set_output(g, h, "h"), KILN_OK);
    kiln_value a = assign(g, m, kiln_mul(g, m, kiln_scalar(g, 0.5, KILN_F32)));
    cr_assert_eq(a, 7, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

static void expect_verify(kiln_graph *g, kiln_status st, const char *msg)
{
    cr_assert_eq(kiln_graph_verify(g), st, "message: %s", kiln_graph_error(g));
    cr_assert_str_eq(kiln_graph_error(g), msg);
    kiln_graph_free(g);
}

static void set_name(kiln_graph *g, int32_t id, const char *name)
{
    free(g->nodes[id].name);
    g->nodes[id].name = name ? strdup(name) : NULL;
}

Test(verify, accepts_built_graphs)
{
    kiln_graph *g = sample();
    cr_assert_eq(kiln_graph_verify(g), KILN_OK);
    kiln_graph *c = kiln_graph_clone(g);
    cr_assert_eq(kiln_graph_verify(c), KILN_OK, "%s", kiln_graph_error(c));
    kiln_graph_free(c);
    kiln_graph_free(g);
    kiln_graph *e = kiln_graph_new("e");
    cr_assert_eq(kiln_graph_verify(e), KILN_OK);
    kiln_graph_free(e);
    cr_assert_eq(kiln_graph_verify(NULL), KILN_ERR_INVALID);
}

Test(verify, input_pointing_forward)
{
    kiln_graph *g = sample();
    g->nodes[3].inputs[1] = 5;
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul): input 1 is %5, which is not an earlier node");
    g = sample();
    g->nodes[4].inputs[0] = 4;
    expect_verify(g, KILN_ERR_INVALID, "%4 (relu 'h'): input 0 is %4, which is not an earlier node");
    g = sample();
    g->nodes[4].inputs[0] = -1;
    expect_verify(g, KILN_ERR_INVALID, "%4 (relu 'h'): input 0 is %-1, which is not an earlier node");
}

Test(verify, wrong_shape_and_dtype)
{
    kiln_graph *g = sample();
    g->nodes[3].shape[0] = 5;
    expect_verify(g, KILN_ERR_SHAPE, "%3 (mul): its type is f32[5,3] but its shape rule gives f32[4,3]");
    g = sample();
    g->nodes[4].dtype = KILN_F64;
    expect_verify(g, KILN_ERR_SHAPE, "%4 (relu 'h'): its type is f64[4,3] but its shape rule gives f32[4,3]");
    g = sample();
    g->nodes[5].rank = 1;
    g->nodes[5].shape[0] = 1;
    expect_verify(g, KILN_ERR_SHAPE, "%5 (const): its type is f32[1] but its shape rule gives f32[]");
    g = sample();
    g->nodes[1].shape[0] = 4; /* w: the mul that reads it no longer fits */
    expect_verify(g, KILN_ERR_SHAPE, "%3 (mul): its shape rule fails: mul: shapes f32[4,3] and "
                  "f32[4] do not broadcast");
}

Test(verify, rank_dims_dtype_role_ranges)
{
    kiln_graph *g = sample();
    g->nodes[0].rank = KILN_MAX_RANK + 1;
    expect_verify(g, KILN_ERR_INVALID, "%0 (input 'x'): rank 9 is outside 0..8");
    g = sample();
    g->nodes[0].shape[1] = -3;
    expect_verify(g, KILN_ERR_INVALID, "%0 (input 'x'): dimension 1 is negative (-3)");
    g = sample();
    g->nodes[3].dtype = KILN_DTYPE_COUNT;
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul): dtype 8 is not a dtype");
    g = sample();
    g->nodes[3].role = KILN_ROLE_COUNT;
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul): role 10 is not a role");
    g = sample();
    g->nodes[3].op = KILN_OP_COUNT + 7;
    char want[128];
    snprintf(want, sizeof want, "%%3 (op #%d): op id %d is not in the registry (%d ops)",
             KILN_OP_COUNT + 7, KILN_OP_COUNT + 7, KILN_OP_COUNT);
    expect_verify(g, KILN_ERR_INVALID, want);
}

Test(verify, arity_and_attributes)
{
    kiln_graph *g = sample();
    g->nodes[3].ninputs = 1;
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul): mul takes 2 inputs, the node has 1");
    g = sample();
    g->nodes[5].nattrs = 1;
    expect_verify(g, KILN_ERR_INVALID, "%5 (const): has 1 attribute, const takes 2");
    g = sample();
    snprintf(g->nodes[5].attrs[1].name, KILN_ATTR_NAME_MAX, "type");
    expect_verify(g, KILN_ERR_INVALID, "%5 (const): attribute 1 is 'type', const expects 'dtype' there");
    g = sample();
    g->nodes[5].attrs[0].kind = KILN_ATTR_INT;
    expect_verify(g, KILN_ERR_INVALID, "%5 (const): attribute 'value' is a int, const expects a float");
    g = sample();
    g->nodes[5].attrs[1].i[0] = 99;
    expect_verify(g, KILN_ERR_INVALID, "%5 (const): attribute 'dtype' is 99, not a dtype");
    g = sample();
    g->nodes[4].nattrs = 1;
    g->nodes[4].attrs[0] = kiln_attr_float("slope", 0.5);
    expect_verify(g, KILN_ERR_INVALID, "%4 (relu 'h'): has 1 attribute, relu takes 0");
}

Test(verify, leaves_and_roles)
{
    kiln_graph *g = sample();
    g->nodes[4].role = KILN_ROLE_PARAM;
    expect_verify(g, KILN_ERR_INVALID, "%4 (relu 'h'): role 'param' belongs to input leaves; a "
                  "computed node is none, output, loss or metric");
    g = sample();
    g->nodes[0].role = KILN_ROLE_OUTPUT;
    expect_verify(g, KILN_ERR_INVALID, "%0 (input 'x'): an input leaf needs a leaf role (input, "
                  "target, param, const, state or hparam), not 'output'");
    g = sample();
    set_name(g, 0, NULL);
    expect_verify(g, KILN_ERR_INVALID, "%0 (input): an input leaf needs a name");
    g = sample();
    g->nodes[5].role = KILN_ROLE_CONST;
    expect_verify(g, KILN_ERR_INVALID, "%5 (const): a const carries no role, not 'const'");
}

Test(verify, names_unique)
{
    kiln_graph *g = sample();
    set_name(g, 3, "x");
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul 'x'): the name 'x' is also used by %0");
    g = sample();
    set_name(g, 6, "h");
    expect_verify(g, KILN_ERR_INVALID, "%6 (mul 'h'): the name 'h' is also used by %4");
}

Test(verify, loss_rules)
{
    kiln_graph *g = sample();
    g->nodes[4].role = KILN_ROLE_LOSS;
    expect_verify(g, KILN_ERR_SHAPE, "%4 (relu 'h'): the loss must be a floating-point scalar, "
                  "not f32[4,3]");
    g = kiln_graph_new("l");
    kiln_value a = kiln_add(g, kiln_scalar(g, 1.0, KILN_F32), kiln_scalar(g, 2.0, KILN_F32));
    kiln_value b = kiln_neg(g, a);
    cr_assert_eq(kiln_set_loss(g, a, "l1"), KILN_OK);
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    g->nodes[b].role = KILN_ROLE_LOSS;
    expect_verify(g, KILN_ERR_INVALID, "%3 (neg): a second loss (the loss is %2)");
    g = kiln_graph_new("l");
    a = kiln_add(g, kiln_scalar(g, 1.0, KILN_I32), kiln_scalar(g, 2.0, KILN_I32));
    g->nodes[a].role = KILN_ROLE_LOSS;
    expect_verify(g, KILN_ERR_SHAPE, "%2 (add): the loss must be a floating-point scalar, not i32[]");
}

Test(verify, assign_rules)
{
    /* A read after the assign: the builder lets it through, the verifier does not. */
    kiln_graph *g = sample();
    cr_assert_geq(kiln_relu(g, 2), 0);
    expect_verify(g, KILN_ERR_INVALID, "%8 (relu): input 0 reads %2 (input 'm') after %7 assigns it");
    g = sample();
    kiln_value in[2] = {4, 2};
    cr_assert_geq(kiln_build(g, KILN_OP_MUL, 2, in, 0, NULL), 0);
    expect_verify(g, KILN_ERR_INVALID, "%8 (mul): input 1 reads %2 (input 'm') after %7 assigns it");
    /* Twice. */
    g = sample();
    cr_assert_geq(assign(g, 2, 6), 0);
    expect_verify(g, KILN_ERR_INVALID, "%8 (assign): assigns 'm' again (%7 assigns it first)");
    /* Not a param or state leaf. */
    g = sample();
    g->nodes[2].role = KILN_ROLE_INPUT;
    expect_verify(g, KILN_ERR_INVALID, "%7 (assign): assigns %2 (input 'm'), which is not a param "
                  "or state leaf");
    g = sample();
    g->nodes[7].inputs[0] = 6;
    expect_verify(g, KILN_ERR_INVALID, "%7 (assign): assigns %6 (mul), which is not a param or "
                  "state leaf");
    /* Reading the assign's own result is fine. */
    g = sample();
    cr_assert_geq(kiln_relu(g, 7), 0);
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    kiln_graph_free(g);
}

Test(verify, locations)
{
    kiln_graph *g = sample();
    static const char not_interned[] = "m.kiln";
    g->nodes[3].loc = (kiln_loc){not_interned, 1, 1};
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul): its location's file name is not interned in the "
                  "graph (kiln_graph_intern_file)");
    g = sample();
    g->nodes[3].loc = (kiln_loc){kiln_graph_intern_file(g, "m.kiln"), -1, 1};
    expect_verify(g, KILN_ERR_INVALID, "%3 (mul): its location -1:1 is negative (from m.kiln:-1:1)");
}

/* Every example model, its training programs (AdamW; SGD with Nesterov)
 * and its evaluation program: print -> parse -> print byte for byte. */
Test(irtext, roundtrip_examples_and_programs)
{
    DIR *d = opendir(KILN_SOURCE_DIR "/examples");
    cr_assert_not_null(d);
    int models = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".kiln")) continue;
        char path[1024], *err = NULL;
        snprintf(path, sizeof path, "%s/examples/%s", KILN_SOURCE_DIR, e->d_name);
        kiln_graph *fwd = NULL;
        cr_assert_eq(kiln_model_load(path, 8, &fwd, &err), KILN_OK, "%s", err ? err : path);
        roundtrip(fwd);
        models++;
        if (kiln_graph_find_role(fwd, KILN_ROLE_LOSS) >= 0) {
            kiln_train_options opt[2] = {kiln_train_defaults(), kiln_train_defaults()};
            opt[1].optimizer = KILN_OPT_SGD;
            opt[1].nesterov = 1;
            for (int i = 0; i < 2; i++) {
                kiln_graph *t = NULL;
                cr_assert_eq(kiln_train_program(fwd, &opt[i], &t), KILN_OK, "%s: %s", path,
                             kiln_graph_error(fwd));
                roundtrip(t);
                kiln_graph_free(t);
            }
            kiln_graph *ev = NULL;
            cr_assert_eq(kiln_eval_program(fwd, &ev), KILN_OK, "%s", kiln_graph_error(fwd));
            roundtrip(ev);
            kiln_graph_free(ev);
        }
        kiln_graph_free(fwd);
    }
    closedir(d);
    cr_assert_geq(models, 3, "found %d example models", models);
}
