#!/usr/bin/env python3
"""Makes the BitNet b1.58 parity fixtures under tests/fixtures/bitnet/<name>/.

Each is a tiny random-weight BitNetForCausalLM checkpoint in the offline-quantized form
transformers reads (quantization_config quant_method "bitnet"): every linear layer's weight
is ternary, packed 4 values per uint8 along the output dimension by transformers'
pack_weights (value + 1, 2 bits each; packed row r holds rows r, r + N/4, r + N/4 * 2,
r + N/4 * 3 at bits 0, 2, 4, 6), with one bf16 weight_scale per tensor. Embeddings (tied
head) and norms are float32, so the reference runs in float32:

  config.json, model.safetensors   the checkpoint, as BitNetForCausalLM.from_pretrained reads it
  ref.json                         {"prompt", "greedy", "vocab", "rows", "logits", ...}
  logits.bin                       f32 [rows, V]: logits of prompt + greedy in one forward

The reference comes from BitNetForCausalLM.from_pretrained on the written directory, so the
packing, the scale's meaning and the int8 activation quantization are transformers' own:
  bitnet      linear_class "autobitlinear" (as bitnet-b1.58-2B-4T): y = (x_q W) * weight_scale
  bitlinear   linear_class "bitlinear" (the default): y = (x_q W) / weight_scale
Greedy tokens come from a plain argmax loop over full-sequence forwards; the script checks
that the top-2 margin is far above the int8 activation error.

Run from the repository root:  python3 tools/make_bitnet_fixtures.py [NAME...]

  python3 tools/make_bitnet_fixtures.py --bf16 [NAME...]
adds transformers' own bf16 forward to the committed fixtures' ref.json, measured as the GPU
test (tests/gpu/test_bitnet_gpu.c) measures fi's GPU: per row max |a - b| / max |b| against the
f32 logits. bf16 activations move the int8 activation codes at rounding boundaries, so this is
the error level a bf16 path through the same quantizer reaches:
  bf16_maxrel_mean, bf16_maxrel_worst, bf16_top1, bf16_greedy_match
"""
import json
import os
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # BitLinear's torch.compile: eager is the same math

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "bitnet")
PROMPT_LEN = 16
N_GREEDY = 24

# Columns of every linear layer are a multiple of 128 (fi's ternary blocks).
BASE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=300,
            max_position_embeddings=256, rms_norm_eps=1e-5, hidden_act="relu2",
            tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, torch_dtype="float32",
            attention_dropout=0.0)

FIXTURES = {
    "bitnet": dict(linear_class="autobitlinear"),
    "bitlinear": dict(linear_class="bitlinear"),
}

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pack(t):
    """transformers' pack_weights, written out: t int8 [N, K] in {-1, 0, 1}, N % 4 == 0."""
    n = t.shape[0] // 4
    u = (t + 1).to(torch.uint8)
    return u[:n] | u[n:2 * n] << 2 | u[2 * n:3 * n] << 4 | u[3 * n:] << 6


def checkpoint(seed):
    """Random float tensors of the model, linear layers as (ternary int8, scale)."""
    g = torch.Generator().manual_seed(seed)
    D, F, V = BASE["hidden_size"], BASE["intermediate_size"], BASE["vocab_size"]
    H, KV, hd = BASE["num_attention_heads"], BASE["num_key_value_heads"], BASE["head_dim"]
    shapes = {"q_proj": (H * hd, D), "k_proj": (KV * hd, D), "v_proj": (KV * hd, D),
              "o_proj": (D, H * hd), "gate_proj": (F, D), "up_proj": (F, D),
              "down_proj": (D, F)}
    t = {"model.embed_tokens.weight": torch.randn(V, D, generator=g),
         "model.norm.weight": 1.0 + 0.2 * torch.randn(D, generator=g)}
    tern = {}
    for l in range(BASE["num_hidden_layers"]):
        p = f"model.layers.{l}."
        for n, sz in (("input_layernorm", D), ("post_attention_layernorm", D),
                      ("self_attn.attn_sub_norm", H * hd), ("mlp.ffn_sub_norm", F)):
            t[p + n + ".weight"] = 1.0 + 0.2 * torch.randn(sz, generator=g)
        for n in LINEAR:
            N, K = shapes[n]
            # about a third zeros, as absmean quantization of a Gaussian gives
            w = torch.randint(0, 3, (N, K), generator=g, dtype=torch.int8) - 1
            # unit-variance outputs for unit-variance inputs (scale ~ 1 / sqrt(2/3 K)); the
            # residual branches larger, or the tied head just repeats the last token
            gain = 6.0 if n in ("o_proj", "down_proj") else 1.2
            s = float(torch.tensor(gain / (K * 2 / 3) ** 0.5).to(torch.bfloat16))
            mod = "self_attn." if n.endswith("_proj") and n[0] in "qkvo" else "mlp."
            tern[p + mod + n] = (w, s)
    return t, tern


def write(d, kind, t, tern):
    os.makedirs(d, exist_ok=True)
    out = dict(t)
    for pre, (w, s) in tern.items():
        out[pre + ".weight"] = pack(w)
        stored = s if kind["linear_class"] == "autobitlinear" else 1.0 / s
        out[pre + ".weight_scale"] = torch.tensor([stored], dtype=torch.bfloat16)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(d, "model.safetensors"),
              metadata={"format": "pt"})
    cfg = dict(BASE, architectures=["BitNetForCausalLM"], model_type="bitnet",
               rope_theta=500000.0,
               quantization_config=dict(quant_method="bitnet", quantization_mode="offline",
                                        **kind))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def make(name, seed):
    d = os.path.join(OUT, name)
    t, tern = checkpoint(seed)
    write(d, FIXTURES[name], t, tern)
    model = transformers.BitNetForCausalLM.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager").eval()
    # the packed weights went through transformers' own unpacking: check one
    pre, (w, s) = next(iter(tern.items()))
    mod = model.get_submodule(pre)
    if hasattr(mod, "weight_scale") and mod.weight.dtype != torch.uint8:
        assert torch.equal(mod.weight.to(torch.int8), w), "unpacked weights differ"
    rng = np.random.default_rng(seed)
    prompt = [1] + [int(x) for x in rng.integers(3, BASE["vocab_size"], PROMPT_LEN - 1)]
    seq = list(prompt)
    margin = 1e9
    for _ in range(N_GREEDY):
        last = logits_of(model, seq)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float((top[0] - top[1]) / top[0].abs().clamp(min=1e-6)))
        seq.append(int(torch.argmax(last)))
    if margin < 2e-3:
        sys.exit(f"{name}: greedy top-2 margin {margin:.2e} too small; change the seed")
    full = logits_of(model, seq)
    full.numpy().astype("<f4").tofile(os.path.join(d, "logits.bin"))
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(dict(prompt=prompt, greedy=seq[len(prompt):], vocab=BASE["vocab_size"],
                       rows=len(seq), logits="logits.bin",
                       transformers=transformers.__version__, torch=torch.__version__,
                       greedy_min_rel_margin=margin), f, indent=1)
    print(f"{name}: prompt {len(prompt)}, greedy {seq[len(prompt):][:8]}..., "
          f"min top-2 margin {margin:.3g}")


def bf16_baseline(name):
    d = os.path.join(OUT, name)
    with open(os.path.join(d, "ref.json")) as f:
        ref = json.load(f)
    model = transformers.BitNetForCausalLM.from_pretrained(
        d, dtype=torch.float32, attn_implementation="eager").eval()
    prompt, greedy, V, rows = ref["prompt"], ref["greedy"], ref["vocab"], ref["rows"]
    want = torch.from_numpy(np.fromfile(os.path.join(d, ref["logits"]), dtype="<f4")
                            .reshape(rows, V).copy())
    f32 = logits_of(model, prompt + greedy)
    f32_err = float((f32 - want).abs().max() / want.abs().max())
    assert torch.equal(f32.argmax(-1), want.argmax(-1)) and f32_err < 1e-4, (name, f32_err)
    # loaded in bf16 (BitLinear's unpacking takes its dtype from the load), then the float32
    # embeddings and norms of the checkpoint converted too
    mb = transformers.BitNetForCausalLM.from_pretrained(
        d, dtype=torch.bfloat16, attn_implementation="eager").eval().to(torch.bfloat16)
    lb = logits_of(mb, prompt + greedy)
    rel = (lb - want).abs().max(-1).values / want.abs().max(-1).values
    top1 = int((lb.argmax(-1) == want.argmax(-1)).sum())
    s, match = list(prompt), len(greedy)
    for i in range(len(greedy)):
        t = int(torch.argmax(logits_of(mb, s)[-1]))
        if t != greedy[i]:
            match = i
            break
        s.append(t)
    ref.update(bf16_maxrel_mean=float(rel.mean()), bf16_maxrel_worst=float(rel.max()),
               bf16_top1=top1, bf16_greedy_match=match)
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"{name}: HF bf16 vs f32 (max-abs per row): mean {float(rel.mean()):.2e} "
          f"worst {float(rel.max()):.2e} top-1 {top1}/{rows} greedy {match}/{len(greedy)}")


def make_bad():
    """tests/fixtures/bad_quant/bitnet_*: the bitnet fixture broken one way each (no
    reference: fi-load must name what is wrong)."""
    from safetensors.torch import load_file
    src = os.path.join(OUT, "bitnet")
    good = load_file(os.path.join(src, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    q = "model.layers.0.self_attn.q_proj."
    cases = {
        "bitnet_code3": ({q + "weight": good[q + "weight"] | 3}, {}),
        "bitnet_scale_shape": ({q + "weight_scale": torch.ones(2, dtype=torch.bfloat16)}, {}),
        # the packed rows unpack to 4 x 64 = 256 rows where the config needs 128
        "bitnet_packing": ({q + "weight": torch.cat([good[q + "weight"]] * 2)}, {}),
    }
    for name, (tensors, _) in cases.items():
        d = os.path.join("tests", "fixtures", "bad_quant", name)
        os.makedirs(d, exist_ok=True)
        t = dict(good)
        t.update(tensors)
        save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        print(name)


def main():
    torch.set_num_threads(1)
    if sys.argv[1:2] == ["--bf16"]:
        for name in sys.argv[2:] or list(FIXTURES):
            bf16_baseline(name)
        return
    names = sys.argv[1:] or list(FIXTURES) + ["bad"]
    for i, name in enumerate(FIXTURES):
        if name in names:
            make(name, 3000 + i)
    if "bad" in names:
        make_bad()


if __name__ == "__main__":
    main()
