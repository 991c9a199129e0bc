#!/bin/sh
# Loud failures, each with one clear message: text piped where frames are expected is refused
# whole by every frame reader (exit 1, no error frame per byte); frames are refused on a
# terminal by every frame writer unless -f (exit 1); requests made with another tokenizer
# are answered with error frames (code mismatch), one message naming both tokenizers, exit 3.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"
printf '%s\n' 'Once upon a time' 'The function returns' > "$work/p.txt"

# 1. Text into a frame reader.
msg="input is not fi frames: pipe text through fi-tokenize"
for cmd in "fi-decode -m tiny" "fi-prefill -m tiny" "fi-tokenize -m tiny -d" "fi-frame"; do
	echo "hello world" | $cmd > "$work/out" 2> "$work/err"; rc=$?
	[ $rc = 1 ] || fail "$cmd: text in: exit $rc"
	[ ! -s "$work/out" ] || fail "$cmd: text in: wrote $(od -c "$work/out" | head -3)"
	name=${cmd%% *}
	[ "$(grep -c . "$work/err")" = 1 ] && grep -q "^$name: .*$msg" "$work/err" ||
		fail "$cmd: text in: $(cat "$work/err")"
done
# An empty input is an empty stream, not text.
fi-decode -m tiny < /dev/null > "$work/out" 2> "$work/err" || fail "empty input: exit $?"
[ ! -s "$work/out" ] || fail "empty input wrote frames"
echo "ok: text is refused as frames"

# 2. Frames onto a terminal (script(1) runs the command on a pty), refused before the model
#    loads; -f writes them; text output (--prompt, fi-tokenize -d, fi-frame) is not refused.
command -v script > /dev/null || fail "script(1) absent (util-linux)"
fi-tokenize -m tiny < "$work/p.txt" > "$work/req.mp" || fail "fi-tokenize"
for cmd in "fi-tokenize -m tiny < $work/p.txt" "fi-decode -m tiny -n 2 < $work/req.mp" \
	"fi-prefill -m tiny < $work/req.mp" "fi-frame -e < /dev/null"; do
	script -qec "$cmd; echo rc=\$?" /dev/null > "$work/tty" 2>&1
	grep -q "frames not written to a terminal: pipe them into fi-frame or fi-tokenize -d, or use -f to force" "$work/tty" &&
		grep -q "rc=1" "$work/tty" || fail "$cmd on a terminal: $(cat "$work/tty")"
	[ "$(wc -c < "$work/tty")" -lt 200 ] || fail "$cmd wrote to the terminal: $(od -c "$work/tty" | head)"
	script -qec "${cmd%% <*} -f <${cmd#*<} > $work/forced; echo rc=\$?" /dev/null > "$work/tty" 2>&1
	grep -q "rc=0" "$work/tty" || fail "$cmd -f: $(cat "$work/tty")"
done
script -qec "fi-decode -m tiny -n 4 --temp 0 --prompt Once; echo rc=\$?" /dev/null > "$work/tty" 2>&1
grep -q "rc=0" "$work/tty" || fail "--prompt on a terminal: $(cat "$work/tty")"
echo "ok: frames are refused on a terminal"

# 3. Another tokenizer: the tiny model with the ids of a tokenizer whose two ids are swapped
#    (the same strings, other meanings).
mkdir "$work/other"
jq -c '.model.vocab |= (.["the"] as $a | .["and"] as $b | .["the"] = $b | .["and"] = $a)' \
	"$root/models/tiny/tokenizer.json" > "$work/other/tokenizer.json" || fail "other tokenizer"
fi-tokenize -m "$work/other" < "$work/p.txt" > "$work/other.mp" || fail "fi-tokenize other"
fi-decode -m tiny -n 4 < "$work/other.mp" > "$work/out.mp" 2> "$work/err"; rc=$?
[ $rc = 3 ] || fail "mismatch: fi-decode exit $rc"
[ "$(frames_count "$work/out.mp" error)" = 2 ] && [ "$(frames_count "$work/out.mp" token)" = 0 ] ||
	fail "mismatch frames: $(fi-frame < "$work/out.mp")"
fi-frame < "$work/out.mp" | jq -e -s 'all(.[]; .code == "mismatch") and [.[].prompt] ==
	["Once upon a time", "The function returns"]' > /dev/null || fail "mismatch frames"
[ "$(grep -c "tokenizer" "$work/err")" = 1 ] || fail "mismatch: one message: $(cat "$work/err")"
grep -q "the tokenizer of 'other' ([0-9a-f]\{12\}), and the model 'tiny' has another tokenizer ([0-9a-f]\{12\})" "$work/err" ||
	fail "mismatch message: $(cat "$work/err")"
fi-prefill -m tiny < "$work/other.mp" > "$work/out.mp" 2> "$work/err"; rc=$?
[ $rc = 3 ] && [ "$(frames_count "$work/out.mp" error)" = 2 ] && [ "$(grep -c "tokenizer" "$work/err")" = 1 ] ||
	fail "mismatch: fi-prefill exit $rc: $(cat "$work/err")"
# The same tokenizer, however it is given (store name, directory, tokenizer.json): accepted.
for t in tiny "$root/models/tiny" "$root/models/tiny/tokenizer.json"; do
	fi-tokenize -m "$t" < "$work/p.txt" | fi-decode -m tiny -n 2 > "$work/out.mp" 2> /dev/null ||
		fail "$t: exit $?"
	[ "$(frames_count "$work/out.mp" done)" = 2 ] || fail "$t: refused"
done
# In a pipeline: fi-decode's one message, fi-tokenize -d's first error and a count.
fi-tokenize -m "$work/other" < "$work/p.txt" | fi-decode -m tiny -n 4 2> "$work/err1" |
	fi-tokenize -m tiny -d --jsonl > "$work/j" 2> "$work/err2"
jq -e -s 'length == 2 and all(.[]; .finish == "error" and .error.code == "mismatch")' "$work/j" \
	> /dev/null || fail "mismatch results: $(cat "$work/j")"
[ "$(grep -c . "$work/err2")" = 2 ] && grep -q "1 more requests failed (code mismatch)" "$work/err2" ||
	fail "fi-tokenize -d messages: $(cat "$work/err2")"
echo "ok: another tokenizer is refused"
echo "all refusal checks passed"
