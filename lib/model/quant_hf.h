/* quant_hf: quantized Hugging Face checkpoints (and fi-load --quantize fp8) -> weights in
 * fi's quantized layouts (base/quant.h).
 *
 * Read from config.json's "quantization_config":
 *   quant_method "fp8" (transformers' fine-grained FP8): X.weight F8_E4M3 [N, K] and
 *     X.weight_scale_inv [ceil(N/128), ceil(K/128)]; weight_block_size [128, 128];
 *     activation_scheme "dynamic" -> FP8 with 128x128 block scales, activations rounded per
 *     token and group of 128 (FI_AQ_GROUP), as transformers' act_quant does.
 *   quant_method "compressed-tensors", format "float-quantized": X.weight F8_E4M3 and
 *     X.weight_scale [N, 1] (strategy "channel") or one value ("tensor"); input activations
 *     absent (weight-only) or dynamic per token -> FP8 per-row scales, FI_AQ_NONE or
 *     FI_AQ_TOKEN.
 *   quant_method "awq", version "gemm", bits 4, zero_point: X.qweight I32 [K, N/8] (AWQ's
 *     nibble order 0 2 4 6 1 3 5 7), X.qzeros I32 [K/G, N/8], X.scales F16 [K/G, N].
 *   quant_method "gptq", bits 4: X.qweight I32 [K/8, N], X.qzeros I32 [K/G, N/8] (stored
 *     minus one unless checkpoint_format is "gptq_v2"), X.scales F16 [K/G, N], X.g_idx I32
 *     [K] (act-order: any order, G columns per group; regrouped with an input permutation).
 *   -> INT4 with group G.
 * With FI_QHF_FP8 (fi-load --quantize fp8) every linear layer of an unquantized checkpoint
 * becomes FP8 with per-row scales (amax / 448) and per-token activation rounding (W8A8);
 * embeddings, norms and the LM head stay in the image dtype.
 *
 * Every missing or malformed part is an error naming the tensor and what is wrong. */
#ifndef FI_QUANT_HF_H
#define FI_QUANT_HF_H

#include "base/err.h"
#include "base/tensor.h"
#include "safetensors.h"

#define FI_QHF_FP8 1u

struct fi_qhf {
	struct fi_tensor_set set; /* HF names; a quantized module is one "X.weight" tensor */
	char method[32];          /* "" when nothing is quantized */
	struct fi_tensor *t;
	char **names;
	void **bufs;
	int n_bufs;
};

/* The tensors of checkpoint m in DIR with quantized modules converted (a copy of m's set
 * when there is nothing to convert). */
fi_err fi_qhf_convert(const char *dir, const struct fi_st_model *m, unsigned flags,
		      struct fi_qhf **out);
void fi_qhf_free(struct fi_qhf *q);

#endif
