"""Finite-horizon planning in tabular MDPs, batched over tasks (value iteration and UCRL2's extended VI).

Shapes: rewards ``R[B, S, A]``, transitions ``P[B, S, A, S]``; the result ``Q[B, H, S, A]`` holds the
action values with ``H - h`` steps to go at step ``h`` of an episode of ``H`` steps.
"""

from __future__ import annotations

import torch


def expected_next_value(P: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_s' P[b, s, a, s'] v[b, s']`` as one batched matrix product; ``[B, S, A]``."""
    B, S, A, _ = P.shape
    return torch.bmm(P.reshape(B, S * A, S), v.unsqueeze(-1)).view(B, S, A)


def value_iteration(R: torch.Tensor, P: torch.Tensor, horizon: int) -> torch.Tensor:
    """Optimal finite-horizon action values ``Q[B, horizon, S, A]`` of the MDPs ``(R, P)``."""
    B, S, A = R.shape
    Q = R.new_empty(B, horizon, S, A)
    v = R.new_zeros(B, S)
    for h in range(horizon - 1, -1, -1):
        Q[:, h] = R + expected_next_value(P, v)
        v = Q[:, h].max(-1).values
    return Q


def optimistic_transitions(P: torch.Tensor, slack: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The transition law within L1 distance ``slack`` of ``P`` that maximises the expected next value ``v``.

    ``P[B, S, A, S]``, ``slack[B, S, A]``, ``v[B, S]`` (Jaksch, Ortner & Auer 2010, Fig. 2): move up to
    ``slack / 2`` of mass onto the best next state, taking it from the worst next states first. Among
    equally valued states the one with the highest index counts as best (as NumPy's ``argsort`` in TabulaRL).
    """
    order = torch.sort(v, dim=-1, stable=True).indices.flip(-1)  # [B, S], best state first
    idx = order[:, None, None, :].expand_as(P)
    p = P.gather(-1, idx)
    best = (p[..., :1] + slack.unsqueeze(-1) / 2).clamp(max=1.0)
    rest = p[..., 1:]
    # keep the better of the other states as long as mass is left: room before each is 1 - best - (mass above)
    above = rest.cumsum(-1) - rest
    rest = torch.minimum(rest, (1.0 - best - above).clamp(min=0.0))
    return torch.zeros_like(P).scatter_(-1, idx, torch.cat([best, rest], -1))


def extended_value_iteration(
    R: torch.Tensor,
    P: torch.Tensor,
    r_slack: torch.Tensor,
    p_slack: torch.Tensor,
    horizon: int,
    accumulate: bool = False,
) -> torch.Tensor:
    """Finite-horizon extended value iteration (UCRL2): optimal ``Q`` of the most optimistic MDP in the
    confidence set ``|r - R| <= r_slack``, ``||p - P||_1 <= p_slack`` (per state-action).

    ``accumulate=True`` reproduces TabulaRL's ``compute_qVals_EVI``, which edits the MAP transition row
    in place: each backward step starts from the previous step's optimistic row instead of ``P``, so the
    shifts add up over the horizon (except where a row became one-hot: TabulaRL then builds a new array
    and leaves the row as it was). At the last step all next values are 0 and the shift goes to the
    highest-index state; later steps carry it on.
    """
    B, S, A = R.shape
    Q = R.new_empty(B, horizon, S, A)
    v = R.new_zeros(B, S)
    for h in range(horizon - 1, -1, -1):
        p_opt = optimistic_transitions(P, p_slack, v)
        if accumulate:  # the row TabulaRL's next (earlier) step starts from
            top = torch.sort(v, dim=-1, stable=True).indices[:, -1]  # [B], ties: the highest index
            best = P.gather(-1, top[:, None, None, None].expand(B, S, A, 1)).squeeze(-1)
            next_P = torch.where((best + p_slack / 2 > 1).unsqueeze(-1), P, p_opt)
        Q[:, h] = R + r_slack + expected_next_value(p_opt, v)
        v = Q[:, h].max(-1).values
        if accumulate:
            P = next_P
    return Q
