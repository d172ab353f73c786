/* tests/opcases/norm.c — cases for ir/ops_norm.c (train_eval,
 * batchnorm_stats, batchnorm_apply, batchnorm_sums, dropout). Expected values come from
 * NumPy in float64 on the f32-rounded inputs (tests/golden/gen_norm.py has
 * the same hash for dropout's masks), printed with 17 significant digits.
 * Inputs are uniform in [-2, 2) (NumPy RandomState(11), three decimals). */
#include "tests/opcases.h"

/* ---- train_eval: b, whatever a holds ---- */
static const double te_a[] = {1, 2, 3, 4, 5, 6};
static const double te_b[] = {-0.5, 0.25, 8, -3, 0, 1.5};

/* ---- batchnorm_stats ---- */
/* [3, 2, 2, 2] -> [2, 2, 1, 1]: means, then biased variances */
static const double bs_x[] = {1.036, 1.273,  -0.622, -0.725, -1.553, -1.664, 0.851,  0.398,
                              -1.777, -0.081, -0.393, 1.392, 0.871,  0.408,  0.21,   1.796,
                              1.947, -0.648, -1.041, 1.186, -1.745, -0.542, -1.72,  -0.723};
static const double bs_y[] = {0.1289166659116745, -0.28441667556762695, 1.2803577184677124,
                              1.3422778844833374};
/* [4, 3] (BatchNorm1d) -> [2, 3] */
static const double bs2_x[] = {-1.718, -0.839, 1.16, 1.622, 1.17, 0.247,
                               0.464,  -0.554, -1.325, -0.255, 0.931, -1.748};
static const double bs2_y[] = {0.02824997901916504, 0.1769999861717224, -0.4165000319480896,
                               1.4648841619491577,  0.7802954912185669, 1.3809622526168823};

/* ---- batchnorm_apply: (x - m) s + b, x [2, 3, 2], the others [1, 3, 1] ---- */
static const double ap_x[] = {-1.917, 1.082, -0.8, 0.805, 0.939, 1.732,
                              -0.399, -0.566, 1.226, 1.058, 0.61, 1.244};
static const double ap_m[] = {0.5, -0.25, 1.0};
static const double ap_s[] = {2.0, 0.5, -1.5};
static const double ap_b[] = {0.125, 1.0, -0.5};
static const double ap_y[] = {-4.709000110626221,  1.2890000343322754,  0.7250000238418579,
                              1.527500033378601,   -0.4085000157356262, -1.5980000495910645,
                              -1.6729999780654907, -2.006999969482422,  1.7379999160766602,
                              1.6540000438690186,  0.08499997854232788, -0.8659999370574951};

/* ---- batchnorm_sums: sum(dy), sum(dy (x - m)) per channel; x is bs_x ---- */
static const double su_dy[] = {-1.112, 1.483, -1.173, 1.674, -0.046, 0.447, 1.064, 0.074,
                               -0.813, -1.249, -1.677, 0.954, -0.235, -1.367, 1.52, -0.904,
                               -0.343, -0.816, 0.515, 0.319, 0.4, -0.937, -0.861, -0.986};
static const double su_m[] = {0.25, -0.5};
static const double su_y[] = {-2.23799991607666, -1.8309999704360962, 4.0473480224609375,
                              -0.7161069512367249};

/* ---- dropout: x [4, 5], step 3 (p 0.5, seed 7) and 10 (p 0.25, seed 12345) ---- */
static const double dr_x[] = {-1.279, -1.922, -0.147, 0.9,    -0.319, -0.058, -1.949,
                              -0.051, 1.767,  1.403,  0.92,   -1.565, 1.576,  1.429,
                              -1.34,  0.529,  -1.918, -1.533, -0.735, -1.368};
static const double dr_step3[] = {3};
static const double dr_step10[] = {10};
static const double dr_y50[] = {-2.558000087738037, -3.8440001010894775, 0, 0, 0,
                                -0.11599999666213989, -3.8980000019073486, 0, 0, 0,
                                1.840000033378601, 0, 0, 0, 0,
                                1.0579999685287476, 0, -3.065999984741211, 0,
                                -2.7360000610351562};
static const double dr_y25[] = {-1.7053334712982178, 0, -0.19600000977516174, 1.2000000476837158,
                                -0.4253333508968353, 0, -2.5986666679382324, -0.06800000369548798,
                                2.3559999465942383, 0, 0, 0, 2.1013333797454834,
                                1.905333399772644, -1.786666750907898, 0.7053333520889282,
                                -2.557333469390869, -2.0440001487731934, 0, -1.8240001201629639};
static const double dr_p1[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static const double dr_step_i[] = {5};

#define TE_A {KILN_F32, 2, {2, 3}, te_a, 0, 0}
#define TE_B {KILN_F32, 2, {2, 3}, te_b, 0, 0}
#define BS_X {KILN_F32, 4, {3, 2, 2, 2}, bs_x, 0, 0}
#define BS2_X {KILN_F32, 2, {4, 3}, bs2_x, 0, 0}
#define AP_X {KILN_F32, 3, {2, 3, 2}, ap_x, 0, 0}
#define AP_C(d) {KILN_F32, 3, {1, 3, 1}, d, 0, 0}
#define DR_X {KILN_F32, 2, {4, 5}, dr_x, 0, 0}
#define SU_DY {KILN_F32, 4, {3, 2, 2, 2}, su_dy, 0, 0}
#define SU_M {KILN_F32, 4, {1, 2, 1, 1}, su_m, 0, 0}
#define STEP(d) {KILN_F32, 0, {0}, d, 0, 0}
/* random inputs for the gradient rows */
#define R4D {KILN_F32, 4, {3, 4, 2, 3}, NULL, -2, 2}
#define R2D {KILN_F32, 2, {5, 3}, NULL, -2, 2}
#define RC4 {KILN_F32, 4, {1, 4, 1, 1}, NULL, -2, 2}
#define RSC {KILN_F32, 0, {0}, NULL, -2, 2}
#define RB22 {KILN_F32, 2, {2, 3}, NULL, -2, 2}
#define STEP_I {KILN_I64, 0, {0}, dr_step_i, 0, 0}

#define FWD(nm, op, nin, ins, exp, ng, na, ...)                                                \
    {nm, op, nin, ins, na, {__VA_ARGS__}, exp, OPCASE_COUNT(exp), ng}
#define GRAD(nm, op, nin, ins, na, ...) {nm, op, nin, ins, na, {__VA_ARGS__}, NULL, 0, false}
#define IN2(a, b) {a, b}
#define IN4(a, b, c, d) {a, b, c, d}
#define IN1(a) {a}
#define IN3(a, b, c) {a, b, c}

const op_case kiln_opcases_norm[] = {
    /* train_eval: b; a's gradient is zero */
    FWD("train_eval_is_b", "train_eval", 2, IN2(TE_A, TE_B), te_b, false, 0, 0),
    /* batchnorm_stats */
    FWD("batchnorm_stats_nchw", "batchnorm_stats", 1, IN1(BS_X), bs_y, false, 0, 0),
    FWD("batchnorm_stats_nc", "batchnorm_stats", 1, IN1(BS2_X), bs2_y, false, 0, 0),
    GRAD("batchnorm_stats_grad_4d", "batchnorm_stats", 1, IN1(R4D), 0, 0),
    GRAD("batchnorm_stats_grad_2d", "batchnorm_stats", 1, IN1(R2D), 0, 0),
    /* batchnorm_apply */
    FWD("batchnorm_apply", "batchnorm_apply", 4, IN4(AP_X, AP_C(ap_m), AP_C(ap_s), AP_C(ap_b)),
        ap_y, false, 0, 0),
    /* mean, scale and shift of one shape: the two-reduction gradient */
    GRAD("batchnorm_apply_grad_shared", "batchnorm_apply", 4, IN4(R4D, RC4, RC4, RC4), 0, 0),
    /* of different shapes: the per-input gradient */
    GRAD("batchnorm_apply_grad_mixed", "batchnorm_apply", 4, IN4(R4D, RSC, RC4, RB22), 0, 0),
    /* batchnorm_sums: a backward op, no gradient rule */
    FWD("batchnorm_sums", "batchnorm_sums", 3, IN3(SU_DY, BS_X, SU_M), su_y, true, 0, 0),
    /* dropout */
    FWD("dropout_p50", "dropout", 2, IN2(DR_X, STEP(dr_step3)), dr_y50, true, 2, "p=0.5",
        "seed=7"),
    FWD("dropout_p25", "dropout", 2, IN2(DR_X, STEP(dr_step10)), dr_y25, true, 2, "p=0.25",
        "seed=12345"),
    FWD("dropout_p1_drops_all", "dropout", 2, IN2(DR_X, STEP(dr_step3)), dr_p1, true, 1, "p=1"),
    FWD("dropout_p0_keeps_all", "dropout", 2, IN2(DR_X, STEP(dr_step3)), dr_x, true, 1, "p=0"),
    /* an integer step stays an input: the mask is fixed, the gradient is the mask's */
    GRAD("dropout_grad", "dropout", 2, IN2(R4D, STEP_I), 2, "p=0.3", "seed=99"),
};
const int kiln_nopcases_norm = OPCASE_COUNT(kiln_opcases_norm);
