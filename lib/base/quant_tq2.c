/* quant_tq2: the ternary layout of BitNet b1.58 weights (TQ2, quant.h) and the int8
 * activation quantization its products use. The kernels are in backend/cpu/cpu_tq2.c
 * and kernels/gemv_tq2.cu. */
#include "quant.h"

#include <math.h>
#include <string.h>

#define ALIGN16(x) (((x) + 15) & ~(uint64_t)15)

void fi_quant_layout_tq2(int64_t rows, int64_t cols, struct fi_qlayout *l)
{
	memset(l, 0, sizeof *l);
	l->dtype = FI_DT_TQ2;
	l->rows = rows;
	l->cols = cols;
	l->block = 128;
	l->block_bytes = 32;
	l->aq = FI_AQ_I8;
	l->off_q = FI_QHDR_BYTES;
	l->off_scale = ALIGN16(l->off_q + (uint64_t)rows * (uint64_t)(cols / 4));
	l->nbytes = l->off_scale + 4 * (uint64_t)rows;
}

/* Byte and shift of column k in a row: block k / 128, byte k % 32, bits 2 (k % 128 / 32). */
static inline uint64_t byte_of(int64_t k) { return (uint64_t)(k / 128 * 32 + k % 32); }
static inline int shift_of(int64_t k) { return (int)(k % 128 / 32 * 2); }

void fi_tq2_pack_row(const struct fi_qlayout *l, void *dst, int64_t r, const int8_t *w,
		     float scale)
{
	uint8_t *q = (uint8_t *)dst + l->off_q + (uint64_t)r * (uint64_t)(l->cols / 4);
	memset(q, 0, (size_t)(l->cols / 4));
	for (int64_t k = 0; k < l->cols; k++)
		q[byte_of(k)] |= (uint8_t)((w[k] + 1) << shift_of(k));
	memcpy((uint8_t *)dst + l->off_scale + 4 * (uint64_t)r, &scale, 4);
}

int fi_tq2_get(const struct fi_qlayout *l, const void *data, int64_t r, int64_t k)
{
	const uint8_t *q = (const uint8_t *)data + l->off_q + (uint64_t)r * (uint64_t)(l->cols / 4);
	return (q[byte_of(k)] >> shift_of(k) & 3) - 1;
}

float fi_tq2_quant_act(const float *x, int64_t K, int8_t *q, int32_t *qsum)
{
	float amax = 0, s;
	int32_t sum = 0;
	for (int64_t k = 0; k < K; k++)
		amax = fmaxf(amax, fabsf(x[k]));
	/* transformers: scale = 127 / amax.clamp(min=1e-5); round half to even */
	s = 127.0f / fmaxf(amax, 1e-5f);
	for (int64_t k = 0; k < K; k++) {
		float v = nearbyintf(x[k] * s);
		v = v > 127 ? 127 : v < -128 ? -128 : v;
		q[k] = (int8_t)v;
		sum += q[k];
	}
	*qsum = sum;
	return 1.0f / s;
}

void fi_tq2_round_act(float *x, int64_t K)
{
	float amax = 0, s;
	for (int64_t k = 0; k < K; k++)
		amax = fmaxf(amax, fabsf(x[k]));
	s = 127.0f / fmaxf(amax, 1e-5f);
	for (int64_t k = 0; k < K; k++) {
		float v = nearbyintf(x[k] * s);
		x[k] = (v > 127 ? 127 : v < -128 ? -128 : v) / s;
	}
}
