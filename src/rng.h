/* A small seeded generator (splitmix64): the same numbers on every platform,
 * so sampling and initialisation are reproducible from a seed. */
#ifndef CM_RNG_H
#define CM_RNG_H

#include <math.h>
#include <stdint.h>

static inline uint64_t cm_rng_u64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) with 53 random bits */
static inline double cm_rng_uniform(uint64_t *x) {
    return (double)(cm_rng_u64(x) >> 11) * 0x1.0p-53;
}

/* standard normal (Box-Muller) */
static inline double cm_rng_normal(uint64_t *x) {
    double u1 = 1.0 - cm_rng_uniform(x), u2 = cm_rng_uniform(x);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
