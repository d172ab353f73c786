/* ir/kernel.c — kernel IR storage, the kiln_kb builder that lowering rules
 * use, the generic pointwise lowering, and a debug printer. */
#include "ir/kernel.h"
#include "ir/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KB_MAX_DEPTH 16

struct kiln_kb {
    const kiln_graph *g;
    int32_t node;
    kiln_kernel *k;
    kiln_status st;
    char err[512];
    /* open loops: the loop statement, and the last statement of its body */
    int32_t loop[KB_MAX_DEPTH], last[KB_MAX_DEPTH + 1];
    int depth;
    /* fused lowering: virtual buffers, and the coordinates behind index
     * expressions of virtual buffers */
    const kiln_kb_hooks *hooks;
    kiln_kb_hooks hooks_copy;
    struct vidx {
        int32_t expr, node;
        int32_t coords[KILN_MAX_RANK];
    } *vidx;
    int32_t nvidx, cap_vidx;
    bool heap; /* made by kiln_kb_new */
};

void kiln_kernel_free(kiln_kernel *k)
{
    if (!k) return;
    free(k->bufs);
    free(k->exprs);
    free(k->stmts);
    free(k->local_dtype);
    free(k->gemms);
    free(k);
}

static int32_t fail(kiln_kb *kb, kiln_status st, const char *msg)
{
    if (!kb->st) {
        kb->st = st;
        snprintf(kb->err, sizeof kb->err, "%s", msg);
    }
    return st;
}

kiln_status kiln_kb_status(const kiln_kb *kb) { return kb->st; }
const kiln_graph *kiln_kb_graph(const kiln_kb *kb) { return kb->g; }
int32_t kiln_kb_node(const kiln_kb *kb) { return kb->node; }

int32_t kiln_kb_buf(kiln_kb *kb, int32_t node)
{
    if (node < 0 || node >= kb->g->nnodes) return fail(kb, KILN_ERR_INTERNAL, "bad buffer node");
    if (kb->hooks && kb->hooks->is_virtual(kb->hooks->ctx, node)) return KILN_KB_VBUF + node;
    kiln_kernel *k = kb->k;
    for (int32_t i = 0; i < k->nbufs; i++)
        if (k->bufs[i].node == node) return i;
    kiln_kbuf *nb = realloc(k->bufs, (size_t)(k->nbufs + 1) * sizeof *nb);
    if (!nb) return fail(kb, KILN_ERR_NOMEM, "out of memory");
    k->bufs = nb;
    const kiln_node *n = &kb->g->nodes[node];
    kiln_kbuf *b = &k->bufs[k->nbufs];
    memset(b, 0, sizeof *b);
    b->node = node;
    b->dtype = n->dtype;
    b->rank = n->rank;
    memcpy(b->shape, n->shape, sizeof b->shape);
    return k->nbufs++;
}

int32_t kiln_kb_out(kiln_kb *kb) { return kiln_kb_buf(kb, kb->node); }

int32_t kiln_kb_scratch(kiln_kb *kb, kiln_dtype t, int64_t n)
{
    if (kb->st) return kb->st;
    if (n < 1) return fail(kb, KILN_ERR_INTERNAL, "scratch of no elements");
    kiln_kernel *k = kb->k;
    kiln_kbuf *nb = realloc(k->bufs, (size_t)(k->nbufs + 1) * sizeof *nb);
    if (!nb) return fail(kb, KILN_ERR_NOMEM, "out of memory");
    k->bufs = nb;
    kiln_kbuf *b = &k->bufs[k->nbufs];
    memset(b, 0, sizeof *b);
    b->node = -1;
    b->dtype = (uint8_t)t;
    b->rank = 1;
    b->shape[0] = n;
    return k->nbufs++;
}

static bool is_vbuf(const kiln_kb *kb, int32_t buf)
{
    return buf >= KILN_KB_VBUF && buf - KILN_KB_VBUF < kb->g->nnodes;
}

int32_t kiln_kb_in(kiln_kb *kb, int k)
{
    const kiln_node *n = &kb->g->nodes[kb->node];
    if (k < 0 || k >= n->ninputs) return fail(kb, KILN_ERR_INTERNAL, "bad input index");
    return kiln_kb_buf(kb, n->inputs[k]);
}

static int32_t new_expr(kiln_kb *kb, kiln_kexpr e)
{
    if (kb->st) return kb->st;
    kiln_kernel *k = kb->k;
    if (k->nexprs == k->cap_exprs) {
        int32_t cap = k->cap_exprs ? k->cap_exprs * 2 : 64;
        kiln_kexpr *ne = realloc(k->exprs, (size_t)cap * sizeof *ne);
        if (!ne) return fail(kb, KILN_ERR_NOMEM, "out of memory");
        k->exprs = ne;
        k->cap_exprs = cap;
    }
    k->exprs[k->nexprs] = e;
    return k->nexprs++;
}

static int32_t new_stmt(kiln_kb *kb, kiln_kstmt s)
{
    if (kb->st) return kb->st;
    kiln_kernel *k = kb->k;
    if (k->nstmts == k->cap_stmts) {
        int32_t cap = k->cap_stmts ? k->cap_stmts * 2 : 32;
        kiln_kstmt *ns = realloc(k->stmts, (size_t)cap * sizeof *ns);
        if (!ns) return fail(kb, KILN_ERR_NOMEM, "out of memory");
        k->stmts = ns;
        k->cap_stmts = cap;
    }
    s.body = -1;
    s.next = -1;
    int32_t id = k->nstmts++;
    k->stmts[id] = s;
    /* link into the innermost open list */
    int32_t prev = kb->last[kb->depth];
    if (prev >= 0) k->stmts[prev].next = id;
    else if (kb->depth == 0) k->body = id;
    else k->stmts[kb->loop[kb->depth - 1]].body = id;
    kb->last[kb->depth] = id;
    return id;
}

int32_t kiln_kb_loop(kiln_kb *kb, int64_t extent)
{
    if (kb->depth == KB_MAX_DEPTH) return fail(kb, KILN_ERR_UNSUPPORTED, "loops nested too deep");
    kiln_kstmt s = {.kind = KS_LOOP, .extent = extent, .var = kb->k->nvars};
    int32_t id = new_stmt(kb, s);
    if (id < 0) return id;
    kb->k->nvars++;
    kb->loop[kb->depth++] = id;
    kb->last[kb->depth] = -1;
    return kb->k->stmts[id].var;
}

int32_t kiln_kb_gemm(kiln_kb *kb, kiln_kgemm *g)
{
    if (kb->st) return kb->st;
    if (kb->depth == KB_MAX_DEPTH) return fail(kb, KILN_ERR_UNSUPPORTED, "loops nested too deep");
    kiln_kernel *k = kb->k;
    if (g->a < 0 || g->a >= k->nbufs || g->b < 0 || g->b >= k->nbufs || g->c < 0 ||
        g->c >= k->nbufs)
        return fail(kb, KILN_ERR_INTERNAL, "a GEMM of bad buffers");
    kiln_kgemm *ng = realloc(k->gemms, (size_t)(k->ngemms + 1) * sizeof *ng);
    if (!ng) return fail(kb, KILN_ERR_NOMEM, "out of memory");
    k->gemms = ng;
    g->var_i = k->nvars++;
    g->var_j = k->nvars++;
    k->bufs[g->c].written = 1;
    ng[k->ngemms] = *g;
    kiln_kstmt s = {.kind = KS_GEMM, .index = k->ngemms};
    int32_t id = new_stmt(kb, s);
    if (id < 0) return id;
    k->ngemms++;
    kb->loop[kb->depth++] = id;
    kb->last[kb->depth] = -1;
    return id;
}

void kiln_kb_unvector(kiln_kb *kb)
{
    for (int d = 0; d < kb->depth; d++) kb->k->stmts[kb->loop[d]].vector = 0;
}

int kiln_kb_depth(const kiln_kb *kb) { return kb->depth; }

const kiln_kernel *kiln_kb_kernel(const kiln_kb *kb) { return kb->k; }

kiln_status kiln_kb_fail(kiln_kb *kb, kiln_status st, const char *msg)
{
    return (kiln_status)fail(kb, st, msg);
}

kiln_kb *kiln_kb_new(const kiln_graph *g, int32_t node, const char *name,
                     const kiln_kb_hooks *hooks)
{
    kiln_kb *kb = calloc(1, sizeof *kb);
    kiln_kernel *k = calloc(1, sizeof *k);
    if (!kb || !k) {
        free(kb);
        free(k);
        return NULL;
    }
    k->body = -1;
    k->node = node;
    snprintf(k->name, sizeof k->name, "%s", name);
    kb->g = g;
    kb->node = node;
    kb->k = k;
    kb->last[0] = -1;
    kb->heap = true;
    if (hooks) {
        kb->hooks_copy = *hooks;
        kb->hooks = &kb->hooks_copy;
    }
    return kb;
}

void kiln_kb_set_node(kiln_kb *kb, int32_t node) { kb->node = node; }

kiln_status kiln_kb_finish(kiln_kb *kb, kiln_kernel **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!kb) return KILN_ERR_NOMEM;
    kiln_status st = kb->st;
    if (!st && kb->depth != 0) st = fail(kb, KILN_ERR_INTERNAL, "a loop was left open");
    if (st) {
        snprintf(err, errlen, "%s", kb->err[0] ? kb->err : kiln_status_str(st));
        kiln_kernel_free(kb->k);
    } else {
        *out = kb->k;
    }
    free(kb->vidx);
    free(kb);
    return st;
}

void kiln_kb_end(kiln_kb *kb)
{
    if (kb->depth == 0) {
        fail(kb, KILN_ERR_INTERNAL, "kiln_kb_end without a loop");
        return;
    }
    kb->depth--;
}

void kiln_kb_hint(kiln_kb *kb, int vector, int parallel)
{
    if (kb->depth == 0) {
        fail(kb, KILN_ERR_INTERNAL, "kiln_kb_hint outside a loop");
        return;
    }
    kiln_kstmt *s = &kb->k->stmts[kb->loop[kb->depth - 1]];
    s->vector = (uint8_t)vector;
    s->parallel = (uint8_t)parallel;
}

static bool bad_operand(kiln_kb *kb, int32_t e)
{
    if (e < 0) {
        if (!kb->st) fail(kb, (kiln_status)e, "bad operand");
        return true;
    }
    if (e >= kb->k->nexprs) {
        fail(kb, KILN_ERR_INTERNAL, "operand out of range");
        return true;
    }
    return false;
}

static const struct vidx *find_vidx(kiln_kb *kb, int32_t buf, int32_t index, struct vidx *tmp);

void kiln_kb_store(kiln_kb *kb, int32_t buf, int32_t index, int32_t value)
{
    if (bad_operand(kb, index) || bad_operand(kb, value)) return;
    if (is_vbuf(kb, buf)) {
        struct vidx tmp;
        const struct vidx *v = find_vidx(kb, buf, index, &tmp);
        if (v) kb->hooks->store_at(kb, kb->hooks->ctx, v->node, v->coords, value);
        return;
    }
    if (buf < 0 || buf >= kb->k->nbufs) {
        fail(kb, KILN_ERR_INTERNAL, "store to a bad buffer");
        return;
    }
    kb->k->bufs[buf].written = 1;
    kiln_kstmt s = {.kind = KS_STORE, .buf = buf, .index = index, .value = value};
    new_stmt(kb, s);
}

int32_t kiln_kb_local(kiln_kb *kb, kiln_dtype t)
{
    if (kb->st) return kb->st;
    kiln_kernel *k = kb->k;
    uint8_t *nl = realloc(k->local_dtype, (size_t)(k->nlocals + 1));
    if (!nl) return fail(kb, KILN_ERR_NOMEM, "out of memory");
    k->local_dtype = nl;
    nl[k->nlocals] = (uint8_t)t;
    return k->nlocals++;
}

void kiln_kb_set(kiln_kb *kb, int32_t local, int32_t value)
{
    if (bad_operand(kb, value)) return;
    if (local < 0 || local >= kb->k->nlocals) {
        fail(kb, KILN_ERR_INTERNAL, "set of a bad local");
        return;
    }
    kiln_kstmt s = {.kind = KS_SET, .var = local, .value = value};
    new_stmt(kb, s);
}

void kiln_kb_check(kiln_kb *kb, int32_t cond, const char *message)
{
    if (bad_operand(kb, cond)) return;
    kiln_kernel *k = kb->k;
    if (k->nchecks == 4) {
        fail(kb, KILN_ERR_UNSUPPORTED, "more than 4 checks in one kernel");
        return;
    }
    k->check_msg[k->nchecks++] = message;
    kiln_kstmt s = {.kind = KS_CHECK, .value = cond, .index = k->nchecks};
    new_stmt(kb, s);
}

int32_t kiln_kx_float(kiln_kb *kb, double v, kiln_dtype t)
{
    /* .i only means something for integer dtypes; inf and NaN have none */
    kiln_kexpr e = {.op = KX_CONST, .dtype = (uint8_t)t, .f = v,
                    .i = isfinite(v) && fabs(v) < 9.2e18 ? (int64_t)v : 0};
    return new_expr(kb, e);
}

int32_t kiln_kx_int(kiln_kb *kb, int64_t v)
{
    kiln_kexpr e = {.op = KX_CONST, .dtype = KILN_I64, .f = (double)v, .i = v};
    return new_expr(kb, e);
}

int32_t kiln_kx_var(kiln_kb *kb, int32_t var)
{
    if (var < 0 || var >= kb->k->nvars) return fail(kb, KILN_ERR_INTERNAL, "bad loop variable");
    kiln_kexpr e = {.op = KX_VAR, .dtype = KILN_I64, .a = var};
    return new_expr(kb, e);
}

int32_t kiln_kx_local(kiln_kb *kb, int32_t local)
{
    if (local < 0 || local >= kb->k->nlocals) return fail(kb, KILN_ERR_INTERNAL, "bad local");
    kiln_kexpr e = {.op = KX_LOCAL, .dtype = kb->k->local_dtype[local], .a = local};
    return new_expr(kb, e);
}

int32_t kiln_kx_load(kiln_kb *kb, int32_t buf, int32_t index)
{
    if (bad_operand(kb, index)) return kb->st;
    if (is_vbuf(kb, buf)) {
        struct vidx tmp;
        const struct vidx *v = find_vidx(kb, buf, index, &tmp);
        if (!v) return kb->st;
        int32_t coords[KILN_MAX_RANK];
        memcpy(coords, v->coords, sizeof coords); /* value_at may grow kb->vidx */
        return kb->hooks->value_at(kb, kb->hooks->ctx, v->node, coords);
    }
    if (buf < 0 || buf >= kb->k->nbufs) return fail(kb, KILN_ERR_INTERNAL, "load of a bad buffer");
    kiln_kexpr e = {.op = KX_LOAD, .dtype = kb->k->bufs[buf].dtype, .a = buf, .b = index};
    return new_expr(kb, e);
}

static bool is_bool_op(kiln_kx_op op)
{
    return (op >= KX_LT && op <= KX_OR) || op == KX_NOT || op == KX_ISNAN;
}

int32_t kiln_kx_bin(kiln_kb *kb, kiln_kx_op op, int32_t a, int32_t b)
{
    if (bad_operand(kb, a) || bad_operand(kb, b)) return kb->st;
    if (op < KX_ADD || op > KX_OR) return fail(kb, KILN_ERR_INTERNAL, "not a binary op");
    uint8_t ta = kb->k->exprs[a].dtype;
    kiln_kexpr e = {.op = (uint8_t)op, .dtype = is_bool_op(op) ? KILN_BOOL : ta, .a = a, .b = b};
    return new_expr(kb, e);
}

int32_t kiln_kx_un(kiln_kb *kb, kiln_kx_op op, int32_t a)
{
    if (bad_operand(kb, a)) return kb->st;
    if (op < KX_NEG || op > KX_ISNAN) return fail(kb, KILN_ERR_INTERNAL, "not a unary op");
    kiln_kexpr e = {.op = (uint8_t)op, .dtype = is_bool_op(op) ? KILN_BOOL : kb->k->exprs[a].dtype,
                    .a = a};
    return new_expr(kb, e);
}

int32_t kiln_kx_select(kiln_kb *kb, int32_t c, int32_t a, int32_t b)
{
    if (bad_operand(kb, c) || bad_operand(kb, a) || bad_operand(kb, b)) return kb->st;
    kiln_kexpr e = {.op = KX_SELECT, .dtype = kb->k->exprs[a].dtype, .a = c, .b = a, .c = b};
    return new_expr(kb, e);
}

int32_t kiln_kx_cast(kiln_kb *kb, int32_t a, kiln_dtype t)
{
    if (bad_operand(kb, a)) return kb->st;
    if (kb->k->exprs[a].dtype == t) return a;
    kiln_kexpr e = {.op = KX_CAST, .dtype = (uint8_t)t, .a = a};
    return new_expr(kb, e);
}

int32_t kiln_kx_hash(kiln_kb *kb, int32_t a, int32_t b)
{
    if (bad_operand(kb, a) || bad_operand(kb, b)) return kb->st;
    if (kiln_dtype_is_float((kiln_dtype)kb->k->exprs[a].dtype) ||
        kiln_dtype_is_float((kiln_dtype)kb->k->exprs[b].dtype))
        return fail(kb, KILN_ERR_INTERNAL, "hash of a float");
    a = kiln_kx_cast(kb, a, KILN_I64);
    b = kiln_kx_cast(kb, b, KILN_I64);
    kiln_kexpr e = {.op = KX_HASH, .dtype = KILN_I64, .a = a, .b = b};
    return new_expr(kb, e);
}

int32_t kiln_kx_index(kiln_kb *kb, int32_t buf, int rank, const int32_t *idx)
{
    if (kb->st) return kb->st;
    if (is_vbuf(kb, buf)) {
        const kiln_node *n = &kb->g->nodes[buf - KILN_KB_VBUF];
        if (n->rank > rank) return fail(kb, KILN_ERR_INTERNAL, "index rank below the buffer's rank");
        if (kb->nvidx == kb->cap_vidx) {
            int32_t cap = kb->cap_vidx ? 2 * kb->cap_vidx : 32;
            struct vidx *nv = realloc(kb->vidx, (size_t)cap * sizeof *nv);
            if (!nv) return fail(kb, KILN_ERR_NOMEM, "out of memory");
            kb->vidx = nv;
            kb->cap_vidx = cap;
        }
        struct vidx *v = &kb->vidx[kb->nvidx];
        memset(v, 0, sizeof *v);
        v->node = buf - KILN_KB_VBUF;
        int32_t zero = -1;
        for (int d = 0; d < n->rank; d++) {
            if (n->shape[d] == 1) {
                if (zero < 0) zero = kiln_kx_int(kb, 0);
                v->coords[d] = zero;
            } else {
                v->coords[d] = idx[d + rank - n->rank];
            }
        }
        /* the element's flat row-major index (what arithmetic on it means) */
        int32_t off = -1;
        int64_t stride = 1;
        for (int d = n->rank - 1; d >= 0; d--) {
            if (n->shape[d] != 1) {
                int32_t term = v->coords[d];
                if (stride != 1) term = kiln_kx_bin(kb, KX_MUL, term, kiln_kx_int(kb, stride));
                off = off < 0 ? term : kiln_kx_bin(kb, KX_ADD, term, off);
            }
            stride *= n->shape[d];
        }
        if (off < 0) off = kiln_kx_int(kb, 0);
        if (kb->st) return kb->st;
        v = &kb->vidx[kb->nvidx]; /* (no realloc since; kept for clarity) */
        v->expr = off;
        kb->nvidx++;
        return v->expr;
    }
    if (buf < 0 || buf >= kb->k->nbufs) return fail(kb, KILN_ERR_INTERNAL, "index of a bad buffer");
    const kiln_kbuf *b = &kb->k->bufs[buf];
    if (b->rank > rank) return fail(kb, KILN_ERR_INTERNAL, "index rank below the buffer's rank");
    int32_t off = -1;
    int64_t stride = 1;
    /* sum over dims of idx * stride, innermost first; size-1 dims read 0 */
    for (int d = b->rank - 1; d >= 0; d--) {
        if (b->shape[d] != 1) {
            int32_t term = idx[d + rank - b->rank];
            if (stride != 1) term = kiln_kx_bin(kb, KX_MUL, term, kiln_kx_int(kb, stride));
            off = off < 0 ? term : kiln_kx_bin(kb, KX_ADD, term, off);
        }
        stride *= b->shape[d];
    }
    return off < 0 ? kiln_kx_int(kb, 0) : off;
}

/* The coordinates behind index expression `index` of virtual buffer buf:
 * recorded by kiln_kx_index, or recovered from a flat row-major index that a
 * rule computed by hand (div and mod by the strides). */
static const struct vidx *find_vidx(kiln_kb *kb, int32_t buf, int32_t index, struct vidx *tmp)
{
    int32_t node = buf - KILN_KB_VBUF;
    for (int32_t i = kb->nvidx - 1; i >= 0; i--)
        if (kb->vidx[i].expr == index && kb->vidx[i].node == node) return &kb->vidx[i];
    const kiln_node *n = &kb->g->nodes[node];
    memset(tmp, 0, sizeof *tmp);
    tmp->node = node;
    int64_t stride = 1;
    for (int d = n->rank - 1; d >= 0; d--) {
        int32_t q = stride == 1 ? index : kiln_kx_bin(kb, KX_DIV, index, kiln_kx_int(kb, stride));
        tmp->coords[d] = d == 0 ? q : kiln_kx_bin(kb, KX_MOD, q, kiln_kx_int(kb, n->shape[d]));
        stride *= n->shape[d];
    }
    return kb->st ? NULL : tmp;
}

int32_t kiln_kx_load_at(kiln_kb *kb, int32_t buf, int rank, const int32_t *idx)
{
    return kiln_kx_load(kb, buf, kiln_kx_index(kb, buf, rank, idx));
}

/* ---- lowering ---- */

kiln_status kiln_lower_none(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    (void)kb;
    (void)g;
    (void)node;
    return KILN_OK;
}

int32_t kiln_noscalar(kiln_kb *kb, const kiln_node *n, const int32_t *in)
{
    (void)in;
    char msg[128];
    snprintf(msg, sizeof msg, "op '%s' has no scalar rule", kiln_ops[n->op].name);
    return fail(kb, KILN_ERR_INTERNAL, msg);
}

kiln_status kiln_lower_pointwise(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    /* assign writes its destination's storage: its output is that buffer */
    int32_t out = n->op == KILN_OP_ASSIGN ? kiln_kb_buf(kb, n->inputs[0]) : kiln_kb_out(kb);
    int32_t idx[KILN_MAX_RANK], in[64];
    if (n->ninputs > 64) return fail(kb, KILN_ERR_UNSUPPORTED, "too many inputs");
    for (int d = 0; d < n->rank; d++) {
        idx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, n->shape[d]));
        /* every iteration writes its own elements: the pool may split it */
        if (d == 0) kiln_kb_hint(kb, 0, 1);
    }
    for (int j = 0; j < n->ninputs; j++)
        in[j] = kiln_kx_load_at(kb, kiln_kb_in(kb, j), n->rank, idx);
    int32_t v = kiln_ops[n->op].scalar(kb, n, in);
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, idx), kiln_kx_cast(kb, v, n->dtype));
    for (int d = 0; d < n->rank; d++) kiln_kb_end(kb);
    return kb->st;
}

kiln_status kiln_lower_node(const kiln_graph *g, int32_t node, kiln_kernel **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    const kiln_node *n = &g->nodes[node];
    const kiln_op_info *info = &kiln_ops[n->op];
    if (info->lower == kiln_lower_none) return KILN_OK;
    kiln_kernel *k = calloc(1, sizeof *k);
    if (!k) return KILN_ERR_NOMEM;
    k->body = -1;
    k->node = node;
    snprintf(k->name, sizeof k->name, "k%d_%s", node, info->name);
    kiln_kb kb = {.g = g, .node = node, .k = k};
    kb.last[0] = -1;
    kiln_status st = info->lower(&kb, g, node);
    if (!st) st = kb.st;
    if (!st && kb.depth != 0) st = fail(&kb, KILN_ERR_INTERNAL, "a loop was left open");
    if (st) {
        char d[160];
        snprintf(err, errlen, "lowering %s: %s", kiln_node_desc(g, node, d, sizeof d),
                 kb.err[0] ? kb.err : kiln_status_str(st));
        kiln_kernel_free(k);
        return st;
    }
    /* the comment: op, input and output types, source */
    char t[128];
    size_t o = (size_t)snprintf(k->comment, sizeof k->comment, "%s(", info->name);
    for (int j = 0; j < n->ninputs && o < sizeof k->comment; j++)
        o += (size_t)snprintf(k->comment + o, sizeof k->comment - o, "%s%s", j ? ", " : "",
                              kiln_node_type_str(&g->nodes[n->inputs[j]], t, sizeof t));
    if (o < sizeof k->comment)
        o += (size_t)snprintf(k->comment + o, sizeof k->comment - o, ") -> %s",
                              kiln_node_type_str(n, t, sizeof t));
    if (n->loc.file && o < sizeof k->comment)
        snprintf(k->comment + o, sizeof k->comment - o, "  [%s:%d:%d]", n->loc.file, n->loc.line,
                 n->loc.col);
    *out = k;
    return KILN_OK;
}

/* ---- in-place ---- */

static bool expr_equal(const kiln_kernel *k, int32_t a, int32_t b, int depth)
{
    if (a == b) return true;
    if (a < 0 || b < 0 || a >= k->nexprs || b >= k->nexprs || depth > 64) return false;
    const kiln_kexpr *x = &k->exprs[a], *y = &k->exprs[b];
    if (x->op != y->op || x->dtype != y->dtype) return false;
    switch (x->op) {
    case KX_CONST: return x->i == y->i && (x->f == y->f || (x->f != x->f && y->f != y->f));
    case KX_VAR:
    case KX_LOCAL: return x->a == y->a;
    case KX_LOAD: return x->a == y->a && expr_equal(k, x->b, y->b, depth + 1);
    case KX_SELECT:
        return expr_equal(k, x->a, y->a, depth + 1) && expr_equal(k, x->b, y->b, depth + 1) &&
               expr_equal(k, x->c, y->c, depth + 1);
    case KX_HASH:
        return expr_equal(k, x->a, y->a, depth + 1) && expr_equal(k, x->b, y->b, depth + 1);
    default:
        if (x->op >= KX_ADD && x->op <= KX_OR)
            return expr_equal(k, x->a, y->a, depth + 1) && expr_equal(k, x->b, y->b, depth + 1);
        return expr_equal(k, x->a, y->a, depth + 1);
    }
}

bool kiln_kernel_inplace_ok(const kiln_kernel *k, int32_t src, int32_t dst)
{
    if (k->ngemms || src < 0 || dst < 0 || src >= k->nbufs || dst >= k->nbufs) return false;
    int32_t index = -1;
    for (int32_t s = 0; s < k->nstmts; s++) {
        const kiln_kstmt *st = &k->stmts[s];
        if (st->kind != KS_STORE) continue;
        if (st->buf == src) return false;
        if (st->buf != dst) continue;
        if (index >= 0 && !expr_equal(k, index, st->index, 0)) return false;
        index = st->index;
    }
    if (index < 0) return false;
    for (int32_t e = 0; e < k->nexprs; e++) {
        const kiln_kexpr *x = &k->exprs[e];
        if (x->op == KX_LOAD && (x->a == src || x->a == dst) && !expr_equal(k, index, x->b, 0))
            return false;
    }
    return true;
}

/* ---- printing ---- */

static const char *const kx_names[KX_COUNT] = {
    "const", "var", "local", "load", "add", "sub", "mul", "div", "mod", "min", "max", "pow",
    "lt", "le", "gt", "ge", "eq", "ne", "and", "or", "neg", "exp", "log", "sqrt", "tanh", "erf",
    "abs", "log1p", "not", "isnan", "select", "cast", "hash"};

static void print_expr(const kiln_kernel *k, int32_t e, FILE *f)
{
    const kiln_kexpr *x = &k->exprs[e];
    switch (x->op) {
    case KX_CONST:
        if (kiln_dtype_is_float((kiln_dtype)x->dtype)) fprintf(f, "%.9g", x->f);
        else fprintf(f, "%lld", (long long)x->i);
        return;
    case KX_VAR: fprintf(f, "i%d", x->a); return;
    case KX_LOCAL: fprintf(f, "t%d", x->a); return;
    case KX_LOAD:
        fprintf(f, "b%d[", x->a);
        print_expr(k, x->b, f);
        fputc(']', f);
        return;
    default: break;
    }
    fprintf(f, "%s(", x->op < KX_COUNT ? kx_names[x->op] : "?");
    print_expr(k, x->a, f);
    if ((x->op >= KX_ADD && x->op <= KX_OR) || x->op == KX_HASH) {
        fputs(", ", f);
        print_expr(k, x->b, f);
    } else if (x->op == KX_SELECT) {
        fputs(", ", f);
        print_expr(k, x->b, f);
        fputs(", ", f);
        print_expr(k, x->c, f);
    } else if (x->op == KX_CAST) {
        fprintf(f, " -> %s", kiln_dtype_name((kiln_dtype)x->dtype));
    }
    fputc(')', f);
}

static void print_stmts(const kiln_kernel *k, int32_t s, int depth, FILE *f)
{
    for (; s >= 0; s = k->stmts[s].next) {
        const kiln_kstmt *st = &k->stmts[s];
        fprintf(f, "%*s", 2 * depth + 2, "");
        if (st->kind == KS_LOOP) {
            fprintf(f, "for i%d in 0..%lld%s%s\n", st->var, (long long)st->extent,
                    st->parallel ? " parallel" : "", st->vector ? " vector" : "");
            print_stmts(k, st->body, depth + 1, f);
        } else if (st->kind == KS_STORE) {
            fprintf(f, "b%d[", st->buf);
            print_expr(k, st->index, f);
            fputs("] = ", f);
            print_expr(k, st->value, f);
            fputc('\n', f);
        } else if (st->kind == KS_GEMM) {
            const kiln_kgemm *g = &k->gemms[st->index];
            fprintf(f, "gemm b%d[%lld,%lld] = b%d%s @ b%d%s (K %lld); epilogue over i%d, i%d\n",
                    g->c, (long long)g->M, (long long)g->N, g->a, g->ta ? "^T" : "", g->b,
                    g->tb ? "^T" : "", (long long)g->K, g->var_i, g->var_j);
            print_stmts(k, st->body, depth + 1, f);
        } else if (st->kind == KS_CHECK) {
            fputs("check ", f);
            print_expr(k, st->value, f);
            fprintf(f, " else fail %d\n", st->index);
        } else {
            fprintf(f, "t%d = ", st->var);
            print_expr(k, st->value, f);
            fputc('\n', f);
        }
    }
}

void kiln_kernel_print(const kiln_kernel *k, FILE *f)
{
    fprintf(f, "kernel %s  // %s\n", k->name, k->comment);
    for (int32_t b = 0; b < k->nbufs; b++) {
        if (k->bufs[b].node < 0)
            fprintf(f, "  b%d: scratch %s[%lld]\n", b, kiln_dtype_name((kiln_dtype)k->bufs[b].dtype),
                    (long long)k->bufs[b].shape[0]);
        else
            fprintf(f, "  b%d: %%%d %s%s\n", b, k->bufs[b].node,
                    kiln_dtype_name((kiln_dtype)k->bufs[b].dtype),
                    k->bufs[b].written ? " (written)" : "");
    }
    print_stmts(k, k->body, 0, f);
}
