/* Helpers for the GPU tests, included by each (the Makefile builds one program per
 * tests/gpu/NAME.c): a CPU and a CUDA backend side by side, bf16-exact random inputs given to
 * both, poisoned outputs, and tolerance checks.
 *
 *   pair_open        both backends (0 and a SKIPPED line when no GPU is usable)
 *   rand_bf16        n values in [-a, a] rounded to bf16, so both backends see equal numbers
 *   put_act/get_act  upload/download floats as be->act
 *   poisoned         n elements of be->act filled with NaN: an unwritten element fails
 *   make_weight      a [rows, cols] weight handed to be->ops->weight as bf16
 *   zero_cache       a layer's K and V caches zeroed
 *   close_enough     |g - r| <= atol + rtol |r| everywhere (NaN fails) and
 *                    ||g - r|| / ||r|| <= max_rel; prints one line */
#ifndef FI_GPU_UTIL_H
#define FI_GPU_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/err.h"
#include "base/log.h"
#include "base/tensor.h"

struct pair {
	struct fi_backend *cpu, *gpu;
};


static __attribute__((unused)) int pair_open(struct pair *p)
{
	memset(p, 0, sizeof(*p));
	if (fi_backend_cpu_create(2, &p->cpu))
		return 0;
#ifdef FI_HAVE_CUDA
	if (fi_backend_cuda_create(0, &p->gpu) == FI_OK)
		return 1;
#endif
	printf("SKIPPED: no usable GPU: %s\n", fi_errmsg());
	fi_backend_destroy(p->cpu);
	p->cpu = NULL;
	return 0;
}

static __attribute__((unused)) void pair_close(struct pair *p)
{
	fi_backend_destroy(p->gpu);
	fi_backend_destroy(p->cpu);
	memset(p, 0, sizeof(*p));
}

static __attribute__((unused)) uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static __attribute__((unused)) float *rand_bf16(size_t n, float a, uint64_t *seed)
{
	float *x = malloc((n ? n : 1) * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		float u = (float)((next(seed) >> 11) * (1.0 / 9007199254740992.0)) * 2.f - 1.f;
		x[i] = fi_bf16_to_f32(fi_f32_to_bf16(u * a));
	}
	return x;
}

static __attribute__((unused)) void *put_bytes(struct fi_backend *be, const void *x, size_t bytes)
{
	void *d = NULL;
	if (be->ops->alloc(be, bytes, &d) || be->ops->upload(be, d, x, bytes)) {
		fprintf(stderr, "put_bytes: %s\n", fi_errmsg());
		abort();
	}
	return d;
}

/* The middle of t[0..n), sorted in place: a benchmark's figure of several runs. */
static __attribute__((unused)) int median_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}
static __attribute__((unused)) double median(double *t, int n)
{
	qsort(t, (size_t)n, sizeof *t, median_cmp);
	return t[n / 2];
}

/* be's device-to-device copy rate in bytes a second, read plus write: gather_rows of a 1 GiB
 * bf16 matrix (16384 rows of 32768) into another, the median of 5 after one run: the
 * bandwidth ceiling the benchmarks set their rates against. 0 if it cannot be run. */
static __attribute__((unused)) double copy_rate(struct fi_backend *be)
{
	const int R = 16384, D = 32768;
	void *a = NULL, *b = NULL, *di;
	int32_t *idx = malloc(4 * (size_t)R);
	double ts[5], rate = 0;
	for (int i = 0; i < R; i++)
		idx[i] = i;
	di = put_bytes(be, idx, 4 * (size_t)R);
	free(idx);
	if (!be->ops->alloc(be, (size_t)R * D * 2, &a) && !be->ops->alloc(be, (size_t)R * D * 2, &b)) {
		int r;
		for (r = -1; r < 5; r++) {
			double t0 = fi_now();
			if (be->ops->gather_rows(be, b, a, di, R, D) || be->ops->sync(be))
				break;
			if (r >= 0)
				ts[r] = fi_now() - t0;
		}
		if (r == 5)
			rate = 2.0 * R * D * 2 / median(ts, 5);
	}
	if (a)
		be->ops->free(be, a);
	if (b)
		be->ops->free(be, b);
	be->ops->free(be, di);
	return rate;
}

static __attribute__((unused)) void *put_act(struct fi_backend *be, const float *x, size_t n)
{
	size_t es = fi_dtype_size(be->act);
	void *h = malloc((n ? n : 1) * es), *d;
	fi_convert(h, be->act, x, FI_DT_F32, n);
	d = put_bytes(be, h, n * es);
	be->ops->sync(be); /* h is freed next; uploads from pageable memory are staged anyway */
	free(h);
	return d;
}

static __attribute__((unused)) void *poisoned(struct fi_backend *be, size_t n)
{
	size_t es = fi_dtype_size(be->act);
	void *h = malloc((n ? n : 1) * es), *d;
	memset(h, 0xff, n * es); /* NaN in f32 and bf16 */
	d = put_bytes(be, h, n * es);
	be->ops->sync(be);
	free(h);
	return d;
}

/* The first n elements of layer l's K and V caches set to zero (a slot a kernel writes in
 * the wrong place, or not at all, then differs from the CPU's). */
static __attribute__((unused)) void zero_cache(struct fi_backend *be, struct fi_kv_cache *kv,
					       int l, size_t n)
{
	float *z = calloc(n, sizeof(float));
	void *d = put_act(be, z, n);
	size_t bytes = n * fi_dtype_size(be->act);
	void *h = malloc(bytes);
	be->ops->download(be, h, d, bytes);
	be->ops->upload(be, kv->k_d[l], h, bytes);
	be->ops->upload(be, kv->v_d[l], h, bytes);
	be->ops->sync(be);
	free(h), free(z);
	be->ops->free(be, d);
}

static __attribute__((unused)) float *get_act(struct fi_backend *be, const void *x_d, size_t n)
{
	size_t es = fi_dtype_size(be->act);
	void *h = malloc((n ? n : 1) * es);
	float *f = malloc((n ? n : 1) * sizeof(float));
	if (be->ops->download(be, h, x_d, n * es)) {
		fprintf(stderr, "get_act: %s\n", fi_errmsg());
		abort();
	}
	fi_convert(f, FI_DT_F32, h, be->act, n);
	free(h);
	return f;
}

static __attribute__((unused)) void make_weight(struct fi_backend *be, const float *x, int64_t rows, int64_t cols,
		 struct fi_weight *w)
{
	size_t n = (size_t)(rows * cols);
	uint16_t *h = malloc((n ? n : 1) * 2);
	struct fi_tensor t = {.name = "w", .dtype = FI_DT_BF16, .ndim = 2, .shape = {rows, cols},
			      .data = h, .nbytes = n * 2};
	fi_convert(h, FI_DT_BF16, x, FI_DT_F32, n);
	if (be->ops->weight(be, &t, w) || be->ops->sync(be)) {
		fprintf(stderr, "make_weight: %s\n", fi_errmsg());
		abort();
	}
	free(h);
}

static __attribute__((unused)) int close_enough(const char *what, const float *got, const float *ref, size_t n, float rtol,
		 float atol, float max_rel)
{
	double num = 0, den = 0, worst = 0;
	size_t bad = 0, first = (size_t)-1;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - ref[i]);
		if (!(d <= atol + rtol * fabs(ref[i]))) { /* NaN fails */
			if (!bad)
				first = i;
			bad++;
		}
		if (d > worst || isnan(d))
			worst = d;
		num += d * d;
		den += (double)ref[i] * ref[i];
	}
	double rel = den > 0 ? sqrt(num / den) : sqrt(num);
	int ok = !bad && rel <= max_rel && !isnan(rel);
	printf("%-44s n=%-9zu rel=%.2e max_abs=%.2e %s", what, n, rel, worst, ok ? "ok" : "FAIL");
	if (bad)
		printf(" (%zu bad; first [%zu] got %g want %g)", bad, first, got[first], ref[first]);
	printf("\n");
	return ok;
}

#endif
