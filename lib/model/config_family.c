/* config_family: the config.json keys of Gemma 2 and 3, Phi-3, Mixtral, Qwen3-MoE and BitNet
 * (the YaRN and LongRoPE rope_scaling types are config_rope.c's). Defaults are those of the transformers config
 * classes (Gemma2Config, Gemma3TextConfig, Phi3Config, MixtralConfig, Qwen3MoeConfig); what a
 * wrong default would silently turn into garbage (the expert counts) is required, and every
 * inconsistency is refused naming the key. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config_int.h"

#define MAX_EXPERTS 1024

/* A number that may be null (disabled: 0) or absent (def). */
static fi_err opt_num(const struct fi_cfg_src *s, const char *key, double def, float *out)
{
	json_t *v = json_object_get(s->o, key);
	double x;
	fi_err e;
	if (v && json_is_null(v)) {
		*out = 0;
		return FI_OK;
	}
	if ((e = fi_cfg_num(s, key, 0, def, &x)))
		return e;
	*out = (float)x;
	return FI_OK;
}

/* Gemma's sliding/full pattern: layer_types, or every pattern-th layer global. */
static fi_err layer_types(const struct fi_cfg_src *s, struct fi_config *c, int pattern)
{
	json_t *lt = json_object_get(s->o, "layer_types");
	int any = 0;
	if (!lt || json_is_null(lt)) {
		if (c->family == FI_FAM_GEMMA3) {
			fi_err e = fi_cfg_int(s, "sliding_window_pattern", 0, 6, 1, FI_MAX_LAYERS, &pattern);
			if (e)
				return e;
		}
		for (int l = 0; l < c->n_layers; l++)
			if ((l + 1) % pattern) {
				c->layer[l] |= FI_LAYER_SLIDING;
				any = 1;
			}
	} else {
		if (!json_is_array(lt))
			return fi_fail(FI_EFORMAT, "%s: 'layer_types' is not an array", s->file);
		if (json_array_size(lt) != (size_t)c->n_layers)
			return fi_fail(FI_EFORMAT, "%s: 'layer_types' lists %zu layers, "
				       "'num_hidden_layers' is %d", s->file, json_array_size(lt), c->n_layers);
		for (int l = 0; l < c->n_layers; l++) {
			const char *k = json_string_value(json_array_get(lt, (size_t)l));
			if (k && !strcmp(k, "sliding_attention")) {
				c->layer[l] |= FI_LAYER_SLIDING;
				any = 1;
			} else if (!k || strcmp(k, "full_attention")) {
				return fi_fail(FI_EFORMAT, "%s: 'layer_types'[%d] is not \"sliding_attention\" "
					       "or \"full_attention\"", s->file, l);
			}
		}
	}
	if (!json_object_get(s->o, "sliding_window")) {
		c->sliding_window = 4096;
	} else {
		fi_err e = fi_cfg_int(s, "sliding_window", 0, 0, 0, INT32_MAX, &c->sliding_window);
		if (e)
			return e;
	}
	if (any && c->sliding_window <= 0)
		return fi_fail(FI_EFORMAT, "%s: 'sliding_window' is null but 'layer_types' has sliding "
			       "layers", s->file);
	if (!any)
		c->sliding_window = 0;
	return FI_OK;
}

/* Gemma 3's two rope bases: rope_theta (global layers, where rope_scaling applies) and
 * rope_local_base_freq; or, as transformers 5 writes them, rope_parameters per layer type. */
static fi_err gemma3_rope(const struct fi_cfg_src *s, struct fi_config *c)
{
	json_t *rp = json_object_get(s->o, "rope_parameters"), *full, *sl;
	if (rp && json_is_object(rp) && (full = json_object_get(rp, "full_attention"))) {
		char file[256];
		json_t *wrap, *legacy = json_object_get(s->o, "rope_scaling");
		fi_err e;
		/* the legacy key was parsed first (fi_cfg_parse_rope); two scalings for the global
		 * layers would leave one's factors under the other's type */
		if (legacy && !json_is_null(legacy))
			return fi_fail(FI_EFORMAT, "%s: both 'rope_scaling' and per-layer 'rope_parameters' "
				       "are given: keep one", s->file);
		snprintf(file, sizeof file, "%s: rope_parameters.full_attention", s->file);
		if (!json_is_object(full))
			return fi_fail(FI_EFORMAT, "%s is not an object", file);
		wrap = json_pack("{s:O}", "rope_parameters", full);
		{
			struct fi_cfg_src w = {wrap, s->file};
			c->rope_type = FI_ROPE_DEFAULT;
			e = fi_cfg_parse_rope(&w, c);
		}
		json_decref(wrap);
		if (e)
			return e;
		c->rope_local_theta = 10000.0;
		sl = json_object_get(rp, "sliding_attention");
		if (sl && !json_is_null(sl)) {
			struct fi_cfg_src ls = {sl, file};
			json_t *t = json_object_get(sl, "rope_type");
			snprintf(file, sizeof file, "%s: rope_parameters.sliding_attention", s->file);
			if (!json_is_object(sl))
				return fi_fail(FI_EFORMAT, "%s is not an object", file);
			if (t && !json_is_null(t) && (!json_is_string(t) || strcmp(json_string_value(t), "default")))
				return fi_fail(FI_EUNSUPPORTED, "%s: only the default 'rope_type' is supported "
					       "for sliding layers", file);
			if ((e = fi_cfg_num(&ls, "rope_theta", 0, 10000.0, &c->rope_local_theta)))
				return e;
		}
		return FI_OK;
	}
	return fi_cfg_num(s, "rope_local_base_freq", 0, 10000.0, &c->rope_local_theta);
}

static fi_err gemma(const struct fi_cfg_src *s, struct fi_config *c)
{
	const char *key = fi_cfg_absent(s, "hidden_activation") ? "hidden_act" : "hidden_activation";
	json_t *act = json_object_get(s->o, key);
	int bias = 0, bidi = 0;
	double qs;
	fi_err e;
	if (act && !json_is_null(act) &&
	    (!json_is_string(act) || strcmp(json_string_value(act), "gelu_pytorch_tanh")))
		return fi_fail(FI_EUNSUPPORTED, "%s: '%s' %s is not supported (only gelu_pytorch_tanh)",
			       s->file, key, json_is_string(act) ? json_string_value(act) : "of this type");
	c->act = FI_ACT_GELU_TANH;
	c->norm_plus_one = 1;
	c->sandwich = 1;
	c->qk_norm = c->family == FI_FAM_GEMMA3;
	/* hidden_size ** 0.5 as a torch f32 scalar */
	c->embed_scale = (float)sqrt((double)c->hidden);
	if ((e = fi_cfg_bool(s, "attention_bias", 0, &bias)) ||
	    (e = fi_cfg_bool(s, "use_bidirectional_attention", 0, &bidi)))
		return e;
	if (bias)
		return fi_fail(FI_EUNSUPPORTED, "%s: 'attention_bias' true is not supported", s->file);
	if (bidi)
		return fi_fail(FI_EUNSUPPORTED, "%s: 'use_bidirectional_attention' true is not supported "
			       "(fi runs causal language models)", s->file);
	if ((e = fi_cfg_num(s, "query_pre_attn_scalar", 0, 256, &qs)))
		return e;
	c->query_scalar = (float)qs;
	if ((e = opt_num(s, "attn_logit_softcapping", c->family == FI_FAM_GEMMA2 ? 50.0 : 0,
			 &c->attn_softcap)) ||
	    (e = opt_num(s, "final_logit_softcapping", c->family == FI_FAM_GEMMA2 ? 30.0 : 0,
			 &c->final_softcap)) ||
	    (e = layer_types(s, c, 2)))
		return e;
	if (c->family == FI_FAM_GEMMA3)
		return gemma3_rope(s, c);
	return FI_OK;
}

static fi_err phi3(const struct fi_cfg_src *s, struct fi_config *c)
{
	double prf = 1;
	fi_err e;
	c->fused_qkv = 1;
	if ((e = fi_cfg_num(s, "partial_rotary_factor", 0, 1, &prf)))
		return e;
	if (prf != 1)
		return fi_fail(FI_EUNSUPPORTED, "%s: 'partial_rotary_factor' %g is not supported (only "
			       "1: every dimension rotated)", s->file, prf);
	if (c->sliding_window > 0)
		for (int l = 0; l < c->n_layers; l++)
			c->layer[l] |= FI_LAYER_SLIDING;
	return FI_OK;
}

/* The expert counts: required, since a default would silently be a different model. */
static fi_err experts(const struct fi_cfg_src *s, struct fi_config *c)
{
	/* MixtralConfig says num_local_experts, Qwen3MoeConfig num_experts; either is read */
	const char *ek = !fi_cfg_absent(s, "num_local_experts") ? "num_local_experts" :
			 !fi_cfg_absent(s, "num_experts") || c->family == FI_FAM_QWEN3_MOE ?
			 "num_experts" : "num_local_experts";
	fi_err e;
	if ((e = fi_cfg_int(s, ek, 1, 0, 1, MAX_EXPERTS, &c->n_experts)) ||
	    (e = fi_cfg_int(s, "num_experts_per_tok", 1, 0, 1, MAX_EXPERTS, &c->n_experts_used)))
		return e;
	if (c->n_experts_used > c->n_experts)
		return fi_fail(FI_EFORMAT, "%s: 'num_experts_per_tok' (%d) exceeds '%s' (%d)", s->file,
			       c->n_experts_used, ek, c->n_experts);
	return FI_OK;
}

static fi_err mixtral(const struct fi_cfg_src *s, struct fi_config *c)
{
	fi_err e = experts(s, c);
	if (e)
		return e;
	c->moe_ffn = c->ffn;
	c->norm_topk = 1; /* MixtralTopKRouter: softmax, top-k, divided by their sum */
	c->sparse_step = 1;
	for (int l = 0; l < c->n_layers; l++)
		c->layer[l] |= FI_LAYER_MOE | (c->sliding_window > 0 ? FI_LAYER_SLIDING : 0);
	return FI_OK;
}

static fi_err qwen3_moe(const struct fi_cfg_src *s, struct fi_config *c)
{
	json_t *only = json_object_get(s->o, "mlp_only_layers");
	unsigned char dense[FI_MAX_LAYERS] = {0};
	int sw;
	fi_err e;
	c->qk_norm = 1;
	if ((e = experts(s, c)) ||
	    (e = fi_cfg_int(s, "moe_intermediate_size", 1, 0, 1, 1 << 20, &c->moe_ffn)) ||
	    (e = fi_cfg_bool(s, "norm_topk_prob", 0, &c->norm_topk)) ||
	    (e = fi_cfg_int(s, "decoder_sparse_step", 0, 1, 1, c->n_layers, &c->sparse_step)) ||
	    (e = fi_cfg_bool(s, "attention_bias", 0, &c->qkv_bias)))
		return e;
	if (only && !json_is_null(only)) {
		if (!json_is_array(only))
			return fi_fail(FI_EFORMAT, "%s: 'mlp_only_layers' is not an array", s->file);
		for (size_t i = 0; i < json_array_size(only); i++) {
			json_t *x = json_array_get(only, i);
			if (!json_is_integer(x) || json_integer_value(x) < 0 ||
			    json_integer_value(x) >= c->n_layers)
				return fi_fail(FI_EFORMAT, "%s: 'mlp_only_layers'[%zu] is not a layer index "
					       "below %d", s->file, i, c->n_layers);
			dense[json_integer_value(x)] = 1;
		}
	}
	sw = c->sliding_window > 0 ? FI_LAYER_SLIDING : 0;
	for (int l = 0; l < c->n_layers; l++)
		c->layer[l] |= sw | (!dense[l] && (l + 1) % c->sparse_step == 0 ? FI_LAYER_MOE : 0);
	return FI_OK;
}

/* BitNet b1.58 (BitNetConfig): relu2 GLU, the two sub-norms, no biases; quantization_config
 * "bitnet" (offline: packed ternary weights, quant_hf.h) or none (float weights, plain linear
 * layers, as transformers runs such a checkpoint). */
static fi_err bitnet(const struct fi_cfg_src *top, const struct fi_cfg_src *s, struct fi_config *c)
{
	json_t *act = json_object_get(s->o, "hidden_act"), *q = json_object_get(top->o, "quantization_config");
	int bias = 0;
	fi_err e;
	if (act && !json_is_null(act) &&
	    (!json_is_string(act) || strcmp(json_string_value(act), "relu2")))
		return fi_fail(FI_EUNSUPPORTED, "%s: 'hidden_act' %s is not supported (only relu2)",
			       s->file, json_is_string(act) ? json_string_value(act) : "of this type");
	if ((e = fi_cfg_bool(s, "attention_bias", 0, &bias)))
		return e;
	if (bias)
		return fi_fail(FI_EUNSUPPORTED, "%s: 'attention_bias' true is not supported", s->file);
	c->act = FI_ACT_RELU2;
	c->sub_norms = 1;
	if (q && json_is_object(q)) {
		json_t *m = json_object_get(q, "quant_method");
		c->ternary = json_is_string(m) && !strcmp(json_string_value(m), "bitnet");
	}
	return FI_OK;
}

fi_err fi_cfg_parse_family(const struct fi_cfg_src *top, const struct fi_cfg_src *s,
			   struct fi_config *c)
{
	if (c->n_layers > FI_MAX_LAYERS)
		return fi_fail(FI_ERANGE, "%s: 'num_hidden_layers' %d exceeds %d", s->file, c->n_layers,
			       FI_MAX_LAYERS);
	switch (c->family) {
	case FI_FAM_GEMMA2:
	case FI_FAM_GEMMA3:
		return gemma(s, c);
	case FI_FAM_PHI3:
		return phi3(s, c);
	case FI_FAM_MIXTRAL:
		return mixtral(s, c);
	case FI_FAM_QWEN3_MOE:
		return qwen3_moe(s, c);
	case FI_FAM_BITNET:
		return bitnet(top, s, c);
	default:
		return FI_OK;
	}
}

static json_t *floats(const float *x, int n)
{
	json_t *a = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(a, json_real(x[i]));
	return a;
}

void fi_cfg_family_json(const struct fi_config *c, json_t *o)
{
	switch (c->rope_type) {
	case FI_ROPE_YARN:
		json_object_set_new(o, "rope_scaling", json_pack(
			"{s:s, s:f, s:i, s:f, s:f, s:f, s:b}", "rope_type", "yarn", "factor", c->rope_factor,
			"original_max_position_embeddings", c->rope_orig_max_pos, "attention_factor",
			c->rope_attn_factor, "beta_fast", c->rope_beta_fast, "beta_slow", c->rope_beta_slow,
			"truncate", c->rope_truncate));
		break;
	case FI_ROPE_LONGROPE:
		json_object_set_new(o, "rope_scaling", json_pack(
			"{s:s, s:o, s:o, s:f, s:f}", "rope_type", "longrope", "short_factor",
			floats(c->rope_short, c->n_rope_factors), "long_factor",
			floats(c->rope_long_f, c->n_rope_factors), "factor", c->rope_factor,
			"attention_factor", c->rope_attn_factor));
		json_object_set_new(o, "original_max_position_embeddings", json_integer(c->rope_orig_max_pos));
		break;
	default:
		break;
	}
	switch (c->family) {
	case FI_FAM_GEMMA2:
	case FI_FAM_GEMMA3: {
		json_t *lt = json_array();
		for (int l = 0; l < c->n_layers; l++)
			json_array_append_new(lt, json_string(c->layer[l] & FI_LAYER_SLIDING ?
								      "sliding_attention" : "full_attention"));
		json_object_set_new(o, "hidden_activation", json_string("gelu_pytorch_tanh"));
		json_object_set_new(o, "query_pre_attn_scalar", json_real(c->query_scalar));
		json_object_set_new(o, "attn_logit_softcapping",
				    c->attn_softcap > 0 ? json_real(c->attn_softcap) : json_null());
		json_object_set_new(o, "final_logit_softcapping",
				    c->final_softcap > 0 ? json_real(c->final_softcap) : json_null());
		json_object_set_new(o, "sliding_window", c->sliding_window > 0 ?
				    json_integer(c->sliding_window) : json_null());
		json_object_set_new(o, "layer_types", lt);
		if (c->family == FI_FAM_GEMMA3)
			json_object_set_new(o, "rope_local_base_freq", json_real(c->rope_local_theta));
		break;
	}
	case FI_FAM_MIXTRAL:
		json_object_set_new(o, "num_local_experts", json_integer(c->n_experts));
		json_object_set_new(o, "num_experts_per_tok", json_integer(c->n_experts_used));
		break;
	case FI_FAM_QWEN3_MOE: {
		json_t *only = json_array();
		for (int l = 0; l < c->n_layers; l++)
			if (!(c->layer[l] & FI_LAYER_MOE))
				json_array_append_new(only, json_integer(l));
		json_object_set_new(o, "num_experts", json_integer(c->n_experts));
		json_object_set_new(o, "num_experts_per_tok", json_integer(c->n_experts_used));
		json_object_set_new(o, "moe_intermediate_size", json_integer(c->moe_ffn));
		json_object_set_new(o, "norm_topk_prob", json_boolean(c->norm_topk));
		json_object_set_new(o, "decoder_sparse_step", json_integer(1));
		json_object_set_new(o, "mlp_only_layers", only);
		json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
		json_object_set_new(o, "use_sliding_window", json_boolean(c->sliding_window > 0));
		break;
	}
	case FI_FAM_BITNET:
		json_object_set_new(o, "hidden_act", json_string("relu2"));
		if (c->ternary)
			json_object_set_new(o, "quantization_config", json_pack(
				"{s:s, s:s, s:s}", "quant_method", "bitnet", "linear_class", "autobitlinear",
				"quantization_mode", "offline"));
		break;
	default:
		break;
	}
}
