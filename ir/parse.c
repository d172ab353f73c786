/* ir/parse.c — the textual form of the graph IR: the parser.
 *
 * Expects: any NUL-terminated text (it is fuzzed; nothing in it is trusted).
 * Guarantees: a graph built node by node through kiln_build / kiln_build_leaf
 * (so attribute schemas and shape rules are checked as for any other graph),
 * with the declared `: type` of every node equal to the one its shape rule
 * infers, and passing kiln_graph_verify; or no graph and one message
 * "FILE:LINE:COL: error: MESSAGE", followed by the source line and a caret
 * under the spot. The parser is a loop over lines with no recursion, so no
 * input can exhaust the stack. The grammar (docs/IR.md has the full story):
 *
 *   graph    := 'graph' (IDENT | STRING) '{' node* '}'
 *   node     := VALUE '=' IDENT '(' [VALUE (',' VALUE)*] ')' [attrs] ':' type
 *               [ROLE] [STRING] [loc]
 *   attrs    := '{' [attr (',' attr)*] '}'
 *   attr     := IDENT '=' (int | float | '[' [int (',' int)*] ']' | DTYPE)
 *   type     := DTYPE '[' [NUMBER (',' NUMBER)*] ']'
 *   loc      := '@' [STRING ':'] int ':' int
 *
 * VALUE is %N (N the node's index), '#' starts a comment to the end of the
 * line, and whitespace (newlines included) only separates tokens.
 *
 * Statuses: syntax and annotation errors return KILN_ERR_PARSE; an error from
 * the builder (schema, shape rule) or the verifier returns that status
 * (KILN_ERR_SHAPE, KILN_ERR_INVALID, ...); allocation failure KILN_ERR_NOMEM.
 */
#include "ir/graph.h"
#include "ir/ops.h"
#include "ir/util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef enum tkind { T_EOF, T_IDENT, T_NUM, T_VALUE, T_STRING, T_PUNCT } tkind;

/* A spot in the text: 1-based line and column, and where its line starts. */
typedef struct pos {
    int line, col;
    const char *ls;
} pos;

typedef struct token {
    tkind kind;
    const char *s; /* the token's text (for T_STRING, with its quotes) */
    size_t len;
    pos at;
} token;

typedef struct parser {
    const char *text, *file;
    const char *p, *ls; /* cursor and the start of its line */
    int line;
    token tok;           /* the current token */
    kiln_status st;      /* the first error; KILN_OK until then */
    char *err;           /* its formatted message */
    kiln_graph *g;
    pos *node_at;        /* where each node's line starts, for verifier errors */
    int32_t node_cap;
} parser;

/* ---- errors ---- */

/* Records the first error: "file:line:col: error: msg", the line, a caret. */
static kiln_status errorf(parser *P, pos at, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kiln_status errorf(parser *P, pos at, kiln_status st, const char *fmt, ...)
{
    if (P->st) return P->st;
    P->st = st;
    va_list ap;
    va_start(ap, fmt);
    char *msg = kiln_vasprintf(fmt, ap);
    va_end(ap);
    if (!msg) return st;
    size_t linelen = strcspn(at.ls, "\n");
    if (linelen && at.ls[linelen - 1] == '\r') linelen--;
    /* The caret line copies the tabs of the source line so the caret lines up. */
    size_t ncaret = at.col > 0 ? (size_t)at.col - 1 : 0;
    if (ncaret > linelen) ncaret = linelen;
    const char *file = P->file ? P->file : "<input>";
    int head = snprintf(NULL, 0, "%s:%d:%d: error: %s\n", file, at.line, at.col, msg);
    size_t total = (size_t)(head > 0 ? head : 0) + linelen + 1 + ncaret + 2;
    char *out = malloc(total);
    if (out) {
        size_t o = (size_t)snprintf(out, total, "%s:%d:%d: error: %s\n", file, at.line, at.col,
                                    msg);
        memcpy(out + o, at.ls, linelen);
        o += linelen;
        out[o++] = '\n';
        for (size_t i = 0; i < ncaret; i++) out[o++] = at.ls[i] == '\t' ? '\t' : ' ';
        out[o++] = '^';
        out[o] = 0;
    }
    free(msg);
    P->err = out;
    return st;
}

static kiln_status nomem(parser *P) { return errorf(P, P->tok.at, KILN_ERR_NOMEM, "out of memory"); }

/* How a message shows a token: 'text', cut short when long. */
static const char *tok_desc(const token *t, char *buf, size_t len)
{
    if (t->kind == T_EOF) return "end of input";
    int n = t->len > 24 ? 24 : (int)t->len;
    snprintf(buf, len, "'%.*s%s'", n, t->s, t->len > 24 ? "..." : "");
    return buf;
}

/* ---- lexer ---- */

static bool is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(int c) { return c >= '0' && c <= '9'; }
static bool is_alnum(int c) { return is_alpha(c) || is_digit(c); }
static int hexval(int c)
{
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static pos here(const parser *P) { return (pos){P->line, (int)(P->p - P->ls) + 1, P->ls}; }

/* Scans a string literal starting at the opening quote; sets the token or an error. */
static void lex_string(parser *P, token *t)
{
    const char *p = P->p + 1;
    for (;;) {
        if (*p == '"') break;
        if (*p == 0 || *p == '\n') {
            errorf(P, t->at, KILN_ERR_PARSE, "unterminated string");
            return;
        }
        if (*p == '\\') {
            const char *e = p;
            p++;
            if (*p == 'x') {
                int h = hexval((unsigned char)p[1]), l = h < 0 ? -1 : hexval((unsigned char)p[2]);
                if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                    pos at = {P->line, (int)(e - P->ls) + 1, P->ls};
                    errorf(P, at, KILN_ERR_PARSE, "bad escape in string: \\x takes two hex "
                           "digits, not 00");
                    return;
                }
                p += 3;
                continue;
            }
            if (*p != '"' && *p != '\\' && *p != 'n' && *p != 't' && *p != 'r') {
                pos at = {P->line, (int)(e - P->ls) + 1, P->ls};
                errorf(P, at, KILN_ERR_PARSE, "bad escape in string (use \\\" \\\\ \\n \\t \\r "
                       "or \\xHH)");
                return;
            }
        }
        p++;
    }
    t->kind = T_STRING;
    t->len = (size_t)(p + 1 - P->p);
}

/* Moves to the next token; on a lexical error records it and leaves T_EOF. */
static void next(parser *P)
{
    if (P->st) {
        P->tok.kind = T_EOF;
        return;
    }
    P->p += P->tok.len;
    P->tok.len = 0;
    for (;;) {
        char c = *P->p;
        if (c == ' ' || c == '\t' || c == '\r') {
            P->p++;
        } else if (c == '\n') {
            P->p++;
            P->line++;
            P->ls = P->p;
        } else if (c == '#') {
            while (*P->p && *P->p != '\n') P->p++;
        } else {
            break;
        }
    }
    token *t = &P->tok;
    t->s = P->p;
    t->at = here(P);
    t->len = 0;
    t->kind = T_EOF;
    unsigned char c = (unsigned char)*P->p;
    const char *p = P->p;
    if (c == 0) return;
    if (is_alpha(c)) {
        while (is_alnum((unsigned char)*p) || *p == '.') p++;
        t->kind = T_IDENT;
    } else if (is_digit(c)) {
        bool hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
        while (is_alnum((unsigned char)*p) || *p == '.' ||
               (!hex && (*p == '+' || *p == '-') && (p[-1] == 'e' || p[-1] == 'E')))
            p++;
        t->kind = T_NUM;
    } else if (c == '%') {
        p++;
        while (is_digit((unsigned char)*p)) p++;
        if (p == P->p + 1) {
            errorf(P, t->at, KILN_ERR_PARSE, "expected a node id (%%N) after '%%'");
            return;
        }
        t->kind = T_VALUE;
    } else if (c == '"') {
        lex_string(P, t);
        return;
    } else if (strchr("=(){}[],:@-", c)) {
        p++;
        t->kind = T_PUNCT;
    } else {
        if (c >= 0x21 && c < 0x7f)
            errorf(P, t->at, KILN_ERR_PARSE, "unexpected character '%c'", c);
        else
            errorf(P, t->at, KILN_ERR_PARSE, "unexpected byte 0x%02x", c);
        return;
    }
    t->len = (size_t)(p - P->p);
}

static bool is_punct(const parser *P, char c)
{
    return P->tok.kind == T_PUNCT && P->tok.s[0] == c;
}

static bool is_word(const parser *P, const char *w)
{
    return P->tok.kind == T_IDENT && P->tok.len == strlen(w) && !strncmp(P->tok.s, w, P->tok.len);
}

/* Consumes punctuation c or records "expected c <why>, got X". */
static bool expect(parser *P, char c, const char *why)
{
    if (P->st) return false;
    if (is_punct(P, c)) {
        next(P);
        return !P->st;
    }
    char b[48];
    errorf(P, P->tok.at, KILN_ERR_PARSE, "expected '%c' %s, got %s", c, why,
           tok_desc(&P->tok, b, sizeof b));
    return false;
}

/* Decodes the current T_STRING token into a malloc'd string. */
static char *decode_string(parser *P)
{
    const token *t = &P->tok;
    char *out = malloc(t->len);
    if (!out) {
        nomem(P);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 1; i + 1 < t->len; i++) {
        char c = t->s[i];
        if (c == '\\') {
            c = t->s[++i];
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'x':
                c = (char)(hexval((unsigned char)t->s[i + 1]) * 16 +
                           hexval((unsigned char)t->s[i + 2]));
                i += 2;
                break;
            default: break; /* '"' and '\\' stand for themselves */
            }
        }
        out[o++] = c;
    }
    out[o] = 0;
    return out;
}

/* ---- numbers ---- */

/* Reads an optionally negative decimal integer: ['-'] NUMBER. */
static bool parse_int(parser *P, int64_t lo, int64_t hi, const char *what, int64_t *out)
{
    char b[48];
    pos at = P->tok.at;
    bool neg = false;
    if (is_punct(P, '-')) {
        neg = true;
        next(P);
        if (P->st) return false;
    }
    const token *t = &P->tok;
    if (t->kind != T_NUM) {
        errorf(P, t->at, KILN_ERR_PARSE, "expected %s, got %s", what, tok_desc(t, b, sizeof b));
        return false;
    }
    for (size_t i = 0; i < t->len; i++)
        if (!is_digit((unsigned char)t->s[i])) {
            errorf(P, t->at, KILN_ERR_PARSE, "expected %s, got %s", what,
                   tok_desc(t, b, sizeof b));
            return false;
        }
    char buf[40];
    if (t->len + 2 > sizeof buf) {
        errorf(P, at, KILN_ERR_PARSE, "%s out of range", what);
        return false;
    }
    snprintf(buf, sizeof buf, "%s%.*s", neg ? "-" : "", (int)t->len, t->s);
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE || v < lo || v > hi) {
        errorf(P, at, KILN_ERR_PARSE, "%s %s out of range", what, buf);
        return false;
    }
    *out = v;
    next(P);
    return !P->st;
}

/* Whether s[0..len) is digits ['.' digits*] [('e'|'E') ['+'|'-'] digits]
 * with a '.' or an exponent (a float, not an int). */
static bool float_syntax(const char *s, size_t len)
{
    size_t i = 0;
    bool frac = false, ex = false;
    while (i < len && is_digit((unsigned char)s[i])) i++;
    if (i == 0) return false;
    if (i < len && s[i] == '.') {
        frac = true;
        i++;
        while (i < len && is_digit((unsigned char)s[i])) i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        ex = true;
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) i++;
        size_t d = i;
        while (i < len && is_digit((unsigned char)s[i])) i++;
        if (i == d) return false;
    }
    return i == len && (frac || ex);
}

/* ---- attributes ---- */

static int dtype_of(const char *s, size_t len)
{
    for (int t = 0; t < KILN_DTYPE_COUNT; t++) {
        const char *n = kiln_dtype_name((kiln_dtype)t);
        if (strlen(n) == len && !strncmp(n, s, len)) return t;
    }
    return -1;
}

/* A float written as ['-'] ('inf' | 'nan' ['(' 0xHEX ')']), after the sign. */
static bool parse_special_float(parser *P, const char *aname, bool neg, double *out)
{
    char b[48];
    if (is_word(P, "inf")) {
        *out = neg ? -INFINITY : INFINITY;
        next(P);
        return !P->st;
    }
    /* is_word(P, "nan") */
    uint64_t mant = (uint64_t)1 << 51;
    next(P);
    if (P->st) return false;
    if (is_punct(P, '(')) {
        next(P);
        const token *t = &P->tok;
        bool ok = t->kind == T_NUM && t->len > 2 && t->len <= 15 && t->s[0] == '0' &&
                  (t->s[1] == 'x' || t->s[1] == 'X');
        mant = 0;
        for (size_t i = 2; ok && i < t->len; i++) {
            int h = hexval((unsigned char)t->s[i]);
            ok = h >= 0;
            mant = mant * 16 + (uint64_t)(h < 0 ? 0 : h);
        }
        if (!ok || mant == 0 || mant >= ((uint64_t)1 << 52)) {
            errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': a NaN payload is a hex "
                   "number in 0x1..0xfffffffffffff, got %s", aname, tok_desc(t, b, sizeof b));
            return false;
        }
        next(P);
        if (!expect(P, ')', "after the NaN payload")) return false;
    }
    uint64_t bits = ((uint64_t)neg << 63) | ((uint64_t)0x7ff << 52) | mant;
    memcpy(out, &bits, sizeof *out);
    return true;
}

static bool parse_attr(parser *P, kiln_attr *a)
{
    char b[48];
    const token *t = &P->tok;
    if (t->kind != T_IDENT) {
        errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute: expected a name, got %s",
               tok_desc(t, b, sizeof b));
        return false;
    }
    if (t->len >= KILN_ATTR_NAME_MAX) {
        errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute: the name '%.*s' is longer than "
               "%d characters", (int)t->len, t->s, KILN_ATTR_NAME_MAX - 1);
        return false;
    }
    char name[KILN_ATTR_NAME_MAX];
    memcpy(name, t->s, t->len);
    name[t->len] = 0;
    next(P);
    if (!expect(P, '=', "after the attribute name")) return false;

    if (is_punct(P, '[')) {
        int64_t xs[KILN_MAX_ATTR_INTS];
        int n = 0;
        next(P);
        while (!P->st && !is_punct(P, ']')) {
            if (n && !expect(P, ',', "between list values")) return false;
            if (n == KILN_MAX_ATTR_INTS) {
                errorf(P, P->tok.at, KILN_ERR_PARSE, "malformed attribute '%s': more than %d "
                       "values", name, KILN_MAX_ATTR_INTS);
                return false;
            }
            if (!parse_int(P, INT64_MIN, INT64_MAX, "an integer", &xs[n])) return false;
            n++;
        }
        if (P->st) return false;
        next(P);
        *a = kiln_attr_ints(name, n, xs);
        return !P->st;
    }

    bool neg = false;
    if (is_punct(P, '-')) {
        neg = true;
        next(P);
    }
    if (P->st) return false;
    if (is_word(P, "inf") || is_word(P, "nan")) {
        double v;
        if (!parse_special_float(P, name, neg, &v)) return false;
        *a = kiln_attr_float(name, v);
        return true;
    }
    if (t->kind == T_IDENT && !neg) {
        int dt = dtype_of(t->s, t->len);
        if (dt < 0) {
            errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': %s is not a number, "
                   "list or dtype", name, tok_desc(t, b, sizeof b));
            return false;
        }
        *a = kiln_attr_dtype(name, (kiln_dtype)dt);
        next(P);
        return !P->st;
    }
    if (t->kind != T_NUM) {
        errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': expected a value, got %s",
               name, tok_desc(t, b, sizeof b));
        return false;
    }
    char buf[400];
    if (t->len + 2 > sizeof buf) {
        errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': number too long", name);
        return false;
    }
    snprintf(buf, sizeof buf, "%s%.*s", neg ? "-" : "", (int)t->len, t->s);
    size_t i = 0;
    while (i < t->len && is_digit((unsigned char)t->s[i])) i++;
    errno = 0;
    if (i == t->len) {
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE) {
            errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': %s is out of range",
                   name, buf);
            return false;
        }
        *a = kiln_attr_int(name, v);
    } else if (float_syntax(t->s, t->len)) {
        double v = strtod(buf, NULL);
        if (isinf(v)) {
            errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': %s is out of range "
                   "(write inf)", name, buf);
            return false;
        }
        *a = kiln_attr_float(name, v);
    } else {
        errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute '%s': malformed number %s", name,
               tok_desc(t, b, sizeof b));
        return false;
    }
    next(P);
    return !P->st;
}

/* ---- types and locations ---- */

static bool parse_type(parser *P, int *dtype, int *rank, int64_t *shape)
{
    char b[48];
    const token *t = &P->tok;
    if (t->kind != T_IDENT) {
        errorf(P, t->at, KILN_ERR_PARSE, "bad type: expected a type like f32[2,3], got %s",
               tok_desc(t, b, sizeof b));
        return false;
    }
    if ((*dtype = dtype_of(t->s, t->len)) < 0) {
        errorf(P, t->at, KILN_ERR_PARSE, "bad type: unknown dtype %s", tok_desc(t, b, sizeof b));
        return false;
    }
    next(P);
    if (!expect(P, '[', "after the dtype (a scalar is f32[])")) return false;
    *rank = 0;
    while (!P->st && !is_punct(P, ']')) {
        if (*rank && !expect(P, ',', "between dimensions")) return false;
        if (*rank == KILN_MAX_RANK) {
            errorf(P, P->tok.at, KILN_ERR_PARSE, "bad type: more than %d dimensions",
                   KILN_MAX_RANK);
            return false;
        }
        if (is_punct(P, '-')) {
            errorf(P, P->tok.at, KILN_ERR_PARSE, "bad type: a dimension cannot be negative");
            return false;
        }
        if (!parse_int(P, 0, INT64_MAX, "a dimension", &shape[*rank])) return false;
        (*rank)++;
    }
    if (P->st) return false;
    next(P);
    return !P->st;
}

/* '@' [STRING ':'] int ':' int, after the '@'. *file is malloc'd or NULL. */
static bool parse_loc(parser *P, char **file, int *line, int *col)
{
    if (P->tok.kind == T_STRING) {
        if (!(*file = decode_string(P))) return false;
        next(P);
        if (!expect(P, ':', "after the location's file name")) return false;
    }
    int64_t l, c;
    if (!parse_int(P, INT32_MIN, INT32_MAX, "a line number", &l)) return false;
    if (!expect(P, ':', "between line and column")) return false;
    if (!parse_int(P, INT32_MIN, INT32_MAX, "a column number", &c)) return false;
    *line = (int)l;
    *col = (int)c;
    return true;
}

/* The value id of the current T_VALUE token, or -1 when above INT32_MAX. */
static int64_t value_id(const token *t)
{
    int64_t v = 0;
    for (size_t i = 1; i < t->len; i++) {
        v = v * 10 + (t->s[i] - '0');
        if (v > INT32_MAX) return -1;
    }
    return v;
}

/* ---- nodes ---- */

typedef struct node_text {
    pos at, op_at, type_at, role_at, name_at;
    int op;
    int32_t *in;
    int32_t nin, incap;
    kiln_attr attrs[KILN_MAX_ATTRS];
    int nattrs;
    int dtype, rank;
    int64_t shape[KILN_MAX_RANK];
    int role, metric; /* metric: kiln_metric_kind after the role metric */
    int group;        /* `param group K`: the parameter group (0 without) */
    char *name, *file;
    int line, col;
} node_text;

static bool push_input(parser *P, node_text *nt, int32_t v)
{
    if (nt->nin == nt->incap) {
        int32_t cap = nt->incap ? nt->incap * 2 : 4;
        int32_t *ni = realloc(nt->in, (size_t)cap * sizeof *ni);
        if (!ni) {
            nomem(P);
            return false;
        }
        nt->in = ni;
        nt->incap = cap;
    }
    nt->in[nt->nin++] = v;
    return true;
}

/* Reads one node's text into nt (no graph changes). */
static bool read_node(parser *P, node_text *nt)
{
    char b[48];
    kiln_graph *g = P->g;
    token *t = &P->tok;
    nt->at = t->at;
    int64_t id = value_id(t);
    if (id != g->nnodes) {
        errorf(P, t->at, KILN_ERR_PARSE, "node ids must count up from %%0: expected %%%d here, "
               "got %.*s", g->nnodes, (int)(t->len > 24 ? 24 : t->len), t->s);
        return false;
    }
    next(P);
    if (!expect(P, '=', "after the node id")) return false;

    nt->op_at = t->at;
    if (t->kind != T_IDENT) {
        errorf(P, t->at, KILN_ERR_PARSE, "expected an op name, got %s", tok_desc(t, b, sizeof b));
        return false;
    }
    char opname[64];
    nt->op = -1;
    if (t->len < sizeof opname) {
        memcpy(opname, t->s, t->len);
        opname[t->len] = 0;
        nt->op = kiln_op_lookup(opname);
    }
    if (nt->op < 0) {
        errorf(P, t->at, KILN_ERR_PARSE, "unknown op '%.*s'", (int)(t->len > 64 ? 64 : t->len),
               t->s);
        return false;
    }
    next(P);
    if (!expect(P, '(', "after the op name")) return false;
    while (!P->st && !is_punct(P, ')')) {
        if (nt->nin && !expect(P, ',', "between inputs")) return false;
        if (t->kind != T_VALUE) {
            errorf(P, t->at, KILN_ERR_PARSE, "expected an input (%%N) or ')', got %s",
                   tok_desc(t, b, sizeof b));
            return false;
        }
        int64_t v = value_id(t);
        if (v < 0 || v >= g->nnodes) {
            errorf(P, t->at, KILN_ERR_PARSE, "use of %.*s before its definition (a node uses "
                   "only earlier nodes)", (int)(t->len > 24 ? 24 : t->len), t->s);
            return false;
        }
        if (!push_input(P, nt, (int32_t)v)) return false;
        next(P);
    }
    if (P->st) return false;
    next(P);

    if (is_punct(P, '{')) {
        next(P);
        while (!P->st && !is_punct(P, '}')) {
            if (nt->nattrs && !expect(P, ',', "between attributes")) return false;
            if (nt->nattrs == KILN_MAX_ATTRS) {
                errorf(P, t->at, KILN_ERR_PARSE, "malformed attribute: more than %d attributes",
                       KILN_MAX_ATTRS);
                return false;
            }
            if (!parse_attr(P, &nt->attrs[nt->nattrs])) return false;
            nt->nattrs++;
        }
        if (P->st) return false;
        next(P);
    }

    if (!expect(P, ':', "before the node's type")) return false;
    nt->type_at = t->at;
    if (!parse_type(P, &nt->dtype, &nt->rank, nt->shape)) return false;

    nt->role = KILN_ROLE_NONE;
    if (t->kind == T_IDENT) {
        nt->role_at = t->at;
        nt->role = -1;
        for (int r = 0; r < KILN_ROLE_COUNT; r++)
            if (is_word(P, kiln_role_name((kiln_role)r))) nt->role = r;
        if (nt->role < 0) {
            errorf(P, t->at, KILN_ERR_PARSE, "unknown role %s", tok_desc(t, b, sizeof b));
            return false;
        }
        next(P);
    }
    nt->metric = KILN_METRIC_MEAN;
    if (nt->role == KILN_ROLE_METRIC && t->kind == T_IDENT) {
        nt->metric = -1;
        for (int k = 0; k < KILN_METRIC_KIND_COUNT; k++)
            if (is_word(P, kiln_metric_kind_name((kiln_metric_kind)k))) nt->metric = k;
        if (nt->metric < 0) {
            errorf(P, t->at, KILN_ERR_PARSE, "unknown metric kind %s (mean, sqrt_mean, ratio, "
                   "iou_mean or dice)", tok_desc(t, b, sizeof b));
            return false;
        }
        next(P);
    }
    nt->group = 0;
    if (nt->role == KILN_ROLE_PARAM && t->kind == T_IDENT && is_word(P, "group")) {
        next(P);
        int64_t k;
        if (!parse_int(P, 0, KILN_MAX_PARAM_GROUPS - 1, "a parameter group", &k)) return false;
        nt->group = (int)k;
    }
    if (t->kind == T_STRING) {
        nt->name_at = t->at;
        if (!(nt->name = decode_string(P))) return false;
        next(P);
    }
    if (is_punct(P, '@')) {
        next(P);
        if (!parse_loc(P, &nt->file, &nt->line, &nt->col)) return false;
    }
    if (!P->st && t->kind != T_VALUE && !is_punct(P, '}')) {
        errorf(P, t->at, KILN_ERR_PARSE, "expected the next node or '}' after the node, got %s",
               tok_desc(t, b, sizeof b));
        return false;
    }
    return !P->st;
}

/* Builds the node nt describes, checks its declared type and sets role and name. */
static bool build_node(parser *P, node_text *nt)
{
    kiln_graph *g = P->g;
    if (nt->name) {
        int32_t other = kiln_graph_find(g, nt->name);
        if (other >= 0) {
            errorf(P, nt->name_at, KILN_ERR_INVALID, "the name '%s' is already taken by %%%d",
                   nt->name, other);
            return false;
        }
    }
    g->cur_loc = (kiln_loc){NULL, nt->line, nt->col};
    if (nt->file && !(g->cur_loc.file = kiln_graph_intern_file(g, nt->file))) {
        nomem(P);
        return false;
    }

    kiln_value v;
    if (nt->op == KILN_OP_INPUT) {
        if (nt->nin) {
            errorf(P, nt->op_at, KILN_ERR_PARSE, "input takes no inputs, got %d", nt->nin);
            return false;
        }
        if (!nt->name) {
            errorf(P, nt->op_at, KILN_ERR_PARSE, "an input leaf needs a name (\"...\" after its "
                   "type and role)");
            return false;
        }
        v = kiln_build_leaf(g, (kiln_role)nt->role, nt->name, (kiln_dtype)nt->dtype, nt->rank,
                            nt->shape, nt->nattrs, nt->attrs);
        if (v < 0 || (nt->group && (v = kiln_set_param_group(g, v, nt->group)) < 0)) {
            errorf(P, nt->op_at, (kiln_status)v, "%s", g->err);
            return false;
        }
        return true;
    }

    v = kiln_build(g, nt->op, nt->nin, nt->in, nt->nattrs, nt->attrs);
    if (v < 0) {
        errorf(P, nt->op_at, (kiln_status)v, "%s", g->err);
        return false;
    }
    kiln_node *n = &g->nodes[v];
    if (n->dtype != nt->dtype || n->rank != nt->rank ||
        memcmp(n->shape, nt->shape, (size_t)nt->rank * sizeof nt->shape[0]) != 0) {
        char said[160], got[160];
        kiln_shape_str((kiln_dtype)nt->dtype, nt->rank, nt->shape, said, sizeof said);
        kiln_node_type_str(n, got, sizeof got);
        errorf(P, nt->type_at, KILN_ERR_SHAPE, "type mismatch: the text says %s, %s infers %s",
               said, kiln_ops[nt->op].name, got);
        return false;
    }
    if (nt->role >= KILN_ROLE_INPUT && nt->role <= KILN_ROLE_HPARAM) {
        errorf(P, nt->role_at, KILN_ERR_PARSE, "role '%s' belongs to input leaves; a computed "
               "node is output, loss or metric", kiln_role_name((kiln_role)nt->role));
        return false;
    }
    n->role = (uint8_t)nt->role;
    if (nt->metric != KILN_METRIC_MEAN && !kiln_metric_size_ok((kiln_metric_kind)nt->metric,
                                                               kiln_node_numel(n))) {
        errorf(P, nt->type_at, KILN_ERR_SHAPE, "a %s metric cannot have %lld elements",
               kiln_metric_kind_name((kiln_metric_kind)nt->metric),
               (long long)kiln_node_numel(n));
        return false;
    }
    n->metric = (uint8_t)nt->metric;
    if (nt->name) {
        kiln_status st = kiln_node_set_name(g, v, nt->name);
        if (st) {
            errorf(P, nt->name_at, st, "%s", g->err);
            return false;
        }
    }
    return true;
}

static bool parse_node(parser *P)
{
    node_text nt;
    memset(&nt, 0, sizeof nt);
    bool ok = read_node(P, &nt);
    if (ok && P->g->nnodes == P->node_cap) {
        int32_t cap = P->node_cap ? P->node_cap * 2 : 64;
        pos *na = realloc(P->node_at, (size_t)cap * sizeof *na);
        if (!na) {
            nomem(P);
            ok = false;
        } else {
            P->node_at = na;
            P->node_cap = cap;
        }
    }
    if (ok) {
        P->node_at[P->g->nnodes] = nt.at;
        ok = build_node(P, &nt);
    }
    free(nt.in);
    free(nt.name);
    free(nt.file);
    return ok;
}

static void parse_graph(parser *P)
{
    char b[48];
    token *t = &P->tok;
    next(P);
    if (!is_word(P, "graph")) {
        errorf(P, t->at, KILN_ERR_PARSE, "expected 'graph' at the start of the IR text, got %s",
               tok_desc(t, b, sizeof b));
        return;
    }
    next(P);
    char *name = NULL;
    if (t->kind == T_IDENT) {
        name = strndup(t->s, t->len);
        if (!name) nomem(P);
    } else if (t->kind == T_STRING) {
        name = decode_string(P);
    } else {
        errorf(P, t->at, KILN_ERR_PARSE, "expected the graph's name, got %s",
               tok_desc(t, b, sizeof b));
    }
    if (!name) return;
    P->g = kiln_graph_new(name);
    free(name);
    if (!P->g) {
        nomem(P);
        return;
    }
    next(P);
    if (!expect(P, '{', "after the graph's name")) return;
    while (!P->st && !is_punct(P, '}')) {
        if (t->kind != T_VALUE) {
            errorf(P, t->at, KILN_ERR_PARSE, "expected a node (%%N = ...) or '}', got %s",
                   tok_desc(t, b, sizeof b));
            return;
        }
        if (!parse_node(P)) return;
    }
    if (P->st) return;
    next(P);
    if (t->kind != T_EOF) {
        errorf(P, t->at, KILN_ERR_PARSE, "unexpected %s after the end of the graph",
               tok_desc(t, b, sizeof b));
        return;
    }
    P->g->cur_loc = (kiln_loc){NULL, 0, 0};
    int32_t bad;
    kiln_status st = kiln_graph_verify_at(P->g, &bad);
    if (st) {
        pos at = bad >= 0 && bad < P->g->nnodes ? P->node_at[bad] : t->at;
        errorf(P, at, st, "%s", P->g->err);
    }
}

kiln_status kiln_graph_parse(const char *text, const char *filename, kiln_graph **out,
                             char **err)
{
    if (out) *out = NULL;
    if (err) *err = NULL;
    if (!out || !text) {
        if (err) {
            const char *f = filename ? filename : "<input>";
            size_t len = strlen(f) + 64;
            if ((*err = malloc(len))) snprintf(*err, len, "%s:1:1: error: no IR text given", f);
        }
        return KILN_ERR_INVALID;
    }
    parser P;
    memset(&P, 0, sizeof P);
    P.text = P.p = P.ls = text;
    P.file = filename;
    P.line = 1;
    parse_graph(&P);
    free(P.node_at);
    if (P.st) {
        kiln_graph_free(P.g);
        if (err) *err = P.err;
        else free(P.err);
        return P.st;
    }
    *out = P.g;
    return KILN_OK;
}
