"""The ViZDoom maze task family as a :class:`~rl2_lightning.envs.trial.TaskSimulator` (DESIGN.md §4, §8).

``TrialEnv(MazeSimulator(...), task_source, episodes_per_trial)`` gives maze trials with the same
semantics and keys as every other family. A task is one map of a pool: ``{"pool": 0 (train) or 1
(held-out), "index": layout index in that pool}`` (int64); the map fixes layout, start and goal, so
the episodes of a trial restart on the same layout with the same goal.

Each env owns one ``vizdoom.DoomGame`` (the engine is its own process) stepped in a Python loop;
parallelism across processes comes from TorchRL's ``ParallelEnv`` / multi-process collectors.
vizdoom is imported only when an engine starts, so the other families start fast.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rl2_lightning.envs.maze.layout import POOLS, WALL, check_size, load_pool, setting_name
from rl2_lightning.envs.maze.wad import BLOCK, ensure_wad, map_name, map_to_block
from rl2_lightning.envs.trial import TaskSimulator

HORIZONS = {5: 250, 9: 1000}
FORWARD, TURN_LEFT, TURN_RIGHT = 0, 1, 2
ACTION_NAMES = ("forward", "turn_left", "turn_right")
PLAYER_RADIUS = 16.0  # Doom's player half-width in map units
TIC_REWARD = -0.01  # per game tic (-0.04 per agent step at frame skip 4)
GOAL_REWARD = 1.0
BUMP_REWARD = -0.001
START_TICS = 10  # the engine ignores input for ~8 tics after a map load


class EngineRestarted(RuntimeError):
    """An engine died and was restarted on the same task: the current batch must be re-collected."""

    def __init__(self, envs: list[int], cause: BaseException):
        super().__init__(f"ViZDoom engine of env(s) {envs} died ({type(cause).__name__}: {cause}); restarted")
        self.envs = envs


def _engine_errors() -> tuple[type[BaseException], ...]:
    import vizdoom as vzd

    return (
        vzd.ViZDoomUnexpectedExitException,
        vzd.ViZDoomIsNotRunningException,
        vzd.ViZDoomErrorException,
        vzd.SharedMemoryException,
        vzd.MessageQueueException,
    )


class Engine:
    """One headless DoomGame on one pool's WAD, run from its own scratch working directory.

    ViZDoom writes ``_vizdoom.ini`` and ``_vizdoom/`` into the engine's working directory; a tiny
    launcher script changes into a private scratch directory and ``exec``s the real binary, so only
    the engine's working directory changes, never this process's.
    """

    def __init__(self, wad: str, frame_skip: int, turn_degrees: float):
        import vizdoom as vzd

        self.wad = wad
        self.scratch = tempfile.mkdtemp(prefix="rl2_vizdoom_")
        launcher = os.path.join(self.scratch, "vizdoom")
        real = os.path.join(os.path.dirname(vzd.__file__), "vizdoom")
        with open(launcher, "w") as f:
            f.write(f'#!/bin/sh\ncd "{self.scratch}" || exit 1\nexec "{real}" "$@"\n')
        os.chmod(launcher, 0o755)
        game = vzd.DoomGame()
        game.set_vizdoom_path(launcher)
        game.set_doom_scenario_path(wad)
        game.set_doom_map(map_name(0))
        game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)  # the smallest one
        game.set_screen_format(vzd.ScreenFormat.CRCGCB)  # channels first, as torch wants
        for setter in ("hud", "crosshair", "weapon", "decals", "particles", "effects_sprites", "messages"):
            getattr(game, f"set_render_{setter}")(False)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        # Delta turning gives exact angles (binary turning accelerates: 1.76 then 3.52 deg/tic).
        game.set_available_buttons([vzd.Button.MOVE_FORWARD, vzd.Button.TURN_LEFT_RIGHT_DELTA])
        game.set_available_game_variables(
            [vzd.GameVariable.POSITION_X, vzd.GameVariable.POSITION_Y, vzd.GameVariable.ANGLE]
        )
        game.set_episode_start_time(START_TICS)
        game.set_living_reward(TIC_REWARD)
        game.set_map_exit_reward(GOAL_REWARD)
        game.init()
        self.game = game
        self.frame_skip = frame_skip
        per_tic = turn_degrees / frame_skip  # a positive delta turns right (clockwise)
        self.actions = ([1.0, 0.0], [0.0, -per_tic], [0.0, per_tic])
        self.map = map_name(0)

    @property
    def pid(self) -> int | None:
        """Process id of the engine: the process whose working directory is this engine's scratch."""
        scratch = os.path.realpath(self.scratch)
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/cwd") == scratch:
                        return int(entry)
                except OSError:  # gone, or not ours to read
                    continue
        return None

    def new_episode(self, map_: str) -> None:
        """Start an episode on ``map_`` (switching maps only when it changes)."""
        if map_ != self.map:
            self.game.set_doom_map(map_)
            self.map = map_
        self.game.new_episode()

    def close(self) -> None:
        """Stop the engine and remove its scratch directory."""
        try:
            self.game.close()
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)


class MazeSimulator(TaskSimulator):
    """``num_envs`` ViZDoom mazes of ``size × size`` cells (5 or 9).

    Observation: the first-person view, 40×30 RGB (4×4 block means of the engine's 160×120), scaled
    to [-1, 1], shape ``(3, 30, 40)``. Actions: 0 forward, 1 turn left, 2 turn right, each held for
    ``frame_skip`` tics; a turn step turns ``turn_degrees``. Rewards: +1 on reaching the goal (the
    episode ends), -0.01 per tic, -0.001 when a forward step pushes against a wall. Episodes end at
    the goal or after ``horizon`` steps (250 for 5×5, 1000 for 9×9), so their length varies and
    ``fixed_episode_steps`` is not defined.

    ``position`` (float ``[num_envs, 3]``: x, y in map units and heading in degrees) and ``success``
    (bool ``[num_envs]``: the last step reached the goal) are updated by every step; read them to
    draw paths. If an engine dies it is restarted on the same task and :meth:`step` raises
    :class:`EngineRestarted`: the env's trials must be reset and the batch re-collected.
    """

    num_actions = 3
    observation_shape = (3, 30, 40)

    def __init__(
        self,
        num_envs: int,
        size: int = 5,
        horizon: int | None = None,
        frame_skip: int = 4,
        turn_degrees: float = 15.0,
        device: torch.device | str = "cpu",
    ):
        super().__init__(num_envs, device)
        self.size = check_size(size)
        self.max_episode_steps = int(horizon) if horizon is not None else HORIZONS[self.size]
        if self.max_episode_steps < 1 or frame_skip < 1:
            raise ValueError(f"horizon and frame_skip must be >= 1, got {horizon}, {frame_skip}")
        self.frame_skip, self.turn_degrees = int(frame_skip), float(turn_degrees)
        n = self.num_envs
        self.task_pool = np.zeros(n, dtype=np.int64)
        self.task_index = np.zeros(n, dtype=np.int64)
        self.t = np.zeros(n, dtype=np.int64)
        self.ended = np.ones(n, dtype=bool)
        self.position = torch.zeros(n, 3)
        self.success = torch.zeros(n, dtype=torch.bool)
        self._obs = torch.zeros(n, *self.observation_shape)
        self._engines: list[Engine | None] = [None] * n
        self._pools = {}
        self._train_size = len(self.pool("train"))

    @property
    def setting(self) -> str:
        """Name of the task distribution, e.g. ``maze_5x5``."""
        return setting_name(self.size)

    def pool(self, name: str):
        """The layouts of pool ``name`` (``train`` or ``heldout``), loaded and verified once."""
        if name not in self._pools:
            self._pools[name] = load_pool(self.size, name)
        return self._pools[name]

    def task_set(self, pool: str = "heldout") -> TensorDict:
        """Every task of a pool, in order (the held-out set for meta-test: ``FixedTasks(sim.task_set())``)."""
        n = len(self.pool(pool))
        return TensorDict(
            {"pool": torch.full((n,), POOLS.index(pool), dtype=torch.long), "index": torch.arange(n)},
            batch_size=[n],
        )

    def layout(self, env: int):
        """The :class:`~rl2_lightning.envs.maze.layout.Layout` of env ``env``'s current task."""
        return self.pool(POOLS[self.task_pool[env]])[int(self.task_index[env])]

    # -- TaskSimulator -------------------------------------------------------------------------

    def sample_tasks(self, n: int, generator: torch.Generator) -> TensorDict:
        """``n`` uniform draws from the training pool (held-out layouts are in another pool)."""
        index = torch.randint(self._train_size, (n,), generator=generator, device=generator.device)
        return TensorDict({"pool": torch.zeros_like(index), "index": index}, batch_size=[n])

    def set_tasks(self, tasks: TensorDictBase, mask: torch.Tensor) -> None:  # noqa: D102
        envs = mask.nonzero().flatten().tolist()
        pools, index = tasks["pool"].tolist(), tasks["index"].tolist()
        for i, p, k in zip(envs, pools, index, strict=True):
            if not (0 <= p < len(POOLS) and 0 <= k < len(self.pool(POOLS[p]))):
                raise ValueError(f"maze task (pool={p}, index={k}) does not exist for {self.setting}")
            self.task_pool[i], self.task_index[i] = p, k

    def reset_episodes(self, mask: torch.Tensor) -> None:  # noqa: D102
        for i in mask.nonzero().flatten().tolist():
            try:
                self._start_episode(i)
            except _engine_errors() as err:
                self._restart(i)
                raise EngineRestarted([i], err) from err

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        reward = torch.zeros(self.num_envs)
        self.success.zero_()
        actions = action.tolist()
        for i, engine in enumerate(self._engines):
            if self.ended[i]:  # a finished trial waiting for its reset: nothing moves
                continue
            try:
                r = engine.game.make_action(engine.actions[actions[i]], self.frame_skip)
                finished = engine.game.is_episode_finished()
                if not finished:
                    self._read_state(i)
            except _engine_errors() as err:
                self._restart(i)
                raise EngineRestarted([i], err) from err
            if finished:
                self.success[i] = r > 0  # only the exit pays a positive reward
            elif actions[i] == FORWARD and self._touches_wall(i):
                r += BUMP_REWARD
            reward[i] = r
            self.t[i] += 1
            self.ended[i] = finished or self.t[i] >= self.max_episode_steps
        return reward.to(self.device), torch.from_numpy(self.ended.copy()).to(self.device)

    def observation(self) -> torch.Tensor:  # noqa: D102
        return self._obs.to(self.device)

    def close(self) -> None:  # noqa: D102
        for i, engine in enumerate(self._engines):
            if engine is not None:
                engine.close()
                self._engines[i] = None

    # -- internals -----------------------------------------------------------------------------

    def engine_pid(self, env: int) -> int | None:
        """Process id of env ``env``'s engine (``None`` before its first episode)."""
        engine = self._engines[env]
        return None if engine is None else engine.pid

    def _start_episode(self, i: int) -> None:
        pool = self.pool(POOLS[self.task_pool[i]])
        wad = str(ensure_wad(pool))
        engine = self._engines[i]
        if engine is None or engine.wad != wad:  # first use, or a task from the other pool
            if engine is not None:
                engine.close()
            engine = self._engines[i] = Engine(wad, self.frame_skip, self.turn_degrees)
        engine.new_episode(map_name(int(self.task_index[i])))
        self.t[i] = 0
        self.ended[i] = False
        self._read_state(i)

    def _restart(self, i: int) -> None:
        engine = self._engines[i]
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - the engine is already dead; only cleanup is left
                pass
            self._engines[i] = None
        self._start_episode(i)

    def _read_state(self, i: int) -> None:
        state = self._engines[i].game.get_state()
        screen = torch.from_numpy(state.screen_buffer).to(torch.float32)
        self._obs[i] = screen.view(3, 30, 4, 40, 4).mean((2, 4)).div_(127.5).sub_(1.0)
        self.position[i] = torch.from_numpy(state.game_variables.astype(np.float32))

    def _touches_wall(self, i: int) -> bool:
        """Whether env ``i``'s player is against a wall block it faces (a bump)."""
        grid = self.layout(i).grid
        x, y, angle = self.position[i].tolist()
        row, col = map_to_block(x, y, grid.shape[0])
        rad = np.deg2rad(angle)
        heading = np.array([np.cos(rad), np.sin(rad)])  # in map axes (x east, y north)
        reach = (PLAYER_RADIUS + 2.0) / BLOCK
        for r in range(int(row) - 1, int(row) + 2):
            for c in range(int(col) - 1, int(col) + 2):
                if not (0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]) or grid[r, c] != WALL:
                    continue
                # Nearest point of the block to the player, as a map-axes offset in blocks.
                dc = min(max(col, c), c + 1) - col
                dr = min(max(row, r), r + 1) - row
                if max(abs(dc), abs(dr)) <= reach:  # the player's square box touches the block
                    offset = np.array([dc, -dr])
                    norm = np.linalg.norm(offset)
                    if norm > 0 and heading @ offset / norm > 0.5:
                        return True
        return False
