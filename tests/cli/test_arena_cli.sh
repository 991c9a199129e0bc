#!/bin/sh
# fi-load --arena and --arena-rm: listing (model names, KV layout, blocks, hits), removal by id
# prefix and by model name, errors; a damaged arena is reported and never breaks generation.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
. "$root/tests/cli/frames.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fx=$root/tests/fixtures/hf

fi-load --arena > "$work/l0" || fail "empty listing exit $?"
[ "$(wc -l < "$work/l0")" -eq 1 ] && grep -q "^ARENA *MODEL *KV *BLOCKS *HITS *MISSES *SIZE" "$work/l0" ||
	fail "empty listing: $(cat "$work/l0")"

fi-load --dtype f32 --name tiny "$root/models/tiny" > /dev/null || fail "fi-load tiny"
frames_prompts 3 100 4 2 | fi-frame -e > "$work/req.mp"
fi-prefill -m tiny --arena-size 16M < "$work/req.mp" > /dev/null || fail "prefill tiny"
fi-prefill -m tiny < "$work/req.mp" > /dev/null || fail "prefill tiny again"
fi-prefill -m "$fx/llama" --backend cpu --arena-size 2M < /dev/null > /dev/null || fail "prefill llama"
fi-load --arena > "$work/l1" || fail "listing exit $?"
cat "$work/l1"
[ "$(wc -l < "$work/l1")" -eq 3 ] || fail "two arenas expected"
# 3 prompts of 75..125 tokens: >= 15 full blocks; the second prefill hit what the first missed
awk 'NR > 1 && $2 == "tiny" { split($4, b, "/"); t++
	if ($3 != "f32/16" || b[1] < 15 || b[2] != 126 || $5 < 15 || $6 < 15) bad = 1 }
     NR > 1 && $2 == "-" { u++; if ($3 !~ /B\/16$/ || $4 !~ /^0\//) bad = 1 }
     END { exit !(t == 1 && u == 1 && !bad) }' "$work/l1" || fail "listing content"
tiny_id=$(awk '$2 == "tiny" {print $1}' "$work/l1")
other_id=$(awk '$2 == "-" {print $1}' "$work/l1")
[ -f "$FI_HOME/kv/$tiny_id"*.kv ] || fail "arena file of $tiny_id"

# Removal: by model name, by id prefix; unknown names and ids are errors; options exclude.
fi-load --arena-rm tiny || fail "--arena-rm tiny"
fi-load --arena | grep -q " tiny " && fail "tiny's arena still listed"
fi-load --arena-rm tiny || fail "--arena-rm of a model without arenas"
fi-load --arena-rm "$(echo "$other_id" | cut -c1-10)" || fail "--arena-rm by id prefix"
[ "$(fi-load --arena | wc -l)" -eq 1 ] || fail "arenas left: $(fi-load --arena)"
fi-load --arena-rm nosuchmodel 2> "$work/err"; [ $? -eq 1 ] || fail "unknown name status"
grep -q "^fi-load: no arena or model 'nosuchmodel'" "$work/err" || fail "message: $(cat "$work/err")"
fi-load --arena-rm 0123456789abcdef > /dev/null 2>&1; [ $? -eq 1 ] || fail "unknown id status"
fi-load --arena -l > /dev/null 2>&1; [ $? -eq 2 ] || fail "--arena -l status"
fi-load --arena extra > /dev/null 2>&1; [ $? -eq 2 ] || fail "--arena DIR status"

# A damaged arena: listed with an error (exit 1); fi-decode --prefix-cache warns, computes,
# and generates what it generates without the arena.
fi-prefill -m tiny --arena-size 4M < "$work/req.mp" > /dev/null || fail "prefill tiny 3"
f=$(ls "$FI_HOME"/kv/*.kv)
printf 'garbage!' | dd of="$f" bs=1 seek=0 conv=notrunc 2>/dev/null
fi-load --arena > /dev/null 2> "$work/err"; [ $? -eq 1 ] || fail "damaged arena: listing status"
[ -s "$work/err" ] || fail "damaged arena: no message"
fi-decode -m tiny --temp 0 < "$work/req.mp" > "$work/a.mp" || fail "plain decode"
fi-decode -m tiny --prefix-cache < "$work/req.mp" > "$work/b.mp" 2> "$work/err" ||
	fail "decode on a damaged arena exited $?"
grep -q "without the arena" "$work/err" || fail "no warning: $(cat "$work/err")"
frames_same "$work/a.mp" "$work/b.mp" || fail "damaged arena changed the output"
# fi-prefill warns and passes its requests on without KV: fi-decode computes them.
fi-prefill -m tiny --temp 0 < "$work/req.mp" > "$work/p.mp" 2> "$work/err" ||
	fail "prefill on a damaged arena: status $?"
grep -q "^fi-prefill: warning: .*bad magic.*passing requests on without KV" "$work/err" ||
	fail "prefill message: $(cat "$work/err")"
fi-decode -m tiny < "$work/p.mp" > "$work/c.mp" || fail "decode after a prefill without arena"
frames_same "$work/a.mp" "$work/c.mp" || fail "prefill without arena changed the output"
fi-load --arena-rm tiny || fail "removing a damaged arena"
fi-prefill -m tiny --arena-size 4M < "$work/req.mp" > /dev/null || fail "a fresh arena after removal"
# A prefix larger than the whole arena: the blocks that fit are stored, the rest is said once
# (tiny's f32 blocks are 40 KiB: 1M holds a few), and generation goes on.
fi-load --arena-rm tiny > /dev/null || fail "removing the 4M arena"
ids=$(awk 'BEGIN { srand(2); for (i = 0; i < 400; i++) printf "%s%d", i ? "," : "", 5 + int(rand() * 495) }')
fi-decode -m tiny --tokens "$ids" -n 2 --temp 0 --prefix-cache --arena-size 1M > /dev/null \
	2> "$work/err" || fail "decode into a full arena: status $?"
[ "$(grep -c "warning: kv arena [0-9a-f]*: full, [0-9]* of 25 blocks stored" "$work/err")" -eq 1 ] ||
	fail "full arena: $(cat "$work/err")"
fi-load --arena-rm tiny > /dev/null || fail "removing the full arena"
echo "all arena CLI checks passed"
