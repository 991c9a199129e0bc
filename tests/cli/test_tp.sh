#!/bin/sh
# --tp N on the CPU backend: N rank threads through the CPU communicator. fi-decode's greedy
# output at --tp 2 and 4 equals --tp 1's and the whole model's, through the scheduler (a batch
# of prompts, sampled top-k rows too); fi-prefill and fi-bench run; a model that does not split
# is refused with the reason.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v jq > /dev/null || { echo "SKIPPED: jq absent (tools/deps.sh installs it)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export FI_HOME="$work/home"

printf 'Once upon a time\nThe little dog\nA big red ball\n' > "$work/p.txt"
fi-tokenize -m models/tiny < "$work/p.txt" > "$work/req.mp" || fail "tokenize"
run() { # run NAME [fi-decode options]
	name=$1; shift
	fi-decode -m models/tiny --backend cpu -t 2 -n 24 --temp 0 "$@" < "$work/req.mp" \
		> "$work/$name.mp" 2> "$work/$name.err" || fail "$name: exit $?: $(cat "$work/$name.err")"
	fi-frame -t token < "$work/$name.mp" | jq -c '[.id, .token]' | sort > "$work/$name.tok"
	[ "$(wc -l < "$work/$name.tok")" = 72 ] || fail "$name: $(wc -l < "$work/$name.tok") tokens"
}
run whole
run tp1 --tp 1
run tp2 --tp 2
run tp4 --tp 4
for n in tp1 tp2 tp4; do
	cmp -s "$work/whole.tok" "$work/$n.tok" || fail "$n: greedy tokens differ from the whole model's"
done
echo "ok: greedy, 3 prompts x 24 tokens equal at --tp 1, 2, 4"

# top-k rows come from the shards' candidates: the same draws as the whole model
run topk1 --temp 0.9 --top-k 8 --seed 7
run topk2 --temp 0.9 --top-k 8 --seed 7 --tp 2
cmp -s "$work/topk1.tok" "$work/topk2.tok" || fail "top-k sampling differs at --tp 2"
echo "ok: top-k sampling equal at --tp 2"

# text in, text out
a=$(fi-decode -m models/tiny --backend cpu --prompt 'Once upon a time' -n 16 --temp 0 --tp 2) ||
	fail "--prompt --tp 2"
b=$(fi-decode -m models/tiny --backend cpu --prompt 'Once upon a time' -n 16 --temp 0) || fail "--prompt"
[ "$a" = "$b" ] || fail "--prompt: '$a' vs '$b'"

# fi-prefill with a group: the requests pass on (the arena is not used yet)
fi-prefill -m models/tiny --backend cpu --tp 2 < "$work/req.mp" > "$work/pf.mp" 2> "$work/pf.err" ||
	fail "fi-prefill --tp 2: exit $?: $(cat "$work/pf.err")"
[ "$(fi-frame -t request < "$work/pf.mp" | wc -l)" = 3 ] || fail "fi-prefill: requests"

# fi-bench
fi-bench -m models/tiny --backend cpu --tp 2 -r 1 -o json pp16 tg8 > "$work/b.json" 2> "$work/b.err" ||
	fail "fi-bench --tp 2: exit $?: $(cat "$work/b.err")"
jq -e '.tests[0].tps_mean > 0 and .tests[1].tps_mean > 0' "$work/b.json" > /dev/null ||
	fail "fi-bench: $(cat "$work/b.json")"

# refusals: usage, and a model that does not split 3 ways
fi-decode -m models/tiny --tp 0 < /dev/null > /dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "--tp 0: exit $rc"
fi-decode -m models/tiny --backend cpu --tp 3 < "$work/req.mp" > /dev/null 2> "$work/e3"; rc=$?
[ $rc = 1 ] || fail "--tp 3: exit $rc"
grep -q "8 attention heads do not split 3 ways" "$work/e3" || fail "--tp 3: $(cat "$work/e3")"
echo "ok: fi-prefill, fi-bench, refusals"
