/* tests/opcases/matmul.c — cases for the matmul family (placeholder until it lands). */
#include "tests/opcases.h"
const op_case kiln_opcases_matmul[1] = {{0}};
const int kiln_nopcases_matmul = 0;
