#!/usr/bin/env python3
"""steplog_sum.py FILE: where a serving run's time went, from fi-decode's FI_STEP_LOG.

With the scheduler's overlap, step k's line is written after step k was launched; the wall
time from line k to line k+1 is what step k cost (the device's time for it when the host
keeps up). Steps are grouped as decode-only (every token a sampled row) by their rows, and
mixed (prompt chunks in them) by their prompt tokens. Prints a markdown table."""
import sys


def main():
    path = sys.argv[1]
    rows = []
    with open(path) as f:
        head = f.readline().rstrip("\n").split("\t")
        for line in f:
            v = line.rstrip("\n").split("\t")
            rows.append(dict(zip(head, v)))
    if len(rows) < 2:
        print("| %s | fewer than 2 steps |" % path)
        return
    groups = {}
    host = plan = 0.0
    for a, b in zip(rows, rows[1:]):
        tok, r = int(a["tokens"]), int(a["rows"])
        dt = (float(b["t_s"]) - float(a["t_s"])) * 1e3
        host += float(a["host_ms"])
        plan += float(a["plan_ms"])
        if tok == 0:
            key = "collect only"
        elif tok == r:
            lim = next(x for x in (8, 32, 64, 128, 256, 512, 1024, 1 << 30) if r <= x)
            key = "decode, rows <= %d" % lim
        else:
            p = tok - r
            lim = next(x for x in (512, 2048, 4096, 8192, 1 << 30) if p <= x)
            key = "mixed, prompt tokens <= %d" % lim
        g = groups.setdefault(key, [0, 0.0, 0, 0])
        g[0] += 1
        g[1] += dt
        g[2] += tok
        g[3] += r
    total = sum(g[1] for g in groups.values())
    n = len(rows) - 1
    print("\n%s: %d steps, %.2f s between the first and last line; host %.3f ms/step "
          "(planning %.3f)\n" % (path, n, total / 1e3, host / n, plan / n))
    print("| steps | count | ms each | s in all | share | tokens each | rows each |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key in sorted(groups, key=lambda k: -groups[k][1]):
        c, t, tok, r = groups[key]
        print("| %s | %d | %.2f | %.2f | %.0f%% | %.0f | %.0f |" % (
            key, c, t / c, t / 1e3, 100 * t / total, tok / c, r / c))


if __name__ == "__main__":
    main()
