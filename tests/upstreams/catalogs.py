"""Default catalogs and Hub mappings (realistic shapes; prices are USD per million tokens).

Each function returns a fresh copy so a test can mutate its server's data freely.
"""

from __future__ import annotations

from typing import Any


def _provider(
    name: str,
    context: int,
    pricing: tuple[float, float] | None,
    latency: int,
    throughput: float,
    *,
    tools: bool = True,
    structured: bool = True,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"provider": name, "status": "live", "context_length": context}
    if pricing is not None:
        entry["pricing"] = {"input": pricing[0], "output": pricing[1]}
    entry.update(
        {
            "supports_tools": tools,
            "supports_structured_output": structured,
            "first_token_latency_ms": latency,
            "throughput": throughput,
            "is_model_author": False,
        }
    )
    return entry


def _model(model_id: str, created: int, providers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": model_id.split("/", 1)[0],
        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
        "providers": providers,
    }


def hf_router_catalog() -> list[dict[str, Any]]:
    """The HF router ``/v1/models`` data: DeepSeek-R1, Qwen3-8B and Llama-3.1-8B-Instruct."""
    return [
        _model(
            "deepseek-ai/DeepSeek-R1",
            1737000000,
            [
                _provider("novita", 163840, (0.7, 2.5), 1490, 24.7, structured=False),
                _provider("together", 163840, (3.0, 7.0), 588, 45.4),
                {"provider": "featherless-ai", "status": "error", "is_model_author": False},
            ],
        ),
        _model(
            "Qwen/Qwen3-8B",
            1745900000,
            [
                _provider("nscale", 40960, (0.07, 0.2), 410, 62.3),
                _provider("featherless-ai", 32768, None, 1920, 18.2, tools=False, structured=False),
            ],
        ),
        _model(
            "meta-llama/Llama-3.1-8B-Instruct",
            1721260800,
            [
                _provider("cerebras", 32768, (0.1, 0.1), 230, 2105.0),
                _provider("novita", 16384, (0.02, 0.05), 700, 81.6, structured=False),
                _provider("nebius", 131072, (0.02, 0.06), 540, 120.4),
            ],
        ),
    ]


def _mapping(provider_id: str, task: str, status: str = "live") -> dict[str, Any]:
    return {"status": status, "providerId": provider_id, "task": task}


def hub_mappings() -> dict[str, dict[str, dict[str, Any]]]:
    """``inferenceProviderMapping`` per Hub model id."""
    return {
        "meta-llama/Meta-Llama-3-8B-Instruct": {
            "together": _mapping("meta-llama/Meta-Llama-3-8B-Instruct-Turbo", "conversational"),
            "fireworks-ai": _mapping("accounts/fireworks/models/llama-v3-8b-instruct", "conversational", "staging"),
        },
        "Qwen/Qwen3-Embedding-8B": {
            "nebius": _mapping("Qwen/Qwen3-Embedding-8B-nebius", "feature-extraction"),
            "together": _mapping("togethercomputer/Qwen3-Embedding-8B", "feature-extraction"),
            "scaleway": _mapping("qwen3-embedding-8b", "feature-extraction"),
            "deepinfra": _mapping("Qwen/Qwen3-Embedding-8B", "feature-extraction"),
        },
        "nomic-ai/nomic-embed-text-v1.5": {
            "fireworks-ai": _mapping("nomic-ai/nomic-embed-text-v1.5", "feature-extraction"),
        },
        "intfloat/multilingual-e5-large": {
            "hf-inference": _mapping("intfloat/multilingual-e5-large", "feature-extraction"),
        },
    }


def _deepinfra_model(model_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 1754000000,
        "owned_by": "deepinfra",
        "root": model_id,
        "parent": None,
        "metadata": metadata,
    }


def deepinfra_catalog() -> list[dict[str, Any]]:
    """DeepInfra ``/models?filter=with_meta`` entries (one embedding model with null metadata)."""
    return [
        _deepinfra_model(
            "openai/gpt-oss-120b",
            {
                "description": "OpenAI's open-weight reasoning model.",
                "context_length": 131072,
                "max_tokens": 65536,
                "pricing": {"input_tokens": 0.05, "output_tokens": 0.45, "cache_read_tokens": 0.005},
                "tags": ["chat", "reasoning"],
            },
        ),
        _deepinfra_model(
            "meta-llama/Meta-Llama-3.1-8B-Instruct",
            {
                "description": "Meta's 8B instruction-tuned Llama 3.1.",
                "context_length": 131072,
                "max_tokens": 16384,
                "pricing": {"input_tokens": 0.03, "output_tokens": 0.05},
                "tags": ["chat"],
            },
        ),
        _deepinfra_model(
            "deepseek-ai/DeepSeek-R1",
            {
                "description": "DeepSeek's reasoning model.",
                "context_length": 163840,
                "max_tokens": 32768,
                "pricing": {"input_tokens": 0.7, "output_tokens": 2.4, "cache_read_tokens": 0.35},
                "tags": ["chat", "reasoning"],
            },
        ),
        _deepinfra_model("BAAI/bge-large-en-v1.5", None),
    ]
