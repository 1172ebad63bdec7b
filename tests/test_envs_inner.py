"""RL³'s inner estimates (rl2_lightning/envs/inner.py): the hand-worked numbers, resets, no leak, replay."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import step_mdp
from torchrl.modules import set_recurrent_mode
from trainkit import compose_cfg

from rl2_lightning.envs import make_trial_env
from rl2_lightning.envs.inner import empirical_model, finite_horizon_q
from rl2_lightning.models import make_agent

L5 = math.log(2) / math.log(5)  # log(1 + 1 visit) / log(1 + 4 trial steps)


def scripted_env(mu, P, episodes=2, steps=2):
    """A 1-env trial env of one fixed deterministic-reward 2-state, 2-action task, with the estimates on."""
    env = make_trial_env("tabular", 1, episodes, episode_steps=steps, num_states=2, num_actions=2,
                         reward_std=0.0, inner_estimates=True)
    env.base_env.use_tasks(TensorDict({"P": torch.tensor([P]), "mu": torch.tensor([mu])}, batch_size=[1]))
    return env


def features(td):
    return td["observation"][0, 2:]  # after the one-hot state


def play(env, actions):
    td = env.reset()
    out = [features(td)]
    for a in actions:
        td["action"] = torch.tensor([a])
        td = step_mdp(env.step(td))
        out.append(features(td))
    return out


# s0 -a0-> s1 (r 2) -a1-> episode end (r 3), restart in s0 -a1-> s0 (r 0)
MU = [[2.0, 0.0], [1.5, 3.0]]
P = [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]


def test_a_hand_worked_trial_of_a_two_state_mdp():
    feats = play(scripted_env(MU, P), [0, 1, 1])
    expected = [
        # (Q(s, .) - V) / H, V / H, log-counts of s, episode to go, trial to go
        [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0],  # prior: R = 1, uniform P, 2 steps to go: Q = 1 + 1
        [0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.75],  # in s1, unvisited, 1 step to go: Q = prior reward
        [0.0, -0.75, 2.5, L5, 0.0, 1.0, 0.5],  # s0 again: Q(0,0) = 2 + V1(s1) = 2 + 3; Q(0,1) = 1 + (2 + 3) / 2
        [0.0, -1.0, 1.0, L5, L5, 0.5, 0.25],  # 1 step to go: the empirical rewards of s0
    ]
    torch.testing.assert_close(torch.stack(feats), torch.tensor(expected))


def test_pure_functions_against_hand_numbers():
    counts = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    sums = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])
    trans = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [1.0, 0.0]]]])
    r, p = empirical_model(counts, sums, trans, reward_prior=-1.0)
    torch.testing.assert_close(r, torch.tensor([[[2.0, -1.0], [-1.0, 2.5]]]))
    torch.testing.assert_close(p, torch.tensor([[[[0.0, 1.0], [0.5, 0.5]], [[0.5, 0.5], [1.0, 0.0]]]]))
    q = finite_horizon_q(r, p, 2)
    torch.testing.assert_close(q[0], r)  # one step to go
    # V1 = [2, 2.5]: Q2(0,0) = 2 + 2.5, Q2(0,1) = -1 + 2.25, Q2(1,0) = -1 + 2.25, Q2(1,1) = 2.5 + 2
    torch.testing.assert_close(q[1], torch.tensor([[[4.5, 1.25], [1.25, 4.5]]]))


def test_a_trial_start_clears_the_estimates_and_an_episode_end_does_not():
    env = scripted_env(MU, P)
    feats = play(env, [0, 1, 1, 0])  # the fourth step ends the trial
    assert feats[2][3] == pytest.approx(L5)  # the first episode's visit of (s0, a0) survives its end
    td = env.reset()
    torch.testing.assert_close(features(td), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]))


def test_no_leak_two_tasks_with_the_same_experience_give_the_same_inputs():
    # the second task differs only where the script never goes (action 1 in s1 pays 3 vs 7, and s0's
    # action 1 would stay vs move): the agent's inputs may not tell them apart
    P2 = [[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]
    MU2 = [[2.0, 5.0], [1.5, 7.0]]
    a = torch.stack(play(scripted_env(MU, P), [0, 0, 0]))
    b = torch.stack(play(scripted_env(MU2, P2), [0, 0, 0]))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("family,kwargs", [("tabular", {}), ("bandit", {"num_arms": 3}), ("riverswim", {})])
def test_step_by_step_acting_equals_whole_trial_replay(family, kwargs):
    env = make_trial_env(family, 4, 3, seed=1, inner_estimates=True, **kwargs)
    agent = make_agent(env, hidden_size=16, embed_size=16)
    env = agent.attach_to(env)
    torch.manual_seed(0)
    with torch.no_grad():
        rollout = env.rollout(env.base_env.trial_steps, agent.actor, break_when_any_done=False)
        with set_recurrent_mode(True):
            torch.testing.assert_close(agent.actor(rollout.clone())["logits"], rollout["logits"])
    assert rollout["observation"].shape[-1] == env.base_env.simulator.observation_shape[0] + 2 * env.action_spec.space.n + 3


def test_the_mazes_are_refused_in_one_line():
    from rl2_lightning.envs import inner_estimates_for

    class NoFixedSteps:
        fixed_episode_steps = None
        observation_shape = (3, 8, 8)

    class Env:
        simulator = NoFixedSteps()

    with pytest.raises(ValueError, match="discrete state"):
        inner_estimates_for(Env())


@pytest.mark.parametrize("model", ["gru", "lstm", "transformer", "mlp"])
@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_an_rl3_preset_trains_tiny_with_every_memory_and_algorithm(model, algo, tmp_path):
    from rl2_lightning.train import train

    cfg = compose_cfg(["conf=tabular_n10_rl3", f"model={model}", f"algo={algo}", f"runs_dir={tmp_path}",
                       "env.episodes_per_trial=2", "callbacks.metatest.num_tasks=8"])
    out = train(cfg)
    spec = out["module"].env.spec_env()
    assert out["module"].hparams["env"]["inner_estimates"] is True
    assert spec.observation_spec["observation"].shape[-1] == 10 + 2 * 5 + 3
    spec.close()
    assert out["metatest"]["trial_return"] == out["metatest"]["trial_return"]  # a number, not NaN


def test_greedy_on_the_estimates_beats_random_on_the_tuning_set():
    from rl2_lightning.envs.inner import greedy_on_estimates

    greedy, ci = greedy_on_estimates("tabular", "tuning", 2, num_tasks=200)
    env = make_trial_env("tabular", 200, 2, task_set="tuning")
    random = env.rollout(20, break_when_any_done=False)["next", "reward"].sum(1).mean().item()
    assert greedy > random + 3 * ci  # random: about 20 per 2-episode trial


def test_a_shipped_rl3_policy_loads_by_name_and_a_plain_rl2_preset_refuses_it():
    from rl2_lightning.checkpoints import check_trained_on
    from rl2_lightning.pretrained import load

    module = load("tabular_n10_rl3")
    check_trained_on(module.hparams, compose_cfg(["conf=tabular_n10_rl3"], tiny=False), ("env",), "tabular_n10_rl3")
    with pytest.raises(ValueError, match=r"was trained with env\.inner_estimates=True, but the config has False") as info:
        check_trained_on(module.hparams, compose_cfg(["conf=tabular_n10"], tiny=False), ("env",), "ckpt=pretrained")
    assert "\n" not in str(info.value)
    rl2 = load("tabular_n10")  # and the other way round: an RL² policy under an RL³ preset
    with pytest.raises(ValueError, match=r"env\.inner_estimates=False, but the config has True"):
        check_trained_on(rl2.hparams, compose_cfg(["conf=tabular_n10_rl3"], tiny=False), ("env",), "ckpt=pretrained")


def test_the_mdp_baselines_read_the_state_and_ignore_the_appended_estimates():
    from hydra.utils import instantiate

    from rl2_lightning.evaluation import evaluate

    def scores(preset):
        cfg = compose_cfg([f"conf={preset}", "env.episodes_per_trial=2"], tiny=False)
        return {r["key"]: r["mean"] for r in evaluate(instantiate(cfg.env), num_tasks=50, verbose=False)}

    plain, rl3 = scores("tabular_n10"), scores("tabular_n10_rl3")
    assert plain.keys() == rl3.keys() and len(plain) > 5
    assert plain == rl3  # the same tasks, seeds and actions: the features change nothing for them


def test_the_inner_prior_is_the_value_of_an_untried_pair_and_needs_the_estimates():
    from rl2_lightning.config import compose
    from rl2_lightning.envs import make_trial_env

    for prior, expected in ((None, 1.0), (2.0, 2.0)):  # None: the family's mean reward, mu ~ N(1, 1)
        env = make_trial_env("tabular", 3, 2, inner_estimates=True, inner_prior=prior, task_set="tuning")
        obs = env.reset()["observation"]
        env.close()
        # at a trial start nothing is tried: every Q is prior x the 10 steps to go, so V / T is the prior
        # and every advantage is 0 (layout: 10 one-hot states, 5 advantages, V / T, ...)
        assert torch.equal(obs[:, 10:15], torch.zeros(3, 5))
        assert torch.allclose(obs[:, 15], torch.full((3,), expected))
    with pytest.raises(ValueError, match="env.inner_prior is RL³'s; it needs env.inner_estimates=true"):
        compose(["conf=tabular_n10", "env.inner_prior=2.0"])
