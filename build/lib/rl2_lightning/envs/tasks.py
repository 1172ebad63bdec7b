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

from rl2_lightning.resources import data_dir

DATA_DIR = data_dir()
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


def task_set_dirs(tasks_dir: str | Path | None = None) -> list[Path]:
    """Where task sets are looked for, in order: the user's folder (``env.tasks_dir``), then the library's."""
    return ([Path(tasks_dir).expanduser()] if tasks_dir else []) + [TASKS_DIR]


def task_set_path(distribution: str, split: str, tasks_dir: str | Path | None = None) -> Path:
    """File of one fixed task set, e.g. ``data/tasks/bandit_k5_heldout.pt``: the first folder of
    :func:`task_set_dirs` that holds it (the user's folder if none does)."""
    if split not in SPLITS:
        raise ValueError(f"task set split={split!r} is unknown; allowed: {', '.join(SPLITS)}")
    dirs = task_set_dirs(tasks_dir)
    return next((d / f"{distribution}_{split}.pt" for d in dirs if (d / f"{distribution}_{split}.pt").exists()),
                dirs[0] / f"{distribution}_{split}.pt")


def available_distributions(tasks_dir: str | Path | None = None) -> list[str]:
    """The distributions with task-set files in the folders of :func:`task_set_dirs`."""
    return sorted({p.stem.rsplit("_", 1)[0] for d in task_set_dirs(tasks_dir) for p in d.glob("*.pt")})


def _checksums_file(directory: Path) -> Path:
    return CHECKSUMS_FILE if directory == TASKS_DIR else directory / "checksums.json"


def _read_checksums(directory: Path) -> dict[str, str]:
    path = _checksums_file(directory)
    return json.loads(path.read_text()) if path.exists() else {}


def _regenerate_hint(directory: Path) -> str:
    if directory == TASKS_DIR:
        return "regenerate with `python -m rl2_lightning.envs.tasks generate`"
    return f"regenerate with `python -m rl2_lightning.envs.tasks generate --simulator <your class> --out {directory}`"


def load_task_set(
    distribution: str, split: str = "heldout", verify: bool = True, tasks_dir: str | Path | None = None
) -> TensorDict:
    """Load a fixed task set and check it against the ``checksums.json`` of its folder.

    Raises ``FileNotFoundError`` / ``ValueError`` with the command that regenerates the set.
    """
    path = task_set_path(distribution, split, tasks_dir)
    checksums_file, regen = _checksums_file(path.parent), _regenerate_hint(path.parent)
    if not path.exists():
        raise FileNotFoundError(f"task set {path} is missing; {regen}")
    try:
        data = torch.load(path, weights_only=True)
        tasks = TensorDict(data, batch_size=[len(next(iter(data.values())))])
    except Exception as err:  # corrupt or foreign file; torch's own message suggests an unsafe load
        raise ValueError(f"task set {path} cannot be read ({type(err).__name__}); {regen}") from None
    if verify:
        if not checksums_file.exists():
            raise FileNotFoundError(f"{checksums_file} is missing, so task set {path.name} cannot be verified; {regen}")
        expected = _read_checksums(path.parent).get(path.name)
        if expected is None:
            raise ValueError(f"{checksums_file} has no checksum for {path.name}; {regen}")
        actual = tensordict_checksum(tasks)
        if expected != actual:
            raise ValueError(
                f"task set {path} does not match its checksum in {checksums_file.name} "
                f"(expected {expected}, got {actual}); {regen}"
            )
    return tasks


def excluded_tasks(distribution: str, tasks_dir: str | Path | None = None) -> TensorDict | None:
    """Union of the held-out and tuning sets of a distribution (what training must never draw)."""
    sets = [load_task_set(distribution, split, tasks_dir=tasks_dir) for split in SPLITS
            if task_set_path(distribution, split, tasks_dir).exists()]
    return torch.cat(sets) if sets else None


def draw_task_sets(sim, size: int = TASK_SET_SIZE) -> dict[str, TensorDict]:
    """A simulator's held-out and tuning sets: deterministic in its distribution's name, disjoint."""
    drawn: dict[str, TensorDict] = {}
    for split in SPLITS:
        gen = torch.Generator().manual_seed(derive_seed(FIXED_SETS_SEED, sim.distribution, split))
        tasks = sim.sample_tasks(size, gen)
        for other in drawn.values():  # the tuning set shares no task with the held-out set
            if torch.isin(task_fingerprint(tasks), task_fingerprint(other)).any():
                raise ValueError(f"{sim.distribution}: the {split} set repeats a task of another set; "
                                 "a distribution with so few distinct tasks cannot have disjoint sets")
        drawn[split] = tasks
    return drawn


def write_task_sets(sims, out_dir: Path, size: int = TASK_SET_SIZE) -> dict[str, str]:
    """Draw and write the task sets of each simulator into ``out_dir``, adding their checksums to the
    folder's ``checksums.json`` (the checksums of other distributions there are kept)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checksums_file = _checksums_file(out_dir)
    checksums = json.loads(checksums_file.read_text()) if checksums_file.exists() else {}
    written = {}
    for sim in sims:
        for split, tasks in draw_task_sets(sim, size).items():
            path = out_dir / f"{sim.distribution}_{split}.pt"
            torch.save({k: v.contiguous() for k, v in tasks.items()}, path)
            written[path.name] = tensordict_checksum(tasks)
    checksums.update(written)
    checksums_file.write_text(json.dumps(checksums, indent=2, sort_keys=True) + "\n")
    return written


def generate_task_sets(size: int = TASK_SET_SIZE, out_dir: Path | None = None) -> dict[str, str]:
    """Deterministically draw the library's distributions' (:data:`~rl2_lightning.envs.TASK_DISTRIBUTIONS`)
    held-out and tuning sets and write them with checksums (default: into the library's own folder)."""
    from rl2_lightning.envs import TASK_DISTRIBUTIONS, make_simulator

    sims = []
    for distribution, kwargs in TASK_DISTRIBUTIONS.items():
        kw = dict(kwargs)
        sims.append(make_simulator(kw.pop("family"), 1, **kw))
        if sims[-1].distribution != distribution:
            raise ValueError(f"TASK_DISTRIBUTIONS[{distribution!r}] builds {sims[-1].distribution}")
    return write_task_sets(sims, TASKS_DIR if out_dir is None else out_dir, size)


def main(argv: list[str] | None = None) -> None:
    """``python -m rl2_lightning.envs.tasks generate|verify`` (also the ``rl2-tasks`` command)."""
    import argparse

    import yaml

    from rl2_lightning.envs import known_families, make_simulator

    parser = argparse.ArgumentParser(
        description="Write or check the fixed held-out and tuning task sets of task distributions.",
        epilog="Without --simulator: the library's own distributions, in its data/tasks/. With it: that one "
               "distribution, e.g. --simulator mymodule.ThreeArms --arg num_arms=3 --out tasks; then train "
               "with env.tasks_dir=tasks.",
    )
    parser.add_argument("command", choices=["generate", "verify"])
    parser.add_argument("--simulator", help=f"a family ({', '.join(known_families())}) or a TaskSimulator "
                                            "class by dotted path (module.Class)")
    parser.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a constructor argument of the simulator (repeatable), e.g. num_arms=3")
    parser.add_argument("--out", help="the task-set folder (default: ./tasks with --simulator, else the library's)")
    parser.add_argument("--size", type=int, default=TASK_SET_SIZE, help="tasks per set")
    args = parser.parse_args(argv)
    if args.simulator is None and (args.arg or args.out):
        parser.error("--arg and --out need --simulator (the library's own sets live in the library)")
    kwargs = {}
    for item in args.arg:
        key, eq, value = item.partition("=")
        if not eq:
            parser.error(f"--arg {item!r} is not KEY=VALUE")
        kwargs[key] = yaml.safe_load(value)
    out = Path(args.out or "tasks") if args.simulator else TASKS_DIR
    if args.simulator:
        sim = make_simulator(args.simulator, 1, **kwargs)
        distributions = [sim.distribution]
    else:
        from rl2_lightning.envs import TASK_DISTRIBUTIONS

        distributions = list(TASK_DISTRIBUTIONS)
    if args.command == "generate":
        written = write_task_sets([sim], out, args.size) if args.simulator else generate_task_sets(args.size)
        for name, digest in written.items():
            print(f"{digest}  {out / name}")
        if args.simulator:
            print(f"wrote {sim.distribution}'s task sets to {out}; use them with env.tasks_dir={out}")
    else:
        for distribution in distributions:
            for split in SPLITS:
                load_task_set(distribution, split, tasks_dir=out)
                print(f"ok  {task_set_path(distribution, split, out)}")


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
