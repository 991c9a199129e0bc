#!/bin/sh
# fi-route over real workers: three fi-decode --router workers of the tiny model on the CPU,
# with KV events and replay, driven with curl and fi-frame -c. Completions, chat, streaming,
# stop, a cancelled stream and a frame client that goes away (their KV freed on the worker,
# seen in the load frames through /metrics), prefix hits from the workers' KV events, lost
# KV event batches caught up through the replay socket, a worker killed mid-stream, a 10x
# overload burst (every request answered or 429, fi-route's memory bounded), API keys.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v curl > /dev/null || { echo "SKIPPED: curl not installed (tools/deps.sh)" >&2; exit 77; }
work=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
fi-load -l 2> /dev/null | grep -q '^tiny ' || fi-load "$root/models/tiny" --name tiny > /dev/null 2>&1 ||
	fail "cannot load the tiny model"
port=$((20000 + ($$ + 7919) % 20000))
url=http://127.0.0.1:$port
echo key-one > "$work/keys"
echo key-two >> "$work/keys"
# every 3rd KV event batch is dropped on arrival, so fi-route must replay them
FI_ROUTE_KV_DROP=3 fi-route -m tiny --workers "ipc://$work/w" -i "ipc://$work/c" --http "$port" \
	--http-queue 8 --api-key-file "$work/keys" 2> "$work/route.log" &
route=$!
pids="$pids $route"
worker() { # name
	fi-decode -m tiny --router "ipc://$work/w" --name "$1" --kv-events "ipc://$work/ev-$1" \
		--kv-events-replay "ipc://$work/rp-$1" --ignore-eos --max-batch 4 -t 1 -v 2> "$work/$1.log" &
	pids="$pids $!"
	last=$!
}
worker d1; w1=$last
worker d2
worker d3
auth='Authorization: Bearer key-two'
for i in $(seq 100); do
	[ "$(curl -s "$url/health" | jq -r .workers 2> /dev/null)" = 3 ] && break
	sleep 0.1
done
[ "$(curl -s "$url/health" | jq -r .workers)" = 3 ] || fail "3 workers not registered: $(cat "$work/route.log")"
post() { curl -s -w '\n%{http_code}\n' -H "$auth" "$url$1" -H 'Content-Type: application/json' -d "$2"; }
metric() { curl -s -H "$auth" "$url/metrics" | awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m { s += $2 } END { print s + 0 }'; }
idle_kv() { # every worker's KV back to 0 blocks in use (cached prefixes are not use) within 3 s
	for i in $(seq 30); do
		[ "$(metric fi_worker_kv_used_blocks)" = 0 ] && [ "$(metric fi_worker_running)" = 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# API keys: 401 without or with a wrong key, 200 with one of the file's; /health is open
curl -s -o /dev/null -w '%{http_code}' "$url/v1/models" | grep -q 401 || fail "no key: not 401"
curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer nope' "$url/v1/models" | grep -q 401 ||
	fail "a wrong key: not 401"
curl -s -H "$auth" "$url/v1/models" | jq -e '.data[0].id == "tiny"' > /dev/null || fail "/v1/models with a key"
curl -s -H 'Authorization: Bearer key-one' -o /dev/null -w '%{http_code}' "$url/v1/models" | grep -q 200 ||
	fail "the first key: not 200"

# completions at temperature 0: the same text twice, the second with its prefix cached (the
# KV events of the worker that computed it bring it back there)
long='"Once upon a time there was a little girl who lived in a village near the forest. She liked to play with her friends in the sun every day."'
post /v1/completions "{\"model\":\"tiny\",\"prompt\":$long,\"max_tokens\":12,\"temperature\":0}" > "$work/c1"
[ "$(tail -n 1 "$work/c1")" = 200 ] || fail "completions: $(cat "$work/c1")"
head -n 1 "$work/c1" | jq -e '.choices[0].finish_reason == "length" and .usage.completion_tokens == 12 and
	(.choices[0].text | length) > 0 and .usage.prompt_tokens_details.cached_tokens == 0' > /dev/null ||
	fail "completions body: $(cat "$work/c1")"
sleep 0.3 # its KV events
hits0=$(metric fi_worker_prefix_hit_blocks)
post /v1/completions "{\"model\":\"tiny\",\"prompt\":$long,\"max_tokens\":12,\"temperature\":0}" > "$work/c2"
head -n 1 "$work/c2" | jq -e '.usage.prompt_tokens_details.cached_tokens >= 16' > /dev/null ||
	fail "a repeated prompt went elsewhere or was not cached: $(cat "$work/c2")"
[ "$(head -n 1 "$work/c1" | jq -r .choices[0].text)" = "$(head -n 1 "$work/c2" | jq -r .choices[0].text)" ] ||
	fail "temperature 0 gave two texts"
sleep 0.3 # the next load frame
[ "$(metric fi_worker_prefix_hit_blocks)" -gt "$hits0" ] || fail "/metrics: no prefix hit counted"
[ "$(metric fi_worker_held_blocks)" -gt 0 ] || fail "/metrics: no block known from KV events"

# stop: a piece of the text at temperature 0 cuts it there
text=$(head -n 1 "$work/c1" | jq -r .choices[0].text)
stop=$(printf '%s' "$text" | python3 -c 'import sys; t = sys.stdin.read(); print(t[len(t) // 2:len(t) // 2 + 3])')
post /v1/completions "$(jq -nc --arg s "$stop" --argjson p "$long" '{model:"tiny",prompt:$p,max_tokens:12,temperature:0,stop:[$s]}')" > "$work/st"
head -n 1 "$work/st" | jq -e --arg s "$stop" --arg t "$text" '.choices[0].text as $c |
	.choices[0].finish_reason == "stop" and ($c | contains($s) | not) and ($t | startswith($c))' > /dev/null ||
	fail "stop '$stop' in '$text': $(cat "$work/st")"

# chat, with the model's template, and logprobs from the worker's token frames
post /v1/chat/completions '{"model":"tiny","messages":[{"role":"user","content":"hi there"}],"max_completion_tokens":4,"logprobs":true,"top_logprobs":2}' > "$work/ch"
[ "$(tail -n 1 "$work/ch")" = 200 ] || fail "chat: $(cat "$work/ch")"
head -n 1 "$work/ch" | jq -e '.object == "chat.completion" and .choices[0].message.role == "assistant" and
	(.choices[0].logprobs.content | length) == 4 and .choices[0].logprobs.content[0].logprob <= 0 and
	.usage.completion_tokens == 4' > /dev/null || fail "chat body: $(cat "$work/ch")"

# streaming: the role chunk, 5 tokens, the usage chunk, [DONE]
curl -sN -H "$auth" "$url/v1/chat/completions" -d '{"model":"tiny","messages":[{"role":"user","content":"hi there"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}' > "$work/s"
[ "$(tail -n 2 "$work/s" | head -n 1)" = "data: [DONE]" ] || fail "stream does not end with [DONE]: $(cat "$work/s")"
grep '^data: {' "$work/s" | sed 's/^data: //' > "$work/chunks"
[ "$(head -n 1 "$work/chunks" | jq -r '.choices[0].delta.role')" = assistant ] || fail "stream: no role chunk"
[ "$(tail -n 1 "$work/chunks" | jq -r '.usage.completion_tokens')" = 5 ] || fail "stream: usage $(tail -n 1 "$work/chunks")"

# a cancelled stream: 900 tokens asked, the client leaves after 0.5 s; the worker frees its KV
cancelled0=$(metric 'fi_route_requests_total{outcome="cancelled"}')
curl -sN -H "$auth" --max-time 0.5 "$url/v1/completions" -d '{"model":"tiny","prompt":"Once upon a time","max_tokens":900,"stream":true}' > "$work/cs"
grep -q '^data: {' "$work/cs" || fail "the stream to cancel sent nothing"
idle_kv || fail "KV not freed after a cancelled stream: $(curl -s -H "$auth" "$url/metrics" | grep -E 'kv_used_blocks|running')"
[ "$(metric 'fi_route_requests_total{outcome="cancelled"}')" -gt "$cancelled0" ] || fail "no cancel counted"

# a frame client that goes away: its request is cancelled and its KV freed
printf '%s\n' '{"v":1,"type":"request","id":"1","text":"Once upon a time","max_tokens":900}' | fi-frame -e > "$work/long.req"
(cat "$work/long.req"; sleep 30) | fi-frame -c "ipc://$work/c" > "$work/long.out" 2> /dev/null &
fc=$!
for i in $(seq 50); do [ "$(metric fi_worker_running)" -gt 0 ] && break; sleep 0.1; done
[ "$(metric fi_worker_running)" -gt 0 ] || fail "the frame client's request never ran"
kill -9 $fc
idle_kv || fail "KV not freed after the frame client left"

# frames from a client: text tokenized by fi-route, replies back on the DEALER
printf '%s\n' '{"v":1,"type":"request","id":"a","text":"Once upon a time","max_tokens":3}' \
	'{"v":1,"type":"request","id":"b","text":"The cat sat","max_tokens":2}' | fi-frame -e |
	fi-frame -c "ipc://$work/c" > "$work/fr" || fail "fi-frame -c: exit $?"
[ "$(fi-frame < "$work/fr" | jq -r 'select(.type == "token") | .id' | sort | tr -d '\n')" = aaabb ] ||
	fail "frames: $(fi-frame < "$work/fr")"

# KV events: one batch in three was dropped on arrival, and replayed
[ "$(metric fi_worker_kv_event_replayed)" -gt 0 ] || fail "no KV event batch replayed: $(curl -s -H "$auth" "$url/metrics" | grep kv_event)"

# a worker killed mid-stream: every request ends, with its tokens or an error
for i in 1 2 3 4 5 6; do
	curl -s -H "$auth" "$url/v1/completions" -d '{"model":"tiny","prompt":"Once upon a time","max_tokens":200}' > "$work/k$i" &
	eval "k$i=\$!"
done
sleep 0.7
kill -9 "$w1"
for i in 1 2 3 4 5 6; do eval "wait \$k$i"; done
for i in 1 2 3 4 5 6; do
	jq -e '(.choices[0].finish_reason == "length" and .usage.completion_tokens == 200) or
		(.error.message | test("failed during"))' "$work/k$i" > /dev/null ||
		fail "request $i after the kill: $(cat "$work/k$i")"
done
for i in $(seq 30); do [ "$(curl -s "$url/health" | jq -r .workers)" = 2 ] && break; sleep 0.1; done
[ "$(curl -s "$url/health" | jq -r .workers)" = 2 ] || fail "the dead worker is still registered"
post /v1/completions '{"model":"tiny","prompt":"Once upon a time","max_tokens":3}' | tail -n 1 | grep -q 200 ||
	fail "requests after the kill fail"

# a 10x overload burst: 2 workers take 2 x 4 each, 8 wait; 240 at once. Each gets its
# tokens or a 429 "overloaded"; fi-route's memory grows by less than 32 MiB
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$route/status"; }
rss0=$(rss)
for i in $(seq 240); do
	curl -s -H "$auth" -w '\n%{http_code}\n' "$url/v1/completions" -d '{"model":"tiny","prompt":"Once upon a time there was","max_tokens":8}' > "$work/o$i" &
	eval "o$i=\$!"
done
for i in $(seq 240); do eval "wait \$o$i"; done
ok=0 busy=0
for i in $(seq 240); do
	case $(tail -n 1 "$work/o$i") in
	200) head -n 1 "$work/o$i" | jq -e '.usage.completion_tokens == 8' > /dev/null || fail "burst $i: $(cat "$work/o$i")"
	     ok=$((ok + 1)) ;;
	429) head -n 1 "$work/o$i" | jq -e '.error.code == "overloaded"' > /dev/null || fail "burst 429 $i: $(cat "$work/o$i")"
	     busy=$((busy + 1)) ;;
	*) fail "burst $i: $(cat "$work/o$i")" ;;
	esac
done
rss1=$(rss)
echo "burst: $ok answered, $busy overloaded; fi-route VmRSS $rss0 kB before, $rss1 kB after"
[ $ok -ge 24 ] && [ $busy -ge 1 ] || fail "burst: $ok answered and $busy overloaded"
[ $((rss1 - rss0)) -lt 32768 ] || fail "fi-route grew from $rss0 kB to $rss1 kB"
idle_kv || fail "KV not idle after the burst"
curl -s "$url/health" | jq -e '.status == "ok"' > /dev/null || fail "fi-route down after the burst"
exit 0
