"""Task families and the RL² trial environment.

Data flow: a family's :class:`~rl2_lightning.envs.trial.TaskSimulator` (batched dynamics) +
a :class:`~rl2_lightning.envs.tasks.TaskSource` (where tasks come from) -> :class:`TrialEnv`
(trial semantics) -> ``TransformedEnv(..., InitTracker())`` (marks trial starts for the GRU).
"""

from __future__ import annotations

import torch
from torchrl.envs import InitTracker, TransformedEnv

from rl2_lightning.envs.bandit import BernoulliBandit
from rl2_lightning.envs.episode import EpisodeEnv
from rl2_lightning.envs.tabular import RiverSwim, TabularMDP
from rl2_lightning.envs.tasks import FixedTasks, SampledTasks, TaskSource, derive_seed, excluded_tasks
from rl2_lightning.envs.trial import TaskSimulator, TrialEnv

def _maze(**kwargs) -> TaskSimulator:
    """The maze simulator, imported on demand (it needs ViZDoom)."""
    from rl2_lightning.envs.maze.doom import MazeSimulator

    return MazeSimulator(**kwargs)


FAMILIES: dict[str, type[TaskSimulator]] = {
    "bandit": BernoulliBandit,
    "tabular": TabularMDP,
    "riverswim": RiverSwim,
    "maze": _maze,
}

# Task distributions that have fixed held-out / tuning sets under data/tasks/ (one per distinct
# distribution: the trial length n does not change the tasks).
TASK_SETTINGS: dict[str, dict] = {
    "bandit_k5": {"family": "bandit", "num_arms": 5},
    "bandit_k10": {"family": "bandit", "num_arms": 10},
    "bandit_k50": {"family": "bandit", "num_arms": 50},
    "tabular_s10_a5": {"family": "tabular", "num_states": 10, "num_actions": 5, "episode_steps": 10},
    "riverswim_s10": {"family": "riverswim", "num_states": 10, "episode_steps": 20},
}


def make_simulator(family: str, num_envs: int, device: torch.device | str = "cpu", **kwargs) -> TaskSimulator:
    """Build the batched simulator of a task family by name (``bandit``, ``tabular``, ``riverswim``)."""
    if family not in FAMILIES:
        raise ValueError(f"env.family={family!r} is unknown; allowed: {', '.join(FAMILIES)}")
    try:
        return FAMILIES[family](num_envs=num_envs, device=device, **kwargs)
    except TypeError as err:  # an argument the family does not take
        raise ValueError(f"env: bad argument for family {family!r}: {err}") from None


def make_trial_env(
    family: str,
    num_envs: int,
    episodes_per_trial: int,
    *,
    trials_per_reset: int = 1,
    seed: int = 0,
    rank: int = 0,
    worker: int = 0,
    task_set: str | None = None,
    device: torch.device | str = "cpu",
    init_tracker: bool = True,
    **family_kwargs,
) -> TrialEnv | TransformedEnv:
    """A ready RL² trial env.

    With ``task_set=None`` tasks come from a training stream seeded by ``(seed, rank, worker)`` that
    excludes the family's held-out and tuning sets; with ``task_set="heldout"`` or ``"tuning"`` they are
    that fixed set, in order. ``init_tracker`` appends TorchRL's ``InitTracker`` (``is_init`` marks
    trial starts, where the GRU resets). ``trials_per_reset > 1`` is the no-reset ablation (see
    :class:`TrialEnv`).
    """
    if family == "maze":  # a maze simulator holds one pool: the training one, or the held-out one
        if task_set == "tuning":
            raise ValueError("task_set='tuning' is not defined for mazes; allowed: heldout or None (training)")
        family_kwargs = {**family_kwargs, "pool": "heldout" if task_set == "heldout" else "train"}
    sim = make_simulator(family, num_envs, device, **family_kwargs)
    source: TaskSource
    if task_set is None:
        # Maze pools are disjoint by construction (checked when generated); other families exclude
        # their fixed sets from the stream by fingerprint.
        exclude = None if family == "maze" else excluded_tasks(sim.setting)
        source = SampledTasks(sim.sample_tasks, derive_seed(seed, "train", "tasks", rank, worker), exclude, sim.device)
    else:
        from rl2_lightning.envs.tasks import load_task_set

        source = FixedTasks(sim.task_set() if family == "maze" else load_task_set(sim.setting, task_set))
    sim.seed(derive_seed(seed, "train" if task_set is None else task_set, "dynamics", rank, worker))
    env = TrialEnv(sim, source, episodes_per_trial, trials_per_reset, device=sim.device)
    env.worker = worker
    return TransformedEnv(env, InitTracker()) if init_tracker else env


__all__ = [
    "FAMILIES",
    "TASK_SETTINGS",
    "BernoulliBandit",
    "EpisodeEnv",
    "FixedTasks",
    "RiverSwim",
    "SampledTasks",
    "TabularMDP",
    "TaskSimulator",
    "TrialEnv",
    "make_simulator",
    "make_trial_env",
]
