/* kiln/aot.h — ahead-of-time artifacts: a model's forward entry compiled
 * (C backend, or the LLVM backend) into code that needs no kiln library,
 * plus its weights as a flat blob.
 *
 *   kiln compile MODEL --weights W.safetensors -o NAME --emit exe|lib|obj|c
 *                [--backend c|llvm] [--target NAME|TRIPLE] [--cpu CPU]
 *                [--data DIR | --classes FILE]   (exe: class names, normalisation)
 *
 *   lib  NAME.o (cc -O3 and the target's flags), NAME.h (the sizes the caller
 *        allocates, named input/output structs, NAME_load_weights and
 *        NAME_forward, serial; NAME_pool_new(N), NAME_forward_pool(pool, ...)
 *        and NAME_pool_free for N threads, the same results; its comment
 *        shows a call), NAME.weights. Link with -lm -pthread.
 *   exe  NAME: a standalone program (the same code plus a main) that loads
 *        NAME.weights (next to itself, or --weights PATH), reads idx / .npy /
 *        PNG (libpng; one image per file, the model's size) / raw f32
 *        images, normalises them as kiln's training did, runs batches on
 *        --threads N (default: one per core) and prints, as text or --json,
 *        by the model's task (kiln_aot_task): a classifier's top-1 (or
 *        --topk K) classes; a multi-label model's tags whose sigmoid(logit)
 *        > T (--thresh T; default the model's accuracy_thresh / fbeta
 *        threshold, else 0.2); a segmentation model writes each image's mask
 *        (8-bit gray PNG of class ids, as a data set's labels/NAME_P.png) to
 *        --out DIR (default: the current folder; made when missing) as
 *        <input name without folder and extension>_mask.png (a file of
 *        several samples: <name>_<k>_mask.png) and prints its path and the
 *        pixels per class; a regression model prints its output values.
 *        Classes print as names when the compile was given them (--data DIR
 *        or --classes FILE), else as indices. Links libm, pthreads, and zlib
 *        and libpng when the system has them (else no gzip / PNG input, no
 *        masks).
 *   c    NAME.c + NAME.h: the source, for any C compiler (NAME.weights too
 *        when weights are given). C backend only.
 *   obj  NAME.o + NAME.h (NAME.weights when weights are given): lib's object
 *        without needing weights. For a target of another architecture than
 *        this machine's (only with --backend llvm: cc here builds for the
 *        host) NAME.o holds the kernels and the entry (kiln_NAME_entry) and
 *        NAME.c the rest (weights loader, NAME_forward,
 *        the serial runtime): compile it with the target's C compiler and
 *        link both.
 *
 * Backends. C: the generated kernels and the small C parts compiled together
 * by cc. LLVM: the kernels and the entry come from the LLVM backend as an
 * object file (kiln_llvm_emit_object for the target machine), linked with
 * the C parts compiled by cc (lib/obj: one relocatable NAME.o, `cc -r`).
 * Built without LLVM, --backend llvm is KILN_ERR_UNSUPPORTED.
 *
 * Targets. NULL / "native": this machine (-march=native, LLVM's host CPU).
 * "avx512", "avx2", "scalar" (x86-64) or "neon" (AArch64): the C emitter's
 * vector ISA (LLVM: a CPU that has it: skylake-avx512, haswell, x86-64,
 * AArch64 generic). A triple ("x86_64-linux-gnu", "aarch64-linux-gnu", ...)
 * with an optional cpu (LLVM's CPU names, default the triple's baseline
 * "generic"; gcc's -march/-mcpu takes the same names for x86) picks both
 * LLVM's target machine and the C emitter's ISA (x86-64: avx512 for CPUs
 * with AVX-512F, avx2 for AVX2+FMA ones, else scalar; AArch64: neon; other
 * architectures: scalar). A cpu alone applies to the host's triple. Cross
 * targets (another architecture) can only be written as source (--emit c,
 * C backend) or as an object (--emit obj, LLVM backend).
 *
 * NAME.weights (little-endian): "KILNAOTW", u32 version (1), u32 count,
 * u64 data offset (64-aligned), u64 P bytes; per tensor: u32 name length,
 * name, u32 dtype length, dtype ("f32"), u32 rank, i64 shape[rank], u64 byte
 * offset into P, u64 bytes; then, at the data offset, the P memory image
 * (each tensor at its offset).
 */
#ifndef KILN_AOT_H
#define KILN_AOT_H

#include "kiln/kiln.h"

/* The statistics kiln's Fashion-MNIST training normalises with
 * (tools/train.c: kiln_dataset_stats of the training images scaled to
 * [0, 1]); baked into executables: x = (pixel / 255 - mean) / std. */
#define KILN_FASHION_MNIST_MEAN 0x1.24e7d4p-2f /* 0.286040604 */
#define KILN_FASHION_MNIST_STD 0x1.697f3p-2f   /* 0.353024244 */

typedef enum kiln_aot_emit { KILN_AOT_EXE, KILN_AOT_LIB, KILN_AOT_C, KILN_AOT_OBJ } kiln_aot_emit;

typedef struct kiln_aot_options {
    kiln_aot_emit emit;
    const char *out;     /* output path prefix: DIR/NAME (NAME also prefixes the symbols) */
    const char *weights; /* safetensors checkpoint (required for exe and lib) */
    const char *model;   /* the model's file name, for comments (may be NULL) */
    const char *target;  /* NULL or "native" (-march=native), "avx512", "avx2", "neon",
                            "scalar", or a target triple (see Targets above) */
    const char *cpu;     /* NULL, or a CPU name for the target (LLVM's names) */
    kiln_backend backend; /* KILN_BACKEND_C (default) or KILN_BACKEND_LLVM */
    const char *cc;      /* NULL: $CC, else "cc" */
    int verbose;         /* print compiler commands to stderr */
    float norm_mean, norm_std; /* exe input normalisation (defaults: Fashion-MNIST's) */
    const char *const *class_names; /* exe: nclass_names names, one per class (NULL: print
                                       indices); embedded in the program */
    int nclass_names;
    double thresh; /* exe, multi-label: the default threshold; 0: kiln_aot_task_of's */
} kiln_aot_options;

kiln_aot_options kiln_aot_defaults(void);

/* Writes the artifacts of a forward graph (at the batch size it was built
 * for). A checkpoint that does not match the model fails naming the tensor;
 * a compiler failure quotes the compiler. *err: malloc'd, caller frees. */
kiln_status kiln_aot_compile(const kiln_graph *forward, const kiln_aot_options *o, char **err);

/* The graph artifacts and `kiln predict` compile: a copy of g; when g marks
 * no output, its loss's first input becomes the output: "logits" for
 * cross_entropy and bce_with_logits, "pred" for mse_loss and l1_loss
 * (KILN_ERR_UNSUPPORTED when there is neither). *out: caller frees. */
kiln_status kiln_aot_classifier(const kiln_graph *g, kiln_graph **out, char **err);

/* What a compiled model's executable (and `kiln predict`) does with its
 * output, told by the model's loss: cross_entropy over [B, C] (or no loss,
 * an output [B, C]) classifies; bce_with_logits tags (multi-label);
 * cross_entropy over [B, C, H, W] segments; mse_loss, l1_loss (or another
 * loss, or no loss and an output of another shape) regress. */
typedef enum kiln_aot_task {
    KILN_AOT_CLASSIFY,
    KILN_AOT_MULTILABEL,
    KILN_AOT_SEGMENT,
    KILN_AOT_REGRESS,
} kiln_aot_task;

#define KILN_AOT_DEFAULT_THRESH 0.2 /* fastai's Planet recipe */

/* The task of model g; *thresh (may be NULL) gets the multi-label threshold:
 * that of the first `sigmoid(logits) > t` of its metrics (accuracy_thresh,
 * fbeta), else KILN_AOT_DEFAULT_THRESH. */
kiln_aot_task kiln_aot_task_of(const kiln_graph *g, double *thresh);

/* Class names and input statistics for an executable and `kiln predict`. */
typedef struct kiln_aot_data {
    char **names; /* nnames malloc'd names (NULL, 0: none) */
    int nnames;
    float mean, std; /* the training images' statistics (--data), else Fashion-MNIST's */
} kiln_aot_data;

/* --data DIR: the training split of the image data set in dir (its layout
 * detected; runtime/imgdata.c reads it) opened at the model's input size
 * (h x w, channels 1 or 3; 0: the images' own): its classes (folder names,
 * labels.csv's tags, codes.txt's lines) and the mean and std kiln train
 * normalises with (kiln_dataset_stats). --classes FILE: names only, one a
 * line (line k names class k; trailing blank lines ignored). *err: caller
 * frees. */
kiln_status kiln_aot_data_read(const char *dir, int channels, int h, int w, kiln_aot_data *out,
                               char **err);
kiln_status kiln_aot_classes_read(const char *file, kiln_aot_data *out, char **err);
void kiln_aot_data_free(kiln_aot_data *d);

/* The C identifier artifacts of `out` use as their prefix: the base name
 * with other characters turned into '_' (into buf). */
void kiln_aot_prefix(const char *out, char *buf, size_t len);

#endif
