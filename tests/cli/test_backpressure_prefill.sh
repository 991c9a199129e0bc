#!/bin/sh
# 20,000 prompts through fi-tokenize | fi-prefill | fi-decode -n 2: 20,000 done frames, no
# error frame, both workers exit 0 with bounded memory.
. "$(dirname "$0")/backpressure.sh"

t0=$(date +%s)
mkfifo "$work/mid"
prompts p | fi-tokenize -m tiny --jsonl --no-add-special |
	fi-prefill -m tiny -b 64 --temp 0 --arena-size 64M > "$work/mid" 2> "$work/perr" & p=$!
fi-decode -m tiny -n 2 --temp 0 < "$work/mid" > "$work/out.mp" 2> "$work/err" & d=$!
watch_hwm $p "$work/phwm" &
watch_hwm $d "$work/hwm" &
wait $p; prc=$?
wait $d; rc=$?
[ $prc = 0 ] || fail "fi-prefill exit $prc: $(cat "$work/perr")"
[ $rc = 0 ] || fail "fi-decode exit $rc: $(cat "$work/err")"
all_done "$work/out.mp"
check_hwm fi-prefill "$work/phwm"
check_hwm fi-decode "$work/hwm"
echo "$N requests in $(($(date +%s) - t0)) s"
