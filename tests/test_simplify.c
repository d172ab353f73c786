/* tests/test_simplify.c — passes/simplify.c: one test per rule, each checking
 * the rewritten graph's op counts, that it verifies, and that the reference
 * interpreter gives the same outputs, losses, metrics and assigned values
 * before and after on random inputs (f64, rtol 1e-6); negative tests; the
 * MLP training program with and without simplify. */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "ir/graph.h"
#include "ir/ops.h"
#include "passes/passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Deterministic values for a leaf, from its name: uniform in [-1, 1) for
 * floats ([0, 1) for optimizer state: exp_avg_sq is non-negative), 0..2 for
 * integers (class labels of three classes). */
static double *leaf_values(const kiln_node *n)
{
    int64_t k = kiln_node_numel(n);
    double *v = malloc((size_t)(k ? k : 1) * sizeof *v);
    uint64_t s = hash(n->name) | 1;
    for (int64_t i = 0; i < k; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0;
        if (!kiln_dtype_is_float((kiln_dtype)n->dtype))
            v[i] = (double)((s >> 33) % 3);
        else
            v[i] = n->role == KILN_ROLE_STATE ? u : 2 * u - 1;
    }
    return v;
}

typedef struct hp {
    const char *name;
    double v;
} hp;

static kiln_interp *interp_for(const kiln_graph *g, const hp *hps, int nhp)
{
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op != KILN_OP_INPUT) continue;
        double *v = leaf_values(n);
        for (int k = 0; k < nhp; k++)
            if (!strcmp(hps[k].name, n->name)) v[0] = hps[k].v;
        cr_assert_eq(kiln_interp_set(it, i, v, (size_t)kiln_node_numel(n)), KILN_OK, "%s",
                     kiln_interp_error(it));
        free(v);
    }
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    return it;
}

static void expect_close(const double *a, const double *b, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        cr_expect(a[i] == b[i] || fabs(a[i] - b[i]) <= 1e-6 * fabs(b[i]) + 1e-12 ||
                      (isnan(a[i]) && isnan(b[i])),
                  "%s[%lld]: %.17g after vs %.17g before", what, (long long)i, a[i], b[i]);
}

/* Every output, loss and metric of `before` (by name) and every value an
 * assign writes has the same value in `after`, which verifies. Returns the
 * number of values compared. */
static int expect_equivalent_hp(const kiln_graph *before, kiln_graph *after, const hp *hps,
                                int nhp)
{
    cr_assert_eq(kiln_graph_verify(after), KILN_OK, "%s", kiln_graph_error(after));
    kiln_interp *ia = interp_for(after, hps, nhp), *ib = interp_for(before, hps, nhp);
    int compared = 0;
    for (int32_t i = 0; i < before->nnodes; i++) {
        const kiln_node *n = &before->nodes[i];
        const char *name = NULL;
        if (n->role == KILN_ROLE_OUTPUT || n->role == KILN_ROLE_LOSS ||
            n->role == KILN_ROLE_METRIC)
            name = n->name;
        else if (n->op == KILN_OP_ASSIGN)
            name = before->nodes[n->inputs[0]].name;
        if (!name) continue;
        int32_t j = kiln_graph_find(after, name);
        cr_assert_geq(j, 0, "'%s' is gone", name);
        if (n->op != KILN_OP_ASSIGN) cr_expect_eq(after->nodes[j].role, n->role, "%s", name);
        expect_close(kiln_interp_value(ia, j), kiln_interp_value_by_name(ib, name),
                     kiln_node_numel(n), name);
        compared++;
    }
    cr_expect_gt(compared, 0);
    kiln_interp_free(ia);
    kiln_interp_free(ib);
    return compared;
}

static int expect_equivalent(const kiln_graph *before, kiln_graph *after)
{
    return expect_equivalent_hp(before, after, NULL, 0);
}

/* Runs simplify on g (verified first) and returns the graph as it was. */
static kiln_graph *simplify(kiln_graph *g, kiln_simplify_stats *s)
{
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    kiln_graph *before = kiln_graph_clone(g);
    cr_assert_not_null(before);
    cr_assert_eq(kiln_pass_simplify_stats(g, s), KILN_OK, "%s", kiln_graph_error(g));
    return before;
}

static kiln_value cst(kiln_graph *g, double v) { return kiln_scalar(g, v, KILN_F64); }

static kiln_value reshape(kiln_graph *g, kiln_value x, int rank, const int64_t *shape)
{
    return kiln_reshape(g, x, rank, shape);
}

/* ---- 1. constant folding ---- */

Test(simplify, constant_folding)
{
    kiln_graph *g = kiln_graph_new("fold");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 1, s);
    /* exp(0) + 2*3 = 7; sqrt(16) / 2 = 2 */
    kiln_value seven = kiln_add(g, kiln_exp(g, cst(g, 0)), kiln_mul(g, cst(g, 2), cst(g, 3)));
    kiln_value two = kiln_div(g, kiln_op(g, "sqrt", 1, (kiln_value[]){cst(g, 16)}, 0, NULL),
                              cst(g, 2));
    kiln_set_output(g, kiln_add(g, kiln_mul(g, x, seven), two), "out");
    /* log(0) is -inf: left to run time */
    kiln_set_output(g, kiln_add(g, x, kiln_log(g, cst(g, 0))), "inf");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.folded, 5, "folded %d", st.folded); /* exp, mul, add, sqrt, div */
    cr_expect_eq(kiln_test_count_op(g, "exp"), 0);
    cr_expect_eq(kiln_test_count_op(g, "sqrt"), 0);
    cr_expect_eq(kiln_test_count_op(g, "div"), 0);
    cr_expect_eq(kiln_test_count_op(g, "log"), 1);
    cr_expect_eq(kiln_test_count_op(g, "mul"), 1); /* x * 7 */
    cr_expect_eq(kiln_test_count_op(g, "add"), 2); /* (x*7) + 2, x + log(0) */
    int32_t out = kiln_graph_find(g, "out");
    const kiln_node *o = &g->nodes[out];
    const kiln_node *c2 = &g->nodes[o->inputs[1]];
    cr_expect_eq(c2->op, KILN_OP_CONST);
    cr_expect_eq(kiln_attr_get_float(c2, "value"), 2.0);
    const kiln_node *c7 = &g->nodes[g->nodes[o->inputs[0]].inputs[1]];
    cr_expect_eq(c7->op, KILN_OP_CONST);
    cr_expect_eq(kiln_attr_get_float(c7, "value"), 7.0);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* A fold is rounded to the node's dtype, as the interpreter rounds; a
 * constant that is itself the output keeps its op (a const cannot carry the
 * output role). */
Test(simplify, constant_folding_rounds_and_keeps_tags)
{
    kiln_graph *g = kiln_graph_new("fold32");
    int64_t s[] = {2};
    kiln_value x = kiln_input(g, "x", KILN_F32, 1, s);
    kiln_value r2 = kiln_op(g, "sqrt", 1, (kiln_value[]){kiln_scalar(g, 2, KILN_F32)}, 0, NULL);
    kiln_set_output(g, kiln_mul(g, x, r2), "out");
    kiln_set_output(g, kiln_add(g, kiln_scalar(g, 1, KILN_F32), kiln_scalar(g, 2, KILN_F32)),
                    "three");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.folded, 1);
    cr_expect_eq(kiln_test_count_op(g, "sqrt"), 0);
    cr_expect_eq(kiln_test_count_op(g, "add"), 1);
    const kiln_node *o = &g->nodes[kiln_graph_find(g, "out")];
    cr_expect_eq(kiln_attr_get_float(&g->nodes[o->inputs[1]], "value"), (double)sqrtf(2.0f));
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* ---- 2. identities ---- */

/* Leaves the pass copies keep what the graph said of them: a parameter's
 * group (freezing, discriminative rates) survives the rebuild. */
Test(simplify, leaf_copies_keep_param_groups)
{
    kiln_graph *g = kiln_graph_new("groups");
    int64_t s[] = {3};
    kiln_value w = kiln_param(g, "head.w", KILN_F64, 1, s, KILN_INIT_ZEROS, 0);
    kiln_value b = kiln_param(g, "body.w", KILN_F64, 1, s, KILN_INIT_ZEROS, 0);
    cr_assert_eq(kiln_set_param_group(g, w, 3), KILN_OK, "%s", kiln_graph_error(g));
    kiln_set_output(g, kiln_add(g, kiln_mul(g, w, cst(g, 1)), b), "out");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    kiln_graph_free(before);
    cr_expect_eq(kiln_test_count_op(g, "mul"), 0, "x * 1 is x");
    int32_t hw = kiln_graph_find(g, "head.w"), bw = kiln_graph_find(g, "body.w");
    cr_assert(hw >= 0 && bw >= 0);
    cr_expect_eq(kiln_param_group(g, hw), 3);
    cr_expect_eq(kiln_param_group(g, bw), 0);
    kiln_graph_free(g);
}

Test(simplify, arithmetic_identities)
{
    kiln_graph *g = kiln_graph_new("arith");
    int64_t s[] = {2, 3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, s);
    kiln_value h = kiln_relu(g, x);
    kiln_value y = kiln_mul(g, h, cst(g, 1));
    y = kiln_mul(g, cst(g, 1), y);
    y = kiln_add(g, y, cst(g, 0));
    y = kiln_add(g, cst(g, 0), y);
    y = kiln_sub(g, y, cst(g, 0));
    y = kiln_div(g, y, cst(g, 1));
    /* a splat of ones the same shape as x is a one too */
    y = kiln_mul(g, y, kiln_broadcast_to(g, cst(g, 1), 2, s));
    kiln_set_output(g, kiln_exp(g, y), "out");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.identities, 7);
    cr_expect_eq(kiln_test_count_op(g, "mul") + kiln_test_count_op(g, "add") + kiln_test_count_op(g, "sub") +
                 kiln_test_count_op(g, "div") + kiln_test_count_op(g, "broadcast_to") + kiln_test_count_op(g, "const"), 0);
    /* x, relu, exp */
    cr_expect_eq(g->nnodes, 3);
    const kiln_node *o = &g->nodes[kiln_graph_find(g, "out")];
    cr_expect_eq(g->nodes[o->inputs[0]].op, KILN_OP_RELU);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

Test(simplify, unary_identities)
{
    kiln_graph *g = kiln_graph_new("unary");
    int64_t s[] = {2, 3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, s);
    kiln_value y = kiln_neg(g, kiln_neg(g, kiln_exp(g, x)));          /* neg(neg(e)) */
    y = kiln_pow(g, y, 1.0);                                           /* pow(y, 1) */
    y = kiln_cast(g, y, KILN_F64);                                     /* cast to f64 */
    y = kiln_broadcast_to(g, y, 2, s);                                 /* same shape */
    y = reshape(g, y, 2, s);                                           /* same shape */
    y = kiln_flatten(g, y, 1);                                         /* [2,3] already */
    y = kiln_permute(g, y, 2, (int64_t[]){0, 1});                      /* identity perm */
    kiln_set_output(g, kiln_relu(g, y), "out");
    /* a real cast and a real pow stay */
    kiln_set_output(g, kiln_cast(g, kiln_pow(g, x, 2.0), KILN_F32), "f32");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(kiln_test_count_op(g, "neg"), 0);
    cr_expect_eq(kiln_test_count_op(g, "pow"), 1);
    cr_expect_eq(kiln_test_count_op(g, "cast"), 1);
    cr_expect_eq(kiln_test_count_op(g, "broadcast_to") + kiln_test_count_op(g, "reshape") + kiln_test_count_op(g, "flatten") +
                 kiln_test_count_op(g, "permute"), 0);
    const kiln_node *o = &g->nodes[kiln_graph_find(g, "out")];
    cr_expect_eq(g->nodes[o->inputs[0]].op, KILN_OP_EXP);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

Test(simplify, permute_of_permute)
{
    kiln_graph *g = kiln_graph_new("perm");
    int64_t s[] = {2, 3, 4};
    kiln_value x = kiln_input(g, "x", KILN_F64, 3, s);
    /* [1,2,0] then [2,0,1] is the identity */
    kiln_value a = kiln_permute(g, kiln_permute(g, x, 3, (int64_t[]){1, 2, 0}), 3,
                                (int64_t[]){2, 0, 1});
    kiln_set_output(g, kiln_exp(g, a), "id");
    /* [1,0,2] then [0,2,1]: one permute [1,2,0] */
    kiln_value b = kiln_permute(g, kiln_permute(g, x, 3, (int64_t[]){1, 0, 2}), 3,
                                (int64_t[]){0, 2, 1});
    kiln_set_output(g, kiln_exp(g, b), "one");
    kiln_graph *before = simplify(g, NULL);
    cr_expect_eq(kiln_test_count_op(g, "permute"), 1);
    const kiln_node *id = &g->nodes[kiln_graph_find(g, "id")];
    cr_expect_eq(id->inputs[0], kiln_graph_find(g, "x"));
    const kiln_node *one = &g->nodes[kiln_graph_find(g, "one")];
    const kiln_node *p = &g->nodes[one->inputs[0]];
    cr_assert_eq(p->op, KILN_OP_PERMUTE);
    cr_expect_eq(p->inputs[0], kiln_graph_find(g, "x"));
    const kiln_attr *perm = kiln_node_attr(p, "perm");
    cr_expect(perm->i[0] == 1 && perm->i[1] == 2 && perm->i[2] == 0);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

Test(simplify, reshape_of_reshape)
{
    kiln_graph *g = kiln_graph_new("reshape");
    int64_t s[] = {2, 3, 4};
    kiln_value x = kiln_input(g, "x", KILN_F64, 3, s);
    /* [2,3,4] -> [6,4] -> [4,6]: one reshape */
    kiln_value a = reshape(g, reshape(g, x, 2, (int64_t[]){6, 4}), 2, (int64_t[]){4, 6});
    kiln_set_output(g, kiln_exp(g, a), "one");
    /* [2,3,4] -> [24] -> [2,3,4]: none */
    kiln_value b = reshape(g, reshape(g, x, 1, (int64_t[]){24}), 3, s);
    kiln_set_output(g, kiln_exp(g, b), "none");
    /* flatten of a reshape: [2,3,4] -> [6,2,2] -> flatten(1) = [6,4] */
    kiln_value c = kiln_flatten(g, reshape(g, x, 3, (int64_t[]){6, 2, 2}), 1);
    kiln_set_output(g, kiln_exp(g, c), "flat");
    kiln_graph *before = simplify(g, NULL);
    cr_expect_eq(kiln_test_count_op(g, "reshape"), 2);
    cr_expect_eq(kiln_test_count_op(g, "flatten"), 0);
    int32_t xid = kiln_graph_find(g, "x");
    const kiln_node *one = &g->nodes[g->nodes[kiln_graph_find(g, "one")].inputs[0]];
    cr_expect_eq(one->op, KILN_OP_RESHAPE);
    cr_expect_eq(one->inputs[0], xid);
    cr_expect_eq(g->nodes[kiln_graph_find(g, "none")].inputs[0], xid);
    const kiln_node *flat = &g->nodes[g->nodes[kiln_graph_find(g, "flat")].inputs[0]];
    cr_expect_eq(flat->op, KILN_OP_RESHAPE);
    cr_expect_eq(flat->inputs[0], xid);
    cr_expect(flat->rank == 2 && flat->shape[0] == 6 && flat->shape[1] == 4);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* ---- 3. matmul chains ---- */

Test(simplify, matmul_chain_right)
{
    kiln_graph *g = kiln_graph_new("chain");
    int64_t sa[] = {256, 256}, sx[] = {256, 1};
    kiln_value A = kiln_input(g, "A", KILN_F64, 2, sa);
    kiln_value B = kiln_input(g, "B", KILN_F64, 2, sa);
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, sx);
    kiln_set_output(g, kiln_matmul(g, kiln_matmul(g, A, B, 0, 0), x, 0, 0), "y");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    double n = 256;
    cr_expect_eq(st.reassociated, 1);
    cr_assert_eq(st.nrecords, 1);
    const kiln_simplify_record *r = &st.records[0];
    cr_expect_eq(r->kind, KILN_SIMPLIFY_MATMUL_RIGHT);
    cr_expect(r->m == 256 && r->k == 256 && r->n == 256 && r->p == 1);
    /* (A@B)@x: 2*256^3 + 2*256^2 flops; A@(B@x): 2 * 2*256^2 */
    cr_expect_eq(r->flops_before, 2 * n * n * n + 2 * n * n);
    cr_expect_eq(r->flops_after, 2 * (2 * n * n));
    cr_expect_eq(st.matmul_flops_before, 2 * n * n * n + 2 * n * n);
    cr_expect_eq(st.matmul_flops_after, 4 * n * n);
    cr_log_info("A[256,256]@B[256,256]@x[256,1]: (A@B)@x %.0f flops -> A@(B@x) %.0f flops "
                "(%.0f saved)", r->flops_before, r->flops_after,
                r->flops_before - r->flops_after);
    cr_expect_eq(kiln_test_count_op(g, "matmul"), 2);
    const kiln_node *y = &g->nodes[kiln_graph_find(g, "y")];
    cr_expect_eq(y->inputs[0], kiln_graph_find(g, "A"));
    const kiln_node *bx = &g->nodes[y->inputs[1]];
    cr_assert_eq(bx->op, KILN_OP_MATMUL);
    cr_expect_eq(bx->inputs[0], kiln_graph_find(g, "B"));
    cr_expect_eq(bx->inputs[1], kiln_graph_find(g, "x"));
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

Test(simplify, matmul_chain_left)
{
    kiln_graph *g = kiln_graph_new("chainl");
    int64_t sa[] = {64, 64}, sv[] = {1, 64};
    kiln_value v = kiln_input(g, "v", KILN_F64, 2, sv);
    kiln_value A = kiln_input(g, "A", KILN_F64, 2, sa);
    kiln_value B = kiln_input(g, "B", KILN_F64, 2, sa);
    kiln_set_output(g, kiln_matmul(g, v, kiln_matmul(g, A, B, 0, 0), 0, 0), "y");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_assert_eq(st.nrecords, 1);
    cr_expect_eq(st.records[0].kind, KILN_SIMPLIFY_MATMUL_LEFT);
    cr_expect_lt(st.records[0].flops_after, st.records[0].flops_before);
    const kiln_node *y = &g->nodes[kiln_graph_find(g, "y")];
    cr_expect_eq(y->inputs[1], kiln_graph_find(g, "B"));
    cr_expect_eq(g->nodes[y->inputs[0]].inputs[0], kiln_graph_find(g, "v"));
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* A chain of three: both products end up on the vector side. */
Test(simplify, matmul_chain_of_three)
{
    kiln_graph *g = kiln_graph_new("chain3");
    int64_t sa[] = {32, 32}, sx[] = {32, 2};
    kiln_value A = kiln_input(g, "A", KILN_F64, 2, sa);
    kiln_value B = kiln_input(g, "B", KILN_F64, 2, sa);
    kiln_value C = kiln_input(g, "C", KILN_F64, 2, sa);
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, sx);
    kiln_value abc = kiln_matmul(g, kiln_matmul(g, kiln_matmul(g, A, B, 0, 0), C, 0, 0), x, 0, 0);
    kiln_set_output(g, abc, "y");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_geq(st.reassociated, 2);
    cr_expect_eq(st.matmul_flops_after, 3 * 2.0 * 32 * 32 * 2);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* Not reassociated: a named intermediate, one read twice, a transposed
 * operand, and a chain already in its cheaper order. */
Test(simplify, matmul_chain_negative)
{
    kiln_graph *g = kiln_graph_new("chainneg");
    int64_t sa[] = {16, 16}, sx[] = {16, 1};
    kiln_value A = kiln_input(g, "A", KILN_F64, 2, sa);
    kiln_value B = kiln_input(g, "B", KILN_F64, 2, sa);
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, sx);
    kiln_value ab = kiln_matmul(g, A, B, 0, 0);
    kiln_node_set_name(g, ab, "ab");
    kiln_set_output(g, kiln_matmul(g, ab, x, 0, 0), "named");
    kiln_value ab2 = kiln_matmul(g, B, A, 0, 0);
    kiln_set_output(g, kiln_matmul(g, ab2, x, 0, 0), "shared");
    kiln_set_output(g, kiln_exp(g, ab2), "shared2");
    kiln_value abt = kiln_matmul(g, A, B, 1, 0);
    kiln_set_output(g, kiln_matmul(g, abt, x, 0, 0), "transposed");
    kiln_set_output(g, kiln_matmul(g, A, kiln_matmul(g, B, x, 0, 0), 0, 0), "cheap");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.reassociated, 0);
    cr_expect_eq(kiln_test_count_op(g, "matmul"), 8);
    cr_expect_eq(st.matmul_flops_after, st.matmul_flops_before);
    cr_expect_eq(g->nodes[kiln_graph_find(g, "ab")].op, KILN_OP_MATMUL);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* ---- 4. constant-weight linear maps ---- */

static kiln_value const_leaf(kiln_graph *g, const char *name, int64_t r, int64_t c)
{
    int64_t s[2] = {r, c};
    return kiln_build_leaf(g, KILN_ROLE_CONST, name, KILN_F64, c ? 2 : 1, s, 0, NULL);
}

/* y = (x @ W1^T + b1) @ W2^T + b2 with W1 [h,in], W2 [o,h]. */
static kiln_graph *two_linear(int64_t batch, int64_t in, int64_t h, int64_t o, bool bias,
                              kiln_role wrole, bool relu)
{
    kiln_graph *g = kiln_graph_new("lin");
    int64_t sx[] = {batch, in}, sw1[] = {h, in}, sw2[] = {o, h};
    kiln_value x = kiln_input(g, "x", KILN_F64, 2, sx);
    kiln_value w1 = kiln_build_leaf(g, wrole, "W1", KILN_F64, 2, sw1, 0, NULL);
    kiln_value w2 = kiln_build_leaf(g, wrole, "W2", KILN_F64, 2, sw2, 0, NULL);
    kiln_value t = kiln_matmul(g, x, w1, 0, 1);
    if (bias) t = kiln_add(g, t, const_leaf(g, "b1", h, 0));
    if (relu) t = kiln_relu(g, t);
    kiln_value y = kiln_matmul(g, t, w2, 0, 1);
    if (bias) y = kiln_add(g, y, const_leaf(g, "b2", o, 0));
    cr_assert_geq(y, 0, "%s", kiln_graph_error(g));
    kiln_set_output(g, y, "y");
    return g;
}

Test(simplify, linear_fold_constant_weights)
{
    /* B=64, 8 -> 64 -> 8: 2*64*8*64 + 2*64*64*8 = 131072 flops become
     * 2*8*64*8 (W2@W1) + 2*64*8*8 = 16384 */
    kiln_graph *g = two_linear(64, 8, 64, 8, false, KILN_ROLE_CONST, false);
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.linear_folds, 1);
    cr_assert_eq(st.nrecords, 1);
    cr_expect_eq(st.records[0].kind, KILN_SIMPLIFY_LINEAR_FOLD);
    cr_expect_eq(st.records[0].flops_before, 131072.0);
    cr_expect_eq(st.records[0].flops_after, 16384.0);
    cr_expect_eq(st.matmul_flops_after, 16384.0);
    cr_expect_eq(kiln_test_count_op(g, "matmul"), 2);
    const kiln_node *y = &g->nodes[kiln_graph_find(g, "y")];
    cr_expect_eq(y->inputs[0], kiln_graph_find(g, "x"));
    cr_expect_eq(kiln_attr_get_int(y, "tb"), 1);
    const kiln_node *w = &g->nodes[y->inputs[1]];
    cr_assert_eq(w->op, KILN_OP_MATMUL);
    cr_expect_eq(w->inputs[0], kiln_graph_find(g, "W2"));
    cr_expect_eq(w->inputs[1], kiln_graph_find(g, "W1"));
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

Test(simplify, linear_fold_with_biases)
{
    kiln_graph *g = two_linear(64, 8, 64, 8, true, KILN_ROLE_CONST, false);
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.linear_folds, 1);
    /* W2@W1, x@W^T, b1@W2^T */
    cr_expect_eq(kiln_test_count_op(g, "matmul"), 3);
    cr_expect_eq(kiln_test_count_op(g, "add"), 2);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* Not folded: parameters (trainable), a relu between the maps, and a batch
 * too small for W2@W1 to pay. */
Test(simplify, linear_fold_negative)
{
    kiln_graph *gs[3] = {two_linear(64, 8, 64, 8, true, KILN_ROLE_PARAM, false),
                         two_linear(64, 8, 64, 8, true, KILN_ROLE_CONST, true),
                         two_linear(1, 32, 32, 32, false, KILN_ROLE_CONST, false)};
    for (int i = 0; i < 3; i++) {
        int before_mm = kiln_test_count_op(gs[i], "matmul");
        kiln_simplify_stats st;
        kiln_graph *before = simplify(gs[i], &st);
        cr_expect_eq(st.linear_folds, 0, "case %d", i);
        cr_expect_eq(kiln_test_count_op(gs[i], "matmul"), before_mm, "case %d", i);
        expect_equivalent(before, gs[i]);
        kiln_graph_free(before);
        kiln_graph_free(gs[i]);
    }
}

/* ---- negative tests and tags ---- */

/* x[3] * ones[2,3] broadcasts x: not x, so it stays; x*0 stays (NaN*0). */
Test(simplify, broadcasting_identity_kept)
{
    kiln_graph *g = kiln_graph_new("bcast");
    int64_t s[] = {3}, s2[] = {2, 3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 1, s);
    kiln_value ones = kiln_broadcast_to(g, cst(g, 1), 2, s2);
    kiln_set_output(g, kiln_mul(g, x, ones), "wide");
    kiln_set_output(g, kiln_add(g, kiln_broadcast_to(g, cst(g, 0), 2, s2), x), "wide0");
    kiln_set_output(g, kiln_mul(g, kiln_exp(g, x), cst(g, 0)), "zero");
    kiln_simplify_stats st;
    kiln_graph *before = simplify(g, &st);
    cr_expect_eq(st.identities, 0);
    cr_expect_eq(kiln_test_count_op(g, "mul"), 2);
    cr_expect_eq(kiln_test_count_op(g, "add"), 1);
    cr_expect_eq(g->nodes[kiln_graph_find(g, "wide")].rank, 2);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* A named intermediate is never removed: when it simplifies to a leaf it is
 * kept; when it simplifies to an untagged computed node, its name moves
 * there. An output that is x*1 of a leaf stays an output. */
Test(simplify, named_intermediate_kept)
{
    kiln_graph *g = kiln_graph_new("named");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 1, s);
    kiln_value h = kiln_mul(g, x, cst(g, 1));
    kiln_node_set_name(g, h, "h");
    kiln_value e = kiln_exp(g, x);
    kiln_value k = kiln_add(g, e, cst(g, 0));
    kiln_node_set_name(g, k, "k");
    kiln_set_output(g, kiln_add(g, h, k), "out");
    kiln_set_output(g, kiln_mul(g, x, cst(g, 1)), "xout");
    kiln_graph *before = simplify(g, NULL);
    int32_t hid = kiln_graph_find(g, "h"), kid = kiln_graph_find(g, "k");
    cr_assert_geq(hid, 0);
    cr_expect_eq(g->nodes[hid].op, KILN_OP_MUL);
    cr_assert_geq(kid, 0);
    cr_expect_eq(g->nodes[kid].op, KILN_OP_EXP); /* the name moved to exp(x) */
    int32_t xo = kiln_graph_find(g, "xout");
    cr_assert_geq(xo, 0);
    cr_expect_eq(g->nodes[xo].role, KILN_ROLE_OUTPUT);
    /* h*1 with tags, exp, k's add dropped: x, const, h, exp, out, xout */
    cr_expect_eq(kiln_test_count_op(g, "add"), 1);
    cr_expect_eq(kiln_test_count_op(g, "mul"), 2);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* An output that simplifies to an untagged node passes its role there. */
Test(simplify, output_role_moves)
{
    kiln_graph *g = kiln_graph_new("moves");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 1, s);
    kiln_value r = kiln_relu(g, x);
    kiln_set_output(g, kiln_neg(g, kiln_neg(g, r)), "out");
    kiln_graph *before = simplify(g, NULL);
    cr_expect_eq(g->nnodes, 2);
    int32_t o = kiln_graph_find(g, "out");
    cr_assert_geq(o, 0);
    cr_expect_eq(g->nodes[o].op, KILN_OP_RELU);
    cr_expect_eq(g->nodes[o].role, KILN_ROLE_OUTPUT);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

/* Nothing reads a parameter after its assign: neg(neg(p)) after the
 * assign of p is not turned into a read of p. */
Test(simplify, no_read_after_assign)
{
    kiln_graph *g = kiln_graph_new("assign");
    int64_t s[] = {3};
    kiln_value p = kiln_param(g, "p", KILN_F64, 1, s, KILN_INIT_ZEROS, 0);
    kiln_value n1 = kiln_neg(g, p);
    kiln_value a = kiln_b2(g, KILN_OP_ASSIGN, p, kiln_mul(g, n1, cst(g, 2)));
    cr_assert_geq(a, 0, "%s", kiln_graph_error(g));
    kiln_value n2 = kiln_neg(g, n1);
    kiln_set_output(g, kiln_exp(g, n2), "out");
    kiln_graph *before = simplify(g, NULL);
    cr_expect_eq(kiln_test_count_op(g, "neg"), 2);
    expect_equivalent(before, g);
    kiln_graph_free(before);
    kiln_graph_free(g);
}

Test(simplify, by_name_in_pipeline)
{
    kiln_graph *g = kiln_graph_new("pipe");
    int64_t s[] = {3};
    kiln_value x = kiln_input(g, "x", KILN_F64, 1, s);
    kiln_set_output(g, kiln_mul(g, kiln_exp(g, x), cst(g, 1)), "out");
    cr_assert_eq(kiln_run_pass(g, "simplify"), KILN_OK, "%s", kiln_graph_error(g));
    cr_expect_eq(kiln_test_count_op(g, "mul"), 0);
    cr_expect_eq(kiln_run_pass(g, "fold"), KILN_ERR_NOT_FOUND);
    cr_expect_str_eq(kiln_graph_error(g),
                     "unknown pass 'fold' (passes: infer, simplify, cse, dce, train_mode, "
                     "eval_mode, conv_lower)");
    kiln_graph_free(g);
}

/* ---- the MLP training program ---- */

static void keep_optimizer_graph(const char *pass, const kiln_graph *g, void *user)
{
    if (!strcmp(pass, "optimizer")) *(kiln_graph **)user = kiln_graph_clone(g);
}

static const hp mlp_hps[] = {{"lr", 1e-2}, {"mom", 0.9}, {"beta2", 0.99}, {"eps", 1e-8},
                             {"wd", 1e-2}, {"step", 3}};

/* The training program (simplify, cse, dce) gives the same loss, gradients
 * and updated parameters and optimizer state as the assembled program
 * before any of those passes; and simplify alone on that program too. */
static void mlp_case(kiln_optimizer opt)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F64);
    kiln_graph *raw = NULL, *t = NULL;
    kiln_train_options o = kiln_train_defaults();
    o.optimizer = opt;
    o.keep_grads = 1;
    o.after_pass = keep_optimizer_graph;
    o.user = &raw;
    cr_assert_eq(kiln_train_program(g, &o, &t), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_not_null(raw);
    cr_expect_eq(kiln_graph_verify(t), KILN_OK, "%s", kiln_graph_error(t));
    /* loss, 4 gradients, 4 params and their state */
    int n = expect_equivalent_hp(raw, t, mlp_hps, 6);
    cr_expect_eq(n, 1 + 4 + (opt == KILN_OPT_ADAMW ? 12 : 8));

    kiln_graph *s = kiln_graph_clone(raw);
    kiln_simplify_stats st;
    cr_assert_eq(kiln_pass_simplify_stats(s, &st), KILN_OK, "%s", kiln_graph_error(s));
    cr_log_info("mlp (%s): simplify %d -> %d nodes: %d folded, %d identities, %d matmul "
                "reassociations, %d rounds", opt == KILN_OPT_ADAMW ? "adamw" : "sgd",
                st.nodes_before, st.nodes_after, st.folded, st.identities, st.reassociated,
                st.rounds);
    expect_equivalent_hp(raw, s, mlp_hps, 6);
    /* running it again changes nothing */
    int32_t nn = s->nnodes;
    cr_assert_eq(kiln_pass_simplify_stats(s, &st), KILN_OK);
    cr_expect_eq(s->nnodes, nn);
    cr_expect_eq(st.folded + st.identities + st.reassociated + st.linear_folds, 0);
    kiln_graph_free(s);
    kiln_graph_free(raw);
    kiln_graph_free(t);
    kiln_graph_free(g);
}

Test(simplify, mlp_train_program_adamw) { mlp_case(KILN_OPT_ADAMW); }
Test(simplify, mlp_train_program_sgd) { mlp_case(KILN_OPT_SGD); }
