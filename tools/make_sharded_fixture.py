#!/usr/bin/env python3
"""Makes tests/fixtures/image/stories260K-bf16-2shard: the corpus stories260K-hf checkpoint
with its F32 weights rounded to BF16 (round to nearest even, as fi does) and split into two
safetensors shards with a model.safetensors.index.json, plus its config and tokenizer files
unchanged. Converting it with fi-load must give the same fingerprint as converting the
original with --dtype bf16. Standard library only.

Usage: tools/make_sharded_fixture.py ../shared/corpus/models/stories260K-hf OUTDIR"""
import json
import os
import shutil
import struct
import sys


def read_st(path):
    with open(path, "rb") as f:
        b = f.read()
    n = struct.unpack_from("<Q", b, 0)[0]
    hdr = json.loads(b[8:8 + n])
    data = b[8 + n:]
    out = []
    for name, e in hdr.items():
        if name == "__metadata__":
            continue
        s, t = e["data_offsets"]
        out.append((name, e["dtype"], e["shape"], data[s:t]))
    return out


def to_bf16(raw):
    n = len(raw) // 4
    words = struct.unpack("<%dI" % n, raw)
    return struct.pack("<%dH" % n, *[(u + 0x7FFF + ((u >> 16) & 1)) >> 16 for u in words])


def write_st(path, tensors):
    hdr, off, body = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        body += raw
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + body)


def main():
    src, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    ts = [(n, "BF16", s, to_bf16(r)) for n, d, s, r in sorted(read_st(os.path.join(src, "model.safetensors")))]
    half = len(ts) // 2
    shards = {"model-00001-of-00002.safetensors": ts[half:],
              "model-00002-of-00002.safetensors": ts[:half]}
    wm = {}
    for fn, part in shards.items():
        write_st(os.path.join(out, fn), part)
        for t in part:
            wm[t[0]] = fn
    idx = {"metadata": {"total_size": sum(len(t[3]) for t in ts)},
           "weight_map": dict(sorted(wm.items()))}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(idx, f, indent=2)
        f.write("\n")
    for fn in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(src, fn), os.path.join(out, fn))


if __name__ == "__main__":
    main()
