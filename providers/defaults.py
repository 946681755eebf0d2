"""Process-wide defaults made on first use (the registry, the client pool, the catalog, the Hub cache).

Example::

    _REGISTRY = ProcessDefault(Registry)
    def default_registry() -> Registry:
        return _REGISTRY.get()
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ProcessDefault(Generic[T]):
    """One object per process, made by ``make`` the first time it is asked for (once, under a lock)."""

    __slots__ = ("_lock", "_make", "_value")

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                value = self._value
                if value is None:
                    value = self._value = self._make()
        return value
