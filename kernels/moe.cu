/* moe: a mixture-of-experts MLP on the device (backend.h, the moe op; twin fi_cpu_moe).
 *
 *   route     one warp per token: softmax of its E router logits (f32), the top k (the lower
 *             index on a tie, as torch.topk), renormalised when asked; pair p = t k + j gets
 *             expert idx[p] and weight wgt[p]; cnt[e] counts the pairs of each expert.
 *   offsets   one block: off[e] = pairs of experts below e (exclusive scan), cur = off, and
 *             the list of the experts with pairs (chosen).
 *   scatter   each pair takes the next slot of its expert: order[s] = p, pos_of[p] = s, so the
 *             pairs of expert e are order[off[e] .. off[e+1]) (in any order: each pair's
 *             result depends only on itself, so the output is deterministic).
 *   up        grid (rows of Fm, min(T k, E)): block row y takes the y-th expert with pairs
 *             (the rest return), so a decode step launches and reads only the chosen
 *             experts; each warp takes RPW rows of
 *             gate and up and multiplies them with up to PB pairs' inputs at a time (each
 *             weight row read once per PB pairs), h[s] = act(x Wg^T) * (x Wu^T), rounded as
 *             the bf16 reference rounds (both products to bf16, the activation to bf16).
 *   down      the same over the D rows of the expert's down weight: yd[s] = h[s] Wd^T (bf16).
 *   combine   one block per token: out[t] = sum of wgt[p] yd[pos_of[p]] over its k pairs, in
 *             increasing expert order as transformers adds them, in f32, rounded once.
 * Up to MOE_SMALL_T tokens, route, offsets and scatter run as one single-block kernel.
 * gather (xs[s] = x[token of order[s]]) serves the prefill path of lib/backend/cuda/moe.c,
 * which runs up and down as cuBLAS grouped GEMMs over xs instead.
 * Everything reads its sizes from the device (off), so a decode step can live in a graph. */
#include <math.h>

#include "common.cuh"

#define MOE_WARPS 8
#define MOE_RPW 2   /* weight rows per warp at a time */
#define MOE_PB 8    /* pairs multiplied per pass over a weight row */
#define MOE_MAXE 1024
#define MOE_MAXK 32
#define MOE_SMALL_T 32 /* tokens routed in one block (32 T threads at most MOE_MAXE) */

/* One warp routes token t (pairs t k .. t k + k - 1) and counts them into cnt (global or
 * shared). */
static __device__ __forceinline__ void route_token(const fi_cu_moe &p, int t, int *cnt)
{
	const int lane = threadIdx.x & 31;
	const float *lg = p.router + (int64_t)t * p.E;
	float v[MOE_MAXE / 32];
	float mx = -INFINITY, sum = 0.f;
#pragma unroll
	for (int i = 0; i < MOE_MAXE / 32; i++) {
		int e = lane + 32 * i;
		v[i] = e < p.E ? lg[e] : -INFINITY;
		mx = fmaxf(mx, v[i]);
	}
	for (int o = 16; o > 0; o >>= 1)
		mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
#pragma unroll
	for (int i = 0; i < MOE_MAXE / 32; i++) {
		v[i] = lane + 32 * i < p.E ? expf(v[i] - mx) : 0.f;
		sum += v[i];
	}
	sum = warp_sum(sum);
	float wsum = 0.f, w[MOE_MAXK];
	int id[MOE_MAXK];
	for (int j = 0; j < p.k; j++) {
		/* the largest probability left; the lower index wins a tie */
		float best = -1.f;
		int be = 0x7fffffff;
#pragma unroll
		for (int i = 0; i < MOE_MAXE / 32; i++) {
			int e = lane + 32 * i;
			if (e < p.E && (v[i] > best || (v[i] == best && e < be))) {
				best = v[i];
				be = e;
			}
		}
		for (int o = 16; o > 0; o >>= 1) {
			float ob = __shfl_xor_sync(0xffffffffu, best, o);
			int oe = __shfl_xor_sync(0xffffffffu, be, o);
			if (ob > best || (ob == best && oe < be)) {
				best = ob;
				be = oe;
			}
		}
		if ((be & 31) == lane) /* its owner drops it from the next round */
			v[be >> 5] = -2.f;
		id[j] = be;
		w[j] = best / sum;
		wsum += w[j];
	}
	if (lane < p.k) {
		float wj = 0.f;
		int ej = 0;
		for (int j = 0; j < p.k; j++)
			if (j == lane) {
				wj = w[j];
				ej = id[j];
			}
		p.idx[(int64_t)t * p.k + lane] = ej;
		p.wgt[(int64_t)t * p.k + lane] = p.norm ? wj / wsum : wj;
		atomicAdd(&cnt[ej], 1);
	}
}

__global__ void moe_route_kernel(fi_cu_moe p)
{
	const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
	if (t < p.T)
		route_token(p, t, p.cnt);
}

/* Exclusive scan over the block of x (one value a thread, blockDim <= MOE_MAXE): returns
 * the sum of x over the threads below; *total gets the sum over all. */
static __device__ __forceinline__ int block_scan(int x, int *part, int *total)
{
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	int in = x;
	for (int o = 1; o < 32; o <<= 1) { /* inclusive scan in the warp */
		int y = __shfl_up_sync(0xffffffffu, in, o);
		if (lane >= o)
			in += y;
	}
	if (lane == 31)
		part[w] = in;
	__syncthreads();
	if (threadIdx.x == 0) {
		int run = 0;
		for (int i = 0; i < (int)(blockDim.x >> 5); i++) {
			int n = part[i];
			part[i] = run;
			run += n;
		}
		part[blockDim.x >> 5] = run;
	}
	__syncthreads();
	int ex = part[w] + in - x;
	*total = part[blockDim.x >> 5];
	__syncthreads(); /* part is reused by the next scan */
	return ex;
}

/* off[e] = pairs of the experts below e, cur = off; chosen[0] = experts with pairs and
 * chosen[1..] those experts in increasing order, so the rows kernels run blocks only for
 * them. */
__global__ void moe_offsets_kernel(fi_cu_moe p)
{
	__shared__ int part[MOE_MAXE / 32 + 1];
	const int e = threadIdx.x;
	int c = e < p.E ? p.cnt[e] : 0, n, na;
	int ex = block_scan(c, part, &n);
	int rank = block_scan(c > 0, part, &na);
	if (e < p.E) {
		p.off[e] = ex;
		p.cur[e] = ex;
		if (c > 0)
			p.chosen[1 + rank] = e;
	}
	if (e == 0) {
		p.off[p.E] = n;
		p.chosen[0] = na;
	}
}

__global__ void moe_scatter_kernel(fi_cu_moe p)
{
	int64_t n = (int64_t)p.T * p.k;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		int s = atomicAdd(&p.cur[p.idx[i]], 1);
		p.order[s] = (int32_t)i;
		p.pos_of[i] = s;
	}
}

/* Up to MOE_SMALL_T tokens (decode steps): route, offsets and scatter in one block, the
 * counts in shared memory; one launch where the general path takes a memset and three.
 * blockDim: max(32 T, E) rounded up to a warp (at most MOE_MAXE). */
__global__ void __launch_bounds__(MOE_MAXE) moe_route_small_kernel(fi_cu_moe p)
{
	__shared__ int cnt[MOE_MAXE], cur[MOE_MAXE], part[MOE_MAXE / 32 + 1];
	const int i = threadIdx.x;
	for (int e = i; e < p.E; e += blockDim.x)
		cnt[e] = 0;
	__syncthreads();
	if ((i >> 5) < p.T)
		route_token(p, i >> 5, cnt);
	__syncthreads(); /* idx and cnt written by the routing warps are seen by all */
	int c = i < p.E ? cnt[i] : 0, n, na;
	int ex = block_scan(c, part, &n);
	int rank = block_scan(c > 0, part, &na);
	if (i < p.E) {
		p.cnt[i] = c;
		p.off[i] = ex;
		cur[i] = ex;
		if (c > 0)
			p.chosen[1 + rank] = i;
	}
	if (i == 0) {
		p.off[p.E] = n;
		p.chosen[0] = na;
	}
	__syncthreads();
	for (int q = i; q < p.T * p.k; q += blockDim.x) {
		int s = atomicAdd(&cur[p.idx[q]], 1);
		p.order[s] = q;
		p.pos_of[q] = s;
	}
}

/* For pair slot s: the input row (x of its token for up, h[s] for down). */
template <bool UP>
static __device__ __forceinline__ const bf16x8 *in_row(const fi_cu_moe &p, int s, int K)
{
	if (UP)
		return (const bf16x8 *)((const bf16 *)p.x + (int64_t)(p.order[s] / p.k) * K);
	return (const bf16x8 *)((const bf16 *)p.h + (int64_t)s * K);
}

/* UP: rows n of gate and up (N = Fm, K = D); else rows n of down (N = D, K = Fm). PB: pairs
 * a pass; 1 where no expert has two (a one-token step): 4 rather than 32 accumulators a lane,
 * so more warps an SM, and the K loop unrolled so that each lane has 4 rounds of loads in
 * flight (the down rows of Qwen3-MoE are 3 rounds long). The sums are taken in the same
 * order either way. */
template <bool UP, int PB>
__global__ void __launch_bounds__(MOE_WARPS * 32) moe_rows_kernel(fi_cu_moe p)
{
	if ((int)blockIdx.y >= p.chosen[0])
		return; /* fewer experts chosen than blocks: only theirs are read */
	const int e = p.chosen[1 + blockIdx.y], lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
	const int b = p.off[e], ne = p.off[e + 1] - b;
	const int N = UP ? p.Fm : p.D, K = UP ? p.D : p.Fm, K8 = K / 8;
	const int n0 = (blockIdx.x * MOE_WARPS + wp) * MOE_RPW;
	const bf16 *W0 = (const bf16 *)(UP ? p.wg : p.wd) + (int64_t)e * N * K;
	const bf16 *W1 = UP ? (const bf16 *)p.wu + (int64_t)e * N * K : nullptr;
	for (int i0 = 0; i0 < ne; i0 += PB) {
		const int np = min(PB, ne - i0);
		float a0[MOE_RPW][PB], a1[MOE_RPW][PB];
#pragma unroll
		for (int r = 0; r < MOE_RPW; r++)
#pragma unroll
			for (int q = 0; q < PB; q++)
				a0[r][q] = a1[r][q] = 0.f;
#pragma unroll(PB == 1 ? 4 : 1)
		for (int c = lane; c < K8; c += 32) {
			float w0[MOE_RPW][8], w1[MOE_RPW][8];
#pragma unroll
			for (int r = 0; r < MOE_RPW; r++) {
				int n = min(n0 + r, N - 1);
				bf16x8_to_f32(((const bf16x8 *)(W0 + (int64_t)n * K))[c], w0[r]);
				if (UP)
					bf16x8_to_f32(((const bf16x8 *)(W1 + (int64_t)n * K))[c], w1[r]);
			}
#pragma unroll
			for (int q = 0; q < PB; q++) {
				if (q >= np)
					break;
				float xv[8];
				bf16x8_to_f32(in_row<UP>(p, b + i0 + q, K)[c], xv);
#pragma unroll
				for (int r = 0; r < MOE_RPW; r++)
#pragma unroll
					for (int i = 0; i < 8; i++) {
						a0[r][q] += w0[r][i] * xv[i];
						if (UP)
							a1[r][q] += w1[r][i] * xv[i];
					}
			}
		}
#pragma unroll
		for (int r = 0; r < MOE_RPW; r++) {
			const int n = n0 + r;
#pragma unroll
			for (int q = 0; q < PB; q++) {
				if (q >= np)
					break;
				float g = warp_sum(a0[r][q]), u = UP ? warp_sum(a1[r][q]) : 0.f;
				if (lane != 0 || n >= N)
					continue;
				const int s = b + i0 + q;
				if (UP) {
					g = bf16_round(g);
					u = bf16_round(u);
					float act = p.act ? gelu_tanh(g) : g / (1.f + __expf(-g));
					((bf16 *)p.h)[(int64_t)s * N + n] = __float2bfloat16(bf16_round(act) * u);
				} else {
					((bf16 *)p.yd)[(int64_t)s * N + n] = __float2bfloat16(g);
				}
			}
		}
	}
}

__global__ void moe_gather_kernel(fi_cu_moe p, bf16x8 *__restrict__ xs)
{
	const int s = blockIdx.x, D8 = p.D / 8;
	const bf16x8 *src = (const bf16x8 *)((const bf16 *)p.x + (int64_t)(p.order[s] / p.k) * p.D);
	for (int c = threadIdx.x; c < D8; c += blockDim.x)
		xs[(int64_t)s * D8 + c] = src[c];
}

__global__ void moe_combine_kernel(fi_cu_moe p)
{
	const int t = blockIdx.x;
	int sl[MOE_MAXK], ex[MOE_MAXK];
	float wt[MOE_MAXK];
	/* the token's pairs in increasing expert order (k is small) */
	for (int j = 0; j < p.k; j++) {
		ex[j] = p.idx[(int64_t)t * p.k + j];
		wt[j] = p.wgt[(int64_t)t * p.k + j];
		sl[j] = p.pos_of[(int64_t)t * p.k + j];
	}
	for (int a = 1; a < p.k; a++)
		for (int c = a; c > 0 && ex[c - 1] > ex[c]; c--) {
			int te = ex[c], ts = sl[c];
			float tw = wt[c];
			ex[c] = ex[c - 1], sl[c] = sl[c - 1], wt[c] = wt[c - 1];
			ex[c - 1] = te, sl[c - 1] = ts, wt[c - 1] = tw;
		}
	for (int d = threadIdx.x; d < p.D; d += blockDim.x) {
		float acc = 0.f;
		for (int j = 0; j < p.k; j++)
			acc += __bfloat162float(((const bf16 *)p.yd)[(int64_t)sl[j] * p.D + d]) * wt[j];
		((bf16 *)p.out)[(int64_t)t * p.D + d] = __float2bfloat16(acc);
	}
}

extern "C" fi_err fi_cu_moe_route(cudaStream_t st, const struct fi_cu_moe *a)
{
	if (a->E < 1 || a->E > MOE_MAXE || a->k < 1 || a->k > MOE_MAXK || a->k > a->E)
		return fi_fail(FI_EUNSUPPORTED, "moe: %d of %d experts (at most %d of %d)", a->k, a->E,
			       MOE_MAXK, MOE_MAXE);
	if (a->T <= 0)
		return FI_OK;
	if (a->T <= MOE_SMALL_T) {
		int th = 32 * a->T > a->E ? 32 * a->T : (a->E + 31) / 32 * 32;
		moe_route_small_kernel<<<1, th, 0, st>>>(*a);
		LAUNCH_CHECK();
		return FI_OK;
	}
	CU_CHECK(cudaMemsetAsync(a->cnt, 0, sizeof(int32_t) * (size_t)a->E, st));
	moe_route_kernel<<<(a->T + 7) / 8, 256, 0, st>>>(*a);
	LAUNCH_CHECK();
	moe_offsets_kernel<<<1, (a->E + 31) / 32 * 32, 0, st>>>(*a);
	LAUNCH_CHECK();
	int64_t n = (int64_t)a->T * a->k, blocks = (n + 255) / 256;
	moe_scatter_kernel<<<(int)(blocks < 4096 ? blocks : 4096), 256, 0, st>>>(*a);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_moe_experts(cudaStream_t st, const struct fi_cu_moe *a)
{
	const int rows = MOE_WARPS * MOE_RPW;
	if (a->D % 8 || a->Fm % 8 || !fi_aligned16(a->x) || !fi_aligned16(a->h) ||
	    !fi_aligned16(a->wg) || !fi_aligned16(a->wu) || !fi_aligned16(a->wd))
		return fi_fail(FI_EUNSUPPORTED, "moe: hidden %d and expert size %d must be multiples "
			       "of 8, the buffers 16-byte aligned", a->D, a->Fm);
	if (a->T <= 0)
		return FI_OK;
	/* a block row per chosen expert (chosen[0] of them, at most min(T k, E)): a decode step
	 * launches k rows of blocks, not E */
	const int ny = a->T * a->k < a->E ? a->T * a->k : a->E;
	const dim3 gu((a->Fm + rows - 1) / rows, ny), gd((a->D + rows - 1) / rows, ny);
	if (a->one) {
		moe_rows_kernel<true, 1><<<gu, MOE_WARPS * 32, 0, st>>>(*a);
		LAUNCH_CHECK();
		moe_rows_kernel<false, 1><<<gd, MOE_WARPS * 32, 0, st>>>(*a);
	} else {
		moe_rows_kernel<true, MOE_PB><<<gu, MOE_WARPS * 32, 0, st>>>(*a);
		LAUNCH_CHECK();
		moe_rows_kernel<false, MOE_PB><<<gd, MOE_WARPS * 32, 0, st>>>(*a);
	}
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_moe_gather(cudaStream_t st, const struct fi_cu_moe *a, void *xs)
{
	int P = a->T * a->k;
	if (P <= 0)
		return FI_OK;
	moe_gather_kernel<<<P, 128, 0, st>>>(*a, (bf16x8 *)xs);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_moe_combine(cudaStream_t st, const struct fi_cu_moe *a)
{
	if (a->T <= 0)
		return FI_OK;
	moe_combine_kernel<<<a->T, 256, 0, st>>>(*a);
	LAUNCH_CHECK();
	return FI_OK;
}
