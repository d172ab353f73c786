/* runtime/aot.c — ahead-of-time artifacts (include/kiln/aot.h).
 *
 * The forward entry's plan comes from program assembly
 * (runtime/aot_internal.h: kiln_aot_plan_build, the C backend's plan with
 * its parameters' P offsets); its C source is wrapped with a weights loader,
 * a serial kiln_rt and a typed forward function (codegen/aot_main.c holds
 * that text and the executable's main), renaming the entry to NAME_entry_ so
 * several artifacts link together. The weights blob is the P memory image of
 * a checkpoint loaded (strictly) into a reference-backend program.
 */
#define _POSIX_C_SOURCE 200809L
#include "kiln/aot.h"

#include "codegen/aot_src.h"
#include "codegen/llvm.h"
#include "codegen/target.h"
#include "ir/graph.h"
#include "ir/ops.h"
#include "runtime/aot_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- strings ---- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1) cap *= 2;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    char *t = malloc((size_t)n + 1);
    if (!t) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(t, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, t, (size_t)n);
    free(t);
}

/* Appends a template with "@P@" replaced by prefix and "@NAME@" by name. */
static void sb_template(sbuf *b, const char *tpl, const char *prefix, const char *name)
{
    for (const char *p = tpl; *p;) {
        const char *q = strchr(p, '@');
        if (!q) {
            sb_puts(b, p);
            break;
        }
        sb_put(b, p, (size_t)(q - p));
        if (!strncmp(q, "@P@", 3)) {
            sb_puts(b, prefix);
            p = q + 3;
        } else if (!strncmp(q, "@NAME@", 6)) {
            sb_puts(b, name);
            p = q + 6;
        } else {
            sb_put(b, q, 1);
            p = q + 1;
        }
    }
}

static kiln_status fail(char **err, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status fail(char **err, kiln_status st, const char *fmt, ...)
{
    if (!err) return st;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = malloc(n > 0 ? (size_t)n + 1 : 1);
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, n > 0 ? (size_t)n + 1 : 1, fmt, ap);
        va_end(ap);
    }
    free(*err);
    *err = s;
    return st;
}

kiln_aot_options kiln_aot_defaults(void)
{
    kiln_aot_options o;
    memset(&o, 0, sizeof o);
    o.emit = KILN_AOT_EXE;
    o.norm_mean = KILN_FASHION_MNIST_MEAN;
    o.norm_std = KILN_FASHION_MNIST_STD;
    return o;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

void kiln_aot_prefix(const char *out, char *buf, size_t len)
{
    if (!len) return;
    const char *b = out ? base_name(out) : "";
    size_t o = 0;
    if (!(*b >= 'a' && *b <= 'z') && !(*b >= 'A' && *b <= 'Z') && *b != '_' && o + 1 < len)
        buf[o++] = 'm';
    for (; *b && o + 1 < len; b++) {
        char c = *b;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        buf[o++] = ok ? c : '_';
    }
    buf[o] = 0;
}

/* A C identifier from a tensor name ("linear0.weight" -> "linear0_weight"). */
static void ident(const char *name, char *buf, size_t len)
{
    kiln_aot_prefix(name, buf, len);
    /* kiln_aot_prefix takes the base name after '/', which tensor names lack */
}

static const char *c_type(kiln_dtype t)
{
    switch (t) {
    case KILN_F32: return "float";
    case KILN_F64: return "double";
    case KILN_I32: return "int32_t";
    case KILN_I64: return "int64_t";
    case KILN_U8:
    case KILN_BOOL: return "uint8_t";
    default: return "uint16_t";
    }
}

static void type_str(const kiln_aot_tensor *t, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "%s[", kiln_dtype_name(t->dtype));
    for (int d = 0; d < t->rank && o < len; d++)
        o += (size_t)snprintf(buf + o, len - o, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

static bool is_io_in(const kiln_aot_tensor *t)
{
    return t->space != 1 && (t->role == KILN_ROLE_INPUT || t->role == KILN_ROLE_TARGET ||
                             t->role == KILN_ROLE_CONST || t->role == KILN_ROLE_HPARAM);
}

static bool is_io_out(const kiln_aot_tensor *t)
{
    return t->role == KILN_ROLE_OUTPUT || t->role == KILN_ROLE_LOSS || t->role == KILN_ROLE_METRIC;
}

static int64_t numel(const kiln_aot_tensor *t)
{
    int64_t n = 1;
    for (int d = 0; d < t->rank; d++) n *= t->shape[d];
    return n;
}

/* ---- the model's task ---- */

static bool logits_loss(int op) { return op == KILN_OP_CROSS_ENTROPY || op == KILN_OP_BCE_WITH_LOGITS; }

static bool pred_loss(int op)
{
    return logits_loss(op) || op == KILN_OP_MSE_LOSS || op == KILN_OP_L1_LOSS;
}

kiln_aot_task kiln_aot_task_of(const kiln_graph *g, double *thresh)
{
    if (thresh) *thresh = KILN_AOT_DEFAULT_THRESH;
    if (!g) return KILN_AOT_CLASSIFY;
    kiln_value loss = kiln_graph_find_role(g, KILN_ROLE_LOSS);
    kiln_value out = kiln_graph_find_role(g, KILN_ROLE_OUTPUT);
    if (loss < 0) /* no loss: a classifier when the output is [B, C] */
        return out < 0 || g->nodes[out].rank == 2 ? KILN_AOT_CLASSIFY : KILN_AOT_REGRESS;
    const kiln_node *l = &g->nodes[loss];
    if (!pred_loss(l->op)) return KILN_AOT_REGRESS;
    int32_t logits = l->inputs[0];
    int rank = g->nodes[logits].rank;
    if (l->op == KILN_OP_CROSS_ENTROPY)
        return rank == 2 ? KILN_AOT_CLASSIFY : rank == 4 ? KILN_AOT_SEGMENT : KILN_AOT_REGRESS;
    if (l->op != KILN_OP_BCE_WITH_LOGITS) return KILN_AOT_REGRESS;
    /* the metrics' threshold: gt(sigmoid(logits), const t) */
    for (int i = 0; thresh && i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->op != KILN_OP_GT || n->ninputs != 2) continue;
        const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
        if (a->op == KILN_OP_SIGMOID && a->inputs[0] == logits && b->op == KILN_OP_CONST) {
            *thresh = kiln_attr_get_float(b, "value");
            break;
        }
    }
    return KILN_AOT_MULTILABEL;
}

/* ---- class names and statistics ---- */

void kiln_aot_data_free(kiln_aot_data *d)
{
    if (!d) return;
    for (int i = 0; i < d->nnames; i++) free(d->names[i]);
    free(d->names);
    d->names = NULL;
    d->nnames = 0;
}

static void data_init(kiln_aot_data *d)
{
    memset(d, 0, sizeof *d);
    d->mean = KILN_FASHION_MNIST_MEAN;
    d->std = KILN_FASHION_MNIST_STD;
}

static kiln_status data_add(kiln_aot_data *d, const char *name, size_t n)
{
    char **v = realloc(d->names, (size_t)(d->nnames + 1) * sizeof *v);
    if (!v) return KILN_ERR_NOMEM;
    d->names = v;
    char *s = malloc(n + 1);
    if (!s) return KILN_ERR_NOMEM;
    memcpy(s, name, n);
    s[n] = 0;
    d->names[d->nnames++] = s;
    return KILN_OK;
}

kiln_status kiln_aot_data_read(const char *dir, int channels, int h, int w, kiln_aot_data *out,
                               char **err)
{
    if (err) *err = NULL;
    data_init(out);
    if (!dir) return fail(err, KILN_ERR_INVALID, "kiln_aot_data_read: dir is NULL");
    if (kiln_data_detect(dir) == KILN_DATA_NONE)
        return fail(err, KILN_ERR_NOT_FOUND, "--data %s: not an image data set (train/CLASS/ "
                    "folders, labels.csv, codes.txt or points.csv); --classes FILE gives class "
                    "names alone", dir);
    kiln_image_opts o = kiln_image_defaults();
    if (channels == 1 || channels == 3) o.channels = channels;
    if (h > 0 && w > 0) {
        o.height = h;
        o.width = w;
    }
    kiln_dataset *d = NULL;
    kiln_status st = kiln_dataset_open_images(dir, &o, 0, &d, err);
    if (st) return st;
    int n = 0;
    const char *const *names = kiln_dataset_classes(d, &n);
    for (int i = 0; i < n && !st; i++) st = data_add(out, names[i], strlen(names[i]));
    if (!st) kiln_dataset_stats(d, &out->mean, &out->std);
    kiln_dataset_free(d);
    if (st) {
        kiln_aot_data_free(out);
        return fail(err, st, "%s: out of memory", dir);
    }
    return KILN_OK;
}

kiln_status kiln_aot_classes_read(const char *file, kiln_aot_data *out, char **err)
{
    if (err) *err = NULL;
    data_init(out);
    if (!file) return fail(err, KILN_ERR_INVALID, "kiln_aot_classes_read: file is NULL");
    FILE *f = fopen(file, "rb");
    if (!f) return fail(err, KILN_ERR_IO, "--classes %s: cannot open: %s", file, strerror(errno));
    sbuf b = {0};
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0 && b.len < (1u << 24)) sb_put(&b, buf, n);
    bool bad = ferror(f) || b.len >= (1u << 24);
    fclose(f);
    kiln_status st = b.oom ? KILN_ERR_NOMEM : bad ? KILN_ERR_IO : KILN_OK;
    int blank = 0; /* blank lines seen since the last name */
    long line = 0;
    for (const char *p = b.s; !st && p && *p; line++) {
        size_t len = strcspn(p, "\n");
        size_t a = 0, z = len;
        while (a < z && (p[a] == ' ' || p[a] == '\t' || p[a] == '\r')) a++;
        while (z > a && (p[z - 1] == ' ' || p[z - 1] == '\t' || p[z - 1] == '\r')) z--;
        if (z == a) {
            blank++;
        } else if (blank) {
            st = fail(err, KILN_ERR_CORRUPT, "--classes %s:%ld: an empty line before it: line k "
                      "names class k, so every line up to the last class needs a name", file,
                      line);
        } else if (data_add(out, p + a, z - a)) {
            st = KILN_ERR_NOMEM;
        }
        p += len + (p[len] == '\n');
    }
    free(b.s);
    if (!st && !out->nnames)
        st = fail(err, KILN_ERR_CORRUPT, "--classes %s: no names (one class name a line)", file);
    if (st == KILN_ERR_NOMEM || st == KILN_ERR_IO)
        fail(err, st, "--classes %s: %s", file, st == KILN_ERR_IO ? "read error" : "out of memory");
    if (st) kiln_aot_data_free(out);
    return st;
}

kiln_status kiln_aot_classifier(const kiln_graph *g, kiln_graph **out, char **err)
{
    if (err) *err = NULL;
    *out = NULL;
    kiln_graph *c = g ? kiln_graph_clone(g) : NULL;
    if (!c) return fail(err, g ? KILN_ERR_NOMEM : KILN_ERR_INVALID, "no graph");
    if (kiln_graph_find_role(c, KILN_ROLE_OUTPUT) < 0) {
        kiln_value loss = kiln_graph_find_role(c, KILN_ROLE_LOSS);
        if (loss < 0 || !pred_loss(c->nodes[loss].op)) {
            kiln_graph_free(c);
            return fail(err, KILN_ERR_UNSUPPORTED, "the model has no output and no loss "
                        "(cross_entropy, bce_with_logits, mse_loss, l1_loss) whose prediction "
                        "could be one");
        }
        kiln_status st = kiln_set_output(c, c->nodes[loss].inputs[0],
                                         logits_loss(c->nodes[loss].op) ? "logits" : "pred");
        if (st) {
            fail(err, st, "marking the logits as the output: %s", kiln_graph_error(c));
            kiln_graph_free(c);
            return st;
        }
    }
    *out = c;
    return KILN_OK;
}

/* ---- files ---- */

static kiln_status write_file(const char *path, const void *data, size_t n, char **err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, KILN_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    if (fclose(f) || w != n) return fail(err, KILN_ERR_IO, "error writing '%s'", path);
    return KILN_OK;
}

static char *path_join(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

static void le32(sbuf *b, uint32_t v)
{
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    sb_put(b, (const char *)x, 4);
}

static void le64(sbuf *b, uint64_t v)
{
    le32(b, (uint32_t)v);
    le32(b, (uint32_t)(v >> 32));
}

/* The weights blob: a checkpoint loaded (strictly: every parameter, right
 * shapes and dtypes) into a reference-backend program, laid out as P. */
static kiln_status make_blob(const kiln_graph *forward, const kiln_aot_plan *plan,
                             const char *weights, sbuf *blob, char **err)
{
    kiln_compile_options co = kiln_compile_defaults();
    co.backend = KILN_BACKEND_REF;
    kiln_program *p = NULL;
    char *e = NULL;
    kiln_status st = kiln_compile(forward, &co, &p, &e);
    if (st) {
        fail(err, st, "%s", e ? e : kiln_status_str(st));
        free(e);
        return st;
    }
    st = kiln_load(p, weights, 0, 1, &e);
    if (st) {
        fail(err, st, "%s", e ? e : kiln_status_str(st));
        free(e);
        kiln_program_free(p);
        return st;
    }
    uint32_t count = 0;
    for (int i = 0; i < plan->nt; i++) count += plan->t[i].space == 1;
    sbuf h = {0};
    sb_put(&h, "KILNAOTW", 8);
    le32(&h, 1);
    le32(&h, count);
    le64(&h, 0); /* data offset, patched below */
    le64(&h, plan->p_bytes);
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (t->space != 1) continue;
        le32(&h, (uint32_t)strlen(t->name));
        sb_puts(&h, t->name);
        const char *dt = kiln_dtype_name(t->dtype);
        le32(&h, (uint32_t)strlen(dt));
        sb_puts(&h, dt);
        le32(&h, (uint32_t)t->rank);
        for (int d = 0; d < t->rank; d++) le64(&h, (uint64_t)t->shape[d]);
        le64(&h, (uint64_t)t->offset);
        le64(&h, (uint64_t)t->bytes);
    }
    while (h.len % 64) sb_put(&h, "", 1);
    size_t data = h.len;
    char *image = calloc(plan->p_bytes ? plan->p_bytes : 1, 1);
    if (!image || h.oom) st = fail(err, KILN_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (t->space != 1) continue;
        kiln_tensor_info info;
        void *d = kiln_program_data(p, t->name, &info);
        if (!d || info.bytes != t->bytes)
            st = fail(err, KILN_ERR_INTERNAL, "parameter '%s' differs between the plans", t->name);
        else
            memcpy(image + t->offset, d, t->bytes);
    }
    if (!st) {
        for (int k = 0; k < 8; k++) h.s[16 + k] = (char)(unsigned char)((uint64_t)data >> (8 * k));
        sb_put(blob, h.s, h.len);
        sb_put(blob, image, plan->p_bytes);
        if (blob->oom) st = fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    free(image);
    free(h.s);
    kiln_program_free(p);
    return st;
}

/* ---- sources ---- */

/* NAME.h. `target`: what the code is for, in words; `split`: NAME.o holds
 * only the kernels and NAME.c the rest (an LLVM object for another
 * architecture). */
static void write_header(sbuf *b, const kiln_aot_plan *plan, const char *P, const char *name,
                         const kiln_aot_options *o, int64_t batch, const char *target, bool split)
{
    char up[256];
    size_t k = 0;
    for (; P[k] && k + 1 < sizeof up; k++) up[k] = (P[k] >= 'a' && P[k] <= 'z') ? P[k] - 32 : P[k];
    up[k] = 0;
    const kiln_aot_tensor *in0 = NULL, *out0 = NULL;
    for (int i = 0; i < plan->nt; i++) {
        if (!in0 && is_io_in(&plan->t[i])) in0 = &plan->t[i];
        if (!out0 && is_io_out(&plan->t[i])) out0 = &plan->t[i];
    }
    char id_in[128] = "x", id_out[128] = "out";
    if (in0) ident(in0->name, id_in, sizeof id_in);
    if (out0) ident(out0->name, id_out, sizeof id_out);
    sb_printf(b, "/* %s.h — generated by kiln from %s (batch %lld, %s backend, target %s):\n"
              " * the forward pass, with no kiln library. ",
              name, o->model ? o->model : "a model", (long long)batch,
              o->backend == KILN_BACKEND_LLVM ? "LLVM" : "C", target);
    if (split)
        sb_printf(b, "Compile %s.c with the target's C compiler\n"
                  " * and link it with %s.o (the kernels), -lm and -pthread.\n *\n", name, name);
    else
        sb_printf(b, "Link %s.o (cc ... %s.o -lm -pthread).\n *\n", name, name);
    sb_printf(b,
              " * How to call it:\n"
              " *\n"
              " *   #include \"%s.h\"\n"
              " *   void *P = aligned_alloc(%sALIGN, %sWEIGHTS_BYTES);    // the weights\n"
              " *   void *A = aligned_alloc(%sALIGN, %sACTIVATION_BYTES); // scratch, per call\n"
              " *   char err[256];\n"
              " *   if (%sload_weights_file(P, \"%s.weights\", err, sizeof err)) { puts(err); exit(1); }\n"
              " *   static float x[%sNUMEL_%s], y[%sNUMEL_%s];   // a whole batch in and out\n"
              " *   // ... x = (pixel / 255 - %sNORM_MEAN) / %sNORM_STD, the last batch zero-padded\n"
              " *   %sinputs in = {.%s = x};  %soutputs out = {.%s = y};\n"
              " *   if (%sforward(P, A, &in, &out)) exit(1);         // 0: ok\n"
              " *\n"
              " * Status codes: 0 ok; 1 bad arguments (NULL, misaligned); 2 weights that do not\n"
              " * match the model (the message names the tensor); > 2 a kernel's run-time check\n"
              " * failed. Threads: %sforward runs on the calling thread; %sforward_pool on a\n"
              " * pool of threads from %spool_new(N) (link with -pthread), with the same\n"
              " * results. A is the caller's: one per concurrent call; P may be shared by\n"
              " * concurrent calls (read-only); a pool runs one call at a time (a concurrent\n"
              " * call on a busy pool runs on its own thread).\n"
              " */\n",
              name, P, P, P, P, P, name, P, id_in,
              P, id_out, P, P, P, id_in, P, id_out, P, P, P, P);
    sb_printf(b, "#ifndef %sH_INCLUDED\n#define %sH_INCLUDED\n\n#include <stddef.h>\n"
              "#include <stdint.h>\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n", up, up);
    sb_printf(b, "#define %sBATCH %lld\n#define %sALIGN 64\n", P, (long long)batch, P);
    sb_printf(b, "#define %sWEIGHTS_BYTES ((size_t)%zu)    /* P: 64-byte aligned */\n", P,
              plan->p_bytes);
    sb_printf(b, "#define %sACTIVATION_BYTES ((size_t)%zu) /* A: 64-byte aligned */\n", P,
              plan->a_bytes);
    sb_printf(b, "/* the input normalisation kiln's training used: (pixel / 255 - mean) / std */\n"
              "#define %sNORM_MEAN %af\n#define %sNORM_STD %af\n\n", P, (double)o->norm_mean, P,
              (double)o->norm_std);
    for (int pass = 0; pass < 2; pass++) {
        sb_printf(b, "typedef struct %s%s {\n", P, pass ? "outputs" : "inputs");
        int n = 0;
        for (int i = 0; i < plan->nt; i++) {
            const kiln_aot_tensor *t = &plan->t[i];
            if (pass ? !is_io_out(t) : !is_io_in(t)) continue;
            char id[128], ty[160];
            ident(t->name, id, sizeof id);
            type_str(t, ty, sizeof ty);
            sb_printf(b, "    %s%s *%s; /* '%s' %s %s */\n", pass ? "" : "const ", c_type(t->dtype),
                      id, t->name, kiln_role_name(t->role), ty);
            n++;
        }
        if (!n) sb_printf(b, "    int unused_;\n");
        sb_printf(b, "} %s%s;\n", P, pass ? "outputs" : "inputs");
    }
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (!is_io_in(t) && !is_io_out(t)) continue;
        char id[128];
        ident(t->name, id, sizeof id);
        sb_printf(b, "#define %sNUMEL_%s %lld\n", P, id, (long long)numel(t));
    }
    sb_printf(b, "\n/* Checks a weights blob (NAME.weights' bytes) against the model and copies it\n"
              " * into P; non-zero with a message naming the tensor in err when it does not\n"
              " * match. */\n"
              "int %sload_weights(void *P, const void *blob, size_t bytes, char *err, size_t errlen);\n"
              "/* The same from a file. */\n"
              "int %sload_weights_file(void *P, const char *path, char *err, size_t errlen);\n"
              "/* One batch: copies the inputs into A, runs, copies the outputs (NULL: skipped). */\n"
              "int %sforward(void *P, void *A, const %sinputs *in, %soutputs *out);\n\n"
              "/* A pool of `threads` threads, the caller's included (threads - 1 workers; 0:\n"
              " * one per online core); NULL when out of memory. Free it with %spool_free. */\n"
              "typedef struct %spool %spool;\n"
              "%spool *%spool_new(int threads);\n"
              "void %spool_free(%spool *pool);\n"
              "/* The threads a pool runs loops on (the caller's included; 1 for NULL). */\n"
              "int %spool_threads(const %spool *pool);\n"
              "/* %sforward with its parallel loops on pool (NULL: the calling thread). */\n"
              "int %sforward_pool(%spool *pool, void *P, void *A, const %sinputs *in,\n"
              "                   %soutputs *out);\n\n"
              "#ifdef __cplusplus\n}\n#endif\n\n#endif\n", P, P, P, P, P, P, P, P, P, P, P, P, P, P,
              P, P, P, P, P);
}

/* The translation unit: the entry (C backend: the generated kernels, the
 * entry renamed `entry`; LLVM: a declaration of the object's `entry`), the
 * weights loader, the runtime and NAME_forward. */
static void write_source(sbuf *b, const kiln_aot_plan *plan, const char *P, const char *name,
                         const char *entry, bool llvm)
{
    if (!llvm) {
        sb_printf(b, "/* %s.c — generated by kiln: the forward entry, its weights loader and a\n"
                  " * thread pool. Compile with a C11 compiler and the target's flags:\n"
                  " * cc -O3 %s -std=c11 -c %s.c */\n"
                  "#define _POSIX_C_SOURCE 200809L\n"
                  "#if defined(__GNUC__)\n#pragma GCC diagnostic ignored \"-Wunknown-pragmas\"\n"
                  "#pragma GCC diagnostic ignored \"-Wunused-parameter\"\n#endif\n"
                  "#define kiln_forward %s\n", name, plan->cflags, name, entry);
        sb_puts(b, plan->source);
        sb_printf(b, "#undef kiln_forward\n");
    } else {
        sb_printf(b, "/* %s.c — generated by kiln: the weights loader, a thread pool and\n"
                  " * %sforward around the forward entry %s, which the LLVM backend compiled\n"
                  " * into an object (the kernels). Compile with a C11 compiler for the same\n"
                  " * target and link both: cc -O2 -std=c11 -c %s.c */\n"
                  "#define _POSIX_C_SOURCE 200809L\n#include <stdint.h>\n\n"
                  "/* The runtime's services (codegen/codegen.h): parallel_for(pool, n, fn, ctx)\n"
                  " * calls fn(ctx, lo, hi) over chunks covering [0, n) and returns when all\n"
                  " * have finished. */\n"
                  "typedef struct kiln_rt {\n    void *pool;\n"
                  "    void (*parallel_for)(void *pool, int64_t n, void (*fn)(void *, int64_t, "
                  "int64_t), void *ctx);\n} kiln_rt;\n\n", name, P, entry, name);
    }
    sb_printf(b, "int %s(char *restrict P, char *restrict S, char *restrict A, const kiln_rt *rt);\n\n",
              entry);
    sb_printf(b, "#include <errno.h>\n#include <pthread.h>\n#include <stdarg.h>\n"
              "#include <stdatomic.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
              "#include <unistd.h>\n\n#include \"%s.h\"\n\n", name);
    int np = 0;
    for (int i = 0; i < plan->nt; i++) np += plan->t[i].space == 1;
    sb_printf(b, "typedef struct %stdesc {\n    const char *name, *dtype;\n    int rank;\n"
              "    int64_t shape[8];\n    uint64_t offset, bytes;\n} %stdesc;\n\n", P, P);
    sb_printf(b, "#define %sNPARAMS %d\nstatic const %stdesc %sparams[%d] = {\n", P, np, P, P,
              np ? np : 1);
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (t->space != 1) continue;
        sb_printf(b, "    {\"%s\", \"%s\", %d, {", t->name, kiln_dtype_name(t->dtype), t->rank);
        for (int d = 0; d < t->rank; d++) sb_printf(b, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        sb_printf(b, "}, %lld, %zu},\n", (long long)t->offset, t->bytes);
    }
    if (!np) sb_puts(b, "    {\"\", \"\", 0, {0}, 0, 0},\n");
    sb_puts(b, "};\n\n");
    sb_template(b, kiln_aot_loader_src, P, name);
    sb_printf(b, "\nint %sforward(void *P, void *A, const %sinputs *in, %soutputs *out)\n{\n"
              "    return %sforward_pool(NULL, P, A, in, out);\n}\n\n"
              "int %sforward_pool(%spool *pool, void *P, void *A, const %sinputs *in, "
              "%soutputs *out)\n{\n"
              "    static _Alignas(64) char S[64];\n"
              "    if (!P || !A || !in || ((uintptr_t)P & 63) || ((uintptr_t)A & 63)) return 1;\n",
              P, P, P, P, P, P, P, P);
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (!is_io_in(t)) continue;
        char id[128];
        ident(t->name, id, sizeof id);
        sb_printf(b, "    if (!in->%s) return 1;\n    memcpy((char *)A + %lld, in->%s, %zu);\n", id,
                  (long long)t->offset, id, t->bytes);
    }
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (!is_io_out(t) || !t->is_const) continue;
        sb_printf(b, "    for (int64_t k = 0; k < %lld; k++) ((%s *)((char *)A + %lld))[k] = (%s)%.17g;\n",
                  (long long)numel(t), c_type(t->dtype), (long long)t->offset, c_type(t->dtype),
                  t->const_value);
    }
    sb_printf(b, "    kiln_rt rt = {pool, %spool_for};\n"
              "    int rc = %s((char *)P, S, (char *)A, pool ? &rt : &%sserial_rt);\n"
              "    if (rc) return rc + 2;\n", P, entry, P);
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (!is_io_out(t)) continue;
        char id[128];
        ident(t->name, id, sizeof id);
        sb_printf(b, "    if (out && out->%s) memcpy(out->%s, (char *)A + %lld, %zu);\n", id, id,
                  (long long)t->offset, t->bytes);
    }
    sb_puts(b, "    return 0;\n}\n");
}

/* A C string literal of s (escapes: quotes, backslashes, '?' (trigraphs),
 * and every byte outside printable ASCII as three octal digits). */
static void sb_cstr(sbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\' || c == '?') sb_printf(b, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f) sb_printf(b, "\\%03o", c);
        else sb_put(b, (const char *)&c, 1);
    }
    sb_puts(b, "\"");
}

/* The executable's main: one f32 input of [B, ...] and an f32 output [B, ...]
 * read as the task says (classify, multilabel: [B, C]; segment: [B, C, H, W]). */
static kiln_status write_main(sbuf *b, const kiln_aot_plan *plan, const char *P, const char *name,
                              int64_t *batch, kiln_aot_task task, const kiln_aot_options *o,
                              double thresh, char **err)
{
    const kiln_aot_tensor *in = NULL, *out = NULL;
    int nin = 0;
    for (int i = 0; i < plan->nt; i++) {
        const kiln_aot_tensor *t = &plan->t[i];
        if (is_io_in(t)) {
            nin++;
            in = t;
        }
        if (!out && t->role == KILN_ROLE_OUTPUT) out = t;
    }
    if (nin != 1 || in->role != KILN_ROLE_INPUT || in->dtype != KILN_F32 || in->rank < 1)
        return fail(err, KILN_ERR_UNSUPPORTED, "--emit exe needs a model whose forward pass reads "
                    "one f32 input (it reads %d values%s)", nin,
                    nin == 1 ? " of another kind" : "");
    static const char *const want[] = {"[B, classes] (a classifier)",
                                       "[B, classes] (multi-label logits)",
                                       "[B, classes, H, W] (segmentation logits)", "[B, ...]"};
    int want_rank = task == KILN_AOT_SEGMENT ? 4 : task == KILN_AOT_REGRESS ? 0 : 2;
    if (!out || out->dtype != KILN_F32 || out->rank < 1 || out->shape[0] != in->shape[0] ||
        (want_rank && out->rank != want_rank))
        return fail(err, KILN_ERR_UNSUPPORTED, "--emit exe needs a model with an f32 output of "
                    "shape %s", want[task]);
    int64_t classes = task == KILN_AOT_REGRESS ? numel(out) / out->shape[0] : out->shape[1];
    if (task == KILN_AOT_SEGMENT && classes > 256)
        return fail(err, KILN_ERR_UNSUPPORTED, "a segmentation model of %lld classes: 8-bit masks "
                    "hold at most 256", (long long)classes);
    bool names = o->class_names && o->nclass_names > 0 && task != KILN_AOT_REGRESS;
    if (names && o->nclass_names != classes)
        return fail(err, KILN_ERR_INVALID, "%d class names (--data / --classes) but the model's "
                    "output has %lld classes", o->nclass_names, (long long)classes);
    char id_in[128], id_out[128];
    ident(in->name, id_in, sizeof id_in);
    ident(out->name, id_out, sizeof id_out);
    *batch = in->shape[0];
    static const char *const task_words[] = {"classifier", "multi-label tagger",
                                             "segmentation model", "regression model"};
    sb_printf(b, "/* %s_main.c — generated by kiln: the %s's main. Build flags:\n"
              " * -DKILN_AOT_ZLIB -lz (gzip input), -DKILN_AOT_PNG -lpng (PNG input, masks). */\n"
              "#define _POSIX_C_SOURCE 200809L\n#include <errno.h>\n#include <math.h>\n"
              "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
              "#include <sys/stat.h>\n"
              "#include <unistd.h>\n#ifdef KILN_AOT_ZLIB\n#include <zlib.h>\n#endif\n"
              "#ifdef KILN_AOT_PNG\n#include <png.h>\n#endif\n\n#include \"%s.h\"\n\n", name,
              task_words[task], name);
    sb_printf(b, "#define %sIN_NUMEL %lld\n#define %sIN_RANK %d\n", P,
              (long long)(numel(in) / in->shape[0]), P, in->rank);
    sb_printf(b, "/* the task (KILN_OUT_*: 0 classify, 1 multi-label, 2 segment, 3 regress) and\n"
              " * the output per sample */\n#define %sTASK %d\n#define %sCLASSES %lld\n"
              "#define %sOUT_NUMEL %lld\n#define %sOUT_H %lld\n#define %sOUT_W %lld\n"
              "#define %sTHRESH %.17g\n", P, (int)task, P, (long long)classes, P,
              (long long)(numel(out) / out->shape[0]), P,
              (long long)(task == KILN_AOT_SEGMENT ? out->shape[2] : 0), P,
              (long long)(task == KILN_AOT_SEGMENT ? out->shape[3] : 0), P, thresh);
    if (names) {
        sb_printf(b, "static const char *const %sclass_names[%d] = {\n", P, o->nclass_names);
        for (int i = 0; i < o->nclass_names; i++) {
            sb_puts(b, "    ");
            sb_cstr(b, o->class_names[i] ? o->class_names[i] : "");
            sb_puts(b, ",\n");
        }
        sb_printf(b, "};\n#define %sCLASS_NAMES %sclass_names\n", P, P);
    } else {
        sb_printf(b, "#define %sCLASS_NAMES NULL\n", P);
    }
    sb_printf(b, "static const int64_t %sin_shape[%d] = {", P, in->rank);
    for (int d = 0; d < in->rank; d++)
        sb_printf(b, "%s%lld", d ? ", " : "", (long long)in->shape[d]);
    sb_puts(b, "};\n");
    sb_printf(b, "#define %sMAIN_SET_INPUT(in, p) ((in).%s = (p))\n"
              "#define %sMAIN_SET_OUTPUT(o, p) ((o).%s = (p))\n\n", P, id_in, P, id_out);
    sb_puts(b, "\n");
    sb_template(b, kiln_aot_input_src, P, name);
    sb_puts(b, "\n");
    sb_template(b, kiln_aot_main_src, P, name);
    return KILN_OK;
}

/* ---- the compiler ---- */

static kiln_status run_cc(char *const *argv, const char *log, int verbose, char **err)
{
    if (verbose) {
        fprintf(stderr, "kiln:");
        for (int i = 0; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
        fprintf(stderr, "\n");
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return fail(err, KILN_ERR_IO, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run the C compiler '%s': %s (set $CC)\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return fail(err, KILN_ERR_IO, "waitpid: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return KILN_OK;
    char msg[4096] = "";
    FILE *f = fopen(log, "r");
    if (f) {
        size_t n = fread(msg, 1, sizeof msg - 1, f);
        msg[n] = 0;
        fclose(f);
    }
    return fail(err, KILN_ERR_IO, "the C compiler failed:\n%s", msg);
}

/* cc: "obj" (-c inputs -o output), "exe" (inputs -o output -lm, with zlib
 * for gzip input and libpng for PNG input when the system has them: tried
 * with both, then zlib alone, then neither) or "reloc" (cc -r: one
 * relocatable object of the input objects). */
static kiln_status cc_run(const kiln_aot_options *o, const char *cflags, const char *mode,
                          const char *const *inputs, const char *output, const char *log,
                          char **err)
{
    const char *cc = o->cc ? o->cc : getenv("CC");
    if (!cc || !*cc) cc = "cc";
    bool exe = !strcmp(mode, "exe"), reloc = !strcmp(mode, "reloc");
    static const int libsets[] = {3, 1, 0}; /* bit 0: zlib, bit 1: libpng */
    kiln_status st = KILN_OK;
    for (int a = exe ? 0 : 2; a < 3; a++) {
        bool zlib = libsets[a] & 1, png = libsets[a] & 2;
        char *flags = strdup(cflags ? cflags : "");
        if (!flags) return fail(err, KILN_ERR_NOMEM, "out of memory");
        char *argv[64];
        int n = 0;
        argv[n++] = (char *)cc;
        if (reloc) {
            argv[n++] = "-r";
            argv[n++] = "-nostdlib";
        } else {
            argv[n++] = "-O3";
            for (char *save = NULL, *t = strtok_r(flags, " ", &save); t && n < 30;
                 t = strtok_r(NULL, " ", &save))
                argv[n++] = t;
            argv[n++] = "-std=c11";
            argv[n++] = "-fno-math-errno";
            argv[n++] = "-fopenmp-simd";
            argv[n++] = "-fPIC";
            if (!exe) argv[n++] = "-c";
        }
        for (int i = 0; inputs[i] && n < 50; i++) argv[n++] = (char *)inputs[i];
        if (zlib) argv[n++] = "-DKILN_AOT_ZLIB";
        if (png) argv[n++] = "-DKILN_AOT_PNG";
        argv[n++] = "-o";
        argv[n++] = (char *)output;
        if (exe) argv[n++] = "-lm";
        if (exe) argv[n++] = "-pthread";
        if (png) argv[n++] = "-lpng";
        if (zlib) argv[n++] = "-lz";
        argv[n] = NULL;
        st = run_cc(argv, log, o->verbose, err);
        free(flags);
        if (st && a < 2 && exe) { /* without that library: no gzip or PNG input */
            if (err) {
                free(*err);
                *err = NULL;
            }
            continue;
        }
        break;
    }
    return st;
}

static void rmtree_flat(const char *dir, const char *name)
{
    static const char *const suffix[] = {".c", ".h", "_main.c", "_kernels.o", "_wrap.o"};
    for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
        char *p = path_join(dir, "/", name);
        char *q = p ? path_join(p, suffix[i], "") : NULL;
        if (q) unlink(q);
        free(p);
        free(q);
    }
    char *l = path_join(dir, "/cc.log", "");
    if (l) unlink(l);
    free(l);
    rmdir(dir);
}

/* ---- targets ---- */

typedef enum aot_arch { ARCH_X86_64, ARCH_AARCH64, ARCH_OTHER } aot_arch;

static aot_arch host_arch(void)
{
#if defined(__x86_64__)
    return ARCH_X86_64;
#elif defined(__aarch64__)
    return ARCH_AARCH64;
#else
    return ARCH_OTHER;
#endif
}

static aot_arch triple_arch(const char *triple)
{
    size_t n = strcspn(triple, "-");
    static const char *const x86[] = {"x86_64", "amd64", "x86_64h"};
    static const char *const arm[] = {"aarch64", "arm64"};
    for (size_t i = 0; i < sizeof x86 / sizeof x86[0]; i++)
        if (strlen(x86[i]) == n && !strncmp(triple, x86[i], n)) return ARCH_X86_64;
    for (size_t i = 0; i < sizeof arm / sizeof arm[0]; i++)
        if (strlen(arm[i]) == n && !strncmp(triple, arm[i], n)) return ARCH_AARCH64;
    return ARCH_OTHER;
}

/* A triple or CPU name: letters, digits, '.', '_', '+', '-'. */
static bool plain_name(const char *s)
{
    if (!s || !*s || strlen(s) > 100) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '+' || *s == '-'))
            return false;
    return true;
}

/* The C emitter's ISA for an x86-64 CPU (LLVM's and gcc's names): avx512
 * where the CPU has AVX-512F, avx2 where it has AVX2 and FMA, else scalar.
 * The LLVM backend reads the same CPUs the same way (kl_target_from). */
static const char *x86_isa(const char *cpu)
{
    static const char *const w16[] = {
        "skylake-avx512", "cascadelake", "cooperlake", "icelake-client", "icelake-server",
        "tigerlake", "sapphirerapids", "znver4", "znver5", "x86-64-v4", "graniterapids",
        "emeraldrapids", "rocketlake", "cannonlake", "knl", "knm"};
    static const char *const w8[] = {
        "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "znver1",
        "znver2", "znver3", "x86-64-v3", "bdver2", "bdver3", "bdver4", "arrowlake", "lunarlake",
        "gracemont"};
    for (size_t i = 0; i < sizeof w16 / sizeof w16[0]; i++)
        if (!strcmp(cpu, w16[i])) return "avx512";
    for (size_t i = 0; i < sizeof w8 / sizeof w8[0]; i++)
        if (!strcmp(cpu, w8[i])) return "avx2";
    return "scalar";
}

typedef struct aot_target {
    const char *isa;    /* the C emitter's target (kiln_compile_options.target); NULL: host */
    char cflags[192];   /* cc flags for the generated C, when set */
    bool set_cflags;    /* else the plan's (-march=native, or the ISA's flags) */
    const char *triple; /* the LLVM target machine; NULL: the host's triple */
    const char *cpu;    /* NULL with a NULL triple: the host's CPU and features */
    bool cross;         /* another architecture than this machine's: cc cannot build it */
    char desc[256];     /* in words, for NAME.h */
} aot_target;

static kiln_status resolve_target(const kiln_aot_options *o, aot_target *t, char **err)
{
    memset(t, 0, sizeof *t);
    const char *tg = o->target, *cpu = o->cpu;
    if (cpu && !plain_name(cpu))
        return fail(err, KILN_ERR_INVALID, "bad CPU name '%s'", cpu);
    if (tg && !strcmp(tg, "native")) tg = NULL;
    if (cpu && !strcmp(cpu, "native")) {
        if (tg) return fail(err, KILN_ERR_INVALID, "--cpu native goes without --target");
        cpu = NULL;
    }
    static const char *const isas[] = {"avx512", "avx2", "scalar", "neon"};
    static const char *const isa_cpu[] = {"skylake-avx512", "haswell", "x86-64", "generic"};
    int isa = -1;
    for (int i = 0; tg && i < 4; i++)
        if (!strcmp(tg, isas[i])) isa = i;
    aot_arch a = host_arch();
    if (!tg && !cpu) {
        snprintf(t->desc, sizeof t->desc, "native");
        return KILN_OK;
    }
    if (isa >= 0) {
        t->isa = isas[isa];
        a = isa == 3 ? ARCH_AARCH64 : ARCH_X86_64;
        t->cross = a != host_arch();
        if (t->cross) t->triple = a == ARCH_AARCH64 ? "aarch64-unknown-linux-gnu"
                                                    : "x86_64-unknown-linux-gnu";
        t->cpu = cpu ? cpu : isa_cpu[isa];
        kiln_cg_target ct;
        if (kiln_target_parse(t->isa, &ct))
            return fail(err, KILN_ERR_INTERNAL, "target '%s' is not known", t->isa);
        if (cpu) {
            snprintf(t->cflags, sizeof t->cflags, "%s %s%s", ct.cflags,
                     a == ARCH_X86_64 ? "-march=" : "-mcpu=", cpu);
            t->set_cflags = true;
        }
        snprintf(t->desc, sizeof t->desc, "%s%s%s", t->isa, cpu ? ", cpu " : "", cpu ? cpu : "");
        return KILN_OK;
    }
    if (tg) {
        if (!strchr(tg, '-') || !plain_name(tg))
            return fail(err, KILN_ERR_INVALID, "unknown target '%s' (native, avx512, avx2, neon, "
                        "scalar, or a triple such as x86_64-linux-gnu or aarch64-linux-gnu)", tg);
        a = triple_arch(tg);
        t->triple = tg;
        t->cross = a != host_arch() || a == ARCH_OTHER;
        if (!cpu) cpu = "generic";
    }
    t->cpu = cpu;
    t->isa = a == ARCH_X86_64 ? x86_isa(cpu) : a == ARCH_AARCH64 ? "neon" : "scalar";
    kiln_cg_target ct;
    if (kiln_target_parse(t->isa, &ct))
        return fail(err, KILN_ERR_INTERNAL, "target '%s' is not known", t->isa);
    if (a == ARCH_X86_64)
        snprintf(t->cflags, sizeof t->cflags, "%s%s-march=%s", ct.cflags, *ct.cflags ? " " : "",
                 strcmp(cpu, "generic") ? cpu : "x86-64");
    else if (a == ARCH_AARCH64 && strcmp(cpu, "generic"))
        snprintf(t->cflags, sizeof t->cflags, "-mcpu=%s", cpu);
    else
        snprintf(t->cflags, sizeof t->cflags, "%s", ct.cflags);
    t->set_cflags = true;
    if (o->backend == KILN_BACKEND_LLVM)
        snprintf(t->desc, sizeof t->desc, "%s, cpu %s",
                 t->triple ? t->triple : "this machine's triple", cpu);
    else
        snprintf(t->desc, sizeof t->desc, "%s, cpu %s (%s vector code)",
                 t->triple ? t->triple : "this machine's triple", cpu, t->isa);
    return KILN_OK;
}

/* ---- the LLVM backend's object ---- */

typedef struct llvm_job {
    const char *entry; /* the entry's name; its symbol is kiln_<entry> */
    const aot_target *t;
    const char *path;
} llvm_job;

static kiln_status emit_llvm_object(const kiln_plan *one, void *user, char **err)
{
    const llvm_job *j = user;
    kiln_plan_entry e = one->entries[0];
    e.name = j->entry;
    kiln_plan p = *one;
    p.entries = &e;
    p.nentries = 1;
    return kiln_llvm_emit_object(&p, j->t->triple, j->t->cpu, j->path, err);
}

/* ---- the artifacts ---- */

static kiln_status write_in(const char *dir, const char *name, const char *suffix, const sbuf *b,
                            char **err)
{
    char *p = path_join(dir, "/", name), *q = p ? path_join(p, suffix, "") : NULL;
    kiln_status st =
        q ? write_file(q, b->s, b->len, err) : fail(err, KILN_ERR_NOMEM, "out of memory");
    free(p);
    free(q);
    return st;
}

static kiln_status copy_out(const char *from, const char *to, char **err)
{
    FILE *f = fopen(from, "rb");
    if (!f) return fail(err, KILN_ERR_IO, "cannot read '%s': %s", from, strerror(errno));
    sbuf b = {0};
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sb_put(&b, buf, n);
    bool bad = ferror(f);
    fclose(f);
    kiln_status st = bad || b.oom
                         ? fail(err, bad ? KILN_ERR_IO : KILN_ERR_NOMEM, "cannot read '%s'", from)
                         : write_file(to, b.s, b.len, err);
    free(b.s);
    return st;
}

kiln_status kiln_aot_compile(const kiln_graph *forward, const kiln_aot_options *o, char **err)
{
    if (err) *err = NULL;
    if (!forward || !o || !o->out || !*o->out)
        return fail(err, KILN_ERR_INVALID, "kiln_aot_compile: %s",
                    !forward ? "the graph is NULL" : "no output name (-o NAME)");
    static const char *const emit_names[] = {"exe", "lib", "c", "obj"};
    if ((int)o->emit < 0 || (int)o->emit > 3)
        return fail(err, KILN_ERR_INVALID, "kiln_aot_compile: unknown emit %d", (int)o->emit);
    const char *emit = emit_names[o->emit];
    bool llvm = o->backend == KILN_BACKEND_LLVM;
    if (o->backend != KILN_BACKEND_C && !llvm)
        return fail(err, KILN_ERR_INVALID, "artifacts are built with the C or the LLVM backend");
    if ((o->emit == KILN_AOT_EXE || o->emit == KILN_AOT_LIB) && !o->weights)
        return fail(err, KILN_ERR_INVALID, "--emit %s needs --weights FILE.safetensors", emit);
    if (!(o->norm_std > 0.0f))
        return fail(err, KILN_ERR_INVALID, "the normalisation std must be positive");
    if (llvm && !kiln_llvm_available())
        return fail(err, KILN_ERR_UNSUPPORTED, "--backend llvm: kiln was built without LLVM (CMake "
                    "found no llvm-config of LLVM 14 to 19); use --backend c");
    if (llvm && o->emit == KILN_AOT_C)
        return fail(err, KILN_ERR_INVALID, "--emit c writes the C backend's source; the LLVM "
                    "backend writes objects (--emit obj, lib or exe)");
    aot_target tgt;
    kiln_status st = resolve_target(o, &tgt, err);
    if (st) return st;
    bool needs_cc = o->emit == KILN_AOT_EXE || o->emit == KILN_AOT_LIB ||
                    (!llvm && o->emit == KILN_AOT_OBJ);
    if (tgt.cross && needs_cc)
        return fail(err, KILN_ERR_UNSUPPORTED, "target %s is another architecture than this "
                    "machine's, which its C compiler builds for: write %s",
                    o->target ? o->target : o->cpu,
                    llvm ? "--emit obj (the kernels as an object, the rest as C source)"
                         : "--emit c and compile it with the target's compiler, or use "
                           "--backend llvm --emit obj");
    char P[208], name[200];
    kiln_aot_prefix(o->out, name, sizeof name);
    snprintf(P, sizeof P, "%s_", name);
    /* the entry's symbol: NAME_entry_ (C), kiln_NAME_entry (LLVM: kiln_<entry>) */
    char entry[240], llvm_entry[80];
    if (strlen(P) <= 50) {
        snprintf(llvm_entry, sizeof llvm_entry, "%.50sentry", P);
    } else {
        uint32_t h = 2166136261u;
        for (const char *c = P; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
        snprintf(llvm_entry, sizeof llvm_entry, "aot_%08x_entry", (unsigned)h);
    }
    if (llvm) snprintf(entry, sizeof entry, "kiln_%s", llvm_entry);
    else snprintf(entry, sizeof entry, "%sentry_", P);
    snprintf(name, sizeof name, "%s", base_name(o->out));
    if (!*name || strchr(name, '"') || strchr(name, '\\'))
        return fail(err, KILN_ERR_INVALID, "bad output name '%s'", o->out);
    kiln_compile_options co = kiln_compile_defaults();
    co.target = tgt.isa;
    kiln_graph *cls = NULL;
    if ((st = kiln_aot_classifier(forward, &cls, err))) return st;
    forward = cls;
    /* a folder for the sources and objects cc and LLVM write */
    char *tmpdir = NULL, *kobj = NULL;
    if (o->emit != KILN_AOT_C) {
        const char *td = getenv("TMPDIR");
        tmpdir = path_join(td && *td ? td : "/tmp", "/kiln-aot-XXXXXX", "");
        if (!tmpdir || !mkdtemp(tmpdir)) {
            st = fail(err, KILN_ERR_IO, "cannot make a temporary folder: %s", strerror(errno));
            free(tmpdir);
            kiln_graph_free(cls);
            return st;
        }
        char *b = path_join(tmpdir, "/", name);
        kobj = b ? path_join(b, "_kernels.o", "") : NULL;
        free(b);
        if (!kobj) st = fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    llvm_job job = {llvm_entry, &tgt, kobj};
    kiln_aot_plan plan;
    memset(&plan, 0, sizeof plan);
    if (!st)
        st = kiln_aot_plan_build(forward, &co, llvm ? emit_llvm_object : NULL, &job, &plan, err);
    if (!st && tgt.set_cflags) {
        char *cf = strdup(tgt.cflags);
        if (!cf) st = fail(err, KILN_ERR_NOMEM, "out of memory");
        free(plan.cflags);
        plan.cflags = cf;
    }
    sbuf blob = {0}, hdr = {0}, src = {0}, mainsrc = {0};
    int64_t batch = 0;
    for (int i = 0; !st && i < plan.nt && !batch; i++)
        if (is_io_in(&plan.t[i]) && plan.t[i].rank) batch = plan.t[i].shape[0];
    bool split = llvm && tgt.cross; /* obj: the kernels' object and NAME.c */
    double thresh = 0.0;
    kiln_aot_task task = kiln_aot_task_of(forward, &thresh);
    if (o->thresh > 0.0) thresh = o->thresh;
    if (!st && o->emit == KILN_AOT_EXE)
        st = write_main(&mainsrc, &plan, P, name, &batch, task, o, thresh, err);
    if (!st && o->weights) st = make_blob(forward, &plan, o->weights, &blob, err);
    if (!st) {
        write_header(&hdr, &plan, P, name, o, batch, tgt.desc, split);
        write_source(&src, &plan, P, name, entry, llvm);
        if (hdr.oom || src.oom || mainsrc.oom) st = fail(err, KILN_ERR_NOMEM, "out of memory");
    }
    /* outputs: OUT.weights; OUT.h and OUT.c (c), OUT.o (lib, obj) or OUT (exe) */
    char *w = path_join(o->out, ".weights", ""), *oh = path_join(o->out, ".h", "");
    char *oc = path_join(o->out, ".c", ""), *oo = path_join(o->out, ".o", "");
    if (!st && (!w || !oh || !oc || !oo)) st = fail(err, KILN_ERR_NOMEM, "out of memory");
    if (!st && o->weights) st = write_file(w, blob.s, blob.len, err);
    if (!st && o->emit == KILN_AOT_C) {
        st = write_file(oh, hdr.s, hdr.len, err);
        if (!st) st = write_file(oc, src.s, src.len, err);
    } else if (!st) {
        char *base = path_join(tmpdir, "/", name);
        char *c = base ? path_join(base, ".c", "") : NULL;
        char *m = base ? path_join(base, "_main.c", "") : NULL;
        char *wo = base ? path_join(base, "_wrap.o", "") : NULL;
        char *log = path_join(tmpdir, "/cc.log", "");
        if (!c || !m || !wo || !log) st = fail(err, KILN_ERR_NOMEM, "out of memory");
        if (!st) st = write_in(tmpdir, name, ".h", &hdr, err);
        if (!st) st = write_in(tmpdir, name, ".c", &src, err);
        if (!st && o->emit == KILN_AOT_EXE) st = write_in(tmpdir, name, "_main.c", &mainsrc, err);
        if (!st && o->emit == KILN_AOT_EXE) {
            const char *in[] = {c, m, llvm ? kobj : NULL, NULL};
            st = cc_run(o, plan.cflags, "exe", in, o->out, log, err);
        } else if (!st && split) {
            st = copy_out(kobj, oo, err);
            if (!st) st = write_file(oc, src.s, src.len, err);
        } else if (!st) {
            const char *in[] = {c, NULL};
            st = cc_run(o, plan.cflags, "obj", in, llvm ? wo : oo, log, err);
            const char *objs[] = {wo, kobj, NULL};
            if (!st && llvm) st = cc_run(o, "", "reloc", objs, oo, log, err);
        }
        if (!st && o->emit != KILN_AOT_EXE) st = write_file(oh, hdr.s, hdr.len, err);
        if (st && err && *err) { /* keep the sources to look at */
            char *e2 = path_join(*err, "\n(the generated sources are kept in ", tmpdir);
            if (e2) {
                free(*err);
                *err = path_join(e2, ")", "");
                free(e2);
            }
            free(tmpdir);
            tmpdir = NULL;
        }
        free(base);
        free(c);
        free(m);
        free(wo);
        free(log);
    }
    if (tmpdir) rmtree_flat(tmpdir, name);
    free(w);
    free(oh);
    free(oc);
    free(oo);
    free(tmpdir);
    free(kobj);
    free(blob.s);
    free(hdr.s);
    free(src.s);
    free(mainsrc.s);
    kiln_aot_plan_free(&plan);
    kiln_graph_free(cls);
    return st;
}
