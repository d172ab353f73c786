/* runtime/idx.c — the idx reader (see runtime/idx.h).
 *
 * The file is opened with open(2) (so a missing file is told apart from a
 * broken one) and read through zlib's gzdopen/gzread, which passes plain
 * files through unchanged and inflates gzipped ones. Nothing from the
 * header is trusted: the magic must be the expected one, every size must be
 * at least 1 and their product must fit in memory arithmetic, and the data
 * buffer grows with the bytes actually read (in chunks, up to what the
 * header promises), so a header that lies costs at most the file's size.
 */
#include "runtime/idx.h"
#include "ir/util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_CHUNK (4u << 20) /* bytes read per gzread call */

/* Reads up to len bytes; returns how many were read (short at the end of
 * the data) or -1 after a zlib or system error. */
static int64_t read_some(gzFile gz, unsigned char *p, int64_t len)
{
    int64_t got = 0;
    while (got < len) {
        int64_t want = len - got;
        if (want > IDX_CHUNK) want = IDX_CHUNK;
        int r = gzread(gz, p + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += r;
    }
    return got;
}

/* Why gzread stopped: an I/O error, a broken gzip stream, or just the end
 * (plain end of file, or a gzip stream cut short: both are truncation). */
static kiln_status read_error(gzFile gz, const char *path, char *err, size_t errlen)
{
    int errnum = Z_OK;
    const char *msg = gzerror(gz, &errnum);
    switch (errnum) {
    case Z_OK:
    case Z_BUF_ERROR: return KILN_OK; /* the caller reports the truncation */
    case Z_ERRNO:
        return kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: read error: %s", path,
                               strerror(errno));
    case Z_MEM_ERROR:
        return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory", path);
    default:
        /* zlib prefixes its message with the name it was opened under,
         * "<fd:N>: " after gzdopen; the path is ours to give. */
        if (msg && !strncmp(msg, "<fd:", 4)) {
            const char *colon = strstr(msg, ": ");
            if (colon) msg = colon + 2;
        }
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT, "%s: broken gzip data: %s", path,
                               msg && *msg ? msg : "unknown zlib error");
    }
}

static const char *kind_of(uint32_t magic)
{
    return magic == KILN_IDX_MAGIC_IMAGES ? "images" : "labels";
}

/* "60000 images of 28x28" / "1 image of 28x28" / "60000 labels" */
static void describe(const kiln_idx *a, uint32_t magic, char *buf, size_t n)
{
    const char *kind = kind_of(magic);
    int len = a->dims[0] == 1 ? (int)strlen(kind) - 1 : (int)strlen(kind);
    if (a->rank == 3)
        snprintf(buf, n, "%lld %.*s of %lldx%lld", (long long)a->dims[0], len, kind,
                 (long long)a->dims[1], (long long)a->dims[2]);
    else
        snprintf(buf, n, "%lld %.*s", (long long)a->dims[0], len, kind);
}

static kiln_status load_gz(gzFile gz, const char *path, uint32_t magic, kiln_idx *out, char *err,
                           size_t errlen)
{
    const int rank = (int)(magic & 0xffu);
    const int hlen = 4 + 4 * rank;
    unsigned char h[16];
    int64_t got = read_some(gz, h, hlen);
    if (got < 0) {
        kiln_status st = read_error(gz, path, err, errlen);
        if (st) return st;
        got = 0;
    }
    if (got >= 4) {
        uint32_t m = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        if (m != magic)
            return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                                   "%s: bad magic 0x%08x (expected 0x%08x, an idx file of %s)",
                                   path, (unsigned)m, (unsigned)magic, kind_of(magic));
    }
    if (got < hlen) {
        kiln_status st = read_error(gz, path, err, errlen);
        if (st) return st;
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: truncated header: %lld of %d bytes", path, (long long)got,
                               hlen);
    }
    out->rank = rank;
    /* At most 2^62 elements, so that numel * sizeof(float) stays far inside
     * int64_t and size_t on 64-bit hosts; SIZE_MAX bounds 32-bit ones. */
    const uint64_t limit = (uint64_t)SIZE_MAX / 8 < ((uint64_t)1 << 62) ? (uint64_t)SIZE_MAX / 8
                                                                       : ((uint64_t)1 << 62);
    uint64_t numel = 1;
    for (int k = 0; k < rank; k++) {
        const unsigned char *p = h + 4 + 4 * k;
        uint32_t v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (v == 0)
            return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT, "%s: size %d in the header is 0",
                                   path, k);
        out->dims[k] = v;
        if (numel > limit / v) {
            char sizes[64];
            int n = 0;
            for (int j = 0; j < rank; j++) {
                const unsigned char *q = h + 4 + 4 * j;
                uint32_t w = (uint32_t)q[0] << 24 | (uint32_t)q[1] << 16 | (uint32_t)q[2] << 8 | q[3];
                n += snprintf(sizes + n, sizeof sizes - (size_t)n, j ? " x %u" : "%u",
                              (unsigned)w);
            }
            return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                                   "%s: sizes %s in the header overflow", path, sizes);
        }
        numel *= v;
    }
    out->numel = (int64_t)numel;

    /* The data, in a buffer that grows with what is read. */
    int64_t need = out->numel, have = 0, cap = 0;
    unsigned char *buf = NULL;
    for (;;) {
        if (have == cap) {
            if (cap == need) break;
            int64_t ncap = cap ? cap * 2 : (int64_t)IDX_CHUNK;
            if (ncap > need || ncap < cap) ncap = need;
            unsigned char *nb = realloc(buf, (size_t)ncap);
            if (!nb) {
                free(buf);
                return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM,
                                       "%s: out of memory (%lld bytes)", path, (long long)ncap);
            }
            buf = nb;
            cap = ncap;
        }
        int64_t r = read_some(gz, buf + have, cap - have);
        if (r < 0) {
            kiln_status st = read_error(gz, path, err, errlen);
            if (st) {
                free(buf);
                return st;
            }
            break;
        }
        have += r;
        if (have < cap) break; /* the end of the data */
    }
    if (have < need) {
        kiln_status st = read_error(gz, path, err, errlen);
        free(buf);
        if (st) return st;
        char what[128];
        describe(out, magic, what, sizeof what);
        return kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                               "%s: truncated: %s need %lld bytes of data, the file holds %lld",
                               path, what, (long long)need, (long long)have);
    }
    unsigned char extra;
    int r = gzread(gz, &extra, 1);
    if (r != 0) {
        kiln_status st = r < 0 ? read_error(gz, path, err, errlen) : KILN_OK;
        if (!st) {
            char what[128];
            describe(out, magic, what, sizeof what);
            st = kiln_set_errbuf(err, errlen, KILN_ERR_CORRUPT,
                                 "%s: unexpected data after %s (%lld bytes of data)", path, what,
                                 (long long)need);
        }
        free(buf);
        return st;
    }
    out->data = buf;
    return KILN_OK;
}

kiln_status kiln_idx_load(const char *path, uint32_t magic, kiln_idx *out, char *err,
                          size_t errlen)
{
    if (err && errlen) err[0] = '\0';
    if (!out) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "kiln_idx_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "kiln_idx_load: path is NULL");
    if (magic != KILN_IDX_MAGIC_IMAGES && magic != KILN_IDX_MAGIC_LABELS)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID,
                               "%s: kiln_idx_load: unknown magic 0x%08x", path, (unsigned)magic);
    const char *why;
    int e;
    int fd = kiln_open_regular(path, NULL, &why, &e);
    if (fd < 0)
        return e ? kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: %s: %s", path, why, strerror(e))
                 : kiln_set_errbuf(err, errlen, KILN_ERR_IO, "%s: %s", path, why);
    gzFile gz = gzdopen(fd, "rb");
    if (!gz) {
        close(fd);
        return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    gzbuffer(gz, 1u << 17);
    kiln_status st = load_gz(gz, path, magic, out, err, errlen);
    gzclose(gz); /* closes fd */
    if (st) kiln_idx_free(out);
    return st;
}

void kiln_idx_free(kiln_idx *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}
