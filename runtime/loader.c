/* runtime/loader.c — batches from a data set (see include/kiln/data.h).
 *
 * Order. Epoch e visits the samples in a permutation drawn by Fisher–Yates
 * from a splitmix64 stream whose state is derived from (seed, e) alone, so
 * the same seed gives the same orders in every run, whatever epochs were
 * started before, and each epoch gets its own order. Without shuffle the
 * order is 0..N-1. Batch b holds positions [b*batch, (b+1)*batch) of the
 * order; a partial last batch is skipped with drop_last, else returned with
 * *n < batch and the rest of x and y zero-filled.
 *
 * Prefetching. A background thread gathers batches (the random-access copy
 * out of the data set) into two slots while the caller trains: batch k lives
 * in slot k % 2. kiln_loader_start cancels what is queued, waits for the
 * batch being gathered, then queues batches 0 and 1; kiln_loader_next waits
 * for its slot, copies it out and queues batch k + 2 into the slot it just
 * emptied. The API stays synchronous and the batches are byte-identical to
 * those gathered without the thread (KILN_LOADER_THREAD=0 in the environment
 * turns it off, as does a failure to create it). The data set must outlive
 * the loader and must not change while a loader over it exists.
 *
 * Image data sets (runtime/imgdata.h). The gather step makes the batch:
 * u8 pixels to f32, resized to the loader's size and, for a training split
 * opened with augmentation, transformed by the map of (seed, epoch, sample
 * index) — a pure function of those, so the worker thread's batches equal
 * the synchronous ones. kiln_loader_set_size and kiln_loader_set_augment
 * quiesce the worker like kiln_loader_start, change the view, resize the
 * slots and queue the next two batches again.
 */
#include "runtime/imgdata.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- the generator ------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound), bound >= 1, without modulo bias (rejection). */
static uint64_t below(uint64_t *s, uint64_t bound)
{
    uint64_t threshold = (0 - bound) % bound; /* 2^64 mod bound */
    for (;;) {
        uint64_t r = splitmix64(s);
        if (r >= threshold) return r % bound;
    }
}

/* The state of epoch `epoch`'s stream: both inputs go through the mixer, so
 * neighbouring seeds and epochs give unrelated streams. */
static uint64_t epoch_state(uint64_t seed, int64_t epoch)
{
    uint64_t a = seed, b = (uint64_t)epoch ^ 0x6b696c6e6c6f6164ull; /* "kilnload" */
    uint64_t s = splitmix64(&a);
    return s ^ splitmix64(&b) * 0xd1342543de82ef95ull;
}

/* ---- the loader ---------------------------------------------------------- */

enum { SLOT_EMPTY, SLOT_PENDING, SLOT_BUSY, SLOT_READY };

typedef struct slot {
    float *x;
    unsigned char *y;
    int64_t n;
    int64_t index; /* the batch it holds or is to hold */
    int state;
} slot;

struct kiln_loader {
    const kiln_dataset *d;
    int64_t batch, nbatches;
    int shuffle, drop_last;
    uint64_t seed;
    int64_t xs, ys; /* elements of one sample's x and y as served */
    kiln_imgview view; /* image data sets: size, augmentation, seed, epoch */
    int64_t *perm; /* the order of the current epoch */
    int64_t epoch, cursor; /* cursor: the next batch kiln_loader_next returns */
    int started;

    int threaded; /* the fields below are used only when it is set */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work; /* a slot became PENDING, or quit */
    pthread_cond_t done; /* a slot left BUSY */
    int quit;
    slot slots[2];
};

/* Gathers batch b of the current order into x and y (zero-filling a
 * partial batch); returns its sample count. Reads only fields that are
 * fixed for the loader's life, the data set, and perm. */
static int64_t gather(const kiln_loader *l, int64_t b, float *x, void *y)
{
    const kiln_dataset *d = l->d;
    int64_t start = b * l->batch, n = d->n - start;
    if (n > l->batch) n = l->batch;
    size_t xs = (size_t)l->xs, ys = (size_t)l->ys * 4;
    unsigned char *yb = y;
    const unsigned char *dy = d->y;
    if (d->img) kiln_imgset_gather(d, l->perm + start, n, &l->view, x, y);
    else for (int64_t i = 0; i < n; i++) {
        int64_t s = l->perm[start + i];
        if (x && xs) memcpy(x + (size_t)i * xs, d->x + (size_t)s * xs, xs * sizeof(float));
        if (yb && ys) memcpy(yb + (size_t)i * ys, dy + (size_t)s * ys, ys);
    }
    if (n < l->batch) {
        size_t rest = (size_t)(l->batch - n);
        if (x && xs) memset(x + (size_t)n * xs, 0, rest * xs * sizeof(float));
        if (yb && ys) memset(yb + (size_t)n * ys, 0, rest * ys);
    }
    return n;
}

static slot *next_pending(kiln_loader *l)
{
    slot *best = NULL;
    for (int k = 0; k < 2; k++)
        if (l->slots[k].state == SLOT_PENDING && (!best || l->slots[k].index < best->index))
            best = &l->slots[k];
    return best;
}

static void *worker(void *arg)
{
    kiln_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        slot *s = NULL;
        while (!l->quit && !(s = next_pending(l))) pthread_cond_wait(&l->work, &l->mu);
        if (l->quit) break;
        s->state = SLOT_BUSY;
        int64_t b = s->index;
        pthread_mutex_unlock(&l->mu);
        int64_t n = gather(l, b, s->x, s->y);
        pthread_mutex_lock(&l->mu);
        s->n = n;
        s->state = SLOT_READY;
        pthread_cond_broadcast(&l->done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Cancels queued batches and waits for the one being gathered, so that
 * nothing reads perm afterwards. Called with the lock held. */
static void quiesce_locked(kiln_loader *l)
{
    for (int k = 0; k < 2; k++)
        if (l->slots[k].state == SLOT_PENDING) l->slots[k].state = SLOT_EMPTY;
    while (l->slots[0].state == SLOT_BUSY || l->slots[1].state == SLOT_BUSY)
        pthread_cond_wait(&l->done, &l->mu);
}

/* Queues batch b into slot b % 2 when it exists. Called with the lock held. */
static void queue_locked(kiln_loader *l, int64_t b)
{
    if (b >= l->nbatches) return;
    slot *s = &l->slots[b & 1];
    s->index = b;
    s->state = SLOT_PENDING;
    pthread_cond_signal(&l->work);
}

kiln_status kiln_loader_new(const kiln_dataset *d, int64_t batch, int shuffle, int drop_last,
                            uint64_t seed, kiln_loader **out)
{
    if (!out) return KILN_ERR_INVALID;
    *out = NULL;
    if (!d || batch < 1) return KILN_ERR_INVALID;
    if ((d->x_numel && batch > ((int64_t)1 << 60) / 8 / d->x_numel) ||
        (d->y_numel && batch > ((int64_t)1 << 60) / 8 / d->y_numel))
        return KILN_ERR_INVALID;
    kiln_loader *l = calloc(1, sizeof *l);
    if (!l) return KILN_ERR_NOMEM;
    l->d = d;
    l->batch = batch;
    l->shuffle = shuffle != 0;
    l->drop_last = drop_last != 0;
    l->seed = seed;
    l->nbatches = drop_last ? d->n / batch : (d->n + batch - 1) / batch;
    l->xs = d->x_numel;
    l->ys = d->y_numel;
    if (d->img) {
        l->view.h = d->img->h;
        l->view.w = d->img->w;
        l->view.augment = d->img->augment;
        l->view.seed = seed;
    }
    l->perm = malloc((size_t)d->n * sizeof *l->perm + 1);
    if (!l->perm) {
        free(l);
        return KILN_ERR_NOMEM;
    }
    const char *env = getenv("KILN_LOADER_THREAD");
    int want_thread = l->nbatches > 0 && !(env && !strcmp(env, "0"));
    if (want_thread) {
        int ok = 1;
        for (int k = 0; k < 2 && ok; k++) {
            l->slots[k].x = malloc((size_t)(batch * l->xs) * sizeof(float) + 1);
            l->slots[k].y = malloc((size_t)(batch * l->ys) * 4 + 1);
            l->slots[k].index = -1;
            ok = l->slots[k].x && l->slots[k].y;
        }
        if (ok && pthread_mutex_init(&l->mu, NULL) == 0) {
            if (pthread_cond_init(&l->work, NULL) == 0) {
                if (pthread_cond_init(&l->done, NULL) == 0) {
                    if (pthread_create(&l->thread, NULL, worker, l) == 0) {
                        l->threaded = 1;
                    } else {
                        pthread_cond_destroy(&l->done);
                        pthread_cond_destroy(&l->work);
                        pthread_mutex_destroy(&l->mu);
                    }
                } else {
                    pthread_cond_destroy(&l->work);
                    pthread_mutex_destroy(&l->mu);
                }
            } else {
                pthread_mutex_destroy(&l->mu);
            }
        }
        if (!l->threaded) /* fall back to gathering in the caller */
            for (int k = 0; k < 2; k++) {
                free(l->slots[k].x);
                free(l->slots[k].y);
                l->slots[k].x = NULL;
                l->slots[k].y = NULL;
            }
    }
    *out = l;
    return KILN_OK;
}

void kiln_loader_free(kiln_loader *l)
{
    if (!l) return;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        l->quit = 1;
        pthread_cond_broadcast(&l->work);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->done);
        pthread_cond_destroy(&l->work);
        pthread_mutex_destroy(&l->mu);
    }
    for (int k = 0; k < 2; k++) {
        free(l->slots[k].x);
        free(l->slots[k].y);
    }
    free(l->perm);
    free(l);
}

int64_t kiln_loader_num_batches(const kiln_loader *l)
{
    return l ? l->nbatches : 0;
}

void kiln_loader_start(kiln_loader *l, int64_t epoch)
{
    if (!l) return;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        quiesce_locked(l);
        pthread_mutex_unlock(&l->mu);
    }
    /* The worker is idle and nothing is queued: perm is ours. */
    int64_t n = l->d->n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = i;
    if (l->shuffle && n > 1) {
        uint64_t s = epoch_state(l->seed, epoch);
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)below(&s, (uint64_t)i + 1);
            int64_t t = l->perm[i];
            l->perm[i] = l->perm[j];
            l->perm[j] = t;
        }
    }
    l->epoch = epoch;
    l->view.epoch = epoch;
    l->cursor = 0;
    l->started = 1;
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        queue_locked(l, 0);
        queue_locked(l, 1);
        pthread_mutex_unlock(&l->mu);
    }
}

int kiln_loader_next(kiln_loader *l, float *x, void *y, int64_t *n)
{
    if (n) *n = 0;
    if (!l) return 0;
    if (!l->started) kiln_loader_start(l, 0);
    if (l->cursor >= l->nbatches) return 0;
    int64_t b = l->cursor++;
    if (!l->threaded) {
        int64_t got = gather(l, b, x, y);
        if (n) *n = got;
        return 1;
    }
    slot *s = &l->slots[b & 1];
    pthread_mutex_lock(&l->mu);
    /* The slot holds batch b by construction; should it ever not, gather b
     * into it anyway rather than return another batch. */
    while (s->state == SLOT_BUSY && s->index != b) pthread_cond_wait(&l->done, &l->mu);
    if (s->index != b || s->state == SLOT_EMPTY) queue_locked(l, b);
    while (s->state != SLOT_READY) pthread_cond_wait(&l->done, &l->mu);
    pthread_mutex_unlock(&l->mu);
    /* A READY slot is the caller's until it is queued again. */
    if (x && l->xs) memcpy(x, s->x, (size_t)(l->batch * l->xs) * sizeof(float));
    if (y && l->ys) memcpy(y, s->y, (size_t)(l->batch * l->ys) * 4);
    if (n) *n = s->n;
    pthread_mutex_lock(&l->mu);
    s->state = SLOT_EMPTY;
    queue_locked(l, b + 2);
    pthread_mutex_unlock(&l->mu);
    return 1;
}

/* ---- image views ---------------------------------------------------------- */

/* Runs change(l, arg) with the worker idle and nothing queued, then queues
 * the next two batches again (when an epoch is under way). */
static kiln_status with_worker_idle(kiln_loader *l, kiln_status (*change)(kiln_loader *, void *),
                                    void *arg)
{
    if (l->threaded) {
        pthread_mutex_lock(&l->mu);
        quiesce_locked(l);
        for (int k = 0; k < 2; k++) l->slots[k].state = SLOT_EMPTY;
        pthread_mutex_unlock(&l->mu);
    }
    kiln_status st = change(l, arg);
    if (l->threaded && l->started) {
        pthread_mutex_lock(&l->mu);
        queue_locked(l, l->cursor);
        queue_locked(l, l->cursor + 1);
        pthread_mutex_unlock(&l->mu);
    }
    return st;
}

static kiln_status change_size(kiln_loader *l, void *arg)
{
    const int *hw = arg;
    int64_t xs, ys;
    kiln_imgset_numel(l->d, hw[0], hw[1], &xs, &ys);
    if ((xs && l->batch > ((int64_t)1 << 60) / 8 / xs) ||
        (ys && l->batch > ((int64_t)1 << 60) / 8 / ys))
        return KILN_ERR_INVALID;
    if (l->threaded) {
        float *x[2];
        unsigned char *y[2];
        int ok = 1;
        for (int k = 0; k < 2; k++) {
            x[k] = malloc((size_t)(l->batch * xs) * sizeof(float) + 1);
            y[k] = malloc((size_t)(l->batch * ys) * 4 + 1);
            ok &= x[k] && y[k];
        }
        for (int k = 0; k < 2; k++) {
            float *fx = ok ? l->slots[k].x : x[k]; /* on failure the slots stay */
            unsigned char *fy = ok ? l->slots[k].y : y[k];
            free(fx);
            free(fy);
            if (ok) {
                l->slots[k].x = x[k];
                l->slots[k].y = y[k];
            }
        }
        if (!ok) return KILN_ERR_NOMEM;
    }
    l->view.h = hw[0];
    l->view.w = hw[1];
    l->xs = xs;
    l->ys = ys;
    return KILN_OK;
}

kiln_status kiln_loader_set_size(kiln_loader *l, int height, int width)
{
    if (!l || height < 1 || width < 1 || height > 65535 || width > 65535) return KILN_ERR_INVALID;
    if (!l->d->img) return KILN_ERR_UNSUPPORTED;
    int hw[2] = {height, width};
    if (height == l->view.h && width == l->view.w) return KILN_OK;
    return with_worker_idle(l, change_size, hw);
}

static kiln_status change_augment(kiln_loader *l, void *arg)
{
    l->view.augment = *(const int *)arg;
    return KILN_OK;
}

void kiln_loader_set_augment(kiln_loader *l, int on)
{
    if (!l || !l->d->img) return;
    int v = on != 0;
    if (v != l->view.augment) with_worker_idle(l, change_augment, &v);
}

void kiln_loader_shapes(const kiln_loader *l, int *x_rank, int64_t *x_shape, int *y_rank,
                        int64_t *y_shape)
{
    kiln_dataset_shapes(l ? l->d : NULL, x_rank, x_shape, y_rank, y_shape, NULL);
    if (!l || !l->d->img) return;
    if (x_shape) {
        x_shape[1] = l->view.h;
        x_shape[2] = l->view.w;
    }
    if (y_shape && l->d->img->kind == KILN_DATA_SEGMENTATION) {
        y_shape[0] = l->view.h;
        y_shape[1] = l->view.w;
    }
}
