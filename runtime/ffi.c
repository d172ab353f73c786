/* runtime/ffi.c — calling compiled functions through libffi from their
 * signatures (runtime/kiln_ffi.h).
 *
 * Expects: signatures whose kinds match the functions' C types (the
 * emitters' descriptions, codegen/codegen.h "kernel signatures": a kernel
 * returns int and takes pointers, then `const kiln_rt *`; an entry returns
 * int and takes P, S, A and the context).
 * Guarantees: one prepared libffi call interface per signature; arguments
 * checked against the signature before any call (count, kind, dtype, size,
 * NULL) with a message naming the function and the parameter; nothing is
 * called on a mismatch. A function table owns its signatures, parameter
 * names and descriptions; the plan it was built from must outlive it.
 */
#include "runtime/kiln_ffi.h"

#include "ir/ops.h"
#include "ir/util.h"

#include <ffi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- signatures and calls ---- */

typedef struct prep {
    ffi_cif cif;
    ffi_type *types[];
} prep;

static ffi_type *ffi_type_of(kiln_arg_kind k)
{
    switch (k) {
    case KILN_ARG_VOID:
        return &ffi_type_void;
    case KILN_ARG_BUFFER:
    case KILN_ARG_CTX:
        return &ffi_type_pointer;
    case KILN_ARG_I32:
        return &ffi_type_sint32;
    case KILN_ARG_I64:
        return &ffi_type_sint64;
    case KILN_ARG_F32:
        return &ffi_type_float;
    case KILN_ARG_F64:
        return &ffi_type_double;
    }
    return NULL;
}

kiln_status kiln_ffi_prep(kiln_ffi_sig *s, char *err, size_t errlen)
{
    if (!s) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "kiln_ffi_prep: no signature");
    if (s->prep) return KILN_OK;
    const char *fname = s->name ? s->name : "(function)";
    if (s->nparams < 0 || (s->nparams > 0 && !s->params))
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: a signature of %d parameters "
                               "without their list", fname, s->nparams);
    ffi_type *rtype = ffi_type_of(s->ret);
    if (!rtype || s->ret == KILN_ARG_CTX)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: return kind %d is not one "
                               "libffi can return", fname, (int)s->ret);
    prep *p = malloc(sizeof *p + ((size_t)s->nparams + 1) * sizeof(ffi_type *));
    if (!p) return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory", fname);
    for (int i = 0; i < s->nparams; i++) {
        p->types[i] = ffi_type_of(s->params[i].kind);
        if (!p->types[i] || s->params[i].kind == KILN_ARG_VOID) {
            free(p);
            return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: parameter %d has kind %d, "
                                   "which is not a value", fname, i + 1, (int)s->params[i].kind);
        }
    }
    if (ffi_prep_cif(&p->cif, FFI_DEFAULT_ABI, (unsigned)s->nparams, rtype, p->types) != FFI_OK) {
        free(p);
        return kiln_set_errbuf(err, errlen, KILN_ERR_INTERNAL, "%s: libffi cannot prepare a call "
                               "of %d parameters", fname, s->nparams);
    }
    s->prep = p;
    return KILN_OK;
}

void kiln_ffi_unprep(kiln_ffi_sig *s)
{
    if (!s) return;
    free(s->prep);
    s->prep = NULL;
}

static const char *dname(kiln_dtype t)
{
    return (unsigned)t < KILN_DTYPE_COUNT ? kiln_dtype_name(t) : "?";
}

/* "a buffer of 401408 f32 elements", "an int64", ... */
static void describe_param(const kiln_param_info *p, char *buf, size_t len)
{
    switch (p->kind) {
    case KILN_ARG_BUFFER:
        snprintf(buf, len, "a buffer of %lld %s element%s", (long long)p->count, dname(p->dtype),
                 p->count == 1 ? "" : "s");
        break;
    case KILN_ARG_I32:
        snprintf(buf, len, "an int32");
        break;
    case KILN_ARG_I64:
        snprintf(buf, len, "an int64");
        break;
    case KILN_ARG_F32:
        snprintf(buf, len, "a float (f32)");
        break;
    case KILN_ARG_F64:
        snprintf(buf, len, "a double (f64)");
        break;
    case KILN_ARG_CTX:
        snprintf(buf, len, "the runtime context (kiln_arg_ctx())");
        break;
    default:
        snprintf(buf, len, "of unknown kind %d", (int)p->kind);
        break;
    }
}

static void describe_arg(const kiln_arg *a, char *buf, size_t len)
{
    if (a->kind == KILN_ARG_BUFFER && !a->v.ptr) {
        snprintf(buf, len, "a NULL buffer");
        return;
    }
    kiln_param_info p = {.kind = a->kind, .dtype = a->dtype, .count = a->count};
    describe_param(&p, buf, len);
}

static const char *pname(const kiln_param_info *p)
{
    return p->name ? p->name : "";
}

kiln_status kiln_ffi_check(const kiln_ffi_sig *s, const kiln_arg *args, int nargs, char *err,
                           size_t errlen)
{
    const char *fn = s && s->name ? s->name : "(function)";
    if (!s) return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "no signature");
    if (nargs < 0 || (nargs > 0 && !args))
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: %d arguments but no list", fn,
                               nargs);
    if (nargs != s->nparams) {
        char list[512] = "";
        size_t o = 0;
        for (int i = 0; i < s->nparams && o < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "",
                                  s->params[i].name ? s->params[i].name : "?");
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID,
                               "%s takes %d argument%s (%s); %d given", fn, s->nparams,
                               s->nparams == 1 ? "" : "s", list, nargs);
    }
    for (int i = 0; i < nargs; i++) {
        const kiln_param_info *p = &s->params[i];
        const kiln_arg *a = &args[i];
        bool bad = a->kind != p->kind;
        if (!bad && p->kind == KILN_ARG_BUFFER)
            bad = a->dtype != p->dtype || a->count < p->count || (!a->v.ptr && p->count > 0);
        if (!bad) continue;
        char want[128], got[128];
        describe_param(p, want, sizeof want);
        describe_arg(a, got, sizeof got);
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID,
                               "%s: parameter %d '%s' is %s; argument %d is %s", fn, i + 1,
                               pname(p), want, i + 1, got);
    }
    return KILN_OK;
}

/* Where an argument's value is, as ffi_call wants it. */
static void *value_ptr(const kiln_arg *a)
{
    switch (a->kind) {
    case KILN_ARG_I32:
        return (void *)&a->v.i32;
    case KILN_ARG_I64:
        return (void *)&a->v.i64;
    case KILN_ARG_F32:
        return (void *)&a->v.f32;
    case KILN_ARG_F64:
        return (void *)&a->v.f64;
    default:
        return (void *)&a->v.ptr;
    }
}

typedef union retval {
    ffi_arg a;
    ffi_sarg sa;
    int64_t i64;
    float f;
    double d;
    void *p;
    char pad[16];
} retval;

void kiln_ffi_call_values(void (*fn)(void), const kiln_ffi_sig *s, void **values, void *ret)
{
    ffi_call(&((prep *)s->prep)->cif, FFI_FN(fn), ret, values);
}

int32_t kiln_ffi_ret_i32(const void *ret)
{
    ffi_sarg v;
    memcpy(&v, ret, sizeof v);
    return (int32_t)v;
}

/* Calls fn with args (checked) and converts the return; false when out of
 * memory (nothing called). */
static bool call_args(void (*fn)(void), const kiln_ffi_sig *s, const kiln_arg *args, int nargs,
                      kiln_arg *ret)
{
    void *small[32];
    void **values = nargs <= 32 ? small : malloc((size_t)nargs * sizeof *values);
    retval rv;
    memset(&rv, 0, sizeof rv);
    if (!values) return false;
    for (int i = 0; i < nargs; i++)
        values[i] = value_ptr(&args[i]);
    kiln_ffi_call_values(fn, s, values, &rv);
    if (values != small) free(values);
    if (!ret) return true;
    memset(ret, 0, sizeof *ret);
    ret->kind = s->ret;
    switch (s->ret) {
    case KILN_ARG_I32:
        ret->dtype = KILN_I32;
        ret->v.i32 = (int32_t)rv.sa;
        break;
    case KILN_ARG_I64:
        ret->dtype = KILN_I64;
        ret->v.i64 = rv.i64;
        break;
    case KILN_ARG_F32:
        ret->dtype = KILN_F32;
        ret->v.f32 = rv.f;
        break;
    case KILN_ARG_F64:
        ret->dtype = KILN_F64;
        ret->v.f64 = rv.d;
        break;
    case KILN_ARG_BUFFER:
        ret->dtype = KILN_U8;
        ret->v.ptr = rv.p;
        break;
    default:
        break;
    }
    return true;
}

kiln_status kiln_ffi_call(void (*fn)(void), kiln_ffi_sig *s, const kiln_arg *args, int nargs,
                          kiln_arg *ret, char *err, size_t errlen)
{
    if (ret) memset(ret, 0, sizeof *ret);
    if (!fn)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: no function address",
                               s && s->name ? s->name : "kiln_ffi_call");
    kiln_status st = kiln_ffi_check(s, args, nargs, err, errlen);
    if (!st) st = kiln_ffi_prep(s, err, errlen);
    if (st) return st;
    if (!call_args(fn, s, args, nargs, ret))
        return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory",
                               s->name ? s->name : "kiln_ffi_call");
    return KILN_OK;
}

/* ---- a program's functions ---- */

typedef struct ffunc {
    kiln_ffi_sig sig;
    char name[160];
    void (*fn)(void);
    bool is_entry;
    int entry;      /* the plan entry (kernels: of the first use) */
    int32_t kernel; /* kernels: the index in that entry */
    int32_t *bufs;  /* kernels: per pointer parameter, the kernel's buffer */
    char (*pnames)[96];
    double flops, bytes;
} ffunc;

struct kiln_ftable {
    const kiln_plan *plan;
    ffunc *f;
    int n;
};

void kiln_ftable_free(kiln_ftable *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        kiln_ffi_unprep(&t->f[i].sig);
        free(t->f[i].sig.params);
        free(t->f[i].bufs);
        free(t->f[i].pnames);
    }
    free(t->f);
    free(t);
}

int kiln_ftable_count(const kiln_ftable *t)
{
    return t ? t->n : 0;
}

/* Room for n parameters in f. */
static bool alloc_params(ffunc *f, int n)
{
    f->sig.nparams = n;
    f->sig.params = calloc((size_t)n + 1, sizeof *f->sig.params);
    f->pnames = calloc((size_t)n + 1, sizeof *f->pnames);
    f->bufs = calloc((size_t)n + 1, sizeof *f->bufs);
    return f->sig.params && f->pnames && f->bufs;
}

static void set_entry(ffunc *f, const kiln_plan *plan, int e)
{
    static const char *const names[3] = {"P", "S", "A"};
    size_t sizes[3] = {plan->p_bytes, plan->s_bytes, plan->a_bytes};
    for (int i = 0; i < 4; i++) {
        kiln_param_info *p = &f->sig.params[i];
        f->bufs[i] = -1;
        snprintf(f->pnames[i], sizeof f->pnames[i], "%s", i < 3 ? names[i] : "rt");
        p->name = f->pnames[i];
        if (i == 3) {
            p->kind = KILN_ARG_CTX;
            continue;
        }
        p->kind = KILN_ARG_BUFFER;
        p->dtype = KILN_U8;
        p->count = (int64_t)sizes[i];
        p->rank = 1;
        p->shape[0] = p->count;
        p->read = p->written = 1;
        p->noalias = 1;
    }
    f->is_entry = true;
    f->entry = e;
    f->kernel = -1;
}

/* The name a kernel's parameter goes by: the tensor's, else "%N op" (an
 * assign's is its destination's). */
static void param_name(const kiln_graph *g, int32_t node, char *buf, size_t len)
{
    if (node < 0 || node >= g->nnodes) {
        snprintf(buf, len, "?");
        return;
    }
    const kiln_node *n = &g->nodes[node];
    if (n->op == KILN_OP_ASSIGN && n->ninputs > 0 && g->nodes[n->inputs[0]].name) {
        snprintf(buf, len, "%s", g->nodes[n->inputs[0]].name);
        return;
    }
    if (n->name) snprintf(buf, len, "%s", n->name);
    else
        snprintf(buf, len, "%%%d %s", (int)node,
                 n->op < KILN_OP_COUNT ? kiln_ops[n->op].name : "?");
}

static double kernel_flops(const kiln_graph *g, const kiln_fuse_plan *fp, int32_t ki)
{
    double total = 0.0;
    if (!fp) return 0.0;
    for (int32_t i = 0; i < g->nnodes && i < fp->nnodes; i++) {
        if (fp->fate[i] != KILN_FATE_GROUP || fp->group[i] < 0 ||
            fp->groups[fp->group[i]].kernel != ki)
            continue;
        const kiln_node *n = &g->nodes[i];
        double fl = 0.0, by = 0.0;
        kiln_ops[n->op].cost(g, n, &fl, &by);
        total += fl;
    }
    return total;
}

static bool set_kernel(ffunc *f, const kiln_plan *plan, kiln_fuse_plan *const *fusion,
                       const kiln_kfunc *kf)
{
    const kiln_plan_entry *e = &plan->entries[kf->entry];
    const kiln_kernel *k = e->kernels[kf->kernel];
    int n = kf->nbufs + (kf->rt ? 1 : 0);
    if (!alloc_params(f, n)) return false;
    f->entry = kf->entry;
    f->kernel = kf->kernel;
    for (int j = 0; j < kf->nbufs; j++) {
        const kiln_kbuf *kb = &k->bufs[kf->bufs[j]];
        kiln_param_info *p = &f->sig.params[j];
        f->bufs[j] = kf->bufs[j];
        param_name(e->g, kb->node, f->pnames[j], sizeof f->pnames[j]);
        p->name = f->pnames[j];
        p->kind = KILN_ARG_BUFFER;
        p->dtype = (kiln_dtype)kb->dtype;
        p->rank = kb->rank;
        memcpy(p->shape, kb->shape, sizeof p->shape);
        p->count = kiln_shape_numel(kb->rank, kb->shape);
        p->read = (kf->rw[j] & 1) != 0;
        p->written = (kf->rw[j] & 2) != 0;
        p->noalias = (kf->rw[j] & 4) != 0;
        f->bytes += (double)p->count * (double)kiln_dtype_size(p->dtype) * (p->read + p->written);
    }
    if (kf->rt) {
        f->bufs[n - 1] = -1;
        snprintf(f->pnames[n - 1], sizeof f->pnames[n - 1], "rt");
        f->sig.params[n - 1].name = f->pnames[n - 1];
        f->sig.params[n - 1].kind = KILN_ARG_CTX;
    }
    f->flops = kernel_flops(e->g, fusion ? fusion[kf->entry] : NULL, kf->kernel);
    return true;
}

kiln_status kiln_ftable_new(const kiln_plan *plan, kiln_fuse_plan *const *fusion,
                            const kiln_kfuncs *sigs, void (*const *eaddr)(void),
                            void (*const *kaddr)(void), kiln_ftable **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    int nk = sigs ? sigs->n : 0;
    kiln_ftable *t = calloc(1, sizeof *t);
    if (t) t->f = calloc((size_t)(plan->nentries + nk) + 1, sizeof *t->f);
    if (!t || !t->f) {
        free(t);
        return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "out of memory");
    }
    t->plan = plan;
    kiln_status st = KILN_OK;
    for (int e = 0; e < plan->nentries && !st; e++) {
        ffunc *f = &t->f[t->n++];
        snprintf(f->name, sizeof f->name, "%s", plan->entries[e].name);
        f->fn = eaddr[e];
        if (!alloc_params(f, 4)) st = kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "out of memory");
        else set_entry(f, plan, e);
    }
    for (int i = 0; i < nk && !st; i++) {
        const kiln_kfunc *kf = &sigs->f[i];
        ffunc *f = &t->f[t->n++];
        snprintf(f->name, sizeof f->name, "%s", kf->name);
        if (kf->entry < 0 || kf->entry >= plan->nentries || kf->kernel < 0 ||
            kf->kernel >= plan->entries[kf->entry].nkernels || kf->slot < 0 ||
            kf->slot >= sigs->nslots || !kaddr[kf->slot]) {
            st = kiln_set_errbuf(err, errlen, KILN_ERR_INTERNAL,
                                 "kernel %s: its signature does not fit the plan or the loaded "
                                 "table", kf->name);
            break;
        }
        f->fn = kaddr[kf->slot];
        if (!set_kernel(f, plan, fusion, kf))
            st = kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < t->n && !st; i++) {
        ffunc *f = &t->f[i];
        f->sig.name = f->name;
        f->sig.ret = KILN_ARG_I32;
        st = kiln_ffi_prep(&f->sig, err, errlen);
    }
    if (st) {
        kiln_ftable_free(t);
        return st;
    }
    *out = t;
    return KILN_OK;
}

int kiln_ftable_info(const kiln_ftable *t, int i, kiln_function_info *info)
{
    if (!t || i < 0 || i >= t->n) return -1;
    const ffunc *f = &t->f[i];
    memset(info, 0, sizeof *info);
    info->name = f->name;
    info->is_entry = f->is_entry;
    info->ret = f->sig.ret;
    info->nparams = f->sig.nparams;
    info->params = f->sig.params;
    if (!f->is_entry) {
        const kiln_plan_entry *e = &t->plan->entries[f->entry];
        const kiln_kernel *k = e->kernels[f->kernel];
        info->entry = e->name;
        info->index = f->kernel;
        info->op = k->node >= 0 && k->node < e->g->nnodes && e->g->nodes[k->node].op < KILN_OP_COUNT
                       ? kiln_ops[e->g->nodes[k->node].op].name
                       : "?";
        info->desc = k->comment;
        info->flops = f->flops;
        info->bytes = f->bytes;
    } else {
        info->entry = f->name;
        info->index = -1;
    }
    return 0;
}

int kiln_ftable_find(const kiln_ftable *t, const char *name, char *err, size_t errlen)
{
    if (t && name) {
        for (int i = 0; i < t->n; i++)
            if (!strcmp(t->f[i].name, name)) return i;
        /* entries also answer to their symbols */
        if (!strncmp(name, "kiln_", 5))
            for (int i = 0; i < t->n; i++)
                if (t->f[i].is_entry && !strcmp(t->f[i].name, name + 5)) return i;
    }
    char have[512] = "";
    size_t o = 0;
    for (int i = 0; t && i < t->n && o < sizeof have; i++) {
        if (o + strlen(t->f[i].name) + 8 >= sizeof have) {
            snprintf(have + o, sizeof have - o, ", ...");
            break;
        }
        o += (size_t)snprintf(have + o, sizeof have - o, "%s%s", i ? ", " : "", t->f[i].name);
    }
    kiln_set_errbuf(err, errlen, KILN_ERR_NOT_FOUND, "no compiled function named '%s' (%s%s)",
                    name ? name : "(null)",
                    have[0] ? "this program has: " : "this program has none",
                    have);
    return -1;
}

kiln_status kiln_ftable_call(kiln_ftable *t, int i, const kiln_arg *args, int nargs,
                             const kiln_rt *rt, int *result, char *err, size_t errlen)
{
    if (result) *result = 0;
    if (!t || i < 0 || i >= t->n)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "no function %d", i);
    ffunc *f = &t->f[i];
    kiln_status st = kiln_ffi_check(&f->sig, args, nargs, err, errlen);
    if (st) return st;
    kiln_arg small[32];
    kiln_arg *a = nargs <= 32 ? small : malloc((size_t)nargs * sizeof *a);
    if (!a) return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "out of memory");
    if (nargs) memcpy(a, args, (size_t)nargs * sizeof *a);
    for (int j = 0; j < nargs; j++)
        if (a[j].kind == KILN_ARG_CTX) a[j].v.ptr = (void *)rt;
    kiln_arg ret;
    bool called = call_args(f->fn, &f->sig, a, nargs, &ret);
    if (a != small) free(a);
    if (!called) return kiln_set_errbuf(err, errlen, KILN_ERR_NOMEM, "%s: out of memory", f->name);
    int rc = ret.v.i32;
    if (result) *result = rc;
    if (!rc) return KILN_OK;
    char msg[1024];
    const kiln_plan_entry *e = &t->plan->entries[f->entry];
    if (f->is_entry)
        kiln_plan_error_message(e, rc, msg, sizeof msg);
    else if (rc > 0 && rc < 8)
        kiln_plan_error_message(e, f->kernel * 8 + rc, msg, sizeof msg);
    else
        snprintf(msg, sizeof msg, "returned %d", rc);
    return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "%s: %s", f->name, msg);
}

kiln_status kiln_ftable_args(const kiln_ftable *t, int i, char *const *mem, kiln_arg *args,
                             int max, int *nargs, char *err, size_t errlen)
{
    if (nargs) *nargs = 0;
    if (!t || i < 0 || i >= t->n)
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID, "no function %d", i);
    const ffunc *f = &t->f[i];
    if (max < f->sig.nparams || (f->sig.nparams && !args))
        return kiln_set_errbuf(err, errlen, KILN_ERR_INVALID,
                               "%s takes %d arguments; room for %d given", f->name,
                               f->sig.nparams, max);
    const kiln_plan_entry *e = &t->plan->entries[f->entry];
    for (int j = 0; j < f->sig.nparams; j++) {
        const kiln_param_info *p = &f->sig.params[j];
        if (p->kind == KILN_ARG_CTX) {
            args[j] = kiln_arg_ctx();
            continue;
        }
        char *base;
        if (f->is_entry) {
            base = mem[j == 0 ? KILN_SPACE_P : j == 1 ? KILN_SPACE_S : KILN_SPACE_A];
        } else {
            int32_t node = e->kernels[f->kernel]->bufs[f->bufs[j]].node;
            kiln_place pl = node >= 0 && node < e->g->nnodes ? e->place[node]
                                                              : (kiln_place){KILN_SPACE_NONE, 0};
            if (pl.space != KILN_SPACE_P && pl.space != KILN_SPACE_S && pl.space != KILN_SPACE_A)
                return kiln_set_errbuf(err, errlen, KILN_ERR_INTERNAL,
                                       "%s: parameter %d '%s' has no place in the program's "
                                       "memories", f->name, j + 1, pname(p));
            base = mem[pl.space] + pl.offset;
        }
        args[j] = kiln_arg_buffer(p->dtype, base, p->count);
    }
    if (nargs) *nargs = f->sig.nparams;
    return KILN_OK;
}

int kiln_ftable_run_entry(const kiln_ftable *t, int e, char *P, char *S, char *A,
                          const kiln_rt *rt)
{
    /* entries come first in the table, in plan order */
    const ffunc *f = &t->f[e];
    void *values[4] = {&P, &S, &A, &rt};
    retval rv;
    kiln_ffi_call_values(f->fn, &f->sig, values, &rv);
    return kiln_ffi_ret_i32(&rv);
}
