/* tests/test_frontend.c — the model language: models that lower to the
 * expected graphs (names, shapes, roles, source positions), and bad models
 * that fail with the exact message, source line and caret. */
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "ir/ops.h"
#include "kiln/kiln.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

static kiln_graph *parse_ok(const char *text, int64_t batch)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_parse(text, "t.kiln", batch, &g, &err);
    cr_assert_eq(st, KILN_OK, "model failed: %s", err ? err : "(no message)");
    cr_assert_null(err);
    cr_assert_not_null(g);
    return g;
}

/* Parses a bad model and checks the status and the whole message. */
static void parse_bad(const char *text, int64_t batch, kiln_status want_st, const char *want)
{
    kiln_graph *g = (kiln_graph *)&g; /* must be set to NULL */
    char *err = NULL;
    kiln_status st = kiln_model_parse(text, "t.kiln", batch, &g, &err);
    cr_assert_null(g, "a graph came back from a bad model");
    cr_assert_not_null(err);
    cr_assert_str_eq(err, want);
    cr_assert_eq(st, want_st, "status %d, want %d for:\n%s", st, want_st, err);
    free(err);
}

static const kiln_node *node(const kiln_graph *g, const char *name)
{
    kiln_value v = kiln_graph_find(g, name);
    cr_assert_geq(v, 0, "no node named '%s'", name);
    return &g->nodes[v];
}

static void assert_type(const kiln_node *n, const char *want)
{
    char buf[128];
    cr_assert_str_eq(kiln_node_type_str(n, buf, sizeof buf), want, "node '%s'",
                     n->name ? n->name : "?");
}

static void assert_param(const kiln_graph *g, const char *name, const char *type)
{
    const kiln_node *n = node(g, name);
    cr_assert_eq(n->role, KILN_ROLE_PARAM, "'%s' is not a parameter", name);
    assert_type(n, type);
}

static int count_role(const kiln_graph *g, kiln_role role)
{
    int n = 0;
    for (int32_t i = 0; i < g->nnodes; i++) n += g->nodes[i].role == role;
    return n;
}

static const char *op_name(const kiln_graph *g, int32_t id)
{
    return kiln_op_info_of(g->nodes[id].op)->name;
}

/* ---- models that lower ---- */

Test(frontend, fashion_mlp)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_load("examples/fashion_mlp.kiln", 64, &g, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    cr_assert_str_eq(g->name, "fashion_mlp");
    assert_type(node(g, "x"), "f32[64,1,28,28]");
    cr_assert_eq(node(g, "x")->role, KILN_ROLE_INPUT);
    assert_type(node(g, "y"), "i32[64]");
    cr_assert_eq(node(g, "y")->role, KILN_ROLE_TARGET);
    assert_param(g, "linear0.weight", "f32[512,784]");
    assert_param(g, "linear0.bias", "f32[512]");
    assert_param(g, "linear1.weight", "f32[512,512]");
    assert_param(g, "linear1.bias", "f32[512]");
    assert_param(g, "linear2.weight", "f32[10,512]");
    assert_param(g, "linear2.bias", "f32[10]");
    cr_assert_eq(count_role(g, KILN_ROLE_PARAM), 6);

    const kiln_node *loss = node(g, "loss");
    cr_assert_eq(loss->role, KILN_ROLE_LOSS);
    assert_type(loss, "f32[]");
    cr_assert_str_eq(op_name(g, kiln_graph_find(g, "loss")), "cross_entropy");
    /* out = linear(h, 10) is the loss's first input */
    const kiln_node *out = &g->nodes[loss->inputs[0]];
    assert_type(out, "f32[64,10]");
    cr_assert_eq(loss->inputs[1], kiln_graph_find(g, "y"));

    const kiln_node *acc = node(g, "accuracy");
    cr_assert_eq(acc->role, KILN_ROLE_METRIC);
    assert_type(acc, "f32[]");
    cr_assert_eq(count_role(g, KILN_ROLE_METRIC), 1);

    /* Every node knows the line and column it came from. */
    for (int32_t i = 0; i < g->nnodes; i++) {
        cr_assert_str_eq(g->nodes[i].loc.file, "examples/fashion_mlp.kiln");
        cr_assert_gt(g->nodes[i].loc.line, 0);
        cr_assert_gt(g->nodes[i].loc.col, 0);
    }
    cr_assert_eq(loss->loc.line, 8);
    cr_assert_eq(loss->loc.col, 8);
    cr_assert_eq(acc->loc.line, 9);
    cr_assert_eq(node(g, "linear2.weight")->loc.line, 7);
    cr_assert_eq(node(g, "linear2.weight")->loc.col, 7);
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    kiln_graph_free(g);
}

/* The accuracy metric is the documented chain of ops. */
Test(frontend, accuracy_lowering)
{
    kiln_graph *g = parse_ok("model m\n"
                             "input x: f32[B, 5]\n"
                             "target y: i64[B]\n"
                             "h = x * 2\n"
                             "metric accuracy(h, y)\n"
                             "metric accuracy(x + 1, y) as acc2\n",
                             3);
    kiln_value m = kiln_graph_find(g, "accuracy");
    const char *chain[] = {"reduce_sum", "cast", "eq", "cast", "argmax"};
    kiln_value v = m;
    for (int i = 0; i < 5; i++) {
        cr_assert_str_eq(op_name(g, v), chain[i]);
        if (i == 2) cr_assert_eq(g->nodes[v].inputs[1], kiln_graph_find(g, "y"));
        v = g->nodes[v].inputs[0];
    }
    cr_assert_str_eq(op_name(g, v), "mul");
    assert_type(&g->nodes[g->nodes[m].inputs[0]], "f32[3]");
    cr_assert_eq(node(g, "acc2")->role, KILN_ROLE_METRIC);
    kiln_graph_free(g);
}

/* Arithmetic, literals as scalars of the other operand's dtype, SSA
 * renaming, outputs, and positions. Only elementwise ops. */
Test(frontend, expressions)
{
    kiln_graph *g = parse_ok("model expr   # a comment\n"
                             "input x: f64[B, 4]; input z: f64[4]\n"
                             "\n"
                             "h = -x + 2 * sigmoid(x) / (z - 0.5)\n"
                             "h = relu(h) * h   # rename: h is now the product\n"
                             "output h\n"
                             "output maximum(h, 0) as clipped\n"
                             "output pow(x, 2) + leaky_relu(x, 0.1) as poly\n"
                             "output cast(x, to=f32) as x32\n",
                             7);
    cr_assert_str_eq(g->name, "expr");
    const kiln_node *h = node(g, "h");
    cr_assert_eq(h->role, KILN_ROLE_OUTPUT);
    assert_type(h, "f64[7,4]");
    cr_assert_str_eq(kiln_op_info_of(h->op)->name, "mul");
    cr_assert_eq(h->loc.line, 5);
    cr_assert_eq(h->loc.col, 13); /* the '*' */
    /* relu(h) reads the first h, an add at 4:8 */
    const kiln_node *r = &g->nodes[h->inputs[0]];
    cr_assert_str_eq(kiln_op_info_of(r->op)->name, "relu");
    cr_assert_eq(r->inputs[0], h->inputs[1]);
    cr_assert_str_eq(op_name(g, h->inputs[1]), "add");
    cr_assert_eq(g->nodes[h->inputs[1]].loc.line, 4);
    cr_assert_eq(g->nodes[h->inputs[1]].loc.col, 8);
    /* literals became f64 scalars at their own positions */
    int consts = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op != KILN_OP_CONST) continue;
        consts++;
        assert_type(n, "f64[]");
    }
    cr_assert_eq(consts, 3); /* 2, 0.5 and 0 */
    const kiln_node *clipped = node(g, "clipped");
    cr_assert_eq(g->nodes[clipped->inputs[1]].op, KILN_OP_CONST);
    cr_assert_eq(kiln_attr_get_float(&g->nodes[clipped->inputs[1]], "value"), 0.0);
    const kiln_node *poly = node(g, "poly");
    const kiln_node *pw = &g->nodes[poly->inputs[0]], *lr = &g->nodes[poly->inputs[1]];
    cr_assert_eq(kiln_attr_get_float(pw, "exponent"), 2.0);
    cr_assert_eq(kiln_attr_get_float(lr, "slope"), 0.1);
    assert_type(node(g, "x32"), "f32[7,4]");
    cr_assert_eq(count_role(g, KILN_ROLE_OUTPUT), 4);
    kiln_graph_free(g);
}

/* Numbers fold at compile time; B is the batch size everywhere. */
Test(frontend, constants_fold)
{
    kiln_graph *g = parse_ok("model k\n"
                             "input x: f32[B * 2, 12 / 4, (1 + 1) * 3]\n"
                             "c = 7 / 2\n"
                             "y = x * c + (2 - 3)\n"
                             "output y\n",
                             5);
    assert_type(node(g, "x"), "f32[10,3,6]");
    const kiln_node *y = node(g, "y");
    const kiln_node *mul = &g->nodes[y->inputs[0]];
    cr_assert_eq(kiln_attr_get_float(&g->nodes[mul->inputs[1]], "value"), 3.5);
    cr_assert_eq(kiln_attr_get_float(&g->nodes[y->inputs[1]], "value"), -1.0);
    cr_assert_eq(g->nnodes, 5); /* x, 3.5, mul, -1, add: nothing else */
    kiln_graph_free(g);
}

/* Ops by registry name: attributes by keyword or by position, int lists
 * with B and negative numbers, dtypes, variadic inputs. */
Test(frontend, ops_by_name)
{
    kiln_graph *g = parse_ok("model ops\n"
                             "input x: f32[B, 1, 28, 28]\n"
                             "h = reshape(x, shape=[B, 784])\n"
                             "f = flatten(x)\n"
                             "s = reduce_sum(h, axes=[1], keepdims=1)\n"
                             "m = reduce_mean(h, [-1])\n"
                             "p = softmax(h, axis=-1)\n"
                             "t = permute(x, perm=[0, 2, 3, 1])\n"
                             "c = concat(h, f, h, axis=1)\n"
                             "l = slice(h, 1, 0, 10)\n"
                             "a = argmax(h, axis=-1)\n"
                             "output s\n"
                             "output m\n"
                             "output p\n"
                             "output t\n"
                             "output c\n"
                             "output l\n"
                             "output cast(a, to=i32) as a32\n",
                             4);
    assert_type(node(g, "s"), "f32[4,1]");
    assert_type(node(g, "m"), "f32[4]");
    assert_type(node(g, "p"), "f32[4,784]");
    assert_type(node(g, "t"), "f32[4,28,28,1]");
    assert_type(node(g, "c"), "f32[4,2352]");
    cr_assert_eq(node(g, "c")->ninputs, 3);
    assert_type(node(g, "l"), "f32[4,10]");
    assert_type(node(g, "a32"), "i32[4]");
    kiln_graph_free(g);
}

/* Layer names: a counter per layer kind, given names, bias=false. */
Test(frontend, layer_names)
{
    kiln_graph *g = parse_ok("model names\n"
                             "input x: f32[B, 8]\n"
                             "h = linear(x, 16, name=\"fc\")\n"
                             "h = linear(h, 4, bias=false)\n"
                             "h = linear(h, 2, false)\n"
                             "out = linear(h, out_features=3)\n"
                             "output out\n",
                             2);
    assert_param(g, "fc.weight", "f32[16,8]");
    assert_param(g, "fc.bias", "f32[16]");
    /* the named layer still counts: the next unnamed one is linear1 */
    assert_param(g, "linear1.weight", "f32[4,16]");
    cr_assert_lt(kiln_graph_find(g, "linear1.bias"), 0);
    assert_param(g, "linear2.weight", "f32[2,4]");
    cr_assert_lt(kiln_graph_find(g, "linear2.bias"), 0);
    assert_param(g, "linear3.weight", "f32[3,2]");
    assert_param(g, "linear3.bias", "f32[3]");
    assert_type(node(g, "out"), "f32[2,3]");
    kiln_graph_free(g);
}

/* Blocks: parameters, defaults, keyword arguments, nesting, and the
 * parameter names each call's scope gives. */
Test(frontend, nested_blocks)
{
    kiln_graph *g = parse_ok("model nested\n"
                             "input x: f32[B, 16]\n"
                             "block dense(x, c, bias=true) {\n"
                             "  h = linear(x, c, bias=bias)\n"
                             "  return relu(h)\n"
                             "}\n"
                             "block down(x, c) {\n"
                             "  h = dense(x, c)\n"
                             "  h = dense(h, c / 2, bias=false)\n"
                             "  return linear(h, c, name=\"proj\")\n"
                             "}\n"
                             "h = down(x, 32)\n"
                             "h = down(h, c=8)\n"
                             "h = dense(h, 6)\n"
                             "out = linear(h, 3)\n"
                             "output out\n",
                             4);
    assert_param(g, "down0.dense0.linear0.weight", "f32[32,16]");
    assert_param(g, "down0.dense0.linear0.bias", "f32[32]");
    assert_param(g, "down0.dense1.linear0.weight", "f32[16,32]");
    cr_assert_lt(kiln_graph_find(g, "down0.dense1.linear0.bias"), 0);
    assert_param(g, "down0.proj.weight", "f32[32,16]");
    assert_param(g, "down0.proj.bias", "f32[32]");
    assert_param(g, "down1.dense0.linear0.weight", "f32[8,32]");
    assert_param(g, "down1.dense1.linear0.weight", "f32[4,8]");
    assert_param(g, "down1.proj.weight", "f32[8,4]");
    assert_param(g, "dense0.linear0.weight", "f32[6,8]");
    assert_param(g, "linear0.weight", "f32[3,6]");
    assert_param(g, "linear0.bias", "f32[3]");
    cr_assert_eq(count_role(g, KILN_ROLE_PARAM), 14);
    assert_type(node(g, "out"), "f32[4,3]");
    /* a node made inside a block records its place in the block's body */
    const kiln_node *w = node(g, "down1.dense1.linear0.weight");
    cr_assert_eq(w->loc.line, 4);
    cr_assert_eq(w->loc.col, 7);
    kiln_graph_free(g);
}

/* Blocks of plain ops; a block's names are its own. */
Test(frontend, blocks_of_ops)
{
    kiln_graph *g = parse_ok("model swish\n"
                             "input x: f32[B, 3]\n"
                             "block swish(x, beta=1.0) {\n"
                             "  s = sigmoid(x * beta)\n"
                             "  return x * s\n"
                             "}\n"
                             "block twice(x) {\n"
                             "  x = swish(x)\n"
                             "  return swish(x, beta=2)\n"
                             "}\n"
                             "s = 5              # not the block's s\n"
                             "y = twice(x) + s\n"
                             "output y\n",
                             2);
    const kiln_node *y = node(g, "y");
    assert_type(y, "f32[2,3]");
    cr_assert_eq(kiln_attr_get_float(&g->nodes[y->inputs[1]], "value"), 5.0);
    int sig = 0;
    for (int32_t i = 0; i < g->nnodes; i++) sig += !strcmp(op_name(g, i), "sigmoid");
    cr_assert_eq(sig, 2);
    kiln_graph_free(g);
}

Test(frontend, loss_is_the_last_value_named_loss)
{
    kiln_graph *g = parse_ok("model l\n"
                             "input x: f32[B, 3]\n"
                             "target t: f32[B, 3]\n"
                             "loss = mse_loss(x * 2, t)\n"
                             "loss = loss + reduce_mean(x * x) * 0.01\n",
                             2);
    const kiln_node *loss = node(g, "loss");
    cr_assert_eq(loss->role, KILN_ROLE_LOSS);
    cr_assert_str_eq(kiln_op_info_of(loss->op)->name, "add");
    cr_assert_eq(count_role(g, KILN_ROLE_LOSS), 1);
    kiln_graph_free(g);
}

Test(frontend, no_loss_is_fine)
{
    kiln_graph *g = parse_ok("model m\ninput x: f32[B]\n", 1);
    cr_assert_eq(count_role(g, KILN_ROLE_LOSS), 0);
    cr_assert_eq(g->nnodes, 1);
    kiln_graph_free(g);
    g = parse_ok("model empty", 1);
    cr_assert_eq(g->nnodes, 0);
    kiln_graph_free(g);
}

/* The same file loads through the path and through the text, with and
 * without a file name. */
Test(frontend, load_and_parse_agree)
{
    FILE *f = fopen("examples/fashion_mlp.kiln", "rb");
    cr_assert_not_null(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    kiln_graph *a = NULL, *b = NULL, *c = NULL;
    cr_assert_eq(kiln_model_load("examples/fashion_mlp.kiln", 8, &a, NULL), KILN_OK);
    cr_assert_eq(kiln_model_parse(text, "examples/fashion_mlp.kiln", 8, &b, NULL), KILN_OK);
    cr_assert_eq(kiln_model_parse(text, NULL, 8, &c, NULL), KILN_OK);
    char *sa = kiln_graph_to_string(a), *sb = kiln_graph_to_string(b);
    cr_assert_str_eq(sa, sb);
    cr_assert_str_eq(c->nodes[0].loc.file, "<model>");
    free(sa);
    free(sb);
    kiln_graph_free(a);
    kiln_graph_free(b);
    kiln_graph_free(c);
}

/* Every model under examples/ compiles. */
Test(frontend, examples_load)
{
    DIR *dir = opendir("examples");
    cr_assert_not_null(dir, "run the tests from the repository root");
    int count = 0;
    struct dirent *ent;
    while ((ent = readdir(dir))) {
        size_t len = strlen(ent->d_name);
        if (len < 6 || strcmp(ent->d_name + len - 5, ".kiln")) continue;
        char path[512];
        snprintf(path, sizeof path, "examples/%s", ent->d_name);
        kiln_graph *g = NULL;
        char *err = NULL;
        kiln_status st = kiln_model_load(path, 16, &g, &err);
        cr_expect_eq(st, KILN_OK, "%s: %s", path, err ? err : "");
        free(err);
        if (g) cr_expect_eq(kiln_graph_verify(g), KILN_OK, "%s: %s", path, kiln_graph_error(g));
        kiln_graph_free(g);
        count++;
    }
    closedir(dir);
    cr_assert_geq(count, 3);
    /* the block example names its parameters by scope */
    kiln_graph *g = NULL;
    cr_assert_eq(kiln_model_load(KILN_SOURCE_DIR "/examples/resmlp.kiln", 16, &g, NULL), KILN_OK);
    assert_param(g, "stage0.proj.weight", "f32[256,784]");
    assert_param(g, "stage0.residual1.linear0.weight", "f32[512,256]");
    assert_param(g, "stage1.residual0.linear1.bias", "f32[128]");
    assert_param(g, "head.weight", "f32[10,128]");
    assert_type(node(g, "probs"), "f32[16,10]");
    kiln_graph_free(g);
}

/* ---- models that fail, with their exact messages ---- */

Test(frontend, error_unexpected_token)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = relu(x))\n", 2, KILN_ERR_PARSE,
              "t.kiln:3:12: error: expected end of line after the statement, found ')'\n"
              "h = relu(x))\n"
              "           ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nh = * x\n", 2, KILN_ERR_PARSE,
              "t.kiln:3:5: error: expected an expression, found '*'\n"
              "h = * x\n"
              "    ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nrelu(x)\n", 2, KILN_ERR_PARSE,
              "t.kiln:3:5: error: expected '=' after 'relu' (a statement is 'name = "
              "expression'), found '('\n"
              "relu(x)\n"
              "    ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nh = relu(x\n", 2, KILN_ERR_PARSE,
              "t.kiln:3:11: error: expected ',' or ')' in the call of 'relu', found end of file\n"
              "h = relu(x\n"
              "          ^\n");
}

Test(frontend, error_lexical)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = x @ x\n", 2, KILN_ERR_PARSE,
              "t.kiln:3:7: error: unexpected character '@'\n"
              "h = x @ x\n"
              "      ^\n");
    parse_bad("model m\nh = linear(x, 3, name=\"fc)\n", 2, KILN_ERR_PARSE,
              "t.kiln:2:23: error: unterminated string: add a closing '\"' on the same line\n"
              "h = linear(x, 3, name=\"fc)\n"
              "                      ^\n");
}

Test(frontend, error_missing_model_header)
{
    parse_bad("# no header\ninput x: f32[B]\n", 2, KILN_ERR_PARSE,
              "t.kiln:2:1: error: expected 'model NAME' at the start of the file, found 'input'\n"
              "input x: f32[B]\n"
              "^\n");
}

Test(frontend, error_unknown_name)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = relu(hx)\n", 2, KILN_ERR_NOT_FOUND,
              "t.kiln:3:10: error: unknown name 'hx' (did you mean 'x'?)\n"
              "h = relu(hx)\n"
              "         ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nblock f(y) {\n  return x\n}\nh = f(x)\n", 2,
              KILN_ERR_NOT_FOUND,
              "t.kiln:4:10: error: unknown name 'x' in block 'f': a block sees only its "
              "parameters and its own names; pass 'x' as an argument\n"
              "  return x\n"
              "         ^\n");
}

Test(frontend, error_unknown_op)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = rleu(x)\n", 2, KILN_ERR_NOT_FOUND,
              "t.kiln:3:5: error: unknown op or layer 'rleu' (did you mean 'relu'?)\n"
              "h = rleu(x)\n"
              "    ^\n");
    /* nothing close: no suggestion (conv9d would now suggest conv2d) */
    parse_bad("model m\ninput x: f32[B, 4]\nh = frobnicate(x)\n", 2, KILN_ERR_NOT_FOUND,
              "t.kiln:3:5: error: unknown op or layer 'frobnicate'\n"
              "h = frobnicate(x)\n"
              "    ^\n");
}

Test(frontend, error_tensor_argument_count)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = relu(x, x)\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:13: error: relu takes 1 tensor argument, got 2\n"
              "h = relu(x, x)\n"
              "            ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nh = linear(128)\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:5: error: linear takes 1 tensor argument, got 0\n"
              "h = linear(128)\n"
              "    ^\n");
}

Test(frontend, error_unknown_attribute)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = leaky_relu(x, slop=0.1)\n", 2, KILN_ERR_NOT_FOUND,
              "t.kiln:3:19: error: unknown attribute 'slop' for leaky_relu (did you mean "
              "'slope'?); it takes slope\n"
              "h = leaky_relu(x, slop=0.1)\n"
              "                  ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nh = linear(x, 3, bais=false)\n", 2,
              KILN_ERR_NOT_FOUND,
              "t.kiln:3:18: error: unknown argument 'bais' for linear (did you mean 'bias'?); "
              "it takes out_features, bias, name\n"
              "h = linear(x, 3, bais=false)\n"
              "                 ^\n");
}

Test(frontend, error_attribute_kind)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = cast(x, to=1)\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:13: error: attribute 'to' of cast must be a dtype, not an int\n"
              "h = cast(x, to=1)\n"
              "            ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nh = linear(x, 2.5)\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:15: error: argument 'out_features' of linear must be an int, not a "
              "float\n"
              "h = linear(x, 2.5)\n"
              "              ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\nh = pow(x)\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:5: error: pow needs the attribute 'exponent' (a float)\n"
              "h = pow(x)\n"
              "    ^\n");
}

Test(frontend, error_shape_mismatch)
{
    parse_bad("model m\ninput x: f32[B, 4]\ninput z: f32[B, 3]\nh = x + z\n", 2, KILN_ERR_SHAPE,
              "t.kiln:4:7: error: add: shapes f32[2,4] and f32[2,3] do not broadcast\n"
              "h = x + z\n"
              "      ^\n");
    parse_bad("model m\ninput x: i32[B, 4]\nh = x * 0.5\n", 2, KILN_ERR_SHAPE,
              "t.kiln:3:9: error: the number 0.5 meets a tensor of dtype i32; cast the tensor "
              "to a float dtype first\n"
              "h = x * 0.5\n"
              "        ^\n");
}

/* The brief's example: a layer whose width does not match. */
Test(frontend, error_shape_mismatch_after_layers)
{
    parse_bad("model m\n"
              "input x: f32[B, 784]\n"
              "h = relu(linear(x, 512))\n"
              "out = linear(h, 10)\n"
              "y = h + out\n",
              64, KILN_ERR_SHAPE,
              "t.kiln:5:7: error: add: shapes f32[64,512] and f32[64,10] do not broadcast\n"
              "y = h + out\n"
              "      ^\n");
}

Test(frontend, error_unknown_dtype)
{
    parse_bad("model m\ninput x: f31[B, 4]\n", 2, KILN_ERR_INVALID,
              "t.kiln:2:10: error: unknown dtype 'f31' (did you mean 'f32'?); the dtypes are "
              "f32, f64, i32, i64, u8 and bool\n"
              "input x: f31[B, 4]\n"
              "         ^\n");
}

Test(frontend, error_duplicate_declaration)
{
    parse_bad("model m\ninput x: f32[B, 4]\ntarget x: i32[B]\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:8: error: duplicate declaration of 'x' (first declared at line 2)\n"
              "target x: i32[B]\n"
              "       ^\n");
}

Test(frontend, error_bad_dimension)
{
    parse_bad("model m\ninput x: f32[B, -4]\n", 2, KILN_ERR_INVALID,
              "t.kiln:2:17: error: a dimension must be at least 1, got -4\n"
              "input x: f32[B, -4]\n"
              "                ^\n");
}

Test(frontend, error_block_before_definition)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = f(x)\nblock f(x) {\n  return x\n}\n", 2,
              KILN_ERR_INVALID,
              "t.kiln:3:5: error: block 'f' is used before its definition at line 4; move the "
              "definition above this line\n"
              "h = f(x)\n"
              "    ^\n");
}

Test(frontend, error_recursive_block)
{
    parse_bad("model m\ninput x: f32[B, 4]\nblock f(x) {\n  return relu(f(x))\n}\n", 2,
              KILN_ERR_INVALID,
              "t.kiln:4:15: error: block 'f' calls itself; recursion is not supported (a block "
              "expands inline at each call)\n"
              "  return relu(f(x))\n"
              "              ^\n");
    /* mutual recursion needs a call to a later block, which is refused */
    parse_bad("model m\nblock f(x) {\n  return g(x)\n}\nblock g(x) {\n  return f(x)\n}\n", 2,
              KILN_ERR_INVALID,
              "t.kiln:3:10: error: block 'g' is used before its definition at line 5; define "
              "it above block 'f'\n"
              "  return g(x)\n"
              "         ^\n");
}

Test(frontend, error_missing_return)
{
    parse_bad("model m\ninput x: f32[B, 4]\nblock f(x) {\n  h = relu(x)\n}\n", 2, KILN_ERR_PARSE,
              "t.kiln:5:1: error: block 'f' has no 'return': end it with 'return VALUE'\n"
              "}\n"
              "^\n");
}

Test(frontend, error_unterminated_block)
{
    parse_bad("model m\ninput x: f32[B, 4]\nblock f(x) {\n  h = relu(x)\n", 2, KILN_ERR_PARSE,
              "t.kiln:4:14: error: unexpected end of file: block 'f' (line 3) is missing its "
              "closing '}'\n"
              "  h = relu(x)\n"
              "             ^\n");
}

Test(frontend, error_block_arguments)
{
    const char *def = "model m\ninput x: f32[B, 4]\nblock f(y, c=2) {\n  return y * c\n}\n";
    char text[256];
    snprintf(text, sizeof text, "%sh = f(x, cc=4)\n", def);
    parse_bad(text, 2, KILN_ERR_NOT_FOUND,
              "t.kiln:6:10: error: block 'f' has no parameter 'cc' (did you mean 'c'?)\n"
              "h = f(x, cc=4)\n"
              "         ^\n");
    snprintf(text, sizeof text, "%sh = f(c=3)\n", def);
    parse_bad(text, 2, KILN_ERR_INVALID,
              "t.kiln:6:5: error: block 'f' needs the argument 'y'\n"
              "h = f(c=3)\n"
              "    ^\n");
}

Test(frontend, error_loss_not_scalar)
{
    parse_bad("model m\ninput x: f32[B, 4]\nloss = x * 2\n", 2, KILN_ERR_SHAPE,
              "t.kiln:3:8: error: the loss must be a floating-point scalar, got f32[2,4]\n"
              "loss = x * 2\n"
              "       ^\n");
}

Test(frontend, error_duplicate_layer_name)
{
    parse_bad("model m\ninput x: f32[B, 4]\nh = linear(x, 3, name=\"a\")\n"
              "h = linear(h, 3, name=\"a\")\n",
              2, KILN_ERR_INVALID,
              "t.kiln:4:5: error: the layer name 'a' is already used by the parameter "
              "'a.weight' (line 3); give this layer another name\n"
              "h = linear(h, 3, name=\"a\")\n"
              "    ^\n");
}

/* Tabs in the source line stay tabs in the caret line, so the caret lines
 * up however wide a terminal shows a tab. */
Test(frontend, error_caret_keeps_tabs)
{
    parse_bad("model m\ninput x: f32[B, 4]\n\th =\trelu(x)+  zz\n", 2, KILN_ERR_NOT_FOUND,
              "t.kiln:3:16: error: unknown name 'zz'\n"
              "\th =\trelu(x)+  zz\n"
              "\t   \t          ^\n");
}

Test(frontend, error_bad_batch)
{
    parse_bad("model m\ninput x: f32[B, 4]\n", 0, KILN_ERR_INVALID,
              "t.kiln: error: the batch size B must be at least 1, got 0\n");
    parse_bad("model m\n", -3, KILN_ERR_INVALID,
              "t.kiln: error: the batch size B must be at least 1, got -3\n");
}

Test(frontend, error_file_not_found)
{
    kiln_graph *g = (kiln_graph *)&g;
    char *err = NULL;
    kiln_status st = kiln_model_load("examples/no_such_model.kiln", 8, &g, &err);
    cr_assert_eq(st, KILN_ERR_IO);
    cr_assert_null(g);
    cr_assert_str_eq(err, "examples/no_such_model.kiln: error: cannot read model file "
                          "'examples/no_such_model.kiln': No such file or directory\n");
    free(err);
    /* err may be NULL: the status alone */
    cr_assert_eq(kiln_model_load("examples/no_such_model.kiln", 8, &g, NULL), KILN_ERR_IO);
    cr_assert_eq(kiln_model_parse(NULL, "t.kiln", 8, &g, NULL), KILN_ERR_INVALID);
    cr_assert_eq(kiln_model_parse("model m", "t.kiln", 8, NULL, NULL), KILN_ERR_INVALID);
}

Test(frontend, error_roles)
{
    parse_bad("model m\ninput x: f32[B, 4]\noutput x\n", 2, KILN_ERR_INVALID,
              "t.kiln:3:8: error: 'x' is a leaf (input), not a computed value; a model's "
              "output must be computed from its inputs\n"
              "output x\n"
              "       ^\n");
    parse_bad("model m\ninput x: f32[B, 4]\ntarget y: i32[B]\nmetric acc(x, y)\n", 2,
              KILN_ERR_NOT_FOUND,
              "t.kiln:4:8: error: unknown metric 'acc'; the metrics are: accuracy, "
              "accuracy_thresh, fbeta, mean_iou, dice, rmse\n"
              "metric acc(x, y)\n"
              "       ^\n");
}

/* ---- pathological input: an error, never a crash ---- */

static char *repeat(const char *head, const char *unit, int n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *s = malloc(hl + ul * (size_t)n + tl + 1);
    cr_assert_not_null(s);
    memcpy(s, head, hl);
    for (int i = 0; i < n; i++) memcpy(s + hl + ul * (size_t)i, unit, ul);
    memcpy(s + hl + ul * (size_t)n, tail, tl + 1);
    return s;
}

static void expect_failure(const char *text, const char *needle)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    kiln_status st = kiln_model_parse(text, "t.kiln", 2, &g, &err);
    cr_assert_neq(st, KILN_OK);
    cr_assert_null(g);
    cr_assert_not_null(err);
    cr_assert(strstr(err, needle), "'%s' not in:\n%.300s", needle, err);
    free(err);
}

Test(frontend, pathological_nesting)
{
    char *s = repeat("model m\ninput x: f32[B]\nh = ", "(", 100000, "x\n");
    expect_failure(s, "error: expression nested too deeply (more than 200 levels)");
    free(s);
    s = repeat("model m\ninput x: f32[B]\nh = ", "-", 100000, "x\n");
    expect_failure(s, "error: expression nested too deeply");
    free(s);
    s = repeat("model m\ninput x: f32[B]\nh = x", " + x", 100000, "\n");
    expect_failure(s, "error: expression nested too deeply");
    free(s);
    s = repeat("model m\ninput x: f32[B]\nh = relu(x, ", "[", 100000, "\n");
    expect_failure(s, "error: expression nested too deeply");
    free(s);
}

Test(frontend, pathological_expansion)
{
    /* each block calls the one before twice: 2^40 calls if nothing stopped it */
    size_t cap = 1 << 16, o = 0;
    char *s = malloc(cap);
    cr_assert_not_null(s);
    o += (size_t)snprintf(s + o, cap - o, "model m\ninput x: f32[B]\n"
                                          "block b0(x) {\n  return relu(x)\n}\n");
    for (int i = 1; i < 40; i++)
        o += (size_t)snprintf(s + o, cap - o, "block b%d(x) {\n  h = b%d(x)\n  return b%d(h)\n}\n",
                              i, i - 1, i - 1);
    snprintf(s + o, cap - o, "y = b39(x)\n");
    expect_failure(s, "error: the model grows past 65536 graph nodes");
    free(s);
}

Test(frontend, pathological_text)
{
    expect_failure("", "t.kiln:1:1: error: expected 'model NAME' at the start of the file, "
                       "found end of file");
    expect_failure("model", "expected the model's name after 'model', found end of file");
    expect_failure("model m\nx = 99999999999999999999\n", "integer 99999999999999999999 is "
                   "too large");
    expect_failure("model m\nx = 9223372036854775807 + 1\n", "integer overflow");
    expect_failure("model m\nx = 1 / 0\n", "division by zero");
    expect_failure("model m\nx = \"abc\n", "unterminated string");
    expect_failure("model m\nx = \xc3\xa9\n", "unexpected byte 0xC3");
    expect_failure("model m\nblock f(x) {\n", "unexpected end of file: block 'f'");
    expect_failure("model m\nblock f(x) {\n  return x\n  y = x\n}\n",
                   "'return' must be the last statement of block 'f'");
    expect_failure("model m\nreturn 3\n", "'return' outside a block");
    expect_failure("model m\nB = 3\n", "'B' is the batch size and cannot be assigned");
    expect_failure("model m\ninput x: f32[1,1,1,1,1,1,1,1,1]\n", "too many dimensions");
    expect_failure("model m\nh = reduce_sum(1, axes=[1,2,3,4,5,6,7,8,9])\n",
                   "a list holds at most 8 integers");
    char *s = repeat("model m\ninput x: f32[B]\nh = relu(x", ", x", 100, ")\n");
    expect_failure(s, "too many arguments in the call of 'relu' (at most 32)");
    free(s);
    s = repeat("model m\n", "a", 1000, " = 1\n");
    expect_failure(s, "name too long");
    free(s);
}

/* ---- dim: sizes set at load time (progressive resizing) ---- */

static const char *dim_model = "model d\n"
                               "dim S = 28\n"
                               "input x: f32[B, 1, S, S]\n"
                               "h = reshape(x, shape=[B, S * S])\n"
                               "output h\n";

Test(frontend, dim_default_and_override)
{
    kiln_graph *g = parse_ok(dim_model, 4);
    assert_type(node(g, "x"), "f32[4,1,28,28]");
    kiln_graph_free(g);
    kiln_dim d = {"S", 32};
    char *err = NULL;
    cr_assert_eq(kiln_model_parse_dims(dim_model, "t.kiln", 4, &d, 1, &g, &err), KILN_OK, "%s", err);
    assert_type(node(g, "x"), "f32[4,1,32,32]");
    assert_type(node(g, "h"), "f32[4,1024]");
    kiln_graph_free(g);
}

Test(frontend, dim_errors)
{
    kiln_dim d = {"T", 32};
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse_dims(dim_model, "t.kiln", 4, &d, 1, &g, &err), KILN_ERR_NOT_FOUND);
    cr_assert_null(g);
    cr_assert_str_eq(err, "t.kiln: error: the model declares no dim 'T' (its dims: S); declare it "
                          "with 'dim T = <default>' before its first use\n");
    free(err);
    d = (kiln_dim){"S", 0};
    cr_assert_eq(kiln_model_parse_dims(dim_model, "t.kiln", 4, &d, 1, &g, &err), KILN_ERR_INVALID);
    cr_assert(strstr(err, "dim 'S' must be at least 1, was given 0"), "%s", err);
    free(err);
    parse_bad("model d\ndim S = 0\n", 1, KILN_ERR_INVALID,
              "t.kiln:2:9: error: the default of dim 'S' must be an integer of at least 1\n"
              "dim S = 0\n"
              "        ^\n");
    parse_bad("model d\ndim S 3\n", 1, KILN_ERR_PARSE,
              "t.kiln:2:7: error: expected '=' and a default after 'dim S' (e.g. 'dim S = 28'), "
              "found '3'\n"
              "dim S 3\n"
              "      ^\n");
    /* 'dim' is still an ordinary name elsewhere */
    kiln_graph_free(parse_ok("model d\ninput x: f32[B, 2]\ndim = relu(x)\noutput dim\n", 1));
}
