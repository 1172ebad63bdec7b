"""The meta-test callback (callbacks/metatest.py)."""

from __future__ import annotations

import pytest
import torch
from trainkit import compose_cfg, module_of

from rl2_lightning.callbacks import MetaTestCallback
from rl2_lightning.evaluation.scoring import summarize


def uniform_policy_module(preset: str):
    """A module whose actor picks every action with equal probability (zero policy head)."""
    cfg = compose_cfg([f"conf={preset}"])
    module = module_of(cfg)
    head = module.actor.module[0][-1].module  # ProbabilisticActor -> sequence -> policy head Linear
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return module


@pytest.mark.parametrize("preset", ["bandit_k5_n10", "bandit_k10_n100"])
def test_uniform_policy_scores_n_over_2_on_bandits(preset):
    module = uniform_policy_module(preset)
    callback = MetaTestCallback(num_tasks=1000)
    returns = callback.evaluate(module)
    n = module.env.episodes_per_trial
    assert returns.shape == (1000, n)
    summary = summarize(returns)
    # A uniform policy's expected trial return is n * mean(p) on these tasks (n/2 over the family).
    p = callback.tasks["p"]
    expected = n * p.mean().item()
    assert abs(expected - n / 2) < 0.03 * n
    assert abs(summary["trial_return"] - expected) <= summary["trial_return_ci95"]
    assert summary["trial_return_ci95"] < 0.1 * n


def test_evaluations_are_repeatable_and_leave_training_randomness_alone():
    module = uniform_policy_module("bandit_k5_n10")
    callback = MetaTestCallback(num_tasks=100)
    torch.manual_seed(0)
    first = callback.evaluate(module)
    after_first = torch.rand(1)
    torch.manual_seed(0)
    second = callback.evaluate(module)
    assert torch.equal(first, second)  # same tasks, same seeds, same actor
    torch.manual_seed(0)
    expected = torch.rand(1)
    assert torch.equal(after_first, expected)  # the evaluation consumed none of torch's global stream


def test_figure_and_csv(tmp_path):
    module = uniform_policy_module("bandit_k5_n10")
    callback = MetaTestCallback(num_tasks=50, run_dir=str(tmp_path))
    returns = callback.evaluate(module)
    fig = callback.figure(returns)
    line = fig.axes[0].lines[0]
    assert len(line.get_xdata()) == 10
    torch.testing.assert_close(torch.as_tensor(line.get_ydata()), returns.double().mean(0))


def test_baselines_are_overlaid_once_per_run_on_the_same_tasks():
    module = uniform_policy_module("bandit_k5_n10")
    callback = MetaTestCallback(num_tasks=200)
    curves = callback.evaluate_baselines(module)
    assert {"random", "gittins", "ucb1", "greedy"} <= set(curves)
    assert all(c.shape == (10,) for c in curves.values())
    # Gittins clearly beats random on these 200 tasks, and its curve rises within the trial
    assert curves["gittins"].sum() > curves["random"].sum() + 0.5
    assert curves["gittins"][-3:].mean() > curves["gittins"][:2].mean()
    assert callback.evaluate_baselines(module) is curves  # cached: computed once per run
    fig = callback.figure(callback.evaluate(module), curves)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert "RL²" in labels and "Gittins" in labels


def test_longer_meta_test_trials_for_extrapolation():
    module = uniform_policy_module("bandit_k5_n10")
    callback = MetaTestCallback(num_tasks=100, batch_size=40, episodes_per_trial=15)
    returns = callback.evaluate(module)
    assert returns.shape == (100, 15)  # 3 batches of 40, 40, 20 tasks
    curves = callback.evaluate_baselines(module)
    assert curves["gittins"].shape == (15,)


@pytest.mark.parametrize("preset", ["bandit_k10_n10", "tabular_n10_rl3"])
def test_the_callback_and_the_evaluate_command_score_a_policy_alike(preset):
    """One play-and-score function with one seeding: a shipped policy (RL², or RL³ with its own key) gets
    the same number in a training run's meta-test and in ``python -m rl2_lightning.evaluate``."""
    from hydra.utils import instantiate

    from rl2_lightning.callbacks import MetaTestCallback
    from rl2_lightning.config import compose
    from rl2_lightning.evaluation import evaluate, policy_key
    from rl2_lightning.evaluation.scoring import summarize
    from rl2_lightning.pretrained import load

    module = load(preset)
    callback = MetaTestCallback(task_set="heldout", num_tasks=100, baselines=False)
    in_training = summarize(callback.evaluate(module))["trial_return"]
    cfg = compose([f"conf={preset}"])
    (row,) = evaluate(instantiate(cfg.env), {policy_key(cfg.env): module.actor}, agent=module.agent, baselines=False,
                      num_tasks=100, seed=cfg.callbacks.metatest.seed, verbose=False)
    assert in_training == row["mean"]
    callback.teardown(None, module, "fit")


def test_the_evaluate_command_plays_the_task_set_it_is_given(tmp_path):
    """``callbacks.metatest.task_set=tuning`` reaches the command (it once played the held-out set whatever it
    was told): its RL² row equals the training meta-test's on the tuning set, and differs from held-out."""
    from rl2_lightning.evaluate import main
    from rl2_lightning.evaluation.scoring import summarize
    from rl2_lightning.pretrained import load

    module = load("bandit_k5_n10")
    score = {}
    for task_set in ("tuning", "heldout"):
        callback = MetaTestCallback(task_set=task_set, num_tasks=100, baselines=False)
        score[task_set] = summarize(callback.evaluate(module))["trial_return"]
        callback.teardown(None, module, "fit")
    assert score["tuning"] != score["heldout"]
    rows = main(["conf=bandit_k5_n10", "ckpt=pretrained", "callbacks.metatest.task_set=tuning",
                 "callbacks.metatest.num_tasks=100", f"out={tmp_path}"])
    assert {r["key"]: r["mean"] for r in rows}["rl2"] == score["tuning"]


def test_every_minutes_tests_after_that_much_training_and_the_clock_survives_a_checkpoint():
    import time
    from types import SimpleNamespace

    from rl2_lightning.callbacks import MetaTestCallback

    trainer = SimpleNamespace(current_epoch=0)
    cb = MetaTestCallback(every_minutes=1.0)
    # 100 s on the run's clock, 10 of them meta-tests: 90 s of training; the previous test was at 30 s
    cb._clock_offset, cb._metatest_seconds, cb._fit_start = {"wall_s": 100.0, "metatest_s": 10.0}, 10.0, time.perf_counter()
    cb._last_test_train_s = 30.0
    assert cb._due(trainer)  # 60 s of training since
    cb._last_test_train_s = 31.0
    assert not cb._due(trainer)  # 59 s
    resumed = MetaTestCallback(every_minutes=1.0)
    resumed.load_state_dict(cb.state_dict())
    resumed._fit_start, resumed._metatest_seconds = time.perf_counter(), resumed._clock_offset["metatest_s"]
    assert resumed._last_test_train_s == 31.0 and not resumed._due(trainer)
    # by epochs, as before, when no minutes are given
    assert MetaTestCallback(every_n_epochs=2)._due(SimpleNamespace(current_epoch=1))
    assert not MetaTestCallback(every_n_epochs=2)._due(SimpleNamespace(current_epoch=2))


def test_teardown_closes_the_meta_test_env_and_its_simulator(monkeypatch):
    """A plain TorchRL env reads ``is_closed`` from birth; the teardown once trusted that flag and so never
    closed a meta-test env, leaving maze engines to the garbage collector (whose plain exit crashed them)."""
    module = uniform_policy_module("bandit_k5_n10")
    callback = MetaTestCallback(num_tasks=20)
    callback.evaluate(module)
    simulator = callback.env.base_env.simulator
    closed = []
    monkeypatch.setattr(simulator, "close", lambda: closed.append(True))
    callback.teardown(None, module, "fit")
    assert closed == [True] and callback.env is None
