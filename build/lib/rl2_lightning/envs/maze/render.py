"""Seeing a maze trial: a top-down map with the agent's paths, and a GIF of a played trial.

Pure NumPy + Pillow (Pillow comes with matplotlib). Used by the evaluation command and the
meta-test callback: :func:`record_trial` plays one trial, :func:`save_trial_media` writes
``<stem>.gif`` (first-person view beside the map with the path so far) and ``<stem>_paths.png``
(the paths of every episode of the trial, one colour per episode), and :func:`tensorboard_gif` makes
the same animation a TensorBoard summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rl2_lightning.envs.maze.layout import GOAL, WALL, Layout
from rl2_lightning.envs.maze.wad import BLOCK

COLORS = {"floor": (235, 235, 235), "wall": (40, 40, 40), "goal": (220, 30, 30), "start": (40, 120, 220)}
# One colour per episode of a trial (cycled past five).
EPISODE_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75)]


def draw_map(layout: Layout, paths: list[np.ndarray] = (), block_px: int = 12) -> np.ndarray:
    """Top-down RGB image (uint8 ``[H, W, 3]``) of ``layout`` with ``paths`` drawn on it.

    Each path is an array ``[k, 2]`` of player positions ``(x, y)`` in map units; path ``e`` is drawn
    in ``EPISODE_COLORS[e]``, shifted by ``e * block_px // 6`` pixels so that an episode retracing
    an earlier one stays visible, and ends in a dot.
    """
    grid = layout.grid
    img = np.empty((*grid.shape, 3), dtype=np.uint8)
    img[:] = COLORS["floor"]
    img[grid == WALL] = COLORS["wall"]
    img[grid == GOAL] = COLORS["goal"]
    sr, sc = layout.start
    img[2 * sr + 1, 2 * sc + 1] = COLORS["start"]
    img = img.repeat(block_px, 0).repeat(block_px, 1)
    scale = block_px / BLOCK
    height = img.shape[0]
    for e, path in enumerate(paths):
        path = np.asarray(path, dtype=np.float64).reshape(-1, 2)
        if len(path) == 0:
            continue
        color = EPISODE_COLORS[e % len(EPISODE_COLORS)]
        px = np.stack([path[:, 0] * scale, height - path[:, 1] * scale], -1)  # map y points north
        px += e * max(1, block_px // 6)  # a small shift per episode keeps retraced paths visible
        for a, b in zip(px[:-1], px[1:]):
            n = int(np.ceil(np.abs(b - a).max())) + 1
            pts = np.linspace(a, b, n).round().astype(int)
            _plot(img, pts, color, 1)
        _plot(img, px[-1:].round().astype(int), color, max(2, block_px // 4))
    return img


def _plot(img: np.ndarray, pts: np.ndarray, color, radius: int) -> None:
    h, w = img.shape[:2]
    for dx in range(-radius + 1, radius):
        for dy in range(-radius + 1, radius):
            x = np.clip(pts[:, 0] + dx, 0, w - 1)
            y = np.clip(pts[:, 1] + dy, 0, h - 1)
            img[y, x] = color


def observation_to_image(obs: np.ndarray | torch.Tensor, height: int) -> np.ndarray:
    """A ``[3, 30, 40]`` observation (uint8, or float in [-1, 1]) as RGB uint8, enlarged to ``height`` pixels."""
    obs = torch.as_tensor(obs).detach().cpu().numpy()
    if np.issubdtype(obs.dtype, np.floating):
        obs = ((obs + 1.0) * 127.5).clip(0, 255)
    img = obs.transpose(1, 2, 0).astype(np.uint8)
    k = max(1, height // img.shape[0])
    return img.repeat(k, 0).repeat(k, 1)


def episode_paths(positions: np.ndarray, episode_index: np.ndarray) -> list[np.ndarray]:
    """Split per-step positions ``[T, >=2]`` into one ``[k, 2]`` path per episode index."""
    positions, episode_index = np.asarray(positions), np.asarray(episode_index).reshape(-1)
    count = int(episode_index.max()) + 1 if len(episode_index) else 0
    return [positions[episode_index == e, :2] for e in range(count)]


def trial_frames(
    layout: Layout,
    observations: np.ndarray | torch.Tensor,
    positions: np.ndarray,
    episode_index: np.ndarray,
    max_frames: int | None = None,
) -> list[np.ndarray]:
    """One RGB frame per step (every ``ceil(T / max_frames)``-th step when capped, always the last):
    the first-person view beside the map with the current episode's path so far."""
    positions, episode_index = np.asarray(positions), np.asarray(episode_index).reshape(-1)
    T = len(positions)
    stride = max(1, -(-T // max_frames)) if max_frames else 1
    steps = sorted(set(range(0, T, stride)) | {T - 1}) if T else []
    frames = []
    for t in steps:
        e = int(episode_index[t])
        so_far = [np.empty((0, 2))] * e + [positions[: t + 1][episode_index[: t + 1] == e, :2]]
        top = draw_map(layout, so_far)
        view = observation_to_image(observations[t], top.shape[0])
        canvas = np.full((max(top.shape[0], view.shape[0]), top.shape[1] + view.shape[1] + 4, 3), 255, np.uint8)
        canvas[: view.shape[0], : view.shape[1]] = view
        canvas[: top.shape[0], view.shape[1] + 4 :] = top
        frames.append(canvas)
    return frames


def gif_bytes(frames: list[np.ndarray], fps: int = 15) -> bytes:
    """An endlessly looping animated GIF of RGB ``frames``."""
    import io

    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def save_trial_media(
    layout: Layout,
    observations: np.ndarray | torch.Tensor,
    positions: np.ndarray,
    episode_index: np.ndarray,
    stem: str | Path,
    fps: int = 15,
) -> tuple[Path, Path]:
    """Write ``<stem>.gif`` (view beside map, path so far) and ``<stem>_paths.png`` (all episodes).

    ``observations`` ``[T, 3, 30, 40]``, ``positions`` ``[T, >=2]`` (x, y in map units) and
    ``episode_index`` ``[T]`` are per step of one trial.
    """
    from PIL import Image

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    positions, episode_index = np.asarray(positions), np.asarray(episode_index).reshape(-1)
    png = stem.with_name(stem.name + "_paths.png")
    Image.fromarray(draw_map(layout, episode_paths(positions, episode_index))).save(png)
    gif = stem.with_suffix(".gif")
    gif.write_bytes(gif_bytes(trial_frames(layout, observations, positions, episode_index), fps))
    return gif, png


def tensorboard_gif(tag: str, frames: list[np.ndarray], fps: int = 15):
    """A TensorBoard ``Summary`` holding an animated GIF (shown, playing, in the Images tab).

    This is the summary ``SummaryWriter.add_video`` writes, built with Pillow instead of moviepy.
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    h, w = frames[0].shape[:2]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    return Summary(value=[Summary.Value(tag=tag, image=image)])


def record_trial(env, policy=None, max_steps: int | None = None) -> dict[str, np.ndarray]:
    """Play one trial of env 0 of a maze trial env (``TrialEnv`` or a transformed one).

    ``policy`` maps the env's TensorDict to one with ``"action"`` (random actions when ``None``).
    Returns per-step ``observation`` ``[T, 3, 30, 40]`` (what the policy saw), ``position`` ``[T, 3]``
    (x, y, angle before the action), ``episode_index`` ``[T]``, ``reward`` ``[T]``, and ``layout``.
    """
    from torchrl.envs.utils import step_mdp

    base = getattr(env, "base_env", env)
    sim = base.simulator
    steps = max_steps or sim.max_episode_steps * base.episodes_per_trial
    out = {"observation": [], "position": [], "episode_index": [], "reward": []}
    td = env.reset()
    layout = sim.pool[int(sim.layout[0])]
    with torch.no_grad():
        for _ in range(steps):
            td = policy(td) if policy is not None else env.rand_action(td)
            out["observation"].append(td["observation"][0].cpu().numpy())
            out["position"].append(sim.positions[0])
            out["episode_index"].append(int(td["episode_index"][0]))
            td = env.step(td)
            out["reward"].append(float(td["next", "reward"][0]))
            if td["next", "done"][0].item() or td["next", "episode_index"][0].item() >= base.episodes_per_trial:
                break
            td = step_mdp(td)
    result = {k: np.stack(v) if k != "episode_index" else np.array(v) for k, v in out.items()}
    result["layout"] = layout
    return result
