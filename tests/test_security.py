"""No code runs from a file the user did not choose to trust (rl2_lightning/checkpoints.py, pretrained.py,
the maze engine's scratch folder)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainkit import ROOT, compose_cfg

from rl2_lightning.checkpoints import AtomicCheckpointIO, load_module, read_checkpoint
from rl2_lightning.pretrained import MANIFEST, PRETRAINED_DIR, load
from rl2_lightning.train import train


class Payload:
    """Unpickling this calls ``os.system`` (what a malicious file would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_file(path: Path, marker: Path) -> Path:
    torch.save({"hyper_parameters": {"env": {}, "model": {}, "algo": {}}, "state_dict": {}, "x": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    out = train(compose_cfg(["callbacks.metatest=null", f"runs_dir={runs}", "experiment=sec", "trainer.max_epochs=1"]))
    return runs, Path(out["run_dir"]) / "checkpoints" / "last.ckpt"


def one_line(err: BaseException) -> str:
    assert "\n" not in str(err)
    return str(err)


def test_a_malicious_pickle_is_refused_everywhere_without_running(trained, tmp_path):
    runs, _ = trained
    marker = tmp_path / "pwned"
    bad = malicious_file(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ValueError, match=r"holds .*system.*refused without running it \(trust_checkpoint=true") as info:
        read_checkpoint(bad)
    one_line(info.value)
    for override in (f"ckpt_path={bad}", f"init_from={bad}"):
        with pytest.raises(ValueError, match="refused without running it"):
            train(compose_cfg(["callbacks.metatest=null", f"runs_dir={tmp_path / 'r'}", override]))
    with pytest.raises(ValueError, match="refused without running it"):
        load_module(bad, compose_cfg(["conf=bandit_k5_n10"]))
    assert not marker.exists()


def test_latest_never_unpickles_a_file_dropped_into_a_run_directory(trained, tmp_path, capfd):
    runs, last = trained
    shutil.copytree(runs, tmp_path / "runs")
    run = tmp_path / "runs" / "sec" / last.parent.parent.name
    marker = tmp_path / "pwned"
    malicious_file(run / "checkpoints" / "zzz.ckpt", marker)  # the newest file of the experiment
    os.utime(run / "checkpoints" / "zzz.ckpt", (2e9, 2e9))
    out = train(compose_cfg(["callbacks.metatest=null", f"runs_dir={tmp_path / 'runs'}", "experiment=sec",
                             "trainer.max_epochs=2", "ckpt_path=latest"]))
    assert out["trainer"].current_epoch == 2 and not marker.exists()
    assert "zzz.ckpt (no checksum)" in capfd.readouterr().err


def test_the_command_line_says_one_error_line_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = malicious_file(tmp_path / "evil.ckpt", marker)
    proc = subprocess.run(
        [sys.executable, "-m", "rl2_lightning.evaluate", "conf=bandit_k5_n10", f"ckpt={bad}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1 and not marker.exists()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ckpt=") and "refused without running it" in lines[0], proc.stderr


def shipped_copy(tmp_path: Path, preset: str = "bandit_k5_n10") -> Path:
    shutil.copy(MANIFEST, tmp_path / "manifest.json")
    shutil.copy(PRETRAINED_DIR / f"{preset}.pt", tmp_path / f"{preset}.pt")
    return tmp_path / f"{preset}.pt"


def rehash(directory: Path, preset: str = "bandit_k5_n10") -> None:
    """What an attacker who can write the folder also does: make the manifest match the new bytes."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest[preset]["file_sha256"] = hashlib.sha256((directory / f"{preset}.pt").read_bytes()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_a_tampered_shipped_file_is_refused_on_its_checksum_before_it_is_parsed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    malicious_file(shipped_copy(tmp_path), marker)
    parsed = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: parsed.append(1))
    with pytest.raises(ValueError, match="does not match its checksum .*refused unread"):
        load("bandit_k5_n10", directory=tmp_path)
    assert not parsed and not marker.exists()
    monkeypatch.undo()
    rehash(tmp_path)  # the checksum matches now: the safe unpickler still refuses the payload
    with pytest.raises(ValueError, match="refused without running it"):
        load("bandit_k5_n10", directory=tmp_path)
    assert not marker.exists()


def test_the_shipped_checksum_covers_the_stored_config(tmp_path):
    path = shipped_copy(tmp_path)
    record = torch.load(path, weights_only=True)
    record["hyper_parameters"]["algo"]["gamma"] = 0.5  # same weights, another config
    torch.save(record, path)
    with pytest.raises(ValueError, match="does not match its checksum"):
        load("bandit_k5_n10", directory=tmp_path)


def foreign_target(hparams: dict, dst: Path) -> dict:
    hparams = json.loads(json.dumps(hparams))
    hparams["model"] = {"_target_": "shutil.copyfile", "src": str(MANIFEST), "dst": str(dst)}
    return hparams


def test_a_foreign_target_in_stored_hyperparameters_is_never_called(trained, tmp_path):
    _, last = trained
    copied = tmp_path / "copied"
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyper_parameters"] = foreign_target(ckpt["hyper_parameters"], copied)
    AtomicCheckpointIO().save_checkpoint(ckpt, tmp_path / "foreign.ckpt")  # intact, and safe to unpickle
    with pytest.raises(ValueError, match=r"names _target_ 'shutil.copyfile', which is not a component") as info:
        load_module(tmp_path / "foreign.ckpt", compose_cfg(["conf=bandit_k5_n10"]))
    one_line(info.value)
    from rl2_lightning.pretrained import export

    with pytest.raises(ValueError, match="shutil.copyfile"):
        export(tmp_path / "foreign.ckpt", "x", out_dir=tmp_path / "out")
    # a shipped policy's stored config, its checksum made to match
    path = shipped_copy(tmp_path)
    record = torch.load(path, weights_only=True)
    record["hyper_parameters"] = foreign_target(record["hyper_parameters"], copied)
    torch.save(record, path)
    rehash(tmp_path)
    with pytest.raises(ValueError, match="shutil.copyfile"):
        load("bandit_k5_n10", directory=tmp_path)
    assert not copied.exists()


def test_every_shipped_policy_loads_safely_and_scores_as_before_on_100_tasks():
    from rl2_lightning.pretrained import read_manifest, score

    torch.set_num_threads(1)
    before = json.loads((ROOT / "tests" / "data" / "pretrained_scores_100.json").read_text())
    for preset in sorted(read_manifest()):
        record = torch.load(PRETRAINED_DIR / f"{preset}.pt", weights_only=True)  # tensors and plain data only
        assert set(record) >= {"hyper_parameters", "state_dict", "frames", "sha256"}
        if preset in before:  # measured by the earlier (unsafe) loader; for policies shipped since, when shipped
            assert score(preset, num_tasks=100)["mean"] == before[preset], preset


@pytest.mark.maze
def test_the_engine_never_uses_a_scratch_folder_it_did_not_make(tmp_path, monkeypatch):
    pytest.importorskip("vizdoom")
    import tempfile

    from rl2_lightning.envs.maze import doom

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(doom, "_SCRATCH", None)
    planted = tmp_path / "rl2_lightning_vizdoom"  # another user's folder, world-writable, with a script
    planted.mkdir()
    os.chmod(planted, 0o777)
    marker = tmp_path / "pwned"
    (planted / "vizdoom_launcher.sh").write_text(f"#!/bin/sh\ntouch {marker}\n")
    os.chmod(planted / "vizdoom_launcher.sh", 0o777)
    path = Path(doom._launcher())
    assert path.parent != planted and path.parent.parent == tmp_path
    assert (path.parent.stat().st_mode & 0o777) == 0o700 and path.parent.stat().st_uid == os.getuid()
    sim = doom.MazeSimulator(num_envs=1, size=5, pool="train")
    try:
        sim.set_tasks(sim.task_set()[:1], torch.ones(1, dtype=torch.bool))
        sim.reset_episodes(torch.ones(1, dtype=torch.bool))
    finally:
        sim.close()
    assert not marker.exists()
