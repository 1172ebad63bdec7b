"""Tabular MDPs (the paper's random MDPs) and randomised RiverSwim chains."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rl2_lightning.envs import RiverSwim, TabularMDP, make_trial_env
from rl2_lightning.envs.tabular import sample_categorical, sample_dirichlet_ones


def install(sim, tasks: TensorDict) -> None:
    sim.set_tasks(tasks, torch.ones(sim.num_envs, dtype=torch.bool))
    sim.reset_episodes(torch.ones(sim.num_envs, dtype=torch.bool))


def one_task_everywhere(sim, task: TensorDict) -> TensorDict:
    return task.expand(sim.num_envs).clone()


def test_sampled_tasks_follow_dirichlet_and_normal_priors():
    sim = TabularMDP(1)
    tasks = sim.sample_tasks(2000, torch.Generator().manual_seed(0))
    P, mu = tasks["P"], tasks["mu"]
    assert P.shape == (2000, 10, 5, 10) and mu.shape == (2000, 10, 5)
    assert (P >= 0).all()
    assert torch.allclose(P.sum(-1), torch.ones(2000, 10, 5), atol=1e-5)
    # Dirichlet(1, ..., 1) over 10 states: each entry ~ Beta(1, 9), mean 0.1, variance 9 / 1100.
    assert abs(P.mean().item() - 0.1) < 1e-4  # exact up to rounding: rows sum to 1
    assert abs(P.var().item() - 9 / 1100) < 3e-4
    assert abs((P > 0.1).float().mean().item() - 0.9**9) < 0.005  # P(Beta(1, 9) > x) = (1 - x)^9
    # mu ~ N(1, 1): 100k draws.
    assert abs(mu.mean().item() - 1) < 0.02 and abs(mu.std().item() - 1) < 0.02


def test_dirichlet_and_categorical_samplers():
    gen = torch.Generator().manual_seed(1)
    probs = sample_dirichlet_ones((3, 4), gen)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3]).expand(50_000, 4)
    index = sample_categorical(probs, gen)
    counts = torch.bincount(index, minlength=4).float() / 50_000
    assert counts[1] == 0  # zero-probability outcomes never happen
    assert torch.allclose(counts, probs[0], atol=4 * (0.25 / 50_000) ** 0.5)
    # Rows whose cumulative sum rounds below 1 still return a valid index.
    assert sample_categorical(torch.full((1000, 3), 0.333333), gen).max() <= 2


def test_rewards_have_mean_mu_and_unit_std_and_transitions_follow_P():
    num_envs = 20_000
    sim = TabularMDP(num_envs)
    sim.seed(0)
    task = sim.sample_tasks(1, torch.Generator().manual_seed(3))
    install(sim, one_task_everywhere(sim, task))
    action = torch.arange(num_envs) % 5  # 4000 envs per action, all in state 0
    reward, episode_end = sim.step(action)
    assert not episode_end.any()
    next_state = sim.observation().argmax(-1)
    for a in range(5):
        r = reward[action == a]
        assert abs(r.mean().item() - task["mu"][0, 0, a].item()) < 4 / 4000**0.5
        assert abs(r.std().item() - 1) < 0.05
        freq = torch.bincount(next_state[action == a], minlength=10).float() / 4000
        expected = task["P"][0, 0, a]
        assert ((freq - expected).abs() <= 4 * (expected * (1 - expected) / 4000).sqrt() + 1e-3).all()


def test_episodes_last_episode_steps_and_restart_in_state_zero():
    sim = TabularMDP(6, episode_steps=4)
    sim.seed(0)
    install(sim, sim.sample_tasks(6, torch.Generator().manual_seed(0)))
    assert torch.equal(sim.observation(), torch.eye(10)[[0] * 6])
    for t in range(4):
        _, episode_end = sim.step(torch.full((6,), 2))
        assert episode_end.all() == (t == 3) and episode_end.any() == (t == 3)
    sim.reset_episodes(torch.tensor([True, False, True, False, True, False]))
    assert (sim.state[::2] == 0).all() and (sim.t[::2] == 0).all() and (sim.t[1::2] == 4).all()


def test_tabular_constructor_checks_arguments():
    for kwargs, name in [
        ({"num_states": 1}, "num_states"),
        ({"num_actions": 1}, "num_actions"),
        ({"episode_steps": 0}, "episode_steps"),
        ({"reward_std": -1.0}, "reward_std"),
    ]:
        with pytest.raises(ValueError, match=name):
            TabularMDP(2, **kwargs)
    with pytest.raises(ValueError, match="num_envs"):
        TabularMDP(0)


def test_tabular_trial_env_is_n_episodes_of_T_steps(play):
    env = make_trial_env("tabular", 2, 5, episode_steps=10)
    data = play(env, torch.randint(5, (50, 2), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(data["next", "done"].squeeze(-1)[0], torch.arange(50) == 49)
    assert data["next", "episode_done"].squeeze(-1)[0].nonzero().squeeze(-1).tolist() == [9, 19, 29, 39, 49]


# ------------------------------------------------------------------------------------------
# RiverSwim


def test_riverswim_randomises_exactly_what_its_docstring_says():
    s = 10
    sim = RiverSwim(1, num_states=s)
    tasks = sim.sample_tasks(5000, torch.Generator().manual_seed(0))
    P, mu = tasks["P"], tasks["mu"]
    assert P.shape == (5000, s, 2, s)
    assert (P >= 0).all() and torch.allclose(P.sum(-1), torch.ones(5000, s, 2))
    states = torch.arange(s)
    left, right = (states - 1).clamp(min=0), (states + 1).clamp(max=s - 1)
    # Swimming left is deterministic: one state left, staying in state 0.
    assert torch.equal(P[:, states, 0, left], torch.ones(5000, s))
    # Swimming right in a middle state: right w.p. p_right, stay w.p. stay, left w.p. the rest,
    # with the same three numbers in every state of a task.
    p_right, p_stay, p_left = P[:, 1, 1, 2], P[:, 1, 1, 1], P[:, 1, 1, 0]
    for m in range(1, s - 1):
        assert torch.allclose(P[:, m, 1, m + 1], p_right) and torch.allclose(P[:, m, 1, m - 1], p_left)
    assert torch.allclose(P[:, 0, 1, 0], p_stay + p_left)  # clamped at both ends
    assert torch.allclose(P[:, s - 1, 1, s - 1], p_right + p_stay)
    # p_right ~ U(0, 1); stay is a U(0, 1) fraction of the remaining mass.
    assert abs(p_right.mean().item() - 0.5) < 0.02 and abs(p_right.var().item() - 1 / 12) < 0.01
    stay_fraction = p_stay / (1 - p_right)
    assert abs(stay_fraction.mean().item() - 0.5) < 0.02
    # Rewards: r_small ~ U(0.001, 0.009) for swimming left in state 0, r_large = 1 for swimming right
    # in the last state, nothing else.
    r_small = mu[:, 0, 0]
    assert r_small.min() >= 0.001 and r_small.max() <= 0.009
    assert abs(r_small.mean().item() - 0.005) < 0.0002
    assert (mu[:, s - 1, 1] == 1).all()
    rest = mu.clone()
    rest[:, 0, 0] = 0
    rest[:, s - 1, 1] = 0
    assert not rest.any()


def test_riverswim_dynamics_are_deterministic_to_the_left_and_reward_without_noise():
    sim = RiverSwim(3, num_states=5, episode_steps=20)
    sim.seed(0)
    task = sim.sample_tasks(1, torch.Generator().manual_seed(0))
    install(sim, one_task_everywhere(sim, task))
    assert sim.reward_std == 0 and sim.num_actions == 2
    reward, _ = sim.step(torch.zeros(3, dtype=torch.long))  # left in state 0: stay, earn r_small
    assert torch.equal(reward, task["mu"][0, 0, 0].expand(3)) and (sim.state == 0).all()
    sim.state = torch.tensor([4, 3, 2])
    reward, _ = sim.step(torch.zeros(3, dtype=torch.long))
    assert sim.state.tolist() == [3, 2, 1] and not reward.any()
    sim.state = torch.tensor([4, 4, 4])
    reward, _ = sim.step(torch.ones(3, dtype=torch.long))  # right in the last state: r_large
    assert (reward == 1).all()
