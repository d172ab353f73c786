/* tests/test_ops.c — every op in the registry: a forward check against
 * expected values and a central-difference gradient check through autodiff.
 * The cases live in tests/opcases/<family>.c (see tests/opcases.h). */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include "ir/graph.h"
#include "ir/ops.h"
#include "passes/passes.h"
#include "tests/opcases.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CASES 1024

typedef struct family {
    const op_case *cases;
    const int *n;
} family;

static const family families[] = {
    {kiln_opcases_elementwise, &kiln_nopcases_elementwise},
    {kiln_opcases_reduce, &kiln_nopcases_reduce},
    {kiln_opcases_matmul, &kiln_nopcases_matmul},
    {kiln_opcases_shape, &kiln_nopcases_shape},
    {kiln_opcases_loss, &kiln_nopcases_loss},
    {kiln_opcases_conv, &kiln_nopcases_conv},
    {kiln_opcases_norm, &kiln_nopcases_norm},
    {kiln_opcases_pool, &kiln_nopcases_pool},
};

static int total_cases(void)
{
    int t = 0;
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) t += *families[f].n;
    return t;
}

static const op_case *case_at(int i)
{
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        if (i < *families[f].n) return &families[f].cases[i];
        i -= *families[f].n;
    }
    return NULL;
}

/* A small deterministic generator (xorshift), so cases are reproducible. */
static uint64_t rng_state;
static double rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static double *input_values(const op_input *in)
{
    int64_t n = 1;
    for (int i = 0; i < in->rank; i++) n *= in->shape[i];
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert(v);
    double lo = in->lo, hi = in->hi;
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    bool isint = !(in->dtype == KILN_F32 || in->dtype == KILN_F64);
    for (int64_t i = 0; i < n; i++) {
        if (in->data) v[i] = in->data[i];
        else if (isint) v[i] = floor(lo + rnd() * (hi - lo));
        else v[i] = lo + rnd() * (hi - lo);
    }
    return v;
}

/* Builds leaves for the case's inputs and applies the op. grad_mode turns
 * float inputs into f64 parameters. Returns the op's node id. */
static kiln_value build_case(kiln_graph *g, const op_case *c, bool grad_mode, kiln_value *leaves)
{
    for (int i = 0; i < c->ninputs; i++) {
        const op_input *in = &c->in[i];
        char name[16];
        snprintf(name, sizeof name, "in%d", i);
        bool isfloat = in->dtype == KILN_F32 || in->dtype == KILN_F64;
        if (grad_mode && isfloat)
            leaves[i] = kiln_param(g, name, KILN_F64, in->rank, in->shape, KILN_INIT_ZEROS, 0);
        else
            leaves[i] = kiln_input(g, name, in->dtype, in->rank, in->shape);
        cr_assert_geq(leaves[i], 0, "%s: input %d: %s", c->name, i, kiln_graph_error(g));
    }
    kiln_value y = kiln_op(g, c->op, c->ninputs, leaves, c->nattrs, c->attrs);
    cr_assert_geq(y, 0, "%s: building %s: %s", c->name, c->op, kiln_graph_error(g));
    return y;
}

ParameterizedTestParameters(ops, forward)
{
    static int idx[MAX_CASES];
    int n = total_cases();
    for (int i = 0; i < n && i < MAX_CASES; i++) idx[i] = i;
    return cr_make_param_array(int, idx, (size_t)(n < MAX_CASES ? n : MAX_CASES));
}

ParameterizedTest(int *ip, ops, forward)
{
    const op_case *c = case_at(*ip);
    if (!c->expected) return;
    rng_state = 0x9E3779B97F4A7C15ull + (uint64_t)*ip;
    kiln_graph *g = kiln_graph_new(c->name);
    kiln_value leaves[4];
    kiln_value y = build_case(g, c, false, leaves);
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s: %s", c->name, kiln_graph_error(g));
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (int i = 0; i < c->ninputs; i++) {
        double *v = input_values(&c->in[i]);
        int64_t n = 1;
        for (int d = 0; d < c->in[i].rank; d++) n *= c->in[i].shape[d];
        cr_assert_eq(kiln_interp_set(it, leaves[i], v, (size_t)n), KILN_OK, "%s: %s", c->name,
                     kiln_interp_error(it));
        free(v);
    }
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s: %s", c->name, kiln_interp_error(it));
    int64_t n = kiln_node_numel(&g->nodes[y]);
    cr_assert_eq(n, c->nexpected, "%s: %lld outputs, %lld expected", c->name, (long long)n,
                 (long long)c->nexpected);
    const double *out = kiln_interp_value(it, y);
    for (int64_t i = 0; i < n; i++) {
        double e = c->expected[i], a = out[i];
        bool ok = (isnan(e) && isnan(a)) || e == a || fabs(a - e) <= 1e-6 * fmax(1.0, fabs(e));
        cr_expect(ok, "%s: element %lld is %.9g, expected %.9g", c->name, (long long)i, a, e);
    }
    kiln_interp_free(it);
    kiln_graph_free(g);
}

ParameterizedTestParameters(ops, gradient)
{
    static int idx[MAX_CASES];
    int n = total_cases();
    for (int i = 0; i < n && i < MAX_CASES; i++) idx[i] = i;
    return cr_make_param_array(int, idx, (size_t)(n < MAX_CASES ? n : MAX_CASES));
}

static double loss_of(kiln_interp *it, kiln_value loss)
{
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    return kiln_interp_value(it, loss)[0];
}

ParameterizedTest(int *ip, ops, gradient)
{
    const op_case *c = case_at(*ip);
    if (c->no_grad) return;
    rng_state = 0xD1B54A32D192ED03ull + (uint64_t)*ip;
    kiln_graph *g = kiln_graph_new(c->name);
    kiln_value leaves[4];
    kiln_value y = build_case(g, c, true, leaves);
    const kiln_node *yn = &g->nodes[y];
    cr_assert(yn->dtype == KILN_F64, "%s: gradient check needs a float output", c->name);
    int64_t yshape[KILN_MAX_RANK];
    memcpy(yshape, yn->shape, sizeof yshape);
    int yrank = yn->rank;
    kiln_value w = kiln_input(g, "w", KILN_F64, yrank, yshape);
    kiln_value loss = kiln_reduce_sum(g, kiln_mul(g, y, w), 0, NULL, 0);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));

    int32_t wrt[4], grads[4], nw = 0;
    for (int i = 0; i < c->ninputs; i++)
        if (g->nodes[leaves[i]].role == KILN_ROLE_PARAM) wrt[nw++] = leaves[i];
    cr_assert_eq(kiln_autodiff(g, loss, nw, wrt, grads), KILN_OK, "%s: %s", c->name,
                 kiln_graph_error(g));
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s: %s", c->name, kiln_graph_error(g));

    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    double *vals[4] = {0};
    int64_t counts[4];
    for (int i = 0; i < c->ninputs; i++) {
        op_input in = c->in[i];
        vals[i] = input_values(&in);
        counts[i] = kiln_shape_numel(in.rank, in.shape);
        cr_assert_eq(kiln_interp_set(it, leaves[i], vals[i], (size_t)counts[i]), KILN_OK);
    }
    int64_t nw_el = kiln_shape_numel(yrank, yshape);
    double *wv = malloc((size_t)(nw_el ? nw_el : 1) * sizeof *wv);
    for (int64_t i = 0; i < nw_el; i++) wv[i] = 0.5 + rnd();
    cr_assert_eq(kiln_interp_set(it, w, wv, (size_t)nw_el), KILN_OK);
    loss_of(it, loss);

    for (int k = 0, li = 0; k < nw; k++) {
        while (leaves[li] != wrt[k]) li++;
        int64_t n = counts[li];
        double *analytic = malloc((size_t)(n ? n : 1) * sizeof(double));
        loss_of(it, loss); /* the previous input's probes left stale values */
        memcpy(analytic, kiln_interp_value(it, grads[k]), (size_t)n * sizeof(double));
        double maxerr = 0, maxref = 0;
        for (int64_t e = 0; e < n; e++) {
            double x0 = vals[li][e], h = 1e-6 * fmax(1.0, fabs(x0));
            vals[li][e] = x0 + h;
            kiln_interp_set(it, wrt[k], vals[li], (size_t)n);
            double lp = loss_of(it, loss);
            vals[li][e] = x0 - h;
            kiln_interp_set(it, wrt[k], vals[li], (size_t)n);
            double lm = loss_of(it, loss);
            vals[li][e] = x0;
            kiln_interp_set(it, wrt[k], vals[li], (size_t)n);
            double numeric = (lp - lm) / (2 * h);
            maxerr = fmax(maxerr, fabs(numeric - analytic[e]));
            maxref = fmax(maxref, fmax(fabs(numeric), fabs(analytic[e])));
        }
        double rel = maxerr / fmax(maxref, 1e-8);
        cr_expect_lt(rel, 1e-6, "%s: input %d: gradient relative error %.3g", c->name, li, rel);
        free(analytic);
        li++;
    }
    for (int i = 0; i < c->ninputs; i++) free(vals[i]);
    free(wv);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

/* Every op has a forward case, and a gradient case when it has a gradient rule. */
Test(ops, registry_coverage)
{
    int n = total_cases();
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        const kiln_op_info *info = &kiln_ops[op];
        if (info->fusion == KILN_FUSE_LEAF || op == KILN_OP_ASSIGN) continue;
        bool fwd = false, grad = false;
        for (int i = 0; i < n; i++) {
            const op_case *c = case_at(i);
            if (strcmp(c->op, info->name) != 0) continue;
            fwd |= c->expected != NULL;
            grad |= !c->no_grad;
        }
        cr_expect(fwd, "op '%s' has no forward test case", info->name);
        if (info->grad != kiln_nograd)
            cr_expect(grad, "op '%s' has a gradient rule but no gradient case", info->name);
    }
}
