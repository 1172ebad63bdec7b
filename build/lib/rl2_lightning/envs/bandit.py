"""Bernoulli multi-armed bandits: ``k`` arms, ``p_i ~ U[0, 1]``, one pull per episode."""

from __future__ import annotations

from typing import Annotated

import torch
from tensordict import TensorDict, TensorDictBase

from rl2_lightning.components import Range
from rl2_lightning.envs.trial import TaskSimulator


class BernoulliBandit(TaskSimulator):
    """``num_envs`` Bernoulli bandits with ``num_arms`` arms each.

    A task is the vector of arm probabilities ``p`` (``[num_arms]``); pulling arm ``a`` pays 1 with
    probability ``p[a]`` and 0 otherwise. An episode is one pull (the paper's convention), and the
    observation is a constant 1: everything the agent learns comes through prev action and reward.
    """

    family = "bandit"

    fixed_episode_steps = 1
    max_episode_steps = 1
    observation_shape = (1,)
    reward_prior = 0.5  # p ~ U(0, 1)

    def __init__(self, num_envs: int, num_arms: Annotated[int, Range(2)] = 5, device: torch.device | str = "cpu"):
        if num_arms < 2:
            raise ValueError(f"num_arms must be >= 2 (a bandit needs a choice), got {num_arms}")
        super().__init__(num_envs, device)
        self.num_actions = int(num_arms)
        self.p = torch.zeros(num_envs, num_arms, device=self.device)

    @property
    def distribution(self) -> str:
        """Name of the task distribution, used for the fixed task set files."""
        return f"bandit_k{self.num_actions}"

    def sample_tasks(self, n: int, generator: torch.Generator) -> TensorDict:  # noqa: D102
        p = torch.rand(n, self.num_actions, generator=generator, device=generator.device)
        return TensorDict({"p": p}, batch_size=[n])

    def set_tasks(self, tasks: TensorDictBase, mask: torch.Tensor) -> None:  # noqa: D102
        self.p[mask] = tasks["p"].to(self.device)

    def reset_episodes(self, mask: torch.Tensor) -> None:  # noqa: D102
        """A bandit episode has no state to reset."""

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        p = self.p.gather(1, action.unsqueeze(1)).squeeze(1)
        u = torch.rand(self.num_envs, generator=self.generator, device=self.device)
        return (u < p).to(torch.float32), torch.ones(self.num_envs, dtype=torch.bool, device=self.device)

    def observation(self) -> torch.Tensor:  # noqa: D102
        return torch.ones(self.num_envs, 1, device=self.device)
