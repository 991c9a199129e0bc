/* attn_prefill: causal flash-attention on tensor cores (FA2 scheme, mma.sync m16n8k16 bf16,
 * f32 accumulation) over the paged KV cache, GQA and sliding window.
 *
 * One CTA per (tile of 64 or 128 consecutive batch tokens, query head); warps of 16 query rows.
 * K/V tiles of 64 positions are gathered from the cache blocks with cp.async into swizzled
 * shared memory, double-buffered so the next tile loads during the current one's math.
 * Rows of a tile may belong to different sequences (a batch of several prompts): the CTA walks
 * the distinct sequences of its rows in turn, masking rows of other sequences, so any layout
 * of the batch is correct; the usual case (one sequence) is a single pass. Positions outside
 * [0, hi) are zero-filled, never read. Head sizes 64 and 128 are compiled; others go to the
 * decode kernel. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#include "common.cuh"

#define PF_BC 64

struct pf_params {
	bf16 *out;
	const bf16 *q, *kc, *vc;
	const int32_t *tok_seq, *tok_pos, *block_table;
	int T, max_blocks, bs, Hq, Hk, G, window;
	float scale2;
};

static __device__ __forceinline__ uint32_t smem_u32(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)),
		     "l"(src), "r"(valid ? 16 : 0));
}
static __device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
static __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

static __device__ __forceinline__ void ldsm_x4(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}
static __device__ __forceinline__ void ldsm_x4_t(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_u32(p)));
}
static __device__ __forceinline__ void mma16816(float *c, const uint32_t *a, uint32_t b0,
						uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&v;
}

/* Element offset of (row, 16-byte chunk c) in a swizzled [rows][HD] tile. */
template <int HD>
static __device__ __forceinline__ int swz(int row, int c)
{
	return row * HD + ((c ^ (row & 7)) << 3);
}

/* BR query rows per CTA, 16 per warp. */
template <int HD, int BR>
__global__ void __launch_bounds__(BR * 2)
attn_prefill_kernel(pf_params p)
{
	constexpr int PF_BR = BR, PF_THREADS = BR * 2;
	constexpr int CH = HD / 8; /* 16-byte chunks per row */
	extern __shared__ __align__(16) unsigned char smem[];
	bf16 *sq = (bf16 *)smem;
	bf16 *sk = sq + PF_BR * HD;    /* [2][BC][HD] */
	bf16 *sv = sk + 2 * PF_BC * HD; /* [2][BC][HD] */
	__shared__ int row_seq[PF_BR], row_pos[PF_BR];
	__shared__ int s_next, s_lo, s_hi, s_minp, s_maxp, s_mixed;

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int tile = gridDim.x - 1 - blockIdx.x; /* longest tiles first */
	const int t0 = tile * PF_BR, qh = blockIdx.y, kh = qh / p.G;

	for (int r = tid; r < PF_BR; r += PF_THREADS) {
		int t = t0 + r;
		row_seq[r] = t < p.T ? p.tok_seq[t] : INT_MAX;
		row_pos[r] = t < p.T ? p.tok_pos[t] : -1;
	}
	/* Q tile -> shared (zero rows past T). */
	for (int e = tid; e < PF_BR * CH; e += PF_THREADS) {
		int r = e / CH, c = e % CH, t = t0 + r;
		const bf16 *src = p.q + ((int64_t)(t < p.T ? t : 0) * p.Hq + qh) * HD + c * 8;
		cp_async16(sq + swz<HD>(r, c), src, t < p.T);
	}
	cp_commit();
	__syncthreads();

	/* This thread's two rows (g and g+8 of its warp's 16). */
	const int g = lane >> 2, tq = lane & 3;
	const int r0 = warp * 16 + g, r1 = r0 + 8;
	const int seq0 = row_seq[r0], seq1 = row_seq[r1];
	const int pos0 = row_pos[r0], pos1 = row_pos[r1];

	float o[HD / 8][4];
#pragma unroll
	for (int n = 0; n < HD / 8; n++)
		o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
	uint32_t qf[HD / 16][4];
	bool q_loaded = false;

	int cur = INT_MIN; /* sequence being processed; sequences in increasing order */
	for (;;) {
		if (tid == 0) {
			int nx = INT_MAX;
			for (int r = 0; r < PF_BR; r++)
				if (row_seq[r] > cur && row_seq[r] < nx)
					nx = row_seq[r];
			int lo = INT_MAX, hi = 0, minp = INT_MAX, maxp = -1, mixed = 0;
			for (int r = 0; r < PF_BR; r++) {
				if (row_seq[r] != nx) {
					mixed = 1;
					continue;
				}
				int ps = row_pos[r];
				int l = p.window > 0 ? max(0, ps - p.window + 1) : 0;
				lo = min(lo, l);
				hi = max(hi, ps + 1);
				minp = min(minp, ps);
				maxp = max(maxp, ps);
			}
			s_next = nx;
			s_lo = lo;
			s_hi = hi;
			s_minp = minp;
			s_maxp = maxp;
			s_mixed = mixed;
		}
		__syncthreads();
		cur = s_next;
		if (cur == INT_MAX)
			break;
		const int hi = s_hi, minp = s_minp, maxp = s_maxp, mixed = s_mixed;
		const int kv_begin = (s_lo / PF_BC) * PF_BC;
		const int n_tiles = (hi - kv_begin + PF_BC - 1) / PF_BC;
		const int32_t *bt = p.block_table + (int64_t)cur * p.max_blocks;
		__syncthreads(); /* everyone has read s_* before the next pass rewrites them */

		auto load_kv = [&](int it, int buf) {
			int kv0 = kv_begin + it * PF_BC;
			bf16 *dk = sk + buf * PF_BC * HD, *dv = sv + buf * PF_BC * HD;
#pragma unroll
			for (int i = 0; i < PF_BC * CH / PF_THREADS; i++) {
				int e = tid + i * PF_THREADS, r = e / CH, c = e % CH;
				int ps = kv0 + r;
				bool ok = ps < hi;
				int64_t off = 0;
				if (ok) {
					int64_t slot = (int64_t)bt[ps / p.bs] * p.bs + ps % p.bs;
					off = (slot * p.Hk + kh) * HD + c * 8;
				}
				cp_async16(dk + swz<HD>(r, c), p.kc + off, ok);
				cp_async16(dv + swz<HD>(r, c), p.vc + off, ok);
			}
		};

		load_kv(0, 0);
		cp_commit();
		for (int it = 0; it < n_tiles; it++) {
			int buf = it & 1;
			if (it + 1 < n_tiles) {
				load_kv(it + 1, buf ^ 1);
				cp_commit();
				cp_wait<1>();
			} else {
				cp_wait<0>();
			}
			__syncthreads();
			if (!q_loaded) {
				/* A fragments of this warp's 16 Q rows, all of HD. */
#pragma unroll
				for (int kk = 0; kk < HD / 16; kk++) {
					int r = warp * 16 + (lane & 15), c = kk * 2 + (lane >> 4);
					ldsm_x4(qf[kk], sq + swz<HD>(r, c));
				}
				q_loaded = true;
			}
			const bf16 *k_t = sk + buf * PF_BC * HD, *v_t = sv + buf * PF_BC * HD;
			const int kv0 = kv_begin + it * PF_BC;

			/* S[16, 64] = Q K^T for this warp. */
			float sc[PF_BC / 8][4];
#pragma unroll
			for (int n = 0; n < PF_BC / 8; n++)
				sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
			for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
				for (int n = 0; n < PF_BC / 8; n += 2) {
					uint32_t b[4];
					int r = n * 8 + (lane >> 4) * 8 + (lane & 7);
					int c = kk * 2 + ((lane >> 3) & 1);
					ldsm_x4(b, k_t + swz<HD>(r, c));
					mma16816(sc[n], qf[kk], b[0], b[1]);
					mma16816(sc[n + 1], qf[kk], b[2], b[3]);
				}
			}
			/* Mask where needed: other sequences, causal edge, window edge. */
			bool need_mask = mixed || kv0 + PF_BC - 1 > minp ||
					 (p.window > 0 && kv0 < maxp - p.window + 1);
			if (need_mask) {
#pragma unroll
				for (int n = 0; n < PF_BC / 8; n++) {
#pragma unroll
					for (int e = 0; e < 4; e++) {
						int c = kv0 + n * 8 + 2 * tq + (e & 1);
						int sq_ = e < 2 ? seq0 : seq1, ps = e < 2 ? pos0 : pos1;
						bool ok = sq_ == cur && c <= ps &&
							  (p.window <= 0 || c > ps - p.window);
						if (!ok)
							sc[n][e] = -INFINITY;
					}
				}
			}
			/* Online softmax (base 2) over the two rows. */
			float mx0 = m0, mx1 = m1;
#pragma unroll
			for (int n = 0; n < PF_BC / 8; n++) {
				sc[n][0] *= p.scale2;
				sc[n][1] *= p.scale2;
				sc[n][2] *= p.scale2;
				sc[n][3] *= p.scale2;
				mx0 = fmaxf(mx0, fmaxf(sc[n][0], sc[n][1]));
				mx1 = fmaxf(mx1, fmaxf(sc[n][2], sc[n][3]));
			}
			mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
			mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
			mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
			mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
			float b0 = mx0 == -INFINITY ? 0.f : mx0, b1 = mx1 == -INFINITY ? 0.f : mx1;
			float al0 = mx0 == -INFINITY ? 1.f : exp2f(m0 - mx0);
			float al1 = mx1 == -INFINITY ? 1.f : exp2f(m1 - mx1);
			m0 = mx0;
			m1 = mx1;
			float rs0 = 0.f, rs1 = 0.f;
			uint32_t pf[PF_BC / 16][4];
#pragma unroll
			for (int n = 0; n < PF_BC / 8; n++) {
				float p0 = exp2f(sc[n][0] - b0), p1 = exp2f(sc[n][1] - b0);
				float p2 = exp2f(sc[n][2] - b1), p3 = exp2f(sc[n][3] - b1);
				rs0 += p0 + p1;
				rs1 += p2 + p3;
				pf[n / 2][(n & 1) * 2] = pack_bf16(p0, p1);
				pf[n / 2][(n & 1) * 2 + 1] = pack_bf16(p2, p3);
			}
			l0 = l0 * al0 + rs0;
			l1 = l1 * al1 + rs1;
#pragma unroll
			for (int n = 0; n < HD / 8; n++) {
				o[n][0] *= al0;
				o[n][1] *= al0;
				o[n][2] *= al1;
				o[n][3] *= al1;
			}
			/* O[16, HD] += P[16, 64] V[64, HD]. */
#pragma unroll
			for (int kk = 0; kk < PF_BC / 16; kk++) {
#pragma unroll
				for (int n = 0; n < HD / 8; n += 2) {
					uint32_t b[4];
					int r = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
					int c = n + (lane >> 4);
					ldsm_x4_t(b, v_t + swz<HD>(r, c));
					mma16816(o[n], pf[kk], b[0], b[1]);
					mma16816(o[n + 1], pf[kk], b[2], b[3]);
				}
			}
			__syncthreads(); /* buffer buf is reloaded by the next iteration */
		}
	}

	/* Row sums across the quad, normalise, store bf16. */
	l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
	l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
	float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
	int ta = t0 + r0, tb = t0 + r1;
#pragma unroll
	for (int n = 0; n < HD / 8; n++) {
		int d = n * 8 + 2 * tq;
		if (ta < p.T)
			*(__nv_bfloat162 *)(p.out + ((int64_t)ta * p.Hq + qh) * HD + d) =
				__floats2bfloat162_rn(o[n][0] * i0, o[n][1] * i0);
		if (tb < p.T)
			*(__nv_bfloat162 *)(p.out + ((int64_t)tb * p.Hq + qh) * HD + d) =
				__floats2bfloat162_rn(o[n][2] * i1, o[n][3] * i1);
	}
}

template <int HD, int BR>
static fi_err launch(cudaStream_t st, const pf_params &p)
{
	static bool attr_set; /* the attribute is per function; set it once */
	size_t smem = (size_t)(BR + 4 * PF_BC) * HD * sizeof(bf16);
	if (!attr_set) {
		CU_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<HD, BR>,
					      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
		attr_set = true;
	}
	dim3 grid((p.T + BR - 1) / BR, p.Hq);
	attn_prefill_kernel<HD, BR><<<grid, BR * 2, smem, st>>>(p);
	LAUNCH_CHECK();
	return FI_OK;
}

extern "C" fi_err fi_cu_attn_prefill(cudaStream_t st, const struct fi_cu_attn *a,
				     const struct fi_attn_batch *b)
{
	if (b->n_tokens <= 0)
		return FI_OK;
	if ((a->hd != 64 && a->hd != 128) || a->Hk <= 0 || a->Hq % a->Hk ||
	    !fi_aligned16(a->q) || !fi_aligned16(a->kc) || !fi_aligned16(a->vc) ||
	    !fi_aligned16(a->out) || a->Hq > 65535)
		return FI_EUNSUPPORTED;
	pf_params p;
	p.out = (bf16 *)a->out;
	p.q = (const bf16 *)a->q;
	p.kc = (const bf16 *)a->kc;
	p.vc = (const bf16 *)a->vc;
	p.tok_seq = b->tok_seq_d;
	p.tok_pos = b->tok_pos_d;
	p.block_table = b->block_table_d;
	p.T = b->n_tokens;
	p.max_blocks = b->max_blocks;
	p.bs = a->block_size;
	p.Hq = a->Hq;
	p.Hk = a->Hk;
	p.G = a->Hq / a->Hk;
	p.window = b->sliding_window;
	p.scale2 = b->scale * 1.4426950408889634f;
	/* 128-row tiles halve the K/V traffic per query row once there are enough tiles to fill
	 * the GPU; FI_PF_BR=64|128 overrides (for timing both). */
	const char *env = getenv("FI_PF_BR");
	int br = env ? atoi(env) : (p.T >= 1024 ? 128 : 64);
	if (br == 128)
		return a->hd == 64 ? launch<64, 128>(st, p) : launch<128, 128>(st, p);
	return a->hd == 64 ? launch<64, 64>(st, p) : launch<128, 64>(st, p);
}
