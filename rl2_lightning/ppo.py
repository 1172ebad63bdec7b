"""The maths of PPO over whole trials, as small pure functions (tested against hand-computed numbers)."""

from __future__ import annotations

import torch


def next_trial_values(values: torch.Tensor, trial_done: torch.Tensor) -> torch.Tensor:
    """Value of the next state within the same trial: ``V(s_{t+1})``, and 0 where the trial ends.

    ``values`` and ``trial_done`` are ``[B, T, 1]``; each row is one whole trial (or, for the no-reset
    ablation, consecutive whole trials), so the row's last step always ends a trial. Inner episode ends
    are *not* boundaries: the trial's return flows across them (DESIGN.md §3.4).
    """
    shifted = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    return shifted.masked_fill(trial_done, 0.0)


def minibatch_indices(num_trials: int, num_minibatches: int, generator: torch.Generator | None = None):
    """A random partition of the trial axis into ``num_minibatches`` nearly equal index sets."""
    perm = torch.randperm(num_trials, generator=generator)
    return list(torch.tensor_split(perm, num_minibatches))


def explained_variance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - Var[target - prediction] / Var[target]`` (nan when the target is constant)."""
    var = target.var()
    return 1 - (target - prediction).var() / var if var > 0 else torch.full_like(var, float("nan"))


def returns_per_episode(
    reward: torch.Tensor, episode_index: torch.Tensor, trial_done: torch.Tensor, episodes_per_trial: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean total reward per trial and mean reward of each episode index, over the trials of a batch.

    Inputs are ``[B, T, 1]``: the step rewards, the episode index of each step's observation and the
    trial-end flags. Works for rows holding several trials (no-reset ablation) as well.
    """
    num_trials = trial_done.sum().clamp(min=1)
    idx = episode_index.reshape(-1).clamp(max=episodes_per_trial - 1)
    per_episode = torch.zeros(episodes_per_trial, dtype=reward.dtype, device=reward.device)
    per_episode.scatter_add_(0, idx, reward.reshape(-1))
    return reward.sum() / num_trials, per_episode / num_trials
