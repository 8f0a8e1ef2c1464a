"""`nbs/explore.ipynb` executes headless under papermill on tiny trained runs: every widget is built, every figure is
computed, and each callback is driven once by the notebook's own checks."""
import os, subprocess, sys
from pathlib import Path
import nbformat, pytest, torch
from srm_nb.train import Trainer, repo_root

ROOT = repo_root(Path(__file__).parent)
NB = ROOT / 'nbs' / 'explore.ipynb'
TINY = dict(task='sudoku-easy', hidden=16, cycles=2, n_sup=2, batch_size=8, steps=6, n_train=32, n_test=16, n_blanks=6,
            warmup=2, log_every=2, eval_every=3, eval_n=8, lyapunov_n=2)

def test_front_matter_and_parameters():
    nb = nbformat.read(NB, as_version=4)
    assert nb.cells[0].cell_type == 'raw' and 'skip_exec: true' in nb.cells[0].source     # nbdev_test skips it
    tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1                                                               # nbdev_clean kept the tag
    for name in ('runs_dir', 'run_dir', 'hidden', 'seed', 'n_puzzles'): assert f'\n{name} = ' in '\n' + tagged[0].source

@pytest.fixture(scope='module')
def tiny_runs(tmp_path_factory):
    "Two finished tiny runs (a certified SRM and an uncertified TRM) with checkpoints, in a runs folder of their own."
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('explore')
    data = str(root / 'data')
    Trainer(model='srm', **TINY, data_dir=data, out_dir=str(root / 'runs' / 'srm')).fit()
    Trainer(model='trm-mlp', **{**TINY, 'steps': 3, 'eval_every': 0}, model_kw=dict(l_steps=1), data_dir=data,
            out_dir=str(root / 'runs' / 'trm')).fit()
    return root

def test_explore_executes_headless(tiny_runs):
    out = tiny_runs / 'explore.ipynb'
    cmd = [sys.executable, '-m', 'papermill', '-k', 'python3', '--cwd', str(ROOT), str(NB), str(out),
           '-p', 'runs_dir', str(tiny_runs / 'runs'), '-p', 'run_dir', str(tiny_runs / 'runs' / 'srm'),
           '-p', 'hidden', '8', '-p', 'n_puzzles', '3', '-p', 'probe_steps', '6']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-4000:]
    nb = nbformat.read(out, as_version=4)
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
    assert 'trained weights (EMA)' in text and str(tiny_runs / 'runs' / 'srm') in text   # the board loaded the checkpoint
    views = [o for o in outputs if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})]
    assert len(views) == 3                                                                # one panel per section
