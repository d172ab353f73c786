/* tests/test_npy.c — the .npy reader and writer (runtime/npy.c): round trips
 * of every dtype, files as other numpy versions write them (2.0, 3.0,
 * big-endian, Python 2 shapes), and malformed files, each with its status
 * and its exact message. Every file lives in a fresh temporary directory. */
#include <criterion/criterion.h>

#include "runtime/npy.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static void setup(void)
{
    kiln_test_tmpdir(tmpdir, sizeof tmpdir, "npy");
}

static void teardown(void)
{
    kiln_test_rmtree(tmpdir);
}

TestSuite(npy, .init = setup, .fini = teardown);

/* tmpdir/name, in a static buffer (one at a time). */
static const char *tpath(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* A .npy file of version major.0 with this exact header text and data. */
static void write_npy_raw(const char *path, int major, int minor, const char *header,
                          const void *data, size_t datalen)
{
    size_t hl = strlen(header), lb = major == 1 ? 2 : 4;
    size_t n = 8 + lb + hl + datalen;
    unsigned char *b = malloc(n);
    cr_assert_not_null(b);
    memcpy(b, "\x93NUMPY", 6);
    b[6] = (unsigned char)major;
    b[7] = (unsigned char)minor;
    for (size_t k = 0; k < lb; k++) b[8 + k] = (unsigned char)(hl >> (8 * k));
    memcpy(b + 8 + lb, header, hl);
    if (datalen) memcpy(b + 8 + lb + hl, data, datalen);
    write_bytes(path, b, n);
    free(b);
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    unsigned char *b = malloc(1 << 20);
    cr_assert_not_null(b);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

/* ---- round trips ---- */

static void roundtrip(kiln_dtype t, int rank, const int64_t *shape, const void *data)
{
    char err[512], p[512];
    snprintf(p, sizeof p, "%s", tpath("rt.npy"));
    cr_assert_eq(kiln_npy_save(p, t, rank, shape, data, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(access(tpath("rt.npy.tmp"), F_OK), -1, "the temporary file was left behind");
    kiln_npy a;
    cr_assert_eq(kiln_npy_load(p, &a, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(a.dtype, t);
    cr_assert_eq(a.rank, rank);
    int64_t numel = 1;
    for (int k = 0; k < rank; k++) {
        cr_assert_eq(a.shape[k], shape[k]);
        numel *= shape[k];
    }
    cr_assert_eq(a.numel, numel);
    cr_assert_not_null(a.data);
    if (numel) cr_assert_eq(memcmp(a.data, data, (size_t)numel * kiln_dtype_size(t)), 0);
    /* the data starts on a 64-byte boundary, as numpy.save puts it */
    size_t n;
    unsigned char *b = read_all(p, &n);
    cr_assert_eq(n, 128 + (size_t)numel * kiln_dtype_size(t));
    cr_assert_eq(b[127], '\n');
    free(b);
    kiln_npy_free(&a);
    cr_assert_null(a.data);
}

Test(npy, roundtrip_f32)
{
    float v[24];
    for (int i = 0; i < 24; i++) v[i] = (float)(i - 11.5) * 0.37f;
    v[3] = -0.0f;
    v[4] = INFINITY;
    v[5] = 1e-40f; /* subnormal */
    int64_t s[] = {2, 3, 4};
    roundtrip(KILN_F32, 3, s, v);
    double d[24];
    kiln_npy a;
    char err[256];
    cr_assert_eq(kiln_npy_load(tpath("rt.npy"), &a, err, sizeof err), KILN_OK);
    cr_assert_eq(kiln_npy_to_f64(&a, d), KILN_OK);
    for (int i = 0; i < 24; i++) cr_assert_eq(d[i], (double)v[i]);
    kiln_npy_free(&a);
}

Test(npy, roundtrip_f64)
{
    double v[7] = {1.0 / 3.0, -2.5e300, 4.9e-324, 0.0, -1.0, NAN, 1e-5};
    int64_t s[] = {7};
    char err[256];
    cr_assert_eq(kiln_npy_save(tpath("rt.npy"), KILN_F64, 1, s, v, err, sizeof err), KILN_OK);
    kiln_npy a;
    cr_assert_eq(kiln_npy_load(tpath("rt.npy"), &a, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(memcmp(a.data, v, sizeof v), 0); /* bit-exact, NaN included */
    double d[7];
    cr_assert_eq(kiln_npy_to_f64(&a, d), KILN_OK);
    cr_assert(isnan(d[5]));
    cr_assert_eq(d[0], 1.0 / 3.0);
    kiln_npy_free(&a);
    roundtrip(KILN_F64, 1, s, v);
}

Test(npy, roundtrip_i32)
{
    int32_t v[6] = {0, -1, 2147483647, -2147483647 - 1, 42, 7};
    int64_t s[] = {3, 2};
    roundtrip(KILN_I32, 2, s, v);
    kiln_npy a;
    char err[256];
    cr_assert_eq(kiln_npy_load(tpath("rt.npy"), &a, err, sizeof err), KILN_OK);
    double d[6];
    cr_assert_eq(kiln_npy_to_f64(&a, d), KILN_OK);
    cr_assert_eq(d[3], -2147483648.0);
    kiln_npy_free(&a);
}

Test(npy, roundtrip_i64)
{
    int64_t v[4] = {INT64_MAX, INT64_MIN, -3, 1LL << 40};
    int64_t s[] = {1, 4, 1};
    roundtrip(KILN_I64, 3, s, v);
}

Test(npy, roundtrip_u8)
{
    uint8_t v[256];
    for (int i = 0; i < 256; i++) v[i] = (uint8_t)i;
    int64_t s[] = {16, 16};
    roundtrip(KILN_U8, 2, s, v);
}

Test(npy, roundtrip_bool)
{
    uint8_t v[5] = {1, 0, 0, 1, 1};
    int64_t s[] = {5};
    roundtrip(KILN_BOOL, 1, s, v);
    kiln_npy a;
    char err[256];
    cr_assert_eq(kiln_npy_load(tpath("rt.npy"), &a, err, sizeof err), KILN_OK);
    double d[5];
    cr_assert_eq(kiln_npy_to_f64(&a, d), KILN_OK);
    cr_assert_eq(d[0], 1.0);
    cr_assert_eq(d[1], 0.0);
    kiln_npy_free(&a);
}

Test(npy, roundtrip_scalar_and_empty)
{
    float one = 2.5f;
    roundtrip(KILN_F32, 0, NULL, &one);
    int64_t s[] = {3, 0, 2};
    roundtrip(KILN_I64, 3, s, NULL);
    int64_t s8[KILN_MAX_RANK] = {1, 2, 1, 1, 1, 1, 1, 3};
    int32_t v[6] = {1, 2, 3, 4, 5, 6};
    roundtrip(KILN_I32, KILN_MAX_RANK, s8, v);
}

/* The writer's header is byte for byte what numpy.save (1.24) writes. */
Test(npy, header_is_numpys)
{
    char err[256];
    float v[6] = {0};
    int64_t s2[] = {2, 3}, s1[] = {6};
    const struct {
        int rank;
        const int64_t *shape;
        const char *dict;
    } cases[] = {{2, s2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"},
                 {1, s1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }"},
                 {0, NULL, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        cr_assert_eq(kiln_npy_save(tpath("h.npy"), KILN_F32, cases[c].rank, cases[c].shape, v,
                                   err, sizeof err), KILN_OK);
        size_t n;
        unsigned char *b = read_all(tpath("h.npy"), &n);
        cr_assert_eq(memcmp(b, "\x93NUMPY\x01\x00\x76\x00", 10), 0);
        size_t dl = strlen(cases[c].dict);
        cr_assert_eq(memcmp(b + 10, cases[c].dict, dl), 0, "header: %.118s", (char *)b + 10);
        for (size_t k = 10 + dl; k < 127; k++) cr_assert_eq(b[k], ' ');
        cr_assert_eq(b[127], '\n');
        free(b);
    }
}

Test(npy, save_replaces_existing_file)
{
    char err[256];
    int32_t a = 1, b[3] = {4, 5, 6};
    int64_t s[] = {3};
    cr_assert_eq(kiln_npy_save(tpath("r.npy"), KILN_I32, 0, NULL, &a, err, sizeof err), 0);
    cr_assert_eq(kiln_npy_save(tpath("r.npy"), KILN_I32, 1, s, b, err, sizeof err), 0);
    kiln_npy x;
    cr_assert_eq(kiln_npy_load(tpath("r.npy"), &x, err, sizeof err), KILN_OK);
    cr_assert_eq(x.numel, 3);
    kiln_npy_free(&x);
}

Test(npy, save_errors)
{
    char err[1024], want[1024];
    float v = 0;
    int64_t neg[] = {2, -1};
    cr_assert_eq(kiln_npy_save(tpath("e.npy"), KILN_F16, 0, NULL, &v, err, sizeof err),
                 KILN_ERR_UNSUPPORTED);
    snprintf(want, sizeof want, "%s: cannot save dtype f16 as .npy", tpath("e.npy"));
    cr_assert_str_eq(err, want);
    cr_assert_eq(kiln_npy_save(tpath("e.npy"), KILN_F32, 2, neg, &v, err, sizeof err),
                 KILN_ERR_INVALID);
    snprintf(want, sizeof want, "%s: negative dimension -1", tpath("e.npy"));
    cr_assert_str_eq(err, want);
    cr_assert_eq(kiln_npy_save(tpath("e.npy"), KILN_F32, 9, neg, &v, err, sizeof err),
                 KILN_ERR_INVALID);
    char p[600];
    snprintf(p, sizeof p, "%s/no/such/dir/x.npy", tmpdir);
    cr_assert_eq(kiln_npy_save(p, KILN_F32, 0, NULL, &v, err, sizeof err), KILN_ERR_IO);
    snprintf(want, sizeof want, "%s.tmp: cannot create: No such file or directory", p);
    cr_assert_str_eq(err, want);
    /* NULL err is allowed */
    cr_assert_eq(kiln_npy_save(p, KILN_F32, 0, NULL, &v, NULL, 0), KILN_ERR_IO);
}

/* ---- files from other writers ---- */

static void expect_f32(const char *path, int rank, const int64_t *shape, const float *v)
{
    char err[512];
    kiln_npy a;
    cr_assert_eq(kiln_npy_load(path, &a, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(a.dtype, KILN_F32);
    cr_assert_eq(a.rank, rank);
    for (int k = 0; k < rank; k++) cr_assert_eq(a.shape[k], shape[k]);
    for (int64_t i = 0; i < a.numel; i++) cr_assert_eq(((float *)a.data)[i], v[i]);
    kiln_npy_free(&a);
}

Test(npy, versions_2_and_3)
{
    float v[4] = {1, 2, 3, -4};
    int64_t s[] = {2, 2};
    const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }         \n";
    write_npy_raw(tpath("v2.npy"), 2, 0, h, v, sizeof v);
    expect_f32(tpath("v2.npy"), 2, s, v);
    write_npy_raw(tpath("v3.npy"), 3, 0, h, v, sizeof v);
    expect_f32(tpath("v3.npy"), 2, s, v);
}

Test(npy, other_spellings)
{
    float v[4] = {1, 2, 3, -4};
    int64_t s[] = {4};
    /* key order, double quotes, Python 2 long, no trailing comma, no padding */
    write_npy_raw(tpath("a.npy"), 1, 0, "{\"shape\": (4L,), \"fortran_order\": False, "
                                        "\"descr\": \"<f4\"}\n", v, sizeof v);
    expect_f32(tpath("a.npy"), 1, s, v);
    /* fortran_order True is harmless for one axis */
    write_npy_raw(tpath("b.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (4,)}",
                  v, sizeof v);
    expect_f32(tpath("b.npy"), 1, s, v);
    /* big-endian data is swapped */
    unsigned char be[16];
    for (int i = 0; i < 4; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        for (int k = 0; k < 4; k++) be[4 * i + k] = (unsigned char)(u >> (24 - 8 * k));
    }
    write_npy_raw(tpath("c.npy"), 1, 0, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }",
                  be, sizeof be);
    expect_f32(tpath("c.npy"), 1, s, v);
    /* '<u1' is '|u1'; bool bytes other than 0/1 read as 1 */
    unsigned char u[3] = {0, 2, 255};
    char err[256];
    kiln_npy a;
    write_npy_raw(tpath("d.npy"), 1, 0, "{'descr': '<u1', 'fortran_order': False, 'shape': (3,), }",
                  u, 3);
    cr_assert_eq(kiln_npy_load(tpath("d.npy"), &a, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(a.dtype, KILN_U8);
    cr_assert_eq(((unsigned char *)a.data)[2], 255);
    kiln_npy_free(&a);
    write_npy_raw(tpath("e.npy"), 1, 0, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }",
                  u, 3);
    cr_assert_eq(kiln_npy_load(tpath("e.npy"), &a, err, sizeof err), KILN_OK, "%s", err);
    cr_assert_eq(a.dtype, KILN_BOOL);
    cr_assert_eq(memcmp(a.data, "\0\1\1", 3), 0);
    kiln_npy_free(&a);
}

/* ---- malformed files: status and exact message ---- */

static void expect_fail(const char *path, kiln_status st, const char *msg)
{
    char err[1024];
    kiln_npy a;
    memset(&a, 0x5a, sizeof a);
    kiln_status got = kiln_npy_load(path, &a, err, sizeof err);
    cr_assert_eq(got, st, "status %d (%s), expected %d: %s", got, kiln_status_str(got), st, err);
    cr_assert_str_eq(err, msg);
    cr_assert_null(a.data);
    cr_assert_eq(a.rank, 0);
}

/* Formats the expected message with the file's path in front. */
#define EXPECT_FAIL(name, st, fmt, ...)                                                      \
    do {                                                                                     \
        char want_[1024];                                                                    \
        snprintf(want_, sizeof want_, "%s: " fmt, tpath(name), ##__VA_ARGS__);               \
        char path_[512];                                                                     \
        snprintf(path_, sizeof path_, "%s", tpath(name));                                    \
        expect_fail(path_, st, want_);                                                       \
    } while (0)

static const char *H24 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }";

Test(npy, corrupt_missing_file)
{
    EXPECT_FAIL("nope.npy", KILN_ERR_IO, "cannot open: No such file or directory");
}

Test(npy, corrupt_directory)
{
    cr_assert_eq(mkdir(tpath("dir.npy"), 0700), 0);
    EXPECT_FAIL("dir.npy", KILN_ERR_IO, "not a regular file");
}

Test(npy, corrupt_empty)
{
    write_bytes(tpath("e.npy"), "", 0);
    EXPECT_FAIL("e.npy", KILN_ERR_CORRUPT, "empty file, not a .npy file");
}

Test(npy, corrupt_bad_magic)
{
    write_bytes(tpath("m.npy"), "PK\3\4 this is a zip", 19);
    EXPECT_FAIL("m.npy", KILN_ERR_CORRUPT, "not a .npy file (bad magic)");
    write_bytes(tpath("m2.npy"), "\x93NUMPZ\x01\x00", 8);
    EXPECT_FAIL("m2.npy", KILN_ERR_CORRUPT, "not a .npy file (bad magic)");
}

Test(npy, corrupt_truncated_preamble)
{
    write_bytes(tpath("t.npy"), "\x93NUM", 4);
    EXPECT_FAIL("t.npy", KILN_ERR_CORRUPT, "truncated: 4 bytes, shorter than the .npy preamble");
    write_bytes(tpath("t2.npy"), "\x93NUMPY\x02\x00\x10", 9);
    EXPECT_FAIL("t2.npy", KILN_ERR_CORRUPT, "truncated: the file ends inside the header length");
}

Test(npy, unsupported_version)
{
    write_npy_raw(tpath("v.npy"), 4, 0, H24, NULL, 0);
    EXPECT_FAIL("v.npy", KILN_ERR_UNSUPPORTED,
                ".npy format version 4.0 is not supported (1.0, 2.0 and 3.0 are)");
    write_npy_raw(tpath("v1.npy"), 1, 1, H24, NULL, 0);
    EXPECT_FAIL("v1.npy", KILN_ERR_UNSUPPORTED,
                ".npy format version 1.1 is not supported (1.0, 2.0 and 3.0 are)");
}

Test(npy, corrupt_header_too_long)
{
    unsigned char b[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0x70, 0x11, 0x01, 0x00};
    write_bytes(tpath("h.npy"), b, sizeof b); /* 0x11170 = 70000 */
    EXPECT_FAIL("h.npy", KILN_ERR_CORRUPT, "header too long (70000 bytes, at most 65536)");
    b[8] = 0xff;
    b[9] = 0xff;
    b[10] = 0xff;
    b[11] = 0xff;
    write_bytes(tpath("h2.npy"), b, sizeof b);
    EXPECT_FAIL("h2.npy", KILN_ERR_CORRUPT, "header too long (4294967295 bytes, at most 65536)");
}

Test(npy, corrupt_header_truncated)
{
    unsigned char b[30] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 118, 0, '{', '\'', 'd'};
    write_bytes(tpath("h.npy"), b, sizeof b);
    EXPECT_FAIL("h.npy", KILN_ERR_CORRUPT, "truncated: the header is 118 bytes but only 20 follow");
}

Test(npy, corrupt_unparsable_header)
{
    write_npy_raw(tpath("a.npy"), 1, 0, "{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}",
                  NULL, 0);
    EXPECT_FAIL("a.npy", KILN_ERR_CORRUPT,
                "unparsable header: expected ':' after a key at byte 9 of the header");
    write_npy_raw(tpath("b.npy"), 1, 0, "not a dict", NULL, 0);
    EXPECT_FAIL("b.npy", KILN_ERR_CORRUPT, "unparsable header: expected '{' at byte 0 of the header");
    write_npy_raw(tpath("c.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,3", NULL, 0);
    EXPECT_FAIL("c.npy", KILN_ERR_CORRUPT,
                "unparsable header: expected ',' or ')' in the shape at byte 54 of the header "
                "(its end)");
    write_npy_raw(tpath("d.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': False}", NULL, 0);
    EXPECT_FAIL("d.npy", KILN_ERR_CORRUPT, "unparsable header: missing key 'shape'");
    write_npy_raw(tpath("e.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': Nope, 'shape': ()}",
                  NULL, 0);
    EXPECT_FAIL("e.npy", KILN_ERR_CORRUPT,
                "unparsable header: expected True or False for 'fortran_order' at byte 34 of "
                "the header");
    write_npy_raw(tpath("f.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': (), "
                                        "'extra': 1}", NULL, 0);
    EXPECT_FAIL("f.npy", KILN_ERR_CORRUPT, "unparsable header: unexpected key 'extra'");
    write_npy_raw(tpath("g.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': False, 'shape': ()} x",
                  NULL, 0);
    EXPECT_FAIL("g.npy", KILN_ERR_CORRUPT,
                "unparsable header: unexpected text after '}' at byte 54 of the header");
    write_npy_raw(tpath("h.npy"), 1, 0, "{'descr': '<f4", NULL, 0);
    EXPECT_FAIL("h.npy", KILN_ERR_CORRUPT,
                "unparsable header: unterminated string at byte 14 of the header (its end)");
}

Test(npy, corrupt_unknown_dtype)
{
    write_npy_raw(tpath("d.npy"), 1, 0, "{'descr': 'xyz', 'fortran_order': False, 'shape': (2,), }",
                  "abcdefgh", 8);
    EXPECT_FAIL("d.npy", KILN_ERR_CORRUPT, "unknown dtype 'xyz'");
    write_npy_raw(tpath("e.npy"), 1, 0, "{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }",
                  "abcdefgh", 8);
    EXPECT_FAIL("e.npy", KILN_ERR_UNSUPPORTED,
                "dtype '|f4' is not supported (kiln reads <f4 <f8 <i4 <i8 |u1 |b1)");
}

Test(npy, unsupported_dtypes)
{
    write_npy_raw(tpath("c.npy"), 1, 0, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                  "abcdefgh", 8);
    EXPECT_FAIL("c.npy", KILN_ERR_UNSUPPORTED,
                "dtype '<c8' is not supported (kiln reads <f4 <f8 <i4 <i8 |u1 |b1)");
    write_npy_raw(tpath("s.npy"), 1, 0, "{'descr': [('a', '<f4')], 'fortran_order': False, "
                                        "'shape': (1,), }", "abcd", 4);
    EXPECT_FAIL("s.npy", KILN_ERR_UNSUPPORTED, "structured dtypes are not supported");
}

Test(npy, unsupported_fortran_order)
{
    float v[8] = {0};
    write_npy_raw(tpath("f.npy"), 1, 0, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 4), }",
                  v, sizeof v);
    EXPECT_FAIL("f.npy", KILN_ERR_UNSUPPORTED,
                "fortran_order arrays are not supported: save a C-ordered array "
                "(numpy.ascontiguousarray)");
}

Test(npy, corrupt_shape_overflow)
{
    write_npy_raw(tpath("o.npy"), 1, 0, "{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (4294967296, 4294967296), }", NULL, 0);
    EXPECT_FAIL("o.npy", KILN_ERR_CORRUPT,
                "shape overflow: the element count does not fit in 64 bits");
    write_npy_raw(tpath("p.npy"), 1, 0, "{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (99999999999999999999,), }", NULL, 0);
    EXPECT_FAIL("p.npy", KILN_ERR_CORRUPT, "shape overflow: dimension 0 does not fit in 64 bits");
    write_npy_raw(tpath("q.npy"), 1, 0, "{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (2305843009213693952,), }", NULL, 0);
    EXPECT_FAIL("q.npy", KILN_ERR_CORRUPT,
                "shape overflow: 2305843009213693952 elements of 8 bytes");
    write_npy_raw(tpath("r.npy"), 1, 0, "{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (2, -3), }", NULL, 0);
    EXPECT_FAIL("r.npy", KILN_ERR_CORRUPT, "negative dimension in shape at byte 54 of the header");
    write_npy_raw(tpath("s.npy"), 1, 0, "{'descr': '<f8', 'fortran_order': False, "
                                        "'shape': (1,1,1,1,1,1,1,1,1), }", NULL, 0);
    EXPECT_FAIL("s.npy", KILN_ERR_UNSUPPORTED,
                "the array has more than 8 dimensions, kiln's maximum rank");
}

Test(npy, corrupt_data_short_and_long)
{
    float v[9] = {0};
    write_npy_raw(tpath("s.npy"), 1, 0, H24, v, 31);
    EXPECT_FAIL("s.npy", KILN_ERR_CORRUPT,
                "data is 31 bytes but the shape needs 32 (8 elements of 4 bytes)");
    write_npy_raw(tpath("n.npy"), 1, 0, H24, NULL, 0);
    EXPECT_FAIL("n.npy", KILN_ERR_CORRUPT,
                "data is 0 bytes but the shape needs 32 (8 elements of 4 bytes)");
    write_npy_raw(tpath("l.npy"), 1, 0, H24, v, 36);
    EXPECT_FAIL("l.npy", KILN_ERR_CORRUPT,
                "data is 36 bytes but the shape needs 32 (8 elements of 4 bytes)");
}

/* Every prefix of a valid file, and every single-byte corruption of its
 * preamble and header, loads or fails cleanly (ASan/UBSan watch). */
Test(npy, every_truncation_and_byte_flip)
{
    char err[256];
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t s[] = {2, 4};
    cr_assert_eq(kiln_npy_save(tpath("ok.npy"), KILN_F32, 2, s, v, err, sizeof err), KILN_OK);
    size_t n;
    unsigned char *b = read_all(tpath("ok.npy"), &n);
    cr_assert_eq(n, 128 + sizeof v);
    kiln_npy a;
    for (size_t len = 0; len < n; len++) {
        write_bytes(tpath("cut.npy"), b, len);
        kiln_status st = kiln_npy_load(tpath("cut.npy"), &a, err, sizeof err);
        cr_assert_eq(st, KILN_ERR_CORRUPT, "prefix of %zu bytes: %d %s", len, st, err);
        cr_assert_null(a.data);
    }
    static const unsigned char repl[] = {0, 1, '\'', ',', ':', '(', ')', '{', '}', '9', ' ',
                                         '-', 'L', 0xff, '\\', '\n'};
    for (size_t pos = 0; pos < 128; pos++)
        for (size_t r = 0; r < sizeof repl; r++) {
            unsigned char save = b[pos];
            b[pos] = repl[r];
            write_bytes(tpath("flip.npy"), b, n);
            kiln_status st = kiln_npy_load(tpath("flip.npy"), &a, err, sizeof err);
            cr_assert(st == KILN_OK || st == KILN_ERR_CORRUPT || st == KILN_ERR_UNSUPPORTED,
                      "byte %zu = %d: %d %s", pos, repl[r], st, err);
            if (st == KILN_OK) cr_assert_not_null(a.data);
            else cr_assert(strlen(err) > 0);
            kiln_npy_free(&a);
            b[pos] = save;
        }
    free(b);
}
