/* Writes the seed corpus of tests/fuzz/fuzz_frame.c: valid frames of every type, streams of
 * several frames, and the malformed set (truncations, wrong types, huge declared sizes, deep
 * nesting, trailing bytes, non-map frames, reserved bytes, unknown versions).
 *
 *   make BUILD=build-frame FI_CUDA=0 build-frame/libfi.a
 *   cc -std=gnu11 -Ilib -Iinclude tools/frame_corpus.c build-frame/libfi.a $(pkg-config --libs msgpack libzmq) -lm \
 *      -o build-frame/frame_corpus && build-frame/frame_corpus tests/fuzz/corpus/fuzz_frame */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"

static const char *dir;

/* A literal without its terminating NUL. */
#define PUT(name, lit) put(name, lit, sizeof lit - 1)

static void put(const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;
	snprintf(path, sizeof path, "%s/%s", dir, name);
	if (!(f = fopen(path, "wb")) || fwrite(p, 1, n, f) != n || fclose(f)) {
		perror(path);
		exit(1);
	}
}

static void enc(struct fi_buf *b, const struct fi_frame *f)
{
	if (fi_frame_encode(f, b)) {
		fprintf(stderr, "frame_corpus: %s\n", fi_errmsg());
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static uint32_t toks[6] = { 128000, 9906, 11, 1917, 0, 4294967295u };
	static uint32_t sids[2] = { 128001, 128009 };
	static char *stops[2] = { "\n\n", "User:" };
	static uint8_t blocks[2][32];
	struct fi_buf all = { 0 }, b = { 0 };
	struct fi_frame f;
	char name[64];

	if (argc != 2) {
		fprintf(stderr, "usage: frame_corpus DIR\n");
		return 2;
	}
	dir = argv[1];

	/* Valid frames. */
	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = "r1";
	f.req.text = "Hello, world";
	f.req.text_len = 12;
	f.req.tokens = toks;
	f.req.ntokens = 6;
	f.req.temperature = 0.8f;
	f.req.top_k = 40;
	f.req.top_p = 0.9f;
	f.req.min_p = 0.05f;
	f.req.repeat_penalty = 1.1f;
	f.req.seed = 42;
	f.req.max_tokens = 64;
	f.req.stream = 0;
	f.req.stop = stops;
	f.req.nstop = 2;
	f.req.stop_ids = sids;
	f.req.nstop_ids = 2;
	f.req.kv.arena = "m";
	memset(f.req.kv.fingerprint, 7, 32);
	memset(blocks, 9, sizeof blocks);
	f.req.kv.blocks = blocks;
	f.req.kv.nblocks = 2;
	f.req.kv.ntokens = 32;
	f.req.kv.block_tokens = 16;
	f.req.set = FI_REQ_SEED | FI_REQ_KV;
	enc(&b, &f);
	put("valid-request-full", b.data, b.len);
	fi_buf_append(&all, b.data, b.len);
	/* Truncations of the full request at every byte. */
	for (size_t n = 1; n < b.len; n++) {
		snprintf(name, sizeof name, "bad-trunc-request-%03zu", n);
		put(name, b.data, n);
	}
	/* Trailing bytes. */
	fi_buf_append(&b, "\x00\xc1", 2);
	put("bad-trailing", b.data, b.len);
	b.len = 0;

	fi_frame_init(&f, FI_FRAME_REQUEST);
	f.id = "r2";
	f.req.text = "hi";
	f.req.text_len = 2;
	enc(&b, &f);
	put("valid-request-min", b.data, b.len);
	fi_buf_append(&all, b.data, b.len);
	b.len = 0;

	fi_frame_init(&f, FI_FRAME_TOKEN);
	f.id = "r1";
	f.tok.token = 1917;
	f.tok.index = 3;
	f.tok.text = " world";
	f.tok.text_len = 6;
	f.tok.logprob = -0.5f;
	f.tok.has_logprob = 1;
	enc(&b, &f);
	put("valid-token", b.data, b.len);
	fi_buf_append(&all, b.data, b.len);
	b.len = 0;

	fi_frame_init(&f, FI_FRAME_DONE);
	f.id = "r1";
	f.done.finish = FI_FINISH_LENGTH;
	f.done.prompt_tokens = 6;
	f.done.gen_tokens = 64;
	f.done.cached_tokens = 4;
	f.done.queue_ms = 1;
	f.done.ttft_ms = 20;
	f.done.tpot_ms = 8;
	f.done.total_ms = 532;
	f.done.tokens = toks;
	f.done.ntokens = 3;
	f.done.text = "abc";
	f.done.text_len = 3;
	enc(&b, &f);
	put("valid-done", b.data, b.len);
	fi_buf_append(&all, b.data, b.len);
	b.len = 0;

	fi_frame_encode_error(&b, "r9", FI_ERANGE, "key 'top_p': 2 is out of range [0, 1]");
	put("valid-error", b.data, b.len);
	fi_buf_append(&all, b.data, b.len);
	b.len = 0;

	fi_frame_init(&f, FI_FRAME_CANCEL);
	f.id = "r1";
	enc(&b, &f);
	put("valid-cancel", b.data, b.len);
	fi_buf_append(&all, b.data, b.len);
	b.len = 0;

	fi_frame_init(&f, FI_FRAME_EOS);
	enc(&b, &f);
	put("valid-eos", b.data, b.len);
	put("stream-all", all.data, all.len);
	fi_buf_append(&all, b.data, b.len);
	fi_buf_append(&all, "\xc1", 1);
	put("stream-eos-then-junk", all.data, all.len);
	fi_buf_free(&b);
	fi_buf_free(&all);

	/* Hand-made malformed frames. */
	PUT("bad-map32-4g", "\xdf\xff\xff\xff\xff");
	PUT("bad-array32-4g", "\xdd\xff\xff\xff\xff");
	PUT("bad-str32-4g", "\xdb\xff\xff\xff\xff");
	PUT("bad-bin32-4g", "\xc6\xff\xff\xff\xff");
	PUT("bad-ext32-4g", "\xc9\xff\xff\xff\xff\x01");
	PUT("bad-map16-64k", "\xde\xff\xff");
	PUT("bad-reserved-c1", "\x81\xa1v\xc1");
	PUT("bad-not-map-array", "\x92\x01\x02");
	PUT("bad-not-map-int", "\x05");
	PUT("bad-not-map-nil", "\xc0");
	PUT("bad-not-map-str", "\xa3req");
	/* {"v":1,"type":"request","id":"a","text": str32 4G} */
	PUT("bad-text-str32-4g", "\x84\xa1v\x01\xa4type\xa7request\xa2id\xa1" "a\xa4text\xdb\xff\xff\xff\xff");
	/* {"v":1,"type":"request","id":"a","tokens": bin32 4G} */
	PUT("bad-tokens-bin32-4g", "\x84\xa1v\x01\xa4type\xa7request\xa2id\xa1" "a\xa6tokens\xc6\xff\xff\xff\xff");
	/* tokens bin of 5 bytes (not a multiple of 4) */
	PUT("bad-tokens-bin5", "\x84\xa1v\x01\xa4type\xa7request\xa2id\xa1" "a\xa6tokens\xc4\x05\x01\x02\x03\x04\x05");
	/* {"v":1,"type":"request","id":"a","stop": array32 4G} */
	PUT("bad-stop-array32-4g", "\x84\xa1v\x01\xa4type\xa7request\xa2id\xa1" "a\xa4stop\xdd\xff\xff\xff\xff");
	/* wrong types: top_p as str, id as int, v as str, type as int, stream as int */
	PUT("bad-type-top_p", "\x85\xa1v\x01\xa4type\xa7request\xa2id\xa1" "a\xa4text\xa1x\xa5top_p\xa3" "0.9");
	PUT("bad-type-id", "\x83\xa1v\x01\xa4type\xa6\x63\x61ncel\xa2id\x07");
	PUT("bad-type-v", "\x82\xa1v\xa1\x31\xa4type\xa3\x65os");
	PUT("bad-type-type", "\x82\xa1v\x01\xa4type\x03");
	PUT("bad-type-stream", "\x85\xa1v\x01\xa4type\xa7request\xa2id\xa1" "a\xa4text\xa1x\xa6stream\x01");
	PUT("bad-version-0", "\x82\xa1v\x00\xa4type\xa3\x65os");
	PUT("bad-version-2-must", "\x84\xa1v\x02\xa4type\xa6\x63\x61ncel\xa2id\xa1q\xa4must\x91\xa7grammar");
	PUT("ok-version-2", "\x83\xa1v\x02\xa4type\xa6\x63\x61ncel\xa2id\xa1q");
	PUT("bad-unknown-type", "\x83\xa1v\x01\xa4type\xa5hello\xa2id\xa1q");
	PUT("bad-dup-key", "\x84\xa1v\x01\xa4type\xa6\x63\x61ncel\xa2id\xa1q\xa2id\xa1r");
	/* deep nesting: {"x": [[[[...]]]]} 100 levels */
	{
		uint8_t deep[110] = { 0x81, 0xa1, 'x' };
		for (int i = 0; i < 100; i++)
			deep[3 + i] = 0x91;
		deep[103] = 0x01;
		put("bad-deep-100", deep, 104);
	}
	return 0;
}
