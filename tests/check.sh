#!/bin/sh
# tests/check.sh BUILD: runs every suite `make check` runs, one after another, and closes
# with one line counting them all: the Check tests of each unit suite, each fuzz corpus
# replay, and each shell test. Exit status 0 only when nothing failed.
#   Environment: FI_TEST_SHARED, the shared corpus (tests that need it skip without it).
build=${1:-build}
shared=${FI_TEST_SHARED:-$(cd .. && pwd)/shared}
export FI_TEST_SHARED="$shared"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
pass=0 fail=0 skip=0
for t in "$build"/tests/test_*; do
	[ -x "$t" ] || continue
	echo "== $t"
	"$t" >"$log" 2>&1
	rc=$?
	cat "$log"
	# "100%: Checks: 9, Failures: 0, Errors: 0"
	set -- $(sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' "$log" | tail -n 1)
	# Check has no "skipped": a test that found its corpus absent printed SKIPPED and
	# returned. Such lines are taken off the suite's passes, so no skip counts as a pass.
	s=$(grep -c '^SKIPPED' "$log")
	if [ $# = 3 ]; then
		p=$(($1 - $2 - $3 - s))
		[ $p -ge 0 ] || p=0
		pass=$((pass + p)) fail=$((fail + $2 + $3))
		[ $rc = 0 ] || [ $(($2 + $3)) != 0 ] || fail=$((fail + 1))
	else
		fail=$((fail + 1)); echo "FAIL $t (exit $rc, no summary)"
	fi
	skip=$((skip + s))
done
for t in "$build"/fuzz/*-replay; do
	[ -x "$t" ] || continue
	n=$(basename "$t" -replay)
	if "$t" "tests/fuzz/corpus/$n"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL $t"; fi
done
PATH=$(cd "$build/bin" && pwd):$PATH BUILD=$(cd "$build" && pwd) sh tests/cli/run.sh | tee "$log"
set -- $(sed -n 's/^cli: \([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 \2 \3/p' "$log")
if [ $# = 3 ]; then pass=$((pass + $1)) fail=$((fail + $2)) skip=$((skip + $3)); else fail=$((fail + 1)); fi
echo "check: $pass passed, $fail failed, $skip skipped"
[ $fail = 0 ]
