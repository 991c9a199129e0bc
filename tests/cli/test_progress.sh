#!/bin/sh
# Progress and summaries of fi-decode and fi-prefill: off a terminal, one summary line on
# stderr at the end of a batch (requests, failed, tokens, seconds, tok/s) and nothing else;
# on a terminal (script(1) gives a pty) a live line of requests done, running and queued and
# tokens per second, erased before the summary; fi-decode -v in frame mode, one line per
# request; FI_LOG=error keeps stderr quiet.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"
frames_prompts 40 24 3 16 | fi-frame -e > "$work/req.mp" || fail "requests"
printf '%s\n' '{"v":1,"type":"request","id":"bad","tokens":[999999]}' | fi-frame -e > "$work/bad.mp"
cat "$work/req.mp" "$work/bad.mp" > "$work/all.mp"

# Off a terminal: the summary only, with the counts of the frames written.
fi-decode -m tiny < "$work/all.mp" > "$work/out.mp" 2> "$work/err" || fail "fi-decode exit $?"
n=$(fi-frame -t done < "$work/out.mp" | jq -s 'map(.counts.gen_tokens) | add')
[ "$(grep -c . "$work/err")" = 1 ] || fail "fi-decode stderr: $(cat "$work/err")"
grep -q "^fi-decode: 41 requests, 1 failed, $n tokens in [0-9.]* s, [0-9.]* tok/s$" "$work/err" ||
	fail "fi-decode summary ($n tokens): $(cat "$work/err")"
fi-prefill -m tiny --arena-size 16M < "$work/all.mp" > /dev/null 2> "$work/err" || fail "fi-prefill exit $?"
p=$(fi-frame < "$work/req.mp" | jq -s 'map(.tokens | length) | add')
[ "$(grep -c . "$work/err")" = 1 ] &&
	grep -q "^fi-prefill: 41 requests, 1 failed, $p tokens (0 cached) in [0-9.]* s, [0-9.]* tok/s$" "$work/err" ||
	fail "fi-prefill summary ($p tokens): $(cat "$work/err")"
fi-prefill -m tiny < "$work/req.mp" > /dev/null 2> "$work/err" || fail "fi-prefill again"
grep -q "^fi-prefill: 40 requests, 0 failed, $p tokens ([1-9][0-9]* cached)" "$work/err" ||
	fail "fi-prefill cached: $(cat "$work/err")"
# Nothing to sum up, or asked to be quiet: nothing.
fi-decode -m tiny < /dev/null 2> "$work/err" > /dev/null || fail "empty input"
[ ! -s "$work/err" ] || fail "summary of nothing: $(cat "$work/err")"
FI_LOG=error fi-decode -m tiny < "$work/req.mp" 2> "$work/err" > /dev/null || fail "FI_LOG=error"
[ ! -s "$work/err" ] || fail "FI_LOG=error: $(cat "$work/err")"
echo "ok: summaries"

# fi-decode -v with frames: one line per request, then the summary.
fi-decode -m tiny -v < "$work/req.mp" 2> "$work/err" > /dev/null || fail "-v exit $?"
[ "$(grep -c "^fi-decode: 'q[0-9]*': [0-9]* prompt tokens (0 cached), 16 generated, finish length, ttft [0-9.]* ms, tpot [0-9.]* ms$" "$work/err")" = 40 ] ||
	fail "-v lines: $(head -3 "$work/err")"
echo "ok: fi-decode -v"

# On a terminal: the live line, redrawn with \r, erased, then the summary. It waits for
# FI_LIVE_DELAY seconds of work (default 1): a short run shows none.
command -v script > /dev/null || fail "script(1) absent (util-linux)"
frames_prompts 2 8 1 1 | fi-frame -e > "$work/short.mp"
script -qec "fi-decode -m tiny < $work/short.mp > /dev/null" /dev/null > "$work/tty" || fail "short run"
grep -q "running" "$work/tty" && fail "a live line for a short run: $(cat "$work/tty")"
grep -q "2 requests" "$work/tty" || fail "short run: no summary: $(cat "$work/tty")"
for cmd in fi-decode fi-prefill; do
	FI_LIVE_DELAY=0 script -qec "$cmd -m tiny < $work/req.mp > $work/tty.mp" /dev/null > "$work/tty" ||
		fail "$cmd on a terminal"
	tr '\r' '\n' < "$work/tty" | sed "s/$(printf '\033')\[K//g" > "$work/lines"
	grep -q "^$cmd: [0-9]* done, [0-9]* running, [0-9]* queued, [0-9.]* tok/s" "$work/lines" ||
		fail "$cmd: no live line: $(od -c "$work/tty" | head)"
	grep -q "^$cmd: 40 requests, 0 failed" "$work/lines" || fail "$cmd: no summary on a terminal"
	# the live line is erased (\033[K) before the summary is written
	grep . "$work/lines" | tail -n 1 | grep -q "requests" || fail "$cmd: last line: $(tail -n 2 "$work/lines")"
	grep -q "$(printf '\033')\[K" "$work/tty" || fail "$cmd: the live line is not erased"
	[ "$(frames_count "$work/tty.mp" done)" = 40 ] || [ $cmd = fi-prefill ] || fail "$cmd: output"
done
echo "all progress checks passed"
