#!/bin/sh
# fi-decode: usage against fi-decode(1), every EXAMPLES line, greedy output of stories260K
# against its reference, seeded reproducibility, usage and runtime failures.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
src=${FI_TEST_SHARED:-../shared}/corpus/models/stories260K-hf
ref=${FI_TEST_SHARED:-../shared}/corpus/testvectors/stories260K/greedy_t0.json
if [ ! -f "$src/model.safetensors" ] || [ ! -f "$ref" ]; then
	echo "SKIPPED: corpus model $src absent" >&2
	exit 77
fi
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$src" "$work/stories260K-hf"

# -h prints the SYNOPSIS (compared with whitespace collapsed: it wraps differently).
fi-decode -h > "$work/usage" || fail "-h exit $?"
if command -v nroff >/dev/null 2>&1 && command -v col >/dev/null 2>&1; then
	nroff -mdoc "$root/man/man1/fi-decode.1" 2>/dev/null | col -b |
		sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' | sed '1d;$d' | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//' > "$work/syn"
	sed 's/^usage: //' "$work/usage" | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//' |
		diff - "$work/syn" || fail "fi-decode -h differs from the SYNOPSIS"
fi

# Every EXAMPLES line, in order, in a directory with the checkpoint and a request file.
printf '%s\n' '{"v":1,"type":"request","id":"r1","tokens":[1],"temperature":0.0}' \
	'{"v":1,"type":"request","id":"r2","tokens":[1,403],"max_tokens":4}' |
	fi-frame -e > "$work/requests.msgpack" || fail "cannot encode requests"
sed -n '/^\.Sh EXAMPLES/,/^\.Sh /s/^\.Dl \$ //p' "$root/man/man1/fi-decode.1" > "$work/examples"
[ "$(wc -l < "$work/examples")" -ge 4 ] || fail "fi-decode(1) has too few examples"
while IFS= read -r line; do
	(cd "$work" && sh -c "$line") > "$work/out" 2> "$work/err" ||
		fail "example '$line' exited $?: $(cat "$work/err")"
	echo "ok: $line"
done < "$work/examples"
[ "$(frames_count "$work/out.msgpack" token)" -eq 20 ] || fail "example frames: $(fi-frame < "$work/out.msgpack")"
[ "$(frames_count "$work/out.msgpack" done)" -eq 2 ] || fail "example done frames"

# Greedy generation reproduces the reference (prompt [BOS]; it stops at BOS/EOS).
jq -r '.generated_ids | map(tostring) | join(" ")' "$ref" > "$work/want"
fi-decode -m stories --tokens 1 -n 256 --temp 0 > "$work/got" || fail "greedy exit $?"
diff "$work/want" "$work/got" > /dev/null || fail "greedy differs from $ref"
# The HF directory itself (converted on the fly at f32 on the CPU) gives the same.
fi-decode -m "$src" --backend cpu --tokens 1 -n 256 --temp 0 > "$work/got2" || fail "dir exit $?"
cmp -s "$work/got" "$work/got2" || fail "directory model differs from the store image"

# Same seed, same tokens; another seed, other tokens; 1 and 2 threads agree.
fi-decode -m stories --tokens 1,403 -n 48 --seed 5 --top-k 40 > "$work/s1" || fail "seeded run"
fi-decode -m stories --tokens 1,403 -n 48 --seed 5 --top-k 40 -t 1 > "$work/s2" || fail "seeded run"
fi-decode -m stories --tokens 1,403 -n 48 --seed 6 --top-k 40 > "$work/s3" || fail "seeded run"
cmp -s "$work/s1" "$work/s2" || fail "same seed gave different tokens"
cmp -s "$work/s1" "$work/s3" && fail "different seeds gave the same 48 tokens"
[ "$(wc -w < "$work/s1")" -eq 48 ] || [ "$(tr ' ' '\n' < "$work/s1" | tail -n 1)" != "" ] ||
	fail "seeded run length"

# Usage errors exit 2; runtime failures exit 1, with a message naming the thing.
fi-decode > /dev/null 2>&1; [ $? -eq 2 ] || fail "no -m: exit status"
fi-decode -m stories --temp x --tokens 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad --temp"
fi-decode -m stories --top-p 2 --tokens 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad --top-p"
fi-decode -m stories --tokens 1,x > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad --tokens"
fi-decode -m stories --tokens 1,512 > /dev/null 2>&1; [ $? -eq 2 ] || fail "--tokens past vocab"
fi-decode -m stories --seed -1 --tokens 1 > /dev/null 2> "$work/err"; [ $? -eq 2 ] || fail "--seed -1"
grep -q "^fi-decode: invalid value '-1' for --seed" "$work/err" || fail "--seed message: $(cat "$work/err")"
fi-decode -m stories --backend gpu --tokens 1 > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad backend"
fi-decode -m nosuchmodel --tokens 1 > /dev/null 2> "$work/err"; [ $? -eq 1 ] || fail "missing model"
grep -q "^fi-decode: .*nosuchmodel" "$work/err" || fail "missing model message: $(cat "$work/err")"
echo "all fi-decode checks passed"
