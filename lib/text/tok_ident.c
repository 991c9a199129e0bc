/* tok_ident: the SHA-256 of a tokenizer's vocabulary, and a name for messages. */
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#include "tok_ident.h"

static void put32(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

fi_err fi_tok_ident(const struct fi_tok *t, const char *arg, struct fi_tok_ident *out)
{
	uint32_t n = fi_tok_vocab_size(t);
	unsigned len = 0;
	uint8_t b[4];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(ctx, "fi-vocab-1", 10) == 1;

	memset(out, 0, sizeof *out);
	put32(b, n);
	ok = ok && EVP_DigestUpdate(ctx, b, 4) == 1;
	/* Each id: its string's length and bytes; an id without a token (a hole in the id
	 * space) as length 0xffffffff, so that no two vocabularies hash the same stream. */
	for (uint32_t id = 0; ok && id < n; id++) {
		size_t tl = 0;
		const char *s = fi_tok_id_to_token(t, id, &tl);
		put32(b, s ? (uint32_t)tl : 0xffffffffu);
		ok = EVP_DigestUpdate(ctx, b, 4) == 1 && (!s || !tl || EVP_DigestUpdate(ctx, s, tl) == 1);
	}
	ok = ok && EVP_DigestFinal_ex(ctx, out->sha256, &len) == 1 && len == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return fi_fail(FI_ENOMEM, "tokenizer fingerprint: SHA-256 failed");
	for (int i = 0; i < 32; i++)
		snprintf(out->hex + 2 * i, 3, "%02x", out->sha256[i]);
	fi_tok_ident_name(arg, out->name, sizeof out->name);
	return FI_OK;
}

void fi_tok_ident_name(const char *arg, char *out, size_t n)
{
	const char *p = arg && *arg ? arg : "tokenizer", *end = p + strlen(p), *base;
	size_t bl;

	while (end > p + 1 && end[-1] == '/')
		end--;
	for (base = end; base > p && base[-1] != '/'; base--)
		;
	bl = (size_t)(end - base);
	/* A tokenizer file is named after its directory. */
	if (base > p + 1 && ((bl == 14 && !memcmp(base, "tokenizer.json", 14)) ||
			     (bl == 13 && !memcmp(base, "tokenizer.bin", 13)))) {
		end = base - 1;
		while (end > p + 1 && end[-1] == '/')
			end--;
		for (base = end; base > p && base[-1] != '/'; base--)
			;
		bl = (size_t)(end - base);
	}
	if (bl > 4 && !memcmp(end - 4, ".fim", 4))
		bl -= 4;
	if (!bl) {
		base = "tokenizer";
		bl = 9;
	}
	snprintf(out, n, "%.*s", (int)bl, base);
}
