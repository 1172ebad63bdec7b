"""Config composition, presets and validation (rl2_lightning/config.py, conf/)."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from trainkit import PRESETS, compose_cfg

from rl2_lightning.config import env_kwargs, validate
from rl2_lightning.datamodule import TrialDataModule
from rl2_lightning.module import RL2Module

PAPER_SETTINGS = [f"bandit_k{k}_n{n}" for k in (5, 10, 50) for n in (10, 100, 500)]
PAPER_SETTINGS += [f"tabular_n{n}" for n in (10, 25, 50, 75, 100)] + ["riverswim"]
PAPER_SETTINGS += ["maze_5x5", "maze_9x9", "maze_5x5_extrapolate", "maze_9x9_extrapolate"]


def test_every_paper_setting_has_a_preset():
    assert set(PAPER_SETTINGS) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_instantiates(preset):
    cfg = compose_cfg([f"conf={preset}"], tiny=False)
    validate(cfg)
    assert cfg.experiment == preset
    module = RL2Module(
        env=OmegaConf.to_container(cfg.env),
        model=OmegaConf.to_container(cfg.model),
        algo=OmegaConf.to_container(cfg.algo),
        max_epochs=cfg.trainer.max_epochs,
    )
    assert sum(p.numel() for p in module.parameters()) > 0
    dm = TrialDataModule(OmegaConf.to_container(cfg.env), cfg.seed, 1)
    dm.setup("fit")
    # one collected row is one whole trial (padded to its longest length for mazes)
    n = cfg.env.episodes_per_trial
    assert dm.trial_steps == n * (cfg.env.episode_steps or cfg.env.horizon or 1)
    dm.teardown()


def test_paper_settings_and_family_recipes_in_presets():
    cfg = compose_cfg(["conf=tabular_n50"], tiny=False)
    assert (cfg.algo.gamma, cfg.env.episodes_per_trial, cfg.env.episode_steps) == (0.99, 50, 10)
    assert cfg.algo.lmbda == 0.6 and cfg.model.hidden_size == 64  # conf/recipe/tabular.yaml
    bandit = compose_cfg(["conf=bandit_k10_n100"], tiny=False)
    assert (bandit.algo.lmbda, bandit.algo.grad_clip, bandit.model.layer_norm) == (0.9, "separate", True)
    assert compose_cfg(["conf=bandit_k50_n500"], tiny=False).env.num_envs == 64  # a preset's own key wins
    assert compose_cfg(["conf=bandit_k10_n100", "algo.lmbda=0.3"], tiny=False).algo.lmbda == 0.3  # and overrides'
    assert compose_cfg(["conf=bandit_k5_n10"], tiny=False).algo.lmbda == 0.3  # the default preset keeps its own


def test_env_kwargs_keeps_only_the_family_sizes():
    cfg = compose_cfg(["conf=bandit_k50_n10"])
    assert env_kwargs(cfg.env) == {"num_arms": 50}


def test_wrong_type_fails_at_composition_naming_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["algo.gamma=abc"])
    assert "gamma" in str(err.value.__cause__ or err.value)


def test_unknown_key_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ConfigKeyError, ValidationError)) as err:
        compose_cfg(["algo.gama=0.9"])
    assert "gama" in str(err.value) + str(err.value.__cause__)


def test_unknown_preset_lists_the_options():
    with pytest.raises(Exception) as err:
        compose_cfg(["conf=bandit_k7_n10"])
    assert "bandit_k5_n10" in str(err.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algo.gamma=1.5", "algo.gamma"),
        ("env.family=chess", "env.family"),
        ("model.architecture=lstm", "model.architecture"),
        ("env.num_envs=0", "env.num_envs"),
        ("algo.minibatches=64", "algo.minibatches"),
        ("algo.lr_schedule=cosine", "algo.lr_schedule"),
        ("threads=0", "threads"),
        ("env.workers=3", "env.workers"),
    ],
)
def test_bad_values_fail_before_training_naming_the_key(override, key):
    cfg = compose_cfg([override])
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate(cfg)
