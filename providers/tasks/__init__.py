"""Tasks as data: which helper does which task for which upstream.

``PROVIDERS[family][task]`` is the helper a provider family uses for a task (the family is a spec's
``adapter`` name; every plain OpenAI-compatible provider shares the "openai" row, so adding one is a
registry entry and no code). A gateway family (``ProviderSpec.gateway``, the HF router) serves some
tasks itself (chat: the router maps ``model:provider``) and routes others to each sub-provider's
native route: those are ``SUBPROVIDERS[family][subprovider][task]``, in the spirit of
``huggingface_hub``'s ``PROVIDERS[provider][task]``. Adding a task for one HF provider is one row
there (plus a helper module when its payload is not OpenAI-shaped).

Example::

    from providers.tasks import helper_for
    helper = helper_for(registry.resolve("huggingface/nebius/Qwen/Qwen3-Embedding-8B"), "embeddings")
    helper.request(target, ["hello"], {}, Auth("hf_..."), upstream_model="Qwen/Qwen3-Embedding-8B")
"""

from __future__ import annotations

from ..errors import InvalidRequestArgumentError
from ..spec import Target
from .azure import AzureChat, AzureEmbeddings
from .base import Auth, ChatHelper, EmbeddingsHelper, TaskHelper
from .completions import CompletionsHelper, TGICompletions
from .huggingface import FeatureExtraction, RoutedEmbeddings, RouterChat, no_policy
from .tgi import TEIEmbeddings, TGIChat

CHAT = "chat"
EMBEDDINGS = "embeddings"
COMPLETIONS = "completions"  # legacy text completions

PROVIDERS: dict[str, dict[str, TaskHelper]] = {
    "openai": {CHAT: ChatHelper(), EMBEDDINGS: EmbeddingsHelper(), COMPLETIONS: CompletionsHelper()},
    "huggingface": {CHAT: RouterChat()},
    "tgi": {CHAT: TGIChat(), EMBEDDINGS: TEIEmbeddings(), COMPLETIONS: TGICompletions()},
    "azure": {CHAT: AzureChat(), EMBEDDINGS: AzureEmbeddings()},
}

_OPENAI_EMBEDDINGS = RoutedEmbeddings("/v1/embeddings")

# Tasks a gateway routes to one sub-provider's native route: family -> sub-provider -> task -> helper.
SUBPROVIDERS: dict[str, dict[str, dict[str, TaskHelper]]] = {
    "huggingface": {
        "hf-inference": {EMBEDDINGS: FeatureExtraction()},
        "deepinfra": {EMBEDDINGS: RoutedEmbeddings("/v1/openai/embeddings")},
        "fireworks-ai": {EMBEDDINGS: RoutedEmbeddings("/inference/v1/embeddings")},
        "nebius": {EMBEDDINGS: _OPENAI_EMBEDDINGS},
        "sambanova": {EMBEDDINGS: _OPENAI_EMBEDDINGS},
        "scaleway": {EMBEDDINGS: _OPENAI_EMBEDDINGS},
        "together": {EMBEDDINGS: _OPENAI_EMBEDDINGS},
    },
}

# The sub-provider a gateway task goes to when the model string pins none.
GATEWAY_DEFAULTS: dict[str, dict[str, str]] = {"huggingface": {EMBEDDINGS: "hf-inference"}}


def helper_for(target: Target, task: str) -> TaskHelper:
    """The helper that does ``task`` for ``target``, or an error naming where the task is served."""
    family = target.spec.adapter
    helper = PROVIDERS.get(family, {}).get(task)
    if helper is not None:
        return helper
    routes = SUBPROVIDERS.get(family, {})
    able = sorted(name for name, tasks in routes.items() if task in tasks)
    if not able:
        raise InvalidRequestArgumentError(
            f"{target.provider!r} does not serve {task} ({target.model_string!r}); "
            f"it serves: {', '.join(sorted(PROVIDERS.get(family, {})))}"
        )
    no_policy(target, task)
    sub = target.subprovider or GATEWAY_DEFAULTS.get(family, {}).get(task)
    helper = routes.get(sub or "", {}).get(task)
    if helper is None:
        raise InvalidRequestArgumentError(
            f"HF provider {sub!r} does not serve {task} through the router; use one of {', '.join(able)}"
        )
    return helper


def chat_helper(target: Target) -> ChatHelper:
    """The chat helper of ``target``'s family (every family serves chat)."""
    helper = PROVIDERS[target.spec.adapter][CHAT]
    assert isinstance(helper, ChatHelper)
    return helper


def register_task(family: str, task: str, helper: TaskHelper, subprovider: str | None = None) -> None:
    """Add (or replace) the helper for ``task`` on a family, or on one sub-provider of a gateway.

    Example::

        register_task("huggingface", "embeddings", RoutedEmbeddings("/v1/embeddings"), subprovider="nscale")
    """
    if subprovider is None:
        PROVIDERS.setdefault(family, {})[task] = helper
    else:
        SUBPROVIDERS.setdefault(family, {}).setdefault(subprovider, {})[task] = helper


__all__ = [
    "CHAT",
    "COMPLETIONS",
    "EMBEDDINGS",
    "PROVIDERS",
    "SUBPROVIDERS",
    "Auth",
    "ChatHelper",
    "EmbeddingsHelper",
    "TaskHelper",
    "chat_helper",
    "helper_for",
    "register_task",
]
