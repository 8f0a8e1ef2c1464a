"""Faults on the data path of srm_nb.data.tasks (nbs/04d_tasks.ipynb): builds killed part-way, two processes building
the same benchmark at once, and the errors of a wrong data path.

The builders are real processes, forked from this one (so none of them imports torch again), building the real
`sudoku4` task with tiny sizes; the forked process patches its own copy of a function to stop at a chosen step."""
import io, json, multiprocessing, os, signal, sys, time
from pathlib import Path
import numpy as np
import pytest

from srm_nb.data import tasks as T      # where sudoku4_task's build looks generate_sudoku4 up
from srm_nb.data.sudoku import generate_sudoku4

SMALL = dict(n_train=40, n_test=20)     # a build of a few milliseconds
WAITING = 'waiting for another process building the same data'
fork = multiprocessing.get_context('fork')

def stored(build:Path) -> tuple[dict, dict]:
    "The manifest's counts and every array of the build in folder `build`, as {'split/name': array}."
    man = json.loads((build / 'manifest.json').read_text())
    return man['counts'], {f'{s}/{k}': v for s in man['splits'] for k, v in np.load(build / f'{s}.npz').items()}

def same(a:tuple, b:tuple) -> bool:
    "Two `stored` builds hold the same counts and arrays."
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all((a[1][k] == b[1][k]).all() for k in a[1])

def wait_for(cond, what:str, timeout:float=20):
    t0 = time.time()
    while not cond():
        if time.time() - t0 > timeout: raise TimeoutError(what)
        time.sleep(0.01)

def die(): os.kill(os.getpid(), signal.SIGKILL)

@pytest.fixture
def forked():
    "`forked(target, *args)` starts `target(*args)` in a forked process; any still alive at the end of the test are killed."
    procs = []
    def start(target, *args):
        p = fork.Process(target=target, args=args); p.start(); procs.append(p)
        return p
    yield start
    for p in procs:
        if p.is_alive(): p.kill(); p.join()

# ---------------------------------------------------------------- a build killed part-way
def build_until(data_dir, step, marker):
    "In a forked process: build sudoku4 and die at `step` (`build`: wait inside build() to be killed from outside)."
    if step == 'build':
        def slow(*a, **kw): marker.touch(); time.sleep(60)
        T.generate_sudoku4 = slow
    else:
        real, n = np.savez, []
        def savez(file, **arrays):
            n.append(file)
            if step == 'in the first .npz':                     # half the file's bytes on disk, then gone
                buf = io.BytesIO(); real(buf, **arrays); Path(file).write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2]); die()
            if step == 'after the first .npz' and len(n) == 2: die()
            real(file, **arrays)
            if step == 'before the manifest' and len(n) == 2: die()
        np.savez = savez
    T.get_task('sudoku4', data_dir, **SMALL)

@pytest.mark.parametrize('step', ['build', 'in the first .npz', 'after the first .npz', 'before the manifest'])
def test_a_killed_build_leaves_no_partial_cache(tmp_path, step, capsys, forked):
    data, marker = tmp_path / 'data', tmp_path / 'building'
    p = forked(build_until, data, step, marker)
    if step == 'build': wait_for(marker.exists, 'the build to start'); os.kill(p.pid, signal.SIGKILL)
    p.join(20)
    assert p.exitcode == -signal.SIGKILL
    folder = data / 'sudoku4'
    assert not list(folder.rglob('manifest.json')) and not [f for f in folder.iterdir() if not f.name.startswith('.')]
    left = list(folder.glob('.*.tmp'))
    assert len(left) == (step != 'build') and all(f.name.endswith(f'.{p.pid}.tmp') for f in left)    # the dead builder's
    t = T.get_task('sudoku4', data, **SMALL)                          # the next build succeeds, and cleans up
    assert not list(folder.glob('.*.tmp')) and (f'removed {left[0]}' in capsys.readouterr().err if left else True)
    clean = T.get_task('sudoku4', tmp_path / 'clean', **SMALL)
    assert Path(t.meta['dir']).name == Path(clean.meta['dir']).name and same(stored(Path(t.meta['dir'])), stored(Path(clean.meta['dir'])))
    assert (t.train.inputs == clean.train.inputs).all() and (t.test.targets == clean.test.targets).all()

def test_a_killed_build_of_other_parameters_is_cleaned_up(tmp_path, forked):
    p = forked(build_until, tmp_path, 'after the first .npz', None); p.join(20)
    assert p.exitcode == -signal.SIGKILL and len(list((tmp_path / 'sudoku4').glob('.*.tmp'))) == 1
    T.get_task('sudoku4', tmp_path, n_train=30, n_test=20)           # another key: its lock is free, so the leftover goes
    assert not list((tmp_path / 'sudoku4').glob('.*.tmp'))

# ---------------------------------------------------------------- two builders at once
def racing_builder(data_dir, out:Path, i:int):
    "In a forked process: get sudoku4, recording each call of the generator and holding it until `out/go` exists."
    sys.stderr = open(out / f'err{i}', 'w', buffering=1)
    real = T.generate_sudoku4
    def held(*a, **kw):
        with open(out / 'built', 'a') as f: f.write(f'{os.getpid()}\n')
        wait_for((out / 'go').exists, 'the go')
        return real(*a, **kw)
    T.generate_sudoku4 = held
    t = T.get_task('sudoku4', data_dir, **SMALL)
    np.savez(out / f'got{i}.npz', train=t.train.inputs, test=t.test.inputs, test_targets=t.test.targets)
    (out / f'meta{i}.json').write_text(json.dumps(t.meta))

def start_racers(tmp_path, forked, n=2):
    data, out = tmp_path / 'data', tmp_path / 'out'; out.mkdir()
    ps = [forked(racing_builder, data, out, i) for i in range(n)]
    errs = [out / f'err{i}' for i in range(n)]
    wait_for(lambda: all(e.exists() for e in errs) and sum(WAITING in e.read_text() for e in errs) == n - 1 and (out / 'built').exists(),
             'one builder to build while the others wait')
    return ps, out, errs

def test_two_builders_at_once_build_once(tmp_path, forked):
    ps, out, errs = start_racers(tmp_path, forked)
    (out / 'go').touch()
    for p in ps: p.join(20)
    assert [p.exitcode for p in ps] == [0, 0]
    builders = set((out / 'built').read_text().split())
    assert len(builders) == 1 and builders <= {str(p.pid) for p in ps}                 # the build ran in one process
    waiter = next(i for i, e in enumerate(errs) if WAITING in e.read_text())
    assert str(ps[waiter].pid) not in builders and errs[waiter].read_text().count('\n') == 1    # one line, from the one that waited
    got = [dict(np.load(out / f'got{i}.npz')) for i in range(2)]
    assert all((got[0][k] == got[1][k]).all() for k in got[0])
    metas = [json.loads((out / f'meta{i}.json').read_text()) for i in range(2)]
    assert metas[0] == metas[1]                                                        # the waiter loaded the builder's manifest
    clean = T.get_task('sudoku4', tmp_path / 'clean', **SMALL)
    assert (got[0]['train'] == clean.train.inputs).all() and (got[0]['test_targets'] == clean.test.targets).all()
    assert [f.name for f in (tmp_path / 'data' / 'sudoku4').iterdir() if not f.name.endswith('.lock')] == [Path(metas[0]['dir']).name]

def test_the_waiter_builds_when_the_builder_is_killed(tmp_path, forked):
    ps, out, errs = start_racers(tmp_path, forked)
    builder = next(p for p in ps if str(p.pid) in (out / 'built').read_text().split())
    os.kill(builder.pid, signal.SIGKILL); builder.join(20)
    (out / 'go').touch()
    waiter = next(p for p in ps if p is not builder); waiter.join(20)
    assert builder.exitcode == -signal.SIGKILL and waiter.exitcode == 0
    assert set((out / 'built').read_text().split()) == {str(builder.pid), str(waiter.pid)}   # it took over the build
    meta = json.loads((out / f'meta{ps.index(waiter)}.json').read_text())
    assert same(stored(Path(meta['dir'])), stored(Path(T.get_task('sudoku4', tmp_path / 'clean', **SMALL).meta['dir'])))

# ---------------------------------------------------------------- errors of a wrong data path say what layout is expected
LAYOUT = r'<data_dir>/<task>/<key>/ holding manifest.json and one <split>.npz for each split it lists \(train.npz, test.npz, …\)'

def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / 'data'; f.write_text('not a folder')
    with pytest.raises(NotADirectoryError, match=f'data_dir: cannot make {f}/sudoku4 \\(Not a directory\\); expected data_dir to be a '
                                                 f'folder, or a path where one can be made, that keeps each benchmark as {LAYOUT}'):
        T.get_task('sudoku4', f, **SMALL)

@pytest.fixture
def build(tmp_path) -> Path:
    return Path(T.get_task('sudoku4', tmp_path, **SMALL).meta['dir'])

def damaged(build, kind:str) -> str:
    return f'{build}: a damaged build \\({kind}.*\\); expected {LAYOUT}. A build appears only when it is complete, .* delete {build} to build it again'

def test_damaged_build_missing_npz(tmp_path, build):
    (build / 'test.npz').unlink()
    with pytest.raises(FileNotFoundError, match=damaged(build, 'FileNotFoundError: .*test.npz')): T.get_task('sudoku4', tmp_path, **SMALL)

def test_damaged_build_cut_npz(tmp_path, build):
    f = build / 'train.npz'; f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match=damaged(build, 'BadZipFile')): T.get_task('sudoku4', tmp_path, **SMALL)

def test_damaged_build_manifest_not_json(tmp_path, build):
    f = build / 'manifest.json'; f.write_text(f.read_text()[:50])
    with pytest.raises(ValueError, match=damaged(build, 'JSONDecodeError')): T.get_task('sudoku4', tmp_path, **SMALL)

def test_sudoku_csv_path_not_text(tmp_path):
    "The other sudoku-csv path errors (no path, no such path, a folder without the files, a bad header): tests/test_data.py."
    q, a = generate_sudoku4(3)
    f = tmp_path / 'train.npz'; np.savez(f, questions=q, answers=a)
    with pytest.raises(ValueError, match=f"path: {f} is not a text CSV file \\('utf-8' codec can't decode .*\\); expected a folder "
                                         'holding train.csv and test.csv .* or one such CSV file'):
        T.get_task('sudoku-csv', tmp_path / 'data', path=f)
    g = tmp_path / 'hub' / 'train.csv'
    g.parent.mkdir(); g.write_text('question,answer\n'); (g.parent / 'test.csv').write_bytes(b'question,answer\n\xff\xfe\n')
    with pytest.raises(ValueError, match=f"path: {g.parent / 'test.csv'} is not a text CSV file"):
        T.get_task('sudoku-csv', tmp_path / 'data', path=g.parent)
