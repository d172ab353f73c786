/* runtime/report.c — the Learner's output: the epoch table as fastai prints
 * it to a console (fastprogress's ConsoleProgressBar.write(table=True)),
 * the history file as fastai v1's CSVLogger writes it, and the lr finder's
 * plot as an SVG file (what Recorder.plot draws with matplotlib). */
#include "runtime/report.h"

#include <errno.h>
#include <math.h>
#include <string.h>

void kiln_format_time(double seconds, char *buf, size_t len)
{
    long long t = seconds > 0 && isfinite(seconds) ? (long long)seconds : 0;
    long long h = t / 3600, m = (t / 60) % 60, s = t % 60;
    if (h) snprintf(buf, len, "%lld:%02lld:%02lld", h, m, s);
    else snprintf(buf, len, "%02lld:%02lld", m, s);
}

void kiln_format_stat(double v, int na, char *buf, size_t len)
{
    if (isnan(v)) snprintf(buf, len, "%s", na ? "#na#" : "nan");
    else if (isinf(v)) snprintf(buf, len, "%s", v > 0 ? "inf" : "-inf");
    else snprintf(buf, len, "%.6f", v);
}

static int col_width(const char *name)
{
    int n = (int)strlen(name);
    return n < 8 ? 8 : n;
}

static void table_line(FILE *f, int ncols, const char *const *names, const char *const *cells)
{
    for (int c = 0; c < ncols; c++) {
        if (c + 1 == ncols) {
            fprintf(f, "%s\n", cells[c]);
            break;
        }
        /* a cell wider than its column still gets its two spaces */
        int pad = col_width(names[c]) - (int)strlen(cells[c]);
        fprintf(f, "%s%*s", cells[c], (pad > 0 ? pad : 0) + 2, "");
    }
    fflush(f);
}

void kiln_table_header(FILE *f, int ncols, const char *const *names)
{
    table_line(f, ncols, names, names);
}

void kiln_table_row(FILE *f, int ncols, const char *const *names, const char *const *cells)
{
    table_line(f, ncols, names, cells);
}

static kiln_status io_error(char *err, size_t errlen, const char *path, const char *what)
{
    if (err && errlen) snprintf(err, errlen, "%s: cannot %s: %s", path, what, strerror(errno));
    return KILN_ERR_IO;
}

static void csv_line(FILE *f, int ncols, const char *const *cells)
{
    for (int c = 0; c < ncols; c++) fprintf(f, "%s%s", c ? "," : "", cells[c]);
    fputc('\n', f);
}

kiln_status kiln_history_append(const char *path, int truncate, int ncols,
                                const char *const *header, const char *const *cells,
                                char *err, size_t errlen)
{
    FILE *f = fopen(path, truncate ? "w" : "a");
    if (!f) return io_error(err, errlen, path, "open the history file");
    /* In append mode the position is at the end: ftell says whether the
     * file is empty. */
    if (fseek(f, 0, SEEK_END) == 0 && ftell(f) == 0 && header) csv_line(f, ncols, header);
    if (cells) csv_line(f, ncols, cells);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return io_error(err, errlen, path, "write the history file");
    return KILN_OK;
}

/* ---- the plot ------------------------------------------------------------ */

enum { W = 640, H = 440, ML = 78, MR = 24, MT = 40, MB = 64 };

static double nice_step(double range, int target)
{
    double raw = range / target;
    double mag = pow(10.0, floor(log10(raw)));
    double r = raw / mag;
    double s = r < 1.5 ? 1.0 : r < 3.0 ? 2.0 : r < 7.0 ? 5.0 : 10.0;
    return s * mag;
}

kiln_status kiln_lr_plot_svg(const char *path, int64_t lo, int64_t hi, const double *lrs,
                             const double *losses, int64_t mark, char *err, size_t errlen)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int64_t npts = 0;
    for (int64_t i = lo; i < hi; i++) {
        if (!(isfinite(lrs[i]) && lrs[i] > 0 && isfinite(losses[i]))) continue;
        double lx = log10(lrs[i]);
        if (lx < xmin) xmin = lx;
        if (lx > xmax) xmax = lx;
        if (losses[i] < ymin) ymin = losses[i];
        if (losses[i] > ymax) ymax = losses[i];
        npts++;
    }
    if (npts == 0) {
        if (err && errlen) snprintf(err, errlen, "%s: no finite point to plot", path);
        return KILN_ERR_INVALID;
    }
    /* x: whole decades around the points */
    double x0 = floor(xmin), x1 = ceil(xmax);
    if (x1 <= x0) x1 = x0 + 1;
    /* y: a nice range with a little room */
    if (ymax - ymin < 1e-12 * (fabs(ymax) + 1.0)) {
        double d = fabs(ymax) * 0.1 + 0.1;
        ymin -= d;
        ymax += d;
    }
    double pad = (ymax - ymin) * 0.05;
    double y0 = ymin - pad, y1 = ymax + pad;
    double ystep = nice_step(y1 - y0, 5);
    int ydec = ystep >= 1 ? 0 : (int)ceil(-log10(ystep) - 1e-9);

    size_t plen = strlen(path);
    char tmp[4096];
    if (plen + 5 > sizeof tmp) {
        if (err && errlen) snprintf(err, errlen, "%s: path too long", path);
        return KILN_ERR_INVALID;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return io_error(err, errlen, tmp, "open the plot file");

    const double pw = W - ML - MR, ph = H - MT - MB;
#define PX(lx) (ML + ((lx) - x0) / (x1 - x0) * pw)
#define PY(v) (MT + (y1 - (v)) / (y1 - y0) * ph)
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%.1f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">"
               "Learning rate finder</text>\n", ML + pw / 2);
    /* ticks and grid: x decades */
    fprintf(f, "<g id=\"xticks\" stroke=\"#000\" stroke-width=\"1\">\n");
    for (double d = x0; d <= x1 + 1e-9; d += 1.0) {
        double px = PX(d);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n", px, MT,
                px, H - MB);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", px, H - MB, px,
                H - MB + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" stroke=\"none\">%.0e</text>\n",
                px, H - MB + 19, pow(10.0, d));
    }
    fprintf(f, "</g>\n<g id=\"yticks\" stroke=\"#000\" stroke-width=\"1\">\n");
    for (double t = ceil(y0 / ystep) * ystep; t <= y1 + 1e-9 * ystep; t += ystep) {
        double py = PY(t);
        double v = fabs(t) < ystep * 1e-9 ? 0.0 : t;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", ML, py,
                W - MR, py);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", ML - 5, py, ML, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" stroke=\"none\">%.*f</text>\n",
                ML - 8, py + 4, ydec, v);
    }
    fprintf(f, "</g>\n");
    /* axes */
    fprintf(f, "<rect id=\"axes\" x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
               "stroke=\"#000\"/>\n", ML, MT, pw, ph);
    fprintf(f, "<text id=\"xlabel\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">Learning Rate"
               "</text>\n", ML + pw / 2, H - 18);
    fprintf(f, "<text id=\"ylabel\" x=\"18\" y=\"%.1f\" text-anchor=\"middle\" "
               "transform=\"rotate(-90 18 %.1f)\">Loss</text>\n", MT + ph / 2, MT + ph / 2);
    /* the curve */
    fprintf(f, "<polyline id=\"loss\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" "
               "points=\"");
    int first = 1;
    for (int64_t i = lo; i < hi; i++) {
        if (!(isfinite(lrs[i]) && lrs[i] > 0 && isfinite(losses[i]))) continue;
        fprintf(f, "%s%.2f,%.2f", first ? "" : " ", PX(log10(lrs[i])), PY(losses[i]));
        first = 0;
    }
    fprintf(f, "\"/>\n");
    if (mark >= lo && mark < hi && isfinite(lrs[mark]) && lrs[mark] > 0 &&
        isfinite(losses[mark])) {
        double px = PX(log10(lrs[mark])), py = PY(losses[mark]);
        fprintf(f, "<circle id=\"suggestion\" cx=\"%.2f\" cy=\"%.2f\" r=\"5\" fill=\"red\"/>\n",
                px, py);
        int right = px < ML + pw * 0.7;
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" fill=\"red\">"
                   "suggested lr %.2e</text>\n",
                right ? px + 9 : px - 9, py - 8, right ? "start" : "end", lrs[mark]);
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        remove(tmp);
        return io_error(err, errlen, tmp, "write the plot file");
    }
    if (rename(tmp, path) != 0) {
        kiln_status st = io_error(err, errlen, path, "rename the plot file into place");
        remove(tmp);
        return st;
    }
    return KILN_OK;
}
