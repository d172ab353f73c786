/* tests/test_data.c — data sets and loaders (runtime/data.c, idx.c,
 * loader.c): idx files written here, gzipped and plain, read back; every
 * malformed file with its status and its exact message; the real
 * Fashion-MNIST when Debian's dataset-fashion-mnist is installed; .npy data
 * sets; and the loader's orders, batch counts, padding, and the background
 * thread against the synchronous path. Every file lives in a fresh
 * temporary directory. */
#include <criterion/criterion.h>

#include "kiln/kiln.h"
#include "runtime/npy.h"
#include "tests/testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[256];

static void setup(void)
{
    kiln_test_tmpdir(tmpdir, sizeof tmpdir, "data");
}

static void teardown(void)
{
    kiln_test_rmtree(tmpdir);
}

TestSuite(idx, .init = setup, .fini = teardown);
TestSuite(fashion, .init = setup, .fini = teardown);
TestSuite(npydata, .init = setup, .fini = teardown);
TestSuite(dataset);
TestSuite(loader);

/* tmpdir/name, in one of four rotating static buffers. */
static const char *tpath(const char *name)
{
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

/* ---- writing idx files ---------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes bytes to path, gzipped when gz. */
static void write_file(const char *path, const void *p, size_t n, int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        cr_assert_not_null(f, "cannot create %s", path);
        if (n) cr_assert_eq(gzwrite(f, p, (unsigned)n), (int)n);
        cr_assert_eq(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f, "cannot create %s", path);
        if (n) cr_assert_eq(fwrite(p, 1, n, f), n);
        cr_assert_eq(fclose(f), 0);
    }
}

/* An idx file: magic, sizes, then `datalen` bytes of data (may be fewer or
 * more than the sizes promise). */
static void write_idx(const char *path, uint32_t magic, int rank, const uint32_t *sizes,
                      const unsigned char *data, size_t datalen, int gz)
{
    size_t n = 4 + 4 * (size_t)rank + datalen;
    unsigned char *b = malloc(n);
    cr_assert_not_null(b);
    put_be32(b, magic);
    for (int k = 0; k < rank; k++) put_be32(b + 4 + 4 * k, sizes[k]);
    if (datalen) memcpy(b + 4 + 4 * rank, data, datalen);
    write_file(path, b, n, gz);
    free(b);
}

/* n images of h x w with pixel (i, r, c) = (i * 31 + r * 7 + c * 3) % 256,
 * and labels i % 10, written as `images` and `labels`. */
static unsigned char pixel(uint32_t i, uint32_t r, uint32_t c)
{
    return (unsigned char)((i * 31 + r * 7 + c * 3) % 256);
}

static void write_pair(const char *images, const char *labels, uint32_t n, uint32_t h,
                       uint32_t w, int gz)
{
    unsigned char *px = malloc((size_t)n * h * w + 1), *lb = malloc(n + 1);
    cr_assert(px && lb);
    for (uint32_t i = 0; i < n; i++) {
        lb[i] = (unsigned char)(i % 10);
        for (uint32_t r = 0; r < h; r++)
            for (uint32_t c = 0; c < w; c++) px[((size_t)i * h + r) * w + c] = pixel(i, r, c);
    }
    uint32_t is[3] = {n, h, w}, ls[1] = {n};
    write_idx(images, 0x803, 3, is, px, (size_t)n * h * w, gz);
    write_idx(labels, 0x801, 1, ls, lb, n, gz);
    free(px);
    free(lb);
}

/* Loads and checks status and exact message; frees everything. */
static void expect_fail(const char *images, const char *labels, kiln_status want,
                        const char *msg)
{
    kiln_dataset *d = (kiln_dataset *)1;
    char *err = NULL;
    kiln_status st = kiln_dataset_load_idx(images, labels, &d, &err);
    cr_assert_eq(st, want, "status %d, want %d (%s)", st, want, err ? err : "(no message)");
    cr_assert_null(d);
    cr_assert_not_null(err);
    cr_assert_str_eq(err, msg);
    free(err);
}

/* ---- idx: round trips ----------------------------------------------------- */

static void check_roundtrip(int gz)
{
    const char *im = tpath(gz ? "im.gz" : "im"), *lb = tpath(gz ? "lb.gz" : "lb");
    write_pair(im, lb, 13, 5, 7, gz);
    kiln_dataset *d = NULL;
    char *err = NULL;
    kiln_status st = kiln_dataset_load_idx(im, lb, &d, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    cr_assert_null(err);
    cr_assert_eq(kiln_dataset_len(d), 13);
    int xr, yr;
    int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
    kiln_dtype yt;
    kiln_dataset_shapes(d, &xr, xs, &yr, ys, &yt);
    cr_assert_eq(xr, 3);
    cr_assert_eq(xs[0], 1);
    cr_assert_eq(xs[1], 5);
    cr_assert_eq(xs[2], 7);
    cr_assert_eq(yr, 0);
    cr_assert_eq(yt, KILN_I32);

    /* the values, through a loader in order */
    kiln_loader *l = NULL;
    cr_assert_eq(kiln_loader_new(d, 13, 0, 0, 0, &l), KILN_OK);
    float *x = malloc(13 * 35 * sizeof(float));
    int32_t y[13];
    int64_t n = 0;
    cr_assert_eq(kiln_loader_next(l, x, y, &n), 1);
    cr_assert_eq(n, 13);
    for (uint32_t i = 0; i < 13; i++) {
        cr_assert_eq(y[i], (int32_t)(i % 10));
        for (uint32_t r = 0; r < 5; r++)
            for (uint32_t c = 0; c < 7; c++) {
                float v = x[(i * 5 + r) * 7 + c];
                cr_assert_eq(v, (float)pixel(i, r, c) / 255.0f, "sample %u (%u,%u): %g", i, r,
                             c, (double)v);
                cr_assert(v >= 0.0f && v <= 1.0f);
            }
    }
    cr_assert_eq(kiln_loader_next(l, x, y, &n), 0);
    cr_assert_eq(n, 0);
    free(x);
    kiln_loader_free(l);
    kiln_dataset_free(d);
}

Test(idx, roundtrip_plain) { check_roundtrip(0); }
Test(idx, roundtrip_gzip) { check_roundtrip(1); }

Test(idx, extremes_0_and_255)
{
    unsigned char px[4] = {0, 255, 128, 1}, lb[1] = {9};
    uint32_t is[3] = {1, 2, 2}, ls[1] = {1};
    write_idx(tpath("im"), 0x803, 3, is, px, 4, 0);
    write_idx(tpath("lb"), 0x801, 1, ls, lb, 1, 1); /* gzip and plain mixed */
    kiln_dataset *d = NULL;
    cr_assert_eq(kiln_dataset_load_idx(tpath("im"), tpath("lb"), &d, NULL), KILN_OK);
    float x[4];
    int32_t y;
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(d, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert_eq(kiln_loader_next(l, x, &y, NULL), 1);
    cr_assert_eq(x[0], 0.0f);
    cr_assert_eq(x[1], 1.0f);
    cr_assert_eq(x[2], 128.0f / 255.0f);
    cr_assert_eq(y, 9);
    kiln_loader_free(l);
    kiln_dataset_free(d);
}

/* ---- idx: malformed files ------------------------------------------------- */

Test(idx, missing_file)
{
    write_pair(tpath("im"), tpath("lb"), 2, 2, 2, 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", tpath("nope"));
    expect_fail(tpath("nope"), tpath("lb"), KILN_ERR_IO, want);
    expect_fail(tpath("im"), tpath("nope"), KILN_ERR_IO, want);
}

Test(idx, directory_is_not_a_file)
{
    write_pair(tpath("im"), tpath("lb"), 2, 2, 2, 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: not a regular file", tmpdir);
    expect_fail(tmpdir, tpath("lb"), KILN_ERR_IO, want);
}

static void check_truncated_data(int gz)
{
    unsigned char px[100] = {0};
    uint32_t is[3] = {3, 4, 5}; /* 60 bytes promised */
    write_idx(tpath("im"), 0x803, 3, is, px, 59, gz);
    write_pair(tpath("x"), tpath("lb"), 3, 1, 1, 0);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: truncated: 3 images of 4x5 need 60 bytes of data, the file holds 59",
             tpath("im"));
    expect_fail(tpath("im"), tpath("lb"), KILN_ERR_CORRUPT, want);

    uint32_t ls[1] = {10};
    write_idx(tpath("lb2"), 0x801, 1, ls, px, 4, gz);
    write_pair(tpath("im2"), tpath("y"), 10, 1, 1, 0);
    snprintf(want, sizeof want,
             "%s: truncated: 10 labels need 10 bytes of data, the file holds 4", tpath("lb2"));
    expect_fail(tpath("im2"), tpath("lb2"), KILN_ERR_CORRUPT, want);
}

Test(idx, truncated_data_plain) { check_truncated_data(0); }
Test(idx, truncated_data_gzip) { check_truncated_data(1); }

Test(idx, truncated_header)
{
    unsigned char b[10];
    put_be32(b, 0x803);
    put_be32(b + 4, 3);
    write_file(tpath("im"), b, 10, 0);
    write_pair(tpath("x"), tpath("lb"), 3, 1, 1, 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: truncated header: 10 of 16 bytes", tpath("im"));
    expect_fail(tpath("im"), tpath("lb"), KILN_ERR_CORRUPT, want);

    write_file(tpath("empty.gz"), b, 0, 1);
    snprintf(want, sizeof want, "%s: truncated header: 0 of 16 bytes", tpath("empty.gz"));
    expect_fail(tpath("empty.gz"), tpath("lb"), KILN_ERR_CORRUPT, want);
}

/* A gzip stream cut off part-way is a truncated file, not a zlib error. */
Test(idx, truncated_gzip_stream)
{
    enum { N = 50, H = 20, W = 20 };
    write_pair(tpath("full.gz"), tpath("lb"), N, H, W, 1);
    FILE *f = fopen(tpath("full.gz"), "rb");
    cr_assert_not_null(f);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert(n > 200);
    write_file(tpath("cut.gz"), buf, n / 2, 0);
    kiln_dataset *d = (kiln_dataset *)1;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_load_idx(tpath("cut.gz"), tpath("lb"), &d, &err),
                 KILN_ERR_CORRUPT);
    cr_assert_null(d);
    char want[1024];
    snprintf(want, sizeof want, "%s: truncated: 50 images of 20x20 need 20000 bytes of data, ",
             tpath("cut.gz"));
    cr_assert_eq(strncmp(err, want, strlen(want)), 0, "%s", err);
    free(err);
}

Test(idx, broken_gzip_stream)
{
    enum { N = 50, H = 20, W = 20 };
    write_pair(tpath("full.gz"), tpath("lb"), N, H, W, 1);
    FILE *f = fopen(tpath("full.gz"), "rb");
    cr_assert_not_null(f);
    unsigned char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    /* Flip the stored CRC-32 of the uncompressed data. */
    buf[n - 8] ^= 0xff;
    write_file(tpath("bad.gz"), buf, n, 0);
    kiln_dataset *d = (kiln_dataset *)1;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_load_idx(tpath("bad.gz"), tpath("lb"), &d, &err),
                 KILN_ERR_CORRUPT, "%s", err ? err : "");
    cr_assert_null(d);
    char want[1024];
    snprintf(want, sizeof want, "%s: broken gzip data: incorrect data check", tpath("bad.gz"));
    cr_assert_str_eq(err, want);
    free(err);
}

Test(idx, bad_magic)
{
    write_pair(tpath("im"), tpath("lb"), 4, 2, 2, 1);
    char want[1024];
    /* labels where the images belong, and the other way round */
    snprintf(want, sizeof want,
             "%s: bad magic 0x00000801 (expected 0x00000803, an idx file of images)",
             tpath("lb"));
    expect_fail(tpath("lb"), tpath("lb"), KILN_ERR_CORRUPT, want);
    snprintf(want, sizeof want,
             "%s: bad magic 0x00000803 (expected 0x00000801, an idx file of labels)",
             tpath("im"));
    expect_fail(tpath("im"), tpath("im"), KILN_ERR_CORRUPT, want);
    /* something else entirely: a PNG signature */
    write_file(tpath("png"), "\x89PNG\r\n\x1a\n\0\0\0\0\0\0\0\0", 16, 0);
    snprintf(want, sizeof want,
             "%s: bad magic 0x89504e47 (expected 0x00000803, an idx file of images)",
             tpath("png"));
    expect_fail(tpath("png"), tpath("lb"), KILN_ERR_CORRUPT, want);
}

Test(idx, sizes_that_overflow)
{
    uint32_t is[3] = {0xffffffffu, 0xffffffffu, 0xffffffffu};
    write_idx(tpath("im"), 0x803, 3, is, NULL, 0, 0);
    write_pair(tpath("x"), tpath("lb"), 2, 1, 1, 0);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: sizes 4294967295 x 4294967295 x 4294967295 in the header overflow",
             tpath("im"));
    expect_fail(tpath("im"), tpath("lb"), KILN_ERR_CORRUPT, want);
}

/* A header promising far more than the file holds costs no more memory than
 * the file: it fails as truncated (and, under ASan, without a huge
 * allocation). */
Test(idx, lying_header)
{
    unsigned char px[16] = {0};
    uint32_t is[3] = {0x7fffffffu, 64, 64};
    write_idx(tpath("im.gz"), 0x803, 3, is, px, 16, 1);
    write_pair(tpath("x"), tpath("lb"), 2, 1, 1, 0);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: truncated: 2147483647 images of 64x64 need 8796093018112 bytes of data, the "
             "file holds 16",
             tpath("im.gz"));
    expect_fail(tpath("im.gz"), tpath("lb"), KILN_ERR_CORRUPT, want);
}

Test(idx, zero_size)
{
    uint32_t is[3] = {2, 0, 3};
    write_idx(tpath("im"), 0x803, 3, is, NULL, 0, 0);
    write_pair(tpath("x"), tpath("lb"), 2, 1, 1, 0);
    char want[1024];
    snprintf(want, sizeof want, "%s: size 1 in the header is 0", tpath("im"));
    expect_fail(tpath("im"), tpath("lb"), KILN_ERR_CORRUPT, want);
}

Test(idx, trailing_data)
{
    unsigned char px[5] = {1, 2, 3, 4, 5};
    uint32_t is[3] = {1, 2, 2};
    write_idx(tpath("im"), 0x803, 3, is, px, 5, 0);
    write_pair(tpath("x"), tpath("lb"), 1, 1, 1, 0);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: unexpected data after 1 image of 2x2 (4 bytes of data)", tpath("im"));
    expect_fail(tpath("im"), tpath("lb"), KILN_ERR_CORRUPT, want);
}

Test(idx, counts_differ)
{
    write_pair(tpath("im.gz"), tpath("x"), 7, 3, 3, 1);
    write_pair(tpath("y"), tpath("lb.gz"), 6, 1, 1, 1);
    char want[1024];
    snprintf(want, sizeof want, "%s holds 7 images but %s holds 6 labels", tpath("im.gz"),
             tpath("lb.gz"));
    expect_fail(tpath("im.gz"), tpath("lb.gz"), KILN_ERR_CORRUPT, want);
}

Test(idx, null_arguments)
{
    kiln_dataset *d = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_load_idx(NULL, "x", &d, &err), KILN_ERR_INVALID);
    cr_assert_null(d);
    free(err);
    cr_assert_eq(kiln_dataset_load_idx("x", "y", NULL, NULL), KILN_ERR_INVALID);
}

/* ---- Fashion-MNIST -------------------------------------------------------- */

Test(fashion, missing_directory)
{
    char dir[512], want[1024];
    snprintf(dir, sizeof dir, "%s/no-such-dir", tmpdir);
    snprintf(want, sizeof want,
             "Fashion-MNIST not found in %s: install Debian's dataset-fashion-mnist "
             "(apt-get install dataset-fashion-mnist) or pass --data DIR",
             dir);
    for (int train = 0; train < 2; train++) {
        kiln_dataset *d = (kiln_dataset *)1;
        char *err = NULL;
        cr_assert_eq(kiln_dataset_fashion_mnist(dir, train, &d, &err), KILN_ERR_NOT_FOUND);
        cr_assert_null(d);
        cr_assert_str_eq(err, want);
        free(err);
    }
    /* a directory holding only the images is just as incomplete */
    write_pair(tpath("train-images-idx3-ubyte.gz"), tpath("x"), 2, 2, 2, 1);
    snprintf(want, sizeof want,
             "Fashion-MNIST not found in %s: install Debian's dataset-fashion-mnist "
             "(apt-get install dataset-fashion-mnist) or pass --data DIR",
             tmpdir);
    kiln_dataset *d = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_fashion_mnist(tmpdir, 1, &d, &err), KILN_ERR_NOT_FOUND);
    cr_assert_str_eq(err, want);
    free(err);
}

/* --data DIR with the four files, gzipped (train) and plain (t10k). */
Test(fashion, from_dir)
{
    write_pair(tpath("train-images-idx3-ubyte.gz"), tpath("train-labels-idx1-ubyte.gz"), 12, 4,
               4, 1);
    write_pair(tpath("t10k-images-idx3-ubyte"), tpath("t10k-labels-idx1-ubyte"), 5, 4, 4, 0);
    kiln_dataset *tr = NULL, *te = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_fashion_mnist(tmpdir, 1, &tr, &err), KILN_OK, "%s",
                 err ? err : "");
    cr_assert_eq(kiln_dataset_fashion_mnist(tmpdir, 0, &te, &err), KILN_OK, "%s",
                 err ? err : "");
    cr_assert_eq(kiln_dataset_len(tr), 12);
    cr_assert_eq(kiln_dataset_len(te), 5);
    kiln_dataset_free(tr);
    kiln_dataset_free(te);
}

/* Debian's dataset-fashion-mnist, found without --data. */
Test(fashion, real_dataset, .timeout = 120)
{
    kiln_dataset *tr = NULL, *te = NULL;
    char *err = NULL;
    kiln_status st = kiln_dataset_fashion_mnist(NULL, 1, &tr, &err);
    if (st == KILN_ERR_NOT_FOUND) {
        cr_log_info("%s", err);
        free(err);
        cr_skip_test("Fashion-MNIST is not installed");
    }
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_dataset_fashion_mnist(NULL, 0, &te, &err), KILN_OK, "%s",
                 err ? err : "");
    int xr, yr;
    int64_t xs[KILN_MAX_RANK], ys[KILN_MAX_RANK];
    kiln_dtype yt;
    kiln_dataset_shapes(tr, &xr, xs, &yr, ys, &yt);
    cr_assert_eq(kiln_dataset_len(tr), 60000);
    cr_assert_eq(kiln_dataset_len(te), 10000);
    cr_assert_eq(xr, 3);
    cr_assert(xs[0] == 1 && xs[1] == 28 && xs[2] == 28);
    cr_assert_eq(yr, 0);
    cr_assert_eq(yt, KILN_I32);

    /* label histograms, through an ordered loader of whole-set batches */
    kiln_dataset *sets[2] = {tr, te};
    int64_t per_class[2] = {6000, 1000};
    for (int s = 0; s < 2; s++) {
        int64_t n = kiln_dataset_len(sets[s]), got = 0, hist[10] = {0};
        kiln_loader *l;
        cr_assert_eq(kiln_loader_new(sets[s], 1000, 0, 0, 0, &l), KILN_OK);
        int32_t y[1000];
        int64_t bn;
        while (kiln_loader_next(l, NULL, y, &bn)) {
            for (int64_t i = 0; i < bn; i++) {
                cr_assert(y[i] >= 0 && y[i] < 10, "label %d", y[i]);
                hist[y[i]]++;
            }
            got += bn;
        }
        cr_assert_eq(got, n);
        for (int c = 0; c < 10; c++) cr_assert_eq(hist[c], per_class[s], "class %d", c);
        kiln_loader_free(l);
    }
    /* the statistics everyone normalises Fashion-MNIST with */
    float mean, std;
    kiln_dataset_stats(tr, &mean, &std);
    cr_assert(fabsf(mean - 0.2860f) < 5e-4f, "mean %g", (double)mean);
    cr_assert(fabsf(std - 0.3530f) < 5e-4f, "std %g", (double)std);
    kiln_dataset_free(tr);
    kiln_dataset_free(te);
}

/* ---- .npy data sets ------------------------------------------------------- */

Test(npydata, integer_labels)
{
    unsigned char x[4 * 2 * 3];
    for (int k = 0; k < 24; k++) x[k] = (unsigned char)(k * 10);
    int64_t y[4] = {3, 1, 4, 1}, xs[3] = {4, 2, 3}, ysh[1] = {4};
    char e[512];
    cr_assert_eq(kiln_npy_save(tpath("x.npy"), KILN_U8, 3, xs, x, e, sizeof e), KILN_OK, "%s", e);
    cr_assert_eq(kiln_npy_save(tpath("y.npy"), KILN_I64, 1, ysh, y, e, sizeof e), KILN_OK, "%s",
                 e);
    kiln_dataset *d = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_load_npy(tpath("x.npy"), tpath("y.npy"), &d, &err), KILN_OK, "%s",
                 err ? err : "");
    int xr, yr;
    int64_t sx[KILN_MAX_RANK], sy[KILN_MAX_RANK];
    kiln_dtype yt;
    kiln_dataset_shapes(d, &xr, sx, &yr, sy, &yt);
    cr_assert_eq(kiln_dataset_len(d), 4);
    cr_assert(xr == 2 && sx[0] == 2 && sx[1] == 3);
    cr_assert_eq(yr, 0);
    cr_assert_eq(yt, KILN_I32);
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(d, 4, 0, 0, 0, &l), KILN_OK);
    float bx[24];
    int32_t by[4];
    cr_assert_eq(kiln_loader_next(l, bx, by, NULL), 1);
    for (int k = 0; k < 24; k++) cr_assert_eq(bx[k], (float)(k * 10));
    for (int k = 0; k < 4; k++) cr_assert_eq(by[k], (int32_t)y[k]);
    kiln_loader_free(l);
    kiln_dataset_free(d);
}

Test(npydata, float_targets)
{
    double x[3 * 2] = {0.5, -1, 2, 3, 4.25, 5};
    double y[3 * 2] = {1.5, 2.5, -3, 0, 7, 8};
    int64_t xs[2] = {3, 2}, ys[2] = {3, 2};
    char e[512];
    cr_assert_eq(kiln_npy_save(tpath("x.npy"), KILN_F64, 2, xs, x, e, sizeof e), KILN_OK);
    cr_assert_eq(kiln_npy_save(tpath("y.npy"), KILN_F64, 2, ys, y, e, sizeof e), KILN_OK);
    kiln_dataset *d = NULL;
    cr_assert_eq(kiln_dataset_load_npy(tpath("x.npy"), tpath("y.npy"), &d, NULL), KILN_OK);
    int yr;
    int64_t sy[KILN_MAX_RANK];
    kiln_dtype yt;
    kiln_dataset_shapes(d, NULL, NULL, &yr, sy, &yt);
    cr_assert_eq(yt, KILN_F32);
    cr_assert(yr == 1 && sy[0] == 2);
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(d, 2, 0, 0, 0, &l), KILN_OK);
    float bx[4], by[4];
    int64_t n;
    cr_assert_eq(kiln_loader_next(l, bx, by, &n), 1);
    cr_assert_eq(n, 2);
    cr_assert_eq(kiln_loader_next(l, bx, by, &n), 1);
    cr_assert_eq(n, 1);
    cr_assert(bx[0] == 4.25f && bx[1] == 5.0f && bx[2] == 0 && bx[3] == 0);
    cr_assert(by[0] == 7.0f && by[1] == 8.0f && by[2] == 0 && by[3] == 0);
    kiln_loader_free(l);
    kiln_dataset_free(d);
}

Test(npydata, errors)
{
    float x[6] = {0};
    int32_t y[2] = {0};
    int64_t xs[2] = {3, 2}, ys[1] = {2};
    char e[512];
    cr_assert_eq(kiln_npy_save(tpath("x.npy"), KILN_F32, 2, xs, x, e, sizeof e), KILN_OK);
    cr_assert_eq(kiln_npy_save(tpath("y.npy"), KILN_I32, 1, ys, y, e, sizeof e), KILN_OK);
    kiln_dataset *d = (kiln_dataset *)1;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_load_npy(tpath("x.npy"), tpath("y.npy"), &d, &err),
                 KILN_ERR_CORRUPT);
    cr_assert_null(d);
    char want[1024];
    snprintf(want, sizeof want, "%s holds 3 samples but %s holds 2", tpath("x.npy"),
             tpath("y.npy"));
    cr_assert_str_eq(err, want);
    free(err);
    err = NULL;
    cr_assert_eq(kiln_dataset_load_npy(tpath("x.npy"), tpath("none.npy"), &d, &err),
                 KILN_ERR_IO);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory",
             tpath("none.npy"));
    cr_assert_str_eq(err, want);
    free(err);
}

/* ---- data sets from arrays ------------------------------------------------ */

/* n samples of 3 floats: sample i = (i, i + 0.25, -i); label i. */
static kiln_dataset *numbered(int64_t n)
{
    float *x = malloc((size_t)n * 3 * sizeof(float) + 1);
    int32_t *y = malloc((size_t)n * sizeof(int32_t) + 1);
    cr_assert(x && y);
    for (int64_t i = 0; i < n; i++) {
        x[3 * i] = (float)i;
        x[3 * i + 1] = (float)i + 0.25f;
        x[3 * i + 2] = -(float)i;
        y[i] = (int32_t)i;
    }
    int64_t xs[2] = {n, 3}, ys[1] = {n};
    kiln_dataset *d = NULL;
    char *err = NULL;
    kiln_status st = kiln_dataset_from_arrays(x, 2, xs, y, KILN_I32, 1, ys, &d, &err);
    cr_assert_eq(st, KILN_OK, "%s", err ? err : "");
    free(x);
    free(y);
    return d;
}

Test(dataset, from_arrays_and_head)
{
    kiln_dataset *d = numbered(10), *h = NULL;
    cr_assert_eq(kiln_dataset_len(d), 10);
    cr_assert_eq(kiln_dataset_head(d, 4, &h), KILN_OK);
    cr_assert_eq(kiln_dataset_len(h), 4);
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(h, 8, 0, 0, 0, &l), KILN_OK);
    float x[24];
    int32_t y[8];
    int64_t n;
    cr_assert_eq(kiln_loader_next(l, x, y, &n), 1);
    cr_assert_eq(n, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(y[i], i);
        cr_assert_eq(x[3 * i + 1], (float)i + 0.25f);
    }
    kiln_loader_free(l);
    kiln_dataset_free(h);
    cr_assert_eq(kiln_dataset_head(d, 100, &h), KILN_OK); /* clamped */
    cr_assert_eq(kiln_dataset_len(h), 10);
    kiln_dataset_free(h);
    h = (kiln_dataset *)1;
    cr_assert_eq(kiln_dataset_head(d, -1, &h), KILN_ERR_INVALID);
    cr_assert_null(h);
    kiln_dataset_free(d);
}

Test(dataset, from_arrays_errors)
{
    float x[4] = {0};
    int32_t y[2] = {0};
    int64_t xs[2] = {2, 2}, ys[1] = {3};
    kiln_dataset *d = (kiln_dataset *)1;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_from_arrays(x, 2, xs, y, KILN_I32, 1, ys, &d, &err),
                 KILN_ERR_SHAPE);
    cr_assert_null(d);
    cr_assert_str_eq(err, "kiln_dataset_from_arrays: x has 2 samples but y has 3");
    free(err);
    ys[0] = 2;
    err = NULL;
    cr_assert_eq(kiln_dataset_from_arrays(x, 2, xs, y, KILN_F64, 1, ys, &d, &err),
                 KILN_ERR_INVALID);
    cr_assert_str_eq(err, "kiln_dataset_from_arrays: y dtype f64 (must be i32 or f32)");
    free(err);
    err = NULL;
    cr_assert_eq(kiln_dataset_from_arrays(NULL, 2, xs, y, KILN_I32, 1, ys, &d, &err),
                 KILN_ERR_INVALID);
    cr_assert_str_eq(err, "kiln_dataset_from_arrays: x is NULL");
    free(err);
}

Test(dataset, stats_and_normalize)
{
    float x[4] = {1, 2, 3, 4};
    int32_t y[2] = {0, 1};
    int64_t xs[2] = {2, 2}, ys[1] = {2};
    kiln_dataset *d = NULL;
    cr_assert_eq(kiln_dataset_from_arrays(x, 2, xs, y, KILN_I32, 1, ys, &d, NULL), KILN_OK);
    float mean, std;
    kiln_dataset_stats(d, &mean, &std);
    cr_assert_float_eq(mean, 2.5f, 1e-6f);
    cr_assert_float_eq(std, sqrtf(1.25f), 1e-6f); /* population std, as numpy */
    kiln_dataset_normalize(d, mean, std);
    kiln_dataset_stats(d, &mean, &std);
    cr_assert_float_eq(mean, 0.0f, 1e-6f);
    cr_assert_float_eq(std, 1.0f, 1e-6f);
    kiln_dataset_free(d);
}

/* ---- loaders -------------------------------------------------------------- */

/* One epoch's sample order (labels of numbered()), with checks that every
 * batch is well formed. Returns the number of batches. */
static int64_t epoch_order(kiln_loader *l, int64_t epoch, int64_t batch, int64_t *order,
                           int64_t *count)
{
    kiln_loader_start(l, epoch);
    float *x = malloc((size_t)batch * 3 * sizeof(float));
    int32_t *y = malloc((size_t)batch * sizeof(int32_t));
    int64_t n, nb = 0, total = 0;
    while (kiln_loader_next(l, x, y, &n)) {
        cr_assert(n >= 1 && n <= batch);
        for (int64_t i = 0; i < n; i++) {
            cr_assert_eq(x[3 * i], (float)y[i]);
            cr_assert_eq(x[3 * i + 1], (float)y[i] + 0.25f);
            order[total++] = y[i];
        }
        for (int64_t i = n; i < batch; i++)
            cr_assert(y[i] == 0 && x[3 * i] == 0 && x[3 * i + 1] == 0 && x[3 * i + 2] == 0);
        nb++;
    }
    cr_assert_eq(nb, kiln_loader_num_batches(l));
    *count = total;
    free(x);
    free(y);
    return nb;
}

Test(loader, every_sample_once_per_epoch)
{
    enum { N = 103 };
    kiln_dataset *d = numbered(N);
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        kiln_loader *l;
        cr_assert_eq(kiln_loader_new(d, 8, shuffle, 0, 42, &l), KILN_OK);
        for (int64_t e = 0; e < 3; e++) {
            int64_t order[N], count;
            epoch_order(l, e, 8, order, &count);
            cr_assert_eq(count, N);
            int seen[N] = {0};
            for (int64_t i = 0; i < N; i++) {
                cr_assert(order[i] >= 0 && order[i] < N);
                seen[order[i]]++;
                if (!shuffle) cr_assert_eq(order[i], i);
            }
            for (int i = 0; i < N; i++) cr_assert_eq(seen[i], 1, "sample %d", i);
        }
        kiln_loader_free(l);
    }
    kiln_dataset_free(d);
}

Test(loader, orders_follow_seed_and_epoch)
{
    enum { N = 64 };
    kiln_dataset *d = numbered(N);
    kiln_loader *a, *b, *c;
    cr_assert_eq(kiln_loader_new(d, 16, 1, 0, 7, &a), KILN_OK);
    cr_assert_eq(kiln_loader_new(d, 16, 1, 0, 7, &b), KILN_OK);
    cr_assert_eq(kiln_loader_new(d, 16, 1, 0, 8, &c), KILN_OK);
    int64_t oa[3][N], ob[3][N], oc[N], cnt;
    for (int e = 0; e < 3; e++) epoch_order(a, e, 16, oa[e], &cnt);
    /* b visits the epochs in another order: an epoch's order depends on
     * (seed, epoch) only */
    for (int e = 2; e >= 0; e--) epoch_order(b, e, 16, ob[e], &cnt);
    epoch_order(c, 0, 16, oc, &cnt);
    for (int e = 0; e < 3; e++)
        cr_assert_eq(memcmp(oa[e], ob[e], sizeof oa[e]), 0, "epoch %d differs for one seed", e);
    cr_assert_neq(memcmp(oa[0], oa[1], sizeof oa[0]), 0);
    cr_assert_neq(memcmp(oa[1], oa[2], sizeof oa[0]), 0);
    cr_assert_neq(memcmp(oa[0], oc, sizeof oc), 0);
    /* shuffled at all */
    int identity = 1;
    for (int i = 0; i < N; i++) identity &= oa[0][i] == i;
    cr_assert(!identity);
    /* restarting an epoch repeats it */
    int64_t again[N];
    epoch_order(a, 1, 16, again, &cnt);
    cr_assert_eq(memcmp(again, oa[1], sizeof again), 0);
    kiln_loader_free(a);
    kiln_loader_free(b);
    kiln_loader_free(c);
    kiln_dataset_free(d);
}

Test(loader, drop_last_and_partial_batches)
{
    kiln_dataset *d = numbered(10);
    kiln_loader *l;
    int64_t order[10], cnt;
    /* drop_last: 2 batches of 4 */
    cr_assert_eq(kiln_loader_new(d, 4, 1, 1, 3, &l), KILN_OK);
    cr_assert_eq(kiln_loader_num_batches(l), 2);
    cr_assert_eq(epoch_order(l, 0, 4, order, &cnt), 2);
    cr_assert_eq(cnt, 8);
    kiln_loader_free(l);
    /* without: 3 batches, the last with 2 samples and zeros after them */
    cr_assert_eq(kiln_loader_new(d, 4, 0, 0, 3, &l), KILN_OK);
    cr_assert_eq(kiln_loader_num_batches(l), 3);
    float x[12];
    int32_t y[4];
    int64_t n;
    for (int b = 0; b < 3; b++) {
        memset(x, 0xff, sizeof x);
        memset(y, 0xff, sizeof y);
        cr_assert_eq(kiln_loader_next(l, x, y, &n), 1);
        cr_assert_eq(n, b < 2 ? 4 : 2);
    }
    cr_assert(y[0] == 8 && y[1] == 9 && y[2] == 0 && y[3] == 0);
    cr_assert(x[0] == 8.0f && x[3] == 9.0f);
    for (int k = 6; k < 12; k++) cr_assert_eq(x[k], 0.0f, "x[%d]", k);
    cr_assert_eq(kiln_loader_next(l, x, y, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(kiln_loader_next(l, x, y, &n), 0);
    kiln_loader_free(l);
    /* a batch larger than the data set */
    cr_assert_eq(kiln_loader_new(d, 16, 1, 1, 3, &l), KILN_OK);
    cr_assert_eq(kiln_loader_num_batches(l), 0);
    cr_assert_eq(kiln_loader_next(l, NULL, NULL, &n), 0);
    kiln_loader_free(l);
    cr_assert_eq(kiln_loader_new(d, 16, 1, 0, 3, &l), KILN_OK);
    cr_assert_eq(kiln_loader_num_batches(l), 1);
    kiln_loader_free(l);
    l = (kiln_loader *)1;
    cr_assert_eq(kiln_loader_new(d, 0, 1, 0, 3, &l), KILN_ERR_INVALID);
    cr_assert_null(l);
    kiln_dataset_free(d);
}

/* All batches of a few epochs as bytes, started mid-epoch now and then. */
static unsigned char *all_batches(const kiln_dataset *d, int64_t batch, int shuffle,
                                  int drop_last, size_t *len)
{
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(d, batch, shuffle, drop_last, 99, &l), KILN_OK);
    size_t xb = (size_t)batch * 3 * sizeof(float), yb = (size_t)batch * sizeof(int32_t);
    size_t per = xb + yb + sizeof(int64_t), cap = 64 * per, used = 0;
    unsigned char *out = malloc(cap);
    float *x = malloc(xb);
    int32_t *y = malloc(yb);
    int64_t n;
    for (int64_t e = 0; e < 4; e++) {
        kiln_loader_start(l, e);
        int64_t k = 0;
        while (kiln_loader_next(l, x, y, &n)) {
            if (used + per > cap) out = realloc(out, cap *= 2);
            memcpy(out + used, x, xb);
            memcpy(out + used + xb, y, yb);
            memcpy(out + used + xb + yb, &n, sizeof n);
            used += per;
            if (e == 1 && ++k == 2) break; /* abandon epoch 1 mid-way */
        }
    }
    /* and leave the loader mid-epoch */
    kiln_loader_start(l, 5);
    cr_assert_eq(kiln_loader_next(l, x, y, &n), kiln_loader_num_batches(l) > 0);
    kiln_loader_free(l);
    free(x);
    free(y);
    *len = used;
    return out;
}

Test(loader, background_thread_matches_synchronous)
{
    kiln_dataset *d = numbered(1000);
    int64_t batches[] = {1, 7, 64, 1000, 1500};
    for (size_t k = 0; k < sizeof batches / sizeof *batches; k++)
        for (int flags = 0; flags < 4; flags++) {
            size_t la, lb;
            cr_assert_eq(setenv("KILN_LOADER_THREAD", "0", 1), 0);
            unsigned char *sync = all_batches(d, batches[k], flags & 1, flags >> 1, &la);
            cr_assert_eq(unsetenv("KILN_LOADER_THREAD"), 0);
            unsigned char *bg = all_batches(d, batches[k], flags & 1, flags >> 1, &lb);
            cr_assert_eq(la, lb);
            cr_assert_eq(memcmp(sync, bg, la), 0, "batch %lld, flags %d",
                         (long long)batches[k], flags);
            free(sync);
            free(bg);
        }
    kiln_dataset_free(d);
}

/* Loaders freed right after creation, after a start, and mid-epoch. */
Test(loader, clean_shutdown)
{
    kiln_dataset *d = numbered(50);
    for (int k = 0; k < 200; k++) {
        kiln_loader *l;
        cr_assert_eq(kiln_loader_new(d, 3, 1, 0, (uint64_t)k, &l), KILN_OK);
        if (k % 3 >= 1) kiln_loader_start(l, k);
        if (k % 3 == 2) {
            float x[9];
            int32_t y[3];
            kiln_loader_next(l, x, y, NULL);
            kiln_loader_start(l, k + 1);
        }
        kiln_loader_free(l);
    }
    kiln_dataset_free(d);
}

/* next() without start() runs epoch 0. */
Test(loader, implicit_epoch_zero)
{
    kiln_dataset *d = numbered(20);
    kiln_loader *a, *b;
    cr_assert_eq(kiln_loader_new(d, 5, 1, 0, 11, &a), KILN_OK);
    cr_assert_eq(kiln_loader_new(d, 5, 1, 0, 11, &b), KILN_OK);
    int64_t oa[20], ob[20], cnt = 0, n;
    float x[15];
    int32_t y[5];
    while (kiln_loader_next(a, x, y, &n))
        for (int64_t i = 0; i < n; i++) oa[cnt++] = y[i];
    cr_assert_eq(cnt, 20);
    epoch_order(b, 0, 5, ob, &cnt);
    cr_assert_eq(memcmp(oa, ob, sizeof oa), 0);
    kiln_loader_free(a);
    kiln_loader_free(b);
    kiln_dataset_free(d);
}
