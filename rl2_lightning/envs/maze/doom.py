"""ViZDoom maze simulator: one headless ``DoomGame`` per env, served through the trial mechanism.

A task is one layout of a pool (``"layout"``: its index; the goal is part of the layout). The
episodes of a trial replay the same map; a new trial switches map with ``set_doom_map`` +
``new_episode``. Actions: forward, turn left, turn right, each held for
``frame_skip`` tics; a turn rotates by exactly ``turn_degrees`` (ViZDoom's delta turn button, spread
evenly over the tics), or, with ``turn_degrees=None``, uses the binary turn buttons (7.0°, then 12.3°,
then 14.1° per action held on: the engine's turn acceleration). Rewards: ``-0.01`` per tic (the engine's living reward), ``+1`` on walking into
the red goal block (its linedefs carry ``Exit_Normal``: the engine ends the episode and pays the map
exit reward), ``-0.001`` when a forward step is blocked by a wall. Observations are the 160x120 RGB
frame averaged over 4x4 blocks to 40x30, kept as uint8 (the block mean rounded) until the network
scales it to [-1, 1] (:class:`~rl2_lightning.models.encoders.PixelInputEncoder`).
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import tempfile
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Optional

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rl2_lightning.components import Range
from rl2_lightning.envs.maze.metrics import navigation_metrics
from rl2_lightning.envs.maze.layout import check_pool, check_size, distribution_name, load_pool
from rl2_lightning.envs.maze.wad import ensure_wad, map_name
from rl2_lightning.envs.trial import EngineRestarted, TaskSimulator

HORIZONS = {5: 250, 9: 1000}
#: simulators whose engines are still open: closed when the process exits or, in an env worker, is terminated
_OPEN: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_SET = False
LIVING_REWARD = -0.01  # per tic
GOAL_REWARD = 1.0
BUMP_PENALTY = -0.001
START_TICS = 10  # the engine ignores input for ~8 tics after a map load
MIN_STEP = 1.0  # map units: a forward step that moves less than this hit a wall
FORWARD, LEFT, RIGHT = 0, 1, 2
BUTTONS = [[a == FORWARD, a == LEFT, a == RIGHT] for a in range(3)]  # action -> binary button states
TURN_DEGREES = 15.0  # default turn per action: divides 90, near the binary buttons' held rate (14.1°)


def delta_buttons(turn_degrees: float, frame_skip: int) -> list[list[float]]:
    """Action -> ``[MOVE_FORWARD, TURN_LEFT_RIGHT_DELTA]`` values. The engine applies a delta button's
    value on every tic of ``make_action`` (degrees per tic, positive turns right), so a turn of
    ``turn_degrees`` is spread over the ``frame_skip`` tics."""
    per_tic = float(turn_degrees) / frame_skip
    return [[1.0, 0.0], [0.0, -per_tic], [0.0, per_tic]]


def _close_open_simulators() -> None:
    for sim in list(_OPEN):
        sim.close()


def _on_sigterm(signum, frame) -> None:
    """In an env worker process: close the engines, then die of SIGTERM as if no handler were set."""
    _close_open_simulators()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _track(sim: "MazeSimulator") -> None:
    """Make sure ``sim``'s engines never outlive this process.

    A ViZDoom engine does not notice that its controlling process died, so an engine left open is an
    orphan that runs until killed by hand. Engines are closed at interpreter exit (also when an env
    worker ends on an exception) and, in a worker process (TorchRL's ``ParallelEnv`` terminates the
    other workers when one fails), on SIGTERM — where no other SIGTERM handler is installed.
    """
    global _ATEXIT_SET
    if not _ATEXIT_SET:
        atexit.register(_close_open_simulators)
        _ATEXIT_SET = True
    _OPEN.add(sim)
    if (
        multiprocessing.parent_process() is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


#: (pid, launcher path) of this process's private engine scratch directory
_SCRATCH: tuple[int, str] | None = None


def _launcher() -> str:
    """A launcher for the engine that runs it from a scratch directory private to this process.

    ViZDoom writes ``_vizdoom.ini`` and ``_vizdoom/`` into the engine's working directory (also when
    it closes). The launcher changes into the scratch directory and ``exec``s the real binary, so
    the engine (and only the engine, for its whole life) runs there; this process's working
    directory never changes. The directory is made fresh by ``mkdtemp`` (a new name, owner-only
    permissions), never taken over from a shared temp folder where another user could have planted or
    swapped a script, and it is removed when the process that made it exits.
    """
    global _SCRATCH
    if _SCRATCH is not None and _SCRATCH[0] == os.getpid() and os.path.isfile(_SCRATCH[1]):
        return _SCRATCH[1]
    import shutil

    import vizdoom as vzd

    scratch = tempfile.mkdtemp(prefix="rl2_lightning_vizdoom-")  # mode 0o700, a name nobody else holds
    real = os.path.join(os.path.dirname(vzd.__file__), "vizdoom")
    path = os.path.join(scratch, "vizdoom_launcher.sh")
    # The engine gets a session of its own (setsid): a Ctrl-C or SIGTERM sent to the terminal's or the
    # job's process group reaches the trainer, which finishes its work, checkpoints and closes the
    # engines, instead of killing the engines in the middle of a meta-test.
    session = "setsid " if shutil.which("setsid") else ""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(f'#!/bin/sh\ncd "{scratch}" || exit 1\nexec {session}"{real}" "$@"\n')
    pid = os.getpid()
    _SCRATCH = (pid, path)

    def remove() -> None:  # after the engines, which write into it when they close
        if os.getpid() == pid:
            _close_open_simulators()
            shutil.rmtree(scratch, ignore_errors=True)

    atexit.register(remove)
    return path


def engine_pid(game) -> int | None:
    """The pid of ``game``'s engine: the child of this process whose command line carries the game's
    ``+viz_instance_id``. ``None`` where there is no such process (it died, or was never started) or no
    ``/proc`` to ask (not Linux)."""
    if not os.path.isdir("/proc"):
        return None
    tag = [b"+viz_instance_id", game.get_instance_id().encode()]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            if not any(args[k : k + 2] == tag for k in range(len(args) - 1)):
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the process ended while we looked
            continue
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == os.getpid():  # ppid: ours, not another's
            return int(entry.name)
    return None


def close_game(game) -> None:
    """Close ``game`` without the engine's own shutdown: its engine is killed first, then ``close()`` frees
    this side's shared memory and queues.

    The engine's clean exit crashes on some histories (its exit handlers hit unmapped memory after certain
    sequences of goal exits and map changes, e.g. two goals reached on one map, then another map loaded),
    printing a "Fatal Error ... signal 11" report and spending a second on a gdb backtrace. All that exit
    would do is write the engine's config into the scratch directory, which is removed anyway.
    """
    pid = engine_pid(game)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    game.close()  # reaps the engine and frees this side's shared memory and message queues


def block_sums(frame: np.ndarray) -> np.ndarray:
    """``[120, 160, 3]`` uint8 -> ``[3, 30, 40]`` uint16: the sums of 4x4 pixel blocks."""
    # Strided sums of 4 rows then 4 columns: ~15x faster than a mean over a reshaped view.
    x = frame.astype(np.uint16)
    x = x[0::4] + x[1::4] + x[2::4] + x[3::4]
    x = x[:, 0::4] + x[:, 1::4] + x[:, 2::4] + x[:, 3::4]
    return x.transpose(2, 0, 1)


def downsample(frame: np.ndarray) -> np.ndarray:
    """``[120, 160, 3]`` uint8 -> ``[3, 30, 40]`` uint8, the 4x4 block mean rounded to the nearest
    integer (half up). The network reads it as ``x / 127.5 - 1``: within ``0.5 / 127.5`` of the exact
    block mean scaled to [-1, 1] (:func:`downsample_float`, the observation before uint8)."""
    return ((block_sums(frame) + 8) >> 4).astype(np.uint8)


def downsample_float(frame: np.ndarray) -> np.ndarray:
    """``[120, 160, 3]`` uint8 -> ``[3, 30, 40]`` float32 in [-1, 1]: the exact 4x4 block mean, scaled."""
    return block_sums(frame).astype(np.float32) * (1 / (16 * 127.5)) - 1.0


class MazeSimulator(TaskSimulator):
    """``num_envs`` ViZDoom mazes of one pool.

    Args:
        num_envs: parallel games in this process (each engine runs in its own process).
        size: cells per side (5 or 9).
        pool: ``"train"`` (training stream) or ``"heldout"`` (meta-test set).
        horizon: steps per episode (default 250 for 5x5, 1000 for 9x9, as the paper).
        frame_skip: tics per action.
        threads: games stepped at once, by the calling thread and a pool of ``threads - 1`` (default: one
            thread per game; 1 steps them in turn). The engines are separate processes and ViZDoom
            releases the GIL while they run, so several engines work at the same time.
        turn_degrees: rotation of one turn action (delta turn button); ``None``: the binary turn
            buttons, whose angle depends on how long the turn has been held.
    """

    family = "maze"

    num_actions = 3
    observation_shape = (3, 30, 40)
    #: frames stay bytes through the env, the collector and the batch (4x less than float32)
    observation_dtype = torch.uint8
    #: the training and held-out mazes are the simulator's own pools (``pool=``), not task-set files
    own_pools = True
    #: each game is an engine process: envs may be split over ``env.workers`` processes
    runs_engines = True

    def __init__(
        self,
        num_envs: int,
        size: int = 5,
        pool: str = "train",
        horizon: Optional[Annotated[int, Range(1)]] = None,
        frame_skip: Annotated[int, Range(1)] = 4,
        device: torch.device | str = "cpu",
        threads: Optional[Annotated[int, Range(1)]] = None,
        turn_degrees: Optional[Annotated[float, Range(0, 180)]] = TURN_DEGREES,
    ):
        from rl2_lightning.errors import require_extra

        require_extra("vizdoom", "maze", "the maze family (env=maze, conf=maze_*)")
        super().__init__(num_envs, device)
        #: threads stepping the games at once, the calling one included (default: one per game; 1: in turn)
        self.threads = num_envs if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        helpers = self.threads - 1  # the calling thread steps one game itself
        self._pool = ThreadPoolExecutor(helpers, thread_name_prefix="maze") if helpers > 0 else None
        self.size, self.pool_name = check_size(size), check_pool(pool)
        self.max_episode_steps = int(horizon or HORIZONS[self.size])
        if self.max_episode_steps < 1 or frame_skip < 1:
            raise ValueError(f"horizon and frame_skip must be >= 1, got {horizon} and {frame_skip}")
        self.frame_skip = int(frame_skip)
        if turn_degrees is not None and not 0 < turn_degrees <= 180:
            raise ValueError(f"turn_degrees must be in (0, 180] or None, got {turn_degrees}")
        self.turn_degrees = None if turn_degrees is None else float(turn_degrees)
        self.buttons = BUTTONS if turn_degrees is None else delta_buttons(turn_degrees, self.frame_skip)
        self.pool = load_pool(self.size, self.pool_name)
        self.wad = str(ensure_wad(self.pool))
        self.layout = np.full(num_envs, -1, dtype=np.int64)
        self._loaded = np.full(num_envs, -1, dtype=np.int64)  # map currently loaded in each engine
        self.t = np.zeros(num_envs, dtype=np.int64)
        self._obs = np.zeros((num_envs, *self.observation_shape), dtype=np.uint8)
        self._pos = np.zeros((num_envs, 3), dtype=np.float64)  # x, y, angle
        #: per env, the (x, y, angle) of every step of the current trial, for drawing paths
        self.trace: list[list[tuple[float, float, float]]] = [[] for _ in range(num_envs)]
        self.games = []
        _track(self)
        self.games = [self._start_game() for _ in range(num_envs)]

    @property
    def positions(self) -> np.ndarray:
        """Each game's current ``(x, y, angle)`` in map units and degrees, ``[num_envs, 3]`` (a copy)."""
        return self._pos.copy()

    def trial_metrics(self, steps, episodes_per_trial: int) -> dict[str, float]:
        """The paper's Table 3 columns: success and successful-episode length per episode, %improved."""
        return navigation_metrics(steps, episodes_per_trial)

    @property
    def distribution(self) -> str:
        """Name of the task distribution (``maze_5x5`` / ``maze_9x9``)."""
        return distribution_name(self.size)

    def setting(self, episodes_per_trial: int) -> str:
        """``maze_5x5`` / ``maze_9x9``: Table 3's rows, whatever the trial length."""
        return self.distribution

    # ------------------------------------------------------------------ engine
    def _start_game(self):
        import vizdoom as vzd

        game = vzd.DoomGame()
        game.set_vizdoom_path(_launcher())
        game.set_doom_scenario_path(self.wad)
        game.set_doom_map(map_name(0))
        game.set_screen_resolution(vzd.ScreenResolution.RES_160X120)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_render_hud(False)
        game.set_render_crosshair(False)
        game.set_render_weapon(False)
        game.set_render_decals(False)
        game.set_render_particles(False)
        if self.turn_degrees is None:
            game.set_available_buttons([vzd.Button.MOVE_FORWARD, vzd.Button.TURN_LEFT, vzd.Button.TURN_RIGHT])
        else:
            game.set_available_buttons([vzd.Button.MOVE_FORWARD, vzd.Button.TURN_LEFT_RIGHT_DELTA])
        game.set_available_game_variables(
            [vzd.GameVariable.POSITION_X, vzd.GameVariable.POSITION_Y, vzd.GameVariable.ANGLE]
        )
        game.set_living_reward(LIVING_REWARD)
        game.set_map_exit_reward(GOAL_REWARD)
        game.set_episode_start_time(START_TICS)
        game.set_episode_timeout(0)  # the horizon is counted here, in agent steps
        game.set_mode(vzd.Mode.PLAYER)
        game.init()
        return game

    @contextlib.contextmanager
    def _engine(self, i: int):
        """Calls into game ``i``: if its engine died, start a new one and raise :class:`EngineRestarted`."""
        import vizdoom as vzd

        try:
            yield
        except (vzd.ViZDoomUnexpectedExitException, vzd.ViZDoomErrorException, vzd.ViZDoomIsNotRunningException) as err:
            with contextlib.suppress(Exception):
                close_game(self.games[i])
            self.games[i] = self._start_game()
            self._loaded[i] = -1
            self._new_episode(i)
            raise EngineRestarted(f"maze engine {i} died and was restarted ({err})") from err

    def _read(self, i: int) -> None:
        """Cache the observation and position of game ``i`` (after a step or a new episode)."""
        state = self.games[i].get_state()
        if state is None:  # the episode just ended; TrialEnv restarts it or the trial is over
            return
        self._obs[i] = downsample(state.screen_buffer)
        self._pos[i] = state.game_variables[:3]

    def _new_episode(self, i: int) -> None:
        game = self.games[i]
        if self._loaded[i] != self.layout[i]:
            game.set_doom_map(map_name(int(self.layout[i])))
            self._loaded[i] = self.layout[i]
        game.new_episode()
        self.t[i] = 0
        self._read(i)
        self.trace[i].append(tuple(self._pos[i]))

    # ------------------------------------------------------------------ TaskSimulator
    def sample_tasks(self, n: int, generator: torch.Generator) -> TensorDict:  # noqa: D102
        layout = torch.randint(len(self.pool), (n,), generator=generator, device=generator.device)
        return TensorDict({"layout": layout}, batch_size=[n])

    def task_set(self) -> TensorDict:
        """Every layout of the pool, in order (the held-out set when ``pool="heldout"``)."""
        n = len(self.pool)
        return TensorDict({"layout": torch.arange(n)}, batch_size=[n])

    def set_tasks(self, tasks: TensorDictBase, mask: torch.Tensor) -> None:  # noqa: D102
        idx = mask.nonzero().flatten().cpu().numpy()
        self.layout[idx] = tasks["layout"].cpu().numpy()
        for i in idx:
            self.trace[i] = []

    def reset_episodes(self, mask: torch.Tensor) -> None:  # noqa: D102
        def reset(i: int) -> None:
            with self._engine(i):
                self._new_episode(i)

        self._each(reset, mask.nonzero().flatten().tolist())

    def step(self, action: torch.Tensor, active: torch.Tensor | None = None):  # noqa: D102
        reward = np.zeros(self.num_envs, dtype=np.float32)
        ended = np.zeros(self.num_envs, dtype=bool)
        acts = action.cpu().numpy()
        todo = range(self.num_envs) if active is None else active.nonzero().flatten().tolist()

        def step(i: int) -> None:
            game, a = self.games[i], int(acts[i])
            before = self._pos[i, :2].copy()
            with self._engine(i):
                reward[i] = game.make_action(self.buttons[a], self.frame_skip)
                finished = game.is_episode_finished()
            self.t[i] += 1
            if finished:  # reached the goal: the engine paid the exit reward
                ended[i] = True
                return
            self._read(i)
            self.trace[i].append(tuple(self._pos[i]))
            if a == FORWARD and np.hypot(*(self._pos[i, :2] - before)) < MIN_STEP:
                reward[i] += BUMP_PENALTY
            ended[i] = self.t[i] >= self.max_episode_steps

        self._each(step, list(todo))
        return torch.from_numpy(reward).to(self.device), torch.from_numpy(ended).to(self.device)

    def _each(self, fn, envs: list[int]) -> None:
        """``fn(i)`` for every env ``i`` of ``envs``: on the thread pool when there is one and more than one env.

        ViZDoom releases the GIL while its engine runs the tics, so the engines (separate processes)
        work at the same time. The calling thread steps the first env itself: handing every env to the
        pool and waiting measured no faster than stepping in turn, while this way 2 to 8 games step
        1.2-1.7x as fast as in turn on 2 cores. Every env's call completes before the first error
        (e.g. :class:`EngineRestarted`) is raised, so no game is left half-stepped.
        """
        if self._pool is None or len(envs) < 2:
            for i in envs:
                fn(i)
            return
        futures = [self._pool.submit(fn, i) for i in envs[1:]]
        try:
            fn(envs[0])
            first = None
        except Exception as err:  # noqa: BLE001 - raised below, after the other envs finished
            first = err
        errors = [first] + [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err

    def observation(self) -> torch.Tensor:  # noqa: D102
        return torch.from_numpy(self._obs.copy()).to(self.device)

    def close(self) -> None:  # noqa: D102
        _OPEN.discard(self)
        for game in self.games:
            with contextlib.suppress(Exception):
                close_game(game)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
