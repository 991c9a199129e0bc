#!/bin/sh
# A ZeroMQ fi-decode worker fed by 4 producers, 5,000 prompts each: 20,000 done frames, no
# error frame, the worker exits 0 after the 4th eos with bounded memory. A full queue leaves
# the socket unread, so each producer waits at its high-water mark.
. "$(dirname "$0")/backpressure.sh"

t0=$(date +%s)
ep=ipc://$work/w
fi-decode -m tiny -n 2 --temp 0 -i "$ep" -o - -e 4 > "$work/out.mp" 2> "$work/err" & d=$!
pids="$pids $d"
watch_hwm $d "$work/hwm" &
N=5000
for k in 1 2 3 4; do
	prompts "p$k-" | fi-tokenize -m tiny --jsonl --no-add-special -o "$ep" 2> "$work/t$k.err" &
	eval "t$k=\$!"
done
for k in 1 2 3 4; do
	eval "wait \$t$k" || fail "producer $k: exit $?: $(cat "$work/t$k.err")"
done
wait $d; rc=$?
[ $rc = 0 ] || fail "fi-decode exit $rc: $(cat "$work/err")"
N=20000
all_done "$work/out.mp"
check_hwm fi-decode "$work/hwm"
echo "$N requests in $(($(date +%s) - t0)) s"
