/* rope: rotates q[T,Hq,hd] and k[T,Hk,hd] in place by each token's position, rotate-half
 * layout (pairs i and i + hd/2, as HF). The angle pos * inv_freq[i] is formed in f32 like the
 * reference and its sine and cosine taken with full range reduction (positions reach 1e5).
 * One block per token; a thread per (head, pair). */
#include "common.cuh"

__global__ void rope_kernel(bf16 *__restrict__ q, bf16 *__restrict__ k,
			    const int32_t *__restrict__ pos, const float *__restrict__ inv_freq,
			    int Hq, int Hk, int hd)
{
	int t = blockIdx.x, half = hd / 2;
	float p = (float)pos[t];
	int n = (Hq + Hk) * half;
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		int h = j / half, i = j - h * half;
		bf16 *row = h < Hq ? q + ((int64_t)t * Hq + h) * hd
				   : k + ((int64_t)t * Hk + (h - Hq)) * hd;
		float s, c;
		sincosf(p * inv_freq[i], &s, &c);
		float x1 = __bfloat162float(row[i]), x2 = __bfloat162float(row[i + half]);
		row[i] = __float2bfloat16(x1 * c - x2 * s);
		row[i + half] = __float2bfloat16(x2 * c + x1 * s);
	}
}

extern "C" fi_err fi_cu_rope(cudaStream_t st, void *q, void *k, const int32_t *pos,
			     const float *inv_freq, int T, int Hq, int Hk, int hd)
{
	if (T <= 0)
		return FI_OK;
	if (hd % 2)
		return fi_fail(FI_EINVAL, "rope: head size %d is odd", hd);
	int n = (Hq + Hk) * hd / 2;
	int threads = n < 256 ? (n + 31) / 32 * 32 : 256;
	rope_kernel<<<T, threads, 0, st>>>((bf16 *)q, (bf16 *)k, pos, inv_freq, Hq, Hk, hd);
	LAUNCH_CHECK();
	return FI_OK;
}
