#!/usr/bin/env python3
"""Reference data for tests/unit/test_config.c.

tests/fixtures/config/<model>/config.json (+ generation_config.json) are the published
Hugging Face configs of a few models per family. This script adds one config written by the
installed transformers (its own layout: rope_parameters, dtype), then loads every fixture
with transformers and writes <model>/expected.json: the values transformers derives
(head_dim, rope, sliding window, ids) and the parameter count of the model it builds
(on the meta device, no weights). Run from the repository root:
    python3 tools/make_config_fixtures.py"""
import json
import os

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, LlamaConfig

ROOT = "tests/fixtures/config"


def write_current_layout():
    """A small Llama-3-style config as the installed transformers saves it."""
    d = os.path.join(ROOT, "llama3-tiny-current")
    os.makedirs(d, exist_ok=True)
    c = LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                    num_attention_heads=8, num_key_value_heads=2, vocab_size=1024,
                    max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    bos_token_id=1, eos_token_id=[2, 3],
                    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 512, "rope_theta": 500000.0},
                    torch_dtype=torch.bfloat16)
    c.architectures = ["LlamaForCausalLM"]
    c.save_pretrained(d)
    GenerationConfig(bos_token_id=1, eos_token_id=[2, 3, 4]).save_pretrained(d)


def rope_of(c):
    r = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    theta = r.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    return r, theta


def expected(d):
    c = AutoConfig.from_pretrained(d)
    r, theta = rope_of(c)
    ids = lambda v: [] if v is None else (list(v) if isinstance(v, (list, tuple)) else [v])
    bos, eos = c.bos_token_id, ids(c.eos_token_id)
    if os.path.exists(os.path.join(d, "generation_config.json")):
        g = GenerationConfig.from_pretrained(d)
        bos = g.bos_token_id if g.bos_token_id is not None else bos
        eos = ids(g.eos_token_id) or eos
    sw = getattr(c, "sliding_window", None) or 0
    if c.model_type in ("qwen2", "qwen3") and not getattr(c, "use_sliding_window", False):
        sw = 0
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(c)
    params = sum(p.numel() for p in m.parameters())  # tied weights are counted once
    heads = c.num_attention_heads
    return {
        "family": c.model_type,
        "hidden": c.hidden_size, "n_layers": c.num_hidden_layers, "n_heads": heads,
        "n_kv_heads": c.num_key_value_heads,
        "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads,
        "ffn": c.intermediate_size, "vocab": c.vocab_size, "max_pos": c.max_position_embeddings,
        "rms_eps": c.rms_norm_eps, "rope_theta": theta, "rope_type": r.get("rope_type", "default"),
        "rope_factor": r.get("factor", 0.0),
        "tie": bool(c.tie_word_embeddings), "sliding_window": sw,
        "bos": -1 if bos is None else bos, "eos": eos, "params": params,
        "transformers": transformers.__version__,
    }


def main():
    write_current_layout()
    for name in sorted(os.listdir(ROOT)):
        d = os.path.join(ROOT, name)
        if not os.path.isfile(os.path.join(d, "config.json")):
            continue
        e = expected(d)
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(e, f, indent=1)
            f.write("\n")
        print(name, e["params"])


if __name__ == "__main__":
    main()
