/* Precompiled normalizer: SentencePiece's normalization rules as compiled into the model
 * (precompiled_charsmap, base64 in tokenizer.json): a Darts double-array trie over UTF-8
 * keys whose values index NUL-terminated replacement strings.
 *
 *   u32 trie_bytes | u32 unit[trie_bytes / 4] | replacement strings
 *
 * Applied as HF applies it (spm_precompiled + normalizers/precompiled.rs): text is cut into
 * extended grapheme clusters; a cluster shorter than 6 bytes is replaced whole when a prefix
 * of it is a key (the shortest such prefix's value); otherwise each char is replaced when a
 * prefix of it is a key. Every unit read is bounds-checked: the blob comes from the file. */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

struct tok_precompiled {
	uint32_t *unit;
	size_t nunit;
	char *norm; /* replacement strings */
	size_t nnorm;
};

void tok_precompiled_free(struct tok_precompiled *p)
{
	if (!p)
		return;
	free(p->unit);
	free(p->norm);
	free(p);
}

static fi_err b64(const char *s, size_t n, unsigned char **out, size_t *len)
{
	unsigned char *p;
	int r;
	size_t pad = 0;
	if (n % 4)
		return fi_fail(FI_EFORMAT, "normalizer Precompiled: precompiled_charsmap is not base64");
	if (!(p = malloc(n / 4 * 3 + 4)))
		return fi_fail(FI_ENOMEM, "normalizer Precompiled");
	r = n ? EVP_DecodeBlock(p, (const unsigned char *)s, (int)n) : 0;
	if (r < 0) {
		free(p);
		return fi_fail(FI_EFORMAT, "normalizer Precompiled: precompiled_charsmap is not base64");
	}
	/* EVP_DecodeBlock counts the padding as zero bytes. */
	while (pad < 2 && n > pad && s[n - 1 - pad] == '=')
		pad++;
	*out = p;
	*len = (size_t)r - pad;
	return FI_OK;
}

fi_err tok_precompiled_parse(json_t *j, struct tok_precompiled **out)
{
	json_t *cm = json_object_get(j, "precompiled_charsmap");
	struct tok_precompiled *p;
	unsigned char *raw = NULL;
	size_t n = 0;
	uint32_t tb;
	fi_err e;
	*out = NULL;
	if (!json_is_string(cm))
		return fi_fail(FI_EFORMAT, "normalizer Precompiled: precompiled_charsmap missing or not a string");
	if ((e = b64(json_string_value(cm), json_string_length(cm), &raw, &n)))
		return e;
	if (!(p = calloc(1, sizeof *p))) {
		free(raw);
		return fi_fail(FI_ENOMEM, "normalizer Precompiled");
	}
	e = fi_fail(FI_EFORMAT, "normalizer Precompiled: precompiled_charsmap is truncated or inconsistent");
	if (n < 4)
		goto fail;
	memcpy(&tb, raw, 4);
	if (tb % 4 || tb > n - 4 || !tb)
		goto fail;
	p->nunit = tb / 4;
	p->nnorm = n - 4 - tb;
	if (!(p->unit = malloc(tb)) || !(p->norm = malloc(p->nnorm + 1))) {
		e = fi_fail(FI_ENOMEM, "normalizer Precompiled");
		goto fail;
	}
	memcpy(p->unit, raw + 4, tb);
	memcpy(p->norm, raw + 4 + tb, p->nnorm);
	p->norm[p->nnorm] = 0;
	if (tok_utf8_check(p->norm, p->nnorm) != p->nnorm) {
		e = fi_fail(FI_EFORMAT, "normalizer Precompiled: replacement strings are not UTF-8");
		goto fail;
	}
	free(raw);
	fi_clear_error();
	*out = p;
	return FI_OK;
fail:
	free(raw);
	tok_precompiled_free(p);
	return e;
}

/* Darts unit fields (spm_precompiled's): */
#define U_LEAF(u) (((u) >> 8) & 1)
#define U_VALUE(u) ((u) & 0x7fffffffu)
#define U_LABEL(u) ((u) & (0x80000000u | 0xffu))
#define U_OFFSET(u) (((u) >> 10) << (((u) & (1u << 9)) >> 6))

/* The replacement for the shortest key that prefixes s[0..n), or NULL. */
static const char *transform(const struct tok_precompiled *p, const char *s, size_t n, size_t *len)
{
	size_t pos = 0;
	uint32_t u = p->unit[0];
	pos ^= U_OFFSET(u);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!c)
			break;
		pos ^= c;
		if (pos >= p->nunit)
			return NULL;
		u = p->unit[pos];
		if (U_LABEL(u) != c)
			return NULL;
		pos ^= U_OFFSET(u);
		if (pos >= p->nunit)
			return NULL;
		if (U_LEAF(u)) {
			size_t v = U_VALUE(p->unit[pos]), k;
			if (v > p->nnorm)
				return NULL;
			k = strlen(p->norm + v);
			/* A value pointing inside a char would cut UTF-8: no replacement. */
			if (tok_utf8_check(p->norm + v, k) != k)
				return NULL;
			*len = k;
			return p->norm + v;
		}
	}
	return NULL;
}

fi_err tok_precompiled_apply(const struct tok_precompiled *p, const char *s, size_t n,
			     struct tok_buf *out)
{
	size_t g = 0;
	utf8proc_int32_t state = 0;
	while (g < n) {
		/* One extended grapheme cluster [g, e). */
		size_t e = g, len;
		uint32_t prev;
		const char *r;
		e += tok_utf8_dec(s + e, &prev);
		while (e < n) {
			uint32_t cp;
			size_t k = tok_utf8_dec(s + e, &cp);
			if (utf8proc_grapheme_break_stateful((utf8proc_int32_t)prev, (utf8proc_int32_t)cp, &state))
				break;
			prev = cp;
			e += k;
		}
		if (e - g < 6 && (r = transform(p, s + g, e - g, &len))) {
			if (tok_buf_put(out, r, len))
				return fi_fail(FI_ENOMEM, "normalize");
		} else
			for (size_t i = g; i < e;) {
				uint32_t cp;
				size_t k = tok_utf8_dec(s + i, &cp);
				if ((r = transform(p, s + i, k, &len)) ? tok_buf_put(out, r, len) : tok_buf_put(out, s + i, k))
					return fi_fail(FI_ENOMEM, "normalize");
				i += k;
			}
		g = e;
	}
	(void)state;
	return FI_OK;
}
