/* gemv_half: what the one-token products in half2 arithmetic share (kernels/gemv_q4h.cu for
 * INT4, gemv_q4kh.cu for Q4_K, gemv_f8h.cu for FP8): the input staged once a block in shared
 * memory as half, scaled by a power of two so that the products' half sums cannot overflow;
 * the weights of one launch (gh_parts) and the rows a warp takes; the slices of K a row and
 * their sums; the store. A chunk is 32 columns: 64 bytes of half x, 4 x 16-byte parts, part j stored
 * at j ^ ((c >> 1) & 3) so that the 8 lanes of a 128-byte phase, reading chunks c .. c + 7,
 * read 8 different bank groups. */
#ifndef FI_KERNELS_GEMV_HALF_CUH
#define FI_KERNELS_GEMV_HALF_CUH

#include <cuda_fp16.h>

#include "act_quant.cuh"
#include "backend/cuda/slices.h"
#include "common.cuh"

#define GH_WARPS 8
/* Rows a warp, and blocks an SM the kernels are built for (__launch_bounds__: at most 85
 * registers). 2 and 3 against 4 and 2 on the H100, tg128 alternated: AWQ +2.2%, Q4_K_M
 * +1.8%, FP8 level; more warps hide more of the loop's latency (tests/gpu/NOTES.md). */
#define GH_R 2
#define GH_MINB 3
#define GH_MAX_SHARED 65536   /* x as half: K <= 32768 */

union gh_h2u {
	uint32_t u;
	__half2 h;
};

static __device__ __forceinline__ __half2 h2bits(uint32_t u)
{
	gh_h2u v;
	v.u = u;
	return v.h;
}

static __device__ __forceinline__ uint32_t u32of(__half2 h)
{
	gh_h2u v;
	v.h = h;
	return v.u;
}

static __device__ __forceinline__ int gh_part(int c, int j)
{
	return c * 4 + (j ^ ((c >> 1) & 3));
}

/* INT4 (AWQ, GPTQ) in half, exactly: a group's zero point z as z1 = half2(1024 + z) and
 * nz2 = -(64 + z); word wv's 8 values (column 2b in byte b's low nibble, 2b + 1 in its high)
 * as (q - z) in the pairs (0, 4), (1, 5), (2, 6), (3, 7): h = (w & 0x000F000F) | 0x64006400
 * is half2 (1024 + q0, 1024 + q4), exact, and h - z1 takes it to q - z; the high nibbles come
 * as 1024 + 16 q, and h / 16 + nz2 does the same. gh_stage_bf16<true> stages x in this
 * order. */
static __device__ __forceinline__ void gh_q4_zero(uint32_t z, __half2 &z1, __half2 &nz2)
{
	z1 = h2bits((0x6400u | z) * 0x10001u);
	nz2 = __hneg2(__hsub2(z1, __float2half2_rn(960.f)));
}

static __device__ __forceinline__ void gh_q4_deq(uint32_t wv, __half2 z1, __half2 nz2,
						 __half2 (&d)[4])
{
	const __half2 r16 = __float2half2_rn(0.0625f);
	const uint32_t hi = wv >> 8;
	d[0] = __hsub2(h2bits((wv & 0x000F000Fu) | 0x64006400u), z1);
	d[1] = __hfma2(h2bits((wv & 0x00F000F0u) | 0x64006400u), r16, nz2);
	d[2] = __hsub2(h2bits((hi & 0x000F000Fu) | 0x64006400u), z1);
	d[3] = __hfma2(h2bits((hi & 0x00F000F0u) | 0x64006400u), r16, nz2);
}

/* max |x[k]| over the block, to every thread. */
static __device__ __forceinline__ float gh_absmax(const bf16 *__restrict__ x, int K, float *sh)
{
	float m = 0.f;
	for (int i = threadIdx.x; i < K / 8; i += blockDim.x) {
		float f[8];
		bf16x8_to_f32(((const bf16x8 *)x)[i], f);
#pragma unroll
		for (int k = 0; k < 8; k++)
			m = fmaxf(m, fabsf(f[k]));
	}
	m = block_max(m, sh);
	return m;
}

/* The e that brings a largest |x| of m under 2^lim (m 2^e < 2^lim): 0 for an all-zero or
 * non-finite x, whose products are then what they are. */
static __device__ __forceinline__ int gh_exp(float m, int lim)
{
	if (!(m > 0.f && m <= 3.0e38f))
		return 0;
	int p;
	frexpf(m, &p); /* m < 2^p */
	return lim - p;
}

/* Eight bf16 of x times up as four half2: PAIRED, the columns as the pairs (0, 4), (1, 5),
 * (2, 6), (3, 7) (gemv_q4h's nibble order); else in order. */
template <bool PAIRED>
static __device__ __forceinline__ uint4 gh_half8(const bf16x8 &b, float up)
{
	float f[8];
	bf16x8_to_f32(b, f);
	uint4 v;
	if (PAIRED) {
		v.x = u32of(__floats2half2_rn(f[0] * up, f[4] * up));
		v.y = u32of(__floats2half2_rn(f[1] * up, f[5] * up));
		v.z = u32of(__floats2half2_rn(f[2] * up, f[6] * up));
		v.w = u32of(__floats2half2_rn(f[3] * up, f[7] * up));
	} else {
		v.x = u32of(__floats2half2_rn(f[0] * up, f[1] * up));
		v.y = u32of(__floats2half2_rn(f[2] * up, f[3] * up));
		v.z = u32of(__floats2half2_rn(f[4] * up, f[5] * up));
		v.w = u32of(__floats2half2_rn(f[6] * up, f[7] * up));
	}
	return v;
}

/* x[K] (bf16) into xs as half times 2^e, max|x| 2^e < 2^LIM; returns e (0 for an all-zero or
 * non-finite x, whose products are then what they are). PAIRED: gh_half8's pair order.
 * Every thread of the block takes part; ends with a barrier. */
template <bool PAIRED, int LIM>
static __device__ __forceinline__ int gh_stage_bf16(const bf16 *__restrict__ x, int K, uint4 *xs,
						    float *sh)
{
	const int e = gh_exp(gh_absmax(x, K, sh), LIM);
	const float up = ldexpf(1.f, e);
	for (int i = threadIdx.x; i < K / 8; i += blockDim.x)
		xs[gh_part(i >> 2, i & 3)] = gh_half8<PAIRED>(((const bf16x8 *)x)[i], up);
	__syncthreads();
	return e;
}

#define GH_STAGE_V 8 /* pieces a thread keeps in registers in a one-pass stage */

/* A thread's first V 16-byte pieces of x[K] into v (zeros past the end), and max |x| over all
 * of x, to every thread of the block: the loads of a one-pass stage. */
template <int V>
static __device__ __forceinline__ float gh_load_max(const bf16 *__restrict__ x, int K,
						    uint4 (&v)[V], float *sh)
{
	const int nv = K / 8;
	const uint4 *xv = (const uint4 *)x;
	float m = 0.f;
#pragma unroll
	for (int j = 0; j < V; j++) {
		const int i = threadIdx.x + j * blockDim.x;
		v[j] = i < nv ? __ldg(xv + i) : make_uint4(0, 0, 0, 0);
	}
#pragma unroll
	for (int j = 0; j < V; j++) /* zeros past the end leave m as it is */
		m = aq_absmax8((const bf16 *)&v[j], m);
	for (int i = threadIdx.x + V * blockDim.x; i < nv; i += blockDim.x) {
		const uint4 u = __ldg(xv + i);
		m = aq_absmax8((const bf16 *)&u, m);
	}
	return block_max(m, sh);
}

/* gh_stage_bf16 in one pass (FI_HALF_STAGE, on unless 0): a thread's first GH_STAGE_V 16-byte
 * pieces of x are loaded together and kept in registers for the max and the conversion, where
 * the two loops above wait on L2 once a piece a pass (7 times each for the 8B's down product).
 * ncu of the 8B's AWQ layer (H100): 9-12% of gemv_q4m's stall samples waited on those loads.
 * The same values, so the same e and the same xs: tg128 of the 8B's AWQ +1.8%, Q4_K_M +2.6%
 * (H100, two calls). gemv_f8h keeps two passes: its one-pass path cost 4.3%. */
template <bool PAIRED, int LIM>
static __device__ __forceinline__ int gh_stage_bf16_1(const bf16 *__restrict__ x, int K,
						      uint4 *xs, float *sh)
{
	const int nv = K / 8;
	uint4 v[GH_STAGE_V];
	const int e = gh_exp(gh_load_max(x, K, v, sh), LIM);
	const float up = ldexpf(1.f, e);
#pragma unroll
	for (int j = 0; j < GH_STAGE_V; j++) {
		const int i = threadIdx.x + j * blockDim.x;
		if (i < nv)
			xs[gh_part(i >> 2, i & 3)] = gh_half8<PAIRED>(*(const bf16x8 *)&v[j], up);
	}
	for (int i = threadIdx.x + GH_STAGE_V * blockDim.x; i < nv; i += blockDim.x)
		xs[gh_part(i >> 2, i & 3)] = gh_half8<PAIRED>(((const bf16x8 *)x)[i], up);
	__syncthreads();
	return e;
}

/* Up to four weights of one type and width that share the input x, one launch: part p has
 * the items [blk0[p], blk0[p + 1]) (q, k and v, or gate and up, of a decode step). An item is
 * the GH_WARPS / S x GH_R rows one block takes at a time; a block takes the items blockIdx.x,
 * + gridDim.x, ... (gh_blocks), staging x once for all of them. */
struct gh_parts {
	fi_cu_qw w[4];
	void *out[4];
	const bf16 *bias[4];
	int blk0[5];
	int n;
	int stage1; /* FI_CU_HALF_STAGE1: x staged by gh_stage_bf16_1 */
	int ahead;  /* FI_CU_HALF_AHEAD: gemv_q4m loads the next item's first quad early */
};

/* P's n parts from the weights, outputs and biases (NULL: none); returns their rows. */
static inline int64_t gh_fill(gh_parts &P, int n, void *const *out, const fi_cu_qw *w,
			      const void *const *bias, int opts = 0)
{
	P.stage1 = (opts & FI_CU_HALF_STAGE1) != 0;
	P.ahead = (opts & FI_CU_HALF_AHEAD) != 0;
	int64_t rows = 0;
	for (int i = 0; i < n; i++) {
		P.w[i] = w[i];
		P.out[i] = out[i];
		P.bias[i] = bias ? (const bf16 *)bias[i] : NULL;
		rows += w[i].rows;
	}
	P.n = n;
	return rows;
}

/* Item it's part. */
static __device__ __forceinline__ int gh_part_of(const gh_parts &P, int it)
{
	int p = 0;
	while (p + 1 < P.n && it >= P.blk0[p + 1])
		p++;
	return p;
}

/* The first of the GH_R rows of item it (of part p) that this warp takes (S warps a row). */
static __device__ __forceinline__ int64_t gh_row0(const gh_parts &P, int p, int S, int it)
{
	const int wp = threadIdx.x >> 5;
	return (((int64_t)it - P.blk0[p]) * (GH_WARPS / S) + wp / S) * GH_R;
}

/* Item it's part p and the first row n0 of it that this warp takes. */
static __device__ __forceinline__ void gh_at(const gh_parts &P, int S, int it, int &p,
					     int64_t &n0)
{
	p = gh_part_of(P, it);
	n0 = gh_row0(P, p, S, it);
}

/* The block's next item, it + gridDim.x: true with it, p and n0 moved there (gh_at); false
 * after the block's last. */
static __device__ __forceinline__ bool gh_next(const gh_parts &P, int S, int &it, int &p,
					       int64_t &n0)
{
	it += gridDim.x;
	if (it >= P.blk0[P.n])
		return false;
	gh_at(P, S, it, p, n0);
	return true;
}

/* The rows' sums over the warp, then over the S slices of the warp's rows (through part, in
 * shared memory): true for the one lane that then holds the totals. Every thread of the block
 * must call it (a barrier when S > 1). A block's successive items pass part[2] alternately:
 * a warp writes item k + 2's sums only after the barrier of item k + 1, which every warp
 * reaches after reading item k's. */
static __device__ __forceinline__ bool gh_total(float (&acc)[GH_R], float (*part)[GH_R], int S)
{
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5;
#pragma unroll
	for (int r = 0; r < GH_R; r++)
		acc[r] = warp_sum(acc[r]);
	if (S > 1) {
		if (lane == 0)
#pragma unroll
			for (int r = 0; r < GH_R; r++)
				part[wp][r] = acc[r];
		__syncthreads();
		if (wp % S)
			return false;
#pragma unroll
		for (int r = 0; r < GH_R; r++)
			for (int s = 1; s < S; s++)
				acc[r] += part[wp + s][r];
	}
	return lane == 0;
}

/* The totals of the item's rows n0 .. n0 + GH_R - 1 that part p has, to its output:
 * acc x k (x rs[row] where there are row scales) + the bias. */
template <bool F32OUT>
static __device__ __forceinline__ void gh_finish(const gh_parts &P, int p, int64_t n0,
						 const float (&acc)[GH_R], float k, const float *rs)
{
#pragma unroll
	for (int r = 0; r < GH_R; r++) {
		const int64_t row = n0 + r;
		if (row >= P.w[p].rows)
			break;
		const float v = acc[r] * k * (rs ? rs[row] : 1.f) +
				(P.bias[p] ? __bfloat162float(P.bias[p][row]) : 0.f);
		if (F32OUT)
			((float *)P.out[p])[row] = v;
		else
			((bf16 *)P.out[p])[row] = __float2bfloat16(v);
	}
}
static inline int gh_sms(void)
{
	static int sms;
	if (!sms) {
		int dev = 0;
		cudaGetDevice(&dev);
		if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
		    sms < 1)
			sms = 132;
	}
	return sms;
}

/* K slices a row (backend/cuda/slices.h): items of GH_WARPS / S warps of r rows over GH_MINB
 * blocks an SM, S at most smax; balance: FI_HALF_BALANCE. */
static inline int gh_slices_r(int64_t rows, int r, int smax, bool balance)
{
	return fi_half_slices(rows, (int64_t)GH_WARPS * r, smax, (int64_t)GH_MINB * gh_sms(),
			      balance);
}

/* gh_slices_r for GH_R rows a warp and nc 32-column chunks a row: no more slices than there
 * are 32-chunk rounds (a slice past them would idle). With balance the FP8 o and down products
 * take S = 4, 1,024 items in three rounds 86% busy, where doubling gives 512 in two, 65%. */
static inline int gh_slices(int64_t rows, int nc, bool balance)
{
	int smax = 1;
	while (smax < 8 && 64 * smax <= nc)
		smax *= 2;
	return gh_slices_r(rows, GH_R, smax, balance);
}

/* The launch's blocks after gh_grid: an item each, or with FI_CU_HALF_STAY at most GH_MINB
 * an SM (the kernels' occupancy), each then taking several items, so that x is staged once a
 * block and a block's next loads are in flight while it sums the last item (gate and up of
 * the 8B on an H100: 1,792 items, 396 blocks). */
static inline unsigned gh_blocks(const gh_parts &P, int opts)
{
	const int items = P.blk0[P.n], slots = GH_MINB * gh_sms();
	return (unsigned)((opts & FI_CU_HALF_STAY) && items > slots ? slots : items);
}

/* kern<<<gh_blocks, GH_WARPS x 32, shm, st>>>(args). (Programmatic launches, whose blocks
 * load their first weights while the kernel before ends, were 0.5-1% slower on the H100:
 * tests/gpu/NOTES.md.) */
template <typename... K, typename... A>
static inline void gh_launch(void (*kern)(K...), const gh_parts &P, int opts, size_t shm,
			     cudaStream_t st, A... args)
{
	kern<<<gh_blocks(P, opts), GH_WARPS * 32, shm, st>>>(args...);
}

/* P's block ranges for items of `per` rows; false if there are none or too many. */
static inline bool gh_grid_rows(gh_parts &P, int64_t per)
{
	int64_t b = 0;
	for (int i = 0; i < P.n; i++) {
		P.blk0[i] = (int)b;
		b += (P.w[i].rows + per - 1) / per;
		if (b > INT32_MAX / 2)
			return false;
	}
	P.blk0[P.n] = (int)b;
	return b > 0;
}

/* P's block ranges for S slices (GH_WARPS / S warps of GH_R rows an item). */
static inline bool gh_grid(gh_parts &P, int S)
{
	return gh_grid_rows(P, GH_WARPS / S * GH_R);
}

/* Raises a kernel's dynamic shared-memory limit to GH_MAX_SHARED once: 0 if it cannot. */
#define GH_READY(kern)                                                                         \
	static int ready;                                                                      \
	if (!ready)                                                                            \
		ready = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,  \
					     GH_MAX_SHARED) == cudaSuccess ? 1 : -1;           \
	if (ready < 0) {                                                                       \
		cudaGetLastError();                                                            \
		return 0;                                                                      \
	}

/* The INT4 kernels (gemv_q4h.cu, gemv_q4m.cu) take (P, lg, x): lg the log2 of the chunks of
 * 32 columns a group. */
typedef void (*gh_int4_kern)(const gh_parts, int, const bf16 *);

/* n INT4 weights a kernel takes (the checks of both): one width, a multiple of cm columns,
 * groups of 32 << lg columns with lg >= lg_min, at most GH_MAX_SHARED of x; act-order only
 * alone (x already permuted). Sets lg; false otherwise. */
static inline bool gh_int4_takes(int n, int out_f32, const fi_cu_qw *w, const void *x, int cm,
				 int lg_min, int &lg)
{
	lg = 0;
	if (n < 1 || n > 4 || (out_f32 && n > 1) || !fi_aligned16(x))
		return false;
	while (lg < 10 && 32 << lg < w[0].group)
		lg++;
	if (lg < lg_min)
		return false;
	for (int i = 0; i < n; i++)
		if (w[i].type != FI_CQ_INT4 || w[i].cols != w[0].cols || w[i].cols % cm ||
		    w[i].group != 32 << lg || w[i].cols * 2 > GH_MAX_SHARED || w[i].rows < 1 ||
		    (n > 1 && w[i].perm))
			return false;
	return true;
}

/* K::kern<S, F32OUT>() launched over P at S slices, items of GH_WARPS / S warps of K::rows
 * rows each (K: a kernel's description in its file); 0 if it cannot be. */
template <class K, int S, bool F32OUT>
static int gh_int4_s(cudaStream_t st, gh_parts &P, int lg, const void *x, int opts)
{
	GH_READY((K::template kern<S, F32OUT>()));
	if (!gh_grid_rows(P, GH_WARPS / S * K::rows))
		return 0;
	gh_launch(K::template kern<S, F32OUT>(), P, opts, (size_t)P.w[0].cols * 2, st, P, lg,
		  (const bf16 *)x);
	return 1;
}

/* The same for S of 1, 2, 4 or 8 (any other: 8), f32 or bf16 out; the launch checked. */
template <class K>
static fi_err gh_int4(cudaStream_t st, gh_parts &P, int lg, const void *x, int S, int f32,
		      int opts)
{
	int ok;
	switch (S) {
	case 1: ok = f32 ? gh_int4_s<K, 1, true>(st, P, lg, x, opts)
			 : gh_int4_s<K, 1, false>(st, P, lg, x, opts); break;
	case 2: ok = f32 ? gh_int4_s<K, 2, true>(st, P, lg, x, opts)
			 : gh_int4_s<K, 2, false>(st, P, lg, x, opts); break;
	case 4: ok = f32 ? gh_int4_s<K, 4, true>(st, P, lg, x, opts)
			 : gh_int4_s<K, 4, false>(st, P, lg, x, opts); break;
	default: ok = f32 ? gh_int4_s<K, 8, true>(st, P, lg, x, opts)
			  : gh_int4_s<K, 8, false>(st, P, lg, x, opts); break;
	}
	if (!ok)
		return FI_EUNSUPPORTED;
	LAUNCH_CHECK();
	return FI_OK;
}

#endif
