"""The GPU gate: one command that, on one H100/H200, times a training step of SRM and TRM-MLP (nbs/bench_step.ipynb at
the paper shape, bf16, eager and compiled), trains both for the same wall-clock budget at paper width on the generated
Sudoku-Extreme-like task, scores each on its held-out puzzles with λ₁, and writes OUT/gate.json (+ OUT/step.json,
OUT/step.html and OUT/step.png (where plotly is installed), OUT/records.tar.gz with each run's params.json, metrics.jsonl, summary.json and eval.json).
`--dry-run` does the same at the notebook's tiny shape on the CPU, as CI tests it.
Run through tools/gpu_gate.sh (which picks the interpreter and the import path); every step that fails exits non-zero."""
import argparse, json, math, os, tarfile, tempfile, time
from pathlib import Path
from srm_nb.bench import env_info, save_json
from srm_nb.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / 'nbs' / 'bench_step.ipynb'
MODELS = ('srm', 'trm-mlp')          # trm-mlp is the reference of step_ratio_to_trm
PRECISION = 'bf16'
RUN_FILES = ('params.json', 'metrics.jsonl', 'summary.json', 'eval.json')
# what differs between the gate on the GPU and its CPU dry run. budget_s: seconds of training per model, counted after
# its first 1 + warmup_steps steps (compilation: the benchmark reports it); deadline_s: seconds for the whole gate;
# reserve_s, per model: building its trainer, those first steps (the benchmark's compiled graphs are reused) and the
# final evaluation with λ₁
MODES = {'gpu': dict(shape='paper', device='auto', n_train=None, n_test=1000, lyapunov_n=64, warmup_steps=3,
                     timed_steps=10, budget_s=180.0, deadline_s=540.0, reserve_s=30.0),
         'dry-run': dict(shape='tiny', device='cpu', n_train=64, n_test=32, lyapunov_n=4, warmup_steps=2,
                         timed_steps=5, budget_s=5.0, deadline_s=170.0, reserve_s=10.0)}

def log(msg:str):
    "A progress line on stdout."
    print(f"[gate {time.strftime('%H:%M:%S')}] {msg}", flush=True)

def run_notebook(path, **params) -> dict:
    "Execute the code cells of notebook `path` in one namespace, as papermill would with `params` (set right after the cell tagged 'parameters'); return the namespace."
    ns = {'__name__': '__notebook__'}
    for i, cell in enumerate(json.loads(Path(path).read_text())['cells']):
        if cell['cell_type'] != 'code': continue
        exec(compile(''.join(cell['source']), f'{path} [cell {i}]', 'exec'), ns)
        if 'parameters' in cell['metadata'].get('tags', []): ns.update(params)
    return ns

def stop_after(seconds:float, skip:int=0):
    """A `Trainer.fit` callback that, once `seconds` of training time (`train_s`) have passed after the first `skip`
    steps, makes the next step the last: `fit` trains to `cfg.steps`, so lowering it lets that step be logged, checked
    and checkpointed as the final one before `fit` evaluates and writes the summary."""
    start = [0.0]
    def stop(t:Trainer):
        if t.step == skip: start[0] = t.train_s
        if t.step >= skip and t.train_s - start[0] >= seconds and t.cfg.steps > t.step + 1: t.cfg.steps = t.step + 1
    return stop

def train(settings:dict, budget_s:float, skip:int, out_dir:Path, compiled:bool, lyapunov_n:int) -> dict:
    "Train one model with `settings` into `out_dir` for `budget_s` seconds after its first `skip` steps; its `summary.json` (test scores, λ₁)."
    t = Trainer(**settings, precision=PRECISION, compile=compiled, out_dir=str(out_dir), lyapunov_n=lyapunov_n,
                eval_every=0, ckpt_every=0, resume=False)
    t.fit(callbacks=[stop_after(budget_s, skip)])
    return json.loads((t.out_dir / 'summary.json').read_text())

def model_record(summary:dict, step:dict, eager:dict) -> dict:
    "gate.json's entry of one model: its step time (the trained mode) and ratio to TRM-MLP, test scores, λ₁, training time."
    return dict(model=summary['model'], step_ms=step['step_ms'], step_ratio_to_trm=step['step_ratio_to_trm'],
                step_ms_eager=eager['step_ms'], exact_accuracy=summary['exact_accuracy'],
                cell_accuracy=summary['cell_accuracy'], lambda1=summary['lambda1']['mean'],
                lambda1_max=summary['lambda1']['max'], certified_lipschitz=summary['certified_lipschitz'],
                train_s=summary['train_s'], steps=summary['steps'], n_test=summary['n_test'])

def pack(run_dirs:dict, tar_path:Path) -> Path:
    "Write the record files of each run folder (name → folder) into one tarball, as `<name>/<file>` (no checkpoints)."
    with tarfile.open(tar_path, 'w:gz') as tar:
        for name, d in run_dirs.items():
            for f in RUN_FILES: tar.add(d / f, arcname=f'{name}/{f}')
    return tar_path

def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='tools/gpu_gate.sh', description=__doc__.split('\n\n')[0])
    p.add_argument('--dry-run', action='store_true', help='tiny shape on the CPU, in under 3 minutes')
    p.add_argument('--out', default=os.environ.get('OUT', ''), help='output folder (default: $OUT)')
    p.add_argument('--data-dir', default=os.environ.get('DATA_DIR', 'data'), help='task build cache (default: $DATA_DIR or data)')
    p.add_argument('--budget-s', type=float, help='training seconds per model after its first steps (default: 180, dry run 5)')
    p.add_argument('--deadline-s', type=float, help='seconds for the whole gate; the budget shrinks to fit (default: 540, dry run 170)')
    p.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True,
                   help='benchmark eager and compiled, train compiled (default); --no-compile: eager only')
    a = p.parse_args(argv)
    if not a.out: p.error('--out DIR is required when $OUT is not set')
    return a

def main(argv=None) -> dict:
    a, t0 = parse(argv), time.perf_counter()
    mode = dict(MODES['dry-run' if a.dry_run else 'gpu'])
    mode.update({k: v for k, v in dict(budget_s=a.budget_s, deadline_s=a.deadline_s).items() if v is not None})
    out = Path(a.out).resolve(); out.mkdir(parents=True, exist_ok=True)
    env = env_info()
    if not a.dry_run and not env['cuda']: raise SystemExit("gpu_gate: no CUDA device here; use --dry-run on a CPU")
    log(f"{env['device']}, torch {env['torch']}; shape {mode['shape']}, {PRECISION}, compile {a.compile}; out {out}")

    log(f"step benchmark ({BENCH.relative_to(ROOT)})")
    bench = run_notebook(BENCH, shape=mode['shape'], models=list(MODELS), precisions=[PRECISION],
                         compile_modes=[False, True] if a.compile else [False], warmup_steps=mode['warmup_steps'],
                         timed_steps=mode['timed_steps'], device=mode['device'], data_dir=a.data_dir,
                         n_train=mode['n_train'], n_test=mode['n_test'], out=str(out / 'step.json'))
    steps = {(r['model'], r['compile']): r for r in bench['results']}

    left = mode['deadline_s'] - (time.perf_counter() - t0)
    budget = min(mode['budget_s'], left / len(MODELS) - mode['reserve_s'])
    if budget <= 0: raise SystemExit(f"gpu_gate: the benchmark left {left:.0f} s of the {mode['deadline_s']:.0f} s deadline: no time to train")
    if budget < mode['budget_s']: log(f"training budget cut to {budget:.0f} s per model to end within {mode['deadline_s']:.0f} s")

    summaries = {}
    with tempfile.TemporaryDirectory(prefix='gpu-gate-') as tmp:        # run folders: records packed, checkpoints dropped
        work = Path(tmp)
        for m in MODELS:
            log(f"train {m} for {budget:.0f} s after its first {1 + mode['warmup_steps']} steps")
            summaries[m] = s = train(bench['settings'](m), budget, 1 + mode['warmup_steps'], work / m, a.compile, mode['lyapunov_n'])
            log(f"{m}: {s['steps']} steps in {s['train_s']:.1f} s; test exact {s['exact_accuracy']:.4f}, cell "
                f"{s['cell_accuracy']:.4f}, λ₁ mean {s['lambda1']['mean']:.4f} on {s['lambda1']['n']} puzzles")
        pack({m: work / m for m in MODELS}, out / 'records.tar.gz')

    gate = dict(device=env['device'], precision=PRECISION, shape=mode['shape'], dry_run=a.dry_run, compile=a.compile,
                task=summaries[MODELS[0]]['task'], budget_s=budget,
                models=[model_record(summaries[m], steps[m, a.compile], steps[m, False]) for m in MODELS],
                wall_s=time.perf_counter() - t0, env=env_info(), records='records.tar.gz', bench='step.json')
    save_json(gate, out / 'gate.json')
    bad = [f"{r['model']}.{k}" for r in gate['models'] for k in ('step_ms', 'exact_accuracy', 'cell_accuracy', 'lambda1', 'train_s')
           if not (isinstance(r[k], (int, float)) and math.isfinite(r[k]))]
    if bad: raise SystemExit(f"gpu_gate: not finite in {out / 'gate.json'}: {bad}")
    for r in gate['models']: log(f"{r['model']:8} step {r['step_ms']:.2f} ms (x{r['step_ratio_to_trm']:.3f} TRM-MLP), exact "
                                 f"{r['exact_accuracy']:.4f}, cell {r['cell_accuracy']:.4f}, λ₁ {r['lambda1']:.4f}, {r['train_s']:.0f} s")
    log(f"done in {gate['wall_s']:.0f} s: {out / 'gate.json'}")
    return gate

if __name__ == '__main__': main()
