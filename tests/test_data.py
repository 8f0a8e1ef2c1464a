"""Tests of srm_nb.data that are too slow or too cross-cutting for its notebooks (nbs/04_data.ipynb, nbs/04a-04d).

Validity and uniqueness are checked with a second, deliberately simple solver written here in pure Python
(plain backtracking on the most constrained cell), independent of the numba solver under test."""
import csv, hashlib, itertools, json, math
from pathlib import Path
from collections import deque
import numpy as np
import pytest
import torch

from srm_nb import data as D
from srm_nb.data import tasks as T      # where build_sudoku_benchmark and the sudoku-csv build look names up
from srm_nb.utils import subseed

# ---------------------------------------------------------------- a second, simple solver (pure Python)
def units_of(box):
    n = box * box
    rows = [[r * n + c for c in range(n)] for r in range(n)]
    cols = [[r * n + c for r in range(n)] for c in range(n)]
    boxes = [[(box * (b // box) + i // box) * n + box * (b % box) + i % box for i in range(n)] for b in range(n)]
    return rows + cols + boxes

def simple_solutions(grid, box=3, limit=2):
    "All solutions (up to `limit`) of a box²×box² Sudoku by backtracking on the cell with fewest candidates."
    n = box * box
    peers = [set() for _ in range(n * n)]
    for u in units_of(box):
        for c in u: peers[c].update(u)
    g, found = list(map(int, grid)), []
    def rec():
        best, best_c = None, None
        for c in range(n * n):
            if g[c] == 0:
                cands = set(range(1, n + 1)) - {g[p] for p in peers[c]}
                if best is None or len(cands) < len(best): best, best_c = cands, c
                if not cands: return
        if best is None: found.append(list(g)); return
        for v in sorted(best):
            g[best_c] = v; rec(); g[best_c] = 0
            if len(found) >= limit: return
    if any(v and any(g[p] == v for p in peers[c] - {c}) for c, v in enumerate(g)): return []
    rec()
    return found

def is_valid_grid(a, box=3):
    n = box * box
    return all(sorted(a[c] for c in u) == list(range(1, n + 1)) for u in units_of(box))

def singles_only(grid):
    "Solve with naked and hidden singles only; the grid, or None when they stall."
    g = list(map(int, grid)); units = units_of(3)
    peers = [set() for _ in range(81)]
    for u in units:
        for c in u: peers[c].update(u)
    while 0 in g:
        progress = False
        cand = {c: set(range(1, 10)) - {g[p] for p in peers[c]} for c in range(81) if g[c] == 0}
        for c, s in cand.items():
            if len(s) == 1: g[c] = s.pop(); progress = True; break
        if not progress:
            for u in units:
                for v in range(1, 10):
                    places = [c for c in u if g[c] == 0 and v in cand[c]]
                    if len(places) == 1 and v not in [g[c] for c in u]: g[places[0]] = v; progress = True; break
                if progress: break
        if not progress: return None
    return g

# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def minimal():
    return D.generate_sudoku(40, seed=123)

@pytest.fixture(scope='module')
def hard():
    return D.generate_sudoku(30, seed=321, min_rating=4)

@pytest.fixture(scope='module')
def easy():
    return D.generate_sudoku(60, seed=7, n_blanks=(8, 16))

# ---------------------------------------------------------------- solver and rater
def test_generated_puzzles_valid_and_unique_by_second_solver(minimal, hard, easy):
    for q, a, r in (minimal, hard, easy):
        for qi, ai in zip(q, a):
            sols = simple_solutions(qi)
            assert len(sols) == 1 and sols[0] == ai.tolist()
            assert is_valid_grid(ai.tolist()) and all(x in (0, y) for x, y in zip(qi, ai))

def test_minimal_puzzles_are_minimal(minimal):
    q = minimal[0]
    for qi in q[:5]:
        for c in np.flatnonzero(qi):
            p = qi.copy(); p[c] = 0
            assert len(simple_solutions(p)) == 2

def test_blank_counts(easy):
    blanks = (easy[0] == 0).sum(1)
    assert blanks.min() >= 8 and blanks.max() <= 16 and len(set(blanks.tolist())) > 3
    q, _, _ = D.generate_sudoku(10, seed=1, n_blanks=30)
    assert ((q == 0).sum(1) == 30).all()

def test_solver_counts_agree_with_second_solver_on_random_clue_sets():
    rng = np.random.default_rng(0)
    grids = D.generate_sudoku(30, seed=5, n_blanks=0)[1]
    qs = []
    for g in grids:                             # random clue subsets of valid grids (often several solutions) ...
        q = g.copy(); q[rng.permutation(81)[:rng.integers(45, 60)]] = 0; qs.append(q)
    for g in grids[:10]:                        # ... and unsolvable ones: a clue changed to a clashing digit
        q = g.copy(); q[rng.permutation(81)[:50]] = 0
        c = int(np.flatnonzero(q)[0]); q[c] = q[c] % 9 + 1; qs.append(q)
    qs = np.array(qs)
    sols, counts = D.solve_sudoku(qs, limit=2)
    for q, s, n in zip(qs, sols, counts):
        ref = simple_solutions(q)
        assert n == len(ref)
        if n == 1: assert s.tolist() == ref[0]
        if n: assert is_valid_grid(s.tolist()) and all(x in (0, y) for x, y in zip(q, s))

def test_rating_zero_for_singles_and_higher_for_harder(easy, minimal, hard):
    q, _, r = easy
    solvable_by_singles = np.array([singles_only(x) is not None for x in q])
    assert solvable_by_singles.all() and (r == 0).all()
    assert (D.rate_sudoku(minimal[1]) == 0).all()                      # solved grids
    assert (hard[2] >= 4).all() and (D.rate_sudoku(hard[0]) == hard[2]).all()
    assert hard[2].mean() > minimal[2].mean() > r.mean()
    stalled = np.array([singles_only(x) is None for x in minimal[0]])
    assert stalled.any() and minimal[2][stalled].mean() > minimal[2][~stalled].mean()
    easter = np.array([0 if ch == '.' else int(ch) for ch in '1.......2.9.4...5...6...7...5.9.3.......7.......85..4.7.....6...3...9.8...2.....1'])
    assert D.rate_sudoku(easter)[0] >= 10

def test_rate_rejects_unsolvable_and_bad_input():
    q = np.zeros(81, np.int8); q[0] = q[1] = 5
    with pytest.raises(ValueError, match='no solution'): D.rate_sudoku(q)
    with pytest.raises(ValueError, match='questions'): D.rate_sudoku(np.zeros((2, 80)))
    with pytest.raises(ValueError, match='questions'): D.solve_sudoku(np.full(81, 10))
    with pytest.raises(ValueError, match='n_blanks'): D.generate_sudoku(2, n_blanks=(10, 5))
    with pytest.raises(ValueError, match='min_rating'): D.generate_sudoku(2, min_rating=50, max_tries=3)

def test_generation_reproducible_and_thread_independent():
    a = D.generate_sudoku(50, seed=9, min_rating=1, n_jobs=1)
    b = D.generate_sudoku(50, seed=9, min_rating=1, n_jobs=2)
    assert all((x == y).all() for x, y in zip(a, b))
    assert (D.generate_sudoku(20, seed=9, min_rating=1)[0] == a[0][:20]).all()    # puzzle i depends on (seed, i) only

# ---------------------------------------------------------------- augmentation and symmetry
def test_augmentation_bijection_validity_uniqueness(hard):
    q, a, _ = hard
    keys = D.random_keys(1, 2, np.arange(len(q)), D.n_symmetry_keys())
    cells, digits = D.sudoku_symmetry(keys)
    labels = np.tile(np.arange(81), (len(q), 1))
    assert (np.sort(np.take_along_axis(labels, cells, 1), 1) == np.arange(81)).all()
    qa, aa = D.augment_sudoku(q, a, keys)
    for x, y in zip(qa, aa):
        sols = simple_solutions(x)
        assert len(sols) == 1 and sols[0] == y.tolist()
    assert ((qa == 0).sum(1) == (q == 0).sum(1)).all()

def test_augmentation_covers_the_group():
    keys = D.random_keys(0, 0, np.arange(4000), D.n_symmetry_keys())
    cells, digits = D.sudoku_symmetry(keys)
    transposed = (cells[:, 1] - cells[:, 0]) % 9 == 0
    assert 0.45 < transposed.mean() < 0.55
    first_row_src = np.where(transposed, cells[:, 0] % 9, cells[:, 0] // 9)
    assert set(first_row_src.tolist()) == set(range(9))                      # any row (or column) can come first
    assert len({tuple(d) for d in digits[:, 1:].tolist()}) > 3900

def test_sudoku4_valid_unique_and_augmented():
    q, a = D.generate_sudoku4(100, seed=2)
    for x, y in zip(q, a):
        sols = simple_solutions(x, box=2)
        assert len(sols) == 1 and sols[0] == y.tolist()
    qa, aa = D.augment_sudoku(q, a, D.random_keys(0, 0, np.arange(100), D.n_symmetry_keys(2)), box=2)
    for x, y in zip(qa, aa):
        assert simple_solutions(x, box=2) == [y.tolist()]

def test_symmetry_hash_invariant_and_discriminative(minimal, hard):
    q = np.concatenate([minimal[0], hard[0]])
    h = D.sudoku_symmetry_hash(q)
    for e in range(10):
        qa, _ = D.augment_sudoku(q, q, D.random_keys(e, e, np.arange(len(q)), D.n_symmetry_keys()))
        assert (D.sudoku_symmetry_hash(qa) == h).all()
    many = D.generate_sudoku(1500, seed=77)[0]
    assert len(np.unique(D.sudoku_symmetry_hash(many))) == 1500
    rows_swapped = q.reshape(-1, 9, 9)[:, [0, 4, 2, 3, 1, 5, 6, 7, 8]].reshape(-1, 81)    # not a symmetry
    assert (D.sudoku_symmetry_hash(rows_swapped) != h).mean() > 0.9

def test_disjointness_detects_an_injected_symmetric_copy(minimal, hard):
    train, test = minimal[0], hard[0].copy()
    qa, _ = D.augment_sudoku(train[[3, 17]], train[[3, 17]], D.random_keys(5, 0, [0, 1], D.n_symmetry_keys()))
    assert not (qa == train[[3, 17]]).all(1).any()
    test[[4, 20]] = qa
    keep_train, keep_test = D.disjoint_under_symmetry(train, test)
    assert keep_train.all() and np.flatnonzero(~keep_test).tolist() == [4, 20]

def test_benchmark_builder_drops_injected_copies(monkeypatch, tmp_path):
    real = D.generate_sudoku
    train = real(20, seed=subseed(0, 'train'), n_blanks=(20, 30))
    def fake(n, seed=0, min_rating=0, n_blanks=None, **kw):
        q, a, r = real(n, seed, min_rating, n_blanks, **kw)
        if seed == subseed(0, 'test', 0):                    # first test round: plant a disguised training puzzle
            q[0], a[0] = D.augment_sudoku(train[0][:1], train[1][:1], D.random_keys(1, 1, [0], D.n_symmetry_keys()))
            r[0] = D.rate_sudoku(q[:1])[0]
        return q, a, r
    monkeypatch.setattr(T, 'generate_sudoku', fake)
    splits, info = D.build_sudoku_benchmark(20, 10, seed=0, n_blanks=(20, 30), progress=False)
    assert info['dropped_symmetric_duplicates'] == 1 and len(splits['test']['questions']) == 10
    ht = D.sudoku_symmetry_hash(splits['train']['questions'])
    assert not np.isin(D.sudoku_symmetry_hash(splits['test']['questions']), ht).any()

# ---------------------------------------------------------------- CSV
def grid_str(x, blank='.'): return ''.join(blank if v == 0 else str(v) for v in x)

def test_csv_roundtrip_and_errors(tmp_path, hard):
    q, a, r = hard
    p = D.write_sudoku_csv(tmp_path / 'h.csv', q, a, r, source=[f's{i}' for i in range(len(q))])
    q2, a2, r2 = D.read_sudoku_csv(p)
    assert (q2 == q).all() and (a2 == a).all() and (r2 == r).all()
    lines = p.read_text().splitlines()
    src, qs, ans, rat = lines[3].split(',')
    swap = ans[9:18] + ans[:9] + ans[18:]                           # rows 0 and 1 swapped: valid grid, clashes with clues
    bad_grid = ans[:80] + ans[79]                                   # last row repeats a digit
    cases = {f'{src},{qs}.,{ans},{rat}': '82 characters', f'{src},{qs[:-1]}x,{ans},{rat}': "'x'",
             f'{src},{qs},{ans},x': 'not an integer', f'{src},{qs},{ans}': '4 fields',
             f'{src},{qs},{swap},{rat}': 'contradicts', f'{src},{qs.replace(qs[-1], ".") if qs[-1] != "." else qs},{bad_grid},{rat}': 'rules',
             f'{src},{qs},{ans[:-1]}.,{rat}': "'.'", f'{src},{qs},{ans[:-1]}0,{rat}': "'0'"}    # '0' is a blank in questions only
    for row, msg in cases.items():
        bad = lines.copy(); bad[3] = row
        (tmp_path / 'bad.csv').write_text('\n'.join(bad) + '\n')
        with pytest.raises(ValueError, match=f'bad.csv, line 4: .*{msg}'): D.read_sudoku_csv(tmp_path / 'bad.csv')
    (tmp_path / 'nohead.csv').write_text('\n'.join(lines[1:]))
    with pytest.raises(ValueError, match='line 1'): D.read_sudoku_csv(tmp_path / 'nohead.csv')
    with pytest.raises(FileNotFoundError, match='nope.csv.*sapientinc/sudoku-extreme'): D.read_sudoku_csv(tmp_path / 'nope.csv')

def test_csv_columns_in_any_order_extra_and_optional(tmp_path, hard):
    q, a, r = hard
    q[0, np.flatnonzero(q[0])[0]] = 0                               # one more blank, still agreeing with the answer
    cols = dict(source=[f's{i}' for i in range(len(q))], question=[grid_str(x, '0') for x in q], answer=[grid_str(x) for x in a],
                rating=[str(x) for x in r], note=['x,"y"'] * len(q))
    f = tmp_path / 'c.csv'
    for names in [*itertools.permutations(D.CSV_HEADER), ['note', 'Answer ', 'question', 'rating', 'source']]:
        with open(f, 'w', newline='') as fh:
            w = csv.writer(fh); w.writerow(names); w.writerows(zip(*(cols[n.strip().lower()] for n in names)))
        q2, a2, r2, s2 = D.read_sudoku_csv(f, with_source=True)
        assert (q2 == q).all() and (a2 == a).all() and (r2 == r).all() and s2.tolist() == cols['source'], names
    for names, ratings, sources in ((['question', 'answer'], -1, ''), (['answer', 'source', 'question'], -1, None), (['rating', 'question', 'answer'], r, '')):
        with open(f, 'w', newline='', encoding='utf-8-sig') as fh:                                    # with a byte-order mark
            w = csv.writer(fh); w.writerow(names); w.writerows(zip(*(cols[n] for n in names)))
        q2, a2, r2 = D.read_sudoku_csv(f)
        assert (q2 == q).all() and (a2 == a).all() and (r2 == ratings).all() and r2.dtype == np.int64
        assert D.read_sudoku_csv(f, with_source=True)[3].tolist() == (cols['source'] if sources is None else [sources] * len(q))
    for header in ('source,puzzle,answer,rating', 'question,answer,question', 'source,question,rating', ''):
        f.write_text(header + '\n' + '\n'.join(f'{x},{y},{x},1' for x, y in zip(cols['question'], cols['answer'])) + '\n')
        with pytest.raises(ValueError, match=r'c.csv, line 1: expected a header naming the columns question and answer'): D.read_sudoku_csv(f)

def test_csv_malformed_rows_named_by_line_in_a_reordered_file(tmp_path, hard):
    q, a, r = hard
    rows = [f'{y},{grid_str(x, "0")},extra' for x, y in zip(q, map(grid_str, a))]
    f = tmp_path / 'r.csv'
    for i, row, msg in ((5, rows[5].rsplit(',', 1)[0], "line 7: expected 3 fields \\(answer,question,note, as in the header\\), got 2"),
                        (2, rows[2].replace(',', ',7', 1), 'line 4: question has 82 characters'),
                        (0, rows[0][:83] + '?' + rows[0][84:], "line 2: question has character '\\?' at position 1"),
                        (9, rows[9][1:], 'line 11: answer has 80 characters')):
        bad = rows.copy(); bad[i] = row
        f.write_text('answer,question,note\n' + '\n'.join(bad) + '\n')
        with pytest.raises(ValueError, match=f'r.csv, {msg}'): D.read_sudoku_csv(f, chunk=4)         # chunks keep line numbers
        assert len(D.read_sudoku_csv(f, max_rows=min(i, 3))[0]) == min(i, 3)                             # rows before it are fine

def csv_rows(path):
    "Data rows of a CSV file as dicts, by the standard library (independent of the reader under test)."
    with open(path, newline='') as f: return list(csv.DictReader(f))

def test_sudoku_csv_task(tmp_path, hard, minimal):
    D.write_sudoku_csv(tmp_path / 'csv' / 'train.csv', *minimal)
    D.write_sudoku_csv(tmp_path / 'csv' / 'test.csv', *hard)
    t = D.get_task('sudoku-csv', data_dir=tmp_path / 'data', path=tmp_path / 'csv', n_train=10, n_aug=2)
    assert len(t.train) == 30 and len(t.test) == len(hard[0]) and (t.vocab_size, t.seq_len) == (11, 81)
    assert t.meta['counts'] == {'train': 10, 'test': len(hard[0])} and t.final_test is None
    train_rows = csv_rows(tmp_path / 'csv' / 'train.csv')
    assert [grid_str(x) for x in t.train.inputs] == [train_rows[i]['question'] for i in t.row_ids['train']]
    assert (t.row_ids['test'] == np.arange(len(hard[0]))).all() and t.meta['csv']['test'] == str(tmp_path / 'csv' / 'test.csv')
    stored = np.load(tmp_path / 'data' / 'sudoku-csv' / Path(t.meta['dir']).name / 'train.npz')
    assert (stored['rows'] == t.row_ids['train']).all() and (stored['ratings'] == minimal[2][t.row_ids['train']]).all()
    t2 = D.get_task('sudoku-csv', data_dir=tmp_path / 'data', path=tmp_path / 'csv', n_train=10, n_test=7)
    fin = csv_rows(tmp_path / 'csv' / 'test.csv')
    assert [grid_str(x) for x in t2.final_test.inputs] == [row['question'] for row in fin]                     # the full test set
    assert [grid_str(x) for x in t2.test.inputs] == [fin[i]['question'] for i in t2.row_ids['test']] and len(t2.test) == 7
    assert (t2.row_ids['final_test'] == np.arange(len(fin))).all() and t2.meta['counts']['final_test'] == len(fin)
    assert (t2.row_ids['train'] == t.row_ids['train']).all()                                   # n_test does not move the training draw

def test_sudoku_csv_task_one_file_seeded_and_recorded(tmp_path, minimal):
    q, a, r = minimal
    f = D.write_sudoku_csv(tmp_path / 'all.csv', q, a, r, source=[f'p{i}' for i in range(len(q))])
    rows = csv_rows(f)
    def task(data, seed=0, n_test=5): return D.get_task('sudoku-csv', data_dir=tmp_path / data, path=f, n_train=12, n_test=n_test, seed=seed, n_aug=0)
    t = task('d1')
    tr, te, fin = (t.row_ids[s] for s in ('train', 'test', 'final_test'))
    assert len(tr) == 12 and len(te) == 5 and len(fin) == len(q) - 12 and not set(tr) & set(fin) and set(te) <= set(fin)
    for ds, ids in ((t.train, tr), (t.test, te), (t.final_test, fin)):
        assert [grid_str(x) for x in ds.inputs] == [rows[i]['question'] for i in ids]
        assert [grid_str(y) for y in ds.targets] == [rows[i]['answer'] for i in ids]
    assert set(t.meta['csv'].values()) == {str(f)} and t.meta['counts'] == {'train': 12, 'test': 5, 'final_test': len(q) - 12}
    again = task('d2')                                                                        # a fresh build, same seed
    assert all((again.row_ids[s] == t.row_ids[s]).all() for s in t.row_ids) and again.meta['dir'] != t.meta['dir']
    other = task('d1', seed=1)
    assert set(other.row_ids['train']) != set(tr) and set(other.row_ids['test']) != set(te)
    full = task('d1', n_test=None)
    assert full.final_test is None and (full.row_ids['test'] == fin).all() and set(full.row_ids) == {'train', 'test'}
    with pytest.raises(ValueError, match='n_train=None: with one CSV file'): D.get_task('sudoku-csv', data_dir=tmp_path, path=f, n_train=None)
    with pytest.raises(ValueError, match=f'n_train={len(q)}: the CSV file has {len(q)} data rows'):
        D.get_task('sudoku-csv', data_dir=tmp_path, path=f, n_train=len(q))
    with pytest.raises(ValueError, match='n_test: expected an integer >= 1'): D.get_task('sudoku-csv', data_dir=tmp_path, path=f, n_test=0)

def test_sudoku_csv_task_says_what_belongs_where(tmp_path, minimal, monkeypatch):
    expected = 'expected a folder holding train.csv and test.csv .*source,question,answer,rating.* or one such CSV file'
    with pytest.raises(ValueError, match='path=<a folder holding train.csv and test.csv'): D.get_task('sudoku-csv', data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=f'{expected}; got {tmp_path}/none, which does not exist.*huggingface-cli download'):
        D.get_task('sudoku-csv', data_dir=tmp_path, path=tmp_path / 'none')
    d = tmp_path / 'dl'; D.write_sudoku_csv(d / 'train.csv', *minimal); (d / 'README.md').write_text('hi')
    with pytest.raises(FileNotFoundError, match=f'{expected}; got {d}, a folder without test.csv \\(it holds README.md, train.csv; '
                                                'to split one CSV file into train and test, pass the file itself\\)'):
        D.get_task('sudoku-csv', data_dir=tmp_path, path=d)
    with pytest.raises(FileNotFoundError, match=f'got {tmp_path}/empty, a folder without train.csv and test.csv \\(it holds nothing'):
        (tmp_path / 'empty').mkdir(); D.get_task('sudoku-csv', data_dir=tmp_path, path=tmp_path / 'empty')
    (d / 'test.csv').write_text('puzzle,solution\n' + 'x,y\n')                                 # wrong header: fails before reading train.csv
    def long_work(*a): raise AssertionError('the build started')
    monkeypatch.setattr(T, '_sudoku_csv_build', long_work)
    with pytest.raises(ValueError, match='test.csv, line 1: expected a header naming the columns question and answer'):
        D.get_task('sudoku-csv', data_dir=tmp_path / 'data', path=d)

# ---------------------------------------------------------------- datasets and tasks
def test_dataset_tokens_and_workers(easy):
    q, a, _ = easy
    ds = D.sudoku_dataset(q, a, n_aug=2, seed=3)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False, num_workers=2)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    ref = ds.__getitems__(list(range(len(ds))))
    assert torch.equal(x, torch.stack([r[0] for r in ref])) and torch.equal(y, torch.stack([r[1] for r in ref]))
    assert torch.equal(x[:len(q)], torch.from_numpy(q.astype(np.int64) + 1)) and y.min() == 2 and y.max() == 10
    sols, counts = D.solve_sudoku((x - 1).numpy())
    assert (counts == 1).all() and (sols == (y - 1).numpy()).all()

def test_get_task_errors_and_cache(tmp_path):
    with pytest.raises(ValueError, match="sudoku-easy.*sudoku-extreme|maze"): D.get_task('chess')
    t = D.get_task('sudoku-extreme', data_dir=tmp_path, n_train=8, n_test=8, min_rating=2, n_aug=3)
    m = json.loads((D.build_dir(tmp_path, 'sudoku-extreme', t.meta['params']) / 'manifest.json').read_text())
    assert m['params']['min_rating'] == 2 and m['counts'] == {'train': 8, 'test': 8} and m['rating']['test']['min'] >= 2
    assert len(t.train) == 32 and t.meta == {**m, 'dir': str(D.build_dir(tmp_path, 'sudoku-extreme', m['params']))}
    t2 = D.get_task('sudoku-extreme', data_dir=tmp_path, n_train=8, n_test=8, min_rating=2, n_aug=3)
    assert t2.meta['created'] == m['created']                                 # reused, not rebuilt
    t3 = D.get_task('sudoku-extreme', data_dir=tmp_path, n_train=8, n_test=8, min_rating=3)
    assert t3.meta['params']['min_rating'] == 3 and (t3.test.inputs >= 0).all()

def test_outputs_for_a_seed_never_change():
    "Pinned digests: a change here changes every benchmark built from a seed, and the caches under data/ would no longer be found."
    def digest(*xs): return hashlib.blake2b(b''.join(np.ascontiguousarray(x).tobytes() for x in xs), digest_size=8).hexdigest()
    q = D.generate_sudoku(16, seed=1)
    assert digest(*q) == 'ec8c10371e940521' and digest(D.sudoku_symmetry_hash(q[0])) == '1da0f27c0abe357e'
    assert digest(*D.generate_sudoku(4, seed=1, min_rating=3)) == '3890ee41f27ce797'
    assert digest(*D.generate_sudoku(2, seed=7, search_moves=100)) == 'c21ed7f236dfc147'
    assert digest(D.random_keys(3, 5, np.arange(8), D.n_symmetry_keys())) == 'ea7630e00add9adf'
    assert digest(*D.generate_sudoku4(50, seed=3)) == '7b9e5571284b50c4' and digest(*D.generate_maze(2, seed=2)) == '18efe76689bd2e95'
    easy = dict(n_train=10_000, n_test=1_000, n_blanks=[8, 16], seed=0)                   # get_task('sudoku-easy')'s defaults
    assert D.build_dir('data', 'sudoku-easy', easy) == Path('data/sudoku-easy/f6df139ab30f')

# ---------------------------------------------------------------- maze
def bfs(grid, start):
    h, w = grid.shape; dist = {start: 0}; todo = deque([start])
    while todo:
        r, c = todo.popleft()
        for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= rr < h and 0 <= cc < w and grid[rr, cc] != D.WALL and (rr, cc) not in dist:
                dist[(rr, cc)] = dist[(r, c)] + 1; todo.append((rr, cc))
    return dist

def count_shortest(grid, start, goal):
    dist = bfs(grid, start); ways = {start: 1}
    for cell in sorted(dist, key=dist.get)[1:]:
        r, c = cell
        ways[cell] = sum(ways.get(n, 0) for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)) if dist.get(n) == dist[cell] - 1)
    return dist.get(goal), ways.get(goal, 0)

def check_maze(x, y, size=30):
    x, y = x.reshape(size, size), y.reshape(size, size)
    s, g = tuple(np.argwhere(x == D.START)[0]), tuple(np.argwhere(x == D.GOAL)[0])
    d, ways = count_shortest(x, s, g)
    path = {tuple(p) for p in np.argwhere(y == D.PATH)}
    assert ways == 1 and d > 110 and len(path) == d - 1
    assert ((y == x) | (y == D.PATH)).all() and (x[y == D.PATH] == D.OPEN).all()
    cur, seen = s, {s}                            # S -> path cells -> G is a walk of d steps
    for _ in range(d - 1):
        nxt = [n for n in ((cur[0] + 1, cur[1]), (cur[0] - 1, cur[1]), (cur[0], cur[1] + 1), (cur[0], cur[1] - 1)) if n in path and n not in seen]
        assert len(nxt) == 1; cur = nxt[0]; seen.add(cur)
    assert abs(cur[0] - g[0]) + abs(cur[1] - g[1]) == 1

def test_mazes_have_unique_shortest_paths():
    x, y, lens = D.generate_maze(20, seed=4)
    assert x.dtype == np.uint8 and set(np.unique(y)) == {1, 2, 3, 4, 5}
    for xi, yi in zip(x, y): check_maze(xi, yi)
    xa, ya = D.augment_maze(x, y, D.random_keys(0, 0, np.arange(20), 1))
    assert len({int(k) for k in D.random_keys(0, 0, np.arange(20), 1)[:, 0] % np.uint64(8)}) > 4
    for xi, yi in zip(xa, ya): check_maze(xi, yi)

def test_maze_task_disjoint(tmp_path):
    t = D.get_task('maze', data_dir=tmp_path, n_train=30, n_test=30)
    tr, te = t.train.inputs, t.test.inputs
    assert not set(D.maze_canonical(tr)) & set(D.maze_canonical(te))
    assert (t.vocab_size, t.seq_len) == (6, 900) and len(t.train) == 240
    x, y = t.train[35]
    check_maze(x.numpy(), y.numpy())
