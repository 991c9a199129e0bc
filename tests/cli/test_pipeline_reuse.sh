#!/bin/sh
# KV reuse across processes on the embedded model: a second, unrelated process finds a long
# prefix in the arena and computes only the rest; TTFT cold against warm (printed); the
# output does not change; stories260K too when the corpus is present.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v python3 > /dev/null || { echo "SKIPPED: python3 absent" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
frames="python3 $root/tests/cli/pipe_frames.py"
fi-load "$root/models/tiny" --name tiny --dtype f32 > /dev/null || fail "fi-load"

# An 800-token prefix (50 blocks), then two requests that extend it differently.
python3 - "$work" <<'PY'
import json, random, sys
r = random.Random(1)
pre = [0] + [r.randint(2, 4095) for _ in range(799)]
R = lambda f, i, t, n: f.write(json.dumps({"v": 1, "type": "request", "id": i, "tokens": t,
                                           "max_tokens": n, "temperature": 0.0}) + "\n")
with open(sys.argv[1] + "/cold.jsonl", "w") as f:
    R(f, "cold", pre, 8)
with open(sys.argv[1] + "/warm.jsonl", "w") as f:
    R(f, "warm", pre + [r.randint(2, 4095) for _ in range(20)], 8)
PY
$frames enc < "$work/cold.jsonl" > "$work/cold.mp"
$frames enc < "$work/warm.jsonl" > "$work/warm.mp"

# fi-prefill: the first process computes all 800 tokens; a second one computes the 20 new ones.
fi-prefill -m tiny --arena-size 32M -v < "$work/cold.mp" 2> "$work/v1" > /dev/null || fail "cold"
grep -q "'cold': 800 prompt tokens, 0 cached, 800 computed, 50 blocks stored" "$work/v1" ||
	fail "cold prefill: $(cat "$work/v1")"
fi-prefill -m tiny -v < "$work/warm.mp" 2> "$work/v2" > "$work/warm.pre" || fail "warm"
grep -q "'warm': 820 prompt tokens, 800 cached, 20 computed, 1 blocks stored" "$work/v2" ||
	fail "warm prefill: $(cat "$work/v2")"
fi-load --arena | grep -q "tiny" || fail "fi-load --arena does not show the arena"

# fi-decode --prefix-cache in fresh processes: TTFT cold (new arena) against warm.
ttft() { $frames dec < "$1" | python3 -c "import json,sys
for l in sys.stdin:
    f = json.loads(l)
    if f['type'] == 'done': print(f['timings']['ttft_ms'], f['counts']['cached_tokens'])"; }
fi-decode -m tiny < "$work/warm.mp" > "$work/plain.mp" || fail "plain decode"
fi-load --arena-rm tiny || fail "fi-load --arena-rm"
fi-decode -m tiny --prefix-cache --arena-size 32M < "$work/warm.mp" > "$work/d1.mp" || fail "d1"
fi-decode -m tiny --prefix-cache < "$work/warm.mp" > "$work/d2.mp" || fail "d2"
$frames same "$work/plain.mp" "$work/d1.mp" || fail "--prefix-cache (cold) changes the output"
$frames same "$work/plain.mp" "$work/d2.mp" || fail "--prefix-cache (warm) changes the output"
fi-decode -m tiny < "$work/warm.pre" > "$work/d3.mp" || fail "d3"
$frames same "$work/plain.mp" "$work/d3.mp" || fail "prefilled request changes the output"
set -- $(ttft "$work/d1.mp") $(ttft "$work/d2.mp") $(ttft "$work/d3.mp")
[ "$2" = 0 ] && [ "$4" = 816 ] && [ "$6" = 816 ] || fail "cached_tokens: $2 $4 $6"
echo "TTFT fi-decode --prefix-cache, 820-token prompt: cold $(printf %.1f "$1") ms," \
	"warm $(printf %.1f "$3") ms," \
	"ratio $(python3 -c "print(round($1 / $3, 1))")"
python3 -c "import sys; sys.exit(not ($1 > 2 * $3))" || fail "warm TTFT $3 ms is not below half of cold $1 ms"

# stories260K from the corpus: the same reuse with its own arena (another fingerprint).
src=${FI_TEST_SHARED:-../shared}/corpus/models/stories260K-hf
if [ -f "$src/model.safetensors" ]; then
	fi-load --dtype f32 --name stories "$src" > /dev/null || fail "load stories"
	python3 -c 'import json; print(json.dumps({"v":1,"type":"request","id":"s","tokens":[1]+list(range(300,400))*2,"max_tokens":24,"temperature":0.0}))' |
		$frames enc > "$work/s.mp"
	fi-decode -m stories < "$work/s.mp" > "$work/s1.mp" || fail "stories decode"
	fi-prefill -m stories --arena-size 8M < "$work/s.mp" | fi-decode -m stories > "$work/s2.mp" ||
		fail "stories pipeline"
	fi-decode -m stories --prefix-cache < "$work/s.mp" > "$work/s3.mp" || fail "stories warm"
	$frames same "$work/s1.mp" "$work/s2.mp" && $frames same "$work/s1.mp" "$work/s3.mp" ||
		fail "stories: reuse changes the output"
	set -- $(ttft "$work/s3.mp")
	[ "$2" = 192 ] || fail "stories cached_tokens $2"
	echo "ok: stories260K reuse"
fi
echo "all reuse checks passed"
