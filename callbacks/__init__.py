"""Lightning callbacks of rl2-lightning."""

from callbacks.metatest import MetaTestCallback
from callbacks.stop import GracefulStop, TrainingStopped

__all__ = ["GracefulStop", "MetaTestCallback", "TrainingStopped"]
