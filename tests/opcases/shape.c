/* tests/opcases/shape.c — cases for the shape family (placeholder until it lands). */
#include "tests/opcases.h"
const op_case kiln_opcases_shape[1] = {{0}};
const int kiln_nopcases_shape = 0;
