/* runtime/npy.c — NumPy .npy reader and writer (see runtime/npy.h).
 *
 * Layout of a .npy file: the magic "\x93NUMPY", a major and a minor version
 * byte, the header length (2 bytes little-endian in 1.0, 4 bytes in 2.0 and
 * 3.0), the header — a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (16, 1, 28, 28), }
 * padded with spaces and ending in '\n' — and then the raw elements.
 *
 * The reader never trusts a number from the file: the header length is
 * checked against KILN_NPY_MAX_HEADER and the file size before it is read,
 * the shape's product against overflow, and the data length against the
 * file size before anything is allocated for it.
 */
#include "runtime/npy.h"
#include "ir/util.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const unsigned char NPY_MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

const char *kiln_npy_descr(kiln_dtype t)
{
    switch (t) {
    case KILN_F32: return "<f4";
    case KILN_F64: return "<f8";
    case KILN_I32: return "<i4";
    case KILN_I64: return "<i8";
    case KILN_U8: return "|u1";
    case KILN_BOOL: return "|b1";
    default: return NULL;
    }
}

/* ---- the header dict ---------------------------------------------------- */

typedef struct hdr {
    const char *s; /* the header text (not NUL-terminated) */
    size_t n, i;   /* its length and the read position */
    const char *path;
    char *err;
    size_t errlen;
} hdr;

static void hskip(hdr *h)
{
    while (h->i < h->n && (h->s[h->i] == ' ' || h->s[h->i] == '\t' || h->s[h->i] == '\n' ||
                           h->s[h->i] == '\r'))
        h->i++;
}

static kiln_status hbad(hdr *h, const char *what)
{
    return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_CORRUPT,
                           "%s: unparsable header: %s at byte %zu of the header%s", h->path, what,
                           h->i, h->i >= h->n ? " (its end)" : "");
}

static bool hpeek(hdr *h, char c) { return h->i < h->n && h->s[h->i] == c; }

/* A Python string literal without escapes, into buf (truncated at len-1). */
static kiln_status hstring(hdr *h, char *buf, size_t len)
{
    if (h->i >= h->n || (h->s[h->i] != '\'' && h->s[h->i] != '"'))
        return hbad(h, "expected a quoted string");
    char q = h->s[h->i++];
    size_t k = 0;
    while (h->i < h->n && h->s[h->i] != q) {
        if (h->s[h->i] == '\\') return hbad(h, "escape sequence in a string");
        if (h->s[h->i] == '\n') return hbad(h, "unterminated string");
        if (k + 1 < len) buf[k++] = h->s[h->i];
        h->i++;
    }
    if (h->i >= h->n) return hbad(h, "unterminated string");
    h->i++;
    buf[k] = '\0';
    return KILN_OK;
}

static bool hword(hdr *h, const char *w)
{
    size_t l = strlen(w);
    if (h->n - h->i < l || memcmp(h->s + h->i, w, l) != 0) return false;
    /* the word must end there */
    if (h->i + l < h->n) {
        char c = h->s[h->i + l];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_')
            return false;
    }
    h->i += l;
    return true;
}

/* A shape tuple "(a, b, )", "()" or "(a,)"; Python 2's "3L" is accepted. */
static kiln_status hshape(hdr *h, int *rank, int64_t *shape)
{
    if (!hpeek(h, '(')) return hbad(h, "expected '(' to open the shape");
    h->i++;
    int r = 0;
    hskip(h);
    while (!hpeek(h, ')')) {
        if (h->i >= h->n || h->s[h->i] < '0' || h->s[h->i] > '9') {
            if (hpeek(h, '-'))
                return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_CORRUPT,
                                       "%s: negative dimension in shape at byte %zu of the header",
                                       h->path, h->i);
            return hbad(h, "expected a dimension in the shape");
        }
        int64_t d = 0;
        while (h->i < h->n && h->s[h->i] >= '0' && h->s[h->i] <= '9') {
            int digit = h->s[h->i] - '0';
            if (d > (INT64_MAX - digit) / 10)
                return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_CORRUPT,
                                       "%s: shape overflow: dimension %d does not fit in 64 bits",
                                       h->path, r);
            d = d * 10 + digit;
            h->i++;
        }
        if (hpeek(h, 'L')) h->i++;
        if (r >= KILN_MAX_RANK)
            return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_UNSUPPORTED,
                                   "%s: the array has more than %d dimensions, kiln's maximum rank",
                                   h->path, KILN_MAX_RANK);
        shape[r++] = d;
        hskip(h);
        if (hpeek(h, ',')) {
            h->i++;
            hskip(h);
        } else if (!hpeek(h, ')')) {
            return hbad(h, "expected ',' or ')' in the shape");
        }
    }
    h->i++;
    *rank = r;
    return KILN_OK;
}

/* Maps a descr to a dtype; *swap is set when its byte order differs from the
 * host's. */
static kiln_status hdtype(hdr *h, const char *d, kiln_dtype *t, bool *swap)
{
    static const struct {
        char kind;
        char size;
        kiln_dtype t;
    } known[] = {{'f', '4', KILN_F32}, {'f', '8', KILN_F64}, {'i', '4', KILN_I32},
                 {'i', '8', KILN_I64}, {'u', '1', KILN_U8},  {'b', '1', KILN_BOOL}};
    size_t l = strlen(d);
    if (l == 3 && (d[0] == '<' || d[0] == '>' || d[0] == '|' || d[0] == '=')) {
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
            if (d[1] != known[k].kind || d[2] != known[k].size) continue;
            bool onebyte = known[k].size == '1';
            if (d[0] == '|' && !onebyte) break; /* '|' is for byte-order-free types */
            *t = known[k].t;
            bool big = d[0] == '>' || (d[0] == '=' && kiln_host_is_big_endian());
            *swap = !onebyte && big != kiln_host_is_big_endian();
            return KILN_OK;
        }
    }
    /* A well-formed numpy typestr kiln has no dtype for, or garbage? */
    bool typestr = l >= 2 && strchr("<>|=", d[0]) && strchr("biufcmMOSUVa", d[1]);
    for (size_t k = 2; typestr && k < l; k++) typestr = d[k] >= '0' && d[k] <= '9';
    if (typestr)
        return kiln_set_errbuf(
            h->err, h->errlen, KILN_ERR_UNSUPPORTED,
            "%s: dtype '%s' is not supported (kiln reads <f4 <f8 <i4 <i8 |u1 |b1)", h->path, d);
    return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_CORRUPT, "%s: unknown dtype '%s'", h->path,
                           d);
}

typedef struct npy_meta {
    kiln_dtype dtype;
    bool swap;
    int rank;
    int64_t shape[KILN_MAX_RANK];
} npy_meta;

static kiln_status parse_header(hdr *h, npy_meta *m)
{
    bool have_descr = false, have_fortran = false, have_shape = false, fortran = false;
    char descr[64] = "";
    kiln_status st;
    hskip(h);
    if (!hpeek(h, '{')) return hbad(h, "expected '{'");
    h->i++;
    hskip(h);
    while (!hpeek(h, '}')) {
        char key[32];
        if ((st = hstring(h, key, sizeof key))) return st;
        hskip(h);
        if (!hpeek(h, ':')) return hbad(h, "expected ':' after a key");
        h->i++;
        hskip(h);
        if (!strcmp(key, "descr")) {
            if (have_descr) return hbad(h, "duplicate key 'descr'");
            if (hpeek(h, '['))
                return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_UNSUPPORTED,
                                       "%s: structured dtypes are not supported", h->path);
            if ((st = hstring(h, descr, sizeof descr))) return st;
            have_descr = true;
        } else if (!strcmp(key, "fortran_order")) {
            if (have_fortran) return hbad(h, "duplicate key 'fortran_order'");
            if (hword(h, "True")) fortran = true;
            else if (hword(h, "False")) fortran = false;
            else return hbad(h, "expected True or False for 'fortran_order'");
            have_fortran = true;
        } else if (!strcmp(key, "shape")) {
            if (have_shape) return hbad(h, "duplicate key 'shape'");
            if ((st = hshape(h, &m->rank, m->shape))) return st;
            have_shape = true;
        } else {
            return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_CORRUPT,
                                   "%s: unparsable header: unexpected key '%s'", h->path, key);
        }
        hskip(h);
        if (hpeek(h, ',')) {
            h->i++;
            hskip(h);
        } else if (!hpeek(h, '}')) {
            return hbad(h, "expected ',' or '}'");
        }
    }
    h->i++;
    hskip(h);
    if (h->i != h->n) return hbad(h, "unexpected text after '}'");
    if (!have_descr || !have_fortran || !have_shape)
        return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_CORRUPT,
                               "%s: unparsable header: missing key '%s'", h->path,
                               !have_descr     ? "descr"
                               : !have_fortran ? "fortran_order"
                                               : "shape");
    if ((st = hdtype(h, descr, &m->dtype, &m->swap))) return st;
    if (fortran && m->rank > 1)
        return kiln_set_errbuf(h->err, h->errlen, KILN_ERR_UNSUPPORTED,
                               "%s: fortran_order arrays are not supported: save a C-ordered array "
                               "(numpy.ascontiguousarray)",
                               h->path);
    return KILN_OK;
}

/* ---- loading ------------------------------------------------------------ */

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static kiln_status load_file(FILE *f, const char *path, int64_t fsize, kiln_npy *out, char *err,
                             size_t errlen)
{
    unsigned char pre[12];
    size_t got = fread(pre, 1, 8, f);
    if (ferror(f))
        return kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: read error: %s", path,
                               strerror(errno));
    if (got == 0)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT, "%s: empty file, not a .npy file",
                               path);
    if (memcmp(pre, NPY_MAGIC, got < 6 ? got : 6) != 0)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT, "%s: not a .npy file (bad magic)",
                               path);
    if (got < 8)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: truncated: %zu bytes, shorter than the .npy preamble", path,
                               got);
    int major = pre[6], minor = pre[7];
    if (major < 1 || major > 3 || minor != 0)
        return kiln_set_errbuf(
            err, errlen, KILN_ERR_UNSUPPORTED,
            "%s: .npy format version %d.%d is not supported (1.0, 2.0 and 3.0 are)", path, major,
            minor);
    size_t lenbytes = major == 1 ? 2 : 4;
    if (fread(pre + 8, 1, lenbytes, f) != lenbytes)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: truncated: the file ends inside the header length", path);
    uint32_t hlen = major == 1 ? (uint32_t)pre[8] | (uint32_t)pre[9] << 8 : le32(pre + 8);
    int64_t off = 8 + (int64_t)lenbytes;
    if (hlen > KILN_NPY_MAX_HEADER)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: header too long (%lu bytes, at most %d)", path,
                               (unsigned long)hlen, KILN_NPY_MAX_HEADER);
    if ((int64_t)hlen > fsize - off)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: truncated: the header is %lu bytes but only %lld follow", path,
                               (unsigned long)hlen, (long long)(fsize - off));
    char *text = malloc(hlen ? hlen : 1);
    if (!text) return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory", path);
    if (fread(text, 1, hlen, f) != hlen) {
        free(text);
        return kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: read error in the header", path);
    }
    off += hlen;
    hdr h = {text, hlen, 0, path, err, errlen};
    npy_meta m;
    memset(&m, 0, sizeof m);
    kiln_status st = parse_header(&h, &m);
    free(text);
    if (st) return st;

    size_t size = kiln_dtype_size(m.dtype);
    int64_t numel = 1;
    for (int k = 0; k < m.rank; k++) {
        if (m.shape[k] != 0 && numel > INT64_MAX / m.shape[k])
            return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                                   "%s: shape overflow: the element count does not fit in 64 bits",
                                   path);
        numel *= m.shape[k];
    }
    if (numel > INT64_MAX / (int64_t)size || (uint64_t)numel * size > (uint64_t)SIZE_MAX / 2)
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: shape overflow: %lld elements of %zu bytes", path,
                               (long long)numel, size);
    int64_t need = numel * (int64_t)size, have = fsize - off;
    if (have != need)
        return kiln_set_errbuf(
            err, errlen, KILN_ERR_CORRUPT,
            "%s: data is %lld bytes but the shape needs %lld (%lld elements of %zu "
            "bytes)",
            path, (long long)have, (long long)need, (long long)numel, size);
    void *data = malloc(need ? (size_t)need : 1);
    if (!data)
        return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory (%lld bytes)", path,
                               (long long)need);
    if (fread(data, 1, (size_t)need, f) != (size_t)need) {
        free(data);
        return kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: read error in the data", path);
    }
    if (m.swap) kiln_byteswap(data, (size_t)numel, size);
    if (m.dtype == KILN_BOOL) {
        unsigned char *b = data;
        for (int64_t k = 0; k < numel; k++) b[k] = b[k] != 0;
    }
    out->dtype = m.dtype;
    out->rank = m.rank;
    memcpy(out->shape, m.shape, sizeof m.shape);
    out->numel = numel;
    out->data = data;
    return KILN_OK;
}

kiln_status kiln_npy_load(const char *path, kiln_npy *out, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!out) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "kiln_npy_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "kiln_npy_load: path is NULL");
    int64_t fsize;
    const char *why;
    int e;
    int fd = kiln_open_regular(path, &fsize, &why, &e);
    if (fd < 0)
        return e ? kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: %s: %s", path, why, strerror(e))
                 : kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: %s", path, why);
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        e = errno;
        close(fd);
        return kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    kiln_status st = load_file(f, path, fsize, out, err, errlen);
    fclose(f);
    if (st) memset(out, 0, sizeof *out);
    return st;
}

void kiln_npy_free(kiln_npy *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

double kiln_npy_get(const kiln_npy *a, int64_t k)
{
    const unsigned char *p = a->data;
    switch (a->dtype) {
    case KILN_F32: {
        float v;
        memcpy(&v, p + 4 * k, 4);
        return v;
    }
    case KILN_F64: {
        double v;
        memcpy(&v, p + 8 * k, 8);
        return v;
    }
    default: return (double)kiln_npy_get_int(a, k);
    }
}

int64_t kiln_npy_get_int(const kiln_npy *a, int64_t k)
{
    const unsigned char *p = a->data;
    switch (a->dtype) {
    case KILN_I32: {
        int32_t v;
        memcpy(&v, p + 4 * k, 4);
        return v;
    }
    case KILN_I64: {
        int64_t v;
        memcpy(&v, p + 8 * k, 8);
        return v;
    }
    case KILN_U8: return p[k];
    case KILN_BOOL: return p[k] != 0;
    default: return 0;
    }
}

kiln_status kiln_npy_to_f64(const kiln_npy *a, double *out)
{
    if (!a || !out || (a->numel > 0 && !a->data)) return KILN_ERR_INVALID;
    if (a->dtype != KILN_F32 && a->dtype != KILN_F64 && a->dtype != KILN_I32 &&
        a->dtype != KILN_I64 && a->dtype != KILN_U8 && a->dtype != KILN_BOOL)
        return KILN_ERR_UNSUPPORTED;
    for (int64_t k = 0; k < a->numel; k++) out[k] = kiln_npy_get(a, k);
    return KILN_OK;
}

/* ---- saving ------------------------------------------------------------- */

static kiln_status write_all(FILE *f, const void *p, size_t n, int *e)
{
    if (fwrite(p, 1, n, f) == n) return KILN_OK;
    *e = errno ? errno : EIO;
    return KILN_ERR_IO;
}

kiln_status kiln_npy_save(const char *path, kiln_dtype t, int rank, const int64_t *shape,
                          const void *data, char *err, size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!path) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "kiln_npy_save: path is NULL");
    const char *descr = kiln_npy_descr(t);
    if (!descr)
        return kiln_set_errbuf(err, errlen, KILN_ERR_UNSUPPORTED,
                               "%s: cannot save dtype %s as .npy", path,
                               (unsigned)t < KILN_DTYPE_COUNT ? kiln_dtype_name(t) : "(invalid)");
    if (rank < 0 || rank > KILN_MAX_RANK || (rank > 0 && !shape))
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: bad rank %d", path, rank);
    size_t size = kiln_dtype_size(t);
    int64_t numel = 1;
    for (int k = 0; k < rank; k++) {
        if (shape[k] < 0)
            return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: negative dimension %lld",
                                   path, (long long)shape[k]);
        if (shape[k] != 0 && numel > INT64_MAX / (int64_t)size / shape[k])
            return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: shape overflow", path);
        numel *= shape[k];
    }
    if (numel > 0 && !data)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: data is NULL", path);
    if ((uint64_t)numel * size > (uint64_t)SIZE_MAX / 2)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: array too large", path);

    /* The header: dict, spaces, '\n', so that the data starts 64-aligned. */
    char head[512];
    int n = snprintf(head, sizeof head, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     descr);
    for (int k = 0; k < rank; k++)
        n += snprintf(head + n, sizeof head - (size_t)n, k ? ", %lld" : "%lld",
                      (long long)shape[k]);
    n += snprintf(head + n, sizeof head - (size_t)n, rank == 1 ? ",), }" : "), }");
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    size_t hlen = padded - 10;
    if (hlen >= sizeof head)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INTERNAL, "%s: header overflow", path);
    memset(head + n, ' ', hlen - (size_t)n - 1);
    head[hlen - 1] = '\n';
    unsigned char pre[10];
    memcpy(pre, NPY_MAGIC, 6);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (unsigned char)(hlen & 0xff);
    pre[9] = (unsigned char)(hlen >> 8);

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        kiln_status st = kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: cannot create: %s", tmp,
                                         strerror(errno));
        free(tmp);
        return st;
    }
    int e = 0;
    kiln_status st = write_all(f, pre, sizeof pre, &e);
    if (!st) st = write_all(f, head, hlen, &e);
    size_t bytes = (size_t)numel * size;
    if (!st && bytes) {
        if (size > 1 && kiln_host_is_big_endian()) {
            /* swap through a bounded buffer so data stays untouched */
            unsigned char buf[4096];
            const unsigned char *p = data;
            for (size_t o = 0; o < bytes && !st; o += sizeof buf) {
                size_t c = bytes - o < sizeof buf ? bytes - o : sizeof buf;
                memcpy(buf, p + o, c);
                kiln_byteswap(buf, c / size, size);
                st = write_all(f, buf, c, &e);
            }
        } else {
            st = write_all(f, data, bytes, &e);
        }
    }
    if (!st && fflush(f) != 0) {
        st = KILN_ERR_IO;
        e = errno;
    }
    /* fsync so that the rename never exposes data still in flight */
    if (!st && fsync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS) {
        st = KILN_ERR_IO;
        e = errno;
    }
    if (fclose(f) != 0 && !st) {
        st = KILN_ERR_IO;
        e = errno;
    }
    if (st) {
        kiln_set_errbuf(err, errlen, st, "%s: write error: %s", tmp, strerror(e));
        remove(tmp);
    } else if (rename(tmp, path) != 0) {
        e = errno;
        st = kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: cannot rename %s to it: %s", path, tmp,
                             strerror(e));
        remove(tmp);
    }
    free(tmp);
    return st;
}
