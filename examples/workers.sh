#!/bin/sh
# Long-lived workers on ZeroMQ sockets: a prefill worker feeding a decode worker; requests go
# in through a socket, results come out on standard output. Each worker ends after the eos
# frame of its producer (or on SIGINT/SIGTERM, answering every request it holds).
set -eu
cd "$(dirname "$0")/.."
PATH=${BUILD:-$PWD/build}/bin:$PATH
run=${TMPDIR:-/tmp}/fi-workers.$$
mkdir -p "$run"
trap 'rm -rf "$run"' EXIT
fi-load -l 2>/dev/null | grep -q '^tiny ' || fi-load models/tiny --name tiny >&2
fi-decode -m tiny -n 40 -i "ipc://$run/decode" -o - | fi-tokenize -m tiny -d &
fi-prefill -m tiny --temp 0 --arena-size 64M -i "ipc://$run/prefill" -o "ipc://$run/decode" &
fi-tokenize -m tiny -o "ipc://$run/prefill" < examples/pipeline-prompts.txt
wait
