/* names: HF -> engine tensor names, the expected tensor list of a config, and a tensor set
 * checked against it (fi_config_check). */
#include "names.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *hf, *eng;
} layer_map[] = {
	{"input_layernorm.weight", "attn_norm"},
	{"self_attn.q_proj.weight", "attn_q"},
	{"self_attn.k_proj.weight", "attn_k"},
	{"self_attn.v_proj.weight", "attn_v"},
	{"self_attn.o_proj.weight", "attn_o"},
	{"self_attn.q_proj.bias", "attn_q_bias"},
	{"self_attn.k_proj.bias", "attn_k_bias"},
	{"self_attn.v_proj.bias", "attn_v_bias"},
	{"self_attn.q_norm.weight", "attn_q_norm"},
	{"self_attn.k_norm.weight", "attn_k_norm"},
	{"post_attention_layernorm.weight", "ffn_norm"},
	{"mlp.gate_proj.weight", "ffn_gate"},
	{"mlp.up_proj.weight", "ffn_up"},
	{"mlp.down_proj.weight", "ffn_down"},
};

/* Families whose HF names mean something else, or that have their own (names.h). */
static const struct {
	unsigned fams; /* bit per enum fi_family */
	const char *hf, *eng;
} fam_map[] = {
#define GEMMA ((1u << FI_FAM_GEMMA2) | (1u << FI_FAM_GEMMA3))
	/* Gemma: post_attention_layernorm normalises the attention output (sandwich norms) */
	{GEMMA, "post_attention_layernorm.weight", "attn_post_norm"},
	{GEMMA, "pre_feedforward_layernorm.weight", "ffn_norm"},
	{GEMMA, "post_feedforward_layernorm.weight", "ffn_post_norm"},
	{1u << FI_FAM_PHI3, "self_attn.qkv_proj.weight", "attn_qkv"},
	{1u << FI_FAM_PHI3, "mlp.gate_up_proj.weight", "ffn_gate_up"},
	{1u << FI_FAM_MIXTRAL, "block_sparse_moe.gate.weight", "ffn_router"},
	{1u << FI_FAM_QWEN3_MOE, "mlp.gate.weight", "ffn_router"},
	{1u << FI_FAM_BITNET, "self_attn.attn_sub_norm.weight", "attn_sub_norm"},
	{1u << FI_FAM_BITNET, "mlp.ffn_sub_norm.weight", "ffn_sub_norm"},
#undef GEMMA
};

/* Experts: HF "<prefix>.E.<kind>.weight" -> "ffn_<gate|up|down>.E". */
static const struct {
	enum fi_family fam;
	const char *prefix, *kind[3]; /* gate, up, down */
} exp_map[] = {
	{FI_FAM_MIXTRAL, "block_sparse_moe.experts.", {"w1", "w3", "w2"}},
	{FI_FAM_QWEN3_MOE, "mlp.experts.", {"gate_proj", "up_proj", "down_proj"}},
};

static int expert_name(const struct fi_config *c, long l, const char *p, char *out, size_t outsz)
{
	static const char *const eng[3] = {"ffn_gate", "ffn_up", "ffn_down"};
	for (size_t i = 0; i < sizeof exp_map / sizeof exp_map[0]; i++) {
		size_t n = strlen(exp_map[i].prefix);
		char *end;
		long e;
		if (exp_map[i].fam != c->family || strncmp(p, exp_map[i].prefix, n))
			continue;
		e = strtol(p + n, &end, 10);
		if (end == p + n || *end != '.' || e < 0 || e > 100000)
			return -1;
		for (int k = 0; k < 3; k++) {
			size_t kl = strlen(exp_map[i].kind[k]);
			if (!strncmp(end + 1, exp_map[i].kind[k], kl) && !strcmp(end + 1 + kl, ".weight")) {
				snprintf(out, outsz, "blk.%ld.%s.%ld", l, eng[k], e);
				return 1;
			}
		}
		return -1;
	}
	return -1;
}

/* Gemma 3's multimodal checkpoints: the text model under language_model (transformers 4.50
 * wrote "language_model.model.", later ones "model.language_model."), the vision tower and
 * projector beside it, which fi skips. */
static const char *text_tower(const char *p, int *skip)
{
	static const char *const vision[] = {"vision_tower.", "multi_modal_projector.",
					     "model.vision_tower.", "model.multi_modal_projector."};
	*skip = 0;
	for (size_t i = 0; i < sizeof vision / sizeof vision[0]; i++)
		if (!strncmp(p, vision[i], strlen(vision[i]))) {
			*skip = 1;
			return p;
		}
	if (!strncmp(p, "language_model.model.", 21))
		return p + 21;
	if (!strncmp(p, "model.language_model.", 21))
		return p + 21;
	if (!strncmp(p, "language_model.", 15)) /* language_model.lm_head.weight */
		return p + 15;
	return p;
}

int fi_name_from_hf_cfg(const struct fi_config *c, const char *hf, char *out, size_t outsz)
{
	const char *p = hf;
	int skip = 0;
	if (c && c->text_tower && (p = text_tower(hf, &skip)) && skip)
		return 0;
	if (!strcmp(p, "lm_head.weight"))
		return snprintf(out, outsz, "output") > 0;
	if (!strncmp(p, "model.", 6))
		p += 6;
	if (!strcmp(p, "embed_tokens.weight"))
		return snprintf(out, outsz, "tok_embd") > 0;
	if (!strcmp(p, "norm.weight"))
		return snprintf(out, outsz, "out_norm") > 0;
	if (!strncmp(p, "layers.", 7)) {
		char *end;
		long n = strtol(p + 7, &end, 10);
		if (end == p + 7 || *end != '.' || n < 0 || n > 100000)
			return -1;
		end++;
		if (!strcmp(end, "self_attn.rotary_emb.inv_freq"))
			return 0;
		for (size_t i = 0; c && i < sizeof fam_map / sizeof fam_map[0]; i++)
			if ((fam_map[i].fams >> c->family & 1) && !strcmp(end, fam_map[i].hf)) {
				snprintf(out, outsz, "blk.%ld.%s", n, fam_map[i].eng);
				return 1;
			}
		if (c && (c->family == FI_FAM_MIXTRAL || c->family == FI_FAM_QWEN3_MOE) &&
		    expert_name(c, n, end, out, outsz) == 1)
			return 1;
		for (size_t i = 0; i < sizeof layer_map / sizeof layer_map[0]; i++)
			if (!strcmp(end, layer_map[i].hf)) {
				snprintf(out, outsz, "blk.%ld.%s", n, layer_map[i].eng);
				return 1;
			}
	}
	return -1;
}

int fi_name_from_hf(const char *hf, char *out, size_t outsz)
{
	return fi_name_from_hf_cfg(NULL, hf, out, outsz);
}

static void set(struct fi_expected *e, const char *name, int ndim, int64_t a, int64_t b)
{
	snprintf(e->name, sizeof e->name, "%s", name);
	e->ndim = ndim;
	e->shape[0] = a;
	e->shape[1] = b;
}

struct layer_list {
	int n, at;       /* static tensors; experts go at index at */
	int experts;     /* 3 per expert in a mixture-of-experts layer, else 0 */
	const char *name[20];
	int nd[20];
	int64_t sh[20][2];
};

static int layer_is_moe(const struct fi_config *c, int l)
{
	return (fi_config_layer(c, l) & FI_LAYER_MOE) && c->n_experts > 0;
}

/* The tensors of a dense (moe 0) or mixture-of-experts layer: a layer's list depends on its
 * index only through that bit. Optional ones take a slot only when configured; the Llama
 * family's order is that of its images. Experts come after the router, before the post
 * norm. */
static void layer_kind(const struct fi_config *c, int moe, struct layer_list *o)
{
	const int64_t D = c->hidden, F = c->ffn, hd = c->head_dim;
	const int64_t q = (int64_t)c->n_heads * hd, kv = (int64_t)c->n_kv_heads * hd;
	int per = 0;
#define L(n, dd, a, b) (o->name[per] = (n), o->nd[per] = (dd), o->sh[per][0] = (a), \
			o->sh[per][1] = (b), per++)
	L("attn_norm", 1, D, 0);
	if (c->fused_qkv) {
		L("attn_qkv", 2, q + 2 * kv, D);
	} else {
		L("attn_q", 2, q, D);
		L("attn_k", 2, kv, D);
		L("attn_v", 2, kv, D);
	}
	if (c->qkv_bias) {
		L("attn_q_bias", 1, q, 0);
		L("attn_k_bias", 1, kv, 0);
		L("attn_v_bias", 1, kv, 0);
	}
	if (c->qk_norm) {
		L("attn_q_norm", 1, hd, 0);
		L("attn_k_norm", 1, hd, 0);
	}
	if (c->sub_norms)
		L("attn_sub_norm", 1, q, 0);
	L("attn_o", 2, D, q);
	if (c->sandwich)
		L("attn_post_norm", 1, D, 0);
	L("ffn_norm", 1, D, 0);
	if (moe) {
		L("ffn_router", 2, c->n_experts, D);
	} else if (c->fused_qkv) {
		L("ffn_gate_up", 2, 2 * F, D);
		L("ffn_down", 2, D, F);
	} else {
		L("ffn_gate", 2, F, D);
		L("ffn_up", 2, F, D);
		if (c->sub_norms)
			L("ffn_sub_norm", 1, F, 0);
		L("ffn_down", 2, D, F);
	}
	o->at = per;
	if (c->sandwich)
		L("ffn_post_norm", 1, D, 0);
#undef L
	o->n = per;
	o->experts = moe ? 3 * c->n_experts : 0;
}

static void layer_list(const struct fi_config *c, int l, struct layer_list *o)
{
	layer_kind(c, layer_is_moe(c, l), o);
}

/* Tensor k of a layer list: engine name and shape. */
static void layer_tensor(const struct fi_config *c, int l, const struct layer_list *o, int k,
			 struct fi_expected *e)
{
	static const char *const ek[3] = {"ffn_gate", "ffn_up", "ffn_down"};
	char nm[64];
	if (k >= o->at && k < o->at + o->experts) {
		const int64_t D = c->hidden, Fm = c->moe_ffn;
		k -= o->at;
		snprintf(nm, sizeof nm, "blk.%d.%s.%d", l, ek[k % 3], k / 3);
		set(e, nm, 2, k % 3 == 2 ? D : Fm, k % 3 == 2 ? Fm : D);
		return;
	}
	if (k >= o->at)
		k -= o->experts;
	snprintf(nm, sizeof nm, "blk.%d.%s", l, o->name[k]);
	set(e, nm, o->nd[k], o->sh[k][0], o->sh[k][1]);
}

int fi_layer_tensor_count(const struct fi_config *c, int l)
{
	struct layer_list o;
	layer_list(c, l, &o);
	return o.n + o.experts;
}

int fi_expected_tensor(const struct fi_config *c, int i, struct fi_expected *e)
{
	struct layer_list o;
	if (i < 0)
		return 0;
	if (i == 0) {
		set(e, "tok_embd", 2, c->vocab, c->hidden);
		return 1;
	}
	i--;
	if (!fi_config_is_arch(c)) { /* uniform layers */
		layer_list(c, 0, &o);
		if (i < c->n_layers * o.n) {
			layer_tensor(c, i / o.n, &o, i % o.n, e);
			return 1;
		}
		i -= c->n_layers * o.n;
	} else { /* layers may differ (MoE and dense ones): skip whole layers by their kind's
		  * count, so a call costs one pass over the layer bits, not a list per layer */
		struct layer_list kind[2];
		layer_kind(c, 0, &kind[0]);
		layer_kind(c, 1, &kind[1]);
		for (int l = 0; l < c->n_layers; l++) {
			const struct layer_list *k = &kind[layer_is_moe(c, l)];
			if (i < k->n + k->experts) {
				layer_tensor(c, l, k, i, e);
				return 1;
			}
			i -= k->n + k->experts;
		}
	}
	if (i == 0) {
		set(e, "out_norm", 1, c->hidden, 0);
		return 1;
	}
	if (i == 1 && !c->tie_embeddings) {
		set(e, "output", 2, c->vocab, c->hidden);
		return 1;
	}
	return 0;
}

/* Every expected tensor in order, as fi_expected_tensor(c, 0), (c, 1), ... gives them, in
 * one pass: a config of many experts and layers lists its tensors in linear time. Stops at
 * the first fn that returns nonzero and returns that. */
static int expected_each(const struct fi_config *c,
			 int (*fn)(void *ctx, const struct fi_expected *e), void *ctx)
{
	struct fi_expected e;
	struct layer_list kind[2];
	int r;
	set(&e, "tok_embd", 2, c->vocab, c->hidden);
	if ((r = fn(ctx, &e)))
		return r;
	layer_kind(c, 0, &kind[0]);
	layer_kind(c, 1, &kind[1]);
	for (int l = 0; l < c->n_layers; l++) {
		/* uniform layers all take layer 0's list, as fi_expected_tensor does */
		const struct layer_list *k = &kind[layer_is_moe(c, fi_config_is_arch(c) ? l : 0)];
		for (int t = 0; t < k->n + (fi_config_is_arch(c) ? k->experts : 0); t++) {
			layer_tensor(c, l, k, t, &e);
			if ((r = fn(ctx, &e)))
				return r;
		}
	}
	set(&e, "out_norm", 1, c->hidden, 0);
	if ((r = fn(ctx, &e)))
		return r;
	if (!c->tie_embeddings) {
		set(&e, "output", 2, c->vocab, c->hidden);
		return fn(ctx, &e);
	}
	return 0;
}

static void shape_str(char *buf, size_t sz, const int64_t *s, int nd)
{
	size_t o = (size_t)snprintf(buf, sz, "[");
	for (int i = 0; i < nd && o < sz; i++)
		o += (size_t)snprintf(buf + o, sz - o, "%s%lld", i ? ", " : "", (long long)s[i]);
	if (o < sz)
		snprintf(buf + o, sz - o, "]");
}

struct check {
	const struct fi_tensor_set *ts;
	json_t *want, *have;
};

/* One expected tensor: present, with its shape. Returns the error, or FI_OK. */
static int check_one(void *ctx, const struct fi_expected *e)
{
	struct check *k = ctx;
	json_t *h = json_object_get(k->have, e->name);
	const struct fi_tensor *t;
	char a[160], b[160];
	int same;
	shape_str(a, sizeof a, e->shape, e->ndim);
	json_object_set_new(k->want, e->name, json_true());
	if (!h)
		return fi_fail(FI_EMISMATCH, "tensor '%s' %s is missing", e->name, a);
	t = &k->ts->t[json_integer_value(h)];
	same = t->ndim == e->ndim;
	for (int d = 0; same && d < e->ndim; d++)
		same = t->shape[d] == e->shape[d];
	if (same)
		return FI_OK;
	shape_str(b, sizeof b, t->shape, t->ndim < FI_MAX_DIMS ? t->ndim : FI_MAX_DIMS);
	if (t->ndim != e->ndim)
		return fi_fail(FI_EMISMATCH, "tensor '%s' has %d dims %s, expected %d dims %s",
			       e->name, t->ndim, b, e->ndim, a);
	return fi_fail(FI_EMISMATCH, "tensor '%s' has shape %s, expected %s", e->name, b, a);
}

fi_err fi_config_check(const struct fi_config *c, const struct fi_tensor_set *ts)
{
	struct check k = {ts, NULL, NULL};
	char b[160];
	fi_err err = FI_OK;

	if (c->hidden <= 0 || c->n_layers <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 ||
	    c->head_dim <= 0 || c->ffn <= 0 || c->vocab <= 0)
		return fi_fail(FI_EMISMATCH, "config: sizes must be positive");
	if (c->n_heads % c->n_kv_heads)
		return fi_fail(FI_EMISMATCH, "config: 'num_attention_heads' (%d) is not a multiple of "
			       "'num_key_value_heads' (%d)", c->n_heads, c->n_kv_heads);
	k.want = json_object();
	k.have = json_object();
	if (!k.want || !k.have) {
		err = fi_fail(FI_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < ts->n; i++) {
		if (json_object_get(k.have, ts->t[i].name)) {
			err = fi_fail(FI_EMISMATCH, "tensor '%s' appears twice", ts->t[i].name);
			goto out;
		}
		json_object_set_new(k.have, ts->t[i].name, json_integer(i));
	}
	if ((err = (fi_err)expected_each(c, check_one, &k)))
		goto out;
	for (int i = 0; i < ts->n; i++)
		if (!json_object_get(k.want, ts->t[i].name)) {
			shape_str(b, sizeof b, ts->t[i].shape, ts->t[i].ndim);
			err = fi_fail(FI_EMISMATCH, "unexpected tensor '%s' %s", ts->t[i].name, b);
			goto out;
		}
out:
	json_decref(k.want);
	json_decref(k.have);
	return err;
}

static int count_one(void *ctx, const struct fi_expected *e)
{
	*(long long *)ctx += e->ndim == 2 ? e->shape[0] * e->shape[1] : e->shape[0];
	return 0;
}

long long fi_config_params(const struct fi_config *c)
{
	long long n = 0;
	expected_each(c, count_one, &n);
	return n;
}
