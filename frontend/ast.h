/* frontend/ast.h — the syntax tree of a model file, and the parser that
 * builds it. Everything lives in one arena, freed with the parse. */
#ifndef KILN_FRONTEND_AST_H
#define KILN_FRONTEND_AST_H

#include "frontend/arena.h"
#include "frontend/diag.h"

#include <stdbool.h>
#include <stdint.h>

#define FE_MAX_DEPTH 200 /* deepest expression nesting the parser accepts */
#define FE_MAX_ARGS 32   /* most arguments in one call */

typedef enum fe_expr_kind {
    EX_NUM,  /* 3, 0.5, true, false */
    EX_STR,  /* "fc1" */
    EX_NAME, /* h, B, f32 */
    EX_LIST, /* [B, 784] */
    EX_CALL, /* relu(x), linear(h, 10, name="fc") */
    EX_BIN,  /* a + b, a - b, a * b, a / b */
    EX_NEG,  /* -a */
} fe_expr_kind;

typedef struct fe_expr fe_expr;

typedef struct fe_arg {
    const char *kw; /* keyword, or NULL for a positional argument */
    fe_loc kw_loc;
    fe_expr *e;
} fe_arg;

struct fe_expr {
    fe_expr_kind kind;
    fe_loc loc; /* calls: the callee's name; binary: the operator */
    int depth;  /* height of the tree below, for the nesting limit */
    union {
        struct {
            bool is_int;
            int64_t i;
            double f;
        } num;
        const char *str; /* EX_STR, EX_NAME */
        struct {
            int n;
            fe_expr **items;
        } list;
        struct {
            const char *name;
            int nargs;
            fe_arg *args;
        } call;
        struct {
            char op; /* '+', '-', '*', '/' */
            fe_expr *a, *b;
        } bin;
        fe_expr *neg;
    };
};

typedef enum fe_stmt_kind {
    ST_INPUT,  /* input x: f32[B, 784] */
    ST_TARGET, /* target y: i32[B] */
    ST_ASSIGN, /* h = expr */
    ST_RETURN, /* return expr (blocks only, last) */
    ST_METRIC, /* metric accuracy(out, y) [as NAME] */
    ST_OUTPUT, /* output expr [as NAME] */
    ST_BLOCK,  /* block name(params) { ... } */
    ST_DIM,    /* dim S = 28: a size the caller may set at load time */
    ST_GROUP,  /* group head: later parameters belong to parameter group 'head' */
} fe_stmt_kind;

typedef struct fe_stmt fe_stmt;

typedef struct fe_param {
    const char *name;
    fe_loc loc;
    fe_expr *def; /* default value, or NULL */
} fe_param;

typedef struct fe_block {
    const char *name;
    fe_loc loc; /* of the name */
    int index;  /* order of definition in the file */
    int nparams;
    fe_param *params;
    int nbody;
    fe_stmt **body; /* the last one is the ST_RETURN */
} fe_block;

struct fe_stmt {
    fe_stmt_kind kind;
    fe_loc loc;       /* first token */
    const char *name; /* assigned, declared, output or metric name (NULL: none given) */
    fe_loc name_loc;
    fe_expr *e; /* assigned/returned/output value; for metrics the call */
    /* declarations */
    const char *dtype;
    fe_loc dtype_loc;
    int rank;
    fe_expr **dims;
    fe_block *block; /* ST_BLOCK */
};

typedef struct fe_program {
    const char *name; /* model name */
    fe_loc name_loc;
    int nstmts;
    fe_stmt **stmts; /* top level, blocks included, in file order */
    int nblocks;
    fe_block **blocks; /* in definition order */
} fe_program;

/* Parses d->text into *out (arena-allocated). On failure the error is in d. */
kiln_status fe_parse(fe_diag *d, fe_arena *a, fe_program **out);

#endif
