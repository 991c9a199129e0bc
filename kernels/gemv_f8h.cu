/* gemv_f8h: the FP8 decode product at one token, out[N] = x[K] W^T (+ bias), for e4m3 weights
 * with a scale per row (FI_Q8_ROW) or per 128 x 128 block (FI_Q8_B128), the input either bf16
 * (weight-only) or e4m3 codes with one scale for the token (W8A8, FI_AQ_TOKEN: the codes of
 * kernels/act_quant.cu, or made here from bf16 x with its arithmetic, so that a one-token W8A8
 * product needs no quantizer launch before it), in half2 arithmetic.
 *
 * Why: gemv_q's W8A8 path converts both the weight and the input code of every product with a
 * scalar e4m3 -> f32 conversion, two a value on the conversion pipe (16 a clock an SM), and a
 * warp streams one row: ~1.6 TB/s measured (8B FP8, 202 tok/s on the H100). Here the weight
 * bytes go through the paired conversion (e4m3x2 -> f16x2, one instruction for two values),
 * x is converted once a block into shared memory, and the products and sums are HFMA2:
 *
 *   word k of a chunk (bytes 4k .. 4k+3):  a = cvt(w & 0xffff) . x[4k, 4k+1] + a
 *                                          a = cvt(w >> 16)    . x[4k+2, 4k+3] + a
 *
 * a half2 partial over two words (four products a half), then into f32.
 *
 * Range: e4m3 is at most 448. W8A8: x's codes are staged times 2^-8 (exact: e4m3's smallest
 * step 2^-9 becomes 2^-17, a half subnormal), so a product is at most 448 x 1.75 = 784 and
 * exact (4 significant bits times 4), a partial at most 3,136. Weight-only: x times 2^e with
 * max|x| 2^e < 8 (kernels/gemv_half.cuh), a product under 3,584, a partial under 14,336; half's
 * limit is 65,504. The f32 result takes back 2^8 (or 2^-e), the token's scale and the row's
 * or block's weight scale. Rounding: three half additions per four products, against gemv_q's
 * f32 sums; test_quant_kernels holds both to the bf16 matmul's tolerance.
 *
 * Layout as gemv_q4h: a warp takes GH_R rows over 1/S of the 32-column chunks (32 bytes a row:
 * two 16-byte loads), the next chunk's loads in flight while the current one is multiplied,
 * and a block takes its items in turn, the next item's first loads in flight during the last
 * one's sums. */
#include <cuda_fp8.h>

#include "act_quant.cuh"
#include "gemv_half.cuh"
#include "qchunk.cuh"

enum { F8H_BF16, F8H_CODES, F8H_ROUND }; /* the input: bf16, e4m3 codes, or bf16 to round */

static __device__ __forceinline__ __half2 f8x2(uint32_t v16)
{
	__half2_raw r = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)v16, __NV_E4M3);
	return *(__half2 *)&r;
}

/* The e4m3 codes xq[K] into xs as half times 2^-8, in column order; ends with a barrier. */
static __device__ __forceinline__ void f8h_stage_codes(const uint8_t *__restrict__ xq, int K,
						       uint4 *xs)
{
	const __half2 k = __float2half2_rn(1.f / 256);
	for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
		const uint2 b = *(const uint2 *)(xq + 8 * i);
		uint4 v;
		v.x = u32of(__hmul2(f8x2(b.x & 0xFFFF), k));
		v.y = u32of(__hmul2(f8x2(b.x >> 16), k));
		v.z = u32of(__hmul2(f8x2(b.y & 0xFFFF), k));
		v.w = u32of(__hmul2(f8x2(b.y >> 16), k));
		xs[gh_part(i >> 2, i & 3)] = v;
	}
	__syncthreads();
}

/* x[K] (bf16) rounded to e4m3 codes as kernels/act_quant.cu does for a token (act_quant.cuh's
 * aq_scale and aq_code: the same codes), staged as half times 2^-8 in column order; returns
 * s. Ends with a barrier. */
static __device__ __forceinline__ float f8h_stage_quant(const bf16 *__restrict__ x, int K,
							uint4 *xs, float *sh)
{
	const float m = gh_absmax(x, K, sh);
	const float s = aq_scale(m);
	const __half2 k = __float2half2_rn(1.f / 256);
	for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
		float f[8];
		bf16x8_to_f32(((const bf16x8 *)x)[i], f);
		uint32_t b[4];
#pragma unroll
		for (int j = 0; j < 4; j++) {
			b[j] = (uint32_t)aq_code(f[2 * j], s) | (uint32_t)aq_code(f[2 * j + 1], s) << 8;
		}
		uint4 v;
		v.x = u32of(__hmul2(f8x2(b[0]), k));
		v.y = u32of(__hmul2(f8x2(b[1]), k));
		v.z = u32of(__hmul2(f8x2(b[2]), k));
		v.w = u32of(__hmul2(f8x2(b[3]), k));
		xs[gh_part(i >> 2, i & 3)] = v;
	}
	__syncthreads();
	return s;
}

/* Chunk c's products of one row (two 16-byte loads u) with x parts xp, in f32. */
static __device__ __forceinline__ float f8h_chunk(const uint4 (&u)[2], const uint4 (&xp)[4])
{
	const uint32_t wv[8] = {u[0].x, u[0].y, u[0].z, u[0].w, u[1].x, u[1].y, u[1].z, u[1].w};
	float d = 0.f;
#pragma unroll
	for (int j = 0; j < 4; j++) { /* x part j: columns 8j .. 8j+7, words 2j and 2j + 1 */
		const __half2 *xh = (const __half2 *)&xp[j];
		__half2 a = __hmul2(f8x2(wv[2 * j] & 0xFFFF), xh[0]);
		a = __hfma2(f8x2(wv[2 * j] >> 16), xh[1], a);
		a = __hfma2(f8x2(wv[2 * j + 1] & 0xFFFF), xh[2], a);
		a = __hfma2(f8x2(wv[2 * j + 1] >> 16), xh[3], a);
		const float2 f = __half22float2(a);
		d += f.x + f.y;
	}
	return d;
}

/* Item n0's rows of w, and (B128) the scales of each row's 128-row block; rows past the end
 * read the last one, unwritten. */
static __device__ __forceinline__ void f8h_rows_of(const fi_cu_qw &w, int64_t n0, int nb,
						   const uint8_t *(&rq)[GH_R],
						   const float *(&rs)[GH_R])
{
#pragma unroll
	for (int r = 0; r < GH_R; r++) {
		const int64_t n = min(n0 + r, w.rows - 1);
		rq[r] = w.q + n * w.row_bytes;
		rs[r] = (const float *)w.scale + (n / 128) * nb;
	}
}

static __device__ __forceinline__ void f8h_load(const uint8_t *const (&rq)[GH_R], int c,
						uint4 (&u)[GH_R][2])
{
#pragma unroll
	for (int r = 0; r < GH_R; r++) {
		u[r][0] = ld16(rq[r] + (int64_t)c * 32);
		u[r][1] = ld16(rq[r] + (int64_t)c * 32 + 16);
	}
}

template <int MODE, bool B128, bool F32OUT>
__global__ void __launch_bounds__(GH_WARPS * 32, GH_MINB)
gemv_f8h_kernel(const gh_parts P, int S, const bf16 *__restrict__ x,
		const uint8_t *__restrict__ xq, const float *__restrict__ xsc)
{
	extern __shared__ uint4 xs[]; /* [K / 32][4]: x as half (kernels/gemv_half.cuh) */
	__shared__ float sh[32];
	__shared__ float part[2][GH_WARPS][GH_R];
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
	const int K = (int)P.w[0].cols, nc = K / 32, nb = (K + 127) / 128;
	const int c0 = lane + 32 * (wp % S);
	int it = blockIdx.x, p;
	int64_t n0;
	gh_at(P, S, it, p, n0);
	const uint8_t *rq[GH_R];
	const float *rs[GH_R]; /* B128: the scales of the row's 128-row block */
	uint4 cur[GH_R][2], nxt[GH_R][2];
	f8h_rows_of(P.w[p], n0, nb, rq, rs);
	if (c0 < nc)
		f8h_load(rq, c0, cur);
	int e = 8; /* W8A8: the codes were staged times 2^-8 */
	float ts = 1.f; /* the token's scale */
	if (MODE == F8H_CODES)
		f8h_stage_codes(xq, K, xs);
	else if (MODE == F8H_ROUND)
		ts = f8h_stage_quant(x, K, xs, sh);
	else
		e = -gh_stage_bf16<false, 3>(x, K, xs, sh); /* max|x| 2^-e < 8 */
	const float k8 = ldexpf(1.f, e) * (MODE == F8H_CODES ? xsc[0] : ts);

	for (int k = 0;; k++) {
		float acc[GH_R];
#pragma unroll
		for (int r = 0; r < GH_R; r++)
			acc[r] = 0.f;
		for (int c = c0; c < nc; c += 32 * S) {
			const int cn = c + 32 * S;
			if (cn < nc)
				f8h_load(rq, cn, nxt);
			uint4 xp[4];
#pragma unroll
			for (int j = 0; j < 4; j++)
				xp[j] = xs[gh_part(c, j)];
#pragma unroll
			for (int r = 0; r < GH_R; r++) {
				const float d = f8h_chunk(cur[r], xp);
				acc[r] = B128 ? fmaf(d, rs[r][c >> 2], acc[r]) : acc[r] + d;
			}
#pragma unroll
			for (int r = 0; r < GH_R; r++)
				cur[r][0] = nxt[r][0], cur[r][1] = nxt[r][1];
		}
		const int pd = p;
		const int64_t nd = n0;
		const bool more = gh_next(P, S, it, p, n0);
		if (more) { /* the next item's first loads, in flight during these sums */
			f8h_rows_of(P.w[p], n0, nb, rq, rs);
			if (c0 < nc)
				f8h_load(rq, c0, cur);
		}
		if (gh_total(acc, part[k & 1], S))
			gh_finish<F32OUT>(P, pd, nd, acc, k8,
					  B128 ? NULL : (const float *)P.w[pd].scale);
		if (!more)
			break;
	}
}

template <int MODE, bool B128, bool F32OUT>
static int launch(cudaStream_t st, gh_parts &P, int64_t rows, const void *x, const void *xq,
		  const float *xsc, int opts)
{
	GH_READY((gemv_f8h_kernel<MODE, B128, F32OUT>));
	const int S = gh_slices(rows, (int)(P.w[0].cols / 32), (opts & FI_CU_HALF_BALANCE) != 0);
	if (!gh_grid(P, S))
		return 0;
	gh_launch(gemv_f8h_kernel<MODE, B128, F32OUT>, P, opts, (size_t)P.w[0].cols * 2, st, P, S,
		  (const bf16 *)x, (const uint8_t *)xq, xsc);
	return 1;
}

template <int MODE, bool B128>
static int launch_o(cudaStream_t st, gh_parts &P, int64_t rows, int f32, const void *x,
		    const void *xq, const float *xsc, int opts)
{
	return f32 ? launch<MODE, B128, true>(st, P, rows, x, xq, xsc, opts)
		   : launch<MODE, B128, false>(st, P, rows, x, xq, xsc, opts);
}

template <int MODE>
static int launch_m(cudaStream_t st, gh_parts &P, int64_t rows, int f32, const void *x,
		    const void *xq, const float *xsc, int opts)
{
	return P.w[0].kind == FI_Q8_B128
		       ? launch_o<MODE, true>(st, P, rows, f32, x, xq, xsc, opts)
		       : launch_o<MODE, false>(st, P, rows, f32, x, xq, xsc, opts);
}

extern "C" fi_err fi_cu_gemv_f8h_parts(cudaStream_t st, int n, void *const *out, int out_f32,
				       const struct fi_cu_qw *w, const void *x, const void *xq,
				       const float *xs, int aq, const void *const *bias, int opts)
{
	gh_parts P;
	if (n < 1 || n > 4 || (out_f32 && n > 1) || (aq && aq != FI_AQ_TOKEN) ||
	    (aq && xq ? !xs || ((uintptr_t)xq & 7) : !fi_aligned16(x)))
		return FI_EUNSUPPORTED;
	for (int i = 0; i < n; i++) {
		if (w[i].type != FI_CQ_FP8 || (w[i].kind != FI_Q8_ROW && w[i].kind != FI_Q8_B128) ||
		    w[i].kind != w[0].kind || w[i].cols != w[0].cols || w[i].cols % 32 ||
		    w[i].cols * 2 > GH_MAX_SHARED || w[i].rows < 1)
			return FI_EUNSUPPORTED;
	}
	const int64_t rows = gh_fill(P, n, out, w, bias, opts);
	int ok;
	if (!aq)
		ok = launch_m<F8H_BF16>(st, P, rows, out_f32, x, xq, xs, opts);
	else if (xq)
		ok = launch_m<F8H_CODES>(st, P, rows, out_f32, x, xq, xs, opts);
	else
		ok = launch_m<F8H_ROUND>(st, P, rows, out_f32, x, xq, xs, opts);
	if (!ok)
		return FI_EUNSUPPORTED;
	LAUNCH_CHECK();
	return FI_OK;
}
