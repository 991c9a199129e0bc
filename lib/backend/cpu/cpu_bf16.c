/* cpu_bf16: a weight kept in bf16 on the CPU (backend.h keep_bf16): the tied embedding and
 * head of a BitNet model, which at f32 would be most of what a decode step reads (2B-4T:
 * 1.3 GB of f32 head against 0.52 GB of ternary layers). Rows widen to f32 as they are
 * read (a bf16 is the top half of an f32, so the values are exactly the stored ones) and
 * products accumulate in f32. */
#include "cpu.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

fi_err fi_cpu_bf16_weight(struct fi_backend *be, const struct fi_tensor *t, int64_t rows,
			  int64_t cols, struct fi_weight *w)
{
	size_t n = (size_t)rows * (size_t)cols;
	uint16_t *p;
	fi_err e;
	if ((e = be->ops->alloc(be, n * 2, &w->p)))
		return e;
	p = w->p;
	if (t->data) {
		memcpy(p, t->data, n * 2);
	} else { /* random weights: the f32 values every backend draws, rounded to bf16 */
		float *f = malloc((size_t)cols * sizeof *f);
		uint64_t h = fi_random_name_hash(be->random_seed, t->name);
		if (!f) {
			be->ops->free(be, w->p);
			w->p = NULL;
			return fi_fail(FI_ENOMEM, "tensor '%s'", t->name);
		}
		for (int64_t r = 0; r < rows; r++) {
			for (int64_t c = 0; c < cols; c++)
				f[c] = fi_random_weight(h, (uint64_t)(r * cols + c), cols, 2);
			for (int64_t c = 0; c < cols; c++)
				p[r * cols + c] = fi_f32_to_bf16(f[c]);
		}
		free(f);
	}
	w->dtype = FI_DT_BF16;
	w->rows = rows;
	w->cols = cols;
	return FI_OK;
}

void fi_cpu_bf16_row(const struct fi_weight *w, int64_t r, float *out)
{
	const uint16_t *p = (const uint16_t *)w->p + (size_t)r * (size_t)w->cols;
	for (int64_t c = 0; c < w->cols; c++) {
		uint32_t u = (uint32_t)p[c] << 16;
		memcpy(&out[c], &u, 4);
	}
}

static float dot_scalar(const uint16_t *w, const float *x, int64_t K)
{
	float s = 0;
	for (int64_t k = 0; k < K; k++) {
		uint32_t u = (uint32_t)w[k] << 16;
		float f;
		memcpy(&f, &u, 4);
		s += f * x[k];
	}
	return s;
}

__attribute__((target("avx512f"))) static float dot_avx512(const uint16_t *w, const float *x,
							    int64_t K)
{
	__m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
	int64_t k = 0;
	for (; k + 32 <= K; k += 32) {
		__m512i u0 = _mm512_slli_epi32(
			_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k))), 16);
		__m512i u1 = _mm512_slli_epi32(
			_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k + 16))), 16);
		a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(u0), _mm512_loadu_ps(x + k), a0);
		a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(u1), _mm512_loadu_ps(x + k + 16), a1);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)) + dot_scalar(w + k, x + k, K - k);
}

struct bf16_job {
	const struct fi_weight *w;
	const float *in;
	float *out;
	int T, avx512;
};

static void bf16_rows(void *ctx, int64_t b, int64_t e)
{
	const struct bf16_job *j = ctx;
	const int64_t K = j->w->cols, N = j->w->rows;
	for (int64_t n = b; n < e; n++) {
		const uint16_t *row = (const uint16_t *)j->w->p + (size_t)n * (size_t)K;
		for (int t = 0; t < j->T; t++) {
			const float *x = j->in + (size_t)t * K;
			j->out[(size_t)t * N + n] = j->avx512 ? dot_avx512(row, x, K)
							      : dot_scalar(row, x, K);
		}
	}
}

fi_err fi_cpu_bf16_matmul(struct fi_backend *be, float *out, const float *in,
			  const struct fi_weight *w, int T)
{
	struct bf16_job j = {w, in, out, T, 0};
	__builtin_cpu_init();
	j.avx512 = __builtin_cpu_supports("avx512f");
	fi_cpu_parallel_for(be, w->rows, 64, bf16_rows, &j);
	return FI_OK;
}
