/* codegen/emit_c_internal.h — what the parts of the C emitter share:
 * codegen/emit_c.c (types, expressions, statements, the translation unit)
 * and codegen/emit_par.c (loops outlined onto the thread pool, GEMM
 * statements and their epilogues). Not a public interface. */
#ifndef KILN_CODEGEN_EMIT_C_INTERNAL_H
#define KILN_CODEGEN_EMIT_C_INTERNAL_H

#include "codegen/codegen.h"
#include "codegen/gemm.h"
#include "ir/util.h"

#include <stdbool.h>

/* Per buffer of a kernel: whether it is a parameter, read, written, and
 * whether it may be `restrict`. */
typedef struct bufinfo {
    bool param, read, written, restrict_ok;
    bool partial_overlap; /* shares some, not all, of its bytes with a buffer one of them writes */
    bool scratch; /* a kernel-local array, declared where it is used */
} bufinfo;

typedef struct kctx {
    const kiln_kernel *k;
    const kiln_graph *g;
    kiln_sbuf *b;
    bool *helpers;
    /* per expression of the statement being written */
    int32_t *refs;     /* references within the statement */
    uint8_t *uncond;   /* 1: used by the statement, 2: evaluated on every path */
    int32_t *temp;     /* the temporary holding it, or -1 */
    int32_t ntemps;    /* temporaries so far in this kernel (v0, v1, ...) */
    const char *error; /* a problem to report with #error */
    /* threads: which top-level loops are outlined onto the pool */
    const uint8_t *outline; /* per statement: 1 for an outlined top-level loop */
    const int32_t *local_owner; /* per local: its top-level statement; -1 none, -2 several */
    const int32_t *scratch_owner; /* per buffer, the same for scratch arrays */
    const bufinfo *bi;          /* per buffer of the kernel */
    kiln_sbuf *pre;                  /* where outlined loops' functions go */
    int npar;                   /* outlined loops and GEMMs so far (p0, g1, ...) */
    const kiln_cg_target *target; /* what GEMMs are generated for */
    bool *vec_used; /* emit_vec.c: set when a vector loop is written (the unit needs its prelude) */
} kctx;

void kiln_ce_indent(kiln_sbuf *b, int depth);
bool kiln_ce_dtype_ok(int t);
const char *kiln_ce_ctype_mem(int t); /* a dtype as stored */
const char *kiln_ce_ctype_val(int t); /* a dtype as computed */
/* The operands of an expression and which only some paths evaluate. */
int kiln_ce_operands(const kiln_kexpr *x, int32_t *ops, bool *cond);
void kiln_ce_put_loop_head(kctx *c, const kiln_kstmt *st, int depth, const char *lo_hi);
/* The same head over [from, to) (C expressions; NULL: 0 and the extent), note
 * in its comment; hints: the simd pragma and the loop's hints as well. */
void kiln_ce_put_loop_range(kctx *c, const kiln_kstmt *st, int depth, const char *from,
                            const char *to, const char *note, bool hints);
/* A scalar expression (top: without outer parentheses). */
void kiln_ce_put_expr(kctx *c, int32_t e, bool top);
void kiln_ce_put_buf_param(kctx *c, int32_t i, bool restrict_ok, bool notes);
void kiln_ce_put_scratch_decl(kctx *c, kiln_sbuf *b, int32_t i);
void kiln_ce_put_stmts(kctx *c, int32_t s, int depth, int guard);
/* The C operator of a binary op ("+", "<=", "&&", ...; "?" for none). */
const char *kiln_ce_binop_token(int op);

/* Each buffer of kernel k in entry e: parameter, read, written, and whether
 * it may be `restrict` (shared by the LLVM backend). */
void kiln_ce_classify_bufs(const kiln_kernel *k, const kiln_plan_entry *e, bufinfo *bi);

/* Appends function `name` (kernel ki of plan entry `entry`, e its entry)
 * to a signature table (codegen.h, "kernel signatures"); false when out of
 * memory. */
bool kiln_kfuncs_add(kiln_kfuncs *t, const char *name, int32_t slot, int entry, int32_t ki,
                     const kiln_plan_entry *e, bool rt);

/* emit_par.c */
void kiln_ce_put_outlined(kctx *c, int32_t s, int depth, int guard);
void kiln_ce_put_gemm(kctx *c, int32_t s, int depth);
int kiln_ce_plan_outlining(const kiln_kernel *k, const bufinfo *bi, uint8_t *outline,
                           int32_t *owner, int32_t *sowner);

/* emit_vec.c: explicit vector code for the target (see its header comment).
 * Writes loop s (a KS_LOOP with the vector hint) as a main loop over whole
 * vectors plus a scalar remainder and returns true, or writes nothing and
 * returns false (the caller writes the scalar loop). lo_hi as for
 * kiln_ce_put_loop_head. */
bool kiln_ce_put_vector_loop(kctx *c, int32_t s, int depth, const char *lo_hi);
/* The vector types and helpers those loops use, once per unit (nothing for
 * a scalar target). */
void kiln_ce_put_vec_prelude(kiln_sbuf *b, const kiln_cg_target *t);

#endif
