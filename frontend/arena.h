/* frontend/arena.h — a bump allocator for the AST: everything a parse
 * allocates is freed at once when the compile ends. */
#ifndef KILN_FRONTEND_ARENA_H
#define KILN_FRONTEND_ARENA_H

#include <stddef.h>

typedef struct fe_chunk fe_chunk;
typedef struct fe_arena {
    fe_chunk *head;
} fe_arena;

/* n zeroed bytes aligned for any type, or NULL when out of memory. */
void *fe_alloc(fe_arena *a, size_t n);
/* A NUL-terminated copy of s[0..n), or NULL when out of memory. */
char *fe_strndup(fe_arena *a, const char *s, size_t n);
/* Grows an array allocated in the arena from n to 2n (at least 4) elements
 * of size `elem`, copying the old ones; updates *cap. NULL when out of memory. */
void *fe_grow(fe_arena *a, void *old, size_t n, size_t elem, size_t *cap);
void fe_arena_free(fe_arena *a);

#endif
