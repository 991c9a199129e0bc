#!/bin/sh
# fi-decode as a server of many requests, on the embedded tiny model: a KV pool small enough
# to preempt (--kv-size in tokens) gives every greedy request the tokens a large pool gives;
# a prompt larger than the pool is refused with both sizes; --ignore-eos and the request key
# ignore_eos; logprobs and top_logprobs; 10,000 requests through a pipe all answered, none
# turned away, in bounded memory; the options' usage errors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny > /dev/null 2>&1 || fail "fi-load tiny"

# 120 greedy requests of about 150 (38..225) prompt tokens, 24 tokens each. (Greedy: on the
# CPU, prompt chunks and single tokens go through different BLAS kernels, so a recomputed
# request's logits may differ in their last bits, which can move a sampled draw; fi(7).)
frames_prompts 120 150 5 24 | fi-frame -e > "$work/req.msgpack" || fail "encode"
fi-decode -m tiny --ignore-eos < "$work/req.msgpack" > "$work/big" 2> /dev/null ||
	fail "large pool"
[ "$(frames_count "$work/big" done)" -eq 120 ] || fail "large pool: not 120 results"
# 1024 tokens = 64 blocks for 120 requests of up to 249 tokens: most wait, many are preempted.
fi-decode -m tiny --ignore-eos --kv-size 1024t --max-batch 32 --max-step-tokens 256 -v \
	< "$work/req.msgpack" > "$work/small" 2> "$work/small.err" || fail "small pool"
frames_same "$work/big" "$work/small" || fail "a small pool changed the tokens"
n=$(sed -n 's/.* \([0-9][0-9]*\) preemptions.*/\1/p' "$work/small.err")
[ -n "$n" ] && [ "$n" -gt 0 ] || fail "no preemption with a small pool: $(tail -n 1 "$work/small.err")"
grep -q "kv pool 64 blocks of 16 tokens" "$work/small.err" || fail "-v: $(tail -n 1 "$work/small.err")"
grep -q "host [0-9.]* ms/step (planning [0-9.]*), model [0-9.]* ms/step" "$work/small.err" ||
	fail "-v: no host time"
echo "ok: 120 requests, pool of 1024 tokens, $n preemptions, same tokens"

# FI_STEP_LOG: a line a step; its tokens add up to -v's prompt + decode tokens, no step runs
# more than --max-step-tokens, and its rows add up to the tokens generated.
FI_STEP_LOG="$work/steps.tsv" fi-decode -m tiny --ignore-eos --kv-size 1024t --max-batch 32 \
	--max-step-tokens 256 -v < "$work/req.msgpack" > /dev/null 2> "$work/steps.err" ||
	fail "FI_STEP_LOG run"
head -n 1 "$work/steps.tsv" | grep -q "^step	t_s	tokens	rows	running	waiting	kv_free	host_ms	plan_ms	model_ms$" ||
	fail "FI_STEP_LOG header: $(head -n 1 "$work/steps.tsv")"
want=$(sed -n 's/.* \([0-9][0-9]*\) prompt + \([0-9][0-9]*\) decode tokens computed.*/\1 \2/p' "$work/steps.err")
got=$(awk -F '\t' 'NR > 1 { t += $3; r += $4; if ($3 > 256 || $4 > 32) bad++ }
	END { print t, r, bad + 0 }' "$work/steps.tsv")
set -- $want
[ "$(echo "$got" | cut -d' ' -f1)" -eq $(($1 + $2)) ] || fail "FI_STEP_LOG tokens: $got, -v: $want"
[ "$(echo "$got" | cut -d' ' -f2)" -eq $((120 * 24)) ] || fail "FI_STEP_LOG rows: $got"
[ "$(echo "$got" | cut -d' ' -f3)" -eq 0 ] || fail "FI_STEP_LOG: a step over its budget: $got"
FI_STEP_LOG=/nonexistent/dir/x fi-decode -m tiny --tokens 1,2 -n 2 > /dev/null 2> "$work/nolog.err" ||
	fail "FI_STEP_LOG unwritable ended the run"
echo "ok: FI_STEP_LOG, $(($(wc -l < "$work/steps.tsv") - 1)) steps"

# A prompt that alone does not fit the pool: an error frame with both sizes.
printf '%s\n' '{"v":1,"type":"request","id":"big","tokens":[5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24]}' \
	'{"v":1,"type":"request","id":"ok","tokens":[5,6],"max_tokens":2}' | fi-frame -e |
	fi-decode -m tiny --kv-size 16t 2> /dev/null | fi-frame > "$work/full.jsonl"
jq -e -s '[.[] | select(.id == "big" and .type == "error")] | length == 1 and
	(.[0].code == "full") and (.[0].message | test("20 tokens of KV cache, the pool holds 16"))' \
	"$work/full.jsonl" > /dev/null || fail "full: $(cat "$work/full.jsonl")"
jq -e -s 'any(.[]; .id == "ok" and .type == "done" and .finish == "length")' \
	"$work/full.jsonl" > /dev/null || fail "full: the next request"
echo "ok: a prompt larger than the pool is refused"

# ignore_eos: the llama fixture with a config where 227 ends generation (its greedy output
# for its own prompt is 216 227 ...) stops after one token; with --ignore-eos (or the key) it
# runs to its length; the key false wins over --ignore-eos.
fx=$root/tests/fixtures/hf/llama
mkdir "$work/eos"
jq '.eos_token_id = 227' "$fx/config.json" > "$work/eos/config.json"
ln -s "$fx/model.safetensors" "$work/eos/model.safetensors"
jq -c '.prompt as $p | ({v: 1, type: "request", id: "e0", tokens: $p, max_tokens: 20,
	temperature: 0}, {v: 1, type: "request", id: "e1", tokens: $p, max_tokens: 20,
	temperature: 0, ignore_eos: true}, {v: 1, type: "request", id: "e2", tokens: $p,
	max_tokens: 20, temperature: 0, ignore_eos: false})' "$fx/ref.json" |
	fi-frame -e > "$work/eos.msgpack"
# one line per request: id finish tokens...
results() {
	fi-frame -t done | jq -r '[.id, .finish, .counts.gen_tokens] | map(tostring) | join(" ")' |
		sort
}
fi-decode -m "$work/eos" --backend cpu < "$work/eos.msgpack" 2> /dev/null | results > "$work/eos1"
fi-decode -m "$work/eos" --backend cpu --ignore-eos < "$work/eos.msgpack" 2> /dev/null |
	results > "$work/eos2"
printf 'e0 stop 1\ne1 length 20\ne2 stop 1\n' | cmp -s - "$work/eos1" ||
	fail "ignore_eos key: $(cat "$work/eos1")"
printf 'e0 length 20\ne1 length 20\ne2 stop 1\n' | cmp -s - "$work/eos2" ||
	fail "--ignore-eos: $(cat "$work/eos2")"
echo "ok: ignore_eos"

# logprobs: each token frame has its log-probability and, when asked, the top 3 (greedy:
# the first of them is the token).
printf '%s\n' '{"v":1,"type":"request","id":"l","tokens":[0,300,301],"max_tokens":6,"temperature":0,"top_logprobs":3}' \
	'{"v":1,"type":"request","id":"m","tokens":[0,300,301],"max_tokens":6,"temperature":0.9,"seed":3,"logprobs":true}' \
	'{"v":1,"type":"request","id":"n","tokens":[0,300,301],"max_tokens":6}' |
	fi-frame -e | fi-decode -m tiny 2> /dev/null | fi-frame -t token > "$work/lp.jsonl" ||
	fail "logprobs exit"
jq -e -s '[.[] | select(.id == "l")] as $l | [.[] | select(.id == "m")] as $m |
	[.[] | select(.id == "n")] as $n |
	($l | length) == 6 and ($m | length) == 6 and
	all($l[]; (.top_logprobs | length) == 3 and .top_logprobs[0][0] == .token and
		.top_logprobs[0][1] == .logprob and .logprob <= 0 and
		.top_logprobs[0][1] >= .top_logprobs[1][1] and
		.top_logprobs[1][1] >= .top_logprobs[2][1]) and
	all($m[]; .logprob <= 0 and (has("top_logprobs") | not)) and
	all($n[]; has("logprob") | not)' "$work/lp.jsonl" > /dev/null ||
	fail "logprobs: $(head -c 600 "$work/lp.jsonl")"
echo "ok: logprobs"

# 10,000 requests through a pipe: every one gets its done frame, none an error (no "busy"),
# and the process stays small (input is read only while the queue has room).
awk 'BEGIN { for (i = 0; i < 10000; i++)
	printf "{\"v\":1,\"type\":\"request\",\"id\":\"q%d\",\"tokens\":[0,%d,%d],\"max_tokens\":2,\"temperature\":0}\n",
		i, 2 + i % 4000, 2 + (7 * i) % 4000 }' | fi-frame -e > "$work/many.msgpack"
/usr/bin/time -f '%M' -o "$work/rss" fi-decode -m tiny --kv-size 8192t --max-batch 64 \
	< "$work/many.msgpack" > "$work/many.out" 2> /dev/null || fail "10,000 requests: exit $?"
[ "$(frames_count "$work/many.out" done)" -eq 10000 ] || fail "10,000: done frames"
[ "$(frames_count "$work/many.out" error)" -eq 0 ] || fail "10,000: error frames"
rss=$(tail -n 1 "$work/rss")
[ "$rss" -lt 400000 ] || fail "10,000 requests: $rss kB resident"
echo "ok: 10,000 requests, none refused, $rss kB resident at most"

# --max-step-tokens alone: the default batch (256 here) shrinks to fit it.
FI_STEP_LOG="$work/steps64.tsv" fi-decode -m tiny --ignore-eos --kv-size 1024t \
	--max-step-tokens 64 < "$work/req.msgpack" > /dev/null 2> "$work/err" ||
	fail "--max-step-tokens 64 without --max-batch: $(tail -n 1 "$work/err")"
awk -F '\t' 'NR > 1 && ($3 > 64 || $4 > 64) { bad++ } END { exit bad > 0 }' "$work/steps64.tsv" ||
	fail "--max-step-tokens 64: a step over 64 tokens"
echo "ok: --max-step-tokens alone bounds the default batch"

# Usage errors.
for bad in "--kv-size 0t" "--kv-size 12Q" "--gpu-mem 0" "--gpu-mem 1.5" "--max-batch 0" \
	"--max-step-tokens 8 --max-batch 16"; do
	fi-decode -m tiny $bad < /dev/null > /dev/null 2> "$work/err"
	[ $? -eq 2 ] || fail "'$bad' is not a usage error"
done
echo "all fi-decode serving checks passed"
