"""Mixed precision: the stablemax loss at edge logits, weights built outside autocast, and every model training under
CPU bf16 autocast (the numerics a GPU run uses) with finite losses and gradients.

The stablemax tests compare against the definition written out per element; the autocast tests compare each layer's
weight built under autocast with the one built without it (bit for bit); the training tests run a few optimiser
steps of every model, layer, schedule and gradient mode at tiny sizes and check every loss and gradient is finite.
"""
import math
import pytest
import torch
from srm_nb.gain import BlockGain
from srm_nb.lipschitz import LINEAR_LAYERS, SandwichLinear, frozen_weights, make_linear
from srm_nb.models import build_model
from srm_nb.recursive import segment_loss, stablemax_cross_entropy

torch.set_num_threads(1)
BF16 = dict(device_type='cpu', dtype=torch.bfloat16)
EDGE = [1.0, -1.0, 0.0, 1e4, -1e4, 0.5, -0.5, 2.0]      # 1.0: the unused branch 1/(1 − x) is 1/0 there


def _s(v): return 1 / (1 - v) if v < 0 else v + 1
def _ds(v): return 1 / (1 - v) ** 2 if v < 0 else 1.0


def reference_loss_and_grad(row, t):
    "Stablemax CE of one row of logits at target t, and its gradient, from the definition (Python floats)."
    s = [_s(v) for v in row]
    total = sum(s)
    grad = [_ds(v) / total - (_ds(v) / s[i] if i == t else 0.0) for i, v in enumerate(row)]
    return -math.log(s[t] / total), grad


def edge_logits(dtype, seed=0):
    "A (6, 8) batch of logits, each row a permutation of the edge values (rounded to `dtype`: 1e4 is 9984 in bf16), and targets."
    g = torch.Generator().manual_seed(seed)
    rows = torch.stack([torch.tensor(EDGE)[torch.randperm(8, generator=g)] for _ in range(6)])
    return rows.to(dtype), torch.randint(0, 8, (6,), generator=g)


# ---------------------------------------------------------------- stablemax at edge logits
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
def test_stablemax_loss_and_gradient_match_the_definition(dtype):
    logits, targets = edge_logits(dtype)
    assert (logits == 1).any() and logits.dtype == dtype
    logits.requires_grad_(True)
    loss = stablemax_cross_entropy(logits, targets)
    loss.sum().backward()
    assert loss.dtype == torch.float64 and torch.isfinite(logits.grad).all(), logits.grad
    for i, (row, t) in enumerate(zip(logits.detach().double().tolist(), targets.tolist())):
        ref, ref_grad = reference_loss_and_grad(row, t)
        assert loss[i].item() == pytest.approx(ref, rel=1e-12)
        tol = 1e-12 if dtype == torch.float64 else 1e-6 if dtype == torch.float32 else 1e-2   # the grad is cast to `dtype`
        assert logits.grad[i].double().tolist() == pytest.approx(ref_grad, rel=tol, abs=tol * 1e-4)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_masked_targets_give_zero_loss_and_zero_gradient(dtype):
    logits, targets = edge_logits(dtype, seed=1)
    targets[::2] = -100
    logits.requires_grad_(True)
    loss = stablemax_cross_entropy(logits, targets)
    loss.sum().backward()
    assert torch.all(loss[::2] == 0) and torch.all(logits.grad[::2] == 0)
    assert torch.all(loss[1::2] > 0) and torch.isfinite(logits.grad).all() and logits.grad[1::2].abs().sum() > 0


def test_all_masked_segment_loss_is_finite():
    "A segment whose every target is ignored: zero language-model loss and no NaN from 0/0."
    from srm_nb.recursive import SegmentOutput
    logits = torch.ones(2, 5, 11, requires_grad=True)           # every logit exactly 1.0
    out = SegmentOutput(torch.zeros(2, 2, 5, 4), logits, torch.zeros(2, 2, requires_grad=True))
    loss, m = segment_loss(out, torch.full((2, 5), -100))
    loss.backward()
    assert m['lm_loss'] == 0 and torch.isfinite(loss) and torch.all(logits.grad == 0)


# ---------------------------------------------------------------- weights are built outside autocast
def _randomised_layer(name, i=12, o=10, seed=0):
    torch.manual_seed(seed)
    layer = make_linear(name, i, o).eval()                     # eval: the power iteration does not move u, v
    with torch.no_grad():
        for p in layer.parameters(): p.normal_()
    return layer


@pytest.mark.parametrize('name', sorted(LINEAR_LAYERS))
def test_weight_built_under_autocast_is_the_float32_weight(name):
    layer = _randomised_layer(name)
    W = layer.effective_weight()
    with torch.autocast(**BF16):
        built, y = layer.built_weight(), layer(torch.randn(3, 12))
        with frozen_weights(layer): frozen = layer._frozen_weight
    assert built.dtype == torch.float32 and torch.equal(built, W)
    assert frozen is None if name == 'sandwich' else torch.equal(frozen, W)   # Sandwich has its own forward: not frozen
    assert y.dtype == torch.bfloat16                            # the application does run in bf16


@pytest.mark.parametrize('name', ['aol', 'sandwich', 'cayley', 'spectral'])
def test_weight_built_inside_autocast_would_differ(name):
    "The negative control: building the same weight with autocast on rounds its products, so the test above can fail."
    layer = _randomised_layer(name)
    with torch.autocast(**BF16): inside = layer.effective_weight()
    assert not torch.equal(inside.float(), layer.effective_weight())


def test_sandwich_relu_factors_and_gain_operator_are_float32_under_autocast():
    layer = SandwichLinear(6, 4, relu=True)
    with torch.no_grad(): layer.weight.normal_()
    x = torch.randn(5, 6)
    with torch.autocast(**BF16): y = layer(x)
    assert y.dtype == torch.bfloat16 and torch.allclose(y.float(), layer(x), rtol=0.05, atol=0.05)
    gain = BlockGain(6, 0.9, floor=0.2)
    with torch.no_grad():
        for p in gain.parameters(): p.normal_()
    ref = gain.operator()
    with torch.autocast(**BF16): op = gain.operator()
    assert all(torch.equal(a, b) and a.dtype == torch.float32 for a, b in zip((op.N, op.U_HL, op.U_LH), (ref.N, ref.U_HL, ref.U_LH)))


# ---------------------------------------------------------------- every model trains under CPU bf16 autocast
SRM_SMALL = dict(hidden=16, seq_len=9, n_prefix=2, cycles=4)
CONFIGS = {
    **{f'srm-{layer}': ('srm', dict(SRM_SMALL, layer=layer)) for layer in sorted(LINEAR_LAYERS)},
    'srm-relu-damped-learned-kappa': ('srm', dict(SRM_SMALL, alpha=0.5, eta=2.0, act='relu', mean_center=True, learn_kappa=True)),
    'srm-one-step': ('srm', dict(SRM_SMALL, grad='one-step')),
    'srm-implicit': ('srm', dict(SRM_SMALL, grad='implicit', max_iter=8, adjoint_max_iter=8)),
    'srm-hier-last': ('srm', dict(SRM_SMALL, schedule='hierarchical', cycles=2, n_l=2)),
    'srm-hier-one-step': ('srm', dict(SRM_SMALL, schedule='hierarchical', cycles=2, n_l=2, grad='one-step')),
    'srm-hier-implicit': ('srm', dict(SRM_SMALL, schedule='hierarchical', cycles=2, n_l=2, grad='implicit', max_iter=8,
                                      adjoint_max_iter=8)),
    'srm-sudoku': ('srm', dict(hidden=16, cycles=3)),
    'trm-mlp': ('trm-mlp', dict(hidden=16, cycles=2, l_steps=2)),
    'trm-att': ('trm-att', dict(hidden=16, n_heads=2, cycles=2, l_steps=2)),
    'hrm': ('hrm', dict(hidden=16, seq_len=9, n_heads=2, h_layers=1, l_layers=1)),
}


def train_under_autocast(name, kw, steps=3, batch=4, seed=0):
    "`steps` AdamW steps under CPU bf16 autocast with a streamed carry, as the trainer runs them; the losses."
    torch.manual_seed(seed)
    model = build_model(name, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, model.vocab_size, (batch, model.seq_len), generator=g)
    targets = torch.randint(1, model.vocab_size, (batch, model.seq_len), generator=g)
    targets[0, :3] = -100                                        # some ignored cells
    z, losses = None, []
    for _ in range(steps):
        with torch.autocast(**BF16):
            out = model(tokens, z, last_step=torch.zeros(batch, dtype=torch.bool))   # HRM's Q-continue target uses it
            loss, _ = segment_loss(out, targets)
            if hasattr(model, 'kappa_penalty'): loss = loss + model.kappa_penalty()
        assert out.logits.dtype == torch.bfloat16               # autocast really was on
        assert torch.isfinite(loss), loss
        opt.zero_grad(); loss.backward()
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"non-finite gradients in {bad}"
        opt.step()
        z, losses = out.z, losses + [loss.item()]
        assert z.dtype == torch.float32 and torch.isfinite(z).all()
    return model, losses


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_every_model_trains_under_bf16_autocast(config):
    name, kw = CONFIGS[config]
    model, losses = train_under_autocast(name, kw)
    assert all(math.isfinite(l) for l in losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize('dtype', [None, torch.bfloat16])
def test_a_logit_of_exactly_one_leaves_every_gradient_finite(dtype):
    """The reported `gradient of parameter 'embed.puzzle' is not finite`: one logit of exactly 1.0 in a batch made
    every gradient NaN (the first parameter named is the puzzle embedding). fp32 (None) and bf16 autocast."""
    torch.manual_seed(0)
    model = build_model('trm-mlp', hidden=16, cycles=2, l_steps=2)
    model.head.register_forward_hook(lambda m, i, out: out - out.detach()[0, 0, 0] + 1)   # shift: one logit is 1.0
    tokens = torch.randint(1, 11, (2, 81), generator=torch.Generator().manual_seed(0))
    with torch.autocast(**BF16, enabled=dtype is not None):
        out = model(tokens)
        loss, _ = segment_loss(out, tokens)
    assert out.logits[0, 0, 0] == 1.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.embed.puzzle.grad.abs().sum() > 0
