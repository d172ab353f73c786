/* tests/kernel_eval.h — a small kernel-IR evaluator for the lowering tests
 * (tests/test_lower_*.c): runs a kiln_kernel on double buffers, checked.
 *
 * Every expression is rounded to its dtype as the generated C would (f32
 * arithmetic is f64 arithmetic rounded to float, which is exact for + - * /;
 * u8 wraps), min and max propagate NaN as the emitted helpers do, and any
 * load or store outside its buffer, a store to a buffer the kernel does not
 * write, an integer division or remainder by zero (no lowering rule may
 * reach one: the generated C would quietly give 0) or a malformed kernel is
 * reported in `err`. Both arms of a select are evaluated, as vectorised code
 * may load both, so an arm's out-of-bounds load is caught even when the
 * condition would skip it.
 *
 * keval_typecheck checks the operand dtypes the emitter may rely on (see
 * kernel_eval.c) and the structure (ids in range) before a run.
 *
 *   keval e;
 *   keval_init(&e, k);              // buffers sized by k->bufs[b].shape
 *   ... fill e.buf[b][0 .. e.len[b]) for the buffers read ...
 *   keval_typecheck(&e);            // e.err: the first problem, "" if none
 *   int rc = keval_run(&e);         // 0, or the code of the failed check
 *   keval_fini(&e);
 */
#ifndef KILN_TESTS_KERNEL_EVAL_H
#define KILN_TESTS_KERNEL_EVAL_H

#include "ir/kernel.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct keval {
    const kiln_kernel *k;
    double **buf;   /* per kernel buffer: its elements */
    int64_t *len;   /* per kernel buffer: its element count */
    int64_t *vars;  /* loop variables */
    double *locals; /* local scalars */
    char err[512];  /* the first problem met; "" if none */
} keval;

/* Integer dtypes (not bool, not floats). */
bool keval_is_int(kiln_dtype t);
/* v as dtype t holds it: C's conversions (float rounding, truncation toward
 * zero, u8 wrapping; non-finite to an integer is 0, as kiln_f2* helpers of
 * the generated C give for NaN). */
double keval_round(kiln_dtype t, double v);

/* Allocates buffers (numel of each kernel buffer's shape, zeroed), loop
 * variables and locals for kernel k. Returns false when out of memory (e is
 * then freed). */
bool keval_init(keval *e, const kiln_kernel *k);
void keval_fini(keval *e);

/* Type and structure checks of the kernel; the first problem goes to err. */
void keval_typecheck(keval *e);

/* Runs the kernel's body. Returns 0, or the code (> 0) of the first
 * KS_CHECK that failed (the run stops there, as the generated C returns).
 * A malformed access sets err and stops the run; the return value is then
 * 0 unless a check had failed first. */
int keval_run(keval *e);

#endif
