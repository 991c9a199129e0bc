#!/usr/bin/env python3
"""Random-weight checkpoints of the Llama-3-8B shape in the quantized formats, for speed on
the GPU machine (tools/gpu-run.sh quant; never committed). numpy only: the files are written
by hand, so nothing beyond numpy is needed there.

  python3 tools/make_quant_bench.py OUT [bf16,fp8,awq,gguf]   (default: all four)

OUT/bf16/       config.json + model.safetensors (bf16; fi-load --quantize fp8 makes FP8 of it)
OUT/fp8/        compressed-tensors FP8, per-channel weight scales, dynamic per-token inputs: the
                layout fi-load --quantize fp8 makes, written directly (seconds, not minutes)
OUT/awq/        AWQ GEMM, group 128, zero points (random packed weights, sane scales)
OUT/q4km.gguf   a Q4_K_M-like GGUF: Q4_K everywhere but attn_v and ffn_down of the layers
                llama.cpp gives more bits (Q6_K), the output Q6_K, norms F32
OUT/bytes.json  bytes a decode step reads per model (every weight but the embedding table,
                plus one of its rows), for the share of the bandwidth limit
bf16 values are a random sign and mantissa at each tensor's scale (no normal draws: the bf16
8B is written in seconds); speed does not depend on the values.
Existing outputs are kept (delete OUT to remake them).
"""
import json
import os
import struct
import sys

import numpy as np

D, F, L, HQ, HK, HD, V = 4096, 14336, 32, 32, 8, 128, 128256
CFG = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=D,
           intermediate_size=F, num_hidden_layers=L, num_attention_heads=HQ,
           num_key_value_heads=HK, head_dim=HD, vocab_size=V, rms_norm_eps=1e-5,
           rope_theta=500000.0, max_position_embeddings=131072, tie_word_embeddings=False,
           bos_token_id=128000, eos_token_id=128001,
           rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=8192))
rng = np.random.default_rng(16)


def linears():
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj", HQ * HD, D
        yield p + "self_attn.k_proj", HK * HD, D
        yield p + "self_attn.v_proj", HK * HD, D
        yield p + "self_attn.o_proj", D, HQ * HD
        yield p + "mlp.gate_proj", F, D
        yield p + "mlp.up_proj", F, D
        yield p + "mlp.down_proj", D, F


def norms():
    for i in range(L):
        yield f"model.layers.{i}.input_layernorm.weight"
        yield f"model.layers.{i}.post_attention_layernorm.weight"
    yield "model.norm.weight"


def write_st(path, tensors):
    """tensors: list of (name, dtype string, shape, numpy array or callable)."""
    header, off = {}, 0
    for name, dt, shape, arr in tensors:
        n = int(np.prod(shape)) * {"BF16": 2, "F16": 2, "I32": 4, "F32": 4, "F8_E4M3": 1}[dt]
        header[name] = dict(dtype=dt, shape=list(shape), data_offsets=[off, off + n])
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for name, dt, shape, arr in tensors:
            a = arr() if callable(arr) else arr
            f.write(np.ascontiguousarray(a).tobytes())
    os.rename(path + ".tmp", path)


def ones_norm():
    return np.full(D, 0x3f80, np.uint16)  # 1.0 in bf16


def new_dir(out, name):
    """OUT/name, made; None where its checkpoint exists already."""
    d = os.path.join(out, name)
    if os.path.exists(os.path.join(d, "model.safetensors")):
        return None
    os.makedirs(d, exist_ok=True)
    return d


def bf16_tables(gen):
    """The embedding table, the LM head and the norms in bf16, values drawn by gen."""
    t = [("model.embed_tokens.weight", "BF16", (V, D), lambda: gen((V, D), 1.0)),
         ("lm_head.weight", "BF16", (V, D), lambda: gen((V, D), 1 / D ** 0.5))]
    return t + [(n, "BF16", (D,), ones_norm) for n in norms()]


def make_bf16(out):
    d = new_dir(out, "bf16")
    if not d:
        return
    t = bf16_tables(bf16_fast)
    t += [(p + ".weight", "BF16", (n, k), (lambda n=n, k=k: bf16_fast((n, k), 1 / k ** 0.5)))
          for p, n, k in linears()]
    json.dump(CFG, open(os.path.join(d, "config.json"), "w"), indent=1)
    write_st(os.path.join(d, "model.safetensors"), t)


def bf16_fast(shape, std):
    """Random sign and mantissa at std's binade: uniform in [std, 2 std), no normal draws
    (the 1.05 G values of the two tables take seconds, not a minute)."""
    e = int(np.floor(np.log2(std))) + 127
    u = rng.integers(0, 1 << 16, shape, np.uint16)
    return (u & 0x807f) | np.uint16(e << 7)


def e4m3(shape):
    """Random E4M3 codes with exponent field below 8: |w| < 2, never NaN (0x7f, 0xff)."""
    return rng.integers(0, 256, shape, np.uint8) & np.uint8(0xbf)


def make_fp8(out):
    d = new_dir(out, "fp8")
    if not d:
        return
    t = bf16_tables(bf16_fast)
    for p, n, k in linears():
        t.append((p + ".weight", "F8_E4M3", (n, k), lambda n=n, k=k: e4m3((n, k))))
        t.append((p + ".weight_scale", "F32", (n, 1),
                  lambda n=n, k=k: np.full((n, 1), 0.5 / k ** 0.5, np.float32)))
    f8 = dict(num_bits=8, type="float", symmetric=True, dynamic=False, strategy="channel")
    act = dict(num_bits=8, type="float", symmetric=True, dynamic=True, strategy="token")
    q = dict(quant_method="compressed-tensors", format="float-quantized", ignore=["lm_head"],
             config_groups=dict(group_0=dict(targets=["Linear"], weights=f8,
                                             input_activations=act)))
    json.dump(dict(CFG, quantization_config=q), open(os.path.join(d, "config.json"), "w"),
              indent=1)
    write_st(os.path.join(d, "model.safetensors"), t)


def make_awq(out, G=128):
    d = new_dir(out, "awq")
    if not d:
        return
    t = [("model.embed_tokens.weight", "F16", (V, D), lambda: np.zeros((V, D), np.float16) + np.float16(0.01)),
         ("lm_head.weight", "F16", (V, D), lambda: (rng.standard_normal((V, D), np.float32) / D ** 0.5).astype(np.float16))]
    t += [(n, "F16", (D,), lambda: np.ones(D, np.float16)) for n in norms()]
    for p, n, k in linears():
        t.append((p + ".qweight", "I32", (k, n // 8),
                  lambda n=n, k=k: rng.integers(0, 2 ** 32, (k, n // 8), np.uint32).view(np.int32)))
        t.append((p + ".qzeros", "I32", (k // G, n // 8),
                  lambda n=n, k=k: np.full((k // G, n // 8), 0x88888888, np.uint32).view(np.int32)))
        t.append((p + ".scales", "F16", (k // G, n),
                  lambda n=n, k=k: np.full((k // G, n), 1 / (4 * k ** 0.5), np.float16)))
    json.dump(dict(CFG, quantization_config=dict(quant_method="awq", bits=4, group_size=G,
                                                 zero_point=True, version="gemm")),
              open(os.path.join(d, "config.json"), "w"), indent=1)
    write_st(os.path.join(d, "model.safetensors"), t)


# ---- GGUF, written by hand (the layout of gguf.h)

def gs(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(k, typ, val):
    return gs(k) + struct.pack("<I", typ) + val


Q4K, Q6K, F32 = 12, 14, 0
BLOCK = {Q4K: (256, 144), Q6K: (256, 210)}


def qblocks(rows, cols, typ):
    """Random valid blocks with small finite scales."""
    blk, size = BLOCK[typ]
    b = rng.integers(0, 256, (rows * cols // blk, size), np.uint8)
    if typ == Q4K:
        b[:, 0:2] = np.frombuffer(np.float16(2e-4).tobytes(), np.uint8)
        b[:, 2:4] = np.frombuffer(np.float16(1e-4).tobytes(), np.uint8)
    else:
        b[:, 208:210] = np.frombuffer(np.float16(1e-4).tobytes(), np.uint8)
    return b


def more_bits(i):  # llama.cpp's use_more_bits(i_layer, n_layers)
    return i < L // 8 or i >= 7 * L // 8 or (i - L // 8) % 3 == 2


def make_gguf(out):
    path = os.path.join(out, "q4km.gguf")
    if os.path.exists(path):
        return
    tensors = [("token_embd.weight", (D, V), Q4K), ("output.weight", (D, V), Q6K),
               ("output_norm.weight", (D,), F32)]
    for i in range(L):
        p = f"blk.{i}."
        tensors += [(p + "attn_norm.weight", (D,), F32), (p + "ffn_norm.weight", (D,), F32),
                    (p + "attn_q.weight", (D, HQ * HD), Q4K), (p + "attn_k.weight", (D, HK * HD), Q4K),
                    (p + "attn_v.weight", (D, HK * HD), Q6K if more_bits(i) else Q4K),
                    (p + "attn_output.weight", (HQ * HD, D), Q4K),
                    (p + "ffn_gate.weight", (D, F), Q4K), (p + "ffn_up.weight", (D, F), Q4K),
                    (p + "ffn_down.weight", (F, D), Q6K if more_bits(i) else Q4K)]
    U32, F32T, STR = 4, 6, 8
    kvs = [kv("general.architecture", STR, gs("llama")),
           kv("llama.block_count", U32, struct.pack("<I", L)),
           kv("llama.context_length", U32, struct.pack("<I", 131072)),
           kv("llama.embedding_length", U32, struct.pack("<I", D)),
           kv("llama.feed_forward_length", U32, struct.pack("<I", F)),
           kv("llama.attention.head_count", U32, struct.pack("<I", HQ)),
           kv("llama.attention.head_count_kv", U32, struct.pack("<I", HK)),
           kv("llama.rope.freq_base", F32T, struct.pack("<f", 500000.0)),
           kv("llama.attention.layer_norm_rms_epsilon", F32T, struct.pack("<f", 1e-5)),
           kv("tokenizer.ggml.model", STR, gs("none"))]
    infos, off, sizes = b"", 0, []
    for name, ne, typ in tensors:
        n = int(np.prod(ne))
        nb = n * 4 if typ == F32 else n // BLOCK[typ][0] * BLOCK[typ][1]
        infos += gs(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
        infos += struct.pack("<IQ", typ, off)
        sizes.append(nb)
        off += nb + (-nb) % 32
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + infos
    with open(path + ".tmp", "wb") as f:
        f.write(head + b"\0" * ((-len(head)) % 32))
        for (name, ne, typ), nb in zip(tensors, sizes):
            if typ == F32:
                f.write(np.ones(ne, np.float32).tobytes())
            else:
                rows = int(np.prod(ne[1:]))
                for r0 in range(0, rows, 8192):  # in slices: bounded memory
                    f.write(qblocks(min(8192, rows - r0), ne[0], typ).tobytes())
            f.write(b"\0" * ((-nb) % 32))
    os.rename(path + ".tmp", path)


def step_bytes():
    """Bytes of weights one decode step reads: all but the embedding table (one row)."""
    lin = sum(n * k for _, n, k in linears())
    norm = (2 * L + 1) * D
    q4 = lambda n: n // 256 * 144
    q6 = lambda n: n // 256 * 210
    gg = q6(V * D) + 4 * norm
    for i in range(L):
        mb = more_bits(i)
        gg += q4(HQ * HD * D) + q4(HK * HD * D) + (q6 if mb else q4)(HK * HD * D) + q4(D * D)
        gg += 2 * q4(F * D) + (q6 if mb else q4)(F * D)
    return dict(bf16=2 * (lin + V * D + norm),
                fp8=lin + 4 * sum(n for _, n, _ in linears()) + 2 * (V * D + norm),
                awq=lin // 2 + sum(n * (k // 128) * 3 for _, n, k in linears()) + 2 * (V * D + norm),
                q4km=gg)


def main():
    out = sys.argv[1]
    want = sys.argv[2].split(",") if len(sys.argv) > 2 else ["bf16", "fp8", "awq", "gguf"]
    os.makedirs(out, exist_ok=True)
    for name, f in (("bf16", make_bf16), ("fp8", make_fp8), ("awq", make_awq),
                    ("gguf", make_gguf)):
        if name in want:
            print(f.__name__, flush=True)
            f(out)
    json.dump(step_bytes(), open(os.path.join(out, "bytes.json"), "w"), indent=1)
    print(json.dumps(step_bytes()))


if __name__ == "__main__":
    main()
