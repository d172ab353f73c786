/* tests/opcases/shape.c — cases for ir/ops_shape.c.
 * Expected values come from NumPy (reshape, transpose, broadcast_to, basic
 * slicing, concatenate; unslice as np.zeros with a strided assignment).
 * Every case with data doubles as a gradient case on that data. */
#include "tests/opcases.h"

/* np.arange(24) - 11.5; read as [2,3,4], [2,3,2,2], [3,7] (first 21), ... */
static const double x24[] = {-11.5, -10.5, -9.5, -8.5, -7.5, -6.5, -5.5, -4.5, -3.5, -2.5, -1.5, -0.5,
                             0.5,   1.5,   2.5,  3.5,  4.5,  5.5,  6.5,  7.5,  8.5,  9.5,  10.5, 11.5};
static const double one[] = {2.5};
/* np.transpose(x24.reshape(2,3,4), (2,0,1)) -> [4,2,3] */
static const double perm_201[] = {-11.5, -7.5, -3.5, 0.5, 4.5, 8.5, -10.5, -6.5, -2.5, 1.5, 5.5, 9.5,
                                  -9.5, -5.5, -1.5, 2.5, 6.5, 10.5, -8.5, -4.5, -0.5, 3.5, 7.5, 11.5};
/* np.transpose(x24.reshape(2,3,4), (1,2,0)) -> [3,4,2] */
static const double perm_120[] = {-11.5, 0.5, -10.5, 1.5, -9.5, 2.5, -8.5, 3.5, -7.5, 4.5, -6.5, 5.5,
                                  -5.5, 6.5, -4.5, 7.5, -3.5, 8.5, -2.5, 9.5, -1.5, 10.5, -0.5, 11.5};
static const double row3[] = {1.5, -2, 3};
static const double col21[] = {4, -5};
static const double bc_row[] = {1.5, -2, 3, 1.5, -2, 3}; /* [3] -> [2,3] */
static const double bc_col[] = {4, 4, 4, 4, -5, -5, -5, -5, 4, 4, 4, 4, /* [2,1] -> [3,2,4] */
                                -5, -5, -5, -5, 4, 4, 4, 4, -5, -5, -5, -5};
static const double bc_scalar[] = {2.5, 2.5, 2.5, 2.5};
/* x24[:21].reshape(3,7)[:, -6:-1:2] */
static const double sl_neg[] = {-10.5, -8.5, -6.5, -3.5, -1.5, 0.5, 3.5, 5.5, 7.5};
/* x24[:21].reshape(3,7)[-100:100:2, :] */
static const double sl_wide[] = {-11.5, -10.5, -9.5, -8.5, -7.5, -6.5, -5.5,
                                 2.5,   3.5,   4.5,  5.5,  6.5,  7.5,  8.5};
/* x24.reshape(2,3,4)[:, :, 1:3] */
static const double sl_mid[] = {-10.5, -9.5, -6.5, -5.5, -2.5, -1.5, 1.5, 2.5, 5.5, 6.5, 9.5, 10.5};
/* u = np.zeros((3,7)); u[:, 1:7:2] = x24[:9].reshape(3,3) */
static const double unsl[] = {0, -11.5, 0, -10.5, 0, -9.5, 0, 0, -8.5, 0, -7.5, 0, -6.5, 0,
                              0, -5.5, 0, -4.5, 0, -3.5, 0};
/* u = np.zeros((5,2)); u[0:5:3, :] = x24[:4].reshape(2,2) */
static const double unsl0[] = {-11.5, -10.5, 0, 0, 0, 0, -9.5, -8.5, 0, 0};
/* np.flip(x24.reshape(2,3,4), (0, 2)) */
static const double flip_02[] = {3.5, 2.5, 1.5, 0.5, 7.5, 6.5, 5.5, 4.5, 11.5, 10.5, 9.5, 8.5,
                                 -8.5, -9.5, -10.5, -11.5, -4.5, -5.5, -6.5, -7.5, -0.5, -1.5,
                                 -2.5, -3.5};
/* np.flip(x24.reshape(2,3,4), -2) */
static const double flip_m2[] = {-3.5, -2.5, -1.5, -0.5, -7.5, -6.5, -5.5, -4.5, -11.5, -10.5,
                                 -9.5, -8.5, 8.5, 9.5, 10.5, 11.5, 4.5, 5.5, 6.5, 7.5, 0.5,
                                 1.5, 2.5, 3.5};
static const double cat_a[] = {1, 2};
static const double cat_c[] = {7, 8, 9, 10};
/* np.concatenate([cat_a [2,1], x24[:6] [2,3], cat_c [2,2]], axis=1) */
static const double cat3[] = {1, -11.5, -10.5, -9.5, 7, 8, 2, -8.5, -7.5, -6.5, 9, 10};

#define X(r, ...) {KILN_F32, r, {__VA_ARGS__}, x24, 0, 0}
#define R(r, ...) {KILN_F32, r, {__VA_ARGS__}, NULL, 0, 0}
#define ONE11 {KILN_F32, 2, {1, 1}, one, 0, 0}
#define ROW3 {KILN_F32, 1, {3}, row3, 0, 0}
#define COL21 {KILN_F32, 2, {2, 1}, col21, 0, 0}
#define SCALAR {KILN_F32, 0, {0}, one, 0, 0}
#define C1(nm, op, in, attr, exp, n) {nm, op, 1, {in}, 1, {attr}, exp, n, false}

const op_case kiln_opcases_shape[] = {
    /* reshape */
    C1("reshape_infer", "reshape", X(3, 2, 3, 4), "shape=[4,-1]", x24, 24),
    C1("reshape_infer_first", "reshape", X(2, 6, 4), "shape=[-1,2,3]", x24, 24),
    C1("reshape_to_scalar", "reshape", ONE11, "shape=[]", one, 1),
    /* flatten */
    C1("flatten_4d", "flatten", X(4, 2, 3, 2, 2), "axis=1", x24, 24),
    C1("flatten_4d_axis2", "flatten", X(4, 2, 3, 2, 2), "axis=2", x24, 24),
    C1("flatten_4d_all", "flatten", X(4, 2, 3, 2, 2), "axis=0", x24, 24),
    C1("flatten_negative_axis", "flatten", X(4, 2, 3, 2, 2), "axis=-2", x24, 24),
    /* permute */
    C1("permute_3d", "permute", X(3, 2, 3, 4), "perm=[2,0,1]", perm_201, 24),
    C1("permute_3d_negative", "permute", X(3, 2, 3, 4), "perm=[1,-1,0]", perm_120, 24),
    C1("permute_identity", "permute", X(2, 4, 6), "perm=[0,1]", x24, 24),
    /* flip */
    C1("flip_two_axes", "flip", X(3, 2, 3, 4), "dims=[0,2]", flip_02, 24),
    C1("flip_negative_axis", "flip", X(3, 2, 3, 4), "dims=[-2]", flip_m2, 24),
    C1("flip_none", "flip", X(2, 4, 6), "dims=[]", x24, 24),
    /* broadcast_to */
    C1("broadcast_to_row", "broadcast_to", ROW3, "shape=[2,3]", bc_row, 6),
    C1("broadcast_to_col", "broadcast_to", COL21, "shape=[3,2,4]", bc_col, 24),
    C1("broadcast_to_scalar", "broadcast_to", SCALAR, "shape=[2,2]", bc_scalar, 4),
    /* slice */
    {"slice_negative_step2", "slice", 1, {X(2, 3, 7)}, 4, {"axis=1", "start=-6", "end=-1", "step=2"},
     sl_neg, 9, false},
    {"slice_out_of_range", "slice", 1, {X(2, 3, 7)}, 4, {"axis=-2", "start=-100", "end=100", "step=2"},
     sl_wide, 14, false},
    {"slice_last_axis_default_step", "slice", 1, {X(3, 2, 3, 4)}, 3, {"axis=2", "start=1", "end=3"},
     sl_mid, 12, false},
    {"slice_empty", "slice", 1, {X(2, 3, 7)}, 4, {"axis=1", "start=5", "end=2", "step=1"}, sl_neg,
     0, false},
    {"slice_grad", "slice", 1, {R(3, 4, 5, 3)}, 4, {"axis=1", "start=-4", "end=5", "step=2"}, NULL,
     0, false},
    /* unslice (slice's gradient) */
    {"unslice_step2", "unslice", 1, {X(2, 3, 3)}, 4, {"axis=1", "start=1", "step=2", "size=7"},
     unsl, 21, false},
    {"unslice_axis0_step3", "unslice", 1, {X(2, 2, 2)}, 4, {"axis=-2", "start=0", "step=3",
     "size=5"}, unsl0, 10, false},
    {"unslice_grad", "unslice", 1, {R(3, 2, 2, 3)}, 4, {"axis=2", "start=1", "step=1", "size=6"},
     NULL, 0, false},
    /* concat */
    {"concat_three_axis1", "concat", 3, {{KILN_F32, 2, {2, 1}, cat_a, 0, 0}, X(2, 2, 3),
     {KILN_F32, 2, {2, 2}, cat_c, 0, 0}}, 1, {"axis=1"}, cat3, 12, false},
    {"concat_axis0_single", "concat", 1, {X(2, 4, 6)}, 0, {0}, x24, 24, false},
    {"concat_negative_axis", "concat", 2, {X(2, 2, 3), {KILN_F32, 2, {2, 3}, x24 + 6, 0, 0}}, 1,
     {"axis=-2"}, x24, 12, false},
    {"concat_grad", "concat", 3, {R(3, 2, 1, 3), R(3, 2, 4, 3), R(3, 2, 2, 3)}, 1, {"axis=1"},
     NULL, 0, false},
};
const int kiln_nopcases_shape = OPCASE_COUNT(kiln_opcases_shape);
