"""Search spaces as typed data: what a tuner may change in a config, and over which values.

Each component declares a ``SEARCH_SPACE`` beside its config dataclass (``SASRecConfig``,
``ALSConfig``, …): a mapping of config field → :class:`Float`, :class:`Int`, :class:`Categorical`
or :class:`Fixed`. The entries are plain frozen dataclasses, so this floor needs no tuning library;
``retrieval.tuning`` turns them into Optuna suggestions. :func:`check_space` ties a space to its
config, so a renamed field fails at import time instead of in the middle of a search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Float:
    """A real value in [low, high]; ``log``: sampled on a log scale (learning rates, penalties)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"Float({self.low}, {self.high}, log={self.log}): need 0 < low < high")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


@dataclass(frozen=True)
class Int:
    """An integer in [low, high] (both included), on a grid of ``step`` or on a log scale."""

    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high or self.step < 1 or (self.log and self.step != 1):
            raise ValueError(
                f"Int({self.low}, {self.high}, step={self.step}, log={self.log}): need low < high, "
                "step >= 1, and step 1 on a log scale"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"Int({self.low}, {self.high}, log=True): a log scale needs low > 0")

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class Categorical:
    """One of a few values (JSON scalars: they are saved in ``tuned.json``)."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) < 2:
            raise ValueError(f"Categorical{self.choices}: give at least two choices (or Fixed)")

    def contains(self, value: Any) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class Fixed:
    """A value every trial sets, e.g. "use the searched context length as is"."""

    value: Any

    def contains(self, value: Any) -> bool:
        return value == self.value


Param = Float | Int | Categorical | Fixed
#: Config field → the values a tuner may give it.
SearchSpace = Mapping[str, Param]


def check_space(space: SearchSpace, config_cls: type, default: Any | None = None) -> SearchSpace:
    """``space`` itself, after checking that it names fields of ``config_cls`` and, when a
    ``default`` config is given, that each searched range holds the default's value (the tuner
    starts each search from the defaults).

    Raises:
        ValueError: a field the config does not have, or a default outside its range.
    """
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(space) - known)
    if unknown:
        raise ValueError(
            f"search space names {unknown}, which {config_cls.__name__} does not have; "
            f"its fields: {sorted(known)}"
        )
    if default is not None:
        for name, param in space.items():
            value = getattr(default, name)
            if not isinstance(param, Fixed) and not param.contains(value):
                raise ValueError(
                    f"{config_cls.__name__}.{name} = {value!r} lies outside its search space "
                    f"{param}: widen the space or change the default"
                )
    return space
