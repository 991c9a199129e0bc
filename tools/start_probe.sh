#!/bin/sh
# start_probe.sh [PHASES]: on the GPU machine, from the repository root, with the bundle in
# build-cuda/bundle (as tools/gpu-run.sh) and tools/cuda_start built next to it
# (build-cuda/cuda_start): where exec-to-first-token goes for the Llama-3-8B shape.
#   ref      the 8B checkpoint (tools/hf_gpu_ref.py), then fi-load
#   bench    fi-bench's start-up breakdown: the first command after fi-load, then twice more
#   decode   fi-decode -n 1 --tokens 1, three times, wall time
#   init     cuda_start init (twice), with a concurrent prefault, with eager module loading,
#            and while another process holds a context (the device's own initialisation)
#   upload   cuda_start upload: host copy, pread, pinning and link rates
#   first    fi-bench and fi-decode (exec to first output, tools/first_token.py), three
#            times each; FI_UPLOAD_PIN=alloc and FI_UPLOAD_THREADS=8 once each
#   reload   fi-load again, then fi-decode as the first command after it
#   old      the same as first with the bundle in build-old/bundle (A/B on one machine)
#   check    test_kernels, then the 8B shape against HF (tools/hf_gpu_ref.py output)
# Logs go to $OUT (or /tmp/gpu-out).
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
refs=/tmp/hfref
use() {
	here=$(pwd)/$1/bundle
	export PATH="$here/bin:$PATH" LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64"
}
first() {
	for i in 1 2 3; do
		fi-bench -m llama3_8b -r 1 tg1 | grep -E '^load|^startup'
	done
	for i in 1 2 3; do
		python3 tools/first_token.py fi-decode -m llama3_8b -n 1 --tokens 1
	done
}
use build-cuda
export FI_HOME=/dev/shm/fi
img=$FI_HOME/models/llama3_8b.fim
cs=build-cuda/cuda_start
for ph in ${@:-ref bench decode init upload}; do
	echo "== $ph"
	case $ph in
	ref)
		nvidia-smi -q | grep -i -A1 persistence
		uname -r; nproc; free -g | head -2
		cat /sys/kernel/mm/transparent_hugepage/shmem_enabled /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
		[ -d $refs/llama3_8b ] || python3 tools/hf_gpu_ref.py $refs llama3_8b >"$out/ref.log" 2>&1 || tail -5 "$out/ref.log"
		/usr/bin/time -f "fi-load %e s" fi-load --name llama3_8b $refs/llama3_8b >/dev/null
		;;
	bench)
		for i in 1 2 3; do
			fi-bench -m llama3_8b -r 1 tg1 | grep -E '^load|^startup'
		done
		;;
	decode)
		for i in 1 2 3; do
			/usr/bin/time -f "fi-decode -n 1: %e s wall" fi-decode -m llama3_8b -n 1 --tokens 1 >/dev/null
		done
		;;
	init)
		$cs init; $cs init
		$cs init-pf "$img"
		CUDA_MODULE_LOADING=EAGER $cs init | grep -E 'Retain|cudaFree|cublasLt|total'
		$cs hold 30 >"$out/hold.log" & hp=$!
		while ! grep -q 'context up' "$out/hold.log" 2>/dev/null; do sleep 0.1; done
		cat "$out/hold.log"
		echo "(another process holds a context now)"
		$cs init
		kill $hp; wait $hp 2>/dev/null
		;;
	upload)
		$cs upload "$img"
		;;
	first)
		first
		for v in FI_UPLOAD_PIN=alloc FI_UPLOAD_THREADS=8; do
			echo "$v:"; env $v fi-bench -m llama3_8b -r 1 tg1 | grep -E '^load|^startup'
		done
		;;
	reload)
		fi-load -f --name llama3_8b $refs/llama3_8b >/dev/null
		python3 tools/first_token.py fi-decode -m llama3_8b -n 1 --tokens 1
		;;
	old)
		(use build-old; first)
		;;
	check)
		timeout 150 build-cuda/bundle/tests/test_kernels >"$out/kernels.log" 2>&1; echo "test_kernels exit $?"
		grep -v ' ok$' "$out/kernels.log" | tail -5
		FI_HF_REFS=$refs/llama3_8b timeout 200 build-cuda/bundle/tests/test_model_hf 2>&1 | tail -8
		;;
	esac
done 2>&1 | tee "$out/probe.log"
