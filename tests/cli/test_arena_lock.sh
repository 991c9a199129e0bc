#!/bin/sh
# A process stopped while it holds the KV arena's lock (SIGSTOP inside a publish, through the
# FI_ARENA_STOP testing hook). Every other user waits at most the documented bound
# (FI_ARENA_LOCK_TIMEOUT, 1 s here; 5 s by default), then: fi-decode --prefix-cache and
# fi-prefill warn and compute without the arena, with unchanged output; fi-load --arena fails
# naming the stopped process. They used to wait forever.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
holder=
trap '[ -n "$holder" ] && kill -KILL $holder 2>/dev/null; rm -rf "$work"' EXIT
export LC_ALL=C FI_ARENA_LOCK_TIMEOUT=1
fi-load --name tiny "$root/models/tiny" > /dev/null 2>&1 || fail "fi-load tiny"
seq 3 | sed 's/.*/def function_&(argument, other): return argument * other + &/' > "$work/p.txt"
fi-tokenize -m tiny < "$work/p.txt" > "$work/req.mp" || fail "fi-tokenize"
fi-decode -m tiny -n 8 --temp 0 < "$work/req.mp" | fi-tokenize -m tiny -d > "$work/alone.txt" ||
	fail "decode alone"

FI_ARENA_STOP=locked-publish fi-prefill -m tiny --arena-size 16M < "$work/req.mp" \
	> /dev/null 2>&1 & holder=$!
i=0
until [ "$(awk '{print $3}' /proc/$holder/stat 2> /dev/null)" = T ]; do
	i=$((i + 1)); [ $i -gt 300 ] && fail "the holder did not stop"; sleep 0.1
done

# $1 name: runs the rest, which must end within 30 s
bounded() {
	name=$1
	shift
	t0=$(date +%s)
	timeout 30 "$@"
	rc=$?
	[ $rc = 124 ] && fail "$name waited for the stopped process"
	echo "$name: $(($(date +%s) - t0)) s"
	return $rc
}
bounded "fi-decode --prefix-cache" sh -c 'fi-decode -m tiny -n 8 --temp 0 --prefix-cache \
	< "$1/req.mp" 2> "$1/err" | fi-tokenize -m tiny -d > "$1/b.txt"' sh "$work" ||
	fail "fi-decode --prefix-cache: $(cat "$work/err")"
grep -q "held for more than 1 s by process $holder " "$work/err" ||
	fail "fi-decode: warning: $(cat "$work/err")"
cmp -s "$work/alone.txt" "$work/b.txt" || fail "fi-decode output changed"

bounded "fi-prefill" sh -c 'fi-prefill -m tiny --temp 0 < "$1/req.mp" 2> "$1/err" |
	fi-decode -m tiny -n 8 | fi-tokenize -m tiny -d > "$1/c.txt"' sh "$work" ||
	fail "fi-prefill: $(cat "$work/err")"
grep -q "warning: .*held for more than 1 s by process $holder .*passing requests on without KV" \
	"$work/err" || fail "fi-prefill: warning: $(cat "$work/err")"
cmp -s "$work/alone.txt" "$work/c.txt" || fail "fi-prefill | fi-decode output changed"

bounded "fi-load --arena" fi-load --arena > /dev/null 2> "$work/err"
rc=$?
[ $rc = 1 ] || fail "fi-load --arena: exit $rc"
grep -q "^fi-load: kv arena .*held for more than 1 s by process $holder (stopped or stuck?)" \
	"$work/err" || fail "fi-load --arena: $(cat "$work/err")"

# The holder dies: the next user repairs the lock and the arena works again.
kill -KILL $holder
wait $holder 2> /dev/null
holder=
fi-load --arena > "$work/ls" 2> "$work/err" || fail "after the holder died: $(cat "$work/err")"
fi-prefill -m tiny --temp 0 < "$work/req.mp" > /dev/null 2> "$work/err" || fail "prefill after"
grep -q "held for more" "$work/err" && fail "still waiting: $(cat "$work/err")"
echo "all arena lock checks passed"
