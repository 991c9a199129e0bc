/* backend: the op table the forward pass (model.c) is written in.
 *
 * The CPU backend (lib/backend/cpu/) is the reference: f32 activations, OpenBLAS GEMMs. The CUDA
 * backend (lib/backend/cuda/ + kernels/) implements the same ops with bf16 activations and fp32
 * accumulation; each of its kernels is tested against the CPU op of the same name.
 *
 * Conventions for every op:
 * - Pointers named *_d are backend memory (from alloc); on the CPU that is host memory.
 * - Activations have dtype be->act (F32 on the CPU, BF16 on CUDA), row-major.
 * - T is the number of tokens in the batch, across all sequences.
 * - Ops are asynchronous on CUDA (one stream per backend); sync() waits; download() syncs.
 * - Every op returns FI_OK or an error recorded through fi_fail.
 *
 * KV cache layout (paged, vLLM-style): per layer, K and V each [n_blocks, block_size, Hk, hd]
 * in dtype be->act (an FP8 cache: see struct fi_kv_cache). Token t of a sequence at position p lives in block
 * block_table[seq][p / block_size] at offset p % block_size; its "slot" is
 * block * block_size + offset. */
#ifndef FI_BACKEND_H
#define FI_BACKEND_H

/* The most tokens of a decode step that the model captures in a CUDA graph (model_graph.c);
 * a backend sizes the scratch that graphs bake in for it. */
#define FI_GRAPH_MAX_T 512

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/quant.h"
#include "base/settings.h"
#include "sample.h"
#include "base/tensor.h"

struct fi_backend;

/* A weight prepared by the backend from a model tensor (converted, uploaded, maybe
 * re-laid-out); opaque to model.c. rows x cols is the logical shape ([N,K] for a linear
 * layer, [D] as 1 x D for a norm, [V,D] for an embedding).
 *
 * Quantized tensors (base/quant.h) go through the same weight op: the CPU backend
 * dequantizes them to f32 (it is the reference), the CUDA backend keeps the layout as
 * stored (dtype the quantized dtype, p the layout's bytes). aq is the activation rounding
 * of a W8A8 weight (FI_AQ_*): every product with it first rounds its input as quant.h
 * says, on every backend, so the backends agree. */
struct fi_weight {
	void *p;
	enum fi_dtype dtype;
	int64_t rows, cols;
	int aq;
	struct fi_qlayout q; /* a quantized weight's layout in p (backend-private), else zero */
};

struct fi_kv_cache {
	int n_layers, n_blocks, block_size, n_kv_heads, head_dim;
	void **k_d, **v_d; /* [n_layers] pointers to [n_blocks, block_size, Hk, hd] */
	/* 1: an FP8 cache (--kv-dtype fp8): each block holds its [block_size, Hk, hd] e4m3
	 * values, then [block_size, Hk] f32 scales, one per token and KV head (the row's
	 * amax / 448), so blocks stay contiguous for copies and the arena. */
	int fp8;
	/* Tensor parallelism: the cache of rank shard_rank of shard_size holds that rank's KV
	 * heads only (model/shard.h); 0, 0 or 0, 1: the whole model's. The KV arena's identity
	 * includes it (kv/kvxfer.h). */
	int shard_rank, shard_size;
};

/* Bytes of one block of one layer's K (or V) in a cache of activation dtype act. */
static inline size_t fi_kv_block_bytes(const struct fi_kv_cache *kv, enum fi_dtype act)
{
	size_t rows = (size_t)kv->block_size * (size_t)kv->n_kv_heads;
	return kv->fp8 ? rows * ((size_t)kv->head_dim + 4)
		       : rows * (size_t)kv->head_dim * fi_dtype_size(act);
}

/* What attention needs to know about a batch; all arrays are backend memory. */
struct fi_attn_batch {
	int n_tokens;             /* T */
	int n_seqs;               /* S */
	int max_blocks;           /* row stride of block_table */
	const int32_t *tok_seq_d; /* [T] sequence index of each token */
	const int32_t *tok_pos_d; /* [T] position of each token in its sequence */
	const int32_t *slot_d;    /* [T] KV slot each token's K/V is written to */
	const int32_t *seq_len_d; /* [S] tokens in each sequence's cache after this batch */
	const int32_t *block_table_d; /* [S, max_blocks] */
	int max_seq_len;          /* upper bound of seq_len_d, for launch sizing */
	int sliding_window;       /* 0 = none: token at p sees positions (p - W, p] otherwise */
	float scale;              /* softmax scale, 1/sqrt(hd) */
	/* Tokens [0, n_decode) are decode rows: each the only token of its sequence in the
	 * batch (padding rows of a graph included). A mixed batch (decode rows first, then
	 * prompt chunks) can then take them through a decode kernel and the rest through a
	 * prefill kernel. A hint only: results do not depend on it; 0 says nothing. */
	int n_decode;
	float softcap;            /* model families: scores s = cap tanh(s / cap) (after scale)
				   * before the softmax when > 0 (Gemma 2); 0 = none */
};

/* The activation of a gated MLP (norm_glu, moe): silu(g) u or gelu_tanh(g) u. */
enum fi_glu_act { FI_GLU_SILU = 0, FI_GLU_GELU_TANH };

/* A mixture-of-experts MLP (model families, arch.h): E experts of Fm hidden units, their
 * weights stacked: gate and up [E*Fm, D] (expert e in rows e*Fm ..), down [E*D, Fm]. */
struct fi_moe {
	int n_experts, top_k, ffn; /* E, k, Fm */
	int norm_topk;             /* chosen weights divided by their sum */
	enum fi_glu_act act;
	const struct fi_weight *gate, *up, *down;
};

struct fi_rope {
	int head_dim;        /* hd; rotate-half layout as in HF: pairs (i, i + hd/2) */
	const float *inv_freq_d; /* [hd/2] inverse frequencies, llama3 scaling already applied */
	/* Optional, both or neither (Qwen3, Gemma 3): the [hd] weights of an RMSNorm over each
	 * q and k head, eps norm_eps, that rope_kv_write applies before rotating (the model
	 * passes them to that op only; the others refuse them). */
	const struct fi_weight *q_norm, *k_norm;
	float norm_eps;
};

/* The sample op's batch: n rows of vocabulary V; arrays are backend memory. */
struct fi_sample_args {
	int n, V;
	const float *logits_d;              /* [n, V] f32 */
	const struct fi_sample_row *rows_d; /* [n] */
	const int32_t *hist_d;              /* the windows rows index (hist_off, n_hist); NULL
					     * when no row has one */
	int max_top;                        /* >= every row's n_logprobs: row stride of top_d */
	int32_t *out_d;                     /* [2n]: out[i] the token (-1: left to the host),
					     * out[n + i] the survivors of the filters (the
					     * draw was used when > 1) */
	float *logprob_d;                   /* [n]: the token's log-probability, for rows with
					     * n_logprobs >= 0 (NULL when no row asks) */
	struct fi_sample_top *top_d;        /* [n, max_top]: entries 0..n_logprobs-1 of each
					     * row (NULL when max_top is 0) */
};

struct fi_backend_ops {
	const char *name;
	void (*destroy)(struct fi_backend *be);

	/* memory */
	fi_err (*alloc)(struct fi_backend *be, size_t bytes, void **out_d);
	void (*free)(struct fi_backend *be, void *p_d);
	fi_err (*upload)(struct fi_backend *be, void *dst_d, const void *src, size_t bytes);
	fi_err (*download)(struct fi_backend *be, void *dst, const void *src_d, size_t bytes);
	fi_err (*sync)(struct fi_backend *be);
	fi_err (*weight)(struct fi_backend *be, const struct fi_tensor *t, struct fi_weight *out);
	void (*weight_free)(struct fi_backend *be, struct fi_weight *w);
	fi_err (*kv_alloc)(struct fi_backend *be, struct fi_kv_cache *kv);
	void (*kv_free)(struct fi_backend *be, struct fi_kv_cache *kv);
	/* Optional, both or none (NULL: host memory needs nothing): page-locks host memory
	 * [p, p + bytes), already allocated and page aligned, so uploads and downloads from it
	 * run at link speed (cudaHostRegister); host_unregister(p) undoes it. The KV arena is
	 * registered an extent at a time, as its blocks are first copied. */
	fi_err (*host_register)(struct fi_backend *be, void *p, size_t bytes);
	void (*host_unregister)(struct fi_backend *be, void *p);

	/* x[T,D] = emb[tok[t], :] */
	fi_err (*embed)(struct fi_backend *be, void *x_d, const struct fi_weight *emb,
			const int32_t *tok_d, int T);
	/* If add_d: x[T,D] += add[T,D] (in place, the residual stream). Then
	 * out[T,D] = x / sqrt(mean(x^2) + eps) * w. out may equal x only when add_d is NULL. */
	fi_err (*rmsnorm)(struct fi_backend *be, void *out_d, void *x_d, const void *add_d,
			  const struct fi_weight *w, int T, int D, float eps);
	/* out[T,N] = in[T,K] @ w[N,K]^T (+ bias[N]); fp32 accumulation. */
	fi_err (*matmul)(struct fi_backend *be, void *out_d, const void *in_d,
			 const struct fi_weight *w, const struct fi_weight *bias, int T);
	/* Same as matmul but out is always F32 (the LM head, so logits keep precision). */
	fi_err (*matmul_f32out)(struct fi_backend *be, float *out_d, const void *in_d,
				const struct fi_weight *w, int T);
	/* Rotates q[T,Hq,hd] and k[T,Hk,hd] in place by each token's position. */
	fi_err (*rope)(struct fi_backend *be, void *q_d, void *k_d, const int32_t *pos_d,
		       const struct fi_rope *r, int T, int Hq, int Hk);
	/* Writes k[T,Hk*hd] and v[T,Hk*hd] of one layer into the cache at slot_d[t]. */
	fi_err (*kv_write)(struct fi_backend *be, struct fi_kv_cache *kv, int layer,
			   const void *k_d, const void *v_d, const struct fi_attn_batch *b);
	/* out[T,Hq*hd] = causal softmax(q k^T * scale) v over each token's sequence in the cache
	 * (positions 0..pos, within the sliding window); GQA: q head h reads KV head
	 * h / (Hq / Hk). */
	fi_err (*attention)(struct fi_backend *be, void *out_d, const void *q_d,
			    const struct fi_kv_cache *kv, int layer, int Hq,
			    const struct fi_attn_batch *b);
	/* out[T,F] = silu(gate[T,F]) * up[T,F] */
	fi_err (*silu_mul)(struct fi_backend *be, void *out_d, const void *gate_d,
			   const void *up_d, int T, int F);
	/* out[n,D] = x[idx[i], :] (rows that need logits) */
	fi_err (*gather_rows)(struct fi_backend *be, void *out_d, const void *x_d,
			      const int32_t *idx_d, int n, int D);

	/* Optional (NULL: rope, then kv_write): both in one pass with the same results; q and
	 * k rotated in place by b->tok_pos_d, the rotated k and v written at b->slot_d. With
	 * r->q_norm, each q and k head is first normalised as rmsnorm over T*H rows of hd
	 * would (Qwen3's q/k norms: two launches fewer a layer). */
	fi_err (*rope_kv_write)(struct fi_backend *be, void *q_d, void *k_d, const void *v_d,
				const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
				const struct fi_attn_batch *b);
	/* Optional (NULL: matmul of each (or matmul_multi), then silu_mul): out[T,F] =
	 * silu(in Wg^T) * (in Wu^T) with the same roundings; gate_d and up_d [T,F] are
	 * scratch the op may use. */
	fi_err (*matmul_glu)(struct fi_backend *be, void *out_d, void *gate_d, void *up_d,
			     const void *in_d, const struct fi_weight *gate,
			     const struct fi_weight *up, int T);
	/* Optional (NULL: the caller loads each tensor with weight() and loops over matmul).
	 * weight_cat makes one weight [sum rows, cols] of n tensors with equal cols, rows in
	 * order (q, k, v; gate, up), and parts[i] views of tensor i inside it: parts work with
	 * every op taking a weight and are never passed to weight_free (cat is). matmul_multi
	 * runs n weights over the same input in one pass: out_i[T,N_i] = in[T,K] w_i^T
	 * (+ bias_i), the same values as n matmul calls; weights made by weight_cat are the
	 * fast case (decode reads the input once, prompts one GEMM). n <= 4. */
	fi_err (*weight_cat)(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			     struct fi_weight *cat, struct fi_weight *parts);
	/* Optional (NULL: quantized tensors load one by one): weight_cat for quantized tensors
	 * the backend can join (the CUDA backend: FP8 with a scale per row); FI_EUNSUPPORTED,
	 * not recorded, for the others, which then load one by one. */
	fi_err (*qweight_cat)(struct fi_backend *be, const struct fi_tensor *const *t, int n,
			      struct fi_weight *cat, struct fi_weight *parts);
	fi_err (*matmul_multi)(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			       const struct fi_weight *const *w, const struct fi_weight *const *bias,
			       int T);

	/* Optional, all three or none (NULL: the plain ops): a decode layer's products with
	 * their neighbours folded in, used for batches of at most be->fuse_max_T tokens.
	 * x_d is the residual stream [T,D]; norm(x) = x / sqrt(mean(x^2) + eps) * norm->p.
	 * norm_qkv_rope: q[T,Hq*hd] = norm(x) Wq^T (+ bq), rotated as rope does; k and v
	 *   likewise (k rotated) written to the cache of `layer` at b->slot_d as kv_write does
	 *   (nothing else is written). w3 = {q, k, v}, b3 NULL or their biases.
	 * matmul_add: x[T,N] += in[T,K] W^T (the residual add of the o and down projections).
	 * norm_glu: out[T,F] = act(norm(x) Wg^T) * (norm(x) Wu^T), act SiLU or tanh GELU.
	 * The normalised x is not rounded to the activation dtype, so results are within the
	 * dtype's rounding of the plain ops, not equal to them. */
	fi_err (*norm_qkv_rope)(struct fi_backend *be, void *q_d, const void *x_d,
				const struct fi_weight *norm, float eps,
				const struct fi_weight *const *w3, const struct fi_weight *const *b3,
				const struct fi_rope *r, struct fi_kv_cache *kv, int layer, int Hq,
				const struct fi_attn_batch *b);
	fi_err (*matmul_add)(struct fi_backend *be, void *x_d, const void *in_d,
			     const struct fi_weight *w, int T);
	fi_err (*norm_glu)(struct fi_backend *be, void *out_d, const void *x_d,
			   const struct fi_weight *norm, float eps, const struct fi_weight *gate,
			   const struct fi_weight *up, enum fi_glu_act act, int T);
	/* Optional (NULL: rmsnorm of y, then the add inside the next rmsnorm): the residual add
	 * of a block, with the norm after it where the family has one (Gemma's post-attention
	 * and post-feed-forward norms): x[T,D] += norm ? rmsnorm(y; norm, eps) : y, the
	 * normalised y and the sum rounded to the act dtype as rmsnorm rounds them; y is left
	 * as it is. With the three above it keeps the residual stream complete after every
	 * layer of the families (arch.h) on the fused decode path. */
	fi_err (*add_norm)(struct fi_backend *be, void *x_d, const void *y_d,
			   const struct fi_weight *norm, float eps, int T, int D);

	/* Optional (NULL when absent): greedy argmax on the device, tok[n] = argmax logits[n,V]. */
	fi_err (*argmax)(struct fi_backend *be, int32_t *tok_d, const float *logits_d, int n, int V);
	/* Optional (NULL: logits go to the host sampler): one token per row of a->logits_d
	 * drawn as fi_sample_pick does (sample.h: repetition penalty over the row's window,
	 * temperature, top-k, top-p, min-p, then the inverse CDF at the row's u; greedy rows
	 * take the argmax), with the log-probabilities a row asks for (fi_sample_logprobs).
	 * A row the backend cannot do (the device: too many candidates, or a vocabulary too
	 * large for its penalty bitmap) gets token -1 and is left to the host sampler. */
	fi_err (*sample)(struct fi_backend *be, const struct fi_sample_args *a);
	/* ---- model families (arch.h; Gemma 2/3, Phi-3, Mixtral, Qwen3-MoE). Optional: a model
	 * that needs one the backend lacks is refused at load. ---- */
	/* x[n] *= s in place (Gemma's embedding scale). */
	fi_err (*scale)(struct fi_backend *be, void *x_d, int64_t n, float s);
	/* out[T,F] = gelu_tanh(gate[T,F]) * up[T,F] (GeGLU; gelu with the tanh approximation,
	 * 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))). */
	fi_err (*gelu_mul)(struct fi_backend *be, void *out_d, const void *gate_d,
			   const void *up_d, int T, int F);
	/* out[T,F] = relu(gate)^2 * up (BitNet's squared-ReLU GLU). */
	fi_err (*relu2_mul)(struct fi_backend *be, void *out_d, const void *gate_d,
			    const void *up_d, int T, int F);
	/* BitNet's products after an RMSNorm: out_i[T,N_i] = v w_i^T for n <= 4 weights over
	 * one input, v = rmsnorm(u; norm, eps) with u = in[T,K], or relu(in)^2 * up[T,K] when
	 * up_d is given (the sub-norms before o and down; the layer norms before q/k/v and
	 * gate/up). add (n == 1): out_0 += the product instead, rounded to bf16 first as matmul
	 * stores it (the residual add). tmp_d: [T,K] scratch for v (may be in_d, which is then
	 * overwritten). Optional: without it, relu2_mul, rmsnorm and the products apart, which it
	 * equals (the CUDA decode path folds them into one launch). */
	fi_err (*norm_matmul)(struct fi_backend *be, int n, void *const *out_d, const void *in_d,
			      const void *up_d, void *tmp_d, const struct fi_weight *norm,
			      float eps, const struct fi_weight *const *w, int add, int T);
	/* x[n] = cap * tanh(x / cap) on f32 logits in place (final logit soft-capping, so
	 * argmax and the sample op see the capped logits). */
	fi_err (*softcap)(struct fi_backend *be, float *x_d, int64_t n, float cap);
	/* out[T,D] = sum over the top_k experts e of token t of w_te * expert_e(in[t]), with
	 * expert_e(x) = down_e(act(x gate_e^T) * (x up_e^T)), and w = softmax(router[t]) of the
	 * chosen (renormalised when norm_topk). router_d: f32 [T,E] logits. The routing, the
	 * grouping of tokens by expert and the products all happen on the device. */
	fi_err (*moe)(struct fi_backend *be, void *out_d, const void *in_d, const float *router_d,
		      const struct fi_moe *moe, int T);

	/* Optional CUDA-graph hooks: replay returns FI_OK if a graph for key exists and was
	 * launched, FI_ENOTFOUND otherwise; capture_begin/end record the ops issued between.
	 * A captured step has at most FI_GRAPH_MAX_T tokens: scratch that must not move under
	 * a graph is sized for that many. */
	fi_err (*graph_replay)(struct fi_backend *be, uint64_t key);
	fi_err (*graph_capture_begin)(struct fi_backend *be, uint64_t key);
	fi_err (*graph_capture_end)(struct fi_backend *be, uint64_t key);
	/* Optional: the device's memory now, free and total bytes (what is left once the
	 * weights and scratch are allocated sizes the KV pool). */
	fi_err (*mem_info)(struct fi_backend *be, size_t *free_bytes, size_t *total_bytes);
	/* Optional (NULL: one upload or download per layer's K and V of each block): copies n
	 * whole blocks between the cache and host memory, queued on the backend's stream (a
	 * later op sees them; sync or download waits for them). Block i is cache block
	 * blocks[i] and host memory host[i], laid out for each layer l in order, K then V, each
	 * [block_size, Hk, hd] in the act dtype (kvxfer.h's arena block). to_cache: host to cache,
	 * else cache to host. The host memory must stay valid until the copy is waited for.
	 * seg (NULL: one) names the registration of host memory each block lies in: blocks of
	 * two never share one strided copy (CUDA refuses a copy across registrations). */
	fi_err (*kv_copy)(struct fi_backend *be, struct fi_kv_cache *kv, int to_cache, int n,
			  const int32_t *blocks, void *const *host, const int32_t *seg);
};

struct fi_backend {
	const struct fi_backend_ops *ops;
	enum fi_dtype act; /* activation and KV dtype */
	int n_threads;     /* CPU threads (CPU backend) */
	size_t mem_total, mem_free; /* device memory, bytes (0 when unknown) */
	char device[128];  /* "cpu (2 threads)", "NVIDIA H100 80GB HBM3" */
	int fuse_max_T;    /* batches of at most this many tokens use the fused decode ops */
	/* The fused decode ops also take quantized layer weights: every type but act-order INT4,
	 * q/k/v all quantized or none with one activation rounding, gate and up of one type
	 * (model.c checks it at load); ternary (TQ2) ones through norm_matmul and norm_qkv_rope
	 * (arch.c's BitNet layer). */
	int fuse_quant;
	/* The fused decode ops also run the families of lib/model/arch.h and the Llama family's
	 * Qwen3 (q/k norms), and rope_kv_write is given the q/k norms (struct fi_rope). */
	int fuse_families;
	const struct fi_settings *settings; /* the environment's switches (settings.h) */
	void *priv;
	/* Random weights (fi_image_random, --load-format dummy): weight() and weight_cat() make
	 * a tensor whose data is NULL on the device, element i of tensor NAME being
	 * fi_random_weight(random_seed, NAME, i, cols, ndim) (random.c), the same values on
	 * every backend. 0: a NULL tensor is an error. */
	int random_weights;
	uint64_t random_seed;
	/* Set by the model while it loads a weight a backend may keep in bf16 when it is stored
	 * so (the tied embedding and head of a ternary model, half of what a token reads on the
	 * CPU); a backend that computes from bf16 anyway ignores it. */
	int keep_bf16;
	/* CPU: a W8A8 product's input is rounded to bf16 before its e4m3 rounding, as the GPU's
	 * activations are stored. Off: the reference rounds its f32 values. A test sets it to
	 * measure how far one bf16 rounding of the inputs moves a W8A8 model (an input a bf16
	 * step from the f32 one lands in the other e4m3 code about once in 64). */
	int aq_bf16;
};

/* random.c: the value of element i of a random tensor (backend.h, random_weights): a 2-D
 * [rows, cols] weight draws uniformly with unit-variance outputs, +-sqrt(3 / cols); a 1-D
 * one (norms, biases) 1 +- 0.1. splitmix64 of (seed, FNV-1a of name, i): integer steps the
 * CUDA kernel repeats exactly. */
uint64_t fi_random_name_hash(uint64_t seed, const char *name);
float fi_random_weight(uint64_t name_hash, uint64_t i, int64_t cols, int ndim);
/* out[n] = the f32 values of a tensor's elements [0, n). */
void fi_random_fill_f32(float *out, uint64_t name_hash, uint64_t n, int64_t cols, int ndim);

/* Creates a backend by name: "cpu", "cuda", or "auto" (CUDA when built with it and a GPU
 * is present, else CPU). n_threads <= 0 means one per core. */
fi_err fi_backend_create(const char *name, int n_threads, struct fi_backend **out);
void fi_backend_destroy(struct fi_backend *be);

/* Constructors, each in its own module. */
fi_err fi_backend_cpu_create(int n_threads, struct fi_backend **out);
#ifdef FI_HAVE_CUDA
fi_err fi_backend_cuda_create(int device, struct fi_backend **out);
#endif

#endif
