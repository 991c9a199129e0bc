/* model: weights, scratch buffers and the forward pass over backend ops. */
#include "model_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"
#include "backend/comm.h"
#include "base/log.h"
#include "names.h"
#include "safetensors.h"


/* Loads one tensor by engine name, checking its shape against the expectation. */
static fi_err load(struct fi_model *m, const struct fi_tensor_set *ts,
		   const struct fi_expected *ex, struct fi_weight *w)
{
	const struct fi_tensor *t = fi_tensor_find(ts, ex->name);
	if (!t)
		return fi_fail(FI_ENOTFOUND, "tensor '%s' is missing", ex->name);
	if (t->ndim != ex->ndim || t->shape[0] != ex->shape[0] ||
	    (ex->ndim == 2 && t->shape[1] != ex->shape[1]))
		return fi_fail(FI_EMISMATCH, "tensor '%s': shape does not match the config",
			       ex->name);
	return m->be->ops->weight(m->be, t, w);
}

/* The expectation of engine tensor `name`; 0 when the config has none. */
static int find_expected(const struct fi_config *c, const char *name, struct fi_expected *ex)
{
	for (int i = 0; fi_expected_tensor(c, i, ex); i++)
		if (!strcmp(ex->name, name))
			return 1;
	return 0;
}

/* Layer l's tensors `parts` (shape-checked like load()) in one backend allocation. */
static fi_err load_cat(struct fi_model *m, const struct fi_tensor_set *ts, int l,
		       const char *const *parts, int n, struct fi_weight *cat,
		       struct fi_weight *const *dst)
{
	const struct fi_tensor *t[4];
	struct fi_weight w[4];
	struct fi_expected ex;
	char name[64];
	int quant = 0;
	fi_err e;
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "blk.%d.%s", l, parts[i]);
		if (!find_expected(&m->c, name, &ex))
			return fi_fail(FI_EUNSUPPORTED, "tensor '%s' has no place in the model", name);
		if (!(t[i] = fi_tensor_find(ts, ex.name)))
			return fi_fail(FI_ENOTFOUND, "tensor '%s' is missing", ex.name);
		if (t[i]->ndim != ex.ndim || t[i]->shape[0] != ex.shape[0] ||
		    (ex.ndim == 2 && t[i]->shape[1] != ex.shape[1]))
			return fi_fail(FI_EMISMATCH, "tensor '%s': shape does not match the config",
				       ex.name);
	}
	for (int i = 0; i < n; i++)
		quant |= fi_dtype_is_quant(t[i]->dtype);
	/* quantized: joined where the backend can, else loaded one by one (fi_model_load) */
	if (quant && !m->be->ops->qweight_cat)
		return FI_OK;
	e = quant ? m->be->ops->qweight_cat(m->be, t, n, cat, w)
		  : m->be->ops->weight_cat(m->be, t, n, cat, w);
	if (quant && e == FI_EUNSUPPORTED)
		return FI_OK;
	if (e)
		return e;
	for (int i = 0; i < n; i++)
		*dst[i] = w[i];
	return FI_OK;
}

/* Which weight slot an engine name fills. */
static struct fi_weight *slot_for(struct fi_model *m, const char *name)
{
	static const struct {
		const char *n;
		size_t off;
	} lt[] = {
		{"attn_norm", offsetof(struct layer, attn_norm)},
		{"attn_q", offsetof(struct layer, q)},
		{"attn_k", offsetof(struct layer, k)},
		{"attn_v", offsetof(struct layer, v)},
		{"attn_o", offsetof(struct layer, o)},
		{"attn_q_bias", offsetof(struct layer, q_bias)},
		{"attn_k_bias", offsetof(struct layer, k_bias)},
		{"attn_v_bias", offsetof(struct layer, v_bias)},
		{"attn_q_norm", offsetof(struct layer, q_norm)},
		{"attn_k_norm", offsetof(struct layer, k_norm)},
		{"ffn_norm", offsetof(struct layer, ffn_norm)},
		{"ffn_gate", offsetof(struct layer, gate)},
		{"ffn_up", offsetof(struct layer, up)},
		{"ffn_down", offsetof(struct layer, down)},
	};
	int l, n = 0;
	if (!strcmp(name, "tok_embd"))
		return &m->tok_embd;
	if (!strcmp(name, "out_norm"))
		return &m->out_norm;
	if (!strcmp(name, "output"))
		return &m->output;
	if (sscanf(name, "blk.%d.%n", &l, &n) != 1 || !n || l < 0 || l >= m->c.n_layers)
		return NULL;
	for (size_t i = 0; i < sizeof lt / sizeof lt[0]; i++)
		if (!strcmp(name + n, lt[i].n))
			return (struct fi_weight *)((char *)&m->l[l] + lt[i].off);
	return NULL;
}

static void free_weights(struct fi_model *m)
{
	struct fi_expected ex;
	for (int l = 0; l < m->c.n_layers; l++) {
		struct layer *L = &m->l[l];
		if (L->qkv_cat.p) {
			m->be->ops->weight_free(m->be, &L->qkv_cat);
			L->q.p = L->k.p = L->v.p = NULL;
		}
		if (L->gu_cat.p) {
			m->be->ops->weight_free(m->be, &L->gu_cat);
			L->gate.p = L->up.p = NULL;
		}
	}
	for (int i = 0; fi_expected_tensor(&m->c, i, &ex); i++) {
		struct fi_weight *w = slot_for(m, ex.name);
		if (w && w->p)
			m->be->ops->weight_free(m->be, w);
	}
}

static void free_ptrs(struct fi_model *m, void **const *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (*p[i])
			m->be->ops->free(m->be, *p[i]);
		*p[i] = NULL;
	}
}

static void free_acts(struct fi_model *m)
{
	void **const p[] = {&m->s.x, &m->s.xb, &m->s.y, &m->s.q, &m->s.k, &m->s.v, &m->s.att,
			    &m->s.gate, &m->s.up, &m->s.h, &m->s.g};
	free_ptrs(m, p, sizeof p / sizeof p[0]);
	m->s.cap = 0;
}

static void free_rows(struct fi_model *m)
{
	void **const p[] = {(void **)&m->s.logits, (void **)&m->s.am};
	free_ptrs(m, p, 2);
	m->s.cap_rows = 0;
}

static void free_scratch(struct fi_model *m)
{
	void **const p[] = {(void **)&m->s.ints, (void **)&m->gr.gin, &m->s.smp};
	free_acts(m);
	free_rows(m);
	free_ptrs(m, p, 3);
	m->s.cap_ints = 0;
	m->s.cap_smp = 0;
}

void fi_model_close_rank(struct fi_model *m)
{
	if (!m)
		return;
	fi_kvcache_destroy(m->cache);
	free_scratch(m);
	if (m->head.p)
		m->be->ops->weight_free(m->be, &m->head);
	fi_comm_destroy(m->comm);
	fi_arch_free(m); /* model families */
	if (m->l)
		free_weights(m);
	if (m->inv_freq_d)
		m->be->ops->free(m->be, m->inv_freq_d);
	free(m->l);
	free(m->h_ints);
	free(m->gr.h);
	free(m->gr.shadow);
	free(m);
}

static int fuse_takes(const struct fi_backend *be, const struct layer *L)
{
	const struct fi_weight *const lw[] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
	return fi_fuse_takes(be, lw);
}

fi_err fi_model_load(const struct fi_config *c, const struct fi_tensor_set *ts,
		     struct fi_backend *be, struct fi_model **out)
{
	struct fi_model *m;
	struct fi_expected ex;
	float inv[512];
	fi_err e;
	*out = NULL;
	if (c->n_layers <= 0 || c->hidden <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
	    c->n_heads % c->n_kv_heads || c->head_dim <= 0 || c->head_dim > 1024 ||
	    c->ffn <= 0 || c->vocab <= 0)
		return fi_fail(FI_EFORMAT, "model config: invalid dimensions");
	if ((e = fi_rope_inv_freq(c, inv)))
		return e;
	m = calloc(1, sizeof *m);
	if (!m || !(m->l = calloc((size_t)c->n_layers, sizeof *m->l))) {
		free(m);
		return fi_fail(FI_ENOMEM, "model: out of memory");
	}
	m->c = *c;
	m->be = be;
	if (fi_config_is_arch(c)) { /* model families: their own weights and layers (arch.h) */
		if ((e = fi_arch_load(m, ts)))
			goto fail;
		goto freqs;
	}
	m->fusable = fi_fuse_shapes(be, c) && (!c->qk_norm || be->fuse_families);
	/* Where the backend can, q/k/v and gate/up each share one allocation, so that
	 * matmul_multi reads the input once and runs one GEMM (FI_FUSE=0: separate). */
	if (be->ops->weight_cat && be->ops->matmul_multi && be->settings->fuse) {
		static const char *const qkv[] = {"attn_q", "attn_k", "attn_v"};
		static const char *const gu[] = {"ffn_gate", "ffn_up"};
		for (int l = 0; l < c->n_layers; l++) {
			struct layer *L = &m->l[l];
			struct fi_weight *const d3[] = {&L->q, &L->k, &L->v};
			struct fi_weight *const d2[] = {&L->gate, &L->up};
			if ((e = load_cat(m, ts, l, qkv, 3, &L->qkv_cat, d3)) ||
			    (e = load_cat(m, ts, l, gu, 2, &L->gu_cat, d2)))
				goto fail;
		}
	}
	for (int i = 0; fi_expected_tensor(c, i, &ex); i++) {
		struct fi_weight *w = slot_for(m, ex.name);
		if (!w) {
			e = fi_fail(FI_EUNSUPPORTED, "tensor '%s' has no place in the model", ex.name);
			goto fail;
		}
		if (!w->p && (e = load(m, ts, &ex, w)))
			goto fail;
	}
	for (int l = 0; l < c->n_layers && m->fusable; l++)
		m->fusable = fuse_takes(be, &m->l[l]);
freqs:
	if ((e = be->ops->alloc(be, sizeof(float) * (size_t)(c->head_dim / 2),
				(void **)&m->inv_freq_d)) ||
	    (e = be->ops->upload(be, m->inv_freq_d, inv, sizeof(float) * (size_t)(c->head_dim / 2))))
		goto fail;
	*out = m;
	return FI_OK;
fail:
	fi_model_close_rank(m);
	return e;
}

const struct fi_config *fi_model_config(const struct fi_model *m) { return &m->c; }
struct fi_backend *fi_model_backend(const struct fi_model *m) { return m->be; }
struct fi_kvcache *fi_model_cache(struct fi_model *m) { return m->cache; }

fi_err fi_model_set_kv_dtype(struct fi_model *m, enum fi_dtype dt)
{
	if (m->cache)
		return fi_fail(FI_ESTATE, "model: the kv cache already exists");
	if (dt != FI_DT_F8_E4M3 && dt != m->be->act)
		return fi_fail(FI_EUNSUPPORTED, "kv dtype %s: the %s backend keeps KV in %s or fp8",
			       fi_dtype_lname(dt), m->be->ops->name, fi_dtype_lname(m->be->act));
	m->kv_fp8 = dt == FI_DT_F8_E4M3;
	return FI_OK;
}

/* ---- the forward pass ---- */

fi_err fi_model_scratch(struct fi_model *m, int T, size_t n_ints, int rows)
{
	struct fi_backend *be = m->be;
	const struct fi_config *c = &m->c;
	size_t as = fi_dtype_size(be->act), cap;
	fi_err e;
	if (T > m->s.cap) {
		size_t D = (size_t)c->hidden, Q = (size_t)c->n_heads * c->head_dim,
		       KV = (size_t)c->n_kv_heads * c->head_dim, F = (size_t)c->ffn;
		cap = T < 16 ? 16 : (size_t)T;
		free_acts(m);
		m->gr.gen++;
		struct {
			void **p;
			size_t bytes;
		} a[] = {
			{&m->s.x, cap * D * as},    {&m->s.xb, cap * D * as},
			{&m->s.y, cap * D * as},    {&m->s.q, cap * Q * as},
			{&m->s.k, cap * KV * as},   {&m->s.v, cap * KV * as},
			{&m->s.att, cap * Q * as},  {&m->s.gate, cap * F * as},
			{&m->s.up, cap * F * as},   {&m->s.h, cap * F * as},
			{&m->s.g, cap * D * as},
		};
		for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
			if ((e = be->ops->alloc(be, a[i].bytes, a[i].p))) {
				*a[i].p = NULL;
				free_acts(m);
				return e;
			}
		m->s.cap = (int)cap;
	}
	if (n_ints > m->s.cap_ints) {
		if (m->s.ints)
			be->ops->free(be, m->s.ints);
		m->s.ints = NULL;
		m->s.cap_ints = 0;
		if ((e = be->ops->alloc(be, n_ints * sizeof(int32_t), (void **)&m->s.ints)))
			return e;
		m->s.cap_ints = n_ints;
	}
	if (rows > m->s.cap_rows) {
		int r = rows < 4 ? 4 : rows;
		free_rows(m);
		m->gr.gen++;
		if ((e = be->ops->alloc(be, (size_t)r * c->vocab * sizeof(float),
					(void **)&m->s.logits)) ||
		    (e = be->ops->alloc(be, (size_t)r * sizeof(int32_t), (void **)&m->s.am))) {
			free_rows(m);
			return e;
		}
		m->s.cap_rows = r;
	}
	return FI_OK;
}

/* fi_model_qkv_rope for a layer of the Llama family. */
static fi_err qkv_rope(struct fi_model *m, struct layer *L, int multi, const struct fi_rope *rope,
		       const int32_t *pos_d, const struct fi_attn_batch *ab, int l, int T)
{
	const struct fi_weight *const w3[] = {&L->q, &L->k, &L->v};
	const struct fi_weight *const b3[] = {&L->q_bias, &L->k_bias, &L->v_bias};
	const struct fi_weight *const qk[] = {&L->q_norm, &L->k_norm};
	return fi_model_qkv_rope(m, w3, m->c.qkv_bias ? b3 : NULL, m->c.qk_norm ? qk : NULL, multi,
				 rope, pos_d, ab, l, T);
}

static fi_err run_layers(struct fi_model *m, int T, const int32_t *tok_d, const int32_t *pos_d,
			 const struct fi_attn_batch *ab)
{
	struct fi_backend *be = m->be;
	const struct fi_backend_ops *op = be->ops;
	const struct fi_config *c = &m->c;
	struct scratch *s = &m->s;
	struct fi_rope rope = {.head_dim = c->head_dim, .inv_freq_d = m->inv_freq_d};
	int D = c->hidden, Hq = c->n_heads;
	float eps = c->rms_eps;
	fi_err e;

#define OK(x) do { if ((e = (x))) return e; } while (0)
	if (m->arch) /* model families (arch.h) */
		return fi_arch_layers(m, T, tok_d, pos_d, ab);
	OK(op->embed(be, s->x, &m->tok_embd, tok_d, T));
	if (m->fusable && T <= be->fuse_max_T) {
		/* Decode-sized: each weight pass carries its neighbours (backend.h), and the
		 * residual stream x is complete after every layer. */
		for (int l = 0; l < c->n_layers; l++) {
			struct layer *L = &m->l[l];
			const struct fi_weight *const w3[] = {&L->q, &L->k, &L->v};
			const struct fi_weight *const b3[] = {&L->q_bias, &L->k_bias, &L->v_bias};
			if (c->qk_norm) { /* Qwen3: the norm, one product, rope_kv_write */
				OK(op->rmsnorm(be, s->xb, s->x, NULL, &L->attn_norm, T, D, eps));
				OK(qkv_rope(m, L, op->matmul_multi != NULL, &rope, pos_d, ab, l, T));
			} else {
				OK(op->norm_qkv_rope(be, s->q, s->x, &L->attn_norm, eps, w3,
						     c->qkv_bias ? b3 : NULL, &rope, &m->cache->kv, l,
						     Hq, ab));
			}
			OK(op->attention(be, s->att, s->q, &m->cache->kv, l, Hq, ab));
			OK(op->matmul_add(be, s->x, s->att, &L->o, T));
			OK(op->norm_glu(be, s->h, s->x, &L->ffn_norm, eps, &L->gate, &L->up,
					   FI_GLU_SILU, T));
			OK(op->matmul_add(be, s->x, s->h, &L->down, T));
		}
		OK(op->rmsnorm(be, s->xb, s->x, NULL, &m->out_norm, T, D, eps));
		return FI_OK;
	}
	for (int l = 0; l < c->n_layers; l++) {
		struct layer *L = &m->l[l];
		/* attention block; from layer 1 on, the norm first adds the previous MLP output */
		OK(op->rmsnorm(be, s->xb, s->x, l ? s->y : NULL, &L->attn_norm, T, D, eps));
		OK(qkv_rope(m, L, op->matmul_multi != NULL, &rope, pos_d, ab, l, T));
		OK(op->attention(be, s->att, s->q, &m->cache->kv, l, Hq, ab));
		OK(op->matmul(be, s->y, s->att, &L->o, NULL, T));
		/* tensor parallelism: each rank's o product covers its heads only */
		OK(fi_comm_all_reduce(m->comm, s->y, (size_t)T * D, be->act));
		/* MLP block: x += attn; xb = norm(x) */
		OK(op->rmsnorm(be, s->xb, s->x, s->y, &L->ffn_norm, T, D, eps));
		if (op->matmul_glu) {
			OK(op->matmul_glu(be, s->h, s->gate, s->up, s->xb, &L->gate, &L->up, T));
		} else {
			if (op->matmul_multi) {
				void *const o2[] = {s->gate, s->up};
				const struct fi_weight *const w2[] = {&L->gate, &L->up};
				OK(op->matmul_multi(be, 2, o2, s->xb, w2, NULL, T));
			} else {
				OK(op->matmul(be, s->gate, s->xb, &L->gate, NULL, T));
				OK(op->matmul(be, s->up, s->xb, &L->up, NULL, T));
			}
			OK(op->silu_mul(be, s->h, s->gate, s->up, T, c->ffn));
		}
		OK(op->matmul(be, s->y, s->h, &L->down, NULL, T));
		OK(fi_comm_all_reduce(m->comm, s->y, (size_t)T * D, be->act)); /* its F/n columns */
	}
	OK(op->rmsnorm(be, s->xb, s->x, s->y, &m->out_norm, T, D, eps));
#undef OK
	return FI_OK;
}

fi_err fi_model_body(struct fi_model *m, int T, const int32_t *tok_d, const int32_t *pos_d,
		   const struct fi_attn_batch *ab, const int32_t *idx_d, int n, int argmax)
{
	struct fi_backend *be = m->be;
	const struct fi_config *c = &m->c;
	const struct fi_weight *head = m->vocab_n ? &m->head
				       : c->tie_embeddings ? &m->tok_embd : &m->output;
	int V = m->vocab_n ? m->vocab_n : c->vocab; /* a rank's shard of the vocabulary */
	const void *rows = m->s.xb;
	fi_err e;
	if ((e = run_layers(m, T, tok_d, pos_d, ab)) || !n)
		return e;
	if (idx_d) {
		if ((e = be->ops->gather_rows(be, m->s.g, m->s.xb, idx_d, n, c->hidden)))
			return e;
		rows = m->s.g;
	}
	if ((e = be->ops->matmul_f32out(be, m->s.logits, rows, head, n)))
		return e;
	/* model families: final logit soft-capping (Gemma 2), before argmax and sampling */
	if (c->final_softcap > 0 &&
	    (e = be->ops->softcap(be, m->s.logits, (int64_t)n * V, c->final_softcap)))
		return e;
	if (argmax && (e = be->ops->argmax(be, m->s.am, m->s.logits, n, V)))
		return e;
	return FI_OK;
}


fi_err fi_model_step_body(struct fi_model *m, const struct step_args *a)
{
	struct fi_backend *be = m->be;
	int T = a->T, S = a->S;
	fi_err e;
	if ((e = fi_model_scratch(m, T, a->need, a->n_out)) ||
	    (e = be->ops->upload(be, m->s.ints, a->h, a->need * sizeof(int32_t))))
		return e;
	int32_t *d = m->s.ints;
	struct fi_attn_batch ab = {
		.n_tokens = T,
		.n_seqs = S,
		.max_blocks = a->maxb,
		.tok_seq_d = d + 2 * T,
		.tok_pos_d = d + T,
		.slot_d = d + 3 * T,
		.seq_len_d = d + 5 * T,
		.block_table_d = d + 5 * T + S,
		.max_seq_len = a->max_len,
		.sliding_window = m->c.sliding_window,
		.scale = fi_attn_scale(&m->c),
		.n_decode = a->n_dec,
	};
	return fi_model_body(m, T, d, d + T, &ab, a->identity ? NULL : d + 4 * T, a->n_out,
			     a->argmax);
}


fi_err fi_model_load_hf(const char *dir, struct fi_backend *be, struct fi_model **out)
{
	struct fi_config c;
	struct fi_st_model *st = NULL;
	struct fi_tensor *t = NULL;
	char (*names)[64] = NULL;
	int n = 0;
	fi_err e;
	*out = NULL;
	if ((e = fi_config_load_dir(dir, &c)) || (e = fi_st_open_dir(dir, &st)))
		return e;
	t = calloc((size_t)st->set.n + 1, sizeof *t);
	names = calloc((size_t)st->set.n + 1, sizeof *names);
	if (!t || !names) {
		e = fi_fail(FI_ENOMEM, "model: out of memory");
		goto out;
	}
	for (int i = 0; i < st->set.n; i++) {
		int r = fi_name_from_hf_cfg(&c, st->set.t[i].name, names[n], sizeof names[n]);
		if (r < 0) {
			e = fi_fail(FI_EUNSUPPORTED, "'%s': unknown tensor '%s'", dir,
				    st->set.t[i].name);
			goto out;
		}
		if (r == 0)
			continue;
		t[n] = st->set.t[i];
		t[n].name = names[n];
		n++;
	}
	{
		struct fi_tensor_set ts = {n, t};
		e = fi_model_load(&c, &ts, be, out);
	}
out:
	free(t);
	free(names);
	fi_st_close_dir(st);
	return e;
}
