/* softcap: x = cap tanh(x / cap) on f32 logits in place (Gemma 2's final soft-capping, before
 * the device argmax and sample ops). Twin: fi_cpu_softcap. */
#include "common.cuh"

__global__ void softcap_kernel(float *__restrict__ x, int64_t n, float cap)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		x[i] = tanhf(x[i] / cap) * cap;
}

extern "C" fi_err fi_cu_softcap(cudaStream_t st, float *x, int64_t n, float cap)
{
	int64_t blocks = (n + 255) / 256;
	if (n <= 0)
		return FI_OK;
	softcap_kernel<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(x, n, cap);
	LAUNCH_CHECK();
	return FI_OK;
}
