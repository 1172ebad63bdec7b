"""docs/extending.md, followed literally from an empty folder outside the repository: its files written as
titled, its commands run as printed (the installed console commands), then what it promises is checked."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from trainkit import ROOT

GUIDE = (ROOT / "docs" / "extending.md").read_text()
BIN = Path(sys.executable).parent


def guide_files() -> dict[str, str]:
    """The guide's fenced blocks with ``title=<path>``: path -> content."""
    return {m.group(2): m.group(3) for m in re.finditer(r"```(\w+) title=(\S+)\n(.*?)```", GUIDE, flags=re.S)}


def guide_commands() -> list[str]:
    return [line.strip() for block in re.findall(r"```bash\n(.*?)```", GUIDE, flags=re.S)
            for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def run(folder: Path, command: str) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=folder, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """An empty folder outside the repository after every file and command of the guide."""
    folder = tmp_path_factory.mktemp("own_family")
    assert ROOT not in folder.parents
    library_checksums = (ROOT / "data" / "tasks" / "checksums.json").read_text()
    for name, text in guide_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    outputs = []
    for command in guide_commands():
        proc = run(folder, command)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        outputs.append(proc.stdout + proc.stderr)
    assert (ROOT / "data" / "tasks" / "checksums.json").read_text() == library_checksums  # the library is untouched
    return folder, outputs


def test_the_guide_has_its_three_steps():
    assert set(guide_files()) == {"gaussian_bandit.py", "myconf/env/gaussian_bandit.yaml", "myconf/conf/gaussian_k4_n20.yaml"}
    assert [c.split()[0] for c in guide_commands()] == ["rl2-tasks", "rl2-train", "rl2-evaluate"]


def test_task_sets_go_to_the_users_folder_with_their_checksums(followed):
    folder, _ = followed
    checksums = json.loads((folder / "tasks" / "checksums.json").read_text())
    assert set(checksums) == {"gaussian_k4_heldout.pt", "gaussian_k4_tuning.pt"}
    assert not list((ROOT / "data" / "tasks").glob("gaussian_*"))


def test_training_meta_tests_on_the_users_held_out_set_and_evaluation_agrees(followed):
    folder, (_, train_out, eval_out) = followed
    result = re.search(r"result: meta-test trial return (-?[\d.]+) ± [\d.]+ \(100 heldout tasks", train_out)
    assert result, train_out[-1500:]
    ckpts = list((folder / "runs" / "gaussian_k4_n20").glob("*/checkpoints/last.ckpt"))
    assert len(ckpts) == 1
    # the evaluation command plays the same 100 held-out tasks with the same seed: the same score
    rl2 = re.search(r"RL² on 100 heldout tasks \.\.\. (-?[\d.]+) ±", eval_out)
    assert rl2 and rl2.group(1) == result.group(1), eval_out[-1500:]
    assert (folder / "results" / "gaussian_k4_n20.png").is_file()
    assert "wrote results/gaussian_k4_n20.md" in eval_out


def test_a_preset_of_another_family_is_refused_in_one_line(followed):
    folder, _ = followed
    proc = run(folder, "rl2-train --config-dir myconf env=gaussian_bandit trainer.max_epochs=1")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "conf=bandit_k5_n10 is a preset of env=bandit" in lines[0], proc.stderr


def test_the_family_is_known_by_name_once_its_module_is_imported(followed):
    folder, _ = followed
    code = ("import gaussian_bandit; from rl2_lightning.envs import make_simulator, known_families; "
            "print('gaussian_bandit' in known_families(), make_simulator('gaussian_bandit', 3, num_arms=6).mu.shape)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["True", "torch.Size([3,", "6])"], proc.stderr
