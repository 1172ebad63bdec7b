"""Actor/critic modules (rl2_lightning/models/): recurrence, resets and ablations."""

from __future__ import annotations

import functools

import pytest
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import set_recurrent_mode

from rl2_lightning.envs import make_trial_env
from rl2_lightning.models import GRUMemory, MLPMemory, make_agent

pytestmark = pytest.mark.usefixtures("one_thread")


def env_with_agent(trials_per_reset=1, **agent_kwargs):
    env = make_trial_env("tabular", 4, 2, trials_per_reset=trials_per_reset, seed=3, episode_steps=3)
    agent = make_agent(env, hidden_size=16, embed_size=16, **agent_kwargs)
    return agent.attach_to(env), agent


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
    env, agent = env_with_agent(memory=MLPMemory)
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


def test_unknown_memory_is_rejected():
    env = make_trial_env("bandit", 2, 3, num_arms=2)
    for memory in ("transformer", torch.nn.GRU, functools.partial(torch.nn.Linear, 3)):
        with pytest.raises(ValueError, match="model.memory"):
            make_agent(env, memory=memory)


# state_dict keys and shapes of the agents before the memory became a component (hidden 16, embed 8,
# tabular: 17 inputs, 5 actions): checkpoints written then must still load
GRU_ACTOR = {
    "module.0.module.0.module.linear.weight": (8, 17),
    "module.0.module.0.module.linear.bias": (8,),
    "module.0.module.1.gru.weight_ih_l0": (48, 8),
    "module.0.module.1.gru.weight_hh_l0": (48, 16),
    "module.0.module.1.gru.bias_ih_l0": (48,),
    "module.0.module.1.gru.bias_hh_l0": (48,),
    "module.0.module.2.module.weight": (5, 16),
    "module.0.module.2.module.bias": (5,),
}
MLP_ACTOR = {
    "module.0.module.0.module.linear.weight": (8, 17),
    "module.0.module.0.module.linear.bias": (8,),
    "module.0.module.1.module.0.weight": (16, 8),
    "module.0.module.1.module.0.bias": (16,),
    "module.0.module.2.module.weight": (5, 16),
    "module.0.module.2.module.bias": (5,),
}


@pytest.mark.parametrize("memory, actor", [(GRUMemory, GRU_ACTOR), (MLPMemory, MLP_ACTOR)])
def test_state_dict_keys_are_those_of_earlier_checkpoints(memory, actor):
    env = make_trial_env("tabular", 4, 2, seed=3, episode_steps=3)
    agent = make_agent(env, memory=memory, hidden_size=16, embed_size=8)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(agent.actor) == actor
    critic = {k: v for k, v in actor.items() if not k.startswith("module.0.module.2")}
    critic = {k.replace("module.0.module.", "module.", 1): v for k, v in critic.items()}
    assert shapes(agent.critic) == {**critic, "module.2.module.weight": (1, 16), "module.2.module.bias": (1,)}
    ln = make_agent(env, memory=memory, hidden_size=16, embed_size=8, layer_norm=True, shared_trunk=True)
    # encoder LayerNorm inside the encoder, memory LayerNorm after the memory, the head moves to index 3
    extra = {"module.0.module.0.module.norm.weight": (8,), "module.0.module.0.module.norm.bias": (8,),
             "module.0.module.2.module.weight": (16,), "module.0.module.2.module.bias": (16,),
             "module.0.module.3.module.weight": (5, 16), "module.0.module.3.module.bias": (5,)}
    expected = {k.replace("module.0.module.0.module.linear", "module.0.module.0.module.net.linear"): v
                for k, v in actor.items() if not k.startswith("module.0.module.2")}
    assert shapes(ln.actor) == {**expected, **extra}


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
