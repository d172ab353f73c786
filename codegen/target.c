/* codegen/target.c — the machine generated code is written for
 * (codegen/target.h).
 *
 * Expects: nothing (any host, any compiler that kiln builds with).
 * Guarantees: kiln_target_host never fails: the ISA is the widest the CPU
 * reports (x86-64: AVX-512F, else AVX2 with FMA, else scalar; AArch64:
 * NEON; anything else: scalar); cache sizes come from sysconf, else
 * /sys/devices/system/cpu/cpu0/cache, else the defaults 32 KiB / 1 MiB /
 * 8 MiB, and are clamped to sane ranges. Every target's cflags are a static
 * string that enables the ISA in an AOT build ("" for scalar).
 */
#include "codegen/target.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_L1D (32 << 10)
#define DEFAULT_L2 (1 << 20)
#define DEFAULT_L3 (8 << 20)

const char *kiln_isa_name(kiln_isa isa)
{
    switch (isa) {
    case KILN_ISA_SCALAR: return "scalar";
    case KILN_ISA_AVX2: return "avx2";
    case KILN_ISA_AVX512: return "avx512";
    case KILN_ISA_NEON: return "neon";
    }
    return "unknown";
}

/* The ISA's fixed facts: lanes, registers, AOT flags. Caches stay as set. */
static void set_isa(kiln_cg_target *t, kiln_isa isa)
{
    t->isa = isa;
    switch (isa) {
    case KILN_ISA_AVX512:
        t->vec_floats = 16;
        t->nregs = 32;
        t->cflags = "-mavx512f -mavx512dq -mavx2 -mfma";
        break;
    case KILN_ISA_AVX2:
        t->vec_floats = 8;
        t->nregs = 16;
        t->cflags = "-mavx2 -mfma";
        break;
    case KILN_ISA_NEON:
        t->vec_floats = 4;
        t->nregs = 32;
        t->cflags = ""; /* Advanced SIMD is part of the AArch64 base ISA */
        break;
    case KILN_ISA_SCALAR:
    default:
        t->isa = KILN_ISA_SCALAR;
        t->vec_floats = 1;
        t->nregs = 16; /* general-purpose float registers a compiler can use */
        t->cflags = "";
        break;
    }
}

/* A size such as "48K", "1280K" or "48M" from /sys, or 0. */
static int64_t sys_cache_size(int index, int want_level, const char *want_type)
{
    char path[128], buf[64];
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int level = 0;
    int ok = fscanf(f, "%d", &level) == 1;
    fclose(f);
    if (!ok || level != want_level) return 0;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", index);
    if (!(f = fopen(path, "r"))) return 0;
    ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok || strncmp(buf, want_type, strlen(want_type)) != 0) return 0;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
    if (!(f = fopen(path, "r"))) return 0;
    long v = 0;
    char unit = 0;
    ok = fscanf(f, "%ld%c", &v, &unit) >= 1;
    fclose(f);
    if (!ok || v <= 0) return 0;
    if (unit == 'K' || unit == 'k') return (int64_t)v << 10;
    if (unit == 'M' || unit == 'm') return (int64_t)v << 20;
    if (unit == 'G' || unit == 'g') return (int64_t)v << 30;
    return v;
}

/* Level `level` cache bytes: sysconf name (when the C library has it), then
 * /sys, then `dflt`; clamped to [lo, hi]. */
static int64_t cache_bytes(int sc_name, int level, const char *type, int64_t dflt, int64_t lo,
                           int64_t hi)
{
    int64_t v = 0;
    if (sc_name >= 0) {
        long s = sysconf(sc_name);
        if (s > 0) v = s;
    }
    for (int i = 0; v <= 0 && i < 8; i++) v = sys_cache_size(i, level, type);
    if (v <= 0) v = dflt;
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return v;
}

static void host_caches(kiln_cg_target *t)
{
#ifdef _SC_LEVEL1_DCACHE_SIZE
    int s1 = _SC_LEVEL1_DCACHE_SIZE, s2 = _SC_LEVEL2_CACHE_SIZE, s3 = _SC_LEVEL3_CACHE_SIZE;
#else
    int s1 = -1, s2 = -1, s3 = -1;
#endif
    t->l1d = cache_bytes(s1, 1, "Data", DEFAULT_L1D, 8 << 10, 1 << 20);
    t->l2 = cache_bytes(s2, 2, "Unified", DEFAULT_L2, 64 << 10, 64 << 20);
    t->l3 = cache_bytes(s3, 3, "Unified", DEFAULT_L3, 0, (int64_t)1 << 32);
    if (t->l3 < t->l2) t->l3 = t->l2; /* no L3: the L2 is the last level */
}

static kiln_isa host_isa(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return KILN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KILN_ISA_AVX2;
    return KILN_ISA_SCALAR;
#elif defined(__aarch64__)
    return KILN_ISA_NEON;
#else
    return KILN_ISA_SCALAR;
#endif
}

void kiln_target_host(kiln_cg_target *t)
{
    memset(t, 0, sizeof *t);
    host_caches(t);
    set_isa(t, host_isa());
}

kiln_status kiln_target_parse(const char *name, kiln_cg_target *t)
{
    static const struct {
        const char *name;
        kiln_isa isa;
    } names[] = {{"scalar", KILN_ISA_SCALAR}, {"avx2", KILN_ISA_AVX2},
                 {"avx512", KILN_ISA_AVX512}, {"neon", KILN_ISA_NEON}};
    if (!name || !t) return KILN_ERR_INVALID;
    if (!strcmp(name, "native")) {
        kiln_target_host(t);
        return KILN_OK;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name)) {
            /* Another machine's caches are unknown: the host's are the best
             * guess (AOT builds usually run on a similar machine). */
            kiln_target_host(t);
            set_isa(t, names[i].isa);
            return KILN_OK;
        }
    return KILN_ERR_INVALID;
}
