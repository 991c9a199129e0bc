/* Normalizers: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase, Prepend, Replace, Strip,
 * StripAccents, BertNormalizer, Nmt, ByteLevel, Precompiled (tok_precompiled.c), Sequence.
 * Only the normalized text matters for ids, so no alignment tracking is kept. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

static const char *jtype(json_t *j)
{
	json_t *t = json_object_get(j, "type");
	return json_is_string(t) ? json_string_value(t) : NULL;
}

/* Replace patterns, shared with the Replace decoder: {"String": s} or {"Regex": r}. */
pcre2_code *tok_pattern_compile(json_t *pat, const char *what);
pcre2_code *tok_pattern_compile(json_t *pat, const char *what)
{
	json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
	if (json_is_string(s))
		return tok_re_compile(json_string_value(s), json_string_length(s), 1, what);
	if (json_is_string(r))
		return tok_re_compile(json_string_value(r), json_string_length(r), 0, what);
	fi_fail(FI_EFORMAT, "%s: pattern is neither {\"String\"} nor {\"Regex\"}", what);
	return NULL;
}

fi_err tok_norm_parse(json_t *j, struct tok_norm *n, int depth)
{
	const char *t = jtype(j);
	memset(n, 0, sizeof *n);
	if (depth > TOK_MAX_DEPTH)
		return fi_fail(FI_EFORMAT, "normalizer: nested deeper than %d", TOK_MAX_DEPTH);
	if (!json_is_object(j) || !t)
		return fi_fail(FI_EFORMAT, "normalizer: not an object with a type");
	if (!strcmp(t, "Sequence")) {
		json_t *a = json_object_get(j, "normalizers");
		size_t i;
		json_t *v;
		n->type = TN_SEQ;
		if (!json_is_array(a))
			return fi_fail(FI_EFORMAT, "normalizer Sequence: 'normalizers' is not an array");
		n->sub = calloc(json_array_size(a) + 1, sizeof *n->sub);
		if (!n->sub)
			return fi_fail(FI_ENOMEM, "normalizer");
		json_array_foreach(a, i, v) {
			fi_err e = tok_norm_parse(v, &n->sub[i], depth + 1);
			n->nsub = i + 1;
			if (e)
				return e;
		}
		return FI_OK;
	}
	if (!strcmp(t, "NFC"))
		n->type = TN_NFC;
	else if (!strcmp(t, "NFD"))
		n->type = TN_NFD;
	else if (!strcmp(t, "NFKC"))
		n->type = TN_NFKC;
	else if (!strcmp(t, "NFKD"))
		n->type = TN_NFKD;
	else if (!strcmp(t, "Lowercase"))
		n->type = TN_LOWER;
	else if (!strcmp(t, "Prepend") || !strcmp(t, "Replace")) {
		json_t *s = json_object_get(j, *t == 'P' ? "prepend" : "content");
		n->type = *t == 'P' ? TN_PREPEND : TN_REPLACE;
		if (!json_is_string(s))
			return fi_fail(FI_EFORMAT, "normalizer %s: missing string", t);
		n->slen = json_string_length(s);
		if (!(n->s = malloc(n->slen + 1)))
			return fi_fail(FI_ENOMEM, "normalizer");
		memcpy(n->s, json_string_value(s), n->slen + 1);
		if (n->type == TN_REPLACE &&
		    !(n->re = tok_pattern_compile(json_object_get(j, "pattern"), "normalizer Replace")))
			return fi_errcode();
	} else if (!strcmp(t, "Strip")) {
		n->type = TN_STRIP;
		n->left = json_is_true(json_object_get(j, "strip_left"));
		n->right = json_is_true(json_object_get(j, "strip_right"));
	} else if (!strcmp(t, "BertNormalizer")) {
		json_t *sa = json_object_get(j, "strip_accents");
		static const char *keys[] = {"clean_text", "handle_chinese_chars", "lowercase"};
		n->type = TN_BERT;
		/* HF's serde: the three booleans are required, strip_accents may be null. */
		for (int k = 0; k < 3; k++)
			if (!json_is_boolean(json_object_get(j, keys[k])))
				return fi_fail(FI_EFORMAT, "normalizer BertNormalizer: '%s' missing or not a boolean", keys[k]);
		if (sa && !json_is_null(sa) && !json_is_boolean(sa))
			return fi_fail(FI_EFORMAT, "normalizer BertNormalizer: strip_accents is not a boolean or null");
		n->clean_text = json_is_true(json_object_get(j, "clean_text"));
		n->chinese = json_is_true(json_object_get(j, "handle_chinese_chars"));
		n->lowercase = json_is_true(json_object_get(j, "lowercase"));
		/* null: strip accents when lowercasing */
		n->strip_accents = json_is_boolean(sa) ? json_is_true(sa) : n->lowercase;
	} else if (!strcmp(t, "StripAccents"))
		n->type = TN_STRIP_ACCENTS;
	else if (!strcmp(t, "Nmt"))
		n->type = TN_NMT;
	else if (!strcmp(t, "ByteLevel"))
		n->type = TN_BYTELEVEL;
	else if (!strcmp(t, "Precompiled")) {
		fi_err e;
		n->type = TN_PRECOMPILED;
		if ((e = tok_precompiled_parse(j, &n->pc)))
			return e;
	} else
		return fi_fail(FI_EUNSUPPORTED, "normalizer '%s' is not supported", t);
	return FI_OK;
}

void tok_norm_free(struct tok_norm *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->nsub; i++)
		tok_norm_free(&n->sub[i]);
	free(n->sub);
	free(n->s);
	pcre2_code_free(n->re);
	tok_precompiled_free(n->pc);
}

/* Rust char::is_whitespace, with \t \n \r counted (BertNormalizer). */
static int bert_ws(uint32_t c)
{
	return c == '\t' || c == '\n' || c == '\r' || tok_is_whitespace(c);
}

/* HF's is_control: Cc, Cf, Cs, Co (unassigned chars are kept), except \t \n \r. */
static int bert_control(uint32_t c)
{
	utf8proc_category_t k;
	if (c == '\t' || c == '\n' || c == '\r')
		return 0;
	k = utf8proc_category((utf8proc_int32_t)c);
	return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CS ||
	       k == UTF8PROC_CATEGORY_CO;
}

static int cjk(uint32_t c)
{
	return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
	       (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
	       (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int is_mark(uint32_t c, int nonspacing_only)
{
	utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
	return k == UTF8PROC_CATEGORY_MN || (!nonspacing_only && (k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME));
}

static int put_cp(struct tok_buf *out, uint32_t cp)
{
	char u[8];
	return tok_buf_put(out, u, tok_utf8_enc(cp, u));
}

static fi_err unicode_form(const char *s, size_t len, int opt, struct tok_buf *out)
{
	utf8proc_uint8_t *d = NULL;
	utf8proc_ssize_t r;
	if (!len)
		return FI_OK;
	r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &d, opt | UTF8PROC_STABLE);
	if (r < 0)
		return fi_fail(FI_EINVAL, "normalize: %s", utf8proc_errmsg(r));
	r = tok_buf_put(out, d, (size_t)r);
	free(d);
	return r ? fi_fail(FI_ENOMEM, "normalize") : FI_OK;
}

/* HF BertNormalizer: clean (drop NUL, U+FFFD and controls; whitespace -> ' '), spaces around
 * CJK ideographs, NFD then drop Mn (strip accents), lowercase. */
static fi_err bert(struct tok_ctx *c, const struct tok_norm *n, const char *s, size_t len, struct tok_buf *out)
{
	struct tok_buf a = {0}, b = {0};
	fi_err e = FI_OK;
	int r = tok_buf_reserve(&a, len);
	for (size_t i = 0; i < len && !r;) {
		uint32_t cp;
		i += tok_utf8_dec(s + i, &cp);
		if (n->clean_text) {
			if (!cp || cp == 0xfffd || bert_control(cp))
				continue;
			if (bert_ws(cp))
				cp = ' ';
		}
		if (n->chinese && cjk(cp))
			r = tok_buf_put(&a, " ", 1) || put_cp(&a, cp) || tok_buf_put(&a, " ", 1);
		else
			r = put_cp(&a, cp);
	}
	if (!r && n->strip_accents) {
		if (!(e = unicode_form(a.p, a.n, UTF8PROC_DECOMPOSE, &b))) {
			a.n = 0;
			for (size_t i = 0; i < b.n && !r;) {
				uint32_t cp;
				i += tok_utf8_dec(b.p + i, &cp);
				if (!is_mark(cp, 1))
					r = put_cp(&a, cp);
			}
		}
	}
	if (!r && !e) {
		if (n->lowercase) {
			struct tok_norm low = {.type = TN_LOWER};
			e = tok_norm_apply(c, &low, a.p ? a.p : "", a.n, &b);
			if (!e)
				r = tok_buf_put(out, b.p ? b.p : "", b.n);
		} else
			r = tok_buf_put(out, a.p ? a.p : "", a.n);
	}
	tok_buf_free(&a);
	tok_buf_free(&b);
	return e ? e : r ? fi_fail(FI_ENOMEM, "normalize") : FI_OK;
}

/* HF Nmt: drop ASCII controls, map other spaces to ' '. */
static uint32_t nmt(uint32_t c)
{
	if ((c >= 1 && c <= 8) || c == 0xB || (c >= 0xE && c <= 0x1F) || c == 0x7F || c == 0x8F || c == 0x9F)
		return UINT32_MAX;
	if (c == 9 || c == 0xA || c == 0xC || c == 0xD || c == 0x1680 || (c >= 0x200B && c <= 0x200F) ||
	    c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xFEFF || c == 0xFFFD)
		return ' ';
	return c;
}

/* A chain of normalizers may grow the text only so far: NFKD expands one char to at most 18,
 * but a Replace whose pattern matches the empty string inserts its content between every two
 * chars, and three of them in a row turn 40 chars into gigabytes. */
#define NORM_GROWTH 64
#define NORM_SLACK 4096

static fi_err too_long(size_t max)
{
	return fi_fail(FI_EINVAL, "normalize: the normalizers grow the text past %zu bytes (%d times its length)",
		       max, NORM_GROWTH);
}

static fi_err norm_one(struct tok_ctx *c, const struct tok_norm *n, const char *s, size_t len,
		       struct tok_buf *out, size_t max)
{
	switch (n->type) {
	case TN_NFC:
	case TN_NFD:
	case TN_NFKC:
	case TN_NFKD: {
		int opt = (n->type == TN_NFC || n->type == TN_NFKC) ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE;
		if (n->type == TN_NFKC || n->type == TN_NFKD)
			opt |= UTF8PROC_COMPAT;
		return unicode_form(s, len, opt, out);
	}
	case TN_BERT:
		return bert(c, n, s, len, out);
	case TN_STRIP_ACCENTS:
	case TN_NMT:
		for (size_t i = 0; i < len;) {
			uint32_t cp;
			size_t k = tok_utf8_dec(s + i, &cp);
			if (n->type == TN_NMT ? (cp = nmt(cp)) != UINT32_MAX && put_cp(out, cp)
					      : !is_mark(cp, 0) && tok_buf_put(out, s + i, k))
				return fi_fail(FI_ENOMEM, "normalize");
			i += k;
		}
		return FI_OK;
	case TN_BYTELEVEL:
		for (size_t i = 0; i < len; i++) {
			char u[4];
			if (tok_buf_put(out, u, tok_bytelevel_char((unsigned char)s[i], u)))
				return fi_fail(FI_ENOMEM, "normalize");
		}
		return FI_OK;
	case TN_PRECOMPILED:
		return tok_precompiled_apply(n->pc, s, len, out);
	case TN_LOWER:
		for (size_t i = 0; i < len;) {
			uint32_t cp;
			char u[8];
			i += tok_utf8_dec(s + i, &cp);
			/* Rust's char::to_lowercase: full mapping; U+0130 is the one char whose
			 * lowercase is two chars (i + combining dot above). */
			if (cp == 0x130) {
				if (tok_buf_put(out, "i\xcc\x87", 3))
					return fi_fail(FI_ENOMEM, "normalize");
				continue;
			}
			cp = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
			if (tok_buf_put(out, u, tok_utf8_enc(cp, u)))
				return fi_fail(FI_ENOMEM, "normalize");
		}
		return FI_OK;
	case TN_PREPEND:
		if (len && tok_buf_put(out, n->s, n->slen))
			return fi_fail(FI_ENOMEM, "normalize");
		return tok_buf_put(out, s, len) ? fi_fail(FI_ENOMEM, "normalize") : FI_OK;
	case TN_REPLACE: {
		int r = tok_re_segments(c, n->re, s, len);
		size_t total = 0;
		if (r)
			return r == -1 ? fi_fail(FI_ENOMEM, "normalize") : fi_errcode();
		for (size_t i = 0; i < c->nsegs; i++)
			total += c->segs[i].match ? n->slen : c->segs[i].e - c->segs[i].s;
		if (total > max)
			return too_long(max);
		for (size_t i = 0; i < c->nsegs; i++) {
			const struct tok_seg *g = &c->segs[i];
			if (g->match ? tok_buf_put(out, n->s, n->slen) : tok_buf_put(out, s + g->s, g->e - g->s))
				return fi_fail(FI_ENOMEM, "normalize");
		}
		return FI_OK;
	}
	case TN_STRIP: {
		size_t a = 0, b = len;
		uint32_t cp;
		if (n->left)
			while (a < b) {
				size_t k = tok_utf8_dec(s + a, &cp);
				if (!tok_is_whitespace(cp))
					break;
				a += k;
			}
		if (n->right)
			while (b > a) {
				size_t p = b - 1;
				while (p > a && ((unsigned char)s[p] & 0xc0) == 0x80)
					p--;
				tok_utf8_dec(s + p, &cp);
				if (!tok_is_whitespace(cp))
					break;
				b = p;
			}
		return tok_buf_put(out, s + a, b - a) ? fi_fail(FI_ENOMEM, "normalize") : FI_OK;
	}
	}
	return fi_fail(FI_EINVAL, "normalizer type %d", n->type);
}

static fi_err norm_apply(struct tok_ctx *c, const struct tok_norm *n, const char *s, size_t len,
			 struct tok_buf *out, size_t max)
{
	struct tok_buf a = {0}, b = {0};
	fi_err e = FI_OK;
	out->n = 0;
	if (tok_buf_reserve(out, len))
		return fi_fail(FI_ENOMEM, "normalize");
	out->p[0] = 0;
	if (n->type != TN_SEQ)
		return norm_one(c, n, s, len, out, max);
	if (tok_buf_put(&a, s, len))
		return fi_fail(FI_ENOMEM, "normalize");
	for (size_t i = 0; i < n->nsub && !e; i++) {
		struct tok_buf t;
		b.n = 0;
		if (tok_buf_reserve(&b, a.n)) {
			e = fi_fail(FI_ENOMEM, "normalize");
			break;
		}
		b.p[0] = 0;
		e = norm_apply(c, &n->sub[i], a.p, a.n, &b, max);
		if (!e && b.n > max)
			e = too_long(max);
		t = a;
		a = b;
		b = t;
	}
	if (!e && tok_buf_put(out, a.p, a.n))
		e = fi_fail(FI_ENOMEM, "normalize");
	tok_buf_free(&a);
	tok_buf_free(&b);
	return e;
}

fi_err tok_norm_apply(struct tok_ctx *c, const struct tok_norm *n, const char *s, size_t len,
		      struct tok_buf *out)
{
	size_t max = len > (SIZE_MAX - NORM_SLACK) / NORM_GROWTH ? SIZE_MAX : len * NORM_GROWTH + NORM_SLACK;
	fi_err e = norm_apply(c, n, s, len, out, max);
	if (!e && out->n > max)
		e = too_long(max);
	return e;
}
