/* tests/test_images.c — images and image data sets (runtime/image.c,
 * imgdata.c, augment.c, the image side of loader.c): PNGs of every color
 * type and depth and JPEGs written here (kiln's writers; JPEG through
 * libjpeg) and decoded back; broken files and their messages; the four
 * layouts (folders, multi-label, segmentation, points) with their targets
 * and classes and their errors; augmentation that moves masks and points
 * with the image; batches equal with and without the loader's thread;
 * resizing. Every file lives in a fresh temporary directory. */
#include <criterion/criterion.h>

#include "kiln/kiln.h"
#include "runtime/image.h"
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
    kiln_test_tmpdir(tmpdir, sizeof tmpdir, "images");
}

static void teardown(void)
{
    kiln_test_rmtree(tmpdir);
}

TestSuite(decode, .init = setup, .fini = teardown);
TestSuite(layout, .init = setup, .fini = teardown);
TestSuite(augment, .init = setup, .fini = teardown);

/* tmpdir/name, in one of eight rotating static buffers. */
static const char *tpath(const char *name)
{
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void mkdirs(const char *rel)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, rel);
    for (char *s = p + strlen(tmpdir) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

static void write_text(const char *rel, const char *text)
{
    FILE *f = fopen(tpath(rel), "w");
    cr_assert_not_null(f, "cannot create %s", rel);
    fputs(text, f);
    cr_assert_eq(fclose(f), 0);
}

static void ok(kiln_status st, char *err)
{
    cr_assert_eq(st, KILN_OK, "status %d: %s", st, err ? err : "(no message)");
    free(err);
}

static void png(const char *rel, const uint8_t *px, int w, int h, int c)
{
    char *err = NULL;
    ok(kiln_image_write_png(tpath(rel), px, w, h, c, &err), err);
}

/* A pattern image: pixel (r, c), channel k = (r * 16 + c * 5 + k * 60 + seed) % 256. */
static uint8_t *pattern(int w, int h, int ch, int seed)
{
    uint8_t *p = malloc((size_t)w * h * ch);
    cr_assert_not_null(p);
    for (int r = 0; r < h; r++)
        for (int c = 0; c < w; c++)
            for (int k = 0; k < ch; k++)
                p[((size_t)r * w + c) * ch + k] = (uint8_t)((r * 16 + c * 5 + k * 60 + seed) % 256);
    return p;
}

static void read_back(const char *rel, int want_c, uint8_t **px, int *w, int *h, int *c)
{
    char *err = NULL;
    ok(kiln_image_read(tpath(rel), want_c, px, w, h, c, &err), err);
}

/* ---- decoding ------------------------------------------------------------- */

Test(decode, png_8bit_every_channel_count)
{
    for (int ch = 1; ch <= 4; ch++) {
        uint8_t *p = pattern(7, 5, ch, ch);
        png("a.png", p, 7, 5, ch);
        uint8_t *q;
        int w, h, c;
        read_back("a.png", 0, &q, &w, &h, &c);
        cr_assert(w == 7 && h == 5 && c == ch, "%dx%dx%d", w, h, c);
        cr_assert(!memcmp(p, q, (size_t)7 * 5 * ch), "%d channels: pixels differ", ch);
        free(q);
        free(p);
    }
}

Test(decode, conversions)
{
    uint8_t rgba[2 * 4] = {255, 0, 0, 10, 10, 200, 30, 255};
    png("rgba.png", rgba, 2, 1, 4);
    uint8_t *q;
    int w, h, c;
    read_back("rgba.png", 1, &q, &w, &h, &c);
    cr_assert_eq(c, 1);
    /* ITU-R 601 luma, rounded, as PIL's convert("L") */
    cr_assert_eq(q[0], (299 * 255 + 500) / 1000);
    cr_assert_eq(q[1], (299 * 10 + 587 * 200 + 114 * 30 + 500) / 1000);
    free(q);
    read_back("rgba.png", 3, &q, &w, &h, &c);
    cr_assert(c == 3 && q[0] == 255 && q[1] == 0 && q[3] == 10 && q[5] == 30);
    free(q);
    uint8_t gray[2] = {7, 200};
    png("g.png", gray, 2, 1, 1);
    read_back("g.png", 4, &q, &w, &h, &c);
    cr_assert(c == 4 && q[0] == 7 && q[1] == 7 && q[2] == 7 && q[3] == 255 && q[4] == 200);
    free(q);
}

Test(decode, palette_expands_and_keeps_indices_for_masks)
{
    uint8_t pal[3 * 3] = {0, 0, 0, 128, 64, 0, 192, 128, 32};
    uint8_t ix[6] = {0, 1, 2, 2, 1, 0};
    char *err = NULL;
    ok(kiln_image_write_png_palette(tpath("p.png"), ix, 3, 2, pal, 3, &err), err);
    uint8_t *q;
    int w, h, c;
    read_back("p.png", 0, &q, &w, &h, &c);
    cr_assert(w == 3 && h == 2 && c == 3);
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 3; j++) cr_assert_eq(q[k * 3 + j], pal[ix[k] * 3 + j]);
    free(q);
    kiln_img m;
    ok(kiln_img_decode(tpath("p.png"), KILN_IMG_INDEX, &m, &err), err);
    cr_assert(m.c == 1 && !memcmp(m.px, ix, 6), "palette indices kept as class ids");
    kiln_img_free(&m);
    /* a gray mask: levels as they are */
    uint8_t lv[4] = {0, 3, 1, 2};
    png("m.png", lv, 2, 2, 1);
    ok(kiln_img_decode(tpath("m.png"), KILN_IMG_INDEX, &m, &err), err);
    cr_assert(m.c == 1 && !memcmp(m.px, lv, 4));
    kiln_img_free(&m);
    /* an RGB image with colours cannot be a mask */
    uint8_t rgb[6] = {1, 1, 1, 9, 0, 0};
    png("rgb.png", rgb, 2, 1, 3);
    kiln_status st = kiln_img_decode(tpath("rgb.png"), KILN_IMG_INDEX, &m, &err);
    cr_assert_eq(st, KILN_ERR_UNSUPPORTED);
    cr_assert(strstr(err, tpath("rgb.png")) && strstr(err, "gray or palette"), "%s", err);
    free(err);
}

Test(decode, png_16bit_rounds_to_8)
{
    uint16_t px[4] = {0, 65535, 257 * 100, 257 * 100 + 128};
    char *err = NULL;
    ok(kiln_png_write(tpath("g16.png"), px, 4, 1, 1, 16, NULL, 0, &err), err);
    uint8_t *q;
    int w, h, c;
    read_back("g16.png", 0, &q, &w, &h, &c);
    cr_assert(w == 4 && c == 1);
    cr_assert(q[0] == 0 && q[1] == 255 && q[2] == 100 && q[3] == 100, "%d %d %d %d", q[0], q[1],
              q[2], q[3]);
    free(q);
    uint16_t rgb[3 * 2] = {65535, 0, 257 * 7, 0, 257 * 200, 65535};
    ok(kiln_png_write(tpath("c16.png"), rgb, 2, 1, 3, 16, NULL, 0, &err), err);
    read_back("c16.png", 0, &q, &w, &h, &c);
    cr_assert(c == 3 && q[0] == 255 && q[1] == 0 && q[2] == 7 && q[4] == 200 && q[5] == 255);
    free(q);
    /* a 16-bit gray mask keeps its levels, up to 255 */
    uint16_t lv[2] = {3, 300};
    ok(kiln_png_write(tpath("m16.png"), lv, 2, 1, 1, 16, NULL, 0, &err), err);
    kiln_img m;
    cr_assert_eq(kiln_img_decode(tpath("m16.png"), KILN_IMG_INDEX, &m, &err),
                 KILN_ERR_UNSUPPORTED);
    cr_assert(strstr(err, "class id 300"), "%s", err);
    free(err);
}

Test(decode, jpeg_gray_and_rgb)
{
    /* flat colours survive JPEG's loss within a few levels */
    uint8_t g[16 * 16], rgb[16 * 16 * 3];
    for (int k = 0; k < 256; k++) {
        g[k] = 90;
        rgb[3 * k] = 200, rgb[3 * k + 1] = 40, rgb[3 * k + 2] = 120;
    }
    char *err = NULL;
    ok(kiln_image_write_jpeg(tpath("g.jpg"), g, 16, 16, 1, 95, &err), err);
    ok(kiln_image_write_jpeg(tpath("c.jpeg"), rgb, 16, 16, 3, 95, &err), err);
    uint8_t *q;
    int w, h, c;
    read_back("g.jpg", 0, &q, &w, &h, &c);
    cr_assert(w == 16 && h == 16 && c == 1);
    for (int k = 0; k < 256; k++) cr_assert(abs(q[k] - 90) <= 2, "gray %d", q[k]);
    free(q);
    read_back("c.jpeg", 0, &q, &w, &h, &c);
    cr_assert(c == 3);
    for (int k = 0; k < 256; k++)
        cr_assert(abs(q[3 * k] - 200) <= 4 && abs(q[3 * k + 1] - 40) <= 4 &&
                      abs(q[3 * k + 2] - 120) <= 4,
                  "rgb %d %d %d", q[3 * k], q[3 * k + 1], q[3 * k + 2]);
    free(q);
}

/* Copies the first n bytes of a file to another. */
static void truncate_copy(const char *from, const char *to, long keep)
{
    FILE *f = fopen(tpath(from), "rb");
    cr_assert_not_null(f);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert((long)n > keep);
    f = fopen(tpath(to), "wb");
    fwrite(buf, 1, (size_t)keep, f);
    fclose(f);
}

static void want_error(const char *rel, kiln_status want, const char *what)
{
    uint8_t *q = (uint8_t *)1;
    int w, h, c;
    char *err = NULL;
    kiln_status st = kiln_image_read(tpath(rel), 0, &q, &w, &h, &c, &err);
    cr_assert_eq(st, want, "%s: status %d: %s", rel, st, err ? err : "");
    cr_assert_null(q);
    cr_assert_not_null(err);
    cr_assert(!strncmp(err, tpath(rel), strlen(tpath(rel))), "names the file: %s", err);
    cr_assert(strstr(err, what), "%s: wanted '%s' in: %s", rel, what, err);
    free(err);
}

Test(decode, broken_files_name_themselves)
{
    uint8_t *p = pattern(32, 32, 3, 0);
    png("ok.png", p, 32, 32, 3);
    char *err = NULL;
    ok(kiln_image_write_jpeg(tpath("ok.jpg"), p, 32, 32, 3, 90, &err), err);
    free(p);
    truncate_copy("ok.png", "cut.png", 100);
    truncate_copy("ok.jpg", "cut.jpg", 300);
    truncate_copy("ok.png", "sig.png", 5);
    write_text("text.png", "hello, not an image\n");
    write_text("empty.jpg", "");
    /* a flipped byte inside the first chunk: a CRC error */
    FILE *f = fopen(tpath("ok.png"), "rb");
    uint8_t buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    buf[20] ^= 0xff;
    f = fopen(tpath("crc.png"), "wb");
    fwrite(buf, 1, n, f);
    fclose(f);

    want_error("cut.png", KILN_ERR_CORRUPT, "truncated PNG");
    want_error("cut.jpg", KILN_ERR_CORRUPT, "truncated JPEG");
    want_error("sig.png", KILN_ERR_CORRUPT, "truncated PNG");
    want_error("text.png", KILN_ERR_CORRUPT, "not an image");
    want_error("empty.jpg", KILN_ERR_CORRUPT, "empty file");
    want_error("crc.png", KILN_ERR_CORRUPT, "corrupt PNG");
    want_error("missing.png", KILN_ERR_IO, "cannot open");
}

Test(decode, writer_rejects_bad_arguments)
{
    uint8_t px[4] = {0};
    char *err = NULL;
    cr_assert_eq(kiln_image_write_png(tpath("x.png"), px, 2, 2, 5, &err), KILN_ERR_INVALID);
    free(err);
    cr_assert_eq(kiln_image_write_png(tpath("no/such/dir/x.png"), px, 2, 2, 1, &err), KILN_ERR_IO);
    cr_assert(strstr(err, "cannot create"), "%s", err);
    free(err);
    cr_assert_eq(kiln_image_write_jpeg(tpath("x.jpg"), px, 2, 2, 2, 90, &err), KILN_ERR_INVALID);
    free(err);
    cr_assert_eq(access(tpath("x.png"), F_OK), -1, "nothing left behind");
}

/* ---- layouts -------------------------------------------------------------- */

static kiln_dataset *open_split(const kiln_image_opts *o, int valid)
{
    kiln_dataset *d = NULL;
    char *err = NULL;
    ok(kiln_dataset_open_images(tmpdir, o, valid, &d, &err), err);
    cr_assert_not_null(d);
    return d;
}

static void want_open_error(kiln_status want, const char *file, const char *what)
{
    kiln_dataset *d = (kiln_dataset *)1;
    char *err = NULL;
    kiln_status st = kiln_dataset_open_images(tmpdir, NULL, 0, &d, &err);
    cr_assert_eq(st, want, "status %d: %s", st, err ? err : "");
    cr_assert_null(d);
    cr_assert(err && strstr(err, file), "names %s: %s", file, err);
    cr_assert(strstr(err, what), "wanted '%s' in: %s", what, err);
    free(err);
}

static void solid_png(const char *rel, int w, int h, int c, uint8_t v)
{
    uint8_t *p = malloc((size_t)w * h * c);
    memset(p, v, (size_t)w * h * c);
    png(rel, p, w, h, c);
    free(p);
}

Test(layout, folders)
{
    mkdirs("train/dog");
    mkdirs("train/cat");
    mkdirs("valid/cat");
    mkdirs("valid/eel"); /* only in valid: still a class */
    solid_png("train/dog/b.png", 4, 3, 1, 10);
    solid_png("train/dog/a.png", 4, 3, 1, 20);
    solid_png("train/cat/z.png", 4, 3, 1, 30);
    char *err = NULL;
    uint8_t px[12 * 3];
    memset(px, 40, sizeof px);
    ok(kiln_image_write_jpeg(tpath("valid/cat/q.jpg"), px, 4, 3, 3, 95, &err), err);
    solid_png("valid/eel/e.png", 8, 6, 1, 50); /* another size: resized */
    write_text("train/dog/notes.txt", "not an image: skipped");
    cr_assert_eq(kiln_data_detect(tmpdir), KILN_DATA_FOLDERS);

    kiln_dataset *tr = open_split(NULL, 0), *va = open_split(NULL, 1);
    cr_assert_eq(kiln_dataset_kind(tr), KILN_DATA_FOLDERS);
    int nc;
    const char *const *cls = kiln_dataset_classes(tr, &nc);
    cr_assert(nc == 3 && !strcmp(cls[0], "cat") && !strcmp(cls[1], "dog") &&
              !strcmp(cls[2], "eel"));
    cls = kiln_dataset_classes(va, &nc);
    cr_assert(nc == 3 && !strcmp(cls[2], "eel"), "both splits: the same classes");
    cr_assert_eq(kiln_dataset_len(tr), 3);
    cr_assert_eq(kiln_dataset_len(va), 2);
    int xr, yr;
    int64_t xs[4], ys[4];
    kiln_dtype yt;
    kiln_dataset_shapes(va, &xr, xs, &yr, ys, &yt);
    cr_assert(xr == 3 && xs[0] == 1 && xs[1] == 3 && xs[2] == 4, "gray 3x4: the first image");
    cr_assert(yr == 0 && yt == KILN_I32);
    /* order: class, then file name */
    cr_assert_str_eq(kiln_dataset_sample_name(tr, 0), "train/cat/z.png");
    cr_assert_str_eq(kiln_dataset_sample_name(tr, 1), "train/dog/a.png");
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(tr, 3, 0, 0, 0, &l), KILN_OK);
    float x[3 * 12];
    int32_t y[3];
    int64_t n;
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 3);
    cr_assert(y[0] == 0 && y[1] == 1 && y[2] == 1);
    cr_assert_float_eq(x[0], 30 / 255.0f, 1e-6);
    cr_assert_float_eq(x[12], 20 / 255.0f, 1e-6);
    cr_assert_float_eq(x[24 + 11], 10 / 255.0f, 1e-6);
    kiln_loader_free(l);
    cr_assert_eq(kiln_loader_new(va, 2, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 2);
    cr_assert(y[0] == 0 && y[1] == 2);
    cr_assert(fabsf(x[0] - 40 / 255.0f) < 3 / 255.0f, "the RGB JPEG as gray: %f", x[0]);
    cr_assert_float_eq(x[12 + 5], 50 / 255.0f, 1e-6, "8x6 resized to 4x3");
    kiln_loader_free(l);
    kiln_dataset_free(tr);
    kiln_dataset_free(va);
}

Test(layout, multilabel)
{
    mkdirs("images");
    solid_png("images/c00000.png", 5, 5, 3, 100);
    solid_png("images/c00001.png", 5, 5, 3, 110);
    uint8_t px[25 * 3];
    memset(px, 120, sizeof px);
    char *err = NULL;
    ok(kiln_image_write_jpeg(tpath("images/c00002.jpg"), px, 5, 5, 3, 95, &err), err);
    solid_png("images/c00017.png", 5, 5, 1, 130); /* gray among RGB: converted */
    write_text("labels.csv", "image_name,tags\r\nc00000,water\r\nc00001,bag shirt\r\n"
                             "c00002,\r\nc00017,shirt  water\r\n");
    write_text("valid.txt", "c00001\nc00017.png\n\n");
    cr_assert_eq(kiln_data_detect(tmpdir), KILN_DATA_MULTILABEL);
    kiln_dataset *tr = open_split(NULL, 0), *va = open_split(NULL, 1);
    int nc;
    const char *const *cls = kiln_dataset_classes(tr, &nc);
    cr_assert(nc == 3 && !strcmp(cls[0], "bag") && !strcmp(cls[1], "shirt") &&
              !strcmp(cls[2], "water"));
    int xr, yr;
    int64_t xs[4], ys[4];
    kiln_dtype yt;
    kiln_dataset_shapes(tr, &xr, xs, &yr, ys, &yt);
    cr_assert(xs[0] == 3 && xs[1] == 5 && yr == 1 && ys[0] == 3 && yt == KILN_F32);
    cr_assert(kiln_dataset_len(tr) == 2 && kiln_dataset_len(va) == 2);
    kiln_loader *l;
    float x[2 * 75], y[2 * 3];
    int64_t n;
    cr_assert_eq(kiln_loader_new(tr, 2, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 2);
    static const float want_tr[6] = {0, 0, 1, 0, 0, 0};
    for (int k = 0; k < 6; k++) cr_assert_float_eq(y[k], want_tr[k], 0, "train y[%d]", k);
    kiln_loader_free(l);
    cr_assert_eq(kiln_loader_new(va, 2, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 2);
    static const float want_va[6] = {1, 1, 0, 0, 1, 1};
    for (int k = 0; k < 6; k++) cr_assert_float_eq(y[k], want_va[k], 0, "valid y[%d]", k);
    for (int k = 0; k < 3; k++)
        cr_assert_float_eq(x[75 + k * 25], 130 / 255.0f, 1e-6, "gray made RGB");
    kiln_loader_free(l);
    kiln_dataset_free(tr);
    kiln_dataset_free(va);
}

Test(layout, segmentation)
{
    mkdirs("images");
    mkdirs("labels");
    write_text("codes.txt", "Void\nRoad\nSky\n");
    uint8_t m0[4 * 4], m1[4 * 4];
    for (int k = 0; k < 16; k++) {
        m0[k] = (uint8_t)(k % 3);
        m1[k] = (uint8_t)(k / 8 + 1);
    }
    solid_png("images/a.png", 4, 4, 3, 60);
    solid_png("images/b.png", 4, 4, 3, 70);
    png("labels/a_P.png", m0, 4, 4, 1);
    uint8_t pal[9] = {0, 0, 0, 128, 128, 128, 0, 0, 255};
    char *err = NULL;
    ok(kiln_image_write_png_palette(tpath("labels/b_P.png"), m1, 4, 4, pal, 3, &err), err);
    write_text("valid.txt", "b.png\n");
    cr_assert_eq(kiln_data_detect(tmpdir), KILN_DATA_SEGMENTATION);
    kiln_dataset *tr = open_split(NULL, 0), *va = open_split(NULL, 1);
    int nc;
    const char *const *cls = kiln_dataset_classes(va, &nc);
    cr_assert(nc == 3 && !strcmp(cls[0], "Void") && !strcmp(cls[2], "Sky"), "codes.txt order");
    int xr, yr;
    int64_t xs[4], ys[4];
    kiln_dtype yt;
    kiln_dataset_shapes(tr, &xr, xs, &yr, ys, &yt);
    cr_assert(yr == 2 && ys[0] == 4 && ys[1] == 4 && yt == KILN_I32);
    kiln_loader *l;
    float x[48];
    int32_t y[16];
    int64_t n;
    cr_assert_eq(kiln_loader_new(tr, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 1);
    for (int k = 0; k < 16; k++) cr_assert_eq(y[k], m0[k]);
    kiln_loader_free(l);
    cr_assert_eq(kiln_loader_new(va, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 1);
    for (int k = 0; k < 16; k++) cr_assert_eq(y[k], m1[k], "palette indices are class ids");
    /* served at 2x2: masks nearest */
    cr_assert_eq(kiln_loader_set_size(l, 2, 2), KILN_OK);
    kiln_loader_shapes(l, &xr, xs, &yr, ys);
    cr_assert(xs[1] == 2 && xs[2] == 2 && ys[0] == 2 && ys[1] == 2);
    kiln_loader_start(l, 0);
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 1);
    cr_assert(y[0] == 1 && y[1] == 1 && y[2] == 2 && y[3] == 2, "%d %d %d %d", y[0], y[1], y[2],
              y[3]);
    kiln_loader_free(l);
    kiln_dataset_free(tr);
    kiln_dataset_free(va);

    /* a class past codes.txt */
    m0[5] = 3;
    png("labels/a_P.png", m0, 4, 4, 1);
    want_open_error(KILN_ERR_CORRUPT, "labels/a_P.png", "has class 3, but codes.txt names 3");
    remove(tpath("labels/a_P.png"));
    want_open_error(KILN_ERR_NOT_FOUND, "labels/a_P.png", "missing");
}

Test(layout, points)
{
    mkdirs("images");
    solid_png("images/p0.png", 8, 4, 1, 1);
    solid_png("images/p1.png", 16, 8, 1, 2); /* twice the size: the point scales */
    write_text("points.csv", "image_name,x,y\np0,2,1\np1, 12 , 6\n");
    write_text("valid.txt", "p1\n");
    cr_assert_eq(kiln_data_detect(tmpdir), KILN_DATA_POINTS);
    kiln_dataset *tr = open_split(NULL, 0), *va = open_split(NULL, 1);
    cr_assert_null(kiln_dataset_classes(tr, NULL));
    kiln_loader *l;
    float x[32], y[2];
    int64_t n;
    cr_assert_eq(kiln_loader_new(tr, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n));
    /* (y, x): y = 1 / 4 * 2 - 1, x = 2 / 8 * 2 - 1 */
    cr_assert_float_eq(y[0], -0.5f, 1e-6);
    cr_assert_float_eq(y[1], -0.5f, 1e-6);
    kiln_loader_free(l);
    cr_assert_eq(kiln_loader_new(va, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, y, &n));
    cr_assert_float_eq(y[0], 0.5f, 1e-6);
    cr_assert_float_eq(y[1], 0.5f, 1e-6);
    kiln_loader_free(l);
    kiln_dataset_free(tr);
    kiln_dataset_free(va);
}

Test(layout, malformed_files)
{
    mkdirs("images");
    solid_png("images/a.png", 4, 4, 1, 1);
    write_text("labels.csv", "name,tag\na,x\n");
    write_text("valid.txt", "");
    want_open_error(KILN_ERR_CORRUPT, "labels.csv:1", "header must be `image_name,tags`");
    write_text("labels.csv", "image_name,tags\na,x\nb,y\n");
    want_open_error(KILN_ERR_NOT_FOUND, "labels.csv:3", "no image for 'b'");
    write_text("labels.csv", "image_name,tags\na,x\na,y\n");
    want_open_error(KILN_ERR_CORRUPT, "labels.csv:3", "listed again (first on line 2)");
    write_text("labels.csv", "image_name,tags\na,x\n");
    write_text("valid.txt", "a\nzz\n");
    want_open_error(KILN_ERR_CORRUPT, "valid.txt:2", "'zz' is not an image of the set");
    remove(tpath("valid.txt"));
    want_open_error(KILN_ERR_NOT_FOUND, "valid.txt", "list the validation images");
    write_text("valid.txt", "");
    write_text("images/a.png", "garbage");
    want_open_error(KILN_ERR_CORRUPT, "images/a.png", "not an image");
    remove(tpath("labels.csv"));
    write_text("points.csv", "image_name,x,y\na,1\n");
    want_open_error(KILN_ERR_CORRUPT, "points.csv:2", "expected 3 fields");
    write_text("points.csv", "image_name,x,y\na,1,zz\n");
    want_open_error(KILN_ERR_CORRUPT, "points.csv:2", "must be numbers");
    remove(tpath("points.csv"));
    want_open_error(KILN_ERR_NOT_FOUND, tmpdir, "not an image data set");
}

Test(layout, head_stats_normalize)
{
    mkdirs("train/a");
    mkdirs("valid/a");
    solid_png("train/a/0.png", 2, 2, 1, 0);
    solid_png("train/a/1.png", 2, 2, 1, 255);
    solid_png("valid/a/0.png", 2, 2, 1, 51);
    kiln_dataset *tr = open_split(NULL, 0);
    float mean, std;
    kiln_dataset_stats(tr, &mean, &std);
    cr_assert_float_eq(mean, 0.5f, 1e-6);
    cr_assert_float_eq(std, 0.5f, 1e-6);
    kiln_dataset_normalize(tr, mean, std);
    kiln_dataset_stats(tr, &mean, &std);
    cr_assert_float_eq(mean, 0.0f, 1e-6);
    cr_assert_float_eq(std, 1.0f, 1e-6);
    kiln_dataset *h = NULL;
    cr_assert_eq(kiln_dataset_head(tr, 1, &h), KILN_OK);
    cr_assert_eq(kiln_dataset_len(h), 1);
    cr_assert_str_eq(kiln_dataset_sample_name(h, 0), "train/a/0.png");
    kiln_loader *l;
    float x[4];
    int32_t y;
    int64_t n;
    cr_assert_eq(kiln_loader_new(h, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert(kiln_loader_next(l, x, &y, &n));
    cr_assert_float_eq(x[0], -1.0f, 1e-6, "(0 - 0.5) / 0.5");
    kiln_loader_free(l);
    kiln_dataset_free(h);
    kiln_dataset_free(tr);
}

Test(layout, size_option_and_progressive_resizing)
{
    mkdirs("train/a");
    mkdirs("valid/a");
    /* left half 0, right half 200 */
    uint8_t p[32 * 32];
    for (int k = 0; k < 32 * 32; k++) p[k] = (k % 32) < 16 ? 0 : 200;
    png("train/a/0.png", p, 32, 32, 1);
    png("valid/a/0.png", p, 32, 32, 1);
    kiln_image_opts o = kiln_image_defaults();
    o.height = o.width = 16;
    kiln_dataset *tr = open_split(&o, 0);
    int64_t xs[4];
    kiln_dataset_shapes(tr, NULL, xs, NULL, NULL, NULL);
    cr_assert(xs[1] == 16 && xs[2] == 16);
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(tr, 1, 0, 0, 0, &l), KILN_OK);
    float x[64 * 64];
    int32_t y;
    int64_t n;
    for (int size = 8; size <= 64; size *= 2) {
        cr_assert_eq(kiln_loader_set_size(l, size, size), KILN_OK);
        kiln_loader_start(l, 0);
        cr_assert(kiln_loader_next(l, x, &y, &n) && n == 1);
        /* the edge stays in the middle */
        cr_assert_float_eq(x[0], 0.0f, 1e-6, "size %d", size);
        cr_assert_float_eq(x[size - 1], 200 / 255.0f, 1e-6, "size %d", size);
        cr_assert(x[size / 4] < 0.1f && x[3 * size / 4] > 0.6f, "size %d", size);
    }
    kiln_loader_free(l);
    /* not an image data set: no sizes */
    float ax[4] = {0};
    int32_t ay[1] = {0};
    int64_t as[2] = {1, 4}, ys[1] = {1};
    kiln_dataset *arr;
    char *err = NULL;
    ok(kiln_dataset_from_arrays(ax, 2, as, ay, KILN_I32, 1, ys, &arr, &err), err);
    cr_assert_eq(kiln_loader_new(arr, 1, 0, 0, 0, &l), KILN_OK);
    cr_assert_eq(kiln_loader_set_size(l, 2, 2), KILN_ERR_UNSUPPORTED);
    kiln_loader_free(l);
    kiln_dataset_free(arr);
    kiln_dataset_free(tr);
}

/* ---- augmentation --------------------------------------------------------- */

/* A points set of n 16x16 gray images, each black but a 2x2 bright block at
 * a place of its own (4 pixels or more from the borders, so that no
 * reflection of it comes into view), the point at the block's centre. With masks: a
 * segmentation set whose mask is 1 on the block. */
static void bright_blocks(int n, int seg)
{
    mkdirs("images");
    if (seg) mkdirs("labels");
    FILE *csv = seg ? NULL : fopen(tpath("points.csv"), "w");
    if (csv) fputs("image_name,x,y\n", csv);
    for (int i = 0; i < n; i++) {
        uint8_t p[16 * 16] = {0}, m[16 * 16] = {0};
        int r = 4 + (i * 5) % 7, c = 4 + (i * 3) % 7;
        for (int dr = 0; dr < 2; dr++)
            for (int dc = 0; dc < 2; dc++) {
                p[(r + dr) * 16 + c + dc] = 255;
                m[(r + dr) * 16 + c + dc] = 1;
            }
        char name[64];
        snprintf(name, sizeof name, "images/s%02d.png", i);
        png(name, p, 16, 16, 1);
        if (seg) {
            snprintf(name, sizeof name, "labels/s%02d_P.png", i);
            png(name, m, 16, 16, 1);
        } else {
            fprintf(csv, "s%02d,%d,%d\n", i, c + 1, r + 1); /* the block's centre */
        }
    }
    if (csv) fclose(csv);
    if (seg) write_text("codes.txt", "void\nblock\n");
    write_text("valid.txt", "s00\n");
}

/* The brightness-weighted centre (row, col) of image i of a batch. */
static void centroid(const float *x, int i, int h, int w, double *r, double *c)
{
    double s = 0, sr = 0, sc = 0;
    for (int a = 0; a < h; a++)
        for (int b = 0; b < w; b++) {
            double v = x[(size_t)i * h * w + a * w + b];
            s += v;
            sr += v * (a + 0.5);
            sc += v * (b + 0.5);
        }
    cr_assert(s > 0, "image %d went dark", i);
    *r = sr / s;
    *c = sc / s;
}

Test(augment, flip_moves_point_with_pixel)
{
    bright_blocks(8, 0);
    kiln_image_opts o = kiln_image_defaults();
    o.augment = 1;
    memset(&o.aug, 0, sizeof o.aug);
    o.aug.p_flip = 1; /* every sample flipped, nothing else */
    kiln_dataset *tr = open_split(&o, 0);
    kiln_loader *l, *plain;
    cr_assert_eq(kiln_loader_new(tr, 7, 0, 0, 5, &l), KILN_OK);
    cr_assert_eq(kiln_loader_new(tr, 7, 0, 0, 5, &plain), KILN_OK);
    kiln_loader_set_augment(plain, 0);
    float x[7 * 256], px[7 * 256], y[14], py[14];
    int64_t n;
    cr_assert(kiln_loader_next(l, x, y, &n) && n == 7);
    cr_assert(kiln_loader_next(plain, px, py, &n) && n == 7);
    for (int i = 0; i < 7; i++) {
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++)
                cr_assert_float_eq(x[i * 256 + r * 16 + c], px[i * 256 + r * 16 + 15 - c], 1e-6,
                                   "mirrored pixel");
        cr_assert_float_eq(y[2 * i], py[2 * i], 1e-6, "y stays");
        cr_assert_float_eq(y[2 * i + 1], -py[2 * i + 1], 1e-6, "x mirrors");
        /* and the point is on the bright block */
        double r, c;
        centroid(x, i, 16, 16, &r, &c);
        cr_assert_float_eq((y[2 * i] + 1) * 8, r, 1e-4);
        cr_assert_float_eq((y[2 * i + 1] + 1) * 8, c, 1e-4);
    }
    kiln_loader_free(l);
    kiln_loader_free(plain);
    kiln_dataset_free(tr);
}

Test(augment, every_transform_keeps_point_on_the_block)
{
    bright_blocks(12, 0);
    kiln_image_opts o = kiln_image_defaults();
    o.augment = 1;
    o.aug.p_flip = o.aug.p_crop = o.aug.p_rotate = o.aug.p_zoom = 1;
    o.aug.pad = 2;
    o.aug.max_rotate = 10;
    o.aug.max_zoom = 1.2;
    kiln_dataset *tr = open_split(&o, 0);
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(tr, 11, 1, 0, 3, &l), KILN_OK);
    float x[11 * 256], y[22];
    int64_t n;
    for (int e = 0; e < 3; e++) {
        kiln_loader_start(l, e);
        cr_assert(kiln_loader_next(l, x, y, &n) && n == 11);
        for (int i = 0; i < 11; i++) {
            double r, c;
            centroid(x, i, 16, 16, &r, &c);
            double pr = (y[2 * i] + 1) * 8, pc = (y[2 * i + 1] + 1) * 8;
            cr_assert(fabs(pr - r) < 0.35 && fabs(pc - c) < 0.35,
                      "epoch %d sample %d: point (%.2f, %.2f), block at (%.2f, %.2f)", e, i, pr,
                      pc, r, c);
        }
    }
    kiln_loader_free(l);
    kiln_dataset_free(tr);
}

Test(augment, mask_moves_with_image)
{
    bright_blocks(12, 1);
    kiln_image_opts o = kiln_image_defaults();
    o.augment = 1;
    o.aug.p_flip = o.aug.p_crop = 0.5;
    o.aug.p_rotate = o.aug.p_zoom = 0; /* whole-pixel moves: exact */
    kiln_dataset *tr = open_split(&o, 0);
    kiln_loader *l;
    cr_assert_eq(kiln_loader_new(tr, 11, 1, 0, 9, &l), KILN_OK);
    float x[11 * 256];
    int32_t y[11 * 256];
    int64_t n;
    int moved = 0;
    for (int e = 0; e < 4; e++) {
        kiln_loader_start(l, e);
        cr_assert(kiln_loader_next(l, x, y, &n) && n == 11);
        for (int k = 0; k < 11 * 256; k++)
            cr_assert_eq(y[k], x[k] > 0.5f, "epoch %d pixel %d: mask %d, image %f", e, k, y[k],
                         x[k]);
    }
    /* and augmentation did something: some sample differs from its plain self */
    kiln_loader_set_augment(l, 0);
    float px[11 * 256];
    kiln_loader_start(l, 3);
    cr_assert(kiln_loader_next(l, px, y, &n));
    for (int k = 0; k < 11 * 256; k++) moved += px[k] != x[k];
    cr_assert(moved > 0);
    kiln_loader_free(l);
    kiln_dataset_free(tr);
}

Test(augment, same_seed_same_batches_with_and_without_thread)
{
    bright_blocks(20, 0);
    kiln_image_opts o = kiln_image_defaults();
    o.augment = 1;
    o.aug.p_flip = o.aug.p_crop = o.aug.p_rotate = o.aug.p_zoom = 0.5;
    kiln_dataset *tr = open_split(&o, 0);
    kiln_loader *a, *b, *c;
    cr_assert_eq(kiln_loader_new(tr, 4, 1, 1, 77, &a), KILN_OK);
    setenv("KILN_LOADER_THREAD", "0", 1);
    cr_assert_eq(kiln_loader_new(tr, 4, 1, 1, 77, &b), KILN_OK);
    unsetenv("KILN_LOADER_THREAD");
    cr_assert_eq(kiln_loader_new(tr, 4, 1, 1, 78, &c), KILN_OK);
    float xa[4 * 256], xb[4 * 256], xc[4 * 256], ya[8], yb[8], yc[8];
    int64_t na, nb, nc;
    int differ = 0;
    for (int e = 0; e < 3; e++) {
        kiln_loader_start(a, e);
        kiln_loader_start(b, e);
        kiln_loader_start(c, e);
        if (e == 1) { /* a size change mid-run, on both */
            cr_assert_eq(kiln_loader_set_size(a, 12, 12), KILN_OK);
            cr_assert_eq(kiln_loader_set_size(b, 12, 12), KILN_OK);
            cr_assert_eq(kiln_loader_set_size(c, 12, 12), KILN_OK);
        }
        while (kiln_loader_next(a, xa, ya, &na)) {
            cr_assert(kiln_loader_next(b, xb, yb, &nb));
            cr_assert(kiln_loader_next(c, xc, yc, &nc));
            cr_assert_eq(na, nb);
            cr_assert(!memcmp(xa, xb, sizeof xa) && !memcmp(ya, yb, sizeof ya),
                      "epoch %d: thread and no thread differ", e);
            differ += memcmp(xa, xc, sizeof xa) != 0;
        }
        cr_assert(!kiln_loader_next(b, xb, yb, &nb));
    }
    cr_assert(differ > 0, "another seed, other batches");
    kiln_loader_free(a);
    kiln_loader_free(b);
    kiln_loader_free(c);
    kiln_dataset_free(tr);
}

Test(augment, validation_split_is_not_augmented)
{
    bright_blocks(4, 0);
    kiln_image_opts o = kiln_image_defaults();
    o.augment = 1;
    o.aug.p_flip = 1;
    kiln_image_opts plain = kiln_image_defaults();
    kiln_dataset *va = open_split(&o, 1), *vp = open_split(&plain, 1);
    kiln_loader *l, *m;
    cr_assert_eq(kiln_loader_new(va, 1, 0, 0, 1, &l), KILN_OK);
    cr_assert_eq(kiln_loader_new(vp, 1, 0, 0, 1, &m), KILN_OK);
    float x[256], px[256], y[2], py[2];
    int64_t n;
    cr_assert(kiln_loader_next(l, x, y, &n) && kiln_loader_next(m, px, py, &n));
    cr_assert(!memcmp(x, px, sizeof x) && !memcmp(y, py, sizeof y));
    kiln_loader_free(l);
    kiln_loader_free(m);
    kiln_dataset_free(va);
    kiln_dataset_free(vp);
}
