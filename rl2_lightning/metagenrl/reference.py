"""Exact reference returns of a task set: the oracle that knows the task, and the uniformly random policy.

Both are expectations computed from the task parameters (no sampling): per task, the expected total
reward of a trial of ``n`` episodes. Bandits: ``n max_a p_a`` and ``n mean_a p_a``. MDPs with
fixed-length episodes from state 0: finite-horizon value iteration, and the uniform policy's evaluation.
They bound every learner's score and normalise the tuning score of a learned objective.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from rl2_lightning.baselines.planning import expected_next_value, value_iteration


def oracle_returns(tasks: TensorDictBase, episodes_per_trial: int, episode_steps: int) -> torch.Tensor:
    """``[N]`` expected trial return of the policy that knows each task."""
    if "p" in tasks.keys():
        return tasks["p"].max(-1).values * episodes_per_trial
    Q = value_iteration(tasks["mu"], tasks["P"], episode_steps)
    return Q[:, 0, 0].max(-1).values * episodes_per_trial


def random_returns(tasks: TensorDictBase, episodes_per_trial: int, episode_steps: int) -> torch.Tensor:
    """``[N]`` expected trial return of the uniformly random policy."""
    if "p" in tasks.keys():
        return tasks["p"].mean(-1) * episodes_per_trial
    mu, P = tasks["mu"], tasks["P"]
    v = mu.new_zeros(mu.shape[:2])
    for _ in range(episode_steps):
        v = (mu + expected_next_value(P, v)).mean(-1)
    return v[:, 0] * episodes_per_trial


def gap_closed(score: float, random: float, oracle: float) -> float:
    """Share of the gap from the random policy to the oracle that ``score`` closes."""
    return (score - random) / (oracle - random)
