/* relu2_mul: out[T,F] = relu(gate)^2 * up (BitNet's squared-ReLU GLU), the activation
 * rounded to bf16 before the product as the bf16 reference computes it.
 * Twin: fi_cpu_relu2_mul. */
#include "common.cuh"

__global__ void relu2_mul_k(bf16 *__restrict__ out, const bf16 *__restrict__ gate,
			    const bf16 *__restrict__ up, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float g = fmaxf(__bfloat162float(gate[i]), 0.f);
		out[i] = __float2bfloat16(bf16_round(g * g) * __bfloat162float(up[i]));
	}
}

extern "C" fi_err fi_cu_relu2_mul(cudaStream_t st, void *out, const void *gate, const void *up,
				  int T, int F)
{
	int64_t n = (int64_t)T * F, blocks = (n + 255) / 256;
	if (n <= 0)
		return FI_OK;
	relu2_mul_k<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(
		(bf16 *)out, (const bf16 *)gate, (const bf16 *)up, n);
	LAUNCH_CHECK();
	return FI_OK;
}
