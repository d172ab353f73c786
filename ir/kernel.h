/* ir/kernel.h — kernel IR: one loop nest per group of the graph.
 *
 * A kernel reads and writes buffers (each the storage of one graph node) and
 * is a list of statements: loops with constant extents, stores of a value to
 * a buffer element, and assignments to typed local scalars (for reductions).
 * Values are expression trees over constants, loop variables, locals, loads
 * and scalar ops. Both backends read only this IR; the C emitter
 * (codegen/emit_c.c) prints it as C.
 *
 * Lowering rules live in the op registry (ir/ops.def): `lower` builds the
 * kernel of a node with the kiln_kb builder below; pointwise ops share
 * kiln_lower_pointwise, which calls their `scalar` rule (the op on scalar
 * expressions — also what a fusion pass composes).
 */
#ifndef KILN_IR_KERNEL_H
#define KILN_IR_KERNEL_H

#include "ir/graph.h"

typedef enum kiln_kx_op {
    KX_CONST, /* f (float dtypes) or i (integer and bool dtypes) */
    KX_VAR,   /* loop variable a (int64) */
    KX_LOCAL, /* local scalar a */
    KX_LOAD,  /* buffer a at element index b (an int64 expression) */
    /* binary: a op b */
    KX_ADD,
    KX_SUB,
    KX_MUL,
    KX_DIV, /* integer division for integer dtypes */
    KX_MOD, /* integers only */
    KX_MIN,
    KX_MAX, /* NaN-propagating for floats, as the reference */
    KX_POW,
    KX_LT,
    KX_LE,
    KX_GT,
    KX_GE,
    KX_EQ,
    KX_NE,
    KX_AND,
    KX_OR,
    /* unary: op a */
    KX_NEG,
    KX_EXP,
    KX_LOG,
    KX_SQRT,
    KX_TANH,
    KX_ERF,
    KX_ABS,
    KX_LOG1P,
    KX_NOT,
    KX_ISNAN,
    KX_SELECT, /* a ? b : c */
    KX_CAST,   /* a converted to dtype */
    KX_HASH,   /* i64 a, b: kiln_kx_hash_value(a, b), a counter-based random number */
    KX_COUNT
} kiln_kx_op;

typedef struct kiln_kexpr {
    uint8_t op;    /* kiln_kx_op */
    uint8_t dtype; /* the result's kiln_dtype (comparisons give KILN_BOOL) */
    int32_t a, b, c;
    double f;
    int64_t i;
} kiln_kexpr;

typedef enum kiln_ks_kind {
    KS_LOOP,  /* for (var = 0; var < extent; var++) body */
    KS_STORE, /* buf[index] = value */
    KS_SET,   /* local = value */
    KS_CHECK, /* if (!value) the kernel fails with error code `index` (> 0) */
    KS_GEMM,  /* kernel->gemms[index]; body: its epilogue (see kiln_kgemm) */
} kiln_ks_kind;

typedef struct kiln_kstmt {
    uint8_t kind;
    uint8_t parallel; /* annotations, for the scheduler: run on the thread pool */
    uint8_t vector;   /* vector width chosen (0: none) */
    uint8_t unroll;
    int32_t var;      /* KS_LOOP: its variable; KS_SET: the local */
    int64_t extent;   /* KS_LOOP */
    int32_t buf;      /* KS_STORE */
    int32_t index;    /* KS_STORE: element index expression */
    int32_t value;    /* KS_STORE, KS_SET */
    int32_t body;     /* KS_LOOP: first statement of the body, -1 if empty */
    int32_t next;     /* next statement in the same list, -1 at the end */
} kiln_kstmt;

/* A GEMM statement: C = op(A) @ op(B) over f32 row-major matrices (see
 * codegen/gemm.h for op and the strides), C[i*ldc + j] holding each sum.
 * Its epilogue (the statement's body, may be empty) runs once for every
 * element (i, j) after C[i*ldc + j] is final, with loop variables var_i and
 * var_j bound to i and j: it may rewrite C there and store other buffers at
 * that element (a fused tail: bias, activation, optimizer update). */
/* Implicit im2col (passes/fuse.h): the GEMM's B operand (or A) is not stored
 * but packed straight from an image x [N, C, H, W] (the GEMM's buffer b, or a): its
 * stored matrix is the column matrix of im2col(x) (ir/conv.h) seen as
 * [C*kh*kw, N*OH*OW], from row r0 on (a group's rows). Only the C backend
 * reads it; plans built for the LLVM backend never set `on`. */
typedef struct kiln_kim2col {
    int32_t on;
    int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
    int64_t r0;
} kiln_kim2col;

typedef struct kiln_kgemm {
    int32_t a, b, c; /* buffers */
    int64_t M, N, K;
    int32_t ta, tb;
    int64_t lda, ldb, ldc;
    int32_t var_i, var_j;
    kiln_kim2col bimg; /* B packed from an image (on = 0: B is buffer b's matrix) */
    kiln_kim2col aimg; /* A made from an image, the same way (A not transposed) */
} kiln_kgemm;

typedef struct kiln_kbuf {
    int32_t node; /* the graph node whose value this is; -1 for scratch */
    uint8_t dtype;
    uint8_t written; /* the kernel stores to it */
    int32_t rank;
    int64_t shape[KILN_MAX_RANK];
} kiln_kbuf;

typedef struct kiln_kernel {
    char name[64];     /* a C identifier: k<node>_<op> */
    char comment[256]; /* op, input and output types, source location */
    int32_t node;      /* the graph node it computes */
    kiln_kbuf *bufs;
    int32_t nbufs;
    kiln_kexpr *exprs;
    int32_t nexprs, cap_exprs;
    kiln_kstmt *stmts;
    int32_t nstmts, cap_stmts;
    int32_t body; /* first top-level statement, -1 if none */
    int32_t nvars;
    uint8_t *local_dtype; /* per local */
    int32_t nlocals;
    kiln_kgemm *gemms; /* KS_GEMM statements' descriptions */
    int32_t ngemms;
    const char *check_msg[4]; /* messages of KS_CHECK codes 1..4 */
    int32_t nchecks;
} kiln_kernel;

void kiln_kernel_free(kiln_kernel *k);

/* ---- building a kernel (what lowering rules use) ----
 * Calls that create expressions or statements return an id >= 0, or a
 * negative status (out of memory, bad operand); a negative id given as an
 * operand is returned as it is, so rules can check once at the end
 * (kiln_kb_status). */
typedef struct kiln_kb kiln_kb;

kiln_status kiln_kb_status(const kiln_kb *kb);
const kiln_graph *kiln_kb_graph(const kiln_kb *kb);
int32_t kiln_kb_node(const kiln_kb *kb); /* the node being lowered */

/* The buffer of node `node` (registered on first use); kiln_kb_out is the
 * output's, kiln_kb_in the buffer of input k. */
int32_t kiln_kb_buf(kiln_kb *kb, int32_t node);
int32_t kiln_kb_out(kiln_kb *kb);
int32_t kiln_kb_in(kiln_kb *kb, int k);
/* A scratch array of n elements local to the kernel (node -1): partial
 * results such as a row accumulated in f64. Its contents do not outlive the
 * top-level statement that uses it (each thread running an outlined loop
 * has its own); only one top-level statement may use it. */
int32_t kiln_kb_scratch(kiln_kb *kb, kiln_dtype t, int64_t n);

/* Opens a GEMM statement (a, b, c, sizes, transposes and strides from g;
 * its var_i/var_j are allocated here and written back) whose epilogue
 * statements go into its body until the matching kiln_kb_end. Returns the
 * statement id. */
int32_t kiln_kb_gemm(kiln_kb *kb, kiln_kgemm *g);

/* Opens a loop over [0, extent) and returns its variable; statements go into
 * its body until the matching kiln_kb_end. */
int32_t kiln_kb_loop(kiln_kb *kb, int64_t extent);
void kiln_kb_end(kiln_kb *kb);
/* Schedule hints on the innermost open loop: `vector` lets its iterations
 * run in SIMD lanes, sums into locals (t = t + e) reassociated (the C
 * backend emits `#pragma omp simd reduction(+:t)`); `parallel` marks it for
 * the thread pool. */
void kiln_kb_hint(kiln_kb *kb, int vector, int parallel);
void kiln_kb_store(kiln_kb *kb, int32_t buf, int32_t index, int32_t value);
int32_t kiln_kb_local(kiln_kb *kb, kiln_dtype t); /* a new local scalar */
/* A run-time check: when `cond` is false the kernel returns `code` (> 0) and
 * the entry point stops with it; the program reports `message` (static,
 * e.g. "cross_entropy: a label is outside [0, C)"). The message is kept in
 * kernel->check_msg[code - 1]. */
void kiln_kb_check(kiln_kb *kb, int32_t cond, const char *message);
void kiln_kb_set(kiln_kb *kb, int32_t local, int32_t value);

int32_t kiln_kx_float(kiln_kb *kb, double v, kiln_dtype t);
int32_t kiln_kx_int(kiln_kb *kb, int64_t v); /* int64 */
int32_t kiln_kx_var(kiln_kb *kb, int32_t var);
int32_t kiln_kx_local(kiln_kb *kb, int32_t local);
int32_t kiln_kx_load(kiln_kb *kb, int32_t buf, int32_t index);
/* Binary and unary ops; the dtype follows the operands (bool for
 * comparisons, AND, OR, NOT, ISNAN). */
int32_t kiln_kx_bin(kiln_kb *kb, kiln_kx_op op, int32_t a, int32_t b);
int32_t kiln_kx_un(kiln_kb *kb, kiln_kx_op op, int32_t a);
int32_t kiln_kx_select(kiln_kb *kb, int32_t c, int32_t a, int32_t b);
int32_t kiln_kx_cast(kiln_kb *kb, int32_t a, kiln_dtype t);
/* KX_HASH of two i64 expressions (other integer dtypes are cast to i64). */
int32_t kiln_kx_hash(kiln_kb *kb, int32_t a, int32_t b);

/* What KX_HASH computes, bit for bit in every backend (and what reference
 * implementations call to draw the same numbers): SplitMix64's output for
 * seed a at counter b, i.e. the finaliser of a + b * golden ratio (wrapping
 * 64-bit unsigned arithmetic), shifted down to 31 bits: uniform in
 * [0, 2^31). Keys chain: kiln_kx_hash_value(kiln_kx_hash_value(seed, step), i). */
static inline int64_t kiln_kx_hash_value(int64_t a, int64_t b)
{
    uint64_t z = (uint64_t)a + (uint64_t)b * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return (int64_t)(z >> 33);
}

/* The row-major element index into buffer `buf` for an index given per
 * output dimension: idx[d] is an int64 expression for dimension d of an
 * output of rank `rank`; buf's shape broadcasts to it (NumPy rules: its
 * leading dimensions are dropped, its size-1 dimensions read index 0). */
int32_t kiln_kx_index(kiln_kb *kb, int32_t buf, int rank, const int32_t *idx);
/* Loads buffer `buf` broadcast to the output index idx[rank]. */
int32_t kiln_kx_load_at(kiln_kb *kb, int32_t buf, int rank, const int32_t *idx);

/* ---- fused lowering (codegen/lower_group.c) ----
 * Hooks that make some nodes virtual: a buffer of a virtual node is not
 * memory. kiln_kb_buf returns a handle for it (>= KILN_KB_VBUF) that rules
 * use as any buffer; kiln_kx_index on it records the element's coordinates,
 * kiln_kx_load calls value_at (the node computed there: an inlined value or
 * a member of the group), kiln_kb_store calls store_at (a group's anchor
 * whose store applies the tail). */
#define KILN_KB_VBUF (1 << 28)
typedef struct kiln_kb_hooks {
    void *ctx;
    bool (*is_virtual)(void *ctx, int32_t node);
    int32_t (*value_at)(kiln_kb *kb, void *ctx, int32_t node, const int32_t *coords);
    void (*store_at)(kiln_kb *kb, void *ctx, int32_t node, const int32_t *coords, int32_t value);
} kiln_kb_hooks;

/* A kernel builder over graph g for kernel `name`, with hooks (NULL: none);
 * kiln_kb_finish checks it and hands the kernel over (NULL on failure, with
 * the builder's message in err). `node` is what kiln_kb_node and the
 * kiln_kb_out/in helpers refer to; kiln_kb_set_node changes it. */
kiln_kb *kiln_kb_new(const kiln_graph *g, int32_t node, const char *name,
                     const kiln_kb_hooks *hooks);
void kiln_kb_set_node(kiln_kb *kb, int32_t node);
kiln_status kiln_kb_finish(kiln_kb *kb, kiln_kernel **out, char *err, size_t errlen);
/* Records a failure (the first one wins); returns st. */
kiln_status kiln_kb_fail(kiln_kb *kb, kiln_status st, const char *msg);
/* Clears the vector hint of every open loop (a loop nested inside one makes
 * its iterations unfit for SIMD lanes). */
void kiln_kb_unvector(kiln_kb *kb);
int kiln_kb_depth(const kiln_kb *kb);
/* The kernel being built (to inspect its expressions). */
const kiln_kernel *kiln_kb_kernel(const kiln_kb *kb);

/* Lowers node `node` of g into a new kernel through the op's `lower` rule.
 * *out is NULL (and the status OK) for leaves, which need no kernel. */
kiln_status kiln_lower_node(const kiln_graph *g, int32_t node, kiln_kernel **out, char *err,
                            size_t errlen);

/* The generic lowering of pointwise ops: one loop per output dimension,
 * inputs loaded with broadcasting, the op's scalar rule, one store. */
kiln_status kiln_lower_pointwise(kiln_kb *kb, const kiln_graph *g, int32_t node);
/* The lowering rule of leaves: no kernel. */
kiln_status kiln_lower_none(kiln_kb *kb, const kiln_graph *g, int32_t node);
/* The scalar rule of ops that are not pointwise (an error if called). */
int32_t kiln_noscalar(kiln_kb *kb, const kiln_node *n, const int32_t *in);

/* Whether buffer dst may take src's storage (in-place): k has no GEMM, and
 * every load of src or dst and every store to dst index the same element
 * (structurally equal index expressions), so each iteration reads src[i]
 * and writes dst[i] at one element only (stores come after the loads of an
 * iteration: lowering computes values into locals first). */
bool kiln_kernel_inplace_ok(const kiln_kernel *k, int32_t src, int32_t dst);

/* A readable dump of a kernel, for tests and KILN_DEBUG. */
void kiln_kernel_print(const kiln_kernel *k, FILE *f);

#endif
