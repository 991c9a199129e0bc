/* rope: rotates q[T,Hq,hd] and k[T,Hk,hd] in place by each token's position, rotate-half
 * layout (pairs i and i + hd/2, as HF). The angle pos * inv_freq[i] is formed in f32 like the
 * reference and its sine and cosine taken with full range reduction (positions reach 1e5).
 * rope_kv also writes the rotated k and v to the paged cache at the token's slot (rope then
 * kv_write in one launch: decode steps are latency-bound, one kernel fewer per layer), and
 * with q/k norms (Qwen3, Gemma 3) first applies each head's RMSNorm over its hd values,
 * rounded as kernels/rmsnorm.cu rounds (bf16(bf16(x rs) w)): two launches fewer a layer.
 *
 * Grid (T, head groups): a block takes a few heads of one token, so that a decode step of a
 * few tokens still spreads over the SMs (one block a token made a 32-token step of the 8B
 * shape take 11.6 us on an H100, and one token 8.4 us). The block's hd/2 angles are taken
 * once into shared memory and serve all its heads (sincosf per pair and head was most of the
 * work); each thread rotates two neighbouring pairs with 4-byte accesses. Each block also
 * copies its share of the token's v row to the cache. The norms' sums of squares meet in
 * shared memory in a fixed order, so that a token's result does not depend on the launch. */
#include <stdint.h>

#include "common.cuh"

#define ROPE_THREADS 128

/* A head's values (i, i + 1) and (i + half, i + half + 1) as a0 a1 b0 b1 (vec), or i and
 * i + half as a0 b0. */
struct rope_vals {
	float a0, a1, b0, b1;
};

static __device__ __forceinline__ rope_vals rope_load(const bf16 *r, int i, int half, int vec)
{
	rope_vals v;
	if (vec) {
		__nv_bfloat162 a = *(const __nv_bfloat162 *)(r + i);
		__nv_bfloat162 b = *(const __nv_bfloat162 *)(r + i + half);
		v.a0 = __low2float(a), v.a1 = __high2float(a);
		v.b0 = __low2float(b), v.b1 = __high2float(b);
	} else {
		v.a0 = __bfloat162float(r[i]), v.b0 = __bfloat162float(r[i + half]);
		v.a1 = v.b1 = 0.f;
	}
	return v;
}

/* The head's RMSNorm (rs = 1/sqrt(mean(x^2) + eps)) with weight g, rounded as rmsnorm.cu. */
static __device__ __forceinline__ void rope_norm(rope_vals &v, const bf16 *g, int i, int half,
						 int vec, float rs)
{
	v.a0 = bf16_round(bf16_round(v.a0 * rs) * __bfloat162float(g[i]));
	v.b0 = bf16_round(bf16_round(v.b0 * rs) * __bfloat162float(g[i + half]));
	if (vec) {
		v.a1 = bf16_round(bf16_round(v.a1 * rs) * __bfloat162float(g[i + 1]));
		v.b1 = bf16_round(bf16_round(v.b1 * rs) * __bfloat162float(g[i + half + 1]));
	}
}

/* qn, kn: the q and k norm weights [hd] (NORM). */
template <bool KV, bool NORM>
__global__ void __launch_bounds__(ROPE_THREADS)
rope_kv_kernel(bf16 *__restrict__ q, bf16 *__restrict__ k, const bf16 *__restrict__ v,
	       bf16 *__restrict__ kc, bf16 *__restrict__ vc, const int32_t *__restrict__ pos,
	       const int32_t *__restrict__ slot, const float *__restrict__ inv_freq,
	       const bf16 *__restrict__ qn, const bf16 *__restrict__ kn, float eps, int Hq, int Hk,
	       int hd, int64_t n_slots, int hpb, int vec)
{
	/* [hd/2] (cos, sin) of this token's angles; NORM: then [nh * per] partial sums of
	 * squares and [nh] scales */
	extern __shared__ float2 cs[];
	const int t = blockIdx.x, half = hd / 2, row = Hk * hd;
	const float p = (float)pos[t];
	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		float s, c;
		sincosf(p * inv_freq[i], &s, &c);
		cs[i] = make_float2(c, s);
	}
	const int64_t sl = KV ? slot[t] : -1;
	const bool wr = KV && sl >= 0 && sl < n_slots; /* as kv_write: padding (-1) writes nothing */
	const int h0 = blockIdx.y * hpb, nh = min(hpb, Hq + Hk - h0);
	const int step = vec ? 2 : 1, per = half / step; /* threads' work items per head */
	float *part = (float *)(cs + half), *rs = part + nh * per;
	if (NORM) {
		for (int j = threadIdx.x; j < nh * per; j += blockDim.x) {
			const int h = h0 + j / per, i = (j - (j / per) * per) * step;
			const bf16 *r = h < Hq ? q + ((int64_t)t * Hq + h) * hd
					       : k + ((int64_t)t * Hk + (h - Hq)) * hd;
			rope_vals x = rope_load(r, i, half, vec);
			part[j] = x.a0 * x.a0 + x.b0 * x.b0 + x.a1 * x.a1 + x.b1 * x.b1;
		}
		__syncthreads();
		for (int hl = threadIdx.x; hl < nh; hl += blockDim.x) {
			float ss = 0.f;
			for (int j = 0; j < per; j++)
				ss += part[hl * per + j];
			rs[hl] = rsqrtf(ss / hd + eps);
		}
	}
	__syncthreads();
	for (int j = threadIdx.x; j < nh * per; j += blockDim.x) {
		const int h = h0 + j / per, i = (j - (j / per) * per) * step;
		bf16 *r = h < Hq ? q + ((int64_t)t * Hq + h) * hd : k + ((int64_t)t * Hk + (h - Hq)) * hd;
		bf16 *d = KV && h >= Hq && wr ? kc + sl * row + (int64_t)(h - Hq) * hd : nullptr;
		rope_vals x = rope_load(r, i, half, vec);
		if (NORM)
			rope_norm(x, h < Hq ? qn : kn, i, half, vec, rs[j / per]);
		if (vec) {
			const float2 c0 = cs[i], c1 = cs[i + 1];
			float a0 = x.a0, a1 = x.a1, b0 = x.b0, b1 = x.b1;
			__nv_bfloat162 ra = __floats2bfloat162_rn(a0 * c0.x - b0 * c0.y, a1 * c1.x - b1 * c1.y);
			__nv_bfloat162 rb = __floats2bfloat162_rn(b0 * c0.x + a0 * c0.y, b1 * c1.x + a1 * c1.y);
			*(__nv_bfloat162 *)(r + i) = ra;
			*(__nv_bfloat162 *)(r + i + half) = rb;
			if (d) {
				*(__nv_bfloat162 *)(d + i) = ra;
				*(__nv_bfloat162 *)(d + i + half) = rb;
			}
		} else {
			const float2 c = cs[i];
			float x1 = x.a0, x2 = x.b0;
			bf16 a = __float2bfloat16(x1 * c.x - x2 * c.y), b = __float2bfloat16(x2 * c.x + x1 * c.y);
			r[i] = a;
			r[i + half] = b;
			if (d) {
				d[i] = a;
				d[i + half] = b;
			}
		}
	}
	if (!wr)
		return;
	/* this block's share of the v row: an even count, so that pairs stay aligned */
	const int share = ((row + gridDim.y - 1) / gridDim.y + 1) & ~1;
	const int lo = blockIdx.y * share, hi = min(row, lo + share);
	const bf16 *src = v + (int64_t)t * row;
	bf16 *dst = vc + sl * row;
	if (vec)
		for (int i = lo + 2 * threadIdx.x; i < hi; i += 2 * blockDim.x)
			*(__nv_bfloat162 *)(dst + i) = *(const __nv_bfloat162 *)(src + i);
	else
		for (int i = lo + threadIdx.x; i < hi; i += blockDim.x)
			dst[i] = src[i];
}

/* The launch shape: heads a block takes (a thread per item of ROPE_THREADS) and whether the
 * paired 4-byte path holds (hd/2 even, every pointer 4-byte aligned). */
static void shape(int Hq, int Hk, int hd, int vec, dim3 *grid, int *hpb, int *threads, int T)
{
	int per = vec ? hd / 4 : hd / 2;
	*hpb = per >= ROPE_THREADS ? 1 : ROPE_THREADS / per;
	*threads = per * *hpb < ROPE_THREADS ? (per * *hpb + 31) / 32 * 32 : ROPE_THREADS;
	*grid = dim3((unsigned)T, (unsigned)((Hq + Hk + *hpb - 1) / *hpb));
}

static int aligned4(const void *a, const void *b, const void *c, const void *d, const void *e)
{
	return !(((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d | (uintptr_t)e) & 3);
}

extern "C" fi_err fi_cu_rope(cudaStream_t st, void *q, void *k, const int32_t *pos,
			     const float *inv_freq, int T, int Hq, int Hk, int hd)
{
	if (T <= 0)
		return FI_OK;
	if (hd % 2)
		return fi_fail(FI_EINVAL, "rope: head size %d is odd", hd);
	if (Hq + Hk > 65535)
		return fi_fail(FI_ERANGE, "rope: %d heads", Hq + Hk);
	int vec = hd % 4 == 0 && aligned4(q, k, q, k, q), hpb, threads;
	dim3 grid;
	shape(Hq, Hk, hd, vec, &grid, &hpb, &threads, T);
	rope_kv_kernel<false, false><<<grid, threads, (size_t)hd / 2 * sizeof(float2), st>>>(
		(bf16 *)q, (bf16 *)k, NULL, NULL, NULL, pos, NULL, inv_freq, NULL, NULL, 0.f, Hq, Hk,
		hd, 0, hpb, vec);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_rope_kv(cudaStream_t st, void *q, void *k, const void *v, void *kc,
				void *vc, const int32_t *pos, const int32_t *slot,
				const float *inv_freq, const void *qn, const void *kn, float eps, int T,
				int Hq, int Hk, int hd, int64_t n_slots)
{
	if (T <= 0)
		return FI_OK;
	if (hd % 2)
		return fi_fail(FI_EINVAL, "rope: head size %d is odd", hd);
	if (Hq + Hk > 65535)
		return fi_fail(FI_ERANGE, "rope: %d heads", Hq + Hk);
	int vec = hd % 4 == 0 && aligned4(q, k, v, kc, vc), hpb, threads;
	dim3 grid;
	if (!qn != !kn)
		return fi_fail(FI_EINVAL, "rope: a q norm without a k norm, or the reverse");
	shape(Hq, Hk, hd, vec, &grid, &hpb, &threads, T);
	size_t sh = (size_t)hd / 2 * sizeof(float2);
	if (qn) {
		int per = vec ? hd / 4 : hd / 2;
		sh += (size_t)hpb * (per + 1) * sizeof(float);
		rope_kv_kernel<true, true><<<grid, threads, sh, st>>>(
			(bf16 *)q, (bf16 *)k, (const bf16 *)v, (bf16 *)kc, (bf16 *)vc, pos, slot,
			inv_freq, (const bf16 *)qn, (const bf16 *)kn, eps, Hq, Hk, hd, n_slots, hpb, vec);
	} else {
		rope_kv_kernel<true, false><<<grid, threads, sh, st>>>(
			(bf16 *)q, (bf16 *)k, (const bf16 *)v, (bf16 *)kc, (bf16 *)vc, pos, slot,
			inv_freq, NULL, NULL, 0.f, Hq, Hk, hd, n_slots, hpb, vec);
	}
	LAUNCH_CHECK();
	return FI_OK;
}
