/* runtime/report.h — what the Learner writes (internal API): fastai's epoch
 * table (fastprogress's console layout), its CSVLogger history file, and
 * the lr finder's SVG plot. */
#ifndef KILN_RUNTIME_REPORT_H
#define KILN_RUNTIME_REPORT_H

#include "kiln/kiln.h"

/* mm:ss, or h:mm:ss from an hour on (fastprogress's format_time; the
 * seconds are truncated). */
void kiln_format_time(double seconds, char *buf, size_t len);
/* A statistic as fastai formats it: "%.6f", "#na#" for NAN when na is set
 * (a missing value), else "nan" / "inf" / "-inf" as Python prints them. */
void kiln_format_stat(double v, int na, char *buf, size_t len);

/* The table: each column is max(8, len(name)) wide, columns two spaces
 * apart, left-aligned, no trailing blanks. */
void kiln_table_header(FILE *f, int ncols, const char *const *names);
void kiln_table_row(FILE *f, int ncols, const char *const *names, const char *const *cells);

/* The history file: a comma-separated line of the cells. `truncate`
 * empties the file first; `header` is written first when the file is then
 * empty. The file is opened, appended and closed per call, so each epoch's
 * row is on disk when the call returns. */
kiln_status kiln_history_append(const char *path, int truncate, int ncols,
                                const char *const *header, const char *const *cells,
                                char *err, size_t errlen);

/* The lr finder's plot: points [lo, hi) of (lrs, losses) as a line on a
 * log-x axis with decade ticks and labels, a linear y axis, axis labels,
 * and the point `mark` (an index in [lo, hi), or -1) as a red dot with its
 * lr written next to it. Non-finite points are left out. Written to a
 * temporary file and renamed over path. */
kiln_status kiln_lr_plot_svg(const char *path, int64_t lo, int64_t hi, const double *lrs,
                             const double *losses, int64_t mark, char *err, size_t errlen);

#endif
