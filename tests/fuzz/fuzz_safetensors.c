/* libFuzzer target: fi_st_parse over arbitrary bytes. A file that validates must hand out
 * tensor views that lie inside the input and agree with their shapes; every byte of every
 * tensor is read, so sanitizers see any view that escapes the buffer. */
#include <stdint.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fi_st_file *f;
	if (fi_st_parse(data, size, &f) != FI_OK)
		return 0;
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
	return 0;
}
