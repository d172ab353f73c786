/* runtime/rng.c — xoshiro256** (Blackman and Vigna, 2018) seeded through
 * splitmix64, with uniform, bounded-integer and Box–Muller normal draws.
 * See runtime/rng.h. */
#include "runtime/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void kiln_rng_seed_stream(kiln_rng *r, uint64_t seed, uint64_t stream)
{
    /* Mix the stream through its own splitmix step so that (seed, stream)
     * pairs map to unrelated starting points. */
    uint64_t t = stream;
    uint64_t x = seed ^ splitmix64(&t);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* never all zero */
    r->has_spare = 0;
    r->spare = 0.0;
}

void kiln_rng_seed(kiln_rng *r, uint64_t seed) { kiln_rng_seed_stream(r, seed, 0); }

uint64_t kiln_rng_next(kiln_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint32_t kiln_rng_u32(kiln_rng *r) { return (uint32_t)(kiln_rng_next(r) >> 32); }

uint64_t kiln_rng_below(kiln_rng *r, uint64_t n)
{
    if (n == 0) return 0;
    /* Rejection: drop draws from the incomplete last block of size n. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do v = kiln_rng_next(r);
    while (v >= limit);
    return v % n;
}

double kiln_rng_uniform(kiln_rng *r) { return (double)(kiln_rng_next(r) >> 11) * 0x1.0p-53; }

double kiln_rng_uniform_range(kiln_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * kiln_rng_uniform(r);
}

double kiln_rng_normal(kiln_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    double u1 = 1.0 - kiln_rng_uniform(r); /* (0, 1]: log never sees 0 */
    double u2 = kiln_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * 3.14159265358979323846 * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}
