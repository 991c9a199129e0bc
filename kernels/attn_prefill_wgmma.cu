/* attn_prefill_wgmma: the prefill attention of attn_prefill.cu for head size 128 on Hopper
 * (sm_90a): warpgroup MMAs (wgmma) read Q, K and V straight from shared memory, so no warp
 * moves K/V fragments through its registers (the mma.sync kernel's limit: every K/V
 * fragment is loaded by each warp with ldmatrix and feeds only that warp's rows).
 *
 * One CTA per (tile of 128 batch tokens, query head): two warpgroups of 64 rows, K/V tiles of
 * 128 positions gathered from the paged cache with cp.async (the same offset table, masks,
 * sequence passes and reverse tile order as attn_prefill.cu), double-buffered, in the
 * 128-byte-swizzled layout wgmma reads: each tile is stored as [HD / 64][rows][64] with the
 * 16-byte chunk index of a row XORed with row % 8. S = Q K^T: wgmma with both operands in
 * shared memory (K-major); P V: P from registers (the accumulator layout of S is the A
 * fragment layout), V N-major in shared memory (the same storage as K, read transposed).
 *
 * Built only when the Makefile adds sm_90a for this file (it defines FI_WGMMA); the
 * fallback is the mma.sync kernel. */
#include <limits.h>
#include <math.h>

#include "attn_prefill.cuh"

#define WG_BR 128 /* query rows per CTA: 2 warpgroups of 64 */
#define WG_BC 128 /* K/V positions per tile */
#define WG_HD 128
#define WG_NT 256

#if defined(FI_WGMMA) && defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_DEVICE 1
#endif

#ifdef WG_DEVICE
/* D[64, 128] (+)= A[64, 16] B[16, 128]: A and B K-major in shared memory. */
static __device__ __forceinline__ void wgmma_ss(float *d, uint64_t da, uint64_t db, int acc)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
		     "%64, %65, p, 1, 1, 0, 0;\n}\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
		     : "l"(da), "l"(db), "r"(acc));
}
/* D[64, 128] += A[64, 16] B[16, 128]: A in registers (the mma.sync A fragment of each warp's
 * 16 rows), B N-major (rows of 128 contiguous N) in shared memory. */
static __device__ __forceinline__ void wgmma_rs(float *d, const uint32_t *a, uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
		     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
		     "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
static __device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
/* keeps the compiler from moving accumulator accesses across the asynchronous MMAs */
static __device__ __forceinline__ void reg_fence(float &r) { asm volatile("" : "+f"(r)::"memory"); }
/* cp.async wrote the tiles through the generic proxy; wgmma reads through the async one */
static __device__ __forceinline__ void proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

/* Shared-memory matrix descriptor, 128-byte swizzle: start, leading and stride byte offsets. */
static __device__ __forceinline__ uint64_t gdesc(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
	return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)(lbo >> 4) << 16 |
	       (uint64_t)(sbo >> 4) << 32 | 1ull << 62;
}
#endif

/* Byte offset of (row r, 16-byte chunk c) in a [HD / 64][R][64] tile, 128-byte swizzle. */
template <int R>
static __device__ __forceinline__ uint32_t tofs(int r, int c)
{
	return (uint32_t)((c >> 3) * R * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4));
}

template <bool PP>
__global__ void __launch_bounds__(WG_NT, 1) attn_prefill_wgmma_kernel(pf_params p)
{
#ifdef WG_DEVICE
	constexpr int BR = WG_BR, BC = WG_BC, HD = WG_HD, NT = WG_NT, CH = HD / 8;
	constexpr uint32_t TILE = BC * HD * 2; /* bytes of one K or V tile */
	extern __shared__ unsigned char smem_raw[];
	/* the swizzle repeats every 1024 bytes of shared address: align the tiles to it */
	unsigned char *base = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
	unsigned char *sq = base, *sk = base + BR * HD * 2, *sv = sk + 2 * TILE;
	const uint32_t sq_a = smem_u32(sq), sk_a = smem_u32(sk), sv_a = smem_u32(sv);
	__shared__ int row_seq[BR], row_pos[BR];
	__shared__ long long s_off[2][BC];
	__shared__ int s_next, s_lo, s_hi;

	const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg0 = (warp >> 2) * 64;
	const int qh = blockIdx.x, tile = gridDim.y - 1 - blockIdx.y; /* longest tiles first */
	const int t0 = tile * BR, kh = qh / p.G;
	const int wr0 = warp * 16; /* this warp's 16 rows of its warpgroup's 64 */

	for (int r = tid; r < BR; r += NT) {
		int t = t0 + r;
		row_seq[r] = t < p.T ? p.tok_seq[t] : INT_MAX;
		row_pos[r] = t < p.T ? p.tok_pos[t] : -1;
	}
	for (int e = tid; e < BR * CH; e += NT) {
		int r = e / CH, c = e % CH, t = t0 + r;
		const bf16 *src = p.q + ((int64_t)(t < p.T ? t : 0) * p.Hq + qh) * HD + c * 8;
		cp_async16(sq + tofs<BR>(r, c), src, t < p.T);
	}
	cp_commit();
	__syncthreads();

	const int g = lane >> 2, tq = lane & 3;
	float o[64]; /* O[16 rows of this warp, 128]: o[4 j + e] as an m16n8 C fragment, j = n / 8 */
#pragma unroll
	for (int i = 0; i < 64; i++)
		o[i] = 0.f;
	float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

	int cur = INT_MIN;
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
		/* The warpgroup's K/V range [glo, ghi) (every warp of it computes the same: the
		 * MMAs are collective, so it skips a tile as one) and this warp's mask bounds. */
		int glo = INT_MAX, ghi = 0;
#pragma unroll
		for (int h = 0; h < 2; h++) {
			int r = wg0 + h * 32 + lane;
			if (row_seq[r] == cur) {
				int ps = row_pos[r];
				glo = min(glo, p.window > 0 ? max(0, ps - p.window + 1) : 0);
				ghi = max(ghi, ps + 1);
			}
		}
		glo = warp_min(glo);
		ghi = warp_max(ghi);
		int wminp = INT_MAX, wmaxp = -1, wmixed = 0;
		if (lane < 16) {
			if (row_seq[wr0 + lane] != cur) {
				wmixed = 1;
			} else {
				wminp = row_pos[wr0 + lane];
				wmaxp = wminp;
			}
		}
		const int mask_above = warp_max(wmixed) ? INT_MIN : warp_min(wminp) - BC + 1;
		const int mask_below = p.window > 0 ? warp_max(wmaxp) - p.window + 1 : INT_MIN;

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
		auto load = [&](unsigned char *dst, const bf16 *src, int j) {
			const long long *offs = s_off[j & 1];
			unsigned char *d = dst + (j & 1) * TILE;
#pragma unroll
			for (int i = 0; i < BC * CH / NT; i++) {
				int e = tid + i * NT, r = e / CH, c = e % CH;
				long long off = offs[r];
				cp_async16(d + tofs<BC>(r, c), src + (off < 0 ? 0 : off) + c * 8, off >= 0);
			}
		};
		if (tid < BC) {
			s_off[0][tid] = row_off(0, row_blk(0));
			s_off[1][tid] = row_off(1, row_blk(1));
		}
		__syncthreads();
		load(sk, p.kc, 0);
		cp_commit();
		load(sv, p.vc, 0);
		cp_commit();

		/* S = Q K^T of tile it for this warpgroup, masked, online softmax into pf (the P
		 * fragments) and the rescaled o. */
		uint32_t pf[BC / 16][4];
		auto qk_softmax = [&](int it) {
			const int kv0 = kv_begin + it * BC;
			const bool need_mask = kv0 > mask_above || kv0 < mask_below;
			float s[64];
#pragma unroll
			for (int i = 0; i < 64; i++)
				s[i] = 0.f;
#pragma unroll
			for (int i = 0; i < 64; i++)
				reg_fence(s[i]);
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < HD / 16; kk++) {
				uint32_t qa = sq_a + (kk >> 2) * BR * 128 + wg0 * 128 + (kk & 3) * 32;
				uint32_t ka = sk_a + (it & 1) * TILE + (kk >> 2) * BC * 128 + (kk & 3) * 32;
				wgmma_ss(s, gdesc(qa, 16, 1024), gdesc(ka, 16, 1024), kk);
			}
			wg_commit();
			wg_wait0();
#pragma unroll
			for (int i = 0; i < 64; i++)
				reg_fence(s[i]);
			if (need_mask) {
#pragma unroll
				for (int h = 0; h < 2; h++) {
					int r = wr0 + g + 8 * h, ps = row_pos[r];
					bool same = row_seq[r] == cur;
#pragma unroll
					for (int j = 0; j < BC / 8; j++)
#pragma unroll
						for (int e = 0; e < 2; e++) {
							int c = kv0 + j * 8 + 2 * tq + e;
							bool ok = same && c <= ps &&
								  (p.window <= 0 || c > ps - p.window);
							if (!ok)
								s[4 * j + 2 * h + e] = -INFINITY;
						}
				}
			}
			float mx0 = m0, mx1 = m1;
#pragma unroll
			for (int j = 0; j < BC / 8; j++) {
				mx0 = fmaxf(mx0, fmaxf(s[4 * j], s[4 * j + 1]));
				mx1 = fmaxf(mx1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
			}
			mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
			mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
			mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
			mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
			const float b0 = mx0 == -INFINITY ? 0.f : mx0 * p.scale2;
			const float b1 = mx1 == -INFINITY ? 0.f : mx1 * p.scale2;
			const float al0 = ex2(fmaf(m0, p.scale2, -b0));
			const float al1 = ex2(fmaf(m1, p.scale2, -b1));
			const bool changed = mx0 != m0 || mx1 != m1;
			m0 = mx0;
			m1 = mx1;
			float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
			for (int j = 0; j < BC / 8; j++) {
				float p0 = ex2(fmaf(s[4 * j], p.scale2, -b0));
				float p1 = ex2(fmaf(s[4 * j + 1], p.scale2, -b0));
				float p2 = ex2(fmaf(s[4 * j + 2], p.scale2, -b1));
				float p3 = ex2(fmaf(s[4 * j + 3], p.scale2, -b1));
				rs0 += p0 + p1;
				rs1 += p2 + p3;
				pf[j / 2][(j & 1) * 2] = pack_bf16(p0, p1);
				pf[j / 2][(j & 1) * 2 + 1] = pack_bf16(p2, p3);
			}
			l0 = l0 * al0 + rs0;
			l1 = l1 * al1 + rs1;
			if (__any_sync(0xffffffffu, changed)) {
#pragma unroll
				for (int j = 0; j < HD / 8; j++) {
					o[4 * j] *= al0;
					o[4 * j + 1] *= al0;
					o[4 * j + 2] *= al1;
					o[4 * j + 3] *= al1;
				}
			}
		};
		/* O[64, 128] += P[64, 128] V[128, 128] with V of tile it */
		auto pv = [&](int it) {
#pragma unroll
			for (int i = 0; i < 64; i++)
				reg_fence(o[i]);
			wg_fence();
#pragma unroll
			for (int kk = 0; kk < BC / 16; kk++) {
				uint32_t va = sv_a + (it & 1) * TILE + kk * 16 * 128;
				wgmma_rs(o, pf[kk], gdesc(va, BC * 128, 1024));
			}
			wg_commit();
			wg_wait0();
#pragma unroll
			for (int i = 0; i < 64; i++)
				reg_fence(o[i]);
		};
		auto active = [&](int it) {
			const int kv0 = kv_begin + it * BC;
			return kv0 < ghi && kv0 + BC > glo;
		};

		/* Two barriers a tile: A (K of tile it landed; every warp is done with tile
		 * it - 1's K) and B (V of tile it landed; done with tile it - 1's V), each followed
		 * by the load of the next tile's K or V into the buffer just freed.
		 * PP (ping-pong): warpgroup 1 runs half a tile behind warpgroup 0, so one's softmax
		 * overlaps the other's MMAs: between A and B warpgroup 0 does Q K^T and softmax of
		 * tile it while warpgroup 1 does P V of tile it - 1; between B and the next A,
		 * warpgroup 0 does P V of tile it and warpgroup 1 Q K^T and softmax of tile it.
		 * Without PP both do the same step at once. */
		const bool lag = PP && wg0 != 0;
		for (int it = 0; it < n_tiles; it++) {
			cp_wait<1>(); /* Q and K of tile it */
			proxy_fence();
			__syncthreads(); /* A */
			if (it + 1 < n_tiles)
				load(sk, p.kc, it + 1);
			cp_commit();
			const int nxt_blk = row_blk(it + 2);
			if (!lag) {
				if (active(it))
					qk_softmax(it);
			} else if (it > 0 && active(it - 1)) {
				pv(it - 1);
			}
			cp_wait<1>(); /* V of tile it */
			proxy_fence();
			__syncthreads(); /* B */
			if (it + 1 < n_tiles)
				load(sv, p.vc, it + 1);
			cp_commit();
			if (!lag) {
				if (active(it))
					pv(it);
			} else if (active(it)) {
				qk_softmax(it);
			}
			if (tid < BC)
				s_off[it & 1][tid] = row_off(it + 2, nxt_blk);
		}
		if (lag && active(n_tiles - 1))
			pv(n_tiles - 1);
	}
	cp_wait<0>();

	/* Normalise; bf16 into this warp's own rows of the Q tile (no other warp reads them
	 * any more), then 16-byte stores of whole rows. */
	l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
	l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
	l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
	const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
#pragma unroll
	for (int j = 0; j < HD / 8; j++) {
		*(__nv_bfloat162 *)(sq + tofs<BR>(wr0 + g, j) + 4 * tq) =
			__floats2bfloat162_rn(o[4 * j] * i0, o[4 * j + 1] * i0);
		*(__nv_bfloat162 *)(sq + tofs<BR>(wr0 + g + 8, j) + 4 * tq) =
			__floats2bfloat162_rn(o[4 * j + 2] * i1, o[4 * j + 3] * i1);
	}
	__syncwarp();
	for (int e = lane; e < 16 * CH; e += 32) {
		int r = wr0 + e / CH, c = e % CH, t = t0 + r;
		if (t < p.T)
			*(uint4 *)(p.out + ((int64_t)t * p.Hq + qh) * HD + c * 8) =
				*(const uint4 *)(sq + tofs<BR>(r, c));
	}
#elif defined(__CUDA_ARCH__)
	__trap(); /* this binary lacks sm_90a code: the host never launches it there */
#endif
}

template <bool PP>
static fi_err launch_wg(cudaStream_t st, const pf_params &p)
{
	static int ok = -1; /* compute capability 9.0 exactly: sm_90a code runs nowhere else */
	const size_t smem = (size_t)(WG_BR + 4 * WG_BC) * WG_HD * 2 + 1024;
	if (ok < 0) {
		int dev, maj = 0, min = 0;
		cudaFuncAttributes fa;
		/* and the loaded code is the sm_90a one, not the stub of the plain sm_90 build
		 * (which declares no static shared memory) */
		ok = cudaGetDevice(&dev) == cudaSuccess &&
		     cudaDeviceGetAttribute(&maj, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
		     cudaDeviceGetAttribute(&min, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
		     maj == 9 && min == 0 &&
		     cudaFuncGetAttributes(&fa, attn_prefill_wgmma_kernel<PP>) == cudaSuccess &&
		     fa.sharedSizeBytes > 0;
		cudaGetLastError();
		if (ok)
			CU_CHECK(cudaFuncSetAttribute(attn_prefill_wgmma_kernel<PP>,
						      cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
	}
	if (!ok)
		return FI_EUNSUPPORTED;
	dim3 grid(p.Hq, (p.T + WG_BR - 1) / WG_BR);
	attn_prefill_wgmma_kernel<PP><<<grid, WG_NT, smem, st>>>(p);
	LAUNCH_CHECK();
	return FI_OK;
}

fi_err fi_cu_attn_prefill_wgmma(cudaStream_t st, const pf_params &p, int hd, bool pingpong)
{
#ifndef FI_WGMMA
	return FI_EUNSUPPORTED;
#else
	if (hd != WG_HD)
		return FI_EUNSUPPORTED;
	return pingpong ? launch_wg<true>(st, p) : launch_wg<false>(st, p);
#endif
}
