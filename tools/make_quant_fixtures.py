#!/usr/bin/env python3
"""Makes the quantized-weight fixtures under tests/fixtures/quant/ (issue 16).

Every fixture is a quantized checkpoint in a format fi reads, with a float32 reference made
by Hugging Face transformers (eager attention, CPU) on the DEQUANTIZED weights, where the
dequantization is written here independently with numpy (FP8, AWQ, GPTQ) or taken from the
gguf package (GGUF: gguf.quants.dequantize). So the reference never shares code with fi.

  NAME/                          a HF directory (config.json with quantization_config,
                                 model.safetensors) or NAME.gguf
  NAME/ref.json, NAME/logits.bin as tools/make_hf_fixtures.py: prompt, greedy continuation
                                 (argmax loop), f32 logits of every position of prompt +
                                 greedy in one forward (teacher forcing); "w8a8": true when
                                 fi rounds activations (the reference does not), and for
                                 GGUF "texts" with the ids the HF tokenizer gives each text

Shapes: "random" ones are Llama (or Qwen2) checkpoints of hidden 256 (groups of 128 and
K-quant super-blocks of 256 fit), weights drawn as in make_hf_fixtures.py; "tiny" is the
trained models/tiny; "stories260K" the trained llama2.c model of the shared corpus (its
SentencePiece vocabulary, scores included, comes from the corpus' tok512.bin).

The K-quant blocks are made by simple min/max quantizers written here (gguf-py dequantizes
every K-quant but quantizes only some types): any valid block is a fine fixture, because
the reference is gguf-py's dequantization of the very bytes in the file.

Run from the repository root:  python3 tools/make_quant_fixtures.py   (needs torch,
transformers, safetensors, numpy, gguf; the corpus for stories260K)
"""
import json
import os
import struct
import sys

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as QT
from safetensors.numpy import save_file

OUT = os.path.join("tests", "fixtures", "quant")
CORPUS = os.environ.get("FI_TEST_SHARED", os.path.join("..", "shared")) + "/corpus"
PROMPT_LEN, N_GREEDY = 16, 24
TEXTS = ["Hello world", "The quick brown fox jumps over the lazy dog.",
         "  leading spaces and\ttabs\nnew lines", "numbers 12345 and 3.14159",
         "Unicode: caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, emoji \U0001F600",
         "def f(x):\n    return x * 2  # comment", "It's, don't, we'll; I'm"]

RANDOM = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=256,
              max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
              bos_token_id=1, eos_token_id=2, attention_dropout=0.0, tie_word_embeddings=False)


# ---------------------------------------------------------------- models and references

def random_model(seed, cls="Llama", gain=6.0, **kw):
    cfg = getattr(transformers, cls + "Config")(**dict(RANDOM, **kw))
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    m = getattr(transformers, cls + "ForCausalLM")(cfg).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.5 * r)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(r)
            else:
                g2 = gain if ("o_proj" in name or "down_proj" in name) else 1.0
                p.copy_(g2 * r / p.shape[1] ** 0.5)
    return m


def load_weights(model, sd):
    """sd: HF name -> float32 numpy; every parameter must be given."""
    names = {n for n, _ in model.named_parameters()}
    missing = names - set(sd) - ({"lm_head.weight"} if model.config.tie_word_embeddings else set())
    assert not missing, missing
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in sd:
                p.copy_(torch.from_numpy(np.ascontiguousarray(sd[n], dtype=np.float32)))


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def write_ref(d, model, prompt, extra=None, min_margin=1e-4):
    seq = list(prompt)
    margin = 1e9
    for _ in range(N_GREEDY):
        last = logits_of(model, seq)[-1]
        top = torch.topk(last, 2).values
        margin = min(margin, float((top[0] - top[1]) / top[0].abs().clamp(min=1e-6)))
        seq.append(int(torch.argmax(last)))
    if margin < min_margin:
        sys.exit(f"{d}: greedy top-2 margin {margin:.2e} too small; change the seed")
    full = logits_of(model, seq)
    full.numpy().astype("<f4").tofile(os.path.join(d, "logits.bin"))
    ref = dict(prompt=prompt, greedy=seq[len(prompt):], vocab=model.config.vocab_size,
               rows=len(seq), logits="logits.bin", transformers=transformers.__version__,
               torch=torch.__version__, greedy_min_rel_margin=margin)
    ref.update(extra or {})
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"{d}: greedy {seq[len(prompt):][:8]}..., min margin {margin:.3g}")


def act_round(t, group):
    """fi's W8A8 input rounding (base/quant.h) in torch: per token (or per token and group of
    128 columns) s = amax / 448, x = e4m3(x / s) s."""
    shp = t.shape
    if group:
        t = t.reshape(*shp[:-1], shp[-1] // 128, 128)
    s = t.abs().amax(-1, keepdim=True) / 448.0
    s = torch.where(s == 0, torch.ones_like(s), s)
    r = (t / s).clamp(-448, 448).to(torch.float8_e4m3fn).float() * s
    return r.reshape(shp)


def write_w8a8(d, model, group):
    """logits_w8a8.bin: the same rows with every linear layer's input rounded as fi rounds
    it, so that fi's W8A8 path is checked exactly, not only within the rounding's effect."""
    ref = json.load(open(os.path.join(d, "ref.json")))
    for n, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in n:
            mod.forward = (lambda f: lambda x: f(act_round(x, group)))(mod.forward)
    logits_of(model, ref["prompt"] + ref["greedy"]).numpy().astype("<f4").tofile(
        os.path.join(d, "logits_w8a8.bin"))
    ref["logits_w8a8"] = "logits_w8a8.bin"
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)


def prompt_for(seed, V):
    rng = np.random.default_rng(seed)
    return [1] + [int(x) for x in rng.integers(3, V, PROMPT_LEN - 1)]


def hf_config(model, qc=None):
    c = model.config.to_dict()
    if qc:
        c["quantization_config"] = qc
    return c


def save_dir(d, model, tensors, qc):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(model, qc), f, indent=1)
    # contiguous: a transposed view would be written in its memory order
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              os.path.join(d, "model.safetensors"))


LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def is_linear(n):
    return n.endswith(".weight") and any(f".{x}." in n for x in LINEAR)


# ---------------------------------------------------------------- FP8

def e4m3(x):
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).clamp(-448, 448).to(
        torch.float8_e4m3fn)


def e4m3_bytes(x):
    return e4m3(x).view(torch.uint8).numpy()


def e4m3_val(b):
    return torch.from_numpy(b).view(torch.float8_e4m3fn).float().numpy()


def fp8_block(seed):
    # W8A8: residual gain 1 (6 makes a chaotic model whose logits swing with any rounding)
    m = random_model(seed, gain=1.0)
    sd = {n: p.detach().numpy() for n, p in m.named_parameters()}
    tensors, deq = {}, {}
    for n, w in sd.items():
        if not is_linear(n):
            tensors[n] = w.astype(np.float32)
            deq[n] = w
            continue
        N, K = w.shape
        bn, bk = -(-N // 128), -(-K // 128)
        s = np.zeros((bn, bk), np.float32)
        q = np.zeros((N, K), np.uint8)
        for i in range(bn):
            for j in range(bk):
                blk = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
                s[i, j] = max(np.abs(blk).max() / 448.0, 1e-12)
                q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = e4m3_bytes(blk / s[i, j])
        tensors[n] = torch.from_numpy(q).view(torch.float8_e4m3fn)
        tensors[n + "_scale_inv"] = s
        deq[n] = e4m3_val(q) * np.repeat(np.repeat(s, 128, 0), 128, 1)[:N, :K]
    d = os.path.join(OUT, "fp8_block")
    save_st(d, m, tensors, dict(quant_method="fp8", activation_scheme="dynamic",
                                weight_block_size=[128, 128]))
    load_weights(m, deq)
    write_ref(d, m, prompt_for(seed, m.config.vocab_size), dict(w8a8=True), min_margin=0)
    write_w8a8(d, m, True)


def save_st(d, model, tensors, qc):
    """safetensors with torch tensors where needed (float8)."""
    from safetensors.torch import save_file as save_t
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf_config(model, qc), f, indent=1)
    save_t({k: (v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v)))
            for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))


def ct_fp8(seed, name, strategy, dynamic_act):
    m = random_model(seed, gain=1.0 if dynamic_act else 6.0)
    sd = {n: p.detach().numpy() for n, p in m.named_parameters()}
    tensors, deq = {}, {}
    for n, w in sd.items():
        if not is_linear(n):
            tensors[n] = torch.from_numpy(w).to(torch.bfloat16)
            deq[n] = torch.from_numpy(w).to(torch.bfloat16).float().numpy()
            continue
        if strategy == "channel":
            s = np.maximum(np.abs(w).max(1, keepdims=True) / 448.0, 1e-12).astype(np.float32)
        else:
            s = np.array([max(np.abs(w).max() / 448.0, 1e-12)], np.float32)
        sb = torch.from_numpy(s).to(torch.bfloat16)  # scales stored in bf16, as llm-compressor
        sf = sb.float().numpy()
        q = e4m3_bytes(w / (sf if strategy == "channel" else sf[0]))
        tensors[n] = torch.from_numpy(q).view(torch.float8_e4m3fn)
        tensors[n[:-len("weight")] + "weight_scale"] = sb
        deq[n] = e4m3_val(q) * (sf if strategy == "channel" else sf[0])
    acts = dict(num_bits=8, type="float", strategy="token", dynamic=True, symmetric=True)
    qc = dict(quant_method="compressed-tensors", format="float-quantized",
              config_groups=dict(group_0=dict(
                  targets=["Linear"],
                  weights=dict(num_bits=8, type="float", strategy=strategy, dynamic=False,
                               symmetric=True),
                  input_activations=acts if dynamic_act else None)),
              ignore=["lm_head"])
    d = os.path.join(OUT, name)
    save_st(d, m, tensors, qc)
    load_weights(m, deq)
    write_ref(d, m, prompt_for(seed, m.config.vocab_size), dict(w8a8=dynamic_act),
              min_margin=0 if dynamic_act else 1e-4)
    if dynamic_act:
        write_w8a8(d, m, False)


# ---------------------------------------------------------------- INT4 (AWQ, GPTQ)

def quant_groups(w, G, sym):
    """w [N, K] -> q [N, K] ints 0..15, scale [N, K/G], zero [N, K/G] (ints)."""
    N, K = w.shape
    g = w.reshape(N, K // G, G)
    if sym:
        s = np.maximum(np.abs(g).max(-1) / 7.5, 1e-8)
        z = np.full(s.shape, 8)
    else:
        lo, hi = np.minimum(g.min(-1), 0), np.maximum(g.max(-1), 0)
        s = np.maximum((hi - lo) / 15.0, 1e-8)
        z = np.clip(np.round(-lo / s), 0, 15)
    s = s.astype(np.float16).astype(np.float32)
    q = np.clip(np.round(g / s[..., None]) + z[..., None], 0, 15).reshape(N, K).astype(np.int64)
    return q, s, z.astype(np.int64)


def pack8(cols, order=range(8)):
    """cols [..., 8*M] ints 0..15 -> int32 [..., M], nibble i holding column order[i]."""
    shp = cols.shape[:-1] + (cols.shape[-1] // 8, 8)
    c = cols.reshape(shp)
    out = np.zeros(shp[:-1], np.uint32)
    for i, o in enumerate(order):
        out |= (c[..., o].astype(np.uint32) & 0xF) << np.uint32(4 * i)
    return out.view(np.int32)


def awq(seed, G=128):
    m = random_model(seed)
    tensors, deq = {}, {}
    for n, p in m.named_parameters():
        w = p.detach().numpy()
        if not is_linear(n):
            tensors[n] = w.astype(np.float16)
            deq[n] = w.astype(np.float16).astype(np.float32)
            continue
        q, s, z = quant_groups(w, G, sym=False)
        pre = n[:-len("weight")]
        # AWQ GEMM layout: [K, N/8] with nibble order 0 2 4 6 1 3 5 7; zeros [K/G, N/8]
        tensors[pre + "qweight"] = pack8(q.T, [0, 2, 4, 6, 1, 3, 5, 7])
        tensors[pre + "qzeros"] = pack8(z.T, [0, 2, 4, 6, 1, 3, 5, 7])
        tensors[pre + "scales"] = s.T.astype(np.float16)
        deq[n] = (q - np.repeat(z, G, 1)) * np.repeat(s, G, 1)
    d = os.path.join(OUT, "awq")
    save_dir(d, m, tensors, dict(quant_method="awq", bits=4, group_size=G, zero_point=True,
                                 version="gemm"))
    load_weights(m, deq)
    write_ref(d, m, prompt_for(seed, m.config.vocab_size))


def gptq(seed, name, act_order, G=128, sym=True):
    m = random_model(seed)
    rng = np.random.default_rng(seed)
    tensors, deq = {}, {}
    for n, p in m.named_parameters():
        w = p.detach().numpy()
        if not is_linear(n):
            tensors[n] = w.astype(np.float16)
            deq[n] = w.astype(np.float16).astype(np.float32)
            continue
        N, K = w.shape
        # act-order: column k belongs to group g_idx[k] = position of k in a permutation // G
        perm = rng.permutation(K) if act_order else np.arange(K)
        g_idx = np.empty(K, np.int32)
        g_idx[perm] = np.arange(K) // G
        wp = w[:, perm]  # grouped columns contiguous
        qp, s, z = quant_groups(wp, G, sym)
        q = np.empty_like(qp)
        q[:, perm] = qp
        pre = n[:-len("weight")]
        tensors[pre + "qweight"] = pack8(q.T.reshape(K // 8, 8, N).transpose(0, 2, 1))[..., 0]
        tensors[pre + "qzeros"] = pack8(z.T - 1)  # GPTQ v1 stores zero - 1
        tensors[pre + "scales"] = s.T.astype(np.float16)
        tensors[pre + "g_idx"] = g_idx
        deq[n] = (q - z[:, g_idx]) * s[:, g_idx]
    d = os.path.join(OUT, name)
    save_dir(d, m, tensors, dict(quant_method="gptq", bits=4, group_size=G, desc_act=act_order,
                                 sym=sym, checkpoint_format="gptq"))
    load_weights(m, deq)
    write_ref(d, m, prompt_for(seed, m.config.vocab_size))


# ---------------------------------------------------------------- GGUF

def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).tobytes()


def pack_k_scales(sc, mn):
    """6-bit scales and mins of 8 sub-blocks -> 12 bytes (ggml's get_scale_min_k4)."""
    b = bytearray(12)
    for j in range(8):
        ls, lm = int(sc[j]), int(mn[j])
        if j < 4:
            b[j] |= ls
            b[j + 4] |= lm
        else:
            b[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            b[j - 4] |= (ls >> 4) << 6
            b[j] |= (lm >> 4) << 6
    return bytes(b)


def q_k_asym(x, bits):
    """One 256-value super-block -> (d, dmin, sc[8], mn[8], L[256]) for Q4_K / Q5_K."""
    top = (1 << bits) - 1
    sub = x.reshape(8, 32)
    lo = np.minimum(sub.min(1), 0)
    s = np.maximum((sub.max(1) - lo) / top, 1e-10)
    d = np.float16(max(s.max() / 63, 1e-10)).astype(np.float32)
    dmin = np.float16(max((-lo).max() / 63, 1e-10)).astype(np.float32)
    sc = np.clip(np.round(s / d), 1, 63).astype(int)
    mn = np.clip(np.round(-lo / dmin), 0, 63).astype(int)
    L = np.clip(np.round((sub + (dmin * mn)[:, None]) / (d * sc)[:, None]), 0, top).astype(int)
    return d, dmin, sc, mn, L.reshape(256)


def quant_row(x, t):
    K = x.shape[0]
    out = bytearray()
    if t in (QT.Q8_0, QT.Q4_0):
        return bytes(gguf.quants.quantize(x.reshape(1, K).astype(np.float32), t).tobytes())
    for b in range(0, K, 256):
        v = x[b:b + 256].astype(np.float32)
        if t == QT.Q4_K:
            d, dmin, sc, mn, L = q_k_asym(v, 4)
            qs = bytearray(128)
            for j in range(0, 256, 64):
                for l in range(32):
                    qs[j // 2 + l] = L[j + l] | (L[j + l + 32] << 4)
            out += f16(d) + f16(dmin) + pack_k_scales(sc, mn) + bytes(qs)
        elif t == QT.Q5_K:
            d, dmin, sc, mn, L = q_k_asym(v, 5)
            qh, ql = bytearray(32), bytearray(128)
            m1, m2 = 1, 2
            for n in range(0, 256, 64):
                for j in range(32):
                    l1, l2 = L[n + j], L[n + j + 32]
                    if l1 > 15:
                        l1 -= 16
                        qh[j] |= m1
                    if l2 > 15:
                        l2 -= 16
                        qh[j] |= m2
                    ql[n // 2 + j] = l1 | (l2 << 4)
                m1 <<= 2
                m2 <<= 2
            out += f16(d) + f16(dmin) + pack_k_scales(sc, mn) + bytes(qh) + bytes(ql)
        elif t == QT.Q6_K:
            sub = v.reshape(16, 16)
            s = np.abs(sub).max(1) / 31.5
            d = np.float16(max(s.max() / 127, 1e-10)).astype(np.float32)
            sc = np.clip(np.round(s / d), 1, 127).astype(int)
            L = (np.clip(np.round(sub / (d * sc)[:, None]), -32, 31) + 32).astype(int).reshape(256)
            ql, qh = bytearray(128), bytearray(64)
            for j in range(0, 256, 128):
                for l in range(32):
                    q1, q2, q3, q4 = (L[j + l + o] & 0xF for o in (0, 32, 64, 96))
                    ql[j // 2 + l] = q1 | (q3 << 4)
                    ql[j // 2 + l + 32] = q2 | (q4 << 4)
                    qh[j // 4 + l] = ((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                      ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6))
            out += bytes(ql) + bytes(qh) + bytes(np.array(sc, np.int8).tobytes()) + f16(d)
        else:
            raise ValueError(t)
    return bytes(out)


def quant_tensor(w, t):
    """w [N, K] float32 -> (uint8 bytes [N, row bytes], dequantized float32 [N, K])."""
    if t in (QT.F32, QT.F16, QT.BF16):
        if t == QT.F32:
            return w.astype(np.float32), w.astype(np.float32)
        if t == QT.F16:
            return w.astype(np.float16), w.astype(np.float16).astype(np.float32)
        b = (torch.from_numpy(w.astype(np.float32)).to(torch.bfloat16).view(torch.int16)
             .numpy().view(np.uint8).reshape(w.shape[0], -1))
        return b, gguf.quants.dequantize(b, QT.BF16).reshape(w.shape)
    rows = np.stack([np.frombuffer(quant_row(r, t), np.uint8) for r in w])
    deq = gguf.quants.dequantize(rows, t).reshape(w.shape).astype(np.float32)
    err = np.abs(deq - w).mean() / np.abs(w).mean()
    assert err < 0.2, (t, err)  # the quantizer above is crude but sane
    return rows, deq


def permute_qk(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


GG_NAMES = {"self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
            "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
            "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
            "self_attn.v_proj.bias": "attn_v.bias", "mlp.gate_proj.weight": "ffn_gate.weight",
            "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
            "input_layernorm.weight": "attn_norm.weight",
            "post_attention_layernorm.weight": "ffn_norm.weight"}


def gguf_name(n):
    if n == "model.embed_tokens.weight":
        return "token_embd.weight"
    if n == "model.norm.weight":
        return "output_norm.weight"
    if n == "lm_head.weight":
        return "output.weight"
    p = n.split(".")
    return f"blk.{p[2]}." + GG_NAMES[".".join(p[3:])]


def write_gguf(path, model, arch, types, vocab):
    """types(hf_name, shape) -> GGML type; vocab(writer) adds the tokenizer. Returns the
    dequantized weights by HF name (q/k un-permuted back)."""
    c = model.config
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"])
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    if hd != c.hidden_size // c.num_attention_heads:
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    vocab(w)
    deq = {}
    for n, p in model.named_parameters():
        x = p.detach().numpy().astype(np.float32)
        if arch == "llama" and n.endswith("q_proj.weight"):
            x = permute_qk(x, c.num_attention_heads)
        if arch == "llama" and n.endswith("k_proj.weight"):
            x = permute_qk(x, c.num_key_value_heads)
        t = types(n, x.shape) if x.ndim == 2 else QT.F32
        data, dq = quant_tensor(x, t) if x.ndim == 2 else (x, x)
        w.add_tensor(gguf_name(n), data, raw_dtype=t if t not in (QT.F32, QT.F16) else None)
        # back to HF order for the reference: invert the permutation on the dequantized rows
        if arch == "llama" and (n.endswith("q_proj.weight") or n.endswith("k_proj.weight")):
            h = c.num_attention_heads if "q_proj" in n else c.num_key_value_heads
            dq = dq.reshape(h, dq.shape[0] // h // 2, 2, -1).swapaxes(1, 2).reshape(dq.shape)
        deq[n] = dq
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return deq


def bpe_vocab(tok_path, pre):
    t = json.load(open(tok_path))
    vocab = t["model"]["vocab"]
    added = {a["id"]: a for a in t.get("added_tokens", [])}
    n = max(max(vocab.values()), max(added) if added else 0) + 1
    toks = [""] * n
    for k, i in vocab.items():
        toks[i] = k
    for i, a in added.items():
        toks[i] = a["content"]
    types = [3 if (i in added and added[i]["special"]) else 4 if i in added else 1
             for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
    from tokenizers import Tokenizer
    add_bos = Tokenizer.from_file(tok_path).encode("").ids[:1] == [0]  # as SpecialVocab finds

    def add(w):
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(toks)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(0)
        w.add_eos_token_id(1)
        w.add_add_bos_token(add_bos)
    return add


def spm_vocab_llama2c(path, bos=1, eos=2):
    """llama2.c's tokenizer.bin: max_len, then (f32 score, i32 len, bytes) per token."""
    raw = open(path, "rb").read()
    pos, toks, scores = 4, [], []
    while pos < len(raw):
        s, n = struct.unpack_from("<fi", raw, pos)
        pos += 8
        toks.append(raw[pos:pos + n].decode("utf-8"))
        scores.append(s)
        pos += n
    types = []
    for i, t in enumerate(toks):
        if i == 0:
            types.append(2)
        elif i in (bos, eos):
            types.append(3)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(6)
        else:
            types.append(1)
    # llama2.c stores the pieces with '▁' turned into spaces and BOS/EOS as "\n<s>\n";
    # GGUF keeps SentencePiece's pieces
    toks = [t.replace(" ", "\u2581") if types[i] == 1 else t.strip() for i, t in enumerate(toks)]

    def add(w):
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(toks)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(bos)
        w.add_eos_token_id(eos)
        w.add_unk_token_id(0)
        w.add_add_bos_token(True)
    return add


def texts_ids(tok_json, add_bos=None):
    from tokenizers import Tokenizer
    t = Tokenizer.from_file(tok_json)
    return [dict(text=s, ids=t.encode(s).ids) for s in TEXTS]


def gguf_random(seed):
    m = random_model(seed)
    kinds = {"q_proj": QT.Q4_K, "k_proj": QT.Q5_K, "v_proj": QT.Q6_K, "o_proj": QT.Q8_0,
             "gate_proj": QT.Q4_0, "up_proj": QT.F16, "down_proj": QT.BF16}

    def types(n, shape):
        if "embed_tokens" in n:
            return QT.Q6_K
        if "lm_head" in n:
            return QT.Q8_0
        return next(v for k, v in kinds.items() if k in n)
    def vocab(w):  # no tokenizer (llama.cpp's "none"): the model is judged on token ids
        w.add_tokenizer_model("none")
    path = os.path.join(OUT, "llama_kquants.gguf")
    deq = write_gguf(path, m, "llama", types, vocab)
    load_weights(m, deq)
    d = os.path.join(OUT, "llama_kquants")
    os.makedirs(d, exist_ok=True)
    write_ref(d, m, prompt_for(seed, 256), dict(gguf="llama_kquants.gguf"))


def gguf_qwen2(seed):
    m = random_model(seed, "Qwen2", tie_word_embeddings=True, use_sliding_window=False)

    def types(n, shape):
        return QT.Q8_0 if ("k_proj" in n or "embed" in n or "up_proj" in n) else QT.Q4_0

    def vocab(w):
        w.add_tokenizer_model("none")
    path = os.path.join(OUT, "qwen2_q8q4.gguf")
    deq = write_gguf(path, m, "qwen2", types, vocab)
    load_weights(m, deq)
    d = os.path.join(OUT, "qwen2_q8q4")
    os.makedirs(d, exist_ok=True)
    write_ref(d, m, prompt_for(seed, 256), dict(gguf="qwen2_q8q4.gguf"))


def gguf_tiny():
    """The trained tiny model as a Q4_K_M-like file: Q4_K, with Q6_K for attn_v and the
    (tied) embedding as llama.cpp puts them; ffn_down (704 columns, not a multiple of
    256) falls back to Q8_0 as llama.cpp's does for rows that K-quants cannot cut."""
    m = transformers.AutoModelForCausalLM.from_pretrained("models/tiny", dtype=torch.float32)
    m.config._attn_implementation = "eager"
    m.eval()

    def types(n, shape):
        if shape[1] % 256:
            return QT.Q8_0
        if "embed_tokens" in n or "v_proj" in n:
            return QT.Q6_K
        return QT.Q4_K
    path = os.path.join(OUT, "tiny_q4km.gguf")
    deq = write_gguf(path, m, "llama", types, bpe_vocab("models/tiny/tokenizer.json", "gpt-2"))
    load_weights(m, deq)
    d = os.path.join(OUT, "tiny_q4km")
    os.makedirs(d, exist_ok=True)
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file("models/tiny/tokenizer.json")
    prompt = tk.encode("The with statement is used to wrap the execution of a block").ids[:PROMPT_LEN]
    write_ref(d, m, prompt, dict(gguf="tiny_q4km.gguf", texts=texts_ids("models/tiny/tokenizer.json")),
              min_margin=1e-5)


def gguf_stories():
    src = os.path.join(CORPUS, "models", "stories260K-hf")
    if not os.path.isdir(src):
        print("stories260K: corpus absent, skipped")
        return
    m = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    m.config._attn_implementation = "eager"
    m.eval()
    path = os.path.join(OUT, "stories260k_q8_0.gguf")
    vocab = spm_vocab_llama2c(os.path.join(CORPUS, "models", "llama2c-format", "tok512.bin"))
    # ffn 172 is not a whole number of 32-value blocks: those rows stay F16, as llama.cpp's
    # quantizer leaves them
    deq = write_gguf(path, m, "llama", lambda n, s: QT.F16 if s[1] % 32 else QT.Q8_0, vocab)
    load_weights(m, deq)
    d = os.path.join(OUT, "stories260k_q8_0")
    os.makedirs(d, exist_ok=True)
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(src, "tokenizer.json"))
    prompt = tk.encode("Once upon a time, there was a little girl").ids[:PROMPT_LEN]
    write_ref(d, m, prompt, dict(gguf="stories260k_q8_0.gguf",
                                 texts=texts_ids(os.path.join(src, "tokenizer.json"))),
              min_margin=1e-5)


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    steps = dict(fp8_block=lambda: fp8_block(2001),
                 ct_fp8_channel=lambda: ct_fp8(2002, "ct_fp8_channel", "channel", True),
                 ct_fp8_tensor=lambda: ct_fp8(2003, "ct_fp8_tensor", "tensor", False),
                 awq=lambda: awq(2004),
                 gptq=lambda: gptq(2005, "gptq", False),
                 gptq_actorder=lambda: gptq(2006, "gptq_actorder", True),
                 llama_kquants=lambda: gguf_random(2007),
                 qwen2_q8q4=lambda: gguf_qwen2(2008),
                 tiny_q4km=gguf_tiny, stories260k_q8_0=gguf_stories)
    for name in sys.argv[1:] or steps:  # names given: only those
        steps[name]()


if __name__ == "__main__":
    main()
