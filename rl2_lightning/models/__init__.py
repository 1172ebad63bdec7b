"""Actor and critic TensorDict modules built from a trial env's specs."""

from rl2_lightning.models.agent import Agent, make_agent
from rl2_lightning.models.encoders import TrialInputEncoder

__all__ = ["Agent", "TrialInputEncoder", "make_agent"]
