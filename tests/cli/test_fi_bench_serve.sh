#!/bin/sh
# fi-bench serve on the CPU backend with the embedded tiny model: every workload (fixed,
# ShareGPT-like, JSONL file, shared prefix) and arrival mode (all at once, Poisson, fixed
# concurrency), the three output formats, the report's figures recomputed from the
# per-request record, the plot, a worker over ZeroMQ (replies piped in, or on an endpoint)
# giving the same tokens as the in-process engine, --ignore-eos, failures (exit 3, a dead
# or vanished worker), usage errors, and the man page's EXAMPLES. Counts of requests and
# tokens are checked exactly; speeds never are.
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
work=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; rm -rf "$work"' EXIT
cd "$work" || exit 1

fi-load --name tiny "$root/models/tiny" > /dev/null || fail "fi-load tiny"
# tiny with the newline (id 203, which it emits often) as its end of generation: requests
# end early unless --ignore-eos
cp -r "$root/models/tiny" nl
sed -i 's/"eos_token_id": 1/"eos_token_id": 203/' nl/config.json nl/generation_config.json
fi-load --name tinynl nl > /dev/null || fail "fi-load tinynl"
# tiny with an 8192-token context: the default mix's lengths are never redrawn to fit
cp -r "$root/models/tiny" t8k
sed -i 's/"max_position_embeddings": 1024/"max_position_embeddings": 8192/' t8k/config.json
fi-load --name tiny8k t8k > /dev/null || fail "fi-load tiny8k"

# The report against the per-request record: percentiles (linear between ranks), means,
# throughput over the duration, goodput; and exact counts given as KEY=VALUE.
check() { # REPORT.json REQUESTS.jsonl [KEY=VALUE ...]
	python3 - "$@" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
reqs = [json.loads(l) for l in open(sys.argv[2])]
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    got = rep[k]
    assert str(got) == v, "%s: %r, want %s" % (k, got, v)
assert rep["num_prompts"] == len(reqs), (rep["num_prompts"], len(reqs))
assert [r["index"] for r in reqs] == list(range(len(reqs)))
done = [r for r in reqs if r["state"] == "done"]
failed = [r for r in reqs if r["state"] == "failed"]
assert rep["completed"] == len(done) and rep["failed"] == len(failed)
assert rep["total_input_tokens"] == sum(r["prompt_tokens"] for r in done)
assert rep["total_output_tokens"] == sum(r["output_tokens"] for r in done)
assert rep["cached_tokens"] == sum(r["cached_tokens"] for r in done)
def pct(v, p):
    v = sorted(v)
    pos = p / 100 * (len(v) - 1)
    k = int(pos)
    return v[k] + (v[k + 1] - v[k]) * (pos - k) if k + 1 < len(v) else v[k]
def close(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))
samples = {
    "ttft": [r["ttft_ms"] for r in done if r["ttft_ms"] is not None],
    "tpot": [r["tpot_ms"] for r in done if r["tpot_ms"] is not None],
    "itl": [g for r in done for g in r["itl_ms"]],
    "e2el": [r["e2el_ms"] for r in done],
}
for name, v in samples.items():
    want = {"mean": sum(v) / len(v), "median": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99)}
    for s, w in want.items():
        got = rep["%s_%s_ms" % (s, name)]
        assert close(got, w), "%s_%s_ms %r, from the requests %r" % (s, name, got, w)
for r in done:
    assert len(r["itl_ms"]) == max(r["output_tokens"] - 1, 0), r
    if r["output_tokens"] > 1:
        assert close(r["tpot_ms"], sum(r["itl_ms"]) / len(r["itl_ms"])), r
    assert r["start_s"] >= r["arrival_s"] - 1e-9 and r["ttft_ms"] > 0 and r["e2el_ms"] >= r["ttft_ms"]
ends = [r["start_s"] + r["e2el_ms"] / 1e3 for r in done + failed]
assert close(rep["duration"], max(ends)), (rep["duration"], max(ends))
assert close(rep["output_throughput"], rep["total_output_tokens"] / rep["duration"])
assert close(rep["request_throughput"], rep["completed"] / rep["duration"])
assert close(rep["total_token_throughput"],
             (rep["total_input_tokens"] + rep["total_output_tokens"]) / rep["duration"])
if rep["slo_ttft_ms"] is not None or rep["slo_tpot_ms"] is not None:
    good = sum(1 for r in done
               if (rep["slo_ttft_ms"] is None or r["ttft_ms"] <= rep["slo_ttft_ms"]) and
                  (rep["slo_tpot_ms"] is None or r["tpot_ms"] is None or
                   r["tpot_ms"] <= rep["slo_tpot_ms"]))
    assert rep["good_requests"] == good, (rep["good_requests"], good)
    assert close(rep["request_goodput"], good / rep["duration"])
else:
    assert rep["good_requests"] is None and rep["request_goodput"] is None
PY
}
serve() { fi-bench -m tiny --backend cpu -o json serve "$@"; }

# fixed lengths, all at once: every count exact
serve --requests 24 --workload fixed:16:8 --ignore-eos --save-requests fx.jsonl > fx.json ||
	fail "fixed: exit $?"
check fx.json fx.jsonl completed=24 failed=0 total_input_tokens=384 total_output_tokens=192 \
	request_rate=inf max_concurrency=None ignore_eos=1 backend=cpu workload=fixed:16:8 ||
	fail "fixed: report"
python3 - fx.jsonl <<'PY' || fail "fixed: requests"
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["input_tokens"] == 16 and r["max_tokens"] == 8 and r["output_tokens"] == 8 and
           r["finish"] == "length" and r["arrival_s"] == 0 and r["start_s"] == 0 for r in reqs)
PY
grep -q '"steps": [1-9]' fx.json || fail "fixed: steps counted"

# md and csv: the same run's figures
fi-bench -m tiny --backend cpu serve --requests 24 --workload fixed:16:8 --ignore-eos > fx.md ||
	fail "md exit $?"
cat fx.md
grep -q '^| tiny | cpu | fixed:16:8 | 24 | inf | - | 24 | 0 | [0-9.]* | [0-9.]* | [0-9.]* | [0-9.]* |$' fx.md ||
	fail "md: throughput row"
for m in TTFT TPOT ITL E2E; do
	grep -q "^| $m | [0-9]* | [0-9.]* | [0-9.]* | [0-9.]* | [0-9.]* |$" fx.md || fail "md: $m row"
done
grep -q '^| ITL | 168 |' fx.md || fail "md: 24 x 7 gaps"
grep -q '^tokens: 384 prompt (0 cached), 192 output; per completed request 16.0 prompt, 8.0 output$' fx.md ||
	fail "md: tokens line"
grep -q '^device: cpu' fx.md && grep -q 'ignore eos' fx.md || fail "md: device line"
fi-bench -m tiny --backend cpu -o csv serve --requests 24 --workload fixed:16:8 --ignore-eos > fx.csv ||
	fail "csv exit $?"
python3 - fx.csv <<'PY' || fail "csv"
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
assert len(rows) == 2 and len(rows[0]) == len(rows[1]), rows
r = dict(zip(*rows))
for k in ("request_throughput", "output_throughput", "total_token_throughput", "median_ttft_ms",
          "p90_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_itl_ms", "mean_e2el_ms"):
    assert float(r[k]) > 0, k
assert r["completed"] == "24" and r["total_output_tokens"] == "192" and r["request_rate"] == "inf"
assert r["request_goodput"] == "" and r["peak_mem_bytes"] == ""
PY

# ShareGPT-like: the same seed gives the same requests, another seed others; the lengths the
# dry run shows are those the run sends and gets
fi-bench -m tiny serve --requests 30 --workload sharegpt:24:12 --seed 5 --dry-run > d5a ||
	fail "dry run"
fi-bench -m tiny serve --requests 30 --workload sharegpt:24:12 --seed 5 --dry-run > d5b
fi-bench -m tiny serve --requests 30 --workload sharegpt:24:12 --seed 6 --dry-run > d6
cmp -s d5a d5b || fail "sharegpt: seed 5 twice differs"
cmp -s d5a d6 && fail "sharegpt: seeds 5 and 6 agree"
[ "$(wc -l < d5a)" = 30 ] || fail "dry run: 30 requests"
serve --requests 30 --workload sharegpt:24:12 --seed 5 --ignore-eos --slo-ttft 1000 \
	--slo-tpot 100 --save-requests sg.jsonl > sg.json || fail "sharegpt: exit $?"
want=$(python3 -c '
import json, sys
d = [json.loads(l) for l in open("d5a")]
print("total_input_tokens=%d total_output_tokens=%d" %
      (sum(r["input_tokens"] for r in d), sum(r["max_tokens"] for r in d)))')
check sg.json sg.jsonl completed=30 $want slo_ttft_ms=1000.0 slo_tpot_ms=100.0 || fail "sharegpt: report"

# the default mix on a long context: means ~217 and ~176, medians 140 and 110, 4..1024
fi-bench -m tiny8k serve --dry-run > mix.jsonl || fail "default mix"
python3 - mix.jsonl <<'PY' || fail "default mix: lengths"
import json, sys, statistics as st
d = [json.loads(l) for l in open(sys.argv[1])]
i = [r["input_tokens"] for r in d]; o = [r["max_tokens"] for r in d]
assert len(d) == 1000
assert 200 <= st.mean(i) <= 235 and 160 <= st.mean(o) <= 192, (st.mean(i), st.mean(o))
assert 120 <= st.median(i) <= 160 and 95 <= st.median(o) <= 125, (st.median(i), st.median(o))
assert min(i + o) >= 4 and max(i + o) <= 1024
assert max(i) == 1024 and min(i) == 4   # clamped, not drawn again, at this context
assert all(r["arrival_s"] == 0 for r in d)
PY
# ... and on tiny's 1024: pairs that do not fit are drawn again, never cut to nothing
fi-bench -m tiny serve --dry-run | python3 -c '
import json, sys
d = [json.loads(l) for l in sys.stdin]
assert all(r["input_tokens"] + r["max_tokens"] <= 1024 and r["max_tokens"] >= 4 for r in d)
' || fail "default mix: context"

# Poisson arrivals (seeded), and burstiness: mean gap 1/rate, coefficient of variation
# 1 (Poisson) or 1/sqrt(B); the prompts do not depend on the rate
fi-bench -m tiny serve --requests 2000 --rate 16 --dry-run > p16 || fail "poisson dry run"
fi-bench -m tiny serve --requests 2000 --rate 16 --burstiness 4 --dry-run > p16b4
fi-bench -m tiny serve --requests 2000 --dry-run > pinf
python3 - p16 p16b4 pinf <<'PY' || fail "poisson arrivals"
import json, sys, statistics as st
def load(f): return [json.loads(l) for l in open(f)]
for f, cv in ((sys.argv[1], 1.0), (sys.argv[2], 0.5)):
    a = [r["arrival_s"] for r in load(f)]
    g = [y - x for x, y in zip(a, a[1:])]
    assert a[0] == 0 and min(g) > 0
    assert abs(st.mean(g) * 16 - 1) < 0.05, st.mean(g)
    assert abs(st.pstdev(g) / st.mean(g) - cv) < 0.1, st.pstdev(g) / st.mean(g)
lens = lambda f: [(r["input_tokens"], r["max_tokens"]) for r in load(f)]
assert lens(sys.argv[1]) == lens(sys.argv[3]) == lens(sys.argv[2])
PY
serve --requests 20 --workload fixed:8:4 --rate 40 --save-requests rt.jsonl > rt.json ||
	fail "rate: exit $?"
check rt.json rt.jsonl completed=20 request_rate=40.0 || fail "rate: report"
fi-bench -m tiny serve --requests 20 --workload fixed:8:4 --rate 40 --dry-run > rt.dry
python3 - rt.jsonl rt.dry <<'PY' || fail "rate: arrivals"
import json, sys
run = [json.loads(l) for l in open(sys.argv[1])]
dry = [json.loads(l) for l in open(sys.argv[2])]
assert [r["arrival_s"] for r in run] == [r["arrival_s"] for r in dry]
assert all(r["start_s"] == r["arrival_s"] for r in run)   # no concurrency limit: sent on time
assert run[-1]["arrival_s"] > 0.1
PY

# fixed concurrency: never more than 3 in flight; a request starts when one ends
serve --requests 12 --workload fixed:8:6 --concurrency 3 --ignore-eos --save-requests cc.jsonl \
	> cc.json || fail "concurrency: exit $?"
check cc.json cc.jsonl completed=12 max_concurrency=3 total_output_tokens=72 || fail "concurrency: report"
python3 - cc.jsonl <<'PY' || fail "concurrency: in flight"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
# a slot freed and taken at the same instant: the end first (times to the microsecond)
ev = sorted([(x["start_s"], 1) for x in r] + [(x["start_s"] + x["e2el_ms"] / 1e3, -1) for x in r],
            key=lambda e: (round(e[0] * 1e6), e[1]))
n = peak = 0
for t, d in ev:
    n += d
    peak = max(peak, n)
assert peak == 3, peak
ends = [x["start_s"] + x["e2el_ms"] / 1e3 for x in r]
assert all(x["start_s"] == 0 for x in r[:3])
for x in r[3:]:
    assert any(abs(x["start_s"] - e) < 1e-6 for e in ends), x   # the end that freed its slot
PY

# shared prefix against distinct prefixes, one request at a time through the arena: the
# shared 64 tokens are computed once, distinct ones never reused
fi-bench -m tiny --backend cpu -o json serve --requests 10 --concurrency 1 --prefix-cache \
	--workload prefix:64:10:fixed:8:4 --seed 1 --save-requests px1.jsonl > px1.json || fail "prefix distinct"
check px1.json px1.jsonl completed=10 cached_tokens=0 total_input_tokens=720 || fail "prefix distinct: report"
fi-bench -m tiny --backend cpu -o json serve --requests 10 --concurrency 1 --prefix-cache \
	--workload prefix:64:1:fixed:8:4 --seed 2 --save-requests px2.jsonl > px2.json || fail "prefix shared"
check px2.json px2.jsonl completed=10 cached_tokens=576 total_input_tokens=720 || fail "prefix shared: report"
python3 - px1.jsonl <<'PY' || fail "prefix: prompts"
import json, sys
assert all(json.loads(l)["input_tokens"] == 72 for l in open(sys.argv[1]))
PY

# a JSONL file of text and token prompts
printf '%s\n' '{"prompt": "def add(a, b):", "max_tokens": 5}' '' '{"tokens": [10, 20, 30], "max_tokens": 3}' \
	'{"prompt": "Hello"}' > f.jsonl
serve --workload file:f.jsonl --ignore-eos --save-requests f.out > f.json || fail "file: exit $?"
check f.json f.out completed=3 total_output_tokens=264 workload=file:f.jsonl || fail "file: report"
python3 - f.out <<'PY' || fail "file: requests"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
assert [x["max_tokens"] for x in r] == [5, 3, 256], r
assert r[1]["input_tokens"] == 3 and r[0]["input_tokens"] > 3
PY
serve --workload file:f.jsonl --requests 2 > f2.json && grep -q '"completed": 2,' f2.json ||
	fail "file: --requests 2"
serve --workload file:f.jsonl --requests 4 2> err > /dev/null; [ $? = 1 ] || fail "file: 4 of 3"
grep -q "^fi-bench: f.jsonl holds 3 requests; --requests asks for 4$" err || fail "file: message $(cat err)"
printf '{"prompt": "x"}\n{"text": "y"}\n' > bad.jsonl
serve --workload file:bad.jsonl 2> err > /dev/null; [ $? = 1 ] || fail "file: bad line"
grep -q '^fi-bench: bad.jsonl:2: no "prompt" or "tokens"$' err || fail "file: bad line message $(cat err)"
serve --workload file:nowhere.jsonl 2> err > /dev/null; [ $? = 1 ] || fail "file: missing"
grep -q "^fi-bench: cannot open 'nowhere.jsonl': No such file or directory$" err || fail "missing file message"

# a request that cannot run (a prompt longer than the context) fails alone: exit 3
python3 -c 'import json; print(json.dumps({"tokens": [5] * 1100, "max_tokens": 4})); print(json.dumps({"tokens": [5, 6], "max_tokens": 4}))' > long.jsonl
serve --workload file:long.jsonl --ignore-eos --save-requests long.out > long.json 2> err
[ $? = 3 ] || fail "failed request: exit 3"
check long.json long.out completed=1 failed=1 total_output_tokens=4 || fail "failed request: report"
grep -q "^fi-bench: request 0: .*1100 tokens does not fit the context of 1024" err || fail "failed request: reason $(cat err)"
grep -q "^fi-bench: 1 of 2 requests failed$" err || fail "failed request: count"

# --ignore-eos: tinynl ends requests at its newline unless told not to
fi-bench -m tinynl --backend cpu -o json serve --requests 16 --workload fixed:8:48 --seed 3 \
	--save-requests eos.jsonl > eos.json || fail "eos: exit $?"
fi-bench -m tinynl --backend cpu -o json serve --requests 16 --workload fixed:8:48 --seed 3 \
	--ignore-eos --save-requests ign.jsonl > ign.json || fail "ignore eos: exit $?"
check ign.json ign.jsonl completed=16 total_output_tokens=768 || fail "ignore eos: report"
python3 - eos.jsonl <<'PY' || fail "eos: some requests stop early"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
stop = [x for x in r if x["finish"] == "stop"]
assert len(stop) >= 4 and all(x["output_tokens"] < 48 for x in stop), [x["output_tokens"] for x in r]
PY

# a worker over ZeroMQ: the same requests give the same tokens as in process (tinynl: the
# counts depend on what is generated), replies piped in or on an endpoint of their own
fi-decode -m tinynl -i "ipc://$work/w1" -o - |
	fi-bench -m tinynl -o json serve -e "ipc://$work/w1" --requests 16 --workload fixed:8:48 \
		--seed 3 --save-requests z1.jsonl > z1.json || fail "zmq piped: exit $?"
check z1.json z1.jsonl completed=16 backend=zeromq "device=ipc://$work/w1" steps=None || fail "zmq piped: report"
python3 - eos.jsonl z1.jsonl <<'PY' || fail "zmq piped: tokens as in process"
import json, sys
a, b = ([(r["prompt_tokens"], r["output_tokens"], r["finish"]) for r in map(json.loads, open(f))]
        for f in sys.argv[1:])
assert a == b, (a, b)
PY
fi-decode -m tinynl -i "ipc://$work/w2" -o "ipc://$work/b2" & pids="$pids $!"
fi-bench -m tinynl -o json serve -e "ipc://$work/w2" -i "ipc://$work/b2" --requests 16 \
	--workload fixed:8:48 --seed 3 --ignore-eos --concurrency 4 --save-requests z2.jsonl > z2.json ||
	fail "zmq endpoint: exit $?"
check z2.json z2.jsonl completed=16 total_output_tokens=768 max_concurrency=4 || fail "zmq endpoint: report"
wait || fail "the worker did not end after the eos frame"
pids=""

# a worker that is not there, and one that goes away
fi-bench -m tiny serve -e "ipc://$work/nobody" -i "ipc://$work/noreply" --timeout 1 \
	--requests 2 > /dev/null 2> err; [ $? = 1 ] || fail "dead endpoint: exit"
grep -q "^fi-bench: no reply from ipc://$work/nobody for 1 s, 1 request unanswered$" err ||
	fail "dead endpoint: message $(cat err)"
# ... and a worker stopped in the middle (it cancels what it holds and ends its output)
{ fi-decode -m tiny -i "ipc://$work/w4" -o - & echo $! > w4.pid; wait; } |
	fi-bench -m tiny serve -e "ipc://$work/w4" --requests 1000 --workload fixed:32:64 \
		--concurrency 16 > /dev/null 2> err4 &
bp=$!
sleep 1.5
kill "$(cat w4.pid)"
wait $bp; rc=$?
[ $rc = 1 ] || fail "worker gone: exit $rc ($(cat err4))"
grep -q "^fi-bench: the replies ended with [0-9]* requests* unanswered (did the worker exit?)$" err4 ||
	fail "worker gone: message $(cat err4)"

# interrupted: what finished is reported, exit 1
fi-bench -m tiny --backend cpu -o json serve --requests 2000 --workload fixed:16:8 --concurrency 8 \
	> int.json 2> int.err & bp=$!
sleep 1.5
kill -TERM $bp
wait $bp; rc=$?
[ $rc = 1 ] || fail "interrupted: exit $rc"
n=$(sed -n 's/^fi-bench: interrupted after \([0-9]*\) of 2000 requests$/\1/p' int.err)
[ -n "$n" ] && grep -q "\"completed\": $n," int.json && grep -q '"failed": 0,' int.json ||
	fail "interrupted: $(cat int.err)"

# the plot: a PNG gnuplot drew, 1400 x 1000
serve --requests 12 --workload fixed:8:4 --rate 50 --slo-ttft 500 --plot p.png > /dev/null ||
	fail "plot: exit $?"
python3 - p.png <<'PY' || fail "plot: not a 1400x1000 PNG"
import struct, sys
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR", b[:16]
assert struct.unpack(">II", b[16:24]) == (1400, 1000) and len(b) > 10000
PY
# without gnuplot: said before the run, exit 1
env PATH="$(dirname "$(command -v fi-bench)")" fi-bench -m tiny serve --requests 2 \
	--plot q.png > /dev/null 2> err; [ $? = 1 ] || fail "no gnuplot: exit"
grep -q "^fi-bench: --plot needs gnuplot (Debian package gnuplot-nox)" err || fail "no gnuplot: $(cat err)"
[ ! -e q.png ] || fail "no gnuplot: a picture anyway"

# usage errors exit 2
for args in "serve pp512" "serve --rate 0" "serve --rate x" "serve --workload nope" \
	"serve --workload fixed:0:4" "serve --workload prefix:0" "serve --workload sharegpt:1" \
	"serve -i ipc://$work/x" "serve -e ipc://$work/x --max-batch 4" "serve -e notazmq" \
	"-r 2 serve" "serve --kv-size 12q" "serve --concurrency 0" "-o xml serve" "serve --requests 0"; do
	fi-bench -m tiny $args > /dev/null 2> err; rc=$?
	[ $rc = 2 ] || fail "'$args': exit $rc, want 2 ($(cat err))"
done
fi-bench serve > /dev/null 2>&1; [ $? = 2 ] || fail "serve without -m"
fi-bench -m tiny serve pp512 2> err; grep -q "^fi-bench: 'pp512' with serve: serve runs alone" err || fail "mixed message"
fi-bench -m tiny serve --rate x 2> err; grep -q "^fi-bench: invalid value 'x' for --rate$" err || fail "--rate message"
fi-bench -m tiny serve --workload fixed:0:4 2> err
grep -q "^fi-bench: --workload 'fixed:0:4': fixed:IN:OUT takes two lengths of at least 1$" err || fail "workload message"
fi-bench serve -h > h1 && fi-bench -h > h2 && cmp -s h1 h2 || fail "serve -h: the whole usage"
grep -q '^       fi-bench -m MODEL \[--backend auto|cuda|cpu\] \[-t THREADS\] \[--tp N\]$' h1 &&
	grep -q '^                \[-o md|csv|json\] serve \[--requests N\]' h1 || fail "-h: the serve form"
# a model named "serve" is a micro run of that model
fi-bench -m serve --backend cpu pp8 2> err; [ $? = 1 ] || fail "-m serve"
grep -q "^fi-bench: model 'serve' not found" err || fail "-m serve: $(cat err)"

# EXAMPLES of fi-bench(1) for serve (the worker's socket in this test's directory)
fi-bench -m tiny --backend cpu serve --requests 20 --workload fixed:32:16 --ignore-eos > ex1 ||
	fail "example 1"
grep -q '| 20 | inf | - | 20 | 0 |' ex1 || fail "example 1 row"
fi-bench -m tiny --backend cpu serve --requests 40 --workload sharegpt:40:20 \
	--rate 20 --slo-ttft 500 --slo-tpot 50 --plot serve.png > ex2 || fail "example 2"
[ -s serve.png ] && grep -q '^goodput (TTFT <= 500 ms, TPOT <= 50 ms): [0-9.]* req/s, [0-9]* of 40 requests$' ex2 ||
	fail "example 2 output"
fi-bench -m tiny --backend cpu -o csv serve --requests 24 --concurrency 8 \
	--workload fixed:16:8 > ex3 || fail "example 3"
[ "$(wc -l < ex3)" = 2 ] || fail "example 3 csv"
fi-bench -m tiny --backend cpu serve --requests 16 --rate 40 --prefix-cache \
	--workload prefix:256:1:fixed:16:8 --ignore-eos > ex4 || fail "example 4a"
fi-bench -m tiny --backend cpu serve --requests 16 --rate 40 --prefix-cache \
	--workload prefix:256:16:fixed:16:8 --ignore-eos >> ex4 || fail "example 4b"
fi-decode -m tiny -e 1 -i "ipc://$work/fi-bench-w0" 2> /dev/null & wp=$!
fi-bench -m tiny serve --endpoint "ipc://$work/fi-bench-w0" --requests 20 --workload fixed:32:16 > ex5 ||
	fail "example 5"
wait $wp || fail "example 5: the worker did not end after the eos: exit $?"
grep -q '| tiny | zeromq | fixed:32:16 | 20 | inf | - | 20 | 0 |' ex5 || fail "example 5 row"
printf '%s\n' '{"prompt": "def add(a, b):", "max_tokens": 8}' \
	'{"tokens": [10, 20, 30], "max_tokens": 4}' > prompts.jsonl
fi-bench -m tiny --backend cpu -o json serve --workload file:prompts.jsonl > ex6 || fail "example 6"
grep -q '"completed": 2,' ex6 || fail "example 6 output"
fi-bench -m tiny serve --requests 2000 --rate 16 --dry-run > requests.jsonl || fail "example 7"
[ "$(wc -l < requests.jsonl)" = 2000 ] || fail "example 7 lines"
exit 0
