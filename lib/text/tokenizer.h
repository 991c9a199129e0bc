/* tokenizer: Hugging Face tokenizer.json reimplemented exactly.
 *
 * Pipeline, as the `tokenizers` library runs it: added tokens that are not normalized are split
 * out of the raw text; the rest is normalized (NFC, NFD, NFKC, NFKD, Prepend, Replace,
 * Lowercase, Strip, StripAccents, BertNormalizer, Nmt, ByteLevel, Precompiled, Sequence);
 * added tokens that are normalized are split out of the normalized text; the rest is
 * pre-tokenized (ByteLevel, Split, Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit,
 * CharDelimiterSplit, BertPreTokenizer, FixedLength, UnicodeScripts, Sequence); each piece
 * goes through the model (BPE, Unigram, WordPiece or WordLevel; a file without model.type gets
 * the kind its fields imply, as in HF); a post-processor (TemplateProcessing, BertProcessing,
 * RobertaProcessing, ByteLevel, Sequence) adds special tokens. Decoding runs the decoder chain
 * (ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, BPEDecoder, WordPiece, CTC,
 * Sequence).
 *
 * Text is UTF-8. Invalid UTF-8 given to fi_tok_encode() is an FI_EINVAL naming the byte offset,
 * unless FI_TOK_REPLACE_INVALID is set: then each maximal invalid subsequence becomes U+FFFD,
 * exactly as Python's bytes.decode('utf-8', errors='replace') does (fi-tokenize sets it).
 *
 * A loaded tokenizer is immutable and may be shared by threads; each encode call borrows
 * private scratch (and a word cache) from a small pool inside the tokenizer.
 *
 * Character classes come from PCRE2 (regexes, \p{L} etc.) and utf8proc (normalization,
 * categories). HF's come from Oniguruma, the Rust regex crate and older Rust Unicode crates, so
 * text holding characters whose Unicode properties differ between those table versions can
 * split differently: chiefly characters assigned after Unicode 14 (PCRE2 10.42's tables), and
 * for BertNormalizer, StripAccents, BertPreTokenizer and UnicodeScripts, whose HF tables are
 * older still, characters assigned since about Unicode 10. Everything else matches HF exactly.
 *
 * Loading tokenizer.json parses the whole JSON (about 0.2 s for a 128K vocabulary); the
 * binary form (fi_tok_save_binary) loads many times faster and is what a model image stores. */
#ifndef FI_TOKENIZER_H
#define FI_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

struct fi_tok;

/* Encode flags. */
enum {
	FI_TOK_ADD_SPECIAL = 1,     /* run the post-processor (BOS etc.), like HF's default */
	FI_TOK_PARSE_SPECIAL = 2,   /* recognise special added tokens in the text (HF default) */
	FI_TOK_REPLACE_INVALID = 4, /* invalid UTF-8 -> U+FFFD instead of FI_EINVAL */
};
#define FI_TOK_HF_DEFAULT (FI_TOK_ADD_SPECIAL | FI_TOK_PARSE_SPECIAL)

/* Decode flags. */
enum { FI_TOK_SKIP_SPECIAL = 1 };

/* A growable list of token ids; encode appends. Free with fi_tok_ids_free. */
struct fi_tok_ids {
	uint32_t *v;
	size_t n, cap;
};
void fi_tok_ids_free(struct fi_tok_ids *ids);

/* tokenizer.json text (need not be NUL-terminated). */
fi_err fi_tok_load_json(const char *json, size_t len, struct fi_tok **out);
/* The binary form written by fi_tok_save_binary. Every size and id is checked. */
fi_err fi_tok_load_binary(const void *buf, size_t len, struct fi_tok **out);
/* Either form, told apart by the binary magic. */
fi_err fi_tok_load_mem(const void *buf, size_t len, struct fi_tok **out);
/* A tokenizer.json (or binary) file, or a directory holding tokenizer.json. */
fi_err fi_tok_load_path(const char *path, struct fi_tok **out);
void fi_tok_free(struct fi_tok *t);

/* The binary form of a loaded tokenizer (malloc'd; the caller frees *buf). */
fi_err fi_tok_save_binary(const struct fi_tok *t, void **buf, size_t *len);
/* True when buf starts with the binary magic. */
int fi_tok_is_binary(const void *buf, size_t len);

/* Encodes text, appending ids to *out. The truncation and padding sections of
 * tokenizer.json are ignored: prompts are never cut or padded here (the engine checks them
 * against the context). A pre-tokenizer or Replace regex that backtracks past PCRE2's match
 * limit (10 million steps) on this text fails with FI_ERANGE instead of running for seconds. */
fi_err fi_tok_encode(const struct fi_tok *t, const char *text, size_t len, unsigned flags,
		     struct fi_tok_ids *out);

/* Decodes ids to a malloc'd NUL-terminated string (like HF decode). Unknown ids are skipped,
 * as HF does. */
fi_err fi_tok_decode(const struct fi_tok *t, const uint32_t *ids, size_t n, unsigned flags,
		     char **text, size_t *len);

/* Vocabulary: total id space (model vocabulary and added tokens), id <-> token string. */
uint32_t fi_tok_vocab_size(const struct fi_tok *t);
/* The token's string (not NUL-terminated: *len) or NULL when id is unknown. */
const char *fi_tok_id_to_token(const struct fi_tok *t, uint32_t id, size_t *len);
/* Returns 0 and sets *id, or -1 when the token does not exist. */
int fi_tok_token_to_id(const struct fi_tok *t, const char *tok, size_t len, uint32_t *id);
/* True when decoding with FI_TOK_SKIP_SPECIAL drops id. As in HF this compares the string
 * decoding uses with the special tokens' contents, so a normalized special token whose
 * normalized form differs (Llama-2's "<s>" -> "\u2581<s>") is not dropped. */
int fi_tok_is_special(const struct fi_tok *t, uint32_t id);

/* Streaming decode: feed ids one at a time and get text as soon as it is complete UTF-8 that
 * the rest of the sequence cannot change (HF's DecodeStream algorithm: a text is released
 * once the decode of the window no longer ends in U+FFFD). */
struct fi_tok_stream;
fi_err fi_tok_stream_new(const struct fi_tok *t, unsigned flags, struct fi_tok_stream **out);
void fi_tok_stream_free(struct fi_tok_stream *s);
/* Adds one id. *piece gets new text (valid until the next call), *len its length (0: none). */
fi_err fi_tok_stream_step(struct fi_tok_stream *s, uint32_t id, const char **piece, size_t *len);
/* End of sequence: releases whatever text is held back (possibly ending in U+FFFD). */
fi_err fi_tok_stream_flush(struct fi_tok_stream *s, const char **piece, size_t *len);
/* Forgets all state for a new sequence. */
void fi_tok_stream_reset(struct fi_tok_stream *s);

#endif
