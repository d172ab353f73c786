/* tests/testutil.c — helpers shared by the Criterion suites. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "tests/testutil.h"
#include "ir/graph.h"
#include "ir/ops.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kiln_test_tmpdir(char *buf, size_t len, const char *tag)
{
    const char *base = getenv("TMPDIR");
    snprintf(buf, len, "%s/kiln_%s_XXXXXX", base && *base ? base : "/tmp", tag);
    cr_assert_not_null(mkdtemp(buf), "mkdtemp failed");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* keep going */
}

void kiln_test_rmtree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int kiln_test_count_op(const kiln_graph *g, const char *op)
{
    int k = kiln_op_lookup(op), n = 0;
    for (int32_t i = 0; i < g->nnodes; i++) n += g->nodes[i].op == k;
    return n;
}

kiln_graph *kiln_test_tiny_mlp(kiln_dtype t)
{
    kiln_graph *g = kiln_graph_new("tiny");
    int64_t xs[] = {4, 5}, ys[] = {4};
    kiln_value x = kiln_input(g, "x", t, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_relu(g, kiln_linear(g, x, 6, 1, "fc1"));
    kiln_value out = kiln_linear(g, h, 3, 1, "fc2");
    kiln_value loss = kiln_cross_entropy(g, out, y);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    return g;
}

/* Element i of buffer p of dtype dt, written from / read as a double. */
void kiln_test_put(void *p, kiln_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case KILN_F32:
        ((float *)p)[i] = (float)v;
        break;
    case KILN_F64:
        ((double *)p)[i] = v;
        break;
    case KILN_I32:
        ((int32_t *)p)[i] = (int32_t)v;
        break;
    case KILN_I64:
        ((int64_t *)p)[i] = (int64_t)v;
        break;
    case KILN_U8:
        ((uint8_t *)p)[i] = (uint8_t)v;
        break;
    case KILN_BOOL:
        ((uint8_t *)p)[i] = v != 0;
        break;
    default:
        cr_assert_fail("dtype");
    }
}

double kiln_test_get(const void *p, kiln_dtype dt, int64_t i)
{
    switch (dt) {
    case KILN_F32:
        return ((const float *)p)[i];
    case KILN_F64:
        return ((const double *)p)[i];
    case KILN_I32:
        return ((const int32_t *)p)[i];
    case KILN_I64:
        return (double)((const int64_t *)p)[i];
    case KILN_U8:
    case KILN_BOOL:
        return ((const uint8_t *)p)[i];
    default:
        cr_assert_fail("dtype");
        return 0;
    }
}

char *kiln_test_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 2) {
            buf = realloc(buf, cap *= 2);
            cr_assert_not_null(buf);
        }
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

kiln_test_run kiln_test_run_in(const char *tmpdir, const char *dir, int inherit,
                               char *const argv[])
{
    char o[PATH_MAX], e[PATH_MAX];
    snprintf(o, sizeof o, "%s/stdout", tmpdir);
    snprintf(e, sizeof e, "%s/stderr", tmpdir);
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
        execve(argv[0], argv, inherit ? environ : clean);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    kiln_test_run r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
                       kiln_test_slurp(o, NULL), kiln_test_slurp(e, NULL)};
    return r;
}

void kiln_test_run_free(kiln_test_run *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}
