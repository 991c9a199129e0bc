/* config_int: what config.c shares with config_family.c: a JSON object with the name of the
 * file it came from, and the key readers that name the file and key in every error. */
#ifndef FI_CONFIG_INT_H
#define FI_CONFIG_INT_H

#include <jansson.h>

#include "config.h"

struct fi_cfg_src {
	json_t *o;
	const char *file;
};

int fi_cfg_absent(const struct fi_cfg_src *s, const char *key);
/* Integer in [lo, hi]; absent or null: def, or an FI_EFORMAT error when required. */
fi_err fi_cfg_int(const struct fi_cfg_src *s, const char *key, int required, long long def,
		  long long lo, long long hi, int *out);
/* Number, finite and > 0. */
fi_err fi_cfg_num(const struct fi_cfg_src *s, const char *key, int required, double def,
		  double *out);
fi_err fi_cfg_bool(const struct fi_cfg_src *s, const char *key, int def, int *out);
/* rope_scaling or rope_parameters of s, as for config.json itself. */
fi_err fi_cfg_parse_rope(const struct fi_cfg_src *s, struct fi_config *c);

/* config_family.c: the keys of the families beyond Llama, after the common ones are read
 * (c->family, sizes, rope_scaling already set). top is the whole config.json (Gemma 3's
 * multimodal form keeps ids and tying there), s the text model's keys. */
fi_err fi_cfg_parse_family(const struct fi_cfg_src *top, const struct fi_cfg_src *s,
			   struct fi_config *c);
/* rope_scaling types beyond llama3/linear/dynamic: r is the rope object (named key). */
fi_err fi_cfg_parse_rope_ext(const struct fi_cfg_src *s, const struct fi_cfg_src *r,
			     const char *type, struct fi_config *c);
/* The family keys into a config.json object being written (fi_config_to_json). */
void fi_cfg_family_json(const struct fi_config *c, json_t *o);

#endif
