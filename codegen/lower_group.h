/* codegen/lower_group.h — fused groups into kernels (codegen/lower_group.c). */
#ifndef KILN_CODEGEN_LOWER_GROUP_H
#define KILN_CODEGEN_LOWER_GROUP_H

#include "ir/kernel.h"
#include "passes/fuse.h"

/* The kernel that runs plan kernel `kernel` of f (its groups, in order). */
kiln_status kiln_lower_fused(const kiln_graph *g, const kiln_fuse_plan *f, int32_t kernel,
                             kiln_kernel **out, char *err, size_t errlen);

#endif
