/* gemv: out[T,N] = x[T,K] @ W[N,K]^T (+ bias) for T <= 4 tokens (decode), bf16 weights,
 * f32 accumulation, bf16 or f32 out.
 *
 * Decode is a pass over the weights: each warp owns rows of W, streams them with 16-byte
 * loads (4 in flight per lane), and keeps the T dot products of each row in registers, so
 * every weight byte is read once for all T tokens; x is small and stays in L1/L2. One warp
 * reduction per (row, token). A plain launch also costs the host less than a cuBLASLt call,
 * which matters when a decode step is hundreds of small launches. */
#include "common.cuh"

#define GEMV_WARPS 8
#define GEMV_UNROLL 4

/* A 16-byte weight load through the read-only path. */
static __device__ __forceinline__ bf16x8 ldw(const bf16x8 *p)
{
	uint4 u = __ldg((const uint4 *)p);
	return *(bf16x8 *)&u;
}

template <int T, bool F32OUT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(void *__restrict__ out, const bf16 *__restrict__ x, const bf16 *__restrict__ w,
	    const bf16 *__restrict__ bias, int N, int K)
{
	const int lane = threadIdx.x & 31;
	const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
	if (n >= N)
		return;
	const bf16x8 *wr = (const bf16x8 *)(w + (int64_t)n * K);
	const int k8 = K / 8;
	float acc[T];
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = 0.f;
	int i = lane;
	for (; i + 32 * (GEMV_UNROLL - 1) < k8; i += 32 * GEMV_UNROLL) {
		bf16x8 wv[GEMV_UNROLL];
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL; u++)
			wv[u] = ldw(&wr[i + 32 * u]);
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL; u++) {
			float wf[8];
			bf16x8_to_f32(wv[u], wf);
#pragma unroll
			for (int t = 0; t < T; t++) {
				float xf[8];
				bf16x8_to_f32(((const bf16x8 *)(x + (int64_t)t * K))[i + 32 * u], xf);
#pragma unroll
				for (int j = 0; j < 8; j++)
					acc[t] += wf[j] * xf[j];
			}
		}
	}
	for (; i < k8; i += 32) {
		float wf[8];
		bf16x8_to_f32(ldw(&wr[i]), wf);
#pragma unroll
		for (int t = 0; t < T; t++) {
			float xf[8];
			bf16x8_to_f32(((const bf16x8 *)(x + (int64_t)t * K))[i], xf);
#pragma unroll
			for (int j = 0; j < 8; j++)
				acc[t] += wf[j] * xf[j];
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = warp_sum(acc[t]);
	if (lane == 0) {
		float b = bias ? __bfloat162float(bias[n]) : 0.f;
#pragma unroll
		for (int t = 0; t < T; t++) {
			if (F32OUT)
				((float *)out)[(int64_t)t * N + n] = acc[t] + b;
			else
				((bf16 *)out)[(int64_t)t * N + n] = __float2bfloat16(acc[t] + b);
		}
	}
}

template <int T>
static void launch(cudaStream_t st, void *out, int f32, const void *x, const void *w,
		   const void *bias, int N, int K)
{
	dim3 grid((N + GEMV_WARPS - 1) / GEMV_WARPS);
	if (f32)
		gemv_kernel<T, true><<<grid, GEMV_WARPS * 32, 0, st>>>(
			out, (const bf16 *)x, (const bf16 *)w, (const bf16 *)bias, N, K);
	else
		gemv_kernel<T, false><<<grid, GEMV_WARPS * 32, 0, st>>>(
			out, (const bf16 *)x, (const bf16 *)w, (const bf16 *)bias, N, K);
}

extern "C" fi_err fi_cu_gemv(cudaStream_t st, void *out, int out_f32, const void *x,
			     const void *w, const void *bias, int T, int N, int K)
{
	if (T < 1 || T > 4 || K % 8 || !fi_aligned16(x) || !fi_aligned16(w))
		return FI_EUNSUPPORTED;
	switch (T) {
	case 1: launch<1>(st, out, out_f32, x, w, bias, N, K); break;
	case 2: launch<2>(st, out, out_f32, x, w, bias, N, K); break;
	case 3: launch<3>(st, out, out_f32, x, w, bias, N, K); break;
	default: launch<4>(st, out, out_f32, x, w, bias, N, K); break;
	}
	LAUNCH_CHECK();
	return FI_OK;
}
