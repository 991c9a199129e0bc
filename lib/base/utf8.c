/* utf8: validity (utf8proc) and lossy repair with U+FFFD per maximal invalid subpart. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "utf8.h"

size_t fi_utf8_valid(const char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t k;
		if ((unsigned char)s[i] < 0x80) {
			i++;
			continue;
		}
		k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
		if (k <= 0 || cp < 0)
			return i;
		i += (size_t)k;
	}
	return n;
}

/* Bytes of the maximal subpart of an ill-formed sequence at s (n > 0 bytes left): the lead
 * byte and the continuation bytes that could still have completed a character (Unicode
 * table 3-7: E0 needs A0..BF next, ED 80..9F, F0 90..BF, F4 80..8F). At least 1. */
static size_t bad_len(const unsigned char *s, size_t n)
{
	unsigned char b = s[0], lo = 0x80, hi = 0xbf;
	size_t need, k;
	if (b >= 0xc2 && b <= 0xdf)
		need = 1;
	else if (b >= 0xe0 && b <= 0xef)
		need = 2;
	else if (b >= 0xf0 && b <= 0xf4)
		need = 3;
	else
		return 1;
	if (b == 0xe0)
		lo = 0xa0;
	else if (b == 0xed)
		hi = 0x9f;
	else if (b == 0xf0)
		lo = 0x90;
	else if (b == 0xf4)
		hi = 0x8f;
	for (k = 1; k <= need && k < n; k++) {
		if (s[k] < lo || s[k] > hi)
			break;
		lo = 0x80;
		hi = 0xbf;
	}
	return k;
}

fi_err fi_utf8_lossy(const char *s, size_t n, char **out, size_t *outlen)
{
	/* Each bad byte becomes at most 3 bytes. */
	char *o = malloc(n > ((size_t)-1 - 1) / 3 ? (size_t)-1 : 3 * n + 1);
	size_t i = 0, w = 0;
	if (!o)
		return fi_fail(FI_ENOMEM, "text of %zu bytes", n);
	while (i < n) {
		size_t v = fi_utf8_valid(s + i, n - i);
		memcpy(o + w, s + i, v);
		w += v;
		i += v;
		if (i < n) {
			i += bad_len((const unsigned char *)s + i, n - i);
			memcpy(o + w, "\xef\xbf\xbd", 3);
			w += 3;
		}
	}
	o[w] = 0;
	*out = o;
	if (outlen)
		*outlen = w;
	return FI_OK;
}
