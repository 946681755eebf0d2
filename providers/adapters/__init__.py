"""Adapters: one small module per upstream family that is not plain OpenAI-compatible.

A plain OpenAI-compatible provider needs no adapter code: a :class:`~providers.spec.ProviderSpec`
with ``adapter="openai"`` is enough.
"""

from __future__ import annotations

from .base import Adapter, OpenAICompatAdapter
from .huggingface import HFRouterAdapter
from .tgi import TGIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAICompatAdapter(),
    "huggingface": HFRouterAdapter(),
    "tgi": TGIAdapter(),
}

__all__ = ["ADAPTERS", "Adapter", "HFRouterAdapter", "OpenAICompatAdapter", "TGIAdapter"]
