#!/usr/bin/env python3
"""Makes the HF parity fixtures under tests/fixtures/hf/<name>/.

Each is a tiny random-weight checkpoint of one supported family, in f32, with reference
outputs of Hugging Face transformers (eager attention, float32, CPU):

  config.json, model.safetensors   the checkpoint (save_pretrained)
  ref.json                         {"prompt": [ids], "greedy": [32 ids], "vocab": V,
                                    "rows": len(prompt) + 32, "logits": "logits.bin"}
  logits.bin                       f32 little-endian [rows, V]: logits of every position of
                                   prompt + greedy in one full-sequence forward (teacher
                                   forcing), so incremental decoding is checked row by row

The greedy tokens come from a plain argmax loop over full-sequence forwards (no KV
cache, no generate() stopping rules), so they depend only on the model's logits.
Weights are drawn larger than the HF default init so that logits are well separated and
greedy choices are not decided by rounding; the script checks the top-2 margin.

Run from the repository root:  python3 tools/make_hf_fixtures.py
"""
import json
import os
import sys

import numpy as np
import torch
import transformers

OUT = os.path.join("tests", "fixtures", "hf")
PROMPT_LEN = 16
N_GREEDY = 32
GAIN = float(os.environ.get("GAIN", "6"))

BASE = dict(hidden_size=64, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            vocab_size=300, max_position_embeddings=256, rms_norm_eps=1e-5,
            rope_theta=10000.0, torch_dtype="float32", bos_token_id=1, eos_token_id=2,
            attention_dropout=0.0)

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=False)),
    "llama_tied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True)),
    # original_max_position_embeddings 32 puts the 8 frequency pairs of head_dim 16 in
    # all three llama3 regimes (kept, smoothed, divided by factor).
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=True,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=32))),
    # the window (8) is shorter than the prompt (16), so it changes the logits.
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(
        tie_word_embeddings=True, sliding_window=8)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        tie_word_embeddings=True, use_sliding_window=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(
        tie_word_embeddings=True, use_sliding_window=False, attention_bias=False)),
}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(1.0 * torch.randn(p.shape, generator=g))
            else:  # projections: unit-variance outputs for unit-variance inputs
                gain = GAIN if ("o_proj" in name or "down_proj" in name) else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def make(name, seed):
    cfg_cls, model_cls, extra = FAMILIES[name]
    kw = dict(BASE)
    kw.update(extra)
    cfg = getattr(transformers, cfg_cls)(**kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).float().eval()
    randomize(model, seed)
    rng = np.random.default_rng(seed)
    prompt = [1] + [int(x) for x in rng.integers(3, BASE["vocab_size"], PROMPT_LEN - 1)]
    ref = logits_of(model, prompt)
    seq = list(prompt)
    margin = 1e9
    for _ in range(N_GREEDY):
        last = logits_of(model, seq)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float((top[0] - top[1]) / top[0].abs().clamp(min=1e-6)))
        seq.append(int(torch.argmax(last)))
    if margin < 1e-4:
        sys.exit(f"{name}: greedy top-2 margin {margin:.2e} too small; change the seed")
    if name == "mistral":  # the window must matter
        full = getattr(transformers, cfg_cls)(**dict(kw, sliding_window=None))
        full._attn_implementation = "eager"
        m2 = getattr(transformers, model_cls)(full).float().eval()
        m2.load_state_dict(model.state_dict())
        d = float((logits_of(m2, prompt) - ref).abs().max())
        assert d > 1e-2, f"sliding window does not change the logits ({d})"
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    if name == "llama3_rope":
        # Most published checkpoints still spell it the transformers 4 way: rope_theta at
        # the top and rope_scaling; keep one fixture in that form (both parse the same).
        cp = os.path.join(d, "config.json")
        with open(cp) as f:
            c = json.load(f)
        rp = c.pop("rope_parameters")
        c["rope_theta"] = rp.pop("rope_theta")
        c["rope_scaling"] = rp
        with open(cp, "w") as f:
            json.dump(c, f, indent=2)
    for extra_file in ("generation_config.json",):
        p = os.path.join(d, extra_file)
        if os.path.exists(p):
            os.remove(p)
    full_ref = logits_of(model, seq)
    assert torch.equal(full_ref[:len(prompt)].argmax(-1), ref.argmax(-1))
    full_ref.numpy().astype("<f4").tofile(os.path.join(d, "logits.bin"))
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(dict(prompt=prompt, greedy=seq[len(prompt):], vocab=BASE["vocab_size"],
                       rows=len(seq), logits="logits.bin",
                       transformers=transformers.__version__, torch=torch.__version__,
                       greedy_min_rel_margin=margin), f, indent=1)
    print(f"{name}: prompt {len(prompt)}, greedy {seq[len(prompt):][:8]}..., "
          f"min top-2 margin {margin:.3g}")


def make_sampling():
    """tests/fixtures/hf/sampling.json: HF logits processors on random logits. Each case:
    logits, history, parameters, and the surviving ids (most likely first) with their
    probabilities (softmax of the processed scores)."""
    from transformers import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                              TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
    g = torch.Generator().manual_seed(7)
    cases = []
    params = [dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
              dict(temperature=0.7, top_k=10, top_p=1.0, min_p=0.0, repeat_penalty=1.0),
              dict(temperature=1.3, top_k=0, top_p=0.8, min_p=0.0, repeat_penalty=1.0),
              dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1, repeat_penalty=1.0),
              dict(temperature=0.9, top_k=20, top_p=0.9, min_p=0.05, repeat_penalty=1.3),
              dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=0.8),
              dict(temperature=0.5, top_k=5, top_p=0.5, min_p=0.2, repeat_penalty=1.1)]
    for i, p in enumerate(params):
        V = 40
        logits = (3 * torch.randn(1, V, generator=g)).float()
        hist = torch.randint(0, V, (1, 12), generator=g)
        procs = []
        if p["repeat_penalty"] != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(p["repeat_penalty"]))
        procs.append(TemperatureLogitsWarper(p["temperature"]))
        if p["top_k"] > 0:
            procs.append(TopKLogitsWarper(p["top_k"]))
        if p["top_p"] < 1.0:
            procs.append(TopPLogitsWarper(p["top_p"]))
        if p["min_p"] > 0:
            procs.append(MinPLogitsWarper(p["min_p"]))
        sc = logits.clone()
        for pr in procs:
            sc = pr(hist, sc)
        prob = torch.softmax(sc, -1)[0]
        keep = [int(j) for j in torch.argsort(prob, descending=True) if prob[j] > 0]
        cases.append(dict(params=p, logits=[float(x) for x in logits[0]],
                          history=[int(x) for x in hist[0]], ids=keep,
                          probs=[float(prob[j]) for j in keep]))
    with open(os.path.join(OUT, "sampling.json"), "w") as f:
        json.dump(dict(transformers=transformers.__version__, cases=cases), f)
    print(f"sampling: {len(cases)} cases")


def main():
    torch.set_num_threads(1)
    for i, name in enumerate(FAMILIES):
        make(name, 1000 + i)
    make_sampling()


if __name__ == "__main__":
    main()
