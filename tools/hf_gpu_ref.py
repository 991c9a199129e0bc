#!/usr/bin/env python3
"""Random-weight checkpoints of real model shapes and their HF transformers references, made
on the GPU machine (never committed: the 8B one is 16 GB).

  python3 tools/hf_gpu_ref.py OUT NAME...      NAME from SHAPES below

For each NAME, OUT/NAME/ gets config.json + model.safetensors (bf16), and ref.json +
logits.bin in the format of tools/make_hf_fixtures.py: the prompt, the greedy continuation
and the f32 logits of every position of prompt + continuation from one full-sequence forward
(teacher forcing). The reference runs in float32 (eager attention) on the bf16-rounded
weights, so it is the higher-precision twin of what fi computes in bf16. ref.json also
records how HF's own bf16 forward does against it (bf16_rel_mean/max, bf16_top1,
bf16_greedy_match): random weights give flat logits where bf16 rounding alone flips some
argmaxes, so fi is judged against that baseline rather than against zero.
Weights are drawn so that activations keep unit scale through the layers (projection
std 1/sqrt(fan_in)), with logits well separated; tests/gpu/test_model_hf.c reads the result.
"""
import json
import os
import sys
import time

import torch
import transformers

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


def randomize(model, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, device="cuda", dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.2 * r)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(r)
            else:
                p.copy_(r / p.shape[1] ** 0.5)


def make(out, name, seed):
    cfg_cls, model_cls, kw, n_prompt, n_gen = SHAPES[name]
    t0 = time.time()
    cfg = getattr(transformers, cfg_cls)(bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5,
                                         attention_dropout=0.0, **kw)
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
                       transformers=transformers.__version__, torch=torch.__version__), f)
    print(f"{name}: HF bf16 vs f32: rel mean {float(rel.mean()):.2e} max {float(rel.max()):.2e} "
          f"top1 {b_top1}/{len(seq)} greedy {b_match}/{n_gen}", flush=True)
    del model
    torch.cuda.empty_cache()
    print(f"{name}: saved in {t_save:.1f}s, references in {time.time() - t0 - t_save:.1f}s",
          flush=True)


def main():
    out = sys.argv[1]
    for i, name in enumerate(sys.argv[2:]):
        make(out, name, 4242 + i)


if __name__ == "__main__":
    main()
