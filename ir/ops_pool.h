/* ir/ops_pool.h — geometry of the pooling, upsampling and padding ops
 * (ir/ops_pool.def), shared by their reference implementations
 * (ir/ops_pool.c) and lowering rules (codegen/lower_pool.c), so both index
 * the same elements with the same arithmetic.
 *
 * Every op works on the last two axes of a tensor whose leading axes are
 * independent planes. Per spatial axis, `kiln_pool_axis` holds what maps an
 * output coordinate to input coordinates. */
#ifndef KILN_IR_OPS_POOL_H
#define KILN_IR_OPS_POOL_H

#include "ir/graph.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum kiln_pool_kind {
    KILN_POOL_WINDOW,   /* max/avg pooling: window o covers o*s - p + j*d, j < k */
    KILN_POOL_ADAPTIVE, /* [floor(o L / O), ceil((o + 1) L / O)) */
    KILN_POOL_NEAREST,  /* upsample, mode 0 */
    KILN_POOL_LINEAR,   /* upsample, mode 1 */
    KILN_POOL_PAD,      /* pad: o - left, mode 0 constant, 1 reflect */
} kiln_pool_kind;

/* One spatial axis: input length L, output length O, and the op's
 * parameters along it. */
typedef struct kiln_pool_axis {
    uint8_t kind; /* kiln_pool_kind */
    int64_t L, O;
    int64_t k, s, p, d; /* WINDOW: kernel, stride, padding, dilation; PAD: p = left pad */
    bool count_pad;     /* WINDOW avg: count_include_pad */
    bool align;         /* LINEAR: align_corners */
    bool reflect;       /* PAD: mode 1 */
    int64_t scale;      /* NEAREST / LINEAR: the integer scale factor, 0: by size */
} kiln_pool_axis;

/* PyTorch's pooling output size; -1 when it is below 1. */
int64_t kiln_pool_out_size(int64_t L, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode);

/* The two axes (h: axis rank-2, w: axis rank-1) of node n of a pooling,
 * upsampling or padding op or its gradient, reading the attributes as its
 * shape rule left them. For a gradient op L is still the forward's input
 * length and O its output's. Returns false for a node of another op. */
bool kiln_pool_axes(const kiln_graph *g, const kiln_node *n, kiln_pool_axis *h, kiln_pool_axis *w);

/* WINDOW: first and one-past-last valid window index j (0 <= pos < L), and
 * the divisor of avg pooling for output o. */
void kiln_pool_window(const kiln_pool_axis *a, int64_t o, int64_t *jlo, int64_t *jhi);
int64_t kiln_pool_divisor(const kiln_pool_axis *a, int64_t o);
/* ADAPTIVE: the window [start, end) of output o. */
void kiln_pool_adaptive(const kiln_pool_axis *a, int64_t o, int64_t *start, int64_t *end);
/* NEAREST: the input index of output o (PyTorch's float formula). */
int64_t kiln_pool_nearest(const kiln_pool_axis *a, int64_t o);
/* NEAREST: the f32 factor of that formula, and whether the formula is
 * floor(o L / O) for every o (then lowering uses integer arithmetic). */
float kiln_pool_nearest_factor(const kiln_pool_axis *a);
bool kiln_pool_nearest_exact(const kiln_pool_axis *a);
/* LINEAR: the scale of the source coordinate and, for output o, the two
 * input indices and their weights (l0 + l1 = 1; i1 == i0 at the last
 * index). */
double kiln_pool_linear_scale(const kiln_pool_axis *a);
void kiln_pool_linear(const kiln_pool_axis *a, int64_t o, int64_t *i0, int64_t *i1, double *l0,
                      double *l1);
/* PAD: the input index output o copies, or -1 for a filled element. */
int64_t kiln_pool_pad_src(const kiln_pool_axis *a, int64_t o);

#endif
