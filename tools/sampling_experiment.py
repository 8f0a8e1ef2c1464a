"""Issue #16, item 4: does test-time sampling — noise σ in the SRM step, Sudoku symmetries mapped back — with a rule
that picks one answer out of k samples beat one deterministic pass, and what does training with σ > 0 cost in λ₁?

Run from the repository root right after the runs it reads have trained (it loads their checkpoints, `ckpt/last.pt`,
which git ignores; see tools/phase2_runs.sh, sections `maze` and `ladder`):

    OMP_NUM_THREADS=1 .venv/bin/python tools/sampling_experiment.py            # every model of MODELS
    OMP_NUM_THREADS=1 .venv/bin/python tools/sampling_experiment.py ladder-sigma0 --n 100 --k 8

For each trained SRM in MODELS it takes a fixed subset of its test set (Sudoku ladder: the first `n` test puzzles of
each trained tier, T0 and T1; maze: the first 2·`n` test mazes), draws up to `k` trajectories of `n_sup` segments per
puzzle for every test setting of SETTINGS (test-time σ; for Sudoku also `augment='sudoku'`), scores the rules of
`srm_nb.sampling.RULES` (pass@1, vote@k, residual@k, halt@k, oracle@k) at k = 1, 2, 4, … up to `k` on the same samples
(sample j does not depend on how many are drawn), and probes λ₁ of the deterministic map (σ = 0) on the first 32
puzzles of the subset. It writes `runs/sampling/<name>.json`, one per model. Everything runs on the CPU, one thread.
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path
import numpy as np
import torch
from srm_nb.data import get_task
from srm_nb.evaluate import load_run_model, puzzle_scores, headline, PROBE_DEFAULTS
from srm_nb.lyapunov import probe_model
from srm_nb.runs import resolve_path, describe, jsonable
from srm_nb.sampling import sample_predictions, select, noise_level, RULES
from srm_nb.utils import save_json

MODELS = {   # name → (run folder, kind of task)
    'ladder-sigma0': ('runs/sampling/ladder-srm-sigma0', 'sudoku'),
    'ladder-sigma0.1': ('runs/sampling/ladder-srm-sigma0.1', 'sudoku'),
    'maze-sigma0': ('runs/maze/srm-mlp', 'maze'),
    'maze-sigma0.1': ('runs/maze/srm-mlp-sigma0.1', 'maze'),
}
# (test-time σ, augmentation); σ = 0 without augmentation is deterministic: one sample is all there is
SETTINGS = {'sudoku': [(0.0, None), (0.1, None), (0.3, None), (0.0, 'sudoku'), (0.1, 'sudoku')],
            'maze': [(0.0, None), (0.1, None), (0.3, None)]}
TRAINED_TIERS = (0, 1)


def subset(task, kind:str, n:int):
    "(tokens, targets, tier or None, test-set indices) of the fixed subset of `task`'s test set."
    if kind == 'sudoku':
        tier = np.asarray(task.meta['grades']['test']['tier'])
        idx = np.concatenate([np.flatnonzero(tier == t)[:n] for t in TRAINED_TIERS])
    else: idx, tier = np.arange(min(2 * n, len(task.test))), None
    items = task.test.__getitems__(idx.tolist()) if hasattr(task.test, '__getitems__') else [task.test[i] for i in idx]
    tokens, targets = (torch.stack(t) for t in zip(*items))
    return tokens, targets, (None if tier is None else tier[idx]), idx


def score_setting(model, tokens, targets, n_segments:int, sigma:float, augment, ks:list[int], seed:int=0,
                  batch_size:int=100, tiers=None) -> list[dict]:
    "Scores of every rule at every k in `ks` (one draw of max(ks) samples), overall and per tier where `tiers` is given."
    per = {(k, r): [] for k in ks for r in RULES}
    for first in range(0, len(tokens), batch_size):
        x, y = tokens[first:first + batch_size], targets[first:first + batch_size]
        s = sample_predictions(model, x, max(ks), n_segments, sigma, augment, seed, first)
        for k in ks:
            for r, pred in select({key: v[:k] for key, v in s.items()}, y).items():
                per[(k, r)].append(puzzle_scores(pred, x, y))
    out = []
    for k in ks:
        cat = {r: {key: torch.cat([p[key] for p in per[(k, r)]]) for key in per[(k, r)][0]} for r in RULES}
        row = dict(sigma=sigma, augment=augment, k=k, scores={r: headline(cat[r]) for r in RULES})
        if tiers is not None:
            row['by_tier'] = {f'T{t}': {r: headline(cat[r], torch.from_numpy(tiers == t)) for r in RULES}
                              for t in sorted(set(tiers.tolist()))}
        out.append(row)
    return out


def run_model(name:str, n:int, k:int, out_dir:Path, lyapunov_n:int=32) -> dict:
    run_dir, kind = MODELS[name]
    run_dir = resolve_path(run_dir)
    params = json.loads((run_dir / 'params.json').read_text())
    summary = json.loads((run_dir / 'summary.json').read_text())
    model = load_run_model(run_dir)                               # the EMA weights, as the trainer evaluates them
    task = get_task(params['task'], str(resolve_path(params['data_dir'])), **params['task_config'])
    tokens, targets, tiers, idx = subset(task, kind, n)
    n_segments = params['n_sup']
    with noise_level(model, 0.0), torch.enable_grad():            # λ₁ of the deterministic map
        probe = probe_model(model, tokens[:lyapunov_n], **PROBE_DEFAULTS)
    ks = [2 ** i for i in range(int(np.log2(k)) + 1)]
    results, t0 = [], time.perf_counter()
    for sigma, augment in SETTINGS[kind]:
        t = time.perf_counter()
        deterministic = sigma == 0 and augment is None
        rows = score_setting(model, tokens, targets, n_segments, sigma, augment, [1] if deterministic else ks, tiers=tiers)
        for r in rows: r['seconds'] = time.perf_counter() - t
        results += rows
        best = rows[-1]['scores']
        print(f"{name}: σ={sigma} augment={augment or '-'} k={rows[-1]['k']}: "
              + '  '.join(f"{r} {best[r]['exact_accuracy']:.3f}" for r in RULES) + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    record = dict(name=name, run=str(run_dir.relative_to(resolve_path('.'))), task=params['task'],
                  task_config=params['task_config'], model_config=params['model_config'],
                  sigma_train=float(params['model_config'].get('sigma', 0.0)), n_segments=n_segments,
                  subset=dict(n=len(idx), indices=idx.tolist(),
                              rule=(f"the first {n} test puzzles of each of tiers {list(TRAINED_TIERS)}" if kind == 'sudoku'
                                    else f"the first {2 * n} test mazes")),
                  lambda1_deterministic=describe(probe.lambda1.reshape(len(probe.lambda1), -1)[:, 0].cpu()), lyapunov_n=int(min(lyapunov_n, len(idx))),
                  lambda1_trainer=summary.get('lambda1'), certified_lipschitz=float(model.certified_lipschitz()),
                  kappa=float(model.kappa) if hasattr(model, 'kappa') else None,
                  trainer_exact_accuracy=summary['exact_accuracy'], seed=0, max_k=k, results=results,
                  seconds=time.perf_counter() - t0, torch_threads=torch.get_num_threads())
    save_json(jsonable(record), out_dir / f'{name}.json')
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('names', nargs='*', default=list(MODELS), help=f"models to score (default all: {', '.join(MODELS)})")
    p.add_argument('--n', type=int, default=100, help="Sudoku: puzzles per trained tier; maze: half the mazes (default 100: 200 puzzles either way)")
    p.add_argument('--k', type=int, default=8, help="most samples per puzzle, a power of 2 (default 8)")
    p.add_argument('--out', default='runs/sampling', help="folder of the JSON records")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = resolve_path(a.out); out.mkdir(parents=True, exist_ok=True)
    for name in a.names: run_model(name, a.n, a.k, out)


if __name__ == '__main__': main()
