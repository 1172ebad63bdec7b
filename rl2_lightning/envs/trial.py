"""RL² trial semantics, shared by every task family.

A :class:`TaskSimulator` holds the batched dynamics of one family (bandit, tabular MDP, maze ...):
it knows how to install tasks, start an episode and take a step, and nothing about trials.
:class:`TrialEnv` turns any simulator into a TorchRL environment whose *episode is the trial*:

* ``reset()`` draws a new task from the task source for every env being reset;
* when an inner episode ends, the simulator restarts the episode on the *same* task inside
  ``step()``, and the next observation carries ``episode_done=True``;
* the policy input is ``observation``, one-hot ``prev_action``, ``prev_reward`` and
  ``episode_done`` (all zero at a trial start);
* ``done``/``terminated`` are raised only when the trial's last episode ends.

``episode_index`` (which episode of the trial the current observation belongs to) is exposed for
logging return per episode; it is not a policy input. ``trial_done`` marks the step that ends a trial:
GAE stops bootstrapping there.

The "no reset" ablation is ``trials_per_reset > 1``: the TorchRL episode then spans
that many consecutive trials, a new task is drawn inside ``step()`` when a trial ends (with
``episode_done`` raised, nothing else zeroed), so ``is_init`` - and with it the GRU reset - comes only
once per ``trials_per_reset`` trials, while returns still stop at every trial end.
"""

from __future__ import annotations

import abc
import warnings
import zlib
from typing import ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Binary, Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from rl2_lightning.envs.tasks import FixedTasks, TaskSource, derive_seed


def restore_generator(generator: torch.Generator, state: torch.Tensor, what: str = "a") -> None:
    """Set ``generator`` to a saved ``state``; a state saved on another kind of device (a CPU Mersenne
    Twister state on a CUDA generator, or the reverse: their sizes differ) cannot continue there, so the
    generator is seeded from the state's bytes instead, with a warning: the resumed run is reproducible
    from the checkpoint, but its stream is not the one the original device would have continued."""
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return
    seed = zlib.crc32(state.cpu().numpy().tobytes())
    generator.manual_seed(seed)
    warnings.warn(
        f"{what} random stream was saved on another kind of device than this run's {generator.device.type}; "
        f"it restarts from a seed derived from the saved state ({seed}), so this resume is not bit-identical",
        stacklevel=2,
    )


class EngineRestarted(RuntimeError):
    """A simulator's external engine died and was restarted: the trials in flight are lost.

    Raised from :meth:`TaskSimulator.step`; the data module answers by collecting the batch anew.
    """


#: every task family by name: a :class:`TaskSimulator` subclass that sets ``family`` is entered here when
#: its module is imported (the one registry; ``rl2_lightning.envs.FAMILIES`` is this dict)
FAMILIES: dict[str, type["TaskSimulator"]] = {}


class TaskSimulator(abc.ABC):
    """Batched dynamics of one task family over ``num_envs`` parallel tasks.

    A subclass that sets ``family = "<name>"`` is registered under that name when it is defined, so
    the command-line tools and ``make_simulator`` know it; configs name it by ``_target_`` either way.

    Subclasses keep their per-env state as tensors of leading size ``num_envs`` and implement every
    method as tensor operations over that batch (no Python loop over envs). The tensors that
    :meth:`step` and :meth:`observation` return go into the env's TensorDicts, where callers may
    modify them in place, so they must be fresh tensors, never views of the simulator's state.
    """

    #: the family's name in :data:`FAMILIES` (None: not registered by name)
    family: ClassVar[str | None] = None
    #: number of discrete actions
    num_actions: int
    #: shape of one observation (without the batch dimension)
    observation_shape: tuple[int, ...]
    #: dtype of :meth:`observation` (image simulators keep ``torch.uint8`` frames; the encoder scales them)
    observation_dtype: torch.dtype = torch.float32
    #: maximum number of steps of one episode
    max_episode_steps: int
    #: the family holds its own training and held-out pools (built with ``pool=``) instead of task-set files
    own_pools: bool = False
    #: the family drives external engines, so its envs may be split over worker processes
    runs_engines: bool = False
    #: mean reward of a state-action pair under the family's task distribution: what RL³'s inner
    #: estimates assume for a pair the trial has not visited yet (a fact of the distribution, not of a task)
    reward_prior: float = 0.0

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("family")
        if name:
            other = FAMILIES.get(name)
            if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(f"task family {name!r} is taken by {other.__module__}.{other.__qualname__}; "
                                 f"give {cls.__module__}.{cls.__qualname__} another family name")
            FAMILIES[name] = cls

    def __init__(self, num_envs: int, device: torch.device | str = "cpu"):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)

    def seed(self, seed: int) -> None:
        """Seed the simulator's own randomness (stochastic rewards and transitions)."""
        self.generator.manual_seed(int(seed))

    @abc.abstractmethod
    def sample_tasks(self, n: int, generator: torch.Generator) -> TensorDict:
        """Draw ``n`` tasks from the family's distribution, as a TensorDict of batch size ``[n]``."""

    @abc.abstractmethod
    def set_tasks(self, tasks: TensorDictBase, mask: torch.Tensor) -> None:
        """Install ``tasks`` (batch ``[mask.sum()]``) in the envs selected by the bool ``mask``."""

    @abc.abstractmethod
    def reset_episodes(self, mask: torch.Tensor) -> None:
        """Start a new episode, on the current task, in the envs selected by ``mask``."""

    @abc.abstractmethod
    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``action`` (int64 ``[num_envs]``) to every env.

        Returns ``(reward, episode_end)``: float ``[num_envs]`` and bool ``[num_envs]``. The
        simulator does not restart ended episodes itself; :class:`TrialEnv` decides that.

        Simulators without ``fixed_episode_steps`` (variable-length episodes, whose trials
        :class:`TrialEnv` pads) are called as ``step(action, active)`` with a bool ``[num_envs]``
        mask of the envs whose trial is still running; they need not simulate the others, whose
        results are discarded.
        """

    @abc.abstractmethod
    def observation(self) -> torch.Tensor:
        """The current observation of every env, ``[num_envs, *observation_shape]`` of ``observation_dtype``."""

    def close(self) -> None:
        """Release external resources (engines, processes); nothing by default."""

    @property
    def distribution(self) -> str:
        """Name of the task distribution (``bandit_k5``): the fixed task sets are ``data/tasks/<name>_<split>.pt``."""
        raise NotImplementedError

    def setting(self, episodes_per_trial: int) -> str:
        """Name of the setting, the distribution with a trial length (a row of the paper's tables)."""
        return f"{self.distribution}_n{episodes_per_trial}"

    def trial_metrics(self, steps: TensorDictBase, episodes_per_trial: int) -> dict[str, float]:
        """Family-specific meta-test metrics from played trials (``episode_index``, ``valid``, reward per
        step, ``[num_trials, T]``); none by default (mazes: the paper's Table 3 columns)."""
        return {}


class SimulatorEnv(EnvBase):
    """Base of the TorchRL environments over a :class:`TaskSimulator` and a :class:`TaskSource`.

    Holds what :class:`TrialEnv` and the plain :class:`~rl2_lightning.envs.episode.EpisodeEnv`
    share: the action, reward and done specs, drawing tasks on reset, seeding and closing.
    Subclasses set the observation spec and define ``_reset`` and ``_step``.

    Args:
        simulator: the batched task dynamics; its ``num_envs`` is this env's batch size.
        task_source: where new tasks come from.
        device: device of the tensors; must be the simulator's device (the default).
    """

    def __init__(
        self,
        simulator: TaskSimulator,
        task_source: TaskSource,
        device: torch.device | str | None = None,
    ):
        device = simulator.device if device is None else torch.device(device)
        sim_device = simulator.device
        if device.type != sim_device.type or None not in (device.index, sim_device.index) and (
            device.index != sim_device.index
        ):
            raise ValueError(f"device={device} differs from the simulator's device {sim_device}")
        super().__init__(device=device, batch_size=torch.Size([simulator.num_envs]))
        device = self.device  # as TorchRL normalised it ("cuda" -> "cuda:<current>")
        self.simulator = simulator
        self.task_source = task_source
        n = simulator.num_envs
        self.action_spec = Categorical(simulator.num_actions, shape=(n,), device=device)
        self.reward_spec = Unbounded(shape=(n, 1), device=device)
        flag = Categorical(2, shape=(n, 1), dtype=torch.bool, device=device)
        self.full_done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(n,), device=device
        )
        #: index of this env among a rank's env processes (set by make_trial_env; see set_rng_state)
        self.worker = 0

    def use_tasks(self, tasks: TensorDictBase) -> None:
        """Play ``tasks`` in order from the next reset on (a fixed set: meta-test, evaluation)."""
        self.task_source = FixedTasks(tasks)

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The random streams of the dynamics and of the task draws (what a checkpoint keeps).

        Public (not ``_``-prefixed) so that TorchRL's ``ParallelEnv`` forwards the call to its workers.
        """
        return {"simulator": self.simulator.generator.get_state(), "tasks": self.task_source.generator.get_state()}

    def set_rng_state(self, state: dict | list[dict]) -> None:
        """Restore :meth:`rng_state`; given one state per worker (a ``ParallelEnv`` sends every worker the
        same list), take this worker's."""
        if isinstance(state, (list, tuple)):
            state = state[self.worker]
        restore_generator(self.simulator.generator, state["simulator"], "the simulator's")
        restore_generator(self.task_source.generator, state["tasks"], "the task draws'")

    def _reset_mask(self, tensordict: TensorDictBase | None) -> torch.Tensor:
        """Bool ``[num_envs]``: the envs to reset (all of them when there is no ``_reset`` entry)."""
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if mask is None:
            return torch.ones(self.batch_size, dtype=torch.bool, device=self.device)
        return mask.reshape(self.batch_size)

    def _draw_tasks(self, mask: torch.Tensor, num_new: int) -> None:
        """Install new tasks in the ``num_new`` envs selected by ``mask`` and start their first episode."""
        self.simulator.set_tasks(self.task_source.next(num_new), mask)
        self.simulator.reset_episodes(mask)

    def _make_tensordict(self, entries: dict[str, torch.Tensor], done: torch.Tensor) -> TensorDict:
        """The output of ``_reset`` / ``_step``: ``entries`` plus the done flags (``terminated = done``)."""
        entries.update(done=done, terminated=done.clone(), truncated=torch.zeros_like(done))
        # Every entry is a fresh tensor with the spec's shape and dtype on this device, so TensorDict's
        # per-entry validation is skipped: it costs more than a whole bandit step.
        return TensorDict._new_unsafe(entries, batch_size=self.batch_size, device=self.device)

    def _set_seed(self, seed: int | None) -> None:
        if seed is not None:
            # Separate streams: with one seed for both, the first reward draws would repeat the
            # parameters of the first tasks (e.g. a 1-env bandit's first pull of arm 0 always paid 0).
            self.simulator.seed(derive_seed(seed, "dynamics"))
            self.task_source.seed(derive_seed(seed, "tasks"))

    def close(self, *, raise_if_closed: bool = True) -> None:  # noqa: D102
        self.simulator.close()
        super().close(raise_if_closed=raise_if_closed)


class TrialEnv(SimulatorEnv):
    """A TorchRL environment whose episode is one RL² trial of ``episodes_per_trial`` episodes.

    Families with variable-length episodes (mazes) have trials of variable length; so that every
    collected row is still one whole trial, their TorchRL episode is padded to the longest possible
    trial (``episodes_per_trial x max_episode_steps``): after the trial's last episode the env idles,
    with ``valid=False`` and zero reward, until ``done``. ``trial_done`` still marks the real end.

    Args:
        simulator: the batched task dynamics; its ``num_envs`` is this env's batch size.
        task_source: where the tasks of new trials come from (a seeded stream for training, a fixed
            held-out set for meta-test).
        episodes_per_trial: number of episodes ``n`` in one trial.
        trials_per_reset: trials per TorchRL episode; 1 is RL² proper, more is the no-reset ablation.
        device: device of the tensors (the simulator's device).
    """

    _reward_key = "reward"

    def __init__(
        self,
        simulator: TaskSimulator,
        task_source: TaskSource,
        episodes_per_trial: int,
        trials_per_reset: int = 1,
        device: torch.device | str | None = None,
    ):
        if episodes_per_trial < 1:
            raise ValueError(f"episodes_per_trial must be >= 1, got {episodes_per_trial}")
        if trials_per_reset < 1:
            raise ValueError(f"trials_per_reset must be >= 1, got {trials_per_reset}")
        super().__init__(simulator, task_source, device)
        device = self.device
        self.episodes_per_trial = int(episodes_per_trial)
        self.trials_per_reset = int(trials_per_reset)
        n, a = simulator.num_envs, simulator.num_actions
        self._episode_index = torch.zeros(n, dtype=torch.long, device=device)
        self._trial_index = torch.zeros(n, dtype=torch.long, device=device)
        self._eye = torch.eye(a, device=device)
        self._padded = getattr(simulator, "fixed_episode_steps", None) is None
        if self._padded and self.trials_per_reset > 1:
            raise ValueError("env.trials_per_reset > 1 (no-reset ablation) needs fixed-length episodes")
        self._steps = torch.zeros(n, dtype=torch.long, device=device)
        self._finished = torch.zeros(n, dtype=torch.bool, device=device)

        self.observation_spec = Composite(
            observation=_observation_spec(simulator, n, device),
            prev_action=Binary(n=a, shape=(n, a), dtype=torch.float32, device=device),
            prev_reward=Unbounded(shape=(n, 1), device=device),
            episode_done=Binary(n=1, shape=(n, 1), dtype=torch.bool, device=device),
            episode_index=Unbounded(shape=(n, 1), dtype=torch.long, device=device),
            trial_done=Binary(n=1, shape=(n, 1), dtype=torch.bool, device=device),
            valid=Binary(n=1, shape=(n, 1), dtype=torch.bool, device=device),
            shape=(n,),
            device=device,
        )

    @property
    def trial_steps(self) -> int:
        """Steps of one trial: exact for fixed-length episodes, the padded length otherwise."""
        fixed = getattr(self.simulator, "fixed_episode_steps", None)
        return (fixed or self.simulator.max_episode_steps) * self.episodes_per_trial

    def _observation(self, prev_action, prev_reward, episode_done, trial_done) -> dict[str, torch.Tensor]:
        return {
            "observation": self.simulator.observation(),
            "prev_action": prev_action,
            "prev_reward": prev_reward,
            "episode_done": episode_done,
            "episode_index": self._episode_index.unsqueeze(-1).clone(),
            "trial_done": trial_done,
            # whether the next action is a real step of the trial (False while a padded trial idles)
            "valid": (~self._finished).unsqueeze(-1),
        }

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDict:
        n = self.batch_size[0]
        mask = self._reset_mask(tensordict)
        num_new = int(mask.sum())
        if num_new:
            self._start_trials(mask, num_new)
            self._trial_index.masked_fill_(mask, 0)
            self._steps.masked_fill_(mask, 0)
            self._finished.masked_fill_(mask, False)
        a = self.simulator.num_actions
        done = torch.zeros(n, 1, dtype=torch.bool, device=self.device)
        zeros = torch.zeros(n, 1, device=self.device)
        out = self._observation(torch.zeros(n, a, device=self.device), zeros, done.clone(), done.clone())
        return self._make_tensordict(out, done)

    def _start_trials(self, mask: torch.Tensor, num_new: int) -> None:
        """Draw new tasks for the envs in ``mask`` and start their first episode."""
        self._draw_tasks(mask, num_new)
        self._episode_index.masked_fill_(mask, 0)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        action = tensordict.get("action").reshape(-1)
        if self._padded:
            active = ~self._finished
            reward, episode_end = self.simulator.step(action, active)
            reward, episode_end = reward * active, episode_end & active
        else:
            reward, episode_end = self.simulator.step(action)
        self._episode_index.add_(episode_end)  # in place: `+=` would go through EnvBase.__setattr__
        trial_done = (self._episode_index >= self.episodes_per_trial) & ~self._finished
        # Inner episode ends restart the same task; a finished trial waits for reset() (new task).
        restart = episode_end & ~trial_done
        if restart.any():
            self.simulator.reset_episodes(restart)
        done = trial_done
        if self._padded:  # the TorchRL episode ends at the padded length, not at the trial's end
            self._finished.logical_or_(trial_done)
            self._steps.add_(1)
            done = self._steps >= self.trial_steps
        elif self.trials_per_reset > 1:  # no-reset ablation: the next trial starts inside the episode
            self._trial_index.add_(trial_done)
            done = self._trial_index >= self.trials_per_reset
            next_trial = trial_done & ~done
            num_next = int(next_trial.sum())
            if num_next:
                self._start_trials(next_trial, num_next)
        reward = reward.unsqueeze(-1)
        # Each entry gets its own tensor (no two keys share storage), so in-place edits stay local.
        out = self._observation(
            self._eye.index_select(0, action),
            reward.clone(),
            episode_end.unsqueeze(-1),
            trial_done.unsqueeze(-1).clone(),
        )
        out["reward"] = reward
        return self._make_tensordict(out, done.unsqueeze(-1))


def _observation_spec(simulator: TaskSimulator, n: int, device):
    """Unbounded floats, or the full range of an integer dtype (uint8 frames)."""
    dtype = getattr(simulator, "observation_dtype", torch.float32)
    shape = (n, *simulator.observation_shape)
    if dtype.is_floating_point:
        return Unbounded(shape=shape, dtype=dtype, device=device)
    info = torch.iinfo(dtype)
    return Bounded(low=info.min, high=info.max, shape=shape, dtype=dtype, device=device)
