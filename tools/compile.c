/* tools/compile.c — `kiln compile` (graph IR or generated C), `kiln check`
 * and `kiln info` (with --timings: compile times, tools/bench_kernel.c). */
#include "tools/bench.h"
#include "tools/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct printer {
    const char *which;
    FILE *f;
} printer;

static void print_after(const char *pass, const kiln_graph *g, void *user)
{
    printer *p = user;
    if (!p->which || (strcmp(p->which, "all") && strcmp(p->which, pass))) return;
    fprintf(p->f, "; IR after %s\n", pass);
    kiln_graph_print(g, p->f);
}

static const char *const known_passes[] = {"parse",    "autodiff", "optimizer", "simplify",
                                           "cse",      "dce",      "all"};

int cmd_compile(const cli *c, bool check_only)
{
    const char *emit = c->emit ? c->emit : "ir";
    if (!check_only && (!strcmp(emit, "exe") || !strcmp(emit, "lib") || !strcmp(emit, "obj") ||
                        (!strcmp(emit, "c") && (c->weights || c->cpu ||
                                                (c->target && strchr(c->target, '-'))))))
        return cmd_aot(c); /* ahead-of-time artifacts (tools/aot.c) */
    if (c->cpu) {
        fprintf(stderr, "kiln compile: --cpu is for --emit exe|lib|obj|c artifacts\n");
        return EXIT_USAGE;
    }
    if (strcmp(emit, "ir") && strcmp(emit, "c")) {
        fprintf(stderr, "kiln compile: unknown --emit '%s' (ir, c)\n", emit);
        return EXIT_USAGE;
    }
    if (c->print_after) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known_passes / sizeof known_passes[0]; i++)
            ok |= !strcmp(c->print_after, known_passes[i]);
        if (!ok) {
            fprintf(stderr, "kiln compile: unknown pass '%s' for --print-after (parse, autodiff, "
                            "optimizer, simplify, cse, dce, all)\n", c->print_after);
            return EXIT_USAGE;
        }
    }
    kiln_compile_options co;
    if (!cli_compile_options(c, &co)) return EXIT_USAGE;
    kiln_graph *fwd = cli_load_model(c, c->batch);
    if (!fwd) return EXIT_USAGE;
    FILE *out = stdout;
    if (c->out && !check_only && !(out = fopen(c->out, "w"))) {
        fprintf(stderr, "kiln compile: cannot write '%s': %s\n", c->out, strerror(errno));
        kiln_graph_free(fwd);
        return EXIT_RUN;
    }
    int rc = 0;
    if (!strcmp(emit, "c") && !check_only) {
        char *err = NULL, *src = kiln_emit_c(fwd, &co, &err);
        if (!src) {
            fprintf(stderr, "kiln compile: %s\n", err ? err : "out of memory");
            rc = EXIT_RUN;
        } else {
            fputs(src, out);
        }
        free(src);
        free(err);
    } else {
        printer p = {c->print_after, out};
        co.train.after_pass = print_after;
        co.train.user = &p;
        print_after("parse", fwd, &p);
        bool has_loss = kiln_graph_find_role(fwd, KILN_ROLE_LOSS) >= 0;
        const char *program = c->program ? c->program : has_loss ? "train" : "forward";
        kiln_graph *prog = NULL;
        kiln_status st = KILN_OK;
        if (!strcmp(program, "train")) st = kiln_train_program(fwd, &co.train, &prog);
        else if (!strcmp(program, "eval")) st = kiln_eval_program(fwd, &prog);
        else if (strcmp(program, "forward")) {
            fprintf(stderr, "kiln compile: unknown program '%s' (forward, train, eval)\n", program);
            rc = EXIT_USAGE;
        }
        if (st) {
            fprintf(stderr, "%s: error: %s\n", c->model, kiln_graph_error(fwd));
            rc = EXIT_USAGE;
        } else if (!rc && check_only) {
            fprintf(stderr, "%s: ok (%d nodes)\n", c->model, kiln_graph_num_nodes(prog ? prog : fwd));
        } else if (!rc && !c->print_after) {
            kiln_graph_print(prog ? prog : fwd, out);
        }
        kiln_graph_free(prog);
    }
    if (out != stdout && fclose(out)) {
        fprintf(stderr, "kiln compile: error writing '%s'\n", c->out);
        rc = EXIT_RUN;
    }
    kiln_graph_free(fwd);
    return rc;
}

static void print_bytes(const char *what, size_t b)
{
    printf("  %-22s %10.2f MiB (%zu bytes)\n", what, (double)b / (1 << 20), b);
}

int cmd_info(const cli *c)
{
    kiln_compile_options co;
    cli plan_cli = *c;
    if (c->timings) plan_cli.backend = NULL; /* --backend c|llvm|both: which compile times */
    if (c->timings && c->backend && strcmp(c->backend, "c") && strcmp(c->backend, "llvm") &&
        strcmp(c->backend, "both")) {
        fprintf(stderr, "kiln info: unknown backend '%s' for --timings (c, llvm, both)\n",
                c->backend);
        return EXIT_USAGE;
    }
    if (!cli_compile_options(&plan_cli, &co)) return EXIT_USAGE;
    /* Sizes and flops do not depend on the backend; the reference backend
     * needs no C compiler. */
    co.backend = KILN_BACKEND_REF;
    kiln_graph *fwd = cli_load_model(c, c->batch);
    if (!fwd) return EXIT_USAGE;
    kiln_program *p = NULL;
    char *err = NULL;
    kiln_status st = kiln_compile(fwd, &co, &p, &err);
    if (st) {
        fprintf(stderr, "kiln info: %s\n", err ? err : kiln_status_str(st));
        free(err);
        kiln_graph_free(fwd);
        return EXIT_USAGE;
    }
    /* the sizes are those of the C backend's plan (fused kernels) */
    kiln_program_stats s;
    st = kiln_plan_stats(fwd, &co, &s, &err);
    if (st) {
        fprintf(stderr, "kiln info: %s\n", err ? err : kiln_status_str(st));
        free(err);
        kiln_program_free(p);
        kiln_graph_free(fwd);
        return EXIT_RUN;
    }
    printf("%s at batch %lld\n", c->model, (long long)c->batch);
    printf("  %-22s %10lld\n", "trainable parameters", (long long)s.num_params);
    printf("  %-22s %10.3f GFLOP\n", "flops per train step", s.train_flops / 1e9);
    printf("  %-22s %10d\n", "kernels per train step", s.num_kernels);
    print_bytes("parameters", s.param_bytes);
    print_bytes("optimizer state", s.state_bytes);
    print_bytes("activations (arena)", s.arena_bytes);
    size_t planned = s.arena_bytes - s.interface_bytes;
    print_bytes("  interface block", s.interface_bytes);
    print_bytes("  intermediates", planned);
    print_bytes("  unplanned sum", s.intermediates_bytes);
    if (s.intermediates_bytes)
        printf("  %-22s %10.3f (planned / sum)\n", "  intermediates ratio",
               (double)planned / (double)s.intermediates_bytes);
    printf("  tensors:\n");
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t)) continue;
        char shape[160] = "";
        size_t o = 0;
        for (int d = 0; d < t.rank && o < sizeof shape; d++)
            o += (size_t)snprintf(shape + o, sizeof shape - o, d ? ",%lld" : "%lld",
                                  (long long)t.shape[d]);
        printf("    %-8s %-32s %s[%s]\n", kiln_role_name(t.role), t.name, kiln_dtype_name(t.dtype),
               shape);
    }
    /* the kernels by name (kiln_program_call; kiln bench kernel MODEL NAME) */
    char *kernels = kiln_plan_kernels(fwd, &co, &err);
    bool listed = kernels != NULL;
    if (kernels) {
        printf("  kernels (entry, index, name: kiln bench kernel MODEL NAME times one):\n");
        for (const char *line = kernels; *line;) {
            size_t n = strcspn(line, "\n");
            printf("    %.*s\n", (int)n, line);
            line += n + (line[n] == '\n');
        }
    } else {
        fprintf(stderr, "kiln info: %s\n", err ? err : "cannot list the kernels");
    }
    free(kernels);
    free(err);
    kiln_program_free(p);
    kiln_graph_free(fwd);
    if (!listed) return EXIT_RUN;
    if (c->timings)
        return compile_timings_report("info", c->model, c->batch, (int)c->threads,
                                      c->backend ? c->backend : "both", false, false, c->verbose);
    return 0;
}
