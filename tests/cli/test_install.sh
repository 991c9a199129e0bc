#!/bin/sh
# make install: binaries, libfi (static, and shared with its SONAME), only the public
# headers (include/fi), the pkg-config file and man pages land under DESTDIR/PREFIX; then
# examples/generate.c, a program over the public API, is built against the installed
# library through pkg-config both ways (dynamically, and statically with
# pkg-config --static) and both give the text fi-decode gives for the same greedy request.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
[ -n "${BUILD:-}" ] || { echo "SKIPPED: BUILD not set" >&2; exit 77; }
. "$root/tests/cli/frames.sh"
dest=$TMPDIR/dest
# FI_CUDA as the tree was built (make check passes it), so install rebuilds nothing.
make -s -C "$root" BUILD="$BUILD" ${FI_CUDA:+FI_CUDA=$FI_CUDA} PREFIX=/opt/fi DESTDIR="$dest" \
	install >"$TMPDIR/log" 2>&1 || fail "make install: $(tail -n 5 "$TMPDIR/log")"
p=$dest/opt/fi
for f in bin/fi-load bin/fi-tokenize bin/fi-decode bin/fi-prefill bin/fi-bench lib/libfi.a \
	lib/libfi.so lib/libfi.so.0 include/fi/fi.h include/fi/fi_err.h include/fi/fi_model.h \
	include/fi/fi_text.h include/fi/fi_frame.h include/fi/fi_sched.h lib/pkgconfig/fi.pc \
	share/man/man1/fi-load.1 share/man/man3/libfi.3 share/man/man5/fi-frame.5 share/man/man7/fi.7; do
	[ -e "$p/$f" ] || fail "missing $f"
done
# Only the public headers: fi.h and fi_*.h, nothing of lib/.
extra=$(cd "$p/include" && find . -type f ! -name 'fi.h' ! -name 'fi_*.h')
[ -z "$extra" ] || fail "internal headers installed: $extra"
[ -z "$(find "$p/include" -mindepth 2 -type d)" ] || fail "header folders installed: $(find "$p/include" -type d)"
for h in "$p"/include/fi/*.h; do
	[ "$(basename "$h")" = fi.h ] && continue
	grep -q 'extern "C"' "$h" || fail "$h has no extern \"C\""
done
readelf -d "$p/lib/libfi.so" | grep -q 'SONAME.*\[libfi\.so\.0\]' || fail "no SONAME libfi.so.0"
[ "$(readlink "$p/lib/libfi.so")" = "libfi.so.0.1.0" ] || fail "libfi.so -> $(readlink "$p/lib/libfi.so")"
grep -qx 'prefix=/opt/fi' "$p/lib/pkgconfig/fi.pc" || fail "fi.pc: $(head -n 1 "$p/lib/pkgconfig/fi.pc")"
grep -q '^Libs.private: .*-ljansson .*-lzmq .*-lpthread -lm' "$p/lib/pkgconfig/fi.pc" ||
	fail "fi.pc Libs.private: $(grep Libs.private "$p/lib/pkgconfig/fi.pc")"
if nm "$p/lib/libfi.a" 2>/dev/null | grep -q ' U cudaMalloc$'; then
	grep -q '^Libs.private:.*-lcudart' "$p/lib/pkgconfig/fi.pc" || fail "CUDA build: fi.pc lacks -lcudart"
fi
"$p/bin/fi-load" -h >/dev/null || fail "installed fi-load -h"

# The pkg-config file points at /opt/fi; rewrite the prefix to where DESTDIR put it.
sed "s#^prefix=.*#prefix=$p#" "$p/lib/pkgconfig/fi.pc" > "$TMPDIR/fi.pc"
pc() { PKG_CONFIG_PATH=$TMPDIR pkg-config "$@" fi; }
cc -std=c99 -Wall -Werror "$root/examples/generate.c" $(pc --cflags --libs) -Wl,-rpath,"$p/lib" \
	-o "$TMPDIR/gen-dyn" || fail "cannot build against the installed libfi.so"
readelf -d "$TMPDIR/gen-dyn" | grep -q 'NEEDED.*\[libfi\.so\.0\]' || fail "gen-dyn does not load libfi.so.0"
# Statically: libfi.a, and what pkg-config --static adds (the dependencies, CUDA's libraries)
libs=$(pc --static --libs | sed 's/\(^\| \)-lfi\( \|$\)/ /')
cc -std=c99 -Wall -Werror "$root/examples/generate.c" $(pc --cflags) "$p/lib/libfi.a" $libs \
	-o "$TMPDIR/gen-static" || fail "cannot build against the installed libfi.a"
readelf -d "$TMPDIR/gen-static" | grep -q 'NEEDED.*libfi' && fail "gen-static loads libfi"
# A C++ compiler takes the headers as they are.
if command -v c++ > /dev/null; then
	printf '#include <fi/fi.h>\nint main() { return fi_version()[0] == 0; }\n' > "$TMPDIR/t.cc"
	c++ "$TMPDIR/t.cc" $(pc --cflags --libs) -Wl,-rpath,"$p/lib" -o "$TMPDIR/t-cc" ||
		fail "C++ cannot use the headers"
	"$TMPDIR/t-cc" || fail "C++ program"
fi

# Both run, on the CPU, and give fi-decode's text for the same greedy request.
cd "$TMPDIR"
"$p/bin/fi-load" "$root/models/tiny" --name tiny > /dev/null 2>&1 || fail "fi-load tiny"
GENERATE_BACKEND=cpu ./gen-dyn tiny 'def main():' 12 dyn.msgpack > dyn.txt 2> dyn.err ||
	fail "gen-dyn: $(cat dyn.err)"
GENERATE_BACKEND=cpu ./gen-static tiny 'def main():' 12 static.msgpack > static.txt 2> static.err ||
	fail "gen-static: $(cat static.err)"
grep -q "^generate: 12 tokens on cpu .*; 12 token frames read back$" dyn.err || fail "gen-dyn: $(cat dyn.err)"
"$p/bin/fi-decode" -m tiny --backend cpu --prompt 'def main():' -n 12 --temp 0 > want.txt ||
	fail "fi-decode"
cmp -s want.txt dyn.txt || fail "gen-dyn text: $(cat dyn.txt), fi-decode: $(cat want.txt)"
cmp -s want.txt static.txt || fail "gen-static text: $(cat static.txt)"
# The same frames but for the done frames' timings.
[ "$(frames_count dyn.msgpack token)" -eq 12 ] || fail "frames: $(fi-frame < dyn.msgpack)"
frames_same dyn.msgpack static.msgpack || fail "the two builds wrote other frames"
echo ok
