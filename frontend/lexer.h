/* frontend/lexer.h — tokens of the model language.
 *
 * Newlines end statements, except inside ( ) and [ ], where they are
 * whitespace (so a long call may span lines). A run of blank lines and
 * comments gives one TK_NEWLINE; ';' also gives one. '#' starts a comment
 * that runs to the end of the line. */
#ifndef KILN_FRONTEND_LEXER_H
#define KILN_FRONTEND_LEXER_H

#include "frontend/diag.h"

#include <stdint.h>

#define FE_MAX_NAME 64 /* longest identifier */

typedef enum fe_tok_kind {
    TK_EOF,
    TK_ERROR, /* the lexer recorded an error in the diag */
    TK_NEWLINE,
    TK_IDENT,
    TK_INT,
    TK_FLOAT,
    TK_STRING,
    TK_LPAREN,
    TK_RPAREN,
    TK_LBRACK,
    TK_RBRACK,
    TK_LBRACE,
    TK_RBRACE,
    TK_COMMA,
    TK_COLON,
    TK_EQ,
    TK_PLUS,
    TK_MINUS,
    TK_STAR,
    TK_SLASH,
    /* keywords */
    TK_MODEL,
    TK_INPUT,
    TK_TARGET,
    TK_BLOCK,
    TK_RETURN,
    TK_METRIC,
    TK_OUTPUT,
    TK_AS,
    TK_TRUE,
    TK_FALSE,
} fe_tok_kind;

typedef struct fe_token {
    fe_tok_kind kind;
    const char *text; /* into the source; for TK_STRING, the contents */
    int len;
    fe_loc loc;
    int64_t i; /* TK_INT */
    double f;  /* TK_INT and TK_FLOAT */
} fe_token;

typedef struct fe_lexer {
    fe_diag *d;
    const char *src;
    size_t len, pos, line_start;
    int line;
    int depth;      /* open ( and [ */
    fe_loc end_loc; /* just after the last token that is not a newline */
} fe_lexer;

void fe_lex_init(fe_lexer *L, fe_diag *d);
fe_token fe_lex_next(fe_lexer *L);
/* How a token reads in a message: "'relu'", "end of line", ... (buf >= 96). */
const char *fe_tok_desc(const fe_token *t, char *buf, size_t len);

#endif
