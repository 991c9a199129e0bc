#!/bin/sh
# fi-decode frames on the HF parity fixtures (no corpus needed): greedy tokens equal to
# transformers', continuous batching of several requests, non-streaming requests, stop
# ids, cancel, error frames for bad requests, and a corrupt stream.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
fx=$root/tests/fixtures/hf
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One request per family through frames, in one process per family: greedy == HF.
for fam in llama llama_tied llama3_rope mistral qwen2 qwen3; do
	jq -c '{v: 1, type: "request", id: "g", tokens: .prompt, max_tokens: (.greedy | length),
		temperature: 0},
	       {v: 1, type: "request", id: "n", tokens: .prompt, max_tokens: (.greedy | length),
		temperature: 0, stream: false}' "$fx/$fam/ref.json" | fi-frame -e |
		fi-decode -m "$fx/$fam" --backend cpu 2> /dev/null | fi-frame > "$work/out.jsonl" ||
		fail "$fam: fi-decode exited"
	jq -e -s --slurpfile ref "$fx/$fam/ref.json" '$ref[0].greedy as $w |
		[.[] | select(.type == "token" and .id == "g")] as $g |
		[.[] | select(.type == "done")] as $d |
		([$g[].token] == $w) and ([$g[].index] == [range($w | length)]) and
		([.[] | select(.type == "token" and .id == "n")] | length) == 0 and
		($d | length) == 2 and ([$d[] | select(.id == "n") | .tokens] == [$w]) and
		all($d[]; .finish == "length" and .counts.gen_tokens == ($w | length) and
		    .timings.ttft_ms >= 0 and .timings.total_ms >= .timings.ttft_ms)' \
		"$work/out.jsonl" > /dev/null || fail "$fam: frames differ from HF: $(cat "$work/out.jsonl")"
	echo "ok: $fam greedy frames"
done

# Many requests at once, seeded sampling: each request's tokens equal those of the same
# request run alone (--tokens), whatever the batch around it; stop ids end a request
# (not emitted); a cancel ends one; bad requests get error frames and the rest go on.
ref=$fx/llama/ref.json
P=$(jq -r '.prompt | map(tostring) | join(",")' "$ref")
for s in 1 2 3; do
	fi-decode -m "$fx/llama" --backend cpu --tokens "$P" -n 20 --seed $s --temp 0.9 --top-k 50 \
		> "$work/alone$s" || fail "--tokens run"
done
jq -c '.prompt as $p |
	(range(1; 4) | {v: 1, type: "request", id: "s\(.)", tokens: $p, max_tokens: 20, seed: .,
			temperature: 0.9, top_k: 50}),
	{v: 1, type: "request", id: "text", text: "hello"},
	{v: 1, type: "request", id: "big", tokens: [1, 300]},
	{v: 1, type: "request", id: "stop", tokens: $p, max_tokens: 32, temperature: 0, stop_ids: [238]},
	{v: 1, type: "request", id: "long", tokens: $p[:3], max_tokens: 200, temperature: 0},
	{v: 1, type: "cancel", id: "long"},
	{v: 1, type: "request", id: "late", tokens: $p[:5], max_tokens: 3, temperature: 0}' \
	"$ref" > "$work/req.jsonl"
fi-frame -e < "$work/req.jsonl" | fi-decode -m "$fx/llama" --backend cpu 2> /dev/null |
	fi-frame > "$work/out.jsonl" || fail "batch run exited"
toks() { jq -r -s --arg id "$1" '[.[] | select(.type == "token" and .id == $id) | .token | tostring] |
	join(" ")' "$work/out.jsonl"; }
for s in 1 2 3; do
	[ "$(toks s$s)" = "$(cat "$work/alone$s")" ] || fail "s$s: $(toks s$s) alone: $(cat "$work/alone$s")"
done
[ "$(toks s1)" != "$(toks s2)" ] || fail "seeds 1 and 2 gave the same tokens"
jq -e -s --slurpfile ref "$ref" '$ref[0].greedy as $g | ($g | index(238)) as $cut |
	(map(select(.type == "done")) | map({(.id): .}) | add) as $done |
	(map(select(.type == "error")) | map({(.id): .}) | add) as $err |
	def toks($id): [.[] | select(.type == "token" and .id == $id) | .token];
	$err.text.code == "unsupported" and $err.big.code == "range" and
	toks("stop") == $g[:$cut] and $done.stop.finish == "stop" and
	$done.long.finish == "cancel" and (toks("long") | length) < 200 and
	$done.late.finish == "length" and (toks("late") | length) == 3 and
	($done | length) == 6' "$work/out.jsonl" > /dev/null ||
	fail "batch frames: $(grep -v '"token"' "$work/out.jsonl")"
echo "ok: batch of requests"

# A corrupt stream: the requests before it are answered, then exit 1.
{ fi-frame -e < "$work/req.jsonl" | head -c 40; printf '\301\301\301'; } |
	fi-decode -m "$fx/llama" --backend cpu > "$work/out" 2> "$work/err"
[ $? -eq 1 ] || fail "corrupt stream: exit status"
echo "all fi-decode frame checks passed"
