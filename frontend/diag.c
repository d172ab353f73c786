/* frontend/diag.c — the first error of a model compile, rendered with its
 * source line and a caret; "did you mean" suggestions. */
#include "frontend/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void record(fe_diag *d, bool has_loc, fe_loc loc, kiln_status status, const char *fmt,
                   va_list ap)
{
    d->status = status;
    d->has_loc = has_loc;
    d->loc = loc;
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
}

kiln_status fe_error(fe_diag *d, fe_loc loc, kiln_status status, const char *fmt, ...)
{
    if (d->status != KILN_OK) return d->status;
    va_list ap;
    va_start(ap, fmt);
    record(d, true, loc, status, fmt, ap);
    va_end(ap);
    return status;
}

kiln_status fe_error_noloc(fe_diag *d, kiln_status status, const char *fmt, ...)
{
    if (d->status != KILN_OK) return d->status;
    va_list ap;
    va_start(ap, fmt);
    record(d, false, (fe_loc){0, 0, 0}, status, fmt, ap);
    va_end(ap);
    return status;
}

kiln_status fe_nomem(fe_diag *d)
{
    if (d->status != KILN_OK) return d->status;
    d->status = KILN_ERR_NOMEM;
    d->has_loc = false;
    snprintf(d->msg, sizeof d->msg, "out of memory");
    return d->status;
}

char *fe_diag_format(const fe_diag *d)
{
    const char *file = d->file ? d->file : "<model>";
    if (!d->has_loc || !d->text) {
        size_t n = strlen(file) + strlen(d->msg) + 16;
        char *s = malloc(n);
        if (s) snprintf(s, n, "%s: error: %s\n", file, d->msg);
        return s;
    }
    size_t off = d->loc.off <= d->len ? d->loc.off : d->len;
    size_t start = off;
    while (start > 0 && d->text[start - 1] != '\n') start--;
    size_t end = off;
    while (end < d->len && d->text[end] != '\n') end++;
    size_t line_end = end;
    if (line_end > start && d->text[line_end - 1] == '\r') line_end--;
    size_t n = strlen(file) + strlen(d->msg) + 2 * (end - start) + 64;
    char *s = malloc(n);
    if (!s) return NULL;
    int o = snprintf(s, n, "%s:%d:%d: error: %s\n%.*s\n", file, d->loc.line, d->loc.col, d->msg,
                     (int)(line_end - start), d->text + start);
    size_t p = (size_t)o;
    /* The caret line keeps the source's tabs, so the caret lines up however
     * wide a tab is shown; a multi-byte UTF-8 character takes one column. */
    for (size_t i = start; i < off; i++) {
        unsigned char c = (unsigned char)d->text[i];
        if ((c & 0xC0) == 0x80) continue;
        s[p++] = c == '\t' ? '\t' : ' ';
    }
    s[p++] = '^';
    s[p++] = '\n';
    s[p] = 0;
    return s;
}

/* ---- suggestions ---- */

/* Edit distance counting an insertion, a deletion, a substitution or a swap
 * of two neighbours as one edit (optimal string alignment), so "rleu" is one
 * edit from "relu". Names longer than 63 bytes never match. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 1000;
    int rows[3][64], *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int best = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < best) best = prev[j] + 1;
            if (cur[j - 1] + 1 < best) best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
        int *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

void fe_suggest_init(fe_suggest *s, const char *name)
{
    s->name = name;
    s->best = NULL;
    s->best_dist = 1000;
}

void fe_suggest_add(fe_suggest *s, const char *candidate)
{
    if (!candidate || strcmp(candidate, s->name) == 0) return;
    int dist = edit_distance(s->name, candidate);
    /* Close enough: a third of the name's length, at least one edit. */
    int limit = (int)strlen(s->name) / 3;
    if (limit < 1) limit = 1;
    if (dist <= limit && dist < s->best_dist) {
        s->best = candidate;
        s->best_dist = dist;
    }
}

const char *fe_suggest_hint(const fe_suggest *s, char *buf, size_t len)
{
    if (!s->best) return "";
    snprintf(buf, len, " (did you mean '%s'?)", s->best);
    return buf;
}
