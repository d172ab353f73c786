/* ir/print.c — the textual form of the graph IR: the printer.
 *
 * Expects: any graph, even one that fails the verifier (the printer is a
 * debugging aid, so out-of-range op ids, dtypes and roles print as visible
 * placeholders instead of crashing).
 * Guarantees: for a graph that passes kiln_graph_verify, the text reads back
 * through kiln_graph_parse (ir/parse.c) into an equal graph, and printing that
 * graph again gives the same bytes. docs/IR.md describes the grammar:
 *
 *   graph NAME {
 *     %ID = OP(%IN, ...) {ATTR=VALUE, ...} : DTYPE[D0,D1,...] ROLE "NAME" @"FILE":LINE:COL
 *   }
 *
 * Ids are node indices. Attributes print in the order the node stores them
 * (its op's schema order); the braces are left out when the op has none, and
 * for an `input` leaf whose attributes all have their default values (so
 * data inputs read `input() : f32[64,784] input "x"`; a parameter keeps its
 * init and scale). The
 * role prints unless it is none, the name when there is one, the location
 * when it is known. Floats print with 17 significant digits (always with a
 * '.', an exponent, "inf" or "nan", so they read back as floats) and NaNs
 * other than the default quiet NaN keep their payload: nan(0x...).
 */
#include "ir/graph.h"
#include "ir/ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* A growing string; `oom` latches the first allocation failure. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static bool sb_reserve(sbuf *b, size_t extra)
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

static void sb_putn(sbuf *b, const char *s, size_t len)
{
    if (!sb_reserve(b, len)) return;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }
static void sb_putc(sbuf *b, char c) { sb_putn(b, &c, 1); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char small[128];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (len < 0) return;
    if ((size_t)len < sizeof small) {
        sb_putn(b, small, (size_t)len);
        return;
    }
    if (!sb_reserve(b, (size_t)len)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)len;
}

/* ---- tokens ---- */

/* The bit pattern of the default quiet NaN's mantissa. */
#define QNAN_MANTISSA ((uint64_t)1 << 51)

static void put_float(sbuf *b, double v)
{
    if (isnan(v)) {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        uint64_t mant = bits & (((uint64_t)1 << 52) - 1);
        if (bits >> 63) sb_putc(b, '-');
        if (mant == QNAN_MANTISSA)
            sb_puts(b, "nan");
        else
            sb_printf(b, "nan(0x%llx)", (unsigned long long)mant);
        return;
    }
    if (isinf(v)) {
        sb_puts(b, v < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.17g", v);
    sb_puts(b, tmp);
    if (!strpbrk(tmp, ".eE")) sb_puts(b, ".0");
}

/* A double-quoted string with C escapes: \" \\ \n \t \r and \xHH for other
 * control bytes; every other byte (UTF-8 included) as it is. */
static void put_quoted(sbuf *b, const char *s)
{
    sb_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\r': sb_puts(b, "\\r"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                sb_printf(b, "\\x%02x", *p);
            else
                sb_putc(b, (char)*p);
        }
    }
    sb_putc(b, '"');
}

/* Whether s lexes as one identifier token: [A-Za-z_][A-Za-z0-9_.]*. */
static bool is_ident(const char *s)
{
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return false;
    for (s++; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '.'))
            return false;
    return true;
}

static void put_attr(sbuf *b, const kiln_attr *a)
{
    char name[KILN_ATTR_NAME_MAX + 1];
    memcpy(name, a->name, KILN_ATTR_NAME_MAX);
    name[KILN_ATTR_NAME_MAX] = 0;
    sb_puts(b, name);
    sb_putc(b, '=');
    switch (a->kind) {
    case KILN_ATTR_INT: sb_printf(b, "%lld", (long long)a->i[0]); break;
    case KILN_ATTR_FLOAT: put_float(b, a->f); break;
    case KILN_ATTR_INTS: {
        int n = a->n <= KILN_MAX_ATTR_INTS ? a->n : KILN_MAX_ATTR_INTS;
        sb_putc(b, '[');
        for (int i = 0; i < n; i++) sb_printf(b, i ? ",%lld" : "%lld", (long long)a->i[i]);
        sb_putc(b, ']');
        break;
    }
    case KILN_ATTR_DTYPE: sb_puts(b, kiln_dtype_name((kiln_dtype)a->i[0])); break;
    default: sb_printf(b, "?kind%d", a->kind);
    }
}

/* Whether a equals the default that op's schema gives it; false when it has
 * none (or a's kind is not the schema's). Floats compare bit for bit (-0.0 is
 * not 0.0). */
static bool attr_is_default(int op, const kiln_attr *a)
{
    kiln_schema_attr sch[KILN_MAX_ATTRS];
    int ns = kiln_op_schema(op, sch, KILN_MAX_ATTRS);
    for (int s = 0; s < ns; s++) {
        const kiln_attr *d = &sch[s].def;
        if (!sch[s].has_default || strncmp(sch[s].name, a->name, KILN_ATTR_NAME_MAX) != 0)
            continue;
        if (a->kind != sch[s].kind) return false;
        switch (a->kind) {
        case KILN_ATTR_INT: return a->i[0] == d->i[0];
        case KILN_ATTR_FLOAT: return memcmp(&d->f, &a->f, sizeof d->f) == 0;
        case KILN_ATTR_INTS: return a->n == d->n;
        case KILN_ATTR_DTYPE:
            return !strcmp(kiln_dtype_name((kiln_dtype)d->i[0]),
                           kiln_dtype_name((kiln_dtype)a->i[0]));
        default: return false;
        }
    }
    return false;
}

static void put_node(sbuf *b, const kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    sb_printf(b, "  %%%d = ", id);
    if (n->op < KILN_OP_COUNT)
        sb_puts(b, kiln_ops[n->op].name);
    else
        sb_printf(b, "?op%d", n->op);
    sb_putc(b, '(');
    for (int32_t i = 0; i < n->ninputs && n->inputs; i++)
        sb_printf(b, i ? ", %%%d" : "%%%d", n->inputs[i]);
    sb_putc(b, ')');
    int nattrs = n->nattrs < 0 ? 0 : n->nattrs > KILN_MAX_ATTRS ? KILN_MAX_ATTRS : n->nattrs;
    bool all_default = n->op == KILN_OP_INPUT;
    for (int i = 0; i < nattrs && all_default; i++)
        all_default = attr_is_default(n->op, &n->attrs[i]);
    if (nattrs && !all_default) {
        sb_puts(b, " {");
        for (int i = 0; i < nattrs; i++) {
            if (i) sb_puts(b, ", ");
            put_attr(b, &n->attrs[i]);
        }
        sb_putc(b, '}');
    }
    sb_puts(b, " : ");
    int rank = n->rank < 0 ? 0 : n->rank > KILN_MAX_RANK ? KILN_MAX_RANK : n->rank;
    sb_printf(b, "%s[", kiln_dtype_name((kiln_dtype)n->dtype));
    for (int i = 0; i < rank; i++) sb_printf(b, i ? ",%lld" : "%lld", (long long)n->shape[i]);
    sb_putc(b, ']');
    if (n->rank != rank) sb_printf(b, "?rank%d", n->rank);
    if (n->role != KILN_ROLE_NONE) {
        sb_putc(b, ' ');
        sb_puts(b, kiln_role_name((kiln_role)n->role));
    }
    if (n->name) {
        sb_putc(b, ' ');
        put_quoted(b, n->name);
    }
    if (n->loc.file) {
        sb_puts(b, " @");
        put_quoted(b, n->loc.file);
        sb_printf(b, ":%d:%d", n->loc.line, n->loc.col);
    } else if (n->loc.line || n->loc.col) {
        sb_printf(b, " @%d:%d", n->loc.line, n->loc.col);
    }
    sb_putc(b, '\n');
}

/* The whole text into b. */
static void print_graph(sbuf *b, const kiln_graph *g)
{
    const char *name = g->name ? g->name : "graph";
    sb_puts(b, "graph ");
    if (is_ident(name))
        sb_puts(b, name);
    else
        put_quoted(b, name);
    sb_puts(b, " {\n");
    for (int32_t i = 0; i < g->nnodes; i++) put_node(b, g, i);
    sb_puts(b, "}\n");
}

char *kiln_graph_to_string(const kiln_graph *g)
{
    if (!g) return NULL;
    sbuf b = {0};
    print_graph(&b, g);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

kiln_status kiln_graph_print(const kiln_graph *g, FILE *f)
{
    if (!g || !f) return KILN_ERR_INVALID;
    char *s = kiln_graph_to_string(g);
    if (!s) return KILN_ERR_NOMEM;
    size_t len = strlen(s);
    kiln_status st = fwrite(s, 1, len, f) == len ? KILN_OK : KILN_ERR_IO;
    free(s);
    return st;
}
