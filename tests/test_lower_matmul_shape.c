/* tests/test_lower_matmul_shape.c — the lowering rules of matmul
 * (codegen/lower_matmul.c) and of the shape ops (codegen/lower_shape.c).
 *
 * Each case builds a small graph (leaves, then the op), runs the reference
 * interpreter on random inputs, lowers the op's node to kernel IR, runs the
 * kernel with the kernel-IR evaluator of tests/kernel_eval.c on double
 * buffers, and compares. The evaluator type-checks the kernel and checks
 * that every load and store is in bounds and that only the output is
 * written; output buffers start as NaN, so every output element must be
 * written.
 *
 * Sizes 1, 3, 7, 17 and 129 go along every dimension that matters: matmul's
 * M, N and K under all four ta/tb, broadcast batches, rank-1 operands; each
 * shape op along the axes it moves. */
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "ir/kernel.h"
#include "ir/ops.h"
#include "tests/kernel_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int64_t SIZES[] = {1, 3, 7, 17, 129};
#define NSIZES 5

/* ---- cases ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static double rnd_value(kiln_dtype t)
{
    switch (t) {
    case KILN_F32:
    case KILN_F64: return 2 * rnd() - 1;
    case KILN_BOOL: return rnd() < 0.5;
    case KILN_U8: return floor(rnd() * 256);
    default: return floor(rnd() * 19) - 9;
    }
}

/* The graph of one case; leaves are named x0, x1, ... */
static kiln_graph *new_graph(void)
{
    kiln_graph *g = kiln_graph_new("lower");
    cr_assert(g);
    return g;
}

static kiln_value leaf(kiln_graph *g, int i, kiln_dtype t, int rank, const int64_t *shape)
{
    char name[16];
    snprintf(name, sizeof name, "x%d", i);
    kiln_value v = kiln_input(g, name, t, rank, shape);
    cr_assert(v >= 0, "leaf: %s", kiln_graph_error(g));
    return v;
}

static char *shape_desc(const kiln_graph *g, kiln_value v, char *buf, size_t len)
{
    char t[128];
    const kiln_node *n = &g->nodes[v];
    size_t o = (size_t)snprintf(buf, len, "%s(", kiln_ops[n->op].name);
    for (int j = 0; j < n->ninputs && o < len; j++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", j ? ", " : "",
                              kiln_node_type_str(&g->nodes[n->inputs[j]], t, sizeof t));
    if (o < len) snprintf(buf + o, len - o, ") -> %s", kiln_node_type_str(n, t, sizeof t));
    return buf;
}

/* Runs node `node` of g (its inputs all leaves) both ways and compares:
 * exactly when tol < 0, else |kernel - ref| <= tol. Frees g. */
static void check_node(kiln_graph *g, kiln_value node, double tol)
{
    char desc[512];
    cr_assert(node >= 0, "build: %s", kiln_graph_error(g));
    shape_desc(g, node, desc, sizeof desc);

    kiln_interp *it = NULL;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (kiln_value v = 0; v < g->nnodes; v++) {
        const kiln_node *n = &g->nodes[v];
        if (n->op != KILN_OP_INPUT) continue;
        int64_t m = kiln_node_numel(n);
        double *d = malloc((size_t)(m ? m : 1) * sizeof *d);
        cr_assert(d);
        for (int64_t i = 0; i < m; i++) d[i] = rnd_value((kiln_dtype)n->dtype);
        cr_assert_eq(kiln_interp_set(it, v, d, (size_t)m), KILN_OK, "%s", kiln_interp_error(it));
        free(d);
    }
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s: %s", desc, kiln_interp_error(it));

    kiln_kernel *k = NULL;
    char err[512] = "";
    kiln_status st = kiln_lower_node(g, node, &k, err, sizeof err);
    cr_assert_eq(st, KILN_OK, "%s: %s", desc, err);
    cr_assert(k, "%s: no kernel", desc);

    keval c;
    cr_assert(keval_init(&c, k), "%s: out of memory", desc);
    int32_t outbuf = -1;
    for (int32_t b = 0; b < k->nbufs; b++) {
        const kiln_kbuf *kb = &k->bufs[b];
        int64_t m = c.len[b];
        if (kb->node < 0) { /* scratch: NaN, so a read before a write shows */
            for (int64_t i = 0; i < m; i++) c.buf[b][i] = NAN;
        } else if (kb->written) {
            cr_assert_eq(kb->node, node, "%s: the kernel writes %%%d, not its output", desc,
                         kb->node);
            outbuf = b;
            for (int64_t i = 0; i < m; i++) c.buf[b][i] = NAN;
        } else {
            memcpy(c.buf[b], kiln_interp_value(it, kb->node), (size_t)m * sizeof **c.buf);
        }
    }
    const kiln_node *n = &g->nodes[node];
    int64_t m = kiln_node_numel(n);
    if (m > 0) cr_assert(outbuf >= 0, "%s: the kernel writes no output", desc);

    keval_typecheck(&c);
    cr_assert(!c.err[0], "%s: %s", desc, c.err);
    int check = keval_run(&c);
    cr_assert(!c.err[0], "%s: %s", desc, c.err);
    cr_assert_eq(check, 0, "%s: check %d failed", desc, check);

    const double *want = kiln_interp_value(it, node);
    for (int64_t i = 0; i < m; i++) {
        double got = c.buf[outbuf][i];
        cr_assert(!isnan(got), "%s: element %lld never written", desc, (long long)i);
        if (tol < 0)
            cr_assert(got == want[i], "%s: element %lld: kernel %.17g, reference %.17g", desc,
                      (long long)i, got, want[i]);
        else
            cr_assert(fabs(got - want[i]) <= tol,
                      "%s: element %lld: kernel %.17g, reference %.17g (tolerance %g)", desc,
                      (long long)i, got, want[i], tol);
    }

    keval_fini(&c);
    kiln_kernel_free(k);
    kiln_interp_free(it);
    kiln_graph_free(g);
}

/* ---- matmul ---- */

/* Rounding allowance for an output element summing K products of values in
 * [-1, 1]: a kernel that sums in another order (a blocked schedule) stays
 * within it; an indexing mistake does not. */
static double mm_tol(kiln_dtype t, int64_t K)
{
    if (t == KILN_F32) return 4.0 * (double)(K + 1) * 0x1p-24;
    if (t == KILN_F64) return 4.0 * (double)(K + 1) * 0x1p-53;
    return -1; /* integers: exact */
}

/* op(a) [.., M, K] @ op(b) [.., K, N] with the given batch shapes; a
 * negative M (N) makes a (b) a vector. */
static void mm_case(kiln_dtype t, int nba, const int64_t *ba, int nbb, const int64_t *bb,
                    int64_t M, int64_t K, int64_t N, int ta, int tb)
{
    kiln_graph *g = new_graph();
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
    int ra = 0, rb = 0;
    for (int i = 0; i < nba; i++) sa[ra++] = ba[i];
    for (int i = 0; i < nbb; i++) sb[rb++] = bb[i];
    if (M < 0) {
        sa[ra++] = K;
    } else {
        sa[ra++] = ta ? K : M;
        sa[ra++] = ta ? M : K;
    }
    if (N < 0) {
        sb[rb++] = K;
    } else {
        sb[rb++] = tb ? N : K;
        sb[rb++] = tb ? K : N;
    }
    kiln_value a = leaf(g, 0, t, ra, sa), b = leaf(g, 1, t, rb, sb);
    check_node(g, kiln_matmul(g, a, b, ta, tb), mm_tol(t, K));
}

Test(lower_matmul, all_sizes_all_transposes)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int im = 0; im < NSIZES; im++)
                for (int in = 0; in < NSIZES; in++)
                    for (int ik = 0; ik < NSIZES; ik++) {
                        if (SIZES[im] * SIZES[in] * SIZES[ik] > 129 * 129 * 17) continue;
                        mm_case(KILN_F32, 0, NULL, 0, NULL, SIZES[im], SIZES[ik], SIZES[in], ta,
                                tb);
                    }
}

Test(lower_matmul, f64_and_i32)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int i = 0; i < NSIZES - 1; i++) {
                mm_case(KILN_F64, 0, NULL, 0, NULL, SIZES[i], SIZES[NSIZES - 2 - i],
                        SIZES[(i + 1) % (NSIZES - 1)], ta, tb);
                mm_case(KILN_I32, 0, NULL, 0, NULL, SIZES[i], SIZES[(i + 2) % (NSIZES - 1)],
                        SIZES[NSIZES - 2 - i], ta, tb);
                mm_case(KILN_I64, 0, NULL, 0, NULL, 7, SIZES[i], 3, ta, tb);
            }
}

/* K = 0 gives zeros; M = 0 or N = 0 an empty output. */
Test(lower_matmul, empty_dimensions)
{
    static const int64_t b2[] = {2};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            mm_case(KILN_F32, 0, NULL, 0, NULL, 3, 0, 4, ta, tb);
            mm_case(KILN_F32, 1, b2, 0, NULL, 0, 5, 4, ta, tb);
            mm_case(KILN_I32, 0, NULL, 0, NULL, 3, 5, 0, ta, tb);
            mm_case(KILN_F64, 0, NULL, 0, NULL, -1, 0, -1, ta, tb);
        }
}

/* Both forms sum in double in the reference's order (k ascending), so
 * evaluated in order an f32 matmul rounds to the reference's result exactly
 * (the C backend's SIMD reduction in the dot form reorders its sum). */
Test(lower_matmul, f32_matches_reference_bit_for_bit)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            kiln_graph *g = new_graph();
            int64_t sa[2] = {ta ? 129 : 17, ta ? 17 : 129}, sb[2] = {tb ? 7 : 129, tb ? 129 : 7};
            kiln_value a = leaf(g, 0, KILN_F32, 2, sa), b = leaf(g, 1, KILN_F32, 2, sb);
            check_node(g, kiln_matmul(g, a, b, ta, tb), -1);
        }
}

Test(lower_matmul, broadcast_batches)
{
    static const int64_t b21[] = {2, 1}, b3[] = {3}, b13[] = {1, 3}, b4[] = {4}, b231[] = {2, 3, 1};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int s = 0; s < NSIZES; s++) {
                int64_t x = SIZES[s], y = SIZES[(s + 2) % NSIZES], z = SIZES[(s + 4) % NSIZES];
                if (x * y * z > 129 * 17 * 7) continue;
                /* [2,1] with [3] -> [2,3] */
                mm_case(KILN_F32, 2, b21, 1, b3, x, y, z, ta, tb);
                /* [1,3] with [2,3,1] -> [2,3,3] */
                mm_case(KILN_F32, 2, b13, 3, b231, z, x, y, ta, tb);
                /* a batch on one side only */
                mm_case(KILN_F32, 0, NULL, 1, b4, y, z, x, ta, tb);
                mm_case(KILN_F32, 1, b4, 0, NULL, x, z, y, ta, tb);
                /* equal batches */
                mm_case(KILN_F64, 1, b3, 1, b3, y, x, z, ta, tb);
            }
}

Test(lower_matmul, vector_operands)
{
    static const int64_t b2[] = {2}, b23[] = {2, 3};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int s = 0; s < NSIZES; s++) {
                int64_t K = SIZES[s], o = SIZES[(s + 3) % NSIZES];
                mm_case(KILN_F32, 0, NULL, 0, NULL, -1, K, o, ta, tb);   /* [K] @ [K,N] */
                mm_case(KILN_F32, 0, NULL, 0, NULL, o, K, -1, ta, tb);   /* [M,K] @ [K] */
                mm_case(KILN_F32, 0, NULL, 0, NULL, -1, K, -1, ta, tb);  /* [K] @ [K] */
                mm_case(KILN_F32, 0, NULL, 1, b2, -1, K, o, ta, tb);     /* [K] @ [2,K,N] */
                mm_case(KILN_F32, 2, b23, 0, NULL, o, K, -1, ta, tb);    /* [2,3,M,K] @ [K] */
                mm_case(KILN_I32, 0, NULL, 0, NULL, -1, K, -1, ta, tb);
            }
}

Test(lower_matmul, kernel_prints_readably)
{
    kiln_graph *g = new_graph();
    int64_t sa[3] = {2, 4, 3}, sb[2] = {5, 4};
    kiln_value a = leaf(g, 0, KILN_F32, 3, sa), b = leaf(g, 1, KILN_F32, 2, sb);
    kiln_value c = kiln_matmul(g, a, b, 1, 1);
    cr_assert(c >= 0, "%s", kiln_graph_error(g));
    kiln_kernel *k = NULL;
    char err[256] = "";
    cr_assert_eq(kiln_lower_node(g, c, &k, err, sizeof err), KILN_OK, "%s", err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert(f);
    kiln_kernel_print(k, f);
    fclose(f);
    printf("%s", text);
    /* the loops i (batch), M, N, K and an f64 accumulator stored as f32 */
    cr_assert(strstr(text, "kernel k2_matmul  // matmul(f32[2,4,3], f32[5,4]) -> f32[2,3,5]"),
              "%s", text);
    cr_assert(strstr(text, "for i0 in 0..2") && strstr(text, "for i1 in 0..3") &&
                  strstr(text, "for i2 in 0..5") && strstr(text, "for i3 in 0..4"),
              "%s", text);
    cr_assert(strstr(text, "-> f32)"), "%s", text);
    free(text);
    kiln_kernel_free(k);
    kiln_graph_free(g);
}

/* ---- shape ops ---- */

/* Calls fn for every rank-3 shape over SIZES, skipping the largest. */
#define FOR_SHAPES3(s)                                                                         \
    for (int i0_ = 0; i0_ < NSIZES; i0_++)                                                     \
        for (int i1_ = 0; i1_ < NSIZES; i1_++)                                                 \
            for (int i2_ = 0; i2_ < NSIZES; i2_++)                                             \
                for (int64_t s[3] = {SIZES[i0_], SIZES[i1_], SIZES[i2_]}, once_ = 1;           \
                     once_ && s[0] * s[1] * s[2] <= 129 * 17 * 7; once_ = 0)

static kiln_value op1(kiln_graph *g, int op, kiln_value x, int nattrs, const kiln_attr *attrs)
{
    return kiln_build(g, op, 1, &x, nattrs, attrs);
}

Test(lower_shape, reshape_and_flatten)
{
    FOR_SHAPES3(s)
    {
        kiln_graph *g = new_graph();
        kiln_value x = leaf(g, 0, KILN_F32, 3, s);
        int64_t to[2] = {s[2], -1};
        check_node(g, kiln_reshape(g, x, 2, to), -1);
        for (int axis = -1; axis < 3; axis++) {
            g = new_graph();
            x = leaf(g, 0, KILN_F32, 3, s);
            check_node(g, kiln_flatten(g, x, axis), -1);
        }
    }
    /* other dtypes, rank 0 */
    kiln_graph *g = new_graph();
    int64_t s23[2] = {2, 3}, s6[1] = {6}, s11[2] = {1, 1};
    check_node(g, kiln_reshape(g, leaf(g, 0, KILN_I32, 2, s23), 1, s6), -1);
    g = new_graph();
    check_node(g, kiln_reshape(g, leaf(g, 0, KILN_BOOL, 2, s23), 1, s6), -1);
    g = new_graph();
    check_node(g, kiln_reshape(g, leaf(g, 0, KILN_F64, 0, NULL), 2, s11), -1);
    g = new_graph();
    check_node(g, kiln_flatten(g, leaf(g, 0, KILN_F32, 0, NULL), 0), -1);
}

Test(lower_shape, permute)
{
    static const int64_t perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                        {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    FOR_SHAPES3(s)
    {
        for (int p = 0; p < 6; p++) {
            kiln_graph *g = new_graph();
            kiln_value x = leaf(g, 0, KILN_F32, 3, s);
            check_node(g, kiln_permute(g, x, 3, perms[p]), -1);
        }
    }
    /* rank 4 and 5, negative axes, integer dtypes */
    int64_t s4[4] = {3, 1, 7, 2}, p4[4] = {3, 0, -2, 1};
    kiln_graph *g = new_graph();
    check_node(g, kiln_permute(g, leaf(g, 0, KILN_I64, 4, s4), 4, p4), -1);
    int64_t s5[5] = {2, 3, 1, 4, 5}, p5[5] = {4, 2, 0, 3, 1};
    g = new_graph();
    check_node(g, kiln_permute(g, leaf(g, 0, KILN_U8, 5, s5), 5, p5), -1);
    g = new_graph();
    check_node(g, kiln_transpose(g, leaf(g, 0, KILN_BOOL, 4, s4), 0, 3), -1);
    g = new_graph();
    check_node(g, kiln_permute(g, leaf(g, 0, KILN_F32, 0, NULL), 0, NULL), -1);
}

Test(lower_shape, broadcast_to)
{
    FOR_SHAPES3(s)
    {
        /* each axis of s either kept or read from a size-1 axis; plus a new
         * leading axis */
        for (int mask = 0; mask < 8; mask++) {
            int64_t xs[3];
            for (int d = 0; d < 3; d++) xs[d] = mask >> d & 1 ? 1 : s[d];
            kiln_graph *g = new_graph();
            check_node(g, kiln_broadcast_to(g, leaf(g, 0, KILN_F32, 3, xs), 3, s), -1);
        }
        int64_t to[4] = {2, s[0], s[1], s[2]};
        if (s[0] * s[1] * s[2] <= 129 * 17) {
            kiln_graph *g = new_graph();
            check_node(g, kiln_broadcast_to(g, leaf(g, 0, KILN_F32, 2, s + 1), 4, to), -1);
            g = new_graph();
            check_node(g, kiln_broadcast_to(g, leaf(g, 0, KILN_I32, 1, s + 2), 4, to), -1);
            g = new_graph();
            check_node(g, kiln_broadcast_to(g, leaf(g, 0, KILN_F64, 0, NULL), 3, s), -1);
        }
    }
    kiln_graph *g = new_graph();
    check_node(g, kiln_broadcast_to(g, leaf(g, 0, KILN_BOOL, 0, NULL), 0, NULL), -1);
}

/* Python-style bounds (negative, past the end), steps 1..129, empty
 * results. */
Test(lower_shape, slice)
{
    static const int64_t bounds[][2] = {{0, INT64_MAX}, {1, -1}, {-5, 100}, {2, 2},
                                        {3, 1},         {-200, 7}, {5, -3}};
    static const int64_t steps[] = {1, 2, 3, 7, 129};
    FOR_SHAPES3(s)
    {
        for (int axis = 0; axis < 3; axis++)
            for (size_t bi = 0; bi < sizeof bounds / sizeof bounds[0]; bi++)
                for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
                    /* keep the sweep short: all steps on one bound */
                    if (bi && si && si != bi % 5) continue;
                    kiln_graph *g = new_graph();
                    kiln_value x = leaf(g, 0, KILN_F32, 3, s);
                    check_node(g, kiln_slice(g, x, axis - 3 * (int)(bi & 1), bounds[bi][0],
                                             bounds[bi][1], steps[si]),
                               -1);
                }
    }
    int64_t s2[2] = {17, 5};
    kiln_graph *g = new_graph();
    check_node(g, kiln_slice(g, leaf(g, 0, KILN_I32, 2, s2), 0, 1, 16, 3), -1);
    g = new_graph();
    check_node(g, kiln_slice(g, leaf(g, 0, KILN_BOOL, 2, s2), 1, -4, 5, 2), -1);
}

static kiln_value unslice(kiln_graph *g, kiln_value x, int64_t axis, int64_t start, int64_t step,
                          int64_t size)
{
    kiln_attr a[4] = {kiln_attr_int("axis", axis), kiln_attr_int("start", start),
                      kiln_attr_int("step", step), kiln_attr_int("size", size)};
    return op1(g, KILN_OP_UNSLICE, x, 4, a);
}

Test(lower_shape, unslice)
{
    static const int64_t steps[] = {1, 2, 3, 7, 129};
    FOR_SHAPES3(s)
    {
        for (int axis = 0; axis < 3; axis++)
            for (int si = 0; si < NSIZES; si++) {
                int64_t cnt = s[axis], step = steps[si];
                if (step > 1 && cnt * step > 1000) continue;
                int64_t start = (si * 5) % 4, tail = si % 3;
                int64_t size = start + (cnt - 1) * step + 1 + tail;
                if (size * (s[0] * s[1] * s[2] / cnt) > 100000) continue;
                kiln_graph *g = new_graph();
                kiln_value x = leaf(g, 0, KILN_F32, 3, s);
                check_node(g, unslice(g, x, axis - 3 * (si & 1), start, step, size), -1);
            }
        /* x fills the axis: no zeroing nest */
        kiln_graph *g = new_graph();
        check_node(g, unslice(g, leaf(g, 0, KILN_F32, 3, s), 1, 0, 1, s[1]), -1);
    }
    int64_t s2[2] = {4, 3}, s0[2] = {0, 3};
    kiln_graph *g = new_graph();
    check_node(g, unslice(g, leaf(g, 0, KILN_I32, 2, s2), 0, 2, 3, 15), -1);
    g = new_graph();
    check_node(g, unslice(g, leaf(g, 0, KILN_BOOL, 2, s2), 1, 1, 2, 7), -1);
    /* an empty x: all zeros */
    g = new_graph();
    check_node(g, unslice(g, leaf(g, 0, KILN_F32, 2, s0), 0, 2, 1, 5), -1);
}

Test(lower_shape, concat)
{
    FOR_SHAPES3(s)
    {
        for (int axis = 0; axis < 3; axis++) {
            if (s[0] * s[1] * s[2] > 129 * 17) continue;
            /* inputs of lengths s[axis], 1 and 3 along axis */
            int64_t s1[3], s2[3];
            memcpy(s1, s, sizeof s1);
            memcpy(s2, s, sizeof s2);
            s1[axis] = 1;
            s2[axis] = 3;
            kiln_graph *g = new_graph();
            kiln_value xs[3] = {leaf(g, 0, KILN_F32, 3, s), leaf(g, 1, KILN_F32, 3, s1),
                                leaf(g, 2, KILN_F32, 3, s2)};
            check_node(g, kiln_concat(g, 3, xs, axis), -1);
            g = new_graph();
            xs[0] = leaf(g, 0, KILN_F32, 3, s1);
            xs[1] = leaf(g, 1, KILN_F32, 3, s);
            check_node(g, kiln_concat(g, 2, xs, axis - 3), -1);
        }
    }
    /* one input, the same input twice, an empty input, integer dtypes */
    int64_t s23[2] = {2, 3}, s03[2] = {0, 3};
    kiln_graph *g = new_graph();
    kiln_value x = leaf(g, 0, KILN_I32, 2, s23);
    check_node(g, kiln_concat(g, 1, &x, 1), -1);
    g = new_graph();
    x = leaf(g, 0, KILN_BOOL, 2, s23);
    kiln_value xx[3] = {x, x, x};
    check_node(g, kiln_concat(g, 3, xx, 0), -1);
    g = new_graph();
    kiln_value xe[3] = {leaf(g, 0, KILN_F64, 2, s23), leaf(g, 1, KILN_F64, 2, s03),
                        leaf(g, 2, KILN_F64, 2, s23)};
    check_node(g, kiln_concat(g, 3, xe, 0), -1);
}

Test(lower_shape, kernels_print_readably)
{
    kiln_graph *g = new_graph();
    int64_t s[3] = {4, 5, 6}, perm[3] = {2, 0, 1};
    kiln_value x = leaf(g, 0, KILN_F32, 3, s);
    kiln_value p = kiln_permute(g, x, 3, perm);
    kiln_value sl = kiln_slice(g, x, 1, 1, 5, 2);
    cr_assert(p >= 0 && sl >= 0, "%s", kiln_graph_error(g));
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cr_assert(f);
    kiln_value nodes[2] = {p, sl};
    for (int i = 0; i < 2; i++) {
        kiln_kernel *k = NULL;
        char err[256] = "";
        cr_assert_eq(kiln_lower_node(g, nodes[i], &k, err, sizeof err), KILN_OK, "%s", err);
        kiln_kernel_print(k, f);
        kiln_kernel_free(k);
    }
    fclose(f);
    printf("%s", text);
    /* permute: out[i0,i1,i2] = x[i1, i2, i0] */
    cr_assert(strstr(text, "b1[add(mul(i0, 20), add(mul(i1, 5), i2))] = "
                           "b0[add(mul(i1, 30), add(mul(i2, 6), i0))]"),
              "%s", text);
    /* slice: x's axis 1 at 1 + 2*i */
    cr_assert(strstr(text, "add(mul(i1, 2), 1)"), "%s", text);
    free(text);
    kiln_graph_free(g);
}
