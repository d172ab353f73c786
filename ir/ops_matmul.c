/* ir/ops_matmul.c — matrix products: shape rule, gradient rule, reference
 * implementation and cost of matmul.
 *
 * matmul(a, b) multiplies over the last two axes and follows NumPy's matmul
 * otherwise: the leading (batch) axes broadcast; a rank-1 a acts as a row
 * [1,K] and a rank-1 b as a column [K,1], the added axis dropped from the
 * result (so vector @ vector is a scalar). ta/tb transpose the last two axes
 * of a/b before multiplying; on a rank-1 operand they do nothing, like x.T
 * on a 1-D NumPy array.
 */
#include "ir/ops.h"

#include <stdio.h>
#include <string.h>

/* One operand seen as a (batch of) matrix after promotion and transposition:
 * the stored matrix is rows x cols (a rank-1 a is 1 x K, a rank-1 b K x 1);
 * the multiplied matrix is r x c (rows and cols swapped when transposed). */
typedef struct mm_side {
    int nbatch;                   /* leading batch axes */
    const int64_t *batch;         /* their sizes */
    int64_t rows, cols;           /* the stored matrix */
    int64_t r, c;                 /* as multiplied */
    int trans;                    /* effective flag (0 for rank 1) */
} mm_side;

static mm_side side_of(const kiln_node *x, int64_t flag, bool is_b)
{
    mm_side s;
    if (x->rank == 1) {
        s.nbatch = 0;
        s.batch = x->shape;
        s.rows = is_b ? x->shape[0] : 1;
        s.cols = is_b ? 1 : x->shape[0];
        s.trans = 0;
    } else {
        s.nbatch = x->rank - 2;
        s.batch = x->shape;
        s.rows = x->shape[x->rank - 2];
        s.cols = x->shape[x->rank - 1];
        s.trans = flag != 0;
    }
    s.r = s.trans ? s.cols : s.rows;
    s.c = s.trans ? s.rows : s.cols;
    return s;
}

/* "f32[64,784]^T" for an operand as written. */
static char *operand_str(const kiln_node *x, const mm_side *s, char *buf, size_t len)
{
    kiln_node_type_str(x, buf, len);
    if (s->trans) strncat(buf, "^T", len - strlen(buf) - 1);
    return buf;
}

/* "[2,3]" */
static char *dims_str(int rank, const int64_t *shape, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < rank && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

kiln_status kiln_matmul_shape(kiln_graph *g, kiln_node *n)
{
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    char sa[160], sb[160];
    int64_t ta = kiln_attr_get_int(n, "ta"), tb = kiln_attr_get_int(n, "tb");
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1))
        return kiln_errorf(g, KILN_ERR_INVALID, "matmul: ta and tb must be 0 or 1, got ta=%lld "
                           "tb=%lld", (long long)ta, (long long)tb);
    if (a->dtype != b->dtype)
        return kiln_errorf(g, KILN_ERR_SHAPE, "matmul: dtypes differ: %s @ %s (cast one of them)",
                           kiln_node_type_str(a, sa, sizeof sa),
                           kiln_node_type_str(b, sb, sizeof sb));
    if (a->dtype == KILN_BOOL)
        return kiln_errorf(g, KILN_ERR_SHAPE, "matmul: bool operands %s @ %s (cast them to a "
                           "number type)", kiln_node_type_str(a, sa, sizeof sa),
                           kiln_node_type_str(b, sb, sizeof sb));
    if (a->rank < 1 || b->rank < 1)
        return kiln_errorf(g, KILN_ERR_SHAPE, "matmul: operands need rank >= 1, got %s @ %s "
                           "(use mul for scalars)", kiln_node_type_str(a, sa, sizeof sa),
                           kiln_node_type_str(b, sb, sizeof sb));
    mm_side A = side_of(a, ta, false), B = side_of(b, tb, true);
    operand_str(a, &A, sa, sizeof sa);
    operand_str(b, &B, sb, sizeof sb);
    if (A.c != B.r)
        return kiln_errorf(g, KILN_ERR_SHAPE,
                           "matmul: inner dimensions differ: %s @ %s needs %lld == %lld (%s of "
                           "%s, %s of %s)", sa, sb, (long long)A.c, (long long)B.r,
                           a->rank == 1 ? "length" : "columns", A.trans ? "a^T" : "a",
                           b->rank == 1 ? "length" : "rows", B.trans ? "b^T" : "b");
    int nb;
    int64_t batch[KILN_MAX_RANK];
    if (!kiln_broadcast_shapes(A.nbatch, A.batch, B.nbatch, B.batch, &nb, batch)) {
        char ba[128], bb[128];
        return kiln_errorf(g, KILN_ERR_SHAPE, "matmul: batch dimensions %s and %s do not "
                           "broadcast in %s @ %s",
                           dims_str(A.nbatch, A.batch, ba, sizeof ba),
                           dims_str(B.nbatch, B.batch, bb, sizeof bb), sa, sb);
    }
    int r = nb;
    int64_t shape[KILN_MAX_RANK];
    memcpy(shape, batch, (size_t)nb * sizeof *batch);
    if (a->rank > 1) shape[r++] = A.r;
    if (b->rank > 1) shape[r++] = B.c;
    n->dtype = a->dtype;
    n->rank = r;
    memset(n->shape, 0, sizeof n->shape);
    memcpy(n->shape, shape, (size_t)r * sizeof *shape);
    return KILN_OK;
}

kiln_status kiln_matmul_ref(kiln_graph *g, const kiln_node *n, const double *const *in,
                            double *out)
{
    const kiln_node *a = &g->nodes[n->inputs[0]], *b = &g->nodes[n->inputs[1]];
    mm_side A = side_of(a, kiln_attr_get_int(n, "ta"), false);
    mm_side B = side_of(b, kiln_attr_get_int(n, "tb"), true);
    int nb;
    int64_t batch[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    kiln_broadcast_shapes(A.nbatch, A.batch, B.nbatch, B.batch, &nb, batch);
    int64_t M = A.r, K = A.c, N = B.c;
    if (kiln_shape_numel(nb, batch) == 0 || M == 0 || N == 0) return KILN_OK;
    int64_t asz = A.rows * A.cols, bsz = B.rows * B.cols;
    double *o = out;
    do {
        const double *pa = in[0] + kiln_bcast_offset(nb, idx, A.nbatch, A.batch) * asz;
        const double *pb = in[1] + kiln_bcast_offset(nb, idx, B.nbatch, B.batch) * bsz;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0.0;
                for (int64_t k = 0; k < K; k++) {
                    double x = A.trans ? pa[k * A.cols + i] : pa[i * A.cols + k];
                    double y = B.trans ? pb[j * B.cols + k] : pb[k * B.cols + j];
                    s += x * y;
                }
                *o++ = s;
            }
    } while (kiln_index_next(nb, batch, idx));
    return KILN_OK;
}

void kiln_matmul_cost(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes)
{
    const kiln_node *a = &g->nodes[n->inputs[0]];
    mm_side A = side_of(a, kiln_attr_get_int(n, "ta"), false);
    kiln_cost_default(g, n, flops, bytes);
    /* numel(out) = batch * M * N; each output element is K multiply-adds. */
    *flops = 2.0 * (double)kiln_node_numel(n) * (double)A.c;
}

static kiln_value mm(kiln_graph *g, kiln_value a, kiln_value b, int ta, int tb)
{
    kiln_value in[2] = {a, b};
    kiln_attr at[2] = {kiln_attr_int("ta", ta), kiln_attr_int("tb", tb)};
    return kiln_build(g, KILN_OP_MATMUL, 2, in, 2, at);
}

static kiln_value reshape(kiln_graph *g, kiln_value x, int rank, const int64_t *shape)
{
    kiln_attr s = kiln_attr_ints("shape", rank, shape);
    return kiln_build(g, KILN_OP_RESHAPE, 1, &x, 1, &s);
}

/* Reshapes v (rank >= 2) dropping axis `axis` (-2 or -1), a 1 added by
 * promoting a vector operand. */
static kiln_value drop_axis(kiln_graph *g, kiln_value v, int axis)
{
    if (v < 0) return v;
    const kiln_node *x = &g->nodes[v];
    int64_t shape[KILN_MAX_RANK];
    int r = 0, drop = x->rank + axis;
    for (int i = 0; i < x->rank; i++)
        if (i != drop) shape[r++] = x->shape[i];
    return reshape(g, v, r, shape);
}

/* C = op_a(A) @ op_b(B), with op the optional transpose:
 *   d op_a(A) = dC @ op_b(B)^T,  d op_b(B) = op_a(A)^T @ dC,
 * so  ta=0: dA = matmul(dC, B, 0, !tb)    ta=1: dA = matmul(B, dC, tb, 1)
 *     tb=0: dB = matmul(A, dC, !ta, 0)    tb=1: dB = matmul(dC, A, 1, ta).
 * Vector operands are promoted to [1,K] / [K,1] first and the added axis is
 * dropped from their gradients; broadcast batch axes are summed back by
 * autodiff. */
kiln_status kiln_matmul_grad(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx)
{
    const kiln_node *n = &g->nodes[node];
    kiln_value a = n->inputs[0], b = n->inputs[1];
    const kiln_node *an = &g->nodes[a], *bn = &g->nodes[b];
    int ra = an->rank, rb = bn->rank;
    int ta = ra > 1 && kiln_attr_get_int(n, "ta");
    int tb = rb > 1 && kiln_attr_get_int(n, "tb");
    int64_t ka = an->shape[0], kb = bn->shape[0];
    /* The promoted output shape: batch axes, then M (or 1), then N (or 1). */
    int nb = n->rank - (ra > 1) - (rb > 1);
    int64_t cshape[KILN_MAX_RANK];
    memcpy(cshape, n->shape, (size_t)nb * sizeof *cshape);
    cshape[nb] = ra > 1 ? n->shape[nb] : 1;
    cshape[nb + 1] = rb > 1 ? n->shape[n->rank - 1] : 1;
    /* From here on g->nodes may move: only the locals above are used. */
    kiln_value A = a, B = b, dC = dy;
    if (ra == 1) {
        int64_t s[2] = {1, ka};
        A = reshape(g, a, 2, s);
    }
    if (rb == 1) {
        int64_t s[2] = {kb, 1};
        B = reshape(g, b, 2, s);
    }
    if (ra == 1 || rb == 1) dC = reshape(g, dy, nb + 2, cshape);
    kiln_value dA = ta ? mm(g, B, dC, tb, 1) : mm(g, dC, B, 0, !tb);
    kiln_value dB = tb ? mm(g, dC, A, 1, ta) : mm(g, A, dC, !ta, 0);
    if (ra == 1) dA = drop_axis(g, dA, -2);
    if (rb == 1) dB = drop_axis(g, dB, -1);
    dx[0] = dA;
    dx[1] = dB;
    for (int i = 0; i < 2; i++)
        if (dx[i] < -1) return (kiln_status)dx[i];
    return KILN_OK;
}
