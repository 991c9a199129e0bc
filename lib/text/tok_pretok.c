/* Pre-tokenizers: ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace,
 * WhitespaceSplit, CharDelimiterSplit, BertPreTokenizer, FixedLength, UnicodeScripts, Sequence.
 *
 * Pieces live in c->pa (one buffer plus (offset, length) pairs); each stage writes the next
 * list into c->pb and swaps, dropping empty pieces as HF's PreTokenizedString::split does. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

pcre2_code *tok_pattern_compile(json_t *pat, const char *what);

/* GPT-2's pre-tokenizer regex (HF byte_level.rs). */
static const char GPT2_RE[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
/* HF's Whitespace pre-tokenizer uses Rust regex \w (Alphabetic, M, Nd, Pc, Join_Control). */
#define RUST_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"
static const char WS_RE[] = "[" RUST_W "]+|[^" RUST_W "\\s]+";

static int parse_behavior(json_t *v, int dflt, int *out)
{
	const char *s;
	static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
				      "Contiguous"};
	if (!v) {
		*out = dflt;
		return 0;
	}
	if (!json_is_string(v))
		return -1;
	s = json_string_value(v);
	for (int i = 0; i < 5; i++)
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
	return -1;
}

static uint32_t first_char(json_t *v)
{
	uint32_t cp;
	if (!json_is_string(v) || !json_string_length(v) ||
	    tok_utf8_valid_len((const unsigned char *)json_string_value(v), json_string_length(v)) !=
		    json_string_length(v))
		return 0;
	tok_utf8_dec(json_string_value(v), &cp);
	return cp;
}

fi_err tok_pre_parse(json_t *j, struct tok_pre *p, int depth)
{
	json_t *t = json_object_get(j, "type");
	const char *ty = json_is_string(t) ? json_string_value(t) : NULL;
	memset(p, 0, sizeof *p);
	if (depth > TOK_MAX_DEPTH)
		return fi_fail(FI_EFORMAT, "pre_tokenizer: nested deeper than %d", TOK_MAX_DEPTH);
	if (!json_is_object(j) || !ty)
		return fi_fail(FI_EFORMAT, "pre_tokenizer: not an object with a type");
	if (!strcmp(ty, "Sequence") || !strcmp(ty, "BertPreTokenizer")) {
		json_t *a = json_object_get(j, "pretokenizers"), *v;
		size_t i;
		p->type = TP_SEQ;
		if (*ty == 'B') {
			/* Whitespace split (removed), then punctuation isolated. */
			if (!(p->sub = calloc(2, sizeof *p->sub)))
				return fi_fail(FI_ENOMEM, "pre_tokenizer");
			p->nsub = 2;
			p->sub[0].type = TP_WSSPLIT;
			p->sub[1].type = TP_PUNCT;
			p->sub[1].behavior = TB_ISOLATED;
			return FI_OK;
		}
		if (!json_is_array(a))
			return fi_fail(FI_EFORMAT, "pre_tokenizer Sequence: 'pretokenizers' is not an array");
		if (!(p->sub = calloc(json_array_size(a) + 1, sizeof *p->sub)))
			return fi_fail(FI_ENOMEM, "pre_tokenizer");
		json_array_foreach(a, i, v) {
			fi_err e = tok_pre_parse(v, &p->sub[i], depth + 1);
			p->nsub = i + 1;
			if (e)
				return e;
		}
		return FI_OK;
	}
	if (!strcmp(ty, "ByteLevel")) {
		json_t *aps = json_object_get(j, "add_prefix_space"), *ur = json_object_get(j, "use_regex");
		p->type = TP_BYTELEVEL;
		p->add_prefix_space = aps ? json_is_true(aps) : 1;
		p->use_regex = ur ? json_is_true(ur) : 1;
		if (p->use_regex && !(p->re = tok_re_compile(GPT2_RE, sizeof GPT2_RE - 1, 0, "ByteLevel")))
			return fi_errcode();
	} else if (!strcmp(ty, "Split")) {
		p->type = TP_SPLIT;
		if (parse_behavior(json_object_get(j, "behavior"), -1, &p->behavior) || p->behavior < 0)
			return fi_fail(FI_EFORMAT, "pre_tokenizer Split: bad or missing behavior");
		p->invert = json_is_true(json_object_get(j, "invert"));
		if (!(p->re = tok_pattern_compile(json_object_get(j, "pattern"), "pre_tokenizer Split")))
			return fi_errcode();
	} else if (!strcmp(ty, "Metaspace")) {
		json_t *ps = json_object_get(j, "prepend_scheme"), *aps = json_object_get(j, "add_prefix_space");
		json_t *sp = json_object_get(j, "split");
		p->type = TP_METASPACE;
		if (!(p->ch = first_char(json_object_get(j, "replacement"))))
			return fi_fail(FI_EFORMAT, "pre_tokenizer Metaspace: bad replacement");
		p->prepend = 2;
		if (json_is_string(ps)) {
			const char *s = json_string_value(ps);
			p->prepend = !strcmp(s, "never") ? 0 : !strcmp(s, "first") ? 1 : !strcmp(s, "always") ? 2 : -1;
			if (p->prepend < 0)
				return fi_fail(FI_EFORMAT, "pre_tokenizer Metaspace: bad prepend_scheme '%s'", s);
		}
		if (json_is_false(aps)) {
			if (json_is_string(ps) && p->prepend)
				return fi_fail(FI_EFORMAT, "pre_tokenizer Metaspace: add_prefix_space does not match prepend_scheme");
			p->prepend = 0;
		}
		p->split = sp ? json_is_true(sp) : 1;
	} else if (!strcmp(ty, "Digits")) {
		p->type = TP_DIGITS;
		p->individual = json_is_true(json_object_get(j, "individual_digits"));
	} else if (!strcmp(ty, "Punctuation")) {
		p->type = TP_PUNCT;
		if (parse_behavior(json_object_get(j, "behavior"), TB_ISOLATED, &p->behavior))
			return fi_fail(FI_EFORMAT, "pre_tokenizer Punctuation: bad behavior");
	} else if (!strcmp(ty, "Whitespace")) {
		p->type = TP_WHITESPACE;
		if (!(p->re = tok_re_compile(WS_RE, sizeof WS_RE - 1, 0, "Whitespace")))
			return fi_errcode();
	} else if (!strcmp(ty, "FixedLength")) {
		json_t *l = json_object_get(j, "length");
		p->type = TP_FIXEDLEN;
		p->length = 5;
		if (l && (!json_is_integer(l) || json_integer_value(l) < 1 || json_integer_value(l) > (1 << 30)))
			return fi_fail(FI_EFORMAT, "pre_tokenizer FixedLength: length must be a positive integer");
		if (l)
			p->length = (uint32_t)json_integer_value(l);
	} else if (!strcmp(ty, "UnicodeScripts")) {
		p->type = TP_SCRIPTS;
	} else if (!strcmp(ty, "WhitespaceSplit")) {
		p->type = TP_WSSPLIT;
	} else if (!strcmp(ty, "CharDelimiterSplit")) {
		p->type = TP_CHARDELIM;
		if (!(p->ch = first_char(json_object_get(j, "delimiter"))))
			return fi_fail(FI_EFORMAT, "pre_tokenizer CharDelimiterSplit: bad delimiter");
	} else
		return fi_fail(FI_EUNSUPPORTED, "pre_tokenizer '%s' is not supported", ty);
	return FI_OK;
}

void tok_pre_free(struct tok_pre *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nsub; i++)
		tok_pre_free(&p->sub[i]);
	free(p->sub);
	pcre2_code_free(p->re);
}

static int pred_eq(uint32_t cp, uint32_t a) { return cp == a; }
static int pred_num(uint32_t cp, uint32_t a) { return tok_is_numeric(cp); }
static int pred_punct(uint32_t cp, uint32_t a) { return tok_is_punct(cp); }
static int pred_ws(uint32_t cp, uint32_t a) { return tok_is_whitespace(cp); }

/* Applies a split behavior to c->segs (HF NormalizedString::split) and appends the kept,
 * non-empty stretches of s to out. */
static int emit_split(struct tok_ctx *c, struct tok_pieces *out, const char *s, int first,
		      int behavior)
{
	struct tok_seg *g = c->segs;
	size_t n = c->nsegs, w = 0, lo = 0, hi;
	int prev = 0;
	switch (behavior) {
	case TB_ISOLATED:
		for (size_t r = 0; r < n; r++)
			g[r].match = 0;
		hi = n;
		break;
	case TB_REMOVED:
		hi = n;
		break;
	case TB_CONTIGUOUS:
	case TB_MERGED_PREV:
		for (size_t r = 0; r < n; r++) {
			struct tok_seg x = g[r];
			int ext = behavior == TB_CONTIGUOUS ? x.match == prev : (x.match && !prev);
			if (ext && w)
				g[w - 1].e = x.e;
			else
				g[w++] = (struct tok_seg){x.s, x.e, 0};
			prev = x.match;
		}
		hi = w;
		break;
	case TB_MERGED_NEXT:
		w = n;
		for (size_t r = n; r-- > 0;) {
			struct tok_seg x = g[r];
			if (x.match && !prev && w < n)
				g[w].s = x.s;
			else
				g[--w] = (struct tok_seg){x.s, x.e, 0};
			prev = x.match;
		}
		lo = w;
		hi = n;
		break;
	default:
		return -1;
	}
	for (size_t i = lo; i < hi; i++) {
		size_t off;
		if (g[i].match || g[i].e == g[i].s)
			continue;
		off = out->b.n;
		if (tok_buf_put(&out->b, s + g[i].s, g[i].e - g[i].s) ||
		    tok_pieces_add(out, (uint32_t)off, g[i].e - g[i].s, first && g[i].s == 0))
			return -1;
	}
	return 0;
}

static int put_bytelevel(struct tok_pieces *out, const char *s, size_t n, int first)
{
	size_t off = out->b.n;
	if (tok_buf_reserve(&out->b, 2 * n))
		return -1;
	for (size_t i = 0; i < n; i++)
		out->b.n += tok_bytelevel_char((unsigned char)s[i], out->b.p + out->b.n);
	out->b.p[out->b.n] = 0;
	return tok_pieces_add(out, (uint32_t)off, (uint32_t)(out->b.n - off), first);
}

/* One stage over one piece, appending to out. Returns 0, -1 (no memory) or -2 (regex). */
static int stage(struct tok_ctx *c, const struct tok_pre *p, const char *s, size_t n, int first,
		 struct tok_pieces *out)
{
	int r;
	switch (p->type) {
	case TP_BYTELEVEL: {
		if (p->add_prefix_space && (!n || s[0] != ' ')) {
			c->tmp.n = 0;
			if (tok_buf_put(&c->tmp, " ", 1) || tok_buf_put(&c->tmp, s, n))
				return -1;
			s = c->tmp.p;
			n = c->tmp.n;
		}
		if (!p->use_regex)
			return n ? put_bytelevel(out, s, n, first) : 0;
		if ((r = tok_re_segments(c, p->re, s, n)))
			return r;
		for (size_t i = 0; i < c->nsegs; i++) {
			const struct tok_seg *g = &c->segs[i];
			if (g->e > g->s && put_bytelevel(out, s + g->s, g->e - g->s, first && !g->s))
				return -1;
		}
		return 0;
	}
	case TP_SPLIT:
		if ((r = tok_re_segments(c, p->re, s, n)))
			return r;
		if (p->invert)
			for (size_t i = 0; i < c->nsegs; i++)
				c->segs[i].match = !c->segs[i].match;
		return emit_split(c, out, s, first, p->behavior);
	case TP_WHITESPACE:
		if ((r = tok_re_segments(c, p->re, s, n)))
			return r;
		for (size_t i = 0; i < c->nsegs; i++)
			c->segs[i].match = !c->segs[i].match;
		return emit_split(c, out, s, first, TB_REMOVED);
	case TP_METASPACE: {
		char rep[4];
		size_t rl = tok_utf8_enc(p->ch, rep);
		int starts = (n && s[0] == ' ') || (n >= rl && !memcmp(s, rep, rl));
		c->tmp.n = 0;
		/* HF replaces spaces first, then prepends unless the text already starts with
		 * the replacement ("first": only at offset 0 of the input). */
		if (p->prepend && !starts && (p->prepend == 2 || first) && tok_buf_put(&c->tmp, rep, rl))
			return -1;
		for (size_t i = 0; i < n; i++)
			if (s[i] == ' ' ? tok_buf_put(&c->tmp, rep, rl) : tok_buf_put(&c->tmp, s + i, 1))
				return -1;
		if (tok_buf_reserve(&c->tmp, 0))
			return -1;
		s = c->tmp.p;
		n = c->tmp.n;
		if (!p->split) {
			size_t off = out->b.n;
			if (!n)
				return 0;
			return tok_buf_put(&out->b, s, n) || tok_pieces_add(out, (uint32_t)off, (uint32_t)n, first) ? -1 : 0;
		}
		if (tok_pred_segments(c, pred_eq, p->ch, s, n))
			return -1;
		return emit_split(c, out, s, first, TB_MERGED_NEXT);
	}
	case TP_DIGITS:
		if (tok_pred_segments(c, pred_num, 0, s, n))
			return -1;
		return emit_split(c, out, s, first, p->individual ? TB_ISOLATED : TB_CONTIGUOUS);
	case TP_PUNCT:
		if (tok_pred_segments(c, pred_punct, 0, s, n))
			return -1;
		return emit_split(c, out, s, first, p->behavior);
	case TP_WSSPLIT:
		if (tok_pred_segments(c, pred_ws, 0, s, n))
			return -1;
		return emit_split(c, out, s, first, TB_REMOVED);
	case TP_CHARDELIM:
		if (tok_pred_segments(c, pred_eq, p->ch, s, n))
			return -1;
		return emit_split(c, out, s, first, TB_REMOVED);
	case TP_SCRIPTS: {
		/* HF UnicodeScripts: a cut where the script changes, Any (' ', unassigned) taking
		 * the script around it. Text before the first cut is dropped, as there: a piece
		 * that starts with Any chars loses them, and one of Any chars only vanishes. */
		size_t i = 0, cut = SIZE_MAX;
		int last = -1;
		while (i < n) {
			uint32_t cp;
			size_t k = tok_utf8_dec(s + i, &cp);
			int sc = tok_script_fixed(cp);
			if (sc && last != sc) {
				if (cut != SIZE_MAX) {
					size_t off = out->b.n;
					if (tok_buf_put(&out->b, s + cut, i - cut) ||
					    tok_pieces_add(out, (uint32_t)off, (uint32_t)(i - cut), first && !cut))
						return -1;
				}
				cut = i;
			}
			if (sc)
				last = sc;
			i += k;
		}
		if (cut != SIZE_MAX) {
			size_t off = out->b.n;
			if (tok_buf_put(&out->b, s + cut, n - cut) ||
			    tok_pieces_add(out, (uint32_t)off, (uint32_t)(n - cut), first && !cut))
				return -1;
		}
		return 0;
	}
	case TP_FIXEDLEN:
		/* Pieces of `length` chars, the last one shorter. */
		for (size_t i = 0; i < n;) {
			size_t e = i, off = out->b.n;
			for (uint32_t k = 0; k < p->length && e < n; k++)
				e += tok_utf8_valid_len((const unsigned char *)s + e, n - e);
			if (tok_buf_put(&out->b, s + i, e - i) || tok_pieces_add(out, (uint32_t)off, (uint32_t)(e - i), first && !i))
				return -1;
			i = e;
		}
		return 0;
	}
	return -1;
}

static fi_err run(struct tok_ctx *c, const struct tok_pre *p)
{
	struct tok_pieces t;
	if (p->type == TP_SEQ) {
		for (size_t i = 0; i < p->nsub; i++) {
			fi_err e = run(c, &p->sub[i]);
			if (e)
				return e;
		}
		return FI_OK;
	}
	c->pb.n = 0;
	c->pb.b.n = 0;
	for (size_t i = 0; i < c->pa.n; i++) {
		const struct tok_piece *q = &c->pa.v[i];
		int r = stage(c, p, c->pa.b.p + q->off, q->len, q->first, &c->pb);
		if (r)
			return r == -1 ? fi_fail(FI_ENOMEM, "pre-tokenize") : fi_errcode();
	}
	t = c->pa;
	c->pa = c->pb;
	c->pb = t;
	return FI_OK;
}

fi_err tok_pre_run(struct tok_ctx *c, const struct tok_pre *p, const char *s, size_t len,
		   int first)
{
	c->pa.n = 0;
	c->pa.b.n = 0;
	if (!len)
		return FI_OK;
	if (tok_buf_put(&c->pa.b, s, len) || tok_pieces_add(&c->pa, 0, (uint32_t)len, first))
		return fi_fail(FI_ENOMEM, "pre-tokenize");
	return p ? run(c, p) : FI_OK;
}
