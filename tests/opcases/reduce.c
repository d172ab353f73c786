/* tests/opcases/reduce.c — cases for ir/ops_reduce.c (reduce_sum,
 * reduce_mean, reduce_max, argmax, softmax, log_softmax).
 * Expected values come from NumPy / PyTorch in float64 on the same inputs
 * (every input here is exact in f32), printed with 17 significant digits.
 * Rows with data are gradient-checked on that data too, unless no_grad;
 * the data has no ties except where a row says so. */
#include "tests/opcases.h"

/* x23 = [[0.5, -1.25, 2], [3, 0.75, -0.5]]; x234 = (permutation(24) - 10.5) / 4
 * (NumPy RandomState(1)), distinct values; i23 integers; tie23 with ties. */
static const double x23[] = {0.5, -1.25, 2, 3, 0.75, -0.5};
static const double x234[] = {0.625, 1.875, -1.875, 0.875, 2.375, 1.625, -0.125, -1.625, -2.125,
                              2.125, -1.125, -0.875, 2.625, -2.375, 1.375, -2.625, 1.125, 3.125,
                              2.875, -0.375, -0.625, 0.375, 0.125, -1.375};
static const double i23[] = {3, -7, 2, 5, 5, -1};
static const double tie23[] = {1.5, -2, 1.5, 0.25, 0.25, -1};
static const double big13[] = {1000, 1001, 999};
static const double sum23_ax1[] = {1.25, 3.25};
static const double sum234_last_keep[] = {1.5, 2.25, -2, -1, 6.75, -1.5};
static const double sum234_all[] = {6};
static const double sum234_ax20[] = {0.5, 9, -3.5};
static const double sumi23_ax0[] = {8, -2, 1};
static const double mean23_ax0[] = {1.75, -0.25, 0.75};
static const double mean234_keep[] = {0.14583333333333334, 0.35416666666666669};
static const double mean234_all[] = {0.25};
static const double max23_ax1[] = {2, 3};
static const double max234_last_keep[] = {1.875, 2.375, 2.125, 2.625, 3.125, 0.375};
static const double max234_all[] = {3.125};
static const double maxi23_ax0[] = {5, 5, 2};
static const double maxtie23_ax1[] = {1.5, 0.25};
static const double max234_ax01[] = {2.625, 3.125, 2.875, 0.875};
static const double argmax234[] = {1, 0, 1, 0, 1, 1};
static const double argmax23_ax0_keep[] = {1, 1, 0};
static const double argmaxtie23[] = {0, 0};
static const double argmaxi23_ax0[] = {1, 1, 0};
static const double argmax234_ax1[] = {1, 2, 1, 0, 0, 1, 1, 1};
static const double sm23[] = {0.17682018210744427, 0.030726740326436429, 0.79245307756611927,
                              0.880594387980004, 0.092813965646621921, 0.026591646373374078};
static const double sm23_ax0[] = {0.07585818002124356, 0.11920292202211755, 0.92414181997875655,
                                  0.92414181997875655, 0.88079707797788231, 0.07585818002124356};
static const double sm234_ax1[] = {0.14665916571649198, 0.32649583579983671, 0.11271920470830456,
                                   0.79626777060508636, 0.84396522749289271, 0.25427521259046565,
                                   0.64865423705164726, 0.065361638854373474, 0.0093756067906154254,
                                   0.4192289516096977, 0.23862655824004825, 0.13837059054054027,
                                   0.79245307756611927, 0.0038265125903212431, 0.1733644920789951,
                                   0.071540589715526182, 0.17682018210744427, 0.93631675955907223,
                                   0.77696574933514229, 0.67875821679822002, 0.030726740326436432,
                                   0.059856727850606556, 0.049669758585862527, 0.24970119348625389};
static const double lsm23[] = {-1.7326219831020326, -3.4826219831020326, -0.23262198310203266,
                               -0.12715815863104757, -2.3771581586310475, -3.6271581586310475};
static const double lsm234_ax1[] = {-1.9196439848878797, -1.1193380844056782, -2.182855466878769,
                                    -0.22781975447342392, -0.16964398488787971, -1.3693380844056782,
                                    -0.43285546687876886, -2.727819754473424, -4.6696439848878795,
                                    -0.86933808440567817, -1.432855466878769, -1.977819754473424,
                                    -0.23262198310203266, -5.5658014414227708, -1.7523590102358224,
                                    -2.6374903020271998, -1.7326219831020326, -0.06580144142277064,
                                    -0.25235901023582247, -0.38749030202719992, -3.4826219831020326,
                                    -2.8158014414227708, -3.0023590102358226, -1.3874903020271998};
static const double sm_big[] = {0.24472847105479761, 0.66524095577482178, 0.090030573170380448};
static const double lsm_big[] = {-1.4076059644443804, -0.40760596444438041, -2.4076059644443806};

#define X23 {KILN_F32, 2, {2, 3}, x23, 0, 0}
#define X234 {KILN_F32, 3, {2, 3, 4}, x234, 0, 0}
#define I23 {KILN_I32, 2, {2, 3}, i23, 0, 0}
#define TIE23 {KILN_F32, 2, {2, 3}, tie23, 0, 0}
#define BIG13 {KILN_F32, 2, {1, 3}, big13, 0, 0}
#define R234 {KILN_F32, 3, {2, 3, 4}, NULL, -2, 2}
#define R2345 {KILN_F32, 4, {2, 3, 4, 5}, NULL, -2, 2}

/* name, op, input, expected (counted), no_grad, attribute count, attributes
 * (0 for none) */
#define FWD(nm, op, a, exp, ng, na, ...)                                                       \
    {nm, op, 1, {a}, na, {__VA_ARGS__}, exp, OPCASE_COUNT(exp), ng}
#define GRAD(nm, op, a, na, ...) {nm, op, 1, {a}, na, {__VA_ARGS__}, NULL, 0, false}

const op_case kiln_opcases_reduce[] = {
    /* reduce_sum */
    FWD("reduce_sum_axis1", "reduce_sum", X23, sum23_ax1, false, 1, "axes=[1]"),
    FWD("reduce_sum_3d_neg_axis_keepdims", "reduce_sum", X234, sum234_last_keep, false, 2,
        "axes=[-1]", "keepdims=1"),
    FWD("reduce_sum_3d_all_axes", "reduce_sum", X234, sum234_all, false, 0, 0),
    FWD("reduce_sum_3d_unsorted_axes", "reduce_sum", X234, sum234_ax20, false, 1, "axes=[2,0]"),
    FWD("reduce_sum_i32", "reduce_sum", I23, sumi23_ax0, true, 1, "axes=[-2]"),
    GRAD("reduce_sum_grad_4d_mixed_axes", "reduce_sum", R2345, 1, "axes=[-1,1]"),
    GRAD("reduce_sum_grad_4d_keepdims", "reduce_sum", R2345, 2, "axes=[0,2]", "keepdims=1"),
    /* reduce_mean */
    FWD("reduce_mean_axis0", "reduce_mean", X23, mean23_ax0, false, 1, "axes=[0]"),
    FWD("reduce_mean_3d_neg_axes_keepdims", "reduce_mean", X234, mean234_keep, false, 2,
        "axes=[-2,-1]", "keepdims=1"),
    FWD("reduce_mean_3d_all_axes", "reduce_mean", X234, mean234_all, false, 0, 0),
    GRAD("reduce_mean_grad_4d", "reduce_mean", R2345, 1, "axes=[1,3]"),
    GRAD("reduce_mean_grad_3d_all_keepdims", "reduce_mean", R234, 1, "keepdims=1"),
    /* reduce_max */
    FWD("reduce_max_axis1", "reduce_max", X23, max23_ax1, false, 1, "axes=[1]"),
    FWD("reduce_max_3d_neg_axis_keepdims", "reduce_max", X234, max234_last_keep, false, 2,
        "axes=[-1]", "keepdims=1"),
    FWD("reduce_max_3d_all_axes", "reduce_max", X234, max234_all, false, 0, 0),
    FWD("reduce_max_3d_axes01", "reduce_max", X234, max234_ax01, false, 1, "axes=[0,1]"),
    FWD("reduce_max_i32", "reduce_max", I23, maxi23_ax0, true, 1, "axes=[0]"),
    /* Two-way ties: the gradient splits dy in halves, which is also what a
     * central difference measures at a two-way tie. */
    FWD("reduce_max_ties", "reduce_max", TIE23, maxtie23_ax1, false, 1, "axes=[1]"),
    GRAD("reduce_max_grad_4d", "reduce_max", R2345, 1, "axes=[-1,-3]"),
    GRAD("reduce_max_grad_3d_all_keepdims", "reduce_max", R234, 1, "keepdims=1"),
    /* argmax: no gradient */
    FWD("argmax_3d_default_axis", "argmax", X234, argmax234, true, 0, 0),
    FWD("argmax_3d_axis1", "argmax", X234, argmax234_ax1, true, 1, "axis=1"),
    FWD("argmax_axis0_keepdims", "argmax", X23, argmax23_ax0_keep, true, 2, "axis=-2",
        "keepdims=1"),
    FWD("argmax_ties_first_index", "argmax", TIE23, argmaxtie23, true, 1, "axis=1"),
    FWD("argmax_i32", "argmax", I23, argmaxi23_ax0, true, 1, "axis=0"),
    /* softmax */
    FWD("softmax_default_axis", "softmax", X23, sm23, false, 0, 0),
    FWD("softmax_axis0", "softmax", X23, sm23_ax0, false, 1, "axis=0"),
    FWD("softmax_3d_axis1", "softmax", X234, sm234_ax1, false, 1, "axis=1"),
    FWD("softmax_large_logits", "softmax", BIG13, sm_big, false, 0, 0),
    GRAD("softmax_grad_4d_neg_axis", "softmax", R2345, 1, "axis=-2"),
    /* log_softmax */
    FWD("log_softmax_default_axis", "log_softmax", X23, lsm23, false, 0, 0),
    FWD("log_softmax_3d_neg_axis", "log_softmax", X234, lsm234_ax1, false, 1, "axis=-2"),
    FWD("log_softmax_large_logits", "log_softmax", BIG13, lsm_big, false, 1, "axis=1"),
    GRAD("log_softmax_grad_4d_axis0", "log_softmax", R2345, 1, "axis=0"),
};
const int kiln_nopcases_reduce = OPCASE_COUNT(kiln_opcases_reduce);
