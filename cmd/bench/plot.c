/* plot: the serving run drawn by gnuplot (Debian package gnuplot-nox) as one PNG of four
 * panels: the distributions (CDF) of TTFT, TPOT and ITL, with the SLOs given as dashed
 * lines, and output tokens per second with the requests in flight over time. The data go
 * to a temporary directory as plain columns, gnuplot reads them there, and the picture is
 * copied to the path asked for. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "base/settings.h"

extern char **environ;

#define CDF_POINTS 2000 /* points of a distribution drawn at the most */
#define TIME_BINS 100 /* at the most: windows of at least 0.25 s, at least 10 of them */

/* Runs gnuplot with args, its standard output to /dev/null; its exit status, or -1 with the
 * reason recorded when it cannot be started. */
static int run_gnuplot(char *const *argv)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int rc, st;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc) {
		fi_fail(FI_ENOTFOUND, "--plot needs gnuplot (Debian package gnuplot-nox), which "
			"cannot be run: %s", strerror(rc));
		return -1;
	}
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			fi_fail(FI_EIO, "gnuplot: %s", strerror(errno));
			return -1;
		}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

fi_err bench_plot_check(void)
{
	char *argv[] = {"gnuplot", "-V", NULL};
	int rc = run_gnuplot(argv);
	if (rc < 0)
		return fi_errcode();
	return rc ? fi_fail(FI_ENOTFOUND, "--plot needs gnuplot (Debian package gnuplot-nox); "
			    "'gnuplot -V' exited %d", rc)
		  : FI_OK;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* v[n] sorted, written as "value fraction" at most CDF_POINTS lines (evenly spaced ranks,
 * the last one always). Returns n. */
static int write_cdf(const char *path, double *v, int n)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	qsort(v, (size_t)n, sizeof *v, cmp_dbl);
	int step = n > CDF_POINTS ? (n + CDF_POINTS - 1) / CDF_POINTS : 1;
	for (int i = 0; i < n; i += step)
		fprintf(f, "%.6g %.6g\n", v[i], (double)(i + 1) / n);
	if (n && (n - 1) % step)
		fprintf(f, "%.6g 1\n", v[n - 1]);
	return fclose(f) ? -1 : n;
}

/* A string for gnuplot's single quotes (a quote is doubled). */
static void gp_quote(FILE *f, const char *s)
{
	fputc('\'', f);
	for (; *s; s++) {
		if (*s == '\'')
			fputc('\'', f);
		fputc(*s, f);
	}
	fputc('\'', f);
}

static void panel(FILE *g, const char *dir, const char *file, int n, const char *title,
		  const char *xlabel, const struct bench_stat *s, double slo)
{
	char path[4200];
	fprintf(g, "set title '%s'\nset xlabel '%s'\nset ylabel 'fraction of %s'\n", title, xlabel,
		strcmp(title, "ITL") ? "requests" : "gaps");
	fprintf(g, "unset arrow\nunset label\nset xrange [*:*]\nset yrange [0:1]\n");
	if (slo >= 0)
		fprintf(g, "set arrow from %g, graph 0 to %g, graph 1 nohead dt 2 lw 2 lc 'red'\n"
			"set label 'SLO %g ms' at %g, graph 0.5 left offset 0.5,0 tc 'red'\n", slo,
			slo, slo, slo);
	if (!n) {
		fprintf(g, "set label 'no data' at graph 0.5, 0.5 center\nplot [0:1] NaN notitle\n");
		return;
	}
	snprintf(path, sizeof path, "%s/%s", dir, file);
	fprintf(g, "plot ");
	gp_quote(g, path);
	fprintf(g, " using 1:2 with steps lw 2 title 'p50 %.2f  p90 %.2f  p99 %.2f ms'\n",
		s->median, s->p90, s->p99);
}

/* Copies the picture gnuplot wrote to where it was asked for. */
static fi_err copy_file(const char *from, const char *to)
{
	FILE *a = fopen(from, "rb"), *b;
	char buf[65536];
	size_t k, total = 0;
	fi_err e = FI_OK;
	if (!a)
		return fi_fail(FI_EIO, "gnuplot wrote no picture");
	if (!(b = fopen(to, "wb"))) {
		e = fi_fail(FI_EIO, "cannot open '%s': %s", to, strerror(errno));
		fclose(a);
		return e;
	}
	while ((k = fread(buf, 1, sizeof buf, a)) > 0) {
		total += k;
		if (fwrite(buf, 1, k, b) != k) {
			e = fi_fail(FI_EIO, "cannot write '%s': %s", to, strerror(errno));
			break;
		}
	}
	fclose(a);
	if (fclose(b) && !e)
		e = fi_fail(FI_EIO, "cannot write '%s': %s", to, strerror(errno));
	if (!e && !total)
		e = fi_fail(FI_EIO, "gnuplot wrote an empty picture");
	return e;
}

static fi_err write_data(const char *dir, const struct bench_req *r, int n,
			 const struct bench_result *res, int cnt[3])
{
	size_t nitl = 0;
	for (int i = 0; i < n; i++)
		nitl += r[i].state == BR_DONE && r[i].ntt > 1 ? r[i].ntt - 1 : 0;
	double *ttft = malloc(sizeof(double) * (size_t)(n + 1)),
	       *tpot = malloc(sizeof(double) * (size_t)(n + 1)),
	       *itl = malloc(sizeof(double) * (nitl + 1)), tput[TIME_BINS], run[TIME_BINS];
	int nt = 0, np = 0, ni = 0, nb = (int)fmin(TIME_BINS, fmax(10, res->duration / 0.25));
	char p[4200];
	FILE *f;
	fi_err e = FI_OK;
	if (!ttft || !tpot || !itl) {
		e = fi_fail(FI_ENOMEM, "out of memory");
		goto out;
	}
	/* the same samples as the report's (report.c) */
	for (int i = 0; i < n; i++) {
		const struct bench_req *q = &r[i];
		if (q->state != BR_DONE || !q->ntt)
			continue;
		ttft[nt++] = (q->first - q->start) * 1e3;
		if (q->ntt > 1)
			tpot[np++] = (q->tt[q->ntt - 1] - q->first) * 1e3 / (q->ntt - 1);
		for (uint32_t k = 1; k < q->ntt; k++)
			itl[ni++] = (q->tt[k] - q->tt[k - 1]) * 1e3;
	}
	snprintf(p, sizeof p, "%s/ttft.dat", dir);
	cnt[0] = write_cdf(p, ttft, nt);
	snprintf(p, sizeof p, "%s/tpot.dat", dir);
	cnt[1] = write_cdf(p, tpot, np);
	snprintf(p, sizeof p, "%s/itl.dat", dir);
	cnt[2] = write_cdf(p, itl, ni);
	bench_timeline(r, n, res->duration, nb, tput, run);
	snprintf(p, sizeof p, "%s/time.dat", dir);
	if (cnt[0] < 0 || cnt[1] < 0 || cnt[2] < 0 || !(f = fopen(p, "w"))) {
		e = fi_fail(FI_EIO, "plot data in %s: %s", dir, strerror(errno));
		goto out;
	}
	for (int b = 0; b < nb; b++)
		fprintf(f, "%.6g %.6g %.6g\n", (b + 0.5) * res->duration / nb, tput[b], run[b]);
	if (fclose(f))
		e = fi_fail(FI_EIO, "plot data in %s: %s", dir, strerror(errno));
out:
	free(ttft);
	free(tpot);
	free(itl);
	return e;
}

/* The script: four panels, titles and labels with no text from outside but the numbers
 * and the (quoted) paths. */
static fi_err write_script(const char *dir, const char *png, const struct bench_opts *o,
			   const struct bench_result *res, const char *model, const int cnt[3])
{
	char p[4200];
	FILE *g;
	snprintf(p, sizeof p, "%s/plot.gp", dir);
	if (!(g = fopen(p, "w")))
		return fi_fail(FI_EIO, "plot script in %s: %s", dir, strerror(errno));
	fprintf(g, "set terminal pngcairo noenhanced size 1400,1000 font ',10'\nset output ");
	gp_quote(g, png);
	fprintf(g, "\nset multiplot layout 2,2 title ");
	{
		char t[1024], rate[48], conc[32] = "";
		if (isinf(o->rate))
			snprintf(rate, sizeof rate, "all at once");
		else
			snprintf(rate, sizeof rate, "%g req/s", o->rate);
		if (o->concurrency)
			snprintf(conc, sizeof conc, ", concurrency %d", o->concurrency);
		snprintf(t, sizeof t, "fi-bench serve: %s, %s, %d requests %s%s, %d completed, "
			 "%.1f output tok/s", model, o->wl.text, res->requests, rate, conc,
			 res->completed, res->output_throughput);
		gp_quote(g, t);
	}
	fprintf(g, "\nset grid\nset key bottom right\n");
	panel(g, dir, "ttft.dat", cnt[0], "TTFT", "ms", &res->ttft, o->slo_ttft_ms);
	panel(g, dir, "tpot.dat", cnt[1], "TPOT", "ms", &res->tpot, o->slo_tpot_ms);
	panel(g, dir, "itl.dat", cnt[2], "ITL", "ms", &res->itl, -1);
	fprintf(g, "unset arrow\nunset label\nset title 'throughput over time'\n"
		"set xlabel 's'\nset ylabel 'output tok/s'\nset y2label 'requests in flight'\n"
		"set ytics nomirror\nset y2tics\nset xrange [*:*]\nset yrange [0:*]\n"
		"set y2range [0:*]\nset key top right\nplot ");
	snprintf(p, sizeof p, "%s/time.dat", dir);
	gp_quote(g, p);
	fprintf(g, " using 1:2 with steps lw 2 title 'output tok/s', '' using 1:3 axes x1y2 "
		"with lines lw 2 title 'in flight'\nunset multiplot\n");
	return fclose(g) ? fi_fail(FI_EIO, "plot script in %s: %s", dir, strerror(errno)) : FI_OK;
}

fi_err bench_plot(const char *png, const struct bench_opts *o, const struct bench_req *r,
		  int n, const struct bench_result *res, const char *model)
{
	const char *tmp = fi_settings()->tmpdir;
	char dir[4096], p[4200], out[4200];
	int cnt[3] = {0, 0, 0}, rc;
	fi_err e;
	snprintf(dir, sizeof dir, "%s/fi-bench-plot.XXXXXX", tmp);
	if (!mkdtemp(dir))
		return fi_fail(FI_EIO, "cannot make a directory for the plot data: %s", strerror(errno));
	snprintf(out, sizeof out, "%s/plot.png", dir);
	if (!(e = write_data(dir, r, n, res, cnt)) &&
	    !(e = write_script(dir, out, o, res, model, cnt))) {
		char script[4200], *argv[] = {"gnuplot", script, NULL};
		snprintf(script, sizeof script, "%s/plot.gp", dir);
		if ((rc = run_gnuplot(argv)) < 0)
			e = fi_errcode();
		else if (rc)
			e = fi_fail(FI_EIO, "gnuplot failed (exit %d) drawing %s", rc, png);
		else
			e = copy_file(out, png);
	}
	static const char *const files[] = {"ttft.dat", "tpot.dat", "itl.dat", "time.dat",
					    "plot.gp", "plot.png"};
	for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
		snprintf(p, sizeof p, "%s/%s", dir, files[i]);
		unlink(p);
	}
	rmdir(dir);
	return e;
}
