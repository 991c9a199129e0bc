#!/usr/bin/env python3
"""Writes seed inputs for tests/fuzz/fuzz_image.c: small fi model images (format in
lib/model/image.h) made by this independent writer, plus damaged variants.

Standard library only. Usage: tools/gen_image_corpus.py tests/fuzz/corpus/fuzz_image
The unit suite also opens valid-tiny-bf16 and checks its fingerprint, so the C reader and
this writer agree on the format."""
import hashlib
import json
import os
import struct
import sys

F32, F16, BF16 = 0, 1, 2
HEADER = 128
TENT = 160
BENT = 96


def align(x, a):
    return (x + a - 1) // a * a


def bf16(f):
    u = struct.unpack("<I", struct.pack("<f", f))[0]
    return (u + 0x7FFF + ((u >> 16) & 1)) >> 16


def tiny_config(tied=True):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "intermediate_size": 8, "vocab_size": 16,
        "max_position_embeddings": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2,
    }


def tensors(cfg):
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out = [("tok_embd", [v, d])]
    for l in range(cfg["num_hidden_layers"]):
        p = "blk.%d." % l
        out += [(p + "attn_norm", [d]), (p + "attn_q", [q, d]), (p + "attn_k", [kv, d]),
                (p + "attn_v", [kv, d]), (p + "attn_o", [d, q]), (p + "ffn_norm", [d]),
                (p + "ffn_gate", [f, d]), (p + "ffn_up", [f, d]), (p + "ffn_down", [d, f])]
    out.append(("out_norm", [d]))
    if not cfg["tie_word_embeddings"]:
        out.append(("output", [v, d]))
    return out


def image(cfg, dtype=BF16, blobs=()):
    cj = json.dumps(cfg).encode()
    ts = tensors(cfg)
    es = 4 if dtype == F32 else 2
    table, data, off, seed = b"", b"", 0, 1
    for name, shape in ts:
        n = 1
        for s in shape:
            n *= s
        vals = []
        for _ in range(n):
            seed = (seed * 1103515245 + 12345) & 0xFFFFFFFF
            vals.append(((seed >> 8) / 16777216.0 - 0.5) * 2)
        if dtype == F32:
            raw = struct.pack("<%df" % n, *vals)
        else:
            raw = struct.pack("<%dH" % n, *[bf16(x) for x in vals])
        data += b"\0" * (off - len(data)) + raw
        shp = shape + [0] * (8 - len(shape))
        table += struct.pack("<64sII8qQQQ", name.encode(), dtype, len(shape), *shp, off,
                             n * es, 0)
        off = align(off + n * es, 256)
    data += b"\0" * (off - len(data))
    tensors_off = align(HEADER + len(cj) + 1, 8)
    blobs_off = tensors_off + len(table)
    bdata_off = blobs_off + BENT * len(blobs)
    btable, bdata, pos = b"", b"", bdata_off
    for name, content in blobs:
        btable += struct.pack("<64sQQQQ", name.encode(), pos, len(content), 0, 0)
        bdata += content + b"\0"
        pos += len(content) + 1
    data_off = align(pos, 4096)
    fp = hashlib.sha256(cj + table + data).digest()
    hdr = struct.pack("<4sIIIIIQQQQQQQ32sIIII", b"FIMG", 1, HEADER, 0, len(ts), len(blobs),
                      data_off + len(data), HEADER, len(cj), tensors_off, blobs_off,
                      data_off, len(data), fp, dtype, 0, 0, 0)
    assert len(hdr) == HEADER
    meta = hdr + cj + b"\0"
    meta += b"\0" * (tensors_off - len(meta)) + table + btable + bdata
    meta += b"\0" * (data_off - len(meta))
    return meta + data


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    good = image(tiny_config())
    seeds = {
        "valid-tiny-bf16": good,
        "valid-untied-f32-blobs": image(tiny_config(False), F32,
                                        [("tokenizer.json", b'{"model":{}}'),
                                         ("provenance.json", b"{}")]),
        "trunc-header": good[:100],
        "trunc-data": good[:-300],
        "bad-magic": b"XIMG" + good[4:],
        "bad-version": good[:4] + struct.pack("<I", 9) + good[8:],
        "bad-tensor-offset": good[:tensors_off(good) + 136] + struct.pack("<Q", 1 << 40)
        + good[tensors_off(good) + 144:],
    }
    for name, b in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b)


def tensors_off(b):
    return struct.unpack_from("<Q", b, 48)[0]


if __name__ == "__main__":
    main()
