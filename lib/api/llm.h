/* llm: a model opened on a backend (the public fi_llm of fi_model.h), and the steps the
 * commands take to open one: the backend started in a thread while the image is mapped.
 * Internal: commands reach the parts (image, backend, weights) through struct fi_llm. */
#ifndef FI_API_LLM_H
#define FI_API_LLM_H

#include "fi/fi_model.h"

#include "backend/backend.h"
#include "base/err.h"
#include "model/image.h"
#include "model/model.h"

struct fi_llm {
	struct fi_backend *be;
	struct fi_image *im;
	struct fi_model *m;
	struct fi_tok *tok;   /* loaded at the first fi_llm_tokenizer */
	struct fi_chat *chat; /* loaded at the first fi_llm_chat */
};

/* fi_backend_create in a thread of its own (CUDA's driver and context start take ~0.2 s), so
 * the caller can open the image meanwhile; fi_backend_join waits for it, gives the backend (or
 * records the thread's error), the seconds its creation took (secs may be NULL), and frees s.
 * Without a thread, fi_backend_start creates the backend before returning. */
struct fi_backend_start;
fi_err fi_backend_start(const char *name, int threads, struct fi_backend_start **s);
fi_err fi_backend_join(struct fi_backend_start *s, struct fi_backend **be, double *secs);

/* fi_backend_create(backend, threads), then opens arg (fi_store_resolve: a store name, an
 * image file or a Hugging Face directory) and loads its weights on it. A directory is
 * converted on the fly in the backend's precision: f32 for the CPU (exact), bf16 for CUDA;
 * an image is used in the dtype it was written in. The backend starts (CUDA's driver and
 * context: ~0.2 s) in a thread while an image is opened: the commands' path to the first
 * token. On failure the detail is recorded and nothing is left open. */
fi_err fi_open_backend_model(const char *backend, int threads, const char *arg,
			     struct fi_backend **be, struct fi_image **im, struct fi_model **m);

/* Random weights (--load-format dummy): fi_open_backend_model makes the image from -m's
 * config alone (a directory with config.json, or the file; fi_image_random), its weights drawn
 * by the backend where they live. A command sets this before opening the model. */
extern int fi_random_weights;
/* Tensor parallelism (--tp N): fi_open_backend_model loads the model cut N ways (model/tp.h),
 * rank 0 on the backend it makes; 0 (the default): the model whole, no group. */
extern int fi_tp_size;
/* The line every command prints on standard error when the weights are random. */
void fi_random_weights_notice(const char *prog, const char *model);

#endif
