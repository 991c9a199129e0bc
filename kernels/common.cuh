/* common: helpers shared by the kernels: bf16 vectors of 8 (16-byte accesses), reductions. */
#ifndef FI_KERNELS_COMMON_CUH
#define FI_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "backend/cuda/cuda_be.h"

typedef __nv_bfloat16 bf16;

/* Eight bf16 in one 16-byte access. */
struct __align__(16) bf16x8 {
	__nv_bfloat162 h[4];
};

static __device__ __forceinline__ void bf16x8_to_f32(const bf16x8 &v, float *f)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(v.h[i]);
		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

static __device__ __forceinline__ bf16x8 f32_to_bf16x8(const float *f)
{
	bf16x8 v;
#pragma unroll
	for (int i = 0; i < 4; i++)
		v.h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
	return v;
}

/* A 16-byte load of a quantized weight through the read-only path (weights are never written
 * by a kernel), asking L2 to fetch the whole aligned 256 bytes around it from DRAM when it
 * misses (PTX's .L2::256B prefetch size). The one-token products read a row in 64- to
 * 512-byte pieces a warp and the rest of the span an iteration later (the block's other
 * slices, or the same warp), so the hint has DRAM deliver it one latency early without
 * holding more registers in flight: the 8B's AWQ tg128 +4.3%, BitNet 2B-4T +1.1%, FP8 and
 * Q4_K unchanged (H100, tests/gpu/NOTES.md). -DFI_LDW_PF=0 (in CUARCH) builds plain loads. */
#ifndef FI_LDW_PF
#define FI_LDW_PF 256
#endif
static __device__ __forceinline__ uint4 ldw16(const void *p)
{
#if FI_LDW_PF == 256
	uint4 u;
	asm("ld.global.nc.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
	    : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w)
	    : "l"(p));
	return u;
#else
	return __ldg((const uint4 *)p);
#endif
}

/* f[0..8) = p[8 i .. 8 i + 8): two 16-byte loads where p is 16-byte aligned (VW), else eight
 * scalar ones (a weight's f32 scales, read next to a 16-byte access of bf16 values). */
template <bool VW, typename I>
static __device__ __forceinline__ void f32x8_load(const float *__restrict__ p, I i, float *f)
{
	if (VW) {
		*(float4 *)&f[0] = ((const float4 *)p)[2 * i];
		*(float4 *)&f[4] = ((const float4 *)p)[2 * i + 1];
	} else {
#pragma unroll
		for (int k = 0; k < 8; k++)
			f[k] = p[8 * i + k];
	}
}

static __device__ __forceinline__ float bf16_round(float x)
{
	return __bfloat162float(__float2bfloat16(x));
}

/* silu(g) * u as the bf16 reference rounds it: silu(g) to bf16 first (kernels/silu_mul.cu,
 * the gated gemv). */
static __device__ __forceinline__ float silu_mul1(float g, float u)
{
	return bf16_round(g / (1.f + __expf(-g))) * u;
}

/* PyTorch's gelu(approximate="tanh"): 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))). */
static __device__ __forceinline__ float gelu_tanh(float g)
{
	const float beta = 0.7978845608028654f, kappa = 0.044715f;
	return 0.5f * g * (1.f + tanhf(beta * (g + kappa * (g * g * g))));
}

/* gelu_tanh(g) * u rounded as silu_mul1 (kernels/gelu_mul.cu, GeGLU). */
static __device__ __forceinline__ float gelu_mul1(float g, float u)
{
	return bf16_round(gelu_tanh(g)) * u;
}

/* The GLU of act (enum fi_glu_act: 0 SiLU, 1 tanh GELU). */
static __device__ __forceinline__ float glu_mul1(int act, float g, float u)
{
	return act ? gelu_mul1(g, u) : silu_mul1(g, u);
}

/* K slices per work item of a fused decode product (gemv_fused.cu, gemv_qfused.cuh): the most,
 * up to max, that leave every slice at least min of its units (one full round of loads for
 * each lane); FI_FG_SLICES=1|2|4|8 fixes it, for timing. More, shorter weight streams per row
 * measured faster on the H100 than one warp a row: 8B decode 159 (one slice), 168 (two), 175
 * tok/s (four). */
static inline int fused_slices(int units, int min, int max)
{
	int S = 1, fixed = fi_settings()->fg_slices;
	if (fixed)
		return fixed;
	while (S < max && units / (2 * S) >= min)
		S *= 2;
	return S;
}

/* What rope_pair_store needs besides the sums, fetched before the weight stream so that its
 * latency hides (gemv_fused.cu, gemv_qfused.cuh): the biases of rows n0, n1 of segment seg
 * (0 when it has none), the angle of pair ip for token t (in f32, as kernels/rope.cu) and
 * the token's cache slot. */
struct rope_fetch {
	float b0, b1, ang;
	int64_t sl;
};

static __device__ __forceinline__ rope_fetch rope_pair_fetch(const bf16 *bq, const bf16 *bk,
							     const bf16 *bv, int seg, int64_t n0,
							     int64_t n1,
							     const fi_cu_rope_out &ro, int t,
							     int ip)
{
	const bf16 *bias = seg == 0 ? bq : seg == 1 ? bk : bv;
	rope_fetch f = {0.f, 0.f, (float)ro.pos[t] * ro.inv_freq[ip], ro.slot[t]};
	if (bias) {
		f.b0 = __bfloat162float(bias[n0]);
		f.b1 = __bfloat162float(bias[n1]);
	}
	return f;
}

/* The RoPE epilogue of the fused q/k/v products (gemv_fused.cu, gemv_qfused.cuh,
 * gemv_tq2.cu): the sums v0, v1 of the rotate-half pair (n0, n1) of segment seg (0 q, 1 k,
 * 2 v) of one token, plus biases b0, b1, rounded to bf16, rotated by angle ang (q and k), and
 * stored to q (row q of [T, N]) or to ro's cache at slot sl ([n_slots, Nk]; padding, -1,
 * writes nothing). */
static __device__ __forceinline__ void rope_pair_store(int seg, int64_t n0, int64_t n1, float v0,
						       float v1, float b0, float b1, float ang,
						       bf16 *q, const fi_cu_rope_out &ro, int64_t sl,
						       int Nk)
{
	float x1 = bf16_round(v0 + b0), x2 = bf16_round(v1 + b1);
	bf16 o1, o2;
	if (seg < 2) { /* full range reduction, as kernels/rope.cu */
		float s, c;
		sincosf(ang, &s, &c);
		o1 = __float2bfloat16(x1 * c - x2 * s);
		o2 = __float2bfloat16(x2 * c + x1 * s);
	} else {
		o1 = __float2bfloat16(x1);
		o2 = __float2bfloat16(x2);
	}
	if (seg == 0) {
		q[n0] = o1;
		q[n1] = o2;
	} else if (sl >= 0 && sl < ro.n_slots) { /* as kv_write */
		bf16 *d = (bf16 *)(seg == 1 ? ro.kc : ro.vc) + sl * Nk;
		d[n0] = o1;
		d[n1] = o2;
	}
}

static __device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* Sum over the block; every thread gets the result. sh must hold 32 floats. */
static __device__ __forceinline__ float block_sum(float v, float *sh)
{
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
	v = warp_sum(v);
	__syncthreads(); /* sh may still be read by a previous call */
	if (lane == 0)
		sh[w] = v;
	__syncthreads();
	v = lane < nw ? sh[lane] : 0.f;
	return warp_sum(v);
}

/* The block's maximum of m, to every thread: each warp folds the per-warp maxima itself
 * (indexed by lane), so that no warp scales by a partial maximum. sh holds 32 floats. */
static __device__ __forceinline__ float block_max(float m, float *sh)
{
	const int lane = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	__syncthreads(); /* sh may still be read by a previous reduction */
	if (lane == 0)
		sh[threadIdx.x >> 5] = m;
	__syncthreads();
	m = lane < nw ? sh[lane] : 0.f;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
	return m;
}

static inline bool fi_aligned16(const void *p)
{
	return ((uintptr_t)p & 15) == 0;
}

#endif
