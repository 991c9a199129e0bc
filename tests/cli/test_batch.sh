#!/bin/sh
# The batch job of examples/batch.sh: a text file of prompts in, one JSON line per prompt out.
# 1,000 prompts give 1,000 results, in input order, each with its id, its own prompt and the
# completion of that prompt (checked against fi-decode --prompt run alone on a sample);
# without --ordered the same run finishes out of order, so the order is --ordered's doing.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
BUILD=${BUILD:-$(dirname "$(command -v fi-decode)")/..}; export BUILD

# The example as shipped, on examples/prompts.txt.
sh "$root/examples/batch.sh" > "$work/ex.jsonl" 2> "$work/err" || fail "batch.sh: $(cat "$work/err")"
jq -r .prompt "$work/ex.jsonl" | cmp -s - "$root/examples/prompts.txt" ||
	fail "batch.sh prompts: $(cat "$work/ex.jsonl")"
jq -e -s 'all(.[]; (.completion | length) > 0 and (.finish == "stop" or .finish == "length"))' \
	"$work/ex.jsonl" > /dev/null || fail "batch.sh results: $(cat "$work/ex.jsonl")"
echo "ok: examples/batch.sh"

# 1,000 prompts from a text file (ten beginnings, numbered so that each line is its own).
awk 'BEGIN { srand(5)
	n = split("The function returns|This module provides|def main():|Permission is hereby granted|" \
		  "If the file does not exist,|import os|class Parser(object):|for i in range(10):|" \
		  "The standard library|Once upon a time", w, "|")
	for (i = 1; i <= 1000; i++) printf "%s %d\n", w[1 + int(rand() * n)], i }' > "$work/p.txt"
sh "$root/examples/batch.sh" "$work/p.txt" > "$work/r.jsonl" 2> "$work/err" || fail "1000: $(cat "$work/err")"
[ "$(wc -l < "$work/r.jsonl")" = 1000 ] || fail "1000 prompts gave $(wc -l < "$work/r.jsonl") results"
jq -r .prompt "$work/r.jsonl" | cmp -s - "$work/p.txt" || fail "results are not in input order"
jq -e -s '[.[].id] == [range(1; 1001) | tostring] and [.[].seq] == [range(1; 1001)] and
	all(.[]; .finish == "stop" or .finish == "length") and
	all(.[]; .counts.gen_tokens > 0 and .timings.ttft_ms > 0)' "$work/r.jsonl" > /dev/null ||
	fail "ids, numbers or finishes: $(head -3 "$work/r.jsonl")"
# Joined by id: the completion of a request is its prompt's, as fi-decode alone makes it.
for id in 1 500 1000; do
	prompt=$(jq -r --arg id "$id" 'select(.id == $id) | .prompt' "$work/r.jsonl")
	fi-decode -m tiny --prompt "$prompt" -n 32 --temp 0 --stop . > "$work/alone" || fail "--prompt $id"
	jq -j --arg id "$id" 'select(.id == $id) | .completion, "\n"' "$work/r.jsonl" |
		cmp -s - "$work/alone" || fail "request $id: '$(cat "$work/alone")' is not its completion"
done
echo "ok: 1000 prompts, 1000 results in input order"

# The same run without --ordered: results as they finish, which is not the input order.
fi-tokenize -m tiny --temp 0 < "$work/p.txt" | fi-decode -m tiny -n 32 --stop . 2> /dev/null |
	fi-tokenize -m tiny -d --jsonl > "$work/u.jsonl" || fail "unordered run"
[ "$(wc -l < "$work/u.jsonl")" = 1000 ] || fail "unordered: $(wc -l < "$work/u.jsonl") results"
jq -r .seq "$work/u.jsonl" | sort -n -c 2> /dev/null && fail "finishing order is input order: --ordered untested"
jq -c -s 'sort_by(.seq) | map(del(.timings))' "$work/u.jsonl" > "$work/u.sorted"
jq -c -s 'map(del(.timings))' "$work/r.jsonl" | cmp -s - "$work/u.sorted" ||
	fail "ordered and unordered runs hold other results"
echo "all batch checks passed"
