"""The validation sweeps of papers/srm_validation.md: 8 configurations x 3 seeds of nbs/train.ipynb at CPU scale,
on one benchmark ('easy': sudoku-easy with 12 blanks; 'extreme': the generated Sudoku-Extreme-like benchmark).
Run from the repository root, both parts at once (one core each):
    OMP_NUM_THREADS=1 python tools/validation_sweep.py extreme a & OMP_NUM_THREADS=1 python tools/validation_sweep.py extreme b & wait
An interrupted sweep resumes: `sweep` skips every run whose folder already has a summary.json."""
import sys
from pathlib import Path
from srm_nb.data import generate_sudoku, write_sudoku_csv
from srm_nb.train import sweep

# task, data and the external CSV (200 puzzles from the task's generator with another seed) of each benchmark
BENCHMARKS = {
    'easy': dict(runs_dir='runs/validation', task=dict(task='sudoku-easy', n_blanks=12, n_train=4000, n_test=100),
                 external=('runs/validation/external/sudoku_easy_external.csv', dict(n_blanks=12))),
    'extreme': dict(runs_dir='runs/validation-extreme', task=dict(task='sudoku-extreme', n_train=1000, n_test=100),
                    external=('runs/validation-extreme/external/sudoku_extreme_external.csv', dict(min_rating=4)))}
EXTERNAL_SEED = 20261122
BASE = dict(hidden=64, batch_size=16, steps=400, warmup=25, lr=2e-3, ema=0.99, n_sup=4, eval_segments=8, eval_every=100,
            eval_n=32, lyapunov_n=4, ckpt_every=0, eval_csv_n=100, device='cpu')
SEEDS = [0, 1, 2]
SRM = dict(cycles=4)
TRM = dict(cycles=2, model_kw=dict(l_steps=2, expansion=2.0))
HRM = dict(cycles=2, model_kw=dict(l_steps=2, h_layers=1, l_layers=1, expansion=2.0))
PARTS = {'a': [(dict(model=['srm'], layer=['aol'], kappa=[0.8, 0.9, 0.95], seed=SEEDS), SRM),
               (dict(model=['trm-mlp'], seed=SEEDS), TRM)],
         'b': [(dict(model=['srm'], layer=['sandwich'], kappa=[0.8, 0.9, 0.95], seed=SEEDS), SRM),
               (dict(model=['hrm'], seed=SEEDS), HRM)]}

def external_csv(path:str, options:dict) -> str:
    "Write the benchmark's external CSV unless it exists; returns its path."
    if not Path(path).exists():
        q, a, r = generate_sudoku(200, seed=EXTERNAL_SEED, **options)
        write_sudoku_csv(path, q, a, r, source=f'generated-seed{EXTERNAL_SEED}')
    return path

if __name__ == '__main__':
    bench, part = BENCHMARKS[sys.argv[1]], sys.argv[2]
    fixed = {**BASE, **bench['task'], 'eval_csv': external_csv(*bench['external'])}
    for grid, extra in PARTS[part]: sweep(grid, {**fixed, **extra}, runs_dir=bench['runs_dir'])
