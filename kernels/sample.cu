/* sample: one token per row of logits[n,V] (f32) as lib/backend/sample.c's fi_sample_pick draws
 * it: the repetition penalty over the row's window (logit / penalty, or x penalty when
 * negative, for each distinct window token: a bitmap of the vocabulary in shared memory),
 * then s = logit / temperature (f32, rounded as on the CPU),
 * top-k (ties with the k-th kept), softmax in double over candidates ordered by (s desc,
 * id asc), top-p (drop the ranks whose tail is <= 1 - top_p), min-p, then the inverse CDF
 * at the host's u. Greedy rows (temperature <= 0) take the argmax, lowest id on ties.
 *
 * One block per row, without sorting the vocabulary:
 *   1. M = max s.
 *   2. A histogram of d = (M - s) in BINS bins spanning the row's finite range (the last
 *      one also takes -inf and NaN): counts and double masses exp(s - M); Z = their sum.
 *   3. The window: the tokens that can matter, in whole bins. With top-k the bins up to the
 *      k-th token; else the bins whose mass (with everything below them) can still be kept
 *      by top-p (tail > (1 - 1e-9) cut, the margin covering the sums' rounding) and whose
 *      ratio to the max can pass min-p (a margin of 1/64 in s). Dropped bins are certainly
 *      dropped on the CPU too. Plain temperature keeps everything: then the window is the
 *      one bin where the cumulative mass crosses u Z.
 *   4. The window's tokens (at most CAP) are gathered, sorted in shared memory, and the
 *      CPU's loops run over them on one thread in the CPU's order and roundings (the
 *      softmax sum over the top-k set is sequential as on the CPU; without top-k the mass
 *      outside the window comes from the parallel sums, the only rounding difference).
 * A window of more than CAP tokens returns -1 (the host samples that row), as does a row with
 * a penalty when the vocabulary's bitmap does not fit in shared memory.
 *
 * Log-probabilities (rows with n_logprobs >= 0) are those of the raw logits: M = max, Z =
 * sum exp(x - M) in double (a parallel sum: within rounding of the CPU's sequential one),
 * log p = x - M - log Z; the n_logprobs alternatives are found one at a time, each the best
 * token after the previous in the (logit desc, id asc) order, NaN never among them. */
#include <math.h>

#include "common.cuh"

#define THREADS 1024
#define CAP 2048
#define BINS 1024

struct cand {
	float s;
	int id;
};

/* (s desc, id asc): the CPU's total order */
static __device__ __forceinline__ bool before(float as, int ai, float bs, int bi)
{
	return as > bs || (as == bs && ai < bi);
}

/* One row's logits as the CPU's processors see them: penalised where the window has the
 * token (bits: a bitmap of the vocabulary, NULL without a penalty), then divided by the
 * temperature. */
struct rowv {
	const float *x;
	const uint32_t *bits;
	float pen, t;
	__device__ __forceinline__ float pen_at(int i) const
	{
		float v = x[i];
		if (bits && (bits[i >> 5] >> (i & 31) & 1u))
			v = v < 0.f ? __fmul_rn(v, pen) : __fdiv_rn(v, pen);
		return v;
	}
	__device__ __forceinline__ float scaled(int i) const { return __fdiv_rn(pen_at(i), t); }
};

static __device__ __forceinline__ int bin_of(float s, float M, float scale)
{
	float d = (M - s) * scale;
	return d < (float)(BINS - 1) ? (int)d : BINS - 1; /* NaN, -inf: the last bin */
}

template <typename T, typename F> static __device__ T block_reduce(T v, F op, T *red)
{
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1)
		v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
	__syncthreads(); /* red may still be read from the last call */
	if (lane == 0)
		red[w] = v;
	__syncthreads();
	v = red[0];
	for (int i = 1; i < (int)(blockDim.x >> 5); i++)
		v = op(v, red[i]);
	return v;
}

struct smem {
	int hc[BINS];
	double hm[BINS];
	float cs[CAP];
	int ci[CAP];
	double pr[CAP]; /* e, then probabilities */
	double redd[32];
	float redf[32];
	int redi[32];
	int lo, hi, nc; /* window: bins lo..hi; gathered count */
	int out, kept;
	double base; /* mass of the bins before the window (plain temperature) */
};

static __device__ void greedy(const rowv &rv, int V, smem &sh)
{
	float bv = -INFINITY;
	int bi = 0x7fffffff;
	for (int i = threadIdx.x; i < V; i += blockDim.x) {
		float v = rv.pen_at(i);
		if (v > bv || (v == bv && i < bi))
			bv = v, bi = i;
	}
	float m = block_reduce(bv, [](float a, float b) { return fmaxf(a, b); }, sh.redf);
	int id = block_reduce(bv == m ? bi : 0x7fffffff, [](int a, int b) { return min(a, b); },
			      sh.redi);
	if (threadIdx.x == 0) {
		sh.out = id == 0x7fffffff ? 0 : id;
		sh.kept = 1;
	}
}

/* The best (v, i) of the block in the (v desc, i asc) order; every thread gets it. */
static __device__ void block_best(float &bv, int &bi, smem &sh)
{
	int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		float v = __shfl_xor_sync(0xffffffffu, bv, o);
		int i = __shfl_xor_sync(0xffffffffu, bi, o);
		if (v > bv || (v == bv && i < bi))
			bv = v, bi = i;
	}
	__syncthreads(); /* the arrays may still be read from the last call */
	if (lane == 0)
		sh.redf[w] = bv, sh.redi[w] = bi;
	__syncthreads();
	bv = sh.redf[0], bi = sh.redi[0];
	for (int k = 1; k < (int)(blockDim.x >> 5); k++)
		if (sh.redf[k] > bv || (sh.redf[k] == bv && sh.redi[k] < bi))
			bv = sh.redf[k], bi = sh.redi[k];
}

/* Raw log-probabilities of row r: the chosen token's, then nt alternatives. */
static __device__ void logprobs(const fi_sample_args &a, int r, int tok, int nt, smem &sh)
{
	const float *x = a.logits_d + (int64_t)r * a.V;
	const int V = a.V;
	float mx = -INFINITY;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		mx = fmaxf(mx, x[i]); /* NaN is passed over */
	const float M = block_reduce(mx, [](float p, float q) { return fmaxf(p, q); }, sh.redf);
	double z = 0;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		if (!isnan(x[i]))
			z += exp((double)x[i] - (double)M);
	const double Z = block_reduce(z, [](double p, double q) { return p + q; }, sh.redd);
	const double lz = (double)M + log(Z);
	if (threadIdx.x == 0)
		a.logprob_d[r] = isnan(x[tok]) ? -INFINITY : (float)((double)x[tok] - lz);
	float pv = INFINITY;
	int pi = -1;
	for (int k = 0; k < nt; k++) {
		float bv = -INFINITY;
		int bi = 0x7fffffff;
		for (int i = threadIdx.x; i < V; i += blockDim.x) {
			float v = x[i];
			if (!isnan(v) && (v < pv || (v == pv && i > pi)) && (v > bv || (v == bv && i < bi)))
				bv = v, bi = i;
		}
		block_best(bv, bi, sh);
		if (threadIdx.x == 0) {
			fi_sample_top *o = a.top_d + (int64_t)r * a.max_top + k;
			o->id = bi == 0x7fffffff ? -1 : bi;
			o->logprob = bi == 0x7fffffff ? NAN : (float)((double)bv - lz);
		}
		pv = bv, pi = bi;
	}
}

/* Bitonic sort of sh.cs/ci[0..P) by before(), P a power of two. */
static __device__ void sort_window(smem &sh, int P)
{
	for (int k = 2; k <= P; k <<= 1)
		for (int j = k >> 1; j > 0; j >>= 1) {
			for (int i = threadIdx.x; i < P; i += blockDim.x) {
				int l = i ^ j;
				if (l <= i)
					continue;
				bool up = (i & k) == 0;
				bool sw = up ? before(sh.cs[l], sh.ci[l], sh.cs[i], sh.ci[i])
					     : before(sh.cs[i], sh.ci[i], sh.cs[l], sh.ci[l]);
				if (sw) {
					float ts = sh.cs[i];
					int ti = sh.ci[i];
					sh.cs[i] = sh.cs[l], sh.ci[i] = sh.ci[l];
					sh.cs[l] = ts, sh.ci[l] = ti;
				}
			}
			__syncthreads();
		}
}

/* Thread 0, window from rank 0 holding the top-k set (topk) or every token that top-p and
 * min-p can keep: the CPU's steps 3-6 over cs/ci[0..n). Z: the softmax sum over the set
 * (computed here with top-k; else the row's, of which the window holds a part). */
static __device__ void finish_top(smem &sh, const fi_sample_row &p, int n, int topk, double Z,
				  int V)
{
	double *e = sh.pr;
	int total = topk ? n : V; /* tokens in the set; those past n are certainly dropped */
	if (topk) {
		Z = 0;
		for (int i = 0; i < n; i++)
			Z += e[i];
	}
	if (p.top_p < 1.0f) {
		double cut = 1.0 - (double)p.top_p, tail = 0, Sw = 0;
		int keep = total;
		if (n < total) { /* the dropped bins' tail, then the CPU's loop from there */
			for (int i = 0; i < n; i++)
				Sw += e[i];
			tail = (Z - Sw) / Z;
			keep = n;
		}
		for (int i = n - 1; i > 0; i--) {
			tail += e[i] / Z;
			if (tail <= cut)
				keep = i;
			else
				break;
		}
		if (keep < total) {
			n = keep, total = keep;
			Z = 0;
			for (int i = 0; i < n; i++)
				Z += e[i];
		}
	}
	if (p.min_p > 0) {
		double thr = p.min_p * (e[0] / Z);
		int keep = 1;
		while (keep < n && e[keep] / Z >= thr)
			keep++;
		if (keep < total) {
			n = keep, total = keep;
			Z = 0;
			for (int i = 0; i < n; i++)
				Z += e[i];
		}
	}
	if (total != n) { /* not reached: plain temperature takes the other window */
		sh.out = -1, sh.kept = 0;
		return;
	}
	sh.kept = n;
	if (n == 1) {
		sh.out = sh.ci[0];
		return;
	}
	double u = p.u;
	for (int i = 0; i < n; i++) {
		u -= e[i] / Z;
		if (u < 0) {
			sh.out = sh.ci[i];
			return;
		}
	}
	sh.out = sh.ci[n - 1];
}

/* Steps 2-6 of a row with temperature > 0: thread 0 leaves the token (or -1: too wide) and
 * the survivor count in sh.out, sh.kept; every thread returns together. */
static __device__ void choose(const rowv &rv, const fi_sample_row &p, int V, smem &sh)
{
	const int tid = threadIdx.x;
	const int topk = p.top_k > 0 && p.top_k < V ? p.top_k : 0;

	float mx = -INFINITY, mn = INFINITY;
	for (int i = tid; i < V; i += blockDim.x) {
		float v = rv.scaled(i);
		mx = fmaxf(mx, v);
		if (isfinite(v))
			mn = fminf(mn, v);
	}
	const float M = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, sh.redf);
	mn = block_reduce(mn, [](float a, float b) { return fminf(a, b); }, sh.redf);
	/* the bins span the row's finite range, whatever the logits' scale */
	float range = M - mn;
	const float scale = isfinite(range) ? (float)(BINS - 1) / fmaxf(range, 1e-3f) : 1.0f;

	for (int b = tid; b < BINS; b += blockDim.x)
		sh.hc[b] = 0, sh.hm[b] = 0;
	__syncthreads();
	double z = 0, far_m = 0;
	int far_c = 0;
	for (int i = tid; i < V; i += blockDim.x) {
		float s = rv.scaled(i);
		double e = exp((double)s - (double)M);
		int b = bin_of(s, M, scale);
		z += e;
		if (b == BINS - 1) { /* the crowded far bin: summed per thread */
			far_c++, far_m += e;
		} else {
			atomicAdd(&sh.hc[b], 1);
			atomicAdd(&sh.hm[b], e);
		}
	}
	const double Z = block_reduce(z, [](double a, double b) { return a + b; }, sh.redd);
	far_m = block_reduce(far_m, [](double a, double b) { return a + b; }, sh.redd);
	far_c = block_reduce(far_c, [](int a, int b) { return a + b; }, sh.redi);
	if (tid == 0) {
		sh.hc[BINS - 1] = far_c, sh.hm[BINS - 1] = far_m;
		int lo = 0, hi = BINS - 1;
		sh.base = 0;
		if (topk) {
			int c = 0;
			for (hi = 0; hi < BINS - 1 && (c += sh.hc[hi]) < topk; hi++)
				;
		} else if (p.top_p >= 1.0f && !(p.min_p > 0)) {
			/* plain temperature: the bin where the cumulative mass passes u Z */
			double c = 0, target = p.u * Z;
			for (lo = 0; lo < BINS - 1 && c + sh.hm[lo] <= target; lo++)
				c += sh.hm[lo];
			hi = lo;
			sh.base = c;
		} else {
			if (p.top_p < 1.0f) {
				double lim = (1.0 - 1e-9) * (1.0 - (double)p.top_p) * Z, tail = 0;
				while (hi > 0 && (tail += sh.hm[hi]) <= lim)
					hi--;
			}
			if (p.min_p > 0) {
				/* every token of bin b has s <= M - b / scale */
				float bm = scale * (1.0f / 64 - logf(p.min_p));
				if (bm < (float)hi)
					hi = (int)bm;
			}
		}
		int c = 0;
		for (int b = lo; b <= hi; b++)
			c += sh.hc[b];
		sh.lo = lo, sh.hi = hi, sh.nc = c > CAP ? -1 : 0;
	}
	__syncthreads();
	const int lo = sh.lo, hi = sh.hi, wide = sh.nc < 0;
	__syncthreads(); /* sh.nc is counted below */
	if (wide) {
		if (tid == 0)
			sh.out = -1, sh.kept = 0;
		return;
	}
	for (int i = tid; i < V; i += blockDim.x) {
		float s = rv.scaled(i);
		int b = bin_of(s, M, scale);
		if (b >= lo && b <= hi) {
			int k = atomicAdd(&sh.nc, 1);
			sh.cs[k] = s, sh.ci[k] = i;
		}
	}
	__syncthreads();
	const int nc = sh.nc;
	int P = 1;
	while (P < nc)
		P <<= 1;
	for (int i = nc + tid; i < P; i += blockDim.x)
		sh.cs[i] = -INFINITY, sh.ci[i] = 0x7fffffff;
	__syncthreads();
	sort_window(sh, P);
	/* e = exp(s - max) as the CPU's softmax; in the plain-temperature window too */
	for (int i = tid; i < nc; i += blockDim.x)
		sh.pr[i] = exp((double)sh.cs[i] - (double)M);
	__syncthreads();
	if (tid == 0) {
		if (lo > 0 || (!topk && p.top_p >= 1.0f && !(p.min_p > 0))) {
			/* plain temperature: every token survives, the draw lands in this window */
			double u = p.u - sh.base / Z;
			sh.out = nc ? sh.ci[nc - 1] : 0;
			for (int i = 0; i < nc; i++) {
				u -= sh.pr[i] / Z;
				if (u < 0) {
					sh.out = sh.ci[i];
					break;
				}
			}
			sh.kept = V;
		} else {
			int m = nc;
			if (topk) { /* the set: everything tied with the k-th */
				float kth = sh.cs[topk - 1];
				for (m = topk; m < nc && sh.cs[m] >= kth; m++)
					;
			}
			finish_top(sh, p, m, topk, Z, V);
		}
	}
}

/* One block per row. bitmap_words: room for the penalty's bitmap of the vocabulary after
 * the smem struct (0: none; rows with a penalty then go back to the host). */
__global__ void __launch_bounds__(THREADS) sample_kernel(fi_sample_args a, int bitmap_words)
{
	extern __shared__ __align__(16) unsigned char smem_raw[];
	smem &sh = *(smem *)smem_raw;
	uint32_t *bits = (uint32_t *)(smem_raw + sizeof(smem));
	const int r = blockIdx.x, tid = threadIdx.x, V = a.V;
	const fi_sample_row p = a.rows_d[r];
	const bool pen = p.penalty != 1.0f && p.n_hist > 0;
	rowv rv = {a.logits_d + (int64_t)r * V, nullptr, p.penalty, p.temperature};
	if (pen && (!a.hist_d || bitmap_words * 32 < V)) {
		if (tid == 0)
			sh.out = -1, sh.kept = 0;
	} else {
		if (pen) { /* the distinct window tokens: applied once each, as on the CPU */
			const int32_t *h = a.hist_d + p.hist_off;
			for (int w = tid; w < bitmap_words; w += blockDim.x)
				bits[w] = 0;
			__syncthreads();
			for (int k = tid; k < p.n_hist; k += blockDim.x)
				if (h[k] >= 0 && h[k] < V)
					atomicOr(&bits[h[k] >> 5], 1u << (h[k] & 31));
			__syncthreads();
			rv.bits = bits;
		}
		if (!(p.temperature > 0))
			greedy(rv, V, sh);
		else
			choose(rv, p, V, sh);
	}
	__syncthreads();
	const int tok = sh.out;
	if (tid == 0) {
		a.out_d[r] = tok;
		a.out_d[a.n + r] = sh.kept;
	}
	if (p.n_logprobs >= 0 && tok >= 0 && a.logprob_d)
		logprobs(a, r, tok, a.top_d ? min(p.n_logprobs, a.max_top) : 0, sh);
}

extern "C" fi_err fi_cu_sample(cudaStream_t st, const struct fi_sample_args *a, size_t smem_optin)
{
	static size_t attr_bytes;
	size_t words = ((size_t)a->V + 31) / 32, bytes = sizeof(smem) + words * sizeof(uint32_t);
	if (a->n <= 0)
		return FI_OK;
	if (a->n > 2147483647 || a->V <= 0)
		return fi_fail(FI_EINVAL, "sample: %d rows of %d tokens", a->n, a->V);
	if (bytes > smem_optin) { /* no bitmap: penalty rows go to the host */
		words = 0;
		bytes = sizeof(smem);
	}
	if (bytes > attr_bytes) {
		CU_CHECK(cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
					      (int)bytes));
		attr_bytes = bytes;
	}
	sample_kernel<<<a->n, THREADS, bytes, st>>>(*a, (int)words);
	LAUNCH_CHECK();
	return FI_OK;
}
