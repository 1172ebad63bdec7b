"""Run directories and the run's messages: what two runs started in the same second, or a run that
failed before writing anything, leave behind.

- Run directories are claimed with ``mkdir``, which is atomic: two runs of one experiment started in
  the same second get ``<stamp>`` and ``<stamp>-1`` (Hydra's ``hydra.run.dir`` calls
  :func:`run_name` through the ``rl2_run_name`` resolver).
- A resumed run keeps writing into its own directory (:func:`fold_into`); a run that failed before
  writing anything leaves no directory (:func:`remove_if_stub`).
- Checkpoint files (atomic writes, checksums, safe reading, ``ckpt_path=latest``) are
  :mod:`rl2_lightning.checkpoints`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("rl2_lightning")


class _Stderr(logging.StreamHandler):
    """A console handler that writes to whatever ``sys.stderr`` is when it emits (not when it was made)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _console() -> None:
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        console = _Stderr()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)
    log.propagate = False


@rank_zero_only
def say(message: str, level: int = logging.INFO) -> None:
    """One line for the user on the console and in the run's ``train.log`` (rank 0 only)."""
    _console()
    log.log(level, message)


#: Lightning's start-up lines that say nothing about this run (on a CPU machine, with our own loggers)
_NOISE = re.compile(
    r"^(GPU available: False|TPU available: False|💡 Tip:|`Trainer\(limit_train_batches=\d+\)` was configured"
    r"|`Trainer.fit` stopped: `max_epochs=\d+` reached)"
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        return not _NOISE.match(record.getMessage())


def quiet_lightning() -> None:
    """Filter Lightning's noise from the console and the run log (the run's own result line replaces
    ``Trainer.fit stopped``), and the deprecation warning of its tree utilities under this torch."""
    import warnings

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropNoise) for f in logger.filters):
        logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def setup_logging(run_dir: Path) -> None:
    """Console and ``run_dir/train.log`` for this package's and Lightning's messages.

    Lightning's logger does not propagate to the root logger, so Hydra's job log would stay empty;
    both loggers get the run's file instead (the file of the run being resumed, for a resumed run).
    """
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    _console()
    quiet_lightning()
    for name in ("rl2_lightning", "lightning.pytorch"):
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if getattr(h, "rl2_run_log", False)]:
            logger.removeHandler(h)
            h.close()
        if run_dir is not None and rank_zero_only.rank == 0:
            handler = logging.FileHandler(Path(run_dir) / "train.log")
            handler.setFormatter(fmt)
            handler.rl2_run_log = True
            logger.addHandler(handler)


#: run directories claimed by this process: Hydra resolves ``hydra.run.dir`` more than once
_CLAIMED: dict[tuple[str, str], str] = {}


def claim_run_dir(parent: str | Path, name: str) -> Path:
    """Create ``parent/name``, or ``parent/name-1``, ``-2``, ... the first that does not exist yet.

    ``mkdir`` fails if the directory exists, so two processes never claim the same one. A parent that
    cannot be created fails in one line naming ``runs_dir``.
    """
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"runs_dir: cannot create {parent} ({err.strerror or err})") from None
    for i in range(10_000):
        path = parent / (name if i == 0 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise OSError(f"runs_dir: cannot create {path} ({err.strerror or err})") from None
    raise OSError(f"runs_dir: {parent} holds 10000 runs named {name}-*")


def run_name(parent: str, stamp: str) -> str:
    """The ``rl2_run_name`` resolver: claims ``parent/stamp[-i]`` once per process and returns its name.

    Non-zero ranks of a torchrun launch only name the directory (rank 0 claims and writes it); Lightning's
    own DDP launcher passes the resolved directory to its children, so they never get here.
    """
    key = (parent, stamp)
    if key not in _CLAIMED:
        try:
            # Lightning reads the launcher's rank (torchrun, SLURM) from the environment at import
            _CLAIMED[key] = claim_run_dir(parent, stamp).name if rank_zero_only.rank == 0 else stamp
        except OSError as err:  # raised inside Hydra's interpolation, it would print pages: say it in one line
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
    return _CLAIMED[key]


def register_resolvers() -> None:
    """Register ``${rl2_run_name:parent,stamp}`` with OmegaConf (used by ``conf/train.yaml``)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rl2_run_name"):
        OmegaConf.register_new_resolver("rl2_run_name", run_name)


def new_run_dir(runs_dir: str | Path, experiment: str) -> Path:
    """A freshly claimed ``runs_dir/experiment/<date_time>[-i]`` (when Hydra did not make one)."""
    return claim_run_dir(Path(runs_dir, experiment), time.strftime("%Y-%m-%d_%H-%M-%S"))


def fold_into(stub: Path, run_dir: Path) -> None:
    """Move a fresh invocation's ``.hydra`` into the run it resumes and remove the empty stub directory."""
    if (stub / ".hydra").is_dir():
        dest = run_dir / ".hydra" / f"resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stub / ".hydra"), str(dest))
    remove_if_stub(stub)


def remove_if_stub(run_dir: Path) -> None:
    """Delete a run directory that holds nothing but Hydra's record of the invocation (a run that failed
    before training wrote anything), and its experiment's directory if that is left empty."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", ".lock"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: other runs of the experiment
            run_dir.parent.rmdir()


class RunLock:
    """An exclusive lock on a run directory while a process trains in it (``<run>/.lock``, ``flock``).

    A second process that would train into the same run (two ``ckpt_path=latest`` resumes at once) is
    refused in one line naming the holder, before it writes anything. The operating system drops the
    lock when the holder exits, however it exits, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._file = None

    def acquire(self) -> "RunLock":  # noqa: D102
        import fcntl
        import os
        import socket

        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise OSError(f"{self.path.parent} is in use by {holder}: wait for that run to end, or stop it, before resuming it") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:  # noqa: D102
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class MultirunSummary(Callback):
    """Hydra callback (``hydra.callbacks.summary`` in ``conf/train.yaml``): after a multirun (``-m``, a
    sweep) one table of every job's overrides and result (the last meta-test's trial return)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str]] = []

    def on_job_end(self, config, job_return, **kwargs) -> None:  # noqa: D102 - Hydra's callback API
        from hydra.core.utils import JobStatus

        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            result = "no meta-test" if value is None else f"{value:.2f}"
        else:
            result = f"failed: {type(job_return._return_value).__name__}"
        self.jobs.append((" ".join(job_return.overrides or []) or "(defaults)", result))

    def on_multirun_end(self, config, **kwargs) -> None:  # noqa: D102
        if not self.jobs:
            return
        width = max(len(o) for o, _ in self.jobs)
        lines = [f"{'#':>3}  {'overrides':<{width}}  result", *(f"{i:>3}  {o:<{width}}  {r}" for i, (o, r) in enumerate(self.jobs))]
        print("\nmultirun summary (meta-test trial return of each job):\n" + "\n".join(lines), flush=True)

