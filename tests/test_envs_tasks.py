"""Task sources and the fixed held-out / tuning sets."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tensordict import TensorDict

from rl2_lightning.envs import TASK_DISTRIBUTIONS, make_simulator, make_trial_env
from rl2_lightning.envs import tasks as tasks_module
from rl2_lightning.envs.tasks import (
    CHECKSUMS_FILE,
    FIXED_SETS_SEED,
    SPLITS,
    TASK_SET_SIZE,
    FixedTasks,
    SampledTasks,
    derive_seed,
    excluded_tasks,
    generate_task_sets,
    load_task_set,
    task_fingerprint,
    task_set_path,
)

SETTINGS = list(TASK_DISTRIBUTIONS)


@pytest.mark.parametrize("setting", SETTINGS)
def test_fixed_sets_match_their_checksums_and_are_disjoint(setting):
    sets = {split: load_task_set(setting, split) for split in SPLITS}  # verifies the checksums
    for tasks in sets.values():
        assert len(tasks) == TASK_SET_SIZE
        assert task_fingerprint(tasks).unique().numel() == TASK_SET_SIZE
    assert not torch.isin(task_fingerprint(sets["heldout"]), task_fingerprint(sets["tuning"])).any()


def test_regenerating_the_sets_reproduces_the_checksums(tmp_path):
    checksums = generate_task_sets(out_dir=tmp_path)
    assert checksums == json.loads(CHECKSUMS_FILE.read_text())
    assert json.loads((tmp_path / "checksums.json").read_text()) == checksums
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == sorted(checksums)


@pytest.fixture
def tasks_copy(tmp_path, monkeypatch):
    """A copy of data/tasks that the task-set functions read instead of the real one."""
    shutil.copytree(tasks_module.TASKS_DIR, tmp_path / "tasks")
    monkeypatch.setattr(tasks_module, "TASKS_DIR", tmp_path / "tasks")
    monkeypatch.setattr(tasks_module, "CHECKSUMS_FILE", tmp_path / "tasks" / "checksums.json")
    return tmp_path / "tasks"


def test_a_corrupted_set_is_rejected(tasks_copy):
    path = tasks_copy / "bandit_k5_heldout.pt"
    data = torch.load(path, weights_only=True)
    data["p"][17, 3] += 1e-3  # a single changed number
    torch.save(data, path)
    with pytest.raises(ValueError, match="checksum.*rl2_lightning.envs.tasks generate"):
        load_task_set("bandit_k5", "heldout")
    load_task_set("bandit_k5", "tuning")  # the other files are still fine
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_task_set("bandit_k5", "heldout")


def test_a_missing_set_names_the_regenerate_command(tasks_copy):
    (tasks_copy / "tabular_s10_a5_tuning.pt").unlink()
    with pytest.raises(FileNotFoundError, match="python -m rl2_lightning.envs.tasks generate"):
        load_task_set("tabular_s10_a5", "tuning")
    with pytest.raises(FileNotFoundError):
        make_trial_env("tabular", 2, 1, task_set="tuning")


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        task_set_path("bandit_k5", "train")
    with pytest.raises(ValueError, match="split"):
        load_task_set("bandit_k5", "test")


@pytest.mark.parametrize(
    "family, setting",
    [("bandit", "bandit_k5"), ("tabular", "tabular_s10_a5"), ("riverswim", "riverswim_s10")],
)
def test_training_stream_never_draws_heldout_or_tuning_tasks(family, setting):
    excluded = task_fingerprint(excluded_tasks(setting))
    assert excluded.numel() == 2 * TASK_SET_SIZE
    kwargs = {"num_arms": 5} if family == "bandit" else {}
    env = make_trial_env(family, 500, 1, seed=FIXED_SETS_SEED, **kwargs)  # even with the sets' root seed
    source = env.base_env.task_source
    drawn = torch.cat([task_fingerprint(source.next(500)) for _ in range(20 if family == "bandit" else 4)])
    assert not torch.isin(drawn, excluded).any()
    assert drawn.unique().numel() == drawn.numel()


@pytest.mark.parametrize("table_size", [SampledTasks._TABLE_SIZE, 1])
def test_sampled_tasks_redraws_excluded_tasks(table_size, monkeypatch):
    """The exclusion itself: a stream seeded like the held-out set would draw exactly that set.

    With a one-entry pre-filter table every task is a candidate, so the exact test decides alone.
    """
    monkeypatch.setattr(SampledTasks, "_TABLE_SIZE", table_size)
    sim = make_simulator("bandit", 1, num_arms=5)
    heldout = load_task_set("bandit_k5", "heldout")
    seed = derive_seed(FIXED_SETS_SEED, "bandit_k5", "heldout")
    unfiltered = SampledTasks(sim.sample_tasks, seed).next(TASK_SET_SIZE)
    assert torch.equal(unfiltered["p"], heldout["p"])  # control: the clash is real
    source = SampledTasks(sim.sample_tasks, seed, exclude=heldout)
    assert source.is_excluded(heldout).all()
    filtered = source.next(TASK_SET_SIZE)
    assert not torch.isin(task_fingerprint(filtered), task_fingerprint(heldout)).any()
    assert not source.is_excluded(filtered).any()
    assert filtered.shape == (TASK_SET_SIZE,) and ((filtered["p"] >= 0) & (filtered["p"] <= 1)).all()


def test_sampled_tasks_rejects_injected_tasks_until_a_clean_draw():
    sim = make_simulator("tabular", 1)
    heldout = load_task_set("tabular_s10_a5", "heldout")
    calls = []

    def sampler(n, generator):
        """Fresh tasks with held-out tasks injected at every other position, for the first two calls."""
        tasks = sim.sample_tasks(n, generator)
        if len(calls) < 2:
            tasks[::2] = heldout[torch.arange(0, n, 2) % len(heldout)]
        calls.append(n)
        return tasks

    drawn = SampledTasks(sampler, seed=0, exclude=heldout).next(10)
    assert calls == [10, 5, 3]  # 5 injected and redrawn, 3 of those injected again and redrawn
    assert not torch.isin(task_fingerprint(drawn), task_fingerprint(heldout)).any()
    assert torch.allclose(drawn["P"].sum(-1), torch.ones(10, 10, 5))


def test_task_fingerprint_identifies_tasks_bitwise():
    gen = torch.Generator().manual_seed(0)
    tasks = make_simulator("tabular", 1).sample_tasks(64, gen)
    fp = task_fingerprint(tasks)
    assert fp.dtype == torch.int64 and fp.unique().numel() == 64
    assert torch.equal(task_fingerprint(tasks[10:20]), fp[10:20])  # independent of the batch
    changed = tasks.clone()
    changed["mu"][5, 9, 4] = torch.nextafter(changed["mu"][5, 9, 4], torch.tensor(10.0))  # one ulp
    changed["P"][7, 0, 0, 0] = torch.nextafter(changed["P"][7, 0, 0, 0], torch.tensor(0.0))
    same = task_fingerprint(changed) == fp
    assert same.sum() == 62 and not same[5] and not same[7]


def test_fixed_tasks_hand_out_the_set_in_order_and_cycle():
    tasks = TensorDict({"x": torch.arange(5.0)}, batch_size=[5])
    source = FixedTasks(tasks)
    assert source.next(3)["x"].tolist() == [0, 1, 2]
    assert source.next(4)["x"].tolist() == [3, 4, 0, 1]
    source.seed(123)  # no effect on a fixed set
    assert source.next(2)["x"].tolist() == [2, 3]
    with pytest.raises(ValueError):
        FixedTasks(TensorDict({"x": torch.zeros(0)}, batch_size=[0]))


def test_derive_seed_is_deterministic_and_separates_keys():
    seeds = {derive_seed(0, "train", "tasks", rank, worker) for rank in range(4) for worker in range(4)}
    assert len(seeds) == 16
    assert derive_seed(0, "train", "tasks", 1, 2) == derive_seed(0, "train", "tasks", 1, 2)
    assert derive_seed(0, "train") != derive_seed(1, "train") != derive_seed(0, "heldout")
    assert all(0 <= s < 2**32 for s in seeds)
