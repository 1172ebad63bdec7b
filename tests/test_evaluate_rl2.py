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
    import csv

    with open(tmp_path / "bandit_k5_n10_per_episode.csv") as f:  # the figure's numbers, a row per method and episode
        per_episode = [r for r in csv.DictReader(f) if r["key"] == "rl2"]
    assert [int(r["episode"]) for r in per_episode] == list(range(10))
    torch.testing.assert_close([float(r["mean"]) for r in per_episode], by_key["rl2"]["per_episode"])
    assert sum(float(r["mean"]) for r in per_episode) == pytest.approx(by_key["rl2"]["mean"])


def test_rl2_policy_carries_its_hidden_state_in_evaluation(checkpoint):
    """Without the GRU's primer the hidden state would silently never pass between steps."""
    from rl2_lightning.envs import make_trial_env
    from rl2_lightning.checkpoints import load_module
    from rl2_lightning.evaluation.scoring import play_trials

    module = load_module(checkpoint, compose_cfg(["conf=bandit_k5_n10"]))
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


def test_ablation_experiments_score_variants_and_trial_lengths_on_the_same_tasks(tmp_path):
    """The notebook's experiments (rl2_lightning/evaluation/ablations.py): the no-reset and memoryless
    variants and a run of another trial length load under the preset, play the held-out tasks at each
    asked length, and a checkpoint of another family is refused."""
    from rl2_lightning.evaluation import ablations

    torch.set_num_threads(1)
    base = [f"runs_dir={tmp_path}", "conf=riverswim", "callbacks.metatest=null", "trainer.max_epochs=1"]
    ckpts = {}
    for name, extra in {"noreset": ["env.trials_per_reset=2"], "mlp": ["model=mlp"], "n3": ["env.episodes_per_trial=3"]}.items():
        out = train(compose_cfg([*base, f"experiment={name}", *extra]))
        ckpts[name] = Path(out["run_dir"]) / "checkpoints" / "last.ckpt"
    rows = ablations.run(["conf=riverswim"], {"no reset": ckpts["noreset"], "MLP": ckpts["mlp"]}, {"3": ckpts["n3"]},
                         [2, 3], num_tasks=20, out=tmp_path / "abl")
    variants = {r["policy"]: r for r in rows if r["experiment"] == "variant"}
    assert set(variants) == {"no reset", "MLP", "Random", "oracle (knows the task)", "always swim right (no learning)"}
    # the oracle's per-episode return bounds every policy's on the same tasks
    oracle = variants["oracle (knows the task)"]["per_episode"][0]
    assert all(max(r["per_episode"]) <= oracle + 1e-6 for r in variants.values())
    assert all(len(r["per_episode"]) == 10 for r in variants.values())  # the preset's 10 episodes
    lengths = {(r["policy"], r["tested_at"]): r for r in rows if r["experiment"] == "length"}
    assert set(lengths) == {("trained at 3", 2), ("trained at 3", 3), ("random", 2), ("random", 3)}
    assert len(lengths["trained at 3", 2]["per_episode"]) == 2
    assert abs(sum(lengths["random", 3]["per_episode"]) - lengths["random", 3]["mean"]) < 1e-6
    for suffix in ("_variants.png", "_lengths.png", ".csv"):
        assert (tmp_path / f"abl{suffix}").stat().st_size > 0
    bandit = train(compose_cfg([f"runs_dir={tmp_path}", "experiment=bandit", "callbacks.metatest=null", "trainer.max_epochs=1"]))
    with pytest.raises(ValueError, match="was trained with env.simulator"):
        ablations.run(["conf=riverswim"], {"x": Path(bandit["run_dir"]) / "checkpoints" / "last.ckpt"}, {}, [2], 20, None)
