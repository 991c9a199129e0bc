/* Fuzz target: tokenizer.json text or the binary form from untrusted bytes. A load either
 * fails with an error or gives a tokenizer that encodes, decodes and round-trips through
 * the binary form. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fi_tok *t, *b;
	struct fi_tok_ids ids = {0};
	void *buf;
	size_t n;
	char *d;
	static const char text[] = "Hello, world! <s> 123 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80  x";
	if (size > (1 << 20) || fi_tok_load_mem(data, size, &t))
		return 0;
	if (fi_tok_encode(t, text, sizeof text - 1, FI_TOK_HF_DEFAULT, &ids) == FI_OK) {
		if (fi_tok_decode(t, ids.v, ids.n, 0, &d, &n) == FI_OK)
			free(d);
		for (size_t i = 0; i < ids.n; i++)
			if (ids.v[i] >= fi_tok_vocab_size(t))
				abort();
	}
	if (fi_tok_save_binary(t, &buf, &n) == FI_OK) {
		if (fi_tok_load_binary(buf, n, &b))
			abort();
		fi_tok_free(b);
		free(buf);
	}
	fi_tok_ids_free(&ids);
	fi_tok_free(t);
	return 0;
}
