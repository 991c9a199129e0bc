#!/bin/sh
# fi-load failures: a config that does not match the tensors, an unknown tensor name, an
# unsupported dtype, a damaged image. Each names the culprit, exits 1 and leaves nothing in
# the store.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
fx=$(pwd)/tests/fixtures/image/stories260K-bf16-2shard
[ -f "$fx/model.safetensors.index.json" ] || fail "fixture $fx missing"
models=$FI_HOME/models
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LC_ALL=C

expect_fail() { # name, pattern, dir
	fi-load --name "$1" "$3" > "$work/out" 2> "$work/err" && fail "$1: load succeeded"
	[ $? -eq 1 ] || fail "$1: exit status"
	grep -q "$2" "$work/err" || fail "$1: expected '$2' in: $(cat "$work/err")"
	[ ! -s "$work/out" ] || fail "$1: output on stdout"
	[ -z "$(ls -A "$models" 2>/dev/null)" ] || fail "$1: left $(ls -A "$models")"
}

# One more layer in the config than in the checkpoint: the first missing tensor is named.
cp -r "$fx" "$work/deep"
sed -i 's/"num_hidden_layers": 5/"num_hidden_layers": 6/' "$work/deep/config.json"
expect_fail deep "tensor 'blk.5.attn_norm' \[64\] is missing" "$work/deep"

# A wrong hidden size: shapes disagree, the tensor is named.
cp -r "$fx" "$work/wide"
sed -i 's/"intermediate_size": 172/"intermediate_size": 170/' "$work/wide/config.json"
expect_fail wide "tensor 'blk.0.ffn_gate' has shape \[172, 64\], expected \[170, 64\]" "$work/wide"

# An unknown tensor name (renamed in the shard header and the index alike).
cp -r "$fx" "$work/unknown"
for f in "$work/unknown"/model-0000*.safetensors "$work/unknown/model.safetensors.index.json"; do
	sed -i 's/model\.norm\.weight/model.nurm.weight/' "$f"
done
expect_fail unknown "unknown tensor 'model.nurm.weight'" "$work/unknown"

# An unsupported dtype: BF16 relabelled I16 (same size, so the file stays consistent).
cp -r "$fx" "$work/int"
sed -i 's/"model.norm.weight":{"dtype":"BF16"/"model.norm.weight":{"dtype": "I16"/' \
	"$work/int"/model-0000*.safetensors
expect_fail int "tensor 'model.norm.weight': dtype I16 is not supported" "$work/int"

# The model families: a config that disagrees with its checkpoint names the tensor.
hf=$(pwd)/tests/fixtures/hf
family_case() { # name, fixture, jq edit of config.json, expected message
	cp -r "$hf/$2" "$work/$1"
	jq "$3" "$hf/$2/config.json" > "$work/$1/config.json"
	expect_fail "$1" "$4" "$work/$1"
}
family_case phi3kv phi3 '.num_key_value_heads = 4' \
	"tensor 'blk.0.attn_qkv' has shape \[128, 64\], expected \[192, 64\]"
family_case mixtral3 mixtral '.num_local_experts = 3' \
	"tensor 'blk.0.ffn_router' has shape \[4, 64\], expected \[3, 64\]"
family_case moedense qwen3_moe '.mlp_only_layers = []' "tensor 'blk.1.ffn_router' \[8, 64\] is missing"
family_case moeffn qwen3_moe '.moe_intermediate_size = 16' \
	"tensor 'blk.0.ffn_gate.0' has shape \[32, 64\], expected \[16, 64\]"
family_case gemmalayers gemma2 '.num_hidden_layers = 5 | .layer_types += ["full_attention"]' \
	"tensor 'blk.4.attn_norm' \[64\] is missing"
family_case gemmatypes gemma2 '.layer_types = ["full_attention"]' \
	"'layer_types' lists 1 layers, 'num_hidden_layers' is 4"
family_case mmvision gemma3_mm '.architectures = ["Gemma3ForCausalLM"] | .model_type = "gemma3_text"' \
	"unknown tensor 'language_model\."

# No config.json.
mkdir "$work/empty"
expect_fail empty "config.json" "$work/empty"

# Weights that are not numbers: the second shard's data all 0xff (bf16 NaN). The tensor is
# named and nothing is stored, where the image used to load and decode gave junk.
cp -r "$fx" "$work/nan"
f=$work/nan/model-00002-of-00002.safetensors
h=$(head -c 8 "$f" | od -An -tu8 | tr -d ' ')
n=$(($(wc -c < "$f") - 8 - h))
{ head -c $((8 + h)) "$f"; tr '\0' '\377' < /dev/zero | head -c $n; } > "$work/shard"
mv "$work/shard" "$f"
expect_fail nan "tensor '.*': element 0 is not finite (NaN or infinite)" "$work/nan"
# A finite value that f16 cannot hold (bf16 0x4800 = 131072, the first element of the second
# shard) is refused when converting to f16, naming the overflow; as bf16 it loads.
cp -r "$fx" "$work/big"
f=$work/big/model-00002-of-00002.safetensors
printf '\000\110' | dd of="$f" bs=1 seek=$((8 + h)) conv=notrunc 2> /dev/null
fi-load --name big --dtype f16 "$work/big" > /dev/null 2> "$work/err" && fail "f16 overflow loaded"
grep -q "element 0 overflows f16" "$work/err" || fail "f16 overflow: $(cat "$work/err")"
fi-load --name big "$work/big" > /dev/null 2> "$work/err" || fail "bf16 big: $(cat "$work/err")"
fi-load --rm big > /dev/null || fail "--rm big"

# A damaged image in the store: -i names the problem, -l lists it with '-' and exits 1.
fi-load --name good "$fx" > /dev/null || fail "good load"
size=$(wc -c < "$models/good.fim")
head -c $((size - 100)) "$models/good.fim" > "$models/cut.fim"
fi-load -i cut > /dev/null 2> "$work/err" && fail "-i of a truncated image succeeded"
grep -q "truncated" "$work/err" || fail "-i truncated: $(cat "$work/err")"
fi-load -l > "$work/out" 2> "$work/err" && fail "-l with a damaged image exited 0"
grep -q '^cut  *-  *-  *-  *-$' "$work/out" || fail "-l damaged row: $(cat "$work/out")"
grep -q '^good  *llama ' "$work/out" || fail "-l good row"
printf 'XIMG' | dd of="$models/good.fim" bs=1 conv=notrunc 2> /dev/null
fi-load -i good 2> "$work/err" > /dev/null; [ $? -eq 1 ] || fail "bad magic exit status"
grep -q "bad magic" "$work/err" || fail "bad magic: $(cat "$work/err")"

# A FIFO named like an image: listing, inspecting and opening it refuse it at once (they
# used to wait forever for a writer).
mkfifo "$models/pipe.fim"
timeout 10 fi-load -l > "$work/out" 2> "$work/err"; rc=$?
[ $rc = 1 ] || fail "-l with a FIFO: exit $rc"
grep -q '^pipe  *-  *-  *-  *-$' "$work/out" || fail "-l FIFO row: $(cat "$work/out")"
grep -q "pipe.fim': not a regular file" "$work/err" || fail "-l FIFO: $(cat "$work/err")"
for cmd in "fi-load -i pipe" "fi-decode -m pipe --prompt x" "fi-prefill -m pipe" \
	"fi-tokenize -m pipe" "fi-tokenize -m $models/pipe.fim" "fi-bench -m pipe tg1"; do
	timeout 10 $cmd < /dev/null > "$work/out" 2> "$work/err"; rc=$?
	[ $rc = 1 ] || fail "$cmd with a FIFO: exit $rc: $(cat "$work/err")"
	grep -q "not a regular file" "$work/err" || fail "$cmd: $(cat "$work/err")"
done
exit 0
