/* model_int: the model's internals shared by model.c (weights, the forward pass) and
 * model_graph.c (decode steps through CUDA graphs). */
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
	void *smp;      /* fi_sample_row [cap_smp], then int32 tokens and counts [2 cap_smp] */
};

/* Decode steps (one token per sequence, every row's logits wanted) replay CUDA graphs,
 * one per batch-size bucket. A graph bakes in every pointer and launch shape, so its
 * inputs live at fixed addresses (gin) with a fixed block-table row width (gw), padding
 * tokens fill the bucket (slot -1: no KV write; they read sequence 0's position 0), and
 * the key carries a generation that changes whenever a scratch buffer moves. */
#define GRAPH_MAX 256
struct graphs {
	int off;          /* no hooks, FI_GRAPHS=0, or a capture failed */
	int gw;           /* block-table row width */
	uint32_t gen;
	int32_t *gin;     /* device: tok, pos, seq, slot, idx, slen [GRAPH_MAX each], btab */
	int32_t *h, *shadow; /* host staging; the block table as last uploaded */
	int shadow_rows;
	uint32_t seen_gen;           /* the generation seen[] belongs to */
	uint8_t seen[GRAPH_MAX + 1]; /* per bucket: 0 new, 1 ran once, 2 captured */
};

/* The step between fi_model_launch and fi_model_collect (model_step.c): its sequences in
 * order of first appearance (sid), their lengths before it (old) and tokens in it (cnt). */
struct step {
	int on;        /* launched, not collected */
	unsigned out;  /* FI_STEP_* */
	int T, S, n_out, dev_argmax;
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
	struct scratch s;
	struct graphs gr;
	/* host staging for the int arrays uploaded each step */
	int32_t *h_ints;
	size_t h_ints_cap;
	struct step st;
};

/* Makes the activations hold T tokens, the ints n_ints values and the head rows rows. A
 * buffer that moves changes the graph generation (graphs point at the old one). */
fi_err fi_model_scratch(struct fi_model *m, int T, size_t n_ints, int rows);
/* The layers over T tokens, then the LM head over n rows: the rows idx_d of the final
 * norm's output (all rows in order when idx_d is NULL), f32 logits into s.logits, and their
 * argmax into s.am when asked. */
fi_err fi_model_body(struct fi_model *m, int T, const int32_t *tok_d, const int32_t *pos_d,
		     const struct fi_attn_batch *ab, const int32_t *idx_d, int n, int argmax);

/* model_sample.c: the token of each of the n rows of s.logits drawn with rows[n] on the
 * device (backend sample op), in two halves: launch uploads the rows and issues the op
 * (nothing without it); collect downloads tokens and survivor counts, and the logits of
 * rows it hands back (tokens[i] = -1; every row without the op) into logits + i * V. */
fi_err fi_model_sample_launch(struct fi_model *m, int n, const struct fi_sample_row *rows);
fi_err fi_model_sample_collect(struct fi_model *m, int n, float *logits, int32_t *tokens,
			       int32_t *n_kept);
/* model_step.c: frees the step's host arrays. */
void fi_model_step_free(struct fi_model *m);

/* model_graph.c: 1 when decode steps may use graphs (hooks present, FI_GRAPHS not 0). */
int fi_model_graphs_usable(struct fi_model *m);
/* One decode step of T tokens of T sequences sid[] at positions old[] through a graph;
 * *used 0 when this step must run eagerly instead (nothing was done then). */
fi_err fi_model_graph_step(struct fi_model *m, int T, const int *sid, const int *old,
			   int *used);

#endif
