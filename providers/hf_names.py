"""Hugging Face Inference Providers: the names the HF router knows, and its routing policies.

Plain data. A provider segment in a model string is recognised because its name is here, not by
counting slashes. Chat never needs a per-provider route: ``org/model:<provider>`` on the router's
``/v1/chat/completions`` does the mapping server-side. Other tasks do: see :mod:`providers.tasks`.
"""

from __future__ import annotations

# The HF router's provider names built in; a config's ``hf_providers:`` adds newer ones.
# Which tasks each serves through the router is in providers.tasks.SUBPROVIDERS.
HF_PROVIDERS: frozenset[str] = frozenset(
    {
        "baseten",
        "black-forest-labs",
        "cerebras",
        "clarifai",
        "cohere",
        "deepinfra",
        "fal-ai",
        "featherless-ai",
        "fireworks-ai",
        "groq",
        "hf-inference",
        "hyperbolic",
        "nebius",
        "novita",
        "nscale",
        "openai",
        "ovhcloud",
        "publicai",
        "replicate",
        "sambanova",
        "scaleway",
        "together",
        "wavespeed",
        "zai-org",
    }
)

# HF router suffix policies (``org/model:fastest``).
HF_POLICIES: frozenset[str] = frozenset({"fastest", "cheapest", "preferred"})
