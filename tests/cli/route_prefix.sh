#!/bin/sh
# The prefix-affinity measurement (NOTES-route.md): 3 null workers whose simulated pools hold
# about 25 prefixes of 1024 tokens (1700 blocks of 16), 60 prefixes, N requests in random order
# through fi-route with POLICY. Prints each worker's requests and prefix blocks computed.
# usage: sh tests/cli/route_prefix.sh cost|round-robin [N] [INFLIGHT]
set -u
policy=$1 n=${2:-600} inflight=${3:-8}
d=$(mktemp -d)
client=${BUILD:-build}/tests/tools/route_client
fi-route --workers "ipc://$d/w" -i "ipc://$d/c" --policy "$policy" 2> "$d/route.log" &
rp=$!
for w in 1 2 3; do
	fi-route --null-worker --router "ipc://$d/w" --name "w$w" --null-tokens 1 --kv-blocks 1700 \
		2> "$d/w$w.log" &
	eval "p$w=\$!"
done
sleep 0.5
"$client" --prefix "$n" --inflight "$inflight" "ipc://$d/c"
kill "$p1" "$p2" "$p3"
wait "$p1" "$p2" "$p3"
kill "$rp"
wait "$rp"
# computed blocks = looked up - found; a prefix is 64 blocks (the 65th, each request's own
# tail, is always computed and left out)
cat "$d"/w?.log | awk -v policy="$policy" '/null worker/ {
	req = $5; look = $7; found = $12; miss = (look - found - req) / 64
	printf "%s %s requests %d prefixes computed %.1f\n", policy, $4, req, miss
	tr += req; tm += miss; if (req > mx) mx = req }
	END { printf "%s total prefixes computed %.1f (ideal 60), busiest worker %.2fx the mean\n",
	      policy, tm, mx / (tr / 3) }'
rm -rf "$d"
