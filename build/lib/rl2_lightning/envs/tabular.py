"""Tabular MDP task families: the paper's random MDPs and the RiverSwim chain.

Both are served by one batched simulator, :class:`TabularMDP`, whose task is a transition tensor
``P[s, a, s']`` and a mean-reward table ``mu[s, a]``; the families differ only in how tasks are drawn.
"""

from __future__ import annotations

from typing import Annotated

import torch
from tensordict import TensorDict, TensorDictBase

from rl2_lightning.components import Range
from rl2_lightning.envs.trial import TaskSimulator


def sample_dirichlet_ones(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Draws from Dirichlet(1, ..., 1) along the last dim: normalised Exp(1) (= Gamma(1, 1)) draws."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    e = -torch.log1p(-u)  # Exp(1); log1p(-u) is finite because u < 1
    return e / e.sum(-1, keepdim=True)


def sample_categorical(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of ``probs`` (``[B, n]``) by inverse-CDF sampling; int64 ``[B]``."""
    return sample_from_cdf(probs.cumsum(-1), generator)


def sample_from_cdf(cdf: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """:func:`sample_categorical` from the rows' cumulative sums ``cdf`` (``[B, n]``); int64 ``[B]``."""
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device)
    index = (cdf <= u).sum(-1)
    return index.clamp_(max=cdf.shape[-1] - 1)  # guards against cumsum rounding below 1


class TabularMDP(TaskSimulator):
    """Batched finite MDPs with ``num_states`` states, ``num_actions`` actions and fixed-length episodes.

    Tasks (the paper's random MDPs): ``mu[s, a] ~ N(1, 1)`` and ``P[s, a, :] ~ Dirichlet(1)``.
    Rewards are ``N(mu[s, a], reward_std**2)``. Every episode starts in state 0 and lasts
    ``episode_steps`` steps. The observation is the one-hot current state. Install tasks with
    :meth:`set_tasks` only: it also caches the cumulative transition probabilities that
    :meth:`step` samples from.
    """

    family = "tabular"

    reward_prior = 1.0  # mu ~ N(1, 1)

    def __init__(
        self,
        num_envs: int,
        num_states: Annotated[int, Range(2)] = 10,
        num_actions: Annotated[int, Range(2)] = 5,
        episode_steps: Annotated[int, Range(1)] = 10,
        reward_std: Annotated[float, Range(0.0)] = 1.0,
        device: torch.device | str = "cpu",
    ):
        if num_states < 2:
            raise ValueError(f"num_states must be >= 2, got {num_states}")
        if num_actions < 2:
            raise ValueError(f"num_actions must be >= 2, got {num_actions}")
        if episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1, got {episode_steps}")
        if reward_std < 0:
            raise ValueError(f"reward_std must be >= 0, got {reward_std}")
        super().__init__(num_envs, device)
        self.num_states, self.num_actions = int(num_states), int(num_actions)
        self.fixed_episode_steps = self.max_episode_steps = int(episode_steps)
        self.observation_shape = (self.num_states,)
        self.reward_std = float(reward_std)
        n, s, a = num_envs, self.num_states, self.num_actions
        self.P = torch.zeros(n, s, a, s, device=self.device)
        self._P_cdf = torch.zeros(n, s, a, s, device=self.device)  # P.cumsum(-1), for sampling
        self.mu = torch.zeros(n, s, a, device=self.device)
        self.state = torch.zeros(n, dtype=torch.long, device=self.device)
        self.t = torch.zeros(n, dtype=torch.long, device=self.device)
        # Flat offsets so that one index_select fetches P[i, s_i, a_i, :] for every env i.
        self._row_offset = torch.arange(n, device=self.device) * (s * a)
        self._eye = torch.eye(s, device=self.device)

    @property
    def distribution(self) -> str:
        """Name of the task distribution, used for the fixed task set files."""
        return f"tabular_s{self.num_states}_a{self.num_actions}"

    def setting(self, episodes_per_trial: int) -> str:
        """``tabular_n<n>`` for the paper's MDPs (|S| = 10, |A| = 5, T = 10), ``<distribution>_n<n>`` otherwise."""
        if (self.num_states, self.num_actions, self.fixed_episode_steps) == (10, 5, 10):
            return f"tabular_n{episodes_per_trial}"
        return f"{self.distribution}_n{episodes_per_trial}"

    def sample_tasks(self, n: int, generator: torch.Generator) -> TensorDict:  # noqa: D102
        s, a = self.num_states, self.num_actions
        mu = 1.0 + torch.randn(n, s, a, generator=generator, device=generator.device)
        P = sample_dirichlet_ones((n, s, a, s), generator)
        return TensorDict({"P": P, "mu": mu}, batch_size=[n])

    def set_tasks(self, tasks: TensorDictBase, mask: torch.Tensor) -> None:  # noqa: D102
        P = tasks["P"].to(self.device)
        self.P[mask] = P
        self._P_cdf[mask] = P.cumsum(-1)
        self.mu[mask] = tasks["mu"].to(self.device)

    def reset_episodes(self, mask: torch.Tensor) -> None:  # noqa: D102
        self.state.masked_fill_(mask, 0)
        self.t.masked_fill_(mask, 0)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        idx = self._row_offset + self.state * self.num_actions + action
        reward = self.mu.view(-1).index_select(0, idx)
        if self.reward_std > 0:
            noise = torch.randn(self.num_envs, generator=self.generator, device=self.device)
            reward = reward + self.reward_std * noise
        next_cdf = self._P_cdf.view(-1, self.num_states).index_select(0, idx)
        self.state = sample_from_cdf(next_cdf, self.generator)
        self.t += 1
        return reward, self.t >= self.fixed_episode_steps

    def observation(self) -> torch.Tensor:  # noqa: D102
        return self._eye.index_select(0, self.state)


class RiverSwim(TabularMDP):
    """Randomised RiverSwim chains (Osband, Russo & Van Roy 2013; the seed notebook's task family).

    States ``0 .. num_states-1`` form a river; action 0 swims left (downstream), action 1 swims right
    (upstream). Every episode starts at state 0 and lasts ``episode_steps`` steps; rewards are
    deterministic (``reward_std = 0``). Per task, exactly these are randomised:

    * ``r_small ~ U(0.001, 0.009)``: reward for swimming left in state 0 (the classic chain uses 0.005);
    * ``p_right ~ U(0, 1)``: probability that swimming right moves one state right;
    * ``stay ~ U(0, 1)``: of the remaining ``1 - p_right``, the fraction that stays put; the rest
      drifts one state left (clamped at state 0).

    Fixed across tasks: swimming left always moves one state left (stays in state 0), and swimming
    right in the last state pays ``r_large = 1``.
    """

    family = "riverswim"

    R_LARGE = 1.0
    R_SMALL_RANGE = (0.001, 0.009)
    reward_prior = 0.0  # all pairs but two pay nothing

    def __init__(
        self,
        num_envs: int,
        num_states: Annotated[int, Range(2)] = 10,
        episode_steps: Annotated[int, Range(1)] = 20,
        device: torch.device | str = "cpu",
    ):
        super().__init__(num_envs, num_states, 2, episode_steps, reward_std=0.0, device=device)

    @property
    def distribution(self) -> str:  # noqa: D102
        return f"riverswim_s{self.num_states}"

    def setting(self, episodes_per_trial: int) -> str:  # noqa: D102
        return f"riverswim_n{episodes_per_trial}"

    def sample_tasks(self, n: int, generator: torch.Generator) -> TensorDict:  # noqa: D102
        dev, s = generator.device, self.num_states
        u = torch.rand(n, 3, generator=generator, device=dev)
        lo, hi = self.R_SMALL_RANGE
        r_small, p_right = lo + (hi - lo) * u[:, 0], u[:, 1]
        p_stay = (1 - p_right) * u[:, 2]
        p_left = 1 - p_right - p_stay
        states = torch.arange(s, device=dev)
        left, right = (states - 1).clamp(min=0), (states + 1).clamp(max=s - 1)
        P = torch.zeros(n, s, 2, s, device=dev)
        P[:, states, 0, left] = 1.0
        swim = P[:, :, 1, :]
        swim[:, states, right] += p_right[:, None]
        swim[:, states, states] += p_stay[:, None]
        swim[:, states, left] += p_left[:, None]
        mu = torch.zeros(n, s, 2, device=dev)
        mu[:, 0, 0] = r_small
        mu[:, s - 1, 1] = self.R_LARGE
        return TensorDict({"P": P, "mu": mu}, batch_size=[n])
