/* gemv_q4m: the INT4 decode product at one token, out[N] = x[K] W^T (+ bias), with the sums
 * on the tensor cores: mma.sync m16n8k16 (f16 in, f32 accumulate) over 16 rows at a time,
 * the token's x in every column of B (the 8 columns then hold the same sums; one is read).
 *
 * Why: gemv_q4h (kernels/gemv_q4h.cu) multiplies in half2 on the FMA pipe and turns each
 * word's partial into f32: ~290 instructions a warp for 1 KB of weights, and ncu on the 8B's
 * gate/up (H200) has it issue-bound (0.68 of a scheduler's issue slots, DRAM at 44%). Here a
 * 32-bit word of 8 values costs 4 LOP3, a shift and 4 HSUB2/HFMA2 (the exact (q - z) as half,
 * gh_q4_deq, as gemv_q4h) and half of two mma: ~95 instructions a warp for the same 1 KB.
 *
 * The k order inside an mma is free as long as A and B agree: lane (g, t) = (lane / 4,
 * lane % 4) gives A rows g and g + 8 from its own 16-byte chunk c = 4 i + t of each row, and
 * B the x of the same columns, which gh_stage_bf16<true> stores as the pairs (0,4), (1,5),
 * (2,6), (3,7) a word's nibbles give. A quad (t = 0..3) covers 128 columns, one group when
 * groups are multiples of 128 (AWQ and GPTQ: 128), so each group's 8 mma start from zero and
 * their sums are scaled in f32 once: acc += C x s. Zero points are exact in half (1024 + z).
 * x is staged as half times 2^e with max|x| 2^e < 2^15 (f32 accumulation: no half partials
 * to keep from overflowing, so x keeps all of half's precision), the result taken back by
 * 2^-e.
 *
 * A warp takes 16 rows over 1/S of the K quads; the S slices of the rows meet in shared
 * memory. Blocks stay (GH_MINB an SM) and take their items in turn, as gemv_half.cuh's. */
#include "gemv_half.cuh"
#include "qchunk.cuh"

#define Q4M_ROWS 16 /* rows a warp */

/* C += A B for one k16 step: A f16 rows g, g + 8 (a[0..3] as the PTX fragment), B f16. */
static __device__ __forceinline__ void q4m_mma(float (&c)[4], uint32_t a0, uint32_t a1,
					       uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

struct q4m_ld { /* one quad step of the lane's two rows: codes, scales, zero points */
	uint4 qa, qb;
	__half sa, sb;
	uint32_t za, zb;
};

/* Where a warp's two rows of an item start: codes, scales, zero points. */
struct q4m_rows {
	const uint8_t *ra, *rb;
	const __half *sa, *sb;
	const uint8_t *za, *zb;
};

/* Item it's part p, first row n0 of warp wp, and lane row g's (and g + 8's) pointers (rows
 * past the end read the last one, unwritten). */
template <int S>
static __device__ __forceinline__ q4m_rows q4m_at(const gh_parts &P, int it, int wp, int g,
						  int lg, int &p, int64_t &n0)
{
	p = gh_part_of(P, it);
	const fi_cu_qw &w = P.w[p];
	n0 = ((int64_t)it - P.blk0[p]) * (GH_WARPS / S * Q4M_ROWS) + (int64_t)(wp / S) * Q4M_ROWS;
	const int64_t gpr = w.cols >> (5 + lg), na = min(n0 + g, w.rows - 1),
		      nb = min(n0 + g + 8, w.rows - 1);
	return q4m_rows{w.q + na * w.row_bytes,
			w.q + nb * w.row_bytes,
			(const __half *)w.scale + na * gpr,
			(const __half *)w.scale + nb * gpr,
			w.zero + na * gpr,
			w.zero + nb * gpr};
}

static __device__ __forceinline__ void q4m_load(const q4m_rows &r, int c, int g, q4m_ld &l)
{
	l.qa = ld16(r.ra + (int64_t)c * 16);
	l.qb = ld16(r.rb + (int64_t)c * 16);
	l.sa = r.sa[g];
	l.sb = r.sb[g];
	l.za = r.za[g];
	l.zb = r.zb[g];
}

template <int S, bool F32OUT>
__global__ void __launch_bounds__(GH_WARPS * 32, GH_MINB)
gemv_q4m_kernel(const gh_parts P, int lg, const bf16 *__restrict__ x)
{
	extern __shared__ uint4 xs[]; /* [K / 32][4]: x as half2 pairs (gemv_half.cuh) */
	__shared__ float sh[32];
	__shared__ float rs[2][GH_WARPS][Q4M_ROWS];
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	const int K = (int)P.w[0].cols, nq = K / 128, sl = wp % S;
	const int items = P.blk0[P.n];
	int it = blockIdx.x, p;
	int64_t n0;
	if (it >= items)
		return;
	/* P.ahead (FI_HALF_AHEAD): an item's first quad is loaded before what precedes it (x's
	 * staging, the last item's sums), as gemv_q4h does, instead of waiting a DRAM latency at
	 * the item's start (ncu: 12-13% of the stall samples, a warp having only 4-14 quads of a
	 * row an item) */
	q4m_rows rw = q4m_at<S>(P, it, wp, g, lg, p, n0);
	q4m_ld cur, nxt;
	if (P.ahead && sl < nq)
		q4m_load(rw, 4 * sl + t, (4 * sl) >> lg, cur);
	const int e = P.stage1 ? gh_stage_bf16_1<true, 15>(x, K, xs, sh) /* max|x| 2^e < 2^15 */
			       : gh_stage_bf16<true, 15>(x, K, xs, sh);

	for (int k = 0;; k++) {
		float acc_a = 0.f, acc_b = 0.f;
		if (!P.ahead && sl < nq)
			q4m_load(rw, 4 * sl + t, (4 * sl) >> lg, cur);
		for (int i = sl; i < nq; i += S) {
			const int c = 4 * i + t, in = i + S;
			if (in < nq)
				q4m_load(rw, 4 * in + t, (4 * in) >> lg, nxt);
			__half2 z1a, nza, z1b, nzb;
			gh_q4_zero(cur.za, z1a, nza);
			gh_q4_zero(cur.zb, z1b, nzb);
			const uint32_t wa[4] = {cur.qa.x, cur.qa.y, cur.qa.z, cur.qa.w};
			const uint32_t wb[4] = {cur.qb.x, cur.qb.y, cur.qb.z, cur.qb.w};
			float cc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
			for (int j = 0; j < 4; j++) {
				const uint4 xp = xs[gh_part(c, j)];
				__half2 da[4], db[4];
				gh_q4_deq(wa[j], z1a, nza, da);
				gh_q4_deq(wb[j], z1b, nzb, db);
				q4m_mma(cc, u32of(da[0]), u32of(db[0]), u32of(da[1]), u32of(db[1]), xp.x,
					xp.y);
				q4m_mma(cc, u32of(da[2]), u32of(db[2]), u32of(da[3]), u32of(db[3]), xp.z,
					xp.w);
			}
			/* cc[0]: row g, cc[2]: row g + 8, this group's sum (every column the same) */
			acc_a = fmaf(cc[0], __half2float(cur.sa), acc_a);
			acc_b = fmaf(cc[2], __half2float(cur.sb), acc_b);
			cur = nxt;
		}
		const int pd = p;
		const int64_t nd = n0;
		it += gridDim.x;
		const bool more = it < items;
		if (more) {
			rw = q4m_at<S>(P, it, wp, g, lg, p, n0);
			if (P.ahead && sl < nq) /* in flight during these sums */
				q4m_load(rw, 4 * sl + t, (4 * sl) >> lg, cur);
		}
		/* the S slices of the warp's rows meet in shared memory; items alternate between
		 * the two halves of rs, as gh_total's part (a warp writes item k + 2's sums only
		 * after the barrier of item k + 1, which every warp reaches after reading k's) */
		if (S > 1) {
			if (t == 0) {
				rs[k & 1][wp][g] = acc_a;
				rs[k & 1][wp][g + 8] = acc_b;
			}
			__syncthreads();
			if (sl == 0 && t == 0) {
#pragma unroll
				for (int s = 1; s < S; s++) {
					acc_a += rs[k & 1][wp + s][g];
					acc_b += rs[k & 1][wp + s][g + 8];
				}
			}
		}
		if (sl == 0 && t == 0) {
			const float down = ldexpf(1.f, -e);
			const int64_t rows[2] = {nd + g, nd + g + 8};
			const float v[2] = {acc_a, acc_b};
#pragma unroll
			for (int r = 0; r < 2; r++) {
				if (rows[r] >= P.w[pd].rows)
					continue;
				const float o = v[r] * down +
						(P.bias[pd] ? __bfloat162float(P.bias[pd][rows[r]]) : 0.f);
				if (F32OUT)
					((float *)P.out[pd])[rows[r]] = o;
				else
					((bf16 *)P.out[pd])[rows[r]] = __float2bfloat16(o);
			}
		}
		if (!more)
			break;
	}
}

/* K slices a row (gh_slices_r), each slice keeping at least two of the nq quads of 128
 * columns. With balance (FI_HALF_BALANCE) the 8B's gate and up (1,792 tiles of 16 rows; 396
 * blocks on an H100) take S = 8, 1,792 items in five rounds 90% busy, where doubling stops at
 * S = 2, 448 items. */
static int q4m_slices(int64_t rows, int nq, bool balance)
{
	int smax = 1;
	while (smax < 8 && nq >= 4 * smax)
		smax *= 2;
	return gh_slices_r(rows, Q4M_ROWS, smax, balance);
}

struct q4m_k { /* gh_int4's description of this kernel */
	enum { rows = Q4M_ROWS };
	template <int S, bool F32OUT>
	static gh_int4_kern kern(void)
	{
		return gemv_q4m_kernel<S, F32OUT>;
	}
};

extern "C" fi_err fi_cu_gemv_q4m_parts(cudaStream_t st, int n, void *const *out, int out_f32,
				       const struct fi_cu_qw *w, const void *x,
				       const void *const *bias, int opts)
{
	gh_parts P;
	int lg; /* chunks a group, 2^lg: at least 4 (a quad of lanes' 128 columns) */
	if (!gh_int4_takes(n, out_f32, w, x, 128, 2, lg))
		return FI_EUNSUPPORTED;
	const int64_t rows = gh_fill(P, n, out, w, bias, opts);
	return gh_int4<q4m_k>(st, P, lg, x, q4m_slices(rows, (int)(w[0].cols / 128),
						    (opts & FI_CU_HALF_BALANCE) != 0), out_f32,
			      opts);
}
