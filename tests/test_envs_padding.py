"""Variable-length episodes: TrialEnv pads each trial to its longest length (rl2_lightning/envs/trial.py)."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from rl2_lightning.envs import FixedTasks, TrialEnv
from rl2_lightning.envs.trial import TaskSimulator
from rl2_lightning.evaluation.scoring import episode_returns


class Corridor(TaskSimulator):
    """A task is a goal distance g; action 1 moves forward, the episode ends at the goal (+1) or
    after ``max_episode_steps``. Records which envs it was asked to simulate."""

    observation_shape = (1,)
    num_actions = 2
    max_episode_steps = 4

    def __init__(self, num_envs):
        super().__init__(num_envs)
        self.goal = torch.zeros(num_envs, dtype=torch.long)
        self.pos = torch.zeros(num_envs, dtype=torch.long)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.stepped = []

    def sample_tasks(self, n, generator):
        return TensorDict({"goal": torch.randint(1, 4, (n,), generator=generator)}, [n])

    def set_tasks(self, tasks, mask):
        self.goal[mask] = tasks["goal"]

    def reset_episodes(self, mask):
        self.pos[mask] = 0
        self.t[mask] = 0

    def step(self, action, active=None):
        self.stepped.append(active.clone())
        self.pos += action * active
        self.t += active
        at_goal = self.pos >= self.goal
        return at_goal.float(), at_goal | (self.t >= self.max_episode_steps)

    def observation(self):
        return self.pos.unsqueeze(-1).float()


def make_env(goals):
    sim = Corridor(len(goals))
    tasks = TensorDict({"goal": torch.tensor(goals)}, [len(goals)])
    return TrialEnv(sim, FixedTasks(tasks), episodes_per_trial=2)


def test_specs_and_padded_length():
    env = make_env([1, 3])
    check_env_specs(env)
    assert env.trial_steps == 2 * 4


def test_short_trials_idle_until_the_padded_end(play):
    env = make_env([1, 3])
    data = play(env, torch.ones(8, 2, dtype=torch.long))  # always forward
    # env 0 (goal 1): episodes end at steps 0 and 1 -> trial over after 2 steps; env 1 (goal 3): after 6
    trial_done = data["next", "trial_done"].squeeze(-1)
    assert trial_done[0].nonzero().flatten().tolist() == [1]
    assert trial_done[1].nonzero().flatten().tolist() == [5]
    valid = data["valid"].squeeze(-1)
    assert valid[0].tolist() == [True] * 2 + [False] * 6
    assert valid[1].tolist() == [True] * 6 + [False] * 2
    done = data["next", "done"].squeeze(-1)
    assert done[:, :7].sum() == 0 and done[:, 7].all()  # the TorchRL episode is the padded trial
    assert data["next", "reward"][~valid].abs().sum() == 0
    # the simulator was not asked to simulate finished trials
    stepped = torch.stack(env.simulator.stepped, 1)
    assert torch.equal(stepped, valid)
    assert episode_returns(data, 2).tolist() == [[1.0, 1.0], [1.0, 1.0]]
