#!/usr/bin/env python3
"""Minimal msgpack for the fi-decode CLI tests (no third-party module needed).

  fi_decode_frames.py enc   < requests.jsonl  > requests.msgpack
      one JSON object per line; "tokens" (a list of ids) is sent as a bin of LE uint32
  fi_decode_frames.py dec   < frames.msgpack  > frames.jsonl
      one JSON object per frame; bins of token ids come back as lists
"""
import json
import struct
import sys


def enc(o, key=None):
    if o is None:
        return b"\xc0"
    if o is True or o is False:
        return b"\xc3" if o else b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if o >= 0:
            return b"\xcf" + struct.pack(">Q", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode()
        return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xda" + struct.pack(">H", len(b))) + b
    if isinstance(o, list):
        if key in ("tokens",):
            b = struct.pack("<%dI" % len(o), *o)
            return b"\xc6" + struct.pack(">I", len(b)) + b
        return b"\xdd" + struct.pack(">I", len(o)) + b"".join(enc(x) for x in o)
    if isinstance(o, dict):
        return b"\xdf" + struct.pack(">I", len(o)) + b"".join(
            enc(k) + enc(v, k) for k, v in o.items())
    raise TypeError(type(o))


def dec(b, i):
    t = b[i]
    if t < 0x80:
        return t, i + 1
    if 0x80 <= t <= 0x8f or t in (0xde, 0xdf):
        n, i = (t & 15, i + 1) if t <= 0x8f else (
            (struct.unpack(">H", b[i + 1:i + 3])[0], i + 3) if t == 0xde else
            (struct.unpack(">I", b[i + 1:i + 5])[0], i + 5))
        d = {}
        for _ in range(n):
            k, i = dec(b, i)
            v, i = dec(b, i)
            if k == "tokens" and isinstance(v, bytes):
                v = list(struct.unpack("<%dI" % (len(v) // 4), v))
            d[k] = v
        return d, i
    if 0x90 <= t <= 0x9f or t in (0xdc, 0xdd):
        n, i = (t & 15, i + 1) if t <= 0x9f else (
            (struct.unpack(">H", b[i + 1:i + 3])[0], i + 3) if t == 0xdc else
            (struct.unpack(">I", b[i + 1:i + 5])[0], i + 5))
        out = []
        for _ in range(n):
            v, i = dec(b, i)
            out.append(v)
        return out, i
    if 0xa0 <= t <= 0xbf or t in (0xd9, 0xda, 0xdb):
        n, i = (t & 31, i + 1) if t <= 0xbf else {
            0xd9: (b[i + 1], i + 2),
            0xda: (struct.unpack(">H", b[i + 1:i + 3])[0], i + 3),
            0xdb: (struct.unpack(">I", b[i + 1:i + 5])[0], i + 5)}[t]
        return b[i:i + n].decode(errors="replace"), i + n
    if t in (0xc4, 0xc5, 0xc6):
        w = {0xc4: 1, 0xc5: 2, 0xc6: 4}[t]
        n = int.from_bytes(b[i + 1:i + 1 + w], "big")
        return bytes(b[i + 1 + w:i + 1 + w + n]), i + 1 + w + n
    if t == 0xc0:
        return None, i + 1
    if t in (0xc2, 0xc3):
        return t == 0xc3, i + 1
    if t == 0xca:
        return struct.unpack(">f", b[i + 1:i + 5])[0], i + 5
    if t == 0xcb:
        return struct.unpack(">d", b[i + 1:i + 9])[0], i + 9
    if t in (0xcc, 0xcd, 0xce, 0xcf):
        w = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[t]
        return int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
    if t in (0xd0, 0xd1, 0xd2, 0xd3):
        w = {0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}[t]
        return int.from_bytes(b[i + 1:i + 1 + w], "big", signed=True), i + 1 + w
    if t >= 0xe0:
        return t - 256, i + 1
    raise ValueError("msgpack type 0x%02x" % t)


def main():
    if sys.argv[1] == "enc":
        for line in sys.stdin:
            if line.strip():
                sys.stdout.buffer.write(enc(json.loads(line)))
    else:
        b = sys.stdin.buffer.read()
        i = 0
        while i < len(b):
            o, i = dec(b, i)
            print(json.dumps(o, sort_keys=True))


if __name__ == "__main__":
    main()
