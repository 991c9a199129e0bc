#!/usr/bin/env python3
"""Train fi's embedded default model: a tiny Llama-architecture LM with a byte-level BPE
tokenizer, written in Hugging Face layout (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, generation_config.json).

The training text is assembled from files every machine with Python has: the docstrings of
the Python standard library (extracted with ast), the interpreter's own reference manual
(pydoc_data.topics), /usr/share/common-licenses where present, and the standard library's
source. So the model writes plausible technical English and Python.

Run once on a GPU machine (a few minutes on one H100; it also runs, slowly, on a CPU):

    python3 tools/train_tiny.py --out models/tiny --minutes 4

Needs torch, transformers, tokenizers and safetensors. Prints the loss as it trains and a
sample at the end; models/README.md records both.
"""
import argparse
import ast
import glob
import json
import math
import os
import random
import sys
import sysconfig
import time


def gather_text(limit_bytes):
    parts = []
    try:
        import pydoc_data.topics as topics
        for k in sorted(topics.topics):
            parts.append(topics.topics[k])
    except Exception:
        pass
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if "/test" in path or "site-packages" in path or "idlelib" in path:
            continue
        try:
            src = open(path, encoding="utf-8").read()
            tree = ast.parse(src)
        except Exception:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    parts.append(doc)
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            try:
                parts.append(open(path, encoding="utf-8").read())
            except Exception:
                pass
    # Prose is only a few MB; fill the rest with the standard library's own source, so the
    # model also continues Python code.
    code, ncode = [], sum(len(p) for p in parts)
    for path in sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)):
        if ncode >= limit_bytes or "/test" in path or "site-packages" in path:
            continue
        try:
            code.append(open(path, encoding="utf-8").read())
            ncode += len(code[-1])
        except Exception:
            pass
    parts += code
    random.Random(0).shuffle(parts)
    text, n = [], 0
    for p in parts:
        text.append(p.strip() + "\n\n")
        n += len(text[-1])
        if n >= limit_bytes:
            break
    return "".join(text)


def train_tokenizer(text, vocab, out):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    chunks = text.split("\n\n")
    tok.train_from_iterator(chunks, trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)])
    tok.save(os.path.join(out, "tokenizer.json"))
    chat = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}<|end|>\n"
            "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|end|>\n"
            "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
           "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast",
           "clean_up_tokenization_spaces": False, "chat_template": chat}
    json.dump(cfg, open(os.path.join(out, "tokenizer_config.json"), "w"), indent=2)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/tiny")
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--text-mb", type=float, default=12.0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=704)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    text = gather_text(int(a.text_mb * 1e6))
    print(f"text: {len(text)/1e6:.1f} MB from the standard library and licences", flush=True)
    tok = train_tokenizer(text, a.vocab, a.out)
    ids = tok.encode(text, add_special_tokens=False).ids
    print(f"tokens: {len(ids)} ({time.time()-t0:.0f}s)", flush=True)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    data = torch.tensor(ids, dtype=torch.long)
    n_val = max(len(data) // 50, a.ctx + 2)
    train, val = data[:-n_val], data[-n_val:]
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=a.hidden,
                      intermediate_size=a.ffn, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos,
                      dtype="bfloat16")
    model = LlamaForCausalLM(cfg).to(dev)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"model: {nparams/1e6:.2f}M parameters on {dev}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(a.seed)

    def batch(src):
        ix = torch.randint(len(src) - a.ctx - 1, (a.batch,), generator=g)
        x = torch.stack([src[i:i + a.ctx + 1] for i in ix]).to(dev)
        return x

    deadline = time.time() + a.minutes * 60
    step, est_steps, t1 = 0, None, time.time()
    log = []
    while time.time() < deadline:
        if est_steps is None and step == 20:
            est_steps = int(20 * a.minutes * 60 / (time.time() - t1))
        total = est_steps or 10**9
        warm = 100
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for pg in opt.param_groups:
            pg["lr"] = lr
        x = batch(train)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=(dev == "cuda")):
            loss = torch.nn.functional.cross_entropy(
                    model(input_ids=x[:, :-1]).logits.float().reshape(-1, cfg.vocab_size),
                    x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            model.eval()
            with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=(dev == "cuda")):
                xv = batch(val)
                vl = torch.nn.functional.cross_entropy(
                    model(input_ids=xv[:, :-1]).logits.float().reshape(-1, cfg.vocab_size),
                    xv[:, 1:].reshape(-1)).item()
            model.train()
            log.append((step, loss.item(), vl))
            print(f"step {step} train {loss.item():.3f} val {vl:.3f} lr {lr:.2e}", flush=True)
        step += 1
    print(f"trained {step} steps x {a.batch * a.ctx} tokens in {a.minutes:.1f} min", flush=True)

    model.eval()
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(a.out, safe_serialization=True)
    json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": False},
              open(os.path.join(a.out, "generation_config.json"), "w"), indent=2)
    prompt = "The function returns"
    inp = torch.tensor([[bos] + tok.encode(prompt, add_special_tokens=False).ids], device=dev)
    with torch.no_grad():
        out = model.generate(inp, max_new_tokens=48, do_sample=False)
    sample = tok.decode(out[0, 1:].tolist())
    print("sample (greedy):", repr(sample), flush=True)
    json.dump({"steps": step, "tokens_per_step": a.batch * a.ctx, "params": nparams,
               "loss_log": log, "sample_prompt": prompt, "sample": sample,
               "text_bytes": len(text), "corpus_tokens": len(ids)},
              open(os.path.join(a.out, "training.json"), "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
