/* tools/aot.c — `kiln compile --emit exe|lib|c --weights W -o NAME` (the
 * artifacts of kiln/aot.h) and `kiln predict`: the same classification
 * through the in-process compiled program, printed exactly as the compiled
 * executable prints it (codegen/aot_main.c.in: same reading, normalisation,
 * softmax and format), for comparison. */
#include "tools/cli.h"
#include "kiln/aot.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int cmd_aot(const cli *c)
{
    kiln_aot_options o = kiln_aot_defaults();
    if (!strcmp(c->emit, "exe")) o.emit = KILN_AOT_EXE;
    else if (!strcmp(c->emit, "lib")) o.emit = KILN_AOT_LIB;
    else o.emit = KILN_AOT_C;
    if (!c->out) {
        fprintf(stderr, "kiln compile: --emit %s needs -o NAME\n", c->emit);
        return EXIT_USAGE;
    }
    if (c->target) {
        kiln_compile_options co;
        if (!cli_compile_options(c, &co)) return EXIT_USAGE;
    }
    o.out = c->out;
    o.weights = c->weights;
    o.model = c->model;
    o.target = c->target;
    o.verbose = c->verbose;
    kiln_graph *fwd = cli_load_model(c, c->batch);
    if (!fwd) return EXIT_USAGE;
    char *err = NULL;
    kiln_status st = kiln_aot_compile(fwd, &o, &err);
    kiln_graph_free(fwd);
    if (st) {
        fprintf(stderr, "kiln compile: %s\n", err ? err : kiln_status_str(st));
        free(err);
        return st == KILN_ERR_IO || st == KILN_ERR_NOMEM || st == KILN_ERR_INTERNAL ? EXIT_RUN
                                                                                   : EXIT_USAGE;
    }
    if (c->verbose) fprintf(stderr, "kiln compile: wrote %s (--emit %s)\n", c->out, c->emit);
    return 0;
}

/* ---- predict: what the generated main does, through kiln_program ---- */

typedef struct images {
    float *x;
    int64_t n;
} images;

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static unsigned char *slurp(const char *path, size_t *len, char *err, size_t errlen)
{
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) return NULL;
    gzFile f = gzopen(path, "rb");
    if (!f) {
        free(buf);
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (r < 0) {
            free(buf);
            buf = NULL;
            break;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(f);
    if (!buf) {
        snprintf(err, errlen, "%s: read error (a broken gzip stream?)", path);
        return NULL;
    }
    *len = n;
    return buf;
}

static int read_images(const char *path, int64_t in_numel, images *im, char *err, size_t errlen)
{
    size_t len = 0;
    unsigned char *b = slurp(path, &len, err, errlen);
    if (!b) return 2;
    const unsigned char *data = b;
    size_t count = 0;
    int u8 = 0;
    if (len >= 16 && b[0] == 0 && b[1] == 0 && b[2] == 8 && b[3] == 3) {
        uint64_t dims[3];
        for (int d = 0; d < 3; d++)
            dims[d] = (uint64_t)b[4 + 4 * d] << 24 | (uint64_t)b[5 + 4 * d] << 16 |
                      (uint64_t)b[6 + 4 * d] << 8 | b[7 + 4 * d];
        if (dims[1] * dims[2] != (uint64_t)in_numel) {
            snprintf(err, errlen, "%s: images of %llux%llu pixels; the model takes %d values per "
                     "sample", path, (unsigned long long)dims[1], (unsigned long long)dims[2],
                     (int)in_numel);
            free(b);
            return 2;
        }
        if (len - 16 != dims[0] * dims[1] * dims[2]) {
            snprintf(err, errlen, "%s: the header says %llu images but the file holds %zu bytes of "
                     "pixels", path, (unsigned long long)dims[0], len - 16);
            free(b);
            return 2;
        }
        data = b + 16;
        count = len - 16;
        u8 = 1;
    } else if (ends_with(path, ".npy")) {
        if (len < 10 || memcmp(b, "\x93NUMPY", 6)) {
            snprintf(err, errlen, "%s: not a .npy file", path);
            free(b);
            return 2;
        }
        size_t hl = b[6] == 1 ? (size_t)b[8] | (size_t)b[9] << 8
                  : len >= 12 ? (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 |
                                (size_t)b[11] << 24 : 0;
        size_t ho = b[6] == 1 ? 10 : 12;
        if (!hl || hl > len - ho) {
            snprintf(err, errlen, "%s: truncated .npy header", path);
            free(b);
            return 2;
        }
        char hdr[1024];
        size_t hn = hl < sizeof hdr - 1 ? hl : sizeof hdr - 1;
        memcpy(hdr, b + ho, hn);
        hdr[hn] = 0;
        if (strstr(hdr, "'fortran_order': True")) {
            snprintf(err, errlen, "%s: Fortran-order arrays are not supported", path);
            free(b);
            return 2;
        }
        if (strstr(hdr, "'|u1'") || strstr(hdr, "'<u1'")) u8 = 1;
        else if (!strstr(hdr, "'<f4'")) {
            snprintf(err, errlen, "%s: the array must be uint8 or little-endian float32", path);
            free(b);
            return 2;
        }
        data = b + ho + hl;
        count = (len - ho - hl) / (u8 ? 1 : 4);
    } else {
        data = b;
        count = len / 4;
        if (len % 4) count = 0;
    }
    if (!count || count % (size_t)in_numel) {
        snprintf(err, errlen, "%s: %zu values, not a whole number of samples of %d values", path,
                 count, (int)in_numel);
        free(b);
        return 2;
    }
    int64_t n = (int64_t)(count / (size_t)in_numel);
    float *x = realloc(im->x, (size_t)(im->n + n) * (size_t)in_numel * sizeof *x);
    if (!x) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(b);
        return 2;
    }
    im->x = x;
    float *dst = x + (size_t)im->n * (size_t)in_numel;
    const float mean = KILN_FASHION_MNIST_MEAN, std = KILN_FASHION_MNIST_STD;
    for (size_t k = 0; k < count; k++) {
        float v;
        if (u8) v = (float)data[k] / 255.0f;
        else memcpy(&v, data + 4 * k, 4);
        dst[k] = (v - mean) / std;
    }
    im->n += n;
    free(b);
    return 0;
}

static void print_sample(int64_t index, const float *logits, int classes, int k, int json,
                         int first, int *order, double *prob)
{
    double mx = logits[0], sum = 0.0;
    for (int c = 1; c < classes; c++)
        if (logits[c] > mx) mx = logits[c];
    for (int c = 0; c < classes; c++) sum += prob[c] = exp((double)logits[c] - mx);
    for (int c = 0; c < classes; c++) prob[c] /= sum;
    int want = k > 0 ? (k < classes ? k : classes) : 1;
    for (int r = 0; r < want; r++) {
        int best = -1;
        for (int c = 0; c < classes; c++) {
            int used = 0;
            for (int q = 0; q < r; q++) used |= order[q] == c;
            if (!used && (best < 0 || logits[c] > logits[best])) best = c;
        }
        order[r] = best;
    }
    if (json) {
        printf("%s  {\"index\": %lld, \"class\": %d", first ? "" : ",\n", (long long)index,
               order[0]);
        if (k > 0) {
            printf(", \"top\": [");
            for (int r = 0; r < want; r++)
                printf("%s{\"class\": %d, \"prob\": %.6f}", r ? ", " : "", order[r],
                       prob[order[r]]);
            printf("]");
        }
        printf("}");
    } else if (k > 0) {
        printf("%lld", (long long)index);
        for (int r = 0; r < want; r++) printf(" %d:%.6f", order[r], prob[order[r]]);
        printf("\n");
    } else {
        printf("%lld %d\n", (long long)index, order[0]);
    }
}

static int predict_usage(void)
{
    fprintf(stderr, "usage: kiln predict MODEL --weights W.safetensors INPUTS... [--topk K] "
            "[--json] [--limit N] [--bs N] [--threads N]\n");
    return EXIT_USAGE;
}

int cmd_predict(int argc, char **argv)
{
    cli c;
    memset(&c, 0, sizeof c);
    c.cmd = "predict";
    c.batch = 64;
    long long topk = 0, limit = -1;
    int json = 0, ninputs = 0;
    const char **inputs = calloc((size_t)argc, sizeof *inputs);
    if (!inputs) return EXIT_RUN;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--weights") || !strcmp(a, "--topk") || !strcmp(a, "--limit") ||
                   !strcmp(a, "--bs") || !strcmp(a, "--threads")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kiln predict: %s needs a value\n", a);
                free(inputs);
                return EXIT_USAGE;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--weights")) {
                c.weights = v;
                continue;
            }
            char *end = NULL;
            long long x = strtoll(v, &end, 10);
            if (!*v || *end || x <= 0 || x > (1ll << 40)) {
                fprintf(stderr, "kiln predict: %s wants a positive integer, got '%s'\n", a, v);
                free(inputs);
                return EXIT_USAGE;
            }
            if (!strcmp(a, "--topk")) topk = x;
            else if (!strcmp(a, "--limit")) limit = x;
            else if (!strcmp(a, "--bs")) c.batch = x;
            else c.threads = x;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "kiln predict: unknown option '%s'\n", a);
            free(inputs);
            return predict_usage();
        } else if (!c.model) {
            c.model = a;
        } else {
            inputs[ninputs++] = a;
        }
    }
    if (!c.model || !c.weights || !ninputs) {
        free(inputs);
        return predict_usage();
    }
    int rc = 0;
    kiln_compile_options co;
    kiln_graph *fwd = NULL;
    kiln_program *p = NULL;
    images im = {NULL, 0};
    float *batch = NULL, *logits = NULL;
    int *order = NULL;
    double *prob = NULL;
    char *err = NULL;
    char msg[1024];
    if (!cli_compile_options(&c, &co) || !(fwd = cli_load_model(&c, c.batch))) {
        rc = EXIT_USAGE;
        goto done;
    }
    kiln_graph *cls = NULL;
    kiln_status st = kiln_aot_classifier(fwd, &cls, &err);
    if (!st) {
        kiln_graph_free(fwd);
        fwd = cls;
        st = kiln_compile(fwd, &co, &p, &err);
    }
    if (!st) st = kiln_load(p, c.weights, 0, 1, &err);
    if (st) {
        fprintf(stderr, "kiln predict: %s\n", err ? err : kiln_status_str(st));
        rc = EXIT_USAGE;
        goto done;
    }
    kiln_tensor_info in = {0}, out = {0};
    int nin = 0, nout = 0;
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t)) continue;
        if (t.role == KILN_ROLE_INPUT && !nin++) in = t;
        if (t.role == KILN_ROLE_OUTPUT && !nout++) out = t;
    }
    if (nin != 1 || in.dtype != KILN_F32 || !nout || out.dtype != KILN_F32 || out.rank != 2 ||
        out.shape[0] != in.shape[0]) {
        fprintf(stderr, "kiln predict: %s is not a classifier with one f32 input and an f32 "
                "output [B, classes]\n", c.model);
        rc = EXIT_USAGE;
        goto done;
    }
    int64_t B = in.shape[0], in_numel = (int64_t)(in.bytes / 4) / B;
    int classes = (int)out.shape[1];
    for (int i = 0; i < ninputs; i++)
        if (read_images(inputs[i], in_numel, &im, msg, sizeof msg)) {
            fprintf(stderr, "kiln predict: %s\n", msg);
            rc = EXIT_USAGE;
            goto done;
        }
    batch = calloc((size_t)B * (size_t)in_numel, sizeof *batch);
    logits = calloc((size_t)B * (size_t)classes, sizeof *logits);
    order = calloc((size_t)classes, sizeof *order);
    prob = calloc((size_t)classes, sizeof *prob);
    if (!batch || !logits || !order || !prob) {
        fprintf(stderr, "kiln predict: out of memory\n");
        rc = EXIT_RUN;
        goto done;
    }
    int64_t total = limit >= 0 && limit < im.n ? limit : im.n;
    if (json) printf("[\n");
    for (int64_t s = 0; s < total; s += B) {
        int64_t m = total - s < B ? total - s : B;
        memset(batch, 0, in.bytes);
        memcpy(batch, im.x + (size_t)s * (size_t)in_numel,
               (size_t)m * (size_t)in_numel * sizeof *batch);
        if ((st = kiln_program_set(p, in.name, batch, in.bytes)) ||
            (st = kiln_program_run(p, "forward")) ||
            (st = kiln_program_get(p, out.name, logits, out.bytes))) {
            fprintf(stderr, "kiln predict: %s\n", kiln_program_error(p));
            rc = EXIT_RUN;
            goto done;
        }
        for (int64_t j = 0; j < m; j++)
            print_sample(s + j, logits + (size_t)j * (size_t)classes, classes, (int)topk, json,
                         s + j == 0, order, prob);
    }
    if (json) printf("%s]\n", total ? "\n" : "");
done:
    free(err);
    free(im.x);
    free(batch);
    free(logits);
    free(order);
    free(prob);
    free(inputs);
    kiln_program_free(p);
    kiln_graph_free(fwd);
    return rc;
}
