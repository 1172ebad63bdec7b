"""Every algorithm with every memory: each preset composes with them, and each family trains tiny with them."""

from __future__ import annotations

import pytest
import torch
from trainkit import PRESETS, compose_cfg, module_of

from rl2_lightning.train import train

ALGOS = ["ppo", "trpo"]
MODELS = ["gru", "lstm", "transformer", "mlp"]
COMBOS = [(a, m) for a in ALGOS for m in MODELS]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds_with_every_algorithm_and_memory(preset):
    """Composition for every preset; the module too, except for mazes (each build starts an engine for the
    specs: the maze training test below builds every combination)."""
    for algo, model in COMBOS:
        cfg = compose_cfg([f"conf={preset}", f"algo={algo}", f"model={model}"], tiny=False)
        assert cfg.algo._target_.endswith(algo.upper())
        assert cfg.model.memory._target_.lower().endswith(f"{model}memory")
        assert cfg.experiment == preset
        if not preset.startswith("maze"):
            module = module_of(cfg)
            assert type(module.algo).__name__ == algo.upper()
            assert type(module.actor.module[0][1]).__name__.lower() == f"{model}memory"


@pytest.mark.parametrize(("algo", "model"), COMBOS)
@pytest.mark.parametrize("preset", ["bandit_k5_n10", "tabular_n10", "riverswim"])
def test_every_family_trains_with_every_algorithm_and_memory(tmp_path, preset, algo, model):
    torch.manual_seed(0)
    cfg = compose_cfg([f"conf={preset}", f"algo={algo}", f"model={model}", "callbacks.metatest=null",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=1", f"runs_dir={tmp_path}"])
    start = {k: v.clone() for k, v in module_of(cfg).actor.state_dict().items()}
    out = train(cfg)
    module = out["module"]
    trial_steps = out["trainer"].datamodule.trial_steps
    assert int(module.frames) == cfg.env.num_envs * trial_steps  # one iteration of whole trials
    moved = [k for k, v in module.actor.state_dict().items() if not torch.equal(v, start[k])]
    assert moved  # the update changed the policy (the same seed built the same initial weights)


@pytest.mark.maze
@pytest.mark.parametrize(("algo", "model"), COMBOS)
def test_mazes_train_with_every_algorithm_and_memory(tmp_path, algo, model):
    pytest.importorskip("vizdoom")
    cfg = compose_cfg(["conf=maze_5x5", f"algo={algo}", f"model={model}", "callbacks.metatest=null",
                       "env.simulator.horizon=5", "env.num_envs=2", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=1", f"runs_dir={tmp_path}"])
    out = train(cfg)
    assert 0 < int(out["module"].frames) <= 2 * 2 * 5
    assert out["module"].hparams.model["shared_trunk"]  # the paper's maze agent: one trunk for both heads
