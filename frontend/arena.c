/* frontend/arena.c — the AST's bump allocator. */
#include "frontend/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct fe_chunk {
    fe_chunk *next;
    size_t used, size;
    alignas(max_align_t) unsigned char data[];
};

enum { CHUNK_SIZE = 16384 };

void *fe_alloc(fe_arena *a, size_t n)
{
    const size_t align = alignof(max_align_t);
    n = (n + align - 1) / align * align;
    if (!n) n = align;
    fe_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > CHUNK_SIZE ? n : CHUNK_SIZE;
        if (size > SIZE_MAX - sizeof *c) return NULL;
        c = malloc(sizeof *c + size);
        if (!c) return NULL;
        c->used = 0;
        c->size = size;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *fe_strndup(fe_arena *a, const char *s, size_t n)
{
    char *p = fe_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void *fe_grow(fe_arena *a, void *old, size_t n, size_t elem, size_t *cap)
{
    size_t ncap = n < 2 ? 4 : 2 * n;
    if (ncap > SIZE_MAX / elem) return NULL;
    void *p = fe_alloc(a, ncap * elem);
    if (!p) return NULL;
    if (n) memcpy(p, old, n * elem);
    *cap = ncap;
    return p;
}

void fe_arena_free(fe_arena *a)
{
    fe_chunk *c = a->head;
    while (c) {
        fe_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}
