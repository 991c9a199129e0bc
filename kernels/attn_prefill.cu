/* attn_prefill: causal flash-attention on tensor cores (FA2 scheme, mma.sync m16n8k16 bf16,
 * f32 accumulation) over the paged KV cache, GQA and sliding window.
 *
 * One CTA per (tile of BR consecutive batch tokens, query head); NW warps of 16 x WM query
 * rows (WM = 2: every K/V fragment read from shared memory feeds two row blocks, which halves
 * the shared-memory traffic per mma against 16-row warps). K/V tiles of 64 positions are
 * gathered from the cache blocks with cp.async into swizzled shared memory, double-buffered,
 * K and V in separate groups so Q K^T starts as soon as K has landed. The cache offsets of a
 * tile's 64 positions are computed two tiles ahead into a small shared table (one block-table
 * lookup per position, not per 16-byte chunk).
 *
 * The grid is (query head, tile) with the tiles in reverse order, so the CTAs with the most
 * K/V tiles (the end of a causal prompt) start first on every head and the short ones fill
 * the tail. Warps whose rows see none of a K/V tile skip it; masking arithmetic runs only on
 * tiles crossing a row's causal or window edge (or a sequence boundary).
 *
 * Rows of a tile may belong to different sequences (a batch of several prompts): the CTA walks
 * the distinct sequences of its rows in turn, masking rows of other sequences, so any layout
 * of the batch is correct; the usual case (one sequence) is a single pass. Positions outside
 * [0, hi) are zero-filled, never read. Head sizes 64, 128 and 256 (Gemma) are compiled;
 * others go to the decode kernel. Soft-capped scores (Gemma 2) are capped right after Q K^T. Head size 128 on Hopper takes the wgmma kernel (attn_prefill_wgmma.cu) from 512
 * tokens when the build has it. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn_prefill.cuh"

/* Element offset of (row, 16-byte chunk c) in a swizzled [rows][HD] tile: the 8 rows an
 * ldmatrix reads at one chunk index land in 8 different bank groups. */
template <int HD>
static __device__ __forceinline__ int swz(int row, int c)
{
	return row * HD + ((c ^ (row & 7)) << 3);
}

/* BR = 16 WM NW query rows per CTA; warp w owns rows [16 WM w, 16 WM (w + 1)). */
template <int HD, int WM, int NW, int BC>
__global__ void __launch_bounds__(NW * 32, NW == 4 ? 2 : 1)
attn_prefill_kernel(pf_params p)
{
	constexpr int BR = 16 * WM * NW, NT = NW * 32;
	constexpr int CH = HD / 8; /* 16-byte chunks per row */
	/* Q fragments live in registers (else reread from shared memory); not at head size 256,
	 * whose 64 Q registers and 128 of O would not fit beside the scores */
	constexpr bool Q_REGS = WM == 1 && HD <= 128;
	static_assert(NT >= BC, "one thread per K/V row of the offset table");
	extern __shared__ __align__(16) unsigned char smem[];
	bf16 *sq = (bf16 *)smem;       /* [BR][HD]; the output tile at the end */
	bf16 *sk = sq + BR * HD;       /* [2][BC][HD] */
	bf16 *sv = sk + 2 * BC * HD;   /* [2][BC][HD] */
	__shared__ int row_seq[BR], row_pos[BR];
	__shared__ long long s_off[2][BC]; /* element offset of each K/V row in the cache, -1 none */
	__shared__ int s_next, s_lo, s_hi;

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	const int qh = blockIdx.x, tile = gridDim.y - 1 - blockIdx.y; /* longest tiles first */
	const int t0 = tile * BR, kh = qh / p.G;
	const int wr0 = warp * 16 * WM; /* this warp's first row */

	for (int r = tid; r < BR; r += NT) {
		int t = t0 + r;
		row_seq[r] = t < p.T ? p.tok_seq[t] : INT_MAX;
		row_pos[r] = t < p.T ? p.tok_pos[t] : -1;
	}
	/* Q tile -> shared (zero rows past T). */
	for (int e = tid; e < BR * CH; e += NT) {
		int r = e / CH, c = e % CH, t = t0 + r;
		const bf16 *src = p.q + ((int64_t)(t < p.T ? t : 0) * p.Hq + qh) * HD + c * 8;
		cp_async16(sq + swz<HD>(r, c), src, t < p.T);
	}
	cp_commit();
	__syncthreads();

	/* This thread's rows: g and g + 8 of each of the warp's WM blocks of 16 (their sequence
	 * and position are read from shared memory where needed: registers are short). */
	const int g = lane >> 2, tq = lane & 3;

	float o[WM][HD / 8][4];
	float mrow[WM][2], lrow[WM][2]; /* running max (unscaled scores) and sum per row */
#pragma unroll
	for (int m = 0; m < WM; m++) {
#pragma unroll
		for (int n = 0; n < HD / 8; n++)
			o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.f;
		mrow[m][0] = mrow[m][1] = -INFINITY;
		lrow[m][0] = lrow[m][1] = 0.f;
	}
	uint32_t qf[Q_REGS ? HD / 16 : 1][4];
	bool q_loaded = false;

	int cur = INT_MIN; /* sequence being processed; sequences in increasing order */
	for (;;) {
		if (tid == 0) {
			int nx = INT_MAX;
			for (int r = 0; r < BR; r++)
				if (row_seq[r] > cur && row_seq[r] < nx)
					nx = row_seq[r];
			int lo = INT_MAX, hi = 0;
			for (int r = 0; r < BR; r++) {
				if (row_seq[r] != nx)
					continue;
				int ps = row_pos[r];
				lo = min(lo, p.window > 0 ? max(0, ps - p.window + 1) : 0);
				hi = max(hi, ps + 1);
			}
			s_next = nx;
			s_lo = lo;
			s_hi = hi;
		}
		__syncthreads();
		cur = s_next;
		if (cur == INT_MAX)
			break;
		const int hi = s_hi;
		const int kv_begin = (s_lo / BC) * BC;
		const int n_tiles = (hi - kv_begin + BC - 1) / BC;
		const int32_t *bt = p.block_table + (int64_t)cur * p.max_blocks;
		/* This warp's rows of sequence cur: K/V range [wlo, whi), positions [wminp, wmaxp];
		 * a warp with none has whi = 0 and skips every tile. */
		int wlo = INT_MAX, whi = 0, wminp = INT_MAX, wmaxp = -1, wmixed = 0;
		if (lane < 16 * WM) {
			if (row_seq[wr0 + lane] != cur) {
				wmixed = 1;
			} else {
				int ps = row_pos[wr0 + lane];
				wlo = min(wlo, p.window > 0 ? max(0, ps - p.window + 1) : 0);
				whi = max(whi, ps + 1);
				wminp = min(wminp, ps);
				wmaxp = max(wmaxp, ps);
			}
		}
		wlo = warp_min(wlo);
		whi = warp_max(whi);
		/* A tile needs masking past mask_above (causal edge of the warp's first row, or
		 * any tile with rows of other sequences) or before mask_below (window edge). */
		const int mask_above = warp_max(wmixed) ? INT_MIN : warp_min(wminp) - BC + 1;
		const int mask_below = p.window > 0 ? warp_max(wmaxp) - p.window + 1 : INT_MIN;

		/* Cache block of K/V row tid of tile j (-1 past hi: zero-filled), then its
		 * element offset (the block id is looked up one tile before it is needed). */
		auto row_blk = [&](int j) -> int {
			int ps = kv_begin + j * BC + tid;
			return tid >= BC || j >= n_tiles || ps >= hi ? -1 : bt[ps / p.bs];
		};
		auto row_off = [&](int j, int blk) -> long long {
			if (blk < 0)
				return -1;
			int ps = kv_begin + j * BC + tid;
			long long slot = (long long)blk * p.bs + ps % p.bs;
			return (slot * p.Hk + kh) * HD;
		};
		auto load = [&](bf16 *dst, const bf16 *src, int j) {
			const long long *offs = s_off[j & 1];
			bf16 *d = dst + (j & 1) * BC * HD;
#pragma unroll
			for (int i = 0; i < BC * CH / NT; i++) {
				int e = tid + i * NT, r = e / CH, c = e % CH;
				long long off = offs[r];
				cp_async16(d + swz<HD>(r, c), src + (off < 0 ? 0 : off) + c * 8, off >= 0);
			}
		};
		if (tid < BC) {
			s_off[0][tid] = row_off(0, row_blk(0));
			s_off[1][tid] = row_off(1, row_blk(1));
		}
		__syncthreads(); /* the table is written; everyone has read s_* */
		load(sk, p.kc, 0);
		cp_commit();
		load(sv, p.vc, 0);
		cp_commit();

		/* Two barriers a tile: the first (K of tile it landed) also proves every warp is
		 * done with tile it - 1, whose buffers then take tile it + 1. */
		for (int it = 0; it < n_tiles; it++) {
			const int buf = it & 1;
			cp_wait<1>(); /* Q and K of tile it (V of tile it may be in flight) */
			__syncthreads();
			/* Next tile into the other buffers (always two groups, maybe empty, so the
			 * wait counts hold), then start the lookup of the one after. */
			if (it + 1 < n_tiles)
				load(sk, p.kc, it + 1);
			cp_commit();
			if (it + 1 < n_tiles)
				load(sv, p.vc, it + 1);
			cp_commit();
			const int nxt_blk = row_blk(it + 2);

			const int kv0 = kv_begin + it * BC;
			const bool active = kv0 < whi && kv0 + BC > wlo;
			const bool need_mask = kv0 > mask_above || kv0 < mask_below;
			const bf16 *k_t = sk + buf * BC * HD, *v_t = sv + buf * BC * HD;

			if (Q_REGS && !q_loaded) {
#pragma unroll
				for (int kk = 0; kk < HD / 16; kk++) {
					int r = wr0 + (lane & 15), c = kk * 2 + (lane >> 4);
					ldsm_x4(qf[Q_REGS ? kk : 0], sq + swz<HD>(r, c));
				}
				q_loaded = true;
			}
			uint32_t pf[WM][BC / 16][4];
			if (active) {
				/* S[16 WM, 64] = Q K^T for this warp. */
				float sc[WM][BC / 8][4];
#pragma unroll
				for (int m = 0; m < WM; m++)
#pragma unroll
					for (int n = 0; n < BC / 8; n++)
						sc[m][n][0] = sc[m][n][1] = sc[m][n][2] = sc[m][n][3] = 0.f;
#pragma unroll
				for (int kk = 0; kk < HD / 16; kk++) {
					uint32_t a[WM][4];
#pragma unroll
					for (int m = 0; m < WM; m++) {
						if (Q_REGS) {
#pragma unroll
							for (int i = 0; i < 4; i++)
								a[m][i] = qf[Q_REGS ? kk : 0][i];
						} else {
							int r = wr0 + m * 16 + (lane & 15);
							int c = kk * 2 + (lane >> 4);
							ldsm_x4(a[m], sq + swz<HD>(r, c));
						}
					}
#pragma unroll
					for (int n = 0; n < BC / 8; n += 2) {
						uint32_t b[4];
						int r = n * 8 + (lane >> 4) * 8 + (lane & 7);
						int c = kk * 2 + ((lane >> 3) & 1);
						ldsm_x4(b, k_t + swz<HD>(r, c));
#pragma unroll
						for (int m = 0; m < WM; m++) {
							mma16816(sc[m][n], a[m], b[0], b[1]);
							mma16816(sc[m][n + 1], a[m], b[2], b[3]);
						}
					}
				}
				if (p.capi > 0.f) { /* soft-capping, before the masks */
#pragma unroll
					for (int m = 0; m < WM; m++)
#pragma unroll
						for (int n = 0; n < BC / 8; n++)
#pragma unroll
							for (int e = 0; e < 4; e++)
								sc[m][n][e] = p.capr * tanhf(sc[m][n][e] * p.capi);
				}
				/* Mask where needed: other sequences, causal edge, window edge. */
				if (need_mask) {
#pragma unroll
					for (int m = 0; m < WM; m++)
#pragma unroll
						for (int n = 0; n < BC / 8; n++)
#pragma unroll
							for (int e = 0; e < 4; e++) {
								int c = kv0 + n * 8 + 2 * tq + (e & 1);
								int r = wr0 + m * 16 + (e >> 1) * 8 + g;
								int ps = row_pos[r];
								bool ok = row_seq[r] == cur && c <= ps &&
									  (p.window <= 0 || c > ps - p.window);
								if (!ok)
									sc[m][n][e] = -INFINITY;
							}
				}
				/* Online softmax in base 2, the scale folded into the exponent's FMA
				 * (it is positive, so the max of the raw scores is the max). */
#pragma unroll
				for (int m = 0; m < WM; m++) {
					float mx0 = mrow[m][0], mx1 = mrow[m][1];
#pragma unroll
					for (int n = 0; n < BC / 8; n++) {
						mx0 = fmaxf(mx0, fmaxf(sc[m][n][0], sc[m][n][1]));
						mx1 = fmaxf(mx1, fmaxf(sc[m][n][2], sc[m][n][3]));
					}
					mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
					mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
					mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
					mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
					const float b0 = mx0 == -INFINITY ? 0.f : mx0 * p.scale2;
					const float b1 = mx1 == -INFINITY ? 0.f : mx1 * p.scale2;
					const float al0 = ex2(fmaf(mrow[m][0], p.scale2, -b0));
					const float al1 = ex2(fmaf(mrow[m][1], p.scale2, -b1));
					const bool changed = mx0 != mrow[m][0] || mx1 != mrow[m][1];
					mrow[m][0] = mx0;
					mrow[m][1] = mx1;
					float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
					for (int n = 0; n < BC / 8; n++) {
						float p0 = ex2(fmaf(sc[m][n][0], p.scale2, -b0));
						float p1 = ex2(fmaf(sc[m][n][1], p.scale2, -b0));
						float p2 = ex2(fmaf(sc[m][n][2], p.scale2, -b1));
						float p3 = ex2(fmaf(sc[m][n][3], p.scale2, -b1));
						rs0 += p0 + p1;
						rs1 += p2 + p3;
						pf[m][n / 2][(n & 1) * 2] = pack_bf16(p0, p1);
						pf[m][n / 2][(n & 1) * 2 + 1] = pack_bf16(p2, p3);
					}
					lrow[m][0] = lrow[m][0] * al0 + rs0;
					lrow[m][1] = lrow[m][1] * al1 + rs1;
					/* Once the row maxima settle (most tiles of a long row), the
					 * accumulator keeps its scale: skip the multiplies. */
					if (__any_sync(0xffffffffu, changed)) {
#pragma unroll
						for (int n = 0; n < HD / 8; n++) {
							o[m][n][0] *= al0;
							o[m][n][1] *= al0;
							o[m][n][2] *= al1;
							o[m][n][3] *= al1;
						}
					}
				}
			}
			cp_wait<2>(); /* V of tile it */
			__syncthreads();
			if (active) {
				/* O[16 WM, HD] += P[16 WM, 64] V[64, HD]. */
#pragma unroll
				for (int kk = 0; kk < BC / 16; kk++) {
#pragma unroll
					for (int n = 0; n < HD / 8; n += 2) {
						uint32_t b[4];
						int r = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
						int c = n + (lane >> 4);
						ldsm_x4_t(b, v_t + swz<HD>(r, c));
#pragma unroll
						for (int m = 0; m < WM; m++) {
							mma16816(o[m][n], pf[m][kk], b[0], b[1]);
							mma16816(o[m][n + 1], pf[m][kk], b[2], b[3]);
						}
					}
				}
			}
			/* tile it + 2 takes tile it's slot (read before this tile's first barrier) */
			if (tid < BC)
				s_off[buf][tid] = row_off(it + 2, nxt_blk);
		}
	}
	cp_wait<0>(); /* (only empty groups are left) */

	/* Row sums across the quad, normalise, bf16 into this warp's own rows of the Q tile
	 * (only this warp ever read them), then 16-byte stores of whole rows. */
#pragma unroll
	for (int m = 0; m < WM; m++) {
		float inv[2];
#pragma unroll
		for (int h = 0; h < 2; h++) {
			float l = lrow[m][h];
			l += __shfl_xor_sync(0xffffffffu, l, 1);
			l += __shfl_xor_sync(0xffffffffu, l, 2);
			inv[h] = l > 0.f ? 1.f / l : 0.f;
		}
#pragma unroll
		for (int n = 0; n < HD / 8; n++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				int r = wr0 + m * 16 + h * 8 + g;
				*(__nv_bfloat162 *)(sq + swz<HD>(r, n) + 2 * tq) = __floats2bfloat162_rn(
					o[m][n][2 * h] * inv[h], o[m][n][2 * h + 1] * inv[h]);
			}
	}
	__syncwarp();
	for (int e = lane; e < 16 * WM * CH; e += 32) {
		int r = wr0 + e / CH, c = e % CH, t = t0 + r;
		if (t < p.T)
			*(uint4 *)(p.out + ((int64_t)t * p.Hq + qh) * HD + c * 8) =
				*(const uint4 *)(sq + swz<HD>(r, c));
	}
}

template <int HD, int WM, int NW, int BC = 64>
static fi_err launch(cudaStream_t st, const pf_params &p)
{
	constexpr int BR = 16 * WM * NW;
	static bool attr_set; /* the attribute is per function; set it once */
	size_t smem = (size_t)(BR + 4 * BC) * HD * sizeof(bf16);
	if (!attr_set) {
		CU_CHECK(cudaFuncSetAttribute(attn_prefill_kernel<HD, WM, NW, BC>,
					      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
		attr_set = true;
	}
	dim3 grid(p.Hq, (p.T + BR - 1) / BR);
	attn_prefill_kernel<HD, WM, NW, BC><<<grid, NW * 32, smem, st>>>(p);
	LAUNCH_CHECK();
	return FI_OK;
}

template <int HD>
static fi_err launch_hd(cudaStream_t st, const pf_params &p, const char *cfg)
{
	if (!strcmp(cfg, "128"))
		return launch<HD, 2, 4>(st, p); /* 4 warps of 32 rows */
	if (!strcmp(cfg, "128c32"))
		return launch<HD, 2, 4, 32>(st, p); /* the same with K/V tiles of 32 */
	if (!strcmp(cfg, "128w8"))
		return launch<HD, 1, 8>(st, p); /* 8 warps of 16 rows (the former kernel's layout) */
	return launch<HD, 1, 4>(st, p);         /* 64 rows: 4 warps of 16 */
}

extern "C" fi_err fi_cu_attn_prefill(cudaStream_t st, const struct fi_cu_attn *a,
				     const struct fi_attn_batch *b)
{
	if (b->n_tokens <= 0)
		return FI_OK;
	/* scale > 0: the kernel takes the row max of the unscaled scores */
	if ((a->hd != 64 && a->hd != 128 && a->hd != 256) || a->Hk <= 0 || a->Hq % a->Hk ||
	    !fi_aligned16(a->q) || !fi_aligned16(a->kc) || !fi_aligned16(a->vc) ||
	    !fi_aligned16(a->out) || !(b->scale > 0.f) || (b->n_tokens + 63) / 64 > 65535)
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
	p.capi = b->softcap > 0.f ? b->scale / b->softcap : 0.f;
	p.capr = b->softcap > 0.f ? b->softcap / b->scale : 0.f;
	/* Head size 128 on Hopper: the wgmma kernel (attn_prefill_wgmma.cu) from 512 tokens,
	 * FI_PF_WGMMA=0 turns it off. Otherwise 128-row tiles once there are enough tiles to fill
	 * the GPU. FI_PF_BR picks one (for tests and timings): wg (the wgmma default, ping-pong),
	 * wgl (wgmma, warpgroups in lockstep), 64, 128, 128c32, 128w8. */
	const struct fi_settings *set = fi_settings();
	const char *env = set->pf_br[0] ? set->pf_br : NULL;
	bool env_wg = env && !strncmp(env, "wg", 2);
	bool want_wg = (env ? env_wg : p.T >= 512 && set->pf_wgmma) && p.capi == 0.f;
	if (want_wg) {
		fi_err e = fi_cu_attn_prefill_wgmma(st, p, a->hd, !(env && !strcmp(env, "wgl")));
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	const char *cfg = env && !env_wg ? env : p.T >= 1024 ? "128" : "64";
	if (a->hd == 256) /* Gemma: 16-row warps only (a 32-row warp's O would not fit in
			   * registers); 4 warps (64 rows, 160 KiB of shared memory) or 8 (128) */
		return !strcmp(cfg, "64") ? launch<256, 1, 4>(st, p) : launch<256, 1, 8>(st, p);
	return a->hd == 64 ? launch_hd<64>(st, p, cfg) : launch_hd<128>(st, p, cfg);
}
