/* act_quant_i8: BitNet's input quantization (FI_AQ_I8, base/quant.h) of x[T,K] (bf16): per
 * token s = 127 / max(amax, 1e-5), q = clamp(rint(x s), -128, 127), written as int8 codes
 * [T,K] with inv[T] = 1/s and qsum[T] = sum(q) (the ternary kernels store codes w + 1); or
 * (round) q / s back in bf16 for the dequantize + GEMM path. One block per token.
 * Twin: fi_tq2_quant_act / fi_tq2_round_act. */
#include "common.cuh"

/* The token's amax reaches every thread: each warp folds the per-warp maxima itself (indexed
 * by lane), so that no warp scales by a partial maximum. */
static __device__ float token_scale(const bf16 *x, int K, float *sh)
{
	const int lane = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
	float m = 0.f;
	for (int k = threadIdx.x; k < K; k += blockDim.x)
		m = fmaxf(m, fabsf(__bfloat162float(x[k])));
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	__syncthreads();
	if (lane == 0)
		sh[threadIdx.x >> 5] = m;
	__syncthreads();
	m = lane < nw ? sh[lane] : 0.f;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	return 127.f / fmaxf(m, 1e-5f);
}

static __device__ __forceinline__ float q8(float v, float s)
{
	return fminf(fmaxf(rintf(v * s), -128.f), 127.f);
}

__global__ void act_quant_i8_k(int8_t *__restrict__ codes, float *__restrict__ inv,
			       int32_t *__restrict__ qsum, const bf16 *__restrict__ x, int K)
{
	__shared__ float sh[32];
	const bf16 *xt = x + (size_t)blockIdx.x * K;
	int8_t *ct = codes + (size_t)blockIdx.x * K;
	float s = token_scale(xt, K, sh), sum = 0.f;
	for (int k = threadIdx.x; k < K; k += blockDim.x) {
		float q = q8(__bfloat162float(xt[k]), s);
		ct[k] = (int8_t)q;
		sum += q;
	}
	sum = block_sum(sum, sh);
	if (threadIdx.x == 0) {
		inv[blockIdx.x] = 1.f / s;
		qsum[blockIdx.x] = (int32_t)sum;
	}
}

__global__ void act_round_i8_k(bf16 *__restrict__ out, const bf16 *__restrict__ x, int K)
{
	__shared__ float sh[32];
	const bf16 *xt = x + (size_t)blockIdx.x * K;
	float s = token_scale(xt, K, sh);
	for (int k = threadIdx.x; k < K; k += blockDim.x)
		out[(size_t)blockIdx.x * K + k] = __float2bfloat16(q8(__bfloat162float(xt[k]), s) / s);
}

extern "C" fi_err fi_cu_act_quant_i8(cudaStream_t st, int8_t *codes, float *inv, int32_t *qsum,
				     const void *x, int T, int K)
{
	if (T <= 0)
		return FI_OK;
	act_quant_i8_k<<<T, 256, 0, st>>>(codes, inv, qsum, (const bf16 *)x, K);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_act_round_i8(cudaStream_t st, void *out, const void *x, int T, int K)
{
	if (T <= 0)
		return FI_OK;
	act_round_i8_k<<<T, 256, 0, st>>>((bf16 *)out, (const bf16 *)x, K);
	LAUNCH_CHECK();
	return FI_OK;
}
