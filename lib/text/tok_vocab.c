/* Vocabulary queries of a loaded tokenizer: id <-> token string, special tokens. Decoding
 * and the commands use these; loading does not, so the calls run one way. */
#include <string.h>

#include "tok_internal.h"

uint32_t fi_tok_vocab_size(const struct fi_tok *t)
{
	return t->id_space;
}

const char *fi_tok_id_to_token(const struct fi_tok *t, uint32_t id, size_t *len)
{
	if (id >= t->id_space)
		return NULL;
	if (t->added_of_id[id] >= 0) {
		const struct tok_added *a = &t->added[t->added_of_id[id]];
		*len = a->len;
		return a->content;
	}
	if (id >= t->bpe.id_space || !t->bpe.present[id])
		return NULL;
	*len = t->bpe.off[id + 1] - t->bpe.off[id];
	return t->bpe.pool + t->bpe.off[id];
}

int fi_tok_token_to_id(const struct fi_tok *t, const char *tok, size_t len, uint32_t *id)
{
	int64_t r;
	for (size_t i = 0; i < t->nadded; i++)
		if (t->added[i].len == len && !memcmp(t->added[i].content, tok, len)) {
			*id = t->added[i].id;
			return 0;
		}
	if ((r = tok_bpe_lookup(&t->bpe, tok, len)) < 0)
		return -1;
	*id = (uint32_t)r;
	return 0;
}

int fi_tok_is_special(const struct fi_tok *t, uint32_t id)
{
	return id < t->id_space && t->special[id];
}
