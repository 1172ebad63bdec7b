"""``train(cfg)``: build datamodule, module, callbacks, logger and trainer from a config, and fit.

``train.py`` at the top level is the Hydra entry point; tests compose the config and call
:func:`train` directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from callbacks import MetaTestCallback
from rl2_lightning.config import validate
from rl2_lightning.datamodule import TrialDataModule
from rl2_lightning.module import RL2Module


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def latest_checkpoint(runs_dir: str | Path, experiment: str) -> Path:
    """The newest ``last.ckpt`` among the runs of an experiment."""
    found = sorted(Path(runs_dir, experiment).glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"ckpt_path=latest: no run of experiment {experiment!r} has a last.ckpt under {Path(runs_dir, experiment)}"
        )
    return found[-1]


def check_checkpoint(path: Path, cfg: DictConfig) -> None:
    """Fail early, in one line, on a missing, corrupt or incompatible checkpoint file."""
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        hparams, _ = ckpt["hyper_parameters"], ckpt["state_dict"]
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise ValueError(f"ckpt_path={str(path)!r} is not a readable Lightning checkpoint ({type(err).__name__})") from None
    for group in ("model", "env"):
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            if group == "env" and key == "num_envs":
                continue  # the batch size may change on resume
            if hparams.get(group, {}).get(key, value) != value:
                raise ValueError(
                    f"ckpt_path={str(path)!r} was trained with {group}.{key}={hparams[group][key]!r}, "
                    f"but the config has {value!r}"
                )


def resolve_run(cfg: DictConfig) -> tuple[Path | None, Path]:
    """The checkpoint to resume from (if any) and the run directory to write to.

    A run resumed from ``ckpt_path=latest`` (or from any ``.../checkpoints/*.ckpt`` file of a run)
    keeps writing into that run's directory, so its TensorBoard curves continue.
    """
    ckpt = None
    if cfg.ckpt_path:
        ckpt = latest_checkpoint(cfg.runs_dir, cfg.experiment) if cfg.ckpt_path == "latest" else Path(cfg.ckpt_path)
        check_checkpoint(ckpt, cfg)
        if ckpt.parent.name == "checkpoints":
            return ckpt, ckpt.parent.parent
    run_dir = _hydra_output_dir() or Path(cfg.runs_dir, cfg.experiment, time.strftime("%Y-%m-%d_%H-%M-%S"))
    return ckpt, run_dir


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train RL² as configured; returns the fitted module, trainer and last meta-test summary.

    ``extra_callbacks`` are appended to the configured ones (used by tests and notebooks).
    """
    validate(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ckpt_path, run_dir = resolve_run(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    datamodule = TrialDataModule(env_cfg, cfg.seed, cfg.trainer.limit_train_batches)
    module = RL2Module(
        env=env_cfg,
        model=OmegaConf.to_container(cfg.model, resolve=True),
        algo=OmegaConf.to_container(cfg.algo, resolve=True),
        max_epochs=cfg.trainer.max_epochs,
    )
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, every_n_epochs=1, save_top_k=1)
    ]
    metatest = None
    if cfg.metatest.enabled:
        mt = OmegaConf.to_container(cfg.metatest, resolve=True)
        mt.pop("enabled")
        metatest = MetaTestCallback(**mt, run_dir=str(run_dir))
        callbacks.append(metatest)
    callbacks.extend(extra_callbacks or [])
    logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="tb") if cfg.logger else False
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return {"module": module, "trainer": trainer, "metatest": metatest.last if metatest else None, "run_dir": run_dir}
