/* tests/test_ffi.c — calling compiled functions by name through libffi
 * (runtime/ffi.c, include/kiln/program.h: kiln_program_call and friends).
 *
 * A small forward program (an elementwise kernel, a GEMM with its bias and
 * relu epilogue, a sum and an argmax over its rows) is compiled with the C
 * and the LLVM backend; each kernel is found by its op, called by name on
 * synthetic buffers made from its signature (kernels of 2 to 5 parameters:
 * f32 and i64 buffers, the runtime context), and its outputs compared with
 * the reference interpreter's. Entries are called the same way, kernels on
 * the program's own memories (kiln_program_args), a failing run-time check
 * reports its message, and every mismatch of count, kind, dtype, size or
 * NULL is an error naming the parameter, with nothing called. Scalar
 * parameters (int32, int64, float, double) and non-int returns go through
 * the same layer (kiln_ffi_call) on test functions compiled with the C
 * compiler (codegen/cc.c).
 */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"
#include "codegen/llvm.h"
#include "runtime/kiln_ffi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static char cache[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache, sizeof cache, "ffi");
}

static void drop_cache(void)
{
    kiln_test_rmtree(cache);
}

TestSuite(ffi, .init = make_cache, .fini = drop_cache, .timeout = 300);

enum { M = 9, K = 19, N = 13, E = 37 };

/* y = relu(a * b + 0.5) over E; h = relu(x @ w^T + bias) [M, N];
 * s = sum(h, 1) [M]; am = argmax(h, 1) i64 [M]. */
static kiln_graph *small_graph(void)
{
    kiln_graph *g = kiln_graph_new("ffi_small");
    int64_t es[] = {E}, xs[] = {M, K}, ws[] = {N, K}, bs[] = {N}, ax[] = {1};
    kiln_value a = kiln_input(g, "a", KILN_F32, 1, es);
    kiln_value b = kiln_input(g, "b", KILN_F32, 1, es);
    kiln_value y = kiln_relu(g, kiln_add(g, kiln_mul(g, a, b), kiln_scalar(g, 0.5, KILN_F32)));
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value w = kiln_input(g, "w", KILN_F32, 2, ws);
    kiln_value bias = kiln_input(g, "bias", KILN_F32, 1, bs);
    kiln_value h = kiln_relu(g, kiln_add(g, kiln_matmul(g, x, w, 0, 1), bias));
    kiln_value s = kiln_reduce_sum(g, h, 1, ax, 0);
    kiln_value am = kiln_argmax(g, h, 1);
    cr_assert_eq(kiln_set_output(g, y, "y"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, h, "h"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, s, "s"), KILN_OK, "%s", kiln_graph_error(g));
    cr_assert_eq(kiln_set_output(g, am, "am"), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

static kiln_program *compile(const kiln_graph *g, kiln_backend be)
{
    kiln_compile_options o = kiln_compile_defaults();
    o.backend = be;
    o.threads = 2;
    o.cache_dir = cache;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &o, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : kiln_status_str(st));
    free(err);
    return p;
}

static float pattern(int64_t i, int salt)
{
    return (float)((i * 7919 + salt * 104729) % 201) / 100.0f - 1.0f;
}

/* Inputs a, b, x, w, bias (same values in every program). */
static void set_inputs(kiln_program *p)
{
    static const char *const names[] = {"a", "b", "x", "w", "bias"};
    for (int k = 0; k < 5; k++) {
        kiln_tensor_info t;
        float *d = kiln_program_data(p, names[k], &t);
        cr_assert_not_null(d, "%s", kiln_program_error(p));
        for (size_t i = 0; i < t.bytes / sizeof(float); i++)
            d[i] = pattern((int64_t)i, k);
    }
}

/* The kernel of op `op` that writes parameter `out`. */
static bool find_kernel(kiln_program *p, const char *op, const char *out, kiln_function_info *fi)
{
    for (int i = 0; i < kiln_program_num_functions(p); i++) {
        cr_assert_eq(kiln_program_function(p, i, fi), KILN_OK);
        if (fi->is_entry || strcmp(fi->op, op)) continue;
        for (int j = 0; j < fi->nparams; j++)
            if (fi->params[j].name && !strcmp(fi->params[j].name, out) && fi->params[j].written)
                return true;
    }
    return false;
}

/* Calls kernel fi on fresh buffers: inputs from the reference program's
 * tensors of the same name, outputs checked against them. */
static void call_and_check(kiln_program *p, kiln_program *ref, const kiln_function_info *fi)
{
    kiln_arg args[16];
    void *mem[16] = {0};
    cr_assert_leq(fi->nparams, 16);
    for (int j = 0; j < fi->nparams; j++) {
        const kiln_param_info *pi = &fi->params[j];
        if (pi->kind == KILN_ARG_CTX) {
            args[j] = kiln_arg_ctx();
            continue;
        }
        cr_assert_eq(pi->kind, KILN_ARG_BUFFER, "%s: parameter %d", fi->name, j);
        size_t bytes = (size_t)pi->count * kiln_dtype_size(pi->dtype);
        mem[j] = calloc(1, bytes + 64);
        kiln_tensor_info t;
        const void *rv = kiln_program_data(ref, pi->name, &t);
        cr_assert_not_null(rv, "%s: parameter '%s' is no tensor of the program", fi->name,
                           pi->name);
        cr_assert_eq(t.bytes, bytes, "%s: '%s'", fi->name, pi->name);
        if (pi->read && !pi->written) memcpy(mem[j], rv, bytes);
        else memset(mem[j], 0x7f, bytes); /* garbage the kernel must overwrite */
        args[j] = kiln_arg_buffer(pi->dtype, mem[j], pi->count);
    }
    int rc = -1;
    kiln_status st = kiln_program_call(p, fi->name, args, fi->nparams, &rc);
    cr_assert_eq(st, KILN_OK, "%s: %s", fi->name, kiln_program_error(p));
    cr_assert_eq(rc, 0);
    for (int j = 0; j < fi->nparams; j++) {
        const kiln_param_info *pi = &fi->params[j];
        if (pi->kind != KILN_ARG_BUFFER || !pi->written) continue;
        const void *rv = kiln_program_data(ref, pi->name, NULL);
        for (int64_t i = 0; i < pi->count; i++) {
            double got = kiln_test_get(mem[j], pi->dtype, i);
            double want = kiln_test_get(rv, pi->dtype, i);
            cr_assert(fabs(got - want) <= 1e-6 + 1e-5 * fabs(want),
                      "%s: %s[%lld] = %g, reference %g", fi->name, pi->name, (long long)i, got,
                      want);
        }
    }
    for (int j = 0; j < fi->nparams; j++)
        free(mem[j]);
}

static void kernels_by_name(kiln_backend be)
{
    kiln_graph *g = small_graph();
    kiln_program *p = compile(g, be), *ref = compile(g, KILN_BACKEND_REF);
    set_inputs(ref);
    cr_assert_eq(kiln_program_run(ref, "forward"), KILN_OK, "%s", kiln_program_error(ref));
    /* the reference backend compiles nothing */
    cr_expect_eq(kiln_program_num_functions(ref), 0);
    cr_expect_eq(kiln_program_call(ref, "forward", NULL, 0, NULL), KILN_ERR_UNSUPPORTED);
    cr_expect(strstr(kiln_program_error(ref), "reference backend"), "%s", kiln_program_error(ref));

    kiln_function_info fi;
    /* the elementwise kernel: a, b -> y (3 buffers, maybe the context) */
    cr_assert(find_kernel(p, "mul", "y", &fi) || find_kernel(p, "add", "y", &fi) ||
                  find_kernel(p, "relu", "y", &fi),
              "no kernel writes y");
    cr_expect_geq(fi.nparams, 3);
    cr_expect_eq(fi.ret, KILN_ARG_I32);
    call_and_check(p, ref, &fi);
    /* the GEMM with its epilogue: x, w, bias -> h */
    cr_assert(find_kernel(p, "matmul", "h", &fi), "no matmul kernel writes h");
    cr_expect_geq(fi.nparams, 4);
    cr_expect_geq(fi.flops, 2.0 * M * N * K, "%s: %g flops", fi.name, fi.flops);
    cr_expect_gt(fi.bytes, 0);
    cr_expect(strstr(fi.desc, "matmul"), "%s", fi.desc);
    cr_expect_str_eq(fi.entry, "forward");
    call_and_check(p, ref, &fi);
    /* the reductions: h -> s (f32), h -> am (an i64 buffer) */
    cr_assert(find_kernel(p, "reduce_sum", "s", &fi), "no reduce_sum kernel writes s");
    call_and_check(p, ref, &fi);
    cr_assert(find_kernel(p, "argmax", "am", &fi), "no argmax kernel writes am");
    bool i64 = false;
    for (int j = 0; j < fi.nparams; j++)
        i64 |= fi.params[j].kind == KILN_ARG_BUFFER && fi.params[j].dtype == KILN_I64;
    cr_expect(i64, "%s has no i64 buffer", fi.name);
    call_and_check(p, ref, &fi);

    /* an entry by name, on the program's memories, then one kernel again
     * there: it rewrites y where the entry put it */
    set_inputs(p);
    kiln_arg args[16];
    int n = 0;
    cr_assert_eq(kiln_program_args(p, "forward", args, 16, &n), KILN_OK, "%s",
                 kiln_program_error(p));
    cr_expect_eq(n, 4);
    cr_assert_eq(kiln_program_call(p, "forward", args, n, NULL), KILN_OK, "%s",
                 kiln_program_error(p));
    float yref[E], y[E];
    cr_assert_eq(kiln_program_get(ref, "y", yref, sizeof yref), KILN_OK);
    cr_assert_eq(kiln_program_get(p, "y", y, sizeof y), KILN_OK);
    cr_expect_arr_eq(y, yref, sizeof y);
    cr_assert(find_kernel(p, "mul", "y", &fi) || find_kernel(p, "add", "y", &fi) ||
              find_kernel(p, "relu", "y", &fi));
    memset(kiln_program_data(p, "y", NULL), 0, sizeof y);
    cr_assert_eq(kiln_program_args(p, fi.name, args, 16, &n), KILN_OK, "%s", kiln_program_error(p));
    cr_expect_eq(kiln_program_args(p, fi.name, args, 1, &n), KILN_ERR_INVALID);
    cr_assert_eq(kiln_program_args(p, fi.name, args, 16, &n), KILN_OK);
    cr_assert_eq(kiln_program_call(p, fi.name, args, n, NULL), KILN_OK, "%s",
                 kiln_program_error(p));
    cr_assert_eq(kiln_program_get(p, "y", y, sizeof y), KILN_OK);
    cr_expect_arr_eq(y, yref, sizeof y);
    /* entries also answer to their symbols */
    cr_expect_eq(kiln_program_find_function(p, "kiln_forward", &fi), KILN_OK);
    cr_expect(fi.is_entry);
    kiln_program_free(p);
    kiln_program_free(ref);
    kiln_graph_free(g);
}

Test(ffi, c_kernels_by_name)
{
    kernels_by_name(KILN_BACKEND_C);
}

Test(ffi, llvm_kernels_by_name)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    kernels_by_name(KILN_BACKEND_LLVM);
}

/* Both backends list the same kernel names for one plan, and
 * kiln_plan_kernels names them without compiling. */
Test(ffi, names_agree_between_backends)
{
    kiln_graph *g = small_graph();
    kiln_program *c = compile(g, KILN_BACKEND_C);
    char *err = NULL;
    char *list = kiln_plan_kernels(g, NULL, &err);
    cr_assert_not_null(list, "%s", err ? err : "");
    int nk = 0;
    for (int i = 0; i < kiln_program_num_functions(c); i++) {
        kiln_function_info fi;
        cr_assert_eq(kiln_program_function(c, i, &fi), KILN_OK);
        if (fi.is_entry) continue;
        nk++;
        cr_expect(strstr(list, fi.name), "kiln_plan_kernels lacks %s:\n%s", fi.name, list);
    }
    cr_expect_gt(nk, 3);
    free(list);
    if (kiln_llvm_available()) {
        kiln_program *l = compile(g, KILN_BACKEND_LLVM);
        cr_expect_eq(kiln_program_num_functions(l), kiln_program_num_functions(c));
        for (int i = 0; i < kiln_program_num_functions(c); i++) {
            kiln_function_info fi;
            kiln_program_function(c, i, &fi);
            cr_expect_eq(kiln_program_find_function(l, fi.name, NULL), KILN_OK,
                         "LLVM lacks %s: %s", fi.name, kiln_program_error(l));
        }
        kiln_program_free(l);
    }
    kiln_program_free(c);
    kiln_graph_free(g);
}

/* Every mismatch is an error naming the function and the parameter;
 * nothing is called. */
static void mismatches(kiln_backend be)
{
    kiln_graph *g = small_graph();
    kiln_program *p = compile(g, be);
    kiln_function_info fi;
    cr_assert(find_kernel(p, "matmul", "h", &fi));
    kiln_arg args[16], bad[16];
    int n = 0;
    cr_assert_eq(kiln_program_args(p, fi.name, args, 16, &n), KILN_OK);
    int w = -1;
    for (int j = 0; j < n; j++)
        if (fi.params[j].name && !strcmp(fi.params[j].name, "w")) w = j;
    cr_assert_geq(w, 0, "no parameter w in %s", fi.name);
    float *h = kiln_program_data(p, "h", NULL);
    memset(h, 0, M * N * sizeof(float));
    const char *e;
    char wname[64];
    snprintf(wname, sizeof wname, "'w'");

    /* count */
    cr_expect_eq(kiln_program_call(p, fi.name, args, n - 1, NULL), KILN_ERR_INVALID);
    e = kiln_program_error(p);
    cr_expect(strstr(e, fi.name) && strstr(e, "arguments") && strstr(e, "given"), "%s", e);
    /* kind: an int64 for a buffer */
    memcpy(bad, args, sizeof args);
    bad[w] = kiln_arg_i64(3);
    cr_expect_eq(kiln_program_call(p, fi.name, bad, n, NULL), KILN_ERR_INVALID);
    e = kiln_program_error(p);
    cr_expect(strstr(e, fi.name) && strstr(e, wname) && strstr(e, "int64"), "%s", e);
    /* dtype */
    memcpy(bad, args, sizeof args);
    bad[w].dtype = KILN_F64;
    cr_expect_eq(kiln_program_call(p, fi.name, bad, n, NULL), KILN_ERR_INVALID);
    e = kiln_program_error(p);
    cr_expect(strstr(e, wname) && strstr(e, "f64"), "%s", e);
    /* too few elements */
    memcpy(bad, args, sizeof args);
    bad[w].count = N * K - 1;
    cr_expect_eq(kiln_program_call(p, fi.name, bad, n, NULL), KILN_ERR_INVALID);
    e = kiln_program_error(p);
    cr_expect(strstr(e, wname) && strstr(e, "246 f32"), "%s", e);
    /* NULL */
    memcpy(bad, args, sizeof args);
    bad[w].v.ptr = NULL;
    cr_expect_eq(kiln_program_call(p, fi.name, bad, n, NULL), KILN_ERR_INVALID);
    e = kiln_program_error(p);
    cr_expect(strstr(e, wname) && strstr(e, "NULL"), "%s", e);
    /* a context where the last buffer goes */
    memcpy(bad, args, sizeof args);
    bad[0] = kiln_arg_ctx();
    cr_expect_eq(kiln_program_call(p, fi.name, bad, n, NULL), KILN_ERR_INVALID);
    /* unknown names */
    cr_expect_eq(kiln_program_call(p, "k999_nothing", args, n, NULL), KILN_ERR_NOT_FOUND);
    cr_expect(strstr(kiln_program_error(p), "k999_nothing"), "%s", kiln_program_error(p));
    cr_expect_eq(kiln_program_call(p, NULL, args, n, NULL), KILN_ERR_NOT_FOUND);
    cr_expect_eq(kiln_program_call(p, fi.name, NULL, n, NULL), KILN_ERR_INVALID);
    cr_expect_eq(kiln_program_function(p, 1000, &fi), KILN_ERR_INVALID);
    /* nothing ran */
    for (int i = 0; i < M * N; i++)
        cr_assert_eq(h[i], 0.0f);
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(ffi, c_mismatches_name_the_parameter)
{
    mismatches(KILN_BACKEND_C);
}

Test(ffi, llvm_mismatches_name_the_parameter)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    mismatches(KILN_BACKEND_LLVM);
}

/* A kernel's failed run-time check (a label out of range) is an error with
 * the check's message, as kiln_program_run reports it. */
static void check_fails(kiln_backend be)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    kiln_program *p = compile(g, be);
    cr_assert_eq(kiln_program_init_params(p, 1), KILN_OK);
    int32_t y[4] = {0, 1, 7, 2};
    cr_assert_eq(kiln_program_set(p, "y", y, sizeof y), KILN_OK);
    kiln_function_info fi;
    int found = -1;
    for (int i = 0; i < kiln_program_num_functions(p) && found < 0; i++) {
        cr_assert_eq(kiln_program_function(p, i, &fi), KILN_OK);
        for (int j = 0; !fi.is_entry && j < fi.nparams; j++)
            if (fi.params[j].name && !strcmp(fi.params[j].name, "y")) found = i;
    }
    cr_assert_geq(found, 0, "no kernel reads the labels");
    kiln_arg args[32];
    int n = 0, rc = 0;
    cr_assert_eq(kiln_program_args(p, fi.name, args, 32, &n), KILN_OK, "%s", kiln_program_error(p));
    cr_expect_eq(kiln_program_call(p, fi.name, args, n, &rc), KILN_ERR_INVALID);
    cr_expect_gt(rc, 0);
    cr_expect(strstr(kiln_program_error(p), "label"), "%s", kiln_program_error(p));
    /* the whole step too, through the same path */
    cr_expect_eq(kiln_program_run(p, "train_step"), KILN_ERR_INVALID);
    cr_expect(strstr(kiln_program_error(p), "label"), "%s", kiln_program_error(p));
    y[2] = 2;
    cr_assert_eq(kiln_program_set(p, "y", y, sizeof y), KILN_OK);
    cr_expect_eq(kiln_program_call(p, fi.name, args, n, &rc), KILN_OK, "%s", kiln_program_error(p));
    cr_expect_eq(rc, 0);
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(ffi, c_failed_check_is_reported)
{
    check_fails(KILN_BACKEND_C);
}

Test(ffi, llvm_failed_check_is_reported)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    check_fails(KILN_BACKEND_LLVM);
}

/* ---- scalar kinds through kiln_ffi_call on compiled test functions ---- */

static const char scalar_src[] =
    "#include <stdint.h>\n"
    "double kiln_t_axpy(int64_t n, float a, const float *x, float *y)\n"
    "{\n"
    "    double s = 0;\n"
    "    for (int64_t i = 0; i < n; i++) { y[i] += a * x[i]; s += y[i]; }\n"
    "    return s;\n"
    "}\n"
    "int64_t kiln_t_mix(int32_t a, int64_t b, double c, float d, const int64_t *v)\n"
    "{\n"
    "    return (int64_t)a * 1000000 + b * 1000 + (int64_t)(c * 10) + (int64_t)d + v[1];\n"
    "}\n"
    "float kiln_t_half(float x) { return x * 0.5f; }\n"
    "void kiln_t_fill(uint8_t *p, int64_t n, int32_t v) { for (int64_t i = 0; i < n; i++) p[i] = "
    "(uint8_t)v; }\n";

static void (*fnptr(kiln_so *so, const char *name))(void)
{
    void *a = kiln_so_sym(so, name);
    cr_assert_not_null(a, "%s", name);
    void (*f)(void);
    memcpy(&f, &a, sizeof f);
    return f;
}

Test(ffi, scalar_kinds_and_returns)
{
    kiln_cc_options o = {.cc = NULL, .cache_dir = cache, .verbose = 0};
    kiln_so *so = NULL;
    char *err = NULL;
    int cached = 0;
    double secs = 0;
    cr_assert_eq(kiln_cc_load(scalar_src, &o, &so, &cached, &secs, &err), KILN_OK, "%s",
                 err ? err : "");
    char msg[512];
    kiln_arg ret;

    /* double axpy(int64 n, float a, const float *x, float *y) */
    float x[6] = {1, 2, 3, 4, 5, 6}, y[6] = {1, 1, 1, 1, 1, 1};
    kiln_param_info ap[4] = {
        {.name = "n", .kind = KILN_ARG_I64},
        {.name = "a", .kind = KILN_ARG_F32},
        {.name = "x", .kind = KILN_ARG_BUFFER, .dtype = KILN_F32, .count = 6},
        {.name = "y", .kind = KILN_ARG_BUFFER, .dtype = KILN_F32, .count = 6},
    };
    kiln_ffi_sig axpy = {.name = "kiln_t_axpy", .ret = KILN_ARG_F64, .nparams = 4, .params = ap};
    kiln_arg aa[4] = {kiln_arg_i64(6), kiln_arg_f32(2.0f), kiln_arg_buffer(KILN_F32, x, 6),
                      kiln_arg_buffer(KILN_F32, y, 6)};
    cr_assert_eq(kiln_ffi_call(fnptr(so, "kiln_t_axpy"), &axpy, aa, 4, &ret, msg, sizeof msg),
                 KILN_OK, "%s", msg);
    cr_expect_eq(ret.kind, KILN_ARG_F64);
    cr_expect_eq(ret.v.f64, 6.0 + 2.0 * 21.0);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(y[i], 1.0f + 2.0f * x[i]);
    /* a float where the int64 goes, a double where the float goes */
    kiln_arg bad[4];
    memcpy(bad, aa, sizeof bad);
    bad[0] = kiln_arg_f32(6.0f);
    cr_expect_eq(kiln_ffi_call(fnptr(so, "kiln_t_axpy"), &axpy, bad, 4, &ret, msg, sizeof msg),
                 KILN_ERR_INVALID);
    cr_expect(strstr(msg, "kiln_t_axpy") && strstr(msg, "parameter 1 'n'") && strstr(msg, "int64"),
              "%s", msg);
    memcpy(bad, aa, sizeof bad);
    bad[1] = kiln_arg_f64(2.0);
    cr_expect_eq(kiln_ffi_call(fnptr(so, "kiln_t_axpy"), &axpy, bad, 4, &ret, msg, sizeof msg),
                 KILN_ERR_INVALID);
    cr_expect(strstr(msg, "parameter 2 'a'") && strstr(msg, "f64"), "%s", msg);
    cr_expect_eq(kiln_ffi_call(fnptr(so, "kiln_t_axpy"), &axpy, aa, 5, &ret, msg, sizeof msg),
                 KILN_ERR_INVALID);
    cr_expect(strstr(msg, "takes 4 arguments (n, a, x, y); 5 given"), "%s", msg);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(y[i], 1.0f + 2.0f * x[i], "nothing ran");

    /* int64 mix(int32, int64, double, float, const int64 *) */
    int64_t v[2] = {0, 7};
    kiln_param_info mp[5] = {
        {.name = "a", .kind = KILN_ARG_I32},
        {.name = "b", .kind = KILN_ARG_I64},
        {.name = "c", .kind = KILN_ARG_F64},
        {.name = "d", .kind = KILN_ARG_F32},
        {.name = "v", .kind = KILN_ARG_BUFFER, .dtype = KILN_I64, .count = 2},
    };
    kiln_ffi_sig mix = {.name = "kiln_t_mix", .ret = KILN_ARG_I64, .nparams = 5, .params = mp};
    kiln_arg ma[5] = {kiln_arg_i32(-3), kiln_arg_i64(INT64_C(5000000000)), kiln_arg_f64(2.5),
                      kiln_arg_f32(4.0f), kiln_arg_buffer(KILN_I64, v, 2)};
    cr_assert_eq(kiln_ffi_call(fnptr(so, "kiln_t_mix"), &mix, ma, 5, &ret, msg, sizeof msg),
                 KILN_OK, "%s", msg);
    cr_expect_eq(ret.v.i64, INT64_C(-3000000) + INT64_C(5000000000000) + 25 + 4 + 7);

    /* float half(float); void fill(uint8 *, int64, int32) */
    kiln_param_info hp[1] = {{.name = "x", .kind = KILN_ARG_F32}};
    kiln_ffi_sig half = {.name = "kiln_t_half", .ret = KILN_ARG_F32, .nparams = 1, .params = hp};
    kiln_arg ha = kiln_arg_f32(3.0f);
    cr_assert_eq(kiln_ffi_call(fnptr(so, "kiln_t_half"), &half, &ha, 1, &ret, msg, sizeof msg),
                 KILN_OK, "%s", msg);
    cr_expect_eq(ret.v.f32, 1.5f);
    uint8_t bytes[5] = {0};
    kiln_param_info fp[3] = {
        {.name = "p", .kind = KILN_ARG_BUFFER, .dtype = KILN_U8, .count = 5},
        {.name = "n", .kind = KILN_ARG_I64},
        {.name = "v", .kind = KILN_ARG_I32},
    };
    kiln_ffi_sig fill = {.name = "kiln_t_fill", .ret = KILN_ARG_VOID, .nparams = 3, .params = fp};
    kiln_arg fa[3] = {kiln_arg_buffer(KILN_U8, bytes, 5), kiln_arg_i64(5), kiln_arg_i32(9)};
    cr_assert_eq(kiln_ffi_call(fnptr(so, "kiln_t_fill"), &fill, fa, 3, &ret, msg, sizeof msg),
                 KILN_OK, "%s", msg);
    cr_expect_eq(ret.kind, KILN_ARG_VOID);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(bytes[i], 9);
    /* a void parameter cannot be prepared */
    kiln_param_info vp[1] = {{.name = "nothing", .kind = KILN_ARG_VOID}};
    kiln_ffi_sig vs = {.name = "kiln_t_void", .ret = KILN_ARG_I32, .nparams = 1, .params = vp};
    cr_expect_eq(kiln_ffi_prep(&vs, msg, sizeof msg), KILN_ERR_INVALID);
    kiln_ffi_unprep(&axpy);
    kiln_ffi_unprep(&mix);
    kiln_ffi_unprep(&half);
    kiln_ffi_unprep(&fill);
    kiln_ffi_unprep(&vs);
    kiln_so_close(so);
}

/* Compile timings: every phase measured, none negative, their sum within
 * the total. */
static void timings(kiln_backend be)
{
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    kiln_program *p = compile(g, be);
    kiln_compile_timings t;
    cr_assert_eq(kiln_program_timings(p, &t), KILN_OK);
    double parts[] = {t.graphs, t.lower, t.memplan, t.emit, t.optimize, t.compile, t.load};
    double sum = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        cr_expect_geq(parts[i], 0.0, "phase %zu", i);
        sum += parts[i];
    }
    cr_expect_gt(t.graphs, 0.0);
    cr_expect_gt(t.emit, 0.0);
    cr_expect_gt(t.compile, 0.0);
    if (be == KILN_BACKEND_LLVM) cr_expect_gt(t.optimize, 0.0);
    else cr_expect_eq(t.optimize, 0.0);
    cr_expect_leq(sum, t.total, "phases %g s, total %g s", sum, t.total);
    kiln_program_stats s;
    kiln_program_stats_get(p, &s);
    cr_expect_eq(t.total, s.compile_seconds);
    kiln_program_free(p);
    kiln_graph_free(g);
}

Test(ffi, c_timings)
{
    timings(KILN_BACKEND_C);
}

Test(ffi, llvm_timings)
{
    if (!kiln_llvm_available()) cr_skip_test("kiln was built without LLVM");
    timings(KILN_BACKEND_LLVM);
}
