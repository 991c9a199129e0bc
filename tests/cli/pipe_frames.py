#!/usr/bin/env python3
"""Frame helpers for the pipeline tests, over the msgpack codec of fi_decode_frames.py.

  pipe_frames.py enc  < requests.jsonl > requests.msgpack
  pipe_frames.py dec  < frames.msgpack > frames.jsonl     (bins other than tokens as hex)
  pipe_frames.py same A.msgpack B.msgpack
      exit 0 when A and B hold the same token and done frames for every request id, in
      order per id (timings and cached_tokens excluded: they say how, not what), and the
      same error frames; prints the first difference otherwise
  pipe_frames.py prompts N LEN SEED [MAXTOK] > requests.jsonl
      N greedy requests with random token prompts of about LEN tokens (ids 2..4095)
"""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fi_decode_frames as fdf  # noqa: E402


def hexify(o):
    if isinstance(o, bytes):
        return o.hex()
    if isinstance(o, list):
        return [hexify(x) for x in o]
    if isinstance(o, dict):
        return {k: hexify(v) for k, v in o.items()}
    return o


def frames(path):
    b = open(path, "rb").read() if path != "-" else sys.stdin.buffer.read()
    i, out = 0, []
    while i < len(b):
        o, i = fdf.dec(b, i)
        out.append(hexify(o))
    return out


def key(f):
    t = f.get("type")
    if t == "token":
        return (t, f["token"], f["index"], f.get("text"))
    if t == "done":
        c = dict(f["counts"])
        c.pop("cached_tokens", None)
        return (t, f["finish"], sorted(c.items()), f.get("tokens"), f.get("text"))
    if t == "error":
        return (t, f["code"])
    return None


def same(a, b):
    per = [{}, {}]
    for n, path in enumerate((a, b)):
        for f in frames(path):
            k = key(f)
            if k is not None:
                per[n].setdefault(f["id"], []).append(k)
    if sorted(per[0]) != sorted(per[1]):
        print("ids differ: %s vs %s" % (sorted(per[0]), sorted(per[1])))
        return 1
    for i in sorted(per[0]):
        if per[0][i] != per[1][i]:
            for x, y in zip(per[0][i] + [None], per[1][i] + [None]):
                if x != y:
                    print("request %s: %s vs %s" % (i, x, y))
                    return 1
    return 0


def main():
    cmd = sys.argv[1]
    if cmd == "enc":
        fdf.sys.argv = ["", "enc"]
        fdf.main()
    elif cmd == "dec":
        for f in frames("-"):
            print(json.dumps(f, sort_keys=True))
    elif cmd == "same":
        sys.exit(same(sys.argv[2], sys.argv[3]))
    elif cmd == "prompts":
        n, ln, seed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        mt = int(sys.argv[5]) if len(sys.argv) > 5 else 8
        r = random.Random(seed)
        for i in range(n):
            m = max(1, ln + r.randint(-ln // 4, ln // 4))
            toks = [0] + [r.randint(2, 4095) for _ in range(m - 1)]
            print(json.dumps({"v": 1, "type": "request", "id": "q%d" % i, "tokens": toks,
                              "max_tokens": mt, "temperature": 0.0}))


if __name__ == "__main__":
    main()
