"""Lightning callbacks of rl2-lightning (built from ``conf/callbacks/``, each with the run directory)."""

from callbacks.checkpoint import RunCheckpoint
from callbacks.metatest import MetaTestCallback
from callbacks.progress import run_progress_bar
from callbacks.stop import GracefulStop, TrainingStopped

__all__ = ["GracefulStop", "MetaTestCallback", "RunCheckpoint", "TrainingStopped", "run_progress_bar"]
