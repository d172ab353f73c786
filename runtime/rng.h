/* runtime/rng.h — a small seeded random generator (xoshiro256**).
 *
 * Deterministic across platforms: the same seed (and stream) gives the same
 * numbers everywhere. A generator is a plain struct: no allocation, no global
 * state, so every user (parameter initialisation, data shuffling,
 * augmentation) owns its own and threads never share one.
 *
 * Seeding expands (seed, stream) with splitmix64, so nearby seeds and
 * streams give unrelated sequences: kiln_program_init_params uses stream =
 * the parameter's index, so adding a parameter at the end of a model never
 * changes the values of the ones before it.
 */
#ifndef KILN_RUNTIME_RNG_H
#define KILN_RUNTIME_RNG_H

#include <stdint.h>

typedef struct kiln_rng {
    uint64_t s[4];
    double spare; /* the second normal of a Box–Muller pair */
    int has_spare;
} kiln_rng;

/* Seeds r with stream 0 of `seed`. */
void kiln_rng_seed(kiln_rng *r, uint64_t seed);
/* Seeds r with an independent stream `stream` of `seed`. */
void kiln_rng_seed_stream(kiln_rng *r, uint64_t seed, uint64_t stream);

/* 64 uniformly random bits. */
uint64_t kiln_rng_next(kiln_rng *r);
/* 32 uniformly random bits (the high half of kiln_rng_next). */
uint32_t kiln_rng_u32(kiln_rng *r);
/* Uniform integer in [0, n) without modulo bias; 0 when n == 0. */
uint64_t kiln_rng_below(kiln_rng *r, uint64_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double kiln_rng_uniform(kiln_rng *r);
/* Uniform double in [lo, hi). */
double kiln_rng_uniform_range(kiln_rng *r, double lo, double hi);
/* Standard normal N(0, 1) by the Box–Muller transform (values come in pairs;
 * the second is kept for the next call). */
double kiln_rng_normal(kiln_rng *r);

#endif
