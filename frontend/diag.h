/* frontend/diag.h — source positions and the one error a model compile reports.
 *
 * The frontend stops at its first error. fe_error records it (later calls
 * are ignored, so an error deep in a call chain is the one the user sees)
 * and fe_diag_format renders it as
 *
 *     FILE:LINE:COL: error: MESSAGE
 *     <the source line>
 *     <spaces or tabs>^
 *
 * or, for errors with no position (a file that cannot be read, a bad batch
 * size), "FILE: error: MESSAGE". */
#ifndef KILN_FRONTEND_DIAG_H
#define KILN_FRONTEND_DIAG_H

#include "kiln/kiln.h"
#include <stdbool.h>

/* A position in the source: 1-based line and byte column, and the byte
 * offset (which the caret line is computed from). */
typedef struct fe_loc {
    int line, col;
    size_t off;
} fe_loc;

typedef struct fe_diag {
    const char *file; /* name shown in messages */
    const char *text; /* the whole source, NUL-terminated */
    size_t len;
    kiln_status status; /* KILN_OK until the first error */
    bool has_loc;
    fe_loc loc;
    char msg[2560];
} fe_diag;

/* Records the first error (message formatted printf-style) and returns
 * status, so callers can `return fe_error(...)`. */
kiln_status fe_error(fe_diag *d, fe_loc loc, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same without a source position. */
kiln_status fe_error_noloc(fe_diag *d, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Out-of-memory, recorded without formatting. */
kiln_status fe_nomem(fe_diag *d);

/* The recorded error as a malloc'd string (NULL when out of memory). */
char *fe_diag_format(const fe_diag *d);

/* The candidate nearest to `name` by edit distance when it is close enough
 * to suggest ("did you mean ...?"), else NULL. Feed candidates one at a
 * time into a fe_suggest. */
typedef struct fe_suggest {
    const char *name;
    const char *best;
    int best_dist;
} fe_suggest;
void fe_suggest_init(fe_suggest *s, const char *name);
void fe_suggest_add(fe_suggest *s, const char *candidate);
/* " (did you mean 'x'?)" written into buf, or "" when nothing is close. */
const char *fe_suggest_hint(const fe_suggest *s, char *buf, size_t len);

#endif
