/* libFuzzer target: fi_config_parse. The input is config.json, optionally followed by a NUL
 * byte and generation_config.json. A config that parses must survive fi_config_to_json and
 * parse back to the same values (the model families' keys included), and its parameter
 * count must be positive. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *gen = NULL;
	const char *nul = memchr(s, 0, size);
	size_t len = size, glen = 0;
	struct fi_config c, back;
	struct fi_tensor_set none = {0, NULL};
	char *j;
	if (nul) {
		len = (size_t)(nul - s);
		gen = nul + 1;
		glen = size - len - 1;
	}
	if (fi_config_parse(s, len, gen, glen, &c) != FI_OK)
		return 0;
	if (fi_config_params(&c) <= 0 || fi_config_check(&c, &none) != FI_EMISMATCH)
		abort();
	if (!(j = fi_config_to_json(&c)))
		abort();
	if (fi_config_parse(j, strlen(j), NULL, 0, &back) != FI_OK || back.hidden != c.hidden ||
	    back.n_layers != c.n_layers || back.head_dim != c.head_dim || back.rope_type != c.rope_type ||
	    back.rms_eps != c.rms_eps || back.rope_theta != c.rope_theta || back.n_eos != c.n_eos ||
	    back.bos_id != c.bos_id || back.sliding_window != c.sliding_window ||
	    back.qkv_bias != c.qkv_bias || back.tie_embeddings != c.tie_embeddings ||
	    /* the model families' keys */
	    back.family != c.family || back.text_tower != c.text_tower ||
	    memcmp(back.layer, c.layer, sizeof c.layer) || back.n_experts != c.n_experts ||
	    back.n_experts_used != c.n_experts_used || back.moe_ffn != c.moe_ffn ||
	    back.norm_topk != c.norm_topk || back.attn_softcap != c.attn_softcap ||
	    back.final_softcap != c.final_softcap || back.query_scalar != c.query_scalar ||
	    back.rope_attn_factor != c.rope_attn_factor || back.rope_long != c.rope_long ||
	    back.rope_local_theta != c.rope_local_theta)
		abort();
	free(j);
	return 0;
}
