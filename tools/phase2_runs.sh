#!/usr/bin/env bash
# Every command behind papers/phase2.md (issue #16, items 3-5), in the order they were run. From the repository root:
#
#   bash tools/phase2_runs.sh                 # everything: maze, ladder, kappa, sampling, report
#   bash tools/phase2_runs.sh maze sampling   # only some sections (sampling needs the checkpoints of maze and ladder)
#   ONLY=runs/maze/hrm bash tools/phase2_runs.sh maze   # one run
#
# CPU only, one job at a time, one torch thread each (the machine has 2 cores shared with other work). Each training
# run writes runs/<group>/<name>/ (params.json, metrics.jsonl, summary.json, eval.json, figures; the checkpoint in
# ckpt/ is git-ignored) and its log to runs/local/phase2-logs/<name>.log (git-ignored). A finished run is not redone:
# the trainer resumes from ckpt/last.pt, which is already at the last step.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
PY=.venv/bin/python
LOGS=runs/local/phase2-logs
mkdir -p "$LOGS"

train() {   # train <out_dir> <flags...>; with ONLY=<out_dir> set, every other run is skipped
  local out=$1; shift
  if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$out" ]; then return 0; fi
  echo "== $out"
  $PY -m srm_nb.train --out_dir "$out" --threads 1 --seed 0 "$@" 2>&1 | tr '\r' '\n' | grep -Ev '[0-9]+/[0-9]+ \[' \
    > "$LOGS/$(basename "$out").log"
  tail -n 1 "$LOGS/$(basename "$out").log"
}

# ---- item 3: generated 7×7 mazes; four models at hidden 64, 600 steps × batch 32, the cpu preset otherwise ----
# The pilot first: 9×9 mazes (min_path 8), where SRM-MLP learned nothing at this budget (exact 0; it was run under
# runs/maze/srm-mlp and then moved, with `mv`, to runs/maze/pilot/srm-mlp-size9); the sweep then moved to 7×7.
PILOT_TASK='{"size": 9, "min_path": 8, "n_train": 2000, "n_test": 300}'
MAZE_TASK='{"size": 7, "min_path": 4, "n_train": 2000, "n_test": 300}'
MAZE=(--task maze --task_kw "$MAZE_TASK" --steps 600 --batch_size 32 --eval_every 200 --eval_n 200 --lyapunov_n 32 --ckpt_every 0)
maze() {
  train runs/maze/pilot/srm-mlp-size9 --task maze --task_kw "$PILOT_TASK" --steps 600 --batch_size 32 --eval_every 200 \
    --eval_n 200 --lyapunov_n 32 --ckpt_every 0 --model srm
  train runs/maze/srm-mlp "${MAZE[@]}" --model srm
  train runs/maze/srm-att "${MAZE[@]}" --model srm --model_kw '{"mixer": "attention"}'
  train runs/maze/trm-att "${MAZE[@]}" --model trm-att --model_kw '{"cycles": 2, "l_steps": 2, "expansion": 2.0}'
  train runs/maze/hrm     "${MAZE[@]}" --model hrm --model_kw '{"cycles": 2, "l_steps": 2, "h_layers": 1, "l_layers": 1, "expansion": 2.0}'
  # item 4 (b): the same SRM with noise σ = 0.1 in every step (the σ = 0 arm is runs/maze/srm-mlp)
  train runs/maze/srm-mlp-sigma0.1 "${MAZE[@]}" --model srm --model_kw '{"sigma": 0.1}'
}

# ---- item 4 (a) and item 5's fixed-κ arm: the Sudoku ladder (tiers 0-1 trained, 0-4 tested), SRM-MLP ----
LADDER_TASK='{"train_tiers": [0, 1], "n_train": 6000, "n_test_per_tier": 200, "n_aug": 100}'
LADDER=(--task sudoku-ladder --task_kw "$LADDER_TASK" --steps 600 --batch_size 64 --eval_every 100 --eval_n 200 --lyapunov_n 32 --ckpt_every 0)
ladder() {
  train runs/sampling/ladder-srm-sigma0   "${LADDER[@]}" --model srm
  train runs/sampling/ladder-srm-sigma0.1 "${LADDER[@]}" --model srm --model_kw '{"sigma": 0.1}'
}

# ---- item 5: learned κ (initial κ = 0.9, anchors 0.7 and 0.95, λ_anchor = 1) against fixed κ, same ladder setting ----
kappa() {
  train runs/kappa/learn-anchor0.7  "${LADDER[@]}" --model srm --model_kw '{"learn_kappa": true, "kappa_anchor": 0.7}'
  train runs/kappa/learn-anchor0.95 "${LADDER[@]}" --model srm --model_kw '{"learn_kappa": true, "kappa_anchor": 0.95}'
}

sampling() { $PY tools/sampling_experiment.py; }

report() {
  .venv/bin/papermill -k python3 nbs/report_phase2.ipynb runs/local/phase2-report.ipynb
}

sections=("$@"); [ ${#sections[@]} -eq 0 ] && sections=(maze ladder kappa sampling report)
for s in "${sections[@]}"; do "$s"; done
