/* BPE model: vocabulary and merge tables, and the merge loop.
 *
 * The merge loop is HF's: symbols in a doubly linked list, candidate merges in a binary heap
 * ordered by (rank, position); a popped merge is applied only if the pair at its position
 * still produces the same new id. O(n log n) per word, no recursion, and a per-scratch cache
 * of word -> ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define TOK_MAX_ID (1u << 26)

static uint32_t pow2_at_least(size_t n)
{
	uint32_t c = 16;
	while (c < n)
		c <<= 1;
	return c;
}

int64_t tok_bpe_lookup(const struct tok_bpe *b, const char *s, size_t n)
{
	uint32_t i;
	if (!b->slots)
		return -1;
	i = (uint32_t)tok_hash(s, n) & b->mask;
	for (;; i = (i + 1) & b->mask) {
		uint32_t v = b->slots[i], id;
		if (!v)
			return -1;
		id = v - 1;
		if (b->off[id + 1] - b->off[id] == n && !memcmp(b->pool + b->off[id], s, n))
			return id;
	}
}

static int64_t merge_find(const struct tok_bpe *b, uint32_t a, uint32_t c)
{
	uint64_t k = ((uint64_t)a << 32) | c;
	uint32_t i = (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & b->mmask;
	for (;; i = (i + 1) & b->mmask) {
		if (!b->mval[i])
			return -1;
		if (b->mkey[i] == k)
			return b->mval[i] - 1;
	}
}

/* Builds the string and merge hashes from pool/off/present and merge[]. Checks ids. */
fi_err tok_bpe_build_hashes(struct tok_bpe *b)
{
	free(b->slots);
	free(b->mkey);
	free(b->mval);
	b->max_len = 0;
	b->slots = NULL;
	b->mkey = NULL;
	b->mval = NULL;
	b->mask = pow2_at_least((size_t)b->nvocab * 2 + 1) - 1;
	b->slots = calloc((size_t)b->mask + 1, sizeof *b->slots);
	if (!b->slots)
		return fi_fail(FI_ENOMEM, "tokenizer vocab hash");
	for (uint32_t id = 0; id < b->id_space; id++) {
		uint32_t i;
		size_t n;
		if (!b->present[id])
			continue;
		n = b->off[id + 1] - b->off[id];
		if (n > b->max_len)
			b->max_len = (uint32_t)n;
		i = (uint32_t)tok_hash(b->pool + b->off[id], n) & b->mask;
		while (b->slots[i]) {
			uint32_t o = b->slots[i] - 1;
			if (b->off[o + 1] - b->off[o] == n && !memcmp(b->pool + b->off[o], b->pool + b->off[id], n))
				break;
			i = (i + 1) & b->mask;
		}
		if (b->slots[i] && b->kind != TM_UNIGRAM)
			return fi_fail(FI_EFORMAT, "model vocab: token '%.*s' appears twice",
				       (int)(n > 60 ? 60 : n), b->pool + b->off[id]);
		/* A Unigram list may repeat a string: the later id wins, as in HF's map. */
		b->slots[i] = id + 1;
	}
	b->mmask = pow2_at_least((size_t)b->nmerges * 2 + 1) - 1;
	b->mkey = malloc(((size_t)b->mmask + 1) * sizeof *b->mkey);
	b->mval = calloc((size_t)b->mmask + 1, sizeof *b->mval);
	if (!b->mkey || !b->mval)
		return fi_fail(FI_ENOMEM, "tokenizer merge hash");
	for (uint32_t r = 0; r < b->nmerges; r++) {
		uint32_t *m = b->merge + 3 * (size_t)r;
		uint64_t k = ((uint64_t)m[0] << 32) | m[1];
		uint32_t i = (uint32_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & b->mmask;
		for (int j = 0; j < 3; j++)
			if (m[j] >= b->id_space || !b->present[m[j]])
				return fi_fail(FI_ERANGE, "model merges: merge %u names id %u outside the vocab",
					       r, m[j]);
		/* A repeated pair keeps its last rank, as a HashMap built in order does. */
		while (b->mval[i] && b->mkey[i] != k)
			i = (i + 1) & b->mmask;
		b->mkey[i] = k;
		b->mval[i] = r + 1;
	}
	b->unk_id = -1;
	if (b->unk) {
		b->unk_id = tok_bpe_lookup(b, b->unk, b->unk_len);
		if (b->unk_id < 0)
			b->unk_id = -2; /* named but absent: an error only when needed, as in HF */
	}
	for (int i = 0; i < 256; i++) {
		char s[8];
		snprintf(s, sizeof s, "<0x%02X>", i);
		b->byte_id[i] = tok_bpe_lookup(b, s, 6);
	}
	return FI_OK;
}

static fi_err opt_str(json_t *m, const char *key, char **out, size_t *len)
{
	json_t *v = json_object_get(m, key);
	*out = NULL;
	*len = 0;
	if (!v || json_is_null(v))
		return FI_OK;
	if (!json_is_string(v))
		return fi_fail(FI_EFORMAT, "model.%s: not a string", key);
	*len = json_string_length(v);
	if (!(*out = malloc(*len + 1)))
		return fi_fail(FI_ENOMEM, "model.%s", key);
	memcpy(*out, json_string_value(v), *len + 1);
	return FI_OK;
}

static fi_err merge_ids(struct tok_bpe *b, size_t r, const char *a, size_t na, const char *c,
			size_t nc, struct tok_buf *tmp)
{
	int64_t ia = tok_bpe_lookup(b, a, na), ic = tok_bpe_lookup(b, c, nc), in;
	size_t pl = b->cprefix_len;
	if (ia < 0 || ic < 0)
		return fi_fail(FI_EFORMAT, "model merges: merge %zu ('%.*s %.*s') names a token not in the vocab",
			       r, (int)na, a, (int)nc, c);
	if (pl > nc)
		pl = nc;
	tmp->n = 0;
	if (tok_buf_put(tmp, a, na) || tok_buf_put(tmp, c + pl, nc - pl))
		return fi_fail(FI_ENOMEM, "model merges");
	if ((in = tok_bpe_lookup(b, tmp->p, tmp->n)) < 0)
		return fi_fail(FI_EFORMAT, "model merges: merge %zu: result '%.*s' not in the vocab", r,
			       (int)(tmp->n > 60 ? 60 : tmp->n), tmp->p);
	b->merge[3 * r] = (uint32_t)ia;
	b->merge[3 * r + 1] = (uint32_t)ic;
	b->merge[3 * r + 2] = (uint32_t)in;
	return FI_OK;
}

fi_err tok_bpe_parse_options(json_t *m, struct tok_bpe *b)
{
	fi_err e;
	if ((e = opt_str(m, "continuing_subword_prefix", &b->cprefix, &b->cprefix_len)) ||
	    (e = opt_str(m, "end_of_word_suffix", &b->eow, &b->eow_len)) ||
	    (e = opt_str(m, "unk_token", &b->unk, &b->unk_len)))
		return e;
	b->fuse_unk = json_is_true(json_object_get(m, "fuse_unk"));
	b->byte_fallback = json_is_true(json_object_get(m, "byte_fallback"));
	b->ignore_merges = json_is_true(json_object_get(m, "ignore_merges"));
	return FI_OK;
}

/* A vocabulary given as {"token": id, ...} (BPE, WordPiece, WordLevel). */
fi_err tok_vocab_parse_object(json_t *vocab, struct tok_bpe *b)
{
	json_t *v;
	const char *key;
	size_t total = 0;
	if (!json_is_object(vocab))
		return fi_fail(FI_EFORMAT, "model.vocab: missing or not an object");
	b->id_space = 0;
	json_object_foreach(vocab, key, v) {
		json_int_t id;
		if (!json_is_integer(v) || (id = json_integer_value(v)) < 0 || id >= TOK_MAX_ID)
			return fi_fail(FI_ERANGE, "model.vocab: token '%.60s': id out of range", key);
		if ((uint32_t)id + 1 > b->id_space)
			b->id_space = (uint32_t)id + 1;
		total += strlen(key);
	}
	b->nvocab = (uint32_t)json_object_size(vocab);
	b->off = calloc((size_t)b->id_space + 1, sizeof *b->off);
	b->present = calloc(b->id_space + 1, 1);
	b->pool = malloc(total + 1);
	if (!b->off || !b->present || !b->pool)
		return fi_fail(FI_ENOMEM, "model.vocab");
	/* Lengths first (keys may contain NUL: jansson keys are C strings, so they cannot). */
	json_object_foreach(vocab, key, v) {
		json_int_t id = json_integer_value(v);
		if (b->present[id])
			return fi_fail(FI_EFORMAT, "model.vocab: id %lld used twice ('%.60s')",
				       (long long)id, key);
		b->present[id] = 1;
		b->off[id + 1] = (uint32_t)strlen(key);
	}
	for (uint32_t i = 0; i < b->id_space; i++)
		b->off[i + 1] += b->off[i];
	json_object_foreach(vocab, key, v) {
		json_int_t id = json_integer_value(v);
		memcpy(b->pool + b->off[id], key, b->off[id + 1] - b->off[id]);
	}
	b->pool_len = total;
	return FI_OK;
}

fi_err tok_bpe_parse(json_t *m, struct tok_bpe *b)
{
	json_t *merges = json_object_get(m, "merges"), *v;
	size_t nm, r, idx;
	struct tok_buf tmp = {0};
	fi_err e;

	if ((e = tok_vocab_parse_object(json_object_get(m, "vocab"), b)))
		return e;
	if (!json_is_array(merges))
		return fi_fail(FI_EFORMAT, "model.merges: missing or not an array");
	if ((e = tok_bpe_parse_options(m, b)))
		return e;
	nm = json_array_size(merges);
	b->nmerges = 0;
	b->merge = NULL;
	if ((e = tok_bpe_build_hashes(b)))
		goto out;
	b->merge = malloc((nm ? nm : 1) * 3 * sizeof *b->merge);
	if (!b->merge) {
		e = fi_fail(FI_ENOMEM, "model.merges");
		goto out;
	}
	r = 0;
	json_array_foreach(merges, idx, v) {
		if (json_is_string(v)) {
			const char *s = json_string_value(v), *sp;
			size_t n = json_string_length(v);
			if (!strncmp(s, "#version", 8))
				continue;
			sp = memchr(s, ' ', n);
			if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s))) {
				e = fi_fail(FI_EFORMAT, "model.merges: merge %zu is not two tokens", idx);
				goto out;
			}
			e = merge_ids(b, r, s, (size_t)(sp - s), sp + 1, n - (size_t)(sp + 1 - s), &tmp);
		} else if (json_is_array(v) && json_array_size(v) == 2 &&
			   json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
			json_t *a = json_array_get(v, 0), *c = json_array_get(v, 1);
			e = merge_ids(b, r, json_string_value(a), json_string_length(a),
				      json_string_value(c), json_string_length(c), &tmp);
		} else {
			e = fi_fail(FI_EFORMAT, "model.merges: merge %zu is not a string or a pair", idx);
		}
		if (e)
			goto out;
		r++;
	}
	b->nmerges = (uint32_t)r;
	e = tok_bpe_build_hashes(b);
out:
	tok_buf_free(&tmp);
	return e;
}

void tok_bpe_free(struct tok_bpe *b)
{
	free(b->pool);
	free(b->off);
	free(b->present);
	free(b->slots);
	free(b->merge);
	free(b->mkey);
	free(b->mval);
	free(b->cprefix);
	free(b->eow);
	free(b->unk);
	free(b->score);
	free(b->uid);
	free(b->ekey);
	free(b->eval);
	memset(b, 0, sizeof *b);
}

/* ---- word cache ---- */

int tok_cache_get(struct tok_ctx *c, uint64_t h, const char *s, size_t n, struct fi_tok_ids *out)
{
	uint32_t i = (uint32_t)h & (TOK_CACHE_SLOTS - 1);
	for (;; i = (i + 1) & (TOK_CACHE_SLOTS - 1)) {
		struct tok_cache_ent *e;
		if (!c->cslot[i])
			return 0;
		e = &c->cent[c->cslot[i] - 1];
		if (e->h == h && e->klen == n && !memcmp(c->ckeys.p + e->koff, s, n)) {
			for (uint32_t k = 0; k < e->vn; k++)
				if (tok_ids_push(out, c->cids[e->voff + k]))
					return -1;
			return 1;
		}
	}
}

void tok_cache_put(struct tok_ctx *c, uint64_t h, const char *s, size_t n, const uint32_t *ids,
		   size_t nids)
{
	uint32_t i;
	if (c->cn >= TOK_CACHE_SLOTS / 2 || c->ckeys.n > (8u << 20)) {
		memset(c->cslot, 0, TOK_CACHE_SLOTS * sizeof *c->cslot);
		c->cn = 0;
		c->ckeys.n = 0;
		c->cidn = 0;
	}
	if (c->cidn + nids > c->cidcap) {
		size_t cap = c->cidcap ? c->cidcap : 4096;
		uint32_t *v;
		while (cap < c->cidn + nids)
			cap *= 2;
		if (!(v = realloc(c->cids, cap * sizeof *v)))
			return;
		c->cids = v;
		c->cidcap = cap;
	}
	if (tok_buf_reserve(&c->ckeys, n))
		return;
	c->cent[c->cn] = (struct tok_cache_ent){h, (uint32_t)c->ckeys.n, (uint32_t)n,
						 (uint32_t)c->cidn, (uint32_t)nids};
	tok_buf_put(&c->ckeys, s, n);
	memcpy(c->cids + c->cidn, ids, nids * sizeof *ids);
	c->cidn += nids;
	i = (uint32_t)h & (TOK_CACHE_SLOTS - 1);
	while (c->cslot[i])
		i = (i + 1) & (TOK_CACHE_SLOTS - 1);
	c->cslot[i] = (uint32_t)++c->cn;
}

/* ---- heap of candidate merges: smallest rank first, then leftmost ---- */

static int ev_less(const struct tok_merge_ev *a, const struct tok_merge_ev *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct tok_merge_ev *h, size_t *n, struct tok_merge_ev e)
{
	size_t i = (*n)++;
	while (i) {
		size_t p = (i - 1) / 2;
		if (!ev_less(&e, &h[p]))
			break;
		h[i] = h[p];
		i = p;
	}
	h[i] = e;
}

static struct tok_merge_ev heap_pop(struct tok_merge_ev *h, size_t *n)
{
	struct tok_merge_ev top = h[0], last = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		const struct tok_merge_ev *best = &last;
		if (l < *n && ev_less(&h[l], best)) {
			m = l;
			best = &h[l];
		}
		if (l + 1 < *n && ev_less(&h[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		h[i] = h[m];
		i = m;
	}
	if (*n)
		h[i] = last;
	return top;
}

static int push_merge(struct tok_ctx *c, const struct tok_bpe *b, size_t *hn, uint32_t pos)
{
	struct tok_sym *s = c->sym;
	int64_t r;
	if (s[pos].next < 0)
		return 0;
	r = merge_find(b, s[pos].c, s[s[pos].next].c);
	if (r >= 0)
		heap_push(c->heap, hn, (struct tok_merge_ev){(uint32_t)r, pos, b->merge[3 * r + 2]});
	return 0;
}

static int add_sym(struct tok_ctx *c, size_t *ns, uint32_t id, uint32_t len)
{
	if (*ns == c->symcap) {
		size_t cap = c->symcap ? c->symcap * 2 : 256;
		struct tok_sym *v = realloc(c->sym, cap * sizeof *v);
		struct tok_merge_ev *h = realloc(c->heap, 2 * cap * sizeof *h);
		if (v)
			c->sym = v;
		if (h)
			c->heap = h;
		if (!v || !h)
			return -1;
		c->symcap = cap;
		c->heapcap = 2 * cap;
	}
	c->sym[*ns] = (struct tok_sym){id, (int32_t)*ns - 1, (int32_t)*ns + 1, len};
	(*ns)++;
	return 0;
}

fi_err tok_bpe_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
		      struct fi_tok_ids *out)
{
	size_t ns = 0, hn = 0, i = 0, first_out = out->n;
	int64_t unk = -1;
	uint32_t unk_len = 0;
	uint64_t h = 0;
	int cacheable = n <= TOK_CACHE_MAX_WORD;

	if (!n)
		return FI_OK;
	if (b->ignore_merges) {
		int64_t id = tok_bpe_lookup(b, s, n);
		if (id >= 0)
			return tok_ids_push(out, (uint32_t)id) ? fi_fail(FI_ENOMEM, "encode") : FI_OK;
	}
	if (cacheable) {
		int r;
		h = tok_hash(s, n);
		if ((r = tok_cache_get(c, h, s, n, out)) < 0)
			return fi_fail(FI_ENOMEM, "encode");
		if (r)
			return FI_OK;
	}
	while (i < n) {
		size_t k = tok_utf8_valid_len((const unsigned char *)s + i, n - i);
		int first = i == 0, last = i + k >= n;
		const char *w = s + i;
		size_t wn = k;
		int64_t id;
		if (!k)
			k = wn = 1; /* not reached: text is valid UTF-8 */
		if ((!first && b->cprefix) || (last && b->eow)) {
			c->tmp.n = 0;
			if ((!first && b->cprefix && tok_buf_put(&c->tmp, b->cprefix, b->cprefix_len)) ||
			    tok_buf_put(&c->tmp, s + i, k) ||
			    (last && b->eow && tok_buf_put(&c->tmp, b->eow, b->eow_len)))
				return fi_fail(FI_ENOMEM, "encode");
			w = c->tmp.p;
			wn = c->tmp.n;
		}
		id = tok_bpe_lookup(b, w, wn);
		if (id >= 0) {
			if (unk >= 0 && add_sym(c, &ns, (uint32_t)unk, unk_len))
				return fi_fail(FI_ENOMEM, "encode");
			unk = -1;
			if (add_sym(c, &ns, (uint32_t)id, (uint32_t)k))
				return fi_fail(FI_ENOMEM, "encode");
		} else {
			int done = 0;
			if (b->byte_fallback) {
				size_t j;
				for (j = 0; j < wn && b->byte_id[(unsigned char)w[j]] >= 0; j++)
					;
				if (j == wn) {
					for (j = 0; j < wn; j++)
						if (add_sym(c, &ns, (uint32_t)b->byte_id[(unsigned char)w[j]], 1))
							return fi_fail(FI_ENOMEM, "encode");
					done = 1;
				}
			}
			if (!done && b->unk_id != -1) {
				if (b->unk_id == -2)
					return fi_fail(FI_EFORMAT, "model.unk_token is not in the vocab");
				if (unk >= 0 && b->fuse_unk) {
					unk_len += (uint32_t)k;
				} else {
					if (unk >= 0 && add_sym(c, &ns, (uint32_t)unk, unk_len))
						return fi_fail(FI_ENOMEM, "encode");
					unk = b->unk_id;
					unk_len = (uint32_t)k;
				}
			}
		}
		i += k;
	}
	if (unk >= 0 && add_sym(c, &ns, (uint32_t)unk, unk_len))
		return fi_fail(FI_ENOMEM, "encode");
	if (!ns)
		return FI_OK;
	c->sym[ns - 1].next = -1;
	for (size_t p = 0; p + 1 < ns; p++)
		push_merge(c, b, &hn, (uint32_t)p);
	while (hn) {
		struct tok_merge_ev top = heap_pop(c->heap, &hn);
		struct tok_sym *sy = c->sym, *cur = &sy[top.pos];
		int32_t nx;
		int64_t r;
		if (!cur->len || cur->next < 0)
			continue;
		nx = cur->next;
		r = merge_find(b, cur->c, sy[nx].c);
		if (r < 0 || b->merge[3 * r + 2] != top.new_id)
			continue;
		cur->c = top.new_id;
		cur->len += sy[nx].len;
		cur->next = sy[nx].next;
		sy[nx].len = 0;
		if (cur->next >= 0)
			sy[cur->next].prev = (int32_t)top.pos;
		/* Each merge adds at most two entries; the heap holds at most 2 * symbols. */
		if (hn + 2 > c->heapcap) {
			struct tok_merge_ev *hh = realloc(c->heap, 2 * c->heapcap * sizeof *hh);
			if (!hh)
				return fi_fail(FI_ENOMEM, "encode");
			c->heap = hh;
			c->heapcap *= 2;
		}
		if (cur->prev >= 0)
			push_merge(c, b, &hn, (uint32_t)cur->prev);
		push_merge(c, b, &hn, top.pos);
	}
	for (size_t p = 0; p < ns; p++)
		if (c->sym[p].len && tok_ids_push(out, c->sym[p].c))
			return fi_fail(FI_ENOMEM, "encode");
	if (cacheable)
		tok_cache_put(c, h, s, n, out->v + first_out, out->n - first_out);
	return FI_OK;
}
