/* codegen/emit_llvm_gemm.c — KS_GEMM statements as LLVM IR: a register-
 * blocked f32 GEMM with LLVM vector types, then the statement's epilogue.
 *
 *   C[i*ldc + j] = sum_k op(A)[i,k] * op(B)[k,j]     0 <= i < M, 0 <= j < N
 *
 * (op and the strides as codegen/gemm.h defines them.)
 *
 * Expects: a GEMM statement at the kernel function's top level, f32
 * buffers, extents >= 1 and leading dimensions that fit (else kl_fail).
 * Guarantees:
 *   - every C element is the f32 chain c = 0, c = fma(op(A)[i,k],
 *     op(B)[k,j], c) for k = 0, 1, ..., K-1 (llvm.fma where the target has
 *     FMA, else a multiply and an add — the C backend's GEMM computes the
 *     same chain), so its bits depend neither on the tiles, nor on the
 *     blocking, nor on the thread count; a KC block after the first resumes
 *     the chain from the partial sums stored in C;
 *   - the register tile is MR x NR = MR rows x 2 vectors of VW floats (VW
 *     = 16 on AVX-512 hosts, 8 with AVX/AVX2, else 4; MR = 12 with 16
 *     lanes and 32 registers, else 6; at most M), accumulators in vector
 * registers; remainders of any M and N use the same code with MR' < MR rows and masked vector loads
 * and stores (llvm.masked.load / llvm.masked.store) of the last vector, and K runs in blocks of KC;
 *   - B is packed (a per-thread stack buffer of KC x NC floats, at most 256
 *     KiB, NR-column panels, zero padded) when transposed, or when a task
 *     of the column-first split has enough rows to pay for it; else read in
 *     place (rows first, every task would pack all of B again);
 *   - the epilogue (the statement's body, with var_i and var_j bound) runs
 *     once for every (i, j) after C[i, j] is final: per MR-row panel and
 *     NC-column block, right after the panel's last K block, while it is in
 *     cache; its locals are its own, the locals it only reads are passed by
 *     value;
 *   - the work is split into about 8 tasks, (column block, row block)
 *     pairs of whole NR-column and MR-row panels, columns first (a task
 *     packs only its own columns of B), except when all of op(B) is one
 *     small block (K <= KC, and K x N within the pack buffer, or B not
 *     transposed and at most 1 MiB, then read in place from L2: a weight
 *     gradient, K the batch): then rows first, each task over whole rows of
 *     C, so an epilogue (AdamW's update of four arrays) streams along full
 *     rows and no two tasks write one cache line (the column-striped split
 *     cost 20-30% in those GEMMs); run through rt->parallel_for when the
 *     GEMM has enough work (else called inline); a chunk of consecutive
 *     tasks packs each of its column blocks once.
 */
#include "codegen/emit_llvm_internal.h"

#if KILN_HAVE_LLVM

#include <stdlib.h>
#include <string.h>

#define PACK_BYTES (256 * 1024)
#define MAX_TASKS 8
#define PAR_MIN_FMAS (1 << 16)
#define KUNROLL 4 /* the micro-kernel's k loop, unrolled this much (no more: code size) */

typedef struct gplan {
    const kiln_kgemm *gm;
    int vw, nv, nr, mr;
    int64_t kc;
    int64_t nc, ncb; /* column blocks: ncb blocks of NC columns (whole NR panels) */
    int64_t mb, nrb; /* row blocks: nrb blocks of MB rows (whole MR panels) */
    int64_t ntasks;  /* ncb * nrb, column-block major */
    bool pack;
} gplan;

typedef struct gctx {
    kl_fn *f; /* the GEMM's run function (inlined into its chunk function) */
    kl_mod *m;
    const gplan *p;
    LLVMTypeRef vt; /* <VW x float> */
    LLVMValueRef A, B, C, pbuf;
    LLVMValueRef acc[16][2];
} gctx;

static int64_t cdiv(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* Tiles, blocks and tasks. Tasks are (column block, row block) pairs: a
 * task packs only its column block of B, so splitting N costs no extra
 * packing while every row block packs all of B again; so N is split first
 * (into up to MAX_TASKS blocks, at most PACK_BYTES of packed B each) and M
 * only for the tasks still missing — unless all of B is one small block
 * (packing it again per row block is cheap): then M first (see the top). */
static void plan_gemm(const kl_mod *m, const kiln_kgemm *gm, gplan *p)
{
    p->gm = gm;
    p->vw = m->vw;
    p->nv = 2;
    p->nr = p->nv * p->vw;
    /* rows: 12 with 32 registers (16 lanes: 24 accumulators; 8 measured
     * 5-10% slower on the MLP's weight gradients, which read B from L2 once
     * per row panel), else 6; never more than M */
    p->mr = p->vw >= 16 ? 12 : 6;
    if (p->mr > gm->M) p->mr = (int)gm->M;
    p->kc = 16384 / (p->nr * 4);
    if (p->kc > 512) p->kc = 512;
    if (p->kc > gm->K) p->kc = gm->K;
    int64_t pm = cdiv(gm->M, p->mr), pn = cdiv(gm->N, p->nr);
    int64_t cap = PACK_BYTES / (p->kc * 4) / p->nr; /* panels per packed block */
    if (cap < 1) cap = 1;
    bool b_in_l2 = !gm->tb && gm->K * gm->N * 4 <= 4 * PACK_BYTES; /* read in place, from L2 */
    bool rows_first = p->kc >= gm->K && (pn <= cap || b_in_l2) && pm >= 2;
    if (rows_first) {
        /* all of op(B) is one small packed block (K x N, a weight gradient's
         * batch x inputs): rows first, each task over whole rows of C, so
         * its epilogue streams along full rows (AdamW reads and writes four
         * arrays there) and tasks share no cache lines; columns only for
         * the tasks still missing */
        p->nrb = pm < MAX_TASKS ? pm : MAX_TASKS;
        p->mb = cdiv(pm, p->nrb) * p->mr;
        p->nrb = cdiv(gm->M, p->mb);
        p->ncb = cdiv(MAX_TASKS, p->nrb);
        if (p->ncb > pn) p->ncb = pn;
        p->nc = cdiv(pn, p->ncb) * p->nr;
        p->ncb = cdiv(gm->N, p->nc);
    } else {
        p->ncb = pn < MAX_TASKS ? pn : MAX_TASKS;
        if (p->ncb < cdiv(pn, cap)) p->ncb = cdiv(pn, cap);
        p->nc = cdiv(pn, p->ncb) * p->nr;
        p->ncb = cdiv(gm->N, p->nc);
        p->nrb = cdiv(MAX_TASKS, p->ncb);
        if (p->nrb > pm) p->nrb = pm;
        p->mb = cdiv(pm, p->nrb) * p->mr;
        p->nrb = cdiv(gm->M, p->mb);
    }
    p->ntasks = p->ncb * p->nrb;
    /* packing B costs K x NC per task and pays off over enough rows; a
     * transposed B is always packed (its columns are strided); rows first,
     * every task would pack all of B again: it is read in place (from L2;
     * packing cost the MLP's 512x512x128 weight gradient 10-20%) */
    p->pack = gm->tb || (p->mb >= 64 && !rows_first);
}

/* ---- small IR helpers ---- */

static LLVMValueRef I(kl_mod *m, int64_t v)
{
    return kl_i64(m, v);
}
static LLVMValueRef mul_(kl_mod *m, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildNSWMul(m->b, a, b, "");
}
static LLVMValueRef add_(kl_mod *m, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildNSWAdd(m->b, a, b, "");
}
static LLVMValueRef min_(kl_mod *m, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(m->b, LLVMBuildICmp(m->b, LLVMIntSLT, a, b, ""), a, b, "");
}

static LLVMValueRef splat(gctx *G, LLVMValueRef s)
{
    kl_mod *m = G->m;
    LLVMValueRef v = LLVMBuildInsertElement(m->b, LLVMGetUndef(G->vt), s, kl_i32(m, 0), "");
    LLVMValueRef zeros = LLVMConstNull(LLVMVectorType(m->t_i32, (unsigned)G->p->vw));
    return LLVMBuildShuffleVector(m->b, v, LLVMGetUndef(G->vt), zeros, "");
}

static LLVMValueRef lane_mask(gctx *G, int lanes)
{
    kl_mod *m = G->m;
    LLVMValueRef bits[16];
    for (int i = 0; i < G->p->vw; i++)
        bits[i] = LLVMConstInt(m->t_i1, i < lanes, 0);
    return LLVMConstVector(bits, (unsigned)G->p->vw);
}

/* A vector of VW floats at p (element pointer), the first `lanes` of them
 * when lanes < VW (the others read as 0). */
static LLVMValueRef vload(gctx *G, LLVMValueRef p, int lanes, unsigned align)
{
    kl_mod *m = G->m;
    if (lanes >= G->p->vw) return kl_load(m, G->vt, p, align);
    LLVMTypeRef pty = kl_ptr(m->c, G->vt);
    LLVMTypeRef tys[2] = {G->vt, pty};
    LLVMValueRef fn = kl_intrinsic(m->m, "llvm.masked.load", tys, 2);
    LLVMTypeRef at[4] = {pty, m->t_i32, LLVMVectorType(m->t_i1, (unsigned)G->p->vw), G->vt};
    LLVMValueRef args[4] = {kl_ptr_cast(m->b, p, G->vt), kl_i32(m, 4), lane_mask(G, lanes),
                            LLVMConstNull(G->vt)};
    return kl_call(m, LLVMFunctionType(G->vt, at, 4, 0), fn, args, 4);
}

static void vstore(gctx *G, LLVMValueRef v, LLVMValueRef p, int lanes)
{
    kl_mod *m = G->m;
    if (lanes >= G->p->vw) {
        kl_store(m, v, p, 4);
        return;
    }
    LLVMTypeRef pty = kl_ptr(m->c, G->vt);
    LLVMTypeRef tys[2] = {G->vt, pty};
    LLVMValueRef fn = kl_intrinsic(m->m, "llvm.masked.store", tys, 2);
    LLVMTypeRef at[4] = {G->vt, pty, m->t_i32, LLVMVectorType(m->t_i1, (unsigned)G->p->vw)};
    LLVMValueRef args[4] = {v, kl_ptr_cast(m->b, p, G->vt), kl_i32(m, 4), lane_mask(G, lanes)};
    kl_call(m, LLVMFunctionType(m->t_void, at, 4, 0), fn, args, 4);
}

static LLVMValueRef fptr(gctx *G, LLVMValueRef base, LLVMValueRef idx)
{
    return kl_elem_ptr(G->m, base, G->m->t_f32, idx);
}

/* op(A)[i, k] */
static LLVMValueRef a_at(gctx *G, LLVMValueRef i, LLVMValueRef k)
{
    kl_mod *m = G->m;
    const kiln_kgemm *gm = G->p->gm;
    LLVMValueRef idx =
        gm->ta ? add_(m, mul_(m, k, I(m, gm->lda)), i) : add_(m, mul_(m, i, I(m, gm->lda)), k);
    return kl_load(m, m->t_f32, fptr(G, G->A, idx), 4);
}

/* op(B)[k, j] (scalar) */
static LLVMValueRef b_at(gctx *G, LLVMValueRef k, LLVMValueRef j)
{
    kl_mod *m = G->m;
    const kiln_kgemm *gm = G->p->gm;
    LLVMValueRef idx =
        gm->tb ? add_(m, mul_(m, j, I(m, gm->ldb)), k) : add_(m, mul_(m, k, I(m, gm->ldb)), j);
    return kl_load(m, m->t_f32, fptr(G, G->B, idx), 4);
}

/* ---- packing B: panel p of the block (pc, kc) x (jc, nc) at
 * pbuf[p*KC*NR + kk*NR + l] = op(B)[pc + kk, jc + p*NR + l], 0 past N ---- */

/* Rows kk in [k0, k1) of a panel whose first `valid` columns are inside
 * N, one element at a time (the others 0); k outer, so the inner loops
 * over the columns vectorize when B is not transposed. */
static void pack_scalar(gctx *G, LLVMValueRef pc, LLVMValueRef k0, LLVMValueRef k1, LLVMValueRef j0,
                        LLVMValueRef dst, int valid, bool nonempty)
{
    kl_mod *m = G->m;
    const gplan *p = G->p;
    kl_loop Lo, Li;
    kl_loop_begin(G->f, &Lo, k0, k1, nonempty);
    LLVMValueRef kk = Lo.phi;
    LLVMValueRef row = mul_(m, kk, I(m, p->nr));
    kl_loop_begin(G->f, &Li, I(m, 0), I(m, valid), true);
    LLVMValueRef v = b_at(G, add_(m, pc, kk), add_(m, j0, Li.phi));
    kl_store(m, v, fptr(G, dst, add_(m, row, Li.phi)), 4);
    kl_loop_end(G->f, &Li);
    if (valid < p->nr) {
        kl_loop_begin(G->f, &Li, I(m, valid), I(m, p->nr), true);
        kl_store(m, kl_f32(m, 0.0), fptr(G, dst, add_(m, row, Li.phi)), 4);
        kl_loop_end(G->f, &Li);
    }
    kl_loop_md(m, kl_loop_end(G->f, &Lo), false, -1);
}

/* v[0..n) as the rows of an n x n block, transposed in place: log2(n)
 * stages, each swapping the off-diagonal s x s blocks of every 2s x 2s
 * block (two-source shuffles). */
static void transpose(gctx *G, LLVMValueRef *v, int n)
{
    kl_mod *m = G->m;
    LLVMValueRef lo[16], hi[16];
    for (int s = n / 2; s >= 1; s /= 2)
        for (int i = 0; i < n; i++) {
            if (i & s) continue;
            for (int q = 0; q < n; q++) {
                lo[q] = kl_i32(m, (q & s) ? n + q - s : q);
                hi[q] = kl_i32(m, (q & s) ? n + q : q + s);
            }
            LLVMValueRef a =
                LLVMBuildShuffleVector(m->b, v[i], v[i + s], LLVMConstVector(lo, (unsigned)n), "");
            LLVMValueRef b =
                LLVMBuildShuffleVector(m->b, v[i], v[i + s], LLVMConstVector(hi, (unsigned)n), "");
            v[i] = a;
            v[i + s] = b;
        }
}

/* A panel of the block, rows [0, kc), its first `valid` columns inside N.
 * B transposed: VW x VW blocks loaded as rows of B (rows past N are 0),
 * transposed in registers, stored as rows of the panel; the last kc % VW
 * rows one element at a time. */
static void pack_panel(gctx *G, LLVMValueRef pc, LLVMValueRef kc, LLVMValueRef j0, LLVMValueRef dst,
                       int valid)
{
    kl_mod *m = G->m;
    const gplan *p = G->p;
    const kiln_kgemm *gm = p->gm;
    if (!gm->tb) {
        pack_scalar(G, pc, I(m, 0), kc, j0, dst, valid, true);
        return;
    }
    int vw = p->vw;
    LLVMValueRef nkb = LLVMBuildSDiv(m->b, kc, I(m, vw), "");
    kl_loop L;
    kl_loop_begin(G->f, &L, I(m, 0), nkb, false);
    LLVMValueRef k = mul_(m, L.phi, I(m, vw));
    for (int lb = 0; lb < p->nv; lb++) {
        LLVMValueRef v[16];
        for (int r = 0; r < vw; r++) {
            if (lb * vw + r >= valid) {
                v[r] = LLVMConstNull(G->vt);
                continue;
            }
            LLVMValueRef row = add_(m, j0, I(m, (int64_t)lb * vw + r));
            LLVMValueRef idx = add_(m, mul_(m, row, I(m, gm->ldb)), add_(m, pc, k));
            v[r] = kl_load(m, G->vt, fptr(G, G->B, idx), 4);
        }
        transpose(G, v, vw);
        for (int q = 0; q < vw; q++) {
            LLVMValueRef idx =
                add_(m, mul_(m, add_(m, k, I(m, q)), I(m, p->nr)), I(m, (int64_t)lb * vw));
            kl_store(m, v[q], fptr(G, dst, idx), 4);
        }
    }
    kl_loop_md(m, kl_loop_end(G->f, &L), false, -1);
    pack_scalar(G, pc, mul_(m, nkb, I(m, vw)), kc, j0, dst, valid, false);
}

static void pack_block(gctx *G, LLVMValueRef pc, LLVMValueRef kc, LLVMValueRef jc, LLVMValueRef nc)
{
    kl_mod *m = G->m;
    const gplan *p = G->p;
    LLVMValueRef npan = LLVMBuildSDiv(m->b, add_(m, nc, I(m, p->nr - 1)), I(m, p->nr), "");
    kl_loop L;
    kl_loop_begin(G->f, &L, I(m, 0), npan, true);
    LLVMValueRef j0 = add_(m, jc, mul_(m, L.phi, I(m, p->nr)));
    LLVMValueRef dst = fptr(G, G->pbuf, mul_(m, L.phi, I(m, p->kc * p->nr)));
    int nrem = (int)(p->gm->N % p->nr);
    if (nrem == 0) {
        pack_panel(G, pc, kc, j0, dst, p->nr);
    } else if (p->gm->N < p->nr) { /* only the partial panel */
        pack_panel(G, pc, kc, j0, dst, nrem);
    } else {
        LLVMValueRef full =
            LLVMBuildICmp(m->b, LLVMIntSLE, add_(m, j0, I(m, p->nr)), I(m, p->gm->N), "");
        LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "pack.full");
        LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "pack.part");
        LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "pack.next");
        LLVMBuildCondBr(m->b, full, bf, bp);
        LLVMPositionBuilderAtEnd(m->b, bf);
        pack_panel(G, pc, kc, j0, dst, p->nr);
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bp);
        pack_panel(G, pc, kc, j0, dst, nrem);
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bj);
    }
    kl_loop_md(m, kl_loop_end(G->f, &L), false, -1);
}

/* ---- the micro-kernel: rows [ir, ir + mr), columns [jr, jr + nvec*VW)
 * (the last vector `lanes` wide), K block [pc, pc + kc) ---- */

static LLVMValueRef fma_(gctx *G, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c)
{
    kl_mod *m = G->m;
    if (!m->fma) return LLVMBuildFAdd(m->b, LLVMBuildFMul(m->b, a, b, ""), c, "");
    LLVMTypeRef vt = G->vt;
    LLVMTypeRef at[3] = {vt, vt, vt};
    LLVMValueRef args[3] = {a, b, c};
    return kl_call(m, LLVMFunctionType(vt, at, 3, 0), kl_intrinsic(m->m, "llvm.fma", &vt, 1), args,
                   3);
}

static void tile(gctx *G, LLVMValueRef ir, LLVMValueRef jr, LLVMValueRef panel, LLVMValueRef pc,
                 LLVMValueRef kc, int mr, int nvec, int lanes)
{
    kl_mod *m = G->m;
    const gplan *p = G->p;
    const kiln_kgemm *gm = p->gm;
    int vw = p->vw;
    /* the accumulators: 0 for the first K block, else C's partial sums */
    LLVMValueRef crow[16];
    for (int r = 0; r < mr; r++)
        crow[r] = add_(m, mul_(m, add_(m, ir, I(m, r)), I(m, gm->ldc)), jr);
    LLVMBasicBlockRef bz = NULL, bl = NULL, bj = NULL;
    if (gm->K > p->kc) {
        bz = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "acc.zero");
        bl = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "acc.load");
        bj = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "acc.done");
        LLVMBuildCondBr(m->b, LLVMBuildICmp(m->b, LLVMIntEQ, pc, I(m, 0), ""), bz, bl);
        LLVMPositionBuilderAtEnd(m->b, bl);
        for (int r = 0; r < mr; r++)
            for (int v = 0; v < nvec; v++) {
                int w = v == nvec - 1 ? lanes : vw;
                LLVMValueRef old =
                    vload(G, fptr(G, G->C, add_(m, crow[r], I(m, (int64_t)v * vw))), w, 4);
                kl_store(m, old, G->acc[r][v], 0);
            }
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bz);
    }
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nvec; v++)
            kl_store(m, LLVMConstNull(G->vt), G->acc[r][v], 0);
    if (bj) {
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bj);
    }
    kl_loop L;
    kl_loop_begin(G->f, &L, I(m, 0), kc, true);
    LLVMValueRef kk = L.phi, k = add_(m, pc, kk);
    LLVMValueRef bv[2];
    for (int v = 0; v < nvec; v++) {
        if (p->pack) {
            LLVMValueRef idx = add_(m, mul_(m, panel, I(m, p->kc * p->nr)),
                                    add_(m, mul_(m, kk, I(m, p->nr)), I(m, (int64_t)v * vw)));
            bv[v] = kl_load(m, G->vt, fptr(G, G->pbuf, idx), 64 < vw * 4 ? 64 : (unsigned)vw * 4);
        } else {
            LLVMValueRef idx =
                add_(m, mul_(m, k, I(m, gm->ldb)), add_(m, jr, I(m, (int64_t)v * vw)));
            bv[v] = vload(G, fptr(G, G->B, idx), v == nvec - 1 ? lanes : vw, 4);
        }
    }
    for (int r = 0; r < mr; r++) {
        LLVMValueRef a = splat(G, a_at(G, add_(m, ir, I(m, r)), k));
        for (int v = 0; v < nvec; v++) {
            LLVMValueRef c = kl_load(m, G->vt, G->acc[r][v], 0);
            kl_store(m, fma_(G, a, bv[v], c), G->acc[r][v], 0);
        }
    }
    kl_loop_md(m, kl_loop_end(G->f, &L), false, KUNROLL);
    for (int r = 0; r < mr; r++)
        for (int v = 0; v < nvec; v++)
            vstore(G, kl_load(m, G->vt, G->acc[r][v], 0),
                   fptr(G, G->C, add_(m, crow[r], I(m, (int64_t)v * vw))),
                   v == nvec - 1 ? lanes : vw);
}

/* The tiles of a row panel ir (mr rows) across columns [jc, jc + nc). */
static void panel_tiles(gctx *G, LLVMValueRef ir, int mr, LLVMValueRef jc, LLVMValueRef nc,
                        LLVMValueRef pc, LLVMValueRef kc)
{
    kl_mod *m = G->m;
    const gplan *p = G->p;
    int64_t nrem = p->gm->N % p->nr;
    LLVMValueRef npan = LLVMBuildSDiv(m->b, add_(m, nc, I(m, p->nr - 1)), I(m, p->nr), "");
    kl_loop L;
    kl_loop_begin(G->f, &L, I(m, 0), npan, true);
    LLVMValueRef jr = add_(m, jc, mul_(m, L.phi, I(m, p->nr)));
    if (nrem == 0) {
        tile(G, ir, jr, L.phi, pc, kc, mr, p->nv, p->vw);
    } else if (p->gm->N < p->nr) { /* only the partial panel */
        int nvec = (int)((nrem + p->vw - 1) / p->vw),
            lanes = (int)(nrem - (int64_t)(nvec - 1) * p->vw);
        tile(G, ir, jr, L.phi, pc, kc, mr, nvec, lanes);
    } else {
        int nvec = (int)((nrem + p->vw - 1) / p->vw),
            lanes = (int)(nrem - (int64_t)(nvec - 1) * p->vw);
        LLVMValueRef full =
            LLVMBuildICmp(m->b, LLVMIntSLE, add_(m, jr, I(m, p->nr)), I(m, p->gm->N), "");
        LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "tile.full");
        LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "tile.part");
        LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(m->c, G->f->fn, "tile.next");
        LLVMBuildCondBr(m->b, full, bf, bp);
        LLVMPositionBuilderAtEnd(m->b, bf);
        tile(G, ir, jr, L.phi, pc, kc, mr, p->nv, p->vw);
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bp);
        tile(G, ir, jr, L.phi, pc, kc, mr, nvec, lanes);
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bj);
    }
    kl_loop_md(m, kl_loop_end(G->f, &L), false, -1);
}

/* The epilogue over rows [i0, i1), columns [j0, j1). */
static void epilogue(gctx *G, const kiln_kstmt *st, LLVMValueRef i0, LLVMValueRef i1,
                     LLVMValueRef j0, LLVMValueRef j1)
{
    kl_fn *f = G->f;
    const kiln_kernel *k = f->k;
    const kiln_kgemm *gm = G->p->gm;
    bool inner_loops = false;
    for (int32_t t = st->body; t >= 0 && t < k->nstmts; t = k->stmts[t].next)
        inner_loops |= k->stmts[t].kind != KS_STORE && k->stmts[t].kind != KS_SET;
    kl_loop Li, Lj;
    kl_loop_begin(f, &Li, i0, i1, true);
    f->var[gm->var_i] = Li.phi;
    kl_loop_begin(f, &Lj, j0, j1, true);
    f->var[gm->var_j] = Lj.phi;
    kl_stmts(f, st->body, false);
    LLVMValueRef br = kl_loop_end(f, &Lj);
    if (!inner_loops) kl_loop_vectorize(G->m, br);
    kl_loop_md(G->m, kl_loop_end(f, &Li), false, -1);
}

static bool check_gemm(kl_mod *m, const kiln_kernel *k, const kiln_kgemm *gm)
{
    if (gm->M < 1 || gm->N < 1 || gm->K < 1 || gm->lda < (gm->ta ? gm->M : gm->K) ||
        gm->ldb < (gm->tb ? gm->K : gm->N) || gm->ldc < gm->N) {
        kl_fail(m, "kernel %s: a GEMM of an invalid shape (M %lld, N %lld, K %lld)", k->name,
                (long long)gm->M, (long long)gm->N, (long long)gm->K);
        return false;
    }
    int32_t bs[3] = {gm->a, gm->b, gm->c};
    for (int i = 0; i < 3; i++)
        if (bs[i] < 0 || bs[i] >= k->nbufs || k->bufs[bs[i]].dtype != KILN_F32 ||
            k->bufs[bs[i]].node < 0) {
            kl_fail(m, "kernel %s: a GEMM operand that is not an f32 buffer", k->name);
            return false;
        }
    if (gm->var_i < 0 || gm->var_i >= k->nvars || gm->var_j < 0 || gm->var_j >= k->nvars) {
        kl_fail(m, "kernel %s: a GEMM's loop variables are out of range", k->name);
        return false;
    }
    return true;
}

void kl_emit_gemm(kl_fn *f, int32_t s)
{
    kl_mod *m = f->m;
    const kiln_kernel *k = f->k;
    const kiln_kstmt *st = &k->stmts[s];
    if (st->index < 0 || st->index >= k->ngemms) {
        kl_fail(m, "kernel %s: a GEMM statement without its GEMM", k->name);
        return;
    }
    const kiln_kgemm *gm = &k->gemms[st->index];
    if (!check_gemm(m, k, gm)) return;
    gplan p;
    plan_gemm(m, gm, &p);
    /* what the chunk function gets: A, B, C, the epilogue's buffers and the
     * locals it only reads */
    int32_t *bufs = NULL, *vals = NULL;
    int nb = 0, nv = 0;
    if (!kl_captures(f, s, &bufs, &nb, &vals, &nv)) {
        kl_fail(m, "out of memory");
        goto done;
    }
    LLVMBasicBlockRef here = LLVMGetInsertBlock(m->b);
    char name[200];
    kl_fn_name(m, name, sizeof name, LLVMGetValueName(f->fn), "g");
    char rname[220];
    snprintf(rname, sizeof rname, "%s.run", name);
    kl_fn gf;
    LLVMTypeRef rty;
    if (!kl_run_open(&gf, f, rname, bufs, nb, vals, nv, &rty)) {
        kl_fn_close(&gf);
        goto done;
    }
    gctx G = {.f = &gf, .m = m, .p = &p, .vt = LLVMVectorType(m->t_f32, (unsigned)p.vw)};
    G.A = gf.buf[gm->a];
    G.B = gf.buf[gm->b];
    G.C = gf.buf[gm->c];
    for (int r = 0; r < p.mr; r++)
        for (int v = 0; v < p.nv; v++)
            G.acc[r][v] = kl_alloca(&gf, G.vt, 0, "acc");
    if (p.pack)
        G.pbuf = kl_ptr_cast(
            gf.ab, kl_alloca(&gf, LLVMArrayType(m->t_f32, (unsigned)(p.kc * p.nc)), 64, "packed"),
            m->t_i8);
    /* tasks [lo, hi): column blocks cb of them, each over the rows of its
     * tasks (a contiguous run of row blocks) */
    LLVMValueRef lo = LLVMGetParam(gf.fn, 0), hi = LLVMGetParam(gf.fn, 1);
    LLVMValueRef nrb = I(m, p.nrb);
    LLVMValueRef cb0 = LLVMBuildSDiv(m->b, lo, nrb, "");
    LLVMValueRef cb1 =
        add_(m, LLVMBuildSDiv(m->b, LLVMBuildNSWSub(m->b, hi, I(m, 1), ""), nrb, ""), I(m, 1));
    int64_t nblocks_k = cdiv(gm->K, p.kc);
    int64_t mrem = gm->M % p.mr;
    kl_loop Ljc, Lpc, Lir;
    kl_loop_begin(&gf, &Ljc, cb0, cb1, true);
    LLVMValueRef cbase = mul_(m, Ljc.phi, nrb);
    LLVMValueRef t0 =
        LLVMBuildSelect(m->b, LLVMBuildICmp(m->b, LLVMIntSGT, lo, cbase, ""), lo, cbase, "");
    LLVMValueRef t1 = min_(m, hi, add_(m, cbase, nrb));
    LLVMValueRef r0 = mul_(m, LLVMBuildNSWSub(m->b, t0, cbase, ""), I(m, p.mb));
    LLVMValueRef r1 =
        min_(m, mul_(m, LLVMBuildNSWSub(m->b, t1, cbase, ""), I(m, p.mb)), I(m, gm->M));
    LLVMValueRef pan0 = LLVMBuildSDiv(m->b, r0, I(m, p.mr), "");
    LLVMValueRef pan1 = LLVMBuildSDiv(m->b, add_(m, r1, I(m, p.mr - 1)), I(m, p.mr), "");
    LLVMValueRef jc = mul_(m, Ljc.phi, I(m, p.nc));
    LLVMValueRef nc = min_(m, I(m, p.nc), LLVMBuildNSWSub(m->b, I(m, gm->N), jc, ""));
    kl_loop_begin(&gf, &Lpc, I(m, 0), I(m, nblocks_k), true);
    LLVMValueRef pc = mul_(m, Lpc.phi, I(m, p.kc));
    LLVMValueRef kc = min_(m, I(m, p.kc), LLVMBuildNSWSub(m->b, I(m, gm->K), pc, ""));
    LLVMValueRef last = LLVMBuildICmp(m->b, LLVMIntEQ, Lpc.phi, I(m, nblocks_k - 1), "");
    if (p.pack) pack_block(&G, pc, kc, jc, nc);
    kl_loop_begin(&gf, &Lir, pan0, pan1, false);
    LLVMValueRef ir = mul_(m, Lir.phi, I(m, p.mr));
    if (mrem == 0) {
        panel_tiles(&G, ir, p.mr, jc, nc, pc, kc);
    } else {
        LLVMValueRef full =
            LLVMBuildICmp(m->b, LLVMIntSLE, add_(m, ir, I(m, p.mr)), I(m, gm->M), "");
        LLVMBasicBlockRef bf = LLVMAppendBasicBlockInContext(m->c, gf.fn, "rows.full");
        LLVMBasicBlockRef bp = LLVMAppendBasicBlockInContext(m->c, gf.fn, "rows.part");
        LLVMBasicBlockRef bj = LLVMAppendBasicBlockInContext(m->c, gf.fn, "rows.next");
        LLVMBuildCondBr(m->b, full, bf, bp);
        LLVMPositionBuilderAtEnd(m->b, bf);
        panel_tiles(&G, ir, p.mr, jc, nc, pc, kc);
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bp);
        panel_tiles(&G, ir, (int)mrem, jc, nc, pc, kc);
        LLVMBuildBr(m->b, bj);
        LLVMPositionBuilderAtEnd(m->b, bj);
    }
    if (st->body >= 0) {
        LLVMBasicBlockRef be = LLVMAppendBasicBlockInContext(m->c, gf.fn, "epi");
        LLVMBasicBlockRef bn = LLVMAppendBasicBlockInContext(m->c, gf.fn, "epi.done");
        LLVMBuildCondBr(m->b, last, be, bn);
        LLVMPositionBuilderAtEnd(m->b, be);
        LLVMValueRef iend = min_(m, add_(m, ir, I(m, p.mr)), I(m, gm->M));
        epilogue(&G, st, ir, iend, jc, add_(m, jc, nc));
        LLVMBuildBr(m->b, bn);
        LLVMPositionBuilderAtEnd(m->b, bn);
    }
    kl_loop_md(m, kl_loop_end(&gf, &Lir), false, -1);
    kl_loop_md(m, kl_loop_end(&gf, &Lpc), false, -1);
    kl_loop_md(m, kl_loop_end(&gf, &Ljc), false, -1);
    LLVMBuildRetVoid(m->b);
    LLVMValueRef run = gf.fn;
    kl_fn_close(&gf);
    /* in the kernel: the tasks on the pool, or inline when small */
    LLVMValueRef ctx;
    LLVMValueRef chunk = kl_chunk_make(f, here, name, run, rty, bufs, nb, vals, nv, &ctx);
    if (!chunk) goto done;
    double fmas = (double)gm->M * (double)gm->N * (double)gm->K;
    if (p.ntasks >= 2 && fmas >= PAR_MIN_FMAS) {
        kl_call_pfor(f, I(m, p.ntasks), chunk, ctx);
    } else {
        LLVMValueRef args[3] = {ctx, I(m, 0), I(m, p.ntasks)};
        kl_call(m, m->t_task, chunk, args, 3);
    }
done:
    free(bufs);
    free(vals);
}

#else
typedef int kiln_emit_llvm_gemm_unused; /* built without LLVM */
#endif
