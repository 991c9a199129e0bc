#!/bin/sh
# fi-frame: usage against fi-frame(1), every EXAMPLES line, frames -> JSON -> frames byte for
# byte on real streams, -t and --id in both directions, bad frames and bad lines reported and
# skipped, keys outside the schema named, text refused as frames, frames refused on a
# terminal unless -f, usage errors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"

# -h prints the SYNOPSIS (compared with whitespace collapsed).
fi-frame -h > "$work/usage" || fail "-h exit $?"
if command -v nroff > /dev/null 2>&1 && command -v col > /dev/null 2>&1; then
	nroff -mdoc "$root/man/man1/fi-frame.1" 2> /dev/null | col -b |
		sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//' > "$work/syn"
	sed 's/^usage: //' "$work/usage" | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//' |
		diff - "$work/syn" || fail "fi-frame -h differs from the SYNOPSIS"
fi

# Every EXAMPLES line, in order, with the files they name.
printf '%s\n' 'The function returns' 'This module provides' 'def main():' > "$work/prompts.txt"
sed -n '/^\.Sh EXAMPLES/,/^\.Sh /{/^\.Bd/,/^\.Ed/p}' "$root/man/man1/fi-frame.1" | sed '1d;$d' \
	> "$work/requests.jsonl"
[ "$(wc -l < "$work/requests.jsonl")" = 2 ] || fail "requests.jsonl of the EXAMPLES: $(cat "$work/requests.jsonl")"
sed -n '/^\.Sh EXAMPLES/,/^\.Sh /s/^\.Dl \$ //p' "$root/man/man1/fi-frame.1" > "$work/examples"
[ "$(wc -l < "$work/examples")" -ge 6 ] || fail "fi-frame(1) has too few examples"
i=0
while IFS= read -r line; do
	i=$((i + 1))
	(cd "$work" && sh -c "$line") > "$work/ex$i" 2> "$work/err" ||
		fail "example '$line' exited $?: $(cat "$work/err")"
	echo "ok: $line"
done < "$work/examples"
jq -e -s 'length == 3 and all(.[]; .type == "request" and (.tokens | length) > 1)' "$work/ex1" \
	> /dev/null || fail "example 1: $(cat "$work/ex1")"
[ "$(cat "$work/ex4")" = "$(printf '16\n16\n16')" ] || fail "example 4: $(cat "$work/ex4")"
fi-tokenize -m tiny -d --jsonl < "$work/out.msgpack" | jq -j 'select(.id == "2") | .completion' > "$work/t2"
cmp -s "$work/t2" "$work/ex5" || fail "example 5: '$(cat "$work/ex5")' is not '$(cat "$work/t2")'"
[ "$(frames_count "$work/out2.msgpack" done)" = 2 ] || fail "example 6: $(fi-frame < "$work/out2.msgpack")"
[ "$(frames_count "$work/d.mp" token)" = 0 ] && [ "$(frames_count "$work/d.mp" done)" = 3 ] ||
	fail "example 7"

# Real streams come back byte for byte: requests (with text, seq, tokenizer), prefilled
# requests (kv references, sampling keys), and generations (token pieces, done frames).
fi-tokenize -m tiny --seed 7 < "$work/prompts.txt" > "$work/a.mp" || fail "fi-tokenize"
fi-prefill -m tiny --arena-size 16M --temp 0.7 < "$work/a.mp" > "$work/b.mp" 2> /dev/null || fail "fi-prefill"
fi-decode -m tiny -n 8 < "$work/b.mp" > "$work/c.mp" 2> /dev/null || fail "fi-decode"
for f in a b c; do
	fi-frame < "$work/$f.mp" | fi-frame -e | cmp -s - "$work/$f.mp" || fail "$f.mp changed through JSON"
done
fi-frame < "$work/b.mp" | jq -e -s '.[1] | .type == "request" and .temperature == 0.7 and
	(.kv.fingerprint | test("^[0-9a-f]{64}$")) and (.tokens | type) == "array"' > /dev/null ||
	fail "prefilled request as JSON: $(fi-frame < "$work/b.mp" | sed -n 2p)"
echo "ok: byte for byte through JSON"

# Filters, both ways: types and ids; both given, a frame must pass both.
[ "$(fi-frame -t done < "$work/c.mp" | jq -r .id | tr '\n' ' ')" = "1 2 3 " ] || fail "-t done"
[ "$(fi-frame --id 2 --id 3 -t token,done < "$work/c.mp" | jq -r .id | sort -u | tr '\n' ' ')" = "2 3 " ] ||
	fail "--id"
[ "$(fi-frame --id 2 -t done < "$work/c.mp" | wc -l)" = 1 ] || fail "-t and --id"
fi-frame < "$work/c.mp" | fi-frame -e -t done --id 1 | fi-frame | jq -e -s 'length == 1 and .[0].id == "1"' \
	> /dev/null || fail "-e with filters"
echo "ok: filters"

# Bad input is reported with where it was and skipped; exit 1 after the rest.
printf '%s\n' '{"v":1,"type":"cancel","id":"a"}' 'not json' '' '{"v":1,"type":"request","id":"b"}' \
	'{"v":1,"type":"request","id":"c","text":"x","temprature":0,"temperature":0}' \
	'{"v":1,"type":"request","id":"d","text":"x","temprature":1}' |
	fi-frame -e > "$work/x.mp" 2> "$work/err"
[ $? = 1 ] || fail "bad lines: exit status"
grep -q "^fi-frame: error: line 2: json: " "$work/err" && grep -q "^fi-frame: error: line 4: frame: request has neither" "$work/err" ||
	fail "bad lines: $(cat "$work/err")"
[ "$(grep -c "key 'temprature' is not in the frame schema" "$work/err")" = 1 ] ||
	fail "dropped key not named once: $(cat "$work/err")"
[ "$(fi-frame < "$work/x.mp" | jq -r .id | tr '\n' ' ')" = "a c d " ] || fail "good lines lost"
{ fi-frame -e < "$work/requests.jsonl"; printf '\223\001\002\003'; fi-frame -e < "$work/requests.jsonl"; } |
	fi-frame > "$work/y" 2> "$work/err"
[ $? = 1 ] || fail "bad frame: exit status"
grep -q "^fi-frame: error: frame 3: frame: expected a map" "$work/err" || fail "bad frame: $(cat "$work/err")"
[ "$(wc -l < "$work/y")" = 4 ] || fail "frames around the bad one: $(cat "$work/y")"
echo hello | fi-frame > /dev/null 2> "$work/err"
[ $? = 1 ] || fail "text as frames: exit status"
[ "$(cat "$work/err")" = "fi-frame: error: input is not fi frames: pipe text through fi-tokenize (JSON lines are read with fi-frame -e)" ] ||
	fail "text as frames: $(cat "$work/err")"
echo "ok: bad input"

# Frames are not written to a terminal unless -f (script(1) gives the command a pty).
command -v script > /dev/null || fail "script(1) absent (util-linux)"
script -qec "fi-frame -e < $work/requests.jsonl; echo rc=\$?" /dev/null > "$work/tty" 2>&1
grep -q "frames not written to a terminal" "$work/tty" && grep -q "rc=1" "$work/tty" ||
	fail "frames on a terminal: $(cat "$work/tty")"
script -qec "fi-frame -e -f < $work/requests.jsonl > /dev/null; echo rc=\$?" /dev/null > "$work/tty" 2>&1
grep -q "rc=0" "$work/tty" || fail "-f: $(cat "$work/tty")"
echo "ok: terminals"

# Usage errors exit 2.
for args in "-t nope" "-f" "extra" "--id"; do
	fi-frame $args < /dev/null > /dev/null 2>&1
	[ $? = 2 ] || fail "fi-frame $args: want exit 2"
done
echo "all fi-frame checks passed"
