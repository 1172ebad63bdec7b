"""Helpers for the training-application tests: compose the real config and shrink it."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from rl2_lightning.config import register_configs

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
    "logger=false",
    "metatest.num_tasks=50",
    "metatest.baselines=false",
]


def compose_cfg(overrides: list[str] = (), tiny: bool = True):
    """The composed ``conf/train.yaml`` with ``overrides`` (after the tiny ones when ``tiny``)."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*(TINY if tiny else []), *overrides])
