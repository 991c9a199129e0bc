/* gemv_qfused: the fused decode products of kernels/gemv_fused.cu (RMSNorm folded in; q/k/v
 * with RoPE and the cache write; gate/up with SiLU; the residual add) for quantized weights
 * (struct fi_cu_qw of every type but TQ2, act-order INT4 excepted), T <= 4 tokens.
 *
 * Decode of a 4-bit model is bound by its weight bytes only if the decoding stays under them:
 * at 3 TB/s an H100 SM takes ~26 INT4 values a clock, while its conversion unit (I2F, F2F)
 * turns 16 a clock into floats. So integers become floats by landing in the mantissa of 2^23
 * (one __byte_perm a value) and subtracting 2^23 plus the zero point (exact), and the scales
 * are applied once a chunk: sum_i s (q_i - z) x_i = s sum_i (q_i - z) x_i. Types with a min
 * (Q4_K, Q5_K) take d sum q x - m sum x, sum x over the chunk shared by the rows.
 *
 * A warp streams two rows (consecutive rows for the residual add, gate and up of one row,
 * the RoPE pair (i, i + hd/2) of one q or k head), so that x is read and converted once for
 * both, in chunks of 32 columns as kernels/qchunk.cuh: lane i takes chunks i, i + 32, ... of
 * its slice of K; slices of one row meet in shared memory as in gemv_fused.cu.
 * x: bf16 (weight-only types; with the norm applied on the fly), or for FP8 W8A8 the e4m3
 * codes and scales of kernels/act_quant.cu. This header is included by one file per group of
 * types (gemv_qfused_*.cu) so that their instantiations compile in parallel. */
#ifndef FI_KERNELS_GEMV_QFUSED_CUH
#define FI_KERNELS_GEMV_QFUSED_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common.cuh"

#define QF_WARPS 8
enum { QF_BF16, QF_NORM, QF_AQ_TOKEN, QF_AQ_GROUP }; /* what x is */

/* The fields of one weight a warp reads, selected by value (a dynamically indexed kernel
 * parameter would go through local memory). */
struct qf_w {
	const uint8_t *q;
	const void *scale;
	const uint8_t *zero;
	int64_t row_bytes;
	int kind, group;
};

static __device__ __forceinline__ qf_w qf_pick(const fi_cu_qw &a)
{
	return qf_w{a.q, a.scale, a.zero, a.row_bytes, a.kind, a.group};
}

static __device__ __forceinline__ uint4 qf_ld(const uint8_t *p)
{
	return ldw16(p);
}

/* 2^23 + byte k of m, as a float: the byte in the low mantissa bits of 2^23. */
static __device__ __forceinline__ float qf_mag(uint32_t m, int k)
{
	return __uint_as_float(__byte_perm(m, 0x4B000000u, 0x7440 + k));
}

static __device__ __forceinline__ uint32_t qf_word(const uint4 &v, int i)
{
	return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

static __device__ __forceinline__ uint32_t qf_byte(const uint4 &v, int i)
{
	return (qf_word(v, i >> 2) >> (8 * (i & 3))) & 0xFF;
}

/* One chunk of one row, as loaded: every load issued before any is used. */
struct qf_raw {
	uint4 a[2], b[2], h; /* values (a), Q5_K high bits / Q6_K qh (b), block header or scales */
	float s, z;          /* INT4: scale and 2^23 + zero; Q8_0, Q6_K: d; FP8: block scale */
};

template <int TYPE>
static __device__ __forceinline__ void qf_load(const qf_w &w, int64_t n, int c, int K, qf_raw &o)
{
	const uint8_t *row = w.q + n * w.row_bytes;
	if (TYPE == FI_CQ_INT4) {
		int64_t g = n * (K / w.group) + (int64_t)c * 32 / w.group;
		o.a[0] = qf_ld(row + (int64_t)c * 16);
		o.s = __half2float(((const __half *)w.scale)[g]);
		o.z = 8388608.f + (float)w.zero[g];
	} else if (TYPE == FI_CQ_I8 || TYPE == FI_CQ_FP8) {
		o.a[0] = qf_ld(row + (int64_t)c * 32);
		o.a[1] = qf_ld(row + (int64_t)c * 32 + 16);
		if (TYPE == FI_CQ_I8)
			o.s = __half2float(((const __half *)w.scale)[n * (K / 32) + c]);
		else
			o.s = w.kind == FI_Q8_B128
				      ? ((const float *)w.scale)[(n / 128) * ((K + 127) / 128) + c / 4]
				      : 1.f;
	} else if (TYPE == FI_CQ_Q4K || TYPE == FI_CQ_Q5K) {
		const int bb = TYPE == FI_CQ_Q4K ? 144 : 176, sb = c % 8;
		const uint8_t *blk = row + (int64_t)(c / 8) * bb;
		const uint8_t *qs = blk + (TYPE == FI_CQ_Q4K ? 16 : 48) + (sb / 2) * 32;
		o.h = qf_ld(blk);
		o.a[0] = qf_ld(qs);
		o.a[1] = qf_ld(qs + 16);
		if (TYPE == FI_CQ_Q5K) {
			o.b[0] = qf_ld(blk + 16);
			o.b[1] = qf_ld(blk + 32);
		}
	} else { /* Q6_K: ql[128] qh[64] sc[16] a 208-byte block, d apart */
		const int k = c % 8, half = k / 4, r = k % 4;
		const uint8_t *blk = row + (int64_t)(c / 8) * 208;
		o.a[0] = qf_ld(blk + half * 64 + (r & 1) * 32);
		o.a[1] = qf_ld(blk + half * 64 + (r & 1) * 32 + 16);
		o.b[0] = qf_ld(blk + 128 + half * 32);
		o.b[1] = qf_ld(blk + 128 + half * 32 + 16);
		o.h = qf_ld(blk + 192);
		o.s = __half2float(((const __half *)w.scale)[n * (K / 256) + c / 8]);
	}
}

/* Columns 8j .. 8j+7 of the chunk as exact integers (or FP8 values) in f32, before scales. */
template <int TYPE>
static __device__ __forceinline__ void qf_piece(const qf_raw &o, int c, int j, float *v)
{
	if constexpr (TYPE == FI_CQ_INT4) { /* byte i: column 2i (low nibble), 2i + 1 (high) */
		uint32_t wd = qf_word(o.a[0], j), lo = wd & 0x0F0F0F0Fu, hi = (wd >> 4) & 0x0F0F0F0Fu;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			v[2 * k] = qf_mag(lo, k) - o.z;
			v[2 * k + 1] = qf_mag(hi, k) - o.z;
		}
	} else {
#pragma unroll
	for (int h = 0; h < 2; h++) { /* words 2j, 2j + 1: columns 8j + 4h .. + 3 */
		const int wi = 2 * j + h;
		uint32_t wd = qf_word(o.a[wi >> 2], wi & 3);
		if (TYPE == FI_CQ_FP8) {
			__half2_raw p0 = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(wd & 0xFFFF), __NV_E4M3);
			__half2_raw p1 = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(wd >> 16), __NV_E4M3);
			float2 f0 = __half22float2(*(__half2 *)&p0), f1 = __half22float2(*(__half2 *)&p1);
			v[4 * h] = f0.x, v[4 * h + 1] = f0.y, v[4 * h + 2] = f1.x, v[4 * h + 3] = f1.y;
			continue;
		}
		uint32_t m;
		float bias = 8388608.f;
		if (TYPE == FI_CQ_I8) {
			m = wd ^ 0x80808080u; /* int8 + 128 */
			bias += 128.f;
		} else if (TYPE == FI_CQ_Q4K || TYPE == FI_CQ_Q5K) {
			const int sb = c % 8;
			m = ((sb & 1) ? wd >> 4 : wd) & 0x0F0F0F0Fu;
			if (TYPE == FI_CQ_Q5K)
				m |= ((qf_word(o.b[wi >> 2], wi & 3) >> sb) & 0x01010101u) << 4;
		} else { /* Q6_K: 4 bits of ql, 2 of qh, minus 32 */
			const int r = c % 8 % 4;
			m = ((wd >> (4 * (r >> 1))) & 0x0F0F0F0Fu) |
			    (((qf_word(o.b[wi >> 2], wi & 3) >> (2 * r)) & 0x03030303u) << 4);
			bias += 32.f;
		}
#pragma unroll
		for (int k = 0; k < 4; k++)
			v[4 * h + k] = qf_mag(m, k) - bias;
	}
	}
}

/* The chunk's factors: sum = sa * (pieces 0, 1) + sb * (pieces 2, 3) - mn * sum(x). */
template <int TYPE>
static __device__ __forceinline__ void qf_scales(const qf_raw &o, int c, float &sa, float &sb,
						 float &mn)
{
	mn = 0.f;
	if (TYPE == FI_CQ_Q4K || TYPE == FI_CQ_Q5K) { /* ggml's get_scale_min_k4 */
		const int j = c % 8;
		int sc, m;
		if (j < 4) {
			sc = qf_byte(o.h, 4 + j) & 63;
			m = qf_byte(o.h, 8 + j) & 63;
		} else {
			sc = (qf_byte(o.h, 8 + j) & 0xF) | ((qf_byte(o.h, j) >> 6) << 4);
			m = (qf_byte(o.h, 8 + j) >> 4) | ((qf_byte(o.h, 4 + j) >> 6) << 4);
		}
		__half2_raw dd;
		dd.x = (unsigned short)(o.h.x & 0xFFFF);
		dd.y = (unsigned short)(o.h.x >> 16);
		float2 d = __half22float2(*(__half2 *)&dd);
		sa = sb = d.x * (float)sc;
		mn = d.y * (float)m;
	} else if (TYPE == FI_CQ_Q6K) {
		const int k = c % 8, base = (k / 4) * 8 + 2 * (k % 4);
		sa = o.s * (float)(int8_t)qf_byte(o.h, base);
		sb = o.s * (float)(int8_t)qf_byte(o.h, base + 1);
	} else {
		sa = sb = o.s;
	}
}

struct qf_params {
	fi_cu_qw w[3];       /* ADD: w[0]; GLU: gate, up; ROPE: q [N,K], k, v [Nk,K] */
	const bf16 *bias[3]; /* ROPE: q, k, v biases or NULL */
	const bf16 *x;       /* [T, K] */
	const uint8_t *xq;   /* W8A8: e4m3 codes [T, K] */
	const float *xs;     /* W8A8: scales [T] or [T, ceil(K/128)] */
	const bf16 *g;       /* [K] norm weight (QF_NORM) */
	float eps;
	int act;             /* GLU: 0 silu, 1 tanh GELU */
	bf16 *out;
	int N, Nk, K;
	int S, slice_c;    /* K slices per item, chunks per slice */
	int item0, item1;  /* the items of this launch (ROPE: a segment of q, k, v) */
	fi_cu_rope_out ro;
};

/* Chunks a lane has in flight per row: two for INT4's 16-byte chunks, one for the others. */
#define QF_U(TYPE) ((TYPE) == FI_CQ_INT4 ? 2 : 1)

template <int TYPE, int T, int EPI, int XM>
__global__ void __launch_bounds__(QF_WARPS * 32)
qfgemv_kernel(const qf_params p)
{
	constexpr int U = QF_U(TYPE);
	constexpr bool MIN = TYPE == FI_CQ_Q4K || TYPE == FI_CQ_Q5K;
	constexpr bool NORM = XM == QF_NORM, AQ = XM == QF_AQ_TOKEN || XM == QF_AQ_GROUP;
	constexpr int NP = 2 * T + T; /* partials a warp hands on: acc, then ss */
	__shared__ float part[QF_WARPS][NP];
	const int lane = threadIdx.x & 31, wp = threadIdx.x >> 5, S = p.S;
	const int wi = p.item0 + blockIdx.x * (QF_WARPS / S) + wp / S, slice = wp % S;
	const int K = p.K, k8 = K / 8, nc = K / 32;
	const bool valid = wi < p.item1;

	/* The item's rows and weights. */
	int seg = 0, ip = 0;
	int64_t n0, n1;
	bool second = true; /* row n1 is written (ADD: false past the last row) */
	qf_w w0, w1;
	if (EPI == FI_FG_ROPE) {
		int half = p.ro.hd / 2, pq = p.N / 2, pk = p.Nk / 2, pp = wi;
		w0 = qf_pick(p.w[0]);
		if (pp >= pq) {
			pp -= pq;
			seg = 1;
			w0 = qf_pick(p.w[1]);
			if (pp >= pk) {
				pp -= pk;
				seg = 2;
				w0 = qf_pick(p.w[2]);
			}
		}
		w1 = w0;
		ip = pp % half;
		n0 = (pp / half) * p.ro.hd + ip;
		n1 = n0 + half;
	} else if (EPI == FI_FG_GLU) {
		w0 = qf_pick(p.w[0]);
		w1 = qf_pick(p.w[1]);
		n0 = n1 = wi;
	} else {
		w0 = w1 = qf_pick(p.w[0]);
		n0 = 2 * (int64_t)wi;
		n1 = n0 + 1;
		second = n1 < p.N;
		if (!second)
			n1 = n0; /* streamed again, not written */
	}
	const int c0 = slice * p.slice_c, c1 = valid ? min(nc, c0 + p.slice_c) : c0;

	/* What the epilogue needs besides the sums, fetched before the weight stream: lane
	 * t < T of the first slice writes token t. */
	const bool writer = valid && slice == 0 && lane < T;
	float res0 = 0.f, res1 = 0.f, b0 = 0.f, b1 = 0.f, ang = 0.f, rw0 = 1.f, rw1 = 1.f;
	int64_t sl = -1;
	if (writer) {
		if (EPI == FI_FG_ADD) {
			res0 = __bfloat162float(p.out[(int64_t)lane * p.N + n0]);
			res1 = __bfloat162float(p.out[(int64_t)lane * p.N + n1]);
		}
		if (EPI == FI_FG_ROPE) {
			rope_fetch f = rope_pair_fetch(p.bias[0], p.bias[1], p.bias[2], seg, n0, n1,
						       p.ro, lane, ip);
			b0 = f.b0, b1 = f.b1, ang = f.ang, sl = f.sl;
		}
		if (TYPE == FI_CQ_FP8 && w0.kind == FI_Q8_ROW) {
			rw0 = ((const float *)w0.scale)[n0];
			rw1 = ((const float *)w1.scale)[n1];
		}
	}

	float acc[2][T], ss[T];
#pragma unroll
	for (int t = 0; t < T; t++)
		ss[t] = acc[0][t] = acc[1][t] = 0.f;
	const bf16x8 *x8 = (const bf16x8 *)p.x, *g8 = (const bf16x8 *)p.g;
	for (int c = c0 + lane; c < c1; c += 32 * U) {
		qf_raw raw[U][2];
#pragma unroll
		for (int u = 0; u < U; u++)
			if (c + 32 * u < c1) {
				qf_load<TYPE>(w0, n0, c + 32 * u, K, raw[u][0]);
				qf_load<TYPE>(w1, n1, c + 32 * u, K, raw[u][1]);
			}
#pragma unroll
		for (int u = 0; u < U; u++) {
			const int cc = c + 32 * u;
			if (cc >= c1)
				break;
			float ca[2][T], cb[2][T], xsum[T];
#pragma unroll
			for (int t = 0; t < T; t++)
				ca[0][t] = ca[1][t] = cb[0][t] = cb[1][t] = xsum[t] = 0.f;
#pragma unroll
			for (int j = 0; j < 4; j++) {
				float v0[8], v1[8], gf[8];
				qf_piece<TYPE>(raw[u][0], cc, j, v0);
				qf_piece<TYPE>(raw[u][1], cc, j, v1);
				if (NORM)
					bf16x8_to_f32(g8[cc * 4 + j], gf);
#pragma unroll
				for (int t = 0; t < T; t++) {
					float xf[8];
					if (AQ) {
						uint2 u2 = *(const uint2 *)(p.xq + (int64_t)t * K + cc * 32 + 8 * j);
						uint32_t ws[2] = {u2.x, u2.y};
#pragma unroll
						for (int h = 0; h < 2; h++) {
							__half2_raw q0 = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(ws[h] & 0xFFFF), __NV_E4M3);
							__half2_raw q1 = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(ws[h] >> 16), __NV_E4M3);
							float2 f0 = __half22float2(*(__half2 *)&q0), f1 = __half22float2(*(__half2 *)&q1);
							xf[4 * h] = f0.x, xf[4 * h + 1] = f0.y, xf[4 * h + 2] = f1.x, xf[4 * h + 3] = f1.y;
						}
					} else {
						bf16x8_to_f32(x8[(int64_t)t * k8 + cc * 4 + j], xf);
					}
					if (NORM) {
#pragma unroll
						for (int i = 0; i < 8; i++) {
							ss[t] += xf[i] * xf[i];
							xf[i] *= gf[i];
						}
					}
					float d0 = 0.f, d1 = 0.f;
#pragma unroll
					for (int i = 0; i < 8; i++) {
						if (MIN)
							xsum[t] += xf[i];
						d0 += v0[i] * xf[i];
						d1 += v1[i] * xf[i];
					}
					if (j < 2) {
						ca[0][t] += d0;
						ca[1][t] += d1;
					} else {
						cb[0][t] += d0;
						cb[1][t] += d1;
					}
				}
			}
			float sa0, sb0, m0, sa1, sb1, m1;
			qf_scales<TYPE>(raw[u][0], cc, sa0, sb0, m0);
			qf_scales<TYPE>(raw[u][1], cc, sa1, sb1, m1);
#pragma unroll
			for (int t = 0; t < T; t++) {
				float f = XM == QF_AQ_GROUP ? p.xs[(int64_t)t * ((K + 127) / 128) + cc / 4] : 1.f;
				acc[0][t] += f * (sa0 * ca[0][t] + sb0 * cb[0][t] - m0 * xsum[t]);
				acc[1][t] += f * (sa1 * ca[1][t] + sb1 * cb[1][t] - m1 * xsum[t]);
			}
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++) {
		if (NORM)
			ss[t] = warp_sum(ss[t]);
		acc[0][t] = warp_sum(acc[0][t]);
		acc[1][t] = warp_sum(acc[1][t]);
	}
	if (S > 1) {
		if (lane == 0) {
#pragma unroll
			for (int t = 0; t < T; t++) {
				part[wp][2 * T + t] = ss[t];
				part[wp][t] = acc[0][t];
				part[wp][T + t] = acc[1][t];
			}
		}
		__syncthreads();
		if (slice)
			return;
		for (int s = 1; s < S; s++) {
#pragma unroll
			for (int t = 0; t < T; t++) {
				ss[t] += part[wp + s][2 * T + t];
				acc[0][t] += part[wp + s][t];
				acc[1][t] += part[wp + s][T + t];
			}
		}
	}
	if (!writer)
		return;
	/* lane t writes token t's results (the sums are the same in every lane) */
	float v0 = 0.f, v1 = 0.f;
#pragma unroll
	for (int t = 0; t < T; t++)
		if (t == lane) {
			float f = NORM ? rsqrtf(ss[t] / K + p.eps) : XM == QF_AQ_TOKEN ? p.xs[t] : 1.f;
			v0 = acc[0][t] * f * rw0;
			v1 = acc[1][t] * f * rw1;
		}
	const int t = lane;
	bf16 *o = p.out + (int64_t)t * p.N;
	if (EPI == FI_FG_ADD) {
		o[n0] = __float2bfloat16(res0 + bf16_round(v0));
		if (second)
			o[n1] = __float2bfloat16(res1 + bf16_round(v1));
	} else if (EPI == FI_FG_GLU) {
		o[n0] = __float2bfloat16(glu_mul1(p.act, bf16_round(v0), bf16_round(v1)));
	} else {
		rope_pair_store(seg, n0, n1, v0, v1, b0, b1, ang, o, p.ro, sl, p.Nk);
	}
}

template <int TYPE, int T, int EPI>
static void qf_by_xm(cudaStream_t st, const qf_params &p, dim3 grid, int xm)
{
	constexpr int B = QF_WARPS * 32;
	if constexpr (TYPE == FI_CQ_FP8) { /* W8A8: the codes of kernels/act_quant.cu */
		if (xm == QF_AQ_TOKEN) {
			qfgemv_kernel<TYPE, T, EPI, QF_AQ_TOKEN><<<grid, B, 0, st>>>(p);
			return;
		}
		if (xm == QF_AQ_GROUP) {
			qfgemv_kernel<TYPE, T, EPI, QF_AQ_GROUP><<<grid, B, 0, st>>>(p);
			return;
		}
	}
	/* weight-only: the residual add takes its input as it is, the products after a norm
	 * the raw residual stream */
	if constexpr (EPI == FI_FG_ADD)
		qfgemv_kernel<TYPE, T, EPI, QF_BF16><<<grid, B, 0, st>>>(p);
	else
		qfgemv_kernel<TYPE, T, EPI, QF_NORM><<<grid, B, 0, st>>>(p);
}

template <int TYPE, int EPI>
static void qf_by_t(cudaStream_t st, const qf_params &p, dim3 grid, int T, int xm)
{
	switch (T) {
	case 1: qf_by_xm<TYPE, 1, EPI>(st, p, grid, xm); break;
	case 2: qf_by_xm<TYPE, 2, EPI>(st, p, grid, xm); break;
	case 3: qf_by_xm<TYPE, 3, EPI>(st, p, grid, xm); break;
	default: qf_by_xm<TYPE, 4, EPI>(st, p, grid, xm); break;
	}
}

/* Launches the items [p.item0, p.item1) of weights of type TYPE (p.S, p.slice_c set). */
template <int TYPE>
static void qf_launch(cudaStream_t st, const qf_params &p, int T, int epi, int xm)
{
	int per = QF_WARPS / p.S, items = p.item1 - p.item0;
	dim3 grid((unsigned)((items + per - 1) / per));
	if (epi == FI_FG_ADD)
		qf_by_t<TYPE, FI_FG_ADD>(st, p, grid, T, xm);
	else if (epi == FI_FG_GLU)
		qf_by_t<TYPE, FI_FG_GLU>(st, p, grid, T, xm);
	else
		qf_by_t<TYPE, FI_FG_ROPE>(st, p, grid, T, xm);
}

/* One entry per type (kernels/gemv_qfused_*.cu), called by kernels/gemv_qfused.cu. */
#define QF_ENTRY(NAME, TYPE)                                                                  \
	extern "C" void NAME(cudaStream_t st, const qf_params *p, int T, int epi, int xm)     \
	{                                                                                     \
		qf_launch<TYPE>(st, *p, T, epi, xm);                                          \
	}
#endif
