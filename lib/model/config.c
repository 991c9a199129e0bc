/* config: struct fi_config (config.h) and what every reader of config.json shares: the
 * families by architecture and model_type, and the key readers that name the file and key in
 * every error (config_int.h). config.json itself is read in config_json.c, its rope_scaling
 * in config_rope.c, the keys of the families beyond Llama in config_family.c. */
#include "config.h"

#include <math.h>

#include "config_int.h"

static const struct {
	const char *arch, *model_type;
} fam[FI_FAM_COUNT] = {
	[FI_FAM_LLAMA] = {"LlamaForCausalLM", "llama"},
	[FI_FAM_MISTRAL] = {"MistralForCausalLM", "mistral"},
	[FI_FAM_QWEN2] = {"Qwen2ForCausalLM", "qwen2"},
	[FI_FAM_QWEN3] = {"Qwen3ForCausalLM", "qwen3"},
	[FI_FAM_GEMMA2] = {"Gemma2ForCausalLM", "gemma2"},
	[FI_FAM_GEMMA3] = {"Gemma3ForCausalLM", "gemma3_text"},
	[FI_FAM_PHI3] = {"Phi3ForCausalLM", "phi3"},
	[FI_FAM_MIXTRAL] = {"MixtralForCausalLM", "mixtral"},
	[FI_FAM_QWEN3_MOE] = {"Qwen3MoeForCausalLM", "qwen3_moe"},
	[FI_FAM_BITNET] = {"BitNetForCausalLM", "bitnet"},
};

int fi_config_is_arch(const struct fi_config *c)
{
	return c->family >= FI_FAM_GEMMA2 && c->family < FI_FAM_COUNT;
}

const char *fi_family_name(enum fi_family f)
{
	return (unsigned)f < FI_FAM_COUNT ? fam[f].model_type : "?";
}

const char *fi_cfg_family_arch(enum fi_family f)
{
	return (unsigned)f < FI_FAM_COUNT ? fam[f].arch : "?";
}

int fi_cfg_absent(const struct fi_cfg_src *s, const char *key)
{
	json_t *v = json_object_get(s->o, key);
	return !v || json_is_null(v);
}

/* Integer key in [lo, hi]; absent or null gives def, or an error when required. */
fi_err fi_cfg_int(const struct fi_cfg_src *s, const char *key, int required, long long def,
		  long long lo, long long hi, int *out)
{
	json_t *v = json_object_get(s->o, key);
	long long x;
	if (!v || json_is_null(v)) {
		if (required)
			return fi_fail(FI_EFORMAT, "%s: '%s' is missing", s->file, key);
		*out = (int)def;
		return FI_OK;
	}
	if (!json_is_integer(v))
		return fi_fail(FI_EFORMAT, "%s: '%s' is not an integer", s->file, key);
	x = json_integer_value(v);
	if (x < lo || x > hi)
		return fi_fail(FI_ERANGE, "%s: '%s' = %lld is out of range [%lld, %lld]", s->file, key, x,
			       lo, hi);
	*out = (int)x;
	return FI_OK;
}

/* Number key (integer or real), finite and > 0. */
fi_err fi_cfg_num(const struct fi_cfg_src *s, const char *key, int required, double def,
		  double *out)
{
	json_t *v = json_object_get(s->o, key);
	double x;
	if (!v || json_is_null(v)) {
		if (required)
			return fi_fail(FI_EFORMAT, "%s: '%s' is missing", s->file, key);
		*out = def;
		return FI_OK;
	}
	if (!json_is_number(v))
		return fi_fail(FI_EFORMAT, "%s: '%s' is not a number", s->file, key);
	x = json_number_value(v);
	if (!isfinite(x) || x <= 0)
		return fi_fail(FI_ERANGE, "%s: '%s' = %g must be positive", s->file, key, x);
	*out = x;
	return FI_OK;
}

fi_err fi_cfg_bool(const struct fi_cfg_src *s, const char *key, int def, int *out)
{
	json_t *v = json_object_get(s->o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return FI_OK;
	}
	if (!json_is_boolean(v))
		return fi_fail(FI_EFORMAT, "%s: '%s' is not a boolean", s->file, key);
	*out = json_is_true(v);
	return FI_OK;
}
