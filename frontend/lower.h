/* frontend/lower.h — lowering a parsed model to a graph through the
 * builder (kiln_build, kiln_linear, kiln_input, kiln_set_loss, ...), and the
 * tables of layers and metrics the language knows.
 *
 * Adding a layer (conv2d, batchnorm, embedding) is one row in fe_layers
 * (frontend/layers.c): its name, how many tensor inputs it takes, its other
 * arguments with kinds and defaults, and a function that builds it given the
 * full parameter-name prefix ("down1.conv2d0"). Argument binding, kind
 * checks, automatic names and error messages are shared. */
#ifndef KILN_FRONTEND_LOWER_H
#define KILN_FRONTEND_LOWER_H

#include "frontend/ast.h"
#include "ir/graph.h"

/* A value while lowering: a tensor (a graph node) or a compile-time constant. */
typedef enum fe_vkind { V_TENSOR, V_NUM, V_LIST, V_DTYPE, V_STR } fe_vkind;

typedef struct fe_value {
    fe_vkind kind;
    kiln_value t; /* V_TENSOR */
    bool is_int;  /* V_NUM: i holds it exactly; f always holds it */
    int64_t i;
    double f;
    int n; /* V_LIST: ints[0..n) */
    int64_t ints[KILN_MAX_ATTR_INTS];
    kiln_dtype dtype; /* V_DTYPE */
    const char *str;  /* V_STR */
} fe_value;

/* The kinds of a layer's arguments and of an op's attributes. */
typedef enum fe_argkind { FA_INT, FA_FLOAT, FA_INTS, FA_DTYPE, FA_BOOL, FA_STR } fe_argkind;

typedef struct fe_argspec {
    const char *name;
    fe_argkind kind;
    bool required;
    double def; /* default of a number or bool; lists default to [], strings to NULL */
} fe_argspec;

#define FE_LAYER_MAX_ARGS 8

typedef struct fe_layer {
    const char *name;
    int ninputs; /* tensor arguments, given first */
    int nargs;   /* the others, in positional order; every layer also takes name="..." */
    fe_argspec args[FE_LAYER_MAX_ARGS];
    /* Builds the layer: parameters named "<pname>.weight" etc. args[i] is
     * set (given or default) and of args[i]'s kind. */
    kiln_value (*build)(kiln_graph *g, const kiln_value *in, const fe_value *args,
                        const char *pname);
} fe_layer;

extern const fe_layer fe_layers[];
extern const int fe_nlayers;

#define FE_METRIC_MAX_ARGS 4

/* A metric (frontend/layers.c): its tensor inputs, its other arguments
 * (bound, checked and defaulted as a layer's are; given[i] tells whether
 * args[i] was written) and a function that builds its per-batch partial
 * from them and sets *kind, how the runtime finalises the summed partials
 * (it starts as KILN_METRIC_MEAN). */
typedef struct fe_metric {
    const char *name;
    int ninputs;
    int nargs;
    fe_argspec args[FE_METRIC_MAX_ARGS];
    kiln_value (*build)(kiln_graph *g, const kiln_value *in, const fe_value *args,
                        const bool *given, kiln_metric_kind *kind);
} fe_metric;

extern const fe_metric fe_metrics[];
extern const int fe_nmetrics;

/* Lowers prog into a new graph named after the model with B = batch. On
 * failure *out is NULL and the error is in d. */
kiln_status fe_lower(fe_diag *d, const fe_program *prog, int64_t batch, const kiln_dim *dims,
                     int ndims, kiln_graph **out);

#endif
