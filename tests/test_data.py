"""Tests of srm_nb.data that are too slow or too cross-cutting for the notebook (nbs/04_data.ipynb).

Validity and uniqueness are checked with a second, deliberately simple solver written here in pure Python
(plain backtracking on the most constrained cell), independent of the numba solver under test."""
import json, math
from collections import deque
import numpy as np
import pytest
import torch

from srm_nb import data as D

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
    train = real(20, seed=D._subseed(0, 'train'), n_blanks=(20, 30))
    def fake(n, seed=0, min_rating=0, n_blanks=None, **kw):
        q, a, r = real(n, seed, min_rating, n_blanks, **kw)
        if seed == D._subseed(0, 'test', 0):                 # first test round: plant a disguised training puzzle
            q[0], a[0] = D.augment_sudoku(train[0][:1], train[1][:1], D.random_keys(1, 1, [0], D.n_symmetry_keys()))
            r[0] = D.rate_sudoku(q[:1])[0]
        return q, a, r
    monkeypatch.setattr(D, 'generate_sudoku', fake)
    splits, info = D.build_sudoku_benchmark(20, 10, seed=0, n_blanks=(20, 30), progress=False)
    assert info['dropped_symmetric_duplicates'] == 1 and len(splits['test']['questions']) == 10
    ht = D.sudoku_symmetry_hash(splits['train']['questions'])
    assert not np.isin(D.sudoku_symmetry_hash(splits['test']['questions']), ht).any()

# ---------------------------------------------------------------- CSV
def test_csv_roundtrip_and_errors(tmp_path, hard):
    q, a, r = hard
    p = D.write_sudoku_csv(tmp_path / 'h.csv', q, a, r, source=[f's{i}' for i in range(len(q))])
    q2, a2, r2 = D.read_sudoku_csv(p)
    assert (q2 == q).all() and (a2 == a).all() and (r2 == r).all()
    lines = p.read_text().splitlines()
    src, qs, ans, rat = lines[3].split(',')
    swap = ans[9:18] + ans[:9] + ans[18:]                           # rows 0 and 1 swapped: valid grid, clashes with clues
    bad_grid = ans[:80] + ans[79]                                   # last row repeats a digit
    cases = {f'{src},{qs}.,{ans},{rat}': '82 characters', f'{src},{qs[:-1]}0,{ans},{rat}': "'0'",
             f'{src},{qs},{ans},x': 'not an integer', f'{src},{qs},{ans}': '4 fields',
             f'{src},{qs},{swap},{rat}': 'contradicts', f'{src},{qs.replace(qs[-1], ".") if qs[-1] != "." else qs},{bad_grid},{rat}': 'rules',
             f'{src},{qs},{ans[:-1]}.,{rat}': "'.'"}
    for row, msg in cases.items():
        bad = lines.copy(); bad[3] = row
        (tmp_path / 'bad.csv').write_text('\n'.join(bad) + '\n')
        with pytest.raises(ValueError, match=f'line 4: .*{msg}'): D.read_sudoku_csv(tmp_path / 'bad.csv')
    (tmp_path / 'nohead.csv').write_text('\n'.join(lines[1:]))
    with pytest.raises(ValueError, match='line 1'): D.read_sudoku_csv(tmp_path / 'nohead.csv')
    with pytest.raises(FileNotFoundError, match='nope.csv.*sapientinc/sudoku-extreme'): D.read_sudoku_csv(tmp_path / 'nope.csv')

def test_sudoku_csv_task(tmp_path, hard, minimal):
    D.write_sudoku_csv(tmp_path / 'csv' / 'train.csv', *minimal)
    D.write_sudoku_csv(tmp_path / 'csv' / 'test.csv', *hard)
    t = D.get_task('sudoku-csv', data_dir=tmp_path / 'data', path=tmp_path / 'csv', n_train=10, n_aug=2)
    assert len(t.train) == 30 and len(t.test) == len(hard[0]) and (t.vocab_size, t.seq_len) == (11, 81)
    assert t.meta['counts'] == {'train': 10, 'test': len(hard[0])}
    with pytest.raises(FileNotFoundError, match='train.csv'): D.get_task('sudoku-csv', data_dir=tmp_path, path=tmp_path / 'none')

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
