"""A queue-style asynchronous upstream, shaped like fal.ai's queue API.

``POST {prefix}/{model}`` enqueues a job and answers ``{"request_id", "status_url", "response_url"}``;
``GET .../requests/{id}/status`` answers ``IN_QUEUE`` / ``IN_PROGRESS`` a few times, then ``COMPLETED``;
``GET .../requests/{id}`` answers the result (here: an OpenAI-shaped embedding list).
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from .base import FakeUpstream, Route


class QueuedUpstream(FakeUpstream):
    family = "queued"

    def __init__(self, *, prefix: str = "") -> None:
        super().__init__(prefix=prefix)
        self.pending_polls = 2  # status answers before COMPLETED
        self.fail_status_with: int | None = None  # the status route fails like this once the job is queued
        self._ids = itertools.count(1)
        self.jobs: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        return [
            ("POST", "/{org}/{name}", self._submit, True),
            ("GET", "/{org}/{name}/requests/{id}/status", self._status, True),
            ("GET", "/{org}/{name}/requests/{id}", self._result, True),
        ]

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        job = str(next(self._ids))
        base = f"{self.url}/{request.match_info['org']}/{request.match_info['name']}/requests/{job}"
        self.jobs[job] = {"inputs": body["input"], "polls": 0}
        return self.respond(
            {"request_id": job, "status": "IN_QUEUE", "status_url": f"{base}/status", "response_url": base},
            status=202,
        )

    async def _status(self, request: web.Request) -> web.StreamResponse:
        if self.fail_status_with is not None:
            return self.server_error(self.fail_status_with)
        job = self.jobs[request.match_info["id"]]
        job["polls"] += 1
        base = str(request.url).removesuffix("/status")
        if job["polls"] <= self.pending_polls:
            state = "IN_QUEUE" if job["polls"] == 1 else "IN_PROGRESS"
            return self.respond({"status": state, "status_url": str(request.url), "response_url": base})
        return self.respond({"status": "COMPLETED", "response_url": base})

    async def _result(self, request: web.Request) -> web.StreamResponse:
        job = self.jobs[request.match_info["id"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(job["inputs"])
        ]
        tokens = sum(len(t.split()) for t in job["inputs"])
        return self.respond(
            {"object": "list", "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )
