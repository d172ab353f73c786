/* codegen/vmath.h — the C source of kiln's math functions for generated code.
 *
 * Generated kernels call these instead of libm's expf / logf / log1pf /
 * tanhf / erff (and 1 / (1 + expf(-x)) for sigmoid): a libm call keeps a
 * `#pragma omp simd` loop scalar; these inline into it and vectorize.
 *
 * Expects: the emitter pastes kiln_vmath_source() once into a translation
 * unit, at file scope, before the first code that calls the functions (it
 * includes <math.h>, <stdint.h> and <string.h> itself, so it may come first
 * or after the unit's own #includes). The unit is compiled as C11 (codegen/
 * cc.c's flags); nothing in it depends on -march, FMA or -ffast-math.
 *
 * Guarantees: the text defines, static inline (always_inline with gcc and
 * clang, so that every loop calling them can vectorize),
 *
 *   float kiln_expf(float x);      e^x              max error 0.98 ulp
 *   float kiln_logf(float x);      log x                      0.89 ulp
 *   float kiln_log1pf(float x);    log(1 + x)                 1.03 ulp
 *   float kiln_tanhf(float x);     tanh x                     1.46 ulp
 *   float kiln_sigmoidf(float x);  1 / (1 + e^-x)             2.41 ulp
 *   float kiln_erff(float x);      erf x                      1.38 ulp
 *
 * plus helpers named kiln__* and no other identifier (the one macro it uses
 * is #undef'd at its end). The errors are in ulps of the exact result, over
 * every float input (measured exhaustively against libm's double-precision
 * functions; tests/test_vmath.c re-measures them on sweeps), so relative
 * accuracy holds near the zeros too (log1p, tanh, erf near 0, log near 1).
 * Special values: NaN in gives NaN out; exp overflows to +inf above
 * 88.72283 and gives subnormals, then 0, below -87.34 (no flush to zero);
 * log(+-0) = -inf, log(x < 0) = NaN, log(+inf) = +inf, subnormal x handled;
 * log1p(-1) = -inf, log1p(x < -1) = NaN, log1p(+-0) = +-0; tanh, sigmoid
 * and erf reach exactly +-1 (sigmoid 0 and 1) where the exact result rounds
 * there, and tanh(+-0) = erf(+-0) = +-0. A call gives the same bits whether
 * it is vectorized or not.
 */
#ifndef KILN_CODEGEN_VMATH_H
#define KILN_CODEGEN_VMATH_H

/* The functions' C source, NUL-terminated, static storage (never free it). */
const char *kiln_vmath_source(void);

#endif
