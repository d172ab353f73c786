/* runtime/threadpool.c — the thread pool (runtime/threadpool.h).
 *
 * Expects: one caller at a time per pool (a second, concurrent or nested,
 * call runs inline); kiln_pool_free only while idle.
 * Guarantees: kiln_parallel_for calls fn once per chunk of a partition of
 * [0, n) and returns after all of them, with their writes visible to the
 * caller; no allocation per call; workers joined by kiln_pool_free.
 *
 * How a call runs. Under the mutex the caller waits until no worker is
 * still registered on the previous job (a worker that woke late registers,
 * finds no chunk left and leaves), publishes the job (fn, ctx, n, chunk
 * count), resets the chunk counters and bumps the generation; sleeping
 * workers are woken with a broadcast. Every participant (the caller and each
 * worker that registers for the generation under the mutex, copying the job)
 * claims chunks with an atomic fetch-add on `next` until none is left, and
 * counts finished chunks in `done`; the one that finishes the last chunk
 * broadcasts `done_cv`. The caller returns once done == chunks. Because a
 * job is only replaced after every registered worker has left it, a worker
 * never runs a chunk of one job with the function of another.
 *
 * Waiting is spin-then-sleep: a worker polls the generation (with a pause
 * instruction) for a while before sleeping on `work_cv`; the caller polls
 * `done` before sleeping on `done_cv`. Kernels run back to back, so the
 * next job usually arrives while the workers still spin.
 */
#include "runtime/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

/* Helgrind knows pthread primitives but not C11 atomics: built with
 * -DKILN_HELGRIND, the hand-offs through `done` are annotated so that
 * `valgrind --tool=helgrind` checks the pool without false reports. */
#ifdef KILN_HELGRIND
#include <valgrind/helgrind.h>
#define HAPPENS_BEFORE(a) ANNOTATE_HAPPENS_BEFORE(a)
#define HAPPENS_AFTER(a) ANNOTATE_HAPPENS_AFTER(a)
#else
#define HAPPENS_BEFORE(a) ((void)0)
#define HAPPENS_AFTER(a) ((void)0)
#endif

#define MAX_THREADS 256
#define CHUNKS_PER_THREAD 4
#define WORKER_SPINS 20000 /* polls of the generation before sleeping */
#define CALLER_SPINS 20000 /* polls of `done` before sleeping */

typedef struct job {
    kiln_task_fn fn;
    void *ctx;
    int64_t n;
    int64_t chunks;
} job;

struct kiln_pool {
    int nthreads; /* the caller included */
    int nworkers;
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* a new generation (or stop) */
    pthread_cond_t done_cv; /* the last chunk finished, or the last worker left */
    /* under mu */
    job job;
    int active;   /* workers registered on the current job */
    int sleepers; /* workers waiting on work_cv */
    bool stop;
    /* atomics */
    atomic_uint_fast64_t gen;
    atomic_int_fast64_t next; /* the next chunk to claim */
    atomic_int_fast64_t done; /* chunks finished */
    atomic_int busy;          /* a call is running */
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/* One poll of a spin: a pause, and every 256th time a yield, so spinning
 * threads still let others run on an oversubscribed machine. */
static inline void pause_or_yield(int s)
{
    if ((s & 255) == 255)
        sched_yield();
    else
        cpu_relax();
}

int kiln_num_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* Chunk c of `chunks` equal parts of [0, n) (the first n % chunks one
 * longer). */
static void chunk_range(const job *j, int64_t c, int64_t *lo, int64_t *hi)
{
    int64_t q = j->n / j->chunks, r = j->n % j->chunks;
    *lo = c * q + (c < r ? c : r);
    *hi = *lo + q + (c < r ? 1 : 0);
}

/* Claims and runs chunks of j until none is left. */
static void run_chunks(kiln_pool *p, const job *j)
{
    for (;;) {
        int64_t c = atomic_fetch_add(&p->next, 1);
        if (c >= j->chunks) return;
        int64_t lo, hi;
        chunk_range(j, c, &lo, &hi);
        j->fn(j->ctx, lo, hi);
        HAPPENS_BEFORE(&p->done);
        if (atomic_fetch_add(&p->done, 1) + 1 == j->chunks) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_broadcast(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg)
{
    kiln_pool *p = arg;
    uint64_t seen = 0; /* the generation when the pool started */
    for (;;) {
        for (int s = 0;
             s < WORKER_SPINS && atomic_load_explicit(&p->gen, memory_order_acquire) == seen; s++)
            pause_or_yield(s);
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->gen) == seen && !p->stop) {
            p->sleepers++;
            pthread_cond_wait(&p->work_cv, &p->mu);
            p->sleepers--;
        }
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        seen = atomic_load(&p->gen);
        job j = p->job;
        p->active++;
        pthread_mutex_unlock(&p->mu);

        run_chunks(p, &j);

        pthread_mutex_lock(&p->mu);
        if (--p->active == 0) pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

kiln_pool *kiln_pool_new(int threads)
{
    if (threads <= 0) threads = kiln_num_cores();
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    kiln_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = 1;
    atomic_init(&p->gen, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->busy, 0);
    if (threads == 1) return p;
    if (!(p->workers = calloc((size_t)threads - 1, sizeof *p->workers))) {
        free(p);
        return NULL;
    }
    if (pthread_mutex_init(&p->mu, NULL)) goto fail_mu;
    if (pthread_cond_init(&p->work_cv, NULL)) goto fail_work;
    if (pthread_cond_init(&p->done_cv, NULL)) goto fail_done;
    for (int i = 0; i < threads - 1; i++) {
        if (pthread_create(&p->workers[i], NULL, worker_main, p)) break;
        p->nworkers++;
    }
    p->nthreads = p->nworkers + 1;
    return p;
fail_done:
    pthread_cond_destroy(&p->work_cv);
fail_work:
    pthread_mutex_destroy(&p->mu);
fail_mu:
    free(p->workers);
    p->workers = NULL;
    return p; /* a pool of one thread still works */
}

void kiln_pool_free(kiln_pool *p)
{
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        p->stop = true;
        atomic_fetch_add(&p->gen, 1);
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < p->nworkers; i++)
            pthread_join(p->workers[i], NULL);
        pthread_cond_destroy(&p->done_cv);
        pthread_cond_destroy(&p->work_cv);
        pthread_mutex_destroy(&p->mu);
        free(p->workers);
    }
    free(p);
}

int kiln_pool_threads(const kiln_pool *p)
{
    return p ? p->nthreads : 1;
}

void kiln_parallel_for(kiln_pool *p, int64_t n, kiln_task_fn fn, void *ctx)
{
    if (n <= 0 || !fn) return;
    if (!p || p->nworkers == 0 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    int expected = 0;
    if (!atomic_compare_exchange_strong(&p->busy, &expected, 1)) {
        fn(ctx, 0, n); /* nested or concurrent: inline */
        return;
    }
    int64_t chunks = (int64_t)p->nthreads * CHUNKS_PER_THREAD;
    if (chunks > n) chunks = n;
    job j = {.fn = fn, .ctx = ctx, .n = n, .chunks = chunks};

    pthread_mutex_lock(&p->mu);
    while (p->active > 0) /* late workers still on the previous job */
        pthread_cond_wait(&p->done_cv, &p->mu);
    p->job = j;
    atomic_store(&p->next, 0);
    atomic_store(&p->done, 0);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    if (p->sleepers) pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);

    run_chunks(p, &j);

    for (int s = 0;
         s < CALLER_SPINS && atomic_load_explicit(&p->done, memory_order_acquire) < chunks; s++)
        pause_or_yield(s);
    if (atomic_load(&p->done) < chunks) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->done) < chunks)
            pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    HAPPENS_AFTER(&p->done);
    atomic_store(&p->busy, 0);
}

static void rt_parallel_for(void *pool, int64_t n, void (*fn)(void *, int64_t, int64_t), void *ctx)
{
    kiln_parallel_for(pool, n, fn, ctx);
}

kiln_rt kiln_pool_rt(kiln_pool *pool)
{
    kiln_rt rt = {.pool = pool, .parallel_for = rt_parallel_for};
    return rt;
}
