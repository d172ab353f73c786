/* codegen/gemm.h — the generator of packed, register-blocked f32 GEMMs.
 *
 * The C emitter (codegen/emit_c.c) writes the kernel of a matmul group as a
 * call of a GEMM function that this generator writes into the same
 * translation unit, specialised for the shape and the target:
 *
 *   C[i*ldc + j] = sum_k op(A)[i,k] * op(B)[k,j]     0 <= i < M, 0 <= j < N
 *
 * op(A)[i,k] = A[i*lda + k], or A[k*lda + i] when ta; op(B)[k,j] =
 * B[k*ldb + j], or B[j*ldb + k] when tb. The loop nest is the BLIS one
 * (jc over NC columns, pc over KC of the sum, ic over MC rows, then the
 * micro-tiles jr/ir), with B packed into contiguous NR-column panels, A
 * packed into MR-row panels or read in place, and an MR x NR micro-kernel
 * in the target's vector intrinsics (FMA); remainders of any size go through
 * the same kernel on zero-padded panels. Each C element is the f32 chain
 * c = 0, c = fma(op(A)[i,k], op(B)[k,j], c) for k = 0, 1, ..., K-1 (a
 * multiply and an add on the scalar target): a KC block after the first
 * loads the partial sums of C into its accumulators, so the bits depend
 * neither on the tiles nor on the number of threads.
 *
 * Fused tail: when `epi` is not NULL the caller has defined, before the GEMM
 * function,
 *     static inline void EPI(void *ctx, int64_t i, int64_t j0, int64_t j1);
 * and the GEMM calls it once for every row segment C[i, j0..j1) whose sums
 * are final (after the last KC block wrote them), while the segment is still
 * in cache; EPI may rewrite C there and store other outputs at (i, j).
 * Every (i, j) is covered exactly once. Segments of different rows, and of
 * the same row, may be passed concurrently from different threads.
 *
 * Threads: the generated function is
 *     static void NAME(const float *A, const float *B, float *C,
 *                      const kiln_rt *rt, void *epi_ctx);
 * it splits C into tasks with rt->parallel_for (codegen/codegen.h): NR
 * column panels that each pack their own B (when A is not transposed, C has
 * at least 8 panels and A fits in half of L2: a batch times a layer), else
 * MR row panels sharing a B packed by all first. Packing buffers are the
 * prelude's, _Thread_local and 64-byte aligned, a fixed size per target
 * (2.5 MiB per thread on vector targets) that every tiling is fitted to.
 * The function allocates nothing and returns once C is complete; it may be
 * called from several threads at once (each caller's packed B is its own).
 * See codegen/gemm.c for the details.
 */
#ifndef KILN_CODEGEN_GEMM_H
#define KILN_CODEGEN_GEMM_H

#include "codegen/target.h"
#include "ir/kernel.h"
#include "ir/util.h"

#include <stdio.h>

typedef struct kiln_gemm_shape {
    int64_t M, N, K;
    int ta, tb;
    int64_t lda, ldb, ldc; /* elements between rows of the stored matrices */
} kiln_gemm_shape;

typedef struct kiln_gemm_tiles {
    int mr, nr;         /* register tile: MR rows x NR columns (NR a multiple of the vector);
                           one of the target's micro-kernels, else its default one is used */
    int64_t mc, kc, nc; /* cache blocks: rows of A, rows of K, columns of B packed at a time */
} kiln_gemm_tiles;

/* Tiles from the target's registers and caches (an analytical model: the
 * micro-kernel with the least padded work for the shape, weighted by its
 * measured speed; a KC x NR panel of B about 1.5x L1, an MC x KC block of A
 * in a quarter of L2, NC as wide as the B buffer allows), fitted to the shape
 * (blocks balanced, within the extents and the buffers). Fitting is
 * idempotent. A tile search may override it (kiln_gemm_tiles_cached). */
void kiln_gemm_tiles_model(const kiln_cg_target *t, const kiln_gemm_shape *s, kiln_gemm_tiles *out);

/* Tiles found by `kiln bench gemm --tune` for this target and shape class,
 * read from the cache file ($XDG_CACHE_HOME/kiln/gemm-tiles, else
 * $HOME/.cache/kiln/gemm-tiles), fitted to s; the model's when none is
 * cached. The file is text, one line per class:
 *     avx512 m7n9k9t01 8 48 128 264 528 # comment
 * (ISA, class: floor(log2) of M, N and K and the transposes; mr nr mc kc
 * nc); lines that do not parse or name no micro-kernel of the ISA are
 * ignored, the last line of a class wins. */
void kiln_gemm_tiles_cached(const kiln_cg_target *t, const kiln_gemm_shape *s, kiln_gemm_tiles *out);

/* The tile search behind `kiln bench gemm --tune`: compiles candidate
 * tilings for shape s (every micro-kernel of the target's menu with the
 * model's blocking, then the fastest with other KC and MC) through
 * kiln_cc_load, times them round-robin on a pool of `threads` threads (the
 * best of rounds over about half a second per candidate, or
 * $KILN_GEMM_TUNE_SECONDS), checks that they all compute the same bits, and
 * writes the fastest to the cache file for s's class (a temporary file
 * renamed over it; concurrent tuners: the last one wins), in *best. Progress
 * and timings go to `log` when not NULL. KILN_ERR_INVALID for a bad shape,
 * kiln_cc_load's status when compiling fails (the message in `log`),
 * KILN_ERR_IO when the cache cannot be written, KILN_ERR_NOMEM,
 * KILN_ERR_INTERNAL if candidates disagree. */
kiln_status kiln_gemm_tune(const kiln_cg_target *t, const kiln_gemm_shape *s, int threads,
                           kiln_gemm_tiles *best, FILE *log);

/* The target's micro-kernels, packing routines and buffers: written once
 * per translation unit, before any GEMM function. Needs <stdint.h> and the
 * kiln_rt declaration, which the translation unit already has; includes
 * <string.h> and the ISA's intrinsics header (<immintrin.h>, <arm_neon.h>). */
void kiln_emit_gemm_prelude(kiln_sbuf *b, const kiln_cg_target *t);

/* A GEMM function `name` for shape s (see above) with `tiles` fitted to it
 * (any values work; kiln_gemm_tiles_cached's are the ones to use). epi: NULL
 * or the name of the caller's tail function. An invalid shape (an extent
 * < 1, a leading dimension shorter than its rows) writes an #error line. */
void kiln_emit_gemm(kiln_sbuf *b, const char *name, const kiln_gemm_shape *s,
                    const kiln_cg_target *t, const kiln_gemm_tiles *tiles, const char *epi);

/* kiln_emit_gemm with a caller-defined packer of op(B) (NULL: B packed from
 * its stored matrix). The caller has defined, before the GEMM function,
 *     static inline void PACKB(void *ctx, float *dst, int64_t k0, int64_t kc,
 *                              int64_t j0, int64_t n, int64_t w);
 * which writes op(B)[k0 + k, j0 + e] to dst[k*w + e] for k < kc, e < n, and
 * 0.0f for n <= e < w (w: the micro-kernel's NR; the layout
 * kiln_gemm_pack_n/_t write); ctx is the GEMM function's epi_ctx. The B
 * argument of the GEMM function is then not read; the shape (ldb included)
 * still describes op(B). The bits of C are those of the stored path when
 * PACKB writes the same values. May be called from several threads at once
 * (different dst); it may use the calling thread's kiln_gemm_pa as scratch
 * for n*kc floats (the GEMM packs A only after B, and keeps KC x NR within
 * it when a PACKB is named). */
void kiln_emit_gemm_packb(kiln_sbuf *b, const char *name, const kiln_gemm_shape *s,
                          const kiln_cg_target *t, const kiln_gemm_tiles *tiles, const char *epi,
                          const char *packb);

/* kiln_emit_gemm_packb, or with PACKA named (packb NULL, A not transposed)
 * a GEMM whose op(A) is not read from A but made by
 *     void PACKA(void *ctx, float *dst, int64_t i0, int64_t m, int64_t k0,
 *                int64_t kc, int64_t ld)
 * (ctx: EPI's), which writes rows i0..i0+m, columns k0..k0+kc of op(A) to
 * dst[i*ld + k] (ld = the GEMM's KC, kiln_gemm_tiles_kc) in the calling
 * thread's kiln_gemm_pa; the GEMM then reads that block as it reads an A in
 * place (rows past m up to MR zeroed). PACKB's form (ctx, dst, k0, kc, j0,
 * n, w) is PACKA's, rows and columns swapped: an im2col PACKB of a column
 * matrix, called with nr = KC, is the same matrix's PACKA. */
void kiln_emit_gemm_packab(kiln_sbuf *b, const char *name, const kiln_gemm_shape *s,
                           const kiln_cg_target *t, const kiln_gemm_tiles *tiles, const char *epi,
                           const char *packb, const char *packa);

/* The NR of the micro-kernel the GEMM for s with `tiles` uses (the w its
 * PACKB is called with). */
int kiln_gemm_tiles_nr(const kiln_cg_target *t, const kiln_gemm_shape *s,
                       const kiln_gemm_tiles *tiles);

/* The KC (the K of one block) the GEMM for s with `tiles` uses. */
int64_t kiln_gemm_tiles_kc(const kiln_cg_target *t, const kiln_gemm_shape *s,
                           const kiln_gemm_tiles *tiles);

/* A PACKB (see kiln_emit_gemm_packb) named `name` for implicit im2col: op(B)
 * is the column matrix g describes (ir/kernel.h), transposed when tb, with
 * B's rows from g->r0; the image is the `const float *` C expression ximg
 * of `ctx`. Writes exactly the values im2col stores (copies of x, +0.0f in
 * the padding). nr: the largest w it will be called with; t: the target
 * (AVX-512: masked 16-float copies). Needs the GEMM prelude before it. */
void kiln_emit_im2col_packb(kiln_sbuf *b, const char *name, const kiln_kim2col *g, int tb,
                            int nr, const char *ximg, const kiln_cg_target *t);

#endif
