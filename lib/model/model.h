/* model: the forward pass of the Llama family (Llama, Mistral, Qwen2, Qwen3), written only
 * in terms of backend ops (backend.h), so one body of code runs on the CPU and on CUDA.
 *
 * Use:
 *   struct fi_model *m;
 *   fi_model_load(&config, &tensors, be, &m);   // tensors with engine names (names.h)
 *   fi_model_cache_init(m, 0, 0);               // optional: default KV cache size
 *   int s; fi_model_seq_new(m, &s);
 *   struct fi_batch b = {.n_tokens = n, .tokens = ids, .seq = seqs};   // seqs[i] = s
 *   float *logits = malloc(sizeof(float) * V * fi_batch_n_logits(&b));
 *   fi_model_forward(m, &b, logits, &n_rows);  // logits of the last token of s
 *
 * A batch mixes tokens of several sequences, each continuing where its sequence stands:
 * the i-th token of sequence s in the batch (in batch order) gets position
 * seq_len(s) + i. So a 7-token prompt of one sequence and a single decode token of
 * another run in the same call. After a successful forward, every sequence in the batch
 * has grown by its tokens; after a failure, no sequence has changed.
 *
 * Per layer (HF semantics; D hidden, Hq/Hk heads, hd head_dim, F ffn):
 *   h = rmsnorm(x) ; q,k,v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)   [T,Hq*hd], [T,Hk*hd]
 *   Qwen3: q,k = per-head rmsnorm(q), rmsnorm(k) ; q,k = rope(q,k)
 *   x += attention(q, cache) Wo^T ; x += down(silu(x' Wg^T) * (x' Wu^T)), x' = rmsnorm(x)
 * and logits = rmsnorm(x) W_out^T (W_out = tok_embd when embeddings are tied), in f32.
 * RoPE frequencies: default, or llama3 / linear / YaRN / LongRoPE / dynamic NTK scaling
 * (fi_rope_inv_freq). The families of arch.h (Gemma 2 and 3, Phi-3, Mixtral, Qwen3-MoE) run
 * their own layer loop (arch.c) over the same ops and cache. */
#ifndef FI_MODEL_H
#define FI_MODEL_H

#include <stdint.h>

#include "backend/backend.h"
#include "config.h"
#include "kv/kvcache.h"
#include "base/tensor.h"

struct fi_model;

/* Loads every tensor the config requires (fi_expected_tensor) through be->ops->weight,
 * checking each shape; extra tensors are ignored. The tensor set may be closed after
 * this returns. be must outlive the model. */
fi_err fi_model_load(const struct fi_config *c, const struct fi_tensor_set *ts,
		     struct fi_backend *be, struct fi_model **out);
/* Same, from a Hugging Face checkpoint directory (config.json, *.safetensors): names mapped
 * with fi_name_from_hf, weights converted by the backend; the files are closed on return. */
fi_err fi_model_load_hf(const char *dir, struct fi_backend *be, struct fi_model **out);
void fi_model_close(struct fi_model *m);
const struct fi_config *fi_model_config(const struct fi_model *m);
struct fi_backend *fi_model_backend(const struct fi_model *m);

/* RoPE inverse frequencies [head_dim / 2] of a config, as HF computes them (default,
 * llama3 per _compute_llama3_parameters, linear: divided by factor). */
fi_err fi_rope_inv_freq(const struct fi_config *c, float *out);
/* The same for YaRN and LongRoPE (rope.c). Their attention factor (cos and sin times it, in
 * transformers) is c->rope_attn_factor; the model folds its square into the softmax scale. */
fi_err fi_rope_inv_freq_ext(const struct fi_config *c, float *out);
/* The softmax scale: head_dim^-1/2 (query_pre_attn_scalar^-1/2 for Gemma) times the square
 * of the YaRN or LongRoPE attention factor. */
float fi_attn_scale(const struct fi_config *c);

/* Creates the KV cache: n_blocks blocks of block_size tokens (0, 0: block size 16 and
 * room for 4 sequences of min(max_position_embeddings, 4096) tokens). Called implicitly
 * with 0, 0 by the first fi_model_seq_new. FI_ESTATE if a cache exists. */
/* The KV cache's dtype, before the cache exists: the backend's activation dtype (the
 * default) or FI_DT_F8_E4M3 (e4m3 with a scale per token and KV head: half the bytes of
 * bf16, a quarter of f32). The CUDA backend refuses FP8 caches for now. */
fi_err fi_model_set_kv_dtype(struct fi_model *m, enum fi_dtype dt);
fi_err fi_model_cache_init(struct fi_model *m, int n_blocks, int block_size);
struct fi_kvcache *fi_model_cache(struct fi_model *m);

/* Sequences (thin wrappers over kvcache.h). */
fi_err fi_model_seq_new(struct fi_model *m, int *seq);
void fi_model_seq_free(struct fi_model *m, int seq);
fi_err fi_model_seq_fork(struct fi_model *m, int src, int *dst);
int fi_model_seq_len(struct fi_model *m, int seq); /* -1 if unknown */
/* Forgets tokens past len (len <= current length). */
fi_err fi_model_seq_truncate(struct fi_model *m, int seq, int len);

struct fi_batch {
	int n_tokens;
	const int32_t *tokens; /* [n_tokens] token ids */
	const int32_t *seq;    /* [n_tokens] sequence of each token (from fi_model_seq_new) */
	/* [n_tokens] nonzero: return logits for this token. NULL: for the last token of each
	 * sequence in the batch, in order of first appearance. */
	const int8_t *want;
};

/* Rows of logits fi_model_forward returns for a batch. */
int fi_batch_n_logits(const struct fi_batch *b);

/* Runs the batch; writes f32 logits [n_rows, vocab] to host memory `logits` (room for
 * fi_batch_n_logits(b) rows), rows in batch order of the selected tokens. n_rows may be
 * NULL. FI_EFULL if the KV cache has no room, FI_ERANGE for a token id outside the
 * vocabulary, FI_ENOTFOUND for an unknown sequence. Positions are not limited to
 * max_position_embeddings (as in HF), only by the cache. */
fi_err fi_model_forward(struct fi_model *m, const struct fi_batch *b, float *logits,
			int *n_rows);
/* The same, with the greedy token of each selected row: tokens[n_rows] = argmax of its
 * logits (lowest id on ties), computed on the device where the backend can, so that only
 * n_rows ints cross to the host. logits or tokens may be NULL (not wanted). Decode steps
 * (one token per sequence, every row selected) replay CUDA graphs on backends with graph
 * hooks (FI_GRAPHS=0: never). */
fi_err fi_model_forward_ex(struct fi_model *m, const struct fi_batch *b, float *logits,
			   int32_t *tokens, int *n_rows);
/* The same, each selected row's token drawn with rows[n_rows] (sample.h: temperature,
 * top-k, top-p, min-p and the draw's u; no repetition penalty, no log-probabilities: rows
 * from fi_sampler_row) on the device where the backend has the sample op, so that only
 * tokens cross to the host: tokens[i], and n_kept[i] the tokens that survived the filters
 * (the draw was used when > 1, see fi_sampler_commit). A row the device hands back (too
 * many candidates; every row without the op) gets tokens[i] = -1 and its logits in
 * logits + i * vocab, which needs room for fi_batch_n_logits(b) rows, for the host
 * sampler. Decode steps replay graphs as above; the sampling runs after the replay. */
fi_err fi_model_forward_sample(struct fi_model *m, const struct fi_batch *b,
			       const struct fi_sample_row *rows, float *logits, int32_t *tokens,
			       int32_t *n_kept, int *n_rows);

/* A sampled step's rows and what comes back for them (fi_model_forward_sample_io). */
struct fi_sample_io {
	const struct fi_sample_row *rows; /* [n_rows], in the order of the selected tokens
					   * (fi_sampler_row_hist: any sampler) */
	const int32_t *win;  /* host: the penalty windows rows index, or NULL when none has one */
	size_t n_win;        /* entries of win */
	int32_t *tokens;     /* [n_rows]: the token, -1 when left to the host sampler */
	int32_t *n_kept;     /* [n_rows]: survivors of the filters (see fi_sampler_commit) */
	float *logprob;      /* [n_rows]: the token's log-probability where the row asks
			      * (n_logprobs >= 0); NULL when no row asks */
	struct fi_sample_top *top; /* [n_rows, FI_SAMPLE_MAX_TOP]: the first n_logprobs of
				    * each row; NULL when no row asks for alternatives */
	float *logits;       /* room for n_rows rows: the logits of rows left to the host, whose
			      * token, log-probabilities and alternatives the caller then takes
			      * with fi_sampler_next and fi_sample_logprobs */
};
/* fi_model_forward_sample for any rows: repetition penalties (their windows in io->win)
 * and log-probabilities included. */
fi_err fi_model_forward_sample_io(struct fi_model *m, const struct fi_batch *b,
				  struct fi_sample_io *io, int *n_rows);

/* A forward pass in two halves, so that the host prepares the next step while the device
 * runs this one (the calls above are launch + collect):
 *   fi_model_launch checks the batch, reserves its KV, issues the work and returns; on CUDA
 *     the device is still running it. out says what the selected rows return:
 *     FI_STEP_TOKENS their greedy tokens (argmax, lowest id on ties; on the device where the
 *     backend can), FI_STEP_SAMPLE their tokens drawn with io's rows and windows (as
 *     fi_model_forward_sample_io; not with FI_STEP_TOKENS), FI_STEP_LOGITS their logits
 *     (alone or with FI_STEP_TOKENS). The batch's arrays, io's rows and windows may be
 *     reused once it returns; io itself (its outputs) must live until fi_model_collect.
 *   fi_model_collect waits for it and returns what launch asked for: tokens[n_rows] and
 *     logits[n_rows, vocab] (FI_STEP_TOKENS, FI_STEP_LOGITS); for FI_STEP_SAMPLE, io's
 *     tokens, n_kept, log-probabilities and the logits of the rows left to the host (the
 *     arguments are not used). Then every sequence of the batch has grown by its tokens;
 *     after a failure of either half none has.
 * One step at a time (FI_ESTATE otherwise). While a step is in flight, the model, its cache
 * and its sequences are used by nothing but fi_model_collect. */
enum {
	FI_STEP_TOKENS = 1,
	FI_STEP_SAMPLE = 2,
	FI_STEP_LOGITS = 4,
};
fi_err fi_model_launch(struct fi_model *m, const struct fi_batch *b, unsigned out,
		       struct fi_sample_io *io);
fi_err fi_model_collect(struct fi_model *m, float *logits, int32_t *tokens, int *n_rows);
/* Allocates now the scratch of a step of T tokens with rows rows of logits (otherwise it
 * grows on demand), so that the memory left can be measured and given to the KV cache. */
fi_err fi_model_reserve_scratch(struct fi_model *m, int T, int rows);
/* 1 while a launched step has not been collected. */
int fi_model_in_flight(const struct fi_model *m);
/* 1 when the backend runs launched work asynchronously (CUDA): overlapping the host's work
 * with the step then pays; 0 on the CPU, where launch computes the whole step. */
int fi_model_async(const struct fi_model *m);

#endif
