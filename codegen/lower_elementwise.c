/* codegen/lower_elementwise.c — scalar rules of the pointwise ops (and of
 * const and assign). Each returns the kernel-IR expression of one output
 * element from its inputs' elements in[]; kiln_lower_pointwise wraps them in
 * loops, and a fusion pass can compose them. They compute what the reference
 * implementations in ir/ops_elementwise.c compute. */
#include "ir/kernel.h"
#include "ir/ops.h"

#define BIN(a, b, op) kiln_kx_bin(kb, op, a, b)
#define UN(a, op) kiln_kx_un(kb, op, a)
#define F(v) kiln_kx_float(kb, v, (kiln_dtype)n->dtype)
#define FIN(v) kiln_kx_float(kb, v, (kiln_dtype)kb_in_dtype(kb, n, 0))

static kiln_dtype kb_in_dtype(kiln_kb *kb, const kiln_node *n, int k)
{
    return (kiln_dtype)kiln_kb_graph(kb)->nodes[n->inputs[k]].dtype;
}

#define SCALAR(name)                                                                           \
    int32_t kiln_##name##_scalar(kiln_kb *kb, const kiln_node *n, const int32_t *in)

SCALAR(const)
{
    (void)in;
    return kiln_kx_float(kb, kiln_attr_get_float(n, "value"), (kiln_dtype)n->dtype);
}
SCALAR(assign) { (void)kb; (void)n; return in[1]; }
SCALAR(add) { (void)n; return BIN(in[0], in[1], KX_ADD); }
SCALAR(sub) { (void)n; return BIN(in[0], in[1], KX_SUB); }
SCALAR(mul) { (void)n; return BIN(in[0], in[1], KX_MUL); }
SCALAR(div) { (void)n; return BIN(in[0], in[1], KX_DIV); }
SCALAR(maximum) { (void)n; return BIN(in[0], in[1], KX_MAX); }
SCALAR(minimum) { (void)n; return BIN(in[0], in[1], KX_MIN); }
SCALAR(neg) { (void)n; return UN(in[0], KX_NEG); }
SCALAR(exp) { (void)n; return UN(in[0], KX_EXP); }
SCALAR(log) { (void)n; return UN(in[0], KX_LOG); }
SCALAR(sqrt) { (void)n; return UN(in[0], KX_SQRT); }
SCALAR(tanh) { (void)n; return UN(in[0], KX_TANH); }
SCALAR(pow)
{
    double p = kiln_attr_get_float(n, "exponent");
    if (p == 2.0) return BIN(in[0], in[0], KX_MUL);
    if (p == 1.0) return in[0];
    if (p == 0.5) return UN(in[0], KX_SQRT);
    return BIN(in[0], F(p), KX_POW);
}
SCALAR(relu) { return kiln_kx_select(kb, BIN(in[0], FIN(0), KX_GT), in[0], FIN(0)); }
SCALAR(leaky_relu)
{
    int32_t slope = F(kiln_attr_get_float(n, "slope"));
    return kiln_kx_select(kb, BIN(in[0], F(0), KX_GT), in[0], BIN(in[0], slope, KX_MUL));
}
/* 1/(1+exp(-x)) for x >= 0, exp(x)/(1+exp(x)) below: never overflows */
SCALAR(sigmoid)
{
    int32_t e = UN(UN(UN(in[0], KX_ABS), KX_NEG), KX_EXP); /* exp(-|x|) in (0, 1] */
    int32_t r = BIN(F(1), BIN(F(1), e, KX_ADD), KX_DIV);
    return kiln_kx_select(kb, BIN(in[0], F(0), KX_GE), r, BIN(e, BIN(F(1), e, KX_ADD), KX_DIV));
}
SCALAR(gelu)
{
    int32_t phi = BIN(F(0.5), BIN(F(1), UN(BIN(in[0], F(0.70710678118654752440), KX_MUL), KX_ERF),
                                  KX_ADD), KX_MUL);
    return BIN(in[0], phi, KX_MUL);
}
/* dy * (Phi(x) + x phi(x)) */
SCALAR(gelu_grad)
{
    int32_t x = in[0];
    int32_t Phi = BIN(F(0.5), BIN(F(1), UN(BIN(x, F(0.70710678118654752440), KX_MUL), KX_ERF),
                                  KX_ADD), KX_MUL);
    int32_t pdf = BIN(UN(BIN(F(-0.5), BIN(x, x, KX_MUL), KX_MUL), KX_EXP),
                      F(0.39894228040143267794), KX_MUL);
    return BIN(in[1], BIN(Phi, BIN(x, pdf, KX_MUL), KX_ADD), KX_MUL);
}
SCALAR(where) { (void)n; return kiln_kx_select(kb, kiln_kx_cast(kb, in[0], KILN_BOOL), in[1], in[2]); }
SCALAR(eq) { (void)n; return BIN(in[0], in[1], KX_EQ); }
SCALAR(ne) { (void)n; return BIN(in[0], in[1], KX_NE); }
SCALAR(lt) { (void)n; return BIN(in[0], in[1], KX_LT); }
SCALAR(le) { (void)n; return BIN(in[0], in[1], KX_LE); }
SCALAR(gt) { (void)n; return BIN(in[0], in[1], KX_GT); }
SCALAR(ge) { (void)n; return BIN(in[0], in[1], KX_GE); }
SCALAR(cast) { return kiln_kx_cast(kb, in[0], (kiln_dtype)n->dtype); }
