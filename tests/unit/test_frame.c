/* Frame schema v1: round trips of every type, defaults, forward compatibility, and a
 * malformed corpus (truncations, wrong types, huge declared sizes, deep nesting, trailing
 * bytes, non-map frames) that must fail cleanly without large allocations. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <msgpack.h>
#include <pthread.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/utf8.h"
#include "frame/frame.h"
#include "frame/stream.h"
#include "util.h"

static uint32_t toks[5] = { 1, 255, 65536, 0xfffffffe, 7 };
static uint32_t sids[2] = { 2, 128009 };
static char *stops[2] = { "\n\n", "</s>" };
static uint8_t blocks[3][32];

static void full_request(struct fi_frame *f)
{
	fi_frame_init(f, FI_FRAME_REQUEST);
	f->id = "req-1";
	f->req.text = "Hello\0world";
	f->req.text_len = 11;
	f->req.tokens = toks;
	f->req.ntokens = 5;
	f->req.temperature = 0.7f;
	f->req.top_k = 40;
	f->req.top_p = 0.95f;
	f->req.min_p = 0.05f;
	f->req.repeat_penalty = 1.1f;
	f->req.seed = 0xdeadbeefcafeull;
	f->req.max_tokens = 256;
	f->req.stream = 0;
	f->req.stop = stops;
	f->req.nstop = 2;
	f->req.stop_ids = sids;
	f->req.nstop_ids = 2;
	for (int i = 0; i < 3; i++)
		memset(blocks[i], 0x10 + i, 32);
	f->req.kv.arena = "llama3";
	memset(f->req.kv.fingerprint, 0xab, 32);
	f->req.kv.blocks = blocks;
	f->req.kv.nblocks = 3;
	f->req.kv.ntokens = 48;
	f->req.kv.block_tokens = 16;
	f->req.ignore_eos = 1;
	f->req.logprobs = 1;
	f->req.top_logprobs = 5;
	f->req.set = FI_REQ_SEED | FI_REQ_KV;
}

static void roundtrip(const struct fi_frame *in, struct fi_frame *out)
{
	struct fi_buf b = { 0 };
	ck_assert_int_eq(fi_frame_encode(in, &b), FI_OK);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, out), FI_OK);
	ck_assert_int_eq(out->type, in->type);
	fi_buf_free(&b);
}

START_TEST(test_request_roundtrip)
{
	struct fi_frame in, f;
	full_request(&in);
	roundtrip(&in, &f);
	ck_assert_str_eq(f.id, "req-1");
	ck_assert_uint_eq(f.req.text_len, 11);
	ck_assert(!memcmp(f.req.text, "Hello\0world", 12));
	ck_assert_uint_eq(f.req.ntokens, 5);
	ck_assert(!memcmp(f.req.tokens, toks, sizeof toks));
	ck_assert_float_eq(f.req.temperature, 0.7f);
	ck_assert_int_eq(f.req.top_k, 40);
	ck_assert_float_eq(f.req.top_p, 0.95f);
	ck_assert_float_eq(f.req.min_p, 0.05f);
	ck_assert_float_eq(f.req.repeat_penalty, 1.1f);
	ck_assert_uint_eq(f.req.seed, 0xdeadbeefcafeull);
	ck_assert_uint_eq(f.req.max_tokens, 256);
	ck_assert_int_eq(f.req.stream, 0);
	ck_assert_uint_eq(f.req.nstop, 2);
	ck_assert_str_eq(f.req.stop[0], "\n\n");
	ck_assert_str_eq(f.req.stop[1], "</s>");
	ck_assert_uint_eq(f.req.nstop_ids, 2);
	ck_assert_uint_eq(f.req.stop_ids[1], 128009);
	ck_assert_uint_eq(f.req.set, FI_REQ_TEMPERATURE | FI_REQ_TOP_K | FI_REQ_TOP_P | FI_REQ_MIN_P |
				     FI_REQ_REPEAT_PENALTY | FI_REQ_SEED | FI_REQ_MAX_TOKENS |
				     FI_REQ_STREAM | FI_REQ_KV | FI_REQ_IGNORE_EOS | FI_REQ_LOGPROBS |
				     FI_REQ_TOP_LOGPROBS);
	ck_assert(f.req.ignore_eos && f.req.logprobs);
	ck_assert_uint_eq(f.req.top_logprobs, 5);
	ck_assert_str_eq(f.req.kv.arena, "llama3");
	ck_assert_uint_eq(f.req.kv.fingerprint[31], 0xab);
	ck_assert_uint_eq(f.req.kv.nblocks, 3);
	ck_assert(!memcmp(f.req.kv.blocks, blocks, sizeof blocks));
	ck_assert_uint_eq(f.req.kv.ntokens, 48);
	ck_assert_uint_eq(f.req.kv.block_tokens, 16);
	fi_frame_free(&f);
	fi_frame_free(&f); /* twice is harmless */
}
END_TEST

/* The frames of a worker registered with a router (fi-frame(5), WORKERS AND ROUTERS). */
START_TEST(test_worker_frames)
{
	struct fi_buf b = {0};
	struct fi_frame f, g;
	fi_frame_init(&f, FI_FRAME_HELLO);
	f.id = "gpu0:42";
	f.hello.role = "prefill";
	f.hello.model = "llama3";
	memset(f.hello.fingerprint, 0xab, 32);
	f.hello.block_tokens = 16;
	f.hello.kv_blocks = 1ull << 33;
	f.hello.max_batch = 256;
	ck_assert(!fi_frame_encode(&f, &b));
	ck_assert_msg(!fi_frame_decode(b.data, b.len, NULL, &g), "%s", fi_errmsg());
	ck_assert_int_eq(g.type, FI_FRAME_HELLO);
	ck_assert_str_eq(g.id, "gpu0:42");
	ck_assert_str_eq(g.hello.role, "prefill");
	ck_assert_str_eq(g.hello.model, "llama3");
	ck_assert_uint_eq(g.hello.fingerprint[31], 0xab);
	ck_assert_uint_eq(g.hello.kv_blocks, 1ull << 33);
	ck_assert(!g.hello.has_kv_root && !g.hello.kv_events);
	fi_frame_free(&g);
	/* a role fi does not know is refused at the source */
	f.hello.role = "router";
	b.len = 0;
	ck_assert(!fi_frame_encode(&f, &b));
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &g), FI_EFORMAT);
	fi_frame_free(&g);

	fi_frame_init(&f, FI_FRAME_LOAD);
	f.id = "w";
	f.load = (struct fi_load){1, 2, 3, 4, 5, 6, 7, 8};
	b.len = 0;
	ck_assert(!fi_frame_encode(&f, &b));
	ck_assert(!fi_frame_decode(b.data, b.len, NULL, &g));
	ck_assert(!memcmp(&g.load, &f.load, sizeof f.load));
	fi_frame_free(&g);
	fi_frame_init(&f, FI_FRAME_BYE);
	f.id = "w";
	b.len = 0;
	ck_assert(!fi_frame_encode(&f, &b));
	ck_assert(!fi_frame_decode(b.data, b.len, NULL, &g));
	ck_assert_int_eq(g.type, FI_FRAME_BYE);
	ck_assert_str_eq(g.id, "w");
	fi_frame_free(&g);
	fi_buf_free(&b);
}
END_TEST

START_TEST(test_request_defaults)
{
	struct fi_frame in, f;
	fi_frame_init(&in, FI_FRAME_REQUEST);
	in.id = "a";
	in.req.text = "hi";
	in.req.text_len = 2;
	roundtrip(&in, &f);
	ck_assert_uint_eq(f.req.set, 0);
	ck_assert_float_eq(f.req.temperature, 1.0f);
	ck_assert_int_eq(f.req.top_k, 0);
	ck_assert_float_eq(f.req.top_p, 1.0f);
	ck_assert_float_eq(f.req.min_p, 0.0f);
	ck_assert_float_eq(f.req.repeat_penalty, 1.0f);
	ck_assert_uint_eq(f.req.max_tokens, 0);
	ck_assert_int_eq(f.req.stream, 1);
	ck_assert_int_eq(f.req.ignore_eos, 0);
	ck_assert_ptr_null(f.req.tokens);
	ck_assert_ptr_null(f.req.stop);
	ck_assert(!f.req.ignore_eos && !f.req.logprobs && !f.req.top_logprobs);
	fi_frame_free(&f);
	/* more alternatives than a token frame carries: refused at both ends */
	in.req.top_logprobs = FI_FRAME_MAX_TOP + 1;
	{
		struct fi_buf b = { 0 };
		ck_assert_int_eq(fi_frame_encode(&in, &b), FI_EINVAL);
		fi_buf_free(&b);
	}
}
END_TEST

START_TEST(test_other_roundtrips)
{
	struct fi_frame in, f;
	uint32_t out[3] = { 9, 8, 7 };

	fi_frame_init(&in, FI_FRAME_TOKEN);
	in.id = "r";
	in.tok.token = 128000;
	in.tok.index = 41;
	in.tok.text = " the";
	in.tok.text_len = 4;
	in.tok.logprob = -0.25f;
	in.tok.has_logprob = 1;
	roundtrip(&in, &f);
	ck_assert_str_eq(f.id, "r");
	ck_assert_uint_eq(f.tok.token, 128000);
	ck_assert_uint_eq(f.tok.index, 41);
	ck_assert_str_eq(f.tok.text, " the");
	ck_assert(f.tok.has_logprob && f.tok.logprob == -0.25f);
	ck_assert_ptr_null(f.tok.top);
	fi_frame_free(&f);
	{ /* the alternatives, most likely first */
		struct fi_token_top top[2] = {{7, -0.5f}, {128000, -1.25f}};
		in.tok.top = top;
		in.tok.ntop = 2;
		roundtrip(&in, &f);
		in.tok.top = NULL;
		in.tok.ntop = 0;
		ck_assert_uint_eq(f.tok.ntop, 2);
		ck_assert(f.tok.top[0].token == 7 && f.tok.top[0].logprob == -0.5f);
		ck_assert(f.tok.top[1].token == 128000 && f.tok.top[1].logprob == -1.25f);
		fi_frame_free(&f);
	}

	fi_frame_init(&in, FI_FRAME_DONE);
	in.id = "r";
	in.done.finish = FI_FINISH_LENGTH;
	in.done.prompt_tokens = 12;
	in.done.gen_tokens = 3;
	in.done.cached_tokens = 8;
	in.done.queue_ms = 0.5;
	in.done.ttft_ms = 12.25;
	in.done.tpot_ms = 7.125;
	in.done.tokens = out;
	in.done.ntokens = 3;
	in.done.text = "abc";
	in.done.text_len = 3;
	roundtrip(&in, &f);
	ck_assert_int_eq(f.done.finish, FI_FINISH_LENGTH);
	ck_assert_uint_eq(f.done.prompt_tokens, 12);
	ck_assert_uint_eq(f.done.gen_tokens, 3);
	ck_assert_uint_eq(f.done.cached_tokens, 8);
	ck_assert(f.done.queue_ms == 0.5 && f.done.ttft_ms == 12.25 && f.done.tpot_ms == 7.125);
	ck_assert(f.done.total_ms < 0); /* not measured */
	ck_assert_uint_eq(f.done.ntokens, 3);
	ck_assert_uint_eq(f.done.tokens[2], 7);
	ck_assert_str_eq(f.done.text, "abc");
	fi_frame_free(&f);

	for (int fin = 0; fin < FI_FINISH_COUNT; fin++) {
		fi_frame_init(&in, FI_FRAME_DONE);
		in.id = "x";
		in.done.finish = fin;
		roundtrip(&in, &f);
		ck_assert_int_eq(f.done.finish, fin);
		fi_frame_free(&f);
	}

	fi_frame_init(&in, FI_FRAME_ERROR);
	in.id = "";
	in.err.code = FI_ERANGE;
	in.err.message = "key 'top_p': 2 is out of range";
	roundtrip(&in, &f);
	ck_assert_str_eq(f.id, "");
	ck_assert_int_eq(f.err.code, FI_ERANGE);
	ck_assert_str_eq(f.err.message, "key 'top_p': 2 is out of range");
	fi_frame_free(&f);

	fi_frame_init(&in, FI_FRAME_CANCEL);
	in.id = "r9";
	roundtrip(&in, &f);
	ck_assert_str_eq(f.id, "r9");
	fi_frame_free(&f);

	fi_frame_init(&in, FI_FRAME_EOS);
	roundtrip(&in, &f);
	ck_assert_ptr_null(f.id);
	fi_frame_free(&f);

	/* Every error code's name survives the wire. */
	for (int c = 0; c < FI_ENCODE_COUNT; c++) {
		struct fi_buf b = { 0 };
		ck_assert_int_eq(fi_err_code_parse(fi_err_code_name(c), strlen(fi_err_code_name(c))), c);
		ck_assert_int_eq(fi_frame_encode_error(&b, "q", c, "m"), FI_OK);
		ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_OK);
		ck_assert_int_eq(f.err.code, c);
		fi_frame_free(&f);
		fi_buf_free(&b);
	}
}
END_TEST

START_TEST(test_encode_refuses)
{
	struct fi_frame in;
	struct fi_buf b = { 0 };
	fi_frame_init(&in, FI_FRAME_REQUEST);
	in.id = "a";
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_EINVAL); /* no prompt */
	fi_frame_init(&in, FI_FRAME_TOKEN);
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_EINVAL); /* no id */
	ck_assert_uint_eq(b.len, 0);
	fi_buf_free(&b);
}
END_TEST

/* --- hand-built frames ------------------------------------------------------------------ */

static int sb_write(void *d, const char *p, size_t n)
{
	return fi_buf_append(d, p, n) ? -1 : 0;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A token frame with one extra key/value written by fn (NULL: none), and v. */
static void build(struct fi_buf *b, unsigned v, const char *type, void (*extra)(msgpack_packer *), int nextra)
{
	msgpack_packer pk;
	b->len = 0;
	msgpack_packer_init(&pk, b, sb_write);
	msgpack_pack_map(&pk, 3 + nextra);
	pk_str(&pk, "v");
	msgpack_pack_uint32(&pk, v);
	pk_str(&pk, "type");
	pk_str(&pk, type);
	pk_str(&pk, "id");
	pk_str(&pk, "id7");
	if (extra)
		extra(&pk);
}

static void ex_lenient(msgpack_packer *pk)
{
	/* tokens as an array, fingerprint as hex, unknown keys of any shape */
	pk_str(pk, "tokens");
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, 5);
	msgpack_pack_uint32(pk, 6);
	pk_str(pk, "future");
	msgpack_pack_map(pk, 1);
	pk_str(pk, "x");
	msgpack_pack_array(pk, 1);
	msgpack_pack_nil(pk);
	msgpack_pack_uint32(pk, 42); /* non-string key: ignored */
	msgpack_pack_true(pk);
	pk_str(pk, "kv");
	msgpack_pack_map(pk, 3);
	pk_str(pk, "fingerprint");
	pk_str(pk, "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF");
	pk_str(pk, "blocks");
	msgpack_pack_array(pk, 0);
	pk_str(pk, "ntokens");
	msgpack_pack_uint32(pk, 0);
	pk_str(pk, "top_p"); /* an integer where a float is expected is fine */
	msgpack_pack_uint32(pk, 1);
}

static void ex_must_known(msgpack_packer *pk)
{
	pk_str(pk, "text");
	pk_str(pk, "x");
	pk_str(pk, "must");
	msgpack_pack_array(pk, 2);
	pk_str(pk, "text");
	pk_str(pk, "id");
}

static void ex_must_unknown(msgpack_packer *pk)
{
	pk_str(pk, "text");
	pk_str(pk, "x");
	pk_str(pk, "must");
	msgpack_pack_array(pk, 1);
	pk_str(pk, "grammar");
}

START_TEST(test_lenient_and_versions)
{
	struct fi_buf b = { 0 };
	struct fi_frame f;

	build(&b, 1, "request", ex_lenient, 5);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_OK);
	ck_assert_uint_eq(f.req.ntokens, 2);
	ck_assert_uint_eq(f.req.tokens[1], 6);
	ck_assert_uint_eq(f.req.kv.fingerprint[0], 0x00);
	ck_assert_uint_eq(f.req.kv.fingerprint[31], 0xff);
	ck_assert_str_eq(f.req.kv.arena, "");
	ck_assert_float_eq(f.req.top_p, 1.0f);
	fi_frame_free(&f);

	/* A later version is read when it needs nothing new... */
	build(&b, 2, "request", ex_must_known, 2);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_OK);
	fi_frame_free(&f);
	/* ...and refused, with its id kept, when it requires an unknown key. */
	build(&b, 2, "request", ex_must_unknown, 2);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_EUNSUPPORTED);
	ck_assert_int_eq(f.type, FI_FRAME_NONE);
	ck_assert_str_eq(f.id, "id7");
	ck_assert(strstr(fi_errmsg(), "grammar"));
	fi_frame_free(&f);
	/* Unknown type. */
	build(&b, 3, "hologram", NULL, 0);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_EUNSUPPORTED);
	ck_assert_str_eq(f.id, "id7");
	fi_frame_free(&f);
	/* Version 0. */
	build(&b, 0, "cancel", NULL, 0);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_EFORMAT);
	fi_frame_free(&f);
	fi_buf_free(&b);
}
END_TEST

/* Wrong types: for every key of a request, a value of the wrong type gives an error naming
 * the key, and the id survives for the error reply. */
static const char *wt_key;
static int wt_kind;

static void ex_wrong(msgpack_packer *pk)
{
	pk_str(pk, "text");
	pk_str(pk, "prompt");
	pk_str(pk, wt_key);
	switch (wt_kind) {
	case 0: msgpack_pack_nil(pk); break;
	case 1: pk_str(pk, "1"); break;
	case 2: msgpack_pack_map(pk, 0); break;
	case 3: msgpack_pack_int32(pk, -1); break;
	}
}

START_TEST(test_wrong_types)
{
	static const char *keys[] = { "text", "tokens", "temperature", "top_k", "top_p", "min_p",
				      "repeat_penalty", "seed", "max_tokens", "stop", "stop_ids",
				      "stream", "kv", "ignore_eos", "logprobs", "top_logprobs" };
	struct fi_buf b = { 0 };
	struct fi_frame f;
	int n = 0;

	for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
		for (wt_kind = 0; wt_kind < 4; wt_kind++) {
			fi_err e;
			wt_key = keys[k];
			if (!strcmp(wt_key, "text") && wt_kind == 1)
				continue; /* a str is right there */
			build(&b, 1, "request", ex_wrong, 2);
			e = fi_frame_decode(b.data, b.len, NULL, &f);
			if (!strcmp(wt_key, "text"))
				ck_assert_int_eq(e, FI_EFORMAT); /* duplicate key */
			else
				ck_assert_msg(e == FI_EFORMAT || e == FI_ERANGE, "%s kind %d: %d", wt_key, wt_kind, e);
			ck_assert_msg(strstr(fi_errmsg(), wt_key), "%s: %s", wt_key, fi_errmsg());
			ck_assert_int_eq(f.type, FI_FRAME_NONE);
			ck_assert_str_eq(f.id, "id7");
			fi_frame_free(&f);
			n++;
		}
	ck_assert_int_gt(n, 40);
	fi_buf_free(&b);
}
END_TEST

/* A request with id bytes idb[0..n) and a text prompt. */
static void build_id(struct fi_buf *b, const char *idb, size_t n)
{
	msgpack_packer pk;
	b->len = 0;
	msgpack_packer_init(&pk, b, sb_write);
	msgpack_pack_map(&pk, 4);
	pk_str(&pk, "v");
	msgpack_pack_uint32(&pk, 1);
	pk_str(&pk, "type");
	pk_str(&pk, "request");
	pk_str(&pk, "id");
	msgpack_pack_str_with_body(&pk, idb, n);
	pk_str(&pk, "text");
	pk_str(&pk, "x");
}

/* An id that is not UTF-8 is refused, and never echoed as a msgpack str: the error reply's
 * id is "". Over-long ids are echoed by a head cut at a character boundary, and error
 * messages quoting bad bytes are sent as valid UTF-8. */
START_TEST(test_utf8_ids)
{
	static const char *bad[] = {
		"\xff", "a\xc3", "\xc0\xaf" /* overlong '/' */, "\xed\xa0\x80" /* surrogate */,
		"\xf4\x90\x80\x80" /* past U+10FFFF */, "ok\x80ok",
	};
	struct fi_buf b = { 0 }, r = { 0 };
	struct fi_frame f, g;
	char buf[FI_FRAME_ERROR_ID_MAX + 1], longid[300];
	for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
		build_id(&b, bad[k], strlen(bad[k]));
		ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_EFORMAT);
		ck_assert_msg(strstr(fi_errmsg(), "'id' is not valid UTF-8"), "%zu: %s", k, fi_errmsg());
		ck_assert_ptr_null(f.id);
		/* the reply a command sends for it */
		r.len = 0;
		ck_assert_int_eq(fi_frame_encode_error(&r, f.id, FI_EFORMAT, fi_errmsg()), FI_OK);
		ck_assert_int_eq(fi_frame_decode(r.data, r.len, NULL, &g), FI_OK);
		ck_assert_str_eq(g.id, "");
		fi_frame_free(&g);
		fi_frame_free(&f);
		/* an id passed in by a caller: refused by the encoder, "" in an error reply */
		ck_assert_str_eq(fi_frame_error_id(bad[k], buf), "");
		ck_assert_uint_lt(fi_utf8_valid(bad[k], strlen(bad[k])), strlen(bad[k]));
		fi_frame_init(&f, FI_FRAME_CANCEL);
		f.id = (char *)bad[k];
		r.len = 0;
		ck_assert_int_eq(fi_frame_encode(&f, &r), FI_EINVAL);
		ck_assert_uint_eq(r.len, 0);
	}
	/* valid: 2-, 3- and 4-byte characters pass */
	build_id(&b, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_OK);
	ck_assert_str_eq(f.id, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
	fi_frame_free(&f);
	/* 299 bytes: 'a' then 149 two-byte characters; the echo keeps 255 bytes, not 256 (which
	 * would split a character) */
	longid[0] = 'a';
	for (int i = 0; i < 149; i++)
		memcpy(longid + 1 + 2 * i, "\xc3\xa9", 2);
	longid[299] = 0;
	ck_assert_uint_eq(strlen(fi_frame_error_id(longid, buf)), 255);
	ck_assert_uint_eq(fi_utf8_valid(buf, 255), 255);
	r.len = 0;
	ck_assert_int_eq(fi_frame_encode_error(&r, longid, FI_ERANGE, "bad \xff byte \xe2\x82"), FI_OK);
	ck_assert_int_eq(fi_frame_decode(r.data, r.len, NULL, &g), FI_OK);
	ck_assert_uint_eq(strlen(g.id), 255);
	ck_assert_str_eq(g.err.message, "bad \xef\xbf\xbd byte \xef\xbf\xbd\xef\xbf\xbd");
	fi_frame_free(&g);
	fi_buf_free(&b);
	fi_buf_free(&r);
}
END_TEST

static long maxrss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

START_TEST(test_huge_declared)
{
	/* Headers that declare ~4G of something, alone and inside a frame prefix. */
	static const uint8_t heads[][5] = {
		{ 0xdd, 0xff, 0xff, 0xff, 0xff }, /* array32 */
		{ 0xdf, 0xff, 0xff, 0xff, 0xff }, /* map32 */
		{ 0xdb, 0xff, 0xff, 0xff, 0xff }, /* str32 */
		{ 0xc6, 0xff, 0xff, 0xff, 0xff }, /* bin32 */
		{ 0xc9, 0xff, 0xff, 0xff, 0xff }, /* ext32 */
		{ 0xdc, 0xff, 0xff, 0x00, 0x00 }, /* array16 + 2 bytes */
	};
	/* {"v":1,"type":"request","id":"a","text": <head>} */
	static const uint8_t prefix[] = { 0x84, 0xa1, 'v', 0x01, 0xa4, 't', 'y', 'p', 'e', 0xa7,
					  'r', 'e', 'q', 'u', 'e', 's', 't', 0xa2, 'i', 'd', 0xa1,
					  'a', 0xa4, 't', 'e', 'x', 't' };
	long rss0 = maxrss_kb();
	uint8_t buf[64];
	struct fi_frame f;
	size_t ext;

	for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
		fi_err e = fi_frame_decode(heads[i], 5, NULL, &f);
		ck_assert_msg(e == FI_ERANGE || e == FI_EFORMAT, "head %zu: %d", i, e);
		fi_frame_free(&f);
		memcpy(buf, prefix, sizeof prefix);
		memcpy(buf + sizeof prefix, heads[i], 5);
		e = fi_frame_decode(buf, sizeof prefix + 5, NULL, &f);
		ck_assert_msg(e == FI_ERANGE || e == FI_EFORMAT, "prefixed head %zu: %d", i, e);
		fi_frame_free(&f);
		/* As a stream: the 4G ones exceed the frame limit at once (no buffering). */
		if (i < 5)
			ck_assert_int_eq(fi_frame_scan(heads[i], 5, NULL, &ext), FI_ERANGE);
	}
	/* The frame limit applies to what is declared, before the bytes arrive. */
	{
		struct fi_frame_limits lim;
		static const uint8_t s16[] = { 0xda, 0x10, 0x00 }; /* str16 of 4096 */
		fi_frame_limits_default(&lim);
		lim.max_frame = 1024;
		ck_assert_int_eq(fi_frame_scan(s16, 3, &lim, &ext), FI_ERANGE);
		lim.max_frame = 8192;
		ck_assert_int_eq(fi_frame_scan(s16, 3, &lim, &ext), FI_OK);
		ck_assert_uint_eq(ext, 0); /* incomplete, fine */
	}
	/* Nothing above may have allocated more than a few MB. */
	ck_assert_int_lt(maxrss_kb() - rss0, 64 * 1024);
}
END_TEST

START_TEST(test_structure_errors)
{
	struct fi_frame in, f;
	struct fi_buf b = { 0 };
	uint8_t deep[200];
	size_t n;
	static const uint8_t not_maps[][3] = { { 0x91, 0x01 }, { 0x05 }, { 0xa1, 'x' }, { 0xc0 } };
	static const uint8_t reserved[] = { 0x81, 0xa1, 'v', 0xc1 };

	for (size_t i = 0; i < 4; i++) {
		size_t len = i == 0 || i == 2 ? 2 : 1;
		ck_assert_int_eq(fi_frame_decode(not_maps[i], len, NULL, &f), FI_EFORMAT);
		fi_frame_free(&f);
	}
	ck_assert_int_eq(fi_frame_decode(reserved, sizeof reserved, NULL, &f), FI_EFORMAT);
	ck_assert_int_eq(fi_frame_decode("", 0, NULL, &f), FI_EFORMAT);

	/* {"x": [[[...1...]]]} nested 150 deep; then exactly at the limit. */
	deep[0] = 0x81;
	deep[1] = 0xa1;
	deep[2] = 'x';
	for (n = 3; n < 153; n++)
		deep[n] = 0x91;
	deep[n++] = 0x01;
	ck_assert_int_eq(fi_frame_decode(deep, n, NULL, &f), FI_EFORMAT);
	ck_assert(strstr(fi_errmsg(), "deeper"));
	fi_frame_free(&f);
	{
		/* depth 8 = the map + 7 arrays: passes the depth check, then lacks v. */
		uint8_t d8[16] = { 0x81, 0xa1, 'x', 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x01 };
		ck_assert_int_eq(fi_frame_decode(d8, 11, NULL, &f), FI_EFORMAT);
		ck_assert(strstr(fi_errmsg(), "'v'"));
		memmove(d8 + 4, d8 + 3, 8);
		ck_assert_int_eq(fi_frame_decode(d8, 12, NULL, &f), FI_EFORMAT);
		ck_assert(strstr(fi_errmsg(), "deeper"));
	}

	/* Trailing bytes. */
	fi_frame_init(&in, FI_FRAME_CANCEL);
	in.id = "c";
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_OK);
	fi_buf_append(&b, "\x00", 1);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_EFORMAT);
	ck_assert(strstr(fi_errmsg(), "trailing"));
	fi_buf_free(&b);
}
END_TEST

START_TEST(test_truncations)
{
	/* Every prefix of every valid frame is an error (and, through a reader, breaks it). */
	struct fi_frame in[4], f;
	struct fi_buf b = { 0 };

	full_request(&in[0]);
	fi_frame_init(&in[1], FI_FRAME_TOKEN);
	in[1].id = "t";
	in[1].tok.text = "x";
	in[1].tok.text_len = 1;
	fi_frame_init(&in[2], FI_FRAME_DONE);
	in[2].id = "d";
	in[2].done.ttft_ms = 3;
	fi_frame_init(&in[3], FI_FRAME_ERROR);
	in[3].id = "e";
	in[3].err.code = FI_EIO;
	in[3].err.message = "m";
	for (int k = 0; k < 4; k++) {
		b.len = 0;
		ck_assert_int_eq(fi_frame_encode(&in[k], &b), FI_OK);
		for (size_t len = 0; len < b.len; len++) {
			struct fi_reader *r;
			size_t ext = 1;
			ck_assert_int_ne(fi_frame_decode(b.data, len, NULL, &f), FI_OK);
			ck_assert_int_eq(f.type, FI_FRAME_NONE);
			fi_frame_free(&f);
			ck_assert_int_eq(fi_frame_scan(b.data, len, NULL, &ext), FI_OK);
			ck_assert_uint_eq(ext, 0);
			ck_assert_int_eq(fi_reader_open_mem(&r, b.data, len, NULL), FI_OK);
			if (len) {
				ck_assert_int_eq(fi_reader_next(r, &f), FI_EFORMAT);
				ck_assert(fi_reader_broken(r));
			}
			ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
			ck_assert_int_eq(f.type, FI_FRAME_EOS);
			fi_reader_close(r);
		}
	}
	fi_buf_free(&b);
}
END_TEST

START_TEST(test_limits)
{
	struct fi_frame_limits lim;
	struct fi_frame in, f;
	struct fi_buf b = { 0 };
	char id[300];

	fi_frame_limits_default(&lim);
	full_request(&in);
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_OK);
	lim.max_tokens = 4;
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, &lim, &f), FI_ERANGE);
	ck_assert_str_eq(f.id, "req-1");
	fi_frame_free(&f);
	fi_frame_limits_default(&lim);
	lim.max_stop = 1;
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, &lim, &f), FI_ERANGE);
	fi_frame_free(&f);
	fi_frame_limits_default(&lim);
	lim.max_blocks = 2;
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, &lim, &f), FI_ERANGE);
	fi_frame_free(&f);
	fi_frame_limits_default(&lim);
	lim.max_objects = 10;
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, &lim, &f), FI_ERANGE);
	fi_frame_free(&f);

	/* Out-of-range values. */
	in.req.top_p = 1.5f;
	b.len = 0;
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_OK);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_ERANGE);
	ck_assert(strstr(fi_errmsg(), "top_p"));
	fi_frame_free(&f);
	in.req.top_p = NAN;
	b.len = 0;
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_OK);
	ck_assert_int_eq(fi_frame_decode(b.data, b.len, NULL, &f), FI_ERANGE);
	fi_frame_free(&f);

	/* An over-long id is refused and not echoed; the error reply gets "". */
	memset(id, 'i', sizeof id - 1);
	id[sizeof id - 1] = 0;
	fi_frame_init(&in, FI_FRAME_CANCEL);
	in.id = id;
	b.len = 0;
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_EINVAL);
	fi_frame_free(&f);
	fi_buf_free(&b);
}
END_TEST

START_TEST(test_reader_resync)
{
	/* good, bad schema (skipped), good, eos frame, then bytes nobody reads. */
	struct fi_buf b = { 0 };
	struct fi_frame in, f;
	struct fi_reader *r;
	static const uint8_t bad[] = { 0x82, 0xa1, 'v', 0x01, 0xa2, 'i', 'd', 0xa1, 'z' };

	fi_frame_init(&in, FI_FRAME_CANCEL);
	in.id = "one";
	fi_frame_encode(&in, &b);
	fi_buf_append(&b, bad, sizeof bad);
	in.id = "two";
	fi_frame_encode(&in, &b);
	fi_frame_init(&in, FI_FRAME_EOS);
	fi_frame_encode(&in, &b);
	fi_buf_append(&b, "\xc1\xc1", 2);

	ck_assert_int_eq(fi_reader_open_mem(&r, b.data, b.len, NULL), FI_OK);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_str_eq(f.id, "one");
	fi_frame_free(&f);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_EFORMAT);
	ck_assert_str_eq(f.id, "z");
	ck_assert(!fi_reader_broken(r));
	fi_frame_free(&f);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_str_eq(f.id, "two");
	fi_frame_free(&f);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_EOS);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_EOS);
	fi_reader_close(r);

	/* Corrupt structure: reported once, then the end. */
	b.len = 0;
	fi_frame_init(&in, FI_FRAME_CANCEL);
	in.id = "one";
	fi_frame_encode(&in, &b);
	fi_buf_append(&b, "\xc1", 1);
	fi_frame_encode(&in, &b);
	ck_assert_int_eq(fi_reader_open_mem(&r, b.data, b.len, NULL), FI_OK);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	fi_frame_free(&f);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_EFORMAT);
	ck_assert(fi_reader_broken(r));
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_EOS);
	fi_reader_close(r);
	fi_buf_free(&b);
}
END_TEST

/* A big frame (1M tokens, 4 MiB) through a pipe in small writes. */
struct big_ctx {
	int fd;
	struct fi_buf *b;
};

static void *big_writer(void *p)
{
	struct big_ctx *c = p;
	for (size_t off = 0; off < c->b->len;) {
		size_t n = c->b->len - off < 1000 ? c->b->len - off : 1000;
		ssize_t w = write(c->fd, c->b->data + off, n);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(c->fd);
	return NULL;
}

START_TEST(test_reader_big_frame)
{
	struct fi_frame in, f;
	struct fi_buf b = { 0 };
	struct fi_reader *r;
	struct big_ctx c;
	pthread_t th;
	int fds[2];
	uint32_t *t = malloc((1u << 20) * 4);

	for (uint32_t i = 0; i < 1u << 20; i++)
		t[i] = i * 2654435761u;
	fi_frame_init(&in, FI_FRAME_REQUEST);
	in.id = "big";
	in.req.tokens = t;
	in.req.ntokens = 1u << 20;
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_OK);
	in.id = "small";
	in.req.ntokens = 3;
	ck_assert_int_eq(fi_frame_encode(&in, &b), FI_OK);
	ck_assert_int_eq(pipe(fds), 0);
	c.fd = fds[1];
	c.b = &b;
	pthread_create(&th, NULL, big_writer, &c);
	ck_assert_int_eq(fi_reader_open_fd(&r, fds[0], NULL), FI_OK);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_uint_eq(f.req.ntokens, 1u << 20);
	ck_assert(!memcmp(f.req.tokens, t, (1u << 20) * 4));
	fi_frame_free(&f);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_str_eq(f.id, "small");
	fi_frame_free(&f);
	ck_assert_int_eq(fi_reader_next(r, &f), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_EOS);
	pthread_join(th, NULL);
	fi_reader_close(r);
	close(fds[0]);
	fi_buf_free(&b);
	free(t);
}
END_TEST

/* The fuzz seed corpus doubles as the malformed corpus: valid-* and ok-* decode, bad-* fail
 * with a recorded detail, stream-* read through to the end. */
START_TEST(test_corpus)
{
	const char *d = "tests/fuzz/corpus/fuzz_frame";
	DIR *dd = opendir(d);
	struct dirent *e;
	int nbad = 0, nok = 0, nstream = 0;

	ck_assert_msg(dd != NULL, "%s missing", d);
	while ((e = readdir(dd))) {
		char p[512];
		size_t len;
		char *buf;
		struct fi_frame f;
		fi_err err;
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "%s/%s", d, e->d_name);
		buf = fi_test_slurp(p, &len);
		ck_assert_ptr_nonnull(buf);
		if (!strncmp(e->d_name, "stream-", 7)) {
			struct fi_reader *r;
			int frames = 0;
			ck_assert_int_eq(fi_reader_open_mem(&r, buf, len, NULL), FI_OK);
			for (;;) {
				err = fi_reader_next(r, &f);
				ck_assert_msg(err == FI_OK, "%s: %s", e->d_name, fi_errmsg());
				if (f.type == FI_FRAME_EOS)
					break;
				frames++;
				fi_frame_free(&f);
			}
			ck_assert_int_ge(frames, 6);
			fi_reader_close(r);
			nstream++;
		} else {
			fi_clear_error();
			err = fi_frame_decode(buf, len, NULL, &f);
			if (!strncmp(e->d_name, "bad-", 4)) {
				ck_assert_msg(err != FI_OK, "%s decoded", e->d_name);
				ck_assert(strlen(fi_errmsg()) > 8);
				nbad++;
			} else {
				ck_assert_msg(err == FI_OK, "%s: %s", e->d_name, fi_errmsg());
				nok++;
			}
			fi_frame_free(&f);
		}
		free(buf);
	}
	closedir(dd);
	ck_assert_int_gt(nbad, 100);
	ck_assert_int_ge(nok, 8);
	ck_assert_int_eq(nstream, 2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("frame");
	TCase *tc = tcase_create("frame");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_request_roundtrip);
	tcase_add_test(tc, test_request_defaults);
	tcase_add_test(tc, test_other_roundtrips);
	tcase_add_test(tc, test_encode_refuses);
	tcase_add_test(tc, test_lenient_and_versions);
	tcase_add_test(tc, test_wrong_types);
	tcase_add_test(tc, test_utf8_ids);
	tcase_add_test(tc, test_huge_declared);
	tcase_add_test(tc, test_structure_errors);
	tcase_add_test(tc, test_truncations);
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_reader_resync);
	tcase_add_test(tc, test_reader_big_frame);
	tcase_add_test(tc, test_corpus);
	tcase_add_test(tc, test_worker_frames);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
