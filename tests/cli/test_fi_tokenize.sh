#!/bin/sh
# fi-tokenize: usage against fi-tokenize(1), every EXAMPLES line, ids against Hugging Face
# (plain, --special, invalid UTF-8, chat template), frames, -d in order and interleaved,
# a text -> frames -> text round trip, usage and runtime failures.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
shared=${FI_TEST_SHARED:-../shared}
l3=$shared/corpus/tokenizers/llama-3
stories=$shared/corpus/models/stories260K-hf
if [ ! -f "$l3/tokenizer.json" ] || [ ! -f "$stories/model.safetensors" ]; then
	echo "SKIPPED: corpus tokenizers absent ($l3)" >&2
	exit 77
fi
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$l3" "$work/llama-3"
ln -s "$stories" "$work/stories260K-hf"

# -h prints the SYNOPSIS (compared with whitespace collapsed).
fi-tokenize -h > "$work/usage" || fail "-h exit $?"
if command -v nroff > /dev/null 2>&1 && command -v col > /dev/null 2>&1; then
	nroff -mdoc "$root/man/man1/fi-tokenize.1" 2>/dev/null | col -b |
		sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//' > "$work/syn"
	sed 's/^usage: //; s/^ *fi-tokenize/fi-tokenize/' "$work/usage" | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//' | diff - "$work/syn" || fail "fi-tokenize -h differs from the SYNOPSIS"
fi

# Every EXAMPLES line, in order.
printf 'Hello world\nOnce upon a time\n' > "$work/prompts.txt"
printf '%s\n' '[{"role":"user","content":"Hi!"}]' > "$work/chats.jsonl"
printf '%s\n' '{"id":"q","prompt":"Hello world","max_tokens":5,"temperature":0.5,"stop":["x"],"stop_ids":[7]}' \
	> "$work/requests.jsonl"
sed -n '/^\.Sh EXAMPLES/,/^\.Sh /s/^\.Dl \$ //p' "$root/man/man1/fi-tokenize.1" > "$work/examples"
[ "$(wc -l < "$work/examples")" -ge 6 ] || fail "fi-tokenize(1) has too few examples"
i=0
while IFS= read -r line; do
	i=$((i + 1))
	(cd "$work" && sh -c "$line") > "$work/ex$i" 2> "$work/err" ||
		fail "example '$line' exited $?: $(cat "$work/err")"
	echo "ok: $line"
done < "$work/examples"
# Expected values come from Hugging Face tokenizers / transformers.
printf '128000 9906 1917\n128000 12805 5304 264 892\n' | cmp -s - "$work/ex1" || fail "--ids: $(cat "$work/ex1")"
printf '3\n5\n' | cmp -s - "$work/ex2" || fail "--count: $(cat "$work/ex2")"
echo '128000 128006 882 128007 271 13347 0 128009 128006 78191 128007 271' | cmp -s - "$work/ex3" ||
	fail "--chat: $(cat "$work/ex3")"
fi-frame < "$work/requests.msgpack" > "$work/req.json" || fail "requests.msgpack is not frames"
jq -e '.type == "request" and .id == "q" and .tokens == [128000, 9906, 1917] and
	.max_tokens == 5 and .temperature == 0.5 and .stop == ["x"] and .stop_ids == [7] and
	.text == "Hello world" and .seq == 1 and .tokenizer.name == "llama-3" and
	(.tokenizer.sha256 | length) == 64' "$work/req.json" > /dev/null ||
	fail "--jsonl frame: $(cat "$work/req.json")"
[ "$(grep -c . "$work/ex6")" -eq 2 ] || fail "pipeline example: $(cat "$work/ex6")"
jq -r .prompt "$work/results.jsonl" | cmp -s - "$work/prompts.txt" &&
	jq -e -s 'length == 2 and [.[].seq] == [1, 2] and all(.[]; .counts.gen_tokens > 0)' \
	"$work/results.jsonl" > /dev/null || fail "batch example: $(cat "$work/results.jsonl")"
# --echo: each text begins with its prompt (the greedy continuations of ex6)
paste -d '\n' "$work/prompts.txt" "$work/ex6" | paste -d '' - - | cmp -s - "$work/ex8" ||
	fail "--echo example: $(cat "$work/ex8")"

# Special-token text is text unless --special; invalid UTF-8 reads as U+FFFD.
out=$(echo 'Hello <|eot_id|> world' | fi-tokenize -m "$l3" --ids)
[ "$out" = "128000 9906 83739 68 354 851 91 29 1917" ] || fail "plain special text: $out"
out=$(echo 'Hello <|eot_id|> world' | fi-tokenize -m "$l3" --ids --special)
[ "$out" = "128000 9906 220 128009 1917" ] || fail "--special: $out"
out=$(printf 'caf\351 cr\303\250me\n' | fi-tokenize -m "$l3" --ids)
[ "$out" = "128000 69896 5809 1589 25253" ] || fail "invalid UTF-8: $out"
out=$(printf 'a\nb' | fi-tokenize -m "$l3" --whole --no-add-special --ids)
[ "$out" = "64 198 65" ] || fail "--whole --no-add-special: $out"
out=$(echo '[{"role":"system","content":"Be brief."},{"role":"user","content":"What is 2+2? <|eot_id|>"}]' |
	fi-tokenize -m "$l3" --chat --ids)
[ "$out" = "128000 128006 9125 128007 271 3513 10015 13 128009 128006 882 128007 271 3923 374 220 17 10 17 30 220 128009 128009 128006 78191 128007 271" ] ||
	fail "chat with a system message: $out"

# Frames: ids and numbering; an empty line is an error frame, the rest go on.
printf 'Hello world\n\nsecond\n' | fi-tokenize -m "$l3" --no-add-special | fi-frame > "$work/f.json"
jq -e -s '[.[].type] == ["request", "error", "request"] and
	.[0].id == "1" and .[0].tokens == [9906, 1917] and .[1].id == "2" and
	.[2].id == "3" and .[2].tokens == [5686] and [.[].seq] == [1, 2, 3] and
	.[1].prompt == "" and .[2].text == "second"' "$work/f.json" > /dev/null ||
	fail "frames: $(cat "$work/f.json")"

# -d: interleaved token frames of two requests; in order, then as they finish.
printf '%s\n' '{"v":1,"type":"token","id":"a","token":9906,"index":0}' \
	'{"v":1,"type":"token","id":"b","token":5686,"index":0}' \
	'{"v":1,"type":"token","id":"a","token":1917,"index":1}' \
	'{"v":1,"type":"done","id":"b","finish":"stop"}' \
	'{"v":1,"type":"token","id":"a","token":11,"index":2}' \
	'{"v":1,"type":"token","id":"a","token":220,"index":3}' \
	'{"v":1,"type":"token","id":"a","token":172,"index":4}' \
	'{"v":1,"type":"token","id":"a","token":253,"index":5}' \
	'{"v":1,"type":"token","id":"a","token":246,"index":6}' \
	'{"v":1,"type":"token","id":"a","token":222,"index":7}' \
	'{"v":1,"type":"done","id":"a","finish":"stop"}' | fi-frame -e > "$work/tokens.msgpack"
fi-tokenize -m "$l3" -d < "$work/tokens.msgpack" > "$work/d1" || fail "-d exit $?"
printf 'Hello world, \360\237\230\200\nsecond\n' | cmp -s - "$work/d1" || fail "-d: $(od -c "$work/d1")"
fi-tokenize -m "$l3" -d --interleave < "$work/tokens.msgpack" > "$work/d2" || fail "--interleave exit $?"
printf 'second\nHello world, \360\237\230\200\n' | cmp -s - "$work/d2" || fail "--interleave: $(cat "$work/d2")"

# Round trip: text -> request frames -> token frames -> text.
printf 'The quick brown fox\n  spaces   and\ttabs\nemoji \360\237\221\215\360\237\217\275 and \346\227\245\346\234\254\350\252\236\n' > "$work/rt.txt"
fi-tokenize -m "$l3" < "$work/rt.txt" | fi-frame | jq -c '.id as $id |
	(.tokens | to_entries[] | {v: 1, type: "token", id: $id, token: .value, index: .key}),
	{v: 1, type: "done", id: $id, finish: "stop"}' |
	fi-frame -e | fi-tokenize -m "$l3" -d --skip-special > "$work/rt.out" || fail "round trip exit"
cmp -s "$work/rt.txt" "$work/rt.out" || fail "round trip differs: $(cat "$work/rt.out")"

# Failures: usage (2), missing model (1), bad JSONL line (1, with an error frame).
fi-tokenize > /dev/null 2>&1; [ $? = 2 ] || fail "no -m: want exit 2"
fi-tokenize -m "$l3" --ids --count < /dev/null > /dev/null 2>&1; [ $? = 2 ] || fail "--ids --count: want 2"
fi-tokenize -m "$l3" -d --ids < /dev/null > /dev/null 2>&1; [ $? = 2 ] || fail "-d --ids: want 2"
fi-tokenize -m "$work/nonexistent" --ids < /dev/null 2> "$work/err"; [ $? = 1 ] || fail "missing model: want 1"
grep -q "^fi-tokenize: " "$work/err" || fail "missing model message: $(cat "$work/err")"
echo '{ "tokenizer": broken' > "$work/bad.json"
fi-tokenize -m "$work/bad.json" --ids < /dev/null 2> "$work/err"; [ $? = 1 ] || fail "bad tokenizer.json: want 1"
grep -q "tokenizer.json" "$work/err" || fail "bad tokenizer.json message: $(cat "$work/err")"
printf '%s\n' 'not json' '{"prompt":"ok"}' | fi-tokenize -m "$l3" --jsonl 2> "$work/err" | fi-frame > "$work/f.json"
[ $? = 0 ] || fail "bad jsonl: frames"
jq -e -s '[.[].type] == ["error", "request"] and (.[0] | has("prompt") | not) and
	[.[].seq] == [1, 2]' "$work/f.json" > /dev/null || fail "bad jsonl frames: $(cat "$work/f.json")"
exit 0
