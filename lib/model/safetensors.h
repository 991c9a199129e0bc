/* safetensors: memory-mapped, fully validated safetensors files and sharded checkpoints.
 *
 * Validation before any tensor is used: header length <= 100 MB and inside the file; the
 * header is a UTF-8 JSON object; every entry has a known dtype, a shape of non-negative
 * dims whose element count x dtype size does not overflow and equals end - begin;
 * data_offsets lie inside the data section; tensors neither overlap nor leave gaps;
 * names are unique. "__metadata__" (string -> string) is allowed and kept. */
#ifndef FI_SAFETENSORS_H
#define FI_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/tensor.h"

#define FI_ST_MAX_HEADER (100u * 1000u * 1000u)

struct fi_st_file {
	char *path;
	const uint8_t *map; /* whole file (mmap, or caller's buffer for fi_st_parse) */
	size_t size;
	int mapped;
	int n;                  /* tensors */
	struct fi_tensor *t;    /* names are HF names; data points into map */
};

/* Opens and validates one file (mmap, read-only). The error names the file and the
 * offending tensor or key. */
fi_err fi_st_open(const char *path, struct fi_st_file **out);
/* Validates an in-memory image (the caller keeps buf alive); used by tests and the fuzzer. */
fi_err fi_st_parse(const void *buf, size_t len, struct fi_st_file **out);
void fi_st_close(struct fi_st_file *f);
/* The string a "__metadata__" key maps to ("format" -> "pt"), or NULL. */
const char *fi_st_metadata(const struct fi_st_file *f, const char *key);

/* A checkpoint: DIR/model.safetensors, or the shards listed by
 * DIR/model.safetensors.index.json ("weight_map": name -> shard file). Each tensor must be
 * in the shard the index names, and a name may appear in only one shard. */
struct fi_st_model {
	int n_files;
	struct fi_st_file **files;
	struct fi_tensor_set set; /* all tensors of all shards, HF names */
	struct fi_tensor *all;
};
fi_err fi_st_open_dir(const char *dir, struct fi_st_model **out);
/* Validates an index.json text against shard tensor lists (used by fi_st_open_dir, tests
 * and the fuzzer): fills shard file names (malloc'd, *n_out entries, unique, sorted). */
fi_err fi_st_parse_index(const char *json, size_t len, char ***files_out, int *n_out);
/* Frees what fi_st_parse_index returned. */
void fi_st_free_names(char **files, int n);
void fi_st_close_dir(struct fi_st_model *m);

#endif
