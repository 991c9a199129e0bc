#!/bin/sh
# fi-decode with text on the embedded model (models/tiny, converted on the fly): text prompts
# encoded as fi-tokenize encodes them; token frames whose text pieces make the decode of the
# generated ids; stop strings across token boundaries (HF semantics: the completing token is
# emitted, the text is cut before the stop string); stream false; fi-prefill | fi-decode
# equal to fi-decode alone; --prompt and --stop; a model without a tokenizer refuses text
# prompts and stop strings with error frames.
# The references are fi-tokenize's: its encoder and decoder equal Hugging Face tokenizers'
# on the committed vectors (tests/unit/test_tokenizer*), so no Python is needed here.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
m=$root/models/tiny
fx=$root/tests/fixtures/hf

# 1. Text prompts, greedy, no stop: the same as the token prompt fi-tokenize makes, and the
#    text pieces are the decode of the generated ids.
P='def main():'
U='naïve café — 日本語'
jq -n -c --arg p "$P" --arg u "$U" '{v: 1, type: "request", temperature: 0, max_tokens: 40} |
	(. + {id: "a", text: $p}), (. + {id: "b", text: $p, stream: false}),
	(. + {id: "u", text: $u, max_tokens: 12})' | fi-frame -e |
	fi-decode -m "$m" > "$work/a.mp" 2> /dev/null || fail "text prompts: exit $?"
fi-frame < "$work/a.mp" > "$work/a.out"
printf '%s\n' "$P" | fi-tokenize -m "$m" | fi-decode -m "$m" -n 40 --temp 0 > "$work/t.mp" 2> /dev/null ||
	fail "fi-tokenize | fi-decode"
fi-frame < "$work/t.mp" > "$work/t.out"
# the decode of a request's ids alone (its frames without their text pieces)
ids_text() { jq -c --arg id "$2" 'select(.id == $id and (.type == "token" or .type == "done")) |
	del(.text)' "$1" | fi-frame -e | fi-tokenize -m "$m" -d | jq -R -s 'rtrimstr("\n")'; }
na=$(printf '%s\n' "$P" | fi-tokenize -m "$m" --count)
nu=$(printf '%s\n' "$U" | fi-tokenize -m "$m" --count)
jq -e -s --argjson na "$na" --argjson nu "$nu" --argjson da "$(ids_text "$work/a.out" a)" \
	--argjson du "$(ids_text "$work/a.out" u)" --slurpfile t "$work/t.out" '
	def toks($id): [.[] | select(.type == "token" and .id == $id)];
	def done($id): [.[] | select(.type == "done" and .id == $id)];
	def text($id): ([toks($id)[] | .text // ""] | add // "") + (done($id)[0].text // "");
	done("a")[0] as $a | done("b")[0] as $b | done("u")[0] as $u |
	(done("a") | length) == 1 and $a.counts.prompt_tokens == $na and $a.finish == "length" and
	(toks("a") | length) == 40 and text("a") == $da and
	all(toks("a")[]; (.text // "") | contains("\ufffd") | not) and
	all(toks("a")[]; has("text")) and ([toks("a")[] | select(.text != "")] | length) >= 20 and
	(toks("b") | length) == 0 and $b.tokens == [toks("a")[].token] and $b.text == text("a") and
	$u.counts.prompt_tokens == $nu and text("u") == $du and
	[$t[] | select(.type == "token") | .token] == [toks("a")[].token]' "$work/a.out" \
	> /dev/null || fail "text frames: $(cat "$work/a.out")"
# Stop strings for the next runs, chosen from this output: one spanning a token boundary in
# the middle (the end of a piece of at least 2 characters and the start of the next), and
# the expected cut and token count.
jq -s -c '[.[] | select(.type == "token" and .id == "a")] as $t | [$t[] | .text // ""] as $p |
	(($p | add) + ([.[] | select(.type == "done" and .id == "a")][0].text // "")) as $text |
	first(range(6; ($p | length) - 1) | select(($p[.] | length) >= 2 and ($p[. + 1] | length) >= 2)) as $k |
	($p[:$k + 1] | add | length) as $off | $text[$off - 2:$off + 2] as $stop |
	{stop: $stop, ids: [$t[].token], text: $text,
	 cut: first(range(0; $text | length) | select($text[.:. + ($stop | length)] == $stop)),
	 n: first(range(1; ($p | length) + 1) | select($p[:.] | add | contains($stop)))}' \
	"$work/a.out" > "$work/stop.json" || fail "no stop string in: $(cat "$work/a.out")"
jq -e '.stop | length == 4' "$work/stop.json" > /dev/null || fail "stop: $(cat "$work/stop.json")"
echo "ok: text prompts and pieces"

# 2. Stop strings: the earliest one ends generation; the text stops before it; the token
#    that completed it is the last one; nothing of it leaks into a piece.
jq -c --arg p "$P" '.stop as $s | {v: 1, type: "request", temperature: 0, max_tokens: 40, text: $p} |
	(. + {id: "s", stop: ["\u00a7never\u00a7", $s]}), (. + {id: "n", stop: [$s], stream: false}),
	(. + {id: "z", stop: ["\u00a7never\u00a7"]})' "$work/stop.json" | fi-frame -e > "$work/s.req"
fi-decode -m "$m" < "$work/s.req" > "$work/s.mp" 2> /dev/null || fail "stop strings: exit $?"
fi-frame < "$work/s.mp" > "$work/s.out"
jq -e -s --slurpfile s "$work/stop.json" '$s[0] as $s |
	def toks($id): [.[] | select(.type == "token" and .id == $id)];
	def done($id): [.[] | select(.type == "done" and .id == $id)][0];
	def text($id): ([toks($id)[] | .text // ""] | add // "") + (done($id).text // "");
	[toks("s")[].token] == $s.ids[:$s.n] and done("s").finish == "stop" and
	done("s").counts.gen_tokens == $s.n and text("s") == $s.text[:$s.cut] and
	all(toks("s")[]; (.text // "") | contains($s.stop) | not) and
	done("n").tokens == $s.ids[:$s.n] and done("n").text == $s.text[:$s.cut] and
	done("z").finish == "length" and text("z") == $s.text' "$work/s.out" > /dev/null ||
	fail "stop frames: $(cat "$work/s.out")"
echo "ok: stop strings ($(jq -r '"\(.stop | @json) after \(.n) of \(.ids | length) tokens"' "$work/stop.json"))"

# 3. fi-prefill | fi-decode with text prompts and stop strings equals fi-decode alone.
fi-prefill -m "$m" --arena-size 16M < "$work/s.req" 2> /dev/null | fi-decode -m "$m" > "$work/p.mp" 2> /dev/null ||
	fail "prefill | decode: exit $?"
frames_same "$work/s.mp" "$work/p.mp" || fail "prefill | decode differs with text prompts"
echo "ok: fi-prefill | fi-decode"
# Prompts computed 2 tokens per step, alongside running requests: the same frames.
fi-decode -m "$m" --prefill-chunk 2 < "$work/s.req" > "$work/c.mp" 2> /dev/null || fail "--prefill-chunk"
frames_same "$work/s.mp" "$work/c.mp" || fail "--prefill-chunk changes the output"
echo "ok: --prefill-chunk"

# 4. --prompt prints the text; --stop applies to it and to requests without stop strings.
stop=$(jq -r .stop "$work/stop.json")
fi-decode -m "$m" --prompt "$P" -n 40 --temp 0 > "$work/p1" || fail "--prompt: exit $?"
fi-decode -m "$m" --prompt "$P" -n 40 --temp 0 --stop "$stop" > "$work/p2" || fail "--stop"
jq -j '.text, "\n"' "$work/stop.json" | cmp -s - "$work/p1" || fail "--prompt output: $(cat "$work/p1")"
jq -j '.text[:.cut], "\n"' "$work/stop.json" | cmp -s - "$work/p2" || fail "--stop output: $(cat "$work/p2")"
echo '{"v":1,"type":"request","id":"d","text":"def main():","max_tokens":40,"temperature":0}' |
	fi-frame -e | fi-decode -m "$m" --stop "$stop" 2> /dev/null | fi-frame > "$work/d.out" ||
	fail "--stop with frames"
grep -q '"finish":"stop"' "$work/d.out" || fail "--stop default: $(cat "$work/d.out")"
echo "ok: --prompt, --stop"

# 5. A model without a tokenizer: text prompts and stop strings get error frames naming it;
#    token prompts still work.
printf '%s\n' '{"v":1,"type":"request","id":"x","text":"hello"}' \
	'{"v":1,"type":"request","id":"y","tokens":[1,5],"stop":["ab"],"max_tokens":2}' \
	'{"v":1,"type":"request","id":"k","tokens":[1,5],"max_tokens":2}' |
	fi-frame -e | fi-decode -m "$fx/llama" --backend cpu 2> /dev/null | fi-frame > "$work/x.out" ||
	fail "no tokenizer: exit $?"
jq -e -s '(map(select(.type == "error")) | map({(.id): .}) | add) as $err |
	[.[] | select(.type == "done") | .id] == ["k"] and
	([.[] | select(.type == "done")][0].counts.gen_tokens == 2) and
	all("x", "y"; $err[.].code == "unsupported" and ($err[.].message | contains("tokenizer"))) and
	all(.[] | select(.type == "token"); has("text") | not)' "$work/x.out" > /dev/null ||
	fail "no tokenizer frames: $(cat "$work/x.out")"
fi-decode -m "$fx/llama" --backend cpu --prompt hello > /dev/null 2> "$work/err"
[ $? -eq 1 ] && grep -q "^fi-decode: --prompt: .*tokenizer" "$work/err" ||
	fail "--prompt without a tokenizer: $(cat "$work/err")"
fi-decode -m "$m" --prompt x --tokens 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "--prompt with --tokens"
fi-decode -m "$m" --prompt x --stop '' > /dev/null 2>&1; [ $? -eq 2 ] || fail "empty --stop"
echo "all fi-decode text checks passed"
