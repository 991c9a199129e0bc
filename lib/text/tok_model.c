/* The model section of tokenizer.json: which of the four kinds it is (from "type", or from
 * the fields as HF's untagged fallback decides for older files), its options, and the
 * WordPiece and WordLevel models (BPE is tok_bpe.c, Unigram tok_unigram.c). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char *KIND[] = {"BPE", "Unigram", "WordPiece", "WordLevel"};

const char *tok_model_kind_name(int kind)
{
	return kind >= 0 && kind < 4 ? KIND[kind] : "?";
}

fi_err tok_model_kind(json_t *m, int *kind)
{
	json_t *type = json_object_get(m, "type"), *vocab = json_object_get(m, "vocab");
	if (!json_is_object(m))
		return fi_fail(FI_EFORMAT, "tokenizer.json: missing model");
	if (type) {
		const char *s = json_is_string(type) ? json_string_value(type) : "";
		for (int k = 0; k < 4; k++)
			if (!strcmp(s, KIND[k])) {
				*kind = k;
				return FI_OK;
			}
		return fi_fail(FI_EUNSUPPORTED, "model type '%s' is not supported (BPE, Unigram, WordPiece, WordLevel)",
			       json_is_string(type) ? s : "?");
	}
	/* No "type": HF tries BPE, WordPiece, WordLevel, Unigram in turn; each takes the
	 * object when the fields it requires are there. */
	if (json_is_object(vocab) && json_object_get(m, "merges"))
		*kind = TM_BPE;
	else if (json_is_object(vocab) && json_object_get(m, "unk_token") &&
		 json_object_get(m, "continuing_subword_prefix") && json_object_get(m, "max_input_chars_per_word"))
		*kind = TM_WORDPIECE;
	else if (json_is_object(vocab) && json_object_get(m, "unk_token"))
		*kind = TM_WORDLEVEL;
	else if (json_is_array(vocab))
		*kind = TM_UNIGRAM;
	else
		return fi_fail(FI_EFORMAT, "model: no \"type\", and the fields match no model kind");
	return FI_OK;
}

static fi_err need_str(json_t *m, const char *key, const char *kind)
{
	if (!json_is_string(json_object_get(m, key)))
		return fi_fail(FI_EFORMAT, "model %s: '%s' missing or not a string", kind, key);
	return FI_OK;
}

fi_err tok_model_finish(json_t *m, struct tok_bpe *b)
{
	json_t *v;
	fi_err e;
	switch (b->kind) {
	case TM_BPE:
		if ((e = tok_bpe_parse_options(m, b)))
			return e;
		return tok_bpe_build_hashes(b);
	case TM_WORDPIECE:
		if ((e = need_str(m, "unk_token", "WordPiece")) || (e = need_str(m, "continuing_subword_prefix", "WordPiece")))
			return e;
		v = json_object_get(m, "max_input_chars_per_word");
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return fi_fail(FI_EFORMAT, "model WordPiece: bad max_input_chars_per_word");
		b->max_chars = json_integer_value(v) > UINT32_MAX ? UINT32_MAX : (uint32_t)json_integer_value(v);
		__attribute__((fallthrough)); /* the same string options */
	case TM_WORDLEVEL:
		if ((e = need_str(m, "unk_token", KIND[b->kind])))
			return e;
		if ((e = tok_bpe_parse_options(m, b)))
			return e;
		if (b->kind == TM_WORDLEVEL) {
			free(b->cprefix); /* WordLevel has no subwords */
			b->cprefix = NULL;
			b->cprefix_len = 0;
		}
		b->fuse_unk = b->byte_fallback = b->ignore_merges = 0;
		free(b->eow);
		b->eow = NULL;
		b->eow_len = 0;
		return tok_bpe_build_hashes(b);
	case TM_UNIGRAM:
		if ((e = tok_bpe_build_hashes(b)))
			return e;
		v = json_object_get(m, "unk_id");
		b->unk_id = -1;
		if (v && !json_is_null(v)) {
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return fi_fail(FI_EFORMAT, "model Unigram: bad unk_id");
			if (!b->nvocab)
				return fi_fail(FI_EFORMAT, "model Unigram: the vocabulary is empty but unk_id is set");
			if (json_integer_value(v) >= b->id_space)
				return fi_fail(FI_ERANGE, "model Unigram: unk_id %lld is outside the vocabulary (%u)",
					       (long long)json_integer_value(v), b->id_space);
			b->unk_id = json_integer_value(v);
		}
		v = json_object_get(m, "byte_fallback");
		if (v && !json_is_boolean(v))
			return fi_fail(FI_EFORMAT, "model Unigram: byte_fallback is not a boolean");
		b->byte_fallback = json_is_true(v);
		return tok_unigram_build(b);
	}
	return fi_fail(FI_EINVAL, "model kind %d", b->kind);
}

fi_err tok_model_parse(json_t *m, struct tok_bpe *b)
{
	fi_err e;
	if ((e = tok_model_kind(m, &b->kind)))
		return e;
	switch (b->kind) {
	case TM_BPE:
		return tok_bpe_parse(m, b);
	case TM_UNIGRAM:
		if ((e = tok_unigram_parse(m, b)))
			return e;
		break;
	default:
		if ((e = tok_vocab_parse_object(json_object_get(m, "vocab"), b)))
			return e;
		break;
	}
	return tok_model_finish(m, b);
}

/* WordLevel: the whole piece, else unk_token. */
static fi_err wordlevel(const struct tok_bpe *b, const char *s, size_t n, struct fi_tok_ids *out)
{
	int64_t id = tok_bpe_lookup(b, s, n);
	if (id < 0 && (id = b->unk_id) < 0)
		return fi_fail(FI_EFORMAT, "model WordLevel: unk_token '%.60s' is not in the vocabulary", b->unk);
	return tok_ids_push(out, (uint32_t)id) ? fi_fail(FI_ENOMEM, "encode") : FI_OK;
}

/* WordPiece (HF WordPiece::tokenize): greedy longest match from the left, later pieces with
 * the continuing prefix; a word with a piece that matches nothing, or longer than
 * max_input_chars_per_word chars, is one unk_token. */
fi_err tok_wordpiece_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
			    struct fi_tok_ids *out)
{
	size_t start = 0, chars = 0, first = out->n;
	for (size_t i = 0; i < n; i++)
		chars += ((unsigned char)s[i] & 0xc0) != 0x80;
	if (chars <= b->max_chars) {
		while (start < n) {
			/* Strings longer than the longest vocabulary entry cannot match. */
			size_t lim = b->max_len + (start ? 0 : b->cprefix_len), end = n;
			int64_t id = -1;
			if (lim < end - start) {
				end = start + lim;
				while (end > start && ((unsigned char)s[end] & 0xc0) == 0x80)
					end--;
			}
			for (; end > start; end--) {
				if (end < n && ((unsigned char)s[end] & 0xc0) == 0x80)
					continue;
				if (start) {
					c->tmp.n = 0;
					if (tok_buf_put(&c->tmp, b->cprefix, b->cprefix_len) ||
					    tok_buf_put(&c->tmp, s + start, end - start))
						return fi_fail(FI_ENOMEM, "encode");
					id = tok_bpe_lookup(b, c->tmp.p, c->tmp.n);
				} else
					id = tok_bpe_lookup(b, s, end);
				if (id >= 0)
					break;
			}
			if (id < 0)
				break;
			if (tok_ids_push(out, (uint32_t)id))
				return fi_fail(FI_ENOMEM, "encode");
			start = end;
		}
		if (start >= n)
			return FI_OK;
	}
	out->n = first;
	if (b->unk_id < 0)
		return fi_fail(FI_EFORMAT, "model WordPiece: unk_token '%.60s' is not in the vocabulary", b->unk);
	return tok_ids_push(out, (uint32_t)b->unk_id) ? fi_fail(FI_ENOMEM, "encode") : FI_OK;
}

fi_err tok_model_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
			struct fi_tok_ids *out)
{
	if (!n)
		return FI_OK;
	switch (b->kind) {
	case TM_UNIGRAM:
		return tok_unigram_encode(c, b, s, n, out);
	case TM_WORDPIECE:
		return tok_wordpiece_encode(c, b, s, n, out);
	case TM_WORDLEVEL:
		return wordlevel(b, s, n, out);
	}
	return tok_bpe_encode(c, b, s, n, out);
}
