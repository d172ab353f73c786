#ifndef KILN_TESTS_TESTUTIL_H
#define KILN_TESTS_TESTUTIL_H
#include "kiln/kiln.h"
#endif
