/* Chat templates against transformers: every case in tests/fixtures/chat/NAME.json (written by
 * tools/chat_ref.py) must render byte for byte as apply_chat_template did, or fail where it
 * failed (with the same message for raise_exception). Corpus templates are read from
 * ../shared/corpus; synthetic templates are in the fixture itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "text/chat.h"
#include "util.h"

static json_t *load_fixture(const char *name)
{
	json_error_t e;
	json_t *j = json_load_file(fi_test_fixture(name), 0, &e);
	ck_assert_msg(j != NULL, "fixture %s: %s", name, e.text);
	return j;
}

static void show_diff(const char *want, const char *got)
{
	size_t i = 0;
	while (want[i] && want[i] == got[i])
		i++;
	size_t from = i > 40 ? i - 40 : 0;
	printf("    first difference at byte %zu\n    want: %.80s\n    got:  %.80s\n", i, want + from,
	       got + from);
}

/* Renders one case; returns 1 when it matches the fixture. */
static int run_case(struct fi_chat *c, json_t *req, json_t *cs, long long now, const char *tpl)
{
	json_t *msgs = req, *extra = NULL;
	struct fi_chat_opts o = { .add_generation_prompt = json_is_true(json_object_get(cs, "add_generation_prompt")),
				  .now = now };
	if (json_is_object(req)) {
		const char *k;
		json_t *x;
		msgs = json_object_get(req, "messages");
		extra = json_object();
		json_object_foreach(req, k, x) {
			if (!strcmp(k, "tools"))
				o.tools = x;
			else if (!strcmp(k, "continue_final_message"))
				o.continue_final_message = json_is_true(x);
			else if (strcmp(k, "messages"))
				json_object_set(extra, k, x);
		}
		o.extra = extra;
	}
	char *out = NULL;
	size_t len = 0;
	fi_err e = fi_chat_render_json(c, msgs, &o, &out, &len);
	json_decref(extra);
	const char *want = json_string_value(json_object_get(cs, "expected"));
	const char *raised = json_string_value(json_object_get(cs, "raised"));
	const char *name = json_string_value(json_object_get(cs, "name"));
	int ok;
	if (want) {
		ok = !e && len == strlen(want) && !memcmp(out, want, len);
		if (!ok) {
			printf("  FAIL %s (agp=%d)%s%s\n", name, o.add_generation_prompt, tpl ? ": " : "",
			       tpl ? tpl : "");
			if (e)
				printf("    error: %s\n", fi_errmsg());
			else
				show_diff(want, out);
		}
	} else {
		ok = e != FI_OK && (!raised || strstr(fi_errmsg(), raised));
		if (!ok)
			printf("  FAIL %s (agp=%d): expected error '%s', got %s\n", name,
			       o.add_generation_prompt,
			       json_string_value(json_object_get(cs, "error")), e ? fi_errmsg() : "success");
	}
	free(out);
	return ok;
}

static const char *const corpus_templates[] = { "llama-3", "tinyllama-1.1b-chat", "phi-2",
						"phi-4-mini", "gemma", "smollm3", "deepseek-r1-distill",
						"gpt-oss", "llama-2", "gpt2" };

START_TEST(corpus_templates_match_transformers)
{
	char fx[128], dir[4096];
	int total = 0, passed = 0;
	for (size_t t = 0; t < sizeof corpus_templates / sizeof *corpus_templates; t++) {
		const char *nm = corpus_templates[t];
		snprintf(fx, sizeof fx, "chat/%s.json", nm);
		json_t *j = load_fixture(fx);
		snprintf(fx, sizeof fx, "corpus/%s/tokenizer_config.json",
			 json_string_value(json_object_get(j, "dir")));
		const char *cfg = fi_test_corpus(fx, nm);
		if (!cfg) {
			json_decref(j);
			continue;
		}
		snprintf(dir, sizeof dir, "%s", cfg);
		*strrchr(dir, '/') = 0;
		struct fi_chat *c = NULL;
		fi_err e = fi_chat_load_dir(&c, dir, NULL);
		if (!json_is_true(json_object_get(j, "has_template"))) {
			ck_assert_int_eq(e, FI_ENOTFOUND);
			printf("chat: %s: no chat template (load fails with: %s)\n", nm, fi_errmsg());
			json_decref(j);
			continue;
		}
		ck_assert_msg(e == FI_OK, "%s: %s", nm, fi_errmsg());
		json_t *cases = json_object_get(j, "cases"), *cs;
		long long now = json_integer_value(json_object_get(j, "now"));
		size_t i;
		int n = 0, ok = 0;
		json_array_foreach(cases, i, cs) {
			n++;
			ok += run_case(c, json_object_get(cs, "request"), cs, now, NULL);
		}
		printf("chat: %s: %d/%d conversations match transformers\n", nm, ok, n);
		total += n;
		passed += ok;
		fi_chat_free(c);
		json_decref(j);
	}
	printf("chat: corpus total %d/%d\n", passed, total);
	ck_assert_int_eq(passed, total);
}
END_TEST

START_TEST(synthetic_templates_match_transformers)
{
	json_t *j = load_fixture("chat/synthetic.json"), *cs;
	json_t *req = json_object_get(j, "request");
	char *cfg = json_dumps(json_object_get(j, "specials"), 0);
	size_t i;
	int n = 0, ok = 0;
	json_array_foreach(json_object_get(j, "cases"), i, cs) {
		const char *tpl = json_string_value(json_object_get(cs, "template"));
		struct fi_chat *c = NULL;
		n++;
		if (fi_chat_load(&c, cfg, tpl, NULL)) {
			int want_err = json_object_get(cs, "error") != NULL;
			if (!want_err)
				printf("  FAIL %s: load: %s\n", json_string_value(json_object_get(cs, "name")),
				       fi_errmsg());
			ok += want_err;
			continue;
		}
		ok += run_case(c, req, cs, 1768473000, tpl);
		fi_chat_free(c);
	}
	printf("chat: synthetic: %d/%d cases match transformers\n", ok, n);
	free(cfg);
	json_decref(j);
	ck_assert_int_eq(ok, n);
}
END_TEST

START_TEST(text_request_and_accessors)
{
	const char *cfg = "{\"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}, \"eos_token\": \"<E>\","
			  " \"chat_template\": [{\"name\": \"default\", \"template\": \"{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}{{ eos_token }}{% endfor %}{{ enable_x }}{% if tools %}{{ tools|length }}{% endif %}{% if add_generation_prompt %}>{% endif %}\"},"
			  " {\"name\": \"tool_use\", \"template\": \"T\"}]}";
	struct fi_chat *c;
	char *out;
	ck_assert_int_eq(fi_chat_load(&c, cfg, NULL, NULL), FI_OK);
	ck_assert_str_eq(fi_chat_bos(c), "<B>");
	ck_assert_str_eq(fi_chat_eos(c), "<E>");
	ck_assert_int_eq(fi_chat_render(c, "[{\"role\": \"user\", \"content\": \"hi\"}]", 1, &out, NULL), FI_OK);
	ck_assert_str_eq(out, "<B>user:hi<E>>");
	free(out);
	ck_assert_int_eq(fi_chat_render(c, "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"enable_x\": 7,"
				       " \"tools\": [{}], \"add_generation_prompt\": false}", 1, &out, NULL), FI_OK);
	ck_assert_str_eq(out, "<B>user:hi<E>71");
	free(out);
	ck_assert_int_eq(fi_chat_render(c, "{\"no\": 1}", 0, &out, NULL), FI_EFORMAT);
	ck_assert_int_eq(fi_chat_render(c, "[1]", 0, &out, NULL), FI_EINVAL);
	ck_assert_int_eq(fi_chat_render(c, "[]", 0, &out, NULL), FI_EINVAL);
	fi_chat_free(c);
	ck_assert_int_eq(fi_chat_load(&c, cfg, NULL, "tool_use"), FI_OK);
	fi_chat_free(c);
	ck_assert_int_eq(fi_chat_load(&c, cfg, NULL, "nope"), FI_ENOTFOUND);
	ck_assert_int_eq(fi_chat_load(&c, "{}", NULL, NULL), FI_ENOTFOUND);
	ck_assert_int_eq(fi_chat_load(&c, "{", NULL, NULL), FI_EFORMAT);
}
END_TEST

START_TEST(malformed_templates_fail_with_a_line)
{
	static const char *const bad[] = {
		"line one\n{% if x %}\nno end", "{{ (((1 }}", "{% for %}{% endfor %}", "{{ 'unterminated }}",
		"{% set = 1 %}", "{% macro m( %}{% endmacro %}", "{{ a.|x }}", "{% raw %}never",
		"{% break %}", "{{ 1 +* 2 }}", "{% if 1 %}{% else %}{% else %}{% endif %}",
		"{{ 99999999999999999999999 }}", "{{ '\\x4' }}", "\n\n{% include 'x' %}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct fi_chat *c = NULL;
		fi_err e = fi_chat_load(&c, NULL, bad[i], NULL);
		ck_assert_msg(e != FI_OK, "template %zu parsed: %s", i, bad[i]);
		ck_assert_msg(strstr(fi_errmsg(), "chat template line "), "no line in '%s'", fi_errmsg());
	}
	struct fi_chat *c;
	ck_assert_int_eq(fi_chat_load(&c, NULL, "\n\n{% include 'x' %}", NULL), FI_EUNSUPPORTED);
	ck_assert_msg(strstr(fi_errmsg(), "line 3"), "%s", fi_errmsg());
}
END_TEST

START_TEST(limits_stop_runaway_templates)
{
	static const char *const bad[] = {
		"{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
		"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
		"{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
		"{{ range(1000000)|list }}", "{{ 'x' * 100000000000 }}",
	};
	struct fi_chat_limits lim = { .max_output = 1 << 20, .max_memory = 64 << 20, .max_steps = 1000000 };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct fi_chat *c = NULL;
		char *out;
		ck_assert_int_eq(fi_chat_load(&c, NULL, bad[i], NULL), FI_OK);
		fi_chat_set_limits(c, &lim);
		fi_err e = fi_chat_render(c, "[{\"role\": \"user\", \"content\": \"x\"}]", 0, &out, NULL);
		ck_assert_msg(e == FI_ERANGE, "template %zu: %s", i, e ? fi_errmsg() : "ran");
		fi_chat_free(c);
	}
	/* deep nesting in the source is refused while parsing */
	char *deep = malloc(20001);
	for (int i = 0; i < 10000; i++) {
		deep[i] = '(';
		deep[19999 - i] = ')';
	}
	deep[20000] = 0;
	char *tpl = malloc(20010);
	snprintf(tpl, 20010, "{{ %s }}", deep);
	struct fi_chat *c;
	ck_assert_int_ne(fi_chat_load(&c, NULL, tpl, NULL), FI_OK);
	free(deep);
	free(tpl);
}
END_TEST

START_TEST(large_inputs_stay_linear)
{
	/* a message with 50,000 keys: building it and looking keys up must not be quadratic */
	enum { N = 50000 };
	json_t *m = json_object(), *msgs = json_array();
	char k[32], *out;
	for (int i = 0; i < N; i++) {
		snprintf(k, sizeof k, "k%d", i);
		json_object_set_new(m, k, json_integer(i));
	}
	json_array_append_new(msgs, m);
	struct fi_chat *c;
	ck_assert_int_eq(fi_chat_load(&c, NULL,
		"{% set ns = namespace(n=0) %}{% for k in messages[0] %}{% set ns.n = ns.n + messages[0][k] %}{% endfor %}{{ ns.n }} {{ messages[0].k49999 }}",
		NULL), FI_OK);
	double t0 = (double)clock() / CLOCKS_PER_SEC;
	ck_assert_int_eq(fi_chat_render_json(c, msgs, NULL, &out, NULL), FI_OK);
	ck_assert_str_eq(out, "1249975000 49999");
	printf("chat: 50,000-key message rendered in %.2f s\n", (double)clock() / CLOCKS_PER_SEC - t0);
	free(out);
	fi_chat_free(c);
	json_decref(msgs);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chat");
	TCase *tc = tcase_create("chat");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, corpus_templates_match_transformers);
	tcase_add_test(tc, synthetic_templates_match_transformers);
	tcase_add_test(tc, text_request_and_accessors);
	tcase_add_test(tc, malformed_templates_fail_with_a_line);
	tcase_add_test(tc, limits_stop_runaway_templates);
	tcase_add_test(tc, large_inputs_stay_linear);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
