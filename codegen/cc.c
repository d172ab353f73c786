/* codegen/cc.c — compiles generated C into a shared object with the system C
 * compiler and loads it, through an on-disk cache.
 *
 * The compiler is opt->cc, else $CC, else "cc" (a value with spaces that is
 * not an executable's path is split into words: "ccache gcc" works; there is
 * no shell and no quoting). The flags are fixed:
 *
 *     -O3 -march=native -fPIC -shared -std=c11 -fno-math-errno -fopenmp-simd ... -lm
 *
 * (no -ffast-math: results must match the reference interpreter and NaNs
 * must propagate). The cache directory is opt->cache_dir, else
 * $XDG_CACHE_HOME/kiln, else $HOME/.cache/kiln, created with mode 0755. The
 * key is a 64-bit FNV-1a hash of the source, the compiler, the first line of
 * its `--version` (asked once per process), the flags and the CPU's identity
 * (for -march=native on a shared home directory), as 16 hex digits; the
 * files are <key>.c and <key>.so. Both are written under temporary names
 * (mkstemp) and renamed, so processes sharing the cache never see a partial
 * file and a cache hit skips the compiler. The compiler runs through
 * posix_spawnp, its output captured through a pipe.
 */
#include "codegen/codegen.h"
#include "ir/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct kiln_so {
    void *handle;
    char *path;
};

#define CC_FLAGS "-O3", "-march=native", "-fPIC", "-shared", "-std=c11", "-fno-math-errno", \
                 "-fopenmp-simd"
static const char *const cc_flags[] = {CC_FLAGS};
#define CC_LIBS "-lm"
#define MAX_CC_WORDS 16
#define MAX_QUOTED 6000 /* bytes of compiler output quoted in an error */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- hashing ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
    h = fnv1a(h, s ? s : "", s ? strlen(s) : 0);
    return fnv1a(h, "", 1); /* a separator: ("ab","c") != ("a","bc") */
}

/* ---- running a program ---- */

/* Runs argv[0] (looked up in $PATH) with stdin from /dev/null and stdout and
 * stderr into `out` (NUL-terminated; at most cap - 1 bytes kept, the rest
 * read and dropped; *trunc tells). Returns 0 with the wait status in
 * *status, or an errno value: ENOENT / EACCES when it cannot be run. */
static int run_capture(char *const *argv, char *out, size_t cap, int *trunc, int *status)
{
    int fd[2];
    if (pipe(fd) != 0) return errno;
    fcntl(fd[0], F_SETFD, FD_CLOEXEC);
    fcntl(fd[1], F_SETFD, FD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc) {
        close(fd[0]);
        close(fd[1]);
        return rc;
    }
    if (!(rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
        !(rc = posix_spawn_file_actions_adddup2(&fa, fd[1], 1)))
        rc = posix_spawn_file_actions_adddup2(&fa, fd[1], 2);
    pid_t pid = -1;
    if (!rc) rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    if (rc) {
        close(fd[0]);
        return rc;
    }
    size_t n = 0;
    *trunc = 0;
    for (;;) {
        char tmp[4096];
        ssize_t r = read(fd[0], tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        size_t keep = (size_t)r;
        if (n + keep > cap - 1) {
            keep = cap - 1 - n;
            *trunc = 1;
        }
        memcpy(out + n, tmp, keep);
        n += keep;
    }
    out[n] = '\0';
    close(fd[0]);
    while (waitpid(pid, status, 0) < 0) {
        if (errno != EINTR) {
            *status = 0;
            break;
        }
    }
    return 0;
}

/* ---- the compiler ---- */

typedef struct compiler {
    char *words; /* storage of argv's strings */
    char *argv[MAX_CC_WORDS + 1];
    int n;
    const char *display; /* as given */
} compiler;

/* opt->cc, else $CC, else "cc", split into words unless it names a file. */
static bool compiler_init(compiler *c, const kiln_cc_options *opt)
{
    const char *cc = opt && opt->cc && *opt->cc ? opt->cc : NULL;
    if (!cc) cc = getenv("CC");
    if (!cc || !*cc) cc = "cc";
    memset(c, 0, sizeof *c);
    c->display = cc;
    if (!(c->words = strdup(cc))) return false;
    if (access(cc, X_OK) == 0) { /* a path, perhaps with spaces */
        c->argv[c->n++] = c->words;
        return true;
    }
    char *save = NULL;
    for (char *p = strtok_r(c->words, " \t\n", &save); p && c->n < MAX_CC_WORDS;
         p = strtok_r(NULL, " \t\n", &save))
        c->argv[c->n++] = p;
    if (c->n == 0) c->argv[c->n++] = c->words; /* only blanks: "not found" says so */
    return true;
}

static kiln_status not_found(char **err, const compiler *c)
{
    return kiln_set_err(err, KILN_ERR_NOT_FOUND,
                        "C compiler '%s' not found (set $CC or install gcc: apt-get install gcc)",
                        c->display);
}

/* The first line of `<cc> --version`, cached per process and compiler.
 * Returns 0, or an errno value when the compiler cannot be run. */
static pthread_mutex_t version_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char cc[256];
    char line[256];
} version_cache[8];
static int version_count;

static int compiler_version(const compiler *c, char *line, size_t len)
{
    pthread_mutex_lock(&version_lock);
    for (int i = 0; i < version_count; i++)
        if (!strcmp(version_cache[i].cc, c->display)) {
            snprintf(line, len, "%s", version_cache[i].line);
            pthread_mutex_unlock(&version_lock);
            return 0;
        }
    pthread_mutex_unlock(&version_lock);

    char *argv[MAX_CC_WORDS + 2];
    for (int i = 0; i < c->n; i++)
        argv[i] = c->argv[i];
    argv[c->n] = "--version";
    argv[c->n + 1] = NULL;
    char out[1024];
    int trunc, status;
    int rc = run_capture(argv, out, sizeof out, &trunc, &status);
    if (rc) return rc;
    /* a shell-style "command not found" from an old posix_spawnp */
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return ENOENT;
    size_t l = strcspn(out, "\n");
    if (l >= len) l = len - 1;
    memcpy(line, out, l);
    line[l] = '\0';

    pthread_mutex_lock(&version_lock);
    if (version_count < 8 && strlen(c->display) < sizeof version_cache[0].cc) {
        snprintf(version_cache[version_count].cc, sizeof version_cache[0].cc, "%s", c->display);
        snprintf(version_cache[version_count].line, sizeof version_cache[0].line, "%s", line);
        version_count++;
    }
    pthread_mutex_unlock(&version_lock);
    return 0;
}

/* The CPU's identity (model and feature flags), for -march=native; cached. */
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static uint64_t cpu_hash;

static void cpu_identity(void)
{
    uint64_t h = 14695981039346656037ull;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        static const char *const keys[] = {"model name",      "flags",    "Features",
                                           "CPU implementer", "CPU part", "isa"};
        bool seen[6] = {0};
        char line[8192];
        while (fgets(line, sizeof line, f)) {
            if (line[0] == '\n') break; /* the first processor's block is enough */
            for (int i = 0; i < 6; i++)
                if (!seen[i] && !strncmp(line, keys[i], strlen(keys[i]))) {
                    seen[i] = true;
                    h = fnv_str(h, line);
                }
        }
        fclose(f);
    }
    cpu_hash = h;
}

/* ---- files ---- */

/* mkdir -p with mode 0755. */
static int mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p) return ENOMEM;
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                rc = errno;
                break;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    if (!rc) {
        struct stat st;
        if (stat(path, &st) != 0)
            rc = errno;
        else if (!S_ISDIR(st.st_mode))
            rc = ENOTDIR;
    }
    return rc;
}

static char *cache_dir(const kiln_cc_options *opt, char **err, kiln_status *st)
{
    if (opt && opt->cache_dir && *opt->cache_dir) return strdup(opt->cache_dir);
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) return kiln_asprintf("%s/kiln", x);
    const char *home = getenv("HOME");
    if (home && *home) return kiln_asprintf("%s/.cache/kiln", home);
    *st = kiln_set_err(err, KILN_ERR_IO,
                       "no cache directory for compiled code: set $XDG_CACHE_HOME or "
                       "$HOME (or the cache_dir option)");
    return NULL;
}

/* Writes data to `final` through a temporary file in the same directory. */
static int write_atomic(const char *dir, const char *key, const char *final, const char *data)
{
    char *tmp = kiln_asprintf("%s/.%s.c.XXXXXX", dir, key);
    if (!tmp) return ENOMEM;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return e;
    }
    fchmod(fd, 0644);
    size_t n = strlen(data), o = 0;
    int rc = 0;
    while (o < n) {
        ssize_t w = write(fd, data + o, n - o);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            rc = w < 0 ? errno : EIO;
            break;
        }
        o += (size_t)w;
    }
    if (close(fd) != 0 && !rc) rc = errno;
    if (!rc && rename(tmp, final) != 0) rc = errno;
    if (rc) unlink(tmp);
    free(tmp);
    return rc;
}

static kiln_status load_so(const char *path, kiln_so **out, char **err)
{
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return kiln_set_err(err, KILN_ERR_IO, "cannot load %s: %s", path, e ? e : "dlopen failed");
    }
    kiln_so *so = calloc(1, sizeof *so);
    if (!so || !(so->path = strdup(path))) {
        free(so);
        dlclose(h);
        return kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
    }
    so->handle = h;
    *out = so;
    return KILN_OK;
}

/* Compiles src into so_path through a temporary output file. */
static kiln_status compile(const compiler *c, const char *dir, const char *key, const char *src,
                           const char *so_path, int verbose, char **err)
{
    char *tmp = kiln_asprintf("%s/.%s.so.XXXXXX", dir, key);
    if (!tmp) return kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
    int fd = mkstemp(tmp);
    if (fd < 0) {
        kiln_status st =
            kiln_set_err(err, KILN_ERR_IO, "cannot create a file in %s: %s", dir, strerror(errno));
        free(tmp);
        return st;
    }
    close(fd);

    char *argv[MAX_CC_WORDS + 16];
    int n = 0;
    for (int i = 0; i < c->n; i++)
        argv[n++] = c->argv[i];
    for (size_t i = 0; i < sizeof cc_flags / sizeof cc_flags[0]; i++)
        argv[n++] = (char *)cc_flags[i];
    argv[n++] = "-o";
    argv[n++] = tmp;
    argv[n++] = (char *)src;
    argv[n++] = CC_LIBS;
    argv[n] = NULL;
    if (verbose) {
        fputs("kiln: cc:", stderr);
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %s", argv[i]);
        fputc('\n', stderr);
    }

    char *out = malloc(MAX_QUOTED + 1);
    if (!out) {
        unlink(tmp);
        free(tmp);
        return kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
    }
    int trunc = 0, status = 0;
    int rc = run_capture(argv, out, MAX_QUOTED + 1, &trunc, &status);
    kiln_status st = KILN_OK;
    if (rc == ENOENT || rc == EACCES || rc == ENOTDIR) {
        st = not_found(err, c);
    } else if (rc) {
        st = kiln_set_err(err, KILN_ERR_IO, "cannot run the C compiler '%s': %s", c->display,
                          strerror(rc));
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64];
        if (WIFSIGNALED(status))
            snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
        else
            snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
        st = kiln_set_err(err, KILN_ERR_COMPILE,
                          "C compiler '%s' failed (%s) on the generated source, kept at %s:\n%s%s",
                          c->display, how, src, out,
                          trunc ? "\n[... compiler output truncated]" : "");
    } else if (rename(tmp, so_path) != 0) {
        st = kiln_set_err(err, KILN_ERR_IO, "cannot rename %s to %s: %s", tmp, so_path,
                          strerror(errno));
    }
    if (st) unlink(tmp);
    free(out);
    free(tmp);
    return st;
}

kiln_status kiln_cc_load(const char *source, const kiln_cc_options *opt, kiln_so **out, int *cached,
                         double *seconds, char **err)
{
    double t0 = now();
    if (err) *err = NULL;
    if (cached) *cached = 0;
    if (seconds) *seconds = 0;
    if (!out) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_cc_load: no output handle");
    *out = NULL;
    if (!source) return kiln_set_err(err, KILN_ERR_INVALID, "kiln_cc_load: no source");
    int verbose = opt ? opt->verbose : 0;

    compiler c;
    if (!compiler_init(&c, opt)) return kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
    kiln_status st = KILN_OK;
    char *dir = NULL, *key_c = NULL, *key_so = NULL;
    char version[256] = "";
    int rc = compiler_version(&c, version, sizeof version);
    if (rc == ENOENT || rc == EACCES || rc == ENOTDIR) {
        st = not_found(err, &c);
        goto done;
    }
    if (rc) {
        st = kiln_set_err(err, KILN_ERR_IO, "cannot run the C compiler '%s': %s", c.display,
                          strerror(rc));
        goto done;
    }
    pthread_once(&cpu_once, cpu_identity);

    uint64_t h = 14695981039346656037ull;
    h = fnv_str(h, "kiln-cc 1");
    h = fnv_str(h, source);
    for (int i = 0; i < c.n; i++)
        h = fnv_str(h, c.argv[i]);
    h = fnv_str(h, version);
    for (size_t i = 0; i < sizeof cc_flags / sizeof cc_flags[0]; i++)
        h = fnv_str(h, cc_flags[i]);
    h = fnv_str(h, CC_LIBS);
    h = fnv1a(h, &cpu_hash, sizeof cpu_hash);
    char key[17];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)h);

    if (!(dir = cache_dir(opt, err, &st))) {
        if (!st) st = kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = mkdir_p(dir))) {
        st = kiln_set_err(err, KILN_ERR_IO, "cannot create the cache directory %s: %s", dir,
                          strerror(rc));
        goto done;
    }
    key_c = kiln_asprintf("%s/%s.c", dir, key);
    key_so = kiln_asprintf("%s/%s.so", dir, key);
    if (!key_c || !key_so) {
        st = kiln_set_err(err, KILN_ERR_NOMEM, "out of memory");
        goto done;
    }

    /* a hit: load it (a damaged file is compiled again) */
    if (access(key_so, R_OK) == 0) {
        char *lerr = NULL;
        if (load_so(key_so, out, &lerr) == KILN_OK) {
            if (cached) *cached = 1;
            if (verbose) fprintf(stderr, "kiln: cc: cache hit %s\n", key_so);
            goto done;
        }
        if (verbose) fprintf(stderr, "kiln: cc: %s; compiling again\n", lerr ? lerr : "");
        free(lerr);
    }

    if ((rc = write_atomic(dir, key, key_c, source))) {
        st = kiln_set_err(err, KILN_ERR_IO, "cannot write %s: %s", key_c, strerror(rc));
        goto done;
    }
    if ((st = compile(&c, dir, key, key_c, key_so, verbose, err))) goto done;
    st = load_so(key_so, out, err);

done:
    if (seconds) *seconds = now() - t0;
    if (verbose && !st)
        fprintf(stderr, "kiln: cc: %s in %.3f s\n", cached && *cached ? "loaded" : "compiled",
                now() - t0);
    free(c.words);
    free(dir);
    free(key_c);
    free(key_so);
    return st;
}

void *kiln_so_sym(kiln_so *so, const char *name)
{
    if (!so || !so->handle || !name) return NULL;
    return dlsym(so->handle, name);
}

void kiln_so_close(kiln_so *so)
{
    if (!so) return;
    if (so->handle) dlclose(so->handle);
    free(so->path);
    free(so);
}
