#!/bin/sh
# fi-tokenize -d as a reader of results, on the embedded model (no corpus needed): what the
# request frames carry (text, seq, tokenizer, sampling options), --jsonl with prompt and
# completion, --ordered (input order, and its bounded window), --echo, -0 and --sep,
# streaming in request order, error frames counted, usage errors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"

# Request frames: text (invalid UTF-8 as U+FFFD), seq from 1, the tokenizer's fingerprint
# and name, the sampling options unless a JSONL line sets the key.
printf 'Once upon\n\nb\377d\n' | fi-tokenize -m tiny --no-add-special --temp 0 --seed 9 | fi-frame > "$work/r.json" ||
	fail "fi-tokenize"
jq -e -s 'length == 3 and [.[].seq] == [1, 2, 3] and [.[].type] == ["request", "error", "request"] and
	.[0].text == "Once upon" and .[2].text == "b\ufffdd" and .[1].prompt == "" and
	.[0].temperature == 0 and .[0].seed == 9 and (.[0] | has("top_k") | not) and
	.[0].tokenizer.name == "tiny" and .[0].tokenizer == .[2].tokenizer' "$work/r.json" > /dev/null ||
	fail "request frames: $(cat "$work/r.json")"
printf '%s\n' '{"prompt":"a","temperature":0.5}' '{"prompt":"b"}' |
	fi-tokenize -m tiny --jsonl --temp 0 --top-k 3 | fi-frame > "$work/r.json" || fail "--jsonl"
jq -e -s '[.[].temperature] == [0.5, 0] and [.[].top_k] == [3, 3]' "$work/r.json" > /dev/null ||
	fail "JSONL keys over options: $(cat "$work/r.json")"
# The fingerprint is the tokenizer's: the image and the directory's tokenizer.json agree.
fi-tokenize -m "$root/models/tiny/tokenizer.json" < /dev/null > /dev/null || fail "tokenizer.json"
a=$(echo x | fi-tokenize -m tiny | fi-frame | jq -r .tokenizer.sha256)
b=$(echo x | fi-tokenize -m "$root/models/tiny/tokenizer.json" | fi-frame | jq -r .tokenizer.sha256)
[ "$a" = "$b" ] && [ ${#a} = 64 ] || fail "fingerprints differ: $a $b"
echo "ok: request frames"

# Results crafted by hand: b's text arrives before a's end; a is written whole, then b.
printf '%s\n' '{"v":1,"type":"token","id":"a","token":1,"index":0,"text":"A1"}' \
	'{"v":1,"type":"token","id":"b","token":1,"index":0,"text":"B1"}' \
	'{"v":1,"type":"done","id":"a","seq":2,"finish":"stop","prompt":"pa "}' \
	'{"v":1,"type":"token","id":"b","token":1,"index":1,"text":"B2"}' \
	'{"v":1,"type":"token","id":"c","token":1,"index":0,"text":"C1\n"}' \
	'{"v":1,"type":"error","id":"c","seq":3,"code":"range","message":"request '"'c'"': too long","prompt":"pc "}' \
	'{"v":1,"type":"done","id":"c","finish":"error"}' \
	'{"v":1,"type":"done","id":"b","seq":1,"finish":"length","counts":{"prompt_tokens":2,"gen_tokens":2},"timings":{"ttft_ms":1.23456789},"prompt":"pb "}' |
	fi-frame -e > "$work/res.mp" || fail "crafted frames"
fi-tokenize -m tiny -d < "$work/res.mp" > "$work/t" 2> "$work/err"; rc=$?
[ $rc = 3 ] || fail "an error frame: exit $rc (want 3: some requests failed)"
printf 'A1\nB1B2\nC1\n\n' | cmp -s - "$work/t" || fail "in request order: $(od -c "$work/t")"
grep -q "request 'c': too long" "$work/err" || fail "error not reported: $(cat "$work/err")"
fi-tokenize -m tiny -d --ordered --echo < "$work/res.mp" > "$work/t" 2> /dev/null
printf 'pb B1B2\npa A1\npc C1\n\n' | cmp -s - "$work/t" || fail "--ordered --echo: $(od -c "$work/t")"
fi-tokenize -m tiny -d --interleave -0 < "$work/res.mp" > "$work/t" 2> /dev/null
printf 'A1\000C1\n\000B1B2\000' | cmp -s - "$work/t" || fail "--interleave -0: $(od -c "$work/t")"
fi-tokenize -m tiny -d --sep '\t|\\\n' < "$work/res.mp" > "$work/t" 2> /dev/null
printf 'A1\t|\\\nB1B2\t|\\\nC1\n\t|\\\n' | cmp -s - "$work/t" || fail "--sep: $(od -c "$work/t")"
fi-tokenize -m tiny -d --jsonl --ordered < "$work/res.mp" > "$work/t.jsonl" 2> /dev/null
jq -e -s '[.[].id] == ["b", "a", "c"] and
	.[0] == {"id": "b", "seq": 1, "prompt": "pb ", "completion": "B1B2", "finish": "length",
		 "counts": {"prompt_tokens": 2, "gen_tokens": 2, "cached_tokens": 0},
		 "timings": {"ttft_ms": 1.235}} and
	.[2].finish == "error" and .[2].error == {"code": "range", "message": "request '"'c'"': too long"} and
	.[2].completion == "C1\n"' "$work/t.jsonl" > /dev/null || fail "--jsonl --ordered: $(cat "$work/t.jsonl")"
fi-tokenize -m tiny -d --jsonl < "$work/res.mp" 2> /dev/null | jq -r .id | tr '\n' ' ' > "$work/t"
[ "$(cat "$work/t")" = "a c b " ] || fail "--jsonl without --ordered: as they finish: $(cat "$work/t")"
# A request whose done frame never came is still written, with finish null.
printf '%s\n' '{"v":1,"type":"token","id":"x","token":1,"index":0,"text":"half"}' | fi-frame -e |
	fi-tokenize -m tiny -d --jsonl > "$work/t" || fail "unfinished: exit $?"
jq -e '.id == "x" and .completion == "half" and .finish == null and .counts.gen_tokens == 1' \
	"$work/t" > /dev/null || fail "unfinished: $(cat "$work/t")"
echo "ok: orders, echo, separators, JSONL"

# --ordered holds at most 4096 results: one missing number is given up with a message.
seq 2 4200 | awk '{printf "{\"v\":1,\"type\":\"done\",\"id\":\"r%d\",\"seq\":%d,\"finish\":\"stop\"}\n", $1, $1}' |
	fi-frame -e | fi-tokenize -m tiny -d --jsonl --ordered > "$work/t" 2> "$work/err" || fail "window"
[ "$(wc -l < "$work/t")" = 4199 ] || fail "window: $(wc -l < "$work/t") results"
jq -r .seq "$work/t" | sort -n -c || fail "window: out of order"
grep -q "4096 results are waiting for request number 1," "$work/err" || fail "window message: $(cat "$work/err")"
[ "$(grep -c . "$work/err")" = 1 ] || fail "window: more than one message: $(cat "$work/err")"
echo "ok: --ordered window"

# Many failed requests: the first of a code is shown, the rest counted.
seq 1 20 | awk '{printf "{\"v\":1,\"type\":\"error\",\"id\":\"%d\",\"code\":\"mismatch\",\"message\":\"request '"'"'%d'"'"': another tokenizer\"}\n", $1, $1}' |
	fi-frame -e | fi-tokenize -m tiny -d > /dev/null 2> "$work/err"
[ $? = 3 ] || fail "failed requests: exit status (want 3)"
[ "$(grep -c . "$work/err")" = 2 ] && grep -q "request '1': another tokenizer" "$work/err" &&
	grep -q "19 more requests failed (code mismatch)" "$work/err" ||
	fail "failed requests: $(cat "$work/err")"
echo "ok: error frames reported once per code"

# A real run: prompts with their completions, in input order, greedy by fi-tokenize --temp 0.
printf '%s\n' 'The function returns' 'def main():' 'import os' > "$work/p.txt"
fi-tokenize -m tiny --temp 0 < "$work/p.txt" | fi-decode -m tiny -n 12 2> /dev/null |
	fi-tokenize -m tiny -d --jsonl --ordered > "$work/j" || fail "pipeline"
jq -r .prompt "$work/j" | cmp -s - "$work/p.txt" || fail "prompts: $(cat "$work/j")"
fi-tokenize -m tiny < "$work/p.txt" | fi-decode -m tiny -n 12 --temp 0 2> /dev/null |
	fi-tokenize -m tiny -d -0 > "$work/z" || fail "pipeline -0"
jq -j '.completion + "\u0000"' "$work/j" | cmp -s - "$work/z" || fail "JSONL and -0 texts differ"
# A stop string completed by the first token: nothing of it in the text (the token frame
# carries an empty piece, so -d does not decode the id and bring the cut text back).
echo 'def main(): 1' | fi-tokenize -m tiny --temp 0 | fi-decode -m tiny -n 8 --stop . 2> /dev/null |
	fi-tokenize -m tiny -d --jsonl > "$work/j" || fail "stop at the first token"
jq -e '.completion == "" and .finish == "stop" and .counts.gen_tokens == 1' "$work/j" > /dev/null ||
	fail "stop at the first token: $(cat "$work/j")"
echo "ok: pipeline"

# Usage: decode-only options without -d, and exclusive ones, exit 2.
for args in "--ordered" "--echo" "-0" "--sep x" "-d --ordered --interleave" "-d -0 --sep x" \
	"-d --jsonl --echo" "-d --temp 0" "--ids --temp 0" "--temp -1" "--top-p 2" "--sep \\q -d"; do
	fi-tokenize -m tiny $args < /dev/null > /dev/null 2>&1
	[ $? = 2 ] || fail "fi-tokenize $args: want exit 2"
done
echo "all fi-tokenize result checks passed"
