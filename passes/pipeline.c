/* passes/pipeline.c — passes by name, and the verifier between them.
 *
 * Expects: a graph. Guarantees: runs the named pass; in debug builds
 * (KILN_DEBUG_VERIFY) the verifier checks its output, so a pass that breaks
 * an IR rule fails where it broke it.
 */
#include "ir/ops.h"
#include "passes/passes.h"

#include <string.h>

typedef struct pass_row {
    const char *name;
    kiln_status (*run)(kiln_graph *g);
} pass_row;

static const pass_row passes[] = {
    {"infer", kiln_pass_infer},
    {"simplify", kiln_pass_simplify},
    {"cse", kiln_pass_cse},
    {"dce", kiln_pass_dce},
    {"train_mode", kiln_pass_train_mode},
    {"eval_mode", kiln_pass_eval_mode},
    {"conv_lower", kiln_pass_conv_lower},
};

kiln_status kiln_verify_after(kiln_graph *g, const char *pass)
{
#ifdef KILN_DEBUG_VERIFY
    kiln_status st = kiln_graph_verify(g);
    if (st) {
        char msg[sizeof g->err];
        snprintf(msg, sizeof msg, "%s", g->err);
        return kiln_errorf(g, KILN_ERR_INTERNAL, "verifier after pass '%s': %.1800s", pass, msg);
    }
#else
    (void)g;
    (void)pass;
#endif
    return KILN_OK;
}

kiln_status kiln_run_pass(kiln_graph *g, const char *pass)
{
    if (!g || !pass) return KILN_ERR_INVALID;
    for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++)
        if (strcmp(passes[i].name, pass) == 0) {
            kiln_status st = passes[i].run(g);
            return st ? st : kiln_verify_after(g, pass);
        }
    return kiln_errorf(g, KILN_ERR_NOT_FOUND,
                       "unknown pass '%s' (passes: infer, simplify, cse, dce, train_mode, "
                       "eval_mode, conv_lower)", pass);
}
