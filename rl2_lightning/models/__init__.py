"""Actor and critic TensorDict modules built from a trial env's specs."""

from rl2_lightning.models.agent import Agent, Init, make_agent, orthogonal_init
from rl2_lightning.models.encoders import TrialInputEncoder
from rl2_lightning.models.memory import GRUMemory, LSTMMemory, MLPMemory, NormReLUGRUMemory, TransformerMemory

__all__ = [
    "Agent",
    "GRUMemory",
    "Init",
    "LSTMMemory",
    "MLPMemory",
    "NormReLUGRUMemory",
    "TransformerMemory",
    "TrialInputEncoder",
    "make_agent",
    "orthogonal_init",
]
