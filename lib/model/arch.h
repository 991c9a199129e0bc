/* arch: the model families beyond Llama, loaded and run over the same backend ops, KV cache
 * and batch (model.h) as the Llama family:
 *
 *   Gemma 2   x = embed * sqrt(D); per layer, with norm(x) = rmsnorm with (1 + w):
 *               y = attn(norm(x)) Wo^T  (scores s * query_pre_attn_scalar^-1/2, soft-capped
 *                   cap tanh(s / cap); odd layers global, even ones within sliding_window)
 *               x += post_attn_norm(y);  x += post_ffn_norm(down(gelu_tanh(h Wg^T) * h Wu^T)),
 *               h = pre_ffn_norm(x);   logits = final_cap tanh(norm(x) W^T / final_cap)
 *   Gemma 3   the same with q/k norms (1 + w) before RoPE, no caps, layer_types (or every
 *             sliding_window_pattern-th layer global), and two rope bases: rope_theta (with
 *             rope_scaling) for global layers, rope_local_base_freq for the sliding ones;
 *             Gemma3ForConditionalGeneration's text tower alone.
 *   Phi-3     Llama with qkv_proj [q; k; v] and gate_up_proj [gate; up] split at load
 *             (views of one tensor), LongRoPE (rope.c).
 *   Mixtral, Qwen3-MoE: the MLP of MoE layers is the backend's moe op over the stacked
 *             experts (router logits in f32: matmul_f32out); Qwen3-MoE keeps a dense MLP in
 *             mlp_only_layers and off decoder_sparse_step, and has Qwen3's q/k norms.
 *
 * YaRN and LongRoPE's attention factor a multiplies cos and sin in transformers; here the
 * softmax scale is multiplied by a^2, which is the same product. */
#ifndef FI_ARCH_H
#define FI_ARCH_H

#include "model_int.h"

/* Loads the weights of an arch family (fi_config_is_arch) into m (m->c and m->be set). */
fi_err fi_arch_load(struct fi_model *m, const struct fi_tensor_set *ts);
void fi_arch_free(struct fi_model *m);
/* The layers over T tokens and the final norm into m->s.xb, as run_layers does. */
fi_err fi_arch_layers(struct fi_model *m, int T, const int32_t *tok_d, const int32_t *pos_d,
		      const struct fi_attn_batch *ab);

#endif
