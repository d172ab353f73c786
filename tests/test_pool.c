/* tests/test_pool.c — pooling, upsampling and padding (ir/ops_pool.def)
 * against PyTorch, on every backend.
 *
 * tests/golden/pool/ holds, per case of tests/golden/gen_pool.py, torch's
 * input x, output y, an output gradient dy and the input gradient dx of
 * sum(y * dy) (cases.txt: name, op, attributes). All cases go into ONE
 * graph: x_i an input, y_i = op(x_i) an output, and dx_i from kiln's
 * autodiff (the registry's gradient rules: the *_grad ops) an output; it
 * runs through the reference interpreter (KILN_BACKEND_REF), generated C
 * (KILN_BACKEND_C, on 1 and 2 threads) and LLVM (KILN_BACKEND_LLVM), and
 * every y and dx must match torch within |a - e| <= 1e-6 + 1e-5 |e|.
 *
 * Also: the builder functions (kiln_max_pool2d, ...) against the ops by
 * name, shape-rule errors, a model file calling the ops by name, the
 * fusion plan around pooling (each op a kernel of its own, its producer
 * stored), and a training step through every op on C against the
 * reference. */
#include <criterion/criterion.h>

#include "ir/graph.h"
#include "ir/kernel.h"
#include "ir/ops.h"
#include "kiln/kiln.h"
#include "kiln/program.h"
#include "codegen/lower_group.h"
#include "passes/fuse.h"
#include "passes/passes.h"
#include "runtime/npy.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if KILN_HAVE_LLVM
#define KILN_HAVE_LLVM_BUILD 1
#else
#define KILN_HAVE_LLVM_BUILD 0
#endif

#define GOLDEN KILN_SOURCE_DIR "/tests/golden/pool/"
#define RTOL 1e-5
#define ATOL 1e-6
#define MAX_CASES 64

static char cache[256];
static void make_cache(void)
{
    kiln_test_tmpdir(cache, sizeof cache, "test_pool");
}
static void drop_cache(void)
{
    kiln_test_rmtree(cache);
}
TestSuite(pool, .init = make_cache, .fini = drop_cache, .timeout = 600);

/* ---- the golden cases ---- */

typedef struct gcase {
    char name[64], op[32];
    char attr[8][64];
    const char *attrs[8];
    int nattrs;
    kiln_npy x, y, dy, dx;
} gcase;

static void load(const char *name, const char *what, kiln_npy *a)
{
    char path[512], err[512];
    snprintf(path, sizeof path, GOLDEN "%s.%s.npy", name, what);
    cr_assert_eq(kiln_npy_load(path, a, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(a->dtype, KILN_F32, "%s: not float32", path);
}

/* Reads cases.txt and every case's arrays; returns the count. */
static int load_cases(gcase *cs)
{
    FILE *f = fopen(GOLDEN "cases.txt", "r");
    cr_assert_not_null(f, "cannot open " GOLDEN "cases.txt");
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        char *tok = strtok(line, " \n");
        if (!tok) continue;
        cr_assert_lt(n, MAX_CASES);
        gcase *c = &cs[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", tok);
        tok = strtok(NULL, " \n");
        cr_assert_not_null(tok);
        snprintf(c->op, sizeof c->op, "%s", tok);
        while ((tok = strtok(NULL, " \n"))) {
            cr_assert_lt(c->nattrs, 8);
            snprintf(c->attr[c->nattrs], sizeof c->attr[0], "%s", tok);
            c->attrs[c->nattrs] = c->attr[c->nattrs];
            c->nattrs++;
        }
        load(c->name, "x", &c->x);
        load(c->name, "y", &c->y);
        load(c->name, "dy", &c->dy);
        load(c->name, "dx", &c->dx);
    }
    fclose(f);
    cr_assert_gt(n, 30, "only %d golden cases", n);
    return n;
}

static void free_cases(gcase *cs, int n)
{
    for (int i = 0; i < n; i++) {
        kiln_npy_free(&cs[i].x);
        kiln_npy_free(&cs[i].y);
        kiln_npy_free(&cs[i].dy);
        kiln_npy_free(&cs[i].dx);
    }
}

/* The graph of every case: inputs c<i>_x, c<i>_dy; outputs c<i>_y, c<i>_dx. */
static kiln_graph *golden_graph(gcase *cs, int n)
{
    kiln_graph *g = kiln_graph_new("pool_golden");
    kiln_value xs[MAX_CASES], total = -1;
    char nm[64];
    for (int i = 0; i < n; i++) {
        gcase *c = &cs[i];
        snprintf(nm, sizeof nm, "c%d_x", i);
        xs[i] = kiln_input(g, nm, KILN_F32, c->x.rank, c->x.shape);
        snprintf(nm, sizeof nm, "c%d_dy", i);
        kiln_value dy = kiln_input(g, nm, KILN_F32, c->dy.rank, c->dy.shape);
        kiln_value y = kiln_op(g, c->op, 1, &xs[i], c->nattrs, c->attrs);
        cr_assert_geq(y, 0, "%s: %s", c->name, kiln_graph_error(g));
        const kiln_node *yn = &g->nodes[y];
        cr_assert_eq(yn->rank, c->y.rank, "%s: rank", c->name);
        for (int d = 0; d < yn->rank; d++)
            cr_assert_eq(yn->shape[d], c->y.shape[d], "%s: axis %d is %lld, torch %lld", c->name, d,
                         (long long)yn->shape[d], (long long)c->y.shape[d]);
        snprintf(nm, sizeof nm, "c%d_y", i);
        cr_assert_eq(kiln_set_output(g, y, nm), KILN_OK, "%s", kiln_graph_error(g));
        kiln_value l = kiln_reduce_sum(g, kiln_mul(g, y, dy), 0, NULL, 0);
        total = total < 0 ? l : kiln_add(g, total, l);
    }
    cr_assert_geq(total, 0, "%s", kiln_graph_error(g));
    int32_t grads[MAX_CASES];
    cr_assert_eq(kiln_autodiff(g, total, n, xs, grads), KILN_OK, "%s", kiln_graph_error(g));
    for (int i = 0; i < n; i++) {
        snprintf(nm, sizeof nm, "c%d_dx", i);
        cr_assert_eq(kiln_set_output(g, grads[i], nm), KILN_OK, "%s", kiln_graph_error(g));
    }
    cr_assert_eq(kiln_graph_verify(g), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

/* |a - e| <= ATOL + RTOL |e| everywhere; returns the worst fraction of it. */
static double compare(const char *what, const char *backend, const float *a, const kiln_npy *e)
{
    const float *ev = e->data;
    double worst = 0;
    int64_t bad = 0, first = -1;
    for (int64_t k = 0; k < e->numel; k++) {
        double d = fabs((double)a[k] - (double)ev[k]), tol = ATOL + RTOL * fabs((double)ev[k]);
        if (!(d <= tol)) {
            if (first < 0) first = k;
            bad++;
        }
        if (d / tol > worst) worst = d / tol;
    }
    cr_expect_eq(bad, 0,
                 "%s (%s): %lld of %lld elements differ from torch; [%lld]: %.9g, "
                 "torch %.9g",
                 what, backend, (long long)bad, (long long)e->numel, (long long)first,
                 first >= 0 ? a[first] : 0.0, first >= 0 ? ev[first] : 0.0);
    return worst;
}

static void run_golden(kiln_backend be, int threads, const char *bname)
{
    static gcase cs[MAX_CASES];
    int n = load_cases(cs);
    kiln_graph *g = golden_graph(cs, n);
    kiln_compile_options opt = kiln_compile_defaults();
    opt.backend = be;
    opt.threads = threads;
    opt.cache_dir = cache;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &opt, &p, &err);
    if (be == KILN_BACKEND_LLVM && st == KILN_ERR_UNSUPPORTED && !KILN_HAVE_LLVM_BUILD) {
        free(err);
        free_cases(cs, n);
        kiln_graph_free(g);
        cr_skip_test("kiln was built without LLVM");
    }
    cr_assert_eq(st, KILN_OK, "%s: %s", bname, err ? err : kiln_status_str(st));
    free(err);
    char nm[64];
    for (int i = 0; i < n; i++) {
        snprintf(nm, sizeof nm, "c%d_x", i);
        cr_assert_eq(kiln_program_set(p, nm, cs[i].x.data, (size_t)cs[i].x.numel * 4), KILN_OK,
                     "%s", kiln_program_error(p));
        snprintf(nm, sizeof nm, "c%d_dy", i);
        cr_assert_eq(kiln_program_set(p, nm, cs[i].dy.data, (size_t)cs[i].dy.numel * 4), KILN_OK,
                     "%s", kiln_program_error(p));
    }
    cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "%s", kiln_program_error(p));
    double worst = 0;
    for (int i = 0; i < n; i++) {
        const kiln_npy *want[2] = {&cs[i].y, &cs[i].dx};
        const char *sfx[2] = {"y", "dx"};
        for (int k = 0; k < 2; k++) {
            snprintf(nm, sizeof nm, "c%d_%s", i, sfx[k]);
            kiln_tensor_info info;
            const void *got = kiln_program_data(p, nm, &info);
            cr_assert_not_null(got, "%s: no '%s'", cs[i].name, nm);
            cr_assert_eq((int64_t)info.bytes, want[k]->numel * 4, "%s.%s", cs[i].name, sfx[k]);
            char what[160];
            snprintf(what, sizeof what, "%s.%s (%s)", cs[i].name, sfx[k], cs[i].op);
            double w = compare(what, bname, got, want[k]);
            if (w > worst) worst = w;
        }
    }
    if (getenv("KILN_POOL_VERBOSE"))
        fprintf(stderr, "pool golden %s: %d cases, worst |a-e| / tolerance %.3f\n", bname, n,
                worst);
    kiln_program_free(p);
    kiln_graph_free(g);
    free_cases(cs, n);
}

Test(pool, golden_reference)
{
    run_golden(KILN_BACKEND_REF, 1, "reference");
}
Test(pool, golden_c_1_thread)
{
    run_golden(KILN_BACKEND_C, 1, "C, 1 thread");
}
Test(pool, golden_c_2_threads)
{
    run_golden(KILN_BACKEND_C, 2, "C, 2 threads");
}
Test(pool, golden_llvm)
{
    run_golden(KILN_BACKEND_LLVM, 2, "LLVM");
}

/* ---- the builder functions are the ops by name ---- */

static void same_node(kiln_graph *g, kiln_value a, kiln_value b)
{
    cr_assert_geq(a, 0, "%s", kiln_graph_error(g));
    cr_assert_geq(b, 0, "%s", kiln_graph_error(g));
    const kiln_node *x = &g->nodes[a], *y = &g->nodes[b];
    cr_assert_eq(x->op, y->op);
    cr_assert_eq(x->rank, y->rank);
    cr_assert_eq(memcmp(x->shape, y->shape, sizeof x->shape), 0);
    cr_assert_eq(x->nattrs, y->nattrs);
    for (int i = 0; i < x->nattrs; i++)
        cr_assert(kiln_attr_equal(&x->attrs[i], &y->attrs[i]), "%s: attribute %s differs",
                  kiln_ops[x->op].name, x->attrs[i].name);
}

Test(pool, builders_match_ops_by_name)
{
    kiln_graph *g = kiln_graph_new("b");
    int64_t xs[] = {2, 3, 9, 11};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_pool_params mp = {.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}, .ceil_mode = 1};
    const char *ma[] = {"kernel=[3]", "stride=[2]", "padding=[1]", "ceil_mode=1"};
    same_node(g, kiln_max_pool2d(g, x, &mp), kiln_op(g, "max_pool2d", 1, &x, 4, ma));
    kiln_pool_params ap = {.kernel = {2, 3}, .exclude_pad = 1, .padding = {1, 1}};
    const char *aa[] = {"kernel=[2,3]", "padding=[1]", "count_include_pad=0"};
    same_node(g, kiln_avg_pool2d(g, x, &ap), kiln_op(g, "avg_pool2d", 1, &x, 3, aa));
    const char *ad[] = {"output_size=[1]"};
    same_node(g, kiln_adaptive_avg_pool2d(g, x, 1, 1),
              kiln_op(g, "adaptive_avg_pool2d", 1, &x, 1, ad));
    const char *up[] = {"mode=1"};
    kiln_value u = kiln_upsample(g, x, 2, 0, 0, KILN_UPSAMPLE_BILINEAR, 0);
    same_node(g, u, kiln_op(g, "upsample", 1, &x, 1, up));
    cr_assert_eq(g->nodes[u].shape[2], 18);
    cr_assert_eq(g->nodes[u].shape[3], 22);
    const char *us[] = {"size=[5,7]"};
    same_node(g, kiln_upsample(g, x, 0, 5, 7, KILN_UPSAMPLE_NEAREST, 0),
              kiln_op(g, "upsample", 1, &x, 1, us));
    int64_t pads[4] = {1, 2, -3, 4};
    const char *pa[] = {"pads=[1,2,-3,4]", "value=0.5"};
    kiln_value pd = kiln_pad(g, x, 4, pads, 0.5, KILN_PAD_CONSTANT);
    same_node(g, pd, kiln_op(g, "pad", 1, &x, 2, pa));
    cr_assert_eq(g->nodes[pd].shape[2], 10);
    cr_assert_eq(g->nodes[pd].shape[3], 14);
    kiln_graph_free(g);
}

/* ---- shape-rule errors: the message says what is wrong ---- */

static void expect_error(const char *op, int64_t h, int64_t w, int na, const char **attrs,
                         const char *fragment)
{
    kiln_graph *g = kiln_graph_new("e");
    int64_t xs[] = {1, 2, h, w};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_value y = kiln_op(g, op, 1, &x, na, attrs);
    cr_assert_lt(y, 0, "%s should fail", op);
    cr_assert(strstr(kiln_graph_error(g), fragment), "%s: '%s' lacks '%s'", op, kiln_graph_error(g),
              fragment);
    kiln_graph_free(g);
}

Test(pool, shape_errors)
{
    expect_error("max_pool2d", 8, 8, 0, NULL, "missing attribute 'kernel'");
    expect_error("max_pool2d", 8, 8, 2, (const char *[]){"kernel=[2]", "padding=[2]"},
                 "more than half the kernel");
    expect_error("max_pool2d", 2, 8, 1, (const char *[]){"kernel=[3]"}, "too small");
    expect_error("max_pool2d", 8, 8, 1, (const char *[]){"kernel=[2,2,2]"}, "one or two");
    expect_error("avg_pool2d", 8, 8, 2, (const char *[]){"kernel=[2]", "stride=[0]"}, "at least 1");
    expect_error("upsample", 8, 8, 2, (const char *[]){"mode=0", "align_corners=1"}, "bilinear");
    expect_error("upsample", 8, 8, 1, (const char *[]){"mode=2"}, "nearest");
    expect_error("pad", 8, 8, 2, (const char *[]){"pads=[8,0]", "mode=1"}, "reflect pads");
    expect_error("pad", 8, 8, 1, (const char *[]){"pads=[1,2,3]"}, "pads takes");
    expect_error("pad", 8, 8, 1, (const char *[]){"pads=[-5,-4]"}, "leave");
    expect_error("adaptive_avg_pool2d", 8, 8, 1, (const char *[]){"output_size=[0]"}, "at least 1");
    /* the gradient ops check dy against the forward's output */
    kiln_graph *g = kiln_graph_new("e");
    int64_t xs[] = {1, 2, 8, 8}, ds[] = {1, 2, 3, 4};
    kiln_value in[2] = {kiln_input(g, "x", KILN_F32, 4, xs), kiln_input(g, "dy", KILN_F32, 4, ds)};
    const char *k2[] = {"kernel=[2]"};
    cr_assert_lt(kiln_op(g, "max_pool2d_grad", 2, in, 1, k2), 0);
    cr_assert(strstr(kiln_graph_error(g), "dy is f32[1,2,3,4]"), "%s", kiln_graph_error(g));
    kiln_graph_free(g);
}

/* ---- the model language calls them by name ---- */

static const char *MODEL = "model pools\n"
                           "input  x: f32[B, 3, 9, 9]\n"
                           "target y: i32[B]\n"
                           "h = relu(linear(x, 9))\n"
                           "h = max_pool2d(h, kernel=3, stride=2, padding=1)\n"
                           "h = avg_pool2d(h, 2, count_include_pad=0, ceil_mode=1)\n"
                           "h = upsample(h, scale=2, mode=1)\n"
                           "h = pad(h, pads=[1, 1, 2, 0], mode=1)\n"
                           "h = upsample(h, size=[5, 7])\n"
                           "h = pad(h, pads=[1, -1], value=0.5)\n"
                           "h = adaptive_avg_pool2d(h, output_size=[2, 3])\n"
                           "out = linear(flatten(h), 4)\n"
                           "loss = cross_entropy(out, y)\n";

Test(pool, model_language)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(MODEL, "pools.kiln", 4, &g, &err), KILN_OK, "%s", err);
    cr_assert_eq(kiln_test_count_op(g, "max_pool2d"), 1);
    cr_assert_eq(kiln_test_count_op(g, "upsample"), 2);
    cr_assert_eq(kiln_test_count_op(g, "pad"), 2);
    kiln_graph_free(g);
}

/* ---- fusion: each op is a kernel of its own; the plan lowers ---- */

Test(pool, fusion_plan)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(MODEL, "pools.kiln", 4, &g, &err), KILN_OK, "%s", err);
    int32_t loss = -1;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].role == KILN_ROLE_LOSS) loss = i;
    int32_t wrt[8], grads[8], nw = 0;
    for (int32_t i = 0; i < g->nnodes && nw < 8; i++)
        if (g->nodes[i].role == KILN_ROLE_PARAM) wrt[nw++] = i;
    cr_assert_eq(kiln_autodiff(g, loss, nw, wrt, grads), KILN_OK, "%s", kiln_graph_error(g));
    for (int k = 0; k < nw; k++) {
        char nm[32];
        snprintf(nm, sizeof nm, "grad%d", k);
        cr_assert_eq(kiln_set_output(g, grads[k], nm), KILN_OK, "%s", kiln_graph_error(g));
    }
    kiln_fuse_plan *f = NULL;
    cr_assert_eq(kiln_fuse(g, NULL, &f), KILN_OK);
    int pools = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        bool pool = n->op >= KILN_OP_MAX_POOL2D && n->op <= KILN_OP_PAD_GRAD;
        if (!pool) continue;
        pools++;
        cr_assert_eq(f->fate[i], KILN_FATE_GROUP, "%s is not a kernel", kiln_ops[n->op].name);
        const kiln_fgroup *gr = &f->groups[f->group[i]];
        cr_assert_eq(gr->anchor, i, "%s is not its group's anchor", kiln_ops[n->op].name);
        cr_assert_eq(gr->nmembers, 1);
        cr_assert(f->stored[i]);
        /* what it reads is stored (or a leaf): pooling reads elements
         * several times, so nothing is inlined into it */
        for (int j = 0; j < n->ninputs; j++) {
            int32_t s = n->inputs[j];
            if (f->fate[s] == KILN_FATE_ALIAS) s = f->alias_of[s];
            cr_assert(f->fate[s] == KILN_FATE_LEAF || f->stored[s], "%s reads an unstored value",
                      kiln_ops[n->op].name);
        }
    }
    cr_assert_eq(pools, 14, "%d pooling nodes", pools); /* 7 forward, 7 backward */
    for (int32_t k = 0; k < f->nkernels; k++) {
        kiln_kernel *kk = NULL;
        char msg[512] = "";
        cr_assert_eq(kiln_lower_fused(g, f, k, &kk, msg, sizeof msg), KILN_OK, "%s", msg);
        kiln_kernel_free(kk);
    }
    kiln_fuse_plan_free(f);
    kiln_graph_free(g);
}

/* ---- a training step through every op: C against the reference ---- */

Test(pool, train_step_c_matches_reference)
{
    kiln_program *ps[2] = {NULL, NULL};
    kiln_backend bes[2] = {KILN_BACKEND_C, KILN_BACKEND_REF};
    float x[4 * 3 * 9 * 9];
    int32_t y[4] = {0, 3, 1, 2};
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        x[i] = (float)((double)(r >> 11) / 9007199254740992.0 * 4 - 2);
    }
    for (int k = 0; k < 2; k++) {
        kiln_graph *g = NULL;
        char *err = NULL;
        cr_assert_eq(kiln_model_parse(MODEL, "pools.kiln", 4, &g, &err), KILN_OK, "%s", err);
        kiln_compile_options opt = kiln_compile_defaults();
        opt.backend = bes[k];
        opt.threads = 2;
        opt.cache_dir = cache;
        opt.train.keep_grads = 1;
        cr_assert_eq(kiln_compile(g, &opt, &ps[k], &err), KILN_OK, "%s", err ? err : "");
        free(err);
        kiln_graph_free(g);
        cr_assert_eq(kiln_program_init_params(ps[k], 7), KILN_OK);
        cr_assert_eq(kiln_program_set(ps[k], "x", x, sizeof x), KILN_OK);
        cr_assert_eq(kiln_program_set(ps[k], "y", y, sizeof y), KILN_OK);
        cr_assert_eq(kiln_program_set_hparam(ps[k], "lr", 1e-2), KILN_OK);
        cr_assert_eq(kiln_program_set_hparam(ps[k], "step", 1), KILN_OK);
        cr_assert_eq(kiln_program_run(ps[k], "train_step"), KILN_OK, "%s",
                     kiln_program_error(ps[k]));
    }
    int nt = kiln_program_num_tensors(ps[1]), checked = 0;
    for (int i = 0; i < nt; i++) {
        kiln_tensor_info ir, ic;
        cr_assert_eq(kiln_program_tensor(ps[1], i, &ir), KILN_OK);
        if (ir.role == KILN_ROLE_INPUT || ir.role == KILN_ROLE_TARGET ||
            ir.role == KILN_ROLE_HPARAM || ir.role == KILN_ROLE_CONST || ir.dtype != KILN_F32)
            continue;
        const float *e = kiln_program_data(ps[1], ir.name, &ir);
        const float *a = kiln_program_data(ps[0], ir.name, &ic);
        cr_assert(a && e, "'%s' missing", ir.name);
        cr_assert_eq(ic.bytes, ir.bytes);
        for (size_t j = 0; j < ir.bytes / 4; j++)
            cr_expect(fabs((double)a[j] - (double)e[j]) <= ATOL + RTOL * fabs((double)e[j]),
                      "'%s'[%zu]: C %.9g, reference %.9g", ir.name, j, a[j], e[j]);
        checked++;
    }
    cr_assert_geq(checked, 5, "only %d tensors compared", checked);
    kiln_program_free(ps[0]);
    kiln_program_free(ps[1]);
}

/* ---- the IR text round-trips every op (normalised attributes included) ---- */

Test(pool, ir_text_round_trip)
{
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_parse(MODEL, "pools.kiln", 4, &g, &err), KILN_OK, "%s", err);
    int32_t loss = -1, wrt[8], grads[8], nw = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].role == KILN_ROLE_LOSS) loss = i;
        if (g->nodes[i].role == KILN_ROLE_PARAM && nw < 8) wrt[nw++] = i;
    }
    cr_assert_eq(kiln_autodiff(g, loss, nw, wrt, grads), KILN_OK, "%s", kiln_graph_error(g));
    char *a = kiln_graph_to_string(g);
    cr_assert_not_null(a);
    kiln_graph *h = NULL;
    cr_assert_eq(kiln_graph_parse(a, "pools.ir", &h, &err), KILN_OK, "%s", err ? err : "");
    char *b = kiln_graph_to_string(h);
    cr_assert_str_eq(a, b);
    cr_assert(strstr(a, "upsample(") && strstr(a, "pad_grad(") && strstr(a, "max_pool2d_grad("));
    free(a);
    free(b);
    kiln_graph_free(h);
    kiln_graph_free(g);
}

/* ---- the lowering's shape: what makes the loops fast ---- */

/* Lowers op(x) on x [1, 2, h, w] (or its gradient) node by node; counts
 * integer divisions, selects and scratch buffers. */
static void lowered(const char *op, int64_t h, int64_t w, int na, const char **attrs, bool grad,
                    int *ndiv, int *nsel, int *nscratch)
{
    kiln_graph *g = kiln_graph_new("l");
    int64_t xs[] = {1, 2, h, w};
    kiln_value x = kiln_input(g, "x", KILN_F32, 4, xs);
    kiln_value y = kiln_op(g, op, 1, &x, na, attrs);
    cr_assert_geq(y, 0, "%s", kiln_graph_error(g));
    if (grad) {
        kiln_value dy = kiln_input(g, "dy", KILN_F32, g->nodes[y].rank, g->nodes[y].shape);
        kiln_value l = kiln_reduce_sum(g, kiln_mul(g, y, dy), 0, NULL, 0);
        int32_t gx;
        cr_assert_eq(kiln_autodiff(g, l, 1, &x, &gx), KILN_OK, "%s", kiln_graph_error(g));
        y = gx;
    }
    kiln_kernel *k = NULL;
    char err[256] = "";
    cr_assert_eq(kiln_lower_node(g, y, &k, err, sizeof err), KILN_OK, "%s", err);
    *ndiv = *nsel = *nscratch = 0;
    for (int32_t e = 0; e < k->nexprs; e++) {
        bool integer = k->exprs[e].dtype != KILN_F32 && k->exprs[e].dtype != KILN_F64;
        *ndiv += (k->exprs[e].op == KX_DIV || k->exprs[e].op == KX_MOD) && integer;
        *nsel += k->exprs[e].op == KX_SELECT;
    }
    for (int32_t b = 0; b < k->nbufs; b++)
        *nscratch += k->bufs[b].node < 0;
    kiln_kernel_free(k);
    kiln_graph_free(g);
}

Test(pool, lowering_is_affine_and_scratch_free_where_it_can_be)
{
    int ndiv, nsel, nscr;
    /* nearest and bilinear x2 and their gradients: periodic loops, every
     * index affine, every weight a constant: no division, no select */
    const char *near[] = {"scale=2"}, *bil[] = {"scale=2", "mode=1"};
    for (int grad = 0; grad < 2; grad++) {
        lowered("upsample", 9, 12, 1, near, grad, &ndiv, &nsel, &nscr);
        cr_expect_eq(ndiv + nsel, 0, "nearest (grad %d): %d divisions, %d selects", grad, ndiv,
                     nsel);
        lowered("upsample", 9, 12, 2, bil, grad, &ndiv, &nsel, &nscr);
        cr_expect_eq(ndiv + nsel, 0, "bilinear (grad %d): %d divisions, %d selects", grad, ndiv,
                     nsel);
    }
    /* pooling with padding: borders written out, no select in the interior */
    const char *k3[] = {"kernel=[3]", "stride=[2]", "padding=[1]"};
    lowered("avg_pool2d", 17, 15, 3, k3, false, &ndiv, &nsel, &nscr);
    cr_expect_eq(ndiv + nsel, 0, "avg_pool2d: %d divisions, %d selects", ndiv, nsel);
    lowered("avg_pool2d", 17, 15, 3, k3, true, &ndiv, &nsel, &nscr);
    cr_expect_eq(ndiv + nsel, 0, "avg_pool2d_grad: %d divisions, %d selects", ndiv, nsel);
    /* max_pool2d_grad: windows that do not overlap need no scratch */
    const char *k2[] = {"kernel=[2]"};
    lowered("max_pool2d", 9, 12, 1, k2, true, &ndiv, &nsel, &nscr);
    cr_expect_eq(nscr, 0, "max_pool2d_grad k2: %d scratch arrays", nscr);
    cr_expect_eq(ndiv, 0, "max_pool2d_grad k2: %d divisions", ndiv);
    lowered("max_pool2d", 17, 15, 3, k3, true, &ndiv, &nsel, &nscr);
    cr_expect_eq(nscr, 1, "max_pool2d_grad k3s2: %d scratch arrays", nscr);
    cr_expect_eq(ndiv, 0, "max_pool2d_grad k3s2: %d divisions", ndiv);
}
