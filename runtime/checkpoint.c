/* runtime/checkpoint.c — checkpoints of compiled programs (see
 * kiln/checkpoint.h), on the safetensors reader and writer of
 * runtime/safetensors.c. It sees a program only through kiln/program.h: its
 * named tensors, their roles, shapes and storage.
 *
 * Loading checks every tensor it will write (name, dtype, shape) and, when
 * strict, every name on both sides, before it writes any of them.
 */
#include "kiln/kiln.h"
#include "kiln/checkpoint.h"
#include "runtime/safetensors.h"
#include "ir/util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- metadata ----------------------------------------------------------- */

struct kiln_checkpoint_meta {
    char **key, **value;
    int n, cap;
};

kiln_checkpoint_meta *kiln_checkpoint_meta_new(void) { return calloc(1, sizeof(kiln_checkpoint_meta)); }

void kiln_checkpoint_meta_clear(kiln_checkpoint_meta *m)
{
    if (!m) return;
    for (int i = 0; i < m->n; i++) {
        free(m->key[i]);
        free(m->value[i]);
    }
    m->n = 0;
}

void kiln_checkpoint_meta_free(kiln_checkpoint_meta *m)
{
    if (!m) return;
    kiln_checkpoint_meta_clear(m);
    free(m->key);
    free(m->value);
    free(m);
}

static int meta_find(const kiln_checkpoint_meta *m, const char *key)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->key[i], key) == 0) return i;
    return -1;
}

kiln_status kiln_checkpoint_meta_set(kiln_checkpoint_meta *m, const char *key, const char *value)
{
    if (!m || !key || !*key || !value) return KILN_ERR_INVALID;
    char *v = strdup(value);
    if (!v) return KILN_ERR_NOMEM;
    int i = meta_find(m, key);
    if (i >= 0) {
        free(m->value[i]);
        m->value[i] = v;
        return KILN_OK;
    }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 8;
        char **k = realloc(m->key, (size_t)cap * sizeof *k);
        if (k) m->key = k;
        char **vv = k ? realloc(m->value, (size_t)cap * sizeof *vv) : NULL;
        if (vv) m->value = vv;
        if (!k || !vv) {
            free(v);
            return KILN_ERR_NOMEM;
        }
        m->cap = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return KILN_ERR_NOMEM;
    }
    m->key[m->n] = k;
    m->value[m->n] = v;
    m->n++;
    return KILN_OK;
}

kiln_status kiln_checkpoint_meta_set_int(kiln_checkpoint_meta *m, const char *key, int64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return kiln_checkpoint_meta_set(m, key, buf);
}

const char *kiln_checkpoint_meta_get(const kiln_checkpoint_meta *m, const char *key)
{
    if (!m || !key) return NULL;
    int i = meta_find(m, key);
    return i >= 0 ? m->value[i] : NULL;
}

kiln_status kiln_checkpoint_meta_get_int(const kiln_checkpoint_meta *m, const char *key,
                                         int64_t *v)
{
    if (!v) return KILN_ERR_INVALID;
    const char *s = kiln_checkpoint_meta_get(m, key);
    if (!s) return KILN_ERR_NOT_FOUND;
    const char *d = s + (*s == '-' || *s == '+');
    if (*d < '0' || *d > '9') return KILN_ERR_PARSE;
    for (const char *c = d; *c; c++)
        if (*c < '0' || *c > '9') return KILN_ERR_PARSE;
    errno = 0;
    long long r = strtoll(s, NULL, 10);
    if (errno == ERANGE) return KILN_ERR_PARSE;
    *v = (int64_t)r;
    return KILN_OK;
}

int kiln_checkpoint_meta_count(const kiln_checkpoint_meta *m) { return m ? m->n : 0; }

const char *kiln_checkpoint_meta_key(const kiln_checkpoint_meta *m, int i)
{
    return m && i >= 0 && i < m->n ? m->key[i] : NULL;
}

const char *kiln_checkpoint_meta_value(const kiln_checkpoint_meta *m, int i)
{
    return m && i >= 0 && i < m->n ? m->value[i] : NULL;
}

/* Replaces m's entries with the file's. */
static kiln_status meta_from_file(kiln_checkpoint_meta *m, const kiln_safetensors *st)
{
    kiln_checkpoint_meta_clear(m);
    for (int i = 0; i < kiln_safetensors_meta_count(st); i++) {
        kiln_status s = kiln_checkpoint_meta_set(m, kiln_safetensors_meta_key(st, i),
                                                 kiln_safetensors_meta_value(st, i));
        /* an empty key is legal in a file but not in a set: skip it */
        if (s && s != KILN_ERR_INVALID) return s;
    }
    return KILN_OK;
}

kiln_status kiln_checkpoint_read_meta(const char *path, kiln_checkpoint_meta **out, char **err)
{
    if (err) *err = NULL;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_checkpoint_read_meta: out is NULL");
    *out = NULL;
    kiln_safetensors *st;
    kiln_status s = kiln_safetensors_open(path, &st, err);
    if (s) return s;
    kiln_checkpoint_meta *m = kiln_checkpoint_meta_new();
    s = m ? meta_from_file(m, st) : KILN_ERR_NOMEM;
    kiln_safetensors_close(st);
    if (s) {
        kiln_checkpoint_meta_free(m);
        return kiln_set_err(err, s, "%s: out of memory", path);
    }
    *out = m;
    return KILN_OK;
}

/* ---- the program's tensors ---------------------------------------------- */

static const char *dtype_str(kiln_dtype t)
{
    const char *s = kiln_st_dtype_name(t);
    return s ? s : kiln_dtype_name(t);
}

/* "F32 [2, 3]" into buf. */
static const char *describe(char *buf, size_t len, const char *dtype, int rank,
                            const int64_t *shape)
{
    size_t o = (size_t)snprintf(buf, len, "%s [", dtype);
    for (int k = 0; k < rank && o < len; k++)
        o += (size_t)snprintf(buf + o, len - o, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

/* The program tensors a checkpoint holds: PARAM and the model's own state
 * (batchnorm's running statistics, "bn0.running_mean": PyTorch's buffers,
 * saved with the weights), and the optimizer's STATE with with_state. */
static bool wanted(const kiln_tensor_info *t, int with_state)
{
    return t->role == KILN_ROLE_PARAM || (t->role == KILN_ROLE_STATE && (with_state || t->model_state));
}

typedef struct ptensor {
    kiln_tensor_info info;
} ptensor;

static int ptensor_cmp(const void *a, const void *b)
{
    return strcmp(((const ptensor *)a)->info.name, ((const ptensor *)b)->info.name);
}

/* Every named tensor of p, sorted by name; *n its count. */
static kiln_status program_tensors(kiln_program *p, ptensor **out, int *n, char **err,
                                   const char *path)
{
    *out = NULL;
    *n = 0;
    int count = kiln_program_num_tensors(p);
    if (count < 0) count = 0;
    ptensor *t = malloc((size_t)(count ? count : 1) * sizeof *t);
    if (!t) return kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
    int k = 0;
    for (int i = 0; i < count; i++) {
        kiln_status s = kiln_program_tensor(p, i, &t[k].info);
        if (s) {
            free(t);
            return kiln_set_err(err, s, "%s: cannot list tensor %d of the program", path, i);
        }
        if (t[k].info.name) k++;
    }
    qsort(t, (size_t)k, sizeof *t, ptensor_cmp);
    *out = t;
    *n = k;
    return KILN_OK;
}

static const ptensor *ptensor_find(const ptensor *t, int n, const char *name, size_t len)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strncmp(t[mid].info.name, name, len);
        if (c == 0 && t[mid].info.name[len] != '\0') c = 1;
        if (c == 0) return &t[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* ---- saving ------------------------------------------------------------- */

kiln_status kiln_save_ex(kiln_program *p, const char *path, int with_state,
                         const kiln_checkpoint_meta *meta, char **err)
{
    if (err) *err = NULL;
    if (!p || !path)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_save: %s is NULL",
                            !p ? "the program" : "the path");
    ptensor *pt;
    int n;
    kiln_status s = program_tensors(p, &pt, &n, err, path);
    if (s) return s;
    kiln_st_tensor *t = malloc((size_t)(n ? n : 1) * sizeof *t);
    int nm = kiln_checkpoint_meta_count(meta);
    const char **kv = malloc((size_t)(2 * nm + 2) * sizeof *kv);
    if (!t || !kv) {
        s = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        kiln_tensor_info *info = &pt[i].info;
        if (!wanted(info, with_state)) continue;
        kiln_tensor_info d;
        void *data = kiln_program_data(p, info->name, &d);
        if (!data && info->bytes) {
            s = kiln_set_err(err, KILN_ERR_INTERNAL,
                             "%s: the program has no storage for tensor '%s'", path, info->name);
            goto done;
        }
        t[k].name = info->name;
        t[k].dtype = info->dtype;
        t[k].rank = info->rank;
        t[k].shape = info->shape;
        t[k].data = data;
        k++;
    }
    int m = 0;
    if (!kiln_checkpoint_meta_get(meta, "format")) {
        kv[0] = "format";
        kv[1] = "pt";
        m = 1;
    }
    for (int i = 0; i < nm; i++, m++) {
        kv[2 * m] = kiln_checkpoint_meta_key(meta, i);
        kv[2 * m + 1] = kiln_checkpoint_meta_value(meta, i);
    }
    s = kiln_safetensors_write(path, t, k, kv, m, NULL, err);
done:
    free(kv);
    free(t);
    free(pt);
    return s;
}

kiln_status kiln_save(kiln_program *p, const char *path, int with_state, char **err)
{
    return kiln_save_ex(p, path, with_state, NULL, err);
}

/* ---- loading ------------------------------------------------------------ */

/* A list of names for a message: "'a', 'b', ... and 3 more". */
typedef struct namelist {
    char buf[1024];
    size_t len;
    int n, shown;
} namelist;

static void namelist_add(namelist *l, const char *name)
{
    l->n++;
    if (l->shown >= 10 || l->len >= sizeof l->buf - 300) return;
    int w = snprintf(l->buf + l->len, sizeof l->buf - l->len, "%s'%.*s'", l->shown ? ", " : "",
                     200, name);
    if (w > 0) l->len += (size_t)w;
    if (l->len >= sizeof l->buf) l->len = sizeof l->buf - 1;
    l->shown++;
}

static const char *namelist_str(namelist *l)
{
    if (l->n > l->shown && l->len < sizeof l->buf)
        snprintf(l->buf + l->len, sizeof l->buf - l->len, " and %d more", l->n - l->shown);
    return l->buf;
}

/* Whether a file tensor the program does not load is expected there:
 * without with_state, a STATE tensor of p or "<PARAM>.<suffix>". */
static bool is_other_state(const ptensor *pt, int n, const char *name, int with_state)
{
    if (with_state) return false;
    const ptensor *q = ptensor_find(pt, n, name, strlen(name));
    if (q) return q->info.role == KILN_ROLE_STATE;
    for (const char *dot = strchr(name, '.'); dot; dot = strchr(dot + 1, '.')) {
        q = ptensor_find(pt, n, name, (size_t)(dot - name));
        if (q && q->info.role == KILN_ROLE_PARAM && dot[1]) return true;
    }
    return false;
}

kiln_status kiln_load_ex(kiln_program *p, const char *path, int with_state, int strict,
                         kiln_checkpoint_meta *meta_out, char **err)
{
    if (err) *err = NULL;
    if (!p || !path)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_load: %s is NULL",
                            !p ? "the program" : "the path");
    kiln_safetensors *st;
    kiln_status s = kiln_safetensors_open(path, &st, err);
    if (s) return s;
    ptensor *pt = NULL;
    int n = 0;
    int nf = kiln_safetensors_count(st);
    int *src = NULL;       /* for pt[i]: the file's index, or -1 */
    bool *used = NULL;     /* for the file's tensors */
    namelist *missing = NULL, *unexpected = NULL;
    if ((s = program_tensors(p, &pt, &n, err, path))) goto done;
    src = malloc((size_t)(n ? n : 1) * sizeof *src);
    used = calloc((size_t)(nf ? nf : 1), sizeof *used);
    missing = calloc(1, sizeof *missing);
    unexpected = calloc(1, sizeof *unexpected);
    if (!src || !used || !missing || !unexpected) {
        s = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    char a[256], b[256];
    for (int i = 0; i < n; i++) {
        const kiln_tensor_info *info = &pt[i].info;
        src[i] = -1;
        if (!wanted(info, with_state)) continue;
        int j = kiln_safetensors_find(st, info->name);
        if (j < 0) {
            namelist_add(missing, info->name);
            continue;
        }
        const kiln_st_info *f = kiln_safetensors_info(st, j);
        used[j] = true;
        bool same = f->dtype == info->dtype && f->rank == info->rank;
        for (int k = 0; same && k < f->rank; k++) same = f->shape[k] == info->shape[k];
        if (!f->supported) {
            s = kiln_set_err(
                err, KILN_ERR_UNSUPPORTED,
                "%s: tensor '%s' is %s in the file; kiln cannot load %s tensors yet (the "
                "program's is %s)",
                path, info->name, describe(a, sizeof a, f->dtype_str, f->rank, f->shape),
                f->dtype_str,
                describe(b, sizeof b, dtype_str(info->dtype), info->rank, info->shape));
            goto done;
        }
        if (!same) {
            s = kiln_set_err(
                err, KILN_ERR_SHAPE, "%s: tensor '%s' is %s in the file but %s in the program",
                path, info->name, describe(a, sizeof a, f->dtype_str, f->rank, f->shape),
                describe(b, sizeof b, dtype_str(info->dtype), info->rank, info->shape));
            goto done;
        }
        if (f->bytes != info->bytes) {
            s = kiln_set_err(err, KILN_ERR_INTERNAL,
                             "%s: tensor '%s' is %zu bytes in the file but %zu in the program",
                             path, info->name, f->bytes, info->bytes);
            goto done;
        }
        src[i] = j;
    }
    if (strict) {
        for (int j = 0; j < nf; j++) {
            const char *name = kiln_safetensors_info(st, j)->name;
            if (!used[j] && !is_other_state(pt, n, name, with_state))
                namelist_add(unexpected, name);
        }
        if (missing->n || unexpected->n) {
            char m1[1200] = "", m2[1200] = "";
            if (missing->n)
                snprintf(m1, sizeof m1, "%d tensor%s of the program %s missing from the file: %s",
                         missing->n, missing->n == 1 ? "" : "s", missing->n == 1 ? "is" : "are",
                         namelist_str(missing));
            if (unexpected->n)
                snprintf(m2, sizeof m2, "%d tensor%s in the file %s not in the program: %s",
                         unexpected->n, unexpected->n == 1 ? "" : "s",
                         unexpected->n == 1 ? "is" : "are", namelist_str(unexpected));
            s = kiln_set_err(err, KILN_ERR_NOT_FOUND, "%s: %s%s%s", path, m1,
                             missing->n && unexpected->n ? "; " : "", m2);
            goto done;
        }
    }
    /* every check passed: write the tensors */
    for (int i = 0; i < n; i++) {
        if (src[i] < 0) continue;
        kiln_tensor_info d;
        void *data = kiln_program_data(p, pt[i].info.name, &d);
        if (!data && pt[i].info.bytes) {
            s = kiln_set_err(err, KILN_ERR_INTERNAL,
                             "%s: the program has no storage for tensor '%s'", path,
                             pt[i].info.name);
            goto done;
        }
        if ((s = kiln_safetensors_read(st, src[i], data, pt[i].info.bytes, err))) goto done;
    }
    if (meta_out && (s = meta_from_file(meta_out, st)))
        s = kiln_set_err(err, s, "%s: out of memory", path);
done:
    free(src);
    free(used);
    free(missing);
    free(unexpected);
    free(pt);
    kiln_safetensors_close(st);
    return s;
}

kiln_status kiln_load(kiln_program *p, const char *path, int with_state, int strict, char **err)
{
    return kiln_load_ex(p, path, with_state, strict, NULL, err);
}

/* ---- loading by matching names (transfer learning) ------------------------- */

void kiln_load_report_free(kiln_load_report *r)
{
    if (!r) return;
    char **lists[5] = {r->loaded, r->skipped, r->refused, r->missing, r->refused_why};
    int counts[5] = {r->nloaded, r->nskipped, r->nrefused, r->nmissing, r->nrefused};
    for (int k = 0; k < 5; k++) {
        for (int i = 0; lists[k] && i < counts[k]; i++) free(lists[k][i]);
        free(lists[k]);
    }
    memset(r, 0, sizeof *r);
}

/* Appends a copy of s to list (room for every tensor was made up front). */
static bool report_add(char **list, int *n, const char *s)
{
    char *c = strdup(s);
    if (!c) return false;
    list[(*n)++] = c;
    return true;
}

kiln_status kiln_load_matching(kiln_program *p, const char *path, kiln_load_report *report,
                               char **err)
{
    if (err) *err = NULL;
    kiln_load_report local;
    kiln_load_report *r = report ? report : &local;
    memset(r, 0, sizeof *r);
    if (!p || !path)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_load_matching: %s is NULL",
                            !p ? "the program" : "the path");
    kiln_safetensors *st;
    kiln_status s = kiln_safetensors_open(path, &st, err);
    if (s) return s;
    ptensor *pt = NULL;
    int n = 0, nf = kiln_safetensors_count(st);
    int *dst = NULL; /* per file tensor: index into pt, or -1 */
    bool *filled = NULL;
    if ((s = program_tensors(p, &pt, &n, err, path))) goto done;
    size_t nfile = (size_t)(nf ? nf : 1), nprog = (size_t)(n ? n : 1);
    dst = malloc(nfile * sizeof *dst);
    filled = calloc(nprog, sizeof *filled);
    r->loaded = calloc(nfile, sizeof(char *));
    r->skipped = calloc(nfile, sizeof(char *));
    r->refused = calloc(nfile, sizeof(char *));
    r->refused_why = calloc(nfile, sizeof(char *));
    r->missing = calloc(nprog, sizeof(char *));
    if (!dst || !filled || !r->loaded || !r->skipped || !r->refused || !r->refused_why ||
        !r->missing) {
        s = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    char a[256], b[256], why[800];
    bool ok = true;
    for (int j = 0; j < nf && ok; j++) {
        const kiln_st_info *f = kiln_safetensors_info(st, j);
        const ptensor *q = ptensor_find(pt, n, f->name, strlen(f->name));
        dst[j] = -1;
        if (!q || !wanted(&q->info, 0)) {
            ok = report_add(r->skipped, &r->nskipped, f->name);
            continue;
        }
        const kiln_tensor_info *info = &q->info;
        bool same = f->supported && f->dtype == info->dtype && f->rank == info->rank &&
                    f->bytes == info->bytes;
        for (int k = 0; same && k < f->rank; k++) same = f->shape[k] == info->shape[k];
        if (!same) {
            snprintf(why, sizeof why, "'%.200s' is %s in the file but %s in the program%s",
                     f->name, describe(a, sizeof a, f->dtype_str, f->rank, f->shape),
                     describe(b, sizeof b, dtype_str(info->dtype), info->rank, info->shape),
                     f->supported ? "" : " (kiln cannot load that dtype)");
            ok = report_add(r->refused, &r->nrefused, f->name) &&
                 report_add(r->refused_why, &(int){r->nrefused - 1}, why);
            continue;
        }
        dst[j] = (int)(q - pt);
        filled[dst[j]] = true;
        ok = report_add(r->loaded, &r->nloaded, f->name);
    }
    for (int i = 0; i < n && ok; i++)
        if (wanted(&pt[i].info, 0) && !filled[i])
            ok = report_add(r->missing, &r->nmissing, pt[i].info.name);
    if (!ok) {
        s = kiln_set_err(err, KILN_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    if (r->nloaded == 0) {
        s = kiln_set_err(err, KILN_ERR_NOT_FOUND, "%s: no tensor of the file matches a parameter "
                         "or model state of the program by name and shape (%d tensor%s in the "
                         "file: %d with names the program lacks, %d with other shapes or dtypes%s%s)",
                         path, nf, nf == 1 ? "" : "s", r->nskipped, r->nrefused,
                         r->nrefused ? "; first: " : "", r->nrefused ? r->refused_why[0] : "");
        goto done;
    }
    for (int j = 0; j < nf; j++) {
        if (dst[j] < 0) continue;
        const kiln_tensor_info *info = &pt[dst[j]].info;
        void *data = kiln_program_data(p, info->name, NULL);
        if (!data && info->bytes) {
            s = kiln_set_err(err, KILN_ERR_INTERNAL,
                             "%s: the program has no storage for tensor '%s'", path, info->name);
            goto done;
        }
        if ((s = kiln_safetensors_read(st, j, data, info->bytes, err))) goto done;
    }
done:
    free(dst);
    free(filled);
    free(pt);
    kiln_safetensors_close(st);
    if (!report) kiln_load_report_free(&local);
    return s;
}
