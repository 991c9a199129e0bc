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

ref.json also records how HF's own bf16 forward (the checkpoint's weights rounded to bf16,
as fi's GPU backend loads them) does against that f32 reference, in the keys of
tools/hf_gpu_ref.py: bf16_rel_mean, bf16_rel_max (relative row error ||b - r|| / ||r|| over
the teacher-forced rows), bf16_top1 (rows whose argmax agrees) and bf16_greedy_match (the
length of the common prefix of a bf16 greedy run with the reference's), and for a mixture of
experts the router near-ties (tools/hf_router.py). tests/gpu/
test_model_hf.c judges fi's bf16 numbers against that baseline. For the committed fixtures
it is measured from the saved checkpoint on the CPU (torch's bf16 products accumulate in
f32 there, as cuBLAS's do), leaving weights and references as they are:

  python3 tools/make_hf_fixtures.py --bf16 [NAME...]

(a remade fixture gets it at once).
Weights are drawn larger than the HF default init so that logits are well separated and
greedy choices are not decided by rounding; the script checks the top-2 margin.

Run from the repository root:  python3 tools/make_hf_fixtures.py [NAME...]
"""
import copy
import json
import os
import sys

import numpy as np
import torch
import transformers

from hf_router import router_ties

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
    # ---- the model families of lib/model/arch.h ----
    # Gemma 2: caps small enough to bend the scores and logits (each is checked to matter),
    # query_pre_attn_scalar other than head_dim, a window (8) shorter than the prompt on the
    # even (sliding) layers.
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(
        num_hidden_layers=4, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=24,
        attn_logit_softcapping=3.0, final_logit_softcapping=10.0, sliding_window=8,
        tie_word_embeddings=False)),
    # Gemma 3: 6 layers, every 3rd global, linear scaling on the global base only.
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        num_hidden_layers=6, sliding_window=8, sliding_window_pattern=3,
        query_pre_attn_scalar=16, tie_word_embeddings=False,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                            "rope_theta": 1000000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
    # Gemma 3's multimodal form: the text tower of the Gemma 3 fixture's shape beside a small
    # SigLIP vision tower and projector, which fi skips (text prompts only).
    "gemma3_mm": ("Gemma3Config", "Gemma3ForConditionalGeneration", dict(
        num_hidden_layers=6, sliding_window=8, sliding_window_pattern=3,
        query_pre_attn_scalar=16, tie_word_embeddings=False, pad_token_id=0)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(tie_word_embeddings=False, pad_token_id=0)),
    # LongRoPE: original_max_position_embeddings (12) below the prompt, so every forward of
    # the reference, teacher-forced or greedy, uses the long factors, as fi always does for
    # a model whose max_position_embeddings exceeds it (fi-load(1)).
    "phi3_longrope": ("Phi3Config", "Phi3ForCausalLM", dict(
        tie_word_embeddings=False, pad_token_id=0, original_max_position_embeddings=12,
        rope_scaling=dict(rope_type="longrope",
                          short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                          long_factor=[1.0, 1.5, 2.2, 3.4, 5.0, 7.5, 11.0, 16.0]))),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(
        num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)),
    # Qwen3-MoE: 8 experts, top 3 renormalised, a dense layer in the middle.
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(
        num_hidden_layers=3, num_experts=8, num_experts_per_tok=3, norm_topk_prob=True,
        moe_intermediate_size=32, mlp_only_layers=[1], decoder_sparse_step=1,
        use_sliding_window=False, tie_word_embeddings=False)),
    # YaRN as Qwen2.5's long-context configs state it.
    "qwen2_yarn": ("Qwen2Config", "Qwen2ForCausalLM", dict(
        tie_word_embeddings=True, use_sliding_window=False,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=32))),
}

GEMMA = ("gemma2", "gemma3", "gemma3_mm")
SEED = {"gemma3_mm": 2000}  # the seed its index gives leaves a near-tie in the greedy run


def make_config(name, cfg_cls, kw):
    if name == "gemma3_mm":
        vision = transformers.SiglipVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
            image_size=28, patch_size=14)
        text = {k: v for k, v in kw.items() if k != "torch_dtype"}
        return transformers.Gemma3Config(text_config=text, vision_config=vision.to_dict(),
                                         mm_tokens_per_image=4, boi_token_index=297,
                                         eoi_token_index=298, image_token_index=299,
                                         tie_word_embeddings=False)
    return getattr(transformers, cfg_cls)(**copy.deepcopy(kw))


def randomize(model, seed, gemma=False):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # Gemma scales by (1 + w)
                p.copy_((0.0 if gemma else 1.0) + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(1.0 * torch.randn(p.shape, generator=g))
            else:  # projections: unit-variance outputs for unit-variance inputs
                gain = GAIN if ("o_proj" in name or "down_proj" in name) else 1.0
                if name.endswith("gate.weight") and p.shape[0] < 16:  # routers: clear choices
                    gain = 3.0
                # experts are [E, out, in] in transformers 5: fan-in is the last dimension
                p.copy_(gain * torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)


MUST_MATTER = {
    "mistral": [("sliding window", dict(sliding_window=None))],
    "gemma2": [("sliding window", dict(sliding_window=64)),
               ("attention soft-capping", dict(attn_logit_softcapping=None)),
               ("final soft-capping", dict(final_logit_softcapping=None))],
    "gemma3": [("sliding window", dict(sliding_window=64)),
               ("global rope scaling", dict(rope_parameters={
                   "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                   "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}))],
    "phi3_longrope": [("long factors", dict(original_max_position_embeddings=256))],
    "qwen2_yarn": [("yarn", dict(rope_scaling=None))],
}


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def make(name, seed):
    cfg_cls, model_cls, extra = FAMILIES[name]
    kw = dict(BASE)
    kw.update(extra)
    cfg = make_config(name, cfg_cls, kw)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(cfg).float().eval()
    randomize(model, seed, name in GEMMA)
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
    # what the fixture is there to test must change the logits
    for feature, change in MUST_MATTER.get(name, []):
        # deep copies: config classes write into the rope dicts they are given
        alt = getattr(transformers, cfg_cls)(**copy.deepcopy(dict(kw, **change)))
        alt._attn_implementation = "eager"
        m2 = getattr(transformers, model_cls)(alt).float().eval()
        m2.load_state_dict(model.state_dict())
        d = float((logits_of(m2, prompt) - ref).abs().max())
        assert d > 1e-2, f"{name}: {feature} does not change the logits ({d})"
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
    assert torch.equal(full_ref[:len(prompt)].argmax(-1), ref.argmax(-1)), \
        (full_ref[:len(prompt)] - ref).abs().max()
    full_ref.numpy().astype("<f4").tofile(os.path.join(d, "logits.bin"))
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(dict(prompt=prompt, greedy=seq[len(prompt):], vocab=BASE["vocab_size"],
                       rows=len(seq), logits="logits.bin",
                       transformers=transformers.__version__, torch=torch.__version__,
                       greedy_min_rel_margin=margin), f, indent=1)
    print(f"{name}: prompt {len(prompt)}, greedy {seq[len(prompt):][:8]}..., "
          f"min top-2 margin {margin:.3g}")
    bf16_baseline(name)


def load_fixture(name):
    """The committed checkpoint of tests/fixtures/hf/NAME in f32 (eager attention) and its
    ref.json."""
    d = os.path.join(OUT, name)
    with open(os.path.join(d, "ref.json")) as f:
        ref = json.load(f)
    cls = FAMILIES[name][1]
    model = getattr(transformers, cls).from_pretrained(d, attn_implementation="eager",
                                                       dtype=torch.float32).eval()
    return model, ref


def bf16_baseline(name):
    """HF bf16 against the committed f32 reference (logits.bin): the keys named in the module
    docstring, merged into ref.json (nothing else in it changes)."""
    model, ref = load_fixture(name)
    d = os.path.join(OUT, name)
    prompt, greedy = ref["prompt"], ref["greedy"]
    seq = prompt + greedy
    V, rows = ref["vocab"], ref["rows"]
    want = torch.from_numpy(np.fromfile(os.path.join(d, ref["logits"]), dtype="<f4")
                            .reshape(rows, V).copy())
    # the saved checkpoint must still give the reference in f32 (same function, same library)
    f32 = logits_of(model, seq)
    f32_err = float((f32 - want).abs().max() / want.abs().max())
    assert torch.equal(f32.argmax(-1), want.argmax(-1)) and f32_err < 1e-4, (name, f32_err)
    mb = copy.deepcopy(model).to(torch.bfloat16)
    ties = router_ties(model, mb, seq)
    lb = logits_of(mb, seq)
    rel = (lb - want).norm(dim=-1) / want.norm(dim=-1)
    agree = lb.argmax(-1) == want.argmax(-1)
    s = list(prompt)
    match = len(greedy)
    for i in range(len(greedy)):
        t = int(torch.argmax(logits_of(mb, s)[-1]))
        if t != greedy[i]:
            match = i
            break
        s.append(t)
    ref.update(bf16_rel_mean=float(rel.mean()), bf16_rel_max=float(rel.max()),
               bf16_top1=int(agree.sum()), bf16_greedy_match=match, **ties)
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    # the rows bf16 gets wrong, with the reference's top-2 gap there (relative to the best)
    miss = []
    for r in torch.nonzero(~agree).flatten().tolist():
        top = torch.topk(want[r], 2).values
        gap = float((top[0] - top[1]) / top[0].abs().clamp(min=1e-6))
        miss.append(f"row {r} gap {gap:.1e}")
    print(f"{name}: HF bf16 vs f32: rel mean {float(rel.mean()):.2e} max {float(rel.max()):.2e} "
          f"top1 {int(agree.sum())}/{rows} greedy {match}/{len(greedy)} (f32 reload "
          f"{f32_err:.1e})" + ("; misses: " + ", ".join(miss) if miss else "") +
          (f"; router near-ties: {sum(g < ties['router_bf16_err'] for g in ties['router_gap'])}"
           f" rows (bf16 router error {ties['router_bf16_err']:.1e})" if ties else ""), flush=True)


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
    """python3 tools/make_hf_fixtures.py [NAME...]: the named fixtures (default: all, and
    sampling.json); seeds follow the order of FAMILIES, so one remade alone is the same.
    With --bf16 first: only the HF bf16 baseline of the named committed fixtures (default:
    all), written into their ref.json."""
    torch.set_num_threads(1)
    if sys.argv[1:2] == ["--bf16"]:
        for name in sys.argv[2:] or list(FAMILIES):
            bf16_baseline(name)
        return
    names = sys.argv[1:] or list(FAMILIES) + ["sampling"]
    for i, name in enumerate(FAMILIES):
        if name in names:
            make(name, SEED.get(name, 1000 + i))
    if "sampling" in names:
        make_sampling()


if __name__ == "__main__":
    main()
