/* codegen/emit_llvm_entry.c — the LLVM emitter's module: one internal
 * function per kernel, one external `i32 @kiln_<entry>(ptr P, ptr S, ptr A,
 * ptr rt)` per entry, and the target parameters the GEMM reads; or one part
 * of that module (kl_split: the kernels it owns, external as `kk<f>.<name>`,
 * and in part 0 the entries and declarations of the others' kernels), so
 * that codegen/llvm_jit.c compiles the parts on threads of their own.
 *
 * Expects: a plan as codegen/codegen.h describes it (entries with graphs,
 * places and kernels).
 * Guarantees:
 *   - a kernel function takes its parameter buffers (every buffer but
 *     consts and scratch arrays, in buffer order; `noalias` where the C
 *     emitter writes `restrict`: no storage shared with a buffer one of
 *     them writes) and the kiln_rt pointer, and returns 0 or a check code;
 *   - kernels that are the same in two entries (same IR, same constants,
 *     same aliasing) are built once, as the C emitter writes them once;
 *   - an entry calls its kernels in order on their places (P/S/A + offset)
 *     and returns (kernel index) * 8 + (check code) from the first kernel
 *     whose check fails, else 0; P, S and A are `noalias` (C's restrict);
 *   - asked for signatures (sigs not NULL), the module also defines
 *     `@kiln_kernels`, a constant array of the kernel functions' addresses,
 *     and *sigs describes them (codegen.h, "kernel signatures") under the C
 *     emitter's names: a kernel's own name, or <entry>_<name> when another
 *     function has it; a kernel built once for two names answers to both;
 *   - a buffer without a place, an unsupported dtype or a malformed kernel
 *     fails the build with a message naming the entry and kernel; the
 *     module is verified (LLVMVerifyModule) before it is handed out.
 */
#include "codegen/emit_llvm_internal.h"

#if KILN_HAVE_LLVM

#include "ir/ops.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>


/* ---- kernels built once ---- */

typedef struct kfunc {
    const kiln_kernel *k;
    const kiln_plan_entry *e;
    bufinfo *bi;
    LLVMValueRef fn;
    LLVMTypeRef fty;
} kfunc;

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

static double const_value(const kiln_plan_entry *e, int32_t node)
{
    return kiln_attr_get_float(&e->g->nodes[node], "value");
}

/* Whether two kernels build the same function. */
static bool same_kernel(const kfunc *f, const kiln_kernel *k, const kiln_plan_entry *e,
                        const bufinfo *bi)
{
    const kiln_kernel *a = f->k;
    if (a->nbufs != k->nbufs || a->nexprs != k->nexprs || a->nstmts != k->nstmts ||
        a->body != k->body || a->nvars != k->nvars || a->nlocals != k->nlocals ||
        a->ngemms != k->ngemms || a->nchecks != k->nchecks)
        return false;
    for (int32_t i = 0; i < k->nbufs; i++) {
        const kiln_kbuf *x = &a->bufs[i], *y = &k->bufs[i];
        const bufinfo *p = &f->bi[i], *q = &bi[i];
        if ((x->node < 0) != (y->node < 0) || x->dtype != y->dtype || x->written != y->written ||
            x->rank != y->rank ||
            memcmp(x->shape, y->shape, (size_t)x->rank * sizeof x->shape[0]) ||
            p->param != q->param || p->read != q->read || p->written != q->written ||
            p->restrict_ok != q->restrict_ok || p->partial_overlap != q->partial_overlap ||
            p->scratch != q->scratch)
            return false;
        if (x->node >= 0 && !p->param && !p->scratch) { /* consts: their values */
            if (f->e->g->nodes[x->node].dtype != e->g->nodes[y->node].dtype ||
                !same_double(const_value(f->e, x->node), const_value(e, y->node)))
                return false;
        }
    }
    for (int32_t i = 0; i < k->nexprs; i++) {
        const kiln_kexpr *x = &a->exprs[i], *y = &k->exprs[i];
        if (x->op != y->op || x->dtype != y->dtype || x->a != y->a || x->b != y->b ||
            x->c != y->c || !same_double(x->f, y->f) || x->i != y->i)
            return false;
    }
    for (int32_t i = 0; i < k->nstmts; i++) {
        const kiln_kstmt *x = &a->stmts[i], *y = &k->stmts[i];
        if (x->kind != y->kind || x->parallel != y->parallel || x->vector != y->vector ||
            x->unroll != y->unroll || x->var != y->var || x->extent != y->extent ||
            x->buf != y->buf || x->index != y->index || x->value != y->value ||
            x->body != y->body || x->next != y->next)
            return false;
    }
    if (k->nlocals && memcmp(a->local_dtype, k->local_dtype, (size_t)k->nlocals)) return false;
    for (int32_t i = 0; i < k->ngemms; i++) {
        const kiln_kgemm *x = &a->gemms[i], *y = &k->gemms[i];
        if (x->a != y->a || x->b != y->b || x->c != y->c || x->M != y->M || x->N != y->N ||
            x->K != y->K || x->ta != y->ta || x->tb != y->tb || x->lda != y->lda ||
            x->ldb != y->ldb || x->ldc != y->ldc || x->var_i != y->var_i || x->var_j != y->var_j)
            return false;
    }
    return true;
}

/* A C identifier from s. */
static void ident_from(char *out, size_t len, const char *s)
{
    snprintf(out, len, "%s%s", (s && *s && !isdigit((unsigned char)*s)) ? "" : "k_", s ? s : "");
    for (char *p = out; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) *p = '_';
}

/* A kernel function's type: i32 (ptr per parameter buffer..., ptr rt). */
static LLVMTypeRef kernel_fty(kl_mod *m, const kiln_kernel *k, const bufinfo *bi, int *np_out)
{
    int np = 0;
    for (int32_t i = 0; i < k->nbufs; i++)
        np += bi[i].param;
    *np_out = np;
    LLVMTypeRef *pt = malloc(((size_t)np + 1) * sizeof *pt);
    if (!pt) {
        kl_fail(m, "out of memory");
        return NULL;
    }
    for (int i = 0; i <= np; i++)
        pt[i] = m->t_ptr;
    LLVMTypeRef fty = LLVMFunctionType(m->t_i32, pt, (unsigned)np + 1, 0);
    free(pt);
    return fty;
}

/* The name of kernel function f of a split module (kl_split). */
static void split_name(char *out, size_t len, int f, const kiln_kernel *k)
{
    char base[72];
    ident_from(base, sizeof base, k->name);
    snprintf(out, len, "kk%d.%s", f, base);
}

/* Kernel function f of a split module that another part defines. */
static LLVMValueRef declare_kernel(kl_mod *m, int f, const kiln_kernel *k, const bufinfo *bi,
                                   LLVMTypeRef *fty_out)
{
    int np;
    LLVMTypeRef fty = kernel_fty(m, k, bi, &np);
    *fty_out = fty;
    if (!fty) return NULL;
    char name[96];
    split_name(name, sizeof name, f, k);
    LLVMValueRef fn = LLVMAddFunction(m->m, name, fty);
    kl_attr(m, fn, LLVMAttributeFunctionIndex, "nounwind");
    return fn;
}

/* Instructions in the functions after `after` (NULL: all of them). */
static int64_t instructions_after(LLVMModuleRef mod, LLVMValueRef after)
{
    int64_t n = 0;
    for (LLVMValueRef fn = after ? LLVMGetNextFunction(after) : LLVMGetFirstFunction(mod); fn;
         fn = LLVMGetNextFunction(fn))
        for (LLVMBasicBlockRef b = LLVMGetFirstBasicBlock(fn); b; b = LLVMGetNextBasicBlock(b))
            for (LLVMValueRef i = LLVMGetFirstInstruction(b); i; i = LLVMGetNextInstruction(i))
                n++;
    return n;
}

/* Kernel function f (split_id >= 0: of a split module, external under its
 * split name). */
static LLVMValueRef emit_kernel(kl_mod *m, const kiln_plan_entry *e, const kiln_kernel *k,
                                const bufinfo *bi, int split_id, LLVMTypeRef *fty_out)
{
    int np;
    LLVMTypeRef fty = kernel_fty(m, k, bi, &np);
    uint8_t *outline = calloc((size_t)k->nstmts + 1, 1);
    int32_t *owner = calloc((size_t)k->nlocals + 1, sizeof *owner);
    int32_t *sowner = calloc((size_t)k->nbufs + 1, sizeof *sowner);
    LLVMValueRef fn = NULL;
    *fty_out = fty;
    if (!fty || !outline || !owner || !sowner) {
        kl_fail(m, "out of memory");
        goto done;
    }
    char name[96];
    if (split_id >= 0) split_name(name, sizeof name, split_id, k);
    else ident_from(name, sizeof name, k->name);
    kl_fn f;
    if (!kl_fn_open(&f, m, k, e->g, bi, name, fty)) {
        kl_fn_close(&f);
        goto done;
    }
    fn = f.fn;
    if (split_id >= 0) LLVMSetLinkage(fn, LLVMExternalLinkage);
    f.is_kernel = true;
    /* kernels stay functions of their own: inlining them into the entry gains
     * nothing (each runs once per call) and makes one huge function that
     * the optimiser handles in superlinear time */
    kl_attr(m, fn, LLVMAttributeFunctionIndex, "noinline");
    f.rt = LLVMGetParam(fn, (unsigned)np);
    for (int32_t i = 0, p = 0; i < k->nbufs; i++) {
        if (!bi[i].param) continue;
        f.buf[i] = LLVMGetParam(fn, (unsigned)p);
        if (bi[i].restrict_ok) kl_attr(m, fn, (unsigned)p + 1, "noalias");
        p++;
    }
    if (kiln_ce_plan_outlining(k, bi, outline, owner, sowner) < 0) {
        kl_fail(m, "out of memory");
    } else {
        f.outline = outline;
        f.owner = owner;
        f.sowner = sowner;
        kl_stmts(&f, k->body, true);
    }
    LLVMBuildRet(m->b, kl_i32(m, 0));
    kl_fn_close(&f);
done:
    free(outline);
    free(owner);
    free(sowner);
    return fn;
}

static LLVMValueRef space_base(LLVMValueRef entry, int space)
{
    switch (space) {
    case KILN_SPACE_P:
        return LLVMGetParam(entry, 0);
    case KILN_SPACE_S:
        return LLVMGetParam(entry, 1);
    case KILN_SPACE_A:
        return LLVMGetParam(entry, 2);
    default:
        return NULL;
    }
}

/* One kernel call in entry `ent`: its arguments are the places of its
 * buffers; a check's code leaves the entry as index * 8 + code. */
static void emit_call(kl_mod *m, LLVMValueRef ent, const kiln_plan_entry *e, int ki,
                      const kfunc *kf)
{
    const kiln_kernel *k = e->kernels[ki];
    LLVMValueRef *args = malloc(((size_t)k->nbufs + 1) * sizeof *args);
    if (!args) {
        kl_fail(m, "out of memory");
        return;
    }
    unsigned na = 0;
    for (int32_t i = 0; i < k->nbufs; i++) {
        if (!kf->bi[i].param) continue;
        int32_t node = k->bufs[i].node;
        LLVMValueRef base = NULL;
        int64_t off = 0;
        if (node >= 0 && node < e->g->nnodes) {
            base = space_base(ent, e->place[node].space);
            off = e->place[node].offset;
        }
        if (!base) {
            kl_fail(m, "entry %s, kernel %s: a buffer has no place", e->name, k->name);
            base = LLVMGetParam(ent, 2);
        }
        LLVMValueRef o = kl_i64(m, off);
        args[na++] = LLVMBuildInBoundsGEP2(m->b, m->t_i8, base, &o, 1, "");
    }
    args[na++] = LLVMGetParam(ent, 3);
    LLVMValueRef rc = kl_call(m, kf->fty, kf->fn, args, na);
    free(args);
    if (k->nchecks <= 0) return;
    LLVMValueRef fn = ent;
    LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(m->c, fn, "failed");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(m->c, fn, "next");
    LLVMBuildCondBr(m->b, LLVMBuildICmp(m->b, LLVMIntNE, rc, kl_i32(m, 0), ""), bad, ok);
    LLVMPositionBuilderAtEnd(m->b, bad);
    LLVMBuildRet(m->b, LLVMBuildAdd(m->b, kl_i32(m, (int64_t)ki * 8), rc, ""));
    LLVMPositionBuilderAtEnd(m->b, ok);
}

/* ---- kernel signatures ---- */

/* Whether sigs has a function named `name`: -1 no, else its slot. */
static int32_t name_slot(const kiln_kfuncs *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->f[i].name, name)) return t->f[i].slot;
    return -1;
}

/* Names kernel ki of entry ei, built as function `slot`, in sigs: the C
 * emitter's rule (its name, else <entry>_<name>[_n] when a different
 * function has it); nothing when the name is already this function's. */
static void sig_name(kl_mod *m, kiln_kfuncs *t, int32_t slot, const kiln_plan *plan, int ei, int ki,
                     bool rt)
{
    const kiln_plan_entry *e = &plan->entries[ei];
    char base[72], en[64], name[160];
    ident_from(base, sizeof base, e->kernels[ki]->name);
    ident_from(en, sizeof en, e->name);
    snprintf(name, sizeof name, "%s", base);
    int32_t have;
    for (int n = 1; (have = name_slot(t, name)) >= 0 && have != slot; n++) {
        if (n == 1) snprintf(name, sizeof name, "%s_%s", en, base);
        else snprintf(name, sizeof name, "%s_%s_%d", en, base, n);
    }
    if (have == slot) return;
    if (!kiln_kfuncs_add(t, name, slot, ei, ki, e, rt)) kl_fail(m, "out of memory");
}

/* @kiln_kernels: the kernel functions' addresses, slot by slot. */
static void kernel_table(kl_mod *m, const kfunc *funcs, int n)
{
    LLVMValueRef *v = calloc((size_t)n + 1, sizeof *v);
    if (!v) {
        kl_fail(m, "out of memory");
        return;
    }
    for (int i = 0; i < n; i++)
        v[i] = kl_const_ptr(funcs[i].fn, m->t_ptr);
    if (!n) v[0] = LLVMConstNull(m->t_ptr);
    unsigned len = (unsigned)(n ? n : 1);
    LLVMValueRef g = LLVMAddGlobal(m->m, LLVMArrayType(m->t_ptr, len), KILN_KERNEL_TABLE);
    LLVMSetInitializer(g, LLVMConstArray(m->t_ptr, v, len));
    LLVMSetGlobalConstant(g, 1);
    free(v);
}

/* ---- targets ---- */

static bool has_feature(const char *features, const char *f)
{
    if (!features) return false;
    size_t n = strlen(f);
    for (const char *p = features; (p = strstr(p, f)); p += n)
        if ((p == features || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return true;
    return false;
}

void kl_target_from(const char *cpu, const char *features, const char *triple, int *vw, bool *fma)
{
    bool arm = triple && (strstr(triple, "aarch64") || strstr(triple, "arm64"));
    if (features && *features) {
        *vw = has_feature(features, "+avx512f") ? 16 : has_feature(features, "+avx") ? 8 : 4;
        *fma = has_feature(features, "+fma") || arm || has_feature(features, "+neon");
        return;
    }
    static const char *const w16[] = {
        "skylake-avx512", "cascadelake", "cooperlake",     "icelake-client",
        "icelake-server", "tigerlake",   "sapphirerapids", "znver4",
        "znver5",         "x86-64-v4",   "graniterapids",  "emeraldrapids",
        "rocketlake",     NULL};
    static const char *const w8[] = {
        "haswell", "broadwell", "skylake",   "alderlake", "raptorlake", "meteorlake", "znver1",
        "znver2",  "znver3",    "x86-64-v3", "bdver2",    "bdver3",     "bdver4",     NULL};
    *vw = 4;
    *fma = arm;
    for (int i = 0; cpu && w16[i]; i++)
        if (!strcmp(cpu, w16[i])) *vw = 16, *fma = true;
    for (int i = 0; cpu && w8[i]; i++)
        if (!strcmp(cpu, w8[i])) *vw = 8, *fma = true;
}

void kl_host_target(char **cpu, char **features, int *vw, bool *fma)
{
    *cpu = LLVMGetHostCPUName();
    *features = LLVMGetHostCPUFeatures();
    char *triple = LLVMGetDefaultTargetTriple();
    kl_target_from(*cpu, *features, triple, vw, fma);
    LLVMDisposeMessage(triple);
}

/* ---- the module ---- */

static void init_types(kl_mod *m)
{
    LLVMContextRef c = m->c;
    m->t_void = LLVMVoidTypeInContext(c);
    m->t_i1 = LLVMInt1TypeInContext(c);
    m->t_i8 = LLVMInt8TypeInContext(c);
    m->t_i32 = LLVMInt32TypeInContext(c);
    m->t_i64 = LLVMInt64TypeInContext(c);
    m->t_f32 = LLVMFloatTypeInContext(c);
    m->t_f64 = LLVMDoubleTypeInContext(c);
    m->t_ptr = kl_ptr(c, m->t_i8);
    LLVMTypeRef task[3] = {m->t_ptr, m->t_i64, m->t_i64};
    m->t_task = LLVMFunctionType(m->t_void, task, 3, 0);
    LLVMTypeRef pfor[4] = {m->t_ptr, m->t_i64, kl_ptr(c, m->t_task), m->t_ptr};
    m->t_pfor = LLVMFunctionType(m->t_void, pfor, 4, 0);
    LLVMTypeRef rt[2] = {m->t_ptr, kl_ptr(c, m->t_pfor)};
    m->t_rt = LLVMStructTypeInContext(c, rt, 2, 0);
    m->md_loop = LLVMGetMDKindIDInContext(c, "llvm.loop", 9);
}

kiln_status kl_build_module(const kiln_plan *plan, LLVMContextRef c, int vw, bool fma,
                            kiln_kfuncs *sigs, kl_split *split, LLVMModuleRef *out, char **err)
{
    *out = NULL;
    if (sigs) kiln_kfuncs_free(sigs);
    if (!plan) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_llvm: no plan");
    kl_mod m;
    memset(&m, 0, sizeof m);
    m.c = c;
    m.m = LLVMModuleCreateWithNameInContext("kiln", c);
    m.b = LLVMCreateBuilderInContext(c);
    m.vw = vw;
    m.fma = fma;
    init_types(&m);
    int total = 0;
    for (int ei = 0; ei < plan->nentries; ei++)
        total += plan->entries[ei].nkernels;
    kfunc *funcs = calloc((size_t)total + 1, sizeof *funcs);
    int *fidx = calloc((size_t)total + 1, sizeof *fidx);
    int nfuncs = 0;
    if (!funcs || !fidx) kl_fail(&m, "out of memory");
    /* kernels, once each */
    for (int ei = 0, slot = 0; ei < plan->nentries && !m.error; ei++) {
        const kiln_plan_entry *e = &plan->entries[ei];
        for (int ki = 0; ki < e->nkernels && !m.error; ki++, slot++) {
            const kiln_kernel *k = e->kernels ? e->kernels[ki] : NULL;
            if (!k || !e->g || !e->place) {
                kl_fail(&m, "entry %s: kernel %d is missing, or the entry has no graph or places",
                        e->name ? e->name : "?", ki);
                break;
            }
            bufinfo *bi = calloc((size_t)k->nbufs + 1, sizeof *bi);
            if (!bi) {
                kl_fail(&m, "out of memory");
                break;
            }
            kiln_ce_classify_bufs(k, e, bi);
            int f = -1;
            for (int i = 0; i < nfuncs && f < 0; i++)
                if (same_kernel(&funcs[i], k, e, bi)) f = i;
            if (f >= 0) {
                free(bi);
            } else {
                f = nfuncs++;
                funcs[f] = (kfunc){.k = k, .e = e, .bi = bi};
                bool split_mod = split && split->owner;
                int part = split ? split->part : 0;
                if (!split_mod || split->owner[f] == part) {
                    LLVMValueRef last = LLVMGetLastFunction(m.m);
                    funcs[f].fn = emit_kernel(&m, e, k, bi, split_mod ? f : -1, &funcs[f].fty);
                    if (split && split->weight) split->weight[f] = instructions_after(m.m, last);
                } else if (part == 0) { /* called from the entries here */
                    funcs[f].fn = declare_kernel(&m, f, k, bi, &funcs[f].fty);
                }
                /* else another part's, and nothing here calls it */
                if (!funcs[f].fn && (!split_mod || part == 0 || split->owner[f] == part))
                    kl_fail(&m, "kernel %s could not be built", k->name);
            }
            fidx[slot] = f;
            if (sigs && !m.error) sig_name(&m, sigs, f, plan, ei, ki, true);
        }
    }
    if (split) split->nfuncs = nfuncs;
    bool entries = !split || !split->owner || split->part == 0;
    if (sigs && entries && !m.error) kernel_table(&m, funcs, nfuncs);
    if (sigs) sigs->nslots = nfuncs;
    /* entries */
    LLVMTypeRef ept[4] = {m.t_ptr, m.t_ptr, m.t_ptr, m.t_ptr};
    LLVMTypeRef ety = LLVMFunctionType(m.t_i32, ept, 4, 0);
    for (int ei = 0, slot = 0; entries && ei < plan->nentries && !m.error; ei++) {
        const kiln_plan_entry *e = &plan->entries[ei];
        char en[64], sym[80];
        ident_from(en, sizeof en, e->name);
        if (!e->name || strcmp(en, e->name)) {
            kl_fail(&m, "entry name '%s' is not a C identifier", e->name ? e->name : "(null)");
            break;
        }
        snprintf(sym, sizeof sym, "kiln_%s", en);
        LLVMValueRef ent = LLVMAddFunction(m.m, sym, ety);
        kl_attr(&m, ent, LLVMAttributeFunctionIndex, "nounwind");
        for (unsigned p = 1; p <= 3; p++)
            kl_attr(&m, ent, p, "noalias");
        LLVMPositionBuilderAtEnd(m.b, LLVMAppendBasicBlockInContext(c, ent, "entry"));
        for (int ki = 0; ki < e->nkernels && !m.error; ki++, slot++)
            emit_call(&m, ent, e, ki, &funcs[fidx[slot]]);
        LLVMBuildRet(m.b, kl_i32(&m, 0));
    }
    for (int i = 0; i < nfuncs; i++)
        free(funcs[i].bi);
    free(funcs);
    free(fidx);
    LLVMDisposeBuilder(m.b);
    if (m.error && sigs) kiln_kfuncs_free(sigs);
    if (m.error) {
        kiln_status st = strstr(m.error, "out of memory") ? KILN_ERR_NOMEM
                         : strstr(m.error, "unsupported") ? KILN_ERR_UNSUPPORTED
                                                          : KILN_ERR_INVALID;
        LLVMDisposeModule(m.m);
        return kiln_set_err(err, st, "kiln_llvm: %s", m.error);
    }
    char *msg = NULL;
    if (LLVMVerifyModule(m.m, LLVMReturnStatusAction, &msg)) {
        kiln_status st = kiln_set_err(err, KILN_ERR_INTERNAL,
                                      "kiln_llvm: the module does not verify: %s", msg ? msg : "?");
        LLVMDisposeMessage(msg);
        LLVMDisposeModule(m.m);
        if (sigs) kiln_kfuncs_free(sigs);
        return st;
    }
    LLVMDisposeMessage(msg);
    *out = m.m;
    return KILN_OK;
}

#else
typedef int kiln_emit_llvm_entry_unused; /* built without LLVM */
#endif
