/* tp: tensor parallelism, one model over n devices of one host (shard.h says how it is cut).
 *
 * One thread per device, in one process: rank 0 is the caller's thread (its model is the one
 * the scheduler holds, and every call above the model is unchanged), ranks 1..n-1 are threads
 * of the group, each with a backend of its own (CUDA: device r; the CPU: n pools of threads)
 * holding its shard, its scratch and its KV pool. The scheduler runs once, on rank 0: each
 * step's host staging (tokens, positions, slots, block tables: kvcache.h's tables are rank
 * 0's and every rank's pool has the same blocks) is broadcast to the ranks, which run the
 * layers together, all-reducing after the o and down projections (comm.h), each computing
 * its rows of the LM head. Collect merges the shards: logits side by side; a greedy or top-k
 * row from each shard's best candidates (top-k over the union of every shard's top k is the
 * top k); other rows (full-vocabulary sampling, penalties, log-probabilities) get their whole
 * logits for the host sampler.
 *
 * n = 1 is the same code without threads: the model loaded through the plan, the
 * communicator called at the same points (NCCL on CUDA), CUDA graphs capturing it. Decode
 * steps of n > 1 run eagerly, without graphs or the fused decode products, for now. */
#ifndef FI_TP_H
#define FI_TP_H

#include <stdint.h>

#include "model.h"

struct fi_tp;
struct step_args;

/* Loads config c's tensors ts cut n ways: rank 0 on be (the caller's, which keeps it), the
 * others on backends of be's kind that the group makes (CUDA devices 1..n-1). The model
 * returned is rank 0's; fi_model_close ends the group. */
fi_err fi_model_load_tp(const struct fi_config *c, const struct fi_tensor_set *ts,
			struct fi_backend *be, int n, struct fi_model **out);
/* Ranks in the model's group: 0 without one. */
int fi_model_tp_size(const struct fi_model *m);

/* model_step.c's calls into the group (rank 0's thread). */
fi_err fi_tp_step(struct fi_tp *tp, const struct step_args *a);
fi_err fi_tp_collect(struct fi_tp *tp, unsigned out, struct fi_sample_io *io, int n_out,
		     float *logits, int32_t *tokens);
fi_err fi_tp_cache_init(struct fi_tp *tp, int n_blocks, int block_size);
fi_err fi_tp_reserve_scratch(struct fi_tp *tp, int T, int rows);
void fi_tp_close(struct fi_tp *tp);

#endif
