/* examples/driver/train_mlp.c — training from your own C program.
 * Builds: cmake builds it as build/train_mlp. Run: build/train_mlp [MODEL] */
#include <kiln/kiln.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call, msg)                                                                       \
    do {                                                                                       \
        if ((call) != KILN_OK) {                                                               \
            fprintf(stderr, "train_mlp: %s\n", (msg) ? (msg) : "failed");                      \
            return 1;                                                                          \
        }                                                                                      \
    } while (0)

int main(int argc, char **argv)
{
    const char *model = argc > 1 ? argv[1] : "examples/fashion_mlp.kiln";
    char *err = NULL;
    kiln_graph *g, *tail_g;
    kiln_program *prog, *tail;
    kiln_dataset *train, *valid;
    CHECK(kiln_model_load(model, 64, &g, &err), err);          /* B = 64 */
    CHECK(kiln_model_load(model, 10000 % 64, &tail_g, &err), err);
    kiln_compile_options co = kiln_compile_defaults();          /* generated C, AdamW */
    CHECK(kiln_compile(g, &co, &prog, &err), err);
    CHECK(kiln_compile(tail_g, &co, &tail, &err), err);         /* the last valid batch */
    CHECK(kiln_dataset_fashion_mnist(NULL, 1, &train, &err), err);
    CHECK(kiln_dataset_fashion_mnist(NULL, 0, &valid, &err), err);
    float mean, std;
    kiln_dataset_stats(train, &mean, &std);
    kiln_dataset_normalize(train, mean, std);
    kiln_dataset_normalize(valid, mean, std);
    kiln_program_init_params(prog, 42);

    kiln_learner_options lo = kiln_learner_defaults();
    lo.valid_tail = tail;
    kiln_learner *learn;
    CHECK(kiln_learner_new(prog, train, valid, &lo, &learn, &err), err);
    double lr;
    CHECK(kiln_lr_find(learn, &lr, "lr_find.svg"), kiln_learner_error(learn));
    printf("lr_find suggests %.3g (plot: lr_find.svg); training at 2e-3\n", lr);
    CHECK(kiln_fit_one_cycle(learn, 1, 2e-3), kiln_learner_error(learn));
    CHECK(kiln_save(prog, "fashion_mlp.safetensors", 1, &err), err);
    puts("saved fashion_mlp.safetensors");
    kiln_learner_free(learn);
    kiln_program_free(tail);
    kiln_program_free(prog);
    kiln_graph_free(tail_g);
    kiln_graph_free(g);
    kiln_dataset_free(valid);
    kiln_dataset_free(train);
    return 0;
}
