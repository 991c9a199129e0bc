#!/bin/sh
# fi-load: every EXAMPLES line of fi-load(1) and fi(7), the summary, listing, details,
# removal, refusals and exit statuses, on the stories260K checkpoint of the shared corpus.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
src=${FI_TEST_SHARED:-../shared}/corpus/models/stories260K-hf
if [ ! -f "$src/model.safetensors" ]; then
	echo "SKIPPED: corpus model $src absent" >&2
	exit 77
fi
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$src" "$work/stories260K-hf"
ln -s "$root/tests/fixtures/quant/stories260k_q8_0.gguf" "$work/"
models=$FI_HOME/models

# The uses fi-load(1) and fi(7) show, on stories260K (test_man_examples.sh runs the pages'
# own lines), in order, from a directory holding the checkpoint.
cat > "$work/ex-fi-load" <<'EOF'
fi-load stories260K-hf --name stories
fi-load -l
fi-load -i stories
fi-load -f --dtype f32 --name stories stories260K-hf
fi-load --rm stories
fi-load --dtype f32 --name stories stories260K-hf
fi-decode -m stories --prefix-cache --arena-size 8M --tokens 1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403 -n 4
fi-load --arena
fi-load --arena-rm stories
EOF
cat > "$work/ex-fi" <<'EOF'
fi-load stories260K-hf --name stories
fi-load -i stories | grep fingerprint
fi-decode -m stories --prefix-cache --arena-size 4M --tokens 1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403,1,403 -n 2
fi-load --arena | grep stories
EOF
for page in fi-load fi; do
	cp "$work/ex-$page" "$work/examples"
	while IFS= read -r line; do
		(cd "$work" && sh -c "$line") > "$work/out" 2> "$work/err" ||
			fail "$page example '$line' exited $?: $(cat "$work/err")"
		echo "ok: $line"
	done < "$work/examples"
	fi-load --rm stories 2>/dev/null
	fi-load --rm stories-fp8 2>/dev/null
	fi-load --rm stories260k_q8_0 2>/dev/null
done

# Conversion: one summary line on stdout, the image in the store, nothing else there.
cd "$work"
fi-load stories260K-hf > out 2> err || fail "load exited $?: $(cat err)"
[ "$(wc -l < out)" -eq 1 ] || fail "summary is not one line: $(cat out)"
grep -q '^stories260K-hf: llama, 260K params, 47 tensors, bf16, 545KiB, fingerprint [0-9a-f]\{16\}, .* -> .*/models/stories260K-hf.fim$' out ||
	fail "summary: $(cat out)"
[ "$(ls -A "$models")" = "stories260K-hf.fim" ] || fail "store holds: $(ls -A "$models")"
fp=$(sed 's/.*fingerprint \([0-9a-f]*\).*/\1/' out)

# Refused without -f (exit 1, image untouched); replaced with -f.
before=$(cksum < "$models/stories260K-hf.fim")
fi-load --dtype f32 stories260K-hf > out 2> err && fail "overwrite without -f succeeded"
[ $? -eq 1 ] || fail "overwrite refusal exit status"
grep -q "already exists.*-f" err || fail "refusal message: $(cat err)"
[ "$(cksum < "$models/stories260K-hf.fim")" = "$before" ] || fail "image changed"
fi-load -f --dtype f32 stories260K-hf > out || fail "-f exited $?"
grep -q ', f32, 1.0[0-9]MiB,' out || fail "f32 summary: $(cat out)"

# Listing and details.
fi-load --name s2 stories260K-hf > /dev/null || fail "second load"
fi-load -l > out || fail "-l exited $?"
sed -n 1p out | grep -q '^NAME  *FAMILY  *PARAMS  *DTYPE  *SIZE$' || fail "-l header: $(cat out)"
grep -q '^s2  *llama  *260K  *bf16  *545KiB$' out || fail "-l row: $(cat out)"
grep -q '^stories260K-hf  *llama  *260K  *f32 ' out || fail "-l row: $(cat out)"
fi-load -i s2 > out || fail "-i exited $?"
grep -q "^fingerprint  *$fp[0-9a-f]\{48\}$" out || fail "-i fingerprint: $(grep fingerprint out)"
grep -q '^tensors  *47$' out || fail "-i tensors"
grep -q '^params  *260K (260032)$' out || fail "-i params"
grep -q '^config.num_hidden_layers  *5$' out || fail "-i config"
grep -q '^blob  *tokenizer.json 14787$' out || fail "-i tokenizer blob"
grep -q "^source  *$(cd "$src" && pwd -P)$" out || fail "-i source: $(grep source out)"
grep -q "^path  *$models/s2.fim$" out || fail "-i path"

# -m resolution through -i: a path, a directory (converted on the fly, nothing left, named
# by its path, not by a temporary file), a store name over a directory of the same name
# (as a shell finds a command; "./NAME" is the directory), a missing name.
fi-load -i "$models/s2.fim" | grep -q "^fingerprint  *$fp" || fail "-i PATH"
fi-load -i ./stories260K-hf > out || fail "-i DIR exited $?"
grep -q "^fingerprint  *$fp" out || fail "-i DIR fingerprint"
grep -q "^path  *./stories260K-hf$" out || fail "-i DIR path: $(grep '^path' out)"
grep -q "fi-convert" out && fail "-i DIR names a temporary file: $(cat out)"
[ -z "$(ls -A "$FI_HOME/tmp")" ] || fail "on-the-fly conversion left $(ls -A "$FI_HOME/tmp")"
fi-load -i stories260K-hf > out || fail "-i NAME exited $?"
grep -q "^path  *$models/stories260K-hf.fim$" out || fail "store name does not win: $(grep '^path' out)"
grep -q '^dtype  *f32$' out || fail "store name: $(grep '^dtype' out)"
fi-load -i nosuch > out 2> err && fail "-i missing succeeded"
[ $? -eq 1 ] || fail "-i missing exit status"
grep -qx "fi-load: model 'nosuch' not found in $models (fi-load -l lists models)" err ||
	fail "missing message: $(cat err)"

# Removal.
fi-load --rm s2 || fail "--rm exited $?"
[ ! -e "$models/s2.fim" ] || fail "--rm left the file"
fi-load --rm s2 2> err && fail "--rm of a missing model succeeded"
grep -q "model 's2' not found" err || fail "--rm missing: $(cat err)"

# Quantized: --quantize fp8 and a GGUF file; their dtypes in the summary, -l and -i; the
# GGUF tokenizer tokenizes as the checkpoint's own.
fi-load --quantize fp8 --name sq stories260K-hf > out 2> err || fail "--quantize exited $?: $(cat err)"
grep -q '^sq: llama, 260K params, 47 tensors, bf16+fp8, [0-9.]*KiB, ' out || fail "fp8 summary: $(cat out)"
fi-load stories260k_q8_0.gguf > out 2> err || fail "gguf exited $?: $(cat err)"
grep -q '^stories260k_q8_0: llama, 260K params, 47 tensors, bf16+q8_0, ' out || fail "gguf summary: $(cat out)"
fi-load -l > out || fail "-l exited $?"
grep -q '^sq  *llama  *260K  *bf16+fp8 ' out || fail "-l fp8 row: $(cat out)"
fi-load -i stories260k_q8_0 > out || fail "-i gguf"
grep -q '^quantization  *Q8_0$' out || fail "-i gguf quantization: $(cat out)"
grep -q '^blob  *tokenizer.json ' out || fail "-i gguf tokenizer"
a=$(echo 'Once upon a time, a cat sat.' | fi-tokenize -m stories260k_q8_0 --ids)
b=$(echo 'Once upon a time, a cat sat.' | fi-tokenize -m stories260K-hf --ids)
[ -n "$a" ] && [ "$a" = "$b" ] || fail "gguf tokenizer: '$a', checkpoint's: '$b'"
fi-decode -m sq --tokens 1,403 -n 4 --temp 0 > out 2> err || fail "fp8 decode: $(cat err)"
fi-load --quantize fp8 --name x stories260k_q8_0.gguf 2> err; [ $? -eq 1 ] || fail "--quantize gguf: exit"
grep -q "is a GGUF file: --quantize takes a float" err || fail "--quantize gguf: $(cat err)"
fi-load --quantize int8 stories260K-hf 2> err; [ $? -eq 2 ] || fail "--quantize int8: exit"
grep -q "invalid value 'int8' for --quantize" err || fail "--quantize int8: $(cat err)"
bad=$root/tests/fixtures/bad_quant
fi-load "$bad/tensor_overlap.gguf" 2> err; [ $? -eq 1 ] || fail "bad gguf: exit"
grep -q "^fi-load: gguf '$bad/tensor_overlap.gguf': tensor 'b' overlaps tensor 'a'$" err ||
	fail "bad gguf: $(cat err)"
fi-load "$bad/awq_scales_missing" 2> err; [ $? -eq 1 ] || fail "bad awq: exit"
grep -q "v_proj.scales' is missing (awq)" err || fail "bad awq: $(cat err)"
# BitNet: a good fixture loads; a packed code 3, a scale of two values and packed rows that
# unpack to another shape are each named
fi-load --name bn "$root/tests/fixtures/bitnet/bitnet" 2> err || fail "bitnet: $(cat err)"
fi-load -l | grep -q "^bn  *bitnet .*bf16+tq2" || fail "bitnet listing: $(fi-load -l)"
fi-load --rm bn || fail "--rm bitnet"
for c in "bitnet_code3:q_proj.weight': packed row 0, column 0 holds the code 3" \
	 "bitnet_scale_shape:q_proj.weight_scale': BF16 with 2 values, expected one float" \
	 "bitnet_packing:tensor 'blk.0.attn_q' has shape \[256, 128\], expected \[128, 128\]"; do
	f=${c%%:*}
	fi-load "$bad/$f" 2> err; [ $? -eq 1 ] || fail "$f: exit"
	grep -q "${c#*:}" err || fail "$f: $(cat err)"
done
fi-load --rm sq && fi-load --rm stories260k_q8_0 || fail "--rm quantized"

# Usage errors exit 2; runtime failures exit 1.
fi-load 2> /dev/null; [ $? -eq 2 ] || fail "no DIR: exit status"
fi-load --bogus 2> /dev/null; [ $? -eq 2 ] || fail "unknown option: exit status"
fi-load --dtype i8 stories260K-hf 2> err; [ $? -eq 2 ] || fail "bad dtype: exit status"
grep -q "invalid value 'i8' for --dtype (one of f32, f16, bf16)" err || fail "bad dtype message: $(cat err)"
fi-load --name 'a/b' stories260K-hf 2> /dev/null; [ $? -eq 2 ] || fail "bad name: exit status"
fi-load -l stories260K-hf 2> /dev/null; [ $? -eq 2 ] || fail "-l with DIR: exit status"
fi-load "$work/none" 2> err; [ $? -eq 1 ] || fail "missing DIR: exit status"
grep -q "cannot open '$work/none': No such file or directory" err || fail "missing DIR message"
fi-load "$src/config.json" 2> /dev/null; [ $? -eq 1 ] || fail "file as DIR: exit status"
[ -z "$(ls -A "$models" | grep -v '^stories260K-hf.fim$')" ] || fail "stray files: $(ls -A "$models")"
exit 0
