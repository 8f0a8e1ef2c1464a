"""Slower checks of `srm_nb.lyapunov`: an independent oracle, long chaotic runs, and the probes on the real models."""
import math
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srm_nb.lyapunov import lipschitz_estimate, lyapunov_spectrum, model_step, probe_model, sqrt_weights, scaled_step
from srm_nb.models import build_model
from srm_nb.recursive import segment_loss

torch.set_num_threads(1)
LOG_03 = math.log(0.3)


def henon(s, a=1.4, b=0.3):
    x, y = s.unbind(1)
    return torch.stack([1 - a * x * x + y, b * x], 1)


def test_henon_matches_lyapynov_oracle():
    "Same orbits (same float64 arithmetic), independent QR code: the exponents agree to the transient of the frames."
    lyapynov = pytest.importorskip('lyapynov')
    a, b, warmup, T = 1.4, 0.3, 100, 8000
    x0 = 0.1 * np.random.default_rng(0).random((6, 2))
    f = lambda x, t: np.array([1 - a * x[0] * x[0] + x[1], b * x[0]])
    jac = lambda x, t: np.array([[-2 * a * x[0], 1.0], [b, 0.0]])
    oracle = np.array([lyapynov.LCE(lyapynov.DiscreteDS(x.copy(), 0, f, jac), 2, warmup, T, False) for x in x0])
    ours = lyapunov_spectrum(henon, torch.tensor(x0), k=2, n_steps=T, warmup=warmup, settle=0).numpy()
    assert np.abs(ours - oracle).max() < 1e-3, (ours, oracle)
    assert np.allclose(ours.sum(1), LOG_03, atol=1e-12, rtol=0)
    assert abs(ours[:, 0].mean() - 0.4192) < 0.01


def test_henon_and_logistic_long_runs():
    h0 = 0.1 * torch.rand(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lam = lyapunov_spectrum(henon, h0, k=2, n_steps=4000, warmup=200)
    assert abs(lam[:, 0].mean().item() - 0.4192) < 0.005, lam[:, 0].mean()
    assert abs(lam[:, 1].mean().item() - (-1.6232)) < 0.005, lam[:, 1].mean()
    assert torch.allclose(lam.sum(1), torch.full((64,), LOG_03, dtype=torch.float64), atol=1e-12, rtol=0)
    x0 = torch.rand(64, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lam = lyapunov_spectrum(lambda s: 4 * s * (1 - s), x0, k=1, n_steps=4000, warmup=20)
    assert abs(lam.mean().item() - math.log(2)) < 0.005, lam.mean()


def test_fused_attention_is_probed_through_the_math_backend():
    "Fused SDPA has no forward-mode AD on the CPU; the probes switch to the math backend themselves."
    attn = lambda s: F.scaled_dot_product_attention(s, s, s)
    s = torch.randn(2, 3, 5, 4)
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError):
            torch.func.jvp(attn, (s,), (torch.randn_like(s),))
    lam = lyapunov_spectrum(attn, s, k=3, n_steps=4)
    est = lipschitz_estimate(attn, s, n_pairs=2, opt_steps=2)
    assert torch.isfinite(lam).all() and torch.isfinite(est.local).all() and (est.pairs > 0).all()


# ---------------------------------------------------------------------------------------------------------------
# Real models at CPU size

SMALL = dict(vocab_size=11, seq_len=16, hidden=16, n_prefix=2)
TINY = dict(vocab_size=11, seq_len=9, hidden=8, n_prefix=1)        # state of 2·10·8 = 160 numbers: exact Jacobians are cheap
SRM_CONFIGS = {'joint': dict(), 'joint-damped': dict(alpha=0.6, eta=0.5, kappa=0.95),
               'hierarchical': dict(schedule='hierarchical', n_l=2, eta=2.0)}


def _tokens(B=4, seed=0, seq_len=SMALL['seq_len']):
    return torch.randint(1, 11, (B, seq_len), generator=torch.Generator().manual_seed(seed))


def _train_briefly(model, steps=25, seed=0):
    "A few Adam steps on random puzzles: enough to move the parameters well away from their initialisation."
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 11, (16, model.seq_len), generator=g)
    targets = torch.randint(2, 11, (16, model.seq_len), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(steps):
        loss, _ = segment_loss(model(tokens), targets)
        opt.zero_grad(); loss.backward(); opt.step()
    return model


def _exact_norms(f, u):
    "‖J(u)‖₂ per example from the full Jacobians: the k-th basis vector put in every example gives column k of each."
    n = u[0].numel()
    basis = torch.eye(n, dtype=u.dtype).view(n, 1, *u.shape[1:]).expand(n, *u.shape)
    cols = torch.func.vmap(lambda e: torch.func.jvp(f, (u,), (e,))[1])(basis)        # (n, B, ...)
    return torch.linalg.matrix_norm(cols.reshape(n, len(u), n).permute(1, 2, 0), 2)


def _trajectory_norms(model, tokens, warmup, settle, n_steps):
    "Exact weighted ‖J_t‖ (B, n_steps) at each state of the probe's averaged window, recomputed outside the probe."
    step, z, w = model_step(model, tokens)
    sw = sqrt_weights(w, z)
    f, u, norms = scaled_step(step, sw), z * sw, []
    with torch.no_grad():
        for _ in range(warmup + settle): u = f(u)
        for _ in range(n_steps):
            norms.append(_exact_norms(f, u)); u = f(u)
    return torch.stack(norms, 1)


@pytest.mark.parametrize('trained', [False, True], ids=['random', 'trained'])
@pytest.mark.parametrize('config', list(SRM_CONFIGS))
def test_srm_chain_of_bounds(config, trained):
    """λ₁ ≤ mean log‖J_t‖ ≤ log max‖J_t‖ ≤ log Lip ≤ log K per example, in SRM's weighted norm, with ‖J_t‖ recomputed
    independently; the probe's own norm and pair estimates are lower bounds within a few % of the recomputed norms."""
    torch.manual_seed(0)
    model = build_model('srm', **TINY, **SRM_CONFIGS[config])
    if trained: _train_briefly(model)
    model = model.double().eval()
    tokens, (warmup, settle, n_steps) = _tokens(seq_len=TINY['seq_len']), (8, 8, 12)
    probe = probe_model(model, tokens, k=4, n_steps=n_steps, warmup=warmup, settle=settle, n_pairs=4, opt_steps=8)
    K, tol = model.certified_lipschitz(), 1e-9
    assert probe.certified == K and K < 1
    norms = _trajectory_norms(model, tokens, warmup, settle, n_steps)
    assert (probe.lambda1 <= norms.log().mean(1) + tol).all(), (probe.lambda1, norms.log().mean(1))
    assert (norms.max(1).values <= K * (1 + tol)).all(), (norms.max(), K)            # the certificate holds
    assert (probe.pair_lipschitz <= K * (1 + tol)).all() and probe.empirical <= K * (1 + tol)
    assert (probe.jacobian_norms <= norms * (1 + tol)).all()                          # tracked ‖J_t v‖: a lower estimate
    assert (probe.jacobian_norms >= 0.9 * norms).all(), (probe.jacobian_norms / norms).min()
    assert probe.empirical >= 0.9 * norms.max()
    assert (probe.pair_lipschitz >= 0.95 * norms[:, -1]).all()           # pairs start along the tracked top direction
    # the residuals fall at least as fast as the certificate promises: r_t ≤ K^t r_0
    r = probe.residual
    t = torch.arange(r.shape[1], dtype=r.dtype)
    assert (r <= r[:, :1] * K ** t * (1 + tol)).all()


def test_srm_float32_probe_agrees_with_float64():
    torch.manual_seed(1)
    model = _train_briefly(build_model('srm', **SMALL, alpha=0.8, eta=0.7))
    p32 = probe_model(model, _tokens(), k=3, n_steps=12, warmup=6, settle=6, n_pairs=2, opt_steps=2)
    p64 = probe_model(model, _tokens(), k=3, n_steps=12, warmup=6, settle=6, n_pairs=2, opt_steps=2, dtype=torch.float64)
    assert next(model.parameters()).dtype == torch.float32
    assert torch.allclose(p32.lambdas, p64.lambdas, atol=1e-3), (p32.lambdas - p64.lambdas).abs().max()
    assert torch.allclose(p32.jacobian_norms.double(), p64.jacobian_norms, rtol=1e-3)


@pytest.mark.parametrize('name,kw', [('trm-mlp', dict(l_steps=2, layers=1)),
                                     ('trm-att', dict(l_steps=2, layers=1, n_heads=4)),
                                     ('hrm', dict(l_steps=2, h_layers=1, l_layers=1, n_heads=4, n_prefix=1))])
def test_baselines_probe_runs(name, kw):
    "TRM and HRM go through the same adapter: finite exponents and estimates, no certificate, caller's mode restored."
    torch.manual_seed(0)
    model = build_model(name, **{**SMALL, **kw}).train()
    probe = probe_model(model, _tokens(3), k=4, n_steps=8, warmup=4, settle=4, n_pairs=2, opt_steps=2)
    assert model.training
    assert probe.lambdas.shape == (3, 4) and torch.isfinite(probe.lambdas).all()
    assert (probe.lambdas[:, :-1] >= probe.lambdas[:, 1:]).all()
    assert probe.jacobian_norms.shape == (3, 8) and torch.isfinite(probe.jacobian_norms).all()
    assert (probe.jacobian_norms > 0).all() and (probe.lambda1 <= probe.log_norm + 1e-4).all()
    assert torch.isfinite(probe.pair_lipschitz).all() and (probe.pair_lipschitz > 0).all()
    assert probe.residual.shape == (3, 16) and torch.isfinite(probe.residual).all()
    assert probe.certified == math.inf and probe.metrics()['certified'] is None
    assert math.isfinite(probe.empirical) and probe.empirical >= probe.jacobian_norms.max().item()


def test_probe_of_training_forward_is_refused():
    "Probing `forward` (which detaches its carry) instead of `cycle` must fail loudly, not return λ = −∞."
    model = build_model('trm-mlp', **SMALL, l_steps=1, layers=1).eval()
    tokens = _tokens(2)
    z0 = model.init_state(2)
    with pytest.raises(ValueError, match='detach'):
        lyapunov_spectrum(lambda z: model(tokens, z).z, z0, k=2, n_steps=2)


def test_weights_are_the_models_norm():
    "The adapter's weights broadcast over the halves of z: the weighted norm is ‖h‖² + η‖l‖²."
    model = build_model('srm', **SMALL, eta=0.3)
    _, z, w = model_step(model, _tokens(2))
    z = torch.randn_like(z)
    sw = sqrt_weights(w, z)
    expected = (z[:, 0].pow(2).flatten(1).sum(1) + 0.3 * z[:, 1].pow(2).flatten(1).sum(1)).sqrt()
    assert torch.allclose((sw * z).flatten(1).norm(dim=1), expected)
    assert torch.allclose(scaled_step(lambda v: 2 * v, sw)(z), 2 * z)


def test_stochastic_srm_is_probed_along_one_noise_realisation():
    "σ > 0 (additive noise): every tangent and both points of a pair see the same draw, so the bounds still hold."
    torch.manual_seed(0)
    model = build_model('srm', **SMALL, sigma=0.05)
    probe = probe_model(model, _tokens(3), k=3, n_steps=8, warmup=4, settle=4, n_pairs=2, opt_steps=2)
    assert torch.isfinite(probe.lambdas).all()
    assert (probe.lambda1 <= math.log(model.certified_lipschitz()) + 1e-4).all()
    assert probe.empirical <= model.certified_lipschitz() * (1 + 1e-4)
