/* Results of a frame stream (fi-tokenize -d): the three orders, the bounded window of
 * --ordered, error frames, requests that never finished, ids decoded with the tokenizer, the
 * JSON of a result. Tokenizer fingerprints (same vocabulary, same fingerprint, whatever the
 * file; another vocabulary, another one) and what request stages check and echo. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "frame/frame_json.h"
#include "serve/req_frame.h"
#include "serve/results.h"
#include "text/tok_ident.h"
#include "text/tokenizer.h"
#include "util.h"

static void tok_frame(struct fi_results *R, const char *id, const char *text, uint32_t token)
{
	struct fi_frame f;
	fi_frame_init(&f, FI_FRAME_TOKEN);
	f.id = (char *)id;
	f.tok.token = token;
	if (text) {
		f.tok.text = (char *)text;
		f.tok.text_len = strlen(text);
	}
	ck_assert_int_eq(fi_results_add(R, &f), FI_OK);
}

static void done_frame(struct fi_results *R, const char *id, uint64_t seq, const char *prompt)
{
	struct fi_frame f;
	fi_frame_init(&f, FI_FRAME_DONE);
	f.id = (char *)id;
	f.done.finish = FI_FINISH_LENGTH;
	f.done.gen_tokens = 2;
	f.done.ttft_ms = 1.5;
	if (seq) {
		f.seq = seq;
		f.has_seq = 1;
	}
	if (prompt) {
		f.prompt = (char *)prompt;
		f.prompt_len = strlen(prompt);
	}
	ck_assert_int_eq(fi_results_add(R, &f), FI_OK);
}

/* The ids of the results ready now, separated by spaces, appended to out. */
static void drain(struct fi_results *R, char *out, size_t n)
{
	struct fi_result r;
	while (fi_results_next(R, &r)) {
		size_t l = strlen(out);
		snprintf(out + l, n - l, "%s%s", l ? " " : "", r.id);
	}
}

START_TEST(test_orders)
{
	static const enum fi_results_order orders[3] = { FI_RESULTS_FIRST, FI_RESULTS_FINISH, FI_RESULTS_SEQ };
	static const char *const want[3] = { "a b c", "b c a", "c a b" };
	for (int k = 0; k < 3; k++) {
		struct fi_results *R;
		char got[64] = "";
		ck_assert_int_eq(fi_results_new(NULL, 0, orders[k], 16, &R), FI_OK);
		tok_frame(R, "a", "x", 1);
		tok_frame(R, "b", "y", 1);
		tok_frame(R, "c", "z", 1);
		done_frame(R, "b", 3, NULL);
		drain(R, got, sizeof got);
		done_frame(R, "c", 1, NULL);
		drain(R, got, sizeof got);
		done_frame(R, "a", 2, NULL);
		drain(R, got, sizeof got);
		fi_results_end(R);
		drain(R, got, sizeof got);
		ck_assert_msg(!strcmp(got, want[k]), "order %d: %s", k, got);
		ck_assert_uint_eq(fi_results_gaps(R, NULL), 0);
		fi_results_free(R);
	}
}
END_TEST

/* FIRST: the head streams; what it streamed is not given again. */
START_TEST(test_stream_head)
{
	struct fi_results *R;
	struct fi_result r;
	const char *p;
	ck_assert_int_eq(fi_results_new(NULL, 0, FI_RESULTS_FIRST, 1, &R), FI_OK);
	tok_frame(R, "a", "Hel", 1);
	tok_frame(R, "b", "B", 1);
	ck_assert_uint_eq(fi_results_stream(R, &p), 3);
	ck_assert(!memcmp(p, "Hel", 3));
	ck_assert_uint_eq(fi_results_stream(R, &p), 0);
	tok_frame(R, "a", "lo", 1);
	done_frame(R, "b", 0, "pb");
	ck_assert(!fi_results_next(R, &r)); /* b waits for a */
	{
		struct fi_frame f;
		fi_frame_init(&f, FI_FRAME_DONE);
		f.id = "a";
		f.done.text = "!";
		f.done.text_len = 1;
		ck_assert_int_eq(fi_results_add(R, &f), FI_OK);
	}
	ck_assert(fi_results_next(R, &r));
	ck_assert_str_eq(r.id, "a");
	ck_assert_uint_eq(r.text_len, 6);
	ck_assert(!memcmp(r.text, "Hello!", 6));
	ck_assert_uint_eq(r.streamed, 3);
	ck_assert(fi_results_next(R, &r));
	ck_assert_str_eq(r.id, "b");
	ck_assert_str_eq(r.prompt, "pb");
	ck_assert(!fi_results_next(R, &r));
	fi_results_free(R);
}
END_TEST

/* SEQ: a missing number holds the others until the window is full, then is given up. */
START_TEST(test_window)
{
	struct fi_results *R;
	char got[256] = "";
	uint64_t first = 0;
	char id[8];
	ck_assert_int_eq(fi_results_new(NULL, 0, FI_RESULTS_SEQ, 3, &R), FI_OK);
	for (int i = 2; i <= 4; i++) { /* 1 never comes */
		snprintf(id, sizeof id, "r%d", i);
		done_frame(R, id, (uint64_t)i, NULL);
		drain(R, got, sizeof got);
		if (i < 4)
			ck_assert_str_eq(got, "");
	}
	ck_assert_str_eq(got, "r2 r3 r4");
	ck_assert_uint_eq(fi_results_gaps(R, &first), 1);
	ck_assert_uint_eq(first, 1);
	done_frame(R, "r6", 6, NULL);
	done_frame(R, "late", 1, NULL); /* below the next number: at once */
	done_frame(R, "none", 0, NULL); /* no seq: at once */
	drain(R, got, sizeof got);
	ck_assert_str_eq(got, "r2 r3 r4 late none");
	fi_results_end(R); /* 5 never came either */
	drain(R, got, sizeof got);
	ck_assert_str_eq(got, "r2 r3 r4 late none r6");
	ck_assert_uint_eq(fi_results_gaps(R, NULL), 2);
	fi_results_free(R);
}
END_TEST

START_TEST(test_errors_and_end)
{
	struct fi_results *R;
	struct fi_result r;
	struct fi_frame f;
	json_t *j;
	char *s;
	ck_assert_int_eq(fi_results_new(NULL, 0, FI_RESULTS_FINISH, 1, &R), FI_OK);
	tok_frame(R, "a", "partial", 1);
	fi_frame_init(&f, FI_FRAME_ERROR);
	f.id = "a";
	f.seq = 7;
	f.has_seq = 1;
	f.prompt = "Once \xff";
	f.prompt_len = 6;
	f.err.code = FI_EMISMATCH;
	f.err.message = "another tokenizer";
	ck_assert_int_eq(fi_results_add(R, &f), FI_OK);
	done_frame(R, "a", 7, NULL); /* the done after the error: ignored */
	tok_frame(R, "b", "never", 1);
	ck_assert(fi_results_next(R, &r));
	ck_assert(r.failed && r.finished && r.finish == FI_FINISH_ERROR && r.code == FI_EMISMATCH);
	ck_assert_str_eq(r.message, "another tokenizer");
	ck_assert_uint_eq(r.gen_tokens, 1);
	ck_assert_int_eq(fi_result_to_json(&r, &j), FI_OK);
	s = fi_json_dumps(j);
	ck_assert_str_eq(s, "{\"id\":\"a\",\"seq\":7,\"prompt\":\"Once \xef\xbf\xbd\",\"completion\":\"partial\","
			    "\"finish\":\"error\",\"counts\":{\"prompt_tokens\":0,\"gen_tokens\":1,"
			    "\"cached_tokens\":0},\"timings\":{},\"error\":{\"code\":\"mismatch\","
			    "\"message\":\"another tokenizer\"}}");
	free(s);
	json_decref(j);
	ck_assert(!fi_results_next(R, &r));
	fi_results_end(R);
	ck_assert(fi_results_next(R, &r));
	ck_assert_str_eq(r.id, "b");
	ck_assert(!r.finished && !r.failed);
	ck_assert_int_eq(fi_result_to_json(&r, &j), FI_OK);
	s = fi_json_dumps(j);
	ck_assert_ptr_nonnull(strstr(s, "\"finish\":null"));
	free(s);
	json_decref(j);
	ck_assert(!fi_results_next(R, &r));
	fi_results_free(R);
}
END_TEST

static struct fi_tok *load_tiny(void)
{
	struct fi_tok *t;
	ck_assert_msg(fi_tok_load_path("models/tiny/tokenizer.json", &t) == FI_OK, "%s", fi_errmsg());
	return t;
}

/* Ids without text are decoded with the tokenizer, a request's pieces kept as they are. */
START_TEST(test_decode_ids)
{
	struct fi_tok *t = load_tiny();
	struct fi_tok_ids ids = { 0 };
	struct fi_results *R;
	struct fi_result r;
	ck_assert_int_eq(fi_tok_encode(t, "Once upon a time", 16, 0, &ids), FI_OK);
	ck_assert_int_eq(fi_results_new(t, 0, FI_RESULTS_FINISH, 1, &R), FI_OK);
	for (size_t i = 0; i < ids.n; i++)
		tok_frame(R, "x", NULL, ids.v[i]);
	done_frame(R, "x", 0, NULL);
	ck_assert(fi_results_next(R, &r));
	ck_assert_uint_eq(r.text_len, 16);
	ck_assert(!memcmp(r.text, "Once upon a time", 16));
	fi_results_free(R);
	fi_tok_ids_free(&ids);
	fi_tok_free(t);
}
END_TEST

START_TEST(test_tok_ident)
{
	struct fi_tok *a = load_tiny(), *b, *c;
	struct fi_tok_ident ia, ib, ic;
	size_t len;
	char *json = fi_test_slurp("models/tiny/tokenizer.json", &len), *re, name[64];
	json_t *root;
	json_error_t je;
	void *bin;
	size_t binlen;

	ck_assert_int_eq(fi_tok_ident(a, "models/tiny/tokenizer.json", &ia), FI_OK);
	ck_assert_str_eq(ia.name, "tiny");
	ck_assert_uint_eq(strlen(ia.hex), 64);
	/* The same tokenizer written otherwise (indented, and in its binary form) agrees. */
	ck_assert_ptr_nonnull(root = json_loads(json, 0, &je));
	ck_assert_ptr_nonnull(re = json_dumps(root, JSON_INDENT(3)));
	ck_assert_int_eq(fi_tok_load_json(re, strlen(re), &b), FI_OK);
	ck_assert_int_eq(fi_tok_ident(b, NULL, &ib), FI_OK);
	ck_assert(!memcmp(ia.sha256, ib.sha256, 32));
	ck_assert_str_eq(ib.name, "tokenizer");
	fi_tok_free(b);
	free(re);
	ck_assert_int_eq(fi_tok_save_binary(a, &bin, &binlen), FI_OK);
	ck_assert_int_eq(fi_tok_load_binary(bin, binlen, &b), FI_OK);
	ck_assert_int_eq(fi_tok_ident(b, "llama3", &ib), FI_OK);
	ck_assert(!memcmp(ia.sha256, ib.sha256, 32));
	fi_tok_free(b);
	free(bin);
	/* Two ids swapped: the same strings, other meanings of the ids: another fingerprint. */
	{
		json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
		json_t *x = json_object_get(vocab, "the"), *y = json_object_get(vocab, "and");
		json_int_t t;
		ck_assert(x && y);
		t = json_integer_value(x);
		json_integer_set(x, json_integer_value(y));
		json_integer_set(y, t);
		ck_assert_ptr_nonnull(re = json_dumps(root, 0));
		ck_assert_msg(fi_tok_load_json(re, strlen(re), &c) == FI_OK, "%s", fi_errmsg());
		ck_assert_int_eq(fi_tok_ident(c, "x", &ic), FI_OK);
		ck_assert(memcmp(ia.sha256, ic.sha256, 32));
		fi_tok_free(c);
		free(re);
	}
	json_decref(root);
	free(json);
	fi_tok_free(a);
	/* names */
	{
		static const char *const cases[][2] = {
			{ "llama3", "llama3" }, { "/dev/shm/fi/models/llama3.fim", "llama3" },
			{ "~/models/Llama-3.1-8B/", "Llama-3.1-8B" },
			{ "~/models/Llama-3.1-8B/tokenizer.json", "Llama-3.1-8B" },
			{ "tokenizer.json", "tokenizer.json" }, { "/", "tokenizer" }, { "", "tokenizer" },
		};
		for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
			fi_tok_ident_name(cases[i][0], name, sizeof name);
			ck_assert_msg(!strcmp(name, cases[i][1]), "%s: %s", cases[i][0], name);
		}
	}
}
END_TEST

START_TEST(test_req_checks)
{
	struct fi_tok_ident own;
	struct fi_sample_params sp;
	struct fi_frame f, e;
	struct fi_req_echo *echo;
	char msg[512];

	memset(&own, 0, sizeof own);
	memset(own.sha256, 1, 32);
	strcpy(own.hex, "0101010101010101010101010101010101010101010101010101010101010101");
	strcpy(own.name, "tiny");
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = "7";
	f.req.tokens = (uint32_t[]){ 1, 2 };
	f.req.ntokens = 2;
	/* no fingerprint, or the same one: accepted */
	ck_assert_int_eq(fi_req_check_tokenizer(&f, &own), FI_OK);
	f.req.set |= FI_REQ_TOKENIZER;
	memset(f.req.tok_sha256, 1, 32);
	ck_assert_int_eq(fi_req_check_tokenizer(&f, &own), FI_OK);
	ck_assert_int_eq(fi_req_check_tokenizer(&f, NULL), FI_OK); /* a model without one */
	f.req.tok_sha256[0] = 0xab;
	f.req.tok_name = "llama3";
	ck_assert_int_eq(fi_req_check_tokenizer(&f, &own), FI_EMISMATCH);
	ck_assert_str_eq(fi_errmsg(), "request '7': its tokens come from the tokenizer of 'llama3' "
				      "(ab0101010101), and the model 'tiny' has another tokenizer "
				      "(010101010101)");

	/* conflicts: only keys both set, to different values */
	fi_sample_defaults(&sp);
	sp.temperature = 0;
	f.req.set = FI_REQ_TEMPERATURE | FI_REQ_TOP_K;
	f.req.temperature = 1;
	f.req.top_k = 40;
	ck_assert_uint_eq(fi_req_sampling_conflicts(&f, &sp, 0), 0);
	ck_assert_uint_eq(fi_req_sampling_conflicts(&f, &sp, FI_REQ_TEMPERATURE | FI_REQ_TOP_P),
			  FI_REQ_TEMPERATURE);
	fi_req_conflict_message(&f, &sp, FI_REQ_TEMPERATURE, msg, sizeof msg);
	ck_assert_ptr_nonnull(strstr(msg, "--temp 0 conflicts with temperature 1 in request '7'"));
	f.req.temperature = 0;
	ck_assert_uint_eq(fi_req_sampling_conflicts(&f, &sp, FI_REQ_TEMPERATURE), 0);

	/* echo: seq and text onto the answers */
	f.seq = 12;
	f.has_seq = 1;
	f.req.text = "hi";
	f.req.text_len = 2;
	ck_assert_int_eq(fi_req_echo_new(&f, &echo), FI_OK);
	fi_frame_init(&e, FI_FRAME_DONE);
	fi_req_echo_apply(echo, &e);
	ck_assert(e.has_seq && e.seq == 12 && e.prompt_len == 2 && !strcmp(e.prompt, "hi"));
	fi_req_echo_free(echo);
	fi_req_error_frame(&f, FI_EINVAL, "bad", &e);
	ck_assert(e.type == FI_FRAME_ERROR && e.seq == 12 && !strcmp(e.prompt, "hi") && !strcmp(e.id, "7"));
	f.has_seq = 0;
	f.req.text = NULL;
	ck_assert_int_eq(fi_req_echo_new(&f, &echo), FI_OK);
	ck_assert_ptr_null(echo);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("results");
	TCase *tc = tcase_create("results");
	tcase_add_test(tc, test_orders);
	tcase_add_test(tc, test_stream_head);
	tcase_add_test(tc, test_window);
	tcase_add_test(tc, test_errors_and_end);
	tcase_add_test(tc, test_decode_ids);
	tcase_add_test(tc, test_tok_ident);
	tcase_add_test(tc, test_req_checks);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
