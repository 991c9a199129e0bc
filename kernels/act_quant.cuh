/* act_quant.cuh: the two steps of the W8A8 input rounding of base/quant.h, for every kernel
 * that makes the codes (kernels/act_quant.cu, and gemv_f8h.cu, which rounds one-token inputs
 * inside its blocks): they must give the same codes. */
#ifndef FI_KERNELS_ACT_QUANT_CUH
#define FI_KERNELS_ACT_QUANT_CUH

#include <cuda_fp8.h>
#include <stdint.h>

#include "common.cuh"

/* The scale of a token (or of its 128-column group) whose largest |x| is amax. */
static __device__ __forceinline__ float aq_scale(float amax)
{
	return amax > 0.f ? amax / 448.f : 1.f;
}

/* e4m3(v / s), round-to-nearest-even and saturating (the hardware conversion, as
 * fi_f32_to_e4m3). */
static __device__ __forceinline__ uint8_t aq_code(float v, float s)
{
	return (uint8_t)__nv_cvt_float_to_fp8(v / s, __NV_SATFINITE, __NV_E4M3);
}

/* max(m, |b[k]|) over 8 consecutive bf16 values: a token's amax as the quantizers take it. */
static __device__ __forceinline__ float aq_absmax8(const bf16 *b, float m)
{
#pragma unroll
	for (int k = 0; k < 8; k++)
		m = fmaxf(m, fabsf(__bfloat162float(b[k])));
	return m;
}

/* The codes of 8 consecutive bf16 values, bytes in column order (one 8-byte store). */
static __device__ __forceinline__ uint2 aq_code8(const bf16 *b, float s)
{
	uint32_t lo = 0, hi = 0;
#pragma unroll
	for (int k = 0; k < 4; k++) {
		lo |= (uint32_t)aq_code(__bfloat162float(b[k]), s) << (8 * k);
		hi |= (uint32_t)aq_code(__bfloat162float(b[k + 4]), s) << (8 * k);
	}
	return make_uint2(lo, hi);
}

#endif
