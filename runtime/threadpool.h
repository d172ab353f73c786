/* runtime/threadpool.h — the thread pool that generated kernels split their
 * parallel loops across.
 *
 * A pool of T threads is T - 1 worker threads plus the caller: the caller of
 * kiln_parallel_for takes chunks of the range too, so a pool of 1 thread has
 * no workers and runs every call inline. A program creates one pool when it
 * is compiled (kiln_compile_options.threads) and hands it to its entry
 * points through a kiln_rt (codegen/codegen.h), since the dlopen'd code
 * cannot call libkiln's symbols itself.
 *
 * kiln_parallel_for(pool, n, fn, ctx) splits [0, n) into contiguous chunks
 * (at most 4 per thread, never more than n), calls fn(ctx, lo, hi) once per
 * chunk on some thread, and returns when every chunk has finished and its
 * writes are visible to the caller: the barrier at the end of a kernel.
 * Each index is covered exactly once; which thread runs a chunk varies, so
 * fn must not care (generated kernels compute each output element with the
 * same code whatever the split, so results do not depend on T).
 *
 * Waiting: idle workers spin briefly on a generation counter, then sleep on
 * a condition variable; the caller likewise spins, then sleeps, until the
 * last chunk finishes. No allocation per call.
 *
 * One caller at a time: a call made while the pool is busy (from inside fn,
 * or from a second thread) runs its whole range inline on the calling
 * thread, so it can neither deadlock nor interleave with the running job.
 */
#ifndef KILN_RUNTIME_THREADPOOL_H
#define KILN_RUNTIME_THREADPOOL_H

#include "codegen/codegen.h"

#include <stdint.h>

typedef struct kiln_pool kiln_pool;

/* The function a parallel loop runs on [lo, hi) of its range. */
typedef void (*kiln_task_fn)(void *ctx, int64_t lo, int64_t hi);

/* The number of online cores (sysconf(_SC_NPROCESSORS_ONLN)), at least 1. */
int kiln_num_cores(void);

/* A pool of `threads` threads (the caller included): 0 or less means
 * kiln_num_cores(); capped at 256. Returns NULL only when out of memory. If
 * the system refuses to start some workers the pool keeps the ones it got
 * (kiln_pool_threads says how many threads it has). */
kiln_pool *kiln_pool_new(int threads);

/* Stops and joins the workers and frees the pool. The pool must be idle (no
 * kiln_parallel_for running). NULL is fine. */
void kiln_pool_free(kiln_pool *pool);

/* The number of threads, the caller included (1 for a NULL pool). */
int kiln_pool_threads(const kiln_pool *pool);

/* Runs fn(ctx, lo, hi) over chunks covering [0, n) exactly once and waits
 * for them all. n <= 0 calls nothing. A NULL pool runs fn(ctx, 0, n)
 * inline. */
void kiln_parallel_for(kiln_pool *pool, int64_t n, kiln_task_fn fn, void *ctx);

/* The runtime struct entry points take, over `pool` (NULL: every parallel
 * loop runs inline on the caller). */
kiln_rt kiln_pool_rt(kiln_pool *pool);

#endif
