/* runtime/kiln_ffi.h — calling compiled functions through libffi from their
 * signatures (not a public interface; include/kiln/program.h has the
 * public side: kiln_arg, kiln_param_info, kiln_function_info,
 * kiln_program_call).
 *
 * Two layers:
 *   - a signature (kiln_ffi_sig: parameter kinds, a return kind) prepared
 *     once into a libffi call interface, then any function of that
 *     signature called with a checked argument list (kiln_ffi_call) or, on
 *     the runtime's hot path, with values known to match
 *     (kiln_ffi_call_values);
 *   - a program's function table (kiln_ftable): the signatures of its entry
 *     points and of every generated kernel, built from the plan and the
 *     emitter's description of what it wrote (codegen/codegen.h, "kernel
 *     signatures"), with their addresses; what kiln_program_call,
 *     kiln_program_args and kiln_program_run use.
 *
 * Checks (kiln_ffi_check) never call anything on a mismatch: the argument
 * count, each argument's kind, a buffer's dtype, its count of elements
 * (at least the parameter's) and a non-NULL pointer (unless the parameter
 * has no elements). Messages name the function and the parameter, e.g.
 * "k12_matmul: parameter 2 'linear0.weight' is an f32 buffer of 401408
 * elements; argument 2 is an int64".
 */
#ifndef KILN_RUNTIME_KILN_FFI_H
#define KILN_RUNTIME_KILN_FFI_H

#include "codegen/codegen.h"
#include "passes/fuse.h"

typedef struct kiln_ffi_sig {
    const char *name;        /* the function's, for messages */
    kiln_arg_kind ret;       /* VOID, I32, I64, F32, F64, or BUFFER (a pointer) */
    int nparams;
    kiln_param_info *params; /* kind, dtype and count per parameter; names may be NULL */
    void *prep;              /* kiln_ffi_prep's call interface (private) */
} kiln_ffi_sig;

/* Prepares s's call interface (ffi_prep_cif); KILN_ERR_INVALID for a kind
 * libffi cannot pass (VOID as a parameter), NOMEM. */
kiln_status kiln_ffi_prep(kiln_ffi_sig *s, char *err, size_t errlen);
void kiln_ffi_unprep(kiln_ffi_sig *s);

/* Whether args[0..nargs) fit s (see the header comment). */
kiln_status kiln_ffi_check(const kiln_ffi_sig *s, const kiln_arg *args, int nargs, char *err,
                           size_t errlen);

/* Checks the arguments, then calls fn through libffi (s prepared on first
 * use); *ret (may be NULL) gets the return value as a kiln_arg of kind
 * s->ret. A CTX argument is passed as its v.ptr. */
kiln_status kiln_ffi_call(void (*fn)(void), kiln_ffi_sig *s, const kiln_arg *args, int nargs,
                          kiln_arg *ret, char *err, size_t errlen);

/* The hot path: values[i] points to argument i's value (as ffi_call wants
 * it), no checks; ret points to storage of at least 8 bytes (an int
 * return reads back as a 64-bit integer's low 32 bits: use
 * kiln_ffi_ret_i32). s must be prepared. */
void kiln_ffi_call_values(void (*fn)(void), const kiln_ffi_sig *s, void **values, void *ret);
int32_t kiln_ffi_ret_i32(const void *ret);

/* ---- a program's functions ---- */

typedef struct kiln_ftable kiln_ftable;

/* The table of a plan's entries (addresses eaddr[e], kiln_<entry>) and of
 * the kernels sigs describes (addresses kaddr[slot]); fusion[e] (may be
 * NULL) gives each kernel's flops. The plan must outlive the table. */
kiln_status kiln_ftable_new(const kiln_plan *plan, kiln_fuse_plan *const *fusion,
                            const kiln_kfuncs *sigs, void (*const *eaddr)(void),
                            void (*const *kaddr)(void), kiln_ftable **out, char *err,
                            size_t errlen);
void kiln_ftable_free(kiln_ftable *t);
int kiln_ftable_count(const kiln_ftable *t);
/* Function i's description; -1 for an index outside the table. */
int kiln_ftable_info(const kiln_ftable *t, int i, kiln_function_info *info);
/* The index of function `name`, or -1 (with a message listing a few). */
int kiln_ftable_find(const kiln_ftable *t, const char *name, char *err, size_t errlen);
/* Calls function i with checked arguments; a CTX argument gets rt. *result
 * gets the int return; a nonzero one is KILN_ERR_INVALID with its check's
 * message. */
kiln_status kiln_ftable_call(kiln_ftable *t, int i, const kiln_arg *args, int nargs,
                             const kiln_rt *rt, int *result, char *err, size_t errlen);
/* Function i's arguments on the memories mem[KILN_SPACE_*]. */
kiln_status kiln_ftable_args(const kiln_ftable *t, int i, char *const *mem, kiln_arg *args,
                             int max, int *nargs, char *err, size_t errlen);
/* Entry e of the plan on P, S, A through libffi; its int return. */
int kiln_ftable_run_entry(const kiln_ftable *t, int e, char *P, char *S, char *A,
                          const kiln_rt *rt);

#endif
