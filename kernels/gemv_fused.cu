/* gemv_fused: the decode-step matrix-vector products (T <= 4 tokens) with what surrounds them
 * in a layer folded in, so that a layer is four weight passes plus attention instead of nine
 * kernels: a decode step is latency-bound between its weight passes (tests/gpu/NOTES.md).
 *
 *   norm      x is the raw residual stream [T,K]; the row's RMSNorm is applied on the fly:
 *             out = rs * sum_k w[k] x[k] g[k], rs = 1/sqrt(mean(x^2) + eps), with the sum of
 *             squares taken in the same loop (every warp reads all of x anyway). No bf16
 *             rounding of the normalised x (the separate rmsnorm rounds twice): the result is
 *             closer to the f32 reference, not bit-equal to the unfused path.
 *   FG_STORE  out[T,N] = (norm) x W^T, bf16 or f32.
 *   FG_ADD    out[T,N] += x W^T: the residual add of the attention output and MLP down
 *             projections, the product rounded to bf16 first as the separate matmul stores it.
 *   FG_GLU    out[T,F] = act(x Wg^T) * (x Wu^T), act SiLU or tanh GELU (GeGLU, Gemma); a
 *             warp streams row n of both weights.
 *   FG_ROPE   q, k, v projections (+ bias) with RoPE applied and k, v written to the paged
 *             cache at each token's slot: a warp streams the rotate-half pair of rows
 *             (i, i + hd/2) of one head, so it holds both halves of the rotation. q goes to
 *             out [T, Hq*hd]; k and v are not stored anywhere else.
 *
 * Each warp streams its rows (or a slice of them, see fgemv_kernel) with 16-byte loads, 4
 * in flight per lane, like kernels/gemv.cu; what the epilogue reads besides the sums (the
 * residual, position, slot, bias) is fetched before the weight stream so its latency hides.
 * Programmatic dependent launch (the first weight loads issued before waiting on the
 * previous kernel) was tried twice and measured no faster: tests/gpu/NOTES.md. */
#include <stdlib.h>

#include "common.cuh"

#define FG_WARPS 8

struct fg_params {
	const bf16 *w[3];    /* STORE/ADD: w[0]; GLU: gate, up; ROPE: q [Nq,K], k, v [Nk,K] */
	const bf16 *bias[3]; /* ROPE: q, k, v biases or NULL */
	const bf16 *x;       /* [T, K] */
	const bf16 *g;       /* [K] norm weight, NULL: no norm */
	float eps;
	void *out;
	int N, Nk, K;
	int S, slice8; /* K slices per item, 16-byte vectors per slice */
	int act;       /* GLU: 0 silu, 1 tanh GELU */
	fi_cu_rope_out ro;
};

/* A 16-byte weight load through the read-only path (weights are never written by a kernel). */
static __device__ __forceinline__ bf16x8 ldw(const bf16x8 *p)
{
	uint4 u = __ldg((const uint4 *)p);
	return *(bf16x8 *)&u;
}

enum { FG_STORE, FG_ADD, FG_GLU, FG_ROPE };

/* Blocks per SM the register budget is set for: 6 (<= 40 registers) for one token, fewer as
 * the T accumulators grow; spill-free per `nvcc -Xptxas -v`. */
#define FG_MINB(T, ROWS) ((T) == 1 ? 6 : (T) == 2 ? ((ROWS) == 2 ? 4 : 5) : (ROWS) == 2 ? 3 : 4)

/* A block is FG_WARPS warps = FG_WARPS / S work items (a row, or a pair of rows) x S slices
 * of K: matrices with few rows (the 1B shape's 2048-row projections) still put enough warps
 * and loads in flight. Slices meet in shared memory; the first warp of each item finishes. */
template <int T, int EPI, bool NORM, bool F32OUT>
__global__ void __launch_bounds__(FG_WARPS * 32,
				  FG_MINB(T, (EPI == FG_GLU || EPI == FG_ROPE) ? 2 : 1))
fgemv_kernel(const fg_params p)
{
	constexpr int ROWS = (EPI == FG_GLU || EPI == FG_ROPE) ? 2 : 1;
	constexpr int U = ROWS == 1 ? 4 : 2; /* 16-byte loads in flight per lane */
	constexpr int NP = ROWS * T + T;     /* partials a warp hands on: acc, then ss */
	__shared__ float part[FG_WARPS][NP];
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, S = p.S;
	const int wi = blockIdx.x * (FG_WARPS / S) + w / S, slice = w % S;
	const int K = p.K, k8 = K / 8;

	/* The item's rows. ROPE: pair wi over q, then k, then v (segment chosen with constant
	 * indices: a dynamically indexed parameter array would go to local memory). */
	int seg = 0, r0 = wi, r1 = wi, ip = 0;
	bool valid;
	const bf16 *wb0 = p.w[0], *wb1 = p.w[EPI == FG_GLU ? 1 : 0];
	if (EPI == FG_ROPE) {
		int half = p.ro.hd / 2, pq = p.N / 2, pk = p.Nk / 2, pp = wi;
		valid = wi < pq + 2 * pk;
		if (pp >= pq) {
			pp -= pq;
			seg = 1;
			wb0 = wb1 = p.w[1];
			if (pp >= pk) {
				pp -= pk;
				seg = 2;
				wb0 = wb1 = p.w[2];
			}
		}
		ip = pp % half;
		r0 = (pp / half) * p.ro.hd + ip;
		r1 = r0 + half;
	} else {
		valid = wi < p.N;
	}
	const bf16x8 *wr[ROWS];
	wr[0] = (const bf16x8 *)(wb0 + (int64_t)r0 * K);
	wr[ROWS - 1] = (const bf16x8 *)(wb1 + (int64_t)r1 * K);
	const int i0 = slice * p.slice8, i1 = valid ? min(k8, i0 + p.slice8) : i0;

	/* What the epilogue needs besides the sums, fetched now so that its latency hides
	 * behind the weight stream: lane t < T of the first slice writes token t. */
	const bool writer = valid && slice == 0 && lane < T;
	float resid = 0.f, b0 = 0.f, b1 = 0.f, ang = 0.f;
	int64_t sl = -1;
	if (writer) {
		if (EPI == FG_ADD)
			resid = __bfloat162float(((const bf16 *)p.out)[(int64_t)lane * p.N + r0]);
		if (EPI == FG_ROPE) {
			rope_fetch f = rope_pair_fetch(p.bias[0], p.bias[1], p.bias[2], seg, r0, r1,
						       p.ro, lane, ip);
			b0 = f.b0, b1 = f.b1, ang = f.ang, sl = f.sl;
		}
	}

	float acc[ROWS][T], ss[T];
#pragma unroll
	for (int t = 0; t < T; t++) {
		ss[t] = 0.f;
#pragma unroll
		for (int r = 0; r < ROWS; r++)
			acc[r][t] = 0.f;
	}
	const bf16x8 *x8 = (const bf16x8 *)p.x, *g8 = (const bf16x8 *)p.g;
	for (int i = i0 + lane; i < i1; i += 32 * U) {
		bf16x8 wv[ROWS][U];
#pragma unroll
		for (int u = 0; u < U; u++)
#pragma unroll
			for (int r = 0; r < ROWS; r++)
				wv[r][u] = i + 32 * u < i1 ? ldw(&wr[r][i + 32 * u]) : bf16x8{};
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int idx = i + 32 * u;
			if (idx >= i1)
				break;
			float wf[ROWS][8], gf[8];
#pragma unroll
			for (int r = 0; r < ROWS; r++)
				bf16x8_to_f32(wv[r][u], wf[r]);
			if (NORM)
				bf16x8_to_f32(g8[idx], gf);
#pragma unroll
			for (int t = 0; t < T; t++) {
				float xf[8];
				bf16x8_to_f32(x8[(int64_t)t * k8 + idx], xf);
				if (NORM) {
#pragma unroll
					for (int j = 0; j < 8; j++) {
						ss[t] += xf[j] * xf[j];
						xf[j] *= gf[j];
					}
				}
#pragma unroll
				for (int r = 0; r < ROWS; r++)
#pragma unroll
					for (int j = 0; j < 8; j++)
						acc[r][t] += wf[r][j] * xf[j];
			}
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++) {
		if (NORM)
			ss[t] = warp_sum(ss[t]);
#pragma unroll
		for (int r = 0; r < ROWS; r++)
			acc[r][t] = warp_sum(acc[r][t]);
	}
	if (S > 1) {
		if (lane == 0) {
#pragma unroll
			for (int t = 0; t < T; t++) {
				part[w][ROWS * T + t] = ss[t];
#pragma unroll
				for (int r = 0; r < ROWS; r++)
					part[w][r * T + t] = acc[r][t];
			}
		}
		__syncthreads();
		if (slice)
			return;
		for (int s = 1; s < S; s++) {
#pragma unroll
			for (int t = 0; t < T; t++) {
				ss[t] += part[w + s][ROWS * T + t];
#pragma unroll
				for (int r = 0; r < ROWS; r++)
					acc[r][t] += part[w + s][r * T + t];
			}
		}
	}
	if (!writer)
		return;
	/* lane t writes token t's results (the sums are the same in every lane) */
	float rs = 1.f, v0 = 0.f, v1 = 0.f;
#pragma unroll
	for (int t = 0; t < T; t++)
		if (t == lane) {
			if (NORM)
				rs = rsqrtf(ss[t] / K + p.eps);
			v0 = acc[0][t] * rs;
			v1 = acc[ROWS - 1][t] * rs;
		}
	const int t = lane;
	if (EPI == FG_STORE) {
		if (F32OUT)
			((float *)p.out)[(int64_t)t * p.N + r0] = v0;
		else
			((bf16 *)p.out)[(int64_t)t * p.N + r0] = __float2bfloat16(v0);
	} else if (EPI == FG_ADD) {
		((bf16 *)p.out)[(int64_t)t * p.N + r0] = __float2bfloat16(resid + bf16_round(v0));
	} else if (EPI == FG_GLU) {
		((bf16 *)p.out)[(int64_t)t * p.N + r0] =
			__float2bfloat16(glu_mul1(p.act, bf16_round(v0), bf16_round(v1)));
	} else {
		rope_pair_store(seg, r0, r1, v0, v1, b0, b1, ang, (bf16 *)p.out + (int64_t)t * p.N,
				p.ro, sl, p.Nk);
	}
}

template <int T, int EPI, bool NORM, bool F32OUT>
static void launch(cudaStream_t st, fg_params p, int items)
{
	int k8 = p.K / 8;
	p.S = fused_slices(k8, 128, FG_WARPS); /* slices of >= 128 16-byte vectors */
	p.slice8 = ((k8 + p.S - 1) / p.S + 31) / 32 * 32;
	int per = FG_WARPS / p.S;
	fgemv_kernel<T, EPI, NORM, F32OUT><<<(items + per - 1) / per, FG_WARPS * 32, 0, st>>>(p);
}

template <int EPI, bool NORM, bool F32OUT>
static void launch_t(cudaStream_t st, const fg_params &p, int T, int items)
{
	switch (T) {
	case 1: launch<1, EPI, NORM, F32OUT>(st, p, items); break;
	case 2: launch<2, EPI, NORM, F32OUT>(st, p, items); break;
	case 3: launch<3, EPI, NORM, F32OUT>(st, p, items); break;
	default: launch<4, EPI, NORM, F32OUT>(st, p, items); break;
	}
}

extern "C" fi_err fi_cu_fgemv(cudaStream_t st, const struct fi_cu_fgemv *a, int T)
{
	fg_params p = {};
	int items = a->N;
	if (T < 1 || T > 4 || a->K % 8 || a->K <= 0 || a->N <= 0 || !fi_aligned16(a->x) ||
	    (a->g && !fi_aligned16(a->g)))
		return FI_EUNSUPPORTED;
	for (int i = 0; i < 3; i++) {
		if (a->w[i] && !fi_aligned16(a->w[i]))
			return FI_EUNSUPPORTED;
		p.w[i] = (const bf16 *)a->w[i];
		p.bias[i] = (const bf16 *)a->bias[i];
	}
	p.x = (const bf16 *)a->x;
	p.g = (const bf16 *)a->g;
	p.eps = a->eps;
	p.act = a->act;
	p.out = a->out;
	p.N = a->N;
	p.Nk = a->Nk;
	p.K = a->K;
	p.ro = a->ro;
	if (a->epi == FI_FG_ROPE) {
		if (p.ro.hd <= 0 || p.ro.hd % 2 || a->N % p.ro.hd || a->Nk % p.ro.hd)
			return FI_EUNSUPPORTED;
		items = (a->N + 2 * a->Nk) / 2;
	}
	bool norm = a->g != NULL;
	switch (a->epi) {
	case FI_FG_STORE:
		if (norm && a->out_f32) launch_t<FG_STORE, true, true>(st, p, T, items);
		else if (norm) launch_t<FG_STORE, true, false>(st, p, T, items);
		else if (a->out_f32) launch_t<FG_STORE, false, true>(st, p, T, items);
		else launch_t<FG_STORE, false, false>(st, p, T, items);
		break;
	case FI_FG_ADD:
		if (norm)
			return FI_EUNSUPPORTED;
		launch_t<FG_ADD, false, false>(st, p, T, items);
		break;
	case FI_FG_GLU:
		if (!a->w[1])
			return FI_EUNSUPPORTED;
		if (norm) launch_t<FG_GLU, true, false>(st, p, T, items);
		else launch_t<FG_GLU, false, false>(st, p, T, items);
		break;
	case FI_FG_ROPE:
		if (!a->w[1] || !a->w[2])
			return FI_EUNSUPPORTED;
		if (norm) launch_t<FG_ROPE, true, false>(st, p, T, items);
		else launch_t<FG_ROPE, false, false>(st, p, T, items);
		break;
	default:
		return FI_EUNSUPPORTED;
	}
	LAUNCH_CHECK();
	return FI_OK;
}
