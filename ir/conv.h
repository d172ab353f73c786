/* ir/conv.h — the geometry of 2-D convolutions, shared by the conv ops'
 * shape rules, reference implementations and gradients (ir/ops_conv.c),
 * their lowering rules (codegen/lower_conv.c) and the pass that rewrites
 * convolutions into im2col / GEMM / col2im (passes/conv_lower.c).
 *
 * Every conv-family node (ir/ops_conv.def) describes one convolution in
 * PyTorch's F.conv2d terms: an input x [N, C, H, W], a weight
 * [Co, C/G, kh, kw], stride, padding, dilation and groups G, and an output
 * [N, Co, OH, OW] with OH = floor((H + 2*ph - dh*(kh-1) - 1) / sh) + 1.
 * conv_transpose2d is that convolution's adjoint in x (its x is the
 * convolution's output); im2col / col2im are its column matrix and the
 * matrix's adjoint.
 *
 * The column matrix ("cols") of a convolution is
 *     cols[(c*kh + i)*kw + j, n, oh, ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
 * (0 where the position falls in the padding): rank 4, [C*kh*kw, N, OH, OW],
 * one row per weight column, its columns in output-pixel order. Then a
 * convolution with one group is the matrix product
 *     reshape(y, [N, Co, P]) = permute(W2d @ reshape(cols, [C*kh*kw, N*P]))
 * with W2d = reshape(w, [Co, C*kh*kw]), P = OH*OW, and the permute moves
 * whole rows of P values (see passes/conv_lower.c).
 */
#ifndef KILN_IR_CONV_H
#define KILN_IR_CONV_H

#include "ir/graph.h"

typedef struct kiln_conv_geom {
    int64_t N, C, H, W;  /* the convolution's input */
    int64_t Co, kh, kw;  /* output channels, kernel */
    int64_t sh, sw, ph, pw, dh, dw; /* stride, padding, dilation */
    int64_t oph, opw;    /* conv_transpose2d's output_padding (0 otherwise) */
    int64_t G;           /* groups */
    int64_t OH, OW;      /* the convolution's output */
} kiln_conv_geom;

/* floor((in + 2p - d*(k-1) - 1) / s) + 1, or a value < 1 when the kernel
 * does not fit (the caller reports it). */
int64_t kiln_conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d);

/* The geometry of conv-family node n (any op of ir/ops_conv.def) from its
 * inputs and attributes, as its shape rule left them. For conv_transpose2d
 * x is the transposed convolution's output and (OH, OW) its input's size;
 * for col2im (N, C, H, W) is the output. */
void kiln_conv_geom_of(const kiln_graph *g, const kiln_node *n, kiln_conv_geom *out);

/* Appends conv-family op `op` with inputs in[0..nin) and the attributes
 * its schema takes from geom: stride, padding, dilation, groups,
 * output_padding (oph, opw), kernel (kh, kw), size (H, W). Same contract
 * as kiln_build. */
kiln_value kiln_b_conv(kiln_graph *g, int op, int nin, const kiln_value *in,
                       const kiln_conv_geom *geom);

#endif
