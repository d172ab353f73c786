/* runtime/imgdata.c — image data sets in fastai's folder layouts (see
 * include/kiln/data.h for the layouts, runtime/imgdata.h for the memory
 * layout).
 *
 * Opening a split: the layout is detected; the sample list of the whole set
 * is read (both splits, so that both get the same classes); the first
 * training image fixes the size and the channels unless the options do;
 * every file of the split is decoded (on up to opts.threads threads; each
 * sample writes only its own slot, and the error reported is the one of the
 * first failing sample in order, so the result does not depend on the
 * threads), converted, resized and kept as u8. Batches are made by
 * kiln_imgset_gather (runtime/loader.c calls it on its worker thread).
 *
 * Every message names the file (and the line of a text file) and says what
 * to fix.
 */
#include "runtime/imgdata.h"
#include "runtime/image.h"
#include "ir/util.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small helpers -------------------------------------------------------- */

static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* a/b, malloc'd. */
static char *join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *p = malloc(na + nb + 2);
    if (!p) return NULL;
    memcpy(p, a, na);
    p[na] = '/';
    memcpy(p + na + 1, b, nb + 1);
    return p;
}

static int is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int is_reg(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int exists_in(const char *dir, const char *name, int want_dir)
{
    char *p = join(dir, name);
    int ok = p && (want_dir ? is_dir(p) : is_reg(p));
    free(p);
    return ok;
}

static const char *const image_exts[] = {".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"};
#define N_EXTS (sizeof image_exts / sizeof image_exts[0])

/* Length of name without an image extension, or 0 when it has none. */
static size_t image_stem(const char *name)
{
    size_t n = strlen(name);
    for (size_t k = 0; k < N_EXTS; k++) {
        size_t e = strlen(image_exts[k]);
        if (n > e && !strcmp(name + n - e, image_exts[k])) return n - e;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A growing array of strings. */
typedef struct strvec {
    char **v;
    int64_t n, cap;
} strvec;

static int strvec_push(strvec *s, char *str)
{
    if (!str) return -1;
    if (s->n == s->cap) {
        int64_t cap = s->cap ? s->cap * 2 : 16;
        char **v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) {
            free(str);
            return -1;
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = str;
    return 0;
}

static void strvec_free(strvec *s)
{
    for (int64_t k = 0; k < s->n; k++) free(s->v[k]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

/* Entries of dir (no dot files), sorted; dirs = 1: sub-folders only, 0:
 * image files only. A missing folder is an error. */
static kiln_status list_dir(const char *dir, int dirs, strvec *out, char **err)
{
    memset(out, 0, sizeof *out);
    DIR *d = opendir(dir);
    if (!d) return kiln_set_err(err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO,
                                "%s: cannot open the folder: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = join(dir, e->d_name);
        if (!p) goto nomem;
        int keep = dirs ? is_dir(p) : (image_stem(e->d_name) && is_reg(p));
        free(p);
        if (keep && strvec_push(out, dupstr(e->d_name))) goto nomem;
    }
    closedir(d);
    if (out->n) qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_str);
    return KILN_OK;
nomem:
    closedir(d);
    strvec_free(out);
    return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory listing it", dir);
}

/* A text file's lines: \r\n or \n, a UTF-8 byte-order mark skipped. The
 * lines point into buf (NUL-terminated in place). */
typedef struct text {
    char *buf;
    char **line;
    int64_t n;
} text;

static void text_free(text *t)
{
    free(t->buf);
    free(t->line);
    memset(t, 0, sizeof *t);
}

static kiln_status text_read(const char *path, const char *fix, text *t, char **err)
{
    memset(t, 0, sizeof *t);
    FILE *f = fopen(path, "rb");
    if (!f)
        return kiln_set_err(err, errno == ENOENT ? KILN_ERR_NOT_FOUND : KILN_ERR_IO,
                            "%s: cannot open: %s%s%s", path, strerror(errno), fix ? "; " : "",
                            fix ? fix : "");
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1) break;
        cap *= 2;
        char *g = realloc(buf, cap);
        if (!g) free(buf);
        buf = g;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory reading it", path);
    if (bad) {
        free(buf);
        return kiln_set_err(err, KILN_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        free(buf);
        return kiln_set_err(err, KILN_ERR_CORRUPT, "%s: holds NUL bytes: not a text file", path);
    }
    int64_t lines = 1;
    for (size_t k = 0; k < len; k++) lines += buf[k] == '\n';
    t->line = malloc(sizeof *t->line * (size_t)lines);
    if (!t->line) {
        free(buf);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory reading it", path);
    }
    t->buf = buf;
    char *p = buf;
    if (!strncmp(p, "\xef\xbb\xbf", 3)) p += 3;
    while (*p || p == buf) {
        char *e = strchr(p, '\n');
        if (e) *e = '\0';
        size_t n = strlen(p);
        if (n && p[n - 1] == '\r') p[n - 1] = '\0';
        t->line[t->n++] = p;
        if (!e) break;
        p = e + 1;
    }
    /* a final newline does not start a line */
    if (t->n && !t->line[t->n - 1][0] && len && buf[len - 1] == '\n') t->n--;
    return KILN_OK;
}

/* s without leading and trailing blanks, in place. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

/* ---- layouts -------------------------------------------------------------- */

kiln_data_kind kiln_data_detect(const char *dir)
{
    if (!dir || !is_dir(dir)) return KILN_DATA_NONE;
    if (exists_in(dir, "labels.csv", 0)) return KILN_DATA_MULTILABEL;
    if (exists_in(dir, "codes.txt", 0)) return KILN_DATA_SEGMENTATION;
    if (exists_in(dir, "points.csv", 0)) return KILN_DATA_POINTS;
    char *train = join(dir, "train");
    kiln_data_kind k = KILN_DATA_NONE;
    if (train && is_dir(train)) {
        strvec sub;
        if (!list_dir(train, 1, &sub, NULL) && sub.n) k = KILN_DATA_FOLDERS;
        strvec_free(&sub);
    }
    free(train);
    return k;
}

const char *kiln_data_kind_name(kiln_data_kind k)
{
    switch (k) {
    case KILN_DATA_FOLDERS: return "folders";
    case KILN_DATA_MULTILABEL: return "multi-label";
    case KILN_DATA_SEGMENTATION: return "segmentation";
    case KILN_DATA_POINTS: return "points";
    default: return "none";
    }
}

kiln_image_opts kiln_image_defaults(void)
{
    kiln_image_opts o;
    memset(&o, 0, sizeof o);
    o.aug = kiln_augment_defaults();
    return o;
}

/* One sample of the set, before decoding. */
typedef struct sample {
    char *image;  /* relative to dir */
    char *mask;   /* segmentation */
    char *tags;   /* multi-label: points into the labels.csv text */
    int32_t label;
    double px, py; /* points: in pixels of the file */
    int valid;
    int64_t line; /* of labels.csv or points.csv, for messages */
} sample;

typedef struct layout {
    const char *dir;
    kiln_data_kind kind;
    sample *s;
    int64_t n, cap;
    strvec classes;
    text csv; /* labels.csv or points.csv, kept while tags point into it */
} layout;

static void layout_free(layout *L)
{
    for (int64_t k = 0; k < L->n; k++) {
        free(L->s[k].image);
        free(L->s[k].mask);
    }
    free(L->s);
    strvec_free(&L->classes);
    text_free(&L->csv);
}

static sample *layout_add(layout *L)
{
    if (L->n == L->cap) {
        int64_t cap = L->cap ? L->cap * 2 : 64;
        sample *s = realloc(L->s, sizeof *s * (size_t)cap);
        if (!s) return NULL;
        L->s = s;
        L->cap = cap;
    }
    sample *s = &L->s[L->n++];
    memset(s, 0, sizeof *s);
    return s;
}

#define NOMEM(L) kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", (L)->dir)

/* folders: train/<class>/<file>, valid/<class>/<file>. */
static kiln_status read_folders(layout *L, char **err)
{
    static const char *const split[2] = {"train", "valid"};
    strvec cls[2];
    memset(cls, 0, sizeof cls);
    kiln_status st = KILN_OK;
    for (int v = 0; v < 2 && !st; v++) {
        char *p = join(L->dir, split[v]);
        if (!p) return NOMEM(L);
        if (!is_dir(p))
            st = kiln_set_err(err, KILN_ERR_NOT_FOUND,
                              "%s: missing: a folder data set keeps its %s images in "
                              "%s/<class>/*.png (or .jpg)", p, v ? "validation" : "training",
                              split[v]);
        else
            st = list_dir(p, 1, &cls[v], err);
        free(p);
    }
    /* the classes: both splits' folder names, sorted, once each */
    for (int v = 0; v < 2 && !st; v++)
        for (int64_t k = 0; k < cls[v].n && !st; k++) {
            int dup = 0;
            for (int64_t j = 0; j < L->classes.n && !dup; j++)
                dup = !strcmp(L->classes.v[j], cls[v].v[k]);
            if (!dup && strvec_push(&L->classes, dupstr(cls[v].v[k]))) st = NOMEM(L);
        }
    if (!st && L->classes.n)
        qsort(L->classes.v, (size_t)L->classes.n, sizeof(char *), cmp_str);
    if (!st && !L->classes.n)
        st = kiln_set_err(err, KILN_ERR_NOT_FOUND,
                          "%s/train: no class folders: put each class's images in "
                          "train/<class>/ and valid/<class>/", L->dir);
    for (int v = 0; v < 2 && !st; v++)
        for (int64_t k = 0; k < cls[v].n && !st; k++) {
            size_t n = strlen(split[v]) + strlen(cls[v].v[k]) + 2;
            char *rel = malloc(n);
            if (!rel) {
                st = NOMEM(L);
                break;
            }
            snprintf(rel, n, "%s/%s", split[v], cls[v].v[k]);
            char *p = join(L->dir, rel);
            strvec files;
            memset(&files, 0, sizeof files);
            st = p ? list_dir(p, 0, &files, err) : NOMEM(L);
            int32_t label = 0;
            while (label < L->classes.n && strcmp(L->classes.v[label], cls[v].v[k])) label++;
            for (int64_t f = 0; f < files.n && !st; f++) {
                sample *s = layout_add(L);
                if (!s || !(s->image = join(rel, files.v[f]))) {
                    st = NOMEM(L);
                    break;
                }
                s->label = label;
                s->valid = v;
            }
            strvec_free(&files);
            free(p);
            free(rel);
        }
    strvec_free(&cls[0]);
    strvec_free(&cls[1]);
    return st;
}

/* images/<name>.<ext> for the first extension that exists, or NULL. */
static char *find_image(const char *dir, const char *name)
{
    for (size_t k = 0; k < N_EXTS; k++) {
        size_t n = strlen(name) + strlen(image_exts[k]) + 8;
        char *rel = malloc(n);
        if (!rel) return NULL;
        snprintf(rel, n, "images/%s%s", name, image_exts[k]);
        if (exists_in(dir, rel, 0)) return rel;
        free(rel);
    }
    return NULL;
}

/* The sample's name: its image file without "images/" and the extension. */
static size_t sample_name(const sample *s, const char **name)
{
    *name = s->image + 7;
    size_t n = image_stem(*name);
    return n ? n : strlen(*name);
}

/* labels.csv or points.csv: header, then one row a sample. */
static kiln_status read_csv(layout *L, const char *file, char **err)
{
    const int pts = L->kind == KILN_DATA_POINTS;
    const char *header = pts ? "image_name,x,y" : "image_name,tags";
    char *path = join(L->dir, file);
    if (!path) return NOMEM(L);
    kiln_status st = text_read(path, NULL, &L->csv, err);
    if (st) {
        free(path);
        return st;
    }
    if (!L->csv.n || strcmp(trim(L->csv.line[0]), header)) {
        st = kiln_set_err(err, KILN_ERR_CORRUPT,
                          "%s:1: the header must be `%s`, not `%.60s`: make the first line %s",
                          path, header, L->csv.n ? L->csv.line[0] : "", header);
        free(path);
        return st;
    }
    for (int64_t k = 1; k < L->csv.n && !st; k++) {
        char *row = trim(L->csv.line[k]);
        if (!*row) continue;
        char *f[3] = {row, NULL, NULL};
        int nf = 1;
        for (char *p = row; *p && nf < 3; p++)
            if (*p == ',' && (pts || nf < 2)) {
                *p = '\0';
                f[nf++] = p + 1;
            }
        if (nf != (pts ? 3 : 2) || (pts && strchr(f[2], ','))) {
            st = kiln_set_err(err, KILN_ERR_CORRUPT,
                              "%s:%lld: expected %s fields `%s`: fix or remove the line", path,
                              (long long)k + 1, pts ? "3" : "2", header);
            break;
        }
        char *name = trim(f[0]);
        if (!*name) {
            st = kiln_set_err(err, KILN_ERR_CORRUPT,
                              "%s:%lld: empty image_name: fix or remove the line", path,
                              (long long)k + 1);
            break;
        }
        sample *s = layout_add(L);
        if (!s) {
            st = NOMEM(L);
            break;
        }
        s->line = k + 1;
        s->image = find_image(L->dir, name);
        if (!s->image) {
            st = kiln_set_err(err, KILN_ERR_NOT_FOUND,
                              "%s:%lld: no image for '%s': looked for %s/images/%s.png, .jpg "
                              "and .jpeg; add the file or remove the line",
                              path, (long long)k + 1, name, L->dir, name);
            break;
        }
        if (pts) {
            char *e1, *e2;
            char *xs = trim(f[1]), *ys = trim(f[2]);
            s->px = strtod(xs, &e1);
            s->py = strtod(ys, &e2);
            if (!*xs || *e1 || !*ys || *e2 || !isfinite(s->px) || !isfinite(s->py)) {
                st = kiln_set_err(err, KILN_ERR_CORRUPT,
                                  "%s:%lld: x and y must be numbers (pixels), got '%s' and '%s'",
                                  path, (long long)k + 1, xs, ys);
                break;
            }
        } else {
            s->tags = trim(f[1]);
        }
    }
    free(path);
    return st;
}

/* The sorted unique tags of every row. */
static kiln_status collect_tags(layout *L, char **err)
{
    for (int64_t k = 0; k < L->n; k++) {
        const char *p = L->s[k].tags;
        while (*p) {
            while (*p == ' ' || *p == '\t') p++;
            size_t n = strcspn(p, " \t");
            if (!n) break;
            int dup = 0;
            for (int64_t j = 0; j < L->classes.n && !dup; j++)
                dup = strlen(L->classes.v[j]) == n && !strncmp(L->classes.v[j], p, n);
            if (!dup) {
                char *t = malloc(n + 1);
                if (t) {
                    memcpy(t, p, n);
                    t[n] = '\0';
                }
                if (strvec_push(&L->classes, t)) return NOMEM(L);
            }
            p += n;
        }
    }
    if (L->classes.n) qsort(L->classes.v, (size_t)L->classes.n, sizeof(char *), cmp_str);
    return KILN_OK;
}

/* Index of the class named by p[0..n), or -1. */
static int class_of(const layout *L, const char *p, size_t n)
{
    int lo = 0, hi = (int)L->classes.n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const char *c = L->classes.v[mid];
        int r = strncmp(c, p, n);
        if (!r) r = c[n] ? 1 : 0;
        if (!r) return mid;
        if (r < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* segmentation: images/ listed, labels/<name>_P.png, codes.txt. */
static kiln_status read_segmentation(layout *L, char **err)
{
    char *path = join(L->dir, "codes.txt");
    if (!path) return NOMEM(L);
    text t;
    kiln_status st = text_read(path, NULL, &t, err);
    for (int64_t k = 0; k < t.n && !st; k++) {
        char *c = trim(t.line[k]);
        if (!*c) {
            /* blank lines only at the end */
            int64_t j = k;
            while (j < t.n && !*trim(t.line[j])) j++;
            if (j < t.n)
                st = kiln_set_err(err, KILN_ERR_CORRUPT,
                                  "%s:%lld: empty line: line k names class k, so every line "
                                  "up to the last class needs a name", path, (long long)k + 1);
            break;
        }
        if (strvec_push(&L->classes, dupstr(c))) st = NOMEM(L);
    }
    text_free(&t);
    if (!st && !L->classes.n)
        st = kiln_set_err(err, KILN_ERR_CORRUPT,
                          "%s: no classes: write one class name a line (line k = class k)", path);
    if (!st && L->classes.n > 256)
        st = kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                          "%s: %lld classes; masks hold at most 256 (class ids 0 to 255)", path,
                          (long long)L->classes.n);
    free(path);
    if (st) return st;
    char *imgdir = join(L->dir, "images");
    strvec files;
    st = imgdir ? list_dir(imgdir, 0, &files, err) : NOMEM(L);
    if (!st && !files.n)
        st = kiln_set_err(err, KILN_ERR_NOT_FOUND, "%s: no .png or .jpg images", imgdir);
    for (int64_t k = 0; k < files.n && !st; k++) {
        sample *s = layout_add(L);
        if (!s || !(s->image = join("images", files.v[k]))) {
            st = NOMEM(L);
            break;
        }
        size_t stem = image_stem(files.v[k]), n = stem + 16;
        s->mask = malloc(n);
        if (!s->mask) {
            st = NOMEM(L);
            break;
        }
        snprintf(s->mask, n, "labels/%.*s_P.png", (int)stem, files.v[k]);
        if (!exists_in(L->dir, s->mask, 0))
            st = kiln_set_err(err, KILN_ERR_NOT_FOUND,
                              "%s/%s: missing: every image images/NAME.png needs its mask "
                              "labels/NAME_P.png (class ids per pixel)", L->dir, s->mask);
    }
    strvec_free(&files);
    free(imgdir);
    return st;
}

/* A sample's name and index, sorted for the lookups of valid.txt. */
typedef struct named {
    const char *name;
    size_t len;
    int64_t idx;
} named;

static int cmp_named(const void *a, const void *b)
{
    const named *x = a, *y = b;
    int r = strncmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    if (r) return r;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* valid.txt: names (with or without the image extension) of validation
 * samples. Two samples with one name are an error (valid.txt could not tell
 * them apart). */
static kiln_status read_valid(layout *L, char **err)
{
    named *idx = malloc(sizeof *idx * (size_t)(L->n + 1));
    if (!idx) return NOMEM(L);
    for (int64_t k = 0; k < L->n; k++) {
        idx[k].len = sample_name(&L->s[k], &idx[k].name);
        idx[k].idx = k;
    }
    if (L->n) qsort(idx, (size_t)L->n, sizeof *idx, cmp_named);
    kiln_status st = KILN_OK;
    for (int64_t k = 1; k < L->n && !st; k++)
        if (idx[k].len == idx[k - 1].len && !strncmp(idx[k].name, idx[k - 1].name, idx[k].len)) {
            const sample *a = &L->s[idx[k - 1].idx], *b = &L->s[idx[k].idx];
            if (a->line)
                st = kiln_set_err(err, KILN_ERR_CORRUPT,
                                  "%s/%s:%lld: '%.*s' is listed again (first on line %lld): "
                                  "keep one row per image", L->dir,
                                  L->kind == KILN_DATA_POINTS ? "points.csv" : "labels.csv",
                                  (long long)b->line, (int)idx[k].len, idx[k].name,
                                  (long long)a->line);
            else
                st = kiln_set_err(err, KILN_ERR_CORRUPT,
                                  "%s: %s and %s have the same name: keep one of them", L->dir,
                                  a->image, b->image);
        }
    if (st) {
        free(idx);
        return st;
    }
    char *path = join(L->dir, "valid.txt");
    if (!path) {
        free(idx);
        return NOMEM(L);
    }
    text t;
    st = text_read(path,
                   "list the validation images' names in it, one a line (every other image "
                   "is for training)", &t, err);
    for (int64_t k = 0; !st && k < t.n; k++) {
        char *name = trim(t.line[k]);
        if (!*name) continue;
        const char *base = strrchr(name, '/'); /* "images/x.png" is fine too */
        if (base) name = (char *)base + 1;
        named key = {name, image_stem(name), -1};
        if (!key.len) key.len = strlen(name);
        /* the first entry with this name: every idx >= -1 */
        int64_t lo = 0, hi = L->n;
        while (lo < hi) {
            int64_t mid = (lo + hi) / 2;
            if (cmp_named(&idx[mid], &key) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (lo < L->n && idx[lo].len == key.len && !strncmp(idx[lo].name, name, key.len))
            L->s[idx[lo].idx].valid = 1;
        else
            st = kiln_set_err(err, KILN_ERR_CORRUPT,
                              "%s:%lld: '%s' is not an image of the set (images/%.*s.png%s): "
                              "fix the name or remove the line", path, (long long)k + 1, name,
                              (int)key.len, name,
                              L->kind == KILN_DATA_SEGMENTATION ? "" : " with a row in the csv");
    }
    text_free(&t);
    free(path);
    free(idx);
    return st;
}

static kiln_status read_layout(layout *L, char **err)
{
    kiln_status st;
    switch (L->kind) {
    case KILN_DATA_FOLDERS: return read_folders(L, err); /* valid/ is the split */
    case KILN_DATA_MULTILABEL:
        if ((st = read_csv(L, "labels.csv", err))) return st;
        if ((st = collect_tags(L, err))) return st;
        break;
    case KILN_DATA_POINTS:
        if ((st = read_csv(L, "points.csv", err))) return st;
        break;
    case KILN_DATA_SEGMENTATION:
        if ((st = read_segmentation(L, err))) return st;
        break;
    default:
        return kiln_set_err(err, KILN_ERR_NOT_FOUND,
                            "%s: not an image data set: expected labels.csv (multi-label), "
                            "codes.txt (segmentation), points.csv (points) or train/<class>/ "
                            "folders", L->dir);
    }
    return read_valid(L, err);
}

/* ---- decoding ------------------------------------------------------------- */

typedef struct decoder {
    const layout *L;
    const int64_t *pick; /* the split's samples, in order */
    int64_t n;
    int c, h, w;
    uint8_t *px, *mask;
    float *points; /* (y, x) per sample */
    int nthreads;
    /* per thread: the first failure (sample index, message) */
    int64_t *fail_at;
    char **fail_msg;
    kiln_status *fail_st;
} decoder;

typedef struct worker_arg {
    decoder *D;
    int t;
} worker_arg;

static kiln_status decode_one(decoder *D, int64_t i, char **err)
{
    const layout *L = D->L;
    const sample *s = &L->s[D->pick[i]];
    char *path = join(L->dir, s->image);
    if (!path) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", L->dir);
    kiln_img im;
    kiln_status st = kiln_img_decode(path, KILN_IMG_PIXELS, &im, err);
    if (!st) {
        if (kiln_img_convert(&im, D->c) ||
            kiln_resize_u8(im.px, im.w, im.h, D->c, D->px + (size_t)i * D->h * D->w * D->c, D->w,
                           D->h))
            st = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!st && D->points) {
        float *p = D->points + 2 * i;
        p[0] = (float)(s->py / im.h * 2 - 1);
        p[1] = (float)(s->px / im.w * 2 - 1);
    }
    if (!st && D->mask) {
        char *mp = join(L->dir, s->mask);
        kiln_img m;
        memset(&m, 0, sizeof m);
        st = mp ? kiln_img_decode(mp, KILN_IMG_INDEX, &m, err)
                : kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", L->dir);
        if (!st && (m.w != im.w || m.h != im.h))
            st = kiln_set_err(err, KILN_ERR_CORRUPT,
                              "%s: the mask is %dx%d but its image %s is %dx%d: a mask has "
                              "its image's size", mp, m.w, m.h, s->image, im.w, im.h);
        for (int64_t k = 0; !st && k < (int64_t)m.w * m.h; k++)
            if (m.px[k] >= L->classes.n)
                st = kiln_set_err(err, KILN_ERR_CORRUPT,
                                  "%s: pixel (%lld, %lld) has class %d, but codes.txt names "
                                  "%lld classes (0 to %lld): add the class to codes.txt",
                                  mp, (long long)(k % m.w), (long long)(k / m.w), m.px[k],
                                  (long long)L->classes.n, (long long)L->classes.n - 1);
        if (!st)
            kiln_resize_nearest(m.px, m.w, m.h, D->mask + (size_t)i * D->h * D->w, D->w, D->h);
        kiln_img_free(&m);
        free(mp);
    }
    kiln_img_free(&im);
    free(path);
    return st;
}

static void *decode_worker(void *arg)
{
    worker_arg *a = arg;
    decoder *D = a->D;
    for (int64_t i = a->t; i < D->n; i += D->nthreads) {
        char *msg = NULL;
        kiln_status st = decode_one(D, i, &msg);
        if (st) {
            D->fail_at[a->t] = i;
            D->fail_msg[a->t] = msg;
            D->fail_st[a->t] = st;
            break;
        }
    }
    return NULL;
}

static int default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 8 ? 8 : (int)n;
}

static kiln_status decode_all(decoder *D, int threads, char **err)
{
    if (threads < 1) threads = default_threads();
    if (threads > 64) threads = 64;
    if (D->n < 64) threads = 1;
    D->nthreads = threads;
    D->fail_at = malloc(sizeof *D->fail_at * (size_t)threads);
    D->fail_msg = calloc((size_t)threads, sizeof *D->fail_msg);
    D->fail_st = calloc((size_t)threads, sizeof *D->fail_st);
    pthread_t *th = malloc(sizeof *th * (size_t)threads);
    worker_arg *args = malloc(sizeof *args * (size_t)threads);
    kiln_status st = KILN_OK;
    if (!D->fail_at || !D->fail_msg || !D->fail_st || !th || !args) {
        st = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", D->L->dir);
        goto done;
    }
    int started = 0;
    for (int t = 0; t < threads; t++) {
        D->fail_at[t] = -1;
        args[t].D = D;
        args[t].t = t;
    }
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&th[t], NULL, decode_worker, &args[t])) break;
        started = t;
    }
    /* threads that could not start: their samples go to this one */
    if (started + 1 < threads) {
        for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
        for (int t = 0; t < threads; t++) {
            free(D->fail_msg[t]);
            D->fail_msg[t] = NULL;
            D->fail_at[t] = -1;
        }
        D->nthreads = 1;
        args[0].t = 0;
        decode_worker(&args[0]);
        started = 0;
    } else {
        decode_worker(&args[0]);
        for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
    }
    int first = -1;
    for (int t = 0; t < threads; t++)
        if (D->fail_at[t] >= 0 && (first < 0 || D->fail_at[t] < D->fail_at[first])) first = t;
    if (first >= 0) {
        st = D->fail_st[first];
        if (err) {
            *err = D->fail_msg[first];
            D->fail_msg[first] = NULL;
        }
    }
done:
    if (D->fail_msg)
        for (int t = 0; t < threads; t++) free(D->fail_msg[t]);
    free(D->fail_at);
    free(D->fail_msg);
    free(D->fail_st);
    free(th);
    free(args);
    return st;
}

/* ---- opening -------------------------------------------------------------- */

kiln_status kiln_dataset_open_images(const char *dir, const kiln_image_opts *opts, int valid,
                                     kiln_dataset **out, char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_open_images: out is NULL");
    *out = NULL;
    if (!dir) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_dataset_open_images: dir is NULL");
    kiln_image_opts o = opts ? *opts : kiln_image_defaults();
    if (o.height < 0 || o.width < 0 || o.height > 65535 || o.width > 65535 ||
        (o.height > 0) != (o.width > 0))
        return kiln_set_err(err, KILN_ERR_INVALID,
                            "%s: size %dx%d: give both height and width (1 to 65535), or 0 "
                            "for the first image's", dir, o.height, o.width);
    if (o.channels != 0 && o.channels != 1 && o.channels != 3)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: channels %d (0, 1 or 3)", dir,
                            o.channels);
    if (!is_dir(dir))
        return kiln_set_err(err, KILN_ERR_NOT_FOUND, "%s: no such folder", dir);
    layout L;
    memset(&L, 0, sizeof L);
    L.dir = dir;
    L.kind = kiln_data_detect(dir);
    kiln_status st = read_layout(&L, err);
    if (st) {
        layout_free(&L);
        return st;
    }
    /* the split, in the set's order; the first training sample fixes the
     * size and the channels */
    int64_t *pick = malloc(sizeof *pick * (size_t)(L.n + 1));
    if (!pick) {
        layout_free(&L);
        return NOMEM(&L);
    }
    int64_t n = 0, first = -1;
    for (int64_t k = 0; k < L.n; k++) {
        if (L.s[k].valid == (valid != 0)) pick[n++] = k;
        if (first < 0 && !L.s[k].valid) first = k;
    }
    if (first < 0) first = L.n ? 0 : -1;
    kiln_imgset *s = calloc(1, sizeof *s);
    kiln_dataset *d = calloc(1, sizeof *d);
    if (!s || !d) {
        st = NOMEM(&L);
        goto fail;
    }
    d->img = s;
    s->n = n;
    s->kind = L.kind;
    s->std = 1;
    s->augment = o.augment && !valid;
    s->aug = o.aug;
    s->c = o.channels;
    s->h = o.height;
    s->w = o.width;
    if (first < 0) {
        st = kiln_set_err(err, KILN_ERR_NOT_FOUND, "%s: no images", dir);
        goto fail;
    }
    if (!s->c || !s->h) {
        char *p = join(dir, L.s[first].image);
        kiln_img im;
        st = p ? kiln_img_decode(p, KILN_IMG_PIXELS, &im, err) : NOMEM(&L);
        free(p);
        if (st) goto fail;
        if (!s->c) s->c = im.c <= 2 ? 1 : 3;
        if (!s->h) {
            s->h = im.h;
            s->w = im.w;
        }
        kiln_img_free(&im);
    }
    size_t img_bytes = (size_t)s->h * s->w * s->c;
    if ((uint64_t)n * img_bytes > ((uint64_t)1 << 40)) {
        st = kiln_set_err(err, KILN_ERR_NOMEM, "%s: %lld images of %dx%dx%d do not fit in memory",
                          dir, (long long)n, s->c, s->h, s->w);
        goto fail;
    }
    s->px = malloc((size_t)n * img_bytes + 1);
    if (L.kind == KILN_DATA_SEGMENTATION) s->mask = malloc((size_t)n * s->h * s->w + 1);
    s->names = calloc((size_t)n + 1, sizeof *s->names);
    if (!s->px || !s->names || (L.kind == KILN_DATA_SEGMENTATION && !s->mask)) {
        st = NOMEM(&L);
        goto fail;
    }
    /* the targets */
    d->n = n;
    d->x_rank = 3;
    d->x_shape[0] = s->c;
    d->x_shape[1] = s->h;
    d->x_shape[2] = s->w;
    d->x_numel = (int64_t)img_bytes;
    d->x = malloc(1);
    int64_t C = L.classes.n;
    switch (L.kind) {
    case KILN_DATA_FOLDERS:
        d->y_dtype = KILN_I32;
        d->y_rank = 0;
        d->y_numel = 1;
        break;
    case KILN_DATA_MULTILABEL:
        d->y_dtype = KILN_F32;
        d->y_rank = 1;
        d->y_shape[0] = C;
        d->y_numel = C;
        break;
    case KILN_DATA_POINTS:
        d->y_dtype = KILN_F32;
        d->y_rank = 1;
        d->y_shape[0] = 2;
        d->y_numel = 2;
        break;
    default: /* segmentation: masks in s->mask */
        d->y_dtype = KILN_I32;
        d->y_rank = 2;
        d->y_shape[0] = s->h;
        d->y_shape[1] = s->w;
        d->y_numel = (int64_t)s->h * s->w;
        break;
    }
    d->y = L.kind == KILN_DATA_SEGMENTATION ? malloc(1)
                                            : calloc((size_t)(n * d->y_numel) + 1, 4);
    if (!d->x || !d->y) {
        st = NOMEM(&L);
        goto fail;
    }
    for (int64_t i = 0; i < n; i++) {
        const sample *sm = &L.s[pick[i]];
        if (!(s->names[i] = dupstr(sm->image))) {
            st = NOMEM(&L);
            goto fail;
        }
        if (L.kind == KILN_DATA_FOLDERS) ((int32_t *)d->y)[i] = sm->label;
        if (L.kind == KILN_DATA_MULTILABEL) {
            float *row = (float *)d->y + i * C;
            const char *p = sm->tags;
            while (*p) {
                while (*p == ' ' || *p == '\t') p++;
                size_t len = strcspn(p, " \t");
                if (!len) break;
                int c = class_of(&L, p, len);
                if (c >= 0) row[c] = 1;
                p += len;
            }
        }
    }
    decoder D;
    memset(&D, 0, sizeof D);
    D.L = &L;
    D.pick = pick;
    D.n = n;
    D.c = s->c;
    D.h = s->h;
    D.w = s->w;
    D.px = s->px;
    D.mask = s->mask;
    D.points = L.kind == KILN_DATA_POINTS ? d->y : NULL;
    if ((st = decode_all(&D, o.threads, err))) goto fail;
    if (C) {
        s->classes = L.classes.v; /* handed over */
        s->nclasses = (int)C;
        L.classes.v = NULL;
        L.classes.n = 0;
    }
    free(pick);
    layout_free(&L);
    *out = d;
    return KILN_OK;
fail:
    free(pick);
    layout_free(&L);
    kiln_dataset_free(d);
    if (!d) kiln_imgset_free(s);
    return st;
}

/* ---- the data set's life -------------------------------------------------- */

void kiln_imgset_free(kiln_imgset *s)
{
    if (!s) return;
    for (int k = 0; k < s->nclasses; k++) free(s->classes[k]);
    free(s->classes);
    free(s->px);
    free(s->mask);
    if (s->names)
        for (int64_t k = 0; k < s->n; k++) free(s->names[k]);
    free(s->names);
    free(s);
}

kiln_data_kind kiln_dataset_kind(const kiln_dataset *d)
{
    return d && d->img ? d->img->kind : KILN_DATA_NONE;
}

const char *const *kiln_dataset_classes(const kiln_dataset *d, int *n)
{
    if (n) *n = d && d->img ? d->img->nclasses : 0;
    return d && d->img && d->img->nclasses ? (const char *const *)d->img->classes : NULL;
}

const char *kiln_dataset_sample_name(const kiln_dataset *d, int64_t i)
{
    if (!d || !d->img || i < 0 || i >= d->n) return NULL;
    return d->img->names[i];
}

/* ---- batches -------------------------------------------------------------- */

void kiln_imgset_numel(const kiln_dataset *d, int h, int w, int64_t *x_numel, int64_t *y_numel)
{
    const kiln_imgset *s = d->img;
    *x_numel = (int64_t)s->c * h * w;
    *y_numel = s->kind == KILN_DATA_SEGMENTATION ? (int64_t)h * w : d->y_numel;
}

void kiln_imgset_gather(const kiln_dataset *d, const int64_t *idx, int64_t n,
                        const kiln_imgview *v, float *x, void *y)
{
    const kiln_imgset *s = d->img;
    const int C = s->c, H = s->h, W = s->w, oh = v->h, ow = v->w;
    const size_t isz = (size_t)H * W * C, plane = (size_t)oh * ow;
    const float lut[2] = {-s->mean / s->std, 1.0f / (255.0f * s->std)};
    float table[256];
    for (int k = 0; k < 256; k++) table[k] = lut[0] + (float)k * lut[1];
    int64_t xn, yn;
    kiln_imgset_numel(d, oh, ow, &xn, &yn);
    for (int64_t i = 0; i < n; i++) {
        int64_t k = idx[i];
        const uint8_t *src = s->px + (size_t)k * isz;
        double m[6];
        if (v->augment)
            kiln_augment_draw(&s->aug, v->seed, v->epoch, k, (double)W / H, ow, oh, m);
        else
            kiln_affine_identity(m);
        int plain = kiln_affine_is_identity(m) && oh == H && ow == W;
        if (x) {
            float *dst = x + (size_t)i * xn;
            if (plain) {
                for (size_t p = 0; p < plane; p++)
                    for (int c = 0; c < C; c++) dst[c * plane + p] = table[src[p * C + c]];
            } else {
                kiln_warp_image(src, W, H, C, m, ow, oh, lut, dst);
            }
        }
        if (!y) continue;
        switch (s->kind) {
        case KILN_DATA_SEGMENTATION: {
            int32_t *dst = (int32_t *)y + (size_t)i * yn;
            const uint8_t *mk = s->mask + (size_t)k * H * W;
            if (plain)
                for (size_t p = 0; p < plane; p++) dst[p] = mk[p];
            else
                kiln_warp_mask(mk, W, H, m, ow, oh, dst);
            break;
        }
        case KILN_DATA_POINTS: {
            const float *p = (const float *)d->y + 2 * k;
            float *dst = (float *)y + 2 * i;
            if (kiln_affine_is_identity(m)) {
                dst[0] = p[0];
                dst[1] = p[1];
            } else {
                kiln_affine_point(m, p, dst);
            }
            break;
        }
        default:
            memcpy((char *)y + (size_t)i * yn * 4, (const char *)d->y + (size_t)k * yn * 4,
                   (size_t)yn * 4);
        }
    }
}

/* ---- statistics and copies ------------------------------------------------ */

void kiln_imgset_stats(const kiln_dataset *d, float *mean, float *std)
{
    const kiln_imgset *s = d->img;
    uint64_t hist[256] = {0};
    size_t total = (size_t)d->n * s->h * s->w * s->c;
    for (size_t k = 0; k < total; k++) hist[s->px[k]]++;
    double m = 0, var = 0;
    if (total) {
        for (int k = 0; k < 256; k++) m += (double)hist[k] * (k / 255.0);
        m /= (double)total;
        for (int k = 0; k < 256; k++) {
            double e = k / 255.0 - m;
            var += (double)hist[k] * e * e;
        }
        var /= (double)total;
    }
    /* as a batch holds them: after the set's normalisation */
    if (mean) *mean = (float)((m - s->mean) / s->std);
    if (std) *std = (float)(sqrt(var) / s->std);
}

static char **dup_strings(char *const *v, int64_t n)
{
    char **o = calloc((size_t)n + 1, sizeof *o);
    if (!o) return NULL;
    for (int64_t k = 0; k < n; k++)
        if (!(o[k] = dupstr(v[k]))) {
            for (int64_t j = 0; j < k; j++) free(o[j]);
            free(o);
            return NULL;
        }
    return o;
}

kiln_status kiln_imgset_head(const kiln_dataset *d, int64_t n, kiln_dataset **out)
{
    const kiln_imgset *s = d->img;
    if (n > d->n) n = d->n;
    kiln_dataset *h = calloc(1, sizeof *h);
    kiln_imgset *t = calloc(1, sizeof *t);
    if (!h || !t) {
        free(h);
        free(t);
        return KILN_ERR_NOMEM;
    }
    *h = *d;
    *t = *s;
    h->img = t;
    h->n = n;
    t->n = n;
    t->px = t->mask = NULL;
    t->classes = t->names = NULL;
    t->nclasses = 0;
    h->x = malloc(1);
    size_t ybytes = s->kind == KILN_DATA_SEGMENTATION ? 0 : (size_t)(n * d->y_numel) * 4;
    h->y = malloc(ybytes + 1);
    size_t isz = (size_t)s->h * s->w * s->c;
    t->px = malloc((size_t)n * isz + 1);
    if (s->mask) t->mask = malloc((size_t)n * s->h * s->w + 1);
    t->names = dup_strings(s->names, n);
    if (s->nclasses) {
        t->classes = dup_strings(s->classes, s->nclasses);
        if (t->classes) t->nclasses = s->nclasses;
    }
    if (!h->x || !h->y || !t->px || (s->mask && !t->mask) || !t->names ||
        (s->nclasses && !t->classes)) {
        if (!t->names) t->n = 0;
        kiln_dataset_free(h);
        return KILN_ERR_NOMEM;
    }
    memcpy(t->px, s->px, (size_t)n * isz);
    if (s->mask) memcpy(t->mask, s->mask, (size_t)n * s->h * s->w);
    if (ybytes) memcpy(h->y, d->y, ybytes);
    *out = h;
    return KILN_OK;
}
