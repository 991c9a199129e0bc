/* attn_prefill.cuh: what the prefill attention kernels share (attn_prefill.cu: mma.sync,
 * any sm_80+ GPU; attn_prefill_wgmma.cu: wgmma, sm_90a only): parameters, cp.async, fragment
 * helpers. */
#ifndef FI_KERNELS_ATTN_PREFILL_CUH
#define FI_KERNELS_ATTN_PREFILL_CUH

#include "common.cuh"

struct pf_params {
	bf16 *out;
	const bf16 *q, *kc, *vc;
	const int32_t *tok_seq, *tok_pos, *block_table;
	int T, max_blocks, bs, Hq, Hk, G, window;
	float scale2; /* softmax scale x log2(e): exponentials in base 2 */
	/* soft-capping (Gemma 2), on raw scores r: capr tanh(r capi), capi = scale / cap and
	 * capr = cap / scale, so that times scale it is cap tanh(r scale / cap); capi 0: none */
	float capi, capr;
};

static __device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)),
		     "l"(src), "r"(valid ? 16 : 0));
}
static __device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
static __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

static __device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}
static __device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}
static __device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0,
						uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&v;
}
/* 2^x; -inf -> 0 (flush-to-zero is fine: the values are probabilities summed in f32). */
static __device__ __forceinline__ float ex2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
	return y;
}

/* The wgmma kernel (hd 128) when this build has it (sm_90a) and the device is compute 9.0;
 * FI_EUNSUPPORTED otherwise. pingpong: its two warpgroups half a tile apart. */
fi_err fi_cu_attn_prefill_wgmma(cudaStream_t st, const pf_params &p, int hd, bool pingpong);

static __device__ __forceinline__ int warp_min(int v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}
static __device__ __forceinline__ int warp_max(int v)
{
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

#endif
