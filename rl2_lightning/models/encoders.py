"""Encoders of the RL² input tuple (observation, previous action, previous reward, episode_done)."""

from __future__ import annotations

import torch
from torch import nn

#: the keys of a step's input tuple, in the order the encoder concatenates them
INPUT_KEYS = ("observation", "prev_action", "prev_reward", "episode_done")


class TrialInputEncoder(nn.Module):
    """Embeds the input tuple: ``[obs, one-hot prev action, prev reward, episode_done] -> ReLU(Linear)``.

    Vector observations (bandit placeholder, one-hot tabular state) are used as they are; image
    observations need a convolutional encoder instead.
    """

    def __init__(self, observation_size: int, num_actions: int, embed_size: int):
        super().__init__()
        self.linear = nn.Linear(observation_size + num_actions + 2, embed_size)

    def forward(self, observation, prev_action, prev_reward, episode_done) -> torch.Tensor:  # noqa: D102
        x = torch.cat([observation, prev_action, prev_reward, episode_done.to(observation.dtype)], -1)
        return torch.relu(self.linear(x))
