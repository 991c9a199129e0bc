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

/* The same for K a multiple of 8 up to AQ_VECS x 8 x AQ_THREADS (8192) with 16-byte rows:
 * the row is read once, 16 bytes a load, and held in registers for the scale and the codes.
 * A decode step of the 2B-4T shape runs four of these a layer on one token; the loop above
 * (two strided 2-byte passes) took 9 us each on an H100 under ncu, most of the step's time. */
#define AQ_THREADS 256
#define AQ_VECS 4

__global__ void __launch_bounds__(AQ_THREADS)
act_quant_i8_vec(int8_t *__restrict__ codes, float *__restrict__ inv, int32_t *__restrict__ qsum,
		 const bf16 *__restrict__ x, int K)
{
	__shared__ float sh[32];
	const int nv = K / 8, lane = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
	const bf16x8 *xt = (const bf16x8 *)(x + (size_t)blockIdx.x * K);
	float v[AQ_VECS][8], m = 0.f, sum = 0.f;
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++) {
		const int i = threadIdx.x + j * AQ_THREADS;
		if (i < nv)
			bf16x8_to_f32(xt[i], v[j]);
		else
#pragma unroll
			for (int e = 0; e < 8; e++)
				v[j][e] = 0.f;
#pragma unroll
		for (int e = 0; e < 8; e++)
			m = fmaxf(m, fabsf(v[j][e]));
	}
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	if (lane == 0)
		sh[threadIdx.x >> 5] = m;
	__syncthreads();
	m = lane < nw ? sh[lane] : 0.f;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	const float s = 127.f / fmaxf(m, 1e-5f);
	int2 *ct = (int2 *)(codes + (size_t)blockIdx.x * K);
#pragma unroll
	for (int j = 0; j < AQ_VECS; j++) {
		const int i = threadIdx.x + j * AQ_THREADS;
		if (i >= nv)
			continue;
		uint32_t w[2] = {0, 0};
#pragma unroll
		for (int e = 0; e < 8; e++) {
			float q = q8(v[j][e], s);
			sum += q;
			w[e >> 2] |= ((uint32_t)(int)q & 0xffu) << (8 * (e & 3));
		}
		ct[i] = make_int2((int)w[0], (int)w[1]);
	}
	sum = block_sum(sum, sh); /* its first barrier orders the reads of sh above */
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
