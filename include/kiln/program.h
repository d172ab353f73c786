/* kiln/program.h — compiled programs: a forward graph compiled into entry
 * points (train_step, eval_step, forward) over three allocations
 * (parameters, optimizer state, activation arena). Included by kiln/kiln.h.
 *
 * A program exposes named tensors: the graph's inputs and targets, its
 * parameters (linear0.weight, ...), optimizer state (linear0.weight.exp_avg),
 * hyperparameters (lr, mom, beta2, eps, wd, step), and what the entry points
 * return: the loss ("loss"), metric partials (e.g. "accuracy": the count of
 * correct samples in the batch) and outputs. Their storage is owned by the
 * program and stays at the same address for the program's life; no entry
 * point allocates.
 */
#ifndef KILN_PROGRAM_H
#define KILN_PROGRAM_H

#ifndef KILN_KILN_H
#error "include <kiln/kiln.h>"
#endif

typedef struct kiln_program kiln_program;

typedef enum kiln_backend {
    KILN_BACKEND_C,   /* generated C, compiled by the system C compiler, dlopen'd */
    KILN_BACKEND_REF, /* the reference interpreter (slow; the oracle) */
    KILN_BACKEND_LLVM, /* the same kernels built with LLVM and JIT-compiled in process
                          (KILN_ERR_UNSUPPORTED when kiln was built without LLVM) */
} kiln_backend;

typedef struct kiln_compile_options {
    kiln_backend backend;     /* default KILN_BACKEND_C */
    kiln_train_options train; /* the optimizer of train_step */
    const char *cc;           /* C compiler; NULL: $CC, else "cc" */
    const char *cache_dir;    /* NULL: $XDG_CACHE_HOME/kiln, else ~/.cache/kiln */
    int verbose;              /* print the compiler command and timings to stderr */
    int threads;              /* threads the C backend's kernels run on (the caller
                                 included): 0 (default) means one per online core,
                                 1 runs everything on the calling thread. The
                                 program owns a pool of threads - 1 workers, started
                                 here and stopped by kiln_program_free; results do not
                                 depend on the count (each output element is computed
                                 by the same code). The reference backend ignores it. */
    const char *target;       /* the machine the C backend's code is for: NULL or
                                 "native" (default: the host's widest vector ISA),
                                 "avx512", "avx2", "neon" or "scalar" (no vector
                                 code). It picks the GEMM micro-kernels and the width
                                 of explicit vector loops; the JIT still compiles with
                                 -march=native, so a program runs only where its
                                 target's instructions exist. Another name is
                                 KILN_ERR_INVALID. */
} kiln_compile_options;

kiln_compile_options kiln_compile_defaults(void);

/* Compiles a forward graph: train_step (when it has a loss and parameters),
 * eval_step (when it has a loss) and forward (its outputs, or else its loss
 * and metrics). Parameters start at zero: call kiln_program_init_params.
 * On failure *out is NULL and *err (caller frees; may be NULL) says what
 * failed: a C compile failure quotes the compiler's message and names the
 * kept source file. */
kiln_status kiln_compile(const kiln_graph *forward, const kiln_compile_options *opt,
                         kiln_program **out, char **err);
void kiln_program_free(kiln_program *p);
const char *kiln_program_error(const kiln_program *p);

/* Runs an entry point: "train_step", "eval_step" or "forward". */
kiln_status kiln_program_run(kiln_program *p, const char *entry);
/* Whether the program has that entry point. */
int kiln_program_has_entry(const kiln_program *p, const char *entry);

typedef struct kiln_tensor_info {
    const char *name; /* owned by the program */
    kiln_role role;
    kiln_dtype dtype;
    int rank;
    int64_t shape[KILN_MAX_RANK];
    size_t bytes;
    kiln_metric_kind metric; /* METRIC tensors: how the runtime finalises the summed
                                partials (kiln_metric_kind); KILN_METRIC_MEAN otherwise */
    int model_state; /* 1: a STATE tensor of the model itself, not of the optimizer
                        (batchnorm's running statistics): it lives with the
                        parameters, kiln_program_init_params sets it (zeros or
                        ones), kiln_program_reset_state leaves it, checkpoints
                        save and load it with the parameters */
    int group;       /* PARAM tensors: the parameter group (kiln_set_param_group,
                        the model language's `group`); 0 otherwise */
} kiln_tensor_info;

/* The program's named tensors, i in [0, kiln_program_num_tensors). */
int kiln_program_num_tensors(const kiln_program *p);
kiln_status kiln_program_tensor(const kiln_program *p, int i, kiln_tensor_info *info);
/* Storage of a named tensor (read and write), or NULL when there is none. */
void *kiln_program_data(kiln_program *p, const char *name, kiln_tensor_info *info);
/* Copies bytes into / out of a named tensor; the size must match exactly. */
kiln_status kiln_program_set(kiln_program *p, const char *name, const void *data, size_t bytes);
kiln_status kiln_program_get(kiln_program *p, const char *name, void *data, size_t bytes);
/* Sets a scalar hyperparameter (f32) by name; KILN_ERR_NOT_FOUND if absent. */
kiln_status kiln_program_set_hparam(kiln_program *p, const char *name, double v);

/* Initialises every parameter from its recorded initialisation with a seeded
 * generator (same seed, same weights), sets model state (running statistics)
 * to its initial value and zeroes the optimizer state. */
kiln_status kiln_program_init_params(kiln_program *p, uint64_t seed);
/* Zeroes the optimizer state only. */
kiln_status kiln_program_reset_state(kiln_program *p);

/* Copies every parameter and named constant (and, with with_state, every
 * optimizer or running-statistics STATE tensor) that src and dst both hold
 * under the same name from src into dst: progressive resizing carries a
 * model compiled for one input size over to the same model compiled for
 * another. A tensor both hold with a different dtype or shape fails with
 * KILN_ERR_SHAPE naming it, before anything is copied. report (may be NULL)
 * counts what was copied and what only one side holds. */
typedef struct kiln_copy_report {
    int copied;   /* tensors copied */
    int only_dst; /* dst tensors src does not hold (left as they were) */
    int only_src; /* src tensors dst does not hold */
    size_t bytes;
} kiln_copy_report;
kiln_status kiln_program_copy(kiln_program *dst, kiln_program *src, int with_state,
                              kiln_copy_report *report, char **err);

typedef struct kiln_program_stats {
    size_t param_bytes, state_bytes, arena_bytes;
    size_t interface_bytes;       /* the part of the arena holding inputs, targets,
                                     hyperparameters and returned values; the rest
                                     (arena_bytes - interface_bytes) holds the
                                     intermediates, placed by the memory planner */
    size_t intermediates_bytes;   /* the sum of the intermediates' sizes (each 64-byte
                                     aligned) before planning: the largest over the
                                     entry points (one slot per value would need
                                     interface_bytes + this) */
    int64_t num_params;           /* trainable scalars */
    double train_flops;           /* per train_step */
    double compile_seconds;       /* cold or cached compile */
    int cached;                   /* the shared object came from the disk cache */
    int num_kernels;              /* in train_step */
    int threads;                  /* threads its kernels run on (1 for the reference backend) */
} kiln_program_stats;

kiln_status kiln_program_stats_get(const kiln_program *p, kiln_program_stats *s);

/* The sizes, flops and kernel count of the C backend's plan for a graph,
 * without compiling it (what `kiln info` prints); compile_seconds, cached
 * and threads are 0. */
kiln_status kiln_plan_stats(const kiln_graph *forward, const kiln_compile_options *opt,
                            kiln_program_stats *s, char **err);

/* ---- compile times ----
 * What kiln_compile spent, phase by phase, in seconds (wall time). Loading
 * and parsing a model file happen before kiln_compile and are not in it. */
typedef struct kiln_compile_timings {
    double graphs;   /* the entry graphs: train program (autodiff, optimizer),
                        eval and forward, and their passes (simplify, cse, dce) */
    double lower;    /* fusion and lowering to kernel IR (C, LLVM backends) */
    double memplan;  /* named tensors' layout and the memory planner */
    double emit;     /* the C source, or the LLVM module */
    double optimize; /* LLVM: the default<O3> pipeline (compiled in parts: the
                        slowest part's); C: 0 (the C compiler's) */
    double compile;  /* C: the C compiler and dlopen (a cache hit: the dlopen);
                        LLVM: machine code, linking in the JIT, symbol lookups */
    double load;     /* binding entries and kernels, preparing their calls;
                        REF: creating the interpreters */
    double total;    /* kiln_compile from its call to its return */
    int cached;      /* C: the shared object came from the disk cache */
    int parts;       /* LLVM: modules optimised and compiled side by side, one
                        thread each (the cores, or KILN_LLVM_THREADS) */
} kiln_compile_timings;

kiln_status kiln_program_timings(const kiln_program *p, kiln_compile_timings *t);

/* ---- calling compiled functions by name (runtime/ffi.c, libffi) ----
 * A program compiled by the C or LLVM backend describes every function it
 * compiled: its entry points ("train_step", ... : they take the memories P,
 * S and A as byte buffers, then the runtime context) and each generated
 * kernel ("k12_matmul": one pointer per buffer it reads or writes, then the
 * context when it runs on threads). kiln_program_call calls any of them
 * with any argument list through libffi, after checking the arguments
 * against the signature; kiln_program_run calls entries the same way.
 * The reference backend compiles no functions (KILN_ERR_UNSUPPORTED). */
typedef enum kiln_arg_kind {
    KILN_ARG_VOID,   /* no value (a function's return only) */
    KILN_ARG_BUFFER, /* a pointer to `count` elements of `dtype` */
    KILN_ARG_I32,
    KILN_ARG_I64,
    KILN_ARG_F32,
    KILN_ARG_F64,
    KILN_ARG_CTX, /* the runtime's context (threads): pass kiln_arg_ctx(); the
                     program supplies its own */
} kiln_arg_kind;

typedef struct kiln_arg {
    kiln_arg_kind kind;
    kiln_dtype dtype; /* BUFFER: its elements' type */
    int64_t count;    /* BUFFER: elements at ptr, at least the parameter's count */
    union {
        void *ptr; /* BUFFER; CTX: NULL */
        int32_t i32;
        int64_t i64;
        float f32;
        double f64;
    } v;
} kiln_arg;

static inline kiln_arg kiln_arg_buffer(kiln_dtype t, void *p, int64_t count)
{
    kiln_arg a = {KILN_ARG_BUFFER, t, count, {.ptr = p}};
    return a;
}
static inline kiln_arg kiln_arg_i32(int32_t v)
{
    kiln_arg a = {KILN_ARG_I32, KILN_I32, 0, {.i32 = v}};
    return a;
}
static inline kiln_arg kiln_arg_i64(int64_t v)
{
    kiln_arg a = {KILN_ARG_I64, KILN_I64, 0, {.i64 = v}};
    return a;
}
static inline kiln_arg kiln_arg_f32(float v)
{
    kiln_arg a = {KILN_ARG_F32, KILN_F32, 0, {.f32 = v}};
    return a;
}
static inline kiln_arg kiln_arg_f64(double v)
{
    kiln_arg a = {KILN_ARG_F64, KILN_F64, 0, {.f64 = v}};
    return a;
}
static inline kiln_arg kiln_arg_ctx(void)
{
    kiln_arg a = {KILN_ARG_CTX, KILN_U8, 0, {.ptr = 0}};
    return a;
}

typedef struct kiln_param_info {
    const char *name;   /* the tensor's name ("x", "linear0.weight"), else
                           "%N op" (graph node N of the entry); "P", "S", "A",
                           "rt" for entries */
    kiln_arg_kind kind;
    kiln_dtype dtype;   /* BUFFER */
    int64_t count;      /* BUFFER: elements */
    int rank;           /* BUFFER: the value's shape */
    int64_t shape[KILN_MAX_RANK];
    int read, written;  /* BUFFER: what the function does with it */
    int noalias;        /* BUFFER: it must not overlap another buffer argument */
} kiln_param_info;

typedef struct kiln_function_info {
    const char *name;  /* what kiln_program_call takes */
    int is_entry;      /* an entry point (else a kernel) */
    const char *entry; /* kernels: the entry point that runs it (first) */
    int index;         /* kernels: its position in that entry */
    const char *op;    /* kernels: the op of the node it computes */
    const char *desc;  /* kernels: "matmul(f32[64,784], ...) -> f32[64,512] at m.kiln:3:5" */
    kiln_arg_kind ret; /* KILN_ARG_I32: 0, or a failed run-time check's code */
    int nparams;
    const kiln_param_info *params; /* owned by the program */
    double flops;      /* kernels: the registry's cost of the nodes it computes
                          (values inlined into it not counted) */
    double bytes;      /* kernels: bytes of the buffers it reads plus those it writes */
} kiln_function_info;

/* The compiled functions, i in [0, kiln_program_num_functions): the entry
 * points, then the kernels (each once, though several entries may run it). */
int kiln_program_num_functions(const kiln_program *p);
kiln_status kiln_program_function(const kiln_program *p, int i, kiln_function_info *info);
/* The function called `name`, or KILN_ERR_NOT_FOUND naming what there is. */
kiln_status kiln_program_find_function(kiln_program *p, const char *name, kiln_function_info *info);

/* Calls function `name` with args[0..nargs) through libffi. The arguments
 * must match its signature: their count, each kind, a buffer's dtype and at
 * least its count of elements (not NULL); a mismatch is KILN_ERR_INVALID
 * with a message naming the function and the parameter, and nothing is
 * called. *result (may be NULL) gets the function's int return; a nonzero
 * one (a failed run-time check) is KILN_ERR_INVALID with the check's
 * message, as kiln_program_run says it. */
kiln_status kiln_program_call(kiln_program *p, const char *name, const kiln_arg *args, int nargs,
                              int *result);

/* The arguments that make function `name` work on the program's own
 * memories: each buffer at the place its entry gives it (what the last run
 * left there), P/S/A for entries, the context; into args[0..max), *nargs the
 * count (KILN_ERR_INVALID when max is too small). */
kiln_status kiln_program_args(kiln_program *p, const char *name, kiln_arg *args, int max,
                              int *nargs);

/* One line per kernel of the C backend's plan for a graph, without
 * compiling it: "entry index name: op(types) -> type at file:line:col"
 * (the names kiln_program_call takes for a C-backend program); a malloc'd
 * string, NULL on failure with *err set. */
char *kiln_plan_kernels(const kiln_graph *forward, const kiln_compile_options *opt, char **err);

/* The generated C translation unit of a graph (what --emit c prints);
 * a malloc'd string the caller frees, NULL on failure with *err set. */
char *kiln_emit_c(const kiln_graph *forward, const kiln_compile_options *opt, char **err);

#endif
