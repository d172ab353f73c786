/* codegen/llvm_jit.c — the LLVM backend's driver (codegen/llvm.h): builds a
 * plan's module (codegen/emit_llvm_entry.c), optimises it with the new pass
 * manager, and compiles it in process with ORC LLJIT, or writes it as an
 * object file.
 *
 * Expects: a plan as codegen/codegen.h describes it. LLVM 14 to 19 through
 * its C API (codegen/llvm_compat.h holds every difference).
 * Guarantees:
 *   - one LLVM initialisation per process (the native target for the JIT,
 *     every target for object files), thread-safe; each load has its own
 *     context and JIT, so loads may run concurrently;
 *   - the target machine is the host's: LLVMGetHostCPUName and
 *     LLVMGetHostCPUFeatures, O3 code generation, PIC; the module gets its
 *     triple and data layout before "default<O3>" runs (loop and SLP
 *     vectorization, interleaving and unrolling on), and the JIT compiles
 *     for the same machine (a JITTargetMachineBuilder made from it);
 *   - the only external functions the module may call (libm, memset and
 *     friends: kl_runtime_names) are defined in the JIT explicitly as this
 *     process's addresses, so no symbol comes from a search of the process;
 *   - every kiln_<entry> symbol is looked up (so compiled) before
 *     kiln_llvm_load returns, and *seconds covers build, optimisation and
 *     code generation;
 *   - failures free everything they made and say why in *err;
 *   - LLVM's remarks and warnings (a vectorize hint it could not honour)
 *     are dropped, its errors printed on stderr.
 * Debugging: KILN_LLVM_VERBOSE=1 prints the build, optimisation and load
 * times; KILN_LLVM_DUMP=path writes each optimised module's IR to path.
 * Built without LLVM, every function returns KILN_ERR_UNSUPPORTED (NULL)
 * and says so.
 */
#include "codegen/llvm.h"
#include "codegen/emit_llvm_internal.h"
#include "ir/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_LLVM_MSG                                                                                \
    "kiln was built without LLVM (CMake found no llvm-config of LLVM 14 to 19): the LLVM backend " \
    "is not available; use the C backend"

#if KILN_HAVE_LLVM

#include <pthread.h>
#include <time.h>
#include <unistd.h>

struct kiln_llvm_jit {
    LLVMOrcLLJITRef jit;
    int n;
    char **names; /* the entry symbols, compiled at load */
    void **addrs;
};

int kiln_llvm_available(void)
{
    return 1;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static pthread_once_t native_once = PTHREAD_ONCE_INIT, all_once = PTHREAD_ONCE_INIT;
static int native_ok;

static void init_native(void)
{
    native_ok = !LLVMInitializeNativeTarget() && !LLVMInitializeNativeAsmPrinter();
}

static void init_all(void)
{
    LLVMInitializeAllTargetInfos();
    LLVMInitializeAllTargets();
    LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();
}

/* An LLVM error as a status and message (the error is consumed). */
static kiln_status llvm_err(char **err, LLVMErrorRef e, const char *what)
{
    char *msg = LLVMGetErrorMessage(e);
    kiln_status st =
        kiln_set_err(err, KILN_ERR_INTERNAL, "kiln_llvm: %s: %s", what, msg ? msg : "?");
    LLVMDisposeErrorMessage(msg);
    return st;
}

typedef struct target {
    char *triple, *cpu, *features; /* LLVM strings (LLVMDisposeMessage) or strdup'd */
    bool llvm_strings;
    int vw;
    bool fma;
} target;

static void target_free(target *t)
{
    if (t->llvm_strings) {
        LLVMDisposeMessage(t->triple);
        LLVMDisposeMessage(t->cpu);
        LLVMDisposeMessage(t->features);
    } else {
        free(t->triple);
        free(t->cpu);
        free(t->features);
    }
    memset(t, 0, sizeof *t);
}

static void target_host(target *t)
{
    memset(t, 0, sizeof *t);
    t->llvm_strings = true;
    t->triple = LLVMGetDefaultTargetTriple();
    kl_host_target(&t->cpu, &t->features, &t->vw, &t->fma);
}

static kiln_status make_tm(const target *t, LLVMRelocMode reloc, LLVMCodeModel cm,
                           LLVMTargetMachineRef *out, char **err)
{
    LLVMTargetRef T = NULL;
    char *msg = NULL;
    *out = NULL;
    if (LLVMGetTargetFromTriple(t->triple, &T, &msg)) {
        kiln_status st = kiln_set_err(err, KILN_ERR_UNSUPPORTED, "kiln_llvm: target '%s': %s",
                                      t->triple, msg ? msg : "unknown");
        LLVMDisposeMessage(msg);
        return st;
    }
    LLVMDisposeMessage(msg);
    *out =
        LLVMCreateTargetMachine(T, t->triple, t->cpu ? t->cpu : "", t->features ? t->features : "",
                                LLVMCodeGenLevelAggressive, reloc, cm);
    if (!*out)
        return kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                            "kiln_llvm: no target machine for %s (cpu %s)", t->triple,
                            t->cpu ? t->cpu : "generic");
    return KILN_OK;
}

/* LLVM's diagnostics: remarks and warnings (a vectorize hint that could not
 * be honoured, say: a loop calling libm) are dropped; errors go to stderr. */
static void diagnostic(LLVMDiagnosticInfoRef di, void *ctx)
{
    (void)ctx;
    if (LLVMGetDiagInfoSeverity(di) != LLVMDSError) return;
    char *msg = LLVMGetDiagInfoDescription(di);
    fprintf(stderr, "kiln_llvm: %s\n", msg ? msg : "an LLVM error");
    LLVMDisposeMessage(msg);
}

static bool verbose(void)
{
    const char *v = getenv("KILN_LLVM_VERBOSE");
    return v && *v && strcmp(v, "0");
}

/* Runs "default<O3>" over mod (its data layout set) for tm; KILN_LLVM_DUMP
 * writes the result (a split module's part k > 0 to <path>.k). */
static kiln_status optimise(LLVMModuleRef mod, LLVMTargetMachineRef tm, const target *t, int part,
                            char **err)
{
    double t0 = now();
    LLVMPassBuilderOptionsRef o = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(o, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(o, 1);
    LLVMPassBuilderOptionsSetLoopInterleaving(o, 1);
    LLVMPassBuilderOptionsSetLoopUnrolling(o, 1);
    LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", tm, o);
    LLVMDisposePassBuilderOptions(o);
    if (e) return llvm_err(err, e, "optimising the module");
    const char *dump = getenv("KILN_LLVM_DUMP");
    if (dump && *dump) {
        char *msg = NULL, *path = part ? kiln_asprintf("%s.%d", dump, part) : strdup(dump);
        if (path && LLVMPrintModuleToFile(mod, path, &msg))
            fprintf(stderr, "kiln_llvm: %s: %s\n", path, msg);
        LLVMDisposeMessage(msg);
        free(path);
    }
    if (verbose())
        fprintf(stderr, "kiln_llvm: optimised in %.3f s (%s, %s, %d lanes%s)\n", now() - t0,
                t->triple, t->cpu ? t->cpu : "generic", t->vw, t->fma ? ", fma" : "");
    return KILN_OK;
}

/* Builds the plan's module (or a part of it: split) in c for t, with t's
 * triple and data layout, optimised at O3 when tm is given. */
static kiln_status build_module(const kiln_plan *plan, LLVMContextRef c, const target *t,
                                LLVMTargetMachineRef tm, kiln_kfuncs *sigs, kl_split *split,
                                kiln_llvm_times *times, LLVMModuleRef *out, char **err)
{
    LLVMContextSetDiagnosticHandler(c, diagnostic, NULL);
    double t0 = now();
    kiln_status st = kl_build_module(plan, c, t->vw, t->fma, sigs, split, out, err);
    if (st) return st;
    double t1 = now();
    if (times) times->emit = t1 - t0;
    LLVMSetTarget(*out, t->triple);
    if (!tm) return KILN_OK;
    LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(*out, td);
    LLVMDisposeTargetData(td);
    int part = split && split->owner ? split->part : 0;
    st = optimise(*out, tm, t, part, err);
    if (times) times->optimize = now() - t1;
    if (verbose() && !st)
        fprintf(stderr, "kiln_llvm: part %d built in %.3f s, optimised in %.3f s\n", part, t1 - t0,
                now() - t1);
    if (st) {
        LLVMDisposeModule(*out);
        *out = NULL;
    }
    return st;
}

/* The external functions the module may call, as this process's addresses. */
static LLVMErrorRef define_runtime(LLVMOrcLLJITRef jit)
{
    int n = 0;
    while (kl_runtime_names[n])
        n++;
    kl_symbol_map_pair *pairs = calloc((size_t)n, sizeof *pairs);
    if (!pairs) return LLVMCreateStringError("out of memory");
    for (int i = 0; i < n; i++) {
        pairs[i].Name = LLVMOrcLLJITMangleAndIntern(jit, kl_runtime_names[i]);
        pairs[i].Sym.Address = (LLVMOrcExecutorAddress)(uintptr_t)kl_runtime_address(i);
        pairs[i].Sym.Flags.GenericFlags =
            LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable;
        pairs[i].Sym.Flags.TargetFlags = 0;
    }
    LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(pairs, (size_t)n);
    free(pairs);
    LLVMErrorRef e = LLVMOrcJITDylibDefine(LLVMOrcLLJITGetMainJITDylib(jit), mu);
    if (e) LLVMOrcDisposeMaterializationUnit(mu);
    return e;
}

kiln_status kiln_llvm_load(const kiln_plan *plan, kiln_llvm_jit **out, double *seconds, char **err)
{
    if (seconds) *seconds = 0.0;
    kiln_llvm_times t;
    double t0 = now();
    kiln_status st = kiln_llvm_load2(plan, NULL, out, &t, err);
    if (!st && seconds) *seconds = now() - t0;
    return st;
}

/* ---- compiling on several threads ----
 *
 * A plan's kernels are independent functions, so the module is built in
 * parts (kl_split) that are optimised and compiled to object code on
 * threads of their own, each with its own context and target machine, and
 * linked by the JIT. The kernels are dealt to the parts by their size
 * before optimisation, largest first to the lightest part. One part (one
 * core, KILN_LLVM_THREADS=1, or a plan too small to be worth a thread) is
 * the whole module compiled by the JIT itself. */

enum { MAX_PARTS = 8, MIN_SPLIT_WEIGHT = 4000 /* instructions */ };

static int compile_threads(void)
{
    const char *v = getenv("KILN_LLVM_THREADS");
    long n = v && *v ? strtol(v, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_PARTS ? MAX_PARTS : (int)n;
}

/* Deals nf kernels of weights w to at most nparts parts (owner[f]); returns
 * the number of parts used. */
static int deal_parts(const int64_t *w, int nf, int nparts, int *owner)
{
    int64_t load[MAX_PARTS] = {0};
    bool *done = calloc((size_t)nf + 1, 1);
    if (!done) return 1;
    if (nparts > nf) nparts = nf;
    for (int n = 0; n < nf; n++) {
        int f = -1;
        for (int i = 0; i < nf; i++)
            if (!done[i] && (f < 0 || w[i] > w[f])) f = i;
        int p = 0;
        for (int i = 1; i < nparts; i++)
            if (load[i] < load[p]) p = i;
        owner[f] = p;
        load[p] += w[f];
        done[f] = true;
    }
    free(done);
    return nparts;
}

typedef struct part_job {
    const kiln_plan *plan;
    const target *t;
    kl_split split;
    kiln_kfuncs *sigs; /* part 0's */
    LLVMMemoryBufferRef obj;
    kiln_llvm_times times;
    kiln_status st;
    char *err;
} part_job;

/* Builds, optimises and compiles one part to an object in memory. */
static void *part_run(void *arg)
{
    part_job *J = arg;
    LLVMTargetMachineRef tm = NULL;
    J->st = make_tm(J->t, LLVMRelocPIC, LLVMCodeModelJITDefault, &tm, &J->err);
    if (J->st) return NULL;
    LLVMContextRef c = LLVMContextCreate();
    LLVMModuleRef mod = NULL;
    J->st = build_module(J->plan, c, J->t, tm, J->sigs, &J->split, &J->times, &mod, &J->err);
    if (!J->st) {
        double t0 = now();
        char *msg = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, &J->obj)) {
            J->obj = NULL;
            J->st = kiln_set_err(&J->err, KILN_ERR_INTERNAL,
                                 "kiln_llvm: compiling part %d of the module: %s", J->split.part,
                                 msg ? msg : "?");
        }
        LLVMDisposeMessage(msg);
        J->times.codegen = now() - t0;
    }
    if (mod) LLVMDisposeModule(mod);
    LLVMContextDispose(c);
    LLVMDisposeTargetMachine(tm);
    return NULL;
}

/* Compiles the parts (job 0 on this thread), and on success hands their
 * objects to *objs; *times gets the slowest part's phases. */
static kiln_status run_parts(const kiln_plan *plan, const target *t, const int *owner, int nparts,
                             kiln_kfuncs *sigs, LLVMMemoryBufferRef *objs, kiln_llvm_times *times,
                             char **err)
{
    part_job jobs[MAX_PARTS];
    pthread_t th[MAX_PARTS];
    bool started[MAX_PARTS] = {false};
    memset(jobs, 0, sizeof jobs);
    for (int p = 0; p < nparts; p++) {
        jobs[p] = (part_job){.plan = plan, .t = t, .sigs = p ? NULL : sigs};
        jobs[p].split = (kl_split){.part = p, .owner = owner};
    }
    for (int p = 1; p < nparts; p++)
        started[p] = !pthread_create(&th[p], NULL, part_run, &jobs[p]);
    part_run(&jobs[0]);
    for (int p = 1; p < nparts; p++)
        if (started[p])
            pthread_join(th[p], NULL);
        else
            part_run(&jobs[p]); /* no thread: here, after the others */
    kiln_status st = KILN_OK;
    for (int p = 0; p < nparts; p++) {
        if (jobs[p].st && !st) {
            st = jobs[p].st;
            if (err)
                *err = jobs[p].err;
            else
                free(jobs[p].err);
        } else {
            free(jobs[p].err);
        }
        if (times) {
            if (jobs[p].times.emit > times->emit) times->emit = jobs[p].times.emit;
            if (jobs[p].times.optimize > times->optimize) times->optimize = jobs[p].times.optimize;
        }
        objs[p] = jobs[p].obj;
    }
    if (st)
        for (int p = 0; p < nparts; p++)
            if (objs[p]) LLVMDisposeMemoryBuffer(objs[p]), objs[p] = NULL;
    return st;
}

kiln_status kiln_llvm_load2(const kiln_plan *plan, kiln_kfuncs *sigs, kiln_llvm_jit **out,
                            kiln_llvm_times *times, char **err)
{
    if (err) *err = NULL;
    if (times) memset(times, 0, sizeof *times);
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_llvm_load: out is NULL");
    *out = NULL;
    if (!plan) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_llvm_load: no plan");
    double t0 = now();
    pthread_once(&native_once, init_native);
    if (!native_ok)
        return kiln_set_err(err, KILN_ERR_UNSUPPORTED,
                            "kiln_llvm_load: LLVM has no native target for this machine");
    kiln_llvm_jit *j = calloc(1, sizeof *j);
    if (!j) return kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_load: out of memory");
    target t;
    target_host(&t);
    LLVMTargetMachineRef tm = NULL, tm_jit = NULL;
    LLVMOrcThreadSafeContextRef ts = NULL;
    LLVMModuleRef mod = NULL;
    LLVMMemoryBufferRef objs[MAX_PARTS] = {NULL};
    int nparts = 1, total = 0;
    double part_codegen = 0.0;
    for (int e = 0; e < plan->nentries; e++)
        total += plan->entries[e].nkernels;
    int64_t *weight = calloc((size_t)total + 1, sizeof *weight);
    int *owner = calloc((size_t)total + 1, sizeof *owner);
    kiln_status st = weight && owner
                         ? KILN_OK
                         : kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_load: out of memory");
    if (!st) st = make_tm(&t, LLVMRelocPIC, LLVMCodeModelJITDefault, &tm_jit, err);
    if (!st) {
        /* the whole module, unoptimised: it measures the kernels, and is
         * the module itself when it stays one */
        ts = LLVMOrcCreateNewThreadSafeContext();
        kl_split whole = {.part = 0, .owner = NULL, .weight = weight};
        st = build_module(plan, kl_tsctx_context(ts), &t, NULL, sigs, &whole, times, &mod, err);
        int64_t sum = 0;
        for (int f = 0; f < whole.nfuncs; f++)
            sum += weight[f];
        int threads = compile_threads();
        if (!st && threads > 1 && whole.nfuncs > 1 && sum >= MIN_SPLIT_WEIGHT)
            nparts = deal_parts(weight, whole.nfuncs, threads, owner);
    }
    if (!st && nparts > 1) {
        LLVMDisposeModule(mod);
        mod = NULL;
        double emit = times ? times->emit : 0.0, tp0 = now();
        st = run_parts(plan, &t, owner, nparts, sigs, objs, times, err);
        if (times) { /* the rest of the parts' wall time: their machine code */
            part_codegen = now() - tp0 - times->emit - times->optimize;
            if (part_codegen < 0) part_codegen = 0;
            times->emit += emit;
        }
    } else if (!st) { /* one module: optimised here, compiled by the JIT */
        st = make_tm(&t, LLVMRelocPIC, LLVMCodeModelJITDefault, &tm, err);
        if (!st) {
            double t1 = now();
            LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
            LLVMSetModuleDataLayout(mod, td);
            LLVMDisposeTargetData(td);
            st = optimise(mod, tm, &t, 0, err);
            if (times) times->optimize = now() - t1;
        }
    }
    double t_jit = now();
    if (!st) {
        LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
        /* the JIT's machine: the one the module was optimised for (owned by
         * the builder from here on) */
        LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(
            jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm_jit));
        tm_jit = NULL;
        LLVMErrorRef e = LLVMOrcCreateLLJIT(&j->jit, jb);
        if (e) {
            j->jit = NULL;
            st = llvm_err(err, e, "creating the JIT");
        }
    }
    if (!st) {
        LLVMErrorRef e = define_runtime(j->jit);
        if (e) st = llvm_err(err, e, "defining the runtime's functions");
    }
    LLVMOrcJITDylibRef lib = st ? NULL : LLVMOrcLLJITGetMainJITDylib(j->jit);
    for (int p = 0; p < nparts && !st && nparts > 1; p++) {
        LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j->jit, lib, objs[p]);
        objs[p] = NULL; /* the JIT owns it */
        if (e) st = llvm_err(err, e, "adding compiled code to the JIT");
    }
    if (!st && mod) {
        LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, ts);
        mod = NULL; /* the thread-safe module owns it */
        LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(j->jit, lib, tsm);
        if (e) st = llvm_err(err, e, "adding the module to the JIT");
    }
    if (!st) {
        j->names = calloc((size_t)plan->nentries + 1, sizeof *j->names);
        j->addrs = calloc((size_t)plan->nentries + 1, sizeof *j->addrs);
        if (!j->names || !j->addrs)
            st = kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_load: out of memory");
        for (int e = 0; e < plan->nentries && !st; e++) {
            char *sym = kiln_asprintf("kiln_%s", plan->entries[e].name);
            if (!sym) {
                st = kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_load: out of memory");
                break;
            }
            j->names[j->n] = sym;
            LLVMOrcExecutorAddress addr = 0;
            LLVMErrorRef le = LLVMOrcLLJITLookup(j->jit, &addr, sym);
            j->n++;
            if (le) {
                char what[128];
                snprintf(what, sizeof what, "compiling %s", sym);
                st = llvm_err(err, le, what);
            } else {
                j->addrs[j->n - 1] = (void *)(uintptr_t)addr;
            }
        }
    }
    for (int p = 0; p < nparts; p++)
        if (objs[p]) LLVMDisposeMemoryBuffer(objs[p]);
    if (mod) LLVMDisposeModule(mod);
    if (ts) LLVMOrcDisposeThreadSafeContext(ts); /* modules keep what they use */
    if (tm) LLVMDisposeTargetMachine(tm);
    if (tm_jit) LLVMDisposeTargetMachine(tm_jit);
    target_free(&t);
    free(weight);
    free(owner);
    if (st) {
        kiln_llvm_free(j);
        if (sigs) kiln_kfuncs_free(sigs);
        return st;
    }
    if (times) {
        times->codegen = part_codegen + (now() - t_jit);
        times->parts = nparts;
    }
    if (verbose())
        fprintf(stderr, "kiln_llvm: loaded in %.3f s (%d part%s)\n", now() - t0, nparts,
                nparts > 1 ? "s" : "");
    *out = j;
    return KILN_OK;
}

void *kiln_llvm_sym(kiln_llvm_jit *j, const char *name)
{
    if (!j || !name) return NULL;
    for (int i = 0; i < j->n; i++)
        if (!strcmp(j->names[i], name)) return j->addrs[i];
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef e = LLVMOrcLLJITLookup(j->jit, &addr, name);
    if (e) {
        LLVMConsumeError(e);
        return NULL;
    }
    return (void *)(uintptr_t)addr;
}

void kiln_llvm_free(kiln_llvm_jit *j)
{
    if (!j) return;
    if (j->jit) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->jit);
        if (e) LLVMConsumeError(e);
    }
    for (int i = 0; i < j->n; i++)
        free(j->names[i]);
    free(j->names);
    free(j->addrs);
    free(j);
}

kiln_status kiln_llvm_emit_object(const kiln_plan *plan, const char *triple, const char *cpu,
                                  const char *path, char **err)
{
    if (err) *err = NULL;
    if (!plan || !path)
        return kiln_set_err(err, KILN_ERR_INVALID, "kiln_llvm_emit_object: %s is NULL",
                            plan ? "path" : "the plan");
    pthread_once(&all_once, init_all);
    target t;
    if (!triple && !cpu) {
        target_host(&t);
    } else {
        memset(&t, 0, sizeof t);
        char *host = NULL;
        if (!triple) host = LLVMGetDefaultTargetTriple();
        t.triple = strdup(triple ? triple : host);
        LLVMDisposeMessage(host);
        t.cpu = strdup(cpu ? cpu : "generic");
        t.features = strdup("");
        if (!t.triple || !t.cpu || !t.features) {
            target_free(&t);
            return kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_emit_object: out of memory");
        }
        kl_target_from(t.cpu, t.features, t.triple, &t.vw, &t.fma);
    }
    LLVMTargetMachineRef tm = NULL;
    LLVMContextRef c = NULL;
    LLVMModuleRef mod = NULL;
    kiln_status st = make_tm(&t, LLVMRelocPIC, LLVMCodeModelDefault, &tm, err);
    if (!st) {
        c = LLVMContextCreate();
        st = build_module(plan, c, &t, tm, NULL, NULL, NULL, &mod, err);
    }
    if (!st) {
        char *msg = NULL;
        char *p = strdup(path);
        if (!p) {
            st = kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_emit_object: out of memory");
        } else if (LLVMTargetMachineEmitToFile(tm, mod, p, LLVMObjectFile, &msg)) {
            st = kiln_set_err(err, KILN_ERR_IO, "kiln_llvm_emit_object: %s: %s", path,
                              msg ? msg : "?");
        }
        LLVMDisposeMessage(msg);
        free(p);
    }
    if (mod) LLVMDisposeModule(mod);
    if (c) LLVMContextDispose(c);
    if (tm) LLVMDisposeTargetMachine(tm);
    target_free(&t);
    return st;
}

char *kiln_llvm_module_text(const kiln_plan *plan, char **err)
{
    if (err) *err = NULL;
    target t;
    target_host(&t);
    LLVMContextRef c = LLVMContextCreate();
    LLVMModuleRef mod = NULL;
    char *out = NULL;
    if (!build_module(plan, c, &t, NULL, NULL, NULL, NULL, &mod, err)) {
        char *s = LLVMPrintModuleToString(mod);
        out = s ? strdup(s) : NULL;
        LLVMDisposeMessage(s);
        if (!out) kiln_set_err(err, KILN_ERR_NOMEM, "kiln_llvm_module_text: out of memory");
        LLVMDisposeModule(mod);
    }
    LLVMContextDispose(c);
    target_free(&t);
    return out;
}

#else /* built without LLVM: stubs */

int kiln_llvm_available(void)
{
    return 0;
}

kiln_status kiln_llvm_load2(const kiln_plan *plan, kiln_kfuncs *sigs, kiln_llvm_jit **out,
                            kiln_llvm_times *times, char **err)
{
    (void)plan;
    if (sigs) kiln_kfuncs_free(sigs);
    if (out) *out = NULL;
    if (times) memset(times, 0, sizeof *times);
    if (err) *err = NULL;
    return kiln_set_err(err, KILN_ERR_UNSUPPORTED, "%s", NO_LLVM_MSG);
}

kiln_status kiln_llvm_load(const kiln_plan *plan, kiln_llvm_jit **out, double *seconds, char **err)
{
    (void)plan;
    if (out) *out = NULL;
    if (seconds) *seconds = 0.0;
    if (err) *err = NULL;
    return kiln_set_err(err, KILN_ERR_UNSUPPORTED, "%s", NO_LLVM_MSG);
}

void *kiln_llvm_sym(kiln_llvm_jit *j, const char *name)
{
    (void)j;
    (void)name;
    return NULL;
}

void kiln_llvm_free(kiln_llvm_jit *j)
{
    (void)j;
}

kiln_status kiln_llvm_emit_object(const kiln_plan *plan, const char *triple, const char *cpu,
                                  const char *path, char **err)
{
    (void)plan;
    (void)triple;
    (void)cpu;
    (void)path;
    if (err) *err = NULL;
    return kiln_set_err(err, KILN_ERR_UNSUPPORTED, "%s", NO_LLVM_MSG);
}

char *kiln_llvm_module_text(const kiln_plan *plan, char **err)
{
    (void)plan;
    if (err) *err = NULL;
    kiln_set_err(err, KILN_ERR_UNSUPPORTED, "%s", NO_LLVM_MSG);
    return NULL;
}

#endif
