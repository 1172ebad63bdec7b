"""The multi-fidelity recipe search (rl2_lightning/search.py): a stored Optuna study that reports every
meta-test, prunes, continues after a restart, and whose shipped configs compose."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from trainkit import ROOT

from rl2_lightning.config import compose
from rl2_lightning.evaluation.curves import read_trial_curve
from rl2_lightning.search import SEARCH_DIR, open_study, read_search, run_search, trials_table

TINY = """
overrides: [conf=bandit_k5_n10, debug=smoke, threads=1, trainer.max_epochs=4, callbacks.metatest.every_n_epochs=1]
budget: {min_minutes: 5, max_minutes: 5, reduction_factor: 3}  # one rung at 5 min: no pruning in seconds
sampler: {seed: 0, n_startup_trials: 2}
space:
  algo.actor_lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  model.hidden_size: {choices: [8, 16]}
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "myconf" / "search").mkdir(parents=True)
    (tmp_path / "myconf" / "search" / "tiny.yaml").write_text(TINY)
    return tmp_path


def test_each_trial_reports_every_meta_test_and_the_study_is_stored_and_continued(tiny):
    study = run_search("tiny", trials=2, config_dir=tiny / "myconf", root=tiny / "searches")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        assert len(steps) == 4 and steps == sorted(set(steps))  # one report per epoch's meta-test, in training seconds
        assert t.value == t.intermediate_values[steps[-1]]  # the value is the last meta-test
        assert {"algo.actor_lr", "model.hidden_size"} == set(t.params)
        assert Path(t.user_attrs["run_dir"]).is_relative_to(tiny / "searches" / "tiny" / "runs")
    db = tiny / "searches" / "tiny.db"
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone() == (2,)
    # a new process continues the same study from its database
    proc = subprocess.run([sys.executable, "-m", "rl2_lightning.search", "tiny", "--trials", "1", "--config-dir",
                           str(tiny / "myconf"), "--root", str(tiny / "searches")], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sqlite3.connect(db).execute("select count(*) from trials").fetchone() == (3,)
    assert proc.stdout.count("| complete |") == 3


def test_a_process_that_continues_a_study_draws_new_parameters(tiny):
    """Each process builds its own seeded sampler: seeded by the config alone, a second process replayed the
    first one's random start-up draws (the committed tabular_n10 study's trials 4 and 5 repeat 0 and 1)."""
    spec = read_search("tiny", tiny / "myconf", ["sampler.n_startup_trials=10"])  # all four draws random

    def one_process_draws(n, url=f"sqlite:///{tiny / 'study.db'}"):
        study = open_study("tiny", spec, url)
        drawn = []
        for _ in range(n):
            trial = study.ask()
            drawn.append((trial.suggest_float("algo.actor_lr", 1e-4, 1e-2, log=True),
                          trial.suggest_categorical("model.hidden_size", [8, 16])))
            study.tell(trial, 1.0)
        return drawn

    first, second = one_process_draws(2), one_process_draws(2)
    assert len({lr for lr, _ in first + second}) == 4
    # reproducible: a new study with the same config draws what the first process drew
    assert one_process_draws(2, f"sqlite:///{tiny / 'again.db'}") == first


def test_a_trial_the_pruner_stops_ends_after_that_meta_test(tiny):
    study = run_search("tiny", trials=1, config_dir=tiny / "myconf", root=tiny / "searches",
                       pruner=optuna.pruners.ThresholdPruner(lower=1e6))  # every curve is below: pruned at once
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert len(trial.intermediate_values) == 1  # stopped after its first meta-test, not after 4 epochs
    assert trial.user_attrs["frames"] == 16 * 10 * 2  # one epoch: 2 iterations of 16 trials of 10 steps
    assert "| pruned |" in trials_table(study)


def test_show_prints_the_trials_and_draws_their_curves(tiny):
    run_search("tiny", trials=1, config_dir=tiny / "myconf", root=tiny / "searches")
    proc = subprocess.run([sys.executable, "-m", "rl2_lightning.search", "tiny", "--show", "--config-dir",
                           str(tiny / "myconf"), "--root", str(tiny / "searches")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "| 0 | complete |" in proc.stdout, proc.stderr[-2000:]
    assert (tiny / "searches" / "tiny_curves.png").stat().st_size > 1000
    # each trial's curve as a CSV that `curves --compare` reads: frames of each of the 4 epochs' meta-tests
    frames, minutes, values = read_trial_curve(tiny / "searches" / "tiny_curves" / "trial_000.csv")
    assert frames == [16 * 10 * 2 * k for k in (1, 2, 3, 4)]  # 2 iterations of 16 trials of 10 steps per epoch
    assert minutes == sorted(minutes) and minutes[0] > 0
    (trial,) = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tiny / 'searches' / 'tiny.db'}").trials
    assert values == [trial.intermediate_values[s] for s in sorted(trial.intermediate_values)]


def test_bad_search_configs_are_one_line_errors(tiny):
    with pytest.raises(ValueError, match="search 'nope' does not exist; choose one of: .*tabular_n10"):
        read_search("nope")
    (tiny / "myconf" / "search" / "bad.yaml").write_text(TINY.replace("min_minutes: 5", "min_minutes: 9"))
    with pytest.raises(ValueError, match="0 < min_minutes <= max_minutes"):
        read_search("bad", tiny / "myconf")
    (tiny / "myconf" / "search" / "bad.yaml").write_text(TINY.replace("threads=1", "trainer.max_time=00:00:01:00"))
    with pytest.raises(ValueError, match="are the search's to set"):
        read_search("bad", tiny / "myconf")
    with pytest.raises(ValueError, match=r"heartbeat.grace_period must be an integer \(>= 1\), got 'soon'"):
        read_search("tiny", tiny / "myconf", ["heartbeat.grace_period=soon"])
    with pytest.raises(ValueError, match=r"heartbeat.max_retry must be an integer \(>= 0\), got -1"):
        read_search("tiny", tiny / "myconf", ["heartbeat.max_retry=-1"])
    assert read_search("tiny", tiny / "myconf", ["heartbeat.max_retry=0"]).heartbeat.max_retry == 0


def test_a_dead_trial_is_retried_heartbeat_max_retry_times_and_then_left_failed(tiny):
    spec = read_search("tiny", tiny / "myconf", ["heartbeat.interval=1", "heartbeat.grace_period=1", "heartbeat.max_retry=2"])
    study = open_study("tiny", spec, f"sqlite:///{tiny / 'tiny.db'}")
    for minute in range(3):  # a process takes the trial (the retry, once there is one), reports, and dies
        trial = study.ask()
        trial.report(100.0 + minute, step=60 * (minute + 1))
        study._storage.record_heartbeat(trial._trial_id)
        time.sleep(2.5)  # past the grace period (the stored heartbeat has whole-second resolution)
        optuna.storages.fail_stale_trials(study)  # what the next process does first
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 3  # the original and two retries, no third
    assert trials[2].system_attrs["retry_history"] == [0, 1]
    assert trials[2].intermediate_values == {60: 100.0, 120: 101.0, 180: 102.0}  # each retry kept the curve


@pytest.mark.parametrize("name", sorted(p.stem for p in SEARCH_DIR.glob("*.yaml")))
def test_the_shipped_searches_compose_at_every_corner_of_their_space(name):
    spec = read_search(name)
    assert "callbacks.metatest.task_set=tuning" in spec.overrides  # recipes are chosen on the tuning set only
    for corner in (0, -1):
        picks = [f"{k}={(list(d.choices) if 'choices' in d else [d.low, d.high])[corner]}" for k, d in spec.space.items()]
        cfg = compose([*spec.overrides, *picks])
        assert cfg.callbacks.metatest.task_set == "tuning"


KILLABLE = """
overrides: [conf=bandit_k5_n10, debug=smoke, threads=1, trainer.max_epochs=100000, callbacks.metatest.every_n_epochs=1]
budget: {min_minutes: 0.4, max_minutes: 0.4}  # each trial trains 24 s, whatever its epochs
heartbeat: {interval: 1, grace_period: 2}
sampler: {seed: 0, n_startup_trials: 2}
space:
  algo.actor_lr: {low: 1.0e-4, high: 1.0e-2, log: true}
"""


def test_a_killed_search_process_is_continued_and_its_trial_resumed_from_its_checkpoint(tmp_path):
    import os
    import signal
    import time

    (tmp_path / "myconf" / "search").mkdir(parents=True)
    (tmp_path / "myconf" / "search" / "killable.yaml").write_text(KILLABLE)
    cmd = [sys.executable, "-m", "rl2_lightning.search", "killable", "--trials", "1", "--config-dir",
           str(tmp_path / "myconf"), "--root", str(tmp_path / "searches")]
    db = tmp_path / "searches" / "killable.db"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    def trained_seconds() -> float:  # the run's clock at its last meta-test (0 before the first)
        rows = [r for p in (tmp_path / "searches" / "killable" / "runs").glob("trial_000/*/metatest.csv")
                for r in csv.DictReader(p.open())]
        return float(rows[-1]["wall_s"]) if rows else 0.0

    try:  # kill it mid-trial, after 12 of its 24 s, once a checkpoint holds them
        while time.monotonic() < deadline and proc.poll() is None:
            ckpts = list((tmp_path / "searches" / "killable" / "runs").glob("trial_000/*/checkpoints/last.ckpt"))
            if ckpts and trained_seconds() >= 12:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the trial ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    study = optuna.load_study(study_name="killable", storage=f"sqlite:///{db}")
    (dead,) = study.trials
    assert dead.state is optuna.trial.TrialState.RUNNING  # no process left to say otherwise
    before = dict(dead.intermediate_values)
    time.sleep(3)  # past the grace period: its heartbeat is stale
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="killable", storage=f"sqlite:///{db}")
    dead, retry = study.trials
    assert dead.state is optuna.trial.TrialState.FAIL and retry.state is optuna.trial.TrialState.COMPLETE
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == dead.params
    # the retry continued the dead trial's run: same run directory, its curve kept and extended in time
    run_dir = Path(retry.user_attrs["run_dir"])
    assert run_dir.parent.name == "trial_000"
    assert "resuming" in done.stdout + done.stderr
    steps = sorted(retry.intermediate_values)
    assert {s: retry.intermediate_values[s] for s in before} == before
    assert len(steps) > len(before) and min(set(steps) - set(before)) > max(before)
    # the budget counted the dead process's training: the whole run trained about 24 s, not 12 + 24
    assert 24 <= trained_seconds() < 31
