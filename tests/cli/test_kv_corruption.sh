#!/bin/sh
# Corrupted KV in the arena: NaN written into every stored block. fi-decode verifies the
# checksums of what it fetches, warns, withdraws the bad blocks and computes their tokens, so
# its text equals fi-decode's without any arena; a second fi-prefill writes them anew. Before,
# the corrupt KV was used silently and changed the output.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LC_ALL=C
fi-load --name tiny "$root/models/tiny" > /dev/null 2>&1 || fail "fi-load tiny"
seq 6 | sed 's/.*/def function_&(argument, other): return argument * other + & if other else None/' \
	> "$work/p.txt"
fi-tokenize -m tiny < "$work/p.txt" > "$work/req.mp" || fail "fi-tokenize"
fi-decode -m tiny -n 16 --temp 0 < "$work/req.mp" | fi-tokenize -m tiny -d > "$work/alone.txt" ||
	fail "decode alone"
fi-prefill -m tiny --temp 0 --arena-size 16M < "$work/req.mp" > "$work/pre.mp" || fail "prefill"

# The arena file's header: off_data (offset 176) and block_stride (120), little-endian u64;
# the stored blocks are the first ones of the file, in order.
f=$(ls "$FI_HOME"/kv/*.kv)
u64() { od -An -tu8 -j "$1" -N 8 "$f" | tr -d ' '; }
data=$(u64 176)
stride=$(u64 120)
ready=$(fi-load --arena | awk 'NR == 2 {split($4, b, "/"); print b[1]}')
[ "$ready" -ge 6 ] || fail "only $ready blocks stored"
b=0
while [ $b -lt "$ready" ]; do # a float32 NaN at byte 100 of each block
	printf '\377\377\377\177' | dd of="$f" bs=1 seek=$((data + b * stride + 100)) conv=notrunc \
		2> /dev/null
	b=$((b + 1))
done

fi-decode -m tiny -n 16 < "$work/pre.mp" 2> "$work/err" | fi-tokenize -m tiny -d > "$work/b.txt"
grep -q "failed its checksum (corrupt KV): withdrawn" "$work/err" ||
	fail "no warning: $(cat "$work/err")"
cmp -s "$work/alone.txt" "$work/b.txt" || fail "corrupt KV changed the output: $(diff "$work/alone.txt" "$work/b.txt")"
fi-load --arena > "$work/ls"
echo "ok: corrupt blocks caught: $(grep -c 'failed its checksum' "$work/err") warnings"

# Written anew by the next prefill; then fetched without a warning.
fi-prefill -m tiny --temp 0 < "$work/req.mp" > "$work/pre2.mp" 2> "$work/err" || fail "prefill 2"
fi-decode -m tiny -n 16 < "$work/pre2.mp" 2> "$work/err" | fi-tokenize -m tiny -d > "$work/c.txt"
# (the batch's summary line aside)
! grep -v '^fi-decode: [0-9]* requests, ' "$work/err" || fail "warnings after rewriting: $(cat "$work/err")"
cmp -s "$work/alone.txt" "$work/c.txt" || fail "output after rewriting"
echo "ok: rewritten blocks fetched clean"
