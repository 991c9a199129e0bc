# Shared by the test_backpressure_*.sh tests (sourced): 20,000 prompts through a pipeline
# must all be answered, with bounded memory. Before backpressure, fi-decode read its input
# regardless of room and turned 18,912 of them away busy, exiting 0.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$work"' EXIT
N=20000
# Memory bound of each stage: the model, its buffers and a bounded queue (about 120 MB on
# the embedded model); reading everything in would hold every request.
MAX_KB=400000
fi-load --name tiny "$root/models/tiny" > /dev/null 2>&1 || fail "fi-load tiny"

# $1 prefix: N one-token prompts (the cost is the number of requests, not their length) as
# JSONL with ids "$1N", so several producers never share an id.
prompts() {
	seq $N | sed "s/.*\(.\)\$/{\"id\":\"$1&\",\"prompt\":\"\1\"}/"
}

# $1 pid, $2 file: keeps the process's peak resident size (kB) in the file while it runs.
watch_hwm() {
	while kill -0 "$1" 2> /dev/null; do
		v=$(awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2> /dev/null)
		[ -n "$v" ] && echo "$v" > "$2"
		sleep 0.2
	done
}

# $1 frames file, $2 type: how many frames of that type it holds. Each frame's map holds
# "type" then its name as msgpack strs (0xa4 "type", 0xa0+len name); the bytes cannot occur
# in a token's text, which is never a lone 0xa4 byte before ASCII.
count() {
	LC_ALL=C grep -a -o -F "$(printf "\\244type\\$(printf %o $((160 + ${#2})))%s" "$2")" "$1" |
		wc -l
}

# $1 frames file: every request has a done frame, and there is no error frame.
all_done() {
	n=$(count "$1" done)
	e=$(count "$1" error)
	[ "$e" -eq 0 ] || fail "$e error frames"
	[ "$n" -eq $N ] || fail "$n of $N requests answered"
	echo "$n done frames, no error frame"
}

# $1 name, $2 file of a watch_hwm: the peak stayed under MAX_KB.
check_hwm() {
	[ -s "$2" ] || fail "$1: no memory reading"
	[ "$(cat "$2")" -lt $MAX_KB ] || fail "$1 grew to $(cat "$2") kB"
	echo "$1: peak $(cat "$2") kB"
}
