/* tests/test_codegen_ops.c — the generated C (KILN_BACKEND_C) against the
 * reference interpreter, op by op, for every op of the registry (the shape
 * family also through the LLVM backend).
 *
 * Each family below is many independent cases in ONE graph: every case has
 * its own uniquely named inputs ("c<k>_in<i>") and its result is an output
 * ("c<k>_out"), so the graph is compiled once (its forward entry, which
 * computes only the outputs) and every output is compared with the
 * interpreter run on the same graph with the same inputs:
 *
 *   float outputs   |a - e| <= ATOL + RTOL*|e|, NaN exactly where the
 *                   reference has NaN, infinities equal;
 *   integer / bool  exact.
 *
 * The sizes are the awkward ones for vectorized loops: 1, 3, 7, 17 and 129
 * along the innermost and the reduced axes (matmul M, N and K over those
 * sizes for every ta/tb; reductions, softmax and argmax along axes of those
 * sizes; pointwise and broadcasting ops on shapes like [3,129] and [17,1];
 * shape ops; losses with N and C of those sizes). Edge values (NaN, +-inf,
 * zeros, huge and tiny magnitudes) get their own cases, as do ties (inputs
 * drawn as multiples of 0.5) for comparisons, maximum and argmax. The rows
 * of tests/opcases/<family>.c run as one more family, with their own data.
 * `assign` is a case too: its destination is a parameter, compared after the
 * run; program_train_odd_sizes runs whole train steps (assign updates of
 * params and optimizer state) on both backends.
 *
 * registry_coverage fails when a non-leaf op (or assign) has no case here,
 * or when its cases miss one of the five sizes in their input shapes.
 *
 * KILN_CODEGEN_VERBOSE=1 prints per family and per op: cases, elements, the
 * largest |a-e|, the largest relative error and the largest fraction of the
 * tolerance used, plus
 * the compile and run times. */
#include <criterion/criterion.h>

#include "codegen/llvm.h"
#include "ir/graph.h"
#include "ir/ops.h"
#include "tests/opcases.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RTOL 1e-5
#define ATOL 1e-6
#define MAX_REPORTS 4 /* mismatching elements reported per case */

static const int64_t SIZES[5] = {1, 3, 7, 17, 129};

/* ---- the cache directory: one per test, removed after ---- */

static char cache_dir[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache_dir, sizeof cache_dir, "test_codegen_ops");
}

static void remove_cache(void)
{
    if (cache_dir[0]) kiln_test_rmtree(cache_dir);
    cache_dir[0] = 0;
}

TestSuite(codegen_ops, .init = make_cache, .fini = remove_cache, .timeout = 300);

static bool verbose(void) { return getenv("KILN_CODEGEN_VERBOSE") != NULL; }

/* Per output element of a rank-2 matmul node: K * 2^-24 * sum_k |op(A)_ik op(B)_kj|,
 * the bound on f32 summation's error (malloc'd; NULL for other shapes). */
static double *matmul_error_bound(const kiln_graph *g, kiln_interp *it, const kiln_node *n)
{
    const kiln_node *an = &g->nodes[n->inputs[0]], *bn = &g->nodes[n->inputs[1]];
    if (an->rank != 2 || bn->rank != 2 || n->rank != 2) return NULL;
    int ta = kiln_attr_get_int(n, "ta") != 0, tb = kiln_attr_get_int(n, "tb") != 0;
    const double *A = kiln_interp_value(it, n->inputs[0]), *B = kiln_interp_value(it, n->inputs[1]);
    int64_t M = n->shape[0], N = n->shape[1], K = an->shape[ta ? 0 : 1];
    int64_t lda = an->shape[1], ldb = bn->shape[1];
    int64_t mn = M * N > 0 ? M * N : 1;
    double *out = malloc((size_t)mn * sizeof *out);
    if (!out || !A || !B) {
        free(out);
        return NULL;
    }
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += fabs(ta ? A[k * lda + i] : A[i * lda + k]) *
                     fabs(tb ? B[j * ldb + k] : B[k * ldb + j]);
            out[i * N + j] = (double)K * 0x1p-24 * s;
        }
    return out;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- random inputs (xorshift64, a fixed seed per family) ---- */

static uint64_t rng_state;

static double rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

static bool is_float(kiln_dtype t) { return t == KILN_F32 || t == KILN_F64; }

/* ---- cases ---- */

typedef struct tcase {
    op_case c;   /* op, inputs and attributes; c.name set only for table rows */
    bool quant;  /* float inputs drawn as multiples of 0.5: ties and equal pairs */
    bool param0; /* input 0 is a parameter (assign's destination) */
} tcase;

typedef struct family {
    tcase *cases;
    int n, cap;
    char **strs; /* attribute strings, owned */
    int nstrs, cap_strs;
} family;

typedef struct shp {
    int rank;
    int64_t d[KILN_MAX_RANK];
} shp;

#define NARG(...) NARG_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define NARG_(a, b, c, d, e, f, g, h, N, ...) N
#define S(...) ((shp){NARG(__VA_ARGS__), {__VA_ARGS__}})
#define S0 ((shp){0, {0}})

static op_input inp(kiln_dtype t, shp s, double lo, double hi)
{
    op_input in;
    memset(&in, 0, sizeof in);
    in.dtype = t;
    in.rank = s.rank;
    memcpy(in.shape, s.d, sizeof in.shape);
    in.lo = lo;
    in.hi = hi;
    return in;
}

static op_input inp_data(kiln_dtype t, shp s, const double *data)
{
    op_input in = inp(t, s, 0, 0);
    in.data = data;
    return in;
}

static const char *fam_str(family *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *fam_str(family *f, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (f->nstrs == f->cap_strs) {
        f->cap_strs = f->cap_strs ? 2 * f->cap_strs : 64;
        f->strs = realloc(f->strs, (size_t)f->cap_strs * sizeof *f->strs);
        cr_assert_not_null(f->strs);
    }
    char *s = strdup(buf);
    cr_assert_not_null(s);
    f->strs[f->nstrs++] = s;
    return s;
}

static tcase *add_case(family *f, const char *op, int nin, const op_input *in)
{
    cr_assert(nin >= 1 && nin <= 4);
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 64;
        f->cases = realloc(f->cases, (size_t)f->cap * sizeof *f->cases);
        cr_assert_not_null(f->cases);
    }
    tcase *c = &f->cases[f->n++];
    memset(c, 0, sizeof *c);
    c->c.op = op;
    c->c.ninputs = nin;
    for (int i = 0; i < nin; i++) c->c.in[i] = in[i];
    return c;
}

static tcase *add1(family *f, const char *op, op_input a)
{
    return add_case(f, op, 1, (op_input[]){a});
}

static tcase *add2(family *f, const char *op, op_input a, op_input b)
{
    return add_case(f, op, 2, (op_input[]){a, b});
}

static tcase *add3(family *f, const char *op, op_input a, op_input b, op_input c)
{
    return add_case(f, op, 3, (op_input[]){a, b, c});
}

static void attr(family *f, tcase *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void attr(family *f, tcase *c, const char *fmt, ...)
{
    char buf[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    cr_assert_lt(c->c.nattrs, 8);
    c->c.attrs[c->c.nattrs++] = fam_str(f, "%s", buf);
}

static void family_free(family *f)
{
    for (int i = 0; i < f->nstrs; i++) free(f->strs[i]);
    free(f->strs);
    free(f->cases);
    memset(f, 0, sizeof *f);
}

/* "matmul(f32[3,129], f32[129]; ta=1)" (and the table row's name). */
static char *describe(const tcase *t, char *buf, size_t len)
{
    const op_case *c = &t->c;
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "%s%s%s(", c->name ? c->name : "",
                          c->name ? ": " : "", c->op);
    for (int i = 0; i < c->ninputs && o < len; i++) {
        char s[128];
        kiln_shape_str(c->in[i].dtype, c->in[i].rank, c->in[i].shape, s, sizeof s);
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", s);
    }
    for (int i = 0; i < c->nattrs && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "; ", c->attrs[i]);
    if (o < len) snprintf(buf + o, len - o, ")");
    return buf;
}

/* Edge values: 17 of them, an odd length on purpose. */
static const double specials[17] = {NAN,  INFINITY, -INFINITY, 0,     -0.0,  1,     -1,
                                    0.5,  -0.5,     2,         -2,    1e-30, -1e-30, 100,
                                    -100, 1e30,     -1e30};
/* The same values rotated by six: NaN, the infinities and the zeros meet
 * finite values (and specials against specials itself: inf - inf, 0 / 0). */
static const double specials_rot[17] = {1e-30, -1e-30, 100, -100, 1e30, -1e30, NAN,
                                        INFINITY, -INFINITY, 0, -0.0, 1, -1, 0.5,
                                        -0.5, 2, -2};
/* Edge values without NaN (17): infinities and extremes. */
static const double extremes[17] = {INFINITY, -3, 1e30, 0, -1e30, 7, -INFINITY, 2.5, -0.0,
                                    88.5, -88.5, 1e-30, 5, -5, 3, 3, -1};

/* ---- families ---- */

/* Unary pointwise ops and cast (ir/ops_elementwise.c), assign. */
static void gen_unary(family *f)
{
    static const shp ushapes[] = {{1, {1}}, {1, {7}}, {1, {129}}, {2, {3, 129}}, {2, {17, 1}}};
    const int nu = (int)(sizeof ushapes / sizeof ushapes[0]);
    static const struct {
        const char *op, *attr;
        double lo, hi;
    } unary[] = {
        {"neg", NULL, -3, 3},         {"exp", NULL, -4, 4},
        {"log", NULL, 0.05, 4},       {"sqrt", NULL, 0, 4},
        {"pow", "exponent=2", -2, 2}, {"pow", "exponent=3", -2, 2},
        {"pow", "exponent=0.5", 0, 3}, {"pow", "exponent=-1.5", 0.1, 3},
        {"pow", "exponent=1.7", 0.1, 3}, {"relu", NULL, -3, 3},
        {"leaky_relu", NULL, -3, 3},  {"leaky_relu", "slope=0.1", -3, 3},
        {"sigmoid", NULL, -6, 6},     {"tanh", NULL, -3, 3},
        {"gelu", NULL, -4, 4},
    };
    const int nun = (int)(sizeof unary / sizeof unary[0]);
    for (int o = 0; o < nun; o++)
        for (int s = 0; s < nu; s++) {
            tcase *c = add1(f, unary[o].op, inp(KILN_F32, ushapes[s], unary[o].lo, unary[o].hi));
            if (unary[o].attr) attr(f, c, "%s", unary[o].attr);
        }
    /* edge values and wide ranges: NaN, inf, overflow, saturation */
    for (int o = 0; o < nun; o++) {
        tcase *c = add1(f, unary[o].op, inp_data(KILN_F32, S(17), specials));
        if (unary[o].attr) attr(f, c, "%s", unary[o].attr);
        c = add1(f, unary[o].op, inp(KILN_F32, S(3, 129), -120, 120));
        if (unary[o].attr) attr(f, c, "%s", unary[o].attr);
    }
    /* f64 and integer operands */
    static const char *const f64ops[] = {"neg", "exp", "log", "sqrt", "relu", "leaky_relu",
                                         "sigmoid", "tanh", "gelu"};
    for (size_t o = 0; o < sizeof f64ops / sizeof f64ops[0]; o++)
        add1(f, f64ops[o], inp(KILN_F64, S(7, 17), 0.05, 5));
    add1(f, "neg", inp(KILN_I32, S(3, 129), -50, 50));
    add1(f, "relu", inp(KILN_I32, S(17, 1), -50, 50));
    add1(f, "neg", inp(KILN_I64, S(129), -50, 50));

    /* cast: between the dtypes the emitter supports, in range */
    static const struct {
        kiln_dtype from;
        const char *to;
        double lo, hi;
        bool quant;
    } casts[] = {
        {KILN_F32, "i32", -100, 100, false}, {KILN_F32, "i64", -100, 100, false},
        {KILN_F32, "u8", 0, 255, false},     {KILN_F32, "bool", -1, 1, true},
        {KILN_F32, "f64", -100, 100, false}, {KILN_F64, "f32", -100, 100, false},
        {KILN_F64, "i32", -100, 100, false}, {KILN_F64, "bool", -1, 1, true},
        {KILN_I32, "f32", -1000, 1000, false}, {KILN_I32, "i64", -1000, 1000, false},
        {KILN_I32, "bool", -2, 2, false},    {KILN_I32, "u8", 0, 255, false},
        {KILN_I32, "f64", -1000, 1000, false}, {KILN_I64, "i32", -1000, 1000, false},
        {KILN_I64, "f32", -1000, 1000, false}, {KILN_U8, "f32", 0, 255, false},
        {KILN_U8, "i32", 0, 255, false},     {KILN_BOOL, "f32", 0, 2, false},
        {KILN_BOOL, "i32", 0, 2, false},
    };
    static const shp cshapes[] = {{1, {17}}, {2, {3, 129}}};
    for (size_t k = 0; k < sizeof casts / sizeof casts[0]; k++)
        for (size_t s = 0; s < sizeof cshapes / sizeof cshapes[0]; s++) {
            tcase *c = add1(f, "cast", inp(casts[k].from, cshapes[s], casts[k].lo, casts[k].hi));
            c->quant = casts[k].quant;
            attr(f, c, "to=%s", casts[k].to);
        }
    attr(f, add1(f, "cast", inp(KILN_F32, S(1), -100, 100)), "to=i32");
    attr(f, add1(f, "cast", inp(KILN_I32, S(7, 1), -100, 100)), "to=f32");
    attr(f, add1(f, "cast", inp_data(KILN_F32, S(17), specials)), "to=f64");
    attr(f, add1(f, "cast", inp_data(KILN_F32, S(17), specials)), "to=bool");

    /* assign: a parameter overwritten by an input (last, as nothing may read
     * the destination after its assign) */
    static const shp ashapes[] = {{1, {1}}, {1, {3}}, {2, {17, 1}}, {2, {3, 129}}, {1, {7}}};
    for (size_t s = 0; s < sizeof ashapes / sizeof ashapes[0]; s++)
        add2(f, "assign", inp(KILN_F32, ashapes[s], -1, 1), inp(KILN_F32, ashapes[s], -5, 5))
            ->param0 = true;
    add2(f, "assign", inp(KILN_F64, S(7, 17), -1, 1), inp(KILN_F64, S(7, 17), -5, 5))->param0 =
        true;
}

/* Binary and ternary (broadcasting) ops (ir/ops_elementwise.c). */
static void gen_binary(family *f)
{
    static const shp pairs[][2] = {
        {{2, {3, 129}}, {2, {3, 129}}}, {{2, {3, 129}}, {1, {129}}},
        {{2, {3, 129}}, {2, {3, 1}}},   {{2, {17, 1}}, {2, {1, 129}}},
        {{1, {1}}, {2, {7, 17}}},       {{2, {7, 17}}, {0, {0}}},
        {{3, {3, 7, 17}}, {2, {7, 1}}},
    };
    const int np = (int)(sizeof pairs / sizeof pairs[0]);
    static const struct {
        const char *op;
        double blo, bhi;
        bool quant;
    } binary[] = {
        {"add", -2, 2, false},    {"sub", -2, 2, false},     {"mul", -2, 2, false},
        {"div", 0.5, 2, false},   {"maximum", -2, 2, true},  {"minimum", -2, 2, true},
        {"gelu_grad", -2, 2, false}, {"eq", -2, 2, true},    {"ne", -2, 2, true},
        {"lt", -2, 2, true},      {"le", -2, 2, true},       {"gt", -2, 2, true},
        {"ge", -2, 2, true},
    };
    const int nbin = (int)(sizeof binary / sizeof binary[0]);
    for (int o = 0; o < nbin; o++) {
        for (int p = 0; p < np; p++) {
            tcase *c = add2(f, binary[o].op, inp(KILN_F32, pairs[p][0], -2, 2),
                            inp(KILN_F32, pairs[p][1], binary[o].blo, binary[o].bhi));
            c->quant = binary[o].quant;
        }
        /* edge values against others and against themselves */
        add2(f, binary[o].op, inp_data(KILN_F32, S(17), specials),
             inp_data(KILN_F32, S(17), specials_rot));
        add2(f, binary[o].op, inp_data(KILN_F32, S(17), specials),
             inp_data(KILN_F32, S(17), specials));
        /* f64 */
        add2(f, binary[o].op, inp(KILN_F64, S(7, 17), -2, 2),
             inp(KILN_F64, S(17), binary[o].blo, binary[o].bhi))->quant = binary[o].quant;
    }
    /* integer operands: exact */
    static const char *const intops[] = {"add", "sub", "mul", "maximum", "minimum",
                                         "eq",  "ne",  "lt",  "le",      "gt", "ge"};
    for (size_t o = 0; o < sizeof intops / sizeof intops[0]; o++) {
        add2(f, intops[o], inp(KILN_I32, S(3, 129), -5, 5), inp(KILN_I32, S(129), -5, 5));
        add2(f, intops[o], inp(KILN_I64, S(17, 1), -5, 5), inp(KILN_I64, S(1, 7), -5, 5));
    }
    add2(f, "div", inp(KILN_I32, S(3, 129), -50, 50), inp(KILN_I32, S(3, 1), 1, 9));
    add2(f, "div", inp(KILN_I64, S(17), -50, 50), inp(KILN_I64, S(17), 1, 9));
    /* x / 0 is 0 for integers (the reference's non-finite quotient) */
    add2(f, "div", inp(KILN_I32, S(7, 17), -50, 50), inp(KILN_I32, S(17), -2, 2));
    add2(f, "div", inp(KILN_I64, S(129), -50, 50), inp(KILN_I64, S(129), -2, 2));
    add2(f, "div", inp(KILN_U8, S(3, 129), 0, 255), inp(KILN_U8, S(3, 1), 0, 3));
    add2(f, "eq", inp(KILN_BOOL, S(7, 17), 0, 2), inp(KILN_BOOL, S(17), 0, 2));
    add2(f, "add", inp(KILN_U8, S(129), 0, 100), inp(KILN_U8, S(1), 0, 100));

    /* where: a bool condition, broadcast three ways */
    add3(f, "where", inp(KILN_BOOL, S(3, 129), 0, 2), inp(KILN_F32, S(3, 129), -2, 2),
         inp(KILN_F32, S(3, 129), -2, 2));
    add3(f, "where", inp(KILN_BOOL, S(129), 0, 2), inp(KILN_F32, S(3, 129), -2, 2),
         inp(KILN_F32, S(3, 1), -2, 2));
    add3(f, "where", inp(KILN_BOOL, S(17, 1), 0, 2), inp(KILN_F32, S(1, 7), -2, 2),
         inp(KILN_F32, S(17, 7), -2, 2));
    add3(f, "where", inp(KILN_BOOL, S(1), 0, 2), inp(KILN_F32, S(17), -2, 2),
         inp(KILN_F32, S0, -2, 2));
    add3(f, "where", inp(KILN_BOOL, S(7, 3), 0, 2), inp(KILN_I32, S(7, 3), -9, 9),
         inp(KILN_I32, S(3), -9, 9));
    add3(f, "where", inp(KILN_BOOL, S(17), 0, 2), inp_data(KILN_F32, S(17), specials),
         inp_data(KILN_F32, S(17), specials_rot));
}

/* Reductions, argmax, softmax, log_softmax (ir/ops_reduce.c). */
static void gen_reduce(family *f)
{
    static const char *const reds[] = {"reduce_sum", "reduce_mean", "reduce_max"};
    static const char *const along[] = {"argmax", "softmax", "log_softmax"};
    for (int s = 0; s < 5; s++) {
        int64_t n = SIZES[s];
        for (int o = 0; o < 3; o++) {
            /* the innermost axis, a leading axis, a middle axis (keepdims),
             * every axis */
            attr(f, add1(f, reds[o], inp(KILN_F32, S(3, n), -2, 2)), "axes=[1]");
            attr(f, add1(f, reds[o], inp(KILN_F32, S(n, 5), -2, 2)), "axes=[0]");
            tcase *c = add1(f, reds[o], inp(KILN_F32, S(2, n, 3), -2, 2));
            attr(f, c, "axes=[1]");
            attr(f, c, "keepdims=1");
            add1(f, reds[o], inp(KILN_F32, S(n), -2, 2));
            attr(f, add1(f, reds[o], inp(KILN_F32, S(7, n), -2, 2)), "axes=[-1]");
            c = add1(f, reds[o], inp(KILN_F32, S(n, 17), -2, 2));
            attr(f, c, "axes=[0]");
            attr(f, c, "keepdims=1");
        }
        for (int o = 0; o < 3; o++) {
            tcase *c = add1(f, along[o], inp(KILN_F32, S(3, n), -3, 3));
            c->quant = o == 0;
            c = add1(f, along[o], inp(KILN_F32, S(n, 5), -3, 3));
            c->quant = o == 0;
            attr(f, c, "axis=0");
            c = add1(f, along[o], inp(KILN_F32, S(2, n, 3), -3, 3));
            c->quant = o == 0;
            attr(f, c, "axis=1");
            if (o == 0) attr(f, c, "keepdims=1");
            add1(f, along[o], inp(KILN_F32, S(n), -3, 3));
            attr(f, add1(f, along[o], inp(KILN_F32, S(n, 17), -3, 3)), "axis=-2");
            add1(f, along[o], inp(KILN_F32, S(7, n), -3, 3)); /* continuous: no ties */
        }
    }
    /* several axes */
    for (int o = 0; o < 3; o++) {
        attr(f, add1(f, reds[o], inp(KILN_F32, S(7, 17, 3), -2, 2)), "axes=[0,2]");
        tcase *c = add1(f, reds[o], inp(KILN_F32, S(3, 129, 2), -2, 2));
        attr(f, c, "axes=[-1,0]");
        attr(f, c, "keepdims=1");
        add1(f, reds[o], inp(KILN_F32, S(1, 17, 129), -2, 2));
        attr(f, add1(f, reds[o], inp(KILN_F32, S(3, 7, 17, 1), -2, 2)), "axes=[1,2]");
        /* f64, and edge values (NaN propagation, infinities) */
        attr(f, add1(f, reds[o], inp(KILN_F64, S(7, 129), -2, 2)), "axes=[1]");
        add1(f, reds[o], inp_data(KILN_F32, S(17), specials));
        add1(f, reds[o], inp_data(KILN_F32, S(17), extremes));
    }
    for (int o = 0; o < 3; o++) {
        attr(f, add1(f, along[o], inp(KILN_F64, S(17, 129), -3, 3)), "axis=1");
        add1(f, along[o], inp_data(KILN_F32, S(17), specials));
        add1(f, along[o], inp_data(KILN_F32, S(17), extremes));
        /* large logits: exp underflows for all but the largest */
        add1(f, along[o], inp(KILN_F32, S(3, 129), -300, 300));
    }
    /* integers: exact */
    attr(f, add1(f, "reduce_sum", inp(KILN_I32, S(3, 129), -100, 100)), "axes=[1]");
    attr(f, add1(f, "reduce_sum", inp(KILN_I64, S(17, 7), -100, 100)), "axes=[0]");
    attr(f, add1(f, "reduce_max", inp(KILN_I32, S(17, 7), -100, 100)), "axes=[0]");
    add1(f, "reduce_max", inp(KILN_I64, S(129), -100, 100));
    attr(f, add1(f, "argmax", inp(KILN_I32, S(7, 129), -3, 3)), "axis=1");
    attr(f, add1(f, "argmax", inp(KILN_I32, S(17, 3), -3, 3)), "axis=0");
}

/* matmul (ir/ops_matmul.c): M, N and K over the sizes, every ta/tb. */
static void add_mm(family *f, kiln_dtype t, int64_t m, int64_t n, int64_t k, int ta, int tb,
                   double lo, double hi)
{
    op_input a = inp(t, ta ? S(k, m) : S(m, k), lo, hi);
    op_input b = inp(t, tb ? S(n, k) : S(k, n), lo, hi);
    tcase *c = add2(f, "matmul", a, b);
    attr(f, c, "ta=%d", ta);
    attr(f, c, "tb=%d", tb);
}

static void gen_matmul(family *f)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* two Latin rows: M, N and K each take every size */
            for (int i = 0; i < 5; i++) {
                add_mm(f, KILN_F32, SIZES[i], SIZES[(i + 1) % 5], SIZES[(i + 2) % 5], ta, tb, -1,
                       1);
                add_mm(f, KILN_F32, SIZES[i], SIZES[(i + 3) % 5], SIZES[(i + 4) % 5], ta, tb, -1,
                       1);
            }
            add_mm(f, KILN_F32, 129, 129, 129, ta, tb, -1, 1);
            add_mm(f, KILN_F32, 17, 17, 17, ta, tb, -1, 1);
            add_mm(f, KILN_F32, 1, 1, 129, ta, tb, -1, 1);
            add_mm(f, KILN_F32, 129, 7, 1, ta, tb, -1, 1);
            add_mm(f, KILN_F64, 17, 7, 129, ta, tb, -1, 1);
            add_mm(f, KILN_I32, 7, 17, 3, ta, tb, -5, 5);
            add_mm(f, KILN_I64, 3, 7, 129, ta, tb, -5, 5);
            /* batch axes broadcast: [2,1,M,K] @ [3,K,N] */
            op_input a = inp(KILN_F32, ta ? S(2, 1, 17, 7) : S(2, 1, 7, 17), -1, 1);
            op_input b = inp(KILN_F32, tb ? S(3, 129, 17) : S(3, 17, 129), -1, 1);
            tcase *c = add2(f, "matmul", a, b);
            attr(f, c, "ta=%d", ta);
            attr(f, c, "tb=%d", tb);
            a = inp(KILN_F32, ta ? S(3, 129, 3) : S(3, 3, 129), -1, 1);
            b = inp(KILN_F32, tb ? S(1, 1, 129) : S(1, 129, 1), -1, 1);
            c = add2(f, "matmul", a, b);
            attr(f, c, "ta=%d", ta);
            attr(f, c, "tb=%d", tb);
            /* rank-1 operands (NumPy's rules; ta/tb leave them alone) */
            c = add2(f, "matmul", inp(KILN_F32, S(17), -1, 1),
                     inp(KILN_F32, tb ? S(129, 17) : S(17, 129), -1, 1));
            attr(f, c, "ta=%d", ta);
            attr(f, c, "tb=%d", tb);
            c = add2(f, "matmul", inp(KILN_F32, ta ? S(129, 3) : S(3, 129), -1, 1),
                     inp(KILN_F32, S(129), -1, 1));
            attr(f, c, "ta=%d", ta);
            attr(f, c, "tb=%d", tb);
            c = add2(f, "matmul", inp(KILN_F32, S(7), -1, 1),
                     inp(KILN_F32, tb ? S(2, 3, 7) : S(2, 7, 3), -1, 1));
            attr(f, c, "ta=%d", ta);
            attr(f, c, "tb=%d", tb);
        }
    add2(f, "matmul", inp(KILN_F32, S(129), -1, 1), inp(KILN_F32, S(129), -1, 1));
    add2(f, "matmul", inp(KILN_F32, S(1), -1, 1), inp(KILN_F32, S(1), -1, 1));
    add2(f, "matmul", inp(KILN_F32, S(2, 3, 17), -1, 1), inp(KILN_F32, S(17), -1, 1));
    /* edge values through a product: NaN and inf spread along rows/columns */
    add2(f, "matmul", inp_data(KILN_F32, S(1, 17), specials),
         inp_data(KILN_F32, S(17, 1), specials_rot));
}

/* Shape ops (ir/ops_shape.c). */
static void gen_shape(family *f)
{
    attr(f, add1(f, "reshape", inp(KILN_F32, S(3, 129), 0, 0)), "shape=[129,3]");
    attr(f, add1(f, "reshape", inp(KILN_F32, S(17, 7), 0, 0)), "shape=[-1]");
    attr(f, add1(f, "reshape", inp(KILN_F32, S(7, 17, 3), 0, 0)), "shape=[17,-1]");
    attr(f, add1(f, "reshape", inp(KILN_F32, S(129), 0, 0)), "shape=[1,129,1]");
    attr(f, add1(f, "reshape", inp(KILN_F32, S(1), 0, 0)), "shape=[]");
    attr(f, add1(f, "reshape", inp(KILN_I32, S(3, 17), -9, 9)), "shape=[51]");
    attr(f, add1(f, "reshape", inp(KILN_BOOL, S(7, 3), 0, 2)), "shape=[3,7]");

    attr(f, add1(f, "flatten", inp(KILN_F32, S(3, 7, 17), 0, 0)), "axis=1");
    attr(f, add1(f, "flatten", inp(KILN_F32, S(129, 1, 3), 0, 0)), "axis=2");
    attr(f, add1(f, "flatten", inp(KILN_F32, S(17, 3, 7), 0, 0)), "axis=0");
    attr(f, add1(f, "flatten", inp(KILN_F64, S(1, 129), 0, 0)), "axis=-1");

    attr(f, add1(f, "permute", inp(KILN_F32, S(3, 7, 17), 0, 0)), "perm=[2,0,1]");
    attr(f, add1(f, "permute", inp(KILN_F32, S(17, 129), 0, 0)), "perm=[1,0]");
    attr(f, add1(f, "permute", inp(KILN_F32, S(3, 1, 129, 7), 0, 0)), "perm=[3,2,0,1]");
    attr(f, add1(f, "permute", inp(KILN_F32, S(7, 17, 3), 0, 0)), "perm=[1,2,0]");
    attr(f, add1(f, "permute", inp(KILN_I32, S(17, 7), -9, 9)), "perm=[1,0]");
    attr(f, add1(f, "permute", inp(KILN_BOOL, S(3, 129), 0, 2)), "perm=[1,0]");
    attr(f, add1(f, "permute", inp(KILN_F64, S(129, 17), 0, 0)), "perm=[-1,0]");

    attr(f, add1(f, "flip", inp(KILN_F32, S(3, 7, 17), 0, 0)), "dims=[0,2]");
    attr(f, add1(f, "flip", inp(KILN_F32, S(17, 129), 0, 0)), "dims=[-1]");
    attr(f, add1(f, "flip", inp(KILN_F32, S(1, 129, 3), 0, 0)), "dims=[1,0]");
    attr(f, add1(f, "flip", inp(KILN_I32, S(7, 3), -9, 9)), "dims=[0,1]");
    attr(f, add1(f, "flip", inp(KILN_F64, S(129), 0, 0)), "dims=[]");

    attr(f, add1(f, "broadcast_to", inp(KILN_F32, S(17, 1), 0, 0)), "shape=[17,129]");
    attr(f, add1(f, "broadcast_to", inp(KILN_F32, S(129), 0, 0)), "shape=[3,129]");
    attr(f, add1(f, "broadcast_to", inp(KILN_F32, S(1, 7, 1), 0, 0)), "shape=[3,7,17]");
    attr(f, add1(f, "broadcast_to", inp(KILN_F32, S0, 0, 0)), "shape=[7,3]");
    attr(f, add1(f, "broadcast_to", inp(KILN_F32, S(1), 0, 0)), "shape=[129]");
    attr(f, add1(f, "broadcast_to", inp(KILN_BOOL, S(17, 1), 0, 2)), "shape=[17,3]");
    attr(f, add1(f, "broadcast_to", inp(KILN_I64, S(3, 1), -9, 9)), "shape=[2,3,129]");

    static const struct {
        shp s;
        int axis;
        int64_t start, end, step;
    } slices[] = {
        {{2, {17, 129}}, 1, 1, 128, 3},    {{2, {17, 129}}, 0, -7, 17, 2},
        {{1, {129}}, 0, 0, 129, 1},        {{1, {129}}, 0, 5, -5, 7},
        {{3, {3, 7, 17}}, 2, 16, 17, 1},   {{3, {3, 7, 17}}, 1, -100, 100, 3},
        {{2, {7, 129}}, -1, 0, 129, 129},  {{2, {3, 1}}, 1, 0, 1, 1},
        {{2, {129, 3}}, 0, 1, 129, 1},
    };
    for (size_t k = 0; k < sizeof slices / sizeof slices[0]; k++) {
        tcase *c = add1(f, "slice", inp(KILN_F32, slices[k].s, 0, 0));
        attr(f, c, "axis=%d", slices[k].axis);
        attr(f, c, "start=%lld", (long long)slices[k].start);
        attr(f, c, "end=%lld", (long long)slices[k].end);
        attr(f, c, "step=%lld", (long long)slices[k].step);
    }
    tcase *c = add1(f, "slice", inp(KILN_I32, S(3, 129), -9, 9));
    attr(f, c, "axis=1");
    attr(f, c, "start=2");
    attr(f, c, "end=100");
    attr(f, c, "step=5");

    static const struct {
        shp s;
        int axis;
        int64_t start, step, size;
    } unslices[] = {
        {{2, {17, 43}}, 1, 1, 3, 129}, {{2, {3, 7}}, 0, 0, 2, 7},
        {{2, {1, 17}}, 0, 2, 1, 3},    {{2, {7, 129}}, 1, 0, 1, 129},
        {{1, {129}}, 0, 0, 1, 129},    {{3, {3, 7, 17}}, 2, 3, 7, 129},
        {{2, {3, 1}}, -1, 16, 1, 17},
    };
    for (size_t k = 0; k < sizeof unslices / sizeof unslices[0]; k++) {
        c = add1(f, "unslice", inp(KILN_F32, unslices[k].s, 0, 0));
        attr(f, c, "axis=%d", unslices[k].axis);
        attr(f, c, "start=%lld", (long long)unslices[k].start);
        attr(f, c, "step=%lld", (long long)unslices[k].step);
        attr(f, c, "size=%lld", (long long)unslices[k].size);
    }

    c = add_case(f, "concat", 4,
                 (op_input[]){inp(KILN_F32, S(3, 1), 0, 0), inp(KILN_F32, S(3, 7), 0, 0),
                              inp(KILN_F32, S(3, 17), 0, 0), inp(KILN_F32, S(3, 129), 0, 0)});
    attr(f, c, "axis=1");
    c = add3(f, "concat", inp(KILN_F32, S(1, 17), 0, 0), inp(KILN_F32, S(7, 17), 0, 0),
             inp(KILN_F32, S(129, 17), 0, 0));
    attr(f, c, "axis=0");
    add1(f, "concat", inp(KILN_F32, S(17), 0, 0));
    attr(f, add2(f, "concat", inp(KILN_F32, S(3, 7, 1), 0, 0), inp(KILN_F32, S(3, 7, 3), 0, 0)),
         "axis=-1");
    add2(f, "concat", inp(KILN_I32, S(7), -9, 9), inp(KILN_I32, S(129), -9, 9));
    attr(f, add2(f, "concat", inp(KILN_BOOL, S(3, 2), 0, 2), inp(KILN_BOOL, S(3, 17), 0, 2)),
         "axis=1");
    attr(f, add2(f, "concat", inp(KILN_F64, S(7, 3), 0, 0), inp(KILN_F64, S(7, 129), 0, 0)),
         "axis=1");
}

/* Losses and one_hot (ir/ops_loss.c). */
static void gen_loss(family *f)
{
    static const struct {
        int64_t n, c;
        kiln_dtype lab;
    } ce[] = {
        {1, 1, KILN_I32},   {1, 3, KILN_I64},  {3, 7, KILN_I32},   {7, 17, KILN_I64},
        {17, 129, KILN_I32}, {129, 3, KILN_I64}, {3, 1, KILN_I32},  {129, 17, KILN_I32},
        {7, 129, KILN_I64}, {17, 7, KILN_U8},   {129, 129, KILN_I32},
    };
    for (size_t k = 0; k < sizeof ce / sizeof ce[0]; k++) {
        add2(f, "cross_entropy", inp(KILN_F32, S(ce[k].n, ce[k].c), -4, 4),
             inp(ce[k].lab, S(ce[k].n), 0, (double)ce[k].c));
        if (ce[k].c >= 3) {
            /* an ignore_index among the labels, in range and out of it */
            tcase *c = add2(f, "cross_entropy", inp(KILN_F32, S(ce[k].n, ce[k].c), -4, 4),
                            inp(KILN_I32, S(ce[k].n), 0, (double)ce[k].c));
            attr(f, c, "ignore_index=2");
            c = add2(f, "cross_entropy", inp(KILN_F32, S(ce[k].n, ce[k].c), -4, 4),
                     inp(KILN_I64, S(ce[k].n), -1, (double)ce[k].c));
            attr(f, c, "ignore_index=-1");
        }
    }
    /* spatial positions: [N, C, d...] */
    add2(f, "cross_entropy", inp(KILN_F32, S(3, 7, 1, 17), -4, 4),
         inp(KILN_I32, S(3, 1, 17), 0, 7));
    add2(f, "cross_entropy", inp(KILN_F32, S(2, 17, 3, 7), -4, 4),
         inp(KILN_I64, S(2, 3, 7), 0, 17));
    add2(f, "cross_entropy", inp(KILN_F32, S(1, 3, 129), -4, 4), inp(KILN_I32, S(1, 129), 0, 3));
    /* large logits, f64 */
    add2(f, "cross_entropy", inp(KILN_F32, S(17, 129), -300, 300),
         inp(KILN_I32, S(17), 0, 129));
    add2(f, "cross_entropy", inp(KILN_F64, S(7, 17), -4, 4), inp(KILN_I32, S(7), 0, 17));

    static const shp lshapes[] = {{1, {1}}, {1, {3}},      {2, {3, 129}}, {2, {17, 1}},
                                  {2, {129, 7}}, {3, {7, 17, 3}}};
    for (size_t s = 0; s < sizeof lshapes / sizeof lshapes[0]; s++) {
        add2(f, "mse_loss", inp(KILN_F32, lshapes[s], -3, 3), inp(KILN_F32, lshapes[s], -3, 3));
        add2(f, "bce_with_logits", inp(KILN_F32, lshapes[s], -10, 10),
             inp(KILN_F32, lshapes[s], 0, 1));
        add2(f, "l1_loss", inp(KILN_F32, lshapes[s], -3, 3), inp(KILN_F32, lshapes[s], -3, 3));
    }
    add2(f, "mse_loss", inp(KILN_F64, S(17, 129), -3, 3), inp(KILN_F64, S(17, 129), -3, 3));
    add2(f, "bce_with_logits", inp(KILN_F64, S(17, 129), -10, 10),
         inp(KILN_F64, S(17, 129), 0, 1));
    add2(f, "bce_with_logits", inp(KILN_F32, S(3, 129), -150, 150), inp(KILN_F32, S(3, 129), 0, 1));
    add2(f, "mse_loss", inp_data(KILN_F32, S(17), extremes),
         inp_data(KILN_F32, S(17), specials_rot));

    attr(f, add1(f, "one_hot", inp(KILN_I32, S(129), -1, 9)), "depth=7");
    tcase *c = add1(f, "one_hot", inp(KILN_I64, S(3, 17), -2, 19));
    attr(f, c, "depth=17");
    attr(f, c, "axis=1");
    attr(f, add1(f, "one_hot", inp(KILN_I32, S(7), 0, 129)), "depth=129");
    c = add1(f, "one_hot", inp(KILN_U8, S(1), 0, 3));
    attr(f, c, "depth=3");
    attr(f, c, "dtype=f64");
    c = add1(f, "one_hot", inp(KILN_I32, S(17, 3), 0, 2));
    attr(f, c, "depth=1");
    attr(f, c, "axis=0");
    attr(f, c, "dtype=i32");
    c = add1(f, "one_hot", inp(KILN_I64, S(3, 7), -1, 4));
    attr(f, c, "depth=3");
    attr(f, c, "axis=-2");
    attr(f, c, "dtype=bool");
}

/* Every row of tests/opcases/<family>.c, with its own data. */
static void gen_tables(family *f)
{
    static const struct {
        const op_case *cases;
        const int *n;
    } tables[] = {
        {kiln_opcases_elementwise, &kiln_nopcases_elementwise},
        {kiln_opcases_reduce, &kiln_nopcases_reduce},
        {kiln_opcases_matmul, &kiln_nopcases_matmul},
        {kiln_opcases_shape, &kiln_nopcases_shape},
        {kiln_opcases_loss, &kiln_nopcases_loss},
        {kiln_opcases_conv, &kiln_nopcases_conv},
        {kiln_opcases_norm, &kiln_nopcases_norm},
        {kiln_opcases_pool, &kiln_nopcases_pool},
    };
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (int i = 0; i < *tables[t].n; i++) {
            const op_case *row = &tables[t].cases[i];
            tcase *c = add_case(f, row->op, row->ninputs, row->in);
            c->c = *row;
        }
}

typedef struct family_def {
    const char *name;
    void (*gen)(family *);
    uint64_t seed;
} family_def;

/* f32 matmuls whose M, N and K straddle the packed GEMM's register tiles
 * (MR 6..14 rows, NR 32..64 columns), vector widths and cache blocks (KC
 * in the hundreds), in all transpose combinations. */
static void gen_gemm_tiles(family *f)
{
    static const int64_t mnk[][3] = {{13, 31, 47},  {14, 32, 48},  {15, 33, 49},
                                     {63, 64, 65},  {65, 63, 64},  {97, 95, 385},
                                     {1, 65, 383},  {29, 129, 257}, {130, 17, 1}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (size_t i = 0; i < sizeof mnk / sizeof mnk[0]; i++)
                add_mm(f, KILN_F32, mnk[i][0], mnk[i][1], mnk[i][2], ta, tb, -1, 1);
}

/* train_eval, batchnorm_stats, batchnorm_apply, batchnorm_sums, dropout
 * (ir/ops_norm.c):
 * channels and per-channel counts of the five sizes; a channel around 1000
 * with a spread of 1 (the stats' shifted sums); dropout over odd lengths,
 * with the step drawn as any float (the same truncation on both sides). */
static void gen_norm(family *f)
{
    add2(f, "train_eval", inp(KILN_F32, S(3, 129), -3, 3), inp(KILN_F32, S(3, 129), -3, 3));
    add2(f, "train_eval", inp(KILN_F64, S(17, 1), -3, 3), inp(KILN_F64, S(17, 1), -3, 3));
    add2(f, "train_eval", inp(KILN_I32, S(7), -9, 9), inp(KILN_I32, S(7), -9, 9));
    static const shp xs[] = {{4, {7, 3, 17, 1}}, {2, {129, 17}}, {3, {1, 7, 129}},
                             {4, {3, 17, 3, 7}}, {2, {3, 1}}};
    for (size_t k = 0; k < sizeof xs / sizeof xs[0]; k++) {
        shp x = xs[k], c = xs[k];
        for (int d = 0; d < c.rank; d++)
            if (d != 1) c.d[d] = 1;
        add1(f, "batchnorm_stats", inp(KILN_F32, x, -3, 3));
        add_case(f, "batchnorm_apply", 4,
                 (op_input[]){inp(KILN_F32, x, -3, 3), inp(KILN_F32, c, -1, 1),
                              inp(KILN_F32, c, 0.1, 2), inp(KILN_F32, c, -1, 1)});
        add3(f, "batchnorm_sums", inp(KILN_F32, x, -3, 3), inp(KILN_F32, x, -3, 3),
             inp(KILN_F32, c, -1, 1));
    }
    add3(f, "batchnorm_sums", inp(KILN_F64, S(7, 3, 17), -3, 3), inp(KILN_F64, S(7, 3, 17), -3, 3),
         inp(KILN_F64, S(1, 3, 1), -1, 1));
    add1(f, "batchnorm_stats", inp(KILN_F32, S(17, 3, 7), 1000, 1001));
    add1(f, "batchnorm_stats", inp(KILN_F64, S(7, 3, 17), -3, 3));
    add_case(f, "batchnorm_apply", 4,
             (op_input[]){inp(KILN_F64, S(7, 3, 17), -3, 3), inp(KILN_F64, S0, -1, 1),
                          inp(KILN_F64, S(3, 1), 0.1, 2), inp(KILN_F64, S(17), -1, 1)});
    static const shp ds[] = {{1, {129}}, {2, {3, 129}}, {2, {17, 1}}, {1, {7}}, {3, {7, 17, 3}}};
    static const char *const ps[] = {"p=0.5", "p=0.1", "p=0.9", "p=0.5", "p=0.25"};
    for (size_t k = 0; k < sizeof ds / sizeof ds[0]; k++) {
        tcase *c = add2(f, "dropout", inp(KILN_F32, ds[k], -3, 3), inp(KILN_F32, S0, 0, 1000));
        attr(f, c, "%s", ps[k]);
        attr(f, c, "seed=%d", (int)(31 * k + 5));
    }
    tcase *c = add2(f, "dropout", inp(KILN_F64, S(17, 7), -3, 3), inp(KILN_I64, S0, 0, 1000));
    attr(f, c, "p=0.5");
}

/* Pooling, upsampling, padding and their gradients (ir/ops_pool.c): odd
 * sizes, 1x1 planes, kernels larger than the stride, padding, dilation,
 * ceil_mode, windows large enough to loop over their candidates, ties
 * (quantized inputs: max_pool2d_grad's first-maximum rule), bilinear both
 * ways with and without align_corners, nearest by non-integer ratios. */
static int64_t pool_out(int64_t L, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode)
{
    int64_t o = (L + 2 * p - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0)) / s + 1;
    if (ceil_mode && (o - 1) * s >= L + p) o--;
    return o;
}

static void gen_pool(family *f)
{
    static const struct {
        int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, d;
        int ceil_mode;
    } win[] = {
        {2, 3, 7, 7, 2, 2, 2, 2, 0, 0, 1, 0},     {1, 3, 17, 17, 3, 3, 2, 2, 1, 1, 1, 0},
        {2, 1, 17, 129, 3, 3, 1, 1, 1, 1, 1, 0},  {1, 7, 7, 17, 2, 2, 2, 2, 0, 0, 1, 1},
        {3, 1, 17, 17, 3, 3, 2, 2, 1, 1, 2, 0},   {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0},
        {2, 3, 3, 7, 3, 2, 1, 2, 1, 1, 1, 1},     {1, 2, 17, 17, 9, 9, 1, 1, 4, 4, 1, 0},
        {1, 2, 129, 3, 3, 3, 3, 3, 1, 0, 1, 1},   {1, 1, 17, 17, 17, 17, 17, 17, 0, 0, 1, 0},
        {2, 2, 7, 129, 3, 5, 2, 3, 1, 2, 1, 1},
    };
    for (size_t k = 0; k < sizeof win / sizeof win[0]; k++) {
        for (int avg = 0; avg < 2; avg++) {
            if (avg && win[k].d > 1) continue;
            int64_t oh = pool_out(win[k].h, win[k].kh, win[k].sh, win[k].ph, win[k].d,
                                  win[k].ceil_mode);
            int64_t ow = pool_out(win[k].w, win[k].kw, win[k].sw, win[k].pw, win[k].d,
                                  win[k].ceil_mode);
            shp xs = S(win[k].n, win[k].c, win[k].h, win[k].w);
            shp ys = S(win[k].n, win[k].c, oh, ow);
            const char *op = avg ? "avg_pool2d" : "max_pool2d";
            for (int grad = 0; grad < 2; grad++) {
                tcase *c;
                if (!grad) c = add1(f, op, inp(KILN_F32, xs, -3, 3));
                else if (avg) c = add1(f, "avg_pool2d_grad", inp(KILN_F32, ys, -3, 3));
                else c = add2(f, "max_pool2d_grad", inp(KILN_F32, xs, -3, 3),
                              inp(KILN_F32, ys, -3, 3));
                c->quant = k % 2 == 0; /* ties */
                attr(f, c, "kernel=[%lld,%lld]", (long long)win[k].kh, (long long)win[k].kw);
                attr(f, c, "stride=[%lld,%lld]", (long long)win[k].sh, (long long)win[k].sw);
                attr(f, c, "padding=[%lld,%lld]", (long long)win[k].ph, (long long)win[k].pw);
                if (!avg) attr(f, c, "dilation=[%lld,%lld]", (long long)win[k].d,
                               (long long)win[k].d);
                attr(f, c, "ceil_mode=%d", win[k].ceil_mode);
                if (avg) attr(f, c, "count_include_pad=%d", (int)(k % 3 != 1));
                if (grad && avg) attr(f, c, "size=[%lld,%lld]", (long long)win[k].h,
                                      (long long)win[k].w);
            }
        }
    }
    /* f64, and NaN / inf inside windows */
    attr(f, add1(f, "max_pool2d", inp(KILN_F64, S(1, 3, 7, 17), -3, 3)), "kernel=[3]");
    attr(f, add1(f, "avg_pool2d", inp(KILN_F64, S(1, 3, 7, 17), -3, 3)), "kernel=[3]");
    attr(f, add1(f, "max_pool2d", inp_data(KILN_F32, S(1, 1, 1, 17), specials)), "kernel=[1,2]");
    tcase *c = add2(f, "max_pool2d_grad", inp_data(KILN_F32, S(1, 1, 1, 17), specials),
                    inp(KILN_F32, S(1, 1, 1, 8), -3, 3));
    attr(f, c, "kernel=[1,2]");
    c = add2(f, "max_pool2d_grad", inp_data(KILN_F32, S(1, 1, 1, 17), specials_rot),
             inp(KILN_F32, S(1, 1, 1, 17), -3, 3));
    attr(f, c, "kernel=[1,3]");
    attr(f, c, "stride=[1]");
    attr(f, c, "padding=[0,1]");

    static const struct {
        shp x;
        int64_t oh, ow;
    } ad[] = {{{4, {2, 3, 7, 7}}, 3, 3},     {{4, {1, 2, 17, 129}}, 1, 1},
              {{4, {1, 3, 17, 17}}, 7, 5},   {{4, {1, 1, 3, 3}}, 7, 7},
              {{4, {2, 1, 129, 1}}, 17, 1},  {{3, {3, 7, 17}}, 7, 17},
              {{4, {1, 1, 3, 129}}, 2, 129}};
    for (size_t k = 0; k < sizeof ad / sizeof ad[0]; k++) {
        shp x = ad[k].x, y = x;
        y.d[y.rank - 2] = ad[k].oh;
        y.d[y.rank - 1] = ad[k].ow;
        c = add1(f, "adaptive_avg_pool2d", inp(KILN_F32, x, -3, 3));
        attr(f, c, "output_size=[%lld,%lld]", (long long)ad[k].oh, (long long)ad[k].ow);
        c = add1(f, "adaptive_avg_pool2d_grad", inp(KILN_F32, y, -3, 3));
        attr(f, c, "size=[%lld,%lld]", (long long)x.d[x.rank - 2], (long long)x.d[x.rank - 1]);
    }

    static const struct {
        shp x;
        int64_t scale, oh, ow; /* oh, ow: a size (scale 0) */
        int mode, align;
    } up[] = {{{4, {2, 3, 7, 7}}, 2, 0, 0, 0, 0},    {{4, {1, 2, 17, 17}}, 0, 7, 5, 0, 0},
              {{4, {1, 1, 3, 129}}, 3, 0, 0, 0, 0},  {{4, {1, 3, 7, 17}}, 2, 0, 0, 1, 0},
              {{4, {1, 2, 7, 7}}, 0, 17, 3, 1, 1},   {{4, {1, 1, 129, 17}}, 0, 7, 3, 1, 0},
              {{4, {1, 1, 1, 1}}, 2, 0, 0, 1, 0},    {{4, {1, 2, 3, 7}}, 0, 17, 129, 0, 0},
              {{3, {2, 7, 3}}, 0, 7, 3, 1, 1},       {{4, {1, 1, 5, 7}}, 0, 129, 17, 1, 0}};
    for (size_t k = 0; k < sizeof up / sizeof up[0]; k++) {
        shp x = up[k].x, y = x;
        int r = x.rank;
        y.d[r - 2] = up[k].scale ? x.d[r - 2] * up[k].scale : up[k].oh;
        y.d[r - 1] = up[k].scale ? x.d[r - 1] * up[k].scale : up[k].ow;
        c = add1(f, "upsample", inp(KILN_F32, x, -3, 3));
        if (up[k].scale) attr(f, c, "scale=%lld", (long long)up[k].scale);
        else attr(f, c, "size=[%lld,%lld]", (long long)up[k].oh, (long long)up[k].ow);
        attr(f, c, "mode=%d", up[k].mode);
        attr(f, c, "align_corners=%d", up[k].align);
        c = add1(f, "upsample_grad", inp(KILN_F32, y, -3, 3));
        attr(f, c, "size=[%lld,%lld]", (long long)x.d[r - 2], (long long)x.d[r - 1]);
        attr(f, c, "scale=%lld", (long long)up[k].scale);
        attr(f, c, "mode=%d", up[k].mode);
        attr(f, c, "align_corners=%d", up[k].align);
    }

    static const struct {
        shp x;
        int n, mode;
        int64_t p[4];
    } pads[] = {{{4, {2, 3, 7, 7}}, 4, 0, {1, 1, 1, 1}},   {{4, {1, 1, 17, 129}}, 4, 0, {2, -1, 0, 3}},
                {{4, {1, 3, 7, 17}}, 4, 1, {3, 2, 1, 6}},  {{2, {3, 129}}, 2, 0, {5, 0, 0, 0}},
                {{4, {1, 1, 1, 1}}, 4, 0, {1, 2, 0, 0}},   {{3, {2, 17, 3}}, 2, 1, {2, 2, 0, 0}},
                {{1, {17}}, 2, 0, {-3, 12, 0, 0}},         {{4, {1, 2, 7, 3}}, 4, 0, {11, 12, 9, 10}},
                {{2, {2, 120}}, 2, 1, {4, 5, 0, 0}},       {{4, {1, 1, 7, 131}}, 4, 0, {-1, -1, 0, 0}}};
    for (size_t k = 0; k < sizeof pads / sizeof pads[0]; k++) {
        shp x = pads[k].x, y = x;
        for (int i = 0; i < pads[k].n / 2; i++)
            y.d[x.rank - 1 - i] += pads[k].p[2 * i] + pads[k].p[2 * i + 1];
        char ps[96];
        if (pads[k].n == 2)
            snprintf(ps, sizeof ps, "pads=[%lld,%lld]", (long long)pads[k].p[0],
                     (long long)pads[k].p[1]);
        else
            snprintf(ps, sizeof ps, "pads=[%lld,%lld,%lld,%lld]", (long long)pads[k].p[0],
                     (long long)pads[k].p[1], (long long)pads[k].p[2], (long long)pads[k].p[3]);
        c = add1(f, "pad", inp(KILN_F32, x, -3, 3));
        attr(f, c, "%s", ps);
        attr(f, c, "mode=%d", pads[k].mode);
        if (k % 2) attr(f, c, "value=%g", 0.5 * (double)k);
        c = add1(f, "pad_grad", inp(KILN_F32, y, -3, 3));
        attr(f, c, "%s", ps);
        attr(f, c, "mode=%d", pads[k].mode);
    }
}

/* The conv family (ir/ops_conv.def) over the five sizes, through the GEMM
 * route of passes/conv_lower.c (one group, a few groups) and the direct
 * kernels (17 groups): stride, padding, dilation, output_padding, and dy or
 * cols covering fewer positions than the convolution has. Inputs are
 * positive, so the GEMM's f32 sums stay within the tolerance. */
static void gen_conv(family *f)
{
    tcase *c = add_case(f, "conv2d", 3,
                        (op_input[]){inp(KILN_F32, S(1, 3, 7, 129), 0, 1),
                                     inp(KILN_F32, S(17, 3, 3, 3), 0, 1), inp(KILN_F32, S(17), 0, 1)});
    attr(f, c, "padding=[1]");
    c = add_case(f, "conv2d", 3,
                 (op_input[]){inp(KILN_F32, S(3, 4, 7, 17), 0, 1), inp(KILN_F32, S(6, 2, 3, 3), 0, 1),
                              inp(KILN_F32, S(6), 0, 1)});
    attr(f, c, "groups=2");
    attr(f, c, "stride=[2]");
    c = add2(f, "conv2d", inp(KILN_F32, S(3, 17, 7, 7), 0, 1), inp(KILN_F32, S(17, 1, 3, 3), 0, 1));
    attr(f, c, "groups=17");
    attr(f, c, "padding=[1]");
    c = add2(f, "conv2d", inp(KILN_F32, S(7, 3, 17, 1), 0, 1), inp(KILN_F32, S(129, 3, 1, 1), 0, 1));
    c = add_case(f, "conv_transpose2d", 3,
                 (op_input[]){inp(KILN_F32, S(1, 17, 3, 129), 0, 1),
                              inp(KILN_F32, S(17, 3, 3, 3), 0, 1), inp(KILN_F32, S(3), 0, 1)});
    attr(f, c, "stride=[2]");
    attr(f, c, "padding=[1]");
    c = add2(f, "conv_transpose2d", inp(KILN_F32, S(3, 4, 7, 5), 0, 1),
             inp(KILN_F32, S(4, 1, 2, 3), 0, 1));
    attr(f, c, "groups=2");
    attr(f, c, "dilation=[1,2]");
    attr(f, c, "output_padding=[1]");
    c = add2(f, "conv_transpose2d", inp(KILN_F32, S(1, 17, 3, 3), 0, 1),
             inp(KILN_F32, S(17, 1, 3, 3), 0, 1));
    attr(f, c, "groups=17");
    attr(f, c, "stride=[3]");
    c = add2(f, "conv2d_grad_weight", inp(KILN_F32, S(1, 129, 3, 3), 0, 1),
             inp(KILN_F32, S(1, 7, 1, 1), 0, 1));
    attr(f, c, "kernel=[3]");
    c = add2(f, "conv2d_grad_weight", inp(KILN_F32, S(3, 17, 7, 7), 0, 1),
             inp(KILN_F32, S(3, 1, 7, 7), 0, 1));
    attr(f, c, "kernel=[3]");
    attr(f, c, "padding=[1]");
    c = add2(f, "conv2d_grad_weight", inp(KILN_F32, S(1, 17, 7, 7), 0, 1),
             inp(KILN_F32, S(1, 17, 2, 3), 0, 1));
    attr(f, c, "kernel=[3,2]");
    attr(f, c, "stride=[2]");
    attr(f, c, "groups=17");
    c = add1(f, "im2col", inp(KILN_F32, S(1, 3, 7, 129), -1, 1));
    attr(f, c, "kernel=[3]");
    attr(f, c, "padding=[1]");
    c = add1(f, "im2col", inp(KILN_F32, S(17, 1, 3, 3), -1, 1));
    attr(f, c, "kernel=[2]");
    attr(f, c, "stride=[2]");
    attr(f, c, "dilation=[1]");
    c = add1(f, "col2im", inp(KILN_F32, S(27, 1, 7, 129), -1, 1));
    attr(f, c, "size=[7,129]");
    attr(f, c, "kernel=[3]");
    attr(f, c, "padding=[1]");
    c = add1(f, "col2im", inp(KILN_F32, S(4, 17, 3, 1), -1, 1));
    attr(f, c, "size=[5,3]");
    attr(f, c, "kernel=[2,1]");
    attr(f, c, "dilation=[2]");
}

static const family_def FAMILIES[] = {
    {"gemm_tiles", gen_gemm_tiles, 0x3C6EF372FE94F82Bull},
    {"unary", gen_unary, 0x9E3779B97F4A7C15ull},
    {"binary", gen_binary, 0x94D049BB133111EBull},
    {"reduce", gen_reduce, 0xD1B54A32D192ED03ull},
    {"matmul", gen_matmul, 0x8CB92BA72F3D8DD7ull},
    {"shape", gen_shape, 0xABC98388FB8FAC03ull},
    {"loss", gen_loss, 0x5851F42D4C957F2Dull},
    {"norm", gen_norm, 0x2F0B2C1E6A8D4F93ull},
    {"pool", gen_pool, 0x6A09E667F3BCC909ull},
    {"conv", gen_conv, 0xBB67AE8584CAA73Bull},
};

/* ---- values ---- */

static double *make_values(const op_input *in, bool quant, int64_t n)
{
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert_not_null(v);
    double lo = in->lo, hi = in->hi;
    if (lo == 0 && hi == 0) {
        lo = -1;
        hi = 1;
    }
    kiln_dtype t = in->dtype;
    if (t == KILN_BOOL && !in->data && lo < 0) lo = 0, hi = 2;
    for (int64_t i = 0; i < n; i++) {
        double x;
        if (in->data) x = in->data[i];
        else if (!is_float(t)) x = floor(lo + rnd() * (hi - lo));
        else if (quant) x = floor(2 * (lo + rnd() * (hi - lo))) / 2;
        else x = lo + rnd() * (hi - lo);
        if (t == KILN_F32) x = (double)(float)x;
        v[i] = x;
    }
    return v;
}

/* n doubles as dtype t's bytes (the values already fit t). */
static void *to_bytes(kiln_dtype t, const double *v, int64_t n)
{
    size_t es = kiln_dtype_size(t);
    char *p = malloc((size_t)(n ? n : 1) * es);
    cr_assert_not_null(p);
    for (int64_t i = 0; i < n; i++) {
        char *d = p + (size_t)i * es;
        switch (t) {
        case KILN_F32: { float x = (float)v[i]; memcpy(d, &x, 4); break; }
        case KILN_F64: memcpy(d, &v[i], 8); break;
        case KILN_I32: { int32_t x = (int32_t)v[i]; memcpy(d, &x, 4); break; }
        case KILN_I64: { int64_t x = (int64_t)v[i]; memcpy(d, &x, 8); break; }
        case KILN_U8: *(uint8_t *)d = (uint8_t)v[i]; break;
        case KILN_BOOL: *(uint8_t *)d = v[i] != 0; break;
        default: cr_assert_fail("no test storage for dtype %s", kiln_dtype_name(t));
        }
    }
    return p;
}

static double from_bytes(kiln_dtype t, const void *p, int64_t i)
{
    const char *s = (const char *)p + (size_t)i * kiln_dtype_size(t);
    switch (t) {
    case KILN_F32: { float x; memcpy(&x, s, 4); return x; }
    case KILN_F64: { double x; memcpy(&x, s, 8); return x; }
    case KILN_I32: { int32_t x; memcpy(&x, s, 4); return x; }
    case KILN_I64: { int64_t x; memcpy(&x, s, 8); return (double)x; }
    case KILN_U8: return *(const uint8_t *)s;
    case KILN_BOOL: return *(const uint8_t *)s; /* not normalised: 0/1 expected */
    default: return NAN;
    }
}

/* ---- measured errors ---- */

typedef struct errstat {
    int cases;
    int64_t elems;
    double max_abs, max_rel, max_ratio; /* ratio: |a-e| / (ATOL + RTOL*|e|) */
    int64_t bad;
} errstat;

static void stat_add(errstat *s, double a, double e, bool ok)
{
    s->elems++;
    if (!ok) s->bad++;
    if (isnan(e) || isinf(e)) return;
    double d = fabs(a - e);
    if (isnan(d)) d = INFINITY;
    if (d > s->max_abs) s->max_abs = d;
    if (e != 0 && d / fabs(e) > s->max_rel) s->max_rel = d / fabs(e);
    double r = d / (ATOL + RTOL * fabs(e));
    if (r > s->max_ratio) s->max_ratio = r;
}

static void stat_print(const char *what, const errstat *s)
{
    fprintf(stderr, "codegen_ops %-22s cases %4d elems %8lld max|a-e| %.3e max rel %.3e "
            "tol used %.3f bad %lld\n",
            what, s->cases, (long long)s->elems, s->max_abs, s->max_rel, s->max_ratio,
            (long long)s->bad);
}

/* ---- running a family ---- */

/* Threads the generated kernels run on (0: one per core); tests run
 * families with 1 and with 2. */
static int g_threads;
/* The backend under test: the C backend, or for some families LLVM too. */
static kiln_backend g_backend = KILN_BACKEND_C;

static kiln_program *compile_c(const kiln_graph *g, const kiln_train_options *train)
{
    kiln_compile_options opt = kiln_compile_defaults();
    opt.backend = g_backend;
    opt.threads = g_threads;
    opt.cache_dir = cache_dir;
    if (train) opt.train = *train;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &opt, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : kiln_status_str(st));
    free(err);
    cr_assert_not_null(p);
    return p;
}

/* Builds the family's graph, compiles it, runs it on both sides and compares
 * every output. */
static void run_family(const char *fname, family *f, uint64_t seed)
{
    double t0 = now();
    rng_state = seed;
    kiln_graph *g = kiln_graph_new(fname);
    cr_assert_not_null(g);
    int n = f->n;
    kiln_value(*leaves)[4] = calloc((size_t)n, sizeof *leaves);
    kiln_value *outs = calloc((size_t)n, sizeof *outs);
    cr_assert(leaves && outs);
    char name[64], desc[512];
    for (int i = 0; i < n; i++) {
        const tcase *t = &f->cases[i];
        const op_case *c = &t->c;
        for (int k = 0; k < c->ninputs; k++) {
            const op_input *in = &c->in[k];
            snprintf(name, sizeof name, "c%d_in%d", i, k);
            leaves[i][k] = k == 0 && t->param0
                               ? kiln_param(g, name, in->dtype, in->rank, in->shape,
                                            KILN_INIT_ZEROS, 0)
                               : kiln_input(g, name, in->dtype, in->rank, in->shape);
            cr_assert_geq(leaves[i][k], 0, "%s: input %d: %s", describe(t, desc, sizeof desc), k,
                          kiln_graph_error(g));
        }
        outs[i] = kiln_op(g, c->op, c->ninputs, leaves[i], c->nattrs, c->attrs);
        cr_assert_geq(outs[i], 0, "%s: %s", describe(t, desc, sizeof desc), kiln_graph_error(g));
        if (strcmp(c->op, "assign") != 0) {
            snprintf(name, sizeof name, "c%d_out", i);
            cr_assert_eq(kiln_set_output(g, outs[i], name), KILN_OK, "%s: %s",
                         describe(t, desc, sizeof desc), kiln_graph_error(g));
        }
    }
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    double t1 = now();
    kiln_program *p = compile_c(g, NULL);
    double t2 = now();

    kiln_interp *it;
    cr_assert_eq(kiln_interp_new(g, &it), KILN_OK);
    for (int i = 0; i < n; i++) {
        const tcase *t = &f->cases[i];
        for (int k = 0; k < t->c.ninputs; k++) {
            const op_input *in = &t->c.in[k];
            int64_t cnt = kiln_shape_numel(in->rank, in->shape);
            double *v = make_values(in, t->quant, cnt);
            void *bytes = to_bytes(in->dtype, v, cnt);
            snprintf(name, sizeof name, "c%d_in%d", i, k);
            cr_assert_eq(kiln_program_set(p, name, bytes,
                                          (size_t)cnt * kiln_dtype_size(in->dtype)),
                         KILN_OK, "%s", kiln_program_error(p));
            cr_assert_eq(kiln_interp_set(it, leaves[i][k], v, (size_t)cnt), KILN_OK, "%s",
                         kiln_interp_error(it));
            free(bytes);
            free(v);
        }
    }
    cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "forward: %s", kiln_program_error(p));
    double t3 = now();
    cr_assert_eq(kiln_interp_run(it), KILN_OK, "%s", kiln_interp_error(it));
    double t4 = now();

    errstat fam = {0};
    errstat per_op[KILN_OP_COUNT];
    memset(per_op, 0, sizeof per_op);
    for (int i = 0; i < n; i++) {
        const tcase *t = &f->cases[i];
        bool is_assign = strcmp(t->c.op, "assign") == 0;
        kiln_value v = is_assign ? leaves[i][0] : outs[i];
        const kiln_node *node = &g->nodes[v];
        int64_t cnt = kiln_node_numel(node);
        kiln_dtype dt = (kiln_dtype)node->dtype;
        if (is_assign) snprintf(name, sizeof name, "c%d_in0", i);
        else snprintf(name, sizeof name, "c%d_out", i);
        kiln_tensor_info info;
        memset(&info, 0, sizeof info);
        const void *got = kiln_program_data(p, name, &info);
        describe(t, desc, sizeof desc);
        cr_assert(got || cnt == 0, "%s: the program has no tensor '%s'", desc, name);
        if (!got) continue; /* an empty result */
        cr_assert_eq(info.dtype, dt, "%s: program dtype %s, graph %s", desc,
                     kiln_dtype_name(info.dtype), kiln_dtype_name(dt));
        cr_assert_eq((int64_t)info.bytes, cnt * (int64_t)kiln_dtype_size(dt), "%s", desc);
        const double *want = kiln_interp_value(it, v);
        int op = kiln_op_lookup(t->c.op);
        errstat *ps = &per_op[op];
        ps->cases++;
        fam.cases++;
        int reported = 0;
        int64_t bad = 0;
        /* f32 matmul sums in f32 (the packed GEMM): each element may differ
         * from the f64-summed reference by the summation's error bound,
         * K * 2^-24 * sum_k |a_ik b_kj| */
        double *gemm_bound = op == KILN_OP_MATMUL && dt == KILN_F32
                                 ? matmul_error_bound(g, it, node) : NULL;
        for (int64_t j = 0; j < cnt; j++) {
            double a = from_bytes(dt, got, j), e = want[j];
            bool ok;
            if (is_float(dt)) {
                double slack = gemm_bound ? gemm_bound[j] : 0.0;
                ok = isnan(e) ? isnan(a)
                              : (a == e || fabs(a - e) <= ATOL + RTOL * fabs(e) + slack);
            } else {
                ok = a == e;
            }
            stat_add(ps, a, e, ok);
            stat_add(&fam, a, e, ok);
            if (ok) continue;
            bad++;
            if (reported++ < MAX_REPORTS)
                cr_expect(ok, "%s [case %d]: element %lld of %lld: C %.9g, reference %.9g "
                          "(|a-e| %.3g)", desc, i, (long long)j, (long long)cnt, a, e,
                          fabs(a - e));
        }
        free(gemm_bound);
        cr_expect_eq(bad, 0, "%s [case %d]: %lld of %lld elements differ", desc, i,
                     (long long)bad, (long long)cnt);
    }
    double t5 = now();
    if (verbose()) {
        for (int op = 0; op < KILN_OP_COUNT; op++)
            if (per_op[op].cases) {
                char what[64];
                snprintf(what, sizeof what, "%s/%s", fname, kiln_ops[op].name);
                stat_print(what, &per_op[op]);
            }
        stat_print(fname, &fam);
        fprintf(stderr, "codegen_ops %s: %d cases, build %.2fs, compile %.2fs, C run %.3fs, "
                "reference %.2fs, compare %.2fs\n", fname, n, t1 - t0, t2 - t1, t3 - t2,
                t4 - t3, t5 - t4);
    }
    kiln_interp_free(it);
    kiln_program_free(p);
    kiln_graph_free(g);
    free(leaves);
    free(outs);
}

static void run_named(const char *name)
{
    for (size_t k = 0; k < sizeof FAMILIES / sizeof FAMILIES[0]; k++)
        if (strcmp(FAMILIES[k].name, name) == 0) {
            family f = {0};
            FAMILIES[k].gen(&f);
            run_family(name, &f, FAMILIES[k].seed);
            family_free(&f);
            return;
        }
    cr_assert_fail("no family '%s'", name);
}

Test(codegen_ops, unary) { run_named("unary"); }
Test(codegen_ops, binary) { run_named("binary"); }
Test(codegen_ops, reduce) { run_named("reduce"); }
Test(codegen_ops, matmul) { run_named("matmul"); }
Test(codegen_ops, shape) { run_named("shape"); }
/* the shape ops (flip, permute, slice, ...) through the LLVM backend */
Test(codegen_ops, shape_llvm)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    g_backend = KILN_BACKEND_LLVM;
    run_named("shape");
}
Test(codegen_ops, loss) { run_named("loss"); }
Test(codegen_ops, norm) { run_named("norm"); }
Test(codegen_ops, norm_2_threads) { g_threads = 2; run_named("norm"); }
Test(codegen_ops, pool) { run_named("pool"); }
Test(codegen_ops, pool_2_threads) { g_threads = 2; run_named("pool"); }
Test(codegen_ops, conv) { run_named("conv"); }
Test(codegen_ops, conv_1_thread) { g_threads = 1; run_named("conv"); }
/* the same with every kernel on one thread, and on two */
Test(codegen_ops, gemm_tiles_1_thread) { g_threads = 1; run_named("gemm_tiles"); }
Test(codegen_ops, gemm_tiles_2_threads) { g_threads = 2; run_named("gemm_tiles"); }
Test(codegen_ops, unary_1_thread) { g_threads = 1; run_named("unary"); }
Test(codegen_ops, binary_1_thread) { g_threads = 1; run_named("binary"); }
Test(codegen_ops, reduce_1_thread) { g_threads = 1; run_named("reduce"); }
Test(codegen_ops, matmul_1_thread) { g_threads = 1; run_named("matmul"); }

Test(codegen_ops, opcase_tables)
{
    family f = {0};
    gen_tables(&f);
    run_family("opcase_tables", &f, 0x2545F4914F6CDD1Dull);
    family_free(&f);
}

/* Every non-leaf op, and assign, has cases here, and their input shapes
 * hold each of the sizes 1, 3, 7, 17 and 129. */
Test(codegen_ops, registry_coverage)
{
    family all[sizeof FAMILIES / sizeof FAMILIES[0]];
    int nf = (int)(sizeof FAMILIES / sizeof FAMILIES[0]);
    for (int k = 0; k < nf; k++) {
        memset(&all[k], 0, sizeof all[k]);
        FAMILIES[k].gen(&all[k]);
    }
    int total = 0;
    for (int op = 0; op < KILN_OP_COUNT; op++) {
        const kiln_op_info *info = &kiln_ops[op];
        if (info->fusion == KILN_FUSE_LEAF && op != KILN_OP_ASSIGN) continue;
        int cases = 0;
        bool size_seen[5] = {false};
        for (int k = 0; k < nf; k++)
            for (int i = 0; i < all[k].n; i++) {
                const op_case *c = &all[k].cases[i].c;
                if (strcmp(c->op, info->name) != 0) continue;
                cases++;
                for (int j = 0; j < c->ninputs; j++)
                    for (int d = 0; d < c->in[j].rank; d++)
                        for (int s = 0; s < 5; s++)
                            if (c->in[j].shape[d] == SIZES[s]) size_seen[s] = true;
            }
        total += cases;
        cr_expect_gt(cases, 0, "op '%s' has no codegen case", info->name);
        for (int s = 0; s < 5 && cases; s++)
            cr_expect(size_seen[s], "op '%s': no case has an axis of size %lld", info->name,
                      (long long)SIZES[s]);
    }
    for (int k = 0; k < nf; k++)
        for (int i = 0; i < all[k].n; i++)
            cr_expect_geq(kiln_op_lookup(all[k].cases[i].c.op), 0, "unknown op '%s'",
                          all[k].cases[i].c.op);
    if (verbose()) fprintf(stderr, "codegen_ops: %d sized cases in %d families\n", total, nf);
    for (int k = 0; k < nf; k++) family_free(&all[k]);
}

/* ---- whole train steps (assign updates of params and state) ---- */

/* x [7,17] -> linear(129) -> gelu -> linear(3) -> cross_entropy(y [7]):
 * train_step on the C backend and on the reference backend from the same
 * weights and batch; the loss, the gradients, the parameters and the
 * optimizer state agree after each of two steps. */
static void train_both(kiln_optimizer o, int nesterov)
{
    kiln_graph *g = kiln_graph_new("train_odd");
    int64_t xs[] = {7, 17}, ys[] = {7};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_gelu(g, kiln_linear(g, x, 129, 1, "fc1"));
    kiln_value out = kiln_linear(g, h, 3, 1, "fc2");
    kiln_value loss = kiln_cross_entropy(g, out, y);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));

    kiln_train_options tr = kiln_train_defaults();
    tr.optimizer = o;
    tr.nesterov = nesterov;
    tr.keep_grads = 1;
    kiln_program *pc = compile_c(g, &tr);
    kiln_compile_options opt = kiln_compile_defaults();
    opt.backend = KILN_BACKEND_REF;
    opt.train = tr;
    kiln_program *pr = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_compile(g, &opt, &pr, &err), KILN_OK, "%s", err ? err : "");
    free(err);

    float xv[7 * 17];
    int32_t yv[7];
    rng_state = 0x1234567887654321ull;
    for (int i = 0; i < 7 * 17; i++) xv[i] = (float)(4 * rnd() - 2);
    for (int i = 0; i < 7; i++) yv[i] = (int32_t)(rnd() * 3);
    kiln_program *ps[2] = {pc, pr};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(kiln_program_init_params(ps[k], 7), KILN_OK);
        cr_assert_eq(kiln_program_set(ps[k], "x", xv, sizeof xv), KILN_OK);
        cr_assert_eq(kiln_program_set(ps[k], "y", yv, sizeof yv), KILN_OK);
        cr_assert_eq(kiln_program_set_hparam(ps[k], "lr", o == KILN_OPT_SGD ? 0.1 : 1e-2),
                     KILN_OK);
    }
    errstat st = {0};
    for (int step = 1; step <= 2; step++) {
        for (int k = 0; k < 2; k++) {
            if (o == KILN_OPT_ADAMW)
                cr_assert_eq(kiln_program_set_hparam(ps[k], "step", step), KILN_OK);
            cr_assert_eq(kiln_program_run(ps[k], "train_step"), KILN_OK, "%s",
                         kiln_program_error(ps[k]));
        }
        /* every named tensor the entry writes: loss, gradients, params, state */
        int nt = kiln_program_num_tensors(pr);
        for (int i = 0; i < nt; i++) {
            kiln_tensor_info ir, ic;
            cr_assert_eq(kiln_program_tensor(pr, i, &ir), KILN_OK);
            if (ir.role == KILN_ROLE_INPUT || ir.role == KILN_ROLE_TARGET ||
                ir.role == KILN_ROLE_HPARAM || ir.role == KILN_ROLE_CONST)
                continue;
            const void *e = kiln_program_data(pr, ir.name, &ir);
            const void *a = kiln_program_data(pc, ir.name, &ic);
            cr_assert(a && e, "'%s' missing", ir.name);
            cr_assert_eq(ic.bytes, ir.bytes);
            st.cases += step == 1;
            int64_t cnt = (int64_t)(ir.bytes / kiln_dtype_size(ir.dtype));
            int64_t bad = 0, wi = 0;
            for (int64_t j = 0; j < cnt; j++) {
                double av = from_bytes(ic.dtype, a, j), ev = from_bytes(ir.dtype, e, j);
                bool ok = isnan(ev) ? isnan(av)
                                    : (av == ev || fabs(av - ev) <= ATOL + RTOL * fabs(ev));
                stat_add(&st, av, ev, ok);
                if (!ok && !bad++) wi = j;
            }
            cr_expect_eq(bad, 0, "step %d: '%s': %lld of %lld elements differ; [%lld]: C %.9g, "
                         "reference %.9g", step, ir.name, (long long)bad, (long long)cnt,
                         (long long)wi, from_bytes(ic.dtype, a, wi), from_bytes(ir.dtype, e, wi));
        }
    }
    if (verbose())
        stat_print(o == KILN_OPT_ADAMW ? "train_step adamw" : "train_step sgd", &st);
    kiln_program_free(pc);
    kiln_program_free(pr);
    kiln_graph_free(g);
}

Test(codegen_ops, program_train_odd_sizes_adamw) { train_both(KILN_OPT_ADAMW, 0); }
Test(codegen_ops, program_train_odd_sizes_sgd_nesterov) { train_both(KILN_OPT_SGD, 1); }
