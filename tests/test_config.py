"""Config composition, presets and validation (rl2_lightning/config.py, conf/)."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from trainkit import PRESETS, compose_cfg, module_of

from hydra.utils import instantiate
from rl2_lightning.datamodule import TrialDataModule

PAPER_SETTINGS = [f"bandit_k{k}_n{n}" for k in (5, 10, 50) for n in (10, 100, 500)]
PAPER_SETTINGS += [f"tabular_n{n}" for n in (10, 25, 50, 75, 100)] + ["riverswim"]
PAPER_SETTINGS += ["maze_5x5", "maze_9x9", "maze_5x5_extrapolate", "maze_9x9_extrapolate"]


def test_every_paper_setting_has_a_preset():
    assert set(PAPER_SETTINGS) <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_instantiates(preset):
    cfg = compose_cfg([f"conf={preset}"], tiny=False)
    assert cfg.experiment == preset
    module = module_of(cfg)
    assert sum(p.numel() for p in module.parameters()) > 0
    dm = TrialDataModule(instantiate(cfg.env), cfg.seed, 1)
    dm.setup("fit")
    # one collected row is one whole trial (padded to its longest length for mazes)
    sim = cfg.env.simulator
    assert dm.trial_steps == cfg.env.episodes_per_trial * (sim.get("episode_steps") or sim.get("horizon") or 1)
    dm.teardown()


def test_paper_settings_and_family_recipes_in_presets():
    cfg = compose_cfg(["conf=tabular_n50"], tiny=False)
    assert (cfg.algo.gamma, cfg.env.episodes_per_trial, cfg.env.simulator.episode_steps) == (0.99, 50, 10)
    assert cfg.algo.lmbda == 0.6 and cfg.model.hidden_size == 64  # conf/recipe/tabular.yaml
    bandit = compose_cfg(["conf=bandit_k10_n100"], tiny=False)
    assert (bandit.algo.lmbda, bandit.algo.grad_clip, bandit.model.layer_norm) == (0.9, "separate", True)
    assert compose_cfg(["conf=bandit_k50_n500"], tiny=False).env.num_envs == 64  # a preset's own key wins
    assert compose_cfg(["conf=bandit_k10_n100", "algo.lmbda=0.3"], tiny=False).algo.lmbda == 0.3  # and overrides'
    assert compose_cfg(["conf=bandit_k5_n10"], tiny=False).algo.lmbda == 0.3  # the default preset keeps its own


def test_every_component_is_a_target_node_built_by_hydra():
    cfg = compose_cfg(["conf=bandit_k50_n10"])
    for group in ("env", "model", "algo", "optimizer", "trainer"):
        assert "_target_" in cfg[group], group
    assert all("_target_" in node for node in cfg.callbacks.values())
    env = instantiate(cfg.env)
    assert env.simulator.keywords == {"num_arms": 50} and env.episodes_per_trial == 10


def test_wrong_type_fails_at_composition_naming_the_key():
    with pytest.raises(ValueError, match=r"algo\.gamma: Value 'abc'"):
        compose_cfg(["algo.gamma=abc"])
    with pytest.raises(ConfigCompositionException):  # a typed top-level key: Hydra's own check
        compose_cfg(["seed=abc"])


def test_unknown_argument_fails_at_composition_naming_the_key_and_the_arguments():
    with pytest.raises(ValueError, match=r"algo\.gama is not an argument of rl2_lightning\.algos\.PPO; it takes: .*gamma"):
        compose_cfg(["+algo.gama=0.9"])
    with pytest.raises(ValueError, match=r"env\.simulator\.num_armz is not an argument"):
        compose_cfg(["+env.simulator.num_armz=3"])


def test_unknown_preset_lists_the_options():
    with pytest.raises(Exception) as err:
        compose_cfg(["conf=bandit_k7_n10"])
    assert "bandit_k5_n10" in str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algo.gamma=1.5", r"algo\.gamma=1\.5 is not allowed; it must be in \[0\.0, 1\.0\]"),
        ("algo.grad_clip=both", r"algo\.grad_clip: Invalid value 'both', expected one of \[joint, separate\]"),
        ("algo.lr_schedule=cosine", r"algo\.lr_schedule: Invalid value 'cosine'"),
        ("model.init=xavier", r"model\.init: Invalid value 'xavier'"),
        ("callbacks.metatest.exploration=greedy", r"callbacks\.metatest\.exploration: Invalid value"),
        ("callbacks.metatest.task_set=train", r"callbacks\.metatest\.task_set: Invalid value"),
        ("env.num_envs=0", r"env\.num_envs=0 is not allowed; it must be >= 1"),
        ("algo.epochs=0", r"algo\.epochs=0 is not allowed"),
        ("algo.actor_lr=0", r"algo\.actor_lr=0\.0 is not allowed; it must be > 0"),
        ("callbacks.metatest.video_frames=-1", r"callbacks\.metatest\.video_frames=-1 is not allowed"),
        ("algo.minibatches=64", r"algo\.minibatches=64 is not allowed; it must be <= env\.num_envs=8"),
        ("threads=0", r"threads=0 is not allowed"),
        ("+trainer.max_epoch=3", r"trainer\.max_epoch is not an argument of lightning\.Trainer"),
    ],
)
def test_bad_values_fail_at_composition_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        compose_cfg([override])


def test_rules_across_arguments_fail_at_composition_too():
    with pytest.raises(ValueError, match=r"env\.workers > 1 is only for families that drive engines"):
        compose_cfg(["+env.workers=2"])
    with pytest.raises(ValueError, match=r"env\.workers=3 is not allowed; it must divide env\.num_envs=8"):
        compose_cfg(["conf=maze_5x5", "env.workers=3"])
