/* config: the model hyper-parameters fi needs, parsed from a Hugging Face config.json
 * (and generation_config.json), for the Llama family: LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM (QKV bias), Qwen3ForCausalLM (q/k RMSNorm); and the families of
 * arch.h: Gemma2ForCausalLM, Gemma3ForCausalLM, the text tower of
 * Gemma3ForConditionalGeneration, Phi3ForCausalLM, MixtralForCausalLM, Qwen3MoeForCausalLM
 * (config_family.c parses what is theirs). */
#ifndef FI_CONFIG_H
#define FI_CONFIG_H

#include <stddef.h>

#include "base/err.h"
#include "base/tensor.h"

enum fi_family {
	FI_FAM_LLAMA = 0, FI_FAM_MISTRAL, FI_FAM_QWEN2, FI_FAM_QWEN3,
	FI_FAM_GEMMA2, FI_FAM_GEMMA3, FI_FAM_PHI3, FI_FAM_MIXTRAL, FI_FAM_QWEN3_MOE,
	FI_FAM_BITNET,
	FI_FAM_COUNT
};

enum fi_rope_type {
	FI_ROPE_DEFAULT = 0,
	FI_ROPE_LLAMA3,
	FI_ROPE_LINEAR,
	FI_ROPE_DYNAMIC,  /* dynamic NTK: each position rotated with the base for its length */
	FI_ROPE_YARN,
	FI_ROPE_LONGROPE, /* Phi-3: short or long factors, chosen once per model (fi-load(1)) */
};

/* The MLP's gate activation. */
enum fi_act { FI_ACT_SILU = 0, FI_ACT_GELU_TANH, FI_ACT_RELU2 };

#define FI_MAX_EOS 8
#define FI_MAX_LAYERS 1024
#define FI_MAX_ROPE_FACTORS 512 /* LongRoPE factors: head_dim / 2 of them */

/* Per-layer kinds (fi_config.layer). */
#define FI_LAYER_SLIDING 1u /* attention within sliding_window (Gemma's local layers) */
#define FI_LAYER_MOE 2u     /* the MLP is a mixture of experts */

struct fi_config {
	enum fi_family family;
	char arch[64];        /* "LlamaForCausalLM", ... */
	int hidden;           /* hidden_size, D */
	int n_layers;         /* num_hidden_layers */
	int n_heads;          /* num_attention_heads, Hq */
	int n_kv_heads;       /* num_key_value_heads, Hk (defaults to Hq) */
	int head_dim;         /* head_dim (defaults to D / Hq) */
	int ffn;              /* intermediate_size, F */
	int vocab;            /* vocab_size, V */
	int max_pos;          /* max_position_embeddings */
	float rms_eps;        /* rms_norm_eps */
	double rope_theta;    /* rope_theta (default 10000) */
	enum fi_rope_type rope_type;
	double rope_factor;   /* rope_scaling.factor */
	double rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
	int rope_orig_max_pos;   /* rope_scaling.original_max_position_embeddings */
	int tie_embeddings;   /* tie_word_embeddings: no separate LM head */
	int sliding_window;   /* 0 = none */
	int qkv_bias;         /* q/k/v projections carry a bias (Qwen2, attention_bias) */
	int qk_norm;          /* per-head RMSNorm of q and k before RoPE (Qwen3) */
	int bos_id;           /* -1 if none */
	int eos_ids[FI_MAX_EOS];
	int n_eos;
	enum fi_dtype torch_dtype; /* torch_dtype of the checkpoint, informational */

	/* ---- model families beyond Llama (arch.h); zero for the Llama family ---- */
	int text_tower;        /* Gemma3ForConditionalGeneration: text_config, vision skipped */
	enum fi_act act;       /* hidden_act / hidden_activation */
	int norm_plus_one;     /* RMSNorm scales by (1 + w) (Gemma) */
	int sandwich;          /* post-attention and post-feed-forward norms (Gemma) */
	float embed_scale;     /* embeddings times this (Gemma: sqrt(hidden) in f32); 0 = 1 */
	float attn_softcap;    /* attn_logit_softcapping: cap tanh(s / cap); 0 = none */
	float final_softcap;   /* final_logit_softcapping, on the logits; 0 = none */
	float query_scalar;    /* query_pre_attn_scalar: scores scaled by its -1/2; 0 = hd */
	double rope_local_theta; /* Gemma3: base of the sliding layers (they never scale) */
	int fused_qkv;         /* Phi-3: qkv_proj and gate_up_proj, one tensor each */
	int sub_norms;         /* BitNet: RMSNorm of the attention output before o_proj
				* (attn_sub_norm) and of the GLU output before down (ffn_sub_norm) */
	int ternary;           /* BitNet: quantization_config says packed ternary weights */
	unsigned char layer[FI_MAX_LAYERS]; /* FI_LAYER_* per layer */
	/* rope_scaling beyond llama3 (rope_orig_max_pos serves them too) */
	double rope_attn_factor; /* yarn, longrope: cos and sin times this (computed when absent) */
	double rope_beta_fast, rope_beta_slow; /* yarn ramp */
	int rope_truncate;     /* yarn: floor/ceil the correction range (default true) */
	int rope_long;         /* longrope: the long factors are in force */
	int n_rope_factors;    /* longrope: head_dim / 2 */
	float rope_short[FI_MAX_ROPE_FACTORS], rope_long_f[FI_MAX_ROPE_FACTORS];
	/* mixture of experts */
	int n_experts;         /* num_local_experts / num_experts */
	int n_experts_used;    /* num_experts_per_tok, top-k */
	int moe_ffn;           /* intermediate size of one expert (Mixtral: intermediate_size) */
	int norm_topk;         /* top-k weights renormalised to sum 1 (Mixtral always) */
	int sparse_step;       /* Qwen3-MoE decoder_sparse_step */
};

/* Parses config.json text (len bytes, not NUL-terminated); gen may be NULL or the text of
 * generation_config.json (its bos/eos override config.json's). Every missing or invalid key
 * is an FI_EFORMAT error naming the key; an unknown architecture is FI_EUNSUPPORTED. */
fi_err fi_config_parse(const char *json, size_t len, const char *gen, size_t gen_len,
		       struct fi_config *out);
/* Reads DIR/config.json and, if present, DIR/generation_config.json. */
fi_err fi_config_load_dir(const char *dir, struct fi_config *out);
/* Serialises a config as a JSON object (malloc'd, NUL-terminated); the inverse of
 * fi_config_parse for what fi records (used inside model images). */
char *fi_config_to_json(const struct fi_config *c);
/* Cross-checks a config against a tensor set with engine names (see names.h): every
 * expected tensor present with the expected shape, no unexpected ones, heads divisible
 * by KV heads. The error names the key or tensor. */
fi_err fi_config_check(const struct fi_config *c, const struct fi_tensor_set *ts);
/* Parameter count implied by the config. */
long long fi_config_params(const struct fi_config *c);
const char *fi_family_name(enum fi_family f);
/* 1 when the config needs the family layer loop (arch.h) rather than the Llama one. */
int fi_config_is_arch(const struct fi_config *c);
/* Layer l's kind bits (FI_LAYER_*). */
static inline unsigned fi_config_layer(const struct fi_config *c, int l)
{
	return l >= 0 && l < FI_MAX_LAYERS ? c->layer[l] : 0;
}

#endif
