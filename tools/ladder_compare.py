"""The fair comparison of papers/ladder.md (issue #15): SRM (AOL, Sandwich), TRM-MLP and HRM on the Sudoku ladder.

Every model trains on the same puzzles (ladder tiers T0 + T1, 6000 puzzles x 100 augmentations) at width 64, otherwise in
its published shape (TRM-MLP: 3 x (6 + 1) applications of a 2-layer net, expansion 4; HRM: 2 cycles of 2 L-steps, 4 + 4
layers, expansion 4; SRM: the cpu preset, 4 joint cycles of a depth-2 certified block, kappa 0.9, alpha 0.5).

* Arm `time` (equal wall-clock): each model gets BUDGET_S seconds of training on one core, turned into a fixed step count
  from the seconds per step measured here (SEC_PER_STEP), so that every run is reproducible from its settings.
* Arm `examples` (equal examples): the baselines cost 7-10 times SRM's time per step, so each SRM also trains for each
  baseline's step count of arm `time` (SRM at TRM-MLP's and at HRM's number of training examples).

Tuning: the learning rates LRS with seed 0 in arm `time`; the one with the best exact accuracy (then blank-cell
accuracy) on a validation set drawn from the training tiers (another generator seed, written to
runs/ladder/compare/validation.csv; the test puzzles' tiers go to test_tiers.json, the test split to test.csv) is then
run with SEEDS in both arms. Every run of the chosen learning rate is then scored per test tier against test-time
segments up to MAX_SEGMENTS (`segments_by_tier.json` in the run folder: the checkpoints are not kept). The baselines
skip intermediate evaluations: at their step counts one costs about as much as a third of their training.

Run from the repository root: the validation set, then both halves at once (one core each):
    python tools/ladder_compare.py validation
    OMP_NUM_THREADS=1 python tools/ladder_compare.py a & OMP_NUM_THREADS=1 python tools/ladder_compare.py b & wait
and, once a half is done, `python tools/ladder_compare.py seeds MODEL` runs the other half's baseline seeds from the last
(each run is claimed by one process). A finished run is skipped, so an interrupted sweep resumes."""
import json, os, sys
from pathlib import Path
import numpy as np
from torch.utils.data import Subset
from srm_nb.data import get_task, generate_ladder, write_sudoku_csv
from srm_nb.evaluate import evaluate, load_run_model
from srm_nb.runs import resolve_path
from srm_nb.train import Trainer, from_params
from srm_nb.bench import save_json

RUNS = 'runs/ladder/compare'
TASK_KW = dict(train_tiers=[0, 1], n_train=6000, n_test_per_tier=100, n_aug=100, seed=0)
VALIDATION = dict(path=f'{RUNS}/validation.csv', per_tier=150, seed=20261202)
MODELS = {'srm-aol': dict(model='srm', model_kw=dict(hidden=64, cycles=4, alpha=0.5, kappa=0.9, layer='aol')),
          'srm-sandwich': dict(model='srm', model_kw=dict(hidden=64, cycles=4, alpha=0.5, kappa=0.9, layer='sandwich')),
          'trm-mlp': dict(model='trm-mlp', model_kw=dict(hidden=64, cycles=3, l_steps=6, layers=2, expansion=4.0)),
          'hrm': dict(model='hrm', model_kw=dict(hidden=64, cycles=2, l_steps=2, h_layers=4, l_layers=4, expansion=4.0))}
# seconds per optimiser step at batch 64 on one core of this machine (short timing runs, two other jobs beside them)
SEC_PER_STEP = {'srm-aol': 0.21, 'srm-sandwich': 0.25, 'trm-mlp': 2.0, 'hrm': 1.4}
BUDGET_S = 75
LRS = [1e-3, 3e-3, 1e-2]
SEEDS = [0, 1, 2]
MAX_SEGMENTS = 24
BASE = dict(task='sudoku-ladder', task_kw=TASK_KW, batch_size=64, n_sup=8, eval_n=50, lyapunov_n=20, ckpt_every=0,
            eval_csv=VALIDATION['path'], eval_csv_n=0, threads=1, device='cpu', deterministic=True)
PARTS = {'a': ['srm-aol', 'trm-mlp'], 'b': ['srm-sandwich', 'hrm']}

def time_steps(name:str) -> int:
    "Optimiser steps of model `name` in arm `time`: BUDGET_S of its measured step time."
    return int(BUDGET_S / SEC_PER_STEP[name])

def settings(name:str, n:int, lr:float, seed:int) -> dict:
    "The run of model `name` for `n` steps at learning rate `lr` and `seed`; one folder per setting."
    srm = MODELS[name]['model'] == 'srm'
    return {**BASE, **MODELS[name], 'lr': lr, 'seed': seed, 'steps': n, 'warmup': min(100, n // 10),
            'eval_every': max(n // 3, 1) if srm else 0, 'out_dir': f'{RUNS}/{name}-steps{n}-lr{lr:g}-s{seed}'}

def validation_csv() -> str:
    "The validation puzzles (tiers T0, T1 from another generator seed), written once; none may be a training puzzle."
    path = resolve_path(VALIDATION['path'])
    if not path.exists():
        v = generate_ladder({0: VALIDATION['per_tier'], 1: VALIDATION['per_tier']}, seed=VALIDATION['seed'])
        key = lambda q: np.asarray(q, np.int8).reshape(-1).tobytes()
        seen = {key(q) for q in get_task('sudoku-ladder', **TASK_KW).train.inputs}
        overlap = sum(key(q) in seen for q in v['questions'])
        if overlap: raise RuntimeError(f"validation: {overlap} of its puzzles are training puzzles; choose another seed")
        write_sudoku_csv(path, v['questions'], v['answers'], v['ratings'], source=[f'T{t}' for t in v['tier']])
    return str(path)

def test_records():
    """The tier of every test puzzle in test order (the report reads it beside eval.json's per-puzzle records), and the test
    split as a CSV whose `source` is the tier (`python -m srm_nb.evaluate RUN runs/ladder/compare/test.csv` scores any
    Sudoku run per tier); written once."""
    tiers, csv = resolve_path(f'{RUNS}/test_tiers.json'), resolve_path(f'{RUNS}/test.csv')
    if tiers.exists() and csv.exists(): return
    task = get_task('sudoku-ladder', **TASK_KW)
    tier = task.meta['grades']['test']['tier']
    save_json([int(t) for t in tier], tiers)
    write_sudoku_csv(csv, task.test.inputs, task.test.targets, task.meta['grades']['test']['ratings'], source=[f'T{t}' for t in tier])

def segments_by_tier(run_dir:Path) -> dict:
    "Exact and blank-cell accuracy of each test tier after 1 … MAX_SEGMENTS segments (EMA weights, float32)."
    model, task = load_run_model(run_dir), get_task('sudoku-ladder', **TASK_KW)
    tier, out = np.asarray(task.meta['grades']['test']['tier']), {}
    for t in np.unique(tier):
        r = evaluate(model, Subset(task.test, np.flatnonzero(tier == t).tolist()), n_segments=MAX_SEGMENTS)
        out[f'T{t}'] = dict(n=int((tier == t).sum()), exact_by_segment=r['exact_by_segment'], blank_by_segment=r['blank_by_segment'])
    return out

def claim(out:Path) -> bool:
    "Claim run folder `out` for this process (`.claimed` holds its pid); False while a live process holds it."
    out.mkdir(parents=True, exist_ok=True)
    mark = out / '.claimed'
    if mark.exists():
        try: os.kill(int(mark.read_text()), 0); return False       # its holder still runs
        except (ProcessLookupError, ValueError): mark.unlink()
    try: fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError: return False
    os.write(fd, str(os.getpid()).encode()); os.close(fd)
    return True

def run(name:str, n:int, lr:float, seed:int, segments:bool=True) -> dict|None:
    """Train one setting (unless done) and, with `segments`, score its tiers against segments; its summary, or None
    when another process of the sweep holds the run."""
    s = settings(name, n, lr, seed)
    out = resolve_path(s['out_dir'])
    done = lambda: (out / 'summary.json').exists() and (not segments or (out / 'segments_by_tier.json').exists())
    if not done():
        if not claim(out): return None
        try:
            if not (out / 'summary.json').exists(): Trainer(from_params(s)).fit()
            if segments and not (out / 'segments_by_tier.json').exists(): save_json(segments_by_tier(out), out / 'segments_by_tier.json')
        finally: (out / '.claimed').unlink(missing_ok=True)
    return json.loads((out / 'summary.json').read_text())

def validation_score(summary:dict) -> tuple:
    "What tuning maximises: exact, then blank-cell accuracy on the validation CSV (a diverged run scores lowest)."
    v = summary.get('csv') or {}
    return (v.get('exact_accuracy') or 0.0, v.get('blank_accuracy') or 0.0)

def best_lr(name:str) -> float:
    scores = {lr: validation_score(run(name, time_steps(name), lr, SEEDS[0], segments=False)) for lr in LRS}
    best = max(LRS, key=lambda lr: scores[lr])
    save_json(dict(model=name, scores={f'{lr:g}': sc for lr, sc in scores.items()}, best_lr=best),
              resolve_path(f'{RUNS}/tuning-{name}.json'))
    return best

if __name__ == '__main__':
    if sys.argv[1] == 'validation': validation_csv(); test_records(); sys.exit()
    if sys.argv[1] == 'seeds':                    # python tools/ladder_compare.py seeds MODEL: another process for a model's seeds
        name = sys.argv[2]
        for seed in SEEDS[::-1]: run(name, time_steps(name), json.loads(resolve_path(f'{RUNS}/tuning-{name}.json').read_text())['best_lr'], seed)
        sys.exit()
    srm, baseline = PARTS[sys.argv[1]]
    chosen = {name: best_lr(name) for name in (srm, baseline)}           # every learning rate, seed 0
    for seed in SEEDS: run(srm, time_steps(srm), chosen[srm], seed)
    for n in sorted({time_steps(b) for b in MODELS if MODELS[b]['model'] != 'srm'}):
        for seed in SEEDS: run(srm, n, chosen[srm], seed)                # arm `examples`
    for seed in SEEDS: run(baseline, time_steps(baseline), chosen[baseline], seed)
