#!/bin/sh
# Workers rejoin a fi-route that was killed and started again on the same endpoints, without
# being restarted themselves: two fi-decode --router workers of the tiny model; a request;
# kill -9 of fi-route; a new fi-route on the same sockets; requests succeed on both workers
# (fi_worker_requests_total in /metrics), the workers' processes the same as before.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v curl > /dev/null || fail "curl not installed (tools/deps.sh)"
command -v jq > /dev/null || fail "jq not installed (tools/deps.sh)"
work=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
fi-load -l 2> /dev/null | grep -q '^tiny ' || fi-load "$root/models/tiny" --name tiny > /dev/null 2>&1 ||
	fail "cannot load the tiny model"
port=$((20000 + ($$ + 4099) % 20000))
url=http://127.0.0.1:$port
router() {
	fi-route -m tiny --workers "ipc://$work/w" --http "$port" 2>> "$work/route.log" &
	route=$!
	pids="$pids $route"
}
workers() { # N: wait until N workers are registered (10 s)
	for i in $(seq 100); do
		[ "$(curl -s "$url/health" | jq -r .workers 2> /dev/null)" = "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
post() { # prompt: one completion of 4 tokens, its status on the last line
	curl -s -m 60 -w '\n%{http_code}\n' "$url/v1/completions" -H 'Content-Type: application/json' \
		-d "{\"model\":\"tiny\",\"prompt\":\"$1\",\"max_tokens\":4,\"temperature\":0}"
}
router
for n in d1 d2; do
	fi-decode -m tiny --router "ipc://$work/w" --name "$n" --max-batch 2 -t 1 2> "$work/$n.log" &
	pids="$pids $!"
	eval "p_$n=\$!"
done
workers 2 || fail "2 workers not registered: $(cat "$work/route.log" "$work"/d?.log)"
post "Once upon a time" > "$work/r0"
[ "$(tail -n 1 "$work/r0")" = 200 ] || fail "before the restart: $(cat "$work/r0")"

kill -9 "$route"
wait "$route" 2> /dev/null
sleep 0.5 # the workers see their connection gone
router
# they say hello again within a second of reconnecting
workers 2 || fail "the workers did not rejoin the restarted router: $(cat "$work/route.log")"
i=0 posts=
for p in "The cat sat" "A little girl" "The sun was" "One day a dog" "Tom and Sue" "The big tree"; do
	post "$p" > "$work/r$i" &
	posts="$posts $!"
	i=$((i + 1))
done
wait $posts
for k in 0 1 2 3 4 5; do
	[ "$(tail -n 1 "$work/r$k")" = 200 ] || fail "after the restart, request $k: $(cat "$work/r$k")"
	head -n 1 "$work/r$k" | jq -e '.usage.completion_tokens == 4' > /dev/null ||
		fail "after the restart, request $k: $(cat "$work/r$k")"
done
m=$(curl -s "$url/metrics")
for n in d1 d2; do
	c=$(echo "$m" | awk -v w="fi_worker_requests_total{worker=\"$n\"}" '$1 == w { print $2 }')
	[ "${c:-0}" -gt 0 ] || fail "no request went to $n after the restart: $m"
done
kill -0 "$p_d1" && kill -0 "$p_d2" || fail "a worker exited: $(cat "$work"/d?.log)"
