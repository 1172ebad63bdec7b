"""Lightning's ``ModelCheckpoint``, writing into the run directory's ``checkpoints/``."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with ``dirpath = <run_dir>/checkpoints``; every other argument is Lightning's."""

    def __init__(self, run_dir: str | Path, **kwargs):
        super().__init__(dirpath=Path(run_dir) / "checkpoints", **kwargs)
