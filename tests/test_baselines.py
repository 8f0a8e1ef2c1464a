"""TRM / HRM baselines and `build_model`: published sizes, shapes, gradient schedules, halting, probing, training."""
import dataclasses
import pytest
import torch
from srm_nb.baselines import TRM, HRM, Baseline, lecun_linear
from srm_nb.models import (MODEL_NAMES, PAPER_CONFIGS, build_model, model_config, model_params, count_parameters,
                           published_parameter_count)
from srm_nb.recursive import RecursiveModel, segment_loss

torch.set_num_threads(1)
BASELINES = ['trm-mlp', 'trm-att', 'hrm']
ALL = BASELINES + ['srm']
# small CPU variants that keep the published schedules (T = 3, n = 6 for TRM; 2 × 2 for HRM)
SMALL = {'trm-mlp': dict(hidden=32), 'trm-att': dict(hidden=32, n_heads=4),
         'hrm': dict(hidden=32, n_heads=4, h_layers=2, l_layers=2), 'srm': dict(hidden=32)}


def small(name, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_model(name, **SMALL[name]).to(dtype)


def tokens(batch=2, seed=1):
    return torch.randint(1, 11, (batch, 81), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- sizes
@pytest.mark.parametrize('name, anchor', [('trm-mlp', 5.03e6), ('trm-att', 6.83e6), ('hrm', 27.28e6)])
def test_parameter_count_matches_published(name, anchor):
    model = build_model(name)
    n = count_parameters(model)
    assert n == published_parameter_count(name)                 # closed form of the published architecture
    assert abs(n / anchor - 1) < 0.02, (name, n)
    assert count_parameters(model, puzzle_table=True) == n + 512  # the Sudoku puzzle table: 1 identifier × 512


@pytest.mark.parametrize('name', BASELINES)
def test_full_size_forward_batch_of_one(name):
    model = build_model(name).eval()
    with torch.no_grad(): out = model(tokens(1))
    L = 81 + model.n_prefix
    assert out.z.shape == (1, 2, L, 512) and out.logits.shape == (1, 81, 11) and out.q.shape == (1, 2)
    assert torch.isfinite(out.logits).all()


def test_published_structure():
    trm = build_model('trm-att')
    assert [type(m).__name__ for m in trm.children()].count('Reasoner') == 1 and len(trm.net.layers) == 2
    assert trm.net.layers[0].mlp.width == 1536 and trm.rotary is not None and trm.n_prefix == 16
    mlp = build_model('trm-mlp')
    assert mlp.net.layers[0].mix.gate_up.in_features == 97 and mlp.net.layers[0].mix.width == 512 and mlp.rotary is None
    hrm = build_model('hrm')
    assert len(hrm.h_net.layers) == len(hrm.l_net.layers) == 4 and hrm.n_prefix == 1 and hrm.q_continue
    assert all(m.bias is None for m in hrm.modules() if isinstance(m, torch.nn.Linear) and m is not hrm.q_head)
    w = trm.net.layers[0].mlp.gate_up.weight                  # truncated LeCun normal, std 1/√512 as published
    assert abs(w.std().item() * 512 ** 0.5 - 1) < 0.01 and w.abs().max().item() * 512 ** 0.5 <= 2.28


@pytest.mark.parametrize('name', ALL)
def test_halting_head_init(name):
    model = build_model(name, **SMALL[name])
    assert torch.all(model.q_head.weight == 0) and torch.all(model.q_head.bias == -5.0)
    assert torch.all(model(tokens()).q == -5.0)


# ---------------------------------------------------------------- interface
@pytest.mark.parametrize('name', ALL)
def test_interface_shapes_and_purity(name):
    model = small(name)
    assert isinstance(model, RecursiveModel)
    tok = tokens(3)
    out = model(tok)
    assert out.z.shape == (3, 2, model.length, 32) and out.logits.shape == (3, 81, 11)
    assert not out.z.requires_grad and out.logits.requires_grad
    x, z = model.embed_input(tok), model.init_state(3, dtype=torch.float64)
    zz = z
    for _ in range(model.cycles): zz = model.cycle(zz, x)
    assert torch.allclose(model.segment(z, x), zz, rtol=0, atol=1e-12)   # the gradient schedule never changes the value


@pytest.mark.parametrize('name', BASELINES)
def test_cycle_supports_forward_mode_ad(name):
    "What the Lyapunov probes do: vmap of jvp over tangents through one pure cycle, checked by finite differences."
    model = small(name)
    x = model.embed_input(tokens(1)).detach()
    z = model.cycle(model.init_state(1, dtype=torch.float64), x).detach()
    V = torch.randn(3, *z.shape, dtype=torch.float64)
    jv = torch.vmap(lambda v: torch.func.jvp(lambda s: model.cycle(s, x), (z,), (v,))[1])(V)
    for k in range(3):
        fd = (model.cycle(z + 1e-6 * V[k], x) - model.cycle(z - 1e-6 * V[k], x)) / 2e-6
        assert torch.allclose(jv[k], fd, atol=1e-5), (name, (jv[k] - fd).abs().max())


def test_state_dict_round_trip():
    a, b = small('trm-att', seed=0), small('trm-att', seed=1)
    assert not any('rotary' in k for k in a.state_dict())     # RoPE tables are recomputed, not stored
    b.load_state_dict(a.state_dict())
    tok = tokens()
    assert torch.equal(a(tok).logits, b(tok).logits)


@pytest.mark.parametrize('name', BASELINES)
def test_bfloat16_autocast_runs(name):
    model = small(name, dtype=torch.float32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(tokens())
    assert torch.isfinite(out.logits.float()).all() and out.z.dtype == torch.float32


# ---------------------------------------------------------------- gradient schedules
def _grad_pattern(model, module_names):
    calls = {n: [] for n in module_names}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: calls[n].append(torch.is_grad_enabled()))
             for n in module_names]
    model(tokens())
    for h in hooks: h.remove()
    return calls


@pytest.mark.parametrize('name', ['trm-mlp', 'trm-att'])
def test_trm_only_last_cycle_has_gradient(name):
    model = small(name)
    assert _grad_pattern(model, ['net'])['net'] == [False] * 14 + [True] * 7   # T = 3 cycles of n + 1 = 7 net calls
    tok = tokens()
    z0 = model.init_state(2, dtype=torch.float64).requires_grad_(True)

    def grads(run):
        model.zero_grad()
        loss = model.readout(run(model.embed_input(tok))).square().mean()
        g = torch.autograd.grad(loss, [z0, *model.net.parameters()], allow_unused=True)
        return g[0], torch.cat([p.flatten() for p in g[1:]])

    gz, g_model = grads(lambda x: model.segment(z0, x))
    assert gz is None                                             # nothing flows back through the no-grad cycles
    _, g_last = grads(lambda x: model.cycle(model.cycle(model.cycle(z0, x), x).detach(), x))
    _, g_full = grads(lambda x: model.cycle(model.cycle(model.cycle(z0, x), x), x))
    assert torch.allclose(g_model, g_last, rtol=1e-10, atol=1e-13)
    assert not torch.allclose(g_model, g_full, rtol=1e-3)


def test_hrm_gradient_is_one_step():
    model = small('hrm')
    calls = _grad_pattern(model.eval(), ['l_net', 'h_net'])
    assert calls['l_net'] == [False, False, False, True] and calls['h_net'] == [False, True]
    calls = _grad_pattern(model.train(), ['l_net', 'h_net'])       # + the Q-target segment, entirely without gradient
    assert calls['l_net'] == [False, False, False, True] + [False] * 4 and calls['h_net'] == [False, True, False, False]
    tok = tokens()
    z0 = model.init_state(2, dtype=torch.float64)
    params = [*model.l_net.parameters(), *model.h_net.parameters(), model.embed.tokens.weight, model.embed.puzzle]

    def grads(run):
        loss = model.readout(run(model.embed_input(tok))).square().mean()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])

    def one_step_by_hand(x):
        # the published loop, written out: 2·2 − 1 low-level and 2 − 1 high-level steps without gradient ...
        h, l = z0[:, 0], z0[:, 1]
        with torch.no_grad():
            l = model.l_net(l + h + x, model.rope()); l = model.l_net(l + h + x, model.rope())
            h = model.h_net(h + l, model.rope())
            l = model.l_net(l + h + x, model.rope())
        # ... then one low-level and one high-level step with gradient
        l = model.l_net(l + h + x, model.rope())
        return torch.stack([model.h_net(h + l, model.rope()), l], 1)

    g_model = grads(lambda x: model.segment(z0, x))
    assert torch.allclose(g_model, grads(one_step_by_hand), rtol=1e-9, atol=1e-13)
    assert not torch.allclose(g_model, grads(lambda x: model.cycle(model.cycle(z0, x), x)), rtol=1e-3)


def test_hrm_q_continue_target():
    model = small('hrm').train()
    tok = tokens(3)
    last = torch.tensor([False, True, False])
    out = model(tok, last_step=last)
    with torch.no_grad(): nq = model.halt_logits(model.segment(out.z, model.embed_input(tok)))
    expected = torch.sigmoid(torch.where(last, nq[:, 0], nq.max(-1).values))
    assert torch.allclose(out.q_continue_target, expected, rtol=0, atol=1e-12)
    assert not out.q_continue_target.requires_grad
    loss, metrics = segment_loss(out, tok)
    assert 'continue_loss' in metrics
    loss.backward()
    assert model.q_head.weight.grad.abs().sum() > 0
    assert model.eval()(tok).q_continue_target is None
    assert small('trm-att').train()(tok).q_continue_target is None      # TRM: no_ACT_continue, as published


# ---------------------------------------------------------------- learning
@pytest.mark.parametrize('name', ALL)
def test_a_few_steps_lower_the_loss(name):
    torch.manual_seed(0)
    cfg = dict(SMALL[name], hidden=64)
    cfg.update({'trm-mlp': dict(cycles=2, l_steps=2), 'trm-att': dict(cycles=2, l_steps=2),
                'hrm': dict(h_layers=1, l_layers=1)}.get(name, {}))
    model = build_model(name, **cfg)
    tok = tokens(4)                                              # task: copy the input tokens, carried over segments
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))
    losses, z = [], None
    for _ in range(30):
        out = model(tok, z)
        loss, metrics = segment_loss(out, tok)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(metrics['lm_loss'].item()); z = out.z
    # the cross-entropy part: the halting BCE rises once puzzles get solved, until the head catches up
    assert losses[-1] < 0.7 * losses[0], (name, losses)


# ---------------------------------------------------------------- build_model
def test_build_model_names_and_errors():
    assert set(MODEL_NAMES) == {'srm', 'trm-mlp', 'trm-att', 'hrm'}
    with pytest.raises(ValueError, match=r"\['srm', 'trm-mlp', 'trm-att', 'hrm'\]"): build_model('gpt')
    with pytest.raises(ValueError, match="valid options"): build_model('trm-att', h_layers=2)
    with pytest.raises(ValueError, match="'rope'"): build_model('trm-mlp', pos='rope')
    assert model_params('trm-mlp') == model_params('trm-att') and 'h_layers' in model_params('hrm')
    assert all(model_params(n) == {f.name for f in dataclasses.fields(PAPER_CONFIGS[n])} for n in MODEL_NAMES)
    assert all(build_model(n, **SMALL[n]).config == dataclasses.replace(PAPER_CONFIGS[n], **SMALL[n]) for n in BASELINES)


def test_model_config_is_complete_and_papers_defaults():
    cfg = model_config('trm-att', hidden=64)
    assert cfg['hidden'] == 64 and cfg['cycles'] == 3 and cfg['l_steps'] == 6 and cfg['layers'] == 2
    assert set(cfg) == model_params('trm-att')
    assert isinstance(build_model('trm-att', **{**cfg, 'hidden': 32, 'n_heads': 4}), TRM)
    h = model_config('hrm')
    assert (h['cycles'], h['l_steps'], h['h_layers'], h['l_layers'], h['n_prefix'], h['q_continue']) == (2, 2, 4, 4, 1, True)
    assert isinstance(build_model('hrm', hidden=32, n_heads=4, h_layers=1, l_layers=1), HRM)


def test_build_srm():
    model = build_model('srm', hidden=32)
    assert isinstance(model, RecursiveModel) and not isinstance(model, Baseline)
    assert model_config('srm')['hidden'] == 512


def test_lecun_linear_scale():
    w = lecun_linear(1024, 2048).weight
    assert abs(w.std().item() * 32 - 1) < 0.01
