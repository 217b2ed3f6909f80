#!/usr/bin/env bash
# Runs ctest in each build folder given and prints one combined summary line,
# "N passed, N failed, N skipped"; exits non-zero if anything failed.
set -u
passed=0 failed=0 skipped=0
for dir in "$@"; do
  echo "== ctest in $dir"
  log=$(mktemp)
  (cd "$dir" && ctest --output-on-failure -j "${CTEST_JOBS:-2}") 2>&1 | tee "$log"
  total=$(sed -nE 's/.*tests failed out of ([0-9]+).*/\1/p' "$log" | tail -1)
  nfail=$(sed -nE 's/.* ([0-9]+) tests failed out of.*/\1/p' "$log" | tail -1)
  nskip=$(grep -cE '\*\*\*Skipped|Not Run.*Disabled' "$log" || true)
  if [ -z "$total" ]; then echo "ctest in $dir did not finish"; failed=$((failed + 1)); rm -f "$log"; continue; fi
  failed=$((failed + nfail))
  skipped=$((skipped + nskip))
  passed=$((passed + total - nfail - nskip))
  rm -f "$log"
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
