/* frontend/layers.c — the layers and metrics the model language knows, one
 * row each. A layer creates its parameters and applies its ops through the
 * public builder; a metric lowers to the ops that compute its partial. */
#include "frontend/lower.h"

/* linear(x, out_features, bias=true): y = x @ W^T + b (kiln_linear). */
static kiln_value build_linear(kiln_graph *g, const kiln_value *in, const fe_value *args,
                               const char *pname)
{
    return kiln_linear(g, in[0], args[0].i, args[1].i != 0, pname);
}

const fe_layer fe_layers[] = {
    {"linear", 1, 2,
     {{"out_features", FA_INT, true, 0}, {"bias", FA_BOOL, false, 1}},
     build_linear},
};
const int fe_nlayers = (int)(sizeof fe_layers / sizeof fe_layers[0]);

/* accuracy(logits, labels): the number of samples whose largest logit is at
 * the label; the runtime divides the summed partials by the sample count. */
static kiln_value build_accuracy(kiln_graph *g, const kiln_value *in)
{
    kiln_value out = in[0], y = in[1];
    kiln_value pred = kiln_argmax(g, out, -1);
    pred = kiln_cast(g, pred, (kiln_dtype)g->nodes[y].dtype);
    kiln_value hit = kiln_cast(g, kiln_eq(g, pred, y), KILN_F32);
    return kiln_reduce_sum(g, hit, 0, NULL, 0);
}

const fe_metric fe_metrics[] = {
    {"accuracy", 2, build_accuracy},
};
const int fe_nmetrics = (int)(sizeof fe_metrics / sizeof fe_metrics[0]);
