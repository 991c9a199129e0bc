/* config_rope: rope_scaling (rope_parameters of newer transformers) of a config.json: its
 * type and the factors of default, linear, llama3 and dynamic, and YaRN and LongRoPE as
 * transformers reads them (modeling_rope_utils). Below config_family.c (Gemma 3's local
 * rope object) and config_json.c. */
#include <math.h>
#include <string.h>

#include "config_int.h"

/* rope_scaling (or rope_parameters of newer transformers): type and its factors. */
fi_err fi_cfg_parse_rope(const struct fi_cfg_src *s, struct fi_config *c)
{
	const char *key = "rope_scaling";
	json_t *r = json_object_get(s->o, key), *t;
	struct fi_cfg_src rs;
	const char *type;
	fi_err err;
	if (!r || json_is_null(r)) {
		key = "rope_parameters";
		r = json_object_get(s->o, key);
	}
	c->rope_type = FI_ROPE_DEFAULT;
	if (!r || json_is_null(r))
		return FI_OK;
	if (!json_is_object(r))
		return fi_fail(FI_EFORMAT, "%s: '%s' is not an object", s->file, key);
	if (json_is_number(json_object_get(r, "rope_theta"))) {
		rs = (struct fi_cfg_src){r, s->file};
		if ((err = fi_cfg_num(&rs, "rope_theta", 0, c->rope_theta, &c->rope_theta)))
			return fi_fail_ctx(err, "%s", key);
	}
	t = json_object_get(r, "rope_type");
	if (!t || json_is_null(t))
		t = json_object_get(r, "type");
	if (!t || json_is_null(t)) {
		if (!strcmp(key, "rope_parameters"))
			return FI_OK;
		return fi_fail(FI_EFORMAT, "%s: 'rope_scaling.rope_type' is missing", s->file);
	}
	if (!json_is_string(t))
		return fi_fail(FI_EFORMAT, "%s: '%s.rope_type' is not a string", s->file, key);
	type = json_string_value(t);
	if (!strcmp(type, "default"))
		return FI_OK;
	if (!strcmp(type, "llama3"))
		c->rope_type = FI_ROPE_LLAMA3;
	else if (!strcmp(type, "linear"))
		c->rope_type = FI_ROPE_LINEAR;
	else if (!strcmp(type, "dynamic"))
		c->rope_type = FI_ROPE_DYNAMIC;
	else if (!strcmp(type, "yarn"))
		c->rope_type = FI_ROPE_YARN;
	else if (!strcmp(type, "longrope") || !strcmp(type, "su"))
		c->rope_type = FI_ROPE_LONGROPE;
	else
		return fi_fail(FI_EUNSUPPORTED, "%s: '%s' type '%s' is not supported", s->file, key, type);

	/* Names the nested key in messages: "rope_scaling.factor". */
	{
		char file[256];
		snprintf(file, sizeof file, "%s: %s", s->file, key);
		rs = (struct fi_cfg_src){r, file};
		if (c->rope_type == FI_ROPE_YARN || c->rope_type == FI_ROPE_LONGROPE)
			return fi_cfg_parse_rope_ext((const struct fi_cfg_src *)s,
						     (const struct fi_cfg_src *)&rs, type, c);
		if ((err = fi_cfg_num(&rs, "factor", 1, 0, &c->rope_factor)))
			return err;
		if (c->rope_type != FI_ROPE_LLAMA3)
			return FI_OK;
		if ((err = fi_cfg_num(&rs, "low_freq_factor", 1, 0, &c->rope_low_freq_factor)) ||
		    (err = fi_cfg_num(&rs, "high_freq_factor", 1, 0, &c->rope_high_freq_factor)) ||
		    (err = fi_cfg_int(&rs, "original_max_position_embeddings", 1, 0, 1, MAX_POS,
				   &c->rope_orig_max_pos)))
			return err;
		/* The llama3 ramp divides by (high - low). */
		if (c->rope_high_freq_factor <= c->rope_low_freq_factor)
			return fi_fail(FI_ERANGE, "%s: 'high_freq_factor' must exceed 'low_freq_factor'", file);
	}
	return FI_OK;
}

/* original_max_position_embeddings: Phi3Config carries it at the top (default 4096) and
 * transformers prefers that; elsewhere the rope object's, else max_position_embeddings. */
static fi_err orig_max(const struct fi_cfg_src *s, const struct fi_cfg_src *r, struct fi_config *c)
{
	const char *k = "original_max_position_embeddings";
	if (c->family == FI_FAM_PHI3)
		return fi_cfg_int(s, k, 0, 4096, 1, 1 << 24, &c->rope_orig_max_pos);
	if (!fi_cfg_absent(r, k))
		return fi_cfg_int(r, k, 1, 0, 1, 1 << 24, &c->rope_orig_max_pos);
	return fi_cfg_int(s, k, 0, c->max_pos, 1, 1 << 24, &c->rope_orig_max_pos);
}

static double yarn_mscale(double scale, double m)
{
	return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

static fi_err factors(const struct fi_cfg_src *r, const char *key, int n, float *out)
{
	json_t *a = json_object_get(r->o, key);
	if (!a || json_is_null(a))
		return fi_fail(FI_EFORMAT, "%s: '%s' is missing", r->file, key);
	if (!json_is_array(a) || json_array_size(a) != (size_t)n)
		return fi_fail(FI_EFORMAT, "%s: '%s' is not an array of %d numbers (head_dim / 2)",
			       r->file, key, n);
	for (int i = 0; i < n; i++) {
		json_t *x = json_array_get(a, (size_t)i);
		double v = json_is_number(x) ? json_number_value(x) : -1;
		if (!(v > 0) || !isfinite(v))
			return fi_fail(FI_ERANGE, "%s: '%s'[%d] is not a positive number", r->file, key, i);
		out[i] = (float)v;
	}
	return FI_OK;
}

fi_err fi_cfg_parse_rope_ext(const struct fi_cfg_src *s, const struct fi_cfg_src *r,
			     const char *type, struct fi_config *c)
{
	double mscale = 0, mscale_all = 0, factor;
	fi_err e;
	if ((e = orig_max(s, r, c)))
		return e;
	if (c->rope_type == FI_ROPE_YARN) {
		if ((e = fi_cfg_num(r, "factor", 1, 0, &c->rope_factor)) ||
		    (e = fi_cfg_num(r, "beta_fast", 0, 32, &c->rope_beta_fast)) ||
		    (e = fi_cfg_num(r, "beta_slow", 0, 1, &c->rope_beta_slow)) ||
		    (e = fi_cfg_num(r, "mscale", 0, 0, &mscale)) ||
		    (e = fi_cfg_num(r, "mscale_all_dim", 0, 0, &mscale_all)) ||
		    (e = fi_cfg_bool(r, "truncate", 1, &c->rope_truncate)) ||
		    (e = fi_cfg_num(r, "attention_factor", 0, 0, &c->rope_attn_factor)))
			return e;
		if (c->rope_attn_factor == 0)
			c->rope_attn_factor = mscale && mscale_all ?
				yarn_mscale(c->rope_factor, mscale) / yarn_mscale(c->rope_factor, mscale_all) :
				yarn_mscale(c->rope_factor, 1);
		return FI_OK;
	}
	/* longrope ("su" is its old name) */
	c->n_rope_factors = c->head_dim / 2;
	if (c->n_rope_factors > FI_MAX_ROPE_FACTORS)
		return fi_fail(FI_ERANGE, "%s: head_dim %d is too large for '%s'", r->file, c->head_dim,
			       type);
	if ((e = factors(r, "short_factor", c->n_rope_factors, c->rope_short)) ||
	    (e = factors(r, "long_factor", c->n_rope_factors, c->rope_long_f)) ||
	    (e = fi_cfg_num(r, "factor", 0, (double)c->max_pos / c->rope_orig_max_pos, &factor)) ||
	    (e = fi_cfg_num(r, "attention_factor", 0, 0, &c->rope_attn_factor)))
		return e;
	c->rope_factor = factor;
	if (c->rope_attn_factor == 0)
		c->rope_attn_factor = factor <= 1 ? 1.0 :
			sqrt(1 + log(factor) / log((double)c->rope_orig_max_pos));
	/* Fixed for the model, as vLLM does (fi-load(1)): a sequence's keys never change their
	 * rotation as it grows. */
	c->rope_long = c->max_pos > c->rope_orig_max_pos;
	return FI_OK;
}
