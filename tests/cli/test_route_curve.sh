#!/bin/sh
# fi-route with CURVE keys (--curve-key, fi-frame(5) CURVE KEYS) on tcp sockets bound beyond
# loopback: a null worker and a client with matching keys get through; a worker and a client
# without keys, or with the wrong server key, get nothing. Binding beyond loopback without
# keys is refused. A libzmq without CURVE fails this test: CURVE is what fi-frame(5)
# promises for traffic between hosts (Debian's libzmq5 has it).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
client=${BUILD:-$(pwd)/build}/tests/tools/route_client
[ -x "$client" ] || fail "route_client not built"
work=$(mktemp -d)
pids=
cleanup() { for p in $pids; do kill "$p" 2> /dev/null; done; wait 2> /dev/null; rm -rf "$work"; }
trap cleanup EXIT
umask 077
for k in srv wrk cli other; do
	"$client" --keygen > "$work/$k.key" ||
		fail "this libzmq cannot make CURVE keys (no libsodium): install Debian's libzmq5 (tools/deps.sh)"
done
pub() { sed -n 's/^public-key = //p' "$work/$1.key"; }
echo "server-key = $(pub srv)" >> "$work/wrk.key"
echo "server-key = $(pub srv)" >> "$work/cli.key"
echo "server-key = $(pub other)" >> "$work/other.key" # a client that trusts another server
pw=$((20000 + ($$ + 1237) % 20000))
pc=$((pw + 1))

# beyond loopback without keys: refused
fi-route --workers "tcp://0.0.0.0:$pw" -i "tcp://127.0.0.1:$pc" 2> "$work/e" &
p=$!
sleep 1
if kill -0 "$p" 2> /dev/null; then kill "$p"; wait "$p"; fail "bound 0.0.0.0 without --curve-key"; fi
wait "$p"
[ $? = 1 ] && grep -q 'beyond loopback needs --curve-key' "$work/e" || fail "no clear refusal: $(cat "$work/e")"

FI_LOG=info fi-route --workers "tcp://0.0.0.0:$pw" -i "tcp://0.0.0.0:$pc" --curve-key "$work/srv.key" -v \
	2> "$work/route.log" &
pids="$pids $!"
fi-route --null-worker --router "tcp://127.0.0.1:$pw" --name keyed --curve-key "$work/wrk.key" \
	--null-tokens 3 2> "$work/keyed.log" &
pids="$pids $!"
fi-route --null-worker --router "tcp://127.0.0.1:$pw" --name plain --null-tokens 3 2> "$work/plain.log" &
pids="$pids $!"
for i in $(seq 100); do
	grep -q 'worker keyed joined' "$work/route.log" && break
	sleep 0.1
done
grep -q 'worker keyed joined' "$work/route.log" || fail "the keyed worker did not join: $(cat "$work"/*.log)"

printf '%s\n' '{"v":1,"type":"request","id":"a","tokens":[1,2,3,4],"max_tokens":3}' | fi-frame -e > "$work/req"
"$client" --curve-key "$work/cli.key" "tcp://127.0.0.1:$pc" < "$work/req" > "$work/r" ||
	fail "a client with the keys: exit $?"
fi-frame < "$work/r" | jq -e 'select(.type == "done") | .counts.gen_tokens == 3' > /dev/null ||
	fail "a client with the keys: $(fi-frame < "$work/r")"

# no keys, or a server key that is not fi-route's: the handshake fails, nothing comes back
rc=0
"$client" --wait 2000 "tcp://127.0.0.1:$pc" < "$work/req" > "$work/n" 2> "$work/n.err" || rc=$?
[ $rc = 1 ] && [ ! -s "$work/n" ] || fail "a client without keys: exit $rc, $(wc -c < "$work/n") bytes back"
rc=0
"$client" --wait 2000 --curve-key "$work/other.key" "tcp://127.0.0.1:$pc" < "$work/req" > "$work/o" 2> "$work/o.err" || rc=$?
[ $rc = 1 ] && [ ! -s "$work/o" ] || fail "a client with another server key: exit $rc"
! grep -q 'worker plain joined' "$work/route.log" || fail "a worker without keys joined"
