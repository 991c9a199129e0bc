#!/bin/sh
# FI_HOME trust: a world-writable FI_HOME (or one of its directories) is refused by every
# command, with the reason, instead of being used silently; a group directory (setgid, 2770)
# shares models and KV on purpose. (The per-user default is checked in test_store.)
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
trap 'chmod -R u+rwx "$work" 2>/dev/null; rm -rf "$work"' EXIT
export LC_ALL=C
fi-load --name tiny "$root/models/tiny" > /dev/null 2>&1 || fail "fi-load tiny"
printf 'def main():\n' | fi-tokenize -m tiny > "$work/req.mp" || fail "fi-tokenize"
fi-prefill -m tiny --arena-size 8M < "$work/req.mp" > /dev/null 2>&1 || fail "prefill"

# World-writable: each command refuses, naming FI_HOME and why.
chmod 0777 "$FI_HOME"
expect() { # what, status, command...
	what=$1 want=$2
	shift 2
	"$@" < "$work/req.mp" > "$work/out" 2> "$work/err"; rc=$?
	[ $rc = "$want" ] || fail "$what: exit $rc, want $want: $(cat "$work/err")"
	grep -q "'$FI_HOME' is writable by every user (mode 0777)" "$work/err" ||
		fail "$what: message: $(cat "$work/err")"
}
expect "fi-load -l" 1 fi-load -l
expect "fi-load DIR" 1 fi-load --name t2 "$root/models/tiny"
expect "fi-load --arena" 1 fi-load --arena
expect "fi-decode -m NAME" 1 fi-decode -m tiny -n 2
expect "fi-tokenize -m NAME" 1 fi-tokenize -m tiny
expect "fi-bench -m NAME" 1 fi-bench -m tiny tg1
# A model given by path still runs, but the arena in FI_HOME is not used: a warning.
fi-decode -m "$FI_HOME/models/tiny.fim" -n 2 --prefix-cache < "$work/req.mp" > /dev/null \
	2> "$work/err" || fail "decode by path: $(cat "$work/err")"
grep -q "without the arena.*writable by every user" "$work/err" ||
	fail "decode by path: no warning: $(cat "$work/err")"
chmod 0700 "$FI_HOME"

# A directory inside written by others is refused too.
chmod 0777 "$FI_HOME/kv"
fi-load --arena > /dev/null 2> "$work/err" && fail "world-writable kv: listed"
grep -q "'$FI_HOME/kv' is writable by every user" "$work/err" || fail "kv: $(cat "$work/err")"
chmod 0700 "$FI_HOME/kv"
fi-load --arena > /dev/null || fail "trusted again"

# A group directory (setgid, 2770, of a group this user is in): used, and what fi makes in it
# is the group's.
g=$work/shared
mkdir "$g" && chgrp "$(id -g)" "$g" && chmod 2770 "$g" || fail "making a group directory"
FI_HOME=$g fi-load --name tiny "$root/models/tiny" > /dev/null || fail "group: fi-load"
FI_HOME=$g fi-prefill -m tiny --arena-size 8M < "$work/req.mp" > /dev/null ||
	fail "group: fi-prefill"
[ "$(stat -c %a "$g/kv")" = 2770 ] || fail "group: kv directory mode $(stat -c %a "$g/kv")"
[ "$(stat -c %a "$g/models")" = 2770 ] || fail "group: models mode $(stat -c %a "$g/models")"
for f in "$g"/kv/*.kv; do
	[ "$(stat -c %a "$f")" = 660 ] || fail "group: arena file mode $(stat -c %a "$f")"
done
FI_HOME=$g fi-load --arena | grep -q " tiny " || fail "group: arena not listed"

echo "all FI_HOME trust checks passed"
