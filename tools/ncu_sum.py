#!/usr/bin/env python3
"""ncu_sum.py CSV STEP: per-kernel table of an `ncu --csv` run over decode steps.

STEP is the number of launches in one decode step; the table gives, per kernel name,
launches per step, time per step (us) and DRAM bytes per step, and the sum of kernel
time per step (to set against the step time fi-bench measures)."""
import csv, sys, collections

rows = collections.defaultdict(dict)
with open(sys.argv[1]) as f:
    lines = [l for l in f if l.startswith('"')]
for r in csv.DictReader(lines):
    k = (r["ID"], r["Kernel Name"].split("(")[0][:60], r["Grid Size"], r["Block Size"])
    v = r["Metric Value"].replace(",", "")
    unit = r["Metric Unit"]
    x = float(v) if v else 0.0
    if unit in ("nsecond", "ns"): x /= 1e3
    elif unit in ("usecond", "us"): pass
    elif unit in ("msecond", "ms"): x *= 1e3
    elif unit == "Kbyte": x *= 1e3
    elif unit == "Mbyte": x *= 1e6
    elif unit == "Gbyte": x *= 1e9
    rows[k][r["Metric Name"]] = x
n = len(rows)
steps = n / float(sys.argv[2])
agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
for (i, name, g, b), m in rows.items():
    a = agg[(name, g, b)]
    a[0] += 1
    a[1] += m.get("gpu__time_duration.sum", 0)
    a[2] += m.get("dram__bytes_read.sum", 0) + m.get("dram__bytes_write.sum", 0)
tot = sum(a[1] for a in agg.values()) / steps
print(f"{n} launches, {steps:.2f} steps; kernel time per step {tot:.1f} us")
print(f"{'kernel':60s} {'grid':>14s} {'n/step':>7s} {'us/step':>9s} {'us each':>8s} {'TB/s':>6s}")
for (name, g, b), a in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    us = a[1] / steps
    print(f"{name:60s} {g:>14s} {a[0]/steps:7.1f} {us:9.1f} {a[1]/a[0]:8.2f} {a[2]/a[1]/1e6 if a[1] else 0:6.2f}")
