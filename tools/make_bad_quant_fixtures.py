#!/usr/bin/env python3
"""Writes tests/fixtures/bad_quant/: malformed GGUF files and quantized Hugging Face
checkpoints, one per rule, and cases.tsv, the table tests/unit/test_gguf.c walks:

    kind <TAB> path <TAB> expected error code <TAB> substring of the message

kind: "gguf" (fi_gguf_open: the parser's checks, after llama.cpp's GGUF advisories:
oversized counts and strings, array sizes that overflow, dimensions, unknown types,
offsets, overlaps), "conv" (fi_image_convert of a GGUF file that parses: what the model
needs), "hfq" (fi_image_convert of a quantized HF directory: scales missing, group sizes
inconsistent, act-order groups wrong, ...).
Run from the repository root: python3 tools/make_bad_quant_fixtures.py"""
import json
import os
import shutil
import struct

import numpy as np
from safetensors.numpy import save_file

OUT = "tests/fixtures/bad_quant"

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack("<Q", len(b)) + b


def kv(key, typ, val):
    """val: bytes already encoded for the type."""
    return s(key) + struct.pack("<I", typ) + val


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def tinfo(name, dims, typ, off):
    return s(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(typ) + u64(off)


def gguf(kvs=(), tensors=(), data=b"", version=3, n_kv=None, n_t=None, align=32):
    head = b"GGUF" + u32(version) + u64(len(tensors) if n_t is None else n_t) + \
        u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % align
    return body + b"\0" * pad + data


ARCH = kv("general.architecture", STR, s("llama"))
F32_4 = tinfo("t", [4], 0, 0)
D16 = bytes(16)


def llama_kvs(**over):
    base = {"llama.block_count": (U32, u32(1)), "llama.embedding_length": (U32, u32(32)),
            "llama.feed_forward_length": (U32, u32(32)), "llama.attention.head_count": (U32, u32(2)),
            "llama.context_length": (U32, u32(64))}
    base.update(over)
    return [ARCH] + [kv(k, t, v) for k, (t, v) in base.items() if t is not None]


def llama_tensors(q4_1=False, nan=False, extra=None, bad_shape=False):
    """A 1-layer llama of width 32 (vocab 8): F32 except where a case says otherwise."""
    D, F, V = 32, 32, 8
    spec = [("token_embd.weight", [D, V]), ("output_norm.weight", [D]),
            ("blk.0.attn_norm.weight", [D]), ("blk.0.attn_q.weight", [D, D]),
            ("blk.0.attn_k.weight", [D, D]), ("blk.0.attn_v.weight", [D, D]),
            ("blk.0.attn_output.weight", [D, D]), ("blk.0.ffn_norm.weight", [D]),
            ("blk.0.ffn_gate.weight", [D, F]), ("blk.0.ffn_up.weight", [D, F]),
            ("blk.0.ffn_down.weight", [F, D + (32 if bad_shape else 0)])]
    if extra:
        spec.append(extra)
    infos, data = [], b""
    for name, dims in spec:
        n = int(np.prod(dims))
        typ, raw = 0, np.ones(n, np.float32).tobytes()
        if q4_1 and name == "blk.0.attn_q.weight":
            typ, raw = 3, bytes(20 * n // 32)
        if nan and name == "blk.0.attn_v.weight":
            # Q8_0 rows whose first block has a NaN scale
            typ = 8
            blocks = bytearray(34 * n // 32)
            blocks[0:2] = np.array([np.nan], np.float16).tobytes()
            raw = bytes(blocks)
        infos.append(tinfo(name, dims, typ, len(data)))
        data += raw + b"\0" * ((-len(raw)) % 32)
    return infos, data


def conv_case(kvs=None, **kw):
    infos, data = llama_tensors(**kw)
    return gguf(kvs if kvs is not None else llama_kvs(), infos, data)


def tok_kvs(model="gpt2", tokens=("a", "b", "ab"), merges=("a b",), **extra):
    out = [kv("tokenizer.ggml.model", STR, s(model)),
           kv("tokenizer.ggml.tokens", ARR, u32(STR) + u64(len(tokens)) + b"".join(s(t) for t in tokens))]
    if merges is not None:
        out.append(kv("tokenizer.ggml.merges", ARR, u32(STR) + u64(len(merges)) +
                      b"".join(s(m) for m in merges)))
    for k, v in extra.items():
        out.append(kv(k.replace("__", "."), U32, u32(v)))
    return out


# (name, bytes, code, substring)
GGUF = [
    ("too_short", b"GGUF" + u32(3), "EFORMAT", "too short"),
    ("bad_magic", b"GGML" + bytes(40), "EFORMAT", "bad magic"),
    ("version_1", gguf(version=1), "EFORMAT", "version 1"),
    ("n_kv_huge", gguf(n_kv=2**63), "EFORMAT", "keys cannot fit"),
    ("n_tensors_huge", gguf(n_t=2**62 + 1), "EFORMAT", "tensors cannot fit"),
    ("key_len_huge", gguf([u64(2**64 - 1) + b"x" * 16], n_kv=1), "EFORMAT", "runs past the end"),
    ("key_empty", gguf([kv("", U32, u32(1))]), "EFORMAT", "is empty"),
    ("key_nul", gguf([kv("a\0b", U32, u32(1))]), "EFORMAT", "holds a NUL"),
    ("key_not_utf8", gguf([kv(b"\xff\xfe", U32, u32(1))]), "EFORMAT", "not UTF-8"),
    ("key_duplicate", gguf([kv("a", U32, u32(1)), kv("a", U32, u32(2))]), "EFORMAT", "appears twice"),
    ("value_type_unknown", gguf([kv("a", 13, u32(1))]), "EFORMAT", "unknown type 13"),
    ("value_truncated", b"GGUF" + u32(3) + u64(0) + u64(1) + s("a") + u32(U64) + b"\1\2",
     "EFORMAT", "run past the end"),
    ("string_len_huge", gguf([kv("a", STR, u64(2**63))]), "EFORMAT", "runs past the end"),
    ("array_nested", gguf([kv("a", ARR, u32(ARR) + u64(1) + u32(U8) + u64(1) + b"\0")]),
     "EFORMAT", "nested arrays"),
    ("array_type_unknown", gguf([kv("a", ARR, u32(40) + u64(1))]), "EFORMAT", "unknown types"),
    ("array_count_overflow", gguf([kv("a", ARR, u32(U32) + u64(2**62) + u32(0))]), "EFORMAT",
     "run past the end"),
    ("array_strings_huge", gguf([kv("a", ARR, u32(STR) + u64(2**60) + s("x"))]), "EFORMAT",
     "strings cannot fit"),
    ("array_string_len_huge", gguf([kv("a", ARR, u32(STR) + u64(2) + s("x") + u64(2**64 - 5))]),
     "EFORMAT", "runs past the end"),
    ("alignment_zero", gguf([kv("general.alignment", U32, u32(0))]), "EFORMAT", "power of two"),
    ("alignment_odd", gguf([kv("general.alignment", U32, u32(48))]), "EFORMAT", "power of two"),
    ("alignment_type", gguf([kv("general.alignment", U64, u64(32))]), "EFORMAT", "not a u32"),
    ("tensor_dims_5", gguf([], [tinfo("t", [1, 1, 1, 1, 1], 0, 0)], D16), "EFORMAT", "5 dimensions"),
    ("tensor_dims_0", gguf([], [tinfo("t", [], 0, 0)], D16), "EFORMAT", "0 dimensions"),
    ("tensor_dim_zero", gguf([], [tinfo("t", [4, 0], 0, 0)], D16), "EFORMAT", "dimension 1 is 0"),
    ("tensor_dims_overflow", gguf([], [tinfo("t", [2**32, 2**32, 2**32], 0, 0)], D16), "EFORMAT",
     "overflows"),
    ("tensor_type_unknown", gguf([], [tinfo("t", [4], 99, 0)], D16), "EFORMAT", "unknown type 99"),
    ("tensor_blocks", gguf([], [tinfo("t", [100, 1], 12, 0)], bytes(512)), "EFORMAT",
     "whole number"),
    ("tensor_offset_unaligned", gguf([], [tinfo("t", [4], 0, 4)], bytes(64)), "EFORMAT",
     "multiple of the alignment"),
    ("tensor_past_end", gguf([], [tinfo("t", [64], 0, 0)], D16), "EFORMAT", "outside the file"),
    ("tensor_offset_huge", gguf([], [tinfo("t", [4], 0, 2**64 - 32)], D16), "EFORMAT",
     "outside the file"),
    ("tensor_overlap", gguf([], [tinfo("a", [4], 0, 0), tinfo("b", [4], 0, 0)], bytes(32)),
     "EFORMAT", "overlaps"),
    ("tensor_name_duplicate", gguf([], [tinfo("a", [4], 0, 0), tinfo("a", [4], 0, 32)], bytes(64)),
     "EFORMAT", "appears twice"),
    ("tensor_name_long", gguf([], [tinfo("n" * 70, [4], 0, 0)], D16), "EFORMAT", "longer than"),
    ("tensor_info_truncated", b"GGUF" + u32(3) + u64(1) + u64(0) + tinfo("t", [4], 0, 0)[:-6],
     "EFORMAT", "1 tensors cannot fit"),
    ("tensor_name_len_huge", b"GGUF" + u32(3) + u64(1) + u64(0) + u64(2**40) + bytes(40),
     "EFORMAT", "runs past the end"),
    ("data_start_past_end", b"GGUF" + u32(3) + u64(1) + u64(0) + tinfo("t", [4], 0, 0)[:-6] +
     bytes(8), "EFORMAT", "starts past the end"),
    ("data_missing", gguf([], [tinfo("t", [4], 0, 0)]), "EFORMAT", "outside the file"),
]

CONV = [
    ("no_arch", conv_case(kvs=llama_kvs()[1:]), "EFORMAT", "general.architecture is missing"),
    ("arch_unsupported", conv_case(kvs=[kv("general.architecture", STR, s("gpt2"))] +
                                   llama_kvs()[1:]), "EUNSUPPORTED", "architecture 'gpt2'"),
    ("key_missing", conv_case(kvs=llama_kvs(**{"llama.block_count": (None, None)})), "EFORMAT",
     "llama.block_count' is missing"),
    ("key_wrong_type", conv_case(kvs=llama_kvs(**{"llama.block_count": (STR, s("1"))})),
     "EFORMAT", "not an integer"),
    ("tensor_q4_1", conv_case(q4_1=True), "EUNSUPPORTED", "is Q4_1"),
    ("tensor_unknown", conv_case(extra=("blk.0.attn_mystery.weight", [32])), "EUNSUPPORTED",
     "unknown tensor 'blk.0.attn_mystery.weight'"),
    ("tensor_nan_scale", conv_case(nan=True), "EFORMAT", "NaN or infinite scale"),
    ("tensor_shape", conv_case(bad_shape=True), "EMISMATCH", "ffn_down"),
    ("tok_bos_range", conv_case(kvs=llama_kvs() + tok_kvs(tokenizer__ggml__bos_token_id=7)),
     "EFORMAT", "outside the vocabulary"),
    ("tok_merge_bad", conv_case(kvs=llama_kvs() + tok_kvs(merges=("ab",))), "EFORMAT",
     "two tokens joined by a space"),
    ("tok_no_merges", conv_case(kvs=llama_kvs() + tok_kvs(merges=None)), "EFORMAT",
     "merges is missing"),
    ("tok_model_unknown", conv_case(kvs=llama_kvs() + tok_kvs(model="rwkv")), "EUNSUPPORTED",
     "tokenizer model 'rwkv'"),
]


def hf_config(qc):
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=128,
                intermediate_size=256, num_hidden_layers=1, num_attention_heads=1,
                num_key_value_heads=1, vocab_size=8, rms_norm_eps=1e-5,
                max_position_embeddings=64, tie_word_embeddings=True, quantization_config=qc)


def hf_base():
    t = {"model.embed_tokens.weight": np.ones((8, 128), np.float16),
         "model.norm.weight": np.ones(128, np.float16),
         "model.layers.0.input_layernorm.weight": np.ones(128, np.float16),
         "model.layers.0.post_attention_layernorm.weight": np.ones(128, np.float16)}
    return t


PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
AWQ = dict(quant_method="awq", bits=4, group_size=128, zero_point=True, version="gemm")
GPTQ = dict(quant_method="gptq", bits=4, group_size=128, desc_act=True, sym=True)
FP8 = dict(quant_method="fp8", activation_scheme="dynamic", weight_block_size=[128, 128])


def shape(p):
    """[N, K] of a projection: hidden 128, ffn 256."""
    return {"mlp.gate_proj": (256, 128), "mlp.up_proj": (256, 128),
            "mlp.down_proj": (128, 256)}.get(p.split("layers.0.")[1], (128, 128))


def awq_mod(t, p, scales_rows=None):
    N, K = shape(p)
    t[p + ".qweight"] = np.zeros((K, N // 8), np.int32)
    t[p + ".qzeros"] = np.zeros((K // 128, N // 8), np.int32)
    t[p + ".scales"] = np.ones((scales_rows or K // 128, N), np.float16)


def gptq_mod(t, p, g_idx=None):
    N, K = shape(p)
    t[p + ".qweight"] = np.zeros((K // 8, N), np.int32)
    t[p + ".qzeros"] = np.full((K // 128, N // 8), 0x77777777, np.uint32).view(np.int32)
    t[p + ".scales"] = np.ones((K // 128, N), np.float16)
    t[p + ".g_idx"] = np.arange(K, dtype=np.int32) // 128 if g_idx is None else g_idx


def fp8_mod(t, p, scale_shape=(), scale_val=1.0):
    N, K = shape(p)
    t[p + ".weight"] = np.zeros((N, K), np.uint8)  # written as F8_E4M3 below
    if scale_shape is not None:
        t[p + ".weight_scale_inv"] = np.full(scale_shape or (N // 128, K // 128), scale_val,
                                             np.float32)


def hfq(name, qc, build):
    t = hf_base()
    for i, p in enumerate(PROJ):
        build(t, "model.layers.0." + p, i)
    return name, qc, t


HFQ = [
    (hfq("awq_scales_missing", AWQ, lambda t, p, i: (awq_mod(t, p), i == 2 and t.pop(p + ".scales"))),
     "EFORMAT", "v_proj.scales' is missing"),
    (hfq("awq_group_inconsistent", AWQ, lambda t, p, i: awq_mod(t, p, 3 if i == 0 else None)),
     "EFORMAT", "group size"),
    (hfq("awq_bits8", dict(AWQ, bits=8), lambda t, p, i: awq_mod(t, p)), "EUNSUPPORTED", "8 bits"),
    (hfq("awq_group_odd", dict(AWQ, group_size=100), lambda t, p, i: awq_mod(t, p)),
     "EUNSUPPORTED", "group_size 100"),
    (hfq("awq_stray_scales", AWQ, lambda t, p, i: (awq_mod(t, p), i == 0 and t.pop(p + ".qweight"))),
     "EFORMAT", "has no"),
    (hfq("gptq_gidx_range", GPTQ, lambda t, p, i: gptq_mod(
        t, p, np.full(256, 5, np.int32) if i == 6 else None)), "EFORMAT", "is group 5 of 2"),
    (hfq("gptq_gidx_groups", GPTQ, lambda t, p, i: gptq_mod(
        t, p, (np.arange(256, dtype=np.int32) >= 100).astype(np.int32) if i == 6 else None)),
     "EFORMAT", "has 100 columns, the group size is 128"),
    (hfq("gptq_qzeros_dtype", GPTQ, lambda t, p, i: (gptq_mod(t, p), i == 0 and t.__setitem__(
        p + ".qzeros", np.zeros((1, 16), np.float16)))), "EFORMAT", "qzeros': dtype F16"),
    (hfq("fp8_scale_missing", FP8, lambda t, p, i: fp8_mod(t, p, None if i == 3 else ())),
     "EFORMAT", "o_proj.weight_scale_inv' is missing"),
    (hfq("fp8_scale_shape", FP8, lambda t, p, i: fp8_mod(t, p, (2, 2) if i == 0 else ())),
     "EFORMAT", "does not fit the weight"),
    (hfq("fp8_scale_nan", FP8, lambda t, p, i: fp8_mod(t, p, scale_val=np.nan if i == 4 else 1.0)),
     "EFORMAT", "scale 0 is nan"),
    (hfq("fp8_block_64", dict(FP8, weight_block_size=[64, 64]), lambda t, p, i: fp8_mod(t, p)),
     "EUNSUPPORTED", "weight_block_size"),
    (hfq("ct_static_input", dict(
        quant_method="compressed-tensors", format="float-quantized",
        config_groups=dict(g=dict(targets=["Linear"], weights=dict(
            num_bits=8, type="float", strategy="channel"), input_activations=dict(
            num_bits=8, type="float", strategy="tensor", dynamic=False)))),
        lambda t, p, i: None), "EUNSUPPORTED", "static activation"),
    (hfq("method_unknown", dict(quant_method="bitsandbytes"), lambda t, p, i: None),
     "EUNSUPPORTED", "quant_method 'bitsandbytes'"),
]


def write_hf(d, qc, tensors):
    import torch
    from safetensors.torch import save_file as save_t
    os.makedirs(d)
    json.dump(hf_config(qc), open(os.path.join(d, "config.json"), "w"))
    out = {}
    for k, v in tensors.items():
        tv = torch.from_numpy(np.ascontiguousarray(v))
        if k.endswith(".weight") and v.dtype == np.uint8:
            tv = tv.view(torch.float8_e4m3fn)
        out[k] = tv
    save_t(out, os.path.join(d, "model.safetensors"))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    rows = []
    for name, data, code, sub in GGUF:
        open(os.path.join(OUT, name + ".gguf"), "wb").write(data)
        rows.append(("gguf", name + ".gguf", code, sub))
    for name, data, code, sub in CONV:
        open(os.path.join(OUT, "conv_" + name + ".gguf"), "wb").write(data)
        rows.append(("conv", "conv_" + name + ".gguf", code, sub))
    for (name, qc, tensors), code, sub in HFQ:
        write_hf(os.path.join(OUT, name), qc, tensors)
        rows.append(("hfq", name, code, sub))
    with open(os.path.join(OUT, "cases.tsv"), "w") as f:
        f.write("# kind\tpath\tcode\tmessage substring (tools/make_bad_quant_fixtures.py)\n")
        for r in rows:
            assert "\t" not in "".join(r)
            f.write("\t".join(r) + "\n")
    print(f"{OUT}: {len(rows)} cases")


if __name__ == "__main__":
    main()
