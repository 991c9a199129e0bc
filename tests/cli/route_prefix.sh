#!/bin/sh
# The prefix-affinity measurement (NOTES-route.md): 3 null workers whose simulated pools hold
# about 25 prefixes of 1024 tokens (1700 blocks of 16), 60 prefixes, N requests in random order
# through fi-route with POLICY. Prints each worker's requests and prefix blocks computed, then
# one line: "POLICY total prefixes computed X (ideal 60), busiest worker Y.YYx the mean".
# usage: sh tests/cli/route_prefix.sh cost|round-robin [N] [INFLIGHT]
set -u
policy=$1 n=${2:-600} inflight=${3:-8}
d=$(mktemp -d)
client=${BUILD:-build}/tests/tools/route_client
FI_LOG=info fi-route --workers "ipc://$d/w" -i "ipc://$d/c" --policy "$policy" -v 2> "$d/route.log" &
rp=$!
for w in 1 2 3; do
	fi-route --null-worker --router "ipc://$d/w" --name "w$w" --null-tokens 1 --kv-blocks 1700 \
		2> "$d/w$w.log" &
	eval "p$w=\$!"
done
# all three registered before the first request (else the first prefixes go to fewer)
for i in $(seq 100); do
	[ "$(grep -c 'joined' "$d/route.log")" = 3 ] && break
	sleep 0.05
done
rc=0
"$client" --prefix "$n" --inflight "$inflight" "ipc://$d/c" || rc=$?
kill "$p1" "$p2" "$p3"
wait "$p1" "$p2" "$p3"
kill "$rp"
wait "$rp"
[ "$(grep -c 'joined' "$d/route.log")" = 3 ] || { echo "route_prefix: not 3 workers" >&2; rc=1; }
# computed blocks = looked up - found; a prefix is 64 blocks (the 65th, each request's own
# tail, is always computed and left out)
cat "$d"/w?.log | awk -v policy="$policy" '/null worker/ {
	req = $5; look = $7; found = $12; miss = (look - found - req) / 64
	printf "%s %s requests %d prefixes computed %.1f\n", policy, $4, req, miss
	tr += req; tm += miss; if (req > mx) mx = req }
	END { printf "%s total prefixes computed %.1f (ideal 60), busiest worker %.2fx the mean\n",
	      policy, tm, mx / (tr / 3) }'
rm -rf "$d"
exit $rc
