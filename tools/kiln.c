/* tools/kiln.c — the `kiln` command line.
 *
 *   kiln compile MODEL [--batch N] [--program forward|train|eval]
 *                      [--optimizer adamw|sgd] [--nesterov]
 *                      [--emit ir] [--print-after PASS|all] [-o FILE]
 *   kiln check MODEL [--batch N]
 *
 * Every failure prints one message naming the place and the fix, and exits
 * with status 1 (2 for a usage error); kiln never crashes on bad input.
 */
#include "kiln/kiln.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: kiln compile MODEL [--batch N] [--program forward|train|eval]\n"
          "                          [--optimizer adamw|sgd] [--nesterov]\n"
          "                          [--emit ir] [--print-after PASS|all] [-o FILE]\n"
          "       kiln check MODEL [--batch N]\n"
          "\n"
          "  --batch N          bind the batch size B (default 64)\n"
          "  --program P        which program to build: the forward graph, the training\n"
          "                     step (default when the model has a loss) or evaluation\n"
          "  --emit ir          print the graph IR of the program (the default)\n"
          "  --print-after PASS print the IR after PASS as well (parse, autodiff,\n"
          "                     optimizer, cse, dce; 'all' for every pass)\n",
          f);
}

typedef struct cli {
    const char *cmd, *model, *program, *optimizer, *emit, *print_after, *out;
    int64_t batch;
    int nesterov;
} cli;

static int parse_args(int argc, char **argv, cli *c)
{
    memset(c, 0, sizeof *c);
    c->batch = 64;
    c->emit = "ir";
    c->optimizer = "adamw";
    if (argc < 2) return -1;
    c->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (!strcmp(a, "--nesterov")) {
            c->nesterov = 1;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return -1;
        if (!strcmp(a, "--program")) slot = &c->program;
        else if (!strcmp(a, "--optimizer")) slot = &c->optimizer;
        else if (!strcmp(a, "--emit")) slot = &c->emit;
        else if (!strcmp(a, "--print-after")) slot = &c->print_after;
        else if (!strcmp(a, "-o")) slot = &c->out;
        else if (!strcmp(a, "--batch")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kiln: --batch needs a number\n");
                return -1;
            }
            char *end;
            c->batch = strtoll(argv[++i], &end, 10);
            if (*end || c->batch < 1) {
                fprintf(stderr, "kiln: --batch wants a positive integer, got '%s'\n", argv[i]);
                return -1;
            }
            continue;
        } else if (a[0] == '-') {
            fprintf(stderr, "kiln: unknown option '%s'\n", a);
            return -1;
        } else if (!c->model) {
            c->model = a;
            continue;
        } else {
            fprintf(stderr, "kiln: unexpected argument '%s'\n", a);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln: %s needs a value\n", a);
            return -1;
        }
        *slot = argv[++i];
    }
    if (!c->model) {
        fprintf(stderr, "kiln: %s needs a model file\n", c->cmd);
        return -1;
    }
    return 0;
}

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

static bool has_loss(const kiln_graph *g)
{
    return kiln_graph_find_role(g, KILN_ROLE_LOSS) >= 0;
}

static int cmd_compile(const cli *c, bool check_only)
{
    static const char *const known_passes[] = {"parse", "autodiff", "optimizer", "cse", "dce", "all"};
    if (c->print_after) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known_passes / sizeof known_passes[0]; i++)
            ok |= !strcmp(c->print_after, known_passes[i]);
        if (!ok) {
            fprintf(stderr, "kiln: unknown pass '%s' for --print-after (parse, autodiff, "
                            "optimizer, cse, dce, all)\n", c->print_after);
            return 2;
        }
    }
    if (strcmp(c->emit, "ir")) {
        fprintf(stderr, "kiln: --emit %s is not available yet; this build emits 'ir'\n", c->emit);
        return 2;
    }
    kiln_train_options opt = kiln_train_defaults();
    if (!strcmp(c->optimizer, "sgd")) opt.optimizer = KILN_OPT_SGD;
    else if (strcmp(c->optimizer, "adamw")) {
        fprintf(stderr, "kiln: unknown optimizer '%s' (adamw, sgd)\n", c->optimizer);
        return 2;
    }
    opt.nesterov = c->nesterov;

    kiln_graph *fwd = NULL;
    char *err = NULL;
    if (kiln_model_load(c->model, c->batch, &fwd, &err)) {
        fprintf(stderr, "%s", err ? err : "kiln: could not load the model\n");
        free(err);
        return 1;
    }
    FILE *out = stdout;
    if (c->out && !check_only && !(out = fopen(c->out, "w"))) {
        fprintf(stderr, "kiln: cannot write '%s'\n", c->out);
        kiln_graph_free(fwd);
        return 1;
    }
    printer p = {c->print_after, out};
    opt.after_pass = print_after;
    opt.user = &p;
    print_after("parse", fwd, &p);

    const char *program = c->program ? c->program : has_loss(fwd) ? "train" : "forward";
    kiln_graph *prog = NULL;
    kiln_status st = KILN_OK;
    if (!strcmp(program, "train")) st = kiln_train_program(fwd, &opt, &prog);
    else if (!strcmp(program, "eval")) st = kiln_eval_program(fwd, &prog);
    else if (strcmp(program, "forward")) {
        fprintf(stderr, "kiln: unknown program '%s' (forward, train, eval)\n", program);
        st = KILN_ERR_INVALID;
    }
    int rc = 0;
    if (st) {
        if (strcmp(kiln_graph_error(fwd), ""))
            fprintf(stderr, "%s: error: %s\n", c->model, kiln_graph_error(fwd));
        rc = 1;
    } else if (check_only) {
        fprintf(stderr, "%s: ok (%d nodes)\n", c->model, kiln_graph_num_nodes(prog ? prog : fwd));
    } else if (!c->print_after) {
        kiln_graph_print(prog ? prog : fwd, out);
    }
    if (out != stdout && fclose(out)) {
        fprintf(stderr, "kiln: error writing '%s'\n", c->out);
        rc = 1;
    }
    kiln_graph_free(prog);
    kiln_graph_free(fwd);
    return rc;
}

int main(int argc, char **argv)
{
    cli c;
    if (parse_args(argc, argv, &c)) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(c.cmd, "compile")) return cmd_compile(&c, false);
    if (!strcmp(c.cmd, "check")) return cmd_compile(&c, true);
    fprintf(stderr, "kiln: unknown command '%s'\n", c.cmd);
    usage(stderr);
    return 2;
}
