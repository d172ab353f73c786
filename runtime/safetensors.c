/* runtime/safetensors.c — safetensors reader and writer (see
 * runtime/safetensors.h for the format and the guarantees).
 *
 * The reader opens the file, reads the 8-byte header length, checks it
 * against the file size and KILN_ST_MAX_HEADER before allocating anything,
 * reads the header and parses it with a schema-directed JSON parser: the
 * top-level object maps names to tensor entries (dtype, shape, data_offsets;
 * other keys are skipped) and "__metadata__" to an object of strings. Every
 * value is checked as it is read; the tensors are then checked together
 * (duplicate names, overlapping data). Data is read on demand with pread.
 *
 * The writer builds the header in memory, writes header and data to
 * "<path>.tmp.<pid>" in chunks, fsyncs it, renames it over path and fsyncs
 * the directory.
 */
#include "runtime/safetensors.h"
#include "ir/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

/* A growable string. On allocation failure `oom` is set and appends stop. */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v)
{
    char t[24];
    snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_str(b, t);
}

/* s as a JSON string literal: '"' and '\\' escaped, control bytes as
 * \u00XX, everything else (UTF-8 included) as is. */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", *p);
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* "[2, 3]" into buf. */
static const char *shape_str(char *buf, size_t len, int rank, const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int k = 0; k < rank && o < len; k++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

/* ---- dtypes ------------------------------------------------------------- */

typedef struct st_dtype {
    const char *name;
    kiln_dtype dtype; /* KILN_DTYPE_COUNT: none in kiln */
    size_t size;
    bool supported;
} st_dtype;

static const st_dtype DTYPES[] = {
    {"F32", KILN_F32, 4, true},
    {"F64", KILN_F64, 8, true},
    {"I32", KILN_I32, 4, true},
    {"I64", KILN_I64, 8, true},
    {"U8", KILN_U8, 1, true},
    {"BOOL", KILN_BOOL, 1, true},
    {"F16", KILN_F16, 2, false},
    {"BF16", KILN_BF16, 2, false},
    {"I8", KILN_DTYPE_COUNT, 1, false},
    {"I16", KILN_DTYPE_COUNT, 2, false},
    {"U16", KILN_DTYPE_COUNT, 2, false},
    {"U32", KILN_DTYPE_COUNT, 4, false},
    {"U64", KILN_DTYPE_COUNT, 8, false},
    {"F8_E4M3", KILN_DTYPE_COUNT, 1, false},
    {"F8_E5M2", KILN_DTYPE_COUNT, 1, false},
    {"F8_E8M0", KILN_DTYPE_COUNT, 1, false},
};
#define NDTYPES (sizeof DTYPES / sizeof DTYPES[0])

static const st_dtype *dtype_by_name(const char *s)
{
    for (size_t k = 0; k < NDTYPES; k++)
        if (strcmp(DTYPES[k].name, s) == 0) return &DTYPES[k];
    return NULL;
}

static const st_dtype *dtype_by_kiln(kiln_dtype t)
{
    for (size_t k = 0; k < NDTYPES; k++)
        if (DTYPES[k].dtype == t && t != KILN_DTYPE_COUNT) return &DTYPES[k];
    return NULL;
}

const char *kiln_st_dtype_name(kiln_dtype t)
{
    const st_dtype *d = dtype_by_kiln(t);
    return d ? d->name : NULL;
}

/* ---- the reader's state ------------------------------------------------- */

typedef struct meta_kv {
    char *key, *value;
} meta_kv;

struct kiln_safetensors {
    char *path;
    int fd;
    uint64_t file_size, header_len, data_len;
    kiln_st_info *t;
    char **names; /* names[i] is t[i].name */
    int n, cap;
    int *by_name; /* indices sorted by name */
    meta_kv *meta;
    int nmeta, capmeta;
    bool have_meta;
};

void kiln_safetensors_close(kiln_safetensors *st)
{
    if (!st) return;
    if (st->fd >= 0) close(st->fd);
    for (int i = 0; i < st->n; i++) free(st->names[i]);
    for (int i = 0; i < st->nmeta; i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    free(st->t);
    free(st->names);
    free(st->by_name);
    free(st->meta);
    free(st->path);
    free(st);
}

int kiln_safetensors_count(const kiln_safetensors *st) { return st ? st->n : 0; }

const kiln_st_info *kiln_safetensors_info(const kiln_safetensors *st, int i)
{
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

int kiln_safetensors_find(const kiln_safetensors *st, const char *name)
{
    if (!st || !name) return -1;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[st->by_name[mid]].name, name);
        if (c == 0) return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

int kiln_safetensors_meta_count(const kiln_safetensors *st) { return st ? st->nmeta : 0; }

const char *kiln_safetensors_meta_key(const kiln_safetensors *st, int i)
{
    return st && i >= 0 && i < st->nmeta ? st->meta[i].key : NULL;
}

const char *kiln_safetensors_meta_value(const kiln_safetensors *st, int i)
{
    return st && i >= 0 && i < st->nmeta ? st->meta[i].value : NULL;
}

const char *kiln_safetensors_meta_get(const kiln_safetensors *st, const char *key)
{
    if (!st || !key) return NULL;
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

const char *kiln_safetensors_path(const kiln_safetensors *st) { return st ? st->path : NULL; }
uint64_t kiln_safetensors_header_len(const kiln_safetensors *st) { return st ? st->header_len : 0; }
uint64_t kiln_safetensors_file_size(const kiln_safetensors *st) { return st ? st->file_size : 0; }

/* ---- the JSON header ---------------------------------------------------- */

typedef struct jp {
    const char *s; /* the header (not NUL-terminated) */
    size_t n, i;
    kiln_safetensors *st;
    char **err;
} jp;

static kiln_status jerr(jp *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A malformed-JSON failure at the current position. */
static kiln_status jerr(jp *p, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    char found[32];
    if (p->i >= p->n)
        snprintf(found, sizeof found, "the end of the header");
    else if (p->s[p->i] >= 0x21 && p->s[p->i] < 0x7f)
        snprintf(found, sizeof found, "'%c'", p->s[p->i]);
    else
        snprintf(found, sizeof found, "byte 0x%02x", (unsigned char)p->s[p->i]);
    return kiln_set_err(p->err, KILN_ERR_CORRUPT,
                        "%s: malformed JSON header at byte %zu: %s, found %s", p->st->path, p->i,
                        what, found);
}

static void ws(jp *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static bool peek(jp *p, char c) { return p->i < p->n && p->s[p->i] == c; }

static kiln_status expect(jp *p, char c, const char *what)
{
    ws(p);
    if (!peek(p, c)) return jerr(p, "expected '%c' %s", c, what);
    p->i++;
    return KILN_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool hex4(jp *p, unsigned *v)
{
    if (p->n - p->i < 4) return false;
    unsigned r = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + (size_t)k]);
        if (h < 0) return false;
        r = r << 4 | (unsigned)h;
    }
    *v = r;
    p->i += 4;
    return true;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at p->i (after whitespace) into *out (malloc'd, NUL-terminated).
 * `what` says what the string is, for the message. */
static kiln_status parse_string(jp *p, char **out, const char *what)
{
    *out = NULL;
    ws(p);
    if (!peek(p, '"')) return jerr(p, "expected a string (%s)", what);
    size_t open = p->i++;
    /* find the closing quote: the decoded string is never longer */
    size_t j = p->i;
    while (j < p->n && p->s[j] != '"') j += p->s[j] == '\\' ? 2 : 1;
    if (j >= p->n) {
        p->i = open;
        return jerr(p, "unterminated string (%s)", what);
    }
    char *o = malloc(j - p->i + 1);
    if (!o) return kiln_set_err(p->err, KILN_ERR_NOMEM, "%s: out of memory", p->st->path);
    size_t k = 0;
    while (p->s[p->i] != '"') {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c < 0x20) {
            free(o);
            return jerr(p, "control character in a string (%s)", what);
        }
        if (c != '\\') {
            o[k++] = (char)c;
            p->i++;
            continue;
        }
        size_t esc = p->i++;
        char e = p->s[p->i++]; /* in bounds: the scan above stopped after it */
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (!hex4(p, &cp)) {
                free(o);
                p->i = esc;
                return jerr(p, "bad \\u escape in a string (%s)", what);
            }
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                free(o);
                p->i = esc;
                return jerr(p, "unpaired surrogate in a string (%s)", what);
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                    free(o);
                    p->i = esc;
                    return jerr(p, "unpaired surrogate in a string (%s)", what);
                }
                p->i += 2;
                if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) {
                    free(o);
                    p->i = esc;
                    return jerr(p, "unpaired surrogate in a string (%s)", what);
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0) {
                free(o);
                p->i = esc;
                return jerr(p, "\\u0000 in a string (%s) is not supported", what);
            }
            /* a \u escape (6 bytes, 12 for a pair) never decodes longer */
            k += utf8_put(o + k, cp);
            break;
        }
        default:
            free(o);
            p->i = esc;
            return jerr(p, "bad escape in a string (%s)", what);
        }
    }
    p->i++; /* the closing quote */
    o[k] = '\0';
    *out = o;
    return KILN_OK;
}

/* A non-negative integer up to max (JSON syntax, no fraction or exponent). */
static kiln_status parse_uint(jp *p, uint64_t *v, uint64_t max, const char *what)
{
    ws(p);
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return jerr(p, "expected a non-negative integer (%s)", what);
    size_t start = p->i;
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9') {
        p->i++;
        return jerr(p, "leading zero in an integer (%s)", what);
    }
    uint64_t r = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = (unsigned)(p->s[p->i] - '0');
        if (r > (max - d) / 10) {
            p->i = start;
            return jerr(p, "integer too large (%s)", what);
        }
        r = r * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return jerr(p, "expected an integer (%s)", what);
    *v = r;
    return KILN_OK;
}

/* Skips any JSON value (an entry kiln does not know). */
static kiln_status skip_value(jp *p, int depth)
{
    ws(p);
    if (depth > KILN_ST_MAX_DEPTH) return jerr(p, "nesting deeper than %d", KILN_ST_MAX_DEPTH);
    if (p->i >= p->n) return jerr(p, "expected a value");
    char c = p->s[p->i];
    kiln_status st;
    if (c == '"') {
        char *s;
        if ((st = parse_string(p, &s, "a value"))) return st;
        free(s);
        return KILN_OK;
    }
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        p->i++;
        ws(p);
        if (peek(p, close)) {
            p->i++;
            return KILN_OK;
        }
        for (;;) {
            if (c == '{') {
                char *key;
                if ((st = parse_string(p, &key, "an object key"))) return st;
                free(key);
                if ((st = expect(p, ':', "after an object key"))) return st;
            }
            if ((st = skip_value(p, depth + 1))) return st;
            ws(p);
            if (peek(p, close)) {
                p->i++;
                return KILN_OK;
            }
            if (!peek(p, ','))
                return jerr(p, c == '{' ? "expected ',' or '}' in an object"
                                        : "expected ',' or ']' in an array");
            p->i++;
        }
    }
    static const char *const lits[] = {"true", "false", "null"};
    for (int k = 0; k < 3; k++) {
        size_t l = strlen(lits[k]);
        if (p->n - p->i >= l && memcmp(p->s + p->i, lits[k], l) == 0) {
            p->i += l;
            return KILN_OK;
        }
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        if (c == '-') p->i++;
        size_t d0 = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
        if (p->i == d0) return jerr(p, "expected a digit");
        if (peek(p, '.')) {
            p->i++;
            d0 = p->i;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
            if (p->i == d0) return jerr(p, "expected a digit");
        }
        if (peek(p, 'e') || peek(p, 'E')) {
            p->i++;
            if (peek(p, '+') || peek(p, '-')) p->i++;
            d0 = p->i;
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
            if (p->i == d0) return jerr(p, "expected a digit");
        }
        return KILN_OK;
    }
    return jerr(p, "expected a value");
}

static kiln_status parse_meta(jp *p)
{
    kiln_safetensors *st = p->st;
    kiln_status s;
    if (st->have_meta) return jerr(p, "a second \"__metadata__\" entry");
    st->have_meta = true;
    if ((s = expect(p, '{', "(the value of \"__metadata__\")"))) return s;
    ws(p);
    if (peek(p, '}')) {
        p->i++;
        return KILN_OK;
    }
    for (;;) {
        char *key = NULL, *value = NULL;
        if ((s = parse_string(p, &key, "a metadata key"))) return s;
        if ((s = expect(p, ':', "after a metadata key"))) {
            free(key);
            return s;
        }
        ws(p);
        if (!peek(p, '"')) {
            s = jerr(p, "metadata values must be strings: expected a string for key '%s'", key);
            free(key);
            return s;
        }
        if ((s = parse_string(p, &value, "a metadata value"))) {
            free(key);
            return s;
        }
        if (st->nmeta == st->capmeta) {
            int cap = st->capmeta ? 2 * st->capmeta : 8;
            meta_kv *m = cap < INT_MAX / 2 ? realloc(st->meta, (size_t)cap * sizeof *m) : NULL;
            if (!m) {
                free(key);
                free(value);
                return kiln_set_err(p->err, KILN_ERR_NOMEM, "%s: out of memory", st->path);
            }
            st->meta = m;
            st->capmeta = cap;
        }
        st->meta[st->nmeta].key = key;
        st->meta[st->nmeta].value = value;
        st->nmeta++;
        ws(p);
        if (peek(p, '}')) {
            p->i++;
            return KILN_OK;
        }
        if (!peek(p, ',')) return jerr(p, "expected ',' or '}' in \"__metadata__\"");
        p->i++;
    }
}

/* Checks one tensor entry against itself and the data section. */
static kiln_status check_tensor(jp *p, kiln_st_info *t, const st_dtype *d)
{
    const char *path = p->st->path;
    char sh[256];
    uint64_t numel = 1;
    bool over = false;
    for (int k = 0; k < t->rank; k++) {
        uint64_t dim = (uint64_t)t->shape[k];
        if (dim != 0 && numel > (uint64_t)INT64_MAX / dim) over = true;
        else numel *= dim;
    }
    if (over || numel > (uint64_t)INT64_MAX / d->size || numel * d->size > SIZE_MAX / 2)
        return kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has shape %s, too large",
                            path, t->name, shape_str(sh, sizeof sh, t->rank, t->shape));
    t->numel = (int64_t)numel;
    uint64_t need = numel * d->size;
    if (t->end < t->begin)
        return kiln_set_err(
            p->err, KILN_ERR_CORRUPT,
            "%s: tensor '%s' has data_offsets [%llu, %llu], which end before they begin", path,
            t->name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end - t->begin != need)
        return kiln_set_err(
            p->err, KILN_ERR_CORRUPT,
            "%s: tensor '%s' has data_offsets [%llu, %llu] (%llu bytes) but shape %s of "
            "%s needs %llu bytes",
            path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
            (unsigned long long)(t->end - t->begin), shape_str(sh, sizeof sh, t->rank, t->shape),
            d->name, (unsigned long long)need);
    if (t->end > p->st->data_len)
        return kiln_set_err(
            p->err, KILN_ERR_CORRUPT,
            "%s: tensor '%s' has data_offsets [%llu, %llu] past the end of the data "
            "(%llu bytes): the file is truncated",
            path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
            (unsigned long long)p->st->data_len);
    t->bytes = (size_t)need;
    return KILN_OK;
}

/* The entry of tensor `name` (owned by the caller until it is added). */
static kiln_status parse_tensor(jp *p, const char *name)
{
    kiln_status s;
    if ((s = expect(p, '{', "(the entry of a tensor)"))) return s;
    kiln_st_info t;
    memset(&t, 0, sizeof t);
    t.name = name;
    const st_dtype *d = NULL;
    bool have_dtype = false, have_shape = false, have_off = false;
    const char *path = p->st->path;
    ws(p);
    if (peek(p, '}')) {
        p->i++;
        return kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has no \"dtype\"", path,
                            name);
    }
    for (;;) {
        char *key;
        if ((s = parse_string(p, &key, "a key of a tensor entry"))) return s;
        if ((s = expect(p, ':', "after a key"))) {
            free(key);
            return s;
        }
        int which = !strcmp(key, "dtype") ? 0 : !strcmp(key, "shape") ? 1
                  : !strcmp(key, "data_offsets") ? 2 : 3;
        if ((which == 0 && have_dtype) || (which == 1 && have_shape) || (which == 2 && have_off)) {
            s = kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has two \"%s\" entries",
                             path, name, key);
            free(key);
            return s;
        }
        free(key);
        if (which == 0) {
            char *ds;
            if ((s = parse_string(p, &ds, "the dtype"))) return s;
            d = dtype_by_name(ds);
            if (!d) {
                s = kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has unknown dtype '%s'",
                                 path, name, ds);
                free(ds);
                return s;
            }
            free(ds);
            have_dtype = true;
        } else if (which == 1) {
            if ((s = expect(p, '[', "(the shape)"))) return s;
            int rank = 0;
            ws(p);
            if (peek(p, ']')) {
                p->i++;
            } else {
                for (;;) {
                    uint64_t dim;
                    if ((s = parse_uint(p, &dim, (uint64_t)INT64_MAX, "a dimension"))) return s;
                    if (rank < KILN_MAX_RANK) t.shape[rank] = (int64_t)dim;
                    if (rank < INT_MAX) rank++;
                    ws(p);
                    if (peek(p, ']')) {
                        p->i++;
                        break;
                    }
                    if (!peek(p, ',')) return jerr(p, "expected ',' or ']' in a shape");
                    p->i++;
                }
            }
            if (rank > KILN_MAX_RANK)
                return kiln_set_err(p->err, KILN_ERR_UNSUPPORTED,
                                    "%s: tensor '%s' has rank %d; kiln supports at most %d", path,
                                    name, rank, KILN_MAX_RANK);
            t.rank = rank;
            have_shape = true;
        } else if (which == 2) {
            if ((s = expect(p, '[', "(data_offsets)"))) return s;
            uint64_t v[2] = {0, 0};
            int k = 0;
            ws(p);
            if (!peek(p, ']')) {
                for (;;) {
                    uint64_t x;
                    if ((s = parse_uint(p, &x, UINT64_MAX, "an offset"))) return s;
                    if (k < 2) v[k] = x;
                    if (k < INT_MAX) k++;
                    ws(p);
                    if (peek(p, ']')) break;
                    if (!peek(p, ',')) return jerr(p, "expected ',' or ']' in data_offsets");
                    p->i++;
                }
            }
            p->i++;
            if (k != 2)
                return kiln_set_err(p->err, KILN_ERR_CORRUPT,
                                    "%s: tensor '%s' has %d data_offsets, not 2", path, name, k);
            t.begin = v[0];
            t.end = v[1];
            have_off = true;
        } else {
            if ((s = skip_value(p, 2))) return s;
        }
        ws(p);
        if (peek(p, '}')) {
            p->i++;
            break;
        }
        if (!peek(p, ',')) return jerr(p, "expected ',' or '}' in the entry of tensor '%s'", name);
        p->i++;
    }
    if (!have_dtype)
        return kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has no \"dtype\"", path,
                            name);
    if (!have_shape)
        return kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has no \"shape\"", path,
                            name);
    if (!have_off)
        return kiln_set_err(p->err, KILN_ERR_CORRUPT, "%s: tensor '%s' has no \"data_offsets\"",
                            path, name);
    t.dtype_str = d->name;
    t.dtype = d->dtype;
    t.supported = d->supported;
    t.elem_size = d->size;
    if ((s = check_tensor(p, &t, d))) return s;

    kiln_safetensors *st = p->st;
    if (st->n == st->cap) {
        int cap = st->cap ? 2 * st->cap : 16;
        kiln_st_info *nt = cap < INT_MAX / 2 ? realloc(st->t, (size_t)cap * sizeof *nt) : NULL;
        if (!nt) return kiln_set_err(p->err, KILN_ERR_NOMEM, "%s: out of memory", path);
        st->t = nt;
        char **nn = realloc(st->names, (size_t)cap * sizeof *nn);
        if (!nn) return kiln_set_err(p->err, KILN_ERR_NOMEM, "%s: out of memory", path);
        st->names = nn;
        st->cap = cap;
    }
    st->t[st->n] = t;
    st->names[st->n] = NULL; /* the caller stores the name */
    st->n++;
    return KILN_OK;
}

static kiln_status parse_header(jp *p)
{
    kiln_status s;
    ws(p);
    if (!peek(p, '{')) return jerr(p, "expected '{' at the start of the header");
    p->i++;
    ws(p);
    if (peek(p, '}')) {
        p->i++;
    } else {
        for (;;) {
            char *key;
            if ((s = parse_string(p, &key, "a tensor name"))) return s;
            if ((s = expect(p, ':', "after a tensor name"))) {
                free(key);
                return s;
            }
            if (!strcmp(key, "__metadata__")) {
                free(key);
                if ((s = parse_meta(p))) return s;
            } else {
                if ((s = parse_tensor(p, key))) {
                    free(key);
                    return s;
                }
                p->st->names[p->st->n - 1] = key;
                p->st->t[p->st->n - 1].name = key;
            }
            ws(p);
            if (peek(p, '}')) {
                p->i++;
                break;
            }
            if (!peek(p, ',')) return jerr(p, "expected ',' or '}' after an entry");
            p->i++;
        }
    }
    ws(p);
    if (p->i < p->n) return jerr(p, "expected nothing but spaces after the header object");
    return KILN_OK;
}

/* ---- checks across tensors ---------------------------------------------- */

/* qsort has no context argument: sort pointers into st->t. */
static int by_name_cmp(const void *a, const void *b)
{
    return strcmp((*(const kiln_st_info *const *)a)->name, (*(const kiln_st_info *const *)b)->name);
}

static int by_offset_cmp(const void *a, const void *b)
{
    const kiln_st_info *x = *(const kiln_st_info *const *)a, *y = *(const kiln_st_info *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int meta_cmp(const void *a, const void *b)
{
    return strcmp(((const meta_kv *)a)->key, ((const meta_kv *)b)->key);
}

static kiln_status check_all(kiln_safetensors *st, char **err)
{
    size_t n = (size_t)st->n;
    st->by_name = malloc((n ? n : 1) * sizeof(int));
    const kiln_st_info **ps = malloc((n ? n : 1) * sizeof *ps);
    if (!st->by_name || !ps) {
        free(ps);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", st->path);
    }
    kiln_status s = KILN_OK;
    for (size_t i = 0; i < n; i++) ps[i] = &st->t[i];
    qsort(ps, n, sizeof *ps, by_name_cmp);
    for (size_t k = 0; k < n; k++) st->by_name[k] = (int)(ps[k] - st->t);
    for (size_t k = 1; k < n && !s; k++)
        if (!strcmp(ps[k]->name, ps[k - 1]->name))
            s = kiln_set_err(err, KILN_ERR_CORRUPT, "%s: tensor '%s' appears twice in the header",
                             st->path, ps[k]->name);
    /* overlap: each non-empty tensor must start at or after the furthest end
     * of the non-empty tensors before it */
    qsort(ps, n, sizeof *ps, by_offset_cmp);
    const kiln_st_info *last = NULL;
    for (size_t k = 0; k < n && !s; k++) {
        const kiln_st_info *t = ps[k];
        if (t->begin == t->end) continue;
        if (last && t->begin < last->end)
            s = kiln_set_err(err, KILN_ERR_CORRUPT,
                             "%s: tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] "
                             "overlap",
                             st->path, last->name, (unsigned long long)last->begin,
                             (unsigned long long)last->end, t->name, (unsigned long long)t->begin,
                             (unsigned long long)t->end);
        if (!last || t->end > last->end) last = t;
    }
    free(ps);
    if (!s && st->nmeta > 1) {
        meta_kv *m = malloc((size_t)st->nmeta * sizeof *m);
        if (!m) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", st->path);
        memcpy(m, st->meta, (size_t)st->nmeta * sizeof *m);
        qsort(m, (size_t)st->nmeta, sizeof *m, meta_cmp);
        for (int k = 1; k < st->nmeta && !s; k++)
            if (!strcmp(m[k].key, m[k - 1].key))
                s = kiln_set_err(err, KILN_ERR_CORRUPT, "%s: metadata key '%s' appears twice",
                                 st->path, m[k].key);
        free(m);
    }
    return s;
}

/* ---- opening ------------------------------------------------------------ */

/* Reads exactly n bytes at off; 0, or errno (EIO-ish) / -1 on a short read. */
static int read_at(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *b = buf;
    while (n > 0) {
        size_t want = n > (size_t)1 << 30 ? (size_t)1 << 30 : n;
        ssize_t r = pread(fd, b, want, (off_t)off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno ? errno : EIO;
        }
        if (r == 0) return -1;
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

kiln_status kiln_safetensors_open(const char *path, kiln_safetensors **out, char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_safetensors_open: out is NULL");
    *out = NULL;
    if (!path) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_safetensors_open: path is NULL");
    kiln_safetensors *st = calloc(1, sizeof *st);
    if (!st) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    st->fd = -1;
    st->path = strdup(path);
    if (!st->path) {
        free(st);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    kiln_status s = KILN_OK;
    char *text = NULL;
    int64_t fsize;
    const char *why;
    int e;
    st->fd = kiln_open_regular(path, &fsize, &why, &e);
    if (st->fd < 0) {
        s = e ? kiln_set_err(err, KILN_ERR_IO, "%s: %s: %s", path, why, strerror(e))
              : kiln_set_err(err, KILN_ERR_IO, "%s: %s", path, why);
        goto done;
    }
    st->file_size = (uint64_t)fsize;
    if (st->file_size < 8) {
        s = kiln_set_err(err, KILN_ERR_CORRUPT,
                         "%s: the file is %llu bytes, too short for a safetensors header", path,
                         (unsigned long long)st->file_size);
        goto done;
    }
    unsigned char pre[8];
    e = read_at(st->fd, pre, 8, 0);
    if (e) {
        s = e < 0 ? kiln_set_err(err, KILN_ERR_CORRUPT, "%s: the file is truncated", path)
                  : kiln_set_err(err, KILN_ERR_IO, "%s: read error: %s", path, strerror(e));
        goto done;
    }
    uint64_t n = 0;
    for (int k = 7; k >= 0; k--) n = n << 8 | pre[k];
    st->header_len = n;
    if (n > st->file_size - 8) {
        s = kiln_set_err(err, KILN_ERR_CORRUPT,
                         "%s: header length %llu is larger than the file (%llu bytes)", path,
                         (unsigned long long)n, (unsigned long long)st->file_size);
        goto done;
    }
    if (n > KILN_ST_MAX_HEADER) {
        s = kiln_set_err(err, KILN_ERR_CORRUPT,
                         "%s: header length %llu is larger than the limit (%llu bytes)", path,
                         (unsigned long long)n, (unsigned long long)KILN_ST_MAX_HEADER);
        goto done;
    }
    st->data_len = st->file_size - 8 - n;
    text = malloc(n ? (size_t)n : 1);
    if (!text) {
        s = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory (header of %llu bytes)", path,
                         (unsigned long long)n);
        goto done;
    }
    e = read_at(st->fd, text, (size_t)n, 8);
    if (e) {
        s = e < 0 ? kiln_set_err(err, KILN_ERR_CORRUPT, "%s: the file is truncated", path)
                  : kiln_set_err(err, KILN_ERR_IO, "%s: read error: %s", path, strerror(e));
        goto done;
    }
    jp p = {text, (size_t)n, 0, st, err};
    if ((s = parse_header(&p))) goto done;
    s = check_all(st, err);
done:
    free(text);
    if (s) {
        /* tensors added before the failure own their names via names[] */
        kiln_safetensors_close(st);
        return s;
    }
    *out = st;
    return KILN_OK;
}

kiln_status kiln_safetensors_read(kiln_safetensors *st, int i, void *dst, size_t bytes, char **err)
{
    if (!st || i < 0 || i >= st->n)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_safetensors_read: no tensor %d", i);
    const kiln_st_info *t = &st->t[i];
    if (bytes != t->bytes)
        return kiln_set_err(err, KILN_ERR_INVALID,
                            "%s: tensor '%s' is %zu bytes, but the buffer holds %zu", st->path,
                            t->name, t->bytes, bytes);
    if (!bytes) return KILN_OK;
    if (!dst) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_safetensors_read: dst is NULL");
    int e = read_at(st->fd, dst, bytes, 8 + st->header_len + t->begin);
    if (e < 0)
        return kiln_set_err(err, KILN_ERR_CORRUPT,
                            "%s: the file is truncated (it changed after it "
                            "was opened?) in tensor '%s'",
                            st->path, t->name);
    if (e)
        return kiln_set_err(err, KILN_ERR_IO, "%s: read error in tensor '%s': %s", st->path,
                            t->name, strerror(e));
    if (t->elem_size > 1 && kiln_host_is_big_endian())
        kiln_byteswap(dst, bytes / t->elem_size, t->elem_size);
    if (t->dtype == KILN_BOOL) {
        unsigned char *b = dst;
        for (size_t k = 0; k < bytes; k++) b[k] = b[k] != 0;
    }
    return KILN_OK;
}

/* ---- writing ------------------------------------------------------------ */

typedef struct wentry {
    const kiln_st_tensor *t;
    size_t size;
    uint64_t bytes, begin;
} wentry;

static int wentry_cmp(const void *a, const void *b)
{
    const wentry *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return strcmp(x->t->name, y->t->name);
}

static int cstr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct writer {
    int fd;
    const char *tmp;
    uint64_t done, total;
    const kiln_st_write_options *opt;
    int err; /* errno of a failed write; -1: stopped by the hook */
} writer;

static bool write_all(writer *w, const void *buf, size_t n)
{
    const unsigned char *b = buf;
    while (n > 0) {
        size_t want = n > (size_t)1 << 30 ? (size_t)1 << 30 : n;
        ssize_t r = write(w->fd, b, want);
        if (r < 0) {
            if (errno == EINTR) continue;
            w->err = errno ? errno : EIO;
            return false;
        }
        if (r == 0) {
            w->err = EIO;
            return false;
        }
        b += r;
        n -= (size_t)r;
        w->done += (uint64_t)r;
    }
    if (w->opt && w->opt->progress && w->opt->progress(w->tmp, w->done, w->total, w->opt->user)) {
        w->err = -1;
        return false;
    }
    return true;
}

static void fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

kiln_status kiln_safetensors_write(const char *path, const kiln_st_tensor *tensors, int n,
                                   const char *const *meta, int nmeta,
                                   const kiln_st_write_options *opt, char **err)
{
    if (err) *err = NULL;
    if (!path || !*path)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_safetensors_write: no path");
    if (n < 0 || (n > 0 && !tensors) || nmeta < 0 || (nmeta > 0 && !meta))
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: bad tensor or metadata list", path);
    char sh[256];
    wentry *w = malloc((n ? (size_t)n : 1) * sizeof *w);
    const char **names = malloc((size_t)(n > nmeta ? n : nmeta) * sizeof *names + 1);
    if (!w || !names) {
        free(w);
        free(names);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    kiln_status s = KILN_OK;
    for (int i = 0; i < n && !s; i++) {
        const kiln_st_tensor *t = &tensors[i];
        const st_dtype *d = dtype_by_kiln(t->dtype);
        w[i].t = t;
        if (!t->name || !*t->name || !strcmp(t->name, "__metadata__")) {
            s = kiln_set_err(err, KILN_ERR_INVALID, "%s: tensor %d has an invalid name '%s'", path,
                             i, t->name ? t->name : "(null)");
        } else if (!d || !d->supported) {
            s = kiln_set_err(
                err, KILN_ERR_UNSUPPORTED, "%s: tensor '%s': cannot save dtype %s", path, t->name,
                (unsigned)t->dtype < KILN_DTYPE_COUNT ? kiln_dtype_name(t->dtype) : "(invalid)");
        } else if (t->rank < 0 || t->rank > KILN_MAX_RANK || (t->rank > 0 && !t->shape)) {
            s = kiln_set_err(err, KILN_ERR_INVALID, "%s: tensor '%s' has bad rank %d", path,
                             t->name, t->rank);
        } else {
            uint64_t numel = 1;
            for (int k = 0; k < t->rank && !s; k++) {
                if (t->shape[k] < 0)
                    s = kiln_set_err(err, KILN_ERR_INVALID, "%s: tensor '%s' has shape %s", path,
                                     t->name, shape_str(sh, sizeof sh, t->rank, t->shape));
                else if (t->shape[k] && numel > (uint64_t)INT64_MAX / d->size / (uint64_t)t->shape[k])
                    s = kiln_set_err(err, KILN_ERR_INVALID, "%s: tensor '%s' is too large", path,
                                     t->name);
                else
                    numel *= (uint64_t)t->shape[k];
            }
            w[i].size = d->size;
            w[i].bytes = numel * d->size;
            if (!s && w[i].bytes && !t->data)
                s = kiln_set_err(err, KILN_ERR_INVALID, "%s: tensor '%s' has no data", path,
                                 t->name);
        }
        names[i] = t->name;
    }
    for (int k = 0; k < nmeta && !s; k++) {
        if (!meta[2 * k] || !meta[2 * k + 1])
            s = kiln_set_err(err, KILN_ERR_INVALID, "%s: metadata entry %d is NULL", path, k);
    }
    /* duplicates */
    if (!s && n > 1) {
        qsort(names, (size_t)n, sizeof *names, cstr_cmp);
        for (int k = 1; k < n && !s; k++)
            if (!strcmp(names[k], names[k - 1]))
                s = kiln_set_err(err, KILN_ERR_INVALID, "%s: two tensors are called '%s'", path,
                                 names[k]);
    }
    if (!s && nmeta > 1) {
        for (int k = 0; k < nmeta; k++) names[k] = meta[2 * k];
        qsort(names, (size_t)nmeta, sizeof *names, cstr_cmp);
        for (int k = 1; k < nmeta && !s; k++)
            if (!strcmp(names[k], names[k - 1]))
                s = kiln_set_err(err, KILN_ERR_INVALID, "%s: two metadata entries are called '%s'",
                                 path, names[k]);
    }
    free(names);
    if (s) {
        free(w);
        return s;
    }

    /* the header */
    qsort(w, (size_t)n, sizeof *w, wentry_cmp);
    sbuf h = {0};
    sb_put(&h, "\0\0\0\0\0\0\0\0", 8); /* the length, filled in below */
    sb_put(&h, "{", 1);
    bool first = true;
    if (nmeta > 0) {
        sb_str(&h, "\"__metadata__\":{");
        for (int k = 0; k < nmeta; k++) {
            if (k) sb_put(&h, ",", 1);
            sb_json_string(&h, meta[2 * k]);
            sb_put(&h, ":", 1);
            sb_json_string(&h, meta[2 * k + 1]);
        }
        sb_put(&h, "}", 1);
        first = false;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const kiln_st_tensor *t = w[i].t;
        if (!first) sb_put(&h, ",", 1);
        first = false;
        sb_json_string(&h, t->name);
        sb_str(&h, ":{\"dtype\":\"");
        sb_str(&h, kiln_st_dtype_name(t->dtype));
        sb_str(&h, "\",\"shape\":[");
        for (int k = 0; k < t->rank; k++) {
            if (k) sb_put(&h, ",", 1);
            sb_u64(&h, (uint64_t)t->shape[k]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        w[i].begin = off;
        sb_u64(&h, off);
        sb_put(&h, ",", 1);
        if (w[i].bytes > UINT64_MAX - off) {
            free(h.s);
            free(w);
            return kiln_set_err(err, KILN_ERR_INVALID, "%s: tensors too large", path);
        }
        off += w[i].bytes;
        sb_u64(&h, off);
        sb_str(&h, "]}");
    }
    sb_put(&h, "}", 1);
    while (!h.oom && h.n % 8) sb_put(&h, " ", 1);
    if (h.oom) {
        free(h.s);
        free(w);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    uint64_t hl = h.n - 8;
    for (int k = 0; k < 8; k++) h.s[k] = (char)(unsigned char)(hl >> (8 * k));

    /* the temporary file */
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!tmp) {
        free(h.s);
        free(w);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    writer wr = {-1, tmp, 0, h.n + off, opt, 0};
    wr.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (wr.fd < 0) {
        s = kiln_set_err(err, KILN_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        free(h.s);
        free(w);
        return s;
    }
    bool ok = write_all(&wr, h.s, h.n);
    free(h.s);
    size_t chunk = opt && opt->chunk ? opt->chunk : (size_t)1 << 20;
    bool swap = kiln_host_is_big_endian();
    unsigned char *cbuf = NULL;
    if (ok && swap) {
        chunk -= chunk % 8;
        if (!chunk) chunk = 8;
        cbuf = malloc(chunk);
        if (!cbuf) {
            ok = false;
            wr.err = ENOMEM;
        }
    }
    for (int i = 0; i < n && ok; i++) {
        const unsigned char *src = w[i].t->data;
        for (uint64_t o = 0; o < w[i].bytes && ok; o += chunk) {
            size_t len = w[i].bytes - o < chunk ? (size_t)(w[i].bytes - o) : chunk;
            if (swap && w[i].size > 1) {
                memcpy(cbuf, src + o, len);
                kiln_byteswap(cbuf, len / w[i].size, w[i].size);
                ok = write_all(&wr, cbuf, len);
            } else {
                ok = write_all(&wr, src + o, len);
            }
        }
    }
    free(cbuf);
    free(w);
    if (ok && fsync(wr.fd) != 0 && errno != EINVAL && errno != EROFS) {
        ok = false;
        wr.err = errno;
    }
    if (close(wr.fd) != 0 && ok) {
        ok = false;
        wr.err = errno ? errno : EIO;
    }
    if (!ok) {
        if (wr.err == -1)
            s = kiln_set_err(err, KILN_ERR_IO, "%s: writing %s was stopped", path, tmp);
        else
            s = kiln_set_err(err, KILN_ERR_IO, "%s: cannot write %s: %s", path, tmp,
                             strerror(wr.err));
        unlink(tmp);
        free(tmp);
        return s;
    }
    if (rename(tmp, path) != 0) {
        s = kiln_set_err(err, KILN_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp,
                         strerror(errno));
        unlink(tmp);
        free(tmp);
        return s;
    }
    free(tmp);
    fsync_dir(path);
    return KILN_OK;
}
