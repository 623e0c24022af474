"""Config values checked against the declarations of what they configure, before anything is loaded.

A setting says its type and range where it is declared: a dataclass field (`batch_size: Positive = 32`) or a
constructor's parameter (`temperature: PositiveFloat = 0.05`). `check_arguments` is the one checker: an unknown
key, a value of the wrong type or one out of range is one line naming the key, the value and what would work.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from retrieval_exp.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class AtLeast:
    """A range annotation: the value is >= `bound` (> with `exclusive`)."""

    bound: float
    exclusive: bool = False

    def holds(self, value: float) -> bool:
        return value > self.bound if self.exclusive else value >= self.bound

    def __str__(self) -> str:
        return f"{'>' if self.exclusive else '>='} {self.bound:g}"


@dataclass(frozen=True)
class AtMost:
    """A range annotation: the value is <= `bound` (< with `exclusive`)."""

    bound: float
    exclusive: bool = False

    def holds(self, value: float) -> bool:
        return value < self.bound if self.exclusive else value <= self.bound

    def __str__(self) -> str:
        return f"{'<' if self.exclusive else '<='} {self.bound:g}"


Positive = Annotated[int, AtLeast(1)]  # counts: steps, sizes, intervals
PositiveFloat = Annotated[float, AtLeast(0, exclusive=True)]  # rates, norms, temperatures
NonNegativeFloat = Annotated[float, AtLeast(0)]  # margins, weights
Share = Annotated[float, AtLeast(0, exclusive=True), AtMost(1, exclusive=True)]  # a part of a whole, not all of it

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def plain(node: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """A config mapping as plain Python containers (interpolations resolved unless `resolve` is False)."""
    return typing.cast(dict[str, Any], OmegaConf.to_container(node, resolve=resolve))


def build(cls: type[T], node: Mapping[str, Any], where: str) -> T:
    """`cls(**node)` once every value of `node` matches its declaration in `cls` (`where` is the node's config key)."""
    check_arguments(cls, node, where)
    return cls(**node)


def check_arguments(target: Callable[..., Any], node: Mapping[str, Any], where: str) -> None:
    """Every key of `node` (but Hydra's `_target_`, `_partial_`...) is a parameter of `target` (a class: of its
    constructor) and its value matches the parameter's annotation. Parameters of types no config value can have
    (tensors, modules, nested objects) are left to `target` itself."""
    declared = inspect.signature(target).parameters
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = {name for name, parameter in declared.items() if parameter.kind not in variadic}
    takes_any = len(parameters) < len(declared)
    hints = _hints(target)
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if key not in parameters and not takes_any:
            known = f"the settings are {', '.join(sorted(parameters))}" if parameters else "it takes none"
            raise UserError(f"{where}.{key} is not a setting of {where} ({target.__qualname__}): {known}")
        if key in hints:
            _check(f"{where}.{key}", value, hints[key])


def _hints(target: Callable[..., Any]) -> dict[str, Any]:
    """`target`'s parameter annotations, Annotated extras kept; none where they cannot be resolved."""
    try:
        declared = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]  # the class's own
        return typing.get_type_hints(declared, include_extras=True)
    except Exception:  # an annotation naming what its module does not import at run time
        return {}


def _ranges(hint: Any) -> tuple[Any, tuple[AtLeast | AtMost, ...]]:
    """`hint` without its Annotated wrapper, and the ranges the wrapper carried."""
    if typing.get_origin(hint) is not Annotated:
        return hint, ()
    inner, *extras = typing.get_args(hint)
    return inner, tuple(extra for extra in extras if isinstance(extra, AtLeast | AtMost))


def _check(key: str, value: Any, hint: Any) -> None:
    hint, outer = _ranges(hint)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in options
    simple = [_ranges(option) for option in options if _ranges(option)[0] in _NAMES]  # int, Positive, float...
    if value is None:
        if optional or not simple:
            return
        raise UserError(f"{key} cannot be null: give {_NAMES[simple[0][0]]}")
    if not simple or not isinstance(value, int | float | str) and len(simple) < len(options) - optional:
        return  # a type the checker does not know, or a list or mapping where the parameter also takes one
    matching = [ranges for kind, ranges in simple if _is(value, kind)]
    if not matching:
        null = " (or null)" if optional else ""
        raise UserError(f"{key}={value!r} is not {' or '.join(_NAMES[kind] for kind, _ in simple)}{null}")
    for bound in outer + matching[0]:
        if not bound.holds(value):
            raise UserError(f"{key}={value!r} is out of range: it must be {bound}")


def _is(value: Any, kind: Any) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
