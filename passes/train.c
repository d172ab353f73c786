/* passes/train.c — training- and evaluation-program assembly.
 *
 * Expects: a verified forward graph with one LOSS node (a float scalar) and
 * at least one PARAM leaf.
 * Guarantees: a new graph holding the forward program, its metric partials,
 * the backward program (passes/autodiff.c) and the optimizer update as graph
 * ops: for every parameter, `assign` ops write the new parameter and its
 * optimizer state in place. The model's train_eval nodes are resolved first
 * (passes/mode.c): the training program keeps their training values and the
 * model's own assigns to state (running statistics), the evaluation program
 * their evaluation values and none of those assigns. Hyperparameters are scalar HPARAM leaves, so a
 * learning-rate schedule never forces a recompile. The update is written op
 * for op as torch.optim.AdamW / torch.optim.SGD (PyTorch 1.13) compute it.
 * The result has been through simplify, cse and dce and verifies.
 *
 * Parameter groups (kiln_set_param_group; the model language's `group`):
 * when the parameters span more than one group, group k's updates read its
 * learning rate as lr * "lr_mult.<k>" (an f32 HPARAM, 1 until the Learner
 * sets it: fastai's per-group lrs), and each assign writes
 * where("frozen.<k>" > 0, old, new), so a frozen group's parameters and
 * optimizer state keep their bytes exactly (PyTorch's requires_grad=False).
 * Batchnorm parameters ("<X>.weight"/"<X>.bias" beside the model state
 * "<X>.running_mean") read "frozen_bn.<k>" instead, so the Learner can keep
 * them training in a frozen group (fastai's train_bn). One group: none of
 * these exist and the program is the one built before groups existed.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

kiln_train_options kiln_train_defaults(void)
{
    kiln_train_options o;
    memset(&o, 0, sizeof o);
    o.optimizer = KILN_OPT_ADAMW;
    return o;
}

/* Short names for building the update. */
#define ADD(a, b) kiln_b2(g, KILN_OP_ADD, a, b)
#define SUB(a, b) kiln_b2(g, KILN_OP_SUB, a, b)
#define MUL(a, b) kiln_b2(g, KILN_OP_MUL, a, b)
#define DIV(a, b) kiln_b2(g, KILN_OP_DIV, a, b)
#define ONE(like) kiln_b_const_like(g, 1.0, like)

typedef struct hparams {
    kiln_value lr, mom, beta2, eps, wd, step;
    kiln_value bc1, bc2_sqrt; /* AdamW bias corrections, shared by all params */
} hparams;

/* One parameter's group: its learning rate and, with several groups, the
 * bool scalar that keeps the old values (frozen), or KILN_NO_VALUE. */
typedef struct pgroup {
    kiln_value lr, keep;
} pgroup;

/* dst := keep ? dst : v (every byte of dst kept when frozen). */
static kiln_value guarded(kiln_graph *g, kiln_value keep, kiln_value dst, kiln_value v)
{
    if (keep == KILN_NO_VALUE || v < 0) return v;
    kiln_value in[3] = {keep, dst, v};
    return kiln_build(g, KILN_OP_WHERE, 3, in, 0, NULL);
}

/* A scalar hyperparameter leaf; the model's own when it has one of that
 * name (dropout reads `step`). */
static kiln_value hparam(kiln_graph *g, const char *name, kiln_dtype t)
{
    int32_t have = kiln_graph_find(g, name);
    if (have >= 0 && g->nodes[have].op == KILN_OP_INPUT && g->nodes[have].role == KILN_ROLE_HPARAM &&
        g->nodes[have].rank == 0 && g->nodes[have].dtype == t)
        return have;
    return kiln_build_leaf(g, KILN_ROLE_HPARAM, name, t, 0, NULL, 0, NULL);
}

static kiln_value state_like(kiln_graph *g, int32_t param, const char *suffix)
{
    char name[512];
    const kiln_node *p = &g->nodes[param];
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, p->shape, sizeof shape);
    snprintf(name, sizeof name, "%s.%s", p->name, suffix);
    return kiln_build_leaf(g, KILN_ROLE_STATE, name, (kiln_dtype)p->dtype, p->rank, shape, 0,
                           NULL);
}

static kiln_value assign(kiln_graph *g, kiln_value dst, kiln_value v)
{
    return kiln_b2(g, KILN_OP_ASSIGN, dst, v);
}

/* The parameter's dtype may differ from the hyperparameters' (f64 graphs in
 * tests): hyperparameters are cast to it. */
static kiln_value as(kiln_graph *g, kiln_value v, int32_t like)
{
    if (v < 0 || g->nodes[v].dtype == g->nodes[like].dtype) return v;
    kiln_attr to = kiln_attr_dtype("to", (kiln_dtype)g->nodes[like].dtype);
    return kiln_build(g, KILN_OP_CAST, 1, &v, 1, &to);
}

/* torch.optim.AdamW, one parameter:
 *   p  = p * (1 - lr*wd)
 *   m  = beta1*m + (1-beta1)*grad
 *   v  = beta2*v + (1-beta2)*grad^2
 *   p  = p - (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps),  bc_i = 1 - beta_i^step */
static kiln_status adamw_update(kiln_graph *g, const hparams *h, const pgroup *pg, int32_t p,
                                int32_t grad)
{
    kiln_value m = state_like(g, p, "exp_avg"), v = state_like(g, p, "exp_avg_sq");
    if (m < 0) return (kiln_status)m;
    if (v < 0) return (kiln_status)v;
    kiln_value lr = as(g, pg->lr, p), b1 = as(g, h->mom, p), b2 = as(g, h->beta2, p);
    kiln_value wd = as(g, h->wd, p), eps = as(g, h->eps, p);
    kiln_value bc1 = as(g, h->bc1, p), bc2s = as(g, h->bc2_sqrt, p);
    kiln_value p1 = MUL(p, SUB(ONE(lr), MUL(lr, wd)));
    kiln_value m1 = ADD(MUL(m, b1), MUL(grad, SUB(ONE(b1), b1)));
    kiln_value v1 = ADD(MUL(v, b2), MUL(MUL(grad, grad), SUB(ONE(b2), b2)));
    kiln_value denom = ADD(DIV(kiln_b1(g, KILN_OP_SQRT, v1), bc2s), eps);
    kiln_value p2 = SUB(p1, MUL(DIV(lr, bc1), DIV(m1, denom)));
    kiln_value r[3] = {assign(g, p, guarded(g, pg->keep, p, p2)),
                       assign(g, m, guarded(g, pg->keep, m, m1)),
                       assign(g, v, guarded(g, pg->keep, v, v1))};
    for (int i = 0; i < 3; i++)
        if (r[i] < 0) return (kiln_status)r[i];
    return KILN_OK;
}

/* torch.optim.SGD (dampening 0), one parameter:
 *   d = grad + wd*p;  buf = mom*buf + d;  d = nesterov ? d + mom*buf : buf;
 *   p = p - lr*d.  (PyTorch's first step sets buf = d, which is the same
 *   thing with buf starting at zero.) */
static kiln_status sgd_update(kiln_graph *g, const hparams *h, const pgroup *pg, int32_t p,
                              int32_t grad, int nesterov)
{
    kiln_value buf = state_like(g, p, "momentum_buffer");
    if (buf < 0) return (kiln_status)buf;
    kiln_value lr = as(g, pg->lr, p), mom = as(g, h->mom, p), wd = as(g, h->wd, p);
    kiln_value d = ADD(grad, MUL(p, wd));
    kiln_value b1 = ADD(MUL(buf, mom), d);
    kiln_value step = nesterov ? ADD(d, MUL(b1, mom)) : b1;
    kiln_value p1 = SUB(p, MUL(step, lr));
    kiln_value r[2] = {assign(g, p, guarded(g, pg->keep, p, p1)),
                       assign(g, buf, guarded(g, pg->keep, buf, b1))};
    for (int i = 0; i < 2; i++)
        if (r[i] < 0) return (kiln_status)r[i];
    return KILN_OK;
}

static void after(const kiln_train_options *opt, const char *pass, const kiln_graph *g)
{
    if (opt && opt->after_pass) opt->after_pass(pass, g, opt->user);
}

static kiln_status run_pass(kiln_graph *g, const kiln_train_options *opt, const char *pass)
{
    kiln_status st = kiln_run_pass(g, pass);
    if (!st) after(opt, pass, g);
    return st;
}

/* Names gradient `grad` as the output "grad.<param>", through an identity
 * copy when the node already carries another name. */
static kiln_status name_grad(kiln_graph *g, int32_t param, int32_t *grad)
{
    char name[512];
    snprintf(name, sizeof name, "grad.%s", g->nodes[param].name);
    if (g->nodes[*grad].name || g->nodes[*grad].role != KILN_ROLE_NONE) {
        kiln_attr s = kiln_attr_ints("shape", g->nodes[*grad].rank, g->nodes[*grad].shape);
        int32_t copy = kiln_build(g, kiln_op_lookup("reshape"), 1, grad, 1, &s);
        if (copy < 0) return (kiln_status)copy;
        *grad = copy;
    }
    return kiln_set_output(g, *grad, name);
}

static kiln_status find_loss(kiln_graph *g, int32_t *loss)
{
    *loss = -1;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].role == KILN_ROLE_LOSS) {
            if (*loss >= 0)
                return kiln_errorf(g, KILN_ERR_INVALID, "graph '%s' has two losses (%%%d and "
                                   "%%%d)", g->name, *loss, i);
            *loss = i;
        }
    if (*loss < 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "graph '%s' has no loss: mark one with "
                           "kiln_set_loss (in a model file: loss = ...)", g->name);
    return KILN_OK;
}

/* Whether parameter p is a batchnorm one: "<X>.weight" or "<X>.bias" with
 * a STATE leaf "<X>.running_mean" (frontend/layers.c, kiln_batchnorm). */
static bool is_bn_param(const kiln_graph *g, int32_t p)
{
    const char *name = g->nodes[p].name, *dot = name ? strrchr(name, '.') : NULL;
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return false;
    char rm[512];
    snprintf(rm, sizeof rm, "%.*s.running_mean", (int)(dot - name), name);
    int32_t s = kiln_graph_find(g, rm);
    return s >= 0 && g->nodes[s].op == KILN_OP_INPUT && g->nodes[s].role == KILN_ROLE_STATE;
}

/* Group k's learning rate lr * lr_mult.<k> and its freeze flag (frozen.<k>,
 * or frozen_bn.<k> for batchnorm parameters) as a bool scalar. CSE merges
 * the copies made for each parameter of a group. */
static kiln_status group_of(kiln_graph *g, const hparams *h, int32_t p, pgroup *pg)
{
    char name[64];
    int k = g->nodes[p].group;
    snprintf(name, sizeof name, "lr_mult.%d", k);
    kiln_value mult = hparam(g, name, KILN_F32);
    snprintf(name, sizeof name, "%s.%d", is_bn_param(g, p) ? "frozen_bn" : "frozen", k);
    kiln_value frozen = hparam(g, name, KILN_F32);
    pg->lr = MUL(h->lr, mult);
    pg->keep = kiln_b2(g, KILN_OP_GT, frozen, kiln_b_const_like(g, 0.0, frozen));
    if (pg->lr < 0) return (kiln_status)pg->lr;
    if (pg->keep < 0) return (kiln_status)pg->keep;
    return KILN_OK;
}

static kiln_status build_train(kiln_graph *g, const kiln_train_options *opt)
{
    int32_t loss;
    kiln_status st = find_loss(g, &loss);
    if (st) return st;
    int32_t np = 0;
    for (int32_t i = 0; i < g->nnodes; i++) np += g->nodes[i].role == KILN_ROLE_PARAM;
    if (np == 0)
        return kiln_errorf(g, KILN_ERR_INVALID, "graph '%s' has no parameters to train",
                           g->name);
    int32_t *params = malloc((size_t)np * sizeof *params), *grads = malloc((size_t)np * sizeof *grads);
    if (!params || !grads) {
        free(params);
        free(grads);
        return kiln_errorf(g, KILN_ERR_NOMEM, "out of memory");
    }
    np = 0;
    for (int32_t i = 0; i < g->nnodes; i++)
        if (g->nodes[i].role == KILN_ROLE_PARAM) params[np++] = i;
    st = kiln_autodiff(g, loss, np, params, grads);
    if (!st) st = kiln_verify_after(g, "autodiff");
    if (!st) after(opt, "autodiff", g);
    for (int32_t k = 0; k < np && !st && opt->keep_grads; k++) st = name_grad(g, params[k], &grads[k]);

    kiln_dtype ht = KILN_F32;
    hparams h;
    memset(&h, -1, sizeof h);
    if (!st) {
        h.lr = hparam(g, "lr", ht);
        h.mom = hparam(g, "mom", ht);
        h.wd = hparam(g, "wd", ht);
        if (opt->optimizer == KILN_OPT_ADAMW) {
            h.beta2 = hparam(g, "beta2", ht);
            h.eps = hparam(g, "eps", ht);
            h.step = hparam(g, "step", ht);
            /* bc1 = 1 - beta1^step, bc2 = 1 - beta2^step, as exp(step*log(beta)) */
            kiln_value one = ONE(h.step);
            h.bc1 = SUB(one, kiln_b1(g, KILN_OP_EXP, MUL(h.step, kiln_b1(g, KILN_OP_LOG, h.mom))));
            h.bc2_sqrt = kiln_b1(g, KILN_OP_SQRT,
                                 SUB(one, kiln_b1(g, KILN_OP_EXP,
                                                  MUL(h.step, kiln_b1(g, KILN_OP_LOG, h.beta2)))));
            if (h.bc2_sqrt < 0) st = (kiln_status)h.bc2_sqrt;
            if (h.bc1 < 0) st = (kiln_status)h.bc1;
        }
        if (h.wd < 0) st = (kiln_status)h.wd;
    }
    int ngroups = 1;
    for (int32_t k = 0; k < np; k++)
        if (g->nodes[params[k]].group + 1 > ngroups) ngroups = g->nodes[params[k]].group + 1;
    for (int32_t k = 0; k < np && !st; k++) {
        pgroup pg = {h.lr, KILN_NO_VALUE};
        if (ngroups > 1) st = group_of(g, &h, params[k], &pg);
        if (st) break;
        st = opt->optimizer == KILN_OPT_ADAMW
                 ? adamw_update(g, &h, &pg, params[k], grads[k])
                 : sgd_update(g, &h, &pg, params[k], grads[k], opt->nesterov);
    }
    if (!st) st = kiln_verify_after(g, "optimizer");
    if (!st) after(opt, "optimizer", g);
    free(params);
    free(grads);
    return st;
}

/* Runs build(g) on a copy of forward and hands the copy out (its error is
 * copied to forward's message on failure: forward is the caller's handle). */
static kiln_status assemble(const kiln_graph *forward, const kiln_train_options *opt,
                            kiln_graph **out, bool train)
{
    *out = NULL;
    kiln_graph *g = kiln_graph_clone(forward);
    if (!g) return KILN_ERR_NOMEM;
    /* train_eval and the running-state assigns of the model (passes/mode.c) */
    kiln_status st = run_pass(g, opt, train ? "train_mode" : "eval_mode");
    if (!st && train) st = build_train(g, opt);
    if (!st) st = run_pass(g, opt, "simplify");
    if (!st) st = run_pass(g, opt, "cse");
    if (!st) st = run_pass(g, opt, "dce");
    if (st) {
        /* The message goes on the caller's handle; only its error text changes. */
        kiln_errorf((kiln_graph *)forward, st, "%s", g->err);
        kiln_graph_free(g);
        return st;
    }
    *out = g;
    return KILN_OK;
}

kiln_status kiln_train_program(const kiln_graph *forward, const kiln_train_options *opt,
                               kiln_graph **out)
{
    if (!forward || !out) return KILN_ERR_INVALID;
    kiln_train_options d = kiln_train_defaults();
    return assemble(forward, opt ? opt : &d, out, true);
}

kiln_status kiln_eval_program(const kiln_graph *forward, kiln_graph **out)
{
    if (!forward || !out) return KILN_ERR_INVALID;
    kiln_train_options d = kiln_train_defaults();
    return assemble(forward, &d, out, false);
}
