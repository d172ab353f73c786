/* passes/passes.h — the passes, one file each (see each file's header). */
#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "ir/graph.h"

/* passes/autodiff.c: gradients of the float scalar `loss` with respect to
 * wrt[0..nwrt); grads[k] receives the id of wrt[k]'s gradient. */
kiln_status kiln_autodiff(kiln_graph *g, int32_t loss, int nwrt, const int32_t *wrt,
                          int32_t *grads);

/* passes/infer.c: re-runs every node's shape rule and checks it agrees. */
kiln_status kiln_pass_infer(kiln_graph *g);
/* passes/cse.c: merges nodes with the same op, inputs, attributes and type. */
kiln_status kiln_pass_cse(kiln_graph *g);
/* passes/dce.c: removes computed nodes no output, loss, metric or assign needs. */
kiln_status kiln_pass_dce(kiln_graph *g);

/* passes/pipeline.c: the verifier after a pass, in debug builds. */
kiln_status kiln_verify_after(kiln_graph *g, const char *pass);

#endif
