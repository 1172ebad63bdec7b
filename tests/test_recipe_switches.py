"""The recipe's switches (issue: fast RL²): each changes what it claims, on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchrl.modules import set_recurrent_mode
from trainkit import compose_cfg, module_of

from rl2_lightning.envs import make_trial_env
from rl2_lightning.evaluation.scoring import level_crossings
from rl2_lightning.models import make_agent


def tiny_env():
    return make_trial_env("tabular", 4, 2, seed=3, episode_steps=3)


def rollout_of(agent, env):
    env = agent.attach_to(env)
    torch.manual_seed(0)
    return env.rollout(6, agent.actor, break_when_any_done=False)


def test_layer_norm_normalises_the_memory_input_and_output():
    env = tiny_env()
    agent = make_agent(env, hidden_size=16, embed_size=16, layer_norm=True)
    assert sum(isinstance(m, nn.LayerNorm) for m in agent.actor.modules()) == 2
    assert sum(isinstance(m, nn.LayerNorm) for m in agent.critic.modules()) == 2
    rollout = rollout_of(agent, env)
    for key in ("embed_actor", "features_actor"):  # zero mean, unit variance per step (affine starts at 1, 0)
        x = rollout[key]
        torch.testing.assert_close(x.mean(-1), torch.zeros(x.shape[:-1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.var(-1, unbiased=False), torch.ones(x.shape[:-1]), atol=1e-2, rtol=0)  # eps=1e-5
    # the GRU's own output is not normalised: LayerNorm sits after it
    assert not torch.allclose(rollout["memory_actor"].mean(-1), torch.zeros(rollout.shape), atol=1e-3)
    # recurrent mode over the trial replays the collected logits
    with torch.no_grad(), set_recurrent_mode(True):
        torch.testing.assert_close(agent.actor(rollout.clone())["logits"], rollout["logits"])


def test_without_layer_norm_there_is_none():
    agent = make_agent(tiny_env(), hidden_size=16, embed_size=16)
    assert not any(isinstance(m, nn.LayerNorm) for m in agent.actor.modules())


def test_orthogonal_init_gives_orthogonal_blocks_zero_biases_and_a_small_policy_head():
    torch.manual_seed(0)
    agent = make_agent(tiny_env(), hidden_size=16, embed_size=16, init="orthogonal")
    gru = next(m for m in agent.actor.modules() if isinstance(m, nn.GRU))
    for block in gru.weight_hh_l0.detach().chunk(3, 0):  # each gate's recurrent matrix is orthogonal
        torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)
    assert all((b == 0).all() for n, b in gru.named_parameters() if n.startswith("bias"))
    linears = [m for m in agent.actor.modules() if isinstance(m, nn.Linear)]
    encoder, head = linears[0], linears[-1]
    w = encoder.weight.detach()  # [16, 17]: orthonormal rows scaled by sqrt(2)
    torch.testing.assert_close(w @ w.T, 2 * torch.eye(16), atol=1e-5, rtol=0)
    hw = head.weight.detach()  # [5, 16], gain 0.01: rows orthogonal with norm 0.01
    torch.testing.assert_close(hw @ hw.T, 1e-4 * torch.eye(5), atol=1e-7, rtol=0)
    value_head = [m for m in agent.critic.modules() if isinstance(m, nn.Linear)][-1]
    assert value_head.weight.norm().item() == pytest.approx(1.0, abs=1e-5)
    # PyTorch's default init is not orthogonal
    torch.manual_seed(0)
    default = make_agent(tiny_env(), hidden_size=16, embed_size=16)
    gru = next(m for m in default.actor.modules() if isinstance(m, nn.GRU))
    block = gru.weight_hh_l0.detach()[:16]
    assert not torch.allclose(block @ block.T, torch.eye(16), atol=1e-2)


def test_unknown_init_is_rejected():
    with pytest.raises(ValueError, match="model.init"):
        make_agent(tiny_env(), init="xavier")


def module_for(overrides):
    return module_of(compose_cfg([*overrides, "trainer.max_epochs=5"]))


def test_entropy_coefficient_decays_linearly_to_its_final_value():
    module = module_for(["algo.entropy_coeff=0.05", "algo.entropy_coeff_final=0.01"])
    assert [module.algo.entropy_coeff_at(e, 5) for e in range(6)] == pytest.approx([0.05, 0.04, 0.03, 0.02, 0.01, 0.01])
    constant = module_for(["algo.entropy_coeff=0.05"])
    assert [constant.algo.entropy_coeff_at(e, 5) for e in range(5)] == pytest.approx([0.05] * 5)


def test_entropy_decay_reaches_the_loss_during_training(tmp_path):
    from rl2_lightning.train import train

    cfg = compose_cfg(["conf=bandit_k5_n10", f"runs_dir={tmp_path}", "algo.entropy_coeff=0.05",
                       "algo.entropy_coeff_final=0.0", "trainer.max_epochs=3", "callbacks.metatest=null"])
    out = train(cfg)
    assert float(out["module"].algo.loss_module.entropy_coeff) == pytest.approx(0.0)  # set at the last epoch's start


def grads_after_clip(clip: str, max_norm: float):
    module = module_for([f"algo.grad_clip={clip}", f"algo.max_grad_norm={max_norm}"])
    optimizer = module.configure_optimizers()
    optimizer = optimizer[0][0] if isinstance(optimizer, tuple) else optimizer
    torch.manual_seed(0)
    for group, scale in zip(optimizer.param_groups, (0.01, 10.0)):  # a small actor and a large critic gradient
        for p in group["params"]:
            p.grad = torch.randn_like(p) * scale
    before = {i: torch.nn.utils.get_total_norm([p.grad for p in g["params"]]).item() for i, g in enumerate(optimizer.param_groups)}
    norms = module.algo.clip_gradients(optimizer)
    after = {i: torch.nn.utils.get_total_norm([p.grad for p in g["params"]]).item() for i, g in enumerate(optimizer.param_groups)}
    return before, after, {k: v.item() for k, v in norms.items()}


def test_separate_clipping_gives_each_network_its_own_norm():
    before, after, norms = grads_after_clip("separate", 0.5)
    assert before[0] < 0.5 < before[1]
    assert after[0] == pytest.approx(before[0])  # the actor's small gradient is untouched
    assert after[1] == pytest.approx(0.5, rel=1e-4)  # the critic's is clipped to the max norm
    assert norms["train/grad_norm_critic"] == pytest.approx(before[1])


def test_joint_clipping_lets_the_critic_shrink_the_actor_step():
    before, after, norms = grads_after_clip("joint", 0.5)
    total = (before[0] ** 2 + before[1] ** 2) ** 0.5
    assert norms["train/grad_norm"] == pytest.approx(total)
    assert after[0] == pytest.approx(before[0] * 0.5 / total, rel=1e-4)  # scaled down with the critic


def test_level_crossings_on_a_synthetic_curve():
    frames = [100, 200, 300, 400, 500]
    seconds = [10.0, 20.0, 30.0, 40.0, 50.0]
    scores = [50.0, 62.0, 58.0, 75.0, 79.0]  # a dip after a first crossing must not move it
    rows = level_crossings(frames, seconds, scores, low=50.0, high=80.0)
    # levels: 50% 65.0, 80% 74.0, 90% 77.0, 95% 78.5, 100% 80.0
    assert [r["level"] for r in rows] == pytest.approx([65.0, 74.0, 77.0, 78.5, 80.0])
    assert [r["frames"] for r in rows] == [400, 400, 500, 500, None]
    assert [r["seconds"] for r in rows] == [40.0, 40.0, 50.0, 50.0, None]
    # a score exactly at the level counts as reached
    assert level_crossings([1, 2], [1.0, 2.0], [60.0, 65.0], 50.0, 80.0, fractions=(0.5,))[0]["frames"] == 2


# ---------------------------------------------------------------------- the references' switches (issue: pure RL²)
def tiny_ppo(*overrides):
    from test_algorithms import _collected_batch

    torch.manual_seed(0)
    cfg = compose_cfg(["conf=tabular_n10", "env.episodes_per_trial=2", "algo.epochs=4", "algo.minibatches=2", *overrides])
    module = module_of(cfg)
    return module, _collected_batch(module, cfg)


def update(module, data):
    from rl2_lightning.algos.base import UpdateContext

    class Plain(UpdateContext):
        def backward(self, loss):
            loss.backward()

    optimizer = torch.optim.Adam(module.algo.param_groups())
    return module.algo.update(data, optimizer, Plain())


def test_the_huber_value_loss_is_torchs():
    from torchrl.objectives.utils import distance_loss

    module, _ = tiny_ppo("algo.critic_loss=huber")
    assert module.algo.loss_module.loss_critic_type == "smooth_l1"
    a, b = torch.tensor([0.0, 0.5, 3.0, -2.0]), torch.tensor([0.2, 2.0, 0.0, -2.5])
    torch.testing.assert_close(distance_loss(a, b, "smooth_l1"), torch.nn.functional.huber_loss(a, b, delta=1.0, reduction="none"))
    assert tiny_ppo()[0].algo.loss_module.loss_critic_type == "l2"


def test_the_kl_guard_stops_the_epochs_when_the_kl_passes_its_target():
    module, data = tiny_ppo("algo.target_kl=1e-12")  # any update at all passes this target
    assert update(module, data)["train/epochs"] == 1
    module, data = tiny_ppo()
    assert update(module, data)["train/epochs"] == 4
    module, data = tiny_ppo("algo.target_kl=10.0")  # never reached
    assert update(module, data)["train/epochs"] == 4


def test_policy_entropy_is_logged_only_when_torchrl_computes_it():
    stats = update(*tiny_ppo("algo.entropy_coeff=0.01"))
    assert 0 < stats["train/entropy"] <= torch.log(torch.tensor(5.0)) + 1e-5  # five actions
    assert "train/entropy" not in update(*tiny_ppo("algo.entropy_coeff=0.0"))  # not a false zero


def test_batch_scope_standardises_advantages_once_over_the_whole_batch(monkeypatch):
    from rl2_lightning.algos import ppo

    seen = []
    real = ppo.normalized_advantage
    monkeypatch.setattr(ppo, "normalized_advantage", lambda td: seen.append(td.shape[0]) or real(td))
    module, data = tiny_ppo("algo.advantage_scope=batch")
    update(module, data)
    assert seen == [data.shape[0]]  # once, all trials
    seen.clear()
    module, data = tiny_ppo()
    update(module, data)
    assert len(seen) == 4 * 2 and max(seen) < data.shape[0]  # every minibatch of every epoch


def test_weight_decay_only_where_configured():
    module, _ = tiny_ppo("algo.weight_decay=0.1", "optimizer=adamw")
    groups = module.algo.param_groups()
    assert [(g["name"], g["weight_decay"]) for g in groups] == [("actor", 0.1), ("actor", 0.0), ("critic", 0.1), ("critic", 0.0)]
    assert all(p.ndim >= 2 for g in groups if g["weight_decay"] > 0 for p in g["params"])
    assert all(p.ndim < 2 for g in groups if g["weight_decay"] == 0 for p in g["params"])
    # an AdamW step with zero gradients moves only the decayed matrices
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    before = [p.detach().clone() for g in groups for p in g["params"]]
    for g in groups:
        for p in g["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    after = [p.detach() for g in groups for p in g["params"]]
    flags = [g["weight_decay"] > 0 for g in groups for _ in g["params"]]
    for b, a, decayed in zip(before, after, flags):
        assert (not torch.equal(a, b)) == (decayed and bool(b.abs().sum() > 0))
    # without it no group decays, whatever the optimizer's default (AdamW's is 0.01)
    plain, _ = tiny_ppo("optimizer=adamw")
    assert [g["weight_decay"] for g in plain.algo.param_groups()] == [0.0, 0.0]


def test_running_moments_normalised_targets_and_denormalised_predictions_by_hand():
    from rl2_lightning.algos.base import denormalize, normalize, update_moments

    m = update_moments(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(m, torch.tensor([2.0, 1.0, 2.0], dtype=torch.float64))  # mean 2, variance 1
    m = update_moments(m, torch.tensor([5.0, 7.0]))  # all four: mean 4, variance (9 + 1 + 1 + 9) / 4 = 5
    torch.testing.assert_close(m, torch.tensor([4.0, 5.0, 4.0], dtype=torch.float64))
    x = torch.tensor([4.0, 9.0])
    torch.testing.assert_close(normalize(x, m), torch.tensor([0.0, 5.0 / 5.0**0.5]))
    torch.testing.assert_close(denormalize(normalize(x, m), m), x)


def test_value_norm_feeds_gae_returns_and_the_critic_normalised_targets():
    module, data = tiny_ppo("algo.value_norm=true")
    moments = module.algo.value_moments
    assert moments[2] == data["valid"].sum()  # the batch's targets are counted once
    valid = data["valid"].squeeze(-1)
    targets = data["value_target"][valid]
    torch.testing.assert_close(targets.mean().double(), torch.zeros((), dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets.std(unbiased=False).double(), torch.ones((), dtype=torch.float64), atol=1e-4, rtol=0)
    # the advantages are on the returns' scale (GAE ran on de-normalised values): not the same as without
    plain, plain_data = tiny_ppo()
    assert not torch.allclose(plain_data["value_target"], data["value_target"])
    assert "algo.value_moments" in module.state_dict()  # carried in checkpoints


def test_the_authors_recipe_composes_over_a_preset_and_trains_tiny(tmp_path):
    from rl2_lightning.train import train

    full = compose_cfg(["conf=tabular_n10", "recipe=authors"], tiny=False)
    assert (full.env.num_envs * 100, full.model.hidden_size, full.algo.target_kl, full.algo.value_norm) == (250_000, 256, 0.01, True)
    assert full.env.num_envs // full.algo.minibatches == 125  # 128-trial minibatches, as near as 2500 divides
    cfg = compose_cfg(["conf=tabular_n10", "recipe=authors", f"runs_dir={tmp_path}", "env.episodes_per_trial=2",
                       "env.num_envs=8", "model.hidden_size=16", "model.embed_size=16", "algo.minibatches=2"])
    out = train(cfg)
    assert out["module"].algo.value_moments[2] > 0 and out["metatest"]["trial_return"] > 0


def test_the_lucaslingle_recipe_composes_its_switches_and_trains_tiny(tmp_path):
    from rl2_lightning.train import train

    full = compose_cfg(["conf=tabular_n10", "recipe=lucaslingle"], tiny=False)
    assert full.env.num_envs * 100 == 240_000 and (full.algo.epochs, full.algo.minibatches) == (8, 5)
    assert full.model.memory._target_ == "rl2_lightning.models.NormReLUGRUMemory" and full.model.hidden_size == 256
    assert full.optimizer._target_ == "torch.optim.AdamW" and full.algo.weight_decay == 0.01
    assert (full.algo.actor_lr, full.algo.critic_lr, full.algo.entropy_coeff, full.algo.lmbda) == (2e-4, 2e-4, 0.01, 0.3)
    assert (full.algo.normalize_advantage, full.algo.critic_loss, full.algo.value_norm, full.algo.target_kl) == (
        False, "huber", False, None)
    cfg = compose_cfg(["conf=tabular_n10", "recipe=lucaslingle", f"runs_dir={tmp_path}", "env.episodes_per_trial=2",
                       "env.num_envs=10", "model.hidden_size=16", "model.embed_size=16"])
    out = train(cfg)
    groups = out["module"].optimizers().optimizer.param_groups
    assert {g["weight_decay"] for g in groups} == {0.01, 0.0}  # matrices decay, biases and norm gains do not
    assert out["metatest"]["trial_return"] > 0
