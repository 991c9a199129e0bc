/* names: the engine's tensor names, and their mapping from Hugging Face names.
 *
 * Engine names (shapes row-major; D hidden, Hq/Hk heads, hd head_dim, F ffn, V vocab):
 *   tok_embd [V,D]          out_norm [D]          output [V,D] (absent when tied)
 *   blk.N.attn_norm [D]     blk.N.attn_q [Hq*hd,D]  blk.N.attn_k [Hk*hd,D]
 *   blk.N.attn_v [Hk*hd,D]  blk.N.attn_o [D,Hq*hd]
 *   blk.N.attn_q_bias [Hq*hd]  blk.N.attn_k_bias [Hk*hd]  blk.N.attn_v_bias [Hk*hd]  (Qwen2)
 *   blk.N.attn_q_norm [hd]  blk.N.attn_k_norm [hd]  (Qwen3)
 *   blk.N.ffn_norm [D]      blk.N.ffn_gate [F,D]  blk.N.ffn_up [F,D]  blk.N.ffn_down [D,F]
 * and for the families of arch.h:
 *   blk.N.attn_post_norm [D]  blk.N.ffn_post_norm [D]   (Gemma: post_attention_layernorm,
 *                             post_feedforward_layernorm; pre_feedforward_layernorm is ffn_norm)
 *   blk.N.attn_qkv [(Hq+2Hk)*hd, D]  blk.N.ffn_gate_up [2F, D]   (Phi-3, fused as HF has them)
 *   blk.N.ffn_router [E,D]   blk.N.ffn_gate.E [Fm,D]  blk.N.ffn_up.E [Fm,D]  blk.N.ffn_down.E [D,Fm]
 *                            (mixture-of-experts layers: E experts of Fm = moe_ffn)
 */
#ifndef FI_NAMES_H
#define FI_NAMES_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Maps an HF tensor name ("model.layers.3.self_attn.q_proj.weight") to the engine name
 * ("blk.3.attn_q") in out. Returns 1 if mapped, 0 if the name is known but carries nothing
 * the engine uses (rotary inv_freq buffers), -1 if unknown. */
int fi_name_from_hf(const char *hf, char *out, size_t outsz);
/* The same for a config's family (Gemma's norms, Phi-3's fused tensors, experts, Gemma 3's
 * text tower: vision tensors map to nothing); c NULL: the Llama family. */
int fi_name_from_hf_cfg(const struct fi_config *c, const char *hf, char *out, size_t outsz);

/* The tensors a config requires, in image order. Call with i = 0, 1, ... until it returns 0;
 * fills the engine name and the expected shape. */
struct fi_expected {
	char name[64];
	int ndim;
	int64_t shape[2];
};
int fi_expected_tensor(const struct fi_config *c, int i, struct fi_expected *out);
/* Tensors of layer l (MoE layers have 3 per expert more). */
int fi_layer_tensor_count(const struct fi_config *c, int l);

#endif
