#!/usr/bin/env python3
"""first_token.py CMD...: runs CMD, prints the seconds from its start to the first byte on
its stdout (exec to first token for a streaming fi-decode) and to its exit."""
import subprocess
import sys
import time

t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
first = p.stdout.read(1)
t1 = time.monotonic()
p.stdout.read()
rc = p.wait()
t2 = time.monotonic()
print("%s: first output %.3f s, exit %.3f s, rc %d%s" % (
    " ".join(sys.argv[1:]), t1 - t0, t2 - t0, rc, "" if first else " (no output)"))
sys.exit(rc)
