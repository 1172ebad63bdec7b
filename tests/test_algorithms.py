"""Every algorithm with every memory: each preset composes with them, and each family trains tiny with them."""

from __future__ import annotations

import pytest
import torch
from trainkit import PRESETS, compose_cfg, module_of

from rl2_lightning.train import train

ALGOS = ["ppo", "trpo"]
MODELS = ["gru", "lstm", "transformer", "mlp"]
COMBOS = [(a, m) for a in ALGOS for m in MODELS]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_builds_with_every_algorithm_and_memory(preset):
    """Composition for every preset; the module too, except for mazes (each build starts an engine for the
    specs: the maze training test below builds every combination)."""
    for algo, model in COMBOS:
        cfg = compose_cfg([f"conf={preset}", f"algo={algo}", f"model={model}"], tiny=False)
        assert cfg.algo._target_.endswith(algo.upper())
        assert cfg.model.memory._target_.lower().endswith(f"{model}memory")
        assert cfg.experiment == preset
        if not preset.startswith("maze"):
            module = module_of(cfg)
            assert type(module.algo).__name__ == algo.upper()
            assert type(module.actor.module[0][1]).__name__.lower() == f"{model}memory"


@pytest.mark.parametrize(("algo", "model"), COMBOS)
@pytest.mark.parametrize("preset", ["bandit_k5_n10", "tabular_n10", "riverswim"])
def test_every_family_trains_with_every_algorithm_and_memory(tmp_path, preset, algo, model):
    torch.manual_seed(0)
    cfg = compose_cfg([f"conf={preset}", f"algo={algo}", f"model={model}", "callbacks.metatest=null",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=1", f"runs_dir={tmp_path}"])
    start = {k: v.clone() for k, v in module_of(cfg).actor.state_dict().items()}
    out = train(cfg)
    module = out["module"]
    trial_steps = out["trainer"].datamodule.trial_steps
    assert int(module.frames) == cfg.env.num_envs * trial_steps  # one iteration of whole trials
    moved = [k for k, v in module.actor.state_dict().items() if not torch.equal(v, start[k])]
    assert moved  # the update changed the policy (the same seed built the same initial weights)


@pytest.mark.maze
@pytest.mark.parametrize(("algo", "model"), COMBOS)
def test_mazes_train_with_every_algorithm_and_memory(tmp_path, algo, model):
    pytest.importorskip("vizdoom")
    cfg = compose_cfg(["conf=maze_5x5", f"algo={algo}", f"model={model}", "callbacks.metatest=null",
                       "env.simulator.horizon=5", "env.num_envs=2", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=1", f"runs_dir={tmp_path}"])
    out = train(cfg)
    assert 0 < int(out["module"].frames) <= 2 * 2 * 5
    assert out["module"].hparams.model["shared_trunk"]  # the paper's maze agent: one trunk for both heads


def _collected_batch(module, cfg, seed=0):
    """A batch of whole trials from the module's own actor, with advantages."""
    from torchrl.collectors import Collector

    env = module.agent.attach_to(module.env.make(cfg.env.num_envs, seed=seed))
    steps = env.base_env.trial_steps
    collector = Collector(env, module.actor, frames_per_batch=cfg.env.num_envs * steps, total_frames=-1,
                          reset_at_each_iter=True, split_trajs=False, auto_register_policy_transforms=False)
    data = next(iter(collector)).reshape(-1, steps)
    collector.shutdown()
    module.algo.compute_advantages(data)
    return data


def test_a_shared_trunk_runs_once_in_the_ppo_loss_with_the_gradients_of_running_it_twice():
    """With model.shared_trunk the PPO loss's critic is only the value head, reading the features the
    actor's pass wrote; the losses and every gradient equal those of TorchRL's loss over the whole
    critic (the trunk run a second time)."""
    from torchrl.modules import set_recurrent_mode
    from torchrl.objectives import ClipPPOLoss

    torch.manual_seed(0)
    cfg = compose_cfg(["conf=tabular_n10", "model.shared_trunk=true", "env.num_envs=4"])
    module = module_of(cfg)
    ours = module.algo.loss_module
    assert len(ours.critic_network.module) == 1  # the value head alone
    data = _collected_batch(module, cfg)
    # in float64, so that the two summation orders agree to far below any real difference
    module.double()
    data = data.apply(lambda x: x.double() if x.is_floating_point() else x)
    twice = ClipPPOLoss(module.actor, module.critic, clip_epsilon=float(ours.clip_epsilon),
                        entropy_coeff=float(ours.entropy_coeff), critic_coeff=float(ours.critic_coeff),
                        loss_critic_type="l2", reduction="mean")
    twice.set_keys(sample_log_prob="action_log_prob", value="state_value")
    ours.reduction = "mean"
    params = [p for g in module.algo.param_groups() for p in g["params"]]
    results = []
    for loss_module in (ours, twice):
        # count the trunk's GRU passes through the loss
        gru = module.actor.module[0][1]
        calls = []
        handle = gru.register_forward_hook(lambda *a: calls.append(1))
        with set_recurrent_mode(True):
            losses = loss_module(data.clone())
        handle.remove()
        total = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
        grads = torch.autograd.grad(total, params, allow_unused=True)
        results.append((len(calls), [losses[k].detach() for k in ("loss_objective", "loss_critic", "loss_entropy")], grads))
    (calls_ours, losses_ours, grads_ours), (calls_twice, losses_twice, grads_twice) = results
    assert (calls_ours, calls_twice) == (1, 2)
    for a, b in zip(losses_ours, losses_twice):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert any(g is not None and g.abs().sum() > 0 for g in grads_ours)
    for a, b in zip(grads_ours, grads_twice):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_separate_networks_keep_the_whole_critic_in_the_ppo_loss():
    cfg = compose_cfg(["conf=tabular_n10"])
    module = module_of(cfg)
    assert module.algo.loss_module.critic_network is module.critic


def test_reward_scale_scales_the_advantages_and_value_targets_and_leaves_the_rewards():
    """GAE is linear in rewards and values: with the critic's output multiplied by s as well, a run with
    ``algo.reward_scale=s`` gets s times the unscaled advantages and value targets, and the batch's own
    rewards (the policy's input, the logged returns) stay the true ones."""
    torch.manual_seed(0)
    cfg = compose_cfg(["conf=tabular_n10", "env.num_envs=4"])
    module = module_of(cfg)
    data = _collected_batch(module, cfg)
    rewards = data["next", "reward"].clone()
    scaled = module_of(compose_cfg(["conf=tabular_n10", "env.num_envs=4", "algo.reward_scale=0.05"]))
    scaled.load_state_dict(module.state_dict())
    head = scaled.critic.module[-1].module  # the value head's final linear layer: values x 0.05
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(0.05)
        last.bias.mul_(0.05)
    again = data.exclude("advantage", "value_target", "state_value", ("next", "state_value"))
    scaled.algo.compute_advantages(again)
    torch.testing.assert_close(again["advantage"], 0.05 * data["advantage"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(again["value_target"], 0.05 * data["value_target"], rtol=1e-4, atol=1e-6)
    assert torch.equal(again["next", "reward"], rewards)
    assert not torch.equal(data["advantage"], again["advantage"])


def test_monte_carlo_targets_are_the_discounted_returns_in_the_critics_units():
    """The returns that followed each step, summed by hand over one trial of the batch: times
    ``reward_scale``, and normalised by the running moments when ``value_norm`` (as the critic's outputs)."""
    from rl2_lightning.algos.base import normalize

    torch.manual_seed(0)
    cfg = compose_cfg(["conf=tabular_n10", "env.num_envs=4", "algo.reward_scale=0.05"])
    module = module_of(cfg)
    data = _collected_batch(module, cfg)
    reward = data["next", "reward"][1, :, 0].tolist()
    by_hand = [sum(0.05 * r * 0.99**k for k, r in enumerate(reward[t:])) for t in range(len(reward))]
    got = module.algo.monte_carlo_targets(data)
    assert got.shape == data["state_value"].shape
    torch.testing.assert_close(got[1, :, 0], torch.tensor(by_hand, dtype=got.dtype), rtol=1e-5, atol=1e-6)

    normed = module_of(compose_cfg(["conf=tabular_n10", "env.num_envs=4", "algo.value_norm=true"]))
    again = data.exclude("advantage", "value_target", "state_value", ("next", "state_value"))
    normed.algo.compute_advantages(again)
    assert normed.algo.value_moments[2] > 0
    torch.testing.assert_close(normed.algo.monte_carlo_targets(again),
                               normalize(got / 0.05, normed.algo.value_moments), rtol=1e-5, atol=1e-5)


def test_ppo_trains_without_an_entropy_bonus(tmp_path):
    """``algo.entropy_coeff=0`` (no schedule): TorchRL then keeps no bonus and stores the coefficient as
    an integer tensor; the update's statistics must still average (this crashed in the first update)."""
    cfg = compose_cfg(["conf=bandit_k5_n10", "algo.entropy_coeff=0", "callbacks.metatest=null",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=1", f"runs_dir={tmp_path}"])
    out = train(cfg)
    assert int(out["module"].frames) == cfg.env.num_envs * 10
    assert not out["module"].algo.loss_module.entropy_bonus
