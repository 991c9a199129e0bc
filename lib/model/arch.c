/* arch: weights and the layer loop of the model families beyond Llama (arch.h). */
#include "arch.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

struct arch_layer {
	struct fi_weight attn_norm, q, k, v, o, q_bias, k_bias, v_bias, q_norm, k_norm;
	struct fi_weight attn_post_norm, ffn_norm, gate, up, down, ffn_post_norm, router;
	struct fi_weight attn_sub_norm, ffn_sub_norm; /* BitNet */
	/* owners of q/k/v (gate/up) when the backend joined them (then q, k, v are views) */
	struct fi_weight qkv_cat, gu_cat;
	struct fi_weight eg, eu, ed; /* the experts, stacked: [E*Fm, D], [E*Fm, D], [E*D, Fm] */
	int moe;
};

struct fi_arch {
	struct arch_layer *l;
	float *inv_local_d; /* Gemma 3's sliding layers: frequencies of rope_local_base_freq */
	float *router_d;    /* [cap, E] f32 router logits */
	int router_cap;
	float scale;        /* softmax scale of every layer */
	int fusable;        /* decode steps may take the fused ops (fi_arch_layers) */
	json_t *index;      /* while loading: name -> tensor index */
	const struct fi_tensor_set *ts;
};

/* ---- loading ---- */

static const struct fi_tensor *find(struct fi_arch *a, const char *name)
{
	json_t *i = json_object_get(a->index, name);
	return i ? &a->ts->t[json_integer_value(i)] : NULL;
}

/* Every tensor the config names present with its shape (extras are ignored, as fi_model_load
 * does); names the first that is not. */
static fi_err check_all(struct fi_model *m, struct fi_arch *a)
{
	struct fi_expected ex;
	for (int i = 0; fi_expected_tensor(&m->c, i, &ex); i++) {
		const struct fi_tensor *t = find(a, ex.name);
		if (!t)
			return fi_fail(FI_ENOTFOUND, "tensor '%s' is missing", ex.name);
		if (t->ndim != ex.ndim || t->shape[0] != ex.shape[0] ||
		    (ex.ndim == 2 && t->shape[1] != ex.shape[1]))
			return fi_fail(FI_EMISMATCH, "tensor '%s': shape does not match the config",
				       ex.name);
	}
	return FI_OK;
}

static fi_err load_named(struct fi_model *m, struct fi_arch *a, const char *name,
			 struct fi_weight *w)
{
	const struct fi_tensor *t = find(a, name);
	if (!t)
		return fi_fail(FI_ENOTFOUND, "tensor '%s' is missing", name);
	return m->be->ops->weight(m->be, t, w);
}

/* A norm weight; Gemma's (1 + w) is formed in f32 here, as transformers forms it. */
static fi_err load_norm(struct fi_model *m, struct fi_arch *a, const char *name,
			struct fi_weight *w)
{
	const struct fi_tensor *t = find(a, name);
	struct fi_tensor v;
	float *f;
	int64_t n;
	fi_err e;
	if (!t)
		return fi_fail(FI_ENOTFOUND, "tensor '%s' is missing", name);
	if (!m->c.norm_plus_one || !t->data) /* random weights: drawn around 1 already */
		return m->be->ops->weight(m->be, t, w);
	n = fi_tensor_numel(t);
	if (n <= 0 || !(f = malloc(sizeof(float) * (size_t)n)))
		return fi_fail(FI_ENOMEM, "tensor '%s': out of memory", name);
	if ((e = fi_convert(f, FI_DT_F32, t->data, t->dtype, (size_t)n))) {
		free(f);
		return fi_fail_ctx(e, "tensor '%s'", name);
	}
	for (int64_t i = 0; i < n; i++)
		f[i] = 1.0f + f[i];
	v = *t;
	v.dtype = FI_DT_F32;
	v.data = f;
	v.nbytes = sizeof(float) * (uint64_t)n;
	e = m->be->ops->weight(m->be, &v, w);
	free(f);
	return e;
}

/* Row block [r0, r0 + rows) of a 2-D tensor, as a view. */
static struct fi_tensor rows_of(const struct fi_tensor *t, int64_t r0, int64_t rows)
{
	struct fi_tensor v = *t;
	size_t es = fi_dtype_size(t->dtype);
	v.shape[0] = rows;
	v.data = t->data ? (const char *)t->data + (size_t)(r0 * t->shape[1]) * es : NULL;
	v.nbytes = (uint64_t)(rows * t->shape[1]) * es;
	return v;
}

/* n parts into dst: one allocation (cat) where the backend joins weights for matmul_multi,
 * else one weight each. */
static fi_err load_parts(struct fi_model *m, const struct fi_tensor *const *t, int n,
			 struct fi_weight *cat, struct fi_weight *const *dst)
{
	const struct fi_backend_ops *op = m->be->ops;
	fi_err e;
	/* ternary weights stay apart: each part has its own scale and layout (matmul_multi still
	 * takes them together, quantizing their shared input to int8 once a step) */
	if (op->weight_cat && op->matmul_multi && n <= 4 && t[0]->dtype != FI_DT_TQ2) {
		struct fi_weight w[4];
		if ((e = op->weight_cat(m->be, t, n, cat, w)))
			return e;
		for (int i = 0; i < n; i++)
			*dst[i] = w[i];
		return FI_OK;
	}
	for (int i = 0; i < n; i++)
		if ((e = op->weight(m->be, t[i], dst[i])))
			return e;
	return FI_OK;
}

/* The E experts' tensors "blk.l.<kind>.e" stacked into one weight. */
static fi_err load_experts(struct fi_model *m, struct fi_arch *a, int l, const char *kind,
			   struct fi_weight *w)
{
	const int E = m->c.n_experts;
	const struct fi_tensor **t = calloc((size_t)E, sizeof *t);
	struct fi_weight *parts = calloc((size_t)E, sizeof *parts);
	char name[64];
	fi_err e = FI_OK;
	if (!t || !parts) {
		e = fi_fail(FI_ENOMEM, "model: out of memory");
		goto out;
	}
	for (int i = 0; i < E && !e; i++) {
		snprintf(name, sizeof name, "blk.%d.%s.%d", l, kind, i);
		if (!(t[i] = find(a, name)))
			e = fi_fail(FI_ENOTFOUND, "tensor '%s' is missing", name);
	}
	if (!e)
		e = m->be->ops->weight_cat(m->be, t, E, w, parts);
out:
	free(t);
	free(parts);
	return e;
}

static fi_err load_layer(struct fi_model *m, struct fi_arch *a, int l)
{
	const struct fi_config *c = &m->c;
	struct arch_layer *L = &a->l[l];
	char n[64];
	fi_err e;
#define NM(s) (snprintf(n, sizeof n, "blk.%d.%s", l, s), n)
#define OK(x) do { if ((e = (x))) return e; } while (0)
	OK(load_norm(m, a, NM("attn_norm"), &L->attn_norm));
	if (c->fused_qkv) { /* Phi-3: [q; k; v] and [gate; up], split into views */
		const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
		const struct fi_tensor *t = find(a, NM("attn_qkv"));
		struct fi_tensor v3[3], v2[2];
		const struct fi_tensor *p3[3] = {&v3[0], &v3[1], &v3[2]}, *p2[2] = {&v2[0], &v2[1]};
		struct fi_weight *const d3[] = {&L->q, &L->k, &L->v}, *const d2[] = {&L->gate, &L->up};
		v3[0] = rows_of(t, 0, q);
		v3[1] = rows_of(t, q, kv);
		v3[2] = rows_of(t, q + kv, kv);
		OK(load_parts(m, p3, 3, &L->qkv_cat, d3));
		if (!(fi_config_layer(c, l) & FI_LAYER_MOE)) {
			t = find(a, NM("ffn_gate_up"));
			v2[0] = rows_of(t, 0, c->ffn);
			v2[1] = rows_of(t, c->ffn, c->ffn);
			OK(load_parts(m, p2, 2, &L->gu_cat, d2));
		}
	} else {
		const struct fi_tensor *p3[3];
		struct fi_weight *const d3[] = {&L->q, &L->k, &L->v};
		static const char *const qkv[] = {"attn_q", "attn_k", "attn_v"};
		for (int i = 0; i < 3; i++)
			p3[i] = find(a, NM(qkv[i]));
		OK(load_parts(m, p3, 3, &L->qkv_cat, d3));
		if (!(fi_config_layer(c, l) & FI_LAYER_MOE)) {
			const struct fi_tensor *p2[2];
			struct fi_weight *const d2[] = {&L->gate, &L->up};
			p2[0] = find(a, NM("ffn_gate"));
			p2[1] = find(a, NM("ffn_up"));
			OK(load_parts(m, p2, 2, &L->gu_cat, d2));
		}
	}
	if (c->qkv_bias) {
		OK(load_named(m, a, NM("attn_q_bias"), &L->q_bias));
		OK(load_named(m, a, NM("attn_k_bias"), &L->k_bias));
		OK(load_named(m, a, NM("attn_v_bias"), &L->v_bias));
	}
	if (c->qk_norm) {
		OK(load_norm(m, a, NM("attn_q_norm"), &L->q_norm));
		OK(load_norm(m, a, NM("attn_k_norm"), &L->k_norm));
	}
	if (c->sub_norms) {
		OK(load_norm(m, a, NM("attn_sub_norm"), &L->attn_sub_norm));
		OK(load_norm(m, a, NM("ffn_sub_norm"), &L->ffn_sub_norm));
	}
	OK(load_named(m, a, NM("attn_o"), &L->o));
	if (c->sandwich) {
		OK(load_norm(m, a, NM("attn_post_norm"), &L->attn_post_norm));
		OK(load_norm(m, a, NM("ffn_post_norm"), &L->ffn_post_norm));
	}
	OK(load_norm(m, a, NM("ffn_norm"), &L->ffn_norm));
	if (fi_config_layer(c, l) & FI_LAYER_MOE) {
		L->moe = 1;
		OK(load_named(m, a, NM("ffn_router"), &L->router));
		OK(load_experts(m, a, l, "ffn_gate", &L->eg));
		OK(load_experts(m, a, l, "ffn_up", &L->eu));
		OK(load_experts(m, a, l, "ffn_down", &L->ed));
	} else {
		OK(load_named(m, a, NM("ffn_down"), &L->down));
	}
#undef NM
#undef OK
	return FI_OK;
}

/* What the config needs of the backend, named before anything is loaded. */
static fi_err needs(const struct fi_model *m)
{
	const struct fi_config *c = &m->c;
	const struct fi_backend_ops *op = m->be->ops;
	int moe = 0;
	for (int l = 0; l < c->n_layers; l++)
		moe |= (fi_config_layer(c, l) & FI_LAYER_MOE) != 0;
	if (c->embed_scale > 0 && !op->scale)
		return fi_fail(FI_EUNSUPPORTED, "%s backend: no scale op for %s", op->name, c->arch);
	if (c->act == FI_ACT_GELU_TANH && !op->gelu_mul)
		return fi_fail(FI_EUNSUPPORTED, "%s backend: no GeGLU op for %s", op->name, c->arch);
	if (c->act == FI_ACT_RELU2 && !op->relu2_mul)
		return fi_fail(FI_EUNSUPPORTED, "%s backend: no squared-ReLU GLU op for %s", op->name,
			       c->arch);
	if (c->final_softcap > 0 && !op->softcap)
		return fi_fail(FI_EUNSUPPORTED, "%s backend: no soft-capping op for %s", op->name,
			       c->arch);
	if (moe && (!op->moe || !op->weight_cat))
		return fi_fail(FI_EUNSUPPORTED, "%s backend: no mixture-of-experts op for %s",
			       op->name, c->arch);
	return FI_OK;
}

/* Whether decode steps may run the layers through the fused decode ops (backend.h), as
 * run_layers does for the Llama family: the shapes the kernels assume, and each layer's
 * weights of the kinds they take. BitNet has its own fold (fi_arch_layers). */
static int fusable(const struct fi_model *m)
{
	const struct fi_config *c = &m->c;
	const struct fi_backend *be = m->be;
	if (!be->fuse_families || !fi_fuse_shapes(be, c) || !be->ops->add_norm || c->sub_norms ||
	    (c->act != FI_ACT_SILU && c->act != FI_ACT_GELU_TANH))
		return 0;
	for (int l = 0; l < c->n_layers; l++) {
		const struct arch_layer *L = &m->arch->l[l];
		const struct fi_weight *const lw[] = {&L->q, &L->k, &L->v, &L->o,
						      L->moe ? NULL : &L->gate,
						      L->moe ? NULL : &L->up,
						      L->moe ? NULL : &L->down};
		if (!fi_fuse_takes(be, lw))
			return 0;
	}
	return 1;
}

fi_err fi_arch_load(struct fi_model *m, const struct fi_tensor_set *ts)
{
	const struct fi_config *c = &m->c;
	struct fi_backend *be = m->be;
	struct fi_arch *a;
	float inv[FI_MAX_ROPE_FACTORS];
	fi_err e;
	if ((e = needs(m)))
		return e;
	if (c->head_dim / 2 > FI_MAX_ROPE_FACTORS)
		return fi_fail(FI_EUNSUPPORTED, "model: head_dim %d is too large", c->head_dim);
	if (!(a = m->arch = calloc(1, sizeof *a)) ||
	    !(a->l = calloc((size_t)c->n_layers, sizeof *a->l)) || !(a->index = json_object()))
		return fi_fail(FI_ENOMEM, "model: out of memory");
	a->ts = ts;
	for (int i = 0; i < ts->n; i++)
		json_object_set_new(a->index, ts->t[i].name, json_integer(i));
	a->scale = fi_attn_scale(c);
	be->keep_bf16 = c->ternary && c->tie_embeddings;
	e = check_all(m, a);
	if (!e)
		e = load_named(m, a, "tok_embd", &m->tok_embd);
	be->keep_bf16 = 0;
	if (e ||
	    (e = load_norm(m, a, "out_norm", &m->out_norm)) ||
	    (!c->tie_embeddings && (e = load_named(m, a, "output", &m->output))))
		goto out;
	for (int l = 0; l < c->n_layers; l++)
		if ((e = load_layer(m, a, l)))
			goto out;
	/* Gemma 3: sliding layers rotate with their own base and never scale. */
	if (c->family == FI_FAM_GEMMA3) {
		struct fi_config lc = *c;
		lc.rope_theta = c->rope_local_theta > 0 ? c->rope_local_theta : 10000.0;
		lc.rope_type = FI_ROPE_DEFAULT;
		if ((e = fi_rope_inv_freq(&lc, inv)) ||
		    (e = be->ops->alloc(be, sizeof(float) * (size_t)(c->head_dim / 2),
					(void **)&a->inv_local_d)) ||
		    (e = be->ops->upload(be, a->inv_local_d, inv, sizeof(float) * (size_t)(c->head_dim / 2))))
			goto out;
	}
	a->fusable = fusable(m);
out:
	json_decref(a->index);
	a->index = NULL;
	a->ts = NULL;
	return e;
}

static void wfree(struct fi_model *m, struct fi_weight *w)
{
	if (w->p)
		m->be->ops->weight_free(m->be, w);
}

void fi_arch_free(struct fi_model *m)
{
	struct fi_arch *a = m->arch;
	if (!a)
		return;
	for (int l = 0; a->l && l < m->c.n_layers; l++) {
		struct arch_layer *L = &a->l[l];
		struct fi_weight *own[] = {&L->attn_norm, &L->q_bias, &L->k_bias, &L->v_bias, &L->q_norm,
					   &L->k_norm, &L->o, &L->attn_post_norm, &L->ffn_norm, &L->down,
					   &L->ffn_post_norm, &L->router, &L->eg, &L->eu, &L->ed,
					   &L->attn_sub_norm, &L->ffn_sub_norm};
		if (L->qkv_cat.p)
			wfree(m, &L->qkv_cat);
		else
			wfree(m, &L->q), wfree(m, &L->k), wfree(m, &L->v);
		if (L->gu_cat.p)
			wfree(m, &L->gu_cat);
		else
			wfree(m, &L->gate), wfree(m, &L->up);
		for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
			wfree(m, own[i]);
	}
	if (a->inv_local_d)
		m->be->ops->free(m->be, a->inv_local_d);
	if (a->router_d)
		m->be->ops->free(m->be, a->router_d);
	json_decref(a->index);
	free(a->l);
	free(a);
	m->arch = NULL;
}

/* ---- the layers ---- */

static fi_err router_scratch(struct fi_model *m, int T)
{
	struct fi_arch *a = m->arch;
	fi_err e;
	if (T <= a->router_cap)
		return FI_OK;
	if (a->router_d)
		m->be->ops->free(m->be, a->router_d);
	a->router_d = NULL;
	a->router_cap = 0;
	if ((e = m->be->ops->alloc(m->be, sizeof(float) * (size_t)T * m->c.n_experts,
				   (void **)&a->router_d)))
		return e;
	m->gr.gen++; /* a graph would point at the old buffer */
	a->router_cap = T;
	return FI_OK;
}

/* A dense MLP block: y = down(act(gate(xb)) * up(xb)), BitNet's sub-norm before down. */
static fi_err dense_mlp(struct fi_model *m, struct arch_layer *L, int T, float eps)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	const struct fi_config *c = &m->c;
	struct scratch *s = &m->s;
	fi_err e;
#define OK(x) do { if ((e = (x))) return e; } while (0)
	if (c->act == FI_ACT_SILU && op->matmul_glu) {
		OK(op->matmul_glu(be, s->h, s->gate, s->up, s->xb, &L->gate, &L->up, T));
	} else {
		if (op->matmul_multi && (L->gu_cat.p || L->gate.dtype == FI_DT_TQ2)) {
			void *const o2[] = {s->gate, s->up};
			const struct fi_weight *const w2[] = {&L->gate, &L->up};
			OK(op->matmul_multi(be, 2, o2, s->xb, w2, NULL, T));
		} else {
			OK(op->matmul(be, s->gate, s->xb, &L->gate, NULL, T));
			OK(op->matmul(be, s->up, s->xb, &L->up, NULL, T));
		}
		if (c->act == FI_ACT_RELU2 && c->sub_norms && op->norm_matmul) {
			/* BitNet: relu2, the sub-norm and down together */
			void *const oy[] = {s->y};
			const struct fi_weight *const wd[] = {&L->down};
			return op->norm_matmul(be, 1, oy, s->gate, s->up, s->gate, &L->ffn_sub_norm,
					       eps, wd, 0, T);
		}
		if (c->act == FI_ACT_GELU_TANH)
			OK(op->gelu_mul(be, s->h, s->gate, s->up, T, c->ffn));
		else if (c->act == FI_ACT_RELU2)
			OK(op->relu2_mul(be, s->h, s->gate, s->up, T, c->ffn));
		else
			OK(op->silu_mul(be, s->h, s->gate, s->up, T, c->ffn));
	}
	if (c->sub_norms)
		OK(op->rmsnorm(be, s->h, s->h, NULL, &L->ffn_sub_norm, T, c->ffn, eps));
	return op->matmul(be, s->y, s->h, &L->down, NULL, T);
#undef OK
}

/* The rest of a BitNet decode layer after q/k/v, RoPE and the cache writes (fi_arch_layers'
 * fold): attention, then x += o(subnorm(att)); gate/up over norm(x); x += down(subnorm(relu2
 * GLU)), the residual stream x complete after each add. */
static fi_err fold_rest(struct fi_model *m, struct arch_layer *L, const struct fi_attn_batch *ab,
			int l, int T, float eps)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	struct scratch *s = &m->s;
	void *const ox[] = {s->x}, *const o2[] = {s->gate, s->up};
	const struct fi_weight *const wo[] = {&L->o}, *const wd[] = {&L->down};
	const struct fi_weight *const w2[] = {&L->gate, &L->up};
	fi_err e;
#define OK(x) do { if ((e = (x))) return e; } while (0)
	OK(op->attention(be, s->att, s->q, &m->cache->kv, l, m->c.n_heads, ab));
	OK(op->norm_matmul(be, 1, ox, s->att, NULL, s->att, &L->attn_sub_norm, eps, wo, 1, T));
	OK(op->norm_matmul(be, 2, o2, s->x, NULL, s->xb, &L->ffn_norm, eps, w2, 0, T));
	return op->norm_matmul(be, 1, ox, s->gate, s->up, s->gate, &L->ffn_sub_norm, eps, wd, 1, T);
#undef OK
}

/* fi_model_qkv_rope for a layer of the families. */
static fi_err qkv_rope(struct fi_model *m, struct arch_layer *L, const struct fi_rope *rope,
		       const int32_t *pos_d, const struct fi_attn_batch *ab, int l, int T)
{
	const struct fi_weight *const w3[] = {&L->q, &L->k, &L->v};
	const struct fi_weight *const b3[] = {&L->q_bias, &L->k_bias, &L->v_bias};
	const struct fi_weight *const qk[] = {&L->q_norm, &L->k_norm};
	int multi = m->be->ops->matmul_multi && (L->qkv_cat.p || L->q.dtype == FI_DT_TQ2);
	return fi_model_qkv_rope(m, w3, m->c.qkv_bias ? b3 : NULL, m->c.qk_norm ? qk : NULL, multi,
				 rope, pos_d, ab, l, T);
}

/* The MoE block: y = moe(xb) over the router's f32 logits. */
static fi_err moe_mlp(struct fi_model *m, struct arch_layer *L, struct fi_moe *mo, int T)
{
	struct fi_backend *be = m->be;
	fi_err e;
	mo->gate = &L->eg;
	mo->up = &L->eu;
	mo->down = &L->ed;
	if ((e = be->ops->matmul_f32out(be, m->arch->router_d, m->s.xb, &L->router, T)))
		return e;
	return be->ops->moe(be, m->s.y, m->s.xb, m->arch->router_d, mo, T);
}

/* A decode layer of the families through the fused ops (a->fusable, T <= be->fuse_max_T),
 * as run_layers' fused path: q/k/v with the norm and RoPE in one launch (with q/k norms: the
 * norm, one product and rope_kv_write), the o and down products adding into x (with Gemma's
 * post-norms: the product, then add_norm), the gate/up products with the norm and the GLU.
 * An MoE block is the unfused path's, its output y left pending (*pend) for the next norm's
 * add, as there, or for add_norm where the next op reads x itself (norm_qkv_rope). */
static fi_err fused_layer(struct fi_model *m, struct arch_layer *L, const struct fi_rope *rope,
			  const int32_t *pos_d, const struct fi_attn_batch *ab, struct fi_moe *mo,
			  int l, int T, int *pend)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	const struct fi_config *c = &m->c;
	struct scratch *s = &m->s;
	const int D = c->hidden, Hq = c->n_heads;
	const float eps = c->rms_eps;
	fi_err e;
#define OK(x) do { if ((e = (x))) return e; } while (0)
	if (c->qk_norm) {
		OK(op->rmsnorm(be, s->xb, s->x, *pend ? s->y : NULL, &L->attn_norm, T, D, eps));
		OK(qkv_rope(m, L, rope, pos_d, ab, l, T));
	} else {
		const struct fi_weight *const w3[] = {&L->q, &L->k, &L->v};
		const struct fi_weight *const b3[] = {&L->q_bias, &L->k_bias, &L->v_bias};
		if (*pend)
			OK(op->add_norm(be, s->x, s->y, NULL, eps, T, D));
		OK(op->norm_qkv_rope(be, s->q, s->x, &L->attn_norm, eps, w3, c->qkv_bias ? b3 : NULL,
				     rope, &m->cache->kv, l, Hq, ab));
	}
	*pend = 0;
	OK(op->attention(be, s->att, s->q, &m->cache->kv, l, Hq, ab));
	if (c->sandwich) {
		OK(op->matmul(be, s->y, s->att, &L->o, NULL, T));
		OK(op->add_norm(be, s->x, s->y, &L->attn_post_norm, eps, T, D));
	} else {
		OK(op->matmul_add(be, s->x, s->att, &L->o, T));
	}
	if (L->moe) {
		OK(op->rmsnorm(be, s->xb, s->x, NULL, &L->ffn_norm, T, D, eps));
		OK(moe_mlp(m, L, mo, T));
		if (!c->sandwich) {
			*pend = 1;
			return FI_OK;
		}
	} else {
		OK(op->norm_glu(be, s->h, s->x, &L->ffn_norm, eps, &L->gate, &L->up,
				c->act == FI_ACT_GELU_TANH ? FI_GLU_GELU_TANH : FI_GLU_SILU, T));
		if (!c->sandwich)
			return op->matmul_add(be, s->x, s->h, &L->down, T);
		OK(op->matmul(be, s->y, s->h, &L->down, NULL, T));
	}
	return op->add_norm(be, s->x, s->y, &L->ffn_post_norm, eps, T, D);
#undef OK
}

fi_err fi_arch_layers(struct fi_model *m, int T, const int32_t *tok_d, const int32_t *pos_d,
		      const struct fi_attn_batch *ab0)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	const struct fi_config *c = &m->c;
	struct fi_arch *a = m->arch;
	struct scratch *s = &m->s;
	const int D = c->hidden, Hq = c->n_heads, hd = c->head_dim;
	const float eps = c->rms_eps;
	struct fi_rope global = {.head_dim = hd, .inv_freq_d = m->inv_freq_d};
	struct fi_rope local = {.head_dim = hd,
				.inv_freq_d = a->inv_local_d ? a->inv_local_d : m->inv_freq_d};
	struct fi_moe mo = {c->n_experts, c->n_experts_used, c->moe_ffn, c->norm_topk,
			    c->act == FI_ACT_GELU_TANH ? FI_GLU_GELU_TANH : FI_GLU_SILU, NULL, NULL, NULL};
	/* BitNet decode: each norm goes with the products after it, RoPE and the cache writes
	 * with q/k/v (norm_qkv_rope), the residual adds with the o and down products
	 * (norm_matmul): four launches a layer besides attention */
	const int fold = c->sub_norms && c->act == FI_ACT_RELU2 && op->norm_matmul &&
			 op->norm_qkv_rope && be->fuse_quant && T <= be->fuse_max_T &&
			 !c->qkv_bias && !c->qk_norm && !c->sandwich && c->n_experts == 0;
	/* the other families' decode steps: the fused ops (fused_layer) */
	const int fused = !fold && a->fusable && T <= be->fuse_max_T;
	int pend = 0; /* fused: an MoE output in y not yet added into x */
	fi_err e;
#define OK(x) do { if ((e = (x))) return e; } while (0)
	if (c->n_experts > 0)
		OK(router_scratch(m, T));
	OK(op->embed(be, s->x, &m->tok_embd, tok_d, T));
	if (c->embed_scale > 0)
		OK(op->scale(be, s->x, (int64_t)T * D, c->embed_scale));
	for (int l = 0; l < c->n_layers; l++) {
		struct arch_layer *L = &a->l[l];
		const int sliding = fi_config_layer(c, l) & FI_LAYER_SLIDING;
		struct fi_attn_batch ab = *ab0;
		const struct fi_rope *rope = sliding ? &local : &global;
		ab.sliding_window = sliding ? c->sliding_window : 0;
		ab.scale = a->scale;
		ab.softcap = c->attn_softcap;
		if (fold) {
			const struct fi_weight *const w3[] = {&L->q, &L->k, &L->v};
			OK(op->norm_qkv_rope(be, s->q, s->x, &L->attn_norm, eps, w3, NULL, rope,
					     &m->cache->kv, l, Hq, &ab));
			OK(fold_rest(m, L, &ab, l, T, eps));
			continue;
		}
		if (fused) {
			OK(fused_layer(m, L, rope, pos_d, &ab, &mo, l, T, &pend));
			continue;
		}
		/* attention; from layer 1 on, the norm first adds the previous MLP output */
		OK(op->rmsnorm(be, s->xb, s->x, l ? s->y : NULL, &L->attn_norm, T, D, eps));
		OK(qkv_rope(m, L, rope, pos_d, &ab, l, T));
		OK(op->attention(be, s->att, s->q, &m->cache->kv, l, Hq, &ab));
		if (c->sub_norms && op->norm_matmul) { /* BitNet: the sub-norm with the product */
			void *const oy[] = {s->y};
			const struct fi_weight *const wo[] = {&L->o};
			OK(op->norm_matmul(be, 1, oy, s->att, NULL, s->att, &L->attn_sub_norm, eps, wo,
					   0, T));
		} else {
			if (c->sub_norms)
				OK(op->rmsnorm(be, s->att, s->att, NULL, &L->attn_sub_norm, T, Hq * hd,
					       eps));
			OK(op->matmul(be, s->y, s->att, &L->o, NULL, T));
		}
		if (c->sandwich)
			OK(op->rmsnorm(be, s->y, s->y, NULL, &L->attn_post_norm, T, D, eps));
		/* MLP: x += attention; xb = norm(x) */
		OK(op->rmsnorm(be, s->xb, s->x, s->y, &L->ffn_norm, T, D, eps));
		if (L->moe)
			OK(moe_mlp(m, L, &mo, T));
		else
			OK(dense_mlp(m, L, T, eps));
		if (c->sandwich)
			OK(op->rmsnorm(be, s->y, s->y, NULL, &L->ffn_post_norm, T, D, eps));
	}
	OK(op->rmsnorm(be, s->xb, s->x, fold || (fused && !pend) ? NULL : s->y, &m->out_norm, T, D,
		       eps));
#undef OK
	return FI_OK;
}
