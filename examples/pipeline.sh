#!/bin/sh
# Prefill and decode as separate stages sharing KV through the arena: the same prompts twice;
# the second time fi-prefill finds their blocks (run with FI_LOG=info or see its -v lines).
#   text -> fi-tokenize -> fi-prefill (KV into the arena) -> fi-decode -> fi-tokenize -d -> text
set -eu
cd "$(dirname "$0")/.."
PATH=${BUILD:-$PWD/build}/bin:$PATH
fi-load -l 2>/dev/null | grep -q '^tiny ' || fi-load models/tiny --name tiny >&2
for run in cold warm; do
	echo "== $run" >&2
	fi-tokenize -m tiny < examples/pipeline-prompts.txt |
		fi-prefill -m tiny --temp 0 --arena-size 64M -v |
		fi-decode -m tiny -n 40 |
		fi-tokenize -m tiny -d
done
