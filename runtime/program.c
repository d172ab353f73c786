/* runtime/program.c — compiled programs (include/kiln/program.h).
 *
 * Expects: a forward graph that verifies.
 * Guarantees: kiln_compile builds the entry graphs (train_step when the graph
 * has a loss and parameters, eval_step when it has a loss, forward always),
 * gives every node of every entry a place in one of three memories, lowers
 * every node to a kernel (C backend), and loads the generated code — or
 * keeps one reference interpreter per entry (REF backend) that reads and
 * writes the same memories, so both backends behave alike byte for byte in
 * what a caller can see.
 *
 * Memory layout (every offset and every size 64-byte aligned):
 *   P  the parameters, in order of first appearance (train, eval, forward),
 *      and the model's own state (STATE leaves of the forward graph itself:
 *      batchnorm's running statistics), which the forward entry reads;
 *   S  the optimizer state, in order of first appearance;
 *   A  the interface block first — input, target, const and hparam leaves,
 *      then returned values (outputs, losses, metrics), each at one offset
 *      shared by every entry — then each entry's intermediates, placed by
 *      the memory planner (passes/memplan.c: values whose lifetimes over
 *      the entry's kernels overlap get disjoint bytes; the others share),
 *      every entry starting right after the interface block (entries never
 *      run concurrently). A's size is the largest entry's end.
 * Threads (C backend): kiln_compile starts one pool of opt->threads threads
 * (runtime/threadpool.h) and passes every entry call a kiln_rt over it; the
 * generated kernels split their outlined parallel loops across it
 * (codegen/codegen.h). kiln_program_free stops it.
 * Named tensors are unified by name across entries: parameter "fc1.weight"
 * or input "x" is one tensor with one place. `assign` nodes are placed at
 * their destination (a P or S tensor); `const` nodes have no storage
 * (KILN_SPACE_NONE: the emitter inlines them).
 */
#include "codegen/codegen.h"
#include "codegen/llvm.h"
#include "codegen/lower_group.h"
#include "codegen/target.h"
#include "ir/ops.h"
#include "ir/util.h"
#include "passes/passes.h"
#include "runtime/elem.h"
#include "runtime/kiln_ffi.h"
#include "runtime/rng.h"
#include "runtime/threadpool.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KILN_ALIGN 64
#define MAX_ENTRIES 3

static const char *const entry_names[MAX_ENTRIES] = {"train_step", "eval_step", "forward"};

/* Hyperparameter values a new program starts with (fastai's defaults), so a
 * program can run before its schedule sets them: with zeros AdamW's bias
 * correction divides by zero at step 0. */
static const struct {
    const char *name;
    double value;
} hparam_defaults[] = {
    {"lr", 1e-3}, {"mom", 0.9}, {"beta2", 0.99}, {"eps", 1e-5}, {"wd", 1e-2}, {"step", 1.0},
};

typedef struct ptensor {
    char *name;
    kiln_role role;
    kiln_metric_kind metric; /* METRIC tensors */
    kiln_dtype dtype;
    int rank;
    int64_t shape[KILN_MAX_RANK];
    int64_t numel;
    size_t bytes;
    uint8_t space; /* kiln_space */
    int64_t offset;
    int init;        /* parameters and model state: kiln_init */
    double scale;    /* parameters and model state: the init's scale */
    bool model_state; /* a STATE leaf of the model graph itself (batchnorm's running
                         statistics): kept in P with the parameters, set by
                         kiln_program_init_params, not optimizer state */
    int group;       /* PARAM tensors: the parameter group (kiln_set_param_group) */
    bool is_const;   /* a returned `const` node: no kernel writes it */
    double const_value;
} ptensor;

/* What plan building gives: the entry graphs, their places and kernels, and
 * the named tensors. Shared by kiln_compile and kiln_emit_c. */
typedef struct built {
    kiln_graph *graphs[MAX_ENTRIES]; /* per plan entry */
    int32_t *tensor_of[MAX_ENTRIES]; /* per plan entry, per node: tensor index or -1 */
    kiln_fuse_plan *fusion[MAX_ENTRIES]; /* per plan entry when kernels are built */
    kiln_plan plan;
    kiln_cg_target target; /* what plan.target points to when the options name a target */
    ptensor *t;
    int nt, cap;
    size_t iface_bytes;
    size_t inter_sum; /* the largest entry's sum of aligned intermediate sizes */
    int ntrain; /* plan index of train_step, or -1 */
    double t_graphs, t_lower, t_memplan; /* seconds (kiln_compile_timings) */
    bool kernels; /* kernels are built: entries go through passes/conv_lower.c */
    bool implicit_im2col; /* C kernels only: GEMMs pack B from im2col's image (passes/fuse.h) */
    char err[2048];
} built;

struct kiln_program {
    built b;
    kiln_backend backend;
    char *mem[4]; /* indexed by kiln_space: [KILN_SPACE_P], [_S], [_A] */
    kiln_so *so;
    kiln_llvm_jit *jit; /* LLVM backend */
    kiln_entry_fn fn[MAX_ENTRIES];
    kiln_kfuncs kf;    /* what the emitter wrote: the kernels' signatures */
    kiln_ftable *ft;   /* entries and kernels callable through libffi (runtime/ffi.c) */
    kiln_compile_timings times;
    kiln_pool *pool; /* C backend: the kernels' threads */
    kiln_rt rt;      /* what entries get: the pool and its parallel_for */
    kiln_interp *it[MAX_ENTRIES];
    double *scratch; /* REF: one tensor's values as doubles */
    kiln_program_stats stats;
    char err[2048];
};

/* ---- small helpers ---- */

static int64_t align_up(int64_t n) { return (n + (KILN_ALIGN - 1)) & ~(int64_t)(KILN_ALIGN - 1); }

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char **err, const char *fmt, ...)
{
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    char *s = malloc((size_t)n + 1);
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    free(*err);
    *err = s;
}

static kiln_status berr(built *b, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status berr(built *b, kiln_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof b->err, fmt, ap);
    va_end(ap);
    return st;
}

static kiln_status perr(kiln_program *p, kiln_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status perr(kiln_program *p, kiln_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
    return st;
}

/* ---- plan building ---- */

static void built_free(built *b)
{
    for (int e = 0; e < b->plan.nentries; e++) {
        kiln_plan_entry *pe = &b->plan.entries[e];
        for (int32_t k = 0; k < pe->nkernels; k++) kiln_kernel_free(pe->kernels[k]);
        free(pe->kernels);
        free(pe->place);
    }
    free(b->plan.entries);
    for (int e = 0; e < MAX_ENTRIES; e++) kiln_fuse_plan_free(b->fusion[e]);
    for (int e = 0; e < MAX_ENTRIES; e++) {
        kiln_graph_free(b->graphs[e]);
        free(b->tensor_of[e]);
    }
    for (int i = 0; i < b->nt; i++) free(b->t[i].name);
    free(b->t);
    memset(b, 0, sizeof *b);
}

/* Which named-tensor class a node belongs to: 0 parameter, 1 state, 2 an
 * interface leaf of A, 3 a returned value; -1 none (intermediates, consts). */
static int tensor_class(const kiln_node *n)
{
    if (n->op == KILN_OP_INPUT) switch ((kiln_role)n->role) {
        case KILN_ROLE_PARAM: return 0;
        case KILN_ROLE_STATE: return 1;
        case KILN_ROLE_INPUT:
        case KILN_ROLE_TARGET:
        case KILN_ROLE_CONST:
        case KILN_ROLE_HPARAM: return 2;
        default: return -1;
        }
    if (n->role == KILN_ROLE_OUTPUT || n->role == KILN_ROLE_LOSS || n->role == KILN_ROLE_METRIC)
        return 3;
    return -1;
}

static int find_tensor(const built *b, const char *name)
{
    for (int i = 0; i < b->nt; i++)
        if (strcmp(b->t[i].name, name) == 0) return i;
    return -1;
}

static kiln_status add_tensor(built *b, const kiln_node *n, const char *name, int *idx)
{
    if (b->nt == b->cap) {
        int cap = b->cap ? b->cap * 2 : 16;
        ptensor *nt = realloc(b->t, (size_t)cap * sizeof *nt);
        if (!nt) return berr(b, KILN_ERR_NOMEM, "out of memory");
        b->t = nt;
        b->cap = cap;
    }
    ptensor *t = &b->t[b->nt];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return berr(b, KILN_ERR_NOMEM, "out of memory");
    t->role = (kiln_role)n->role;
    if (n->role == KILN_ROLE_METRIC) t->metric = (kiln_metric_kind)n->metric;
    t->dtype = (kiln_dtype)n->dtype;
    t->rank = n->rank;
    memcpy(t->shape, n->shape, sizeof t->shape);
    t->numel = kiln_node_numel(n);
    t->bytes = (size_t)t->numel * kiln_dtype_size(t->dtype);
    if (n->op == KILN_OP_INPUT && (n->role == KILN_ROLE_PARAM || n->role == KILN_ROLE_STATE)) {
        t->init = (int)kiln_attr_get_int(n, "init");
        t->scale = kiln_attr_get_float(n, "scale");
    }
    if (n->op == KILN_OP_CONST) {
        t->is_const = true;
        t->const_value = kiln_attr_get_float(n, "value");
    }
    *idx = b->nt++;
    return KILN_OK;
}

/* Collects the named tensors of every entry, class by class, so the table is
 * in memory order: parameters, state, interface leaves, returned values. */
static kiln_status collect_tensors(built *b)
{
    for (int cls = 0; cls < 4; cls++)
        for (int e = 0; e < b->plan.nentries; e++) {
            const kiln_graph *g = b->graphs[e];
            for (int32_t i = 0; i < g->nnodes; i++) {
                const kiln_node *n = &g->nodes[i];
                if (tensor_class(n) != cls) continue;
                const char *name = n->name ? n->name : kiln_role_name((kiln_role)n->role);
                int k = find_tensor(b, name);
                if (k < 0) {
                    kiln_status st = add_tensor(b, n, name, &k);
                    if (st) return st;
                } else {
                    const ptensor *t = &b->t[k];
                    char a[128], c[128];
                    if (t->role != (kiln_role)n->role)
                        return berr(b, KILN_ERR_INVALID, "'%s' is a %s in one entry point and a "
                                    "%s in %s: a program's named values need one role",
                                    name, kiln_role_name(t->role),
                                    kiln_role_name((kiln_role)n->role), b->plan.entries[e].name);
                    if (t->dtype != (kiln_dtype)n->dtype || t->rank != n->rank ||
                        memcmp(t->shape, n->shape, (size_t)n->rank * sizeof n->shape[0]))
                        return berr(b, KILN_ERR_SHAPE, "'%s' is %s in one entry point and %s "
                                    "in %s", name,
                                    kiln_shape_str(t->dtype, t->rank, t->shape, a, sizeof a),
                                    kiln_node_type_str(n, c, sizeof c), b->plan.entries[e].name);
                }
                b->tensor_of[e][i] = k;
            }
        }
    /* One node per name within an entry: two values named alike would share
     * one place and overwrite each other. */
    int32_t *bound = malloc((size_t)(b->nt ? b->nt : 1) * sizeof *bound);
    if (!bound) return berr(b, KILN_ERR_NOMEM, "out of memory");
    kiln_status st = KILN_OK;
    for (int e = 0; e < b->plan.nentries && !st; e++) {
        const kiln_graph *g = b->graphs[e];
        for (int i = 0; i < b->nt; i++) bound[i] = -1;
        for (int32_t i = 0; i < g->nnodes && !st; i++) {
            int k = b->tensor_of[e][i];
            if (k < 0) continue;
            if (bound[k] >= 0) {
                char d1[160], d2[160];
                st = berr(b, KILN_ERR_INVALID, "%s has two values named '%s': %s and %s",
                          b->plan.entries[e].name, b->t[k].name,
                          kiln_node_desc(g, bound[k], d1, sizeof d1),
                          kiln_node_desc(g, i, d2, sizeof d2));
            }
            bound[k] = i;
        }
    }
    free(bound);
    return st;
}

/* Offsets of the named tensors; returns the end of A's interface block. */
static void layout_tensors(built *b)
{
    int64_t end[4] = {0, 0, 0, 0};
    for (int i = 0; i < b->nt; i++) {
        ptensor *t = &b->t[i];
        t->space = t->role == KILN_ROLE_PARAM || t->model_state ? KILN_SPACE_P
                 : t->role == KILN_ROLE_STATE ? KILN_SPACE_S : KILN_SPACE_A;
        t->offset = end[t->space];
        end[t->space] += align_up((int64_t)t->bytes);
    }
    b->plan.p_bytes = (size_t)end[KILN_SPACE_P];
    b->plan.s_bytes = (size_t)end[KILN_SPACE_S];
    b->iface_bytes = (size_t)end[KILN_SPACE_A];
    b->plan.a_bytes = b->iface_bytes;
}

static kiln_status place_entry(built *b, int e)
{
    kiln_plan_entry *pe = &b->plan.entries[e];
    const kiln_graph *g = b->graphs[e];
    size_t n = (size_t)(g->nnodes ? g->nnodes : 1);
    bool *planned = calloc(n, sizeof *planned);
    int64_t *bytes = calloc(n, sizeof *bytes), *off = calloc(n, sizeof *off);
    if (!planned || !bytes || !off) {
        free(planned);
        free(bytes);
        free(off);
        return berr(b, KILN_ERR_NOMEM, "out of memory");
    }
    kiln_status st = KILN_OK;
    int64_t sum = 0;
    for (int32_t i = 0; i < g->nnodes && !st; i++) {
        const kiln_node *n = &g->nodes[i];
        kiln_place *pl = &pe->place[i];
        int k = b->tensor_of[e][i];
        if (n->op == KILN_OP_CONST) {
            pl->space = KILN_SPACE_NONE;
            pl->offset = 0;
        } else if (n->op == KILN_OP_ASSIGN) {
            *pl = pe->place[n->inputs[0]];
            if (pl->space != KILN_SPACE_P && pl->space != KILN_SPACE_S) {
                char d[160];
                st = berr(b, KILN_ERR_INTERNAL, "%s: %s does not write a parameter or state",
                          pe->name, kiln_node_desc(g, i, d, sizeof d));
            }
        } else if (k >= 0) {
            pl->space = b->t[k].space;
            pl->offset = b->t[k].offset;
        } else {
            /* an intermediate: its offset comes from the memory plan */
            pl->space = KILN_SPACE_A;
            planned[i] = true;
            bytes[i] = kiln_node_numel(n) * (int64_t)kiln_dtype_size((kiln_dtype)n->dtype);
            sum += align_up(bytes[i]);
        }
    }
    int64_t total = 0;
    if (!st) {
        /* kernels run in node order (lower_entry) */
        st = kiln_plan_memory(g, NULL, 0, planned, bytes, KILN_ALIGN, off, &total);
        if (st) st = berr(b, st, "%s: planning the intermediates' memory: %s", pe->name,
                          kiln_status_str(st));
    }
    if (!st) {
        int64_t base = (int64_t)b->iface_bytes;
        for (int32_t i = 0; i < g->nnodes; i++)
            if (planned[i]) pe->place[i].offset = base + off[i];
        if ((size_t)(base + total) > b->plan.a_bytes) b->plan.a_bytes = (size_t)(base + total);
        if ((size_t)sum > b->inter_sum) b->inter_sum = (size_t)sum;
    }
    free(planned);
    free(bytes);
    free(off);
    return st;
}

/* The entry's kernels: its fusion plan's groups lowered (passes/fuse.h). */
static kiln_status lower_entry(built *b, int e)
{
    kiln_plan_entry *pe = &b->plan.entries[e];
    const kiln_graph *g = b->graphs[e];
    kiln_fuse_options fo = {.implicit_im2col = b->implicit_im2col};
    kiln_status st = kiln_fuse(g, &fo, &b->fusion[e]);
    if (st) return berr(b, st, "%s: fusion: %s", pe->name, kiln_status_str(st));
    const kiln_fuse_plan *f = b->fusion[e];
    if (!(pe->kernels = calloc((size_t)(f->nkernels ? f->nkernels : 1), sizeof *pe->kernels)))
        return berr(b, KILN_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < f->nkernels; i++) {
        kiln_kernel *k = NULL;
        char msg[1024] = "";
        st = kiln_lower_fused(g, f, i, &k, msg, sizeof msg);
        if (st) return berr(b, st, "%s: %s", pe->name, msg[0] ? msg : kiln_status_str(st));
        pe->kernels[pe->nkernels++] = k;
    }
    return KILN_OK;
}

/* Places of an entry whose kernels run fused groups: stored group members
 * that are not named tensors are the intermediates, planned over the
 * kernels' order (a value lives from the first kernel that writes it to the
 * last that reads it); aliases take their source's place; values computed
 * inside other kernels have none. */
static kiln_status place_fused(built *b, int e)
{
    kiln_plan_entry *pe = &b->plan.entries[e];
    const kiln_graph *g = b->graphs[e];
    const kiln_fuse_plan *f = b->fusion[e];
    size_t n = (size_t)(g->nnodes ? g->nnodes : 1);
    int32_t *start = malloc(n * sizeof *start), *end = malloc(n * sizeof *end);
    int64_t *bytes = malloc(n * sizeof *bytes), *off = malloc(n * sizeof *off);
    int32_t *share = malloc(n * sizeof *share);
    kiln_status st = KILN_OK;
    if (!start || !end || !bytes || !off || !share) {
        st = berr(b, KILN_ERR_NOMEM, "out of memory");
        goto done;
    }
    int64_t sum = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *nd = &g->nodes[i];
        kiln_place *pl = &pe->place[i];
        int k = b->tensor_of[e][i];
        start[i] = end[i] = -1;
        bytes[i] = -1;
        *pl = (kiln_place){KILN_SPACE_NONE, 0};
        if (nd->op == KILN_OP_CONST) continue;
        if (nd->op == KILN_OP_ASSIGN) {
            *pl = pe->place[nd->inputs[0]];
            if (pl->space != KILN_SPACE_P && pl->space != KILN_SPACE_S) {
                char d[160];
                st = berr(b, KILN_ERR_INTERNAL, "%s: %s does not write a parameter or state",
                          pe->name, kiln_node_desc(g, i, d, sizeof d));
                goto done;
            }
        } else if (k >= 0) {
            pl->space = b->t[k].space;
            pl->offset = b->t[k].offset;
        } else if (f->fate[i] == KILN_FATE_GROUP && f->stored[i]) {
            pl->space = KILN_SPACE_A;
            bytes[i] = kiln_node_numel(nd) * (int64_t)kiln_dtype_size((kiln_dtype)nd->dtype);
            sum += align_up(bytes[i]);
        }
    }
    /* lifetimes over the kernels (an alias's use is its source's) */
    for (int32_t ki = 0; ki < pe->nkernels; ki++) {
        const kiln_kernel *k = pe->kernels[ki];
        for (int32_t j = 0; j < k->nbufs; j++) {
            int32_t x = k->bufs[j].node;
            if (x < 0) continue;
            if (f->fate[x] == KILN_FATE_ALIAS) x = f->alias_of[x];
            if (bytes[x] < 0) continue;
            if (start[x] < 0) {
                if (!k->bufs[j].written) {
                    char d[160];
                    st = berr(b, KILN_ERR_INTERNAL, "%s: kernel %s reads %s before any kernel "
                              "writes it", pe->name, k->name, kiln_node_desc(g, x, d, sizeof d));
                    goto done;
                }
                start[x] = ki;
            }
            end[x] = ki;
        }
    }
    for (int32_t i = 0; i < g->nnodes; i++)
        if (bytes[i] >= 0 && start[i] < 0) bytes[i] = -1; /* never used: no storage */
    /* in-place: a value first written by an elementwise kernel in which an
     * input of the same size dies, at the same elements, takes its storage */
    for (int32_t i = 0; i < g->nnodes; i++) share[i] = -1;
    for (int32_t ki = 0; ki < pe->nkernels; ki++) {
        const kiln_kernel *k = pe->kernels[ki];
        for (int32_t jd = 0; jd < k->nbufs; jd++) {
            int32_t x = k->bufs[jd].node;
            if (x < 0 || !k->bufs[jd].written || f->fate[x] == KILN_FATE_ALIAS || bytes[x] < 0 ||
                start[x] != ki || share[x] >= 0)
                continue;
            for (int32_t js = 0; js < k->nbufs; js++) {
                int32_t y = k->bufs[js].node;
                if (y < 0 || js == jd || k->bufs[js].written) continue;
                if (f->fate[y] == KILN_FATE_ALIAS) y = f->alias_of[y];
                while (share[y] >= 0) y = share[y];
                if (bytes[y] != bytes[x] || end[y] != ki || start[y] >= ki ||
                    !kiln_kernel_inplace_ok(k, js, jd))
                    continue;
                share[x] = y; /* x lives on in y's bytes */
                end[y] = end[x];
                bytes[x] = -1;
                break;
            }
        }
    }
    int64_t total = 0;
    st = kiln_plan_memory_spans(g->nnodes, start, end, bytes, KILN_ALIGN, off, &total);
    if (st) {
        st = berr(b, st, "%s: planning the intermediates' memory: %s", pe->name,
                  kiln_status_str(st));
        goto done;
    }
    int64_t base = (int64_t)b->iface_bytes;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (bytes[i] >= 0) pe->place[i].offset = base + off[i];
    for (int32_t i = 0; i < g->nnodes; i++) {
        int32_t r = i;
        while (share[r] >= 0) r = share[r];
        if (r != i) pe->place[i] = pe->place[r];
    }
    for (int32_t i = 0; i < g->nnodes; i++)
        if (f->fate[i] == KILN_FATE_ALIAS) pe->place[i] = pe->place[f->alias_of[i]];
    if ((size_t)(base + total) > b->plan.a_bytes) b->plan.a_bytes = (size_t)(base + total);
    if ((size_t)sum > b->inter_sum) b->inter_sum = (size_t)sum;
done:
    free(start);
    free(end);
    free(bytes);
    free(off);
    free(share);
    return st;
}

static bool has_role(const kiln_graph *g, kiln_role r) { return kiln_graph_find_role(g, r) >= 0; }

/* The forward entry: the outputs, or when there are none the loss and the
 * metrics, after dead-code elimination. */
static kiln_status forward_graph(built *b, const kiln_graph *f, kiln_graph **out)
{
    *out = NULL;
    kiln_graph *g = kiln_graph_clone(f);
    if (!g) return berr(b, KILN_ERR_NOMEM, "out of memory");
    if (has_role(g, KILN_ROLE_OUTPUT))
        for (int32_t i = 0; i < g->nnodes; i++)
            if (g->nodes[i].role == KILN_ROLE_LOSS || g->nodes[i].role == KILN_ROLE_METRIC)
                g->nodes[i].role = KILN_ROLE_NONE;
    kiln_status st = kiln_run_pass(g, "eval_mode"); /* inference: train_eval's b, no assigns */
    if (!st) st = kiln_run_pass(g, "dce");
    if (st) {
        berr(b, st, "building forward: %s", kiln_graph_error(g));
        kiln_graph_free(g);
        return st;
    }
    *out = g;
    return KILN_OK;
}

static kiln_status add_entry(built *b, int which, kiln_graph *g)
{
    int e = b->plan.nentries;
    kiln_plan_entry *pe = &b->plan.entries[e];
    memset(pe, 0, sizeof *pe);
    b->graphs[e] = g;
    pe->name = entry_names[which];
    pe->g = g;
    b->plan.nentries++;
    if (which == 0) b->ntrain = e;
    if (b->kernels) { /* convolutions into im2col, GEMMs and col2im */
        kiln_status st = kiln_run_pass(g, "conv_lower");
        if (st) return berr(b, st, "%s: conv_lower: %s", pe->name, kiln_graph_error(g));
    }
    size_t n = (size_t)(g->nnodes ? g->nnodes : 1);
    if (!(pe->place = calloc(n, sizeof *pe->place)) ||
        !(b->tensor_of[e] = malloc(n * sizeof *b->tensor_of[e])))
        return berr(b, KILN_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < g->nnodes; i++) b->tensor_of[e][i] = -1;
    return KILN_OK;
}

/* Builds the plan of a forward graph; kernels only when asked (the C
 * backend and kiln_emit_c). On failure b->err says why; the caller frees b
 * with built_free on every path. */
static kiln_status build(const kiln_graph *forward, const kiln_compile_options *opt,
                         bool kernels, built *b)
{
    memset(b, 0, sizeof *b);
    b->ntrain = -1;
    b->kernels = kernels;
    /* the LLVM backend reads no kiln_kgemm.bimg; KILN_EXPLICIT_IM2COL=1 keeps
     * the stored column matrix (for comparisons) */
    const char *ex = getenv("KILN_EXPLICIT_IM2COL");
    b->implicit_im2col = kernels && opt->backend == KILN_BACKEND_C && !(ex && *ex && strcmp(ex, "0"));
    double t0 = now_seconds();
    if (!(b->plan.entries = calloc(MAX_ENTRIES, sizeof *b->plan.entries)))
        return berr(b, KILN_ERR_NOMEM, "out of memory");
    if (opt->target) { /* NULL: the emitter uses the host */
        if (kiln_target_parse(opt->target, &b->target))
            return berr(b, KILN_ERR_INVALID,
                        "unknown target '%s' (native, avx512, avx2, neon, scalar)", opt->target);
        b->plan.target = &b->target;
    }
    kiln_graph *f = kiln_graph_clone(forward);
    if (!f) return berr(b, KILN_ERR_NOMEM, "out of memory");
    kiln_status st = kiln_graph_verify(f);
    if (st) {
        berr(b, st, "the forward graph '%s' does not verify: %s", f->name ? f->name : "?",
             kiln_graph_error(f));
        kiln_graph_free(f);
        return st;
    }
    bool loss = has_role(f, KILN_ROLE_LOSS), params = has_role(f, KILN_ROLE_PARAM);
    kiln_graph *g = NULL;
    if (loss && params) {
        st = kiln_train_program(f, &opt->train, &g);
        if (st) berr(b, st, "building train_step: %s", kiln_graph_error(f));
        else st = add_entry(b, 0, g);
    }
    if (!st && loss) {
        st = kiln_eval_program(f, &g);
        if (st) berr(b, st, "building eval_step: %s", kiln_graph_error(f));
        else st = add_entry(b, 1, g);
    }
    if (!st) {
        st = forward_graph(b, f, &g);
        if (!st) st = add_entry(b, 2, g);
    }
    kiln_graph_free(f);
    if (st) return st;
    double t1 = now_seconds();
    b->t_graphs = t1 - t0;
    if ((st = collect_tensors(b))) return st;
    /* the model's own STATE leaves (not the optimizer's) live with the parameters */
    for (int32_t i = 0; i < forward->nnodes; i++) {
        const kiln_node *n = &forward->nodes[i];
        int k = n->op == KILN_OP_INPUT && n->role == KILN_ROLE_STATE ? find_tensor(b, n->name) : -1;
        if (k >= 0) b->t[k].model_state = true;
        /* parameter groups (freezing, discriminative learning rates) */
        k = n->op == KILN_OP_INPUT && n->role == KILN_ROLE_PARAM ? find_tensor(b, n->name) : -1;
        if (k >= 0) b->t[k].group = n->group;
    }
    layout_tensors(b);
    for (int e = 0; e < b->plan.nentries; e++) {
        if (kernels) {
            double t2 = now_seconds();
            st = lower_entry(b, e);
            b->t_lower += now_seconds() - t2;
            if (st || (st = place_fused(b, e))) return st;
        } else if ((st = place_entry(b, e))) {
            return st;
        }
    }
    b->t_memplan = now_seconds() - t1 - b->t_lower;
    return KILN_OK;
}

/* ---- programs ---- */

kiln_compile_options kiln_compile_defaults(void)
{
    kiln_compile_options o;
    memset(&o, 0, sizeof o);
    o.backend = KILN_BACKEND_C;
    o.train = kiln_train_defaults();
    return o;
}

static char *tensor_data(kiln_program *p, const ptensor *t)
{
    return p->mem[t->space] + t->offset;
}

static int entry_index(const kiln_program *p, const char *entry)
{
    if (!entry) return -1;
    for (int e = 0; e < p->b.plan.nentries; e++)
        if (strcmp(p->b.plan.entries[e].name, entry) == 0) return e;
    return -1;
}

void kiln_program_free(kiln_program *p)
{
    if (!p) return;
    for (int e = 0; e < MAX_ENTRIES; e++) kiln_interp_free(p->it[e]);
    kiln_ftable_free(p->ft);
    kiln_kfuncs_free(&p->kf);
    if (p->so) kiln_so_close(p->so);
    kiln_pool_free(p->pool);
    kiln_llvm_free(p->jit);
    built_free(&p->b);
    for (int s = 0; s < 4; s++) free(p->mem[s]);
    free(p->scratch);
    free(p);
}

const char *kiln_program_error(const kiln_program *p) { return p ? p->err : "no program"; }

static int kernels_of(const kiln_graph *g)
{
    int n = 0;
    for (int32_t i = 0; i < g->nnodes; i++) n += kiln_ops[g->nodes[i].op].lower != kiln_lower_none;
    return n;
}

static double flops_of(const kiln_graph *g)
{
    double total = 0.0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (kiln_node_is_leaf(n)) continue;
        double fl = 0.0, by = 0.0;
        kiln_ops[n->op].cost(g, n, &fl, &by);
        total += fl;
    }
    return total;
}

/* The pool, the entry points and the kernels of a compiled program, from
 * `sym` (the loaded object's or the JIT's symbol lookup): entries and the
 * kiln_kernels table (codegen.h) make the function table that calls them
 * through libffi. */
static kiln_status bind_entries(kiln_program *p, const kiln_compile_options *opt,
                                void *(*sym)(void *, const char *), void *obj, char **err)
{
    double t0 = now_seconds();
    if (!(p->pool = kiln_pool_new(opt->threads))) {
        set_err(err, "kiln_compile: out of memory creating the thread pool");
        return KILN_ERR_NOMEM;
    }
    p->rt = kiln_pool_rt(p->pool);
    p->stats.threads = kiln_pool_threads(p->pool);
    for (int e = 0; e < p->b.plan.nentries; e++) {
        char name[64];
        snprintf(name, sizeof name, "kiln_%s", p->b.plan.entries[e].name);
        void *addr = sym(obj, name);
        if (!addr) {
            set_err(err, "kiln_compile: the compiled program has no entry point '%s'", name);
            return KILN_ERR_INTERNAL;
        }
        memcpy(&p->fn[e], &addr, sizeof p->fn[e]); /* object to function pointer */
    }
    void *table = sym(obj, KILN_KERNEL_TABLE);
    if (!table) {
        set_err(err, "kiln_compile: the compiled program has no kernel table '%s'",
                KILN_KERNEL_TABLE);
        return KILN_ERR_INTERNAL;
    }
    void (*eaddr[MAX_ENTRIES])(void);
    for (int e = 0; e < p->b.plan.nentries; e++)
        memcpy(&eaddr[e], &p->fn[e], sizeof eaddr[e]);
    char msg[1024];
    kiln_status st = kiln_ftable_new(&p->b.plan, p->b.fusion, &p->kf, eaddr,
                                     (void (*const *)(void))table, &p->ft, msg, sizeof msg);
    if (st) {
        set_err(err, "kiln_compile: %s", msg);
        return st;
    }
    p->times.load = now_seconds() - t0;
    return KILN_OK;
}

static void *so_sym(void *so, const char *name) { return kiln_so_sym(so, name); }
static void *jit_sym(void *jit, const char *name) { return kiln_llvm_sym(jit, name); }

/* The LLVM backend: the same plan JIT-compiled in process (codegen/llvm.h). */
static kiln_status load_llvm(kiln_program *p, const kiln_compile_options *opt, char **err)
{
    char *lerr = NULL;
    kiln_llvm_times lt;
    kiln_status st = kiln_llvm_load2(&p->b.plan, &p->kf, &p->jit, &lt, &lerr);
    p->times.emit = lt.emit;
    p->times.optimize = lt.optimize;
    p->times.compile = lt.codegen;
    p->times.parts = lt.parts;
    if (st) {
        set_err(err, "kiln_compile: %s", lerr ? lerr : kiln_status_str(st));
        free(lerr);
        p->jit = NULL;
        return st;
    }
    free(lerr);
    p->stats.cached = 0;
    return bind_entries(p, opt, jit_sym, p->jit, err);
}

static kiln_status load_c(kiln_program *p, const kiln_compile_options *opt, char **err)
{
    double t0 = now_seconds();
    char *src = kiln_emit_c_source_sigs(&p->b.plan, &p->kf);
    p->times.emit = now_seconds() - t0;
    if (!src) {
        set_err(err, "kiln_compile: out of memory writing the C source");
        return KILN_ERR_NOMEM;
    }
    kiln_cc_options cco = {.cc = opt->cc, .cache_dir = opt->cache_dir, .verbose = opt->verbose};
    char *ccerr = NULL;
    int cached = 0;
    double secs = 0.0;
    kiln_status st = kiln_cc_load(src, &cco, &p->so, &cached, &secs, &ccerr);
    p->times.compile = secs;
    p->times.cached = cached;
    free(src);
    if (st) {
        set_err(err, "kiln_compile: %s", ccerr ? ccerr : kiln_status_str(st));
        free(ccerr);
        p->so = NULL;
        return st;
    }
    free(ccerr);
    p->stats.cached = cached;
    return bind_entries(p, opt, so_sym, p->so, err);
}

static kiln_status load_ref(kiln_program *p, char **err)
{
    double t0 = now_seconds();
    int64_t most = 1;
    for (int i = 0; i < p->b.nt; i++)
        if (p->b.t[i].numel > most) most = p->b.t[i].numel;
    if (!(p->scratch = malloc((size_t)most * sizeof *p->scratch))) {
        set_err(err, "kiln_compile: out of memory");
        return KILN_ERR_NOMEM;
    }
    for (int e = 0; e < p->b.plan.nentries; e++) {
        kiln_status st = kiln_interp_new(p->b.graphs[e], &p->it[e]);
        if (st) {
            set_err(err, "kiln_compile: creating the interpreter of %s: %s",
                    p->b.plan.entries[e].name, kiln_status_str(st));
            return st;
        }
    }
    p->times.load = now_seconds() - t0;
    return KILN_OK;
}

static char *alloc_mem(size_t bytes)
{
    size_t n = bytes ? (size_t)align_up((int64_t)bytes) : KILN_ALIGN;
    char *m = aligned_alloc(KILN_ALIGN, n);
    if (m) memset(m, 0, n);
    return m;
}

kiln_status kiln_compile(const kiln_graph *forward, const kiln_compile_options *opt,
                         kiln_program **out, char **err)
{
    if (err) *err = NULL;
    if (out) *out = NULL;
    if (!forward || !out) {
        set_err(err, "kiln_compile: %s is NULL", forward ? "out" : "the graph");
        return KILN_ERR_INVALID;
    }
    kiln_compile_options defaults = kiln_compile_defaults();
    if (!opt) opt = &defaults;
    if (opt->threads < 0) {
        set_err(err, "kiln_compile: threads is %d (0 for one per core, or a positive count)",
                opt->threads);
        return KILN_ERR_INVALID;
    }
    if (opt->backend != KILN_BACKEND_C && opt->backend != KILN_BACKEND_REF &&
        opt->backend != KILN_BACKEND_LLVM) {
        set_err(err, "kiln_compile: unknown backend %d (KILN_BACKEND_C, _REF or _LLVM)",
                (int)opt->backend);
        return KILN_ERR_INVALID;
    }
    double t0 = now_seconds();
    kiln_program *p = calloc(1, sizeof *p);
    if (!p) {
        set_err(err, "kiln_compile: out of memory");
        return KILN_ERR_NOMEM;
    }
    p->backend = opt->backend;
    kiln_status st = build(forward, opt, opt->backend != KILN_BACKEND_REF, &p->b);
    if (st) {
        set_err(err, "kiln_compile: %s", p->b.err[0] ? p->b.err : kiln_status_str(st));
        kiln_program_free(p);
        return st;
    }
    const kiln_plan *plan = &p->b.plan;
    if (!(p->mem[KILN_SPACE_P] = alloc_mem(plan->p_bytes)) ||
        !(p->mem[KILN_SPACE_S] = alloc_mem(plan->s_bytes)) ||
        !(p->mem[KILN_SPACE_A] = alloc_mem(plan->a_bytes))) {
        set_err(err, "kiln_compile: out of memory allocating %zu + %zu + %zu bytes",
                plan->p_bytes, plan->s_bytes, plan->a_bytes);
        kiln_program_free(p);
        return KILN_ERR_NOMEM;
    }
    st = opt->backend == KILN_BACKEND_C      ? load_c(p, opt, err)
         : opt->backend == KILN_BACKEND_LLVM ? load_llvm(p, opt, err)
                                             : load_ref(p, err);
    if (st) {
        kiln_program_free(p);
        return st;
    }
    /* Starting values: hyperparameter defaults, and returned constants
     * (which no kernel writes). */
    for (int i = 0; i < p->b.nt; i++) {
        ptensor *t = &p->b.t[i];
        double v = 0.0;
        bool set = false;
        if (t->is_const) {
            v = t->const_value;
            set = true;
        } else if (t->role == KILN_ROLE_HPARAM) {
            for (size_t k = 0; k < sizeof hparam_defaults / sizeof hparam_defaults[0]; k++)
                if (strcmp(hparam_defaults[k].name, t->name) == 0) {
                    v = hparam_defaults[k].value;
                    set = true;
                }
            /* a parameter group's learning-rate multiplier (passes/train.c) */
            if (!strncmp(t->name, "lr_mult.", 8)) {
                v = 1.0;
                set = true;
            }
        }
        if (set)
            for (int64_t j = 0; j < t->numel; j++) kiln_elem_store(t->dtype, tensor_data(p, t), j, v);
    }
    /* stats */
    kiln_program_stats *s = &p->stats;
    s->param_bytes = plan->p_bytes;
    s->state_bytes = plan->s_bytes;
    s->arena_bytes = plan->a_bytes;
    s->interface_bytes = p->b.iface_bytes;
    s->intermediates_bytes = p->b.inter_sum;
    for (int i = 0; i < p->b.nt; i++)
        if (p->b.t[i].role == KILN_ROLE_PARAM) s->num_params += p->b.t[i].numel;
    if (p->b.ntrain >= 0) s->train_flops = flops_of(p->b.graphs[p->b.ntrain]);
    int ke = p->b.ntrain >= 0 ? p->b.ntrain : 0;
    s->num_kernels = !p->b.plan.nentries ? 0
                   : p->b.fusion[ke] ? p->b.plan.entries[ke].nkernels
                                     : kernels_of(p->b.graphs[ke]);
    if (opt->backend == KILN_BACKEND_REF) s->threads = 1;
    s->compile_seconds = now_seconds() - t0;
    p->times.graphs = p->b.t_graphs;
    p->times.lower = p->b.t_lower;
    p->times.memplan = p->b.t_memplan;
    p->times.total = s->compile_seconds;
    if (opt->verbose)
        fprintf(stderr, "kiln: compiled '%s' (%s backend%s) in %.3f s: P %zu, S %zu, A %zu bytes, "
                "%d kernels in %s, %d thread%s\n", forward->name ? forward->name : "?",
                opt->backend == KILN_BACKEND_C      ? "C"
                : opt->backend == KILN_BACKEND_LLVM ? "LLVM"
                                                    : "reference",
                s->cached ? ", cached" : "", s->compile_seconds, plan->p_bytes, plan->s_bytes,
                plan->a_bytes, s->num_kernels,
                plan->nentries ? plan->entries[ke].name : "-", s->threads,
                s->threads == 1 ? "" : "s");
    *out = p;
    return KILN_OK;
}

/* ---- running ---- */

static void load_tensor(kiln_program *p, const ptensor *t, double *v)
{
    const char *d = tensor_data(p, t);
    for (int64_t j = 0; j < t->numel; j++) v[j] = kiln_elem_load(t->dtype, d, j);
}

static void store_tensor(kiln_program *p, const ptensor *t, const double *v)
{
    char *d = tensor_data(p, t);
    for (int64_t j = 0; j < t->numel; j++) kiln_elem_store(t->dtype, d, j, v[j]);
}

static kiln_status run_ref(kiln_program *p, int e)
{
    const kiln_graph *g = p->b.graphs[e];
    const int32_t *to = p->b.tensor_of[e];
    const char *name = p->b.plan.entries[e].name;
    kiln_interp *it = p->it[e];
    for (int32_t i = 0; i < g->nnodes; i++) {
        if (g->nodes[i].op != KILN_OP_INPUT || to[i] < 0) continue;
        const ptensor *t = &p->b.t[to[i]];
        load_tensor(p, t, p->scratch);
        kiln_status st = kiln_interp_set(it, i, p->scratch, (size_t)t->numel);
        if (st) return perr(p, st, "%s: %s", name, kiln_interp_error(it));
    }
    kiln_status st = kiln_interp_run(it);
    if (st) return perr(p, st, "%s: %s", name, kiln_interp_error(it));
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *n = &g->nodes[i];
        int k = n->op == KILN_OP_ASSIGN ? to[n->inputs[0]] : n->op == KILN_OP_INPUT ? -1 : to[i];
        if (k < 0) continue;
        const double *v = kiln_interp_value(it, i);
        if (!v) return perr(p, KILN_ERR_INTERNAL, "%s: no value for node %d", name, i);
        store_tensor(p, &p->b.t[k], v);
    }
    return KILN_OK;
}

kiln_status kiln_program_run(kiln_program *p, const char *entry)
{
    if (!p) return KILN_ERR_INVALID;
    int e = entry_index(p, entry);
    if (e < 0) {
        char have[128] = "";
        size_t o = 0;
        for (int i = 0; i < p->b.plan.nentries && o < sizeof have; i++)
            o += (size_t)snprintf(have + o, sizeof have - o, "%s%s", i ? ", " : "",
                                  p->b.plan.entries[i].name);
        return perr(p, KILN_ERR_NOT_FOUND, "no entry point '%s' (this program has: %s)",
                    entry ? entry : "(null)", have);
    }
    if (p->backend == KILN_BACKEND_REF) return run_ref(p, e);
    /* through libffi, as any compiled function (runtime/ffi.c) */
    int rc = kiln_ftable_run_entry(p->ft, e, p->mem[KILN_SPACE_P], p->mem[KILN_SPACE_S],
                                   p->mem[KILN_SPACE_A], &p->rt);
    if (rc == 0) return KILN_OK;
    char msg[1024] = "";
    if (rc > 0) kiln_plan_error_message(&p->b.plan.entries[e], rc, msg, sizeof msg);
    else snprintf(msg, sizeof msg, "failed with code %d", rc);
    return perr(p, KILN_ERR_INVALID, "%s: %s", p->b.plan.entries[e].name, msg);
}

int kiln_program_has_entry(const kiln_program *p, const char *entry)
{
    return p && entry_index(p, entry) >= 0;
}

/* ---- named tensors ---- */

int kiln_program_num_tensors(const kiln_program *p) { return p ? p->b.nt : 0; }

static void fill_info(const ptensor *t, kiln_tensor_info *info)
{
    if (!info) return;
    memset(info, 0, sizeof *info);
    info->name = t->name;
    info->role = t->role;
    info->metric = t->metric;
    info->dtype = t->dtype;
    info->rank = t->rank;
    memcpy(info->shape, t->shape, sizeof info->shape);
    info->bytes = t->bytes;
    info->model_state = t->model_state;
    info->group = t->group;
}

kiln_status kiln_program_tensor(const kiln_program *p, int i, kiln_tensor_info *info)
{
    if (!p || !info) return KILN_ERR_INVALID;
    if (i < 0 || i >= p->b.nt) {
        perr((kiln_program *)p, KILN_ERR_INVALID, "tensor index %d is outside [0, %d)", i, p->b.nt);
        return KILN_ERR_INVALID;
    }
    fill_info(&p->b.t[i], info);
    return KILN_OK;
}

/* "x, y, fc1.weight, ..." of the tensors of a role (any role when role < 0),
 * into buf. */
static void list_names(const kiln_program *p, int role, char *buf, size_t len)
{
    size_t o = 0;
    int n = 0;
    buf[0] = 0;
    for (int i = 0; i < p->b.nt && o < len; i++) {
        if (role >= 0 && (int)p->b.t[i].role != role) continue;
        if (o + strlen(p->b.t[i].name) + 8 >= len) {
            snprintf(buf + o, len - o, ", ...");
            return;
        }
        o += (size_t)snprintf(buf + o, len - o, "%s%s", n++ ? ", " : "", p->b.t[i].name);
    }
}

static const ptensor *lookup(kiln_program *p, const char *name, const char *what)
{
    int k = name ? find_tensor(&p->b, name) : -1;
    if (k >= 0) return &p->b.t[k];
    char names[1024];
    list_names(p, -1, names, sizeof names);
    perr(p, KILN_ERR_NOT_FOUND, "%s: no tensor named '%s' (the program's tensors: %s)", what,
         name ? name : "(null)", names[0] ? names : "none");
    return NULL;
}

void *kiln_program_data(kiln_program *p, const char *name, kiln_tensor_info *info)
{
    if (!p) return NULL;
    const ptensor *t = lookup(p, name, "kiln_program_data");
    if (!t) return NULL;
    fill_info(t, info);
    return tensor_data(p, t);
}

static kiln_status check_size(kiln_program *p, const ptensor *t, const void *data, size_t bytes,
                              const char *what)
{
    char s[128];
    if (bytes != t->bytes)
        return perr(p, KILN_ERR_SHAPE, "%s: '%s' is %s (%zu bytes); %zu bytes given", what,
                    t->name, kiln_shape_str(t->dtype, t->rank, t->shape, s, sizeof s), t->bytes,
                    bytes);
    if (!data && bytes) return perr(p, KILN_ERR_INVALID, "%s: no data (NULL)", what);
    return KILN_OK;
}

kiln_status kiln_program_set(kiln_program *p, const char *name, const void *data, size_t bytes)
{
    if (!p) return KILN_ERR_INVALID;
    const ptensor *t = lookup(p, name, "kiln_program_set");
    if (!t) return KILN_ERR_NOT_FOUND;
    kiln_status st = check_size(p, t, data, bytes, "kiln_program_set");
    if (st) return st;
    if (bytes) memcpy(tensor_data(p, t), data, bytes);
    return KILN_OK;
}

kiln_status kiln_program_get(kiln_program *p, const char *name, void *data, size_t bytes)
{
    if (!p) return KILN_ERR_INVALID;
    const ptensor *t = lookup(p, name, "kiln_program_get");
    if (!t) return KILN_ERR_NOT_FOUND;
    kiln_status st = check_size(p, t, data, bytes, "kiln_program_get");
    if (st) return st;
    if (bytes) memcpy(data, tensor_data(p, t), bytes);
    return KILN_OK;
}

kiln_status kiln_program_set_hparam(kiln_program *p, const char *name, double v)
{
    if (!p) return KILN_ERR_INVALID;
    int k = name ? find_tensor(&p->b, name) : -1;
    if (k < 0 || p->b.t[k].role != KILN_ROLE_HPARAM) {
        char names[512];
        list_names(p, KILN_ROLE_HPARAM, names, sizeof names);
        return perr(p, KILN_ERR_NOT_FOUND, "no hyperparameter named '%s' (%s%s)",
                    name ? name : "(null)",
                    names[0] ? "the program's hyperparameters: " : "this program has none: it "
                    "has no train_step", names);
    }
    const ptensor *t = &p->b.t[k];
    for (int64_t j = 0; j < t->numel; j++) kiln_elem_store(t->dtype, tensor_data(p, t), j, v);
    return KILN_OK;
}

/* ---- initialisation ---- */

kiln_status kiln_program_init_params(kiln_program *p, uint64_t seed)
{
    if (!p) return KILN_ERR_INVALID;
    uint64_t index = 0;
    for (int i = 0; i < p->b.nt; i++) {
        const ptensor *t = &p->b.t[i];
        if (t->role != KILN_ROLE_PARAM) continue;
        kiln_rng r;
        kiln_rng_seed_stream(&r, seed, index++);
        char *d = tensor_data(p, t);
        for (int64_t j = 0; j < t->numel; j++) {
            double v;
            switch (t->init) {
            case KILN_INIT_ONES: v = 1.0; break;
            case KILN_INIT_UNIFORM: v = kiln_rng_uniform_range(&r, -t->scale, t->scale); break;
            case KILN_INIT_NORMAL: v = t->scale * kiln_rng_normal(&r); break;
            default: v = 0.0; break;
            }
            kiln_elem_store(t->dtype, d, j, v);
        }
    }
    /* model state (running statistics): its init's constant */
    for (int i = 0; i < p->b.nt; i++) {
        const ptensor *t = &p->b.t[i];
        if (!t->model_state) continue;
        double v = t->init == KILN_INIT_ONES ? 1.0 : 0.0;
        for (int64_t j = 0; j < t->numel; j++) kiln_elem_store(t->dtype, tensor_data(p, t), j, v);
    }
    return kiln_program_reset_state(p);
}

kiln_status kiln_program_reset_state(kiln_program *p)
{
    if (!p) return KILN_ERR_INVALID;
    if (p->b.plan.s_bytes) memset(p->mem[KILN_SPACE_S], 0, p->b.plan.s_bytes);
    return KILN_OK;
}

kiln_status kiln_program_stats_get(const kiln_program *p, kiln_program_stats *s)
{
    if (!p || !s) return KILN_ERR_INVALID;
    *s = p->stats;
    return KILN_OK;
}

kiln_status kiln_program_timings(const kiln_program *p, kiln_compile_timings *t)
{
    if (!p || !t) return KILN_ERR_INVALID;
    *t = p->times;
    return KILN_OK;
}

/* ---- compiled functions by name (runtime/ffi.c) ---- */

static kiln_status need_functions(kiln_program *p, const char *what)
{
    if (p->ft) return KILN_OK;
    return perr(p, KILN_ERR_UNSUPPORTED, "%s: the reference backend compiles no functions "
                "(compile with KILN_BACKEND_C or KILN_BACKEND_LLVM)", what);
}

int kiln_program_num_functions(const kiln_program *p) { return p ? kiln_ftable_count(p->ft) : 0; }

kiln_status kiln_program_function(const kiln_program *p, int i, kiln_function_info *info)
{
    if (!p || !info) return KILN_ERR_INVALID;
    if (kiln_ftable_info(p->ft, i, info))
        return perr((kiln_program *)p, KILN_ERR_INVALID, "function index %d is outside [0, %d)",
                    i, kiln_ftable_count(p->ft));
    return KILN_OK;
}

/* The index of function `name` (what: the caller, for messages), or -1 with
 * the program's error set. */
static int find_function(kiln_program *p, const char *name, const char *what)
{
    if (need_functions(p, what)) return -1;
    char msg[1024];
    int i = kiln_ftable_find(p->ft, name, msg, sizeof msg);
    if (i < 0) perr(p, KILN_ERR_NOT_FOUND, "%s: %s", what, msg);
    return i;
}

kiln_status kiln_program_find_function(kiln_program *p, const char *name, kiln_function_info *info)
{
    if (!p) return KILN_ERR_INVALID;
    int i = find_function(p, name, "kiln_program_find_function");
    if (i < 0) return p->ft ? KILN_ERR_NOT_FOUND : KILN_ERR_UNSUPPORTED;
    if (info) kiln_ftable_info(p->ft, i, info);
    return KILN_OK;
}

kiln_status kiln_program_call(kiln_program *p, const char *name, const kiln_arg *args, int nargs,
                              int *result)
{
    if (result) *result = 0;
    if (!p) return KILN_ERR_INVALID;
    int i = find_function(p, name, "kiln_program_call");
    if (i < 0) return p->ft ? KILN_ERR_NOT_FOUND : KILN_ERR_UNSUPPORTED;
    char msg[1024];
    kiln_status st = kiln_ftable_call(p->ft, i, args, nargs, &p->rt, result, msg, sizeof msg);
    if (st) return perr(p, st, "kiln_program_call: %s", msg);
    return KILN_OK;
}

kiln_status kiln_program_args(kiln_program *p, const char *name, kiln_arg *args, int max,
                              int *nargs)
{
    if (nargs) *nargs = 0;
    if (!p) return KILN_ERR_INVALID;
    int i = find_function(p, name, "kiln_program_args");
    if (i < 0) return p->ft ? KILN_ERR_NOT_FOUND : KILN_ERR_UNSUPPORTED;
    char msg[1024];
    kiln_status st = kiln_ftable_args(p->ft, i, p->mem, args, max, nargs, msg, sizeof msg);
    if (st) return perr(p, st, "kiln_program_args: %s", msg);
    return KILN_OK;
}

/* ---- emitting ---- */

char *kiln_plan_kernels(const kiln_graph *forward, const kiln_compile_options *opt, char **err)
{
    if (err) *err = NULL;
    if (!forward) {
        set_err(err, "kiln_plan_kernels: the graph is NULL");
        return NULL;
    }
    kiln_compile_options defaults = kiln_compile_defaults();
    if (!opt) opt = &defaults;
    built *b = malloc(sizeof *b);
    if (!b) {
        set_err(err, "kiln_plan_kernels: out of memory");
        return NULL;
    }
    kiln_kfuncs kf = {0};
    kiln_sbuf out = {0};
    char *src = NULL;
    kiln_status st = build(forward, opt, true, b);
    if (st) {
        set_err(err, "kiln_plan_kernels: %s", b->err[0] ? b->err : kiln_status_str(st));
    } else if (!(src = kiln_emit_c_source_sigs(&b->plan, &kf))) {
        set_err(err, "kiln_plan_kernels: out of memory");
    } else {
        for (int i = 0; i < kf.n; i++) {
            const kiln_plan_entry *e = &b->plan.entries[kf.f[i].entry];
            kiln_sb_printf(&out, "%-10s %3d  %-32s %s\n", e->name, (int)kf.f[i].kernel,
                           kf.f[i].name, e->kernels[kf.f[i].kernel]->comment);
        }
        if (!out.p && !out.oom && !(out.p = strdup(""))) out.oom = true;
        if (out.oom) {
            free(out.p);
            out.p = NULL;
            set_err(err, "kiln_plan_kernels: out of memory");
        }
    }
    free(src);
    kiln_kfuncs_free(&kf);
    built_free(b);
    free(b);
    return out.p;
}

char *kiln_emit_c(const kiln_graph *forward, const kiln_compile_options *opt, char **err)
{
    if (err) *err = NULL;
    if (!forward) {
        set_err(err, "kiln_emit_c: the graph is NULL");
        return NULL;
    }
    kiln_compile_options defaults = kiln_compile_defaults();
    if (!opt) opt = &defaults;
    built *b = malloc(sizeof *b);
    if (!b) {
        set_err(err, "kiln_emit_c: out of memory");
        return NULL;
    }
    char *src = NULL;
    kiln_status st = build(forward, opt, true, b);
    if (st) set_err(err, "kiln_emit_c: %s", b->err[0] ? b->err : kiln_status_str(st));
    else if (!(src = kiln_emit_c_source(&b->plan)))
        set_err(err, "kiln_emit_c: out of memory writing the C source");
    built_free(b);
    free(b);
    return src;
}

kiln_status kiln_plan_stats(const kiln_graph *forward, const kiln_compile_options *opt,
                            kiln_program_stats *s, char **err)
{
    if (err) *err = NULL;
    if (!forward || !s) {
        set_err(err, "kiln_plan_stats: NULL argument");
        return KILN_ERR_INVALID;
    }
    memset(s, 0, sizeof *s);
    kiln_compile_options defaults = kiln_compile_defaults();
    if (!opt) opt = &defaults;
    built *b = malloc(sizeof *b);
    if (!b) {
        set_err(err, "kiln_plan_stats: out of memory");
        return KILN_ERR_NOMEM;
    }
    kiln_status st = build(forward, opt, true, b);
    if (st) {
        set_err(err, "kiln_plan_stats: %s", b->err[0] ? b->err : kiln_status_str(st));
    } else {
        s->param_bytes = b->plan.p_bytes;
        s->state_bytes = b->plan.s_bytes;
        s->arena_bytes = b->plan.a_bytes;
        s->interface_bytes = b->iface_bytes;
        s->intermediates_bytes = b->inter_sum;
        for (int i = 0; i < b->nt; i++)
            if (b->t[i].role == KILN_ROLE_PARAM) s->num_params += b->t[i].numel;
        int ke = b->ntrain >= 0 ? b->ntrain : 0;
        if (b->ntrain >= 0) s->train_flops = flops_of(b->graphs[b->ntrain]);
        s->num_kernels = b->plan.nentries ? b->plan.entries[ke].nkernels : 0;
    }
    built_free(b);
    free(b);
    return st;
}

/* ---- ahead-of-time artifacts (runtime/aot_internal.h) ---- */

#include "runtime/aot_internal.h"

void kiln_aot_plan_free(kiln_aot_plan *p)
{
    if (!p) return;
    free(p->source);
    for (int i = 0; i < p->nt; i++) free(p->t[i].name);
    free(p->t);
    free(p->cflags);
    memset(p, 0, sizeof *p);
}

kiln_status kiln_aot_plan_build(const kiln_graph *forward, const kiln_compile_options *opt,
                                kiln_aot_plan_hook hook, void *user, kiln_aot_plan *out,
                                char **err)
{
    if (err) *err = NULL;
    if (!forward || !out) {
        set_err(err, "kiln_aot_plan_build: NULL argument");
        return KILN_ERR_INVALID;
    }
    memset(out, 0, sizeof *out);
    kiln_compile_options defaults = kiln_compile_defaults();
    if (!opt) opt = &defaults;
    built *b = malloc(sizeof *b);
    if (!b) {
        set_err(err, "out of memory");
        return KILN_ERR_NOMEM;
    }
    kiln_compile_options o2 = *opt;
    if (hook) o2.backend = KILN_BACKEND_LLVM; /* the hook builds the kernels with LLVM */
    kiln_status st = build(forward, &o2, true, b);
    int e = -1;
    for (int i = 0; !st && i < b->plan.nentries; i++)
        if (!strcmp(b->plan.entries[i].name, "forward")) e = i;
    if (st) {
        set_err(err, "%s", b->err[0] ? b->err : kiln_status_str(st));
    } else if (e < 0) {
        set_err(err, "the program has no forward entry");
        st = KILN_ERR_INTERNAL;
    } else {
        const kiln_plan_entry *pe = &b->plan.entries[e];
        const kiln_graph *g = b->graphs[e];
        /* the arena the forward entry alone needs */
        int64_t a_end = (int64_t)b->iface_bytes;
        for (int32_t i = 0; i < g->nnodes; i++) {
            if (pe->place[i].space != KILN_SPACE_A) continue;
            int64_t nb = kiln_node_numel(&g->nodes[i]) *
                         (int64_t)kiln_dtype_size((kiln_dtype)g->nodes[i].dtype);
            if (pe->place[i].offset + align_up(nb) > a_end) a_end = pe->place[i].offset + align_up(nb);
        }
        kiln_plan one = b->plan;
        one.entries = &b->plan.entries[e];
        one.nentries = 1;
        one.s_bytes = 0;
        one.a_bytes = (size_t)a_end;
        out->p_bytes = b->plan.p_bytes;
        out->a_bytes = (size_t)a_end;
        out->source = kiln_emit_c_source(&one);
        out->cflags = strdup(opt->target && strcmp(opt->target, "native") ? b->target.cflags
                                                                         : "-march=native");
        out->t = calloc((size_t)(b->nt ? b->nt : 1), sizeof *out->t);
        if (!out->source || !out->cflags || !out->t) {
            set_err(err, "out of memory");
            st = KILN_ERR_NOMEM;
        }
        if (!st && hook) st = hook(&one, user, err); /* the LLVM object (runtime/aot.c) */
        for (int k = 0; !st && k < b->nt; k++) {
            const ptensor *t = &b->t[k];
            /* parameters all; leaves the entry reads; values it returns */
            bool used = t->role == KILN_ROLE_PARAM;
            for (int32_t i = 0; i < g->nnodes && !used; i++) {
                if (b->tensor_of[e][i] != k) continue;
                if (g->nodes[i].op != KILN_OP_INPUT) used = true;
                for (int32_t j = i + 1; j < g->nnodes && !used; j++)
                    for (int32_t q = 0; q < g->nodes[j].ninputs; q++)
                        used |= g->nodes[j].inputs[q] == i;
            }
            if (!used) continue;
            kiln_aot_tensor *a = &out->t[out->nt];
            if (!(a->name = strdup(t->name))) {
                set_err(err, "out of memory");
                st = KILN_ERR_NOMEM;
                break;
            }
            out->nt++;
            a->role = t->role;
            a->dtype = t->dtype;
            a->rank = t->rank;
            memcpy(a->shape, t->shape, sizeof a->shape);
            a->bytes = t->bytes;
            a->space = t->space;
            a->offset = t->offset;
            a->is_const = t->is_const;
            a->const_value = t->const_value;
        }
    }
    built_free(b);
    free(b);
    if (st) kiln_aot_plan_free(out);
    return st;
}
