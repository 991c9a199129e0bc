/* One-token quantized products timed on the GPU for tests/gpu/NOTES.md: INT4 g128 (AWQ and
 * GPTQ: gemv_q4m), FP8 per-row W8A8 (gemv_f8h) and Q4_K (gemv_q4kh) at T = 1, over the 8B's
 * decode shapes (with the default slices and with FI_HALF_BALANCE=1) and a sweep of rows at
 * K = 4096 and K = 14336.
 *
 * Each figure is one launch's share of a CUDA graph of INNER launches back to back, as in a
 * decode step's graph, over enough copies of the weight (at least 2.5x a 50 MB L2) that no
 * launch finds its weight in L2; median of 9 replays. A straight line through a sweep,
 * t = a + bytes / B, splits a launch's fixed cost a (launch, staging x, the last blocks'
 * tail) from the rate B at which it streams the weight: which of the two keeps the products
 * at 30-57% of the bandwidth (tests/gpu/NOTES.md, ncu by launch) decides what to change next.
 * Random valid weights (qweights.h); not a pass/fail test. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/log.h"
#include "base/settings.h"
#include "gpu_util.h"
#include "qweights.h"

#define INNER 24
#define MAX_COPIES 64

static struct fi_backend *G;
static uint64_t seed = 777;

static void die(const char *what)
{
	fprintf(stderr, "bench_qgemv: %s: %s\n", what, fi_errmsg());
	exit(1);
}

/* Seconds a launch of q's [N, K] product at T = 1; *bytes: the weight's bytes. */
static double one(const struct qt *q, int64_t N, int64_t K, double *bytes)
{
	static uint64_t key = 0x9e3779b97f4a7c15ull;
	struct fi_weight w[MAX_COPIES];
	uint64_t nb;
	uint8_t *data = make_q(q, N, K, &nb, &seed);
	struct fi_tensor t = {.name = "w", .dtype = q->dt, .ndim = 2, .shape = {N, K},
			      .data = data, .nbytes = nb};
	int copies = (int)ceil(125e6 / (double)nb);
	double ts[9];
	copies = copies < 1 ? 1 : copies > MAX_COPIES ? MAX_COPIES : copies;
	for (int i = 0; i < copies; i++)
		if (G->ops->weight(G, &t, &w[i]))
			die("weight");
	free(data);
	float *xf = rand_bf16((size_t)K, 1, &seed);
	void *x = put_act(G, xf, (size_t)K), *y = poisoned(G, (size_t)N);
	free(xf);
	if (G->ops->matmul(G, y, x, &w[0], NULL, 1)) /* the first launch outside the graph */
		die("matmul");
	key++;
	if (G->ops->graph_capture_begin(G, key))
		die("capture");
	for (int i = 0; i < INNER; i++)
		if (G->ops->matmul(G, y, x, &w[i % copies], NULL, 1))
			die("matmul in a graph");
	if (G->ops->graph_capture_end(G, key))
		die("capture end");
	for (int r = -2; r < 9; r++) {
		double t0 = fi_now();
		if (G->ops->graph_replay(G, key) || G->ops->sync(G))
			die("replay");
		if (r >= 0)
			ts[r] = (fi_now() - t0) / INNER;
	}
	for (int i = 0; i < copies; i++)
		G->ops->weight_free(G, &w[i]);
	G->ops->free(G, x);
	G->ops->free(G, y);
	*bytes = (double)nb;
	return median(ts, 9);
}

/* One line of the table (what and tag name the shape); with sx, the point kept for fit. */
static void row(const struct qt *q, const char *what, const char *tag, int64_t N, int64_t K,
		double bw, double *sx, double *sy, int *n)
{
	double b, t = one(q, N, K, &b);
	printf("| %s | %s%s %lld x %lld | %.2f MB | %.2f us | %.0f GB/s | %.0f%% |\n", q->what, what,
	       tag, (long long)N, (long long)K, b / 1e6, t * 1e6, b / t / 1e9, 100 * b / t / bw);
	if (sx) {
		sx[*n] = b;
		sy[*n] = t;
		(*n)++;
	}
}

/* Least squares t = a + bytes / B over n points. */
static void fit(const char *what, const double *x, const double *y, int n, double bw)
{
	double mx = 0, my = 0, sxx = 0, sxy = 0;
	for (int i = 0; i < n; i++)
		mx += x[i] / n, my += y[i] / n;
	for (int i = 0; i < n; i++)
		sxx += (x[i] - mx) * (x[i] - mx), sxy += (x[i] - mx) * (y[i] - my);
	const double s = sxy / sxx, a = my - s * mx;
	printf("| %s: fit | a = %.2f us a launch | | | B = %.0f GB/s | %.0f%% |\n", what, a * 1e6,
	       1 / s / 1e9, 100 / s / bw);
}

int main(void)
{
	/* INT4 g128, FP8 per-row W8A8, Q4_K (qweights.h's table) */
	static const int kinds[] = {9, 7, 2};
	if (fi_backend_create("cuda", 0, &G)) {
		printf("SKIPPED: %s\n", fi_errmsg());
		return 77;
	}
	if (!G->ops->graph_capture_begin) {
		printf("SKIPPED: no graphs\n");
		return 77;
	}
	const double bw = copy_rate(G); /* the ceiling, read plus write */
	if (!(bw > 0))
		die("copy");
	printf("%s; copy %.0f GB/s (read plus write): the %% column is of that\n\n", G->device,
	       bw / 1e9);
	printf("| format | shape | weight | a launch | rate | share |\n");
	printf("| --- | --- | ---: | ---: | ---: | ---: |\n");
	for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
		const struct qt *q = &qtypes[kinds[k]];
		double sx[16], sy[16];
		int n = 0;
		for (int bal = 0; bal < 2; bal++) { /* the slices by default, then FI_HALF_BALANCE=1 */
			const char *tag = bal ? " (balance)" : "";
			setenv("FI_HALF_BALANCE", bal ? "1" : "0", 1);
			fi_settings_reload();
			row(q, "q/k/v", tag, 6144, 4096, bw, NULL, NULL, NULL);
			row(q, "o", tag, 4096, 4096, bw, NULL, NULL, NULL);
			row(q, "gate/up", tag, 28672, 4096, bw, NULL, NULL, NULL);
			row(q, "down", tag, 4096, 14336, bw, NULL, NULL, NULL);
		}
		unsetenv("FI_HALF_BALANCE");
		fi_settings_reload();
		for (int64_t N = 1024; N <= 65536; N *= 2)
			row(q, "sweep", "", N, 4096, bw, sx, sy, &n);
		fit("K = 4096", sx, sy, n, bw);
		n = 0;
		for (int64_t N = 512; N <= 16384; N *= 2)
			row(q, "sweep", "", N, 14336, bw, sx, sy, &n);
		fit("K = 14336", sx, sy, n, bw);
	}
	fi_backend_destroy(G);
	return 0;
}
