/* shard: the tensor-parallel plan, how a Llama-family model is cut over n ranks (model/tp.h).
 *
 * Per layer (Hq, Hk heads of hd; F the MLP width; D hidden; r the rank):
 *   attention  q heads [r Hq/n, (r+1) Hq/n): rows of Wq (and bq); the KV heads they read:
 *              Hk/n each when Hk >= n, else the one KV head of the rank's q heads (KV heads
 *              replicated: n must be a multiple of Hk); Wo's matching columns, so that
 *              each rank's o product is a partial sum, all-reduced
 *   MLP        rows [r F/n, (r+1) F/n) of Wg and Wu (column-parallel), the same columns of
 *              Wd (row-parallel): a partial sum, all-reduced
 *   replicated the norms, q/k norms (Qwen3), the embedding
 *   LM head    vocabulary rows [lo_r, lo_r + n_r) of W_out (or of the tied embedding), as
 *              even as the vocabulary allows: each rank computes its shard of the logits
 * Row slices point into the source tensor; column slices are copies. Random weights
 * (data NULL, backend.h) keep a replicated tensor's name and give a sliced one a name of its
 * own ("NAME@r/n"): the shapes are right, the values are not those of the whole tensor (a
 * random model runs for speed only). */
#ifndef FI_SHARD_H
#define FI_SHARD_H

#include "base/tensor.h"
#include "config.h"

/* FI_EUNSUPPORTED (with the reason) unless c can be cut n ways (1 <= n <= 16). */
fi_err fi_shard_check(const struct fi_config *c, int n);
/* Rank r's config: n_heads Hq/n, n_kv_heads as above, ffn F/n; tie_embeddings set, so that
 * the model loads no LM head of its own (the rank's head is fi_shard_set.head). */
void fi_shard_config(const struct fi_config *c, int r, int n, struct fi_config *out);
/* Rank r's vocabulary rows [*lo, *lo + *cnt). */
void fi_shard_vocab(int vocab, int r, int n, int *lo, int *cnt);
/* The KV head rank r's first KV head is (its offset into Wk's heads). */
int fi_shard_kv_head(const struct fi_config *c, int r, int n);

/* Rank r's tensors out of the whole model's ts: what fi_model_load takes for the shard
 * config, and head, the rank's LM-head rows [n_r, D]. FI_EUNSUPPORTED for quantized tensors
 * or a tensor the plan does not know. */
struct fi_shard_set {
	struct fi_tensor_set set;
	struct fi_tensor head;
	struct fi_tensor *t;
	char (*names)[80];
	void **own; /* copies (column slices) */
	int n_own;
};
fi_err fi_shard_tensors(const struct fi_config *c, const struct fi_tensor_set *ts, int r, int n,
			struct fi_shard_set *out);
void fi_shard_set_free(struct fi_shard_set *s);

#endif
