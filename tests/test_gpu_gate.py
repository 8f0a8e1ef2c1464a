"""The GPU gate's CPU dry run, as CI runs it: `tools/gpu_gate.sh --dry-run` (tiny shape, bf16, eager and compiled,
both models trained for a few seconds) must finish in under 3 minutes and leave a gate.json whose numbers are the
runs' own records."""
import json, math, os, subprocess, sys, tarfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / 'tools' / 'gpu_gate.sh'
MODEL_KEYS = {'model', 'step_ms', 'step_ratio_to_trm', 'exact_accuracy', 'cell_accuracy', 'lambda1', 'train_s'}

def run_gate(*args, env=None, timeout=180) -> subprocess.CompletedProcess:
    "tools/gpu_gate.sh with `args`, this interpreter, and `env` added to the environment."
    return subprocess.run(['bash', str(GATE), *args], env={**os.environ, 'PYTHON': sys.executable, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope='module')
def data_dir(tmp_path_factory): return str(tmp_path_factory.mktemp('data'))

@pytest.fixture(scope='module')
def gate(tmp_path_factory, data_dir):
    "The dry run's output folder, its gate.json, and its stdout; data built in a temporary DATA_DIR."
    out = tmp_path_factory.mktemp('gate')
    proc = run_gate('--dry-run', '--out', str(out), env={'DATA_DIR': data_dir})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / 'gate.json').read_text()), proc.stdout

@pytest.fixture(scope='module')
def records(gate, tmp_path_factory):
    "records.tar.gz unpacked: model → {file name → parsed JSON (metrics.jsonl: a list of records)}."
    dest = tmp_path_factory.mktemp('records')
    with tarfile.open(gate[0] / 'records.tar.gz') as tar: tar.extractall(dest, filter='data')
    read = lambda p: [json.loads(l) for l in p.read_text().splitlines()] if p.suffix == '.jsonl' else json.loads(p.read_text())
    return {d.name: {p.name: read(p) for p in d.iterdir()} for d in dest.iterdir()}

def finite(x) -> bool: return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

def test_gate_json_names_two_models_with_finite_numbers(gate):
    _, g, _ = gate
    assert g['precision'] == 'bf16' and g['dry_run'] is True and g['compile'] is True and g['shape'] == 'tiny'
    assert isinstance(g['device'], str) and g['device'].startswith('cpu')
    assert [m['model'] for m in g['models']] == ['srm', 'trm-mlp']
    for m in g['models']:
        assert MODEL_KEYS <= set(m)
        assert all(finite(m[k]) for k in MODEL_KEYS - {'model'}), m
        assert m['step_ms'] > 0 and 0 <= m['exact_accuracy'] <= 1 and 0 <= m['cell_accuracy'] <= 1
    srm, trm = g['models']
    assert trm['step_ratio_to_trm'] == 1.0
    assert srm['step_ratio_to_trm'] == pytest.approx(srm['step_ms'] / trm['step_ms'])

def test_gate_numbers_are_the_records_numbers(gate, records):
    out, g, _ = gate
    assert {p.name for p in out.iterdir()} == {'gate.json', 'gate.log', 'step.json', 'step.html', 'step.png', 'records.tar.gz'}
    assert set(records) == {'srm', 'trm-mlp'}
    for m in g['models']:
        rec = records[m['model']]
        assert set(rec) == {'params.json', 'metrics.jsonl', 'summary.json', 'eval.json'}
        s = rec['summary.json']
        assert (s['model'], s['precision'], s['task']) == (m['model'], 'bf16', 'sudoku-extreme')
        for k in ('exact_accuracy', 'cell_accuracy', 'train_s', 'steps', 'n_test'): assert m[k] == s[k], k
        assert m['lambda1'] == s['lambda1']['mean'] and s['lambda1']['n'] == 4
        final = rec['metrics.jsonl'][-1]
        assert (final['kind'], final['step'], final['exact_accuracy']) == ('final', s['steps'], s['exact_accuracy'])
        assert rec['params.json']['model'] == m['model'] and rec['params.json']['compile'] is True

def test_step_times_are_the_benchmarks(gate):
    out, g, _ = gate
    bench = json.loads((out / 'step.json').read_text())
    rows = {(r['model'], r['compile']): r for r in bench['results']}
    assert set(rows) == {(m, c) for m in ('srm', 'trm-mlp') for c in (False, True)}
    for m in g['models']:
        assert m['step_ms'] == rows[m['model'], True]['step_ms'] and m['step_ms_eager'] == rows[m['model'], False]['step_ms']
        assert rows[m['model'], True]['mfu'] is None                 # no known peak off a GPU
        assert rows[m['model'], True]['flops_per_step'] > 0

def test_the_budget_stopped_training(gate, records):
    "Each model trained its budget after the first 1 + warm-up steps, well before the preset's length."
    _, g, _ = gate
    for m in g['models']:
        assert m['train_s'] >= g['budget_s'] and 3 < m['steps'] < records[m['model']]['params.json']['steps']

def test_progress_lines_are_printed(gate):
    lines = [l for l in gate[2].splitlines() if l.startswith('[gate ')]
    assert any('step benchmark' in l for l in lines) and any('train srm' in l for l in lines) and 'done in' in lines[-1]

def test_gate_fails_loudly_without_an_output_folder():
    proc = run_gate('--dry-run', env={'OUT': ''}, timeout=60)
    assert proc.returncode != 0 and '--out' in proc.stderr

def test_gate_fails_loudly_when_a_step_fails(gate, data_dir, tmp_path):
    "A deadline the benchmark overruns leaves no time to train: the gate says so and exits non-zero, writing no gate.json."
    proc = run_gate('--dry-run', '--no-compile', '--deadline-s', '1', '--out', str(tmp_path), env={'DATA_DIR': data_dir}, timeout=120)
    assert proc.returncode != 0 and 'no time to train' in proc.stdout
    assert (tmp_path / 'step.json').exists() and not (tmp_path / 'gate.json').exists()
