/* tests/test_aot_tasks.c — executables (`kiln compile --emit exe`) and `kiln
 * predict` for models that are not single-label classifiers (kiln/aot.h,
 * kiln_aot_task): a tiny U-Net trained a few steps on a segmentation set
 * made by the data generator writes PNG masks that read back (as a data
 * set's labels/NAME_P.png) to the argmax of kiln_program's forward and to
 * predict's masks; a tiny multi-label model prints the tags whose
 * sigmoid(logit) passes the model's threshold, as predict and the forward
 * say; a regression model prints its values; class names (escaped) come
 * from --data or --classes; bad --out folders and mask paths are errors.
 * C backend, and LLVM when kiln has it; every executable runs alone, with a
 * clean environment, from a folder holding only it and its weights. */
#define _POSIX_C_SOURCE 200809L
#include "codegen/llvm.h"
#include "kiln/aot.h"
#include "runtime/datagen.h"
#include "runtime/image.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* paths are PATH_MAX buffers of short temporary paths */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif

static char tmp[128];
static char kiln_bin[PATH_MAX];

static const char unet_src[] =
    "model tinyunet\n"
    "dim S = 32\n"
    "input  x: f32[B, 1, S, S]\n"
    "target y: i32[B, S, S]\n"
    "e1 = relu(conv2d(x, 4, kernel=3, padding=1))\n"
    "e2 = relu(conv2d(max_pool2d(e1, kernel=2), 8, kernel=3, padding=1))\n"
    "u = conv_transpose2d(e2, 4, kernel=2, stride=2)\n"
    "d = relu(conv2d(concat(u, e1, axis=1), 4, kernel=3, padding=1))\n"
    "out = conv2d(d, 11, kernel=1)\n"
    "loss = cross_entropy(out, y)\n"
    "metric accuracy(out, y)\n";

static const char ml_src[] =
    "model tinyml\n"
    "dim S = 16\n"
    "input  x: f32[B, 1, S, S]\n"
    "target y: f32[B, 10]\n"
    "h = relu(conv2d(x, 8, kernel=3, stride=2, padding=1))\n"
    "h = adaptive_avg_pool2d(h, output_size=1)\n"
    "out = linear(flatten(h), 10)\n"
    "loss = bce_with_logits(out, y)\n"
    "metric accuracy_thresh(out, y, thresh=0.35)\n";

static const char reg_src[] =
    "model tinyreg\n"
    "input  x: f32[B, 16]\n"
    "target y: f32[B, 3]\n"
    "out = linear(relu(linear(x, 8)), 3)\n"
    "loss = l1_loss(out, y)\n";

static void spit(const char *path, const char *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static void path_in(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmp, name);
}

static void setup(void)
{
    kiln_test_tmpdir(tmp, sizeof tmp, "aottask");
    ssize_t n = readlink("/proc/self/exe", kiln_bin, sizeof kiln_bin - 8);
    cr_assert_gt(n, 0);
    kiln_bin[n] = 0;
    strcpy(strrchr(kiln_bin, '/') + 1, "kiln");
    cr_assert_eq(access(kiln_bin, X_OK), 0, "no kiln binary at %s", kiln_bin);
    char p[PATH_MAX];
    path_in(p, sizeof p, "unet.kiln");
    spit(p, unet_src, strlen(unet_src));
    path_in(p, sizeof p, "ml.kiln");
    spit(p, ml_src, strlen(ml_src));
    path_in(p, sizeof p, "reg.kiln");
    spit(p, reg_src, strlen(reg_src));
}

static void teardown(void) { kiln_test_rmtree(tmp); }

TestSuite(aot_tasks, .init = setup, .fini = teardown, .timeout = 300);

typedef kiln_test_run run;

/* Runs argv in dir (NULL: here) with only PATH in the environment unless
 * inherit; stdout and stderr captured (tests/testutil.h). */
static run run_in(const char *dir, int inherit, char *const argv[])
{
    return kiln_test_run_in(tmp, dir, inherit, argv);
}

static void run_free(run *r) { kiln_test_run_free(r); }

static void need_fashion(void)
{
    kiln_dataset *d = NULL;
    char *err = NULL;
    if (kiln_dataset_fashion_mnist(NULL, 0, &d, &err)) {
        free(err);
        cr_skip_test("Fashion-MNIST is not installed: no data set to make");
    }
    kiln_dataset_free(d);
}

static bool have_llvm(void) { return kiln_llvm_available(); }

/* A data set of `kind` at `size` pixels into tmp/name. */
static void make_data(const char *kind, const char *name, int size)
{
    kiln_datagen_options o;
    memset(&o, 0, sizeof o);
    cr_assert(kiln_datagen_kind_parse(kind, &o.kind));
    char out[PATH_MAX];
    path_in(out, sizeof out, name);
    o.outdir = out;
    o.n_train = 64;
    o.n_valid = 16;
    o.seed = 5;
    o.size = size;
    kiln_datagen_result r;
    char *err = NULL;
    cr_assert_eq(kiln_datagen_make(&o, false, &r, &err), KILN_OK, "%s", err ? err : "");
    kiln_datagen_result_free(&r);
}

/* kiln train MODEL --data DATA a few steps, saving tmp/W. */
static void train(const char *model, const char *data, const char *w, int epochs)
{
    char m[PATH_MAX], d[PATH_MAX], s[PATH_MAX], e[16];
    path_in(m, sizeof m, model);
    path_in(d, sizeof d, data);
    path_in(s, sizeof s, w);
    snprintf(e, sizeof e, "%d", epochs);
    char *argv[] = {kiln_bin, "train", m, "--data", d, "--epochs", e, "--bs", "16", "--lr", "3e-2",
                    "--seed", "3", "--save", s, NULL};
    run r = run_in(NULL, 1, argv);
    cr_assert_eq(r.status, 0, "kiln train %s failed (%d): %s", model, r.status, r.err);
    run_free(&r);
}

/* A checkpoint of seeded parameters of MODEL at tmp/W. */
static void seeded(const char *model, const char *w)
{
    char m[PATH_MAX], s[PATH_MAX];
    path_in(m, sizeof m, model);
    path_in(s, sizeof s, w);
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_load(m, 4, &g, &err), KILN_OK, "%s", err ? err : "");
    kiln_compile_options co = kiln_compile_defaults();
    co.backend = KILN_BACKEND_REF;
    kiln_program *p = NULL;
    cr_assert_eq(kiln_compile(g, &co, &p, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_program_init_params(p, 11), KILN_OK);
    cr_assert_eq(kiln_save(p, s, 0, &err), KILN_OK, "%s", err ? err : "");
    kiln_program_free(p);
    kiln_graph_free(g);
}

static void copy_file(const char *from, const char *to, int exec)
{
    size_t n;
    char *d = kiln_test_slurp(from, &n);
    spit(to, d, n);
    free(d);
    if (exec) chmod(to, 0755);
}

/* kiln compile MODEL --weights W -o tmp/NAME --emit exe --backend B [a1 a2];
 * the executable and its weights are copied alone into tmp/alone-NAME; its
 * path goes to exe. Returns the compile's run (status checked when want_ok). */
static run compile_exe(const char *model, const char *w, const char *name, const char *backend,
                       const char *a1, const char *a2, char *exe, size_t len, int want_ok)
{
    char m[PATH_MAX], wp[PATH_MAX], out[PATH_MAX];
    path_in(m, sizeof m, model);
    path_in(wp, sizeof wp, w);
    path_in(out, sizeof out, name);
    char *argv[16] = {kiln_bin, "compile", m, "--weights", wp, "-o", out, "--emit", "exe",
                      "--backend", (char *)backend};
    int n = 11;
    if (a1) argv[n++] = (char *)a1;
    if (a2) argv[n++] = (char *)a2;
    argv[n] = NULL;
    run r = run_in(NULL, 1, argv);
    if (!want_ok) return r;
    cr_assert_eq(r.status, 0, "kiln compile --emit exe (%s) failed (%d): %s", backend, r.status,
                 r.err);
    char dir[PATH_MAX], w1[PATH_MAX], w2[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/alone-%s", tmp, name);
    cr_assert_eq(mkdir(dir, 0700), 0);
    snprintf(exe, len, "%s/%s", dir, name);
    copy_file(out, exe, 1);
    snprintf(w1, sizeof w1, "%s.weights", out);
    snprintf(w2, sizeof w2, "%s/%s.weights", dir, name);
    copy_file(w1, w2, 0);
    size_t nb;
    char *bin = kiln_test_slurp(exe, &nb);
    for (size_t i = 0; i + 7 <= nb; i++)
        cr_assert(memcmp(bin + i, "libkiln", 7), "the executable refers to libkiln");
    free(bin);
    return r;
}

/* The forward outputs of MODEL with checkpoint W (backend b) on PNG images
 * normalised with the data set's statistics: n samples of *per floats. */
static float *forward(const char *model, const char *w, const char *data, kiln_backend b,
                      char **images, int n, int64_t *per)
{
    char m[PATH_MAX], wp[PATH_MAX], d[PATH_MAX];
    path_in(m, sizeof m, model);
    path_in(wp, sizeof wp, w);
    path_in(d, sizeof d, data);
    kiln_graph *g = NULL, *cls = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_load(m, n, &g, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_aot_classifier(g, &cls, &err), KILN_OK, "%s", err ? err : "");
    kiln_compile_options co = kiln_compile_defaults();
    co.backend = b;
    kiln_program *p = NULL;
    cr_assert_eq(kiln_compile(cls, &co, &p, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_load(p, wp, 0, 1, &err), KILN_OK, "%s", err ? err : "");
    /* the statistics: those kiln train normalises with */
    kiln_dataset *ds = NULL;
    cr_assert_eq(kiln_dataset_open_images(d, NULL, 0, &ds, &err), KILN_OK, "%s", err);
    float mean, std;
    kiln_dataset_stats(ds, &mean, &std);
    kiln_dataset_free(ds);
    kiln_tensor_info in = {0}, out = {0};
    for (int i = 0; i < kiln_program_num_tensors(p); i++) {
        kiln_tensor_info t;
        if (kiln_program_tensor(p, i, &t)) continue;
        if (t.role == KILN_ROLE_INPUT) in = t;
        if (t.role == KILN_ROLE_OUTPUT) out = t;
    }
    int64_t in_per = (int64_t)(in.bytes / 4) / n;
    float *x = calloc(in.bytes / 4, 4), *y = malloc(out.bytes);
    for (int i = 0; i < n; i++) {
        uint8_t *px = NULL;
        int iw, ih, ic;
        cr_assert_eq(kiln_image_read(images[i], 1, &px, &iw, &ih, &ic, &err), KILN_OK, "%s", err);
        cr_assert_eq((int64_t)iw * ih, in_per);
        for (int64_t k = 0; k < in_per; k++)
            x[i * in_per + k] = ((float)px[k] / 255.0f - mean) / std;
        free(px);
    }
    cr_assert_eq(kiln_program_set(p, in.name, x, in.bytes), KILN_OK);
    cr_assert_eq(kiln_program_run(p, "forward"), KILN_OK, "%s", kiln_program_error(p));
    cr_assert_eq(kiln_program_get(p, out.name, y, out.bytes), KILN_OK);
    *per = (int64_t)(out.bytes / 4) / n;
    free(x);
    kiln_program_free(p);
    kiln_graph_free(cls);
    kiln_graph_free(g);
    return y;
}

static const char *const seg_codes[] = {"background", "tshirt_top", "trouser", "pullover",
                                        "dress",      "coat",       "sandal",  "shirt",
                                        "sneaker",    "bag",        "ankle_boot"};

/* The segmentation executable: masks of the images' size that decode to
 * predict's masks and to the argmax of the forward; printed counts agree. */
Test(aot_tasks, segmentation_masks)
{
    need_fashion();
    make_data("segmentation", "seg", 32);
    train("unet.kiln", "seg", "unet.safetensors", 2);
    enum { N = 4 };
    char img[N][PATH_MAX];
    char *imgs[N];
    for (int i = 0; i < N; i++) {
        snprintf(img[i], sizeof img[i], "%s/seg/images/c%05d.png", tmp, 64 + i); /* validation */
        imgs[i] = img[i];
    }
    char data[PATH_MAX], model[PATH_MAX], w[PATH_MAX];
    path_in(data, sizeof data, "seg");
    path_in(model, sizeof model, "unet.kiln");
    path_in(w, sizeof w, "unet.safetensors");
    for (int b = 0; b < 2; b++) {
        if (b == 1 && !have_llvm()) break;
        const char *backend = b ? "llvm" : "c";
        char exe[PATH_MAX], name[32];
        snprintf(name, sizeof name, "unet_%s", backend);
        run c = compile_exe("unet.kiln", "unet.safetensors", name, backend, "--data", data, exe,
                            sizeof exe, 1);
        run_free(&c);
        char edir[PATH_MAX], pdir[PATH_MAX];
        snprintf(edir, sizeof edir, "%s/e-%s", tmp, backend);
        snprintf(pdir, sizeof pdir, "%s/p-%s", tmp, backend);
        cr_assert_eq(mkdir(edir, 0700), 0);
        cr_assert_eq(mkdir(pdir, 0700), 0);
        /* --out masks (made by the programs) in two folders */
        char *ea[] = {exe, "--out", "masks", imgs[0], imgs[1], imgs[2], imgs[3], NULL};
        run e = run_in(edir, 0, ea);
        cr_assert_eq(e.status, 0, "%s exe failed (%d): %s", backend, e.status, e.err);
        char *pa[] = {kiln_bin, "predict", model, "--weights", w, "--data", data, "--backend",
                      (char *)backend, "--out", "masks", imgs[0], imgs[1], imgs[2], imgs[3], NULL};
        run p = run_in(pdir, 1, pa);
        cr_assert_eq(p.status, 0, "predict failed (%d): %s", p.status, p.err);
        cr_assert_str_eq(e.out, p.out, "exe and predict differ:\n%s\n%s", e.out, p.out);
        int64_t per = 0;
        float *y = forward("unet.kiln", "unet.safetensors", "seg",
                           b ? KILN_BACKEND_LLVM : KILN_BACKEND_C, imgs, N, &per);
        cr_assert_eq(per, 11 * 32 * 32);
        const char *line = e.out;
        for (int i = 0; i < N; i++) {
            char want[64], mp[PATH_MAX], pp[PATH_MAX];
            snprintf(want, sizeof want, "%d masks/c%05d_mask.png ", i, 64 + i);
            cr_assert(!strncmp(line, want, strlen(want)), "line %d: %s", i, line);
            snprintf(mp, sizeof mp, "%s/masks/c%05d_mask.png", edir, 64 + i);
            snprintf(pp, sizeof pp, "%s/masks/c%05d_mask.png", pdir, 64 + i);
            kiln_img m, q;
            char *err = NULL;
            cr_assert_eq(kiln_img_decode(mp, KILN_IMG_INDEX, &m, &err), KILN_OK, "%s", err);
            cr_assert_eq(kiln_img_decode(pp, KILN_IMG_INDEX, &q, &err), KILN_OK, "%s", err);
            cr_assert_eq(m.w, 32);
            cr_assert_eq(m.h, 32);
            cr_assert_eq(m.c, 1);
            cr_assert_eq(memcmp(m.px, q.px, 32 * 32), 0, "the masks of exe and predict differ");
            /* the argmax of the forward (first maximum); near-ties may go either way */
            int64_t count[11] = {0};
            int classes = 0, ties = 0;
            const float *o = y + i * per;
            for (int k = 0; k < 32 * 32; k++) {
                int best = 0;
                for (int c = 1; c < 11; c++)
                    if (o[c * 1024 + k] > o[best * 1024 + k]) best = c;
                count[m.px[k]]++;
                if (m.px[k] != best) {
                    ties++;
                    cr_assert_lt(fabsf(o[best * 1024 + k] - o[m.px[k] * 1024 + k]), 1e-4f,
                                 "pixel %d: mask %d, forward %d", k, m.px[k], best);
                }
            }
            cr_assert_leq(ties, 2);
            /* the printed counts: the mask's histogram, by name */
            char expect[512];
            size_t o2 = (size_t)snprintf(expect, sizeof expect, "%d masks/c%05d_mask.png", i,
                                         64 + i);
            for (int c = 0; c < 11; c++)
                if (count[c]) {
                    o2 += (size_t)snprintf(expect + o2, sizeof expect - o2, " %s:%lld",
                                           seg_codes[c], (long long)count[c]);
                    classes++;
                }
            snprintf(expect + o2, sizeof expect - o2, "\n");
            cr_assert(!strncmp(line, expect, strlen(expect)), "want %s got %s", expect, line);
            cr_assert_geq(classes, 1);
            kiln_img_free(&m);
            kiln_img_free(&q);
            line = strchr(line, '\n') + 1;
        }
        free(y);
        run_free(&e);
        run_free(&p);
        /* --json names the mask and the counts */
        char *ja[] = {exe, "--json", "--out", "masks", imgs[0], NULL};
        char *jp[] = {kiln_bin, "predict", model, "--weights", w, "--data", data, "--backend",
                      (char *)backend, "--json", "--out", "masks", imgs[0], NULL};
        e = run_in(edir, 0, ja);
        p = run_in(pdir, 1, jp);
        cr_assert_eq(e.status, 0, "%s", e.err);
        cr_assert_eq(p.status, 0, "%s", p.err);
        cr_assert_str_eq(e.out, p.out);
        cr_assert_not_null(strstr(e.out, "\"mask\": \"masks/c00064_mask.png\", \"pixels\": [{"),
                           "%s", e.out);
        run_free(&e);
        run_free(&p);
    }
}

/* Bad --out folders and mask paths: a message, not a crash. */
Test(aot_tasks, segmentation_bad_out)
{
    need_fashion();
    make_data("segmentation", "seg", 32);
    seeded("unet.kiln", "unet.safetensors");
    char exe[PATH_MAX], img[PATH_MAX], file[PATH_MAX], sub[PATH_MAX];
    run c = compile_exe("unet.kiln", "unet.safetensors", "ub", "c", NULL, NULL, exe, sizeof exe, 1);
    run_free(&c);
    snprintf(img, sizeof img, "%s/seg/images/c00000.png", tmp);
    path_in(file, sizeof file, "a-file");
    spit(file, "x", 1);
    char *a1[] = {exe, "--out", file, img, NULL};
    run r = run_in(NULL, 0, a1);
    cr_assert_eq(r.status, 2, "%d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "not a folder"), "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
    snprintf(sub, sizeof sub, "%s/no/such/dir", tmp);
    char *a2[] = {exe, "--out", sub, img, NULL};
    r = run_in(NULL, 0, a2);
    cr_assert_eq(r.status, 2, "%d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "cannot make the folder"), "%s", r.err);
    run_free(&r);
    /* the mask's path is taken by a folder: the write fails, named */
    char outd[PATH_MAX], taken[PATH_MAX];
    path_in(outd, sizeof outd, "outd");
    cr_assert_eq(mkdir(outd, 0700), 0);
    snprintf(taken, sizeof taken, "%s/c00000_mask.png", outd);
    cr_assert_eq(mkdir(taken, 0700), 0);
    char *a3[] = {exe, "--out", outd, img, NULL};
    r = run_in(NULL, 0, a3);
    cr_assert_eq(r.status, 1, "%d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "cannot write the mask"), "%s", r.err);
    cr_assert_not_null(strstr(r.err, "c00000_mask.png"), "%s", r.err);
    run_free(&r);
    char model[PATH_MAX], w[PATH_MAX];
    path_in(model, sizeof model, "unet.kiln");
    path_in(w, sizeof w, "unet.safetensors");
    char *p3[] = {kiln_bin, "predict", model, "--weights", w, "--out", outd, img, NULL};
    r = run_in(NULL, 1, p3);
    cr_assert_eq(r.status, 1, "%d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "cannot write the mask"), "%s", r.err);
    run_free(&r);
    /* options of other tasks */
    char *a4[] = {exe, "--thresh", "0.5", img, NULL};
    r = run_in(NULL, 0, a4);
    cr_assert_eq(r.status, 2);
    cr_assert_not_null(strstr(r.err, "--thresh is for multi-label"), "%s", r.err);
    run_free(&r);
    char *a5[] = {exe, "--topk", "2", img, NULL};
    r = run_in(NULL, 0, a5);
    cr_assert_eq(r.status, 2);
    cr_assert_not_null(strstr(r.err, "--topk is for classifiers"), "%s", r.err);
    run_free(&r);
}

/* Expected text line of sample i: tags with sigmoid(logit) > t, by name. */
static void tags_line(char *buf, size_t len, int i, const float *y, double t,
                      const char *const *names)
{
    size_t o = (size_t)snprintf(buf, len, "%d", i);
    for (int c = 0; c < 10; c++) {
        double p = 1.0 / (1.0 + exp(-(double)y[c]));
        cr_assert_gt(fabs(p - t), 1e-6, "sample %d class %d sits on the threshold", i, c);
        if (p > t) o += (size_t)snprintf(buf + o, len - o, " %s", names[c]);
    }
    snprintf(buf + o, len - o, "\n");
}

Test(aot_tasks, multilabel_tags)
{
    need_fashion();
    make_data("multilabel", "ml", 16);
    train("ml.kiln", "ml", "ml.safetensors", 3);
    char data[PATH_MAX], model[PATH_MAX], w[PATH_MAX];
    path_in(data, sizeof data, "ml");
    path_in(model, sizeof model, "ml.kiln");
    path_in(w, sizeof w, "ml.safetensors");
    /* the model's threshold is its metric's */
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_load(model, 8, &g, &err), KILN_OK, "%s", err ? err : "");
    double t = 0;
    cr_assert_eq(kiln_aot_task_of(g, &t), KILN_AOT_MULTILABEL);
    cr_assert_eq(t, 0.35);
    kiln_graph_free(g);
    /* the tags: labels.csv's, sorted */
    kiln_aot_data names;
    cr_assert_eq(kiln_aot_data_read(data, 1, 16, 16, &names, &err), KILN_OK, "%s", err);
    cr_assert_eq(names.nnames, 10);
    cr_assert_str_eq(names.names[0], "ankle_boot");
    enum { N = 8 };
    char img[N][PATH_MAX];
    char *imgs[N];
    for (int i = 0; i < N; i++) {
        snprintf(img[i], sizeof img[i], "%s/ml/images/c%05d.png", tmp, 64 + i);
        imgs[i] = img[i];
    }
    for (int b = 0; b < 2; b++) {
        if (b == 1 && !have_llvm()) break;
        const char *backend = b ? "llvm" : "c";
        char exe[PATH_MAX], name[32];
        snprintf(name, sizeof name, "ml_%s", backend);
        run c = compile_exe("ml.kiln", "ml.safetensors", name, backend, "--data", data, exe,
                            sizeof exe, 1);
        run_free(&c);
        int64_t per = 0;
        float *y = forward("ml.kiln", "ml.safetensors", "ml", b ? KILN_BACKEND_LLVM : KILN_BACKEND_C,
                           imgs, N, &per);
        cr_assert_eq(per, 10);
        static const char *const th[] = {NULL, "0.25", "0.42"};
        int distinct = 0;
        char prev[4096] = "";
        for (int k = 0; k < 3; k++) {
            char *ea[16] = {exe}, *pa[24] = {kiln_bin, "predict", model, "--weights", w, "--data",
                                             data, "--backend", (char *)backend};
            int ne = 1, np = 9;
            if (th[k]) {
                ea[ne++] = "--thresh";
                ea[ne++] = (char *)th[k];
                pa[np++] = "--thresh";
                pa[np++] = (char *)th[k];
            }
            for (int i = 0; i < N; i++) ea[ne++] = pa[np++] = imgs[i];
            ea[ne] = pa[np] = NULL;
            run e = run_in(NULL, 0, ea);
            run p = run_in(NULL, 1, pa);
            cr_assert_eq(e.status, 0, "%s", e.err);
            cr_assert_eq(p.status, 0, "%s", p.err);
            cr_assert_str_eq(e.out, p.out);
            char want[4096] = "";
            size_t o = 0;
            for (int i = 0; i < N; i++)
                tags_line(want + o, sizeof want - o, i, y + i * per, th[k] ? atof(th[k]) : 0.35,
                          (const char *const *)names.names),
                    o = strlen(want);
            cr_assert_str_eq(e.out, want, "threshold %s", th[k] ? th[k] : "(the model's)");
            distinct += strcmp(prev, e.out) != 0;
            snprintf(prev, sizeof prev, "%s", e.out);
            run_free(&e);
            run_free(&p);
        }
        cr_assert_eq(distinct, 3, "the thresholds should give different tags");
        free(y);
        /* --json: probabilities */
        char *ja[] = {exe, "--json", imgs[0], imgs[1], NULL};
        char *jp[] = {kiln_bin, "predict", model, "--weights", w, "--data", data, "--backend",
                      (char *)backend, "--json", imgs[0], imgs[1], NULL};
        run e = run_in(NULL, 0, ja), p = run_in(NULL, 1, jp);
        cr_assert_eq(e.status, 0, "%s", e.err);
        cr_assert_str_eq(e.out, p.out);
        cr_assert_not_null(strstr(e.out, "\"tags\": ["), "%s", e.out);
        cr_assert_not_null(strstr(e.out, "\"prob\": 0."), "%s", e.out);
        run_free(&e);
        run_free(&p);
        /* --topk and --out are for other tasks */
        char *ba[] = {exe, "--topk", "2", imgs[0], NULL};
        e = run_in(NULL, 0, ba);
        cr_assert_eq(e.status, 2);
        cr_assert_not_null(strstr(e.err, "this model is multi-label"), "%s", e.err);
        run_free(&e);
    }
    kiln_aot_data_free(&names);
}

/* --classes FILE: names with quotes, backslashes, trigraph marks, UTF-8 and
 * spaces are embedded as C strings and printed as JSON strings, the same by
 * predict; a count that is not the model's is an error. Without names,
 * indices. */
Test(aot_tasks, class_names_escaped)
{
    need_fashion();
    make_data("multilabel", "ml", 16);
    train("ml.kiln", "ml", "ml.safetensors", 1);
    const char names[] = "say \"hi\"\nback\\slash\n?\?/trigraph\ncaf\xc3\xa9\ntab\there\n"
                         "f\ng\nh\ni\nlast one\n\n";
    char cf[PATH_MAX], bad[PATH_MAX], model[PATH_MAX], w[PATH_MAX], img[PATH_MAX];
    path_in(cf, sizeof cf, "names.txt");
    spit(cf, names, strlen(names));
    path_in(bad, sizeof bad, "bad.txt");
    spit(bad, "a\nb\n", 4);
    path_in(model, sizeof model, "ml.kiln");
    path_in(w, sizeof w, "ml.safetensors");
    snprintf(img, sizeof img, "%s/ml/images/c00001.png", tmp);
    char exe[PATH_MAX], exe0[PATH_MAX];
    run c = compile_exe("ml.kiln", "ml.safetensors", "mn", "c", "--classes", cf, exe, sizeof exe, 1);
    run_free(&c);
    char *ea[] = {exe, "--json", "--thresh", "0", img, NULL};
    char *pa[] = {kiln_bin, "predict", model, "--weights", w, "--classes", cf, "--json", "--thresh",
                  "0", img, NULL};
    run e = run_in(NULL, 0, ea), p = run_in(NULL, 1, pa);
    cr_assert_eq(e.status, 0, "%s", e.err);
    cr_assert_eq(p.status, 0, "%s", p.err);
    cr_assert_str_eq(e.out, p.out);
    cr_assert_not_null(strstr(e.out, "\"name\": \"say \\\"hi\\\"\""), "%s", e.out);
    cr_assert_not_null(strstr(e.out, "\"name\": \"back\\\\slash\""), "%s", e.out);
    cr_assert_not_null(strstr(e.out, "\"name\": \"?\?/trigraph\""), "%s", e.out);
    cr_assert_not_null(strstr(e.out, "\"name\": \"caf\xc3\xa9\""), "%s", e.out);
    cr_assert_not_null(strstr(e.out, "\"name\": \"tab\\u0009here\""), "%s", e.out);
    cr_assert_not_null(strstr(e.out, "\"name\": \"last one\""), "%s", e.out);
    run_free(&e);
    run_free(&p);
    /* no names: indices */
    run c0 = compile_exe("ml.kiln", "ml.safetensors", "m0", "c", NULL, NULL, exe0, sizeof exe0, 1);
    run_free(&c0);
    char *e0[] = {exe0, "--thresh", "0", img, NULL};
    e = run_in(NULL, 0, e0);
    cr_assert_eq(e.status, 0, "%s", e.err);
    cr_assert_str_eq(e.out, "0 0 1 2 3 4 5 6 7 8 9\n");
    run_free(&e);
    /* two names for ten classes */
    run r = compile_exe("ml.kiln", "ml.safetensors", "mb", "c", "--classes", bad, exe, sizeof exe, 0);
    cr_assert_eq(r.status, 2, "%d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "2 class names"), "%s", r.err);
    cr_assert_not_null(strstr(r.err, "10 classes"), "%s", r.err);
    run_free(&r);
    char *pb[] = {kiln_bin, "predict", model, "--weights", w, "--classes", bad, img, NULL};
    r = run_in(NULL, 1, pb);
    cr_assert_eq(r.status, 2, "%d %s", r.status, r.err);
    cr_assert_not_null(strstr(r.err, "2 class names"), "%s", r.err);
    run_free(&r);
}

/* A regression model (l1_loss) prints its output values, as predict does
 * and as the forward computes them. Seeded parameters. */
Test(aot_tasks, regression_values)
{
    char model[PATH_MAX], w[PATH_MAX], xin[PATH_MAX];
    path_in(model, sizeof model, "reg.kiln");
    path_in(w, sizeof w, "reg.safetensors");
    kiln_graph *g = NULL;
    char *err = NULL;
    cr_assert_eq(kiln_model_load(model, 4, &g, &err), KILN_OK, "%s", err ? err : "");
    cr_assert_eq(kiln_aot_task_of(g, NULL), KILN_AOT_REGRESS);
    kiln_graph_free(g);
    seeded("reg.kiln", "reg.safetensors");
    /* three samples of raw f32 (taken as values in [0, 1] and normalised) */
    float x[3 * 16];
    for (int i = 0; i < 3 * 16; i++) x[i] = (float)((i * 37) % 101) / 101.0f;
    path_in(xin, sizeof xin, "x.f32");
    spit(xin, (const char *)x, sizeof x);
    for (int b = 0; b < 2; b++) {
        if (b == 1 && !have_llvm()) break;
        const char *backend = b ? "llvm" : "c";
        char exe[PATH_MAX], name[32];
        snprintf(name, sizeof name, "reg_%s", backend);
        run c = compile_exe("reg.kiln", "reg.safetensors", name, backend, NULL, NULL, exe,
                            sizeof exe, 1);
        run_free(&c);
        char *ea[] = {exe, xin, NULL};
        char *pa[] = {kiln_bin, "predict", model, "--weights", w, "--backend", (char *)backend,
                      xin, NULL};
        run e = run_in(NULL, 0, ea), r = run_in(NULL, 1, pa);
        cr_assert_eq(e.status, 0, "%s", e.err);
        cr_assert_eq(r.status, 0, "%s", r.err);
        cr_assert_str_eq(e.out, r.out);
        /* three lines of an index and three values */
        const char *s = e.out;
        for (int i = 0; i < 3; i++) {
            int idx = -1, n = 0;
            double v[3];
            cr_assert_eq(sscanf(s, "%d %lf %lf %lf%n", &idx, &v[0], &v[1], &v[2], &n), 4, "%s", s);
            cr_assert_eq(idx, i);
            s += n;
            cr_assert_eq(*s, '\n', "%s", e.out);
            s++;
        }
        run_free(&e);
        run_free(&r);
        char *ja[] = {exe, "--json", xin, NULL};
        e = run_in(NULL, 0, ja);
        cr_assert_eq(e.status, 0, "%s", e.err);
        cr_assert_not_null(strstr(e.out, "{\"index\": 2, \"values\": ["), "%s", e.out);
        run_free(&e);
        char *oa[] = {exe, "--out", tmp, xin, NULL};
        e = run_in(NULL, 0, oa);
        cr_assert_eq(e.status, 2);
        cr_assert_not_null(strstr(e.err, "a regression model"), "%s", e.err);
        run_free(&e);
    }
}

/* The task by loss, and the default threshold. */
Test(aot_tasks, task_of_models)
{
    static const struct {
        const char *model;
        kiln_aot_task task;
        double thresh;
    } cases[] = {
        {KILN_SOURCE_DIR "/examples/fashion_mlp.kiln", KILN_AOT_CLASSIFY, 0.2},
        {KILN_SOURCE_DIR "/examples/multilabel.kiln", KILN_AOT_MULTILABEL, 0.2},
        {KILN_SOURCE_DIR "/examples/unet.kiln", KILN_AOT_SEGMENT, 0.2},
        {KILN_SOURCE_DIR "/examples/points.kiln", KILN_AOT_REGRESS, 0.2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kiln_graph *g = NULL;
        char *err = NULL;
        cr_assert_eq(kiln_model_load(cases[i].model, 2, &g, &err), KILN_OK, "%s", err ? err : "");
        double t = -1;
        cr_assert_eq(kiln_aot_task_of(g, &t), cases[i].task, "%s", cases[i].model);
        cr_assert_eq(t, cases[i].thresh, "%s: %g", cases[i].model, t);
        kiln_graph_free(g);
    }
}
