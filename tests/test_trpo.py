"""TRPO (rl2_lightning/algos/trpo.py): its maths against explicit matrices, and updates on a real batch."""

from __future__ import annotations

import copy
import inspect
import threading
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch.nn.utils import parameters_to_vector
from torchrl.modules import set_recurrent_mode

import rl2_lightning.algos.trpo as trpo
from rl2_lightning.algos.base import UpdateContext, normalized_advantage
from rl2_lightning.algos.trpo import (
    TRPO,
    categorical_kl,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    line_search,
    set_flat_params,
    standardized,
)
from rl2_lightning.components import _omegaconf_type, check, signature_of
from rl2_lightning.envs import make_trial_env
from rl2_lightning.models import make_agent

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------- maths


def test_categorical_kl_matches_torch_distributions():
    torch.manual_seed(0)
    old, new = torch.randn(4, 5, 3), torch.randn(4, 5, 3)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Categorical(logits=old), torch.distributions.Categorical(logits=new)
    )
    torch.testing.assert_close(categorical_kl(old, new), expected)
    assert categorical_kl(old, new).shape == (4, 5)
    assert categorical_kl(old, old).abs().max() < 1e-6


def test_fisher_vector_product_equals_hessian_of_the_kl_on_a_linear_policy():
    """A linear categorical policy (3 actions, 2 features: 9 parameters); at θ_old the Hessian of the
    mean KL(π_old ‖ π_θ) is the Fisher matrix, built explicitly here."""
    torch.manual_seed(0)
    x = torch.randn(7, 2, dtype=torch.float64)
    weight = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    theta_old = parameters_to_vector([weight, bias]).detach()
    old_logits = (x @ weight.T + bias).detach()

    def mean_kl_at(theta: torch.Tensor) -> torch.Tensor:
        w, b = theta[:6].view(3, 2), theta[6:]
        return categorical_kl(old_logits, x @ w.T + b).mean()

    hessian = torch.autograd.functional.hessian(mean_kl_at, theta_old)
    # the Hessian is the Fisher matrix of the softmax policy, Jᵀ(diag p - ppᵀ)J averaged over states
    p = torch.softmax(old_logits, -1)
    jac = torch.cat([torch.einsum("ij,nk->nijk", torch.eye(3, dtype=x.dtype), x).reshape(7, 3, 6),
                     torch.eye(3, dtype=x.dtype).expand(7, 3, 3)], -1)  # d logits / dθ, [N, 3, 9]
    softmax_fisher = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    fisher = torch.einsum("nai,nab,nbj->ij", jac, softmax_fisher, jac) / 7
    torch.testing.assert_close(hessian, fisher)

    damping = 0.1
    mean_kl = categorical_kl(old_logits, x @ weight.T + bias).mean()
    fvp = fisher_vector_product(mean_kl, [weight, bias], damping)
    for _ in range(3):
        v = torch.randn(9, dtype=torch.float64)
        torch.testing.assert_close(fvp(v), hessian @ v + damping * v)


def test_flat_grad_lines_up_with_parameters_and_fills_unused_with_zeros():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.zeros(3, requires_grad=True)
    b = torch.tensor([[3.0]], requires_grad=True)
    out = (a**2).sum() + 5 * b.sum()
    assert flat_grad(out, [a, unused, b]).tolist() == [2.0, 4.0, 0.0, 0.0, 0.0, 5.0]


def test_conjugate_gradient_solves_a_small_spd_system():
    A = torch.tensor([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    calls = []

    def fvp(v):
        calls.append(1)
        return A @ v

    x = conjugate_gradient(fvp, b, iterations=10)
    assert (A @ x - b).abs().max() < 1e-6
    torch.testing.assert_close(x, torch.linalg.solve(A, b))
    assert len(calls) <= 3  # exact after n = 3 iterations, then the residual stops it
    # one iteration is only the first steepest-descent step (x = α b), not the solution
    one = conjugate_gradient(lambda v: A @ v, b, iterations=1)
    torch.testing.assert_close(one, (b @ b) / (b @ A @ b) * b)
    assert (A @ one - b).abs().max() > 1e-2


def test_line_search_takes_the_first_admissible_fraction_or_rejects():
    tried = []

    def evaluate(step):  # surrogate rises up to a step of 1, the KL is the step's size
        tried.append(float(step))
        return -(step - 1.0).abs().sum(), step.abs().sum()

    full, baseline = torch.tensor([8.0]), torch.tensor(-1.0)
    # 8 (KL too big), 4 (KL too big), 2 (KL ok, surrogate -1: no gain), 1 (accepted)
    assert line_search(evaluate, full, baseline, max_kl=2.0, steps=10, backtrack=0.5) == (3, 0.125)
    assert tried == [8.0, 4.0, 2.0, 1.0]
    assert line_search(evaluate, full, baseline, max_kl=2.0, steps=3, backtrack=0.5) == (-1, 0.0)
    nan = lambda step: (torch.tensor(float("nan")), torch.tensor(0.0))  # noqa: E731
    assert line_search(nan, full, baseline, max_kl=2.0, steps=3, backtrack=0.5) == (-1, 0.0)


def test_on_cuda_the_rnns_run_without_cudnn_and_nothing_else_changes():
    """cuDNN's GRU has no double backward: only the RNNs' own forward runs with cuDNN off (checked on
    CPU through the CUDA branch, by watching the flag from inside each forward)."""
    net = torch.nn.ModuleDict({"gru": torch.nn.GRU(2, 3, batch_first=True), "head": torch.nn.Linear(3, 1)})
    seen = {}
    for name, mod in net.items():  # registered first, so they run before the context's own hooks
        mod.register_forward_hook(lambda m, a, o, k=name: seen.__setitem__(k, torch.backends.cudnn.enabled))
    enabled = torch.backends.cudnn.enabled
    with trpo.twice_differentiable_kernels(net, "cuda"):
        net["head"](net["gru"](torch.zeros(1, 4, 2))[0])
        assert torch.backends.cudnn.enabled == enabled
    assert seen == {"gru": False, "head": enabled}
    assert torch.backends.cudnn.enabled == enabled
    assert all(len(m._forward_hooks) == 1 and not m._forward_pre_hooks for m in net.values())  # removed
    with trpo.twice_differentiable_kernels(net, "cpu"):
        net["gru"](torch.zeros(1, 4, 2))
    assert seen["gru"] == enabled


def test_set_flat_params_copies_in_place_and_round_trips():
    layer = torch.nn.Linear(3, 2)
    params = list(layer.parameters())
    storages = [p.data_ptr() for p in params]
    flat = torch.arange(8, dtype=torch.float32)
    set_flat_params(params, flat)
    assert [p.data_ptr() for p in params] == storages  # not rebound to views of `flat`
    assert parameters_to_vector(params).tolist() == flat.tolist()
    flat.zero_()
    assert parameters_to_vector(params).tolist() == list(range(8))


def test_standardized_on_one_process_is_the_base_normalised_advantage():
    from tensordict import TensorDict

    torch.manual_seed(0)
    valid = torch.ones(3, 4, 1, dtype=torch.bool)
    valid[0, 2:] = False
    td = TensorDict({"advantage": torch.randn(3, 4, 1), "valid": valid}, batch_size=[3, 4])
    out = standardized(td["advantage"], valid.squeeze(-1).float(), lambda x: x)
    torch.testing.assert_close(out, normalized_advantage(td).squeeze(-1))


# ---------------------------------------------------------------------------------------------- updates


def make_batch(seed: int = 0, **agent_kwargs):
    """A real batch of 8 whole bandit trials (5 pulls each) collected by a tiny GRU agent."""
    torch.manual_seed(seed)
    env = make_trial_env("bandit", 8, 5, num_arms=3, seed=seed)
    agent = make_agent(env, hidden_size=16, embed_size=16, **agent_kwargs)
    env = agent.attach_to(env)
    with torch.no_grad():
        data = env.rollout(env.base_env.trial_steps, agent.actor, auto_reset=True, break_when_any_done=False)
    env.close()
    return agent, data


def run_update(agent, data, **kwargs):
    algo = TRPO(agent.actor, agent.critic, **kwargs)
    data = data.clone()
    algo.compute_advantages(data)
    optimizer = torch.optim.Adam(algo.param_groups(), lr=algo.critic_lr)
    stats = algo.update(data, optimizer, UpdateContext())
    return algo, data, stats


def policy_logits(actor, data):
    with torch.no_grad(), set_recurrent_mode(True):
        return actor.get_dist(data.select(*actor.in_keys, "is_init", strict=False)).logits


def surrogate(actor, data):
    """mean ratio · normalised advantage over the (all valid) steps, from the collected log-probs."""
    with torch.no_grad(), set_recurrent_mode(True):
        dist = actor.get_dist(data.select(*actor.in_keys, "is_init", strict=False))
        ratio = torch.exp(dist.log_prob(data["action"]) - data["action_log_prob"])
    return (ratio * normalized_advantage(data).squeeze(-1)).mean()


def actor_vector(agent):
    return parameters_to_vector(agent.actor.parameters()).detach().clone()


def test_update_keeps_the_kl_bound_improves_the_surrogate_and_shrinks_with_max_kl():
    agent, data = make_batch()
    assert data["valid"].all()
    theta0, logits0 = actor_vector(agent), policy_logits(agent.actor, data)
    big, small = copy.deepcopy(agent), copy.deepcopy(agent)

    max_kl = 0.05
    algo, data_big, stats = run_update(big, data, max_kl=max_kl, cg_damping=1e-3)
    kl = categorical_kl(logits0, policy_logits(big.actor, data)).mean()
    assert stats["train/line_search_steps"] >= 0
    assert 0 < kl <= max_kl * 1.001
    torch.testing.assert_close(stats["train/approx_kl"], kl, rtol=1e-4, atol=1e-7)
    assert kl > 0.2 * max_kl  # the step goes to the trust region, not a token move
    before, after = surrogate(agent.actor, data_big), surrogate(big.actor, data_big)
    assert after > before
    torch.testing.assert_close(-stats["loss/objective"], after, rtol=1e-4, atol=1e-6)

    _, _, stats_small = run_update(small, data, max_kl=1e-5, cg_damping=1e-3)
    assert stats_small["train/approx_kl"] <= 1e-5 * 1.001
    moved_big, moved_small = (actor_vector(big) - theta0).norm(), (actor_vector(small) - theta0).norm()
    assert 0 < moved_small < 0.1 * moved_big  # step ∝ sqrt(max_kl): ~0.014x
    assert set(stats) >= {
        "loss/objective", "loss/critic", "train/entropy", "train/approx_kl", "train/line_search_steps",
        "train/step_size", "train/grad_norm_critic",
    }
    assert all(v.dim() == 0 and torch.isfinite(v) for v in stats.values())


def test_critic_epochs_fit_the_value_targets_through_an_optimizer_of_the_critic_only():
    agent, data = make_batch(seed=1)
    algo = TRPO(agent.actor, agent.critic)
    # the optimizer holds the critic's own parameters only
    held = {id(p) for g in algo.param_groups() for p in g["params"]}
    assert held == {id(p) for p in agent.critic.parameters()}
    assert not held & {id(p) for p in agent.actor.parameters()}
    data = data.clone()
    algo.compute_advantages(data)

    def critic_loss():
        with torch.no_grad(), set_recurrent_mode(True):
            value = agent.critic(data.select(*agent.critic.in_keys, "is_init", strict=False))["state_value"]
        return ((value - data["value_target"]) ** 2).mean()

    loss0 = critic_loss()
    optimizer = torch.optim.Adam(algo.param_groups(), lr=1e-2)
    stats = algo.update(data, optimizer, UpdateContext())
    assert critic_loss() < loss0
    assert stats["train/grad_norm_critic"] > 0 and stats["loss/critic"] > 0


def test_padding_steps_do_not_reach_the_update():
    """Steps with ``valid=False`` (a padded trial's idle tail) count for nothing: whatever their
    advantage, target and log-prob hold (even nan and inf), the update is the same."""
    agent, data = make_batch(seed=7)
    algo = TRPO(agent.actor, agent.critic)
    algo.compute_advantages(data)
    valid = data["valid"].clone()
    valid[:4, 3:] = False
    data.set("valid", valid)
    pad = ~valid.squeeze(-1)
    clean, dirty = data.clone(), data.clone()
    for key, junk in (("advantage", float("nan")), ("value_target", float("inf")), ("action_log_prob", 1e30)):
        clean.get(key)[pad] = 0.0
        dirty.get(key)[pad] = junk
    unmasked = clean.clone()
    unmasked.set("valid", torch.ones_like(valid))

    updated_agents = []

    def updated(batch):
        copy_ = copy.deepcopy(agent)
        updated_agents.append(copy_)
        other = TRPO(copy_.actor, copy_.critic, max_kl=0.05)
        torch.manual_seed(0)  # the same critic minibatches
        stats = other.update(batch.clone(), torch.optim.Adam(other.param_groups()), UpdateContext())
        return actor_vector(copy_), parameters_to_vector(copy_.critic.parameters()).detach(), stats

    (a_clean, c_clean, s_clean), (a_dirty, c_dirty, s_dirty) = updated(clean), updated(dirty)
    assert s_clean["train/line_search_steps"] >= 0
    # the statistics are means over the valid steps only
    real = valid.squeeze(-1)
    new_logits = policy_logits(updated_agents[0].actor, clean)
    kl = categorical_kl(policy_logits(agent.actor, clean), new_logits)[real].mean()
    torch.testing.assert_close(s_clean["train/approx_kl"], kl, rtol=1e-4, atol=1e-7)
    with torch.no_grad(), set_recurrent_mode(True):
        dist = updated_agents[0].actor.get_dist(clean.select(*agent.actor.in_keys, "is_init", strict=False))
        ratio = torch.exp(dist.log_prob(clean["action"]) - clean["action_log_prob"])
    gain = (ratio * normalized_advantage(clean).squeeze(-1))[real].mean()
    torch.testing.assert_close(-s_clean["loss/objective"], gain, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(s_clean["train/entropy"], dist.entropy()[real].mean(), rtol=1e-5, atol=1e-6)
    assert torch.equal(a_clean, a_dirty) and torch.equal(c_clean, c_dirty)
    assert all(torch.equal(s_clean[k], s_dirty[k]) for k in s_clean)
    a_unmasked, _, _ = updated(unmasked)
    assert not torch.allclose(a_unmasked, a_clean)  # the padding's zeros would otherwise count


def _flip_direction(monkeypatch):
    """Make the CG direction point downhill: every line-search step then lowers the surrogate."""
    solve = trpo.conjugate_gradient
    monkeypatch.setattr(trpo, "conjugate_gradient", lambda fvp, b, iterations: -solve(fvp, b, iterations))


def test_rejected_step_restores_the_parameters_exactly(monkeypatch):
    agent, data = make_batch(seed=2)
    theta0 = actor_vector(agent)
    ptrs = [p.data_ptr() for p in agent.actor.parameters()]
    _flip_direction(monkeypatch)
    _, _, stats = run_update(agent, data, line_search_steps=4)
    assert stats["train/line_search_steps"] == -1
    assert stats["train/approx_kl"] == 0 and stats["train/step_size"] == 0
    assert torch.equal(actor_vector(agent), theta0)  # bit-exact
    assert [p.data_ptr() for p in agent.actor.parameters()] == ptrs


def test_zero_advantages_leave_the_policy_unchanged():
    agent, data = make_batch(seed=3)
    theta0 = actor_vector(agent)
    algo = TRPO(agent.actor, agent.critic, normalize_advantage=False)
    data = data.clone()
    algo.compute_advantages(data)
    data.set("advantage", torch.zeros_like(data["advantage"]))
    stats = algo.update(data, torch.optim.Adam(algo.param_groups()), UpdateContext())
    assert stats["train/line_search_steps"] == -1
    assert torch.equal(actor_vector(agent), theta0)


@pytest.mark.skipif(
    "shared_trunk" not in inspect.signature(make_agent).parameters, reason="make_agent takes no shared_trunk"
)
def test_shared_trunk_moves_only_with_the_policy_step(monkeypatch):
    agent, data = make_batch(seed=4, shared_trunk=True)
    algo = TRPO(agent.actor, agent.critic)
    actor_ids = {id(p) for p in agent.actor.parameters()}
    own = [p for p in agent.critic.parameters() if id(p) not in actor_ids]
    assert own and [id(p) for g in algo.param_groups() for p in g["params"]] == [id(p) for p in own]
    theta0, head0 = actor_vector(agent), parameters_to_vector(own).detach().clone()
    _flip_direction(monkeypatch)  # no policy step: whatever moves the trunk now is the critic's doing
    # an optimizer that (wrongly) holds every parameter must still not move the trunk
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    data = data.clone()
    algo.compute_advantages(data)
    stats = algo.update(data, optimizer, UpdateContext())
    assert stats["train/line_search_steps"] == -1
    assert torch.equal(actor_vector(agent), theta0)
    assert not torch.equal(parameters_to_vector(own).detach(), head0)


class ThreadRanks:
    """Ranks as threads of one process: ``mean_over_ranks`` meets all of them at a barrier, and every
    rank computes the same mean of the same slots (as an all-reduce gives every rank the same result)."""

    def __init__(self, world_size: int):
        self.barrier, self.slots = threading.Barrier(world_size, timeout=60), [None] * world_size

    def context(self, rank: int) -> UpdateContext:
        ranks = self

        class RankContext(UpdateContext):
            distributed = True

            def mean_over_ranks(self, x):
                ranks.slots[rank] = x.detach().clone()
                ranks.barrier.wait()
                mean = torch.stack(ranks.slots).mean(0)
                ranks.barrier.wait()  # nobody overwrites a slot before every rank has read them all
                return mean

        return RankContext()


def test_ranks_with_their_own_batches_take_the_identical_step_of_the_whole_batch():
    """Two ranks, each with its own 8 trials, end with bit-identical actors and critics; the policy
    step is the one-process step on all 16 trials (every mean is over all ranks' valid steps)."""
    agent, first = make_batch(seed=5)
    torch.manual_seed(6)
    env = make_trial_env("bandit", 8, 5, num_arms=3, seed=6)
    env = agent.attach_to(env)
    with torch.no_grad():
        second = env.rollout(
            env.base_env.trial_steps, agent.actor, auto_reset=True, break_when_any_done=False
        )
    env.close()
    whole = torch.cat([first, second], 0)
    kwargs = dict(max_kl=0.05, cg_damping=1e-3, critic_minibatches=2)
    reference = copy.deepcopy(agent)
    _, _, reference_stats = run_update(reference, whole, **kwargs)
    assert reference_stats["train/line_search_steps"] >= 0

    ranks, agents, results = ThreadRanks(2), [copy.deepcopy(agent) for _ in range(2)], [None, None]

    def rank_main(rank, batch):
        algo = TRPO(agents[rank].actor, agents[rank].critic, **kwargs)
        batch = batch.clone()
        algo.compute_advantages(batch)
        results[rank] = algo.update(batch, torch.optim.Adam(algo.param_groups()), ranks.context(rank))

    threads = [threading.Thread(target=rank_main, args=(r, b)) for r, b in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results), "a rank failed"
    (a0, c0), (a1, c1) = [(actor_vector(a), parameters_to_vector(a.critic.parameters())) for a in agents]
    assert torch.equal(a0, a1) and torch.equal(c0, c1)
    assert not torch.equal(a0, actor_vector(agent))
    step, reference_step = a0 - actor_vector(agent), actor_vector(reference) - actor_vector(agent)
    assert (step - reference_step).norm() < 1e-3 * reference_step.norm()  # float32 rounding through CG
    for key in ("train/line_search_steps", "train/step_size", "train/approx_kl", "loss/objective"):
        assert results[0][key] == results[1][key], key
        torch.testing.assert_close(results[0][key], reference_stats[key], rtol=1e-2, atol=1e-6)


# ---------------------------------------------------------------------------------------------- config


def test_config_checker_types_the_arguments():
    """The signature is the schema: numbers out of their Range, and unknown keys, fail naming the key."""
    def node(**kw):
        return OmegaConf.create({"_target_": "rl2_lightning.algos.trpo.TRPO", "_partial_": True, **kw})

    bad_values = [
        {"max_kl": 0.0}, {"cg_iterations": 0}, {"line_search_backtrack": 1.5}, {"cg_damping": -1.0},
        {"critic_epochs": 0}, {"critic_minibatches": 0}, {"max_grad_norm": 0.0}, {"clip_epsilon": 0.2},
    ]
    check(node(max_kl=0.02, cg_iterations=5, line_search_backtrack=0.8, normalize_advantage=False), "algo")
    bad_values += [{"critic_epochs": 2.5}, {"max_kl": "a"}, {"normalize_advantage": "maybe"}]
    for bad in bad_values:
        with pytest.raises(ValueError, match=f"algo.{next(iter(bad))}"):
            check(node(**bad), "algo")
    params, hints, _ = signature_of(TRPO)  # TRPO's own arguments and TrialAlgorithm's, passed on as **common
    names = [k for k in params if k not in ("actor", "critic")]
    assert {"gamma", "lmbda", "critic_lr", "max_kl"} <= set(names)
    types = {k: _omegaconf_type(hints[k]) for k in names}
    assert types["cg_iterations"] is types["line_search_steps"] is types["critic_epochs"] is int
    assert types["max_kl"] is float and types["cg_damping"] is float and types["normalize_advantage"] is bool
    assert all(t is not Any for t in types.values()), types
