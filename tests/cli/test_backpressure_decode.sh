#!/bin/sh
# 20,000 prompts through fi-tokenize | fi-decode -n 2: 20,000 done frames, no error frame,
# exit status 0, fi-decode's memory bounded (it reads only while its queue has room).
. "$(dirname "$0")/backpressure.sh"

t0=$(date +%s)
prompts p | fi-tokenize -m tiny --jsonl --no-add-special |
	fi-decode -m tiny -n 2 --temp 0 > "$work/out.mp" 2> "$work/err" & d=$!
watch_hwm $d "$work/hwm" &
wait $d; rc=$?
[ $rc = 0 ] || fail "fi-decode exit $rc: $(cat "$work/err")"
all_done "$work/out.mp"
check_hwm fi-decode "$work/hwm"
echo "$N requests in $(($(date +%s) - t0)) s"
