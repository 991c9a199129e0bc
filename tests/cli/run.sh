#!/bin/sh
# Runs every tests/cli/test_*.sh (or those named in FI_CLI_TESTS, without .sh). A test exits
# 0 (pass), 77 (skipped, with a reason on stderr) or anything else (fail). Prints the closing
# "N passed, N failed, N skipped".
# Environment: PATH has build/bin first; FI_TEST_SHARED is the shared corpus (may be absent);
# each test gets its own FI_HOME in a fresh temporary directory.
pass=0 fail=0 skip=0
dir=$(dirname "$0")
tests=
for n in ${FI_CLI_TESTS:-}; do tests="$tests $dir/$n.sh"; done
for t in ${tests:-"$dir"/test_*.sh}; do
	[ -e "$t" ] || continue
	tmp=$(mktemp -d)
	FI_HOME=$tmp/home TMPDIR=$tmp sh "$t" >"$tmp/log" 2>&1
	rc=$?
	name=$(basename "$t" .sh)
	if [ $rc = 0 ]; then pass=$((pass + 1)); echo "PASS $name"
	elif [ $rc = 77 ]; then skip=$((skip + 1)); echo "SKIP $name: $(tail -n 1 "$tmp/log")"
	else fail=$((fail + 1)); echo "FAIL $name (exit $rc)"; sed 's/^/    /' "$tmp/log" | tail -n 40
	fi
	rm -rf "$tmp"
done
echo "cli: $pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
