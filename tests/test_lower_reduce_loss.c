/* tests/test_lower_reduce_loss.c — the lowering rules of the reductions,
 * softmax, the losses and one_hot (codegen/lower_reduce.c,
 * codegen/lower_loss.c), checked without the C emitter.
 *
 * The kernel-IR evaluator of tests/kernel_eval.c runs a kernel on double
 * buffers, rounding every expression to its dtype as the generated C would
 * (f32 arithmetic is f64 arithmetic rounded to float, which is exact for
 * + - * /), flagging any load or store outside its buffer, and type-checking
 * the kernel first (the operand dtypes the emitter may rely on). Each case
 * builds a one-op graph, runs it through the reference interpreter and
 * through the lowered kernel, and compares: the same values (NaN where the
 * reference has NaN), or the same failure (a label outside [0, C) is a
 * kernel check).
 * Sizes 1, 3, 7 and 17 appear along reduced and kept axes.
 *
 * KILN_PRINT_KERNELS=1 prints one kernel of each op, to read by eye. */
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "ir/kernel.h"
#include "ir/ops.h"
#include "tests/kernel_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- random numbers (xorshift64*, fixed seeds) ---- */

static uint64_t rng = 88172645463325252ull;

static double urand(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

/* ---- cases: one op on random leaves, interpreter vs kernel ---- */

typedef struct leaf {
    kiln_dtype t;
    int rank;
    int64_t shape[KILN_MAX_RANK];
    double lo, hi;    /* values uniform in [lo, hi); integers: floor of that */
    double p_special; /* floats: this share are NaN, -inf or +inf */
    const double *data; /* fixed values instead, when not NULL */
} leaf;

static void fill(const leaf *l, double *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (l->data) {
            v[i] = l->data[i];
            continue;
        }
        double u = l->lo + (l->hi - l->lo) * urand();
        v[i] = keval_is_int(l->t) ? floor(u) : u;
        if (kiln_dtype_is_float(l->t) && urand() < l->p_special) {
            double w = urand();
            v[i] = w < 0.4 ? NAN : w < 0.8 ? -INFINITY : INFINITY;
        }
    }
}

static void describe(char *d, size_t len, const char *op, int nin, const leaf *in, int nattrs,
                     const char *const *attrs)
{
    size_t o = (size_t)snprintf(d, len, "%s(", op);
    for (int j = 0; j < nin && o < len; j++) {
        char s[128];
        o += (size_t)snprintf(d + o, len - o, "%s%s", j ? ", " : "",
                              kiln_shape_str(in[j].t, in[j].rank, in[j].shape, s, sizeof s));
    }
    for (int a = 0; a < nattrs && o < len; a++)
        o += (size_t)snprintf(d + o, len - o, ", %s", attrs[a]);
    if (o < len) snprintf(d + o, len - o, ")");
}

static bool close_to(double k, double r, kiln_dtype t)
{
    if (isnan(r)) return isnan(k);
    if (isinf(r)) return k == r;
    double tol = t == KILN_F32 ? 1e-6 : t == KILN_F64 ? 1e-12 : 0;
    return fabs(k - r) <= tol * fmax(1.0, fabs(r));
}

static int print_kernels = -1;

/* Runs op(in...) with attrs through the interpreter and the lowered kernel
 * and compares them. Returns 0 when both computed the same values, or the
 * kernel's check code when both failed (the reference's error and a kernel
 * check must agree). */
static int run_case(const char *op, int nin, const leaf *in, int nattrs,
                    const char *const *attrs)
{
    char desc[512], err[512];
    describe(desc, sizeof desc, op, nin, in, nattrs, attrs);
    kiln_graph *g = kiln_graph_new("case");
    kiln_value ins[4];
    double *data[4];
    for (int j = 0; j < nin; j++) {
        char name[16];
        snprintf(name, sizeof name, "x%d", j);
        ins[j] = kiln_input(g, name, in[j].t, in[j].rank, in[j].shape);
        cr_assert_geq(ins[j], 0, "%s: %s", desc, kiln_graph_error(g));
        int64_t n = kiln_shape_numel(in[j].rank, in[j].shape);
        data[j] = malloc((size_t)(n ? n : 1) * sizeof(double));
        fill(&in[j], data[j], n);
    }
    kiln_value node = kiln_op(g, op, nin, ins, nattrs, attrs);
    cr_assert_geq(node, 0, "%s: %s", desc, kiln_graph_error(g));

    /* the reference */
    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (int j = 0; j < nin; j++) {
        cr_assert_eq(kiln_interp_set(it, ins[j], data[j],
                                     (size_t)kiln_shape_numel(in[j].rank, in[j].shape)),
                     KILN_OK, "%s: %s", desc, kiln_interp_error(it));
        free(data[j]);
    }
    kiln_status ref_st = kiln_interp_run(it);

    /* the kernel, on the interpreter's (dtype-rounded) inputs */
    kiln_kernel *k = NULL;
    kiln_status st = kiln_lower_node(g, node, &k, err, sizeof err);
    cr_assert_eq(st, KILN_OK, "%s: lowering failed: %s", desc, err);
    cr_assert_not_null(k, "%s: no kernel", desc);
    if (print_kernels < 0) print_kernels = getenv("KILN_PRINT_KERNELS") != NULL;
    if (print_kernels > 0) {
        static char printed[KILN_OP_COUNT];
        if (!printed[g->nodes[node].op]++) kiln_kernel_print(k, stdout);
    }
    keval e;
    cr_assert(keval_init(&e, k), "%s: out of memory", desc);
    int32_t outb = -1;
    for (int32_t b = 0; b < k->nbufs; b++) {
        const kiln_node *bn = &g->nodes[k->bufs[b].node];
        cr_assert_eq(e.len[b], kiln_node_numel(bn), "%s: b%d holds %lld elements, its node %lld",
                     desc, b, (long long)e.len[b], (long long)kiln_node_numel(bn));
        if (k->bufs[b].written) {
            cr_assert_eq(k->bufs[b].node, node, "%s: the kernel writes b%d, not its output", desc,
                         b);
            outb = b;
            for (int64_t i = 0; i < e.len[b]; i++) e.buf[b][i] = 12345.0; /* never a result */
        } else {
            cr_assert(kiln_node_is_leaf(bn), "%s: the kernel reads b%d, not an input", desc, b);
            memcpy(e.buf[b], kiln_interp_value(it, k->bufs[b].node),
                   (size_t)e.len[b] * sizeof(double));
        }
    }
    cr_assert_geq(outb, 0, "%s: the kernel writes no buffer", desc);
    keval_typecheck(&e);
    cr_assert_eq(e.err[0], 0, "%s: %s", desc, e.err);
    int rc = keval_run(&e);
    cr_assert_eq(e.err[0], 0, "%s: %s", desc, e.err);

    if (ref_st) {
        cr_assert_gt(rc, 0, "%s: the reference failed (%s) but the kernel did not", desc,
                     kiln_interp_error(it));
        cr_assert(strstr(k->check_msg[rc - 1], "outside [0, C)"), "%s: check %d: %s", desc, rc,
                  k->check_msg[rc - 1]);
    } else {
        cr_assert_eq(rc, 0, "%s: check %d failed (%s) but the reference computed", desc, rc,
                     rc > 0 && rc <= k->nchecks ? k->check_msg[rc - 1] : "?");
        const double *ref = kiln_interp_value(it, node);
        kiln_dtype t = (kiln_dtype)g->nodes[node].dtype;
        for (int64_t i = 0; i < e.len[outb]; i++)
            cr_assert(close_to(e.buf[outb][i], ref[i], t),
                      "%s: element %lld: kernel %.17g, reference %.17g", desc, (long long)i,
                      e.buf[outb][i], ref[i]);
    }
    keval_fini(&e);
    kiln_kernel_free(k);
    kiln_interp_free(it);
    kiln_graph_free(g);
    return rc;
}

/* ---- shapes the sweeps walk: sizes 1, 3, 7 and 17, ranks 0 to 4 ---- */

typedef struct shape {
    int rank;
    int64_t d[KILN_MAX_RANK];
} shape;

static const shape shapes[] = {
    {0, {0}},          {1, {1}},          {1, {17}},         {2, {3, 7}},
    {2, {7, 1}},       {2, {1, 17}},      {2, {17, 3}},      {3, {3, 7, 17}},
    {3, {1, 3, 1}},    {3, {7, 1, 3}},    {4, {3, 1, 7, 3}}, {4, {1, 3, 3, 7}},
};
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

static leaf leaf_of(const shape *s, kiln_dtype t, double lo, double hi, double p_special)
{
    leaf l = {.t = t, .rank = s->rank, .lo = lo, .hi = hi, .p_special = p_special};
    memcpy(l.shape, s->d, sizeof l.shape);
    return l;
}

/* "axes=[...]" for the axes in mask `m` of a rank-r input, each written as
 * a negative axis now and then, the list reversed now and then (the shape
 * rule normalises both). */
static void axes_attr(char *buf, size_t len, int r, unsigned m)
{
    int64_t ax[KILN_MAX_RANK];
    int n = 0;
    for (int d = 0; d < r; d++)
        if (m >> d & 1) ax[n++] = urand() < 0.3 ? d - r : d;
    if (urand() < 0.3)
        for (int i = 0; i < n / 2; i++) {
            int64_t t = ax[i];
            ax[i] = ax[n - 1 - i];
            ax[n - 1 - i] = t;
        }
    size_t o = (size_t)snprintf(buf, len, "axes=[");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)ax[i]);
    snprintf(buf + o, len - o, "]");
}

/* ---- reductions ---- */

/* Every subset of axes (the empty one: every axis), keepdims 0 and 1. */
static void sweep_reduce(const char *op, const kiln_dtype *dtypes, int ndt)
{
    for (int si = 0; si < NSHAPES; si++)
        for (int di = 0; di < ndt; di++)
            for (unsigned m = 0; m < 1u << shapes[si].rank; m++)
                for (int keep = 0; keep < 2; keep++) {
                    kiln_dtype t = dtypes[di];
                    leaf l = t == KILN_U8 ? leaf_of(&shapes[si], t, 0, 256, 0)
                             : keval_is_int(t)  ? leaf_of(&shapes[si], t, -60, 60, 0)
                                          : leaf_of(&shapes[si], t, -3, 3, 0.04);
                    char axes[64], kd[16];
                    axes_attr(axes, sizeof axes, shapes[si].rank, m);
                    snprintf(kd, sizeof kd, "keepdims=%d", keep);
                    const char *attrs[] = {axes, kd};
                    run_case(op, 1, &l, 2, attrs);
                }
}

Test(lower_reduce, reduce_sum)
{
    kiln_dtype t[] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64};
    sweep_reduce("reduce_sum", t, 4);
}

Test(lower_reduce, reduce_mean)
{
    kiln_dtype t[] = {KILN_F32, KILN_F64};
    sweep_reduce("reduce_mean", t, 2);
}

Test(lower_reduce, reduce_max)
{
    kiln_dtype t[] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8};
    sweep_reduce("reduce_max", t, 5);
}

/* Large f32 sums: the f64 accumulator rounds once, as the reference. */
Test(lower_reduce, f32_sum_rounds_once)
{
    leaf l = {.t = KILN_F32, .rank = 2, .shape = {3, 4099}, .lo = 0, .hi = 1e4};
    const char *attrs[] = {"axes=[1]"};
    run_case("reduce_sum", 1, &l, 1, attrs);
    run_case("reduce_mean", 1, &l, 1, attrs);
}

/* NaN and -inf placed by hand: NaN wins a max wherever it is; -inf alone. */
Test(lower_reduce, max_nan_and_inf)
{
    static const double v[] = {1, NAN, 3, -INFINITY, -INFINITY, -INFINITY, NAN, -2, -1, 5, 4, NAN};
    leaf l = {.t = KILN_F32, .rank = 2, .shape = {4, 3}, .data = v};
    const char *rows[] = {"axes=[1]"}, *cols[] = {"axes=[0]"};
    run_case("reduce_max", 1, &l, 1, rows);
    run_case("reduce_max", 1, &l, 1, cols);
    run_case("argmax", 1, &l, 0, NULL);
    const char *ax0[] = {"axis=0"};
    run_case("argmax", 1, &l, 1, ax0);
}

/* Every axis, keepdims 0 and 1; few distinct values (ties: the first index
 * wins) and NaNs (the first NaN wins). */
Test(lower_reduce, argmax)
{
    kiln_dtype dtypes[] = {KILN_F32, KILN_F64, KILN_I32, KILN_U8};
    for (int si = 0; si < NSHAPES; si++)
        for (int di = 0; di < 4; di++)
            for (int axis = 0; axis < shapes[si].rank; axis++)
                for (int keep = 0; keep < 2; keep++) {
                    leaf l = leaf_of(&shapes[si], dtypes[di], 0, 4, 0.08);
                    char ax[32], kd[16];
                    snprintf(ax, sizeof ax, "axis=%d", urand() < 0.3 ? axis - shapes[si].rank
                                                                     : axis);
                    snprintf(kd, sizeof kd, "keepdims=%d", keep);
                    const char *attrs[] = {ax, kd};
                    run_case("argmax", 1, &l, 2, attrs);
                }
}

static void sweep_softmax(const char *op)
{
    kiln_dtype dtypes[] = {KILN_F32, KILN_F64};
    for (int si = 1; si < NSHAPES; si++)
        for (int di = 0; di < 2; di++)
            for (int axis = 0; axis < shapes[si].rank; axis++) {
                leaf l = leaf_of(&shapes[si], dtypes[di], -20, 20, 0.03);
                char ax[32];
                snprintf(ax, sizeof ax, "axis=%d", urand() < 0.3 ? axis - shapes[si].rank : axis);
                const char *attrs[] = {ax};
                run_case(op, 1, &l, 1, attrs);
            }
    /* rows: all -inf (0/0: NaN), one NaN, one +inf, finite */
    static const double v[] = {-INFINITY, -INFINITY, -INFINITY, 1, NAN,      2,
                               3,         INFINITY,  -1,        1, -INFINITY, 700};
    leaf l = {.t = KILN_F64, .rank = 2, .shape = {4, 3}, .data = v};
    run_case(op, 1, &l, 0, NULL);
    l.t = KILN_F32;
    run_case(op, 1, &l, 0, NULL);
}

Test(lower_reduce, softmax) { sweep_softmax("softmax"); }
Test(lower_reduce, log_softmax) { sweep_softmax("log_softmax"); }

/* ---- losses ---- */

/* Labels uniform in [lo, C) (lo < 0 mixes in ignored ones: negative labels
 * are set to ignore_index below). */
static void ce_case(int xrank, const int64_t *xs, kiln_dtype xt, kiln_dtype lt, int64_t ignore,
                    double p_ignore, double p_special)
{
    leaf x = {.t = xt, .rank = xrank, .lo = -4, .hi = 4, .p_special = p_special};
    memcpy(x.shape, xs, (size_t)xrank * sizeof *xs);
    leaf l = {.t = lt, .rank = xrank - 1};
    l.shape[0] = xs[0];
    memcpy(l.shape + 1, xs + 2, (size_t)(xrank - 2) * sizeof *xs);
    int64_t n = kiln_shape_numel(l.rank, l.shape);
    double *lab = malloc((size_t)(n ? n : 1) * sizeof *lab);
    for (int64_t i = 0; i < n; i++)
        lab[i] = urand() < p_ignore ? (double)ignore : floor(urand() * (double)xs[1]);
    l.data = lab;
    char ign[48];
    snprintf(ign, sizeof ign, "ignore_index=%lld", (long long)ignore);
    const char *attrs[] = {ign};
    cr_assert_eq(run_case("cross_entropy", 2, (leaf[]){x, l}, 1, attrs), 0);
    free(lab);
}

Test(lower_loss, cross_entropy_2d)
{
    static const int64_t sizes[] = {1, 3, 7, 17};
    kiln_dtype lts[] = {KILN_I32, KILN_I64, KILN_U8};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            for (int li = 0; li < 3; li++) {
                int64_t xs[] = {sizes[a], sizes[b]};
                kiln_dtype xt = (a + b + li) % 2 ? KILN_F64 : KILN_F32;
                /* u8 labels cannot be -100: ignore a class in range instead */
                int64_t ignore = lts[li] == KILN_U8 ? sizes[b] / 2 : -100;
                ce_case(2, xs, xt, lts[li], ignore, 0.25, 0);
            }
}

Test(lower_loss, cross_entropy_spatial)
{
    static const int64_t s3[][3] = {{1, 3, 7}, {3, 1, 1}, {7, 17, 3}, {3, 7, 17}};
    static const int64_t s4[][4] = {{2, 3, 2, 2}, {1, 7, 3, 1}, {3, 3, 1, 7}, {17, 1, 3, 3}};
    for (int i = 0; i < 4; i++) {
        ce_case(3, s3[i], KILN_F32, KILN_I64, -100, 0.2, 0);
        ce_case(4, s4[i], i % 2 ? KILN_F64 : KILN_F32, KILN_I32, 1, 0.2, 0);
    }
    int64_t s5[] = {2, 3, 1, 3, 2};
    ce_case(5, s5, KILN_F32, KILN_I64, -100, 0.2, 0);
}

/* Ignored samples do not reach the result, even with NaN or inf logits;
 * every label ignored gives NaN. */
Test(lower_loss, cross_entropy_ignored)
{
    int64_t xs[] = {17, 7};
    ce_case(2, xs, KILN_F32, KILN_I64, -100, 0.5, 0.05);
    ce_case(2, xs, KILN_F64, KILN_I32, -100, 1.0, 0.05); /* all ignored: NaN */
    int64_t x4[] = {3, 3, 2, 3};
    ce_case(4, x4, KILN_F32, KILN_I32, -1, 1.0, 0);
    /* NaN and inf only in ignored samples: a finite mean */
    static const double lgi[] = {0.5, 1, 2, NAN, 1, INFINITY, -1, 0, 3, -INFINITY, NAN, 1};
    static const double lbi[] = {0, -100, 2, -100};
    leaf xi = {.t = KILN_F32, .rank = 2, .shape = {4, 3}, .data = lgi};
    leaf li = {.t = KILN_I32, .rank = 1, .shape = {4}, .data = lbi};
    cr_assert_eq(run_case("cross_entropy", 2, (leaf[]){xi, li}, 0, NULL), 0);
    /* NaN and inf among valid samples' logits: the reference's values */
    static const double lg[] = {NAN, 1, 2, -INFINITY, -INFINITY, -INFINITY, INFINITY, 0, 1, 1, 2, 3};
    static const double lb[] = {1, 2, 0, 2};
    leaf x = {.t = KILN_F64, .rank = 2, .shape = {4, 3}, .data = lg};
    leaf l = {.t = KILN_I64, .rank = 1, .shape = {4}, .data = lb};
    cr_assert_eq(run_case("cross_entropy", 2, (leaf[]){x, l}, 0, NULL), 0);
}

/* A label outside [0, C) that is not ignore_index fails the kernel's check,
 * as it fails the reference, and never reads out of bounds. */
Test(lower_loss, cross_entropy_bad_label)
{
    static const double bad[][4] = {{0, 5, 1, 2}, {0, 1, -1, 2}, {-100, 2, 3, 9}, {4, 3, 2, 1}};
    leaf x = {.t = KILN_F32, .rank = 2, .shape = {4, 5}, .lo = -2, .hi = 2};
    for (int i = 0; i < 4; i++) {
        leaf l = {.t = KILN_I64, .rank = 1, .shape = {4}, .data = bad[i]};
        int rc = run_case("cross_entropy", 2, (leaf[]){x, l}, 0, NULL);
        cr_assert_eq(rc, i == 3 ? 0 : 1, "labels %d", i);
    }
    /* ignore_index in range: other labels are still checked */
    static const double u8bad[] = {0, 2, 7};
    leaf x8 = {.t = KILN_F64, .rank = 2, .shape = {3, 7}, .lo = -2, .hi = 2};
    leaf l8 = {.t = KILN_U8, .rank = 1, .shape = {3}, .data = u8bad};
    const char *ign[] = {"ignore_index=2"};
    cr_assert_eq(run_case("cross_entropy", 2, (leaf[]){x8, l8}, 1, ign), 1);
}

static void sweep_pair_loss(const char *op, double lo, double hi, double tlo, double thi)
{
    kiln_dtype dtypes[] = {KILN_F32, KILN_F64};
    for (int si = 0; si < NSHAPES; si++)
        for (int di = 0; di < 2; di++) {
            leaf a = leaf_of(&shapes[si], dtypes[di], lo, hi, 0);
            leaf b = leaf_of(&shapes[si], dtypes[di], tlo, thi, 0);
            run_case(op, 2, (leaf[]){a, b}, 0, NULL);
        }
}

Test(lower_loss, mse_loss) { sweep_pair_loss("mse_loss", -3, 3, -3, 3); }

Test(lower_loss, bce_with_logits)
{
    sweep_pair_loss("bce_with_logits", -8, 8, 0, 1);
    sweep_pair_loss("bce_with_logits", -60, 60, 0, 1); /* exp(-|x|) stays finite */
    static const double x[] = {40, -40, 0, NAN}, t[] = {0, 1, 0.5, 1};
    leaf a = {.t = KILN_F32, .rank = 1, .shape = {3}, .data = x};
    leaf b = {.t = KILN_F32, .rank = 1, .shape = {3}, .data = t};
    run_case("bce_with_logits", 2, (leaf[]){a, b}, 0, NULL);
    a.shape[0] = b.shape[0] = 4; /* a NaN logit: NaN */
    run_case("bce_with_logits", 2, (leaf[]){a, b}, 0, NULL);
}

/* Every axis of the output (and -1), depths 1, 3 and 7, labels in
 * [-1, depth] (out of range: a row of zeros), several output dtypes. */
Test(lower_loss, one_hot)
{
    static const shape ls[] = {{0, {0}}, {1, {1}}, {1, {17}}, {2, {7, 3}}, {3, {3, 1, 7}}};
    static const int64_t depths[] = {1, 3, 7};
    kiln_dtype lts[] = {KILN_I32, KILN_I64, KILN_U8};
    const char *outs[] = {"dtype=f32", "dtype=f64", "dtype=i64", "dtype=bool"};
    int c = 0;
    for (int si = 0; si < 5; si++)
        for (int di = 0; di < 3; di++)
            for (int axis = -1; axis <= ls[si].rank; axis++, c++) {
                kiln_dtype lt = lts[c % 3];
                leaf l = leaf_of(&ls[si], lt, lt == KILN_U8 ? 0 : -1, (double)depths[di] + 1, 0);
                char dp[32], ax[32];
                snprintf(dp, sizeof dp, "depth=%lld", (long long)depths[di]);
                snprintf(ax, sizeof ax, "axis=%d", axis);
                const char *attrs[] = {dp, ax, outs[c % 4]};
                run_case("one_hot", 1, &l, 3, attrs);
            }
}

/* ---- structure ---- */

static kiln_kernel *lower_of(kiln_graph *g, kiln_value v)
{
    char err[512];
    kiln_kernel *k = NULL;
    cr_assert_geq(v, 0, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_lower_node(g, v, &k, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_not_null(k);
    return k;
}

static char *printed(const kiln_kernel *k)
{
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    cr_assert_not_null(f);
    kiln_kernel_print(k, f);
    fclose(f);
    return s;
}

/* The label check sits before the label-indexed load, and its message is
 * the kernel's check 1. */
Test(lower_structure, cross_entropy_check_first)
{
    kiln_graph *g = kiln_graph_new("ce");
    int64_t xs[] = {8, 10}, ys[] = {8};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs), y = kiln_input(g, "y", KILN_I32, 1, ys);
    kiln_kernel *k = lower_of(g, kiln_cross_entropy(g, x, y));
    cr_assert_eq(k->nchecks, 1);
    cr_assert(strstr(k->check_msg[0], "cross_entropy: a label is outside [0, C)"));
    char *s = printed(k);
    char *check = strstr(s, "check "), *pick = strstr(s, "select(ne(t");
    cr_assert(check && pick && check < pick, "%s", s);
    free(s);
    kiln_kernel_free(k);
    kiln_graph_free(g);
}

/* One loop per kept axis around one per reduced axis; f32 sums in f64. */
Test(lower_structure, reduce_loops)
{
    kiln_graph *g = kiln_graph_new("r");
    int64_t xs[] = {4, 5, 6};
    kiln_value x = kiln_input(g, "x", KILN_F32, 3, xs);
    kiln_kernel *k = lower_of(g, kiln_reduce_sum(g, x, 1, (int64_t[]){1}, 0));
    cr_assert_eq(k->nvars, 3);
    cr_assert_eq(k->nlocals, 1);
    cr_assert_eq(k->local_dtype[0], KILN_F64);
    const kiln_kstmt *l0 = &k->stmts[k->body];
    cr_assert_eq(l0->kind, KS_LOOP);
    cr_assert_eq(l0->extent, 4);
    cr_assert_eq(k->stmts[l0->body].extent, 6); /* the kept axes, then the reduced one */
    char *s = printed(k);
    cr_assert(strstr(s, "for i2 in 0..5"), "%s", s);
    free(s);
    kiln_kernel_free(k);
    kiln_graph_free(g);
}
