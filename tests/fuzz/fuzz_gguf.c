/* libFuzzer target: fi_gguf_parse over arbitrary bytes. A file that validates must hand out
 * tensors inside the input whose sizes agree with their types and shapes (every byte is
 * read, so sanitizers see a view that escapes the buffer), keys whose values lie inside it,
 * and a tokenizer that is rebuilt (gguf_tok.c) or refused with an error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fi_gguf *g;
	char *tok = NULL, *cfg = NULL;
	volatile uint8_t x = 0;
	if (fi_gguf_parse(data, size, &g) != FI_OK)
		return 0;
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct fi_gguf_tensor *t = &g->t[i];
		int bytes, blk = fi_ggml_block(t->type, &bytes);
		uint64_t n = 1;
		for (int d = 0; d < FI_GGUF_MAX_DIMS; d++)
			n *= (uint64_t)t->ne[d];
		if (!blk || t->data < data || t->data + t->nbytes > data + size ||
		    n / (uint64_t)blk * (uint64_t)bytes != t->nbytes)
			abort();
		for (uint64_t k = 0; k < t->nbytes; k++)
			x ^= t->data[k];
	}
	for (uint64_t i = 0; i < g->n_kv; i++) {
		const struct fi_gguf_kv *kv = &g->kv[i];
		if (kv->data < data || kv->data + kv->bytes > data + size)
			abort();
		for (uint64_t k = 0; k < kv->bytes; k++)
			x ^= kv->data[k];
	}
	(void)x;
	if (!fi_gguf_tokenizer(g, &tok, &cfg)) {
		free(tok);
		free(cfg);
	}
	fi_gguf_close(g);
	return 0;
}
