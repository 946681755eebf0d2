"""Hugging Face Inference Providers: the names the HF router knows, and their embedding routes.

Plain data. A provider segment in a model string is recognised because its name is here, not by
counting slashes. Chat never needs a per-provider route: ``org/model:<provider>`` on the router's
``/v1/chat/completions`` does the mapping server-side. Embeddings do: they go to
``{HF_ROUTER_URL}/{provider}{route}`` with the provider's own model id from the Hub mapping.
"""

from __future__ import annotations

# provider name -> embeddings route under {router}/{provider}, or None (no embeddings there).
# "{model}" is the HF model id (hf-inference takes HF ids; the others take mapped ids in the body).
HF_PROVIDER_EMBEDDING_ROUTES: dict[str, str | None] = {
    "baseten": None,
    "black-forest-labs": None,
    "cerebras": None,
    "clarifai": None,
    "cohere": None,
    "deepinfra": "/v1/openai/embeddings",
    "fal-ai": None,
    "featherless-ai": None,
    "fireworks-ai": None,
    "groq": None,
    "hf-inference": "/models/{model}/pipeline/feature-extraction",
    "hyperbolic": None,
    "nebius": "/v1/embeddings",
    "novita": None,
    "nscale": None,
    "openai": None,
    "ovhcloud": None,
    "publicai": None,
    "replicate": None,
    "sambanova": "/v1/embeddings",
    "scaleway": "/v1/embeddings",
    "together": "/v1/embeddings",
    "wavespeed": None,
    "zai-org": None,
}

HF_PROVIDERS: frozenset[str] = frozenset(HF_PROVIDER_EMBEDDING_ROUTES)

# HF router suffix policies (``org/model:fastest``).
HF_POLICIES: frozenset[str] = frozenset({"fastest", "cheapest", "preferred"})
