/* Decoding: decoder chain (ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder,
 * WordPiece, CTC, Sequence) over token strings, and streaming decode (HF's DecodeStream). */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

pcre2_code *tok_pattern_compile(json_t *pat, const char *what);

#define dlist tok_dlist

static int dl_add(struct dlist *l, const char *s, size_t n)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 32;
		uint32_t *v = realloc(l->end, cap * sizeof *v);
		if (!v)
			return -1;
		l->end = v;
		l->cap = cap;
	}
	if (tok_buf_put(&l->b, s, n))
		return -1;
	l->end[l->n++] = (uint32_t)l->b.n;
	return 0;
}

/* Appends to the last string (a new one when empty). */
static int dl_cat(struct dlist *l, const char *s, size_t n)
{
	if (tok_buf_put(&l->b, s, n))
		return -1;
	l->end[l->n - 1] = (uint32_t)l->b.n;
	return 0;
}

#define DL_S(l, i) ((l)->b.p + ((i) ? (l)->end[(i) - 1] : 0))
#define DL_N(l, i) ((l)->end[i] - ((i) ? (l)->end[(i) - 1] : 0))

fi_err tok_dec_parse(json_t *j, struct tok_dec *d, int depth)
{
	json_t *t = json_object_get(j, "type");
	const char *ty = json_is_string(t) ? json_string_value(t) : NULL;
	memset(d, 0, sizeof *d);
	if (depth > TOK_MAX_DEPTH)
		return fi_fail(FI_EFORMAT, "decoder: nested deeper than %d", TOK_MAX_DEPTH);
	if (!ty)
		return fi_fail(FI_EFORMAT, "decoder: not an object with a type");
	if (!strcmp(ty, "Sequence")) {
		json_t *a = json_object_get(j, "decoders"), *v;
		size_t i;
		d->type = TD_SEQ;
		if (!json_is_array(a))
			return fi_fail(FI_EFORMAT, "decoder Sequence: 'decoders' is not an array");
		if (!(d->sub = calloc(json_array_size(a) + 1, sizeof *d->sub)))
			return fi_fail(FI_ENOMEM, "decoder");
		json_array_foreach(a, i, v) {
			fi_err e = tok_dec_parse(v, &d->sub[i], depth + 1);
			d->nsub = i + 1;
			if (e)
				return e;
		}
	} else if (!strcmp(ty, "ByteLevel"))
		d->type = TD_BYTELEVEL;
	else if (!strcmp(ty, "ByteFallback"))
		d->type = TD_BYTEFALLBACK;
	else if (!strcmp(ty, "Fuse"))
		d->type = TD_FUSE;
	else if (!strcmp(ty, "Strip")) {
		json_t *c = json_object_get(j, "content"), *a = json_object_get(j, "start"),
		       *b = json_object_get(j, "stop");
		d->type = TD_STRIP;
		if (!json_is_string(c) || !json_string_length(c) || !json_is_integer(a) || !json_is_integer(b) ||
		    json_integer_value(a) < 0 || json_integer_value(b) < 0 || json_integer_value(a) > 1 << 20 ||
		    json_integer_value(b) > 1 << 20)
			return fi_fail(FI_EFORMAT, "decoder Strip: bad content/start/stop");
		tok_utf8_dec(json_string_value(c), &d->ch);
		d->start = (int)json_integer_value(a);
		d->stop = (int)json_integer_value(b);
	} else if (!strcmp(ty, "Replace")) {
		json_t *c = json_object_get(j, "content");
		d->type = TD_REPLACE;
		if (!json_is_string(c))
			return fi_fail(FI_EFORMAT, "decoder Replace: missing content");
		d->slen = json_string_length(c);
		if (!(d->s = malloc(d->slen + 1)))
			return fi_fail(FI_ENOMEM, "decoder");
		memcpy(d->s, json_string_value(c), d->slen + 1);
		if (!(d->re = tok_pattern_compile(json_object_get(j, "pattern"), "decoder Replace")))
			return fi_errcode();
	} else if (!strcmp(ty, "Metaspace")) {
		json_t *r = json_object_get(j, "replacement"), *ps = json_object_get(j, "prepend_scheme");
		d->type = TD_METASPACE;
		if (!json_is_string(r) || !json_string_length(r))
			return fi_fail(FI_EFORMAT, "decoder Metaspace: bad replacement");
		tok_utf8_dec(json_string_value(r), &d->ch);
		d->prepend = 1;
		if ((json_is_string(ps) && !strcmp(json_string_value(ps), "never")) ||
		    json_is_false(json_object_get(j, "add_prefix_space")))
			d->prepend = 0;
	} else if (!strcmp(ty, "BPEDecoder") || !strcmp(ty, "WordPiece") || !strcmp(ty, "CTC")) {
		/* HF defaults: suffix "</w>"; prefix "##", cleanup; "<pad>", "|", cleanup */
		const char *k1 = *ty == 'B' ? "suffix" : *ty == 'W' ? "prefix" : "pad_token";
		const char *d1 = *ty == 'B' ? "</w>" : *ty == 'W' ? "##" : "<pad>";
		json_t *v1 = json_object_get(j, k1), *v2 = json_object_get(j, "word_delimiter_token");
		json_t *cl = json_object_get(j, "cleanup");
		d->type = *ty == 'B' ? TD_BPE : *ty == 'W' ? TD_WORDPIECE : TD_CTC;
		if ((v1 && !json_is_string(v1)) || (v2 && !json_is_string(v2)) || (cl && !json_is_boolean(cl)))
			return fi_fail(FI_EFORMAT, "decoder %s: bad field", ty);
		d->cleanup = *ty == 'B' ? 0 : cl ? json_is_true(cl) : 1; /* BPEDecoder has none */
		d->slen = v1 ? json_string_length(v1) : strlen(d1);
		d->s2len = v2 ? json_string_length(v2) : 1;
		if (!(d->s = malloc(d->slen + 1)) || !(d->s2 = malloc(d->s2len + 1)))
			return fi_fail(FI_ENOMEM, "decoder");
		memcpy(d->s, v1 ? json_string_value(v1) : d1, d->slen + 1);
		memcpy(d->s2, v2 ? json_string_value(v2) : "|", d->s2len + 1);
	} else
		return fi_fail(FI_EUNSUPPORTED, "decoder '%s' is not supported", ty);
	return FI_OK;
}

void tok_dec_free(struct tok_dec *d)
{
	for (size_t i = 0; i < d->nsub; i++)
		tok_dec_free(&d->sub[i]);
	free(d->sub);
	free(d->s);
	free(d->s2);
	pcre2_code_free(d->re);
}

/* HF wordpiece::cleanup: spaces before punctuation and English contractions. */
static int cleanup(struct tok_buf *a, struct tok_buf *b)
{
	static const char *rep[][2] = {{" .", "."},    {" ?", "?"},     {" !", "!"},    {" ,", ","},
				       {" ' ", "'"},   {" n't", "n't"}, {" 'm", "'m"},  {" do not", " don't"},
				       {" 's", "'s"},  {" 've", "'ve"}, {" 're", "'re"}};
	for (size_t i = 0; i < sizeof rep / sizeof rep[0]; i++) {
		struct tok_buf t;
		b->n = 0;
		if (tok_replace_all(a->p ? a->p : "", a->n, rep[i][0], strlen(rep[i][0]), rep[i][1],
				    strlen(rep[i][1]), b))
			return -1;
		t = *a;
		*a = *b;
		*b = t;
	}
	return 0;
}

static int hexv(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* "<0xHH>" -> byte, as Rust u8::from_str_radix(&t[3..5], 16) accepts it (a '+' sign too). */
static int fallback_byte(const char *s, size_t n)
{
	int a, b;
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	if (s[3] == '+')
		return hexv(s[4]);
	if ((a = hexv(s[3])) < 0 || (b = hexv(s[4])) < 0)
		return -1;
	return a * 16 + b;
}

static int flush_bytes(struct dlist *out, struct tok_buf *bytes)
{
	int r = 0;
	if (!bytes->n)
		return 0;
	if (tok_utf8_check(bytes->p, bytes->n) == bytes->n)
		r = dl_add(out, bytes->p, bytes->n);
	else
		for (size_t k = 0; k < bytes->n && !r; k++)
			r = dl_add(out, "\xef\xbf\xbd", 3);
	bytes->n = 0;
	return r;
}

/* BPEDecoder, WordPiece, CTC: one string at a time through a and b. */
static int dec_words(const struct tok_dec *d, struct dlist *in, struct dlist *out)
{
	struct tok_buf a = {0}, b = {0};
	int r = 0;
	for (size_t i = 0; i < in->n && !r; i++) {
		const char *s = DL_S(in, i);
		size_t n = DL_N(in, i);
		a.n = b.n = 0;
		switch (d->type) {
		case TD_BPE: /* the suffix ends a word: a space, none after the last token */
			r = tok_replace_all(s, n, d->s, d->slen, " ", i + 1 < in->n, &a);
			break;
		case TD_WORDPIECE:
			if (i && n >= d->slen && !memcmp(s, d->s, d->slen))
				r = tok_buf_put(&a, s + d->slen, n - d->slen);
			else
				r = (i && tok_buf_put(&a, " ", 1)) || tok_buf_put(&a, s, n);
			break;
		case TD_CTC: /* runs of one token count once; pad tokens vanish */
			if (i && n == DL_N(in, i - 1) && !memcmp(s, DL_S(in, i - 1), n))
				continue;
			r = tok_replace_all(s, n, d->s, d->slen, "", 0, &a);
			break;
		}
		if (!r && d->cleanup)
			r = cleanup(&a, &b);
		if (!r && d->type == TD_CTC && d->cleanup) {
			b.n = 0;
			r = tok_replace_all(a.p ? a.p : "", a.n, d->s2, d->s2len, " ", 1, &b);
			a.n = 0;
			r = r || tok_buf_put(&a, b.p ? b.p : "", b.n);
		}
		if (!r && (d->type != TD_CTC || a.n))
			r = dl_add(out, a.p ? a.p : "", a.n);
	}
	tok_buf_free(&a);
	tok_buf_free(&b);
	return r;
}

static int dec_one(struct tok_ctx *c, const struct tok_dec *d, struct dlist *in, struct dlist *out)
{
	switch (d->type) {
	case TD_BPE:
	case TD_WORDPIECE:
	case TD_CTC:
		return dec_words(d, in, out);
	case TD_BYTELEVEL: {
		struct tok_buf raw = {0};
		int r = 0;
		for (size_t i = 0; i < in->n && !r; i++) {
			const char *s = DL_S(in, i);
			size_t n = DL_N(in, i), k, mark = raw.n;
			int ok = 1;
			for (k = 0; k < n && ok && !r;) {
				uint32_t cp;
				int b;
				k += tok_utf8_dec(s + k, &cp);
				if ((b = tok_bytelevel_byte(cp)) < 0)
					ok = 0;
				else {
					char ch = (char)b;
					r = tok_buf_put(&raw, &ch, 1);
				}
			}
			if (!r && !ok) {
				/* Some char has no byte: the token's own UTF-8 bytes. */
				raw.n = mark;
				r = tok_buf_put(&raw, s, n);
			}
		}
		if (!r) {
			struct tok_buf txt = {0};
			r = tok_utf8_lossy(raw.p ? raw.p : "", raw.n, &txt) || dl_add(out, txt.p ? txt.p : "", txt.n);
			tok_buf_free(&txt);
		}
		tok_buf_free(&raw);
		return r ? -1 : 0;
	}
	case TD_BYTEFALLBACK: {
		struct tok_buf bytes = {0};
		int r = 0;
		for (size_t i = 0; i < in->n && !r; i++) {
			int b = fallback_byte(DL_S(in, i), DL_N(in, i));
			if (b >= 0) {
				char ch = (char)b;
				r = tok_buf_put(&bytes, &ch, 1);
			} else
				r = flush_bytes(out, &bytes) || dl_add(out, DL_S(in, i), DL_N(in, i));
		}
		if (!r)
			r = flush_bytes(out, &bytes);
		tok_buf_free(&bytes);
		return r ? -1 : 0;
	}
	case TD_FUSE:
		if (dl_add(out, "", 0))
			return -1;
		return in->n && dl_cat(out, in->b.p, in->b.n) ? -1 : 0;
	case TD_STRIP:
		for (size_t i = 0; i < in->n; i++) {
			const char *s = DL_S(in, i);
			size_t n = DL_N(in, i), a = 0, b = n;
			uint32_t cp;
			for (int k = 0; k < d->start && a < n; k++) {
				size_t l = tok_utf8_dec(s + a, &cp);
				if (cp != d->ch)
					break;
				a += l;
			}
			for (int k = 0; k < d->stop && b > a; k++) {
				size_t p = b - 1;
				while (p > 0 && ((unsigned char)s[p] & 0xc0) == 0x80)
					p--;
				tok_utf8_dec(s + p, &cp);
				if (cp != d->ch)
					break;
				b = p;
			}
			if (dl_add(out, s + a, b - a))
				return -1;
		}
		return 0;
	case TD_REPLACE:
		for (size_t i = 0; i < in->n; i++) {
			const char *s = DL_S(in, i);
			int r = tok_re_segments(c, d->re, s, DL_N(in, i));
			if (r || dl_add(out, "", 0))
				return r == -2 ? -2 : -1;
			for (size_t k = 0; k < c->nsegs; k++) {
				const struct tok_seg *g = &c->segs[k];
				if (g->match ? dl_cat(out, d->s, d->slen) : dl_cat(out, s + g->s, g->e - g->s))
					return -1;
			}
		}
		return 0;
	case TD_METASPACE: {
		/* Every replacement char -> ' ' (dropped in the first token when prepending).
		 * Strings are valid UTF-8, so a byte match of the char is a char. */
		char rep[4];
		size_t rl = tok_utf8_enc(d->ch, rep);
		for (size_t i = 0; i < in->n; i++) {
			const char *s = DL_S(in, i), *e = s + DL_N(in, i), *q;
			if (dl_add(out, "", 0))
				return -1;
			while ((q = memmem(s, (size_t)(e - s), rep, rl))) {
				if (dl_cat(out, s, (size_t)(q - s)) || (!(i == 0 && d->prepend) && dl_cat(out, " ", 1)))
					return -1;
				s = q + rl;
			}
			if (dl_cat(out, s, (size_t)(e - s)))
				return -1;
		}
		return 0;
	}
	}
	return -1;
}

static int dec_run(struct tok_ctx *c, const struct tok_dec *d, struct dlist *a, struct dlist *b)
{
	struct dlist t;
	if (d->type == TD_SEQ) {
		for (size_t i = 0; i < d->nsub; i++) {
			int r = dec_run(c, &d->sub[i], a, b);
			if (r)
				return r;
		}
		return 0;
	}
	b->n = 0;
	b->b.n = 0;
	if (dec_one(c, d, a, b))
		return -1;
	t = *a;
	*a = *b;
	*b = t;
	return 0;
}

static fi_err decode_buf(const struct fi_tok *t, struct tok_ctx *c, const uint32_t *ids, size_t n,
			 unsigned flags, struct tok_buf *res)
{
	/* The two lists live in the scratch: a stream decodes at every id. */
	struct dlist *a = &c->da, *b = &c->db;
	int r = 0;
	a->n = b->n = a->b.n = b->b.n = 0;
	res->n = 0;
	if (tok_buf_reserve(res, 0))
		return fi_fail(FI_ENOMEM, "decode");
	res->p[0] = 0;
	for (size_t i = 0; i < n && !r; i++) {
		size_t len;
		const char *s = ids[i] < t->id_space && t->added_of_id[ids[i]] >= 0
					? t->added[t->added_of_id[ids[i]]].dec
					: fi_tok_id_to_token(t, ids[i], &len);
		if (ids[i] < t->id_space && t->added_of_id[ids[i]] >= 0)
			len = t->added[t->added_of_id[ids[i]]].dec_len;
		if (!s || ((flags & FI_TOK_SKIP_SPECIAL) && t->special[ids[i]]))
			continue;
		r = dl_add(a, s, len);
	}
	if (!r && t->dec)
		r = dec_run(c, t->dec, a, b);
	for (size_t i = 0; i < a->n && !r; i++)
		r = (!t->dec && i && tok_buf_put(res, " ", 1)) || tok_buf_put(res, DL_S(a, i), DL_N(a, i));
	if (r)
		return r == -2 ? fi_errcode() : fi_fail(FI_ENOMEM, "decode");
	return FI_OK;
}

fi_err fi_tok_decode(const struct fi_tok *t, const uint32_t *ids, size_t n, unsigned flags,
		     char **text, size_t *len)
{
	struct tok_ctx *c = tok_ctx_get(t);
	struct tok_buf res = {0};
	fi_err e;
	*text = NULL;
	if (!c)
		return fi_fail(FI_ENOMEM, "decode");
	e = decode_buf(t, c, ids, n, flags, &res);
	tok_ctx_put(t, c);
	if (e) {
		tok_buf_free(&res);
		return e;
	}
	*text = res.p;
	if (len)
		*len = res.n;
	return FI_OK;
}

/* ---- streaming ---- */

struct fi_tok_stream {
	const struct fi_tok *t;
	unsigned flags;
	struct fi_tok_ids ids;
	struct tok_buf prefix, str, out;
	size_t prefix_index;
	int bytefallback; /* the decoder has ByteFallback: see stream_holds */
	int held;         /* ids holds ids pushed since the last piece, not yet emitted */
};

static int dec_has(const struct tok_dec *d, int type)
{
	if (!d)
		return 0;
	if (d->type == type)
		return 1;
	for (size_t i = 0; i < d->nsub; i++)
		if (dec_has(&d->sub[i], type))
			return 1;
	return 0;
}

/* Whether a stream keeps id back instead of decoding at it. ByteFallback turns a run of
 * <0xHH> tokens into its bytes when the whole run is valid UTF-8, else into one U+FFFD per
 * byte: a later byte token can rewrite text already valid ("@" then <0x83> is two U+FFFD),
 * so a run is emitted only once a token that is not a byte ends it (or at the flush). A
 * skipped special token adds no text and does not end the run (decode drops it first). */
static int stream_holds(const struct fi_tok_stream *s, uint32_t id)
{
	const struct fi_tok *t = s->t;
	const char *str;
	size_t len;
	if (id < t->id_space && (s->flags & FI_TOK_SKIP_SPECIAL) && t->special[id])
		return 1;
	if (!s->bytefallback)
		return 0;
	if (id < t->id_space && t->added_of_id[id] >= 0) {
		str = t->added[t->added_of_id[id]].dec;
		len = t->added[t->added_of_id[id]].dec_len;
	} else
		str = fi_tok_id_to_token(t, id, &len);
	return str && fallback_byte(str, len) >= 0;
}

fi_err fi_tok_stream_new(const struct fi_tok *t, unsigned flags, struct fi_tok_stream **out)
{
	struct fi_tok_stream *s = calloc(1, sizeof *s);
	if (!s)
		return fi_fail(FI_ENOMEM, "decode stream");
	s->t = t;
	s->flags = flags;
	s->bytefallback = dec_has(t->dec, TD_BYTEFALLBACK);
	*out = s;
	return FI_OK;
}

void fi_tok_stream_free(struct fi_tok_stream *s)
{
	if (!s)
		return;
	fi_tok_ids_free(&s->ids);
	tok_buf_free(&s->prefix);
	tok_buf_free(&s->str);
	tok_buf_free(&s->out);
	free(s);
}

void fi_tok_stream_reset(struct fi_tok_stream *s)
{
	s->ids.n = 0;
	s->prefix.n = 0;
	s->prefix_index = 0;
	s->held = 0;
}

static int ends_fffd(const struct tok_buf *b)
{
	return b->n >= 3 && !memcmp(b->p + b->n - 3, "\xef\xbf\xbd", 3);
}

fi_err fi_tok_stream_step(struct fi_tok_stream *s, uint32_t id, const char **piece, size_t *len)
{
	struct tok_ctx *c = tok_ctx_get(s->t);
	fi_err e = FI_OK;
	*piece = "";
	*len = 0;
	if (!c)
		return fi_fail(FI_ENOMEM, "decode stream");
	if (!s->prefix.n && s->ids.n && !s->held) {
		if ((e = decode_buf(s->t, c, s->ids.v, s->ids.n, s->flags, &s->str)))
			goto out;
		if (!ends_fffd(&s->str)) {
			s->prefix.n = 0;
			if (tok_buf_put(&s->prefix, s->str.p, s->str.n)) {
				e = fi_fail(FI_ENOMEM, "decode stream");
				goto out;
			}
			s->prefix_index = s->ids.n;
		}
	}
	if (tok_ids_push(&s->ids, id)) {
		e = fi_fail(FI_ENOMEM, "decode stream");
		goto out;
	}
	if (stream_holds(s, id)) {
		s->held = 1;
		goto out;
	}
	if ((e = decode_buf(s->t, c, s->ids.v, s->ids.n, s->flags, &s->str)))
		goto out;
	if (s->str.n > s->prefix.n && !ends_fffd(&s->str)) {
		size_t npi;
		if (memcmp(s->str.p, s->prefix.p ? s->prefix.p : "", s->prefix.n)) {
			e = fi_fail(FI_ESTATE, "decode stream: text of id %u does not extend the previous text", id);
			goto out;
		}
		s->out.n = 0;
		if (tok_buf_put(&s->out, s->str.p + s->prefix.n, s->str.n - s->prefix.n)) {
			e = fi_fail(FI_ENOMEM, "decode stream");
			goto out;
		}
		npi = s->ids.n - s->prefix_index;
		memmove(s->ids.v, s->ids.v + s->prefix_index, npi * sizeof *s->ids.v);
		s->ids.n = npi;
		if ((e = decode_buf(s->t, c, s->ids.v, s->ids.n, s->flags, &s->prefix)))
			goto out;
		s->prefix_index = npi;
		s->held = 0;
		*piece = s->out.p;
		*len = s->out.n;
	}
out:
	tok_ctx_put(s->t, c);
	return e;
}

fi_err fi_tok_stream_flush(struct fi_tok_stream *s, const char **piece, size_t *len)
{
	struct tok_ctx *c = tok_ctx_get(s->t);
	fi_err e = FI_OK;
	*piece = "";
	*len = 0;
	if (!c)
		return fi_fail(FI_ENOMEM, "decode stream");
	if (s->ids.n && !(e = decode_buf(s->t, c, s->ids.v, s->ids.n, s->flags, &s->str))) {
		if (s->str.n < s->prefix.n || memcmp(s->str.p, s->prefix.p ? s->prefix.p : "", s->prefix.n))
			e = fi_fail(FI_ESTATE, "decode stream: the final text does not extend the text given");
		else if (s->str.n > s->prefix.n) {
			s->out.n = 0;
			if (tok_buf_put(&s->out, s->str.p + s->prefix.n, s->str.n - s->prefix.n))
				e = fi_fail(FI_ENOMEM, "decode stream");
			else {
				*piece = s->out.p;
				*len = s->out.n;
			}
		}
	}
	tok_ctx_put(s->t, c);
	fi_tok_stream_reset(s);
	return e;
}
