/* tools/bench.h — what `kiln bench`'s files share: tools/bench.c (the
 * benchmarks, their timing and synthetic data) and tools/bench_kernel.c
 * (`bench kernel`, and the compile-time report of `bench compile` and
 * `kiln info --timings`). */
#ifndef KILN_TOOLS_BENCH_H
#define KILN_TOOLS_BENCH_H

#include "tools/cli.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Seconds on the monotonic clock. */
double bench_now(void);
/* A decimal integer in [lo, hi] into *out; false otherwise. */
bool bench_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* A measured call: returns 0, or nonzero on failure (the callee reports). */
typedef int (*call_fn)(void *ctx);

/* Warms up with one call, then times `repeats` repeats of calls lasting
 * about 50 ms each; seconds per call: the minimum and the median. */
int time_calls(call_fn fn, void *ctx, int repeats, double *tmin, double *tmed);
/* time_calls for n (<= 8) calls side by side: their repeats interleaved
 * (one repeat of each in turn), so a load that comes and goes on the
 * machine falls on all of them alike; tmin[i], tmed[i] per call. */
int time_calls_interleaved(call_fn fn, void *const *ctx, int n, int repeats, double *tmin,
                           double *tmed);

/* n random elements of dtype t: floats in [-1, 1) (in [0, 1) when classes
 * is nonzero), integers in [0, classes) (0 without classes), others 0. */
void fill_random(void *data, kiln_dtype t, size_t n, uint64_t *s, int64_t classes);

/* The class count of a target: the last axis of the float tensor it is
 * compared with; 0 when no node reads it that way. */
int64_t label_classes(const kiln_graph *g, const char *target);

/* `kiln bench kernel MODEL [NAME]` (tools/bench_kernel.c): argv[2] is
 * "kernel". */
int cmd_bench_kernel(int argc, char **argv);

/* Compiles MODEL at batch bs from an empty compile cache (a temporary
 * directory, removed after) with the backends `which` names ("c", "llvm"
 * or "both"; LLVM only when kiln has it), plus a second, warm C compile
 * when `warm`, and prints each compile's phases (kiln_compile_timings,
 * and the model's parse and build before it): a table, or with json one
 * line per compile. cmd names the command in messages. Returns an exit
 * status. */
int compile_timings_report(const char *cmd, const char *model, int64_t bs, int threads,
                           const char *which, bool warm, bool json, int verbose);

#endif
