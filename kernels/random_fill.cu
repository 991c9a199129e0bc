/* random_fill: the values of random weights (backend.h, lib/backend/random.c) drawn on the
 * device, rounded to bf16: the same integer steps as fi_random_weight, so the CPU holds the
 * f32 values of which these are the rounding. */
#include "common.cuh"

static __device__ __forceinline__ uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

__global__ void random_fill_kernel(bf16 *__restrict__ out, uint64_t hash, int64_t n, float amp,
				   float base)
{
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		float u = (float)(int32_t)(splitmix64(hash + (uint64_t)i) >> 40) / 8388608.0f - 1.0f;
		out[i] = __float2bfloat16(base + amp * u);
	}
}

extern "C" fi_err fi_cu_random_fill(cudaStream_t st, void *out, uint64_t hash, int64_t n,
				    int64_t cols, int ndim)
{
	/* fi_random_weight: 1 +- 0.1 for 1-D tensors, +-sqrt(3 / cols) for matrices */
	float amp = ndim < 2 ? 0.1f : sqrtf(3.0f / (float)(cols > 0 ? cols : 1));
	float base = ndim < 2 ? 1.0f : 0.0f;
	int64_t blocks = (n + 255) / 256;
	if (n <= 0)
		return FI_OK;
	random_fill_kernel<<<(int)(blocks < 65536 ? blocks : 65536), 256, 0, st>>>((bf16 *)out, hash,
										   n, amp, base);
	LAUNCH_CHECK();
	return FI_OK;
}
