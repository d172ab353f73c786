/* codegen/aot_src.h — C text of ahead-of-time artifacts (codegen/aot_main.c). */
#ifndef KILN_CODEGEN_AOT_SRC_H
#define KILN_CODEGEN_AOT_SRC_H

extern const char kiln_aot_loader_src[]; /* weights loader + serial kiln_rt */
extern const char kiln_aot_input_src[];  /* input readers and printing (also tools/aot.c) */
extern const char kiln_aot_main_src[];   /* the executable's main */

#endif
