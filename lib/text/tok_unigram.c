/* Unigram model (SentencePiece's, as HF's Unigram::encode_optimized runs it): a Viterbi pass
 * over the byte offsets of a piece. At each char start every vocabulary string that starts
 * there (found by walking a byte trie) extends the best path; a char no string covers alone
 * becomes unk with score min_score - 10. Runs of unk are fused into one token, which is then
 * looked up as a string, spelled in <0xHH> bytes (byte_fallback), or unk_id.
 *
 * Scores are doubles summed in HF's order, so ties break exactly as there: a later candidate
 * must be strictly better, candidates arrive by start offset, then by length. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define TOK_MAX_ID (1u << 26)
#define UNK_PENALTY 10.0

fi_err tok_unigram_parse(json_t *m, struct tok_bpe *b)
{
	json_t *vocab = json_object_get(m, "vocab"), *v;
	size_t n, i, total = 0;
	if (!json_is_array(vocab))
		return fi_fail(FI_EFORMAT, "model Unigram: vocab is not a list");
	n = json_array_size(vocab);
	if (n > TOK_MAX_ID)
		return fi_fail(FI_ERANGE, "model Unigram: %zu vocabulary entries is too many", n);
	json_array_foreach(vocab, i, v) {
		json_t *s = json_array_get(v, 0), *sc = json_array_get(v, 1);
		if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_string(s) || !json_is_number(sc))
			return fi_fail(FI_EFORMAT, "model Unigram: vocab[%zu] is not [string, score]", i);
		total += json_string_length(s);
		if (total > UINT32_MAX)
			return fi_fail(FI_ERANGE, "model Unigram: vocabulary strings too long");
	}
	b->id_space = b->nvocab = (uint32_t)n;
	b->off = calloc(n + 1, sizeof *b->off);
	b->present = malloc(n + 1);
	b->pool = malloc(total + 1);
	b->score = malloc((n + 1) * sizeof *b->score);
	if (!b->off || !b->present || !b->pool || !b->score)
		return fi_fail(FI_ENOMEM, "model.vocab");
	memset(b->present, 1, n + 1);
	json_array_foreach(vocab, i, v) {
		json_t *s = json_array_get(v, 0);
		size_t l = json_string_length(s);
		memcpy(b->pool + b->off[i], json_string_value(s), l);
		b->off[i + 1] = b->off[i] + (uint32_t)l;
		b->score[i] = json_number_value(json_array_get(v, 1));
	}
	b->pool_len = total;
	return FI_OK;
}

static uint32_t edge_slot(const struct tok_bpe *b, uint32_t key)
{
	uint32_t i = (key * 0x9e3779b1u) >> 7 & b->emask;
	while (b->ekey[i] != key && b->ekey[i] != UINT32_MAX)
		i = (i + 1) & b->emask;
	return i;
}

/* The child of node along byte c, or 0 (the root is nobody's child). */
static uint32_t child(const struct tok_bpe *b, uint32_t node, uint8_t c)
{
	uint32_t i = edge_slot(b, node << 8 | c);
	return b->ekey[i] == UINT32_MAX ? 0 : b->eval[i];
}

static int edges_grow(struct tok_bpe *b)
{
	uint32_t n = b->emask ? 2 * (b->emask + 1) : 4096, *ok = b->ekey, *ov = b->eval, om = b->emask;
	if (!(b->ekey = malloc((size_t)n * sizeof *b->ekey)) || !(b->eval = malloc((size_t)n * sizeof *b->eval))) {
		free(b->ekey);
		b->ekey = ok, b->eval = ov;
		return -1;
	}
	memset(b->ekey, 0xff, (size_t)n * sizeof *b->ekey);
	b->emask = n - 1;
	for (uint32_t i = 0; ok && i <= om; i++)
		if (ok[i] != UINT32_MAX) {
			uint32_t j = edge_slot(b, ok[i]);
			b->ekey[j] = ok[i];
			b->eval[j] = ov[i];
		}
	free(ok);
	free(ov);
	return 0;
}

static int node_new(struct tok_bpe *b)
{
	if (b->nun == b->uidcap) {
		uint32_t cap = b->uidcap ? 2 * b->uidcap : 1024;
		int32_t *v = realloc(b->uid, (size_t)cap * sizeof *v);
		if (!v)
			return -1;
		b->uid = v;
		b->uidcap = cap;
	}
	b->uid[b->nun++] = -1;
	return 0;
}

/* The trie of the vocabulary strings and the lowest score. Only ids the string -> id map
 * keeps are inserted (a repeated string maps to its last id, as in HF). */
fi_err tok_unigram_build(struct tok_bpe *b)
{
	free(b->uid);
	free(b->ekey);
	free(b->eval);
	b->uid = NULL;
	b->ekey = b->eval = NULL;
	b->nun = b->uidcap = b->emask = b->nedge = 0;
	b->min_score = INFINITY;
	if (node_new(b) || edges_grow(b))
		return fi_fail(FI_ENOMEM, "model Unigram");
	for (uint32_t id = 0; id < b->id_space; id++) {
		const char *s = b->pool + b->off[id];
		size_t n = b->off[id + 1] - b->off[id];
		uint32_t node = 0;
		if (isnan(b->score[id]))
			return fi_fail(FI_EFORMAT, "model Unigram: vocab[%u] has a score that is not a number", id);
		if (b->score[id] < b->min_score)
			b->min_score = b->score[id];
		if (!n || tok_bpe_lookup(b, s, n) != id)
			continue;
		if (tok_utf8_check(s, n) != n)
			return fi_fail(FI_EFORMAT, "model Unigram: vocab[%u] is not UTF-8", id);
		for (size_t i = 0; i < n; i++) {
			uint32_t ch = child(b, node, (uint8_t)s[i]), slot;
			if (!ch) {
				if (b->nun >= (1u << 24) - 1)
					return fi_fail(FI_ERANGE, "model Unigram: vocabulary too large for its trie");
				if ((2 * (b->nedge + 1) > b->emask + 1 && edges_grow(b)) || node_new(b))
					return fi_fail(FI_ENOMEM, "model Unigram");
				ch = b->nun - 1;
				slot = edge_slot(b, node << 8 | (uint8_t)s[i]);
				b->ekey[slot] = node << 8 | (uint8_t)s[i];
				b->eval[slot] = ch;
				b->nedge++;
			}
			node = ch;
		}
		b->uid[node] = (int32_t)id;
	}
	return FI_OK;
}

static int reserve_best(struct tok_ctx *c, size_t n)
{
	if (n + 1 > c->bestcap) {
		size_t cap = c->bestcap ? c->bestcap : 256;
		struct tok_best *v;
		while (cap < n + 1)
			cap *= 2;
		if (!(v = realloc(c->best, cap * sizeof *v)))
			return -1;
		c->best = v;
		c->bestcap = cap;
	}
	return 0;
}

/* One token of the best path, [s, e): its id, or a fused run of unk. */
static fi_err emit(const struct tok_bpe *b, const char *s, size_t n, int fused, uint32_t id,
		   struct fi_tok_ids *out)
{
	int64_t v;
	if (fused) {
		/* HF looks the fused string up like any other token. */
		if ((v = tok_bpe_lookup(b, s, n)) >= 0)
			return tok_ids_push(out, (uint32_t)v) ? fi_fail(FI_ENOMEM, "encode") : FI_OK;
		if (b->byte_fallback) {
			size_t k;
			for (k = 0; k < n && b->byte_id[(unsigned char)s[k]] >= 0; k++)
				;
			if (k == n) {
				for (k = 0; k < n; k++)
					if (tok_ids_push(out, (uint32_t)b->byte_id[(unsigned char)s[k]]))
						return fi_fail(FI_ENOMEM, "encode");
				return FI_OK;
			}
		}
		id = (uint32_t)b->unk_id;
	}
	return tok_ids_push(out, id) ? fi_fail(FI_ENOMEM, "encode") : FI_OK;
}

fi_err tok_unigram_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
			  struct fi_tok_ids *out)
{
	struct tok_best *best;
	size_t first = out->n, at;
	uint64_t h = 0;
	int cacheable = n <= TOK_CACHE_MAX_WORD, r;
	fi_err e;
	if (cacheable) {
		h = tok_hash(s, n);
		if ((r = tok_cache_get(c, h, s, n, out)) < 0)
			return fi_fail(FI_ENOMEM, "encode");
		if (r)
			return FI_OK;
	}
	if (reserve_best(c, n))
		return fi_fail(FI_ENOMEM, "encode");
	best = c->best;
	for (size_t i = 0; i <= n; i++)
		best[i] = (struct tok_best){0.0, -1, 0};
	for (size_t st = 0; st < n;) {
		double here = best[st].score;
		size_t mblen = tok_utf8_valid_len((const unsigned char *)s + st, n - st);
		int single = 0;
		if (!mblen)
			mblen = 1; /* not reached: text is valid UTF-8 */
		/* Every vocabulary string that starts at st, shortest first. */
		for (uint32_t node = child(b, 0, (uint8_t)s[st]), k = (uint32_t)st + 1; node;
		     node = k < n ? child(b, node, (uint8_t)s[k++]) : 0) {
			int32_t id = b->uid[node];
			if (id >= 0) {
				struct tok_best *t = &best[k];
				double cand = b->score[id] + here;
				if (t->start < 0 || cand > t->score)
					*t = (struct tok_best){cand, (int32_t)st, (uint32_t)id};
				if (k - st == mblen)
					single = 1;
			}
		}
		if (!single) {
			struct tok_best *t = &best[st + mblen];
			double cand = b->min_score - UNK_PENALTY + here;
			if (b->unk_id < 0)
				return fi_fail(FI_EINVAL, "model Unigram: text needs an unknown token but the model has no unk_id");
			if (t->start < 0 || cand > t->score)
				*t = (struct tok_best){cand, (int32_t)st, (uint32_t)b->unk_id};
		}
		st += mblen;
	}
	/* The path back from the end, as segments [s, e) (match: a fused run of unk), then
	 * emitted first to last. */
	c->nsegs = 0;
	for (at = n; at > 0;) {
		size_t st = (size_t)best[at].start;
		int fused = b->unk_id >= 0 && best[at].id == (uint32_t)b->unk_id;
		if (fused)
			while (st > 0 && best[st].id == (uint32_t)b->unk_id)
				st = (size_t)best[st].start;
		if (tok_segs_push(c, (uint32_t)st, (uint32_t)at, fused))
			return fi_fail(FI_ENOMEM, "encode");
		at = st;
	}
	for (size_t i = c->nsegs; i-- > 0;) {
		const struct tok_seg *g = &c->segs[i];
		if ((e = emit(b, s + g->s, g->e - g->s, g->match, best[g->e].id, out)))
			return e;
	}
	if (cacheable)
		tok_cache_put(c, h, s, n, out->v + first, out->n - first);
	return FI_OK;
}
