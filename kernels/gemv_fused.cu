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
 *   FG_GLU    out[T,F] = silu(x Wg^T) * (x Wu^T), a warp streams row n of both weights.
 *   FG_ROPE   q, k, v projections (+ bias) with RoPE applied and k, v written to the paged
 *             cache at each token's slot: a warp streams the rotate-half pair of rows
 *             (i, i + hd/2) of one head, so it holds both halves of the rotation. q goes to
 *             out [T, Hq*hd]; k and v are not stored anywhere else.
 *
 * Each warp streams its rows with 16-byte loads, U vectors per lane per row and two
 * iterations in flight ahead of the one being multiplied. With programmatic dependent launch
 * (sm_90) the first two iterations' weight loads are issued before griddepcontrol.wait: the
 * weights are never written by a kernel, so a kernel launched early streams them while the
 * previous one (attention, the previous product) finishes; x is only read after the wait. */
#include "common.cuh"

#define FG_WARPS 8

struct fg_params {
	const bf16 *w[3];    /* STORE/ADD: w[0]; GLU: gate, up; ROPE: q [Nq,K], k, v [Nk,K] */
	const bf16 *bias[3]; /* ROPE: q, k, v biases or NULL */
	const bf16 *x;       /* [T, K] */
	const bf16 *g;       /* [K] norm weight, NULL: no norm */
	float eps;
	void *out;
	int N, Nk, K, hd;
	const int32_t *pos, *slot;
	const float *inv_freq;
	bf16 *kc, *vc;
	int64_t n_slots;
};

/* Loads of weights, which no kernel writes: read-only path, no L1 allocation. */
static __device__ __forceinline__ bf16x8 ldw_nc(const bf16x8 *p)
{
	uint4 u;
	asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
		     : "=r"(u.x), "=r"(u.y), "=r"(u.z), "=r"(u.w)
		     : "l"(p));
	return *(bf16x8 *)&u;
}

template <int ROWS, int U>
static __device__ __forceinline__ void load_it(bf16x8 (&v)[ROWS][U], const bf16x8 *const (&wr)[ROWS],
					       int i, int k8)
{
#pragma unroll
	for (int u = 0; u < U; u++) {
		int idx = i + 32 * u;
#pragma unroll
		for (int r = 0; r < ROWS; r++)
			v[r][u] = idx < k8 ? ldw_nc(&wr[r][idx]) : bf16x8{};
	}
}

enum { FG_STORE, FG_ADD, FG_GLU, FG_ROPE };

template <int T, int EPI, bool NORM, bool F32OUT>
__global__ void
__launch_bounds__(FG_WARPS * 32, (T >= 3 && (EPI == FG_GLU || EPI == FG_ROPE)) ? 3 : 4)
fgemv_kernel(const fg_params p)
{
	constexpr int ROWS = (EPI == FG_GLU || EPI == FG_ROPE) ? 2 : 1;
	constexpr int U = ROWS == 1 ? 4 : 2;
	const int lane = threadIdx.x & 31;
	const int wi = blockIdx.x * FG_WARPS + (threadIdx.x >> 5);
	const int K = p.K, k8 = K / 8;

	/* The warp's rows. ROPE: pair wi over q, then k, then v (segment chosen with constant
	 * indices: a dynamically indexed parameter array would go to local memory). */
	int seg = 0, r0 = wi, r1 = wi, half = p.hd / 2;
	bool valid;
	const bf16 *wb0 = p.w[0], *wb1 = p.w[EPI == FG_GLU ? 1 : 0];
	if (EPI == FG_ROPE) {
		int pq = p.N / 2, pk = p.Nk / 2, pp = wi;
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
		r0 = (pp / half) * p.hd + pp % half;
		r1 = r0 + half;
	} else {
		valid = wi < p.N;
	}
	if (!valid)
		r0 = r1 = 0; /* stream row 0 harmlessly until the wait; nothing is written */
	const bf16x8 *wr[ROWS];
	wr[0] = (const bf16x8 *)(wb0 + (int64_t)r0 * K);
	wr[ROWS - 1] = (const bf16x8 *)(wb1 + (int64_t)r1 * K);

	bf16x8 a[ROWS][U], b[ROWS][U];
	int i = lane;
	load_it<ROWS, U>(a, wr, i, k8);
	load_it<ROWS, U>(b, wr, i + 32 * U, k8);
	fi_pdl_wait();
	fi_pdl_trigger();
	if (!valid)
		return;

	float acc[ROWS][T], ss[T];
#pragma unroll
	for (int t = 0; t < T; t++) {
		ss[t] = 0.f;
#pragma unroll
		for (int r = 0; r < ROWS; r++)
			acc[r][t] = 0.f;
	}
	const bf16x8 *x8 = (const bf16x8 *)p.x, *g8 = (const bf16x8 *)p.g;
	for (; i < k8; i += 32 * U) {
#pragma unroll
		for (int u = 0; u < U; u++) {
			int idx = i + 32 * u;
			if (idx >= k8)
				break;
			float wf[ROWS][8], gf[8];
#pragma unroll
			for (int r = 0; r < ROWS; r++)
				bf16x8_to_f32(a[r][u], wf[r]);
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
#pragma unroll
		for (int r = 0; r < ROWS; r++)
#pragma unroll
			for (int u = 0; u < U; u++)
				a[r][u] = b[r][u];
		load_it<ROWS, U>(b, wr, i + 64 * U, k8);
	}
#pragma unroll
	for (int t = 0; t < T; t++) {
		if (NORM)
			ss[t] = warp_sum(ss[t]);
#pragma unroll
		for (int r = 0; r < ROWS; r++)
			acc[r][t] = warp_sum(acc[r][t]);
	}
	if (lane >= T)
		return;
	/* lane t writes token t's results (the values are the same in every lane) */
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
		bf16 *o = (bf16 *)p.out + (int64_t)t * p.N + r0;
		*o = __float2bfloat16(__bfloat162float(*o) + bf16_round(v0));
	} else if (EPI == FG_GLU) {
		((bf16 *)p.out)[(int64_t)t * p.N + r0] =
			__float2bfloat16(silu_mul1(bf16_round(v0), bf16_round(v1)));
	} else {
		const bf16 *bias = seg == 0 ? p.bias[0] : seg == 1 ? p.bias[1] : p.bias[2];
		if (bias) {
			v0 += __bfloat162float(bias[r0]);
			v1 += __bfloat162float(bias[r1]);
		}
		float x1 = bf16_round(v0), x2 = bf16_round(v1);
		bf16 o1, o2;
		if (seg < 2) { /* as kernels/rope.cu: the angle in f32, full range reduction */
			float s, c;
			sincosf((float)p.pos[t] * p.inv_freq[r0 % p.hd], &s, &c);
			o1 = __float2bfloat16(x1 * c - x2 * s);
			o2 = __float2bfloat16(x2 * c + x1 * s);
		} else {
			o1 = __float2bfloat16(x1);
			o2 = __float2bfloat16(x2);
		}
		if (seg == 0) {
			bf16 *q = (bf16 *)p.out + (int64_t)t * p.N;
			q[r0] = o1;
			q[r1] = o2;
		} else {
			int64_t sl = p.slot[t];
			if (sl >= 0 && sl < p.n_slots) { /* as kv_write: padding (-1) writes nothing */
				bf16 *d = (seg == 1 ? p.kc : p.vc) + sl * p.Nk;
				d[r0] = o1;
				d[r1] = o2;
			}
		}
	}
}

template <int T, int EPI, bool NORM, bool F32OUT>
static void launch(cudaStream_t st, const fg_params &p, int rows, int pdl)
{
	cudaLaunchConfig_t cfg = {};
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = 1;
	cfg.gridDim = dim3((rows + FG_WARPS - 1) / FG_WARPS);
	cfg.blockDim = dim3(FG_WARPS * 32);
	cfg.stream = st;
	cfg.attrs = at;
	cfg.numAttrs = pdl ? 1 : 0;
	(void)cudaLaunchKernelEx(&cfg, fgemv_kernel<T, EPI, NORM, F32OUT>, p);
}

template <int EPI, bool NORM, bool F32OUT>
static void launch_t(cudaStream_t st, const fg_params &p, int T, int rows, int pdl)
{
	switch (T) {
	case 1: launch<1, EPI, NORM, F32OUT>(st, p, rows, pdl); break;
	case 2: launch<2, EPI, NORM, F32OUT>(st, p, rows, pdl); break;
	case 3: launch<3, EPI, NORM, F32OUT>(st, p, rows, pdl); break;
	default: launch<4, EPI, NORM, F32OUT>(st, p, rows, pdl); break;
	}
}

extern "C" fi_err fi_cu_fgemv(cudaStream_t st, const struct fi_cu_fgemv *a, int T)
{
	fg_params p = {};
	int rows = a->N;
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
	p.out = a->out;
	p.N = a->N;
	p.Nk = a->Nk;
	p.K = a->K;
	p.hd = a->hd;
	p.pos = a->pos;
	p.slot = a->slot;
	p.inv_freq = a->inv_freq;
	p.kc = (bf16 *)a->kc;
	p.vc = (bf16 *)a->vc;
	p.n_slots = a->n_slots;
	bool norm = a->g != NULL;
	switch (a->epi) {
	case FI_FG_STORE:
		if (norm && a->out_f32) launch_t<FG_STORE, true, true>(st, p, T, rows, a->pdl);
		else if (norm) launch_t<FG_STORE, true, false>(st, p, T, rows, a->pdl);
		else if (a->out_f32) launch_t<FG_STORE, false, true>(st, p, T, rows, a->pdl);
		else launch_t<FG_STORE, false, false>(st, p, T, rows, a->pdl);
		break;
	case FI_FG_ADD:
		if (norm)
			return FI_EUNSUPPORTED;
		launch_t<FG_ADD, false, false>(st, p, T, rows, a->pdl);
		break;
	case FI_FG_GLU:
		if (!a->w[1])
			return FI_EUNSUPPORTED;
		if (norm) launch_t<FG_GLU, true, false>(st, p, T, rows, a->pdl);
		else launch_t<FG_GLU, false, false>(st, p, T, rows, a->pdl);
		break;
	case FI_FG_ROPE:
		if (a->hd <= 0 || a->hd % 2 || a->N % a->hd || a->Nk % a->hd || !a->w[1] || !a->w[2])
			return FI_EUNSUPPORTED;
		rows = (a->N + 2 * a->Nk) / 2;
		if (norm) launch_t<FG_ROPE, true, false>(st, p, T, rows, a->pdl);
		else launch_t<FG_ROPE, false, false>(st, p, T, rows, a->pdl);
		break;
	default:
		return FI_EUNSUPPORTED;
	}
	LAUNCH_CHECK();
	return FI_OK;
}
