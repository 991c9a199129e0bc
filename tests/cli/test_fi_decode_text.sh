#!/bin/sh
# fi-decode with text on the embedded model (models/tiny, converted on the fly): text prompts
# encoded as fi-tokenize and HF tokenizers encode them; token frames whose text pieces make
# HF's decode of the generated ids; stop strings across token boundaries (HF semantics: the
# completing token is emitted, the text is cut before the stop string); stream false;
# fi-prefill | fi-decode equal to fi-decode alone; --prompt and --stop; a model without a
# tokenizer refuses text prompts and stop strings with error frames.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v python3 > /dev/null || { echo "SKIPPED: python3 absent" >&2; exit 77; }
python3 -c "import tokenizers" 2> /dev/null ||
	{ echo "SKIPPED: python tokenizers absent (reference decoding)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
frames="python3 $root/tests/cli/pipe_frames.py"
m=$root/models/tiny
fx=$root/tests/fixtures/hf
export PYTHONPATH=$root/tests/cli

# 1. Text prompts, greedy, no stop: the same as the token prompt fi-tokenize makes, and the
#    text pieces are HF's decode of the generated ids.
P='def main():'
python3 - "$P" > "$work/a.jsonl" <<'PY'
import json, sys
p = sys.argv[1]
R = lambda **k: print(json.dumps(dict({"v": 1, "type": "request", "temperature": 0.0,
                                        "max_tokens": 40}, **k)))
R(id="a", text=p)
R(id="b", text=p, stream=False)
R(id="u", text="na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e", max_tokens=12)
PY
$frames enc < "$work/a.jsonl" | fi-decode -m "$m" > "$work/a.mp" || fail "text prompts: exit $?"
$frames dec < "$work/a.mp" > "$work/a.out"
if command -v fi-tokenize > /dev/null; then
	printf '%s\n' "$P" | fi-tokenize -m "$m" | fi-decode -m "$m" -n 40 --temp 0 > "$work/t.mp" ||
		fail "fi-tokenize | fi-decode"
	$frames dec < "$work/t.mp" > "$work/t.out"
fi
python3 - "$m/tokenizer.json" "$P" "$work" <<'PY' || fail "text frames: $(cat "$work/a.out")"
import json, os, sys
from tokenizers import Tokenizer
tk = Tokenizer.from_file(sys.argv[1])
w = sys.argv[3]
fr = [json.loads(l) for l in open(w + "/a.out")]
def req(i, fr=fr):
    toks = [f for f in fr if f["type"] == "token" and f["id"] == i]
    done = [f for f in fr if f["type"] == "done" and f["id"] == i]
    assert len(done) == 1, (i, fr)
    d = done[0]
    text = "".join(f.get("text", "") for f in toks) + d.get("text", "")
    return [f["token"] for f in toks], text, d, toks
ids, text, d, toks = req("a")
want = tk.encode(sys.argv[2]).ids
assert d["counts"]["prompt_tokens"] == len(want), (d, want)
assert d["finish"] == "length" and len(ids) == 40, d
assert text == tk.decode(ids, skip_special_tokens=False), (text, tk.decode(ids))
assert all("\ufffd" not in f.get("text", "") for f in toks)
assert sum(1 for f in toks if f.get("text")) >= 20, toks
_, _, db, tb = req("b")
assert not tb and db["tokens"] == ids and db["text"] == text, db
ids_u, text_u, du, _ = req("u")
u = "na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e"
assert du["counts"]["prompt_tokens"] == len(tk.encode(u).ids), du
assert text_u == tk.decode(ids_u, skip_special_tokens=False), (text_u, tk.decode(ids_u))
if os.path.exists(w + "/t.out"):
    tf = [json.loads(l) for l in open(w + "/t.out")]
    i = tf[0]["id"]
    ids_t, text_t, _, _ = req(i, tf)
    assert ids_t == ids and text_t == text, (ids_t, ids)
# Stop strings for the next runs, chosen from this output: one spanning a token boundary
# in the middle, one that never occurs, and the expected cut and token count.
pieces = [f.get("text", "") for f in toks]
off, k = 0, None
for j in range(6, len(pieces) - 1):
    off = len("".join(pieces[:j + 1]))
    if len(pieces[j]) >= 2 and len(pieces[j + 1]) >= 2:
        k = j
        break
assert k is not None, pieces
stop = text[off - 2:off + 2]
cut = text.find(stop)
n = next(m for m in range(1, len(ids) + 1) if stop in tk.decode(ids[:m], skip_special_tokens=False))
json.dump({"stop": stop, "cut": cut, "n": n, "ids": ids, "text": text},
          open(w + "/stop.json", "w"))
PY
echo "ok: text prompts and pieces"

# 2. Stop strings: the earliest one ends generation; the text stops before it; the token
#    that completed it is the last one; nothing of it leaks into a piece.
python3 - "$work" "$P" > "$work/s.jsonl" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/stop.json"))
R = lambda **k: print(json.dumps(dict({"v": 1, "type": "request", "temperature": 0.0,
                                        "max_tokens": 40, "text": sys.argv[2]}, **k)))
R(id="s", stop=["\u00a7never\u00a7", s["stop"]])
R(id="n", stop=[s["stop"]], stream=False)
R(id="z", stop=["\u00a7never\u00a7"])
PY
$frames enc < "$work/s.jsonl" > "$work/s.req"
fi-decode -m "$m" < "$work/s.req" > "$work/s.mp" || fail "stop strings: exit $?"
$frames dec < "$work/s.mp" > "$work/s.out"
python3 - "$work" <<'PY' || fail "stop frames: $(cat "$work/s.out")"
import json, sys
w = sys.argv[1]
s = json.load(open(w + "/stop.json"))
fr = [json.loads(l) for l in open(w + "/s.out")]
tok = lambda i: [f for f in fr if f["type"] == "token" and f["id"] == i]
done = {f["id"]: f for f in fr if f["type"] == "done"}
t = tok("s")
text = "".join(f.get("text", "") for f in t) + done["s"].get("text", "")
assert [f["token"] for f in t] == s["ids"][:s["n"]], ([f["token"] for f in t], s)
assert done["s"]["finish"] == "stop" and done["s"]["counts"]["gen_tokens"] == s["n"], done["s"]
assert text == s["text"][:s["cut"]], (text, s)
assert not any(s["stop"] in f.get("text", "") for f in t)
d = done["n"]
assert d["tokens"] == s["ids"][:s["n"]] and d["text"] == s["text"][:s["cut"]], d
assert done["z"]["finish"] == "length" and "".join(f.get("text", "") for f in tok("z")) + \
    done["z"].get("text", "") == s["text"], done["z"]
PY
echo "ok: stop strings ($(python3 -c "import json,sys
s = json.load(open(sys.argv[1])); print('%r after %d of %d tokens' % (s['stop'], s['n'], len(s['ids'])))" "$work/stop.json"))"

# 3. fi-prefill | fi-decode with text prompts and stop strings equals fi-decode alone.
fi-prefill -m "$m" --arena-size 16M < "$work/s.req" | fi-decode -m "$m" > "$work/p.mp" ||
	fail "prefill | decode: exit $?"
$frames same "$work/s.mp" "$work/p.mp" || fail "prefill | decode differs with text prompts"
echo "ok: fi-prefill | fi-decode"
# Prompts computed 2 tokens per step, alongside running requests: the same frames.
fi-decode -m "$m" --prefill-chunk 2 < "$work/s.req" > "$work/c.mp" || fail "--prefill-chunk"
$frames same "$work/s.mp" "$work/c.mp" || fail "--prefill-chunk changes the output"
echo "ok: --prefill-chunk"

# 4. --prompt prints the text; --stop applies to it and to requests without stop strings.
fi-decode -m "$m" --prompt "$P" -n 40 --temp 0 > "$work/p1" || fail "--prompt: exit $?"
fi-decode -m "$m" --prompt "$P" -n 40 --temp 0 --stop "$(python3 -c "import json,sys
print(json.load(open(sys.argv[1]))['stop'])" "$work/stop.json")" > "$work/p2" || fail "--stop"
python3 - "$work" <<'PY' || fail "--prompt output: $(cat "$work/p1" "$work/p2")"
import json, sys
w = sys.argv[1]
s = json.load(open(w + "/stop.json"))
assert open(w + "/p1").read() == s["text"] + "\n"
assert open(w + "/p2").read() == s["text"][:s["cut"]] + "\n"
PY
python3 -c 'import json; print(json.dumps({"v": 1, "type": "request", "id": "d", "text": "def main():", "max_tokens": 40, "temperature": 0.0}))' |
	$frames enc | fi-decode -m "$m" --stop "$(python3 -c "import json,sys
print(json.load(open(sys.argv[1]))['stop'])" "$work/stop.json")" | $frames dec > "$work/d.out" ||
	fail "--stop with frames"
grep -q '"finish": "stop"' "$work/d.out" || fail "--stop default: $(cat "$work/d.out")"
echo "ok: --prompt, --stop"

# 5. A model without a tokenizer: text prompts and stop strings get error frames naming it;
#    token prompts still work.
printf '%s\n' '{"v":1,"type":"request","id":"x","text":"hello"}' \
	'{"v":1,"type":"request","id":"y","tokens":[1,5],"stop":["ab"],"max_tokens":2}' \
	'{"v":1,"type":"request","id":"k","tokens":[1,5],"max_tokens":2}' |
	$frames enc | fi-decode -m "$fx/llama" --backend cpu | $frames dec > "$work/x.out" ||
	fail "no tokenizer: exit $?"
python3 - "$work/x.out" <<'PY' || fail "no tokenizer frames: $(cat "$work/x.out")"
import json, sys
fr = [json.loads(l) for l in open(sys.argv[1])]
err = {f["id"]: f for f in fr if f["type"] == "error"}
done = {f["id"]: f for f in fr if f["type"] == "done"}
for i in ("x", "y"):
    assert err[i]["code"] == "unsupported" and "tokenizer" in err[i]["message"], err
assert sorted(done) == ["k"] and done["k"]["counts"]["gen_tokens"] == 2, done
assert not any("text" in f for f in fr if f["type"] == "token")
PY
fi-decode -m "$fx/llama" --backend cpu --prompt hello > /dev/null 2> "$work/err"
[ $? -eq 1 ] && grep -q "^fi-decode: --prompt: .*tokenizer" "$work/err" ||
	fail "--prompt without a tokenizer: $(cat "$work/err")"
fi-decode -m "$m" --prompt x --tokens 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "--prompt with --tokens"
fi-decode -m "$m" --prompt x --stop '' > /dev/null 2>&1; [ $? -eq 2 ] || fail "empty --stop"
echo "all fi-decode text checks passed"
