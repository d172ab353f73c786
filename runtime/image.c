/* runtime/image.c — PNG (libpng) and JPEG (libjpeg-turbo) decoding and
 * encoding; see runtime/image.h for what is read and how errors read.
 *
 * Both libraries report errors by longjmp. Everything the error path needs
 * (the library state, the buffers allocated so far) lives in one context
 * struct reached through a pointer that is never reassigned, so no local
 * variable is live across the setjmp.
 */
#include "runtime/image.h"
#include "ir/util.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h>
#include <jerror.h>

/* Pixels in one image at most (about 1 GiB of RGBA): larger headers are
 * refused before anything is allocated. */
#define MAX_PIXELS ((uint64_t)1 << 28)

void kiln_img_free(kiln_img *im)
{
    if (!im) return;
    free(im->px);
    memset(im, 0, sizeof *im);
}

/* ---- whole files ---------------------------------------------------------- */

static kiln_status read_all(const char *path, uint8_t **out, size_t *n, char **err)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return kiln_set_err(err, KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0)
        cap = (size_t)sb.st_size + 1; /* +1: the read that sees EOF needs room */
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory reading it", path);
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        cap *= 2;
        uint8_t *g = realloc(buf, cap);
        if (!g) free(buf);
        buf = g;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return kiln_set_err(err, KILN_ERR_IO, "%s: read error", path);
    }
    *out = buf;
    *n = len;
    return KILN_OK;
}

/* ---- PNG ------------------------------------------------------------------ */

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

typedef struct png_ctx {
    const char *name;
    const uint8_t *p;
    size_t n, off;
    int truncated;
    char msg[256];
    png_structp png;
    png_infop info;
    uint8_t *px;
    png_bytep *rows;
} png_ctx;

static void png_read_mem(png_structp png, png_bytep out, size_t len)
{
    png_ctx *x = png_get_io_ptr(png);
    if (len > x->n - x->off) {
        x->truncated = 1;
        png_error(png, "unexpected end of file");
    }
    memcpy(out, x->p + x->off, len);
    x->off += len;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_ctx *x = png_get_error_ptr(png);
    if (x && !x->msg[0]) snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* benign (an unknown chunk, a bad gamma): the image is read */
}

static void png_ctx_release(png_ctx *x)
{
    if (x->png) png_destroy_read_struct(&x->png, x->info ? &x->info : NULL, NULL);
    x->png = NULL;
    x->info = NULL;
    free(x->rows);
    x->rows = NULL;
    free(x->px);
    x->px = NULL;
}

/* After png_read_image in KILN_IMG_INDEX mode: 16-bit samples (big-endian)
 * to bytes, RGB to one channel. Returns 0, or fills x->msg. */
static int png_index_finish(png_ctx *x, int w, int h, int ch, int depth, kiln_img *out)
{
    int64_t npx = (int64_t)w * h;
    uint8_t *o = malloc((size_t)npx + 1);
    if (!o) {
        snprintf(x->msg, sizeof x->msg, "out of memory");
        return -1;
    }
    for (int r = 0; r < h; r++) {
        const uint8_t *row = x->rows[r];
        for (int c = 0; c < w; c++) {
            unsigned v[3];
            for (int k = 0; k < ch && k < 3; k++) {
                const uint8_t *s = row + ((size_t)c * ch + k) * (depth == 16 ? 2 : 1);
                v[k] = depth == 16 ? (unsigned)s[0] << 8 | s[1] : s[0];
            }
            if (ch >= 3 && (v[0] != v[1] || v[1] != v[2])) {
                snprintf(x->msg, sizeof x->msg,
                         "unsupported: an RGB mask with color (%u, %u, %u) at (%d, %d); masks "
                         "must be gray or palette images holding class ids", v[0], v[1], v[2],
                         c, r);
                free(o);
                return -1;
            }
            if (v[0] > 255) {
                snprintf(x->msg, sizeof x->msg,
                         "unsupported: class id %u at (%d, %d) is above 255", v[0], c, r);
                free(o);
                return -1;
            }
            o[(size_t)r * w + c] = (uint8_t)v[0];
        }
    }
    out->w = w;
    out->h = h;
    out->c = 1;
    out->px = o;
    return 0;
}

static kiln_status png_decode(png_ctx *x, kiln_img_mode mode, kiln_img *out, char **err)
{
    x->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, x, png_on_error, png_on_warning);
    if (x->png) x->info = png_create_info_struct(x->png);
    if (!x->png || !x->info) {
        png_ctx_release(x);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", x->name);
    }
    if (setjmp(png_jmpbuf(x->png))) {
        png_ctx_release(x);
        if (x->truncated)
            return kiln_set_err(err, KILN_ERR_CORRUPT,
                                "%s: truncated PNG (the file ends after %zu bytes)", x->name,
                                x->n);
        return kiln_set_err(err, KILN_ERR_CORRUPT, "%s: corrupt PNG: %s", x->name, x->msg);
    }
    png_set_read_fn(x->png, x, png_read_mem);
    png_read_info(x->png, x->info);
    png_uint_32 w32, h32;
    int depth, ctype, interlace;
    png_get_IHDR(x->png, x->info, &w32, &h32, &depth, &ctype, &interlace, NULL, NULL);
    if ((uint64_t)w32 * h32 > MAX_PIXELS) {
        png_ctx_release(x);
        return kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                            "%s: unsupported: %lux%lu pixels (at most %llu in one image)",
                            x->name, (unsigned long)w32, (unsigned long)h32,
                            (unsigned long long)MAX_PIXELS);
    }
    int w = (int)w32, h = (int)h32;
    int has_trns = png_get_valid(x->png, x->info, PNG_INFO_tRNS) != 0;
    if (mode == KILN_IMG_INDEX) {
        /* indices and levels as they are: only unpack sub-byte samples */
        if (depth < 8) png_set_packing(x->png);
        if (ctype & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(x->png);
    } else {
        if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(x->png);
        if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(x->png);
        if (has_trns) png_set_tRNS_to_alpha(x->png);
        if (depth == 16) png_set_scale_16(x->png);
    }
    png_set_interlace_handling(x->png);
    png_read_update_info(x->png, x->info);
    int ch = png_get_channels(x->png, x->info);
    int odepth = png_get_bit_depth(x->png, x->info);
    size_t rowbytes = png_get_rowbytes(x->png, x->info);
    x->px = malloc(rowbytes * (size_t)h + 1);
    x->rows = malloc(sizeof *x->rows * (size_t)h + 1);
    if (!x->px || !x->rows) {
        png_ctx_release(x);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory (%dx%d pixels)", x->name,
                            w, h);
    }
    for (int r = 0; r < h; r++) x->rows[r] = x->px + (size_t)r * rowbytes;
    png_read_image(x->png, x->rows);
    png_read_end(x->png, NULL);
    if (mode == KILN_IMG_INDEX && (odepth == 16 || ch > 1)) {
        int bad = png_index_finish(x, w, h, ch, odepth, out);
        png_ctx_release(x);
        if (bad)
            return kiln_set_err(err, strncmp(x->msg, "out of", 6) ? KILN_ERR_UNSUPPORTED
                                                                  : KILN_ERR_NOMEM,
                                "%s: %s", x->name, x->msg);
        return KILN_OK;
    }
    out->w = w;
    out->h = h;
    out->c = ch;
    out->px = x->px; /* rowbytes == w * ch: 8-bit samples here */
    x->px = NULL;
    png_ctx_release(x);
    return KILN_OK;
}

/* ---- JPEG ----------------------------------------------------------------- */

typedef struct jpg_ctx {
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr em;
    jmp_buf jb;
    int eof;
    char msg[JMSG_LENGTH_MAX];
    uint8_t *px;
} jpg_ctx;

static void jpg_error_exit(j_common_ptr c)
{
    jpg_ctx *x = (jpg_ctx *)c->client_data;
    (*c->err->format_message)(c, x->msg);
    longjmp(x->jb, 1);
}

static void jpg_emit(j_common_ptr c, int level)
{
    jpg_ctx *x = (jpg_ctx *)c->client_data;
    /* Warnings (level -1): only running out of data matters; others (stray
     * bytes before a marker) leave a usable image, as PIL reads it. */
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) x->eof = 1;
}

static kiln_status jpg_decode(const char *name, const uint8_t *p, size_t n, kiln_img_mode mode,
                              jpg_ctx *x, kiln_img *out, char **err)
{
    x->d.err = jpeg_std_error(&x->em);
    x->em.error_exit = jpg_error_exit;
    x->em.emit_message = jpg_emit;
    x->d.client_data = x;
    if (setjmp(x->jb)) {
        jpeg_destroy_decompress(&x->d);
        free(x->px);
        x->px = NULL;
        if (x->eof)
            return kiln_set_err(err, KILN_ERR_CORRUPT,
                                "%s: truncated JPEG (the file ends after %zu bytes)", name, n);
        return kiln_set_err(err, KILN_ERR_CORRUPT, "%s: corrupt JPEG: %s", name, x->msg);
    }
    jpeg_create_decompress(&x->d);
    jpeg_mem_src(&x->d, p, (unsigned long)n);
    jpeg_read_header(&x->d, TRUE);
    J_COLOR_SPACE cs = x->d.jpeg_color_space;
    if (cs == JCS_CMYK || cs == JCS_YCCK) {
        jpeg_destroy_decompress(&x->d);
        return kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                            "%s: unsupported: a CMYK JPEG (save it as RGB)", name);
    }
    x->d.out_color_space = cs == JCS_GRAYSCALE ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&x->d);
    int w = (int)x->d.output_width, h = (int)x->d.output_height, ch = x->d.output_components;
    if ((uint64_t)w * (uint64_t)h > MAX_PIXELS) {
        jpeg_destroy_decompress(&x->d);
        return kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                            "%s: unsupported: %dx%d pixels (at most %llu in one image)", name, w,
                            h, (unsigned long long)MAX_PIXELS);
    }
    x->px = malloc((size_t)w * h * ch + 1);
    if (!x->px) {
        jpeg_destroy_decompress(&x->d);
        return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory (%dx%d pixels)", name, w, h);
    }
    while (x->d.output_scanline < x->d.output_height) {
        JSAMPROW row = x->px + (size_t)x->d.output_scanline * w * ch;
        jpeg_read_scanlines(&x->d, &row, 1);
    }
    if (!x->eof) jpeg_finish_decompress(&x->d);
    jpeg_destroy_decompress(&x->d);
    if (x->eof) {
        free(x->px);
        x->px = NULL;
        return kiln_set_err(err, KILN_ERR_CORRUPT,
                            "%s: truncated JPEG (the file ends after %zu bytes)", name, n);
    }
    out->w = w;
    out->h = h;
    out->c = ch;
    out->px = x->px;
    x->px = NULL;
    if (mode == KILN_IMG_INDEX && ch != 1) {
        /* a color JPEG as a mask: accept it only when it is gray in RGB */
        for (int64_t k = 0; k < (int64_t)w * h; k++) {
            const uint8_t *s = out->px + k * 3;
            if (s[0] != s[1] || s[1] != s[2]) {
                kiln_img_free(out);
                return kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                                    "%s: unsupported: a color JPEG as a mask; masks must be "
                                    "gray or palette PNGs holding class ids", name);
            }
        }
        kiln_img_convert(out, 1);
    }
    return KILN_OK;
}

/* ---- decoding ------------------------------------------------------------- */

kiln_status kiln_img_decode_mem(const char *name, const uint8_t *bytes, size_t n,
                                kiln_img_mode mode, kiln_img *out, char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_img_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!name) name = "(image)";
    if (n == 0) return kiln_set_err(err, KILN_ERR_CORRUPT, "%s: empty file (not an image)", name);
    if (!bytes) return kiln_set_err(err, KILN_ERR_INVALID, "%s: no bytes", name);
    size_t k = n < 8 ? n : 8;
    if (!memcmp(bytes, png_sig, k)) {
        if (n < 8)
            return kiln_set_err(err, KILN_ERR_CORRUPT,
                                "%s: truncated PNG (the file ends after %zu bytes)", name, n);
        png_ctx *x = calloc(1, sizeof *x);
        if (!x) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", name);
        x->name = name;
        x->p = bytes;
        x->n = n;
        kiln_status st = png_decode(x, mode, out, err);
        free(x);
        return st;
    }
    if (bytes[0] == 0xff && (n < 2 || bytes[1] == 0xd8) && (n < 3 || bytes[2] == 0xff)) {
        if (n < 4)
            return kiln_set_err(err, KILN_ERR_CORRUPT,
                                "%s: truncated JPEG (the file ends after %zu bytes)", name, n);
        jpg_ctx *x = calloc(1, sizeof *x);
        if (!x) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", name);
        kiln_status st = jpg_decode(name, bytes, n, mode, x, out, err);
        free(x);
        return st;
    }
    return kiln_set_err(err, KILN_ERR_CORRUPT,
                        "%s: not an image: it starts with neither the PNG nor the JPEG signature",
                        name);
}

kiln_status kiln_img_decode(const char *path, kiln_img_mode mode, kiln_img *out, char **err)
{
    if (err) *err = NULL;
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_img_decode: NULL argument");
    uint8_t *bytes;
    size_t n;
    kiln_status st = read_all(path, &bytes, &n, err);
    if (st) return st;
    st = kiln_img_decode_mem(path, bytes, n, mode, out, err);
    free(bytes);
    return st;
}

/* ---- channels ------------------------------------------------------------- */

kiln_status kiln_img_convert(kiln_img *im, int c)
{
    if (!im || c < 1 || c > 4 || im->c < 1 || im->c > 4) return KILN_ERR_INVALID;
    if (im->c == c) return KILN_OK;
    int64_t n = (int64_t)im->w * im->h;
    uint8_t *o = malloc((size_t)n * c + 1);
    if (!o) return KILN_ERR_NOMEM;
    const int ci = im->c;
    for (int64_t k = 0; k < n; k++) {
        const uint8_t *s = im->px + k * ci;
        uint8_t *d = o + k * c;
        unsigned a = ci == 2 ? s[1] : ci == 4 ? s[3] : 255;
        if (c <= 2) {
            unsigned g = ci <= 2 ? s[0] : (299u * s[0] + 587u * s[1] + 114u * s[2] + 500u) / 1000u;
            d[0] = (uint8_t)g;
            if (c == 2) d[1] = (uint8_t)a;
        } else {
            for (int j = 0; j < 3; j++) d[j] = ci <= 2 ? s[0] : s[j];
            if (c == 4) d[3] = (uint8_t)a;
        }
    }
    free(im->px);
    im->px = o;
    im->c = c;
    return KILN_OK;
}

/* ---- writing -------------------------------------------------------------- */

typedef struct pngw_ctx {
    FILE *f;
    png_structp png;
    png_infop info;
    char msg[256];
    png_bytep *rows;
} pngw_ctx;

static void pngw_on_error(png_structp png, png_const_charp msg)
{
    pngw_ctx *x = png_get_error_ptr(png);
    if (x && !x->msg[0]) snprintf(x->msg, sizeof x->msg, "%s", msg);
    png_longjmp(png, 1);
}

static kiln_status png_write_ctx(pngw_ctx *x, const char *path, const void *pixels, int w, int h,
                                 int c, int bit_depth, const uint8_t *palette, int npal,
                                 char **err)
{
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    size_t bps = bit_depth == 16 ? 2 : 1;
    x->rows = malloc(sizeof *x->rows * (size_t)h + 1);
    if (!x->rows) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    for (int r = 0; r < h; r++)
        x->rows[r] = (png_bytep)pixels + (size_t)r * w * c * bps;
    x->f = fopen(path, "wb");
    if (!x->f) {
        kiln_status st = kiln_set_err(err, KILN_ERR_IO, "%s: cannot create: %s", path,
                                      strerror(errno));
        free(x->rows);
        return st;
    }
    x->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, x, pngw_on_error, png_on_warning);
    if (x->png) x->info = png_create_info_struct(x->png);
    if (!x->png || !x->info) {
        snprintf(x->msg, sizeof x->msg, "out of memory");
        goto fail;
    }
    if (setjmp(png_jmpbuf(x->png))) goto fail;
    png_init_io(x->png, x->f);
    png_set_IHDR(x->png, x->info, (png_uint_32)w, (png_uint_32)h, bit_depth,
                 palette ? PNG_COLOR_TYPE_PALETTE : types[c], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (palette) {
        png_color pal[256];
        for (int k = 0; k < npal; k++) {
            pal[k].red = palette[3 * k];
            pal[k].green = palette[3 * k + 1];
            pal[k].blue = palette[3 * k + 2];
        }
        png_set_PLTE(x->png, x->info, pal, npal);
    }
    png_write_info(x->png, x->info);
    if (bit_depth == 16) {
        const uint16_t one = 1;
        if (*(const uint8_t *)&one) png_set_swap(x->png); /* host little-endian */
    }
    png_write_image(x->png, x->rows);
    png_write_end(x->png, NULL);
    png_destroy_write_struct(&x->png, &x->info);
    free(x->rows);
    if (fclose(x->f)) {
        kiln_status st = kiln_set_err(err, KILN_ERR_IO, "%s: write error: %s", path,
                                      strerror(errno));
        remove(path);
        return st;
    }
    return KILN_OK;
fail:
    if (x->png) png_destroy_write_struct(&x->png, x->info ? &x->info : NULL);
    free(x->rows);
    fclose(x->f);
    remove(path);
    return kiln_set_err(err, KILN_ERR_IO, "%s: cannot write the PNG: %s", path, x->msg);
}

kiln_status kiln_png_write(const char *path, const void *pixels, int w, int h, int c,
                           int bit_depth, const uint8_t *palette, int npal, char **err)
{
    if (err) *err = NULL;
    if (!path || !pixels)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_image_write_png: NULL argument");
    if (w < 1 || h < 1 || (uint64_t)w * (uint64_t)h > MAX_PIXELS)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: bad image size %dx%d", path, w, h);
    if (c < 1 || c > 4 || (palette && c != 1))
        return kiln_set_err(err, KILN_ERR_INVALID,
                            "%s: %d channels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA%s)", path, c,
                            palette ? "; a palette image has 1" : "");
    if (bit_depth != 8 && (bit_depth != 16 || palette))
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: bit depth %d (8%s)", path, bit_depth,
                            palette ? "" : " or 16");
    if (palette) {
        if (npal < 1 || npal > 256)
            return kiln_set_err(err, KILN_ERR_INVALID, "%s: %d palette colors (1 to 256)", path,
                                npal);
        const uint8_t *ix = pixels;
        for (int64_t k = 0; k < (int64_t)w * h; k++)
            if (ix[k] >= npal)
                return kiln_set_err(err, KILN_ERR_INVALID,
                                    "%s: pixel %lld has index %d, past the %d palette colors",
                                    path, (long long)k, ix[k], npal);
    }
    pngw_ctx *x = calloc(1, sizeof *x);
    if (!x) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    kiln_status st = png_write_ctx(x, path, pixels, w, h, c, bit_depth, palette, npal, err);
    free(x);
    return st;
}

kiln_status kiln_image_write_png(const char *path, const uint8_t *pixels, int w, int h,
                                 int channels, char **err)
{
    return kiln_png_write(path, pixels, w, h, channels, 8, NULL, 0, err);
}

kiln_status kiln_image_write_png_palette(const char *path, const uint8_t *indices, int w, int h,
                                         const uint8_t *palette, int ncolors, char **err)
{
    if (!palette) {
        if (err) *err = NULL;
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_image_write_png_palette: NULL palette");
    }
    return kiln_png_write(path, indices, w, h, 1, 8, palette, ncolors, err);
}

typedef struct jpgw_ctx {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr em;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    FILE *f;
} jpgw_ctx;

static void jpgw_error_exit(j_common_ptr c)
{
    jpgw_ctx *x = (jpgw_ctx *)c->client_data;
    (*c->err->format_message)(c, x->msg);
    longjmp(x->jb, 1);
}

static kiln_status jpg_write_ctx(jpgw_ctx *x, const char *path, const uint8_t *pixels, int w,
                                 int h, int ch, int quality, char **err)
{
    x->f = fopen(path, "wb");
    if (!x->f)
        return kiln_set_err(err, KILN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    x->c.err = jpeg_std_error(&x->em);
    x->em.error_exit = jpgw_error_exit;
    x->c.client_data = x;
    if (setjmp(x->jb)) {
        jpeg_destroy_compress(&x->c);
        fclose(x->f);
        remove(path);
        return kiln_set_err(err, KILN_ERR_IO, "%s: cannot write the JPEG: %s", path, x->msg);
    }
    jpeg_create_compress(&x->c);
    jpeg_stdio_dest(&x->c, x->f);
    x->c.image_width = (JDIMENSION)w;
    x->c.image_height = (JDIMENSION)h;
    x->c.input_components = ch;
    x->c.in_color_space = ch == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&x->c);
    jpeg_set_quality(&x->c, quality, TRUE);
    jpeg_start_compress(&x->c, TRUE);
    while (x->c.next_scanline < x->c.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)x->c.next_scanline * w * ch);
        jpeg_write_scanlines(&x->c, &row, 1);
    }
    jpeg_finish_compress(&x->c);
    jpeg_destroy_compress(&x->c);
    if (fclose(x->f)) {
        kiln_status st = kiln_set_err(err, KILN_ERR_IO, "%s: write error: %s", path,
                                      strerror(errno));
        remove(path);
        return st;
    }
    return KILN_OK;
}

kiln_status kiln_image_write_jpeg(const char *path, const uint8_t *pixels, int w, int h,
                                  int channels, int quality, char **err)
{
    if (err) *err = NULL;
    if (!path || !pixels)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_image_write_jpeg: NULL argument");
    if (w < 1 || h < 1 || w > 65500 || h > 65500)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: bad JPEG size %dx%d", path, w, h);
    if (channels != 1 && channels != 3)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: %d channels (a JPEG has 1 or 3)", path,
                            channels);
    if (quality < 1 || quality > 100)
        return kiln_set_err(err, KILN_ERR_INVALID, "%s: quality %d (1 to 100)", path, quality);
    jpgw_ctx *x = calloc(1, sizeof *x);
    if (!x) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    kiln_status st = jpg_write_ctx(x, path, pixels, w, h, channels, quality, err);
    free(x);
    return st;
}

/* ---- the public reader ---------------------------------------------------- */

kiln_status kiln_image_read(const char *path, int channels, uint8_t **pixels, int *w, int *h,
                            int *c, char **err)
{
    if (err) *err = NULL;
    if (pixels) *pixels = NULL;
    if (!pixels || !w || !h || !c)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_image_read: NULL argument");
    if (channels < 0 || channels > 4)
        return kiln_set_err(err, KILN_ERR_INVALID,
                            "kiln_image_read: channels %d (0 as stored, 1 to 4)", channels);
    kiln_img im;
    kiln_status st = kiln_img_decode(path, KILN_IMG_PIXELS, &im, err);
    if (st) return st;
    if (channels && (st = kiln_img_convert(&im, channels))) {
        kiln_img_free(&im);
        return kiln_set_err(err, st, "%s: out of memory converting it", path);
    }
    *pixels = im.px;
    *w = im.w;
    *h = im.h;
    *c = im.c;
    return KILN_OK;
}
