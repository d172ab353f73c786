/* frontend/parser.c — recursive-descent parser for the model language.
 *
 *   program   := NL* 'model' NAME end { top_stmt end } EOF
 *   top_stmt  := decl | block | metric | output | stmt
 *   decl      := ('input' | 'target') NAME ':' DTYPE '[' [expr {',' expr}] ']'
 *   block     := 'block' NAME '(' [param {',' param}] ')' '{' { stmt end } 'return' expr end '}'
 *   param     := NAME ['=' expr]
 *   metric    := 'metric' NAME '(' args ')' ['as' NAME]
 *   output    := 'output' expr ['as' NAME]
 *   stmt      := NAME '=' expr
 *   expr      := term { ('+' | '-') term }
 *   term      := unary { ('*' | '/') unary }
 *   unary     := '-' unary | primary
 *   primary   := NUMBER | STRING | 'true' | 'false' | NAME | NAME '(' args ')'
 *              | '(' expr ')' | '[' [expr {',' expr}] ']'
 *   args      := [arg {',' arg}] [',']      arg := [NAME '='] expr
 *   end       := NEWLINE | ';' | (before '}' or EOF)
 */
#include "frontend/ast.h"
#include "frontend/lexer.h"

#include <stdio.h>
#include <string.h>

typedef struct parser {
    fe_diag *d;
    fe_arena *a;
    fe_lexer L;
    fe_token tok, next;
    bool has_next;
    int depth;
    fe_program *prog;
    size_t blocks_cap;
    const fe_block *block; /* the block being parsed, or NULL at the top level */
} parser;

static void advance(parser *p)
{
    if (p->has_next) {
        p->tok = p->next;
        p->has_next = false;
    } else {
        p->tok = fe_lex_next(&p->L);
    }
}

static const fe_token *peek(parser *p)
{
    if (!p->has_next) {
        p->next = fe_lex_next(&p->L);
        p->has_next = true;
    }
    return &p->next;
}

/* "expected WHAT, found TOKEN" at the current token. */
static kiln_status expected(parser *p, const char *what)
{
    char b[128];
    return fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "expected %s, found %s", what,
                    fe_tok_desc(&p->tok, b, sizeof b));
}

static void *alloc(parser *p, size_t n)
{
    void *x = fe_alloc(p->a, n);
    if (!x) fe_nomem(p->d);
    return x;
}

static const char *tok_str(parser *p)
{
    char *s = fe_strndup(p->a, p->tok.text, (size_t)p->tok.len);
    if (!s) fe_nomem(p->d);
    return s;
}

/* Appends x to an arena array (*items, *n) with capacity *cap. */
static bool push(parser *p, void *items_ptr, int *n, size_t *cap, void *x)
{
    void ***items = items_ptr;
    if ((size_t)*n == *cap) {
        void **g = fe_grow(p->a, *items, (size_t)*n, sizeof **items, cap);
        if (!g) {
            fe_nomem(p->d);
            return false;
        }
        *items = g;
    }
    (*items)[(*n)++] = x;
    return true;
}

static bool too_deep(parser *p, fe_loc loc, int depth)
{
    if (depth <= FE_MAX_DEPTH) return false;
    fe_error(p->d, loc, KILN_ERR_PARSE, "expression nested too deeply (more than %d levels); "
             "split it over several assignments", FE_MAX_DEPTH);
    return true;
}

static fe_expr *new_expr(parser *p, fe_expr_kind kind, fe_loc loc)
{
    fe_expr *e = alloc(p, sizeof *e);
    if (e) {
        e->kind = kind;
        e->loc = loc;
        e->depth = 1;
    }
    return e;
}

static fe_expr *parse_expr(parser *p);

/* Parses '(' args ')' after a callee name; p->tok is the '('. */
static bool parse_args(parser *p, fe_expr *call)
{
    const char *callee = call->call.name;
    advance(p);
    size_t cap = 0;
    int maxdepth = 0;
    const char *kw_seen = NULL;
    while (p->tok.kind != TK_RPAREN) {
        if (call->call.nargs == FE_MAX_ARGS) {
            fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "too many arguments in the call of '%s' "
                     "(at most %d)", callee, FE_MAX_ARGS);
            return false;
        }
        fe_arg arg = {0};
        if (p->tok.kind == TK_IDENT && peek(p)->kind == TK_EQ) {
            arg.kw = tok_str(p);
            arg.kw_loc = p->tok.loc;
            if (!arg.kw) return false;
            for (int i = 0; i < call->call.nargs; i++)
                if (call->call.args[i].kw && !strcmp(call->call.args[i].kw, arg.kw)) {
                    fe_error(p->d, arg.kw_loc, KILN_ERR_PARSE, "argument '%s' of '%s' is given "
                             "twice", arg.kw, callee);
                    return false;
                }
            kw_seen = arg.kw;
            advance(p);
            advance(p);
        } else if (kw_seen) {
            fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "positional argument after the keyword "
                     "argument '%s' in the call of '%s'; put positional arguments first",
                     kw_seen, callee);
            return false;
        }
        if (!(arg.e = parse_expr(p))) return false;
        if (arg.e->depth > maxdepth) maxdepth = arg.e->depth;
        fe_arg *slot = NULL;
        if ((size_t)call->call.nargs == cap) {
            fe_arg *g = fe_grow(p->a, call->call.args, (size_t)call->call.nargs, sizeof *g, &cap);
            if (!g) {
                fe_nomem(p->d);
                return false;
            }
            call->call.args = g;
        }
        slot = &call->call.args[call->call.nargs++];
        *slot = arg;
        if (p->tok.kind == TK_COMMA) {
            advance(p);
        } else if (p->tok.kind != TK_RPAREN) {
            char what[128];
            snprintf(what, sizeof what, "',' or ')' in the call of '%s'", callee);
            expected(p, what);
            return false;
        }
    }
    advance(p);
    call->depth = maxdepth + 1;
    return !too_deep(p, call->loc, call->depth);
}

static fe_expr *parse_primary(parser *p)
{
    fe_token t = p->tok;
    fe_expr *e;
    switch (t.kind) {
    case TK_INT:
    case TK_FLOAT:
    case TK_TRUE:
    case TK_FALSE:
        if (!(e = new_expr(p, EX_NUM, t.loc))) return NULL;
        e->num.is_int = t.kind != TK_FLOAT;
        e->num.i = t.kind == TK_TRUE ? 1 : t.i;
        e->num.f = t.kind == TK_TRUE ? 1.0 : t.f;
        advance(p);
        return e;
    case TK_STRING:
        if (!(e = new_expr(p, EX_STR, t.loc))) return NULL;
        if (!(e->str = tok_str(p))) return NULL;
        advance(p);
        return e;
    case TK_IDENT: {
        bool call = peek(p)->kind == TK_LPAREN;
        if (!(e = new_expr(p, call ? EX_CALL : EX_NAME, t.loc))) return NULL;
        const char *name = tok_str(p);
        if (!name) return NULL;
        advance(p);
        if (!call) {
            e->str = name;
            return e;
        }
        e->call.name = name;
        return parse_args(p, e) ? e : NULL;
    }
    case TK_LPAREN: {
        advance(p);
        if (!(e = parse_expr(p))) return NULL;
        if (p->tok.kind != TK_RPAREN) {
            expected(p, "')'");
            return NULL;
        }
        advance(p);
        return e;
    }
    case TK_LBRACK: {
        if (!(e = new_expr(p, EX_LIST, t.loc))) return NULL;
        advance(p);
        size_t cap = 0;
        while (p->tok.kind != TK_RBRACK) {
            fe_expr *item = parse_expr(p);
            if (!item || !push(p, &e->list.items, &e->list.n, &cap, item)) return NULL;
            if (item->depth + 1 > e->depth) e->depth = item->depth + 1;
            if (p->tok.kind == TK_COMMA) {
                advance(p);
            } else if (p->tok.kind != TK_RBRACK) {
                expected(p, "',' or ']' in the list");
                return NULL;
            }
        }
        advance(p);
        return too_deep(p, e->loc, e->depth) ? NULL : e;
    }
    default: expected(p, "an expression"); return NULL;
    }
}

static fe_expr *parse_unary(parser *p)
{
    if (p->tok.kind != TK_MINUS) return parse_primary(p);
    fe_expr *e = new_expr(p, EX_NEG, p->tok.loc);
    if (!e) return NULL;
    advance(p);
    if (++p->depth > FE_MAX_DEPTH) {
        too_deep(p, e->loc, p->depth);
        return NULL;
    }
    e->neg = parse_unary(p);
    p->depth--;
    if (!e->neg) return NULL;
    e->depth = e->neg->depth + 1;
    return too_deep(p, e->loc, e->depth) ? NULL : e;
}

static fe_expr *binary(parser *p, fe_token op, fe_expr *a, fe_expr *b)
{
    fe_expr *e = new_expr(p, EX_BIN, op.loc);
    if (!e) return NULL;
    e->bin.op = op.text[0];
    e->bin.a = a;
    e->bin.b = b;
    e->depth = 1 + (a->depth > b->depth ? a->depth : b->depth);
    return too_deep(p, e->loc, e->depth) ? NULL : e;
}

static fe_expr *parse_term(parser *p)
{
    fe_expr *e = parse_unary(p);
    while (e && (p->tok.kind == TK_STAR || p->tok.kind == TK_SLASH)) {
        fe_token op = p->tok;
        advance(p);
        fe_expr *b = parse_unary(p);
        e = b ? binary(p, op, e, b) : NULL;
    }
    return e;
}

static fe_expr *parse_expr(parser *p)
{
    if (++p->depth > FE_MAX_DEPTH) {
        too_deep(p, p->tok.loc, p->depth);
        return NULL;
    }
    fe_expr *e = parse_term(p);
    while (e && (p->tok.kind == TK_PLUS || p->tok.kind == TK_MINUS)) {
        fe_token op = p->tok;
        advance(p);
        fe_expr *b = parse_term(p);
        e = b ? binary(p, op, e, b) : NULL;
    }
    p->depth--;
    return e;
}

/* Expects a name token; returns its arena copy and location. */
static const char *expect_name(parser *p, const char *what, fe_loc *loc)
{
    if (p->tok.kind != TK_IDENT) {
        expected(p, what);
        return NULL;
    }
    *loc = p->tok.loc;
    const char *s = tok_str(p);
    if (s) advance(p);
    return s;
}

static bool expect(parser *p, fe_tok_kind kind, const char *what)
{
    if (p->tok.kind != kind) {
        expected(p, what);
        return false;
    }
    advance(p);
    return true;
}

static bool parse_decl(parser *p, fe_stmt *s)
{
    const char *kw = s->kind == ST_INPUT ? "input" : "target";
    char what[96];
    advance(p);
    snprintf(what, sizeof what, "a name after '%s'", kw);
    if (!(s->name = expect_name(p, what, &s->name_loc))) return false;
    snprintf(what, sizeof what, "':' and a type after '%s %s' (e.g. f32[B, 10])", kw, s->name);
    if (!expect(p, TK_COLON, what)) return false;
    if (!(s->dtype = expect_name(p, "a dtype (f32, f64, i32, i64, u8 or bool)", &s->dtype_loc)))
        return false;
    if (!expect(p, TK_LBRACK, "'[' and the shape after the dtype (f32[] for a scalar)"))
        return false;
    size_t cap = 0;
    while (p->tok.kind != TK_RBRACK) {
        if (s->rank == KILN_MAX_RANK) {
            fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "too many dimensions (at most %d)",
                     KILN_MAX_RANK);
            return false;
        }
        fe_expr *dim = parse_expr(p);
        if (!dim || !push(p, &s->dims, &s->rank, &cap, dim)) return false;
        if (p->tok.kind == TK_COMMA) advance(p);
        else if (p->tok.kind != TK_RBRACK) return expected(p, "',' or ']' in the shape"), false;
    }
    advance(p);
    return true;
}

static bool parse_stmt_end(parser *p);
static fe_stmt *parse_stmt(parser *p);

static fe_block *parse_block(parser *p, fe_loc kw_loc)
{
    fe_block *b = alloc(p, sizeof *b);
    if (!b) return NULL;
    advance(p);
    if (!(b->name = expect_name(p, "the block's name after 'block'", &b->loc))) return NULL;
    for (int i = 0; i < p->prog->nblocks; i++)
        if (!strcmp(p->prog->blocks[i]->name, b->name)) {
            fe_error(p->d, b->loc, KILN_ERR_PARSE, "block '%s' is already defined at line %d",
                     b->name, p->prog->blocks[i]->loc.line);
            return NULL;
        }
    char what[128];
    snprintf(what, sizeof what, "'(' and the parameters of block '%s'", b->name);
    if (!expect(p, TK_LPAREN, what)) return NULL;
    size_t cap = 0;
    while (p->tok.kind != TK_RPAREN) {
        fe_param prm = {0};
        if (!(prm.name = expect_name(p, "a parameter name", &prm.loc))) return NULL;
        for (int i = 0; i < b->nparams; i++)
            if (!strcmp(b->params[i].name, prm.name)) {
                fe_error(p->d, prm.loc, KILN_ERR_PARSE, "parameter '%s' appears twice in "
                         "block '%s'", prm.name, b->name);
                return NULL;
            }
        if (p->tok.kind == TK_EQ) {
            advance(p);
            if (!(prm.def = parse_expr(p))) return NULL;
        }
        if ((size_t)b->nparams == cap) {
            fe_param *g = fe_grow(p->a, b->params, (size_t)b->nparams, sizeof *g, &cap);
            if (!g) return fe_nomem(p->d), NULL;
            b->params = g;
        }
        b->params[b->nparams++] = prm;
        if (p->tok.kind == TK_COMMA) advance(p);
        else if (p->tok.kind != TK_RPAREN) return expected(p, "',' or ')' after a parameter"), NULL;
    }
    advance(p);
    snprintf(what, sizeof what, "'{' to open the body of block '%s'", b->name);
    if (!expect(p, TK_LBRACE, what)) return NULL;
    p->block = b;
    cap = 0;
    bool returned = false;
    for (;;) {
        while (p->tok.kind == TK_NEWLINE) advance(p);
        if (p->tok.kind == TK_RBRACE) break;
        if (p->tok.kind == TK_EOF) {
            fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "unexpected end of file: block '%s' "
                     "(line %d) is missing its closing '}'", b->name, kw_loc.line);
            return NULL;
        }
        if (returned) {
            char t[128];
            fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "'return' must be the last statement of "
                     "block '%s', but %s follows it", b->name, fe_tok_desc(&p->tok, t, sizeof t));
            return NULL;
        }
        fe_stmt *s = parse_stmt(p);
        if (!s || !push(p, &b->body, &b->nbody, &cap, s) || !parse_stmt_end(p)) return NULL;
        returned = s->kind == ST_RETURN;
    }
    if (!returned) {
        fe_error(p->d, p->tok.loc, KILN_ERR_PARSE, "block '%s' has no 'return': end it with "
                 "'return VALUE'", b->name);
        return NULL;
    }
    p->block = NULL;
    advance(p);
    b->index = p->prog->nblocks;
    return b;
}

static fe_stmt *parse_stmt(parser *p)
{
    fe_stmt *s = alloc(p, sizeof *s);
    if (!s) return NULL;
    s->loc = p->tok.loc;
    const char *where = p->block ? p->block->name : NULL;
    char b[128];
    switch (p->tok.kind) {
    case TK_IDENT:
        s->kind = ST_ASSIGN;
        s->name_loc = p->tok.loc;
        if (!(s->name = tok_str(p))) return NULL;
        advance(p);
        /* `dim NAME = expr` ('dim' is a keyword only here, so it stays a
         * usable name elsewhere) */
        if (!strcmp(s->name, "dim") && p->tok.kind == TK_IDENT) {
            if (where) {
                fe_error(p->d, s->loc, KILN_ERR_PARSE, "'dim' is only allowed at the top level, "
                         "not inside block '%s'", where);
                return NULL;
            }
            s->kind = ST_DIM;
            s->name_loc = p->tok.loc;
            if (!(s->name = tok_str(p))) return NULL;
            advance(p);
            if (p->tok.kind != TK_EQ) {
                char what[160];
                snprintf(what, sizeof what, "'=' and a default after 'dim %s' (e.g. 'dim %s = 28')",
                         s->name, s->name);
                expected(p, what);
                return NULL;
            }
            advance(p);
            return (s->e = parse_expr(p)) ? s : NULL;
        }
        /* `group NAME`: later parameters belong to group NAME ('group' is
         * a keyword only here, as 'dim' is) */
        if (!strcmp(s->name, "group") && p->tok.kind == TK_IDENT) {
            if (where) {
                fe_error(p->d, s->loc, KILN_ERR_PARSE, "'group' is only allowed at the top "
                         "level, not inside block '%s'", where);
                return NULL;
            }
            s->kind = ST_GROUP;
            s->name_loc = p->tok.loc;
            if (!(s->name = tok_str(p))) return NULL;
            advance(p);
            return s;
        }
        if (p->tok.kind != TK_EQ) {
            char what[160];
            snprintf(what, sizeof what, "'=' after '%s' (a statement is 'name = expression')",
                     s->name);
            expected(p, what);
            return NULL;
        }
        advance(p);
        return (s->e = parse_expr(p)) ? s : NULL;
    case TK_RETURN:
        if (!where) {
            fe_error(p->d, s->loc, KILN_ERR_PARSE, "'return' outside a block; the model's "
                     "results are marked with 'loss = ...', 'metric' and 'output'");
            return NULL;
        }
        s->kind = ST_RETURN;
        advance(p);
        return (s->e = parse_expr(p)) ? s : NULL;
    case TK_INPUT:
    case TK_TARGET:
    case TK_BLOCK:
    case TK_METRIC:
    case TK_OUTPUT:
        if (where) {
            fe_error(p->d, s->loc, KILN_ERR_PARSE, "%s is only allowed at the top level, not "
                     "inside block '%s'", fe_tok_desc(&p->tok, b, sizeof b), where);
            return NULL;
        }
        break;
    case TK_MODEL:
        fe_error(p->d, s->loc, KILN_ERR_PARSE, "the model is already named '%s' at line %d; "
                 "'model' appears once, first in the file", p->prog->name, p->prog->name_loc.line);
        return NULL;
    default: expected(p, where ? "a statement or 'return'" : "a statement"); return NULL;
    }
    switch (p->tok.kind) {
    case TK_INPUT:
    case TK_TARGET:
        s->kind = p->tok.kind == TK_INPUT ? ST_INPUT : ST_TARGET;
        return parse_decl(p, s) ? s : NULL;
    case TK_BLOCK:
        s->kind = ST_BLOCK;
        if (!(s->block = parse_block(p, s->loc))) return NULL;
        if (!push(p, &p->prog->blocks, &p->prog->nblocks, &p->blocks_cap, s->block)) return NULL;
        return s;
    case TK_METRIC: {
        s->kind = ST_METRIC;
        advance(p);
        if (p->tok.kind != TK_IDENT || peek(p)->kind != TK_LPAREN) {
            expected(p, "a metric call after 'metric' (e.g. accuracy(out, y))");
            return NULL;
        }
        if (!(s->e = parse_primary(p))) return NULL;
        if (p->tok.kind == TK_AS) {
            advance(p);
            if (!(s->name = expect_name(p, "the metric's name after 'as'", &s->name_loc)))
                return NULL;
        }
        return s;
    }
    default: /* TK_OUTPUT */
        s->kind = ST_OUTPUT;
        advance(p);
        if (!(s->e = parse_expr(p))) return NULL;
        if (p->tok.kind == TK_AS) {
            advance(p);
            if (!(s->name = expect_name(p, "the output's name after 'as'", &s->name_loc)))
                return NULL;
        } else if (s->e->kind == EX_NAME) {
            s->name = s->e->str;
            s->name_loc = s->e->loc;
        } else {
            expected(p, "'as NAME' after the output expression");
            return NULL;
        }
        return s;
    }
}

/* A statement ends at a newline (consumed), or before '}' or the end of file. */
static bool parse_stmt_end(parser *p)
{
    if (p->tok.kind == TK_NEWLINE) {
        advance(p);
        return true;
    }
    if (p->tok.kind == TK_EOF || (p->tok.kind == TK_RBRACE && p->block)) return true;
    expected(p, "end of line after the statement");
    return false;
}

kiln_status fe_parse(fe_diag *d, fe_arena *a, fe_program **out)
{
    *out = NULL;
    parser p = {.d = d, .a = a};
    fe_lex_init(&p.L, d);
    if (!(p.prog = alloc(&p, sizeof *p.prog))) return d->status;
    advance(&p);
    while (p.tok.kind == TK_NEWLINE) advance(&p);
    if (p.tok.kind != TK_MODEL) {
        expected(&p, "'model NAME' at the start of the file");
        return d->status;
    }
    advance(&p);
    if (!(p.prog->name = expect_name(&p, "the model's name after 'model'", &p.prog->name_loc)) ||
        !parse_stmt_end(&p))
        return d->status;
    size_t cap = 0;
    for (;;) {
        while (p.tok.kind == TK_NEWLINE) advance(&p);
        if (p.tok.kind == TK_EOF) break;
        fe_stmt *s = parse_stmt(&p);
        if (!s || !push(&p, &p.prog->stmts, &p.prog->nstmts, &cap, s) || !parse_stmt_end(&p))
            return d->status ? d->status : KILN_ERR_INTERNAL;
    }
    if (d->status) return d->status;
    *out = p.prog;
    return KILN_OK;
}
