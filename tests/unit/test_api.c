/* The public API (include/fi/, libfi(3)) on the embedded model: opening, text, chat,
 * frames and streams, the scheduler. This file includes the public headers and the
 * internal ones they re-declare, so a public prototype that drifts from its implementation
 * does not compile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fi/fi.h"

#include "base/err.h"
#include "base/settings.h"
#include "frame/frame.h"
#include "frame/stream.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "util.h"

static char home[256];
static struct fi_llm *llm;

/* FI_HOME in a scratch directory: the embedded model converted on the fly goes there. */
static void setup(void)
{
	struct fi_llm_opts o;
	snprintf(home, sizeof home, "%s/fi-api-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(home));
	setenv("FI_HOME", home, 1);
	fi_settings_reload();
	fi_llm_opts_default(&o);
	o.backend = "cpu";
	o.threads = 2;
	ck_assert_msg(!fi_llm_open("models/tiny", &o, &llm), "%s", fi_errmsg());
}

static void teardown(void)
{
	char cmd[512];
	fi_llm_close(llm);
	llm = NULL;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
	ck_assert_int_eq(system(cmd), 0);
	unsetenv("FI_HOME");
	fi_settings_reload();
}

START_TEST(test_version_and_model)
{
	char want[32];
	struct fi_llm *m;
	snprintf(want, sizeof want, "%d.%d.%d", FI_VERSION_MAJOR, FI_VERSION_MINOR, FI_VERSION_PATCH);
	ck_assert_str_eq(fi_version(), want);
	ck_assert_int_eq(fi_llm_vocab(llm), 4096);
	ck_assert_int_eq(fi_llm_context(llm), 1024);
	ck_assert_str_eq(fi_llm_device(llm) + strlen(fi_llm_device(llm)) - 11, "(2 threads)");
	ck_assert_uint_eq(strlen(fi_llm_fingerprint(llm)), 64);
	ck_assert_int_eq(fi_llm_open("no-such-model", NULL, &m), FI_ENOTFOUND);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "model 'no-such-model' not found"));
	ck_assert_int_eq(fi_llm_open("", NULL, &m), FI_EINVAL);
	ck_assert_str_eq(fi_strerror(FI_ENOTFOUND), "not found");
	fi_llm_close(NULL);
}
END_TEST

START_TEST(test_text)
{
	const char hello[] = "Hello world, it's fi";
	const struct fi_tok *t;
	const struct fi_chat *c;
	struct fi_tok_stream *st;
	uint32_t *ids, *again;
	size_t n, n2, len, pl, sl = 0;
	char *text, *r, streamed[256];
	const char *p;
	ck_assert_int_eq(fi_llm_tokenizer(llm, &t), FI_OK);
	ck_assert_uint_eq(fi_tok_vocab_size(t), 4096);
	ck_assert_int_eq(fi_tokenize(t, hello, strlen(hello), FI_TEXT_ADD_SPECIAL, &ids, &n), FI_OK);
	ck_assert_uint_gt(n, 3);
	ck_assert_uint_eq(ids[0], 0); /* the embedded model's BOS */
	/* the same as the tokenizer's own encoding */
	ck_assert_int_eq(fi_tokenize(t, hello, strlen(hello), 0, &again, &n2), FI_OK);
	ck_assert_uint_eq(n2, n - 1);
	ck_assert_mem_eq(again, ids + 1, n2 * sizeof *ids);
	free(again);
	ck_assert_int_eq(fi_detokenize(t, ids, n, FI_TEXT_SKIP_SPECIAL, &text, &len), FI_OK);
	ck_assert_str_eq(text, hello);
	ck_assert_uint_eq(len, strlen(hello));
	free(text);
	/* streamed pieces concatenate to the whole */
	ck_assert_int_eq(fi_tok_stream_new(t, FI_TEXT_SKIP_SPECIAL, &st), FI_OK);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(fi_tok_stream_step(st, ids[i], &p, &pl), FI_OK);
		memcpy(streamed + sl, p, pl);
		sl += pl;
	}
	ck_assert_int_eq(fi_tok_stream_flush(st, &p, &pl), FI_OK);
	memcpy(streamed + sl, p, pl);
	sl += pl;
	ck_assert_uint_eq(sl, strlen(hello));
	ck_assert_mem_eq(streamed, hello, sl);
	fi_tok_stream_free(st);
	free(ids);
	/* invalid UTF-8: refused, or replaced when asked */
	ck_assert_int_eq(fi_tokenize(t, "a\xff", 2, 0, &ids, &n), FI_EINVAL);
	ck_assert_ptr_null(ids);
	ck_assert_int_eq(fi_tokenize(t, "a\xff", 2, FI_TEXT_REPLACE_INVALID, &ids, &n), FI_OK);
	free(ids);
	/* the chat template of the image */
	ck_assert_int_eq(fi_llm_chat(llm, &c), FI_OK);
	ck_assert_int_eq(fi_chat_render(c, "[{\"role\":\"user\",\"content\":\"hi\"}]", 1, &r, &len),
			 FI_OK);
	ck_assert_str_eq(r, "<|user|>\nhi<|end|>\n<|assistant|>\n");
	free(r);
	ck_assert_int_eq(fi_chat_render(c, "[]", 1, &r, &len), FI_EINVAL);
}
END_TEST

START_TEST(test_frames_and_streams)
{
	const uint32_t toks[] = {0, 794, 1203};
	struct fi_frame *f, *g;
	struct fi_stream *s;
	char path[300];
	const uint32_t *pt;
	const char *text, *msg;
	size_t n, len;
	uint32_t tok;
	fi_err code;
	ck_assert_int_eq(fi_frame_request("r1", toks, 3, "the text", &f), FI_OK);
	ck_assert_str_eq(fi_frame_kind(f), "request");
	ck_assert_str_eq(fi_frame_id(f), "r1");
	ck_assert_int_eq(fi_frame_set(f, "temperature", 0), FI_OK);
	ck_assert_int_eq(fi_frame_set(f, "max_tokens", 12), FI_OK);
	ck_assert_int_eq(fi_frame_set(f, "seed", 7), FI_OK);
	/* refused as a consumer refuses it, and the frame keeps its old value */
	ck_assert_int_eq(fi_frame_set(f, "temperature", -1), FI_ERANGE);
	ck_assert_str_eq(fi_errmsg(), "frame: key 'temperature': -1 is out of range [0, 10000]");
	ck_assert_int_eq(fi_frame_set(f, "top_p", 2), FI_ERANGE);
	ck_assert_int_eq(fi_frame_set(f, "max_tokens", -1), FI_ERANGE);
	ck_assert_int_eq(fi_frame_set(f, "colour", 1), FI_EINVAL);
	ck_assert_int_eq(fi_frame_token(f, &tok, NULL, NULL, NULL), FI_EINVAL);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "is a request frame, not a token frame"));
	ck_assert_int_eq(fi_frame_request("r2", NULL, 0, NULL, &g), FI_EINVAL);
	/* through a file and back */
	snprintf(path, sizeof path, "%s/frames.msgpack", home);
	ck_assert_int_eq(fi_stream_writer(path, &s), FI_OK);
	ck_assert_int_eq(fi_stream_write(s, f), FI_OK);
	fi_frame_destroy(f);
	ck_assert_int_eq(fi_frame_cancel("r1", &f), FI_OK);
	ck_assert_int_eq(fi_stream_write(s, f), FI_OK);
	fi_frame_destroy(f);
	ck_assert_int_eq(fi_stream_close(s), FI_OK);
	ck_assert_int_eq(fi_stream_reader(path, &s), FI_OK);
	ck_assert_int_eq(fi_stream_next(s, &f), FI_OK);
	ck_assert_str_eq(fi_frame_kind(f), "request");
	ck_assert_int_eq(fi_frame_prompt(f, &pt, &n, &text, &len), FI_OK);
	ck_assert_uint_eq(n, 3);
	ck_assert_mem_eq(pt, toks, sizeof toks);
	ck_assert_str_eq(text, "the text");
	ck_assert_uint_eq(len, 8);
	ck_assert_uint_eq(f->req.max_tokens, 12);
	ck_assert_float_eq(f->req.temperature, 0);
	ck_assert_uint_eq(f->req.seed, 7);
	fi_frame_destroy(f);
	ck_assert_int_eq(fi_stream_next(s, &f), FI_OK);
	ck_assert_str_eq(fi_frame_kind(f), "cancel");
	ck_assert_str_eq(fi_frame_id(f), "r1");
	fi_frame_destroy(f);
	ck_assert_int_eq(fi_stream_next(s, &f), FI_OK);
	ck_assert_ptr_null(f); /* the end */
	ck_assert_int_eq(fi_stream_close(s), FI_OK);
	ck_assert_int_eq(fi_stream_reader("no/such/file", &s), FI_ENOTFOUND);
	/* an error frame */
	f = calloc(1, sizeof *f);
	fi_frame_init(f, FI_FRAME_ERROR);
	f->id = strdup("x");
	f->err.code = FI_ERANGE;
	f->err.message = strdup("too long");
	ck_assert_int_eq(fi_frame_failure(f, &code, &msg), FI_OK);
	ck_assert_int_eq(code, FI_ERANGE);
	ck_assert_str_eq(msg, "too long");
	fi_frame_destroy(f);
}
END_TEST

/* Runs the scheduler until it holds nothing; the text and tokens of request id. */
static void run(struct fi_scheduler *s, const char *id, char *text, uint32_t *toks, int *nt,
		const char **finish)
{
	struct fi_gen_event ev;
	size_t tl = 0;
	*nt = 0;
	while (fi_scheduler_pending(s)) {
		ck_assert_msg(!fi_scheduler_step(s), "%s", fi_errmsg());
		while (fi_scheduler_event(s, &ev)) {
			if (strcmp(ev.id, id))
				continue;
			if (!strcmp(ev.kind, "token")) {
				ck_assert_uint_eq(ev.index, (uint32_t)*nt);
				toks[(*nt)++] = ev.token;
			} else {
				ck_assert_str_eq(ev.kind, "done");
				*finish = ev.finish;
				ck_assert_uint_eq(ev.gen_tokens, (uint32_t)*nt);
			}
			memcpy(text + tl, ev.text, ev.text_len);
			tl += ev.text_len;
		}
	}
	text[tl] = 0;
}

START_TEST(test_scheduler)
{
	struct fi_scheduler *s;
	struct fi_scheduler_opts o;
	struct fi_gen_request r;
	struct fi_gen_event ev;
	struct fi_frame *f, *g;
	const struct fi_tok *t;
	char a[4096], b[4096];
	uint32_t ta[64], tb[64], *ids;
	size_t n;
	int na, nb;
	const char *fin_a = NULL, *fin_b = NULL, *finish, *text;
	uint32_t gen;
	fi_scheduler_opts_default(&o);
	o.max_tokens = 12;
	ck_assert_int_eq(fi_scheduler_new(llm, &o, &s), FI_OK);
	fi_gen_request_init(&r);
	ck_assert_float_eq(r.temperature, 1);
	ck_assert_float_eq(r.top_p, 1);
	r.id = "a";
	r.prompt = "def main():";
	r.temperature = 0;
	ck_assert_int_eq(fi_scheduler_add(s, &r), FI_OK);
	ck_assert_int_eq(fi_scheduler_add(s, &r), FI_EEXIST);
	ck_assert_int_eq(fi_scheduler_pending(s), 1);
	run(s, "a", a, ta, &na, &fin_a);
	ck_assert_int_eq(na, 12);
	ck_assert_str_eq(fin_a, "length");
	/* the same prompt as token ids in a request frame, next to another request: the same
	 * tokens (a request never sees the batch around it) */
	ck_assert_int_eq(fi_llm_tokenizer(llm, &t), FI_OK);
	ck_assert_int_eq(fi_tokenize(t, "def main():", 11, FI_TEXT_ADD_SPECIAL, &ids, &n), FI_OK);
	ck_assert_int_eq(fi_frame_request("b", ids, n, NULL, &f), FI_OK);
	ck_assert_int_eq(fi_frame_set(f, "temperature", 0), FI_OK);
	free(ids);
	ck_assert_int_eq(fi_scheduler_add_frame(s, f), FI_OK);
	fi_frame_destroy(f);
	r.id = "c";
	r.prompt = "import os";
	r.temperature = 0.8f;
	r.seed = 3;
	r.max_tokens = 5;
	ck_assert_int_eq(fi_scheduler_add(s, &r), FI_OK);
	run(s, "b", b, tb, &nb, &fin_b);
	ck_assert_int_eq(nb, na);
	ck_assert_mem_eq(tb, ta, sizeof *ta * (size_t)na);
	ck_assert_str_eq(a, b);
	ck_assert_uint_gt(strlen(a), 0);
	/* a stop string ends it, cut before the stop */
	r.id = "d";
	r.prompt = "def main():";
	r.temperature = 0;
	r.max_tokens = 0;
	{
		char stop[8];
		const char *stops[1] = {stop};
		size_t k = strlen(a) > 3 ? 3 : 1;
		memcpy(stop, a + k, 2);
		stop[2] = 0;
		r.stop = stops;
		r.n_stop = 1;
		ck_assert_int_eq(fi_scheduler_add(s, &r), FI_OK);
		run(s, "d", b, tb, &nb, &fin_b);
		ck_assert_str_eq(fin_b, "stop");
		ck_assert_ptr_null(strstr(b, stop));
		ck_assert_int_eq(strncmp(a, b, strlen(b)), 0);
	}
	/* refusals name the request */
	r.id = "e";
	r.stop = NULL;
	r.n_stop = 0;
	r.prompt = NULL;
	ck_assert_int_ne(fi_scheduler_add(s, &r), FI_OK);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "'e'"));
	/* an event as its frame; cancel */
	r.id = "f";
	r.prompt = "x";
	ck_assert_int_eq(fi_scheduler_add(s, &r), FI_OK);
	ck_assert_int_eq(fi_scheduler_cancel(s, "f"), FI_OK);
	ck_assert_int_eq(fi_scheduler_event(s, &ev), 1);
	ck_assert_str_eq(ev.kind, "done");
	ck_assert_str_eq(ev.finish, "cancel");
	ck_assert_int_eq(fi_gen_event_frame(&ev, &g), FI_OK);
	ck_assert_str_eq(fi_frame_kind(g), "done");
	ck_assert_str_eq(fi_frame_id(g), "f");
	ck_assert_int_eq(fi_frame_done(g, &finish, NULL, &gen, &text, NULL), FI_OK);
	ck_assert_str_eq(finish, "cancel");
	fi_frame_destroy(g);
	ck_assert_int_eq(fi_scheduler_event(s, &ev), 0);
	ck_assert_int_eq(fi_scheduler_pending(s), 0);
	fi_scheduler_free(s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api");
	TCase *tc = tcase_create("api");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_version_and_model);
	tcase_add_test(tc, test_text);
	tcase_add_test(tc, test_frames_and_streams);
	tcase_add_test(tc, test_scheduler);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
