"""Heavy checks of srm_nb.attention: the certified bound of LipschitzAttention against exact Jacobians and secants.

The quick versions live in nbs/00a_attention.ipynb; these run more shapes and temperatures, structured inputs,
300 Adam steps of ascent on the exact Jacobian norm and on secant ratios (parameters and inputs both move), the
lemma the bound rests on, a negative control the same search must break (plain dot-product attention), mixed
precision and forward-mode AD, and SRM with `mixer='attention'`: certified K < 1, below it under the Lyapunov probes,
and a 20-step training run. Float64 except the bf16 and training tests.
"""
import math
import pytest
import torch

from srm_nb.attention import DotProductAttention, LipschitzAttention, attention_bound, capped_normalize
from srm_nb.lipschitz import adversarial_jacobian_norm, frozen_weights, jacobian_norm, lipschitz_bound
from srm_nb.lyapunov import probe_model
from srm_nb.models import build_model
from srm_nb.recursive import segment_loss
from srm_nb.srm import SRM, step_jacobian

TOL = 1e-9
CERTIFIED = ('aol', 'cayley', 'sandwich')


@pytest.fixture(autouse=True)
def _float64_one_thread():
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64); torch.set_num_threads(1); torch.manual_seed(0)
    yield
    torch.set_default_dtype(old_dtype); torch.set_num_threads(old_threads)


def _randomise(module, scale=1.0):
    "Every parameter ~ scale·N(0, 1): far from the identity-like start."
    with torch.no_grad():
        for p in module.parameters(): p.normal_(0, scale)
    return module


def _structured_inputs(S, D):
    "Inputs where attention is at its edges: zero, all tokens equal, all at the cap's radius, one huge token, tied scores."
    r = math.sqrt(D)
    same = torch.randn(D).expand(S, D).clone()
    at_cap = torch.randn(S, D); at_cap = r * at_cap / at_cap.norm(dim=1, keepdim=True)
    one_big = 1e-3 * torch.randn(S, D); one_big[0] *= 1e6
    ties = torch.zeros(S, D); ties[:, 0] = torch.linspace(-1, 1, S)
    return {'zero': torch.zeros(S, D), 'same': same, 'at-cap': at_cap, 'one-big': one_big, 'ties': ties}


# ---------------------------------------------------------------- the lemma the bound rests on

@pytest.mark.parametrize('tau', [0.25, 1.0, 2.5])
def test_row_stochastic_norm_is_at_most_cosh_tau_and_attained(tau):
    n = 1 + round(math.exp(2 * tau))                     # Kantorovich's extremal rows: one hot key in ~1 + e^2τ
    S = torch.full((n, n), -tau); S[:, 0] = tau
    tight = torch.linalg.matrix_norm(torch.softmax(S, -1), 2).item()
    assert math.cosh(tau) * 0.99 < tight <= math.cosh(tau) + TOL
    raw = torch.randn(16, 20, 20, requires_grad=True)
    opt = torch.optim.Adam([raw], lr=0.1, maximize=True)
    for _ in range(150):
        norms = torch.linalg.matrix_norm(torch.softmax(tau * torch.tanh(raw), -1), 2)
        assert norms.max().item() <= math.cosh(tau) + TOL
        opt.zero_grad(); norms.sum().backward(); opt.step()


def test_capped_normalize_is_a_scaled_projection():
    r = 1.5
    x = torch.randn(500, 6) * torch.logspace(-4, 3, 500)[:, None]
    y = capped_normalize(x, r)
    projected = x * torch.clamp(r / x.norm(dim=1, keepdim=True), max=1.0)     # the Euclidean projection onto the r-ball
    assert torch.allclose(r * y, projected, atol=1e-12)
    a, b = x[::2], x[1::2]
    ratio = ((capped_normalize(a, r) - capped_normalize(b, r)).norm(dim=1) / (a - b).norm(dim=1)).max()
    assert ratio <= 1 / r + TOL


# ---------------------------------------------------------------- the certified bound

@pytest.mark.parametrize('layer', CERTIFIED)
@pytest.mark.parametrize('heads,tau', [(1, 0.25), (2, 1.0), (4, 3.0)])
def test_random_and_structured_points_respect_bound(layer, heads, tau):
    S, D = 6, 8
    att = _randomise(LipschitzAttention(D, heads, tau, layer, seq_len=S))
    assert lipschitz_bound(att) == pytest.approx(1.0, abs=1e-15)
    points = {f'random×{s:g}': s * torch.randn(S, D) for s in (1e-4, 1e-1, 1.0, 10.0, 1e4)}
    for name, x in {**points, **_structured_inputs(S, D)}.items():
        n = jacobian_norm(att, x).item()
        assert math.isfinite(n) and n <= lipschitz_bound(att) + TOL, (name, n)


def test_bound_holds_for_longer_sequences():
    "The bound does not depend on the number of tokens: 40 tokens, random and all-equal inputs."
    att = _randomise(LipschitzAttention(4, 2, 1.0, 'cayley'))
    for x in (torch.randn(40, 4), torch.randn(4).expand(40, 4).clone(), 30 * torch.randn(40, 4)):
        assert jacobian_norm(att, x).item() <= lipschitz_bound(att) + TOL


@pytest.mark.parametrize('layer,heads,tau,S', [('cayley', 1, 1.0, 6), ('cayley', 2, 0.5, 6), ('aol', 1, 2.0, 5),
                                               ('sandwich', 2, 1.0, 5)])
def test_adversarial_jacobian_respects_bound(layer, heads, tau, S):
    att = _randomise(LipschitzAttention(4, heads, tau, layer, seq_len=S))
    worst = adversarial_jacobian_norm(att, torch.randn(S, 4), steps=300, lr=0.05)
    assert worst <= lipschitz_bound(att) + TOL
    assert worst > (0.3 if tau <= 1 else 0.15)    # the ascent has teeth: within a factor ~2-5 of the (global) bound


def test_adversarial_secants_respect_bound():
    "No derivative involved: Adam ascent on ‖f(a) − f(b)‖_F/‖a − b‖_F over a, b and the parameters."
    att = _randomise(LipschitzAttention(4, 2, 1.0, 'cayley', seq_len=5))
    a, b = torch.randn(2, 8, 5, 4).unbind(0)                          # 8 pairs at once
    a.requires_grad_(); b.requires_grad_()
    opt = torch.optim.Adam([*att.parameters(), a, b], lr=0.05, maximize=True)
    best = 0.0
    for _ in range(300):
        ratio = (att(a) - att(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
        best = max(best, ratio.max().item())
        opt.zero_grad(); ratio.sum().backward(); opt.step()
    assert best <= lipschitz_bound(att) + TOL and best > 0.3


def test_uncertified_projections_certify_nothing():
    for layer in ('spectral', 'plain'):
        assert lipschitz_bound(LipschitzAttention(4, 1, layer=layer)) == math.inf
    assert attention_bound(1.0, 2.0, 1.0, 1.0) > attention_bound(1.0)   # a projection of bound 2 raises it


# ---------------------------------------------------------------- negative control

def test_dot_product_attention_breaks_the_bound():
    "The same search, on plain softmax(qkᵀ/√d)·v with the same (untied, certified) projections, exceeds the bound."
    dot = _randomise(DotProductAttention(4, 1, layer='cayley', seq_len=6))
    capped = LipschitzAttention(4, 1, layer='cayley', seq_len=6)
    capped.load_state_dict(dot.state_dict())
    found = adversarial_jacobian_norm(dot, torch.randn(6, 4), steps=60, lr=0.05)
    assert found > 2 * lipschitz_bound(capped) and lipschitz_bound(dot) == math.inf
    x = torch.randn(6, 4)
    assert jacobian_norm(capped, x) <= lipschitz_bound(capped) + TOL


# ---------------------------------------------------------------- precision and autodiff

def test_bf16_autocast_builds_weights_outside_and_stays_close():
    torch.set_default_dtype(torch.float32)
    att = _randomise(LipschitzAttention(16, 2, seq_len=6), scale=0.3)
    x = torch.randn(4, 6, 16)
    ref = att(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = att(x)
        built = [m.built_weight() for m in (att.q, att.k, att.v, att.out)]
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert all(torch.equal(W, m.effective_weight()) for W, m in zip(built, (att.q, att.k, att.v, att.out)))
    assert (y.float() - ref).norm() <= 3e-2 * ref.norm()


def test_forward_mode_matches_reverse_mode_batched():
    "The probes push a batch of tangents with vmap(jvp): it must agree with the reverse-mode Jacobian."
    att = _randomise(LipschitzAttention(4, 2, seq_len=5))
    x, V = torch.randn(5, 4), torch.randn(3, 5, 4)
    with frozen_weights(att):
        tangents = torch.func.vmap(lambda v: torch.func.jvp(att, (x,), (v,))[1])(V)
        J = torch.func.jacrev(att)(x).reshape(20, 20)
    assert torch.allclose(tangents.reshape(3, 20), V.reshape(3, 20) @ J.T, atol=1e-12)


# ---------------------------------------------------------------- SRM with mixer='attention'

SMALL = dict(vocab_size=11, seq_len=6, hidden=4, n_prefix=1, cycles=3, alpha=0.6, mixer='attention')


def test_srm_attention_is_certified_and_the_probes_stay_below():
    m = _randomise(build_model('srm', **SMALL), scale=0.5)
    K = m.certified_lipschitz()
    assert K < 1 and abs(m.cell.psi.lipschitz_bound() - 1) < 1e-12
    tokens = torch.randint(1, 11, (4, 6))
    probe = probe_model(m, tokens, k=2, n_steps=8, warmup=4, settle=2, n_pairs=2, opt_steps=5)
    assert probe.empirical <= K * (1 + 1e-9) and (probe.lambda1 <= math.log(K) + 1e-9).all()
    x = m.embed_input(tokens[:1])[0]
    for scale in (1e-2, 1.0, 1e2):
        s = scale * torch.randn(m.length, 2 * m.hidden)
        assert torch.linalg.matrix_norm(step_jacobian(m.cell, s, x), ord=2) <= K * (1 + 1e-9)


def test_srm_attention_trains_under_bf16_autocast():
    torch.set_default_dtype(torch.float32)
    m = SRM(**SMALL)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    tokens, targets = torch.randint(1, 11, (4, 6)), torch.randint(2, 11, (4, 6))
    for _ in range(3):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss, _ = segment_loss(m(tokens), targets)
        opt.zero_grad(); loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        opt.step()
    assert m.certified_lipschitz() < 1


def test_trainer_runs_srm_with_attention_mixer(tmp_path):
    "`-p model srm -y 'model_kw: {mixer: attention}'`, tiny: 20 steps on sudoku4, certified K < 1, probed λ₁ < 0."
    from srm_nb.train import Trainer, read_metrics
    torch.set_default_dtype(torch.float32)
    t = Trainer(model='srm', model_kw=dict(mixer='attention'), task='sudoku4', hidden=16, cycles=2, n_sup=2, batch_size=8,
                steps=20, n_train=64, n_test=16, warmup=2, lr=3e-3, log_every=10, eval_every=0, ckpt_every=0, eval_n=16,
                lyapunov_n=4, data_dir=str(tmp_path / 'data'), out_dir=str(tmp_path / 'run'), threads=1)
    init = {k: v.clone() for k, v in t.model.state_dict().items()}
    summary = t.fit()
    assert t.model.config.mixer == 'attention' and summary['steps'] == 20
    assert 0 < summary['certified_lipschitz'] < 1 and summary['lambda1']['max'] < 0
    assert summary['empirical_lipschitz'] <= summary['certified_lipschitz'] * (1 + 1e-6)
    losses = [r['loss'] for r in read_metrics(t.out_dir) if r['kind'] == 'train']
    assert len(losses) == 2 and all(math.isfinite(l) for l in losses)
    assert any(not torch.equal(v, t.model.state_dict()[k]) for k, v in init.items())   # it trained
