#!/bin/sh
# examples/pipeline.sh and examples/workers.sh run, and agree: the warm run of the pipeline
# prints what the cold one printed, and the workers print the same text. examples/demo.sh
# (make demo, the README's first command) prints each prompt with its continuation.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v fi-tokenize > /dev/null || { echo "SKIPPED: fi-tokenize not built" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
BUILD=${BUILD:-$(dirname "$(command -v fi-prefill)")/..}; export BUILD
sh "$root/examples/pipeline.sh" > "$work/p.txt" 2> "$work/p.err" || fail "pipeline.sh: $(cat "$work/p.err")"
n=$(wc -l < "$root/examples/pipeline-prompts.txt")
grep -q "cached" "$work/p.err" || fail "no -v lines"
sed -n '/== warm/,$p' "$work/p.err" | grep -q "'2': .* prompt tokens, [1-9][0-9]* cached" ||
	fail "warm run found nothing cached: $(cat "$work/p.err")"
[ -s "$work/p.txt" ] || fail "no output"
h=$(($(wc -c < "$work/p.txt") / 2))
head -c $h "$work/p.txt" > "$work/cold.txt"
tail -c +$((h + 1)) "$work/p.txt" | cmp -s - "$work/cold.txt" || fail "cold and warm runs differ"
sh "$root/examples/workers.sh" > "$work/w.txt" 2> "$work/w.err" || fail "workers.sh: $(cat "$work/w.err")"
head -c $(($(wc -c < "$work/p.txt") / 2)) "$work/p.txt" > "$work/p1.txt"
cmp -s "$work/p1.txt" "$work/w.txt" || fail "workers print other text: $(cat "$work/w.txt")"
sh "$root/examples/demo.sh" > "$work/demo.txt" 2> "$work/demo.err" || fail "demo.sh: $(cat "$work/demo.err")"
[ "$(grep -c '^---$' "$work/demo.txt")" = "$(wc -l < "$root/examples/prompts.txt")" ] ||
	fail "demo.sh: one result per prompt: $(cat "$work/demo.txt")"
awk 'NR == 1 || prev == "---" { print } { prev = $0 }' "$work/demo.txt" | head -n "$(wc -l < "$root/examples/prompts.txt")" |
	paste -d '\t' "$root/examples/prompts.txt" - |
	awk -F '\t' 'index($2, $1) != 1 { bad = 1 } END { exit bad }' ||
	fail "demo.sh: prompts are not followed by their continuations: $(cat "$work/demo.txt")"
echo "ok: examples ($n prompts), demo.sh"
