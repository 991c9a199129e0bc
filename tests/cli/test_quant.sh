#!/bin/sh
# Quantized models and the FP8 KV cache through the commands, on the embedded tiny model and
# the committed GGUF fixtures: fi-load --quantize fp8 then a pipeline; a GGUF file named
# directly by -m (converted on the fly) tokenizing and decoding; --kv-dtype fp8 in fi-decode,
# fi-prefill (its FP8 arena reused by fi-decode --kv-dtype fp8, not by an f32 one) and
# fi-bench; refusals and exit statuses.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fx=$root/tests/fixtures/quant

# --quantize fp8: the summary names the dtypes; the model tokenizes and generates.
fi-load --quantize fp8 --dtype f32 --name tq "$root/models/tiny" > "$work/out" 2> "$work/err" ||
	fail "--quantize: $(cat "$work/err")"
grep -q '^tq: llama, 6.95M params, 74 tensors, f32+fp8, ' "$work/out" || fail "summary: $(cat "$work/out")"
fi-load -i tq | grep -q '^quantization  *fp8 (fi-load --quantize)$' || fail "-i quantization"
echo 'The with statement' | fi-tokenize -m tq | fi-decode -m tq -n 12 --temp 0 |
	fi-tokenize -m tq -d > "$work/text" || fail "fp8 pipeline"
[ "$(wc -c < "$work/text")" -gt 20 ] || fail "fp8 pipeline text: $(cat "$work/text")"

# A GGUF file as -m: converted on the fly, nothing left behind; its tokenizer is the
# checkpoint's (test_quant_model checks 7 texts against HF's).
a=$(echo 'The with statement is used' | fi-tokenize -m "$fx/tiny_q4km.gguf" --ids) || fail "gguf -m"
b=$(echo 'The with statement is used' | fi-tokenize -m "$root/models/tiny" --ids) || fail "tiny -m"
[ -n "$a" ] && [ "$a" = "$b" ] || fail "gguf tokens '$a', checkpoint's '$b'"
fi-decode -m "$fx/tiny_q4km.gguf" --prompt 'The with statement' -n 8 --temp 0 > "$work/g" 2> "$work/err" ||
	fail "gguf decode: $(cat "$work/err")"
[ -s "$work/g" ] || fail "gguf decode printed nothing"
[ -z "$(ls -A "$FI_HOME/tmp" 2>/dev/null)" ] || fail "on-the-fly conversion left $(ls -A "$FI_HOME/tmp")"

# --kv-dtype fp8: generation, and an arena of FP8 blocks that only FP8 processes share.
fi-load --dtype f32 --name tiny "$root/models/tiny" > /dev/null || fail "fi-load tiny"
toks=$(awk 'BEGIN { srand(3); s = "0"; for (i = 1; i < 100; i++) s = s "," (2 + int(rand() * 4094)); print s }')
fi-decode -m tiny --kv-dtype fp8 --tokens "$toks" -n 8 --temp 0 > "$work/f8" 2> "$work/err" ||
	fail "decode fp8 kv: $(cat "$work/err")"
[ "$(wc -w < "$work/f8")" -ge 8 ] || fail "fp8 kv decode output: $(cat "$work/f8")"
printf '{"v":1,"type":"request","id":"r","tokens":[%s],"max_tokens":4,"temperature":0}\n' "$toks" |
	fi-frame -e > "$work/req.mp" || fail "request"
fi-prefill -m tiny --kv-dtype fp8 --arena-size 8M -v < "$work/req.mp" > "$work/pre.mp" 2> "$work/v1" ||
	fail "prefill fp8: $(cat "$work/v1")"
grep -q "'r': 100 prompt tokens, 0 cached, 100 computed, 6 blocks stored" "$work/v1" ||
	fail "prefill fp8: $(cat "$work/v1")"
fi-decode -m tiny --kv-dtype fp8 -v < "$work/pre.mp" > /dev/null 2> "$work/v2" || fail "decode fp8 arena"
grep -q "96 cached" "$work/v2" || fail "fp8 decode did not reuse the fp8 arena: $(cat "$work/v2")"
fi-decode -m tiny -v < "$work/pre.mp" > /dev/null 2> "$work/v3" || fail "decode f32 after fp8"
grep -q "96 cached" "$work/v3" && fail "an f32 cache read FP8 blocks: $(cat "$work/v3")"
fi-bench -m tiny --kv-dtype fp8 -r 1 tg8 pp32 -o csv > "$work/bench" 2>&1 || fail "fi-bench fp8 kv: $(cat "$work/bench")"
grep -q ',tg8,1,' "$work/bench" || fail "fi-bench output: $(cat "$work/bench")"

# Refusals: usage errors exit 2, runtime failures 1.
fi-decode -m tiny --kv-dtype int8 --tokens 1 2> "$work/err"; [ $? -eq 2 ] || fail "bad kv dtype: exit"
grep -q "invalid value 'int8' for --kv-dtype" "$work/err" || fail "bad kv dtype: $(cat "$work/err")"
fi-bench -m tiny --kv-dtype f16 tg8 2> /dev/null; [ $? -eq 2 ] || fail "fi-bench bad kv dtype: exit"
exit 0
