/* tests/testutil.c — helpers shared by the Criterion suites. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "tests/testutil.h"

#include <criterion/criterion.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

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
