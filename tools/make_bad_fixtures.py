#!/usr/bin/env python3
"""Writes tests/fixtures/bad/: one malformed safetensors file or index per validation rule,
and cases.tsv, the table tests/unit/test_safetensors.c walks:

    kind <TAB> file <TAB> expected error code <TAB> substring of the message

kind is "st" (opened with fi_st_open) or "index" (parsed with fi_st_parse_index), both read
by test_safetensors.c, or "config" (a family's config.json, parsed with fi_config_parse by
tests/unit/test_config.c).
Run from the repository root: python3 tools/make_bad_fixtures.py"""
import json
import os
import struct

OUT = "tests/fixtures/bad"


def st(header, data=b"", hlen=None):
    """A safetensors file: u64 LE header length, header bytes, data bytes."""
    if not isinstance(header, bytes):
        header = json.dumps(header, separators=(",", ":")).encode()
    n = len(header) if hlen is None else hlen
    return struct.pack("<Q", n) + header + data


def t(dtype="F32", shape=(2,), off=(0, 8)):
    as_list = lambda v: list(v) if isinstance(v, (tuple, list)) else v
    return {"dtype": dtype, "shape": as_list(shape), "data_offsets": as_list(off)}


D8 = bytes(range(8))
D16 = bytes(range(16))

# (name, bytes, code, substring)
ST = [
    ("too_small", b"\x02\x00\x00\x00", "EFORMAT", "too small for a header"),
    ("header_over_limit", struct.pack("<Q", 100_000_001) + b"{}", "ERANGE", "exceeds the limit"),
    ("header_past_file", st(b"{}", hlen=1000), "EFORMAT", "exceeds the file"),
    ("header_len_huge", struct.pack("<Q", 2**64 - 1) + b"{}", "ERANGE", "exceeds the limit"),
    ("header_empty", st(b""), "EFORMAT", "does not start with '{'"),
    ("header_not_object", st(b"[1,2]"), "EFORMAT", "does not start with '{'"),
    ("header_leading_space", st(b' {"a":' + json.dumps(t()).encode() + b"}", D8), "EFORMAT",
     "does not start with '{'"),
    ("utf8_invalid_byte", st(b'{"a\xff":' + json.dumps(t()).encode() + b"}", D8), "EFORMAT",
     "not valid UTF-8"),
    ("utf8_overlong", st(b'{"a\xc0\xaf":' + json.dumps(t()).encode() + b"}", D8), "EFORMAT",
     "not valid UTF-8"),
    ("utf8_surrogate", st(b'{"a\xed\xa0\x80":' + json.dumps(t()).encode() + b"}", D8), "EFORMAT",
     "not valid UTF-8"),
    ("utf8_truncated", st(b'{"a\xe2\x82":' + json.dumps(t()).encode() + b"}", D8), "EFORMAT",
     "not valid UTF-8"),
    ("json_syntax", st(b'{"a": {"dtype": "F32",'), "EFORMAT", "not valid JSON"),
    ("json_trailing_garbage", st(b'{"a":' + json.dumps(t()).encode() + b"} x", D8), "EFORMAT",
     "not valid JSON"),
    ("json_nul_in_name", st(b'{"a\\u0000b":' + json.dumps(t()).encode() + b"}", D8), "EFORMAT",
     "not valid JSON"),
    ("json_integer_too_big", st(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,99999999999999999999]}}', D8),
     "EFORMAT", "not valid JSON"),
    ("duplicate_name", st(b'{"a":' + json.dumps(t()).encode() + b',"a":' +
                          json.dumps(t(off=(8, 16))).encode() + b"}", D16), "EFORMAT",
     "duplicate tensor name: duplicate object key near '\"a\"'"),
    ("entry_not_object", st({"a": 5}), "EFORMAT", "tensor 'a': entry is not an object"),
    ("dtype_missing", st({"a": {"shape": [2], "data_offsets": [0, 8]}}, D8), "EFORMAT",
     "tensor 'a': 'dtype' missing"),
    ("dtype_not_string", st({"a": t(dtype=4)}, D8), "EFORMAT", "tensor 'a': 'dtype' missing or not a string"),
    ("dtype_unknown", st({"a": t(dtype="F4")}, D8), "EFORMAT", "tensor 'a': unknown dtype 'F4'"),
    ("dtype_lowercase", st({"a": t(dtype="f32")}, D8), "EFORMAT", "unknown dtype 'f32'"),
    ("shape_missing", st({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, D8), "EFORMAT",
     "tensor 'a': 'shape' missing"),
    ("shape_not_array", st({"a": t(shape=2)}, D8), "EFORMAT", "'shape' missing or not an array"),
    ("shape_negative", st({"a": t(shape=(-2,))}, D8), "EFORMAT", "tensor 'a': shape[0] is not a non-negative"),
    ("shape_not_integer", st({"a": t(shape=(2.0,))}, D8), "EFORMAT", "shape[0] is not a non-negative"),
    ("shape_string_dim", st({"a": t(shape=(1, "2"))}, D8), "EFORMAT", "shape[1] is not a non-negative"),
    ("shape_too_many_dims", st({"a": t(shape=(1,) * 8 + (2,))}, D8), "ERANGE",
     "tensor 'a': 9 dims exceed the limit of 8"),
    ("numel_overflow", st({"a": t(shape=(2**32, 2**32), off=(0, 8))}, D8), "ERANGE",
     "tensor 'a': element count overflows"),
    ("bytes_overflow", st({"a": t(shape=(2**62,), off=(0, 8))}, D8), "ERANGE",
     "tensor 'a': byte size overflows"),
    ("offsets_missing", st({"a": {"dtype": "F32", "shape": [2]}}, D8), "EFORMAT",
     "tensor 'a': 'data_offsets' is not a pair"),
    ("offsets_one", st({"a": t(off=(8,))}, D8), "EFORMAT", "'data_offsets' is not a pair"),
    ("offsets_three", st({"a": t(off=(0, 8, 8))}, D8), "EFORMAT", "'data_offsets' is not a pair"),
    ("offsets_negative", st({"a": t(off=(-8, 0))}, D8), "EFORMAT", "'data_offsets' is not a pair"),
    ("offsets_not_integer", st({"a": t(off=(0, 8.0))}, D8), "EFORMAT", "'data_offsets' is not a pair"),
    ("offsets_reversed", st({"a": t(off=(8, 0))}, D8), "EFORMAT", "tensor 'a': data_offsets [8, 0] end before begin"),
    ("offsets_past_data", st({"a": t(off=(0, 8))}, D8[:4]), "EFORMAT",
     "tensor 'a': data_offsets end 8 is past the data section (4 bytes)"),
    ("size_mismatch", st({"a": t(shape=(4,), off=(0, 8))}, D8), "EFORMAT",
     "tensor 'a': shape [4] of F32 needs 16 bytes but data_offsets span 8"),
    ("size_mismatch_dtype", st({"a": t(dtype="BF16", shape=(2,), off=(0, 8))}, D8), "EFORMAT",
     "shape [2] of BF16 needs 4 bytes"),
    ("overlap", st({"a": t(off=(0, 8)), "b": t(off=(4, 12))}, D16[:12]), "EFORMAT",
     "tensor 'b' overlaps tensor 'a'"),
    ("overlap_same_range", st({"a": t(off=(0, 8)), "b": t(off=(0, 8))}, D8), "EFORMAT", "overlaps"),
    ("overlap_empty_inside", st({"a": t(off=(0, 8)), "z": t(shape=(0,), off=(4, 4))}, D8), "EFORMAT",
     "tensor 'z' overlaps tensor 'a'"),
    ("gap", st({"a": t(off=(0, 8)), "b": t(off=(12, 20))}, D16 + D8[:4]), "EFORMAT",
     "gap of 4 bytes in the data section before tensor 'b'"),
    ("gap_at_start", st({"a": t(off=(4, 12))}, D16[:12]), "EFORMAT", "gap of 4 bytes in the data section before tensor 'a'"),
    ("trailing_bytes", st({"a": t(off=(0, 8))}, D16), "EFORMAT", "8 trailing bytes"),
    ("trailing_bytes_no_tensors", st({}, D8), "EFORMAT", "8 trailing bytes"),
    ("metadata_not_object", st({"__metadata__": "pt", "a": t()}, D8), "EFORMAT",
     "'__metadata__' is not an object"),
    ("metadata_value_not_string", st({"__metadata__": {"format": "pt", "n": 3}, "a": t()}, D8), "EFORMAT",
     "'__metadata__' key 'n' is not a string"),
]

WM = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
INDEX = [
    ("index_not_json", b'{"weight_map": ', "EFORMAT", "not valid JSON"),
    ("index_not_object", b'["x"]', "EFORMAT", "'weight_map' missing"),
    ("index_no_weight_map", json.dumps({"metadata": {"total_size": 8}}).encode(), "EFORMAT",
     "'weight_map' missing"),
    ("index_weight_map_not_object", json.dumps({"weight_map": ["a"]}).encode(), "EFORMAT",
     "'weight_map' missing or not an object"),
    ("index_weight_map_empty", json.dumps({"weight_map": {}}).encode(), "EFORMAT", "'weight_map' is empty"),
    ("index_shard_not_string", json.dumps({"weight_map": dict(WM, c=1)}).encode(), "EFORMAT",
     "tensor 'c': shard is not a string"),
    ("index_shard_slash", json.dumps({"weight_map": dict(WM, c="sub/x.safetensors")}).encode(), "EFORMAT",
     "tensor 'c': shard 'sub/x.safetensors' is not a plain file name"),
    ("index_shard_absolute", json.dumps({"weight_map": dict(WM, c="/etc/passwd")}).encode(), "EFORMAT",
     "not a plain file name"),
    ("index_shard_dotdot", json.dumps({"weight_map": dict(WM, c="..")}).encode(), "EFORMAT",
     "shard '..' is not a plain file name"),
    ("index_shard_dotdot_prefix", json.dumps({"weight_map": dict(WM, c="../m.safetensors")}).encode(), "EFORMAT",
     "not a plain file name"),
    ("index_shard_dot", json.dumps({"weight_map": dict(WM, c=".")}).encode(), "EFORMAT", "not a plain file name"),
    ("index_shard_empty", json.dumps({"weight_map": dict(WM, c="")}).encode(), "EFORMAT", "not a plain file name"),
    ("index_shard_backslash", json.dumps({"weight_map": dict(WM, c="a\\b")}).encode(), "EFORMAT",
     "not a plain file name"),
    ("index_duplicate_tensor", b'{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}', "EFORMAT",
     "duplicate tensor name"),
]


# Configs of the model families (lib/model/config_family.c) with one missing or inconsistent
# key each: kind "config", parsed by tests/unit/test_config.c with fi_config_parse.
FAM_BASE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, intermediate_size=48, vocab_size=300,
                max_position_embeddings=256, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
GEMMA2 = dict(FAM_BASE, architectures=["Gemma2ForCausalLM"], query_pre_attn_scalar=16,
              sliding_window=8, hidden_activation="gelu_pytorch_tanh")
GEMMA3MM = dict(architectures=["Gemma3ForConditionalGeneration"], model_type="gemma3",
                eos_token_id=[1, 106], text_config=dict(FAM_BASE, model_type="gemma3_text",
                                                        sliding_window=8))
PHI3 = dict(FAM_BASE, architectures=["Phi3ForCausalLM"], original_max_position_embeddings=64,
            rope_scaling=dict(type="longrope", short_factor=[1.0] * 8, long_factor=[2.0] * 8))
MIXTRAL = dict(FAM_BASE, architectures=["MixtralForCausalLM"], num_local_experts=8,
               num_experts_per_tok=2)
QWEN3MOE = dict(FAM_BASE, architectures=["Qwen3MoeForCausalLM"], num_experts=8,
                num_experts_per_tok=2, moe_intermediate_size=32, num_hidden_layers=2)
YARN = dict(FAM_BASE, architectures=["Qwen2ForCausalLM"],
            rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64))


def patch(base, drop=(), text=False, **kw):
    c = json.loads(json.dumps(base))
    t = c["text_config"] if text else c
    for k in drop:
        t.pop(k, None)
    t.update(kw)
    return c


CONFIG = [
    ("gemma2_act", patch(GEMMA2, hidden_activation="gelu"), "EUNSUPPORTED",
     "'hidden_activation' gelu is not supported (only gelu_pytorch_tanh)"),
    ("gemma2_layer_types_len", patch(GEMMA2, layer_types=["full_attention"] * 3), "EFORMAT",
     "'layer_types' lists 3 layers, 'num_hidden_layers' is 4"),
    ("gemma2_layer_types_kind", patch(GEMMA2, layer_types=["sliding_attention", "full_attention",
                                                          "chunked_attention", "full_attention"]),
     "EFORMAT", "'layer_types'[2] is not \"sliding_attention\" or \"full_attention\""),
    ("gemma2_window_null", patch(GEMMA2, sliding_window=None), "EFORMAT",
     "'sliding_window' is null but 'layer_types' has sliding layers"),
    ("gemma2_softcap_negative", patch(GEMMA2, attn_logit_softcapping=-1.0), "ERANGE",
     "'attn_logit_softcapping' = -1 must be positive"),
    ("gemma2_scalar_zero", patch(GEMMA2, query_pre_attn_scalar=0), "ERANGE",
     "'query_pre_attn_scalar' = 0 must be positive"),
    ("gemma2_bidirectional", patch(GEMMA2, use_bidirectional_attention=True), "EUNSUPPORTED",
     "'use_bidirectional_attention' true is not supported"),
    ("gemma2_attention_bias", patch(GEMMA2, attention_bias=True), "EUNSUPPORTED",
     "'attention_bias' true is not supported"),
    ("gemma3_text_config", patch(GEMMA3MM, text_config=5), "EFORMAT",
     "'text_config' is not an object"),
    ("gemma3_pattern_zero", patch(GEMMA3MM, text=True, sliding_window_pattern=0), "ERANGE",
     "text_config: 'sliding_window_pattern' = 0 is out of range"),
    ("gemma3_local_scaled", patch(GEMMA3MM, text=True, rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}),
     "EUNSUPPORTED", "only the default 'rope_type' is supported for sliding layers"),
    ("gemma3_text_no_heads", patch(GEMMA3MM, text=True, num_attention_heads="8"), "EFORMAT",
     "text_config: 'num_attention_heads' is not an integer"),
    ("phi3_short_len", patch(PHI3, rope_scaling=dict(PHI3["rope_scaling"], short_factor=[1.0] * 3)),
     "EFORMAT", "'short_factor' is not an array of 8 numbers (head_dim / 2)"),
    ("phi3_no_long", patch(PHI3, rope_scaling=dict(type="longrope", short_factor=[1.0] * 8)),
     "EFORMAT", "rope_scaling: 'long_factor' is missing"),
    ("phi3_factor_zero", patch(PHI3, rope_scaling=dict(PHI3["rope_scaling"],
                                                       long_factor=[1.0] * 7 + [0.0])),
     "ERANGE", "'long_factor'[7] is not a positive number"),
    ("phi3_partial_rotary", patch(PHI3, partial_rotary_factor=0.75), "EUNSUPPORTED",
     "'partial_rotary_factor' 0.75 is not supported"),
    ("mixtral_no_experts", patch(MIXTRAL, drop=["num_local_experts"]), "EFORMAT",
     "'num_local_experts' is missing"),
    ("mixtral_no_topk", patch(MIXTRAL, drop=["num_experts_per_tok"]), "EFORMAT",
     "'num_experts_per_tok' is missing"),
    ("mixtral_topk_above", patch(MIXTRAL, num_experts_per_tok=9), "EFORMAT",
     "'num_experts_per_tok' (9) exceeds 'num_local_experts' (8)"),
    ("qwen3moe_no_moe_ffn", patch(QWEN3MOE, drop=["moe_intermediate_size"]), "EFORMAT",
     "'moe_intermediate_size' is missing"),
    ("qwen3moe_no_experts", patch(QWEN3MOE, drop=["num_experts"]), "EFORMAT",
     "'num_experts' is missing"),
    ("qwen3moe_mlp_only", patch(QWEN3MOE, mlp_only_layers=[5]), "EFORMAT",
     "'mlp_only_layers'[0] is not a layer index below 2"),
    ("qwen3moe_sparse_step", patch(QWEN3MOE, decoder_sparse_step=0), "ERANGE",
     "'decoder_sparse_step' = 0 is out of range"),
    ("yarn_no_factor", patch(YARN, rope_scaling=dict(rope_type="yarn")), "EFORMAT",
     "rope_scaling: 'factor' is missing"),
    ("yarn_beta", patch(YARN, rope_scaling=dict(YARN["rope_scaling"], beta_fast=-1)), "ERANGE",
     "'beta_fast' = -1 must be positive"),
    ("rope_unknown", patch(YARN, rope_scaling=dict(rope_type="mrope", factor=2.0)), "EUNSUPPORTED",
     "'rope_scaling' type 'mrope' is not supported"),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    rows = []
    for name, data, code, sub in ST:
        open(os.path.join(OUT, name + ".safetensors"), "wb").write(data)
        rows.append(("st", name + ".safetensors", code, sub))
    for name, data, code, sub in INDEX:
        open(os.path.join(OUT, name + ".json"), "wb").write(data)
        rows.append(("index", name + ".json", code, sub))
    for name, cfg, code, sub in CONFIG:
        with open(os.path.join(OUT, "config_" + name + ".json"), "w") as f:
            json.dump(cfg, f, indent=1)
        rows.append(("config", "config_" + name + ".json", code, sub))
    with open(os.path.join(OUT, "cases.tsv"), "w") as f:
        f.write("# kind\tfile\tcode\tmessage substring (tools/make_bad_fixtures.py)\n")
        for r in rows:
            assert "\t" not in "".join(r)
            f.write("\t".join(r) + "\n")
    print(f"{OUT}: {len(rows)} cases")


if __name__ == "__main__":
    main()
