/* codegen/gemm.c — the generator of packed, register-blocked f32 GEMMs
 * (codegen/gemm.h).
 *
 * Expects: a shape with M, N, K >= 1 and leading dimensions at least the
 * stored rows' lengths (lda >= (ta ? M : K), ldb >= (tb ? K : N), ldc >= N);
 * A, B and C of the generated function not overlapping; C writable, its
 * previous contents ignored. A target whose ISA the compiler of the
 * generated code enables (-march=native on the host, or t->cflags). EPI, when
 * named, defined before the GEMM function.
 *
 * Guarantees:
 *  - Each C[i,j] is the f32 chain c = 0; c = c + a_ik * b_kj for k = 0, 1,
 *    ..., K-1, each step one fused multiply-add on the vector targets (AVX2,
 *    AVX-512, NEON) and a multiply then an add on the scalar one (unless the
 *    compiler contracts them; gcc in -std=c11 mode does not). The chain
 *    is kept across KC blocks: a later block loads the partial sums of C
 *    into its accumulators instead of adding a separate block sum. So the
 *    result does not depend on the tiles or on the number of threads, and on
 *    the vector targets it equals a naive loop of fmaf, bit for bit.
 *  - EPI(ctx, i, j0, j1) is called once per row segment after its sums are
 *    final, every (i, j) in exactly one segment, segments at most
 *    kiln_gemm_tiles.nc wide and from the block just written (in L2).
 *  - Any M, N, K >= 1: edge panels are packed with zeros and computed by the
 *    same micro-kernel into a local tile, of which the valid part is copied.
 *
 * The generated code, for one GEMM (names prefixed by the function's name),
 * splits C into tasks in one of two ways, both deterministic (every element
 * is computed by the same code whatever the split):
 *
 *   column tasks (A not transposed, at least 8 NR panels of C):
 *     NAME: rt->parallel_for(NR column panels, NAME_mul)
 *     NAME_mul(lo, hi): per group of its panels and KC block, pack those
 *       panels of op(B) into this thread's kiln_gemm_pb; per MC block of
 *       rows, every panel times every MR panel of A, read in place.
 *   row tasks (otherwise):
 *     NAME: per NC block of columns and per pass over K (as many KC blocks
 *       as the B buffer holds, usually all of K):
 *         rt->parallel_for(NR panels, NAME_packb)   op(B) packed once, shared
 *         rt->parallel_for(MR row panels, NAME_mul)
 *     NAME_mul(lo, hi): per block of its rows (at most MC, of equal size)
 *       and KC block: op(A) packed into this thread's kiln_gemm_pa (or read
 *       in place when at most two NR panels use it), then every NR panel of
 *       B times every MR panel of A.
 * Column tasks keep each thread's B panels in its own L2 and read A (small
 * when M is a batch) from every L2; row tasks share one packed B, which
 * suits A^T (strided in place) and narrow C.
 *
 * Buffers (the prelude's, shared by every GEMM of the translation unit: a
 * thread runs one GEMM task at a time):
 *   kiln_gemm_pa: packed A, per thread, mc*kc floats at most (PA_FLOATS);
 *   kiln_gemm_pb: packed B, kb*nc floats at most (PB_FLOATS): the calling
 *     thread's, handed to the workers by pointer (row tasks), or each
 *     worker's own (column tasks).
 * Both are _Thread_local and 64-byte aligned; a thread that touches either
 * gets both (glibc allocates a module's TLS block whole): PA_FLOATS +
 * PB_FLOATS floats (2.5 MiB on vector targets) per thread per loaded object.
 * Reading another thread's _Thread_local object through a pointer is
 * implementation-defined in C11; glibc and musl make it ordinary memory.
 * The generated code allocates nothing and keeps no state between calls.
 *
 * Micro-kernels: a fixed menu per ISA (below), all written by the prelude
 * (static; the compiler drops unused ones before optimizing), MR x NR with
 * MR * NR / lanes accumulators in registers, B read as vectors and A
 * broadcast (NEON: FMA by lane of a loaded A vector); each prefetches the C
 * tile that comes next. A GEMM that reads A in place gets its own copy with
 * A's strides as constants. Kernels and packing routines are neither inlined
 * nor cloned (KILN_GEMM_NOINLINE): one copy each keeps compile time at about
 * 0.1 s per GEMM; a call per MR x NR x KC tile costs nothing measurable.
 */
#include "codegen/gemm.h"
#include "codegen/codegen.h"
#include "runtime/threadpool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Packing buffer sizes in floats; kiln_emit_gemm keeps mc*kc and kb*nc in
 * them, so any tiles (tuned ones included) fit. */
#define PA_FLOATS_VEC (128 * 1024)
#define PB_FLOATS_VEC (512 * 1024)
#define PA_FLOATS_SCALAR (32 * 1024)
#define PB_FLOATS_SCALAR (128 * 1024)

static int64_t pa_floats(const kiln_cg_target *t)
{
    return t->isa == KILN_ISA_SCALAR ? PA_FLOATS_SCALAR : PA_FLOATS_VEC;
}

static int64_t pb_floats(const kiln_cg_target *t)
{
    return t->isa == KILN_ISA_SCALAR ? PB_FLOATS_SCALAR : PB_FLOATS_VEC;
}

/* ---- the micro-kernel menu ---- */

typedef struct ukr_shape {
    int mr, nr;
    double speed; /* relative, measured in cache: the model's weights */
} ukr_shape;

/* The first entry is the default. Speeds: 1 thread, in L2, Xeon (Ice Lake)
 * for AVX-512; guesses elsewhere. */
static const ukr_shape menu_avx512[] = {{8, 48, 1.0},  {6, 64, 0.96},  {12, 32, 0.95},
                                        {14, 32, 0.93}, {8, 32, 0.85}, {16, 16, 0.8},
                                        {8, 16, 0.6}};
static const ukr_shape menu_avx2[] = {{6, 16, 1.0}, {4, 24, 0.95}, {8, 8, 0.7}, {4, 8, 0.5}};
static const ukr_shape menu_neon[] = {{8, 12, 1.0}, {12, 8, 0.95}, {8, 8, 0.8}, {4, 4, 0.4}};
static const ukr_shape menu_scalar[] = {{4, 4, 1.0}, {2, 8, 0.9}};

static const ukr_shape *menu(kiln_isa isa, int *n)
{
#define MENU(m) (*n = (int)(sizeof m / sizeof m[0]), m)
    switch (isa) {
    case KILN_ISA_AVX512: return MENU(menu_avx512);
    case KILN_ISA_AVX2: return MENU(menu_avx2);
    case KILN_ISA_NEON: return MENU(menu_neon);
    case KILN_ISA_SCALAR: break;
    }
    return MENU(menu_scalar);
#undef MENU
}

static int in_menu(kiln_isa isa, int mr, int nr)
{
    int n;
    const ukr_shape *m = menu(isa, &n);
    for (int i = 0; i < n; i++)
        if (m[i].mr == mr && m[i].nr == nr) return 1;
    return 0;
}

/* ---- the ISA's vocabulary ---- */

static const struct vocab {
    int lanes;
    const char *type, *load, *store, *zero; /* store: NULL for `*(p) = v` */
    const char *set1, *fma;                 /* fma(a, b, c) = a*b + c; NULL: NEON, scalar */
} vocabs[] = {
    [KILN_ISA_SCALAR] = {1, "float", "*", NULL, "0.0f", "", NULL},
    [KILN_ISA_AVX2] = {8, "__m256", "_mm256_loadu_ps", "_mm256_storeu_ps", "_mm256_setzero_ps()",
                       "_mm256_set1_ps", "_mm256_fmadd_ps"},
    [KILN_ISA_AVX512] = {16, "__m512", "_mm512_loadu_ps", "_mm512_storeu_ps",
                         "_mm512_setzero_ps()", "_mm512_set1_ps", "_mm512_fmadd_ps"},
    [KILN_ISA_NEON] = {4, "float32x4_t", "vld1q_f32", "vst1q_f32", "vdupq_n_f32(0.0f)",
                       "vdupq_n_f32", NULL},
};

static int lanes(kiln_isa isa) { return vocabs[isa].lanes; }

/* ---- the prelude: micro-kernels, packing, buffers ---- */

/* A micro-kernel and its edge wrapper: kiln_gemm_ukr_MRxNR and
 * kiln_gemm_edge_MRxNR on packed A (element (r, k) at a[k*MR + r]); or, with
 * a name, NAME_ukr and NAME_edge reading A in place: element (r, k) at
 * a[r*rs + k*ks], constant strides (rs, ks) = (lda, 1) or (1, lda). */
static void emit_ukr(kiln_sbuf *b, kiln_isa isa, int mr, int nr, const char *name, long long rs,
                     long long ks)
{
    int v = lanes(isa), nv = nr / v;
    const struct vocab *V = &vocabs[isa];
    const char *T = V->type, *ld = V->load;
    char addr[64], acc[32], ukr[96], edge[96], ael[48], form[64];
    int lane = isa == KILN_ISA_NEON && rs == 1; /* NEON: FMA by lane of a loaded A vector */
    if (name) {
        snprintf(ukr, sizeof ukr, "%s_ukr", name);
        snprintf(edge, sizeof edge, "%s_edge", name);
    } else {
        snprintf(ukr, sizeof ukr, "kiln_gemm_ukr_%dx%d", mr, nr);
        snprintf(edge, sizeof edge, "kiln_gemm_edge_%dx%d", mr, nr);
    }
    if (rs == 1) snprintf(form, sizeof form, "k*%lld + r", ks);
    else snprintf(form, sizeof form, "r*%lld + k", rs);
    kiln_sb_printf(b,
                   "/* C[0..%d, 0..%d) (rows ldc apart) = (load_c ? C : 0) + sum over k < kc, in\n"
                   " * order, of A(r, k) * b[k*%d + j], A(r, k) = a[%s]: %d x %d accumulators.\n"
                   " * cn: the next tile's C, prefetched. */\n"
                   "static KILN_GEMM_NOINLINE void %s(int64_t kc, const float *restrict a,\n"
                   "    const float *restrict b, float *restrict c, int64_t ldc, int load_c,\n"
                   "    const float *cn)\n{\n",
                   mr, nr, nr, form, mr, nv, ukr);
    for (int r = 0; r < mr && isa != KILN_ISA_SCALAR; r++)
        for (int l = 0; l < nr; l += 16)
            kiln_sb_printf(b, "    %s(cn + %d * ldc + %d%s);\n",
                           isa == KILN_ISA_NEON ? "__builtin_prefetch" : "_mm_prefetch((const char *)",
                           r, l, isa == KILN_ISA_NEON ? "" : "), _MM_HINT_T0");
    if (isa == KILN_ISA_SCALAR) kiln_sb_puts(b, "    (void)cn;\n");
    for (int r = 0; r < mr; r++) {
        kiln_sb_printf(b, "    %s", T);
        for (int j = 0; j < nv; j++) kiln_sb_printf(b, "%s c%d_%d", j ? "," : "", r, j);
        kiln_sb_puts(b, ";\n");
    }
    kiln_sb_puts(b, "    if (load_c) {\n");
    for (int r = 0; r < mr; r++) {
        kiln_sb_puts(b, "        ");
        for (int j = 0; j < nv; j++)
            kiln_sb_printf(b, "%sc%d_%d = %s(c + %d * ldc + %d);", j ? " " : "", r, j, ld, r,
                           j * v);
        kiln_sb_puts(b, "\n");
    }
    kiln_sb_puts(b, "    } else {\n");
    for (int r = 0; r < mr; r++) {
        kiln_sb_puts(b, "        ");
        for (int j = 0; j < nv; j++)
            kiln_sb_printf(b, "%sc%d_%d = %s;", j ? " " : "", r, j, V->zero);
        kiln_sb_puts(b, "\n");
    }
    kiln_sb_printf(b, "    }\n    for (int64_t k = 0; k < kc; k++, a += %lld, b += %d) {\n",
                   ks, nr);
    for (int j = 0; j < nv; j++)
        kiln_sb_printf(b, "        %s b%d = %s(b + %d);\n", T, j, ld, j * v);
    if (lane)
        for (int q = 0; q < mr / 4; q++)
            kiln_sb_printf(b, "        float32x4_t a%d = vld1q_f32(a + %d);\n", q, 4 * q);
    else
        kiln_sb_printf(b, "        %s ar;\n", T);
    for (int r = 0; r < mr; r++) {
        snprintf(ael, sizeof ael, "a[%lld]", r * rs);
        kiln_sb_puts(b, "       ");
        if (!lane) kiln_sb_printf(b, " ar = %s(%s);", V->set1, ael);
        for (int j = 0; j < nv; j++) {
            snprintf(acc, sizeof acc, "c%d_%d", r, j);
            if (V->fma) kiln_sb_printf(b, " %s = %s(ar, b%d, %s);", acc, V->fma, j, acc);
            else if (lane)
                kiln_sb_printf(b, " %s = vfmaq_laneq_f32(%s, b%d, a%d, %d);", acc, acc, j, r / 4,
                               r % 4);
            else if (isa == KILN_ISA_NEON) kiln_sb_printf(b, " %s = vfmaq_f32(%s, b%d, ar);", acc, acc, j);
            else kiln_sb_printf(b, " %s = %s + ar * b%d;", acc, acc, j);
        }
        kiln_sb_puts(b, "\n");
    }
    kiln_sb_puts(b, "    }\n");
    for (int r = 0; r < mr; r++) {
        kiln_sb_puts(b, "    ");
        for (int j = 0; j < nv; j++) {
            snprintf(addr, sizeof addr, "c + %d * ldc + %d", r, j * v);
            if (V->store) kiln_sb_printf(b, "%s%s(%s, c%d_%d);", j ? " " : "", V->store, addr, r, j);
            else kiln_sb_printf(b, "%s*(%s) = c%d_%d;", j ? " " : "", addr, r, j);
        }
        kiln_sb_puts(b, "\n");
    }
    kiln_sb_puts(b, "}\n\n");
    kiln_sb_printf(b,
                   "/* The same on an m x n corner (m <= %d, n <= %d) of C, through a local tile. */\n"
                   "static KILN_GEMM_NOINLINE void %s(int64_t kc, const float *a, const float *b, float *c,\n"
                   "    int64_t ldc, int64_t m, int64_t n, int load_c)\n{\n"
                   "    float t[%d] __attribute__((aligned(64)));\n"
                   "    if (load_c) {\n"
                   "        memset(t, 0, sizeof t);\n"
                   "        for (int64_t i = 0; i < m; i++)\n"
                   "            for (int64_t j = 0; j < n; j++) t[i * %d + j] = c[i * ldc + j];\n"
                   "    }\n"
                   "    %s(kc, a, b, t, %d, load_c, c);\n"
                   "    for (int64_t i = 0; i < m; i++)\n"
                   "        for (int64_t j = 0; j < n; j++) c[i * ldc + j] = t[i * %d + j];\n"
                   "}\n\n",
                   mr, nr, edge, mr * nr, nr, ukr, nr, nr);
}

/* The block transposes the transposing pack uses (none on scalar). */
static const char tr8_avx[] =
    "/* dst[t*w + i] = src[i*ld + t] for i, t < 8: an 8 x 8 transpose in ymm registers. */\n"
    "static inline void kiln_gemm_tr8(float *restrict dst, int64_t w, const float *restrict src,\n"
    "                                 int64_t ld)\n"
    "{\n"
    "    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld);\n"
    "    __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);\n"
    "    __m256 r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld);\n"
    "    __m256 r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);\n"
    "    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);\n"
    "    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);\n"
    "    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);\n"
    "    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);\n"
    "    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);\n"
    "    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);\n"
    "    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);\n"
    "    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);\n"
    "    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));\n"
    "    _mm256_storeu_ps(dst + w, _mm256_permute2f128_ps(s1, s5, 0x20));\n"
    "    _mm256_storeu_ps(dst + 2 * w, _mm256_permute2f128_ps(s2, s6, 0x20));\n"
    "    _mm256_storeu_ps(dst + 3 * w, _mm256_permute2f128_ps(s3, s7, 0x20));\n"
    "    _mm256_storeu_ps(dst + 4 * w, _mm256_permute2f128_ps(s0, s4, 0x31));\n"
    "    _mm256_storeu_ps(dst + 5 * w, _mm256_permute2f128_ps(s1, s5, 0x31));\n"
    "    _mm256_storeu_ps(dst + 6 * w, _mm256_permute2f128_ps(s2, s6, 0x31));\n"
    "    _mm256_storeu_ps(dst + 7 * w, _mm256_permute2f128_ps(s3, s7, 0x31));\n"
    "}\n\n";

static const char tr4_neon[] =
    "/* dst[t*w + i] = src[i*ld + t] for i, t < 4: a 4 x 4 transpose in q registers. */\n"
    "static inline void kiln_gemm_tr4(float *restrict dst, int64_t w, const float *restrict src,\n"
    "                                 int64_t ld)\n"
    "{\n"
    "    float32x4_t r0 = vld1q_f32(src), r1 = vld1q_f32(src + ld);\n"
    "    float32x4_t r2 = vld1q_f32(src + 2 * ld), r3 = vld1q_f32(src + 3 * ld);\n"
    "    float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));\n"
    "    float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));\n"
    "    float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));\n"
    "    float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));\n"
    "    vst1q_f32(dst, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));\n"
    "    vst1q_f32(dst + w, vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));\n"
    "    vst1q_f32(dst + 2 * w, vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));\n"
    "    vst1q_f32(dst + 3 * w, vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));\n"
    "}\n\n";

static const char pack_n_src[] =
    "/* Packs a kc x n block stored row by row (element (k, i) at src[k*ld + i]) into\n"
    " * dst[k*w + i], zero for n <= i < w: an MR or NR micro-panel. */\n"
    "static KILN_GEMM_NOINLINE void kiln_gemm_pack_n(float *restrict dst, const float *restrict src,\n"
    "                                    int64_t ld, int64_t kc, int64_t n, int64_t w)\n"
    "{\n"
    "    for (int64_t k = 0; k < kc; k++) {\n"
    "        for (int64_t i = 0; i < n; i++) dst[k * w + i] = src[k * ld + i];\n"
    "        for (int64_t i = n; i < w; i++) dst[k * w + i] = 0.0f;\n"
    "    }\n"
    "}\n\n";

/* The transposing pack: element (k, i) at src[i*ld + k]. `blk` is the block
 * transpose's size (0: none). */
static void emit_pack_t(kiln_sbuf *b, int blk)
{
    kiln_sb_puts(b,
                 "/* Packs a kc x n block stored transposed (element (k, i) at src[i*ld + k])\n"
                 " * into dst[k*w + i], zero for n <= i < w. Block transposes go k-block by\n"
                 " * k-block, so that whole rows of dst are written together. */\n"
                 "static KILN_GEMM_NOINLINE void kiln_gemm_pack_t(float *restrict dst, const float *restrict "
                 "src,\n"
                 "                                    int64_t ld, int64_t kc, int64_t n, int64_t w)\n"
                 "{\n");
    if (blk)
        kiln_sb_printf(b,
                       "    int64_t nb = n - n %% %d, k = 0;\n"
                       "    for (; k + %d <= kc; k += %d)\n"
                       "        for (int64_t i = 0; i < nb; i += %d)\n"
                       "            kiln_gemm_tr%d(dst + k * w + i, w, src + i * ld + k, ld);\n"
                       "    for (; k < kc; k++)\n"
                       "        for (int64_t i = 0; i < nb; i++) dst[k * w + i] = src[i * ld + k];\n",
                       blk, blk, blk, blk, blk);
    else kiln_sb_puts(b, "    int64_t nb = 0, k;\n");
    kiln_sb_puts(b, "    for (int64_t i = nb; i < n; i++)\n"
                    "        for (k = 0; k < kc; k++) dst[k * w + i] = src[i * ld + k];\n"
                    "    for (k = 0; k < kc; k++)\n"
                    "        for (int64_t i = n; i < w; i++) dst[k * w + i] = 0.0f;\n"
                    "}\n\n");
}

void kiln_emit_gemm_prelude(kiln_sbuf *b, const kiln_cg_target *t)
{
    kiln_isa isa = t->isa;
    kiln_sb_printf(b, "/* ---- GEMM prelude (codegen/gemm.c), target %s ---- */\n",
                   kiln_isa_name(isa));
    if (isa == KILN_ISA_AVX512 || isa == KILN_ISA_AVX2) kiln_sb_puts(b, "#include <immintrin.h>\n");
    if (isa == KILN_ISA_NEON) kiln_sb_puts(b, "#include <arm_neon.h>\n");
    kiln_sb_puts(b, "#include <string.h>\n\n"
                    "/* Kernels and packing routines are compiled once each (not inlined or\n"
                    " * cloned per call site): compile time, not speed. */\n"
                    "#if defined(__GNUC__) && !defined(__clang__)\n"
                    "#define KILN_GEMM_NOINLINE __attribute__((noinline, noclone, unused))\n"
                    "#else\n"
                    "#define KILN_GEMM_NOINLINE __attribute__((noinline, unused))\n"
                    "#endif\n\n");
    kiln_sb_printf(b,
                   "/* Packing buffers. kiln_gemm_pa: this thread's packed A block (MR-row\n"
                   " * micro-panels); kiln_gemm_pb: packed B of the GEMM this thread calls,\n"
                   " * read by the pool's threads through a pointer while it runs. */\n"
                   "static _Thread_local float kiln_gemm_pa[%lld] __attribute__((aligned(64)));\n"
                   "static _Thread_local float kiln_gemm_pb[%lld] __attribute__((aligned(64)));\n\n",
                   (long long)pa_floats(t), (long long)pb_floats(t));
    if (isa == KILN_ISA_AVX512 || isa == KILN_ISA_AVX2) kiln_sb_puts(b, tr8_avx);
    if (isa == KILN_ISA_NEON) kiln_sb_puts(b, tr4_neon);
    kiln_sb_puts(b, pack_n_src);
    emit_pack_t(b, isa == KILN_ISA_AVX512 || isa == KILN_ISA_AVX2 ? 8
                   : isa == KILN_ISA_NEON                           ? 4
                                                                    : 0);
    int n;
    const ukr_shape *m = menu(isa, &n);
    for (int i = 0; i < n; i++) emit_ukr(b, isa, m[i].mr, m[i].nr, NULL, 1, m[i].mr);
}

/* ---- fitting tiles to a shape ---- */

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t rup(int64_t a, int64_t b) { return cdiv(a, b) * b; }
static int64_t rdown(int64_t a, int64_t b) { return a / b * b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* What the generated GEMM is built from: tiles fitted to the shape and the
 * buffers, and the derived blocking. */
typedef struct gplan {
    int mr, nr;
    int64_t mc, kc, nc; /* mc a multiple of mr, nc of nr; mc*kc <= PA, kc*nc <= PB */
    int64_t kb;         /* K per B-packing pass: a multiple of kc, or K */
    int64_t jg;         /* columns per epilogue group: a multiple of nr */
    int cols;           /* tasks are NR column panels (each packs its B), not MR row panels */
    int serial;         /* too small to be worth splitting */
    int direct;         /* A (not transposed) read in place, not packed */
    int apack;          /* op(A) comes from a PACKA, row by row, into kiln_gemm_pa
                           (rows kc apart), and is read there as in place */
} gplan;

static void fit(const kiln_cg_target *t, const kiln_gemm_shape *s, const kiln_gemm_tiles *in,
                gplan *p)
{
    int n;
    const ukr_shape *m = menu(t->isa, &n);
    p->mr = m[0].mr;
    p->nr = m[0].nr;
    if (in_menu(t->isa, in->mr, in->nr)) {
        p->mr = in->mr;
        p->nr = in->nr;
    }
    int64_t mr = p->mr, nr = p->nr, PA = pa_floats(t), PB = pb_floats(t);
    int64_t M = max64(s->M, 1), N = max64(s->N, 1), K = max64(s->K, 1);

    /* kc: at most what the buffers allow, balanced so that the last block is
     * not tiny, a multiple of 8 (the transposing pack's block) where that
     * does not make it larger. Fitting fitted tiles changes nothing. */
    int64_t kc0 = min64(max64(in->kc, 1), min64(PA / mr, PB / nr)), nkc = cdiv(K, kc0);
    p->kc = kc0 >= K ? K : rup(cdiv(K, nkc), 8) <= kc0 ? rup(cdiv(K, nkc), 8) : cdiv(K, nkc);

    int64_t mc0 = min64(max64(rdown(in->mc, mr), mr), rdown(PA / p->kc, mr));
    mc0 = min64(mc0, rup(M, mr));
    p->mc = rup(cdiv(M, cdiv(M, mc0)), mr);

    int64_t nc0 = min64(max64(rdown(in->nc, nr), nr), rdown(PB / p->kc, nr));
    nc0 = min64(nc0, rup(N, nr));
    p->nc = rup(cdiv(N, cdiv(N, nc0)), nr);

    p->kb = min64(K, PB / (p->kc * p->nc) * p->kc);

    /* the epilogue follows groups of columns whose C block fills about a
     * quarter of L2 */
    p->jg = min64(p->nc, max64(nr, rdown(t->l2 / 4 / (4 * p->mc), nr)));

    int64_t cols = cdiv(N, nr);
    /* column tasks when there are enough of them and A fits in half of L2:
     * each task packs its own B panels (they stay in its L2) and reads A in
     * place, from every L2. Not for A^T: MR floats strided by lda per k. */
    p->cols = !s->ta && cols >= 8 && 4 * M * K <= t->l2 / 2;
    p->serial = 2 * M * N * K < (1 << 18);
    /* A is read in place by column tasks, and when a panel of it is used by
     * at most two NR panels (packing it would cost more than it saves) */
    p->direct = p->cols || cdiv(p->nc, nr) <= 2;
    p->apack = 0;
}

void kiln_gemm_tiles_model(const kiln_cg_target *t, const kiln_gemm_shape *s, kiln_gemm_tiles *out)
{
    /* the micro-kernel with the least padded work per unit of its speed
     * (relative speeds measured on a Xeon, AVX-512; first entry 1.0) */
    int n;
    const ukr_shape *m = menu(t->isa, &n);
    int64_t M = max64(s->M, 1), N = max64(s->N, 1);
    double best = 1e300;
    kiln_gemm_tiles raw = {m[0].mr, m[0].nr, 0, 0, 0};
    for (int i = 0; i < n; i++) {
        double cost = (double)rup(M, m[i].mr) * (double)rup(N, m[i].nr) / m[i].speed;
        if (cost < best * 0.999) {
            best = cost;
            raw.mr = m[i].mr;
            raw.nr = m[i].nr;
        }
    }
    /* a KC x NR panel of B about 1.5 times L1 (it streams from L2 at a third
     * of L2's bandwidth), an MC x KC block of A in a quarter of L2, NC as
     * wide as the B buffer and a quarter of L3 allow */
    raw.kc = min64(512, max64(64, t->l1d * 3 / 2 / (4 * raw.nr)));
    raw.mc = max64(raw.mr, t->l2 / 4 / (4 * raw.kc));
    raw.nc = max64(raw.nr, t->l3 / 4 / (4 * raw.kc));
    gplan p;
    fit(t, s, &raw, &p);
    out->mr = p.mr;
    out->nr = p.nr;
    out->mc = p.mc;
    out->kc = p.kc;
    out->nc = p.nc;
}

/* ---- one GEMM function ---- */

/* A call of kiln_gemm_pack_t (trans) or kiln_gemm_pack_n. */
static void emit_pack_call(kiln_sbuf *b, const char *ind, int trans, const char *dst,
                           const char *src, long long ld, int w, const char *n)
{
    kiln_sb_printf(b, "%skiln_gemm_pack_%c(%s, %s, %lld, kc, %s, %d);\n", ind, trans ? 't' : 'n', dst,
                   src, ld, n, w);
}

/* Packing the NR panel of op(B) at column j (n wide), rows pc..pc+kc, to dst:
 * the caller's PACKB when named (B then is not read), else kiln_gemm_pack_*. */
static void emit_packb_call(kiln_sbuf *b, const char *ind, const kiln_gemm_shape *s, int nr,
                            const char *dst, const char *packb)
{
    char src[96];
    if (packb) {
        kiln_sb_printf(b, "%s%s(x->epi, %s, pc, kc, j, n, %d);\n", ind, packb, dst, nr);
        return;
    }
    if (s->tb) snprintf(src, sizeof src, "x->B + j * %lld + pc", (long long)s->ldb);
    else snprintf(src, sizeof src, "x->B + pc * %lld + j", (long long)s->ldb);
    emit_pack_call(b, ind, s->tb, dst, src, s->ldb, nr, "n");
}

/* The name of the micro-kernel that reads A in place with strides (rs, ks):
 * it depends only on the tile and the strides, so GEMMs of one translation
 * unit with the same ones share it (emitted under an include guard). */
static void direct_ukr_name(char *buf, size_t len, const kiln_gemm_shape *s, const gplan *p)
{
    long long lda = p->apack ? p->kc : s->lda; /* PACKA's block: rows kc apart */
    snprintf(buf, len, "kiln_gemm_d%dx%d_%lld_%lld", p->mr, p->nr, s->ta ? 1LL : lda,
             s->ta ? lda : 1LL);
}

/* The MR x NR tiles of rows ic+ir (ir < mc) at columns jr (n wide) of C:
 * `c` points at C[ic, jr], `bp` at the packed B panel, `pa` holds packed A
 * (all of it, or only a last partial panel when A is read in place). */
static void emit_tiles(kiln_sbuf *b, const char *ind, const kiln_gemm_shape *s, const gplan *p)
{
    int mr = p->mr, nr = p->nr;
    long long ldc = s->ldc, lda = s->lda;
    kiln_sb_printf(b,
                   "%sfor (int64_t ir = 0; ir < mc; ir += %d) {\n"
                   "%s    float *ct = c + ir * %lld;\n"
                   "%s    const float *cn = ir + %d < mc ? ct + %lld : c + %d;\n",
                   ind, mr, ind, ldc, ind, mr, mr * ldc, nr);
    if (p->apack) { /* rows of op(A) in pa, kc apart, zero past mc up to MR */
        char name[64];
        direct_ukr_name(name, sizeof name, s, p);
        kiln_sb_printf(b,
                       "%s    if (mc - ir < %d || n < %d)\n"
                       "%s        %s_edge(kc, pa + ir * %lld, bp, ct, %lld, mc - ir < %d ? mc - ir : %d, n, "
                       "load_c);\n"
                       "%s    else\n"
                       "%s        %s_ukr(kc, pa + ir * %lld, bp, ct, %lld, load_c, cn);\n"
                       "%s}\n",
                       ind, mr, nr, ind, name, (long long)p->kc, ldc, mr, mr, ind, ind, name,
                       (long long)p->kc, ldc, ind);
        return;
    }
    if (p->direct) {
        char a[96], name[64];
        direct_ukr_name(name, sizeof name, s, p);
        if (s->ta) snprintf(a, sizeof a, "x->A + pc * %lld + ic + ir", lda);
        else snprintf(a, sizeof a, "x->A + (ic + ir) * %lld + pc", lda);
        kiln_sb_printf(b,
                       "%s    if (mc - ir < %d)\n"
                       "%s        kiln_gemm_edge_%dx%d(kc, pa, bp, ct, %lld, mc - ir, n, load_c);\n"
                       "%s    else if (n < %d)\n"
                       "%s        %s_edge(kc, %s, bp, ct, %lld, %d, n, load_c);\n"
                       "%s    else\n"
                       "%s        %s_ukr(kc, %s, bp, ct, %lld, load_c, cn);\n",
                       ind, mr, ind, mr, nr, ldc, ind, nr, ind, name, a, ldc, mr, ind, ind, name, a,
                       ldc);
    } else {
        kiln_sb_printf(b,
                       "%s    if (mc - ir < %d || n < %d)\n"
                       "%s        kiln_gemm_edge_%dx%d(kc, pa + ir * kc, bp, ct, %lld, mc - ir < %d ? "
                       "mc - ir : %d, n, load_c);\n"
                       "%s    else\n"
                       "%s        kiln_gemm_ukr_%dx%d(kc, pa + ir * kc, bp, ct, %lld, load_c, cn);\n",
                       ind, mr, nr, ind, mr, nr, ldc, mr, mr, ind, ind, mr, nr, ldc);
    }
    kiln_sb_printf(b, "%s}\n", ind);
}

/* Packing op(A) rows ic..ic+mc, k pc..pc+kc: every MR panel, or (A read in
 * place) only a last partial one, at pa. */
static void emit_packa(kiln_sbuf *b, const char *ind, const kiln_gemm_shape *s, const gplan *p,
                       const char *packa)
{
    char src[96];
    int mr = p->mr;
    long long lda = s->lda;
    if (packa) {
        kiln_sb_printf(b,
                       "%s%s(x->epi, pa, ic, mc, pc, kc, %lld);\n"
                       "%sfor (int64_t r = mc; r %% %d; r++)\n"
                       "%s    for (int64_t k = 0; k < kc; k++) pa[r * %lld + k] = 0.0f;\n",
                       ind, packa, (long long)p->kc, ind, mr, ind, (long long)p->kc);
        return;
    }
    if (p->direct) {
        if (s->ta) snprintf(src, sizeof src, "x->A + pc * %lld + ic + (mc - mc %% %d)", lda, mr);
        else snprintf(src, sizeof src, "x->A + (ic + (mc - mc %% %d)) * %lld + pc", mr, lda);
        kiln_sb_printf(b, "%sif (mc %% %d) kiln_gemm_pack_%c(pa, %s, %lld, kc, mc %% %d, %d);\n", ind,
                       mr, s->ta ? 'n' : 't', src, lda, mr, mr);
        return;
    }
    if (s->ta) snprintf(src, sizeof src, "x->A + pc * %lld + ic + ir", lda);
    else snprintf(src, sizeof src, "x->A + (ic + ir) * %lld + pc", lda);
    kiln_sb_printf(b,
                   "%sfor (int64_t ir = 0; ir < mc; ir += %d) {\n"
                   "%s    int64_t m = mc - ir < %d ? mc - ir : %d;\n",
                   ind, mr, ind, mr, mr);
    char ind2[64];
    snprintf(ind2, sizeof ind2, "%s    ", ind);
    emit_pack_call(b, ind2, !s->ta, "pa + ir * kc", src, lda, mr, "m");
    kiln_sb_printf(b, "%s}\n", ind);
}

void kiln_emit_gemm(kiln_sbuf *b, const char *name, const kiln_gemm_shape *s,
                    const kiln_cg_target *t, const kiln_gemm_tiles *tiles, const char *epi)
{
    kiln_emit_gemm_packab(b, name, s, t, tiles, epi, NULL, NULL);
}

void kiln_emit_gemm_packb(kiln_sbuf *b, const char *name, const kiln_gemm_shape *s,
                          const kiln_cg_target *t, const kiln_gemm_tiles *tiles, const char *epi,
                          const char *packb)
{
    kiln_emit_gemm_packab(b, name, s, t, tiles, epi, packb, NULL);
}

int kiln_gemm_tiles_nr(const kiln_cg_target *t, const kiln_gemm_shape *s,
                       const kiln_gemm_tiles *tiles)
{
    gplan p;
    fit(t, s, tiles, &p);
    return p.nr;
}

int64_t kiln_gemm_tiles_kc(const kiln_cg_target *t, const kiln_gemm_shape *s,
                           const kiln_gemm_tiles *tiles)
{
    gplan p;
    fit(t, s, tiles, &p);
    return p.kc;
}

void kiln_emit_gemm_packab(kiln_sbuf *b, const char *name, const kiln_gemm_shape *s,
                           const kiln_cg_target *t, const kiln_gemm_tiles *tiles, const char *epi,
                           const char *packb, const char *packa)
{
    long long M = s->M, N = s->N, K = s->K, lda = s->lda, ldb = s->ldb, ldc = s->ldc;
    if (M < 1 || N < 1 || K < 1 || lda < (s->ta ? M : K) || ldb < (s->tb ? K : N) || ldc < N ||
        (packa && (packb || s->ta))) {
        kiln_sb_printf(b, "#error \"kiln_emit_gemm %s: invalid shape M=%lld N=%lld K=%lld\"\n", name,
                       M, N, K);
        return;
    }
    gplan p;
    fit(t, s, tiles, &p);
    if (packb && (int64_t)p.nr * p.kc > pa_floats(t)) {
        /* PACKB may use kiln_gemm_pa for a KC x NR block (gemm.h) */
        kiln_gemm_tiles tt = *tiles;
        tt.kc = pa_floats(t) / p.nr;
        fit(t, s, &tt, &p);
    }
    if (packa) /* row tasks: each makes its own rows of A; fit keeps mc*kc within kiln_gemm_pa */
        p.direct = p.apack = 1, p.cols = 0;
    int mr = p.mr, nr = p.nr;
    long long mc = p.mc, kc = p.kc, nc = p.nc, kb = p.kb, jg = p.jg, cols = cdiv(N, nr);

    kiln_sb_printf(b,
                   "/* %s: C[%lld,%lld] (ldc %lld) = %s[%lld,%lld] (lda %lld) * %s[%lld,%lld] "
                   "(ldb %lld)%s%s%s%s.\n"
                   " * Target %s: %dx%d micro-kernel, mc %lld, kc %lld, nc %lld. A %s; tasks: %s. */\n",
                   name, M, N, ldc, s->ta ? "A^T" : "A", M, K, lda, s->tb ? "B^T" : "B", K, N, ldb,
                   packb ? ", op(B) packed by " : packa ? ", op(A) by " : "",
                   packb ? packb : packa ? packa : "", epi ? ", then " : "", epi ? epi : "",
                   kiln_isa_name(t->isa), mr, nr, mc, kc, nc,
                   p.apack ? "made row by row in kiln_gemm_pa" : p.direct ? "read in place" : "packed",
                   p.serial ? "none (run inline)"
                   : p.cols ? "NR column panels, each packing its own B"
                            : "MR row panels, sharing B packed by NR panels first");
    if (p.direct) { /* once per translation unit: GEMMs with the same tile and strides share it */
        char dn[64];
        direct_ukr_name(dn, sizeof dn, s, &p);
        kiln_sb_printf(b, "#ifndef %s_defined\n#define %s_defined\n", dn, dn);
        if (s->ta) emit_ukr(b, t->isa, mr, nr, dn, 1, lda);
        else emit_ukr(b, t->isa, mr, nr, dn, p.apack ? kc : lda, 1);
        kiln_sb_puts(b, "#endif\n");
    }
    kiln_sb_printf(b,
                   "typedef struct %s_ctx {\n"
                   "    const float *A, *B;\n"
                   "    float *C;\n"
                   "    void *epi;\n"
                   "    float *pb;      /* row tasks: op(B)[k0..k1, jc..jc+nc) packed, the caller's */\n"
                   "    int64_t jc, nc; /* row tasks: the column block */\n"
                   "    int64_t k0, k1; /* row tasks: the rows of K in pb */\n"
                   "} %s_ctx;\n\n",
                   name, name);
    const char *lastc = "pc + kc == ";
    if (p.cols) {
        long long g = nc / nr; /* panels of B packed at a time */
        kiln_sb_printf(b,
                       "/* C[0..%lld, lo*%d..hi*%d) for NR column panels [lo, hi): per group of %lld\n"
                       " * panels and KC block, op(B) packed into this thread's kiln_gemm_pb, then per\n"
                       " * MC block of rows every panel times every MR panel of A. */\n"
                       "static void %s_mul(void *vx, int64_t lo, int64_t hi)\n{\n"
                       "    const %s_ctx *x = vx;\n"
                       "    float *pa = kiln_gemm_pa, *pb = kiln_gemm_pb;\n"
                       "    for (int64_t g0 = lo; g0 < hi; g0 += %lld) {\n"
                       "        int64_t g1 = hi - g0 < %lld ? hi : g0 + %lld;\n"
                       "        for (int64_t pc = 0; pc < %lld; pc += %lld) {\n"
                       "            int64_t kc = %lld - pc < %lld ? %lld - pc : %lld;\n"
                       "            int load_c = pc > 0;\n"
                       "            for (int64_t q = g0; q < g1; q++) {\n"
                       "                int64_t j = q * %d, n = %lld - j < %d ? %lld - j : %d;\n",
                       M, nr, nr, g, name, name, g, g, g, K, kc, K, kc, K, kc, nr, N, nr, N, nr);
        char dstq[64];
        snprintf(dstq, sizeof dstq, "pb + (q - g0) * kc * %d", nr);
        emit_packb_call(b, "                ", s, nr, dstq, packb);
        kiln_sb_printf(b,
                       "            }\n"
                       "            for (int64_t ic = 0; ic < %lld; ic += %lld) {\n"
                       "                int64_t mc = %lld - ic < %lld ? %lld - ic : %lld;\n",
                       M, mc, M, mc, M, mc);
        emit_packa(b, "                ", s, &p, packa);
        long long gq = jg / nr; /* panels per tail group */
        kiln_sb_printf(b,
                       "                for (int64_t q0 = g0; q0 < g1; q0 += %lld) {\n"
                       "                    int64_t q1 = g1 - q0 < %lld ? g1 : q0 + %lld;\n"
                       "                    for (int64_t q = q0; q < q1; q++) {\n"
                       "                        int64_t jr = q * %d, n = %lld - jr < %d ? %lld - jr : %d;\n"
                       "                        const float *bp = pb + (q - g0) * kc * %d;\n"
                       "                        float *c = x->C + ic * %lld + jr;\n",
                       gq, gq, gq, nr, N, nr, N, nr, nr, ldc);
        emit_tiles(b, "                        ", s, &p);
        kiln_sb_puts(b, "                    }\n");
        if (epi)
            kiln_sb_printf(b,
                           "                    if (%s%lld)\n"
                           "                        for (int64_t i = ic; i < ic + mc; i++)\n"
                           "                            %s(x->epi, i, q0 * %d, q1 * %d < %lld ? q1 * %d : %lld);\n",
                           lastc, K, epi, nr, nr, N, nr, N);
        kiln_sb_puts(b, "                }\n");
        kiln_sb_puts(b, "            }\n        }\n    }\n}\n\n");
        kiln_sb_printf(b,
                       "static void %s(const float *A, const float *B, float *C, const kiln_rt *rt,\n"
                       "    void *epi_ctx)\n{\n"
                       "    %s_ctx x = {A, B, C, epi_ctx, 0, 0, 0, 0, 0};\n",
                       name, name);
        if (p.serial) kiln_sb_printf(b, "    (void)rt;\n    %s_mul(&x, 0, %lld);\n}\n\n", name, cols);
        else kiln_sb_printf(b, "    rt->parallel_for(rt->pool, %lld, %s_mul, &x);\n}\n\n", cols, name);
        return;
    }

    /* row tasks: packing B, one task per NR panel */
    kiln_sb_printf(b,
                   "/* Packs NR panels [lo, hi) of op(B)[k0..k1, jc..jc+nc) into pb: KC block after\n"
                   " * KC block (%lld x %lld floats each), panel after panel within a block. */\n"
                   "static void %s_packb(void *vx, int64_t lo, int64_t hi)\n{\n"
                   "    const %s_ctx *x = vx;\n"
                   "    for (int64_t q = lo; q < hi; q++) {\n"
                   "        int64_t j = x->jc + q * %d, n = x->nc - q * %d < %d ? x->nc - q * %d : %d;\n"
                   "        for (int64_t pc = x->k0; pc < x->k1; pc += %lld) {\n"
                   "            int64_t kc = %lld - pc < %lld ? %lld - pc : %lld;\n",
                   kc, nc, name, name, nr, nr, nr, nr, nr, kc, K, kc, K, kc);
    char dst[64];
    snprintf(dst, sizeof dst, "x->pb + (pc - x->k0) * %lld + q * %d * kc", nc, nr);
    emit_packb_call(b, "            ", s, nr, dst, packb);
    kiln_sb_puts(b, "        }\n    }\n}\n\n");

    /* row tasks: multiplying, one task per MR row panel */
    kiln_sb_printf(b,
                   "/* C[lo*%d..hi*%d, jc..jc+nc) for MR row panels [lo, hi): per block of rows\n"
                   " * (at most %lld) and KC block, op(A) %s, then every NR panel of pb times\n"
                   " * every MR panel of A. */\n"
                   "static void %s_mul(void *vx, int64_t lo, int64_t hi)\n{\n"
                   "    const %s_ctx *x = vx;\n"
                   "    float *pa = kiln_gemm_pa;\n"
                   "    int64_t i0 = lo * %d, i1 = hi * %d < %lld ? hi * %d : %lld;\n"
                   "    int64_t nbk = (i1 - i0 + %lld) / %lld; /* blocks of equal size */\n"
                   "    int64_t step = ((i1 - i0 + nbk - 1) / nbk + %d) / %d * %d;\n"
                   "    for (int64_t ic = i0; ic < i1; ic += step) {\n"
                   "        int64_t mc = i1 - ic < step ? i1 - ic : step;\n"
                   "        for (int64_t pc = x->k0; pc < x->k1; pc += %lld) {\n"
                   "            int64_t kc = %lld - pc < %lld ? %lld - pc : %lld;\n"
                   "            int load_c = pc > 0;\n",
                   mr, mr, mc,
                   p.apack    ? "made in this thread's kiln_gemm_pa"
                   : p.direct ? "read in place (a last partial panel packed)"
                              : "packed into this thread's kiln_gemm_pa",
                   name, name, mr, mr, M, mr, M, mc - 1, mc, mr - 1, mr, mr, kc, K, kc, K, kc);
    emit_packa(b, "            ", s, &p, packa);
    kiln_sb_printf(b,
                   "            const float *pbk = x->pb + (pc - x->k0) * %lld;\n"
                   "            for (int64_t jg = 0; jg < x->nc; jg += %lld) {\n"
                   "                int64_t jg1 = x->nc - jg < %lld ? x->nc : jg + %lld;\n"
                   "                for (int64_t jr = jg; jr < jg1; jr += %d) {\n"
                   "                    int64_t n = jg1 - jr < %d ? jg1 - jr : %d;\n"
                   "                    const float *bp = pbk + jr * kc;\n"
                   "                    float *c = x->C + ic * %lld + x->jc + jr;\n",
                   nc, jg, jg, jg, nr, nr, nr, ldc);
    emit_tiles(b, "                    ", s, &p);
    kiln_sb_puts(b, "                }\n");
    if (epi)
        kiln_sb_printf(b,
                       "                if (%s%lld)\n"
                       "                    for (int64_t i = ic; i < ic + mc; i++)\n"
                       "                        %s(x->epi, i, x->jc + jg, x->jc + jg1);\n",
                       lastc, K, epi);
    kiln_sb_puts(b, "            }\n        }\n    }\n}\n\n");

    kiln_sb_printf(b,
                   "static void %s(const float *A, const float *B, float *C, const kiln_rt *rt,\n"
                   "    void *epi_ctx)\n{\n"
                   "    %s_ctx x = {A, B, C, epi_ctx, kiln_gemm_pb, 0, 0, 0, 0};\n"
                   "    for (int64_t jc = 0; jc < %lld; jc += %lld) {\n"
                   "        x.jc = jc;\n"
                   "        x.nc = %lld - jc < %lld ? %lld - jc : %lld;\n"
                   "        for (int64_t k0 = 0; k0 < %lld; k0 += %lld) {\n"
                   "            x.k0 = k0;\n"
                   "            x.k1 = %lld - k0 < %lld ? %lld : k0 + %lld;\n",
                   name, name, N, nc, N, nc, N, nc, K, kb, K, kb, K, kb);
    if (p.serial)
        kiln_sb_printf(b,
                       "            %s_packb(&x, 0, (x.nc + %d) / %d);\n"
                       "            %s_mul(&x, 0, %lld);\n",
                       name, nr - 1, nr, name, (long long)cdiv(M, mr));
    else
        kiln_sb_printf(b,
                       "            rt->parallel_for(rt->pool, (x.nc + %d) / %d, %s_packb, &x);\n"
                       "            rt->parallel_for(rt->pool, %lld, %s_mul, &x);\n",
                       nr - 1, nr, name, (long long)cdiv(M, mr), name);
    kiln_sb_printf(b, "        }\n    }\n%s}\n\n", p.serial ? "    (void)rt;\n" : "");
}

/* ---- implicit im2col: op(B) packed from the image ---- */

/* The generated packers' shared pieces. A panel's columns from pixel j0
 * split into runs along output rows: the loop's head (img, oh, ow of j0;
 * len the run's length, rs[nrun] its first column) ... */
static void emit_runs_open(kiln_sbuf *b, long long P, long long OW)
{
    kiln_sb_printf(b,
                   "        int64_t img = j0 / %lld, oh = j0 %% %lld / %lld, ow = j0 %% %lld;\n"
                   "        for (int64_t e = 0; e < n; nrun++) {\n"
                   "            const int64_t len = %lld - ow < n - e ? %lld - ow : n - e;\n"
                   "            rs[nrun] = e;\n",
                   P, P, OW, OW, OW, OW);
}

/* ... and its tail: on to the next output row. */
static void emit_runs_close(kiln_sbuf *b, long long OH)
{
    kiln_sb_printf(b,
                   "            e += len;\n"
                   "            ow = 0;\n"
                   "            if (++oh == %lld) {\n"
                   "                oh = 0;\n"
                   "                img++;\n"
                   "            }\n"
                   "        }\n",
                   OH);
}

/* The end of a loop over the column matrix's rows: on to the next tap
 * (jj, i, c), and the loop's closing brace. */
static void emit_next_tap(kiln_sbuf *b, long long KW, long long KH)
{
    kiln_sb_printf(b,
                   "        if (++jj == %lld) {\n"
                   "            jj = 0;\n"
                   "            if (++i == %lld) {\n"
                   "                i = 0;\n"
                   "                c++;\n"
                   "            }\n"
                   "        }\n"
                   "    }\n",
                   KW, KH);
}

/* dd[u] = src[iw0 + u*SW] for u < len, 0 where iw0 + u*SW is outside
 * [0, W): stride 1 as a zero head, a copy and a zero tail. ind: the
 * indentation. */
static void emit_row_copy(kiln_sbuf *b, const char *ind, long long W, long long SW)
{
    if (SW == 1)
        kiln_sb_printf(b,
                       "%sint64_t ua = -iw0 > 0 ? -iw0 : 0, ub = %lld - iw0 < len ? %lld - iw0 : len;\n"
                       "%sif (ua > len) ua = len;\n"
                       "%sif (ub < ua) ub = ua;\n"
                       "%sfor (int64_t u = 0; u < ua; u++) dd[u] = 0.0f;\n"
                       "%sfor (int64_t u = ua; u < ub; u++) dd[u] = src[iw0 + u];\n"
                       "%sfor (int64_t u = ub; u < len; u++) dd[u] = 0.0f;\n",
                       ind, W, W, ind, ind, ind, ind, ind);
    else
        kiln_sb_printf(b,
                       "%sfor (int64_t u = 0; u < len; u++) {\n"
                       "%s    const int64_t iw = iw0 + u * %lld;\n"
                       "%s    dd[u] = iw >= 0 && iw < %lld ? src[iw] : 0.0f;\n"
                       "%s}\n",
                       ind, ind, SW, ind, W, ind);
}

/* The rows of the column matrix, ROWS of them from row R0 + RSTART, each LEN
 * pixels from pixel PSTART, row q written at DROW (q the loop variable) and
 * zero-filled up to TAIL when not NULL: runs of pixels along an output row,
 * each a copy of an image row's inside (contiguous with stride 1). */
static void emit_im2col_rows(kiln_sbuf *b, const kiln_kim2col *g, const char *rows,
                             const char *rstart, const char *pstart, const char *len,
                             const char *drow, const char *tail)
{
    long long C = g->C, H = g->H, W = g->W, KH = g->kh, KW = g->kw, KK = g->kh * g->kw;
    long long SH = g->sh, SW = g->sw, PH = g->ph, PW = g->pw, DH = g->dh, DW = g->dw;
    long long OH = g->OH, OW = g->OW, P = g->OH * g->OW, R0 = g->r0;
    kiln_sb_printf(b,
                   "    int64_t c, i, jj;\n"
                   "    {\n"
                   "        const int64_t r = %lld + %s;\n"
                   "        c = r / %lld;\n"
                   "        i = r %% %lld / %lld;\n"
                   "        jj = r %% %lld;\n"
                   "    }\n"
                   "    const int64_t img0 = %s / %lld, oh0 = %s %% %lld / %lld, ow0 = %s %% %lld;\n"
                   "    for (int64_t q = 0; q < %s; q++) {\n"
                   "        float *restrict d = %s;\n"
                   "        const int64_t oi = i * %lld - %lld, oj = jj * %lld - %lld;\n"
                   "        int64_t e = 0, img = img0, oh = oh0, ow = ow0;\n"
                   "        while (e < %s) {\n"
                   "            const int64_t len = %lld - ow < %s - e ? %lld - ow : %s - e;\n"
                   "            const int64_t ih = oh * %lld + oi;\n"
                   "            float *restrict dd = d + e;\n"
                   "            if (ih < 0 || ih >= %lld) {\n"
                   "                for (int64_t u = 0; u < len; u++) dd[u] = 0.0f;\n"
                   "            } else {\n"
                   "                const float *restrict src = x + ((img * %lld + c) * %lld + ih) * %lld;\n"
                   "                const int64_t iw0 = ow * %lld + oj;\n",
                   R0, rstart, KK, KK, KW, KW, pstart, P, pstart, P, OW, pstart, OW, rows, drow, DH,
                   PH, DW, PW, len, OW, len, OW, len, SH, H, C, H, W, SW);
    emit_row_copy(b, "                ", W, SW);
    kiln_sb_puts(b, "            }\n");
    emit_runs_close(b, OH);
    if (tail) kiln_sb_printf(b, "        for (; e < %s; e++) d[e] = 0.0f;\n", tail);
    emit_next_tap(b, KW, KH);
}

/* The body of an im2col PACKB (not transposed) for stride 1 along the
 * width on AVX-512: the panel's columns split into runs along output rows
 * once, and everything about a run that does not depend on the row's
 * channel worked out before the rows: its offset in the image, per kernel
 * row whether the image row exists and its offset, per kernel column the
 * load masks of its 16-float chunks (zeros in the padding, nothing read
 * there). A row (a tap of a channel) is then one masked load and store per
 * chunk of each run; with stride 2, two masked loads of 16 and the even
 * lanes of both picked by one permute. nr: the most columns a call packs. */
static void emit_packb_runs_avx512(kiln_sbuf *b, const kiln_kim2col *g, int nr)
{
    long long C = g->C, H = g->H, W = g->W, KH = g->kh, KW = g->kw;
    long long SH = g->sh, SW = g->sw, PH = g->ph, PW = g->pw, DH = g->dh, DW = g->dw;
    long long OH = g->OH, OW = g->OW, R0 = g->r0;
    long long P = OH * OW, HW = H * W, KK = KH * KW;
    long long maxr = cdiv(nr, OW) + 1, ch = cdiv(min64(OW, nr), 16);
    kiln_sb_printf(b,
                   "    int64_t rs[%lld], rb[%lld], ho[%lld][%lld], nrun = 0;\n"
                   "    int nch[%lld];\n"
                   "    unsigned char vh[%lld][%lld];\n"
                   "    __mmask16 sm[%lld][%lld], lm[%lld][%lld][%lld][%lld];\n"
                   "    {\n",
                   maxr, maxr, KH, maxr, maxr, KH, maxr, maxr, ch, KW, SW, maxr, ch);
    emit_runs_open(b, P, OW);
    kiln_sb_printf(b,
                   "            rb[nrun] = img * %lld + ow * %lld - %lld;\n"
                   "            nch[nrun] = (int)((len + 15) / 16);\n"
                   "            for (int64_t i = 0; i < %lld; i++) {\n"
                   "                const int64_t ih = oh * %lld - %lld + i * %lld;\n"
                   "                vh[i][nrun] = ih >= 0 && ih < %lld;\n"
                   "                ho[i][nrun] = ih * %lld;\n"
                   "            }\n"
                   "            for (int64_t k = 0; k < %lld; k++) {\n"
                   "                const int64_t left = len - 16 * k;\n"
                   "                sm[nrun][k] = (__mmask16)(left >= 16 ? 0xFFFFu : left > 0 ? (1u << left) - 1u : 0u);\n"
                   "                for (int64_t jj = 0; jj < %lld; jj++)\n"
                   "                    for (int64_t h = 0; h < %lld; h++) {\n"
                   "                        /* lane t of load h reads iw = a + t: the chunk's outputs\n"
                   "                         * u = (16h + t) / stride that exist, inside the image */\n"
                   "                        const int64_t a = (ow + 16 * k) * %lld - %lld + jj * %lld + 16 * h;\n"
                   "                        int64_t lo = -a > 0 ? -a : 0, hi = %lld - a;\n"
                   "                        const int64_t need = left * %lld - 16 * h;\n"
                   "                        if (hi > need) hi = need;\n"
                   "                        if (hi > 16) hi = 16;\n"
                   "                        if (lo > 16) lo = 16;\n"
                   "                        lm[jj][h][nrun][k] = (__mmask16)(hi > lo ? ((1u << hi) - 1u) & ~((1u << lo) - 1u) : 0u);\n"
                   "                    }\n"
                   "            }\n",
                   C * HW, SW, PW, KH, SH, PH, DH, H, W, ch, KW, SW, SW, PW, DW, W, SW);
    emit_runs_close(b, OH);
    kiln_sb_printf(b,
                   "    }\n"
                   "    const int64_t r0 = %lld + k0;\n"
                   "    int64_t c = r0 / %lld, i = r0 %% %lld / %lld, jj = r0 %% %lld;\n"
                   "    const __m512 z = _mm512_setzero_ps();\n"
                   "%s"
                   "    for (int64_t q = 0; q < kc; q++) {\n"
                   "        float *restrict d = dst + q * w;\n"
                   "        const float *xc = x + c * %lld + jj * %lld;\n"
                   "        for (int64_t m = 0; m < nrun; m++) {\n"
                   "            float *restrict dd = d + rs[m];\n"
                   "            if (!vh[i][m]) {\n"
                   "                for (int k = 0; k < nch[m]; k++) _mm512_mask_storeu_ps(dd + 16 * k, sm[m][k], z);\n"
                   "                continue;\n"
                   "            }\n"
                   "            const float *src = xc + rb[m] + ho[i][m];\n"
                   "            for (int k = 0; k < nch[m]; k++)\n"
                   "%s"
                   "        }\n"
                   "        for (int64_t e = n; e < w; e++) d[e] = 0.0f;\n",
                   R0, KK, KK, KW, KW,
                   SW == 1 ? ""
                           : "    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, "
                             "12, 10, 8, 6, 4, 2, 0);\n",
                   HW, DW,
                   SW == 1 ? "                _mm512_mask_storeu_ps(dd + 16 * k, sm[m][k],\n"
                             "                                      _mm512_maskz_loadu_ps(lm[jj][0][m][k], src + 16 * k));\n"
                           : "                _mm512_mask_storeu_ps(dd + 16 * k, sm[m][k],\n"
                             "                    _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lm[jj][0][m][k], src + 32 * k), ev,\n"
                             "                                           _mm512_maskz_loadu_ps(lm[jj][1][m][k], src + 32 * k + 16)));\n");
    emit_next_tap(b, KW, KH);
    kiln_sb_puts(b, "}\n\n");
}

void kiln_emit_im2col_packb(kiln_sbuf *b, const char *name, const kiln_kim2col *g, int tb,
                            int nr, const char *ximg, const kiln_cg_target *t)
{
    kiln_isa isa = t->isa;
    long long C = g->C, H = g->H, W = g->W, KH = g->kh, KW = g->kw;
    long long SH = g->sh, SW = g->sw, PH = g->ph, PW = g->pw, DH = g->dh, DW = g->dw;
    long long OH = g->OH, OW = g->OW, R0 = g->r0;
    kiln_sb_printf(b,
                   "/* %s: op(B)[k, j] = cols[%lld + %s] of im2col(x) (x [%lld, %lld, %lld, %lld],\n"
                   " * kernel %lldx%lld, stride %lldx%lld, padding %lldx%lld, dilation %lldx%lld;\n"
                   " * cols[(c*%lld + i)*%lld + j, (n*%lld + oh)*%lld + ow] = x[n, c, oh*%lld - %lld + i*%lld,\n"
                   " * ow*%lld - %lld + j*%lld], 0 outside): rows k0..k0+kc, columns j0..j0+n into\n"
                   " * dst[k*w + e], zero for n <= e < w. Implicit im2col (passes/fuse.h)%s. */\n"
                   "static inline void %s(void *ctx, float *restrict dst, int64_t k0, int64_t kc,\n"
                   "    int64_t j0, int64_t n, int64_t w)\n{\n"
                   "    const float *restrict x = %s;\n",
                   name, R0, tb ? "j, k" : "k, j", (long long)g->N, C, H, W, KH, KW, SH, SW, PH, PW,
                   DH, DW, KH, KW, OH, OW, SH, PH, DH, SW, PW, DW,
                   tb ? ": the n rows of cols into this thread's kiln_gemm_pa (free while B is\n"
                        " * packed), then transposed into dst by kiln_gemm_pack_t"
                      : "",
                   name, ximg);
    if (!tb && (SW == 1 || SW == 2) && isa == KILN_ISA_AVX512) {
        emit_packb_runs_avx512(b, g, nr);
        return;
    }
    if (!tb) {
        /* the panel's columns split into runs along output rows once; then
         * per row (a tap of a channel) each run is a copy of an image row's
         * inside (contiguous with stride 1), zeros in the padding */
        long long P = g->OH * g->OW, HW = g->H * g->W, KK = g->kh * g->kw;
        kiln_sb_printf(b,
                       "    int64_t rs[%d], rl[%d], rb[%d], rh[%d], rw[%d], nrun = 0;\n"
                       "    {\n",
                       nr, nr, nr, nr, nr);
        emit_runs_open(b, P, OW);
        kiln_sb_printf(b,
                       "            rl[nrun] = len;\n"
                       "            rb[nrun] = img * %lld;\n"
                       "            rh[nrun] = oh * %lld;\n"
                       "            rw[nrun] = ow * %lld;\n",
                       C * HW, SH, SW);
        emit_runs_close(b, OH);
        kiln_sb_printf(b,
                       "    }\n"
                       "    const int64_t r0 = %lld + k0;\n"
                       "    int64_t c = r0 / %lld, i = r0 %% %lld / %lld, jj = r0 %% %lld;\n"
                       "    for (int64_t q = 0; q < kc; q++) {\n"
                       "        float *restrict d = dst + q * w;\n"
                       "        const int64_t oi = i * %lld - %lld, oj = jj * %lld - %lld;\n"
                       "        const float *restrict xc = x + c * %lld;\n"
                       "        for (int64_t m = 0; m < nrun; m++) {\n"
                       "            const int64_t len = rl[m], ih = rh[m] + oi;\n"
                       "            float *restrict dd = d + rs[m];\n"
                       "            if (ih < 0 || ih >= %lld) {\n"
                       "                for (int64_t u = 0; u < len; u++) dd[u] = 0.0f;\n"
                       "                continue;\n"
                       "            }\n"
                       "            const float *restrict src = xc + rb[m] + ih * %lld;\n"
                       "            const int64_t iw0 = rw[m] + oj;\n",
                       R0, KK, KK, KW, KW, DH, PH, DW, PW, HW, H, W);
        /* (stride 1 and 2 on AVX-512: emit_packb_runs_avx512); a run inside
         * the image is a plain (strided) copy */
        kiln_sb_printf(b,
                       "            if (iw0 >= 0 && iw0 + (len - 1) * %lld < %lld) {\n"
                       "                for (int64_t u = 0; u < len; u++) dd[u] = src[iw0 + u * %lld];\n"
                       "                continue;\n"
                       "            }\n",
                       SW, W, SW);
        emit_row_copy(b, "            ", W, SW);
        kiln_sb_puts(b, "        }\n"
                        "        for (int64_t e = n; e < w; e++) d[e] = 0.0f;\n");
        emit_next_tap(b, KW, KH);
        kiln_sb_puts(b, "}\n\n");
        return;
    }
    kiln_sb_puts(b, "    float *restrict t = kiln_gemm_pa;\n");
    emit_im2col_rows(b, g, "n", "j0", "k0", "kc", "t + q * kc", NULL);
    kiln_sb_puts(b, "    kiln_gemm_pack_t(dst, t, kc, kc, n, w);\n}\n\n");
}

/* ---- the tile cache ---- */

/* $XDG_CACHE_HOME/kiln/gemm-tiles, else $HOME/.cache/kiln/gemm-tiles; the
 * directory in dir. 0 when neither variable is set. */
static int cache_path(char *dir, size_t dlen, char *file, size_t flen)
{
    const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int n;
    if (x && *x) n = snprintf(dir, dlen, "%s/kiln", x);
    else if (h && *h) n = snprintf(dir, dlen, "%s/.cache/kiln", h);
    else return 0;
    if (n < 0 || (size_t)n >= dlen) return 0;
    n = snprintf(file, flen, "%s/gemm-tiles", dir);
    return n > 0 && (size_t)n < flen;
}

static int ilog2(int64_t x)
{
    int l = 0;
    while (x > 1) {
        x >>= 1;
        l++;
    }
    return l;
}

/* The cache key: the ISA and the shape's class (each extent by octave, and
 * the transposes), e.g. "avx512 m7n9k9t01". */
static void shape_key(const kiln_cg_target *t, const kiln_gemm_shape *s, char *key, size_t len)
{
    snprintf(key, len, "%s m%dn%dk%dt%d%d", kiln_isa_name(t->isa), ilog2(s->M), ilog2(s->N),
             ilog2(s->K), s->ta != 0, s->tb != 0);
}

/* A cache line: "<isa> <class> <mr> <nr> <mc> <kc> <nc> [comment]". Returns 1
 * and the tiles when the line is well-formed. */
static int parse_line(const char *line, char *key, size_t klen, kiln_gemm_tiles *o)
{
    char isa[16], cls[48];
    long long mc, kc, nc;
    if (sscanf(line, "%15s %47s %d %d %lld %lld %lld", isa, cls, &o->mr, &o->nr, &mc, &kc, &nc) !=
        7)
        return 0;
    if (isa[0] == '#' || mc < 1 || kc < 1 || nc < 1) return 0;
    o->mc = mc;
    o->kc = kc;
    o->nc = nc;
    snprintf(key, klen, "%s %s", isa, cls);
    return 1;
}

void kiln_gemm_tiles_cached(const kiln_cg_target *t, const kiln_gemm_shape *s, kiln_gemm_tiles *out)
{
    char dir[4096], file[4200], want[80], key[80], line[256];
    kiln_gemm_tiles_model(t, s, out);
    if (!cache_path(dir, sizeof dir, file, sizeof file)) return;
    FILE *f = fopen(file, "r");
    if (!f) return;
    shape_key(t, s, want, sizeof want);
    kiln_gemm_tiles c;
    while (fgets(line, sizeof line, f))
        if (parse_line(line, key, sizeof key, &c) && !strcmp(key, want) &&
            in_menu(t->isa, c.mr, c.nr)) {
            gplan p;
            fit(t, s, &c, &p);
            out->mr = p.mr;
            out->nr = p.nr;
            out->mc = p.mc;
            out->kc = p.kc;
            out->nc = p.nc;
        }
    fclose(f);
}

/* Writes the cache with `key`'s line replaced by (or added as) `newline`: a
 * temporary file in the same directory, renamed over the old one. */
static kiln_status cache_store(const char *key, const char *newline, FILE *log)
{
    char dir[4096], file[4200], tmp[4300], line[256], k[80];
    if (!cache_path(dir, sizeof dir, file, sizeof file)) {
        if (log) fprintf(log, "gemm tune: no cache directory (set XDG_CACHE_HOME or HOME)\n");
        return KILN_ERR_IO;
    }
    /* mkdir -p of the directory */
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(dir, 0755);
            *p = '/';
        }
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "%s.XXXXXX", file);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        if (log) fprintf(log, "gemm tune: cannot create %s: %s\n", tmp, strerror(errno));
        return KILN_ERR_IO;
    }
    FILE *w = fdopen(fd, "w");
    if (!w) {
        close(fd);
        unlink(tmp);
        return KILN_ERR_IO;
    }
    fchmod(fd, 0644);
    FILE *r = fopen(file, "r");
    int header = 0;
    if (r) {
        kiln_gemm_tiles c;
        while (fgets(line, sizeof line, r)) {
            if (parse_line(line, k, sizeof k, &c) && !strcmp(k, key)) continue;
            if (line[0] == '#') header = 1;
            fputs(line, w);
            if (!strchr(line, '\n')) fputc('\n', w);
        }
        fclose(r);
    }
    if (!header)
        fputs("# kiln GEMM tiles (kiln bench gemm --tune): isa class mr nr mc kc nc # measured\n",
              w);
    fputs(newline, w);
    int bad = ferror(w);
    if (fclose(w) != 0 || bad || rename(tmp, file) != 0) {
        if (log) fprintf(log, "gemm tune: cannot write %s: %s\n", file, strerror(errno));
        unlink(tmp);
        return KILN_ERR_IO;
    }
    return KILN_OK;
}

/* ---- the tuning search ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define TUNE_MAX 24

typedef void (*cand_fn)(int i, const float *A, const float *B, float *C, const kiln_rt *rt);

/* Adds tiles `c` (fitted) unless an equal candidate is already there. */
static void add_cand(const kiln_cg_target *t, const kiln_gemm_shape *s, kiln_gemm_tiles c,
                     kiln_gemm_tiles *v, int *n)
{
    gplan p;
    fit(t, s, &c, &p);
    kiln_gemm_tiles f = {p.mr, p.nr, p.mc, p.kc, p.nc};
    for (int i = 0; i < *n; i++)
        if (!memcmp(&v[i], &f, sizeof f)) return;
    if (*n < TUNE_MAX) v[(*n)++] = f;
}

/* Compiles candidates v[0..n) into one object and times them round-robin:
 * each's best time (seconds per call) into secs[], logged; the fastest's
 * index in *best. */
static kiln_status time_cands(const kiln_cg_target *t, const kiln_gemm_shape *s,
                              const kiln_gemm_tiles *v, int n, kiln_pool *pool, double *secs,
                              int *best, FILE *log)
{
    kiln_sbuf b = {0};
    kiln_sb_puts(&b, "#include <stdint.h>\n"
                     "typedef struct kiln_rt {\n    void *pool;\n"
                     "    void (*parallel_for)(void *pool, int64_t n, void (*fn)(void *, int64_t, "
                     "int64_t), void *ctx);\n} kiln_rt;\n\n");
    kiln_emit_gemm_prelude(&b, t);
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "cand%d", i);
        kiln_emit_gemm(&b, name, s, t, &v[i], NULL);
    }
    kiln_sb_puts(&b, "void kiln_gemm_cand(int i, const float *A, const float *B, float *C,\n"
                     "    const kiln_rt *rt)\n{\n    switch (i) {\n");
    for (int i = 0; i < n; i++)
        kiln_sb_printf(&b, "    case %d: cand%d(A, B, C, rt, 0); break;\n", i, i);
    kiln_sb_puts(&b, "    }\n}\n");
    if (b.oom) {
        free(b.p);
        return KILN_ERR_NOMEM;
    }
    kiln_so *so = NULL;
    int cached = 0;
    double csecs = 0;
    char *err = NULL;
    kiln_status st = kiln_cc_load(b.p, NULL, &so, &cached, &csecs, &err);
    free(b.p);
    if (st) {
        if (log) fprintf(log, "gemm tune: %s\n", err ? err : "compile failed");
        free(err);
        return st;
    }
    cand_fn f = NULL;
    *(void **)&f = kiln_so_sym(so, "kiln_gemm_cand");
    int64_t arows = s->ta ? s->K : s->M, brows = s->tb ? s->N : s->K;
    size_t na = (size_t)(arows * s->lda), nb = (size_t)(brows * s->ldb),
           nc = (size_t)(s->M * s->ldc);
    float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B), *C = malloc(nc * sizeof *C),
          *C0 = malloc(nc * sizeof *C0);
    st = !f ? KILN_ERR_INTERNAL : A && B && C && C0 ? KILN_OK : KILN_ERR_NOMEM;
    if (!st) {
        uint32_t r = 12345;
        for (size_t i = 0; i < na; i++) A[i] = (float)((r = r * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
        for (size_t i = 0; i < nb; i++) B[i] = (float)((r = r * 1664525u + 1013904223u) >> 8) * 0x1p-24f - 0.5f;
        kiln_rt rt = kiln_pool_rt(pool);
        double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;
        int reps = (int)(2e7 / flops) + 1; /* calls per measurement: >= ~0.2 ms */
        for (int i = 0; i < n; i++) {
            secs[i] = 1e30;
            f(i, A, B, C, &rt); /* warm up; every candidate computes the same bits */
            if (i == 0) memcpy(C0, C, nc * sizeof *C);
            for (size_t e = 0; e < nc && !st; e++)
                if (memcmp(&C[e], &C0[e], sizeof *C)) st = KILN_ERR_INTERNAL;
        }
        if (st && log) fprintf(log, "gemm tune: candidates disagree (a kiln bug)\n");
        /* KILN_GEMM_TUNE_SECONDS per candidate (default 0.5), at least 3 rounds */
        const char *env = getenv("KILN_GEMM_TUNE_SECONDS");
        double per = env && atof(env) > 0 ? atof(env) : 0.5;
        double t_end = now_seconds() + per * n;
        for (int round = 0; !st && (round < 3 || (now_seconds() < t_end && round < 1000)); round++)
            for (int i = 0; i < n; i++) {
                double t0 = now_seconds();
                for (int r2 = 0; r2 < reps; r2++) f(i, A, B, C, &rt);
                double dt = (now_seconds() - t0) / reps;
                if (dt < secs[i]) secs[i] = dt;
            }
    }
    *best = 0;
    for (int i = 0; !st && i < n; i++) {
        if (secs[i] < secs[*best]) *best = i;
        if (log)
            fprintf(log, "  %2dx%-2d mc %4lld kc %4lld nc %5lld: %8.1f GFLOPS\n", v[i].mr, v[i].nr,
                    (long long)v[i].mc, (long long)v[i].kc, (long long)v[i].nc,
                    2e-9 * (double)s->M * (double)s->N * (double)s->K / secs[i]);
    }
    free(A);
    free(B);
    free(C);
    free(C0);
    kiln_so_close(so);
    return st;
}

kiln_status kiln_gemm_tune(const kiln_cg_target *t, const kiln_gemm_shape *s, int threads,
                           kiln_gemm_tiles *best, FILE *log)
{
    if (!t || !s || !best || s->M < 1 || s->N < 1 || s->K < 1 || s->lda < (s->ta ? s->M : s->K) ||
        s->ldb < (s->tb ? s->K : s->N) || s->ldc < s->N)
        return KILN_ERR_INVALID;
    kiln_pool *pool = kiln_pool_new(threads < 1 ? 1 : threads);
    if (!pool) return KILN_ERR_NOMEM;
    kiln_gemm_tiles v[TUNE_MAX], model;
    double secs[TUNE_MAX];
    int n = 0, nm;
    const ukr_shape *m = menu(t->isa, &nm);
    kiln_gemm_tiles_model(t, s, &model);
    double flops = 2.0 * (double)s->M * (double)s->N * (double)s->K;

    /* round 1: every micro-kernel with the model's blocking */
    add_cand(t, s, model, v, &n);
    for (int i = 0; i < nm; i++) {
        kiln_gemm_tiles c = model;
        c.mr = m[i].mr;
        c.nr = m[i].nr;
        add_cand(t, s, c, v, &n);
    }
    int bi = 0, b2 = 0;
    kiln_status st = time_cands(t, s, v, n, pool, secs, &bi, log);
    /* round 2: the best kernel with other cache blocks */
    kiln_gemm_tiles w[TUNE_MAX];
    int n2 = 0;
    static const int kcs[] = {128, 192, 256, 384, 512}, mcs[] = {1, 4, 8, 16, 32};
    for (size_t i = 0; !st && i < 1 + 2 * sizeof kcs / sizeof kcs[0]; i++) {
        kiln_gemm_tiles c = v[bi];
        if (i >= 1 && i <= 5) c.kc = kcs[i - 1];
        if (i > 5) c.mc = (int64_t)mcs[i - 6] * c.mr;
        add_cand(t, s, c, w, &n2);
    }
    if (!st) st = time_cands(t, s, w, n2, pool, secs, &b2, log);
    if (!st) {
        *best = w[b2];
        char key[80], line[256];
        shape_key(t, s, key, sizeof key);
        snprintf(line, sizeof line, "%s %d %d %lld %lld %lld # %.1f GFLOPS, %lldx%lldx%lld, %d threads\n",
                 key, best->mr, best->nr, (long long)best->mc, (long long)best->kc,
                 (long long)best->nc, flops / secs[b2] * 1e-9, (long long)s->M, (long long)s->N,
                 (long long)s->K, threads);
        if (log) fprintf(log, "gemm tune: %s", line);
        st = cache_store(key, line, log);
    }
    kiln_pool_free(pool);
    return st;
}
