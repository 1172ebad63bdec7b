"""Run directories, checkpoint files and resuming: what a kill, a full disk, a preemption or two runs
started in the same second can cost, and what they cannot.

- Run directories are claimed with ``mkdir``, which is atomic: two runs of one experiment started in
  the same second get ``<stamp>`` and ``<stamp>-1`` (Hydra's ``hydra.run.dir`` calls
  :func:`run_name` through the ``rl2_run_name`` resolver).
- Checkpoints are written by :class:`AtomicCheckpointIO`: into a hidden file beside the target, flushed
  to disk, then renamed over it, so a file named ``*.ckpt`` is always whole and a failed write (kill,
  full disk) leaves the previous checkpoint as it was. Nothing goes through ``/tmp``.
- ``ckpt_path=latest`` (:func:`latest_checkpoint`) takes the newest checkpoint of the experiment that
  loads, says which, and names any newer run it skipped because it holds none.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
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


def setup_logging(run_dir: Path) -> None:
    """Console and ``run_dir/train.log`` for this package's and Lightning's messages.

    Lightning's logger does not propagate to the root logger, so Hydra's job log would stay empty;
    both loggers get the run's file instead (the file of the run being resumed, for a resumed run).
    """
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    _console()
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, made atomic on local and network file systems.

    Lightning's default writes into a temporary file in ``$TMPDIR`` and moves it: across file systems
    the move is a copy, which a kill or a full disk cuts short, leaving a truncated ``last.ckpt``. Here
    the bytes go to ``.<name>.partial`` in the target's own directory, are flushed and fsync'ed, and the
    file is renamed over the target (``os.replace`` is atomic within a directory).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:  # noqa: D102
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except OSError as err:
            partial.unlink(missing_ok=True)
            raise OSError(
                f"could not write checkpoint {path} ({err.strerror or err}); the checkpoints already in "
                f"{path.parent} are untouched"
            ) from None


def read_checkpoint(path: Path, arg: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint file on the CPU; one-line errors for a missing or unreadable file.

    ``weights_only=False``: a Lightning checkpoint holds the run's hyperparameters and loop state. Only
    load checkpoints you trust.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{arg}={str(path)!r}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["hyper_parameters"], ckpt["state_dict"]  # noqa: B018 - both must be there
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise ValueError(f"{arg}={str(path)!r} is not a readable Lightning checkpoint ({type(err).__name__})") from None
    return ckpt


def is_intact(path: Path) -> bool:
    """Whether a checkpoint file loads (a truncated or foreign file does not)."""
    try:
        read_checkpoint(path)
        return True
    except (FileNotFoundError, ValueError):
        return False


def latest_checkpoint(runs_dir: str | Path, experiment: str) -> Path:
    """The newest checkpoint of the experiment that loads, over all its runs (``last.ckpt`` and the
    epoch checkpoints beside it). Prints which file it resumes, and warns about newer runs skipped
    because they hold no intact checkpoint (a run that died early, a truncated file)."""
    root = Path(runs_dir, experiment)
    found = sorted(root.glob("*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    chosen = next((p for p in found if is_intact(p)), None)
    if chosen is None:
        raise FileNotFoundError(f"ckpt_path=latest: no run of experiment {experiment!r} has an intact checkpoint under {root}")
    newer = sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and d != chosen.parent.parent and d.stat().st_mtime > chosen.stat().st_mtime
        and not any(is_intact(p) for p in d.glob("checkpoints/*.ckpt"))
    )
    if newer:
        say(f"ckpt_path=latest: skipping newer run(s) without an intact checkpoint: {', '.join(newer)}", logging.WARNING)
    skipped = [p.name for p in found[: found.index(chosen)] if p.parent == chosen.parent]
    if skipped:
        say(f"ckpt_path=latest: {', '.join(skipped)} in {chosen.parent} cannot be read; using {chosen.name}", logging.WARNING)
    say(f"ckpt_path=latest: resuming {chosen}")
    return chosen
