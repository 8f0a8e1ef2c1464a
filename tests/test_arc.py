"""Tests of srm_nb.data.arc (nbs/04f_arc.ipynb) against references written here from TRM's definitions, independent of its kernels.

TRM's ARC encoding (dataset/build_arc_dataset.py): PAD 0, end-of-grid 1, colour c -> c + 2 on a 30x30 canvas, the end-of-grid
row under the grid and column right of it; dihedral ids as in dataset/common.py (numpy's rot90/fliplr/flipud/transpose); colour
permutations keep black. pass@k as TRM's evaluator: votes of inverse-mapped predictions, per task the fraction of test outputs
whose top k hold the answer, averaged over tasks."""
import json, socket, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch

from srm_nb.data import arc as A
from srm_nb.data import get_task, TASKS

NUMPY_DIHEDRAL = [lambda a: a, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 3),
                  np.fliplr, np.flipud, lambda a: a.T, lambda a: np.fliplr(np.rot90(a, 1))]

def ref_canvas(grid, r0=0, c0=0):
    "TRM's canvas of one grid at (r0, c0), cell by cell."
    h, w = grid.shape
    out = [[0] * 30 for _ in range(30)]
    for r in range(h):
        for c in range(w): out[r0 + r][c0 + c] = int(grid[r, c]) + 2
    if r0 + h < 30:
        for c in range(w): out[r0 + h][c0 + c] = 1
    if c0 + w < 30:
        for r in range(h): out[r0 + r][c0 + w] = 1
    return np.array(out).reshape(-1)

def all_grids(tasks):
    return [g for ts in tasks for t in ts for s in ('train', 'test') for p in t[s] for g in p]

@pytest.fixture(scope='module')
def data_dir(tmp_path_factory): return tmp_path_factory.mktemp('arc')

@pytest.fixture(scope='module')
def arc1(): return A.load_arc(1)

@pytest.fixture(scope='module')
def task1(data_dir):
    return get_task('arc1', str(data_dir), n_aug=4)

def test_offline_counts(data_dir, monkeypatch):
    def no_network(*a, **k): raise AssertionError("the ARC tasks must load without the network")
    monkeypatch.setattr(socket.socket, 'connect', no_network)
    assert {'arc1', 'arc2'} <= set(TASKS)
    t1, t2 = get_task('arc1', str(data_dir), n_aug=1), get_task('arc2', str(data_dir), n_aug=1)
    assert (t1.meta['n_training_tasks'], t1.meta['n_evaluation_tasks']) == (400, 400)
    assert (t2.meta['n_training_tasks'], t2.meta['n_evaluation_tasks']) == (1000, 120)
    assert t1.meta['counts'] == {'train': 1302 + 416 + 1363, 'test': 419}          # all pairs of training tasks + eval demos
    assert t2.meta['counts'] == {'train': 3232 + 1076 + 359, 'test': 167}
    assert (t1.vocab_size, t1.seq_len) == (12, 900) and len(set(t1.meta['task_ids'])) == 800

def test_encoding_matches_trm_and_round_trips(arc1):
    grids = all_grids(arc1)
    G, S = A.stack_grids(grids)
    rng = np.random.default_rng(1)
    off = np.stack([rng.integers(0, 31 - S[:, 0]), rng.integers(0, 31 - S[:, 1])], 1)
    canv = A.encode_grids(G, S, off)
    for i in rng.choice(len(grids), 300, replace=False):
        assert (canv[i] == ref_canvas(grids[i], *off[i])).all()
    for c in (canv, A.encode_grids(G, S)):
        G2, S2 = A.decode_grids(c)
        assert all(np.array_equal(a, b) for a, b in zip(A.unstack_grids(G2, S2), grids))

def test_arc2_round_trip():
    grids = all_grids(A.load_arc(2))
    G2, S2 = A.decode_grids(A.encode_grids(*A.stack_grids(grids)))
    assert all(np.array_equal(a, b) for a, b in zip(A.unstack_grids(G2, S2), grids))

def test_decode_crops_like_trm():
    "A prediction with stray tokens: the largest all-colour rectangle from the first colour row/column."
    c = np.zeros((30, 30), int); c[0, :3] = [3, 4, 5]; c[1, :2] = [6, 7]; c[1, 2] = 1; c[2, :2] = 1; c[5, 5] = 9
    g, s = A.decode_grids(c.reshape(1, -1))
    assert s.tolist() == [[2, 2]] and g[0, :2, :2].tolist() == [[1, 2], [4, 5]]

def test_dihedral_matches_numpy(arc1):
    grids = all_grids(arc1)
    G, S = A.stack_grids(grids); n = len(G)
    d = np.arange(n) % 8
    rng = np.random.default_rng(2)
    colours = np.concatenate([np.zeros((n, 1), int), 1 + np.argsort(rng.random((n, 9)), 1)], 1)
    out = A.unstack_grids(*A.transform_grids(G, S, d, colours))
    assert all(np.array_equal(o, NUMPY_DIHEDRAL[d[i]](colours[i][g])) for i, (o, g) in enumerate(zip(out, grids)))
    for k in range(8): assert np.array_equal(NUMPY_DIHEDRAL[A.DIHEDRAL_INVERSE[k]](NUMPY_DIHEDRAL[k](grids[0])), grids[0])

def test_augment_then_invert_is_identity_on_every_task(task1):
    "Every item of both splits (800 tasks x augmentations 0-4, training items translated) maps back onto its stored pair."
    for ds in (task1.train, task1.test):
        idx = np.arange(len(ds)); j = idx % ds.n_pairs
        inv = A.invert_transform(*ds.transforms(idx))
        for c, k in zip(ds.canvases(idx), ('x', 'y')):
            back, shape = A.transform_grids(*A.decode_grids(c), *inv)
            assert (back == ds.pairs[k][j]).all() and (shape == ds.pairs[f'{k}_shape'][j]).all()
    d, colours = task1.train.transforms(np.arange(len(task1.train)))
    assert set(d.tolist()) == set(range(8)) and (colours[:, 0] == 0).all()
    assert set(np.unique(task1.train.pairs['task']).tolist()) == set(range(800))

def test_items_and_puzzle_ids(task1):
    tr, te = task1.train, task1.test
    tok, tgt = tr[4000]
    assert tok.dtype == torch.int64 and tok.shape == (900,) and int(tok.max()) < 12
    assert ((tgt == A.IGNORE_LABEL) == (tok.new_tensor(tr.canvases([4000])[1]) == 0)).all()
    assert (tr.puzzle_ids(np.arange(len(tr))).max() < task1.meta['n_puzzle_ids']) and task1.meta['n_puzzle_ids'] == 1 + 800 * 5
    # an evaluation task's test item under augmentation a has the id of that task's demonstrations under a
    t = int(te.pairs['task'][0]); demo = int(np.flatnonzero(tr.pairs['task'] == t)[0])
    assert int(te.puzzle_ids([2 * te.n_pairs])) == int(tr.puzzle_ids([demo + 2 * tr.n_pairs]))
    assert (te.canvases(np.arange(len(te)))[0].reshape(-1, 30, 30)[:, 0, 0] >= 2).all()     # test items at the corner

def test_pass_at_2_constructed():
    "One task, two test outputs: output 0's answer is second by votes (3 vs 2), output 1's is never predicted."
    ans0, ans1, bad = np.array([[1]]), np.array([[2, 3]]), np.array([[4]])
    grids = [bad, bad, bad, ans0, ans0, bad]
    canv = A.encode_grids(*A.stack_grids(grids))
    meta = dict(task_id=np.array(['t'] * 6), test_index=np.array([0] * 5 + [1]), dihedral=np.zeros(6, int),
                colours=np.tile(np.arange(10), (6, 1)), answers={'t': [ans0, ans1]})
    r = A.arc_pass_at_2(canv, meta)
    assert (r['pass@1'], r['pass@2'], r['solved@2']) == (0.0, 0.5, 0.0)
    meta['answers']['u'] = [ans0]                                                     # a task without predictions scores 0
    assert A.arc_pass_at_2(canv, meta)['pass@2'] == 0.25

def test_oracle_pass_at_2(task1):
    te = task1.test; idx = np.arange(len(te))
    x, y = te.canvases(idx)
    r = A.arc_pass_at_2(y, te.meta(idx))
    assert (r['pass@1'], r['pass@2'], r['solved@2'], r['n_tasks'], r['n_test_outputs']) == (1.0, 1.0, 1.0, 400, 419)
    assert A.arc_pass_at_2(x, te.meta(idx))['pass@2'] == 0.0

def test_errors(data_dir):
    with pytest.raises(ValueError, match='version'): A.load_arc(3)
    with pytest.raises(ValueError, match='n_test_aug'): get_task('arc1', str(data_dir), n_aug=2, n_test_aug=3)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match='max_tasks'): get_task('arc1', str(data_dir), max_tasks=bad)
        with pytest.raises(ValueError, match='max_tasks'): A.arc_epoch_size(1, bad)
    with pytest.raises(ValueError, match='predictions'):
        A.arc_pass_at_2(np.zeros((2, 900)), dict(task_id=np.array(['a']), test_index=[0], dihedral=[0], colours=[np.arange(10)], answers={}))

def test_epoch_size_counts_the_training_split(data_dir):
    "TRM's epoch (one augmentation of every task, all its pairs) is the training split's pairs, counted without building."
    assert (A.arc_epoch_size(1), A.arc_epoch_size(2)) == (1302 + 416 + 1363, 3232 + 1076 + 359)
    for k in (1, 5):
        assert A.arc_epoch_size(1, k) == get_task('arc1', str(data_dir), n_aug=0, max_tasks=k).meta['counts']['train']

TINY = dict(model='trm-mlp', task='arc1', task_kw=dict(max_tasks=4, n_aug=3), n_sup=2, batch_size=8, warmup=1,
            model_kw=dict(hidden=16, cycles=1, l_steps=1, layers=1, expansion=1.0), puzzle_emb_optimizer='sign-sgd',
            puzzle_emb_lr=1e-2, eval_every=0, lyapunov_n=0, eval_segments=3, threads=1, log_every=3)

def test_smoke_run_records_pass_at_2(data_dir, tmp_path):
    "A tiny TRM-MLP on 4+4 tasks with its per-puzzle table: the summary's pass@2 is the one computed by hand with the ids."
    from srm_nb.train import Trainer
    from srm_nb.recursive import rollout
    tr = Trainer(**TINY, steps=6, ckpt_every=0, data_dir=str(data_dir), out_dir=str(tmp_path / 'run'))
    summary = tr.fit()
    assert tr.model.embed.puzzle.shape[0] == tr.task.meta['n_puzzle_ids'] == 1 + 8 * 4
    test = tr.task.test; idx = np.arange(len(test))
    tokens, ids = torch.stack([t for t, _ in test.__getitems__(idx)]), test.puzzle_ids(idx)
    preds, z = rollout(tr.ema.module.eval(), tokens, 2, ids)               # n_sup segments, below the 3 of eval_segments
    halt = torch.sigmoid(tr.ema.module.halt_logits(z)[:, 0].double()).numpy()
    r = A.arc_pass_at_2(preds[-1].numpy(), test.meta(idx), halt)
    assert summary['arc'] == {k: v for k, v in r.items() if k != 'per_task'} and (r['n_tasks'], r['n_predictions']) == (4, 16)
    final = [json.loads(line) for line in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()][-1]
    assert final['kind'] == 'final' and final['pass@2'] == r['pass@2']
    assert json.loads((tmp_path / 'run' / 'eval.json').read_text())['test']['arc']['per_task'] == r['per_task']

def test_resume_keeps_the_slots_puzzle_ids(data_dir, tmp_path):
    "The slots' ids live in the carry and the checkpoint: 2 steps, a checkpoint and 2 resumed steps give the weights of 4 straight ones."
    from srm_nb.train import Trainer
    straight = Trainer(**TINY, steps=4, ckpt_every=2, data_dir=str(data_dir), out_dir=str(tmp_path / 'a'))
    for _ in range(4): straight.train_step()
    first = Trainer(**TINY, steps=4, ckpt_every=2, data_dir=str(data_dir), out_dir=str(tmp_path / 'b'))
    for _ in range(2): first.train_step()
    first.save()
    resumed = Trainer(**TINY, steps=4, ckpt_every=2, data_dir=str(data_dir), out_dir=str(tmp_path / 'b'))
    assert resumed.step == 2 and torch.equal(resumed.carry['puzzle_ids'], first.carry['puzzle_ids'])
    for _ in range(2): resumed.train_step()
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()))
    assert torch.equal(straight.carry['puzzle_ids'], resumed.carry['puzzle_ids'])

ROOT = Path(__file__).resolve().parents[1]

def test_paper_arc1_preset_dry_run_through_papermill(tmp_path):
    "`-p model trm-att -p preset paper-arc1 -p dry_run True` resolves TRM's ARC-AGI-1 recipe, builds the model, trains nothing."
    from srm_nb.models import model_config, published_parameter_count
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'papermill', '-k', 'python3', '--cwd', str(ROOT), str(ROOT / 'nbs/train.ipynb'),
           str(tmp_path / 'out.ipynb'), '-p', 'model', 'trm-att', '-p', 'preset', 'paper-arc1', '-p', 'dry_run', 'True',
           '-p', 'out_dir', str(out), '-p', 'data_dir', str(tmp_path / 'data'), '-p', 'threads', '1']
    subprocess.run(cmd, check=True, capture_output=True, timeout=900)
    p = json.loads((out / 'params.json').read_text())
    published = dict(task='arc1', task_kw={'n_aug': 1000, 'seed': 0}, n_sup=16, eval_segments=16, epochs=100_000, steps=401_171,
                     batch_size=768, optimizer='adam-atan2', lr=1e-4, betas=[0.9, 0.95], schedule='constant', warmup=2000,
                     min_lr_ratio=1.0, weight_decay=0.1, decay='all', grad_clip=0.0, ema=0.999, explore=0.1,
                     puzzle_emb_optimizer='sign-sgd', puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1)
    for k, v in published.items(): assert (p['task_config'] if k == 'task_kw' else p[k]) == v, (k, p[k], v)
    mc = model_config('trm-att', **p['model_config'])                     # every setting of the model built
    assert (mc['hidden'], mc['cycles'], mc['l_steps'], mc['layers'], mc['n_heads'], mc['expansion'], mc['pos'], mc['n_prefix'],
            mc['vocab_size'], mc['seq_len']) == (512, 3, 4, 2, 8, 4.0, 'rope', 16, 12, 900)
    assert p['n_puzzle_ids'] == 1 + 800 * 1001 and p['n_params'] - p['n_params_published'] == p['n_puzzle_ids'] * 512
    assert p['n_params_published'] == published_parameter_count('trm-att', vocab_size=12, seq_len=900)   # TRM's "7M"
    assert not (out / 'ckpt').exists() and not (out / 'metrics.jsonl').exists()
