/* gemv_q4h: the INT4 decode product at one token, out[N] = x[K] W^T (+ bias), with the 4-bit
 * values made into halves by bit operations and multiplied in half2 arithmetic.
 *
 * Why: gemv_q1 (kernels/gemv_q.cu) turns every 4-bit value into a float through an I2F, which
 * the conversion unit does 16 a clock an SM, plus four more instructions; an H100 SM must
 * take ~29 INT4 values a clock to stream at 3.35 TB/s. Here a nibble pair costs about four
 * instructions, all on the FMA and logic pipes:
 *
 *   h = (w & 0x000F000F) | 0x64006400    half2 (1024 + q0, 1024 + q4), exact
 *   h = (w & 0x00F000F0) | 0x64006400    half2 (1024 + 16 q1, 1024 + 16 q5), exact
 *   d = h - (1024 + z)  or  h/16 - (64 + z)   half2 (q - z), exact (one HSUB2 or HFMA2)
 *   a = d * x + a                        HFMA2, the lane's partial of a 32-bit word
 *
 * and (w >> 8) gives q2, q6 and q3, q7 the same way. A word's partial goes to f32 at once
 * (two halves), times the group scale into the row's f32 sum.
 *
 * Range: x is staged in shared memory as half, times 2^e so that max|x| < 64 (exact: a power
 * of two; bf16's 8 bits fit half's 11 above 2^-14); a word's four products are each at most
 * 15 x 64 in magnitude, so its half partial stays under 4,000 (half's limit is 65,504), and
 * the row's sum is taken back by 2^-e in f32. Rounding: a product and three additions in half
 * (2^-11 of the word's partial) per 8 values, against the f32 of gemv_q1; test_quant_kernels
 * holds both to the bf16 matmul's tolerance, with an outlier of 1,500 in x for INT4.
 *
 * Layout (lib/backend/cuda/qweight.c): row n is K/2 bytes, byte b holding columns 2b (low
 * nibble) and 2b + 1; f16 scales and u8 zero points per row and group of `group` columns.
 * A chunk is 32 columns (16 bytes, one group's). Shared x: chunk c as 4 x 16 bytes, part j
 * the half2 pairs (8j, 8j+4), (8j+1, 8j+5), (8j+2, 8j+6), (8j+3, 8j+7) that word j of the
 * chunk's weights meets, stored at part j ^ ((c >> 1) & 3) so that the 8 lanes of a
 * 128-byte phase read 8 different bank groups.
 *
 * A warp takes GH_R rows (each x part read from shared memory once for all of them), over
 * 1/S of the chunks; the S slices of a row meet in shared memory. The next chunk's weights,
 * scales and zero points are loaded before the current one is multiplied, the first ones
 * before x is staged, and a block takes its items in turn (gemv_half.cuh), the next item's
 * first loads in flight during the last one's sums. */
#include "gemv_half.cuh"
#include "qchunk.cuh"

struct q4h_ld { /* one chunk of the warp's rows: codes, scales, zero points */
	uint4 q[GH_R];
	__half s[GH_R];
	uint32_t z[GH_R];
};

/* The warp's rows: codes at q[r], scales and zero points of the row's groups at s[r], z[r]. */
struct q4h_rows {
	const uint8_t *q[GH_R];
	const __half *s[GH_R];
	const uint8_t *z[GH_R];
};

static __device__ __forceinline__ void q4h_load(const q4h_rows &rw, int c, int lg, q4h_ld &l)
{
	const int g = c >> lg;
#pragma unroll
	for (int r = 0; r < GH_R; r++) {
		l.q[r] = ld16(rw.q[r] + (int64_t)c * 16);
		l.s[r] = rw.s[r][g];
		l.z[r] = rw.z[r][g];
	}
}

/* Word j's 8 values of one row against x part xp: the f32 sum of (q - z) x. */
static __device__ __forceinline__ float q4h_word(uint32_t wv, const uint4 &xp, __half2 z1,
						 __half2 nz2)
{
	const __half2 *xh = (const __half2 *)&xp;
	__half2 d[4];
	gh_q4_deq(wv, z1, nz2, d);
	__half2 a = __hmul2(d[0], xh[0]);
	a = __hfma2(d[1], xh[1], a);
	a = __hfma2(d[2], xh[2], a);
	a = __hfma2(d[3], xh[3], a);
	const float2 f = __half22float2(a);
	return f.x + f.y;
}

/* Item n0's rows of w (rows past the end read the last row; their sums are not written). */
static __device__ __forceinline__ void q4h_rows_of(const fi_cu_qw &w, int64_t n0, q4h_rows &rw)
{
	const int64_t gpr = w.cols / w.group;
#pragma unroll
	for (int r = 0; r < GH_R; r++) {
		const int64_t n = min(n0 + r, w.rows - 1);
		rw.q[r] = w.q + n * w.row_bytes;
		rw.s[r] = (const __half *)w.scale + n * gpr;
		rw.z[r] = w.zero + n * gpr;
	}
}

template <int S, bool F32OUT>
__global__ void __launch_bounds__(GH_WARPS * 32, GH_MINB)
gemv_q4h_kernel(const gh_parts P, int lg, const bf16 *__restrict__ x)
{
	extern __shared__ uint4 xs[]; /* [K / 32][4]: x as half2 pairs, see the head comment */
	__shared__ float sh[32];
	__shared__ float part[2][GH_WARPS][GH_R];
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
	const int K = (int)P.w[0].cols, nc = K / 32, c0 = lane + 32 * (wp % S);
	int it = blockIdx.x, p;
	int64_t n0;
	gh_at(P, S, it, p, n0);
	q4h_rows rw;
	q4h_ld cur, nxt;
	q4h_rows_of(P.w[p], n0, rw);
	if (c0 < nc)
		q4h_load(rw, c0, lg, cur);

	const int e = P.stage1 ? gh_stage_bf16_1<true, 6>(x, K, xs, sh) /* max|x| 2^e < 64 */
			       : gh_stage_bf16<true, 6>(x, K, xs, sh);

	for (int k = 0;; k++) {
		float acc[GH_R];
#pragma unroll
		for (int r = 0; r < GH_R; r++)
			acc[r] = 0.f;
		for (int c = c0; c < nc; c += 32 * S) {
			const int cn = c + 32 * S;
			if (cn < nc)
				q4h_load(rw, cn, lg, nxt);
			uint4 xp[4];
#pragma unroll
			for (int j = 0; j < 4; j++)
				xp[j] = xs[gh_part(c, j)];
#pragma unroll
			for (int r = 0; r < GH_R; r++) {
				__half2 z1, nz2;
				gh_q4_zero(cur.z[r], z1, nz2);
				const uint32_t wv[4] = {cur.q[r].x, cur.q[r].y, cur.q[r].z, cur.q[r].w};
				float d = 0.f;
#pragma unroll
				for (int j = 0; j < 4; j++)
					d += q4h_word(wv[j], xp[j], z1, nz2);
				acc[r] = fmaf(d, __half2float(cur.s[r]), acc[r]);
			}
			cur = nxt;
		}
		const int pd = p;
		const int64_t nd = n0;
		const bool more = gh_next(P, S, it, p, n0);
		if (more) { /* the next item's first loads, in flight during these sums */
			q4h_rows_of(P.w[p], n0, rw);
			if (c0 < nc)
				q4h_load(rw, c0, lg, cur);
		}
		if (gh_total(acc, part[k & 1], S))
			gh_finish<F32OUT>(P, pd, nd, acc, ldexpf(1.f, -e), NULL);
		if (!more)
			break;
	}
}

struct q4h_k { /* gh_int4's description of this kernel */
	enum { rows = GH_R };
	template <int S, bool F32OUT>
	static gh_int4_kern kern(void)
	{
		return gemv_q4h_kernel<S, F32OUT>;
	}
};

extern "C" fi_err fi_cu_gemv_q4h_parts(cudaStream_t st, int n, void *const *out, int out_f32,
				       const struct fi_cu_qw *w, const void *x,
				       const void *const *bias, int opts)
{
	gh_parts P;
	int lg; /* chunks a group, 2^lg */
	if (!gh_int4_takes(n, out_f32, w, x, 32, 0, lg))
		return FI_EUNSUPPORTED;
	const int64_t rows = gh_fill(P, n, out, w, bias, opts);
	const int S = gh_slices(rows, (int)(w[0].cols / 32), (opts & FI_CU_HALF_BALANCE) != 0);
	return gh_int4<q4h_k>(st, P, lg, x, S, out_f32, opts);
}
