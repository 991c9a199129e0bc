/* qchunk: the values of one run of 32 columns ("chunk") of a row of a quantized weight
 * (struct fi_cu_qw), as f32, with the same operations as base/quant.c's dequantization so
 * that the GPU sees the CPU's weights. Every chunk starts 16-byte aligned in the device
 * layouts of lib/backend/cuda/qweight.c, so a chunk is one or two 16-byte loads.
 *
 * FP8: the e4m3 values times the 128x128 block scale (FI_Q8_B128); a per-row scale
 * (FI_Q8_ROW) is left for the caller to apply once per row. */
#ifndef FI_KERNELS_QCHUNK_CUH
#define FI_KERNELS_QCHUNK_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common.cuh"

static __device__ __forceinline__ uint4 ld16(const uint8_t *p)
{
	return ldw16(p);
}

static __device__ __forceinline__ float h2f(const void *p, int64_t i)
{
	return __half2float(((const __half *)p)[i]);
}

static __device__ __forceinline__ float e4m3f(uint8_t b)
{
	__nv_fp8_e4m3 v;
	v.__x = b;
	return (float)v;
}

/* ggml's get_scale_min_k4 */
static __device__ __forceinline__ void scale_min_k4(int j, const uint8_t *q, int &d, int &m)
{
	if (j < 4) {
		d = q[j] & 63;
		m = q[j + 4] & 63;
	} else {
		d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
		m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
	}
}

template <int TYPE>
static __device__ __forceinline__ void qchunk(const fi_cu_qw &w, int64_t n, int c, float *v)
{
	const uint8_t *row = w.q + n * w.row_bytes;
	if (TYPE == FI_CQ_INT4) {
		uint4 u = ld16(row + (int64_t)c * 16);
		const uint8_t *b = (const uint8_t *)&u;
		int64_t g = n * (w.cols / w.group) + (int64_t)c * 32 / w.group;
		float s = h2f(w.scale, g);
		int z = w.zero[g];
#pragma unroll
		for (int i = 0; i < 16; i++) {
			v[2 * i] = (float)((b[i] & 0xF) - z) * s;
			v[2 * i + 1] = (float)((b[i] >> 4) - z) * s;
		}
	} else if (TYPE == FI_CQ_I8) {
		uint4 u[2] = {ld16(row + (int64_t)c * 32), ld16(row + (int64_t)c * 32 + 16)};
		const int8_t *b = (const int8_t *)u;
		float d = h2f(w.scale, n * (w.cols / 32) + c);
#pragma unroll
		for (int i = 0; i < 32; i++)
			v[i] = d * (float)b[i];
	} else if (TYPE == FI_CQ_FP8) {
		uint4 u[2] = {ld16(row + (int64_t)c * 32), ld16(row + (int64_t)c * 32 + 16)};
		const uint8_t *b = (const uint8_t *)u;
		float s = 1.f;
		if (w.kind == FI_Q8_B128)
			s = ((const float *)w.scale)[(n / 128) * ((w.cols + 127) / 128) + c / 4];
#pragma unroll
		for (int i = 0; i < 32; i++)
			v[i] = e4m3f(b[i]) * s;
	} else if (TYPE == FI_CQ_Q4K || TYPE == FI_CQ_Q5K) {
		const int bb = TYPE == FI_CQ_Q4K ? 144 : 176;
		const uint8_t *blk = row + (int64_t)(c / 8) * bb;
		int sb = c % 8, sc, mn;
		float d = __half2float(*(const __half *)blk), dmin = __half2float(*(const __half *)(blk + 2));
		scale_min_k4(sb, blk + 4, sc, mn);
		float d1 = d * sc, m1 = dmin * mn;
		const uint8_t *qs = blk + (TYPE == FI_CQ_Q4K ? 16 : 48) + (sb / 2) * 32;
		uint4 u[2] = {ld16(qs), ld16(qs + 16)};
		const uint8_t *b = (const uint8_t *)u;
		if (TYPE == FI_CQ_Q4K) {
#pragma unroll
			for (int i = 0; i < 32; i++)
				v[i] = d1 * (sb & 1 ? b[i] >> 4 : b[i] & 0xF) - m1;
		} else {
			uint4 h[2] = {ld16(blk + 16), ld16(blk + 32)};
			const uint8_t *qh = (const uint8_t *)h;
#pragma unroll
			for (int i = 0; i < 32; i++)
				v[i] = d1 * ((sb & 1 ? b[i] >> 4 : b[i] & 0xF) + ((qh[i] >> sb) & 1 ? 16 : 0)) - m1;
		}
	} else { /* FI_CQ_Q6K: 208-byte blocks (ql[128] qh[64] sc[16]), d apart */
		const uint8_t *blk = row + (int64_t)(c / 8) * 208;
		int k = c % 8, half = k / 4, r = k % 4; /* values half*128 + r*32 + l */
		const uint8_t *ql = blk + half * 64 + (r & 1) * 32, *qh = blk + 128 + half * 32;
		const int8_t *sc = (const int8_t *)(blk + 192) + half * 8;
		float d = h2f(w.scale, n * (w.cols / 256) + c / 8);
		uint4 a[2] = {ld16(ql), ld16(ql + 16)}, h[2] = {ld16(qh), ld16(qh + 16)};
		const uint8_t *lb = (const uint8_t *)a, *hb = (const uint8_t *)h;
		float s0 = d * sc[2 * r], s1 = d * sc[2 * r + 1];
#pragma unroll
		for (int i = 0; i < 32; i++) {
			int q = ((lb[i] >> (4 * (r >> 1))) & 0xF) | (((hb[i] >> (2 * r)) & 3) << 4);
			v[i] = (i < 16 ? s0 : s1) * (float)(q - 32);
		}
	}
}

#endif
