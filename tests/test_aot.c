/* tests/test_aot.c — ahead-of-time artifacts (kiln/aot.h, tools/aot.c):
 * `kiln compile --emit exe|lib|obj|c` against `kiln predict`, run with a
 * clean environment from a folder holding only the executable and its
 * weights; examples/aot built from NAME.h/NAME.o/NAME.weights alone; the
 * LLVM backend's artifacts (the same classes as the C backend's and
 * predict's; objects for other CPUs and architectures); corrupt weights
 * files; the normalisation constants. Trains nothing: seeded parameters. */
#define _POSIX_C_SOURCE 200809L
#include "codegen/aot_src.h"
#include "codegen/llvm.h"
#include "kiln/aot.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <png.h>
#include <zlib.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif
#define MODEL KILN_SOURCE_DIR "/examples/fashion_mlp.kiln"

static char tmp[128];
static char kiln_bin[PATH_MAX];
static char images[PATH_MAX];
static char ckpt[PATH_MAX];

static void setup(void)
{
    kiln_test_tmpdir(tmp, sizeof tmp, "aot");
    ssize_t n = readlink("/proc/self/exe", kiln_bin, sizeof kiln_bin - 8);
    cr_assert_gt(n, 0, "readlink /proc/self/exe: %s", strerror(errno));
    kiln_bin[n] = 0;
    strcpy(strrchr(kiln_bin, '/') + 1, "kiln");
    cr_assert_eq(access(kiln_bin, X_OK), 0, "no kiln binary at %s (build the kiln target)",
                 kiln_bin);
    /* a checkpoint of seeded parameters */
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_load(MODEL, 64, &g, &err), KILN_OK, "%s", err ? err : "");
    kiln_compile_options co = kiln_compile_defaults();
    co.backend = KILN_BACKEND_REF;
    kiln_program *p = NULL;
    cr_assert_eq(kiln_compile(g, &co, &p, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_program_init_params(p, 7), KILN_OK);
    snprintf(ckpt, sizeof ckpt, "%s/w.safetensors", tmp);
    cr_assert_eq(kiln_save(p, ckpt, 0, &err), KILN_OK, "%s", err ? err : "");
    kiln_program_free(p);
    kiln_graph_free(g);
    images[0] = 0;
    static const char *const cands[] = {
        "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
        "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte"};
    for (size_t i = 0; i < 2 && !images[0]; i++)
        if (access(cands[i], R_OK) == 0) snprintf(images, sizeof images, "%s", cands[i]);
}

static void teardown(void) { kiln_test_rmtree(tmp); }

TestSuite(aot, .init = setup, .fini = teardown, .timeout = 120);

static void need_dataset(void)
{
    if (!images[0])
        cr_skip_test("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): "
                     "skipping the run on its test images");
}

static void spit(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

typedef kiln_test_run run;

/* Runs argv in dir (NULL: here) with only PATH in the environment unless
 * inherit; stdout and stderr captured (tests/testutil.h). */
static run run_in(const char *dir, int inherit, char *const argv[])
{
    return kiln_test_run_in(tmp, dir, inherit, argv);
}

static void run_free(run *r) { kiln_test_run_free(r); }

/* kiln compile MODEL --weights ckpt -o OUT --emit EMIT [extra...] (at most
 * 6 extra arguments, NULL-terminated), run without asserting. */
static run kiln_compile_run(const char *out, const char *emit, const char *const *extra)
{
    char *argv[20] = {kiln_bin, "compile", MODEL, "--weights", ckpt, "-o", (char *)out, "--emit",
                      (char *)emit};
    int n = 9;
    for (int i = 0; extra && extra[i] && i < 6; i++) argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    return run_in(NULL, 1, argv);
}

/* kiln compile MODEL --weights ckpt -o OUT --emit EMIT [extra] */
static void kiln_compile_aot(const char *out, const char *emit, const char *extra1,
                             const char *extra2)
{
    const char *extra[] = {extra1, extra2, NULL};
    run r = kiln_compile_run(out, emit, extra);
    cr_assert_eq(r.status, 0, "kiln compile --emit %s failed (%d): %s", emit, r.status, r.err);
    run_free(&r);
}

static void copy_file(const char *from, const char *to, int exec)
{
    size_t n;
    char *d = kiln_test_slurp(from, &n);
    spit(to, d, n);
    free(d);
    if (exec) chmod(to, 0755);
}

/* Builds the executable NAME (extra: kiln compile's further arguments, may
 * be NULL), copies it alone (with its weights) to a folder of its own;
 * returns that folder's executable path in buf. */
static void build_alone_as(const char *nm, const char *const *extra, char *buf, size_t len)
{
    char out[512], dir[512], w[PATH_MAX], w2[PATH_MAX];
    snprintf(out, sizeof out, "%s/%s", tmp, nm);
    run r = kiln_compile_run(out, "exe", extra);
    cr_assert_eq(r.status, 0, "kiln compile --emit exe failed (%d): %s", r.status, r.err);
    run_free(&r);
    snprintf(dir, sizeof dir, "%s/alone-%s", tmp, nm);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(buf, len, "%s/%s", dir, nm);
    copy_file(out, buf, 1);
    snprintf(w, sizeof w, "%s.weights", out);
    snprintf(w2, sizeof w2, "%s/%s.weights", dir, nm);
    copy_file(w, w2, 0);
    /* no libkiln among its needed libraries (the dynamic section's strings) */
    size_t n;
    char *bin = kiln_test_slurp(buf, &n);
    for (size_t i = 0; i + 7 <= n; i++)
        cr_assert(memcmp(bin + i, "libkiln", 7), "the executable refers to libkiln");
    free(bin);
}

static void build_alone(char *buf, size_t len) { build_alone_as("fm", NULL, buf, len); }

static void need_llvm(void)
{
    if (!kiln_llvm_available())
        cr_skip_test("kiln was built without LLVM: no --backend llvm artifacts");
}

/* An ELF object's e_type (1: relocatable) and e_machine (62: x86-64, 183:
 * AArch64), from its header. */
static void elf_kind(const char *path, int *type, int *machine)
{
    size_t n;
    char *b = kiln_test_slurp(path, &n);
    cr_assert_geq(n, 64, "%s: %zu bytes", path, n);
    cr_assert(!memcmp(b, "\x7f" "ELF", 4), "%s is not an ELF file", path);
    cr_assert_eq(b[4], 2, "%s: not a 64-bit ELF", path);
    cr_assert_eq(b[5], 1, "%s: not little-endian", path);
    const unsigned char *u = (const unsigned char *)b;
    *type = u[16] | u[17] << 8;
    *machine = u[18] | u[19] << 8;
    free(b);
}

Test(aot, exe_matches_predict)
{
    need_dataset();
    char exe[PATH_MAX];
    build_alone(exe, sizeof exe);
    char *a1[] = {exe, images, "--limit", "100", NULL};
    run e = run_in(NULL, 0, a1);
    cr_assert_eq(e.status, 0, "the executable failed (%d): %s", e.status, e.err);
    char *a2[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, images, "--limit", "100", NULL};
    run p = run_in(NULL, 1, a2);
    cr_assert_eq(p.status, 0, "kiln predict failed (%d): %s", p.status, p.err);
    int lines = 0;
    for (const char *s = e.out; *s; s++) lines += *s == '\n';
    cr_assert_eq(lines, 100, "%d lines:\n%s", lines, e.out);
    cr_assert_str_eq(e.out, p.out, "top-1 differs:\nexe:\n%s\npredict:\n%s", e.out, p.out);
    /* on a pool of threads: the same */
    char *a5[] = {exe, images, "--limit", "100", "--threads", "3", NULL};
    run t = run_in(NULL, 0, a5);
    cr_assert_eq(t.status, 0, "the executable with --threads 3 failed (%d): %s", t.status, t.err);
    cr_assert_str_eq(t.out, e.out);
    run_free(&t);
    run_free(&e);
    run_free(&p);
    /* --topk and --json print alike too */
    char *a3[] = {exe, images, "--limit", "70", "--topk", "3", "--json", NULL};
    char *a4[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, images, "--limit", "70",
                  "--topk", "3", "--json", NULL};
    e = run_in(NULL, 0, a3);
    p = run_in(NULL, 1, a4);
    cr_assert_eq(e.status, 0, "%s", e.err);
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert_str_eq(e.out, p.out);
    cr_assert_not_null(strstr(e.out, "\"top\": [{\"class\": "));
    run_free(&e);
    run_free(&p);
}

Test(aot, example_program_matches)
{
    need_dataset();
    char exe[PATH_MAX];
    build_alone(exe, sizeof exe);
    char dir[512], out[PATH_MAX], src[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/ex", tmp);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(out, sizeof out, "%s/fashion", dir);
    kiln_compile_aot(out, "lib", NULL, NULL);
    snprintf(src, sizeof src, "%s/main.c", dir);
    copy_file(KILN_SOURCE_DIR "/examples/aot/main.c", src, 0);
    char *cc[] = {"/usr/bin/env", "cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "main.c",
                  "fashion.o", "-lz", "-lm", "-o", "classify", NULL};
    run b = run_in(dir, 1, cc);
    cr_assert_eq(b.status, 0, "building examples/aot failed: %s%s", b.out, b.err);
    run_free(&b);
    char *a1[] = {"./classify", "100", images, NULL};
    run x = run_in(dir, 0, a1);
    cr_assert_eq(x.status, 0, "%s", x.err);
    char *a2[] = {exe, images, "--limit", "100", NULL};
    run e = run_in(NULL, 0, a2);
    cr_assert_eq(e.status, 0, "%s", e.err);
    cr_assert_str_eq(x.out, e.out);
    run_free(&x);
    run_free(&e);
}

/* The LLVM backend's executable prints what the C backend's and `kiln
 * predict` (both backends) print. */
Test(aot, llvm_exe_matches_predict_and_c_exe)
{
    need_dataset();
    need_llvm();
    char exe_c[PATH_MAX], exe_l[PATH_MAX];
    build_alone_as("fc", NULL, exe_c, sizeof exe_c);
    const char *llvm[] = {"--backend", "llvm", NULL};
    build_alone_as("fl", llvm, exe_l, sizeof exe_l);
    char *a1[] = {exe_l, images, "--limit", "100", NULL};
    run l = run_in(NULL, 0, a1);
    cr_assert_eq(l.status, 0, "the LLVM executable failed (%d): %s", l.status, l.err);
    char *a2[] = {exe_c, images, "--limit", "100", NULL};
    run c = run_in(NULL, 0, a2);
    cr_assert_eq(c.status, 0, "the C executable failed (%d): %s", c.status, c.err);
    char *a3[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, images, "--limit", "100", NULL};
    run p = run_in(NULL, 1, a3);
    cr_assert_eq(p.status, 0, "kiln predict failed (%d): %s", p.status, p.err);
    char *a4[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, images, "--limit", "100",
                  "--backend", "llvm", NULL};
    run pl = run_in(NULL, 1, a4);
    cr_assert_eq(pl.status, 0, "kiln predict --backend llvm failed (%d): %s", pl.status, pl.err);
    int lines = 0;
    for (const char *q = l.out; *q; q++) lines += *q == '\n';
    cr_assert_eq(lines, 100, "%d lines:\n%s", lines, l.out);
    cr_assert_str_eq(l.out, p.out, "top-1 differs:\nLLVM exe:\n%s\npredict:\n%s", l.out, p.out);
    cr_assert_str_eq(l.out, c.out, "top-1 differs:\nLLVM exe:\n%s\nC exe:\n%s", l.out, c.out);
    cr_assert_str_eq(l.out, pl.out);
    run_free(&l);
    run_free(&c);
    run_free(&p);
    run_free(&pl);
}

/* examples/aot links the LLVM backend's NAME.o alone (kernels and C parts
 * in one relocatable object) and prints what predict prints; so does an
 * object for the baseline x86-64 CPU (--emit obj, no AVX). */
static void example_with(const char *sub, const char *emit, const char *const *extra,
                         const char *want)
{
    char dir[512], out[PATH_MAX], src[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", tmp, sub);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(out, sizeof out, "%s/fashion", dir);
    run r = kiln_compile_run(out, emit, extra);
    cr_assert_eq(r.status, 0, "kiln compile --emit %s failed (%d): %s", emit, r.status, r.err);
    run_free(&r);
    int type, machine;
    snprintf(src, sizeof src, "%s/fashion.o", dir);
    elf_kind(src, &type, &machine);
    cr_assert_eq(type, 1, "fashion.o is not a relocatable object");
    snprintf(src, sizeof src, "%s/main.c", dir);
    copy_file(KILN_SOURCE_DIR "/examples/aot/main.c", src, 0);
    char *cc[] = {"/usr/bin/env", "cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "main.c",
                  "fashion.o", "-lz", "-lm", "-o", "classify", NULL};
    run b = run_in(dir, 1, cc);
    cr_assert_eq(b.status, 0, "building examples/aot on %s failed: %s%s", sub, b.out, b.err);
    run_free(&b);
    char *a1[] = {"./classify", "100", images, NULL};
    run x = run_in(dir, 0, a1);
    cr_assert_eq(x.status, 0, "%s", x.err);
    cr_assert_str_eq(x.out, want, "%s: the example's classes differ", sub);
    run_free(&x);
}

Test(aot, llvm_lib_and_baseline_obj_link_alone)
{
    need_dataset();
    need_llvm();
    char *a[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, images, "--limit", "100", NULL};
    run p = run_in(NULL, 1, a);
    cr_assert_eq(p.status, 0, "kiln predict failed (%d): %s", p.status, p.err);
    const char *lib[] = {"--backend", "llvm", NULL};
    example_with("llvm-lib", "lib", lib, p.out);
    const char *base[] = {"--backend", "llvm", "--cpu", "x86-64", NULL};
#if defined(__x86_64__)
    example_with("llvm-x86-64", "obj", base, p.out);
    const char *cbase[] = {"--target", "x86_64-linux-gnu", "--cpu", "x86-64", NULL};
    example_with("c-x86-64", "obj", cbase, p.out);
#else
    (void)base;
#endif
    run_free(&p);
}

/* Objects for another architecture: the LLVM backend writes NAME.o for it
 * (an ELF object of that machine) and the C parts as NAME.c; the C backend
 * writes source only, with the target's vector code. */
Test(aot, cross_targets)
{
    char out[512], path[PATH_MAX];
    snprintf(out, sizeof out, "%s/xa", tmp);
    const char *arm_c[] = {"--target", "aarch64-linux-gnu", NULL};
    run r = kiln_compile_run(out, "exe", arm_c);
    cr_assert_eq(r.status, 2, "an aarch64 executable from the C backend: %d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "--emit c"), "%s", r.err);
    run_free(&r);
    r = kiln_compile_run(out, "c", arm_c);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    snprintf(path, sizeof path, "%s.c", out);
    char *src = kiln_test_slurp(path, NULL);
    cr_assert_not_null(strstr(src, "#include <arm_neon.h>"), "no NEON code for aarch64");
    free(src);
    snprintf(out, sizeof out, "%s/xh", tmp);
    const char *hsw[] = {"--target", "x86_64-linux-gnu", "--cpu", "haswell", NULL};
    r = kiln_compile_run(out, "c", hsw);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    snprintf(path, sizeof path, "%s.c", out);
    src = kiln_test_slurp(path, NULL);
    cr_assert_not_null(strstr(src, "#include <immintrin.h>"), "no AVX2 code for haswell");
    cr_assert_not_null(strstr(src, "-march=haswell"), "the flags do not name the CPU");
    free(src);
    const char *bad[] = {"--target", "not_a_triple", NULL};
    r = kiln_compile_run(out, "obj", bad);
    cr_assert_eq(r.status, 2);
    cr_assert_not_null(strstr(r.err, "unknown target 'not_a_triple'"), "%s", r.err);
    run_free(&r);
    need_llvm();
    snprintf(out, sizeof out, "%s/xl", tmp);
    const char *arm_l[] = {"--target", "aarch64-linux-gnu", "--backend", "llvm", NULL};
    r = kiln_compile_run(out, "obj", arm_l);
    if (r.status && strstr(r.err, "aarch64")) {
        run_free(&r);
        cr_skip_test("this LLVM has no AArch64 target");
    }
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    int type, machine;
    snprintf(path, sizeof path, "%s.o", out);
    elf_kind(path, &type, &machine);
    cr_assert_eq(type, 1, "not a relocatable object");
    cr_assert_eq(machine, 183, "e_machine %d, not AArch64 (183)", machine);
    /* the C parts are portable C: they compile here */
    char *cc[] = {"/usr/bin/env", "cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-c", "xl.c",
                  "-o", "xl_rest.o", NULL};
    run b = run_in(tmp, 1, cc);
    cr_assert_eq(b.status, 0, "%s%s", b.out, b.err);
    run_free(&b);
    snprintf(path, sizeof path, "%s.h", out);
    src = kiln_test_slurp(path, NULL);
    cr_assert_not_null(strstr(src, "LLVM backend, target aarch64-linux-gnu"), "%s", src);
    free(src);
    /* and x86-64 ones for another CPU */
    snprintf(out, sizeof out, "%s/xs", tmp);
    const char *skx[] = {"--target", "x86_64-linux-gnu", "--cpu", "skylake-avx512", "--backend",
                         "llvm", NULL};
    r = kiln_compile_run(out, "obj", skx);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    snprintf(path, sizeof path, "%s.o", out);
    elf_kind(path, &type, &machine);
    cr_assert_eq(machine, 62, "e_machine %d, not x86-64 (62)", machine);
}

/* --backend llvm: an error that says why where it cannot be used. */
Test(aot, llvm_backend_errors)
{
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/le", tmp);
    const char *llvm[] = {"--backend", "llvm", NULL};
    if (!kiln_llvm_available()) {
        run r = kiln_compile_run(out, "exe", llvm);
        cr_assert_eq(r.status, 2, "%s", r.err);
        cr_assert_not_null(strstr(r.err, "built without LLVM"), "%s", r.err);
        run_free(&r);
        return;
    }
    run r = kiln_compile_run(out, "c", llvm);
    cr_assert_eq(r.status, 2, "%s", r.err);
    cr_assert_not_null(strstr(r.err, "--emit obj"), "%s", r.err);
    run_free(&r);
}

/* PNG input: the first test images as PNG files of every colour type
 * (gray, gray+alpha, RGB, RGBA, palette) classify as their idx pixels do,
 * in the executable and in `kiln predict` alike; another size is an error
 * naming the model's. */
static void write_png(const char *path, const unsigned char *gray, int w, int h, int kind)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    int ch = 1;
    unsigned char cmap[256 * 3];
    const void *cm = NULL;
    switch (kind) {
    case 0: img.format = PNG_FORMAT_GRAY; break;
    case 1: img.format = PNG_FORMAT_GA, ch = 2; break;
    case 2: img.format = PNG_FORMAT_RGB, ch = 3; break;
    case 3: img.format = PNG_FORMAT_RGBA, ch = 4; break;
    default: /* a palette of 256 grays; the pixel is the index */
        img.format = PNG_FORMAT_RGB_COLORMAP;
        img.colormap_entries = 256;
        for (int i = 0; i < 256; i++)
            cmap[3 * i] = cmap[3 * i + 1] = cmap[3 * i + 2] = (unsigned char)i;
        cm = cmap;
        break;
    }
    unsigned char *px = malloc((size_t)w * h * ch);
    for (int q = 0; q < w * h; q++)
        for (int c = 0; c < ch; c++)
            px[q * ch + c] = (kind == 1 || kind == 3) && c == ch - 1 ? 255 : gray[q];
    cr_assert(png_image_write_to_file(&img, path, 0, px, 0, cm), "%s: %s", path, img.message);
    free(px);
}

Test(aot, png_input)
{
    need_dataset();
    enum { N = 10 };
    gzFile f = gzopen(images, "rb");
    cr_assert_not_null(f);
    unsigned char head[16], pix[N][784];
    cr_assert_eq(gzread(f, head, 16), 16);
    cr_assert_eq(gzread(f, pix, sizeof pix), (int)sizeof pix);
    gzclose(f);
    char exe[PATH_MAX];
    build_alone(exe, sizeof exe);
    char paths[N + 1][PATH_MAX];
    char *ea[N + 3] = {exe}, *pa[N + 8] = {kiln_bin, "predict", MODEL, "--weights", ckpt};
    for (int i = 0; i < N; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/img%d.png", tmp, i);
        write_png(paths[i], pix[i], 28, 28, i % 5);
        ea[1 + i] = paths[i];
        pa[5 + i] = paths[i];
    }
    run e = run_in(NULL, 0, ea);
    cr_assert_eq(e.status, 0, "the executable on PNG images (%d): %s", e.status, e.err);
    run p = run_in(NULL, 1, pa);
    cr_assert_eq(p.status, 0, "kiln predict on PNG images (%d): %s", p.status, p.err);
    cr_assert_str_eq(e.out, p.out);
    char *ia[] = {exe, images, "--limit", "10", NULL};
    run x = run_in(NULL, 0, ia);
    cr_assert_eq(x.status, 0, "%s", x.err);
    cr_assert_str_eq(e.out, x.out, "PNG images classify differently from their idx pixels");
    run_free(&e);
    run_free(&p);
    run_free(&x);
    /* a colour image: the executable and predict agree (--topk: probabilities) */
    unsigned char big[32 * 32];
    for (int q = 0; q < 32 * 32; q++) big[q] = (unsigned char)(q * 7);
    snprintf(paths[N], sizeof paths[N], "%s/big.png", tmp);
    write_png(paths[N], big, 32, 32, 2);
    char *eb[] = {exe, paths[N], NULL};
    e = run_in(NULL, 0, eb);
    cr_assert_eq(e.status, 2, "a 32x32 image: %d %s", e.status, e.err);
    const char *want = "a 32x32 PNG image; the model takes 28x28 images";
    cr_assert_not_null(strstr(e.err, want), "%s", e.err);
    char *pb[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, paths[N], NULL};
    p = run_in(NULL, 1, pb);
    cr_assert_eq(p.status, 2, "%s", p.err);
    cr_assert_not_null(strstr(p.err, want), "%s", p.err);
    run_free(&e);
    run_free(&p);
    unsigned char col[784 * 3];
    for (int q = 0; q < 784 * 3; q++) col[q] = (unsigned char)(q * 13 + (q % 3) * 70);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = img.height = 28;
    img.format = PNG_FORMAT_RGB;
    cr_assert(png_image_write_to_file(&img, paths[N], 0, col, 0, NULL));
    char *ec[] = {exe, paths[N], "--topk", "3", NULL};
    char *pc[] = {kiln_bin, "predict", MODEL, "--weights", ckpt, paths[N], "--topk", "3", NULL};
    e = run_in(NULL, 0, ec);
    p = run_in(NULL, 1, pc);
    cr_assert_eq(e.status, 0, "%s", e.err);
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert_str_eq(e.out, p.out);
    run_free(&e);
    run_free(&p);
}

/* NAME_forward_pool: a pool of 4 threads gives NAME_forward's bits, also
 * with two callers sharing the pool at once (one of them then runs on its
 * own thread); both backends. */
static const char pool_check[] =
    "#include \"pl.h\"\n#include <pthread.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
    "#include <string.h>\n"
    "static void *P;\n"
    "static float x[pl_NUMEL_x], y0[pl_NUMEL_logits];\n"
    "typedef struct job { pl_pool *pool; float y[pl_NUMEL_logits]; int rc; } job;\n"
    "static void *run(void *a) {\n"
    "    job *j = a;\n"
    "    void *A = aligned_alloc(pl_ALIGN, pl_ACTIVATION_BYTES);\n"
    "    pl_inputs in = {.x = x};\n"
    "    pl_outputs out = {.logits = j->y};\n"
    "    for (int r = 0; r < 20 && !j->rc; r++) {\n"
    "        j->rc = pl_forward_pool(j->pool, P, A, &in, &out);\n"
    "        if (!j->rc && memcmp(j->y, y0, sizeof y0)) j->rc = 99;\n"
    "    }\n"
    "    free(A);\n"
    "    return NULL;\n}\n"
    "int main(int argc, char **argv) {\n"
    "    (void)argc;\n"
    "    char err[512];\n"
    "    P = aligned_alloc(pl_ALIGN, pl_WEIGHTS_BYTES);\n"
    "    if (pl_load_weights_file(P, argv[1], err, sizeof err)) {\n"
    "        fprintf(stderr, \"%s\\n\", err);\n"
    "        return 1;\n"
    "    }\n"
    "    for (int i = 0; i < pl_NUMEL_x; i++) x[i] = (float)((i * 7919) % 255) / 255.0f - 0.3f;\n"
    "    void *A = aligned_alloc(pl_ALIGN, pl_ACTIVATION_BYTES);\n"
    "    pl_inputs in = {.x = x};\n"
    "    pl_outputs out = {.logits = y0};\n"
    "    if (pl_forward(P, A, &in, &out)) return 2;\n"
    "    free(A);\n"
    "    pl_pool *pool = pl_pool_new(4);\n"
    "    if (!pool || pl_pool_threads(pool) != 4) return 3;\n"
    "    job a = {pool, {0}, 0}, b = {pool, {0}, 0};\n"
    "    run(&a);\n"
    "    if (a.rc) { fprintf(stderr, \"pool: %d\\n\", a.rc); return 4; }\n"
    "    pthread_t t;\n"
    "    if (pthread_create(&t, NULL, run, &b)) return 5;\n"
    "    run(&a);\n"
    "    pthread_join(t, NULL);\n"
    "    pl_pool_free(pool);\n"
    "    if (a.rc || b.rc) { fprintf(stderr, \"shared pool: %d %d\\n\", a.rc, b.rc); return 6; }\n"
    "    free(P);\n"
    "    puts(\"ok\");\n"
    "    return 0;\n}\n";

Test(aot, lib_pool_matches_serial)
{
    for (int backend = 0; backend < 2; backend++) {
        if (backend == 1 && !kiln_llvm_available()) break;
        char dir[512], out[PATH_MAX], w[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/pool%d", tmp, backend);
        cr_assert_eq(mkdir(dir, 0700), 0);
        snprintf(out, sizeof out, "%s/pl", dir);
        const char *extra[] = {"--backend", backend ? "llvm" : "c", NULL};
        run r = kiln_compile_run(out, "lib", extra);
        cr_assert_eq(r.status, 0, "%s", r.err);
        run_free(&r);
        snprintf(out, sizeof out, "%s/check.c", dir);
        spit(out, pool_check, strlen(pool_check));
        char *cc[] = {"/usr/bin/env", "cc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror",
                      "check.c", "pl.o", "-lm", "-pthread", "-o", "check", NULL};
        run b = run_in(dir, 1, cc);
        cr_assert_eq(b.status, 0, "%s%s", b.out, b.err);
        run_free(&b);
        snprintf(w, sizeof w, "%s/pl.weights", dir);
        char *a[] = {"./check", w, NULL};
        run x = run_in(dir, 0, a);
        cr_assert_eq(x.status, 0, "backend %s: %d %s", backend ? "llvm" : "c", x.status, x.err);
        cr_assert_str_eq(x.out, "ok\n");
        run_free(&x);
    }
}

/* The byte offset of the record of tensor `name` in a weights blob (its u32
 * name length). */
static size_t find_record(const char *blob, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 36; i + len <= n; i++)
        if (!memcmp(blob + i, name, len) && (unsigned char)blob[i - 4] == len) return i - 4;
    cr_assert_fail("no tensor '%s' in the weights", name);
    return 0;
}

Test(aot, corrupt_weights)
{
    char out[512], w[PATH_MAX], bad[PATH_MAX], chk[PATH_MAX];
    snprintf(out, sizeof out, "%s/fm", tmp);
    kiln_compile_aot(out, "exe", NULL, NULL);
    /* a checker calling NAME_load_weights_file, built from the lib artifact */
    char lib[PATH_MAX];
    snprintf(lib, sizeof lib, "%s/fl", tmp);
    kiln_compile_aot(lib, "lib", NULL, NULL);
    snprintf(chk, sizeof chk, "%s/check.c", tmp);
    const char *code =
        "#include \"fl.h\"\n#include <stdio.h>\n#include <stdlib.h>\n"
        "int main(int argc, char **argv) {\n"
        "    (void)argc;\n"
        "    void *P = aligned_alloc(fl_ALIGN, fl_WEIGHTS_BYTES);\n"
        "    char err[512];\n"
        "    int rc = fl_load_weights_file(P, argv[1], err, sizeof err);\n"
        "    if (rc) fprintf(stderr, \"%s\\n\", err);\n"
        "    free(P);\n"
        "    return rc ? 1 : 0;\n}\n";
    spit(chk, code, strlen(code));
    char *cc[] = {"/usr/bin/env", "cc", "-std=c11", "-Wall", "-Werror", "check.c", "fl.o", "-lm",
                  "-o", "check", NULL};
    run b = run_in(tmp, 1, cc);
    cr_assert_eq(b.status, 0, "%s%s", b.out, b.err);
    run_free(&b);
    snprintf(w, sizeof w, "%s.weights", out);
    size_t n;
    char *blob = kiln_test_slurp(w, &n);
    /* the good file loads */
    char check_bin[PATH_MAX];
    snprintf(check_bin, sizeof check_bin, "%s/check", tmp);
    char *ok[] = {check_bin, w, NULL};
    run r = run_in(NULL, 0, ok);
    cr_assert_eq(r.status, 0, "%s", r.err);
    run_free(&r);
    /* which tensors: linear layers' weights and biases */
    const char *victim = "linear1.weight";
    (void)find_record(blob, n, victim);
    for (int kind = 0; kind < 3; kind++) {
        char *c = malloc(n);
        memcpy(c, blob, n);
        size_t m = n;
        const char *named = victim;
        size_t rec = find_record(c, n, victim);
        if (kind == 0) {
            c[rec + 4 + strlen(victim) - 1] = 'X'; /* renamed: linear1.weight missing */
        } else if (kind == 1) {
            size_t s = rec + 4 + strlen(victim) + 4 + 3 + 4; /* shape[0] */
            c[s] ^= 1;
        } else {
            m = n - 1000; /* the last tensor's data cut short */
            named = NULL;
        }
        snprintf(bad, sizeof bad, "%s/bad%d.weights", tmp, kind);
        spit(bad, c, m);
        free(c);
        char *a[] = {out, "--weights", bad, "--limit", "1", "/dev/null", NULL};
        run e = run_in(NULL, 0, a);
        cr_assert_neq(e.status, 0, "kind %d: the executable accepted bad weights", kind);
        cr_assert_not_null(strstr(e.err, "weights: tensor '"), "kind %d: %s", kind, e.err);
        if (named) cr_assert_not_null(strstr(e.err, named), "kind %d: %s", kind, e.err);
        if (kind == 0) cr_assert_not_null(strstr(e.err, "missing"), "%s", e.err);
        if (kind == 1) cr_assert_not_null(strstr(e.err, "in the file but the model wants"), "%s", e.err);
        if (kind == 2) cr_assert_not_null(strstr(e.err, "truncated"), "%s", e.err);
        run_free(&e);
        char *a2[] = {check_bin, bad, NULL};
        run l = run_in(NULL, 0, a2);
        cr_assert_neq(l.status, 0, "kind %d: NAME_load_weights accepted bad weights", kind);
        cr_assert_not_null(strstr(l.err, "weights: tensor '"), "kind %d: %s", kind, l.err);
        run_free(&l);
    }
    free(blob);
}

Test(aot, checkpoint_mismatch_names_the_tensor)
{
    /* a checkpoint of another model: kiln compile refuses, naming a tensor */
    kiln_graph *g = kiln_test_tiny_mlp(KILN_F32);
    cr_assert_not_null(g);
    kiln_compile_options co = kiln_compile_defaults();
    co.backend = KILN_BACKEND_REF;
    kiln_program *p = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_compile(g, &co, &p, &err), KILN_OK, "%s", err ? err : "");
    char other[PATH_MAX], out[PATH_MAX];
    snprintf(other, sizeof other, "%s/other.safetensors", tmp);
    cr_assert_eq(kiln_save(p, other, 0, &err), KILN_OK);
    kiln_program_free(p);
    kiln_graph_free(g);
    snprintf(out, sizeof out, "%s/x", tmp);
    char *argv[] = {kiln_bin, "compile", MODEL, "--weights", other, "-o", out, "--emit", "exe", NULL};
    run r = run_in(NULL, 1, argv);
    cr_assert_neq(r.status, 0);
    cr_assert_not_null(strstr(r.err, "linear"), "%s", r.err);
    run_free(&r);
}

Test(aot, emit_c_compiles_cleanly)
{
    char out[PATH_MAX];
    snprintf(out, sizeof out, "%s/fc", tmp);
    kiln_compile_aot(out, "c", "--target", "scalar");
    char *cc[] = {"/usr/bin/env", "cc", "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-c",
                  "fc.c", "-o", "fc.o", NULL};
    run b = run_in(tmp, 1, cc);
    cr_assert_eq(b.status, 0, "%s%s", b.out, b.err);
    run_free(&b);
    /* and the native lib's header compiles on its own, with -Wall -Werror */
    char *cc2[] = {"/usr/bin/env", "cc", "-std=c11", "-Wall", "-Werror", "-fsyntax-only", "-x", "c",
                   "fc.h", NULL};
    b = run_in(tmp, 1, cc2);
    cr_assert_eq(b.status, 0, "%s%s", b.out, b.err);
    run_free(&b);
}

Test(aot, normalisation_constants_are_the_training_sets)
{
    kiln_dataset *d = NULL;
    char *err = NULL;
    if (kiln_dataset_fashion_mnist(NULL, 1, &d, &err)) {
        free(err);
        cr_skip_test("Fashion-MNIST is not installed: cannot check the baked statistics");
    }
    float mean, std;
    kiln_dataset_stats(d, &mean, &std);
    kiln_dataset_free(d);
    cr_assert_eq(mean, KILN_FASHION_MNIST_MEAN, "mean %a", (double)mean);
    cr_assert_eq(std, KILN_FASHION_MNIST_STD, "std %a", (double)std);
}

/* codegen/aot_main.c is generated from the .in files (scripts/gen-aot-src):
 * the strings must be the files' text exactly. */
Test(aot, generated_source_is_in_step)
{
    char *loader = kiln_test_slurp(KILN_SOURCE_DIR "/codegen/aot_loader.c.in", NULL);
    char *main_in = kiln_test_slurp(KILN_SOURCE_DIR "/codegen/aot_main.c.in", NULL);
    cr_assert(loader && main_in, "cannot read the .in files");
    cr_expect_str_eq(kiln_aot_loader_src, loader, "run scripts/gen-aot-src");
    cr_expect_str_eq(kiln_aot_main_src, main_in, "run scripts/gen-aot-src");
    char *input = kiln_test_slurp(KILN_SOURCE_DIR "/codegen/aot_input.c.in", NULL);
    cr_expect_str_eq(kiln_aot_input_src, input, "run scripts/gen-aot-src");
    free(input);
    free(loader);
    free(main_in);
}
