/* ir/ops.h — the op registry.
 *
 * Every op is one row of ir/ops.def. A row names the op's functions; they sit
 * together, one file per family (ops_elementwise.c, ops_reduce.c,
 * ops_matmul.c, ops_shape.c, ops_loss.c, ops_leaf.c). Nothing else in kiln
 * switches on op names: passes ask the registry.
 */
#ifndef KILN_IR_OPS_H
#define KILN_IR_OPS_H

#include "ir/graph.h"
#include "ir/kernel.h"

typedef enum kiln_fusion {
    KILN_FUSE_LEAF,        /* no computation: inputs, parameters, constants */
    KILN_FUSE_ELEMENTWISE, /* out[i] = f(in[i]) on same-shaped operands */
    KILN_FUSE_BROADCAST,   /* elementwise after broadcasting operands */
    KILN_FUSE_INJECTIVE,   /* each output element reads one input element */
    KILN_FUSE_REDUCE,      /* reduces over axes */
    KILN_FUSE_ANCHOR,      /* matmul, conv: fuses an elementwise tail */
    KILN_FUSE_OPAQUE,      /* never fused */
} kiln_fusion;

/* Sets n->dtype, n->rank and n->shape from n's inputs (g->nodes[n->inputs[i]])
 * and attributes; may normalise attributes (negative axes). On a mismatch it
 * writes a message naming both shapes with kiln_errorf and returns it. */
typedef kiln_status (*kiln_shape_fn)(kiln_graph *g, kiln_node *n);

/* Appends nodes computing the gradient of each input of `node` given dy, the
 * gradient of its output. dx[i] is set to a node id, or -1 where input i gets
 * no gradient (integer inputs, labels). A gradient may have the broadcast
 * shape of the output: autodiff sums it back to the input's shape. */
typedef kiln_status (*kiln_grad_fn)(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx);

/* Computes n's value from its inputs' values. All values are doubles in
 * row-major order (integers and bools as exact doubles); shapes come from the
 * input nodes. The interpreter rounds `out` to n's dtype afterwards. */
typedef kiln_status (*kiln_ref_fn)(kiln_graph *g, const kiln_node *n, const double *const *in,
                                   double *out);

/* Floating-point operations and bytes moved by one execution of n. */
typedef void (*kiln_cost_fn)(const kiln_graph *g, const kiln_node *n, double *flops,
                             double *bytes);

typedef struct kiln_op_info {
    const char *name;
    int arity; /* number of inputs; -1 for variadic (at least one) */
    kiln_fusion fusion;
    /* Attribute schema: space-separated "name:kind" or "name:kind=default",
     * kind one of int, float, ints, dtype; e.g. "ta:int=0 tb:int=0". An
     * attribute without a default is required. Defaults of ints are "[]". */
    const char *attrs;
    kiln_shape_fn shape;
    kiln_grad_fn grad; /* kiln_nograd: no gradient rule */
    kiln_ref_fn ref;
    kiln_cost_fn cost; /* kiln_cost_default: one flop an element */
    /* The op on scalar expressions (pointwise ops; kiln_noscalar otherwise):
     * returns the kernel-IR expression of one output element given its
     * inputs' elements in[]. */
    int32_t (*scalar)(kiln_kb *kb, const kiln_node *n, const int32_t *in);
    /* Builds the node's kernel (codegen/lower_<family>.c;
     * kiln_lower_pointwise for pointwise ops, kiln_lower_none for leaves). */
    kiln_status (*lower)(kiln_kb *kb, const kiln_graph *g, int32_t node);
} kiln_op_info;

typedef enum kiln_op_id {
#define KILN_OP(ID, name, arity, fusion, attrs, shape, grad, ref, cost, scalar, lower) KILN_OP_##ID,
#include "ir/ops.def"
#undef KILN_OP
    KILN_OP_COUNT
} kiln_op_id;

extern const kiln_op_info kiln_ops[KILN_OP_COUNT];

/* One entry of an op's attribute schema (kiln_op_info.attrs). def is the
 * default, built as kiln_attr_int / _float / _ints / _dtype would, when
 * has_default; an ints default is always the empty list. */
typedef struct kiln_schema_attr {
    char name[KILN_ATTR_NAME_MAX];
    kiln_attr_kind kind;
    bool has_default;
    kiln_attr def;
} kiln_schema_attr;

/* Reads op's attribute schema into out (at most max entries); returns the count, or -1 if the registry row is malformed. */
int kiln_op_schema(int op, kiln_schema_attr *out, int max);

/* The op id of a registry name, or -1. */
int kiln_op_lookup(const char *name);
static inline const kiln_op_info *kiln_op_info_of(int op) { return &kiln_ops[op]; }

/* One flop per output element; bytes of every input and the output. */
void kiln_cost_default(const kiln_graph *g, const kiln_node *n, double *flops, double *bytes);

/* The gradient rule of ops that have none: reports the op by name. */
kiln_status kiln_nograd(kiln_graph *g, int32_t node, int32_t dy, int32_t *dx);

/* The registry's function declarations, generated from the table. */
#define KILN_OP(ID, name, arity, fusion, attrs, shape, grad, ref, cost, scalar, lower)        \
    int32_t scalar(kiln_kb *, const kiln_node *, const int32_t *);                             \
    kiln_status lower(kiln_kb *, const kiln_graph *, int32_t);                                 \
    kiln_status shape(kiln_graph *, kiln_node *);                                              \
    kiln_status grad(kiln_graph *, int32_t, int32_t, int32_t *);                               \
    kiln_status ref(kiln_graph *, const kiln_node *, const double *const *, double *);         \
    void cost(const kiln_graph *, const kiln_node *, double *, double *);
#include "ir/ops.def"
#undef KILN_OP

/* Shared shape rules (ops_elementwise.c). */
kiln_status kiln_shape_unary(kiln_graph *g, kiln_node *n);     /* same type as input 0 */
kiln_status kiln_shape_binary(kiln_graph *g, kiln_node *n);    /* broadcast, same dtype */
kiln_status kiln_shape_compare(kiln_graph *g, kiln_node *n);   /* broadcast -> bool */
kiln_status kiln_shape_unary_float(kiln_graph *g, kiln_node *n); /* float input only */

/* dropout's keep threshold ceil(p 2^31) and its scale 1/(1-p) as dtype t
 * holds it (ops_norm.c; its lowering uses the same numbers). */
int64_t kiln_dropout_threshold(double p);
double kiln_dropout_scale(double p, kiln_dtype t);

#endif
