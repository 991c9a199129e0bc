/* tok_ident: which tokenizer made a request's token ids.
 *
 * Token ids mean something only with the vocabulary that made them: ids from the Llama 3
 * tokenizer fed to a model with another one are valid numbers and silent garbage. A request
 * frame therefore carries the fingerprint of its tokenizer ("tokenizer": {"sha256", "name"},
 * fi-frame(5)), and a consumer whose model has another tokenizer refuses it.
 *
 * The fingerprint is the SHA-256 of the vocabulary: every id, in order, with its token string
 * (added tokens included), so it is a property of the tokenizer and not of the model or of
 * the file: two models that ship the same tokenizer agree, whether it was read from
 * tokenizer.json or from an image, and whatever the JSON's formatting. The name is only for
 * messages: the model argument it came from ("llama3" for -m llama3, "Llama-3.1-8B" for
 * -m ~/models/Llama-3.1-8B or ~/models/Llama-3.1-8B/tokenizer.json). */
#ifndef FI_TOK_IDENT_H
#define FI_TOK_IDENT_H

#include <stdint.h>

#include "base/err.h"
#include "tokenizer.h"

struct fi_tok_ident {
	uint8_t sha256[32];
	char hex[65]; /* sha256 in hex */
	char name[64];
};

/* The fingerprint of t, named after the model argument arg (NULL: "tokenizer"). */
fi_err fi_tok_ident(const struct fi_tok *t, const char *arg, struct fi_tok_ident *out);

/* The name of a model argument: its last path component without a .fim suffix, or the
 * directory's when the argument names a tokenizer file. */
void fi_tok_ident_name(const char *arg, char *out, size_t n);

#endif
