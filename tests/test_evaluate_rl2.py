"""The evaluation command with an RL² checkpoint (rl2_lightning/evaluate.py, RL² front end)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import compose_cfg

from rl2_lightning.evaluate import main
from rl2_lightning.train import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = train(compose_cfg([f"runs_dir={runs}", "trainer.max_epochs=1"]))
    return Path(out["run_dir"]) / "checkpoints" / "last.ckpt"


def test_rl2_checkpoint_is_scored_beside_the_baselines(checkpoint, tmp_path):
    torch.set_num_threads(1)
    rows = main(["conf=bandit_k5_n10", f"ckpt={checkpoint}", f"out={tmp_path}"])
    by_key = {r["key"]: r for r in rows}
    assert {"rl2", "gittins", "random"} <= set(by_key)
    assert by_key["rl2"]["paper"] == 6.7 and by_key["gittins"]["paper"] == 6.6
    # a barely trained tiny agent is close to random, far from n=10 and from 0
    assert 3.5 < by_key["rl2"]["mean"] < 8.5
    assert len(by_key["rl2"]["per_episode"]) == 10
    for suffix in (".md", ".csv", ".png"):
        assert (tmp_path / f"bandit_k5_n10{suffix}").stat().st_size > 0
    assert "RL²" in (tmp_path / "bandit_k5_n10.md").read_text()


def test_rl2_policy_carries_its_hidden_state_in_evaluation(checkpoint):
    """Without the GRU's primer the hidden state would silently never pass between steps."""
    from rl2_lightning.envs import make_trial_env
    from rl2_lightning.evaluate import load_rl2
    from rl2_lightning.evaluation.scoring import play_trials

    module = load_rl2(checkpoint, compose_cfg(["conf=bandit_k5_n10"]))
    env = make_trial_env("bandit", 4, 10, task_set="heldout", num_arms=5)
    env = module.agent.attach_to(env)
    rollout = play_trials(env, module.actor, 10)
    hidden = rollout["recurrent_state_actor"].flatten(2).norm(dim=-1)
    assert (hidden[:, 0] == 0).all() and (hidden[:, 1:] > 0).all()


def test_checkpoint_of_another_setting_is_rejected(checkpoint):
    with pytest.raises(ValueError, match="env.simulator.num_arms=5"):
        main(["conf=bandit_k10_n10", f"ckpt={checkpoint}"])
    with pytest.raises(FileNotFoundError, match="ckpt="):
        main(["conf=bandit_k5_n10", "ckpt=/nonexistent.ckpt"])
