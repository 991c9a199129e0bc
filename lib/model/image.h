/* image: the fi model image (.fim), one flat file holding a model's config, tensors in the
 * dtype the engine computes with, and named blobs (tokenizer files, provenance).
 *
 * Layout (all integers little-endian; offsets are bytes from the start of the file):
 *
 *   header      128 bytes, struct fi_image_header
 *   config      config_len bytes of JSON (fi_config_to_json), then one NUL
 *   tensors     n_tensors x 160-byte entries (struct fi_image_tensor_ent), 8-aligned
 *   blobs       n_blobs x 96-byte entries (struct fi_image_blob_ent)
 *   blob data   each blob's bytes followed by one NUL, so text blobs are C strings
 *   data        at data_off (4096-aligned when written, 256 required); data_size bytes;
 *               each tensor at data_off + offset, offset 256-aligned, zero padding between
 *
 * The fingerprint is SHA-256 over the config JSON (config_len bytes), the tensor table
 * (n_tensors x 160 bytes) and the data section (data_size bytes). Tensor offsets are relative
 * to data_off, so blobs (tokenizer, provenance, creation time) never change the fingerprint:
 * the same weights converted twice give the same fingerprint, and the KV arena keys on it.
 *
 * Every float tensor is stored in the image dtype (header field dtype: bf16 by default, or
 * f16 or f32), norm weights and biases included. Linear weights (and embeddings) may instead
 * carry a quantized dtype (base/quant.h: FP8, INT4, GGML Q8_0 .. Q6_K): 2-D, logical shape
 * [rows, cols], nbytes that of the layout, validated like the rest (header fields, sizes, an
 * INT4 permutation) when the image is opened. Opening validates everything before use: magic,
 * version, sizes, section order and bounds, alignment, NUL-terminated names, dtypes, nbytes
 * = numel x size, no overlap, unique names, then parses the config and cross-checks it
 * against the tensors (fi_config_check). Any failure is FI_EFORMAT naming the file and the
 * field, never a crash. */
#ifndef FI_IMAGE_H
#define FI_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "base/err.h"
#include "base/tensor.h"

#define FI_IMAGE_MAGIC "FIMG"
#define FI_IMAGE_VERSION 1
#define FI_IMAGE_HEADER_SIZE 128
#define FI_IMAGE_ALIGN 256       /* tensor data alignment */
#define FI_IMAGE_NAME_MAX 64     /* tensor and blob names, NUL included */
#define FI_IMAGE_MAX_TENSORS (1u << 20)
#define FI_IMAGE_MAX_BLOBS 1024
#define FI_IMAGE_MAX_CONFIG (1u << 20)

/* On-disk structures (fixed sizes, checked by static asserts in image.c). */
struct fi_image_header {
	char magic[4];          /* "FIMG" */
	uint32_t version;       /* FI_IMAGE_VERSION */
	uint32_t header_size;   /* 128 */
	uint32_t flags;         /* 0; no flags defined yet */
	uint32_t n_tensors;
	uint32_t n_blobs;
	uint64_t file_size;     /* must equal the file's size: catches truncation */
	uint64_t config_off, config_len;
	uint64_t tensors_off;
	uint64_t blobs_off;
	uint64_t data_off, data_size;
	uint8_t fingerprint[32];
	uint32_t dtype;         /* enum fi_dtype every tensor is stored in */
	uint32_t reserved[3];   /* 0 */
};

struct fi_image_tensor_ent {
	char name[FI_IMAGE_NAME_MAX]; /* engine name, NUL-terminated, NUL-padded */
	uint32_t dtype;
	uint32_t ndim;                /* 1..FI_MAX_DIMS */
	int64_t shape[FI_MAX_DIMS];   /* unused dims 0 */
	uint64_t offset;              /* from data_off, FI_IMAGE_ALIGN-aligned */
	uint64_t nbytes;              /* numel x dtype size */
	uint64_t reserved;            /* 0 */
};

struct fi_image_blob_ent {
	char name[FI_IMAGE_NAME_MAX];
	uint64_t offset;              /* absolute; the byte at offset + size is NUL */
	uint64_t size;
	uint64_t reserved[2];
};

/* A named blob: tokenizer.json, tokenizer_config.json, chat_template.jinja,
 * generation_config.json, config.json (the HF original), provenance.json. data is
 * NUL-terminated (data[size] == 0) inside an open image. */
struct fi_image_blob {
	const char *name;
	const void *data;
	size_t size;
};

/* An open image. Everything points into the read-only map; valid until fi_image_close. */
struct fi_image {
	char *path;                  /* as opened ("<memory>" for fi_image_parse) */
	const uint8_t *map;
	size_t size;                 /* file size */
	int mapped;
	enum fi_dtype dtype;         /* image dtype */
	struct fi_config config;
	const char *config_json;     /* NUL-terminated, inside the map */
	struct fi_tensor_set set;    /* engine names; data points into the map */
	int n_blobs;
	struct fi_image_blob *blobs;
	uint8_t fingerprint[32];
	char fingerprint_hex[65];
	struct fi_tensor *t_;        /* storage behind set.t */
	/* fi_image_random: no file; tensors without data, drawn by the backend */
	int random;
	uint64_t random_seed;
	void *own_;                  /* storage of a random image */
	void *own_q_;                /* and of its ternary weights (BitNet), made on the host */
};

/* An in-memory image with random weights for a config alone (--load-format dummy): arg is
 * a directory holding config.json (its generation_config.json and tokenizer files are used
 * when present) or a config.json file. Its tensors have the config's shapes and no data
 * (NULL): a backend with random_weights set (backend.h) draws them where they live, so a
 * model of any size needs no host memory for weights. random is 1, and the fingerprint
 * covers the config and the seed: KV computed with it never mixes with a real model's. */
fi_err fi_image_random(const char *arg, uint64_t seed, struct fi_image **out);

/* Maps path read-only and validates it. The error names the file and what is wrong. */
fi_err fi_image_open(const char *path, struct fi_image **out);
/* Validates an image held in memory (the caller keeps buf alive, 8-byte aligned as malloc
 * and mmap give); for tests and the fuzzer. */
fi_err fi_image_parse(const void *buf, size_t len, struct fi_image **out);
void fi_image_close(struct fi_image *im);
/* A blob by name, or NULL. */
const struct fi_image_blob *fi_image_blob(const struct fi_image *im, const char *name);
/* Recomputes the fingerprint over the whole image (reads every byte) and compares it with
 * the header: FI_EMISMATCH if the data was altered. Opening does not do this (it would
 * read the whole file); fi-load does it after writing. */
fi_err fi_image_verify(const struct fi_image *im);
/* Total elements of all tensors. */
long long fi_image_params(const struct fi_image *im);

/* Writing. One tensor to write: its engine name, shape and source data (numel elements of
 * src_dtype, any compute dtype); it is converted to the image dtype as it is written. */
struct fi_image_src {
	const char *name;
	int ndim;
	int64_t shape[FI_MAX_DIMS];
	enum fi_dtype src_dtype;
	const void *src;
	/* A quantized src_dtype (quant.h) is written as it is, in its own dtype: a 2-D weight
	 * of src_nbytes bytes in its layout. Element dtypes leave this 0. */
	uint64_t src_nbytes;
};

#define FI_IMAGE_OVERWRITE 1u  /* replace an existing file (else FI_EEXIST) */
#define FI_IMAGE_PROGRESS 2u   /* draw a progress bar (when stderr is a terminal) */
#define FI_IMAGE_QUANT_FP8 4u  /* fi_image_convert_hf: linear layers to FP8 W8A8 (quant_hf.h) */

/* Writes an image atomically: a temporary file in path's directory, written, fsync'd,
 * reopened and validated (fi_config_check included), then renamed over path and the
 * directory fsync'd. On any failure nothing is left behind. The tensor set is checked
 * against the config before any data is written. fingerprint_out may be NULL. */
fi_err fi_image_write(const char *path, const struct fi_config *c, enum fi_dtype dtype,
		      const struct fi_image_src *t, int n, const struct fi_image_blob *blobs,
		      int n_blobs, unsigned flags, uint8_t fingerprint_out[32]);

/* Converts a Hugging Face directory (config.json, model.safetensors or a sharded index,
 * tokenizer files) into an image at path: HF names mapped with fi_name_from_hf (an unknown
 * name is an error naming it; names mapping to nothing are skipped; "output" is dropped
 * when embeddings are tied), dtypes converted (F32/F16/BF16 sources), quantized checkpoints
 * (FP8, compressed-tensors FP8, AWQ, GPTQ) converted to fi's quantized layouts and, with
 * FI_IMAGE_QUANT_FP8, linear layers quantized to FP8 (quant_hf.h), blobs copied,
 * provenance.json recorded ({"source", "created", "fi_version", "source_dtype", and
 * "quantization" when there is one}). */
fi_err fi_image_convert_hf(const char *dir, const char *path, enum fi_dtype dtype, unsigned flags);

/* Converts a GGUF file (gguf.h; architectures llama, qwen2, qwen3) into an image at path:
 * the config from its keys, F32/F16/BF16 tensors converted to dtype, Q8_0, Q4_0, Q4_K, Q5_K
 * and Q6_K kept as they are (scales checked), llama's q/k rows permuted back to HF order,
 * the tokenizer rebuilt as tokenizer.json and tokenizer_config.json (gguf_tok.c). */
fi_err fi_image_convert_gguf(const char *file, const char *path, enum fi_dtype dtype,
			     unsigned flags);
/* A directory (Hugging Face) or a GGUF file, whichever src is. */
fi_err fi_image_convert(const char *src, const char *path, enum fi_dtype dtype, unsigned flags);

/* Unlinks the temporary file of a write in progress when SIGINT, SIGTERM or SIGHUP arrives,
 * then dies by the signal. Commands that write images call it once. */
void fi_image_cleanup_on_signal(void);

#endif
