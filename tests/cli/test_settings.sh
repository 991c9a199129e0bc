#!/bin/sh
# One place for tunables: no getenv() in libfi or the kernels outside lib/base/settings.c,
# and every variable settings.c reads is documented in fi(7) ENVIRONMENT as mandoc renders
# it (and fi(7) lists none that nothing reads).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
[ -f "$root/lib/base/settings.c" ] || { echo "SKIPPED: not in the source tree" >&2; exit 77; }
command -v mandoc > /dev/null || { echo "SKIPPED: mandoc not installed (tools/deps.sh)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -rn 'getenv *(' "$root/lib" "$root/kernels" | grep -v '^[^:]*lib/base/settings.c:' > "$work/stray"
[ ! -s "$work/stray" ] || fail "getenv outside lib/base/settings.c: $(cat "$work/stray")"
sed -n 's/.*"\(FI_[A-Z0-9_]*\|NCCL_[A-Z0-9_]*\|TMPDIR\)".*/\1/p' "$root/lib/base/settings.c" | sort -u > "$work/read"
[ "$(wc -l < "$work/read")" -ge 20 ] || fail "settings.c reads only: $(cat "$work/read")"
mandoc -Tascii -Owidth=200 "$root/man/man7/fi.7" | col -bx |
	sed -n '/^ENVIRONMENT/,/^FILES/p' > "$work/env"
grep -E '^ {5}[A-Z]' "$work/env" | tr ', ' '\n\n' | grep -E '^(FI_|NCCL_|TMPDIR)' | sort -u > "$work/doc"
comm -23 "$work/read" "$work/doc" > "$work/undoc"
[ ! -s "$work/undoc" ] || fail "read but not in fi(7): $(cat "$work/undoc")"
comm -13 "$work/read" "$work/doc" > "$work/unread"
[ ! -s "$work/unread" ] || fail "in fi(7) but read by nothing: $(cat "$work/unread")"
echo "ok: $(wc -l < "$work/read") variables"
