"""Bandit baselines: hand-worked choices, the Beta sampler, and rewards between random and the oracle."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import InitTracker, TransformedEnv

from rl2_lightning.baselines.bandit import (
    BANDIT_BASELINES,
    UCB1,
    OptimisticThompsonSampling,
    Greedy,
    ThompsonSampling,
    beta_quantile_table,
    make_bandit_baseline,
    sample_max_beta,
)
from rl2_lightning.envs import BernoulliBandit, FixedTasks, TrialEnv
from rl2_lightning.evaluation.scoring import episode_returns, play_trials

pytestmark = pytest.mark.usefixtures("one_thread")


def _feed(policy, pulls):
    """Play a fixed sequence of (arm, reward) in one env; return the policy's next choice."""
    k = policy.num_actions
    def step(arm, reward, init):
        td = TensorDict(
            {
                "observation": torch.ones(1, 1),
                "prev_action": torch.nn.functional.one_hot(torch.tensor([arm]), k).float() if arm >= 0 else torch.zeros(1, k),
                "prev_reward": torch.tensor([[float(reward)]]),
                "episode_done": torch.ones(1, 1, dtype=torch.bool),
                "is_init": torch.tensor([[init]]),
            },
            batch_size=[1],
        )
        return policy(td)["action"].item()

    action = step(-1, 0.0, True)
    for arm, reward in pulls:
        action = step(arm, reward, False)
    return action


def test_greedy_picks_best_posterior_mean():
    # means with the Beta(1,1) start: arm0 (2+1)/(3+2)=0.6, arm1 (1+1)/(1+2)=0.667, arm2 (0+1)/(1+2)=0.333
    pulls = [(0, 1), (0, 1), (0, 0), (1, 1), (2, 0)]
    assert _feed(Greedy(3), pulls) == 1


def test_ucb1_picks_hand_computed_arm():
    # T = (4+2, 2+2) = (6, 4), t = 10; arm0 mean 5/6, arm1 mean 1/4.
    # c = 1: 0.833 + sqrt(2 ln 10 / 6) = 1.709 vs 0.25 + sqrt(2 ln 10 / 4) = 1.323 -> arm 0
    # c = 3: 0.833 + 2.628 = 3.461 vs 0.25 + 3.219 = 3.469 -> arm 1
    pulls = [(0, 1), (0, 1), (0, 1), (0, 1), (1, 0), (1, 0)]
    assert _feed(UCB1(2, c=1.0), pulls) == 0
    assert _feed(UCB1(2, c=3.0), pulls) == 1


def test_thompson_follows_the_posterior():
    # arm0: 9 successes of 10; arm1: 1 of 10. P(Beta(2,10) > Beta(10,2)) < 1e-4.
    pulls = [(0, 1)] * 9 + [(0, 0)] + [(1, 1)] + [(1, 0)] * 9
    torch.manual_seed(0)
    picks = [_feed(ThompsonSampling(2, 20), pulls) for _ in range(50)]
    assert picks == [0] * 50


@pytest.mark.parametrize("s, f", [(0, 0), (3, 1), (40, 20), (2, 90)])
@pytest.mark.parametrize("n", [1, 7])
def test_max_beta_sampler_matches_direct_sampling(s, f, n):
    torch.manual_seed(0)
    table = beta_quantile_table(120)
    m = 100_000
    x = sample_max_beta(torch.full((m,), float(s)), torch.full((m,), float(f)), torch.tensor(float(n), dtype=torch.float64), table)
    ref = torch.distributions.Beta(1.0 + s, 1.0 + f).sample((m, n)).max(1).values
    assert x.mean().item() == pytest.approx(ref.mean().item(), abs=3e-3)
    assert x.std().item() == pytest.approx(ref.std().item(), rel=3e-2)


def test_every_baseline_between_random_and_oracle():
    """Two arms with p = (0.3, 0.7): random earns 0.5 per pull, the oracle 0.7."""
    n, num_envs = 50, 2000
    sim = BernoulliBandit(num_envs, num_arms=2)
    tasks = TensorDict({"p": torch.tensor([[0.3, 0.7]])}, batch_size=[1])
    env = TransformedEnv(TrialEnv(sim, FixedTasks(tasks), n), InitTracker())
    sim.seed(1)
    hparams = {"gittins": {"gamma": 0.9}, "ots": {"num_samples": 5}, "ucb1": {"c": 0.5}, "egreedy": {"epsilon": 0.1}}
    for name in BANDIT_BASELINES:
        torch.manual_seed(0)
        policy = make_bandit_baseline(name, 2, n, **hparams.get(name, {}))
        per_pull = episode_returns(play_trials(env, policy, n), n).mean().item()
        if name == "random":
            assert per_pull == pytest.approx(0.5, abs=0.01)
        else:
            assert 0.55 < per_pull < 0.7, name


def _act_on_counts(policy, successes, failures, batch=400):
    policy.batch_size = batch
    policy.allocate(batch, torch.device("cpu"))
    policy.successes[:] = torch.tensor(successes, dtype=torch.float32)
    policy.failures[:] = torch.tensor(failures, dtype=torch.float32)
    return policy.act(None)


def test_ots_keeps_the_most_probable_draw():
    """Arm 0 ~ Beta(4, 2) (mode 0.75), arm 1 ~ Beta(3, 3) (mode 0.5): P(TS pulls arm 1) = P(Beta(3,3) > Beta(4,2)) ≈ 0.26,
    while the most probable of many joint draws sits near the modes, so OTS (authors' rule) pulls arm 0."""
    torch.manual_seed(0)
    counts = ([3, 2], [1, 2])
    ts = _act_on_counts(OptimisticThompsonSampling(2, 20, num_samples=1), *counts).float().mean().item()
    ots = _act_on_counts(OptimisticThompsonSampling(2, 20, num_samples=200), *counts).float().mean().item()
    assert 0.18 < ts < 0.34 and ots < 0.05
    # per env N: the first half plays TS, the second half OTS with 200 draws
    n = torch.cat([torch.ones(200), torch.full((200,), 200.0)])
    mixed = _act_on_counts(OptimisticThompsonSampling(2, 20, num_samples=n), *counts).float()
    assert mixed[:200].mean() > 0.15 and mixed[200:].mean() < 0.05
