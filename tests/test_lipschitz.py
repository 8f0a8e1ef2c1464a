"""Heavy checks of srm_nb.lipschitz: every certificate against the exact Jacobian norm, under adversarial weights.

The quick versions live in nbs/00_lipschitz.ipynb; these run more shapes, structured weights, 200 Adam steps of
gradient ascent on the Jacobian norm, compositions on (B, S, D) inputs, and checks that the check itself can fail.
All in float64.
"""
import math
import pytest
import torch
import torch.nn as nn

from srm_nb.lipschitz import (AOLLinear, AlongTokens, CayleyLinear, ConvexResidual, MaxMin, MeanCenter, PlainLinear,
                              SandwichLinear, SpectralNormLinear, adversarial_jacobian_norm, aol_weight, cayley,
                              jacobian_norm, lipschitz_bound, make_linear)

TOL = 1e-9
SHAPES = [(6, 6), (8, 5), (5, 8)]        # (in, out): square, wide-to-narrow, narrow-to-wide
CERTIFIED = {'aol': lambda i, o: AOLLinear(i, o), 'cayley': lambda i, o: CayleyLinear(i, o),
             'sandwich': lambda i, o: SandwichLinear(i, o), 'sandwich-relu': lambda i, o: SandwichLinear(i, o, relu=True)}


@pytest.fixture(autouse=True)
def _float64_one_thread():
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64); torch.set_num_threads(1); torch.manual_seed(0)
    yield
    torch.set_default_dtype(old_dtype); torch.set_num_threads(old_threads)


def _randomise(module):
    "Every parameter ~ N(0, 1): far from the identity-like init."
    with torch.no_grad():
        for p in module.parameters(): p.normal_()
    return module


def _structured(shape):
    "All-ones, rank-1 and zero-column raw weights of `shape`."
    rank1 = torch.outer(torch.randn(shape[0]), torch.randn(shape[1]))
    zero_col = torch.randn(shape); zero_col[:, 1] = 0
    return {'ones': torch.ones(shape), 'rank1': rank1, 'zero-col': zero_col}


# ---------------------------------------------------------------- single layers

@pytest.mark.parametrize('name', CERTIFIED)
@pytest.mark.parametrize('shape', SHAPES)
def test_random_and_structured_weights_respect_bound(name, shape):
    layer = CERTIFIED[name](*shape)
    x = torch.randn(2, shape[0])
    assert lipschitz_bound(layer) == 1.0
    _randomise(layer)
    assert jacobian_norm(layer, x) <= 1 + TOL
    for kind, W in _structured(tuple(layer.weight.shape)).items():
        with torch.no_grad(): layer.weight.copy_(W)
        n = jacobian_norm(layer, x)
        assert torch.isfinite(n) and n <= 1 + TOL, (kind, n)


@pytest.mark.parametrize('name', CERTIFIED)
@pytest.mark.parametrize('shape', SHAPES)
def test_adversarial_weights_respect_bound(name, shape):
    layer = _randomise(CERTIFIED[name](*shape))
    worst = adversarial_jacobian_norm(layer, torch.randn(1, shape[0]), steps=200, lr=0.05)
    assert worst <= lipschitz_bound(layer) + TOL
    assert worst > 0.99         # the ascent has teeth: it drives every certified layer to its (tight) bound


@pytest.mark.parametrize('name', ['aol', 'cayley', 'sandwich'])
def test_jacobian_of_linear_layer_is_effective_weight(name):
    layer = _randomise(CERTIFIED[name](5, 7))
    J = torch.func.jacrev(layer)(torch.randn(5))
    assert torch.allclose(J, layer.effective_weight(), atol=1e-12)
    assert torch.allclose(jacobian_norm(layer, torch.randn(5)), torch.linalg.matrix_norm(layer.effective_weight(), 2))


def test_aol_matches_independent_formula():
    W = torch.randn(7, 5)
    G = W.T.numpy() @ W.numpy()
    d = 1 / (abs(G).sum(1) + 1e-12) ** 0.5
    assert torch.allclose(aol_weight(W), torch.from_numpy(W.numpy() * d[None, :]), atol=1e-13)


def test_aol_backward_matches_autograd_of_formula():
    W = torch.randn(6, 4, requires_grad=True)
    assert torch.autograd.gradcheck(aol_weight, (W,))
    ref = W.detach().clone().requires_grad_()
    g = torch.randn(6, 4)
    (aol_weight(W) * g).sum().backward()
    (ref * ((ref.T @ ref).abs().sum(1) + 1e-12).rsqrt() * g).sum().backward()
    assert torch.allclose(W.grad, ref.grad, atol=1e-12)


@pytest.mark.parametrize('shape', SHAPES)
def test_identity_init_is_exact(shape):
    i, o = shape
    x = torch.randn(3, i)
    expect = x @ torch.eye(o, i).T
    aol = AOLLinear(i, o)
    assert torch.allclose(aol.effective_weight(), aol.weight, rtol=1e-10, atol=0)      # AOL leaves the start unchanged
    if o >= i: assert torch.allclose(aol(x), expect, rtol=1e-10, atol=0)                # identity map (padded)
    Q = CayleyLinear(i, o).effective_weight()
    assert torch.equal(Q, torch.eye(o, i))
    assert torch.allclose(SandwichLinear(i, o)(x), expect, atol=1e-10)
    assert torch.allclose(SandwichLinear(i, o, relu=True)(x), torch.relu(expect), atol=1e-10)


@pytest.mark.parametrize('shape', SHAPES)
def test_cayley_is_exactly_semi_orthogonal(shape):
    layer = _randomise(CayleyLinear(*shape))
    Q = layer.effective_weight()
    G = Q.T @ Q if Q.shape[0] >= Q.shape[1] else Q @ Q.T
    assert torch.allclose(G, torch.eye(min(shape)), atol=1e-10)
    assert torch.allclose(torch.linalg.svdvals(Q), torch.ones(min(shape)), atol=1e-10)


def test_sandwich_factors_are_a_cayley_pair():
    layer = _randomise(SandwichLinear(5, 7, relu=True))
    A, B = layer.factors()
    assert A.shape == (7, 7) and B.shape == (7, 5)
    assert torch.allclose(A @ A.T + B @ B.T, torch.eye(7), atol=1e-10)
    with pytest.raises(ValueError, match='relu=False'): layer.effective_weight()


@pytest.mark.parametrize('name', list(CERTIFIED) + ['spectral', 'plain'])
def test_gradients_reach_raw_parameters(name):
    layer = CERTIFIED[name](5, 4) if name in CERTIFIED else make_linear(name, 5, 4)
    layer(torch.randn(8, 5) + 0.5).pow(2).sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, (name, pname)


def test_orthogonium_aol_agrees():
    orthogonium = pytest.importorskip('orthogonium.layers.conv.AOL')
    for out, inp in [(6, 4), (5, 5)]:             # orthogonium rescales the other side when out < in
        conv = orthogonium.AOLConv2D(inp, out, 1, bias=False).double()
        W = torch.randn(out, inp)
        with torch.no_grad(): conv.parametrizations.weight.original.copy_(W[:, :, None, None])
        assert torch.allclose(conv.weight[:, :, 0, 0], aol_weight(W), atol=1e-10)


def test_orthogonium_maxmin_pairing_agrees():
    "Same pairing convention (first half vs second half) as orthogonium's MaxMin, applied to the last axis."
    act = pytest.importorskip('orthogonium.layers')
    x = torch.randn(3, 4, 10)
    assert torch.equal(MaxMin()(x), act.MaxMin(axis=-1)(x))
    assert not torch.equal(MaxMin()(x), act.MaxMin()(x))        # its default axis=1 would pair tokens of (B, S, D)


# ---------------------------------------------------------------- the check can fail

class _AOLNoAbs(AOLLinear):
    "Wrong: Gram row sums without the absolute value."
    def effective_weight(self):
        W = self.weight
        return W * (W.T @ W).sum(1).clamp_min(1e-12).rsqrt()

class _AOLRowsOnColumns(AOLLinear):
    "Wrong: the scale computed from |WWᵀ| (the row side) applied to the columns."
    def effective_weight(self):
        W = self.weight
        return W * ((W @ W.T).abs().sum(1) + 1e-12).rsqrt()

@pytest.mark.parametrize('wrong', [_AOLNoAbs, _AOLRowsOnColumns])
def test_adversarial_check_catches_wrong_aol(wrong):
    layer = _randomise(wrong(6, 6))
    assert adversarial_jacobian_norm(layer, torch.randn(1, 6), steps=200) > 1.05


def test_spectral_norm_fresh_estimate_underbounds():
    "σ̂ = uᵀWv ≤ σ_max for unit u, v: after one power-iteration step ‖W/σ̂‖ > 1 for a generic W."
    layer = SpectralNormLinear(8, 8)
    with torch.no_grad(): layer.weight.copy_(torch.randn(8, 8))
    norm = torch.linalg.matrix_norm(layer.effective_weight(), 2)
    assert norm > 1.01 and lipschitz_bound(layer) == math.inf


def test_spectral_norm_stale_estimate_underbounds():
    "Converged in training, then the weight moves and the layer is used in eval mode: the stale σ̂ under-bounds."
    layer = SpectralNormLinear(8, 8, n_power_iterations=50)
    with torch.no_grad(): layer.weight.copy_(torch.randn(8, 8))
    assert torch.linalg.matrix_norm(layer.effective_weight(), 2).item() == pytest.approx(1, abs=1e-6)
    U, sv, Vh = torch.linalg.svd(layer.weight.detach())
    with torch.no_grad(): layer.weight.add_(2 * sv[0] * torch.outer(U[:, -1], Vh[-1]))   # the weakest direction grows
    layer.eval()
    assert torch.linalg.matrix_norm(layer.effective_weight(), 2) > 1.5


def test_adversarial_check_catches_spectral_norm():
    layer = _randomise(SpectralNormLinear(6, 6))
    assert adversarial_jacobian_norm(layer, torch.randn(1, 6), steps=50) > 1.05


def test_adversarial_check_catches_plain_residual():
    "x + f(x) with a 1-Lipschitz f is not 1-Lipschitz (LipsFormer-style residuals neither): ConvexResidual is needed."
    class PlainResidual(nn.Module):
        def __init__(self): super().__init__(); self.f = AOLLinear(6, 6)
        def forward(self, x): return x + self.f(x)
    assert adversarial_jacobian_norm(_randomise(PlainResidual()), torch.randn(1, 6), steps=100) > 1.5


# ---------------------------------------------------------------- compositions

def _mixer(S, D, t=0.5):
    "An MLP-Mixer-like block on (B, S, D): token mixing then channel mixing, convex residuals, MaxMin, MeanCenter."
    tokens = ConvexResidual(AlongTokens(nn.Sequential(AOLLinear(S, 2 * S), MaxMin(), CayleyLinear(2 * S, S))), t)
    channels = ConvexResidual(nn.Sequential(SandwichLinear(D, 2 * D), MaxMin(), AOLLinear(2 * D, D), MeanCenter()), t)
    return nn.Sequential(tokens, channels)

COMPOSITIONS = {
    'seq-maxmin': (lambda: nn.Sequential(AOLLinear(6, 8), MaxMin(), CayleyLinear(8, 6), nn.ReLU(), SandwichLinear(6, 4)), (1, 6)),
    'residual': (lambda: ConvexResidual(nn.Sequential(SandwichLinear(6, 6, relu=True), AOLLinear(6, 6)), t=0.7), (1, 6)),
    'sigmoid': (lambda: ConvexResidual(nn.Sequential(AOLLinear(6, 6), nn.Sigmoid()), t=0.5), (1, 6)),   # bound 0.625
    'along-tokens': (lambda: AlongTokens(nn.Sequential(CayleyLinear(4, 6), MaxMin(), AOLLinear(6, 3))), (1, 4, 5)),
    'mixer': (lambda: _mixer(4, 6), (1, 4, 6)),
}

@pytest.mark.parametrize('name', COMPOSITIONS)
def test_composition_respects_bound(name):
    build, shape = COMPOSITIONS[name]
    block = _randomise(build())
    bound = lipschitz_bound(block)
    assert bound <= 1.0
    assert jacobian_norm(block, torch.randn(shape)) <= bound + TOL          # full Jacobian over the flattened S×D state
    worst = adversarial_jacobian_norm(block, torch.randn(shape), steps=200, lr=0.05)
    assert 0.9 * bound < worst <= bound + TOL, (name, worst, bound)


def test_along_tokens_has_the_token_matrix_norm():
    "On the S×D state, a linear token mixer M acts as M ⊗ I_D: same singular values as M."
    S, D = 5, 3
    mix = _randomise(PlainLinear(S, S, bias=False))
    J = torch.func.jacrev(AlongTokens(mix))(torch.randn(S, D)).reshape(S * D, S * D)
    M = mix.effective_weight()
    assert torch.allclose(J, torch.kron(M, torch.eye(D)), atol=1e-12)
    assert torch.allclose(torch.linalg.matrix_norm(J, 2), torch.linalg.matrix_norm(M, 2))
    assert lipschitz_bound(AlongTokens(mix)) == math.inf and lipschitz_bound(AlongTokens(AOLLinear(S, S))) == 1.0


def test_convex_residual_bound_formula():
    f = nn.Sequential(AOLLinear(4, 4), nn.Sigmoid())
    for t in [0.0, 0.3, 1.0]:
        assert lipschitz_bound(ConvexResidual(f, t)) == pytest.approx((1 - t) + t * 0.25)
    assert lipschitz_bound(ConvexResidual(PlainLinear(4, 4), 0.2)) == math.inf


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('name', ['aol', 'sandwich', 'cayley', 'spectral', 'plain'])
def test_bad_sizes_and_inputs(name):
    for bad in [0, -1, 3.0, None]:
        with pytest.raises(ValueError, match='in_features'): make_linear(name, bad, 4)
        with pytest.raises(ValueError, match='out_features'): make_linear(name, 4, bad)
    with pytest.raises(ValueError, match=r'\(\.\.\., 4\).*\(2, 3\)'): make_linear(name, 4, 2)(torch.randn(2, 3))


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="'aol'.*'spectral'.*'nope'"): make_linear('nope', 3, 3)
    for t in [-0.1, 1.01, float('nan'), '0.5']:
        with pytest.raises(ValueError, match=r'\[0, 1\]'): ConvexResidual(nn.Identity(), t)
    with pytest.raises(ValueError, match='even'): MaxMin()(torch.randn(3, 5))
    with pytest.raises(ValueError, match='shape'): ConvexResidual(AOLLinear(4, 3))(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r'\(\.\.\., S, D\)'): AlongTokens(nn.Identity())(torch.randn(4))
    with pytest.raises(ValueError, match='2-D'): cayley(torch.randn(2, 3, 4))


def test_unknown_modules_are_not_certified():
    for m in [nn.Linear(3, 3), nn.LayerNorm(3), nn.RMSNorm(3), nn.GELU(), nn.Dropout(0.1), nn.ModuleList(),
              type('MyReLU', (nn.ReLU,), {})()]:
        assert lipschitz_bound(m) == math.inf, m
    assert lipschitz_bound(nn.Sequential()) == 1.0
    assert lipschitz_bound(nn.Sequential(nn.Linear(3, 3), MaxMin())) == math.inf
