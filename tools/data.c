/* tools/data.c — `kiln data make KIND OUTDIR [options]`: the course's example
 * data sets from Fashion-MNIST (runtime/datagen.h has the kinds, layouts and
 * guarantees; this file parses the options and prints what was written).
 * It parses its own arguments, argv[2] on.
 */
#include "tools/cli.h"
#include "runtime/datagen.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char data_usage[] =
    "usage: kiln data make KIND OUTDIR [--n-train N] [--n-valid N] [--seed S] [--size S]\n"
    "                                  [--data DIR] [--force]\n"
    "\n"
    "Builds an example data set from Fashion-MNIST (Debian's dataset-fashion-mnist): training\n"
    "images from its training set, validation images from its test set. The same command\n"
    "writes the same bytes.\n"
    "\n"
    "kinds:\n"
    "  multilabel    2x2 collages (56x56), labels.csv: image_name,tags (default 8000/2000)\n"
    "  segmentation  collages (64x64) and masks labels/<name>_P.png, codes.txt (4000/1000)\n"
    "  points        one scaled item (64x64), points.csv: image_name,x,y of its centre\n"
    "                (8000/2000)\n"
    "  folders       train/<class>/*.png, valid/<class>/*.png (60000/10000)\n"
    "\n"
    "options:\n"
    "  --n-train N   training images (default: the kind's, above)\n"
    "  --n-valid N   validation images\n"
    "  --seed S      random seed (default 42)\n"
    "  --size S      canvas side in pixels (not for folders)\n"
    "  --data DIR    Fashion-MNIST's folder (default: where Debian installs it)\n"
    "  --force       replace OUTDIR when it is not empty\n";

static const char *const layouts[] = {
    "images/<name>.png, labels.csv (image_name,tags), valid.txt",
    "images/<name>.png, labels/<name>_P.png, codes.txt, valid.txt",
    "images/<name>.png, points.csv (image_name,x,y), valid.txt",
    "train/<class>/<name>.png, valid/<class>/<name>.png",
};

/* An integer option value from lo to max into *out; false (message
 * printed) when v is not one. */
static bool int_value(const char *opt, const char *v, int64_t lo, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > max) {
        fprintf(stderr, "kiln data: %s wants an integer from %lld to %lld, got '%s'\n", opt,
                (long long)lo, (long long)max, v);
        return false;
    }
    *out = x;
    return true;
}

int cmd_data(int argc, char **argv)
{
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(data_usage, stdout);
            return 0;
        }
    if (argc < 3 || strcmp(argv[2], "make")) {
        fprintf(stderr, "kiln data: %s%s%s\n%s",
                argc < 3 ? "needs a subcommand" : "unknown subcommand '", argc < 3 ? "" : argv[2],
                argc < 3 ? "" : "' (make)", data_usage);
        return EXIT_USAGE;
    }
    kiln_datagen_options o = {.seed = 42};
    const char *kind = NULL;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (!kind)
                kind = a;
            else if (!o.outdir)
                o.outdir = a;
            else {
                fprintf(stderr, "kiln data: unexpected argument '%s'\n", a);
                return EXIT_USAGE;
            }
            continue;
        }
        if (!strcmp(a, "--force")) {
            o.force = true;
            continue;
        }
        static const char *const valued[] = {"--n-train", "--n-valid", "--seed", "--size",
                                             "--data"};
        bool known = false;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            known |= !strcmp(a, valued[k]);
        if (!known) {
            fprintf(stderr, "kiln data: unknown option '%s' (see kiln data --help)\n", a);
            return EXIT_USAGE;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln data: %s needs a value\n", a);
            return EXIT_USAGE;
        }
        const char *v = argv[++i];
        int64_t x = 0;
        if (!strcmp(a, "--data"))
            o.data_dir = v;
        else if (!int_value(a, v, strcmp(a, "--seed") != 0, !strcmp(a, "--size") ? 4096 : INT64_MAX,
                            &x))
            return EXIT_USAGE;
        else if (!strcmp(a, "--n-train"))
            o.n_train = x;
        else if (!strcmp(a, "--n-valid"))
            o.n_valid = x;
        else if (!strcmp(a, "--seed"))
            o.seed = (uint64_t)x;
        else
            o.size = (int)x;
    }
    if (!kind || !o.outdir) {
        fprintf(stderr, "kiln data make: needs KIND and OUTDIR (e.g. kiln data make multilabel "
                        "data/multilabel)\n");
        return EXIT_USAGE;
    }
    if (!kiln_datagen_kind_parse(kind, &o.kind)) {
        fprintf(stderr,
                "kiln data make: unknown kind '%s' (multilabel, segmentation, points, folders)\n",
                kind);
        return EXIT_USAGE;
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kiln_datagen_result r;
    char *err = NULL;
    kiln_status st = kiln_datagen_make(&o, false, &r, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st) {
        fprintf(stderr, "kiln data make: %s\n", err ? err : "failed");
        free(err);
        kiln_datagen_result_free(&r);
        /* bad options, an existing OUTDIR, no Fashion-MNIST: the user's to fix */
        return st == KILN_ERR_INVALID || st == KILN_ERR_NOT_FOUND ? EXIT_USAGE : EXIT_RUN;
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%s: %lld training + %lld validation images, %dx%d gray, in %s: %lld files, %.1f s\n",
           kind, (long long)r.n_train, (long long)r.n_valid, r.size, r.size, o.outdir,
           (long long)r.files, secs);
    printf("  layout: %s\n", layouts[o.kind]);
    printf("  classes (items pasted):");
    for (int c = 0; c < KILN_FASHION_CLASSES; c++)
        printf(" %s %lld", kiln_fashion_codes[c], (long long)r.class_items[c]);
    printf("\n");
    kiln_datagen_result_free(&r);
    return 0;
}
