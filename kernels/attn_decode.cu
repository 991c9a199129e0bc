/* attn_decode: split-K flash-decoding over the paged KV cache, GQA-aware.
 *
 * One CTA per (split j, KV head h, token t) handles all G = Hq/Hk query heads of that KV head,
 * so each K/V row is read from memory once per step for the whole group. The token's visible
 * range [lo, pos] is cut into n_splits equal chunks *on the device* (from tok_pos), so the
 * launch shape depends only on T, Hk and the cache capacity: the kernel can be captured in a
 * CUDA graph and replayed at any length. With n_splits > 1 each CTA writes an unnormalised
 * partial (m, l, acc[hd]) and attn_combine merges them (or, with FI_DEC_MERGE=1, the last
 * CTA of each (token, KV head) to finish, counting in a->cnt); with one split it writes out
 * directly.
 *
 * Inside a CTA: hd/8 lanes own one K/V row (16-byte loads, 8 dims a lane), so a warp covers
 * 32/(hd/8) rows at a time; each such sub-warp walks R consecutive positions per step and keeps
 * its own online-softmax state (base-2, scores pre-scaled by scale*log2(e)); the states of all
 * sub-warps are merged through shared memory at the end.
 *
 * Any token layout works (decode, or several tokens of one sequence): every token reads its
 * own sequence up to its own position. Head sizes that are not a power of two in [8, 256], or
 * groups larger than 8, take attn_generic (one warp per (token, query head)).
 *
 * Serving batches (T x Hk CTAs fill the GPU by themselves: hundreds of sequences of mixed
 * lengths) take the planned path instead, since equal splits per token either leave one long
 * sequence on a single CTA while the rest of the GPU idles, or, sized for the longest, launch
 * mostly empty CTAs (each still holds a slot for a global load's latency):
 *   attn_plan (one block) cuts token t's range of len_t positions into n_t = ceil(len_t / C)
 *     pieces with C = max(min_chunk, ceil(sum len / E)), so there are at most T + E items
 *     (E extra for long sequences, fixed per launch shape: graph-safe), and lays the items
 *     out longest first: the pieces of split tokens, then whole tokens by decreasing length
 *     (buckets of log2 length), so the long work starts first and the empty items (up to
 *     T + E) come last;
 *   attn_items runs one CTA per (KV head, item) with the same inner loop as the kernel above;
 *     a token in one piece writes its output, the pieces of a split token write partials and
 *     the last to finish (a counter per (token, KV head), zeroed by the plan) merges them in
 *     piece order, so the result does not depend on which finished last. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "common.cuh"
#include "mma.cuh"

#define DEC_WARPS 4
#define DEC_R 4
#define DEC_MIN_CHUNK 32
/* Four CTAs an SM (at most 128 registers) for groups up to 4: a 4-warp CTA is one load
 * stream, so occupancy is what keeps the K/V bytes in flight; larger groups need their
 * registers (at this bound they would spill). */
#define DEC_MIN_CTAS(MAXG) ((MAXG) <= 4 ? 4 : 1)

struct dec_params {
	bf16 *out;
	const bf16 *q, *kc, *vc;
	const int32_t *tok_seq, *tok_pos, *block_table;
	int max_blocks, bs, Hq, Hk, G, window, n_splits;
	int min_chunk; /* positions a split takes at least */
	float scale2; /* scale * log2(e) */
	float capl;   /* soft-capping (Gemma 2): cap * log2(e), scores capl tanh(s / capl); 0 none */
	float *ws_ml; /* [T, Hq, n_splits, 2] */
	float *ws_acc; /* [T, Hq, n_splits, hd] */
	int *cnt;      /* [T, Hk] splits finished, or NULL: attn_combine runs after */
};

/* The planned path's work list (attn_plan writes it, attn_items reads it). */
struct dec_plan {
	int2 *item; /* [n_max] (token, piece), token -1: nothing to do */
	int4 *tok;  /* [T] first item, pieces, positions per piece, first position */
};

/* Positions each split of token t takes, and how many splits have any (the rest of the
 * launched ones, sized for the cache's capacity, sit out: shorter sequences are cut into
 * fewer, but at least min_chunk-long, pieces). */
static __device__ __forceinline__ int split_chunk(int n_splits, int min_chunk, int window, int pos,
						  int *lo, int *n_active)
{
	*lo = window > 0 ? max(0, pos - window + 1) : 0;
	int len = pos + 1 - *lo;
	int chunk = max((len + n_splits - 1) / n_splits, min_chunk);
	*n_active = (len + chunk - 1) / chunk;
	return chunk;
}

static __device__ __forceinline__ int64_t kv_row(const dec_params &p, int s, int pos)
{
	int blk = p.block_table[(int64_t)s * p.max_blocks + pos / p.bs];
	return (int64_t)blk * p.bs + pos % p.bs;
}

/* Sub-warp layout of a CTA for head size HD. */
template <int HD> struct dec_shape {
	static constexpr int LPR = HD / 8;       /* lanes per row */
	static constexpr int SUB = 32 / LPR;     /* rows a warp covers at once */
	static constexpr int NSUB = DEC_WARPS * SUB;
};

template <int HD, int MAXG> struct dec_smem {
	float ml[dec_shape<HD>::NSUB][MAXG][2];
	float acc[dec_shape<HD>::NSUB][MAXG][HD];
};

/* The pipelined loop's K/V rows in flight: [stage][row of the round][K, V][thread], 16 bytes
 * a thread (32 KiB), each thread reading back only what it copied, so a stage needs no
 * barrier. It shares its memory with the merge state, which is written after the loop. */
#define DEC_STAGES 2
struct dec_stage {
	uint4 kv[DEC_STAGES][DEC_R][2][DEC_WARPS * 32];
};
template <int HD, int MAXG> union dec_shared {
	dec_smem<HD, MAXG> m;
	dec_stage st;
};
template <int HD, int MAXG> union dec_shared_sync {
	dec_smem<HD, MAXG> m;
};
template <int HD, int MAXG, bool ASYNC>
using dec_sh = typename std::conditional<ASYNC, dec_shared<HD, MAXG>, dec_shared_sync<HD, MAXG>>::type;

/* Copies one round's K and V rows of this thread (DEC_R positions from its sub-warp's base) to
 * stage, as one group. */
template <int HD>
static __device__ __forceinline__ void dec_issue(const dec_params &p, dec_stage &st, int stage,
						 int s, int h, int wb, int end)
{
	constexpr int LPR = dec_shape<HD>::LPR;
	const int lane = threadIdx.x & 31, li = lane % LPR, tid = threadIdx.x;
	const int base = wb + (lane / LPR) * DEC_R;
#pragma unroll
	for (int r = 0; r < DEC_R; r++) {
		int ps = base + r;
		bool ok = ps < end;
		int64_t row = ok ? (kv_row(p, s, ps) * p.Hk + h) * HD : 0;
		cp_async16(&st.kv[stage][r][0][tid], (const bf16x8 *)(p.kc + row) + li, ok);
		cp_async16(&st.kv[stage][r][1][tid], (const bf16x8 *)(p.vc + row) + li, ok);
	}
	cp_commit();
}

/* Token t's attention over positions [start, end) for the G query heads of KV head h: each
 * sub-warp's online-softmax state into sm (then a barrier). */
template <int HD, int MAXG, bool ASYNC>
static __device__ __forceinline__ void dec_range(const dec_params &p, int t, int h, int start,
						 int end, dec_sh<HD, MAXG, ASYNC> &shm)
{
	dec_smem<HD, MAXG> &sm = shm.m;
	constexpr int LPR = dec_shape<HD>::LPR, SUB = dec_shape<HD>::SUB;
	constexpr int NSUB = dec_shape<HD>::NSUB;
	const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
	const int sub = w * SUB + lane / LPR, li = lane % LPR;
	const int G = p.G, s = p.tok_seq[t];

	float q[MAXG][8], acc[MAXG][8], m[MAXG], l[MAXG];
#pragma unroll
	for (int g = 0; g < MAXG; g++) {
		m[g] = -INFINITY;
		l[g] = 0.f;
#pragma unroll
		for (int i = 0; i < 8; i++)
			acc[g][i] = 0.f;
		if (g < G) {
			const bf16x8 *qp = (const bf16x8 *)(p.q + ((int64_t)t * p.Hq + h * G + g) * HD);
			bf16x8_to_f32(qp[li], q[g]);
#pragma unroll
			for (int i = 0; i < 8; i++)
				q[g][i] *= p.scale2;
		}
	}

	/* The loop bound is per warp, not per sub-warp: the shuffles below need every lane of
	 * the warp; rows past end are masked instead. (Loading the next round's rows before
	 * this round's arithmetic was slower on the H100: 165 registers, 3 CTAs an SM instead
	 * of 4; tests/gpu/NOTES.md.) */
	/* ASYNC: the rows of a warp's next round are copied to shared memory (cp.async) while
	 * this round's arithmetic runs, at no cost in registers. */
	int stage = 0;
	if constexpr (ASYNC)
		dec_issue<HD>(p, shm.st, 0, s, h, start + w * SUB * DEC_R, end);
	for (int wbase = start + w * SUB * DEC_R; wbase < end; wbase += NSUB * DEC_R) {
		const int base = wbase + (lane / LPR) * DEC_R;
		/* ASYNC: the rows are read from the stage where they are used (fewer live
		 * registers; 5 CTAs an SM would still spill) */
		bf16x8 kr[DEC_R], vr[DEC_R];
		if constexpr (ASYNC) {
			/* the next round's copies go out (an empty group past the end), then this
			 * round's are waited for: one group may stay in flight */
			dec_issue<HD>(p, shm.st, stage ^ 1, s, h, wbase + NSUB * DEC_R, end);
			cp_wait<1>();
		} else {
#pragma unroll
			for (int r = 0; r < DEC_R; r++) {
				int ps = base + r;
				if (ps < end) {
					int64_t row = (kv_row(p, s, ps) * p.Hk + h) * HD;
					kr[r] = ((const bf16x8 *)(p.kc + row))[li];
					vr[r] = ((const bf16x8 *)(p.vc + row))[li];
				} else {
					kr[r] = bf16x8{};
					vr[r] = bf16x8{};
				}
			}
		}
		auto row_of = [&](int r, int kv) -> bf16x8 {
			if constexpr (ASYNC) {
				uint4 a = shm.st.kv[stage][r][kv][threadIdx.x];
				return *(const bf16x8 *)&a;
			} else {
				return kv ? vr[r] : kr[r];
			}
		};
		float sc[MAXG][DEC_R];
#pragma unroll
		for (int r = 0; r < DEC_R; r++) {
			float kf[8];
			bf16x8_to_f32(row_of(r, 0), kf);
#pragma unroll
			for (int g = 0; g < MAXG; g++) {
				float d = 0.f;
				if (g < G) {
#pragma unroll
					for (int i = 0; i < 8; i++)
						d += q[g][i] * kf[i];
#pragma unroll
					for (int o = LPR / 2; o > 0; o >>= 1)
						d += __shfl_xor_sync(0xffffffffu, d, o);
					if (p.capl > 0.f) /* cap tanh(s / cap), in log2 units */
						d = p.capl * tanhf(d / p.capl);
				}
				sc[g][r] = base + r < end ? d : -INFINITY;
			}
		}
		/* the online softmax: sc becomes the weights of this round's rows */
#pragma unroll
		for (int g = 0; g < MAXG; g++) {
			if (g >= G)
				continue;
			float mx = m[g];
#pragma unroll
			for (int r = 0; r < DEC_R; r++)
				mx = fmaxf(mx, sc[g][r]);
			if (mx == -INFINITY) { /* no row of this sub-warp yet */
#pragma unroll
				for (int r = 0; r < DEC_R; r++)
					sc[g][r] = 0.f;
				continue;
			}
			float alpha = exp2f(m[g] - mx);
			m[g] = mx;
			l[g] *= alpha;
#pragma unroll
			for (int i = 0; i < 8; i++)
				acc[g][i] *= alpha;
#pragma unroll
			for (int r = 0; r < DEC_R; r++) {
				sc[g][r] = exp2f(sc[g][r] - mx);
				l[g] += sc[g][r];
			}
		}
		/* each V row converted once for the whole group */
#pragma unroll
		for (int r = 0; r < DEC_R; r++) {
			float vf[8];
			bf16x8_to_f32(row_of(r, 1), vf);
#pragma unroll
			for (int g = 0; g < MAXG; g++) {
				if (g >= G)
					continue;
#pragma unroll
				for (int i = 0; i < 8; i++)
					acc[g][i] += sc[g][r] * vf[i];
			}
		}
		if constexpr (ASYNC)
			stage ^= 1;
	}

	if constexpr (ASYNC) { /* the merge state overwrites the stages: all copies landed first */
		cp_wait<0>();
		__syncthreads();
	}
#pragma unroll
	for (int g = 0; g < MAXG; g++) {
		if (g >= G)
			continue;
		if (li == 0) {
			sm.ml[sub][g][0] = m[g];
			sm.ml[sub][g][1] = l[g];
		}
#pragma unroll
		for (int i = 0; i < 8; i++)
			sm.acc[sub][g][li * 8 + i] = acc[g][i];
	}
	__syncthreads();
}

/* Merges the NSUB states of sm (ml[NSUB][>= G][2], acc[NSUB][>= G][HD]: one a sub-warp in
 * dec_smem, one a warp in the tensor-core loop): sink(g, d, M, L, A) for every (query head
 * of the group, dim), M = -inf when no position was seen. */
template <int HD, int NSUB, typename SM, typename Sink>
static __device__ __forceinline__ void dec_merge_n(const SM &sm, int G, Sink sink)
{
	for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
		int g = e / HD, d = e % HD;
		float M = -INFINITY;
		for (int k = 0; k < NSUB; k++)
			M = fmaxf(M, sm.ml[k][g][0]);
		float L = 0.f, A = 0.f;
		if (M != -INFINITY) {
			for (int k = 0; k < NSUB; k++) {
				float f = exp2f(sm.ml[k][g][0] - M);
				L += sm.ml[k][g][1] * f;
				A += sm.acc[k][g][d] * f;
			}
		}
		sink(g, d, M, L, A);
	}
}

template <int HD, int MAXG, typename Sink>
static __device__ __forceinline__ void dec_merge(const dec_smem<HD, MAXG> &sm, int G, Sink sink)
{
	dec_merge_n<HD, dec_shape<HD>::NSUB>(sm, G, sink);
}

/* After every CTA of (t, h) wrote its partial (index part(k) for piece k of n): the last to
 * arrive at *c merges all n in order into out (attn_combine's arithmetic). 1 if it did. */
template <int HD, typename Part>
static __device__ __forceinline__ void dec_last_merge(const dec_params &p, int t, int h, int n,
						      int *c, bool reset, Part part)
{
	__shared__ int last;
	__threadfence();
	__syncthreads();
	if (threadIdx.x == 0) {
		last = atomicAdd(c, 1) == n - 1;
		if (last && reset)
			*c = 0;
	}
	__syncthreads();
	if (!last)
		return;
	__threadfence();
	for (int e = threadIdx.x; e < p.G * HD; e += blockDim.x) {
		int g = e / HD, d = e % HD;
		int64_t qh = (int64_t)t * p.Hq + h * p.G + g;
		float M = -INFINITY;
		for (int k = 0; k < n; k++)
			M = fmaxf(M, __ldcg(&p.ws_ml[part(k, qh) * 2]));
		float L = 0.f, A = 0.f;
		if (M != -INFINITY) {
			for (int k = 0; k < n; k++) {
				int64_t sp = part(k, qh);
				float f = exp2f(__ldcg(&p.ws_ml[sp * 2]) - M);
				L += __ldcg(&p.ws_ml[sp * 2 + 1]) * f;
				A += __ldcg(&p.ws_acc[sp * HD + d]) * f;
			}
		}
		p.out[qh * HD + d] = __float2bfloat16(L > 0.f ? A / L : 0.f);
	}
}

template <int HD, int MAXG, bool ASYNC>
__global__ void __launch_bounds__(DEC_WARPS * 32, DEC_MIN_CTAS(MAXG))
attn_decode_kernel(dec_params p)
{
	__shared__ dec_sh<HD, MAXG, ASYNC> shm;
	dec_smem<HD, MAXG> &sm = shm.m;
	const int j = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
	const int pos = p.tok_pos[t], hi = pos + 1;
	int lo, n_active;
	const int chunk = split_chunk(p.n_splits, p.min_chunk, p.window, pos, &lo, &n_active);
	const int start = lo + j * chunk, end = min(hi, start + chunk);
	if (j >= n_active && p.n_splits > 1 && !p.cnt)
		return; /* attn_combine reads the active splits only */
	dec_range<HD, MAXG, ASYNC>(p, t, h, start, end, shm);
	const int ns = p.n_splits;
	dec_merge<HD, MAXG>(sm, p.G, [&](int g, int d, float M, float L, float A) {
		int64_t qh = (int64_t)t * p.Hq + h * p.G + g;
		if (ns == 1) {
			p.out[qh * HD + d] = __float2bfloat16(L > 0.f ? A / L : 0.f);
		} else {
			int64_t sp = qh * ns + j;
			p.ws_acc[sp * HD + d] = A;
			if (d == 0) {
				p.ws_ml[sp * 2] = M;
				p.ws_ml[sp * 2 + 1] = L;
			}
		}
	});
	if (ns == 1 || !p.cnt)
		return;
	/* The last split of (t, h) to finish merges all of them (attn_combine's arithmetic, in
	 * the same order), so a decode step needs no second launch; it resets the counter for
	 * the next step (and graph replay). Partials of other CTAs are read through L2. */
	dec_last_merge<HD>(p, t, h, ns, p.cnt + (int64_t)t * p.Hk + h, true,
			   [&](int k, int64_t qh) { return qh * ns + k; });
}

/* This CTA's item of the planned path: token t, piece j of its tk (first item, pieces,
 * positions a piece, first position), positions [start, end); false when it has none. */
struct dec_item {
	int t, j, start, end;
	int4 tk;
};
static __device__ __forceinline__ bool item_of(const dec_params &p, const dec_plan &pl,
					       struct dec_item *it)
{
	const int2 ij = pl.item[blockIdx.y];
	if (ij.x < 0)
		return false;
	it->t = ij.x;
	it->j = ij.y;
	it->tk = pl.tok[ij.x];
	it->start = it->tk.w + ij.y * it->tk.z;
	it->end = min(p.tok_pos[ij.x] + 1, it->start + it->tk.z);
	return true;
}

/* The end of an item of the planned path, from the NSUB states in sm: token t's output when
 * it is in one piece, else piece j's partial, and the last piece to finish merges them. */
template <int HD, int NSUB, typename SM>
static __device__ __forceinline__ void items_finish(const dec_params &p, const SM &sm, int t,
						    int h, int j, int4 tk)
{
	const int n = tk.y;
	const int64_t Hq = p.Hq;
	dec_merge_n<HD, NSUB>(sm, p.G, [&](int g, int d, float M, float L, float A) {
		int64_t qh = (int64_t)t * Hq + h * p.G + g;
		if (n == 1) {
			p.out[qh * HD + d] = __float2bfloat16(L > 0.f ? A / L : 0.f);
		} else {
			int64_t sp = (int64_t)(tk.x + j) * Hq + h * p.G + g;
			p.ws_acc[sp * HD + d] = A;
			if (d == 0) {
				p.ws_ml[sp * 2] = M;
				p.ws_ml[sp * 2 + 1] = L;
			}
		}
	});
	if (n == 1)
		return;
	/* (the plan zeroed the counter; the last resets it too, as FI_DEC_MERGE=1 expects) */
	dec_last_merge<HD>(p, t, h, n, p.cnt + (int64_t)t * p.Hk + h, true,
			   [&](int k, int64_t qh) { return (int64_t)(tk.x + k) * Hq + (qh - (int64_t)t * Hq); });
}

/* The planned path (see the top of the file): one CTA per (KV head, item). Partials of the
 * pieces of token t live at [first + k, qh] (first: its first item), [n_max, Hq] in all. */
template <int HD, int MAXG, bool ASYNC>
__global__ void __launch_bounds__(DEC_WARPS * 32, DEC_MIN_CTAS(MAXG))
attn_items_kernel(dec_params p, dec_plan pl)
{
	__shared__ dec_sh<HD, MAXG, ASYNC> shm;
	dec_smem<HD, MAXG> &sm = shm.m;
	const int h = blockIdx.x;
	struct dec_item it;
	if (!item_of(p, pl, &it))
		return;
	dec_range<HD, MAXG, ASYNC>(p, it.t, h, it.start, it.end, shm);
	items_finish<HD, dec_shape<HD>::NSUB>(p, sm, it.t, h, it.j, it.tk);
}

#include "attn_decode_tc.cuh"

#define PLAN_THREADS 1024
#define PLAN_BUCKETS 32

/* The work list of the planned path for T tokens (see the top of the file); also zeroes the
 * merge counters of split tokens. */
__global__ void __launch_bounds__(PLAN_THREADS)
attn_plan_kernel(const int32_t *__restrict__ tok_pos, int T, int window, int min_chunk, int E,
		 int n_max, int Hk, dec_plan pl, int *__restrict__ cnt)
{
	__shared__ unsigned long long total;
	__shared__ int bucket[PLAN_BUCKETS];
	const int tid = threadIdx.x;
	if (tid == 0)
		total = 0;
	if (tid < PLAN_BUCKETS)
		bucket[tid] = 0;
	__syncthreads();
	unsigned long long sum = 0;
	for (int t = tid; t < T; t += blockDim.x) {
		int pos = tok_pos[t], lo = window > 0 ? max(0, pos - window + 1) : 0;
		sum += (unsigned long long)(pos + 1 - lo);
	}
	/* a warp's sum first: 1024 threads on one 64-bit shared atomic serialise */
	for (int o = 16; o > 0; o >>= 1)
		sum += __shfl_xor_sync(0xffffffffu, sum, o);
	if ((tid & 31) == 0 && sum)
		atomicAdd(&total, sum);
	__syncthreads();
	const long long C = max((long long)min_chunk, (long long)((total + E - 1) / E));
	/* pieces per token; bucket 0 holds split tokens, then 1 + (30 - log2 len): longest first */
	for (int t = tid; t < T; t += blockDim.x) {
		int pos = tok_pos[t], lo = window > 0 ? max(0, pos - window + 1) : 0, len = pos + 1 - lo;
		int n = (int)((len + C - 1) / C);
		int b = n > 1 ? 0 : 1 + (30 - (31 - __clz(len)));
		atomicAdd(&bucket[b], n);
	}
	__syncthreads();
	if (tid == 0) { /* exclusive prefix: the first item of each bucket */
		int acc = 0;
		for (int b = 0; b < PLAN_BUCKETS; b++) {
			int c = bucket[b];
			bucket[b] = acc;
			acc += c;
		}
	}
	__syncthreads();
	for (int t = tid; t < T; t += blockDim.x) {
		int pos = tok_pos[t], lo = window > 0 ? max(0, pos - window + 1) : 0, len = pos + 1 - lo;
		int n = (int)((len + C - 1) / C);
		int b = n > 1 ? 0 : 1 + (30 - (31 - __clz(len)));
		int first = atomicAdd(&bucket[b], n);
		pl.tok[t] = make_int4(first, n, (len + n - 1) / n, lo);
		for (int k = 0; k < n; k++)
			pl.item[first + k] = make_int2(t, k);
		if (n > 1)
			for (int h = 0; h < Hk; h++)
				cnt[(int64_t)t * Hk + h] = 0;
	}
	__syncthreads();
	/* after the prefix, bucket[last] is the item count */
	for (int i = bucket[PLAN_BUCKETS - 1] + tid; i < n_max; i += blockDim.x)
		pl.item[i] = make_int2(-1, 0);
}

/* out[t, qh, :] = sum_j acc_j * 2^(m_j - M) / sum_j l_j * 2^(m_j - M). One block per (t, qh). */
__global__ void attn_combine_kernel(bf16 *__restrict__ out, const float *__restrict__ ws_ml,
				    const float *__restrict__ ws_acc, const int32_t *__restrict__ tok_pos,
				    int n_splits, int min_chunk, int window, int hd)
{
	int64_t qh = (int64_t)blockIdx.y * gridDim.x + blockIdx.x;
	const float *ml = ws_ml + qh * n_splits * 2;
	int lo, na;
	split_chunk(n_splits, min_chunk, window, tok_pos[blockIdx.y], &lo, &na);
	float M = -INFINITY;
	for (int j = 0; j < na; j++)
		M = fmaxf(M, ml[2 * j]);
	for (int d = threadIdx.x; d < hd; d += blockDim.x) {
		float L = 0.f, A = 0.f;
		if (M != -INFINITY) {
			for (int j = 0; j < na; j++) {
				float f = exp2f(ml[2 * j] - M);
				L += ml[2 * j + 1] * f;
				A += ws_acc[(qh * n_splits + j) * hd + d] * f;
			}
		}
		out[qh * hd + d] = __float2bfloat16(L > 0.f ? A / L : 0.f);
	}
}

/* Any head size and group: one warp per (token, query head), lanes over dims (hd <= 512). */
__global__ void attn_generic_kernel(dec_params p, int hd)
{
	const int lane = threadIdx.x, qh = blockIdx.y, t = blockIdx.x;
	const int h = qh / p.G, s = p.tok_seq[t], pos = p.tok_pos[t];
	const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
	const bf16 *qp = p.q + ((int64_t)t * p.Hq + qh) * hd;
	float q[16], acc[16], m = -INFINITY, l = 0.f;
#pragma unroll
	for (int i = 0; i < 16; i++) {
		int d = lane + 32 * i;
		q[i] = d < hd ? __bfloat162float(qp[d]) * p.scale2 : 0.f;
		acc[i] = 0.f;
	}
	for (int ps = lo; ps <= pos; ps++) {
		int64_t row = (kv_row(p, s, ps) * p.Hk + h) * hd;
		float d = 0.f;
#pragma unroll
		for (int i = 0; i < 16; i++)
			if (lane + 32 * i < hd)
				d += q[i] * __bfloat162float(p.kc[row + lane + 32 * i]);
		d = warp_sum(d);
		if (p.capl > 0.f)
			d = p.capl * tanhf(d / p.capl);
		float mx = fmaxf(m, d), alpha = exp2f(m - mx), pr = exp2f(d - mx);
		m = mx;
		l = l * alpha + pr;
#pragma unroll
		for (int i = 0; i < 16; i++)
			if (lane + 32 * i < hd)
				acc[i] = acc[i] * alpha + pr * __bfloat162float(p.vc[row + lane + 32 * i]);
	}
#pragma unroll
	for (int i = 0; i < 16; i++)
		if (lane + 32 * i < hd)
			p.out[((int64_t)t * p.Hq + qh) * hd + lane + 32 * i] =
				__float2bfloat16(l > 0.f ? acc[i] / l : 0.f);
}

template <int HD, bool A>
static void launch_items_a(dim3 grid, cudaStream_t st, const dec_params &p, const dec_plan &pl)
{
	if (p.G <= 1)
		attn_items_kernel<HD, 1, A><<<grid, DEC_WARPS * 32, 0, st>>>(p, pl);
	else if (p.G <= 2)
		attn_items_kernel<HD, 2, A><<<grid, DEC_WARPS * 32, 0, st>>>(p, pl);
	else if (p.G <= 4)
		attn_items_kernel<HD, 4, A><<<grid, DEC_WARPS * 32, 0, st>>>(p, pl);
	else
		attn_items_kernel<HD, 8, A><<<grid, DEC_WARPS * 32, 0, st>>>(p, pl);
}

/* FI_DEC_ASYNC=0: K/V rows loaded into registers a round at a time, not pipelined. Head
 * sizes 64 and 128 take the tensor-core loop (attn_decode_tc.cuh) unless FI_DEC_TC=0. */
template <int HD>
static void launch_items(dim3 grid, cudaStream_t st, const dec_params &p, const dec_plan &pl)
{
	const struct fi_settings *set = fi_settings();
	if constexpr (HD == 64 || HD == 128) /* FI_DEC_TC=0: the CUDA-core loop */
		if (set->dec_tc && set->dec_async && p.G <= 8 && launch_items_tc<HD>(grid, st, p, pl))
			return;
	if (set->dec_async)
		launch_items_a<HD, true>(grid, st, p, pl);
	else
		launch_items_a<HD, false>(grid, st, p, pl);
}

/* The planned path when it is wanted and fits (then 1): FI_DEC_PLAN=0 never, =1 whenever it
 * fits (for tests at small T), by default once T x Hk CTAs reach one per SM. E: the extra
 * items for the pieces of long tokens, as many as the tokens (balance at large T) or enough
 * for 8 CTAs per SM (small T), bounded by the workspace: the plan, then partials for every
 * item [n_max, Hq, hd + 2] f32. The plan depends on the tokens' positions only, so the one
 * made at layer 0 serves the step's later layers (a->plan keys it); the merge counters it
 * zeroes are zero again after each launch (the last piece of a token resets its own). */
static int planned(cudaStream_t st, const struct fi_cu_attn *a, int T, dec_params &p)
{
	int plan = fi_settings()->dec_plan; /* FI_DEC_PLAN */
	int64_t ctas = (int64_t)T * a->Hk, hd = a->hd;
	int64_t slot = (int64_t)a->Hq * (hd + 2) * (int64_t)sizeof(float);
	int64_t want = plan >= 0 ? plan : ctas >= a->n_sm;
	int64_t E = (8 * (int64_t)a->n_sm + a->Hk - 1) / a->Hk - T;
	int64_t fit = ((int64_t)a->ws_bytes - 16 * (int64_t)T - 512) / (slot + 8) - T;
	if (!want || !a->cnt || ctas > a->cnt_n || T > 65535)
		return 0;
	E = E > T ? E : T;
	E = E < fit ? E : fit;
	E = E < 65535 - T ? E : 65535 - T;
	if (E < 1)
		return 0;
	int n_max = (int)(T + E);
	char *ws = (char *)a->ws;
	size_t item_bytes = ((size_t)n_max * sizeof(int2) + 255) & ~(size_t)255;
	size_t plan_bytes = (item_bytes + (size_t)T * sizeof(int4) + 255) & ~(size_t)255;
	dec_plan pl = {(int2 *)ws, (int4 *)(ws + item_bytes)};
	p.ws_ml = (float *)(ws + plan_bytes);
	p.ws_acc = p.ws_ml + (int64_t)n_max * a->Hq * 2;
	p.cnt = a->cnt;
	const struct fi_cu_plan_key key = {p.tok_pos, T, p.window, p.min_chunk, (int)E, a->Hk, 1};
	struct fi_cu_plan_key *k = a->plan;
	if (!k || a->layer == 0 || !k->valid || k->tok_pos != key.tok_pos || k->T != T ||
	    k->window != key.window || k->min_chunk != key.min_chunk || k->E != key.E ||
	    k->Hk != key.Hk) {
		attn_plan_kernel<<<1, PLAN_THREADS, 0, st>>>(p.tok_pos, T, p.window, p.min_chunk,
							     (int)E, n_max, a->Hk, pl, a->cnt);
		if (k)
			*k = key;
	}
	dim3 grid(a->Hk, n_max);
	switch (hd) {
	case 8: launch_items<8>(grid, st, p, pl); break;
	case 16: launch_items<16>(grid, st, p, pl); break;
	case 32: launch_items<32>(grid, st, p, pl); break;
	case 64: launch_items<64>(grid, st, p, pl); break;
	case 128: launch_items<128>(grid, st, p, pl); break;
	default: launch_items<256>(grid, st, p, pl); break;
	}
	return 1;
}

template <int HD, bool A>
static void launch_hd_a(dim3 grid, cudaStream_t st, const dec_params &p)
{
	if (p.G <= 1)
		attn_decode_kernel<HD, 1, A><<<grid, DEC_WARPS * 32, 0, st>>>(p);
	else if (p.G <= 2)
		attn_decode_kernel<HD, 2, A><<<grid, DEC_WARPS * 32, 0, st>>>(p);
	else if (p.G <= 4)
		attn_decode_kernel<HD, 4, A><<<grid, DEC_WARPS * 32, 0, st>>>(p);
	else
		attn_decode_kernel<HD, 8, A><<<grid, DEC_WARPS * 32, 0, st>>>(p);
}

template <int HD>
static void launch_hd(dim3 grid, cudaStream_t st, const dec_params &p)
{
	if (fi_settings()->dec_async)
		launch_hd_a<HD, true>(grid, st, p);
	else
		launch_hd_a<HD, false>(grid, st, p);
}

extern "C" fi_err fi_cu_attn_decode(cudaStream_t st, const struct fi_cu_attn *a,
				    const struct fi_attn_batch *b)
{
	int T = b->n_tokens, hd = a->hd;
	if (T <= 0)
		return FI_OK;
	if (a->Hk <= 0 || a->Hq % a->Hk)
		return fi_fail(FI_EINVAL, "attention: %d query heads not a multiple of %d kv heads",
			       a->Hq, a->Hk);
	if (hd > 512)
		return fi_fail(FI_EUNSUPPORTED, "attention: head size %d > 512", hd);
	dec_params p;
	p.out = (bf16 *)a->out;
	p.q = (const bf16 *)a->q;
	p.kc = (const bf16 *)a->kc;
	p.vc = (const bf16 *)a->vc;
	p.tok_seq = b->tok_seq_d;
	p.tok_pos = b->tok_pos_d;
	p.block_table = b->block_table_d;
	p.max_blocks = b->max_blocks;
	p.bs = a->block_size;
	p.Hq = a->Hq;
	p.Hk = a->Hk;
	p.G = a->Hq / a->Hk;
	p.window = b->sliding_window;
	p.scale2 = b->scale * 1.4426950408889634f;
	p.capl = b->softcap > 0.f ? b->softcap * 1.4426950408889634f : 0.f;
	p.n_splits = 1;
	{ /* A split takes at least the positions one round of the CTA covers (DEC_WARPS warps,
	   * 32 / (hd / 8) rows each, DEC_R deep), so short sequences use fewer splits and
	   * attn_combine less; FI_DEC_MIN_CHUNK sets it (for timing). */
		int mc = fi_settings()->dec_min_chunk;
		int round = DEC_WARPS * (256 / (hd < 256 ? hd : 256)) * DEC_R;
		p.min_chunk = mc >= 1 ? mc : round > DEC_MIN_CHUNK ? round : DEC_MIN_CHUNK;
	}
	p.ws_ml = p.ws_acc = NULL;
	p.cnt = NULL;

	bool fast = (hd & (hd - 1)) == 0 && hd >= 8 && hd <= 256 && p.G <= 8 &&
		    fi_aligned16(a->q) && fi_aligned16(a->kc) && fi_aligned16(a->vc);
	if (!fast) {
		attn_generic_kernel<<<dim3(T, a->Hq), 32, 0, st>>>(p, hd);
		LAUNCH_CHECK();
		return FI_OK;
	}
	if (planned(st, a, T, p)) {
		LAUNCH_CHECK();
		return FI_OK;
	}
	/* Splits: enough CTAs for two waves over the SMs, at most one per DEC_MIN_CHUNK positions
	 * of the cache capacity (max_blocks * block_size, fixed for a cache, so graph-safe), and
	 * no more than the workspace holds. */
	int64_t ctas = (int64_t)T * a->Hk;
	int64_t cap = (int64_t)b->max_blocks * a->block_size;
	int waves_set = fi_settings()->dec_waves; /* FI_DEC_WAVES: CTAs per SM; for timing */
	int64_t waves = waves_set > 0 ? waves_set : 2;
	int64_t ns = (waves * a->n_sm + ctas - 1) / ctas;
	int64_t per = (int64_t)T * a->Hq * (hd + 2) * (int64_t)sizeof(float);
	ns = ns < (cap + p.min_chunk - 1) / p.min_chunk ? ns : (cap + p.min_chunk - 1) / p.min_chunk;
	if (ns > 64)
		ns = 64;
	if (ns * per > (int64_t)a->ws_bytes)
		ns = (int64_t)a->ws_bytes / per;
	if (ns < 1)
		ns = 1;
	p.n_splits = (int)ns;
	if (ns > 1) {
		if (a->plan) /* the partials overwrite a planned work list */
			a->plan->valid = 0;
		p.ws_ml = (float *)a->ws;
		p.ws_acc = p.ws_ml + (int64_t)T * a->Hq * ns * 2;
		/* FI_DEC_MERGE=1: the last CTA merges instead of attn_combine. Opt-in: on the
		 * H100 it made 8B decode 5% slower (tests/gpu/NOTES.md): the merge of all splits
		 * runs in 8 CTAs at the end, after a fence in every CTA. */
		if (a->cnt && (int64_t)T * a->Hk <= a->cnt_n && fi_settings()->dec_merge)
			p.cnt = a->cnt;
	}
	dim3 grid((unsigned)ns, a->Hk, T);
	switch (hd) {
	case 8: launch_hd<8>(grid, st, p); break;
	case 16: launch_hd<16>(grid, st, p); break;
	case 32: launch_hd<32>(grid, st, p); break;
	case 64: launch_hd<64>(grid, st, p); break;
	case 128: launch_hd<128>(grid, st, p); break;
	default: launch_hd<256>(grid, st, p); break;
	}
	LAUNCH_CHECK();
	if (ns > 1 && !p.cnt) {
		attn_combine_kernel<<<dim3(a->Hq, T), hd < 128 ? 64 : 128, 0, st>>>(
			p.out, p.ws_ml, p.ws_acc, p.tok_pos, (int)ns, p.min_chunk, p.window, hd);
		LAUNCH_CHECK();
	}
	return FI_OK;
}
