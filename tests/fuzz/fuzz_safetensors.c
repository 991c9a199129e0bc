/* libFuzzer target: fi_st_parse over arbitrary bytes. A file that validates must hand out
 * tensor views that lie inside the input and agree with their shapes; every byte of every
 * tensor is read, so sanitizers see any view that escapes the buffer.
 *
 * An input that starts with '{' is also tried as "header JSON, NUL, data" with the length
 * prefix filled in, so the fuzzer can mutate the JSON without breaking the prefix. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

static void one(const uint8_t *data, size_t size)
{
	struct fi_st_file *f;
	if (fi_st_parse(data, size, &f) != FI_OK)
		return;
	for (int i = 0; i < f->n; i++) {
		const struct fi_tensor *t = &f->t[i];
		const uint8_t *p = t->data;
		int64_t n = fi_tensor_numel(t);
		volatile uint8_t x = 0;
		if (p < data || p + t->nbytes > data + size || n < 0 ||
		    (uint64_t)n * fi_dtype_size(t->dtype) != t->nbytes)
			abort();
		for (uint64_t k = 0; k < t->nbytes; k++)
			x ^= p[k];
		(void)x;
	}
	fi_st_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one(data, size);
	if (size && data[0] == '{') {
		const uint8_t *nul = memchr(data, 0, size);
		size_t h = nul ? (size_t)(nul - data) : size, rest = nul ? size - h - 1 : 0;
		uint8_t *b = malloc(8 + h + rest);
		if (!b)
			return 0;
		for (int i = 0; i < 8; i++)
			b[i] = (uint8_t)((uint64_t)h >> (8 * i));
		memcpy(b + 8, data, h);
		if (rest)
			memcpy(b + 8 + h, nul + 1, rest);
		one(b, 8 + h + rest);
		free(b);
	}
	return 0;
}
