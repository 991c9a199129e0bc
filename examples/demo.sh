#!/bin/sh
# The README's first command: load the embedded default model into the store (once) and
# continue every line of examples/prompts.txt with it, through the whole toolchain, printing
# each prompt followed by its continuation, the results separated by lines of ---:
#   text -> fi-tokenize -> request frames -> fi-decode -> token frames -> fi-tokenize -d -> text
set -eu
cd "$(dirname "$0")/.."
PATH=${BUILD:-$PWD/build}/bin:$PATH
fi-load -l 2>/dev/null | grep -q '^tiny ' || fi-load models/tiny --name tiny >&2
fi-tokenize -m tiny < examples/prompts.txt |
	fi-decode -m tiny -n 40 --temp 0 |
	fi-tokenize -m tiny -d --echo --sep '\n---\n'
