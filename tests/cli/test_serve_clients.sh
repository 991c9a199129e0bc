#!/bin/sh
# A bound fi-decode serving clients directly (fi-decode(1), SERVING CLIENTS): two clients
# whose ids both start at 1 each get exactly their own replies, the tokens a pipe gives; a
# client killed mid-stream has its requests dropped and its KV freed; a stale ipc socket
# file is replaced, a live one refused; nothing listening is a clear error and exit 1.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"
# the ids, tokens and finish of a frame stream, one line per frame, sorted
summary() { fi-frame < "$1" | python3 -c '
import json, sys
for l in sys.stdin:
    f = json.loads(l)
    print(f["type"], f.get("id"), f.get("token", ""), f.get("finish", ""))' | sort; }
wait_sock() { i=0; while [ ! -S "$1" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done; }

printf 'The cat sat on the\nimport os\n' > "$work/a.txt"
printf 'def main():\nclass Parser(object):\nfor i in range(10):\n' > "$work/b.txt"
for c in a b; do
	fi-tokenize -m tiny < "$work/$c.txt" > "$work/$c.req" || fail "fi-tokenize $c"
	fi-decode -m tiny -n 12 --temp 0 < "$work/$c.req" > "$work/$c.pipe" 2> /dev/null ||
		fail "pipe $c"
done

ep=ipc://$work/w
fi-decode -m tiny -n 12 --temp 0 -i "$ep" -v 2> "$work/w.err" & w=$!
pids="$pids $w"
wait_sock "$work/w"
fi-frame -c "$ep" < "$work/a.req" > "$work/a.out" & ca=$!
fi-frame -c "$ep" < "$work/b.req" > "$work/b.out" & cb=$!
wait $ca || fail "client a: exit $?"
wait $cb || fail "client b: exit $?"
for c in a b; do
	summary "$work/$c.pipe" > "$work/$c.want"
	summary "$work/$c.out" > "$work/$c.got"
	cmp -s "$work/$c.want" "$work/$c.got" ||
		fail "client $c: replies differ from the pipe's: $(diff "$work/$c.want" "$work/$c.got" | head)"
done
[ "$(grep -c '^done' "$work/a.got")" = 2 ] && [ "$(grep -c '^done' "$work/b.got")" = 3 ] ||
	fail "done frames: $(grep -c '^done' "$work/a.got") and $(grep -c '^done' "$work/b.got")"
echo "ok: two clients, ids from 1 each, their own replies"

# two clients sending the same ids at the same time
fi-frame -c "$ep" < "$work/a.req" > "$work/dup.out" 2> /dev/null & c1=$!
fi-frame -c "$ep" < "$work/a.req" > "$work/dup2.out" 2> /dev/null & c2=$!
wait $c1 || fail "client 1 of 2 same-id clients: exit $?"
wait $c2 || fail "client 2 of 2 same-id clients: exit $?"

# a worker already serving the path: "address in use", exit 1
fi-decode -m tiny -i "$ep" < /dev/null > /dev/null 2> "$work/busy.err"; rc=$?
[ $rc = 1 ] || fail "second worker on a live path: exit $rc"
grep -q "cannot bind '$ep': address in use" "$work/busy.err" || fail "live path: $(cat "$work/busy.err")"
kill $w; wait $w
grep -q 'fi-decode: 9 requests, 0 failed' "$work/w.err" || fail "worker summary: $(tail -n 2 "$work/w.err")"
[ ! -e "$work/w" ] || fail "the socket file outlived its worker"
echo "ok: a live path is refused"

# a client killed mid-stream: its requests end, their KV is freed
fi-decode -m tiny -n 900 --ignore-eos -i "$ep" -v 2> "$work/k.err" & w=$!
pids="$pids $w"
wait_sock "$work/w"
fi-tokenize -m tiny < "$work/b.txt" > "$work/long.req"
fi-frame -c "$ep" < "$work/long.req" > "$work/k.out" & c=$!
i=0; while [ ! -s "$work/k.out" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
[ -s "$work/k.out" ] || fail "no token before the kill"
kill -9 $c
i=0; while ! grep -q 'client gone' "$work/k.err" && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
line=$(grep 'client gone' "$work/k.err" | tail -n 1)
[ -n "$line" ] || fail "no 'client gone' line: $(tail -n 3 "$work/k.err")"
echo "$line" | grep -Eq 'kv ([0-9]+) of \1 blocks free' || fail "KV not freed: $line"
# the worker goes on serving
fi-frame -c "$ep" < "$work/a.req" > /dev/null || fail "a client after the killed one: exit $?"
kill -9 $w; wait $w 2> /dev/null
echo "ok: $line"

# the dead worker's socket file is stale: the next one replaces it
[ -S "$work/w" ] || fail "kill -9 left no socket file to test with"
fi-decode -m tiny -n 4 --temp 0 -i "$ep" 2> "$work/s.err" & w=$!
pids="$pids $w"
sleep 0.5
fi-frame -c "$ep" --timeout 5 < "$work/a.req" > "$work/s.out" || fail "stale path: client exit $?"
[ "$(fi-frame -t done < "$work/s.out" | wc -l)" = 2 ] || fail "stale path: done frames"
kill $w; wait $w
echo "ok: stale socket file replaced"

# nothing listening: a clear error and exit 1, for a client and for a producer
fi-frame -c "ipc://$work/nobody" --timeout 1 < "$work/a.req" > /dev/null 2> "$work/n.err"; rc=$?
[ $rc = 1 ] || fail "client, nothing listening: exit $rc"
grep -q "^fi-frame: cannot connect to 'ipc://$work/nobody': nothing is listening (waited 1 s)$" \
	"$work/n.err" || fail "client message: $(cat "$work/n.err")"
FI_CONNECT_TIMEOUT=1 fi-tokenize -m tiny -o "ipc://$work/nobody" < "$work/a.txt" 2> "$work/p.err"; rc=$?
[ $rc = 1 ] || fail "producer, nothing listening: exit $rc"
grep -q "cannot connect to 'ipc://$work/nobody': nothing is listening" "$work/p.err" ||
	fail "producer message: $(cat "$work/p.err")"
# a regular file at the path is never removed
echo keep > "$work/file"
fi-decode -m tiny -i "ipc://$work/file" < /dev/null 2> "$work/f.err"; rc=$?
[ $rc = 1 ] && [ "$(cat "$work/file")" = keep ] || fail "a file at the path: exit $rc"
grep -q "exists and is not a socket" "$work/f.err" || fail "file message: $(cat "$work/f.err")"
echo "ok: connect timeouts and paths"
