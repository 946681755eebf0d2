"""Signatures written once: a sync function and its async twin take the same documented arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def same_arguments_as(spec: Callable[P, Any]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Give a function ``spec``'s signature: for type checkers and IDEs (through ``P``) and at run time
    (``inspect.signature``, ``help()``). The sync and async twins share one written-once signature."""

    def apply(fn: Callable[..., R]) -> Callable[P, R]:
        fn.__signature__ = inspect.signature(spec).replace(return_annotation=inspect.signature(fn).return_annotation)  # type: ignore[attr-defined]
        return fn

    return apply
