/* runtime/datagen.c — the course's example data sets from Fashion-MNIST
 * (see runtime/datagen.h for the kinds and their layouts).
 *
 * The generator loads both Fashion-MNIST splits as bytes, then builds one
 * sample at a time: its random choices come from its own stream of the seed
 * (kiln_rng_seed_stream with the kind, the split and the sample's index), so
 * output never depends on anything but the options. Resizing is bilinear in
 * integer arithmetic (8-bit fractions), so images are the same on every
 * machine. Everything is written under OUTDIR.partial-<pid>, renamed to
 * OUTDIR last; a failure removes the partial folder.
 */
#include "runtime/datagen.h"
#include "runtime/idx.h"
#include "runtime/rng.h"
#include "ir/util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIDE 28              /* Fashion-MNIST's images: SIDE x SIDE bytes */
#define ML_FILL_PERCENT 60   /* multilabel: chance that a cell holds an item */
#define PT_MIN_SIDE 17       /* points: an item's side after scaling, 0.6x ... */
#define PT_MAX_SIDE 39       /* ... to 1.4x of 28 */
#define PT_TRIES 16          /* points: items tried for one with foreground pixels */
#define MAX_SIDE 1024        /* --size, at most */
#define MAX_SAMPLES 10000000 /* n_train + n_valid, at most */

const char *const kiln_fashion_codes[KILN_FASHION_CLASSES] = {
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal",     "shirt",   "sneaker",  "bag",   "ankle_boot",
};

static const char *const kind_names[] = {"multilabel", "segmentation", "points", "folders"};

bool kiln_datagen_kind_parse(const char *name, kiln_datagen_kind *out)
{
    for (int k = 0; k < (int)(sizeof kind_names / sizeof kind_names[0]); k++)
        if (name && !strcmp(name, kind_names[k])) {
            *out = (kiln_datagen_kind)k;
            return true;
        }
    return false;
}

const char *kiln_datagen_kind_name(kiln_datagen_kind k)
{
    return (unsigned)k < sizeof kind_names / sizeof kind_names[0] ? kind_names[k] : "(unknown)";
}

void kiln_datagen_defaults(kiln_datagen_kind k, int64_t *n_train, int64_t *n_valid, int *size)
{
    static const int64_t nt[] = {8000, 4000, 8000, 60000}, nv[] = {2000, 1000, 2000, 10000};
    static const int sz[] = {2 * SIDE, 64, 64, SIDE};
    int i = (unsigned)k < 4 ? (int)k : 0;
    if (n_train) *n_train = nt[i];
    if (n_valid) *n_valid = nv[i];
    if (size) *size = sz[i];
}

void kiln_datagen_result_free(kiln_datagen_result *r)
{
    if (!r) return;
    free(r->samples);
    r->samples = NULL;
}

/* ---- folders and files ---------------------------------------------------- */

/* Removes path and everything below it; symbolic links are removed, never
 * followed. Returns 0, or -1 with errno set by the first failure. */
static int rmtree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb)) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(path);
    DIR *d = opendir(path);
    if (!d) return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *sub = kiln_asprintf("%s/%s", path, e->d_name);
        if (!sub) {
            errno = ENOMEM;
            rc = -1;
            break;
        }
        if (rmtree(sub)) rc = -1;
        free(sub);
    }
    closedir(d);
    return rc ? rc : rmdir(path);
}

typedef enum { DIR_MISSING, DIR_EMPTY, DIR_FULL, DIR_NOT_DIR, DIR_ERROR } dir_state;

static dir_state state_of(const char *path)
{
    struct stat sb;
    if (stat(path, &sb)) return errno == ENOENT ? DIR_MISSING : DIR_ERROR;
    if (!S_ISDIR(sb.st_mode)) return DIR_NOT_DIR;
    DIR *d = opendir(path);
    if (!d) return DIR_ERROR;
    dir_state s = DIR_EMPTY;
    struct dirent *e;
    while (s == DIR_EMPTY && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) s = DIR_FULL;
    closedir(d);
    return s;
}

/* mkdir -p of the folder that holds `path` (the part before its last '/'). */
static int make_parents(const char *path)
{
    char *p = kiln_asprintf("%s", path);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    char *last = strrchr(p, '/');
    int rc = 0;
    if (last && last != p) {
        *last = '\0';
        for (char *q = p + 1; rc == 0; q++) {
            if (*q != '/' && *q) continue;
            char c = *q;
            *q = '\0';
            if (mkdir(p, 0777) && errno != EEXIST) rc = -1;
            *q = c;
            if (!c) break;
        }
    }
    free(p);
    return rc;
}

/* ---- the generator's state ------------------------------------------------ */

typedef struct src_set {
    int64_t n;
    uint8_t *px;    /* n x SIDE x SIDE */
    int32_t *label; /* n */
} src_set;

typedef struct gen {
    kiln_datagen_options o; /* with defaults filled in */
    kiln_datagen_result *res;
    char **err;
    src_set train, test; /* Fashion-MNIST's two splits */
    char *tmp;           /* OUTDIR.partial-<pid> */
    char path[PATH_MAX]; /* scratch for file paths */
    kiln_sbuf table;     /* labels.csv or points.csv */
    kiln_sbuf valid;     /* valid.txt */
    uint8_t *img, *mask; /* size x size */
    uint8_t scaled[PT_MAX_SIDE * PT_MAX_SIDE + 1];
    uint8_t *cell; /* multilabel: one resized item */
} gen;

/* One Fashion-MNIST split as bytes (the loader gives floats b / 255, which
 * round back to b exactly). */
static kiln_status load_split(gen *g, int train, src_set *s)
{
    kiln_dataset *d = NULL;
    kiln_status st = kiln_dataset_fashion_mnist(g->o.data_dir, train, &d, g->err);
    if (st) return st;
    if (d->x_rank != 3 || d->x_shape[1] != SIDE || d->x_shape[2] != SIDE) {
        kiln_dataset_free(d);
        return kiln_set_err(g->err, KILN_ERR_CORRUPT, "Fashion-MNIST's %s images are not %dx%d",
                            train ? "training" : "test", SIDE, SIDE);
    }
    s->n = d->n;
    s->px = malloc((size_t)(d->n * SIDE * SIDE) + 1);
    s->label = malloc((size_t)d->n * sizeof *s->label + 1);
    if (!s->px || !s->label) {
        kiln_dataset_free(d);
        return kiln_set_err(g->err, KILN_ERR_NOMEM, "out of memory loading Fashion-MNIST");
    }
    for (int64_t k = 0; k < d->n * SIDE * SIDE; k++) {
        float v = d->x[k] * 255.0f + 0.5f;
        s->px[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    const int32_t *lab = d->y;
    for (int64_t k = 0; k < d->n; k++) {
        if (lab[k] < 0 || lab[k] >= KILN_FASHION_CLASSES) {
            kiln_dataset_free(d);
            return kiln_set_err(g->err, KILN_ERR_CORRUPT,
                                "Fashion-MNIST's %s label %lld is %d, not a class 0 to 9",
                                train ? "training" : "test", (long long)k, (int)lab[k]);
        }
        s->label[k] = lab[k];
    }
    kiln_dataset_free(d);
    return KILN_OK;
}

/* g->path = tmp/fmt... ; false (and *err set, KILN_ERR_IO) when it does
 * not fit. */
static bool set_path(gen *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool set_path(gen *g, const char *fmt, ...)
{
    int n = snprintf(g->path, sizeof g->path, "%s/", g->tmp);
    va_list ap;
    va_start(ap, fmt);
    int m = n >= 0 && (size_t)n < sizeof g->path
                ? vsnprintf(g->path + n, sizeof g->path - (size_t)n, fmt, ap)
                : -1;
    va_end(ap);
    if (m < 0 || (size_t)(n + m) >= sizeof g->path) {
        kiln_set_err(g->err, KILN_ERR_IO, "%s: path too long", g->tmp);
        return false;
    }
    return true;
}

static kiln_status make_dir(gen *g)
{
    if (mkdir(g->path, 0777))
        return kiln_set_err(g->err, KILN_ERR_IO, "%s: cannot create the folder: %s", g->path,
                            strerror(errno));
    return KILN_OK;
}

static kiln_status write_png(gen *g, const uint8_t *px, int side)
{
    kiln_status st = kiln_image_write_png(g->path, px, side, side, 1, g->err);
    if (!st) g->res->files++;
    return st;
}

static kiln_status write_text(gen *g, const kiln_sbuf *b)
{
    if (b->oom) return kiln_set_err(g->err, KILN_ERR_NOMEM, "%s: out of memory", g->path);
    FILE *f = fopen(g->path, "wb");
    if (!f)
        return kiln_set_err(g->err, KILN_ERR_IO, "%s: cannot create: %s", g->path, strerror(errno));
    bool ok = fwrite(b->p ? b->p : "", 1, b->n, f) == b->n;
    ok &= fclose(f) == 0;
    if (!ok) return kiln_set_err(g->err, KILN_ERR_IO, "%s: write error", g->path);
    g->res->files++;
    return KILN_OK;
}

/* ---- drawing -------------------------------------------------------------- */

/* src (sw x sh) resized bilinearly to dst (dw x dh), pixel centres aligned
 * and edges clamped, in integer arithmetic; dw == sw and dh == sh copy. */
static void resize(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh)
{
    for (int v = 0; v < dh; v++) {
        /* the source row of v's centre, times 256 */
        int64_t sy = (int64_t)(2 * v + 1) * sh * 256 / (2 * dh) - 128;
        int y0 = sy < 0 ? 0 : (int)(sy >> 8), fy = sy < 0 ? 0 : (int)(sy & 255);
        int y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
        for (int u = 0; u < dw; u++) {
            int64_t sx = (int64_t)(2 * u + 1) * sw * 256 / (2 * dw) - 128;
            int x0 = sx < 0 ? 0 : (int)(sx >> 8), fx = sx < 0 ? 0 : (int)(sx & 255);
            int x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
            int top = src[y0 * sw + x0] * (256 - fx) + src[y0 * sw + x1] * fx;
            int bot = src[y1 * sw + x0] * (256 - fx) + src[y1 * sw + x1] * fx;
            dst[v * dw + u] = (uint8_t)((top * (256 - fy) + bot * fy + 32768) >> 16);
        }
    }
}

/* Records item (src, class, place) in sample s. */
static void add_item(gen *g, kiln_datagen_sample *s, const src_set *set, int64_t idx, int x, int y,
                     int w, int h)
{
    kiln_datagen_item *it = &s->items[s->n_items++];
    it->src = (int32_t)idx;
    it->cls = set->label[idx];
    it->x = x;
    it->y = y;
    it->w = w;
    it->h = h;
    g->res->class_items[it->cls]++;
}

/* 2x2 cells; each holds an item with probability ML_FILL_PERCENT, at least
 * one does. */
static void draw_multilabel(gen *g, kiln_rng *r, const src_set *set, kiln_datagen_sample *s)
{
    const int n = g->o.size, c = n / 2;
    memset(g->img, 0, (size_t)n * (size_t)n);
    bool full[4], any = false;
    for (int k = 0; k < 4; k++)
        any |= full[k] = kiln_rng_below(r, 100) < ML_FILL_PERCENT;
    if (!any) full[kiln_rng_below(r, 4)] = true;
    for (int k = 0; k < 4; k++) {
        if (!full[k]) continue;
        int64_t idx = (int64_t)kiln_rng_below(r, (uint64_t)set->n);
        int x = (k % 2) * c, y = (k / 2) * c;
        resize(set->px + idx * SIDE * SIDE, SIDE, SIDE, g->cell, c, c);
        for (int v = 0; v < c; v++)
            memcpy(g->img + (y + v) * n + x, g->cell + v * c, (size_t)c);
        add_item(g, s, set, idx, x, y, c, c);
    }
}

/* 1 to 4 items at random places, later on top; an item's foreground pixels
 * only, so the mask tells exactly which item each lit pixel shows. */
static void draw_segmentation(gen *g, kiln_rng *r, const src_set *set, kiln_datagen_sample *s)
{
    const int n = g->o.size;
    memset(g->img, 0, (size_t)n * (size_t)n);
    memset(g->mask, 0, (size_t)n * (size_t)n);
    int items = 1 + (int)kiln_rng_below(r, KILN_DATAGEN_MAX_ITEMS);
    for (int k = 0; k < items; k++) {
        int64_t idx = (int64_t)kiln_rng_below(r, (uint64_t)set->n);
        int x = (int)kiln_rng_below(r, (uint64_t)(n - SIDE + 1));
        int y = (int)kiln_rng_below(r, (uint64_t)(n - SIDE + 1));
        const uint8_t *p = set->px + idx * SIDE * SIDE;
        uint8_t code = (uint8_t)(set->label[idx] + 1);
        for (int v = 0; v < SIDE; v++)
            for (int u = 0; u < SIDE; u++) {
                uint8_t b = p[v * SIDE + u];
                if (b <= KILN_DATAGEN_THRESHOLD) continue;
                g->img[(y + v) * n + x + u] = b;
                g->mask[(y + v) * n + x + u] = code;
            }
        add_item(g, s, set, idx, x, y, SIDE, SIDE);
    }
}

/* One item scaled and placed; the target is the centre of its foreground's
 * bounding box. Returns false when PT_TRIES items had no foreground. */
static bool draw_points(gen *g, kiln_rng *r, const src_set *set, kiln_datagen_sample *s)
{
    const int n = g->o.size;
    for (int t = 0; t < PT_TRIES; t++) {
        int64_t idx = (int64_t)kiln_rng_below(r, (uint64_t)set->n);
        int side = PT_MIN_SIDE + (int)kiln_rng_below(r, PT_MAX_SIDE - PT_MIN_SIDE + 1);
        int x = (int)kiln_rng_below(r, (uint64_t)(n - side + 1));
        int y = (int)kiln_rng_below(r, (uint64_t)(n - side + 1));
        resize(set->px + idx * SIDE * SIDE, SIDE, SIDE, g->scaled, side, side);
        int x0 = side, x1 = -1, y0 = side, y1 = -1;
        for (int v = 0; v < side; v++)
            for (int u = 0; u < side; u++)
                if (g->scaled[v * side + u] > KILN_DATAGEN_THRESHOLD) {
                    x0 = u < x0 ? u : x0;
                    x1 = u > x1 ? u : x1;
                    y0 = v < y0 ? v : y0;
                    y1 = v > y1 ? v : y1;
                }
        if (x1 < 0) continue;
        memset(g->img, 0, (size_t)n * (size_t)n);
        for (int v = 0; v < side; v++)
            memcpy(g->img + (y + v) * n + x, g->scaled + v * side, (size_t)side);
        add_item(g, s, set, idx, x, y, side, side);
        s->px = x + (x0 + x1 + 1) / 2.0; /* the box's edges: x0 .. x1 + 1 */
        s->py = y + (y0 + y1 + 1) / 2.0;
        return true;
    }
    return false;
}

/* ---- the kinds -------------------------------------------------------------- */

/* Tags of sample s: the codes of its classes, sorted, space-separated. */
static void put_tags(kiln_sbuf *b, const kiln_datagen_sample *s)
{
    bool has[KILN_FASHION_CLASSES] = {false};
    for (int k = 0; k < s->n_items; k++)
        has[s->items[k].cls] = true;
    bool first = true;
    /* the codes in alphabetical order, as indices */
    static const int sorted[KILN_FASHION_CLASSES] = {9, 8, 4, 3, 2, 5, 6, 7, 1, 0};
    for (int k = 0; k < KILN_FASHION_CLASSES; k++) {
        if (!has[sorted[k]]) continue;
        if (!first) kiln_sb_putc(b, ' ');
        kiln_sb_puts(b, kiln_fashion_codes[sorted[k]]);
        first = false;
    }
}

/* The collage and points kinds: samples into images/ (and labels/), their
 * targets into the table, validation names into valid.txt. */
static kiln_status make_drawn(gen *g, kiln_datagen_sample *samples)
{
    const kiln_datagen_kind kind = g->o.kind;
    const int n = g->o.size;
    const char prefix = kind == KILN_DATAGEN_POINTS ? 'p' : 'c';
    kiln_status st;
    if (!set_path(g, "images")) return KILN_ERR_IO;
    if ((st = make_dir(g))) return st;
    if (kind == KILN_DATAGEN_SEGMENTATION) {
        if (!set_path(g, "labels")) return KILN_ERR_IO;
        if ((st = make_dir(g))) return st;
    }
    kiln_sb_puts(&g->table, kind == KILN_DATAGEN_POINTS ? "image_name,x,y\n" : "image_name,tags\n");
    const int64_t total = g->o.n_train + g->o.n_valid;
    for (int64_t i = 0; i < total; i++) {
        bool valid = i >= g->o.n_train;
        int64_t j = valid ? i - g->o.n_train : i;
        const src_set *set = valid ? &g->test : &g->train;
        kiln_rng r;
        kiln_rng_seed_stream(&r, g->o.seed,
                             (uint64_t)kind << 48 | (uint64_t)valid << 40 | (uint64_t)j);
        kiln_datagen_sample one, *s = samples ? &samples[i] : &one;
        memset(s, 0, sizeof *s);
        snprintf(s->name, sizeof s->name, "%c%05lld", prefix, (long long)i);
        s->valid = valid;
        if (kind == KILN_DATAGEN_MULTILABEL)
            draw_multilabel(g, &r, set, s);
        else if (kind == KILN_DATAGEN_SEGMENTATION)
            draw_segmentation(g, &r, set, s);
        else if (!draw_points(g, &r, set, s))
            return kiln_set_err(g->err, KILN_ERR_CORRUPT,
                                "Fashion-MNIST's %s set: %d items in a row without a pixel above "
                                "%d; are the images blank?",
                                valid ? "test" : "training", PT_TRIES, KILN_DATAGEN_THRESHOLD);
        if (!set_path(g, "images/%s.png", s->name)) return KILN_ERR_IO;
        if ((st = write_png(g, g->img, n))) return st;
        if (kind == KILN_DATAGEN_SEGMENTATION) { /* the mask is the target */
            if (!set_path(g, "labels/%s_P.png", s->name)) return KILN_ERR_IO;
            if ((st = write_png(g, g->mask, n))) return st;
        } else if (kind == KILN_DATAGEN_POINTS) {
            kiln_sb_printf(&g->table, "%s,%.1f,%.1f\n", s->name, s->px, s->py);
        } else {
            kiln_sb_printf(&g->table, "%s,", s->name);
            put_tags(&g->table, s);
            kiln_sb_putc(&g->table, '\n');
        }
        if (valid) kiln_sb_printf(&g->valid, "%s\n", s->name);
    }
    if (kind == KILN_DATAGEN_SEGMENTATION) {
        kiln_sbuf codes = {0};
        kiln_sb_puts(&codes, "background\n");
        for (int k = 0; k < KILN_FASHION_CLASSES; k++)
            kiln_sb_printf(&codes, "%s\n", kiln_fashion_codes[k]);
        st = set_path(g, "codes.txt") ? write_text(g, &codes) : KILN_ERR_IO;
        free(codes.p);
        if (st) return st;
    } else {
        if (!set_path(g, kind == KILN_DATAGEN_POINTS ? "points.csv" : "labels.csv"))
            return KILN_ERR_IO;
        if ((st = write_text(g, &g->table))) return st;
    }
    if (!set_path(g, "valid.txt")) return KILN_ERR_IO;
    return write_text(g, &g->valid);
}

/* The first `take` of a seeded permutation of 0..n-1, in increasing order
 * (so files are written in the source's order). */
static int64_t *pick(uint64_t seed, uint64_t stream, int64_t n, int64_t take)
{
    int64_t *p = malloc((size_t)n * sizeof *p + 1);
    if (!p) return NULL;
    for (int64_t k = 0; k < n; k++)
        p[k] = k;
    kiln_rng r;
    kiln_rng_seed_stream(&r, seed, stream);
    for (int64_t k = 0; k < take; k++) {
        int64_t m = k + (int64_t)kiln_rng_below(&r, (uint64_t)(n - k));
        int64_t t = p[k];
        p[k] = p[m];
        p[m] = t;
    }
    /* sort the taken ones: a counting pass over a bitmap */
    uint8_t *in = calloc((size_t)n + 1, 1);
    if (!in) {
        free(p);
        return NULL;
    }
    for (int64_t k = 0; k < take; k++)
        in[p[k]] = 1;
    int64_t m = 0;
    for (int64_t k = 0; k < n; k++)
        if (in[k]) p[m++] = k;
    free(in);
    return p;
}

/* train/<code>/train<index>.png and valid/<code>/test<index>.png. */
static kiln_status make_folders(gen *g, kiln_datagen_sample *samples)
{
    static const char *const split[2] = {"train", "valid"};
    static const char *const source[2] = {"train", "test"};
    kiln_status st = KILN_OK;
    for (int v = 0; v < 2 && !st; v++) {
        st = set_path(g, "%s", split[v]) ? make_dir(g) : KILN_ERR_IO;
        for (int c = 0; c < KILN_FASHION_CLASSES && !st; c++)
            st = set_path(g, "%s/%s", split[v], kiln_fashion_codes[c]) ? make_dir(g) : KILN_ERR_IO;
    }
    if (st) return st;
    int64_t i = 0;
    for (int v = 0; v < 2; v++) {
        const src_set *set = v ? &g->test : &g->train;
        int64_t take = v ? g->o.n_valid : g->o.n_train;
        int64_t *idx =
            pick(g->o.seed, (uint64_t)KILN_DATAGEN_FOLDERS << 48 | (uint64_t)v << 40, set->n, take);
        if (!idx) return kiln_set_err(g->err, KILN_ERR_NOMEM, "out of memory");
        for (int64_t k = 0; k < take && !st; k++, i++) {
            kiln_datagen_sample one, *s = samples ? &samples[i] : &one;
            memset(s, 0, sizeof *s);
            snprintf(s->name, sizeof s->name, "%s%05lld", source[v], (long long)idx[k]);
            s->valid = v;
            add_item(g, s, set, idx[k], 0, 0, SIDE, SIDE);
            if (!set_path(g, "%s/%s/%s.png", split[v], kiln_fashion_codes[set->label[idx[k]]],
                          s->name))
                st = KILN_ERR_IO;
            else
                st = write_png(g, set->px + idx[k] * SIDE * SIDE, SIDE);
        }
        free(idx);
        if (st) return st;
    }
    return KILN_OK;
}

/* ---- the entry point -------------------------------------------------------- */

/* Options checked and defaults filled in. */
static kiln_status check_options(gen *g)
{
    kiln_datagen_options *o = &g->o;
    if ((unsigned)o->kind > KILN_DATAGEN_FOLDERS)
        return kiln_set_err(g->err, KILN_ERR_INVALID,
                            "unknown kind %d (multilabel, segmentation, points, folders)",
                            (int)o->kind);
    const char *kind = kiln_datagen_kind_name(o->kind);
    if (!o->outdir || !*o->outdir)
        return kiln_set_err(g->err, KILN_ERR_INVALID, "%s: no output folder", kind);
    int64_t nt, nv;
    int size;
    kiln_datagen_defaults(o->kind, &nt, &nv, &size);
    if (o->n_train < 0 || o->n_valid < 0)
        return kiln_set_err(g->err, KILN_ERR_INVALID, "%s: negative sample count", kind);
    if (!o->n_train) o->n_train = nt;
    if (!o->n_valid) o->n_valid = nv;
    if (o->kind == KILN_DATAGEN_FOLDERS) {
        if (o->size && o->size != SIDE)
            return kiln_set_err(g->err, KILN_ERR_INVALID,
                                "folders: images keep Fashion-MNIST's %dx%d (no --size %d)", SIDE,
                                SIDE, o->size);
        if (o->n_train > 60000 || o->n_valid > 10000)
            return kiln_set_err(g->err, KILN_ERR_INVALID,
                                "folders: at most 60000 training and 10000 validation images "
                                "(Fashion-MNIST's training and test sets), not %lld and %lld",
                                (long long)o->n_train, (long long)o->n_valid);
    } else if (o->n_train > MAX_SAMPLES || o->n_valid > MAX_SAMPLES - o->n_train) {
        return kiln_set_err(g->err, KILN_ERR_INVALID, "%s: at most %d samples in all", kind,
                            MAX_SAMPLES);
    }
    if (!o->size) o->size = size;
    int lo = o->kind == KILN_DATAGEN_MULTILABEL ? 16
             : o->kind == KILN_DATAGEN_POINTS   ? PT_MAX_SIDE + 1
                                                : SIDE;
    if (o->size < lo || o->size > MAX_SIDE || (o->kind == KILN_DATAGEN_MULTILABEL && o->size % 2))
        return kiln_set_err(g->err, KILN_ERR_INVALID, "%s: --size %d must be %sfrom %d to %d", kind,
                            o->size, o->kind == KILN_DATAGEN_MULTILABEL ? "even and " : "", lo,
                            MAX_SIDE);
    return KILN_OK;
}

/* OUTDIR may be written: missing, an empty folder, or a full one with force. */
static kiln_status check_outdir(gen *g, const char *out)
{
    switch (state_of(out)) {
    case DIR_MISSING:
    case DIR_EMPTY:
        return KILN_OK;
    case DIR_FULL:
        if (g->o.force) return KILN_OK;
        return kiln_set_err(g->err, KILN_ERR_INVALID,
                            "%s exists and is not empty: pass --force to replace it", out);
    case DIR_NOT_DIR:
        return kiln_set_err(g->err, KILN_ERR_INVALID, "%s exists and is not a folder", out);
    default:
        return kiln_set_err(g->err, KILN_ERR_IO, "%s: %s", out, strerror(errno));
    }
}

/* Puts the finished tmp folder in OUTDIR's place. */
static kiln_status install(gen *g, const char *out)
{
    kiln_status st = check_outdir(g, out);
    if (st) return st;
    char *old = NULL;
    if (state_of(out) == DIR_FULL) {
        old = kiln_asprintf("%s.old-%ld", out, (long)getpid());
        if (!old) return kiln_set_err(g->err, KILN_ERR_NOMEM, "out of memory");
        if (rename(out, old)) {
            st = kiln_set_err(g->err, KILN_ERR_IO, "%s: cannot move it aside to replace it: %s",
                              out, strerror(errno));
            free(old);
            return st;
        }
    }
    if (rename(g->tmp, out)) {
        st = kiln_set_err(g->err, KILN_ERR_IO, "cannot rename %s to %s: %s", g->tmp, out,
                          strerror(errno));
        if (old) rename(old, out); /* put it back */
    } else if (old && rmtree(old)) {
        st = kiln_set_err(g->err, KILN_ERR_IO,
                          "%s is written, but the data set it replaced, moved to %s, could not "
                          "be removed: %s",
                          out, old, strerror(errno));
    }
    free(old);
    return st;
}

kiln_status kiln_datagen_make(const kiln_datagen_options *o, bool record, kiln_datagen_result *res,
                              char **err)
{
    if (err) *err = NULL;
    if (!o || !res) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_datagen_make: NULL argument");
    memset(res, 0, sizeof *res);
    gen *g = calloc(1, sizeof *g);
    if (!g) return kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
    g->o = *o;
    g->res = res;
    g->err = err;
    char *out = NULL;
    kiln_status st = check_options(g);
    if (!st) {
        /* OUTDIR without trailing slashes, so OUTDIR.partial-<pid> sits beside it */
        out = kiln_asprintf("%s", o->outdir);
        if (!out)
            st = kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
        else
            for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--)
                out[n - 1] = '\0';
    }
    if (!st) st = check_outdir(g, out);
    if (!st) st = load_split(g, 1, &g->train);
    if (!st) st = load_split(g, 0, &g->test);
    const int n = g->o.size;
    const int64_t total = g->o.n_train + g->o.n_valid;
    if (!st) {
        res->n_train = g->o.n_train;
        res->n_valid = g->o.n_valid;
        res->size = n;
        g->img = malloc((size_t)n * (size_t)n);
        g->mask = malloc((size_t)n * (size_t)n);
        g->cell = malloc((size_t)n * (size_t)n);
        if (record) res->samples = calloc((size_t)total + 1, sizeof *res->samples);
        if (!g->img || !g->mask || !g->cell || (record && !res->samples))
            st = kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
    }
    if (!st) {
        g->tmp = kiln_asprintf("%s.partial-%ld", out, (long)getpid());
        if (!g->tmp)
            st = kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
        else if (rmtree(g->tmp) || make_parents(g->tmp) || mkdir(g->tmp, 0777)) {
            st = kiln_set_err(err, KILN_ERR_IO, "%s: cannot create the folder: %s", g->tmp,
                              strerror(errno));
            free(g->tmp);
            g->tmp = NULL;
        }
    }
    if (!st) {
        st = o->kind == KILN_DATAGEN_FOLDERS ? make_folders(g, res->samples)
                                             : make_drawn(g, res->samples);
        if (!st) st = install(g, out);
        if (st) rmtree(g->tmp);
    }
    if (st) {
        kiln_datagen_result_free(res);
        if (err && !*err) kiln_set_err(err, st, "%s: could not write the data set", out);
    }
    free(g->train.px);
    free(g->train.label);
    free(g->test.px);
    free(g->test.label);
    free(g->img);
    free(g->mask);
    free(g->cell);
    free(g->table.p);
    free(g->valid.p);
    free(g->tmp);
    free(g);
    free(out);
    return st;
}
