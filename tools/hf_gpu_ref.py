#!/usr/bin/env python3
"""Random-weight checkpoints of real model shapes and their HF transformers references, made
on the GPU machine (never committed: the 8B one is 16 GB).

  python3 tools/hf_gpu_ref.py OUT NAME...      NAME from SHAPES below
  python3 tools/hf_gpu_ref.py --configs OUT NAME...   NAME from FULL: config.json alone, for
                                               fi-bench --load-format dummy at full size

For each NAME, OUT/NAME/ gets config.json + model.safetensors (bf16), and ref.json +
logits.bin in the format of tools/make_hf_fixtures.py: the prompt, the greedy continuation
and the f32 logits of every position of prompt + continuation from one full-sequence forward
(teacher forcing). The reference runs in float32 (eager attention) on the bf16-rounded
weights, so it is the higher-precision twin of what fi computes in bf16. ref.json also
records how HF's own bf16 forward does against it (bf16_rel_mean/max, bf16_top1,
bf16_greedy_match): random weights give flat logits where bf16 rounding alone flips some
argmaxes, so fi is judged against that baseline rather than against zero. For a mixture of
experts it records the router near-ties too (tools/hf_router.py).
Weights are drawn so that activations keep unit scale through the layers (projection
std 1/sqrt(fan_in)), with logits well separated; tests/gpu/test_model_hf.c reads the result.
"""
import json
import os
import sys
import time

import torch
import transformers

from hf_router import router_ties

L3ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
              original_max_position_embeddings=8192)
SHAPES = {
    # Llama-3-8B: hidden 4096, 32 layers, 32 heads, 8 KV heads, FFN 14336, vocab 128256
    "llama3_8b": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        rope_theta=500000.0, rope_scaling=L3ROPE, max_position_embeddings=131072,
        tie_word_embeddings=False), 128, 32),
    # Llama-3.2-1B: hidden 2048, 16 layers, 32/8 heads of 64, FFN 8192, tied
    "llama32_1b": ("LlamaConfig", "LlamaForCausalLM", dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        rope_theta=500000.0, rope_scaling=dict(L3ROPE, factor=32.0),
        max_position_embeddings=131072, tie_word_embeddings=True), 200, 32),
    "qwen2_small": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, vocab_size=8192,
        rope_theta=1000000.0, max_position_embeddings=4096, tie_word_embeddings=True,
        use_sliding_window=False), 150, 32),
    "qwen3_small": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=4,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=8192,
        rope_theta=1000000.0, max_position_embeddings=4096, tie_word_embeddings=True,
        use_sliding_window=False, attention_bias=False), 150, 32),
    "mistral_small": ("MistralConfig", "MistralForCausalLM", dict(
        hidden_size=1024, intermediate_size=3584, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, head_dim=128, vocab_size=8192,
        rope_theta=10000.0, max_position_embeddings=4096, sliding_window=64,
        tie_word_embeddings=False), 150, 32),
}


# The model families (lib/model/arch.h) at their real widths, cut to a few layers (the whole
# models do not fit the GPU machine's RAM and disk beside transformers). Gemma-2-9B keeps its
# soft-caps and head size 256 but takes a 64-token window, so that the 150-token prompt
# crosses it; the MoE shapes keep every expert.
GEMMA2_9B = dict(hidden_size=3584, intermediate_size=14336, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=256, vocab_size=256000,
                 query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
                 final_logit_softcapping=30.0, sliding_window=4096,
                 max_position_embeddings=8192, rope_theta=10000.0, tie_word_embeddings=True,
                 hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6)
QWEN3_30B = dict(hidden_size=2048, intermediate_size=6144, num_attention_heads=32,
                 num_key_value_heads=4, head_dim=128, vocab_size=151936, num_experts=128,
                 num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
                 decoder_sparse_step=1, mlp_only_layers=[], rope_theta=1000000.0,
                 max_position_embeddings=40960, tie_word_embeddings=False,
                 use_sliding_window=False, rms_norm_eps=1e-6)
MIXTRAL_8X7B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=32000, num_local_experts=8,
                    num_experts_per_tok=2, rope_theta=1000000.0, max_position_embeddings=32768,
                    tie_word_embeddings=False, sliding_window=None, rms_norm_eps=1e-5)
SHAPES.update({
    "gemma2_9b_cut": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        GEMMA2_9B, num_hidden_layers=4, sliding_window=64), 150, 32),
    "qwen3_30b_cut": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(
        QWEN3_30B, num_hidden_layers=4), 150, 32),
    "mixtral_8x7b_cut": ("MixtralConfig", "MixtralForCausalLM", dict(
        MIXTRAL_8X7B, num_hidden_layers=2), 150, 32),
})
# Whole models, for their configs alone.
FULL = {
    "gemma2_9b": ("Gemma2Config", dict(GEMMA2_9B, num_hidden_layers=42), "Gemma2ForCausalLM"),
    "qwen3_30b_a3b": ("Qwen3MoeConfig", dict(QWEN3_30B, num_hidden_layers=48),
                      "Qwen3MoeForCausalLM"),
    "mixtral_8x7b": ("MixtralConfig", dict(MIXTRAL_8X7B, num_hidden_layers=32),
                     "MixtralForCausalLM"),
}


def write_configs(out, names):
    for name in names:
        cls, kw, arch = FULL[name]
        cfg = getattr(transformers, cls)(bos_token_id=1, eos_token_id=2, attention_dropout=0.0,
                                         **kw)
        cfg.architectures = [arch]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        cfg.save_pretrained(d)
        print(f"{name}: {d}/config.json", flush=True)


def randomize(model, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    gemma = "gemma" in type(model).__name__.lower()
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, device="cuda", dtype=torch.float32)
            if name.endswith("norm.weight"):  # Gemma's norms scale by (1 + w)
                p.copy_((0.0 if gemma else 1.0) + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.2 * r)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(r)
            elif name.endswith("gate.weight") and p.shape[0] <= 256:  # routers: clear choices
                p.copy_(3.0 * r / p.shape[-1] ** 0.5)
            else:  # experts are [E, out, in] in transformers 5: fan-in is the last dimension
                p.copy_(r / p.shape[-1] ** 0.5)


def make(out, name, seed):
    cfg_cls, model_cls, kw, n_prompt, n_gen = SHAPES[name]
    t0 = time.time()
    kw = dict(kw)
    kw.setdefault("rms_norm_eps", 1e-5)
    cfg = getattr(transformers, cfg_cls)(bos_token_id=1, eos_token_id=2, attention_dropout=0.0,
                                         **kw)
    cfg._attn_implementation = "eager"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = getattr(transformers, model_cls)(cfg).eval()
    torch.set_default_dtype(torch.float32)
    randomize(model, seed)
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True, max_shard_size="50GB")
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    t_save = time.time() - t0
    # the f32 reference on the bf16-rounded weights (a converted copy; the bf16 model stays
    # for the same-precision baseline below)
    import copy
    m32 = copy.deepcopy(model).float()
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator().manual_seed(seed)
    prompt = [1] + torch.randint(3, kw["vocab_size"], (n_prompt - 1,), generator=g).tolist()

    def greedy(m):
        s = list(prompt)
        with torch.no_grad():
            for _ in range(n_gen):
                s.append(int(torch.argmax(m(torch.tensor([s], device="cuda")).logits[0, -1])))
        return s

    seq = greedy(m32)
    with torch.no_grad():
        full = m32(torch.tensor([seq], device="cuda")).logits[0].float()
    ties = router_ties(m32, model, seq)
    del m32
    torch.cuda.empty_cache()
    # HF itself in bf16 against the f32 reference: what bf16 arithmetic costs, the baseline
    # fi's bf16 numbers are judged against
    with torch.no_grad():
        lb = model(torch.tensor([seq], device="cuda")).logits[0].float()
    rel = ((lb - full).norm(dim=-1) / full.norm(dim=-1)).cpu()
    b_top1 = int((lb.argmax(-1) == full.argmax(-1)).sum())
    sb = greedy(model)
    b_match = next((i for i in range(n_gen) if sb[len(prompt) + i] != seq[len(prompt) + i]), n_gen)
    full = full.cpu()
    full.numpy().astype("<f4").tofile(os.path.join(d, "logits.bin"))
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(dict(prompt=prompt, greedy=seq[len(prompt):], vocab=kw["vocab_size"],
                       rows=len(seq), logits="logits.bin",
                       bf16_rel_mean=float(rel.mean()), bf16_rel_max=float(rel.max()),
                       bf16_top1=b_top1, bf16_greedy_match=b_match,
                       transformers=transformers.__version__, torch=torch.__version__, **ties), f)
    print(f"{name}: HF bf16 vs f32: rel mean {float(rel.mean()):.2e} max {float(rel.max()):.2e} "
          f"top1 {b_top1}/{len(seq)} greedy {b_match}/{n_gen}", flush=True)
    del model
    torch.cuda.empty_cache()
    print(f"{name}: saved in {t_save:.1f}s, references in {time.time() - t0 - t_save:.1f}s",
          flush=True)


def main():
    if sys.argv[1] == "--configs":
        write_configs(sys.argv[2], sys.argv[3:])
        return
    out = sys.argv[1]
    for i, name in enumerate(sys.argv[2:]):
        make(out, name, 4242 + i)


if __name__ == "__main__":
    main()
