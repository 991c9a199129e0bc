/* gemv_q4kh: the GGUF Q4_K decode product at one token, out[N] = x[K] W^T (+ bias), in half2
 * arithmetic as kernels/gemv_q4h.cu does for INT4.
 *
 * A Q4_K block is 256 columns in 144 bytes: d and dmin (f16), 12 bytes of 6-bit scales and
 * mins for its 8 sub-blocks of 32, then qs[128]: group j (bytes 32j .. 32j+31) holds sub-block
 * 2j in its low nibbles and 2j + 1 in its high ones, byte i column i of each. A value is
 * d sc q - dmin m, so a sub-block's sum is
 *
 *   sum_k x_k (d sc q_k - dmin m) = d sc sum_k x_k q_k - dmin m sum_k x_k
 *
 * with the sub-block sums of x taken once a block in f32, and sum x q in half2: word i of a
 * group (bytes 4i .. 4i+3) gives, as gemv_q4h's masks do, the half2 pairs (A 4i, A 4i+2)
 * and (B 4i, B 4i+2) x 16 from its low and high nibbles, and (A 4i+1, A 4i+3), (B 4i+1,
 * B 4i+3) from w >> 8 (A, B: the group's two sub-blocks); q exact by one HSUB2 or HFMA2, then
 * HFMA2 with x. x is staged as half times 2^e (max|x| < 64) in that order: 16 bytes a word,
 * 128 a group. A half partial holds four words' products of a sub-block, eight a half of at
 * most 15 x 64: under 7,700; then it goes to f32 (two such chains a sub-block, so that an
 * outlier's product rounds at most seven terms after it, as in gemv_q4h).
 *
 * A lane takes one group of a row a round (32 bytes of qs and the block's 16-byte head, which
 * the 4 lanes of a block share through L1), GH_R rows a warp, K sliced as gemv_half.cuh
 * chooses, a block's items in turn; the CPU twin is fi_cpu's Q4_K dequantization
 * (base/quant.c). */
#include "gemv_half.cuh"
#include "qchunk.cuh"

/* x[K] into xs in the group order above (8 x 16 bytes a group of 64 columns), and the f32 sums
 * of its 32-column sub-blocks into gs; returns e. Ends with a barrier. */
static __device__ __forceinline__ int q4kh_stage(const bf16 *__restrict__ x, int K, uint4 *xs,
						 float *gs, float *sh)
{
	const int e = gh_exp(gh_absmax(x, K, sh), 6);
	const float up = ldexpf(1.f, e);
	for (int t = threadIdx.x; t < K / 8; t += blockDim.x) { /* group t / 8, word t % 8 */
		const int g = t >> 3, i = t & 7;
		float a[4], b[4];
		const uint2 ua = *(const uint2 *)(x + 64 * g + 4 * i);
		const uint2 ub = *(const uint2 *)(x + 64 * g + 32 + 4 * i);
		const float2 a0 = __bfloat1622float2(*(const __nv_bfloat162 *)&ua.x);
		const float2 a1 = __bfloat1622float2(*(const __nv_bfloat162 *)&ua.y);
		const float2 b0 = __bfloat1622float2(*(const __nv_bfloat162 *)&ub.x);
		const float2 b1 = __bfloat1622float2(*(const __nv_bfloat162 *)&ub.y);
		a[0] = a0.x, a[1] = a0.y, a[2] = a1.x, a[3] = a1.y;
		b[0] = b0.x, b[1] = b0.y, b[2] = b1.x, b[3] = b1.y;
		uint4 v;
		v.x = u32of(__floats2half2_rn(a[0] * up, a[2] * up));
		v.y = u32of(__floats2half2_rn(b[0] * up, b[2] * up));
		v.z = u32of(__floats2half2_rn(a[1] * up, a[3] * up));
		v.w = u32of(__floats2half2_rn(b[1] * up, b[3] * up));
		xs[8 * g + (i ^ (g & 7))] = v;
	}
	for (int s = threadIdx.x; s < K / 32; s += blockDim.x) { /* in order: deterministic */
		float sum = 0.f;
		for (int k = 0; k < 32; k += 8) {
			float f[8];
			bf16x8_to_f32(*(const bf16x8 *)(x + 32 * s + k), f);
#pragma unroll
			for (int j = 0; j < 8; j++)
				sum += f[j];
		}
		gs[s] = sum;
	}
	__syncthreads();
	return e;
}

/* Piece t of x (group t / 8, word t % 8: 4 columns from each half of the group) as one xs
 * word, and the group's two sub-block sums into gs by lane (the 8 lanes of a group are
 * consecutive: an xor tree over them). A warp's 32 pieces are all in or all out. */
static __device__ __forceinline__ void q4kh_piece(uint2 ua, uint2 ub, float up, int t, uint4 *xs,
						  float *gs)
{
	const int g = t >> 3, i = t & 7;
	const float2 a0 = __bfloat1622float2(*(const __nv_bfloat162 *)&ua.x);
	const float2 a1 = __bfloat1622float2(*(const __nv_bfloat162 *)&ua.y);
	const float2 b0 = __bfloat1622float2(*(const __nv_bfloat162 *)&ub.x);
	const float2 b1 = __bfloat1622float2(*(const __nv_bfloat162 *)&ub.y);
	uint4 v;
	v.x = u32of(__floats2half2_rn(a0.x * up, a1.x * up));
	v.y = u32of(__floats2half2_rn(b0.x * up, b1.x * up));
	v.z = u32of(__floats2half2_rn(a0.y * up, a1.y * up));
	v.w = u32of(__floats2half2_rn(b0.y * up, b1.y * up));
	xs[8 * g + (i ^ (g & 7))] = v;
	float sa = (a0.x + a0.y) + (a1.x + a1.y), sb = (b0.x + b0.y) + (b1.x + b1.y);
#pragma unroll
	for (int o = 1; o < 8; o <<= 1) {
		sa += __shfl_xor_sync(0xffffffffu, sa, o);
		sb += __shfl_xor_sync(0xffffffffu, sb, o);
	}
	if (i == 0) {
		gs[2 * g] = sa;
		gs[2 * g + 1] = sb;
	}
}

/* q4kh_stage in one pass (FI_HALF_STAGE, on unless 0): a thread's first GH_STAGE_V pieces
 * loaded together and kept for the max, the conversion and the sub-block sums, where
 * q4kh_stage reads x three times a piece at a time. The same xs; gs summed in a tree instead of in order (so within
 * rounding of it, and deterministic). */
static __device__ __forceinline__ int q4kh_stage_1(const bf16 *__restrict__ x, int K, uint4 *xs,
						   float *gs, float *sh)
{
	const int nt = K / 8;
	uint2 a[GH_STAGE_V], b[GH_STAGE_V];
	float m = 0.f;
#pragma unroll
	for (int j = 0; j < GH_STAGE_V; j++) {
		const int t = threadIdx.x + j * blockDim.x, g = t >> 3, i = t & 7;
		a[j] = t < nt ? __ldg((const uint2 *)(x + 64 * g + 4 * i)) : make_uint2(0, 0);
		b[j] = t < nt ? __ldg((const uint2 *)(x + 64 * g + 32 + 4 * i)) : make_uint2(0, 0);
	}
#pragma unroll
	for (int j = 0; j < GH_STAGE_V; j++) {
		const uint4 u = make_uint4(a[j].x, a[j].y, b[j].x, b[j].y);
		m = aq_absmax8((const bf16 *)&u, m);
	}
	for (int t = threadIdx.x + GH_STAGE_V * blockDim.x; t < nt; t += blockDim.x) {
		const int g = t >> 3, i = t & 7;
		const uint2 ua = __ldg((const uint2 *)(x + 64 * g + 4 * i)),
			    ub = __ldg((const uint2 *)(x + 64 * g + 32 + 4 * i));
		const uint4 u = make_uint4(ua.x, ua.y, ub.x, ub.y);
		m = aq_absmax8((const bf16 *)&u, m);
	}
	const int e = gh_exp(block_max(m, sh), 6);
	const float up = ldexpf(1.f, e);
#pragma unroll
	for (int j = 0; j < GH_STAGE_V; j++) {
		const int t = threadIdx.x + j * blockDim.x;
		if (t < nt)
			q4kh_piece(a[j], b[j], up, t, xs, gs);
	}
	for (int t = threadIdx.x + GH_STAGE_V * blockDim.x; t < nt; t += blockDim.x) {
		const int g = t >> 3, i = t & 7;
		q4kh_piece(__ldg((const uint2 *)(x + 64 * g + 4 * i)),
			   __ldg((const uint2 *)(x + 64 * g + 32 + 4 * i)), up, t, xs, gs);
	}
	__syncthreads();
	return e;
}

/* One word's 8 products with x part xv, into the half2 partials of sub-blocks A and B. */
static __device__ __forceinline__ void q4kh_word(uint32_t wv, const uint4 &xv, __half2 &pa,
						 __half2 &pb)
{
	const __half2 k1024 = __float2half2_rn(1024.f), r16 = __float2half2_rn(0.0625f),
		      m64 = __float2half2_rn(-64.f);
	const uint32_t hi = wv >> 8;
	const __half2 *xh = (const __half2 *)&xv;
	pa = __hfma2(__hsub2(h2bits((wv & 0x000F000Fu) | 0x64006400u), k1024), xh[0], pa);
	pb = __hfma2(__hfma2(h2bits((wv & 0x00F000F0u) | 0x64006400u), r16, m64), xh[1], pb);
	pa = __hfma2(__hsub2(h2bits((hi & 0x000F000Fu) | 0x64006400u), k1024), xh[2], pa);
	pb = __hfma2(__hfma2(h2bits((hi & 0x00F000F0u) | 0x64006400u), r16, m64), xh[3], pb);
}

/* Byte k of a block head's 12 scale bytes (head bytes 4 .. 15), from registers. */
static __device__ __forceinline__ uint32_t q4kh_byte(const uint4 &h, int k)
{
	const uint32_t v = k < 4 ? h.y : k < 8 ? h.z : h.w;
	return (v >> (8 * (k & 3))) & 0xFFu;
}

/* ggml's get_scale_min_k4 over the head in registers (qchunk.cuh's scale_min_k4 reads bytes:
 * a head indexed as bytes would live in local memory). */
static __device__ __forceinline__ void q4kh_scale_min(const uint4 &h, int j, int &d, int &m)
{
	if (j < 4) {
		d = (int)(q4kh_byte(h, j) & 63);
		m = (int)(q4kh_byte(h, j + 4) & 63);
	} else {
		d = (int)((q4kh_byte(h, j + 4) & 0xF) | ((q4kh_byte(h, j - 4) >> 6) << 4));
		m = (int)((q4kh_byte(h, j + 4) >> 4) | ((q4kh_byte(h, j) >> 6) << 4));
	}
}

static __device__ __forceinline__ float h2sum(__half2 a)
{
	const float2 f = __half22float2(a);
	return f.x + f.y;
}

template <int S, bool F32OUT>
__global__ void __launch_bounds__(GH_WARPS * 32, GH_MINB)
gemv_q4kh_kernel(const gh_parts P, const bf16 *__restrict__ x)
{
	extern __shared__ uint4 xs[]; /* [K / 64][8] half x, then the sub-block sums */
	__shared__ float sh[32];
	__shared__ float part[2][GH_WARPS][GH_R];
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
	const int K = (int)P.w[0].cols, ng = K / 64, g0 = lane + 32 * (wp % S);
	const int items = P.blk0[P.n];
	float *gs = (float *)(xs + K / 8);
	const int e = P.stage1 ? q4kh_stage_1(x, K, xs, gs, sh) : q4kh_stage(x, K, xs, gs, sh);
	const float down = ldexpf(1.f, -e);

	for (int it = blockIdx.x, k = 0; it < items; it += gridDim.x, k++) {
		int p;
		int64_t n0;
		gh_at(P, S, it, p, n0);
		const fi_cu_qw &w = P.w[p];
		const uint8_t *rq[GH_R];
#pragma unroll
		for (int r = 0; r < GH_R; r++) /* rows past the end read the last one, unwritten */
			rq[r] = w.q + min(n0 + r, w.rows - 1) * w.row_bytes;
		float acc[GH_R];
#pragma unroll
		for (int r = 0; r < GH_R; r++)
			acc[r] = 0.f;
		for (int g = g0; g < ng; g += 32 * S) {
			const int j = g & 3; /* the group in its block: sub-blocks 2j, 2j + 1 */
			uint4 hd[GH_R], qa[GH_R], qb[GH_R];
#pragma unroll
			for (int r = 0; r < GH_R; r++) {
				const uint8_t *blk = rq[r] + (int64_t)(g >> 2) * 144;
				hd[r] = ld16(blk);
				qa[r] = ld16(blk + 16 + 32 * j);
				qb[r] = ld16(blk + 32 + 32 * j);
			}
			/* the head's scales first, so that it need not stay: ka, kb the sub-blocks'
			 * d sc 2^-e; the mins' term into acc at once */
			float ka[GH_R], kb[GH_R];
			const float sa = gs[2 * g], sb = gs[2 * g + 1];
#pragma unroll
			for (int r = 0; r < GH_R; r++) {
				const float2 dd = __half22float2(h2bits(hd[r].x)); /* d, dmin */
				int sca, mna, scb, mnb;
				q4kh_scale_min(hd[r], 2 * j, sca, mna);
				q4kh_scale_min(hd[r], 2 * j + 1, scb, mnb);
				ka[r] = dd.x * (float)sca * down;
				kb[r] = dd.x * (float)scb * down;
				acc[r] -= dd.y * ((float)mna * sa + (float)mnb * sb);
			}
			/* two half chains a sub-block (words 0-3, 4-7): eight products a half each,
			 * so that an outlier's partial rounds at most seven terms after it */
#pragma unroll
			for (int h = 0; h < 2; h++) {
				__half2 pa[GH_R], pb[GH_R];
#pragma unroll
				for (int r = 0; r < GH_R; r++)
					pa[r] = pb[r] = __float2half2_rn(0.f);
#pragma unroll
				for (int i = 4 * h; i < 4 * h + 4; i++) {
					const uint4 xv = xs[8 * g + (i ^ (g & 7))];
#pragma unroll
					for (int r = 0; r < GH_R; r++) {
						const uint4 &q = h ? qb[r] : qa[r];
						const uint32_t wv = (i & 3) == 0 ? q.x : (i & 3) == 1 ? q.y
								  : (i & 3) == 2 ? q.z : q.w;
						q4kh_word(wv, xv, pa[r], pb[r]);
					}
				}
#pragma unroll
				for (int r = 0; r < GH_R; r++)
					acc[r] += ka[r] * h2sum(pa[r]) + kb[r] * h2sum(pb[r]);
			}
		}
		if (gh_total(acc, part[k & 1], S))
			gh_finish<F32OUT>(P, p, n0, acc, 1.f, NULL);
	}
}

template <int S, bool F32OUT>
static int launch_s(cudaStream_t st, gh_parts &P, const void *x, int opts)
{
	GH_READY((gemv_q4kh_kernel<S, F32OUT>));
	if (!gh_grid(P, S))
		return 0;
	const size_t shm = (size_t)P.w[0].cols * 2 + (size_t)P.w[0].cols / 32 * 4;
	gh_launch(gemv_q4kh_kernel<S, F32OUT>, P, opts, shm, st, P, (const bf16 *)x);
	return 1;
}

template <bool F32OUT>
static int launch_f(cudaStream_t st, gh_parts &P, const void *x, int S, int opts)
{
	switch (S) {
	case 1: return launch_s<1, F32OUT>(st, P, x, opts);
	case 2: return launch_s<2, F32OUT>(st, P, x, opts);
	case 4: return launch_s<4, F32OUT>(st, P, x, opts);
	default: return launch_s<8, F32OUT>(st, P, x, opts);
	}
}

extern "C" fi_err fi_cu_gemv_q4kh_parts(cudaStream_t st, int n, void *const *out, int out_f32,
					const struct fi_cu_qw *w, const void *x,
					const void *const *bias, int opts)
{
	gh_parts P;
	if (n < 1 || n > 4 || (out_f32 && n > 1) || !fi_aligned16(x))
		return FI_EUNSUPPORTED;
	for (int i = 0; i < n; i++) {
		if (w[i].type != FI_CQ_Q4K || w[i].cols != w[0].cols || w[i].cols % 256 ||
		    w[i].cols * 2 + w[i].cols / 8 > GH_MAX_SHARED || w[i].rows < 1 ||
		    ((uintptr_t)w[i].q & 15) || w[i].row_bytes % 16)
			return FI_EUNSUPPORTED;
	}
	const int64_t rows = gh_fill(P, n, out, w, bias, opts);
	/* a lane's round is a 64-column group: slices as for chunks of twice the width */
	const int S = gh_slices(rows, (int)(w[0].cols / 64), (opts & FI_CU_HALF_BALANCE) != 0);
	if (!(out_f32 ? launch_f<true>(st, P, x, S, opts) : launch_f<false>(st, P, x, S, opts)))
		return FI_EUNSUPPORTED;
	LAUNCH_CHECK();
	return FI_OK;
}
