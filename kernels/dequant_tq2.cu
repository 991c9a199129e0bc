/* dequant_tq2: a TQ2 weight (base/quant.h) to bf16 [N,K] for the prompt path (dequantize +
 * cuBLAS GEMM over inputs rounded by act_round_i8). (code - 1) x scale[n] is exact in bf16
 * only up to the scale's rounding, well inside the int8 inputs' own error. One thread per
 * byte of codes (4 weights). Twin: fi_quant_dequant_rows. */
#include "common.cuh"

__global__ void dequant_tq2_k(bf16 *__restrict__ out, const uint8_t *__restrict__ q,
			      const float *__restrict__ scale, int64_t N, int K)
{
	const int64_t rb = K / 4;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * rb;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int64_t n = i / rb, j = i % rb, b = j / 32, c = j % 32;
		uint8_t v = q[i];
		float s = scale[n];
#pragma unroll
		for (int f = 0; f < 4; f++)
			out[n * K + 128 * b + 32 * f + c] = __float2bfloat16((float)((v >> (2 * f) & 3) - 1) * s);
	}
}

extern "C" fi_err fi_cu_dequant_tq2(cudaStream_t st, void *out, const void *q, const float *scale,
				    int64_t N, int K)
{
	int64_t n = N * (K / 4), blocks = (n + 255) / 256;
	if (n <= 0)
		return FI_OK;
	dequant_tq2_k<<<(int)(blocks < 8192 ? blocks : 8192), 256, 0, st>>>(
		(bf16 *)out, (const uint8_t *)q, scale, N, K);
	LAUNCH_CHECK();
	return FI_OK;
}
