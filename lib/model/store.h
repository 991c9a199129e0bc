/* store: the model store ($FI_HOME/models/NAME.fim) and resolving `-m NAME|PATH`.
 *
 * $FI_HOME defaults to /dev/shm/fi-UID, so images live in memory-backed files that every
 * process maps without a copy; it is used only when no one else can write it (base/home.h:
 * otherwise every name fails with the reason). Store names are [A-Za-z0-9._-]+ (not "." or
 * "..", at most FI_STORE_NAME_MAX - 1 bytes). */
#ifndef FI_STORE_H
#define FI_STORE_H

#include <stdint.h>

#include "base/err.h"
#include "base/home.h" /* fi_home() */
#include "image.h"

#define FI_STORE_NAME_MAX 128
/* 1 if name is a valid store name. */
int fi_store_name_valid(const char *name);
/* $FI_HOME/models, created (with $FI_HOME) on demand when create is nonzero. */
fi_err fi_store_models_dir(char *out, size_t outsz, int create);
/* $FI_HOME/models/NAME.fim (FI_EINVAL for an invalid name). */
fi_err fi_store_path(const char *name, char *out, size_t outsz);

/* Images in the store, sorted by name. Files that fail to open are listed with im NULL
 * and err holding the reason. */
struct fi_store_entry {
	char name[FI_STORE_NAME_MAX];
	char *path;
	struct fi_image *im;
	char *err;
};
fi_err fi_store_list(struct fi_store_entry **out, int *n);
void fi_store_list_free(struct fi_store_entry *e, int n);
/* Removes NAME from the store (FI_ENOTFOUND if absent). */
fi_err fi_store_remove(const char *name);

/* Resolves `-m ARG` for every command:
 *   a store name          -> $FI_HOME/models/ARG.fim, when that exists: a name without a
 *                            slash finds the store first, as a shell finds a command, so
 *                            "./ARG" names a file or directory of the same name;
 *   an existing file      -> opened as an image;
 *   an existing directory -> a Hugging Face checkpoint converted on the fly (bf16) into a
 *                            temporary image in $FI_HOME/tmp (or $TMPDIR), which is unlinked
 *                            once mapped, so nothing is left behind (messages and the
 *                            image's path name the directory, never the temporary file);
 *   a GGUF file           -> converted on the fly the same way;
 *   otherwise             -> FI_ENOTFOUND "model 'x' not found in DIR (fi-load -l lists
 *                            models)". */
fi_err fi_store_open(const char *arg, struct fi_image **out);
/* What fi_store_open makes of arg, with the path it would open in path[cap]: */
enum fi_store_kind {
	FI_STORE_NONE, /* nothing: not in the store, no such file */
	FI_STORE_NAME, /* an image in the store */
	FI_STORE_FILE, /* a file, opened as an image */
	FI_STORE_DIR,  /* a directory, converted on the fly */
};
enum fi_store_kind fi_store_resolve(const char *arg, char *path, size_t cap);
/* Same, with the dtype used when arg is a directory. */
/* The tokenizer an image carries: its pre-built "tokenizer.bin" when present (fast), else
 * "tokenizer.json". FI_ENOTFOUND naming the image when it holds neither. */
struct fi_tok;
fi_err fi_image_tokenizer(const struct fi_image *im, struct fi_tok **out);
fi_err fi_store_open_dtype(const char *arg, enum fi_dtype dtype, struct fi_image **out);

/* Formats a parameter count as "8.03B", "260K", "494M" (3 significant digits). */
void fi_format_count(long long n, char *out, size_t outsz);
/* Formats a byte count as "1.02MiB", "512B". */
void fi_format_bytes(uint64_t n, char *out, size_t outsz);

#endif
