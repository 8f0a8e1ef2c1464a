"""Tests of `srm_nb.sampling`: the inverse Sudoku symmetry, test-time noise, determinism, the selection rules on
constructed samples, and `evaluate_sampling` against `evaluate` on a tiny trained 4×4 Sudoku SRM (CPU, float32)."""
import numpy as np
import pytest
import torch
from srm_nb.utils import SettingError
from srm_nb.data import get_task, augment_sudoku, random_keys, n_symmetry_keys
from srm_nb.evaluate import evaluate, _head
from srm_nb.models import build_model
from srm_nb.recursive import rollout
from srm_nb.train import Trainer
from srm_nb.sampling import (RULES, noise_level, sample_symmetries, augment_tokens, invert_symmetry, sudoku_box,
                             sample_predictions, vote, select, evaluate_sampling)

@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)

@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('data'))

@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
    "A 4×4 Sudoku SRM trained for a few seconds (its EMA weights) and 120 test puzzles."
    torch.set_num_threads(1)
    t = Trainer(model='srm', task='sudoku4', hidden=32, cycles=4, n_sup=4, batch_size=32, steps=150, warmup=10, lr=3e-3,
                n_train=1000, n_test=120, log_every=150, eval_every=0, ckpt_every=0, lyapunov_n=0, threads=1,
                data_dir=data_dir, out_dir=str(tmp_path_factory.mktemp('run') / 'run'), resume=False)
    t.fit()
    return t.ema.module, _head(t.task.test, 120)

@pytest.mark.parametrize('task, kw', [('sudoku-easy', dict(n_train=8, n_test=24, n_blanks=10)),
                                      ('sudoku4', dict(n_train=8, n_test=24))])
def test_inverse_symmetry_is_identity(data_dir, task, kw):
    t = get_task(task, data_dir, **kw)
    q, a = _head(t.test, 24)
    box = sudoku_box(t.seq_len)
    for j in (1, 2, 5):
        maps = sample_symmetries(3, j, np.arange(len(q)), box)
        qa, aa = augment_tokens(q, *maps), augment_tokens(a, *maps)
        grids = augment_sudoku((q - 1).numpy(), (a - 1).numpy(), random_keys(3, j, np.arange(len(q)), n_symmetry_keys(box)), box)
        assert np.array_equal((qa - 1).numpy(), grids[0]) and np.array_equal((aa - 1).numpy(), grids[1])
        assert not torch.equal(qa, q)
        inv = invert_symmetry(*maps)
        assert torch.equal(augment_tokens(qa, *inv), q) and torch.equal(augment_tokens(aa, *inv), a)

def test_noise_is_set_and_restored():
    srm = build_model('srm', hidden=16, cycles=2, seq_len=16, vocab_size=6).eval()
    tok = torch.randint(1, 6, (3, 16))
    quiet = rollout(srm, tok, 2)[1]
    with noise_level(srm, 0.4):
        assert srm.cell.sigma == 0.4 and not torch.equal(rollout(srm, tok, 2)[1], quiet)
    assert srm.cell.sigma == 0.0 and torch.equal(rollout(srm, tok, 2)[1], quiet)
    trm = build_model('trm-mlp', hidden=16, cycles=1, seq_len=16, vocab_size=6)
    with pytest.raises(SettingError, match='sigma'): sample_predictions(trm, tok, 2, 2, sigma=0.1)
    assert sample_predictions(trm, tok, 2, 2, sigma=0.0)['preds'].shape == (2, 3, 16)

def test_samples_are_deterministic():
    srm = build_model('srm', hidden=16, cycles=2, seq_len=16, vocab_size=6).eval()
    tok = torch.randint(1, 6, (3, 16))
    state = torch.get_rng_state()
    a = sample_predictions(srm, tok, 3, 2, sigma=0.3, augment='sudoku', seed=4)
    b = sample_predictions(srm, tok, 4, 2, sigma=0.3, augment='sudoku', seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k][:3]) for k in a)
    assert not torch.equal(a['residual'], sample_predictions(srm, tok, 3, 2, sigma=0.3, augment='sudoku', seed=5)['residual'])

def test_vote_by_hand():
    preds = torch.tensor([[[1, 2, 3, 4], [5, 5, 5, 5]],
                          [[1, 2, 9, 9], [6, 5, 7, 5]],
                          [[1, 8, 3, 9], [7, 6, 8, 5]]])
    assert vote(preds).tolist() == [[1, 2, 3, 9], [5, 5, 5, 5]]          # majorities; three-way ties → first sample
    assert vote(torch.tensor([[[4]], [[2]], [[2]], [[4]]])).tolist() == [[4]]

def test_selection_picks_constructed_samples():
    preds = torch.arange(3 * 2 * 4).view(3, 2, 4)                          # every sample different
    samples = dict(preds=preds, residual=torch.tensor([[0.5, 0.1], [0.2, 0.3], [0.9, 0.05]]),
                   halt=torch.tensor([[0.1, 0.8], [0.7, 0.9], [0.3, 0.2]]))
    got = select(samples, targets=preds[2])
    assert torch.equal(got['residual@k'], torch.stack([preds[1, 0], preds[2, 1]]))
    assert torch.equal(got['halt@k'], torch.stack([preds[1, 0], preds[1, 1]]))
    assert torch.equal(got['oracle@k'], preds[2]) and torch.equal(got['pass@1'], preds[0])

def test_one_quiet_sample_is_evaluate(trained):
    model, test = trained
    ev = evaluate(model, test, n_segments=4)
    assert ev['exact_accuracy'] > 0
    for augment in (None, 'sudoku'):
        scores = evaluate_sampling(model, test, 1, 4, sigma=0.0, augment=augment, batch_size=50)['scores']
        assert set(scores) == set(RULES)
        for s in scores.values():
            assert (s['exact_accuracy'], s['blank_accuracy'], s['n']) == (ev['exact_accuracy'], ev['blank_accuracy'], ev['n'])

def test_oracle_bounds_every_picked_sample(trained):
    model, test = trained
    for sigma, augment in ((0.3, None), (0.0, 'sudoku')):
        s = evaluate_sampling(model, test, 4, 4, sigma=sigma, augment=augment)['scores']
        for rule in ('pass@1', 'residual@k', 'halt@k'):
            for key in ('exact_accuracy', 'cell_accuracy'):
                assert s['oracle@k'][key] >= s[rule][key], (sigma, augment, rule, key)

def test_vote_can_beat_the_oracle():
    "The per-cell vote is no pick of one sample: oracle@k does not bound it."
    samples = torch.tensor([[[0, 2, 3]], [[1, 0, 3]], [[1, 2, 0]]])
    right = torch.tensor([[1, 2, 3]])
    got = select(dict(preds=samples, residual=torch.zeros(3, 1), halt=torch.zeros(3, 1)), right)
    assert torch.equal(got['vote@k'], right) and not torch.equal(got['oracle@k'], right)
