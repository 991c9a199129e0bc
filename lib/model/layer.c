/* layer: the pieces of a decode layer that both layer loops use, model.c's (the Llama
 * family) and arch.c's (the families of arch.h), below both so that calls run down only:
 * whether the fused decode ops take a layer's weights, and q/k/v through RoPE and the cache
 * writes. */
#include "model_int.h"

/* Whether the fused decode ops take a layer's weights: in the activation dtype, or
 * quantized where the backend's fusions take them (backend.h, fuse_quant). */
static int fuse_quant_ok(const struct fi_backend *be, const struct fi_weight *w)
{
	return be->fuse_quant && fi_dtype_is_quant(w->dtype) && w->dtype != FI_DT_TQ2 &&
	       !w->q.perm;
}

int fi_fuse_shapes(const struct fi_backend *be, const struct fi_config *c)
{
	const struct fi_backend_ops *op = be->ops;
	return op->norm_qkv_rope && op->matmul_add && op->norm_glu && c->hidden % 8 == 0 &&
	       c->ffn % 8 == 0 && c->head_dim % 2 == 0 && c->n_heads * c->head_dim % 8 == 0;
}

int fi_fuse_takes(const struct fi_backend *be, const struct fi_weight *const *lw)
{
	int quant = fi_dtype_is_quant(lw[0]->dtype);
	for (int i = 0; i < 7; i++)
		if (lw[i] && lw[i]->dtype != be->act && !fuse_quant_ok(be, lw[i]))
			return 0;
	/* q, k and v share one launch and one rounding of their input; gate and up one kernel */
	for (int i = 1; i < 3; i++)
		if (fi_dtype_is_quant(lw[i]->dtype) != quant || lw[i]->aq != lw[0]->aq)
			return 0;
	return !lw[4] || (lw[4]->dtype == lw[5]->dtype && lw[4]->aq == lw[5]->aq &&
			  lw[4]->q.kind == lw[5]->q.kind);
}

fi_err fi_model_qkv_rope(struct fi_model *m, const struct fi_weight *const *w3,
			 const struct fi_weight *const *b3, const struct fi_weight *const *qk_norm,
			 int multi, const struct fi_rope *rope, const int32_t *pos_d,
			 const struct fi_attn_batch *ab, int l, int T)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	const struct fi_config *c = &m->c;
	struct scratch *s = &m->s;
	const int Hq = c->n_heads, Hk = c->n_kv_heads, hd = c->head_dim;
	const float eps = c->rms_eps;
	fi_err e;
#define OK(x) do { if ((e = (x))) return e; } while (0)
	if (multi) { /* q, k, v in one pass over xb */
		void *const o3[] = {s->q, s->k, s->v};
		OK(op->matmul_multi(be, 3, o3, s->xb, w3, b3, T));
	} else {
		OK(op->matmul(be, s->q, s->xb, w3[0], b3 ? b3[0] : NULL, T));
		OK(op->matmul(be, s->k, s->xb, w3[1], b3 ? b3[1] : NULL, T));
		OK(op->matmul(be, s->v, s->xb, w3[2], b3 ? b3[2] : NULL, T));
	}
	if (qk_norm && !(op->rope_kv_write && be->fuse_families)) {
		OK(op->rmsnorm(be, s->q, s->q, NULL, qk_norm[0], T * Hq, hd, eps));
		OK(op->rmsnorm(be, s->k, s->k, NULL, qk_norm[1], T * Hk, hd, eps));
		qk_norm = NULL;
	}
	if (op->rope_kv_write) {
		struct fi_rope rn = *rope;
		if (qk_norm)
			rn.q_norm = qk_norm[0], rn.k_norm = qk_norm[1], rn.norm_eps = eps;
		return op->rope_kv_write(be, s->q, s->k, s->v, &rn, &m->cache->kv, l, Hq, ab);
	}
	OK(op->rope(be, s->q, s->k, pos_d, rope, T, Hq, Hk));
	return op->kv_write(be, &m->cache->kv, l, s->k, s->v, ab);
#undef OK
}
