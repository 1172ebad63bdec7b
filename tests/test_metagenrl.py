"""MetaGenRL: the learned objective, its meta-gradient, the in-trial learner, files and the entry points."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from rl2_lightning.envs import BernoulliBandit, RiverSwim, TabularMDP, TrialEnvFactory
from rl2_lightning.evaluation.scoring import score_on_tasks
from rl2_lightning.metagenrl.learner import InTrialLearner, critic_values, inner_step, log_policy, meta_loss, returns_to_go
from rl2_lightning.metagenrl.objective import ActorCritic, LearnedObjective, Reinforce, expected_value
from rl2_lightning.metagenrl.reference import oracle_returns, random_returns
from rl2_lightning.metagenrl.store import export_objective, frozen, load_objective, load_shipped, save_objective
from rl2_lightning.metagenrl.train import Family, centred_ranks, es_iteration, make_learner

ROOT = Path(__file__).resolve().parents[1]


def window(B=2, L=4, S=3, A=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.eye(S, dtype=dtype)[torch.randint(S, (B, L), generator=g)],
        "action": torch.randint(A, (B, L), generator=g),
        "reward": torch.randn(B, L, generator=g, dtype=dtype),
        "done": torch.zeros(B, L, dtype=torch.bool),
        "ret": torch.randn(B, L, generator=g, dtype=dtype),
        "q": torch.randn(B, L, A, generator=g, dtype=dtype),
        "time": torch.linspace(0.1, 0.4, L, dtype=dtype).expand(B, L),
    }


def test_expected_value_two_actions_by_hand():
    # π = (0.25, 0.75), Q = (1, 3): 0.25 * 1 + 0.75 * 3 = 2.5; a second step with π = (0.5, 0.5), Q = (0, 2): 1
    logp = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))
    q = torch.tensor([[[1.0, 3.0], [0.0, 2.0]]])
    assert expected_value(logp, q).item() == pytest.approx((2.5 + 1.0) / 2)


def test_meta_gradient_matches_finite_differences():
    torch.manual_seed(0)
    objective = LearnedObjective(hidden_size=3).double()
    w = window(B=1, L=3, S=2, A=2, dtype=torch.float64)  # one policy, one inner step, a fixed critic
    W = torch.randn(1, 2, 2, dtype=torch.float64)
    loss, _ = meta_loss(W, w, objective, lr=0.7)
    loss.sum().backward()
    for name, p in objective.named_parameters():
        for idx in [(0,) * p.dim(), tuple(s - 1 for s in p.shape)]:
            h = 1e-6
            with torch.no_grad():
                p[idx] += h
                up = meta_loss(W, w, objective, 0.7)[0].sum().item()
                p[idx] -= 2 * h
                down = meta_loss(W, w, objective, 0.7)[0].sum().item()
                p[idx] += h
            assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-8), name


def test_backward_reading_objective_sees_the_future_not_the_past():
    torch.manual_seed(1)
    objective = LearnedObjective(hidden_size=8)
    w = window(L=6)
    logp = torch.log_softmax(torch.randn(2, 6, 3), -1)
    base = objective.terms(w, logp)
    later = {**w, "reward": w["reward"].clone()}
    later["reward"][:, 4] += 1.0
    changed = objective.terms(later, logp)
    assert not torch.allclose(changed[:, 1], base[:, 1])  # an earlier step sees a later reward
    earlier = {**w, "reward": w["reward"].clone()}
    earlier["reward"][:, 1] += 1.0
    changed = objective.terms(earlier, logp)
    assert torch.equal(changed[:, 2:], base[:, 2:])  # a later step does not see an earlier one
    assert not torch.equal(changed[:, 1], base[:, 1])


def test_objective_does_not_depend_on_the_action_count():
    objective = LearnedObjective(hidden_size=4)
    for A in (2, 5, 50):
        w = window(A=A)
        assert objective(w, torch.log_softmax(torch.zeros(2, 4, A), -1)).shape == (2,)


def test_population_shares_alpha_one_step_moves_it_by_the_mean_meta_gradient():
    torch.manual_seed(2)
    objective = LearnedObjective(hidden_size=4)
    w = window(B=3)
    W = torch.randn(3, 3, 3)
    per_agent = []
    for b in range(3):
        objective.zero_grad()
        one = {k: v[b: b + 1] for k, v in w.items()}
        meta_loss(W[b: b + 1], one, objective, 1.0)[0].sum().backward()
        per_agent.append(torch.cat([p.grad.flatten() for p in objective.parameters()]))
    mean = torch.stack(per_agent).mean(0)
    before = torch.nn.utils.parameters_to_vector(objective.parameters()).detach().clone()
    opt = torch.optim.SGD(objective.parameters(), lr=1.0)
    opt.zero_grad()
    meta_loss(W, w, objective, 1.0)[0].mean().backward()  # what the learner backpropagates, weight aside
    opt.step()
    after = torch.nn.utils.parameters_to_vector(objective.parameters()).detach()
    assert torch.allclose(before - after, mean, atol=1e-6)


def test_inner_step_is_a_descent_step_on_the_objective():
    w = window()
    W = torch.zeros(2, 3, 3)
    objective = ActorCritic()
    W1 = inner_step(W, w, objective, lr=0.1)
    assert (objective(w, log_policy(W1, w["obs"])) < objective(w, log_policy(W, w["obs"]))).all()


def test_critic_and_returns_by_hand():
    assert returns_to_go(torch.tensor([[1.0, 0.0, 2.0]])).tolist() == [[3.0, 2.0, 2.0]]
    q_sum = torch.tensor([[[4.0, 0.0], [0.0, 0.0]]])
    counts = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    # the one tried pair has mean 2; the untried pairs get the mean of tried pairs, 2
    assert critic_values(q_sum, counts).tolist() == [[[2.0, 2.0], [2.0, 2.0]]]
    counts[0, 1, 1], q_sum[0, 1, 1] = 1.0, 6.0
    assert critic_values(q_sum, counts).tolist() == [[[2.0, 4.0], [4.0, 6.0]]]


def test_references_by_hand():
    from tensordict import TensorDict

    bandit = TensorDict({"p": torch.tensor([[0.2, 0.8]])}, batch_size=[1])
    assert oracle_returns(bandit, 10, 1).item() == pytest.approx(8.0)
    assert random_returns(bandit, 10, 1).item() == pytest.approx(5.0)
    # one state, two actions paying 1 and 3, episodes of 2 steps
    mdp = TensorDict({"mu": torch.tensor([[[1.0, 3.0]]]), "P": torch.ones(1, 1, 2, 1)}, batch_size=[1])
    assert oracle_returns(mdp, 5, 2).item() == pytest.approx(30.0)
    assert random_returns(mdp, 5, 2).item() == pytest.approx(20.0)


def test_centred_ranks():
    assert centred_ranks(torch.tensor([3.0, -1.0, 10.0])).tolist() == [0.0, -0.5, 0.5]


@pytest.mark.parametrize("objective", [Reinforce(), ActorCritic()])
def test_from_scratch_learner_beats_random_on_bandits(objective):
    factory = TrialEnvFactory(partial(BernoulliBandit, num_arms=5), 25)
    env = factory.make(200, task_set="tuning")
    tasks = env.base_env.task_source.tasks[:200]
    returns, _ = score_on_tasks(env, make_learner(env, objective, lr=10.0), tasks, key="t", seed=0, task_set="tuning")
    assert returns.sum(-1).mean() > random_returns(tasks, 25, 1).mean() + 1.0


def test_frozen_objective_gets_no_gradient_and_its_learner_still_learns(tmp_path):
    objective = LearnedObjective(hidden_size=4)
    save_objective(tmp_path / "o.pt", objective, split="x")
    loaded = load_objective(tmp_path / "o.pt")
    assert all(not p.requires_grad for p in loaded.parameters())
    factory = TrialEnvFactory(partial(TabularMDP), 3)
    env = factory.make(8, task_set="tuning")
    learner = make_learner(env, loaded)
    score_on_tasks(env, learner, env.base_env.task_source.tasks[:8], key="t", seed=0, task_set="tuning")
    assert all(p.grad is None for p in loaded.parameters())
    assert learner.W.abs().sum() > 0  # the policy moved
    assert learner.counts.sum() == 8 * 2 * 10  # 8 agents: two inner episodes reached the critic (the last ends the trial)


def test_learner_refuses_variable_length_and_image_families():
    from rl2_lightning.envs import TrialEnv
    from rl2_lightning.envs.tasks import SampledTasks

    class Frames(TabularMDP):
        observation_shape = (3, 4, 4)

    sim = Frames(1)
    sim.observation_shape = (3, 4, 4)
    env = TrialEnv(sim, SampledTasks(sim.sample_tasks), 2)
    with pytest.raises(ValueError, match="flat observations"):
        make_learner(env, Reinforce())


def test_objective_files_are_checked_and_never_run(tmp_path):
    path = tmp_path / "o.pt"
    save_objective(path, LearnedObjective(hidden_size=4))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="corrupt"):
        load_objective(path)
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "hidden_size": 4, "x": partial(print, "ran")}, evil)
    with pytest.raises(ValueError, match="refused"):
        load_objective(evil)
    with pytest.raises(FileNotFoundError, match="no such"):
        load_objective(tmp_path / "missing.pt")


def test_export_and_load_by_name(tmp_path):
    objective = LearnedObjective(hidden_size=4)
    save_objective(tmp_path / "o.pt", objective, split="s", meta_optimizer="gradient", iterations=3)
    export_objective(tmp_path / "o.pt", "s_gradient", out_dir=tmp_path / "shipped")
    loaded = load_shipped("s_gradient", tmp_path / "shipped")
    assert torch.equal(loaded.head[0].weight, objective.head[0].weight)
    assert loaded.record["iterations"] == 3
    with pytest.raises(FileNotFoundError, match="shipped: s_gradient"):
        load_shipped("other", tmp_path / "shipped")
    (tmp_path / "shipped" / "s_gradient.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="refused unread"):
        load_shipped("s_gradient", tmp_path / "shipped")


def test_shipped_objectives_load_by_name():
    for name in ("bandit_mdp_gradient", "bandit_mdp_es", "reverse_gradient", "reverse_es"):
        objective = load_shipped(name)
        assert objective.record["split"] == name.rsplit("_", 1)[0]


def test_rl2_adapter_plays_an_mdp_policy_on_riverswim():
    from rl2_lightning.metagenrl.experiment import rl2_row_policy

    factory = TrialEnvFactory(partial(RiverSwim), 2)
    env = factory.make(4, task_set="heldout")
    policy, agent, why = rl2_row_policy("tabular_n25", env)
    assert why is None
    env = agent.attach_to(env)
    returns, _ = score_on_tasks(env, policy, env.base_env.task_source.tasks[:4], key="t", seed=0, task_set="heldout")
    assert returns.shape == (4, 2)
    bandit = TrialEnvFactory(partial(BernoulliBandit, num_arms=5), 2).make(2, task_set="heldout")
    assert rl2_row_policy("tabular_n25", bandit)[2].startswith("cannot run")


def test_es_generation_writes_a_finite_ascent_estimate_into_every_grad():
    fam = Family("bandit", TrialEnvFactory(partial(BernoulliBandit, num_arms=5), 4), 4, 4, 0)
    objective = LearnedObjective(hidden_size=4)
    try:
        stats = es_iteration([fam], objective, {"lr": 1.0, "window": 4}, 0, 0.1, 2, torch.Generator().manual_seed(0))
    finally:
        fam.close()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in objective.parameters())
    assert sum(p.grad.abs().sum() for p in objective.parameters()) > 0
    assert 0 <= stats["bandit/trial_return"] <= 4


def test_meta_training_config_composes_runs_tiny_and_resumes(tmp_path):
    optimizer = "gradient"  # ES is the same loop with es_iteration, tested above in-process
    cmd = [sys.executable, "-m", "rl2_lightning.metagenrl", f"meta_optimizer={optimizer}", f"runs_dir={tmp_path}",
           "num_envs=4", "eval_tasks=4", "objective.hidden_size=4"]
    done = subprocess.run(cmd + ["max_iterations=1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (tmp_path / f"metagenrl_bandit_mdp_{optimizer}").iterdir()
    assert load_objective(run / "objective_best.pt").record["meta_optimizer"] == optimizer
    assert "iteration 1," in done.stderr
    resumed = subprocess.run(cmd + ["max_iterations=2", f"resume={run}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr and "iteration 2," in resumed.stderr
    assert [p.name for p in (tmp_path / f"metagenrl_bandit_mdp_{optimizer}").iterdir()] == [run.name]  # no stub


def test_unknown_split_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rl2_lightning.metagenrl.experiment", "split=nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "split='nope' is unknown" in done.stderr and "Traceback" not in done.stderr
