/* names: HF -> engine tensor names and the expected tensor list of a config. */
#include "names.h"

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

int fi_name_from_hf(const char *hf, char *out, size_t outsz)
{
	const char *p = hf;
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
		for (size_t i = 0; i < sizeof layer_map / sizeof layer_map[0]; i++)
			if (!strcmp(end, layer_map[i].hf)) {
				snprintf(out, outsz, "blk.%ld.%s", n, layer_map[i].eng);
				return 1;
			}
	}
	return -1;
}

static void set(struct fi_expected *e, const char *name, int ndim, int64_t a, int64_t b)
{
	snprintf(e->name, sizeof e->name, "%s", name);
	e->ndim = ndim;
	e->shape[0] = a;
	e->shape[1] = b;
}

int fi_expected_tensor(const struct fi_config *c, int i, struct fi_expected *e)
{
	const int64_t D = c->hidden, F = c->ffn, V = c->vocab, hd = c->head_dim;
	const int64_t q = (int64_t)c->n_heads * hd, kv = (int64_t)c->n_kv_heads * hd;
	char nm[64];
	int per = 0;
	/* Layer tensors in a fixed order; optional ones take a slot only when configured. */
	const char *lt[16];
	int64_t sh[16][2];
	int nd[16];
#define L(n, d, a, b) (lt[per] = (n), nd[per] = (d), sh[per][0] = (a), sh[per][1] = (b), per++)
	L("attn_norm", 1, D, 0);
	L("attn_q", 2, q, D);
	L("attn_k", 2, kv, D);
	L("attn_v", 2, kv, D);
	if (c->qkv_bias) {
		L("attn_q_bias", 1, q, 0);
		L("attn_k_bias", 1, kv, 0);
		L("attn_v_bias", 1, kv, 0);
	}
	if (c->qk_norm) {
		L("attn_q_norm", 1, hd, 0);
		L("attn_k_norm", 1, hd, 0);
	}
	L("attn_o", 2, D, q);
	L("ffn_norm", 1, D, 0);
	L("ffn_gate", 2, F, D);
	L("ffn_up", 2, F, D);
	L("ffn_down", 2, D, F);
#undef L
	if (i == 0) {
		set(e, "tok_embd", 2, V, D);
		return 1;
	}
	i--;
	if (i < c->n_layers * per) {
		int l = i / per, k = i % per;
		snprintf(nm, sizeof nm, "blk.%d.%s", l, lt[k]);
		set(e, nm, nd[k], sh[k][0], sh[k][1]);
		return 1;
	}
	i -= c->n_layers * per;
	if (i == 0) {
		set(e, "out_norm", 1, D, 0);
		return 1;
	}
	if (i == 1 && !c->tie_embeddings) {
		set(e, "output", 2, V, D);
		return 1;
	}
	return 0;
}
