/* ir/util.h — small helpers shared by every layer (ir/ is the lowest one, so
 * anything may include this): formatted error messages, byte order, and
 * opening a regular file for reading.
 */
#ifndef KILN_IR_UTIL_H
#define KILN_IR_UTIL_H

#include "kiln/kiln.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- messages ----------------------------------------------------------- */

/* fmt formatted into a fresh malloc'd string, or NULL (allocation or format
 * failure). ap is consumed as by vsnprintf. */
char *kiln_vasprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
char *kiln_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Returns st; when err is not NULL, first frees *err (a message this call
 * chain set earlier: entry points set *err to NULL first), then sets it to
 * the formatted message, malloc'd (NULL if that fails). */
kiln_status kiln_set_err(char **err, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
kiln_status kiln_vset_err(char **err, kiln_status st, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Returns st; when err is not NULL and errlen is not 0, writes the formatted
 * message into err[0..errlen) (truncated, always NUL-terminated). */
kiln_status kiln_set_errbuf(char *err, size_t errlen, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- byte order --------------------------------------------------------- */

bool kiln_host_is_big_endian(void);

/* Reverses the bytes of each of the n elements of `size` bytes at data. */
void kiln_byteswap(void *data, size_t n, size_t size);

/* ---- files -------------------------------------------------------------- */

/* Opens path read-only (close-on-exec) and checks that it is a regular file.
 * Returns the descriptor, with the file's size in *size when size is not
 * NULL; or -1, nothing left open, with *why set to "cannot open", "cannot
 * stat" or "not a regular file" and *errnum to the errno of the failed call
 * (0 for "not a regular file"). Callers report "PATH: WHY: strerror(ERRNUM)",
 * or "PATH: WHY" when errnum is 0. */
int kiln_open_regular(const char *path, int64_t *size, const char **why, int *errnum);


/* ---- a growing string ----
 * `oom` latches the first allocation failure: later appends do nothing, and
 * the owner checks it once at the end. p is NUL-terminated (or NULL while
 * empty); the owner frees p. */
typedef struct kiln_sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} kiln_sbuf;

/* Room for `extra` more bytes; false (and oom set) when out of memory. */
bool kiln_sb_reserve(kiln_sbuf *b, size_t extra);
void kiln_sb_putn(kiln_sbuf *b, const char *s, size_t len);
void kiln_sb_puts(kiln_sbuf *b, const char *s);
void kiln_sb_putc(kiln_sbuf *b, char c);
void kiln_sb_printf(kiln_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
