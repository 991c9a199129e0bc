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

/* out[t, n] *= ws[n] * xs[t] (bf16 [T, N]): the per-row weight and per-token activation
 * scales of a W8A8 product applied after an FP8 GEMM run with unit scales (gemm_fp8.c),
 * where cuBLASLt has no kernel that applies them itself. The GEMM's bf16 output of the raw
 * code products is rounded once more here: two bf16 roundings, as the dequantize path's. */
__global__ void scale_outer_kernel(bf16 *__restrict__ out, const float *__restrict__ ws,
				   const float *__restrict__ xs, int T, int N)
{
	int64_t n = (int64_t)T * N;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int t = (int)(i / N), c = (int)(i - (int64_t)t * N);
		out[i] = __float2bfloat16(__bfloat162float(out[i]) * (ws[c] * xs[t]));
	}
}

/* The same, 8 columns a thread in 16-byte accesses of out, one token a grid row (N % 8 == 0,
 * out 16-byte aligned): the scalar loop above, with a 64-bit division an element, ran at
 * ~0.9 TB/s, a fifth of an 8B FP8 prompt step. The weights' scales in two 16-byte loads where
 * they are aligned (VW), else as floats: eight scalar loads a thread held it at ~0.76 TB/s at
 * 512 rows (ncu, H100). The products are the same. */
template <bool VW>
__global__ void scale_outer8_kernel(bf16 *__restrict__ out, const float *__restrict__ ws,
				    const float *__restrict__ xs, int N8)
{
	const int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= N8)
		return;
	const float s = xs[blockIdx.y];
	uint4 *o = (uint4 *)(out + ((int64_t)blockIdx.y * N8 + i) * 8);
	float w[8];
	f32x8_load<VW>(ws, (int64_t)i, w);
	uint4 u = *o;
	bf16 *v = (bf16 *)&u;
#pragma unroll
	for (int k = 0; k < 8; k++)
		v[k] = __float2bfloat16(__bfloat162float(v[k]) * (w[k] * s));
	*o = u;
}

extern "C" fi_err fi_cu_scale_outer(cudaStream_t st, void *out, const float *ws, const float *xs,
				    int T, int N)
{
	int64_t blocks = ((int64_t)T * N + 255) / 256;
	if (T <= 0 || N <= 0)
		return FI_OK;
	if (N % 8 == 0 && T <= 65535 && fi_aligned16(out)) {
		const int N8 = N / 8;
		const dim3 grid((N8 + 255) / 256, T);
		if (fi_aligned16(ws))
			scale_outer8_kernel<true><<<grid, 256, 0, st>>>((bf16 *)out, ws, xs, N8);
		else
			scale_outer8_kernel<false><<<grid, 256, 0, st>>>((bf16 *)out, ws, xs, N8);
		LAUNCH_CHECK();
		return FI_OK;
	}
	scale_outer_kernel<<<(int)(blocks < 8192 ? blocks : 8192), 256, 0, st>>>((bf16 *)out, ws,
										   xs, T, N);
	LAUNCH_CHECK();
	return FI_OK;
}
