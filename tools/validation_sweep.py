"""The validation sweep of papers/srm_validation.md: 8 configurations x 3 seeds of nbs/train.ipynb at CPU scale.
Run from the repository root, both parts at once (one core each):
    OMP_NUM_THREADS=1 python tools/validation_sweep.py a & OMP_NUM_THREADS=1 python tools/validation_sweep.py b & wait"""
import sys
from srm_nb.train import sweep

BASE = dict(task='sudoku-easy', n_blanks=12, n_train=4000, n_test=100, hidden=64, batch_size=16, steps=400, warmup=25,
            lr=2e-3, ema=0.99, n_sup=4, eval_segments=8, eval_every=100, eval_n=32, lyapunov_n=4, ckpt_every=0,
            eval_csv='runs/validation/external/sudoku_easy_external.csv', eval_csv_n=100, device='cpu')
SEEDS = [0, 1, 2]
SRM = dict(cycles=4)
TRM = dict(cycles=2, model_overrides=dict(l_steps=2, expansion=2.0))
HRM = dict(cycles=2, model_overrides=dict(l_steps=2, h_layers=1, l_layers=1, expansion=2.0))
PARTS = {'a': [(dict(model=['srm'], layer=['aol'], kappa=[0.8, 0.9, 0.95], seed=SEEDS), SRM),
               (dict(model=['trm-mlp'], seed=SEEDS), TRM)],
         'b': [(dict(model=['srm'], layer=['sandwich'], kappa=[0.8, 0.9, 0.95], seed=SEEDS), SRM),
               (dict(model=['hrm'], seed=SEEDS), HRM)]}

if __name__ == '__main__':
    for grid, extra in PARTS[sys.argv[1]]: sweep(grid, {**BASE, **extra}, runs_dir='runs/validation')
