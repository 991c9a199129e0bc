#!/bin/sh
# Pipelines on the embedded model: fi-tokenize | fi-prefill | fi-decode | fi-tokenize -d equals
# fi-tokenize | fi-decode | fi-tokenize -d, frame for frame; many requests in flight; the same
# over ZeroMQ ipc:// and tcp:// workers; a slow consumer keeps memory bounded; SIGTERM answers
# every request.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$work"' EXIT
m=$root/models/tiny
fi-load "$m" --name tiny --dtype f32 > /dev/null || fail "fi-load"
A="--arena-size 32M"

# Requests: text prompts through fi-tokenize when it exists, else token prompts.
if command -v fi-tokenize > /dev/null; then
	printf '%s\n' 'def main():' 'import os, sys' 'class Parser(object):' \
		'The standard library' 'for i in range(10):' '    return self' > "$work/prompts.txt"
	fi-tokenize -m tiny < "$work/prompts.txt" > "$work/req.mp" || fail "fi-tokenize"
	fi-decode -m tiny -n 24 --temp 0 < "$work/req.mp" > "$work/a.mp" || fail "decode"
	fi-prefill -m tiny $A --temp 0 < "$work/req.mp" | fi-decode -m tiny -n 24 > "$work/b.mp" ||
		fail "prefill | decode"
	frames_same "$work/a.mp" "$work/b.mp" || fail "text: prefill | decode differs"
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-prefill -m tiny --temp 0 |
		fi-decode -m tiny -n 24 | fi-tokenize -m tiny -d > "$work/b.txt" || fail "4 stages"
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-decode -m tiny -n 24 --temp 0 |
		fi-tokenize -m tiny -d > "$work/a.txt" || fail "3 stages"
	cmp -s "$work/a.txt" "$work/b.txt" || fail "text output differs: $(diff "$work/a.txt" "$work/b.txt")"
	[ -s "$work/a.txt" ] || fail "no text"
	echo "ok: fi-tokenize | fi-prefill | fi-decode | fi-tokenize -d"
	# Sampling options at the end of a pipeline apply to all of it: fi-prefill without
	# options leaves the first draw to fi-decode --temp 0 (it drew at temperature 1).
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-prefill -m tiny 2> /dev/null |
		fi-decode -m tiny -n 24 --temp 0 2> "$work/err" > "$work/c.mp" || fail "greedy at the end"
	frames_same "$work/a.mp" "$work/c.mp" || fail "fi-prefill | fi-decode --temp 0 is not greedy"
	[ "$(frames_count "$work/c.mp" token)" = "$(frames_count "$work/a.mp" token)" ] || fail "token count"
	grep -q conflict "$work/err" && fail "a conflict reported where there is none: $(cat "$work/err")"
	# Given in fi-tokenize, they travel with the requests: fi-prefill draws greedily.
	fi-tokenize -m tiny --temp 0 < "$work/prompts.txt" | fi-prefill -m tiny 2> /dev/null |
		fi-decode -m tiny -n 24 > "$work/d.mp" 2> /dev/null || fail "greedy from fi-tokenize"
	frames_same "$work/a.mp" "$work/d.mp" || fail "fi-tokenize --temp 0 | ... is not greedy"
	# A contradiction is reported once, naming both values; the request's value is used.
	fi-tokenize -m tiny --temp 0 < "$work/prompts.txt" | fi-prefill -m tiny --temp 0.5 2> "$work/err1" |
		fi-decode -m tiny -n 24 --temp 1 2> "$work/err2" > "$work/e.mp" || fail "conflicts"
	frames_same "$work/a.mp" "$work/e.mp" || fail "the request's temperature 0 was not used"
	[ "$(grep -c "conflicts with temperature 0 in request '1'" "$work/err1")" = 1 ] &&
		grep -q -- "--temp 0.5 conflicts" "$work/err1" ||
		fail "fi-prefill conflict message: $(cat "$work/err1")"
	[ "$(grep -c "conflicts" "$work/err2")" = 1 ] && grep -q -- "--temp 1 conflicts with temperature 0" "$work/err2" ||
		fail "fi-decode conflict message: $(cat "$work/err2")"
	echo "ok: sampling options compose along the pipeline"
else
	echo "no fi-tokenize: text stage not run"
fi

# Many requests in flight: 96 prompts of 20..80 tokens sharing prefixes, greedy and sampled.
awk 'BEGIN {
	srand(3)
	for (j = 0; j < 80; j++) base[j] = j ? 2 + int(rand() * 4094) : 0
	for (i = 0; i < 96; i++) {
		n = 20 + int(rand() * 61); h = int(n / 2); s = ""
		for (j = 0; j < n; j++) s = s (j ? "," : "") (j < h ? base[j] : 2 + int(rand() * 4094))
		printf "{\"v\":1,\"type\":\"request\",\"id\":\"m%d\",\"tokens\":[%s],\"max_tokens\":%d,", i, s, 1 + int(rand() * 12)
		if (i % 3) print "\"temperature\":0}"
		else printf "\"temperature\":0.8,\"seed\":%d,\"top_p\":0.9}\n", i
	}
}' > "$work/many.jsonl"
fi-frame -e < "$work/many.jsonl" > "$work/many.mp" || fail "many: requests"
fi-decode -m tiny < "$work/many.mp" > "$work/ma.mp" || fail "many: decode"
fi-prefill -m tiny $A < "$work/many.mp" | fi-decode -m tiny > "$work/mb.mp" || fail "many: pipeline"
frames_same "$work/ma.mp" "$work/mb.mp" || fail "many requests: prefill | decode differs"
[ "$(frames_count "$work/mb.mp" done)" -eq 96 ] || fail "many: done frames"
echo "ok: 96 requests in flight"

# Workers on ZeroMQ: fi-prefill (stdin) -> decode worker; and a prefill worker between.
wait_exit() { # pid seconds
	i=0
	while kill -0 "$1" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt $(($2 * 10)) ] && return 1; sleep 0.1
	done
	wait "$1"
}
for ep in "ipc://$work/dec.sock" "tcp://127.0.0.1:$((20000 + $$ % 20000))"; do
	fi-decode -m tiny -i "$ep" -o - > "$work/z.mp" 2> "$work/z.err" & d=$!; pids="$pids $d"
	fi-prefill -m tiny $A -o "$ep" < "$work/many.mp" || fail "$ep: prefill"
	wait_exit $d 60 || fail "$ep: decode worker did not end on eos"
	frames_same "$work/ma.mp" "$work/z.mp" || fail "$ep: output differs"
	echo "ok: fi-prefill -o $ep -> fi-decode -i $ep"
done
fi-decode -m tiny -n 32 -i "ipc://$work/d2" -o - > "$work/z2.mp" & d=$!; pids="$pids $d"
fi-prefill -m tiny $A --temp 0 -i "ipc://$work/p2" -o "ipc://$work/d2" & p=$!; pids="$pids $p"
if command -v fi-tokenize > /dev/null; then
	fi-tokenize -m tiny -o "ipc://$work/p2" < "$work/prompts.txt" || fail "fi-tokenize -o"
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-decode -m tiny --temp 0 -n 32 > "$work/za.mp"
	wait_exit $p 60 && wait_exit $d 60 || fail "workers did not end"
	frames_same "$work/za.mp" "$work/z2.mp" || fail "tokenize -> prefill -> decode workers differ"
	echo "ok: fi-tokenize -o ipc -> fi-prefill worker -> fi-decode worker"
else
	kill -TERM $p; wait_exit $p 20 || fail "idle prefill worker ignored SIGTERM"
	wait_exit $d 20 || fail "decode worker did not end after the prefill worker"
fi

# SIGTERM: a decode worker running long requests ends them with finish "cancel"; each request
# sent gets a done or an error frame; exit status 3 (requests cut short by the signal).
frames_prompts 12 30 5 400 | fi-frame -e > "$work/long.mp"
fi-decode -m tiny -e 0 -i "ipc://$work/d3" -o - > "$work/t.mp" & d=$!; pids="$pids $d"
fi-prefill -m tiny $A -o "ipc://$work/d3" < "$work/long.mp" || fail "prefill to d3"
sleep 1
kill -TERM $d
wait_exit $d 30; rc=$?
[ $rc -eq 3 ] || fail "SIGTERM: decode exit $rc"
fi-frame -t done,error < "$work/t.mp" > "$work/t.jsonl"
jq -e -s '([.[].id] | unique) == ([range(12) | "q\(.)"] | sort) and any(.[]; .finish == "cancel")' \
	"$work/t.jsonl" > /dev/null || fail "SIGTERM frames: $(cat "$work/t.jsonl")"
echo "ok: SIGTERM answers every request"

# A slow consumer: the output blocks, fi-decode stops reading, its memory stays bounded.
frames_prompts 150 24 9 32 | fi-frame -e > "$work/slow.mp"
mkfifo "$work/fifo"
fi-decode -m tiny < "$work/slow.mp" > "$work/fifo" & d=$!; pids="$pids $d"
{ sleep 3; cat > /dev/null; } < "$work/fifo" & s=$!
sleep 2
hwm=$(awk '/VmHWM/ {print $2}' /proc/$d/status 2>/dev/null)
wait $s
wait_exit $d 60 || fail "slow run did not end"
[ -n "$hwm" ] || fail "no fi-decode to measure"
[ "$hwm" -lt 400000 ] || fail "slow consumer: fi-decode grew to $hwm kB"
echo "ok: slow consumer, fi-decode high-water mark ${hwm} kB"
echo "all pipeline checks passed"
