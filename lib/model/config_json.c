/* config_json: Hugging Face config.json (+ generation_config.json) -> struct fi_config, and
 * back (fi_config_to_json).
 *
 * Defaults follow the transformers config classes of each family (LlamaConfig,
 * MistralConfig, Qwen2Config, Qwen3Config); every value is range-checked, and every error
 * names the file and key. */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config_int.h"

/* Gemma 3's multimodal checkpoints: the text tower under text_config (vision skipped). */
#define GEMMA3_MM_ARCH "Gemma3ForConditionalGeneration"
#define GEMMA3_MM_TYPE "gemma3"

static fi_err parse_family(const struct fi_cfg_src *s, struct fi_config *c)
{
	json_t *a = json_object_get(s->o, "architectures"), *mt = json_object_get(s->o, "model_type");
	const char *name;
	if (a && !json_is_null(a)) {
		if (!json_is_array(a))
			return fi_fail(FI_EFORMAT, "%s: 'architectures' is not an array", s->file);
		if (json_array_size(a) && !json_is_string(json_array_get(a, 0)))
			return fi_fail(FI_EFORMAT, "%s: 'architectures'[0] is not a string", s->file);
	}
	if (mt && !json_is_null(mt) && !json_is_string(mt))
		return fi_fail(FI_EFORMAT, "%s: 'model_type' is not a string", s->file);
	if (a && json_array_size(a)) {
		name = json_string_value(json_array_get(a, 0));
		if (!strcmp(name, GEMMA3_MM_ARCH)) {
			c->family = FI_FAM_GEMMA3;
			c->text_tower = 1;
			snprintf(c->arch, sizeof c->arch, "%s", name);
			return FI_OK;
		}
		for (int f = 0; f < FI_FAM_COUNT; f++) {
			if (strcmp(name, fi_cfg_family_arch((enum fi_family)f)))
				continue;
			/* transformers builds the model from model_type: one that names another
			 * family is a config edited by hand, whose tensors mean something else. */
			if (mt && json_is_string(mt) && strcmp(json_string_value(mt), fi_family_name((enum fi_family)f)))
				return fi_fail(FI_EFORMAT, "%s: 'model_type' '%s' does not match "
					       "architecture '%s' (model_type '%s')", s->file,
					       json_string_value(mt), name, fi_family_name((enum fi_family)f));
			c->family = (enum fi_family)f;
			snprintf(c->arch, sizeof c->arch, "%s", fi_cfg_family_arch((enum fi_family)f));
			return FI_OK;
		}
		return fi_fail(FI_EUNSUPPORTED, "%s: architecture '%s' is not supported", s->file, name);
	}
	if (!mt || json_is_null(mt))
		return fi_fail(FI_EFORMAT, "%s: 'architectures' and 'model_type' are missing", s->file);
	name = json_string_value(mt);
	if (!strcmp(name, GEMMA3_MM_TYPE)) {
		c->family = FI_FAM_GEMMA3;
		c->text_tower = 1;
		snprintf(c->arch, sizeof c->arch, "%s", GEMMA3_MM_ARCH);
		return FI_OK;
	}
	for (int f = 0; f < FI_FAM_COUNT; f++)
		if (!strcmp(name, fi_family_name((enum fi_family)f))) {
			c->family = (enum fi_family)f;
			snprintf(c->arch, sizeof c->arch, "%s", fi_cfg_family_arch((enum fi_family)f));
			return FI_OK;
		}
	return fi_fail(FI_EUNSUPPORTED, "%s: model_type '%s' is not supported", s->file, name);
}

static fi_err parse_ids(const struct fi_cfg_src *s, struct fi_config *c)
{
	json_t *e = json_object_get(s->o, "eos_token_id");
	fi_err err;
	if (!fi_cfg_absent(s, "bos_token_id") &&
	    (err = fi_cfg_int(s, "bos_token_id", 0, -1, 0, c->vocab - 1, &c->bos_id)))
		return err;
	if (!e || json_is_null(e))
		return FI_OK;
	if (json_is_array(e)) {
		size_t n = json_array_size(e);
		if (n > FI_MAX_EOS)
			return fi_fail(FI_ERANGE, "%s: 'eos_token_id' lists %zu ids, more than %d", s->file, n,
				       FI_MAX_EOS);
		for (size_t i = 0; i < n; i++) {
			json_t *x = json_array_get(e, i);
			if (!json_is_integer(x))
				return fi_fail(FI_EFORMAT, "%s: 'eos_token_id'[%zu] is not an integer", s->file, i);
			if (json_integer_value(x) < 0 || json_integer_value(x) >= c->vocab)
				return fi_fail(FI_ERANGE, "%s: 'eos_token_id'[%zu] = %lld is outside the vocabulary",
					       s->file, i, json_integer_value(x));
			c->eos_ids[i] = (int)json_integer_value(x);
		}
		c->n_eos = (int)n;
		return FI_OK;
	}
	if ((err = fi_cfg_int(s, "eos_token_id", 1, 0, 0, c->vocab - 1, &c->eos_ids[0])))
		return err;
	c->n_eos = 1;
	return FI_OK;
}

static fi_err parse_dtype(const struct fi_cfg_src *s, struct fi_config *c)
{
	static const struct {
		const char *name;
		enum fi_dtype dt;
	} map[] = {{"float32", FI_DT_F32}, {"float", FI_DT_F32},    {"float16", FI_DT_F16},
		   {"half", FI_DT_F16},    {"bfloat16", FI_DT_BF16}, {"float64", FI_DT_F64}};
	const char *key = fi_cfg_absent(s, "torch_dtype") ? "dtype" : "torch_dtype";
	json_t *v = json_object_get(s->o, key);
	c->torch_dtype = FI_DT_F32;
	if (!v || json_is_null(v))
		return FI_OK;
	if (!json_is_string(v))
		return fi_fail(FI_EFORMAT, "%s: '%s' is not a string", s->file, key);
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (!strcmp(json_string_value(v), map[i].name)) {
			c->torch_dtype = map[i].dt;
			return FI_OK;
		}
	return fi_fail(FI_EUNSUPPORTED, "%s: '%s' '%s' is not supported", s->file, key,
		       json_string_value(v));
}

static fi_err parse_sliding(const struct fi_cfg_src *s, struct fi_config *c)
{
	int use = 0;
	fi_err err;
	c->sliding_window = 0;
	/* Whatever the family does with it, a window is a positive count of tokens; null (or
	 * no key) is how a config says "none". 0 or a negative one is a broken config. */
	if (!fi_cfg_absent(s, "sliding_window") &&
	    (!json_is_integer(json_object_get(s->o, "sliding_window")) ||
	     json_integer_value(json_object_get(s->o, "sliding_window")) < 1 ||
	     json_integer_value(json_object_get(s->o, "sliding_window")) > INT32_MAX))
		return fi_fail(FI_ERANGE, "%s: 'sliding_window' must be a positive integer (null "
			       "for no window)", s->file);
	switch (c->family) {
	case FI_FAM_MISTRAL:
		/* MistralConfig: default 4096, null disables it. */
		if (!json_object_get(s->o, "sliding_window"))
			c->sliding_window = 4096;
		else
			return fi_cfg_int(s, "sliding_window", 0, 0, 1, INT32_MAX, &c->sliding_window);
		return FI_OK;
	case FI_FAM_PHI3:
	case FI_FAM_MIXTRAL:
		/* Phi3Config and MixtralConfig: no window by default. */
		return fi_cfg_int(s, "sliding_window", 0, 0, 0, INT32_MAX, &c->sliding_window);
	case FI_FAM_QWEN2:
	case FI_FAM_QWEN3:
	case FI_FAM_QWEN3_MOE:
		/* Qwen2/3 apply their window only when use_sliding_window is set. */
		if ((err = fi_cfg_bool(s, "use_sliding_window", 0, &use)))
			return err;
		if (use)
			return fi_cfg_int(s, "sliding_window", 0, 4096, 1, INT32_MAX, &c->sliding_window);
		return FI_OK;
	default:
		return FI_OK;
	}
}

/* The text model's keys: config.json itself, or its text_config (Gemma 3 multimodal; absent
 * means every default). *own is an object to release afterwards. */
static fi_err text_src(const struct fi_cfg_src *top, struct fi_config *c, struct fi_cfg_src *s, char *file,
		       size_t fsz, json_t **own)
{
	json_t *t;
	*s = *top;
	*own = NULL;
	if (!c->text_tower)
		return FI_OK;
	t = json_object_get(top->o, "text_config");
	if (t && !json_is_null(t) && !json_is_object(t))
		return fi_fail(FI_EFORMAT, "%s: 'text_config' is not an object", top->file);
	if (!t || json_is_null(t))
		t = *own = json_object();
	if (!t)
		return fi_fail(FI_ENOMEM, "%s: out of memory", top->file);
	snprintf(file, fsz, "%s: text_config", top->file);
	*s = (struct fi_cfg_src){t, file};
	return FI_OK;
}

static fi_err parse_config(const struct fi_cfg_src *top, struct fi_config *c)
{
	json_t *act, *own = NULL;
	struct fi_cfg_src text, *s = &text;
	char tfile[256];
	int mlp_bias = 0, req, gemma;
	double eps;
	fi_err err;

	if ((err = parse_family(top, c)) || (err = text_src(top, c, &text, tfile, sizeof tfile, &own)))
		return err;
	act = json_object_get(s->o, "hidden_act");
	gemma = c->family == FI_FAM_GEMMA2 || c->family == FI_FAM_GEMMA3;
	/* Gemma 3's published configs list only what differs from Gemma3TextConfig's defaults,
	 * which these are; every other family states its sizes. */
	req = c->family != FI_FAM_GEMMA3;
	if ((err = fi_cfg_int(s, "hidden_size", req, 2304, 1, MAX_HIDDEN, &c->hidden)) ||
	    (err = fi_cfg_int(s, "num_hidden_layers", req, 26, 1, MAX_LAYERS, &c->n_layers)) ||
	    (err = fi_cfg_int(s, "num_attention_heads", req, 8, 1, MAX_HEADS, &c->n_heads)) ||
	    (err = fi_cfg_int(s, "num_key_value_heads", 0, req ? c->n_heads : 4, 1, MAX_HEADS,
			   &c->n_kv_heads)) ||
	    (err = fi_cfg_int(s, "intermediate_size", req, 9216, 1, MAX_FFN, &c->ffn)) ||
	    (err = fi_cfg_int(s, "vocab_size", req, 262208, 1, MAX_VOCAB, &c->vocab)) ||
	    (err = fi_cfg_int(s, "max_position_embeddings", req, 131072, MIN_POS, MAX_POS,
			   &c->max_pos)))
		goto out;
	err = FI_EFORMAT;
	if (c->n_heads % c->n_kv_heads) {
		fi_fail(err, "%s: 'num_attention_heads' (%d) is not a multiple of "
			"'num_key_value_heads' (%d)", s->file, c->n_heads, c->n_kv_heads);
		goto out;
	}
	if (req && fi_cfg_absent(s, "head_dim") && c->hidden % c->n_heads) {
		fi_fail(err, "%s: 'head_dim' is missing and 'hidden_size' (%d) is not a "
			"multiple of 'num_attention_heads' (%d)", s->file, c->hidden, c->n_heads);
		goto out;
	}
	if ((err = fi_cfg_int(s, "head_dim", 0, req ? c->hidden / c->n_heads : 256, 2, MAX_HEAD_DIM,
			   &c->head_dim)))
		goto out;
	err = FI_ERANGE;
	if (c->head_dim % 2) { /* RoPE rotates pairs */
		fi_fail(err, "%s: 'head_dim' (%d) is odd", s->file, c->head_dim);
		goto out;
	}
	if ((err = fi_cfg_num(s, "rms_norm_eps", req, 1e-6, &eps)))
		goto out;
	err = FI_ERANGE;
	if (eps >= 1) {
		fi_fail(err, "%s: 'rms_norm_eps' = %g is not below 1", s->file, eps);
		goto out;
	}
	if ((float)eps <= 0) { /* it is stored and used as a float */
		fi_fail(err, "%s: 'rms_norm_eps' = %g underflows a float", s->file, eps);
		goto out;
	}
	c->rms_eps = (float)eps;
	if ((err = fi_cfg_num(s, "rope_theta", 0, c->family == FI_FAM_GEMMA3 ? 1e6 : 10000.0,
			   &c->rope_theta)) ||
	    (err = fi_cfg_parse_rope(s, c)))
		goto out;
	if (!(c->rope_theta > 1 && c->rope_theta <= MAX_ROPE_THETA)) {
		err = fi_fail(FI_ERANGE, "%s: 'rope_theta' = %g is out of range (1, %g]", s->file,
			      c->rope_theta, MAX_ROPE_THETA);
		goto out;
	}
	/* Gemma's configs tie by default (Gemma2Config, Gemma3Config). */
	if ((err = fi_cfg_bool(top, "tie_word_embeddings", gemma, &c->tie_embeddings)) ||
	    (err = parse_sliding(s, c)))
		goto out;

	if (!gemma && c->family != FI_FAM_BITNET && act && !json_is_null(act) &&
	    (!json_is_string(act) || strcmp(json_string_value(act), "silu"))) {
		err = fi_fail(FI_EUNSUPPORTED, "%s: 'hidden_act' %s is not supported (only silu)",
			      s->file, json_is_string(act) ? json_string_value(act) : "of this type");
		goto out;
	}
	if ((err = fi_cfg_bool(s, "mlp_bias", 0, &mlp_bias)))
		goto out;
	if (mlp_bias) {
		err = fi_fail(FI_EUNSUPPORTED, "%s: 'mlp_bias' true is not supported", s->file);
		goto out;
	}
	switch (c->family) {
	case FI_FAM_QWEN2:
		c->qkv_bias = 1;
		break;
	case FI_FAM_QWEN3:
	case FI_FAM_LLAMA:
		/* Both configs carry attention_bias (default false). */
		c->qk_norm = c->family == FI_FAM_QWEN3;
		if ((err = fi_cfg_bool(s, "attention_bias", 0, &c->qkv_bias)))
			goto out;
		break;
	default:
		break;
	}
	/* The multimodal form keeps its ids at the top, over the text model's. */
	if ((err = parse_ids(s, c)) || (c->text_tower && (err = parse_ids(top, c))))
		goto out;
	if (fi_config_is_arch(c) &&
	    (err = fi_cfg_parse_family((const struct fi_cfg_src *)top, (const struct fi_cfg_src *)s, c)))
		goto out;
	err = parse_dtype(top, c);
out:
	json_decref(own);
	return err;
}

static fi_err load_obj(const char *file, const char *json, size_t len, json_t **out)
{
	json_error_t jerr;
	*out = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*out)
		return fi_fail(FI_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", file, jerr.text,
			       jerr.line, jerr.column);
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return fi_fail(FI_EFORMAT, "%s: not a JSON object", file);
	}
	return FI_OK;
}

static fi_err config_parse(const char *cfile, const char *json, size_t len, const char *gfile,
			   const char *gen, size_t gen_len, struct fi_config *out)
{
	struct fi_config c;
	struct fi_cfg_src s = {NULL, cfile}, g = {NULL, gfile};
	fi_err err;

	memset(&c, 0, sizeof c);
	c.bos_id = -1;
	if ((err = load_obj(cfile, json, len, &s.o)))
		return err;
	if ((err = parse_config(&s, &c)))
		goto out;
	if (gen) {
		if ((err = load_obj(gfile, gen, gen_len, &g.o)))
			goto out;
		/* generation_config.json's ids win where it has them. */
		if (!fi_cfg_absent(&g, "eos_token_id"))
			c.n_eos = 0;
		if ((err = parse_ids(&g, &c)))
			goto out;
	}
	*out = c;
out:
	json_decref(s.o);
	json_decref(g.o);
	return err;
}

fi_err fi_config_parse(const char *json, size_t len, const char *gen, size_t gen_len,
		       struct fi_config *out)
{
	return config_parse("config.json", json, len, "generation_config.json", gen, gen_len, out);
}

static fi_err slurp(const char *path, char **out, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	struct stat st;
	char *b;
	*out = NULL;
	if (!fp)
		return fi_fail(errno == ENOENT ? FI_ENOTFOUND : FI_EIO, "cannot open '%s': %s", path,
			       strerror(errno));
	if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_CONFIG_BYTES) {
		fclose(fp);
		return fi_fail(FI_EFORMAT, "'%s': not a regular file of at most %u bytes", path,
			       MAX_CONFIG_BYTES);
	}
	if (!(b = malloc((size_t)st.st_size + 1))) {
		fclose(fp);
		return fi_fail(FI_ENOMEM, "out of memory reading '%s'", path);
	}
	*len = fread(b, 1, (size_t)st.st_size, fp);
	if (ferror(fp)) {
		fclose(fp);
		free(b);
		return fi_fail(FI_EIO, "cannot read '%s': %s", path, strerror(errno));
	}
	fclose(fp);
	b[*len] = 0;
	*out = b;
	return FI_OK;
}

fi_err fi_config_load_dir(const char *dir, struct fi_config *out)
{
	char cp[4096], gp[4096], *cj = NULL, *gj = NULL;
	size_t cl = 0, gl = 0;
	fi_err err;
	if (snprintf(cp, sizeof cp, "%s/config.json", dir) >= (int)sizeof cp ||
	    snprintf(gp, sizeof gp, "%s/generation_config.json", dir) >= (int)sizeof gp)
		return fi_fail(FI_ERANGE, "path '%s' is too long", dir);
	if ((err = slurp(cp, &cj, &cl)))
		return err;
	err = slurp(gp, &gj, &gl);
	if (err == FI_ENOTFOUND) {
		fi_clear_error();
		err = FI_OK;
	}
	if (!err)
		err = config_parse(cp, cj, cl, gp, gj, gl, out);
	free(cj);
	free(gj);
	return err;
}

char *fi_config_to_json(const struct fi_config *c)
{
	json_t *o = json_object(), *eos;
	char *s;
	if (!o || (unsigned)c->family >= FI_FAM_COUNT) {
		json_decref(o);
		return NULL;
	}
	json_object_set_new(o, "architectures", json_pack("[s]", c->arch[0] ? c->arch : fi_cfg_family_arch(c->family)));
	json_object_set_new(o, "model_type", json_string(fi_family_name(c->family)));
	json_object_set_new(o, "hidden_size", json_integer(c->hidden));
	json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
	json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
	json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
	json_object_set_new(o, "head_dim", json_integer(c->head_dim));
	json_object_set_new(o, "intermediate_size", json_integer(c->ffn));
	json_object_set_new(o, "vocab_size", json_integer(c->vocab));
	json_object_set_new(o, "max_position_embeddings", json_integer(c->max_pos));
	json_object_set_new(o, "rms_norm_eps", json_real(c->rms_eps));
	json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
	switch (c->rope_type) {
	case FI_ROPE_LLAMA3:
		json_object_set_new(o, "rope_scaling",
				    json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor",
					      c->rope_factor, "low_freq_factor", c->rope_low_freq_factor,
					      "high_freq_factor", c->rope_high_freq_factor,
					      "original_max_position_embeddings", c->rope_orig_max_pos));
		break;
	case FI_ROPE_LINEAR:
	case FI_ROPE_DYNAMIC:
		json_object_set_new(o, "rope_scaling",
				    json_pack("{s:s, s:f}", "rope_type",
					      c->rope_type == FI_ROPE_LINEAR ? "linear" : "dynamic", "factor",
					      c->rope_factor));
		break;
	default:
		json_object_set_new(o, "rope_scaling", json_null());
	}
	json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
	if (c->family == FI_FAM_QWEN2 || c->family == FI_FAM_QWEN3)
		json_object_set_new(o, "use_sliding_window", json_boolean(c->sliding_window > 0));
	json_object_set_new(o, "sliding_window",
			    c->sliding_window > 0 ? json_integer(c->sliding_window) : json_null());
	if (c->family == FI_FAM_LLAMA || c->family == FI_FAM_QWEN3)
		json_object_set_new(o, "attention_bias", json_boolean(c->qkv_bias));
	json_object_set_new(o, "bos_token_id", c->bos_id >= 0 ? json_integer(c->bos_id) : json_null());
	if (c->n_eos == 1) {
		eos = json_integer(c->eos_ids[0]);
	} else if (c->n_eos <= 0) {
		eos = json_null();
	} else {
		eos = json_array();
		for (int i = 0; i < c->n_eos && i < FI_MAX_EOS; i++)
			json_array_append_new(eos, json_integer(c->eos_ids[i]));
	}
	json_object_set_new(o, "eos_token_id", eos);
	json_object_set_new(o, "torch_dtype",
			    json_string(c->torch_dtype == FI_DT_F16    ? "float16"
					: c->torch_dtype == FI_DT_BF16 ? "bfloat16"
					: c->torch_dtype == FI_DT_F64  ? "float64"
								       : "float32"));
	fi_cfg_family_json(c, o); /* rope_scaling beyond llama3, the families' keys */
	if (c->text_tower) { /* as the multimodal config.json: the text keys under text_config */
		static const char *const keep[] = {"tie_word_embeddings", "bos_token_id",
						   "eos_token_id", "torch_dtype"};
		json_t *top = json_object();
		json_object_set_new(top, "architectures", json_pack("[s]", GEMMA3_MM_ARCH));
		json_object_set_new(top, "model_type", json_string(GEMMA3_MM_TYPE));
		json_object_del(o, "architectures");
		json_object_set_new(o, "model_type", json_string("gemma3_text"));
		for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
			json_object_set(top, keep[i], json_object_get(o, keep[i]));
			json_object_del(o, keep[i]);
		}
		json_object_set_new(top, "text_config", o);
		o = top;
	}
	s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}
