"""RL² trial semantics for every task family, and the plain EpisodeEnv reference."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import InitTracker, TransformedEnv
from torchrl.envs.utils import check_env_specs, step_mdp

from rl2_lightning.envs import SampledTasks, TrialEnv, make_simulator, make_trial_env
from rl2_lightning.envs.episode import EpisodeEnv
from rl2_lightning.evaluation.scoring import episode_returns

FAMILY_KWARGS = {"bandit": {"num_arms": 5}, "tabular": {}, "riverswim": {}}
EPISODE_STEPS = {"bandit": 1, "tabular": 10, "riverswim": 20}
FAMILIES = list(FAMILY_KWARGS)


def random_actions(env, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(env.action_spec.space.n, (steps, env.batch_size[0]), generator=gen)


def trial_env(family: str, num_envs: int = 4, episodes: int = 3, **kwargs):
    return make_trial_env(family, num_envs, episodes, **FAMILY_KWARGS[family], **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_check_env_specs(family):
    env = trial_env(family)
    assert isinstance(env, TransformedEnv) and isinstance(env.transform, InitTracker)
    check_env_specs(env, seed=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_done_only_at_trial_end_and_is_init_only_at_trial_start(family, play):
    episodes, num_envs = 3, 4
    env = trial_env(family, num_envs, episodes)
    trial_len = episodes * EPISODE_STEPS[family]
    assert env.base_env.trial_steps == trial_len
    steps = 2 * trial_len + trial_len // 2  # two and a half trials, with auto reset in between
    data = play(env, random_actions(env, steps))
    t = torch.arange(steps)
    expected_done = ((t + 1) % trial_len == 0).expand(num_envs, steps)
    assert torch.equal(data["next", "done"].squeeze(-1), expected_done)
    assert torch.equal(data["next", "terminated"], data["next", "done"])
    assert not data["next", "truncated"].any()
    expected_init = (t % trial_len == 0).expand(num_envs, steps)
    assert torch.equal(data["is_init"].squeeze(-1), expected_init)


@pytest.mark.parametrize("family", FAMILIES)
def test_episode_done_and_episode_index(family, play):
    episodes, ep_len = 3, EPISODE_STEPS[family]
    env = trial_env(family, 2, episodes)
    trial_len = episodes * ep_len
    steps = 2 * trial_len
    data = play(env, random_actions(env, steps))
    t = torch.arange(steps)
    # The step that ends an episode (also the trial's last one) raises episode_done in its result ...
    assert torch.equal(data["next", "episode_done"].squeeze(-1)[0], (t + 1) % ep_len == 0)
    # ... and the index of the episode an input belongs to counts the episodes of the trial.
    assert torch.equal(data["episode_index"].squeeze(-1)[0], (t % trial_len) // ep_len)
    assert torch.equal(data["next", "trial_done"], data["next", "done"])


@pytest.mark.parametrize("family", FAMILIES)
def test_prev_inputs_repeat_the_previous_step_and_are_zero_at_trial_start(family, play):
    episodes = 3
    env = trial_env(family, 3, episodes)
    trial_len = episodes * EPISODE_STEPS[family]
    steps = 2 * trial_len
    actions = random_actions(env, steps)
    data = play(env, actions)
    num_actions = env.action_spec.space.n
    for t in range(steps):
        prev_action, prev_reward = data["prev_action"][:, t], data["prev_reward"][:, t]
        episode_done = data["episode_done"][:, t]
        if t % trial_len == 0:
            assert not prev_action.any() and not prev_reward.any() and not episode_done.any()
            continue
        assert torch.equal(prev_action, torch.nn.functional.one_hot(actions[t - 1], num_actions).float())
        assert torch.equal(prev_reward, data["next", "reward"][:, t - 1])
        assert torch.equal(episode_done, data["next", "episode_done"][:, t - 1])
    # The step's result already carries the action and reward just taken.
    assert torch.equal(data["next", "prev_action"].argmax(-1), actions.T)
    assert torch.equal(data["next", "prev_reward"], data["next", "reward"])


@pytest.mark.parametrize("family", ["tabular", "riverswim"])
def test_every_episode_starts_in_state_zero(family, play):
    episodes, ep_len = 4, EPISODE_STEPS[family]
    env = trial_env(family, 8, episodes)
    steps = 2 * episodes * ep_len
    data = play(env, random_actions(env, steps))
    first_steps = data[:, ::ep_len]
    num_states = first_steps["observation"].shape[-1]
    state_zero = torch.zeros(num_states)
    state_zero[0] = 1
    assert torch.equal(first_steps["observation"], state_zero.expand_as(first_steps["observation"]))
    # episode_done is raised on the first step of every episode but a trial's first.
    is_trial_start = (torch.arange(0, steps, ep_len) % (episodes * ep_len)) == 0
    assert torch.equal(first_steps["episode_done"].squeeze(-1)[0], ~is_trial_start)
    # The agent does leave state 0 within episodes (the check above is not trivially true).
    assert (data["observation"].argmax(-1) != 0).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_inner_episode_ends_keep_the_task_and_trial_ends_draw_a_new_one(family):
    episodes, ep_len = 3, EPISODE_STEPS[family]
    env = trial_env(family, 4, episodes)
    sim = env.base_env.simulator
    task_keys = ["p"] if family == "bandit" else ["P", "mu"]
    td = env.reset()
    first_task = [getattr(sim, k).clone() for k in task_keys]
    actions = random_actions(env, episodes * ep_len)
    for t, action in enumerate(actions):
        td.set("action", action)
        data, td = env.step_and_maybe_reset(td)
        if t < len(actions) - 1:  # every inner episode end is crossed with the same task
            assert all(torch.equal(getattr(sim, k), v) for k, v in zip(task_keys, first_task))
    assert data["next", "done"].all()
    assert all(not torch.equal(getattr(sim, k), v) for k, v in zip(task_keys, first_task))


def test_partial_reset_only_touches_the_selected_envs():
    env = trial_env("tabular", 3, 2)
    sim = env.base_env.simulator
    td = env.reset()
    for action in random_actions(env, 5):  # mid-episode in every env
        td.set("action", action)
        _, td = env.step_and_maybe_reset(td)
    P_before, state_before = sim.P.clone(), sim.state.clone()
    kept = td.select("prev_action", "prev_reward", "episode_index", "observation").clone()
    td.set("_reset", torch.tensor([[True], [False], [False]]))
    out = env.reset(td)
    assert not torch.equal(sim.P[0], P_before[0]) and torch.equal(sim.P[1:], P_before[1:])
    assert sim.state[0] == 0 and torch.equal(sim.state[1:], state_before[1:])
    assert out["is_init"].squeeze(-1).tolist() == [True, False, False]
    assert not out["prev_action"][0].any() and out["episode_index"][0].item() == 0
    for key in kept.keys():
        assert torch.equal(out[key][1:], kept[key][1:]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_outputs_do_not_alias_env_state(family):
    """Editing the returned tensors in place (as buffers and transforms may) must not change the env."""
    episodes, ep_len = 2, EPISODE_STEPS[family]
    env = trial_env(family, 2, episodes, init_tracker=False)
    td = env.reset()
    for t, action in enumerate(random_actions(env, episodes * ep_len)):
        td.set("action", action)
        td = env.step(td)
        assert td["next", "done"].all() == (t == episodes * ep_len - 1)
        assert td["next", "observation"].sum(-1).eq(1).all()  # one-hot state, or the bandit's constant
        td.apply_(lambda x: x.zero_())
        td = step_mdp(td)


def test_set_seed_gives_separate_streams_to_tasks_and_rewards():
    """One seed for both once made a 1-env bandit's first pull of arm 0 always pay 0."""
    rewards = []
    for seed in range(60):
        env = make_trial_env("bandit", 1, 1, init_tracker=False)
        env.set_seed(seed)
        td = env.reset()
        td.set("action", torch.zeros(1, dtype=torch.long))
        rewards.append(env.step(td)["next", "reward"].item())
    assert 10 < sum(rewards) < 50  # Binomial(60, ~0.5)


def test_same_seed_same_trials_and_different_seed_rank_worker_different_tasks(play):
    def rollout(**kwargs):
        env = trial_env("tabular", 4, 2, **kwargs)
        return play(env, random_actions(env, 45)), env.base_env.simulator

    a, _ = rollout(seed=7)
    b, _ = rollout(seed=7)
    for key in [("next", "observation"), ("next", "reward"), "observation", "prev_reward"]:
        assert torch.equal(a[key], b[key])
    c, _ = rollout(seed=8)
    assert not torch.equal(a["next", "reward"], c["next", "reward"])

    def first_tasks(**kwargs):
        env = trial_env("bandit", 16, 2, **kwargs)
        env.reset()
        return env.base_env.simulator.p.clone()

    base = first_tasks(seed=7)
    assert torch.equal(base, first_tasks(seed=7))
    for other in [first_tasks(seed=7, rank=1), first_tasks(seed=7, worker=1), first_tasks(seed=8)]:
        assert not torch.isin(other, base).any()


def test_fixed_task_set_env_plays_the_set_in_order():
    from rl2_lightning.envs.tasks import load_task_set

    heldout = load_task_set("bandit_k5", "heldout")
    env = make_trial_env("bandit", 250, 2, task_set="heldout", num_arms=5)
    for start in (0, 250):
        env.reset()
        assert torch.equal(env.base_env.simulator.p, heldout["p"][start : start + 250])


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="episodes_per_trial"):
        make_trial_env("bandit", 2, 0)
    with pytest.raises(ValueError, match="trials_per_reset"):
        make_trial_env("bandit", 2, 1, trials_per_reset=0)
    with pytest.raises(ValueError, match=r"env family 'gridworld' is unknown; known: bandit, maze, riverswim, tabular \(or a module.Class path\)"):
        make_trial_env("gridworld", 2, 1)
    with pytest.raises(ValueError, match="num_envs"):
        make_trial_env("tabular", 0, 1)
    with pytest.raises(ValueError, match="num_arms"):
        make_trial_env("bandit", 2, 1, num_arms=1)
    with pytest.raises(ValueError, match="split"):
        make_trial_env("bandit", 2, 1, task_set="train")
    with pytest.raises(ValueError, match="num_states"):  # an argument the family does not take
        make_trial_env("bandit", 2, 1, num_states=3)
    sim = make_simulator("bandit", 2)
    with pytest.raises(ValueError, match="device"):
        TrialEnv(sim, SampledTasks(sim.sample_tasks), 1, device="meta")


def test_episode_returns_sums_rewards_per_episode_of_the_input():
    # Two trials of n=3 episodes; the second has variable-length episodes and two padding steps.
    index = torch.tensor([[0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 3, 3]])
    reward = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]])
    rollout = TensorDict(
        {"episode_index": index.unsqueeze(-1), "next": {"reward": reward.unsqueeze(-1)}}, batch_size=[2, 6]
    )
    expected = torch.tensor([[3.0, 7.0, 11.0], [10.0, 50.0, 40.0]])
    assert torch.equal(episode_returns(rollout, 3), expected)
    rollout["valid"] = torch.tensor([[True] * 6, [True, True, False, True, True, True]]).unsqueeze(-1)
    assert torch.equal(episode_returns(rollout, 3), torch.tensor([[3.0, 7.0, 11.0], [10.0, 20.0, 40.0]]))


def test_episode_returns_on_a_real_rollout_match_the_rewards(play):
    env = trial_env("tabular", 3, 4)
    data = play(env, random_actions(env, 40))
    returns = episode_returns(data, 4)
    assert torch.allclose(returns, data["next", "reward"].squeeze(-1).view(3, 4, 10).sum(-1))


# ------------------------------------------------------------------------------------------
# EpisodeEnv: the plain episodic reference


def episode_env(family: str, num_envs: int = 4) -> EpisodeEnv:
    sim = make_simulator(family, num_envs, **FAMILY_KWARGS[family])
    return EpisodeEnv(sim, SampledTasks(sim.sample_tasks, seed=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_episode_env_specs_and_done_at_every_episode_end(family, play):
    env = episode_env(family)
    check_env_specs(env, seed=0)
    assert set(env.observation_spec.keys()) == {"observation"}
    ep_len = EPISODE_STEPS[family]
    steps = 3 * ep_len
    data = play(env, random_actions(env, steps))
    t = torch.arange(steps)
    assert torch.equal(data["next", "done"].squeeze(-1)[0], (t + 1) % ep_len == 0)
    assert torch.equal(data["next", "terminated"], data["next", "done"])


def test_episode_env_draws_a_new_task_every_episode():
    env = episode_env("bandit", 8)
    sim = env.simulator
    td = env.reset()
    seen = [sim.p.clone()]
    for action in random_actions(env, 3):
        td.set("action", action)
        _, td = env.step_and_maybe_reset(td)
        seen.append(sim.p.clone())
    for before, after in zip(seen, seen[1:]):
        assert not torch.isin(after, before).any()


# ------------------------------------------------------------------------------------------
# Devices


def run_on(device: str, play) -> None:
    for family in FAMILIES:
        env = trial_env(family, 4, 2, device=device)
        assert env.device.type == torch.device(device).type
        actions = random_actions(env, 2 * 2 * EPISODE_STEPS[family]).to(device)
        data = play(env, actions)
        for value in data.values(include_nested=True, leaves_only=True):
            assert value.device.type == torch.device(device).type
        assert data["next", "done"].sum() == 2 * 4


def test_runs_on_cpu(play):
    run_on("cpu", play)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(play):
    run_on("cuda", play)


def test_a_random_stream_saved_on_another_kind_of_device_restarts_from_a_seed_of_it(play):
    """A CUDA generator's state (16 bytes: seed and offset) cannot be set on the CPU Mersenne Twister (and
    the reverse: the GPU run of session 14 died with "RNG state is wrong size" when it resumed a CPU
    checkpoint). The env then seeds the stream from the saved bytes, with a warning: two resumes from the
    same state play the same trials, another state plays others."""
    env = trial_env("tabular", 4, 2)
    saved = env.rng_state()
    foreign = {k: torch.arange(16, dtype=torch.uint8) for k in saved}  # the size of a CUDA Philox state
    actions = random_actions(env, 2 * 2 * EPISODE_STEPS["tabular"])

    def resumed_from(state):
        with pytest.warns(UserWarning) as caught:
            env.set_rng_state(state)
        assert [str(w.message).split(" random stream was saved on another kind of device")[0] for w in caught] == [
            "the simulator's", "the task draws'"]
        assert all("so this resume is not bit-identical" in str(w.message) for w in caught)
        return play(env, actions)["next", "reward"]

    first = resumed_from(foreign)
    again = resumed_from(foreign)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    other = resumed_from({k: v + 1 for k, v in foreign.items()})
    assert not torch.equal(first, other)
    env.set_rng_state(saved)  # a state of this device's kind is set as it is, silently
    assert torch.equal(env.rng_state()["simulator"], saved["simulator"])


def test_one_registry_a_family_declared_once_is_known_by_name_and_by_path():
    from rl2_lightning.envs import FAMILIES, BernoulliBandit, TaskSimulator, family_class, known_families

    class Coins(BernoulliBandit):
        family = "coins_for_this_test"

    try:
        assert family_class("coins_for_this_test") is Coins and "coins_for_this_test" in known_families()
        assert family_class("rl2_lightning.envs.RiverSwim") is FAMILIES["riverswim"]  # a dotted path, imported
        with pytest.raises(ValueError, match="task family 'bandit' is taken by rl2_lightning.envs.bandit.BernoulliBandit"):
            type("Impostor", (TaskSimulator,), {"family": "bandit"})
        with pytest.raises(ValueError, match="'collections.OrderedDict' is not a TaskSimulator subclass"):
            family_class("collections.OrderedDict")
        with pytest.raises(ValueError, match=r"simulator 'no_such_module.Sim' cannot be imported"):
            family_class("no_such_module.Sim")
    finally:
        FAMILIES.pop("coins_for_this_test", None)
