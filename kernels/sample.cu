/* sample: one token per row of logits[n,V] (f32) as lib/backend/sample.c's fi_sampler_next draws it
 * with a repetition penalty of 1: s = logit / temperature (f32, rounded as on the CPU),
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
 * A window of more than CAP tokens returns -1 (the host samples that row). */
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

static __device__ __forceinline__ float scaled(const float *x, int i, float t)
{
	return __fdiv_rn(x[i], t);
}

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

static __device__ void greedy(const float *x, int V, int32_t *tok, int32_t *kept, smem &sh)
{
	float bv = -INFINITY;
	int bi = 0x7fffffff;
	for (int i = threadIdx.x; i < V; i += blockDim.x)
		if (x[i] > bv || (x[i] == bv && i < bi))
			bv = x[i], bi = i;
	float m = block_reduce(bv, [](float a, float b) { return fmaxf(a, b); }, sh.redf);
	int id = block_reduce(bv == m ? bi : 0x7fffffff, [](int a, int b) { return min(a, b); },
			      sh.redi);
	if (threadIdx.x == 0) {
		*tok = id == 0x7fffffff ? 0 : id;
		*kept = 1;
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

__global__ void __launch_bounds__(THREADS) sample_kernel(int32_t *__restrict__ out,
		const float *__restrict__ logits, const fi_sample_row *__restrict__ rows, int n, int V)
{
	extern __shared__ __align__(16) unsigned char smem_raw[];
	smem &sh = *(smem *)smem_raw;
	const int r = blockIdx.x, tid = threadIdx.x;
	const float *x = logits + (int64_t)r * V;
	const fi_sample_row p = rows[r];
	if (!(p.temperature > 0)) {
		greedy(x, V, out + r, out + n + r, sh);
		return;
	}
	const float t = p.temperature;
	const int topk = p.top_k > 0 && p.top_k < V ? p.top_k : 0;

	float mx = -INFINITY, mn = INFINITY;
	for (int i = tid; i < V; i += blockDim.x) {
		float v = scaled(x, i, t);
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
		float s = scaled(x, i, t);
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
			out[r] = -1, out[n + r] = 0;
		return;
	}
	for (int i = tid; i < V; i += blockDim.x) {
		float s = scaled(x, i, t);
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
		out[r] = sh.out;
		out[n + r] = sh.kept;
	}
}

extern "C" fi_err fi_cu_sample(cudaStream_t st, int32_t *out, const float *logits,
			       const struct fi_sample_row *rows, int n, int V)
{
	static int attr_set;
	if (n <= 0)
		return FI_OK;
	if (!attr_set) {
		CU_CHECK(cudaFuncSetAttribute(sample_kernel,
					      cudaFuncAttributeMaxDynamicSharedMemorySize,
					      (int)sizeof(smem)));
		attr_set = 1;
	}
	sample_kernel<<<n, THREADS, sizeof(smem), st>>>(out, logits, rows, n, V);
	LAUNCH_CHECK();
	return FI_OK;
}
