"""Tests of srm_nb.data.ladder (nbs/04e_ladder.ipynb) against plain-Python implementations written here, independent of its kernels.

The references follow the definitions in the notebook: parallel rounds of naked and hidden singles; logic levels (singles,
+ locked candidates, + naked subsets of every size) run to a fixpoint; and the fixed-order DFS with singles propagation
whose guesses grade a puzzle that needs guessing. The human-made puzzles are tests/data/human_sudoku.csv (see README.md there)."""
import hashlib, inspect, itertools, json
from pathlib import Path
import numpy as np
import pytest

from srm_nb import data as D
from srm_nb.data import ladder as L          # where the ladder build looks generate_ladder up
from srm_nb.utils import subseed
from srm_nb.runs import read_metrics

HUMAN_CSV = Path(__file__).parent / 'data' / 'human_sudoku.csv'

# ---------------------------------------------------------------- plain-Python references
DIGITS = frozenset(range(1, 10))
ROWS = [[9 * r + c for c in range(9)] for r in range(9)]
COLS = [[9 * r + c for r in range(9)] for c in range(9)]
BOXES = [[9 * (3 * (b // 3) + i // 3) + 3 * (b % 3) + i % 3 for i in range(9)] for b in range(9)]
UNITS = ROWS + COLS + BOXES
PEERS = [set().union(*(u for u in UNITS if c in u)) - {c} for c in range(81)]

def ref_singles_rounds(puzzle):
    "Rounds of naked + hidden singles, each computed from the grid at the start of the round; -1 when stuck or contradictory."
    grid = [int(v) for v in puzzle]
    rounds = 0
    while True:
        for unit in UNITS:                               # a digit twice in a unit
            placed = [grid[c] for c in unit if grid[c]]
            if len(placed) != len(set(placed)): return -1
        if 0 not in grid: return rounds
        cands = {c: DIGITS - {grid[p] for p in PEERS[c]} for c in range(81) if grid[c] == 0}
        if not all(cands.values()): return -1            # a blank cell with no candidate
        forced = {c: set(s) for c, s in cands.items() if len(s) == 1}
        for unit in UNITS:
            for d in DIGITS - {grid[c] for c in unit}:
                places = [c for c in unit if c in cands and d in cands[c]]
                if not places: return -1                 # a missing digit with no place
                if len(places) == 1: forced.setdefault(places[0], set()).add(d)
        if not forced or any(len(s) > 1 for s in forced.values()): return -1
        for c, s in forced.items(): grid[c] = s.pop()
        rounds += 1

def _singles(cands):
    "Naked and hidden singles on a list of candidate sets, in place, to a fixpoint; False on a contradiction."
    changed = True
    while changed:
        changed = False
        for c in range(81):
            if not cands[c]: return False
            if len(cands[c]) == 1:
                (d,) = cands[c]
                for p in PEERS[c]:
                    if d in cands[p]:
                        cands[p] = cands[p] - {d}; changed = True
                        if not cands[p]: return False
        for unit in UNITS:
            for d in DIGITS:
                places = [c for c in unit if d in cands[c]]
                if not places: return False
                if len(places) == 1 and len(cands[places[0]]) > 1:
                    cands[places[0]] = {d}; changed = True
    return True

def _locked(cands):
    "One pass of pointing and claiming over every box-line pair; True if it removed a candidate."
    changed = False
    for box in BOXES:
        for line in ROWS + COLS:
            inter = set(box) & set(line)
            if not inter: continue
            for d in DIGITS:
                in_box = {c for c in box if d in cands[c]}; in_line = {c for c in line if d in cands[c]}
                for here, there in ((in_box, line), (in_line, box)):
                    if here and here <= inter:
                        for c in set(there) - inter:
                            if d in cands[c]: cands[c] = cands[c] - {d}; changed = True
    return changed

def _subsets(cands):
    "One pass of naked subsets (k open cells of a unit holding only k digits) of every size; None on a contradiction, else True if it removed a candidate."
    changed = False
    for unit in UNITS:
        open_cells = [c for c in unit if len(cands[c]) > 1]
        for k in range(2, len(open_cells)):
            for group in itertools.combinations(open_cells, k):
                digits = set().union(*(cands[c] for c in group))
                if len(digits) < k: return None
                if len(digits) == k:
                    for c in set(open_cells) - set(group):
                        if cands[c] & digits: cands[c] = cands[c] - digits; changed = True
    return changed

def ref_level(puzzle):
    "0 full grid, 1 singles, 2 + locked candidates, 3 + subsets solve it; 4 otherwise."
    cands = [DIGITS - set() if v == 0 else {int(v)} for v in puzzle]
    rules = [_locked, _subsets]
    for level in (1, 2, 3):
        while True:
            if not _singles(cands): return 4
            if level == 1: break
            changed = False
            for rule in rules[:level - 1]:
                r = rule(cands)
                if r is None: return 4
                changed |= r
            if not changed: break
        if all(len(s) == 1 for s in cands): return level if 0 in list(puzzle) else 0
    return 4

def ref_guesses(puzzle):
    "Guesses of the DFS: singles; open cell with fewest candidates, first on ties; digits upwards; a guess = a try with another left."
    count = 0
    def search(cands):
        nonlocal count
        if not _singles(cands): return False
        open_cells = [c for c in range(81) if len(cands[c]) > 1]
        if not open_cells: return True
        cell = min(open_cells, key=lambda c: (len(cands[c]), c))
        digits = sorted(cands[cell])
        for i, d in enumerate(digits):
            if i < len(digits) - 1: count += 1
            trial = list(cands); trial[cell] = {d}
            if search(trial): return True
        return False
    found = search([set(DIGITS) if v == 0 else {int(v)} for v in puzzle])
    return count if found else -1

def ref_naked_rounds(puzzle):
    "Parallel rounds of naked singles alone; -1 when they stall (used to find puzzles that need a hidden single)."
    grid = [int(v) for v in puzzle]
    rounds = 0
    while 0 in grid:
        cands = {c: DIGITS - {grid[p] for p in PEERS[c]} for c in range(81) if grid[c] == 0}
        naked = {c: min(s) for c, s in cands.items() if len(s) == 1}
        if not naked: return -1
        for c, d in naked.items(): grid[c] = d
        rounds += 1
    return rounds

# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def human():
    return D.read_sudoku_csv(HUMAN_CSV, with_source=True)

@pytest.fixture(scope='module')
def generated():
    "Unique-solution puzzles at blank counts from 0 to 58, minimal ones and hard (rating >= 4) ones."
    ranges = [(0, 0), (1, 1), (2, 12), (13, 20), (21, 30), (31, 39), (40, 44), (45, 50), (51, 55), (56, 58)]
    parts = [D.generate_sudoku(30, seed=200 + i, n_blanks=b)[0] for i, b in enumerate(ranges)]
    return np.concatenate(parts + [D.generate_sudoku(60, seed=210)[0], D.generate_sudoku(15, seed=211, min_rating=4)[0]])

# ---------------------------------------------------------------- the fixture file
def test_human_fixture_is_what_its_readme_says(human):
    q, a, r, src = human
    assert {s: int((src == s).sum()) for s in dict.fromkeys(src)} == {'project-euler-96': 50, 'norvig-top95': 95, 'norvig-hardest': 11}
    sols, n = D.solve_sudoku(q)
    assert (n == 1).all() and (sols == a).all() and (D.rate_sudoku(q) == r).all()
    assert ''.join(map(str, a[0])) == '483921657967345821251876493548132976729564138136798245372689514814253769695417382'

# ---------------------------------------------------------------- singles rounds
def test_singles_rounds_agree_with_reference(generated, human):
    rng = np.random.default_rng(1)
    grids = D.generate_sudoku(30, seed=212, n_blanks=0)[1]
    clue_sets = np.where(rng.random((30, 81)) < rng.uniform(0.2, 0.9, (30, 1)), grids, 0)   # many solutions, or (changed) none
    clue_sets[::3, 40] = np.where(clue_sets[::3, 40] > 0, clue_sets[::3, 40] % 9 + 1, 0)
    for q in (generated, human[0], clue_sets):
        ours = D.singles_rounds(q, n_jobs=2)
        assert ours.tolist() == [ref_singles_rounds(p) for p in q]
    b = (generated == 0).sum(1)
    assert (D.singles_rounds(generated)[b <= 20] >= 0).all() and len(set(b.tolist())) > 40

def test_rounds_are_a_depth_hidden_singles_only_shorten_them(human, generated):
    q = np.concatenate([human[0], generated])
    rounds, naked = D.singles_rounds(q), np.array([ref_naked_rounds(p) for p in q])
    both = naked >= 0
    assert (rounds[both] >= 0).all() and (rounds[both] <= naked[both]).all()
    needs_hidden = np.flatnonzero((naked < 0) & (rounds > 0))                  # naked singles stall, hidden ones finish it
    assert len(needs_hidden) > 10
    euler = needs_hidden[needs_hidden < 50]                                     # Project Euler grids come first in the file
    assert len(euler) and all(ref_singles_rounds(q[i]) == rounds[i] for i in euler)

def test_singles_fill_stops_where_the_rounds_do(generated):
    q = generated[(generated == 0).sum(1) >= 40]
    rounds = D.singles_rounds(q); sols = D.solve_sudoku(q)[0]
    full = D.singles_fill(q)
    assert ((full == sols).all(1) == (rounds >= 0)).all() and ((full == 0) | (full == sols)).all()
    for k in (0, 1, 3):
        part = D.singles_fill(q, max_rounds=k)
        assert ((part == 0) | (part == sols)).all() and ((part != 0) >= (q != 0)).all()
        assert ((part != 0).all(1) == ((rounds >= 0) & (rounds <= k))).all()
    with pytest.raises(ValueError, match='max_rounds'): D.singles_fill(q, max_rounds=-1)
    with pytest.raises(ValueError, match='questions'): D.singles_rounds(np.zeros((2, 80), np.int8))

# ---------------------------------------------------------------- the grade
def test_levels_and_guesses_agree_with_reference(human, generated):
    q = np.concatenate([human[0], generated[::3]])
    g = D.sudoku_grade(q, n_jobs=2)
    assert g['level'].tolist() == [ref_level(p) for p in q]
    assert g['guesses'].tolist() == [ref_guesses(p) for p in q]
    assert ((g['level'] <= 1) == (g['rounds'] >= 0)).all() and ((g['guesses'] == 0) == (g['level'] <= 1)).all()
    assert set(g['level'].tolist()) == {0, 1, 2, 3, 4} and (g['rating'] == D.rate_sudoku(q)).all()

def test_eliminations_keep_the_answer(human):
    q, a = human[0], human[1]
    for level in (1, 2, 3):
        for qi, ai in zip(q, a):
            cand = L._cand_from(qi)
            assert L._eliminate(cand, level)
            assert all(cand[c] >> (ai[c] - 1) & 1 for c in range(81))

def test_grade_of_contradictions_and_of_a_locked_candidates_puzzle(human):
    q, a, _, src = human
    bad = q[0].copy(); bad[np.flatnonzero(bad == 0)[0]] = bad[np.flatnonzero(bad)[0]]   # a clue repeated in row 0
    g = D.sudoku_grade(np.stack([bad, np.zeros(81, np.int8)]))
    assert g['rounds'].tolist() == [-1, -1] and g['guesses'][0] == -1 and g['rating'][0] == -1 and D.sudoku_tier(g)[0] == -1
    lv = D.sudoku_grade(q)['level']
    i = int(np.flatnonzero(lv == 2)[0])                                           # singles stall, locked candidates finish it
    assert ref_singles_rounds(q[i]) == -1 and ref_level(q[i]) == 2 and D.GRADE_LEVELS[lv[i]] == 'locked candidates'

# ---------------------------------------------------------------- tiers and the generated ladder
@pytest.fixture(scope='module')
def ladder():
    return D.generate_ladder(30, seed=3, n_jobs=2)

def test_generated_tiers_hold_by_the_reference(ladder):
    q, t = ladder['questions'], ladder['tier']
    assert np.bincount(t).tolist() == [30] * 5
    blanks = (q == 0).sum(1)
    for i in range(len(q)):
        r, lv = ref_singles_rounds(q[i]), ref_level(q[i])
        assert r == ladder['rounds'][i] and lv == ladder['level'][i]
        if t[i] in (0, 1): assert r >= 0 and (blanks[i] <= 20 if t[i] == 0 else blanks[i] >= 40)
        if t[i] == 2: assert r == -1 and lv in (2, 3)
        if t[i] >= 3: assert lv == 4
    easy = t == 3
    assert (ladder['guesses'][easy] <= 3).all() and (ladder['ratings'][easy] < 4).all() and (ladder['ratings'][t == 4] >= 4).all()
    assert ((blanks[t == 1] >= 40) & (blanks[t == 1] <= 50)).sum() == 15 and (blanks[t == 1] > 50).sum() == 15

def test_outputs_for_a_seed_never_change():
    "Pinned digests: a change here changes every ladder built from a seed (then raise LADDER_VERSION)."
    def digest(*xs): return hashlib.blake2b(b''.join(np.ascontiguousarray(x).tobytes() for x in xs), digest_size=8).hexdigest()
    lad = D.generate_ladder({0: 3, 1: 4, 2: 3, 3: 3, 4: 2}, seed=0)
    assert digest(*(lad[k] for k in D.LADDER_ARRAYS)) == '3c276d01f279243a'
    default = {k: v.default for k, v in inspect.signature(D.sudoku_ladder_task).parameters.items()}
    params = dict(version=D.LADDER_VERSION, train_tiers=sorted(default['train_tiers']),
                  **{k: default[k] for k in ('n_train', 'n_test_per_tier', 'seed', 'min_rating', 'search_moves')})
    assert D.build_dir('data', 'sudoku-ladder', params) == Path('data/sudoku-ladder/f968354d9379')     # the default build's folder (LADDER_VERSION 2)

# ---------------------------------------------------------------- the task
def test_ladder_task_drops_injected_copies_and_tops_up(monkeypatch, tmp_path):
    real = D.generate_ladder
    train = real({1: 6, 4: 6}, subseed(0, 'train'))
    def fake(counts, seed=0, *args, **kw):
        out = real(counts, seed, *args, **kw)
        if seed == subseed(0, 'test', 0):                 # first test round: disguise a training puzzle as a T1 test puzzle
            i = int(np.flatnonzero(out['tier'] == 1)[0])
            keys = D.random_keys(1, 1, [0], D.n_symmetry_keys())
            out['questions'][i], out['answers'][i] = (x[0] for x in D.augment_sudoku(train['questions'][:1], train['answers'][:1], keys))
        return out
    monkeypatch.setattr(L, 'generate_ladder', fake)
    task = D.sudoku_ladder_task(tmp_path, train_tiers=(1, 4), n_train=12, n_test_per_tier=5, n_aug=0)
    te = task.meta['grades']['test']
    assert task.meta['dropped_symmetric_duplicates'] == 1 and np.bincount(te['tier']).tolist() == [5] * 5
    split = {s: np.load(Path(task.meta['dir']) / f'{s}.npz') for s in ('train', 'test')}
    h_train = D.sudoku_symmetry_hash(split['train']['questions'])
    assert not np.isin(D.sudoku_symmetry_hash(split['test']['questions']), h_train).any()
    assert (D.sudoku_tier(D.sudoku_grade(split['test']['questions'])) == split['test']['tier']).all()
    assert (task.test.inputs == split['test']['questions']).all() and task.meta['counts_by_tier']['train'] == {
        'T0': 0, 'T1': 6, 'T2': 0, 'T3': 0, 'T4': 6}

def test_curriculum_opens_tier_by_tier(tmp_path):
    task = D.sudoku_ladder_task(tmp_path, train_tiers=(0, 1, 2), n_train=9, n_test_per_tier=2, n_aug=1, curriculum_epochs=2)
    tier, ds = task.meta['grades']['train']['tier'], task.train
    seen = {}
    for epoch in range(7):
        ds.set_epoch(epoch)
        tokens = np.stack([t.numpy() for t, _ in ds.__getitems__(list(range(9)))]) - 1     # the un-augmented half
        seen[epoch] = {int(tier[np.flatnonzero((ds.all_inputs == x).all(1))[0]]) for x in tokens}
    assert [sorted(seen[e]) for e in range(7)] == [[0], [0], [0, 1], [0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2]]
    assert len(ds) == 18

def test_trainer_reports_the_ladder_per_tier_and_round(tmp_path):
    """`get_task('sudoku-ladder')` feeds the trainer, whose summary splits the final exact accuracy by tier and by rounds;
    an evaluation during training logs exact and blank-cell accuracy per tier, computed like the summary's (`Trainer.tier_scores`)."""
    from srm_nb.train import Trainer
    import torch
    torch.set_num_threads(1)
    t = Trainer(task='sudoku-ladder', hidden=16, cycles=2, n_sup=2, batch_size=8, steps=4, warmup=1, eval_every=2, eval_n=20, lyapunov_n=0,
                task_kw=dict(n_train=25, n_test_per_tier=4, n_aug=1), data_dir=str(tmp_path / 'data'), out_dir=str(tmp_path / 'run'))
    s = t.fit()
    by_tier, solved = s['by_tier'], json.loads((tmp_path / 'run' / 'eval.json').read_text())['test']['solved']
    tier = t.task.meta['grades']['test']['tier']
    assert sorted(by_tier) == ['T0', 'T1', 'T2', 'T3', 'T4'] and all(by_tier[f'T{k}']['n'] == 4 for k in range(5))
    for k in range(5):
        assert by_tier[f'T{k}']['exact_accuracy'] == np.mean(np.asarray(solved)[tier == k])
    t1 = by_tier['T1']['by_rounds']
    assert sum(r['n'] for r in t1.values()) == 4 and all(int(r) >= 1 for r in t1)
    blank = json.loads((tmp_path / 'run' / 'eval.json').read_text())['test']
    right, n_blank = np.asarray(blank['blank_right']), np.asarray(blank['n_blank'])
    for k in range(5):
        assert by_tier[f'T{k}']['blank_accuracy'] == right[tier == k].sum() / n_blank[tier == k].sum()
    ev = [r for r in read_metrics(tmp_path / 'run' / 'metrics.jsonl') if r['kind'] == 'eval']
    assert [r['step'] for r in ev] == [2] and ev[0]['n'] == 20
    assert set(ev[0]['by_tier']) == set(ev[0]['blank_by_tier']) == set(by_tier)
    final = {k: torch.as_tensor(v) for k, v in blank.items() if k in ('solved', 'cell_acc', 'blank_right', 'n_blank')}
    assert t.tier_scores(dict(final, n=20)) == by_tier         # the summary's numbers are tier_scores of the final evaluation
