#!/bin/sh
# KV reuse across processes on the embedded model: a second, unrelated process finds a long
# prefix in the arena and computes only the rest; TTFT cold against warm (printed); the
# output does not change; stories260K too when the corpus is present.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"

# An 800-token prefix (50 blocks), then two requests that extend it differently.
awk -v dir="$work" 'BEGIN {
	srand(1)
	pre = "0"
	for (i = 1; i < 800; i++) pre = pre "," (2 + int(rand() * 4094))
	ext = pre
	for (i = 0; i < 20; i++) ext = ext "," (2 + int(rand() * 4094))
	f = "{\"v\":1,\"type\":\"request\",\"id\":\"%s\",\"tokens\":[%s],\"max_tokens\":8,\"temperature\":0}\n"
	printf f, "cold", pre > (dir "/cold.jsonl")
	printf f, "warm", ext > (dir "/warm.jsonl")
}'
fi-frame -e < "$work/cold.jsonl" > "$work/cold.mp" || fail "cold request"
fi-frame -e < "$work/warm.jsonl" > "$work/warm.mp" || fail "warm request"

# fi-prefill: the first process computes all 800 tokens; a second one computes the 20 new ones.
fi-prefill -m tiny --arena-size 32M -v < "$work/cold.mp" 2> "$work/v1" > /dev/null || fail "cold"
grep -q "'cold': 800 prompt tokens, 0 cached, 800 computed, 50 blocks stored" "$work/v1" ||
	fail "cold prefill: $(cat "$work/v1")"
fi-prefill -m tiny -v < "$work/warm.mp" 2> "$work/v2" > "$work/warm.pre" || fail "warm"
grep -q "'warm': 820 prompt tokens, 800 cached, 20 computed, 1 blocks stored" "$work/v2" ||
	fail "warm prefill: $(cat "$work/v2")"
fi-load --arena | grep -q "tiny" || fail "fi-load --arena does not show the arena"

# fi-decode --prefix-cache in fresh processes: TTFT cold (new arena) against warm.
ttft() { fi-frame -t done < "$1" | jq -r '"\(.timings.ttft_ms) \(.counts.cached_tokens)"'; }
fi-decode -m tiny < "$work/warm.mp" > "$work/plain.mp" || fail "plain decode"
fi-load --arena-rm tiny || fail "fi-load --arena-rm"
fi-decode -m tiny --prefix-cache --arena-size 32M < "$work/warm.mp" > "$work/d1.mp" || fail "d1"
fi-decode -m tiny --prefix-cache < "$work/warm.mp" > "$work/d2.mp" || fail "d2"
frames_same "$work/plain.mp" "$work/d1.mp" || fail "--prefix-cache (cold) changes the output"
frames_same "$work/plain.mp" "$work/d2.mp" || fail "--prefix-cache (warm) changes the output"
fi-decode -m tiny < "$work/warm.pre" > "$work/d3.mp" || fail "d3"
frames_same "$work/plain.mp" "$work/d3.mp" || fail "prefilled request changes the output"
set -- $(ttft "$work/d1.mp") $(ttft "$work/d2.mp") $(ttft "$work/d3.mp")
[ "$2" = 0 ] && [ "$4" = 816 ] && [ "$6" = 816 ] || fail "cached_tokens: $2 $4 $6"
echo "TTFT fi-decode --prefix-cache, 820-token prompt: cold $(printf %.1f "$1") ms," \
	"warm $(printf %.1f "$3") ms," \
	"ratio $(awk -v a="$1" -v b="$3" 'BEGIN { printf "%.1f", a / b }')"
awk -v a="$1" -v b="$3" 'BEGIN { exit !(a > 2 * b) }' || fail "warm TTFT $3 ms is not below half of cold $1 ms"

# stories260K from the corpus: the same reuse with its own arena (another fingerprint).
src=${FI_TEST_SHARED:-../shared}/corpus/models/stories260K-hf
if [ -f "$src/model.safetensors" ]; then
	fi-load --dtype f32 --name stories "$src" > /dev/null || fail "load stories"
	jq -n -c '{v: 1, type: "request", id: "s", tokens: ([1] + ([range(300; 400)] | . + .)),
		max_tokens: 24, temperature: 0}' | fi-frame -e > "$work/s.mp"
	fi-decode -m stories < "$work/s.mp" > "$work/s1.mp" || fail "stories decode"
	fi-prefill -m stories --arena-size 8M < "$work/s.mp" | fi-decode -m stories > "$work/s2.mp" ||
		fail "stories pipeline"
	fi-decode -m stories --prefix-cache < "$work/s.mp" > "$work/s3.mp" || fail "stories warm"
	frames_same "$work/s1.mp" "$work/s2.mp" && frames_same "$work/s1.mp" "$work/s3.mp" ||
		fail "stories: reuse changes the output"
	set -- $(ttft "$work/s3.mp")
	[ "$2" = 192 ] || fail "stories cached_tokens $2"
	echo "ok: stories260K reuse"
fi
echo "all reuse checks passed"
