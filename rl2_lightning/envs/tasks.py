"""Where tasks come from: seeded training streams and fixed held-out / tuning sets.

Training draws tasks from a :class:`SampledTasks` stream seeded per (seed, rank, worker), so that DDP
ranks and collector workers see different tasks, and that excludes every task of the held-out and
tuning sets by fingerprint (so "training never draws a held-out task" holds by construction, not
only with probability one). Meta-test and baseline tuning read :class:`FixedTasks` from files under
``data/tasks/``, produced by ``python -m rl2_lightning.envs.tasks generate`` and verified against
``data/tasks/checksums.json`` on every load.
"""

from __future__ import annotations

import abc
import hashlib
import json
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
TASKS_DIR = DATA_DIR / "tasks"
CHECKSUMS_FILE = TASKS_DIR / "checksums.json"
SPLITS = ("heldout", "tuning")
TASK_SET_SIZE = 1000
# Root of the seeds of the fixed sets; training streams derive theirs from the run's seed under the
# "train" key, so the two never share a random stream.
FIXED_SETS_SEED = 20161108


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 32-bit seed derived from ``seed`` and a path of keys (rank, worker, purpose ...).

    Uses NumPy's ``SeedSequence`` so that nearby keys give statistically independent streams.
    """
    spawn_key = tuple(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys)
    return int(np.random.SeedSequence(int(seed), spawn_key=spawn_key).generate_state(1)[0])


_HASH_MULTIPLIER, _HASH_OFFSET = 0x5BD1E995, 0x9E3779B9


def task_fingerprint(tasks: TensorDict) -> torch.Tensor:
    """An int64 identity per task (row), from the exact bits of every parameter.

    Two tasks get the same fingerprint iff (up to hash collisions) their parameters are bitwise equal.
    """
    # Polynomial hash with int64 wrap-around over the concatenated parameter bits b_j:
    # sum_j (b_j + OFFSET) * MULTIPLIER**(j+1). The odd multiplier mixes neighbouring positions.
    # Computed key by key as sum_j b_j * w_j + OFFSET * sum_j w_j (the same value, as wrap-around
    # arithmetic is a ring), which avoids concatenating and offsetting every parameter.
    n, offset, total = len(tasks), 0, None
    for key in sorted(tasks.keys(include_nested=True, leaves_only=True), key=str):
        x = tasks.get(key).reshape(n, -1)
        if x.dtype.is_floating_point:
            x = x.to(torch.float32).contiguous().view(torch.int32)
        width = x.shape[-1]
        powers = torch.full((offset + width,), _HASH_MULTIPLIER, dtype=torch.int64, device=x.device)
        powers = torch.cumprod(powers, 0)[offset:]
        part = (x.to(torch.int64) * powers).sum(-1) + _HASH_OFFSET * powers.sum()
        total = part if total is None else total + part
        offset += width
    return total


class TaskSource(abc.ABC):
    """Supplies the tasks of new trials."""

    @abc.abstractmethod
    def next(self, n: int) -> TensorDict:
        """The next ``n`` tasks, as a TensorDict of batch size ``[n]``."""

    def seed(self, seed: int) -> None:
        """Reseed the source (no-op for fixed sets)."""


class SampledTasks(TaskSource):
    """An endless seeded stream of tasks from a family's distribution.

    Args:
        sampler: ``sampler(n, generator) -> TensorDict[n]``, usually ``simulator.sample_tasks``.
        seed: seed of the stream (derive it per rank and worker with :func:`derive_seed`).
        exclude: tasks that must never be drawn (held-out and tuning sets); any draw that matches
            one of them by :func:`task_fingerprint` is redrawn.
        device: device of the generator.
    """

    _TABLE_SIZE = 1 << 20  # entries of the exclusion pre-filter (a power of two)

    def __init__(
        self,
        sampler: Callable[[int, torch.Generator], TensorDict],
        seed: int = 0,
        exclude: TensorDict | None = None,
        device: torch.device | str = "cpu",
    ):
        self.sampler = sampler
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed))
        self._excluded = None
        if exclude is not None:
            self._excluded = task_fingerprint(exclude).to(device).sort().values
            # Pre-filter: a table over the fingerprints' low bits, so that the exact membership test
            # (a binary search) runs only on the few candidates of a draw.
            self._candidate_table = torch.zeros(self._TABLE_SIZE, dtype=torch.bool, device=device)
            self._candidate_table[self._excluded & (self._TABLE_SIZE - 1)] = True

    def seed(self, seed: int) -> None:  # noqa: D102
        self.generator.manual_seed(int(seed))

    def is_excluded(self, tasks: TensorDict) -> torch.Tensor:
        """Bool ``[len(tasks)]``: which tasks are excluded (all ``False`` without an exclusion set)."""
        fingerprints = task_fingerprint(tasks)
        if self._excluded is None:
            return torch.zeros_like(fingerprints, dtype=torch.bool)
        excluded = self._candidate_table[fingerprints & (self._TABLE_SIZE - 1)]
        if excluded.any():
            candidates = fingerprints[excluded]
            position = torch.searchsorted(self._excluded, candidates).clamp_(max=len(self._excluded) - 1)
            excluded[excluded.clone()] = self._excluded[position] == candidates
        return excluded

    def next(self, n: int) -> TensorDict:  # noqa: D102
        tasks = self.sampler(n, self.generator)
        if self._excluded is None:
            return tasks
        while True:
            clash = self.is_excluded(tasks)
            if not clash.any():
                return tasks
            tasks[clash] = self.sampler(int(clash.sum()), self.generator)


class FixedTasks(TaskSource):
    """Hands out the tasks of a fixed set in order, cycling when it runs out.

    A meta-test env with ``num_envs == len(tasks)`` therefore plays every task exactly once per reset.
    """

    def __init__(self, tasks: TensorDict):
        if len(tasks) == 0:
            raise ValueError("FixedTasks needs at least one task")
        self.tasks = tasks.cpu()  # simulators move what they install to their own device
        self._cursor = 0

    def next(self, n: int) -> TensorDict:  # noqa: D102
        idx = (torch.arange(n) + self._cursor) % len(self.tasks)
        self._cursor = (self._cursor + n) % len(self.tasks)
        return self.tasks[idx]


# ----------------------------------------------------------------------------------------------
# Fixed task sets on disk


def tensordict_checksum(tasks: TensorDict) -> str:
    """SHA-256 of a task set's content (keys, dtypes, shapes and values), independent of file format."""
    h = hashlib.sha256()
    for key in sorted(tasks.keys(include_nested=True, leaves_only=True), key=str):
        x = tasks.get(key).detach().cpu().contiguous()
        h.update(f"{key}|{x.dtype}|{tuple(x.shape)}".encode())
        h.update(x.numpy().tobytes())
    return h.hexdigest()


def task_set_path(distribution: str, split: str) -> Path:
    """File of one fixed task set, e.g. ``data/tasks/bandit_k5_heldout.pt``."""
    if split not in SPLITS:
        raise ValueError(f"task set split={split!r} is unknown; allowed: {', '.join(SPLITS)}")
    return TASKS_DIR / f"{distribution}_{split}.pt"


def _read_checksums() -> dict[str, str]:
    if not CHECKSUMS_FILE.exists():
        return {}
    return json.loads(CHECKSUMS_FILE.read_text())


def load_task_set(distribution: str, split: str = "heldout", verify: bool = True) -> TensorDict:
    """Load a fixed task set and check it against ``data/tasks/checksums.json``.

    Raises ``FileNotFoundError`` / ``ValueError`` with the command that regenerates the set.
    """
    path = task_set_path(distribution, split)
    regen = "regenerate with `python -m rl2_lightning.envs.tasks generate`"
    if not path.exists():
        raise FileNotFoundError(f"task set {path} is missing; {regen}")
    try:
        data = torch.load(path, weights_only=True)
        tasks = TensorDict(data, batch_size=[len(next(iter(data.values())))])
    except Exception as err:  # corrupt or foreign file; torch's own message suggests an unsafe load
        raise ValueError(f"task set {path} cannot be read ({type(err).__name__}); {regen}") from None
    if verify:
        if not CHECKSUMS_FILE.exists():
            raise FileNotFoundError(f"{CHECKSUMS_FILE} is missing, so task set {path.name} cannot be verified; {regen}")
        expected = _read_checksums().get(path.name)
        if expected is None:
            raise ValueError(f"{CHECKSUMS_FILE} has no checksum for {path.name}; {regen}")
        actual = tensordict_checksum(tasks)
        if expected != actual:
            raise ValueError(
                f"task set {path} does not match its checksum in {CHECKSUMS_FILE.name} "
                f"(expected {expected}, got {actual}); {regen}"
            )
    return tasks


def excluded_tasks(distribution: str) -> TensorDict | None:
    """Union of the held-out and tuning sets of a distribution (what training must never draw)."""
    sets = [load_task_set(distribution, split) for split in SPLITS if task_set_path(distribution, split).exists()]
    return torch.cat(sets) if sets else None


def generate_task_sets(size: int = TASK_SET_SIZE, out_dir: Path = TASKS_DIR) -> dict[str, str]:
    """Deterministically draw every distribution's held-out and tuning sets and write them with checksums."""
    from rl2_lightning.envs import TASK_DISTRIBUTIONS, make_simulator

    out_dir.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for distribution, kwargs in TASK_DISTRIBUTIONS.items():
        kw = dict(kwargs)
        sim = make_simulator(kw.pop("family"), 1, **kw)
        drawn = []
        for split in SPLITS:
            gen = torch.Generator().manual_seed(derive_seed(FIXED_SETS_SEED, distribution, split))
            tasks = sim.sample_tasks(size, gen)
            for other in drawn:  # the tuning set shares no task with the held-out set
                assert not torch.isin(task_fingerprint(tasks), task_fingerprint(other)).any()
            drawn.append(tasks)
            path = out_dir / f"{distribution}_{split}.pt"
            torch.save({k: v.contiguous() for k, v in tasks.items()}, path)
            checksums[path.name] = tensordict_checksum(tasks)
    (out_dir / "checksums.json").write_text(json.dumps(checksums, indent=2, sort_keys=True) + "\n")
    return checksums


def main(argv: list[str] | None = None) -> None:
    """``python -m rl2_lightning.envs.tasks generate|verify``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["generate", "verify"])
    args = parser.parse_args(argv)
    if args.command == "generate":
        for name, digest in generate_task_sets().items():
            print(f"{digest}  {TASKS_DIR / name}")
    else:
        from rl2_lightning.envs import TASK_DISTRIBUTIONS

        for distribution in TASK_DISTRIBUTIONS:
            for split in SPLITS:
                load_task_set(distribution, split)
                print(f"ok  {task_set_path(distribution, split)}")


if __name__ == "__main__":
    main()
