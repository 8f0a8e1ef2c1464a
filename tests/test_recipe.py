"""Every value of every preset, pinned to where it comes from; a preset resolved through the trainer and the
papermill notebook (`dry_run`) gives the published recipe and parameter counts."""
import json, subprocess, sys
from pathlib import Path
import pytest
from srm_nb.recipe import PRESETS, RECIPE_KEYS, RECIPE_SOURCES, resolve_recipe, steps_from_epochs
from srm_nb.train import TrainConfig, Trainer, validate, repo_root

ROOT = repo_root(Path(__file__).parent)

# The published recipes as their code runs them: TinyRecursiveModels (README Sudoku command, config/cfg_pretrain.yaml,
# config/arch/trm.yaml, pretrain.py) and HRM (README Sudoku-Extreme-1k command, config/cfg_pretrain.yaml,
# config/arch/hrm_v1.yaml, pretrain.py). Written out here independently of srm_nb.recipe, value by value.
TRM = dict(task='sudoku-extreme', task_kw={'n_train': 1000, 'n_aug': 1000}, model_kw={'hidden': 512, 'cycles': 3}, n_sup=16,
           eval_segments=16, steps=None, epochs=50_000, batch_size=768, optimizer='adam-atan2', lr=1e-4,
           betas=(0.9, 0.95), schedule='constant', warmup=2000, min_lr_ratio=1.0, weight_decay=1.0, decay='all',
           grad_clip=0.0, ema=0.999, explore=0.1, puzzle_emb_optimizer='sign-sgd', puzzle_emb_lr=1e-4,
           puzzle_emb_weight_decay=1.0)
EXPECTED = {'trm-mlp': TRM, 'trm-att': TRM, 'srm': dict(TRM, model_kw={'hidden': 512, 'cycles': 21, 'alpha': 0.5}),
            'hrm': dict(TRM, model_kw={'hidden': 512, 'cycles': 2}, epochs=20_000, ema=0.0)}
CPU = dict(task='sudoku-easy', task_kw={}, model_kw={'hidden': 64, 'cycles': 4}, n_sup=8, eval_segments=0, steps=1200,
           epochs=None, batch_size=64, optimizer='adamw', lr=2e-3, betas=(0.9, 0.95), schedule='cosine', warmup=100,
           min_lr_ratio=0.1, weight_decay=0.1, decay='matrices', grad_clip=1.0, ema=0.995, explore=0.1,
           puzzle_emb_optimizer='main', puzzle_emb_lr=2e-3, puzzle_emb_weight_decay=0.1)

@pytest.mark.parametrize('model', sorted(EXPECTED))
def test_paper_preset_is_the_published_recipe(model):
    preset = PRESETS['paper'][model]
    assert set(preset) == set(RECIPE_KEYS) == set(EXPECTED[model])
    for k in RECIPE_KEYS:
        assert preset[k] == EXPECTED[model][k], (model, k, preset[k])
        assert RECIPE_SOURCES[model][k], (model, k)              # every value names its source

@pytest.mark.parametrize('model', sorted(EXPECTED))
def test_cpu_preset_is_the_main_job(model):
    expected = dict(CPU, model_kw={**CPU['model_kw'], 'alpha': 0.5}) if model == 'srm' else CPU   # SRM's damping α = 0.5
    assert PRESETS['cpu'][model] == expected

def test_srm_gets_trms_network_applications_per_segment():
    from srm_nb.models import build_model
    trm, srm = build_model('trm-mlp', hidden=16), build_model('srm', hidden=16, cycles=PRESETS['paper']['srm']['model_kw']['cycles'])
    assert PRESETS['paper']['trm-mlp']['model_kw']['cycles'] * (trm.l_steps + 1) == srm.cycles * len(srm.substeps()) == 21

def test_lengths_in_epochs_follow_the_published_count():
    assert steps_from_epochs(50_000, 1000, 768) == 65_104                    # TRM: total_iters in pretrain.py
    assert steps_from_epochs(20_000, 1000, 768) == 26_041                    # HRM
    assert validate(TrainConfig(model='hrm', preset='paper')).steps == 26_041
    assert validate(TrainConfig(model='srm', preset='paper', epochs=10)).steps == 13   # explicit epochs win over the preset's

def test_explicit_settings_override_the_preset():
    cfg = validate(TrainConfig(model='trm-mlp', preset='paper', lr=3e-4, steps=10, ema=0.0, task_kw={'seed': 3}))
    assert (cfg.lr, cfg.steps, cfg.ema, cfg.batch_size) == (3e-4, 10, 0.0, 768)
    assert cfg.task_kw == {'n_train': 1000, 'n_aug': 1000, 'seed': 3}
    with pytest.raises(ValueError, match="preset: expected one of"): validate(TrainConfig(preset='gpu'))

PUBLISHED = {'trm-mlp': 5_028_866, 'srm': None, 'hrm': 27_275_266}

@pytest.mark.parametrize('model', ['trm-mlp', 'srm', 'hrm'])
def test_dry_run_through_papermill_resolves_the_recipe(model, tmp_path):
    "`-p preset paper -p dry_run True` writes params.json with the recipe, n_params and a cost estimate, and trains nothing."
    out = tmp_path / 'run'
    cmd = [sys.executable, '-m', 'papermill', '-k', 'python3', '--cwd', str(ROOT), str(ROOT / 'nbs/train.ipynb'),
           str(tmp_path / 'out.ipynb'), '-p', 'model', model, '-p', 'preset', 'paper', '-p', 'dry_run', 'True',
           '-p', 'out_dir', str(out), '-p', 'data_dir', str(tmp_path / 'data'), '-p', 'n_test', '32',
           '-y', 'task_kw: {min_rating: 0}']
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    p = json.loads((out / 'params.json').read_text())
    for k, v in EXPECTED[model].items():
        if k == 'steps': assert p['steps'] == steps_from_epochs(v or p['epochs'], 1000, p['batch_size']) if v is None else v
        elif k == 'task_kw': assert p[k] == {**v, 'min_rating': 0, 'n_test': 32}
        elif k == 'betas': assert tuple(p[k]) == v
        else: assert p[k] == v, (k, p[k], v)
    if PUBLISHED[model]: assert p['n_params_published'] == PUBLISHED[model]
    assert p['model_config']['hidden'] == 512 and p['flops_per_step'] > 1e12 and p['memory_estimate_gib']['total_gib'] > 1
    assert not (out / 'ckpt').exists() and not (out / 'metrics.jsonl').exists()      # nothing trained
