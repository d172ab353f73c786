/* tools/kiln.c — the `kiln` command line (placeholder until the CLI lands). */
#include "kiln/kiln.h"
int main(void) { return 0; }
