/* tests/opcases/loss.c — cases for the loss family (placeholder until it lands). */
#include "tests/opcases.h"
const op_case kiln_opcases_loss[1] = {{0}};
const int kiln_nopcases_loss = 0;
