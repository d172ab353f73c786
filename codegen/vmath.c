/* codegen/vmath.c — kiln_vmath_source(): the text of codegen/vmath_src.inc,
 * which is a sequence of string literals, included here as the initializer
 * of one char array (see that file for why). Expects nothing; guarantees a
 * constant, NUL-terminated string. */
#include "codegen/vmath.h"

static const char vmath_source[] =
#include "vmath_src.inc"
    ;

const char *kiln_vmath_source(void)
{
    return vmath_source;
}
