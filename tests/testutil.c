/* tests/testutil.c — helpers shared by the Criterion suites. */
#include "tests/testutil.h"
