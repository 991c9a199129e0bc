/* Frames as JSON (fi-frame): the keys seq, prompt and tokenizer on the wire; a stream that
 * does not begin with a map refused whole; frame -> JSON -> frame byte for byte for every
 * type; lossless text that is not UTF-8; the decoder's messages for bad JSON lines; keys
 * outside the schema found; reals printed short and exact; lossy UTF-8 as Python does it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "frame/frame.h"
#include "frame/frame_json.h"
#include "util.h"

static void encode(const struct fi_frame *f, struct fi_buf *b)
{
	b->len = 0;
	ck_assert_msg(fi_frame_encode(f, b) == FI_OK, "%s", fi_errmsg());
}

/* f -> msgpack -> frame -> JSON text -> frame -> msgpack: the same bytes. Returns the JSON. */
static char *json_roundtrip(const struct fi_frame *f)
{
	struct fi_buf a = { 0 }, b = { 0 };
	struct fi_frame g, h;
	json_t *j;
	char *s;
	encode(f, &a);
	ck_assert_int_eq(fi_frame_decode(a.data, a.len, NULL, &g), FI_OK);
	ck_assert_int_eq(fi_frame_to_json(&g, &j), FI_OK);
	ck_assert_ptr_nonnull(s = fi_json_dumps(j));
	json_decref(j);
	ck_assert_msg(fi_frame_from_json(s, strlen(s), NULL, &h, NULL) == FI_OK, "%s: %s", s, fi_errmsg());
	encode(&h, &b);
	ck_assert_msg(a.len == b.len && !memcmp(a.data, b.data, a.len), "%s changed on the way", s);
	fi_frame_free(&g);
	fi_frame_free(&h);
	fi_buf_free(&a);
	fi_buf_free(&b);
	return s;
}

static uint32_t toks[3] = { 1, 70000, 4294967295u };
static uint8_t blocks[2][32];

START_TEST(test_new_keys)
{
	struct fi_frame f, g;
	struct fi_buf b = { 0 };
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = "r";
	f.seq = 42;
	f.has_seq = 1;
	f.req.tokens = toks;
	f.req.ntokens = 3;
	memset(f.req.tok_sha256, 0x5a, 32);
	f.req.tok_name = "llama3";
	f.req.set = FI_REQ_TOKENIZER;
	encode(&f, &b);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &g), FI_OK);
	ck_assert(g.has_seq && g.seq == 42);
	ck_assert_uint_eq(g.req.set, FI_REQ_TOKENIZER);
	ck_assert_uint_eq(g.req.tok_sha256[31], 0x5a);
	ck_assert_str_eq(g.req.tok_name, "llama3");
	fi_frame_free(&g);

	/* done and error frames echo the prompt; a token frame has none */
	fi_frame_init(&f, FI_FRAME_DONE);
	f.id = "r";
	f.seq = UINT64_MAX;
	f.has_seq = 1;
	f.prompt = "Once\0upon";
	f.prompt_len = 9;
	encode(&f, &b);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &g), FI_OK);
	ck_assert(g.has_seq && g.seq == UINT64_MAX);
	ck_assert_uint_eq(g.prompt_len, 9);
	ck_assert(!memcmp(g.prompt, "Once\0upon", 9));
	fi_frame_free(&g);
	fi_frame_init(&f, FI_FRAME_ERROR);
	f.id = "r";
	f.prompt = "p";
	f.prompt_len = 1;
	f.err.code = FI_EMISMATCH;
	f.err.message = "m";
	encode(&f, &b);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &g), FI_OK);
	ck_assert(!g.has_seq);
	ck_assert_str_eq(g.prompt, "p");
	ck_assert_int_eq(g.err.code, FI_EMISMATCH);
	fi_frame_free(&g);

	/* a frame without seq has none after a round trip; a bad seq is refused */
	{
		static const char bad[] = "{\"v\":1,\"type\":\"cancel\",\"id\":\"x\",\"seq\":-1}";
		ck_assert_int_eq(fi_frame_from_json(bad, strlen(bad), NULL, &g, NULL), FI_ERANGE);
		ck_assert_str_eq(g.id, "x"); /* still answerable */
		ck_assert_ptr_nonnull(strstr(fi_errmsg(), "'seq'"));
		fi_frame_free(&g);
	}
	fi_buf_free(&b);
}
END_TEST

/* Text piped in where frames are expected: refused from its first byte, whole. */
START_TEST(test_not_frames)
{
	static const char *const inputs[] = { "hello world\n", "\x93\x01\x02\x03", "\xc0", "{\"v\":1}" };
	for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
		struct fi_reader *r;
		struct fi_frame f;
		ck_assert_int_eq(fi_reader_open_mem(&r, inputs[i], strlen(inputs[i]), NULL), FI_OK);
		ck_assert_int_eq(fi_reader_next(r, &f), FI_EFORMAT);
		ck_assert(fi_reader_broken(r));
		ck_assert_str_eq(fi_errmsg(), "input is not fi frames: pipe text through fi-tokenize");
		ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
		ck_assert_int_eq(f.type, FI_FRAME_EOS);
		fi_reader_close(r);
	}
	/* After a first frame, a stray integer is one bad frame and the stream goes on. */
	{
		struct fi_buf b = { 0 };
		struct fi_frame f;
		struct fi_reader *r;
		fi_frame_init(&f, FI_FRAME_CANCEL);
		f.id = "a";
		encode(&f, &b);
		fi_buf_append(&b, "\x05", 1);
		fi_frame_encode(&f, &b);
		ck_assert_int_eq(fi_reader_open_mem(&r, b.data, b.len, NULL), FI_OK);
		ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
		fi_frame_free(&f);
		ck_assert_int_eq(fi_reader_next(r, &f), FI_EFORMAT);
		ck_assert(!fi_reader_broken(r));
		ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
		ck_assert_int_eq(f.type, FI_FRAME_CANCEL);
		fi_frame_free(&f);
		fi_reader_close(r);
		fi_buf_free(&b);
	}
	/* An empty input is an empty stream, not an error. */
	{
		struct fi_reader *r;
		struct fi_frame f;
		ck_assert_int_eq(fi_reader_open_mem(&r, "", 0, NULL), FI_OK);
		ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
		ck_assert_int_eq(f.type, FI_FRAME_EOS);
		fi_reader_close(r);
	}
}
END_TEST

START_TEST(test_json_every_type)
{
	static char *stops[2] = { "\n\n", "</s>" };
	static uint32_t sids[1] = { 128009 };
	struct fi_frame f;
	char *s;

	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = "req-\xc3\xa9";
	f.seq = 9;
	f.has_seq = 1;
	f.req.text = "Hello\0w\xc3\xb6rld";
	f.req.text_len = 12;
	f.req.tokens = toks;
	f.req.ntokens = 3;
	f.req.temperature = 0.7f;
	f.req.top_k = 40;
	f.req.top_p = 0.95f;
	f.req.min_p = 0.05f;
	f.req.repeat_penalty = 1.1f;
	f.req.seed = 18446744073709551615ull; /* above what JSON integers hold */
	f.req.max_tokens = 16;
	f.req.stream = 0;
	f.req.stop = stops;
	f.req.nstop = 2;
	f.req.stop_ids = sids;
	f.req.nstop_ids = 1;
	memset(blocks[0], 0x01, 32);
	memset(blocks[1], 0xfe, 32);
	f.req.kv.arena = "a";
	memset(f.req.kv.fingerprint, 0xab, 32);
	f.req.kv.blocks = blocks;
	f.req.kv.nblocks = 2;
	f.req.kv.ntokens = 32;
	f.req.kv.block_tokens = 16;
	memset(f.req.tok_sha256, 0xcd, 32);
	f.req.tok_name = "llama3";
	f.req.set = FI_REQ_SEED | FI_REQ_KV | FI_REQ_TOKENIZER;
	s = json_roundtrip(&f);
	/* the documented shapes: arrays of ids, hex keys, short floats, big seeds as strings */
	ck_assert_ptr_nonnull(strstr(s, "\"tokens\":[1,70000,4294967295]"));
	ck_assert_ptr_nonnull(strstr(s, "\"text\":\"Hello\\u0000w\xc3\xb6rld\""));
	ck_assert_ptr_nonnull(strstr(s, "\"temperature\":0.7,"));
	ck_assert_ptr_nonnull(strstr(s, "\"top_p\":0.95,"));
	ck_assert_ptr_nonnull(strstr(s, "\"seed\":\"18446744073709551615\""));
	ck_assert_ptr_nonnull(strstr(s, "\"fingerprint\":\"abababab"));
	ck_assert_ptr_nonnull(strstr(s, "\"blocks\":[\"0101"));
	ck_assert_ptr_nonnull(strstr(s, "\"tokenizer\":{\"sha256\":\"cdcd"));
	ck_assert_ptr_nonnull(strstr(s, "\"name\":\"llama3\"}"));
	{
		static const char head[] = "{\"v\":1,\"type\":\"request\",\"id\":\"req-\xc3\xa9\",\"seq\":9,";
		ck_assert(!strncmp(s, head, strlen(head)));
	}
	free(s);

	/* A piece that is part of a character cannot be a JSON string: it is hex. */
	fi_frame_init(&f, FI_FRAME_TOKEN);
	f.id = "t";
	f.tok.token = 7;
	f.tok.index = 3;
	f.tok.text = "\xe2\x82";
	f.tok.text_len = 2;
	f.tok.logprob = -0.25f;
	f.tok.has_logprob = 1;
	s = json_roundtrip(&f);
	ck_assert_str_eq(s, "{\"v\":1,\"type\":\"token\",\"id\":\"t\",\"token\":7,\"index\":3,"
			    "\"text\":{\"hex\":\"e282\"},\"logprob\":-0.25}");
	free(s);

	fi_frame_init(&f, FI_FRAME_DONE);
	f.id = "d";
	f.seq = 3;
	f.has_seq = 1;
	f.done.finish = FI_FINISH_LENGTH;
	f.done.prompt_tokens = 5;
	f.done.gen_tokens = 2;
	f.done.ttft_ms = 12.345678901234567;
	f.done.total_ms = 1.0;
	f.done.tokens = toks;
	f.done.ntokens = 2;
	f.done.text = "ab";
	f.done.text_len = 2;
	f.prompt = "p";
	f.prompt_len = 1;
	s = json_roundtrip(&f);
	ck_assert_str_eq(s, "{\"v\":1,\"type\":\"done\",\"id\":\"d\",\"seq\":3,\"finish\":\"length\","
			    "\"counts\":{\"prompt_tokens\":5,\"gen_tokens\":2,\"cached_tokens\":0},"
			    "\"timings\":{\"ttft_ms\":12.345678901234567,\"total_ms\":1.0},"
			    "\"tokens\":[1,70000],\"text\":\"ab\",\"prompt\":\"p\"}");
	free(s);

	fi_frame_init(&f, FI_FRAME_ERROR);
	f.id = "";
	f.err.code = FI_ERANGE;
	f.err.message = "too long";
	s = json_roundtrip(&f);
	ck_assert_str_eq(s, "{\"v\":1,\"type\":\"error\",\"id\":\"\",\"code\":\"range\",\"code_num\":5,"
			    "\"message\":\"too long\"}");
	free(s);

	fi_frame_init(&f, FI_FRAME_CANCEL);
	f.id = "c";
	s = json_roundtrip(&f);
	ck_assert_str_eq(s, "{\"v\":1,\"type\":\"cancel\",\"id\":\"c\"}");
	free(s);
	fi_frame_init(&f, FI_FRAME_EOS);
	s = json_roundtrip(&f);
	ck_assert_str_eq(s, "{\"v\":1,\"type\":\"eos\"}");
	free(s);
}
END_TEST

/* JSON written by hand: what a reader accepts, and what it says when it does not. */
START_TEST(test_json_input)
{
	static const struct {
		const char *json;
		fi_err err;
		const char *msg; /* part of the message */
	} cases[] = {
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"tokens\":[1,2],\"temperature\":0}", FI_OK, NULL },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":\"x\",\"seed\":\"12\"}", FI_OK, NULL },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":{\"hex\":\"ff00\"}}", FI_OK, NULL },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":\"x\",\"kv\":{\"fingerprint\":"
		  "\"0000000000000000000000000000000000000000000000000000000000000000\",\"blocks\":"
		  "[\"1111111111111111111111111111111111111111111111111111111111111111\"],\"ntokens\":16}}",
		  FI_OK, NULL },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":\"x\",\"temperature\":-1}", FI_ERANGE,
		  "frame: key 'temperature': -1 is out of range [0, 10000]" },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\"}", FI_EFORMAT, "neither 'text' nor 'tokens'" },
		{ "{\"v\":1,\"type\":\"token\",\"id\":\"a\",\"token\":1}", FI_EFORMAT, "needs 'token' and 'index'" },
		{ "{\"v\":1,\"type\":\"nope\",\"id\":\"a\"}", FI_EUNSUPPORTED, "unknown type 'nope'" },
		{ "{\"v\":1,\"type\":\"cancel\",\"id\":\"a\",\"id\":\"b\"}", FI_EFORMAT, "duplicate" },
		{ "[1,2]", FI_EFORMAT, "a frame is an object" },
		{ "{\"v\":1,", FI_EFORMAT, "json: column" },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":{\"hex\":\"f\"}}", FI_EFORMAT, "even number" },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":{\"hex\":\"zz\"}}", FI_EFORMAT, "hex digit" },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":\"x\",\"kv\":{\"fingerprint\":\"00\","
		  "\"blocks\":[],\"ntokens\":0}}", FI_EFORMAT, "'fingerprint'" },
		{ "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":\"x\",\"tokenizer\":{\"name\":\"t\"}}",
		  FI_EFORMAT, "needs 'sha256'" },
		{ "{\"v\":1,\"type\":\"cancel\",\"id\":\"a\",\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
		  FI_EFORMAT, "deeper" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct fi_frame f;
		fi_err e = fi_frame_from_json(cases[i].json, strlen(cases[i].json), NULL, &f, NULL);
		ck_assert_msg(e == cases[i].err, "%s: %d (%s)", cases[i].json, (int)e, fi_errmsg());
		if (cases[i].msg)
			ck_assert_msg(strstr(fi_errmsg(), cases[i].msg), "%s: %s", cases[i].json, fi_errmsg());
		if (!e && i == 2)
			ck_assert(f.req.text_len == 2 && !memcmp(f.req.text, "\xff\0", 2));
		if (!e && i == 1)
			ck_assert_uint_eq(f.req.seed, 12);
		fi_frame_free(&f);
	}
}
END_TEST

START_TEST(test_json_dropped)
{
	static const char s[] = "{\"v\":1,\"type\":\"request\",\"id\":\"a\",\"text\":\"x\","
				"\"kv\":{\"fingerprint\":\"0000000000000000000000000000000000000000000000000000000000000000\","
				"\"blocks\":[],\"ntokens\":0,\"areena\":\"x\"},\"temprature\":1}";
	struct fi_frame f;
	json_t *in, *out;
	char path[64];
	ck_assert_int_eq(fi_frame_from_json(s, strlen(s), NULL, &f, &in), FI_OK);
	ck_assert_int_eq(fi_frame_to_json(&f, &out), FI_OK);
	ck_assert(fi_json_dropped(in, out, path, sizeof path));
	ck_assert_str_eq(path, "kv.areena");
	json_object_del(json_object_get(in, "kv"), "areena");
	ck_assert(fi_json_dropped(in, out, path, sizeof path));
	ck_assert_str_eq(path, "temprature");
	json_object_del(in, "temprature");
	ck_assert(!fi_json_dropped(in, out, path, sizeof path));
	json_decref(in);
	json_decref(out);
	fi_frame_free(&f);
}
END_TEST

START_TEST(test_json_numbers)
{
	static const struct {
		double v;
		const char *s;
	} cases[] = {
		{ 0.1, "0.1" }, { 1.0, "1.0" }, { 12.5, "12.5" }, { 1e300, "1e+300" },
		{ 0.1 + 0.2, "0.30000000000000004" }, { -0.0, "-0.0" }, { 123456789.0, "123456789.0" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *j = json_real(cases[i].v);
		char *s = fi_json_dumps(j);
		ck_assert_str_eq(s, cases[i].s);
		ck_assert(strtod(s, NULL) == cases[i].v);
		free(s);
		json_decref(j);
	}
	{
		json_t *j = fi_json_f32(0.7f);
		char *s = fi_json_dumps(j);
		ck_assert_str_eq(s, "0.7");
		ck_assert((float)strtod(s, NULL) == 0.7f);
		free(s);
		json_decref(j);
	}
}
END_TEST

/* Python's bytes.decode('utf-8', 'replace') on each input. */
START_TEST(test_utf8)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "\xe2\x82", "\xef\xbf\xbd" },
		{ "\xf0\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "a\xff" "b", "a\xef\xbf\xbd" "b" },
		{ "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
		{ "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd" },
		{ "\xe2\x82\xac\xe2", "\xe2\x82\xac\xef\xbf\xbd" },
		{ "caf\xc3\xa9 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xf0\x9f\x98\x80" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *o;
		size_t n;
		ck_assert_int_eq(fi_utf8_lossy(cases[i].in, strlen(cases[i].in), &o, &n), FI_OK);
		ck_assert_str_eq(o, cases[i].out);
		ck_assert_uint_eq(n, strlen(cases[i].out));
		ck_assert_uint_eq(fi_utf8_valid(o, n), n);
		free(o);
	}
	ck_assert_uint_eq(fi_utf8_valid("ab\xe2\x82", 4), 2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("frame_json");
	TCase *tc = tcase_create("frame_json");
	tcase_add_test(tc, test_new_keys);
	tcase_add_test(tc, test_not_frames);
	tcase_add_test(tc, test_json_every_type);
	tcase_add_test(tc, test_json_input);
	tcase_add_test(tc, test_json_dropped);
	tcase_add_test(tc, test_json_numbers);
	tcase_add_test(tc, test_utf8);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
