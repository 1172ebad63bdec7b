"""Components from config: a ``_target_`` node is checked against its target's signature, then built.

Every part of the application (env, model, memory, algorithm, optimizer, callbacks, logger, trainer) is
a ``_target_`` node whose keys are the constructor's argument names. :func:`check` types such a node by
the constructor itself: an unknown key, a value of the wrong type, an unknown ``Enum`` value or a
number outside the :class:`Range` annotated beside the argument fails in one line naming the key, before
anything is built. So a new component is one class and one yaml file; its schema is its signature.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
_PLAIN = (int, float, bool, str)


@dataclass(frozen=True)
class Range:
    """Bounds of a numeric argument, written beside it: ``lr: Annotated[float, Range(0, None, low_open=True)]``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def check(self, key: str, value: Any) -> None:
        """Raise ``ValueError`` naming ``key`` if ``value`` lies outside the bounds (``None`` passes)."""
        if value is None:
            return
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        if below or above:
            raise ValueError(f"{key}={value!r} is not allowed; it must be {self.describe()}")

    def describe(self) -> str:
        """``in [0, 1]``, ``> 0``, ``>= 1``."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low}, {self.high}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"<= {self.high}"


def locate(path: str) -> Any:
    """The object a ``_target_`` names (one-line error when it does not exist)."""
    from hydra.utils import get_object

    try:
        return get_object(path)
    except Exception as err:  # noqa: BLE001 - ImportError, AttributeError, Hydra's wrapping of both
        raise ValueError(f"_target_: {path} cannot be imported ({type(err).__name__})") from None


def _omegaconf_type(hint: Any) -> Any:
    """The closest type OmegaConf can validate (plain values, Enums, their Optional); ``Any`` otherwise."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _omegaconf_type(typing.get_args(hint)[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            inner = _omegaconf_type(args[0])
            return Any if inner is Any else typing.Optional[inner]
        return Any
    if hint in _PLAIN or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return hint
    return Any


def _ranges(hint: Any) -> list[Range]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":  # Optional[Annotated[...]], X | None
        return [r for a in typing.get_args(hint) for r in _ranges(a)]
    if typing.get_origin(hint) is typing.Annotated:
        return [m for m in typing.get_args(hint)[1:] if isinstance(m, Range)]
    return []


def signature_of(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """A callable's parameters by name, their resolved type hints, and whether it takes any ``**kwargs``.

    A class whose ``__init__`` passes ``**kwargs`` on to its base's also takes the base's arguments
    (``PPO(clip_epsilon, ..., **common)`` takes ``TrialAlgorithm``'s ``gamma``, ``lmbda``, ...): they are
    gathered along the method resolution order until an ``__init__`` without ``**kwargs``.
    """
    owners = [c for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    var_kw = True
    for owner in owners:
        fn = owner.__init__ if inspect.isclass(owner) else owner
        try:
            own = dict(inspect.signature(fn).parameters)
        except (TypeError, ValueError):  # a builtin without a signature: accept any argument
            return params, hints, True
        if inspect.isclass(owner):
            own.pop(next(iter(own)), None)  # self
        try:
            own_hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # noqa: BLE001 - unresolvable annotations: check names only
            own_hints = {}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in own.values())
        for name, param in own.items():
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL) and name not in params:
                params[name] = param
                hints.setdefault(name, own_hints.get(name, Any))
        if not var_kw:
            break
    return params, hints, var_kw


def check(node: DictConfig, key: str) -> None:
    """Check a ``_target_`` node (and the ``_target_`` nodes inside it) against the constructors' signatures.

    Raises ``ValueError`` naming the full key for an unknown argument, a wrong type or ``Enum`` value,
    or a number outside its :class:`Range`.
    """
    target = locate(node["_target_"])
    params, hints, var_kw = signature_of(target)
    fields, values, bounds = [], {}, []
    for name in node:
        name = str(name)
        if name in _HYDRA_KEYS:
            continue
        full = f"{key}.{name}"
        if name not in params and not var_kw:
            allowed = ", ".join(k for k in params if k != "self")
            raise ValueError(f"{full} is not an argument of {node['_target_']}; it takes: {allowed}")
        child = node._get_node(name)
        if isinstance(child, DictConfig) and "_target_" in child:
            check(child, full)
            continue
        if OmegaConf.is_missing(node, name) or name not in params:
            continue
        value = node[name]
        hint = hints.get(name, Any)
        fields.append((name, _omegaconf_type(hint), dataclasses.field(default=MISSING)))
        values[name] = value
        bounds += [(full, name, bound) for bound in _ranges(hint)]
    if not fields:
        return
    schema = dataclasses.make_dataclass("Schema", fields)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), values)
    except OmegaConfBaseException as err:
        bad = getattr(err, "key", None) or getattr(err, "full_key", "")
        raise ValueError(f"{key}.{bad}: {err.msg.splitlines()[0]}") from None
    for full, name, bound in bounds:  # on the typed values (ints as floats, Enums as members)
        bound.check(full, typed[name])


def check_all(cfg: DictConfig) -> None:
    """:func:`check` every top-level ``_target_`` node of a composed config, and the ones in lists/dicts of
    them one level down (``callbacks``)."""
    for name in cfg:
        if name == "hydra":  # Hydra's own node (sweepers, launchers), present with return_hydra_config
            continue
        child = cfg._get_node(name)
        if isinstance(child, DictConfig):
            if "_target_" in child:
                check(child, str(name))
            else:
                for sub in child:
                    node = child._get_node(sub)
                    if isinstance(node, DictConfig) and "_target_" in node:
                        check(node, f"{name}.{sub}")

