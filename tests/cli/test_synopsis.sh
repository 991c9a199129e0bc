#!/bin/sh
# Every command's usage (-h), generated from its option table (cmd/opt.c), against the
# SYNOPSIS of its man page as mandoc renders it; every option of the usage has an entry in
# the page's OPTIONS; --version on every command; the usage errors and value messages the
# table gives, the same for every command.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v mandoc > /dev/null || { echo "SKIPPED: mandoc not installed (tools/deps.sh)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
render() { mandoc -Tascii -Owidth=200 "$1" | col -bx; }

n=0
for page in "$root"/man/man1/fi-*.1; do
	cmd=$(basename "$page" .1)
	command -v "$cmd" > /dev/null || fail "$cmd: not built"
	"$cmd" -h > "$work/h" || fail "$cmd -h exit $?"
	# The usage lines: up to the first note (a line in column 0 without "usage:").
	awk '/^usage: / || /^ / { print; next } { exit }' "$work/h" | sed 's/^usage: //' | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//' > "$work/usage"
	render "$page" > "$work/page"
	sed -n '/^SYNOPSIS/,/^DESCRIPTION/p' "$work/page" | sed '1d;$d' | tr -s ' \t\n' ' ' |
		sed 's/^ //; s/ $//' > "$work/syn"
	[ -s "$work/syn" ] || fail "$cmd: no SYNOPSIS in $page"
	diff "$work/usage" "$work/syn" > "$work/diff" ||
		fail "$cmd -h differs from the SYNOPSIS of $page: $(cat "$work/diff")"
	# Every option of the usage is described: it heads an entry of the rendered page (a
	# line indented as a list tag, starting with an option).
	grep -E '^ {5}-' "$work/page" > "$work/tags"
	for opt in $(tr ' []|' '\n\n\n\n' < "$work/usage" | grep '^-' | sort -u); do
		grep -Eq "(^| )$opt( |,|$)" "$work/tags" || fail "$cmd: $opt has no entry in $page"
	done
	"$cmd" --version > "$work/v" || fail "$cmd --version exit $?"
	grep -Eq "^$cmd \\(fi\\) [0-9]+\\.[0-9]+\\.[0-9]+" "$work/v" || fail "$cmd --version: $(cat "$work/v")"
	# Usage errors: exit 2, "cmd: reason" first, then the usage; nothing on stdout.
	"$cmd" --no-such-option > "$work/out" 2> "$work/err"; rc=$?
	[ $rc -eq 2 ] || fail "$cmd --no-such-option: exit $rc"
	[ ! -s "$work/out" ] || fail "$cmd --no-such-option wrote to stdout"
	[ "$(head -n 1 "$work/err")" = "$cmd: unknown option '--no-such-option'" ] ||
		fail "$cmd --no-such-option: $(cat "$work/err")"
	sed -n 2p "$work/err" | grep -q "^usage: $cmd " || fail "$cmd: no usage after the error"
	grep -q "error:" "$work/err" && fail "$cmd: 'error:' prefix: $(cat "$work/err")"
	n=$((n + 1))
done
[ $n -ge 5 ] || fail "only $n man pages in man/man1"

# A value out of range names the option and what it must be (exit 2, no usage).
fi-decode -m x --temp -1 2> "$work/err"; [ $? -eq 2 ] || fail "--temp -1: exit status"
[ "$(cat "$work/err")" = "fi-decode: invalid value '-1' for --temp (a number from 0 to 10000)" ] ||
	fail "--temp -1: $(cat "$work/err")"
fi-prefill -m x --top-k=-3 2> "$work/err"; [ $? -eq 2 ] || fail "--top-k=-3: exit status"
grep -q "^fi-prefill: invalid value '-3' for --top-k (a whole number from 0 to " "$work/err" ||
	fail "--top-k=-3: $(cat "$work/err")"
fi-bench -m x -o xml 2> "$work/err"; [ $? -eq 2 ] || fail "-o xml: exit status"
[ "$(cat "$work/err")" = "fi-bench: invalid value 'xml' for -o (one of md, csv, json)" ] ||
	fail "fi-bench -o xml: $(cat "$work/err")"
fi-decode -m x --backend gpu 2> "$work/err"; [ $? -eq 2 ] || fail "--backend gpu: exit status"
grep -q "invalid value 'gpu' for --backend (one of auto, cuda, cpu)" "$work/err" ||
	fail "--backend gpu: $(cat "$work/err")"
fi-decode -m x --arena-size 12 2> "$work/err"; [ $? -eq 2 ] || fail "--arena-size 12: exit"
fi-decode -m x -n 2> "$work/err"; [ $? -eq 2 ] || fail "-n without a value: exit status"
[ "$(head -n 1 "$work/err")" = "fi-decode: option '-n' needs a value" ] || fail "-n: $(cat "$work/err")"
fi-prefill 2> "$work/err"; [ $? -eq 2 ] || fail "no -m: exit status"
grep -q "^fi-prefill: no model: give -m MODEL" "$work/err" || fail "no -m: $(cat "$work/err")"
fi-tokenize -m x --render 2> "$work/err"; [ $? -eq 2 ] || fail "--render alone: exit status"
fi-load --arena extra 2> "$work/err"; [ $? -eq 2 ] || fail "--arena DIR: exit status"
echo "ok: $n commands"
