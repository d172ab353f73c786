/* runtime/datagen.h — the course's example data sets, made from real
 * Fashion-MNIST images (`kiln data make`; tools/data.c is the command line,
 * runtime/datagen.c the generator). Internal API: the command and the tests
 * use it.
 *
 * No network is needed: every image is built from Debian's
 * dataset-fashion-mnist. Training samples use only Fashion-MNIST's training
 * set and validation samples only its test set, so a validation image never
 * holds an item a model trained on. The same options write byte-identical
 * files (each sample draws from its own random stream of the seed, so
 * changing --n-train leaves the first samples as they were).
 *
 * Kinds and layouts (OUTDIR/...):
 *   multilabel    (Planet-like) images/<name>.png: 2x2 collages (default
 *                 56x56 gray, cells of size/2; an item is resized to its cell
 *                 when that is not 28); each cell holds an item with
 *                 probability 0.6, at least one per image. labels.csv:
 *                 `image_name,tags`, tags = the codes of the classes present,
 *                 space-separated and sorted. valid.txt: validation names.
 *   segmentation  (CamVid-like) images/<name>.png: 1 to 4 items at random
 *                 positions of a 64x64 gray canvas, later ones on top; only an
 *                 item's foreground pixels (byte > 25, intensity > 0.1) are
 *                 pasted. labels/<name>_P.png: 8-bit gray mask, the pixel's
 *                 item class + 1, 0 for background. codes.txt: `background`
 *                 then the 10 codes in label order. valid.txt.
 *   points        (head-pose-like) images/<name>.png: one item resized
 *                 (bilinear) to a side of 17 to 39 pixels (0.6x-1.4x) at a
 *                 random place of a 64x64 canvas. points.csv: `image_name,x,y`,
 *                 the centre of the bounding box of the foreground pixels
 *                 (byte > 25) in pixels, 0 = the image's left or top edge
 *                 (as the points loader reads them): x = (first column +
 *                 last column + 1) / 2, y likewise. valid.txt.
 *   folders       (ImageNet-like, fastai's from_folder) train/<code>/<name>.png
 *                 and valid/<code>/<name>.png: Fashion-MNIST images as they
 *                 are (28x28), named train<index> / test<index> after their
 *                 index in the training / test set.
 * Names: c00000... for multilabel and segmentation, p00000... for points,
 * training samples first, then validation ones.
 *
 * Writing is atomic: everything goes to OUTDIR.partial-<pid> (beside OUTDIR),
 * which is renamed to OUTDIR at the end, so an interrupted run never leaves a
 * data set that looks complete. OUTDIR's missing parents are created.
 */
#ifndef KILN_RUNTIME_DATAGEN_H
#define KILN_RUNTIME_DATAGEN_H

#include "kiln/kiln.h"

#include <stdbool.h>
#include <stdint.h>

#define KILN_FASHION_CLASSES 10
#define KILN_DATAGEN_MAX_ITEMS 4  /* items in one sample, at most */
#define KILN_DATAGEN_THRESHOLD 25 /* foreground: a byte above this (> 0.1) */

/* Fashion-MNIST's classes in label order, as codes without spaces or '/'
 * (folder names, tags, codes.txt): tshirt_top, trouser, pullover, dress,
 * coat, sandal, shirt, sneaker, bag, ankle_boot. */
extern const char *const kiln_fashion_codes[KILN_FASHION_CLASSES];

typedef enum kiln_datagen_kind {
    KILN_DATAGEN_MULTILABEL,
    KILN_DATAGEN_SEGMENTATION,
    KILN_DATAGEN_POINTS,
    KILN_DATAGEN_FOLDERS,
} kiln_datagen_kind;

typedef struct kiln_datagen_options {
    kiln_datagen_kind kind;
    const char *outdir;
    const char *data_dir;     /* Fashion-MNIST's folder; NULL: Debian's */
    int64_t n_train, n_valid; /* 0: the kind's default (kiln_datagen_defaults) */
    uint64_t seed;
    int size;   /* canvas side in pixels; 0: the kind's default */
    bool force; /* replace a non-empty OUTDIR */
} kiln_datagen_options;

/* One item pasted into a sample. */
typedef struct kiln_datagen_item {
    int32_t src;        /* index in Fashion-MNIST's training set (training
                         * samples) or test set (validation samples) */
    int32_t cls;        /* its class, 0..9 */
    int32_t x, y, w, h; /* where: top-left corner and size on the canvas */
} kiln_datagen_item;

/* What one sample holds, in paste order (later items on top). */
typedef struct kiln_datagen_sample {
    char name[24]; /* file name without extension */
    bool valid;    /* a validation sample */
    int n_items;
    kiln_datagen_item items[KILN_DATAGEN_MAX_ITEMS];
    double px, py; /* points: the target */
} kiln_datagen_sample;

typedef struct kiln_datagen_result {
    int64_t n_train, n_valid;
    int size;                                  /* canvas side */
    int64_t files;                             /* files written */
    int64_t class_items[KILN_FASHION_CLASSES]; /* items pasted per class */
    kiln_datagen_sample *samples;              /* n_train + n_valid, training first; only
                                                * when asked for (record), else NULL */
} kiln_datagen_result;

/* The kind named `name` ("multilabel", "segmentation", "points", "folders");
 * false for another name. */
bool kiln_datagen_kind_parse(const char *name, kiln_datagen_kind *out);
const char *kiln_datagen_kind_name(kiln_datagen_kind k);
/* The kind's default sample counts and canvas side. */
void kiln_datagen_defaults(kiln_datagen_kind k, int64_t *n_train, int64_t *n_valid, int *size);

/* Writes the data set o describes into o->outdir; *res (zeroed first)
 * gets what was written, with every sample's record when `record`
 * (kiln_datagen_result_free releases it, also after a failure).
 * Failures: bad options (unknown kind, counts or size out of range, a
 * non-empty OUTDIR without force, OUTDIR not a folder) KILN_ERR_INVALID;
 * Fashion-MNIST missing KILN_ERR_NOT_FOUND (the message names the package
 * and --data); its files broken KILN_ERR_CORRUPT; a file that cannot be
 * written KILN_ERR_IO; out of memory KILN_ERR_NOMEM. On failure nothing is
 * left behind (the partial folder is removed) and OUTDIR is as it was.
 * *err: caller frees. */
kiln_status kiln_datagen_make(const kiln_datagen_options *o, bool record, kiln_datagen_result *res,
                              char **err);
void kiln_datagen_result_free(kiln_datagen_result *r);

#endif
