#!/bin/sh
# fi-bench on the CPU backend with the embedded tiny model: the man page's EXAMPLES, the three
# output formats (table rows, csv columns, json fields), test-name parsing, usage errors.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
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
python3 - "$work/json" <<'PY' || fail "json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["backend"] == "cpu" and d["model"] == "tiny", d
assert d["params"] == 6951168, d["params"]
t = d["tests"]
assert len(t) == 1 and t[0]["test"] == "tg8" and t[0]["batch"] == 4 and t[0]["n_gen"] == 8
assert t[0]["reps"] == 2 and t[0]["tps_mean"] > 0 and t[0]["tps_sd"] >= 0
assert d["load_s"] > 0 and d["exec_to_first_token_s"] > 0
PY

fi-bench -m tiny --backend cpu -r 1 -o csv pp32 pp16@d16 > "$work/csv" || fail "csv exit $?"
[ "$(wc -l < "$work/csv")" = 3 ] || fail "csv: header and two rows"
head -1 "$work/csv" | grep -q '^model,size_bytes,params,backend,device,build,batch,test,reps,tps_mean,tps_sd,' ||
	fail "csv header"
grep -q '^tiny,.*,pp16@d16,1,' "$work/csv" || fail "csv row"

# usage errors exit 2; a missing model exits 1
fi-bench -m tiny --backend cpu pp0 2> "$work/err"; [ $? = 2 ] || fail "pp0 not a usage error"
grep -q "bad test 'pp0'" "$work/err" || fail "bad test message"
fi-bench -m tiny --backend cpu tg8@x4 2> /dev/null; [ $? = 2 ] || fail "bad depth"
fi-bench -m tiny -o xml 2> /dev/null; [ $? = 2 ] || fail "bad format"
fi-bench pp8 2> /dev/null; [ $? = 2 ] || fail "no model"
fi-bench -m no-such-model pp8 2> "$work/err"; [ $? = 1 ] || fail "missing model exit"
grep -q "^fi-bench: model 'no-such-model' not found" "$work/err" || fail "missing model message: $(cat "$work/err")"
fi-bench -m tiny --backend tpu pp8 2> "$work/err"; [ $? = 2 ] || fail "unknown backend exit"
fi-bench -m tiny -r 3x pp8 2> "$work/err"; [ $? = 2 ] || fail "-r 3x exit"
grep -q "^fi-bench: invalid value '3x' for -r" "$work/err" || fail "-r 3x message: $(cat "$work/err")"
fi-bench -m tiny -b 0 pp8 2> /dev/null; [ $? = 2 ] || fail "-b 0 exit"
exit 0
