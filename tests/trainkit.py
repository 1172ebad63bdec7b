"""Helpers for the training-application tests: compose the real config and shrink it."""

from __future__ import annotations

from pathlib import Path

from rl2_lightning.config import compose

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "conf").glob("*.yaml"))

# CPU, tiny networks and batches, no logger, no progress bar: the real code paths, fast.
TINY = [
    "env.num_envs=8",
    "model.hidden_size=16",
    "model.embed_size=16",
    "algo.epochs=2",
    "algo.minibatches=2",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
    "~logger",
    "callbacks.metatest.num_tasks=50",
    "callbacks.metatest.baselines=false",
]


def compose_cfg(overrides: list[str] = (), tiny: bool = True):
    """The composed ``conf/train.yaml`` with ``overrides`` (after the tiny ones when ``tiny``)."""
    tiny_keys = list(TINY if tiny else [])
    if "algo=trpo" in overrides:  # TRPO's own update sizes (it has no PPO epochs)
        tiny_keys = [k.replace("algo.epochs", "algo.critic_epochs").replace("algo.minibatches", "algo.critic_minibatches")
                     for k in tiny_keys]
    if any(o.startswith("logger=") for o in overrides):  # a logger asked for: keep it
        tiny_keys.remove("~logger")
    return compose([*tiny_keys, *overrides])


def module_of(cfg):
    """The Lightning module a composed config builds (what ``train`` builds, without training)."""
    from rl2_lightning.config import container
    from rl2_lightning.module import RL2Module

    return RL2Module(
        env=container(cfg.env), model=container(cfg.model), algo=container(cfg.algo),
        optimizer=container(cfg.optimizer), max_epochs=cfg.trainer.max_epochs,
    )
