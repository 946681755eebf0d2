"""Checks shared by the proxy's tests: what an OpenAI-compatible error answer must look like."""

from __future__ import annotations

from typing import Any

import httpx


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The ``error`` object of a JSON error answer with ``status``, which must name a message and a type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["message"] and error["type"]
    return error
