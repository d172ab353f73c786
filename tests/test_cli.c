/* tests/test_cli.c — the `kiln` command as a user runs it (tools/kiln.c,
 * tools/train.c, tools/compile.c): each case runs the built binary in the
 * source folder with its own environment, captures stdout and stderr, and
 * checks the exit status (0 success, 1 a failed run, 2 bad usage or bad
 * input) and the key parts of the messages.
 *
 * Covered: --help and no arguments, an unknown command, option and value, a
 * missing model argument, an unreadable and a malformed model file (file:
 * line:col and a caret), a missing data set, a missing and a failing C
 * compiler, compile --emit c, info, and train --save then --load resuming
 * from the checkpoint.
 *
 * Every case gets a temporary folder (removed after it) holding the compile
 * cache (XDG_CACHE_HOME), so no case reuses another's compiled programs.
 * Cases that train need Fashion-MNIST where kiln looks by default
 * (/usr/share/datasets/fashion-mnist) and are skipped without it. */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef KILN_BINARY
#error "KILN_BINARY (the path of the built kiln) must be defined by the build"
#endif

#define MODEL "examples/fashion_mlp.kiln"
#define DATA_DIR "/usr/share/datasets/fashion-mnist"
#define TABLE_HEADER "epoch     train_loss  valid_loss  accuracy  time\n"

static char tmp[128]; /* this case's temporary folder */
static char cache[192]; /* XDG_CACHE_HOME of the runs: tmp/cache */

static void setup(void)
{
    kiln_test_tmpdir(tmp, sizeof tmp, "cli");
    snprintf(cache, sizeof cache, "%s/cache", tmp);
}

static void teardown(void) { kiln_test_rmtree(tmp); }

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 300);

/* ---- running kiln ---- */

typedef struct run {
    int status; /* exit status, or 128 + the signal that killed it */
    char *out, *err;
    size_t nout, nerr;
} run;

static void run_free(run *r)
{
    free(r->out);
    free(r->err);
}

/* Appends what fd has to *buf; false at end of file. */
static bool drain(int fd, char **buf, size_t *len, size_t *cap)
{
    if (*cap - *len < 4097) {
        *cap = *cap * 2 + 8192;
        *buf = realloc(*buf, *cap);
        cr_assert_not_null(*buf);
    }
    ssize_t n = read(fd, *buf + *len, *cap - *len - 1);
    if (n < 0 && errno == EINTR) return true;
    cr_assert_geq(n, 0, "read: %s", strerror(errno));
    *len += (size_t)n;
    (*buf)[*len] = 0;
    return n > 0;
}

/* Runs kiln with the arguments argv (NULL-terminated, without argv[0]) in
 * the source folder, XDG_CACHE_HOME set to this case's cache and the
 * environment changes env ("NAME=VALUE" sets, "NAME" unsets; NULL-ended). */
static run kiln(const char *const *argv, const char *const *env)
{
    int po[2], pe[2];
    cr_assert_eq(pipe(po), 0);
    cr_assert_eq(pipe(pe), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, 0);
        if (chdir(KILN_SOURCE_DIR)) _exit(126);
        setenv("XDG_CACHE_HOME", cache, 1);
        for (int i = 0; env && env[i]; i++) {
            const char *eq = strchr(env[i], '=');
            if (!eq) {
                unsetenv(env[i]);
                continue;
            }
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
            setenv(name, eq + 1, 1);
        }
        const char *args[32] = {"kiln"};
        int n = 1;
        for (; argv[n - 1] && n < 31; n++) args[n] = argv[n - 1];
        args[n] = NULL;
        execv(KILN_BINARY, (char *const *)args);
        fprintf(stderr, "test_cli: cannot run %s: %s\n", KILN_BINARY, strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    run r = {0};
    size_t co = 8192, ce = 8192;
    r.out = calloc(co, 1);
    r.err = calloc(ce, 1);
    cr_assert(r.out && r.err);
    /* both pipes read as they fill, so neither stream can block the other */
    struct pollfd fds[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    int open_fds = 2;
    while (open_fds) {
        int n = poll(fds, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        cr_assert_geq(n, 0, "poll: %s", strerror(errno));
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            bool more = i == 0 ? drain(fds[i].fd, &r.out, &r.nout, &co)
                               : drain(fds[i].fd, &r.err, &r.nerr, &ce);
            if (!more) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
            }
        }
    }
    int ws;
    while (waitpid(pid, &ws, 0) < 0) cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    cr_assert_neq(r.status, 127, "%s", r.err);
    return r;
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Asserts the exit status, printing both streams when it differs. */
static void want_status(const run *r, int status, const char *what)
{
    cr_assert_eq(r->status, status, "%s: exit status %d, want %d\n--- stdout:\n%s\n--- stderr:\n%s",
                 what, r->status, status, r->out, r->err);
}

static void want_in(const char *text, const char *part, const char *what)
{
    cr_assert(strstr(text, part), "%s: wanted\n%s\n--- in:\n%s", what, part, text);
}

/* Asserts that text begins with prefix. */
static void want_prefix(const char *text, const char *prefix, const char *what)
{
    cr_assert(!strncmp(text, prefix, strlen(prefix)), "%s: wanted at the start\n%s\n--- got:\n%s",
              what, prefix, text);
}

static bool have_data(void)
{
    return access(DATA_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0 &&
           access(DATA_DIR "/t10k-images-idx3-ubyte.gz", R_OK) == 0;
}

#define NEED_DATA()                                                                              \
    do {                                                                                         \
        if (!have_data()) {                                                                      \
            teardown(); /* a skipped test's .fini does not run */                               \
            cr_skip_test("Fashion-MNIST is not installed in " DATA_DIR);                        \
            return;                                                                              \
        }                                                                                        \
    } while (0)

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(path, mode), 0);
}

/* Whether dir (recursively) holds a file whose name ends with suffix. */
static bool has_file(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat st;
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) found = has_file(p, suffix);
        else found = l >= s && !strcmp(de->d_name + l - s, suffix);
    }
    closedir(d);
    return found;
}

/* ---- usage ---- */

Test(cli, help)
{
    run r = kiln(ARGS("--help"), NULL);
    want_status(&r, 0, "kiln --help");
    want_prefix(r.out, "usage: kiln <command> MODEL [options]\n", "--help");
    static const char *const cmds[] = {"\n  train ", "\n  lr-find ", "\n  compile ", "\n  info ",
                                       "\n  check ", "\n  --data DIR ", "\n  --save FILE ",
                                       "\n  --load FILE "};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) want_in(r.out, cmds[i], "--help");
    cr_assert_eq(r.nerr, 0, "stderr: %s", r.err);
    run_free(&r);

    /* after a command, and -h, as well */
    r = kiln(ARGS("train", MODEL, "--help"), NULL);
    want_status(&r, 0, "kiln train MODEL --help");
    want_prefix(r.out, "usage: kiln ", "help after a command, -h");
    run_free(&r);
    r = kiln(ARGS("-h"), NULL);
    want_status(&r, 0, "kiln -h");
    want_prefix(r.out, "usage: kiln ", "help after a command, -h");
    run_free(&r);
}

Test(cli, no_arguments_is_usage_error)
{
    run r = kiln((const char *const[]){NULL}, NULL);
    want_status(&r, 2, "kiln");
    cr_assert_eq(r.nout, 0, "stdout: %s", r.out);
    want_prefix(r.err, "usage: kiln <command> MODEL [options]\n", "no arguments");
    run_free(&r);
}

Test(cli, unknown_command)
{
    run r = kiln(ARGS("frobnicate", MODEL), NULL);
    want_status(&r, 2, "kiln frobnicate");
    want_prefix(r.err, "kiln: unknown command 'frobnicate'\nusage: kiln ", "unknown command");
    cr_assert_eq(r.nout, 0);
    run_free(&r);
}

Test(cli, unknown_option)
{
    run r = kiln(ARGS("train", MODEL, "--frobnicate"), NULL);
    want_status(&r, 2, "unknown option");
    cr_assert_str_eq(r.err, "kiln train: unknown option '--frobnicate' (see kiln --help)\n");
    cr_assert_eq(r.nout, 0);
    run_free(&r);
    /* an option of another command */
    r = kiln(ARGS("compile", MODEL, "--save", "x.safetensors"), NULL);
    want_status(&r, 2, "compile --save");
    cr_assert_str_eq(r.err, "kiln compile: unknown option '--save' (see kiln --help)\n");
    run_free(&r);
}

Test(cli, bad_option_values)
{
    run r = kiln(ARGS("train", MODEL, "--bs"), NULL);
    want_status(&r, 2, "--bs without a value");
    cr_assert_str_eq(r.err, "kiln train: --bs needs a value\n");
    run_free(&r);
    r = kiln(ARGS("train", MODEL, "--limit", "0"), NULL);
    want_status(&r, 2, "--limit 0");
    cr_assert_str_eq(r.err, "kiln train: --limit wants a positive integer, got '0'\n");
    run_free(&r);
    r = kiln(ARGS("train", MODEL, "--lr", "fast"), NULL);
    want_status(&r, 2, "--lr fast");
    cr_assert_str_eq(r.err, "kiln train: --lr wants a non-negative number, got 'fast'\n");
    run_free(&r);
    r = kiln(ARGS("train", MODEL, "--schedule", "linear"), NULL);
    want_status(&r, 2, "--schedule linear");
    cr_assert_str_eq(r.err, "kiln train: unknown schedule 'linear' (one-cycle, const)\n");
    run_free(&r);
    r = kiln(ARGS("compile", MODEL, "--emit", "asm"), NULL);
    want_status(&r, 2, "--emit asm");
    cr_assert_str_eq(r.err, "kiln compile: unknown --emit 'asm' (ir, c)\n");
    run_free(&r);
    r = kiln(ARGS("info", MODEL, "extra"), NULL);
    want_status(&r, 2, "a second model");
    cr_assert_str_eq(r.err, "kiln info: unexpected argument 'extra'\n");
    run_free(&r);
}

Test(cli, missing_model_argument)
{
    static const char *const cmds[] = {"train", "lr-find", "compile", "info", "check"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        run r = kiln(ARGS(cmds[i]), NULL);
        want_status(&r, 2, cmds[i]);
        char want[160];
        snprintf(want, sizeof want,
                 "kiln %s: needs a model file (e.g. examples/fashion_mlp.kiln)\n", cmds[i]);
        cr_assert_str_eq(r.err, want);
        cr_assert_eq(r.nout, 0);
        run_free(&r);
    }
    /* options but no model */
    run r = kiln(ARGS("train", "--epochs", "1"), NULL);
    want_status(&r, 2, "train --epochs 1");
    cr_assert_str_eq(r.err, "kiln train: needs a model file (e.g. examples/fashion_mlp.kiln)\n");
    run_free(&r);
}

/* ---- bad input ---- */

Test(cli, unreadable_model_file)
{
    char path[256];
    snprintf(path, sizeof path, "%s/none.kiln", tmp);
    run r = kiln(ARGS("check", path), NULL);
    want_status(&r, 2, "a model file that is not there");
    char want[2048];
    snprintf(want, sizeof want,
             "%s: error: cannot read model file '%s': No such file or directory\n", path, path);
    cr_assert_str_eq(r.err, want);
    run_free(&r);
}

/* A syntax error: file:line:col, the message, the line and a caret under
 * the column; the same from every command that reads the model. */
Test(cli, malformed_model_file)
{
    char path[256], want[2048];
    snprintf(path, sizeof path, "%s/bad.kiln", tmp);
    write_file(path,
               "model bad\n"
               "input x: f32[B, 4]\n"
               "h = relu(linear(x, 8)))\n"
               "loss = reduce_mean(h)\n",
               0644);
    snprintf(want, sizeof want,
             "%s:3:23: error: expected end of line after the statement, found ')'\n"
             "h = relu(linear(x, 8)))\n"
             "                      ^\n",
             path);
    static const char *const cmds[] = {"check", "compile", "info", "train"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        /* train reads the model before the data: no data set needed */
        run r = kiln(ARGS(cmds[i], path), NULL);
        want_status(&r, 2, cmds[i]);
        cr_assert_str_eq(r.err, want, "kiln %s", cmds[i]);
        cr_assert_eq(r.nout, 0, "kiln %s: stdout %s", cmds[i], r.out);
        run_free(&r);
    }

    /* a character the lexer does not know */
    write_file(path, "model bad\ninput x: f32[B, 4]\nh = x $ 2\n", 0644);
    snprintf(want, sizeof want,
             "%s:3:7: error: unexpected character '$'\n"
             "h = x $ 2\n"
             "      ^\n",
             path);
    run r = kiln(ARGS("check", path), NULL);
    want_status(&r, 2, "check, lexer error");
    cr_assert_str_eq(r.err, want);
    run_free(&r);
}

Test(cli, missing_data)
{
    static const char want[] =
        "kiln train: Fashion-MNIST not found in /nonexistent: install Debian's "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data DIR\n";
    run r = kiln(ARGS("train", MODEL, "--data", "/nonexistent", "--limit", "256", "--epochs", "1"),
                 NULL);
    want_status(&r, 2, "--data /nonexistent");
    cr_assert_str_eq(r.err, want);
    cr_assert_eq(r.nout, 0, "stdout: %s", r.out);
    run_free(&r);
    /* lr-find the same; an empty folder too */
    r = kiln(ARGS("lr-find", MODEL, "--data", "/nonexistent"), NULL);
    want_status(&r, 2, "lr-find --data /nonexistent");
    want_prefix(r.err, "kiln lr-find: Fashion-MNIST not found in /nonexistent: ", "lr-find");
    run_free(&r);
    r = kiln(ARGS("train", MODEL, "--data", tmp), NULL);
    want_status(&r, 2, "--data (an empty folder)");
    char w[1024];
    snprintf(w, sizeof w, "kiln train: Fashion-MNIST not found in %s: ", tmp);
    want_prefix(r.err, w, "an empty folder");
    run_free(&r);
}

/* ---- image data sets (--data DIR with images; tests/test_images.c checks
 * the layouts themselves) ---- */

/* tmp/<rel>, made with its parents. */
static void make_dirs(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    for (char *s = p + strlen(tmp) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    cr_assert(mkdir(p, 0755) == 0 || errno == EEXIST, "mkdir %s", p);
}

Test(cli, train_image_folders)
{
    /* two classes of 28x28 gray PNGs: dark and bright */
    static const char *const cls[2] = {"dark", "bright"};
    uint8_t px[28 * 28];
    for (int split = 0; split < 2; split++)
        for (int c = 0; c < 2; c++) {
            char rel[128];
            snprintf(rel, sizeof rel, "imgs/%s/%s", split ? "valid" : "train", cls[c]);
            make_dirs(rel);
            for (int i = 0; i < (split ? 3 : 8); i++) {
                for (int k = 0; k < 28 * 28; k++) px[k] = (uint8_t)(c * 150 + (k * 7 + i) % 100);
                char p[512];
                char *err = NULL;
                snprintf(p, sizeof p, "%s/%s/%d.png", tmp, rel, i);
                cr_assert_eq(kiln_image_write_png(p, px, 28, 28, 1, &err), KILN_OK, "%s", err);
            }
        }
    char dir[256];
    snprintf(dir, sizeof dir, "%s/imgs", tmp);
    run r = kiln(ARGS("train", MODEL, "--data", dir, "--bs", "4", "--epochs", "1", "--augment"),
                 NULL);
    want_status(&r, 0, "train on image folders");
    want_prefix(r.out, TABLE_HEADER "0 ", "the epoch table");
    char w[512];
    snprintf(w, sizeof w,
             "kiln: %s: folders images 1x28x28, 2 classes, 16 training and 6 validation samples, "
             "augmented\n", dir);
    want_in(r.err, w, "the data line");
    run_free(&r);
    /* --size 14 makes 1x14x14 images: the model takes 28x28, and says so */
    r = kiln(ARGS("train", MODEL, "--data", dir, "--bs", "4", "--epochs", "1", "--size", "14"),
             NULL);
    want_status(&r, 2, "--size 14 against a 28x28 model");
    want_in(r.err, "a sample's x has 196 elements, but the program's input", "size mismatch");
    run_free(&r);
    /* a malformed multi-label set: the file, the line, the fix */
    make_dirs("ml/images");
    snprintf(w, sizeof w, "%s/ml/labels.csv", tmp);
    FILE *f = fopen(w, "w");
    cr_assert_not_null(f);
    fputs("image,tags\n", f);
    fclose(f);
    snprintf(dir, sizeof dir, "%s/ml", tmp);
    r = kiln(ARGS("train", MODEL, "--data", dir, "--epochs", "1"), NULL);
    want_status(&r, 2, "a bad labels.csv");
    snprintf(w, sizeof w,
             "kiln train: %s/labels.csv:1: the header must be `image_name,tags`, not `image,tags`: "
             "make the first line image_name,tags\n", dir);
    cr_assert_str_eq(r.err, w);
    run_free(&r);
    /* --size and --augment need images */
    r = kiln(ARGS("train", MODEL, "--data", "/nonexistent", "--size", "32"), NULL);
    want_status(&r, 2, "--size without images");
    want_in(r.err, "kiln train: --size works with image data sets only", "--size");
    run_free(&r);
}

/* ---- kiln data (tools/data.c; tests/test_datagen.c checks the sets) ---- */

Test(cli, data_make)
{
    char out[256], w[512];
    snprintf(out, sizeof out, "%s/pts", tmp);
    run r = kiln(ARGS("data", "make", "points", out, "--data", "/nonexistent"), NULL);
    want_status(&r, 2, "data make --data /nonexistent");
    want_prefix(r.err, "kiln data make: Fashion-MNIST not found in /nonexistent: install Debian's "
                       "dataset-fashion-mnist", "missing data");
    run_free(&r);
    r = kiln(ARGS("data", "make", "planet", out), NULL);
    want_status(&r, 2, "an unknown kind");
    want_in(r.err, "unknown kind 'planet' (multilabel, segmentation, points, folders)", "kind");
    run_free(&r);
    r = kiln(ARGS("data", "make", "folders", out, "--size", "64"), NULL);
    want_status(&r, 2, "folders --size");
    run_free(&r);
    NEED_DATA();
    r = kiln(ARGS("data", "make", "points", out, "--n-train", "5", "--n-valid", "2"), NULL);
    want_status(&r, 0, "data make points");
    snprintf(w, sizeof w, "points: 5 training + 2 validation images, 64x64 gray, in %s: 9 files",
             out);
    want_prefix(r.out, w, "data make points");
    run_free(&r);
    snprintf(w, sizeof w, "%s/points.csv", out);
    cr_assert_eq(access(w, R_OK), 0, "%s", w);
    /* again: the folder is not empty */
    r = kiln(ARGS("data", "make", "points", out, "--n-train", "5", "--n-valid", "2"), NULL);
    want_status(&r, 2, "data make into a full folder");
    want_in(r.err, "exists and is not empty: pass --force to replace it", "full folder");
    run_free(&r);
    r = kiln(ARGS("data", "make", "points", out, "--n-train", "5", "--n-valid", "2", "--force"),
             NULL);
    want_status(&r, 0, "data make --force");
    run_free(&r);
}

/* ---- the C compiler ---- */

Test(cli, missing_c_compiler)
{
    NEED_DATA();
    run r = kiln(ARGS("train", MODEL, "--limit", "256", "--epochs", "1"),
                 ENV("CC=/nonexistent/cc"));
    want_status(&r, 1, "CC=/nonexistent/cc");
    want_in(r.err,
            "kiln train: C compiler '/nonexistent/cc' not found (set $CC or install "
            "gcc: apt-get install gcc)\n",
            "missing compiler");
    cr_assert_eq(r.nout, 0, "no table: %s", r.out);
    cr_assert(!has_file(cache, ".so"), "nothing compiled into the cache");
    run_free(&r);
}

Test(cli, failing_c_compile)
{
    NEED_DATA();
    char cc[256], env[300];
    snprintf(cc, sizeof cc, "%s/fakecc", tmp);
    write_file(cc, "#!/bin/sh\necho \"cc: error: fake failure\" >&2; exit 1\n", 0755);
    snprintf(env, sizeof env, "CC=%s", cc);
    run r = kiln(ARGS("train", MODEL, "--limit", "256", "--epochs", "1"), ENV(env));
    want_status(&r, 1, "a compiler that fails");
    char want[2048];
    snprintf(want, sizeof want,
             "kiln train: C compiler '%s' failed (exit status 1) on the generated "
             "source, kept at %s/kiln/",
             cc, cache);
    want_prefix(r.err, want, "failing compiler");
    /* the compiler's own words, and the kept source is there to read */
    want_in(r.err, ".c:\ncc: error: fake failure\n", "the compiler's output");
    const char *p = strstr(r.err, " kept at ") + strlen(" kept at ");
    const char *end = strstr(p, ".c:\n");
    cr_assert_not_null(end, "%s", r.err);
    char kept[1024];
    snprintf(kept, sizeof kept, "%.*s", (int)(end + 2 - p), p);
    struct stat st;
    cr_assert_eq(stat(kept, &st), 0, "kept source %s: %s", kept, strerror(errno));
    cr_assert_gt(st.st_size, 0);
    cr_assert(!has_file(cache, ".so"));
    cr_assert_eq(r.nout, 0, "no table: %s", r.out);
    run_free(&r);
}

/* ---- compile, info ---- */

Test(cli, compile_emit_c)
{
    /* emitting C needs no compiler */
    run r = kiln(ARGS("compile", MODEL, "--emit", "c"), ENV("CC=/nonexistent/cc"));
    want_status(&r, 0, "compile --emit c");
    want_in(r.out, "int kiln_train_step(", "--emit c");
    cr_assert_eq(r.nerr, 0, "stderr: %s", r.err);
    run_free(&r);

    /* -o FILE: the same text in the file, nothing on stdout */
    char out[256];
    snprintf(out, sizeof out, "%s/model.c", tmp);
    r = kiln(ARGS("compile", MODEL, "--emit", "c", "-o", out), NULL);
    want_status(&r, 0, "compile --emit c -o");
    cr_assert_eq(r.nout, 0);
    FILE *f = fopen(out, "r");
    cr_assert_not_null(f);
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
    want_in(text, "int kiln_train_step(", "-o file");
    run_free(&r);
}

Test(cli, compile_emit_ir)
{
    run r = kiln(ARGS("compile", MODEL), NULL);
    want_status(&r, 0, "compile");
    want_prefix(r.out, "graph fashion_mlp {\n", "compile");
    run_free(&r);
    r = kiln(ARGS("check", MODEL), NULL);
    want_status(&r, 0, "check");
    want_prefix(r.err, MODEL ": ok (", "check");
    run_free(&r);
}

Test(cli, info)
{
    /* info uses the reference backend: no compiler needed */
    run r = kiln(ARGS("info", MODEL), ENV("CC=/nonexistent/cc"));
    want_status(&r, 0, "info");
    want_prefix(r.out, MODEL " at batch 64\n", "info");
    want_in(r.out, "\n  trainable parameters       669706\n", "the parameter count");
    want_in(r.out, "\n    param    linear0.weight                   f32[512,784]\n", "a tensor");
    cr_assert_eq(r.nerr, 0, "stderr: %s", r.err);
    run_free(&r);
    r = kiln(ARGS("info", MODEL, "--bs", "32"), NULL);
    want_status(&r, 0, "info --bs 32");
    want_prefix(r.out, MODEL " at batch 32\n", "info --bs 32");
    want_in(r.out, "\n  trainable parameters       669706\n", "the parameter count at batch 32");
    want_in(r.out, "\n    input    x                                f32[32,1,28,28]\n", "x");
    run_free(&r);
}

/* info lists the kernels by the names kiln_program_call takes; --timings
 * compiles from an empty cache and prints every phase, per backend. */
Test(cli, info_kernels_and_timings)
{
    run r = kiln(ARGS("info", MODEL, "--bs", "8"), ENV("CC=/nonexistent/cc"));
    want_status(&r, 0, "info");
    want_in(r.out, "\n  kernels (entry, index, name", "the kernel list");
    want_in(r.out, "\n    train_step   0  k4_matmul ", "the first kernel");
    run_free(&r);
    r = kiln(ARGS("info", MODEL, "--bs", "8", "--timings", "--backend", "c"), NULL);
    want_status(&r, 0, "info --timings");
    want_in(r.out, "\ncompile times of " MODEL " at batch 8 (from an empty cache)\n",
            "the timings' title");
    want_in(r.out, "C cold", "the C column");
    want_in(r.out, "\n  compile (cc+dlopen/JIT) ", "the compiler's row");
    want_in(r.out, "\n  total (kiln_compile) ", "the total");
    run_free(&r);
    r = kiln(ARGS("info", MODEL, "--timings", "--backend", "fast"), NULL);
    want_status(&r, 2, "info --timings --backend fast");
    want_in(r.err, "unknown backend 'fast'", "the bad backend");
    run_free(&r);
}

/* ---- train, save, load ---- */

/* The safetensors header of path: checks the 8-byte little-endian length
 * against the file and returns the JSON header (malloc'd). */
static char *safetensors_header(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    unsigned char le[8];
    cr_assert_eq(fread(le, 1, 8, f), 8, "%s: shorter than 8 bytes", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | le[i];
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert(n >= 2 && n <= 100000000 && 8 + n <= (uint64_t)st.st_size,
              "%s: header length %llu, file %lld bytes", path, (unsigned long long)n,
              (long long)st.st_size);
    char *h = malloc(n + 1);
    cr_assert_not_null(h);
    cr_assert_eq(fread(h, 1, n, f), n);
    h[n] = 0;
    fclose(f);
    size_t e = n;
    while (e > 0 && h[e - 1] == ' ') e--; /* the format pads with spaces */
    cr_assert(h[0] == '{' && e > 0 && h[e - 1] == '}', "%s: header %s", path, h);
    return h;
}

Test(cli, train_save_then_load)
{
    NEED_DATA();
    char f1[256], f2[256];
    snprintf(f1, sizeof f1, "%s/first.safetensors", tmp);
    snprintf(f2, sizeof f2, "%s/second.safetensors", tmp);

    run r = kiln(ARGS("train", MODEL, "--limit", "512", "--epochs", "1", "--save", f1), NULL);
    want_status(&r, 0, "train --save");
    want_prefix(r.out, TABLE_HEADER "0 ", "the epoch table");
    char want[2048];
    snprintf(want, sizeof want, "\nsaved weights and optimizer state to %s\n", f1);
    want_in(r.out, want, "the save line");
    want_in(r.err, "kiln: " MODEL " compiled (C backend) in ", "the compile line");
    char *h = safetensors_header(f1);
    /* 512 samples at batch 64: 8 steps, one epoch */
    want_in(h, "\"kiln.step\":\"8\"", "the step in the checkpoint");
    want_in(h, "\"kiln.epoch\":\"1\"", "the epoch in the checkpoint");
    want_in(h, "\"linear0.weight\":", "a parameter");
    want_in(h, "\"linear0.weight.exp_avg\":", "the optimizer state");
    free(h);
    run_free(&r);

    /* resume: epoch 1 of the table, the program from the cache, the step and
     * epoch carried on */
    r = kiln(ARGS("train", MODEL, "--limit", "512", "--epochs", "1", "--load", f1, "--save", f2),
             NULL);
    want_status(&r, 0, "train --load");
    want_prefix(r.out, TABLE_HEADER "1 ", "the epoch table, resumed");
    snprintf(want, sizeof want, "kiln: resumed from %s at epoch 1\n", f1);
    want_in(r.err, want, "the resume line");
    want_in(r.err, "kiln: " MODEL " compiled (C backend, cached) in ", "a cache hit");
    h = safetensors_header(f2);
    want_in(h, "\"kiln.step\":\"16\"", "the step after resuming");
    want_in(h, "\"kiln.epoch\":\"2\"", "the epoch after resuming");
    free(h);
    run_free(&r);
}

Test(cli, load_errors)
{
    NEED_DATA();
    char path[256], want[2048];
    /* a checkpoint that is not there */
    snprintf(path, sizeof path, "%s/none.safetensors", tmp);
    run r = kiln(ARGS("train", MODEL, "--limit", "256", "--epochs", "1", "--load", path), NULL);
    want_status(&r, 2, "--load of a missing file");
    snprintf(want, sizeof want, "kiln train: %s: cannot open: No such file or directory\n", path);
    want_in(r.err, want, "missing checkpoint");
    cr_assert_eq(r.nout, 0, "no training: %s", r.out);
    run_free(&r);
    /* not a safetensors file */
    snprintf(path, sizeof path, "%s/junk.safetensors", tmp);
    write_file(path, "garbage\n", 0644);
    r = kiln(ARGS("train", MODEL, "--limit", "256", "--epochs", "1", "--load", path), NULL);
    want_status(&r, 2, "--load of a junk file");
    snprintf(want, sizeof want, "kiln train: %s: header length ", path);
    want_in(r.err, want, "junk checkpoint");
    cr_assert_eq(r.nout, 0, "no training: %s", r.out);
    run_free(&r);
}

/* Progressive resizing: --sizes 16,32 --epochs 1,1 trains one cycle at each
 * size, carrying weights and optimizer state over; a layer whose weights
 * depend on the size is named. */
Test(cli, train_progressive_resizing)
{
    NEED_DATA();
    char out[256], model[256], bad[256];
    snprintf(out, sizeof out, "%s/pr", tmp);
    run r = kiln(ARGS("data", "make", "points", out, "--n-train", "32", "--n-valid", "8", "--force"),
                 NULL);
    want_status(&r, 0, "data make points");
    run_free(&r);
    snprintf(model, sizeof model, "%s/pr.kiln", tmp);
    FILE *f = fopen(model, "w");
    cr_assert_not_null(f);
    fputs("model pr\ndim S = 64\ninput x: f32[B, 1, S, S]\ntarget y: f32[B, 2]\n"
          "h = max_pool2d(reshape(x, shape=[B, S, S]), kernel=S / 4)\n"
          "out = linear(flatten(h), 2)\nloss = mse_loss(out, y)\n", f);
    fclose(f);
    r = kiln(ARGS("train", model, "--data", out, "--sizes", "16,32", "--epochs", "1,1", "--bs", "8"),
             NULL);
    want_status(&r, 0, "train --sizes 16,32");
    want_in(r.err, "kiln: size 32: carried 6 tensors", "carried over");
    want_in(r.out, "\n1 ", "the second stage's epoch is numbered 1");
    run_free(&r);
    r = kiln(ARGS("train", model, "--data", out, "--sizes", "16,32", "--epochs", "1,1,1"), NULL);
    want_status(&r, 2, "three epoch counts for two sizes");
    want_in(r.err, "--epochs lists 3 counts but --sizes 2 sizes", "count mismatch");
    run_free(&r);
    snprintf(bad, sizeof bad, "%s/bad.kiln", tmp);
    f = fopen(bad, "w");
    cr_assert_not_null(f);
    fputs("model bad\ndim S = 64\ninput x: f32[B, 1, S, S]\ntarget y: f32[B, 2]\n"
          "out = linear(flatten(x), 2)\nloss = mse_loss(out, y)\n", f);
    fclose(f);
    r = kiln(ARGS("train", bad, "--data", out, "--sizes", "16,32", "--epochs", "1", "--bs", "8"),
             NULL);
    want_status(&r, 2, "a size-dependent layer");
    want_in(r.err, "size 16 -> 32: kiln_program_copy: 'linear0.weight' is f32[2,256] in the source "
                   "program but f32[2,1024]", "the tensor named");
    run_free(&r);
    r = kiln(ARGS("train", bad, "--data", out, "--dim", "T=3", "--epochs", "1"), NULL);
    want_status(&r, 2, "an undeclared dim");
    want_in(r.err, "the model declares no dim 'T' (its dims: S)", "dim named");
    run_free(&r);
}
