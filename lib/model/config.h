/* config: the model hyper-parameters fi needs, parsed from a Hugging Face config.json
 * (and generation_config.json), for the Llama family: LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM (QKV bias), Qwen3ForCausalLM (q/k RMSNorm). */
#ifndef FI_CONFIG_H
#define FI_CONFIG_H

#include <stddef.h>

#include "base/err.h"
#include "base/tensor.h"

enum fi_family { FI_FAM_LLAMA = 0, FI_FAM_MISTRAL, FI_FAM_QWEN2, FI_FAM_QWEN3, FI_FAM_COUNT };

enum fi_rope_type {
	FI_ROPE_DEFAULT = 0,
	FI_ROPE_LLAMA3,  /* implemented */
	FI_ROPE_LINEAR,  /* recorded; the engine refuses it until implemented */
	FI_ROPE_DYNAMIC, /* recorded; likewise */
};

#define FI_MAX_EOS 8

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

#endif
