/* kv_write: k[T,Hk*hd], v[T,Hk*hd] -> the paged cache of one layer at slot[t]
 * (cache [n_blocks*block_size, Hk*hd]). A negative slot (padding) writes nothing; a slot past
 * the cache is dropped rather than written out of bounds. */
#include "common.cuh"

template <bool VEC>
__global__ void kv_write_kernel(bf16 *__restrict__ kc, bf16 *__restrict__ vc,
				const bf16 *__restrict__ k, const bf16 *__restrict__ v,
				const int32_t *__restrict__ slot, int row, int64_t n_slots)
{
	int t = blockIdx.x;
	int64_t s = slot[t];
	if (s < 0 || s >= n_slots)
		return;
	const bf16 *ks = k + (int64_t)t * row, *vs = v + (int64_t)t * row;
	bf16 *kd = kc + s * row, *vd = vc + s * row;
	if (VEC) {
		for (int i = threadIdx.x; i < row / 8; i += blockDim.x) {
			((bf16x8 *)kd)[i] = ((const bf16x8 *)ks)[i];
			((bf16x8 *)vd)[i] = ((const bf16x8 *)vs)[i];
		}
	} else {
		for (int i = threadIdx.x; i < row; i += blockDim.x) {
			kd[i] = ks[i];
			vd[i] = vs[i];
		}
	}
}

extern "C" fi_err fi_cu_kv_write(cudaStream_t st, void *kc, void *vc, const void *k,
				 const void *v, const int32_t *slot, int T, int row,
				 int64_t n_slots)
{
	if (T <= 0)
		return FI_OK;
	bool vec = row % 8 == 0 && fi_aligned16(kc) && fi_aligned16(vc) && fi_aligned16(k) &&
		   fi_aligned16(v);
	if (vec)
		kv_write_kernel<true><<<T, 128, 0, st>>>((bf16 *)kc, (bf16 *)vc, (const bf16 *)k,
							 (const bf16 *)v, slot, row, n_slots);
	else
		kv_write_kernel<false><<<T, 128, 0, st>>>((bf16 *)kc, (bf16 *)vc, (const bf16 *)k,
							  (const bf16 *)v, slot, row, n_slots);
	LAUNCH_CHECK();
	return FI_OK;
}
