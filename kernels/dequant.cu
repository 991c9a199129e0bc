/* dequant: rows of a quantized weight to bf16 (prefill through the bf16 GEMM, and the rows of
 * a quantized embedding), with the operations of base/quant.c (kernels/qchunk.cuh). One
 * thread per 32-column chunk; an act-order INT4 row is scattered back to input order. */
#include "qchunk.cuh"

template <int TYPE>
__global__ void dequant_kernel(const fi_cu_qw w, bf16 *__restrict__ out,
			       const int32_t *__restrict__ rows, int n)
{
	const int nc = (int)(w.cols / 32);
	const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)n * nc)
		return;
	const int r = (int)(i / nc), c = (int)(i % nc);
	const int64_t src = rows ? rows[r] : r;
	float v[32];
	bf16 *o = out + (int64_t)r * w.cols;
	if (src < 0 || src >= w.rows) { /* an id the caller did not check: zeros, not a fault */
		for (int k = 0; k < 32; k++)
			o[c * 32 + k] = __float2bfloat16(0.f);
		return;
	}
	qchunk<TYPE>(w, src, c, v);
	if (TYPE == FI_CQ_FP8 && w.kind == FI_Q8_ROW) {
		float s = ((const float *)w.scale)[src];
#pragma unroll
		for (int k = 0; k < 32; k++)
			v[k] *= s;
	}
	if (TYPE == FI_CQ_INT4 && w.perm) {
#pragma unroll
		for (int k = 0; k < 32; k++)
			o[w.perm[c * 32 + k]] = __float2bfloat16(v[k]);
		return;
	}
	bf16x8 *ov = (bf16x8 *)(o + c * 32);
#pragma unroll
	for (int j = 0; j < 4; j++)
		ov[j] = f32_to_bf16x8(v + 8 * j);
}

template <int TYPE>
static void launch(cudaStream_t st, bf16 *out, const fi_cu_qw &w, const int32_t *rows, int n)
{
	int64_t total = (int64_t)n * (w.cols / 32);
	dequant_kernel<TYPE><<<(unsigned)((total + 255) / 256), 256, 0, st>>>(w, out, rows, n);
}

extern "C" fi_err fi_cu_dequant(cudaStream_t st, void *out, const struct fi_cu_qw *w,
				const int32_t *rows, int n)
{
	bf16 *o = (bf16 *)out;
	if (n <= 0)
		return FI_OK;
	if (w->cols % 32 || !fi_aligned16(out))
		return fi_fail(FI_EUNSUPPORTED, "dequant: %lld columns (multiples of 32)",
			       (long long)w->cols);
	switch (w->type) {
	case FI_CQ_INT4: launch<FI_CQ_INT4>(st, o, *w, rows, n); break;
	case FI_CQ_I8: launch<FI_CQ_I8>(st, o, *w, rows, n); break;
	case FI_CQ_FP8: launch<FI_CQ_FP8>(st, o, *w, rows, n); break;
	case FI_CQ_Q4K: launch<FI_CQ_Q4K>(st, o, *w, rows, n); break;
	case FI_CQ_Q5K: launch<FI_CQ_Q5K>(st, o, *w, rows, n); break;
	case FI_CQ_Q6K: launch<FI_CQ_Q6K>(st, o, *w, rows, n); break;
	default: return fi_fail(FI_EUNSUPPORTED, "dequant: layout %d", w->type);
	}
	LAUNCH_CHECK();
	return FI_OK;
}
