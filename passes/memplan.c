/* passes/memplan.c — memory planning: offsets for an entry's intermediates
 * in one activation arena, reusing the space of values no longer needed.
 *
 * Expects: a graph in topological order, the set of nodes to plan (an entry's
 * intermediates: computed values that live nowhere else) and their sizes.
 * Kernels run in `order` (NULL: node order, which is how program assembly
 * lowers an entry).
 * Guarantees: every planned node gets an offset, a multiple of `align`, into
 * an arena of *total_out bytes (a multiple of `align`); two planned nodes
 * whose lifetimes overlap occupy disjoint bytes. A node's lifetime runs from
 * the kernel that writes it to the last kernel that reads it (an `assign`
 * reading it counts), both included, so a kernel's output never shares
 * storage with one of its own inputs. The arena is at most the sum of the
 * aligned sizes. Deterministic: the same arguments give the same offsets.
 *
 * Placement is greedy: buffers are taken in some order and each goes at the
 * lowest aligned offset that collides with no already placed buffer alive at
 * the same time. Several orders are tried (largest first; by start time;
 * by size times lifetime; longest lifetime first) and the one with the
 * smallest arena is kept (the first one on a tie).
 */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct mbuf {
    int32_t node;
    int32_t start, end; /* kernel steps, both included */
    int64_t size;       /* aligned */
    double k1;          /* sort keys of the ordering being tried */
    int64_t k2;
} mbuf;

typedef struct span {
    int64_t lo, hi; /* [lo, hi) */
} span;

static int64_t round_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

/* The sort key of an ordering: k1 descending, then k2 descending, then the
 * node id, so the sort is total (no global state: compiles may run on
 * several threads). */
static int cmp_buf(const void *pa, const void *pb)
{
    const mbuf *a = pa, *b = pb;
    if (a->k1 != b->k1) return a->k1 > b->k1 ? -1 : 1;
    if (a->k2 != b->k2) return a->k2 > b->k2 ? -1 : 1;
    return a->node < b->node ? -1 : a->node > b->node;
}

/* The orderings: 0 largest first (earlier start on a tie), 1 by start time
 * (larger first on a tie), 2 by size times lifetime, 3 longest lifetime. */
static void set_keys(mbuf *bufs, int32_t n, int key)
{
    for (int32_t k = 0; k < n; k++) {
        mbuf *b = &bufs[k];
        double life = (double)b->end - (double)b->start + 1.0;
        switch (key) {
        case 0: b->k1 = (double)b->size; b->k2 = -(int64_t)b->start; break;
        case 1: b->k1 = -(double)b->start; b->k2 = b->size; break;
        case 2: b->k1 = (double)b->size * life; b->k2 = b->size; break;
        default: b->k1 = life; b->k2 = b->size; break;
        }
    }
}

static int cmp_span(const void *pa, const void *pb)
{
    const span *a = pa, *b = pb;
    return a->lo < b->lo ? -1 : a->lo > b->lo ? 1 : a->hi < b->hi ? -1 : a->hi > b->hi;
}

/* Places bufs[0..n) in their current order; off[k] is buf k's offset.
 * Returns the arena size. spans: scratch of n entries. */
static int64_t place(const mbuf *bufs, int32_t n, int64_t align, int64_t *off, span *spans)
{
    int64_t total = 0;
    for (int32_t k = 0; k < n; k++) {
        const mbuf *b = &bufs[k];
        off[k] = 0;
        if (b->size == 0) continue;
        int32_t ns = 0;
        for (int32_t j = 0; j < k; j++) {
            const mbuf *o = &bufs[j];
            if (o->size == 0 || o->end < b->start || b->end < o->start) continue;
            spans[ns++] = (span){off[j], off[j] + o->size};
        }
        qsort(spans, (size_t)ns, sizeof *spans, cmp_span);
        int64_t at = 0;
        for (int32_t s = 0; s < ns; s++) {
            if (spans[s].lo >= at + b->size) break; /* fits in the gap before it */
            if (spans[s].hi > at) at = round_up(spans[s].hi, align);
        }
        off[k] = at;
        if (at + b->size > total) total = at + b->size;
    }
    return total;
}

static kiln_status best_of(mbuf *bufs, int32_t nb, int64_t align, int64_t *off, int64_t *best,
                           span *spans, int64_t *offset_out, int64_t *total_out);

kiln_status kiln_plan_memory(const kiln_graph *g, const int32_t *order, int32_t norder,
                             const bool *planned, const int64_t *bytes, int64_t align,
                             int64_t *offset_out, int64_t *total_out)
{
    if (!g || !planned || !bytes || !offset_out || !total_out || align <= 0 ||
        (align & (align - 1)) || (order && norder < 0))
        return KILN_ERR_INVALID;
    *total_out = 0;
    int32_t nn = g->nnodes;
    if (nn == 0) return KILN_OK;
    int32_t *step = malloc((size_t)nn * sizeof *step);
    int32_t *last = malloc((size_t)nn * sizeof *last);
    mbuf *bufs = malloc((size_t)nn * sizeof *bufs);
    int64_t *off = malloc((size_t)nn * sizeof *off);
    int64_t *best = malloc((size_t)nn * sizeof *best);
    span *spans = malloc((size_t)nn * sizeof *spans);
    kiln_status st = KILN_OK;
    if (!step || !last || !bufs || !off || !best || !spans) {
        st = KILN_ERR_NOMEM;
        goto done;
    }
    for (int32_t i = 0; i < nn; i++) {
        step[i] = order ? -1 : i;
        offset_out[i] = 0;
    }
    if (order)
        for (int32_t s = 0; s < norder; s++) {
            if (order[s] < 0 || order[s] >= nn || step[order[s]] >= 0) {
                st = KILN_ERR_INVALID; /* outside the graph, or twice */
                goto done;
            }
            step[order[s]] = s;
        }
    /* last reader of every node, in steps */
    for (int32_t i = 0; i < nn; i++) last[i] = step[i];
    for (int32_t i = 0; i < nn; i++) {
        const kiln_node *n = &g->nodes[i];
        for (int32_t j = 0; j < n->ninputs; j++) {
            int32_t in = n->inputs[j];
            if (in < 0 || in >= nn) {
                st = KILN_ERR_INVALID;
                goto done;
            }
            if (!planned[in]) continue;
            if (step[i] < 0) { /* a node without a kernel reads a planned value */
                st = KILN_ERR_INVALID;
                goto done;
            }
            if (step[i] > last[in]) last[in] = step[i];
        }
    }
    int32_t nb = 0;
    for (int32_t i = 0; i < nn; i++) {
        if (!planned[i]) continue;
        if (step[i] < 0 || bytes[i] < 0) {
            st = KILN_ERR_INVALID;
            goto done;
        }
        bufs[nb] = (mbuf){.node = i, .start = step[i], .end = last[i],
                          .size = round_up(bytes[i], align)};
        nb++;
    }
    st = best_of(bufs, nb, align, off, best, spans, offset_out, total_out);
done:
    free(step);
    free(last);
    free(bufs);
    free(off);
    free(best);
    free(spans);
    return st;
}

kiln_status kiln_plan_memory_spans(int32_t n, const int32_t *start, const int32_t *end,
                                   const int64_t *bytes, int64_t align, int64_t *offset_out,
                                   int64_t *total_out)
{
    if (n < 0 || (n && (!start || !end || !bytes || !offset_out)) || !total_out || align <= 0 ||
        (align & (align - 1)))
        return KILN_ERR_INVALID;
    *total_out = 0;
    if (n == 0) return KILN_OK;
    mbuf *bufs = malloc((size_t)n * sizeof *bufs);
    int64_t *off = malloc((size_t)n * sizeof *off);
    int64_t *best = malloc((size_t)n * sizeof *best);
    span *spans = malloc((size_t)n * sizeof *spans);
    kiln_status st = KILN_ERR_NOMEM;
    if (bufs && off && best && spans) {
        int32_t nb = 0;
        st = KILN_OK;
        for (int32_t i = 0; i < n; i++) {
            offset_out[i] = 0;
            if (bytes[i] < 0 || start[i] < 0) continue;
            if (end[i] < start[i]) st = KILN_ERR_INVALID;
            bufs[nb++] = (mbuf){.node = i, .start = start[i], .end = end[i],
                                .size = round_up(bytes[i], align)};
        }
        if (!st) st = best_of(bufs, nb, align, off, best, spans, offset_out, total_out);
    }
    free(bufs);
    free(off);
    free(best);
    free(spans);
    return st;
}

/* Tries every ordering and keeps the smallest arena (node-indexed out). */
static kiln_status best_of(mbuf *bufs, int32_t nb, int64_t align, int64_t *off, int64_t *best,
                           span *spans, int64_t *offset_out, int64_t *total_out)
{
    int64_t best_total = -1;
    for (int key = 0; key < 4; key++) {
        set_keys(bufs, nb, key);
        qsort(bufs, (size_t)nb, sizeof *bufs, cmp_buf);
        int64_t total = place(bufs, nb, align, off, spans);
        if (best_total < 0 || total < best_total) {
            best_total = total;
            for (int32_t k = 0; k < nb; k++) best[bufs[k].node] = off[k];
        }
    }
    for (int32_t k = 0; k < nb; k++) offset_out[bufs[k].node] = best[bufs[k].node];
    *total_out = best_total < 0 ? 0 : best_total;
    return KILN_OK;
}
