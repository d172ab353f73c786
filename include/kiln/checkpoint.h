/* kiln/checkpoint.h — checkpoints of compiled programs, as safetensors files
 * (readable by safetensors.torch.load_file and the Hugging Face tools).
 * Included by kiln/kiln.h.
 *
 * A checkpoint holds a program's parameters under their program names
 * ("linear0.weight", "fc1.bias"; the names PyTorch's state_dict uses for the
 * same layers), optionally its optimizer state ("linear0.weight.exp_avg",
 * ...), and string metadata (the "__metadata__" of the file): kiln writes
 * "format": "pt" unless the caller sets "format"; keys starting "kiln." are
 * kiln's own (the Learner's "kiln.epoch" and "kiln.step", to resume). Files
 * are written to a temporary file, fsync'd and renamed over the target, so a
 * crash or kill while saving leaves the previous checkpoint intact.
 *
 * Messages (*err, malloc'd, the caller frees; err may be NULL) start with the
 * file's path.
 */
#ifndef KILN_CHECKPOINT_H
#define KILN_CHECKPOINT_H

#ifndef KILN_KILN_H
#error "include <kiln/kiln.h>"
#endif

/* ---- metadata: string keys to string values ---------------------------- */

typedef struct kiln_checkpoint_meta kiln_checkpoint_meta;

/* A new empty set, or NULL when out of memory. */
kiln_checkpoint_meta *kiln_checkpoint_meta_new(void);
void kiln_checkpoint_meta_free(kiln_checkpoint_meta *m);
/* Removes every entry. */
void kiln_checkpoint_meta_clear(kiln_checkpoint_meta *m);
/* Sets key to value (copied), replacing an earlier value. Keys are non-empty. */
kiln_status kiln_checkpoint_meta_set(kiln_checkpoint_meta *m, const char *key,
                                     const char *value);
/* Sets key to the decimal text of v ("kiln.epoch": "3"). */
kiln_status kiln_checkpoint_meta_set_int(kiln_checkpoint_meta *m, const char *key, int64_t v);
/* The value of key (owned by m), or NULL when absent. */
const char *kiln_checkpoint_meta_get(const kiln_checkpoint_meta *m, const char *key);
/* The value of key as an integer: KILN_ERR_NOT_FOUND when absent,
 * KILN_ERR_PARSE when it is not a decimal integer that fits in 64 bits. */
kiln_status kiln_checkpoint_meta_get_int(const kiln_checkpoint_meta *m, const char *key,
                                         int64_t *v);
/* Entries in the order they were first set (or read from a file). */
int kiln_checkpoint_meta_count(const kiln_checkpoint_meta *m);
const char *kiln_checkpoint_meta_key(const kiln_checkpoint_meta *m, int i);
const char *kiln_checkpoint_meta_value(const kiln_checkpoint_meta *m, int i);

/* ---- saving and loading ------------------------------------------------- */

/* Writes every PARAM tensor of p, its model state (batchnorm's running
 * statistics, kiln_tensor_info.model_state: "bn0.running_mean" as PyTorch's
 * state_dict names it) and, when with_state, every other STATE tensor (the
 * optimizer's) to path. */
kiln_status kiln_save(kiln_program *p, const char *path, int with_state, char **err);
/* The same with metadata (meta may be NULL). */
kiln_status kiln_save_ex(kiln_program *p, const char *path, int with_state,
                         const kiln_checkpoint_meta *meta, char **err);

/* Loads p's PARAM tensors and model state (and, when with_state, its other
 * STATE tensors) from path by name.
 *  - A tensor whose shape or dtype differs from the program's:
 *    KILN_ERR_SHAPE naming the file, the tensor and both shapes (strict or
 *    not).
 *  - A tensor of dtype F16, BF16 or another dtype kiln does not compute
 *    with, under a name the program loads: KILN_ERR_UNSUPPORTED.
 *  - Program tensors missing from the file: KILN_ERR_NOT_FOUND listing them
 *    when strict; otherwise they keep their values (for loading the weights
 *    another model shares with this one by name).
 *  - Tensors in the file that the program does not load: ignored when not
 *    strict; when strict, KILN_ERR_NOT_FOUND listing them (with the missing
 *    ones, as PyTorch's load_state_dict reports missing and unexpected keys).
 *    Without with_state, the file's optimizer state is never unexpected: a
 *    STATE tensor of p, or any "<param>.<suffix>" of a PARAM of p (e.g. the
 *    AdamW state of a file loaded into an SGD program), is skipped.
 * Every check runs before any tensor is written, so a failed check leaves p
 * as it was (only an I/O error while reading the data can leave p partly
 * loaded). The file's metadata is not needed; kiln_load_ex returns it. */
kiln_status kiln_load(kiln_program *p, const char *path, int with_state, int strict,
                      char **err);
/* The same, also replacing *meta_out's entries (when meta_out is not NULL)
 * with the file's metadata. */
kiln_status kiln_load_ex(kiln_program *p, const char *path, int with_state, int strict,
                         kiln_checkpoint_meta *meta_out, char **err);

/* ---- transfer learning: loading another model's weights by name -------- */

/* What kiln_load_matching did. Names and messages are malloc'd copies,
 * freed by kiln_load_report_free (the struct itself is the caller's). */
typedef struct kiln_load_report {
    int nloaded;    /* file tensors copied into the program (name, dtype, shape match) */
    int nskipped;   /* file tensors with no parameter or model state of that name */
    int nrefused;   /* file tensors whose name matches but dtype or shape does not */
    int nmissing;   /* program parameters and model state the file does not fill
                       (they keep their values) */
    char **loaded, **skipped, **refused, **missing; /* the names, in file order
                                                       (missing: in program order) */
    char **refused_why; /* per refused tensor: "'head.weight' is F32 [10, 64] in the
                           file but F32 [3, 64] in the program" */
} kiln_load_report;

void kiln_load_report_free(kiln_load_report *r);

/* Loads from another model's checkpoint (fastai's load(strict=False) for
 * transfer learning): every tensor of the file whose name is a PARAM or
 * model-state tensor of p with the same dtype and shape is copied in; the
 * rest of the file is skipped (name absent, e.g. a head the new model
 * replaced, or optimizer state) or refused (same name, other shape or dtype,
 * or a dtype kiln cannot load), and p's tensors the file does not fill keep
 * their values. report (may be NULL; kiln_load_report_free it, also on
 * failure) says which. A file of which nothing matches is KILN_ERR_NOT_FOUND
 * with a message saying what it holds; an unreadable or corrupt file is the
 * safetensors reader's error naming the file (IO, CORRUPT). Nothing is
 * written unless a tensor loads. */
kiln_status kiln_load_matching(kiln_program *p, const char *path, kiln_load_report *report,
                               char **err);

/* Reads only the metadata of a safetensors file (e.g. to resume at
 * "kiln.epoch" before building the program). *out: a new set the caller
 * frees, NULL on failure. */
kiln_status kiln_checkpoint_read_meta(const char *path, kiln_checkpoint_meta **out, char **err);

#endif
