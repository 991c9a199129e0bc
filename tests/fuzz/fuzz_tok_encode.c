/* Fuzz target: encode, decode and streaming decode of arbitrary bytes with three built-in
 * tokenizers (byte-level with the Llama-3 split regex and added tokens; SentencePiece-style
 * BPE with byte fallback, NFKC and Metaspace; a Unigram with byte fallback behind
 * BertNormalizer, StripAccents, Nmt and Metaspace, decoded by the SentencePiece
 * * decoders). The first byte picks the tokenizer (bits 0 and 4) and the flags (bits 1-3).
 * Checks: a byte-level tokenizer decodes its own encoding back to the (UTF-8-repaired)
 * input, and the streamed pieces put together equal the whole decode.
 *
 * Streaming re-decodes its window at every id until the text stops ending in U+FFFD (as HF's
 * DecodeStream does), so a run of byte-fallback ids costs time quadratic in its length; the
 * stream check covers the first STREAM_IDS ids or so, which keeps the target at thousands of
 * executions a second instead of tens. The cut never falls inside the bytes of one char
 * spelled in <0xHH> ids: the ByteFallback decoder turns a whole run that is not UTF-8 into
 * U+FFFD, so a cut there would change the text before it. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

#define STREAM_IDS 48

static struct fi_tok *tk[3];

/* Unigram: the 26 letters and a few words with scores, <0xHH> for every byte. */
static struct fi_tok *build_unigram(void)
{
	json_t *root, *vocab = json_array();
	json_error_t je;
	struct fi_tok *t = NULL;
	char s[16], *txt;
	const char *pipe =
		"{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"BertNormalizer\",\"clean_text\":true,"
		"\"handle_chinese_chars\":true,\"strip_accents\":null,\"lowercase\":true},{\"type\":\"StripAccents\"},"
		"{\"type\":\"Nmt\"}]},\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
		"\"prepend_scheme\":\"always\",\"split\":true},\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
		"{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\"},"
		"{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]},\"added_tokens\":[{\"id\":1,\"content\":\"</s>\","
		"\"special\":true,\"normalized\":false}]}";
	static const char *words[] = {"\xe2\x96\x81", "\xe2\x96\x81" "the", "the", "he", "\xe2\x96\x81" "a", "ing", "\xe2\x96\x81" "caf"};
	if (!(root = json_loads(pipe, 0, &je)))
		abort();
	json_array_append_new(vocab, json_pack("[sf]", "<unk>", 0.0));
	json_array_append_new(vocab, json_pack("[sf]", "</s>", 0.0));
	for (int c = 'a'; c <= 'z'; c++) {
		s[0] = (char)c, s[1] = 0;
		json_array_append_new(vocab, json_pack("[sf]", s, -3.0 - (c % 7) * 0.25));
	}
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		json_array_append_new(vocab, json_pack("[sf]", words[i], -1.0 - 0.5 * (double)i));
	for (int b = 0; b < 256; b++) {
		snprintf(s, sizeof s, "<0x%02X>", b);
		json_array_append_new(vocab, json_pack("[sf]", s, -20.0));
	}
	json_object_set_new(root, "model", json_pack("{s:s,s:i,s:b,s:o}", "type", "Unigram", "unk_id", 0,
						     "byte_fallback", 1, "vocab", vocab));
	txt = json_dumps(root, JSON_COMPACT);
	if (!txt || fi_tok_load_json(txt, strlen(txt), &t))
		abort();
	free(txt);
	json_decref(root);
	return t;
}

/* A <0xHH> id for a UTF-8 continuation byte (0x80-0xBF). */
static int is_continuation(const struct fi_tok *t, uint32_t id)
{
	size_t n;
	const char *s = fi_tok_id_to_token(t, id, &n);
	return s && n == 6 && !memcmp(s, "<0x", 3) && (s[3] == '8' || s[3] == '9' || s[3] == 'A' || s[3] == 'B');
}

static size_t enc_utf8(uint32_t cp, char *o)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	o[0] = (char)(0xc0 | (cp >> 6));
	o[1] = (char)(0x80 | (cp & 0x3f));
	return 2;
}

static struct fi_tok *build(int sp)
{
	json_t *root = json_object(), *model = json_object(), *vocab = json_object(), *merges = json_array();
	const char *pipe_bl =
		"{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
		"\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
		"\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
		"\"decoder\":{\"type\":\"ByteLevel\"},\"added_tokens\":[{\"id\":259,\"content\":\"<|x|>\",\"special\":true,"
		"\"normalized\":false},{\"id\":260,\"content\":\"ab\",\"single_word\":true,\"lstrip\":true,\"rstrip\":true,"
		"\"normalized\":false,\"special\":false}]}";
	const char *pipe_sp =
		"{\"normalizer\":{\"type\":\"NFKC\"},\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
		"\"prepend_scheme\":\"first\",\"split\":true},\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":"
		"[{\"SpecialToken\":{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":{\"ids\":[1]}}},"
		"\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
		"\"prepend_scheme\":\"first\"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]},"
		"\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true,\"normalized\":true}]}";
	json_error_t je;
	json_t *pipe = json_loads(sp ? pipe_sp : pipe_bl, 0, &je);
	char *txt;
	struct fi_tok *t = NULL;
	int id = 0;
	if (!pipe)
		abort();
	json_object_update(root, pipe);
	json_decref(pipe);
	if (sp) {
		char s[16];
		json_object_set_new(vocab, "<unk>", json_integer(id++));
		json_object_set_new(vocab, "<s>", json_integer(id++));
		for (int b = 0; b < 256; b++) {
			snprintf(s, sizeof s, "<0x%02X>", b);
			json_object_set_new(vocab, s, json_integer(id++));
		}
		for (const char *w = "\xe2\x96\x81" "abcdeilnorst"; *w; w++) {
			if ((unsigned char)*w >= 0x80) {
				json_object_set_new(vocab, "\xe2\x96\x81", json_integer(id++));
				w += 2;
				continue;
			}
			s[0] = *w, s[1] = 0;
			json_object_set_new(vocab, s, json_integer(id++));
		}
		json_object_set_new(vocab, "\xe2\x96\x81t", json_integer(id++));
		json_object_set_new(vocab, "he", json_integer(id++));
		json_object_set_new(vocab, "\xe2\x96\x81the", json_integer(id++));
		json_array_append_new(merges, json_string("\xe2\x96\x81 t"));
		json_array_append_new(merges, json_string("h e"));
		json_object_set_new(vocab, "h", json_integer(id++));
		json_array_append_new(merges, json_string("\xe2\x96\x81t he"));
		json_object_set_new(model, "unk_token", json_string("<unk>"));
		json_object_set_new(model, "byte_fallback", json_true());
		json_object_set_new(model, "fuse_unk", json_true());
	} else {
		/* The 256 byte-level characters, then a few merges. */
		uint32_t n = 0;
		for (int b = 0; b < 256; b++) {
			char s[4] = {0};
			uint32_t cp = ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae) ? (uint32_t)b : 256 + n++;
			enc_utf8(cp, s);
			json_object_set_new(vocab, s, json_integer(id++));
		}
		json_object_set_new(vocab, "th", json_integer(id++));
		json_object_set_new(vocab, "the", json_integer(id++));
		json_object_set_new(vocab, "\xc4\xa0t", json_integer(id++));
		json_array_append_new(merges, json_string("t h"));
		json_array_append_new(merges, json_string("th e"));
		json_array_append_new(merges, json_string("\xc4\xa0 t"));
		json_object_set_new(model, "ignore_merges", json_true());
	}
	json_object_set_new(model, "type", json_string("BPE"));
	json_object_set_new(model, "vocab", vocab);
	json_object_set_new(model, "merges", merges);
	json_object_set_new(root, "model", model);
	txt = json_dumps(root, JSON_COMPACT);
	if (!txt || fi_tok_load_json(txt, strlen(txt), &t))
		abort();
	free(txt);
	json_decref(root);
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fi_tok *t;
	struct fi_tok_ids ids = {0};
	struct fi_tok_stream *st;
	unsigned flags;
	char *d = NULL, *cat = NULL, *sd = NULL;
	size_t dn = 0, cn = 0, sdn = 0, sn;
	const char *pc;
	size_t pn;
	if (!tk[0]) {
		tk[0] = build(0);
		tk[1] = build(1);
		tk[2] = build_unigram();
	}
	if (!size || size > (1 << 16))
		return 0;
	t = tk[(data[0] & 1) + ((data[0] & 16) && (data[0] & 1) == 0 ? 2 : 0)];
	flags = FI_TOK_REPLACE_INVALID | ((data[0] & 2) ? FI_TOK_ADD_SPECIAL : 0) | ((data[0] & 4) ? FI_TOK_PARSE_SPECIAL : 0);
	if (fi_tok_encode(t, (const char *)data + 1, size - 1, flags, &ids))
		abort();
	if (fi_tok_decode(t, ids.v, ids.n, (data[0] & 8) ? FI_TOK_SKIP_SPECIAL : 0, &d, &dn))
		abort();
	/* Byte-level: decode(encode(x)) == x for valid UTF-8 x when no added token strips. */
	if (t == tk[0] && !(data[0] & 8) && !memchr(data + 1, 'a', size - 1)) {
		int valid = 1;
		struct fi_tok_ids tmp = {0};
		if (fi_tok_encode(t, (const char *)data + 1, size - 1, 0, &tmp) == FI_EINVAL)
			valid = 0;
		fi_tok_ids_free(&tmp);
		if (valid && (dn != size - 1 || memcmp(d, data + 1, dn)))
			abort();
	}
	sn = ids.n < STREAM_IDS ? ids.n : STREAM_IDS;
	while (sn < ids.n && is_continuation(t, ids.v[sn]))
		sn++;
	if (fi_tok_decode(t, ids.v, sn, (data[0] & 8) ? FI_TOK_SKIP_SPECIAL : 0, &sd, &sdn))
		abort();
	if (fi_tok_stream_new(t, (data[0] & 8) ? FI_TOK_SKIP_SPECIAL : 0, &st))
		abort();
	cat = malloc(sdn + 4 * sn + 16);
	for (size_t i = 0; i < sn; i++) {
		if (fi_tok_stream_step(st, ids.v[i], &pc, &pn))
			abort();
		memcpy(cat + cn, pc, pn);
		cn += pn;
	}
	if (fi_tok_stream_flush(st, &pc, &pn))
		abort();
	memcpy(cat + cn, pc, pn);
	cn += pn;
	if (cn != sdn || memcmp(cat, sd, sdn))
		abort();
	fi_tok_stream_free(st);
	free(cat);
	free(sd);
	free(d);
	fi_tok_ids_free(&ids);
	return 0;
}
