/* config_int: what the config files share (config.c at the bottom; config_rope.c,
 * config_family.c and config_json.c above it, in that order): the limits on sizes, a JSON
 * object with the name of the file it came from, and the key readers that name the file and
 * key in every error. */
#ifndef FI_CONFIG_INT_H
#define FI_CONFIG_INT_H

#include <jansson.h>

#include "config.h"

/* Limits of config.json values. */
#define MAX_HIDDEN 65536
#define MAX_LAYERS 1024
#define MAX_HEADS 1024
#define MAX_HEAD_DIM 1024
#define MAX_FFN (1 << 20)
#define MAX_VOCAB (4 << 20)
#define MAX_POS (1 << 24)
#define MIN_POS 16 /* one KV block: a context must hold a prompt and what it generates */
/* RoPE bases: real models use 1e4 to 1e8; beyond 1e12 every frequency but the first is ~0
 * and the base is a typo (1e308 overflows the float math of the inverse frequencies). */
#define MAX_ROPE_THETA 1e12
#define MAX_CONFIG_BYTES (16u << 20)

struct fi_cfg_src {
	json_t *o;
	const char *file;
};

/* config.c */
int fi_cfg_absent(const struct fi_cfg_src *s, const char *key);
/* Integer in [lo, hi]; absent or null: def, or an FI_EFORMAT error when required. */
fi_err fi_cfg_int(const struct fi_cfg_src *s, const char *key, int required, long long def,
		  long long lo, long long hi, int *out);
/* Number, finite and > 0. */
fi_err fi_cfg_num(const struct fi_cfg_src *s, const char *key, int required, double def,
		  double *out);
fi_err fi_cfg_bool(const struct fi_cfg_src *s, const char *key, int def, int *out);
/* A family's architecture name (LlamaForCausalLM); its model_type is fi_family_name. */
const char *fi_cfg_family_arch(enum fi_family f);

/* config_rope.c: rope_scaling or rope_parameters of s, as for config.json itself. */
fi_err fi_cfg_parse_rope(const struct fi_cfg_src *s, struct fi_config *c);

/* config_family.c: the keys of the families beyond Llama, after the common ones are read
 * (c->family, sizes, rope_scaling already set). top is the whole config.json (Gemma 3's
 * multimodal form keeps ids and tying there), s the text model's keys. */
fi_err fi_cfg_parse_family(const struct fi_cfg_src *top, const struct fi_cfg_src *s,
			   struct fi_config *c);
/* config_rope.c: rope_scaling types beyond llama3/linear/dynamic: r is the rope object (named
 * key). */
fi_err fi_cfg_parse_rope_ext(const struct fi_cfg_src *s, const struct fi_cfg_src *r,
			     const char *type, struct fi_config *c);
/* The family keys into a config.json object being written (fi_config_to_json). */
void fi_cfg_family_json(const struct fi_config *c, json_t *o);

#endif
