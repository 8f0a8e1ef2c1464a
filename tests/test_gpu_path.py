"""The GPU path, checked on the CPU: bf16 autocast trains every model, `torch.compile` agrees with eager, and a
training step never makes the host wait for the device."""
import math
import pytest, torch
from torch.overrides import TorchFunctionMode
from srm_nb.train import Trainer, read_metrics

TINY = dict(task='sudoku-easy', hidden=16, cycles=2, n_sup=3, batch_size=8, n_train=64, n_test=16, n_blanks=6,
            warmup=4, lr=1e-3, log_every=5, eval_every=0, ckpt_every=0, eval_n=8, lyapunov_n=2, resume=False)
MODELS = {'srm': {}, 'trm-mlp': dict(model_kw=dict(l_steps=2)), 'trm-att': dict(model_kw=dict(l_steps=2)),
          'hrm': dict(cycles=1, model_kw=dict(h_layers=1, l_layers=1, l_steps=2))}

@pytest.fixture(scope='module')
def data_dir(tmp_path_factory): return str(tmp_path_factory.mktemp('data'))

@pytest.fixture(autouse=True)
def _one_thread(): torch.set_num_threads(1)

@pytest.mark.parametrize('model', sorted(MODELS))
def test_every_model_trains_30_steps_in_bf16_on_the_cpu(model, data_dir, tmp_path):
    t = Trainer(model=model, precision='bf16', steps=30, data_dir=data_dir, out_dir=str(tmp_path / 'run'), **{**TINY, **MODELS[model]})
    assert t.precision == 'bf16'
    summary = t.fit()
    losses = [r['loss'] for r in read_metrics(t.out_dir) if r['kind'] == 'train']
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert summary['precision'] == 'bf16' and summary['steps'] == 30 and math.isfinite(summary['cell_accuracy'])
    assert all(p.dtype == torch.float32 for p in t.model.parameters())          # master weights stay float32

def _losses(model, compile, data_dir, tmp_path, steps=4):
    torch.manual_seed(0)
    t = Trainer(model=model, compile=compile, steps=steps, data_dir=data_dir, out_dir=str(tmp_path / f'c{compile}'),
                **{**TINY, **MODELS[model], 'log_every': 1, 'lyapunov_n': 0})
    return [t.train_step()['loss'].item() for _ in range(steps)]

@pytest.mark.parametrize('model', ['srm', 'trm-mlp'])
def test_compiled_training_agrees_with_eager(model, data_dir, tmp_path):
    "Inductor on the CPU: the first steps' losses agree with eager to 1e-4 relative (float32; reassociated sums)."
    eager, compiled = _losses(model, False, data_dir, tmp_path), _losses(model, True, data_dir, tmp_path)
    assert eager != _losses(model, False, data_dir, tmp_path, 3) + [None]      # the losses move: the test can tell steps apart
    for a, b in zip(eager, compiled): assert abs(a - b) <= 1e-4 * abs(a), (eager, compiled)

class HostSyncs(TorchFunctionMode):
    "Records every call that reads a tensor's value on the host (on CUDA each one would wait for the device)."
    READS = {'item', 'tolist', '__bool__', '__int__', '__float__', '__index__', 'nonzero', 'cpu', 'numpy', 'any', 'all'}
    def __init__(self): super().__init__(); self.calls = []
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, '__name__', '')
        out = func(*args, **(kwargs or {}))
        if name in self.READS and not (name in ('any', 'all') and isinstance(out, torch.Tensor)): self.calls.append(name)
        return out

@pytest.mark.parametrize('model', sorted(MODELS))
def test_a_training_step_reads_nothing_back_from_the_device(model, data_dir, tmp_path):
    t = Trainer(model=model, steps=10, data_dir=data_dir, out_dir=str(tmp_path / 'run'), **{**TINY, **MODELS[model]})
    t.train_step()                                          # the first step builds lazily-created state
    with HostSyncs() as spy: t.train_step(); t.train_step()
    assert spy.calls == [], spy.calls
    with HostSyncs() as spy: t.guard.check()        # the one read, done only when logging or checkpointing
    assert spy.calls == ['__bool__']
