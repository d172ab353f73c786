/* tests/test_cc.c — compiling and loading generated C (codegen/cc.c): a
 * source compiles and runs, the second load hits the disk cache, compile
 * errors quote the compiler and name the kept source, a missing compiler is
 * named, and processes racing on one cache all succeed. Each test uses its
 * own temporary cache directory. */
#include <criterion/criterion.h>

#include "tests/testutil.h"

#include "codegen/codegen.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char cache[256];

static void make_cache(void)
{
    kiln_test_tmpdir(cache, sizeof cache, "cc");
}

static void drop_cache(void)
{
    kiln_test_rmtree(cache);
}

/* Files in dir whose name ends with suffix; temporary files (".name.XXXXXX") too. */
static int count_files(const char *dir, const char *suffix, int *temps)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    int n = 0;
    if (temps) *temps = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name), s = strlen(suffix);
        if (de->d_name[0] == '.' && strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && temps)
            (*temps)++;
        if (de->d_name[0] != '.' && l > s && !strcmp(de->d_name + l - s, suffix)) n++;
    }
    closedir(d);
    return n;
}

static kiln_cc_options opts(void)
{
    kiln_cc_options o = {.cc = NULL, .cache_dir = cache, .verbose = 0};
    return o;
}

static const char *twice_src = "int kiln_twice(int x) { return 2 * x; }\n";

TestSuite(cc, .init = make_cache, .fini = drop_cache, .timeout = 120);

Test(cc, compiles_and_runs)
{
    kiln_cc_options o = opts();
    kiln_so *so = NULL;
    int cached = -1;
    double secs = -1;
    char *err = NULL;
    kiln_status st = kiln_cc_load(twice_src, &o, &so, &cached, &secs, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    cr_assert_null(err);
    cr_assert_not_null(so);
    cr_expect_eq(cached, 0);
    cr_expect_geq(secs, 0.0);
    int (*f)(int) = (int (*)(int))kiln_so_sym(so, "kiln_twice");
    cr_assert_not_null(f);
    cr_expect_eq(f(21), 42);
    cr_expect_null(kiln_so_sym(so, "kiln_no_such_symbol"));
    kiln_so_close(so);
    int temps;
    cr_expect_eq(count_files(cache, ".so", &temps), 1);
    cr_expect_eq(count_files(cache, ".c", NULL), 1, "the source is kept beside the object");
    cr_expect_eq(temps, 0, "no temporary file is left behind");
}

Test(cc, second_load_is_a_cache_hit)
{
    kiln_cc_options o = opts();
    kiln_so *a = NULL, *b = NULL;
    int cached = -1;
    double secs;
    char *err = NULL;
    cr_assert_eq(kiln_cc_load(twice_src, &o, &a, &cached, &secs, &err), KILN_OK, "%s", err);
    cr_expect_eq(cached, 0);
    cr_assert_eq(kiln_cc_load(twice_src, &o, &b, &cached, &secs, &err), KILN_OK, "%s", err);
    cr_expect_eq(cached, 1);
    int (*f)(int) = (int (*)(int))kiln_so_sym(b, "kiln_twice");
    cr_assert_not_null(f);
    cr_expect_eq(f(-4), -8);
    kiln_so_close(a);
    kiln_so_close(b);
    /* another source is another key */
    kiln_so *c = NULL;
    cr_assert_eq(
        kiln_cc_load("int kiln_thrice(int x) { return 3 * x; }\n", &o, &c, &cached, &secs, &err),
        KILN_OK, "%s", err);
    cr_expect_eq(cached, 0);
    kiln_so_close(c);
    cr_expect_eq(count_files(cache, ".so", NULL), 2);
}

Test(cc, syntax_error_quotes_the_compiler)
{
    kiln_cc_options o = opts();
    kiln_so *so = (kiln_so *)1;
    int cached;
    double secs;
    char *err = NULL;
    kiln_status st =
        kiln_cc_load("int kiln_broken(int x) { return x +; }\n", &o, &so, &cached, &secs, &err);
    cr_assert_neq(st, KILN_OK);
    cr_expect_null(so);
    cr_assert_not_null(err);
    cr_expect_not_null(strstr(err, "error:"), "the compiler's message is quoted: %s", err);
    cr_expect_not_null(strstr(err, cache), "the kept source is named: %s", err);
    /* the named source file exists and holds the source */
    const char *p = strstr(err, cache);
    char path[512];
    size_t n = strcspn(p, ": \n");
    cr_assert_lt(n, sizeof path);
    memcpy(path, p, n);
    path[n] = '\0';
    cr_expect(n > 2 && !strcmp(path + n - 2, ".c"), "a .c file: %s", path);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "kept source %s", path);
    char buf[128] = {0};
    cr_expect_gt(fread(buf, 1, sizeof buf - 1, f), 0);
    fclose(f);
    cr_expect_not_null(strstr(buf, "kiln_broken"));
    int temps;
    cr_expect_eq(count_files(cache, ".so", &temps), 0);
    cr_expect_eq(temps, 0, "the temporary object is removed");
    free(err);
}

Test(cc, missing_compiler_is_named)
{
    kiln_cc_options o = opts();
    o.cc = "/nonexistent/cc";
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    kiln_status st = kiln_cc_load(twice_src, &o, &so, &cached, &secs, &err);
    cr_assert_eq(st, KILN_ERR_NOT_FOUND);
    cr_assert_null(so);
    cr_assert_not_null(err);
    cr_expect_str_eq(err, "C compiler '/nonexistent/cc' not found (set $CC or install gcc: "
                          "apt-get install gcc)");
    free(err);
}

Test(cc, compiler_from_env)
{
    setenv("CC", "/nonexistent/other-cc", 1);
    kiln_cc_options o = opts();
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    cr_assert_eq(kiln_cc_load(twice_src, &o, &so, &cached, &secs, &err), KILN_ERR_NOT_FOUND);
    cr_expect_not_null(strstr(err, "'/nonexistent/other-cc'"), "%s", err);
    free(err);
    err = NULL;
    /* a compiler given with arguments, as $CC often is */
    setenv("CC", "cc -w", 1);
    cr_assert_eq(kiln_cc_load(twice_src, &o, &so, &cached, &secs, &err), KILN_OK, "%s", err);
    kiln_so_close(so);
}

Test(cc, default_cache_dir_from_xdg)
{
    setenv("XDG_CACHE_HOME", cache, 1);
    kiln_cc_options o = {0};
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    cr_assert_eq(kiln_cc_load(twice_src, &o, &so, &cached, &secs, &err), KILN_OK, "%s", err);
    kiln_so_close(so);
    char dir[320];
    snprintf(dir, sizeof dir, "%s/kiln", cache);
    struct stat st;
    cr_assert_eq(stat(dir, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0755);
    cr_expect_eq(count_files(dir, ".so", NULL), 1);
}

Test(cc, dlopen_failure_says_why)
{
    kiln_cc_options o = opts();
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    /* links as a shared object, but a symbol is missing at load time */
    kiln_status st = kiln_cc_load("extern int kiln_no_such_function(void);\n"
                                  "int kiln_calls(void) { return kiln_no_such_function(); }\n",
                                  &o, &so, &cached, &secs, &err);
    cr_assert_neq(st, KILN_OK);
    cr_assert_null(so);
    cr_assert_not_null(err);
    cr_expect_not_null(strstr(err, "kiln_no_such_function"), "dlerror() is quoted: %s", err);
    free(err);
}

/* Several processes compile the same source into one cache at once. */
Test(cc, racing_processes_all_succeed)
{
    const char *src = "int kiln_race(int x) { return x + 7; }\n";
    enum { N = 4 };
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        cr_assert_geq(pids[i], 0);
        if (pids[i] == 0) {
            kiln_cc_options o = opts();
            kiln_so *so = NULL;
            int cached;
            double secs;
            char *err = NULL;
            int ok = kiln_cc_load(src, &o, &so, &cached, &secs, &err) == KILN_OK;
            if (!ok) fprintf(stderr, "child %d: %s\n", i, err ? err : "?");
            int (*f)(int) = ok ? (int (*)(int))kiln_so_sym(so, "kiln_race") : NULL;
            ok = ok && f && f(1) == 8;
            kiln_so_close(so);
            free(err);
            _exit(ok ? 0 : 1);
        }
    }
    for (int i = 0; i < N; i++) {
        int status;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d failed", i);
    }
    int temps;
    cr_expect_eq(count_files(cache, ".so", &temps), 1);
    cr_expect_eq(temps, 0);
    /* and now it is a hit */
    kiln_cc_options o = opts();
    kiln_so *so = NULL;
    int cached;
    double secs;
    char *err = NULL;
    cr_assert_eq(kiln_cc_load(src, &o, &so, &cached, &secs, &err), KILN_OK, "%s", err);
    cr_expect_eq(cached, 1);
    kiln_so_close(so);
}

Test(cc, bad_arguments_do_not_crash)
{
    kiln_cc_options o = opts();
    char *err = NULL;
    kiln_so *so = NULL;
    cr_expect_eq(kiln_cc_load(NULL, &o, &so, NULL, NULL, &err), KILN_ERR_INVALID);
    free(err);
    err = NULL;
    cr_expect_eq(kiln_cc_load(twice_src, &o, NULL, NULL, NULL, &err), KILN_ERR_INVALID);
    free(err);
    /* a cache path that cannot be a directory */
    char file[320];
    snprintf(file, sizeof file, "%s/plain-file", cache);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    o.cache_dir = file;
    err = NULL;
    cr_expect_eq(kiln_cc_load(twice_src, &o, &so, NULL, NULL, &err), KILN_ERR_IO);
    cr_expect_not_null(err);
    free(err);
    cr_expect_null(kiln_so_sym(NULL, "x"));
    kiln_so_close(NULL);
}
