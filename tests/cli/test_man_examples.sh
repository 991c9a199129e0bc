#!/bin/sh
# Every EXAMPLES line of every man page, as mandoc renders it (what a reader copies from
# man(1)), runs: the lines of a page in order, in a scratch directory, with a fresh
# FI_HOME; every file a line writes (> FILE, -o FILE) is there and not empty; background
# lines (&) finish. Every page is clean under mandoc -Tlint at warning level (the style
# notes, lines over 80 columns and references to pages not installed, are not counted).
#
# The examples name realistic models and devices; this test runs them on any machine:
#   - stories260k_q8_0.gguf is the committed GGUF fixture of that name;
#   - ~/models/Llama-3.1-8B-Instruct is the embedded model, models/tiny (HOME is the
#     scratch directory), and the store names llama3 and tiny are that model, loaded
#     beforehand when a page uses them without loading them;
#   - GPU-only lines (--backend cuda) run on the CPU (--backend cpu);
#   - tcp:// endpoints of other hosts run on loopback (tcp://127.0.0.1:PORT);
#   - the input files the examples read (prompts.txt, prompt.txt, chats.jsonl,
#     requests.jsonl: JSONL requests for fi-tokenize, frames as JSON lines for fi-frame(1))
#     are made here; the programs of examples/ are copied in;
#   - the library of the build tree stands for the installed one (a fi.pc on
#     PKG_CONFIG_PATH pointing at include/ and $BUILD, and LD_LIBRARY_PATH).
set -u
fail() { echo "FAIL: $*" >&2; exit 1; }
root=$(pwd)
command -v mandoc > /dev/null || { echo "SKIPPED: mandoc not installed (tools/deps.sh)" >&2; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pages=0 lines=0

for page in "$root"/man/man*/*.[1-9]; do
	name=$(basename "$page")
	mandoc -Tlint -Wwarning "$page" > "$work/lint" 2>&1 || true
	[ ! -s "$work/lint" ] || fail "mandoc -Tlint $name: $(cat "$work/lint")"
	mandoc -Tascii -Owidth=400 "$page" | col -bx | sed -n '/^EXAMPLES$/,/^[A-Z]/p' |
		sed -n 's/^ *\$ //p' > "$work/examples"
	[ -s "$work/examples" ] || continue
	pages=$((pages + 1))
	ex=$work/$name
	mkdir -p "$ex/models" "$ex/home"
	ln -s "$root/models/tiny" "$ex/models/Llama-3.1-8B-Instruct"
	cp "$root/tests/fixtures/quant/stories260k_q8_0.gguf" "$ex/" # fi-load(1)'s GGUF file
	printf 'The cat sat on the\nimport os\ndef main():\n' > "$ex/prompts.txt"
	for i in 1 2 3 4 5 6; do printf 'The module reads a file of prompts and writes one request for each line. '; done \
		> "$ex/prompt.txt"
	printf '%s\n' '[{"role":"user","content":"Hi!"}]' '{"messages":[{"role":"user","content":"Name a module"}]}' \
		> "$ex/chats.jsonl"
	if [ "$name" = fi-frame.1 ]; then
		printf '%s\n' '{"v":1,"type":"request","id":"a","text":"Once","temperature":0}' \
			'{"v":1,"type":"request","id":"b","text":"The sea","seed":7}' > "$ex/requests.jsonl"
	else
		printf '%s\n' '{"id":"q1","prompt":"Hello world","max_tokens":5,"temperature":0.5,"stop":["x"]}' \
			'{"id":"q2","prompt":"import","seed":7}' > "$ex/requests.jsonl"
	fi
	cp "$root"/examples/*.c "$ex/"
	if [ -n "${BUILD:-}" ] && [ -f "$BUILD/fi.pc" ]; then
		mkdir -p "$ex/pkgconfig"
		sed -e "s#^prefix=.*#prefix=$root#" -e "s#^libdir=.*#libdir=$BUILD#" "$BUILD/fi.pc" \
			> "$ex/pkgconfig/fi.pc"
		export PKG_CONFIG_PATH="$ex/pkgconfig" LD_LIBRARY_PATH="$BUILD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	elif grep -q 'pkg-config' "$work/examples"; then
		fail "$name: its examples build against libfi: run with BUILD set (make check does)"
	fi
	export HOME="$ex" FI_HOME="$ex/home"
	for m in llama3 tiny; do
		if grep -qw "$m" "$work/examples" && ! grep -q -- "--name $m" "$work/examples"; then
			fi-load "$root/models/tiny" --name $m > /dev/null 2>&1 || fail "$name: loading $m"
		fi
	done
	pids="" n=0
	while IFS= read -r line; do
		n=$((n + 1))
		run=$(printf '%s\n' "$line" | sed 's/--backend cuda/--backend cpu/g; s#tcp://[^:/]*:#tcp://127.0.0.1:#g')
		case $run in
		*'&')
			printf '%s\n' "${run%&}" > "$ex/line$n.sh"
			(cd "$ex" && exec timeout 300 sh "line$n.sh") > "$ex/out$n" 2> "$ex/err$n" &
			pids="$pids $!:$n"
			;;
		*)
			printf '%s\n' "$run" > "$ex/line$n.sh"
			(cd "$ex" && timeout 300 sh "line$n.sh") > "$ex/out$n" 2> "$ex/err$n" ||
				fail "$name: '$line' exited $?: $(cat "$ex/err$n")"
			;;
		esac
		echo "ok: $name: $line"
		lines=$((lines + 1))
	done < "$work/examples"
	for p in $pids; do
		wait "${p%:*}" || fail "$name: background line ${p#*:} exited $?: $(cat "$ex/err${p#*:}")"
	done
	# What the lines wrote (> FILE, -o FILE, not endpoints) is there.
	sed -n 's/.*> *\([^ &|<>]*\).*/\1/p; s/.*-o \([^ &|<>]*\).*/\1/p' "$work/examples" |
		grep -v '://' | grep -v -x -e 'md' -e 'csv' -e 'json' | sort -u |
		while IFS= read -r f; do
			[ -s "$ex/$f" ] || fail "$name: $f was not written"
		done || exit 1
done
[ $pages -ge 8 ] || fail "only $pages man pages have examples"
echo "ok: $lines lines of $pages pages"
