/* codegen/lower_conv.c — lowering rules of the conv family (ir/ops_conv.def).
 *
 * Each computes what its reference in ir/ops_conv.c computes.
 *
 * im2col and col2im are the kernels of the GEMM route (passes/conv_lower.c)
 * and are written for speed. Their outermost loop runs over the (n, c)
 * planes on the thread pool (each iteration writes its own elements); the
 * kernel taps (i, j) are unrolled at lowering time, so the rows and columns
 * of a tap that fall in the padding are separate loops of constant extent
 * and the loops over the inside have no condition: with stride 1 their
 * loads and stores are contiguous and carry the vector hint. With stride 1
 * and rows as wide as the image's ("same" padding) im2col copies a tap's
 * whole inside as one contiguous span and zeroes its padding columns after.
 *
 *   im2col   cols[c*kh*kw + i*kw + j, n, oh, ow] = x[n, c, ih, iw]  (0 in the padding)
 *   col2im   x[n, c, :, :] = 0;  for each tap (i, j), over the positions
 *            inside the image:  x[n, c, ih, iw] += cols[..., n, oh, ow]
 *
 * with ih = oh*sh - ph + i*dh, iw = ow*sw - pw + j*dw. col2im sums a
 * pixel's taps in f32 within the iteration that owns its plane (no atomics).
 * With stride 1 and rows as wide as the image's col2im also adds each
 * tap's inside as one span; the span's padding positions land in the edge
 * columns of a neighbouring row, which are then computed again (see
 * col2im_span).
 * Kernels with more than MAX_UNROLL taps use one loop nest over the taps
 * instead, with the position tested per element and the loads clamped
 * inside the buffer (a select's both arms may be evaluated).
 *
 * conv2d, conv_transpose2d and conv2d_grad_weight have direct loops: one
 * output element at a time, its taps summed in an f64 local in the
 * reference's order, padding handled by a select on a clamped load. They
 * serve convolutions the GEMM route leaves alone (many groups) and graphs
 * lowered without it. conv_transpose2d gathers: output pixel (h, w) reads
 * input position ((h + ph - i*dh) / sh, ...) of tap (i, j) when the
 * division is exact and inside.
 */
#include "ir/conv.h"
#include "ir/kernel.h"
#include "ir/ops.h"

#include <string.h>

#define MAX_UNROLL 49 /* taps unrolled into split loops (7x7) */

#define I(v) kiln_kx_int(kb, v)
#define BIN(op, a, b) kiln_kx_bin(kb, op, a, b)
#define VAR(v) kiln_kx_var(kb, v)

/* floor(a / b) and ceil(a / b) for b > 0. */
static int64_t floordiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int64_t ceildiv(int64_t a, int64_t b) { return -floordiv(-a, b); }

/* The output positions o in [0, n) whose input position o*s - p + t*d
 * (tap t) lies in [0, size): [*lo, *hi). */
static void inside(int64_t n, int64_t size, int64_t s, int64_t p, int64_t d, int64_t t,
                   int64_t *lo, int64_t *hi)
{
    int64_t off = t * d - p; /* input = o*s + off */
    int64_t a = ceildiv(-off, s), b = floordiv(size - 1 - off, s) + 1;
    *lo = a < 0 ? 0 : a > n ? n : a;
    *hi = b < *lo ? *lo : b > n ? n : b;
}

/* a*m + c as an index expression, without trivial terms. */
static int32_t affine(kiln_kb *kb, int32_t a, int64_t m, int64_t c)
{
    int32_t v = m == 1 ? a : BIN(KX_MUL, a, I(m));
    return c ? BIN(KX_ADD, v, I(c)) : v;
}

/* The outer loop over the planes (a, b) of an [A, B, ...] array, on the
 * thread pool; sets *va and *vb to their indices. */
static void plane_loop(kiln_kb *kb, int64_t A, int64_t B, int32_t *va, int32_t *vb)
{
    int32_t e = VAR(kiln_kb_loop(kb, A * B));
    kiln_kb_hint(kb, 0, 1);
    *va = B == 1 ? e : BIN(KX_DIV, e, I(B));
    *vb = B == 1 ? I(0) : BIN(KX_MOD, e, I(B));
}

static int32_t clamp(kiln_kb *kb, int32_t v, int64_t hi)
{
    return BIN(KX_MIN, BIN(KX_MAX, v, I(0)), I(hi - 1));
}

static int32_t in_range(kiln_kb *kb, int32_t v, int64_t n)
{
    return BIN(KX_AND, BIN(KX_GE, v, I(0)), BIN(KX_LT, v, I(n)));
}

/* ---- im2col ---- */

/* cols[row, n, oh, ow] = 0 for oh in [oh0, oh1), ow in [ow0, ow1). */
static void zero_block(kiln_kb *kb, int32_t out, int32_t row, int32_t n, int64_t oh0,
                       int64_t oh1, int64_t ow0, int64_t ow1, kiln_dtype t)
{
    if (oh1 <= oh0 || ow1 <= ow0) return;
    int32_t oh = affine(kb, VAR(kiln_kb_loop(kb, oh1 - oh0)), 1, oh0);
    int32_t ow = affine(kb, VAR(kiln_kb_loop(kb, ow1 - ow0)), 1, ow0);
    kiln_kb_hint(kb, 1, 0);
    int32_t idx[4] = {row, n, oh, ow};
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx), kiln_kx_float(kb, 0.0, t));
    kiln_kb_end(kb);
    kiln_kb_end(kb);
}

/* dst[base + e] = 0 for e in [e0, e1) (flat positions). */
static void zero_span(kiln_kb *kb, int32_t dst, int32_t base, int64_t e0, int64_t e1,
                      kiln_dtype t)
{
    if (e1 <= e0) return;
    int32_t e = affine(kb, VAR(kiln_kb_loop(kb, e1 - e0)), 1, e0);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, dst, BIN(KX_ADD, base, e), kiln_kx_float(kb, 0.0, t));
    kiln_kb_end(kb);
}

/* Stride 1 with rows as wide as the image's (OW == W, "same" padding): the
 * tap's pixels of consecutive output rows are consecutive in x, so its
 * inside is one contiguous copy; the positions of that span that fall in
 * the left or right padding (they read a neighbouring row) are zeroed
 * after it. */
static void im2col_span(kiln_kb *kb, const kiln_conv_geom *k, int32_t x, int32_t out,
                        int32_t n, int32_t c, int32_t row, int64_t i, int64_t j, int64_t oh0,
                        int64_t oh1, int64_t ow0, int64_t ow1, kiln_dtype t)
{
    int64_t P = k->OH * k->OW;
    int32_t cb = BIN(KX_MUL, BIN(KX_ADD, BIN(KX_MUL, row, I(k->N)), n), I(P));
    int32_t xb = BIN(KX_MUL, BIN(KX_ADD, BIN(KX_MUL, n, I(k->C)), c), I(k->H * k->W));
    int64_t off = (i * k->dh - k->ph) * k->W + (j * k->dw - k->pw);
    zero_span(kb, out, cb, 0, oh0 * k->OW + ow0, t);
    int64_t e0 = oh0 * k->OW + ow0, e1 = (oh1 - 1) * k->OW + ow1;
    int32_t e = affine(kb, VAR(kiln_kb_loop(kb, e1 - e0)), 1, e0);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, out, BIN(KX_ADD, cb, e),
                  kiln_kx_load(kb, x, BIN(KX_ADD, xb, affine(kb, e, 1, off))));
    kiln_kb_end(kb);
    if (ow0 > 0 || ow1 < k->OW) {
        /* the padding columns of the rows between */
        int32_t oh = affine(kb, VAR(kiln_kb_loop(kb, oh1 - oh0)), 1, oh0);
        int32_t rb = BIN(KX_ADD, cb, affine(kb, oh, k->OW, 0));
        zero_span(kb, out, rb, 0, ow0, t);
        zero_span(kb, out, rb, ow1, k->OW, t);
        kiln_kb_end(kb);
    }
    zero_span(kb, out, cb, (oh1 - 1) * k->OW + ow1, P, t);
}

static void im2col_tap(kiln_kb *kb, const kiln_conv_geom *k, int32_t x, int32_t out, int32_t n,
                       int32_t c, int64_t i, int64_t j, kiln_dtype t)
{
    int64_t kk = k->kh * k->kw;
    int32_t row = affine(kb, c, kk, i * k->kw + j);
    int64_t oh0, oh1, ow0, ow1;
    inside(k->OH, k->H, k->sh, k->ph, k->dh, i, &oh0, &oh1);
    inside(k->OW, k->W, k->sw, k->pw, k->dw, j, &ow0, &ow1);
    if (k->sh == 1 && k->sw == 1 && k->OW == k->W && oh1 > oh0 && ow1 > ow0) {
        im2col_span(kb, k, x, out, n, c, row, i, j, oh0, oh1, ow0, ow1, t);
        return;
    }
    zero_block(kb, out, row, n, 0, oh0, 0, k->OW, t);
    if (oh1 > oh0) {
        int32_t oh = affine(kb, VAR(kiln_kb_loop(kb, oh1 - oh0)), 1, oh0);
        int32_t ih = affine(kb, oh, k->sh, i * k->dh - k->ph);
        if (ow0 > 0) {
            int32_t ow = VAR(kiln_kb_loop(kb, ow0));
            kiln_kb_hint(kb, 1, 0);
            int32_t idx[4] = {row, n, oh, ow};
            kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx), kiln_kx_float(kb, 0.0, t));
            kiln_kb_end(kb);
        }
        if (ow1 > ow0) {
            int32_t ow = affine(kb, VAR(kiln_kb_loop(kb, ow1 - ow0)), 1, ow0);
            kiln_kb_hint(kb, 1, 0);
            int32_t iw = affine(kb, ow, k->sw, j * k->dw - k->pw);
            int32_t idx[4] = {row, n, oh, ow}, xi[4] = {n, c, ih, iw};
            kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx),
                          kiln_kx_load(kb, x, kiln_kx_index(kb, x, 4, xi)));
            kiln_kb_end(kb);
        }
        if (k->OW > ow1) {
            int32_t ow = affine(kb, VAR(kiln_kb_loop(kb, k->OW - ow1)), 1, ow1);
            kiln_kb_hint(kb, 1, 0);
            int32_t idx[4] = {row, n, oh, ow};
            kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx), kiln_kx_float(kb, 0.0, t));
            kiln_kb_end(kb);
        }
        kiln_kb_end(kb);
    }
    zero_block(kb, out, row, n, oh1, k->OH, 0, k->OW, t);
}

/* Kernels with many taps: loops over the taps, the position tested per
 * element. */
static void im2col_loops(kiln_kb *kb, const kiln_conv_geom *k, int32_t x, int32_t out, int32_t n,
                         int32_t c, kiln_dtype t)
{
    int32_t i = VAR(kiln_kb_loop(kb, k->kh));
    int32_t j = VAR(kiln_kb_loop(kb, k->kw));
    int32_t row = BIN(KX_ADD, affine(kb, c, k->kh * k->kw, 0), affine(kb, i, k->kw, 0));
    row = BIN(KX_ADD, row, j);
    int32_t oh = VAR(kiln_kb_loop(kb, k->OH));
    int32_t ih = BIN(KX_ADD, affine(kb, oh, k->sh, -k->ph), affine(kb, i, k->dh, 0));
    int32_t ow = VAR(kiln_kb_loop(kb, k->OW));
    int32_t iw = BIN(KX_ADD, affine(kb, ow, k->sw, -k->pw), affine(kb, j, k->dw, 0));
    int32_t ok = BIN(KX_AND, in_range(kb, ih, k->H), in_range(kb, iw, k->W));
    int32_t xi[4] = {n, c, clamp(kb, ih, k->H), clamp(kb, iw, k->W)};
    int32_t v = kiln_kx_select(kb, ok, kiln_kx_load(kb, x, kiln_kx_index(kb, x, 4, xi)),
                               kiln_kx_float(kb, 0.0, t));
    int32_t idx[4] = {row, n, oh, ow};
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx), v);
    for (int d = 0; d < 4; d++) kiln_kb_end(kb);
}

kiln_status kiln_im2col_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *nd = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, nd, &k);
    kiln_dtype t = (kiln_dtype)nd->dtype;
    int32_t x = kiln_kb_in(kb, 0), out = kiln_kb_out(kb), n, c;
    if (kiln_node_numel(nd) == 0) return kiln_kb_status(kb);
    plane_loop(kb, k.N, k.C, &n, &c);
    if (k.kh * k.kw <= MAX_UNROLL) {
        for (int64_t i = 0; i < k.kh; i++)
            for (int64_t j = 0; j < k.kw; j++) im2col_tap(kb, &k, x, out, n, c, i, j, t);
    } else {
        im2col_loops(kb, &k, x, out, n, c, t);
    }
    kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

/* ---- col2im ---- */

/* Stride 1 with rows as wide as the image's ("same" padding): per plane,
 * each tap adds its inside rows as one contiguous span. The span's
 * positions in the left or right padding add their (unused) values to the
 * other edge of a neighbouring row: only columns [0, pw) and [W-pw, W) get
 * them, so those columns are computed again afterwards, tap by tap in the
 * same order from 0, from the positions that are inside. */
static void col2im_span(kiln_kb *kb, const kiln_conv_geom *k, int32_t cols, int32_t out, int32_t n,
                        int32_t c)
{
    int64_t P = k->OH * k->OW, kk = k->kh * k->kw;
    kiln_dtype t = KILN_F32;
    int32_t xb = BIN(KX_MUL, BIN(KX_ADD, BIN(KX_MUL, n, I(k->C)), c), I(k->H * k->W));
    zero_span(kb, out, xb, 0, k->H * k->W, t);
    for (int64_t i = 0; i < k->kh; i++)
        for (int64_t j = 0; j < k->kw; j++) {
            int64_t oh0, oh1, ow0, ow1;
            inside(k->OH, k->H, k->sh, k->ph, k->dh, i, &oh0, &oh1);
            inside(k->OW, k->W, k->sw, k->pw, k->dw, j, &ow0, &ow1);
            if (oh1 <= oh0 || ow1 <= ow0) continue;
            int32_t row = affine(kb, c, kk, i * k->kw + j);
            int32_t cb = BIN(KX_MUL, BIN(KX_ADD, BIN(KX_MUL, row, I(k->N)), n), I(P));
            int64_t off = (i * k->dh - k->ph) * k->W + (j * k->dw - k->pw);
            int64_t e0 = oh0 * k->OW + ow0, e1 = (oh1 - 1) * k->OW + ow1;
            int32_t e = affine(kb, VAR(kiln_kb_loop(kb, e1 - e0)), 1, e0);
            kiln_kb_hint(kb, 1, 0);
            int32_t at = BIN(KX_ADD, xb, affine(kb, e, 1, off));
            kiln_kb_store(kb, out, at, BIN(KX_ADD, kiln_kx_load(kb, out, at),
                                           kiln_kx_load(kb, cols, BIN(KX_ADD, cb, e))));
            kiln_kb_end(kb);
        }
    /* the edge columns again */
    int32_t h = VAR(kiln_kb_loop(kb, k->H));
    for (int64_t w = 0; w < k->W; w++) {
        if (w >= k->pw && w < k->W - k->pw) continue;
        int32_t acc = kiln_kb_local(kb, t);
        kiln_kb_set(kb, acc, kiln_kx_float(kb, 0.0, t));
        for (int64_t i = 0; i < k->kh; i++)
            for (int64_t j = 0; j < k->kw; j++) {
                int64_t ow = w + k->pw - j * k->dw; /* stride 1 */
                if (ow < 0 || ow >= k->OW) continue;
                int32_t oh = affine(kb, h, 1, k->ph - i * k->dh);
                int32_t row = affine(kb, c, kk, i * k->kw + j);
                int32_t ci[4] = {row, n, clamp(kb, oh, k->OH), I(ow)};
                int32_t v = kiln_kx_load(kb, cols, kiln_kx_index(kb, cols, 4, ci));
                int32_t a = kiln_kx_local(kb, acc);
                kiln_kb_set(kb, acc, kiln_kx_select(kb, in_range(kb, oh, k->OH), BIN(KX_ADD, a, v), a));
            }
        int32_t xi[4] = {n, c, h, I(w)};
        kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, xi), kiln_kx_local(kb, acc));
    }
    kiln_kb_end(kb);
}

kiln_status kiln_col2im_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *nd = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, nd, &k);
    kiln_dtype t = (kiln_dtype)nd->dtype;
    int32_t cols = kiln_kb_in(kb, 0), out = kiln_kb_out(kb), n, c;
    if (kiln_node_numel(nd) == 0) return kiln_kb_status(kb);
    int64_t kk = k.kh * k.kw;
    plane_loop(kb, k.N, k.C, &n, &c);
    if (t == KILN_F32 && k.sh == 1 && k.sw == 1 && k.OW == k.W && k.OH == k.H &&
        kk <= MAX_UNROLL) {
        col2im_span(kb, &k, cols, out, n, c);
        kiln_kb_end(kb);
        return kiln_kb_status(kb);
    }
    /* the plane starts at zero */
    {
        int32_t h = VAR(kiln_kb_loop(kb, k.H));
        int32_t w = VAR(kiln_kb_loop(kb, k.W));
        kiln_kb_hint(kb, 1, 0);
        int32_t idx[4] = {n, c, h, w};
        kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx), kiln_kx_float(kb, 0.0, t));
        kiln_kb_end(kb);
        kiln_kb_end(kb);
    }
    if (kk <= MAX_UNROLL) {
        for (int64_t i = 0; i < k.kh; i++)
            for (int64_t j = 0; j < k.kw; j++) {
                int64_t oh0, oh1, ow0, ow1;
                inside(k.OH, k.H, k.sh, k.ph, k.dh, i, &oh0, &oh1);
                inside(k.OW, k.W, k.sw, k.pw, k.dw, j, &ow0, &ow1);
                if (oh1 <= oh0 || ow1 <= ow0) continue;
                int32_t row = affine(kb, c, kk, i * k.kw + j);
                int32_t oh = affine(kb, VAR(kiln_kb_loop(kb, oh1 - oh0)), 1, oh0);
                int32_t ow = affine(kb, VAR(kiln_kb_loop(kb, ow1 - ow0)), 1, ow0);
                kiln_kb_hint(kb, 1, 0);
                int32_t xi[4] = {n, c, affine(kb, oh, k.sh, i * k.dh - k.ph),
                                 affine(kb, ow, k.sw, j * k.dw - k.pw)};
                int32_t ci[4] = {row, n, oh, ow};
                int32_t at = kiln_kx_index(kb, out, 4, xi);
                kiln_kb_store(kb, out, at,
                              BIN(KX_ADD, kiln_kx_load(kb, out, at),
                                  kiln_kx_load(kb, cols, kiln_kx_index(kb, cols, 4, ci))));
                kiln_kb_end(kb);
                kiln_kb_end(kb);
            }
    } else {
        /* many taps: every (tap, position) adds, a position outside the
         * image adds 0 at a clamped pixel */
        int32_t i = VAR(kiln_kb_loop(kb, k.kh));
        int32_t j = VAR(kiln_kb_loop(kb, k.kw));
        int32_t row = BIN(KX_ADD, BIN(KX_ADD, affine(kb, c, kk, 0), affine(kb, i, k.kw, 0)), j);
        int32_t oh = VAR(kiln_kb_loop(kb, k.OH));
        int32_t ih = BIN(KX_ADD, affine(kb, oh, k.sh, -k.ph), affine(kb, i, k.dh, 0));
        int32_t ow = VAR(kiln_kb_loop(kb, k.OW));
        int32_t iw = BIN(KX_ADD, affine(kb, ow, k.sw, -k.pw), affine(kb, j, k.dw, 0));
        int32_t ok = BIN(KX_AND, in_range(kb, ih, k.H), in_range(kb, iw, k.W));
        int32_t xi[4] = {n, c, clamp(kb, ih, k.H), clamp(kb, iw, k.W)};
        int32_t ci[4] = {row, n, oh, ow};
        int32_t at = kiln_kx_index(kb, out, 4, xi);
        int32_t v = kiln_kx_load(kb, cols, kiln_kx_index(kb, cols, 4, ci));
        kiln_kb_store(kb, out, at,
                      kiln_kx_select(kb, ok, BIN(KX_ADD, kiln_kx_load(kb, out, at), v),
                                     kiln_kx_load(kb, out, at)));
        for (int d = 0; d < 4; d++) kiln_kb_end(kb);
    }
    kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

/* ---- direct convolutions ---- */

static int32_t f64(kiln_kb *kb, int32_t v) { return kiln_kx_cast(kb, v, KILN_F64); }

/* Adds the tap value v (f64) to local acc when cond holds. */
static void accumulate(kiln_kb *kb, int32_t acc, int32_t cond, int32_t v)
{
    int32_t a = kiln_kx_local(kb, acc);
    kiln_kb_set(kb, acc, BIN(KX_ADD, a, kiln_kx_select(kb, cond, v, kiln_kx_float(kb, 0.0, KILN_F64))));
}

/* Stores acc (+ bias[ch] when the node has one) at out[idx]. */
static void store_result(kiln_kb *kb, const kiln_node *nd, int32_t out, const int32_t *idx,
                         int32_t acc, int32_t ch)
{
    int32_t v = kiln_kx_local(kb, acc);
    if (nd->ninputs == 3) v = BIN(KX_ADD, v, f64(kb, kiln_kx_load(kb, kiln_kb_in(kb, 2), ch)));
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, idx), kiln_kx_cast(kb, v, (kiln_dtype)nd->dtype));
}

kiln_status kiln_conv2d_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *nd = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, nd, &k);
    int32_t x = kiln_kb_in(kb, 0), w = kiln_kb_in(kb, 1), out = kiln_kb_out(kb), n, o;
    if (kiln_node_numel(nd) == 0) return kiln_kb_status(kb);
    int64_t Cg = k.C / k.G, Cog = k.Co / k.G;
    int32_t acc = kiln_kb_local(kb, KILN_F64);
    plane_loop(kb, k.N, k.Co, &n, &o);
    int32_t cbase = affine(kb, BIN(KX_DIV, o, I(Cog)), Cg, 0);
    int32_t oh = VAR(kiln_kb_loop(kb, k.OH));
    int32_t ow = VAR(kiln_kb_loop(kb, k.OW));
    kiln_kb_set(kb, acc, kiln_kx_float(kb, 0.0, KILN_F64));
    int32_t c = VAR(kiln_kb_loop(kb, Cg));
    int32_t i = VAR(kiln_kb_loop(kb, k.kh));
    int32_t j = VAR(kiln_kb_loop(kb, k.kw));
    int32_t ih = BIN(KX_ADD, affine(kb, oh, k.sh, -k.ph), affine(kb, i, k.dh, 0));
    int32_t iw = BIN(KX_ADD, affine(kb, ow, k.sw, -k.pw), affine(kb, j, k.dw, 0));
    int32_t ok = BIN(KX_AND, in_range(kb, ih, k.H), in_range(kb, iw, k.W));
    int32_t xi[4] = {n, BIN(KX_ADD, cbase, c), clamp(kb, ih, k.H), clamp(kb, iw, k.W)};
    int32_t wi[4] = {o, c, i, j};
    int32_t prod = BIN(KX_MUL, f64(kb, kiln_kx_load(kb, x, kiln_kx_index(kb, x, 4, xi))),
                       f64(kb, kiln_kx_load(kb, w, kiln_kx_index(kb, w, 4, wi))));
    accumulate(kb, acc, ok, prod);
    for (int d = 0; d < 3; d++) kiln_kb_end(kb);
    int32_t yi[4] = {n, o, oh, ow};
    store_result(kb, nd, out, yi, acc, o);
    for (int d = 0; d < 3; d++) kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

kiln_status kiln_conv_transpose2d_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *nd = &g->nodes[node];
    kiln_conv_geom k; /* the convolution whose adjoint this is: out is its x */
    kiln_conv_geom_of(g, nd, &k);
    int32_t y = kiln_kb_in(kb, 0), w = kiln_kb_in(kb, 1), out = kiln_kb_out(kb), n, c;
    if (kiln_node_numel(nd) == 0) return kiln_kb_status(kb);
    int64_t Cg = k.C / k.G, Cog = k.Co / k.G;
    int32_t acc = kiln_kb_local(kb, KILN_F64);
    plane_loop(kb, k.N, k.C, &n, &c);
    int32_t obase = affine(kb, BIN(KX_DIV, c, I(Cg)), Cog, 0);
    int32_t cl = BIN(KX_MOD, c, I(Cg));
    int32_t h = VAR(kiln_kb_loop(kb, k.H));
    int32_t wv = VAR(kiln_kb_loop(kb, k.W));
    kiln_kb_set(kb, acc, kiln_kx_float(kb, 0.0, KILN_F64));
    int32_t o = BIN(KX_ADD, obase, VAR(kiln_kb_loop(kb, Cog)));
    int32_t i = VAR(kiln_kb_loop(kb, k.kh));
    int32_t j = VAR(kiln_kb_loop(kb, k.kw));
    /* tap (i, j) of output position (oh, ow) reads pixel (h, w) when
     * oh*sh = h + ph - i*dh exactly */
    int32_t th = BIN(KX_SUB, affine(kb, h, 1, k.ph), affine(kb, i, k.dh, 0));
    int32_t tw = BIN(KX_SUB, affine(kb, wv, 1, k.pw), affine(kb, j, k.dw, 0));
    int32_t oh = k.sh == 1 ? th : BIN(KX_DIV, th, I(k.sh));
    int32_t ow = k.sw == 1 ? tw : BIN(KX_DIV, tw, I(k.sw));
    int32_t ok = BIN(KX_AND, in_range(kb, oh, k.OH), in_range(kb, ow, k.OW));
    ok = BIN(KX_AND, ok, BIN(KX_AND, BIN(KX_GE, th, I(0)), BIN(KX_GE, tw, I(0))));
    if (k.sh > 1) ok = BIN(KX_AND, ok, BIN(KX_EQ, BIN(KX_MOD, th, I(k.sh)), I(0)));
    if (k.sw > 1) ok = BIN(KX_AND, ok, BIN(KX_EQ, BIN(KX_MOD, tw, I(k.sw)), I(0)));
    int32_t yi[4] = {n, o, clamp(kb, oh, k.OH), clamp(kb, ow, k.OW)};
    int32_t wi[4] = {o, cl, i, j};
    int32_t prod = BIN(KX_MUL, f64(kb, kiln_kx_load(kb, y, kiln_kx_index(kb, y, 4, yi))),
                       f64(kb, kiln_kx_load(kb, w, kiln_kx_index(kb, w, 4, wi))));
    accumulate(kb, acc, ok, prod);
    for (int d = 0; d < 3; d++) kiln_kb_end(kb);
    int32_t xi[4] = {n, c, h, wv};
    store_result(kb, nd, out, xi, acc, c);
    for (int d = 0; d < 3; d++) kiln_kb_end(kb);
    return kiln_kb_status(kb);
}

kiln_status kiln_conv2d_grad_weight_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *nd = &g->nodes[node];
    kiln_conv_geom k;
    kiln_conv_geom_of(g, nd, &k);
    int32_t x = kiln_kb_in(kb, 0), dy = kiln_kb_in(kb, 1), out = kiln_kb_out(kb), o, c;
    if (kiln_node_numel(nd) == 0) return kiln_kb_status(kb);
    int64_t Cg = k.C / k.G, Cog = k.Co / k.G;
    int32_t acc = kiln_kb_local(kb, KILN_F64);
    plane_loop(kb, k.Co, Cg, &o, &c);
    int32_t xc = BIN(KX_ADD, affine(kb, BIN(KX_DIV, o, I(Cog)), Cg, 0), c);
    int32_t i = VAR(kiln_kb_loop(kb, k.kh));
    int32_t j = VAR(kiln_kb_loop(kb, k.kw));
    kiln_kb_set(kb, acc, kiln_kx_float(kb, 0.0, KILN_F64));
    int32_t n = VAR(kiln_kb_loop(kb, k.N));
    int32_t oh = VAR(kiln_kb_loop(kb, k.OH));
    int32_t ow = VAR(kiln_kb_loop(kb, k.OW));
    int32_t ih = BIN(KX_ADD, affine(kb, oh, k.sh, -k.ph), affine(kb, i, k.dh, 0));
    int32_t iw = BIN(KX_ADD, affine(kb, ow, k.sw, -k.pw), affine(kb, j, k.dw, 0));
    int32_t ok = BIN(KX_AND, in_range(kb, ih, k.H), in_range(kb, iw, k.W));
    int32_t xi[4] = {n, xc, clamp(kb, ih, k.H), clamp(kb, iw, k.W)};
    int32_t di[4] = {n, o, oh, ow};
    int32_t prod = BIN(KX_MUL, f64(kb, kiln_kx_load(kb, dy, kiln_kx_index(kb, dy, 4, di))),
                       f64(kb, kiln_kx_load(kb, x, kiln_kx_index(kb, x, 4, xi))));
    accumulate(kb, acc, ok, prod);
    for (int d = 0; d < 3; d++) kiln_kb_end(kb);
    int32_t wi[4] = {o, c, i, j};
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, 4, wi),
                  kiln_kx_cast(kb, kiln_kx_local(kb, acc), (kiln_dtype)nd->dtype));
    for (int d = 0; d < 3; d++) kiln_kb_end(kb);
    return kiln_kb_status(kb);
}
