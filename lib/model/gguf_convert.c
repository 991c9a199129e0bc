/* gguf_convert: a GGUF file -> an fi model image.
 *
 * The config comes from the architecture's keys ({arch}.embedding_length, block_count, ...)
 * rebuilt as a Hugging Face config.json and parsed by fi_config_parse, so it gets the same
 * checks as any checkpoint. Tensors keep their type when fi computes with it (F32, F16,
 * BF16 converted to the image dtype; Q8_0, Q4_0, Q4_K, Q5_K, Q6_K stored as they are);
 * any other type is an error naming the tensor. llama.cpp's converter permutes the rows of
 * attn_q and attn_k of the llama architecture (interleaving each head's two rotary halves);
 * they are permuted back here, whole rows at a time, so quantized rows move as they are. */
#include "image.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "base/log.h"
#include "base/quant.h"
#include "gguf_int.h"
#include "names.h"
#include "model.h"
#include "text/tokenizer.h"

#ifndef FI_VERSION
#define FI_VERSION "unknown"
#endif

static const struct {
	const char *arch, *hf;
	int permute;
} archs[] = {
	{"llama", "LlamaForCausalLM", 1},
	{"qwen2", "Qwen2ForCausalLM", 0},
	{"qwen3", "Qwen3ForCausalLM", 0},
};

static const struct {
	const char *gguf, *eng;
} layer_names[] = {
	{"attn_norm.weight", "attn_norm"},     {"attn_q.weight", "attn_q"},
	{"attn_k.weight", "attn_k"},	       {"attn_v.weight", "attn_v"},
	{"attn_output.weight", "attn_o"},      {"attn_q.bias", "attn_q_bias"},
	{"attn_k.bias", "attn_k_bias"},	       {"attn_v.bias", "attn_v_bias"},
	{"attn_q_norm.weight", "attn_q_norm"}, {"attn_k_norm.weight", "attn_k_norm"},
	{"ffn_norm.weight", "ffn_norm"},       {"ffn_gate.weight", "ffn_gate"},
	{"ffn_up.weight", "ffn_up"},	       {"ffn_down.weight", "ffn_down"},
};

/* GGUF name -> engine name: 1 mapped, 0 known but unused, -1 unknown. */
static int map_name(const char *g, char *out, size_t outsz)
{
	long n;
	char *end;
	if (!strcmp(g, "token_embd.weight"))
		return snprintf(out, outsz, "tok_embd") > 0;
	if (!strcmp(g, "output_norm.weight"))
		return snprintf(out, outsz, "out_norm") > 0;
	if (!strcmp(g, "output.weight"))
		return snprintf(out, outsz, "output") > 0;
	if (!strcmp(g, "rope_freqs.weight"))
		return 0;
	if (strncmp(g, "blk.", 4))
		return -1;
	n = strtol(g + 4, &end, 10);
	if (end == g + 4 || *end != '.' || n < 0 || n > 100000)
		return -1;
	for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++)
		if (!strcmp(end + 1, layer_names[i].gguf)) {
			snprintf(out, outsz, "blk.%ld.%s", n, layer_names[i].eng);
			return 1;
		}
	return -1;
}

/* {arch}.key as an integer into o[hf] (required or not). */
static fi_err put_int(const struct fi_gguf *g, const char *arch, const char *key, json_t *o,
		      const char *hf, int required)
{
	char k[128];
	int64_t v;
	fi_err e;
	snprintf(k, sizeof k, "%s.%s", arch, key);
	if ((e = fi_gguf_get_int(g, k, &v)) == FI_ENOTFOUND)
		return required ? fi_fail(FI_EFORMAT, "gguf '%s': key '%s' is missing", g->path, k)
				: FI_OK;
	if (e)
		return e;
	if (v < 0 || v > INT32_MAX)
		return fi_fail(FI_ERANGE, "gguf '%s': %s = %lld is out of range", g->path, k,
			       (long long)v);
	json_object_set_new(o, hf, json_integer(v));
	return FI_OK;
}

static fi_err put_num(const struct fi_gguf *g, const char *arch, const char *key, json_t *o,
		      const char *hf)
{
	char k[128];
	double v;
	fi_err e;
	snprintf(k, sizeof k, "%s.%s", arch, key);
	if ((e = fi_gguf_get_f64(g, k, &v)) == FI_ENOTFOUND)
		return FI_OK;
	if (e)
		return e;
	json_object_set_new(o, hf, json_real(v));
	return FI_OK;
}

/* Llama 3's rope scaling is not in the keys but baked into rope_freqs.weight (one divisor
 * per frequency): recognise the published parameter sets by recomputing their divisors. */
static fi_err rope_freqs(const struct fi_gguf *g, json_t *o, struct fi_config *c)
{
	const struct fi_gguf_tensor *t = fi_gguf_tensor(g, "rope_freqs.weight");
	static const double sets[][4] = {{8, 1, 4, 8192}, {32, 1, 4, 8192}, {16, 1, 4, 8192}};
	float plain[512], scaled[512];
	int half = c->head_dim / 2;
	if (!t)
		return FI_OK;
	if (t->type != FI_GGML_F32 || t->n_dims != 1 || t->ne[0] != half || half > 512)
		return fi_fail(FI_EFORMAT, "gguf '%s': rope_freqs.weight is not %d f32 values",
			       g->path, half);
	c->rope_type = FI_ROPE_DEFAULT;
	if (fi_rope_inv_freq(c, plain))
		return fi_errcode();
	for (size_t s = 0; s < sizeof sets / sizeof sets[0]; s++) {
		int ok = 1;
		c->rope_type = FI_ROPE_LLAMA3;
		c->rope_factor = sets[s][0];
		c->rope_low_freq_factor = sets[s][1];
		c->rope_high_freq_factor = sets[s][2];
		c->rope_orig_max_pos = (int)sets[s][3];
		if (fi_rope_inv_freq(c, scaled))
			return fi_errcode();
		for (int i = 0; i < half && ok; i++) {
			float f;
			memcpy(&f, t->data + 4 * i, 4);
			ok = fabs(plain[i] / f - scaled[i]) <= 1e-4 * fabs(scaled[i]);
		}
		if (ok) {
			json_object_set_new(o, "rope_scaling",
					    json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3",
						      "factor", sets[s][0], "low_freq_factor", sets[s][1],
						      "high_freq_factor", sets[s][2],
						      "original_max_position_embeddings",
						      (int)sets[s][3]));
			return FI_OK;
		}
	}
	return fi_fail(FI_EUNSUPPORTED, "gguf '%s': rope_freqs.weight holds a rope scaling fi does "
		       "not recognise", g->path);
}

/* The config.json of the file's model (malloc'd text) and its parse. */
static fi_err make_config(const struct fi_gguf *g, int *arch_i, char **json, struct fi_config *c)
{
	char *arch = NULL;
	json_t *o = json_object();
	size_t a;
	int64_t v;
	uint64_t nt = 0;
	struct fi_gguf_str *toks = NULL;
	const struct fi_gguf_tensor *emb = fi_gguf_tensor(g, "token_embd.weight");
	fi_err e;
	*json = NULL;
	if (!o)
		return fi_fail(FI_ENOMEM, "gguf config");
	if ((e = fi_gguf_get_str(g, "general.architecture", &arch))) {
		json_decref(o);
		return e == FI_ENOTFOUND ? fi_fail(FI_EFORMAT, "gguf '%s': general.architecture is "
						   "missing", g->path) : e;
	}
	for (a = 0; a < sizeof archs / sizeof archs[0] && strcmp(archs[a].arch, arch); a++)
		;
	if (a == sizeof archs / sizeof archs[0]) {
		e = fi_fail(FI_EUNSUPPORTED, "gguf '%s': architecture '%s' is not supported (llama, "
			    "qwen2, qwen3)", g->path, arch);
		goto out;
	}
	*arch_i = (int)a;
	json_object_set_new(o, "architectures", json_pack("[s]", archs[a].hf));
	if ((e = put_int(g, arch, "embedding_length", o, "hidden_size", 1)) ||
	    (e = put_int(g, arch, "block_count", o, "num_hidden_layers", 1)) ||
	    (e = put_int(g, arch, "feed_forward_length", o, "intermediate_size", 1)) ||
	    (e = put_int(g, arch, "attention.head_count", o, "num_attention_heads", 1)) ||
	    (e = put_int(g, arch, "attention.head_count_kv", o, "num_key_value_heads", 0)) ||
	    (e = put_int(g, arch, "attention.key_length", o, "head_dim", 0)) ||
	    (e = put_int(g, arch, "context_length", o, "max_position_embeddings", 0)) ||
	    (e = put_num(g, arch, "attention.layer_norm_rms_epsilon", o, "rms_norm_eps")) ||
	    (e = put_num(g, arch, "rope.freq_base", o, "rope_theta")) ||
	    (e = put_int(g, arch, "vocab_size", o, "vocab_size", 0)))
		goto out;
	if (!json_object_get(o, "rms_norm_eps"))
		json_object_set_new(o, "rms_norm_eps", json_real(1e-5));
	if (!json_object_get(o, "vocab_size")) {
		/* The embedding's rows, else the tokenizer's size. */
		if (emb && emb->n_dims == 2)
			json_object_set_new(o, "vocab_size", json_integer(emb->ne[1]));
		else if (!fi_gguf_get_strs(g, "tokenizer.ggml.tokens", &toks, &nt))
			json_object_set_new(o, "vocab_size", json_integer((json_int_t)nt));
	}
	json_object_set_new(o, "tie_word_embeddings",
			    json_boolean(!fi_gguf_tensor(g, "output.weight")));
	if (!fi_gguf_get_int(g, "tokenizer.ggml.bos_token_id", &v))
		json_object_set_new(o, "bos_token_id", json_integer(v));
	if (!fi_gguf_get_int(g, "tokenizer.ggml.eos_token_id", &v))
		json_object_set_new(o, "eos_token_id", json_integer(v));
	if (!strcmp(arch, "qwen2") || !strcmp(arch, "qwen3"))
		json_object_set_new(o, "use_sliding_window", json_false());
	if (!(*json = json_dumps(o, JSON_INDENT(2)))) {
		e = fi_fail(FI_ENOMEM, "gguf config");
		goto out;
	}
	if ((e = fi_config_parse(*json, strlen(*json), NULL, 0, c))) {
		fi_fail_ctx(e, "gguf '%s'", g->path);
		goto out;
	}
	if ((e = rope_freqs(g, o, c)))
		goto out;
	if (json_object_get(o, "rope_scaling")) {
		free(*json);
		if (!(*json = json_dumps(o, JSON_INDENT(2)))) {
			e = fi_fail(FI_ENOMEM, "gguf config");
			goto out;
		}
		if ((e = fi_config_parse(*json, strlen(*json), NULL, 0, c)))
			goto out;
	}
out:
	if (e) {
		free(*json);
		*json = NULL;
	}
	free(toks);
	free(arch);
	json_decref(o);
	return e;
}

static enum fi_dtype fi_type(uint32_t t)
{
	switch (t) {
	case FI_GGML_F32: return FI_DT_F32;
	case FI_GGML_F16: return FI_DT_F16;
	case FI_GGML_BF16: return FI_DT_BF16;
	case FI_GGML_Q8_0: return FI_DT_Q8_0;
	case FI_GGML_Q4_0: return FI_DT_Q4_0;
	case FI_GGML_Q4_K: return FI_DT_Q4_K;
	case FI_GGML_Q5_K: return FI_DT_Q5_K;
	case FI_GGML_Q6_K: return FI_DT_Q6_K;
	default: return FI_DT_COUNT;
	}
}

/* Rows of q or k back in HF order: GGUF row h*hd + 2j + i holds HF row h*hd + i*hd/2 + j. */
static void *unpermute(const struct fi_gguf_tensor *t, int heads)
{
	int64_t rows = t->ne[1], hd = rows / heads;
	uint64_t rb = t->nbytes / (uint64_t)rows;
	uint8_t *o = malloc(t->nbytes);
	if (!o)
		return NULL;
	for (int64_t h = 0; h < heads; h++)
		for (int64_t i = 0; i < 2; i++)
			for (int64_t j = 0; j < hd / 2; j++)
				memcpy(o + (uint64_t)(h * hd + i * hd / 2 + j) * rb,
				       t->data + (uint64_t)(h * hd + 2 * j + i) * rb, rb);
	return o;
}

static char *provenance(const char *src, const char *types)
{
	char abs[PATH_MAX], when[64];
	time_t now = time(NULL);
	struct tm tm;
	json_t *o;
	char *s;
	if (!realpath(src, abs))
		snprintf(abs, sizeof abs, "%s", src);
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "source", abs, "created", when, "fi_version",
		      FI_VERSION, "source_dtype", "gguf", "quantization", types);
	if (!o)
		return NULL;
	s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return s;
}

struct conv {
	struct fi_image_src *src;
	char (*names)[FI_IMAGE_NAME_MAX];
	void **bufs;
	int n, n_bufs;
	char types[128];
};

static fi_err add_tensors(const struct fi_gguf *g, int arch, const struct fi_config *c,
			  struct conv *cv)
{
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct fi_gguf_tensor *t = &g->t[i];
		struct fi_image_src *s = &cv->src[cv->n];
		enum fi_dtype dt = fi_type(t->type);
		const char *dot;
		int r = map_name(t->name, cv->names[cv->n], FI_IMAGE_NAME_MAX);
		if (r < 0)
			return fi_fail(FI_EUNSUPPORTED, "gguf '%s': unknown tensor '%s'", g->path,
				       t->name);
		if (!r)
			continue;
		if (dt == FI_DT_COUNT)
			return fi_fail(FI_EUNSUPPORTED, "gguf '%s': tensor '%s' is %s (fi reads F32, "
				       "F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K)", g->path, t->name,
				       fi_ggml_name(t->type));
		if (t->n_dims > 2 || (fi_dtype_is_quant(dt) && t->n_dims != 2))
			return fi_fail(FI_EFORMAT, "gguf '%s': tensor '%s' has %d dimensions", g->path,
				       t->name, t->n_dims);
		s->name = cv->names[cv->n];
		s->ndim = t->n_dims;
		s->shape[0] = t->n_dims == 2 ? t->ne[1] : t->ne[0];
		s->shape[1] = t->n_dims == 2 ? t->ne[0] : 0;
		s->src_dtype = dt;
		s->src = t->data;
		s->src_nbytes = fi_dtype_is_quant(dt) ? t->nbytes : 0;
		if (fi_dtype_is_quant(dt)) {
			struct fi_qlayout l;
			fi_err e;
			if ((e = fi_quant_layout(dt, s->shape[0], s->shape[1], t->data, t->nbytes, &l)) ||
			    (e = fi_quant_check_scales(&l, t->data)))
				return fi_fail_ctx(e, "gguf '%s': tensor '%s'", g->path, t->name);
			if (!strstr(cv->types, fi_dtype_name(dt)) &&
			    strlen(cv->types) + 8 < sizeof cv->types)
				snprintf(cv->types + strlen(cv->types), sizeof cv->types - strlen(cv->types),
					 "%s%s", cv->types[0] ? "+" : "", fi_dtype_name(dt));
		}
		dot = strrchr(s->name, '.');
		if (archs[arch].permute && t->n_dims == 2 && dot &&
		    (!strcmp(dot, ".attn_q") || !strcmp(dot, ".attn_k"))) {
			int heads = !strcmp(dot, ".attn_q") ? c->n_heads : c->n_kv_heads;
			if (t->ne[1] != (int64_t)heads * c->head_dim || c->head_dim % 2)
				return fi_fail(FI_EMISMATCH, "gguf '%s': tensor '%s' has %lld rows for "
					       "%d heads of %d", g->path, t->name, (long long)t->ne[1],
					       heads, c->head_dim);
			if (!(s->src = cv->bufs[cv->n_bufs++] = unpermute(t, heads)))
				return fi_fail(FI_ENOMEM, "gguf '%s': tensor '%s'", g->path, t->name);
		}
		cv->n++;
	}
	return FI_OK;
}

/* The pre-built tokenizer.bin next to tokenizer.json, as for HF directories. */
static fi_err tok_bin(const char *path, const char *json, void **bin, size_t *len)
{
	struct fi_tok *t = NULL;
	fi_err e;
	*bin = NULL;
	if ((e = fi_tok_load_json(json, strlen(json), &t)))
		return fi_fail_ctx(e, "gguf '%s': tokenizer", path);
	e = fi_tok_save_binary(t, bin, len);
	fi_tok_free(t);
	return e;
}

fi_err fi_image_convert_gguf(const char *file, const char *path, enum fi_dtype dtype,
			     unsigned flags)
{
	struct fi_gguf *g = NULL;
	struct fi_config cfg;
	struct conv cv = {0};
	char *cfg_json = NULL, *tok = NULL, *tcfg = NULL, *prov = NULL;
	void *bin = NULL;
	size_t bin_len = 0;
	struct fi_image_blob blobs[5];
	int nb = 0, arch = 0;
	fi_err e;
	if (flags & FI_IMAGE_QUANT_FP8)
		return fi_fail(FI_EUNSUPPORTED, "'%s' is a GGUF file: --quantize takes a float "
			       "Hugging Face checkpoint", file);
	if ((e = fi_gguf_open(file, &g)))
		return e;
	if ((e = make_config(g, &arch, &cfg_json, &cfg)))
		goto out;
	cv.src = calloc(g->n_tensors + 1, sizeof *cv.src);
	cv.names = calloc(g->n_tensors + 1, sizeof *cv.names);
	cv.bufs = calloc(g->n_tensors + 1, sizeof *cv.bufs);
	if (!cv.src || !cv.names || !cv.bufs) {
		e = fi_fail(FI_ENOMEM, "gguf '%s'", file);
		goto out;
	}
	if ((e = add_tensors(g, arch, &cfg, &cv)))
		goto out;
	blobs[nb++] = (struct fi_image_blob){"config.json", cfg_json, strlen(cfg_json)};
	e = fi_gguf_tokenizer(g, &tok, &tcfg);
	if (e == FI_ENOTFOUND) {
		fi_warn("%s (token-id pipelines still work)", fi_errmsg());
		fi_clear_error();
	} else if (e) {
		goto out;
	} else {
		if ((e = tok_bin(file, tok, &bin, &bin_len)))
			goto out;
		blobs[nb++] = (struct fi_image_blob){"tokenizer.json", tok, strlen(tok)};
		blobs[nb++] = (struct fi_image_blob){"tokenizer_config.json", tcfg, strlen(tcfg)};
		blobs[nb++] = (struct fi_image_blob){"tokenizer.bin", bin, bin_len};
	}
	if (!(prov = provenance(file, cv.types))) {
		e = fi_fail(FI_ENOMEM, "gguf '%s': provenance", file);
		goto out;
	}
	blobs[nb++] = (struct fi_image_blob){"provenance.json", prov, strlen(prov)};
	/* The model's own check first, so that its error names the GGUF file. */
	e = fi_image_write(path, &cfg, dtype, cv.src, cv.n, blobs, nb, flags, NULL);
	if (e == FI_EMISMATCH || e == FI_ENOTFOUND)
		fi_fail_ctx(e, "gguf '%s'", file);
out:
	for (int i = 0; i < cv.n_bufs; i++)
		free(cv.bufs[i]);
	free(cv.bufs);
	free(cv.src);
	free(cv.names);
	free(cfg_json);
	free(tok);
	free(tcfg);
	free(bin);
	free(prov);
	fi_gguf_close(g);
	return e;
}
