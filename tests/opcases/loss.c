/* tests/opcases/loss.c — cases for ir/ops_loss.c (cross_entropy, mse_loss,
 * bce_with_logits, l1_loss, one_hot). Expected values come from torch.nn.functional
 * in float64 on the f32-rounded inputs, printed with 17 significant digits.
 * Rows with data are gradient-checked on that data too (labels stay integer
 * inputs and get no gradient), unless no_grad. */
#include "tests/opcases.h"

#include <math.h>

/* ---- cross_entropy: logits uniform in [-2, 2) (NumPy RandomState(7),
 * three decimals), [4, 5] and [2, 3, 2, 2] (N, C, H, W) ---- */
static const double lg45[] = {-1.695, 1.12, -0.246, 0.894, 1.912, 0.154, 0.004, -1.712, -0.926, 0,
                              0.717, 1.215, -0.476, -1.736, -0.847, 1.638, -1.146, -0.192, 1.725,
                              -1.9};
static const double lab4[] = {1, 0, 4, 2};
static const double ce45[] = {2.0130709940193925};
/* two samples with the default ignore_index -100 */
static const double lab4_ign[] = {3, -100, 0, -100};
static const double ce45_ign[] = {1.4331062907066481};
/* ignore_index=2, a class in range: samples 0 and 2 are left out */
static const double lab4_ign2[] = {2, 1, 2, 4};
static const double ce45_ign2[] = {2.8530356843029336};
static const double lg4d[] = {0.402, 1.801, -1.079, 0.194, 1.637, -1.467, 0.094, 1.002, 0.676,
                              -0.129, -1.181, -0.037, -0.51, -0.09, -0.536, 1.352, 1.075, -0.744,
                              0.291, -0.896, -0.189, -0.588, 0.63, -0.519};
/* labels [2, 2, 2], one pixel ignored */
static const double lab4d[] = {0, 2, 1, 1, 2, -100, 0, 1};
static const double ce4d[] = {1.5585160134134248};
/* every label ignored: 0/0, NaN, as PyTorch */
static const double all_ignored[] = {-100, -100, -100, -100};
static const double ce_allign[] = {NAN};

/* ---- mse_loss, bce_with_logits ---- */
static const double x23[] = {0.5, -1.25, 2, 3, 0.75, -0.5};
static const double q23[] = {1, 0.25, 2.5, -1, 0.5, 0};
static const double mse23[] = {3.1770833333333335};
static const double tg23[] = {1, 0, 0.25, 0.5, 1, 0};
static const double bx23[] = {4.5, -1.25, -5, 3.5, 0.75, 0.125};
static const double bce23[] = {0.7406521057312957};
/* large logits: exp(-|x|) keeps the stable form finite */
static const double bce_x[] = {40, -40, 0};
static const double bce_t[] = {0, 1, 0.5};
static const double bce_ext[] = {26.897715726853317};
/* logits for the bce gradient row, spread over [-6, 6] */
static const double bce_x24[] = {5.5, -4.25, 3.75, -6, 2.5, -0.75, 4.5, -5.25, 1.25, -2, 6, -3.5,
                                 -1.5, 5, -4.75, 0.5, 3, -5.75, 2.25, -3.25, 4.25, -2.75, 1.75,
                                 0.125};

/* ---- l1_loss: mean |pred - target| ---- */
static const double l1_23[] = {1.2083333333333333}; /* P23, Q23: 7.25 / 6 */
/* three pairs equal: their terms are 0 and so is their gradient (sign(0) = 0,
 * which central differences also give: (|h| - |-h|) / 2h) */
static const double q23_tie[] = {0.5, 0.25, 2, -1, 0.75, 0};
static const double l1_tie[] = {1.0}; /* (1.5 + 4 + 0.5) / 6 */

/* ---- one_hot ---- */
/* depth 4, last axis: 5 is out of range, a row of zeros */
static const double oh_l[] = {2, 0, 5};
static const double oh_l4[] = {0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0};
/* depth 4, axis 1 of [2, 4, 2]: -1 is out of range */
static const double l22[] = {1, 3, 0, -1};
static const double oh22_ax1[] = {0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0};

/* Inputs: data (fixed) or NULL with a [lo, hi) range (random). */
#define LG45 {KILN_F32, 2, {4, 5}, lg45, 0, 0}
#define LG4D {KILN_F32, 4, {2, 3, 2, 2}, lg4d, 0, 0}
#define LAB4(d) {KILN_I64, 1, {4}, d, 0, 0}
#define LAB4D {KILN_I32, 3, {2, 2, 2}, lab4d, 0, 0}
#define LAB_NONE {KILN_I32, 1, {4}, all_ignored, 0, 0}
#define RLG65 {KILN_F32, 2, {6, 5}, NULL, -3, 3}
#define RLAB6 {KILN_I32, 1, {6}, NULL, 0, 5}
#define RLG4D {KILN_F32, 4, {3, 4, 2, 3}, NULL, -3, 3}
#define RLAB4D {KILN_I64, 3, {3, 2, 3}, NULL, -1, 4} /* -1: ignored below */
#define P23 {KILN_F32, 2, {2, 3}, x23, 0, 0}
#define Q23 {KILN_F32, 2, {2, 3}, q23, 0, 0}
#define T23 {KILN_F32, 2, {2, 3}, tg23, 0, 0}
#define BX23 {KILN_F32, 2, {2, 3}, bx23, 0, 0}
#define BX {KILN_F32, 1, {3}, bce_x, 0, 0}
#define BT {KILN_F32, 1, {3}, bce_t, 0, 0}
#define RP234 {KILN_F32, 3, {2, 3, 4}, NULL, -1, 1}
#define RQ234 {KILN_F32, 3, {2, 3, 4}, NULL, 4, 8}
#define BX234 {KILN_F32, 3, {2, 3, 4}, bce_x24, 0, 0}
#define RT234 {KILN_F32, 3, {2, 3, 4}, NULL, 0, 1}
#define Q23T {KILN_F32, 2, {2, 3}, q23_tie, 0, 0}
#define RL234 {KILN_F32, 3, {2, 3, 4}, NULL, -1, 1}
#define OHL {KILN_I32, 1, {3}, oh_l, 0, 0}
#define L22 {KILN_I64, 2, {2, 2}, l22, 0, 0}

/* name, op, inputs, expected (counted), no_grad, attribute count, attributes
 * (0 for none) */
#define FWD1(nm, op, a, exp, ng, na, ...)                                                      \
    {nm, op, 1, {a}, na, {__VA_ARGS__}, exp, OPCASE_COUNT(exp), ng}
#define FWD2(nm, op, a, b, exp, ng, na, ...)                                                   \
    {nm, op, 2, {a, b}, na, {__VA_ARGS__}, exp, OPCASE_COUNT(exp), ng}
#define GRAD2(nm, op, a, b, na, ...) {nm, op, 2, {a, b}, na, {__VA_ARGS__}, NULL, 0, false}

const op_case kiln_opcases_loss[] = {
    /* cross_entropy */
    FWD2("cross_entropy", "cross_entropy", LG45, LAB4(lab4), ce45, false, 0, 0),
    FWD2("cross_entropy_ignore_default", "cross_entropy", LG45, LAB4(lab4_ign), ce45_ign, false,
         0, 0),
    FWD2("cross_entropy_ignore_in_range", "cross_entropy", LG45, LAB4(lab4_ign2), ce45_ign2,
         false, 1, "ignore_index=2"),
    FWD2("cross_entropy_4d_nchw", "cross_entropy", LG4D, LAB4D, ce4d, false, 0, 0),
    FWD2("cross_entropy_all_ignored", "cross_entropy", LG45, LAB_NONE, ce_allign, true, 0, 0),
    GRAD2("cross_entropy_grad_random", "cross_entropy", RLG65, RLAB6, 0, 0),
    GRAD2("cross_entropy_grad_4d_ignore", "cross_entropy", RLG4D, RLAB4D, 1, "ignore_index=-1"),
    /* mse_loss */
    FWD2("mse_loss", "mse_loss", P23, Q23, mse23, false, 0, 0),
    GRAD2("mse_loss_grad_3d", "mse_loss", RP234, RQ234, 0, 0),
    /* bce_with_logits */
    FWD2("bce_with_logits", "bce_with_logits", BX23, T23, bce23, false, 0, 0),
    FWD2("bce_with_logits_large_logits", "bce_with_logits", BX, BT, bce_ext, false, 0, 0),
    GRAD2("bce_with_logits_grad_3d", "bce_with_logits", BX234, RT234, 0, 0),
    /* l1_loss */
    FWD2("l1_loss", "l1_loss", P23, Q23, l1_23, false, 0, 0),
    FWD2("l1_loss_ties", "l1_loss", P23, Q23T, l1_tie, false, 0, 0),
    GRAD2("l1_loss_grad_3d", "l1_loss", RP234, RL234, 0, 0),
    /* one_hot: no gradient */
    FWD1("one_hot_last_axis", "one_hot", OHL, oh_l4, true, 1, "depth=4"),
    FWD1("one_hot_axis1_f64", "one_hot", L22, oh22_ax1, true, 3, "depth=4", "axis=1",
         "dtype=f64"),
};
const int kiln_nopcases_loss = OPCASE_COUNT(kiln_opcases_loss);
