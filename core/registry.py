"""One registry pattern for everything with variants (architectures, losses, samplers,
optimisers, schedules, CAM methods, dataset formats).

Keys are lowercase and stable because they are stored in run JSON. Duplicate names raise;
unknown names raise a ``ValueError`` listing the valid ones.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from core.errors import ChestLabError

T = TypeVar("T")


class UnknownNameError(ChestLabError, ValueError):
    """An unknown registry key; the message lists the valid ones."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name != name.lower() or not name:
            raise ValueError(f"{self.kind} names are lowercase and non-empty, got {name!r}")
        if name in self._items:
            raise ValueError(f"duplicate {self.kind} {name!r}")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        def wrap(item: T) -> T:
            return self.add(name, item)

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(self._items) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
