/* tests/opcases/reduce.c — cases for the reduce family (placeholder until it lands). */
#include "tests/opcases.h"
const op_case kiln_opcases_reduce[1] = {{0}};
const int kiln_nopcases_reduce = 0;
