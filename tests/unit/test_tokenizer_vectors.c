/* Tokenizer against the corpus test vectors as published (swift-transformers samples,
 * tokenizer_tests.json edge cases for the tokenizers we have, the 83 multilingual inputs with
 * their baselines). Ids must all match. The published decoded texts come from transformers,
 * which post-processes HF tokenizers' decode (space clean-up, and for Llama-2 a slow-tokenizer
 * view of <s>); the number that match must equal what HF tokenizers itself gets (noted by
 * each call), since our decode equals HF tokenizers' (test_tokenizer). The t5-base and
 * bert-base-uncased cases run on tests/fixtures/tok/models. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"
#include "util.h"

static struct fi_tok *load(const char *name)
{
	char rel[256];
	const char *p;
	struct fi_tok *t;
	snprintf(rel, sizeof rel, "corpus/tokenizers/%s/tokenizer.json", name);
	if (!strncmp(name, "tests/", 6))
		p = name; /* a file of this repository */
	else if (!(p = fi_test_corpus(rel, name)))
		return NULL;
	ck_assert_msg(!fi_tok_load_path(p, &t), "%s: %s", name, fi_errmsg());
	return t;
}

static json_t *vec(const char *rel)
{
	char full[256];
	const char *p;
	json_error_t je;
	json_t *j;
	snprintf(full, sizeof full, "corpus/testvectors/%s", rel);
	if (!(p = fi_test_corpus(full, rel)))
		return NULL;
	j = json_load_file(p, 0, &je);
	ck_assert_msg(j != NULL, "%s: %s", rel, je.text);
	return j;
}

static int ids_eq(const struct fi_tok_ids *a, json_t *b)
{
	json_t *x;
	size_t k;
	if (json_array_size(b) != a->n)
		return 0;
	json_array_foreach(b, k, x) if ((uint32_t)json_integer_value(x) != a->v[k])
		return 0;
	return 1;
}

static int dec_eq(struct fi_tok *t, json_t *ids, unsigned flags, json_t *want)
{
	struct fi_tok_ids v = {0};
	json_t *x;
	size_t k, n;
	char *d;
	int r;
	v.cap = json_array_size(ids) + 1;
	v.v = malloc(v.cap * sizeof *v.v);
	ck_assert_ptr_nonnull(v.v);
	json_array_foreach(ids, k, x) v.v[v.n++] = (uint32_t)json_integer_value(x);
	ck_assert(!fi_tok_decode(t, v.v, v.n, flags, &d, &n));
	r = json_string_length(want) == n && !memcmp(json_string_value(want), d, n);
	free(d);
	fi_tok_ids_free(&v);
	return r;
}

static void sample(const char *file, const char *name)
{
	json_t *j = vec(file);
	struct fi_tok *t = j ? load(name) : NULL;
	json_t *text = json_object_get(j, "text");
	struct fi_tok_ids ids = {0};
	if (!t) {
		json_decref(j);
		return;
	}
	ck_assert(!fi_tok_encode(t, json_string_value(text), json_string_length(text), FI_TOK_HF_DEFAULT, &ids));
	ck_assert_msg(ids_eq(&ids, json_object_get(j, "token_ids")), "%s on %s: ids differ", file, name);
	ck_assert_msg(dec_eq(t, json_object_get(j, "token_ids"), 0, json_object_get(j, "decoded_text")),
		      "%s on %s: decode differs", file, name);
	printf("test vector %s on %s: %zu ids match, decode matches\n", file, name, ids.n);
	fi_tok_ids_free(&ids);
	fi_tok_free(t);
	json_decref(j);
}

START_TEST(test_samples)
{
	sample("swift-transformers/gpt2_encoded_tokens.json", "gpt2");
	sample("swift-transformers/gpt2_encoded_tokens.json", "phi-2");
	sample("swift-transformers/llama_encoded.json", "llama-2");
	sample("swift-transformers/llama_3.2_encoded.json", "llama-3");
}
END_TEST

static void edge(json_t *all, const char *key, const char *name, size_t hf_with, size_t hf_without)
{
	json_t *cases = json_object_get(all, key), *c;
	struct fi_tok *t = load(name);
	size_t i, ok = 0, dw = 0, dwo = 0;
	if (!t)
		return;
	json_array_foreach(cases, i, c) {
		json_t *in = json_object_get(c, "input"), *want = json_object_get(json_object_get(c, "encoded"), "input_ids");
		struct fi_tok_ids ids = {0};
		ck_assert(!fi_tok_encode(t, json_string_value(in), json_string_length(in), FI_TOK_HF_DEFAULT, &ids));
		ok += ids_eq(&ids, want);
		dw += dec_eq(t, want, 0, json_object_get(c, "decoded_with_special"));
		dwo += dec_eq(t, want, FI_TOK_SKIP_SPECIAL, json_object_get(c, "decoded_without_special"));
		fi_tok_ids_free(&ids);
	}
	printf("tokenizer_tests.json %s on %s: ids %zu/%zu; transformers' decoded texts %zu/%zu and %zu/%zu "
	       "(HF tokenizers: %zu and %zu)\n", key, name, ok, json_array_size(cases), dw,
	       json_array_size(cases), dwo, json_array_size(cases), hf_with, hf_without);
	ck_assert_uint_eq(ok, json_array_size(cases));
	ck_assert_uint_eq(dw, hf_with);
	ck_assert_uint_eq(dwo, hf_without);
	fi_tok_free(t);
}

START_TEST(test_edge_cases)
{
	json_t *all = vec("swift-transformers/tokenizer_tests.json");
	if (!all)
		return;
	edge(all, "distilgpt2", "gpt2", 17, 17);
	edge(all, "coreml-projects/Llama-2-7b-chat-coreml", "llama-2", 18, 0);
	edge(all, "pcuenq/Llama-3.2-1B-Instruct-tokenizer", "llama-3", 17, 17);
	/* t5-base shares t5-small's tokenizer; bert-base-uncased's file is built from its vocab. */
	edge(all, "t5-base", "tests/fixtures/tok/models/t5-small.json", 17, 17);
	edge(all, "bert-base-uncased", "tests/fixtures/tok/models/bert-base-uncased.json", 16, 16);
	edge(all, "google-bert/bert-base-uncased", "tests/fixtures/tok/models/bert-base-uncased.json", 16, 16);
	json_decref(all);
}
END_TEST

static void multi(json_t *inputs, const char *file, const char *name, size_t hf_with, size_t hf_without)
{
	json_t *b = vec(file), *e, *in;
	struct fi_tok *t = b ? load(name) : NULL;
	size_t i, k, ok = 0, dw = 0, dwo = 0, n;
	if (!t) {
		json_decref(b);
		return;
	}
	n = json_array_size(json_object_get(b, "entries"));
	json_array_foreach(json_object_get(b, "entries"), i, e) {
		const char *id = json_string_value(json_object_get(e, "id"));
		struct fi_tok_ids ids = {0};
		json_t *text = NULL;
		json_array_foreach(inputs, k, in) if (!strcmp(json_string_value(json_object_get(in, "id")), id))
			text = json_object_get(in, "text");
		ck_assert_msg(text != NULL, "%s: input '%s' missing", file, id);
		ck_assert(!fi_tok_encode(t, json_string_value(text), json_string_length(text), FI_TOK_HF_DEFAULT, &ids));
		ok += ids_eq(&ids, json_object_get(e, "input_ids"));
		dw += dec_eq(t, json_object_get(e, "input_ids"), 0, json_object_get(e, "decoded_with_special"));
		dwo += dec_eq(t, json_object_get(e, "input_ids"), FI_TOK_SKIP_SPECIAL, json_object_get(e, "decoded_skip_special"));
		fi_tok_ids_free(&ids);
	}
	printf("multilingual %s on %s: ids %zu/%zu; transformers' decoded texts %zu/%zu and %zu/%zu "
	       "(HF tokenizers: %zu and %zu)\n", file, name, ok, n, dw, n, dwo, n, hf_with, hf_without);
	ck_assert_uint_eq(n, 83);
	ck_assert_uint_eq(ok, n);
	ck_assert_uint_eq(dw, hf_with);
	ck_assert_uint_eq(dwo, hf_without);
	fi_tok_free(t);
	json_decref(b);
}

START_TEST(test_multilingual)
{
	json_t *inputs = vec("swift-transformers-multilingual/inputs.json");
	if (!inputs)
		return;
	multi(inputs, "swift-transformers-multilingual/baselines/gpt2_multilingual.json", "gpt2", 83, 83);
	multi(inputs, "swift-transformers-multilingual/baselines/tinyllama_multilingual.json", "llama-2", 83, 0);
	json_decref(inputs);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tokenizer-vectors");
	TCase *tc = tcase_create("vectors");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_samples);
	tcase_add_test(tc, test_edge_cases);
	tcase_add_test(tc, test_multilingual);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
