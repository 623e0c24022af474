"""Config nodes built into typed dataclasses, each value checked against its field's declaration.

A field says its type and range where it is declared (`batch_size: Annotated[int, AtLeast(1)] = 32`), and
`build` is the one checker: a value of the wrong type or out of range is one line naming the key, the value and
what would work, before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

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


Positive = Annotated[int, AtLeast(1)]  # counts: steps, sizes, intervals
PositiveFloat = Annotated[float, AtLeast(0, exclusive=True)]  # rates, norms, temperatures

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def build(cls: type[T], node: Mapping[str, Any], where: str) -> T:
    """`cls(**node)` once every value of `node` matches its field in `cls` (`where` is the node's config key)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in node.items():
        if key not in fields:
            raise UserError(f"{where}.{key} is not a setting of {where}: the settings are {', '.join(sorted(fields))}")
        _check(f"{where}.{key}", value, hints[key])
    return cls(**node)


def _ranges(hint: Any) -> tuple[Any, tuple[AtLeast, ...]]:
    """`hint` without its Annotated wrapper, and the ranges the wrapper carried."""
    if typing.get_origin(hint) is not Annotated:
        return hint, ()
    inner, *extras = typing.get_args(hint)
    return inner, tuple(extra for extra in extras if isinstance(extra, AtLeast))


def _check(key: str, value: Any, hint: Any) -> None:
    hint, outer = _ranges(hint)
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in options
    kind, inner = _ranges(next(option for option in options if option is not type(None)))  # Positive | None
    ranges = outer + inner
    if value is None:
        if optional:
            return
        raise UserError(f"{key} cannot be null: give {_NAMES.get(kind, kind.__name__)}")
    if not _is(value, kind):
        null = " (or null)" if optional else ""
        raise UserError(f"{key}={value!r} is not {_NAMES.get(kind, kind.__name__)}{null}")
    for bound in ranges:
        if not bound.holds(value):
            raise UserError(f"{key}={value!r} is out of range: it must be {bound}")


def _is(value: Any, kind: Any) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
