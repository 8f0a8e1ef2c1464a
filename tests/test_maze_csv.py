"""The Maze-Hard CSV format (`read_maze_csv`, `write_maze_csv` in nbs/04c_maze.ipynb) and the `maze-csv` task
(nbs/04d_tasks.ipynb), on small files written here from `generate_maze` in the published layout
(source,question,answer,rating; 30×30 grids as 900 characters of `# SGo`), checked against the standard library's
CSV reader; and a few steps of the trainer on such a file."""
import csv, math
import numpy as np
import pytest
import torch

from srm_nb import data as D
from srm_nb.data.maze import MAZE_CHARS, OPEN, PATH, WALL

@pytest.fixture(scope='module')
def mazes():
    "Twelve generated 30×30 mazes: (questions, answers, path lengths)."
    return D.generate_maze(12, seed=7, min_path=40)

def grid_str(ids) -> str: return ''.join(MAZE_CHARS[v - 1] for v in ids)

def csv_rows(path):
    "Data rows of a CSV file as dicts, by the standard library (independent of the reader under test)."
    with open(path, newline='') as f: return list(csv.DictReader(f))

def test_write_then_read_is_exact(tmp_path, mazes):
    q, a, l = mazes
    f = D.write_maze_csv(tmp_path / 'm.csv', q, a, l, source=[f'm{i}' for i in range(len(q))])
    rows = csv_rows(f)
    assert list(rows[0]) == ['source', 'question', 'answer', 'rating'] and [r['source'] for r in rows] == [f'm{i}' for i in range(12)]
    assert [r['question'] for r in rows] == [grid_str(x) for x in q] and all(len(r['answer']) == 900 for r in rows)
    assert [int(r['rating']) for r in rows] == l.tolist()
    q2, a2, r2 = D.read_maze_csv(f)
    assert q2.dtype == a2.dtype == np.int8 and q2.shape == a2.shape == (12, 900)
    assert (q2 == q).all() and (a2 == a).all() and (r2 == l).all()
    g = D.write_maze_csv(tmp_path / 'again.csv', q2, a2, r2, source=[r['source'] for r in rows])
    assert g.read_bytes() == f.read_bytes()                                                     # and back again, byte for byte

def test_columns_by_name(tmp_path, mazes):
    q, a, l = mazes
    f = tmp_path / 'cols.csv'
    with open(f, 'w', newline='') as fh:
        w = csv.writer(fh); w.writerow(['Rating', 'answer', 'comment', ' question '])
        w.writerows([int(r), grid_str(y), 'note, with a comma', grid_str(x)] for x, y, r in zip(q, a, l))
    q2, a2, r2 = D.read_maze_csv(f, max_rows=5)
    assert (q2 == q[:5]).all() and (a2 == a[:5]).all() and (r2 == l[:5]).all()
    assert [len(x) for x in D.read_maze_csv(f, max_rows=0)] == [0, 0, 0]
    for header in ('source,question,rating', 'question,answer,question'):
        f.write_text(header + '\n')
        with pytest.raises(ValueError, match='cols.csv, line 1: expected a header naming the columns question and answer once each'):
            D.read_maze_csv(f)

def test_bad_rows_fail_naming_their_line(tmp_path, mazes):
    q, a, l = mazes
    lines = D.write_maze_csv(tmp_path / 'm.csv', q, a, l).read_text().splitlines()
    wall, path_cell = int(np.flatnonzero(q[3] == WALL)[0]), int(np.flatnonzero(a[3] == PATH)[0])
    def edit(i, field, pos, ch):
        "Data row i with character `pos` of field 1 (question) or 2 (answer) replaced by `ch`."
        f = lines[i + 1].split(','); f[field] = f[field][:pos] + ch + f[field][pos + 1:]; return ','.join(f)
    cases = [(3, edit(3, 1, 5, '##'), 'line 5: question has 901 characters, expected 900'),
             (3, edit(3, 1, path_cell, 'o'), f"line 5: question has character 'o' at position {path_cell}, expected one of '# SG'"),
             (3, edit(3, 2, 0, 'é'), "line 5: answer has character 'é' at position 0, expected one of '# SGo'"),
             (3, edit(3, 2, wall, ' '), "line 5: answer does not keep the question's walls, start and goal"),
             (3, edit(3, 2, path_cell, 'G'), "line 5: answer does not keep the question's walls, start and goal"),
             (3, edit(3, 2, wall, 'o'), "line 5: answer marks a path cell 'o' where the question is not open"),
             (8, lines[9] + ',x', 'line 10: expected 4 fields'),
             (10, lines[11].rsplit(',', 1)[0] + ',1.5', "line 12: rating '1.5' is not an integer")]
    for i, line, msg in cases:
        bad = lines.copy(); bad[i + 1] = line
        (tmp_path / 'bad.csv').write_text('\n'.join(bad) + '\n', encoding='utf-8')
        with pytest.raises(ValueError, match=f'bad.csv, {msg}'): D.read_maze_csv(tmp_path / 'bad.csv')
        assert len(D.read_maze_csv(tmp_path / 'bad.csv', max_rows=i)[0]) == i                   # the rows before it are fine
    with pytest.raises(FileNotFoundError, match='none.csv: no such file. Maze-Hard is on the Hugging Face hub as sapientinc/maze-30x30-hard-1k'):
        D.read_maze_csv(tmp_path / 'none.csv')

def test_write_checks_its_arguments(tmp_path, mazes):
    q, a, l = mazes
    bad_a = a.copy(); bad_a[2, np.flatnonzero(q[2] == WALL)[0]] = OPEN
    for args, msg in (((q, a[:, :-1], l), 'answers: expected an \\(n, 900\\) array of ids 1..5, got shape \\(12, 899\\)'),
                      ((q * 0, a, l), 'questions: expected an \\(n, 900\\) array of ids 1..5'),
                      ((q, a, l[:3]), 'questions, answers, ratings: expected equal lengths, got 12, 12, 3'),
                      ((q, bad_a, l), "answers: row 2: answer does not keep the question's walls")):
        with pytest.raises(ValueError, match=msg): D.write_maze_csv(tmp_path / 'w.csv', *args)

def test_maze_csv_task(tmp_path, mazes):
    q, a, l = mazes
    D.write_maze_csv(tmp_path / 'hub' / 'train.csv', q[:8], a[:8], l[:8]); D.write_maze_csv(tmp_path / 'hub' / 'test.csv', q[8:], a[8:], l[8:])
    t = D.get_task('maze-csv', data_dir=tmp_path / 'data', path=tmp_path / 'hub', n_aug=2)
    assert (t.vocab_size, t.seq_len, len(t.train), len(t.test), t.final_test) == (6, 900, 24, 4, None)
    assert (t.row_ids['train'] == np.arange(8)).all() and (t.row_ids['test'] == np.arange(4)).all()
    assert [grid_str(x) for x in t.test.inputs] == [r['question'] for r in csv_rows(tmp_path / 'hub' / 'test.csv')]
    x, y = t.train[0]
    assert x.dtype == torch.int64 and (x.numpy() == q[0]).all() and (y.numpy() == a[0]).all()
    xa, ya = t.train[8]                                                                         # an augmented copy of maze 0
    assert D.maze_canonical(xa[None].numpy()) == D.maze_canonical(q[:1]) and (ya == PATH).sum() == (a[0] == PATH).sum()
    assert t.meta['counts'] == {'train': 8, 'test': 4} and t.meta['test_in_train_under_symmetry'] == {'test': 0}
    assert t.meta['rating']['train']['mean'] == pytest.approx(l[:8].mean()) and t.meta['csv']['train'].endswith('hub/train.csv')
    one = D.write_maze_csv(tmp_path / 'all.csv', q, a, l)
    t1 = D.get_task('maze-csv', data_dir=tmp_path / 'data', path=one, n_train=7, n_test=2, seed=3, n_aug=0)
    tr, te, fin = (t1.row_ids[s] for s in ('train', 'test', 'final_test'))
    assert len(tr) == 7 and len(te) == 2 and sorted([*tr, *fin]) == list(range(12)) and set(te) <= set(fin)
    assert (t1.train.inputs == q[tr]).all() and (t1.test.targets == a[te]).all() and len(t1.train) == 7
    again = D.get_task('maze-csv', data_dir=tmp_path / 'other', path=one, n_train=7, n_test=2, seed=3)
    assert all((again.row_ids[s] == t1.row_ids[s]).all() for s in t1.row_ids)                  # the seed names the subsets

def test_maze_csv_task_says_what_belongs_where(tmp_path, mazes):
    expected = ('expected a folder holding train.csv and test.csv \\(the layout of the Maze-Hard dataset: columns '
                'source,question,answer,rating\\) or one such CSV file')
    with pytest.raises(ValueError, match="path: the 'maze-csv' task needs path=<a folder holding train.csv and test.csv .*huggingface-cli download"):
        D.get_task('maze-csv', data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=f'{expected}; got {tmp_path}/none, which does not exist. Maze-Hard is on the Hugging Face hub'):
        D.get_task('maze-csv', data_dir=tmp_path, path=tmp_path / 'none')
    d = tmp_path / 'dl'; D.write_maze_csv(d / 'test.csv', *mazes)
    with pytest.raises(FileNotFoundError, match=f'{expected}; got {d}, a folder without train.csv \\(it holds test.csv; to split one CSV'):
        D.get_task('maze-csv', data_dir=tmp_path, path=d)
    with pytest.raises(ValueError, match='n_train=None: with one CSV file every row would be a training row'):
        D.get_task('maze-csv', data_dir=tmp_path, path=d / 'test.csv')
    (tmp_path / 'm.gz').write_bytes(b'\x1f\x8b\x08\x00\xff\xff')
    with pytest.raises(ValueError, match=f'path: .*m.gz is not a text CSV file .*; {expected}'):
        D.get_task('maze-csv', data_dir=tmp_path, path=tmp_path / 'm.gz', n_train=1)
    (d / 'train.csv').write_text('source,question,solution,rating\n')                        # a Sudoku-like header, wrong names
    with pytest.raises(ValueError, match='train.csv, line 1: expected a header naming the columns question and answer once each \\(Maze-Hard'):
        D.get_task('maze-csv', data_dir=tmp_path, path=d)

def test_trainer_runs_on_a_maze_csv(tmp_path, mazes):
    "`-p task maze-csv -y 'task_kw: {path: …}'`, tiny: a few SRM steps on 900-token mazes, finite losses, an evaluation."
    from srm_nb.train import Trainer, read_metrics
    torch.set_default_dtype(torch.float32)
    q, a, l = mazes
    D.write_maze_csv(tmp_path / 'csv' / 'train.csv', q[:8], a[:8], l[:8]); D.write_maze_csv(tmp_path / 'csv' / 'test.csv', q[8:], a[8:], l[8:])
    t = Trainer(model='srm', task='maze-csv', task_kw=dict(path=str(tmp_path / 'csv'), n_aug=1), hidden=8, cycles=1, n_sup=1,
                batch_size=4, steps=3, warmup=1, log_every=1, eval_every=0, ckpt_every=0, eval_n=4, eval_batch_size=4, lyapunov_n=0,
                data_dir=str(tmp_path / 'data'), out_dir=str(tmp_path / 'run'), threads=1)
    assert (t.task.name, t.task.seq_len, t.task.vocab_size, len(t.task.train)) == ('maze-csv', 900, 6, 16)
    summary = t.fit()
    assert summary['steps'] == 3 and 0 <= summary['exact_accuracy'] <= 1
    losses = [r['loss'] for r in read_metrics(t.out_dir) if r['kind'] == 'train']
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
