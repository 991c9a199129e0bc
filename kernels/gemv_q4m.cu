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

/* One quad of the lane's two rows (codes qa, qb; zero points za, zb) against x's chunk c
 * (its 4 parts): cc += the 8 mma's sums, cc[0] row g's, cc[2] row g + 8's. */
static __device__ __forceinline__ void q4m_quad(const uint4 &qa, const uint4 &qb, uint32_t za,
						uint32_t zb, const uint4 *xs, int c, float (&cc)[4])
{
	__half2 z1a, nza, z1b, nzb;
	gh_q4_zero(za, z1a, nza);
	gh_q4_zero(zb, z1b, nzb);
	const uint32_t wa[4] = {qa.x, qa.y, qa.z, qa.w};
	const uint32_t wb[4] = {qb.x, qb.y, qb.z, qb.w};
#pragma unroll
	for (int j = 0; j < 4; j++) {
		const uint4 xp = xs[gh_part(c, j)];
		__half2 da[4], db[4];
		gh_q4_deq(wa[j], z1a, nza, da);
		gh_q4_deq(wb[j], z1b, nzb, db);
		q4m_mma(cc, u32of(da[0]), u32of(db[0]), u32of(da[1]), u32of(db[1]), xp.x, xp.y);
		q4m_mma(cc, u32of(da[2]), u32of(db[2]), u32of(da[3]), u32of(db[3]), xp.z, xp.w);
	}
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

/* Group g's scales and zero points of the two rows. */
static __device__ __forceinline__ void q4m_sz(const q4m_rows &r, int g, q4m_ld &l)
{
	l.sa = r.sa[g];
	l.sb = r.sb[g];
	l.za = r.za[g];
	l.zb = r.zb[g];
}

static __device__ __forceinline__ void q4m_load(const q4m_rows &r, int c, int g, q4m_ld &l)
{
	l.qa = ld16(r.ra + (int64_t)c * 16);
	l.qb = ld16(r.rb + (int64_t)c * 16);
	q4m_sz(r, g, l);
}

/* An item's sums of the warp's rows (acc_a: row nd + g, acc_b: nd + g + 8, part pd) to the
 * output, x's 2^e taken back, + the bias. Every thread of the block calls it (a barrier when
 * S > 1). */
template <int S, bool F32OUT>
static __device__ __forceinline__ void q4m_store(const gh_parts &P, float (*rs)[Q4M_ROWS],
						 float acc_a, float acc_b, int e, int pd, int64_t nd,
						 int wp, int sl, int g, int t)
{
	/* the S slices of the warp's rows meet in shared memory; rs is one of two halves the
	 * kernel's items alternate between, as gh_total's part (a warp writes item k + 2's sums
	 * only after the barrier of item k + 1, which every warp reaches after reading k's) */
	if (S > 1) {
		if (t == 0) {
			rs[wp][g] = acc_a;
			rs[wp][g + 8] = acc_b;
		}
		__syncthreads();
		if (sl == 0 && t == 0) {
#pragma unroll
			for (int s = 1; s < S; s++) {
				acc_a += rs[wp + s][g];
				acc_b += rs[wp + s][g + 8];
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
			float cc[4] = {0.f, 0.f, 0.f, 0.f};
			q4m_quad(cur.qa, cur.qb, cur.za, cur.zb, xs, c, cc);
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
		q4m_store<S, F32OUT>(P, rs[k & 1], acc_a, acc_b, e, pd, nd, wp, sl, g, t);
		if (!more)
			break;
	}
}

/* FI_INT4_RING: the same sums, each warp's codes streamed through a ring of Q4P_R stages in
 * shared memory by cp.async, Q4P_D quads in flight a warp instead of one.
 *
 * Why: ncu of the 8B's AWQ layer (H100) has gemv_q4m at 29-49% of DRAM bandwidth, 47% of its
 * stall samples waiting on global loads. With one 32-byte quad a lane in flight, an SM holds
 * about 24 KB of loads (24 warps x 1 KB), under the ~38 KB that Little's law asks for at
 * 25 GB/s an SM and ~1.5 us of loaded latency; and the small products (q/k/v, o: 4 quads a
 * warp) wait one full latency a quad. Held in shared memory, the quads in flight cost no
 * registers: 4 a warp is ~96 KB an SM, and a warp with 4 quads an item has them all in flight
 * at once. The ring runs across a block's items: a warp's next item's first quads are in
 * flight while it sums the last one, and while x is staged for the first.
 *
 * A lane copies and later reads only its own two 16-byte chunks (rows g and g + 8 of chunk
 * 4 i + t, as gemv_q4m loads them), so the wait is the lane's own cp.async group: no barrier.
 * Stage s of warp wp: ring[(wp Q4P_R + s) 64 + r 32 + lane], row g + 8 r (16 bytes apart a
 * lane: no bank conflicts). The copy into stage s of step j + D comes after step j - 1's
 * reads of it were used (program order of the same lane). */
#define Q4P_D 4           /* quads in flight a warp */
#define Q4P_R (Q4P_D + 1) /* stages a warp: the one read and the D in flight */
#define Q4P_RING (GH_WARPS * Q4P_R * 64 * 16) /* the ring's bytes a block */

/* A 16-byte cp.async of weights, with the .L2::256B prefetch size (ldw16's reason). */
static __device__ __forceinline__ void q4p_cp(uint32_t dst, const void *src)
{
	asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(dst), "l"(src)
		     : "memory");
}

/* Where a warp's copies are: item it (items: none left), quad i, the item's two code rows. */
struct q4p_src {
	int it, i;
	const uint8_t *ra, *rb;
};

/* The copy of the source's quad (none past the last item) into stage st, one cp.async group
 * either way, and the source moved to the warp's next quad (the next item's first after the
 * last of an item). */
template <int S>
static __device__ __forceinline__ void q4p_issue(const gh_parts &P, q4p_src &src, int items,
						 int nq, int sl, int wp, int g, int lg, int t,
						 uint32_t st)
{
	if (src.it < items) {
		const int64_t off = (int64_t)(4 * src.i + t) * 16;
		q4p_cp(st, src.ra + off);
		q4p_cp(st + 32 * 16, src.rb + off);
		src.i += S;
		if (src.i >= nq) {
			src.i = sl;
			src.it += gridDim.x;
			if (src.it < items) {
				int p;
				int64_t n0;
				const q4m_rows r = q4m_at<S>(P, src.it, wp, g, lg, p, n0);
				src.ra = r.ra;
				src.rb = r.rb;
			}
		}
	}
	asm volatile("cp.async.commit_group;\n" ::);
}

template <int S, bool F32OUT>
__global__ void __launch_bounds__(GH_WARPS * 32, GH_MINB)
gemv_q4p_kernel(const gh_parts P, int lg, const bf16 *__restrict__ x)
{
	extern __shared__ uint4 xs[]; /* [K / 32][4] x (gemv_half.cuh), then the ring */
	__shared__ float sh[32];
	__shared__ float rs[2][GH_WARPS][Q4M_ROWS];
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	const int K = (int)P.w[0].cols, nq = K / 128, sl = wp % S;
	const int items = P.blk0[P.n];
	int it = blockIdx.x, p;
	int64_t n0;
	if (it >= items)
		return;
	const uint4 *ring = xs + K / 8 + wp * Q4P_R * 64;
	const uint32_t ring0 = (uint32_t)__cvta_generic_to_shared(ring) + lane * 16;
	q4m_rows rw = q4m_at<S>(P, it, wp, g, lg, p, n0);
	/* a warp with no quads (sl >= nq) copies nothing */
	q4p_src src = {sl < nq ? it : items, sl, rw.ra, rw.rb};
	int sp = 0, sc = 0; /* the stages copied into and read next */
#pragma unroll
	for (int d = 0; d < Q4P_D; d++, sp++)
		q4p_issue<S>(P, src, items, nq, sl, wp, g, lg, t, ring0 + sp * 64 * 16);
	q4m_ld cur, nxt; /* scales and zero points: plain loads, one quad ahead */
	if (sl < nq)
		q4m_sz(rw, (4 * sl) >> lg, cur);
	const int e = gh_stage_bf16_1<true, 15, 2>(x, K, xs, sh); /* max|x| 2^e < 2^15 */

	for (int k = 0;; k++) {
		float acc_a = 0.f, acc_b = 0.f;
		for (int i = sl; i < nq; i += S) {
			const int c = 4 * i + t, in = i + S;
			q4p_issue<S>(P, src, items, nq, sl, wp, g, lg, t, ring0 + sp * 64 * 16);
			sp = sp == Q4P_R - 1 ? 0 : sp + 1;
			if (in < nq)
				q4m_sz(rw, (4 * in) >> lg, nxt);
			asm volatile("cp.async.wait_group %0;\n" ::"n"(Q4P_D) : "memory");
			const uint4 qa = ring[sc * 64 + lane], qb = ring[sc * 64 + 32 + lane];
			sc = sc == Q4P_R - 1 ? 0 : sc + 1;
			float cc[4] = {0.f, 0.f, 0.f, 0.f};
			q4m_quad(qa, qb, cur.za, cur.zb, xs, c, cc);
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
			if (sl < nq) /* in flight during these sums */
				q4m_sz(rw, (4 * sl) >> lg, cur);
		}
		q4m_store<S, F32OUT>(P, rs[k & 1], acc_a, acc_b, e, pd, nd, wp, sl, g, t);
		if (!more)
			break;
	}
}

/* K slices a row (1, 2, 4 or 8): doubled while the launch has fewer items than GH_MINB an
 * SM and each slice keeps at least two of the nq quads of 128 columns. */
static int q4m_slices(int64_t rows, int nq)
{
	int S = 1;
	while (S < 8 && nq >= 4 * S &&
	       (rows + GH_WARPS / S * Q4M_ROWS - 1) / (GH_WARPS / S * Q4M_ROWS) < GH_MINB * gh_sms())
		S *= 2;
	return S;
}

struct q4m_k { /* gh_int4's description of this kernel */
	enum { rows = Q4M_ROWS, ring = 0 };
	template <int S, bool F32OUT>
	static gh_int4_kern kern(void)
	{
		return gemv_q4m_kernel<S, F32OUT>;
	}
};

struct q4p_k {
	enum { rows = Q4M_ROWS, ring = Q4P_RING };
	template <int S, bool F32OUT>
	static gh_int4_kern kern(void)
	{
		return gemv_q4p_kernel<S, F32OUT>;
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
	const int S = q4m_slices(rows, (int)(w[0].cols / 128));
	if (opts & FI_CU_HALF_RING)
		return gh_int4<q4p_k>(st, P, lg, x, S, out_f32, opts);
	return gh_int4<q4m_k>(st, P, lg, x, S, out_f32, opts);
}
