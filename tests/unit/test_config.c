/* config: published configs of each family against the values transformers derives from
 * them (tests/fixtures/config/<model>/expected.json, tools/make_config_fixtures.py), rope
 * scaling variants, an error table (missing keys, bad types, bounds), generation_config
 * overrides, JSON round trips, and fi_config_check against tensor sets. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"
#include "model/names.h"
#include "model/safetensors.h"
#include "util.h"

static const char *const fixtures[] = {"llama-3.1-8b-instruct", "mistral-7b-v0.1",
				       "qwen2.5-0.5b-instruct", "qwen3-0.6b", "llama3-tiny-current"};

static int cfg_eq(const struct fi_config *a, const struct fi_config *b)
{
	int same = a->family == b->family && !strcmp(a->arch, b->arch) && a->hidden == b->hidden &&
		   a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
		   a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->ffn == b->ffn &&
		   a->vocab == b->vocab && a->max_pos == b->max_pos && a->rms_eps == b->rms_eps &&
		   a->rope_theta == b->rope_theta && a->rope_type == b->rope_type &&
		   a->rope_factor == b->rope_factor && a->rope_low_freq_factor == b->rope_low_freq_factor &&
		   a->rope_high_freq_factor == b->rope_high_freq_factor &&
		   a->rope_orig_max_pos == b->rope_orig_max_pos && a->tie_embeddings == b->tie_embeddings &&
		   a->sliding_window == b->sliding_window && a->qkv_bias == b->qkv_bias &&
		   a->qk_norm == b->qk_norm && a->bos_id == b->bos_id && a->n_eos == b->n_eos &&
		   a->torch_dtype == b->torch_dtype;
	for (int i = 0; same && i < a->n_eos; i++)
		same = a->eos_ids[i] == b->eos_ids[i];
	/* the model families' keys */
	same = same && a->text_tower == b->text_tower && a->act == b->act &&
	       a->norm_plus_one == b->norm_plus_one && a->sandwich == b->sandwich &&
	       a->embed_scale == b->embed_scale && a->attn_softcap == b->attn_softcap &&
	       a->final_softcap == b->final_softcap && a->query_scalar == b->query_scalar &&
	       a->rope_local_theta == b->rope_local_theta && a->fused_qkv == b->fused_qkv &&
	       !memcmp(a->layer, b->layer, sizeof a->layer) &&
	       a->rope_attn_factor == b->rope_attn_factor && a->rope_beta_fast == b->rope_beta_fast &&
	       a->rope_beta_slow == b->rope_beta_slow && a->rope_truncate == b->rope_truncate &&
	       a->rope_long == b->rope_long && a->n_rope_factors == b->n_rope_factors &&
	       !memcmp(a->rope_short, b->rope_short, sizeof(float) * (size_t)a->n_rope_factors) &&
	       !memcmp(a->rope_long_f, b->rope_long_f, sizeof(float) * (size_t)a->n_rope_factors) &&
	       a->n_experts == b->n_experts && a->n_experts_used == b->n_experts_used &&
	       a->moe_ffn == b->moe_ffn && a->norm_topk == b->norm_topk;
	return same;
}

static void roundtrip(const struct fi_config *c)
{
	struct fi_config back;
	char *j = fi_config_to_json(c);
	ck_assert_ptr_nonnull(j);
	ck_assert_msg(fi_config_parse(j, strlen(j), NULL, 0, &back) == FI_OK, "%s\n%s", fi_errmsg(), j);
	ck_assert_msg(cfg_eq(c, &back), "round trip differs:\n%s", j);
	free(j);
}

static int ival(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	ck_assert_msg(json_is_integer(v), "expected.json: %s", k);
	return (int)json_integer_value(v);
}

START_TEST(test_fixture)
{
	static const char *const rope[] = {"default", "llama3", "linear", "dynamic"};
	const char *name = fixtures[_i];
	char dir[512], p[600];
	struct fi_config c;
	json_t *e, *eos;
	json_error_t jerr;
	snprintf(dir, sizeof dir, "%s", fi_test_fixture("config/"));
	strncat(dir, name, sizeof dir - strlen(dir) - 1);
	snprintf(p, sizeof p, "%s/expected.json", dir);
	e = json_load_file(p, 0, &jerr);
	ck_assert_msg(e != NULL, "%s: %s", p, jerr.text);
	ck_assert_msg(fi_config_load_dir(dir, &c) == FI_OK, "%s: %s", name, fi_errmsg());
	ck_assert_str_eq(fi_family_name(c.family), json_string_value(json_object_get(e, "family")));
	ck_assert_int_eq(c.hidden, ival(e, "hidden"));
	ck_assert_int_eq(c.n_layers, ival(e, "n_layers"));
	ck_assert_int_eq(c.n_heads, ival(e, "n_heads"));
	ck_assert_int_eq(c.n_kv_heads, ival(e, "n_kv_heads"));
	ck_assert_int_eq(c.head_dim, ival(e, "head_dim"));
	ck_assert_int_eq(c.ffn, ival(e, "ffn"));
	ck_assert_int_eq(c.vocab, ival(e, "vocab"));
	ck_assert_int_eq(c.max_pos, ival(e, "max_pos"));
	ck_assert_float_eq(c.rms_eps, (float)json_number_value(json_object_get(e, "rms_eps")));
	ck_assert_double_eq(c.rope_theta, json_number_value(json_object_get(e, "rope_theta")));
	ck_assert_str_eq(rope[c.rope_type], json_string_value(json_object_get(e, "rope_type")));
	if (c.rope_type != FI_ROPE_DEFAULT)
		ck_assert_double_eq(c.rope_factor, json_number_value(json_object_get(e, "rope_factor")));
	ck_assert_int_eq(c.tie_embeddings, json_is_true(json_object_get(e, "tie")));
	ck_assert_int_eq(c.sliding_window, ival(e, "sliding_window"));
	ck_assert_int_eq(c.bos_id, ival(e, "bos"));
	eos = json_object_get(e, "eos");
	ck_assert_int_eq(c.n_eos, (int)json_array_size(eos));
	for (int i = 0; i < c.n_eos; i++)
		ck_assert_int_eq(c.eos_ids[i], json_integer_value(json_array_get(eos, (size_t)i)));
	ck_assert_int_eq(fi_config_params(&c), json_integer_value(json_object_get(e, "params")));
	ck_assert_int_eq(c.qkv_bias, c.family == FI_FAM_QWEN2);
	ck_assert_int_eq(c.qk_norm, c.family == FI_FAM_QWEN3);
	ck_assert_int_eq(c.torch_dtype, FI_DT_BF16);
	roundtrip(&c);
	json_decref(e);
}
END_TEST

START_TEST(test_llama31_details)
{
	struct fi_config c;
	ck_assert_int_eq(fi_config_load_dir(fi_test_fixture("config/llama-3.1-8b-instruct"), &c), FI_OK);
	ck_assert_str_eq(c.arch, "LlamaForCausalLM");
	ck_assert_int_eq(c.rope_type, FI_ROPE_LLAMA3);
	ck_assert_double_eq(c.rope_factor, 8.0);
	ck_assert_double_eq(c.rope_low_freq_factor, 1.0);
	ck_assert_double_eq(c.rope_high_freq_factor, 4.0);
	ck_assert_int_eq(c.rope_orig_max_pos, 8192);
	ck_assert_int_eq(c.n_eos, 3);
	ck_assert_int_eq(c.eos_ids[2], 128009);
	ck_assert_int_eq(fi_config_load_dir("/nonexistent-fi-dir", &c), FI_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "/nonexistent-fi-dir/config.json"));
}
END_TEST

/* A small valid Llama config; tests patch it (set keys from a JSON object, delete some). */
static const char base[] =
	"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
	"\"num_attention_heads\":8,\"num_key_value_heads\":4,\"intermediate_size\":172,"
	"\"vocab_size\":512,\"max_position_embeddings\":512,\"rms_norm_eps\":1e-5,"
	"\"bos_token_id\":1,\"eos_token_id\":2}";

static fi_err parse_patched(const char *patch, const char *del, const char *gen, struct fi_config *c)
{
	json_t *o = json_loads(base, 0, NULL), *p;
	char *s, buf[256], *tok, *save = NULL;
	fi_err e;
	ck_assert_ptr_nonnull(o);
	if (patch) {
		p = json_loads(patch, 0, NULL);
		ck_assert_msg(p != NULL, "bad patch %s", patch);
		json_object_update(o, p);
		json_decref(p);
	}
	if (del) {
		snprintf(buf, sizeof buf, "%s", del);
		for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			json_object_del(o, tok);
	}
	s = json_dumps(o, 0);
	fi_clear_error();
	e = fi_config_parse(s, strlen(s), gen, gen ? strlen(gen) : 0, c);
	free(s);
	json_decref(o);
	return e;
}

static const struct err_case {
	const char *name, *patch, *del;
	fi_err code;
	const char *msg;
} err_cases[] = {
	{"no hidden", NULL, "hidden_size", FI_EFORMAT, "config.json: 'hidden_size' is missing"},
	{"no layers", NULL, "num_hidden_layers", FI_EFORMAT, "'num_hidden_layers' is missing"},
	{"no heads", NULL, "num_attention_heads", FI_EFORMAT, "'num_attention_heads' is missing"},
	{"no ffn", NULL, "intermediate_size", FI_EFORMAT, "'intermediate_size' is missing"},
	{"no vocab", NULL, "vocab_size", FI_EFORMAT, "'vocab_size' is missing"},
	{"no max pos", NULL, "max_position_embeddings", FI_EFORMAT, "'max_position_embeddings' is missing"},
	{"no eps", NULL, "rms_norm_eps", FI_EFORMAT, "'rms_norm_eps' is missing"},
	{"null hidden", "{\"hidden_size\":null}", NULL, FI_EFORMAT, "'hidden_size' is missing"},
	{"hidden string", "{\"hidden_size\":\"64\"}", NULL, FI_EFORMAT, "'hidden_size' is not an integer"},
	{"hidden real", "{\"hidden_size\":64.0}", NULL, FI_EFORMAT, "'hidden_size' is not an integer"},
	{"hidden bool", "{\"hidden_size\":true}", NULL, FI_EFORMAT, "'hidden_size' is not an integer"},
	{"hidden zero", "{\"hidden_size\":0}", NULL, FI_ERANGE, "'hidden_size' = 0 is out of range"},
	{"hidden negative", "{\"hidden_size\":-64}", NULL, FI_ERANGE, "'hidden_size' = -64"},
	{"hidden huge", "{\"hidden_size\":65537}", NULL, FI_ERANGE, "'hidden_size' = 65537 is out of range [1, 65536]"},
	{"hidden int64", "{\"hidden_size\":9223372036854775807}", NULL, FI_ERANGE, "'hidden_size'"},
	{"layers huge", "{\"num_hidden_layers\":1025}", NULL, FI_ERANGE, "'num_hidden_layers' = 1025"},
	{"heads huge", "{\"num_attention_heads\":2048}", NULL, FI_ERANGE, "'num_attention_heads' = 2048"},
	{"kv heads zero", "{\"num_key_value_heads\":0}", NULL, FI_ERANGE, "'num_key_value_heads' = 0"},
	{"vocab huge", "{\"vocab_size\":5000000}", NULL, FI_ERANGE, "'vocab_size' = 5000000"},
	{"ffn huge", "{\"intermediate_size\":2000000}", NULL, FI_ERANGE, "'intermediate_size'"},
	{"max pos zero", "{\"max_position_embeddings\":0}", NULL, FI_ERANGE, "'max_position_embeddings'"},
	{"heads not divisible", "{\"num_key_value_heads\":3}", NULL, FI_EFORMAT,
	 "'num_attention_heads' (8) is not a multiple of 'num_key_value_heads' (3)"},
	{"kv above heads", "{\"num_key_value_heads\":16}", NULL, FI_EFORMAT, "not a multiple of 'num_key_value_heads' (16)"},
	{"head dim odd", "{\"head_dim\":7}", NULL, FI_ERANGE, "'head_dim' (7) is odd"},
	{"head dim huge", "{\"head_dim\":4096}", NULL, FI_ERANGE, "'head_dim' = 4096"},
	{"head dim underivable", "{\"hidden_size\":60}", NULL, FI_EFORMAT, "'head_dim' is missing and 'hidden_size' (60)"},
	{"eps zero", "{\"rms_norm_eps\":0}", NULL, FI_ERANGE, "'rms_norm_eps' = 0 must be positive"},
	{"eps negative", "{\"rms_norm_eps\":-1e-5}", NULL, FI_ERANGE, "'rms_norm_eps'"},
	{"eps string", "{\"rms_norm_eps\":\"1e-5\"}", NULL, FI_EFORMAT, "'rms_norm_eps' is not a number"},
	{"eps underflow", "{\"rms_norm_eps\":1e-85}", NULL, FI_ERANGE, "'rms_norm_eps' = 1e-85 underflows a float"},
	{"eps one", "{\"rms_norm_eps\":1}", NULL, FI_ERANGE, "'rms_norm_eps' = 1 is not below 1"},
	{"theta zero", "{\"rope_theta\":0}", NULL, FI_ERANGE, "'rope_theta' = 0 must be positive"},
	{"tie string", "{\"tie_word_embeddings\":\"yes\"}", NULL, FI_EFORMAT, "'tie_word_embeddings' is not a boolean"},
	{"arch string", "{\"architectures\":\"LlamaForCausalLM\"}", NULL, FI_EFORMAT, "'architectures' is not an array"},
	{"arch number", "{\"architectures\":[5]}", NULL, FI_EFORMAT, "'architectures'[0] is not a string"},
	{"arch unknown", "{\"architectures\":[\"GPT2LMHeadModel\"]}", NULL, FI_EUNSUPPORTED,
	 "architecture 'GPT2LMHeadModel' is not supported"},
	{"no arch", NULL, "architectures", FI_EFORMAT, "'architectures' and 'model_type' are missing"},
	{"model_type unknown", "{\"model_type\":\"gemma\"}", "architectures", FI_EUNSUPPORTED, "model_type 'gemma'"},
	{"model_type number", "{\"model_type\":3}", "architectures", FI_EFORMAT, "'model_type' is not a string"},
	{"eos too many", "{\"eos_token_id\":[1,2,3,4,5,6,7,8,9]}", NULL, FI_ERANGE, "'eos_token_id' lists 9 ids, more than 8"},
	{"eos list string", "{\"eos_token_id\":[2,\"3\"]}", NULL, FI_EFORMAT, "'eos_token_id'[1] is not an integer"},
	{"eos list range", "{\"eos_token_id\":[2,512]}", NULL, FI_ERANGE, "'eos_token_id'[1] = 512 is outside the vocabulary"},
	{"eos range", "{\"eos_token_id\":600}", NULL, FI_ERANGE, "'eos_token_id' = 600 is out of range"},
	{"eos string", "{\"eos_token_id\":\"2\"}", NULL, FI_EFORMAT, "'eos_token_id' is not an integer"},
	{"bos negative", "{\"bos_token_id\":-5}", NULL, FI_ERANGE, "'bos_token_id' = -5"},
	{"act gelu", "{\"hidden_act\":\"gelu\"}", NULL, FI_EUNSUPPORTED, "'hidden_act' gelu is not supported"},
	{"mlp bias", "{\"mlp_bias\":true}", NULL, FI_EUNSUPPORTED, "'mlp_bias' true is not supported"},
	{"attention bias type", "{\"attention_bias\":1}", NULL, FI_EFORMAT, "'attention_bias' is not a boolean"},
	{"dtype unknown", "{\"torch_dtype\":\"int8\"}", NULL, FI_EUNSUPPORTED, "'torch_dtype' 'int8' is not supported"},
	{"dtype number", "{\"dtype\":5}", NULL, FI_EFORMAT, "'dtype' is not a string"},
	{"mistral window negative", "{\"architectures\":[\"MistralForCausalLM\"],\"sliding_window\":-1}", NULL,
	 FI_ERANGE, "'sliding_window' must be a positive integer (null for no window)"},
	{"mistral window zero", "{\"architectures\":[\"MistralForCausalLM\"],\"sliding_window\":0}", NULL,
	 FI_ERANGE, "'sliding_window' must be a positive integer"},
	{"llama window zero", "{\"sliding_window\":0}", NULL, FI_ERANGE, "'sliding_window' must be"},
	{"llama window negative", "{\"sliding_window\":-4096}", NULL, FI_ERANGE, "'sliding_window' must be"},
	{"llama window string", "{\"sliding_window\":\"4096\"}", NULL, FI_ERANGE, "'sliding_window' must be"},
	{"qwen2 window negative unused", "{\"architectures\":[\"Qwen2ForCausalLM\"],\"sliding_window\":-1}",
	 NULL, FI_ERANGE, "'sliding_window' must be"},
	{"qwen3 window zero used", "{\"architectures\":[\"Qwen3ForCausalLM\"],\"sliding_window\":0,"
	 "\"use_sliding_window\":true}", NULL, FI_ERANGE, "'sliding_window' must be"},
	{"theta huge", "{\"rope_theta\":1e308}", NULL, FI_ERANGE, "'rope_theta' = 1e+308 is out of range (1, 1e+12]"},
	{"theta one", "{\"rope_theta\":1}", NULL, FI_ERANGE, "'rope_theta' = 1 is out of range"},
	{"theta below one", "{\"rope_theta\":0.5}", NULL, FI_ERANGE, "'rope_theta' = 0.5 is out of range"},
	{"theta huge in rope_parameters", "{\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1e300}}",
	 NULL, FI_ERANGE, "'rope_theta' = 1e+300 is out of range"},
	{"gemma3 two rope scalings", "{\"architectures\":[\"Gemma3ForCausalLM\"],\"model_type\":\"gemma3_text\","
	 "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":8.0},\"rope_parameters\":{\"full_attention\":"
	 "{\"rope_type\":\"default\",\"rope_theta\":1000000.0}}}", NULL, FI_EFORMAT,
	 "both 'rope_scaling' and per-layer 'rope_parameters' are given"},
	{"max pos one", "{\"max_position_embeddings\":1}", NULL, FI_ERANGE,
	 "'max_position_embeddings' = 1 is out of range [16, 16777216]"},
	{"model_type other family", "{\"model_type\":\"qwen3\"}", NULL, FI_EFORMAT,
	 "'model_type' 'qwen3' does not match architecture 'LlamaForCausalLM' (model_type 'llama')"},
	{"model_type unknown with arch", "{\"model_type\":\"gemma\"}", NULL, FI_EFORMAT,
	 "'model_type' 'gemma' does not match"},
	{"model_type number with arch", "{\"model_type\":3}", NULL, FI_EFORMAT, "'model_type' is not a string"},
	{"model_type object with arch", "{\"model_type\":{\"a\":1}}", NULL, FI_EFORMAT, "'model_type' is not a string"},
	{"qwen2 window type", "{\"architectures\":[\"Qwen2ForCausalLM\"],\"use_sliding_window\":\"on\"}", NULL,
	 FI_EFORMAT, "'use_sliding_window' is not a boolean"},
	/* rope_scaling */
	{"rope not object", "{\"rope_scaling\":\"llama3\"}", NULL, FI_EFORMAT, "'rope_scaling' is not an object"},
	{"rope no type", "{\"rope_scaling\":{\"factor\":2.0}}", NULL, FI_EFORMAT, "'rope_scaling.rope_type' is missing"},
	{"rope type number", "{\"rope_scaling\":{\"rope_type\":1}}", NULL, FI_EFORMAT, "'rope_scaling.rope_type' is not a string"},
	{"rope yarn no factor", "{\"rope_scaling\":{\"rope_type\":\"yarn\"}}", NULL, FI_EFORMAT,
	 "rope_scaling: 'factor' is missing"},
	{"rope longrope", "{\"rope_scaling\":{\"type\":\"longrope\"}}", NULL, FI_EFORMAT,
	 "rope_scaling: 'short_factor' is missing"},
	{"rope unknown", "{\"rope_scaling\":{\"rope_type\":\"mrope\"}}", NULL, FI_EUNSUPPORTED,
	 "'rope_scaling' type 'mrope' is not supported"},
	{"rope linear no factor", "{\"rope_scaling\":{\"rope_type\":\"linear\"}}", NULL, FI_EFORMAT,
	 "rope_scaling: 'factor' is missing"},
	{"rope factor negative", "{\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":-2}}", NULL, FI_ERANGE,
	 "rope_scaling: 'factor' = -2 must be positive"},
	{"llama3 no low", "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"high_freq_factor\":4.0,"
	 "\"original_max_position_embeddings\":8192}}", NULL, FI_EFORMAT, "rope_scaling: 'low_freq_factor' is missing"},
	{"llama3 no high", "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
	 "\"original_max_position_embeddings\":8192}}", NULL, FI_EFORMAT, "'high_freq_factor' is missing"},
	{"llama3 no orig", "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
	 "\"high_freq_factor\":4.0}}", NULL, FI_EFORMAT, "'original_max_position_embeddings' is missing"},
	{"llama3 no factor", "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"low_freq_factor\":1.0,"
	 "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}", NULL, FI_EFORMAT, "'factor' is missing"},
	{"llama3 low above high", "{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":4.0,"
	 "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}", NULL, FI_ERANGE,
	 "'high_freq_factor' must exceed 'low_freq_factor'"},
};

/* The edges of the ranges above are accepted. */
START_TEST(test_bounds_accepted)
{
	struct fi_config c;
	ck_assert_int_eq(parse_patched("{\"max_position_embeddings\":16}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.max_pos, 16);
	ck_assert_int_eq(parse_patched("{\"rope_theta\":1e12}", NULL, NULL, &c), FI_OK);
	ck_assert_double_eq(c.rope_theta, 1e12);
	ck_assert_int_eq(parse_patched("{\"rope_theta\":1.5}", NULL, NULL, &c), FI_OK);
	/* Llama ignores a window, as transformers does, but a valid one is no error */
	ck_assert_int_eq(parse_patched("{\"sliding_window\":4096}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.sliding_window, 0);
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"MistralForCausalLM\"],\"sliding_window\":1}",
				       NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.sliding_window, 1);
}
END_TEST

START_TEST(test_errors)
{
	const struct err_case *k = &err_cases[_i];
	struct fi_config c;
	fi_err e = parse_patched(k->patch, k->del, NULL, &c);
	ck_assert_msg(e == k->code, "%s: got %s (%s)", k->name, fi_strerror(e), fi_errmsg());
	ck_assert_msg(strstr(fi_errmsg(), k->msg), "%s: '%s' lacks '%s'", k->name, fi_errmsg(), k->msg);
}
END_TEST

/* The malformed family configs of tests/fixtures/bad (kind "config" in cases.tsv, from
 * tools/make_bad_fixtures.py): each refused with its code, the message naming the key. */
START_TEST(test_family_corpus)
{
	size_t len;
	char *tab = fi_test_slurp(fi_test_fixture("bad/cases.tsv"), &len), *line, *save = NULL;
	int n = 0;
	ck_assert_ptr_nonnull(tab);
	for (line = strtok_r(tab, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *kind, *file, *code, *sub, *s2 = NULL, path[512], *data;
		size_t dlen;
		struct fi_config c;
		fi_err e, want;
		if (line[0] == '#')
			continue;
		kind = strtok_r(line, "\t", &s2);
		file = strtok_r(NULL, "\t", &s2);
		code = strtok_r(NULL, "\t", &s2);
		sub = strtok_r(NULL, "\t", &s2);
		if (!kind || strcmp(kind, "config"))
			continue;
		want = !strcmp(code, "EFORMAT") ? FI_EFORMAT : !strcmp(code, "ERANGE") ? FI_ERANGE
		       : !strcmp(code, "EUNSUPPORTED") ? FI_EUNSUPPORTED : FI_OK;
		ck_assert_msg(want != FI_OK, "%s: code %s", file, code);
		snprintf(path, sizeof path, "%s%s", fi_test_fixture("bad/"), file);
		data = fi_test_slurp(path, &dlen);
		ck_assert_msg(data, "%s missing", path);
		fi_clear_error();
		e = fi_config_parse(data, dlen, NULL, 0, &c);
		ck_assert_msg(e == want, "%s: got %s (%s), want %s", file, fi_strerror(e), fi_errmsg(),
			      code);
		ck_assert_msg(strstr(fi_errmsg(), sub), "%s: '%s' lacks '%s'", file, fi_errmsg(), sub);
		free(data);
		n++;
	}
	free(tab);
	ck_assert_int_ge(n, 20);
}
END_TEST

/* The family fixtures' configs (tests/fixtures/hf, written by transformers 5) parse into what
 * the model needs, and survive the round trip through an image's JSON. */
START_TEST(test_family_configs)
{
	struct fi_config c;
	ck_assert_msg(!fi_config_load_dir(fi_test_fixture("hf/gemma2"), &c), "%s", fi_errmsg());
	ck_assert_int_eq(c.family, FI_FAM_GEMMA2);
	ck_assert(c.norm_plus_one && c.sandwich && c.act == FI_ACT_GELU_TANH);
	ck_assert(c.attn_softcap == 3.0f && c.final_softcap == 10.0f && c.query_scalar == 24.0f);
	ck_assert(c.embed_scale == 8.0f && c.sliding_window == 8);
	ck_assert_uint_eq(c.layer[0], FI_LAYER_SLIDING);
	ck_assert_uint_eq(c.layer[1], 0);
	ck_assert_uint_eq(c.layer[2], FI_LAYER_SLIDING);
	roundtrip(&c);
	ck_assert_msg(!fi_config_load_dir(fi_test_fixture("hf/gemma3"), &c), "%s", fi_errmsg());
	ck_assert(c.family == FI_FAM_GEMMA3 && c.qk_norm && c.attn_softcap == 0 && c.final_softcap == 0);
	ck_assert(c.rope_type == FI_ROPE_LINEAR && c.rope_factor == 4.0 && c.rope_theta == 1e6 &&
		  c.rope_local_theta == 1e4);
	for (int l = 0; l < 6; l++)
		ck_assert_uint_eq(c.layer[l], (l + 1) % 3 ? FI_LAYER_SLIDING : 0);
	roundtrip(&c);
	ck_assert_msg(!fi_config_load_dir(fi_test_fixture("hf/phi3_longrope"), &c), "%s", fi_errmsg());
	ck_assert(c.family == FI_FAM_PHI3 && c.fused_qkv && c.rope_type == FI_ROPE_LONGROPE);
	ck_assert(c.rope_orig_max_pos == 12 && c.rope_long && c.n_rope_factors == 8);
	ck_assert(c.rope_long_f[7] == 16.0f && c.rope_short[1] == 1.1f);
	ck_assert(fabs(c.rope_attn_factor - sqrt(1 + log(256.0 / 12) / log(12.0))) < 1e-12);
	roundtrip(&c);
	ck_assert_msg(!fi_config_load_dir(fi_test_fixture("hf/mixtral"), &c), "%s", fi_errmsg());
	ck_assert(c.n_experts == 4 && c.n_experts_used == 2 && c.norm_topk && c.moe_ffn == 48);
	ck_assert_uint_eq(c.layer[1], FI_LAYER_MOE);
	roundtrip(&c);
	ck_assert_msg(!fi_config_load_dir(fi_test_fixture("hf/qwen3_moe"), &c), "%s", fi_errmsg());
	ck_assert(c.n_experts == 8 && c.n_experts_used == 3 && c.norm_topk && c.moe_ffn == 32);
	ck_assert(c.layer[0] == FI_LAYER_MOE && c.layer[1] == 0 && c.layer[2] == FI_LAYER_MOE);
	roundtrip(&c);
	ck_assert_msg(!fi_config_load_dir(fi_test_fixture("hf/qwen2_yarn"), &c), "%s", fi_errmsg());
	ck_assert(c.rope_type == FI_ROPE_YARN && c.rope_factor == 4.0 && c.rope_orig_max_pos == 32);
	roundtrip(&c);
}
END_TEST

/* Gemma 3's multimodal config: the text tower under text_config, which the hub's configs
 * fill only where it differs from Gemma3TextConfig's defaults; ids and tying at the top. */
START_TEST(test_gemma3_text_tower)
{
	static const char mm[] =
		"{\"architectures\":[\"Gemma3ForConditionalGeneration\"],\"model_type\":\"gemma3\","
		"\"eos_token_id\":[1,106],\"text_config\":{\"hidden_size\":2560,"
		"\"intermediate_size\":10240,\"model_type\":\"gemma3_text\",\"num_hidden_layers\":34,"
		"\"rope_scaling\":{\"factor\":8.0,\"rope_type\":\"linear\"},\"sliding_window\":1024},"
		"\"vision_config\":{\"hidden_size\":1152},\"torch_dtype\":\"bfloat16\"}";
	struct fi_config c;
	ck_assert_msg(!fi_config_parse(mm, sizeof mm - 1, NULL, 0, &c), "%s", fi_errmsg());
	ck_assert(c.family == FI_FAM_GEMMA3 && c.text_tower);
	ck_assert_str_eq(c.arch, "Gemma3ForConditionalGeneration");
	ck_assert(c.hidden == 2560 && c.n_layers == 34 && c.n_heads == 8 && c.n_kv_heads == 4);
	ck_assert(c.head_dim == 256 && c.vocab == 262208 && c.max_pos == 131072);
	ck_assert(c.rms_eps == 1e-6f && c.rope_theta == 1e6 && c.rope_local_theta == 1e4);
	ck_assert(c.rope_type == FI_ROPE_LINEAR && c.rope_factor == 8.0 && c.sliding_window == 1024);
	ck_assert(c.tie_embeddings && c.n_eos == 2 && c.eos_ids[1] == 106);
	ck_assert(c.layer[4] == FI_LAYER_SLIDING && c.layer[5] == 0 && c.query_scalar == 256);
	roundtrip(&c);
}
END_TEST

START_TEST(test_bad_json)
{
	struct fi_config c;
	ck_assert_int_eq(fi_config_parse("{\"hidden_size\":", 15, NULL, 0, &c), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "config.json: not valid JSON"));
	ck_assert_int_eq(fi_config_parse("[1]", 3, NULL, 0, &c), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "not a JSON object"));
	ck_assert_int_eq(fi_config_parse("{\"a\":1,\"a\":2}", 13, NULL, 0, &c), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "duplicate object key"));
	ck_assert_int_eq(fi_config_parse("", 0, NULL, 0, &c), FI_EFORMAT);
	/* Not NUL-terminated: the length bounds the parse. */
	ck_assert_int_eq(fi_config_parse(base, sizeof base - 2, NULL, 0, &c), FI_EFORMAT);
}
END_TEST

static const struct rope_case {
	const char *patch;
	enum fi_rope_type type;
	double factor;
} rope_cases[] = {
	{"{\"rope_scaling\":null}", FI_ROPE_DEFAULT, 0},
	{"{\"rope_scaling\":{\"rope_type\":\"default\"}}", FI_ROPE_DEFAULT, 0},
	{"{\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}", FI_ROPE_LINEAR, 2.0},
	{"{\"rope_scaling\":{\"rope_type\":\"dynamic\",\"factor\":4}}", FI_ROPE_DYNAMIC, 4.0},
	{"{\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":32.0,\"low_freq_factor\":1,"
	 "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}}", FI_ROPE_LLAMA3, 32.0},
	/* transformers 5 layout */
	{"{\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":250000.0}}", FI_ROPE_DEFAULT, 0},
	{"{\"rope_parameters\":{\"rope_type\":\"linear\",\"factor\":3.0,\"rope_theta\":250000.0}}",
	 FI_ROPE_LINEAR, 3.0},
};

START_TEST(test_rope)
{
	const struct rope_case *k = &rope_cases[_i];
	struct fi_config c;
	ck_assert_msg(parse_patched(k->patch, NULL, NULL, &c) == FI_OK, "%s: %s", k->patch, fi_errmsg());
	ck_assert_int_eq(c.rope_type, k->type);
	if (k->type != FI_ROPE_DEFAULT)
		ck_assert_double_eq(c.rope_factor, k->factor);
	if (k->type == FI_ROPE_LLAMA3) {
		ck_assert_double_eq(c.rope_low_freq_factor, 1.0);
		ck_assert_double_eq(c.rope_high_freq_factor, 4.0);
		ck_assert_int_eq(c.rope_orig_max_pos, 8192);
	}
	ck_assert_double_eq(c.rope_theta, strstr(k->patch, "rope_parameters") ? 250000.0 : 10000.0);
	roundtrip(&c);
}
END_TEST

START_TEST(test_defaults_and_families)
{
	struct fi_config c;
	/* Defaults: KV heads = heads, head_dim = hidden / heads, theta 10000, untied, no ids. */
	ck_assert_int_eq(parse_patched(NULL, "num_key_value_heads,bos_token_id,eos_token_id", NULL, &c), FI_OK);
	ck_assert_int_eq(c.family, FI_FAM_LLAMA);
	ck_assert_int_eq(c.n_kv_heads, 8);
	ck_assert_int_eq(c.head_dim, 8);
	ck_assert_double_eq(c.rope_theta, 10000.0);
	ck_assert_int_eq(c.tie_embeddings, 0);
	ck_assert_int_eq(c.bos_id, -1);
	ck_assert_int_eq(c.n_eos, 0);
	ck_assert_int_eq(c.sliding_window, 0);
	ck_assert_int_eq(c.qkv_bias + c.qk_norm, 0);
	ck_assert_int_eq(c.torch_dtype, FI_DT_F32);
	roundtrip(&c);
	ck_assert_int_eq(parse_patched("{\"num_key_value_heads\":null,\"head_dim\":null}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.n_kv_heads, 8);
	/* architectures names the class; model_type, when given, must agree with it, and is
	 * the fallback without architectures. */
	ck_assert_int_eq(parse_patched("{\"model_type\":\"llama\"}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.family, FI_FAM_LLAMA);
	ck_assert_int_eq(parse_patched("{\"model_type\":null}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.family, FI_FAM_LLAMA);
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"MistralForCausalLM\"],\"model_type\":\"mistral\"}",
				       NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.family, FI_FAM_MISTRAL);
	ck_assert_int_eq(parse_patched("{\"model_type\":\"qwen3\"}", "architectures", NULL, &c), FI_OK);
	ck_assert_int_eq(c.family, FI_FAM_QWEN3);
	ck_assert_str_eq(c.arch, "Qwen3ForCausalLM");
	ck_assert_int_eq(parse_patched("{\"architectures\":[]}", NULL, NULL, &c), FI_EFORMAT);
	ck_assert_int_eq(parse_patched("{\"architectures\":[],\"model_type\":\"mistral\"}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.family, FI_FAM_MISTRAL);
	/* Llama attention_bias, Qwen2 always biased, Qwen3 q/k norm and its own attention_bias. */
	ck_assert_int_eq(parse_patched("{\"attention_bias\":true}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.qkv_bias, 1);
	roundtrip(&c);
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"Qwen2ForCausalLM\"]}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.qkv_bias, 1);
	ck_assert_int_eq(c.qk_norm, 0);
	ck_assert_str_eq(fi_family_name(c.family), "qwen2");
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":true}",
				       NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.qkv_bias, 1);
	ck_assert_int_eq(c.qk_norm, 1);
	roundtrip(&c);
	/* Mistral: attention_bias is not a Mistral key; sliding window default 4096, null off. */
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"MistralForCausalLM\"],\"attention_bias\":true}",
				       NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.qkv_bias, 0);
	ck_assert_int_eq(c.sliding_window, 4096);
	roundtrip(&c);
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"MistralForCausalLM\"],\"sliding_window\":null}",
				       NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.sliding_window, 0);
	roundtrip(&c);
	/* Qwen2: the window only counts with use_sliding_window. */
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"Qwen2ForCausalLM\"],\"sliding_window\":2048}",
				       NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.sliding_window, 0);
	ck_assert_int_eq(parse_patched("{\"architectures\":[\"Qwen2ForCausalLM\"],\"sliding_window\":2048,"
				       "\"use_sliding_window\":true}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.sliding_window, 2048);
	roundtrip(&c);
	/* Llama has no sliding window whatever the key says. */
	ck_assert_int_eq(parse_patched("{\"sliding_window\":128}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.sliding_window, 0);
	/* dtype spellings. */
	ck_assert_int_eq(parse_patched("{\"torch_dtype\":\"float16\"}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.torch_dtype, FI_DT_F16);
	ck_assert_int_eq(parse_patched("{\"dtype\":\"bfloat16\"}", NULL, NULL, &c), FI_OK);
	ck_assert_int_eq(c.torch_dtype, FI_DT_BF16);
	roundtrip(&c);
	ck_assert_str_eq(fi_family_name(FI_FAM_LLAMA), "llama");
	ck_assert_str_eq(fi_family_name(FI_FAM_MISTRAL), "mistral");
	ck_assert_str_eq(fi_family_name(FI_FAM_QWEN3), "qwen3");
}
END_TEST

START_TEST(test_generation_config)
{
	struct fi_config c;
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"bos_token_id\":7,\"eos_token_id\":[5,6]}", &c), FI_OK);
	ck_assert_int_eq(c.bos_id, 7);
	ck_assert_int_eq(c.n_eos, 2);
	ck_assert_int_eq(c.eos_ids[0], 5);
	ck_assert_int_eq(c.eos_ids[1], 6);
	roundtrip(&c);
	/* Keys generation_config.json lacks (or sets to null) keep config.json's values. */
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"temperature\":0.6,\"eos_token_id\":null}", &c), FI_OK);
	ck_assert_int_eq(c.bos_id, 1);
	ck_assert_int_eq(c.n_eos, 1);
	ck_assert_int_eq(c.eos_ids[0], 2);
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"eos_token_id\":9}", &c), FI_OK);
	ck_assert_int_eq(c.n_eos, 1);
	ck_assert_int_eq(c.eos_ids[0], 9);
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"eos_token_id\":[1,2,3,4,5,6,7,8]}", &c), FI_OK);
	ck_assert_int_eq(c.n_eos, 8);
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"eos_token_id\":[1000]}", &c), FI_ERANGE);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "generation_config.json: 'eos_token_id'[0] = 1000"));
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"bos_token_id\":\"1\"}", &c), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "generation_config.json: 'bos_token_id' is not an integer"));
	ck_assert_int_eq(parse_patched(NULL, NULL, "{\"eos_token_id\":", &c), FI_EFORMAT);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "generation_config.json: not valid JSON"));
	ck_assert_int_eq(parse_patched(NULL, NULL, "[]", &c), FI_EFORMAT);
}
END_TEST

/* ---- fi_config_check ---- */

/* The tensors a config expects, with shapes; slots to spare for an extra one. */
struct tset {
	struct fi_tensor t[128];
	char names[128][64];
	int n;
};

static void expected_set(const struct fi_config *c, struct tset *s)
{
	struct fi_expected e;
	memset(s, 0, sizeof *s);
	for (int i = 0; fi_expected_tensor(c, i, &e); i++) {
		ck_assert_int_lt(s->n, 127);
		snprintf(s->names[s->n], 64, "%s", e.name);
		s->t[s->n].name = s->names[s->n];
		s->t[s->n].dtype = FI_DT_F32;
		s->t[s->n].ndim = e.ndim;
		s->t[s->n].shape[0] = e.shape[0];
		s->t[s->n].shape[1] = e.shape[1];
		s->n++;
	}
}

static int idx(struct tset *s, const char *name)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->t[i].name, name))
			return i;
	ck_abort_msg("no tensor %s", name);
	return -1;
}

static void drop(struct tset *s, const char *name)
{
	int i = idx(s, name);
	s->t[i] = s->t[--s->n];
}

static const struct fi_config small = {
	.family = FI_FAM_LLAMA, .arch = "LlamaForCausalLM", .hidden = 64, .n_layers = 2, .n_heads = 8,
	.n_kv_heads = 4, .head_dim = 8, .ffn = 172, .vocab = 512, .max_pos = 512, .rms_eps = 1e-5f,
	.rope_theta = 10000, .tie_embeddings = 1, .bos_id = 1, .n_eos = 1, .eos_ids = {2}};

enum mut { M_NONE, M_DROP, M_SHAPE, M_NDIM, M_EXTRA, M_DUP, M_UNTIE, M_TIE, M_KV3, M_QWEN2, M_QWEN3 };

static const struct check_case {
	const char *name;
	enum mut m;
	const char *tensor;
	fi_err code;
	const char *msg;
} check_cases[] = {
	{"ok", M_NONE, NULL, FI_OK, ""},
	{"missing tensor", M_DROP, "blk.1.attn_k", FI_EMISMATCH, "tensor 'blk.1.attn_k' [32, 64] is missing"},
	{"embedding absent", M_DROP, "tok_embd", FI_EMISMATCH, "tensor 'tok_embd' [512, 64] is missing"},
	{"final norm absent", M_DROP, "out_norm", FI_EMISMATCH, "tensor 'out_norm' [64] is missing"},
	{"wrong shape", M_SHAPE, "blk.0.attn_q", FI_EMISMATCH,
	 "tensor 'blk.0.attn_q' has shape [64, 65], expected [64, 64]"},
	{"wrong ndim", M_NDIM, "blk.0.ffn_norm", FI_EMISMATCH,
	 "tensor 'blk.0.ffn_norm' has 2 dims [64, 1], expected 1 dims [64]"},
	{"extra tensor", M_EXTRA, "blk.2.attn_q", FI_EMISMATCH, "unexpected tensor 'blk.2.attn_q' [64, 64]"},
	{"duplicate tensor", M_DUP, "blk.0.attn_v", FI_EMISMATCH, "tensor 'blk.0.attn_v' appears twice"},
	{"untied without output", M_UNTIE, NULL, FI_EMISMATCH, "tensor 'output' [512, 64] is missing"},
	{"tied with output", M_TIE, NULL, FI_EMISMATCH, "unexpected tensor 'output' [512, 64]"},
	{"heads not divisible", M_KV3, NULL, FI_EMISMATCH,
	 "'num_attention_heads' (8) is not a multiple of 'num_key_value_heads' (3)"},
	{"qwen2 without biases", M_QWEN2, NULL, FI_EMISMATCH, "tensor 'blk.0.attn_q_bias' [64] is missing"},
	{"qwen3 without q/k norms", M_QWEN3, NULL, FI_EMISMATCH, "tensor 'blk.0.attn_q_norm' [8] is missing"},
};

START_TEST(test_check)
{
	const struct check_case *k = &check_cases[_i];
	struct fi_config c = small;
	static struct tset s;
	struct fi_tensor_set ts;
	fi_err e;
	expected_set(&c, &s);
	switch (k->m) {
	case M_DROP: drop(&s, k->tensor); break;
	case M_SHAPE: s.t[idx(&s, k->tensor)].shape[1]++; break;
	case M_NDIM:
		s.t[idx(&s, k->tensor)].ndim = 2;
		s.t[idx(&s, k->tensor)].shape[1] = 1;
		break;
	case M_EXTRA:
	case M_DUP:
		s.t[s.n] = s.t[idx(&s, k->m == M_DUP ? k->tensor : "blk.1.attn_q")];
		snprintf(s.names[s.n], 64, "%s", k->tensor);
		s.t[s.n].name = s.names[s.n];
		s.n++;
		break;
	case M_UNTIE: c.tie_embeddings = 0; break;
	case M_TIE:
		c.tie_embeddings = 0;
		expected_set(&c, &s);
		c.tie_embeddings = 1;
		break;
	case M_KV3: c.n_kv_heads = 3; break;
	case M_QWEN2: c.family = FI_FAM_QWEN2, c.qkv_bias = 1; break;
	case M_QWEN3: c.family = FI_FAM_QWEN3, c.qk_norm = 1; break;
	default: break;
	}
	ts.n = s.n;
	ts.t = s.t;
	fi_clear_error();
	e = fi_config_check(&c, &ts);
	ck_assert_msg(e == k->code, "%s: got %s (%s)", k->name, fi_strerror(e), fi_errmsg());
	if (k->code)
		ck_assert_msg(strstr(fi_errmsg(), k->msg), "%s: '%s' lacks '%s'", k->name, fi_errmsg(), k->msg);
}
END_TEST

/* The real checkpoint, mapped to engine names, satisfies its own config. */
START_TEST(test_check_real)
{
	const char *dir = fi_test_corpus("corpus/models/stories260K-hf", "stories260K");
	struct fi_st_model *m;
	struct fi_config c;
	static struct tset s;
	struct fi_tensor_set ts;
	if (!dir)
		return;
	ck_assert_int_eq(fi_config_load_dir(dir, &c), FI_OK);
	ck_assert_int_eq(c.n_layers, 5);
	ck_assert_int_eq(c.tie_embeddings, 1);
	ck_assert_int_eq(c.head_dim, 8);
	ck_assert_int_eq(c.torch_dtype, FI_DT_F32);
	ck_assert_int_eq(fi_config_params(&c), 260032);
	ck_assert_int_eq(fi_st_open_dir(dir, &m), FI_OK);
	memset(&s, 0, sizeof s);
	for (int i = 0; i < m->set.n; i++) {
		ck_assert_int_eq(fi_name_from_hf(m->set.t[i].name, s.names[s.n], 64), 1);
		s.t[s.n] = m->set.t[i];
		s.t[s.n].name = s.names[s.n];
		s.n++;
	}
	ts.n = s.n;
	ts.t = s.t;
	ck_assert_msg(fi_config_check(&c, &ts) == FI_OK, "%s", fi_errmsg());
	c.n_layers = 4;
	ck_assert_int_eq(fi_config_check(&c, &ts), FI_EMISMATCH);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "unexpected tensor 'blk.4."));
	fi_st_close_dir(m);
}
END_TEST

/* fi_config_params and fi_config_check walk the expected tensors in one pass; they must see
 * the list fi_expected_tensor gives, in the same order, for dense, mixed MoE and uniform
 * configs. The Qwen3-30B-A3B shape lists 18,867 tensors; with mlp_only_layers its layers
 * differ. */
START_TEST(test_expected_walk)
{
	static const char *const dirs[] = {"hf/mixtral", "hf/qwen3_moe", "hf/gemma2", "hf/phi3_longrope",
					   "hf/gemma3"};
	static const char big[] =
		"{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"hidden_size\":2048,\"num_hidden_layers\":48,"
		"\"num_attention_heads\":32,\"num_key_value_heads\":4,\"head_dim\":128,"
		"\"intermediate_size\":6144,\"moe_intermediate_size\":768,\"num_experts\":128,"
		"\"num_experts_per_tok\":8,\"vocab_size\":151936,\"mlp_only_layers\":[0,47],"
		"\"decoder_sparse_step\":2,\"max_position_embeddings\":40960,\"rms_norm_eps\":1e-6}";
	for (size_t d = 0; d <= sizeof dirs / sizeof dirs[0]; d++) {
		struct fi_config c;
		struct fi_expected e;
		struct fi_tensor_set ts = {0, NULL};
		struct fi_tensor *t;
		char (*names)[64];
		long long sum = 0;
		int n = 0;
		if (d < sizeof dirs / sizeof dirs[0])
			ck_assert_msg(!fi_config_load_dir(fi_test_fixture(dirs[d]), &c), "%s", fi_errmsg());
		else
			ck_assert_msg(!fi_config_parse(big, sizeof big - 1, NULL, 0, &c), "%s", fi_errmsg());
		while (fi_expected_tensor(&c, n, &e))
			n++;
		t = calloc((size_t)n, sizeof *t);
		names = calloc((size_t)n, sizeof *names);
		ck_assert(t && names);
		/* reversed, so a walk that only matched positions would fail */
		for (int i = 0; i < n; i++) {
			struct fi_tensor *r = &t[n - 1 - i];
			ck_assert(fi_expected_tensor(&c, i, &e));
			sum += e.ndim == 2 ? e.shape[0] * e.shape[1] : e.shape[0];
			snprintf(names[i], 64, "%s", e.name);
			r->name = names[i];
			r->dtype = FI_DT_BF16;
			r->ndim = e.ndim;
			r->shape[0] = e.shape[0];
			r->shape[1] = e.shape[1];
		}
		ts.n = n;
		ts.t = t;
		ck_assert_int_eq(fi_config_params(&c), sum);
		ck_assert_msg(fi_config_check(&c, &ts) == FI_OK, "%s: %s", d < 5 ? dirs[d] : "big",
			      fi_errmsg());
		if (d == sizeof dirs / sizeof dirs[0]) {
			/* step 2: odd layers are MoE, less layer 47 (mlp_only): 23 MoE (router and
			 * 3 per expert), 25 dense (gate, up, down); 8 attention tensors each */
			ck_assert_int_eq(n, 3 + 48 * 8 + 25 * 3 + 23 * (1 + 3 * 128));
			t[0].shape[0]++; /* the last expected tensor, now the wrong shape */
			ck_assert_int_eq(fi_config_check(&c, &ts), FI_EMISMATCH);
			ck_assert_ptr_nonnull(strstr(fi_errmsg(), "expected"));
		}
		free(t);
		free(names);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");
	tcase_add_loop_test(tc, test_fixture, 0, sizeof fixtures / sizeof fixtures[0]);
	tcase_add_test(tc, test_llama31_details);
	tcase_add_loop_test(tc, test_errors, 0, sizeof err_cases / sizeof err_cases[0]);
	tcase_add_test(tc, test_bounds_accepted);
	tcase_add_test(tc, test_bad_json);
	tcase_add_test(tc, test_family_corpus);
	tcase_add_test(tc, test_family_configs);
	tcase_add_test(tc, test_gemma3_text_tower);
	tcase_add_loop_test(tc, test_rope, 0, sizeof rope_cases / sizeof rope_cases[0]);
	tcase_add_test(tc, test_defaults_and_families);
	tcase_add_test(tc, test_generation_config);
	tcase_add_loop_test(tc, test_check, 0, sizeof check_cases / sizeof check_cases[0]);
	tcase_add_test(tc, test_check_real);
	tcase_add_test(tc, test_expected_walk);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
