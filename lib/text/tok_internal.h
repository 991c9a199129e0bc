/* Internal structures of the tokenizer (lib/tok_*.c). Not installed API. */
#ifndef FI_TOK_INTERNAL_H
#define FI_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Pieces longer than this skip the word cache (HF's MAX_LENGTH is the same idea). */
#define TOK_CACHE_MAX_WORD 256
#define TOK_CACHE_SLOTS 65536
/* PCRE2 match and depth limits for one match call (PCRE2's own default). */
#define TOK_RE_MATCH_LIMIT 10000000u
/* Nesting of Sequence normalizers / pre-tokenizers / decoders accepted from JSON. */
#define TOK_MAX_DEPTH 16

/* ---- growable byte buffer ---- */
struct tok_buf {
	char *p;
	size_t n, cap;
};
int tok_buf_reserve(struct tok_buf *b, size_t extra);
int tok_buf_put(struct tok_buf *b, const void *s, size_t n);
void tok_buf_free(struct tok_buf *b);

/* ---- pieces: substrings of one buffer ---- */
struct tok_piece {
	uint32_t off, len;
	uint8_t first; /* starts at offset 0 of the original input (Metaspace "first") */
};
struct tok_pieces {
	struct tok_buf b;
	struct tok_piece *v;
	size_t n, cap;
};
int tok_pieces_add(struct tok_pieces *p, uint32_t off, uint32_t len, int first);
void tok_pieces_free(struct tok_pieces *p);

/* A stretch of a string and whether the pattern matched it (HF Pattern::find_matches). */
struct tok_seg {
	uint32_t s, e;
	uint8_t match;
};

enum tok_behavior { TB_REMOVED, TB_ISOLATED, TB_MERGED_PREV, TB_MERGED_NEXT, TB_CONTIGUOUS };

/* ---- pipeline components ---- */
enum { TN_SEQ, TN_NFC, TN_NFD, TN_NFKC, TN_NFKD, TN_LOWER, TN_PREPEND, TN_REPLACE, TN_STRIP,
       TN_BERT, TN_STRIP_ACCENTS, TN_NMT, TN_PRECOMPILED, TN_BYTELEVEL };
struct tok_precompiled;
struct tok_norm {
	int type;
	struct tok_norm *sub;
	size_t nsub;
	char *s; /* Prepend text, Replace content */
	size_t slen;
	pcre2_code *re; /* Replace pattern */
	int left, right;
	/* BertNormalizer */
	int clean_text, chinese, strip_accents, lowercase;
	struct tok_precompiled *pc; /* Precompiled (SentencePiece charsmap) */
};

enum { TP_SEQ, TP_BYTELEVEL, TP_SPLIT, TP_METASPACE, TP_DIGITS, TP_PUNCT, TP_WHITESPACE,
       TP_WSSPLIT, TP_CHARDELIM, TP_FIXEDLEN, TP_SCRIPTS };
struct tok_pre {
	int type;
	struct tok_pre *sub;
	size_t nsub;
	int add_prefix_space, use_regex; /* ByteLevel */
	pcre2_code *re;                  /* Split, ByteLevel (shared GPT-2 regex), Whitespace */
	int behavior, invert;            /* Split, Punctuation */
	uint32_t ch;                     /* Metaspace replacement, CharDelimiterSplit */
	int prepend;                     /* Metaspace: 0 never, 1 first, 2 always */
	int split;                       /* Metaspace */
	int individual;                  /* Digits */
	uint32_t length;                 /* FixedLength: chars a piece */
};

enum { TD_SEQ, TD_BYTELEVEL, TD_BYTEFALLBACK, TD_FUSE, TD_STRIP, TD_REPLACE, TD_METASPACE,
       TD_BPE, TD_WORDPIECE, TD_CTC };
struct tok_dec {
	int type;
	struct tok_dec *sub;
	size_t nsub;
	pcre2_code *re; /* Replace */
	char *s;        /* Replace content; BPEDecoder suffix; WordPiece prefix; CTC pad token */
	size_t slen;
	char *s2;       /* CTC word delimiter */
	size_t s2len;
	int cleanup;    /* WordPiece, CTC */
	uint32_t ch;    /* Strip content, Metaspace replacement */
	int start, stop;
	int prepend;    /* Metaspace: 0 never */
};

enum { TPP_SEQ, TPP_TEMPLATE, TPP_NOOP };
struct tok_post {
	int type;
	struct tok_post *sub;
	size_t nsub;
	uint32_t *pre, *post; /* ids before and after $A */
	size_t npre, npost;
};

/* ---- the model ----
 * One vocabulary store (strings by id, a string -> id hash) for the four model kinds of
 * tokenizer.json: BPE (merges), Unigram (scores, a byte trie for the lattice), WordPiece
 * (greedy longest match with a continuing prefix) and WordLevel (whole-word lookup). */
enum { TM_BPE, TM_UNIGRAM, TM_WORDPIECE, TM_WORDLEVEL };
struct tok_bpe {
	int kind;          /* TM_* */
	uint32_t id_space; /* max id + 1 */
	uint32_t nvocab;   /* entries (HF get_vocab_size) */
	char *pool;        /* token strings by id: pool[off[id] .. off[id+1]) */
	size_t pool_len;
	uint32_t *off;
	uint8_t *present;
	uint32_t *slots; /* string hash -> id + 1 */
	uint32_t mask;
	/* merges by rank: a, b, new id; and a hash (a,b) -> rank */
	uint32_t nmerges;
	uint32_t *merge; /* 3 * nmerges */
	uint64_t *mkey;
	uint32_t *mval; /* rank + 1 (0 = empty) */
	uint32_t mmask;
	int64_t unk_id;
	char *unk; /* unk_token string */
	size_t unk_len;
	char *cprefix, *eow; /* continuing_subword_prefix, end_of_word_suffix (NULL: none) */
	size_t cprefix_len, eow_len;
	int fuse_unk, byte_fallback, ignore_merges;
	int64_t byte_id[256];
	uint32_t max_len;   /* longest vocabulary string, bytes */
	uint32_t max_chars; /* WordPiece max_input_chars_per_word */
	/* Unigram: score by id, the lowest score, and a byte trie of the strings: node 0 is the
	 * root, uid[node] the token ending there (-1: none), edges in an open-addressing hash
	 * of (node << 8 | byte) -> child (key UINT32_MAX: empty). */
	double *score;
	double min_score;
	int32_t *uid;
	uint32_t nun, uidcap;
	uint32_t *ekey, *eval;
	uint32_t emask, nedge;
};

struct tok_added {
	uint32_t id;
	char *content, *norm;
	const char *dec; /* string used when decoding: norm when it differs, else content */
	uint32_t len, norm_len, dec_len;
	uint8_t special, lstrip, rstrip, normalized, single_word;
};

struct tok_trie_node {
	uint32_t child, sibling; /* 0: none (node 0 is the root) */
	int32_t value;           /* index into added[], or -1 */
	uint8_t byte;
};
struct tok_trie {
	struct tok_trie_node *v;
	size_t n, cap;
	uint8_t first[256]; /* bytes that start some pattern */
};

struct tok_ctx;

struct fi_tok {
	struct tok_bpe bpe;
	struct tok_norm *norm;
	struct tok_pre *pre;
	struct tok_post *post;
	struct tok_dec *dec;
	struct tok_added *added;
	size_t nadded;
	struct tok_trie trie_raw, trie_norm;
	uint32_t id_space;
	int32_t *added_of_id; /* id -> added index or -1 */
	uint8_t *special;     /* id -> token string is a special added token */
	char *json_rest;      /* tokenizer.json without model vocab and merges (binary form) */
	size_t json_rest_len;
	pcre2_code *re_word;  /* one word character, for single_word tokens */
	pthread_mutex_t lock;
	struct tok_ctx *pool[8];
	int npool;
};

/* ---- scratch for one encode call ---- */
struct tok_cache_ent {
	uint64_t h;
	uint32_t koff, klen, voff, vn;
};
struct tok_sym {
	uint32_t c;
	int32_t prev, next;
	uint32_t len;
};
struct tok_merge_ev {
	uint32_t rank, pos, new_id;
};
/* A list of strings (decoding): b holds them back to back, end[i] where string i ends. */
struct tok_dlist {
	struct tok_buf b;
	uint32_t *end;
	size_t n, cap;
};

/* Unigram lattice: best path ending at each byte offset. */
struct tok_best {
	double score;
	int32_t start; /* -1: not reached */
	uint32_t id;
};
struct tok_ctx {
	pcre2_match_data *md;
	pcre2_match_context *mc;
	pcre2_jit_stack *js;
	struct tok_buf text, norm, tmp;
	struct tok_pieces pa, pb;
	struct tok_seg *segs;
	size_t nsegs, segcap;
	struct tok_sym *sym;
	size_t symcap;
	struct tok_merge_ev *heap;
	size_t heapcap;
	struct tok_best *best;
	size_t bestcap;
	struct tok_dlist da, db; /* decoding */
	/* word cache: open addressing, cleared when full */
	uint32_t *cslot;
	struct tok_cache_ent *cent;
	size_t cn;
	struct tok_buf ckeys;
	uint32_t *cids;
	size_t cidn, cidcap;
};

/* ---- helpers (tok_util.c) ---- */
uint64_t tok_hash(const void *p, size_t n);
/* Length of a valid UTF-8 sequence at s (n bytes left), or 0 when invalid. */
size_t tok_utf8_valid_len(const unsigned char *s, size_t n);
/* Decodes one char of valid UTF-8; returns its length. */
size_t tok_utf8_dec(const char *s, uint32_t *cp);
size_t tok_utf8_enc(uint32_t cp, char *out);
/* Copies s to out, replacing invalid sequences by U+FFFD like Rust from_utf8_lossy and
 * Python errors='replace' (maximal subparts). */
int tok_utf8_lossy(const char *s, size_t n, struct tok_buf *out);
/* Offset of the first invalid byte, or n. */
size_t tok_utf8_check(const char *s, size_t n);
int tok_is_whitespace(uint32_t c); /* Rust char::is_whitespace (White_Space) */
int tok_is_numeric(uint32_t c);    /* Nd, Nl, No */
int tok_is_punct(uint32_t c);      /* ASCII punctuation or P* */
/* GPT-2's byte-to-char map: the char byte b stands for (UTF-8, 1 or 2 bytes) into out;
 * tok_bytelevel_byte is its inverse (-1: no byte). */
size_t tok_bytelevel_char(unsigned char b, char *out);
int tok_bytelevel_byte(uint32_t cp);
/* Rust str::replace: every non-overlapping `from` (empty: every char boundary) -> `to`. */
int tok_replace_all(const char *s, size_t n, const char *from, size_t fn, const char *to, size_t tn,
		    struct tok_buf *out);

pcre2_code *tok_re_compile(const char *pat, size_t len, int literal, const char *what);
/* All matches with the onig crate's find_iter rules (no empty match right after a match). */
int tok_re_segments(struct tok_ctx *c, const pcre2_code *re, const char *s, size_t n);
/* Char-predicate matches (HF impl Pattern for Fn(char) -> bool). */
int tok_pred_segments(struct tok_ctx *c, int (*pred)(uint32_t, uint32_t), uint32_t arg,
		      const char *s, size_t n);
int tok_segs_push(struct tok_ctx *c, uint32_t s, uint32_t e, int match);

struct tok_ctx *tok_ctx_get(const struct fi_tok *t);
void tok_ctx_put(const struct fi_tok *t, struct tok_ctx *c);
void tok_ctx_free(struct tok_ctx *c);

/* ---- components ---- */
fi_err tok_norm_parse(json_t *j, struct tok_norm *n, int depth);
void tok_norm_free(struct tok_norm *n);
fi_err tok_norm_apply(struct tok_ctx *c, const struct tok_norm *n, const char *s, size_t len,
		      struct tok_buf *out);

fi_err tok_pre_parse(json_t *j, struct tok_pre *p, int depth);
void tok_pre_free(struct tok_pre *p);
/* Runs the pre-tokenizer over one string; pieces end up in c->pa. */
fi_err tok_pre_run(struct tok_ctx *c, const struct tok_pre *p, const char *s, size_t len,
		   int first);

fi_err tok_dec_parse(json_t *j, struct tok_dec *d, int depth);
void tok_dec_free(struct tok_dec *d);

fi_err tok_post_parse(const struct fi_tok *t, json_t *j, struct tok_post *p, int depth);
void tok_post_free(struct tok_post *p);

/* The model section: its kind from "type", or inferred from the fields as HF does for
 * files written before "type" existed (BPE: vocab and merges; WordPiece: vocab, unk_token,
 * continuing_subword_prefix, max_input_chars_per_word; WordLevel: vocab and unk_token;
 * Unigram: vocab as a list). tok_model_kind_name gives the name stored in the binary form. */
fi_err tok_model_kind(json_t *model, int *kind);
const char *tok_model_kind_name(int kind);
fi_err tok_model_parse(json_t *model, struct tok_bpe *b);
/* Options and derived tables after the vocabulary (and merges, scores) are in place. */
fi_err tok_model_finish(json_t *model, struct tok_bpe *b);
fi_err tok_model_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
			struct fi_tok_ids *out);

fi_err tok_vocab_parse_object(json_t *vocab, struct tok_bpe *b);
fi_err tok_bpe_parse(json_t *model, struct tok_bpe *b);
fi_err tok_bpe_parse_options(json_t *model, struct tok_bpe *b);
fi_err tok_bpe_build_hashes(struct tok_bpe *b);
void tok_bpe_free(struct tok_bpe *b);
int64_t tok_bpe_lookup(const struct tok_bpe *b, const char *s, size_t n);
fi_err tok_bpe_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
		      struct fi_tok_ids *out);
/* The per-scratch word cache (word -> ids) the models share. */
int tok_cache_get(struct tok_ctx *c, uint64_t h, const char *s, size_t n, struct fi_tok_ids *out);
void tok_cache_put(struct tok_ctx *c, uint64_t h, const char *s, size_t n, const uint32_t *ids,
		   size_t nids);

fi_err tok_unigram_parse(json_t *model, struct tok_bpe *b);
fi_err tok_unigram_build(struct tok_bpe *b);
fi_err tok_unigram_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
			  struct fi_tok_ids *out);
fi_err tok_wordpiece_encode(struct tok_ctx *c, const struct tok_bpe *b, const char *s, size_t n,
			    struct fi_tok_ids *out);

/* Unicode scripts (lib/text/tok_scripts.c): 0 for Any, else an id per script; _fixed folds
 * Hiragana, Katakana and U+30FC into Han and makes ' ' Any, as HF's UnicodeScripts does. */
int tok_script_of(uint32_t cp);
int tok_script_fixed(uint32_t cp);

/* Precompiled normalizer (lib/text/tok_precompiled.c). */
fi_err tok_precompiled_parse(json_t *j, struct tok_precompiled **out);
void tok_precompiled_free(struct tok_precompiled *p);
fi_err tok_precompiled_apply(const struct tok_precompiled *p, const char *s, size_t n,
			     struct tok_buf *out);

fi_err tok_added_parse(struct fi_tok *t, json_t *arr);
fi_err tok_added_build(struct fi_tok *t);
void tok_added_free(struct fi_tok *t);
/* AddedVocabulary::find_matches: s split into plain stretches and added-token matches
 * (lstrip/rstrip widen a match), covering s in order. */
struct tok_asplit {
	uint32_t s, e;
	int32_t added; /* -1: plain text */
};
fi_err tok_added_find(const struct fi_tok *t, const struct tok_trie *tr, int parse_special,
		      const char *s, size_t n, struct tok_asplit **out, size_t *nout, size_t *cap);

/* Finishes a tokenizer whose model and json pipeline are set: added tokens, id tables. */
fi_err tok_finish(struct fi_tok *t, json_t *root);
fi_err tok_parse_pipeline(struct fi_tok *t, json_t *root);

int tok_ids_push(struct fi_tok_ids *ids, uint32_t id);

#endif
