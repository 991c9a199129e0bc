/* embed: x[T,D] = emb[tok[t], :] (bf16 rows copied as they are). An id outside [0, V) gives
 * a zero row rather than a read out of bounds; the host validates ids before they get here. */
#include "common.cuh"

template <bool VEC>
__global__ void embed_kernel(bf16 *__restrict__ x, const bf16 *__restrict__ emb, int64_t V,
			     const int32_t *__restrict__ tok, int D)
{
	int t = blockIdx.x;
	int32_t id = tok[t];
	bf16 *dst = x + (int64_t)t * D;
	if (VEC) {
		const bf16x8 *src = (const bf16x8 *)(emb + (int64_t)id * D);
		bf16x8 *d8 = (bf16x8 *)dst, z = {};
		for (int i = threadIdx.x; i < D / 8; i += blockDim.x)
			d8[i] = (id >= 0 && id < V) ? src[i] : z;
	} else {
		for (int i = threadIdx.x; i < D; i += blockDim.x)
			dst[i] = (id >= 0 && id < V) ? emb[(int64_t)id * D + i] : __float2bfloat16(0.f);
	}
}

extern "C" fi_err fi_cu_embed(cudaStream_t st, void *x, const void *emb, int64_t V,
			      const int32_t *tok, int T, int D)
{
	if (T <= 0)
		return FI_OK;
	if (D % 8 == 0 && fi_aligned16(x) && fi_aligned16(emb))
		embed_kernel<true><<<T, 128, 0, st>>>((bf16 *)x, (const bf16 *)emb, V, tok, D);
	else
		embed_kernel<false><<<T, 128, 0, st>>>((bf16 *)x, (const bf16 *)emb, V, tok, D);
	LAUNCH_CHECK();
	return FI_OK;
}
