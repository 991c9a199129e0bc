#!/bin/sh
# --load-format dummy: fi-bench and fi-decode run a model from its config.json alone, with
# random weights, marked as such in every output; the same weights every run.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v jq > /dev/null || { echo "SKIPPED: jq absent (tools/deps.sh installs it)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A directory with nothing but a config: every family of the fixtures runs.
for fam in llama gemma2 gemma3_mm phi3_longrope mixtral qwen3_moe; do
	mkdir "$work/$fam"
	cp "$root/tests/fixtures/hf/$fam/config.json" "$work/$fam/"
	fi-decode -m "$work/$fam" --load-format dummy --backend cpu --tokens 1,5,9 -n 6 --temp 0 \
		> "$work/a" 2> "$work/err" || fail "$fam: exit $?: $(cat "$work/err")"
	grep -q "RANDOM WEIGHTS (--load-format dummy)" "$work/err" || fail "$fam: no notice"
	n=$(wc -w < "$work/a"); [ "$n" -ge 1 ] && [ "$n" -le 6 ] || fail "$fam: tokens: $(cat "$work/a")"
	fi-decode -m "$work/$fam/config.json" --load-format dummy --backend cpu --tokens 1,5,9 -n 6 \
		--temp 0 > "$work/b" 2> /dev/null || fail "$fam: config file"
	cmp -s "$work/a" "$work/b" || fail "$fam: the random weights differ between runs"
	echo "ok: $fam $(cat "$work/a")"
done

# Frames: the summary line is marked.
jq -nc '{v: 1, type: "request", id: "r", tokens: [1, 2, 3], max_tokens: 4, temperature: 0}' |
	fi-frame -e | fi-decode -m "$work/mixtral" --load-format dummy --backend cpu \
	> "$work/out.mp" 2> "$work/err" || fail "frames: exit $?"
grep -q "tok/s (RANDOM WEIGHTS)$" "$work/err" || fail "frames summary: $(cat "$work/err")"
[ "$(fi-frame -t token < "$work/out.mp" | wc -l)" = 4 ] || fail "frames: four tokens"

# fi-bench: the EXAMPLES line, and each format marks the rows.
fi-bench -m models/tiny/config.json --load-format dummy --backend cpu -r 1 tg16 > "$work/md" \
	2> "$work/err" || fail "bench example: exit $?"
grep -q '^| tiny (RANDOM WEIGHTS) | .* | cpu | 1 | tg16 | ' "$work/md" || fail "md row: $(cat "$work/md")"
grep -q 'weights: RANDOM' "$work/md" || fail "md footer"
grep -q 'RANDOM WEIGHTS' "$work/err" || fail "bench notice"
fi-bench -m "$work/qwen3_moe" --load-format dummy --backend cpu -r 1 -o json pp16 > "$work/json" \
	2> /dev/null || fail "json"
jq -e '.weights == "random" and .model == "qwen3_moe (RANDOM WEIGHTS)" and .tests[0].tps_mean > 0' \
	"$work/json" > /dev/null || fail "json: $(cat "$work/json")"
fi-bench -m "$work/mixtral" --load-format dummy --backend cpu -r 1 -o csv tg4 2> /dev/null |
	grep -q '^mixtral (RANDOM WEIGHTS),' || fail "csv row"

# fi-bench serve: the same marks in every format, and no --load-format with a remote worker.
fi-bench -m models/tiny/config.json --load-format dummy --backend cpu serve --requests 4 \
	--workload fixed:8:4 --ignore-eos > "$work/smd" 2> "$work/err" || fail "serve: exit $?"
grep -q '^| config.json (RANDOM WEIGHTS) | cpu | fixed:8:4 | 4 | ' "$work/smd" || fail "serve md: $(cat "$work/smd")"
grep -q 'weights: RANDOM' "$work/smd" || fail "serve md footer"
grep -q 'RANDOM WEIGHTS' "$work/err" || fail "serve notice"
fi-bench -m models/tiny/config.json --load-format dummy --backend cpu -o json serve --requests 4 \
	--workload fixed:8:4 --ignore-eos 2> /dev/null > "$work/sjson" || fail "serve json"
jq -e '.weights == "random" and .model == "config.json (RANDOM WEIGHTS)" and .completed == 4' \
	"$work/sjson" > /dev/null || fail "serve json: $(cat "$work/sjson")"
fi-bench -m models/tiny/config.json --load-format dummy --backend cpu -o csv serve --requests 2 \
	--workload fixed:8:4 2> /dev/null | grep -q '^config.json (RANDOM WEIGHTS),' || fail "serve csv"
fi-bench -m tiny -o json serve --requests 2 --workload fixed:8:4 2> /dev/null |
	jq -e '.weights == "image" and .model == "tiny"' > /dev/null || fail "serve json, real weights"
fi-bench -m tiny --load-format dummy serve -e ipc://$work/w 2> "$work/err"
[ $? = 2 ] && grep -q -- "--load-format sets up the in-process engine" "$work/err" ||
	fail "serve -e with --load-format: $(cat "$work/err")"
echo "ok: fi-bench serve marks random weights"

# Errors: an unknown format is a usage error; a bad config names its key.
fi-bench -m tiny --load-format nope tg4 2> /dev/null; [ $? = 2 ] || fail "bench: bad format status"
fi-decode -m tiny --load-format nope --tokens 1 2> /dev/null; [ $? = 2 ] || fail "decode: bad format status"
mkdir "$work/bad"
jq '.num_local_experts = 1 | .num_experts_per_tok = 2' "$root/tests/fixtures/hf/mixtral/config.json" \
	> "$work/bad/config.json"
fi-decode -m "$work/bad" --load-format dummy --backend cpu --tokens 1 -n 1 2> "$work/err"
[ $? = 1 ] || fail "bad config: exit status"
grep -q "'num_experts_per_tok' (2) exceeds 'num_local_experts' (1)" "$work/err" || fail "bad config: $(cat "$work/err")"
fi-decode -m "$work/none" --load-format dummy --backend cpu --tokens 1 -n 1 2> "$work/err"
[ $? = 1 ] || fail "missing: exit status"
grep -q "cannot open '$work/none'" "$work/err" || fail "missing: $(cat "$work/err")"
echo "all random-weight checks passed"
