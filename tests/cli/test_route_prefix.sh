#!/bin/sh
# Prefix affinity and load balance of fi-route's cost policy (fi-route(1), NOTES-route.md):
# 60 prefixes of 1024 tokens over 3 null workers whose pools hold about 25 each, 600
# requests in random order, at 8 and at 32 requests in flight. Goals: prefixes computed at
# most 1.5x the ideal (60) and at most half of round-robin's; the busiest worker takes at
# most 1.25x the mean.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
dir=$(dirname "$0")
[ -x "${BUILD:-build}/tests/tools/route_client" ] || fail "no route_client (make build/tests/tools/route_client)"
for inflight in 8 32; do
	for policy in cost round-robin; do
		sh "$dir/route_prefix.sh" "$policy" 600 "$inflight" > "$TMPDIR/$policy.out" 2>&1 ||
			fail "$policy at $inflight in flight: $(cat "$TMPDIR/$policy.out")"
		echo "$inflight in flight: $(tail -n 1 "$TMPDIR/$policy.out")"
	done
	rr=$(tail -n 1 "$TMPDIR/round-robin.out" | awk '{ print $5 }')
	set -- $(tail -n 1 "$TMPDIR/cost.out" | awk '{ sub("x", "", $10); print $5, $10 }')
	[ $# = 2 ] || fail "no figures: $(cat "$TMPDIR/cost.out")"
	awk -v c="$1" -v rr="$rr" -v b="$2" 'BEGIN { exit !(c <= 90 && c <= rr / 2 && b <= 1.25) }' ||
		fail "at $inflight in flight: cost computed $1 prefixes (goal <= 90 and <= half of round-robin's $rr), busiest $2x the mean (goal <= 1.25)"
done
