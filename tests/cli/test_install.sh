#!/bin/sh
# make install: binaries, library, headers, pkg-config file and man pages land under
# DESTDIR/PREFIX, and a program builds against the installed library through pkg-config.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
[ -n "${BUILD:-}" ] || { echo "SKIPPED: BUILD not set" >&2; exit 77; }
dest=$TMPDIR/dest
make -s -C "$root" BUILD="$BUILD" PREFIX=/opt/fi DESTDIR="$dest" install >"$TMPDIR/log" 2>&1 ||
	fail "make install: $(tail -n 5 "$TMPDIR/log")"
p=$dest/opt/fi
for f in bin/fi-load bin/fi-tokenize bin/fi-decode bin/fi-prefill bin/fi-bench lib/libfi.a lib/libfi.so \
	include/fi/base/tensor.h include/fi/model/model.h lib/pkgconfig/fi.pc share/man/man1/fi-load.1 \
	share/man/man5/fi-frame.5 share/man/man7/fi.7; do
	[ -e "$p/$f" ] || fail "missing $f"
done
grep -qx 'prefix=/opt/fi' "$p/lib/pkgconfig/fi.pc" || fail "fi.pc: $(head -n 1 "$p/lib/pkgconfig/fi.pc")"
"$p/bin/fi-load" -h >/dev/null || fail "installed fi-load -h"
# The pkg-config file points at /opt/fi; rewrite the prefix to where DESTDIR put it.
sed "s#^prefix=.*#prefix=$p#" "$p/lib/pkgconfig/fi.pc" > "$TMPDIR/fi.pc"
cat > "$TMPDIR/t.c" <<'C'
#include <stdio.h>
#include <base/tensor.h>
int main(void) { printf("%s %zu\n", fi_dtype_name(FI_DT_BF16), fi_dtype_size(FI_DT_BF16)); return 0; }
C
PKG_CONFIG_PATH=$TMPDIR cc "$TMPDIR/t.c" $(PKG_CONFIG_PATH=$TMPDIR pkg-config --cflags --libs fi) \
	-Wl,-rpath,"$p/lib" -o "$TMPDIR/t" || fail "cannot build against the installed libfi"
[ "$("$TMPDIR/t")" = "BF16 2" ] || fail "program output: $("$TMPDIR/t")"
echo ok
