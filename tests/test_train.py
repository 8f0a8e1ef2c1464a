"""End-to-end tests of `srm_nb.train`: exact resume, bad input, NaN guard, evaluation on a CSV, the papermill
notebook and sweeps. Tiny models on tiny easy-Sudoku tasks, CPU float32."""
import ast, json, os, subprocess, sys
from pathlib import Path
import nbformat, pytest, torch
from srm_nb.utils import SettingError
from srm_nb.train import (Trainer, TrainConfig, validate, load_checkpoint, read_metrics, sweep, load_runs, cli,
                          repo_root, from_params, MODEL_SHORTCUTS, TASK_SHORTCUTS)
from srm_nb.runs import _grid_runs

ROOT = repo_root(Path(__file__).parent)
TINY = dict(model='srm', task='sudoku-easy', hidden=16, cycles=2, n_sup=3, batch_size=8, steps=24, n_train=64, n_test=32,
            n_blanks=6, warmup=4, lr=3e-3, log_every=4, eval_every=8, ckpt_every=8, eval_n=16, lyapunov_n=4)
TIMING = ('wall_s', 'examples_per_s')

@pytest.fixture(scope='module', autouse=True)
def _data_dir(tmp_path_factory):
    "Generated puzzles go to a temporary folder, not the repository's data/ cache."
    TINY['data_dir'] = str(tmp_path_factory.mktemp('data'))

@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)

def _records(out_dir):
    "metrics.jsonl without the wall-clock fields, which no two runs share."
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(out_dir)]

def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

@pytest.fixture(scope='module')
def reference(tmp_path_factory, _data_dir):
    "One uninterrupted tiny run."
    torch.set_num_threads(1)
    t = Trainer(**TINY, out_dir=str(tmp_path_factory.mktemp('ref') / 'run'))
    init = {k: v.clone() for k, v in t.model.state_dict().items()}
    return t, t.fit(), init

class Crash(Exception): pass

def test_run_writes_its_records(reference):
    t, summary, init = reference
    assert summary['steps'] == 24 and summary['n_test'] == 32 and summary['model'] == 'srm'
    assert 0 <= summary['exact_accuracy'] <= 1 and len(summary['exact_by_segment']) == 2 * TINY['n_sup']
    assert 0 < summary['certified_lipschitz'] < 1 and summary['lambda1']['n'] == 4
    assert summary['lambda1']['max'] < 0          # a certified contraction cannot have λ₁ ≥ 0
    assert any(not torch.equal(v, t.model.state_dict()[k]) for k, v in init.items())   # it trained
    recs = read_metrics(t.out_dir)
    assert [r['step'] for r in recs if r['kind'] == 'train'] == [4, 8, 12, 16, 20, 24]
    assert [r['step'] for r in recs if r['kind'] == 'eval'] == [8, 16] and recs[-1]['kind'] == 'final'
    assert json.loads((t.out_dir / 'summary.json').read_text())['exact_accuracy'] == summary['exact_accuracy']
    params = json.loads((t.out_dir / 'params.json').read_text())
    assert params['model_config']['hidden'] == 16 and summary['kappa'] == 0.9 and params['model_kw']['hidden'] == 16
    ck = torch.load(t.out_dir / 'ckpt' / 'last.pt', weights_only=True)    # plain tensors and containers only
    assert ck['step'] == 24 and set(ck['local'][0]['carry']) == {'tokens', 'targets', 'z', 'steps', 'halted'}

def test_killed_run_resumes_bit_for_bit(reference, tmp_path):
    ref, ref_summary, _ = reference
    def crash(t):
        if t.step == 13: raise Crash
    out = str(tmp_path / 'run')
    with pytest.raises(Crash): Trainer(**TINY, out_dir=out).fit(callbacks=[crash])
    assert load_checkpoint(tmp_path / 'run' / 'ckpt' / 'last.pt')['step'] == 8
    assert max(r['step'] for r in read_metrics(out)) == 12       # the dead run logged past its checkpoint
    t = Trainer(**TINY, out_dir=out)
    assert t.step == 8
    summary = t.fit()
    assert _records(out) == _records(ref.out_dir)              # every logged number, eval and λ₁ included
    assert _same_weights(t.model, ref.model) and _same_weights(t.ema, ref.ema)
    assert all(torch.equal(t.opts[0].state_dict()['state'][i]['exp_avg'], ref.opts[0].state_dict()['state'][i]['exp_avg'])
               for i in t.opts[0].state_dict()['state'])
    assert {k: v for k, v in summary.items() if k not in TIMING + ('train_s', 'loadavg')} == \
           {k: v for k, v in ref_summary.items() if k not in TIMING + ('train_s', 'loadavg')}

def test_resume_restores_every_random_state(tmp_path):
    "Noise in the step (σ > 0: the global torch RNG) and early halting with exploration (the halting RNG) both matter here."
    cfg = dict(TINY, lyapunov_n=0, explore=0.5, model_kw={'sigma': 0.05})
    def fresh(out):
        t = Trainer(**cfg, out_dir=str(tmp_path / out))
        with torch.no_grad(): t.model.q_head.bias[0] = 5.0          # q_halt > 0: puzzles halt early unless exploring
        return t
    ref = fresh('ref'); ref.fit()
    assert ref.stream.epoch > 0 or ref.stream.pos > 24 * 8 // TINY['n_sup']     # early halts drew extra puzzles
    def crash(t):
        if t.step == 13: raise Crash
    with pytest.raises(Crash): fresh('run').fit(callbacks=[crash])
    t = Trainer(**cfg, out_dir=str(tmp_path / 'run')); t.fit()
    assert _records(t.out_dir) == _records(ref.out_dir) and _same_weights(t.model, ref.model)

def test_evaluation_does_not_change_training(tmp_path):
    "With σ > 0 every evaluation rollout draws noise: it must come from a forked RNG, not the training stream's."
    cfg = dict(TINY, lyapunov_n=0, model_kw={'sigma': 0.05})
    a = Trainer(**cfg, out_dir=str(tmp_path / 'a')); a.fit()
    b = Trainer(**{**cfg, 'eval_every': 0, 'ckpt_every': 0}, out_dir=str(tmp_path / 'b')); b.fit()
    assert _same_weights(a.model, b.model) and _same_weights(a.ema, b.ema)

def test_resume_refuses_another_setting(reference, tmp_path):
    out = tmp_path / 'run'
    Trainer(**{**TINY, 'steps': 4}, out_dir=str(out)).fit()
    with pytest.raises(SettingError, match=r"resume: .* other settings:\n  lr: 0.003 → 0.001\n"):
        Trainer(**{**TINY, 'lr': 1e-3}, out_dir=str(out))
    with pytest.raises(SettingError) as e: Trainer(**{**TINY, 'kappa': 0.8, 'n_blanks': 5}, out_dir=str(out))
    assert 'model_kw.kappa: None → 0.8' in str(e.value), e.value
    assert 'task_kw.n_blanks: 6 → 5' in str(e.value) and 'lr' not in str(e.value), e.value
    assert Trainer(**{**TINY, 'steps': 8}, out_dir=str(out)).step == 4       # more steps: allowed

def test_bad_settings_fail_together_before_anything_runs(tmp_path):
    out = tmp_path / 'never'
    with pytest.raises(ValueError) as e:
        Trainer(model='nope', task='nope', steps=0, batch_size=-1, eval_csv='missing.csv', device='tpu', n_blanks=[9, 3],
                out_dir=str(out))
    msg = str(e.value)
    for name in ('model:', 'task:', 'steps:', 'batch_size:', 'eval_csv:', 'device:'): assert name in msg, msg
    assert not out.exists()
    with pytest.raises(ValueError, match=r"model_kw: kappa must lie in the open interval \(0.0, 1.0\), got 1.0"):
        validate(from_params(dict(kappa=1.0)))                                  # the model's own check, before anything is built
    with pytest.raises(ValueError, match=r"model_kw: layer must be one of"): validate(from_params(dict(layer='magic')))
    with pytest.raises(ValueError, match=r"model_kw: alpha"): validate(from_params(dict(alpha=0.0)))
    with pytest.raises(ValueError, match=r"model_kw: .*nope"): validate(TrainConfig(model_kw=dict(nope=1)))
    with pytest.raises(ValueError, match=r"unknown settings \['colour'\]"): Trainer(colour='red')
    assert validate(from_params(dict(model='trm-mlp', kappa=1.5))).model_kw == dict(hidden=64, cycles=4)   # κ means nothing to TRM
    assert validate(from_params(dict(kappa=0.8, seed=3))).out_dir == 'runs/srm-sudoku-easy-k0.8-s3'
    assert validate(TrainConfig(model='hrm')).out_dir == 'runs/hrm-sudoku-easy-s0'

def test_nan_stops_with_step_and_tensor(tmp_path):
    t = Trainer(**TINY, out_dir=str(tmp_path / 'a'))
    with torch.no_grad(): t.model.embed.tokens.weight[3] = float('nan')
    with pytest.raises(FloatingPointError, match=r"^step 1: loss is not finite"): t.fit()
    t = Trainer(**TINY, out_dir=str(tmp_path / 'b'))
    t.model.head.weight.register_hook(lambda g: torch.where(torch.rand_like(g) < 0.5, g, float('inf')))
    with pytest.raises(FloatingPointError, match=r"^step 1: gradient of parameter 'head.weight' is not finite"): t.fit()

def test_cli_scores_an_external_csv(tmp_path):
    from srm_nb.data import get_task, write_sudoku_csv
    test = get_task('sudoku-easy', TINY['data_dir'], n_train=8, n_test=10, n_blanks=6, seed=5).test
    csv = write_sudoku_csv(tmp_path / 'ext.csv', test.inputs, test.targets, [0] * len(test.inputs))
    summary = cli(['--data_dir', TINY['data_dir'], '--steps', '4', '--hidden', '16', '--cycles', '2', '--n_sup', '2', '--batch_size', '4', '--n_train', '16',
                   '--n_test', '8', '--n_blanks', '6', '--lyapunov_n', '0', '--eval_csv', str(csv), '--eval_csv_n', '7',
                   '--out_dir', str(tmp_path / 'run'), '--model_kw', '{"depth": 1}'])
    assert summary['csv']['n'] == 7 and 0 <= summary['csv']['exact_accuracy'] <= 1
    assert json.loads((tmp_path / 'run' / 'params.json').read_text())['model_config']['depth'] == 1

# -- the papermill notebook

NB = ROOT / 'nbs' / 'train.ipynb'

def _parameters_cell(nb):
    tagged = [c for c in nb.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1, "nbs/train.ipynb needs exactly one code cell tagged 'parameters' (papermill)"
    return tagged[0]

def test_notebook_parameters_are_the_config_defaults():
    cell = _parameters_cell(nbformat.read(NB, as_version=4))
    assert cell.cell_type == 'code'
    values = {}
    exec(compile(ast.parse(cell.source), 'parameters', 'exec'), {}, values)
    defaults = {**vars(TrainConfig()), **{k: None for k in MODEL_SHORTCUTS + TASK_SHORTCUTS}}   # shortcuts: unset
    assert values == defaults

def test_papermill_smoke_run(tmp_path):
    out = tmp_path / 'run'
    params = dict(steps=12, hidden=16, cycles=2, n_sup=2, batch_size=8, n_train=32, n_test=16, n_blanks=6, eval_every=6,
                  ckpt_every=6, log_every=3, eval_n=8, lyapunov_n=4, kappa=0.8, out_dir=str(out), data_dir=TINY['data_dir'])
    cmd = [sys.executable, '-m', 'papermill', '-k', 'python3', str(NB), str(tmp_path / 'train.ipynb')]
    for k, v in params.items(): cmd += ['-p', k, str(v)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,    # kernel cwd: nbs/
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['kappa'] == 0.8 and summary['steps'] == 12 and summary['hidden'] == 16   # parameters reached the run
    for f in ('params.json', 'metrics.jsonl', 'eval.json', 'training.html', 'segments.html', 'residuals.html',
              'lambda1.html', 'lambda_history.html', 'ckpt/last.pt'):
        assert (out / f).is_file(), f
    executed = nbformat.read(tmp_path / 'train.ipynb', as_version=4)
    tags = [c.metadata.get('tags', []) for c in executed.cells]
    assert tags.index(['injected-parameters']) == tags.index(['parameters']) + 1

# -- sweeps

def test_sweep_validates_every_run_first(tmp_path):
    with pytest.raises(ValueError, match='kappa'): sweep({'kappa': [0.5, 1.0]}, runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown parameters \['colour'\]"): sweep({'colour': [1]}, runs_dir=str(tmp_path))
    names = [n for n, _ in _grid_runs({'kappa': [0.5, 0.7], 'lr': [1e-3]}, {'seed': 2}, 'runs')]
    assert names == ['srm-sudoku-easy-k0.5-s2-lr0.001', 'srm-sudoku-easy-k0.7-s2-lr0.001']
    names = [n for n, _ in _grid_runs({'model': ['srm', 'trm-mlp'], 'kappa': [0.5, 0.7], 'alpha': [1.0]}, {}, 'runs')]
    assert names == ['srm-sudoku-easy-k0.5-s0-alpha1', 'srm-sudoku-easy-k0.7-s0-alpha1', 'trm-mlp-sudoku-easy-s0']
    assert not list(tmp_path.iterdir())

def test_sweep_runs_skips_finished_and_tabulates(tmp_path, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')      # the papermill kernels: tiny tensors, one thread each
    base = dict(steps=4, hidden=16, cycles=2, n_sup=2, batch_size=4, n_train=16, n_test=8, n_blanks=6, eval_every=0,
                lyapunov_n=0, data_dir=TINY['data_dir'])
    df = sweep({'kappa': [0.5, 0.8]}, base, runs_dir=str(tmp_path))
    assert sorted(df['run']) == ['srm-sudoku-easy-k0.5-s0', 'srm-sudoku-easy-k0.8-s0']
    assert sorted(df['kappa']) == [0.5, 0.8] and df['exact_accuracy'].between(0, 1).all()
    stamp = (tmp_path / 'srm-sudoku-easy-k0.5-s0' / 'summary.json').stat().st_mtime_ns
    again = sweep({'kappa': [0.5]}, base, runs_dir=str(tmp_path))
    assert len(again) == 1 and (tmp_path / 'srm-sudoku-easy-k0.5-s0' / 'summary.json').stat().st_mtime_ns == stamp
    assert len(load_runs(tmp_path)) == 2 and load_runs(tmp_path / 'nothing-here').empty

def test_real_csv_layout_records_rows_and_scores_the_full_test_set(tmp_path):
    "sudoku-csv from one CSV: the seeded training rows are saved with the run, and the final number uses every test row."
    from srm_nb.data import generate_sudoku, write_sudoku_csv
    q, a, r = generate_sudoku(60, seed=4, n_blanks=(5, 8))
    csv = write_sudoku_csv(tmp_path / 'all.csv', q, a, r)
    t = Trainer(**{**TINY, 'steps': 2, 'eval_every': 0, 'lyapunov_n': 0, 'task': 'sudoku-csv', 'n_train': 40, 'n_test': 8,
                   'n_blanks': None, 'task_kw': dict(path=str(csv), n_aug=0)}, out_dir=str(tmp_path / 'run'))
    summary = t.fit()
    rows = json.loads((tmp_path / 'run' / 'rows.json').read_text())
    assert rows['seed'] == TINY.get('seed', 0) and len(rows['rows']['train']) == 40 and len(rows['rows']['test']) == 8
    assert sorted(rows['rows']['train'] + rows['rows']['final_test']) == list(range(60))    # one file: train and test split it
    assert summary['n_test'] == 20 and len(t.task.test) == 8                             # fast subset vs the final number
