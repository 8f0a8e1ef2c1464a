"""`nbs/explore.ipynb` executes headless under papermill on tiny trained runs, and on a fresh clone's runs (records, no
checkpoint), where it trains its demo: every widget is built, every figure is computed, and each callback is driven
once by the notebook's own checks."""
import os, shutil, subprocess, sys
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

def run_explore(out, **params) -> tuple[str, list]:
    "Execute the notebook under papermill with small settings and `params` into `out`: its printed text and outputs."
    small = dict(hidden=8, n_puzzles=3, probe_steps=6)
    cmd = [sys.executable, '-m', 'papermill', '-k', 'python3', '--cwd', str(ROOT), str(NB), str(out),
           *(a for k, v in {**small, **params}.items() for a in ('-p', k, str(v)))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-4000:]
    nb = nbformat.read(out, as_version=4)
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    views = [o for o in outputs if 'application/vnd.jupyter.widget-view+json' in o.get('data', {})]
    assert len(views) == 3                                                                # one panel per section
    return ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream'), outputs

def test_explore_executes_headless(tiny_runs):
    text, _ = run_explore(tiny_runs / 'explore.ipynb', runs_dir=tiny_runs / 'runs', run_dir=tiny_runs / 'runs' / 'srm')
    assert 'trained weights (EMA)' in text and str(tiny_runs / 'runs' / 'srm') in text   # the board loaded the checkpoint
    assert 'demo run' not in text                                                        # no demo where a run has a checkpoint

def test_explore_trains_a_demo_on_a_fresh_clone(tmp_path):
    "A runs folder with a committed run's records and no checkpoint: the notebook trains its demo once and shows it."
    runs, demo = tmp_path / 'runs', tmp_path / 'runs' / 'local' / 'demo'
    shutil.copytree(ROOT / 'runs' / 'default', runs / 'default')
    text, _ = run_explore(tmp_path / 'explore.ipynb', runs_dir=runs, run_dir='', demo_dir=demo)
    lines = [l for l in text.splitlines() if 'demo' in l]
    assert len(lines) == 2 and lines[0].startswith(f"no run under {runs} has a checkpoint") and 'trained a demo run' in lines[0]
    assert lines[1].startswith(f"run {demo}: srm on sudoku4") and 'trained weights (EMA)' in lines[1]
    assert (demo / 'ckpt' / 'last.pt').is_file() and (demo / 'summary.json').is_file() and (demo / 'data').is_dir()
