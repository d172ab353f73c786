/* runtime/safetensors.h — safetensors files: reader and writer (internal API;
 * kiln_save / kiln_load in kiln/checkpoint.h are built on it, and tests and
 * tools may use it directly).
 *
 * The format (Hugging Face's): an 8-byte little-endian u64 N, then N bytes of
 * JSON
 *     {"__metadata__": {"k": "v", ...},
 *      "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]},
 *      ...}
 * (optionally padded with spaces), then the data section: each tensor's raw
 * little-endian elements in C order at [BEGIN, END) counted from the byte
 * after the header.
 *
 * Reader. Every number from the file is checked before it is used: the
 * header length against the file size and KILN_ST_MAX_HEADER, the JSON by a
 * small self-contained parser (objects, arrays, strings with escapes,
 * integers; nesting depth bounded), each tensor's dtype, rank, element
 * count (overflow), data_offsets against shape x dtype size and against the
 * data section, offsets of different tensors against each other (overlap),
 * names and metadata keys against duplicates. Statuses:
 *   KILN_ERR_IO           the file cannot be opened, is not a regular file,
 *                         or a read fails;
 *   KILN_ERR_CORRUPT      the file fails a check above (malformed JSON gives
 *                         the byte offset inside the header);
 *   KILN_ERR_UNSUPPORTED  a well-formed tensor kiln cannot represent: rank
 *                         above KILN_MAX_RANK. Tensors whose dtype kiln does
 *                         not compute with (F16, BF16, I8, U16, F8_E4M3, ...)
 *                         are listed with supported == 0; their raw bytes can
 *                         still be read, and kiln_load refuses them.
 * Every message starts with the path: "PATH: ...". Nothing read from a file
 * can crash the reader.
 *
 * Writer. Tensors go in a stable order (element size descending, then name,
 * so each tensor's data is aligned to its element size), "__metadata__"
 * first when there is any; the header is padded with spaces so that the data
 * starts on an 8-byte boundary. The file is written to "<path>.tmp.<pid>",
 * fsync'd, renamed over path and the directory fsync'd: a crash or kill at
 * any point leaves either the previous file or the new one under path, never
 * a mix (a killed writer may leave its temporary file behind).
 *
 * Data is host byte order in memory; both directions swap on a big-endian
 * host.
 */
#ifndef KILN_RUNTIME_SAFETENSORS_H
#define KILN_RUNTIME_SAFETENSORS_H

#include "kiln/kiln.h"

/* The largest header accepted (as the reference implementation). */
#define KILN_ST_MAX_HEADER 100000000ULL
/* The deepest JSON nesting accepted (unknown keys may hold nested values). */
#define KILN_ST_MAX_DEPTH 64

/* ---- reading ------------------------------------------------------------ */

typedef struct kiln_safetensors kiln_safetensors;

typedef struct kiln_st_info {
    const char *name;      /* owned by the reader */
    const char *dtype_str; /* as in the file: "F32", "BF16", ... (static) */
    kiln_dtype dtype;      /* KILN_DTYPE_COUNT when kiln has no such dtype */
    int supported;         /* dtype is F32, F64, I32, I64, U8 or BOOL */
    size_t elem_size;      /* bytes per element (1 for BOOL and U8) */
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t numel;  /* product of shape (1 for rank 0) */
    uint64_t begin; /* data_offsets, relative to the data section */
    uint64_t end;
    size_t bytes; /* end - begin == numel * elem_size */
} kiln_st_info;

/* Opens and validates path (header only; data is read on demand). On failure
 * *out is NULL and *err (if err is not NULL; caller frees) says why. */
kiln_status kiln_safetensors_open(const char *path, kiln_safetensors **out, char **err);
void kiln_safetensors_close(kiln_safetensors *st);

/* Tensors in the order of the header; i in [0, count). */
int kiln_safetensors_count(const kiln_safetensors *st);
const kiln_st_info *kiln_safetensors_info(const kiln_safetensors *st, int i);
/* The index of the tensor called name, or -1. */
int kiln_safetensors_find(const kiln_safetensors *st, const char *name);
/* Reads tensor i into dst, which holds exactly `bytes` == info->bytes bytes,
 * in host byte order (BOOL bytes become 0 or 1). */
kiln_status kiln_safetensors_read(kiln_safetensors *st, int i, void *dst, size_t bytes,
                                  char **err);

/* "__metadata__" entries in the order of the header. */
int kiln_safetensors_meta_count(const kiln_safetensors *st);
const char *kiln_safetensors_meta_key(const kiln_safetensors *st, int i);
const char *kiln_safetensors_meta_value(const kiln_safetensors *st, int i);
/* The value of key, or NULL. */
const char *kiln_safetensors_meta_get(const kiln_safetensors *st, const char *key);

const char *kiln_safetensors_path(const kiln_safetensors *st);
uint64_t kiln_safetensors_header_len(const kiln_safetensors *st); /* N */
uint64_t kiln_safetensors_file_size(const kiln_safetensors *st);

/* ---- writing ------------------------------------------------------------ */

typedef struct kiln_st_tensor {
    const char *name; /* non-empty, unique, not "__metadata__" */
    kiln_dtype dtype; /* F32, F64, I32, I64, U8 or BOOL */
    int rank;         /* 0..KILN_MAX_RANK */
    const int64_t *shape;
    const void *data; /* numel elements, host order; may be NULL when numel == 0 */
} kiln_st_tensor;

typedef struct kiln_st_write_options {
    /* Bytes per write() of tensor data; 0: 1 MiB. */
    size_t chunk;
    /* Called after each write() to the temporary file with the bytes written
     * so far and the file's final size; a nonzero return stops the writer as
     * a failed write would (the temporary file is removed, KILN_ERR_IO).
     * Tests use it to stop or kill a writer midway. */
    int (*progress)(const char *tmp_path, uint64_t done, uint64_t total, void *user);
    void *user;
} kiln_st_write_options;

/* Writes n tensors and nmeta metadata entries (meta holds 2 * nmeta strings:
 * key, value, key, value, ...; keys unique) to path. opt may be NULL. */
kiln_status kiln_safetensors_write(const char *path, const kiln_st_tensor *tensors, int n,
                                   const char *const *meta, int nmeta,
                                   const kiln_st_write_options *opt, char **err);

/* The safetensors name of a kiln dtype ("F32", "BF16", ...), or NULL. */
const char *kiln_st_dtype_name(kiln_dtype t);

#endif
