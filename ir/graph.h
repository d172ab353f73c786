/* ir/graph.h — the graph IR's internal representation.
 *
 * A graph is an array of nodes in topological order: a node's inputs are
 * always earlier nodes (SSA). Node ids are indices into g->nodes. Every node
 * has an op (a row of ir/ops.def), its attributes in the order of the op's
 * attribute schema (defaults filled in), a dtype, a static shape, an optional
 * name, a role and the source location it came from.
 *
 * The one mutation that is not SSA is the `assign` op: assign(dst, value)
 * writes value into the storage of dst, a PARAM or STATE leaf. The verifier
 * guarantees no node after an assign reads dst, so "reads see the old value,
 * the program ends with the new one" is the whole semantics.
 */
#ifndef KILN_IR_GRAPH_H
#define KILN_IR_GRAPH_H

#include "kiln/kiln.h"
#include <stdarg.h>
#include <stdbool.h>

#define KILN_MAX_ATTRS 8 /* pooling ops have up to 6 (ir/ops_pool.def) */
#define KILN_MAX_ATTR_INTS KILN_MAX_RANK
#define KILN_ATTR_NAME_MAX 24 /* count_include_pad (17) */

typedef enum kiln_attr_kind {
    KILN_ATTR_INT,   /* i[0] */
    KILN_ATTR_FLOAT, /* f */
    KILN_ATTR_INTS,  /* i[0..n) */
    KILN_ATTR_DTYPE, /* i[0] is a kiln_dtype; printed as its name */
} kiln_attr_kind;

typedef struct kiln_attr {
    char name[KILN_ATTR_NAME_MAX];
    uint8_t kind; /* kiln_attr_kind */
    uint8_t n;    /* number of ints for KILN_ATTR_INTS */
    int64_t i[KILN_MAX_ATTR_INTS];
    double f;
} kiln_attr;

typedef struct kiln_loc {
    const char *file; /* interned in the graph; NULL when unknown */
    int line, col;    /* 1-based; 0 when unknown */
} kiln_loc;

typedef struct kiln_node {
    uint16_t op;   /* kiln_op_id */
    uint8_t dtype; /* kiln_dtype */
    uint8_t role;  /* kiln_role */
    uint8_t metric; /* kiln_metric_kind of a METRIC node (0, MEAN, otherwise) */
    uint8_t group;  /* PARAM leaves: the parameter group (kiln_set_param_group), 0 otherwise */
    int32_t rank;
    int64_t shape[KILN_MAX_RANK];
    int32_t ninputs;
    int32_t *inputs; /* owned; earlier node ids */
    int32_t nattrs;
    kiln_attr attrs[KILN_MAX_ATTRS];
    char *name; /* owned; NULL if unnamed */
    kiln_loc loc;
} kiln_node;

struct kiln_graph {
    char *name;
    kiln_node *nodes;
    int32_t nnodes, cap;
    char err[2048];
    kiln_loc cur_loc; /* stamped on nodes as they are built */
    char **files;     /* interned file names */
    int32_t nfiles;
};

/* ---- errors ---- */
/* Formats a message into g->err and returns status (for `return kiln_errorf(...)`). */
kiln_status kiln_errorf(kiln_graph *g, kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- nodes ---- */
static inline kiln_node *kiln_node_at(const kiln_graph *g, int32_t id) { return &g->nodes[id]; }
int64_t kiln_node_numel(const kiln_node *n);
int64_t kiln_shape_numel(int rank, const int64_t *shape);
/* "f32[64,10]" into buf (at least 128 bytes); returns buf. */
char *kiln_node_type_str(const kiln_node *n, char *buf, size_t len);
char *kiln_shape_str(kiln_dtype t, int rank, const int64_t *shape, char *buf, size_t len);
/* "%12 (add 'h')" — how messages name a node. */
char *kiln_node_desc(const kiln_graph *g, int32_t id, char *buf, size_t len);
bool kiln_dtype_is_float(kiln_dtype t);
bool kiln_node_is_leaf(const kiln_node *n);
/* Whether a metric partial of numel elements fits kind k (kiln_set_metric_kind). */
bool kiln_metric_size_ok(kiln_metric_kind k, int64_t numel);

/* ---- attributes ---- */
kiln_attr kiln_attr_int(const char *name, int64_t v);
kiln_attr kiln_attr_float(const char *name, double v);
kiln_attr kiln_attr_ints(const char *name, int n, const int64_t *v);
kiln_attr kiln_attr_dtype(const char *name, kiln_dtype t);
/* The node's attribute of that name, or NULL. */
const kiln_attr *kiln_node_attr(const kiln_node *n, const char *name);
kiln_attr *kiln_node_attr_mut(kiln_node *n, const char *name);
int64_t kiln_attr_get_int(const kiln_node *n, const char *name);
double kiln_attr_get_float(const kiln_node *n, const char *name);
bool kiln_attr_equal(const kiln_attr *a, const kiln_attr *b);

/* ---- building ---- */
/* Appends a node of op `op` (a kiln_op_id) with the given inputs and
 * attributes, checks the attributes against the op's schema (filling in
 * defaults), runs the op's shape rule, and returns the new id; on failure it
 * appends nothing and returns a negative status with the message in g->err.
 * A negative input id is returned as it is (errors propagate). */
kiln_value kiln_build(kiln_graph *g, int op, int nin, const kiln_value *in, int nattrs,
                      const kiln_attr *attrs);
/* Appends a leaf (op `input`) with a role, name and type. */
kiln_value kiln_build_leaf(kiln_graph *g, kiln_role role, const char *name, kiln_dtype t,
                           int rank, const int64_t *shape, int nattrs, const kiln_attr *attrs);
/* Sets a node's name (copied); fails if a leaf already has that name. */
kiln_status kiln_node_set_name(kiln_graph *g, int32_t id, const char *name);
/* Interns a file name in g and returns the graph's copy. */
const char *kiln_graph_intern_file(kiln_graph *g, const char *file);

/* Short helpers for gradient rules and passes (same contract as kiln_build). */
kiln_value kiln_b1(kiln_graph *g, int op, kiln_value x);
kiln_value kiln_b2(kiln_graph *g, int op, kiln_value a, kiln_value b);
/* A scalar constant with the dtype of node `like`. */
kiln_value kiln_b_const_like(kiln_graph *g, double v, kiln_value like);
/* Sums v (whose shape broadcasts from `rank/shape`) back down to that shape. */
kiln_value kiln_b_sum_to(kiln_graph *g, kiln_value v, int rank, const int64_t *shape);

/* ---- shapes ---- */
/* NumPy broadcasting of two shapes into out; false if they do not broadcast. */
bool kiln_broadcast_shapes(int ra, const int64_t *a, int rb, const int64_t *b, int *rout,
                           int64_t *out);
/* Row-major strides of a shape, in elements. */
void kiln_strides(int rank, const int64_t *shape, int64_t *strides);
/* The offset into an input of shape (rin, sin) that broadcasts to an output
 * of rank rout, for the output multi-index idx[rout]. */
int64_t kiln_bcast_offset(int rout, const int64_t *idx, int rin, const int64_t *sin);
/* Advances a multi-index in row-major order; false after the last one. */
bool kiln_index_next(int rank, const int64_t *shape, int64_t *idx);
/* Normalises a possibly negative axis; false if out of range. */
bool kiln_norm_axis(int64_t *axis, int rank);

/* ---- verification ---- */
/* kiln_graph_verify (ir/verify.c), also giving the node at fault: *bad_node
 * (when not NULL) is set to that node's id on failure, or -1 when the failure
 * is not a node's (a malformed graph) or on success. */
kiln_status kiln_graph_verify_at(kiln_graph *g, int32_t *bad_node);

/* ---- graph surgery (for passes) ---- */
/* Keeps the nodes with keep[i] true, renumbering inputs through remap (a
 * node's input j becomes remap[j] before renumbering; remap may be NULL for
 * identity). Every kept node's remapped inputs must be kept. */
kiln_status kiln_graph_compact(kiln_graph *g, const bool *keep, const int32_t *remap);

#endif
