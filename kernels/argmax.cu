/* argmax: tok[n] = argmax over V of logits[n,V] (f32), ties to the lowest index like the CPU
 * op; NaN never wins. One block per row, 16-byte loads when aligned. */
#include "common.cuh"

static __device__ __forceinline__ void better(float &bv, int &bi, float v, int i)
{
	if (v > bv || (v == bv && i < bi)) {
		bv = v;
		bi = i;
	}
}

__global__ void argmax_kernel(int32_t *__restrict__ tok, const float *__restrict__ logits, int V)
{
	const float *row = logits + (int64_t)blockIdx.x * V;
	float bv = -INFINITY;
	int bi = 0x7fffffff;
	if (((uintptr_t)row & 15) == 0) {
		int n4 = V / 4;
		for (int i = threadIdx.x; i < n4; i += blockDim.x) {
			float4 v = ((const float4 *)row)[i];
			better(bv, bi, v.x, 4 * i);
			better(bv, bi, v.y, 4 * i + 1);
			better(bv, bi, v.z, 4 * i + 2);
			better(bv, bi, v.w, 4 * i + 3);
		}
		for (int i = 4 * n4 + threadIdx.x; i < V; i += blockDim.x)
			better(bv, bi, row[i], i);
	} else {
		for (int i = threadIdx.x; i < V; i += blockDim.x)
			better(bv, bi, row[i], i);
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);
		better(bv, bi, ov, oi);
	}
	__shared__ float sv[32];
	__shared__ int si[32];
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	if (lane == 0) {
		sv[w] = bv;
		si[w] = bi;
	}
	__syncthreads();
	if (w == 0) {
		int nw = blockDim.x >> 5;
		bv = lane < nw ? sv[lane] : -INFINITY;
		bi = lane < nw ? si[lane] : 0x7fffffff;
#pragma unroll
		for (int o = 16; o > 0; o >>= 1) {
			float ov = __shfl_xor_sync(0xffffffffu, bv, o);
			int oi = __shfl_xor_sync(0xffffffffu, bi, o);
			better(bv, bi, ov, oi);
		}
		if (lane == 0)
			tok[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
	}
}

extern "C" fi_err fi_cu_argmax(cudaStream_t st, int32_t *tok, const float *logits, int n, int V)
{
	if (n <= 0)
		return FI_OK;
	argmax_kernel<<<n, 1024, 0, st>>>(tok, logits, V);
	LAUNCH_CHECK();
	return FI_OK;
}
