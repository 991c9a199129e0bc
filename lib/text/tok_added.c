/* Added tokens: ids assigned as HF's AddedVocabulary::add_tokens does, two byte tries (tokens
 * matched on the raw text, and normalized tokens matched on normalized text) searched
 * leftmost-longest like the Aho-Corasick automaton HF builds, and the single_word, lstrip and
 * rstrip rules of AddedVocabulary::find_matches. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "tok_internal.h"

#define RUST_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"

static int trie_insert(struct tok_trie *tr, const char *s, size_t n, int32_t value)
{
	uint32_t node = 0;
	if (!tr->v) {
		tr->cap = 64;
		if (!(tr->v = calloc(tr->cap, sizeof *tr->v)))
			return -1;
		tr->v[0].value = -1;
		tr->n = 1;
	}
	if (!n)
		return 0;
	tr->first[(unsigned char)s[0]] = 1;
	for (size_t i = 0; i < n; i++) {
		uint32_t ch = tr->v[node].child;
		while (ch && tr->v[ch].byte != (uint8_t)s[i])
			ch = tr->v[ch].sibling;
		if (!ch) {
			if (tr->n == tr->cap) {
				struct tok_trie_node *v = realloc(tr->v, 2 * tr->cap * sizeof *v);
				if (!v)
					return -1;
				tr->v = v;
				tr->cap *= 2;
			}
			ch = (uint32_t)tr->n++;
			tr->v[ch] = (struct tok_trie_node){0, tr->v[node].child, -1, (uint8_t)s[i]};
			tr->v[node].child = ch;
		}
		node = ch;
	}
	tr->v[node].value = value;
	return 0;
}

/* Longest pattern starting at s[0]: its length, *value its index; 0 when none. */
static size_t trie_longest(const struct tok_trie *tr, const char *s, size_t n, int32_t *value)
{
	uint32_t node = 0;
	size_t best = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t ch = tr->v[node].child;
		while (ch && tr->v[ch].byte != (uint8_t)s[i])
			ch = tr->v[ch].sibling;
		if (!ch)
			break;
		node = ch;
		if (tr->v[node].value >= 0) {
			best = i + 1;
			*value = tr->v[node].value;
		}
	}
	return best;
}

fi_err tok_added_parse(struct fi_tok *t, json_t *arr)
{
	size_t i;
	json_t *v;
	uint32_t next_id = t->bpe.nvocab;
	if (!arr || json_is_null(arr))
		return FI_OK;
	if (!json_is_array(arr))
		return fi_fail(FI_EFORMAT, "added_tokens: not an array");
	if (!(t->added = calloc(json_array_size(arr) + 1, sizeof *t->added)))
		return fi_fail(FI_ENOMEM, "added_tokens");
	json_array_foreach(arr, i, v) {
		json_t *c = json_object_get(v, "content"), *id = json_object_get(v, "id");
		json_t *nm = json_object_get(v, "normalized");
		struct tok_added a = {0};
		int64_t found = -1;
		size_t k;
		if (!json_is_string(c))
			return fi_fail(FI_EFORMAT, "added_tokens[%zu]: missing content", i);
		if (!json_is_integer(id) || json_integer_value(id) < 0 ||
		    json_integer_value(id) >= (1 << 26))
			return fi_fail(FI_ERANGE, "added_tokens[%zu] '%.60s': id missing or out of range",
				       i, json_string_value(c));
		a.len = (uint32_t)json_string_length(c);
		if (!a.len)
			continue; /* HF ignores empty tokens */
		if (tok_utf8_check(json_string_value(c), a.len) != a.len)
			return fi_fail(FI_EFORMAT, "added_tokens[%zu]: content is not UTF-8", i);
		a.special = json_is_true(json_object_get(v, "special"));
		a.lstrip = json_is_true(json_object_get(v, "lstrip"));
		a.rstrip = json_is_true(json_object_get(v, "rstrip"));
		a.single_word = json_is_true(json_object_get(v, "single_word"));
		a.normalized = nm ? json_is_true(nm) : !a.special;
		/* Two entries claiming one id with different contents is a broken file. */
		for (k = 0; k < i && k < json_array_size(arr); k++) {
			json_t *o = json_array_get(arr, k);
			if (json_integer_value(json_object_get(o, "id")) == json_integer_value(id) &&
			    !json_equal(json_object_get(o, "content"), c))
				return fi_fail(FI_EFORMAT, "added_tokens: id %lld used by '%.60s' and '%.60s'",
					       (long long)json_integer_value(id),
					       json_string_value(json_object_get(o, "content")),
					       json_string_value(c));
		}
		/* The id: an added token with that content, else the model's, else the next. */
		for (k = 0; k < t->nadded; k++)
			if (t->added[k].len == a.len && !memcmp(t->added[k].content, json_string_value(c), a.len)) {
				found = t->added[k].id;
				break;
			}
		if (found < 0)
			found = tok_bpe_lookup(&t->bpe, json_string_value(c), a.len);
		if (found < 0)
			found = next_id++;
		a.id = (uint32_t)found;
		if (a.id != json_integer_value(id))
			fi_warn("added token '%.60s' was expected to have id %lld but gets id %u",
				json_string_value(c), (long long)json_integer_value(id), a.id);
		if (!(a.content = malloc(a.len + 1)))
			return fi_fail(FI_ENOMEM, "added_tokens");
		memcpy(a.content, json_string_value(c), a.len + 1);
		/* Same id again (same content): the later entry replaces the earlier. */
		for (k = 0; k < t->nadded; k++)
			if (t->added[k].id == a.id)
				break;
		if (k < t->nadded) {
			free(t->added[k].content);
			t->added[k] = a;
		} else
			t->added[t->nadded++] = a;
	}
	return FI_OK;
}

/* Normalized forms, the tries, and the id tables. */
fi_err tok_added_build(struct fi_tok *t)
{
	struct tok_ctx *c = NULL;
	fi_err e = FI_OK;
	int need_word = 0;
	uint32_t space = t->bpe.id_space;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].id + 1 > space)
			space = t->added[i].id + 1;
	t->id_space = space;
	t->added_of_id = malloc((size_t)space * sizeof *t->added_of_id + 1);
	t->special = calloc(space + 1, 1);
	if (!t->added_of_id || !t->special)
		return fi_fail(FI_ENOMEM, "added_tokens");
	for (uint32_t i = 0; i < space; i++)
		t->added_of_id[i] = -1;
	if (!trie_insert(&t->trie_raw, "", 0, -1) && !trie_insert(&t->trie_norm, "", 0, -1)) {
	} else
		return fi_fail(FI_ENOMEM, "added_tokens");
	for (size_t i = 0; i < t->nadded && !e; i++) {
		struct tok_added *a = &t->added[i];
		t->added_of_id[a->id] = (int32_t)i;
		need_word |= a->single_word;
		if (a->normalized && t->norm) {
			struct tok_buf out = {0};
			if (!c && !(c = tok_ctx_get(t))) {
				e = fi_fail(FI_ENOMEM, "added_tokens");
				break;
			}
			if ((e = tok_norm_apply(c, t->norm, a->content, a->len, &out))) {
				tok_buf_free(&out);
				break;
			}
			a->norm = out.p ? out.p : strdup("");
			a->norm_len = (uint32_t)out.n;
		}
		if (a->normalized ? trie_insert(&t->trie_norm, a->norm ? a->norm : a->content,
						a->norm ? a->norm_len : a->len, (int32_t)i)
				  : trie_insert(&t->trie_raw, a->content, a->len, (int32_t)i))
			e = fi_fail(FI_ENOMEM, "added_tokens");
	}
	if (c)
		tok_ctx_put(t, c);
	if (e)
		return e;
	/* Decoding uses an added token's normalized form when it has one, and skips a token
	 * when that string is the content of a special token (HF's simple_id_to_token and
	 * is_special_token). */
	for (size_t i = 0; i < t->nadded; i++) {
		struct tok_added *a = &t->added[i];
		int64_t m;
		if (a->norm && (a->norm_len != a->len || memcmp(a->norm, a->content, a->len))) {
			a->dec = a->norm;
			a->dec_len = a->norm_len;
		} else {
			a->dec = a->content;
			a->dec_len = a->len;
		}
		if (!a->special)
			continue;
		m = tok_bpe_lookup(&t->bpe, a->content, a->len);
		if (m >= 0 && t->added_of_id[m] < 0)
			t->special[m] = 1;
	}
	for (size_t i = 0; i < t->nadded; i++)
		for (size_t k = 0; k < t->nadded; k++)
			if (t->added[k].special && t->added[k].len == t->added[i].dec_len &&
			    !memcmp(t->added[k].content, t->added[i].dec, t->added[i].dec_len))
				t->special[t->added[i].id] = 1;
	if (need_word && !(t->re_word = tok_re_compile("[" RUST_W "]", sizeof RUST_W + 1, 0, "word")))
		return fi_errcode();
	return FI_OK;
}

void tok_added_free(struct fi_tok *t)
{
	for (size_t i = 0; i < t->nadded; i++) {
		free(t->added[i].content);
		free(t->added[i].norm);
	}
	free(t->added);
	free(t->trie_raw.v);
	free(t->trie_norm.v);
	free(t->added_of_id);
	free(t->special);
	pcre2_code_free(t->re_word);
}

static int is_word_at(const pcre2_code *re, const char *s, size_t n)
{
	pcre2_match_data *md = pcre2_match_data_create(1, NULL);
	int r = md ? pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, NULL) : -1;
	pcre2_match_data_free(md);
	return r > 0;
}

static size_t char_before(const char *s, size_t at)
{
	size_t p = at - 1;
	while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80)
		p--;
	return p;
}

static int push(struct tok_asplit **out, size_t *n, size_t *cap, uint32_t s, uint32_t e, int32_t a)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct tok_asplit *v = realloc(*out, nc * sizeof *v);
		if (!v)
			return -1;
		*out = v;
		*cap = nc;
	}
	(*out)[(*n)++] = (struct tok_asplit){s, e, a};
	return 0;
}

fi_err tok_added_find(const struct fi_tok *t, const struct tok_trie *tr, int parse_special,
		      const char *s, size_t n, struct tok_asplit **out, size_t *nout, size_t *cap)
{
	size_t start_offset = 0, pos = 0;
	*nout = 0;
	if (tr->v && tr->v[0].child) {
		while (pos < n) {
			size_t i, len = 0, ms, me;
			int32_t idx = -1;
			const struct tok_added *a;
			for (i = pos; i < n; i++)
				if (tr->first[(unsigned char)s[i]] && (len = trie_longest(tr, s + i, n - i, &idx)))
					break;
			if (!len)
				break;
			ms = i;
			me = i + len;
			pos = me;
			a = &t->added[idx];
			if (!parse_special && a->special)
				continue;
			if (a->single_word) {
				int start_space = ms == 0 || !is_word_at(t->re_word, s + char_before(s, ms), ms - char_before(s, ms));
				int stop_space = me == n || !is_word_at(t->re_word, s + me, n - me);
				if (!start_space || !stop_space)
					continue;
			}
			if (a->lstrip) {
				size_t ns = ms;
				while (ns > 0) {
					size_t p = char_before(s, ns);
					uint32_t cp;
					tok_utf8_dec(s + p, &cp);
					if (!tok_is_whitespace(cp))
						break;
					ns = p;
				}
				ms = ns > start_offset ? ns : start_offset;
			}
			if (a->rstrip)
				while (me < n) {
					uint32_t cp;
					size_t k = tok_utf8_dec(s + me, &cp);
					if (!tok_is_whitespace(cp))
						break;
					me += k;
				}
			if (start_offset < ms && push(out, nout, cap, (uint32_t)start_offset, (uint32_t)ms, -1))
				return fi_fail(FI_ENOMEM, "encode");
			if (push(out, nout, cap, (uint32_t)ms, (uint32_t)me, idx))
				return fi_fail(FI_ENOMEM, "encode");
			start_offset = me;
		}
	}
	if (start_offset != n && push(out, nout, cap, (uint32_t)start_offset, (uint32_t)n, -1))
		return fi_fail(FI_ENOMEM, "encode");
	return FI_OK;
}
