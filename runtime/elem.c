/* runtime/elem.c — one element of a buffer of any dtype read as, or written
 * from, a double (runtime/elem.h): how the reference backend and program
 * initialisation move values in and out of a compiled program's memories.
 * f16/bf16 round to nearest even; integers saturate. */
#include "runtime/elem.h"

#include <math.h>
#include <string.h>

/* ---- element conversions (every dtype <-> double) ---- */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float f;
    if (e == 0) {
        f = ldexpf((float)m, -24);
        return sign ? -f : f;
    }
    uint32_t x = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e - 15 + 127) << 23) | (m << 13);
    memcpy(&f, &x, sizeof f);
    return f;
}

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    if (ax >= 0x47800000u) return sign | 0x7c00u; /* >= 65536 (and inf): inf */
    if (ax < 0x38800000u) {                       /* below 2^-14: subnormal or zero */
        float a;
        memcpy(&a, &ax, sizeof a);
        return (uint16_t)(sign | (uint16_t)lrintf(a * 16777216.0f)); /* 2^24, nearest-even */
    }
    uint32_t h = ((((ax >> 23) - 127 + 15)) << 10) | ((ax & 0x7fffffu) >> 13);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* may carry into inf: right */
    return (uint16_t)(sign | h);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

double kiln_elem_load(kiln_dtype t, const char *p, int64_t i)
{
    switch (t) {
    case KILN_F32: { float v; memcpy(&v, p + i * 4, 4); return v; }
    case KILN_F64: { double v; memcpy(&v, p + i * 8, 8); return v; }
    case KILN_I32: { int32_t v; memcpy(&v, p + i * 4, 4); return v; }
    case KILN_I64: { int64_t v; memcpy(&v, p + i * 8, 8); return (double)v; }
    case KILN_U8: return ((const uint8_t *)p)[i];
    case KILN_BOOL: return ((const uint8_t *)p)[i] != 0;
    case KILN_F16: { uint16_t v; memcpy(&v, p + i * 2, 2); return f16_to_f32(v); }
    case KILN_BF16: { uint16_t v; memcpy(&v, p + i * 2, 2); return bf16_to_f32(v); }
    default: return 0.0;
    }
}

static double clamp_int(double v, double lo, double hi)
{
    if (!isfinite(v)) return isnan(v) ? 0.0 : v > 0 ? hi : lo;
    v = trunc(v);
    return v < lo ? lo : v > hi ? hi : v;
}

void kiln_elem_store(kiln_dtype t, char *p, int64_t i, double v)
{
    switch (t) {
    case KILN_F32: { float f = (float)v; memcpy(p + i * 4, &f, 4); break; }
    case KILN_F64: memcpy(p + i * 8, &v, 8); break;
    case KILN_I32: {
        int32_t x = (int32_t)clamp_int(v, -2147483648.0, 2147483647.0);
        memcpy(p + i * 4, &x, 4);
        break;
    }
    case KILN_I64: {
        int64_t x = (int64_t)clamp_int(v, -9223372036854775808.0, 9223372036854774784.0);
        memcpy(p + i * 8, &x, 8);
        break;
    }
    case KILN_U8: ((uint8_t *)p)[i] = (uint8_t)clamp_int(v, 0.0, 255.0); break;
    case KILN_BOOL: ((uint8_t *)p)[i] = v != 0.0; break;
    case KILN_F16: { uint16_t h = f32_to_f16((float)v); memcpy(p + i * 2, &h, 2); break; }
    case KILN_BF16: { uint16_t h = f32_to_bf16((float)v); memcpy(p + i * 2, &h, 2); break; }
    default: break;
    }
}

