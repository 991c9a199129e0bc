/* gemv: out[T,N] = x[T,K] @ W[N,K]^T (+ bias) for T <= 4 tokens (decode), bf16 weights,
 * f32 accumulation, bf16 or f32 out.
 *
 * Decode is a pass over the weights: each warp owns rows of W, streams them with 16-byte
 * loads (4 in flight per lane), and keeps the T dot products of each row in registers, so
 * every weight byte is read once for all T tokens; x is small and stays in L1/L2. One warp
 * reduction per (row, token). A plain launch also costs the host less than a cuBLASLt call,
 * which matters when a decode step is hundreds of small launches. fi_cu_gemv_multi runs up to 4
 * weights over the same x in one launch (q, k, v: the 1024-row K/V projections alone are too
 * few rows to fill the GPU); fi_cu_split cuts a fused GEMM's [T, sum N] output into the
 * separate outputs for larger T. */
#include "common.cuh"

#define GEMV_WARPS 8
#define GEMV_UNROLL 4

/* A 16-byte weight load through the read-only path. */
static __device__ __forceinline__ bf16x8 ldw(const bf16x8 *p)
{
	uint4 u = __ldg((const uint4 *)p);
	return *(bf16x8 *)&u;
}

/* Up to 4 weights over the same x (q, k, v; gate, up): one launch, rows numbered across
 * the segments, each written to its own output. */
struct gemv_segs {
	const bf16 *w[4];
	void *out[4];
	const bf16 *bias[4];
	int end[4]; /* cumulative rows */
	int n;
};

template <int T, bool F32OUT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(const gemv_segs sg, const bf16 *__restrict__ x, int K)
{
	const int lane = threadIdx.x & 31;
	int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
	/* Segment lookup with constant indices only: a dynamically indexed parameter array
	 * would be copied to local memory by every thread (measured: decode 25% slower). */
	const bf16 *__restrict__ w = sg.w[0];
	const bf16 *__restrict__ bias = sg.bias[0];
	void *out = sg.out[0];
	int base = 0, N = sg.end[0];
#pragma unroll
	for (int i = 1; i < 4; i++)
		if (i < sg.n && n >= sg.end[i - 1]) {
			w = sg.w[i];
			bias = sg.bias[i];
			out = sg.out[i];
			base = sg.end[i - 1];
			N = sg.end[i] - base;
		}
	if (n - base >= N)
		return;
	n -= base;
	const bf16x8 *wr = (const bf16x8 *)(w + (int64_t)n * K);
	const int k8 = K / 8;
	float acc[T];
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = 0.f;
	int i = lane;
	for (; i + 32 * (GEMV_UNROLL - 1) < k8; i += 32 * GEMV_UNROLL) {
		bf16x8 wv[GEMV_UNROLL];
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL; u++)
			wv[u] = ldw(&wr[i + 32 * u]);
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL; u++) {
			float wf[8];
			bf16x8_to_f32(wv[u], wf);
#pragma unroll
			for (int t = 0; t < T; t++) {
				float xf[8];
				bf16x8_to_f32(((const bf16x8 *)(x + (int64_t)t * K))[i + 32 * u], xf);
#pragma unroll
				for (int j = 0; j < 8; j++)
					acc[t] += wf[j] * xf[j];
			}
		}
	}
	for (; i < k8; i += 32) {
		float wf[8];
		bf16x8_to_f32(ldw(&wr[i]), wf);
#pragma unroll
		for (int t = 0; t < T; t++) {
			float xf[8];
			bf16x8_to_f32(((const bf16x8 *)(x + (int64_t)t * K))[i], xf);
#pragma unroll
			for (int j = 0; j < 8; j++)
				acc[t] += wf[j] * xf[j];
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = warp_sum(acc[t]);
	if (lane == 0) {
		float b = bias ? __bfloat162float(bias[n]) : 0.f;
#pragma unroll
		for (int t = 0; t < T; t++) {
			if (F32OUT)
				((float *)out)[(int64_t)t * N + n] = acc[t] + b;
			else
				((bf16 *)out)[(int64_t)t * N + n] = __float2bfloat16(acc[t] + b);
		}
	}
}

template <int T>
static void launch(cudaStream_t st, const gemv_segs &sg, int f32, const void *x, int K)
{
	dim3 grid((sg.end[sg.n - 1] + GEMV_WARPS - 1) / GEMV_WARPS);
	if (f32)
		gemv_kernel<T, true><<<grid, GEMV_WARPS * 32, 0, st>>>(sg, (const bf16 *)x, K);
	else
		gemv_kernel<T, false><<<grid, GEMV_WARPS * 32, 0, st>>>(sg, (const bf16 *)x, K);
}

static fi_err run(cudaStream_t st, const gemv_segs &sg, int out_f32, const void *x, int T, int K)
{
	switch (T) {
	case 1: launch<1>(st, sg, out_f32, x, K); break;
	case 2: launch<2>(st, sg, out_f32, x, K); break;
	case 3: launch<3>(st, sg, out_f32, x, K); break;
	default: launch<4>(st, sg, out_f32, x, K); break;
	}
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_gemv(cudaStream_t st, void *out, int out_f32, const void *x,
			     const void *w, const void *bias, int T, int N, int K)
{
	gemv_segs sg = {};
	if (T < 1 || T > 4 || K % 8 || !fi_aligned16(x) || !fi_aligned16(w))
		return FI_EUNSUPPORTED;
	sg.w[0] = (const bf16 *)w;
	sg.out[0] = out;
	sg.bias[0] = (const bf16 *)bias;
	sg.end[0] = N;
	sg.n = 1;
	return run(st, sg, out_f32, x, T, K);
}

extern "C" fi_err fi_cu_gemv_multi(cudaStream_t st, int n, void *const *out, const void *x,
				   const void *const *w, const void *const *bias, const int *N,
				   int T, int K)
{
	gemv_segs sg = {};
	if (T < 1 || T > 4 || n < 1 || n > 4 || K % 8 || !fi_aligned16(x))
		return FI_EUNSUPPORTED;
	for (int i = 0; i < n; i++) {
		if (!fi_aligned16(w[i]) || N[i] <= 0)
			return FI_EUNSUPPORTED;
		sg.w[i] = (const bf16 *)w[i];
		sg.out[i] = out[i];
		sg.bias[i] = (const bf16 *)bias[i];
		sg.end[i] = (i ? sg.end[i - 1] : 0) + N[i];
	}
	sg.n = n;
	return run(st, sg, 0, x, T, K);
}

/* Gated: out[t, n] = silu(x Wg[n]^T) * (x Wu[n]^T), each product rounded to bf16 first as
 * the separate matmuls store it, then silu_mul's rounding: one launch and no gate/up
 * round trip instead of three kernels. A warp owns row n of both weights. */
template <int T>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
glu_kernel(bf16 *__restrict__ out, const bf16 *__restrict__ x, const bf16 *__restrict__ wg,
	   const bf16 *__restrict__ wu, int F, int K)
{
	const int lane = threadIdx.x & 31;
	const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
	if (n >= F)
		return;
	const bf16x8 *gr = (const bf16x8 *)(wg + (int64_t)n * K);
	const bf16x8 *ur = (const bf16x8 *)(wu + (int64_t)n * K);
	const int k8 = K / 8;
	float ag[T], au[T];
#pragma unroll
	for (int t = 0; t < T; t++)
		ag[t] = au[t] = 0.f;
	int i = lane;
	for (; i + 32 * (GEMV_UNROLL / 2 - 1) < k8; i += 32 * (GEMV_UNROLL / 2)) {
		bf16x8 gv[GEMV_UNROLL / 2], uv[GEMV_UNROLL / 2];
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL / 2; u++) {
			gv[u] = ldw(&gr[i + 32 * u]);
			uv[u] = ldw(&ur[i + 32 * u]);
		}
#pragma unroll
		for (int u = 0; u < GEMV_UNROLL / 2; u++) {
			float gf[8], uf[8];
			bf16x8_to_f32(gv[u], gf);
			bf16x8_to_f32(uv[u], uf);
#pragma unroll
			for (int t = 0; t < T; t++) {
				float xf[8];
				bf16x8_to_f32(((const bf16x8 *)(x + (int64_t)t * K))[i + 32 * u], xf);
#pragma unroll
				for (int j = 0; j < 8; j++) {
					ag[t] += gf[j] * xf[j];
					au[t] += uf[j] * xf[j];
				}
			}
		}
	}
	for (; i < k8; i += 32) {
		float gf[8], uf[8];
		bf16x8_to_f32(ldw(&gr[i]), gf);
		bf16x8_to_f32(ldw(&ur[i]), uf);
#pragma unroll
		for (int t = 0; t < T; t++) {
			float xf[8];
			bf16x8_to_f32(((const bf16x8 *)(x + (int64_t)t * K))[i], xf);
#pragma unroll
			for (int j = 0; j < 8; j++) {
				ag[t] += gf[j] * xf[j];
				au[t] += uf[j] * xf[j];
			}
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++) {
		ag[t] = warp_sum(ag[t]);
		au[t] = warp_sum(au[t]);
	}
	if (lane == 0) {
#pragma unroll
		for (int t = 0; t < T; t++)
			out[(int64_t)t * F + n] =
				__float2bfloat16(silu_mul1(bf16_round(ag[t]), bf16_round(au[t])));
	}
}

extern "C" fi_err fi_cu_gemv_glu(cudaStream_t st, void *out, const void *x, const void *wg,
				 const void *wu, int T, int F, int K)
{
	if (T < 1 || T > 4 || K % 8 || !fi_aligned16(x) || !fi_aligned16(wg) || !fi_aligned16(wu))
		return FI_EUNSUPPORTED;
	dim3 grid((F + GEMV_WARPS - 1) / GEMV_WARPS);
	switch (T) {
	case 1: glu_kernel<1><<<grid, GEMV_WARPS * 32, 0, st>>>((bf16 *)out, (const bf16 *)x, (const bf16 *)wg, (const bf16 *)wu, F, K); break;
	case 2: glu_kernel<2><<<grid, GEMV_WARPS * 32, 0, st>>>((bf16 *)out, (const bf16 *)x, (const bf16 *)wg, (const bf16 *)wu, F, K); break;
	case 3: glu_kernel<3><<<grid, GEMV_WARPS * 32, 0, st>>>((bf16 *)out, (const bf16 *)x, (const bf16 *)wg, (const bf16 *)wu, F, K); break;
	default: glu_kernel<4><<<grid, GEMV_WARPS * 32, 0, st>>>((bf16 *)out, (const bf16 *)x, (const bf16 *)wg, (const bf16 *)wu, F, K); break;
	}
	LAUNCH_CHECK();
	return FI_OK;
}

/* out_i[t, :] = ws[t, off_i : off_i + N_i] for the parts of one fused GEMM [T, Ntot]. */
struct split_segs {
	bf16 *out[4];
	int end[4]; /* cumulative columns */
	int n;
};

__global__ void split_kernel(const split_segs sg, const bf16 *__restrict__ ws, int T, int Nt,
			     int vec, const float *__restrict__ sc, const float *__restrict__ xs)
{
	const int per = vec ? 8 : 1, n8 = Nt / per;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (int64_t)T * n8;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int t = (int)(i / n8), c = (int)(i % n8) * per, base = 0, N = sg.end[0];
		bf16 *o = sg.out[0];
#pragma unroll
		for (int k = 1; k < 4; k++)
			if (k < sg.n && c >= sg.end[k - 1]) {
				o = sg.out[k];
				base = sg.end[k - 1];
				N = sg.end[k] - base;
			}
		o += (int64_t)t * N + (c - base);
		const bf16 *s = ws + (int64_t)t * Nt + c;
		if (sc) { /* a joined W8A8 product's scales, as fi_cu_scale_outer applies them */
			const float x = xs[t];
			bf16 v[8];
			if (vec)
				*(bf16x8 *)v = *(const bf16x8 *)s;
			else
				v[0] = *s;
#pragma unroll
			for (int j = 0; j < 8; j++)
				if (j < per)
					v[j] = __float2bfloat16(__bfloat162float(v[j]) * (sc[c + j] * x));
			if (vec)
				*(bf16x8 *)o = *(const bf16x8 *)v;
			else
				*o = v[0];
		} else if (vec) {
			*(bf16x8 *)o = *(const bf16x8 *)s;
		} else {
			*o = *s;
		}
	}
}

extern "C" fi_err fi_cu_split(cudaStream_t st, int n, void *const *out, const void *ws,
			      const int *N, int T)
{
	return fi_cu_split_scaled(st, n, out, ws, N, T, NULL, NULL);
}

extern "C" fi_err fi_cu_split_scaled(cudaStream_t st, int n, void *const *out, const void *ws,
				     const int *N, int T, const float *sc, const float *xs)
{
	split_segs sg = {};
	int vec = fi_aligned16(ws);
	for (int i = 0; i < n; i++) {
		sg.out[i] = (bf16 *)out[i];
		sg.end[i] = (i ? sg.end[i - 1] : 0) + N[i];
		vec = vec && N[i] % 8 == 0 && fi_aligned16(out[i]);
	}
	sg.n = n;
	int64_t work = (int64_t)T * sg.end[n - 1] / (vec ? 8 : 1), blocks = (work + 255) / 256;
	split_kernel<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(sg, (const bf16 *)ws, T,
									   sg.end[n - 1], vec, sc, xs);
	LAUNCH_CHECK();
	return FI_OK;
}
