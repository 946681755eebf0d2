"""The pipeline's poll step: an asynchronous upstream (a job queue) is one helper that says what to poll next.

The upstream is a local queue server shaped like fal.ai's (tests/upstreams/queued.py): submit, poll the
status URL until COMPLETED, fetch the result. The helper is registered on a family of its own through the
task table, as a provider module would be; everything else is the shared pipeline over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from providers.errors import InternalServerError
from providers.registry import Registry
from providers.spec import ProviderSpec, Target
from providers.tasks import PROVIDERS, Auth, EmbeddingsHelper, register_task
from providers.tasks.base import JSON_HEADERS, auth_headers
from providers.transport import HttpRequest, HttpResponse
from router import Budget, aembedding, embedding
from router.pricing.catalog import Catalog
from tests.upstreams.queued import QueuedUpstream


class QueuedEmbeddings(EmbeddingsHelper):
    """Embeddings from a job queue: submit to ``{base}/{model}``, poll the status URL, fetch the result."""

    poll_wait = (0.01, 0.05)

    def url(self, target: Target, upstream_model: str | None) -> str:
        return f"{target.api_base}/{target.model}"

    def payload(self, target: Target, inputs: Any, params: Any, upstream_model: str | None) -> Any:
        return {"input": inputs, **params}

    def poll(self, target: Target, response: HttpResponse, auth: Auth) -> HttpRequest | None:
        body = orjson.loads(response.content)
        if "data" in body:
            return None  # the result itself
        url = body["response_url"] if body.get("status") == "COMPLETED" else body["status_url"]
        return HttpRequest("GET", url, auth_headers(auth, JSON_HEADERS))


@pytest.fixture
def queued() -> Iterator[tuple[QueuedUpstream, Registry]]:
    register_task("queued-test", "embeddings", QueuedEmbeddings())
    try:
        with QueuedUpstream() as server:
            registry = Registry()
            registry.add(ProviderSpec("queued", server.url, adapter="queued-test", key_required=False))
            yield server, registry
    finally:
        PROVIDERS.pop("queued-test", None)


def _paths(server: QueuedUpstream) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests]


def test_a_queued_job_is_submitted_polled_and_fetched(queued: tuple[QueuedUpstream, Registry]) -> None:
    server, registry = queued
    r = embedding(model="queued/acme/embed-1", input=["one two", "three"], api_key="sk-queue", registry=registry)
    assert [d.embedding for d in r.data] == [[7.0, 1.0], [5.0, 1.0]]
    assert r.usage is not None and r.usage.prompt_tokens == 3 and r.meta.usage_estimated is False
    assert _paths(server) == [
        ("POST", "/acme/embed-1"),
        ("GET", "/acme/embed-1/requests/1/status"),
        ("GET", "/acme/embed-1/requests/1/status"),
        ("GET", "/acme/embed-1/requests/1/status"),
        ("GET", "/acme/embed-1/requests/1"),
    ]
    assert {r.token for r in server.requests} == {"sk-queue"}  # every poll is authenticated


def test_async_polling_does_the_same(queued: tuple[QueuedUpstream, Registry]) -> None:
    server, registry = queued
    server.pending_polls = 0
    r = asyncio.run(aembedding(model="queued/acme/embed-1", input="hi", api_key="sk-queue", registry=registry))
    assert [d.embedding for d in r.data] == [[2.0, 1.0]]
    assert [m for m, _ in _paths(server)] == ["POST", "GET", "GET"]


def test_a_job_lost_after_it_was_accepted_is_charged_in_doubt(queued: tuple[QueuedUpstream, Registry]) -> None:
    """The queue accepted the job (it may run and bill it): a failure while polling keeps the reservation
    as spent, and the error says what was charged."""
    server, registry = queued
    server.fail_status_with = 500
    server.failure_retry_after = None
    catalog = Catalog(cache_dir=False, registry=registry)
    catalog.set_price("queued/acme/embed-1", input_per_million=100, output_per_million=0)
    budget = Budget(1.0, name="queue")

    def embed() -> None:
        embedding(
            model="queued/acme/embed-1",
            input="hello",
            api_key="sk-q",
            registry=registry,
            catalog=catalog,
            budget=budget,
        )

    with pytest.raises(InternalServerError) as caught:
        embed()
    assert caught.value.charged_pico and caught.value.charged_pico > 0
    assert budget.spent_usd == pytest.approx(caught.value.charged_pico / 1e12) and budget.reserved_usd == 0
    # Refused before the queue accepted it: nothing is charged.
    server.fail_status_with = None
    server.fail_rate, server.failure_status = 1.0, 500
    before = budget.spent_usd
    with pytest.raises(InternalServerError):
        embed()
    assert budget.spent_usd == before and budget.reserved_usd == 0
