#!/usr/bin/env bash
# The whole test suite, as CI runs it. Called by `make test` with the venv first on PATH.
# Order: cheap consistency checks, then nbdev_test (every notebook's cells), then pytest (tests/),
# whose closing summary line is the last thing printed.
set -u
cd "$(dirname "$0")/.."
fail=0
snapshot() { find nbs srm_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -print0 | sort -z | xargs -0 md5sum; }

echo "== notebooks clean and library in sync with notebooks"
before=$(snapshot)
nbdev_clean >/dev/null && nbdev_export >/dev/null || { echo "nbdev_clean/nbdev_export failed"; fail=1; }
after=$(snapshot)
if [ "$before" != "$after" ]; then
  echo "FAIL: nbdev_clean/nbdev_export changed these files (commit them cleaned and exported):"
  diff <(echo "$before") <(echo "$after") | grep '^>' | awk '{print "  " $3}'
  fail=1
fi

echo "== nbdev_test"
if ! timeout 1500 nbdev_test --n_workers 2 --timing; then
  echo "FAIL: nbdev_test (failed notebooks are listed above)"; fail=1
fi

echo "== pytest"
timeout 2400 python -m pytest tests -q -p no:cacheprovider -o console_output_style=classic
rc=$?
[ $rc -eq 0 ] || fail=1
exit $fail
