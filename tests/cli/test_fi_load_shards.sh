#!/bin/sh
# fi-load on a two-shard checkpoint with an index (tests/fixtures/image, made by
# tools/make_sharded_fixture.py): BF16 shards of stories260K give the same image, and the
# same fingerprint, as the single F32 file of the corpus converted to bf16.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
fx=$(pwd)/tests/fixtures/image/stories260K-bf16-2shard
[ -f "$fx/model.safetensors.index.json" ] || fail "fixture $fx missing"
out=$TMPDIR/out.txt
fi-load --name sharded "$fx" > "$out" || fail "load exited $?"
grep -q "^sharded: llama, 260K params, 47 tensors, bf16, 545KiB, " "$out" || fail "summary: $(cat "$out")"
fp=$(fi-load -i sharded | sed -n 's/^fingerprint  *//p')
[ ${#fp} -eq 64 ] || fail "fingerprint '$fp'"
fi-load -i sharded | grep -q '^source_dtype  *BF16$' || fail "source dtype"
# f32 from bf16 is exact, so a different dtype gives a different fingerprint but loads.
fi-load --dtype f32 --name sharded32 "$fx" > /dev/null || fail "f32 load"
fp32=$(fi-load -i sharded32 | sed -n 's/^fingerprint  *//p')
[ "$fp32" != "$fp" ] || fail "f32 and bf16 images share a fingerprint"
rm -f "$out"
src=${FI_TEST_SHARED:-../shared}/corpus/models/stories260K-hf
if [ ! -f "$src/model.safetensors" ]; then
	echo "SKIPPED: corpus model $src absent (shards loaded; cross-check not run)" >&2
	exit 77
fi
fi-load --name single "$src" > /dev/null || fail "single-file load"
fp1=$(fi-load -i single | sed -n 's/^fingerprint  *//p')
[ "$fp1" = "$fp" ] || fail "sharded bf16 fingerprint $fp != single-file $fp1"
# The tensor data sections (from the header's data_off to the end) are identical.
for n in single sharded; do
	f=$FI_HOME/models/$n.fim
	off=$(od -An -t u8 -j 64 -N 8 "$f" | tr -d ' ')
	tail -c +$((off + 1)) "$f" > "$TMPDIR/$n.data"
done
cmp -s "$TMPDIR/single.data" "$TMPDIR/sharded.data" || fail "tensor data differ"
[ "$(wc -c < "$TMPDIR/single.data")" -gt 500000 ] || fail "data section too small"
exit 0
