#!/bin/sh
# fi-route over null workers (fi-route --null-worker) and the tiny model's tokenizer, driven
# with curl and with route_client (a DEALER): completions, chat, streaming, stop strings, a
# cancelled stream, /v1/models, /metrics, /health, errors and 429, frames from two clients
# with the same ids, garbage on both sockets, a worker killed mid-stream.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v curl > /dev/null || { echo "SKIPPED: curl not installed (tools/deps.sh)" >&2; exit 77; }
client=${BUILD:-$root/build}/tests/tools/route_client
[ -x "$client" ] || fail "route_client not built"
work=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
fi-load -l 2> /dev/null | grep -q '^tiny ' || fi-load "$root/models/tiny" --name tiny > /dev/null 2>&1 ||
	fail "cannot load the tiny model"
port=$((20000 + $$ % 20000))
url=http://127.0.0.1:$port
fi-route -m tiny --workers "ipc://$work/sock-w" -i "ipc://$work/sock-c" --http "$port" 2> "$work/route.log" &
route=$!
pids="$pids $route"
worker() { # name, tokens per request
	fi-route --null-worker --router "ipc://$work/sock-w" --name "$1" --null-tokens "$2" --token-ms 5 \
		2> "$work/$1.log" &
	pids="$pids $!"
	last=$!
}
worker n1 400; w1=$last
worker n2 400
worker n3 400
for i in $(seq 50); do
	[ "$(curl -s "$url/health" | jq -r .workers 2> /dev/null)" = 3 ] && break
	sleep 0.1
done
[ "$(curl -s "$url/health" | jq -r .workers)" = 3 ] || fail "3 workers not registered: $(cat "$work/route.log")"

post() { curl -s -w '\n%{http_code}\n' "$url$1" -H 'Content-Type: application/json' -d "$2"; }

# completions: the null worker answers with the prompt's own tokens, so the text is known
post /v1/completions '{"model":"tiny","prompt":"Once upon a time there was","max_tokens":6}' > "$work/c"
[ "$(tail -n 1 "$work/c")" = 200 ] || fail "completions: $(cat "$work/c")"
head -n 1 "$work/c" | jq -e '.object == "text_completion" and .choices[0].finish_reason == "length" and
	(.choices[0].text | startswith("Once upon")) and .usage.completion_tokens == 6 and
	.usage.prompt_tokens > 0 and .usage.prompt_tokens_details.cached_tokens == 0' > /dev/null ||
	fail "completions body: $(cat "$work/c")"
# the same prompt again is a prefix hit on its worker... only with 16 tokens or more; a
# longer prompt twice shows cached tokens
long='"Once upon a time there was a little girl who lived in a village near the forest. She liked to play with her friends in the sun every day."'
post /v1/completions "{\"model\":\"tiny\",\"prompt\":$long,\"max_tokens\":2}" > /dev/null
post /v1/completions "{\"model\":\"tiny\",\"prompt\":$long,\"max_tokens\":2}" > "$work/c2"
head -n 1 "$work/c2" | jq -e '.usage.prompt_tokens_details.cached_tokens >= 16' > /dev/null ||
	fail "a repeated prompt went elsewhere or was not cached: $(cat "$work/c2")"

# chat, with the model's template
post /v1/chat/completions '{"model":"tiny","messages":[{"role":"user","content":"hi there"}],"max_completion_tokens":4,"logprobs":true,"top_logprobs":0}' > "$work/ch"
[ "$(tail -n 1 "$work/ch")" = 200 ] || fail "chat: $(cat "$work/ch")"
head -n 1 "$work/ch" | jq -e '.object == "chat.completion" and .choices[0].message.role == "assistant" and
	(.choices[0].message.content | length) > 0 and (.choices[0].logprobs.content | length) == 4 and
	.choices[0].logprobs.content[0].logprob == -1' > /dev/null || fail "chat body: $(cat "$work/ch")"

# streaming: chunks, the usage chunk, [DONE]
curl -sN "$url/v1/chat/completions" -d '{"model":"tiny","messages":[{"role":"user","content":"hi there"}],"max_tokens":5,"stream":true,"stream_options":{"include_usage":true}}' > "$work/s"
[ "$(tail -n 2 "$work/s" | head -n 1)" = "data: [DONE]" ] || fail "stream does not end with [DONE]: $(cat "$work/s")"
grep '^data: {' "$work/s" | sed 's/^data: //' > "$work/chunks"
[ "$(head -n 1 "$work/chunks" | jq -r '.choices[0].delta.role')" = assistant ] || fail "stream: no role chunk"
[ "$(tail -n 1 "$work/chunks" | jq -r '.usage.completion_tokens')" = 5 ] || fail "stream: usage chunk $(tail -n 1 "$work/chunks")"
[ "$(jq -r 'select(.choices[0].finish_reason != null) | .choices[0].finish_reason' "$work/chunks")" = length ] ||
	fail "stream: finish_reason"

# stop: cut before the stop string, finish "stop"
post /v1/completions '{"model":"tiny","prompt":"Once upon a time there was","max_tokens":50,"stop":["time"]}' > "$work/st"
head -n 1 "$work/st" | jq -e '.choices[0].finish_reason == "stop" and (.choices[0].text | contains("time") | not) and
	(.choices[0].text | startswith("Once upon"))' > /dev/null || fail "stop: $(cat "$work/st")"

# a cancelled stream: the client goes away; the request is cancelled on its worker
curl -sN --max-time 0.5 "$url/v1/completions" -d '{"model":"tiny","prompt":"Once upon a time","max_tokens":400,"stream":true}' > "$work/cs"
grep -q '^data: {' "$work/cs" || fail "the stream to cancel sent nothing"
sleep 0.4
curl -s "$url/metrics" > "$work/m"
grep -q '^fi_route_requests_total{outcome="cancelled"} [1-9]' "$work/m" || fail "no cancel: $(grep outcome "$work/m")"
grep -Eq '^fi_worker_running\{worker="n[123]"\} 0$' "$work/m" || fail "metrics: worker gauges"
grep -q '^fi_route_ttft_seconds_count [1-9]' "$work/m" || fail "metrics: TTFT histogram"
grep -q '^fi_route_itl_seconds_bucket{le="+Inf"} [1-9]' "$work/m" || fail "metrics: ITL histogram"

# models; errors in OpenAI's shape
curl -s "$url/v1/models" | jq -e '.data[0].id == "tiny"' > /dev/null || fail "/v1/models"
post /v1/completions '{"model":"tiny","prompt":"x","n":2}' | tr '\n' ' ' | grep -q '"param":"n".* 400' || fail "n=2 not refused"
post /v1/completions '{"model":"tiny","prompt":"x","best_of":2}' | tr '\n' ' ' | grep -q 'unsupported_parameter.* 400' || fail "best_of not refused"
post /v1/completions '{"model":"other","prompt":"x"}' | tail -n 1 | grep -q 404 || fail "another model not 404"
post /v1/completions '{"model":' | tr '\n' ' ' | grep -q 'invalid_json.* 400' || fail "bad JSON not 400"
post /v1/nothing '{}' | tail -n 1 | grep -q 404 || fail "no 404"

# frames: two clients with the same ids at once, each gets its own answers
printf '%s\n' '{"v":1,"type":"request","id":"a","tokens":[1,2,3,4],"max_tokens":3}' \
	'{"v":1,"type":"request","id":"b","tokens":[5,6,7,8],"max_tokens":2}' | fi-frame -e > "$work/req"
"$client" "ipc://$work/sock-c" < "$work/req" > "$work/r1" & c1=$!
"$client" "ipc://$work/sock-c" < "$work/req" > "$work/r2" || fail "client 2 exit $?"
wait $c1 || fail "client 1 exit $?"
for r in r1 r2; do
	fi-frame < "$work/$r" | jq -r 'select(.type == "token") | "\(.id) \(.token)"' | sort > "$work/$r.t"
	printf 'a 1\na 2\na 3\nb 5\nb 6\n' | cmp -s - "$work/$r.t" || fail "frames $r: $(cat "$work/$r.t")"
done
# a text request is tokenized by fi-route (-m)
printf '%s\n' '{"v":1,"type":"request","id":"t","text":"Once upon a time","max_tokens":2}' | fi-frame -e |
	"$client" "ipc://$work/sock-c" | fi-frame | jq -e 'select(.type == "done") | .counts.prompt_tokens > 0' > /dev/null ||
	fail "text request"

# garbage on both sockets: an error frame to the client, nothing to the worker side; up still
printf '\x93\x01\x02' | "$client" --raw "ipc://$work/sock-c" > "$work/g"
grep -q '^error ' "$work/g" || fail "garbage on the client socket: no error frame"
head -c 5000 /dev/urandom | "$client" --raw "ipc://$work/sock-c" > /dev/null
printf '\x81\xa4type\xa5hello' | "$client" --raw "ipc://$work/sock-w" > /dev/null
head -c 5000 /dev/urandom | "$client" --raw "ipc://$work/sock-w" > /dev/null
curl -s "$url/health" | jq -e '.status == "ok"' > /dev/null || fail "fi-route down after garbage"

# a worker killed mid-stream: every request ends (tokens then an error, or retried)
for i in 1 2 3 4 5 6; do
	curl -s "$url/v1/completions" -d '{"model":"tiny","prompt":"Once upon a time","max_tokens":100}' > "$work/k$i" &
	eval "k$i=\$!"
done
sleep 0.2
kill -9 "$w1"
for i in 1 2 3 4 5 6; do eval "wait \$k$i"; done
for i in 1 2 3 4 5 6; do
	jq -e '.choices[0].finish_reason == "length" or (.error.message | test("failed during"))' "$work/k$i" > /dev/null ||
		fail "request $i after the kill: $(cat "$work/k$i")"
done
sleep 1.2
[ "$(curl -s "$url/health" | jq -r .workers)" = 2 ] || fail "the dead worker is still registered"
post /v1/completions '{"model":"tiny","prompt":"Once upon a time","max_tokens":3}' | tail -n 1 | grep -q 200 ||
	fail "requests after the kill fail"

# 429: a router with no workers and a queue of 1
fi-route -m tiny --workers "ipc://$work/w2" --http $((port + 1)) --http-queue 1 2> /dev/null &
pids="$pids $!"
sleep 0.5
curl -s --max-time 2 "http://127.0.0.1:$((port + 1))/v1/completions" -d '{"model":"tiny","prompt":"x"}' > /dev/null &
sleep 0.3
curl -s -D "$work/h429" "http://127.0.0.1:$((port + 1))/v1/completions" -d '{"model":"tiny","prompt":"x"}' > "$work/b429"
grep -q '^HTTP/1.1 429' "$work/h429" && grep -qi '^Retry-After: 1' "$work/h429" ||
	fail "no 429 with Retry-After: $(cat "$work/h429")"
jq -e '.error.code == "overloaded"' "$work/b429" > /dev/null || fail "429 body: $(cat "$work/b429")"
curl -s "http://127.0.0.1:$((port + 1))/health" -o /dev/null -w '%{http_code}' | grep -q 503 || fail "no workers is not 503"

# usage errors
fi-route -i "ipc://$work/x" 2> "$work/e"; [ $? = 2 ] || fail "no --workers: not exit 2"
grep -q 'workers ENDPOINT is required' "$work/e" || fail "message: $(cat "$work/e")"
fi-route --workers "ipc://$work/x" --http 9 2> "$work/e"; [ $? = 2 ] || fail "--http without -m: not exit 2"
fi-route --workers tcp://0.0.0.0:1 -i "ipc://$work/x" 2> "$work/e"; [ $? = 1 ] || fail "non-loopback bind without keys"
grep -q 'needs --curve-key' "$work/e" || fail "message: $(cat "$work/e")"
fi-route -m tiny --workers "ipc://$work/x" --http 0.0.0.0:9 2> "$work/e"; [ $? = 1 ] || fail "HTTP beyond loopback without a key"
grep -q 'needs --api-key-file' "$work/e" || fail "message: $(cat "$work/e")"
exit 0
