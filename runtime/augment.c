/* runtime/augment.c — geometry of image batches: the random affine map of a
 * training sample (flip, rotation, zoom, padded crop), sampling an image or
 * a mask through a map at any output size, moving a point with it, and the
 * antialiased resize used when a data set is opened.
 *
 * One map serves the image, its mask and its point, so they stay together:
 * the image and the mask are sampled at m(o) for every output pixel centre
 * o, and the point goes to m^-1(p). Resizing is the same sampling at another
 * output size (the coordinates are normalised; see runtime/imgdata.h).
 * Borders are reflected, as fastai's default padding_mode="reflection".
 */
#include "runtime/imgdata.h"
#include "runtime/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

kiln_augment kiln_augment_defaults(void)
{
    kiln_augment a;
    a.p_flip = 0.5;
    a.pad = 4;
    a.p_crop = 0.5;
    a.max_rotate = 10;
    a.p_rotate = 0.5;
    a.max_zoom = 1.1;
    a.p_zoom = 0.5;
    return a;
}

/* ---- maps ----------------------------------------------------------------- */

void kiln_affine_identity(double m[6])
{
    m[0] = 1, m[1] = 0, m[2] = 0;
    m[3] = 0, m[4] = 1, m[5] = 0;
}

int kiln_affine_is_identity(const double m[6])
{
    return m[0] == 1 && m[1] == 0 && m[2] == 0 && m[3] == 0 && m[4] == 1 && m[5] == 0;
}

/* m = a ∘ b (b first). */
static void compose(double m[6], const double a[6], const double b[6])
{
    double r[6];
    r[0] = a[0] * b[0] + a[1] * b[3];
    r[1] = a[0] * b[1] + a[1] * b[4];
    r[2] = a[0] * b[2] + a[1] * b[5] + a[2];
    r[3] = a[3] * b[0] + a[4] * b[3];
    r[4] = a[3] * b[1] + a[4] * b[4];
    r[5] = a[3] * b[2] + a[4] * b[5] + a[5];
    memcpy(m, r, sizeof r);
}

/* The stream of epoch `epoch`: both go through splitmix64's finaliser. */
static uint64_t mix(uint64_t seed, int64_t epoch)
{
    uint64_t z = seed * 0x9e3779b97f4a7c15ull ^ ((uint64_t)epoch + 0x61756775u); /* "augu" */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void kiln_augment_draw(const kiln_augment *a, uint64_t seed, int64_t epoch, int64_t index,
                       double aspect, int ow, int oh, double m[6])
{
    kiln_affine_identity(m);
    if (!a) return;
    kiln_rng r;
    kiln_rng_seed_stream(&r, mix(seed, epoch), (uint64_t)index);
    /* always the same draws, so turning one transform off leaves the
     * others as they were */
    double u[10];
    for (int k = 0; k < 10; k++) u[k] = kiln_rng_uniform(&r);
    if (!(aspect > 0)) aspect = 1;
    double t[6];
    if (u[0] < a->p_flip) { /* x -> -x */
        double f[6] = {-1, 0, 0, 0, 1, 0};
        compose(m, f, m);
    }
    if (u[1] < a->p_rotate && a->max_rotate > 0) {
        /* a rotation in pixel space: x scaled by the aspect, then back */
        double th = (2 * u[2] - 1) * a->max_rotate * 3.14159265358979323846 / 180.0;
        double c = cos(th), s = sin(th);
        t[0] = c, t[1] = -s / aspect, t[2] = 0;
        t[3] = s * aspect, t[4] = c, t[5] = 0;
        compose(m, t, m);
    }
    if (u[3] < a->p_zoom && a->max_zoom > 1) {
        /* view 1/z of the image about a centre that keeps it inside */
        double z = 1 + u[4] * (a->max_zoom - 1), room = 1 - 1 / z;
        t[0] = 1 / z, t[1] = 0, t[2] = (2 * u[5] - 1) * room;
        t[3] = 0, t[4] = 1 / z, t[5] = (2 * u[6] - 1) * room;
        compose(m, t, m);
    }
    if (u[7] < a->p_crop && a->pad > 0 && ow > 0 && oh > 0) {
        /* pad by `pad` pixels, crop back: a whole-pixel shift in [-pad, pad] */
        int span = 2 * a->pad + 1;
        int dx = (int)(u[8] * span) - a->pad, dy = (int)(u[9] * span) - a->pad;
        if (dx > a->pad) dx = a->pad;
        if (dy > a->pad) dy = a->pad;
        t[0] = 1, t[1] = 0, t[2] = 2.0 * dx / ow;
        t[3] = 0, t[4] = 1, t[5] = 2.0 * dy / oh;
        compose(m, t, m);
    }
}

void kiln_affine_point(const double m[6], const float src[2], float out[2])
{
    double det = m[0] * m[4] - m[1] * m[3];
    double sx = src[1] - m[2], sy = src[0] - m[5];
    if (det == 0) { /* not from kiln_augment_draw; leave the point */
        out[0] = src[0];
        out[1] = src[1];
        return;
    }
    double x = (m[4] * sx - m[1] * sy) / det, y = (-m[3] * sx + m[0] * sy) / det;
    out[0] = (float)y;
    out[1] = (float)x;
}

/* ---- sampling ------------------------------------------------------------- */

/* p (in pixel-centre units: pixel k's centre is k) reflected into
 * [-0.5, n - 0.5], the image's extent. */
static double reflect(double p, int n)
{
    if (p >= -0.5 && p <= n - 0.5) return p;
    double span = n, t = fmod(p + 0.5, 2 * span);
    if (t < 0) t += 2 * span;
    if (t > span) t = 2 * span - t;
    return t - 0.5;
}

static int clampi(int v, int n)
{
    return v < 0 ? 0 : v >= n ? n - 1 : v;
}

void kiln_warp_image(const uint8_t *src, int sw, int sh, int c, const double m[6], int ow,
                     int oh, const float lut[2], float *dst)
{
    const size_t plane = (size_t)ow * oh;
    for (int i = 0; i < oh; i++) {
        double oy = (2.0 * i + 1) / oh - 1;
        for (int j = 0; j < ow; j++) {
            double ox = (2.0 * j + 1) / ow - 1;
            double sx = m[0] * ox + m[1] * oy + m[2], sy = m[3] * ox + m[4] * oy + m[5];
            double px = reflect((sx + 1) * sw / 2 - 0.5, sw);
            double py = reflect((sy + 1) * sh / 2 - 0.5, sh);
            double fx0 = floor(px), fy0 = floor(py);
            double fx = px - fx0, fy = py - fy0;
            int x0 = clampi((int)fx0, sw), x1 = clampi((int)fx0 + 1, sw);
            int y0 = clampi((int)fy0, sh), y1 = clampi((int)fy0 + 1, sh);
            const uint8_t *r0 = src + (size_t)y0 * sw * c, *r1 = src + (size_t)y1 * sw * c;
            for (int k = 0; k < c; k++) {
                double top = r0[x0 * c + k] + fx * (r0[x1 * c + k] - r0[x0 * c + k]);
                double bot = r1[x0 * c + k] + fx * (r1[x1 * c + k] - r1[x0 * c + k]);
                double v = top + fy * (bot - top);
                dst[k * plane + (size_t)i * ow + j] = lut[0] + (float)v * lut[1];
            }
        }
    }
}

void kiln_warp_mask(const uint8_t *src, int sw, int sh, const double m[6], int ow, int oh,
                    int32_t *dst)
{
    for (int i = 0; i < oh; i++) {
        double oy = (2.0 * i + 1) / oh - 1;
        for (int j = 0; j < ow; j++) {
            double ox = (2.0 * j + 1) / ow - 1;
            double sx = m[0] * ox + m[1] * oy + m[2], sy = m[3] * ox + m[4] * oy + m[5];
            double px = reflect((sx + 1) * sw / 2 - 0.5, sw);
            double py = reflect((sy + 1) * sh / 2 - 0.5, sh);
            int x = clampi((int)floor(px + 0.5), sw), y = clampi((int)floor(py + 0.5), sh);
            dst[(size_t)i * ow + j] = src[(size_t)y * sw + x];
        }
    }
}

/* ---- resizing when a set is opened ---------------------------------------- */

/* Taps of a 1-D resize from n to m samples: for output k, the inputs
 * first[k] .. first[k] + count[k] - 1 with weights w[k * taps ...]. */
typedef struct taps {
    int taps;
    int *first, *count;
    float *w;
} taps;

static void taps_free(taps *t)
{
    free(t->first);
    free(t->count);
    free(t->w);
}

static int taps_make(taps *t, int n, int m)
{
    double scale = (double)n / m, fs = scale > 1 ? scale : 1, support = fs; /* triangle: 1 */
    t->taps = (int)ceil(support) * 2 + 1;
    t->first = malloc(sizeof *t->first * (size_t)m);
    t->count = malloc(sizeof *t->count * (size_t)m);
    t->w = malloc(sizeof *t->w * (size_t)m * (size_t)t->taps);
    if (!t->first || !t->count || !t->w) {
        taps_free(t);
        return -1;
    }
    for (int k = 0; k < m; k++) {
        double centre = (k + 0.5) * scale;
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > n) hi = n;
        if (hi - lo > t->taps) hi = lo + t->taps;
        double sum = 0;
        float *w = t->w + (size_t)k * t->taps;
        for (int x = lo; x < hi; x++) {
            double d = fabs((x - centre + 0.5) / fs);
            w[x - lo] = d < 1 ? (float)(1 - d) : 0;
            sum += w[x - lo];
        }
        if (sum > 0)
            for (int x = lo; x < hi; x++) w[x - lo] = (float)(w[x - lo] / sum);
        t->first[k] = lo;
        t->count[k] = hi - lo;
    }
    return 0;
}

int kiln_resize_u8(const uint8_t *src, int sw, int sh, int c, uint8_t *dst, int dw, int dh)
{
    if (sw == dw && sh == dh) {
        memcpy(dst, src, (size_t)sw * sh * c);
        return 0;
    }
    taps tv, th;
    memset(&tv, 0, sizeof tv);
    memset(&th, 0, sizeof th);
    float *tmp = malloc(sizeof *tmp * (size_t)sw * dh * c);
    if (!tmp || taps_make(&tv, sh, dh) || taps_make(&th, sw, dw)) {
        free(tmp);
        taps_free(&tv);
        taps_free(&th);
        return -1;
    }
    /* vertical into tmp (dh rows of sw pixels), then horizontal */
    const size_t srow = (size_t)sw * c;
    for (int y = 0; y < dh; y++) {
        float *o = tmp + (size_t)y * srow;
        const float *w = tv.w + (size_t)y * tv.taps;
        for (size_t k = 0; k < srow; k++) {
            float s = 0;
            for (int t = 0; t < tv.count[y]; t++)
                s += w[t] * src[(size_t)(tv.first[y] + t) * srow + k];
            o[k] = s;
        }
    }
    for (int y = 0; y < dh; y++) {
        const float *row = tmp + (size_t)y * srow;
        for (int x = 0; x < dw; x++) {
            const float *w = th.w + (size_t)x * th.taps;
            for (int k = 0; k < c; k++) {
                float s = 0;
                for (int t = 0; t < th.count[x]; t++)
                    s += w[t] * row[(size_t)(th.first[x] + t) * c + k];
                long v = lroundf(s);
                dst[((size_t)y * dw + x) * c + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    free(tmp);
    taps_free(&tv);
    taps_free(&th);
    return 0;
}

void kiln_resize_nearest(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh)
{
    for (int y = 0; y < dh; y++) {
        int sy = clampi((int)floor((y + 0.5) * sh / dh), sh);
        for (int x = 0; x < dw; x++) {
            int sx = clampi((int)floor((x + 0.5) * sw / dw), sw);
            dst[(size_t)y * dw + x] = src[(size_t)sy * sw + sx];
        }
    }
}
