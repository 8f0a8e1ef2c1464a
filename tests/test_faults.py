"""Nothing is lost when a run meets a fault: a damaged checkpoint, a full disk, a bad input file, a busy machine.
Each test breaks one thing on purpose and checks that the run reports it by name and then ends exactly where an
undisturbed run ends. (A killed or doubled data build: `tests/test_data_faults.py`; a killed run:
`tests/test_train.py::test_killed_run_resumes_bit_for_bit`.)"""
import errno, json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from srm_nb.train import Trainer, repo_root, read_metrics, load_checkpoint
from srm_nb.data import generate_sudoku

ROOT = repo_root(Path(__file__).parent)
CFG = dict(model='srm', task='sudoku-easy', hidden=16, cycles=2, n_sup=3, batch_size=8, steps=16, n_train=64, n_test=32,
           n_blanks=6, warmup=4, lr=3e-3, log_every=4, eval_every=8, ckpt_every=4, eval_n=16, lyapunov_n=4, threads=1)
TIMING = ('wall_s', 'examples_per_s')

class Crash(Exception): pass

@pytest.fixture(scope='module')
def data_dir(tmp_path_factory): return str(tmp_path_factory.mktemp('data'))

@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_dir):
    "One undisturbed run of CFG."
    t = Trainer(**CFG, data_dir=data_dir, out_dir=str(tmp_path_factory.mktemp('ref') / 'run'))
    t.fit()
    return t

def _records(out_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(out_dir)]

def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

def _crash_at(step):
    def cb(t):
        if t.step == step: raise Crash
    return cb

def test_damaged_checkpoint_is_named_and_the_previous_one_used(reference, data_dir, tmp_path, capsys):
    out = tmp_path / 'run'
    with pytest.raises(Crash): Trainer(**CFG, data_dir=data_dir, out_dir=str(out)).fit(callbacks=[_crash_at(9)])
    last = out / 'ckpt' / 'last.pt'
    assert load_checkpoint(last)['step'] == 8 and load_checkpoint(out / 'ckpt' / 'previous.pt')['step'] == 4
    last.write_bytes(last.read_bytes()[:last.stat().st_size // 2])                  # cut short
    capsys.readouterr()
    t = Trainer(**CFG, data_dir=data_dir, out_dir=str(out))
    said = capsys.readouterr().out
    assert t.step == 4 and str(last) in said and 'unreadable' in said and 'previous.pt (step 4)' in said, said
    t.fit()
    assert _records(out) == _records(reference.out_dir)
    assert _same_weights(t.model, reference.model) and _same_weights(t.ema, reference.ema)

def test_full_disk_keeps_checkpoint_and_records(reference, data_dir, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    real_save = torch.save
    def disk_full_at_step_8(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get('step') == 8:
            Path(f).write_bytes(b'the first bytes of a checkpoint')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(torch, 'save', disk_full_at_step_8)
    with pytest.raises(OSError, match='No space left'): Trainer(**CFG, data_dir=data_dir, out_dir=str(out)).fit()
    monkeypatch.setattr(torch, 'save', real_save)
    assert sorted(os.listdir(out / 'ckpt')) == ['last.pt']                          # no half-written file left behind
    assert load_checkpoint(out / 'ckpt' / 'last.pt')['step'] == 4                    # the failed write changed nothing
    params = json.loads((out / 'params.json').read_text())
    assert params['model_config'] == json.loads((reference.out_dir / 'params.json').read_text())['model_config']
    assert [r['step'] for r in read_metrics(out) if r['kind'] == 'train'] == [4, 8]    # whole lines up to the failure
    t = Trainer(**CFG, data_dir=data_dir, out_dir=str(out))
    assert t.step == 4
    t.fit()
    assert _records(out) == _records(reference.out_dir) and _same_weights(t.model, reference.model)

def test_bad_eval_csv_fails_before_any_work(data_dir, tmp_path):
    (q,), (a,), _ = generate_sudoku(1, seed=3, n_blanks=30)
    row = lambda g: ''.join(str(int(v)) for v in g)
    bad = tmp_path / 'bad.csv'
    bad.write_text(f"question,answer\n{row(q)},{row(a)}\n{row(q)[:80]},{row(a)}\n")      # line 3 is one digit short
    out = tmp_path / 'run'
    with pytest.raises(ValueError, match=r'bad\.csv, line 3: question has 80 characters, expected 81'):
        Trainer(**CFG, data_dir=str(tmp_path / 'fresh-data'), out_dir=str(out), eval_csv=str(bad))
    assert not out.exists() and not (tmp_path / 'fresh-data').exists()            # no data built, no records written

def test_same_numbers_on_a_busy_machine(data_dir, tmp_path):
    "The same setting twice with 2 threads, the second beside a process that keeps both cores busy: every logged number agrees."
    cfg = dict(CFG, threads=2, steps=8, eval_every=4, ckpt_every=0, n_test=16, eval_n=8, lyapunov_n=2)
    a = Trainer(**cfg, data_dir=data_dir, out_dir=str(tmp_path / 'quiet')); a.fit()
    burn = ("import torch\ntorch.set_num_threads(2)\nx = torch.randn(400, 400)\nwhile True: x = torch.tanh(x @ x) * 0.1")
    busy = subprocess.Popen([sys.executable, '-c', burn])
    try:
        b = Trainer(**cfg, data_dir=data_dir, out_dir=str(tmp_path / 'busy')); b.fit()
    finally: busy.kill(); busy.wait()
    torch.set_num_threads(1)
    assert _records(a.out_dir) == _records(b.out_dir) and _same_weights(a.model, b.model)
    summary = json.loads((b.out_dir / 'summary.json').read_text())
    assert summary['torch_threads'] == 2 and summary['deterministic'] is True

def test_papermill_shows_a_bad_setting_in_one_message(tmp_path):
    "The error is the last thing papermill prints, as its message, without a traceback through the library."
    out = tmp_path / 'run'
    r = subprocess.run([sys.executable, '-m', 'papermill', '-k', 'python3', '--cwd', str(ROOT), str(ROOT / 'nbs' / 'train.ipynb'),
                        str(tmp_path / 'out.ipynb'), '-p', 'out_dir', str(out), '-p', 'kappa', '1.5'],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode != 0
    tail = (r.stdout + r.stderr).rstrip().splitlines()
    shown = tail[tail.index(next(l for l in tail if l.startswith('Exception encountered at'))) + 1:]
    assert shown[0].startswith('SettingError: invalid training config:'), shown
    assert any('kappa must lie in the open interval (0.0, 1.0), got 1.5' in l for l in shown), shown
    assert len(shown) <= 4 and not any('Traceback' in l or 'File ' in l for l in shown), shown
    assert not out.exists()
