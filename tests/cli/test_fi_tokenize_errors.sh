#!/bin/sh
# fi-tokenize on bad input lines: each one is an error frame for that line and a message
# naming it, every later line is still encoded, and the exit status is 3 ("some requests
# failed"). Before, the first frame it could not encode ended the run with status 1 and
# nothing on stderr.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v python3 > /dev/null || { echo "SKIPPED: python3 absent" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fi-load --name tiny "$root/models/tiny" > /dev/null 2>&1 || fail "fi-load tiny"

# $1: JSONL input; runs fi-tokenize --jsonl, leaves frames as JSON in $work/f.json, the
# exit status in $rc and stderr in $work/err.
tok() {
	printf '%s\n' "$1" > "$work/in.jsonl"
	fi-tokenize -m tiny --jsonl < "$work/in.jsonl" > "$work/f.mp" 2> "$work/err"
	rc=$?
	fi-frame < "$work/f.mp" > "$work/f.json" || fail "output is not frames"
}
# $1: python assertions over fs (the frames), ids and types
check() {
	python3 - "$work/f.json" "$1" <<'PY' || fail "frames: $(cat "$work/f.json")"
import json, sys
fs = [json.loads(l) for l in open(sys.argv[1])]
types = [f["type"] for f in fs]
ids = [f["id"] for f in fs]
exec(sys.argv[2])
PY
}

# The issue's example: an empty id, then a good line.
printf '{"id":"","prompt":"c"}\n{"prompt":"after"}\n' > "$work/in.jsonl"
fi-tokenize -m tiny --jsonl < "$work/in.jsonl" > "$work/f.mp" 2> "$work/err"; rc=$?
[ $rc = 3 ] || fail "empty id: exit $rc, want 3"
[ -s "$work/f.mp" ] || fail "empty id: no output at all"
fi-frame < "$work/f.mp" > "$work/f.json"
check 'assert types == ["error", "request"] and ids == ["", "2"], fs
assert fs[0]["code"] == "format" and "line 1" in fs[0]["message"], fs[0]'
grep -q "^fi-tokenize: line 1: request '': .*without an id" "$work/err" ||
	fail "empty id message: $(cat "$work/err")"
grep -q "1 of 2 requests failed" "$work/err" || fail "summary: $(cat "$work/err")"

# An over-long id (300 bytes): the error carries its first 256 bytes.
long=$(printf 'x%.0s' $(seq 300))
tok "{\"id\":\"$long\",\"prompt\":\"a\"}
{\"id\":\"b\",\"prompt\":\"b\"}"
[ $rc = 3 ] || fail "long id: exit $rc"
check 'assert types == ["error", "request"] and ids == ["x" * 256, "b"], fs'
grep -q "line 1: request 'xxxx.*\.\.\.': frame: key 'id': 300 bytes exceed the limit of 256" "$work/err" ||
	fail "long id message: $(cat "$work/err")"

# More than 64 stop strings, and stop strings over 1024 bytes.
stops=$(python3 -c 'import json; print(json.dumps(["s"] * 65))')
big=$(python3 -c 'import json; print(json.dumps(["s" * 1025]))')
tok "{\"id\":\"s\",\"prompt\":\"a\",\"stop\":$stops}
{\"id\":\"t\",\"prompt\":\"a\",\"stop\":$big}
{\"id\":\"u\",\"prompt\":\"a\",\"stop\":[\"ok\"]}"
[ $rc = 3 ] || fail "stops: exit $rc"
check 'assert types == ["error", "error", "request"] and ids == ["s", "t", "u"], fs
assert fs[2]["stop"] == ["ok"], fs'

# A prompt over the model's context (1024 tokens).
words=$(printf 'hello %.0s' $(seq 1100))
tok "{\"id\":\"big\",\"prompt\":\"$words\"}
{\"id\":\"small\",\"prompt\":\"hello\"}"
[ $rc = 3 ] || fail "context: exit $rc"
check 'assert types == ["error", "request"] and ids == ["big", "small"], fs
assert fs[0]["code"] == "range" and "does not fit the context of 1024" in fs[0]["message"], fs'

# Not JSON, no prompt, an empty prompt: each answered, the rest go on; plain lines too.
tok 'not json
{"id":"np"}
{"id":"e","prompt":"","no_add":1}
{"id":"ok","prompt":"fine"}'
[ $rc = 3 ] || fail "mixed: exit $rc"
check 'assert types == ["error", "error", "request", "request"], fs
assert ids == ["1", "np", "e", "ok"], fs'
printf 'good\n' | fi-tokenize -m tiny --no-add-special > /dev/null 2>&1 || fail "plain good line"
printf '\n' | fi-tokenize -m tiny --no-add-special > "$work/f.mp" 2> "$work/err"; rc=$?
[ $rc = 3 ] || fail "empty plain line: exit $rc"
grep -q "line 1: request '1': empty prompt" "$work/err" || fail "empty line: $(cat "$work/err")"

# --ids and --count: the bad line is reported, the others printed, status 3.
printf '%s\n' '{"prompt":"a"}' 'oops' '{"prompt":"b"}' |
	fi-tokenize -m tiny --jsonl --count > "$work/out" 2> "$work/err"; rc=$?
[ $rc = 3 ] || fail "--count: exit $rc"
[ "$(wc -l < "$work/out")" = 2 ] || fail "--count lines: $(cat "$work/out")"
grep -q "line 2: not a JSON object" "$work/err" || fail "--count message: $(cat "$work/err")"

# A model directory whose tokenizer does not load: status 1 and the reason (what was read
# of the directory before, tokenizer_config.json, is freed: 131,074 bytes leaked under ASan).
mkdir "$work/badtok"
cp "$root/models/tiny/tokenizer_config.json" "$work/badtok/"
echo '{ "model": broken' > "$work/badtok/tokenizer.json"
fi-tokenize -m "$work/badtok" < /dev/null > /dev/null 2> "$work/err"; rc=$?
[ $rc = 1 ] || fail "broken tokenizer: exit $rc: $(cat "$work/err")"
grep -q "^fi-tokenize: .*tokenizer.json" "$work/err" || fail "broken tokenizer: $(cat "$work/err")"
mkfifo "$work/badtok/chat_template.jinja"
timeout 10 fi-tokenize -m "$work/badtok" < /dev/null > /dev/null 2>&1; rc=$?
[ $rc = 1 ] || fail "a FIFO in the model directory: exit $rc"

# All good: status 0, nothing on stderr.
tok '{"id":"a","prompt":"x"}'
[ $rc = 0 ] || fail "good: exit $rc"
[ ! -s "$work/err" ] || fail "good: stderr: $(cat "$work/err")"
# An output that fails is status 1 (a runtime failure), not 3.
if [ -w /dev/full ]; then
	printf 'x\n' | fi-tokenize -m tiny > /dev/full 2> "$work/err"; rc=$?
	[ $rc = 1 ] || fail "full output: exit $rc"
	grep -q "No space left" "$work/err" || fail "full output: $(cat "$work/err")"
fi
exit 0
