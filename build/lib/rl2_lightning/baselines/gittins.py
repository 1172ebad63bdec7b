"""Gittins indices of Bernoulli arms with Beta posteriors, by calibration (retirement) dynamic programming.

For a discount ``gamma`` and a retirement reward ``lam`` per step, the value of an arm whose posterior is
Beta(a, b) solves ``V(a, b) = max(lam / (1 - gamma), p + gamma * (p V(a+1, b) + (1-p) V(a, b+1)))`` with
``p = a / (a + b)``; the Gittins index of (a, b) is the ``lam`` at which retiring and pulling are equally good
(Gittins, Glazebrook & Weber 2011, §8.4 "calibration"). The recursion is truncated at ``a + b = depth``
where the posterior is nearly certain and ``V = max(lam, p) / (1 - gamma)``.

Instead of one bisection per state we solve the recursion for a whole grid of ``lam`` at once (one
backward sweep over the anti-diagonals ``a + b = const``, batched over the grid) and carry ``dV/dlam``
along. The continuation advantage ``C(lam) = Q_pull(lam) - lam / (1 - gamma)`` is convex, decreasing and
piecewise linear in ``lam``; its root is the index. The tangents at the two grid points that bracket the
root give it exactly when at most one kink lies between them (and a lower bound within one grid step
otherwise), so a 512-point grid gives indices to ~1e-6.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from rl2_lightning.resources import data_dir, writable_dir

CACHE_DIR = data_dir() / "baselines"


def default_depth(max_pulls: int, gamma: float, tol: float = 1e-4, cap: int = 1000) -> int:
    """Truncation depth ``a + b`` for a table covering ``max_pulls``: beyond it ``gamma**extra < tol``."""
    extra = math.ceil(math.log(tol) / math.log(gamma)) if gamma > 0 else 1
    return max_pulls + 2 + min(extra, cap)


def _tangent_root(lam, c, slope):
    """Root of the tangent line through (lam, c) with ``slope`` (< 0)."""
    return lam - c / slope


def compute_gittins_table(
    max_pulls: int, gamma: float, depth: int | None = None, grid_size: int = 512
) -> torch.Tensor:
    """Gittins indices ``table[s, f]`` of an arm with ``s`` successes and ``f`` failures under a Beta(1, 1) prior.

    Covers ``s + f <= max_pulls`` (other entries are NaN); float64 ``[max_pulls + 1, max_pulls + 1]``.
    """
    if not 0 < gamma < 1:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    depth = default_depth(max_pulls, gamma) if depth is None else int(depth)
    if depth < max_pulls + 2:
        raise ValueError(f"depth={depth} must be >= max_pulls + 2 = {max_pulls + 2}")
    dt = torch.float64
    lam = torch.linspace(0.0, 1.0, grid_size, dtype=dt).unsqueeze(1)  # [G, 1]
    retire = lam / (1 - gamma)
    table = torch.full((max_pulls + 1, max_pulls + 1), float("nan"), dtype=dt)
    # Diagonal n = a + b holds states a = 1 .. n-1 (b = n - a).
    a = torch.arange(1, depth, dtype=dt)
    p = a / depth
    value = torch.maximum(lam, p) / (1 - gamma)  # [G, depth - 1]
    dvalue = (lam >= p).to(dt).expand_as(value) / (1 - gamma)
    for n in range(depth - 1, 1, -1):
        a = torch.arange(1, n, dtype=dt)
        p = a / n
        # successor (a+1, b) sits at position a in diagonal n+1, (a, b+1) at a-1
        q_pull = p + gamma * (p * value[:, 1:] + (1 - p) * value[:, :-1])
        dq_pull = gamma * (p * dvalue[:, 1:] + (1 - p) * dvalue[:, :-1])
        pull = q_pull > retire
        value = torch.where(pull, q_pull, retire.expand_as(q_pull))
        dvalue = torch.where(pull, dq_pull, torch.full_like(dq_pull, 1 / (1 - gamma)))
        if n - 2 <= max_pulls:
            c = q_pull - retire  # decreasing in lam
            slope = dq_pull - 1 / (1 - gamma)
            i = (c > 0).sum(0).clamp(1, grid_size - 1) - 1  # last grid point with c > 0
            cols = torch.arange(n - 1)
            root_lo = _tangent_root(lam[i, 0], c[i, cols], slope[i, cols])
            root_hi = _tangent_root(lam[i + 1, 0], c[i + 1, cols], slope[i + 1, cols])
            index = torch.maximum(root_lo, root_hi).clamp(lam[i, 0], lam[i + 1, 0])
            s = (a - 1).long()
            table[s, n - 2 - s] = index
    return table


#: every cached table covers at least this many pulls, so one file per discount serves n = 10, 100, 500
MIN_CACHED_PULLS = 500


@functools.lru_cache(maxsize=32)
def gittins_table(max_pulls: int, gamma: float, cache_dir: Path | None = CACHE_DIR) -> torch.Tensor:
    """:func:`compute_gittins_table` for ``s + f <= max_pulls``, cached in memory and under ``data/baselines/``.

    Tables are built for ``max(max_pulls, MIN_CACHED_PULLS)`` pulls and stored as the float32 triangle
    ``s + f <= pulls``; the file is a pure function of (pulls, gamma). It is written atomically, and a
    file that does not load as such a triangle (truncated, corrupt) is rebuilt, with a warning.
    """
    pulls = max(int(max_pulls), MIN_CACHED_PULLS)
    s, f = torch.meshgrid(torch.arange(pulls + 1), torch.arange(pulls + 1), indexing="ij")
    keep = s + f <= pulls
    path = None if cache_dir is None else Path(cache_dir) / f"gittins_n{pulls}_g{gamma:g}.pt"
    if path is not None and not path.exists() and Path(cache_dir) == CACHE_DIR:
        path = writable_dir("baselines") / path.name  # built here, or in the user's cache if installed read-only
    cached = _read_cached(path, int(keep.sum())) if path is not None and path.exists() else None
    if cached is not None:
        table = torch.full((pulls + 1, pulls + 1), float("nan"), dtype=torch.float64)
        table[keep] = cached.to(torch.float64)
    else:
        table = compute_gittins_table(pulls, gamma)
        if path is not None:
            import io

            from rl2_lightning.checkpoints import write_atomically

            buffer = io.BytesIO()
            torch.save(table[keep].to(torch.float32).clone(), buffer)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, buffer.getvalue())
    return table[: max_pulls + 1, : max_pulls + 1]


def _read_cached(path: Path, size: int) -> torch.Tensor | None:
    """A cached triangle of ``size`` finite indices in [0, 1], or ``None`` (with a warning) if the file is bad."""
    import warnings

    try:
        values = torch.load(path, weights_only=True)
        if isinstance(values, torch.Tensor) and values.shape == (size,) and bool(((values >= 0) & (values <= 1)).all()):
            return values
    except Exception:  # noqa: BLE001 - any failure means the cache is unusable: rebuild it
        pass
    warnings.warn(f"the Gittins cache {path} is corrupt; rebuilding it", stacklevel=3)
    return None


def _diagonal_values(n: int, depth: int, gamma: float, lam: float) -> torch.Tensor:
    """Retirement-problem values ``V(a, n - a)``, ``a = 1 .. n-1``, by backward induction from ``depth``."""
    aa = torch.arange(1, depth, dtype=torch.float64)
    value = torch.clamp(aa / depth, min=lam) / (1 - gamma)
    for m in range(depth - 1, n - 1, -1):
        aa = torch.arange(1, m, dtype=torch.float64)
        p = aa / m
        value = torch.clamp(p + gamma * (p * value[1:] + (1 - p) * value[:-1]), min=lam / (1 - gamma))
    return value


def gittins_index_bisection(a: int, b: int, gamma: float, depth: int, iters: int = 40) -> float:
    """Index of one state Beta(a, b) by plain bisection on ``lam`` (a slow, independent reference for tests)."""
    lo, hi = 0.0, 1.0
    p = a / (a + b)
    for _ in range(iters):
        lam = (lo + hi) / 2
        value_next = _diagonal_values(a + b + 1, depth, gamma, lam)  # index a-1 holds (a, b+1), a holds (a+1, b)
        q_pull = p + gamma * (p * value_next[a] + (1 - p) * value_next[a - 1]).item()
        lo, hi = (lam, hi) if q_pull > lam / (1 - gamma) else (lo, lam)
    return (lo + hi) / 2
