"""Memories of an RL² agent: what it carries from step to step within a trial.

Every memory is a TensorDict module built as
``Cls(input_size, hidden_size, in_key, out_key, name, max_steps, **own_hyperparameters)``: it reads
``in_key`` (``[..., input_size]``), ``is_init`` and its own state keys (named after ``name``,
``"actor"`` or ``"critic"``) and writes ``out_key`` (``[..., hidden_size]``) and its next state.
``max_steps`` is the longest sequence it sees between two ``is_init`` resets in training.

By default a memory runs one step at a time (``[B]``, as collectors and ``env.rollout`` call it);
under :class:`torchrl.modules.set_recurrent_mode` it runs over whole rows (``[B, T]``), starting
afresh at ``t=0`` and wherever ``is_init`` is set. ``make_tensordict_primers()`` lists the primers
to append to the env so that the step state travels from step to step.

``make_tensordict_primer()`` (singular) keeps TorchRL's meaning, one primer or no such method, so
that :func:`torchrl.modules.utils.get_primers_from_module` still works on an agent.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torch import nn
from torchrl.data import Unbounded
from torchrl.envs import TensorDictPrimer
from torchrl.modules import GRU, GRUModule, LSTMModule, recurrent_mode


class GRUMemory(GRUModule):
    """TorchRL's ``GRUModule``; state ``recurrent_state_{name}``. ``max_steps`` is unused.

    Its parameters are ``gru.weight_ih_l0`` ... as in a plain ``GRUModule``; other ``GRUModule``
    arguments (``recurrent_backend``, ``python_based``, ...) pass through.
    """

    def __init__(
        self, input_size: int, hidden_size: int, in_key: str, out_key: str, name: str, max_steps: int,
        num_layers: int = 1, **gru_kwargs,
    ):
        state = f"recurrent_state_{name}"
        super().__init__(
            input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
            in_keys=[in_key, state], out_keys=[out_key, ("next", state)], **gru_kwargs,
        )
        self.max_steps = max_steps

    def make_tensordict_primers(self) -> list[TensorDictPrimer]:  # noqa: D102
        return [self.make_tensordict_primer()]


def norm_relu_step(
    h: torch.Tensor, x_r: torch.Tensor, x_z: torch.Tensor, x_n: torch.Tensor, mask: torch.Tensor | None,
    weight_hh: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor, eps: float, keep_bias: float,
) -> torch.Tensor:
    """One step of :class:`NormReLUGRU` from the input's normalised gate pre-activations ``x_r, x_z, x_n``
    (``[B, H]``): the state's paths (one GEMM, a LayerNorm per gate block: ``norm_weight``/``norm_bias``
    are ``[3, H]``) and the gates. Where ``mask`` (``[B, 1]``) is False the state is kept."""
    size = h.shape[-1]
    h_r, h_z, h_n = (
        F.layer_norm(g, (size,), norm_weight[k], norm_bias[k], eps)
        for k, g in enumerate(F.linear(h, weight_hh).chunk(3, -1))
    )
    reset = torch.sigmoid(x_r + h_r)
    keep = torch.sigmoid(x_z + h_z + keep_bias)
    candidate = torch.relu(x_n + reset * h_n)
    new = candidate + keep * (h - candidate)
    return new if mask is None else torch.where(mask, new, h)


#: ``torch.compile``-d :func:`norm_relu_step` per backend, shared by every cell (a module holds only the name)
_COMPILED_STEPS: dict[str, object] = {}


def compiled_norm_relu_step(backend: str):
    """:func:`norm_relu_step` compiled with ``torch.compile(backend=backend)`` (built once per process)."""
    if backend not in _COMPILED_STEPS:
        _COMPILED_STEPS[backend] = torch.compile(norm_relu_step, backend=backend)
    return _COMPILED_STEPS[backend]


def check_compile_backend(compile: bool | str) -> str | None:
    """``compile`` as a backend name (``True``: ``"inductor"``; ``False``/``None``: no compilation), refused
    in one line if torch does not know it."""
    if compile is None or compile is False:
        return None
    backend = "inductor" if compile is True else str(compile)
    import torch._dynamo

    if backend not in torch._dynamo.list_backends(exclude_tags=()):  # the debugging backends are accepted too
        raise ValueError(f"model.memory.compile={compile!r} is not a torch.compile backend; use true, false or one of "
                         f"{', '.join(sorted(torch._dynamo.list_backends()))}")
    return backend


class NormReLUGRU(GRU):
    """A one-layer GRU with the references' cell (lucaslingle/pytorch_rl2; the RL² authors' cell has the
    ReLU candidate): LayerNorm on the input's and the state's gate pre-activations, a ReLU candidate
    instead of tanh, and a bias on the update gate so that the cell starts out keeping its state.

    TorchRL's python-based :class:`~torchrl.modules.GRU` (one layer, ``batch_first``) with its time loop
    replaced (:meth:`_gru`):

        r = σ(LN_x(W_ir x)_r + LN_h(W_hr h)_r),  z = σ(LN_x(W_iz x)_z + LN_h(W_hz h)_z + keep_bias)
        n = relu(LN_x(W_in x)_n + r ⊙ LN_h(W_hn h)_n),  h' = (1 − z) ⊙ n + z ⊙ h

    ``keep_bias=1`` is the references' update-gate bias of −1, written for this convention (theirs mixes
    ``(1 − z) h + z n``). LayerNorm supplies the gates' shifts, so the linear maps have no bias.

    ``compile``: run each step (:func:`norm_relu_step`) through ``torch.compile`` (``True``: inductor, or a
    backend's name), which fuses the step's dozen element-wise and normalisation kernels. The step is
    Python-driven, so on a GPU its cost is the kernels it launches, not arithmetic; on a CPU core the
    arithmetic dominates and compiling does not pay (``benchmarks/cell_throughput.py --compile``).
    """

    def __init__(self, input_size: int, hidden_size: int, keep_bias: float = 1.0, compile: bool | str = False):
        super().__init__(input_size, hidden_size, num_layers=1, bias=False, batch_first=True)
        self.norm_x = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(3))
        self.norm_h = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(3))
        self.keep_bias = float(keep_bias)
        self.compile_backend = check_compile_backend(compile)

    @staticmethod
    def _norm3(gates: torch.Tensor, norms: nn.ModuleList) -> list[torch.Tensor]:
        """Each of the three ``hidden_size`` blocks of ``gates`` (``[..., 3H]``) through its own LayerNorm."""
        return [norm(g) for norm, g in zip(norms, gates.chunk(3, -1))]

    def _gru(self, x, hx, mask=None):
        """TorchRL's time loop (``batch_first``; ``mask`` freezes the state of trials that have ended), with
        the input's paths taken out of it: one GEMM and the input's LayerNorms over every step at once, so that
        a step (:func:`norm_relu_step`) runs only the state's paths. Same arithmetic as stepping the cell one
        input at a time."""
        # unbind (not x[:, t]): its backward writes every step's gradient once, a slice's a full-size zero tensor
        x_r, x_z, x_n = (g.unbind(1) for g in self._norm3(F.linear(x, self.weight_ih_l0), self.norm_x))
        masks = mask.unsqueeze(-1).unbind(1) if mask is not None else [None] * len(x_r)
        step = norm_relu_step if self.compile_backend is None else compiled_norm_relu_step(self.compile_backend)
        norm_weight = torch.stack([n.weight for n in self.norm_h])
        norm_bias = torch.stack([n.bias for n in self.norm_h])
        eps = self.norm_h[0].eps
        h = hx[0]
        outputs = []
        for t, m in enumerate(masks):
            h = step(h, x_r[t], x_z[t], x_n[t], m, self.weight_hh_l0, norm_weight, norm_bias, eps, self.keep_bias)
            outputs.append(h)
        return torch.stack(outputs, 1), h.unsqueeze(0)


class NormReLUGRUMemory(GRUModule):
    """:class:`GRUMemory` with the :class:`NormReLUGRU` cell (``model=gru_norm_relu``); state
    ``recurrent_state_{name}``. Python-stepped over time: slower than ``GRUMemory``'s fused kernel;
    ``compile`` (``model.memory.compile``) compiles its step (:class:`NormReLUGRU`)."""

    def __init__(
        self, input_size: int, hidden_size: int, in_key: str, out_key: str, name: str, max_steps: int,
        keep_bias: float = 1.0, compile: bool | str = False,
    ):
        state = f"recurrent_state_{name}"
        super().__init__(gru=NormReLUGRU(input_size, hidden_size, keep_bias, compile),
                         in_keys=[in_key, state], out_keys=[out_key, ("next", state)])
        self.max_steps = max_steps

    def make_tensordict_primers(self) -> list[TensorDictPrimer]:  # noqa: D102
        return [self.make_tensordict_primer()]


class LSTMMemory(LSTMModule):
    """TorchRL's ``LSTMModule``; states ``recurrent_state_h_{name}``, ``recurrent_state_c_{name}``.

    ``max_steps`` is unused; other ``LSTMModule`` arguments pass through.
    """

    def __init__(
        self, input_size: int, hidden_size: int, in_key: str, out_key: str, name: str, max_steps: int,
        num_layers: int = 1, **lstm_kwargs,
    ):
        h, c = f"recurrent_state_h_{name}", f"recurrent_state_c_{name}"
        super().__init__(
            input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
            in_keys=[in_key, h, c], out_keys=[out_key, ("next", h), ("next", c)], **lstm_kwargs,
        )
        self.max_steps = max_steps

    def make_tensordict_primers(self) -> list[TensorDictPrimer]:  # noqa: D102
        return [self.make_tensordict_primer()]


class MLPMemory(TensorDictModule):
    """No memory (the ablation): ``ReLU(Linear(input_size, hidden_size))`` on each step alone.

    Parameters ``module.0.weight`` / ``module.0.bias``, as the former ``architecture="mlp"``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, in_key: str, out_key: str, name: str, max_steps: int
    ):
        net = nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU())
        super().__init__(net, in_keys=[in_key], out_keys=[out_key])
        self.max_steps = max_steps

    def make_tensordict_primers(self) -> list[TensorDictPrimer]:  # noqa: D102
        return []


class _Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, size: int, num_heads: int, mlp_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(size)
        self.qkv = nn.Linear(size, 3 * size)
        self.proj = nn.Linear(size, size)
        self.norm2 = nn.LayerNorm(size)
        inner = mlp_ratio * size
        self.mlp = nn.Sequential(nn.Linear(size, inner), nn.ReLU(), nn.Linear(inner, size))

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[N, L, size]`` -> query, key, value, each ``[N, heads, L, size / heads]``."""
        n, length, _ = x.shape
        qkv = self.qkv(self.norm1(x)).view(n, length, 3, self.num_heads, -1)
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Residual of the attention output ``[N, heads, L, d]``, then the MLP's."""
        n, _, length, _ = attended.shape
        x = x + self.proj(attended.transpose(1, 2).reshape(n, length, -1))
        return x + self.mlp(self.norm2(x))


@dataclass
class _KVCache:
    """Keys and values of the steps seen so far, ``[layers, N, heads, capacity, d]``, and ``steps``
    (``[N]``, steps seen per row since its last ``is_init``)."""

    keys: torch.Tensor
    values: torch.Tensor
    steps: torch.Tensor

    @property
    def batch(self) -> int:  # noqa: D102
        return self.steps.shape[0]

    def grow(self, length: int, max_steps: int) -> None:
        """Make room for ``length`` steps (the capacity doubles, stopping at ``max_steps`` if enough)."""
        capacity = self.keys.shape[3]
        if length <= capacity:
            return
        new = max(2 * capacity, length)
        if length <= max_steps:
            new = min(new, max_steps)
        pad = (0, 0, 0, new - capacity)
        self.keys, self.values = F.pad(self.keys, pad), F.pad(self.values, pad)


class TransformerMemory(TensorDictModuleBase):
    """Causal transformer over the steps since the last ``is_init``.

    ``Linear(input_size, hidden_size)`` plus a sinusoidal encoding of the position since the last
    ``is_init``, then ``num_layers`` pre-LN blocks (``num_heads``-head causal self-attention and a
    ReLU MLP of ``mlp_ratio * hidden_size`` units) and a final LayerNorm. ``max_steps`` sizes the
    encoding table; longer sequences (a meta-test on longer trials than trained on) still run, with
    a warning: their later positions were never seen in training.

    Whole rows (recurrent mode): each step attends to the steps of its own segment (from the row's
    start or its last ``is_init``) up to itself.

    One step at a time: the keys and values of the earlier steps are kept in a cache held by this
    module (a plain attribute: never in ``state_dict``, never in the tensordicts, so a collector's
    batch holds no O(T) state per step), and each step costs O(t). A row's cache restarts where
    ``is_init`` is set; the whole cache is rebuilt when the batch size changes, which requires every
    row to be ``is_init`` then (as at the start of every ``env.rollout`` and of every collector
    iteration with ``reset_at_each_iter``). The constraint: step calls on one instance form ONE
    stream, each call being the next step of the previous call's rows (or ``is_init``); a stream
    may switch batch (e.g. 256 collector envs, then 1000 meta-test envs) only at a full reset. The
    primer's ``memory_step_{name}`` (steps seen, one integer per row) lets each call check it
    continues the cache's stream, and raise instead of silently attending to another stream's
    steps (e.g. a shared trunk's critic run step by step after the actor). The cache is
    detached: no gradient flows through earlier steps in step mode (train in recurrent mode).
    """

    def __init__(
        self, input_size: int, hidden_size: int, in_key: str, out_key: str, name: str, max_steps: int,
        num_layers: int = 1, num_heads: int = 4, mlp_ratio: int = 4,
    ):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"TransformerMemory: hidden_size={hidden_size} is not a multiple of num_heads={num_heads}"
            )
        if max_steps is None or max_steps < 1:
            raise ValueError(f"TransformerMemory needs max_steps >= 1, got {max_steps}")
        self.max_steps, self.num_heads, self.head_size = int(max_steps), num_heads, hidden_size // num_heads
        self.step_key = f"memory_step_{name}"
        self.in_keys = [in_key, "is_init", self.step_key]
        self.out_keys = [out_key, ("next", self.step_key)]
        self.input = nn.Linear(input_size, hidden_size)
        self.blocks = nn.ModuleList(_Block(hidden_size, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        # Plain attributes, not buffers: neither in state_dict nor in the parameters that TorchRL
        # losses collect (which would save even a non-persistent buffer, sized by max_steps).
        self._table = _sinusoids(self.max_steps, hidden_size)
        self._cache: _KVCache | None = None
        self._warned = False

    def make_tensordict_primer(self) -> TensorDictPrimer:
        """The primer of ``memory_step_{name}`` (0 at every reset)."""
        return TensorDictPrimer({self.step_key: Unbounded(shape=(1,), dtype=torch.long)}, expand_specs=True)

    def make_tensordict_primers(self) -> list[TensorDictPrimer]:  # noqa: D102
        return [self.make_tensordict_primer()]

    def reset_cache(self) -> None:
        """Drop the step-mode cache (frees its memory; the next step call must be a full reset)."""
        self._cache = None

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:  # noqa: D102
        x = tensordict.get(self.in_keys[0])
        is_init = tensordict.get("is_init")
        if recurrent_mode():
            if tensordict.ndim == 0:
                raise ValueError("TransformerMemory in recurrent mode needs a time dim (the last batch dim)")
            steps = tensordict.shape[-1]
            out, seen = self._whole_rows(x.reshape(-1, steps, x.shape[-1]), is_init.reshape(-1, steps))
        else:
            step = tensordict.get(self.step_key, None)
            out, seen = self._one_step(
                x.reshape(-1, x.shape[-1]), is_init.reshape(-1), None if step is None else step.reshape(-1)
            )
        tensordict.set(self.out_keys[0], out.reshape(*tensordict.shape, -1))
        tensordict.set(self.out_keys[1], seen.reshape(*tensordict.shape, 1))
        return tensordict

    def _encode(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Input projection plus the encoding of each step's position since its last ``is_init``."""
        needed, table = int(position.max()) + 1, self._table
        if needed > table.shape[0]:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"TransformerMemory({self.step_key}): {needed} steps since the last is_init, more than "
                    f"max_steps={self.max_steps}; positions beyond max_steps were never seen in training",
                    stacklevel=3,
                )
            table = _sinusoids(max(needed, 2 * table.shape[0]), table.shape[1])
        if table.device != x.device or table.dtype != x.dtype:
            table = table.to(x.device, x.dtype)
        self._table = table
        return self.input(x) + table[position]

    def _whole_rows(self, x: torch.Tensor, is_init: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, T, in]``, ``is_init [N, T]`` -> ``[N, T, hidden]`` and steps seen ``[N, T]``."""
        time = torch.arange(x.shape[1], device=x.device)
        start = torch.where(is_init, time, 0).cummax(-1).values  # the row's last is_init at or before t
        position = time - start
        segment = is_init.cumsum(-1)
        mask = (time[:, None] >= time[None, :]) & (segment[:, :, None] == segment[:, None, :])  # [N, T, T]
        h = self._encode(x, position)
        for block in self.blocks:
            q, k, v = block.qkv_heads(h)
            h = block.finish(h, F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None]))
        return self.norm(h), position + 1

    def _one_step(
        self, x: torch.Tensor, is_init: torch.Tensor, step: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, in]``, ``is_init [N]``, steps seen ``[N]`` (or None) -> ``[N, hidden]``, ``[N]``."""
        n = x.shape[0]
        cache = self._cache_for(n, is_init, x)
        if step is not None:
            going_on = ~is_init
            if not torch.equal(step[going_on], cache.steps[going_on]):
                raise RuntimeError(
                    f"TransformerMemory: the input's {self.step_key} differs from the cache's steps: "
                    "this call does not continue the previous step call's rows. Step calls on one memory "
                    "must form one stream (start each rollout with a reset; do not run a shared trunk's "
                    "critic step by step)"
                )
        position = torch.where(is_init, 0, cache.steps)
        length = int(position.max()) + 1
        cache.grow(length, self.max_steps)
        rows = torch.arange(n, device=x.device)
        visible = torch.arange(length, device=x.device) <= position[:, None]  # [N, L]
        h = self._encode(x, position).unsqueeze(1)  # [N, 1, hidden]
        for layer, block in enumerate(self.blocks):
            q, k, v = block.qkv_heads(h)
            cache.keys[layer][rows, :, position] = k[:, :, 0].detach().to(cache.keys.dtype)
            cache.values[layer][rows, :, position] = v[:, :, 0].detach().to(cache.values.dtype)
            keys, values = cache.keys[layer, :, :, :length], cache.values[layer, :, :, :length]
            if torch.is_grad_enabled():  # the cache changes in place at the next step
                keys, values = keys.clone(), values.clone()
            attended = F.scaled_dot_product_attention(
                q, keys.to(q.dtype), values.to(q.dtype), attn_mask=visible[:, None, None, :]
            )
            h = block.finish(h, attended)
        cache.steps = position + 1
        return self.norm(h[:, 0]), cache.steps.clone()

    def _cache_for(self, n: int, is_init: torch.Tensor, x: torch.Tensor) -> _KVCache:
        """The cache for ``n`` rows: kept if it holds ``n`` rows, else rebuilt (all rows ``is_init``)."""
        cache = self._cache
        if cache is None or cache.batch != n:
            if not bool(is_init.all()):
                held = "no cache" if cache is None else f"a cache of {cache.batch} rows"
                raise RuntimeError(
                    f"TransformerMemory holds {held} and got {n} rows, not all is_init: a new batch of rows "
                    "must start with a reset (is_init everywhere), as env.rollout and collectors with "
                    "reset_at_each_iter do"
                )
            shape = (len(self.blocks), n, self.num_heads, min(16, self.max_steps), self.head_size)
            dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
            zeros = torch.zeros(shape, device=x.device, dtype=dtype)
            steps = torch.zeros(n, dtype=torch.long, device=x.device)
            cache = self._cache = _KVCache(zeros, zeros.clone(), steps)
        elif cache.steps.device != x.device:  # the module moved between two steps
            cache.keys, cache.values, cache.steps = (
                t.to(x.device) for t in (cache.keys, cache.values, cache.steps)
            )
        return cache


def _sinusoids(length: int, size: int) -> torch.Tensor:
    """Sinusoidal position encodings ``[length, size]`` (sin on even, cos on odd features)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, size, 2, dtype=torch.float32) * (-math.log(10000.0) / size))
    table = torch.zeros(length, size + size % 2)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
    return table[:, :size]
