"""Pieces shared by every baseline: the policy call convention, tie-breaking, per-env hyperparameters.

A baseline is a :class:`~tensordict.nn.TensorDictModuleBase` that reads one step's input of the RL² trial
env (``prev_action``, ``prev_reward``, ``is_init`` ... see :mod:`rl2_lightning.envs.trial`), updates its
batched statistics (one row per env, reset where ``is_init``) and writes ``action``. It is scored by
:func:`rl2_lightning.evaluation.scoring.play_trials` exactly like an RL² actor.

Hyperparameters may be a number or a tensor with one value per env, so that one batched run scores a
whole grid (env ``i`` of a tuning run plays task ``i % num_tasks`` with grid point ``i // num_tasks``).
Randomness comes from torch's global generator (``torch.manual_seed`` before a run makes it repeatable).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase


def argmax_random_ties(scores: torch.Tensor) -> torch.Tensor:
    """``argmax`` over the last dim, ties broken uniformly at random; int64 ``scores.shape[:-1]``."""
    best = scores >= scores.max(-1, keepdim=True).values
    return torch.where(best, torch.rand_like(scores), -1.0).argmax(-1)


def per_env(value: float | torch.Tensor, batch: int, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """A hyperparameter as a ``[batch, 1]`` tensor (a number is broadcast, a ``[batch]`` tensor reshaped)."""
    value = torch.as_tensor(value, dtype=dtype, device=device)
    if value.numel() == 1:
        return value.reshape(1, 1).expand(batch, 1)
    if value.numel() != batch:
        raise ValueError(f"a per-env hyperparameter needs {batch} values, got {value.numel()}")
    return value.reshape(batch, 1)


class Baseline(TensorDictModuleBase):
    """Base class: keeps statistics across the steps of a trial and resets them where ``is_init``.

    Subclasses implement :meth:`reset_stats` (allocate / zero rows), :meth:`observe` (update from the
    step input) and :meth:`act`.
    """

    in_keys = ["observation", "prev_action", "prev_reward", "episode_done", "is_init"]
    out_keys = ["action"]

    def __init__(self, num_actions: int):
        super().__init__()
        self.num_actions = int(num_actions)
        self.batch_size: int | None = None

    def forward(self, td: TensorDictBase) -> TensorDictBase:  # noqa: D102
        init = td["is_init"].reshape(-1)
        if self.batch_size != init.shape[0]:
            self.batch_size = init.shape[0]
            self.allocate(self.batch_size, init.device)
        if init.any():
            self.reset_stats(init)
        self.observe(td)
        td.set("action", self.act(td))
        return td

    def allocate(self, batch: int, device: torch.device) -> None:
        """Create the statistics tensors for ``batch`` envs."""

    def reset_stats(self, mask: torch.Tensor) -> None:
        """Forget everything in the envs selected by ``mask`` (a new trial, hence a new task)."""

    def observe(self, td: TensorDictBase) -> None:
        """Update the statistics from the step input (previous action and reward, current observation)."""

    def act(self, td: TensorDictBase) -> torch.Tensor:
        """The action of every env, int64 ``[batch]``."""
        raise NotImplementedError


class RandomPolicy(Baseline):
    """Uniformly random actions (the tables' "Random" column)."""

    def act(self, td: TensorDictBase) -> torch.Tensor:  # noqa: D102
        return torch.randint(self.num_actions, (self.batch_size,), device=td.device)
