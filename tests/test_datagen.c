/* tests/test_datagen.c — `kiln data make` (runtime/datagen.c): the four
 * example data sets built from Fashion-MNIST, checked against what the
 * generator says it pasted (its record) and against Fashion-MNIST itself,
 * by decoding every written PNG with libpng.
 *
 * Covered: file counts and CSV headers; multilabel tags = the classes of the
 * items pasted, each cell = its item's pixels (or empty); segmentation masks
 * in [0, 10], equal to a repaint of the recorded items and lit exactly where
 * the image is; points = the bounding-box centre of the image's foreground,
 * inside the canvas; folders = the source images under their class; the
 * validation split drawn from the test set and disjoint from training;
 * byte-identical reruns; a non-empty OUTDIR, --force, a missing
 * Fashion-MNIST and bad options.
 *
 * Needs Fashion-MNIST where kiln looks by default; skipped without it. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <criterion/criterion.h>

#include "runtime/datagen.h"
#include "tests/testutil.h"

#include <dirent.h>
#include <ftw.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DATA_DIR "/usr/share/datasets/fashion-mnist"
#define SIDE 28

static char tmp[128]; /* this case's temporary folder */

static void setup(void)
{
    kiln_test_tmpdir(tmp, sizeof tmp, "datagen");
}
static void teardown(void)
{
    kiln_test_rmtree(tmp);
}

TestSuite(datagen, .init = setup, .fini = teardown, .timeout = 600);

#define NEED_DATA()                                                                                \
    do {                                                                                           \
        if (access(DATA_DIR "/train-images-idx3-ubyte.gz", R_OK) ||                                \
            access(DATA_DIR "/t10k-images-idx3-ubyte.gz", R_OK)) {                                 \
            teardown(); /* a skipped test's .fini does not run */                                  \
            cr_skip_test("Fashion-MNIST is not installed in " DATA_DIR);                           \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* ---- helpers ---- */

/* One Fashion-MNIST split as bytes and labels (malloc'd). */
typedef struct split {
    int64_t n;
    uint8_t *px;
    int32_t *label;
} split;

static split load(int train)
{
    kiln_dataset *d = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_dataset_fashion_mnist(NULL, train, &d, &err), KILN_OK, "%s", err);
    split s = {.n = kiln_dataset_len(d)};
    kiln_loader *l = NULL;
    cr_assert_eq(kiln_loader_new(d, s.n, 0, 0, 0, &l), KILN_OK);
    float *x = malloc((size_t)s.n * SIDE * SIDE * sizeof *x);
    s.px = malloc((size_t)s.n * SIDE * SIDE);
    s.label = malloc((size_t)s.n * sizeof *s.label);
    cr_assert(x && s.px && s.label);
    int64_t got = 0;
    kiln_loader_start(l, 0);
    cr_assert(kiln_loader_next(l, x, s.label, &got));
    cr_assert_eq(got, s.n);
    for (int64_t k = 0; k < s.n * SIDE * SIDE; k++)
        s.px[k] = (uint8_t)(x[k] * 255.0f + 0.5f);
    free(x);
    kiln_loader_free(l);
    kiln_dataset_free(d);
    return s;
}

static void split_free(split *s)
{
    free(s->px);
    free(s->label);
}

/* A gray 8-bit PNG decoded with libpng; *side gets its (square) side. */
static uint8_t *read_png(const char *path, int *side)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    cr_assert(png_image_begin_read_from_file(&im, path), "%s: %s", path, im.message);
    cr_assert_eq(im.format, PNG_FORMAT_GRAY, "%s: not 8-bit gray", path);
    cr_assert_eq(im.width, im.height, "%s: %ux%u", path, im.width, im.height);
    uint8_t *px = malloc(PNG_IMAGE_SIZE(im));
    cr_assert_not_null(px);
    cr_assert(png_image_finish_read(&im, NULL, px, 0, NULL), "%s: %s", path, im.message);
    *side = (int)im.width;
    return px;
}

static uint8_t *read_image(const char *dir, const char *sub, const char *name, int side)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s.png", dir, sub, name);
    int got = 0;
    uint8_t *px = read_png(p, &got);
    cr_assert_eq(got, side, "%s: side %d, want %d", p, got, side);
    return px;
}

/* The whole file (NUL-terminated, malloc'd); *len its length. */
static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static kiln_datagen_options opts(kiln_datagen_kind kind, const char *sub, int64_t nt, int64_t nv)
{
    static char out[4][256];
    static int turn;
    char *o = out[turn++ % 4];
    snprintf(o, sizeof out[0], "%s/%s", tmp, sub);
    return (kiln_datagen_options){
        .kind = kind, .outdir = o, .n_train = nt, .n_valid = nv, .seed = 7};
}

static kiln_datagen_result make(const kiln_datagen_options *o)
{
    kiln_datagen_result r;
    char *err = NULL;
    cr_assert_eq(kiln_datagen_make(o, true, &r, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_null(err);
    cr_assert_not_null(r.samples);
    cr_assert_eq(r.n_train, o->n_train);
    cr_assert_eq(r.n_valid, o->n_valid);
    return r;
}

/* valid.txt is the validation samples' names, in order; every sample's
 * items come from the split it belongs to (indices in range). */
static void check_split(const char *dir, const kiln_datagen_result *r, const split *train,
                        const split *test)
{
    char p[512];
    snprintf(p, sizeof p, "%s/valid.txt", dir);
    char *text = kiln_test_slurp(p, NULL), *line = text;
    int64_t total = r->n_train + r->n_valid;
    for (int64_t i = 0; i < total; i++) {
        const kiln_datagen_sample *s = &r->samples[i];
        cr_assert_eq(s->valid, i >= r->n_train, "%s: valid flag", s->name);
        cr_assert_geq(s->n_items, 1);
        const split *set = s->valid ? test : train;
        for (int k = 0; k < s->n_items; k++) {
            cr_assert(s->items[k].src >= 0 && s->items[k].src < set->n);
            cr_assert_eq(s->items[k].cls, set->label[s->items[k].src], "%s: class", s->name);
        }
        for (int64_t j = 0; j < i; j++)
            cr_assert_str_neq(s->name, r->samples[j].name, "two samples named %s", s->name);
        if (!s->valid) continue;
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "valid.txt ends before %s", s->name);
        *nl = 0;
        cr_assert_str_eq(line, s->name);
        line = nl + 1;
    }
    cr_assert_str_eq(line, "", "valid.txt has more names");
    free(text);
}

/* ---- multilabel ---- */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

Test(datagen, multilabel_tags_are_the_pasted_classes)
{
    NEED_DATA();
    split train = load(1), test = load(0);
    kiln_datagen_options o = opts(KILN_DATAGEN_MULTILABEL, "ml", 40, 20);
    kiln_datagen_result r = make(&o);
    cr_assert_eq(r.size, 56);
    char p[512];
    snprintf(p, sizeof p, "%s/images", o.outdir);
    cr_assert_eq(count_files(p), 60);
    cr_assert_eq(count_files(o.outdir), 3); /* images, labels.csv, valid.txt */
    check_split(o.outdir, &r, &train, &test);

    snprintf(p, sizeof p, "%s/labels.csv", o.outdir);
    char *csv = kiln_test_slurp(p, NULL), *line = csv;
    const char *header = "image_name,tags\n";
    cr_assert(!strncmp(csv, header, strlen(header)), "header: %.40s", csv);
    line += strlen(header);
    for (int64_t i = 0; i < 60; i++) {
        const kiln_datagen_sample *s = &r.samples[i];
        const split *set = s->valid ? &test : &train;
        /* the row: name, then the distinct codes of the items' true classes, sorted */
        const char *codes[4];
        int nc = 0;
        for (int k = 0; k < s->n_items; k++) {
            const char *c = kiln_fashion_codes[set->label[s->items[k].src]];
            bool dup = false;
            for (int j = 0; j < nc; j++)
                dup |= codes[j] == c;
            if (!dup) codes[nc++] = c;
        }
        qsort(codes, (size_t)nc, sizeof codes[0], by_name);
        char want[256];
        int w = snprintf(want, sizeof want, "%s,", s->name);
        for (int j = 0; j < nc; j++)
            w += snprintf(want + w, sizeof want - (size_t)w, "%s%s", j ? " " : "", codes[j]);
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl);
        *nl = 0;
        cr_assert_str_eq(line, want);
        line = nl + 1;

        /* the image: each cell is its item or black */
        uint8_t *img = read_image(o.outdir, "images", s->name, 56);
        for (int cell = 0; cell < 4; cell++) {
            int cx = (cell % 2) * SIDE, cy = (cell / 2) * SIDE;
            const uint8_t *item = NULL;
            for (int k = 0; k < s->n_items; k++)
                if (s->items[k].x == cx && s->items[k].y == cy) {
                    cr_assert_null(item, "%s: two items in a cell", s->name);
                    cr_assert_eq(s->items[k].w, SIDE);
                    item = set->px + (int64_t)s->items[k].src * SIDE * SIDE;
                }
            for (int v = 0; v < SIDE; v++)
                for (int u = 0; u < SIDE; u++)
                    cr_assert_eq(img[(cy + v) * 56 + cx + u], item ? item[v * SIDE + u] : 0,
                                 "%s: cell %d pixel (%d, %d)", s->name, cell, u, v);
        }
        free(img);
    }
    cr_assert_str_eq(line, "");
    free(csv);
    kiln_datagen_result_free(&r);
    split_free(&train);
    split_free(&test);
}

Test(datagen, multilabel_other_size_resizes_items_into_cells)
{
    NEED_DATA();
    kiln_datagen_options o = opts(KILN_DATAGEN_MULTILABEL, "ml", 10, 5);
    o.size = 80;
    kiln_datagen_result r = make(&o);
    cr_assert_eq(r.size, 80);
    for (int64_t i = 0; i < 15; i++) {
        const kiln_datagen_sample *s = &r.samples[i];
        uint8_t *img = read_image(o.outdir, "images", s->name, 80);
        for (int cell = 0; cell < 4; cell++) {
            int cx = (cell % 2) * 40, cy = (cell / 2) * 40, lit = 0;
            bool full = false;
            for (int k = 0; k < s->n_items; k++)
                full |= s->items[k].x == cx && s->items[k].y == cy && s->items[k].w == 40;
            for (int v = 0; v < 40; v++)
                for (int u = 0; u < 40; u++)
                    lit += img[(cy + v) * 80 + cx + u] != 0;
            cr_assert_eq(full, lit > 0, "%s: cell %d: %d lit pixels", s->name, cell, lit);
        }
        free(img);
    }
    kiln_datagen_result_free(&r);
}

/* ---- segmentation ---- */

Test(datagen, segmentation_masks_match_the_pasted_items)
{
    NEED_DATA();
    split train = load(1), test = load(0);
    kiln_datagen_options o = opts(KILN_DATAGEN_SEGMENTATION, "seg", 30, 10);
    kiln_datagen_result r = make(&o);
    const int n = r.size;
    cr_assert_eq(n, 64);
    char p[512];
    snprintf(p, sizeof p, "%s/images", o.outdir);
    cr_assert_eq(count_files(p), 40);
    snprintf(p, sizeof p, "%s/labels", o.outdir);
    cr_assert_eq(count_files(p), 40);
    cr_assert_eq(count_files(o.outdir), 4); /* images, labels, codes.txt, valid.txt */
    check_split(o.outdir, &r, &train, &test);
    snprintf(p, sizeof p, "%s/codes.txt", o.outdir);
    char *codes = kiln_test_slurp(p, NULL);
    cr_assert_str_eq(codes,
                     "background\ntshirt_top\ntrouser\npullover\ndress\ncoat\nsandal\nshirt\n"
                     "sneaker\nbag\nankle_boot\n");
    free(codes);

    uint8_t *want_img = malloc((size_t)n * n), *want_mask = malloc((size_t)n * n);
    cr_assert(want_img && want_mask);
    int seen[11] = {0};
    for (int64_t i = 0; i < 40; i++) {
        const kiln_datagen_sample *s = &r.samples[i];
        const split *set = s->valid ? &test : &train;
        /* repaint: each item's foreground, in order */
        memset(want_img, 0, (size_t)n * n);
        memset(want_mask, 0, (size_t)n * n);
        for (int k = 0; k < s->n_items; k++) {
            const kiln_datagen_item *it = &s->items[k];
            cr_assert(it->x >= 0 && it->y >= 0 && it->x + SIDE <= n && it->y + SIDE <= n);
            const uint8_t *px = set->px + (int64_t)it->src * SIDE * SIDE;
            for (int v = 0; v < SIDE; v++)
                for (int u = 0; u < SIDE; u++)
                    if (px[v * SIDE + u] * 10 > 255) { /* intensity > 0.1 */
                        want_img[(it->y + v) * n + it->x + u] = px[v * SIDE + u];
                        want_mask[(it->y + v) * n + it->x + u] = (uint8_t)(set->label[it->src] + 1);
                    }
        }
        uint8_t *img = read_image(o.outdir, "images", s->name, n);
        char mname[64];
        snprintf(mname, sizeof mname, "%s_P", s->name);
        uint8_t *mask = read_image(o.outdir, "labels", mname, n);
        for (int k = 0; k < n * n; k++) {
            cr_assert_leq(mask[k], 10, "%s: mask value %d", s->name, mask[k]);
            cr_assert_eq(mask[k] != 0, img[k] != 0, "%s: pixel %d: mask %d, image %d", s->name, k,
                         mask[k], img[k]);
            cr_assert_eq(mask[k], want_mask[k], "%s: mask pixel %d", s->name, k);
            cr_assert_eq(img[k], want_img[k], "%s: image pixel %d", s->name, k);
            seen[mask[k]]++;
        }
        free(img);
        free(mask);
    }
    cr_assert_gt(seen[0], 0);
    free(want_img);
    free(want_mask);
    kiln_datagen_result_free(&r);
    split_free(&train);
    split_free(&test);
}

/* ---- points ---- */

Test(datagen, points_are_the_centre_of_the_item)
{
    NEED_DATA();
    split train = load(1), test = load(0);
    kiln_datagen_options o = opts(KILN_DATAGEN_POINTS, "pts", 30, 10);
    kiln_datagen_result r = make(&o);
    const int n = r.size;
    cr_assert_eq(n, 64);
    char p[512];
    snprintf(p, sizeof p, "%s/images", o.outdir);
    cr_assert_eq(count_files(p), 40);
    cr_assert_eq(count_files(o.outdir), 3); /* images, points.csv, valid.txt */
    check_split(o.outdir, &r, &train, &test);
    snprintf(p, sizeof p, "%s/points.csv", o.outdir);
    char *csv = kiln_test_slurp(p, NULL), *line = csv;
    const char *header = "image_name,x,y\n";
    cr_assert(!strncmp(csv, header, strlen(header)), "header: %.40s", csv);
    line += strlen(header);
    for (int64_t i = 0; i < 40; i++) {
        const kiln_datagen_sample *s = &r.samples[i];
        char name[32];
        double x, y;
        int used = 0;
        cr_assert_eq(sscanf(line, "%31[^,],%lf,%lf\n%n", name, &x, &y, &used), 3, "row %s", line);
        line += used;
        cr_assert_str_eq(name, s->name);
        cr_assert_eq(x, s->px);
        cr_assert_eq(y, s->py);
        cr_assert(x > 0 && x < n && y > 0 && y < n, "%s: (%g, %g)", name, x, y);
        /* the item: one, scaled 0.6x to 1.4x, inside the canvas; nothing outside it */
        cr_assert_eq(s->n_items, 1);
        const kiln_datagen_item *it = &s->items[0];
        cr_assert(it->w == it->h && it->w >= 17 && it->w <= 39, "%s: side %d", name, it->w);
        cr_assert(it->x >= 0 && it->y >= 0 && it->x + it->w <= n && it->y + it->h <= n);
        uint8_t *img = read_image(o.outdir, "images", name, n);
        int x0 = n, x1 = -1, y0 = n, y1 = -1;
        for (int v = 0; v < n; v++)
            for (int u = 0; u < n; u++) {
                uint8_t b = img[v * n + u];
                bool inside = u >= it->x && u < it->x + it->w && v >= it->y && v < it->y + it->h;
                cr_assert(inside || b == 0, "%s: pixel (%d, %d) lit outside the item", name, u, v);
                if (b * 10 <= 255) continue;
                x0 = u < x0 ? u : x0;
                x1 = u > x1 ? u : x1;
                y0 = v < y0 ? v : y0;
                y1 = v > y1 ? v : y1;
            }
        cr_assert_geq(x1, 0, "%s: no foreground", name);
        /* in pixels from the image's edges: the box spans x0 .. x1 + 1 */
        cr_assert_eq(x, (x0 + x1 + 1) / 2.0, "%s: x %g, bounding box %d..%d", name, x, x0, x1);
        cr_assert_eq(y, (y0 + y1 + 1) / 2.0, "%s: y %g, bounding box %d..%d", name, y, y0, y1);
        free(img);
    }
    cr_assert_str_eq(line, "");
    free(csv);
    kiln_datagen_result_free(&r);
    split_free(&train);
    split_free(&test);
}

/* ---- folders ---- */

Test(datagen, folders_hold_the_source_images_by_class)
{
    NEED_DATA();
    split train = load(1), test = load(0);
    kiln_datagen_options o = opts(KILN_DATAGEN_FOLDERS, "fold", 100, 30);
    kiln_datagen_result r = make(&o);
    cr_assert_eq(r.files, 130);
    cr_assert_eq(count_files(o.outdir), 2); /* train, valid */
    int per_split[2] = {0, 0};
    for (int v = 0; v < 2; v++)
        for (int c = 0; c < KILN_FASHION_CLASSES; c++) {
            char p[512];
            snprintf(p, sizeof p, "%s/%s/%s", o.outdir, v ? "valid" : "train",
                     kiln_fashion_codes[c]);
            per_split[v] += count_files(p);
        }
    cr_assert_eq(per_split[0], 100);
    cr_assert_eq(per_split[1], 30);
    for (int64_t i = 0; i < 130; i++) {
        const kiln_datagen_sample *s = &r.samples[i];
        const split *set = s->valid ? &test : &train;
        /* the name tells the source: train<index> or test<index> */
        long idx = -1;
        const char *prefix = s->valid ? "test" : "train";
        cr_assert(!strncmp(s->name, prefix, strlen(prefix)), "%s", s->name);
        cr_assert_eq(sscanf(s->name + strlen(prefix), "%ld", &idx), 1);
        cr_assert_eq(idx, s->items[0].src);
        cr_assert(idx >= 0 && idx < set->n);
        char sub[64];
        snprintf(sub, sizeof sub, "%s/%s", s->valid ? "valid" : "train",
                 kiln_fashion_codes[set->label[idx]]);
        uint8_t *img = read_image(o.outdir, sub, s->name, SIDE);
        cr_assert_arr_eq(img, set->px + idx * SIDE * SIDE, SIDE * SIDE, "%s", s->name);
        free(img);
        for (int64_t j = 0; j < i; j++)
            cr_assert(r.samples[j].valid != s->valid || r.samples[j].items[0].src != idx,
                      "%s twice", s->name);
    }
    kiln_datagen_result_free(&r);
    split_free(&train);
    split_free(&test);
}

/* ---- determinism ---- */

static const char *cmp_other; /* the tree compared against */
static const char *cmp_root;
static int cmp_files;

static int cmp_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag != FTW_F) return 0;
    char other[1024];
    snprintf(other, sizeof other, "%s%s", cmp_other, path + strlen(cmp_root));
    size_t na, nb;
    char *a = kiln_test_slurp(path, &na), *b = kiln_test_slurp(other, &nb);
    cr_assert(na == nb && !memcmp(a, b, na), "%s and %s differ", path, other);
    free(a);
    free(b);
    cmp_files++;
    return 0;
}

/* Every file of tree a is in tree b with the same bytes; returns how many. */
static int same_files(const char *a, const char *b)
{
    cmp_root = a;
    cmp_other = b;
    cmp_files = 0;
    cr_assert_eq(nftw(a, cmp_entry, 16, FTW_PHYS), 0);
    return cmp_files;
}

Test(datagen, same_options_write_the_same_bytes)
{
    NEED_DATA();
    for (int k = 0; k <= KILN_DATAGEN_FOLDERS; k++) {
        kiln_datagen_options a = opts((kiln_datagen_kind)k, "a", 12, 6),
                             b = opts((kiln_datagen_kind)k, "b", 12, 6);
        kiln_datagen_result ra = make(&a), rb = make(&b);
        cr_assert_eq(ra.files, rb.files);
        int files = same_files(a.outdir, b.outdir);
        cr_assert_eq(files, ra.files, "%s: %d files compared", kiln_datagen_kind_name(k), files);
        cr_assert_eq(same_files(b.outdir, a.outdir), files);
        kiln_datagen_result_free(&ra);
        kiln_datagen_result_free(&rb);
        kiln_test_rmtree(a.outdir);
        kiln_test_rmtree(b.outdir);
    }
    /* another seed draws other collages; more samples keep the first ones */
    kiln_datagen_options a = opts(KILN_DATAGEN_MULTILABEL, "a", 12, 6),
                         b = opts(KILN_DATAGEN_MULTILABEL, "b", 12, 6),
                         c = opts(KILN_DATAGEN_MULTILABEL, "c", 20, 6);
    b.seed = 8;
    kiln_datagen_result ra = make(&a), rb = make(&b), rc = make(&c);
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/labels.csv", a.outdir);
    snprintf(pb, sizeof pb, "%s/labels.csv", b.outdir);
    char *ta = kiln_test_slurp(pa, NULL), *tb = kiln_test_slurp(pb, NULL);
    cr_assert_str_neq(ta, tb, "seeds 7 and 8 gave the same tags");
    free(ta);
    free(tb);
    for (int i = 0; i < 12; i++) {
        snprintf(pa, sizeof pa, "%s/images/%s.png", a.outdir, ra.samples[i].name);
        snprintf(pb, sizeof pb, "%s/images/%s.png", c.outdir, rc.samples[i].name);
        size_t na, nb;
        char *x = kiln_test_slurp(pa, &na), *y = kiln_test_slurp(pb, &nb);
        cr_assert(na == nb && !memcmp(x, y, na), "%s changed with --n-train", pa);
        free(x);
        free(y);
    }
    kiln_datagen_result_free(&ra);
    kiln_datagen_result_free(&rb);
    kiln_datagen_result_free(&rc);
}

/* ---- errors ---- */

/* No OUTDIR.partial-* is left in tmp. */
static void no_partial(void)
{
    DIR *d = opendir(tmp);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        cr_assert_null(strstr(e->d_name, ".partial-"), "left behind: %s", e->d_name);
    closedir(d);
}

Test(datagen, non_empty_outdir_needs_force)
{
    NEED_DATA();
    kiln_datagen_options o = opts(KILN_DATAGEN_POINTS, "pts", 4, 2);
    char keep[512];
    snprintf(keep, sizeof keep, "%s/mine.txt", o.outdir);
    cr_assert_eq(mkdir(o.outdir, 0777), 0);
    FILE *f = fopen(keep, "w");
    cr_assert_not_null(f);
    fputs("mine\n", f);
    fclose(f);
    kiln_datagen_result r;
    char *err = NULL;
    cr_assert_eq(kiln_datagen_make(&o, false, &r, &err), KILN_ERR_INVALID);
    cr_assert(err && strstr(err, "not empty") && strstr(err, "--force"), "%s", err);
    free(err);
    cr_assert_eq(access(keep, F_OK), 0, "the folder was touched");
    no_partial();
    /* --force replaces it */
    o.force = true;
    cr_assert_eq(kiln_datagen_make(&o, false, &r, &err), KILN_OK, "%s", err);
    cr_assert_null(r.samples);
    cr_assert_neq(access(keep, F_OK), 0, "the old data set is still there");
    cr_assert_eq(count_files(o.outdir), 3);
    no_partial();
    kiln_datagen_result_free(&r);
    /* an empty folder is fine without --force; missing parents are made */
    o = opts(KILN_DATAGEN_POINTS, "empty", 4, 2);
    o.force = false;
    cr_assert_eq(mkdir(o.outdir, 0777), 0);
    cr_assert_eq(kiln_datagen_make(&o, false, &r, &err), KILN_OK, "%s", err);
    o = opts(KILN_DATAGEN_POINTS, "deep/er/pts/", 4, 2);
    cr_assert_eq(kiln_datagen_make(&o, false, &r, &err), KILN_OK, "%s", err);
    cr_assert_eq(count_files(o.outdir), 3);
}

Test(datagen, missing_fashion_mnist_and_bad_options)
{
    kiln_datagen_options o = opts(KILN_DATAGEN_MULTILABEL, "ml", 4, 2);
    o.data_dir = "/nonexistent";
    kiln_datagen_result r;
    char *err = NULL;
    cr_assert_eq(kiln_datagen_make(&o, true, &r, &err), KILN_ERR_NOT_FOUND);
    cr_assert(err && strstr(err, "dataset-fashion-mnist") && strstr(err, "--data"), "%s", err);
    free(err);
    cr_assert_null(r.samples);
    cr_assert_neq(access(o.outdir, F_OK), 0, "OUTDIR made without data");
    no_partial();

    struct {
        kiln_datagen_kind kind;
        int64_t nt, nv;
        int size;
        const char *why;
    } bad[] = {
        {KILN_DATAGEN_FOLDERS, 60001, 10, 0, "at most 60000"},
        {KILN_DATAGEN_FOLDERS, 10, 10001, 0, "at most 60000"},
        {KILN_DATAGEN_FOLDERS, 10, 10, 64, "--size"},
        {KILN_DATAGEN_MULTILABEL, 10, 10, 57, "even"},
        {KILN_DATAGEN_POINTS, 10, 10, 39, "--size 39"},
        {KILN_DATAGEN_SEGMENTATION, 10, 10, 27, "--size 27"},
        {KILN_DATAGEN_SEGMENTATION, -1, 10, 0, "negative"},
        {(kiln_datagen_kind)9, 10, 10, 0, "unknown kind"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = opts(bad[i].kind, "bad", bad[i].nt, bad[i].nv);
        o.size = bad[i].size;
        cr_assert_eq(kiln_datagen_make(&o, false, &r, &err), KILN_ERR_INVALID, "case %zu", i);
        cr_assert(err && strstr(err, bad[i].why), "case %zu: %s", i, err);
        free(err);
        err = NULL;
    }
    no_partial();
    kiln_datagen_kind k;
    cr_assert(kiln_datagen_kind_parse("segmentation", &k) && k == KILN_DATAGEN_SEGMENTATION);
    cr_assert(!kiln_datagen_kind_parse("planet", &k));
}
