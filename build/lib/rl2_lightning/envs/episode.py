"""A plain episodic TorchRL environment over any task simulator, without the RL² trial mechanism.

:class:`EpisodeEnv` is what an ordinary RL library would offer: each TorchRL episode is one episode
of a fresh task, ``done`` is raised at every episode end, and the policy sees only
``observation``. It is the reference that ``benchmarks/env_throughput.py`` measures
:class:`~rl2_lightning.envs.trial.TrialEnv` against (the cost of the trial mechanism), and a
convenient env for single-episode baselines.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Composite, Unbounded

from rl2_lightning.envs.trial import SimulatorEnv, TaskSimulator
from rl2_lightning.envs.tasks import TaskSource


class EpisodeEnv(SimulatorEnv):
    """Ordinary episodic semantics over a :class:`TaskSimulator`.

    ``reset()`` draws a new task from ``task_source`` and starts its episode in every env being
    reset; ``done``/``terminated`` are raised when the episode ends (after one pull for a bandit,
    after ``episode_steps`` steps for a tabular MDP). The only observation key is ``observation``.

    Args:
        simulator: the batched task dynamics; its ``num_envs`` is this env's batch size.
        task_source: where the task of each new episode comes from.
        device: device of the tensors (the simulator's device).
    """

    def __init__(
        self,
        simulator: TaskSimulator,
        task_source: TaskSource,
        device: torch.device | str | None = None,
    ):
        super().__init__(simulator, task_source, device)
        n = simulator.num_envs
        self.observation_spec = Composite(
            observation=Unbounded(shape=(n, *simulator.observation_shape), device=self.device),
            shape=(n,),
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None, **kwargs) -> TensorDict:
        mask = self._reset_mask(tensordict)
        num_new = int(mask.sum())
        if num_new:
            self._draw_tasks(mask, num_new)
        done = torch.zeros(self.batch_size[0], 1, dtype=torch.bool, device=self.device)
        return self._make_tensordict({"observation": self.simulator.observation()}, done)

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        reward, episode_end = self.simulator.step(tensordict.get("action").reshape(-1))
        entries = {"observation": self.simulator.observation(), "reward": reward.unsqueeze(-1)}
        return self._make_tensordict(entries, episode_end.unsqueeze(-1))
