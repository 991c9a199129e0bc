#!/bin/sh
# fi-decode as a server of many requests, on the embedded tiny model: a KV pool small enough
# to preempt (--kv-size in tokens) gives every request the tokens a large pool gives; a
# prompt larger than the pool is refused with both sizes; --ignore-eos and the request key
# ignore_eos; logprobs and top_logprobs; 10,000 requests through a pipe all answered, none
# turned away, in bounded memory; the options' usage errors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
frames="python3 $root/tests/cli/fi_decode_frames.py"
command -v python3 > /dev/null || { echo "SKIPPED: python3 absent" >&2; exit 77; }
fi-load "$root/models/tiny" --name tiny > /dev/null 2>&1 || fail "fi-load tiny"

# 120 greedy requests of 5..300 prompt tokens, 24 tokens each. (Greedy: on the CPU, prompt
# chunks and single tokens go through different BLAS kernels, so a recomputed request's
# logits may differ in their last bits, which can move a sampled draw; see fi(7).)
python3 - > "$work/req.jsonl" <<'PY'
import json, random
r = random.Random(5)
for i in range(120):
    n = r.randint(5, 300)
    print(json.dumps({"v": 1, "type": "request", "id": "r%d" % i, "temperature": 0.0,
                      "tokens": [r.randrange(2, 4096) for _ in range(n)], "max_tokens": 24}))
PY
$frames enc < "$work/req.jsonl" > "$work/req.msgpack" || fail "encode"
# Per request: its tokens, in index order, and its finish.
outputs() {
	$frames dec | python3 -c '
import json, sys
toks, fin = {}, {}
for l in sys.stdin:
    f = json.loads(l)
    if f["type"] == "token":
        toks.setdefault(f["id"], []).append((f["index"], f["token"]))
    elif f["type"] == "done":
        fin[f["id"]] = f["finish"]
    else:
        print("unexpected", l.strip()); sys.exit(1)
for k in sorted(fin):
    print(k, fin[k], " ".join(str(t) for _, t in sorted(toks.get(k, []))))
'
}
fi-decode -m tiny --ignore-eos < "$work/req.msgpack" | outputs > "$work/big" ||
	fail "large pool"
[ "$(wc -l < "$work/big")" -eq 120 ] || fail "large pool: $(wc -l < "$work/big") results"
# 1024 tokens = 64 blocks for 120 requests of up to 324 tokens: most wait, many are preempted.
fi-decode -m tiny --ignore-eos --kv-size 1024t --max-batch 32 --max-step-tokens 256 -v \
	< "$work/req.msgpack" 2> "$work/small.err" | outputs > "$work/small" || fail "small pool"
cmp -s "$work/big" "$work/small" || fail "a small pool changed the tokens: $(diff "$work/big" "$work/small" | head -5)"
n=$(sed -n 's/.* \([0-9][0-9]*\) preemptions.*/\1/p' "$work/small.err")
[ -n "$n" ] && [ "$n" -gt 0 ] || fail "no preemption with a small pool: $(cat "$work/small.err")"
grep -q "kv pool 64 blocks of 16 tokens" "$work/small.err" || fail "-v: $(cat "$work/small.err")"
grep -q "host [0-9.]* ms/step (planning [0-9.]*), model [0-9.]* ms/step" "$work/small.err" || fail "-v: no host time"
echo "ok: 120 requests, pool of 1024 tokens, $n preemptions, same tokens"

# A prompt that alone does not fit the pool: an error frame with both sizes.
printf '%s\n' '{"v":1,"type":"request","id":"big","tokens":[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24]}' \
	'{"v":1,"type":"request","id":"ok","tokens":[5,6],"max_tokens":2}' | $frames enc |
	fi-decode -m tiny --kv-size 16t | $frames dec > "$work/full.jsonl" || fail "full: exit $?"
grep '"id": "big"' "$work/full.jsonl" | grep -q '"code": "full"' || fail "full: $(cat "$work/full.jsonl")"
grep '"id": "big"' "$work/full.jsonl" | grep -q "20 tokens of KV cache, the pool holds 16" ||
	fail "full message: $(cat "$work/full.jsonl")"
grep '"id": "ok"' "$work/full.jsonl" | grep -q '"finish": "length"' || fail "full: the next request"
echo "ok: a prompt larger than the pool is refused"

# ignore_eos: the llama fixture with a config where 227 ends generation (its greedy output
# for its own prompt is 216 227 ...) stops after one token; with --ignore-eos (or the key) it
# runs to its length; the key false wins over --ignore-eos.
fx=$root/tests/fixtures/hf/llama
mkdir "$work/eos"
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["eos_token_id"]=227; json.dump(c, open(sys.argv[2], "w"))' \
	"$fx/config.json" "$work/eos/config.json"
ln -s "$fx/model.safetensors" "$work/eos/model.safetensors"
python3 - "$fx/ref.json" > "$work/eos.jsonl" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["prompt"]
for i, k in enumerate([None, True, False]):
    q = {"v": 1, "type": "request", "id": "e%d" % i, "tokens": p, "max_tokens": 20,
         "temperature": 0.0}
    if k is not None:
        q["ignore_eos"] = k
    print(json.dumps(q))
PY
$frames enc < "$work/eos.jsonl" | fi-decode -m "$work/eos" --backend cpu | outputs > "$work/eos1" ||
	fail "eos"
$frames enc < "$work/eos.jsonl" | fi-decode -m "$work/eos" --backend cpu --ignore-eos |
	outputs > "$work/eos2" || fail "eos"
grep -qx 'e0 stop 216' "$work/eos1" || fail "no stop at the end-of-sequence id: $(cat "$work/eos1")"
grep -q '^e1 length 216 227 ' "$work/eos1" || fail "key ignore_eos true: $(cat "$work/eos1")"
grep -qx 'e2 stop 216' "$work/eos1" || fail "key ignore_eos false"
grep -q '^e0 length 216 227 ' "$work/eos2" || fail "--ignore-eos: $(cat "$work/eos2")"
grep -qx 'e2 stop 216' "$work/eos2" || fail "key false against --ignore-eos"
[ "$(grep '^e1 ' "$work/eos1" | wc -w)" -eq 22 ] || fail "ignore_eos: not 20 tokens"
echo "ok: ignore_eos"

# logprobs: each token frame has its log-probability and, when asked, the top 3 (greedy:
# the first of them is the token).
printf '%s\n' '{"v":1,"type":"request","id":"l","tokens":[0,300,301],"max_tokens":6,"temperature":0.0,"top_logprobs":3}' \
	'{"v":1,"type":"request","id":"m","tokens":[0,300,301],"max_tokens":6,"temperature":0.9,"seed":3,"logprobs":true}' \
	'{"v":1,"type":"request","id":"n","tokens":[0,300,301],"max_tokens":6}' |
	$frames enc | fi-decode -m tiny | $frames dec > "$work/lp.jsonl" || fail "logprobs exit"
python3 - "$work/lp.jsonl" <<'PY' || fail "logprobs: $(head -c 600 "$work/lp.jsonl")"
import json, sys
fr = [json.loads(l) for l in open(sys.argv[1])]
tok = lambda i: [f for f in fr if f["type"] == "token" and f["id"] == i]
assert len(tok("l")) == 6 and len(tok("m")) == 6
for f in tok("l"):
    top = f["top_logprobs"]
    assert len(top) == 3 and top[0][0] == f["token"] and abs(top[0][1] - f["logprob"]) < 1e-6
    assert top[0][1] >= top[1][1] >= top[2][1] and f["logprob"] <= 0
for f in tok("m"):
    assert f["logprob"] <= 0 and "top_logprobs" not in f
for f in tok("n"):
    assert "logprob" not in f
PY
echo "ok: logprobs"

# 10,000 requests through a pipe: every one gets its done frame, none an error (no "busy"),
# and the process stays small (input is read only while the queue has room).
python3 - > "$work/many.jsonl" <<'PY'
import json
for i in range(10000):
    print(json.dumps({"v": 1, "type": "request", "id": "q%d" % i,
                      "tokens": [0, 2 + i % 4000, 2 + (7 * i) % 4000], "max_tokens": 2,
                      "temperature": 0.0}))
PY
$frames enc < "$work/many.jsonl" > "$work/many.msgpack"
/usr/bin/time -f '%M' -o "$work/rss" fi-decode -m tiny --kv-size 8192t --max-batch 64 \
	< "$work/many.msgpack" > "$work/many.out" || fail "10,000 requests: exit $?"
$frames dec < "$work/many.out" > "$work/many.out.jsonl"
[ "$(grep -c '"type": "done"' "$work/many.out.jsonl")" -eq 10000 ] || fail "10,000: done frames"
! grep -q '"type": "error"' "$work/many.out.jsonl" || fail "10,000: $(grep -m1 error "$work/many.out.jsonl")"
rss=$(cat "$work/rss")
[ "$rss" -lt 400000 ] || fail "10,000 requests: $rss kB resident"
echo "ok: 10,000 requests, none refused, $rss kB resident at most"

# Usage errors.
for bad in "--kv-size 0t" "--kv-size 12Q" "--gpu-mem 0" "--gpu-mem 1.5" "--max-batch 0" \
	"--max-step-tokens 8 --max-batch 16"; do
	fi-decode -m tiny $bad < /dev/null > /dev/null 2> "$work/err"
	[ $? -eq 2 ] || fail "'$bad' is not a usage error"
done
echo "all fi-decode serving checks passed"
