"""Lightning callbacks of rl2-lightning (built from ``conf/callbacks/``, each with the run directory)."""

from rl2_lightning.callbacks.checkpoint import RunCheckpoint
from rl2_lightning.callbacks.metatest import MetaTestCallback
from rl2_lightning.callbacks.progress import run_progress_bar
from rl2_lightning.callbacks.stop import GracefulStop, TrainingStopped

__all__ = ["GracefulStop", "MetaTestCallback", "RunCheckpoint", "TrainingStopped", "run_progress_bar"]
