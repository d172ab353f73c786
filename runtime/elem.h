/* runtime/elem.h — element i of a buffer of dtype t as a double, and back
 * (runtime/elem.c). Internal to the runtime. */
#ifndef KILN_RUNTIME_ELEM_H
#define KILN_RUNTIME_ELEM_H

#include "kiln/kiln.h"

#include <stdint.h>

double kiln_elem_load(kiln_dtype t, const char *p, int64_t i);
void kiln_elem_store(kiln_dtype t, char *p, int64_t i, double v);

#endif
