"""A non-editable install works on its own: a wheel built from the repository, installed into a fresh
virtual environment, run from a folder outside the repository (the model zoo, a shipped policy's
evaluation, a tiny training run), with its configs and data found inside the installed package."""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from trainkit import ROOT


def sh(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the project's wheel (not editable). Its dependencies (torch, torchrl ...)
    are this interpreter's, reached through a ``.pth`` line placed after the venv's own site-packages:
    the wheel's copy of rl2_lightning is found first, and this environment's (editable) install of the
    project is never imported."""
    tmp = tmp_path_factory.mktemp("install")
    # built from a copy of what the wheel takes, so no build/ folder is left in (or reused from) the checkout
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "training", "ablations", "*.wad")
    for name in ("rl2_lightning", "callbacks", "conf", "data"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", source], cwd=tmp)
    wheel = next((tmp / "dist").glob("rl2_lightning-*.whl"))
    env = tmp / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    own_site = Path(sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp).stdout.strip())
    (own_site / "zz_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    sh([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], cwd=tmp)
    outside = tmp / "elsewhere"
    outside.mkdir()
    return env / "bin", outside


def test_the_package_is_the_wheels_with_its_configs_and_data(installed):
    bin_dir, outside = installed
    code = ("import rl2_lightning, rl2_lightning.callbacks as c; from rl2_lightning.resources import conf_dir, data_dir; "
            "print(rl2_lightning.__file__); print(c.__file__); print(conf_dir()); print(data_dir())")
    lines = sh([bin_dir / "python", "-c", code], cwd=outside).stdout.split()
    venv_dir = bin_dir.parent
    for line in lines:  # all inside the fresh venv, none in the repository
        assert Path(line).is_relative_to(venv_dir) and not Path(line).is_relative_to(ROOT), line
    assert (Path(lines[2]) / "train.yaml").is_file() and (Path(lines[3]) / "pretrained" / "manifest.json").is_file()
    assert not (Path(lines[3]) / "training").exists()  # the training runs' full checkpoints stay in the repository


def test_the_zoo_lists_the_shipped_policies(installed):
    bin_dir, outside = installed
    out = sh([bin_dir / "rl2-pretrained", "list"], cwd=outside).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| RL" in line]
    assert len(rows) >= 20 and any(r.startswith("| tabular_n10_rl3 |") for r in rows), out


def test_a_shipped_policy_is_evaluated(installed):
    bin_dir, outside = installed
    proc = sh([bin_dir / "rl2-evaluate", "conf=bandit_k10_n10", "ckpt=pretrained", "callbacks.metatest.num_tasks=100",
               "threads=1"], cwd=outside)
    assert "**RL²**" in proc.stdout or "| RL² |" in proc.stdout, proc.stdout
    assert (outside / "outputs" / "evaluate" / "bandit_k10_n10.png").is_file()


def test_a_tiny_training_run(installed):
    bin_dir, outside = installed
    proc = sh([bin_dir / "rl2-train", "debug=smoke", "threads=1"], cwd=outside)
    assert "result: meta-test trial return" in proc.stdout + proc.stderr
    assert list((outside / "runs" / "bandit_k5_n10").glob("*/checkpoints/last.ckpt"))
