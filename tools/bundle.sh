#!/bin/sh
# bundle BUILD DEST: copies the binaries and test programs of BUILD into DEST with the
# non-system shared libraries they load (those outside glibc, the CUDA toolkit and the
# driver), and writes DEST/env.sh that points PATH and LD_LIBRARY_PATH at them.
set -eu
build=$1 dest=$2
mkdir -p "$dest/bin" "$dest/tests" "$dest/lib"
cp "$build"/bin/* "$dest/bin/" 2>/dev/null || true
find "$build/tests" -type f -perm -u+x -exec cp {} "$dest/tests/" \; 2>/dev/null || true
# Debug sections are most of each binary (every one links libfi.a): the copies keep their
# symbols for backtraces and lose the rest, so the bundle travels in a few MB.
for f in "$dest"/bin/* "$dest"/tests/*; do
	[ -f "$f" ] && strip --strip-debug "$f" 2>/dev/null || true
done
for f in "$dest"/bin/* "$dest"/tests/*; do
	[ -f "$f" ] || continue
	ldd "$f" 2>/dev/null | awk '/=> \// { print $3 }'
done | sort -u | while read -r lib; do
	case "$(basename "$lib")" in
	libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
	libcuda.so*|libcudart.so*|libcublas*.so*|libnccl.so*|libnvidia*) ;;
	*) cp -L "$lib" "$dest/lib/" ;;
	esac
done
cat > "$dest/env.sh" <<'ENV'
# . bundle/env.sh: use this bundle's binaries and libraries
here=$(cd "$(dirname "${BASH_SOURCE:-$0}")" && pwd)
export PATH="$here/bin:$PATH"
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ENV
echo "bundle: $dest ($(ls "$dest/lib" | wc -l) libraries)"
