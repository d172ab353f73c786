/* tests/test_safetensors.c — the safetensors reader and writer
 * (runtime/safetensors.c) and checkpoints of compiled programs
 * (runtime/checkpoint.c): round trips of every dtype and rank, the header
 * bytes against the format, malformed files (each with its status and its
 * exact message), random mutations of valid files, a writer killed midway,
 * and kiln_save / kiln_load on programs compiled with the REF backend. Every
 * file lives in a fresh temporary directory. */
#include <criterion/criterion.h>

#include "kiln/kiln.h"
#include "kiln/checkpoint.h"
#include "runtime/safetensors.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static void setup(void)
{
    kiln_test_tmpdir(tmpdir, sizeof tmpdir, "st");
}

static void teardown(void)
{
    kiln_test_rmtree(tmpdir);
}

TestSuite(safetensors, .init = setup, .fini = teardown);
TestSuite(checkpoint, .init = setup, .fini = teardown);

/* tmpdir/name in a fresh malloc'd string (tests leak these few bytes). */
static char *tpath(const char *name)
{
    size_t n = strlen(tmpdir) + strlen(name) + 2;
    char *p = malloc(n);
    cr_assert_not_null(p);
    snprintf(p, n, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    if (n) cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    cr_assert_geq(len, 0);
    rewind(f);
    unsigned char *b = malloc((size_t)len + 1);
    cr_assert_not_null(b);
    *n = fread(b, 1, (size_t)len, f);
    cr_assert_eq(*n, (size_t)len);
    fclose(f);
    return b;
}

/* A safetensors file with this exact header text (its length as the 8-byte
 * prefix) followed by datalen bytes of data (0, 1, 2, ... when data is NULL). */
static void write_raw(const char *path, const char *header, const void *data, size_t datalen)
{
    size_t hl = strlen(header), n = 8 + hl + datalen;
    unsigned char *b = malloc(n);
    cr_assert_not_null(b);
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)((uint64_t)hl >> (8 * k));
    memcpy(b + 8, header, hl);
    for (size_t k = 0; k < datalen; k++)
        b[8 + hl + k] = data ? ((const unsigned char *)data)[k] : (unsigned char)k;
    write_bytes(path, b, n);
    free(b);
}

/* Opening path fails with status st and exactly the message "<path>: msg". */
static void expect_open_fails(const char *path, kiln_status st, const char *msg)
{
    kiln_safetensors *s = (kiln_safetensors *)1;
    char *err = NULL;
    kiln_status got = kiln_safetensors_open(path, &s, &err);
    cr_assert_eq(got, st, "status %d, wanted %d: %s", got, st, err ? err : "(no message)");
    cr_assert_null(s);
    cr_assert_not_null(err);
    char want[2048];
    snprintf(want, sizeof want, "%s: %s", path, msg);
    cr_assert_str_eq(err, want);
    free(err);
}

/* A file whose header is `header` and whose data is datalen bytes fails. */
static void expect_header_fails(const char *header, size_t datalen, kiln_status st,
                                const char *msg)
{
    char *p = tpath("bad.safetensors");
    write_raw(p, header, NULL, datalen);
    expect_open_fails(p, st, msg);
    free(p);
}

static kiln_safetensors *open_ok(const char *path)
{
    kiln_safetensors *s = NULL;
    char *err = NULL;
    kiln_status st = kiln_safetensors_open(path, &s, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "?");
    cr_assert_null(err);
    cr_assert_not_null(s);
    return s;
}

static void write_ok(const char *path, const kiln_st_tensor *t, int n, const char *const *meta,
                     int nmeta)
{
    char *err = NULL;
    kiln_status st = kiln_safetensors_write(path, t, n, meta, nmeta, NULL, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "?");
    cr_assert_null(err);
}

static int tmp_files_left(void)
{
    DIR *d = opendir(tmpdir);
    cr_assert_not_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

/* ---- round trips -------------------------------------------------------- */

Test(safetensors, roundtrip_every_dtype_and_rank)
{
    static const kiln_dtype dts[] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8, KILN_BOOL};
    static const char *const dnames[] = {"F32", "F64", "I32", "I64", "U8", "BOOL"};
    static const int64_t shapes[5][4] = {{0}, {5}, {2, 3}, {2, 1, 3}, {1, 2, 2, 3}};
    enum { ND = 6, NR = 5, N = ND * NR + 2 };
    kiln_st_tensor t[N];
    char names[N][32];
    unsigned char *bufs[N];
    size_t sizes[N];
    int k = 0;
    for (int d = 0; d < ND; d++)
        for (int r = 0; r < NR; r++, k++) {
            int64_t numel = 1;
            for (int a = 0; a < r; a++) numel *= shapes[r][a];
            size_t es = kiln_dtype_size(dts[d]);
            sizes[k] = (size_t)numel * es;
            bufs[k] = malloc(sizes[k]);
            for (size_t b = 0; b < sizes[k]; b++)
                bufs[k][b] = dts[d] == KILN_BOOL ? (unsigned char)((b * 7 + r) % 2)
                                                 : (unsigned char)(b * 31 + (size_t)d * 7 + 1);
            snprintf(names[k], sizeof names[k], "t.%s.r%d", dnames[d], r);
            t[k] = (kiln_st_tensor){names[k], dts[d], r, shapes[r], bufs[k]};
        }
    /* zero-size tensors: one with NULL data, one with a zero in the middle */
    static const int64_t z1[] = {0}, z2[] = {3, 0, 2};
    snprintf(names[k], sizeof names[k], "empty");
    t[k] = (kiln_st_tensor){names[k], KILN_F32, 1, z1, NULL};
    sizes[k] = 0;
    bufs[k++] = NULL;
    snprintf(names[k], sizeof names[k], "empty3");
    t[k] = (kiln_st_tensor){names[k], KILN_I64, 3, z2, NULL};
    sizes[k] = 0;
    bufs[k++] = NULL;
    const char *meta[] = {"format", "pt", "kiln.epoch", "3", "quote\"back\\slash\nnl", "\xc3\xbc\x01"};
    char *p = tpath("rt.safetensors");
    write_ok(p, t, N, meta, 3);
    cr_assert_eq(tmp_files_left(), 0, "the temporary file was left behind");

    kiln_safetensors *s = open_ok(p);
    cr_assert_eq(kiln_safetensors_count(s), N);
    cr_assert_str_eq(kiln_safetensors_path(s), p);
    for (int i = 0; i < N; i++) {
        int j = kiln_safetensors_find(s, names[i]);
        cr_assert_geq(j, 0, "%s not found", names[i]);
        const kiln_st_info *info = kiln_safetensors_info(s, j);
        cr_assert_str_eq(info->name, names[i]);
        cr_assert_eq(info->dtype, t[i].dtype);
        cr_assert_str_eq(info->dtype_str, kiln_st_dtype_name(t[i].dtype));
        cr_assert_eq(info->supported, 1);
        cr_assert_eq(info->rank, t[i].rank);
        for (int a = 0; a < info->rank; a++) cr_assert_eq(info->shape[a], t[i].shape[a]);
        cr_assert_eq(info->bytes, sizes[i]);
        cr_assert_eq(info->end - info->begin, sizes[i]);
        /* the writer aligns every tensor to its element size */
        cr_assert_eq((8 + kiln_safetensors_header_len(s) + info->begin) % kiln_dtype_size(t[i].dtype), 0);
        unsigned char *back = malloc(sizes[i] + 1);
        char *err = NULL;
        cr_assert_eq(kiln_safetensors_read(s, j, back, sizes[i], &err), KILN_OK, "%s", err);
        if (sizes[i]) cr_assert_eq(memcmp(back, bufs[i], sizes[i]), 0, "%s differs", names[i]);
        /* a buffer of the wrong size is refused */
        cr_assert_eq(kiln_safetensors_read(s, j, back, sizes[i] + 1, &err), KILN_ERR_INVALID);
        free(err);
        free(back);
        free(bufs[i]);
    }
    cr_assert_eq(kiln_safetensors_find(s, "nope"), -1);
    cr_assert_null(kiln_safetensors_info(s, N));
    cr_assert_eq(kiln_safetensors_meta_count(s), 3);
    for (int m = 0; m < 3; m++) {
        cr_assert_str_eq(kiln_safetensors_meta_key(s, m), meta[2 * m]);
        cr_assert_str_eq(kiln_safetensors_meta_value(s, m), meta[2 * m + 1]);
    }
    cr_assert_str_eq(kiln_safetensors_meta_get(s, "kiln.epoch"), "3");
    cr_assert_null(kiln_safetensors_meta_get(s, "kiln.step"));
    kiln_safetensors_close(s);
    free(p);
}

Test(safetensors, roundtrip_values_and_no_tensors)
{
    float f[] = {1.5f, -0.0f, 3.4e38f, 1e-40f};
    double d[] = {1.0 / 3.0, -2.5e300};
    int64_t i64[] = {INT64_MIN, INT64_MAX, -1};
    int64_t s4[] = {4}, s2[] = {2}, s3[] = {3};
    kiln_st_tensor t[] = {{"f", KILN_F32, 1, s4, f}, {"d", KILN_F64, 1, s2, d},
                          {"i", KILN_I64, 1, s3, i64}};
    char *p = tpath("v.safetensors");
    write_ok(p, t, 3, NULL, 0);
    kiln_safetensors *s = open_ok(p);
    float fb[4];
    double db[2];
    int64_t ib[3];
    cr_assert_eq(kiln_safetensors_read(s, kiln_safetensors_find(s, "f"), fb, sizeof fb, NULL), 0);
    cr_assert_eq(kiln_safetensors_read(s, kiln_safetensors_find(s, "d"), db, sizeof db, NULL), 0);
    cr_assert_eq(kiln_safetensors_read(s, kiln_safetensors_find(s, "i"), ib, sizeof ib, NULL), 0);
    cr_assert_eq(memcmp(fb, f, sizeof f), 0);
    cr_assert_eq(memcmp(db, d, sizeof d), 0);
    cr_assert_eq(memcmp(ib, i64, sizeof ib), 0);
    cr_assert_eq(kiln_safetensors_meta_count(s), 0);
    kiln_safetensors_close(s);

    /* no tensors at all: "{}" padded to 8 bytes */
    write_ok(p, NULL, 0, NULL, 0);
    size_t n;
    unsigned char *b = read_all(p, &n);
    cr_assert_eq(n, 16);
    cr_assert_eq(b[0], 8);
    cr_assert_eq(memcmp(b + 8, "{}      ", 8), 0);
    free(b);
    s = open_ok(p);
    cr_assert_eq(kiln_safetensors_count(s), 0);
    kiln_safetensors_close(s);
    free(p);
}

Test(safetensors, bool_bytes_read_as_0_or_1)
{
    char *p = tpath("b.safetensors");
    unsigned char data[] = {0, 1, 2, 255};
    write_raw(p, "{\"b\":{\"dtype\":\"BOOL\",\"shape\":[4],\"data_offsets\":[0,4]}}", data, 4);
    kiln_safetensors *s = open_ok(p);
    unsigned char back[4];
    cr_assert_eq(kiln_safetensors_read(s, 0, back, 4, NULL), KILN_OK);
    cr_assert_eq(memcmp(back, "\0\1\1\1", 4), 0);
    kiln_safetensors_close(s);
    free(p);
}

/* ---- the header bytes against the format ------------------------------- */

Test(safetensors, header_bytes_follow_the_format)
{
    double b[] = {1, 2};
    float a[] = {1, 2, 3};
    unsigned char c = 7;
    int32_t z[] = {5, 6};
    int64_t s2[] = {2}, s3[] = {3}, s12[] = {1, 2};
    /* given out of order: the writer sorts by element size, then name */
    kiln_st_tensor t[] = {{"c", KILN_U8, 0, NULL, &c},
                          {"a", KILN_F32, 1, s3, a},
                          {"b", KILN_F64, 1, s2, b},
                          {"z\"q", KILN_I32, 2, s12, z}};
    const char *meta[] = {"format", "pt"};
    char *p = tpath("h.safetensors");
    write_ok(p, t, 4, meta, 1);
    size_t n;
    unsigned char *f = read_all(p, &n);
    uint64_t hl = 0;
    for (int k = 7; k >= 0; k--) hl = hl << 8 | f[k];
    cr_assert_eq(hl % 8, 0, "the data must start on an 8-byte boundary");
    const char *want = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[16,28]},"
                       "\"z\\\"q\":{\"dtype\":\"I32\",\"shape\":[1,2],\"data_offsets\":[28,36]},"
                       "\"c\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[36,37]}}";
    size_t wl = strlen(want);
    cr_assert_eq(hl, (wl + 7) / 8 * 8);
    cr_assert_eq(memcmp(f + 8, want, wl), 0, "header: %.*s", (int)hl, (const char *)f + 8);
    for (size_t k = wl; k < hl; k++) cr_assert_eq(f[8 + k], ' ', "padding must be spaces");
    cr_assert_eq(n, 8 + hl + 37);
    const unsigned char *data = f + 8 + hl;
    cr_assert_eq(memcmp(data, b, 16), 0);
    cr_assert_eq(memcmp(data + 16, a, 12), 0);
    cr_assert_eq(memcmp(data + 28, z, 8), 0);
    cr_assert_eq(data[36], 7);
    /* little-endian on disk */
    cr_assert_eq(data[16 + 2], 0x80); /* 1.0f = 0x3f800000 */
    cr_assert_eq(data[16 + 3], 0x3f);
    free(f);
    free(p);
}

Test(safetensors, reads_escapes_spaces_and_unknown_keys)
{
    char *p = tpath("e.safetensors");
    write_raw(p,
              " \n{ \"__metadata__\" : { \"k\\u00e9\" : \"\\ud83d\\ude00\\t\\/\" } ,\r\n"
              "\"a\\\"b\" : { \"shape\" : [ 2 ] , \"extra\": {\"x\": [1, -2.5e3, true, null, "
              "\"s\"]}, \"data_offsets\" : [ 0 , 8 ], \"dtype\" : \"F32\" } }   \t\n",
              NULL, 8);
    kiln_safetensors *s = open_ok(p);
    cr_assert_eq(kiln_safetensors_count(s), 1);
    cr_assert_str_eq(kiln_safetensors_info(s, 0)->name, "a\"b");
    cr_assert_str_eq(kiln_safetensors_meta_key(s, 0), "k\xc3\xa9");
    cr_assert_str_eq(kiln_safetensors_meta_value(s, 0), "\xf0\x9f\x98\x80\t/");
    kiln_safetensors_close(s);
    free(p);
}

Test(safetensors, reads_other_dtypes_as_unsupported)
{
    char *p = tpath("o.safetensors");
    write_raw(p,
              "{\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"g\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,6]},"
              "\"q\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[6,8]}}",
              NULL, 8);
    kiln_safetensors *s = open_ok(p);
    const kiln_st_info *h = kiln_safetensors_info(s, 0), *g = kiln_safetensors_info(s, 1),
                       *q = kiln_safetensors_info(s, 2);
    cr_assert_eq(h->dtype, KILN_F16);
    cr_assert_eq(h->supported, 0);
    cr_assert_eq(g->dtype, KILN_BF16);
    cr_assert_eq(g->supported, 0);
    cr_assert_eq(q->dtype, KILN_DTYPE_COUNT);
    cr_assert_str_eq(q->dtype_str, "I8");
    unsigned char raw[4];
    cr_assert_eq(kiln_safetensors_read(s, 0, raw, 4, NULL), KILN_OK);
    cr_assert_eq(memcmp(raw, "\0\1\2\3", 4), 0);
    kiln_safetensors_close(s);
    free(p);
}

/* ---- malformed files ---------------------------------------------------- */

Test(safetensors, missing_file_and_directory)
{
    char *p = tpath("nope.safetensors");
    expect_open_fails(p, KILN_ERR_IO, "cannot open: No such file or directory");
    expect_open_fails(tmpdir, KILN_ERR_IO, "not a regular file");
    free(p);
}

Test(safetensors, too_short)
{
    char *p = tpath("short.safetensors");
    write_bytes(p, "\x10\0\0", 3);
    expect_open_fails(p, KILN_ERR_CORRUPT,
                      "the file is 3 bytes, too short for a safetensors header");
    write_bytes(p, "", 0);
    expect_open_fails(p, KILN_ERR_CORRUPT,
                      "the file is 0 bytes, too short for a safetensors header");
    free(p);
}

Test(safetensors, header_length_larger_than_the_file)
{
    char *p = tpath("big.safetensors");
    unsigned char b[40] = {0};
    b[0] = 33; /* 8 + 33 > 40 */
    memcpy(b + 8, "{}", 2);
    write_bytes(p, b, sizeof b);
    expect_open_fails(p, KILN_ERR_CORRUPT, "header length 33 is larger than the file (40 bytes)");
    memset(b, 0xff, 8); /* 2^64 - 1 */
    write_bytes(p, b, sizeof b);
    expect_open_fails(p, KILN_ERR_CORRUPT,
                      "header length 18446744073709551615 is larger than the file (40 bytes)");
    free(p);
}

Test(safetensors, header_length_over_the_limit)
{
    /* a sparse file larger than the limit, so only the limit check fails */
    char *p = tpath("huge.safetensors");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    unsigned char b[8];
    uint64_t n = 100000001;
    for (int k = 0; k < 8; k++) b[k] = (unsigned char)(n >> (8 * k));
    cr_assert_eq(write(fd, b, 8), 8);
    cr_assert_eq(ftruncate(fd, 100000100), 0);
    close(fd);
    expect_open_fails(p, KILN_ERR_CORRUPT,
                      "header length 100000001 is larger than the limit (100000000 bytes)");
    free(p);
}

Test(safetensors, truncated_file)
{
    float v[64] = {0};
    int64_t s[] = {8, 8};
    kiln_st_tensor t[] = {{"w", KILN_F32, 2, s, v}};
    char *p = tpath("trunc.safetensors");
    write_ok(p, t, 1, NULL, 0);
    kiln_safetensors *st = open_ok(p);
    uint64_t hl = kiln_safetensors_header_len(st);
    kiln_safetensors_close(st);
    cr_assert_eq(truncate(p, (off_t)(8 + hl + 100)), 0);
    expect_open_fails(p, KILN_ERR_CORRUPT,
                      "tensor 'w' has data_offsets [0, 256] past the end of the data (100 "
                      "bytes): the file is truncated");
    /* cut inside the header */
    cr_assert_eq(truncate(p, 20), 0);
    char want[128];
    snprintf(want, sizeof want, "header length %llu is larger than the file (20 bytes)",
             (unsigned long long)hl);
    expect_open_fails(p, KILN_ERR_CORRUPT, want);
    free(p);
}

Test(safetensors, unknown_dtype)
{
    expect_header_fails("{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        KILN_ERR_CORRUPT, "tensor 'w' has unknown dtype 'F33'");
    expect_header_fails("{\"w\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        KILN_ERR_CORRUPT, "tensor 'w' has unknown dtype 'f32'");
}

Test(safetensors, offsets_that_do_not_match_the_shape)
{
    expect_header_fails("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,12]}}", 24,
                        KILN_ERR_CORRUPT,
                        "tensor 'w' has data_offsets [0, 12] (12 bytes) but shape [2, 3] of F32 "
                        "needs 24 bytes");
    expect_header_fails("{\"w\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,0]}}", 8,
                        KILN_ERR_CORRUPT,
                        "tensor 'w' has data_offsets [8, 0], which end before they begin");
    expect_header_fails("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
                        "\"data_offsets\":[0,0]}}",
                        0, KILN_ERR_CORRUPT,
                        "tensor 'w' has shape [4294967296, 4294967296], too large");
    expect_header_fails("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 2,
                        KILN_ERR_CORRUPT, "tensor 'w' has 3 data_offsets, not 2");
    expect_header_fails("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[]}}", 2,
                        KILN_ERR_CORRUPT, "tensor 'w' has 0 data_offsets, not 2");
    expect_header_fails("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                        "\"data_offsets\":[0,1]}}",
                        1, KILN_ERR_UNSUPPORTED, "tensor 'w' has rank 9; kiln supports at most 8");
}

Test(safetensors, overlapping_offsets)
{
    expect_header_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                        24, KILN_ERR_CORRUPT, "tensors 'a' [0, 16] and 'b' [8, 24] overlap");
    /* listed in the other order, and one tensor inside another */
    expect_header_fails("{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                        "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,5]},"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[10],\"data_offsets\":[0,10]}}",
                        10, KILN_ERR_CORRUPT, "tensors 'a' [0, 10] and 'b' [4, 6] overlap");
    /* touching is fine, and so are zero-size tensors anywhere and holes */
    char *p = tpath("ok.safetensors");
    write_raw(p,
              "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
              "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
              "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,1]},"
              "\"c\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[6,7]}}",
              NULL, 8);
    kiln_safetensors_close(open_ok(p));
    free(p);
}

Test(safetensors, duplicates_and_missing_fields)
{
    expect_header_fails("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                        2, KILN_ERR_CORRUPT, "tensor 'a' appears twice in the header");
    expect_header_fails("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, KILN_ERR_CORRUPT,
                        "metadata key 'k' appears twice");
    expect_header_fails("{\"__metadata__\":{},\"__metadata__\":{}}", 0, KILN_ERR_CORRUPT,
                        "malformed JSON header at byte 34: a second \"__metadata__\" entry, "
                        "found '{'");
    expect_header_fails("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\"}}", 0, KILN_ERR_CORRUPT,
                        "tensor 'a' has two \"dtype\" entries");
    expect_header_fails("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, KILN_ERR_CORRUPT,
                        "tensor 'a' has no \"data_offsets\"");
    expect_header_fails("{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, KILN_ERR_CORRUPT,
                        "tensor 'a' has no \"shape\"");
    expect_header_fails("{\"a\":{}}", 0, KILN_ERR_CORRUPT, "tensor 'a' has no \"dtype\"");
}

Test(safetensors, bad_json)
{
    static const struct {
        const char *header, *msg;
    } cases[] = {
        {"", "malformed JSON header at byte 0: expected '{' at the start of the header, found "
             "the end of the header"},
        {"[]", "malformed JSON header at byte 0: expected '{' at the start of the header, "
               "found '['"},
        {"{\"a\" {}}", "malformed JSON header at byte 5: expected ':' after a tensor name, "
                       "found '{'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}",
         "malformed JSON header at byte 53: expected a string (a tensor name), found '}'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}",
         "malformed JSON header at byte 52: expected ',' or '}' after an entry, found the end "
         "of the header"},
        {"{\"a", "malformed JSON header at byte 1: unterminated string (a tensor name), found "
                 "'\"'"},
        {"{\"a\\", "malformed JSON header at byte 1: unterminated string (a tensor name), "
                   "found '\"'"},
        {"{\"a\\q\":1}", "malformed JSON header at byte 3: bad escape in a string (a tensor "
                         "name), found '\\'"},
        {"{\"a\\u12G4\":1}", "malformed JSON header at byte 3: bad \\u escape in a string (a "
                             "tensor name), found '\\'"},
        {"{\"a\\udc00\":1}", "malformed JSON header at byte 3: unpaired surrogate in a string "
                             "(a tensor name), found '\\'"},
        {"{\"a\\ud800x\":1}", "malformed JSON header at byte 3: unpaired surrogate in a string "
                              "(a tensor name), found '\\'"},
        {"{\"a\\u0000\":1}", "malformed JSON header at byte 3: \\u0000 in a string (a tensor "
                             "name) is not supported, found '\\'"},
        {"{\"a\tb\":1}", "malformed JSON header at byte 3: control character in a string (a "
                         "tensor name), found byte 0x09"},
        {"{\"a\":5}", "malformed JSON header at byte 5: expected '{' (the entry of a tensor), "
                      "found '5'"},
        {"{\"a\":{\"dtype\":4}}", "malformed JSON header at byte 14: expected a string (the "
                                  "dtype), found '4'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5]}}",
         "malformed JSON header at byte 29: expected an integer (a dimension), found '.'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[-1]}}",
         "malformed JSON header at byte 28: expected a non-negative integer (a dimension), "
         "found '-'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[01]}}",
         "malformed JSON header at byte 29: leading zero in an integer (a dimension), found "
         "'1'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1 2]}}",
         "malformed JSON header at byte 30: expected ',' or ']' in a shape, found '2'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}",
         "malformed JSON header at byte 49: integer too large (an offset), found '1'"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[9223372036854775808]}}",
         "malformed JSON header at byte 28: integer too large (a dimension), found '9'"},
        {"{\"a\":{\"dtype\":\"U8\" \"shape\":[1]}}",
         "malformed JSON header at byte 19: expected ',' or '}' in the entry of tensor 'a', "
         "found '\"'"},
        {"{\"a\":{\"x\":tru}}", "malformed JSON header at byte 10: expected a value, found 't'"},
        {"{\"a\":{\"x\":-}}", "malformed JSON header at byte 11: expected a digit, found '}'"},
        {"{\"a\":{\"x\":[1,]}}", "malformed JSON header at byte 13: expected a value, found "
                                 "']'"},
        {"{\"a\":{\"x\":{\"k\" 1}}}", "malformed JSON header at byte 15: expected ':' after an "
                                      "object key, found '1'"},
        {"{\"__metadata__\":{\"k\":1}}", "malformed JSON header at byte 21: metadata values "
                                         "must be strings: expected a string for key 'k', "
                                         "found '1'"},
        {"{\"__metadata__\":[]}", "malformed JSON header at byte 16: expected '{' (the value "
                                  "of \"__metadata__\"), found '['"},
        {"{} x", "malformed JSON header at byte 3: expected nothing but spaces after the header "
                 "object, found 'x'"},
        {"{}\x01", "malformed JSON header at byte 2: expected nothing but spaces after the "
                   "header object, found byte 0x01"},
    };
    /* 64 bytes of data: enough for every entry that parses */
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        expect_header_fails(cases[k].header, 64, KILN_ERR_CORRUPT, cases[k].msg);
}

Test(safetensors, deep_nesting_is_refused)
{
    char h[1024];
    size_t o = (size_t)snprintf(h, sizeof h, "{\"a\":{\"x\":");
    for (int k = 0; k < 200; k++) h[o++] = '[';
    h[o] = '\0';
    expect_header_fails(h, 0, KILN_ERR_CORRUPT,
                        "malformed JSON header at byte 73: nesting deeper than 64, found '['");
}

/* ---- the writer's own checks -------------------------------------------- */

static void expect_write_fails(const kiln_st_tensor *t, int n, const char *const *meta,
                               int nmeta, kiln_status st, const char *msg)
{
    char *p = tpath("w.safetensors");
    char *err = NULL;
    cr_assert_eq(kiln_safetensors_write(p, t, n, meta, nmeta, NULL, &err), st, "%s",
                 err ? err : "?");
    char want[512];
    snprintf(want, sizeof want, "%s: %s", p, msg);
    cr_assert_str_eq(err, want);
    free(err);
    cr_assert_eq(access(p, F_OK), -1);
    cr_assert_eq(tmp_files_left(), 0);
    free(p);
}

Test(safetensors, writer_refuses_bad_input)
{
    float v[2] = {0};
    int64_t s2[] = {2}, neg[] = {-1};
    kiln_st_tensor dup[] = {{"a", KILN_F32, 1, s2, v}, {"a", KILN_F32, 1, s2, v}};
    expect_write_fails(dup, 2, NULL, 0, KILN_ERR_INVALID, "two tensors are called 'a'");
    kiln_st_tensor f16[] = {{"h", KILN_F16, 1, s2, v}};
    expect_write_fails(f16, 1, NULL, 0, KILN_ERR_UNSUPPORTED, "tensor 'h': cannot save dtype f16");
    kiln_st_tensor ng[] = {{"n", KILN_F32, 1, neg, v}};
    expect_write_fails(ng, 1, NULL, 0, KILN_ERR_INVALID, "tensor 'n' has shape [-1]");
    kiln_st_tensor nd[] = {{"n", KILN_F32, 1, s2, NULL}};
    expect_write_fails(nd, 1, NULL, 0, KILN_ERR_INVALID, "tensor 'n' has no data");
    kiln_st_tensor mm[] = {{"__metadata__", KILN_F32, 1, s2, v}};
    expect_write_fails(mm, 1, NULL, 0, KILN_ERR_INVALID,
                       "tensor 0 has an invalid name '__metadata__'");
    kiln_st_tensor rk[] = {{"r", KILN_F32, 9, s2, v}};
    expect_write_fails(rk, 1, NULL, 0, KILN_ERR_INVALID, "tensor 'r' has bad rank 9");
    const char *meta[] = {"k", "1", "k", "2"};
    expect_write_fails(NULL, 0, meta, 2, KILN_ERR_INVALID, "two metadata entries are called 'k'");

    char *err = NULL;
    char *p = tpath("no/such/dir/x.safetensors");
    cr_assert_eq(kiln_safetensors_write(p, NULL, 0, NULL, 0, NULL, &err), KILN_ERR_IO);
    char want[1024];
    snprintf(want, sizeof want, "%s: cannot create %s.tmp.%ld: No such file or directory", p, p,
             (long)getpid());
    cr_assert_str_eq(err, want);
    free(err);
    free(p);
}

/* ---- a writer stopped or killed midway ---------------------------------- */

typedef struct stop_at {
    uint64_t at;
    uint64_t seen_total;
    char tmp[512];
    off_t tmp_size;
} stop_at;

static int stop_hook(const char *tmp, uint64_t done, uint64_t total, void *user)
{
    stop_at *s = user;
    s->seen_total = total;
    if (done < s->at) return 0;
    snprintf(s->tmp, sizeof s->tmp, "%s", tmp);
    struct stat sb;
    s->tmp_size = stat(tmp, &sb) == 0 ? sb.st_size : -1;
    return 1;
}

/* The previous checkpoint at path: one tensor "w" of n floats, value v. */
static void expect_checkpoint(const char *path, size_t n, float v)
{
    kiln_safetensors *s = open_ok(path);
    cr_assert_eq(kiln_safetensors_count(s), 1);
    const kiln_st_info *info = kiln_safetensors_info(s, 0);
    cr_assert_eq(info->numel, (int64_t)n);
    float *b = malloc(n * sizeof *b);
    cr_assert_eq(kiln_safetensors_read(s, 0, b, n * sizeof *b, NULL), KILN_OK);
    for (size_t k = 0; k < n; k++) cr_assert_eq(b[k], v);
    free(b);
    kiln_safetensors_close(s);
}

static float *filled(size_t n, float v)
{
    float *b = malloc(n * sizeof *b);
    cr_assert_not_null(b);
    for (size_t k = 0; k < n; k++) b[k] = v;
    return b;
}

Test(safetensors, stopped_writer_leaves_the_previous_file)
{
    char *p = tpath("ckpt.safetensors");
    size_t n1 = 1000, n2 = 1 << 20;
    float *a = filled(n1, 1.0f), *b = filled(n2, 2.0f);
    int64_t s1[] = {(int64_t)n1}, s2[] = {(int64_t)n2};
    kiln_st_tensor t1[] = {{"w", KILN_F32, 1, s1, a}}, t2[] = {{"w", KILN_F32, 1, s2, b}};
    write_ok(p, t1, 1, NULL, 0);
    stop_at s = {.at = 2 * n2};
    kiln_st_write_options opt = {.chunk = 65536, .progress = stop_hook, .user = &s};
    char *err = NULL;
    cr_assert_eq(kiln_safetensors_write(p, t2, 1, NULL, 0, &opt, &err), KILN_ERR_IO);
    char want[1200];
    snprintf(want, sizeof want, "%s: writing %s was stopped", p, s.tmp);
    cr_assert_str_eq(err, want);
    free(err);
    /* it stopped with part of the file written, then removed the part */
    cr_assert_gt(s.tmp_size, 0);
    cr_assert_lt((uint64_t)s.tmp_size, s.seen_total);
    cr_assert_eq(tmp_files_left(), 0);
    expect_checkpoint(p, n1, 1.0f);
    free(a);
    free(b);
    free(p);
}

static int block_hook(const char *tmp, uint64_t done, uint64_t total, void *user)
{
    (void)tmp;
    int fd = *(int *)user;
    if (done >= total / 2) {
        /* tell the parent how far it got, then wait to be killed */
        uint64_t msg[2] = {done, total};
        if (write(fd, msg, sizeof msg) != (ssize_t)sizeof msg) _exit(3);
        for (;;) pause();
    }
    return 0;
}

Test(safetensors, killed_writer_leaves_the_previous_file)
{
    char *p = tpath("ckpt.safetensors");
    size_t n1 = 1000, n2 = 4 << 20;
    float *a = filled(n1, 1.0f);
    int64_t s1[] = {(int64_t)n1};
    kiln_st_tensor t1[] = {{"w", KILN_F32, 1, s1, a}};
    write_ok(p, t1, 1, NULL, 0);
    size_t len1;
    unsigned char *before = read_all(p, &len1);

    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        alarm(60); /* never outlive a parent that failed before it killed us */
        close(fds[0]);
        float *b = malloc(n2 * sizeof *b);
        if (!b) _exit(2);
        for (size_t k = 0; k < n2; k++) b[k] = 2.0f;
        int64_t s2[] = {(int64_t)n2};
        kiln_st_tensor t2[] = {{"w", KILN_F32, 1, s2, b}};
        kiln_st_write_options opt = {.chunk = 1 << 16, .progress = block_hook, .user = &fds[1]};
        kiln_safetensors_write(p, t2, 1, NULL, 0, &opt, NULL);
        _exit(1); /* not reached: the hook blocks */
    }
    close(fds[1]);
    uint64_t msg[2] = {0, 0};
    ssize_t got = read(fds[0], msg, sizeof msg);
    close(fds[0]);
    cr_assert_eq(got, (ssize_t)sizeof msg, "the writer exited before it was half done");
    /* the child is now inside the writer with half the temporary file written */
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)pid);
    struct stat sb;
    cr_assert_eq(stat(tmp, &sb), 0, "no temporary file %s", tmp);
    cr_assert_eq((uint64_t)sb.st_size, msg[0]);
    cr_assert_lt((uint64_t)sb.st_size, msg[1]);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* the checkpoint is the previous one, byte for byte, and loads */
    size_t len2;
    unsigned char *after = read_all(p, &len2);
    cr_assert_eq(len1, len2);
    cr_assert_eq(memcmp(before, after, len1), 0);
    expect_checkpoint(p, n1, 1.0f);
    /* the half-written temporary file is what the kill left: not a valid file */
    char *err = NULL;
    kiln_safetensors *s = NULL;
    cr_assert_eq(kiln_safetensors_open(tmp, &s, &err), KILN_ERR_CORRUPT);
    cr_assert_not_null(strstr(err, "the file is truncated"), "%s", err);
    free(err);
    /* and the next save still succeeds */
    float *c = filled(n1, 3.0f);
    kiln_st_tensor t3[] = {{"w", KILN_F32, 1, s1, c}};
    write_ok(p, t3, 1, NULL, 0);
    expect_checkpoint(p, n1, 3.0f);
    free(before);
    free(after);
    free(a);
    free(c);
    free(p);
}

/* ---- random mutations --------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Opens path; when that succeeds, every tensor must read back. */
static void open_and_read_all(const char *path)
{
    kiln_safetensors *s = NULL;
    char *err = NULL;
    kiln_status st = kiln_safetensors_open(path, &s, &err);
    if (st) {
        cr_assert_null(s);
        cr_assert(st == KILN_ERR_CORRUPT || st == KILN_ERR_UNSUPPORTED, "status %d: %s", st,
                  err ? err : "");
        cr_assert_not_null(err);
        cr_assert_eq(strncmp(err, path, strlen(path)), 0, "%s", err);
        free(err);
        return;
    }
    for (int i = 0; i < kiln_safetensors_count(s); i++) {
        const kiln_st_info *info = kiln_safetensors_info(s, i);
        cr_assert_leq(info->end, kiln_safetensors_file_size(s));
        void *b = malloc(info->bytes ? info->bytes : 1);
        cr_assert_not_null(b);
        cr_assert_eq(kiln_safetensors_read(s, i, b, info->bytes, &err), KILN_OK, "%s", err);
        free(b);
    }
    kiln_safetensors_close(s);
}

Test(safetensors, random_mutations_never_crash)
{
    float f[6] = {1, 2, 3, 4, 5, 6};
    int64_t i64[2] = {7, 8};
    unsigned char u[3] = {1, 2, 3};
    int64_t s23[] = {2, 3}, s2[] = {2}, s3[] = {3}, s0[] = {0};
    kiln_st_tensor t[] = {{"layer.weight", KILN_F32, 2, s23, f},
                          {"layer.bias", KILN_I64, 1, s2, i64},
                          {"b\"q", KILN_BOOL, 1, s3, u},
                          {"empty", KILN_U8, 1, s0, NULL}};
    const char *meta[] = {"format", "pt", "kiln.epoch", "12"};
    char *p = tpath("base.safetensors"), *m = tpath("mut.safetensors");
    write_ok(p, t, 4, meta, 2);
    size_t n;
    unsigned char *base = read_all(p, &n);
    unsigned char *buf = malloc(n + 64);
    static const char tokens[] = "{}[]\":,\\0123456789 -.eEtfnu";
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = n;
        memcpy(buf, base, n);
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = 8 + rnd() % (len > 8 ? len - 8 : 1);
            switch (rnd() % 7) {
            case 0: buf[at % len] ^= (unsigned char)(1u << (rnd() % 8)); break;
            case 1: buf[at % len] = (unsigned char)tokens[rnd() % (sizeof tokens - 1)]; break;
            case 2: buf[at % len] = (unsigned char)rnd(); break;
            case 3: /* delete a byte */
                if (len > 9 && at < len) {
                    memmove(buf + at, buf + at + 1, len - at - 1);
                    len--;
                }
                break;
            case 4: /* insert a token */
                if (len < n + 60 && at <= len) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (unsigned char)tokens[rnd() % (sizeof tokens - 1)];
                    len++;
                }
                break;
            case 5: len = 1 + rnd() % len; break; /* truncate */
            case 6: buf[rnd() % 8] = (unsigned char)rnd(); break; /* header length */
            }
        }
        write_bytes(m, buf, len);
        open_and_read_all(m);
    }
    free(buf);
    free(base);
    free(p);
    free(m);
}

/* ---- checkpoints of compiled programs ----------------------------------- */

/* x [4, 3] -> linear0 (out) [-> relu -> linear1 (2)] -> cross-entropy. */
static kiln_program *compile_mlp(int64_t out, int second_layer, kiln_optimizer optim)
{
    kiln_graph *g = kiln_graph_new("mlp");
    cr_assert_not_null(g);
    int64_t xs[] = {4, 3}, ys[] = {4};
    kiln_value x = kiln_input(g, "x", KILN_F32, 2, xs);
    kiln_value y = kiln_target(g, "y", KILN_I32, 1, ys);
    kiln_value h = kiln_linear(g, x, out, 1, "linear0");
    if (second_layer) h = kiln_linear(g, kiln_relu(g, h), 2, 1, "linear1");
    kiln_value loss = kiln_cross_entropy(g, h, y);
    cr_assert_eq(kiln_set_loss(g, loss, "loss"), KILN_OK, "%s", kiln_graph_error(g));
    kiln_compile_options opt = kiln_compile_defaults();
    opt.backend = KILN_BACKEND_REF;
    opt.train.optimizer = optim;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(g, &opt, &p, &err);
    cr_assert_eq(st, KILN_OK, "kiln_compile: %s", err ? err : "?");
    free(err);
    kiln_graph_free(g);
    return p;
}

static void train_once(kiln_program *p)
{
    float x[12];
    for (int k = 0; k < 12; k++) x[k] = (float)(k % 5) * 0.25f - 0.5f;
    int32_t y[4] = {0, 1, 1, 0};
    cr_assert_eq(kiln_program_set(p, "x", x, sizeof x), KILN_OK);
    cr_assert_eq(kiln_program_set(p, "y", y, sizeof y), KILN_OK);
    kiln_program_set_hparam(p, "step", 1);
    cr_assert_eq(kiln_program_run(p, "train_step"), KILN_OK, "%s", kiln_program_error(p));
}

/* The bytes of a named tensor of p (malloc'd). */
static void *tensor_bytes(kiln_program *p, const char *name, size_t *bytes)
{
    kiln_tensor_info info;
    void *d = kiln_program_data(p, name, &info);
    cr_assert_not_null(d, "no tensor %s", name);
    void *c = malloc(info.bytes);
    memcpy(c, d, info.bytes);
    *bytes = info.bytes;
    return c;
}

static void expect_same_tensor(kiln_program *a, kiln_program *b, const char *name, int same)
{
    size_t na, nb;
    void *x = tensor_bytes(a, name, &na), *y = tensor_bytes(b, name, &nb);
    cr_assert_eq(na, nb);
    if (same)
        cr_assert_eq(memcmp(x, y, na), 0, "%s differs", name);
    else
        cr_assert_neq(memcmp(x, y, na), 0, "%s is the same", name);
    free(x);
    free(y);
}

/* Every PARAM (and STATE, with_state) tensor of a and b, compared. */
static void expect_same_tensors(kiln_program *a, kiln_program *b, int with_state)
{
    int n = kiln_program_num_tensors(a), seen = 0;
    for (int i = 0; i < n; i++) {
        kiln_tensor_info info;
        cr_assert_eq(kiln_program_tensor(a, i, &info), KILN_OK);
        if (info.role == KILN_ROLE_PARAM || (with_state && info.role == KILN_ROLE_STATE)) {
            expect_same_tensor(a, b, info.name, 1);
            seen++;
        }
    }
    cr_assert_geq(seen, with_state ? 6 : 2);
}

/* got (a call that set *err) is want, with the message "<path>: msg". */
static void expect_fails(kiln_status got, kiln_status want, char **err, const char *path,
                         const char *msg)
{
    cr_assert_eq(got, want, "status %d: %s", got, *err ? *err : "(no message)");
    char w[2048];
    snprintf(w, sizeof w, "%s: %s", path, msg);
    cr_assert_not_null(*err);
    cr_assert_str_eq(*err, w);
    free(*err);
    *err = NULL;
}

Test(checkpoint, save_and_load_with_state_and_metadata)
{
    kiln_program *a = compile_mlp(2, 0, KILN_OPT_ADAMW), *b = compile_mlp(2, 0, KILN_OPT_ADAMW);
    cr_assert_eq(kiln_program_init_params(a, 1), KILN_OK);
    cr_assert_eq(kiln_program_init_params(b, 2), KILN_OK);
    train_once(a); /* non-zero optimizer state */
    expect_same_tensor(a, b, "linear0.weight", 0);

    kiln_checkpoint_meta *meta = kiln_checkpoint_meta_new();
    cr_assert_eq(kiln_checkpoint_meta_set_int(meta, "kiln.epoch", 3), KILN_OK);
    cr_assert_eq(kiln_checkpoint_meta_set_int(meta, "kiln.step", 120), KILN_OK);
    cr_assert_eq(kiln_checkpoint_meta_set(meta, "note", "first"), KILN_OK);
    cr_assert_eq(kiln_checkpoint_meta_set(meta, "note", "second"), KILN_OK);
    cr_assert_eq(kiln_checkpoint_meta_count(meta), 3);
    char *p = tpath("model.safetensors"), *err = NULL;
    cr_assert_eq(kiln_save_ex(a, p, 1, meta, &err), KILN_OK, "%s", err);
    cr_assert_null(err);
    kiln_checkpoint_meta_free(meta);
    cr_assert_eq(tmp_files_left(), 0);

    /* the file, as any safetensors reader sees it */
    kiln_safetensors *s = open_ok(p);
    static const char *const names[] = {"linear0.weight", "linear0.bias",
                                        "linear0.weight.exp_avg", "linear0.weight.exp_avg_sq",
                                        "linear0.bias.exp_avg", "linear0.bias.exp_avg_sq"};
    cr_assert_eq(kiln_safetensors_count(s), 6);
    for (int k = 0; k < 6; k++) {
        int j = kiln_safetensors_find(s, names[k]);
        cr_assert_geq(j, 0, "%s is not in the file", names[k]);
        const kiln_st_info *info = kiln_safetensors_info(s, j);
        cr_assert_str_eq(info->dtype_str, "F32");
        int weight = strstr(names[k], "weight") != NULL;
        cr_assert_eq(info->rank, weight ? 2 : 1);
        cr_assert_eq(info->shape[0], 2);
        if (weight) cr_assert_eq(info->shape[1], 3);
    }
    cr_assert_str_eq(kiln_safetensors_meta_key(s, 0), "format");
    cr_assert_str_eq(kiln_safetensors_meta_get(s, "format"), "pt");
    cr_assert_str_eq(kiln_safetensors_meta_get(s, "kiln.epoch"), "3");
    cr_assert_str_eq(kiln_safetensors_meta_get(s, "note"), "second");
    kiln_safetensors_close(s);

    kiln_checkpoint_meta *got = kiln_checkpoint_meta_new();
    cr_assert_eq(kiln_checkpoint_meta_set(got, "stale", "x"), KILN_OK);
    cr_assert_eq(kiln_load_ex(b, p, 1, 1, got, &err), KILN_OK, "%s", err);
    cr_assert_null(err);
    expect_same_tensors(a, b, 1);
    int64_t v = 0;
    cr_assert_eq(kiln_checkpoint_meta_get_int(got, "kiln.epoch", &v), KILN_OK);
    cr_assert_eq(v, 3);
    cr_assert_eq(kiln_checkpoint_meta_get_int(got, "kiln.step", &v), KILN_OK);
    cr_assert_eq(v, 120);
    cr_assert_eq(kiln_checkpoint_meta_get_int(got, "note", &v), KILN_ERR_PARSE);
    cr_assert_eq(kiln_checkpoint_meta_get_int(got, "stale", &v), KILN_ERR_NOT_FOUND);
    cr_assert_eq(kiln_checkpoint_meta_count(got), 4);
    kiln_checkpoint_meta_free(got);

    kiln_checkpoint_meta *only = NULL;
    cr_assert_eq(kiln_checkpoint_read_meta(p, &only, &err), KILN_OK, "%s", err);
    cr_assert_str_eq(kiln_checkpoint_meta_get(only, "kiln.step"), "120");
    kiln_checkpoint_meta_free(only);

    /* both programs now train identically */
    train_once(a);
    train_once(b);
    expect_same_tensors(a, b, 1);
    kiln_program_free(a);
    kiln_program_free(b);
    free(p);
}

Test(checkpoint, params_only)
{
    kiln_program *a = compile_mlp(2, 0, KILN_OPT_ADAMW), *b = compile_mlp(2, 0, KILN_OPT_ADAMW);
    kiln_program_init_params(a, 1);
    kiln_program_init_params(b, 2);
    train_once(a);
    train_once(b);
    char *p = tpath("w.safetensors"), *err = NULL;
    cr_assert_eq(kiln_save(a, p, 0, &err), KILN_OK, "%s", err);
    kiln_safetensors *s = open_ok(p);
    cr_assert_eq(kiln_safetensors_count(s), 2);
    cr_assert_eq(kiln_safetensors_meta_count(s), 1);
    kiln_safetensors_close(s);

    /* strict with state: the state is missing */
    expect_fails(kiln_load(b, p, 1, 1, &err), KILN_ERR_NOT_FOUND, &err, p,
                 "4 tensors of the program are missing from the file: 'linear0.bias.exp_avg', "
                 "'linear0.bias.exp_avg_sq', 'linear0.weight.exp_avg', "
                 "'linear0.weight.exp_avg_sq'");
    expect_same_tensor(a, b, "linear0.weight", 0); /* untouched by the failed load */
    /* not strict: the parameters load, the state stays */
    size_t n;
    void *state = tensor_bytes(b, "linear0.weight.exp_avg", &n);
    cr_assert_eq(kiln_load(b, p, 1, 0, &err), KILN_OK, "%s", err);
    expect_same_tensors(a, b, 0);
    void *state2 = tensor_bytes(b, "linear0.weight.exp_avg", &n);
    cr_assert_eq(memcmp(state, state2, n), 0);
    free(state);
    free(state2);
    /* without state, strict: fine */
    kiln_program_init_params(b, 2);
    cr_assert_eq(kiln_load(b, p, 0, 1, &err), KILN_OK, "%s", err);
    expect_same_tensors(a, b, 0);

    /* a file with state, loaded without it, strict: the state is skipped */
    char *q = tpath("full.safetensors");
    cr_assert_eq(kiln_save(a, q, 1, &err), KILN_OK, "%s", err);
    kiln_program_init_params(b, 2);
    cr_assert_eq(kiln_load(b, q, 0, 1, &err), KILN_OK, "%s", err);
    expect_same_tensors(a, b, 0);
    expect_same_tensor(a, b, "linear0.weight.exp_avg", 0);
    /* ... even into an SGD program, whose state has other names */
    kiln_program *c = compile_mlp(2, 0, KILN_OPT_SGD);
    cr_assert_eq(kiln_load(c, q, 0, 1, &err), KILN_OK, "%s", err);
    expect_same_tensors(a, c, 0);
    /* but with state the AdamW state is unexpected there */
    char want[1024];
    snprintf(want, sizeof want,
             "2 tensors of the program are missing from the file: "
             "'linear0.bias.momentum_buffer', 'linear0.weight.momentum_buffer'; 4 tensors in the "
             "file are not in the program: 'linear0.bias.exp_avg', 'linear0.bias.exp_avg_sq', "
             "'linear0.weight.exp_avg', 'linear0.weight.exp_avg_sq'");
    expect_fails(kiln_load(c, q, 1, 1, &err), KILN_ERR_NOT_FOUND, &err, q, want);
    kiln_program_free(a);
    kiln_program_free(b);
    kiln_program_free(c);
    free(p);
    free(q);
}

Test(checkpoint, shape_mismatch_names_both_shapes)
{
    kiln_program *a = compile_mlp(2, 0, KILN_OPT_ADAMW), *b = compile_mlp(5, 0, KILN_OPT_ADAMW);
    kiln_program_init_params(a, 1);
    kiln_program_init_params(b, 2);
    char *p = tpath("w.safetensors"), *err = NULL;
    cr_assert_eq(kiln_save(a, p, 0, &err), KILN_OK, "%s", err);
    size_t n;
    void *before = tensor_bytes(b, "linear0.weight", &n);
    expect_fails(kiln_load(b, p, 0, 0, &err), KILN_ERR_SHAPE, &err, p,
                 "tensor 'linear0.bias' is F32 [2] in the file but F32 [5] in the program");
    expect_fails(kiln_load(b, p, 0, 1, &err), KILN_ERR_SHAPE, &err, p,
                 "tensor 'linear0.bias' is F32 [2] in the file but F32 [5] in the program");
    void *after = tensor_bytes(b, "linear0.weight", &n);
    cr_assert_eq(memcmp(before, after, n), 0, "a failed load wrote the program");
    free(before);
    free(after);

    /* a dtype mismatch, and a dtype kiln cannot load */
    float w[6] = {0};
    double bias[2] = {0};
    int64_t s23[] = {2, 3}, s2[] = {2};
    kiln_st_tensor t[] = {{"linear0.weight", KILN_F32, 2, s23, w},
                          {"linear0.bias", KILN_F64, 1, s2, bias}};
    write_ok(p, t, 2, NULL, 0);
    expect_fails(kiln_load(a, p, 0, 0, &err), KILN_ERR_SHAPE, &err, p,
                 "tensor 'linear0.bias' is F64 [2] in the file but F32 [2] in the program");
    write_raw(p,
              "{\"linear0.bias\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"linear0.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]}}",
              NULL, 32);
    expect_fails(kiln_load(a, p, 0, 0, &err), KILN_ERR_UNSUPPORTED, &err, p,
                 "tensor 'linear0.bias' is F16 [2] in the file; kiln cannot load F16 tensors yet "
                 "(the program's is F32 [2])");
    kiln_program_free(a);
    kiln_program_free(b);
    free(p);
}

Test(checkpoint, load_by_matching_names)
{
    /* a one-layer model's weights into a two-layer model with the same first layer */
    kiln_program *a = compile_mlp(4, 0, KILN_OPT_ADAMW), *b = compile_mlp(4, 1, KILN_OPT_ADAMW);
    kiln_program_init_params(a, 1);
    kiln_program_init_params(b, 2);
    char *p = tpath("w.safetensors"), *err = NULL;
    cr_assert_eq(kiln_save(a, p, 0, &err), KILN_OK, "%s", err);
    size_t n;
    void *l1 = tensor_bytes(b, "linear1.weight", &n);
    expect_fails(kiln_load(b, p, 0, 1, &err), KILN_ERR_NOT_FOUND, &err, p,
                 "2 tensors of the program are missing from the file: 'linear1.bias', "
                 "'linear1.weight'");
    cr_assert_eq(kiln_load(b, p, 0, 0, &err), KILN_OK, "%s", err);
    expect_same_tensor(a, b, "linear0.weight", 1);
    expect_same_tensor(a, b, "linear0.bias", 1);
    void *l1b = tensor_bytes(b, "linear1.weight", &n);
    cr_assert_eq(memcmp(l1, l1b, n), 0, "linear1 changed");
    free(l1);
    free(l1b);

    /* and the other way: the file has more than the program */
    char *q = tpath("big.safetensors");
    cr_assert_eq(kiln_save(b, q, 0, &err), KILN_OK, "%s", err);
    kiln_program_init_params(a, 3);
    expect_fails(kiln_load(a, q, 0, 1, &err), KILN_ERR_NOT_FOUND, &err, q,
                 "2 tensors in the file are not in the program: 'linear1.bias', "
                 "'linear1.weight'");
    cr_assert_eq(kiln_load(a, q, 0, 0, &err), KILN_OK, "%s", err);
    expect_same_tensor(a, b, "linear0.weight", 1);
    kiln_program_free(a);
    kiln_program_free(b);
    free(p);
    free(q);
}

Test(checkpoint, file_errors)
{
    kiln_program *a = compile_mlp(2, 0, KILN_OPT_ADAMW);
    char *p = tpath("none.safetensors"), *err = NULL;
    expect_fails(kiln_load(a, p, 0, 0, &err), KILN_ERR_IO, &err, p,
                 "cannot open: No such file or directory");
    write_bytes(p, "\x03\0\0\0\0\0\0\0{}", 10);
    expect_fails(kiln_load(a, p, 0, 0, &err), KILN_ERR_CORRUPT, &err, p,
                 "header length 3 is larger than the file (10 bytes)");
    kiln_checkpoint_meta *m = (kiln_checkpoint_meta *)1;
    expect_fails(kiln_checkpoint_read_meta(p, &m, &err), KILN_ERR_CORRUPT, &err, p,
                 "header length 3 is larger than the file (10 bytes)");
    cr_assert_null(m);
    char *d = tpath("no/dir/x.safetensors");
    cr_assert_eq(kiln_save(a, d, 0, &err), KILN_ERR_IO);
    cr_assert_not_null(strstr(err, "cannot create"), "%s", err);
    free(err);
    cr_assert_eq(kiln_save(NULL, d, 0, &err), KILN_ERR_INVALID);
    free(err);
    cr_assert_eq(kiln_load(a, NULL, 0, 0, NULL), KILN_ERR_INVALID);
    kiln_program_free(a);
    free(p);
    free(d);
}
