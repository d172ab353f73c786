/* tests/test_aot.c — ahead-of-time artifacts (kiln/aot.h, tools/aot.c):
 * `kiln compile --emit exe|lib|c` against `kiln predict`, run with a clean
 * environment from a folder holding only the executable and its weights;
 * examples/aot built from NAME.h/NAME.o/NAME.weights alone; corrupt weights
 * files; the normalisation constants. Trains nothing: seeded parameters. */
#define _POSIX_C_SOURCE 200809L
#include "codegen/aot_src.h"
#include "kiln/aot.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
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

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

static void spit(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

typedef struct run {
    int status;
    char *out, *err;
} run;

/* Runs argv in dir (NULL: here) with a clean environment (only PATH), or the
 * test's environment when inherit; stdout and stderr captured. */
static run run_in(const char *dir, int inherit, char *const argv[])
{
    char o[PATH_MAX], e[PATH_MAX];
    snprintf(o, sizeof o, "%s/stdout", tmp);
    snprintf(e, sizeof e, "%s/stderr", tmp);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fo, 1);
        dup2(fe, 2);
        if (dir && chdir(dir)) _exit(126);
        static char *const clean[] = {"PATH=/usr/local/bin:/usr/bin:/bin", NULL};
        extern char **environ;
        execve(argv[0], argv, inherit ? environ : clean); /* argv[0]: a path */
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    run r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(o, NULL), slurp(e, NULL)};
    return r;
}

static void run_free(run *r)
{
    free(r->out);
    free(r->err);
}

/* kiln compile MODEL --weights ckpt -o OUT --emit EMIT [extra] */
static void kiln_compile_aot(const char *out, const char *emit, const char *extra1,
                             const char *extra2)
{
    char *argv[] = {kiln_bin, "compile", MODEL, "--weights", ckpt, "-o", (char *)out, "--emit",
                    (char *)emit, (char *)extra1, (char *)extra2, NULL};
    run r = run_in(NULL, 1, argv);
    cr_assert_eq(r.status, 0, "kiln compile --emit %s failed (%d): %s", emit, r.status, r.err);
    run_free(&r);
}

static void copy_file(const char *from, const char *to, int exec)
{
    size_t n;
    char *d = slurp(from, &n);
    spit(to, d, n);
    free(d);
    if (exec) chmod(to, 0755);
}

/* Builds the executable, copies it alone (with its weights) to a folder of
 * its own; returns that folder's executable path in buf. */
static void build_alone(char *buf, size_t len)
{
    char out[512], dir[512], w[PATH_MAX], w2[PATH_MAX];
    snprintf(out, sizeof out, "%s/fm", tmp);
    kiln_compile_aot(out, "exe", NULL, NULL);
    snprintf(dir, sizeof dir, "%s/alone", tmp);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(buf, len, "%s/fm", dir);
    copy_file(out, buf, 1);
    snprintf(w, sizeof w, "%s.weights", out);
    snprintf(w2, sizeof w2, "%s/fm.weights", dir);
    copy_file(w, w2, 0);
    /* no libkiln among its needed libraries (the dynamic section's strings) */
    size_t n;
    char *bin = slurp(buf, &n);
    for (size_t i = 0; i + 7 <= n; i++)
        cr_assert(memcmp(bin + i, "libkiln", 7), "the executable refers to libkiln");
    free(bin);
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
    char *blob = slurp(w, &n);
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
    char *loader = slurp(KILN_SOURCE_DIR "/codegen/aot_loader.c.in", NULL);
    char *main_in = slurp(KILN_SOURCE_DIR "/codegen/aot_main.c.in", NULL);
    cr_assert(loader && main_in, "cannot read the .in files");
    cr_expect_str_eq(kiln_aot_loader_src, loader, "run scripts/gen-aot-src");
    cr_expect_str_eq(kiln_aot_main_src, main_in, "run scripts/gen-aot-src");
    free(loader);
    free(main_in);
}
