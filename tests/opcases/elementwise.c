/* tests/opcases/elementwise.c — cases for ir/ops_elementwise.c.
 * Expected values are worked by hand (or with a calculator for
 * transcendentals) and rounded as f32 storage would round them. */
#include "tests/opcases.h"

#include <math.h>

static const double v6[] = {-1.5, -0.5, 0.0, 0.25, 1.0, 2.0};
static const double pos6[] = {0.25, 0.5, 1.0, 2.0, 4.0, 9.0};
static const double row3[] = {10, 20, 30};
static const double col2[] = {100, 200};

#define T23 {KILN_F32, 2, {2, 3}, v6, 0, 0}
#define P23 {KILN_F32, 2, {2, 3}, pos6, 0, 0}
#define R23 {KILN_F32, 2, {2, 3}, NULL, -1, 1}
#define RP23 {KILN_F32, 2, {2, 3}, NULL, 0.5, 2}
#define ROW3 {KILN_F32, 1, {3}, row3, 0, 0}
#define COL21 {KILN_F32, 2, {2, 1}, col2, 0, 0}

static const double add_row[] = {8.5, 19.5, 30, 10.25, 21, 32};
static const double add_col[] = {98.5, 99.5, 100, 200.25, 201, 202};
static const double sub_same[] = {-1.75, -1, -1, -1.75, -3, -7};
static const double mul_row[] = {-15, -10, 0, 2.5, 20, 60};
static const double div_same[] = {-6, -1, 0, 0.125, 0.25, 0.22222222222222222};
static const double max_same[] = {0.25, 0.5, 1, 2, 4, 9};
static const double min_same[] = {-1.5, -0.5, 0, 0.25, 1, 2};
static const double neg6[] = {1.5, 0.5, -0.0, -0.25, -1, -2};
static const double exp6[] = {0.22313016014842982, 0.60653065971263342, 1, 1.2840254166877414,
                              2.7182818284590451, 7.3890560989306504};
static const double log6[] = {-1.3862943611198906, -0.69314718055994529, 0, 0.69314718055994529,
                              1.3862943611198906, 2.1972245773362196};
static const double sqrt6[] = {0.5, 0.70710678118654757, 1, 1.4142135623730951, 2, 3};
static const double pow3[] = {-3.375, -0.125, 0, 0.015625, 1, 8};
static const double powh[] = {0.5, 0.70710678118654757, 1, 1.4142135623730951, 2, 3};
static const double relu6[] = {0, 0, 0, 0.25, 1, 2};
static const double lrelu6[] = {-0.15, -0.05, 0, 0.25, 1, 2};
static const double sig6[] = {0.18242552380635635, 0.37754066879814541, 0.5, 0.56217650088579807,
                              0.7310585786300049, 0.88079707797788231};
static const double tanh6[] = {-0.90514825364486640, -0.46211715726000974, 0, 0.24491866240370913,
                               0.76159415595576485, 0.96402758007581690};
static const double gelu6[] = {-0.10021080190328713, -0.15426876936299344, 0, 0.14967658142073093,
                              0.8413447460685429, 1.9544997361036416};
/* d gelu/dx at v6, times dy = pos6 */
static const double gelug6[] = {-0.031867298057494886, 0.06625243767191856, 0.5, 1.390746709767272,
                                4.333261882350746, 9.767086209703773};
static const double cond6[] = {1, 0, 1, 0, 1, 0};
static const double where6[] = {-1.5, 0.5, 0, 2, 1, 9};
static const double eq_in[] = {-1.5, 0, 0, 0.25, 3, 2};
static const double eq6[] = {1, 0, 1, 1, 0, 1};
static const double ne6[] = {0, 1, 0, 0, 1, 0};
static const double lt6[] = {0, 1, 0, 0, 1, 0};
static const double le6[] = {1, 1, 1, 1, 1, 1};
static const double gt6[] = {0, 0, 0, 0, 0, 0};
static const double ge6[] = {1, 0, 1, 1, 0, 1};
static const double casti6[] = {-1, 0, 0, 0, 1, 2};
static const double castb6[] = {1, 0, 0, 1, 1, 1};

#define BIN(nm, op, a, b, exp) {nm, op, 2, {a, b}, 0, {0}, exp, 6, false}
#define UN(nm, op, a, exp) {nm, op, 1, {a}, 0, {0}, exp, 6, false}

const op_case kiln_opcases_elementwise[] = {
    BIN("add_broadcast_row", "add", T23, ROW3, add_row),
    BIN("add_broadcast_col", "add", T23, COL21, add_col),
    BIN("sub_same_shape", "sub", T23, P23, sub_same),
    BIN("mul_broadcast_row", "mul", T23, ROW3, mul_row),
    BIN("div_same_shape", "div", T23, P23, div_same),
    {"div_grad_broadcast", "div", 2, {R23, {KILN_F32, 2, {1, 3}, NULL, 0.5, 2}}, 0, {0}, NULL, 0, false},
    BIN("maximum_same_shape", "maximum", T23, P23, max_same),
    {"maximum_grad_broadcast", "maximum", 2, {R23, {KILN_F32, 1, {3}, NULL, -1, 1}}, 0, {0}, NULL, 0, false},
    BIN("minimum_same_shape", "minimum", T23, P23, min_same),
    UN("neg", "neg", T23, neg6),
    UN("exp", "exp", T23, exp6),
    UN("log", "log", P23, log6),
    {"log_grad", "log", 1, {RP23}, 0, {0}, NULL, 0, false},
    UN("sqrt", "sqrt", P23, sqrt6),
    {"sqrt_grad", "sqrt", 1, {RP23}, 0, {0}, NULL, 0, false},
    {"pow_cube", "pow", 1, {T23}, 1, {"exponent=3"}, pow3, 6, false},
    {"pow_half", "pow", 1, {P23}, 1, {"exponent=0.5"}, powh, 6, true},
    {"pow_half_grad", "pow", 1, {RP23}, 1, {"exponent=0.5"}, NULL, 0, false},
    /* the fixed data holds 0, relu's kink: gradients are checked on random data */
    {"relu", "relu", 1, {T23}, 0, {0}, relu6, 6, true},
    {"relu_grad", "relu", 1, {R23}, 0, {0}, NULL, 0, false},
    {"leaky_relu", "leaky_relu", 1, {T23}, 1, {"slope=0.1"}, lrelu6, 6, true},
    {"leaky_relu_grad", "leaky_relu", 1, {R23}, 1, {"slope=0.1"}, NULL, 0, false},
    UN("sigmoid", "sigmoid", T23, sig6),
    UN("tanh", "tanh", T23, tanh6),
    UN("gelu", "gelu", T23, gelu6),
    {"gelu_grad", "gelu_grad", 2, {T23, P23}, 0, {0}, gelug6, 6, true},
    {"where", "where", 3, {{KILN_BOOL, 2, {2, 3}, cond6, 0, 0}, T23, P23}, 0, {0}, where6, 6, false},
    {"where_broadcast_cond", "where", 3, {{KILN_BOOL, 1, {3}, cond6, 0, 0}, R23, ROW3}, 0, {0}, NULL, 0, false},
    {"eq", "eq", 2, {T23, {KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 0, {0}, eq6, 6, true},
    {"ne", "ne", 2, {T23, {KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 0, {0}, ne6, 6, true},
    {"lt", "lt", 2, {T23, {KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 0, {0}, lt6, 6, true},
    {"le", "le", 2, {T23, {KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 0, {0}, le6, 6, true},
    {"gt", "gt", 2, {T23, {KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 0, {0}, gt6, 6, true},
    {"ge", "ge", 2, {T23, {KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 0, {0}, ge6, 6, true},
    {"cast_to_i32", "cast", 1, {T23}, 1, {"to=i32"}, casti6, 6, true},
    {"cast_to_bool", "cast", 1, {{KILN_F32, 2, {2, 3}, eq_in, 0, 0}}, 1, {"to=bool"}, castb6, 6, true},
    {"cast_to_f64_grad", "cast", 1, {R23}, 1, {"to=f64"}, NULL, 0, false},
};
const int kiln_nopcases_elementwise = OPCASE_COUNT(kiln_opcases_elementwise);
