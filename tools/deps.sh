#!/bin/sh
# Installs the Debian packages fi builds and tests with (run as root or with sudo); jq is
# for the shell tests, which read frames through fi-frame.
# The CUDA toolkit is optional: when nvcc is on PATH or in /usr/local/cuda, the build adds
# the GPU backend.
set -eu
export DEBIAN_FRONTEND=noninteractive
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends \
	build-essential pkg-config python3 ca-certificates \
	libjansson-dev libmsgpack-dev libzmq3-dev libpcre2-dev libutf8proc-dev libssl-dev \
	libopenblas-dev libxxhash-dev libmicrohttpd-dev check jq curl mandoc gnuplot-nox >/dev/null
