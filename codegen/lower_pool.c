/* codegen/lower_pool.c — lowering rules of the pooling, upsampling and
 * padding ops and their backward ops (ir/ops_pool.def).
 *
 * Each computes what its reference in ir/ops_pool.c computes, with the
 * geometry of ir/ops_pool.h. Every rule is one kernel whose top-level loop
 * runs over the planes (the leading axes; parallel: each plane writes its
 * own outputs) and whose inner loops run over the two spatial axes of what
 * it writes, the last axis innermost (contiguous stores). Each written
 * element GATHERS what it needs — no rule scatters, so the backward ops
 * parallelise without atomics:
 *
 *   forward ops    output (oh, ow) reads its candidate inputs
 *                  (window positions; adaptive window; nearest source;
 *                  the two bilinear sources; the padded source)
 *   backward ops   input (h, w) sums dy over the candidate outputs that
 *                  read it (the windows containing it; the outputs whose
 *                  nearest source or bilinear sources it is; for reflect
 *                  padding, the element itself and its two mirror images)
 *
 * Candidates are separable: per axis, target t has candidates q < K at
 * source index c(t, q), each valid or not, each with a weight (bilinear,
 * 1 / divisor for the average gradients). Backward candidates are o =
 * floor(t O / L) - off + q, with off and K found here by enumerating the
 * forward map, so they cover every output that reads t; validity is the
 * exact test "o reads t".
 *
 * Lowering-time analysis keeps the inner loops clean. Per axis, targets
 * whose candidates all lie inside the source form one interior loop; the
 * few border targets on each side (at most 8, else a loop) are written
 * out one by one with constant indices, so padding, ceil_mode overhangs
 * and edges cost nothing in the interior. A loop then keeps its longest
 * periodic stretch: targets m P + r (P <= 8 for columns, 4 for rows) whose
 * candidates' validity and weights depend on r only and whose indices move
 * by a constant per period, so the r are written out inside a loop over m
 * and every index is affine, every weight and test a constant (nearest and
 * bilinear maps, stride-s windows and their gradients: interleaved loads
 * and stores instead of gathers and divisions). Elsewhere each candidate
 * is skipped (never valid), unconditional (always valid) or conditional
 * (a select, its index clamped into the source when it can fall outside;
 * a select never lets a discarded value into the result), indices and
 * weights computed from the target. With at most 64 candidate pairs the
 * pairs are unrolled into one expression and the innermost target loop
 * carries the vector hint; larger windows loop over the candidates.
 *
 *   max      NaN-propagating max over the valid pairs (x's dtype)
 *   argmax   PyTorch's scan: the first valid pair, then replaced by any
 *            later value that is greater or NaN (first maximum, last NaN)
 *   sum      sum over pairs of w_h * (sum of w_w * value), in f64 (as the
 *            references), divided by the window's count for averages
 *   fill     pad: the source value, or `value` where there is none
 *
 * max_pool2d_grad runs two nests per plane: the argmax position of every
 * window into a per-plane scratch array, then, per input pixel, the sum of
 * dy over the windows (candidates) whose argmax it is. When windows do not
 * overlap (stride >= dilated kernel) each pixel has at most one window, and
 * the gather is written window by window without scratch: the argmax scan,
 * then dy to the argmax and 0 to the window's other pixels, plus zeros
 * where no window reaches (spread_lower).
 */
#include "ir/kernel.h"
#include "ir/ops.h"
#include "ir/ops_pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAXK 64    /* candidates per axis analysed one by one */
#define UNROLL 64  /* candidate pairs written out as one expression */
#define MAX_UNIT 8 /* border targets per side written out one by one */

#define BIN(op, a, b) kiln_kx_bin(kb, op, a, b)
#define I64(v) kiln_kx_int(kb, v)
#define F64(v) kiln_kx_float(kb, v, KILN_F64)

/* ---- one axis of a gather ---- */

typedef struct gax {
    kiln_pool_axis a;
    bool bwd;              /* targets are the forward's inputs, candidates its outputs */
    bool weighted;         /* candidates carry weights */
    bool normed;           /* forward averages: divide by the window's count */
    bool any;              /* validity is left to another test (max_pool2d_grad's argmax) */
    int64_t T, S;          /* targets, sources */
    int64_t K;             /* candidates per target */
    int64_t off;           /* bwd: candidate q of t is base(t) - off + q, */
    int64_t num, add, den; /* base(t) = (t num + add) / den */
} gax;

/* The first candidate of a backward target t, before the offset (t >= 0). */
static int64_t base_of(const gax *x, int64_t t)
{
    return (t * x->num + x->add) / x->den;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a ? a : 1;
}

static int64_t keff(const kiln_pool_axis *a)
{
    return (a->k - 1) * a->d + 1;
}

/* Forward: the input index candidate q of output o reads (may be outside). */
static int64_t fwd_cand(const kiln_pool_axis *a, int64_t o, int64_t q)
{
    int64_t s, e, i0, i1;
    double l0, l1;
    switch (a->kind) {
    case KILN_POOL_WINDOW:
        return o * a->s - a->p + q * a->d;
    case KILN_POOL_ADAPTIVE:
        kiln_pool_adaptive(a, o, &s, &e);
        return s + q;
    case KILN_POOL_NEAREST:
        return kiln_pool_nearest(a, o);
    case KILN_POOL_LINEAR:
        kiln_pool_linear(a, o, &i0, &i1, &l0, &l1);
        return q ? i1 : i0;
    default:
        return a->reflect ? kiln_pool_pad_src(a, o) : o - a->p;
    }
}

static bool fwd_valid(const kiln_pool_axis *a, int64_t o, int64_t q)
{
    if (a->kind != KILN_POOL_ADAPTIVE) return true;
    int64_t s, e;
    kiln_pool_adaptive(a, o, &s, &e);
    return s + q < e;
}

static double fwd_weight(const kiln_pool_axis *a, int64_t o, int64_t q)
{
    if (a->kind != KILN_POOL_LINEAR) return 1.0;
    int64_t i0, i1;
    double l0, l1;
    kiln_pool_linear(a, o, &i0, &i1, &l0, &l1);
    return q ? l1 : l0;
}

static int64_t fwd_norm(const kiln_pool_axis *a, int64_t o)
{
    int64_t s, e;
    if (a->kind == KILN_POOL_WINDOW) return kiln_pool_divisor(a, o);
    kiln_pool_adaptive(a, o, &s, &e);
    return e - s;
}

/* Whether forward output o reads input i (both in range). */
static bool reads(const kiln_pool_axis *a, int64_t o, int64_t i)
{
    int64_t s, e, i0, i1;
    double l0, l1;
    switch (a->kind) {
    case KILN_POOL_WINDOW: {
        int64_t r = i + a->p - o * a->s;
        return r >= 0 && r < keff(a) && r % a->d == 0;
    }
    case KILN_POOL_ADAPTIVE:
        kiln_pool_adaptive(a, o, &s, &e);
        return s <= i && i < e;
    case KILN_POOL_NEAREST:
        return kiln_pool_nearest(a, o) == i;
    case KILN_POOL_LINEAR:
        kiln_pool_linear(a, o, &i0, &i1, &l0, &l1);
        return i0 == i || i1 == i;
    default:
        return kiln_pool_pad_src(a, o) == i;
    }
}

/* The weight of dy at output o in input i's gradient. */
static double bwd_weight(const kiln_pool_axis *a, int64_t o, int64_t i)
{
    int64_t i0, i1;
    double l0, l1;
    switch (a->kind) {
    case KILN_POOL_WINDOW:
    case KILN_POOL_ADAPTIVE:
        return 1.0 / (double)fwd_norm(a, o);
    case KILN_POOL_LINEAR:
        kiln_pool_linear(a, o, &i0, &i1, &l0, &l1);
        return (i0 == i ? l0 : 0.0) + (i1 == i ? l1 : 0.0);
    default:
        return 1.0;
    }
}

/* The candidate q of target t (a source index, possibly outside [0, S)),
 * whether it is valid when inside, and its weight. */
static int64_t cand(const gax *x, int64_t t, int64_t q, bool *valid, double *w)
{
    const kiln_pool_axis *a = &x->a;
    int64_t c;
    if (!x->bwd) {
        c = fwd_cand(a, t, q);
        if (c < 0 || c >= x->S) return c;
        *valid = fwd_valid(a, t, q);
        *w = x->weighted ? fwd_weight(a, t, q) : 1.0;
        return c;
    }
    if (a->kind == KILN_POOL_PAD) {
        /* the element, and for reflect its mirror images left and right */
        c = q == 0 ? t + a->p : q == 1 ? a->p - t : 2 * (a->L - 1) + a->p - t;
        *valid = q == 0 || (q == 1 ? t >= 1 : t <= a->L - 2);
        *w = 1.0;
        return c;
    }
    c = base_of(x, t) - x->off + q;
    if (c < 0 || c >= x->S) return c;
    *valid = x->any || reads(a, c, t);
    *w = x->weighted ? bwd_weight(a, c, t) : 1.0;
    return c;
}

/* Sets T, S, K (and off) of a gather axis over axis a. */
static kiln_status gax_init(gax *x, const kiln_pool_axis *a, bool bwd, bool weighted, bool normed,
                            bool any)
{
    memset(x, 0, sizeof *x);
    x->a = *a;
    x->bwd = bwd;
    x->weighted = weighted;
    x->normed = normed;
    x->any = any;
    x->T = bwd ? a->L : a->O;
    x->S = bwd ? a->O : a->L;
    if (!bwd) {
        switch (a->kind) {
        case KILN_POOL_WINDOW:
            x->K = a->k;
            break;
        case KILN_POOL_ADAPTIVE:
            for (int64_t o = 0; o < a->O; o++) {
                int64_t s, e;
                kiln_pool_adaptive(a, o, &s, &e);
                if (e - s > x->K) x->K = e - s;
            }
            break;
        case KILN_POOL_LINEAR:
            x->K = 2;
            break;
        default:
            x->K = 1;
        }
        return KILN_OK;
    }
    if (a->kind == KILN_POOL_PAD) {
        x->K = a->reflect ? 3 : 1;
        return KILN_OK;
    }
    /* windows: the last window starting at or before t, (t + p) / s (period
     * s); other maps: t O / L (period L / gcd) */
    int64_t g = gcd64(a->O, a->L);
    x->num = a->kind == KILN_POOL_WINDOW ? 1 : a->O / g;
    x->den = a->kind == KILN_POOL_WINDOW ? a->s : a->L / g;
    x->add = a->kind == KILN_POOL_WINDOW ? a->p : 0;
    /* the outputs reading each input: lo[i] .. hi[i] */
    int64_t *lo = malloc((size_t)(a->L ? a->L : 1) * 2 * sizeof *lo);
    if (!lo) return KILN_ERR_NOMEM;
    int64_t *hi = lo + a->L;
    for (int64_t i = 0; i < a->L; i++)
        lo[i] = -1;
    int64_t kf = a->kind == KILN_POOL_WINDOW ? a->k : a->kind == KILN_POOL_LINEAR ? 2 : 1;
    if (a->kind == KILN_POOL_ADAPTIVE) kf = (a->L + a->O - 1) / a->O + 1;
    for (int64_t o = 0; o < a->O; o++)
        for (int64_t q = 0; q < kf; q++) {
            int64_t i = fwd_cand(a, o, q);
            if (i < 0 || i >= a->L || !fwd_valid(a, o, q)) continue;
            if (lo[i] < 0) lo[i] = o;
            hi[i] = o;
        }
    int64_t off = 0, K = 0;
    for (int64_t i = 0; i < a->L; i++)
        if (lo[i] >= 0 && base_of(x, i) - lo[i] > off) off = base_of(x, i) - lo[i];
    for (int64_t i = 0; i < a->L; i++)
        if (lo[i] >= 0 && hi[i] - (base_of(x, i) - off) + 1 > K)
            K = hi[i] - (base_of(x, i) - off) + 1;
    free(lo);
    x->off = off;
    x->K = K;
    return KILN_OK;
}

/* ---- the same as kernel-IR expressions ---- */

/* a + b, a * b with constants folded away where trivial */
static int32_t add_c(kiln_kb *kb, int32_t a, int64_t c)
{
    return c ? BIN(KX_ADD, a, I64(c)) : a;
}

static int32_t mul_c(kiln_kb *kb, int32_t a, int64_t c)
{
    return c == 1 ? a : BIN(KX_MUL, a, I64(c));
}

static void adaptive_x(kiln_kb *kb, const kiln_pool_axis *a, int32_t o, int32_t *s, int32_t *e)
{
    *s = BIN(KX_DIV, mul_c(kb, o, a->L), I64(a->O));
    *e = BIN(KX_DIV, add_c(kb, mul_c(kb, o, a->L), a->L + a->O - 1), I64(a->O));
}

static int32_t nearest_x(kiln_kb *kb, const kiln_pool_axis *a, int32_t o)
{
    if (kiln_pool_nearest_exact(a)) {
        int64_t g = gcd64(a->L, a->O);
        return a->O / g == 1 ? mul_c(kb, o, a->L / g)
                             : BIN(KX_DIV, mul_c(kb, o, a->L / g), I64(a->O / g));
    }
    int32_t f = kiln_kx_float(kb, (double)kiln_pool_nearest_factor(a), KILN_F32);
    int32_t src = kiln_kx_cast(kb, BIN(KX_MUL, kiln_kx_cast(kb, o, KILN_F32), f), KILN_I64);
    return BIN(KX_MIN, src, I64(a->L - 1));
}

/* kiln_pool_linear, operation for operation */
static void linear_x(kiln_kb *kb, const kiln_pool_axis *a, int32_t o, int32_t *i0, int32_t *i1,
                     int32_t *l0, int32_t *l1)
{
    if (a->O == a->L) {
        *i0 = *i1 = o;
        *l0 = F64(1.0);
        *l1 = F64(0.0);
        return;
    }
    int32_t scale = F64(kiln_pool_linear_scale(a)), of = kiln_kx_cast(kb, o, KILN_F64), src;
    if (a->align) {
        src = BIN(KX_MUL, scale, of);
    } else {
        src = BIN(KX_SUB, BIN(KX_MUL, scale, BIN(KX_ADD, of, F64(0.5))), F64(0.5));
        src = kiln_kx_select(kb, BIN(KX_LT, src, F64(0.0)), F64(0.0), src);
    }
    *i0 = kiln_kx_cast(kb, src, KILN_I64);
    *i1 = BIN(KX_ADD, *i0, kiln_kx_select(kb, BIN(KX_LT, *i0, I64(a->L - 1)), I64(1), I64(0)));
    int32_t f = BIN(KX_SUB, src, kiln_kx_cast(kb, *i0, KILN_F64));
    f = kiln_kx_select(kb, BIN(KX_GT, f, F64(0.0)), f, F64(0.0));
    *l1 = kiln_kx_select(kb, BIN(KX_LT, f, F64(1.0)), f, F64(1.0));
    *l0 = BIN(KX_SUB, F64(1.0), *l1);
}

static int32_t divisor_x(kiln_kb *kb, const kiln_pool_axis *a, int32_t o)
{
    int32_t start = add_c(kb, mul_c(kb, o, a->s), -a->p);
    int32_t end = add_c(kb, start, a->k);
    if (a->count_pad) return BIN(KX_SUB, BIN(KX_MIN, end, I64(a->L + a->p)), start);
    return BIN(KX_SUB, BIN(KX_MIN, end, I64(a->L)), BIN(KX_MAX, start, I64(0)));
}

static int32_t norm_x(kiln_kb *kb, const kiln_pool_axis *a, int32_t o)
{
    if (a->kind == KILN_POOL_WINDOW) return divisor_x(kb, a, o);
    int32_t s, e;
    adaptive_x(kb, a, o, &s, &e);
    return BIN(KX_SUB, e, s);
}

/* base + q * step: q is the candidate as an expression, qi its number (-1
 * inside a loop over candidates, where q is the loop variable). */
static int32_t plus_q(kiln_kb *kb, int32_t base, int32_t q, int qi, int64_t step)
{
    return qi >= 0 ? add_c(kb, base, qi * step) : BIN(KX_ADD, base, mul_c(kb, q, step));
}

/* The candidate index (unclamped), its validity test (-1: none needed
 * beyond the range) and its weight (-1: 1) at target t (q, qi as plus_q). */
static int32_t cand_x(kiln_kb *kb, const gax *x, int32_t t, int32_t q, int qi, int32_t *valid,
                      int32_t *w)
{
    const kiln_pool_axis *a = &x->a;
    *valid = -1;
    *w = -1;
    int32_t c, s, e, i0, i1, l0, l1;
    if (!x->bwd) {
        switch (a->kind) {
        case KILN_POOL_WINDOW:
            return plus_q(kb, add_c(kb, mul_c(kb, t, a->s), -a->p), q, qi, a->d);
        case KILN_POOL_ADAPTIVE:
            adaptive_x(kb, a, t, &s, &e);
            c = plus_q(kb, s, q, qi, 1);
            *valid = BIN(KX_LT, c, e);
            return c;
        case KILN_POOL_NEAREST:
            return nearest_x(kb, a, t);
        case KILN_POOL_LINEAR:
            linear_x(kb, a, t, &i0, &i1, &l0, &l1);
            if (x->weighted) *w = qi ? l1 : l0;
            return qi ? i1 : i0;
        default:
            c = add_c(kb, t, -a->p);
            if (!a->reflect) return c;
            c = kiln_kx_select(kb, BIN(KX_LT, c, I64(0)), kiln_kx_un(kb, KX_NEG, c), c);
            return kiln_kx_select(kb, BIN(KX_GT, c, I64(a->L - 1)),
                                  BIN(KX_SUB, I64(2 * (a->L - 1)), c), c);
        }
    }
    if (a->kind == KILN_POOL_PAD) {
        if (qi == 0) return add_c(kb, t, a->p);
        if (qi == 1) {
            *valid = BIN(KX_GE, t, I64(1));
            return BIN(KX_SUB, I64(a->p), t);
        }
        *valid = BIN(KX_LE, t, I64(a->L - 2));
        return BIN(KX_SUB, I64(2 * (a->L - 1) + a->p), t);
    }
    int32_t base = add_c(kb, mul_c(kb, t, x->num), x->add);
    if (x->den != 1) base = BIN(KX_DIV, base, I64(x->den));
    c = plus_q(kb, base, q, qi, 1);
    if (x->off) c = add_c(kb, c, -x->off);
    switch (a->kind) {
    case KILN_POOL_WINDOW: {
        int32_t r = BIN(KX_SUB, add_c(kb, t, a->p), mul_c(kb, c, a->s));
        *valid = BIN(KX_AND, BIN(KX_GE, r, I64(0)), BIN(KX_LT, r, I64(keff(a))));
        if (a->d > 1) *valid = BIN(KX_AND, *valid, BIN(KX_EQ, BIN(KX_MOD, r, I64(a->d)), I64(0)));
        if (x->weighted)
            *w = BIN(KX_DIV, F64(1.0), kiln_kx_cast(kb, divisor_x(kb, a, c), KILN_F64));
        break;
    }
    case KILN_POOL_ADAPTIVE:
        adaptive_x(kb, a, c, &s, &e);
        *valid = BIN(KX_AND, BIN(KX_LE, s, t), BIN(KX_LT, t, e));
        if (x->weighted) *w = BIN(KX_DIV, F64(1.0), kiln_kx_cast(kb, BIN(KX_SUB, e, s), KILN_F64));
        break;
    case KILN_POOL_NEAREST:
        *valid = BIN(KX_EQ, nearest_x(kb, a, c), t);
        break;
    default:
        linear_x(kb, a, c, &i0, &i1, &l0, &l1);
        *valid = BIN(KX_OR, BIN(KX_EQ, i0, t), BIN(KX_EQ, i1, t));
        if (x->weighted)
            *w = BIN(KX_ADD, kiln_kx_select(kb, BIN(KX_EQ, i0, t), l0, F64(0.0)),
                     kiln_kx_select(kb, BIN(KX_EQ, i1, t), l1, F64(0.0)));
    }
    if (x->any) *valid = -1;
    return c;
}

/* ---- segments: which targets share a loop, and what each candidate needs ---- */

enum { Q_SKIP, Q_ALWAYS, Q_COND };

typedef struct qm {
    uint8_t mode;
    bool range;  /* may fall outside the source: tested, and its index clamped */
    bool test;   /* may be invalid inside the source: tested */
    bool wconst; /* the same weight wherever valid */
    double w;
} qm;

typedef struct seg {
    int64_t lo, hi; /* targets [lo, hi) */
    bool unit;      /* one target: constant indices and weights */
    bool nconst;    /* the same count (normed axes) for every target */
    int64_t nval;
    qm q[MAXK]; /* per candidate; q[0] for all when looping over candidates */
    /* periodic (P > 0): targets lo + m P + r for m < M, r < P, where each
     * candidate's validity and weight depend on r only and its index moves
     * by pa[q] per period: every index is affine in m, every test and weight
     * a constant (the innermost loop of nearest/bilinear/stride-s maps) */
    int64_t P, M;
    int64_t *pc; /* [r * K + q]: the index at target lo + r */
    double *pw;  /* [r * K + q]: the weight */
    uint8_t *pv; /* [r * K + q]: valid (else never) */
    int64_t *pa; /* [q] */
    int64_t *pn; /* [r]: the count of normed axes */
} seg;

#define MAX_PERIOD 8 /* columns (the innermost loop) */
#define PERIOD_H 4   /* rows: each row of a period is a copy of the column loops */
#define SEGS_MAX 96

typedef struct segs {
    seg s[SEGS_MAX];
    int n;
} segs;

static void segs_free(segs *ss)
{
    for (int i = 0; i < ss->n; i++)
        free(ss->s[i].pc);
    ss->n = 0;
}

static void analyse(const gax *x, seg *sg, bool loopq)
{
    int nq = loopq ? 1 : (int)x->K;
    bool out[MAXK] = {false}, bad[MAXK] = {false}, ok[MAXK] = {false};
    for (int i = 0; i < nq; i++)
        sg->q[i] = (qm){.mode = Q_SKIP, .wconst = true, .w = 1.0};
    for (int64_t t = sg->lo; t < sg->hi; t++)
        for (int64_t q = 0; q < x->K; q++) {
            int i = loopq ? 0 : (int)q;
            bool v = false;
            double w = 1.0;
            int64_t c = cand(x, t, q, &v, &w);
            if (c < 0 || c >= x->S) {
                out[i] = true;
            } else if (!v) {
                bad[i] = true;
            } else if (!ok[i]) {
                ok[i] = true;
                sg->q[i].w = w;
            } else if (w != sg->q[i].w) {
                sg->q[i].wconst = false;
            }
        }
    for (int i = 0; i < nq; i++) {
        qm *m = &sg->q[i];
        m->mode = !ok[i] ? Q_SKIP : (out[i] || bad[i]) ? Q_COND : Q_ALWAYS;
        m->range = out[i];
        m->test = bad[i];
    }
    sg->nconst = true;
    sg->nval = 1;
    if (x->normed)
        for (int64_t t = sg->lo; t < sg->hi; t++) {
            int64_t v = fwd_norm(&x->a, t);
            if (t == sg->lo)
                sg->nval = v;
            else if (v != sg->nval)
                sg->nconst = false;
        }
}

static void add_range(segs *ss, int64_t lo, int64_t hi, bool units)
{
    if (hi <= lo) return;
    if (units) {
        for (int64_t t = lo; t < hi; t++)
            ss->s[ss->n++] = (seg){.lo = t, .hi = t + 1, .unit = true};
    } else {
        ss->s[ss->n++] = (seg){.lo = lo, .hi = hi};
    }
}

/* Candidate q of target t when valid (inside the source and valid): its
 * index and weight. */
static bool cand_ok(const gax *x, int64_t t, int64_t q, int64_t *c, double *w)
{
    bool v = false;
    *w = 1.0;
    *c = cand(x, t, q, &v, w);
    return v && *c >= 0 && *c < x->S;
}

/* The longest stretch of targets in [lo, hi) with period P: targets t and
 * t + P agree (validity, weights, counts) and each candidate's index moves
 * by the same pa[q] throughout. Returns its length (whole periods, at least
 * two, else 0) and start *at. */
static int64_t period_core(const gax *x, int64_t lo, int64_t hi, int64_t P, int64_t *at,
                           int64_t *pa)
{
    int64_t K = x->K, best = 0, start = lo;
    int64_t d[MAXK], rd[MAXK]; /* this pair's moves; the run's (INT64_MIN: none yet) */
    bool run = false;
    for (int64_t t = lo; t + P < hi; t++) {
        bool ok = !x->normed || fwd_norm(&x->a, t) == fwd_norm(&x->a, t + P);
        for (int64_t q = 0; q < K && ok; q++) {
            int64_t c0, c1;
            double w0, w1;
            bool v0 = cand_ok(x, t, q, &c0, &w0), v1 = cand_ok(x, t + P, q, &c1, &w1);
            ok = v0 == v1 && (!v0 || w0 == w1);
            d[q] = v0 ? c1 - c0 : INT64_MIN;
        }
        if (!ok) {
            run = false;
            continue;
        }
        bool same = run;
        for (int64_t q = 0; q < K && same; q++)
            same = d[q] == INT64_MIN || rd[q] == INT64_MIN || d[q] == rd[q];
        if (!same) {
            start = t;
            for (int64_t q = 0; q < K; q++)
                rd[q] = INT64_MIN;
        }
        run = true;
        for (int64_t q = 0; q < K; q++)
            if (d[q] != INT64_MIN) rd[q] = d[q];
        int64_t len = (t + 1 - start + P) / P * P;
        if (len > best && len >= 2 * P) {
            best = len;
            *at = start;
            for (int64_t q = 0; q < K; q++)
                pa[q] = rd[q] == INT64_MIN ? 0 : rd[q];
        }
    }
    return best;
}

/* Makes sg (targets [lo, lo + M P)) periodic with period P. */
static bool set_period(const gax *x, seg *sg, int64_t P, const int64_t *pa)
{
    int64_t K = x->K;
    size_t n = (size_t)(P * K);
    char *mem =
        malloc(n * (sizeof(int64_t) + sizeof(double) + 1) + (size_t)(K + P) * sizeof(int64_t));
    if (!mem) return false;
    sg->pc = (int64_t *)mem;
    sg->pw = (double *)(sg->pc + n);
    sg->pa = (int64_t *)(sg->pw + n);
    sg->pn = sg->pa + K;
    sg->pv = (uint8_t *)(sg->pn + P);
    memcpy(sg->pa, pa, (size_t)K * sizeof *pa);
    for (int64_t r = 0; r < P; r++) {
        sg->pn[r] = x->normed ? fwd_norm(&x->a, sg->lo + r) : 1;
        for (int64_t q = 0; q < K; q++) {
            int64_t k = r * K + q;
            sg->pv[k] = cand_ok(x, sg->lo + r, q, &sg->pc[k], &sg->pw[k]);
        }
    }
    sg->P = P;
    sg->M = (sg->hi - sg->lo) / P;
    return true;
}

/* Targets [lo, hi): one by one when few (and room), else one loop. */
static void add_side(segs *ss, int64_t lo, int64_t hi, bool units)
{
    add_range(ss, lo, hi, units && hi - lo <= MAX_UNIT && ss->n + (hi - lo) < SEGS_MAX);
}

/* The interior (the longest run of targets whose candidates all lie in the
 * source), and the border targets on each side. Each loop keeps its
 * longest stretch with a period up to max_period as a periodic segment,
 * what is left around it written out target by target (or looped, when
 * long). */
static void make_segs(const gax *x, bool loopq, int64_t max_period, segs *ss)
{
    int64_t best_lo = 0, best_len = 0, run = 0;
    for (int64_t t = 0; t < x->T; t++) {
        bool clean = true;
        for (int64_t q = 0; q < x->K && clean; q++) {
            bool v;
            double w;
            int64_t c = cand(x, t, q, &v, &w);
            clean = c >= 0 && c < x->S;
        }
        run = clean ? run + 1 : 0;
        if (run > best_len) {
            best_len = run;
            best_lo = t - run + 1;
        }
    }
    int64_t a = best_lo, b = best_lo + best_len;
    ss->n = 0;
    /* looping over the candidates, constant targets save little */
    add_side(ss, 0, a, !loopq);
    add_range(ss, a, b, !loopq && b - a == 1);
    add_side(ss, b, x->T, !loopq);
    int nloops = ss->n;
    for (int i = 0; i < nloops && !loopq && x->K <= MAXK; i++) {
        seg *sg = &ss->s[i];
        if (sg->unit) continue;
        int64_t best = 0, bestP = 0, at = 0, bat = 0, pa[MAXK], bpa[MAXK];
        for (int64_t P = 1; P <= max_period; P++) {
            int64_t len = period_core(x, sg->lo, sg->hi, P, &at, pa);
            if (len > best) {
                best = len;
                bestP = P;
                bat = at;
                memcpy(bpa, pa, (size_t)x->K * sizeof *pa);
            }
        }
        if (!best) continue;
        int64_t lo = sg->lo, hi = sg->hi;
        sg->lo = bat;
        sg->hi = bat + best;
        if (!set_period(x, sg, bestP, bpa)) {
            sg->lo = lo;
            sg->hi = hi;
            continue;
        }
        add_side(ss, lo, bat, true);
        add_side(ss, bat + best, hi, true);
    }
    for (int i = 0; i < ss->n; i++)
        analyse(x, &ss->s[i], loopq);
}

/* ---- jobs: one nest over a plane's targets ---- */

enum { J_MAX, J_SUM, J_ARGMAX, J_FILL, J_SPREAD };

typedef struct job {
    int kind;
    const gax *h, *w;
    int32_t src, dst;             /* buffers */
    int64_t src_plane, dst_plane; /* elements per plane (0: a per-plane scratch) */
    kiln_dtype src_t, dst_t;
    double fill; /* J_FILL */
    int32_t arg; /* J_SUM: argmax positions (row length w->S), or -1;
                    J_SPREAD: dy (one element per target) */
} job;

/* One candidate, ready to use. */
typedef struct cx {
    bool skip;
    int32_t idx;  /* inside the source */
    int32_t cond; /* -1: always valid */
    int32_t w;    /* -1: weight 1 */
} cx;

static int32_t and_x(kiln_kb *kb, int32_t a, int32_t b)
{
    return a < 0 ? b : b < 0 ? a : BIN(KX_AND, a, b);
}

/* Where a target sits: its expression, and in a periodic segment its phase
 * r and period number m (an expression); r is -1 elsewhere. */
typedef struct tpos {
    int32_t t;
    int r;
    int32_t m;
} tpos;

/* Candidate qi (or the loop variable q, qi -1) of target tp in segment sg. */
static cx cand_for(kiln_kb *kb, const gax *x, const seg *sg, tpos tp, int32_t q, int qi)
{
    int32_t t = tp.t;
    if (sg->P && qi >= 0) {
        int64_t k = tp.r * x->K + qi;
        cx r = {.skip = !sg->pv[k], .idx = -1, .cond = -1, .w = -1};
        if (r.skip) return r;
        r.idx = sg->pa[qi] ? add_c(kb, mul_c(kb, tp.m, sg->pa[qi]), sg->pc[k]) : I64(sg->pc[k]);
        if (x->weighted && sg->pw[k] != 1.0) r.w = F64(sg->pw[k]);
        return r;
    }
    const qm *m = &sg->q[qi < 0 ? 0 : qi];
    cx r = {.skip = m->mode == Q_SKIP, .idx = -1, .cond = -1, .w = -1};
    if (r.skip) return r;
    if (sg->unit && qi >= 0) {
        bool v;
        double w = 1.0;
        r.idx = I64(cand(x, sg->lo, qi, &v, &w));
        if (x->weighted && w != 1.0) r.w = F64(w);
        return r;
    }
    int32_t valid, w;
    int32_t c = cand_x(kb, x, t, q, qi, &valid, &w);
    r.idx = c;
    if (m->mode == Q_COND) {
        if (m->range) {
            r.cond = BIN(KX_AND, BIN(KX_GE, c, I64(0)), BIN(KX_LT, c, I64(x->S)));
            r.idx = BIN(KX_MAX, BIN(KX_MIN, c, I64(x->S - 1)), I64(0));
        }
        if (m->test && valid >= 0) r.cond = and_x(kb, r.cond, valid);
    }
    if (x->weighted) r.w = m->wconst ? (m->w != 1.0 ? F64(m->w) : -1) : w;
    return r;
}

/* plane * per_plane + r * rowlen + c */
static int32_t flat(kiln_kb *kb, int32_t plane, int64_t per_plane, int32_t r, int64_t rowlen,
                    int32_t c)
{
    int32_t i = BIN(KX_ADD, mul_c(kb, r, rowlen), c);
    return per_plane ? BIN(KX_ADD, mul_c(kb, plane, per_plane), i) : i;
}

/* The count an average divides by at (th, tw), as f64. */
static int32_t norm_at(kiln_kb *kb, const job *j, const seg *sh, tpos th, const seg *sw, tpos tw)
{
    bool wc = sw->nconst || sw->P, hc = sh->nconst || sh->P;
    int64_t wv = sw->P ? sw->pn[tw.r] : sw->nval, hv = sh->P ? sh->pn[th.r] : sh->nval;
    if (hc && wc) return F64((double)(hv * wv));
    int32_t nh = hc ? I64(hv) : norm_x(kb, &j->h->a, th.t);
    int32_t nw = wc ? I64(wv) : norm_x(kb, &j->w->a, tw.t);
    return kiln_kx_cast(kb, BIN(KX_MUL, nh, nw), KILN_F64);
}

/* max_pool2d_grad: the argmax of window (ch, cw) is target (th, tw). */
static int32_t argmax_is(kiln_kb *kb, const job *j, int32_t ch, int32_t cw, int32_t th, int32_t tw)
{
    int32_t pos = kiln_kx_load(kb, j->arg, flat(kb, -1, 0, ch, j->w->S, cw));
    return BIN(KX_EQ, kiln_kx_cast(kb, pos, KILN_I64), flat(kb, -1, 0, th, j->w->T, tw));
}

static int32_t pair_load(kiln_kb *kb, const job *j, int32_t plane, const cx *a, const cx *b)
{
    return kiln_kx_load(kb, j->src, flat(kb, plane, j->src_plane, a->idx, j->w->S, b->idx));
}

static void store_out(kiln_kb *kb, const job *j, int32_t plane, int32_t th, int32_t tw, int32_t v)
{
    kiln_kb_store(kb, j->dst, flat(kb, plane, j->dst_plane, th, j->w->T, tw),
                  kiln_kx_cast(kb, v, j->dst_t));
}

/* The argmax scan's step for one candidate pair (value v at position pos,
 * valid when cond): PyTorch's `if (v > m || isnan(v))`, with a < 0 meaning
 * no valid pair yet (the first valid one is taken whatever its value). */
static void argmax_step(kiln_kb *kb, int32_t a, int32_t m, int32_t u, int32_t v, int32_t pos,
                        int32_t cond, bool unset)
{
    int32_t la = kiln_kx_local(kb, a), lm = kiln_kx_local(kb, m);
    int32_t upd = BIN(KX_OR, BIN(KX_GT, v, lm), kiln_kx_un(kb, KX_ISNAN, v));
    if (unset) upd = BIN(KX_OR, BIN(KX_LT, la, I64(0)), upd);
    kiln_kb_set(kb, u, and_x(kb, cond, upd));
    kiln_kb_set(kb, a, kiln_kx_select(kb, kiln_kx_local(kb, u), pos, la));
    kiln_kb_set(kb, m, kiln_kx_select(kb, kiln_kx_local(kb, u), v, lm));
}

/* The body at target (th, tw) with every candidate pair written out. */
static void body_unrolled(kiln_kb *kb, const job *j, int32_t plane, const seg *sh, tpos hp,
                          const seg *sw, tpos tp)
{
    int32_t th = hp.t, tw = tp.t;
    cx ch[MAXK], cw[MAXK];
    int pairs = 0;
    for (int q = 0; q < j->h->K; q++)
        ch[q] = cand_for(kb, j->h, sh, hp, -1, q);
    for (int q = 0; q < j->w->K; q++)
        cw[q] = cand_for(kb, j->w, sw, tp, -1, q);
    for (int a = 0; a < j->h->K; a++)
        for (int b = 0; b < j->w->K; b++)
            pairs += !ch[a].skip && !cw[b].skip;
    kiln_dtype st = j->src_t;
    int32_t v = -1;
    if (j->kind == J_MAX || j->kind == J_FILL) {
        int32_t none = kiln_kx_float(kb, j->kind == J_MAX ? -INFINITY : j->fill, st);
        for (int a = 0; a < j->h->K; a++)
            for (int b = 0; b < j->w->K; b++) {
                if (ch[a].skip || cw[b].skip) continue;
                int32_t x = pair_load(kb, j, plane, &ch[a], &cw[b]);
                int32_t cond = and_x(kb, ch[a].cond, cw[b].cond);
                if (cond >= 0) x = kiln_kx_select(kb, cond, x, none);
                v = v < 0 ? x : BIN(KX_MAX, v, x);
            }
        store_out(kb, j, plane, th, tw, v < 0 ? none : v);
        return;
    }
    if (j->kind == J_ARGMAX || j->kind == J_SPREAD) {
        int32_t la = kiln_kb_local(kb, KILN_I64), lm = kiln_kb_local(kb, st);
        int32_t u = kiln_kb_local(kb, KILN_BOOL);
        bool first = true, unset = false;
        for (int a = 0; a < j->h->K; a++)
            for (int b = 0; b < j->w->K; b++) {
                if (ch[a].skip || cw[b].skip) continue;
                int32_t x = pair_load(kb, j, plane, &ch[a], &cw[b]);
                int32_t pos = flat(kb, -1, 0, ch[a].idx, j->w->S, cw[b].idx);
                int32_t cond = and_x(kb, ch[a].cond, cw[b].cond);
                if (first && cond < 0) {
                    kiln_kb_set(kb, la, pos);
                    kiln_kb_set(kb, lm, x);
                } else {
                    if (first) {
                        kiln_kb_set(kb, la, I64(-1));
                        kiln_kb_set(kb, lm, kiln_kx_float(kb, -INFINITY, st));
                        unset = true;
                    }
                    argmax_step(kb, la, lm, u, x, pos, cond, unset);
                }
                first = false;
            }
        if (first) kiln_kb_set(kb, la, I64(-1));
        if (j->kind == J_ARGMAX) {
            store_out(kb, j, plane, th, tw, kiln_kx_local(kb, la));
            return;
        }
        /* J_SPREAD: the window's dy to its argmax, zeros to its other pixels */
        int32_t d = kiln_kx_load(kb, j->arg, flat(kb, plane, j->h->T * j->w->T, th, j->w->T, tw));
        int32_t zero = kiln_kx_float(kb, 0.0, j->dst_t);
        d = kiln_kx_cast(kb, d, j->dst_t);
        for (int a = 0; a < j->h->K; a++)
            for (int b = 0; b < j->w->K; b++) {
                if (ch[a].skip || cw[b].skip) continue;
                int32_t pos = flat(kb, -1, 0, ch[a].idx, j->w->S, cw[b].idx);
                kiln_kb_store(kb, j->dst,
                              flat(kb, plane, j->dst_plane, ch[a].idx, j->w->S, cw[b].idx),
                              kiln_kx_select(kb, BIN(KX_EQ, kiln_kx_local(kb, la), pos), d, zero));
            }
        return;
    }
    /* J_SUM: exact in the source's dtype for a single pair of weight 1 */
    bool weights = false;
    for (int a = 0; a < j->h->K; a++)
        weights |= !ch[a].skip && ch[a].w >= 0;
    for (int b = 0; b < j->w->K; b++)
        weights |= !cw[b].skip && cw[b].w >= 0;
    bool exact = pairs <= 1 && !weights && !j->h->normed;
    kiln_dtype acc_t = exact ? st : KILN_F64;
    int32_t zero = kiln_kx_float(kb, 0.0, acc_t);
    for (int a = 0; a < j->h->K; a++) {
        if (ch[a].skip) continue;
        int32_t inner = -1;
        for (int b = 0; b < j->w->K; b++) {
            if (cw[b].skip) continue;
            int32_t x = kiln_kx_cast(kb, pair_load(kb, j, plane, &ch[a], &cw[b]), acc_t);
            if (cw[b].w >= 0) x = BIN(KX_MUL, cw[b].w, x);
            int32_t cond = and_x(kb, ch[a].cond, cw[b].cond);
            if (j->arg >= 0) cond = and_x(kb, cond, argmax_is(kb, j, ch[a].idx, cw[b].idx, th, tw));
            if (cond >= 0) x = kiln_kx_select(kb, cond, x, zero);
            inner = inner < 0 ? x : BIN(KX_ADD, inner, x);
        }
        if (inner < 0) continue;
        if (ch[a].w >= 0) inner = BIN(KX_MUL, ch[a].w, inner);
        v = v < 0 ? inner : BIN(KX_ADD, v, inner);
    }
    if (v < 0) v = zero;
    if (j->h->normed) v = BIN(KX_DIV, v, norm_at(kb, j, sh, hp, sw, tp));
    store_out(kb, j, plane, th, tw, v);
}

/* The body at target (th, tw) looping over the candidates (large windows). */
static void body_loops(kiln_kb *kb, const job *j, int32_t plane, const seg *sh, tpos hp,
                       const seg *sw, tpos tp)
{
    int32_t th = hp.t, tw = tp.t;
    kiln_dtype st = j->src_t;
    bool skip = sh->q[0].mode == Q_SKIP || sw->q[0].mode == Q_SKIP;
    int32_t acc, la = -1, lm = -1, u = -1, inner = -1;
    if (j->kind == J_SUM) {
        acc = kiln_kb_local(kb, KILN_F64);
        inner = kiln_kb_local(kb, KILN_F64);
        kiln_kb_set(kb, acc, F64(0.0));
    } else {
        lm = acc = kiln_kb_local(kb, st);
        kiln_kb_set(kb, lm, kiln_kx_float(kb, -INFINITY, st));
        if (j->kind == J_ARGMAX) {
            la = kiln_kb_local(kb, KILN_I64);
            u = kiln_kb_local(kb, KILN_BOOL);
            kiln_kb_set(kb, la, I64(-1));
        }
    }
    if (!skip) {
        int32_t qh = kiln_kx_var(kb, kiln_kb_loop(kb, j->h->K));
        cx ch = cand_for(kb, j->h, sh, hp, qh, -1);
        if (j->kind == J_SUM) kiln_kb_set(kb, inner, F64(0.0));
        int32_t qw = kiln_kx_var(kb, kiln_kb_loop(kb, j->w->K));
        cx cw = cand_for(kb, j->w, sw, tp, qw, -1);
        int32_t x = pair_load(kb, j, plane, &ch, &cw);
        int32_t cond = and_x(kb, ch.cond, cw.cond);
        if (j->kind == J_SUM) {
            kiln_kb_hint(kb, 1, 0); /* a sum into `inner`: reassociated */
            x = kiln_kx_cast(kb, x, KILN_F64);
            if (cw.w >= 0) x = BIN(KX_MUL, cw.w, x);
            if (j->arg >= 0) cond = and_x(kb, cond, argmax_is(kb, j, ch.idx, cw.idx, th, tw));
            if (cond >= 0) x = kiln_kx_select(kb, cond, x, F64(0.0));
            kiln_kb_set(kb, inner, BIN(KX_ADD, kiln_kx_local(kb, inner), x));
        } else if (j->kind == J_MAX) {
            if (cond >= 0) x = kiln_kx_select(kb, cond, x, kiln_kx_float(kb, -INFINITY, st));
            kiln_kb_set(kb, lm, BIN(KX_MAX, kiln_kx_local(kb, lm), x));
        } else {
            argmax_step(kb, la, lm, u, x, flat(kb, -1, 0, ch.idx, j->w->S, cw.idx), cond, true);
        }
        kiln_kb_end(kb);
        if (j->kind == J_SUM) {
            int32_t in = kiln_kx_local(kb, inner);
            if (ch.w >= 0) in = BIN(KX_MUL, ch.w, in);
            kiln_kb_set(kb, acc, BIN(KX_ADD, kiln_kx_local(kb, acc), in));
        }
        kiln_kb_end(kb);
    }
    int32_t v = kiln_kx_local(kb, j->kind == J_ARGMAX ? la : acc);
    if (j->kind == J_SUM && j->h->normed) v = BIN(KX_DIV, v, norm_at(kb, j, sh, hp, sw, tp));
    store_out(kb, j, plane, th, tw, v);
}

/* Opens segment sg's loop (or nothing for a unit) and returns its target. */
static int32_t open_seg(kiln_kb *kb, const seg *sg)
{
    if (sg->unit) return I64(sg->lo);
    return add_c(kb, kiln_kx_var(kb, kiln_kb_loop(kb, sg->hi - sg->lo)), sg->lo);
}

/* One row (or run of rows) of targets hp: every column segment. */
static void emit_row(kiln_kb *kb, const job *j, int32_t plane, const seg *gh, tpos hp,
                     const segs *sw, bool loopq)
{
    for (int b = 0; b < sw->n; b++) {
        const seg *gw = &sw->s[b];
        if (gw->P) {
            /* one iteration per period, its P targets written out */
            int32_t m = kiln_kx_var(kb, kiln_kb_loop(kb, gw->M));
            kiln_kb_hint(kb, 1, 0);
            for (int r = 0; r < gw->P; r++) {
                tpos tp = {add_c(kb, mul_c(kb, m, gw->P), gw->lo + r), r, m};
                body_unrolled(kb, j, plane, gh, hp, gw, tp);
            }
            kiln_kb_end(kb);
            continue;
        }
        tpos tp = {open_seg(kb, gw), -1, -1};
        /* the innermost loop: its iterations are independent */
        if (!gw->unit && !loopq) kiln_kb_hint(kb, 1, 0);
        if (loopq)
            body_loops(kb, j, plane, gh, hp, gw, tp);
        else
            body_unrolled(kb, j, plane, gh, hp, gw, tp);
        if (!gw->unit) kiln_kb_end(kb);
    }
}

/* Writes job j for one plane (inside the plane loop: plane is its variable). */
static kiln_status emit_job(kiln_kb *kb, const job *j, int32_t plane)
{
    bool loopq = j->h->K * j->w->K > UNROLL || j->h->K > MAXK || j->w->K > MAXK;
    /* candidates numbered by an expression: all but the forward ones of
     * upsample and pad, which have at most two per axis */
    if (loopq && (j->kind == J_FILL || (!j->h->bwd && j->h->a.kind != KILN_POOL_WINDOW &&
                                        j->h->a.kind != KILN_POOL_ADAPTIVE)))
        return kiln_kb_fail(kb, KILN_ERR_INTERNAL, "pooling: too many candidates");
    segs *sh = malloc(sizeof *sh), *sw = malloc(sizeof *sw);
    if (!sh || !sw) {
        free(sh);
        free(sw);
        return kiln_kb_fail(kb, KILN_ERR_NOMEM, "out of memory");
    }
    make_segs(j->h, loopq, PERIOD_H, sh);
    make_segs(j->w, loopq, MAX_PERIOD, sw);
    for (int a = 0; a < sh->n; a++) {
        const seg *gh = &sh->s[a];
        if (gh->P) {
            /* rows too: one iteration per period, its P rows written out */
            int32_t m = kiln_kx_var(kb, kiln_kb_loop(kb, gh->M));
            for (int r = 0; r < gh->P; r++) {
                tpos hp = {add_c(kb, mul_c(kb, m, gh->P), gh->lo + r), r, m};
                emit_row(kb, j, plane, gh, hp, sw, loopq);
            }
            kiln_kb_end(kb);
            continue;
        }
        tpos hp = {open_seg(kb, gh), -1, -1};
        emit_row(kb, j, plane, gh, hp, sw, loopq);
        if (!gh->unit) kiln_kb_end(kb);
    }
    segs_free(sh);
    segs_free(sw);
    free(sh);
    free(sw);
    return kiln_kb_status(kb);
}

/* ---- the rules ---- */

static int64_t planes(const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    int64_t hw = n->rank >= 1 ? n->shape[n->rank - 1] : 1;
    if (n->rank >= 2) hw *= n->shape[n->rank - 2]; /* (pad of a vector: H is 1) */
    return hw ? kiln_node_numel(n) / hw : 0;
}

/* One job over every plane (the parallel loop). */
static kiln_status lower_one(kiln_kb *kb, const kiln_graph *g, int32_t node, int kind, bool bwd,
                             bool weighted, bool normed)
{
    const kiln_node *n = &g->nodes[node];
    kiln_pool_axis ah, aw;
    kiln_pool_axes(g, n, &ah, &aw);
    gax h, w;
    if (gax_init(&h, &ah, bwd, weighted, normed, false) ||
        gax_init(&w, &aw, bwd, weighted, normed, false))
        return kiln_kb_fail(kb, KILN_ERR_NOMEM, "out of memory");
    const kiln_node *src = &g->nodes[n->inputs[0]];
    job j = {.kind = kind,
             .h = &h,
             .w = &w,
             .src = kiln_kb_in(kb, 0),
             .dst = kiln_kb_out(kb),
             .src_plane = h.S * w.S,
             .dst_plane = h.T * w.T,
             .src_t = (kiln_dtype)src->dtype,
             .dst_t = (kiln_dtype)n->dtype,
             .arg = -1};
    if (kind == J_FILL) j.fill = kiln_attr_get_float(n, "value");
    int64_t P = planes(g, node);
    if (P == 0 || h.T == 0 || w.T == 0) return kiln_kb_status(kb);
    int32_t p = kiln_kx_var(kb, kiln_kb_loop(kb, P));
    kiln_kb_hint(kb, 0, 1); /* each plane writes its own outputs */
    kiln_status st = emit_job(kb, &j, p);
    kiln_kb_end(kb);
    return st ? st : kiln_kb_status(kb);
}

kiln_status kiln_max_pool2d_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_MAX, false, false, false);
}

kiln_status kiln_avg_pool2d_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, false, false, true);
}

kiln_status kiln_adaptive_avg_pool2d_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, false, false, true);
}

kiln_status kiln_upsample_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, false, true, false);
}

kiln_status kiln_pad_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_FILL, false, false, false);
}

kiln_status kiln_avg_pool2d_grad_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, true, true, false);
}

kiln_status kiln_adaptive_avg_pool2d_grad_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, true, true, false);
}

kiln_status kiln_upsample_grad_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, true, true, false);
}

kiln_status kiln_pad_grad_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_one(kb, g, node, J_SUM, true, false, false);
}

/* The runs of [0, L) no window covers, into runs[2 * i], runs[2 * i + 1];
 * returns their count, or -1 past `max`. */
static int uncovered(const kiln_pool_axis *a, int64_t *runs, int max)
{
    bool *cov = calloc((size_t)(a->L ? a->L : 1), 1);
    if (!cov) return -1;
    for (int64_t o = 0; o < a->O; o++)
        for (int64_t j = 0; j < a->k; j++) {
            int64_t i = o * a->s - a->p + j * a->d;
            if (i >= 0 && i < a->L) cov[i] = true;
        }
    int n = 0;
    for (int64_t i = 0; i < a->L && n >= 0; i++) {
        if (cov[i] || (i > 0 && !cov[i - 1])) continue;
        int64_t e = i;
        while (e < a->L && !cov[e])
            e++;
        if (n == max)
            n = -1;
        else {
            runs[2 * n] = i;
            runs[2 * n + 1] = e;
            n++;
        }
    }
    free(cov);
    return n;
}

/* Whether every candidate of every segment is unconditional (or never). */
static bool no_conditions(const gax *x, int64_t max_period)
{
    segs *ss = malloc(sizeof *ss);
    if (!ss) return false;
    make_segs(x, false, max_period, ss);
    bool ok = true;
    for (int i = 0; i < ss->n && ok; i++)
        for (int64_t q = 0; q < x->K && !ss->s[i].P; q++)
            ok &= ss->s[i].q[q].mode != Q_COND;
    segs_free(ss);
    free(ss);
    return ok;
}

/* out[rows [h0, h1), columns [w0, w1)] = 0 in this plane */
static void zero_block(kiln_kb *kb, int32_t out, int32_t plane, int64_t per_plane, int64_t W,
                       int64_t h0, int64_t h1, int64_t w0, int64_t w1, kiln_dtype t)
{
    int32_t h = add_c(kb, kiln_kx_var(kb, kiln_kb_loop(kb, h1 - h0)), h0);
    int32_t w = add_c(kb, kiln_kx_var(kb, kiln_kb_loop(kb, w1 - w0)), w0);
    kiln_kb_hint(kb, 1, 0);
    kiln_kb_store(kb, out, flat(kb, plane, per_plane, h, W, w), kiln_kx_float(kb, 0.0, t));
    kiln_kb_end(kb);
    kiln_kb_end(kb);
}

/* Windows that do not overlap (stride >= dilated kernel on both axes) and
 * need no run-time tests: each input pixel has at most one window, so the
 * gather is written window by window — the argmax scan, then dy to the
 * argmax and 0 to the window's other pixels — plus zeros where no window
 * reaches. No scratch, and the loads and stores of a window come in
 * interleaved groups that vectorize. */
static bool spread_lower(kiln_kb *kb, const kiln_graph *g, int32_t node, const gax *fh,
                         const gax *fw, kiln_status *st)
{
    const kiln_node *n = &g->nodes[node], *x = &g->nodes[n->inputs[0]];
    const kiln_pool_axis *ah = &fh->a, *aw = &fw->a;
    int64_t rh[8], rw[8];
    if (ah->s < keff(ah) || aw->s < keff(aw) || fh->K * fw->K > UNROLL) return false;
    int nh = uncovered(ah, rh, 4), nw = uncovered(aw, rw, 4);
    if (nh < 0 || nw < 0 || !no_conditions(fh, PERIOD_H) || !no_conditions(fw, MAX_PERIOD))
        return false;
    int32_t xb = kiln_kb_in(kb, 0), dyb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    kiln_dtype t = (kiln_dtype)n->dtype;
    int64_t per = ah->L * aw->L, P = planes(g, node);
    job spread = {.kind = J_SPREAD,
                  .h = fh,
                  .w = fw,
                  .src = xb,
                  .dst = out,
                  .src_plane = per,
                  .dst_plane = per,
                  .src_t = (kiln_dtype)x->dtype,
                  .dst_t = t,
                  .arg = dyb};
    int32_t p = kiln_kx_var(kb, kiln_kb_loop(kb, P));
    kiln_kb_hint(kb, 0, 1); /* each plane writes its own pixels */
    for (int i = 0; i < nh; i++)
        zero_block(kb, out, p, per, aw->L, rh[2 * i], rh[2 * i + 1], 0, aw->L, t);
    /* uncovered columns of the covered rows */
    for (int i = 0; i < nw; i++) {
        int64_t h = 0;
        for (int k = 0; k <= nh; k++) {
            int64_t e = k < nh ? rh[2 * k] : ah->L;
            if (e > h) zero_block(kb, out, p, per, aw->L, h, e, rw[2 * i], rw[2 * i + 1], t);
            if (k < nh) h = rh[2 * k + 1];
        }
    }
    *st = emit_job(kb, &spread, p);
    kiln_kb_end(kb);
    if (!*st) *st = kiln_kb_status(kb);
    return true;
}

/* Per plane: the argmax of every window into a scratch array, then every
 * input pixel gathers dy from the windows whose argmax it is (or, for
 * windows that do not overlap, spread_lower). */
kiln_status kiln_max_pool2d_grad_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node], *x = &g->nodes[n->inputs[0]];
    kiln_pool_axis ah, aw;
    kiln_pool_axes(g, n, &ah, &aw);
    gax fh, fw, bh, bw;
    if (gax_init(&fh, &ah, false, false, false, false) ||
        gax_init(&fw, &aw, false, false, false, false) ||
        gax_init(&bh, &ah, true, false, false, true) ||
        gax_init(&bw, &aw, true, false, false, true))
        return kiln_kb_fail(kb, KILN_ERR_NOMEM, "out of memory");
    int64_t P = planes(g, node);
    if (P == 0) return kiln_kb_status(kb);
    kiln_status st = KILN_OK;
    if (spread_lower(kb, g, node, &fh, &fw, &st)) return st;
    int32_t xb = kiln_kb_in(kb, 0), dyb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    kiln_dtype pos_t = ah.L * aw.L < INT32_MAX ? KILN_I32 : KILN_I64;
    int32_t arg = kiln_kb_scratch(kb, pos_t, ah.O * aw.O);
    job scan = {.kind = J_ARGMAX,
                .h = &fh,
                .w = &fw,
                .src = xb,
                .dst = arg,
                .src_plane = ah.L * aw.L,
                .dst_plane = 0,
                .src_t = (kiln_dtype)x->dtype,
                .dst_t = pos_t,
                .arg = -1};
    job gather = {.kind = J_SUM,
                  .h = &bh,
                  .w = &bw,
                  .src = dyb,
                  .dst = out,
                  .src_plane = ah.O * aw.O,
                  .dst_plane = ah.L * aw.L,
                  .src_t = (kiln_dtype)x->dtype,
                  .dst_t = (kiln_dtype)n->dtype,
                  .arg = arg};
    int32_t p = kiln_kx_var(kb, kiln_kb_loop(kb, P));
    kiln_kb_hint(kb, 0, 1); /* each plane writes its own outputs (and its own scratch) */
    st = emit_job(kb, &scan, p);
    if (!st) st = emit_job(kb, &gather, p);
    kiln_kb_end(kb);
    return st ? st : kiln_kb_status(kb);
}
