#ifndef KILN_TESTS_TESTUTIL_H
#define KILN_TESTS_TESTUTIL_H
#include "kiln/kiln.h"

#include <stddef.h>
#include <stdint.h>

/* Creates a fresh directory "$TMPDIR/kiln_<tag>_XXXXXX" ("/tmp" when TMPDIR
 * is unset or empty) and writes its path into buf[0..len); the test fails
 * when mkdtemp does. */
void kiln_test_tmpdir(char *buf, size_t len, const char *tag);

/* The whole file at path as a NUL-terminated malloc'd string (the caller
 * frees it); *len, when not NULL, gets its size. Fails the test when the file
 * cannot be read. */
char *kiln_test_slurp(const char *path, size_t *len);

/* A finished process: exit status (128 + signal when killed), its stdout
 * and stderr (malloc'd). */
typedef struct kiln_test_run {
    int status;
    char *out, *err;
} kiln_test_run;

/* Runs argv (argv[0] a path) in dir (NULL: here) with only PATH in the
 * environment, or the test's environment when inherit; stdout and stderr go
 * through files in tmpdir. */
kiln_test_run kiln_test_run_in(const char *tmpdir, const char *dir, int inherit,
                               char *const argv[]);
void kiln_test_run_free(kiln_test_run *r);

/* Removes path and everything below it (symbolic links are removed, not
 * followed); errors are ignored. */
void kiln_test_rmtree(const char *path);

/* How many nodes of g have registry op `op`. */
int kiln_test_count_op(const kiln_graph *g, const char *op);

/* A small classifier with a loss: x [4,5] (dtype t) -> linear fc1 (6) ->
 * relu -> linear fc2 (3) -> cross_entropy with labels y i32[4]. */
kiln_graph *kiln_test_tiny_mlp(kiln_dtype t);

/* Element i of a buffer of dtype dt (f32, f64, i32, i64, u8, bool) written
 * from, or read as, a double; other dtypes fail the test. */
void kiln_test_put(void *p, kiln_dtype dt, int64_t i, double v);
double kiln_test_get(const void *p, kiln_dtype dt, int64_t i);

#endif
