"""The README is a front door: short, and every command it names runs (cheap ones here, long ones ``slow``)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time

import pytest
from trainkit import ROOT

README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    """Every command line of the README's bash blocks, without its trailing comment."""
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


#: the commands this module runs in CI (seconds each); every other command is run by the slow test
CHEAP = {
    "python train.py debug=smoke",
    "python -m rl2_lightning.evaluate conf=bandit_k10_n10 ckpt=pretrained",
    "python -m rl2_lightning.pretrained list",
}
PYTEST = 'python -m pytest -q -m "not slow and not gpu"'


def run(command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    args = shlex.split(command)
    if args[0] == "python":
        args[0] = sys.executable
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_the_readme_is_short_with_a_table_of_contents_and_links_that_exist():
    assert len(README.encode()) < 12_000
    assert "**Contents:**" in README
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)", README):
        assert (ROOT / target).exists(), target


def test_every_command_is_either_run_here_or_by_the_slow_test():
    found = commands()
    assert CHEAP <= set(found), CHEAP - set(found)
    assert PYTEST in found and sum(c.endswith(PYTEST) for c in found) == 2  # the tests, alone and after install


def test_the_test_command_is_what_ci_runs():
    assert PYTEST in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", sorted(CHEAP))
def test_a_cheap_readme_command_runs(command):
    proc = run(command)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_the_python_example_runs():
    (code,) = blocks("python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"tensor\(\[[\d. ,]+\]\)", proc.stdout), proc.stdout  # four trial returns


def test_tensorboard_starts_on_the_runs_folder(tmp_path):
    (command,) = [c for c in commands() if c.startswith("tensorboard ")]
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    proc = subprocess.Popen([exe, *shlex.split(command)[1:], "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, seen = time.time() + 120, ""
        while time.time() < deadline and "http://" not in seen:
            seen += proc.stdout.readline()
        assert "http://" in seen, seen
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_the_long_readme_commands_run():
    """Install lines (in the current environment: their last step), training, resume, and the recipe search
    (shortened to trials of one minute: the full search runs for hours)."""
    shorten = {"python -m rl2_lightning.search tabular_n10 --trials 8": " --root /tmp/rl2_readme_search --set budget.max_minutes=1"}
    for command in commands():
        if command in CHEAP or command.endswith(PYTEST) or command.startswith("tensorboard "):
            continue
        step = command.split("&&")[-1].strip()  # after the install: the environment is installed already
        proc = run(step + shorten.get(step, ""), timeout=3600)
        assert proc.returncode == 0, (step, proc.stderr[-2000:])
