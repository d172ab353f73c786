/* runtime/image.h — PNG and JPEG decoding and encoding (internal API; the
 * public read/write pair is in include/kiln/data.h).
 *
 * Decoding reads the whole file into memory first, so a file that ends early
 * is told apart from one whose content is wrong: every error is
 * "PATH: what is wrong", with the status KILN_ERR_IO (cannot open or read),
 * KILN_ERR_CORRUPT (not an image, truncated, a decoder error) or
 * KILN_ERR_UNSUPPORTED (a valid file kiln does not read: CMYK JPEG, an RGB
 * mask, an image too large).
 *
 * Pixels are 8-bit, interleaved (h rows of w pixels of c bytes), row-major.
 * PNG: gray, gray+alpha, RGB, RGBA and palette images of any bit depth;
 * palette images expand to RGB (RGBA with a tRNS chunk), gray below 8 bits
 * scales to 0..255, 16-bit samples round to 8 (v * 255 / 65535). JPEG:
 * gray and YCbCr/RGB.
 */
#ifndef KILN_RUNTIME_IMAGE_H
#define KILN_RUNTIME_IMAGE_H

#include "kiln/kiln.h"

typedef struct kiln_img {
    int w, h, c;
    uint8_t *px; /* malloc'd, h * w * c bytes */
} kiln_img;

/* How kiln_img_decode returns pixels. */
typedef enum {
    KILN_IMG_PIXELS, /* as stored: 1 to 4 channels, palettes expanded */
    KILN_IMG_INDEX,  /* one channel of class ids, for masks: a palette image's
                        indices or a gray image's levels (not rescaled: a 4-bit
                        gray level 3 stays 3); alpha is dropped; an RGB image
                        whose pixels all have R = G = B is read as gray, any
                        other RGB image is KILN_ERR_UNSUPPORTED */
} kiln_img_mode;

/* Decodes the PNG or JPEG file at path (told by its first bytes, not its
 * name) into *out (zeroed first; kiln_img_free releases it). */
kiln_status kiln_img_decode(const char *path, kiln_img_mode mode, kiln_img *out, char **err);

/* The same from bytes in memory; `name` is what error messages start with. */
kiln_status kiln_img_decode_mem(const char *name, const uint8_t *bytes, size_t n,
                                kiln_img_mode mode, kiln_img *out, char **err);

/* Converts in place to c channels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA):
 * gray from RGB is ITU-R 601 luma (299 R + 587 G + 114 B) / 1000, rounded,
 * as PIL's convert("L"); alpha is dropped, or added as 255. */
kiln_status kiln_img_convert(kiln_img *im, int c);

void kiln_img_free(kiln_img *im);

/* Writes a PNG of bit depth 8 or 16 (16: pixels are uint16_t samples in
 * host order) with c = 1..4 channels, or, when palette is not NULL, a
 * palette image (c = 1, 8-bit indices below npal <= 256; palette holds npal
 * RGB triples). Tests use it for 16-bit and palette fixtures. */
kiln_status kiln_png_write(const char *path, const void *pixels, int w, int h, int c,
                           int bit_depth, const uint8_t *palette, int npal, char **err);

#endif
