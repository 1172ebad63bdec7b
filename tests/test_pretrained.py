"""Shipped policies (data/pretrained/, rl2_lightning/pretrained.py): identity, checksums, reproduction."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from trainkit import compose_cfg

from rl2_lightning.pretrained import MANIFEST, PRETRAINED_DIR, load, read_manifest, score, weights_checksum
from rl2_lightning.checkpoints import check_trained_on

SHIPPED = sorted(read_manifest())


def test_something_is_shipped_and_every_file_is_in_the_manifest():
    assert SHIPPED and {p.stem for p in PRETRAINED_DIR.glob("*.pt")} == set(SHIPPED)


@pytest.mark.parametrize("preset", SHIPPED)
def test_each_shipped_policy_loads_matches_its_preset_and_its_checksum(preset):
    module = load(preset)
    entry = read_manifest()[preset]
    assert weights_checksum({k: v for k, v in module.state_dict().items() if k.startswith(("actor.", "critic."))}) == entry["sha256"]
    cfg = compose_cfg([f"conf={preset}"], tiny=False)
    check_trained_on(module.hparams, cfg, ("env",), preset)  # the preset's setting: family, sizes, trial length
    spec = module.env.spec_env()
    # the setting is the paper's row; an RL³ policy's preset adds the variant (tabular_n10_rl3)
    assert spec.simulator.setting(module.env.episodes_per_trial) == entry["setting"] == preset.removesuffix("_rl3")
    assert module.hparams["env"].get("inner_estimates", False) == preset.endswith("_rl3")
    spec.close()
    assert int(module.frames) == entry["frames"] > 0


def test_a_shipped_bandit_policy_reproduces_its_recorded_score_on_100_tasks():
    torch.set_num_threads(1)
    preset = "bandit_k10_n10"
    recorded = read_manifest()[preset]["heldout"]
    now = score(preset, num_tasks=100)
    assert abs(now["mean"] - recorded["mean"]) <= now["ci95"], (now, recorded)
    assert now["mean"] > 5.5  # well above random (5.0): a trained policy, not a fresh one


def test_a_policy_of_another_setting_is_refused_in_one_line():
    module = load("bandit_k5_n10")
    with pytest.raises(ValueError, match=r"was trained with env\.simulator\.num_arms=5, but the config has 10"):
        check_trained_on(module.hparams, compose_cfg(["conf=bandit_k10_n10"], tiny=False), ("env",), "bandit_k5_n10")
    with pytest.raises(FileNotFoundError, match=r"ckpt=pretrained: no shipped policy for maze_9x9 \(shipped: "):
        load("maze_9x9")


def test_a_file_that_does_not_match_its_manifest_is_refused(tmp_path):
    shutil.copy(MANIFEST, tmp_path / "manifest.json")
    record = torch.load(PRETRAINED_DIR / "bandit_k5_n10.pt", weights_only=True)
    key = next(iter(record["state_dict"]))
    record["state_dict"][key] = record["state_dict"][key] + 1e-3  # a silently changed weight
    torch.save(record, tmp_path / "bandit_k5_n10.pt")
    with pytest.raises(ValueError, match="does not match its checksum"):
        load("bandit_k5_n10", directory=tmp_path)
    (tmp_path / "bandit_k5_n10.pt").write_bytes(b"not a policy")
    with pytest.raises(ValueError, match="does not match its checksum .*; refused unread"):
        load("bandit_k5_n10", directory=tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text()).keys() == read_manifest().keys()


def test_the_zoo_listing_is_a_table_with_scores_paper_best_baseline_and_cost(monkeypatch, tmp_path):
    import rl2_lightning.pretrained as zoo
    from rl2_lightning.pretrained import zoo_table

    heldout = tmp_path / "heldout.json"
    heldout.write_text(json.dumps({"bandit_k10_n100": {
        "gittins": {"method": "Gittins", "mean": 83.42, "ci95": 0.71}, "ucb1": {"method": "UCB1", "mean": 83.1, "ci95": 0.7},
        "rl2": {"method": "RL²", "mean": 90.0, "ci95": 1.0}, "random": {"method": "Random", "mean": 49.8, "ci95": 0.6}}}))
    assert zoo.best_baselines(heldout) == {"bandit_k10_n100": "Gittins 83.4 ± 0.7"}  # never RL², RL³ or random
    real = zoo.best_baselines
    monkeypatch.setattr(zoo, "best_baselines", lambda: real(heldout))
    manifest = {"bandit_k10_n100_rl3": {"setting": "bandit_k10_n100", "frames": 9_900_000, "train_seconds": 1800.0,
                                        "heldout": {"mean": 82.31, "ci95": 0.75}, "note": "n", "file_sha256": "ab" * 32},
                "tabular_n10": {"setting": "tabular_n10", "frames": 20_480_000}}
    lines = zoo_table(manifest).splitlines()
    assert lines[2] == "| bandit_k10_n100_rl3 | bandit_k10_n100 | RL³ | 82.31 ± 0.75 | 83.5 | Gittins 83.4 ± 0.7 | 9.9M | 0.50 |"
    assert lines[3] == "| tabular_n10 | tabular_n10 | RL² | not scored | 156.2 | – | 20.5M | ? |"
    assert zoo_table(manifest, provenance=True).splitlines()[2].endswith("| – | n | abababababababab |")
    assert len(zoo_table(read_manifest()).splitlines()) == 2 + len(SHIPPED)  # every shipped policy listed


def test_a_long_score_never_loses_what_an_export_recorded_meanwhile(tmp_path, monkeypatch):
    """The maze's 16-minute score once wrote back the manifest it had read before scoring, dropping three
    policies exported meanwhile. The score is now recorded into the manifest as it is at that moment."""
    import rl2_lightning.checkpoints as checkpoints
    import rl2_lightning.pretrained as zoo
    from rl2_lightning.checkpoints import update_manifest

    shutil.copy(MANIFEST, tmp_path / "manifest.json")
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", tmp_path)

    def slow_score(preset):  # while it plays, another process exports a policy
        update_manifest(lambda manifest: manifest.update(exported_meanwhile={"setting": "bandit_k5_n10", "frames": 1}))
        return {"mean": 1.5, "ci95": 0.1, "num_tasks": 1000, "seed": 0}

    monkeypatch.setattr(zoo, "score", slow_score)
    zoo.main(["score", "bandit_k5_n10"])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "exported_meanwhile" in manifest and manifest["bandit_k5_n10"]["heldout"]["mean"] == 1.5
    assert json.loads(MANIFEST.read_text())["bandit_k5_n10"]["heldout"]["mean"] != 1.5  # the real one untouched


def test_export_names_the_training_run_only_when_it_is_not_the_presets_own_folder(tmp_path):
    from rl2_lightning.pretrained import export

    ckpt = PRETRAINED_DIR.parent / "training" / "bandit_k10_n100" / "last.ckpt"
    export(ckpt, "bandit_k10_n100", out_dir=tmp_path, seconds=600.0, training_run="bandit_k10_n100")
    entry = read_manifest(tmp_path)["bandit_k10_n100"]
    assert "training_run" not in entry and entry["train_seconds"] == 600.0
    export(ckpt, "bandit_k10_n100", out_dir=tmp_path, training_run="bandit_k10_n100_long")
    assert read_manifest(tmp_path)["bandit_k10_n100"]["training_run"] == "bandit_k10_n100_long"
    assert load("bandit_k10_n100", directory=tmp_path).frames == read_manifest()["bandit_k10_n100"]["frames"]
