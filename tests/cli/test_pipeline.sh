#!/bin/sh
# Pipelines on the embedded model: fi-tokenize | fi-prefill | fi-decode | fi-tokenize -d equals
# fi-tokenize | fi-decode | fi-tokenize -d, frame for frame; many requests in flight; the same
# over ZeroMQ ipc:// and tcp:// workers; a slow consumer keeps memory bounded; SIGTERM answers
# every request.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v python3 > /dev/null || { echo "SKIPPED: python3 absent" >&2; exit 77; }
work=$(mktemp -d)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$work"' EXIT
frames="python3 $root/tests/cli/pipe_frames.py"
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
	$frames same "$work/a.mp" "$work/b.mp" || fail "text: prefill | decode differs"
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-prefill -m tiny --temp 0 |
		fi-decode -m tiny -n 24 | fi-tokenize -m tiny -d > "$work/b.txt" || fail "4 stages"
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-decode -m tiny -n 24 --temp 0 |
		fi-tokenize -m tiny -d > "$work/a.txt" || fail "3 stages"
	cmp -s "$work/a.txt" "$work/b.txt" || fail "text output differs: $(diff "$work/a.txt" "$work/b.txt")"
	[ -s "$work/a.txt" ] || fail "no text"
	echo "ok: fi-tokenize | fi-prefill | fi-decode | fi-tokenize -d"
else
	echo "no fi-tokenize: text stage not run"
fi

# Many requests in flight: 96 prompts of 20..80 tokens sharing prefixes, greedy and sampled.
python3 - > "$work/many.jsonl" <<'PY'
import json, random
r = random.Random(3)
base = [0] + [r.randint(2, 4095) for _ in range(79)]
for i in range(96):
    n = r.randint(20, 80)
    toks = base[:n // 2] + [r.randint(2, 4095) for _ in range(n - n // 2)]
    q = {"v": 1, "type": "request", "id": "m%d" % i, "tokens": toks, "max_tokens": r.randint(1, 12)}
    q.update({"temperature": 0.0} if i % 3 else {"temperature": 0.8, "seed": i, "top_p": 0.9})
    print(json.dumps(q))
PY
$frames enc < "$work/many.jsonl" > "$work/many.mp"
fi-decode -m tiny < "$work/many.mp" > "$work/ma.mp" || fail "many: decode"
fi-prefill -m tiny $A < "$work/many.mp" | fi-decode -m tiny > "$work/mb.mp" || fail "many: pipeline"
$frames same "$work/ma.mp" "$work/mb.mp" || fail "many requests: prefill | decode differs"
[ "$($frames dec < "$work/mb.mp" | grep -c '"type": "done"')" -eq 96 ] || fail "many: done frames"
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
	fi-decode -m tiny -i "$ep" > "$work/z.mp" 2> "$work/z.err" & d=$!; pids="$pids $d"
	fi-prefill -m tiny $A -o "$ep" < "$work/many.mp" || fail "$ep: prefill"
	wait_exit $d 60 || fail "$ep: decode worker did not end on eos"
	$frames same "$work/ma.mp" "$work/z.mp" || fail "$ep: output differs"
	echo "ok: fi-prefill -o $ep -> fi-decode -i $ep"
done
fi-decode -m tiny -n 32 -i "ipc://$work/d2" > "$work/z2.mp" & d=$!; pids="$pids $d"
fi-prefill -m tiny $A --temp 0 -i "ipc://$work/p2" -o "ipc://$work/d2" & p=$!; pids="$pids $p"
if command -v fi-tokenize > /dev/null; then
	fi-tokenize -m tiny -o "ipc://$work/p2" < "$work/prompts.txt" || fail "fi-tokenize -o"
	fi-tokenize -m tiny < "$work/prompts.txt" | fi-decode -m tiny --temp 0 -n 32 > "$work/za.mp"
	wait_exit $p 60 && wait_exit $d 60 || fail "workers did not end"
	$frames same "$work/za.mp" "$work/z2.mp" || fail "tokenize -> prefill -> decode workers differ"
	echo "ok: fi-tokenize -o ipc -> fi-prefill worker -> fi-decode worker"
else
	kill -TERM $p; wait_exit $p 20 || fail "idle prefill worker ignored SIGTERM"
	wait_exit $d 20 || fail "decode worker did not end after the prefill worker"
fi

# SIGTERM: a decode worker running long requests ends them with finish "cancel"; each request
# sent gets a done or an error frame; exit status 3 (requests cut short by the signal).
$frames prompts 12 30 5 400 | $frames enc > "$work/long.mp"
fi-decode -m tiny -e 0 -i "ipc://$work/d3" > "$work/t.mp" & d=$!; pids="$pids $d"
fi-prefill -m tiny $A -o "ipc://$work/d3" < "$work/long.mp" || fail "prefill to d3"
sleep 1
kill -TERM $d
wait_exit $d 30; rc=$?
[ $rc -eq 3 ] || fail "SIGTERM: decode exit $rc"
$frames dec < "$work/t.mp" > "$work/t.jsonl"
python3 - "$work/t.jsonl" <<'PY' || fail "SIGTERM frames: $(grep -v token "$work/t.jsonl")"
import json, sys
fr = [json.loads(l) for l in open(sys.argv[1])]
end = {f["id"]: f for f in fr if f["type"] in ("done", "error")}
assert sorted(end) == sorted("q%d" % i for i in range(12)), sorted(end)
assert any(f.get("finish") == "cancel" for f in end.values()), end
PY
echo "ok: SIGTERM answers every request"

# A slow consumer: the output blocks, fi-decode stops reading, its memory stays bounded.
$frames prompts 150 24 9 32 | $frames enc > "$work/slow.mp"
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
