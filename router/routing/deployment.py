"""Deployments (one model string + its params) and their live state: in flight, latency, limits, cooldown.

``model_list`` entries look like LiteLLM's: ``{"model_name": "chat", "params": {"model": ..., "api_key": ...,
"weight": 2, "rpm": 600}}``; ``litellm_params`` is accepted for ``params``, and LiteLLM's ``order``,
``api_version``, ``stream_timeout`` and ``max_retries`` are honoured. A deployment without its upstream
credentials (:mod:`router.credentials`) is kept, marked, and skipped by routing while others can serve.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from providers.errors import InvalidRequestArgumentError
from providers.registry import Registry
from providers.spec import Target

from ..credentials import missing_key_env

# Per-deployment call arguments a model_list entry may set (LiteLLM's names where they exist).
CALL_PARAMS = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "timeout",
        "extra_headers",
        "extra_body",
        "bill_to",
        "max_tokens",
        "temperature",
        "top_p",
        "reasoning_effort",
    }
)
# ``order``: lower first (LiteLLM's deployment priority); ``api_version``: the api-version query of api_base
# (Azure OpenAI's); ``stream_timeout``: the attempt's timeout when streaming; ``max_retries``: how many times a
# request may retry this deployment (after that it moves on to another one).
ROUTING_PARAMS = frozenset(
    {"model", "weight", "rpm", "tpm", "context_length", "order", "api_version", "stream_timeout", "max_retries"}
)
IGNORED_PARAMS = frozenset({"custom_llm_provider", "input_cost_per_token", "output_cost_per_token"})


@dataclass
class DeploymentState:
    """What the router has seen of one deployment (thread-safe through ``lock``)."""

    in_flight: int = 0
    latency_ewma_ms: float | None = None
    ttft_ewma_ms: float | None = None
    failures: collections.deque[float] = field(default_factory=collections.deque)
    cooldown_until: float = 0.0
    probing: bool = False  # one request after a cooldown decides whether it is healthy again
    not_before: float = 0.0  # Retry-After: no request to it before this time
    requests: collections.deque[float] = field(default_factory=collections.deque)  # rpm window
    tokens: collections.deque[tuple[float, int]] = field(default_factory=collections.deque)  # tpm window
    remote_in_flight: int = 0  # other replicas' requests in progress (shared state)
    full_until: float = 0.0  # the shared rpm/tpm window refused a request: none before this time
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Deployment:
    """One way to answer a model group: a model string with its own key, base URL, weight and limits."""

    group: str
    model: str
    target: Target
    params: dict[str, Any]
    weight: float = 1.0
    rpm: int | None = None
    tpm: int | None = None
    context_length: int | None = None  # overrides the catalog's
    order: int | None = None  # LiteLLM's priority: the lowest order among the healthy deployments is used
    stream_timeout: float | None = None  # an attempt's timeout when streaming (else params' timeout)
    max_retries: int | None = None  # retries of this deployment one request may make (None: the group's)
    index: int = 0
    state: DeploymentState = field(default_factory=DeploymentState)
    unset_env: tuple[str, ...] = ()  # the config's os.environ/VAR references unset at load: never used
    key_env: tuple[str, ...] = ()  # no key: one of these variables must be set (checked again until it is)

    @property
    def name(self) -> str:
        return f"{self.group}[{self.index}]:{self.model}"

    @property
    def unconfigured(self) -> bool:
        """Whether it lacked credentials when last checked (no I/O: the routing's fast test)."""
        return bool(self.unset_env or self.key_env)

    def missing(self) -> tuple[str, ...]:
        """The variables this deployment lacks; () when it can authenticate. A missing key is looked up
        again (the variable may be set since), an unset ``os.environ/`` reference of the config is not."""
        if self.unset_env:
            return self.unset_env
        if self.key_env:
            self.key_env = missing_key_env(self.target, self.params)
        return self.key_env

    # --- limits (rpm / tpm over a sliding 60 s window)
    def _trim(self, now: float) -> None:
        horizon = now - 60.0
        while self.state.requests and self.state.requests[0] <= horizon:
            self.state.requests.popleft()
        while self.state.tokens and self.state.tokens[0][0] <= horizon:
            self.state.tokens.popleft()

    def headroom(self, now: float, tokens: int) -> float | None:
        """Fraction of the tighter limit left after this request (None: no limits); < 0 means over."""
        if self.rpm is None and self.tpm is None:
            return None
        self._trim(now)
        room = []
        if self.rpm is not None:
            room.append((self.rpm - len(self.state.requests) - 1) / self.rpm)
        if self.tpm is not None:
            used = sum(t for _, t in self.state.tokens)
            room.append((self.tpm - used - tokens) / self.tpm)
        return min(room)

    def next_free(self, now: float, tokens: int) -> float:
        """When this deployment's limits admit the request again (now if they already do)."""
        self._trim(now)
        when = max(now, self.state.full_until)
        if self.rpm is not None and len(self.state.requests) >= self.rpm:
            when = max(when, self.state.requests[len(self.state.requests) - self.rpm] + 60.0)
        if self.tpm is not None and self.state.tokens:
            used = sum(t for _, t in self.state.tokens)
            for stamp, spent in self.state.tokens:
                if used + tokens <= self.tpm:
                    break
                used -= spent
                when = max(when, stamp + 60.0)
        return when

    def count(self, now: float, tokens: int) -> None:
        self.state.requests.append(now)
        if tokens:
            self.state.tokens.append((now, tokens))

    def uncount(self, now: float, tokens: int) -> None:
        """Take back a :meth:`count` whose request was not sent after all."""
        with contextlib.suppress(ValueError):  # other requests may have been counted since: find ours
            self.state.requests.remove(now)
        if tokens:
            with contextlib.suppress(ValueError):
                self.state.tokens.remove((now, tokens))


def _params_of(entry: dict[str, Any], where: str) -> dict[str, Any]:
    params = entry.get("params", entry.get("litellm_params"))
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise InvalidRequestArgumentError(
            f"{where}: expected params (or litellm_params) with a 'model' string, got {params!r}"
        )
    unknown = sorted(set(params) - CALL_PARAMS - ROUTING_PARAMS - IGNORED_PARAMS)
    if unknown:
        raise InvalidRequestArgumentError(
            f"{where}.params.{unknown[0]}: unknown setting; known: {', '.join(sorted(CALL_PARAMS | ROUTING_PARAMS))}"
        )
    return params


def _positive(value: Any, where: str, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and value % 1):
        raise InvalidRequestArgumentError(f"{where}: expected a positive {kind.__name__}, got {value!r}")
    return kind(value)


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequestArgumentError(f"{where}: expected a whole number >= 0, got {value!r}")
    return value


def parse_model_list(model_list: Any, registry: Registry) -> dict[str, list[Deployment]]:
    """Deployments by group, from LiteLLM-style ``model_list`` entries; errors name the entry."""
    if not isinstance(model_list, list) or not model_list:
        raise InvalidRequestArgumentError("model_list must be a non-empty list of {model_name, params} entries")
    groups: dict[str, list[Deployment]] = {}
    for i, entry in enumerate(model_list):
        where = f"model_list[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str) or not entry["model_name"]:
            raise InvalidRequestArgumentError(f"{where}: expected a mapping with a 'model_name' string, got {entry!r}")
        params = _params_of(entry, where)
        api_base = params.get("api_base") or params.get("base_url")
        try:
            target = registry.resolve(params["model"], api_base)
        except InvalidRequestArgumentError as e:
            raise InvalidRequestArgumentError(f"{where}.params.model: {e.message}") from None
        version = params.get("api_version")
        if version is not None:
            if not isinstance(version, str) or not version:
                raise InvalidRequestArgumentError(f"{where}.params.api_version: expected a string, got {version!r}")
            api_base = with_query(target.api_base, "api-version", version)
            target = dataclasses.replace(target, api_base=api_base)
        group = entry["model_name"]
        members = groups.setdefault(group, [])
        call_params = {k: v for k, v in params.items() if k in CALL_PARAMS and k != "base_url"}
        call_params |= {"api_base": api_base} if api_base else {}
        unset = entry.get("unset_env") or ()
        if not isinstance(unset, (list, tuple)) or not all(isinstance(v, str) for v in unset):
            raise InvalidRequestArgumentError(f"{where}.unset_env: expected a list of variable names, got {unset!r}")
        members.append(
            Deployment(
                group=group,
                model=params["model"],
                target=target,
                params=call_params,
                weight=_positive(params.get("weight", 1), f"{where}.params.weight", float),
                rpm=_positive(params.get("rpm"), f"{where}.params.rpm", int),
                tpm=_positive(params.get("tpm"), f"{where}.params.tpm", int),
                context_length=_positive(params.get("context_length"), f"{where}.params.context_length", int),
                order=_positive(params.get("order"), f"{where}.params.order", int),
                stream_timeout=_positive(params.get("stream_timeout"), f"{where}.params.stream_timeout", float),
                max_retries=_count(params.get("max_retries"), f"{where}.params.max_retries"),
                index=len(members),
                unset_env=tuple(unset),
                key_env=() if unset else missing_key_env(target, call_params),
            )
        )
    return groups


def with_query(url: str, name: str, value: str) -> str:
    """``url`` with the query parameter ``name`` set to ``value``."""
    base, _, query = url.partition("?")
    pairs = [(k, v) for k, v in parse_qsl(query) if k != name] + [(name, value)]
    return f"{base}?{urlencode(pairs)}"


def now() -> float:
    return time.monotonic()


def fallback_map(value: Any, name: str, groups: Iterable[str]) -> dict[str, list[str]]:
    """LiteLLM's ``[{"chat": ["backup"]}]`` (or a plain dict) as {group: [fallback groups]}."""
    if value is None:
        return {}
    items = value if isinstance(value, list) else [value]
    out: dict[str, list[str]] = {}
    known = set(groups)
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequestArgumentError(f"{name} must look like [{{'chat': ['backup']}}], got {value!r}")
        for group, targets in item.items():
            targets = [targets] if isinstance(targets, str) else targets
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise InvalidRequestArgumentError(f"{name}: {group!r} must map to a list of model group names")
            for g in (group, *targets):
                if g not in known:
                    raise InvalidRequestArgumentError(
                        f"{name}: {g!r} is not a model_name in model_list (known: {', '.join(sorted(known))})"
                    )
            out.setdefault(group, []).extend(targets)
    return out


def merged_params(deployment: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """A deployment's params with a call's on top; the two ``extra_body`` dicts are merged, never replaced
    (a caller's extra field must not drop the operator's), and a field both set is an error."""
    merged = {**deployment, **call}
    mine, theirs = deployment.get("extra_body"), call.get("extra_body")
    if isinstance(mine, dict) and mine and isinstance(theirs, dict) and theirs:
        both = sorted(set(mine) & set(theirs))
        if both:
            raise InvalidRequestArgumentError(
                f"extra_body field(s) {', '.join(both)} are set by the deployment's configuration; leave them out"
            )
        merged["extra_body"] = {**mine, **theirs}
    return merged
