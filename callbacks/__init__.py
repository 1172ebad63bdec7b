"""Lightning callbacks of rl2-lightning."""

from callbacks.metatest import MetaTestCallback

__all__ = ["MetaTestCallback"]
