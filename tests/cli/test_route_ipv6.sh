#!/bin/sh
# fi-route on IPv6: its worker and client sockets on tcp://[::1]:PORT and the HTTP front on
# --http [::1]:PORT, a null worker and an fi-decode worker (the tiny model) connecting over
# IPv6, a request by frames and one by HTTP. [::] (every interface) needs keys like 0.0.0.0.
# Where the kernel has no IPv6 loopback, the sockets cannot bind: then the test checks that
# fi-route says so clearly (exit 1, "cannot bind"/"cannot listen"), and the address rules
# are covered by tests/unit/test_route_addr.c, which needs no network.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
client=${BUILD:-$root/build}/tests/tools/route_client
[ -x "$client" ] || fail "route_client not built"
command -v curl > /dev/null || fail "curl not installed (tools/deps.sh)"
work=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
fi-load -l 2> /dev/null | grep -q '^tiny ' || fi-load "$root/models/tiny" --name tiny > /dev/null 2>&1 ||
	fail "cannot load the tiny model"
pw=$((20000 + ($$ + 3571) % 20000))
pc=$((pw + 1)) ph=$((pw + 2))

# beyond loopback without keys: refused before any socket is made
fi-route --workers "tcp://[::]:$pw" -i "tcp://[::1]:$pc" 2> "$work/e"
[ $? = 1 ] && grep -q 'beyond loopback needs --curve-key' "$work/e" || fail "[::] without keys: $(cat "$work/e")"
fi-route -m tiny --workers "tcp://[::1]:$pw" --http "[::]:$ph" 2> "$work/e"
[ $? = 1 ] && grep -q 'beyond loopback needs --api-key-file' "$work/e" || fail "--http [::] without keys: $(cat "$work/e")"
fi-route -m tiny --workers "tcp://[::1]:$pw" --http "::1:$ph" 2> "$work/e"
[ $? = 1 ] && grep -q 'IPv6 one in brackets' "$work/e" || fail "--http ::1:PORT: $(cat "$work/e")"

# IPv6 loopback configured? (/proc/net/if_inet6 lists ::1 on lo; absent when the kernel has
# IPv6 disabled, as some containers do)
if ! grep -q '^00000000000000000000000000000001 ' /proc/net/if_inet6 2> /dev/null; then
	echo "no IPv6 loopback here (::1 not configured): checking the refusal only"
	fi-route -m tiny --workers "tcp://[::1]:$pw" -i "tcp://[::1]:$pc" --http "[::1]:$ph" 2> "$work/e" &
	p=$!
	sleep 2
	kill "$p" 2> /dev/null && fail "fi-route runs without an IPv6 loopback"
	wait "$p"
	[ $? = 1 ] && grep -q -e 'cannot bind' -e 'cannot listen' "$work/e" || fail "no clear error: $(cat "$work/e")"
	exit 0
fi

FI_LOG=info fi-route -m tiny --workers "tcp://[::1]:$pw" -i "tcp://[::1]:$pc" --http "[::1]:$ph" -v \
	2> "$work/route.log" &
pids="$pids $!"
fi-route --null-worker --router "tcp://[::1]:$pw" --name n6 --null-tokens 3 2> "$work/n6.log" &
pids="$pids $!"
fi-decode -m tiny --router "tcp://[::1]:$pw" --name d6 --max-batch 2 -t 1 2> "$work/d6.log" &
pids="$pids $!"
for i in $(seq 100); do
	[ "$(grep -c 'joined' "$work/route.log")" = 2 ] && break
	sleep 0.1
done
[ "$(grep -c 'joined' "$work/route.log")" = 2 ] || fail "2 workers not joined over IPv6: $(cat "$work"/*.log)"
url="http://[::1]:$ph"
[ "$(curl -s -g "$url/health" | jq -r .workers)" = 2 ] || fail "/health over IPv6"
curl -s -g -w '\n%{http_code}\n' "$url/v1/completions" -H 'Content-Type: application/json' \
	-d '{"model":"tiny","prompt":"Once upon a time","max_tokens":3,"temperature":0}' > "$work/h"
[ "$(tail -n 1 "$work/h")" = 200 ] && head -n 1 "$work/h" | jq -e '.usage.completion_tokens == 3' > /dev/null ||
	fail "a completion over IPv6: $(cat "$work/h")"
printf '%s\n' '{"v":1,"type":"request","id":"a","tokens":[1,2,3,4],"max_tokens":3}' | fi-frame -e > "$work/req"
"$client" "tcp://[::1]:$pc" < "$work/req" > "$work/r" || fail "frames over IPv6: exit $?"
fi-frame < "$work/r" | jq -e 'select(.type == "done") | .counts.gen_tokens == 3' > /dev/null ||
	fail "frames over IPv6: $(fi-frame < "$work/r")"
# both workers served over IPv6
m=$(curl -s -g "$url/metrics")
for n in n6 d6; do
	c=$(echo "$m" | awk -v w="fi_worker_requests_total{worker=\"$n\"}" '$1 == w { print $2 }')
	[ "${c:-0}" -gt 0 ] || fail "no request went to $n: $m"
done
