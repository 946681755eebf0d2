"""The Router's ``on_success`` / ``on_failure`` hooks: called after each attempt, sync or async, and never
allowed to change how the call ends."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from ..types import Attempt

Hook = Callable[[Attempt, BaseException | None], Any]


def call_hook(hook: Hook | None, record: Attempt, err: BaseException | None) -> None:
    if hook is None:
        return
    try:
        result = hook(record, err)
    except Exception:  # a broken hook must not change how the call ends
        log.exception("router hook %r raised; ignored", hook)
        return
    if inspect.isawaitable(result):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(_await(result))
        else:
            task = loop.create_task(_await(result))
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Task[Any]] = set()


async def _await(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("async router hook raised; ignored")


log = logging.getLogger("polyroute.router")
