/* tests/opcases/pool.c — cases for ir/ops_pool.c (max_pool2d, avg_pool2d,
 * adaptive_avg_pool2d, upsample, pad and their *_grad ops). Expected values
 * come from torch.nn.functional in float64 (the gradients from autograd
 * with dy = 0.5, 1, 1.5, ...), on inputs exact in f32. x45 is [1, 1, 4, 5]
 * with ties (4, 4 and 5, 5: max_pool2d_grad's first maximum), x23 is
 * [1, 1, 2, 3]. The forward rows on data are gradient-checked on it too
 * (max_pool2d's ties are not differentiable: those rows skip it and random
 * rows check the gradient); the *_grad ops have no gradient rule. The
 * golden comparisons over many shapes are tests/test_pool.c's. */
#include "tests/opcases.h"

static const double x45[] = {1.5, -2,   3,  0.25, 3, -1, 4,    4,   -0.5, 2,
                             0,   2.75, -3, 1,    1, 5,  -2.5, 0.5, 5,    -1.25};
static const double mp_k2[] = {4, 4, 5, 5};
static const double mp_k3s2p1c[] = {4, 4, 3, 5, 5, 5, 5, 5, 5};
static const double mp_d2[] = {4, 4, 4, 4, 2, 2.75, 3,    3,    3, 3,
                               5, 5, 5, 5, 5, 2.75, 2.75, 2.75, 1, 1};
static const double mpg_k2_dy[] = {0.5, 1, 1.5, 2};
static const double mpg_k2[] = {0, 0, 0, 0, 0, 0, 0.5, 1, 0, 0, 0, 0, 0, 0, 0, 1.5, 0, 0, 2, 0};
static const double mpg_k3s1p1_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5,
                                       5.5, 6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5, 10};
static const double mpg_k3s1p1[] = {0, 0, 0, 0, 7.5, 0,  13.5, 6.5, 0,    0,
                                    0, 0, 0, 0, 0,   28, 0,    0,   49.5, 0};
static const double ap_inc[] = {0.2777777777777778,
                                0.9722222222222222,
                                0.5277777777777778,
                                0.9166666666666666,
                                1.25,
                                0.8055555555555556,
                                0.4166666666666667,
                                0.5,
                                0.625};
static const double ap_exc[] = {
    0.625, 1.4583333333333333, 1.1875, 1.375, 1.25, 1.2083333333333333, 1.25, 1, 1.875};
static const double ap_23[] = {1.5833333333333333, 1.9583333333333333, 1.125, 0.75,
                               0.4583333333333333, 0.5416666666666666};
static const double apg_inc_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5};
static const double apg_inc[] = {0.05555555555555555,
                                 0.16666666666666666,
                                 0.1111111111111111,
                                 0.2777777777777778,
                                 0.16666666666666666,
                                 0.2777777777777778,
                                 0.6666666666666666,
                                 0.3888888888888889,
                                 0.8888888888888888,
                                 0.5,
                                 0.2222222222222222,
                                 0.5,
                                 0.2777777777777778,
                                 0.6111111111111112,
                                 0.3333333333333333,
                                 0.8055555555555556,
                                 1.75,
                                 0.9444444444444444,
                                 2.0277777777777777,
                                 1.0833333333333333};
static const double apg_exc_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5};
static const double apg_exc[] = {0.125,
                                 0.29166666666666663,
                                 0.16666666666666666,
                                 0.5416666666666666,
                                 0.375,
                                 0.4583333333333333,
                                 0.9027777777777778,
                                 0.4444444444444444,
                                 1.3194444444444444,
                                 0.875,
                                 0.3333333333333333,
                                 0.6111111111111112,
                                 0.2777777777777778,
                                 0.7777777777777778,
                                 0.5,
                                 2.0833333333333335,
                                 3.6944444444444446,
                                 1.6111111111111112,
                                 4.361111111111111,
                                 2.75};
static const double aap_32[] = {1.5833333333333333, 1.9583333333333333, 1.125, 0.75,
                                0.4583333333333333, 0.5416666666666666};
static const double aap_1[] = {1.1375};
static const double aapg_32_dy[] = {0.5, 1, 1.5, 2, 2.5, 3};
static const double aapg_32[] = {0.08333333333333333,
                                 0.08333333333333333,
                                 0.25,
                                 0.16666666666666666,
                                 0.16666666666666666,
                                 0.3333333333333333,
                                 0.3333333333333333,
                                 0.8333333333333333,
                                 0.5,
                                 0.5,
                                 0.6666666666666667,
                                 0.6666666666666667,
                                 1.5,
                                 0.8333333333333333,
                                 0.8333333333333333,
                                 0.4166666666666667,
                                 0.4166666666666667,
                                 0.9166666666666667,
                                 0.5,
                                 0.5};
static const double x23[] = {1.5, -2, 3, 0.25, 3, -1};
static const double up_n2[] = {1.5,  1.5,  -2, -2, 3,  3,  1.5,  1.5,  -2, -2, 3,  3,
                               0.25, 0.25, 3,  3,  -1, -1, 0.25, 0.25, 3,  3,  -1, -1};
static const double up_n35[] = {1.5, 1.5, -2, -2, 3, 1.5, 1.5, -2, -2, 3, 0.25, 0.25, 3, 3, -1};
static const double up_b2[] = {1.5,    0.625,    -1.125,    -0.75,   1.75,   3,
                               1.1875, 0.703125, -0.265625, -0.0625, 1.3125, 2,
                               0.5625, 0.859375, 1.453125,  1.3125,  0.4375, 0,
                               0.25,   0.9375,   2.3125,    2,       0,      -1};
static const double up_b35a[] = {1.5,  -0.25, -2,   0.5,   3, 0.875, 0.6875, 0.5,
                                 0.75, 1,     0.25, 1.625, 3, 1,     -1};
static const double upg_n35_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5};
static const double upg_n35[] = {8, 12, 7.5, 11.5, 13.5, 7.5};
static const double upg_b2_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4,  4.5,  5,  5.5,  6,
                                   6.5, 7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5, 11, 11.5, 12};
static const double upg_b2[] = {10.75, 14.5, 18.25, 31.75, 35.5, 39.25};
static const double upg_b35a_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5};
static const double upg_b35a[] = {3.375, 7, 7.125, 10.875, 17, 14.625};
static const double pd_c[] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1.5, -2, 0.5, 0.25, 3};
static const double pd_r[] = {-1, 3, 0.25, 3, -1, 3, 3, -2, 1.5, -2, 3, -2, -1, 3, 0.25, 3, -1, 3};
static const double pdg_c_dy[] = {0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6};
static const double pdg_c[] = {4, 4.5, 0, 5.5, 6, 0};
static const double pdg_r_dy[] = {0.5, 1,   1.5, 2,   2.5, 3,   3.5, 4,   4.5,
                                  5,   5.5, 6,   6.5, 7,   7.5, 8,   8.5, 9};
static const double pdg_r[] = {4.5, 15, 9, 9, 30, 18};

#define X45                                                                                        \
    {                                                                                              \
        KILN_F32, 4, {1, 1, 4, 5}, x45, 0, 0                                                       \
    }
#define X23                                                                                        \
    {                                                                                              \
        KILN_F32, 4, {1, 1, 2, 3}, x23, 0, 0                                                       \
    }
#define D(r, a, b, c, d, v)                                                                        \
    {                                                                                              \
        KILN_F32, r, {a, b, c, d}, v, 0, 0                                                         \
    }
#define R(r, a, b, c, d)                                                                           \
    {                                                                                              \
        KILN_F32, r, {a, b, c, d}, NULL, -2, 2                                                     \
    }

#define FWD1(nm, op, a, exp, ng, na, ...)                                                          \
    {                                                                                              \
        nm, op, 1, {a}, na, {__VA_ARGS__}, exp, OPCASE_COUNT(exp), ng                              \
    }
#define FWD2(nm, op, a, b, exp, na, ...)                                                           \
    {                                                                                              \
        nm, op, 2, {a, b}, na, {__VA_ARGS__}, exp, OPCASE_COUNT(exp), true                         \
    }
#define GRAD1(nm, op, a, na, ...)                                                                  \
    {                                                                                              \
        nm, op, 1, {a}, na, {__VA_ARGS__}, NULL, 0, false                                          \
    }

const op_case kiln_opcases_pool[] = {
    /* max_pool2d */
    FWD1("max_pool2d_k2_odd", "max_pool2d", X45, mp_k2, true, 1, "kernel=[2]"),
    FWD1("max_pool2d_k3s2p1_ceil", "max_pool2d", X45, mp_k3s2p1c, true, 4, "kernel=[3]",
         "stride=[2]", "padding=[1]", "ceil_mode=1"),
    FWD1("max_pool2d_dilation", "max_pool2d", X45, mp_d2, true, 4, "kernel=[2,3]", "stride=[1]",
         "padding=[1,1]", "dilation=[2,1]"),
    GRAD1("max_pool2d_grad_k2", "max_pool2d", R(4, 2, 3, 5, 7), 1, "kernel=[2]"),
    GRAD1("max_pool2d_grad_k3s2p1_ceil_dil", "max_pool2d", R(4, 1, 2, 7, 6), 5, "kernel=[3,2]",
          "stride=[2,1]", "padding=[1,1]", "dilation=[1,2]", "ceil_mode=1"),
    GRAD1("max_pool2d_grad_overlap", "max_pool2d", R(3, 2, 5, 5, 0), 3, "kernel=[3]", "stride=[1]",
          "padding=[1]"),
    /* max_pool2d_grad: ties go to the first maximum; overlapping windows sum */
    FWD2("max_pool2d_grad_ties", "max_pool2d_grad", X45, D(4, 1, 1, 2, 2, mpg_k2_dy), mpg_k2, 1,
         "kernel=[2]"),
    FWD2("max_pool2d_grad_overlap_sum", "max_pool2d_grad", X45, D(4, 1, 1, 4, 5, mpg_k3s1p1_dy),
         mpg_k3s1p1, 3, "kernel=[3]", "stride=[1]", "padding=[1]"),
    /* avg_pool2d */
    FWD1("avg_pool2d_include_pad", "avg_pool2d", X45, ap_inc, false, 4, "kernel=[3]", "stride=[2]",
         "padding=[1]", "ceil_mode=1"),
    FWD1("avg_pool2d_exclude_pad", "avg_pool2d", X45, ap_exc, false, 5, "kernel=[3]", "stride=[2]",
         "padding=[1]", "ceil_mode=1", "count_include_pad=0"),
    FWD1("avg_pool2d_rect", "avg_pool2d", X45, ap_23, false, 2, "kernel=[2,3]", "stride=[1,2]"),
    GRAD1("avg_pool2d_grad_random", "avg_pool2d", R(4, 2, 2, 7, 5), 4, "kernel=[3,2]",
          "stride=[2,1]", "padding=[1,0]", "count_include_pad=0"),
    FWD1("avg_pool2d_grad_include_pad", "avg_pool2d_grad", D(4, 1, 1, 3, 3, apg_inc_dy), apg_inc,
         true, 5, "kernel=[3]", "stride=[2]", "padding=[1]", "ceil_mode=1", "size=[4,5]"),
    FWD1("avg_pool2d_grad_exclude_pad", "avg_pool2d_grad", D(4, 1, 1, 3, 3, apg_exc_dy), apg_exc,
         true, 6, "kernel=[3]", "stride=[2]", "padding=[1]", "ceil_mode=1", "count_include_pad=0",
         "size=[4,5]"),
    /* adaptive_avg_pool2d: windows of different sizes, and global pooling */
    FWD1("adaptive_avg_pool2d_3x2", "adaptive_avg_pool2d", X45, aap_32, false, 1,
         "output_size=[3,2]"),
    FWD1("adaptive_avg_pool2d_global", "adaptive_avg_pool2d", X45, aap_1, false, 1,
         "output_size=[1]"),
    GRAD1("adaptive_avg_pool2d_grad_up", "adaptive_avg_pool2d", R(3, 2, 3, 5, 0), 1,
          "output_size=[5,7]"),
    FWD1("adaptive_avg_pool2d_grad", "adaptive_avg_pool2d_grad", D(4, 1, 1, 3, 2, aapg_32_dy),
         aapg_32, true, 1, "size=[4,5]"),
    /* upsample */
    FWD1("upsample_nearest_2", "upsample", X23, up_n2, false, 0, 0),
    FWD1("upsample_nearest_size", "upsample", X23, up_n35, false, 1, "size=[3,5]"),
    FWD1("upsample_bilinear_2", "upsample", X23, up_b2, false, 1, "mode=1"),
    FWD1("upsample_bilinear_align", "upsample", X23, up_b35a, false, 3, "size=[3,5]", "mode=1",
         "align_corners=1"),
    GRAD1("upsample_grad_bilinear_down", "upsample", R(4, 1, 2, 7, 6), 2, "size=[3,4]", "mode=1"),
    FWD1("upsample_grad_nearest_size", "upsample_grad", D(4, 1, 1, 3, 5, upg_n35_dy), upg_n35, true,
         2, "size=[2,3]", "scale=0"),
    FWD1("upsample_grad_bilinear_2", "upsample_grad", D(4, 1, 1, 4, 6, upg_b2_dy), upg_b2, true, 3,
         "size=[2,3]", "scale=2", "mode=1"),
    FWD1("upsample_grad_bilinear_align", "upsample_grad", D(4, 1, 1, 3, 5, upg_b35a_dy), upg_b35a,
         true, 3, "size=[2,3]", "mode=1", "align_corners=1"),
    /* pad */
    FWD1("pad_constant_crop", "pad", X23, pd_c, false, 2, "pads=[1,-1,2,0]", "value=0.5"),
    FWD1("pad_reflect", "pad", X23, pd_r, false, 2, "pads=[2,1,1,0]", "mode=1"),
    GRAD1("pad_grad_1d_reflect", "pad", R(2, 3, 6, 0, 0), 2, "pads=[4,5]", "mode=1"),
    FWD1("pad_grad_constant", "pad_grad", D(4, 1, 1, 4, 3, pdg_c_dy), pdg_c, true, 1,
         "pads=[1,-1,2,0]"),
    FWD1("pad_grad_reflect", "pad_grad", D(4, 1, 1, 3, 6, pdg_r_dy), pdg_r, true, 2,
         "pads=[2,1,1,0]", "mode=1"),
};
const int kiln_nopcases_pool = OPCASE_COUNT(kiln_opcases_pool);
