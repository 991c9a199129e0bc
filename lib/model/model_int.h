/* model_int: the model's internals shared by its files. From the top down: model_step.c (the
 * calls of the model's user: steps, KV cache, close) over tp.c (a tensor-parallel group of
 * rank models), model_graph.c (decode steps through CUDA graphs) and model_sample.c, all
 * over model.c (one rank's model: weights, scratch, the forward pass) and arch.c. */
#ifndef FI_MODEL_INT_H
#define FI_MODEL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

struct layer {
	struct fi_weight attn_norm, q, k, v, o, q_bias, k_bias, v_bias, q_norm, k_norm;
	struct fi_weight ffn_norm, gate, up, down;
	/* With weight_cat: q, k, v (gate, up) are views into one allocation each. */
	struct fi_weight qkv_cat, gu_cat;
};

/* Backend scratch for a batch of up to cap tokens. */
struct scratch {
	int cap;
	void *x, *xb, *y, *q, *k, *v, *att, *gate, *up, *h; /* activations */
	void *g;        /* [cap, D] gathered rows */
	size_t cap_ints;
	int32_t *ints;  /* tok, pos, seq, slot, idx [T each], seq_len [S], block table */
	int cap_rows;   /* rows that need logits, not tokens: the LM head's output is large */
	float *logits;  /* [cap_rows, V] f32 */
	int32_t *am;    /* [cap_rows] device argmax */
	int cap_smp;    /* rows the sample buffer holds */
	size_t cap_win; /* window tokens it holds */
	void *smp;      /* fi_sample_row [cap_smp], int32 tokens and counts [2 cap_smp], f32
			 * log-probabilities [cap_smp], fi_sample_top [cap_smp, FI_SAMPLE_MAX_TOP],
			 * int32 window tokens [cap_win] */
};

/* Decode steps (one token per sequence, every row's logits wanted) replay CUDA graphs,
 * one per (batch rung, block-table width): a ladder of batch sizes (exact to 4, then
 * multiples of 8 to 64, of 32 to 256, of 64 to GRAPH_MAX) and widths in powers of two
 * blocks, so a graph's table holds the step's sequences without rows as wide as the longest
 * context. A graph bakes in every pointer and launch shape, so its inputs live at fixed
 * addresses (gin), padding tokens fill the rung (slot -1: no KV write; they read sequence
 * 0's position 0), and the key carries a generation that changes whenever a scratch buffer
 * moves. Each (rung, width) runs eagerly the first time, is captured the second, replayed
 * after. */
#define GRAPH_MAX FI_GRAPH_MAX_T
#define GRAPH_KEYS 256
struct graphs {
	int off;          /* no hooks, FI_GRAPHS=0, or a capture failed */
	int gw;           /* widest block table: one sequence of the context, or the cache */
	uint32_t gen;
	int32_t *gin;     /* device: tok, pos, seq, slot, idx, slen [GRAPH_MAX each], btab */
	int32_t *h, *shadow; /* host staging; the block table as last uploaded */
	int shadow_rows, shadow_w;
	uint32_t seen_gen; /* the generation seen[] belongs to */
	int n_seen;
	struct {
		int rows, w;
		uint8_t state; /* 1 ran once, 2 captured */
	} seen[GRAPH_KEYS];
};

/* The step between fi_model_launch and fi_model_collect (model_step.c): its sequences in
 * order of first appearance (sid), their lengths before it (old) and tokens in it (cnt);
 * for a sampled step, the caller's fi_sample_io that collect fills. */
struct step {
	int on;        /* launched, not collected */
	unsigned out;  /* FI_STEP_* */
	int T, S, n_out, dev_argmax;
	struct fi_sample_io *io;
	int cap;       /* room of the arrays below, in tokens */
	int *sid, *old, *cnt, *local;
	int *map;      /* [cap_map] batch-local index of a sequence id, -1 when absent */
	int cap_map;
};

struct fi_model {
	struct fi_config c;
	struct fi_backend *be;
	struct fi_weight tok_embd, out_norm, output;
	struct layer *l;
	int fusable; /* the backend's decode fusions can take this model's shapes */
	float *inv_freq_d;
	struct fi_kvcache *cache;
	int kv_fp8; /* fi_model_set_kv_dtype: the cache is made FP8 */
	struct scratch s;
	struct graphs gr;
	struct fi_arch *arch; /* model families (arch.h); NULL for the Llama family */
	/* host staging for the int arrays uploaded each step */
	int32_t *h_ints;
	size_t h_ints_cap;
	struct step st;
	/* Tensor parallelism (tp.h): this rank's communicator (all-reduces after the o and down
	 * projections; NULL without a group), its LM-head rows [vocab_lo, vocab_lo + vocab_n)
	 * in head (vocab_n 0: the whole head), and on rank 0 the group. */
	struct fi_comm *comm;
	struct fi_weight head;
	int vocab_lo, vocab_n;
	struct fi_tp *tp;
};

/* The eager part of a step (model.c), as rank 0 computes it (model_step.c) and every rank of
 * a group runs it (tp.c): the host staging h[need] (tok, pos, seq, slot, idx [T each], seq_len [S], block
 * table [S, maxb]) uploaded, then the body. */
struct step_args {
	const int32_t *h;
	size_t need;
	int T, S, maxb, max_len, n_dec, identity, n_out, argmax;
};
fi_err fi_model_step_body(struct fi_model *m, const struct step_args *a);
/* Frees one rank's model: weights, scratch, KV cache, communicator. fi_model_close
 * (model_step.c) ends the group and the step first; tp.c closes each rank with this. */
void fi_model_close_rank(struct fi_model *m);

/* layer.c: the pieces both layer loops (model.c, arch.c) use. */
/* Whether the backend has the fused decode ops (backend.h: norm_qkv_rope, matmul_add,
 * norm_glu) and the config the widths their kernels assume (multiples of 8, even heads). */
int fi_fuse_shapes(const struct fi_backend *be, const struct fi_config *c);
/* Whether the fused decode ops (backend.h: norm_qkv_rope, matmul_add, norm_glu) take a
 * layer's weights lw = {q, k, v, o, gate, up, down}: each in the activation dtype or
 * quantized as be->fuse_quant allows, q/k/v quantized alike, gate and up of one type; gate,
 * up and down NULL for a mixture-of-experts layer. */
int fi_fuse_takes(const struct fi_backend *be, const struct fi_weight *const *lw);
/* q, k, v of the normalised input m->s.xb into m->s.q/k/v (one matmul_multi when multi, b3
 * the biases or NULL), then qk_norm's {q, k} head norms or NULL, RoPE and the cache writes of
 * layer l: in one rope_kv_write launch where the backend has it, else rmsnorm, rope and
 * kv_write. */
fi_err fi_model_qkv_rope(struct fi_model *m, const struct fi_weight *const *w3,
			 const struct fi_weight *const *b3, const struct fi_weight *const *qk_norm,
			 int multi, const struct fi_rope *rope, const int32_t *pos_d,
			 const struct fi_attn_batch *ab, int l, int T);
/* Makes the activations hold T tokens, the ints n_ints values and the head rows rows. A
 * buffer that moves changes the graph generation (graphs point at the old one). */
fi_err fi_model_scratch(struct fi_model *m, int T, size_t n_ints, int rows);
/* The layers over T tokens, then the LM head over n rows: the rows idx_d of the final
 * norm's output (all rows in order when idx_d is NULL), f32 logits into s.logits, and their
 * argmax into s.am when asked. */
fi_err fi_model_body(struct fi_model *m, int T, const int32_t *tok_d, const int32_t *pos_d,
		     const struct fi_attn_batch *ab, const int32_t *idx_d, int n, int argmax);

/* model_sample.c: the token of each of the n rows of s.logits drawn with io->rows[n] on the
 * device (backend sample op), log-probabilities as asked, in two halves: launch uploads the
 * rows and windows and issues the op (nothing without it); collect downloads the tokens,
 * survivor counts and log-probabilities, and the logits of the rows it hands back (tokens[i]
 * = -1; every row without the op) into io->logits + i * V. */
fi_err fi_model_sample_launch(struct fi_model *m, int n, const struct fi_sample_io *io);
fi_err fi_model_sample_collect(struct fi_model *m, int n, struct fi_sample_io *io);

/* model_graph.c: 1 when decode steps may use graphs (hooks present, FI_GRAPHS not 0). */
int fi_model_graphs_usable(struct fi_model *m);
/* One decode step of T tokens of T sequences sid[] at positions old[] through a graph;
 * *used 0 when this step must run eagerly instead (nothing was done then). */
fi_err fi_model_graph_step(struct fi_model *m, int T, const int *sid, const int *old,
			   int *used);

#endif
