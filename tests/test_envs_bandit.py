"""Bernoulli bandits: task distribution, rewards, one pull per episode, random-policy meta-test."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rl2_lightning.envs import BernoulliBandit, make_trial_env
from rl2_lightning.envs.tasks import load_task_set
from rl2_lightning.evaluation.scoring import episode_returns, play_trials, summarize


def test_sampled_arm_probabilities_are_uniform_on_0_1():
    sim = BernoulliBandit(1, num_arms=5)
    p = sim.sample_tasks(20_000, torch.Generator().manual_seed(0))["p"]
    assert p.shape == (20_000, 5)
    assert p.min() >= 0 and p.max() <= 1
    # U[0, 1]: mean 1/2, variance 1/12; 100k draws give standard errors of 1e-3 and 3e-4.
    assert abs(p.mean().item() - 0.5) < 0.005
    assert abs(p.var().item() - 1 / 12) < 0.002
    assert abs((p < 0.25).float().mean().item() - 0.25) < 0.005


def test_rewards_are_bernoulli_of_the_pulled_arm():
    num_envs = 40_000
    sim = BernoulliBandit(num_envs, num_arms=5)
    sim.seed(0)
    p = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    tasks = TensorDict({"p": p.expand(num_envs, 5)}, batch_size=[num_envs])
    sim.set_tasks(tasks, torch.ones(num_envs, dtype=torch.bool))
    action = torch.arange(num_envs) % 5  # each arm pulled by 8000 envs
    reward, episode_end = sim.step(action)
    assert episode_end.all() and reward.dtype == torch.float32
    assert set(reward.unique().tolist()) <= {0.0, 1.0}
    means = torch.stack([reward[action == a].mean() for a in range(5)])
    assert means[0] == 0 and means[4] == 1
    std_err = (p * (1 - p) / 8000).sqrt()
    assert ((means - p).abs() <= 4 * std_err + 1e-6).all(), means
    assert torch.equal(sim.observation(), torch.ones(num_envs, 1))


def test_an_episode_is_one_pull_and_a_trial_n_pulls(play):
    env = make_trial_env("bandit", 3, 10, num_arms=5)
    data = play(env, torch.zeros(25, 3, dtype=torch.long))
    assert data["next", "episode_done"].all()
    assert torch.equal(data["next", "done"].squeeze(-1)[0], (torch.arange(25) + 1) % 10 == 0)
    assert torch.equal(data["episode_index"].squeeze(-1)[0], torch.arange(25) % 10)


def test_num_arms_below_two_is_rejected():
    with pytest.raises(ValueError, match="num_arms"):
        BernoulliBandit(4, num_arms=1)


def test_random_policy_on_heldout_set_scores_half_the_pulls():
    """A uniformly random policy earns n/2 in expectation (E[p] = 1/2); meta-test must agree."""
    n = 10
    env = make_trial_env("bandit", 1000, n, task_set="heldout", num_arms=5, seed=0)
    gen = torch.Generator().manual_seed(0)

    def random_policy(td):
        return td.set("action", torch.randint(5, (1000,), generator=gen))

    rollout = play_trials(env, random_policy, max_steps=n)
    returns = episode_returns(rollout, n)
    assert returns.shape == (1000, n)
    metrics = summarize(returns)
    assert abs(metrics["trial_return"] - n / 2) <= metrics["trial_return_ci95"], metrics
    assert 0.05 < metrics["trial_return_ci95"] < 0.5
    # Every held-out task is played exactly once, in order.
    assert torch.equal(env.base_env.simulator.p, load_task_set("bandit_k5", "heldout")["p"])
    # The random policy's expected return given the tasks is n * mean(p).
    expected = n * load_task_set("bandit_k5", "heldout")["p"].mean().item()
    assert abs(metrics["trial_return"] - expected) <= metrics["trial_return_ci95"]
