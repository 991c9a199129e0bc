/* cpu_fused: the decode fusions of backend.h (norm_qkv_rope, matmul_add, norm_glu,
 * add_norm) as the plain CPU ops in sequence, in f32 throughout. The CPU gains nothing from
 * fusing, so be->fuse_max_T stays 0 and model.c keeps the plain ops; these exist so that
 * the fused path of the forward pass runs, and is checked against the reference, on every
 * machine (tests/unit/test_model.c sets fuse_max_T). */
#include <stdlib.h>

#include "cpu.h"

/* A temporary of n floats a call (decode batches are a few tokens). */
static float *tmp_f32(size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof(float));
	if (!p)
		fi_fail(FI_ENOMEM, "cpu backend: out of memory");
	return p;
}

fi_err fi_cpu_norm_qkv_rope(struct fi_backend *be, void *q_d, const void *x_d,
			    const struct fi_weight *norm, float eps,
			    const struct fi_weight *const *w3, const struct fi_weight *const *b3,
			    const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
			    const struct fi_attn_batch *b)
{
	int T = b->n_tokens, D = (int)w3[0]->cols, Nk = (int)w3[1]->rows;
	float *xb = tmp_f32((size_t)T * D), *k = tmp_f32((size_t)T * Nk), *v = tmp_f32((size_t)T * Nk);
	fi_err e = xb && k && v ? FI_OK : FI_ENOMEM;
	if (!e)
		e = fi_cpu_rmsnorm(be, xb, (void *)x_d, NULL, norm, T, D, eps);
	if (!e)
		e = fi_cpu_matmul(be, q_d, xb, w3[0], b3 ? b3[0] : NULL, T);
	if (!e)
		e = fi_cpu_matmul(be, k, xb, w3[1], b3 ? b3[1] : NULL, T);
	if (!e)
		e = fi_cpu_matmul(be, v, xb, w3[2], b3 ? b3[2] : NULL, T);
	if (!e)
		e = fi_cpu_rope(be, q_d, k, b->tok_pos_d, r, T, Hq, kv->n_kv_heads);
	/* token by token: a padding token (slot -1) writes nothing, which kv_write refuses */
	for (int t = 0; t < T && !e; t++) {
		struct fi_attn_batch one = {.n_tokens = 1, .slot_d = b->slot_d + t};
		if (b->slot_d[t] >= 0)
			e = fi_cpu_kv_write(be, kv, layer, k + (size_t)t * Nk, v + (size_t)t * Nk, &one);
	}
	free(xb);
	free(k);
	free(v);
	return e;
}

fi_err fi_cpu_matmul_add(struct fi_backend *be, void *x_d, const void *in_d,
			 const struct fi_weight *w, int T)
{
	size_t n = (size_t)T * (size_t)w->rows;
	float *y = tmp_f32(n), *x = x_d;
	fi_err e = y ? fi_cpu_matmul(be, y, in_d, w, NULL, T) : FI_ENOMEM;
	for (size_t i = 0; i < n && !e; i++)
		x[i] += y[i];
	free(y);
	return e;
}

fi_err fi_cpu_norm_glu(struct fi_backend *be, void *out_d, const void *x_d,
		       const struct fi_weight *norm, float eps, const struct fi_weight *gate,
		       const struct fi_weight *up, enum fi_glu_act act, int T)
{
	int D = (int)gate->cols, F = (int)gate->rows;
	float *xb = tmp_f32((size_t)T * D), *g = tmp_f32((size_t)T * F), *u = tmp_f32((size_t)T * F);
	fi_err e = xb && g && u ? FI_OK : FI_ENOMEM;
	if (!e)
		e = fi_cpu_rmsnorm(be, xb, (void *)x_d, NULL, norm, T, D, eps);
	if (!e)
		e = fi_cpu_matmul(be, g, xb, gate, NULL, T);
	if (!e)
		e = fi_cpu_matmul(be, u, xb, up, NULL, T);
	if (!e)
		e = act == FI_GLU_GELU_TANH ? fi_cpu_gelu_mul(be, out_d, g, u, T, F)
					    : fi_cpu_silu_mul(be, out_d, g, u, T, F);
	free(xb);
	free(g);
	free(u);
	return e;
}

fi_err fi_cpu_add_norm(struct fi_backend *be, void *x_d, const void *y_d,
		       const struct fi_weight *norm, float eps, int T, int D)
{
	size_t n = (size_t)T * (size_t)D;
	float *t = norm ? tmp_f32(n) : NULL, *x = x_d;
	const float *y = y_d;
	fi_err e = norm && !t ? FI_ENOMEM : FI_OK;
	if (!e && norm && !(e = fi_cpu_rmsnorm(be, t, (void *)y_d, NULL, norm, T, D, eps)))
		y = t;
	for (size_t i = 0; i < n && !e; i++)
		x[i] += y[i];
	free(t);
	return e;
}
