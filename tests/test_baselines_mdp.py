"""Tabular-MDP baselines: batched value iteration, extended VI, the PSRL posterior, and sanity of scores."""

import pytest
import torch
from tensordict import TensorDict

from rl2_lightning.baselines.mdp import PSRL, TABULAR_BASELINES, make_tabular_baseline
from rl2_lightning.baselines.planning import extended_value_iteration, optimistic_transitions, value_iteration
from rl2_lightning.envs import make_trial_env
from rl2_lightning.evaluation.scoring import episode_returns, play_trials

pytestmark = pytest.mark.usefixtures("one_thread")


def _two_state_mdp():
    """State 0: action 0 pays 1 and stays, action 1 pays 0 and moves to state 1; state 1 pays 2 forever."""
    R = torch.tensor([[[1.0, 0.0], [2.0, 2.0]]])
    P = torch.zeros(1, 2, 2, 2)
    P[0, 0, 0, 0] = P[0, 0, 1, 1] = P[0, 1, :, 1] = 1.0
    return R, P


def test_value_iteration_two_state_mdp():
    R, P = _two_state_mdp()
    Q = value_iteration(R, P, 3)
    # by hand: 3 steps to go from state 0: move (0) then 2 + 2 = 4 beats staying 1 + 1 + 1 = 3
    torch.testing.assert_close(Q[0, 0], torch.tensor([[3.0, 4.0], [6.0, 6.0]]))
    torch.testing.assert_close(Q[0, 1], torch.tensor([[2.0, 2.0], [4.0, 4.0]]))
    torch.testing.assert_close(Q[0, 2], torch.tensor([[1.0, 0.0], [2.0, 2.0]]))
    # batched: a second task with the rewards halved has exactly half the values
    Q2 = value_iteration(torch.cat([R, R / 2]), torch.cat([P, P]), 3)
    torch.testing.assert_close(Q2[1], Q[0] / 2)


def test_extended_value_iteration():
    R, P = _two_state_mdp()
    zero = torch.zeros(1, 2, 2)
    torch.testing.assert_close(extended_value_iteration(R, P, zero, zero, 3), value_iteration(R, P, 3))
    # with L1 slack 1, staying in state 0 can shift half its mass to state 1
    p = optimistic_transitions(P, torch.ones(1, 2, 2), torch.tensor([[0.0, 5.0]]))
    torch.testing.assert_close(p[0, 0, 0], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(p.sum(-1), torch.ones(1, 2, 2))
    # a reward slack adds to every step
    Q = extended_value_iteration(R, P, torch.full((1, 2, 2), 0.5), zero, 3)
    torch.testing.assert_close(Q[0, 0, 1], torch.tensor([7.5, 7.5]))


def test_tabularl_extended_value_iteration_accumulates_the_shifts():
    """By hand, (s=0, a=0) of the two-state MDP (stays in 0, pays 1), L1 slack 0.5, 3 steps.

    Textbook: every step shifts 0.25 from P = (1, 0) onto state 1: rows (0.75, 0.25) -> Q = 1, 2.25, 3.6875.
    TabulaRL (in place): the last step's shift (all values 0: onto the highest index, state 1) stays in the
    row, so the rows are (0.75, 0.25), (0.5, 0.5), (0.25, 0.75) -> Q = 1, 2.5, 4.625. Rows that turned
    one-hot ((0, 1) and state 1's) stay as they were.
    """
    R, P = _two_state_mdp()
    zero, slack = torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5)
    textbook = extended_value_iteration(R, P, zero, slack, 3)
    tabularl = extended_value_iteration(R, P, zero, slack, 3, accumulate=True)
    torch.testing.assert_close(textbook[0, :, 0, 0], torch.tensor([3.6875, 2.25, 1.0]))
    torch.testing.assert_close(tabularl[0, :, 0, 0], torch.tensor([4.625, 2.5, 1.0]))
    torch.testing.assert_close(tabularl[0, :, 0, 1], torch.tensor([4.0, 2.0, 0.0]))
    torch.testing.assert_close(tabularl[0, :, 1], textbook[0, :, 1])


def _step(policy, state, prev_action, reward, episode_done, init, S=3, A=2):
    td = TensorDict(
        {
            "observation": torch.nn.functional.one_hot(torch.tensor([state]), S).float(),
            "prev_action": torch.zeros(1, A) if prev_action < 0 else torch.nn.functional.one_hot(torch.tensor([prev_action]), A).float(),
            "prev_reward": torch.tensor([[reward]]),
            "episode_done": torch.tensor([[episode_done]]),
            "is_init": torch.tensor([[init]]),
        },
        batch_size=[1],
    )
    return policy(td)


@pytest.mark.parametrize("prior, mu0", [("paper", 0.0), ("bayes", 1.0)])
def test_psrl_posterior_is_the_conjugate_update(prior, mu0):
    psrl = PSRL(3, 2, episode_steps=2, prior=prior)
    _step(psrl, 0, -1, 0.0, False, True)  # trial start in state 0
    _step(psrl, 2, 1, 1.0, False, False)  # (0, a1, r=1) -> 2
    _step(psrl, 0, 1, 3.0, True, False)  # (2, a1, r=3), episode over: next state unobserved
    _step(psrl, 2, 1, 2.0, False, False)  # (0, a1, r=2) -> 2
    mean, precision = psrl.reward_posterior()
    # N(mu0, 1) prior, unit noise: precision 1 + n, mean (mu0 + sum r) / (1 + n)
    assert precision[0, 0, 1].item() == 3.0 and mean[0, 0, 1].item() == pytest.approx((mu0 + 3.0) / 3)
    assert precision[0, 2, 1].item() == 2.0 and mean[0, 2, 1].item() == pytest.approx((mu0 + 3.0) / 2)
    assert mean[0, 1, 0].item() == mu0 and precision[0, 1, 0].item() == 1.0
    # Dirichlet(1) prior: alpha(0, a1) = (1, 1, 3); nothing counted for state 2 (its step ended the episode)
    alpha = psrl.alpha0 + psrl.counts
    torch.testing.assert_close(alpha[0, 0, 1], torch.tensor([1.0, 1.0, 3.0]))
    torch.testing.assert_close(alpha[0, 2, 1], torch.ones(3))
    torch.testing.assert_close(psrl.transition_mean()[0, 0, 1], torch.tensor([0.2, 0.2, 0.6]))
    # the sampled MDPs follow that posterior
    torch.manual_seed(0)
    draws = [psrl.sample_mdp() for _ in range(4000)]
    R = torch.stack([d[0][0, 0, 1] for d in draws])
    P = torch.stack([d[1][0, 0, 1] for d in draws])
    assert R.mean().item() == pytest.approx((mu0 + 3.0) / 3, abs=0.03)
    assert R.var().item() == pytest.approx(1 / 3, rel=0.1)
    torch.testing.assert_close(P.mean(0), torch.tensor([0.2, 0.2, 0.6]), atol=0.02, rtol=0)
    # a new trial forgets everything
    _step(psrl, 0, -1, 0.0, False, True)
    assert psrl.counts.sum() == 0 and psrl.reward_n.sum() == 0


@pytest.mark.parametrize("name", ["egreedy", "greedy", "ucrl2"])
def test_paper_prior_is_near_flat_for_tabularl_flat_prior_agents(name):
    """TabulaRL builds ε-greedy, greedy and UCRL2 with "prior effect -> 0": empirical means and frequencies.

    Same transitions as the PSRL example: (0, a1) seen twice with rewards 1 and 2, once going to state 2.
    """
    agent = make_tabular_baseline(name, 3, 2, 2, prior="paper")
    _step(agent, 0, -1, 0.0, False, True)
    _step(agent, 2, 1, 1.0, False, False)
    _step(agent, 0, 1, 3.0, True, False)
    _step(agent, 2, 1, 2.0, False, False)
    mean, _ = agent.reward_posterior()
    assert mean[0, 0, 1].item() == pytest.approx(1.5, abs=1e-3)  # (1 + 2) / 2, not shrunk to 0
    assert mean[0, 2, 1].item() == pytest.approx(3.0, abs=1e-3)
    assert mean[0, 1, 0].item() == 0.0  # untried: the prior mean
    torch.testing.assert_close(agent.transition_mean()[0, 0, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(agent.transition_mean()[0, 1, 0], torch.full((3,), 1 / 3))  # untried: uniform
    # the Bayes-correct variant of the same agent shrinks towards the true prior N(1, 1), Dirichlet(1)
    bayes = make_tabular_baseline(name, 3, 2, 2, prior="bayes")
    assert (bayes.mu0, bayes.tau0, bayes.alpha0) == (1.0, 1.0, 1.0)


def test_every_baseline_beats_random():
    """On 200 held-out MDPs over 10 episodes, each method beats the random policy by a wide margin."""
    n = 10
    env = make_trial_env("tabular", 200, n, task_set="heldout")
    scores = {}
    for name in TABULAR_BASELINES:
        torch.manual_seed(0)
        hp = {"opsrl": {"num_samples": 2}, "ucrl2": {"scaling": 0.1}, "beb": {"scaling": 0.01}, "egreedy": {"epsilon": 0.1}}
        policy = make_tabular_baseline(name, 10, 5, 10, prior="bayes", **hp.get(name, {}))
        scores[name] = episode_returns(play_trials(env, policy, env.base_env.trial_steps), n).sum(-1).mean().item()
    assert 95 < scores.pop("random") < 107
    assert all(v > 125 for v in scores.values()), scores
