#!/usr/bin/env python3
"""ncu_steps.py CSV [N]: the last N forward passes of an `ncu --csv` run, kernel by kernel.

A forward starts at each launch of the embedding kernel (every model forward begins with
it). For each of the last N forwards (default 2) the table gives, per kernel name and grid,
launches, summed time (us) and DRAM bytes, then the forward's kernel time and bytes. Set the
sum against the forward's wall time from fi-bench: the rest is launch gaps and host time."""
import collections
import csv
import sys

UNIT = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
        "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}

with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
launches = collections.OrderedDict()
for r in csv.DictReader(lines):
    k = int(r["ID"])
    d = launches.setdefault(k, {"name": r["Kernel Name"].split("(")[0][:56],
                                "grid": r["Grid Size"], "m": {}})
    v = r["Metric Value"].replace(",", "")
    d["m"][r["Metric Name"]] = (float(v) if v else 0.0) * UNIT.get(r["Metric Unit"], 1.0)
order = [launches[k] for k in sorted(launches)]
starts = [i for i, d in enumerate(order) if "embed" in d["name"]]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2
print(f"{len(order)} launches, {len(starts)} forwards")
if not starts:
    sys.exit("no embedding kernel among the launches: widen --launch-count")
bounds = list(zip(starts, starts[1:] + [len(order)]))
for a, b in bounds[-n:]:
    agg = collections.OrderedDict()
    for d in order[a:b]:
        t = agg.setdefault((d["name"], d["grid"]), [0, 0.0, 0.0])
        t[0] += 1
        t[1] += d["m"].get("gpu__time_duration.sum", 0.0)
        t[2] += d["m"].get("dram__bytes_read.sum", 0.0) + d["m"].get("dram__bytes_write.sum", 0.0)
    us = sum(t[1] for t in agg.values())
    by = sum(t[2] for t in agg.values())
    print(f"\nforward of {b - a} launches: kernel time {us:.1f} us, DRAM {by / 1e6:.1f} MB")
    print(f"{'kernel':56s} {'grid':>16s} {'n':>4s} {'us':>9s} {'share':>6s} {'TB/s':>6s}")
    for (name, g), t in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        bw = t[2] / t[1] / 1e6 if t[1] else 0.0
        print(f"{name:56s} {g:>16s} {t[0]:4d} {t[1]:9.1f} {100 * t[1] / us:5.1f}% {bw:6.2f}")
