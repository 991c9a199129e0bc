/* rope: rotates q[T,Hq,hd] and k[T,Hk,hd] in place by each token's position, rotate-half
 * layout (pairs i and i + hd/2, as HF). The angle pos * inv_freq[i] is formed in f32 like the
 * reference and its sine and cosine taken with full range reduction (positions reach 1e5).
 * One block per token; a thread per (head, pair). rope_kv_kernel also writes the rotated k
 * and v to the paged cache at the token's slot (rope then kv_write in one launch, decode
 * steps are latency-bound: one kernel fewer per layer). */
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

__global__ void rope_kv_kernel(bf16 *__restrict__ q, bf16 *__restrict__ k,
			       const bf16 *__restrict__ v, bf16 *__restrict__ kc,
			       bf16 *__restrict__ vc, const int32_t *__restrict__ pos,
			       const int32_t *__restrict__ slot, const float *__restrict__ inv_freq,
			       int Hq, int Hk, int hd, int64_t n_slots)
{
	int t = blockIdx.x, half = hd / 2, row = Hk * hd;
	float p = (float)pos[t];
	int64_t sl = slot[t];
	bool wr = sl >= 0 && sl < n_slots; /* as kv_write: padding (-1) writes nothing */
	int n = (Hq + Hk) * half;
	for (int j = threadIdx.x; j < n; j += blockDim.x) {
		int h = j / half, i = j - h * half;
		bf16 *r = h < Hq ? q + ((int64_t)t * Hq + h) * hd : k + ((int64_t)t * Hk + (h - Hq)) * hd;
		float s, c;
		sincosf(p * inv_freq[i], &s, &c);
		float x1 = __bfloat162float(r[i]), x2 = __bfloat162float(r[i + half]);
		bf16 a = __float2bfloat16(x1 * c - x2 * s), b = __float2bfloat16(x2 * c + x1 * s);
		r[i] = a;
		r[i + half] = b;
		if (h >= Hq && wr) {
			bf16 *d = kc + sl * row + (int64_t)(h - Hq) * hd;
			d[i] = a;
			d[i + half] = b;
		}
	}
	if (wr)
		for (int i = threadIdx.x; i < row; i += blockDim.x)
			vc[sl * row + i] = v[(int64_t)t * row + i];
}

extern "C" fi_err fi_cu_rope_kv(cudaStream_t st, void *q, void *k, const void *v, void *kc,
				void *vc, const int32_t *pos, const int32_t *slot,
				const float *inv_freq, int T, int Hq, int Hk, int hd, int64_t n_slots)
{
	if (T <= 0)
		return FI_OK;
	if (hd % 2)
		return fi_fail(FI_EINVAL, "rope: head size %d is odd", hd);
	int n = (Hq + Hk) * hd / 2;
	int threads = n < 256 ? (n + 31) / 32 * 32 : 256;
	rope_kv_kernel<<<T, threads, 0, st>>>((bf16 *)q, (bf16 *)k, (const bf16 *)v, (bf16 *)kc,
					      (bf16 *)vc, pos, slot, inv_freq, Hq, Hk, hd, n_slots);
	LAUNCH_CHECK();
	return FI_OK;
}
