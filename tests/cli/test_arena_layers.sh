#!/bin/sh
# The KV arena's files call one way, bottom up (lib/arena_shm.h): arena_index <- arena_lease,
# arena_store <- arena. Checked on libfi.a's objects: no file may use a symbol defined by a
# file above it (or beside it: lease and store are independent). There was a circle before
# (index called lease, lease called arena.c, arena.c called store, store called arena.c).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -n "${BUILD:-}" ] && [ -f "$BUILD/libfi.a" ] || { echo "SKIPPED: BUILD/libfi.a not found" >&2; exit 77; }
command -v nm > /dev/null || { echo "SKIPPED: nm absent" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
nm -A "$BUILD/libfi.a" 2> /dev/null > "$work/nm" || fail "nm"
# $1 object: the symbols it defines / uses
defs() { awk -v o="$1.o:" 'index($1, o) && $2 ~ /^[TDB]$/ {print $3}' "$work/nm" | sort -u; }
uses() { awk -v o="$1.o:" 'index($1, o) && $2 == "U" {print $3}' "$work/nm" | sort -u; }
for f in arena_index arena_lease arena_store arena; do
	defs $f > "$work/$f.defs"
	uses $f > "$work/$f.uses"
	[ -s "$work/$f.defs" ] || fail "$f.o defines nothing (renamed?)"
done
# who may not be called by whom
check() { # user, callee
	common=$(comm -12 "$work/$1.uses" "$work/$2.defs" | tr '\n' ' ')
	[ -z "$common" ] || fail "$1 calls $2, above or beside it: $common"
}
check arena_index arena_lease
check arena_index arena_store
check arena_index arena
check arena_lease arena_store
check arena_lease arena
check arena_store arena_lease
check arena_store arena
# and the calls that do go down exist (the check is not vacuous)
[ -n "$(comm -12 "$work/arena_lease.uses" "$work/arena_index.defs")" ] || fail "lease calls no index"
[ -n "$(comm -12 "$work/arena.uses" "$work/arena_store.defs")" ] || fail "arena calls no store"
echo "arena layers: index <- lease, store <- arena"
