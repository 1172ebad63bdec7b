"""``train(cfg)``: check a config, instantiate the parts (env, module, callbacks, logger, trainer), and fit.

``train.py`` at the top level is the Hydra entry point; tests compose the config and call
:func:`train` directly. Run directories live in :mod:`rl2_lightning.runs`; checkpoint files (writing,
verifying, resuming, warm starts) in :mod:`rl2_lightning.checkpoints`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from rl2_lightning.callbacks import MetaTestCallback, TrainingStopped, run_progress_bar
from rl2_lightning.config import NETWORKS, check_hydra_run, container, validate
from rl2_lightning.datamodule import TrialDataModule
from rl2_lightning.ddp import strategy_for
from rl2_lightning.module import RL2Module
from rl2_lightning.checkpoints import (
    AtomicCheckpointIO,
    apply_warm_start,
    check_checkpoint,
    latest_checkpoint,
    warm_start_weights,
)
from rl2_lightning.runs import RunLock, fold_into, new_run_dir, say, setup_logging


# training_step pulls its batch from the iterator on purpose (no prefetch: see RL2Module.training_step)
warnings.filterwarnings("ignore", message=r".*`dataloader_iter`.*")


def _hydra_output_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def check_task_sets(cfg: DictConfig) -> None:
    """Fail at start-up, in one line, when the meta-test has no task set for this setting or asks
    for more tasks than the set holds (instead of dying after the first epoch)."""
    metatest = (cfg.callbacks or {}).get("metatest")
    if metatest is None:
        return
    env = instantiate(cfg.env)
    if getattr(env.simulator_class, "own_pools", False):
        from rl2_lightning.envs.maze.layout import POOL_SIZE

        size = POOL_SIZE
    else:
        from rl2_lightning.envs.tasks import available_distributions, load_task_set, task_set_path

        spec = env.spec_env()
        distribution = spec.simulator.distribution
        spec.close()
        path = task_set_path(distribution, metatest.task_set, env.tasks_dir)
        if not path.exists():
            raise FileNotFoundError(
                f"no {metatest.task_set} task set for {distribution} ({path} is missing); task sets exist for "
                f"{', '.join(available_distributions(env.tasks_dir))}: write yours with `rl2-tasks generate "
                f"--simulator <module.Class> --out <folder>` and set env.tasks_dir=<folder>, or set callbacks.metatest=null"
            )
        size = len(load_task_set(distribution, metatest.task_set, tasks_dir=env.tasks_dir))
    if metatest.num_tasks > size:
        raise ValueError(
            f"callbacks.metatest.num_tasks={metatest.num_tasks} is not allowed; the {metatest.task_set} set holds {size} tasks"
        )


def check_devices(cfg: DictConfig) -> None:
    """Refuse, in one line with the fix, a device count that would silently become CPU processes.

    ``trainer.devices=4`` with ``accelerator=auto`` means 4 GPUs where there are GPUs; where there are
    none, Lightning runs 4 CPU processes instead, each with its own envs (for ``maze_9x9``, 32 ViZDoom
    engines), however few cores the machine has. CPU processes are run only when asked for with
    ``trainer.accelerator=cpu``, and never more than there are cores.
    """
    import os

    devices, accelerator = cfg.trainer.devices, cfg.trainer.accelerator
    if not isinstance(devices, int) or devices <= 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_process = cfg.env.num_envs
    if accelerator == "auto" and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.devices={devices} asks for {devices} GPUs, and this machine has none: Lightning would start "
            f"{devices} CPU training processes ({devices * per_process} envs) on {cores} cores. Use a GPU machine, "
            f"or ask for CPU processes: trainer.accelerator=cpu trainer.devices={min(devices, cores)}"
        )
    if accelerator == "cpu" and devices > cores:
        raise ValueError(
            f"trainer.devices={devices} CPU processes on {cores} cores would only wait on each other; "
            f"use trainer.devices={cores} or fewer"
        )


def resolve_run(cfg: DictConfig) -> tuple[Path | None, Path]:
    """The checkpoint to resume from (if any) and the run directory to write to.

    A run resumed from ``ckpt_path=latest`` (or from any ``.../checkpoints/*.ckpt`` file of a run)
    keeps writing into that run's directory, so its TensorBoard curves continue (:func:`train` folds the
    directory Hydra made for this invocation into it once it holds the run's lock).
    """
    ckpt = None
    hydra_dir = _hydra_output_dir()
    if cfg.ckpt_path:
        ckpt = (
            latest_checkpoint(cfg.runs_dir, cfg.experiment, own_dir=hydra_dir)
            if cfg.ckpt_path == "latest" else Path(cfg.ckpt_path)
        )
        check_checkpoint(ckpt, cfg, groups=("model", "env", "algo"))
        if ckpt.parent.name == "checkpoints":
            return ckpt, ckpt.parent.parent
    return ckpt, hydra_dir or new_run_dir(cfg.runs_dir, cfg.experiment)


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train RL² as configured; returns the fitted module, trainer, last meta-test summary and run directory.

    ``extra_callbacks`` are appended to the configured ones (used by tests and notebooks).
    """
    setup_logging(None)
    check_hydra_run()
    validate(cfg)
    check_devices(cfg)
    check_task_sets(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    warm = warm_start_weights(cfg.init_from, cfg) if cfg.init_from and not cfg.ckpt_path else None
    ckpt_path, run_dir = resolve_run(cfg)
    lock = RunLock(run_dir).acquire() if rank_zero_only.rank == 0 else None  # before anything is written there
    hydra_dir = _hydra_output_dir()
    if lock is not None and hydra_dir is not None and hydra_dir.resolve() != run_dir.resolve():
        fold_into(hydra_dir, run_dir)  # a resumed run: this invocation's .hydra goes into the run it continues
    try:
        return _fit(cfg, ckpt_path, run_dir, warm, extra_callbacks)
    finally:
        if lock is not None:
            lock.release()


def _fit(cfg: DictConfig, ckpt_path: Path | None, run_dir: Path, warm, extra_callbacks) -> dict[str, Any]:
    setup_logging(run_dir)
    say(f"run directory: {run_dir}" + (f" (resuming {ckpt_path})" if ckpt_path else ""))
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = TrialDataModule(instantiate(cfg.env), cfg.seed, cfg.trainer.limit_train_batches)
    module = RL2Module(
        env=container(cfg.env), model=container(cfg.model), algo=container(cfg.algo),
        optimizer=container(cfg.optimizer), max_epochs=cfg.trainer.max_epochs,
    )
    if warm is not None:
        apply_warm_start(module, *warm, cfg.init_from)
        fresh = sorted(set(NETWORKS) - {k.split(".", 1)[0] for k in warm[0]})
        fresh = f" (the {' and '.join(fresh)} freshly initialised)" if fresh else ""
        say(f"warm start from {cfg.init_from}: its weights{fresh}, {warm[1]:,} frames already trained")
    elif cfg.init_from:
        say(f"init_from={cfg.init_from} not applied: resuming {ckpt_path} (its weights include the warm start)")
    callbacks = [instantiate(node)(run_dir=str(run_dir)) for node in (cfg.callbacks or {}).values() if node is not None]
    callbacks += extra_callbacks or []
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(run_progress_bar())
    logger = instantiate(cfg.logger)(save_dir=str(run_dir)) if cfg.logger is not None else False
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(trust=cfg.trust_checkpoint)], strategy=strategy_for(cfg.trainer.strategy, cfg.trainer.num_nodes),
    )
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except SIGTERMException:  # Lightning's own stop after an epoch's checkpoint: same exit status as ours
        raise TrainingStopped(143) from None
    metatest = next((c for c in callbacks if isinstance(c, MetaTestCallback)), None)
    if metatest is None or metatest.last is None:  # no meta-test: still say where the result is
        say(f"result: no meta-test ({int(module.frames):,} frames); checkpoint {Path(run_dir) / 'checkpoints' / 'last.ckpt'}")
    else:
        say(end_of_run_line(metatest, int(module.frames), run_dir))
        if logger:  # TensorBoard's hparams view: the run's result instead of the placeholder -1
            logger.log_metrics({"hp_metric": metatest.last["trial_return"]}, step=int(module.frames))
    return {"module": module, "trainer": trainer, "metatest": metatest.last if metatest else None, "run_dir": run_dir}


def end_of_run_line(metatest: MetaTestCallback, frames: int, run_dir: Path) -> str:
    """The run's result in one line: the last meta-test's trial return ± 95% CI, the best classical
    baseline on the same tasks (where the family has them), the frames, and the checkpoint to use."""
    last = metatest.last
    line = (f"result: meta-test trial return {last['trial_return']:.2f} ± {last['trial_return_ci95']:.2f} "
            f"({metatest.num_tasks} {metatest.task_set} tasks, {frames:,} frames)")
    curves = metatest.baseline_curves or {}
    if curves:
        from rl2_lightning.baselines.registry import display_name

        key, curve = max(curves.items(), key=lambda kv: float(kv[1].sum()))
        line += f"; best baseline {display_name(key)} {float(curve.sum()):.2f}"
    return line + f"; checkpoint {Path(run_dir) / 'checkpoints' / 'last.ckpt'}"
