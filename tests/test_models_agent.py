"""Actor/critic modules (rl2_lightning/models/): recurrence, resets and ablations."""

from __future__ import annotations

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import set_recurrent_mode

from rl2_lightning.envs import make_trial_env
from rl2_lightning.models import make_agent


def env_with_agent(trials_per_reset=1, **agent_kwargs):
    env = make_trial_env("tabular", 4, 2, trials_per_reset=trials_per_reset, seed=3, episode_steps=3)
    agent = make_agent(env, hidden_size=16, embed_size=16, **agent_kwargs)
    for primer in agent.primers:
        env.append_transform(primer)
    return env, agent


def test_step_by_step_equals_recurrent_mode_over_a_trial():
    env, agent = env_with_agent()
    torch.manual_seed(0)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(6, agent.actor, break_when_any_done=False)
        with set_recurrent_mode(True):
            replay = agent.actor(rollout.clone())
            values = agent.critic(rollout.clone())["state_value"]
    torch.testing.assert_close(replay["logits"], rollout["logits"])
    # The critic, never run during collection, starts from zeros at the trial start in recurrent
    # mode; step by step from a zero state it must give the same values.
    step_values, hidden = [], None
    with torch.no_grad():
        for t in range(6):
            td = rollout[:, t].clone()
            if hidden is not None:
                td.set("recurrent_state_critic", hidden)
            out = agent.critic(td)
            step_values.append(out["state_value"])
            hidden = out["next", "recurrent_state_critic"]
    torch.testing.assert_close(torch.stack(step_values, 1), values)


def hidden_norms(rollout):
    return rollout["recurrent_state_actor"].flatten(2).norm(dim=-1)  # [B, T]


def test_hidden_state_resets_at_trial_starts_only():
    env, agent = env_with_agent()
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(12, agent.actor, break_when_any_done=False)  # two trials of 6 steps
    is_init = rollout["is_init"].squeeze(-1)
    assert is_init[:, 0].all() and is_init[:, 6].all() and is_init.sum() == 2 * 4
    norms = hidden_norms(rollout)
    assert (norms[is_init] == 0).all()
    assert (norms[~is_init] > 0).all()  # including the first step after each inner episode end (t=3, 9)


def test_no_reset_ablation_keeps_hidden_state_across_trials():
    env, agent = env_with_agent(trials_per_reset=2)
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        rollout = env.rollout(12, agent.actor, break_when_any_done=False)
    assert rollout["next", "trial_done"][:, 5].all()  # the first trial ends at t=5 ...
    assert not rollout["is_init"][:, 6].any()  # ... but the next one starts without is_init
    assert (hidden_norms(rollout)[:, 6] > 0).all()
    assert rollout["next", "done"].squeeze(-1)[:, :11].sum() == 0


def test_mlp_ablation_has_no_memory():
    env, agent = env_with_agent(architecture="mlp")
    assert agent.primers == []
    assert not any(isinstance(m, torch.nn.GRU) for m in agent.actor.modules())
    with torch.no_grad():
        rollout = env.rollout(3, agent.actor, break_when_any_done=False)
    assert rollout["logits"].shape == (4, 3, 5)


def test_shared_trunk_shares_encoder_and_gru():
    _, shared = env_with_agent(shared_trunk=True)
    _, separate = env_with_agent(shared_trunk=False)
    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    assert len(ids(shared.actor) & ids(shared.critic)) > 0
    assert len(ids(separate.actor) & ids(separate.critic)) == 0


def test_unknown_architecture_is_rejected():
    env = make_trial_env("bandit", 2, 3, num_arms=2)
    with pytest.raises(ValueError, match="model.architecture"):
        make_agent(env, architecture="transformer")


def test_pixel_observations_get_the_papers_conv_encoder():
    from rl2_lightning.models.encoders import PixelInputEncoder

    enc = PixelInputEncoder((3, 30, 40), num_actions=3, embed_size=256)
    convs = [m for m in enc.conv if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(16, (5, 5), (2, 2))] * 2
    obs = torch.rand(2, 4, 3, 30, 40) * 2 - 1
    args = (torch.zeros(2, 4, 3), torch.zeros(2, 4, 1), torch.zeros(2, 4, 1, dtype=torch.bool))
    out = enc(obs, *args)
    assert out.shape == (2, 4, 256)
    torch.testing.assert_close(enc(obs[:, 1], *(a[:, 1] for a in args)), out[:, 1])  # same with one lead dim
