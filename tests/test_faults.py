"""Runs that survive the real world: collisions, half-written checkpoints, kills, preemption, NaNs, and
one-line errors (rl2_lightning/runs.py, callbacks/stop.py, rl2_lightning/errors.py)."""

from __future__ import annotations

import csv
import errno
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from trainkit import ROOT, TINY, compose_cfg

from rl2_lightning.checkpoints import AtomicCheckpointIO, is_intact, latest_checkpoint
from rl2_lightning.runs import claim_run_dir
from rl2_lightning.train import train

# threads pinned: runs compared bit for bit must use the same number of torch threads (the suite changes it)
BASE = ["callbacks.metatest.num_tasks=20", "trainer.max_epochs=3", "seed=5", "threads=1"]


def params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_params(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def epochs_in_csv(run_dir: Path) -> list[int]:
    with (run_dir / "metatest.csv").open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same tiny run, never interrupted."""
    runs = tmp_path_factory.mktemp("full")
    return train(compose_cfg([*BASE, f"runs_dir={runs}", "experiment=full"]))


def run_fault(fault: str, runs: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tests/faultkit.py", fault, *BASE, f"runs_dir={runs}", "experiment=hurt", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ run directories
def _claim(args):
    parent, name = args
    return str(claim_run_dir(parent, name))


def test_runs_started_in_the_same_second_get_distinct_directories(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        dirs = pool.map(_claim, [(tmp_path, "2026-12-01_00-00-00")] * 8)
    assert len(set(dirs)) == 8
    assert sorted(Path(d).name for d in dirs)[:2] == ["2026-12-01_00-00-00", "2026-12-01_00-00-00-1"]


@pytest.mark.slow  # ~20 s; the in-process same-second test runs in CI
def test_two_train_py_runs_with_the_same_stamp_do_not_share_a_directory(tmp_path):
    """Through Hydra: both processes resolve the run dir from the same (frozen) time stamp."""
    run_dir = "hydra.run.dir='${runs_dir}/${experiment}/${rl2_run_name:${runs_dir}/${experiment},same-second}'"
    cmd = [sys.executable, "train.py", *TINY, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
           "callbacks.metatest=null", f"runs_dir={tmp_path}", run_dir]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    runs = sorted(d.name for d in (tmp_path / "bandit_k5_n10").iterdir())
    assert runs == ["same-second", "same-second-1"]
    for name in runs:  # each run has its own checkpoint, config and log
        run = tmp_path / "bandit_k5_n10" / name
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / ".hydra" / "config.yaml").is_file()
        assert not list(run.glob("checkpoints/last-v*.ckpt"))
        assert "run directory:" in (run / "train.log").read_text()


# ------------------------------------------------------------------ checkpoint files
@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("two")
    out = train(compose_cfg(["callbacks.metatest=null", f"runs_dir={runs}", "experiment=two"]))
    return runs, Path(out["run_dir"])


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1])
def test_a_truncated_last_ckpt_never_leaves_latest_without_an_intact_checkpoint(two_epochs, tmp_path, keep, capfd):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(two_epochs[0], runs)
    run = runs / "two" / two_epochs[1].name
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    last.write_bytes(data[:cut])  # a write cut short at byte `cut`
    chosen = latest_checkpoint(runs, "two")
    assert chosen.parent == last.parent and chosen.name.startswith("epoch=1") and is_intact(chosen)
    err = capfd.readouterr().err
    assert "last.ckpt (checksum mismatch)" in err and "not intact" in err and f"resuming {chosen}" in err
    resumed = train(compose_cfg(["callbacks.metatest=null", f"runs_dir={runs}", "experiment=two",
                                 "trainer.max_epochs=3", "ckpt_path=latest"]))
    assert resumed["trainer"].current_epoch == 3


def test_a_failed_checkpoint_write_leaves_the_previous_one_and_no_temp_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"a": torch.arange(3)}, path)
    before = path.read_bytes()

    real_fsync = os.fsync

    def disk_full(fd):  # the bytes are half written when the disk fills
        real_fsync(fd)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.ckpt \(No space left on device\)") as info:
        io.save_checkpoint({"a": torch.arange(5)}, path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]  # no partial file
    assert is_intact(path)


def test_checkpoints_are_never_staged_in_the_temp_dir(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    train(compose_cfg(["callbacks.metatest=null", f"runs_dir={tmp_path / 'runs'}", "trainer.max_epochs=1"]))
    assert list((tmp_path / "runs").glob("*/*/checkpoints/last.ckpt"))
    assert list(scratch.iterdir()) == []


def test_latest_names_the_file_and_skips_a_newer_run_that_died_early(two_epochs, tmp_path, capfd):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(two_epochs[0], runs)
    time.sleep(0.05)
    dead = runs / "two" / "2099-01-01_00-00-00"  # newest run: died before its first checkpoint
    (dead / "checkpoints").mkdir(parents=True)
    (dead / "checkpoints" / "last.ckpt").write_bytes(b"\x00" * 10)
    chosen = latest_checkpoint(runs, "two")
    assert chosen == runs / "two" / two_epochs[1].name / "checkpoints" / "last.ckpt"
    err = capfd.readouterr().err
    assert "skipping newer run(s) without an intact checkpoint: 2099-01-01_00-00-00" in err
    assert f"ckpt_path=latest: resuming {chosen}" in err


# ------------------------------------------------------------------ kills and signals
def test_kill9_between_meta_test_and_checkpoint_then_resume(tmp_path, uninterrupted):
    proc = run_fault("kill9-after-metatest", tmp_path)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (run,) = (tmp_path / "hurt").iterdir()
    assert epochs_in_csv(run) == [0, 1], proc.stderr[-2000:]  # epoch 1 meta-tested, its checkpoint never written
    resumed = train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=hurt", "ckpt_path=latest"]))
    assert epochs_in_csv(run) == [0, 1, 2], (run / "metatest.csv").read_text()  # each epoch exactly once
    assert_same_params(params(uninterrupted["module"]), params(resumed["module"]))


@pytest.mark.parametrize(
    "fault, code, message, updates",
    [
        # mid-epoch: checkpoint at the boundary after iteration 1 of epoch 1 (2 + 1 iterations x 4 updates)
        ("sigterm:0", 143, "SIGTERM: stopped after iteration 1 of epoch 1", 12),
        ("sigint:0", 130, "Ctrl-C: stopped after iteration 1 of epoch 1", 12),
        # in the epoch's last iteration: the epoch ends as usual, with its meta-test and checkpoint
        ("sigterm:1", 143, "SIGTERM: stopping at the end of epoch 1, after its checkpoint", 16),
        ("sigint:1", 130, "Ctrl-C: stopping at the end of epoch 1, after its checkpoint", 16),
    ],
)
def test_a_signal_saves_a_checkpoint_and_resuming_is_bit_identical(tmp_path, uninterrupted, fault, code, message, updates):
    proc = run_fault(fault, tmp_path)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and "Converting a tensordict to boolean" not in proc.stderr
    (run,) = (tmp_path / "hurt").iterdir()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == updates
    resumed = train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=hurt", "ckpt_path=latest"]))
    assert int(resumed["module"].frames) == int(uninterrupted["module"].frames)
    assert_same_params(params(uninterrupted["module"]), params(resumed["module"]))
    assert epochs_in_csv(run) == [0, 1, 2]


def test_a_nan_in_the_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    class Poison(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                loss = pl_module.algo.loss_module
                forward = loss.forward

                def poisoned(td):
                    out = forward(td)
                    out.set("loss_objective", out["loss_objective"] * float("nan"))
                    return out

                loss.forward = poisoned

    snapshot = {}

    class Keep(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshot.update(params(pl_module))

    cfg = compose_cfg(["callbacks.metatest=null", f"runs_dir={tmp_path}", "trainer.max_epochs=3"])
    with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient in epoch 1, iteration 1 \(update 9\)") as info:
        train(cfg, extra_callbacks=[Poison(), Keep()])
    assert "\n" not in str(info.value)
    (last,) = tmp_path.glob("*/*/checkpoints/last.ckpt")
    state = torch.load(last, weights_only=False)["state_dict"]
    assert state.keys() == snapshot.keys()
    for key, value in state.items():  # the checkpoint of epoch 0, finite and equal to the parameters then
        assert torch.isfinite(value.float()).all()
        torch.testing.assert_close(value, snapshot[key], rtol=0, atol=0)


# ------------------------------------------------------------------ one-line messages
def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-m", "rl2_lightning.evaluate", "conf=nope"], "error: conf=nope is not a preset; choose one of: bandit_k10_n10"),
        (["-m", "rl2_lightning.evaluate", "conf=bandit_k5_n10", "ckpt=README.md"],
         "error: ckpt='README.md' is not a readable checkpoint"),
        (["-m", "rl2_lightning.evaluate", "conf=bandit_k5_n10", "ckpt=missing.ckpt"],
         "error: ckpt='missing.ckpt': no such checkpoint file"),
        (["-m", "rl2_lightning.evaluate", "conf=bandit_k5_n10", "algo.nokey=1"], "error: Could not override 'algo.nokey'."),
        (["train.py", "env.simulator.num_arms=7"], "error: no heldout task set for bandit_k7"),
        (["train.py", "callbacks.metatest.num_tasks=5000"], "error: callbacks.metatest.num_tasks=5000 is not allowed; the heldout set holds 1000"),
        (["train.py", "runs_dir=/proc/no/such"], "error: runs_dir: cannot create /proc/no/such/bandit_k5_n10"),
        (["train.py", "conf=nope"], "error: conf=nope is not a preset; choose one of: bandit_k10_n10"),
        (["train.py", "+optimizer.lr=1e-4"], "error: optimizer.lr=0.0001 would have no effect: every parameter group"),
        (["-m", "rl2_lightning.evaluate", "conf=bandit_k5_n10", "callbacks.metatest.num_tasks=5000"],
         "error: callbacks.metatest.num_tasks=5000 is not allowed; the heldout set holds 1000"),
        (["-m", "rl2_lightning.evaluate", "conf=bandit_k5_n10", "out=/proc/no/such"], "error: out='/proc/no/such': cannot write there"),
        (["train.py", f"ckpt_path={ROOT / 'tests' / 'data' / 'foreign_lightning.ckpt'}"],
         "error: ckpt_path="),
    ],
)
def test_bad_input_fails_in_one_line_naming_the_setting_or_file(args, expected, tmp_path):
    if args[0] == "train.py" and not any(a.startswith("runs_dir=") for a in args):
        args = [*args, f"runs_dir={tmp_path}"]
    proc = cli(*args)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(expected), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert sum(line.startswith("error:") for line in lines) == 1
    assert not list(tmp_path.glob("*/*")), "a failed run left a stub run directory"


def test_a_full_disk_at_checkpoint_time_fails_in_one_line(tmp_path, monkeypatch):
    def disk_full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write checkpoint .*\.ckpt \(No space left on device\)"):
        train(compose_cfg(["callbacks.metatest=null", f"runs_dir={tmp_path}", "trainer.max_epochs=1"]))


def test_task_set_messages_name_the_file_and_give_no_unsafe_advice(tmp_path, monkeypatch):
    from rl2_lightning.envs import tasks

    monkeypatch.setattr(tasks, "CHECKSUMS_FILE", tmp_path / "checksums.json")
    with pytest.raises(FileNotFoundError, match=r"checksums.json is missing, so task set bandit_k5_heldout.pt cannot be verified"):
        tasks.load_task_set("bandit_k5", "heldout")
    bad = tmp_path / "bandit_k5_heldout.pt"
    bad.write_bytes(b"garbage")
    monkeypatch.setattr(tasks, "TASKS_DIR", tmp_path)
    with pytest.raises(ValueError, match="cannot be read") as info:
        tasks.load_task_set("bandit_k5", "heldout")
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------ issue: faults that still lost work
def test_a_runtime_error_from_the_writer_leaves_no_partial_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.arange(3)}, path)
    before = path.read_bytes()
    real_write = open

    def failing_open(file, mode="r", *args, **kwargs):  # torch raises RuntimeError on a full disk
        f = real_write(file, mode, *args, **kwargs)
        if "w" in mode and str(file).endswith(".partial") and "last.ckpt" in str(file) and "sha256" not in str(file):
            f.close()
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 3392 vs 3286")
        return f

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError, match=r"could not write checkpoint .*last\.ckpt \(\[enforce fail") as info:
        io.save_checkpoint({"a": torch.arange(5)}, path)
    monkeypatch.undo()
    assert "\n" not in str(info.value) and path.read_bytes() == before
    assert is_intact(path)  # its checksum file still matches it: the failed write changed neither
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_real_full_disk_ends_in_one_line_with_the_earlier_checkpoints_intact(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=25m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("this platform does not let the test mount a tmpfs")
    try:  # GRU-256 checkpoints with optimizer state are ~10 MB: the disk fills at the second epoch's
        proc = cli("train.py", "callbacks.metatest=null", f"runs_dir={mnt}", "trainer.max_epochs=6", "threads=1",
                   "model.hidden_size=256", "model.embed_size=256", "env.num_envs=16", "trainer.limit_train_batches=1")
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert lines[-1].startswith("error: could not write checkpoint"), lines[-3:]
        assert not list(mnt.rglob("*.partial"))
        ckpts = [p for p in mnt.rglob("*.ckpt")]
        assert ckpts and all(is_intact(p) for p in ckpts)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_bytes_flipped_mid_file_make_latest_fall_back_and_say_so(two_epochs, tmp_path, capfd):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(two_epochs[0], runs)
    last = runs / "two" / two_epochs[1].name / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])  # same length: still parses
    last.write_bytes(bytes(data))
    chosen = latest_checkpoint(runs, "two")
    assert chosen.name.startswith("epoch=1") and "last.ckpt (checksum mismatch)" in capfd.readouterr().err
    with pytest.raises(ValueError, match="does not match its checksum"):
        from rl2_lightning.checkpoints import read_checkpoint

        read_checkpoint(last)


def test_a_second_process_resuming_a_run_in_use_is_refused(tmp_path):
    first = train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=busy", "trainer.max_epochs=2"]))
    run_dir = Path(first["run_dir"])
    holder = subprocess.Popen(  # another process training in that run: it holds the run's lock
        [sys.executable, "-c", "import sys, time; from rl2_lightning.runs import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(run_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OSError, match=rf"is in use by process {holder.pid} on ") as info:
            train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=busy", "trainer.max_epochs=3", "ckpt_path=latest"]))
        assert "\n" not in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    assert epochs_in_csv(run_dir) == [0, 1]  # nothing written by the refused run
    train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=busy", "trainer.max_epochs=3", "ckpt_path=latest"]))
    assert epochs_in_csv(run_dir) == [0, 1, 2]  # the lock died with its holder


def test_a_truncated_gittins_cache_is_rebuilt(tmp_path):
    from rl2_lightning.baselines.gittins import gittins_table

    gittins_table.cache_clear()
    first = gittins_table(10, 0.9, cache_dir=tmp_path)
    (path,) = tmp_path.glob("gittins_*.pt")
    path.write_bytes(path.read_bytes()[:100])  # a write cut short
    gittins_table.cache_clear()
    with pytest.warns(UserWarning, match="is corrupt; rebuilding it"):
        again = gittins_table(10, 0.9, cache_dir=tmp_path)
    torch.testing.assert_close(again, first, equal_nan=True)
    gittins_table.cache_clear()
    torch.testing.assert_close(gittins_table(10, 0.9, cache_dir=tmp_path), first, equal_nan=True)  # the rebuilt file loads


def test_the_clocks_continue_across_a_resume(tmp_path):
    def times(run_dir):
        with (Path(run_dir) / "metatest.csv").open() as f:
            return [(float(r["wall_s"]), float(r["train_s"])) for r in csv.DictReader(f)]

    first = train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=clock", "trainer.max_epochs=2"]))
    before = times(first["run_dir"])
    train(compose_cfg([*BASE, f"runs_dir={tmp_path}", "experiment=clock", "trainer.max_epochs=3", "ckpt_path=latest"]))
    after = times(first["run_dir"])
    assert after[:2] == before and after[2][0] > before[1][0] and after[2][1] > before[1][1]


def test_latest_does_not_warn_about_the_directory_made_for_this_resume(two_epochs, tmp_path, capfd):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(two_epochs[0], runs)
    time.sleep(0.05)
    own = runs / "two" / "2099-01-01_00-00-00"  # what Hydra made for this invocation
    (own / ".hydra").mkdir(parents=True)
    latest_checkpoint(runs, "two", own_dir=own)
    assert "skipping newer run" not in capfd.readouterr().err


def test_a_second_ctrl_c_stops_at_once_with_status_130_and_keeps_the_last_checkpoint(tmp_path):
    proc = run_fault("sigint2:0", tmp_path)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "second Ctrl-C: stopping now" in proc.stderr and "Traceback" not in proc.stderr
    (run,) = (tmp_path / "hurt").iterdir()
    assert is_intact(run / "checkpoints" / "last.ckpt")  # epoch 0's, untouched


MAZE = ["conf=maze_5x5", "env.num_envs=2", "env.simulator.horizon=6", "callbacks.metatest.num_tasks=2",
        "callbacks.metatest.batch_size=2", "callbacks.metatest.every_n_epochs=1", "callbacks.metatest.video_frames=0",
        "trainer.max_epochs=3", "threads=1", "seed=5"]


def engine_pids() -> set[int]:
    proc = subprocess.run(["pgrep", "-f", "vizdoom"], capture_output=True, text=True)
    return {int(p) for p in proc.stdout.split()}


@pytest.mark.slow  # ~17 s; the bandit signal tests run in CI
@pytest.mark.maze
def test_a_group_sigint_during_a_maze_meta_test_checkpoints_closes_the_engines_and_resumes_identically(tmp_path):
    pytest.importorskip("vizdoom")
    reference = train(compose_cfg([*MAZE, f"runs_dir={tmp_path / 'ref'}", "experiment=ref"]))
    before = engine_pids()
    proc = subprocess.run(  # its own process group, as a terminal's foreground job: the signal hits it all
        [sys.executable, "tests/faultkit.py", "group-sigint-metatest", *MAZE, f"runs_dir={tmp_path}", "experiment=hurt"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, start_new_session=True,
    )
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Ctrl-C: stopped after iteration 1 of epoch 2" in proc.stderr and "Traceback" not in proc.stderr
    assert "Fatal Error" not in proc.stderr
    assert engine_pids() <= before  # no engine left behind
    (run,) = (tmp_path / "hurt").iterdir()
    assert epochs_in_csv(run) == [0, 1]  # epoch 1's meta-test finished despite the signal
    resumed = train(compose_cfg([*MAZE, f"runs_dir={tmp_path}", "experiment=hurt", "ckpt_path=latest"]))
    assert epochs_in_csv(run) == [0, 1, 2]
    assert_same_params(params(reference["module"]), params(resumed["module"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where a GPU Trainer cannot start")
def test_an_error_line_keeps_its_cause(tmp_path):
    proc = cli("train.py", "trainer.accelerator=gpu", f"runs_dir={tmp_path}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and lines[-1].startswith("error: Error in call to target")
    assert "MisconfigurationException: No supported gpu backend found" in lines[-1]
    assert not list(tmp_path.glob("*/*")), "a run that failed after taking its lock left a stub directory"


def test_the_end_of_run_line_holds_the_score_metatest_csv_records(tmp_path):
    proc = cli("train.py", f"runs_dir={tmp_path}", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
               "env.num_envs=16", "callbacks.metatest.num_tasks=50", "threads=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("result: ")]
    (run,) = (tmp_path / "bandit_k5_n10").iterdir()
    with (run / "metatest.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert f"trial return {float(last['trial_return']):.2f} ± {float(last['trial_return_ci95']):.2f} (50 heldout tasks" in line
    assert "best baseline " in line and str(run / "checkpoints" / "last.ckpt") in line


def test_single_machine_ddp_listens_on_loopback_only():
    """The rendezvous store of a one-machine DDP run (``rl2_lightning.ddp``); the whole 2-process run is
    checked the same way in tests/test_train.py::test_train_py_runs_with_ddp_strategy_from_the_command_line."""
    import datetime
    import socket

    from rl2_lightning.ddp import loopback_store, strategy_for

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = loopback_store(port, 0, 1, datetime.timedelta(seconds=30))
    store.set("k", "v")
    ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    mine = [line.split()[3] for line in ss if f"pid={os.getpid()}," in line and line.split()[3].endswith(f":{port}")]
    assert mine == [f"127.0.0.1:{port}"]
    assert type(strategy_for("ddp", 1)).__name__ == "LocalDDPStrategy" and strategy_for("ddp", 2) == "ddp"
