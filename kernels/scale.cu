/* scale: x[n] *= s in bf16 (Gemma's embeddings times sqrt(hidden), the product rounded to
 * bf16 as the reference's bf16 tensor times an f32 scalar). Twin: fi_cpu_scale. Also
 * x[n] += y[n] (a residual add outside a fused product). */
#include "common.cuh"

__global__ void scale_kernel(bf16 *__restrict__ x, int64_t n, float s)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		x[i] = __float2bfloat16(__bfloat162float(x[i]) * s);
}

extern "C" fi_err fi_cu_scale(cudaStream_t st, void *x, int64_t n, float s)
{
	int64_t blocks = (n + 255) / 256;
	if (n <= 0)
		return FI_OK;
	scale_kernel<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>((bf16 *)x, n, s);
	LAUNCH_CHECK();
	return FI_OK;
}

__global__ void add_kernel(bf16 *__restrict__ x, const bf16 *__restrict__ y, int64_t n)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		x[i] = __float2bfloat16(__bfloat162float(x[i]) + __bfloat162float(y[i]));
}

extern "C" fi_err fi_cu_add(cudaStream_t st, void *x, const void *y, int64_t n)
{
	int64_t blocks = (n + 255) / 256;
	if (n <= 0)
		return FI_OK;
	add_kernel<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>((bf16 *)x, (const bf16 *)y,
									n);
	LAUNCH_CHECK();
	return FI_OK;
}
