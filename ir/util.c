/* ir/util.c — small helpers shared by every layer (see ir/util.h). */
#include "ir/util.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- messages ----------------------------------------------------------- */

char *kiln_vasprintf(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *kiln_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = kiln_vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

kiln_status kiln_vset_err(char **err, kiln_status st, const char *fmt, va_list ap)
{
    if (!err) return st;
    free(*err);
    *err = kiln_vasprintf(fmt, ap);
    return st;
}

kiln_status kiln_set_err(char **err, kiln_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kiln_vset_err(err, st, fmt, ap);
    va_end(ap);
    return st;
}

kiln_status kiln_set_errbuf(char *err, size_t errlen, kiln_status st, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* ---- byte order --------------------------------------------------------- */

bool kiln_host_is_big_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 0;
}

void kiln_byteswap(void *data, size_t n, size_t size)
{
    unsigned char *p = data;
    for (size_t i = 0; i < n; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

/* ---- files -------------------------------------------------------------- */

int kiln_open_regular(const char *path, int64_t *size, const char **why, int *errnum)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = "cannot open";
        *errnum = errno;
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        *why = "cannot stat";
        *errnum = errno;
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        *why = "not a regular file";
        *errnum = 0;
        close(fd);
        return -1;
    }
    if (size) *size = (int64_t)sb.st_size;
    return fd;
}

/* ---- a growing string ---- */

bool kiln_sb_reserve(kiln_sbuf *b, size_t extra)
{
    if (b->oom) return false;
    if (b->n + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
        b->oom = true;
        return false;
    }
    b->p = np;
    b->cap = cap;
    return true;
}

void kiln_sb_putn(kiln_sbuf *b, const char *s, size_t len)
{
    if (!kiln_sb_reserve(b, len)) return;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

void kiln_sb_puts(kiln_sbuf *b, const char *s) { kiln_sb_putn(b, s, strlen(s)); }
void kiln_sb_putc(kiln_sbuf *b, char c) { kiln_sb_putn(b, &c, 1); }

void kiln_sb_printf(kiln_sbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (len < 0) return;
    if ((size_t)len < sizeof small) {
        kiln_sb_putn(b, small, (size_t)len);
        return;
    }
    if (!kiln_sb_reserve(b, (size_t)len)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)len;
}
