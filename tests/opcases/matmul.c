/* tests/opcases/matmul.c — cases for ir/ops_matmul.c.
 * Expected values come from NumPy (a @ b, with .T / swapaxes for the
 * transpose flags); inputs are small halves and integers, so f32 storage
 * holds every value exactly. Forward cases double as gradient cases on the
 * same data; the *_grad cases use random inputs. */
#include "tests/opcases.h"

/* a34 is also read as [4,3] (for ta=1) and b45 as [5,4] (for tb=1). */
static const double a34[] = {-2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3};
static const double b45[] = {-3, -2, -1, 0, 1, 2, 3, -3, -2, -1, 0, 1, 2, 3, -3, -2, -1, 0, 1, 2};
/* a34 @ b45 */
static const double mm_nn[] = {5.5, -1.5, 5.5, -1.5, 2, -0.5, 0.5, 1.5, 2.5, 0, -6.5, 2.5, -2.5, 6.5, -2};
/* a43.T @ b45 */
static const double mm_tn[] = {1.5, 0.5, 6.5, 5.5, 1, 0, 1, 5.5, 6.5, 0.5, -1.5, 1.5, 4.5, 7.5, 0};
/* a34 @ b54.T */
static const double mm_nt[] = {13, -8, 6, -4.5, -1, 1, -2, 2, -4.5, 3, -11, 4, -2, -4.5, 7};
/* a43.T @ b54.T */
static const double mm_tt[] = {9, -9, 8, -13.5, 7, 6, -7.5, 7, -13.5, 8, 3, -6, 6, -13.5, 9};
/* a [2,1,3,4] @ b [3,4,2] -> [2,3,3,2]: batch dims [2,1] and [3] broadcast */
static const double ab2134[] = {-2, -1, 0, 1, 2, -2, -1, 0, 1, 2, -2, -1,
                                0,  1,  2, -2, -1, 0, 1, 2, -2, -1, 0, 1};
static const double bb342[] = {-1, 0.5, 1, -0.5, 0, 1.5, -1, 0.5, 1, -0.5, 0, 1.5,
                               -1, 0.5, 1, -0.5, 0, 1.5, -1, 0.5, 1, -0.5, 0, 1.5};
static const double mm_batched[] = {0, 0, -4, 0.5, 2, -4, -1, -1, 3, -4.5, 2, 2,
                                    1, -2, 1, 2.5, -4, 2, 3, 1.5, -1, 2, 0, 0,
                                    -4, 3.5, 0, 0, -1, -1, 1, -3.5, 1, 1, 1, -2};
/* a [2,1,3,4] @ swapaxes(bb342 read as [3,2,4], -1, -2) */
static const double mm_batched_tb[] = {1, -1, -4, -2, -1.5, 4.5, 0, 1, 3, -4, -1.5, -1.5,
                                       -1, 0, -2, 3, 4.5, -1.5, 3.5, -1.5, 1, 0, 1, -1,
                                       -3.5, 3.5, 2, 1, 0, 1, -1.5, -3.5, 0, 2, -1, 0};
/* NumPy's vector rules */
static const double v4[] = {1, -2, 0.5, 3};
static const double mm_vec_mat[] = {-13, -10.5, 6, 8.5, 7.5};   /* v4 @ b45 */
static const double mm_mat_vec[] = {-2.25, 2.75, 7.75};         /* a34 @ v4 */
static const double a34_row1[] = {-0.5, 0, 0.5, 1};
static const double mm_vec_vec[] = {2.75};                       /* v4 @ a34[1] */
static const double mm_vec_batched[] = {-6, 3.75, 3.5, -4.75, 2.5, 4.75}; /* v4 @ bb342 */

/* b45 read as [4,5] transposed @ b45 read as [5,4] transposed -> [5,5] */
static const double mm_i32[] = {5, 7, 2, 4, -1, -1, 10, 0, 4, 1, 7, -1, 5, -17, 3,
                                1, 2, 3, -17, 5, 2, -16, 1, 4, 0};

#define A34 {KILN_F32, 2, {3, 4}, a34, 0, 0}
#define A43 {KILN_F32, 2, {4, 3}, a34, 0, 0}
#define B45 {KILN_F32, 2, {4, 5}, b45, 0, 0}
#define B54 {KILN_F32, 2, {5, 4}, b45, 0, 0}
#define V4 {KILN_F32, 1, {4}, v4, 0, 0}
#define AB2134 {KILN_F32, 4, {2, 1, 3, 4}, ab2134, 0, 0}
#define BB342 {KILN_F32, 3, {3, 4, 2}, bb342, 0, 0}
#define BB324 {KILN_F32, 3, {3, 2, 4}, bb342, 0, 0}
#define A34_ROW1 {KILN_F32, 1, {4}, a34_row1, 0, 0}
#define R(r, ...) {KILN_F32, r, {__VA_ARGS__}, NULL, 0, 0}

#define MM(nm, a, b, ta, tb, exp, n) {nm, "matmul", 2, {a, b}, 2, {ta, tb}, exp, n, false}
#define MMG(nm, a, b, ta, tb) {nm, "matmul", 2, {a, b}, 2, {ta, tb}, NULL, 0, false}

const op_case kiln_opcases_matmul[] = {
    MM("matmul_nn", A34, B45, "ta=0", "tb=0", mm_nn, 15),
    MM("matmul_tn", A43, B45, "ta=1", "tb=0", mm_tn, 15),
    MM("matmul_nt", A34, B54, "ta=0", "tb=1", mm_nt, 15),
    MM("matmul_tt", A43, B54, "ta=1", "tb=1", mm_tt, 15),
    MM("matmul_batched_broadcast", AB2134, BB342, "ta=0", "tb=0", mm_batched, 36),
    MM("matmul_batched_broadcast_tb", AB2134, BB324, "ta=0", "tb=1", mm_batched_tb, 36),
    MM("matmul_vec_mat", V4, B45, "ta=0", "tb=0", mm_vec_mat, 5),
    MM("matmul_mat_vec", A34, V4, "ta=0", "tb=0", mm_mat_vec, 3),
    MM("matmul_vec_vec", V4, A34_ROW1, "ta=0", "tb=0", mm_vec_vec, 1),
    MM("matmul_vec_batched", V4, BB342, "ta=0", "tb=0", mm_vec_batched, 6),
    /* integer operands: no gradient */
    {"matmul_i32", "matmul", 2, {{KILN_I32, 2, {4, 5}, b45, 0, 0}, {KILN_I32, 2, {5, 4}, b45, 0, 0}},
     2, {"ta=1", "tb=1"}, mm_i32, 25, true},
    /* gradients on random data, non-square shapes, every flag combination */
    MMG("matmul_nn_grad", R(2, 3, 4), R(2, 4, 5), "ta=0", "tb=0"),
    MMG("matmul_tn_grad", R(2, 4, 3), R(2, 4, 5), "ta=1", "tb=0"),
    MMG("matmul_nt_grad", R(2, 3, 4), R(2, 5, 4), "ta=0", "tb=1"),
    MMG("matmul_tt_grad", R(2, 4, 3), R(2, 5, 4), "ta=1", "tb=1"),
    MMG("matmul_batched_nn_grad", R(4, 2, 1, 3, 4), R(3, 3, 4, 2), "ta=0", "tb=0"),
    MMG("matmul_batched_tt_grad", R(3, 2, 4, 3), R(4, 3, 1, 2, 4), "ta=1", "tb=1"),
    MMG("matmul_batched_tn_grad", R(3, 1, 4, 3), R(2, 4, 5), "ta=1", "tb=0"),
    MMG("matmul_vec_mat_tb_grad", R(1, 4), R(2, 5, 4), "ta=0", "tb=1"),
    MMG("matmul_mat_vec_ta_grad", R(2, 4, 3), R(1, 4), "ta=1", "tb=0"),
    MMG("matmul_vec_batched_grad", R(1, 4), R(3, 3, 4, 2), "ta=0", "tb=0"),
    MMG("matmul_batched_vec_grad", R(3, 2, 3, 4), R(1, 4), "ta=0", "tb=0"),
};
const int kiln_nopcases_matmul = OPCASE_COUNT(kiln_opcases_matmul);
