#!/bin/sh
# fi-decode frames on the HF parity fixtures (no corpus needed): greedy tokens equal to
# transformers', continuous batching of several requests, non-streaming requests, stop
# ids, cancel, error frames for bad requests, and a corrupt stream.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
fx=$root/tests/fixtures/hf
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
frames="python3 $root/tests/cli/fi_decode_frames.py"
command -v python3 > /dev/null || { echo "SKIPPED: python3 absent" >&2; exit 77; }

# One request per family through frames, in one process per family: greedy == HF.
for fam in llama llama_tied llama3_rope mistral qwen2 qwen3; do
	python3 - "$fx/$fam/ref.json" > "$work/req.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"v": 1, "type": "request", "id": "g", "tokens": r["prompt"],
                  "max_tokens": len(r["greedy"]), "temperature": 0.0}))
print(json.dumps({"v": 1, "type": "request", "id": "n", "tokens": r["prompt"],
                  "max_tokens": len(r["greedy"]), "temperature": 0.0, "stream": False}))
PY
	$frames enc < "$work/req.jsonl" | fi-decode -m "$fx/$fam" --backend cpu |
		$frames dec > "$work/out.jsonl" || fail "$fam: fi-decode exited"
	python3 - "$fx/$fam/ref.json" "$work/out.jsonl" <<'PY' || fail "$fam: frames differ from HF"
import json, sys
want = json.load(open(sys.argv[1]))["greedy"]
fr = [json.loads(l) for l in open(sys.argv[2])]
toks = [f["token"] for f in fr if f["type"] == "token" and f["id"] == "g"]
idx = [f["index"] for f in fr if f["type"] == "token" and f["id"] == "g"]
done = {f["id"]: f for f in fr if f["type"] == "done"}
assert toks == want, (toks, want)
assert idx == list(range(len(want)))
assert not any(f["type"] == "token" and f["id"] == "n" for f in fr)
assert done["n"]["tokens"] == want, done["n"]
for d in done.values():
    assert d["finish"] == "length" and d["counts"]["gen_tokens"] == len(want), d
    assert d["timings"]["ttft_ms"] >= 0 and d["timings"]["total_ms"] >= d["timings"]["ttft_ms"]
PY
	echo "ok: $fam greedy frames"
done

# Many requests at once, seeded sampling: each request's tokens equal those of the same
# request run alone (--tokens), whatever the batch around it; stop ids end a request
# (not emitted); a cancel ends one; bad requests get error frames and the rest go on.
ref=$fx/llama/ref.json
P=$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['prompt'])))" "$ref")
for s in 1 2 3; do
	fi-decode -m "$fx/llama" --backend cpu --tokens "$P" -n 20 --seed $s --temp 0.9 --top-k 50 \
		> "$work/alone$s" || fail "--tokens run"
done
python3 - "$ref" > "$work/req.jsonl" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["prompt"]
R = lambda **k: print(json.dumps(dict({"v": 1, "type": "request"}, **k)))
for s in (1, 2, 3):
    R(id="s%d" % s, tokens=p, max_tokens=20, seed=s, temperature=0.9, top_k=50)
R(id="text", text="hello")
R(id="big", tokens=[1, 300])
R(id="stop", tokens=p, max_tokens=32, temperature=0.0, stop_ids=[238])
R(id="long", tokens=p[:3], max_tokens=200, temperature=0.0)
print(json.dumps({"v": 1, "type": "cancel", "id": "long"}))
R(id="late", tokens=p[:5], max_tokens=3, temperature=0.0)
PY
$frames enc < "$work/req.jsonl" | fi-decode -m "$fx/llama" --backend cpu |
	$frames dec > "$work/out.jsonl" || fail "batch run exited"
python3 - "$work" "$ref" <<'PY' || fail "batch frames: $(cat "$work/out.jsonl")"
import json, sys
w = sys.argv[1]
greedy = json.load(open(sys.argv[2]))["greedy"]
fr = [json.loads(l) for l in open(w + "/out.jsonl")]
tok = lambda i: [f["token"] for f in fr if f["type"] == "token" and f["id"] == i]
done = {f["id"]: f for f in fr if f["type"] == "done"}
err = {f["id"]: f for f in fr if f["type"] == "error"}
for s in (1, 2, 3):
    alone = [int(x) for x in open("%s/alone%d" % (w, s)).read().split()]
    assert tok("s%d" % s) == alone, (s, tok("s%d" % s), alone)
assert tok("s1") != tok("s2")
assert err["text"]["code"] == "unsupported" and err["big"]["code"] == "range", err
cut = greedy.index(238)
assert tok("stop") == greedy[:cut] and done["stop"]["finish"] == "stop", done["stop"]
assert done["long"]["finish"] == "cancel" and len(tok("long")) < 200
assert done["late"]["finish"] == "length" and len(tok("late")) == 3
assert len(done) == 6, sorted(done)  # rejected requests get an error frame only
PY
echo "ok: batch of requests"

# A corrupt stream: the requests before it are answered, then exit 1.
{ $frames enc < "$work/req.jsonl" | head -c 40; printf '\301\301\301'; } |
	fi-decode -m "$fx/llama" --backend cpu > "$work/out" 2> "$work/err"
[ $? -eq 1 ] || fail "corrupt stream: exit status"
echo "all fi-decode frame checks passed"
