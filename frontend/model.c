/* frontend/model.c — the model language's entry points (include/kiln/kiln.h):
 * read the text, parse it, lower it to a graph, and render the first error. */
#include "frontend/ast.h"
#include "frontend/lower.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FE_MAX_FILE (64u << 20) /* largest model file read */

/* Parses and lowers d's text; renders d's error into *err on failure. */
static kiln_status compile(fe_diag *d, int64_t batch, const kiln_dim *dims, int ndims,
                           kiln_graph **out, char **err)
{
    if (batch < 1)
        fe_error_noloc(d, KILN_ERR_INVALID, "the batch size B must be at least 1, got %lld",
                       (long long)batch);
    if (!d->status) {
        fe_arena arena = {0};
        fe_program *prog = NULL;
        if (!fe_parse(d, &arena, &prog)) fe_lower(d, prog, batch, dims, ndims, out);
        fe_arena_free(&arena);
    }
    if (d->status && err) *err = fe_diag_format(d);
    return d->status;
}

kiln_status kiln_model_parse(const char *text, const char *filename, int64_t batch,
                             kiln_graph **out, char **err)
{
    return kiln_model_parse_dims(text, filename, batch, NULL, 0, out, err);
}

kiln_status kiln_model_parse_dims(const char *text, const char *filename, int64_t batch,
                                  const kiln_dim *dims, int ndims, kiln_graph **out, char **err)
{
    if (err) *err = NULL;
    if (!out) return KILN_ERR_INVALID;
    *out = NULL;
    fe_diag d = {.file = filename ? filename : "<model>", .text = text ? text : ""};
    d.len = strlen(d.text);
    if (!text) {
        fe_error_noloc(&d, KILN_ERR_INVALID, "no model text given");
        if (err) *err = fe_diag_format(&d);
        return d.status;
    }
    return compile(&d, batch, dims, ndims, out, err);
}

/* Reads a whole file into a NUL-terminated buffer, or records why not. */
static char *read_file(fe_diag *d, const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fe_error_noloc(d, KILN_ERR_IO, "cannot read model file '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap >= FE_MAX_FILE) {
                fe_error_noloc(d, KILN_ERR_IO, "model file '%s' is larger than %u MiB", path,
                               FE_MAX_FILE >> 20);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                fe_error_noloc(d, KILN_ERR_IO, "cannot read model file '%s': %s", path,
                               strerror(errno));
                break;
            }
            buf[n] = 0;
            fclose(f);
            if (memchr(buf, 0, n)) {
                fe_error_noloc(d, KILN_ERR_PARSE, "model file '%s' contains a NUL byte; model "
                               "files are text", path);
                free(buf);
                return NULL;
            }
            *len = n;
            return buf;
        }
    }
    if (!buf || !d->status) fe_nomem(d);
    free(buf);
    fclose(f);
    return NULL;
}

kiln_status kiln_model_load(const char *path, int64_t batch, kiln_graph **out, char **err)
{
    return kiln_model_load_dims(path, batch, NULL, 0, out, err);
}

kiln_status kiln_model_load_dims(const char *path, int64_t batch, const kiln_dim *dims, int ndims,
                                 kiln_graph **out, char **err)
{
    if (err) *err = NULL;
    if (!out) return KILN_ERR_INVALID;
    *out = NULL;
    fe_diag d = {.file = path ? path : "<model>"};
    if (!path) {
        fe_error_noloc(&d, KILN_ERR_INVALID, "no model file given");
        if (err) *err = fe_diag_format(&d);
        return d.status;
    }
    char *text = read_file(&d, path, &d.len);
    if (!text) {
        if (err) *err = fe_diag_format(&d);
        return d.status;
    }
    d.text = text;
    kiln_status st = compile(&d, batch, dims, ndims, out, err);
    free(text);
    return st;
}
