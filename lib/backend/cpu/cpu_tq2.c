/* cpu_tq2: BitNet b1.58 products on the CPU: out[T,N] = in[T,K] @ w[N,K]^T with w ternary
 * (TQ2, base/quant.h) and in quantized to int8 per token by absmax (FI_AQ_I8).
 *
 * Each token's input becomes q[K] (int8), 1/s and sum(q) once; a row's product is then
 *   sum_k (code_k - 1) q_k = sum_k code_k q_k - sum(q),   out = that x (1/s) x scale[row]
 * with code_k = w_k + 1 in {0, 1, 2} as stored, so the inner loop multiplies unsigned codes
 * by signed int8 values: maddubs on AVX2, dpbusd (VNNI) on AVX-512, as bitnet.cpp's I2_S
 * kernel does. The integer sums are exact, so every path gives the same int32 as the scalar
 * reference; the paths are chosen once at run time from the CPU's features. Rows are split
 * over the thread pool; a decode step reads 2 bits per weight. */
#include "cpu.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "base/quant.h"

/* ---- dot products of one row's codes with int8 activations: sum code_k q_k ---- */

int32_t fi_cpu_tq2_dot_scalar(const uint8_t *w, const int8_t *x, int64_t K)
{
	int32_t acc = 0;
	for (int64_t b = 0; b < K / 128; b++, w += 32, x += 128)
		for (int j = 0; j < 32; j++)
			for (int i = 0; i < 4; i++)
				acc += (w[j] >> (2 * i) & 3) * x[32 * i + j];
	return acc;
}

__attribute__((target("avx2"))) static inline __m256i block_avx2(const uint8_t *w,
								  const int8_t *x)
{
	const __m256i m3 = _mm256_set1_epi8(3);
	__m256i p = _mm256_loadu_si256((const __m256i *)w), s;
	/* codes <= 2 and |q| <= 128: each 16-bit pair sum is at most 512, four of them 2048 */
	s = _mm256_maddubs_epi16(_mm256_and_si256(p, m3), _mm256_loadu_si256((const __m256i *)x));
	s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(p, 2), m3),
						   _mm256_loadu_si256((const __m256i *)(x + 32))));
	s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(p, 4), m3),
						   _mm256_loadu_si256((const __m256i *)(x + 64))));
	s = _mm256_add_epi16(s, _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(p, 6), m3),
						   _mm256_loadu_si256((const __m256i *)(x + 96))));
	return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
}

__attribute__((target("avx2"))) int32_t fi_cpu_tq2_dot_avx2(const uint8_t *w, const int8_t *x,
							      int64_t K)
{
	__m256i acc = _mm256_setzero_si256();
	__m128i h;
	for (int64_t b = 0; b < K / 128; b++)
		acc = _mm256_add_epi32(acc, block_avx2(w + 32 * b, x + 128 * b));
	h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
	h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
	h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
	return _mm_cvtsi128_si32(h);
}

/* Two blocks a step: the 64 bytes of codes of blocks b and b + 1, and for shift i the
 * activations of both blocks' 32-column group i side by side. */
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) int32_t
fi_cpu_tq2_dot_avx512(const uint8_t *w, const int8_t *x, int64_t K)
{
	const __m512i m3 = _mm512_set1_epi8(3);
	__m512i acc = _mm512_setzero_si512();
	int64_t nb = K / 128, b = 0;
	int32_t tail = 0;
	for (; b + 2 <= nb; b += 2) {
		const int8_t *x0 = x + 128 * b, *x1 = x0 + 128;
		__m512i p = _mm512_loadu_si512(w + 32 * b);
		for (int i = 0; i < 4; i++) {
			__m512i xi = _mm512_inserti64x4(
				_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(x0 + 32 * i))),
				_mm256_loadu_si256((const __m256i *)(x1 + 32 * i)), 1);
			acc = _mm512_dpbusd_epi32(acc, _mm512_and_si512(_mm512_srli_epi16(p, 2 * i), m3),
						  xi);
		}
	}
	if (b < nb)
		tail = fi_cpu_tq2_dot_avx2(w + 32 * b, x + 128 * b, 128);
	return _mm512_reduce_add_epi32(acc) + tail;
}

typedef int32_t (*dot_fn)(const uint8_t *, const int8_t *, int64_t);

static dot_fn pick(const char **name)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	    __builtin_cpu_supports("avx512vnni")) {
		*name = "avx512-vnni";
		return fi_cpu_tq2_dot_avx512;
	}
	if (__builtin_cpu_supports("avx2")) {
		*name = "avx2";
		return fi_cpu_tq2_dot_avx2;
	}
	*name = "scalar";
	return fi_cpu_tq2_dot_scalar;
}

const char *fi_cpu_tq2_isa(void)
{
	const char *n;
	pick(&n);
	return n;
}

int fi_cpu_tq2_has(const char *isa)
{
	__builtin_cpu_init();
	if (!strcmp(isa, "avx2"))
		return __builtin_cpu_supports("avx2");
	if (!strcmp(isa, "avx512-vnni"))
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vnni");
	return !strcmp(isa, "scalar");
}

/* ---- the weight and the product ---- */

fi_err fi_cpu_tq2_weight(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *w)
{
	struct fi_qlayout l;
	fi_err e;
	if ((e = fi_quant_layout(t->dtype, t->shape[0], t->shape[1], t->data, t->nbytes, &l)))
		return fi_fail_ctx(e, "tensor '%s'", t->name ? t->name : "?");
	if ((e = be->ops->alloc(be, (size_t)l.nbytes, &w->p)))
		return e;
	memcpy(w->p, t->data, (size_t)l.nbytes);
	w->dtype = FI_DT_TQ2;
	w->rows = l.rows;
	w->cols = l.cols;
	w->aq = FI_AQ_I8;
	w->q = l;
	return FI_OK;
}

struct tq2_job {
	const struct fi_weight *w;
	const int8_t *q;     /* [T, K] */
	const float *inv;    /* [T] */
	const int32_t *qsum; /* [T] */
	float *out;          /* [T, N] */
	int T;
	dot_fn dot;
};

static void tq2_rows(void *ctx, int64_t b, int64_t e)
{
	const struct tq2_job *j = ctx;
	const struct fi_qlayout *l = &j->w->q;
	const uint8_t *base = j->w->p;
	const int64_t K = l->cols, N = l->rows, rb = K / 4;
	for (int64_t n = b; n < e; n++) {
		const uint8_t *row = base + l->off_q + (uint64_t)n * (uint64_t)rb;
		float s;
		memcpy(&s, base + l->off_scale + 4 * (uint64_t)n, 4);
		for (int t = 0; t < j->T; t++) {
			int32_t d = j->dot(row, j->q + (size_t)t * K, K) - j->qsum[t];
			j->out[(size_t)t * N + n] = (float)d * j->inv[t] * s;
		}
	}
}

fi_err fi_cpu_tq2_matmul(struct fi_backend *be, float *out, const float *in,
			 const struct fi_weight *w, int T)
{
	const int64_t K = w->cols;
	const char *isa;
	int8_t *q = malloc((size_t)T * (size_t)K + (size_t)T * 8);
	struct tq2_job j;
	float *inv;
	int32_t *qsum;
	if (!q)
		return fi_fail(FI_ENOMEM, "matmul: %d x %lld int8 activations", T, (long long)K);
	inv = (float *)(q + (size_t)T * (size_t)K);
	qsum = (int32_t *)(inv + T);
	if ((size_t)T * (size_t)K % 4) { /* keep inv and qsum aligned */
		free(q);
		return fi_fail(FI_EINVAL, "matmul: ternary input width %lld", (long long)K);
	}
	for (int t = 0; t < T; t++)
		inv[t] = fi_tq2_quant_act(in + (size_t)t * K, K, q + (size_t)t * K, &qsum[t]);
	j = (struct tq2_job){w, q, inv, qsum, out, T, pick(&isa)};
	fi_cpu_parallel_for(be, w->rows, 16, tq2_rows, &j);
	free(q);
	return FI_OK;
}
