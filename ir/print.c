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
 * role prints unless it is none (a metric's kind follows it unless it is
 * mean: `metric iou_mean`), the name when there is one, the location
 * when it is known. Floats print with 17 significant digits (always with a
 * '.', an exponent, "inf" or "nan", so they read back as floats) and NaNs
 * other than the default quiet NaN keep their payload: nan(0x...).
 */
#include "ir/graph.h"
#include "ir/ops.h"
#include "ir/util.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- tokens ---- */

/* The bit pattern of the default quiet NaN's mantissa. */
#define QNAN_MANTISSA ((uint64_t)1 << 51)

static void put_float(kiln_sbuf *b, double v)
{
    if (isnan(v)) {
        uint64_t bits;
        memcpy(&bits, &v, sizeof bits);
        uint64_t mant = bits & (((uint64_t)1 << 52) - 1);
        if (bits >> 63) kiln_sb_putc(b, '-');
        if (mant == QNAN_MANTISSA)
            kiln_sb_puts(b, "nan");
        else
            kiln_sb_printf(b, "nan(0x%llx)", (unsigned long long)mant);
        return;
    }
    if (isinf(v)) {
        kiln_sb_puts(b, v < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.17g", v);
    kiln_sb_puts(b, tmp);
    if (!strpbrk(tmp, ".eE")) kiln_sb_puts(b, ".0");
}

/* A double-quoted string with C escapes: \" \\ \n \t \r and \xHH for other
 * control bytes; every other byte (UTF-8 included) as it is. */
static void put_quoted(kiln_sbuf *b, const char *s)
{
    kiln_sb_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': kiln_sb_puts(b, "\\\""); break;
        case '\\': kiln_sb_puts(b, "\\\\"); break;
        case '\n': kiln_sb_puts(b, "\\n"); break;
        case '\t': kiln_sb_puts(b, "\\t"); break;
        case '\r': kiln_sb_puts(b, "\\r"); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                kiln_sb_printf(b, "\\x%02x", *p);
            else
                kiln_sb_putc(b, (char)*p);
        }
    }
    kiln_sb_putc(b, '"');
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

static void put_attr(kiln_sbuf *b, const kiln_attr *a)
{
    char name[KILN_ATTR_NAME_MAX + 1];
    memcpy(name, a->name, KILN_ATTR_NAME_MAX);
    name[KILN_ATTR_NAME_MAX] = 0;
    kiln_sb_puts(b, name);
    kiln_sb_putc(b, '=');
    switch (a->kind) {
    case KILN_ATTR_INT: kiln_sb_printf(b, "%lld", (long long)a->i[0]); break;
    case KILN_ATTR_FLOAT: put_float(b, a->f); break;
    case KILN_ATTR_INTS: {
        int n = a->n <= KILN_MAX_ATTR_INTS ? a->n : KILN_MAX_ATTR_INTS;
        kiln_sb_putc(b, '[');
        for (int i = 0; i < n; i++) kiln_sb_printf(b, i ? ",%lld" : "%lld", (long long)a->i[i]);
        kiln_sb_putc(b, ']');
        break;
    }
    case KILN_ATTR_DTYPE: kiln_sb_puts(b, kiln_dtype_name((kiln_dtype)a->i[0])); break;
    default: kiln_sb_printf(b, "?kind%d", a->kind);
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

static void put_node(kiln_sbuf *b, const kiln_graph *g, int32_t id)
{
    const kiln_node *n = &g->nodes[id];
    kiln_sb_printf(b, "  %%%d = ", id);
    if (n->op < KILN_OP_COUNT)
        kiln_sb_puts(b, kiln_ops[n->op].name);
    else
        kiln_sb_printf(b, "?op%d", n->op);
    kiln_sb_putc(b, '(');
    for (int32_t i = 0; i < n->ninputs && n->inputs; i++)
        kiln_sb_printf(b, i ? ", %%%d" : "%%%d", n->inputs[i]);
    kiln_sb_putc(b, ')');
    int nattrs = n->nattrs < 0 ? 0 : n->nattrs > KILN_MAX_ATTRS ? KILN_MAX_ATTRS : n->nattrs;
    bool all_default = n->op == KILN_OP_INPUT;
    for (int i = 0; i < nattrs && all_default; i++)
        all_default = attr_is_default(n->op, &n->attrs[i]);
    if (nattrs && !all_default) {
        kiln_sb_puts(b, " {");
        for (int i = 0; i < nattrs; i++) {
            if (i) kiln_sb_puts(b, ", ");
            put_attr(b, &n->attrs[i]);
        }
        kiln_sb_putc(b, '}');
    }
    kiln_sb_puts(b, " : ");
    int rank = n->rank < 0 ? 0 : n->rank > KILN_MAX_RANK ? KILN_MAX_RANK : n->rank;
    kiln_sb_printf(b, "%s[", kiln_dtype_name((kiln_dtype)n->dtype));
    for (int i = 0; i < rank; i++) kiln_sb_printf(b, i ? ",%lld" : "%lld", (long long)n->shape[i]);
    kiln_sb_putc(b, ']');
    if (n->rank != rank) kiln_sb_printf(b, "?rank%d", n->rank);
    if (n->role != KILN_ROLE_NONE) {
        kiln_sb_putc(b, ' ');
        kiln_sb_puts(b, kiln_role_name((kiln_role)n->role));
        if (n->role == KILN_ROLE_METRIC && n->metric != KILN_METRIC_MEAN) {
            kiln_sb_putc(b, ' ');
            kiln_sb_puts(b, kiln_metric_kind_name((kiln_metric_kind)n->metric));
        }
        if (n->role == KILN_ROLE_PARAM && n->group) kiln_sb_printf(b, " group %d", n->group);
    }
    if (n->name) {
        kiln_sb_putc(b, ' ');
        put_quoted(b, n->name);
    }
    if (n->loc.file) {
        kiln_sb_puts(b, " @");
        put_quoted(b, n->loc.file);
        kiln_sb_printf(b, ":%d:%d", n->loc.line, n->loc.col);
    } else if (n->loc.line || n->loc.col) {
        kiln_sb_printf(b, " @%d:%d", n->loc.line, n->loc.col);
    }
    kiln_sb_putc(b, '\n');
}

/* The whole text into b. */
static void print_graph(kiln_sbuf *b, const kiln_graph *g)
{
    const char *name = g->name ? g->name : "graph";
    kiln_sb_puts(b, "graph ");
    if (is_ident(name))
        kiln_sb_puts(b, name);
    else
        put_quoted(b, name);
    kiln_sb_puts(b, " {\n");
    for (int32_t i = 0; i < g->nnodes; i++) put_node(b, g, i);
    kiln_sb_puts(b, "}\n");
}

char *kiln_graph_to_string(const kiln_graph *g)
{
    if (!g) return NULL;
    kiln_sbuf b = {0};
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
