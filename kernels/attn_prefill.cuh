/* attn_prefill.cuh: what the prefill attention kernels share (attn_prefill.cu: mma.sync,
 * any sm_80+ GPU; attn_prefill_wgmma.cu: wgmma, sm_90a only): parameters and exponentials;
 * cp.async and the fragment helpers are in mma.cuh. */
#ifndef FI_KERNELS_ATTN_PREFILL_CUH
#define FI_KERNELS_ATTN_PREFILL_CUH

#include "common.cuh"
#include "mma.cuh"

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
