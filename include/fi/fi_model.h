/* fi_model: a model opened on a backend, ready to run (libfi(3)).
 *
 *   struct fi_llm *m;
 *   struct fi_llm_opts o;
 *   fi_llm_opts_default(&o);          // backend "auto": CUDA when there is a GPU, else CPU
 *   if (fi_llm_open("llama3", &o, &m)) fprintf(stderr, "%s\n", fi_errmsg());
 *
 * The model is named as every fi command's -m names it: a name in the model store
 * ($FI_HOME/models/NAME.fim, fi-load(1)), an image file, or a Hugging Face directory
 * (converted on the fly). An fi_llm owns the mapped image, the backend and the weights on
 * it; its tokenizer and chat template come from the image. */
#ifndef FI_FI_MODEL_H
#define FI_FI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "fi_err.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fi_llm;
struct fi_tok;
struct fi_chat;

struct fi_llm_opts {
	const char *backend; /* "auto" (default), "cuda" or "cpu" */
	int threads;         /* CPU threads; 0: one per core */
};
void fi_llm_opts_default(struct fi_llm_opts *o);

/* Opens model (a store name, an image file or a Hugging Face directory) on the backend of
 * o (NULL: the defaults). The backend starts while the image is mapped. */
fi_err fi_llm_open(const char *model, const struct fi_llm_opts *o, struct fi_llm **out);
/* Frees the model, its backend and image. NULL is a no-op. */
void fi_llm_close(struct fi_llm *m);

/* The vocabulary size, the context length (max_position_embeddings; 4096 when the config
 * gives none), the device ("cpu (8 threads)", "NVIDIA H100 80GB HBM3") and the model
 * fingerprint (64 hex digits). */
int fi_llm_vocab(const struct fi_llm *m);
int fi_llm_context(const struct fi_llm *m);
const char *fi_llm_device(const struct fi_llm *m);
const char *fi_llm_fingerprint(const struct fi_llm *m);

/* The tokenizer and the chat template the image carries, loaded at the first call and owned
 * by m: FI_ENOTFOUND when the image holds none. */
fi_err fi_llm_tokenizer(struct fi_llm *m, const struct fi_tok **out);
fi_err fi_llm_chat(struct fi_llm *m, const struct fi_chat **out);

#ifdef __cplusplus
}
#endif

#endif
