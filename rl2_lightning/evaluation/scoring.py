"""Scoring: a frozen policy plays one trial on each task of a fixed set; returns and metrics per episode.

Shared by the meta-test callback, the evaluation command, the baselines' tuning and the benchmarks, so
that RL² and every baseline are scored by the same code on the same tasks (common random numbers: the
callers seed the dynamics and the policies identically for every method).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type


def play_trials(
    env: EnvBase,
    policy,
    max_steps: int,
    exploration: ExplorationType = ExplorationType.RANDOM,
) -> TensorDictBase:
    """Reset ``env`` (new tasks in every env) and play one trial with ``policy``, no gradients.

    Returns the rollout, batch ``[num_envs, max_steps]``. ``max_steps`` is the trial length (the
    padded length for families with variable-length episodes).
    """
    with torch.no_grad(), set_exploration_type(exploration):
        return env.rollout(max_steps, policy, auto_reset=True, break_when_any_done=False)


def episode_returns(rollout: TensorDictBase, episodes_per_trial: int) -> torch.Tensor:
    """Sum of rewards per episode of the trial: ``[num_trials, episodes_per_trial]``.

    A step's reward belongs to the episode of the observation the action was taken from
    (``episode_index`` of the step's input). Steps past the trial end (padding) are ignored.
    """
    index = rollout["episode_index"].squeeze(-1)
    reward = rollout["next", "reward"].squeeze(-1)
    keep = index < episodes_per_trial
    if "valid" in rollout.keys():
        keep = keep & rollout["valid"].squeeze(-1)
    out = torch.zeros(index.shape[0], episodes_per_trial, dtype=reward.dtype, device=reward.device)
    return out.scatter_add_(1, index.clamp(max=episodes_per_trial - 1), reward * keep)


def play_task_set(
    env: EnvBase, policy, tasks: TensorDictBase, exploration: ExplorationType = ExplorationType.RANDOM
) -> tuple[torch.Tensor, TensorDictBase]:
    """One trial of ``policy`` on each task of ``tasks``, in order, ``env.batch_size[0]`` trials at a time.

    Sets the trial env to play ``tasks`` (:meth:`~rl2_lightning.envs.trial.SimulatorEnv.use_tasks`). Returns the per-episode returns ``[len(tasks), n]`` and
    the steps' ``episode_index``, ``valid`` and reward (what a family's ``trial_metrics`` reads).
    """
    base = getattr(env, "base_env", env)
    base.use_tasks(tasks)
    returns, steps = [], []
    for _ in range(-(-len(tasks) // env.batch_size[0])):
        rollout = play_trials(env, policy, base.trial_steps, exploration)
        returns.append(episode_returns(rollout, base.episodes_per_trial))
        steps.append(rollout.select("episode_index", "valid", ("next", "reward")))
    return torch.cat(returns)[: len(tasks)], torch.cat(steps)[: len(tasks)]


@contextmanager
def seeded(env: EnvBase, key: str, seed: int, task_set: str):
    """The one seeding of every scored play (meta-test callback, evaluation command, recordings): the
    dynamics from ``(seed, task_set)``, the policy's sampling from ``(seed, key)``, inside a fork of
    torch's global random state so that training's streams are untouched. The same ``seed`` therefore
    gives a policy the same score in a training run's meta-test and in the evaluation command."""
    from rl2_lightning.envs.tasks import derive_seed

    devices = [env.device] if getattr(env, "device", None) is not None and env.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        getattr(env, "base_env", env).simulator.seed(derive_seed(seed, task_set, "dynamics"))
        torch.manual_seed(derive_seed(seed, "evaluate", key))
        yield


def score_on_tasks(
    env: EnvBase, policy, tasks: TensorDictBase, *, key: str, seed: int, task_set: str,
    exploration: ExplorationType = ExplorationType.RANDOM,
) -> tuple[torch.Tensor, TensorDictBase]:
    """:func:`play_task_set` under :func:`seeded`: what every caller that scores a policy uses."""
    with seeded(env, key, seed, task_set):
        return play_task_set(env, policy, tasks, exploration)


def mean_ci95(x: torch.Tensor) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% confidence interval of a sample."""
    x = x.double().flatten()
    n = x.numel()
    half = 1.959964 * x.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return x.mean().item(), half


def summarize(returns: torch.Tensor) -> dict[str, float]:
    """Scalar metrics from per-episode returns ``[num_trials, n]``.

    Keys: ``trial_return`` / ``trial_return_ci95`` (total reward over the trial, as the paper's
    tables) and ``return_ep{k}`` (mean reward of the k-th episode, k from 0).
    """
    mean, half = mean_ci95(returns.sum(-1))
    out = {"trial_return": mean, "trial_return_ci95": half}
    per_episode = returns.double().mean(0)
    out.update({f"return_ep{k}": v.item() for k, v in enumerate(per_episode)})
    return out


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    """Slope of the least-squares line through ``(x, y)`` points; NaN with fewer than two."""
    if len(points) < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def late_slope(values: list[float], start: int = 3) -> float:
    """Least-squares slope per episode of ``values`` (mean reward per episode index) from index ``start`` on: how much
    a policy still improves within the trial once it has explored (``meta_test/late_slope``). NaN with fewer than
    two episodes from ``start``."""
    return least_squares_slope(list(enumerate(values))[start:])


#: the benchmark's levels: shares of the gap from the random policy to the strongest baseline
GAP_FRACTIONS = (0.5, 0.8, 0.9, 0.95, 1.0)


def level_crossings(
    frames: list[float],
    seconds: list[float],
    scores: list[float],
    low: float,
    high: float,
    fractions: tuple[float, ...] = GAP_FRACTIONS,
) -> list[dict[str, float | None]]:
    """When a learning curve first reaches each level ``low + f * (high - low)``.

    ``frames``, ``seconds`` and ``scores`` are the curve's meta-tests in order. For each fraction ``f``
    returns ``{"fraction", "level", "frames", "seconds"}``: the frames and seconds of the first meta-test
    scoring at or above the level (no interpolation between meta-tests), or ``None`` if none did.
    """
    out = []
    for f in fractions:
        level = low + f * (high - low)
        hit = next((i for i, s in enumerate(scores) if s >= level), None)
        out.append({
            "fraction": f,
            "level": level,
            "frames": None if hit is None else frames[hit],
            "seconds": None if hit is None else seconds[hit],
        })
    return out
