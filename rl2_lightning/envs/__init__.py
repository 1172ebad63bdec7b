"""Task families and the RL² trial environment.

Data flow: a family's :class:`~rl2_lightning.envs.trial.TaskSimulator` (batched dynamics) +
a :class:`~rl2_lightning.envs.tasks.TaskSource` (where tasks come from) -> :class:`TrialEnv`
(trial semantics) -> ``TransformedEnv(..., InitTracker())`` (marks trial starts for the GRU).
"""

from __future__ import annotations

from typing import Annotated, Callable, Optional, Union

import torch
from torchrl.envs import Compose, InitTracker, TransformedEnv

from rl2_lightning.components import Range

from rl2_lightning.envs.bandit import BernoulliBandit
from rl2_lightning.envs.episode import EpisodeEnv
from rl2_lightning.envs.inner import InnerEstimates
from rl2_lightning.envs.tabular import RiverSwim, TabularMDP
from rl2_lightning.envs.tasks import FixedTasks, SampledTasks, TaskSource, derive_seed, excluded_tasks
from rl2_lightning.envs.trial import FAMILIES, TaskSimulator, TrialEnv
from rl2_lightning.errors import first_line


#: families whose module is imported only when asked for by name (the maze needs ViZDoom)
_LAZY_FAMILIES = {"maze": "rl2_lightning.envs.maze.doom"}

#: Task distributions of the library that have fixed held-out / tuning sets under data/tasks/ (one per
#: distinct distribution: the trial length n does not change the tasks); the key is the simulator's
#: ``distribution``. A user's own family writes its sets with ``rl2-tasks generate --simulator``.
TASK_DISTRIBUTIONS: dict[str, dict] = {
    "bandit_k5": {"family": "bandit", "num_arms": 5},
    "bandit_k10": {"family": "bandit", "num_arms": 10},
    "bandit_k50": {"family": "bandit", "num_arms": 50},
    "tabular_s10_a5": {"family": "tabular", "num_states": 10, "num_actions": 5, "episode_steps": 10},
    "riverswim_s10": {"family": "riverswim", "num_states": 10, "episode_steps": 20},
}

SimulatorFactory = Union[str, Callable[..., TaskSimulator]]


def known_families() -> list[str]:
    """Every family name :func:`family_class` resolves without a dotted path."""
    return sorted(set(FAMILIES) | set(_LAZY_FAMILIES))


def family_class(name: str) -> type[TaskSimulator]:
    """The simulator class of a registered family name (``bandit``) or of a dotted path
    (``mymodule.ThreeArms``, imported on demand); one-line error otherwise."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name in _LAZY_FAMILIES:
        import importlib

        importlib.import_module(_LAZY_FAMILIES[name])
        return FAMILIES[name]
    if "." in name:
        from hydra.utils import get_class

        try:
            cls = get_class(name)
        except Exception as err:  # noqa: BLE001 - any import failure gets the same one-line error
            raise ValueError(f"simulator {name!r} cannot be imported ({first_line(err)})") from None
        if not (isinstance(cls, type) and issubclass(cls, TaskSimulator)):
            raise ValueError(f"simulator {name!r} is not a TaskSimulator subclass")
        return cls
    raise ValueError(f"env family {name!r} is unknown; known: {', '.join(known_families())} (or a module.Class path)")


def _simulator_class(simulator: SimulatorFactory):
    """The class behind a family name, a class or a ``functools.partial`` of one."""
    if isinstance(simulator, str):
        return family_class(simulator)
    return getattr(simulator, "func", simulator)


def make_simulator(
    simulator: SimulatorFactory, num_envs: int, device: torch.device | str = "cpu", **kwargs
) -> TaskSimulator:
    """Build a batched simulator: ``simulator`` is a family name (``bandit``, ``tabular``, ``riverswim``,
    ``maze``, or a registered one of yours), a dotted path to a :class:`TaskSimulator` class, the class,
    or a ``functools.partial`` of one holding its sizes."""
    if isinstance(simulator, str):
        simulator = family_class(simulator)
    try:
        return simulator(num_envs=num_envs, device=device, **kwargs)
    except TypeError as err:  # an argument the family does not take
        raise ValueError(f"env.simulator: bad argument: {err}") from None


def make_trial_env(
    simulator: SimulatorFactory,
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
    inner_estimates: bool = False,
    inner_prior: float | None = None,
    tasks_dir: str | None = None,
    **simulator_kwargs,
) -> TrialEnv | TransformedEnv:
    """A ready RL² trial env.

    With ``task_set=None`` tasks come from a training stream seeded by ``(seed, rank, worker)`` that
    excludes the distribution's held-out and tuning sets; with ``task_set="heldout"`` or ``"tuning"`` they
    are that fixed set, in order. Simulators that hold their own pools (mazes: ``own_pools``) are built
    on the training or the held-out pool instead; their ``tuning`` set is the training pool in order
    (hyperparameters are chosen on the mazes training draws from, never on the held-out ones). ``init_tracker`` appends TorchRL's ``InitTracker``
    (``is_init`` marks trial starts, where the memory resets). ``trials_per_reset > 1`` is the no-reset
    ablation (see :class:`TrialEnv`). ``inner_estimates`` appends RL³'s inner estimates to the observation
    (:func:`inner_estimates_for`). ``tasks_dir`` is a folder of the user's task sets, searched before the
    library's (:func:`~rl2_lightning.envs.tasks.task_set_dirs`).
    """
    own_pools = getattr(_simulator_class(simulator), "own_pools", False)
    if own_pools:
        simulator_kwargs = {**simulator_kwargs, "pool": "heldout" if task_set == "heldout" else "train"}
    sim = make_simulator(simulator, num_envs, device, **simulator_kwargs)
    source: TaskSource
    if task_set is None:
        # Own pools are disjoint by construction (checked when generated); other families exclude
        # their fixed sets from the stream by fingerprint.
        exclude = None if own_pools else excluded_tasks(sim.distribution, tasks_dir)
        source = SampledTasks(sim.sample_tasks, derive_seed(seed, "train", "tasks", rank, worker), exclude, sim.device)
    else:
        from rl2_lightning.envs.tasks import load_task_set

        source = FixedTasks(sim.task_set() if own_pools else load_task_set(sim.distribution, task_set, tasks_dir=tasks_dir))
    sim.seed(derive_seed(seed, "train" if task_set is None else task_set, "dynamics", rank, worker))
    env = TrialEnv(sim, source, episodes_per_trial, trials_per_reset, device=sim.device)
    env.worker = worker
    transforms = ([inner_estimates_for(env, inner_prior)] if inner_estimates else []) + ([InitTracker()] if init_tracker else [])
    if not transforms:
        return env
    return TransformedEnv(env, transforms[0] if len(transforms) == 1 else Compose(*transforms))


def inner_estimates_for(env: TrialEnv, prior: float | None = None) -> InnerEstimates:
    """RL³'s :class:`InnerEstimates` sized for ``env``'s family and trial (one-line error for a family
    without a discrete state, such as the mazes); ``prior`` is the reward assumed for unvisited pairs
    (default: the family's mean, ``reward_prior``; above it: optimism, an exploration bonus)."""
    sim = env.simulator
    steps = getattr(sim, "fixed_episode_steps", None)
    if steps is None or len(sim.observation_shape) != 1:
        raise ValueError(
            f"env.inner_estimates=true needs a family with a discrete state and fixed-length episodes; "
            f"{type(sim).__name__} has neither (see docs/rl3.md)"
        )
    return InnerEstimates(
        num_states=sim.observation_shape[0], num_actions=sim.num_actions, episode_steps=steps,
        trial_steps=env.trial_steps * env.trials_per_reset, reward_prior=sim.reward_prior if prior is None else prior,
    )


class TrialEnvFactory:
    """The env component (``conf/env/<family>.yaml``): a family's simulator and the trial layout.

    Args:
        simulator: a :class:`TaskSimulator` class or a ``functools.partial`` of one with its sizes
            (Hydra builds it from the ``env.simulator`` node); it is called with ``num_envs`` and
            ``device`` (and ``pool`` for families with their own pools).
        episodes_per_trial: episodes ``n`` in one trial.
        num_envs: trials collected per iteration on each device.
        trials_per_reset: > 1 is the no-reset ablation (the memory kept across that many trials).
        workers: env processes per device (TorchRL ``ParallelEnv``), each stepping
            ``num_envs / workers`` simulators; only for families that drive external engines.
        prefetch: double-buffered collection: the envs and a copy of the actor live in a TorchRL
            ``AsyncCollector`` worker process, which collects the next batch while the current one
            trains, with the weights pushed to it when a batch arrives (so each batch is collected by
            the policy of one update earlier; PPO's ratio is taken to the policy that collected).
        inner_estimates: RL³: append the trial's model-based action values and counts of the current
            state to the observation (:class:`~rl2_lightning.envs.inner.InnerEstimates`).
        inner_prior: the mean reward RL³'s inner model assumes for an unvisited state-action pair
            (None: the family's own mean; higher values make the inner values optimistic).
        tasks_dir: a folder of your own task sets (``rl2-tasks generate --simulator ... --out DIR``),
            searched before the library's ``data/tasks``.
    """

    def __init__(
        self,
        simulator: Callable[..., TaskSimulator],
        episodes_per_trial: Annotated[int, Range(1)] = 10,
        num_envs: Annotated[int, Range(1)] = 256,
        trials_per_reset: Annotated[int, Range(1)] = 1,
        workers: Annotated[int, Range(1)] = 1,
        prefetch: bool = False,
        inner_estimates: bool = False,
        inner_prior: Optional[float] = None,
        tasks_dir: Optional[str] = None,
    ):
        cls = _simulator_class(simulator)
        if num_envs % workers:
            raise ValueError(f"env.workers={workers} is not allowed; it must divide env.num_envs={num_envs}")
        if workers > 1 and not getattr(cls, "runs_engines", False):
            raise ValueError(f"env.workers > 1 is only for families that drive engines; {cls.__name__} is batched tensor code")
        self.simulator, self.episodes_per_trial, self.num_envs = simulator, episodes_per_trial, num_envs
        if prefetch and workers > 1:
            raise ValueError("env.prefetch=true collects in one worker process; it needs env.workers=1")
        self.trials_per_reset, self.workers, self.prefetch = trials_per_reset, workers, bool(prefetch)
        self.inner_estimates = bool(inner_estimates)
        if inner_prior is not None and not inner_estimates:
            raise ValueError("env.inner_prior is RL³'s; it needs env.inner_estimates=true")
        self.inner_prior = inner_prior
        self.tasks_dir = tasks_dir

    @property
    def simulator_class(self) -> type[TaskSimulator]:
        """The simulator's class."""
        return _simulator_class(self.simulator)

    def make(
        self, num_envs: int | None = None, *, task_set: str | None = None, episodes_per_trial: int | None = None,
        device: torch.device | str = "cpu", **kwargs,
    ) -> TrialEnv | TransformedEnv:
        """A trial env of ``num_envs`` (default: the configured number) on the training stream or a task
        set; ``kwargs`` go to :func:`make_trial_env` (``seed``, ``rank``, ``worker``, ``init_tracker``)."""
        return make_trial_env(
            self.simulator, num_envs or self.num_envs, episodes_per_trial or self.episodes_per_trial,
            trials_per_reset=self.trials_per_reset if task_set is None else 1, task_set=task_set, device=device,
            inner_estimates=self.inner_estimates, inner_prior=self.inner_prior, tasks_dir=self.tasks_dir, **kwargs,
        )

    def spec_env(self) -> TrialEnv | TransformedEnv:
        """A one-env trial env, only to read specs and sizes (close it after use); with the inner
        estimates' transform when they are on, since they change the observation's size."""
        sim = make_simulator(self.simulator, 1, **({"pool": "heldout"} if getattr(self.simulator_class, "own_pools", False) else {}))
        env = TrialEnv(sim, SampledTasks(sim.sample_tasks), self.episodes_per_trial, self.trials_per_reset)
        return TransformedEnv(env, inner_estimates_for(env, self.inner_prior)) if self.inner_estimates else env


__all__ = [
    "FAMILIES",
    "TASK_DISTRIBUTIONS",
    "TrialEnvFactory",
    "BernoulliBandit",
    "EpisodeEnv",
    "FixedTasks",
    "InnerEstimates",
    "RiverSwim",
    "SampledTasks",
    "TabularMDP",
    "TaskSimulator",
    "TrialEnv",
    "make_simulator",
    "make_trial_env",
]
