#!/bin/sh
# A batch job over a file of prompts: every line is continued by the embedded model, greedily,
# up to the first period, and one JSON line per prompt comes out, in input order, with the
# prompt and its completion:
#   sh examples/batch.sh [PROMPTS] > results.jsonl       (default: examples/prompts.txt)
#   jq -r '.prompt + .completion' results.jsonl           (each prompt with its continuation)
#   text -> fi-tokenize --temp 0 -> fi-decode -> fi-tokenize -d --jsonl --ordered -> JSONL
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
PATH=${BUILD:-$root/build}/bin:$PATH
fi-load -l 2>/dev/null | grep -q '^tiny ' || fi-load "$root/models/tiny" --name tiny >&2
fi-tokenize -m tiny --temp 0 < "${1:-$root/examples/prompts.txt}" |
	fi-decode -m tiny -n 32 --stop . |
	fi-tokenize -m tiny -d --jsonl --ordered
