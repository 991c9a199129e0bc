/* act_quant: the W8A8 input rounding of base/quant.h on the GPU. Per token (aq TOKEN) or per
 * token and 128 columns (GROUP): s = amax / 448 (1 when amax is 0), code = e4m3(x / s) with
 * round-to-nearest-even and saturation (the hardware conversion, as fi_f32_to_e4m3).
 * One block per token; a warp per 128-column group. The input may be the RMSNorm of x,
 * computed here (the W8A8 decode products after a norm: kernels/gemv_qfused.cuh). Also: the rounded values back in bf16
 * (the dequantize + bf16 GEMM path), and the column permutation of act-order INT4. */
#include <cuda_fp8.h>

#include "act_quant.cuh"
#include "common.cuh"

#define AQ_THREADS 256

static __device__ __forceinline__ float e4m3_back(uint8_t b)
{
	__nv_fp8_e4m3 v;
	v.__x = b;
	return (float)v;
}

static __device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* mode 0: codes and scales; 1: rounded bf16 into out. NORM: the input is the RMSNorm of x
 * with weight g, rounded as kernels/rmsnorm.cu stores it: bf16(bf16(x * r) * g). */
template <int AQ, int MODE, bool NORM>
__global__ void __launch_bounds__(AQ_THREADS)
act_kernel(uint8_t *__restrict__ codes, float *__restrict__ scales, bf16 *__restrict__ out,
	   const bf16 *__restrict__ x, const bf16 *__restrict__ g, float eps, int K)
{
	__shared__ float sh[32];
	const int t = blockIdx.x, ng = (K + 127) / 128;
	const bf16 *xr = x + (int64_t)t * K;
	float r = 1.f;
	if (NORM) {
		float ss = 0.f;
		for (int k = threadIdx.x; k < K; k += AQ_THREADS) {
			float v = __bfloat162float(xr[k]);
			ss += v * v;
		}
		r = rsqrtf(block_sum(ss, sh) / K + eps);
	}
	auto in = [&](int k) {
		float v = __bfloat162float(xr[k]);
		return NORM ? bf16_round(bf16_round(v * r) * __bfloat162float(g[k])) : v;
	};
	if (AQ == FI_AQ_TOKEN) {
		float m = 0.f;
		for (int k = threadIdx.x; k < K; k += AQ_THREADS)
			m = fmaxf(m, fabsf(in(k)));
		m = warp_max(m);
		__syncthreads();
		if ((threadIdx.x & 31) == 0)
			sh[threadIdx.x >> 5] = m;
		__syncthreads();
		m = threadIdx.x < AQ_THREADS / 32 ? sh[threadIdx.x] : 0.f;
		m = warp_max(m);
		if (threadIdx.x < 32)
			sh[threadIdx.x] = m;
		__syncthreads();
		m = sh[0];
		const float s = aq_scale(m);
		if (MODE == 0 && threadIdx.x == 0)
			scales[t] = s;
		for (int k = threadIdx.x; k < K; k += AQ_THREADS) {
			uint8_t q = aq_code(in(k), s);
			if (MODE == 0)
				codes[(int64_t)t * K + k] = q;
			else
				out[(int64_t)t * K + k] = __float2bfloat16(e4m3_back(q) * s);
		}
	} else {
		const int lane = threadIdx.x & 31;
		for (int g = threadIdx.x >> 5; g < ng; g += AQ_THREADS / 32) {
			const int k0 = g * 128, len = K - k0 < 128 ? K - k0 : 128;
			float m = 0.f;
			for (int k = lane; k < len; k += 32)
				m = fmaxf(m, fabsf(in(k0 + k)));
			m = warp_max(m);
			const float s = aq_scale(m);
			if (MODE == 0 && lane == 0)
				scales[(int64_t)t * ng + g] = s;
			for (int k = lane; k < len; k += 32) {
				uint8_t q = aq_code(in(k0 + k), s);
				if (MODE == 0)
					codes[(int64_t)t * K + k0 + k] = q;
				else
					out[(int64_t)t * K + k0 + k] = __float2bfloat16(e4m3_back(q) * s);
			}
		}
	}
}

/* Per-token codes of a prompt's rows without a norm (the W8A8 prompt products' inputs): as
 * act_kernel<FI_AQ_TOKEN, 0, false>, 8 columns a thread in 16-byte loads, held in registers
 * between the max and the codes (V x NT x 8 columns at most), the codes stored 8 bytes at a
 * time. The 2-byte loop above read each row twice at ~1.4 TB/s. NT threads: 128 for rows of
 * up to 4,096 columns (4 loads in flight a thread), else 256. */
template <int V, int NT>
__global__ void __launch_bounds__(NT)
act_tok8_kernel(uint8_t *__restrict__ codes, float *__restrict__ scales,
		const bf16 *__restrict__ x, int K)
{
	__shared__ float sh[32];
	const int t = blockIdx.x, K8 = K / 8;
	const uint4 *xr = (const uint4 *)(x + (int64_t)t * K);
	uint4 v[V];
	float m = 0.f;
#pragma unroll
	for (int j = 0; j < V; j++) {
		const int i = threadIdx.x + j * NT;
		if (i < K8) {
			v[j] = xr[i];
			m = aq_absmax8((const bf16 *)&v[j], m);
		}
	}
	const float s = aq_scale(block_max(m, sh));
	if (threadIdx.x == 0)
		scales[t] = s;
#pragma unroll
	for (int j = 0; j < V; j++) {
		const int i = threadIdx.x + j * NT;
		if (i < K8) {
			((uint2 *)(codes + (int64_t)t * K))[i] = aq_code8((const bf16 *)&v[j], s);
		}
	}
}

extern "C" fi_err fi_cu_act_quant(cudaStream_t st, void *codes, float *scales, const void *x,
				  const void *g, float eps, int T, int K, int aq)
{
	uint8_t *c = (uint8_t *)codes;
	const bf16 *xb = (const bf16 *)x, *gb = (const bf16 *)g;
	if (T <= 0)
		return FI_OK;
	if (aq != FI_AQ_TOKEN && aq != FI_AQ_GROUP)
		return fi_fail(FI_EINVAL, "act_quant: activation rounding %d", aq);
	if (aq == FI_AQ_TOKEN && !g && K % 8 == 0 && K <= 8 * 8 * AQ_THREADS && fi_aligned16(x) &&
	    !((uintptr_t)codes & 7)) {
		if (K <= 4 * 8 * 128)
			act_tok8_kernel<4, 128><<<T, 128, 0, st>>>(c, scales, xb, K);
		else
			act_tok8_kernel<8, 256><<<T, 256, 0, st>>>(c, scales, xb, K);
	} else if (aq == FI_AQ_TOKEN && g)
		act_kernel<FI_AQ_TOKEN, 0, true><<<T, AQ_THREADS, 0, st>>>(c, scales, NULL, xb, gb, eps, K);
	else if (aq == FI_AQ_TOKEN)
		act_kernel<FI_AQ_TOKEN, 0, false><<<T, AQ_THREADS, 0, st>>>(c, scales, NULL, xb, gb, eps, K);
	else if (g)
		act_kernel<FI_AQ_GROUP, 0, true><<<T, AQ_THREADS, 0, st>>>(c, scales, NULL, xb, gb, eps, K);
	else
		act_kernel<FI_AQ_GROUP, 0, false><<<T, AQ_THREADS, 0, st>>>(c, scales, NULL, xb, gb, eps, K);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_act_round(cudaStream_t st, void *out, const void *x, int T, int K, int aq)
{
	if (T <= 0)
		return FI_OK;
	if (aq == FI_AQ_TOKEN)
		act_kernel<FI_AQ_TOKEN, 1, false><<<T, AQ_THREADS, 0, st>>>(NULL, NULL, (bf16 *)out,
									    (const bf16 *)x, NULL, 0.f, K);
	else if (aq == FI_AQ_GROUP)
		act_kernel<FI_AQ_GROUP, 1, false><<<T, AQ_THREADS, 0, st>>>(NULL, NULL, (bf16 *)out,
									    (const bf16 *)x, NULL, 0.f, K);
	else
		return fi_fail(FI_EINVAL, "act_round: activation rounding %d", aq);
	LAUNCH_CHECK();
	return FI_OK;
}

__global__ void permute_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ x,
			       const int32_t *__restrict__ perm, int K, int64_t total)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < total)
		out[i] = x[i - i % K + perm[i % K]];
}

extern "C" fi_err fi_cu_permute_cols(cudaStream_t st, void *out, const void *x,
				     const int32_t *perm, int T, int K)
{
	int64_t total = (int64_t)T * K;
	if (total <= 0)
		return FI_OK;
	permute_kernel<<<(unsigned)((total + 255) / 256), 256, 0, st>>>(
		(bf16 *)out, (const bf16 *)x, perm, K, total);
	LAUNCH_CHECK();
	return FI_OK;
}
