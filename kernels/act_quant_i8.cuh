/* act_quant_i8.cuh: BitNet's per-token int8 quantization (FI_AQ_I8, base/quant.h) of one row
 * by a whole block, shared by act_quant_i8.cu and the fused decode product of gemv_tq2.cu:
 * s = 127 / max(amax, 1e-5), q = clamp(rint(x s), -128, 127). Twin: fi_tq2_quant_act. */
#ifndef FI_KERNELS_ACT_QUANT_I8_CUH
#define FI_KERNELS_ACT_QUANT_I8_CUH

#include "common.cuh"

#define AQ_THREADS 256
#define AQ_VECS 4 /* 8-element vectors a thread holds: K up to 8192 for 256 threads */

static __device__ __forceinline__ float q8(float v, float s)
{
	return fminf(fmaxf(rintf(v * s), -128.f), 127.f);
}

/* Row x[K] (bf16, 16-byte aligned, K % 8 == 0) into registers: vector j of a thread is the 8
 * values at 8 (threadIdx.x + j blockDim.x), zeros past the row (nv = K / 8 vectors). */
static __device__ __forceinline__ void load_row(const bf16 *__restrict__ x, int nv,
						float (&v)[AQ_VECS][8])
{
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++) {
		const int i = threadIdx.x + j * blockDim.x;
		if (i < nv)
			bf16x8_to_f32(((const bf16x8 *)x)[i], v[j]);
		else
#pragma unroll
			for (int e = 0; e < 8; e++)
				v[j][e] = 0.f;
	}
}

/* The row held in v by the whole block (load_row's layout, K <= AQ_VECS x 8 x blockDim.x) as
 * codes to dst[K] (8-byte aligned; global or shared) and sum(q) to *qsum; returns s. Every
 * thread of the block calls it; sh holds 32 floats. */
static __device__ __forceinline__ float quant_regs(const float (&v)[AQ_VECS][8], int nv,
						   int8_t *__restrict__ dst, float *sh, float *qsum)
{
	float m = 0.f, sum = 0.f;
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++)
#pragma unroll
		for (int e = 0; e < 8; e++)
			m = fmaxf(m, fabsf(v[j][e]));
	const float s = 127.f / fmaxf(block_max(m, sh), 1e-5f);
	int2 *ct = (int2 *)dst;
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++) {
		const int i = threadIdx.x + j * blockDim.x;
		if (i >= nv)
			continue;
		uint32_t w[2] = {0, 0};
#pragma unroll
		for (int e = 0; e < 8; e++) {
			float q = q8(v[j][e], s);
			sum += q;
			w[e >> 2] |= ((uint32_t)(int)q & 0xffu) << (8 * (e & 3));
		}
		ct[i] = make_int2((int)w[0], (int)w[1]);
	}
	*qsum = block_sum(sum, sh); /* its first barrier orders the reads of sh above */
	return s;
}

/* Row x[K] read once, 16 bytes a load, and quantized from registers (the two above). */
static __device__ __forceinline__ float quant_row_i8(const bf16 *__restrict__ x, int K,
						     int8_t *__restrict__ dst, float *sh, float *qsum)
{
	float v[AQ_VECS][8];
	load_row(x, K / 8, v);
	return quant_regs(v, K / 8, dst, sh, qsum);
}

#endif
