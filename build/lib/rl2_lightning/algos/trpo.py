"""TRPO over batches of whole trials, the algorithm of the RL² paper (Duan et al. 2016).

One update is one natural-gradient step of the policy on the whole batch, then a few epochs of the
critic regressed onto the GAE targets:

1. surrogate ``L(θ) = mean over valid steps of exp(log π_θ(a|h) - log π_old(a|h)) · A`` (+ entropy bonus);
2. its gradient ``g`` and the Fisher-vector product ``Fv = ∇(∇KL(π_old‖π_θ)·v) + damping·v``;
3. conjugate gradient for ``s ≈ F⁻¹g``, scaled to the trust region: ``β = sqrt(2·max_kl / sᵀFs)``;
4. backtracking line search on ``β·s``: the first fraction with ``KL ≤ max_kl`` and a surrogate gain
   ``> 0`` is kept, otherwise the old parameters are restored exactly;
5. the critic: ``critic_epochs`` x ``critic_minibatches`` minibatches of whole trials through the
   optimizer, with gradient clipping.

The maths are small pure functions (:func:`categorical_kl`, :func:`flat_grad`,
:func:`fisher_vector_product`, :func:`conjugate_gradient`, :func:`line_search`), tested on their own.

Over ranks (DDP), every rank holds its own batch; every mean over valid steps is a mean over *all*
ranks' valid steps (each rank divides its sum by the ranks' mean step count, then the values are
averaged), and every gradient, Fisher-vector product, surrogate and KL passes through
:meth:`UpdateContext.mean_over_ranks` before it is used. All ranks therefore run the same CG
iterations, take the same step and make the same line-search decision.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from tensordict import TensorDictBase
from torch import nn
from torchrl.modules import set_recurrent_mode

from rl2_lightning.algos.base import (
    NonNegative,
    Positive,
    PositiveInt,
    TrialAlgorithm,
    Unit,
    UpdateContext,
    minibatch_indices,
)

# ---------------------------------------------------------------------------------------------- maths


def categorical_kl(old_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """``KL(Cat(old) ‖ Cat(new))`` per step, over the last (action) dimension.

    Logits need not be normalised. Returns a tensor of the leading shape (``[B, T]`` for ``[B, T, A]``).

    >>> logits = torch.tensor([[0.0, 1.0, 2.0]])
    >>> categorical_kl(logits, logits + 5.0).abs().max() < 1e-6  # a shift does not change the policy
    tensor(True)
    """
    old = torch.log_softmax(old_logits, dim=-1)
    new = torch.log_softmax(new_logits, dim=-1)
    return (old.exp() * (old - new)).sum(-1)


def flat_grad(
    output: torch.Tensor,
    params: Sequence[torch.Tensor],
    retain_graph: bool = False,
    create_graph: bool = False,
) -> torch.Tensor:
    """The gradient of the scalar ``output`` w.r.t. ``params``, concatenated into one vector.

    Parameters that ``output`` does not depend on get zeros (so the vector always lines up with
    ``torch.nn.utils.parameters_to_vector(params)``). ``create_graph`` keeps the gradient
    differentiable, for second derivatives.
    """
    grads = torch.autograd.grad(
        output,
        list(params),
        retain_graph=retain_graph or create_graph,
        create_graph=create_graph,
        allow_unused=True,
    )
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def fisher_vector_product(
    mean_kl: torch.Tensor,
    params: Sequence[torch.Tensor],
    damping: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v ↦ reduce(∇(∇KL · v)) + damping · v``: the (damped) Fisher matrix of the policy times ``v``.

    ``mean_kl`` is ``KL(π_old ‖ π_θ)`` averaged over steps, evaluated at ``θ = θ_old`` with ``π_old``
    detached: its Hessian there is the Fisher information matrix. The first gradient is taken once
    (with a graph); each product is one more backward pass through it. ``reduce`` averages the
    product over ranks (identity on one process).
    """
    grad_kl = flat_grad(mean_kl, params, create_graph=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return reduce(flat_grad(grad_kl @ v.detach(), params, retain_graph=True)) + damping * v

    return fvp


def conjugate_gradient(
    fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int, residual_tol: float = 1e-10
) -> torch.Tensor:
    """An approximate solution ``x`` of ``A x = b`` for a symmetric positive-definite ``A`` given as
    the product ``fvp(v) = A v``, by at most ``iterations`` conjugate-gradient steps from ``x = 0``.

    Stops early once the squared residual ``‖b - A x‖²`` is at most ``residual_tol``. Exact (up to
    rounding) after ``n`` iterations for an ``n x n`` system.

    >>> A = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    >>> conjugate_gradient(lambda v: A @ v, torch.tensor([2.0, 2.0]), 2)
    tensor([1.0000, 0.5000])
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x
    p = b.clone()  # search direction
    rr = r @ r
    for _ in range(iterations):
        if float(rr) <= residual_tol:
            break
        ap = fvp(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trust_region_step(
    direction: torch.Tensor, fvp: Callable[[torch.Tensor], torch.Tensor], max_kl: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(β · direction, sᵀFs)`` with ``β = sqrt(2·max_kl / sᵀFs)``: the step along ``s = direction``
    whose quadratic model of the KL, ``½ (βs)ᵀF(βs)``, equals ``max_kl``.

    When ``sᵀFs`` is not positive (a zero gradient) the step is zero.
    """
    shs = direction @ fvp(direction)
    if not float(shs) > 0:
        return torch.zeros_like(direction), shs
    return torch.sqrt(2 * max_kl / shs) * direction, shs


def line_search(
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    full_step: torch.Tensor,
    baseline: torch.Tensor,
    max_kl: float,
    steps: int,
    backtrack: float,
) -> tuple[int, float]:
    """Backtracking line search for a trust-region step.

    Tries ``backtrack**i · full_step`` for ``i = 0 .. steps-1``; ``evaluate(step)`` returns the
    surrogate and the KL after that step. Returns ``(i, backtrack**i)`` for the first step whose KL is
    at most ``max_kl`` and whose surrogate exceeds ``baseline``, or ``(-1, 0.0)`` when none does (the
    caller then restores the old parameters). Non-finite values never pass.

    A surrogate peaking at a step of 1, a KL equal to the step's size: 4 is outside the region, 2 gains
    nothing, 1 is taken after two backtracks.

    >>> surrogate_and_kl = lambda step: (-(step - 1.0).abs().sum(), step.abs().sum())
    >>> full_step, baseline = torch.tensor([4.0]), torch.tensor(-1.0)
    >>> line_search(surrogate_and_kl, full_step, baseline, max_kl=2.0, steps=5, backtrack=0.5)
    (2, 0.25)
    """
    for i in range(steps):
        fraction = backtrack**i
        surrogate, kl = evaluate(fraction * full_step)
        if float(kl) <= max_kl and float(surrogate - baseline) > 0:
            return i, fraction
    return -1, 0.0


def set_flat_params(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy the vector ``flat`` into ``params`` in place (the inverse of ``parameters_to_vector``).

    Unlike ``torch.nn.utils.vector_to_parameters``, which rebinds each ``param.data`` to a view of
    ``flat``, this keeps every parameter's own storage: the GRU's flattened cuDNN weights, the
    optimizer's and DDP's references stay valid, and a later change of ``flat`` cannot leak in.
    """
    with torch.no_grad():
        offset = 0
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def masked_sum_over(x: torch.Tensor, valid: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``sum(x · valid) / count``: with ``count`` the ranks' mean number of valid steps, the mean over
    ranks of this is the mean of ``x`` over all ranks' valid steps (``x`` and ``valid`` are ``[B, T]``)."""
    return (x.reshape(valid.shape) * valid).sum() / count


def standardized(
    x: torch.Tensor, valid: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``x`` standardised with the mean and (unbiased) std of its valid steps over all ranks, 0 on
    padding (one collective: ``reduce`` averages ``[count, Σx, Σx²]`` over ranks). On one process this is
    :func:`~rl2_lightning.algos.base.normalized_advantage`."""
    x = x.reshape(valid.shape)
    mask = valid.to(x.dtype)
    count, total, squares = reduce(torch.stack([mask.sum(), (x * mask).sum(), (x * x * mask).sum()]))
    mean = total / count.clamp(min=1e-8)
    var = (squares / count.clamp(min=1e-8) - mean**2).clamp(min=0) * count / (count - 1).clamp(min=1e-8)
    return (x - mean) / (var.sqrt() + 1e-8) * mask


# ---------------------------------------------------------------------------------------------- TRPO


class TRPO(TrialAlgorithm):
    """Trust-region policy optimisation, one natural step per batch of whole trials (the RL² paper's).

    The policy is replayed by the recurrent actor over each whole trial; every mean is over the valid
    steps of the batch (padding after a trial's end excluded).

    Args (beside :class:`~rl2_lightning.algos.base.TrialAlgorithm`'s):
        actor_lr: unused: the policy moves by the natural step, not by the optimizer. Kept so that
            configs shared with PPO stay valid.
        critic_lr: the learning rate of the critic's optimizer (Adam from the module).
        max_kl: the trust region, ``KL(π_old ‖ π_new)`` averaged over valid steps.
        cg_iterations: conjugate-gradient iterations for ``F⁻¹g``.
        cg_damping: ``λ`` of the damped Fisher matrix ``F + λI``.
        line_search_steps: step fractions tried, ``line_search_backtrack**i`` for ``i < line_search_steps``.
        line_search_backtrack: the shrink factor between tries.
        critic_epochs, critic_minibatches: passes over the batch, and minibatches of whole trials each,
            for the critic's regression onto ``value_target``.
        max_grad_norm: gradient-norm clip of the critic's steps.
        entropy_coeff: entropy bonus added to the surrogate.
        normalize_advantage: standardise advantages over the batch's valid steps (all ranks').

    The optimizer holds only the critic's own parameters (:meth:`param_groups`); with a shared trunk
    (one encoder+GRU under both heads) that is the value head alone: the trunk is the policy's and
    moves only with the trust-region step, and the critic's gradients into it are dropped.
    """

    def __init__(
        self, actor: nn.Module, critic: nn.Module, max_kl: Positive = 0.01, cg_iterations: PositiveInt = 10,
        cg_damping: NonNegative = 0.01, line_search_steps: PositiveInt = 10, line_search_backtrack: Unit = 0.5,
        critic_epochs: PositiveInt = 4, critic_minibatches: PositiveInt = 4, max_grad_norm: Positive = 0.5,
        entropy_coeff: NonNegative = 0.0, normalize_advantage: bool = True, **common,
    ):
        common.setdefault("critic_lr", 1e-3)
        super().__init__(actor, critic, **common)
        self.max_kl, self.cg_iterations, self.cg_damping = max_kl, cg_iterations, cg_damping
        self.line_search_steps, self.line_search_backtrack = line_search_steps, line_search_backtrack
        self.critic_epochs, self.critic_minibatches = critic_epochs, critic_minibatches
        self.max_grad_norm, self.entropy_coeff = max_grad_norm, entropy_coeff
        self.normalize_advantage = normalize_advantage

    def policy_params(self) -> list[nn.Parameter]:
        """The parameters the trust-region step moves: all of the actor's (a shared trunk included)."""
        return [p for p in self.actor.parameters() if p.requires_grad]

    def critic_params(self) -> list[nn.Parameter]:
        """The critic's own parameters (not the actor's): what the optimizer fits."""
        seen = {id(p) for p in self.actor.parameters()}
        return [p for p in self.critic.parameters() if id(p) not in seen]

    def param_groups(self) -> list[dict]:
        """One group: the critic's own parameters at ``critic_lr`` (no optimizer moves the policy)."""
        return self.decay_groups("critic", self.critic_params(), self.critic_lr)

    # ------------------------------------------------------------------ the update
    def update(
        self, data: TensorDictBase, optimizer: torch.optim.Optimizer, ctx: UpdateContext
    ) -> dict[str, torch.Tensor]:
        """The trust-region policy step on the whole batch, then the critic's epochs; statistics by name.

        ``loss/objective``, ``train/entropy`` and ``train/approx_kl`` are of the policy after the step
        (the old policy when the step is rejected); ``train/line_search_steps`` counts the backtracks of
        the accepted step (-1: rejected); ``train/step_size`` is the accepted multiplier of the CG
        direction, ``β · backtrack**i`` (0 when rejected); ``train/surrogate_gain`` the surrogate's
        improvement; ``loss/critic`` and ``train/grad_norm_critic`` are averaged over the critic's steps.
        """
        policy = self._policy_step(data, ctx)
        critic = self._critic_epochs(data, optimizer, ctx)
        return {k: v.detach().reshape(()).to(torch.float32) for k, v in {**policy, **critic}.items()}

    def _device(self) -> torch.device:
        return next(self.actor.parameters()).device

    def _replay(self, data: TensorDictBase):
        """The actor's distribution at every step, replayed over whole trials from a zero state."""
        td = data.select(*self.actor.in_keys, "is_init", strict=False)
        with set_recurrent_mode(True), twice_differentiable_kernels(self.actor, self._device()):
            return self.actor.get_dist(td)

    def _policy_step(self, data: TensorDictBase, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        real = data["valid"].reshape(data.shape)
        valid = real.to(torch.float32)
        reduce = ctx.mean_over_ranks
        count = reduce(valid.sum()).clamp(min=1)  # the ranks' mean number of valid steps
        # padding's entries are replaced (not only masked): whatever they hold cannot reach a gradient
        advantage = torch.where(real, data["advantage"].reshape(data.shape), 0.0).detach()
        if self.normalize_advantage:
            advantage = standardized(advantage, valid, reduce)
        old_log_prob = torch.where(real, data["action_log_prob"].reshape(data.shape), 0.0).detach()
        action = data["action"]
        params = self.policy_params()

        def surrogate_of(dist) -> tuple[torch.Tensor, torch.Tensor]:
            ratio = torch.exp(dist.log_prob(action).reshape(data.shape) - old_log_prob)
            entropy = masked_sum_over(dist.entropy().reshape(data.shape), valid, count)
            surrogate = masked_sum_over(ratio * advantage, valid, count)
            if self.entropy_coeff > 0:
                surrogate = surrogate + self.entropy_coeff * entropy
            return surrogate, entropy

        dist = self._replay(data)
        # π_old: the current logits, detached (equal to the collected ``data["logits"]`` at θ_old, but
        # computed by the same replay, so that the KL and its gradient are exactly 0 there).
        old_logits = dist.logits.detach()
        surrogate, entropy = surrogate_of(dist)
        g = reduce(flat_grad(surrogate, params, retain_graph=True))
        baseline, baseline_entropy = reduce(torch.stack([surrogate.detach(), entropy.detach()]))
        grad_norm = g.norm()
        ctx.check_finite(baseline, grad_norm)

        mean_kl = masked_sum_over(categorical_kl(old_logits, dist.logits), valid, count)
        fvp = fisher_vector_product(mean_kl, params, self.cg_damping, reduce)
        direction = conjugate_gradient(fvp, g, self.cg_iterations)
        full_step, shs = trust_region_step(direction, fvp, self.max_kl)
        ctx.check_finite(shs, full_step.norm())
        del dist, surrogate, entropy, mean_kl, fvp  # free the graphs before the line search

        theta_old = torch.nn.utils.parameters_to_vector(params).detach().clone()
        after: dict[str, torch.Tensor] = {}

        def evaluate(step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            set_flat_params(params, theta_old + step)
            with torch.no_grad():
                new = self._replay(data)
                new_surrogate, new_entropy = surrogate_of(new)
                kl = masked_sum_over(categorical_kl(old_logits, new.logits), valid, count)
                values = reduce(torch.stack([new_surrogate, kl, new_entropy]))
                after["surrogate"], after["kl"], after["entropy"] = values
            return after["surrogate"], after["kl"]

        backtracks, fraction = -1, 0.0
        if float(shs) > 0:
            backtracks, fraction = line_search(
                evaluate, full_step, baseline, self.max_kl, self.line_search_steps, self.line_search_backtrack
            )
        zero = torch.zeros((), device=g.device)
        if backtracks < 0:
            set_flat_params(params, theta_old)  # exactly the old parameters
            after = {"surrogate": baseline, "kl": zero, "entropy": baseline_entropy}
        beta = torch.sqrt(2 * self.max_kl / shs) if float(shs) > 0 else zero
        return {
            "loss/objective": -after["surrogate"],
            "train/entropy": after["entropy"],
            "train/approx_kl": after["kl"],
            "train/line_search_steps": torch.tensor(float(backtracks), device=g.device),
            "train/step_size": beta * fraction,
            "train/surrogate_gain": after["surrogate"] - baseline,
            "train/grad_norm_actor": grad_norm,
        }

    def _critic_epochs(self, data: TensorDictBase, optimizer, ctx: UpdateContext) -> dict[str, torch.Tensor]:
        policy = list(self.actor.parameters())
        actor_ids = {id(p) for p in policy}
        losses, norms = [], []
        for _ in range(self.critic_epochs):
            # at most one minibatch per trial (every rank holds the same number of trials)
            for idx in minibatch_indices(data.shape[0], min(self.critic_minibatches, data.shape[0])):
                minibatch = data[idx.to(data.device)]
                real = minibatch["valid"].reshape(minibatch.shape)
                valid = real.to(torch.float32)
                count = ctx.mean_over_ranks(valid.sum()).clamp(min=1)
                td = minibatch.select(*self.critic.in_keys, "is_init", strict=False)
                with set_recurrent_mode(True):
                    value = self.critic(td)["state_value"].reshape(minibatch.shape)
                target = torch.where(real, minibatch["value_target"].reshape(minibatch.shape), 0.0).detach()
                loss = masked_sum_over((value - target) ** 2, valid, count)
                optimizer.zero_grad(set_to_none=True)
                ctx.backward(loss)
                for p in policy:  # a shared trunk is the policy's: the critic's gradient never moves it
                    p.grad = None
                params = [
                    p for group in optimizer.param_groups for p in group["params"]
                    if p.grad is not None and id(p) not in actor_ids
                ]
                ctx.average_gradients(params)
                norm = (
                    torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
                    if params
                    else torch.zeros((), device=loss.device)
                )
                # a non-finite loss on one rank makes the averaged gradient, so every rank's norm, non-finite
                ctx.check_finite(loss, norm)
                optimizer.step()
                losses.append(loss.detach())  # this rank's share: its mean over ranks is the batch's loss
                norms.append(norm)
        return {
            "loss/critic": torch.stack(losses).mean(),
            "train/grad_norm_critic": torch.stack(norms).mean(),
        }


@contextlib.contextmanager
def twice_differentiable_kernels(module: nn.Module, device: torch.device | str):
    """Run ``module`` with kernels that have a second derivative (the Fisher-vector product needs one).

    The fused attention kernels have none (on CPU too: the flash kernel's backward is not itself
    differentiable), so scaled-dot-product attention uses its math backend here. On CUDA, cuDNN's RNN
    kernels have none either: the module's RNNs (``nn.GRU``, ``nn.LSTM``) then run with cuDNN off,
    through ATen's native kernels (only while their own forward runs, so convolutions keep cuDNN).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if torch.device(device).type != "cuda":
        with sdpa_kernel([SDPBackend.MATH]):
            yield
        return

    saved: list[bool] = []

    def before(mod, args):
        saved.append(torch.backends.cudnn.enabled)
        torch.backends.cudnn.enabled = False

    def after(mod, args, output):
        torch.backends.cudnn.enabled = saved.pop()

    enabled = torch.backends.cudnn.enabled
    rnns = [m for m in module.modules() if isinstance(m, nn.RNNBase)]
    handles = [h for m in rnns for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        for handle in handles:
            handle.remove()
        torch.backends.cudnn.enabled = enabled


__all__ = [
    "TRPO",
    "categorical_kl",
    "conjugate_gradient",
    "fisher_vector_product",
    "flat_grad",
    "line_search",
    "set_flat_params",
    "standardized",
    "trust_region_step",
    "twice_differentiable_kernels",
]
