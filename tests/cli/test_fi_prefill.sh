#!/bin/sh
# fi-prefill: every EXAMPLES line, fi-prefill | fi-decode equal to
# fi-decode alone on every HF fixture family, arena reuse counted by -v, failures.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
fx=$root/tests/fixtures/hf
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The uses fi-prefill(1) shows, on the embedded model (test_man_examples.sh runs the page's
# own lines), in order, in a directory with the model, requests and prompts.
mkdir "$work/ex" "$work/ex/models"
ln -s "$root/models/tiny" "$work/ex/models/tiny"
printf '%s\n' 'def main():' 'import os' 'The quick brown fox' > "$work/ex/prompts.txt"
frames_prompts 4 40 7 16 | fi-frame -e > "$work/ex/requests.msgpack" || fail "cannot encode"
cat > "$work/examples" <<'EOF'
fi-load models/tiny --name tiny
fi-prefill -m tiny --arena-size 64M < requests.msgpack > prefilled.msgpack
fi-decode -m tiny -n 16 < prefilled.msgpack > out.msgpack
fi-prefill -m tiny -v < requests.msgpack | fi-decode -m tiny -n 16 > out2.msgpack
fi-tokenize -m tiny < prompts.txt | fi-prefill -m tiny | fi-decode -m tiny -n 16 | fi-tokenize -m tiny -d
fi-decode -m tiny -n 16 -i ipc://decode.sock -o - > out3.msgpack &
fi-prefill -m tiny -o ipc://decode.sock < requests.msgpack
EOF
while IFS= read -r line; do
	case $line in *fi-tokenize*) command -v fi-tokenize > /dev/null ||
		{ echo "skip (no fi-tokenize): $line"; continue; } ;; esac
	(cd "$work/ex" && sh -c "$line") > "$work/out" 2> "$work/err" ||
		fail "example '$line' exited $?: $(cat "$work/err")"
	echo "ok: $line"
done < "$work/examples"
# the background worker of the last two lines finishes on the prefill's eos
for i in $(seq 100); do
	[ -s "$work/ex/out3.msgpack" ] && frames_same "$work/ex/out.msgpack" "$work/ex/out3.msgpack" \
		> /dev/null 2>&1 && break
	sleep 0.1
done
frames_same "$work/ex/out.msgpack" "$work/ex/out3.msgpack" || fail "socket worker output differs"
frames_same "$work/ex/out.msgpack" "$work/ex/out2.msgpack" || fail "second run differs"
fi-decode -m tiny -n 16 < "$work/ex/requests.msgpack" > "$work/alone.msgpack" ||
	fail "fi-decode alone"
frames_same "$work/alone.msgpack" "$work/ex/out.msgpack" || fail "prefill | decode != decode"
fi-frame < "$work/ex/prefilled.msgpack" > "$work/pre.jsonl"
jq -e -s 'length == 8 and all(range(0; 8; 2) as $i | .[$i] as $t | .[$i + 1] as $r |
	$t.type == "token" and $t.index == 0 and $t.id == $r.id and
	$r.kv.ntokens == ($r.tokens | length) and ($r.kv.blocks | length) == (($r.tokens | length) / 16 | floor) and
	$r.kv.block_tokens == 16 and ($r.kv.arena | length) == 64 and ($r.kv.fingerprint | length) == 64 and
	$r.temperature == 0 and $r.seed == 0 and $r.max_tokens == 16; .)' "$work/pre.jsonl" > /dev/null ||
	fail "prefilled frames: $(head -c 2000 "$work/pre.jsonl")"
echo "ok: frames of fi-prefill"

# Every fixture family: fi-prefill | fi-decode equals fi-decode alone (greedy), and a second
# prefill of the same prompts, in a new process, finds every full block but the last token's.
for fam in llama llama_tied llama3_rope mistral qwen2 qwen3 gemma2 gemma3 gemma3_mm phi3 \
	phi3_longrope mixtral qwen3_moe qwen2_yarn; do
	jq -c '.prompt as $p | (.greedy | length) as $n | ([range(8)] | map($p) | add) as $p8 |
		{v: 1, type: "request", temperature: 0} |
		(. + {id: "a", tokens: $p, max_tokens: $n}),
		(. + {id: "b", tokens: $p8[:40], max_tokens: 6}),
		(. + {id: "c", tokens: $p8[:33], max_tokens: 6, stream: false}),
		(. + {id: "s", tokens: $p8[:35], max_tokens: 6, temperature: 0.9, top_k: 20, seed: 11})' \
		"$fx/$fam/ref.json" > "$work/req.jsonl"
	fi-frame -e < "$work/req.jsonl" > "$work/req.mp"
	m=$fx/$fam
	fi-decode -m "$m" --backend cpu < "$work/req.mp" > "$work/a.mp" || fail "$fam: decode"
	fi-prefill -m "$m" --backend cpu --arena-size 4M < "$work/req.mp" |
		fi-decode -m "$m" --backend cpu > "$work/b.mp" || fail "$fam: pipeline"
	frames_same "$work/a.mp" "$work/b.mp" || fail "$fam: prefill | decode differs"
	fi-prefill -m "$m" --backend cpu -v < "$work/req.mp" 2> "$work/v" > "$work/c.mp" ||
		fail "$fam: second prefill"
	grep -q "'b': 40 prompt tokens, 32 cached, 8 computed" "$work/v" || fail "$fam: $(cat "$work/v")"
	grep -q "'c': 33 prompt tokens, 32 cached, 1 computed" "$work/v" || fail "$fam: $(cat "$work/v")"
	fi-decode -m "$m" --backend cpu < "$work/c.mp" > "$work/d.mp" || fail "$fam: decode 2"
	frames_same "$work/a.mp" "$work/d.mp" || fail "$fam: warm pipeline differs"
	fi-frame -t done < "$work/d.mp" | grep -q '"cached_tokens":32' || fail "$fam: cached_tokens"
	echo "ok: $fam"
done

# Failures: usage 2; unknown model, bad endpoint 1 with a message naming them; a request with
# a kv reference for another model gets an error frame, the others go on.
fi-prefill > /dev/null 2>&1; [ $? -eq 2 ] || fail "no -m: exit status"
fi-prefill -m "$fx/llama" -b 0 < /dev/null > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad -b"
fi-prefill -m "$fx/llama" --arena-size 12 < /dev/null > /dev/null 2>&1; [ $? -eq 2 ] ||
	fail "bad --arena-size"
fi-prefill -m "$fx/llama" --backend gpu < /dev/null > /dev/null 2>&1; [ $? -eq 2 ] || fail "bad backend"
fi-prefill -m nosuchmodel < /dev/null > /dev/null 2> "$work/err"; [ $? -eq 1 ] || fail "missing model"
grep -q "^fi-prefill: .*nosuchmodel" "$work/err" || fail "missing model message: $(cat "$work/err")"
fi-prefill -m "$fx/llama" -i foo://x < /dev/null > /dev/null 2> "$work/err"; [ $? -eq 1 ] ||
	fail "bad endpoint status"
grep -q "foo://x" "$work/err" || fail "bad endpoint message: $(cat "$work/err")"
fi-prefill -m "$fx/llama" -i "ipc://$work/no/such/dir/s" < /dev/null > /dev/null 2> "$work/err"
[ $? -eq 1 ] || fail "unbindable endpoint status"
grep -q "cannot bind" "$work/err" || fail "unbindable endpoint message: $(cat "$work/err")"
# kv references made with the llama fixture, sent to the qwen2 fixture
fi-prefill -m "$fx/llama" --backend cpu < "$work/req.mp" 2>/dev/null |
	fi-decode -m "$fx/qwen2" --backend cpu > "$work/x.mp" 2> "$work/err"
[ $? -eq 3 ] || fail "mismatch run: status $?, want 3 (some requests failed)"
grep -q "^fi-decode: [0-9]* requests, 4 failed" "$work/err" || fail "mismatch summary: $(cat "$work/err")"
fi-frame -t error < "$work/x.mp" > "$work/errs"
[ "$(grep -c '"code":"mismatch"' "$work/errs")" -eq 4 ] || fail "mismatch frames: $(cat "$work/errs")"
grep -q "kv reference is for model" "$work/errs" || fail "mismatch message"
fi-prefill -m "$fx/llama" --backend cpu < "$work/req.mp" 2>/dev/null |
	fi-prefill -m "$fx/qwen2" --backend cpu > "$work/x.mp" 2> /dev/null
[ $? -eq 3 ] || fail "prefill mismatch: status $?, want 3"
[ "$(fi-frame -t error < "$work/x.mp" | grep -c '"code":"mismatch"')" -eq 4 ] || fail "prefill mismatch"
# a corrupt stream: the requests before it are answered, then exit 1
{ head -c 200 "$work/req.mp"; printf '\301\301\301'; } |
	fi-prefill -m "$fx/llama" --backend cpu > "$work/out" 2> "$work/err"
[ $? -eq 1 ] || fail "corrupt stream: exit status"
echo "all fi-prefill checks passed"
