"""``train(cfg)``: build datamodule, module, callbacks, logger and trainer from a config, and fit.

``train.py`` at the top level is the Hydra entry point; tests compose the config and call
:func:`train` directly. Run directories, checkpoint writing and ``ckpt_path=latest`` live in
:mod:`rl2_lightning.runs`.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks import GracefulStop, MetaTestCallback, TrainingStopped
from rl2_lightning.config import validate
from rl2_lightning.datamodule import TrialDataModule
from rl2_lightning.module import RL2Module
from rl2_lightning.runs import AtomicCheckpointIO, latest_checkpoint, new_run_dir, read_checkpoint, say, setup_logging


# training_step pulls its batch from the iterator on purpose (no prefetch: see RL2Module.training_step)
warnings.filterwarnings("ignore", message=r".*`dataloader_iter`.*")


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def check_checkpoint(path: Path, cfg: DictConfig) -> None:
    """Fail early, in one line, on a missing, corrupt or incompatible checkpoint file."""
    hparams = read_checkpoint(path)["hyper_parameters"]
    for group in ("model", "env"):
        for key, value in OmegaConf.to_container(cfg[group], resolve=True).items():
            if group == "env" and key == "num_envs":
                continue  # the batch size may change on resume
            if hparams.get(group, {}).get(key, value) != value:
                raise ValueError(
                    f"ckpt_path={str(path)!r} was trained with {group}.{key}={hparams[group][key]!r}, "
                    f"but the config has {value!r}"
                )


def check_task_sets(cfg: DictConfig) -> None:
    """Fail at start-up, in one line, when the meta-test has no task set for this setting or asks
    for more tasks than the set holds (instead of dying after the first epoch)."""
    if not cfg.metatest.enabled:
        return
    from rl2_lightning.config import env_kwargs

    if cfg.env.family == "maze":
        from rl2_lightning.envs.maze.layout import POOL_SIZE

        size = POOL_SIZE
    else:
        from rl2_lightning.envs import make_simulator
        from rl2_lightning.envs.tasks import TASKS_DIR, load_task_set, task_set_path

        setting = make_simulator(cfg.env.family, 1, **env_kwargs(cfg.env)).setting
        path = task_set_path(setting, cfg.metatest.task_set)
        if not path.exists():
            have = sorted({p.stem.rsplit("_", 1)[0] for p in TASKS_DIR.glob("*.pt")})
            raise FileNotFoundError(
                f"no {cfg.metatest.task_set} task set for {setting} ({path} is missing); task sets exist for "
                f"{', '.join(have)}: train one of those, or set metatest.enabled=false"
            )
        size = len(load_task_set(setting, cfg.metatest.task_set))
    if cfg.metatest.num_tasks > size:
        raise ValueError(
            f"metatest.num_tasks={cfg.metatest.num_tasks} is not allowed; the {cfg.metatest.task_set} set holds {size} tasks"
        )


def resolve_run(cfg: DictConfig) -> tuple[Path | None, Path]:
    """The checkpoint to resume from (if any) and the run directory to write to.

    A run resumed from ``ckpt_path=latest`` (or from any ``.../checkpoints/*.ckpt`` file of a run)
    keeps writing into that run's directory, so its TensorBoard curves continue; the directory Hydra
    made for this invocation is then folded into it (its ``.hydra`` kept as ``.hydra/resumed-<time>``).
    """
    ckpt = None
    hydra_dir = _hydra_output_dir()
    if cfg.ckpt_path:
        ckpt = latest_checkpoint(cfg.runs_dir, cfg.experiment) if cfg.ckpt_path == "latest" else Path(cfg.ckpt_path)
        check_checkpoint(ckpt, cfg)
        if ckpt.parent.name == "checkpoints":
            run_dir = ckpt.parent.parent
            if hydra_dir is not None and hydra_dir.resolve() != run_dir.resolve():
                fold_into(hydra_dir, run_dir)
            return ckpt, run_dir
    return ckpt, hydra_dir or new_run_dir(cfg.runs_dir, cfg.experiment)


def fold_into(stub: Path, run_dir: Path) -> None:
    """Move a fresh invocation's ``.hydra`` into the run it resumes and remove the empty stub directory."""
    if (stub / ".hydra").is_dir():
        dest = run_dir / ".hydra" / f"resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stub / ".hydra"), str(dest))
    remove_if_stub(stub)


def remove_if_stub(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but Hydra's record of the invocation (a run that failed
    before training wrote anything)."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train RL² as configured; returns the fitted module, trainer and last meta-test summary.

    ``extra_callbacks`` are appended to the configured ones (used by tests and notebooks).
    """
    setup_logging(None)
    validate(cfg)
    check_task_sets(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ckpt_path, run_dir = resolve_run(cfg)
    setup_logging(run_dir)
    say(f"run directory: {run_dir}" + (f" (resuming {ckpt_path})" if ckpt_path else ""))
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
        ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, every_n_epochs=1, save_top_k=1),
        GracefulStop(run_dir / "checkpoints"),
    ]
    metatest = None
    if cfg.metatest.enabled:
        mt = OmegaConf.to_container(cfg.metatest, resolve=True)
        mt.pop("enabled")
        metatest = MetaTestCallback(**mt, run_dir=str(run_dir))
        callbacks.append(metatest)
    callbacks.extend(extra_callbacks or [])
    logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="tb") if cfg.logger else False
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir), plugins=[AtomicCheckpointIO()]
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except SIGTERMException:  # Lightning's own stop after an epoch's checkpoint: same exit status as ours
        raise TrainingStopped(143) from None
    return {"module": module, "trainer": trainer, "metatest": metatest.last if metatest else None, "run_dir": run_dir}
