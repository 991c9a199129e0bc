/* gguf: memory-mapped, fully validated GGUF files (versions 2 and 3).
 *
 * Layout: "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv key/value pairs (key a
 * string: u64 length + bytes; u32 value type; the value; arrays as u32 element type, u64
 * count, elements); n_tensors tensor infos (name, u32 n_dims <= 4, u64 ne[n_dims] innermost
 * first, u32 ggml type, u64 offset); padding to general.alignment (default 32); the data.
 *
 * Validated before anything is used, after the list of llama.cpp's GGUF advisories: every
 * length, count and array size is bounded by the bytes left in the file before it is
 * multiplied or allocated; strings are valid UTF-8 without NUL (keys and names), keys and
 * tensor names unique and non-empty, nested arrays refused; alignment a power of two;
 * n_dims 1..4, every dimension >= 1 with a product that does not overflow, ne[0] a whole
 * number of blocks of a known type; offsets aligned, each tensor's bytes inside the data
 * section, no two tensors overlapping. Any failure is FI_EFORMAT naming the file and the
 * item, never a crash. */
#ifndef FI_GGUF_H
#define FI_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum fi_gguf_type {
	FI_GGUF_U8 = 0, FI_GGUF_I8, FI_GGUF_U16, FI_GGUF_I16, FI_GGUF_U32, FI_GGUF_I32,
	FI_GGUF_F32, FI_GGUF_BOOL, FI_GGUF_STRING, FI_GGUF_ARRAY, FI_GGUF_U64, FI_GGUF_I64,
	FI_GGUF_F64, FI_GGUF_NTYPES
};

/* ggml tensor types fi knows the sizes of (all that gguf-py lists) and converts (these). */
enum {
	FI_GGML_F32 = 0, FI_GGML_F16 = 1, FI_GGML_Q4_0 = 2, FI_GGML_Q8_0 = 8, FI_GGML_Q4_K = 12,
	FI_GGML_Q5_K = 13, FI_GGML_Q6_K = 14, FI_GGML_BF16 = 30,
};

#define FI_GGUF_MAX_DIMS 4
#define FI_GGUF_NAME_MAX 64 /* tensor names, NUL included (ggml's GGML_MAX_NAME) */

struct fi_gguf_str {
	const char *p; /* inside the map, not NUL-terminated */
	uint64_t n;
};

struct fi_gguf_kv {
	struct fi_gguf_str key;
	uint32_t type;     /* enum fi_gguf_type */
	uint32_t arr_type; /* element type of an array */
	uint64_t n;        /* elements of an array (1 otherwise) */
	const uint8_t *data; /* the value, or the first element */
	uint64_t bytes;    /* of the value (all elements) */
};

struct fi_gguf_tensor {
	char name[FI_GGUF_NAME_MAX];
	int n_dims;
	int64_t ne[FI_GGUF_MAX_DIMS]; /* innermost first; unused dims 1 */
	uint32_t type;
	uint64_t offset;  /* from the data section */
	uint64_t nbytes;
	const uint8_t *data;
};

struct fi_gguf {
	char *path;
	const uint8_t *map;
	size_t size;
	int mapped;
	uint32_t version;
	uint32_t alignment;
	uint64_t data_off;
	uint64_t n_kv, n_tensors;
	struct fi_gguf_kv *kv;
	struct fi_gguf_tensor *t;
};

fi_err fi_gguf_open(const char *path, struct fi_gguf **out);
/* Validates a GGUF held in memory (the caller keeps buf alive); tests and the fuzzer. */
fi_err fi_gguf_parse(const void *buf, size_t len, struct fi_gguf **out);
void fi_gguf_close(struct fi_gguf *g);
/* 1 if path's first bytes are the GGUF magic. */
int fi_gguf_is(const char *path);

const struct fi_gguf_kv *fi_gguf_find(const struct fi_gguf *g, const char *key);
const struct fi_gguf_tensor *fi_gguf_tensor(const struct fi_gguf *g, const char *name);
/* Block size and bytes per block of a ggml type (0 when unknown); its name ("Q4_K"). */
int fi_ggml_block(uint32_t type, int *bytes);
const char *fi_ggml_name(uint32_t type);

/* The tokenizer the file carries as HF tokenizer.json and tokenizer_config.json text
 * (malloc'd; gguf_tok.c); FI_ENOTFOUND when it holds none. */
fi_err fi_gguf_tokenizer(const struct fi_gguf *g, char **tok_json, char **cfg_json);

/* Typed getters. An absent key gives FI_ENOTFOUND (not recorded, so optional keys read
 * quietly); a key of the wrong type FI_EFORMAT naming it. Integers of any integer type
 * that fit. */
fi_err fi_gguf_get_int(const struct fi_gguf *g, const char *key, int64_t *out);
fi_err fi_gguf_get_f64(const struct fi_gguf *g, const char *key, double *out);
fi_err fi_gguf_get_bool(const struct fi_gguf *g, const char *key, int *out);
/* A string value, NUL-terminated copy (malloc'd). */
fi_err fi_gguf_get_str(const struct fi_gguf *g, const char *key, char **out);
/* The elements of an array of strings (pointers into the map); *out malloc'd. */
fi_err fi_gguf_get_strs(const struct fi_gguf *g, const char *key, struct fi_gguf_str **out,
			uint64_t *n);
/* Element i of a numeric array as double / int64 (the caller checked i < n). */
double fi_gguf_arr_f64(const struct fi_gguf_kv *kv, uint64_t i);
int64_t fi_gguf_arr_int(const struct fi_gguf_kv *kv, uint64_t i);

#endif
