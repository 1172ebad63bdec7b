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


class PixelInputEncoder(nn.Module):
    """The paper's maze encoder: two conv layers (16 filters, 5x5, stride 2) over the RGB frame,
    the one-hot previous action embedded to ``embed_size``, then one dense layer over
    ``[conv features, action embedding, prev reward, episode_done]``.

    Works on any number of leading batch dims (``[B, 3, H, W]`` while collecting, ``[B, T, 3, H, W]``
    in the loss). Integer frames (uint8, as the maze simulator keeps them) are scaled to [-1, 1] here
    (``x / 127.5 - 1``); float frames are used as they are.
    """

    def __init__(self, observation_shape: tuple[int, int, int], num_actions: int, embed_size: int):
        super().__init__()
        channels = observation_shape[0]
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, kernel_size=5, stride=2), nn.ReLU(),
            nn.Conv2d(16, 16, kernel_size=5, stride=2), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            conv_size = self.conv(torch.zeros(1, *observation_shape)).shape[-1]
        self.action = nn.Linear(num_actions, embed_size)
        self.dense = nn.Linear(conv_size + embed_size + 2, embed_size)

    def forward(self, observation, prev_action, prev_reward, episode_done) -> torch.Tensor:  # noqa: D102
        lead = observation.shape[:-3]
        if not observation.is_floating_point():
            observation = observation.to(prev_reward.dtype) * (1 / 127.5) - 1.0
        pixels = self.conv(observation.reshape(-1, *observation.shape[-3:])).reshape(*lead, -1)
        action = torch.relu(self.action(prev_action))
        x = torch.cat([pixels, action, prev_reward, episode_done.to(pixels.dtype)], -1)
        return torch.relu(self.dense(x))
