/* ir/graph.c — graph storage, attributes, the generic builder, shape helpers.
 *
 * kiln_build is the one way nodes enter a graph: the C API, the model
 * language, the IR parser and every pass go through it, so every node has
 * had its attributes checked against its op's schema and its shape rule run.
 */
#include "ir/graph.h"
#include "ir/ops.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- statuses, dtypes, roles ---- */

const char *kiln_status_str(kiln_status s)
{
    switch (s) {
    case KILN_OK: return "ok";
    case KILN_ERR_INVALID: return "invalid argument";
    case KILN_ERR_SHAPE: return "shape mismatch";
    case KILN_ERR_PARSE: return "parse error";
    case KILN_ERR_IO: return "i/o error";
    case KILN_ERR_NOMEM: return "out of memory";
    case KILN_ERR_UNSUPPORTED: return "unsupported";
    case KILN_ERR_NOT_FOUND: return "not found";
    case KILN_ERR_CORRUPT: return "corrupt file";
    case KILN_ERR_INTERNAL: return "internal error";
    case KILN_ERR_COMPILE: return "C compile failed";
    }
    return "unknown status";
}

static const char *const dtype_names[KILN_DTYPE_COUNT] = {"f32", "f64", "i32", "i64",
                                                          "u8",  "bool", "f16", "bf16"};
static const size_t dtype_sizes[KILN_DTYPE_COUNT] = {4, 8, 4, 8, 1, 1, 2, 2};

const char *kiln_dtype_name(kiln_dtype t)
{
    return (unsigned)t < KILN_DTYPE_COUNT ? dtype_names[t] : "?";
}
size_t kiln_dtype_size(kiln_dtype t) { return (unsigned)t < KILN_DTYPE_COUNT ? dtype_sizes[t] : 0; }

bool kiln_dtype_is_float(kiln_dtype t)
{
    return t == KILN_F32 || t == KILN_F64 || t == KILN_F16 || t == KILN_BF16;
}

static const char *const role_names[KILN_ROLE_COUNT] = {
    "none", "input", "target", "param", "const", "state", "hparam", "output", "loss", "metric"};

const char *kiln_role_name(kiln_role r) { return (unsigned)r < KILN_ROLE_COUNT ? role_names[r] : "?"; }

static const char *const metric_kind_names[KILN_METRIC_KIND_COUNT] = {
    "mean", "sqrt_mean", "ratio", "iou_mean", "dice"};

const char *kiln_metric_kind_name(kiln_metric_kind k)
{
    return (unsigned)k < KILN_METRIC_KIND_COUNT ? metric_kind_names[k] : "?";
}

bool kiln_metric_size_ok(kiln_metric_kind k, int64_t numel)
{
    switch (k) {
    case KILN_METRIC_MEAN: return numel == 1;
    case KILN_METRIC_SQRT_MEAN:
    case KILN_METRIC_RATIO:
    case KILN_METRIC_DICE: return numel == 2;
    case KILN_METRIC_IOU_MEAN: return numel >= 2 && numel % 2 == 0;
    default: return false;
    }
}

/* ---- graph lifetime ---- */

kiln_graph *kiln_graph_new(const char *name)
{
    kiln_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->name = strdup(name ? name : "graph");
    if (!g->name) {
        free(g);
        return NULL;
    }
    return g;
}

void kiln_graph_free(kiln_graph *g)
{
    if (!g) return;
    for (int32_t i = 0; i < g->nnodes; i++) {
        free(g->nodes[i].inputs);
        free(g->nodes[i].name);
    }
    for (int32_t i = 0; i < g->nfiles; i++) free(g->files[i]);
    free(g->files);
    free(g->nodes);
    free(g->name);
    free(g);
}

const char *kiln_graph_error(const kiln_graph *g) { return g ? g->err : "no graph"; }
int32_t kiln_graph_num_nodes(const kiln_graph *g) { return g ? g->nnodes : 0; }

kiln_status kiln_errorf(kiln_graph *g, kiln_status status, const char *fmt, ...)
{
    if (g) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->err, sizeof g->err, fmt, ap);
        va_end(ap);
    }
    return status;
}

const char *kiln_graph_intern_file(kiln_graph *g, const char *file)
{
    if (!file) return NULL;
    for (int32_t i = 0; i < g->nfiles; i++)
        if (strcmp(g->files[i], file) == 0) return g->files[i];
    char **nf = realloc(g->files, (size_t)(g->nfiles + 1) * sizeof *nf);
    if (!nf) return NULL;
    g->files = nf;
    if (!(g->files[g->nfiles] = strdup(file))) return NULL;
    return g->files[g->nfiles++];
}

kiln_graph *kiln_graph_clone(const kiln_graph *g)
{
    kiln_graph *c = kiln_graph_new(g->name);
    if (!c) return NULL;
    c->nodes = calloc((size_t)(g->nnodes ? g->nnodes : 1), sizeof *c->nodes);
    if (!c->nodes) goto fail;
    c->cap = g->nnodes ? g->nnodes : 1;
    for (int32_t i = 0; i < g->nnodes; i++) {
        const kiln_node *s = &g->nodes[i];
        kiln_node *d = &c->nodes[i];
        *d = *s;
        d->inputs = NULL;
        d->name = NULL;
        c->nnodes = i + 1;
        if (s->ninputs) {
            d->inputs = malloc((size_t)s->ninputs * sizeof *d->inputs);
            if (!d->inputs) goto fail;
            memcpy(d->inputs, s->inputs, (size_t)s->ninputs * sizeof *d->inputs);
        }
        if (s->name && !(d->name = strdup(s->name))) goto fail;
        if (s->loc.file) d->loc.file = kiln_graph_intern_file(c, s->loc.file);
    }
    c->cur_loc = g->cur_loc;
    if (g->cur_loc.file) c->cur_loc.file = kiln_graph_intern_file(c, g->cur_loc.file);
    return c;
fail:
    kiln_graph_free(c);
    return NULL;
}

kiln_value kiln_graph_find(const kiln_graph *g, const char *name)
{
    if (!g || !name) return KILN_ERR_NOT_FOUND;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].name && strcmp(g->nodes[i].name, name) == 0) return i;
    return KILN_ERR_NOT_FOUND;
}

kiln_value kiln_graph_find_role(const kiln_graph *g, kiln_role r)
{
    if (!g) return KILN_ERR_NOT_FOUND;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].role == r) return i;
    return KILN_ERR_NOT_FOUND;
}

/* ---- node helpers ---- */

int64_t kiln_shape_numel(int rank, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= shape[i];
    return n;
}
int64_t kiln_node_numel(const kiln_node *n) { return kiln_shape_numel(n->rank, n->shape); }

bool kiln_node_is_leaf(const kiln_node *n) { return kiln_ops[n->op].fusion == KILN_FUSE_LEAF; }

char *kiln_shape_str(kiln_dtype t, int rank, const int64_t *shape, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "%s[", kiln_dtype_name(t));
    for (int i = 0; i < rank && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

char *kiln_node_type_str(const kiln_node *n, char *buf, size_t len)
{
    return kiln_shape_str((kiln_dtype)n->dtype, n->rank, n->shape, buf, len);
}

char *kiln_node_desc(const kiln_graph *g, int32_t id, char *buf, size_t len)
{
    if (id < 0 || id >= g->nnodes) {
        snprintf(buf, len, "%%%d (invalid)", id);
        return buf;
    }
    const kiln_node *n = &g->nodes[id];
    if (n->name)
        snprintf(buf, len, "%%%d (%s '%s')", id, kiln_ops[n->op].name, n->name);
    else
        snprintf(buf, len, "%%%d (%s)", id, kiln_ops[n->op].name);
    return buf;
}

/* ---- attributes ---- */

static void attr_name(kiln_attr *a, const char *name)
{
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
}

kiln_attr kiln_attr_int(const char *name, int64_t v)
{
    kiln_attr a;
    attr_name(&a, name);
    a.kind = KILN_ATTR_INT;
    a.i[0] = v;
    return a;
}

kiln_attr kiln_attr_float(const char *name, double v)
{
    kiln_attr a;
    attr_name(&a, name);
    a.kind = KILN_ATTR_FLOAT;
    a.f = v;
    return a;
}

kiln_attr kiln_attr_ints(const char *name, int n, const int64_t *v)
{
    kiln_attr a;
    attr_name(&a, name);
    a.kind = KILN_ATTR_INTS;
    if (n < 0) n = 0;
    if (n > KILN_MAX_ATTR_INTS) n = KILN_MAX_ATTR_INTS;
    a.n = (uint8_t)n;
    for (int i = 0; i < n; i++) a.i[i] = v[i];
    return a;
}

kiln_attr kiln_attr_dtype(const char *name, kiln_dtype t)
{
    kiln_attr a = kiln_attr_int(name, t);
    a.kind = KILN_ATTR_DTYPE;
    return a;
}

const kiln_attr *kiln_node_attr(const kiln_node *n, const char *name)
{
    for (int i = 0; i < n->nattrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
    return NULL;
}

kiln_attr *kiln_node_attr_mut(kiln_node *n, const char *name)
{
    return (kiln_attr *)kiln_node_attr(n, name);
}

int64_t kiln_attr_get_int(const kiln_node *n, const char *name)
{
    const kiln_attr *a = kiln_node_attr(n, name);
    return a ? a->i[0] : 0;
}

double kiln_attr_get_float(const kiln_node *n, const char *name)
{
    const kiln_attr *a = kiln_node_attr(n, name);
    return a ? a->f : 0.0;
}

bool kiln_attr_equal(const kiln_attr *a, const kiln_attr *b)
{
    if (strcmp(a->name, b->name) != 0 || a->kind != b->kind) return false;
    switch (a->kind) {
    case KILN_ATTR_FLOAT: return memcmp(&a->f, &b->f, sizeof a->f) == 0;
    case KILN_ATTR_INTS:
        return a->n == b->n && memcmp(a->i, b->i, a->n * sizeof a->i[0]) == 0;
    default: return a->i[0] == b->i[0];
    }
}

static int parse_dtype_name(const char *s, size_t len)
{
    for (int t = 0; t < KILN_DTYPE_COUNT; t++)
        if (strlen(dtype_names[t]) == len && strncmp(dtype_names[t], s, len) == 0) return t;
    return -1;
}

/* Parses the registry row's "name:kind[=default] ..." into out. */
int kiln_op_schema(int op, kiln_schema_attr *out, int max)
{
    if (op < 0 || op >= KILN_OP_COUNT) return -1;
    int n = 0;
    const char *p = kiln_ops[op].attrs;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        if (n == max) return -1;
        kiln_schema_attr *s = &out[n];
        memset(s, 0, sizeof *s);
        const char *colon = strchr(p, ':');
        if (!colon || colon == p || colon - p >= KILN_ATTR_NAME_MAX) return -1;
        memcpy(s->name, p, (size_t)(colon - p));
        const char *k = colon + 1;
        size_t klen = strcspn(k, "= ");
        if (klen == 3 && !strncmp(k, "int", 3)) s->kind = KILN_ATTR_INT;
        else if (klen == 5 && !strncmp(k, "float", 5)) s->kind = KILN_ATTR_FLOAT;
        else if (klen == 4 && !strncmp(k, "ints", 4)) s->kind = KILN_ATTR_INTS;
        else if (klen == 5 && !strncmp(k, "dtype", 5)) s->kind = KILN_ATTR_DTYPE;
        else return -1;
        p = k + klen;
        if (*p == '=') {
            const char *d = ++p;
            size_t dlen = strcspn(d, " ");
            s->has_default = true;
            if (s->kind == KILN_ATTR_INT) s->def = kiln_attr_int(s->name, strtoll(d, NULL, 10));
            else if (s->kind == KILN_ATTR_FLOAT) s->def = kiln_attr_float(s->name, strtod(d, NULL));
            else if (s->kind == KILN_ATTR_INTS) s->def = kiln_attr_ints(s->name, 0, NULL);
            else {
                int t = parse_dtype_name(d, dlen);
                if (t < 0) return -1;
                s->def = kiln_attr_dtype(s->name, (kiln_dtype)t);
            }
            p = d + dlen;
        }
        n++;
    }
    return n;
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case KILN_ATTR_INT: return "int";
    case KILN_ATTR_FLOAT: return "float";
    case KILN_ATTR_INTS: return "list of ints";
    default: return "dtype";
    }
}

/* Checks attrs against op's schema and writes them, in schema order with
 * defaults filled in, into n. */
static kiln_status apply_schema(kiln_graph *g, kiln_node *n, int op, int nattrs,
                                const kiln_attr *attrs)
{
    const kiln_op_info *info = &kiln_ops[op];
    kiln_schema_attr sch[KILN_MAX_ATTRS];
    int ns = kiln_op_schema(op, sch, KILN_MAX_ATTRS);
    if (ns < 0)
        return kiln_errorf(g, KILN_ERR_INTERNAL, "op '%s' has a malformed attribute schema",
                           info->name);
    for (int a = 0; a < nattrs; a++) {
        int found = -1;
        for (int s = 0; s < ns; s++)
            if (strcmp(sch[s].name, attrs[a].name) == 0) found = s;
        if (found < 0) {
            char known[256] = "";
            for (int s = 0; s < ns; s++) {
                strncat(known, s ? ", " : "", sizeof known - strlen(known) - 1);
                strncat(known, sch[s].name, sizeof known - strlen(known) - 1);
            }
            return kiln_errorf(g, KILN_ERR_NOT_FOUND,
                               "%s: unknown attribute '%s' (%s)", info->name, attrs[a].name,
                               ns ? known : "it takes none");
        }
        int want = sch[found].kind, got = attrs[a].kind;
        /* An int literal where a float is wanted is fine. */
        if (want != got && !(want == KILN_ATTR_FLOAT && got == KILN_ATTR_INT))
            return kiln_errorf(g, KILN_ERR_INVALID, "%s: attribute '%s' must be a %s, not a %s",
                               info->name, attrs[a].name, kind_name(want), kind_name(got));
        for (int b = 0; b < a; b++)
            if (strcmp(attrs[b].name, attrs[a].name) == 0)
                return kiln_errorf(g, KILN_ERR_INVALID, "%s: attribute '%s' given twice",
                                   info->name, attrs[a].name);
    }
    n->nattrs = ns;
    for (int s = 0; s < ns; s++) {
        const kiln_attr *given = NULL;
        for (int a = 0; a < nattrs; a++)
            if (strcmp(sch[s].name, attrs[a].name) == 0) given = &attrs[a];
        if (given) {
            n->attrs[s] = *given;
            if (sch[s].kind == KILN_ATTR_FLOAT && given->kind == KILN_ATTR_INT)
                n->attrs[s] = kiln_attr_float(given->name, (double)given->i[0]);
        } else if (sch[s].has_default) {
            n->attrs[s] = sch[s].def;
        } else {
            return kiln_errorf(g, KILN_ERR_INVALID, "%s: missing attribute '%s' (a %s)",
                               info->name, sch[s].name, kind_name(sch[s].kind));
        }
    }
    return KILN_OK;
}

/* ---- building ---- */

static kiln_status reserve(kiln_graph *g)
{
    if (g->nnodes < g->cap) return KILN_OK;
    int32_t cap = g->cap ? g->cap * 2 : 64;
    kiln_node *nn = realloc(g->nodes, (size_t)cap * sizeof *nn);
    if (!nn) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory growing the graph");
    g->nodes = nn;
    g->cap = cap;
    return KILN_OK;
}

/* Appends a node with op, inputs and attrs; shape fields left for the caller. */
static kiln_value append_node(kiln_graph *g, int op, int nin, const kiln_value *in, int nattrs,
                              const kiln_attr *attrs)
{
    if (!g) return KILN_ERR_INVALID;
    if (op < 0 || op >= KILN_OP_COUNT)
        return kiln_errorf(g, KILN_ERR_NOT_FOUND, "unknown op id %d", op);
    const kiln_op_info *info = &kiln_ops[op];
    for (int i = 0; i < nin; i++)
        if (in[i] < 0) return in[i]; /* an earlier error: propagate it */
    if (info->arity >= 0 && nin != info->arity)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s takes %d input%s, got %d", info->name,
                           info->arity, info->arity == 1 ? "" : "s", nin);
    if (info->arity < 0 && nin < 1)
        return kiln_errorf(g, KILN_ERR_INVALID, "%s takes at least one input", info->name);
    for (int i = 0; i < nin; i++)
        if (in[i] >= g->nnodes)
            return kiln_errorf(g, KILN_ERR_INVALID, "%s: input %d refers to node %%%d, "
                               "which does not exist yet", info->name, i, in[i]);
    kiln_status st = reserve(g);
    if (st) return st;
    kiln_node *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->op = (uint16_t)op;
    n->loc = g->cur_loc;
    if (nin) {
        n->inputs = malloc((size_t)nin * sizeof *n->inputs);
        if (!n->inputs) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
        memcpy(n->inputs, in, (size_t)nin * sizeof *in);
    }
    n->ninputs = nin;
    if ((st = apply_schema(g, n, op, nattrs, attrs))) {
        free(n->inputs);
        return st;
    }
    return g->nnodes; /* not yet counted: the caller commits */
}

/* Element counts above this are refused: every index fits int64 with room. */
#define KILN_MAX_NUMEL ((int64_t)1 << 48)

/* Whether a shape's element count stays within KILN_MAX_NUMEL. */
static bool numel_ok(int rank, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n) || n > KILN_MAX_NUMEL)
            return false;
    return true;
}

kiln_value kiln_build(kiln_graph *g, int op, int nin, const kiln_value *in, int nattrs,
                      const kiln_attr *attrs)
{
    kiln_value id = append_node(g, op, nin, in, nattrs, attrs);
    if (id < 0) return id;
    kiln_node *n = &g->nodes[id];
    kiln_status st = kiln_ops[op].shape(g, n);
    char t[128];
    if (!st && !numel_ok(n->rank, n->shape))
        st = kiln_errorf(g, KILN_ERR_SHAPE, "%s: the result %s has more than 2^48 elements",
                         kiln_ops[op].name, kiln_node_type_str(n, t, sizeof t));
    if (st) {
        free(n->inputs);
        return st;
    }
    g->nnodes++;
    return id;
}

kiln_value kiln_build_leaf(kiln_graph *g, kiln_role role, const char *name, kiln_dtype t,
                           int rank, const int64_t *shape, int nattrs, const kiln_attr *attrs)
{
    if (!g) return KILN_ERR_INVALID;
    if (rank < 0 || rank > KILN_MAX_RANK)
        return kiln_errorf(g, KILN_ERR_INVALID, "'%s': rank %d is outside 0..%d",
                           name ? name : "?", rank, KILN_MAX_RANK);
    if ((unsigned)t >= KILN_DTYPE_COUNT)
        return kiln_errorf(g, KILN_ERR_INVALID, "'%s': unknown dtype %d", name ? name : "?", t);
    if (!name || !*name)
        return kiln_errorf(g, KILN_ERR_INVALID, "a %s needs a name", kiln_role_name(role));
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0)
            return kiln_errorf(g, KILN_ERR_SHAPE, "'%s': dimension %d is negative (%lld)", name,
                               i, (long long)shape[i]);
    if (kiln_graph_find(g, name) >= 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "the name '%s' is already taken", name);
    if (!numel_ok(rank, shape)) {
        char ts[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "'%s': %s has more than 2^48 elements", name,
                           kiln_shape_str(t, rank, shape, ts, sizeof ts));
    }
    kiln_value id = append_node(g, KILN_OP_INPUT, 0, NULL, nattrs, attrs);
    if (id < 0) return id;
    kiln_node *n = &g->nodes[id];
    n->dtype = (uint8_t)t;
    n->role = (uint8_t)role;
    n->rank = rank;
    for (int i = 0; i < rank; i++) n->shape[i] = shape[i];
    if (!(n->name = strdup(name))) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    kiln_status st = kiln_ops[KILN_OP_INPUT].shape(g, n);
    if (st) {
        free(n->name);
        return st;
    }
    g->nnodes++;
    return id;
}

kiln_status kiln_node_set_name(kiln_graph *g, int32_t id, const char *name)
{
    if (id < 0) return (kiln_status)id;
    if (id >= g->nnodes) return kiln_errorf(g, KILN_ERR_INVALID, "no node %%%d", id);
    int32_t other = kiln_graph_find(g, name);
    if (other >= 0 && other != id)
        return kiln_errorf(g, KILN_ERR_INVALID, "the name '%s' is already taken by %%%d", name,
                           other);
    char *c = strdup(name);
    if (!c) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    free(g->nodes[id].name);
    g->nodes[id].name = c;
    return KILN_OK;
}

kiln_value kiln_b1(kiln_graph *g, int op, kiln_value x) { return kiln_build(g, op, 1, &x, 0, NULL); }

kiln_value kiln_b2(kiln_graph *g, int op, kiln_value a, kiln_value b)
{
    kiln_value in[2] = {a, b};
    return kiln_build(g, op, 2, in, 0, NULL);
}

kiln_value kiln_b_const_like(kiln_graph *g, double v, kiln_value like)
{
    if (like < 0) return like;
    kiln_attr a[2] = {kiln_attr_float("value", v),
                      kiln_attr_dtype("dtype", (kiln_dtype)g->nodes[like].dtype)};
    return kiln_build(g, KILN_OP_CONST, 0, NULL, 2, a);
}

kiln_value kiln_b_sum_to(kiln_graph *g, kiln_value v, int rank, const int64_t *shape)
{
    if (v < 0) return v;
    const kiln_node *n = &g->nodes[v];
    if (n->rank == rank && memcmp(n->shape, shape, (size_t)rank * sizeof *shape) == 0) return v;
    int64_t axes[KILN_MAX_RANK];
    int na = 0, lead = n->rank - rank;
    if (lead < 0)
        return kiln_errorf(g, KILN_ERR_INTERNAL, "sum_to: rank %d below target rank %d", n->rank,
                           rank);
    for (int i = 0; i < n->rank; i++)
        if (i < lead || (shape[i - lead] == 1 && n->shape[i] != 1)) axes[na++] = i;
    kiln_value r = v;
    if (na) {
        kiln_attr at[2] = {kiln_attr_ints("axes", na, axes), kiln_attr_int("keepdims", 1)};
        r = kiln_build(g, kiln_op_lookup("reduce_sum"), 1, &r, 2, at);
    }
    if (r < 0) return r;
    if (lead == 0) return r; /* keepdims already left the target shape */
    kiln_attr s = kiln_attr_ints("shape", rank, shape);
    return kiln_build(g, kiln_op_lookup("reshape"), 1, &r, 1, &s);
}

/* ---- shapes ---- */

bool kiln_broadcast_shapes(int ra, const int64_t *a, int rb, const int64_t *b, int *rout,
                           int64_t *out)
{
    int r = ra > rb ? ra : rb;
    for (int i = 0; i < r; i++) {
        int64_t da = i < r - ra ? 1 : a[i - (r - ra)];
        int64_t db = i < r - rb ? 1 : b[i - (r - rb)];
        if (da != db && da != 1 && db != 1) return false;
        out[i] = da == 1 ? db : da;
    }
    *rout = r;
    return true;
}

void kiln_strides(int rank, const int64_t *shape, int64_t *strides)
{
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i];
    }
}

int64_t kiln_bcast_offset(int rout, const int64_t *idx, int rin, const int64_t *sin)
{
    int64_t off = 0;
    for (int i = 0; i < rin; i++) {
        int64_t d = sin[i];
        off = off * d + (d == 1 ? 0 : idx[i + rout - rin]);
    }
    return off;
}

bool kiln_index_next(int rank, const int64_t *shape, int64_t *idx)
{
    for (int i = rank - 1; i >= 0; i--) {
        if (++idx[i] < shape[i]) return true;
        idx[i] = 0;
    }
    return false;
}

bool kiln_norm_axis(int64_t *axis, int rank)
{
    if (*axis < 0) *axis += rank;
    return *axis >= 0 && *axis < rank;
}

/* ---- surgery ---- */

kiln_status kiln_graph_compact(kiln_graph *g, const bool *keep, const int32_t *remap)
{
    int32_t *newid = malloc((size_t)(g->nnodes ? g->nnodes : 1) * sizeof *newid);
    if (!newid) return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    int32_t k = 0;
    for (int32_t i = 0; i < g->nnodes; i++) newid[i] = keep[i] ? k++ : -1;
    kiln_status st = KILN_OK;
    for (int32_t i = 0; i < g->nnodes && !st; i++) {
        if (!keep[i]) continue;
        kiln_node *n = &g->nodes[i];
        for (int j = 0; j < n->ninputs; j++) {
            int32_t src = remap ? remap[n->inputs[j]] : n->inputs[j];
            if (src < 0 || newid[src] < 0) {
                st = kiln_errorf(g, KILN_ERR_INTERNAL,
                                 "compact: node %%%d keeps input %%%d that is removed", i, src);
                break;
            }
            n->inputs[j] = newid[src];
        }
    }
    if (st) {
        free(newid);
        return st;
    }
    k = 0;
    for (int32_t i = 0; i < g->nnodes; i++) {
        if (keep[i]) {
            g->nodes[k++] = g->nodes[i];
        } else {
            free(g->nodes[i].inputs);
            free(g->nodes[i].name);
        }
    }
    g->nnodes = k;
    free(newid);
    return KILN_OK;
}
