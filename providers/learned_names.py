"""HF provider names learned from the Hub's per-model mapping (``inferenceProviderMapping``).

The HF router's catalog (``/v1/models``) lists the providers of chat models; the Hub mapping of one
repository lists every provider serving it, for any task, and is fresh where a catalog snapshot may be
stale. A model string naming a provider neither the built-in list nor the catalog knows is looked up there
once (cached with the mapping) before it is refused; a failed lookup (offline, unknown repository) leaves
the name unknown, and the refusal keeps its "did you mean".

Example::

    try:
        target = registry.resolve(model)
    except UnknownSubproviderError as err:
        learn_from_mapping(err, registry, transport)
"""

from __future__ import annotations

import os

from .errors import PolyrouteError
from .hub_mapping import default_hub_cache
from .registry import HF_TOKEN_ENV, Registry, UnknownSubproviderError
from .transport import AsyncTransport, SyncTransport


def _token() -> str | None:
    return next((os.environ[name] for name in HF_TOKEN_ENV if os.environ.get(name)), None)


def learn_from_mapping(err: UnknownSubproviderError, registry: Registry, transport: SyncTransport) -> None:
    """Teach ``registry`` the providers the Hub mapping of ``err``'s repository lists (sync)."""
    if err.family != "huggingface" or not err.repo:
        return
    try:
        mapping = default_hub_cache().mapping(transport, err.repo, _token())
    except PolyrouteError:
        return
    registry.learn_subproviders(err.family, mapping)


async def alearn_from_mapping(err: UnknownSubproviderError, registry: Registry, transport: AsyncTransport) -> None:
    """Async :func:`learn_from_mapping`."""
    if err.family != "huggingface" or not err.repo:
        return
    try:
        mapping = await default_hub_cache().amapping(transport, err.repo, _token())
    except PolyrouteError:
        return
    registry.learn_subproviders(err.family, mapping)
