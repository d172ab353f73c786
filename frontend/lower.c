/* frontend/lower.c — lowers a parsed model to a forward graph.
 *
 * Expects: a program from fe_parse. Guarantees: every node enters the graph
 * through the builder (kiln_build, kiln_input, kiln_linear, kiln_set_loss,
 * ...) with g->cur_loc set to the file:line:col of the expression that made
 * it; on the first error, the graph is freed and the error is in the diag
 * with the position of the offending expression.
 *
 * Values are tensors (graph nodes) or compile-time constants (numbers, int
 * lists, dtypes, strings). Constants fold among themselves; a number meeting
 * a tensor becomes a scalar const of the tensor's dtype. Blocks expand
 * inline at each call, in a scope whose prefix ("down1.") names the
 * parameters created inside.
 */
#include "frontend/lower.h"
#include "ir/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FE_MAX_EVAL_DEPTH 1000 /* expression levels plus block calls, nested */
#define FE_MAX_NODES 65536     /* a model that grows past this is rejected */
#define FE_MAX_PARAM_NAME 200  /* longest parameter name a layer may create */
#define FE_MAX_NUMEL_LOG2 48   /* an input or target holds at most 2^48 elements */

/* The dtypes an input or target may have (others are internal). */
static const kiln_dtype decl_dtypes[] = {KILN_F32, KILN_F64, KILN_I32, KILN_I64, KILN_U8, KILN_BOOL};

typedef struct binding {
    const char *name;
    fe_value v;
    fe_loc loc;
    bool decl; /* an input or target */
} binding;

typedef struct env {
    binding *b;
    int n, cap;
} env;

/* Where parameters are being created: the prefix, and per layer kind and per
 * block how many have been made at this level (the automatic names). */
typedef struct scope {
    char *prefix; /* owned: "" or "down1.dense0." */
    int *counts;  /* fe_nlayers + nblocks */
} scope;

typedef struct lower {
    fe_diag *d;
    kiln_graph *g;
    const char *file; /* interned in g */
    const fe_program *prog;
    int64_t batch;
    const kiln_dim *dims; /* load-time values of `dim` statements */
    int ndims;
    bool *dim_used;
    int ndefined;          /* blocks whose definition has been passed */
    int depth;             /* current evaluation nesting */
    env *env;              /* names visible now */
    env *globals;          /* top-level names */
    scope *scope;          /* naming scope now */
    const fe_block *block; /* block being expanded, or NULL */
    bool has_loss;
    fe_value loss;
    fe_loc loss_loc;
    /* parameter groups (`group NAME`): names in index order (NULL: the
     * implicit first group of parameters made before any `group`) */
    const char *group_names[KILN_MAX_PARAM_GROUPS];
    fe_loc group_locs[KILN_MAX_PARAM_GROUPS];
    int ngroups, group; /* groups so far, the current one */
    int32_t group_mark; /* parameters below this node id have their group */
} lower;

/* ---- small helpers ---- */

static void set_loc(lower *L, fe_loc loc)
{
    L->g->cur_loc = (kiln_loc){L->file, loc.line, loc.col};
}

/* A builder call failed: its message, at loc. */
static kiln_status graph_error(lower *L, fe_loc loc, kiln_status st)
{
    return fe_error(L->d, loc, st, "%s", L->g->err);
}

/* Where an expression starts (a binary expression's location is its operator). */
static fe_loc expr_start(const fe_expr *e)
{
    while (e->kind == EX_BIN) e = e->bin.a;
    return e->loc;
}

static const char *value_kind(const fe_value *v)
{
    switch (v->kind) {
    case V_TENSOR: return "a tensor";
    case V_NUM: return v->is_int ? "an int" : "a float";
    case V_LIST: return "a list";
    case V_DTYPE: return "a dtype";
    default: return "a string";
    }
}

static const char *argkind_name(fe_argkind k)
{
    switch (k) {
    case FA_INT: return "an int";
    case FA_FLOAT: return "a float";
    case FA_INTS: return "a list of ints";
    case FA_DTYPE: return "a dtype";
    case FA_BOOL: return "true or false";
    default: return "a string";
    }
}

static fe_value num_int(int64_t i)
{
    return (fe_value){.kind = V_NUM, .is_int = true, .i = i, .f = (double)i};
}

static fe_value num_float(double f)
{
    return (fe_value){.kind = V_NUM, .f = f};
}

static fe_value tensor(kiln_value t)
{
    return (fe_value){.kind = V_TENSOR, .t = t};
}

static int dtype_of_name(const char *name, bool decl_only)
{
    for (int t = 0; t < KILN_DTYPE_COUNT; t++)
        if (!strcmp(name, kiln_dtype_name((kiln_dtype)t))) {
            if (!decl_only) return t;
            for (size_t k = 0; k < sizeof decl_dtypes / sizeof decl_dtypes[0]; k++)
                if ((int)decl_dtypes[k] == t) return t;
        }
    return -1;
}

/* ---- environments ---- */

static binding *env_find(env *e, const char *name)
{
    for (int i = e->n - 1; i >= 0; i--)
        if (!strcmp(e->b[i].name, name)) return &e->b[i];
    return NULL;
}

/* Binds name (rebinding replaces the old value: SSA renaming). */
static kiln_status env_set(lower *L, env *e, const char *name, fe_value v, fe_loc loc, bool decl)
{
    binding *b = env_find(e, name);
    if (!b) {
        if (e->n == e->cap) {
            int cap = e->cap ? 2 * e->cap : 16;
            binding *nb = realloc(e->b, (size_t)cap * sizeof *nb);
            if (!nb) return fe_nomem(L->d);
            e->b = nb;
            e->cap = cap;
        }
        b = &e->b[e->n++];
        b->name = name;
    }
    b->v = v;
    b->loc = loc;
    b->decl = decl;
    return KILN_OK;
}

/* ---- op schemas ---- */

/* The op's attribute schema (ir/ops.h: kiln_op_schema) as argument specs. */
static int op_schema(const kiln_op_info *info, fe_argspec *spec, char names[][KILN_ATTR_NAME_MAX])
{
    kiln_schema_attr sch[KILN_MAX_ATTRS];
    int n = kiln_op_schema((int)(info - kiln_ops), sch, KILN_MAX_ATTRS);
    for (int i = 0; i < n; i++) {
        static const fe_argkind kinds[] = {[KILN_ATTR_INT] = FA_INT, [KILN_ATTR_FLOAT] = FA_FLOAT,
                                           [KILN_ATTR_INTS] = FA_INTS, [KILN_ATTR_DTYPE] = FA_DTYPE};
        memcpy(names[i], sch[i].name, KILN_ATTR_NAME_MAX);
        spec[i].name = names[i];
        spec[i].kind = kinds[sch[i].kind];
        spec[i].required = !sch[i].has_default;
    }
    return n;
}

/* "axis, keepdims" */
static void spec_names(const fe_argspec *spec, int n, char *buf, size_t len)
{
    buf[0] = 0;
    size_t o = 0;
    for (int i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ", %s" : "%s", spec[i].name);
}

/* Checks v against an argument's kind and normalises it (an int where a list
 * of ints is wanted becomes a one-element list; a float where an int is
 * wanted is an error). `what` names the argument in messages. */
static kiln_status convert(lower *L, fe_argkind kind, const fe_value *v, fe_loc loc,
                           const char *what, fe_value *out)
{
    *out = *v;
    switch (kind) {
    case FA_INT:
        if (v->kind == V_NUM && v->is_int) return KILN_OK;
        break;
    case FA_FLOAT:
        if (v->kind == V_NUM) return KILN_OK;
        break;
    case FA_INTS:
        if (v->kind == V_LIST) return KILN_OK;
        if (v->kind == V_NUM && v->is_int) {
            *out = (fe_value){.kind = V_LIST, .n = 1, .ints = {v->i}};
            return KILN_OK;
        }
        break;
    case FA_DTYPE:
        if (v->kind == V_DTYPE) return KILN_OK;
        break;
    case FA_BOOL:
        if (v->kind == V_NUM && v->is_int && (v->i == 0 || v->i == 1)) return KILN_OK;
        break;
    case FA_STR:
        if (v->kind == V_STR) return KILN_OK;
        break;
    }
    if (kind == FA_BOOL && v->kind == V_NUM)
        return fe_error(L->d, loc, KILN_ERR_INVALID, "%s must be true or false", what);
    return fe_error(L->d, loc, KILN_ERR_INVALID, "%s must be %s, not %s", what,
                    argkind_name(kind), value_kind(v));
}

/* ---- callees ---- */

typedef enum callee_kind { CALLEE_BLOCK, CALLEE_LAYER, CALLEE_OP } callee_kind;

static const fe_block *find_block(const fe_program *prog, const char *name)
{
    for (int i = 0; i < prog->nblocks; i++)
        if (!strcmp(prog->blocks[i]->name, name)) return prog->blocks[i];
    return NULL;
}

static int find_layer(const char *name)
{
    for (int i = 0; i < fe_nlayers; i++)
        if (!strcmp(fe_layers[i].name, name)) return i;
    return -1;
}

static const fe_metric *find_metric(const char *name)
{
    for (int i = 0; i < fe_nmetrics; i++)
        if (!strcmp(fe_metrics[i].name, name)) return &fe_metrics[i];
    return NULL;
}

/* An op the language may call: in the registry, computed (not a leaf), and
 * not the in-place write the training program uses. */
static int find_op(const char *name)
{
    int op = kiln_op_lookup(name);
    if (op < 0) return -1;
    const kiln_op_info *info = kiln_op_info_of(op);
    if (info->fusion == KILN_FUSE_LEAF || !strcmp(info->name, "assign")) return -1;
    return op;
}

/* What `name(...)` calls. Blocks must be defined before the call: `self` is
 * the block whose definition is being checked (a call to it is recursion),
 * and only blocks with an index below L->ndefined are defined. */
static kiln_status resolve_callee(lower *L, const char *name, fe_loc loc, const fe_block *self,
                                  callee_kind *kind, int *index)
{
    const fe_block *b = find_block(L->prog, name);
    if (b) {
        if (b == self)
            return fe_error(L->d, loc, KILN_ERR_INVALID, "block '%s' calls itself; recursion "
                            "is not supported (a block expands inline at each call)", name);
        if (b->index >= L->ndefined) {
            if (self)
                return fe_error(L->d, loc, KILN_ERR_INVALID, "block '%s' is used before its "
                                "definition at line %d; define it above block '%s'", name,
                                b->loc.line, self->name);
            return fe_error(L->d, loc, KILN_ERR_INVALID, "block '%s' is used before its "
                            "definition at line %d; move the definition above this line", name,
                            b->loc.line);
        }
        *kind = CALLEE_BLOCK;
        *index = b->index;
        return KILN_OK;
    }
    if ((*index = find_layer(name)) >= 0) {
        *kind = CALLEE_LAYER;
        return KILN_OK;
    }
    if ((*index = find_op(name)) >= 0) {
        *kind = CALLEE_OP;
        return KILN_OK;
    }
    if (find_metric(name))
        return fe_error(L->d, loc, KILN_ERR_INVALID, "'%s' is a metric; use it in its own "
                        "statement: metric %s(...)", name, name);
    fe_suggest s;
    fe_suggest_init(&s, name);
    for (int i = 0; i < KILN_OP_COUNT; i++)
        if (find_op(kiln_ops[i].name) >= 0) fe_suggest_add(&s, kiln_ops[i].name);
    for (int i = 0; i < fe_nlayers; i++) fe_suggest_add(&s, fe_layers[i].name);
    for (int i = 0; i < L->ndefined; i++) fe_suggest_add(&s, L->prog->blocks[i]->name);
    char hint[96];
    return fe_error(L->d, loc, KILN_ERR_NOT_FOUND, "unknown op or layer '%s'%s", name,
                    fe_suggest_hint(&s, hint, sizeof hint));
}

/* ---- expressions ---- */

static kiln_status eval(lower *L, const fe_expr *e, fe_value *out);

static kiln_status unknown_name(lower *L, const char *name, fe_loc loc)
{
    if (find_block(L->prog, name) || find_layer(name) >= 0 || find_op(name) >= 0)
        return fe_error(L->d, loc, KILN_ERR_NOT_FOUND, "'%s' is %s, not a value; call it: "
                        "%s(...)", name, find_block(L->prog, name) ? "a block"
                        : find_layer(name) >= 0 ? "a layer" : "an op", name);
    if (L->block && env_find(L->globals, name))
        return fe_error(L->d, loc, KILN_ERR_NOT_FOUND, "unknown name '%s' in block '%s': a "
                        "block sees only its parameters and its own names; pass '%s' as an "
                        "argument", name, L->block->name, name);
    fe_suggest s;
    fe_suggest_init(&s, name);
    for (int i = 0; i < L->env->n; i++) fe_suggest_add(&s, L->env->b[i].name);
    fe_suggest_add(&s, "B");
    char hint[96];
    return fe_error(L->d, loc, KILN_ERR_NOT_FOUND, "unknown name '%s'%s", name,
                    fe_suggest_hint(&s, hint, sizeof hint));
}

static kiln_status eval_name(lower *L, const fe_expr *e, fe_value *out)
{
    binding *b = env_find(L->env, e->str);
    if (b) {
        *out = b->v;
        return KILN_OK;
    }
    if (!strcmp(e->str, "B")) {
        *out = num_int(L->batch);
        return KILN_OK;
    }
    int t = dtype_of_name(e->str, false);
    if (t >= 0) {
        *out = (fe_value){.kind = V_DTYPE, .dtype = (kiln_dtype)t};
        return KILN_OK;
    }
    return unknown_name(L, e->str, e->loc);
}

static kiln_status eval_list(lower *L, const fe_expr *e, fe_value *out)
{
    if (e->list.n > KILN_MAX_ATTR_INTS)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "a list holds at most %d integers, "
                        "this one has %d", KILN_MAX_ATTR_INTS, e->list.n);
    *out = (fe_value){.kind = V_LIST, .n = e->list.n};
    for (int i = 0; i < e->list.n; i++) {
        fe_value v;
        kiln_status st = eval(L, e->list.items[i], &v);
        if (st) return st;
        if (v.kind != V_NUM || !v.is_int)
            return fe_error(L->d, expr_start(e->list.items[i]), KILN_ERR_INVALID,
                            "list elements must be integers, not %s", value_kind(&v));
        out->ints[i] = v.i;
    }
    /* Lists hold shapes, axes and permutations: the product of their
     * magnitudes bounds an element count, which shape rules multiply out. */
    int64_t prod = 1;
    for (int i = 0; i < out->n; i++) {
        int64_t v = out->ints[i];
        int64_t m = v >= 0 ? v : v == INT64_MIN ? INT64_MAX : -v;
        if (m && (__builtin_mul_overflow(prod, m, &prod) ||
                  prod > ((int64_t)1 << FE_MAX_NUMEL_LOG2)))
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "the list's values multiply past "
                            "2^%d; no shape holds that many elements", FE_MAX_NUMEL_LOG2);
    }
    return KILN_OK;
}

/* Arithmetic on two numbers. Integers stay integers, except a division
 * that does not come out even. */
static kiln_status fold(lower *L, char op, const fe_value *a, const fe_value *b, fe_loc loc,
                        fe_value *out)
{
    if (a->is_int && b->is_int) {
        int64_t r = 0;
        bool over = false;
        switch (op) {
        case '+': over = __builtin_add_overflow(a->i, b->i, &r); break;
        case '-': over = __builtin_sub_overflow(a->i, b->i, &r); break;
        case '*': over = __builtin_mul_overflow(a->i, b->i, &r); break;
        default:
            if (b->i == 0) return fe_error(L->d, loc, KILN_ERR_INVALID, "division by zero");
            if (b->i == -1) {
                over = __builtin_sub_overflow((int64_t)0, a->i, &r);
            } else if (a->i % b->i == 0) {
                r = a->i / b->i;
            } else {
                *out = num_float((double)a->i / (double)b->i);
                return KILN_OK;
            }
        }
        if (over)
            return fe_error(L->d, loc, KILN_ERR_INVALID, "integer overflow in %lld %c %lld",
                            (long long)a->i, op, (long long)b->i);
        *out = num_int(r);
        return KILN_OK;
    }
    double r;
    switch (op) {
    case '+': r = a->f + b->f; break;
    case '-': r = a->f - b->f; break;
    case '*': r = a->f * b->f; break;
    default:
        if (b->f == 0) return fe_error(L->d, loc, KILN_ERR_INVALID, "division by zero");
        r = a->f / b->f;
    }
    if (!isfinite(r)) return fe_error(L->d, loc, KILN_ERR_INVALID, "number overflow");
    *out = num_float(r);
    return KILN_OK;
}

/* A number used as a tensor operand: a scalar const of `like`'s dtype. */
static kiln_status scalar_like(lower *L, const fe_value *num, kiln_value like, fe_loc loc,
                               fe_value *out)
{
    kiln_dtype t = (kiln_dtype)L->g->nodes[like].dtype;
    if (!num->is_int && !kiln_dtype_is_float(t))
        return fe_error(L->d, loc, KILN_ERR_SHAPE, "the number %g meets a tensor of dtype %s; "
                        "cast the tensor to a float dtype first", num->f, kiln_dtype_name(t));
    set_loc(L, loc);
    kiln_value v = kiln_scalar(L->g, num->f, t);
    if (v < 0) return graph_error(L, loc, (kiln_status)v);
    *out = tensor(v);
    return KILN_OK;
}

static kiln_status build_op(lower *L, const char *name, int nin, const kiln_value *in,
                            int nattrs, const kiln_attr *attrs, fe_loc loc, fe_value *out)
{
    int op = kiln_op_lookup(name);
    if (op < 0)
        return fe_error(L->d, loc, KILN_ERR_NOT_FOUND, "the op '%s' is not in this build's "
                        "registry", name);
    set_loc(L, loc);
    kiln_value v = kiln_build(L->g, op, nin, in, nattrs, attrs);
    if (v < 0) return graph_error(L, loc, (kiln_status)v);
    *out = tensor(v);
    return KILN_OK;
}

static kiln_status eval_binary(lower *L, const fe_expr *e, fe_value *out)
{
    fe_value a, b;
    kiln_status st;
    if ((st = eval(L, e->bin.a, &a)) || (st = eval(L, e->bin.b, &b))) return st;
    const char *opname = e->bin.op == '+' ? "add" : e->bin.op == '-' ? "sub"
                         : e->bin.op == '*' ? "mul" : "div";
    if (a.kind == V_NUM && b.kind == V_NUM) return fold(L, e->bin.op, &a, &b, e->loc, out);
    const fe_value *bad = a.kind != V_TENSOR && a.kind != V_NUM ? &a
                          : b.kind != V_TENSOR && b.kind != V_NUM ? &b : NULL;
    if (bad)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "'%c' needs tensors or numbers, not %s",
                        e->bin.op, value_kind(bad));
    if (a.kind == V_NUM && (st = scalar_like(L, &a, b.t, expr_start(e->bin.a), &a))) return st;
    if (b.kind == V_NUM && (st = scalar_like(L, &b, a.t, expr_start(e->bin.b), &b))) return st;
    kiln_value in[2] = {a.t, b.t};
    return build_op(L, opname, 2, in, 0, NULL, e->loc, out);
}

static kiln_status eval_neg(lower *L, const fe_expr *e, fe_value *out)
{
    fe_value v;
    kiln_status st = eval(L, e->neg, &v);
    if (st) return st;
    if (v.kind == V_NUM) {
        if (v.is_int) {
            if (v.i == INT64_MIN)
                return fe_error(L->d, e->loc, KILN_ERR_INVALID, "integer overflow in -(%lld)",
                                (long long)v.i);
            *out = num_int(-v.i);
        } else {
            *out = num_float(-v.f);
        }
        return KILN_OK;
    }
    if (v.kind != V_TENSOR)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "'-' needs a tensor or a number, not %s",
                        value_kind(&v));
    return build_op(L, "neg", 1, &v.t, 0, NULL, e->loc, out);
}

/* ---- calls ---- */

/* A call's arguments, evaluated. */
typedef struct call_args {
    int n, npos; /* positional ones come first */
    fe_value *v;
    const fe_arg *a;
} call_args;

static fe_loc arg_loc(const call_args *c, int i)
{
    return c->a[i].kw ? c->a[i].kw_loc : expr_start(c->a[i].e);
}

static int count_tensors(const call_args *c)
{
    int n = 0;
    for (int i = 0; i < c->npos; i++) n += c->v[i].kind == V_TENSOR;
    return n;
}

static kiln_status arity_error(lower *L, fe_loc loc, const char *what, int want, int got)
{
    return fe_error(L->d, loc, KILN_ERR_INVALID, "%s takes %d tensor argument%s, got %d", what,
                    want, want == 1 ? "" : "s", got);
}

/* Binds the non-tensor arguments c[first..) to spec: positional ones in
 * order, then keywords by name. vals/given receive them, converted. */
static kiln_status bind_args(lower *L, const char *what, const char *noun,
                             const fe_argspec *spec, int ns, const call_args *c, int first,
                             fe_value *vals, bool *given)
{
    char desc[160], names[160];
    for (int s = 0; s < ns; s++) given[s] = false;
    int nextra = c->npos - first;
    if (nextra > ns) {
        spec_names(spec, ns, names, sizeof names);
        if (ns == 0)
            return fe_error(L->d, arg_loc(c, first + ns), KILN_ERR_INVALID, "%s takes no "
                            "arguments besides its tensor input%s", what,
                            first == 1 ? "" : "s");
        return fe_error(L->d, arg_loc(c, first + ns), KILN_ERR_INVALID, "too many arguments: "
                        "after its tensor input%s, %s takes %s", first == 1 ? "" : "s", what,
                        names);
    }
    for (int i = first; i < c->n; i++) {
        int s = i - first;
        if (c->a[i].kw) {
            for (s = 0; s < ns && strcmp(spec[s].name, c->a[i].kw); s++) {}
            if (s == ns) {
                fe_suggest sg;
                fe_suggest_init(&sg, c->a[i].kw);
                for (int k = 0; k < ns; k++) fe_suggest_add(&sg, spec[k].name);
                char hint[96];
                spec_names(spec, ns, names, sizeof names);
                return fe_error(L->d, c->a[i].kw_loc, KILN_ERR_NOT_FOUND, "unknown %s '%s' "
                                "for %s%s; it takes %s", noun, c->a[i].kw, what,
                                fe_suggest_hint(&sg, hint, sizeof hint), ns ? names : "none");
            }
            if (given[s])
                return fe_error(L->d, c->a[i].kw_loc, KILN_ERR_INVALID, "%s '%s' of %s is "
                                "given twice (by position and by name)", noun, spec[s].name,
                                what);
        }
        snprintf(desc, sizeof desc, "%s '%s' of %s", noun, spec[s].name, what);
        kiln_status st = convert(L, spec[s].kind, &c->v[i], arg_loc(c, i), desc, &vals[s]);
        if (st) return st;
        given[s] = true;
    }
    return KILN_OK;
}

static kiln_status call_op(lower *L, int op, const fe_expr *e, const call_args *c, fe_value *out)
{
    const kiln_op_info *info = kiln_op_info_of(op);
    fe_argspec spec[KILN_MAX_ATTRS];
    char names[KILN_MAX_ATTRS][KILN_ATTR_NAME_MAX];
    int ns = op_schema(info, spec, names);
    if (ns < 0)
        return fe_error(L->d, e->loc, KILN_ERR_INTERNAL, "op '%s' has a malformed attribute "
                        "schema", info->name);
    /* Tensor inputs: the op's arity (numbers there become scalars), or for a
     * variadic op every leading tensor. */
    int nin = 0;
    if (info->arity >= 0) {
        nin = info->arity;
        if (c->npos < nin) return arity_error(L, e->loc, info->name, nin, count_tensors(c));
    } else {
        while (nin < c->npos && c->v[nin].kind == V_TENSOR) nin++;
        if (nin == 0)
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "%s takes one or more tensor "
                            "arguments, got none", info->name);
    }
    for (int i = nin; i < c->npos; i++)
        if (c->v[i].kind == V_TENSOR) {
            if (info->arity < 0)
                return fe_error(L->d, arg_loc(c, i), KILN_ERR_INVALID, "%s: tensor arguments "
                                "come before the others", info->name);
            return arity_error(L, arg_loc(c, i), info->name, nin, count_tensors(c));
        }
    kiln_value in[FE_MAX_ARGS];
    int first_tensor = -1;
    for (int i = 0; i < nin; i++) {
        if (c->v[i].kind == V_TENSOR && first_tensor < 0) first_tensor = i;
        if (c->v[i].kind != V_TENSOR && c->v[i].kind != V_NUM)
            return fe_error(L->d, arg_loc(c, i), KILN_ERR_INVALID, "argument %d of %s must be "
                            "a tensor, not %s", i + 1, info->name, value_kind(&c->v[i]));
    }
    if (first_tensor < 0)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "%s needs a tensor argument; numbers "
                        "alone are computed with + - * /", info->name);
    for (int i = 0; i < nin; i++) {
        fe_value v = c->v[i];
        if (v.kind == V_NUM) {
            kiln_status st = scalar_like(L, &v, c->v[first_tensor].t, arg_loc(c, i), &v);
            if (st) return st;
        }
        in[i] = v.t;
    }
    fe_value vals[KILN_MAX_ATTRS];
    bool given[KILN_MAX_ATTRS];
    kiln_status st = bind_args(L, info->name, "attribute", spec, ns, c, nin, vals, given);
    if (st) return st;
    kiln_attr attrs[KILN_MAX_ATTRS];
    int na = 0;
    for (int s = 0; s < ns; s++) {
        if (!given[s] && spec[s].required)
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "%s needs the attribute '%s' (%s)",
                            info->name, spec[s].name, argkind_name(spec[s].kind));
        if (!given[s]) continue;
        const fe_value *v = &vals[s];
        switch (spec[s].kind) {
        case FA_INT: attrs[na++] = kiln_attr_int(spec[s].name, v->i); break;
        case FA_FLOAT: attrs[na++] = kiln_attr_float(spec[s].name, v->f); break;
        case FA_INTS: attrs[na++] = kiln_attr_ints(spec[s].name, v->n, v->ints); break;
        default: attrs[na++] = kiln_attr_dtype(spec[s].name, v->dtype); break;
        }
    }
    return build_op(L, info->name, nin, in, na, attrs, e->loc, out);
}

/* The value of an argument left out. */
static fe_value arg_default(const fe_argspec *spec)
{
    switch (spec->kind) {
    case FA_INTS: return (fe_value){.kind = V_LIST};
    case FA_STR: return (fe_value){.kind = V_STR};
    case FA_FLOAT: return num_float(spec->def);
    case FA_DTYPE: return (fe_value){.kind = V_DTYPE, .dtype = (kiln_dtype)spec->def};
    default: return num_int((int64_t)spec->def);
    }
}

static kiln_status call_layer(lower *L, int index, const fe_expr *e, const call_args *c,
                              fe_value *out)
{
    const fe_layer *ly = &fe_layers[index];
    int nt = 0;
    while (nt < c->npos && c->v[nt].kind == V_TENSOR) nt++;
    if (nt != ly->ninputs || count_tensors(c) != nt)
        return arity_error(L, e->loc, ly->name, ly->ninputs, count_tensors(c));
    /* The layer's own arguments, then the name every layer takes. */
    fe_argspec spec[FE_LAYER_MAX_ARGS + 1];
    int ns = ly->nargs;
    memcpy(spec, ly->args, (size_t)ns * sizeof *spec);
    spec[ns++] = (fe_argspec){"name", FA_STR, false, 0};
    fe_value vals[FE_LAYER_MAX_ARGS + 1];
    bool given[FE_LAYER_MAX_ARGS + 1];
    kiln_status st = bind_args(L, ly->name, "argument", spec, ns, c, nt, vals, given);
    if (st) return st;
    for (int s = 0; s < ns; s++) {
        if (given[s]) continue;
        if (spec[s].required)
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "%s needs the argument '%s' (%s)",
                            ly->name, spec[s].name, argkind_name(spec[s].kind));
        vals[s] = arg_default(&spec[s]);
    }
    /* Parameter names: the scope's prefix, then the given name or the
     * layer's kind and how many of that kind this scope has made. */
    int k = L->scope->counts[index]++;
    const char *given_name = vals[ns - 1].str;
    if (given_name && !*given_name)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "%s: name=\"\" is empty; give the "
                        "layer a name or leave name= out", ly->name);
    char pname[FE_MAX_PARAM_NAME + 1], num[24];
    snprintf(num, sizeof num, "%d", k);
    const char *parts[3] = {L->scope->prefix, given_name ? given_name : ly->name,
                            given_name ? "" : num};
    size_t len = 0;
    for (int i = 0; i < 3; i++) len += strlen(parts[i]);
    if (len > FE_MAX_PARAM_NAME)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "the parameter names of this %s would "
                        "pass %d characters ('%.40s...'); use shorter names or fewer nested "
                        "blocks", ly->name, FE_MAX_PARAM_NAME, L->scope->prefix);
    pname[0] = 0;
    for (int i = 0; i < 3; i++) strcat(pname, parts[i]);
    /* A layer's parameters are "<pname>.<something>": refuse a name whose
     * parameters already exist, before the layer makes half of its own. */
    size_t plen = strlen(pname);
    for (int32_t i = 0; i < L->g->nnodes; i++) {
        const kiln_node *n = &L->g->nodes[i];
        if (n->name && !strncmp(n->name, pname, plen) && n->name[plen] == '.')
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "the layer name '%s' is already "
                            "used by the parameter '%s' (line %d); give this layer another name",
                            pname, n->name, n->loc.line);
    }
    kiln_value in[FE_MAX_ARGS];
    for (int i = 0; i < nt; i++) in[i] = c->v[i].t;
    set_loc(L, e->loc);
    kiln_value v = ly->build(L->g, in, vals, pname);
    if (v < 0) return graph_error(L, e->loc, (kiln_status)v);
    *out = tensor(v);
    return KILN_OK;
}

static kiln_status lower_stmt(lower *L, const fe_stmt *s, fe_value *ret);

static kiln_status call_block(lower *L, int index, const fe_expr *e, const call_args *c,
                              fe_value *out)
{
    const fe_block *b = L->prog->blocks[index];
    if (c->npos > b->nparams)
        return fe_error(L->d, arg_loc(c, b->nparams), KILN_ERR_INVALID, "block '%s' takes %d "
                        "argument%s, got %d", b->name, b->nparams, b->nparams == 1 ? "" : "s",
                        c->npos);
    env local = {0};
    scope sc = {0};
    scope *outer_scope = L->scope;
    env *outer_env = L->env;
    const fe_block *outer_block = L->block;
    kiln_status st = KILN_OK;
    fe_value *vals = calloc((size_t)(b->nparams ? b->nparams : 1), sizeof *vals);
    bool *given = calloc((size_t)(b->nparams ? b->nparams : 1), sizeof *given);
    sc.counts = calloc((size_t)(fe_nlayers + L->prog->nblocks), sizeof *sc.counts);
    if (!vals || !given || !sc.counts) {
        st = fe_nomem(L->d);
        goto done;
    }
    for (int i = 0; i < c->n; i++) {
        int p = i;
        if (c->a[i].kw) {
            for (p = 0; p < b->nparams && strcmp(b->params[p].name, c->a[i].kw); p++) {}
            if (p == b->nparams) {
                fe_suggest sg;
                fe_suggest_init(&sg, c->a[i].kw);
                for (int k = 0; k < b->nparams; k++) fe_suggest_add(&sg, b->params[k].name);
                char hint[96];
                st = fe_error(L->d, c->a[i].kw_loc, KILN_ERR_NOT_FOUND, "block '%s' has no "
                              "parameter '%s'%s", b->name, c->a[i].kw,
                              fe_suggest_hint(&sg, hint, sizeof hint));
                goto done;
            }
            if (given[p]) {
                st = fe_error(L->d, c->a[i].kw_loc, KILN_ERR_INVALID, "argument '%s' of block "
                              "'%s' is given twice (by position and by name)", b->params[p].name,
                              b->name);
                goto done;
            }
        }
        vals[p] = c->v[i];
        given[p] = true;
    }
    /* Defaults are constants, evaluated where nothing but B and dtypes is visible. */
    L->env = &local;
    for (int p = 0; p < b->nparams && !st; p++) {
        if (given[p]) continue;
        if (!b->params[p].def)
            st = fe_error(L->d, e->loc, KILN_ERR_INVALID, "block '%s' needs the argument '%s'",
                          b->name, b->params[p].name);
        else
            st = eval(L, b->params[p].def, &vals[p]);
    }
    for (int p = 0; p < b->nparams && !st; p++)
        st = env_set(L, &local, b->params[p].name, vals[p], b->params[p].loc, false);
    if (st) goto done;
    int k = outer_scope->counts[fe_nlayers + index]++;
    size_t len = strlen(outer_scope->prefix) + strlen(b->name) + 16;
    if (!(sc.prefix = malloc(len))) {
        st = fe_nomem(L->d);
        goto done;
    }
    snprintf(sc.prefix, len, "%s%s%d.", outer_scope->prefix, b->name, k);
    L->scope = &sc;
    L->block = b;
    for (int i = 0; i < b->nbody && !st; i++) st = lower_stmt(L, b->body[i], out);
done:
    L->env = outer_env;
    L->scope = outer_scope;
    L->block = outer_block;
    free(local.b);
    free(sc.prefix);
    free(sc.counts);
    free(vals);
    free(given);
    return st;
}

static kiln_status eval_call(lower *L, const fe_expr *e, fe_value *out)
{
    callee_kind kind;
    int index;
    kiln_status st = resolve_callee(L, e->call.name, e->loc, NULL, &kind, &index);
    if (st) return st;
    call_args c = {.n = e->call.nargs, .a = e->call.args};
    c.v = calloc((size_t)(c.n ? c.n : 1), sizeof *c.v);
    if (!c.v) return fe_nomem(L->d);
    while (c.npos < c.n && !c.a[c.npos].kw) c.npos++;
    for (int i = 0; i < c.n && !st; i++) st = eval(L, c.a[i].e, &c.v[i]);
    /* A layer that is also an op (conv2d): the op when the second argument
     * is a tensor (conv2d(x, w, stride=2)), the layer otherwise
     * (conv2d(x, 32, kernel=3)). */
    if (!st && kind == CALLEE_LAYER && c.npos >= 2 && c.v[1].kind == V_TENSOR &&
        find_op(e->call.name) >= 0) {
        kind = CALLEE_OP;
        index = find_op(e->call.name);
    }
    if (!st) {
        if (kind == CALLEE_BLOCK) st = call_block(L, index, e, &c, out);
        else if (kind == CALLEE_LAYER) st = call_layer(L, index, e, &c, out);
        else st = call_op(L, index, e, &c, out);
    }
    free(c.v);
    return st;
}

static kiln_status eval(lower *L, const fe_expr *e, fe_value *out)
{
    if (L->depth >= FE_MAX_EVAL_DEPTH)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "the model nests too deeply (more than "
                        "%d levels of expressions and block calls)", FE_MAX_EVAL_DEPTH);
    if (L->g->nnodes > FE_MAX_NODES)
        return fe_error(L->d, e->loc, KILN_ERR_INVALID, "the model grows past %d graph nodes "
                        "(each block call expands its body again)", FE_MAX_NODES);
    L->depth++;
    kiln_status st = KILN_OK;
    switch (e->kind) {
    case EX_NUM:
        *out = e->num.is_int ? num_int(e->num.i) : num_float(e->num.f);
        break;
    case EX_STR: *out = (fe_value){.kind = V_STR, .str = e->str}; break;
    case EX_NAME: st = eval_name(L, e, out); break;
    case EX_LIST: st = eval_list(L, e, out); break;
    case EX_CALL: st = eval_call(L, e, out); break;
    case EX_BIN: st = eval_binary(L, e, out); break;
    case EX_NEG: st = eval_neg(L, e, out); break;
    }
    L->depth--;
    return st;
}

/* ---- statements ---- */

/* Gives a computed value its role (output, loss, metric) and name. */
static kiln_status mark(lower *L, const fe_value *v, kiln_role role, const char *name, fe_loc loc)
{
    if (v->kind != V_TENSOR)
        return fe_error(L->d, loc, KILN_ERR_INVALID, "the %s must be a tensor, not %s",
                        kiln_role_name(role), value_kind(v));
    const kiln_node *n = &L->g->nodes[v->t];
    if (kiln_node_is_leaf(n))
        return fe_error(L->d, loc, KILN_ERR_INVALID, "'%s' is a leaf (%s), not a computed "
                        "value; a model's %s must be computed from its inputs",
                        n->name ? n->name : "?", kiln_role_name((kiln_role)n->role),
                        kiln_role_name(role));
    if (n->role != KILN_ROLE_NONE)
        return fe_error(L->d, loc, KILN_ERR_INVALID, "this value is already the %s '%s'; a "
                        "value has one role", kiln_role_name((kiln_role)n->role),
                        n->name ? n->name : "?");
    set_loc(L, loc);
    kiln_status st = role == KILN_ROLE_OUTPUT ? kiln_set_output(L->g, v->t, name)
                     : role == KILN_ROLE_LOSS ? kiln_set_loss(L->g, v->t, name)
                                              : kiln_set_metric(L->g, v->t, name);
    return st ? graph_error(L, loc, st) : KILN_OK;
}

static kiln_status lower_decl(lower *L, const fe_stmt *s)
{
    const char *kw = s->kind == ST_INPUT ? "input" : "target";
    if (!strcmp(s->name, "B"))
        return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "'B' is the batch size; give the "
                        "%s another name", kw);
    binding *old = env_find(L->env, s->name);
    if (old && old->decl)
        return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "duplicate declaration of '%s' "
                        "(first declared at line %d)", s->name, old->loc.line);
    if (old)
        return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "'%s' is already assigned at line "
                        "%d; declare inputs and targets under names of their own", s->name,
                        old->loc.line);
    int t = dtype_of_name(s->dtype, true);
    if (t < 0) {
        fe_suggest sg;
        fe_suggest_init(&sg, s->dtype);
        for (size_t k = 0; k < sizeof decl_dtypes / sizeof decl_dtypes[0]; k++)
            fe_suggest_add(&sg, kiln_dtype_name(decl_dtypes[k]));
        char hint[96];
        return fe_error(L->d, s->dtype_loc, KILN_ERR_INVALID, "unknown dtype '%s'%s; the "
                        "dtypes are f32, f64, i32, i64, u8 and bool", s->dtype,
                        fe_suggest_hint(&sg, hint, sizeof hint));
    }
    int64_t shape[KILN_MAX_RANK];
    for (int i = 0; i < s->rank; i++) {
        fe_value v;
        kiln_status st = eval(L, s->dims[i], &v);
        if (st) return st;
        fe_loc at = expr_start(s->dims[i]);
        if (v.kind != V_NUM || !v.is_int)
            return fe_error(L->d, at, KILN_ERR_INVALID, "a dimension must be an integer or B, "
                            "not %s", value_kind(&v));
        if (v.i < 1)
            return fe_error(L->d, at, KILN_ERR_INVALID, "a dimension must be at least 1, got "
                            "%lld", (long long)v.i);
        shape[i] = v.i;
    }
    /* Shape rules multiply dimensions; keep every product far from overflow. */
    int64_t numel = 1;
    for (int i = 0; i < s->rank; i++)
        if (__builtin_mul_overflow(numel, shape[i], &numel) ||
            numel > ((int64_t)1 << FE_MAX_NUMEL_LOG2))
            return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "'%s' would hold more than "
                            "2^%d elements", s->name, FE_MAX_NUMEL_LOG2);
    set_loc(L, s->name_loc);
    kiln_value v = s->kind == ST_INPUT ? kiln_input(L->g, s->name, (kiln_dtype)t, s->rank, shape)
                                       : kiln_target(L->g, s->name, (kiln_dtype)t, s->rank, shape);
    if (v < 0) return graph_error(L, s->name_loc, (kiln_status)v);
    return env_set(L, L->env, s->name, tensor(v), s->name_loc, true);
}

static kiln_status lower_metric(lower *L, const fe_stmt *s)
{
    const fe_expr *e = s->e;
    const fe_metric *m = find_metric(e->call.name);
    if (!m) {
        fe_suggest sg;
        fe_suggest_init(&sg, e->call.name);
        char names[160] = "", hint[96];
        size_t o = 0;
        for (int i = 0; i < fe_nmetrics; i++) {
            fe_suggest_add(&sg, fe_metrics[i].name);
            o += (size_t)snprintf(names + o, sizeof names - o, i ? ", %s" : "%s",
                                  fe_metrics[i].name);
        }
        return fe_error(L->d, e->loc, KILN_ERR_NOT_FOUND, "unknown metric '%s'%s; the metrics "
                        "are: %s", e->call.name, fe_suggest_hint(&sg, hint, sizeof hint), names);
    }
    /* Tensor inputs first, then the metric's own arguments, as a layer's. */
    call_args c = {.n = e->call.nargs, .a = e->call.args};
    c.v = calloc((size_t)(c.n ? c.n : 1), sizeof *c.v);
    if (!c.v) return fe_nomem(L->d);
    while (c.npos < c.n && !c.a[c.npos].kw) c.npos++;
    kiln_status st = KILN_OK;
    for (int i = 0; i < c.n && !st; i++) st = eval(L, c.a[i].e, &c.v[i]);
    kiln_value in[FE_MAX_ARGS];
    for (int i = 0; i < m->ninputs && !st; i++) {
        if (i >= c.npos) st = arity_error(L, e->loc, m->name, m->ninputs, count_tensors(&c));
        else if (c.v[i].kind != V_TENSOR)
            st = fe_error(L->d, arg_loc(&c, i), KILN_ERR_INVALID, "argument %d of metric %s "
                          "must be a tensor, not %s", i + 1, m->name, value_kind(&c.v[i]));
        else in[i] = c.v[i].t;
    }
    fe_value vals[FE_METRIC_MAX_ARGS];
    bool given[FE_METRIC_MAX_ARGS];
    if (!st) st = bind_args(L, m->name, "argument", m->args, m->nargs, &c, m->ninputs, vals, given);
    free(c.v);
    if (st) return st;
    for (int k = 0; k < m->nargs; k++) {
        if (!given[k] && m->args[k].required)
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "%s needs the argument '%s' (%s)",
                            m->name, m->args[k].name, argkind_name(m->args[k].kind));
        if (!given[k]) vals[k] = arg_default(&m->args[k]);
    }
    set_loc(L, e->loc);
    kiln_metric_kind kind = KILN_METRIC_MEAN;
    kiln_value v = m->build(L->g, in, vals, given, &kind);
    if (v < 0) return graph_error(L, e->loc, (kiln_status)v);
    fe_value val = tensor(v);
    fe_loc at = s->name ? s->name_loc : e->loc;
    if ((st = mark(L, &val, KILN_ROLE_METRIC, s->name ? s->name : m->name, at))) return st;
    st = kind == KILN_METRIC_MEAN ? KILN_OK : kiln_set_metric_kind(L->g, v, kind);
    return st ? graph_error(L, at, st) : KILN_OK;
}

/* Checks a block definition: every call in it resolves, to an op, a layer
 * or a block defined above (so blocks can never recurse), and parameter
 * defaults are constants. */
static kiln_status check_expr(lower *L, const fe_block *b, const fe_expr *e, bool constant)
{
    kiln_status st = KILN_OK;
    switch (e->kind) {
    case EX_CALL: {
        if (constant)
            return fe_error(L->d, e->loc, KILN_ERR_INVALID, "a parameter's default must be a "
                            "constant (a number, list, string, dtype, true or false)");
        callee_kind kind;
        int index;
        if ((st = resolve_callee(L, e->call.name, e->loc, b, &kind, &index))) return st;
        for (int i = 0; i < e->call.nargs && !st; i++)
            st = check_expr(L, b, e->call.args[i].e, constant);
        return st;
    }
    case EX_LIST:
        for (int i = 0; i < e->list.n && !st; i++) st = check_expr(L, b, e->list.items[i], constant);
        return st;
    case EX_BIN:
        if ((st = check_expr(L, b, e->bin.a, constant))) return st;
        return check_expr(L, b, e->bin.b, constant);
    case EX_NEG: return check_expr(L, b, e->neg, constant);
    default: return KILN_OK;
    }
}

static kiln_status check_block(lower *L, const fe_block *b)
{
    if (find_layer(b->name) >= 0 || find_op(b->name) >= 0 || find_metric(b->name))
        return fe_error(L->d, b->loc, KILN_ERR_INVALID, "block '%s' has the name of %s; choose "
                        "another name", b->name, find_layer(b->name) >= 0 ? "a layer"
                        : find_op(b->name) >= 0 ? "an op" : "a metric");
    kiln_status st = KILN_OK;
    for (int i = 0; i < b->nparams && !st; i++) {
        if (!strcmp(b->params[i].name, "B"))
            return fe_error(L->d, b->params[i].loc, KILN_ERR_INVALID, "'B' is the batch size; "
                            "give the parameter another name");
        if (b->params[i].def) st = check_expr(L, b, b->params[i].def, true);
    }
    for (int i = 0; i < b->nbody && !st; i++) st = check_expr(L, b, b->body[i]->e, false);
    return st;
}

/* dim NAME = EXPR: NAME is the caller's value for it (kiln_model_load_dims),
 * else EXPR; either must be an integer of at least 1. */
static kiln_status lower_dim(lower *L, const fe_stmt *s)
{
    if (!strcmp(s->name, "B"))
        return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "'B' is the batch size, set when "
                        "the model is loaded; give the dim another name");
    if (env_find(L->env, s->name))
        return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "'%s' is already defined; a dim "
                        "needs a name of its own", s->name);
    fe_value v;
    kiln_status st = eval(L, s->e, &v);
    if (st) return st;
    if (v.kind != V_NUM || !v.is_int || v.i < 1)
        return fe_error(L->d, expr_start(s->e), KILN_ERR_INVALID, "the default of dim '%s' must "
                        "be an integer of at least 1", s->name);
    for (int i = 0; i < L->ndims; i++) {
        if (!L->dims[i].name || strcmp(L->dims[i].name, s->name)) continue;
        if (L->dims[i].value < 1)
            return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "dim '%s' must be at least 1, "
                            "was given %lld", s->name, (long long)L->dims[i].value);
        v = num_int(L->dims[i].value);
        L->dim_used[i] = true;
    }
    return env_set(L, L->env, s->name, v, s->name_loc, false);
}

/* Puts the parameters made since the last call in the current group. */
static void group_params(lower *L)
{
    for (int32_t i = L->group_mark; i < L->g->nnodes; i++)
        if (L->g->nodes[i].role == KILN_ROLE_PARAM) L->g->nodes[i].group = (uint8_t)L->group;
    L->group_mark = L->g->nnodes;
}

/* group NAME: groups are numbered in the order their names first appear,
 * after an implicit group 0 holding the parameters made before the first
 * `group` (when there are any); naming a group again returns to it. */
static kiln_status lower_group(lower *L, const fe_stmt *s)
{
    if (L->ngroups == 0) {
        for (int32_t i = 0; i < L->g->nnodes && !L->ngroups; i++)
            if (L->g->nodes[i].role == KILN_ROLE_PARAM) L->ngroups = 1;
    }
    group_params(L);
    for (int k = 0; k < L->ngroups; k++)
        if (L->group_names[k] && !strcmp(L->group_names[k], s->name)) {
            L->group = k;
            return KILN_OK;
        }
    if (L->ngroups == KILN_MAX_PARAM_GROUPS)
        return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "too many parameter groups (at "
                        "most %d)", KILN_MAX_PARAM_GROUPS);
    L->group_names[L->ngroups] = s->name;
    L->group_locs[L->ngroups] = s->name_loc;
    L->group = L->ngroups++;
    return KILN_OK;
}

/* After the last statement: the last group's parameters, and no empty group. */
static kiln_status end_groups(lower *L)
{
    group_params(L);
    bool used[KILN_MAX_PARAM_GROUPS] = {false};
    for (int32_t i = 0; i < L->g->nnodes; i++)
        if (L->g->nodes[i].role == KILN_ROLE_PARAM) used[L->g->nodes[i].group] = true;
    for (int k = 0; k < L->ngroups; k++)
        if (!used[k])
            return fe_error(L->d, L->group_locs[k], KILN_ERR_INVALID, "parameter group '%s' has "
                            "no parameters: a group holds the parameters made after its 'group' "
                            "statement, up to the next one", L->group_names[k]);
    return KILN_OK;
}

static kiln_status lower_stmt(lower *L, const fe_stmt *s, fe_value *ret)
{
    fe_value v;
    kiln_status st;
    switch (s->kind) {
    case ST_INPUT:
    case ST_TARGET: return lower_decl(L, s);
    case ST_ASSIGN:
        if (!strcmp(s->name, "B"))
            return fe_error(L->d, s->name_loc, KILN_ERR_INVALID, "'B' is the batch size and "
                            "cannot be assigned");
        if ((st = eval(L, s->e, &v))) return st;
        if (!L->block && !strcmp(s->name, "loss")) {
            L->has_loss = true;
            L->loss = v;
            L->loss_loc = expr_start(s->e);
        }
        return env_set(L, L->env, s->name, v, s->name_loc, false);
    case ST_DIM: return lower_dim(L, s);
    case ST_GROUP: return lower_group(L, s);
    case ST_RETURN: return eval(L, s->e, ret);
    case ST_METRIC: return lower_metric(L, s);
    case ST_OUTPUT:
        if ((st = eval(L, s->e, &v))) return st;
        return mark(L, &v, KILN_ROLE_OUTPUT, s->name, expr_start(s->e));
    case ST_BLOCK:
        if ((st = check_block(L, s->block))) return st;
        L->ndefined++;
        return KILN_OK;
    }
    return KILN_OK;
}

kiln_status fe_lower(fe_diag *d, const fe_program *prog, int64_t batch, const kiln_dim *dims,
                     int ndims, kiln_graph **out)
{
    *out = NULL;
    lower L = {.d = d, .prog = prog, .batch = batch, .dims = dims, .ndims = ndims > 0 ? ndims : 0};
    env globals = {0};
    scope top = {.prefix = (char *)""};
    L.env = L.globals = &globals;
    L.scope = &top;
    kiln_status st = KILN_OK;
    top.counts = calloc((size_t)(fe_nlayers + prog->nblocks), sizeof *top.counts);
    L.g = kiln_graph_new(prog->name);
    if (!top.counts || !L.g || !(L.file = kiln_graph_intern_file(L.g, d->file ? d->file : "<model>"))) {
        st = fe_nomem(d);
        goto done;
    }
    if (L.ndims && !(L.dim_used = calloc((size_t)L.ndims, sizeof *L.dim_used))) {
        st = fe_nomem(d);
        goto done;
    }
    for (int i = 0; i < prog->nstmts && !st; i++) st = lower_stmt(&L, prog->stmts[i], NULL);
    for (int i = 0; i < L.ndims && !st; i++) {
        if (L.dim_used[i]) continue;
        char have[256] = "";
        size_t len = 0;
        for (int k = 0; k < prog->nstmts; k++) {
            const fe_stmt *s = prog->stmts[k];
            if (s->kind != ST_DIM || len + strlen(s->name) + 3 >= sizeof have) continue;
            len += (size_t)snprintf(have + len, sizeof have - len, "%s%s", len ? ", " : "", s->name);
        }
        st = fe_error_noloc(d, KILN_ERR_NOT_FOUND, "the model declares no dim '%s' (%s%s); "
                            "declare it with 'dim %s = <default>' before its first use",
                            dims[i].name ? dims[i].name : "(null)", len ? "its dims: " : "it declares none",
                            have, dims[i].name ? dims[i].name : "NAME");
    }
    if (!st) st = end_groups(&L);
    if (!st && L.has_loss) st = mark(&L, &L.loss, KILN_ROLE_LOSS, "loss", L.loss_loc);
done:
    free(globals.b);
    free(top.counts);
    free(L.dim_used);
    if (st) {
        kiln_graph_free(L.g);
        return st;
    }
    L.g->cur_loc = (kiln_loc){0};
    *out = L.g;
    return KILN_OK;
}
