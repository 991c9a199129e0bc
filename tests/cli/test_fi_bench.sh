#!/bin/sh
# fi-bench on the CPU backend with the embedded tiny model: the man page's EXAMPLES, the three
# output formats (table rows, csv columns, json fields), test-name parsing, usage errors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v jq > /dev/null || { echo "SKIPPED: jq absent (tools/deps.sh installs it)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fi-load --name tiny "$root/models/tiny" > /dev/null || fail "fi-load tiny"

# EXAMPLES of fi-bench(1), on the CPU so that the test runs anywhere
fi-bench -m tiny --backend cpu -r 2 pp64 tg16 tg16@d64 > "$work/md" || fail "md exit $?"
cat "$work/md"
[ "$(grep -c '^| tiny | .* | cpu | 1 | \(pp64\|tg16\|tg16@d64\) | [0-9.]* ± [0-9.]* |$' "$work/md")" = 3 ] ||
	fail "three table rows expected"
grep -q '^device: cpu' "$work/md" || fail "device line"
grep -q 'build: fi ' "$work/md" || fail "build recorded"
grep -q 'exec to first token: [0-9.]* s' "$work/md" || fail "exec to first token"

fi-bench -m tiny --backend cpu -b 4 -r 2 -o json tg8 > "$work/json" || fail "json exit $?"
jq -e '.backend == "cpu" and .model == "tiny" and .params == 6951168 and
	(.tests | length) == 1 and .tests[0].test == "tg8" and .tests[0].batch == 4 and
	.tests[0].n_gen == 8 and .tests[0].reps == 2 and .tests[0].tps_mean > 0 and
	.tests[0].tps_sd >= 0 and .load_s > 0 and .exec_to_first_token_s > 0' "$work/json" \
	> /dev/null || fail "json content: $(cat "$work/json")"

fi-bench -m tiny --backend cpu -r 1 -o csv pp32 pp16@d16 > "$work/csv" || fail "csv exit $?"
[ "$(wc -l < "$work/csv")" = 3 ] || fail "csv: header and two rows"
head -1 "$work/csv" | grep -q '^model,size_bytes,params,backend,device,build,batch,test,reps,tps_mean,tps_sd,' ||
	fail "csv header"
grep -q '^tiny,.*,pp16@d16,1,' "$work/csv" || fail "csv row"

# Rows come out as their tests complete: the pp64 row is readable while tg512 still runs.
mkfifo "$work/fifo"
fi-bench -m tiny --backend cpu -r 1 pp64 tg512 > "$work/fifo" 2> "$work/bench.err" & b=$!
{
	read -r h1; read -r h2; read -r row
	kill -0 $b 2> /dev/null && echo running > "$work/state"
	echo "$row" > "$work/row"
	cat > /dev/null
} < "$work/fifo"
wait $b || fail "streaming run exit"
grep -q '| pp64 |' "$work/row" || fail "first row: $(cat "$work/row")"
[ "$(cat "$work/state" 2> /dev/null)" = running ] || fail "the pp64 row came only at the end"
# Off a terminal nothing on stderr; on one (script(1) gives a pty) a progress line
# "[k/n] test: run r/N", erased before each row.
[ ! -s "$work/bench.err" ] || fail "stderr off a terminal: $(cat "$work/bench.err")"
command -v script > /dev/null || fail "script(1) absent (util-linux)"
script -qec "fi-bench -m tiny --backend cpu -r 2 pp32 tg8 > $work/tty.md" /dev/null > "$work/tty" ||
	fail "fi-bench on a terminal"
grep -q '\[1/2\] pp32: run 2/2' "$work/tty" && grep -q '\[2/2\] tg8: warm-up' "$work/tty" ||
	fail "no progress line: $(od -c "$work/tty" | head)"
[ "$(grep -c '^| tiny ' "$work/tty.md")" = 2 ] || fail "tty run table: $(cat "$work/tty.md")"

# usage errors exit 2; a missing model exits 1
fi-bench -m tiny --backend cpu pp0 2> "$work/err"; [ $? = 2 ] || fail "pp0 not a usage error"
grep -q "bad test 'pp0'" "$work/err" || fail "bad test message"
fi-bench -m tiny --backend cpu tg8@x4 2> /dev/null; [ $? = 2 ] || fail "bad depth"
fi-bench -m tiny -o xml 2> /dev/null; [ $? = 2 ] || fail "bad format"
fi-bench pp8 2> /dev/null; [ $? = 2 ] || fail "no model"
fi-bench -m no-such-model pp8 2> "$work/err"; [ $? = 1 ] || fail "missing model exit"
grep -q "^fi-bench: model 'no-such-model' not found" "$work/err" || fail "missing model message: $(cat "$work/err")"
fi-bench -m tiny --backend tpu pp8 2> "$work/err"; [ $? = 1 ] || fail "unknown backend exit"
fi-bench -h | head -1 | grep -q '^usage: fi-bench -m NAME|PATH' || fail "usage"
fi-bench -m tiny -r 3x pp8 2> "$work/err"; [ $? = 2 ] || fail "-r 3x exit"
grep -q "^fi-bench: invalid value '3x' for -r" "$work/err" || fail "-r 3x message: $(cat "$work/err")"
fi-bench -m tiny -b 0 pp8 2> /dev/null; [ $? = 2 ] || fail "-b 0 exit"
exit 0
