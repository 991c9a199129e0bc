/* fused: the CUDA backend's decode fusions (backend.h: norm_qkv_rope, matmul_add, norm_glu)
 * over kernels/gemv_fused.cu (bf16 weights) and kernels/gemv_qfused.cu (quantized ones; FP8
 * W8A8 weights get their input codes, normalised where the op has a norm, from one
 * act_quant launch before the product). Each checks what the kernel assumes and says what it
 * refused; model.c only asks for them on batches of at most be->fuse_max_T tokens and shapes
 * it has checked (widths multiple of 8, even head size, quantized weights be->fuse_quant
 * names). */
#include <stdlib.h>
#include <string.h>

#include "cuda_be.h"

static fi_err bf16_weight(const struct fi_weight *w, int64_t rows, int64_t cols, const char *op,
			  const char *what)
{
	if (w->dtype != FI_DT_BF16 || w->rows != rows || w->cols != cols)
		return fi_fail(FI_EMISMATCH, "%s: %s is %s %lld x %lld, expected bf16 %lld x %lld",
			       op, what, fi_dtype_name(w->dtype), (long long)w->rows,
			       (long long)w->cols, (long long)rows, (long long)cols);
	return FI_OK;
}

/* A norm weight or bias: n values as 1 x n (or n x 1). */
static fi_err bf16_vector(const struct fi_weight *w, int64_t n, const char *op, const char *what)
{
	if (w->dtype != FI_DT_BF16 || w->rows * w->cols != n)
		return fi_fail(FI_EMISMATCH, "%s: %s has %lld %s values, expected %lld bf16", op,
			       what, (long long)(w->rows * w->cols), fi_dtype_name(w->dtype),
			       (long long)n);
	return FI_OK;
}

/* A quantized weight of rows x cols of the kinds gemv_qfused takes. */
static fi_err q_weight(const struct fi_weight *w, int64_t rows, int64_t cols, const char *op,
		       const char *what)
{
	if (!fi_dtype_is_quant(w->dtype) || w->dtype == FI_DT_TQ2 || w->q.perm ||
	    w->rows != rows || w->cols != cols)
		return fi_fail(FI_EMISMATCH, "%s: %s is %s %lld x %lld%s, expected a quantized "
			       "%lld x %lld", op, what, fi_dtype_name(w->dtype), (long long)w->rows,
			       (long long)w->cols, w->q.perm ? " in act-order" : "",
			       (long long)rows, (long long)cols);
	return FI_OK;
}

/* A layer weight of the fused products: bf16, or quantized (quant) of the kinds
 * gemv_qfused takes. */
static fi_err layer_weight(const struct fi_weight *w, int quant, int64_t rows, int64_t cols,
			   const char *op, const char *what)
{
	return quant ? q_weight(w, rows, cols, op, what) : bf16_weight(w, rows, cols, op, what);
}

/* The input of the quantized product a: x as it is (with the norm applied by the kernel),
 * or for W8A8 its e4m3 codes, normalised first when norm is given. */
static fi_err q_input(struct fi_backend *be, struct fi_cu_qfgemv *a, const struct fi_weight *w,
		      const void *x_d, const struct fi_weight *norm, float eps, int T)
{
	a->eps = eps;
	if (!w->aq) {
		a->x = x_d;
		a->g = norm ? norm->p : NULL;
		return FI_OK;
	}
	a->aq = w->aq;
	return fi_cuda_qcodes(be, w, x_d, norm ? norm->p : NULL, eps, T, &a->xq, &a->xs);
}

static fi_err q_run(struct fi_backend *be, struct fi_cu_qfgemv *a, int T, const char *op)
{
	if (T <= 0)
		return FI_OK;
	fi_err e = fi_cu_qfgemv(fi_cuda_of(be)->stream, a, T);
	if (e == FI_EUNSUPPORTED)
		return fi_fail(e, "%s: %d tokens of width %d with %s weights: not a fused product",
			       op, T, a->K, a->w[0].type == FI_CQ_FP8 ? "FP8" : "quantized");
	return e;
}

/* The rotation and the cache of layer for the ROPE products. */
static struct fi_cu_rope_out rope_out(const struct fi_rope *r, struct fi_kv_cache *kv, int layer,
				      const struct fi_attn_batch *b)
{
	return (struct fi_cu_rope_out){b->tok_pos_d, b->slot_d, r->inv_freq_d, kv->k_d[layer],
				       kv->v_d[layer], (int64_t)kv->n_blocks * kv->block_size,
				       kv->head_dim};
}

static fi_err run(struct fi_backend *be, struct fi_cu_fgemv *a, int T, const char *op)
{
	if (T <= 0)
		return FI_OK;
	fi_err e = fi_cu_fgemv(fi_cuda_of(be)->stream, a, T);
	if (e == FI_EUNSUPPORTED)
		return fi_fail(e, "%s: %d tokens of width %d: not a decode-sized, 16-byte aligned "
			       "batch", op, T, a->K);
	return e;
}

/* norm_qkv_rope over quantized q, k, v (one activation rounding for the three), shapes and
 * biases checked by the caller. */
static fi_err q_norm_qkv_rope(struct fi_backend *be, void *q_d, const void *x_d,
			      const struct fi_weight *norm, float eps,
			      const struct fi_weight *const *w3, const void *const *bias,
			      const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
			      const struct fi_attn_batch *b)
{
	const char *op = "norm_qkv_rope";
	int hd = kv->head_dim;
	struct fi_cu_qfgemv a = {.epi = FI_FG_ROPE};
	fi_err e;
	if (w3[1]->aq != w3[0]->aq || w3[2]->aq != w3[0]->aq)
		return fi_fail(FI_EMISMATCH, "%s: q, k and v round their input differently", op);
	for (int i = 0; i < 3; i++) {
		a.w[i] = fi_cuda_qw(w3[i]);
		a.bias[i] = bias[i];
	}
	if ((e = q_input(be, &a, w3[0], x_d, norm, eps, b->n_tokens)))
		return e;
	a.out = q_d;
	a.N = Hq * hd;
	a.Nk = kv->n_kv_heads * hd;
	a.K = (int)w3[0]->cols;
	a.ro = rope_out(r, kv, layer, b);
	return q_run(be, &a, b->n_tokens, op);
}

/* norm_qkv_rope over ternary q, k, v (BitNet decode): one launch that normalises and
 * quantizes x itself (kernels/gemv_tq2.cu); where it does not fit, norm_matmul's products
 * into scratch, then rope_kv_write. */
static fi_err tq2_norm_qkv_rope(struct fi_backend *be, void *q_d, const void *x_d,
				const struct fi_weight *norm, float eps,
				const struct fi_weight *const *w3, const struct fi_weight *const *b3,
				const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
				const struct fi_attn_batch *b)
{
	const char *op = "norm_qkv_rope";
	struct fi_cuda *c = fi_cuda_of(be);
	int hd = kv->head_dim, Nk = kv->n_kv_heads * hd, T = b->n_tokens;
	int64_t D = w3[0]->cols;
	struct fi_cu_rope_out ro = rope_out(r, kv, layer, b);
	fi_err e;
	if ((e = bf16_vector(norm, D, op, "norm")))
		return e;
	for (int i = 0; i < 3; i++)
		if (w3[i]->dtype != FI_DT_TQ2 || w3[i]->cols != D || (b3 && b3[i]) ||
		    w3[i]->rows != (i ? Nk : (int64_t)Hq * hd))
			return fi_fail(FI_EMISMATCH, "%s: ternary q, k, v of %d and %d rows without "
				       "biases expected", op, Hq * hd, Nk);
	if (T <= 0)
		return FI_OK;
	if (!c->no_gemv && T <= 4 && D <= INT32_MAX) {
		struct fi_cu_qw qw[3] = {fi_cuda_qw(w3[0]), fi_cuda_qw(w3[1]), fi_cuda_qw(w3[2])};
		const void *q[3] = {qw[0].q, qw[1].q, qw[2].q};
		const float *sc[3] = {qw[0].scale, qw[1].scale, qw[2].scale};
		int N[3] = {Hq * hd, Nk, Nk};
		e = fi_cu_gemv_tq2x_rope(c->stream, q_d, q, sc, N, x_d, norm->p, eps, &ro, (int)D, T);
		if (e != FI_EUNSUPPORTED)
			return e;
	}
	/* the ops apart: k, v and the normalised x in matmul_multi's scratch (the products of
	 * ternary weights use c->deq, and quantized ones never the multi scratch) */
	{
		size_t kb = (size_t)T * (size_t)Nk * 2, xb = (size_t)T * (size_t)D * 2;
		uint8_t *k = c->multi_ws, *v = k + kb, *tmp = v + kb;
		void *const o3[] = {q_d, k, v};
		if (2 * kb + xb > FI_MULTI_WS_BYTES)
			return fi_fail(FI_ESTATE, "%s: no scratch for %d tokens", op, T);
		if ((e = be->ops->norm_matmul(be, 3, o3, x_d, NULL, tmp, norm, eps, w3, 0, T)))
			return e;
		return be->ops->rope_kv_write(be, q_d, k, v, r, kv, layer, Hq, b);
	}
}

fi_err fi_cuda_norm_qkv_rope(struct fi_backend *be, void *q_d, const void *x_d,
			     const struct fi_weight *norm, float eps,
			     const struct fi_weight *const *w3, const struct fi_weight *const *b3,
			     const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
			     const struct fi_attn_batch *b)
{
	const char *op = "norm_qkv_rope";
	int hd = kv->head_dim, Nk = kv->n_kv_heads * hd;
	int64_t D = w3[0]->cols;
	int quant = fi_dtype_is_quant(w3[0]->dtype);
	const void *bias[3] = {NULL, NULL, NULL};
	struct fi_cu_fgemv a = {.epi = FI_FG_ROPE};
	fi_err e;
	if (layer < 0 || layer >= kv->n_layers)
		return fi_fail(FI_ERANGE, "%s: layer %d of %d", op, layer, kv->n_layers);
	if (r->head_dim != hd)
		return fi_fail(FI_EMISMATCH, "%s: head size %d, cache %d", op, r->head_dim, hd);
	if (r->q_norm || r->k_norm)
		return fi_fail(FI_EUNSUPPORTED, "%s: q/k norms are rope_kv_write's", op);
	if (w3[0]->dtype == FI_DT_TQ2)
		return tq2_norm_qkv_rope(be, q_d, x_d, norm, eps, w3, b3, r, kv, layer, Hq, b);
	if ((e = bf16_vector(norm, D, op, "norm")) ||
	    (e = layer_weight(w3[0], quant, (int64_t)Hq * hd, D, op, "q")) ||
	    (e = layer_weight(w3[1], quant, Nk, D, op, "k")) ||
	    (e = layer_weight(w3[2], quant, Nk, D, op, "v")))
		return e;
	for (int i = 0; b3 && i < 3; i++)
		if (b3[i]) {
			if ((e = bf16_vector(b3[i], w3[i]->rows, op, "bias")))
				return e;
			bias[i] = b3[i]->p;
		}
	if (quant)
		return q_norm_qkv_rope(be, q_d, x_d, norm, eps, w3, bias, r, kv, layer, Hq, b);
	for (int i = 0; i < 3; i++) {
		a.w[i] = w3[i]->p;
		a.bias[i] = bias[i];
	}
	a.x = x_d;
	a.g = norm->p;
	a.eps = eps;
	a.out = q_d;
	a.N = Hq * hd;
	a.Nk = Nk;
	a.K = (int)D;
	a.ro = rope_out(r, kv, layer, b);
	return run(be, &a, b->n_tokens, op);
}

fi_err fi_cuda_matmul_add(struct fi_backend *be, void *x_d, const void *in_d,
			  const struct fi_weight *w, int T)
{
	int quant = fi_dtype_is_quant(w->dtype);
	struct fi_cu_fgemv a = {.epi = FI_FG_ADD};
	fi_err e;
	if ((e = layer_weight(w, quant, w->rows, w->cols, "matmul_add", "weight")))
		return e;
	if (quant) {
		struct fi_cu_qfgemv qa = {.epi = FI_FG_ADD};
		if (T > 0 && (e = q_input(be, &qa, w, in_d, NULL, 0.f, T)))
			return e;
		qa.w[0] = fi_cuda_qw(w);
		qa.out = x_d;
		qa.N = (int)w->rows;
		qa.K = (int)w->cols;
		return q_run(be, &qa, T, "matmul_add");
	}
	a.w[0] = w->p;
	a.x = in_d;
	a.out = x_d;
	a.N = (int)w->rows;
	a.K = (int)w->cols;
	return run(be, &a, T, "matmul_add");
}

fi_err fi_cuda_norm_glu(struct fi_backend *be, void *out_d, const void *x_d,
			const struct fi_weight *norm, float eps, const struct fi_weight *gate,
			const struct fi_weight *up, enum fi_glu_act act, int T)
{
	const char *op = "norm_glu";
	int quant = fi_dtype_is_quant(gate->dtype);
	struct fi_cu_fgemv a = {.epi = FI_FG_GLU};
	fi_err e;
	if ((e = bf16_vector(norm, gate->cols, op, "norm")) ||
	    (e = layer_weight(gate, quant, gate->rows, gate->cols, op, "gate")) ||
	    (e = layer_weight(up, quant, gate->rows, gate->cols, op, "up")))
		return e;
	if (quant) {
		struct fi_cu_qfgemv qa = {.epi = FI_FG_GLU};
		if (up->dtype != gate->dtype || up->aq != gate->aq)
			return fi_fail(FI_EMISMATCH, "%s: gate is %s, up %s", op,
				       fi_dtype_name(gate->dtype), fi_dtype_name(up->dtype));
		if (T > 0 && (e = q_input(be, &qa, gate, x_d, norm, eps, T)))
			return e;
		qa.w[0] = fi_cuda_qw(gate);
		qa.w[1] = fi_cuda_qw(up);
		qa.act = act == FI_GLU_GELU_TANH;
		qa.out = out_d;
		qa.N = (int)gate->rows;
		qa.K = (int)gate->cols;
		return q_run(be, &qa, T, op);
	}
	a.w[0] = gate->p;
	a.w[1] = up->p;
	a.act = act == FI_GLU_GELU_TANH;
	a.x = x_d;
	a.g = norm->p;
	a.eps = eps;
	a.out = out_d;
	a.N = (int)gate->rows;
	a.K = (int)gate->cols;
	return run(be, &a, T, op);
}
