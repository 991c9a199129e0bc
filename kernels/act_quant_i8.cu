/* act_quant_i8: BitNet's input quantization (FI_AQ_I8, base/quant.h) of x[T,K] (bf16): per
 * token s = 127 / max(amax, 1e-5), q = clamp(rint(x s), -128, 127), written as int8 codes
 * [T,K] with inv[T] = 1/s and qsum[T] = sum(q) (the ternary kernels store codes w + 1); or
 * (round) q / s back in bf16 for the dequantize + GEMM path. One block per token.
 * Twin: fi_tq2_quant_act / fi_tq2_round_act. */
#include "act_quant_i8.cuh"

/* The token's scale, from a strided pass over x. */
static __device__ float token_scale(const bf16 *x, int K, float *sh)
{
	float m = 0.f;
	for (int k = threadIdx.x; k < K; k += blockDim.x)
		m = fmaxf(m, fabsf(__bfloat162float(x[k])));
	return 127.f / fmaxf(block_max(m, sh), 1e-5f);
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

/* The same for K a multiple of 8 up to 8192 with 16-byte rows (act_quant_i8.cuh: the row is
 * read once and held in registers). A decode step of the 2B-4T shape ran four of these a
 * layer on one token; the loop above (two strided 2-byte passes) took 9 us each on an H100
 * under ncu. */
__global__ void __launch_bounds__(AQ_THREADS)
act_quant_i8_vec(int8_t *__restrict__ codes, float *__restrict__ inv, int32_t *__restrict__ qsum,
		 const bf16 *__restrict__ x, int K)
{
	__shared__ float sh[32];
	float sum;
	const float s = quant_row_i8(x + (size_t)blockIdx.x * K, K, codes + (size_t)blockIdx.x * K,
				     sh, &sum);
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
	if (K % 8 == 0 && K <= AQ_VECS * 8 * AQ_THREADS && fi_aligned16(x) &&
	    ((uintptr_t)codes & 7) == 0)
		act_quant_i8_vec<<<T, AQ_THREADS, 0, st>>>(codes, inv, qsum, (const bf16 *)x, K);
	else
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
