/* cpu_matmul: linear layers through OpenBLAS: out[T,N] = in[T,K] @ w[N,K]^T (+ bias). */
#include "cpu.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "base/quant.h"

static void gemm(float *out, const float *in, const struct fi_weight *w, int T)
{
	int N = (int)w->rows, K = (int)w->cols;
	if (T == 1) /* one token (decode): a matrix-vector product is the faster kernel */
		cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w->p, K, in, 1, 0.0f, out, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, N, K, 1.0f, in, K, w->p, K,
			    0.0f, out, N);
}

fi_err fi_cpu_matmul(struct fi_backend *be, void *out_d, const void *in_d,
		     const struct fi_weight *w, const struct fi_weight *bias, int T)
{
	float *out = out_d;
	int N = (int)w->rows;
	if (w->dtype == FI_DT_TQ2 || w->dtype == FI_DT_BF16) {
		fi_err e = FI_OK;
		if (T > 0)
			e = w->dtype == FI_DT_TQ2 ? fi_cpu_tq2_matmul(be, out, in_d, w, T)
						  : fi_cpu_bf16_matmul(be, out, in_d, w, T);
		if (e)
			return e;
		goto bias;
	}
	if (w->dtype != FI_DT_F32)
		return fi_fail(FI_EUNSUPPORTED, "matmul: weight dtype %s", fi_dtype_name(w->dtype));
	if (bias && bias->rows * bias->cols != N)
		return fi_fail(FI_EMISMATCH, "matmul: bias has %lld elements for %d outputs",
			       (long long)(bias->rows * bias->cols), N);
	if (T <= 0)
		return FI_OK;
	if (w->aq) {
		/* W8A8: the product sees its input rounded to e4m3 (quant.h), as the GPU's FP8
		 * GEMM does; the input itself is left as it is (q, k and v share it). */
		size_t n = (size_t)T * (size_t)w->cols;
		float *r = malloc(n * sizeof *r);
		if (!r)
			return fi_fail(FI_ENOMEM, "matmul: %zu activations", n);
		memcpy(r, in_d, n * sizeof *r);
		if (be->aq_bf16)
			for (size_t i = 0; i < n; i++)
				r[i] = fi_bf16_to_f32(fi_f32_to_bf16(r[i]));
		fi_quant_act_round(r, T, w->cols, w->aq);
		gemm(out, r, w, T);
		free(r);
	} else {
		gemm(out, in_d, w, T);
	}
bias:
	if (bias && T > 0) {
		const float *b = bias->p;
		for (int t = 0; t < T; t++)
			for (int n = 0; n < N; n++)
				out[(size_t)t * N + n] += b[n];
	}
	return FI_OK;
}

fi_err fi_cpu_matmul_f32out(struct fi_backend *be, float *out_d, const void *in_d,
			    const struct fi_weight *w, int T)
{
	return fi_cpu_matmul(be, out_d, in_d, w, NULL, T);
}
