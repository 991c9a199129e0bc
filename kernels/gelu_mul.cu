/* gelu_mul: out[T,F] = gelu_tanh(gate) * up (GeGLU, Gemma), rounded as the bf16 reference
 * computes it: the GELU to bf16 first, then the product. Twin: fi_cpu_gelu_mul. */
#include "common.cuh"

__global__ void gelu_mul_vec(bf16x8 *__restrict__ out, const bf16x8 *__restrict__ gate,
			     const bf16x8 *__restrict__ up, int64_t n8)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float g[8], u[8];
		bf16x8_to_f32(gate[i], g);
		bf16x8_to_f32(up[i], u);
#pragma unroll
		for (int j = 0; j < 8; j++)
			g[j] = gelu_mul1(g[j], u[j]);
		out[i] = f32_to_bf16x8(g);
	}
}

__global__ void gelu_mul_scalar(bf16 *__restrict__ out, const bf16 *__restrict__ gate,
				const bf16 *__restrict__ up, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		out[i] = __float2bfloat16(gelu_mul1(__bfloat162float(gate[i]), __bfloat162float(up[i])));
}

extern "C" fi_err fi_cu_gelu_mul(cudaStream_t st, void *out, const void *gate, const void *up,
				 int T, int F)
{
	int64_t n = (int64_t)T * F;
	if (n <= 0)
		return FI_OK;
	if (n % 8 == 0 && fi_aligned16(out) && fi_aligned16(gate) && fi_aligned16(up)) {
		int64_t n8 = n / 8, blocks = (n8 + 255) / 256;
		gelu_mul_vec<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16x8 *)out, (const bf16x8 *)gate, (const bf16x8 *)up, n8);
	} else {
		int64_t blocks = (n + 255) / 256;
		gelu_mul_scalar<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
			(bf16 *)out, (const bf16 *)gate, (const bf16 *)up, n);
	}
	LAUNCH_CHECK();
	return FI_OK;
}
