"""ViZDoom mazes (rl2_lightning/envs/maze/): layouts, pools, WADs and the simulator in trials."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rl2_lightning.envs.maze.layout import (
    GOAL,
    HEADINGS,
    WALL,
    generate_layout,
    load_pool,
    neighbours,
    shortest_path,
)
from rl2_lightning.envs.maze.wad import BLOCK, block_to_map, build_wad


def cells(n):
    return [(r, c) for r in range(n) for c in range(n)]


@pytest.mark.parametrize("size", [5, 9])
def test_generated_mazes_are_perfect_with_a_reachable_goal(size):
    for seed in range(20):
        layout = generate_layout(size, seed)
        grid = layout.grid
        assert (grid[0] == WALL).all() and (grid[-1] == WALL).all()
        edges = {frozenset((a, b)) for a in cells(size) for b in neighbours(grid, a)}
        # connected + (cells - 1) edges = a tree: every cell reachable, exactly one path between cells
        assert len(edges) == size * size - 1
        assert all(shortest_path(grid, layout.start, cell) for cell in cells(size))
        assert grid[2 * layout.goal[0] + 1, 2 * layout.goal[1] + 1] == GOAL
        assert layout.goal != layout.start and len(neighbours(grid, layout.goal)) == 1


def test_same_seed_same_layout_and_wad_bytes():
    a, b = generate_layout(5, 123), generate_layout(5, 123)
    assert np.array_equal(a.grid, b.grid) and (a.start, a.goal, a.angle) == (b.start, b.goal, b.angle)
    pool = load_pool(5, "train")
    assert build_wad(pool) == build_wad(pool)
    assert pool.checksum() == load_pool(5, "train").checksum()


@pytest.mark.parametrize("size", [5, 9])
def test_train_and_heldout_pools_share_no_layout_goal_pair(size):
    train, heldout = load_pool(size, "train"), load_pool(size, "heldout")
    assert len(train) == len(heldout) == 1000
    train_keys = {train[i].key() for i in range(len(train))}
    heldout_keys = {heldout[i].key() for i in range(len(heldout))}
    assert len(train_keys) == len(heldout_keys) == 1000
    assert not train_keys & heldout_keys


def test_bad_maze_settings_are_rejected():
    from rl2_lightning.envs import make_trial_env

    with pytest.raises(ValueError, match="maze size=7"):
        make_trial_env("maze", 1, 2, size=7)
    with pytest.raises(ValueError, match="turn_degrees must be in"):
        make_trial_env("maze", 1, 2, size=5, turn_degrees=200)


@pytest.mark.maze
def test_the_maze_tuning_set_is_the_training_pool_in_order():
    """Hyperparameters are chosen on mazes training draws from: task_set="tuning" plays the training
    pool's layouts in order, never the held-out pool's."""
    from rl2_lightning.envs import make_trial_env

    env = make_trial_env("maze", 2, 2, size=5, task_set="tuning")
    try:
        sim = env.base_env.simulator
        assert sim.pool_name == "train"
        env.reset()
        assert sim.layout.tolist() == [0, 1]  # the first layouts of the pool, in order
    finally:
        env.close()


def test_wad_is_built_on_first_use_verified_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    import hashlib

    import rl2_lightning.envs.maze.layout as layout_mod
    from rl2_lightning.envs.maze.layout import read_checksums
    from rl2_lightning.envs.maze.wad import ensure_wad

    pool = load_pool(5, "heldout")
    monkeypatch.setattr(layout_mod, "MAZE_DIR", tmp_path)  # build into a fresh directory
    path = ensure_wad(pool)
    assert path.parent == tmp_path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == read_checksums()[path.name]
    path.write_bytes(b"corrupt")
    assert ensure_wad(pool).read_bytes() == build_wad(pool)


# ---------------------------------------------------------------------------------------------- engine


def cell_center(layout, cell):
    rows = layout.grid.shape[0]
    return np.array(block_to_map(2 * cell[0] + 1.5, 2 * cell[1] + 1.5, rows))


def scripted_action(sim, i, targets):
    """Turn towards the next cell centre of the path and walk; drop targets once reached."""
    x, y, angle = sim._pos[i]
    while len(targets) > 1 and np.hypot(*(targets[0] - (x, y))) < 24:
        targets.pop(0)
    dx, dy = targets[0] - (x, y)
    diff = (math.degrees(math.atan2(dy, dx)) - angle + 180) % 360 - 180
    if abs(diff) > 10:
        return 1 if diff > 0 else 2  # turn left (counter-clockwise) / right
    return 0


@pytest.fixture(scope="module")
def maze_env():
    vizdoom = pytest.importorskip("vizdoom")  # noqa: F841
    from rl2_lightning.envs import make_trial_env

    env = make_trial_env("maze", 1, 2, seed=0, size=5, task_set="heldout")
    yield env
    env.close()


@pytest.mark.maze
def test_shortest_path_agent_reaches_the_goal_for_plus_one(maze_env):
    base = maze_env.base_env
    sim = base.simulator
    maze_env.reset()
    layout = sim.pool[int(sim.layout[0])]
    targets = [cell_center(layout, c) for c in shortest_path(layout.grid, layout.start, layout.goal)[1:]]
    rewards = []
    for _ in range(sim.max_episode_steps):
        a = scripted_action(sim, 0, targets)
        reward, ended = sim.step(torch.tensor([a]))
        rewards.append(float(reward[0]))
        if ended[0]:
            break
    assert ended[0] and len(rewards) < sim.max_episode_steps
    assert rewards[-1] > 0.9  # +1 for the goal, less the tics of that step
    assert all(-0.05 < r < 0 for r in rewards[:-1])  # -0.01 per tic, -0.04 per step (+ bumps)


@pytest.mark.maze
def test_walking_into_a_wall_costs_the_bump_penalty(maze_env):
    sim = maze_env.base_env.simulator
    maze_env.reset()
    layout = sim.pool[int(sim.layout[0])]
    r, c = layout.start
    # turn until facing a wall of the start cell, then keep walking into it
    walls = [a for a, (dr, dc) in HEADINGS.items() if layout.grid[2 * r + 1 + dr, 2 * c + 1 + dc] == WALL]
    target = walls[0]
    for _ in range(60):
        diff = (target - sim._pos[0, 2] + 180) % 360 - 180
        if abs(diff) <= 6:
            break
        sim.step(torch.tensor([1 if diff > 0 else 2]))
    rewards = [float(sim.step(torch.tensor([0]))[0][0]) for _ in range(12)]
    assert rewards[-1] == pytest.approx(-0.04 - 0.001, abs=1e-4)
    assert min(rewards) < -0.0405


@pytest.mark.maze
def test_inner_episodes_keep_the_layout_and_a_new_trial_draws_a_new_one():
    pytest.importorskip("vizdoom")
    from rl2_lightning.envs import make_trial_env

    env = make_trial_env("maze", 1, 2, seed=0, size=5, horizon=3)
    sim = env.base_env.simulator
    td = env.reset()
    first = int(sim.layout[0])
    start_obs = td["observation"].clone()
    seen = []
    for _ in range(12):  # 2 trials of 2 episodes of 3 steps (turning in place never reaches a goal)
        td["action"] = torch.tensor([1])
        layout = int(sim.layout[0])  # the layout this step plays (a reset after it may change it)
        data, td = env.step_and_maybe_reset(td)
        seen.append((layout, bool(data["next", "episode_done"]), bool(data["next", "done"])))
        if len(seen) == 3:  # the second episode starts where the first did, on the same layout
            torch.testing.assert_close(data["next", "observation"], start_obs)
    assert [s[0] for s in seen[:6]] == [first] * 6
    assert [s[2] for s in seen] == [False] * 5 + [True] + [False] * 5 + [True]
    assert [s[1] for s in seen[:6]] == [False, False, True, False, False, True]
    assert seen[6][0] != first  # the next trial plays another layout
    env.close()


def engine_processes(ignore=()) -> list[int]:
    """PIDs of this process's ViZDoom engines, less those in ``ignore`` (other tests' engines)."""
    import glob
    import os

    kids = []
    for f in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        kids += [int(x) for x in open(f).read().split()]
    return [k for k in kids if open(f"/proc/{k}/comm").read().strip() == "vizdoom" and k not in ignore]


@pytest.mark.maze
def test_engines_run_from_a_scratch_directory_not_ours(tmp_path, monkeypatch):
    import os

    pytest.importorskip("vizdoom")
    from rl2_lightning.envs.maze.doom import MazeSimulator

    monkeypatch.chdir(tmp_path)

    def no_chdir(path):  # a process-wide chdir would race with other threads (data loading, logging)
        raise AssertionError(f"the process changed its working directory to {path}")

    monkeypatch.setattr(os, "chdir", no_chdir)
    others = set(engine_processes())
    sim = MazeSimulator(1, size=5)
    try:
        (pid,) = engine_processes(others)
        assert os.getcwd() == str(tmp_path) and os.listdir(tmp_path) == []  # nothing written here
        engine_cwd = os.readlink(f"/proc/{pid}/cwd")
        assert engine_cwd != str(tmp_path) and os.path.exists(os.path.join(engine_cwd, "_vizdoom"))
    finally:
        sim.close()
    assert os.listdir(tmp_path) == []  # not even when the engine closes
    monkeypatch.undo()


def _two_goals_then_another_map(sim) -> int:
    """Seeded random play of held-out map 1 until its goal, twice, then map 5 loaded: a history after which
    the engine's own exit crashes (signal 11 in its exit handlers). Returns the goals reached."""
    from tensordict import TensorDict

    from rl2_lightning.envs.maze.wad import map_name

    g = torch.Generator().manual_seed(0)
    sim.set_tasks(TensorDict({"layout": torch.tensor([1])}, batch_size=[1]), torch.ones(1, dtype=torch.bool))
    goals = 0
    for _ in range(2):
        sim.reset_episodes(torch.ones(1, dtype=torch.bool))
        for _ in range(250):
            reward, ended = sim.step(torch.randint(3, (1,), generator=g))
            if ended.item():
                goals += int(reward.item() > 0.5)
                break
    sim.games[0].set_doom_map(map_name(5))
    sim.games[0].new_episode()
    return goals


def _stderr_once_settled(capfd, seconds: float = 10.0) -> str:
    """What the engines wrote to stderr, read once a crash report (if any) had time to finish."""
    import time

    err, deadline = "", time.monotonic() + seconds
    while time.monotonic() < deadline:
        err += capfd.readouterr().err
        if "Fatal Error" in err and "killing process" in err:
            break
        time.sleep(0.5)
    return err


@pytest.mark.maze
def test_closing_the_games_kills_their_engines_so_an_engine_exit_crash_is_never_printed(capfd):
    import os

    pytest.importorskip("vizdoom")
    from rl2_lightning.envs.maze.doom import MazeSimulator, engine_pid

    others = set(engine_processes())
    # The engine's own exit (ViZDoom's plain close()) on this history: the report the simulator's close avoids.
    plain = MazeSimulator(1, size=5, pool="heldout", threads=1)
    assert _two_goals_then_another_map(plain) == 2
    plain.games[0].close()
    plain.close()
    if "Fatal Error" not in _stderr_once_settled(capfd):
        pytest.skip("this ViZDoom build exits cleanly after this history; nothing to avoid")

    sim = MazeSimulator(1, size=5, pool="heldout", threads=1)
    assert _two_goals_then_another_map(sim) == 2
    pid = engine_pid(sim.games[0])
    assert engine_processes(others) == [pid]  # found by its instance id among this process's children
    sim.close()
    assert engine_processes(others) == [] and not os.path.exists(f"/proc/{pid}")  # killed and reaped
    err = _stderr_once_settled(capfd, seconds=3.0)
    assert "Fatal Error" not in err and "signal 11" not in err, err


@pytest.mark.maze
def test_a_killed_engine_is_restarted_and_the_batch_collected_again():
    pytest.importorskip("vizdoom")
    import os
    import signal

    from rl2_lightning.datamodule import TrialBatches, TrialDataModule
    from rl2_lightning.envs import make_trial_env
    from rl2_lightning.envs.trial import EngineRestarted
    from rl2_lightning.envs.maze.doom import MazeSimulator

    others = set(engine_processes())
    env = make_trial_env("maze", 1, 1, seed=0, size=5, horizon=4)
    sim = env.base_env.simulator
    before = engine_processes(others)
    assert len(before) == 1
    os.kill(before[0], signal.SIGKILL)
    with pytest.raises(EngineRestarted):  # noticed at the next call into the engine
        env.rand_step(env.reset())
    after = engine_processes(others)
    assert len(after) == 1 and after != before  # a new engine took its place
    reward, _ = sim.step(torch.tensor([0]))
    assert reward.item() < 0  # and it plays

    env.close()

    # Through the data module's dataset: the batch in flight is collected anew, nothing is lost.
    from functools import partial

    from rl2_lightning.envs import TrialEnvFactory

    factory = TrialEnvFactory(partial(MazeSimulator, size=5, horizon=4), episodes_per_trial=1, num_envs=1)
    dm = TrialDataModule(factory, seed=0, iterations_per_epoch=2)
    dm.setup()
    dm._make_collector()
    batches = iter(TrialBatches(dm, iterations=2))
    assert next(batches)["valid"].any()
    os.kill(engine_processes(others)[0], signal.SIGKILL)
    second = next(batches)  # the first try dies with the engine; the retry on new envs succeeds
    assert second.shape == (1, 4) and second["valid"].any()
    assert len(engine_processes(others)) == 1  # the dead engine's env was closed, one engine remains
    dm.teardown()
    assert engine_processes(others) == []


def all_engines() -> list[int]:
    """PIDs of every ViZDoom engine on the machine (also those of env worker processes, and orphans)."""
    import glob

    pids = []
    for f in glob.glob("/proc/[0-9]*/comm"):
        try:
            if open(f).read().strip() == "vizdoom":
                pids.append(int(f.split("/")[2]))
        except OSError:
            continue
    return sorted(pids)


@pytest.mark.slow  # ~16 s; engine restarts are also covered by the fault tests
@pytest.mark.maze
def test_worker_processes_survive_a_killed_engine_and_keep_their_random_streams():
    """env.workers=2: each worker's random streams are checkpointed; a killed engine costs a rebuild, not the run."""
    pytest.importorskip("vizdoom")
    import os
    import signal

    from functools import partial

    from rl2_lightning.datamodule import TrialBatches, TrialDataModule
    from rl2_lightning.envs import TrialEnvFactory
    from rl2_lightning.envs.maze.doom import MazeSimulator

    others = set(all_engines())
    factory = TrialEnvFactory(partial(MazeSimulator, size=5, horizon=4), episodes_per_trial=1, num_envs=2, workers=2)
    dm = TrialDataModule(factory, seed=0, iterations_per_epoch=3)
    dm.setup()
    dm._make_collector()
    try:
        assert dm.parallel
        state = dm.state_dict()
        assert len(state["workers"]) == 2  # one entry per worker, and they differ (seeded by worker index)
        assert not torch.equal(state["workers"][0]["tasks"], state["workers"][1]["tasks"])
        batches = iter(TrialBatches(dm, iterations=3))
        first = next(batches)
        dm.load_state_dict(state)  # back to the streams before the first batch: the same batch again
        dm.collector.shutdown(close_env=False)
        dm._make_collector()
        batches = iter(TrialBatches(dm, iterations=3))
        again = next(batches)
        assert torch.equal(first["observation"][:, 0], again["observation"][:, 0])  # the same mazes and starts
        engines = [p for p in all_engines() if p not in others]
        assert len(engines) == 2
        os.kill(engines[0], signal.SIGKILL)
        after_kill = dm.state_dict()
        second = next(batches)  # the worker dies with its engine; new workers collect the batch
        assert second.shape == (2, 4) and second["valid"].any()
        replay_state = dm.state_dict()
        assert all(
            not torch.equal(a["tasks"], b["tasks"]) for a, b in zip(after_kill["workers"], replay_state["workers"])
        )  # the streams went on past the re-collected batch
        assert len([p for p in all_engines() if p not in others]) == 2
    finally:
        dm.teardown()
    import time

    for _ in range(50):  # engines of closed workers exit shortly after
        if not [p for p in all_engines() if p not in others]:
            break
        time.sleep(0.1)
    assert [p for p in all_engines() if p not in others] == []


@pytest.mark.maze
def test_the_thread_pool_steps_the_games_exactly_as_in_turn():
    """Stepping the games on threads changes nothing: same mazes and actions, same frames, rewards, ends."""
    pytest.importorskip("vizdoom")
    from rl2_lightning.envs.maze.doom import MazeSimulator

    actions = torch.randint(3, (40, 3), generator=torch.Generator().manual_seed(0))
    runs = []
    for threads in (1, 3):
        sim = MazeSimulator(3, size=5, pool="heldout", horizon=15, threads=threads)
        assert (sim._pool is None) == (threads == 1)
        everyone = torch.ones(3, dtype=torch.bool)
        sim.set_tasks(sim.task_set()[:3], everyone)
        sim.reset_episodes(everyone)
        out = []
        for a in actions:
            reward, ended = sim.step(a)
            out.append((sim.observation(), reward, ended, torch.as_tensor(sim._pos.copy())))
            if ended.any():
                sim.reset_episodes(ended)
        sim.close()
        runs.append(out)
    ends = 0
    for (o1, r1, e1, p1), (o2, r2, e2, p2) in zip(*runs):
        assert torch.equal(o1, o2) and torch.equal(r1, r2) and torch.equal(e1, e2) and torch.equal(p1, p2)
        ends += int(e1.sum())
    assert ends >= 3  # the horizon of 15 steps ended episodes along the way (resets went through the pool too)


def test_downsample_is_the_4x4_block_mean_rounded_to_uint8():
    from rl2_lightning.envs.maze.doom import downsample, downsample_float

    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    mean = frame.reshape(30, 4, 40, 4, 3).mean(axis=(1, 3)).transpose(2, 0, 1)
    out = downsample(frame)
    assert out.shape == (3, 30, 40) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.floor(mean + 0.5))  # the block mean, rounded half up
    exact = downsample_float(frame)  # the float observation the env produced before uint8
    assert exact.dtype == np.float32
    np.testing.assert_allclose(exact, mean / 127.5 - 1, atol=1e-6)
    assert downsample(np.zeros_like(frame)).max() == 0 and downsample(np.full_like(frame, 255)).min() == 255


def test_uint8_frames_give_the_network_the_float_observation_within_half_a_level():
    """The encoder's input from uint8 frames is within 0.5/127.5 of the exact scaled block mean (the
    float observation of before), and a float frame holding those values gives the same output."""
    from rl2_lightning.envs.maze.doom import downsample, downsample_float
    from rl2_lightning.models.encoders import PixelInputEncoder

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (6, 120, 160, 3), dtype=np.uint8)
    as_bytes = torch.from_numpy(np.stack([downsample(f) for f in frames]))
    exact = torch.from_numpy(np.stack([downsample_float(f) for f in frames]))
    scaled = as_bytes.float() * (1 / 127.5) - 1.0
    assert (scaled - exact).abs().max() <= 0.5 / 127.5 + 1e-6
    assert (scaled - exact).abs().max() > 0  # rounding does change some pixels: the bound is what is promised
    torch.manual_seed(0)
    enc = PixelInputEncoder((3, 30, 40), 3, 32)
    extras = (torch.zeros(6, 3), torch.zeros(6, 1), torch.zeros(6, 1, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(enc(as_bytes, *extras), enc(scaled, *extras))
        # and the network's output moves by no more than the input's rounding allows
        assert (enc(as_bytes, *extras) - enc(exact, *extras)).abs().max() < 0.05


@pytest.mark.maze
@pytest.mark.parametrize("turn, frame_skip", [(15.0, 4), (30.0, 4), (15.0, 3)])
def test_a_delta_button_turn_rotates_by_the_configured_angle(turn, frame_skip):
    import vizdoom as vzd  # noqa: F401
    from rl2_lightning.envs.maze.doom import LEFT, RIGHT, MazeSimulator

    sim = MazeSimulator(1, size=5, threads=1, turn_degrees=turn, frame_skip=frame_skip)
    everyone = torch.ones(1, dtype=torch.bool)
    sim.set_tasks(sim.task_set()[:1], everyone)
    sim.reset_episodes(everyone)
    turned = []
    for a in [LEFT, LEFT, LEFT, RIGHT, RIGHT, LEFT]:  # from rest, held on, reversed: always the same angle
        before = sim.positions[0, 2]
        sim.step(torch.tensor([a]))
        turned.append((sim.positions[0, 2] - before + 180) % 360 - 180)
    sim.close()
    expected = [turn, turn, turn, -turn, -turn, turn]  # left is counter-clockwise: the angle grows
    np.testing.assert_allclose(turned, expected, atol=0.02)  # the engine's angle units: 360/65536 degrees a tic


def test_trial_media_draw_every_episode_path(tmp_path):
    from PIL import Image

    from rl2_lightning.envs.maze.render import EPISODE_COLORS, draw_map, save_trial_media

    layout = load_pool(5, "heldout")[0]
    start = cell_center(layout, layout.start)
    path = shortest_path(layout.grid, layout.start, layout.goal)
    walk = np.stack([cell_center(layout, cell) for cell in path[:-1]])
    positions = np.concatenate([walk, walk])
    episode_index = np.repeat([0, 1], len(walk))
    blank = draw_map(layout)
    img = draw_map(layout, [walk])
    assert (img != blank).any() and tuple(img[tuple(_px(start, layout))]) == EPISODE_COLORS[0]
    obs = np.zeros((len(positions), 3, 30, 40), dtype=np.float32)
    gif, png = save_trial_media(layout, obs, positions, episode_index, tmp_path / "trial")
    assert Image.open(gif).n_frames == len(positions)
    colors = {tuple(c) for c in np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)}
    assert EPISODE_COLORS[0] in colors and EPISODE_COLORS[1] in colors


def _px(xy, layout, block_px=12):
    height = layout.grid.shape[0] * block_px
    return int(round(height - xy[1] * block_px / BLOCK)), int(round(xy[0] * block_px / BLOCK))


@pytest.mark.maze
def test_record_trial_reports_positions_and_episode_indices(maze_env):
    from rl2_lightning.envs.maze.render import record_trial

    trial = record_trial(maze_env, max_steps=12)
    assert trial["observation"].shape == (12, 3, 30, 40) and trial["position"].shape == (12, 3)
    assert (trial["episode_index"] == 0).all() and trial["layout"] is not None
    assert np.abs(np.diff(trial["position"][:, :2], axis=0)).sum() > 0  # random actions move or turn


@pytest.mark.slow  # ~45 s: a whole maze evaluation
@pytest.mark.maze
def test_a_maze_evaluation_closes_its_engines_without_crash_reports(tmp_path):
    """The trained maze checkpoint plays a held-out maze (and records it) through the evaluation
    command: the engines are closed cleanly, with no ViZDoom "Fatal Error" block on stderr."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("vizdoom")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "rl2_lightning.evaluate", "conf=maze_5x5", "+recipe=maze",
         "ckpt=data/training/maze_5x5/last.ckpt", "callbacks.metatest.num_tasks=1",
         "callbacks.metatest.batch_size=1", f"out={tmp_path}"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Fatal Error" not in proc.stderr and "signal 11" not in proc.stderr
    assert (tmp_path / "trial_rl2.gif").is_file()
