"""Plain data describing providers, and the resolved target of one call."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One upstream family entry. An OpenAI-compatible provider is just one of these, no code.

    Example::

        ProviderSpec(name="together", base_url="https://api.together.xyz/v1",
                     key_env=("TOGETHER_API_KEY", "TOGETHERAI_API_KEY"), aliases=("together_ai",))
    """

    name: str
    base_url: str
    key_env: tuple[str, ...] = ()
    base_url_env: str | None = None
    adapter: str = "openai"
    chat_path: str = "/chat/completions"
    embeddings_path: str = "/embeddings"
    models_path: str = "/models"
    aliases: tuple[str, ...] = ()
    key_required: bool = True
    # Path per task under the base URL where it differs from the task's OpenAI default
    # (``chat_path``/``embeddings_path`` fill "chat"/"embeddings").
    paths: dict[str, str] = field(default_factory=dict, hash=False)
    description: str = ""
    # A gateway routes each call to one of several sub-providers: a call may pin one
    # (``Target.subprovider``) or name a routing policy (``Target.policy``); its catalog lists
    # offers per sub-provider. The HF router is one.
    gateway: bool = False
    # The env key also goes to a per-call api_base on another host (an HF router mirror or Inference
    # Endpoint takes the HF token); otherwise a foreign api_base gets only an explicit api_key=.
    key_follows_api_base: bool = False
    # Takes an organization to bill in the X-HF-Bill-To header (``bill_to=``).
    bills_to_org: bool = False
    # Runs on the caller's own hardware (a TGI server): no catalog prices it, so a call costs 0
    # unless a price is configured.
    self_hosted: bool = False
    # No default address: a call needs ``api_base`` (or ``base_url_env``), e.g. Azure OpenAI, a hosted vLLM.
    api_base_required: bool = False

    def __post_init__(self) -> None:
        paths = {"chat": self.chat_path, "embeddings": self.embeddings_path, **self.paths}
        object.__setattr__(self, "paths", paths)

    def resolved_base_url(self, api_base: str | None = None) -> str:
        """Per-call ``api_base`` wins, then the provider's env var, then the default."""
        if api_base:
            return api_base.rstrip("/")
        if self.base_url_env:
            env = os.environ.get(self.base_url_env)
            if env:
                return env.rstrip("/")
        return self.base_url.rstrip("/")

    def find_api_key(self, api_key: str | None = None) -> str | None:
        """``api_key=`` wins; else the first non-empty env var of ``key_env``."""
        if api_key:
            return api_key
        for var in self.key_env:
            value = os.environ.get(var)
            if value:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where one call goes: provider family, upstream model id and base URL (the helper per task is
    ``providers.tasks.helper_for(target, task)``).

    ``provider`` is the upstream family ("huggingface", "deepinfra", "tgi", ...);
    ``subprovider`` / ``policy`` are set for gateway calls (the HF router) pinned to a
    sub-provider or a routing policy.
    """

    model_string: str
    spec: ProviderSpec
    model: str
    api_base: str
    provider: str
    subprovider: str | None = None
    policy: str | None = None

    @property
    def gateway_chooses(self) -> bool:
        """True when a gateway picks the sub-provider itself (neither pinned nor a policy we resolve)."""
        return self.spec.gateway and self.subprovider is None and self.policy is None

    @property
    def label(self) -> str:
        """``provider`` plus the pinned HF provider, for messages: ``huggingface:together``."""
        return f"{self.provider}:{self.subprovider}" if self.subprovider else self.provider
