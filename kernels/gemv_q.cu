/* gemv_q: out[T,N] = x[T,K] W^T (+ bias) for T <= 4 tokens and a quantized W (decode).
 *
 * As kernels/gemv.cu for bf16: a warp per row, the row streamed once for all T tokens, but
 * in chunks of 32 columns (kernels/qchunk.cuh): lane i decodes chunks i, i + 32, ... into
 * registers and takes their dot products with x, so the packed bytes are what crosses the
 * memory bus (FP8 1 byte a weight, INT4 and Q4_K about 0.56, Q6_K 0.82). Scales are read
 * once per chunk; a per-row FP8 scale once per row. One token of a weight-only type takes
 * gemv_q1 (several rows a warp).
 *
 * W8A8 (FP8 with aq): x arrives as e4m3 codes with their scales (kernels/act_quant.cu), and
 * each chunk's dot product is scaled by its token's (and 128-column group's) scale, which is
 * the product of the rounded input the CPU twin computes, summed in another order. */
#include "qchunk.cuh"

#define GQ_WARPS 8

template <int TYPE, int T, bool F32OUT, int AQ>
__global__ void __launch_bounds__(GQ_WARPS * 32)
gemv_q_kernel(const fi_cu_qw w, const bf16 *__restrict__ x, const uint8_t *__restrict__ xq,
	      const float *__restrict__ xs, const bf16 *__restrict__ bias, void *out)
{
	const int lane = threadIdx.x & 31;
	const int64_t n = (int64_t)blockIdx.x * GQ_WARPS + (threadIdx.x >> 5);
	const int K = (int)w.cols, nc = K / 32, ng = (K + 127) / 128;
	float acc[T];
	if (n >= w.rows)
		return;
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = 0.f;
	for (int c = lane; c < nc; c += 32) {
		float v[32];
		qchunk<TYPE>(w, n, c, v);
#pragma unroll
		for (int t = 0; t < T; t++) {
			float d = 0.f;
			if (AQ) {
				uint4 u[2] = {*(const uint4 *)(xq + (int64_t)t * K + c * 32),
					      *(const uint4 *)(xq + (int64_t)t * K + c * 32 + 16)};
				const uint8_t *b = (const uint8_t *)u;
#pragma unroll
				for (int i = 0; i < 32; i++)
					d += v[i] * e4m3f(b[i]);
				if (AQ == FI_AQ_GROUP)
					d *= xs[(int64_t)t * ng + c / 4];
			} else {
				const bf16x8 *xr = (const bf16x8 *)(x + (int64_t)t * K + c * 32);
#pragma unroll
				for (int j = 0; j < 4; j++) {
					float xf[8];
					bf16x8_to_f32(xr[j], xf);
#pragma unroll
					for (int i = 0; i < 8; i++)
						d += v[8 * j + i] * xf[i];
				}
			}
			acc[t] += d;
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = warp_sum(acc[t]);
	if (lane)
		return;
	float rs = TYPE == FI_CQ_FP8 && w.kind == FI_Q8_ROW ? ((const float *)w.scale)[n] : 1.f;
	float b = bias ? __bfloat162float(bias[n]) : 0.f;
#pragma unroll
	for (int t = 0; t < T; t++) {
		float r = acc[t] * rs * (AQ == FI_AQ_TOKEN ? xs[t] : 1.f) + b;
		if (F32OUT)
			((float *)out)[(int64_t)t * w.rows + n] = r;
		else
			((bf16 *)out)[(int64_t)t * w.rows + n] = __float2bfloat16(r);
	}
}

/* One token (decode at batch 1) of a weight-only type: each warp takes GQ_ROWS rows, so
 * the token's 32 columns of a chunk are read and converted once for all of them (the
 * kernel above reads them once per row: four times the weight's bytes through L1 for INT4),
 * and a lane has GQ_ROWS independent weight loads in flight instead of one. */
#define GQ_ROWS 4

template <int TYPE, bool F32OUT>
__global__ void __launch_bounds__(GQ_WARPS * 32, 2) /* 2 CTAs an SM: 16 warps streaming */
gemv_q1_kernel(const fi_cu_qw w, const bf16 *__restrict__ x, const bf16 *__restrict__ bias,
	       void *out)
{
	const int lane = threadIdx.x & 31;
	const int64_t n0 = ((int64_t)blockIdx.x * GQ_WARPS + (threadIdx.x >> 5)) * GQ_ROWS;
	const int nc = (int)w.cols / 32;
	float acc[GQ_ROWS];
	if (n0 >= w.rows)
		return;
#pragma unroll
	for (int r = 0; r < GQ_ROWS; r++)
		acc[r] = 0.f;
	for (int c = lane; c < nc; c += 32) {
		float xf[32];
		const bf16x8 *xr = (const bf16x8 *)(x + c * 32);
#pragma unroll
		for (int j = 0; j < 4; j++)
			bf16x8_to_f32(xr[j], xf + 8 * j);
#pragma unroll
		for (int r = 0; r < GQ_ROWS; r++) {
			/* rows past the end read the last row (no branch between the loads of the
			 * rows, so they are all issued first); their sums are not written */
			float v[32], d = 0.f;
			qchunk<TYPE>(w, n0 + r < w.rows ? n0 + r : w.rows - 1, c, v);
#pragma unroll
			for (int i = 0; i < 32; i++)
				d += v[i] * xf[i];
			acc[r] += d;
		}
	}
#pragma unroll
	for (int r = 0; r < GQ_ROWS; r++)
		acc[r] = warp_sum(acc[r]);
	if (lane)
		return;
#pragma unroll
	for (int r = 0; r < GQ_ROWS; r++) {
		const int64_t n = n0 + r;
		if (n >= w.rows)
			break;
		float rs = TYPE == FI_CQ_FP8 && w.kind == FI_Q8_ROW ? ((const float *)w.scale)[n] : 1.f;
		float res = acc[r] * rs + (bias ? __bfloat162float(bias[n]) : 0.f);
		if (F32OUT)
			((float *)out)[n] = res;
		else
			((bf16 *)out)[n] = __float2bfloat16(res);
	}
}

template <int TYPE, int T, int AQ>
static void launch(cudaStream_t st, void *out, int f32, const fi_cu_qw &w, const void *x,
		   const void *xq, const float *xs, const void *bias)
{
	if (T == 1 && !AQ) {
		const int64_t per = GQ_WARPS * GQ_ROWS;
		dim3 g1((unsigned)((w.rows + per - 1) / per));
		if (f32)
			gemv_q1_kernel<TYPE, true><<<g1, GQ_WARPS * 32, 0, st>>>(
				w, (const bf16 *)x, (const bf16 *)bias, out);
		else
			gemv_q1_kernel<TYPE, false><<<g1, GQ_WARPS * 32, 0, st>>>(
				w, (const bf16 *)x, (const bf16 *)bias, out);
		return;
	}
	dim3 grid((unsigned)((w.rows + GQ_WARPS - 1) / GQ_WARPS));
	if (f32)
		gemv_q_kernel<TYPE, T, true, AQ><<<grid, GQ_WARPS * 32, 0, st>>>(
			w, (const bf16 *)x, (const uint8_t *)xq, xs, (const bf16 *)bias, out);
	else
		gemv_q_kernel<TYPE, T, false, AQ><<<grid, GQ_WARPS * 32, 0, st>>>(
			w, (const bf16 *)x, (const uint8_t *)xq, xs, (const bf16 *)bias, out);
}

template <int TYPE, int AQ>
static void by_t(cudaStream_t st, void *out, int f32, const fi_cu_qw &w, const void *x,
		 const void *xq, const float *xs, const void *bias, int T)
{
	switch (T) {
	case 1: launch<TYPE, 1, AQ>(st, out, f32, w, x, xq, xs, bias); break;
	case 2: launch<TYPE, 2, AQ>(st, out, f32, w, x, xq, xs, bias); break;
	case 3: launch<TYPE, 3, AQ>(st, out, f32, w, x, xq, xs, bias); break;
	default: launch<TYPE, 4, AQ>(st, out, f32, w, x, xq, xs, bias); break;
	}
}

extern "C" fi_err fi_cu_gemv_q(cudaStream_t st, void *out, int out_f32, const struct fi_cu_qw *w,
			       const void *x, const void *xq, const float *xs, int aq,
			       const void *bias, int T)
{
	if (T < 1 || T > 4 || w->cols % 32 || w->rows < 1 || (aq && w->type != FI_CQ_FP8) ||
	    (aq ? !xq || !xs || !fi_aligned16(xq) : !fi_aligned16(x)))
		return FI_EUNSUPPORTED;
	switch (w->type) {
	case FI_CQ_INT4: by_t<FI_CQ_INT4, 0>(st, out, out_f32, *w, x, xq, xs, bias, T); break;
	case FI_CQ_I8: by_t<FI_CQ_I8, 0>(st, out, out_f32, *w, x, xq, xs, bias, T); break;
	case FI_CQ_Q4K: by_t<FI_CQ_Q4K, 0>(st, out, out_f32, *w, x, xq, xs, bias, T); break;
	case FI_CQ_Q5K: by_t<FI_CQ_Q5K, 0>(st, out, out_f32, *w, x, xq, xs, bias, T); break;
	case FI_CQ_Q6K: by_t<FI_CQ_Q6K, 0>(st, out, out_f32, *w, x, xq, xs, bias, T); break;
	case FI_CQ_FP8:
		if (aq == FI_AQ_TOKEN)
			by_t<FI_CQ_FP8, FI_AQ_TOKEN>(st, out, out_f32, *w, x, xq, xs, bias, T);
		else if (aq == FI_AQ_GROUP)
			by_t<FI_CQ_FP8, FI_AQ_GROUP>(st, out, out_f32, *w, x, xq, xs, bias, T);
		else
			by_t<FI_CQ_FP8, 0>(st, out, out_f32, *w, x, xq, xs, bias, T);
		break;
	default: return FI_EUNSUPPORTED;
	}
	LAUNCH_CHECK();
	return FI_OK;
}
