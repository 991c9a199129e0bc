/* gather_rows: out[n,D] = x[idx[i], :]; picks the rows that need logits (the last token of
 * each sequence in a prefill batch). */
#include "common.cuh"

template <bool VEC>
__global__ void gather_rows_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ x,
				   const int32_t *__restrict__ idx, int D)
{
	int i = blockIdx.x;
	const bf16 *src = x + (int64_t)idx[i] * D;
	bf16 *dst = out + (int64_t)i * D;
	if (VEC) {
		for (int j = threadIdx.x; j < D / 8; j += blockDim.x)
			((bf16x8 *)dst)[j] = ((const bf16x8 *)src)[j];
	} else {
		for (int j = threadIdx.x; j < D; j += blockDim.x)
			dst[j] = src[j];
	}
}

extern "C" fi_err fi_cu_gather_rows(cudaStream_t st, void *out, const void *x,
				    const int32_t *idx, int n, int D)
{
	if (n <= 0)
		return FI_OK;
	if (D % 8 == 0 && fi_aligned16(out) && fi_aligned16(x))
		gather_rows_kernel<true><<<n, 128, 0, st>>>((bf16 *)out, (const bf16 *)x, idx, D);
	else
		gather_rows_kernel<false><<<n, 128, 0, st>>>((bf16 *)out, (const bf16 *)x, idx, D);
	LAUNCH_CHECK();
	return FI_OK;
}
