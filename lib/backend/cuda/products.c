/* products: the CUDA backend's matmul ops (backend.h): one weight, several over one input
 * (q, k, v; gate, up) as one GEMM where weight_cat or qweight_cat joined them, the gated
 * activation's products, and the f32-out LM head. bf16 weights go to gemm.c's cuBLASLt GEMMs
 * or the decode GEMVs (T <= 4), quantized ones to qweight.c. */
#include "base/settings.h"
#include "cuda_be.h"

fi_err fi_cuda_matmul(struct fi_backend *be, void *out_d, const void *in_d,
		      const struct fi_weight *w, const struct fi_weight *bias, int T)
{
	if (fi_dtype_is_quant(w->dtype)) /* qweight.c, which ends in the bf16 GEMM itself */
		return fi_cuda_qgemm(be, out_d, 0, in_d, w, bias, T);
	return fi_cuda_gemm(be, out_d, 0, in_d, w, bias, T);
}

/* 1 when b's rows follow a's in one allocation (parts made by weight_cat). */
static int adjacent(const struct fi_weight *a, const struct fi_weight *b)
{
	return (const char *)b->p == (const char *)a->p + a->rows * a->cols * 2;
}

/* Decode: one weight-streaming launch over all parts. Up to 256 rows (FI_QKV_CAT_T), parts
 * adjacent in memory (weight_cat) and no bias: one GEMM over the whole weight into multi_ws,
 * then a split; the K/V projections alone are too small to run near the bandwidth. Otherwise
 * a matmul each. (At 512 rows of the 8B shape the separate k and v GEMMs still ran 64 x 64
 * tiles, 13 us each against 41 for q: FI_QKV_CAT_T times the joined GEMM and its split there.) */
fi_err fi_cuda_matmul_multi(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			    const struct fi_weight *const *w, const struct fi_weight *const *bias,
			    int T)
{
	struct fi_cuda *c = fi_cuda_of(be);
	const void *wp[4], *bp[4];
	/* FI_FUSE=kv: the first part (q) alone, the rest (k, v) fused; gate/up then separate */
	int first = c->fuse_mode == 2 ? 1 : 0;
	int N[4], contiguous = 1, any_bias = 0;
	int64_t Nt = 0;
	fi_err e;
	if (n < 1 || n > 4)
		return fi_fail(FI_EINVAL, "matmul_multi: %d weights", n);
	for (int i = 0; i < n; i++)
		if (fi_dtype_is_quant(w[i]->dtype)) /* quantized: qweight.c, one input */
			return fi_cuda_qgemm_multi(be, n, out_d, in_d, w, bias, T, NULL);
	for (int i = 0; i < n; i++) {
		if (w[i]->dtype != FI_DT_BF16)
			return fi_fail(FI_EUNSUPPORTED, "matmul: weight dtype %s",
				       fi_dtype_name(w[i]->dtype));
		if (w[i]->cols != w[0]->cols || w[i]->rows > INT32_MAX)
			return fi_fail(FI_EMISMATCH, "matmul_multi: weight %d is %lld x %lld", i,
				       (long long)w[i]->rows, (long long)w[i]->cols);
		if (bias && bias[i] && (bias[i]->rows * bias[i]->cols != w[i]->rows ||
					bias[i]->dtype != FI_DT_BF16))
			return fi_fail(FI_EMISMATCH, "matmul: bias of %lld values for %lld outputs",
				       (long long)(bias[i]->rows * bias[i]->cols), (long long)w[i]->rows);
		wp[i] = w[i]->p;
		bp[i] = bias && bias[i] ? bias[i]->p : NULL;
		any_bias |= bp[i] != NULL;
		N[i] = (int)w[i]->rows;
		Nt += i >= first ? w[i]->rows : 0;
		if (i > first && !adjacent(w[i - 1], w[i]))
			contiguous = 0;
	}
	if (T <= 0)
		return FI_OK;
	if (T <= 4 && !c->no_gemv && w[0]->cols <= INT32_MAX) {
		e = fi_cu_gemv_multi(c->stream, n, out_d, in_d, wp, bp, N, T, (int)w[0]->cols);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	const int cat_t = fi_settings()->qkv_cat_t > 0 ? fi_settings()->qkv_cat_t : 256;
	if (n - first > 1 && contiguous && !any_bias && c->fuse_mode && T <= cat_t &&
	    Nt <= INT32_MAX && (size_t)T * (size_t)Nt * 2 <= FI_MULTI_WS_BYTES) {
		struct fi_weight all = {.p = w[first]->p, .dtype = FI_DT_BF16, .rows = Nt,
					.cols = w[0]->cols};
		if (first && (e = fi_cuda_gemm(be, out_d[0], 0, in_d, w[0], NULL, T)))
			return e;
		if ((e = fi_cuda_gemm(be, c->multi_ws, 0, in_d, &all, NULL, T)))
			return e;
		return fi_cu_split(c->stream, n - first, out_d + first, c->multi_ws, N + first, T);
	}
	for (int i = 0; i < n; i++)
		if ((e = fi_cuda_gemm(be, out_d[i], 0, in_d, w[i], bias ? bias[i] : NULL, T)))
			return e;
	return FI_OK;
}

/* The gated activation over unit-scale W8A8 gate and up (rows ld apart); with FI_FP8_FOLD and
 * per-token inputs it also writes out's codes for the down product (fi_cuda_xq_claim). */
static fi_err glu_scaled(struct fi_cuda *c, void *out_d, const void *g, const void *u,
			 const float *wg, const float *wu, const float *xs, int T, int F,
			 int64_t ld, int aq)
{
	void *codes;
	float *scales;
	if (aq == FI_AQ_TOKEN && fi_cuda_xq_claim(c, out_d, T, F, &codes, &scales) == FI_OK) {
		fi_err e = fi_cu_silu_mul_scaled_q(c->stream, out_d, g, u, wg, wu, xs, T, F, ld,
						   codes, scales);
		if (e != FI_EUNSUPPORTED)
			return e;
		c->xq_has.x = NULL;
	}
	return fi_cu_silu_mul_scaled(c->stream, out_d, g, u, wg, wu, xs, T, F, ld);
}

fi_err fi_cuda_matmul_glu(struct fi_backend *be, void *out_d, void *gate_d, void *up_d,
			  const void *in_d, const struct fi_weight *gate,
			  const struct fi_weight *up, int T)
{
	struct fi_cuda *c = fi_cuda_of(be);
	void *const o2[] = {gate_d, up_d};
	const struct fi_weight *const w2[] = {gate, up};
	fi_err e;
	if ((fi_dtype_is_quant(gate->dtype) || fi_dtype_is_quant(up->dtype)) &&
	    gate->rows == up->rows && gate->rows <= INT32_MAX) {
		/* W8A8 prompts: the scales applied as silu_mul reads gate and up; joined FP8
		 * parts (fi_cuda_qweight_cat) as one product [T, 2F] read in place */
		struct fi_fp8_deferred d[2] = {{0}, {0}};
		const int F = (int)gate->rows;
		e = fi_cuda_qgemm_cat(be, 2, in_d, w2, T, d);
		if (e == FI_OK && d[0].out)
			return glu_scaled(c, out_d, c->multi_ws, (const uint16_t *)c->multi_ws + F,
					  d[0].ws, d[0].ws + F, d[0].xs, T, F, 2 * (int64_t)F,
					  gate->aq);
		if (e == FI_OK)
			return fi_cu_silu_mul_cat(c->stream, out_d, c->multi_ws, T, F);
		if (e != FI_EUNSUPPORTED)
			return e;
		if ((e = fi_cuda_qgemm_multi(be, 2, o2, in_d, w2, NULL, T, d)))
			return e;
		if (d[0].out && d[1].out && d[0].xs == d[1].xs)
			return glu_scaled(c, out_d, gate_d, up_d, d[0].ws, d[1].ws, d[0].xs, T, F, F,
					  gate->aq);
		for (int i = 0; i < 2; i++)
			if (d[i].out &&
			    (e = fi_cu_scale_outer(c->stream, d[i].out, d[i].ws, d[i].xs, T, d[i].N)))
				return e;
		return fi_cu_silu_mul(c->stream, out_d, gate_d, up_d, T, (int)gate->rows);
	}
	if (gate->dtype != FI_DT_BF16 || up->dtype != FI_DT_BF16 || gate->rows != up->rows ||
	    gate->cols != up->cols || gate->rows > INT32_MAX || gate->cols > INT32_MAX)
		return fi_fail(FI_EMISMATCH, "matmul_glu: gate %lld x %lld, up %lld x %lld",
			       (long long)gate->rows, (long long)gate->cols, (long long)up->rows,
			       (long long)up->cols);
	if (T <= 0)
		return FI_OK;
	if (T <= 4 && !c->no_gemv && !c->no_glu) {
		e = fi_cu_gemv_glu(c->stream, out_d, in_d, gate->p, up->p, T, (int)gate->rows,
				   (int)gate->cols);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	/* Weights joined by weight_cat: one GEMM [T, 2F] whose halves silu_mul reads in
	 * place, without the split into gate_d and up_d (at 256 rows of the 8B shape, 29 MB
	 * of copies a layer). FI_FUSE=0 and =kv keep gate and up apart. */
	if (c->fuse_mode == 1 && gate->rows <= INT32_MAX / 2 && adjacent(gate, up) &&
	    (size_t)T * (size_t)gate->rows * 4 <= FI_MULTI_WS_BYTES) {
		struct fi_weight all = {.p = gate->p, .dtype = FI_DT_BF16, .rows = 2 * gate->rows,
					.cols = gate->cols};
		if ((e = fi_cuda_gemm(be, c->multi_ws, 0, in_d, &all, NULL, T)))
			return e;
		return fi_cu_silu_mul_cat(c->stream, out_d, c->multi_ws, T, (int)gate->rows);
	}
	if ((e = fi_cuda_matmul_multi(be, 2, o2, in_d, w2, NULL, T)))
		return e;
	return fi_cu_silu_mul(c->stream, out_d, gate_d, up_d, T, (int)gate->rows);
}

fi_err fi_cuda_matmul_f32out(struct fi_backend *be, float *out_d, const void *in_d,
			     const struct fi_weight *w, int T)
{
	if (fi_dtype_is_quant(w->dtype))
		return fi_cuda_qgemm(be, out_d, 1, in_d, w, NULL, T);
	return fi_cuda_gemm(be, out_d, 1, in_d, w, NULL, T);
}
