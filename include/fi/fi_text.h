/* fi_text: text to token ids and back, and chat templates (libfi(3)).
 *
 * Tokenizers are Hugging Face tokenizer.json files reimplemented exactly (ids and decoded
 * text as the tokenizers library gives them); chat templates render as transformers'
 * apply_chat_template(tokenize=False) does, byte for byte. Both are immutable once loaded
 * and may be shared by threads. */
#ifndef FI_FI_TEXT_H
#define FI_FI_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "fi_err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fi_tok;
struct fi_tok_stream;
struct fi_chat;

/* A tokenizer.json file, its binary form, or a directory holding tokenizer.json. (The
 * tokenizer of an opened model: fi_llm_tokenizer.) */
fi_err fi_tok_load_path(const char *path, struct fi_tok **out);
void fi_tok_free(struct fi_tok *t);
uint32_t fi_tok_vocab_size(const struct fi_tok *t);

/* Encode flags: the post-processor's special tokens (BOS...), special-token text in the
 * input recognised as such, invalid UTF-8 replaced by U+FFFD (else FI_EINVAL). Hugging
 * Face's default is FI_TEXT_ADD_SPECIAL | FI_TEXT_PARSE_SPECIAL. */
enum {
	FI_TEXT_ADD_SPECIAL = 1,
	FI_TEXT_PARSE_SPECIAL = 2,
	FI_TEXT_REPLACE_INVALID = 4,
};
/* Decode flag: leave special tokens out. */
enum { FI_TEXT_SKIP_SPECIAL = 1 };

/* Encodes text[len] into a malloc'd array *ids of *n ids (free() it). */
fi_err fi_tokenize(const struct fi_tok *t, const char *text, size_t len, unsigned flags,
		   uint32_t **ids, size_t *n);
/* Decodes ids into a malloc'd NUL-terminated *text (free() it); *len may be NULL. */
fi_err fi_detokenize(const struct fi_tok *t, const uint32_t *ids, size_t n, unsigned flags,
		     char **text, size_t *len);

/* Streaming decode: text comes out as soon as it is complete UTF-8 that later ids cannot
 * change (the pieces concatenate to fi_detokenize of all the ids). *piece is valid until
 * the next call on s; *len 0 means nothing yet. */
fi_err fi_tok_stream_new(const struct fi_tok *t, unsigned flags, struct fi_tok_stream **out);
fi_err fi_tok_stream_step(struct fi_tok_stream *s, uint32_t id, const char **piece, size_t *len);
fi_err fi_tok_stream_flush(struct fi_tok_stream *s, const char **piece, size_t *len);
void fi_tok_stream_free(struct fi_tok_stream *s);

/* The chat template of a Hugging Face directory (tokenizer_config.json and
 * chat_template.jinja; name picks one of several templates, NULL the default). (The
 * template of an opened model: fi_llm_chat.) */
fi_err fi_chat_load_dir(struct fi_chat **out, const char *dir, const char *name);
void fi_chat_free(struct fi_chat *c);
/* Renders a conversation given as JSON text (an array of messages, or an object with
 * "messages" and optionally "tools" and template variables) into a malloc'd *out (free()
 * it); *len may be NULL. Render with add_generation_prompt to prompt a reply, and encode
 * the text with FI_TEXT_PARSE_SPECIAL and without FI_TEXT_ADD_SPECIAL, as transformers
 * does. */
fi_err fi_chat_render(const struct fi_chat *c, const char *request_json,
		      int add_generation_prompt, char **out, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
