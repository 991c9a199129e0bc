#!/bin/sh
# fi-prefill under faults. SIGTERM with 1,000 requests queued: every one gets a frame (its
# request passed on, or an error frame "fi-prefill is shutting down"), from a file and from a
# pipe, and the status is 3; 487 of 1,000 were never answered before. No space for the KV
# arena: a warning, the requests go on without KV and fi-decode's output is unchanged; it
# exited 1 with no output before.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$work"' EXIT
fi-load --name tiny "$root/models/tiny" > /dev/null 2>&1 || fail "fi-load tiny"
A="--arena-size 64M"

# $1 frames file, $2 type: frames of that type (0xa4 "type", then the name as a msgpack str).
count() {
	LC_ALL=C grep -a -o -F "$(printf "\\244type\\$(printf %o $((160 + ${#2})))%s" "$2")" "$1" |
		wc -l
}
wait_exit() { # pid seconds: waits for it, returns its status (124 when it did not end)
	i=0
	while kill -0 "$1" 2> /dev/null; do
		i=$((i + 1)); [ $i -gt $(($2 * 10)) ] && return 124; sleep 0.1
	done
	wait "$1"
}
# 1,000 prompts of about 400 tokens: minutes of work, so most are still queued at the signal.
seq 1000 | sed 's/.*/& &/; s/.*/& & & & & & & & & & & & & & & & & & & & & & & & & & & & & & & &/' |
	sed 's/.*/& & & &/' > "$work/long.txt"
fi-tokenize -m tiny < "$work/long.txt" > "$work/long.mp" || fail "fi-tokenize"

# $1: how fi-prefill gets its input ("file" or "pipe")
sigterm() {
	rm -f "$work/out.mp"
	if [ "$1" = file ]; then
		fi-prefill -m tiny $A < "$work/long.mp" > "$work/out.mp" 2> "$work/err" & p=$!
	else
		fi-tokenize -m tiny < "$work/long.txt" |
			fi-prefill -m tiny $A > "$work/out.mp" 2> "$work/err" & p=$!
	fi
	pids="$pids $p"
	i=0
	while [ ! -s "$work/out.mp" ]; do
		i=$((i + 1)); [ $i -gt 600 ] && fail "$1: no output in 60 s"; sleep 0.1
	done
	kill -TERM $p
	wait_exit $p 60; rc=$?
	[ $rc = 3 ] || fail "$1: SIGTERM: exit $rc, want 3: $(cat "$work/err")"
	req=$(count "$work/out.mp" request)
	err=$(count "$work/out.mp" error)
	[ $((req + err)) -eq 1000 ] || fail "$1: $req requests passed on and $err error frames of 1000"
	[ "$err" -gt 0 ] || fail "$1: the signal came after the last request"
	grep -q "fi-prefill: [0-9]* requests, $err failed" "$work/err" || fail "$1: message: $(cat "$work/err")"
	LC_ALL=C grep -a -q "fi-prefill is shutting down" "$work/out.mp" || fail "$1: error message"
	echo "ok: SIGTERM ($1): $req passed on, $err answered with an error frame"
}
sigterm file
sigterm pipe

# No room for the arena. Real ENOSPC on a 64 KiB tmpfs where unprivileged mounts are allowed;
# a file size limit (EFBIG) otherwise. Either way: a warning, status 0, every request passed
# on without a kv reference, and fi-decode's output equal to fi-decode alone.
printf '%s\n' 'def main():' 'import os, sys' 'class Parser(object):' > "$work/p.txt"
fi-tokenize -m tiny < "$work/p.txt" > "$work/p.mp" || fail "fi-tokenize p"
fi-decode -m tiny -n 8 --temp 0 < "$work/p.mp" > "$work/alone.mp" || fail "decode alone"
rm -rf "$FI_HOME/kv"
mkdir -p "$FI_HOME/kv"
if unshare -rm true 2> /dev/null; then
	how="ENOSPC (64 KiB tmpfs)"
	unshare -rm sh -c 'mount -t tmpfs -o size=64k none "$1" && shift && exec "$@"' sh \
		"$FI_HOME/kv" fi-prefill -m tiny $A --temp 0 < "$work/p.mp" > "$work/pre.mp" \
		2> "$work/err"
	rc=$?
else
	how="EFBIG (ulimit -f)"
	(trap '' XFSZ; ulimit -f 64; exec fi-prefill -m tiny $A --temp 0) < "$work/p.mp" \
		> "$work/pre.mp" 2> "$work/err"
	rc=$?
fi
[ $rc = 0 ] || fail "no arena space: exit $rc: $(cat "$work/err")"
grep -q "fi-prefill: warning: .*passing requests on without KV" "$work/err" ||
	fail "no arena space: warning: $(cat "$work/err")"
[ "$(count "$work/pre.mp" request)" = 3 ] || fail "no arena space: requests passed on"
LC_ALL=C grep -a -q -F "$(printf '\242kv')" "$work/pre.mp" && fail "a kv reference without an arena"
fi-decode -m tiny -n 8 < "$work/pre.mp" | fi-tokenize -m tiny -d > "$work/after.txt" ||
	fail "decode after"
fi-tokenize -m tiny -d < "$work/alone.mp" > "$work/alone.txt" || fail "text alone"
[ -s "$work/alone.txt" ] || fail "no text"
cmp -s "$work/after.txt" "$work/alone.txt" || fail "no arena space: fi-decode's output changed"
echo "ok: no arena space, $how: requests passed on without KV"
exit 0
