/* codegen/emit_par.c — the parts of a kernel that leave its body: top-level
 * loops outlined onto the thread pool (see codegen/codegen.h, "Threads"),
 * and GEMM statements, written as a call of a generated GEMM (codegen/gemm.h)
 * whose epilogue is a function of its own over a row segment.
 *
 * Expects: a kernel and its buffers' classification (emit_c.c).
 * Guarantees: an outlined loop or epilogue reads the kernel's buffers and
 * the locals set before it (by value) from a context struct; locals it sets
 * are its own (declared per chunk, or per element in an epilogue, so SIMD
 * lanes and threads never share them).
 */
#include "codegen/emit_c_internal.h"
#include "ir/ops.h"

#include <stdlib.h>
#include <string.h>

/* Marks what statements s.. (a list, recursively) use: locals (lmark) and
 * buffers (bmark), through the expressions they evaluate (xseen: visited). */
static void mark_uses_expr(const kiln_kernel *k, int32_t e, uint8_t *lmark, uint8_t *bmark,
                           uint8_t *xseen)
{
    if (e < 0 || e >= k->nexprs || xseen[e]) return;
    xseen[e] = 1;
    const kiln_kexpr *x = &k->exprs[e];
    if (x->op == KX_LOCAL && x->a >= 0 && x->a < k->nlocals) lmark[x->a] = 1;
    if (x->op == KX_LOAD && x->a >= 0 && x->a < k->nbufs) bmark[x->a] = 1;
    int32_t ops[3];
    bool cond[3];
    int n = kiln_ce_operands(x, ops, cond);
    for (int i = 0; i < n; i++) mark_uses_expr(k, ops[i], lmark, bmark, xseen);
}

static void mark_uses(const kiln_kernel *k, int32_t s, bool list, uint8_t *lmark, uint8_t *bmark,
                      uint8_t *xseen, int *guard)
{
    for (; s >= 0 && s < k->nstmts && (*guard)++ <= k->nstmts; s = list ? k->stmts[s].next : -1) {
        const kiln_kstmt *st = &k->stmts[s];
        switch (st->kind) {
        case KS_LOOP:
            mark_uses(k, st->body, true, lmark, bmark, xseen, guard);
            break;
        case KS_GEMM:
            if (st->index >= 0 && st->index < k->ngemms) {
                const kiln_kgemm *gm = &k->gemms[st->index];
                bmark[gm->a] = bmark[gm->b] = bmark[gm->c] = 1;
            }
            mark_uses(k, st->body, true, lmark, bmark, xseen, guard);
            break;
        case KS_STORE:
            if (st->buf >= 0 && st->buf < k->nbufs) bmark[st->buf] = 1;
            mark_uses_expr(k, st->index, lmark, bmark, xseen);
            mark_uses_expr(k, st->value, lmark, bmark, xseen);
            break;
        case KS_SET:
            if (st->var >= 0 && st->var < k->nlocals) lmark[st->var] = 1;
            mark_uses_expr(k, st->value, lmark, bmark, xseen);
            break;
        case KS_CHECK:
            mark_uses_expr(k, st->value, lmark, bmark, xseen);
            break;
        default:
            break;
        }
    }
}

/* Marks the locals statements s.. (a list when `list`, recursively) set. */
static void mark_sets(const kiln_kernel *k, int32_t s, bool list, uint8_t *smark, int *guard)
{
    for (; s >= 0 && s < k->nstmts && (*guard)++ <= k->nstmts; s = list ? k->stmts[s].next : -1) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_LOOP || st->kind == KS_GEMM) mark_sets(k, st->body, true, smark, guard);
        else if (st->kind == KS_SET && st->var >= 0 && st->var < k->nlocals) smark[st->var] = 1;
    }
}

/* The locals statement s reads but never sets (set before it: their values
 * are passed into an outlined loop or a GEMM's epilogue), in local order. */
static int value_locals(const kiln_kernel *k, int32_t s, int32_t *out)
{
    uint8_t *lmark = calloc((size_t)(k->nlocals ? k->nlocals : 1), 1);
    uint8_t *smark = calloc((size_t)(k->nlocals ? k->nlocals : 1), 1);
    uint8_t *bmark = calloc((size_t)(k->nbufs ? k->nbufs : 1), 1);
    uint8_t *xseen = calloc((size_t)(k->nexprs ? k->nexprs : 1), 1);
    int n = 0;
    if (lmark && smark && bmark && xseen) {
        int g1 = 0, g2 = 0;
        mark_uses(k, s, false, lmark, bmark, xseen, &g1);
        mark_sets(k, s, false, smark, &g2);
        for (int32_t l = 0; l < k->nlocals; l++)
            if (lmark[l] && !smark[l]) out[n++] = l;
    } else {
        n = -1;
    }
    free(lmark);
    free(smark);
    free(bmark);
    free(xseen);
    return n;
}

/* Scalar statements a list executes (loops multiply by their extent). */
static double list_work(const kiln_kernel *k, int32_t s, int *guard, bool *checks)
{
    double w = 0.0;
    for (; s >= 0 && s < k->nstmts && (*guard)++ <= k->nstmts; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_LOOP)
            w += (double)(st->extent > 0 ? st->extent : 0) * list_work(k, st->body, guard, checks);
        else
            w += 1.0;
        if (st->kind == KS_CHECK) *checks = true;
    }
    return w;
}

/* The buffers an outlined loop passes: parameters it uses, in buffer
 * order. */
static int loop_bufs(const kctx *c, int32_t loop, int32_t *out)
{
    const kiln_kernel *k = c->k;
    uint8_t *lmark = calloc((size_t)(k->nlocals ? k->nlocals : 1), 1);
    uint8_t *bmark = calloc((size_t)(k->nbufs ? k->nbufs : 1), 1);
    uint8_t *xseen = calloc((size_t)(k->nexprs ? k->nexprs : 1), 1);
    int n = 0;
    if (lmark && bmark && xseen) {
        int guard = 0;
        mark_uses(k, loop, false, lmark, bmark, xseen, &guard);
        for (int32_t i = 0; i < k->nbufs; i++)
            if (bmark[i] && c->bi[i].param) out[n++] = i;
    } else {
        n = -1;
    }
    free(lmark);
    free(bmark);
    free(xseen);
    return n;
}

/* The context struct an outlined loop or a GEMM epilogue reads: the
 * buffers it uses, then the locals it only reads (by value). */
static void put_ctx_struct(const kiln_kernel *k, kiln_sbuf *pre, const char *name,
                           const int32_t *bufs, int nb, const int32_t *vals, int nv)
{
    kiln_sb_printf(pre, "typedef struct %s {\n", name);
    for (int i = 0; i < nb; i++) {
        const kiln_kbuf *bf = &k->bufs[bufs[i]];
        kiln_sb_printf(pre, "    %s%s *b%d;\n", bf->written ? "" : "const ",
                       kiln_ce_ctype_mem(bf->dtype), bufs[i]);
    }
    for (int i = 0; i < nv; i++)
        kiln_sb_printf(pre, "    %s t%d;\n", kiln_ce_ctype_val(k->local_dtype[vals[i]]), vals[i]);
    if (nb == 0 && nv == 0) kiln_sb_puts(pre, "    int unused;\n");
    kiln_sb_printf(pre, "} %s;\n\n", name);
}

/* An outlined parallel loop: its iterations become function <kernel>_pN over
 * [lo, hi) (written to c->pre, with the kernel's name as \x01, filled in
 * when the translation unit is assembled), and the kernel hands the range
 * to the thread pool. */
void kiln_ce_put_outlined(kctx *c, int32_t s, int depth, int guard)
{
    const kiln_kernel *k = c->k;
    const kiln_kstmt *st = &k->stmts[s];
    int32_t *bufs = malloc((size_t)(k->nbufs ? k->nbufs : 1) * sizeof *bufs);
    int32_t *vals = malloc((size_t)(k->nlocals ? k->nlocals : 1) * sizeof *vals);
    int nb = bufs ? loop_bufs(c, s, bufs) : -1;
    int nv = vals ? value_locals(k, s, vals) : -1;
    if (nb < 0 || nv < 0) {
        c->b->oom = true;
        free(bufs);
        free(vals);
        return;
    }
    int m = c->npar++;
    kiln_sbuf *kb = c->b, *pre = c->pre;
    /* the chunk's body, with restrict buffers as parameters */
    kiln_sb_printf(pre, "/* \x01, loop i%d over [0, %lld) on the thread pool: iterations [lo, hi) */\n",
              st->var, (long long)st->extent);
    kiln_sb_printf(pre, "static void \x01_p%d_run(int64_t lo, int64_t hi", m);
    c->b = pre;
    for (int i = 0; i < nb; i++) {
        kiln_sb_puts(pre, ",\n    ");
        kiln_ce_put_buf_param(c, bufs[i], true, false);
    }
    for (int i = 0; i < nv; i++)
        kiln_sb_printf(pre, ",\n    const %s t%d", kiln_ce_ctype_val(k->local_dtype[vals[i]]), vals[i]);
    kiln_sb_puts(pre, ")\n{\n");
    for (int32_t i = 0; i < k->nbufs; i++)
        if (c->bi[i].scratch && c->scratch_owner[i] == s) kiln_ce_put_scratch_decl(c, pre, i);
    for (int32_t l = 0; l < k->nlocals; l++) {
        bool passed = false;
        for (int i = 0; i < nv; i++) passed |= vals[i] == l;
        if (c->local_owner[l] != s || passed) continue;
        int t = k->local_dtype[l];
        if (!kiln_ce_dtype_ok(t)) c->error = "a local of an unsupported dtype (f16/bf16)";
        kiln_sb_printf(pre, "    %s t%d = 0;\n", kiln_ce_ctype_val(t), l);
    }
    if (!(st->vector && kiln_ce_put_vector_loop(c, s, 1, "parallel: a chunk"))) { /* emit_vec.c */
        kiln_ce_put_loop_head(c, st, 1, "parallel: a chunk");
        kiln_ce_put_stmts(c, st->body, 2, guard);
        kiln_sb_puts(pre, "    }\n");
    }
    kiln_sb_puts(pre, "}\n\n");
    /* the pool's entry: buffers from the context struct */
    char cname[32];
    snprintf(cname, sizeof cname, "\x01_p%d_ctx", m);
    put_ctx_struct(k, pre, cname, bufs, nb, vals, nv);
    kiln_sb_printf(pre, "static void \x01_p%d(void *ctx, int64_t lo, int64_t hi)\n{\n", m);
    kiln_sb_printf(pre, "    const \x01_p%d_ctx *c = (const \x01_p%d_ctx *)ctx;\n", m, m);
    if (nb == 0) kiln_sb_puts(pre, "    (void)c;\n");
    kiln_sb_printf(pre, "    \x01_p%d_run(lo, hi", m);
    for (int i = 0; i < nb; i++) kiln_sb_printf(pre, ", c->b%d", bufs[i]);
    for (int i = 0; i < nv; i++) kiln_sb_printf(pre, ", c->t%d", vals[i]);
    kiln_sb_puts(pre, ");\n}\n\n");
    /* in the kernel */
    c->b = kb;
    kiln_ce_indent(kb, depth);
    kiln_sb_printf(kb, "{ /* loop i%d over [0, %lld): parallel, split across the thread pool */\n",
              st->var, (long long)st->extent);
    kiln_ce_indent(kb, depth + 1);
    kiln_sb_printf(kb, "\x01_p%d_ctx c%d = {", m, m);
    for (int i = 0; i < nb; i++) kiln_sb_printf(kb, "%sb%d", i ? ", " : "", bufs[i]);
    for (int i = 0; i < nv; i++) kiln_sb_printf(kb, "%st%d", i || nb ? ", " : "", vals[i]);
    kiln_sb_puts(kb, nb || nv ? "};\n" : "0};\n");
    kiln_ce_indent(kb, depth + 1);
    kiln_sb_printf(kb, "rt->parallel_for(rt->pool, %lld, \x01_p%d, &c%d);\n", (long long)st->extent, m,
              m);
    kiln_ce_indent(kb, depth);
    kiln_sb_puts(kb, "}\n");
    free(bufs);
    free(vals);
}

/* A GEMM statement: its epilogue becomes \x01_gM_epi(ctx, i, j0, j1) over a
 * row segment, the GEMM the generator's \x01_gM (codegen/gemm.h), both in
 * c->pre; the kernel calls the GEMM with the epilogue's buffers and the
 * locals it reads in a \x01_gM_ctx. */
void kiln_ce_put_gemm(kctx *c, int32_t s, int depth)
{
    const kiln_kernel *k = c->k;
    const kiln_kstmt *st = &k->stmts[s];
    if (st->index < 0 || st->index >= k->ngemms || depth != 1) {
        c->error = "a GEMM statement that is not at the kernel's top level";
        return;
    }
    const kiln_kgemm *gm = &k->gemms[st->index];
    int32_t *bufs = malloc((size_t)(k->nbufs ? k->nbufs : 1) * sizeof *bufs);
    int32_t *vals = malloc((size_t)(k->nlocals ? k->nlocals : 1) * sizeof *vals);
    int nb = -1, nv = -1;
    if (bufs && vals && st->body >= 0) {
        /* the epilogue's buffers and the locals it only reads */
        uint8_t *lmark = calloc((size_t)(k->nlocals ? k->nlocals : 1), 1);
        uint8_t *bmark = calloc((size_t)(k->nbufs ? k->nbufs : 1), 1);
        uint8_t *xseen = calloc((size_t)(k->nexprs ? k->nexprs : 1), 1);
        if (lmark && bmark && xseen) {
            int guard = 0;
            mark_uses(k, st->body, true, lmark, bmark, xseen, &guard);
            nb = 0;
            for (int32_t i = 0; i < k->nbufs; i++)
                if (bmark[i] && c->bi[i].param) bufs[nb++] = i;
            nv = value_locals(k, s, vals);
        }
        free(lmark);
        free(bmark);
        free(xseen);
    } else if (bufs && vals) {
        nb = nv = 0;
    }
    if (nb < 0 || nv < 0) {
        c->b->oom = true;
        free(bufs);
        free(vals);
        return;
    }
    int m = c->npar++;
    kiln_sbuf *pre = c->pre, *kb = c->b;
    bool epi = st->body >= 0, bimg = gm->bimg.on != 0, aimg = gm->aimg.on != 0 && !bimg;
    bool img = bimg || aimg;
    int32_t imgbuf = bimg ? gm->b : gm->a;
    char name[32], epi_name[40];
    snprintf(name, sizeof name, "\x01_g%d", m);
    snprintf(epi_name, sizeof epi_name, "\x01_g%d_tail", m);
    /* implicit im2col: the image travels in the context, for the packer */
    int nbc = nb;
    if (img) {
        bool have = false;
        for (int i = 0; i < nb; i++) have |= bufs[i] == imgbuf;
        if (!have) bufs[nbc++] = imgbuf;
    }
    if (epi || img) {
        char cname[32];
        snprintf(cname, sizeof cname, "\x01_g%d_tailctx", m);
        put_ctx_struct(k, pre, cname, bufs, nbc, vals, nv);
    }
    if (epi) {
        kiln_sb_printf(pre, "/* the tail of the GEMM below, on C[i, j0..j1) once its sums are final */\n"
                            "static inline void %s(void *ctx, int64_t i, int64_t j0, int64_t j1)\n{\n",
                       epi_name);
        kiln_sb_printf(pre, "    const \x01_g%d_tailctx *c = (const \x01_g%d_tailctx *)ctx;\n", m, m);
        for (int i = 0; i < nb; i++) {
            const kiln_kbuf *bf = &k->bufs[bufs[i]];
            kiln_sb_printf(pre, "    %s%s *%sb%d = c->b%d;\n", bf->written ? "" : "const ",
                           kiln_ce_ctype_mem(bf->dtype), c->bi[bufs[i]].restrict_ok ? "restrict " : "",
                           bufs[i], bufs[i]);
        }
        for (int i = 0; i < nv; i++)
            kiln_sb_printf(pre, "    const %s t%d = c->t%d;\n", kiln_ce_ctype_val(k->local_dtype[vals[i]]),
                           vals[i], vals[i]);
        kiln_sb_printf(pre, "    const int64_t i%d = i;\n    (void)i%d;\n", gm->var_i, gm->var_i);
        bool inner_loops = false;
        for (int32_t t = st->body; t >= 0; t = k->stmts[t].next)
            inner_loops |= k->stmts[t].kind != KS_STORE && k->stmts[t].kind != KS_SET;
        if (!inner_loops) kiln_sb_puts(pre, "    #pragma omp simd\n");
        kiln_sb_printf(pre, "    for (int64_t i%d = j0; i%d < j1; i%d++) {\n", gm->var_j, gm->var_j,
                       gm->var_j);
        for (int32_t l = 0; l < k->nlocals; l++) {
            bool passed = false;
            for (int i = 0; i < nv; i++) passed |= vals[i] == l;
            if (c->local_owner && c->local_owner[l] == s && !passed)
                kiln_sb_printf(pre, "        %s t%d;\n", kiln_ce_ctype_val(k->local_dtype[l]), l);
        }
        c->b = pre;
        kiln_ce_put_stmts(c, st->body, 2, 0);
        c->b = kb;
        kiln_sb_puts(pre, "    }\n}\n\n");
    }
    kiln_gemm_shape sh = {.M = gm->M, .N = gm->N, .K = gm->K, .ta = gm->ta, .tb = gm->tb,
                          .lda = gm->lda, .ldb = gm->ldb, .ldc = gm->ldc};
    kiln_gemm_tiles tiles;
    kiln_gemm_tiles_cached(c->target, &sh, &tiles);
    char packb[40] = "", ximg[80];
    if (img) {
        snprintf(packb, sizeof packb, "\x01_g%d_im2col%c", m, bimg ? 'b' : 'a');
        snprintf(ximg, sizeof ximg, "((const \x01_g%d_tailctx *)ctx)->b%d", m, imgbuf);
    }
    if (bimg)
        kiln_emit_im2col_packb(pre, packb, &gm->bimg, gm->tb,
                               kiln_gemm_tiles_nr(c->target, &sh, &tiles), ximg, c->target);
    /* op(A)'s rows are the column matrix's rows, its K the pixels: the
     * packer of B's panels, rows and columns swapped (gemm.h) */
    if (aimg)
        kiln_emit_im2col_packb(pre, packb, &gm->aimg, 0,
                               (int)kiln_gemm_tiles_kc(c->target, &sh, &tiles), ximg, c->target);
    kiln_emit_gemm_packab(pre, name, &sh, c->target, &tiles, epi ? epi_name : NULL,
                          bimg ? packb : NULL, aimg ? packb : NULL);
    kiln_sb_puts(pre, "\n");
    kiln_ce_indent(kb, depth);
    kiln_sb_printf(kb, "{ /* gemm: b%d[%lld x %lld] = b%d%s @ b%d%s, K = %lld */\n", gm->c,
                   (long long)gm->M, (long long)gm->N, gm->a, gm->ta ? "^T" : "", gm->b,
                   gm->tb ? "^T" : "", (long long)gm->K);
    if (epi || img) {
        kiln_ce_indent(kb, depth + 1);
        kiln_sb_printf(kb, "\x01_g%d_tailctx g%d = {", m, m);
        for (int i = 0; i < nbc; i++) kiln_sb_printf(kb, "%sb%d", i ? ", " : "", bufs[i]);
        for (int i = 0; i < nv; i++) kiln_sb_printf(kb, "%st%d", i || nbc ? ", " : "", vals[i]);
        kiln_sb_puts(kb, nbc || nv ? "};\n" : "0};\n");
    }
    kiln_ce_indent(kb, depth + 1);
    if (epi || img) kiln_sb_printf(kb, "\x01_g%d(b%d, b%d, b%d, rt, &g%d);\n", m, gm->a, gm->b, gm->c, m);
    else kiln_sb_printf(kb, "\x01_g%d(b%d, b%d, b%d, rt, NULL);\n", m, gm->a, gm->b, gm->c);
    kiln_ce_indent(kb, depth);
    kiln_sb_puts(kb, "}\n");
    free(bufs);
    free(vals);
}

/* Decides which top-level loops of k to outline onto the thread pool
 * (outline[s] = 1) and which top-level statement uses each local
 * (owner[l]: the statement, -1 none, -2 several). A loop is outlined when
 * its lowering rule marked it parallel, it has at least 2 iterations, its
 * nest executes at least KILN_PAR_MIN_WORK scalar statements, it has no
 * run-time check (a failure code cannot leave a worker), every local it
 * uses is its own (declared per chunk), and every buffer it uses may be
 * `restrict` (no storage shared with a buffer that is written). Returns
 * how many loops it outlines, or -1 when out of memory. */
int kiln_ce_plan_outlining(const kiln_kernel *k, const bufinfo *bi, uint8_t *outline,
                          int32_t *owner, int32_t *sowner)
{
    uint8_t *lmark = calloc((size_t)(k->nlocals ? k->nlocals : 1), 1);
    uint8_t *bmark = calloc((size_t)(k->nbufs ? k->nbufs : 1), 1);
    uint8_t *xseen = calloc((size_t)(k->nexprs ? k->nexprs : 1), 1);
    int n = 0;
    if (!lmark || !bmark || !xseen) {
        n = -1;
        goto done;
    }
    for (int32_t l = 0; l < k->nlocals; l++) owner[l] = -1;
    for (int32_t i = 0; i < k->nbufs; i++) sowner[i] = -1;
    int guard = 0;
    for (int32_t s = k->body; s >= 0 && s < k->nstmts && guard++ <= k->nstmts;
         s = k->stmts[s].next) {
        memset(lmark, 0, (size_t)k->nlocals);
        memset(bmark, 0, (size_t)k->nbufs);
        memset(xseen, 0, (size_t)k->nexprs);
        int g2 = 0;
        mark_uses(k, s, false, lmark, bmark, xseen, &g2);
        for (int32_t l = 0; l < k->nlocals; l++)
            if (lmark[l]) owner[l] = owner[l] == -1 ? s : -2;
        for (int32_t i = 0; i < k->nbufs; i++)
            if (bmark[i] && bi[i].scratch) sowner[i] = sowner[i] == -1 ? s : -2;
    }
    guard = 0;
    for (int32_t s = k->body; s >= 0 && s < k->nstmts && guard++ <= k->nstmts;
         s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind == KS_GEMM) {
            outline[s] = 2; /* its epilogue is a function of its own */
            n++;
            continue;
        }
        if (st->kind != KS_LOOP || !st->parallel || st->extent < 2) continue;
        bool checks = false;
        int g2 = 0;
        double work = (double)st->extent * list_work(k, st->body, &g2, &checks);
        if (checks || work < KILN_PAR_MIN_WORK) continue;
        memset(lmark, 0, (size_t)k->nlocals);
        memset(bmark, 0, (size_t)k->nbufs);
        memset(xseen, 0, (size_t)k->nexprs);
        g2 = 0;
        mark_uses(k, s, false, lmark, bmark, xseen, &g2);
        bool ok = true;
        uint8_t *smark = calloc((size_t)(k->nlocals ? k->nlocals : 1), 1);
        if (!smark) {
            n = -1;
            goto done;
        }
        g2 = 0;
        mark_sets(k, s, false, smark, &g2);
        /* its own locals, or ones it only reads (passed by value) */
        for (int32_t l = 0; l < k->nlocals; l++)
            if (lmark[l] && owner[l] != s && smark[l]) ok = false;
        free(smark);
        for (int32_t i = 0; i < k->nbufs; i++) {
            if (bmark[i] && bi[i].param && bi[i].partial_overlap) ok = false;
            if (bmark[i] && bi[i].scratch && sowner[i] != s) ok = false;
        }
        if (ok) {
            outline[s] = 1;
            n++;
        }
    }
done:
    free(lmark);
    free(bmark);
    free(xseen);
    return n;
}
