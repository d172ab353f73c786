/* frontend/lexer.c — turns model text into tokens, one at a time. */
#include "frontend/lexer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *word;
    fe_tok_kind kind;
} keywords[] = {
    {"model", TK_MODEL},   {"input", TK_INPUT},   {"target", TK_TARGET}, {"block", TK_BLOCK},
    {"return", TK_RETURN}, {"metric", TK_METRIC}, {"output", TK_OUTPUT}, {"as", TK_AS},
    {"true", TK_TRUE},     {"false", TK_FALSE},
};

void fe_lex_init(fe_lexer *L, fe_diag *d)
{
    memset(L, 0, sizeof *L);
    L->d = d;
    L->src = d->text;
    L->len = d->len;
    L->line = 1;
    L->end_loc = (fe_loc){1, 1, 0};
}

static fe_loc here(const fe_lexer *L)
{
    return (fe_loc){L->line, (int)(L->pos - L->line_start) + 1, L->pos};
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static fe_token error_tok(fe_loc loc)
{
    return (fe_token){.kind = TK_ERROR, .loc = loc};
}

/* Skips spaces, tabs, carriage returns and comments (not newlines). */
static void skip_blanks(fe_lexer *L)
{
    while (L->pos < L->len) {
        char c = L->src[L->pos];
        if (c == ' ' || c == '\t' || c == '\r') {
            L->pos++;
        } else if (c == '#') {
            while (L->pos < L->len && L->src[L->pos] != '\n') L->pos++;
        } else {
            break;
        }
    }
}

static void newline(fe_lexer *L)
{
    L->pos++;
    L->line++;
    L->line_start = L->pos;
}

static fe_token lex_number(fe_lexer *L, fe_loc loc)
{
    size_t start = L->pos;
    int is_float = 0;
    while (L->pos < L->len && is_digit(L->src[L->pos])) L->pos++;
    if (L->pos + 1 < L->len && L->src[L->pos] == '.' && is_digit(L->src[L->pos + 1])) {
        is_float = 1;
        L->pos++;
        while (L->pos < L->len && is_digit(L->src[L->pos])) L->pos++;
    }
    if (L->pos < L->len && (L->src[L->pos] == 'e' || L->src[L->pos] == 'E')) {
        size_t p = L->pos + 1;
        if (p < L->len && (L->src[p] == '+' || L->src[p] == '-')) p++;
        if (p < L->len && is_digit(L->src[p])) {
            is_float = 1;
            while (p < L->len && is_digit(L->src[p])) p++;
            L->pos = p;
        }
    }
    size_t n = L->pos - start;
    fe_token t = {.kind = is_float ? TK_FLOAT : TK_INT, .text = L->src + start, .len = (int)n,
                  .loc = loc};
    char buf[72];
    if (n >= sizeof buf) {
        fe_error(L->d, loc, KILN_ERR_PARSE, "number literal too long (%zu characters)", n);
        return error_tok(loc);
    }
    memcpy(buf, L->src + start, n);
    buf[n] = 0;
    errno = 0;
    if (is_float) {
        t.f = strtod(buf, NULL);
        if (errno == ERANGE && fabs(t.f) > 1.0) {
            fe_error(L->d, loc, KILN_ERR_PARSE, "number %s is too large", buf);
            return error_tok(loc);
        }
    } else {
        long long v = strtoll(buf, NULL, 10);
        if (errno == ERANGE) {
            fe_error(L->d, loc, KILN_ERR_PARSE, "integer %s is too large (at most %lld)", buf,
                     (long long)INT64_MAX);
            return error_tok(loc);
        }
        t.i = v;
        t.f = (double)v;
    }
    return t;
}

static fe_token lex_string(fe_lexer *L, fe_loc loc)
{
    size_t start = ++L->pos;
    while (L->pos < L->len && L->src[L->pos] != '"' && L->src[L->pos] != '\n') L->pos++;
    if (L->pos >= L->len || L->src[L->pos] != '"') {
        fe_error(L->d, loc, KILN_ERR_PARSE, "unterminated string: add a closing '\"' on the "
                 "same line");
        return error_tok(loc);
    }
    fe_token t = {.kind = TK_STRING, .text = L->src + start, .len = (int)(L->pos - start),
                  .loc = loc};
    L->pos++;
    return t;
}

fe_token fe_lex_next(fe_lexer *L)
{
    for (;;) {
        skip_blanks(L);
        if (L->pos >= L->len) return (fe_token){.kind = TK_EOF, .loc = L->end_loc};
        char c = L->src[L->pos];
        fe_loc loc = here(L);
        if (c == '\n' || c == ';') {
            int emit = L->depth == 0;
            if (c == ';') {
                if (!emit) {
                    fe_error(L->d, loc, KILN_ERR_PARSE, "unexpected ';' inside brackets");
                    return error_tok(loc);
                }
                L->pos++;
            } else {
                newline(L);
            }
            if (!emit) continue;
            /* One token for a run of line ends, blank lines and comments. */
            for (;;) {
                skip_blanks(L);
                if (L->pos < L->len && L->src[L->pos] == '\n') newline(L);
                else if (L->pos < L->len && L->src[L->pos] == ';') L->pos++;
                else break;
            }
            return (fe_token){.kind = TK_NEWLINE, .text = "\n", .len = 1, .loc = loc};
        }
        fe_token t;
        if (is_alpha(c)) {
            size_t start = L->pos;
            while (L->pos < L->len && (is_alpha(L->src[L->pos]) || is_digit(L->src[L->pos])))
                L->pos++;
            size_t n = L->pos - start;
            if (n > FE_MAX_NAME) {
                fe_error(L->d, loc, KILN_ERR_PARSE, "name too long (%zu characters; at most %d)",
                         n, FE_MAX_NAME);
                return error_tok(loc);
            }
            t = (fe_token){.kind = TK_IDENT, .text = L->src + start, .len = (int)n, .loc = loc};
            for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++)
                if (strlen(keywords[k].word) == n && !memcmp(keywords[k].word, t.text, n))
                    t.kind = keywords[k].kind;
        } else if (is_digit(c)) {
            t = lex_number(L, loc);
            if (t.kind == TK_ERROR) return t;
        } else if (c == '"') {
            t = lex_string(L, loc);
            if (t.kind == TK_ERROR) return t;
        } else {
            static const char punct[] = "()[]{},:=+-*/";
            static const fe_tok_kind kinds[] = {TK_LPAREN, TK_RPAREN, TK_LBRACK, TK_RBRACK,
                                                TK_LBRACE, TK_RBRACE, TK_COMMA,  TK_COLON,
                                                TK_EQ,     TK_PLUS,   TK_MINUS,  TK_STAR,
                                                TK_SLASH};
            const char *p = c ? strchr(punct, c) : NULL;
            if (!p) {
                unsigned char u = (unsigned char)c;
                if (u >= 0x21 && u < 0x7f)
                    fe_error(L->d, loc, KILN_ERR_PARSE, "unexpected character '%c'", c);
                else
                    fe_error(L->d, loc, KILN_ERR_PARSE, "unexpected byte 0x%02X (model text is "
                             "ASCII outside comments)", u);
                return error_tok(loc);
            }
            t = (fe_token){.kind = kinds[p - punct], .text = L->src + L->pos, .len = 1, .loc = loc};
            L->pos++;
            if (t.kind == TK_LPAREN || t.kind == TK_LBRACK) L->depth++;
            if ((t.kind == TK_RPAREN || t.kind == TK_RBRACK) && L->depth > 0) L->depth--;
            /* A brace closes any bracket left open, so a missing ')' is
             * reported at the brace, not at the end of the file. */
            if (t.kind == TK_LBRACE || t.kind == TK_RBRACE) L->depth = 0;
        }
        L->end_loc = (fe_loc){L->line, (int)(L->pos - L->line_start) + 1, L->pos};
        return t;
    }
}

const char *fe_tok_desc(const fe_token *t, char *buf, size_t len)
{
    switch (t->kind) {
    case TK_EOF: return "end of file";
    case TK_NEWLINE: return "end of line";
    case TK_ERROR: return "an invalid token";
    case TK_STRING: snprintf(buf, len, "string \"%.*s\"", t->len > 40 ? 40 : t->len, t->text); break;
    default: snprintf(buf, len, "'%.*s'", t->len > 64 ? 64 : t->len, t->text); break;
    }
    return buf;
}
