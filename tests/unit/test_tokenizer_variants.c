/* Tokenizer parity on pipelines the corpus tokenizers do not use (tests/fixtures/tok/
 * variants.json from tools/tok_ref.py): other normalizers, pre-tokenizers and split
 * behaviours, Metaspace schemes, post-processors, added-token flags (single_word, lstrip,
 * rstrip, normalized), continuing_subword_prefix / end_of_word_suffix, unk fusing,
 * ignore_merges and both merge spellings. Each variant is a patch over a corpus tokenizer
 * (or a whole synthetic tokenizer); expected ids and decodes come from HF tokenizers. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"
#include "util.h"

static json_t *fx;

static int same(const char *a, size_t an, json_t *b)
{
	return json_string_length(b) == an && !memcmp(json_string_value(b), a, an);
}

START_TEST(test_variant)
{
	json_t *v = json_array_get(json_object_get(fx, "variants"), (size_t)_i);
	json_t *inputs = json_object_get(fx, "inputs"), *base = json_object_get(v, "base"), *j;
	json_t *exp = json_object_get(v, "expect");
	const char *name = json_string_value(json_object_get(v, "name"));
	struct fi_tok *t;
	size_t n = json_array_size(exp), ok = 0, shown = 0, uvdiff = 0;
	int uv_ok = json_is_true(json_object_get(v, "uv_ok"));
	char *uv = calloc(n + 1, 1);
	json_t *x;
	size_t k;
	ck_assert_ptr_nonnull(uv);
	json_array_foreach(json_object_get(fx, "uv"), k, x) if ((size_t)json_integer_value(x) < n)
		uv[json_integer_value(x)] = 1;
	char *txt;
	if (json_is_string(base)) {
		const char *p = json_string_value(base);
		if (strncmp(p, "tests/", 6))
			p = fi_test_corpus(p, name);
		json_error_t je;
		if (!p)
			return;
		j = json_load_file(p, 0, &je);
		ck_assert_ptr_nonnull(j);
		ck_assert(!json_object_update(j, json_object_get(v, "patch")));
	} else
		j = json_incref(json_object_get(v, "patch"));
	txt = json_dumps(j, JSON_COMPACT);
	ck_assert_msg(!fi_tok_load_json(txt, strlen(txt), &t), "%s: %s", name, fi_errmsg());
	free(txt);
	json_decref(j);
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(exp, i), *in = json_array_get(inputs, i), *ids = json_object_get(e, "ids");
		json_t *dv = json_object_get(e, "d"), *dsv = json_object_get(e, "ds");
		struct fi_tok_ids got = {0};
		char *d, *ds;
		size_t dn, dsn;
		int good;
		ck_assert(!fi_tok_encode(t, json_string_value(in), json_string_length(in), FI_TOK_HF_DEFAULT, &got));
		ck_assert(!fi_tok_decode(t, got.v, got.n, 0, &d, &dn));
		ck_assert(!fi_tok_decode(t, got.v, got.n, FI_TOK_SKIP_SPECIAL, &ds, &dsn));
		good = json_array_size(ids) == got.n;
		json_array_foreach(ids, k, x) if (good && (uint32_t)json_integer_value(x) != got.v[k])
			good = 0;
		good = good && same(d, dn, dv ? dv : in) && same(ds, dsn, dsv ? dsv : dv ? dv : in);
		ok += good;
		if (!good && uv_ok && uv[i]) {
			uvdiff++;
			good = 1;
		}
		if (!good && shown++ < 4) {
			printf("  %s: input %zu '%s'\n    got:", name, i, json_string_value(in));
			for (k = 0; k < got.n && k < 30; k++)
				printf(" %u", got.v[k]);
			printf("\n    want:");
			json_array_foreach(ids, k, x) if (k < 30) printf(" %lld", (long long)json_integer_value(x));
			printf("\n    dec '%s' / '%s'\n", d, ds);
		}
		free(d);
		free(ds);
		fi_tok_ids_free(&got);
	}
	printf("tokenizer variant %-34s %zu/%zu", name, ok, n);
	if (uvdiff)
		printf("  (%zu differ only by Unicode table versions: HF's crates vs utf8proc/PCRE2)", uvdiff);
	printf("\n");
	fi_tok_free(t);
	free(uv);
	ck_assert_uint_eq(ok + uvdiff, n);
}
END_TEST

int main(void)
{
	json_error_t je;
	Suite *s = suite_create("tokenizer-variants");
	TCase *tc = tcase_create("variants");
	int rc;
	fx = json_load_file(fi_test_fixture("tok/variants.json"), JSON_ALLOW_NUL, &je);
	if (!fx) {
		fprintf(stderr, "variants.json: %s\n", je.text);
		return 1;
	}
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_variant, 0, (int)json_array_size(json_object_get(fx, "variants")));
	suite_add_tcase(s, tc);
	rc = fi_test_run(s);
	json_decref(fx);
	return rc;
}
