/* examples/aot/main.c — classify the first N Fashion-MNIST test images with
 * an ahead-of-time compiled model: only fashion.h, fashion.o and
 * fashion.weights, no kiln library. Build and run (see the Makefile):
 *
 *   kiln compile examples/fashion_mlp.kiln --weights W.safetensors -o fashion --emit lib
 *   cc -O2 main.c fashion.o -lz -lm -pthread -o classify && ./classify [N] [IMAGES]
 *
 * Prints "INDEX CLASS" per image, as the `--emit exe` program does.
 */
#include "fashion.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define PIXELS 784
#define CLASSES 10

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10;
    const char *images = argc > 2 ? argv[2]
                                  : "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    if (n <= 0) n = 10;
    /* weights: fashion.weights, checked against the model */
    void *P = aligned_alloc(fashion_ALIGN, fashion_WEIGHTS_BYTES);
    void *A = aligned_alloc(fashion_ALIGN, fashion_ACTIVATION_BYTES);
    char err[512];
    if (!P || !A) return 1;
    if (fashion_load_weights_file(P, "fashion.weights", err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* images: the idx header (16 bytes), then 28x28 bytes per image */
    gzFile f = gzopen(images, "rb");
    unsigned char head[16];
    if (!f || gzread(f, head, 16) != 16) {
        fprintf(stderr, "cannot read %s\n", images);
        return 1;
    }
    static float x[fashion_NUMEL_x], logits[fashion_NUMEL_logits];
    static unsigned char pix[PIXELS];
    for (int done = 0; done < n; done += fashion_BATCH) {
        int m = n - done < fashion_BATCH ? n - done : fashion_BATCH;
        memset(x, 0, sizeof x); /* the last batch is zero-padded */
        for (int i = 0; i < m; i++) {
            if (gzread(f, pix, PIXELS) != PIXELS) {
                fprintf(stderr, "%s: too few images\n", images);
                return 1;
            }
            for (int k = 0; k < PIXELS; k++)
                x[i * PIXELS + k] = ((float)pix[k] / 255.0f - fashion_NORM_MEAN) / fashion_NORM_STD;
        }
        fashion_inputs in = {.x = x};
        fashion_outputs out = {.logits = logits};
        int rc = fashion_forward(P, A, &in, &out);
        if (rc) {
            fprintf(stderr, "forward failed: %d\n", rc);
            return 1;
        }
        for (int i = 0; i < m; i++) {
            int best = 0;
            for (int c = 1; c < CLASSES; c++)
                if (logits[i * CLASSES + c] > logits[i * CLASSES + best]) best = c;
            printf("%d %d\n", done + i, best);
        }
    }
    gzclose(f);
    free(P);
    free(A);
    return 0;
}
