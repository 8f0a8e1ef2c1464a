#!/usr/bin/env bash
# The GPU gate in one command (at most 9 minutes on one H100/H200): step time of SRM and TRM-MLP (bf16, eager and
# compiled), both trained for the same wall-clock budget at paper width on the generated Sudoku-Extreme-like task,
# scored on held-out puzzles with λ₁; OUT/gate.json, OUT/step.json, OUT/step.html + OUT/step.png (where plotly is installed), OUT/records.tar.gz, OUT/gate.log.
#
#   tools/gpu_gate.sh [--dry-run] [--out DIR] [--data-dir DIR] [--budget-s S] [--deadline-s S] [--[no-]compile]
#
# --out defaults to $OUT (set on the device machine), --data-dir to $DATA_DIR or data/. --dry-run: the same at a tiny
# shape on the CPU in under 3 minutes (what CI tests). Interpreter: $PYTHON, else .venv/bin/python if present, else
# python3; the repository root goes first on PYTHONPATH, so a fresh checkout needs no install. $WHEELS: a folder of
# wheels to install first (e.g. plotly, which srm_nb imports and the GPU image lacks). Exits non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

out=${OUT:-}                                  # only to place gate.log: gpu_gate.py parses the arguments
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in --out) j=$((i + 1)); out=${!j:-};; --out=*) out=${!i#--out=};; esac
done
[ -n "$out" ] || { echo "gpu_gate: --out DIR is required when \$OUT is not set" >&2; exit 2; }
mkdir -p "$out"

gate() {
  if [ -n "${WHEELS:-}" ]; then
    local site; site=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$site"
  fi
  "$PYTHON" -c 'import srm_nb.train' || { echo "gpu_gate: srm_nb does not import with $PYTHON (a missing package? see \$WHEELS)"; return 1; }
  "$PYTHON" tools/gpu_gate.py "$@"
}
gate "$@" 2>&1 | tee "$out/gate.log"
