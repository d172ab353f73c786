/* codegen/target.h — the machine generated code is written for.
 *
 * The C emitter and the GEMM generator read a kiln_cg_target: the vector ISA
 * (which intrinsics the micro-kernels and vector loops use), the vector and
 * register counts (the GEMM's register tile) and the cache sizes (its
 * blocking). JIT compiles use the host (kiln_target_host); AOT compiles may
 * name another (`--target avx512|avx2|neon|scalar|native`).
 */
#ifndef KILN_CODEGEN_TARGET_H
#define KILN_CODEGEN_TARGET_H

#include "kiln/kiln.h"

#include <stdint.h>

typedef enum kiln_isa {
    KILN_ISA_SCALAR, /* plain C: any compiler, any machine */
    KILN_ISA_AVX2,   /* x86-64 AVX2 + FMA: 16 ymm registers of 8 floats */
    KILN_ISA_AVX512, /* x86-64 AVX-512F: 32 zmm registers of 16 floats */
    KILN_ISA_NEON,   /* AArch64 Advanced SIMD: 32 q registers of 4 floats */
} kiln_isa;

typedef struct kiln_cg_target {
    kiln_isa isa;
    int vec_floats;  /* f32 lanes per vector register (1 for scalar) */
    int nregs;       /* vector registers */
    int64_t l1d, l2, l3; /* data cache bytes per core (l3: shared, whole) */
    const char *cflags;  /* compiler flags that enable the ISA for AOT builds
                            ("-mavx512f -mavx512dq -mfma", ...); the JIT uses
                            -march=native */
} kiln_cg_target;

/* The host: the widest ISA the CPU supports (x86: __builtin_cpu_supports),
 * cache sizes from sysconf or /sys (defaults 32 KiB / 1 MiB / 8 MiB when
 * unknown). Never fails. */
void kiln_target_host(kiln_cg_target *t);
/* "native" (the host), "avx512", "avx2", "neon", "scalar"; KILN_ERR_INVALID
 * for other names. */
kiln_status kiln_target_parse(const char *name, kiln_cg_target *t);
const char *kiln_isa_name(kiln_isa isa);

#endif
