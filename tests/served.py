"""Fixtures that run a local upstream server for a scope (the run, a module) and stop it afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def server_fixture(name: str, server_cls: type, *, scope: str = "session", **kw: object) -> Any:
    """A fixture ``name``: one server of ``server_cls(**kw)`` for the ``scope``.

    Example::

        azure = server_fixture("azure", AzureUpstream, scope="module")
    """

    def served() -> Iterator[object]:
        server = server_cls(**kw).start()
        try:
            yield server
        finally:
            server.stop()

    return pytest.fixture(scope=scope, name=name)(served)  # type: ignore[call-overload]
