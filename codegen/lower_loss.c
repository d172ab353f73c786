/* codegen/lower_loss.c — lowering rules of the losses (cross_entropy,
 * mse_loss, bce_with_logits, l1_loss) and of one_hot.
 *
 * Each computes what its reference in ir/ops_loss.c computes. The losses
 * are one kernel each with a scalar output: a sum in an f64 local over the
 * input in row-major order (the reference's order and precision), divided
 * by the count once at the end and stored in the output's dtype.
 *
 * cross_entropy, per sample s and spatial position p (logits [N, C, d...],
 * labels [N, d...]):
 *
 *   l = (i64)labels[s, p]
 *   valid = l != ignore_index
 *   check !valid || (0 <= l && l < C)       (before any load indexed by l)
 *   m = max_k x[s, k, p]                    (NaN-propagating)
 *   e = sum_k exp(x[s, k, p] - m)
 *   total += valid ? m + log(e) - x[s, valid ? l : 0, p] : 0
 *   count += valid ? 1 : 0
 *
 * and out = total / count (0/0: NaN when every label is ignored, as the
 * reference; the reference's m = 0 for a row of -inf changes no result, as
 * in softmax). Ignored positions are computed and then discarded with a
 * select, never with arithmetic, so a NaN or inf among their logits does not
 * reach the result; the label-indexed load reads index 0 for them, so it
 * stays in bounds whatever the ignored label holds.
 *
 * mse_loss, bce_with_logits and l1_loss sum a term per element (in f64):
 *   (a - b)^2              max(x, 0) - x t + log1p(exp(-|x|))         |a - b|
 * the second as the reference writes it (x > 0 ? x : 0, which keeps a NaN x
 * NaN through the x t term), stable for large |x|.
 *
 * one_hot writes every output element: labels[index without `axis`] equals
 * the index along `axis` ? 1 : 0 — a label outside [0, depth) matches no
 * index and gives a row of zeros.
 */
#include "ir/kernel.h"
#include "ir/ops.h"

#include <math.h>
#include <string.h>

#define BIN(op, a, b) kiln_kx_bin(kb, op, a, b)
#define UN(op, a) kiln_kx_un(kb, op, a)
#define F64(v) kiln_kx_float(kb, v, KILN_F64)
#define LOCAL(t) kiln_kx_local(kb, t)

/* Opens one loop per dimension of shape (outermost first), setting idx[d]
 * to each variable; returns how many it opened (close them with
 * end_loops). */
static int open_loops(kiln_kb *kb, int rank, const int64_t *shape, int32_t *idx)
{
    for (int d = 0; d < rank; d++) idx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, shape[d]));
    return rank;
}

static void end_loops(kiln_kb *kb, int n)
{
    while (n-- > 0) kiln_kb_end(kb);
}

/* Buffer `buf` at idx (an index of rank `rank`), converted to f64. */
static int32_t load_f64(kiln_kb *kb, int32_t buf, int rank, const int32_t *idx)
{
    return kiln_kx_cast(kb, kiln_kx_load_at(kb, buf, rank, idx), KILN_F64);
}

/* ---- cross_entropy ---- */

kiln_status kiln_cross_entropy_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node];
    const kiln_node *x = &g->nodes[n->inputs[0]], *lab = &g->nodes[n->inputs[1]];
    int64_t C = x->shape[1];
    int64_t ignore = kiln_attr_get_int(n, "ignore_index");
    int32_t xb = kiln_kb_in(kb, 0), lb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    int32_t total = kiln_kb_local(kb, KILN_F64), count = kiln_kb_local(kb, KILN_I64);
    int32_t l = kiln_kb_local(kb, KILN_I64);
    int32_t m = kiln_kb_local(kb, KILN_F64), e = kiln_kb_local(kb, KILN_F64);

    kiln_kb_set(kb, total, F64(0));
    kiln_kb_set(kb, count, kiln_kx_int(kb, 0));
    /* xi: the logits' index [s, k, p...]; the labels' index is xi without k */
    int32_t xi[KILN_MAX_RANK], li[KILN_MAX_RANK];
    int outer = open_loops(kb, lab->rank, lab->shape, li);
    xi[0] = li[0];
    memcpy(xi + 2, li + 1, (size_t)(lab->rank - 1) * sizeof *li);

    kiln_kb_set(kb, l, kiln_kx_cast(kb, kiln_kx_load_at(kb, lb, lab->rank, li), KILN_I64));
    int32_t valid = BIN(KX_NE, LOCAL(l), kiln_kx_int(kb, ignore));
    int32_t in_range = BIN(KX_AND, BIN(KX_GE, LOCAL(l), kiln_kx_int(kb, 0)),
                           BIN(KX_LT, LOCAL(l), kiln_kx_int(kb, C)));
    kiln_kb_check(kb, BIN(KX_OR, UN(KX_NOT, valid), in_range),
                  "cross_entropy: a label is outside [0, C) (and is not ignore_index)");

    /* m = max over the classes, then e = sum of exp(x - m) */
    kiln_kb_set(kb, m, F64(-INFINITY));
    xi[1] = kiln_kx_var(kb, kiln_kb_loop(kb, C));
    kiln_kb_set(kb, m, BIN(KX_MAX, LOCAL(m), load_f64(kb, xb, x->rank, xi)));
    kiln_kb_end(kb);
    kiln_kb_set(kb, e, F64(0));
    xi[1] = kiln_kx_var(kb, kiln_kb_loop(kb, C));
    int32_t ex = UN(KX_EXP, BIN(KX_SUB, load_f64(kb, xb, x->rank, xi), LOCAL(m)));
    kiln_kb_set(kb, e, BIN(KX_ADD, LOCAL(e), ex));
    kiln_kb_end(kb);

    /* the label's logit (no class to read when C is 0: every label fails
     * the check or is ignored) */
    xi[1] = kiln_kx_select(kb, valid, LOCAL(l), kiln_kx_int(kb, 0));
    int32_t picked = C > 0 ? load_f64(kb, xb, x->rank, xi) : F64(0);
    int32_t loss = BIN(KX_SUB, BIN(KX_ADD, LOCAL(m), UN(KX_LOG, LOCAL(e))), picked);
    kiln_kb_set(kb, total, BIN(KX_ADD, LOCAL(total), kiln_kx_select(kb, valid, loss, F64(0))));
    kiln_kb_set(kb, count, BIN(KX_ADD, LOCAL(count),
                               kiln_kx_select(kb, valid, kiln_kx_int(kb, 1), kiln_kx_int(kb, 0))));
    end_loops(kb, outer);

    int32_t mean = BIN(KX_DIV, LOCAL(total), kiln_kx_cast(kb, LOCAL(count), KILN_F64));
    kiln_kb_store(kb, out, kiln_kx_int(kb, 0), kiln_kx_cast(kb, mean, (kiln_dtype)n->dtype));
    return kiln_kb_status(kb);
}

/* ---- mse_loss, bce_with_logits, l1_loss ---- */

/* The loss term of one element pair, as f64 expressions. */
typedef int32_t (*loss_term)(kiln_kb *kb, int32_t a, int32_t b);

static int32_t mse_term(kiln_kb *kb, int32_t a, int32_t b)
{
    int32_t d = BIN(KX_SUB, a, b);
    return BIN(KX_MUL, d, d);
}

/* max(x, 0) - x t + log1p(exp(-|x|)) */
static int32_t bce_term(kiln_kb *kb, int32_t x, int32_t t)
{
    int32_t relu = kiln_kx_select(kb, BIN(KX_GT, x, F64(0)), x, F64(0));
    int32_t soft = UN(KX_LOG1P, UN(KX_EXP, UN(KX_NEG, UN(KX_ABS, x))));
    return BIN(KX_ADD, BIN(KX_SUB, relu, BIN(KX_MUL, x, t)), soft);
}

static int32_t l1_term(kiln_kb *kb, int32_t a, int32_t b)
{
    return UN(KX_ABS, BIN(KX_SUB, a, b));
}

/* out = mean over the elements of term(a, b), a and b of one shape. */
static kiln_status lower_mean_loss(kiln_kb *kb, const kiln_graph *g, int32_t node, loss_term term)
{
    const kiln_node *n = &g->nodes[node], *a = &g->nodes[n->inputs[0]];
    int32_t ab = kiln_kb_in(kb, 0), bb = kiln_kb_in(kb, 1), out = kiln_kb_out(kb);
    int32_t total = kiln_kb_local(kb, KILN_F64);
    int32_t idx[KILN_MAX_RANK];

    kiln_kb_set(kb, total, F64(0));
    int loops = open_loops(kb, a->rank, a->shape, idx);
    int32_t v = term(kb, load_f64(kb, ab, a->rank, idx), load_f64(kb, bb, a->rank, idx));
    kiln_kb_set(kb, total, BIN(KX_ADD, LOCAL(total), v));
    end_loops(kb, loops);
    int32_t mean = BIN(KX_DIV, LOCAL(total), F64((double)kiln_node_numel(a)));
    kiln_kb_store(kb, out, kiln_kx_int(kb, 0), kiln_kx_cast(kb, mean, (kiln_dtype)n->dtype));
    return kiln_kb_status(kb);
}

kiln_status kiln_mse_loss_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_mean_loss(kb, g, node, mse_term);
}

kiln_status kiln_bce_with_logits_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_mean_loss(kb, g, node, bce_term);
}

kiln_status kiln_l1_loss_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    return lower_mean_loss(kb, g, node, l1_term);
}

/* ---- one_hot ---- */

kiln_status kiln_one_hot_lower(kiln_kb *kb, const kiln_graph *g, int32_t node)
{
    const kiln_node *n = &g->nodes[node], *lab = &g->nodes[n->inputs[0]];
    int axis = (int)kiln_attr_get_int(n, "axis");
    kiln_dtype t = (kiln_dtype)n->dtype;
    int32_t lb = kiln_kb_in(kb, 0), out = kiln_kb_out(kb);
    int32_t idx[KILN_MAX_RANK], li[KILN_MAX_RANK];

    /* every output element written once: the outermost loop is parallel
     * (the losses' loops, which sum into one local, are not) */
    int loops = n->rank;
    for (int d = 0; d < n->rank; d++) {
        idx[d] = kiln_kx_var(kb, kiln_kb_loop(kb, n->shape[d]));
        if (d == 0) kiln_kb_hint(kb, 0, 1);
    }
    for (int d = 0, j = 0; d < n->rank; d++)
        if (d != axis) li[j++] = idx[d];
    int32_t label = kiln_kx_cast(kb, kiln_kx_load_at(kb, lb, lab->rank, li), KILN_I64);
    int32_t hot = kiln_kx_select(kb, BIN(KX_EQ, label, idx[axis]), kiln_kx_float(kb, 1, t),
                                 kiln_kx_float(kb, 0, t));
    kiln_kb_store(kb, out, kiln_kx_index(kb, out, n->rank, idx), hot);
    end_loops(kb, loops);
    return kiln_kb_status(kb);
}
