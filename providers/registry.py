"""The provider registry and the model-string grammar.

``Registry.resolve("huggingface/together/deepseek-ai/DeepSeek-R1")`` -> a :class:`Target` saying
which provider family, sub-provider, upstream model id and base URL to use (the README lists the
model-string forms; ARCHITECTURE.md where a new provider goes).

Adding an OpenAI-compatible provider is one entry::

    from providers.registry import default_registry
    default_registry().register("acme", base_url="https://api.acme.ai/v1", key_env=("ACME_API_KEY",))
    completion(model="acme/acme-large", messages=[...])
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

from .defaults import ProcessDefault
from .errors import InvalidRequestArgumentError
from .hf_names import HF_POLICIES, HF_PROVIDERS
from .spec import ProviderSpec, Target
from .tasks import PROVIDERS

HF_TOKEN_ENV = ("HUGGINGFACE_HUB_TOKEN", "HF_TOKEN", "HUGGINGFACE_API_KEY")

HUGGINGFACE = ProviderSpec(
    name="huggingface",
    base_url="https://router.huggingface.co",
    base_url_env="HF_ROUTER_URL",
    key_env=HF_TOKEN_ENV,
    adapter="huggingface",
    description="Hugging Face Inference Providers through the HF router",
    gateway=True,
    bills_to_org=True,
    key_follows_api_base=True,
)
TGI = ProviderSpec(
    name="tgi",
    base_url="",
    key_env=HF_TOKEN_ENV,
    adapter="tgi",
    key_required=False,  # a local TGI needs no token; an HF endpoint gets one when it is set
    bills_to_org=True,
    key_follows_api_base=True,
    self_hosted=True,
    description="a TGI server or HF Inference Endpoint (huggingface/tgi + api_base)",
)

# Data-only entries: every one of these is plain OpenAI-compatible.
DEFAULT_SPECS: tuple[ProviderSpec, ...] = (
    HUGGINGFACE,
    ProviderSpec("deepinfra", "https://api.deepinfra.com/v1/openai", ("DEEPINFRA_API_KEY",), "DEEPINFRA_API_BASE"),
    ProviderSpec("openai", "https://api.openai.com/v1", ("OPENAI_API_KEY",), "OPENAI_API_BASE"),
    ProviderSpec(
        "together",
        "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY", "TOGETHERAI_API_KEY"),
        "TOGETHER_API_BASE",
        aliases=("together_ai",),
    ),
    ProviderSpec("groq", "https://api.groq.com/openai/v1", ("GROQ_API_KEY",), "GROQ_API_BASE"),
    ProviderSpec(
        "fireworks-ai",
        "https://api.fireworks.ai/inference/v1",
        ("FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY"),
        "FIREWORKS_API_BASE",
        aliases=("fireworks_ai", "fireworks"),
    ),
    ProviderSpec("nebius", "https://api.studio.nebius.com/v1", ("NEBIUS_API_KEY",), "NEBIUS_API_BASE"),
    ProviderSpec("sambanova", "https://api.sambanova.ai/v1", ("SAMBANOVA_API_KEY",), "SAMBANOVA_API_BASE"),
    ProviderSpec("cerebras", "https://api.cerebras.ai/v1", ("CEREBRAS_API_KEY",), "CEREBRAS_API_BASE"),
    ProviderSpec("novita", "https://api.novita.ai/v3/openai", ("NOVITA_API_KEY",), "NOVITA_API_BASE"),
    ProviderSpec("hyperbolic", "https://api.hyperbolic.xyz/v1", ("HYPERBOLIC_API_KEY",), "HYPERBOLIC_API_BASE"),
    ProviderSpec("openrouter", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",), "OPENROUTER_API_BASE"),
    # OpenAI-compatible clouds LiteLLM users name (base URLs and key variables from each provider's docs)
    ProviderSpec("mistral", "https://api.mistral.ai/v1", ("MISTRAL_API_KEY",), "MISTRAL_API_BASE"),
    ProviderSpec("xai", "https://api.x.ai/v1", ("XAI_API_KEY",), "XAI_API_BASE"),
    ProviderSpec("deepseek", "https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",), "DEEPSEEK_API_BASE"),
    ProviderSpec(
        "perplexity", "https://api.perplexity.ai", ("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"), "PERPLEXITY_API_BASE"
    ),
    ProviderSpec(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        ("GEMINI_API_KEY",),
        "GEMINI_API_BASE",
        description="Google's Gemini API through its OpenAI-compatible endpoint",
    ),
    ProviderSpec(
        "anthropic",
        "https://api.anthropic.com/v1",
        ("ANTHROPIC_API_KEY",),
        "ANTHROPIC_API_BASE",
        description="Anthropic's OpenAI SDK compatibility endpoint (chat completions)",
    ),
    # Servers of your own: no key needed; a key that is set goes to the api_base given
    ProviderSpec(
        "ollama",
        "http://localhost:11434",
        ("OLLAMA_API_KEY",),
        "OLLAMA_API_BASE",
        chat_path="/v1/chat/completions",
        embeddings_path="/v1/embeddings",
        models_path="/v1/models",
        paths={"completions": "/v1/completions"},
        aliases=("ollama_chat",),
        key_required=False,
        key_follows_api_base=True,
        self_hosted=True,
        description="an Ollama server's OpenAI-compatible API (api_base without /v1, as LiteLLM writes it)",
    ),
    ProviderSpec(
        "hosted_vllm",
        "",
        ("HOSTED_VLLM_API_KEY",),
        "HOSTED_VLLM_API_BASE",
        key_required=False,
        key_follows_api_base=True,
        self_hosted=True,
        api_base_required=True,
        description="a vLLM server of your own (api_base: its OpenAI base URL, e.g. http://host:8000/v1)",
    ),
    ProviderSpec(
        "lm_studio",
        "http://localhost:1234/v1",
        ("LM_STUDIO_API_KEY",),
        "LM_STUDIO_API_BASE",
        key_required=False,
        key_follows_api_base=True,
        self_hosted=True,
        description="LM Studio's local server",
    ),
    ProviderSpec(
        "azure",
        "",
        ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"),
        "AZURE_API_BASE",
        adapter="azure",
        key_follows_api_base=True,
        api_base_required=True,
        description="Azure OpenAI: azure/<deployment> with api_base https://<resource>.openai.azure.com",
    ),
)

ACCEPTED_FORMS = (
    "huggingface/<org>/<model>[:fastest|:cheapest|:preferred|:<provider>], "
    "huggingface/<provider>/<org>/<model>, huggingface/tgi with api_base=..., "
    "deepinfra/<org>/<model>, openai/<model> (with api_base=... for any OpenAI-compatible server), "
    "or <registered provider>/<model>"
)

_ENDPOINT_HOST_SUFFIX = ".endpoints.huggingface.cloud"
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class UnknownSubproviderError(InvalidRequestArgumentError):
    """A model string names a gateway sub-provider the registry does not know (yet): the gateway's
    catalog may list it (see :meth:`Registry.learn_subproviders`)."""

    def __init__(self, message: str, *, family: str, name: str, repo: str | None = None) -> None:
        super().__init__(message)
        self.family = family
        self.name = name
        self.repo = repo  # the model's repository id, whose Hub mapping lists the providers serving it


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


class Registry:
    """Provider specs by name, plus model-string resolution (cached).

    Example::

        reg = Registry()
        reg.register("acme", base_url="https://api.acme.ai/v1", key_env=("ACME_API_KEY",))
        reg.resolve("acme/large-1").api_base  # 'https://api.acme.ai/v1'
    """

    def __init__(self, specs: Iterable[ProviderSpec] = DEFAULT_SPECS) -> None:
        self._lock = threading.Lock()
        self._specs: dict[str, ProviderSpec] = {}
        self._names: dict[str, ProviderSpec] = {}
        self._hf_providers: set[str] = set(HF_PROVIDERS)
        self._cache: dict[tuple[str, str | None, str | None], Target] = {}
        self._generation = 0  # bumped by every change, so a resolve racing a change caches nothing stale
        for spec in specs:
            self.add(spec)

    # --- registration
    def add(self, spec: ProviderSpec) -> ProviderSpec:
        """Register (or replace) a provider spec; its name and aliases become model prefixes."""
        if spec.adapter not in PROVIDERS:
            raise InvalidRequestArgumentError(
                f"provider {spec.name!r}: unknown adapter {spec.adapter!r}; known: {', '.join(sorted(PROVIDERS))}"
            )
        if not spec.name or "/" in spec.name or ":" in spec.name:
            raise InvalidRequestArgumentError(f"provider name {spec.name!r} must be non-empty without '/' or ':'")
        no_default = spec.api_base_required and not spec.base_url  # each call gives its address
        if spec.name != "huggingface" and not no_default and not spec.base_url.startswith(("http://", "https://")):
            raise InvalidRequestArgumentError(
                f"provider {spec.name!r}: base_url must start with http:// or https://, got {spec.base_url!r}"
            )
        with self._lock:
            old = self._specs.get(spec.name)
            if old is not None:
                for alias in old.aliases:
                    self._names.pop(alias, None)
            self._specs[spec.name] = spec
            for name in (spec.name, *spec.aliases):
                self._names[name] = spec
            self._generation += 1
            self._cache.clear()
        return spec

    def register(
        self,
        name: str,
        base_url: str,
        key_env: str | Iterable[str] = (),
        *,
        base_url_env: str | None = None,
        aliases: Iterable[str] = (),
        key_required: bool = True,
        chat_path: str = "/chat/completions",
        embeddings_path: str = "/embeddings",
    ) -> ProviderSpec:
        """Register an OpenAI-compatible provider from plain values (what a config file gives)."""
        keys = (key_env,) if isinstance(key_env, str) else tuple(key_env)
        return self.add(
            ProviderSpec(
                name=name,
                base_url=base_url,
                key_env=keys,
                base_url_env=base_url_env,
                aliases=tuple(aliases),
                key_required=key_required,
                chat_path=chat_path,
                embeddings_path=embeddings_path,
            )
        )

    def add_hf_provider(self, name: str) -> None:
        """Teach the grammar a new HF Inference Provider name (for ``huggingface/<name>/...``)."""
        self.learn_subproviders("huggingface", (name,))

    def learn_subproviders(self, family: str, names: Iterable[str]) -> None:
        """Teach the grammar sub-provider names a gateway's catalog (or Hub mapping) lists: HF adds
        providers often, and the built-in list is only the offline fallback."""
        if family != "huggingface":
            return  # the only gateway whose model strings name sub-providers
        new = {n for n in names if isinstance(n, str) and _PROVIDER_NAME.fullmatch(n)} - self._hf_providers
        if not new:
            return
        with self._lock:
            self._hf_providers |= new
            self._generation += 1
            self._cache.clear()

    def get(self, name: str) -> ProviderSpec:
        spec = self._names.get(name)
        if spec is None:
            raise InvalidRequestArgumentError(
                f"unknown provider {name!r}.{_suggest(name, self._names)} Known: {', '.join(sorted(self._specs))}"
            )
        return spec

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a provider name or alias (a model string prefix) of this registry."""
        return name in self._names

    def names(self) -> list[str]:
        return sorted(self._specs)

    @property
    def hf_providers(self) -> frozenset[str]:
        return frozenset(self._hf_providers)

    # --- resolution
    def resolve(self, model: str, api_base: str | None = None) -> Target:
        """The :class:`Target` for a model string, or an error that names the accepted forms."""
        if not isinstance(model, str):
            raise InvalidRequestArgumentError(
                f"model must be a string like 'huggingface/Qwen/Qwen3-8B', got {type(model).__name__}"
            )
        if api_base is not None and not isinstance(api_base, str):
            raise InvalidRequestArgumentError(f"api_base must be a URL string, got {type(api_base).__name__}")
        prefix = model.partition("/")[0]
        spec = self._names.get(prefix)
        env_base = None
        if spec is not None and spec.base_url_env:
            env_base = os.environ.get(spec.base_url_env)
        key = (model, api_base, env_base)
        target = self._cache.get(key)
        if target is None:
            generation = self._generation
            target = self._resolve(model, api_base)
            with self._lock:
                if generation == self._generation:
                    if len(self._cache) > 4096:
                        self._cache.clear()
                    self._cache[key] = target
        return target

    def _resolve(self, model: str, api_base: str | None) -> Target:
        stripped = model.strip()
        if not stripped:
            raise InvalidRequestArgumentError(f"model is empty. Accepted forms: {ACCEPTED_FORMS}")
        if stripped != model or any(c.isspace() for c in model):
            raise InvalidRequestArgumentError(f"model {model!r} contains whitespace; remove it")
        if api_base is not None and not api_base.startswith(("http://", "https://")):
            raise InvalidRequestArgumentError(f"api_base must start with http:// or https://, got {api_base!r}")
        prefix, sep, rest = model.partition("/")
        spec = self._names.get(prefix)
        if spec is None:
            hint = _suggest(prefix, self._names)
            if not sep:
                raise InvalidRequestArgumentError(
                    f"model {model!r} has no provider prefix.{hint} Accepted forms: {ACCEPTED_FORMS}"
                )
            raise InvalidRequestArgumentError(
                f"unknown provider prefix {prefix!r} in model {model!r}.{hint} Accepted forms: {ACCEPTED_FORMS}. "
                "To add an OpenAI-compatible provider, register it: "
                "default_registry().register(name, base_url=..., key_env=...)"
            )
        if spec.name == "huggingface":
            return self._resolve_hf(model, rest, api_base)
        if not rest or rest.startswith("/") or rest.endswith("/"):
            raise InvalidRequestArgumentError(
                f"model {model!r} names no model after '{prefix}/'; write e.g. '{prefix}/<org>/<model>'"
            )
        base = spec.resolved_base_url(api_base)
        if not base:
            where = f" (or set {spec.base_url_env})" if spec.base_url_env else ""
            what = spec.description or f"{spec.name} has no default address"
            raise InvalidRequestArgumentError(f"model {model!r} needs api_base=...{where}: {what}")
        return Target(model, spec, rest, base, spec.name)

    def _resolve_hf(self, model: str, rest: str, api_base: str | None) -> Target:
        spec = self._specs["huggingface"]
        if rest in ("tgi", "tei"):
            if not api_base:
                raise InvalidRequestArgumentError(
                    f"model {model!r} needs api_base=... with your TGI server or Inference Endpoint URL, "
                    "e.g. api_base='https://xyz.us-east-1.aws.endpoints.huggingface.cloud'"
                )
            return Target(model, TGI, "tgi", api_base.rstrip("/"), "tgi")
        parts = rest.split("/")
        if any(not p for p in parts) or len(parts) < 2:
            raise InvalidRequestArgumentError(
                f"model {model!r}: expected 'huggingface/<org>/<model>' (e.g. 'huggingface/Qwen/Qwen3-8B') "
                "or 'huggingface/<provider>/<org>/<model>'"
            )
        if api_base and (urlsplit(api_base).hostname or "").endswith(_ENDPOINT_HOST_SUFFIX):
            # An HF Inference Endpoint URL with a model id: it is a TGI server.
            return Target(model, TGI, "tgi", api_base.rstrip("/"), "tgi")
        pinned: str | None = None
        if len(parts) > 2:
            if parts[0] not in self._hf_providers:
                raise UnknownSubproviderError(
                    f"model {model!r}: {parts[0]!r} is not a known Hugging Face inference provider"
                    f"{_suggest(parts[0], self._hf_providers)}; expected 'huggingface/<org>/<model>' or "
                    f"'huggingface/<provider>/<org>/<model>' with a provider among: "
                    f"{', '.join(sorted(self._hf_providers))}",
                    family="huggingface",
                    name=parts[0],
                    repo="/".join(parts[1:]).partition(":")[0] or None,
                )
            if len(parts) > 3:
                raise InvalidRequestArgumentError(
                    f"model {model!r}: too many '/' — expected 'huggingface/<provider>/<org>/<model>'"
                )
            pinned = parts[0]
            parts = parts[1:]
        model_id = "/".join(parts)
        base, colon, suffix = model_id.rpartition(":")
        policy: str | None = None
        if colon:
            if not suffix or not base:
                raise InvalidRequestArgumentError(f"model {model!r}: empty ':' suffix; remove the ':'")
            if pinned:
                raise InvalidRequestArgumentError(
                    f"model {model!r} pins provider {pinned!r} and also has the suffix ':{suffix}'; use one"
                )
            if suffix in HF_POLICIES:
                policy = suffix
            elif suffix in self._hf_providers:
                pinned = suffix
            else:
                raise UnknownSubproviderError(
                    f"model {model!r}: unknown suffix ':{suffix}'"
                    f"{_suggest(suffix, [*self._hf_providers, *HF_POLICIES])} Use :fastest, :cheapest, "
                    f":preferred or a provider name ({', '.join(sorted(self._hf_providers))})",
                    family="huggingface",
                    name=suffix,
                    repo=base,
                )
            model_id = base
        router = (api_base or spec.resolved_base_url()).rstrip("/")
        if router.endswith("/v1"):
            router = router[: -len("/v1")]
        return Target(model, spec, model_id, router, "huggingface", pinned, policy)


_REGISTRY = ProcessDefault(Registry)


def default_registry() -> Registry:
    """The registry ``completion()`` uses when no other is given."""
    return _REGISTRY.get()


def register_provider(name: str, base_url: str, key_env: str | Iterable[str] = (), **kw: object) -> ProviderSpec:
    """Register an OpenAI-compatible provider on the default registry.

    Example: ``register_provider("acme", "https://api.acme.ai/v1", "ACME_API_KEY")``
    """
    return default_registry().register(name, base_url, key_env, **kw)  # type: ignore[arg-type]
