"""DDP on the CPU: the unchanged trainer under `torch.distributed.run` with 2 gloo processes."""
import json, os, subprocess, sys, textwrap
import pytest, torch
from srm_nb.train import read_metrics, load_checkpoint

CFG = dict(model='srm', task='sudoku-easy', hidden=16, cycles=2, n_sup=3, batch_size=8, steps=12, n_train=64, n_test=16,
           n_blanks=6, warmup=2, log_every=3, eval_every=6, ckpt_every=6, eval_n=8, lyapunov_n=0)

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from srm_nb.train import Trainer
    torch.set_num_threads(1)
    cfg, out, crash_at = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    t = Trainer(**cfg, out_dir=out)
    def crash(t):
        if t.step == crash_at: raise SystemExit(3)
    t.fit(callbacks=[crash])
    torch.save(dict(model=t.model.state_dict(), ema=t.ema.state_dict(), start=t.stream.state_dict()), f"{out}/rank{t.rank}.pt")
""")

def torchrun(tmp_path, out, crash_at=0):
    script = tmp_path / 'ddp_train.py'; script.write_text(SCRIPT)
    cfg = dict(CFG, data_dir=str(tmp_path / 'data'))
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--standalone',
                           str(script), json.dumps(cfg), str(out), str(crash_at)],
                          capture_output=True, text=True, timeout=300, env=env)

def _equal(a, b): return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def test_ddp_two_ranks_agree_and_resume(tmp_path):
    ref = tmp_path / 'ref'
    r = torchrun(tmp_path, ref)
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (torch.load(ref / f'rank{i}.pt', weights_only=True) for i in (0, 1))
    assert _equal(r0['model'], r1['model']) and _equal(r0['ema'], r1['ema'])     # one model on both ranks
    summary = json.loads((ref / 'summary.json').read_text())
    assert summary['world_size'] == 2 and summary['steps'] == 12
    steps = [r['step'] for r in read_metrics(ref) if r['kind'] == 'train']
    assert steps == [3, 6, 9, 12]                                                    # rank 0 alone writes
    ck = load_checkpoint(ref / 'ckpt' / 'last.pt')
    carries = [l['carry']['tokens'] for l in ck['local']]
    assert len(carries) == 2 and not torch.equal(carries[0], carries[1])             # each rank its own puzzles
    # killed after its step-6 checkpoint, then resumed by a second launch: the same run
    out = tmp_path / 'crash'
    assert torchrun(tmp_path, out, crash_at=8).returncode != 0
    assert load_checkpoint(out / 'ckpt' / 'last.pt')['step'] == 6
    r = torchrun(tmp_path, out)
    assert r.returncode == 0, r.stderr[-3000:]
    c0 = torch.load(out / 'rank0.pt', weights_only=True)
    assert _equal(c0['model'], r0['model']) and _equal(c0['ema'], r0['ema'])
    strip = lambda recs: [{k: v for k, v in x.items() if k not in ('wall_s', 'examples_per_s')} for x in recs]
    assert strip(read_metrics(out)) == strip(read_metrics(ref))
