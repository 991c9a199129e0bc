#!/bin/sh
# libfi(3) lists every function of the public headers (include/fi), and nothing else, in
# its SYNOPSIS; every public header is reached from fi.h.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
[ -d "$root/include/fi" ] || { echo "SKIPPED: not in the source tree" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Declarations: "type name(" at the start of a line (the headers' style), fi_ names only.
cat "$root"/include/fi/*.h | sed -n 's/^[a-z_A-Z].*[ *]\(fi_[a-z_0-9]*\)(.*/\1/p' | sort -u > "$work/h"
sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESCRIPTION/s/^\.Fn \([a-z_0-9]*\).*/\1/p' "$root/man/man3/libfi.3" |
	sort -u > "$work/m"
[ "$(wc -l < "$work/h")" -ge 40 ] || fail "only $(wc -l < "$work/h") public functions found"
comm -23 "$work/h" "$work/m" > "$work/undoc"
[ ! -s "$work/undoc" ] || fail "not in libfi(3): $(cat "$work/undoc")"
comm -13 "$work/h" "$work/m" > "$work/gone"
[ ! -s "$work/gone" ] || fail "in libfi(3) but in no header: $(cat "$work/gone")"
for h in "$root"/include/fi/fi_*.h; do
	grep -q "#include \"$(basename "$h")\"" "$root/include/fi/fi.h" || fail "fi.h does not include $(basename "$h")"
done
echo "ok: $(wc -l < "$work/h") functions"
